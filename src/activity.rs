//! What the migration dashboard shows of each route: per-minute counts of how session-carrying
//! requests were resolved over the last hour, old-store lookups, and a bounded sample of the
//! sessions seen recently (for cutover readiness). Kept beside the metrics, so reloads keep it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Minutes of history kept per route.
pub const MINUTES: usize = 60;

/// Sessions kept in a route's readiness sample at most (about 40 bytes each).
const SAMPLE_CAP: usize = 8192;

/// How a request that carried a session cookie was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Found in Redis.
    Redis,
    /// Found in an old store and copied into Redis.
    CopiedForward,
    /// Served as anonymous: no session found (or it was logged out).
    Anonymous,
    /// The session store did not answer (503, or routed as before where the store is optional).
    Unavailable,
}

// Indexes into a minute's counters.
const REDIS: usize = 0;
const COPIED: usize = 1;
const ANONYMOUS: usize = 2;
const UNAVAILABLE: usize = 3;
const LOOKUPS: usize = 4;
const LOOKUP_ERRORS: usize = 5;
const LOOKUP_MICROS: usize = 6;
const COUNTERS: usize = 7;

/// One minute's counters, stamped with the minute (since the Unix epoch) they count.
#[derive(Default)]
struct Slot {
    minute: AtomicU64,
    counts: [AtomicU64; COUNTERS],
}

/// One minute of a route's history, as read for the dashboard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteCounts {
    /// Minutes since the Unix epoch.
    pub minute: u64,
    pub redis: u64,
    pub copied_forward: u64,
    pub anonymous: u64,
    pub unavailable: u64,
    pub old_store_lookups: u64,
    pub old_store_errors: u64,
    /// Summed latency of the old-store lookups, microseconds.
    pub old_store_micros: u64,
}

/// The share of a route's recently active sessions that Redis holds, estimated from a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// Sessions seen within the window (estimated: sampled count times `scale`).
    pub active: u64,
    /// Of those, sessions whose last request found them in Redis (or copied them there).
    pub in_redis: u64,
    /// Each sampled session stands for this many (1 while all sessions are kept).
    pub scale: u64,
}

/// A route's dashboard data. Counting a request is an atomic increment into the current
/// minute's slot; the readiness sample takes a short lock only for sampled sessions.
pub struct RouteActivity {
    ring: [Slot; MINUTES],
    sample: SessionSample,
}

impl Default for RouteActivity {
    fn default() -> Self {
        RouteActivity {
            ring: std::array::from_fn(|_| Slot::default()),
            sample: SessionSample::default(),
        }
    }
}

impl RouteActivity {
    /// Counts one session-carrying request. `session` is the session id it carried (hashed
    /// here, never kept raw) and whether Redis now holds it, for the readiness sample.
    pub fn resolved(&self, resolved: Resolved, session: Option<(&str, bool)>, window: Duration) {
        let index = match resolved {
            Resolved::Redis => REDIS,
            Resolved::CopiedForward => COPIED,
            Resolved::Anonymous => ANONYMOUS,
            Resolved::Unavailable => UNAVAILABLE,
        };
        let now = now_ms();
        self.slot(now / 60_000).counts[index].fetch_add(1, Relaxed);
        if let Some((id, in_redis)) = session {
            self.sample.seen(id, in_redis, now, window);
        }
    }

    /// Counts one old-store lookup and its latency.
    pub fn old_store_lookup(&self, took: Duration, failed: bool) {
        let slot = self.slot(now_ms() / 60_000);
        slot.counts[LOOKUPS].fetch_add(1, Relaxed);
        slot.counts[LOOKUP_MICROS].fetch_add(took.as_micros() as u64, Relaxed);
        if failed {
            slot.counts[LOOKUP_ERRORS].fetch_add(1, Relaxed);
        }
    }

    /// The slot of `minute`, emptied first when it still holds an older minute. An increment
    /// racing with the emptying may be lost: a rounding error once a minute, not worth a lock.
    fn slot(&self, minute: u64) -> &Slot {
        let slot = &self.ring[(minute % MINUTES as u64) as usize];
        let stamp = slot.minute.load(Relaxed);
        if stamp != minute
            && slot
                .minute
                .compare_exchange(stamp, minute, Relaxed, Relaxed)
                .is_ok()
        {
            for count in &slot.counts {
                count.store(0, Relaxed);
            }
        }
        slot
    }

    /// The last hour, oldest minute first, the current (partial) minute last.
    pub fn last_hour(&self) -> Vec<MinuteCounts> {
        let now = now_ms() / 60_000;
        (now + 1 - MINUTES as u64..=now)
            .map(|minute| {
                let slot = &self.ring[(minute % MINUTES as u64) as usize];
                if slot.minute.load(Relaxed) != minute {
                    return MinuteCounts {
                        minute,
                        ..MinuteCounts::default()
                    };
                }
                let count = |index: usize| slot.counts[index].load(Relaxed);
                MinuteCounts {
                    minute,
                    redis: count(REDIS),
                    copied_forward: count(COPIED),
                    anonymous: count(ANONYMOUS),
                    unavailable: count(UNAVAILABLE),
                    old_store_lookups: count(LOOKUPS),
                    old_store_errors: count(LOOKUP_ERRORS),
                    old_store_micros: count(LOOKUP_MICROS),
                }
            })
            .collect()
    }

