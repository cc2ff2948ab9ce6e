//! The migration modes and every rule that differs between them: where a session is looked
//! for, whether a Redis error fails the request, where a request is routed, what a login binds
//! and what a logout writes. `Mode` is matched here and nowhere else; the rest of the code asks
//! these questions by name.

use serde::Deserialize;

/// Where a route's sessions are resolved: the three steps of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// As before unstick: sticky to the instance that owns the session. Redis is used when it
    /// answers (identity of sessions it knows, optional warming) and never required.
    Legacy,
    /// Redis first; on a miss the old stores, and a hit there is copied into Redis.
    Overlap,
    /// Redis only: a miss is an anonymous request.
    Redis,
}

/// What ending a session writes to the session store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutWrite {
    /// Nothing else can bring the session back: its keys are deleted.
    Delete,
    /// Old stores may still hold it: an ended marker stays so that they cannot bring it back.
    EndedMarker,
}

impl Mode {
    /// The name used in the config file, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Legacy => "legacy",
            Mode::Overlap => "overlap",
            Mode::Redis => "redis",
        }
    }

    /// Whether a Redis miss asks the route's old stores (and copies a hit forward) before the
    /// request goes on.
    pub fn asks_old_stores_on_miss(self) -> bool {
        match self {
            Mode::Overlap => true,
            Mode::Legacy | Mode::Redis => false,
        }
    }

    /// Whether the route has been cut over: sessions are served from Redis only, so a session
    /// Redis does not hold is anonymous.
    pub fn is_cut_over(self) -> bool {
        match self {
            Mode::Redis => true,
            Mode::Legacy | Mode::Overlap => false,
        }
    }

    /// Whether the route needs at least one old store to be configured.
    pub fn needs_old_stores(self) -> bool {
        self.asks_old_stores_on_miss()
    }

    /// Whether a Redis that cannot answer fails a request that carries a session (503, fail
    /// closed). Legacy routes never depend on Redis: the request goes on as before unstick.
    pub fn requires_store(self) -> bool {
        match self {
            Mode::Overlap | Mode::Redis => true,
            Mode::Legacy => false,
        }
    }

    /// Whether a legacy route copies sessions into Redis in the background (`warm = true`).
    pub fn warms(self, warm: bool) -> bool {
        match self {
            Mode::Legacy => warm,
            Mode::Overlap | Mode::Redis => false,
        }
    }

    /// Whether requests go to the instance that holds the app's side of the session (its
    /// home) while it is healthy. In `redis` mode identity travels in the headers and any
    /// instance serves.
    pub fn routes_to_home(self) -> bool {
        match self {
            Mode::Overlap | Mode::Legacy => true,
            Mode::Redis => false,
        }
    }

    /// The instance to prefer for a request whose session lives on `home`. In `redis` mode
    /// only a logout goes home, so that the app's own copy of the session ends too.
    pub fn preferred_instance(self, home: Option<&str>, logout_path: bool) -> Option<&str> {
        match self {
            Mode::Overlap | Mode::Legacy => home,
            Mode::Redis if logout_path => home,
            Mode::Redis => None,
        }
    }

    /// Whether a new session cookie is bound to the instance that issued it: while the app
    /// still holds sessions itself, the next request must find that instance again.
    pub fn binds_new_cookies(self) -> bool {
        self.routes_to_home()
    }

    /// What ending a session writes (see [`LogoutWrite`]).
    pub fn logout_write(self) -> LogoutWrite {
        match self {
            Mode::Redis => LogoutWrite::Delete,
            Mode::Overlap | Mode::Legacy => LogoutWrite::EndedMarker,
        }
    }

    /// Whether a logout is also written to the old stores that can be written.
    pub fn tells_old_stores_of_logouts(self) -> bool {
        match self {
            Mode::Overlap | Mode::Legacy => true,
            Mode::Redis => false,
        }
    }

    /// Whether a login or logout that cannot be recorded fails the response (503, so the
    /// user retries) rather than going out unrecorded.
    pub fn capture_error_is_fatal(self) -> bool {
        self.requires_store()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Mode; 3] = [Mode::Legacy, Mode::Overlap, Mode::Redis];

    #[test]
    fn only_legacy_goes_on_without_redis() {
        for mode in ALL {
            assert_eq!(mode.requires_store(), mode != Mode::Legacy, "{mode:?}");
            assert_eq!(mode.capture_error_is_fatal(), mode != Mode::Legacy);
        }
    }

    #[test]
    fn redis_mode_routes_home_only_for_a_logout() {
        assert_eq!(Mode::Redis.preferred_instance(Some("a"), false), None);
        assert_eq!(Mode::Redis.preferred_instance(Some("a"), true), Some("a"));
        for mode in [Mode::Legacy, Mode::Overlap] {
            assert_eq!(mode.preferred_instance(Some("a"), false), Some("a"));
            assert_eq!(mode.preferred_instance(None, true), None);
        }
    }

    #[test]
    fn only_redis_mode_deletes_ended_sessions() {
        assert_eq!(Mode::Redis.logout_write(), LogoutWrite::Delete);
        assert_eq!(Mode::Overlap.logout_write(), LogoutWrite::EndedMarker);
        assert_eq!(Mode::Legacy.logout_write(), LogoutWrite::EndedMarker);
        assert!(!Mode::Redis.tells_old_stores_of_logouts());
    }

    #[test]
    fn warming_is_a_legacy_setting() {
        assert!(Mode::Legacy.warms(true));
        assert!(!Mode::Legacy.warms(false));
        assert!(!Mode::Overlap.warms(true));
        assert!(Mode::Overlap.asks_old_stores_on_miss());
        assert!(!Mode::Legacy.asks_old_stores_on_miss());
    }

    #[test]
    fn names_round_trip_through_the_config_spelling() {
        for mode in ALL {
            let parsed: Mode =
                serde::Deserialize::deserialize(serde::de::value::StrDeserializer::<
                    serde::de::value::Error,
                >::new(mode.as_str()))
                .expect("parses");
            assert_eq!(parsed, mode);
        }
    }
}