    /// The share of sessions active within `window` that Redis holds.
    pub fn readiness(&self, window: Duration) -> Readiness {
        self.sample.readiness(now_ms(), window)
    }
}

/// Sessions seen recently, by a 64-bit keyed hash of their id: when last seen, and whether
/// Redis held them then. Bounded by adaptive sampling: past [`SAMPLE_CAP`] entries (after
/// dropping those idle beyond the window) only hashes with one more trailing zero bit are
/// kept, halving the sample. Each kept session then stands for 2^level, so the share stays an
/// unbiased estimate at any traffic, in at most a few hundred KB per route; a capped map that
/// stopped adding would instead see only the sessions that came first.
#[derive(Default)]
struct SessionSample {
    hasher: RandomState,
    level: AtomicU32,
    seen: Mutex<HashMap<u64, (u64, bool)>>,
}

impl SessionSample {
    fn seen(&self, id: &str, in_redis: bool, now: u64, window: Duration) {
        let key = self.hasher.hash_one(id);
        if key.trailing_zeros() < self.level.load(Relaxed) {
            return;
        }
        let mut seen = self.lock();
        seen.insert(key, (now, in_redis));
        if seen.len() <= SAMPLE_CAP {
            return;
        }
        let since = now.saturating_sub(window.as_millis() as u64);
        seen.retain(|_, (last, _)| *last >= since);
        let mut level = self.level.load(Relaxed);
        while seen.len() > SAMPLE_CAP / 2 && level < 63 {
            level += 1;
            seen.retain(|key, _| key.trailing_zeros() >= level);
        }
        self.level.store(level, Relaxed);
    }

    fn readiness(&self, now: u64, window: Duration) -> Readiness {
        let since = now.saturating_sub(window.as_millis() as u64);
        let seen = self.lock();
        let scale = 1u64 << self.level.load(Relaxed);
        let (mut active, mut in_redis) = (0u64, 0u64);
        for (last, held) in seen.values() {
            if *last >= since {
                active += 1;
                in_redis += u64::from(*held);
            }
        }
        Readiness {
            active: active * scale,
            in_redis: in_redis * scale,
            scale,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, (u64, bool)>> {
        // A panic while holding the lock leaves at worst one entry stale; keep counting.
        self.seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every route's activity by route label, for the life of the process.
#[derive(Default)]
pub struct Activity {
    routes: Mutex<HashMap<String, Arc<RouteActivity>>>,
}

impl Activity {
    /// The activity of the route labelled `label`, created on first use; a reloaded config
    /// gets the same one back, so the history survives reloads.
    pub fn route(&self, label: &str) -> Arc<RouteActivity> {
        let mut routes = self
            .routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        routes.entry(label.to_string()).or_default().clone()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_the_current_minute() {
        let activity = RouteActivity::default();
        let window = Duration::from_secs(60);
        activity.resolved(Resolved::Redis, Some(("a", true)), window);
        activity.resolved(Resolved::Redis, Some(("a", true)), window);
        activity.resolved(Resolved::Anonymous, Some(("b", false)), window);
        activity.old_store_lookup(Duration::from_millis(3), true);
        let hour = activity.last_hour();
        assert_eq!(hour.len(), MINUTES);
        let now = hour[MINUTES - 1];
        assert_eq!((now.redis, now.anonymous, now.copied_forward), (2, 1, 0));
        assert_eq!((now.old_store_lookups, now.old_store_errors), (1, 1));
        assert_eq!(now.old_store_micros, 3000);
        assert!(hour[..MINUTES - 1].iter().all(|m| m.redis == 0));
        assert_eq!(
            activity.readiness(window),
            Readiness {
                active: 2,
                in_redis: 1,
                scale: 1
            }
        );
    }

    /// Far more sessions than the cap: memory stays bounded and the share stays close.
    #[test]
    fn the_sample_stays_bounded_and_estimates_the_share() {
        let sample = SessionSample::default();
        let window = Duration::from_secs(3600);
        for n in 0..200_000u32 {
            sample.seen(&format!("session-{n}"), n % 4 != 0, 1_000_000, window);
        }
        assert!(sample.lock().len() <= SAMPLE_CAP);
        let readiness = sample.readiness(1_000_000, window);
        assert!(readiness.scale > 1);
        let share = readiness.in_redis as f64 / readiness.active as f64;
        assert!((share - 0.75).abs() < 0.03, "share {share}");
        assert!((readiness.active as f64 / 200_000.0 - 1.0).abs() < 0.2);
        // Sessions idle beyond the window do not count.
        assert_eq!(sample.readiness(1_000_000 + 3_600_001, window).active, 0);
    }
}
