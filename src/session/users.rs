//! A user's sessions: the per-user index, listing for operators, revocation ("log out
//! everywhere"), and the cap on concurrent sessions. Revoked and evicted sessions are ended
//! with a marker so that no old store can bring them back during a migration.

use super::context::Sessions;
use super::cookie::SessionHash;
use super::record::{now_ms, SessionRecord};
use super::store::{IfAbsent, SessionStore, StoreError};
use serde::Serialize;
use std::time::Duration;

/// What an operator sees of a session: never the raw id.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    pub id_hash: String,
    pub user: String,
    /// A short label such as "Chrome 131 on Mac OSX" (see [`super::device`]).
    pub device: Option<String>,
    pub client_ip: Option<String>,
    pub origin: Option<String>,
    pub created_ms: u64,
    pub last_seen_ms: u64,
    pub expires_ms: u64,
}

/// One of a user's live sessions: when it started, its family, and its live ids.
type LiveSession = (u64, SessionHash, Vec<(SessionHash, SessionRecord)>);

/// Indexes a session just saved under its user and, when the user now holds more than `max`
/// live sessions (0 = no cap), ends the oldest. The ids the app re-issued for one session
/// (branches of parallel requests, see [`SessionRecord::family`]) count as one. Returns how
/// many sessions were evicted.
///
/// The index entry ends when the saved record expires if unused (`touch`: the store's touch
/// interval, as in the record's TTL); renewals raise it. Entries that ended are pruned here.
pub async fn register(
    store: &SessionStore,
    hash: &SessionHash,
    record: &SessionRecord,
    max: usize,
    remember: Duration,
    touch: Duration,
) -> Result<usize, StoreError> {
    let user = &record.identity.user;
    let now = now_ms();
    let ends = now + record.ttl_ms(now, touch).max(1);
    let count = store.index_add(user, hash, ends, now).await?;
    if max == 0 || count <= max {
        return Ok(0);
    }
    // Entries are pruned by an upper bound of their end: some may belong to sessions that
    // ended early. Only live ones count, each session's ids once, and the oldest sessions go.
    let new_family = record.family(hash);
    let mut sessions: Vec<LiveSession> = Vec::new();
    for old in store.index_list(user).await? {
        if old == *hash {
            continue;
        }
        let old_record = match store.peek(&old).await? {
            Some((old_record, _)) if old_record.ends_ms() > now => old_record,
            _ => {
                store.index_remove(user, &old).await?;
                continue;
            }
        };
        let family = old_record.family(&old).clone();
        if family == *new_family {
            continue;
        }
        match sessions.iter_mut().find(|(_, f, _)| *f == family) {
            Some((created, _, ids)) => {
                *created = (*created).min(old_record.created_ms);
                ids.push((old, old_record));
            }
            None => sessions.push((old_record.created_ms, family, vec![(old, old_record)])),
        }
    }
    sessions.sort_by_key(|(created, _, _)| *created);
    let excess = (sessions.len() + 1).saturating_sub(max);
    for (_, _, ids) in sessions.into_iter().take(excess) {
        for (old, old_record) in ids {
            end(store, &old, &old_record, remember).await?;
            store.index_remove(user, &old).await?;
            tracing::info!(session = old.short(), %user, "session cap reached: oldest session ended");
        }
    }
    Ok(excess)
}

/// The user's live sessions, oldest first. Index entries of sessions that ended are pruned.
pub async fn list(store: &SessionStore, user: &str) -> Result<Vec<SessionSummary>, StoreError> {
    let mut sessions = Vec::new();
    for hash in store.index_list(user).await? {
        match store.peek(&hash).await? {
            Some((record, _)) if record.ends_ms() <= now_ms() => {
                store.index_remove(user, &hash).await?
            }
            Some((record, last_seen_ms)) => sessions.push(SessionSummary {
                id_hash: hash.to_string(),
                user: record.identity.user,
                device: record.device,
                client_ip: record.client_ip,
                origin: record.origin,
                created_ms: record.created_ms,
                last_seen_ms,
                expires_ms: record.expires_ms,
            }),
            None => store.index_remove(user, &hash).await?,
        }
    }
    sessions.sort_by_key(|s| s.created_ms);
    Ok(sessions)
}

/// The user's live ids of `family` (branches of one session, see [`SessionRecord::family`])
/// other than `except`, with their records.
pub async fn family_members(
    store: &SessionStore,
    user: &str,
    family: &SessionHash,
    except: &SessionHash,
) -> Result<Vec<(SessionHash, SessionRecord)>, StoreError> {
    let mut members = Vec::new();
    for hash in store.index_list(user).await? {
        if hash == *except {
            continue;
        }
        if let Some((record, _)) = store.peek(&hash).await? {
            if record.family(&hash) == family {
                members.push((hash, record));
            }
        }
    }
    Ok(members)
}

/// Ends one session, with every id the app gave it; `false` when it was not live.
pub async fn revoke(
    store: &SessionStore,
    hash: &SessionHash,
    remember: Duration,
) -> Result<bool, StoreError> {
    let Some((record, _)) = store.peek(hash).await? else {
        return Ok(false);
    };
    let user = &record.identity.user;
    for (other, other_record) in family_members(store, user, record.family(hash), hash).await? {
        end(store, &other, &other_record, remember).await?;
        store.index_remove(user, &other).await?;
    }
    end(store, hash, &record, remember).await?;
    store.index_remove(&record.identity.user, hash).await?;
    tracing::info!(session = hash.short(), user = %record.identity.user, "session revoked");
    Ok(true)
}

/// Ends every session of a user ("log out everywhere"); returns how many were live.
pub async fn revoke_user(
    store: &SessionStore,
    user: &str,
    remember: Duration,
) -> Result<usize, StoreError> {
    let mut ended = 0;
    for hash in store.index_list(user).await? {
        if let Some((record, _)) = store.peek(&hash).await? {
            end(store, &hash, &record, remember).await?;
            ended += 1;
        }
    }
    store.index_drop(user).await?;
    tracing::info!(%user, sessions = ended, "all sessions of the user revoked");
    Ok(ended)
}

/// Ends a session, and the ids it replaced when the app re-issued its cookie.
async fn end(
    store: &SessionStore,
    hash: &SessionHash,
    record: &SessionRecord,
    remember: Duration,
) -> Result<(), StoreError> {
    store.end(hash, now_ms(), remember).await?;
    end_replaced_ids(store, record, remember).await
}

/// Ends, with a marker kept for `remember`, the ids a session had before the app re-issued
/// its cookie: those still in their grace period, and the first one (its family), under which
/// the app may still hold the login. A marked id is withheld from the app, so an instance that
/// still holds that login never sees it again.
pub async fn end_replaced_ids(
    store: &SessionStore,
    record: &SessionRecord,
    remember: Duration,
) -> Result<(), StoreError> {
    let replaced = live_predecessors(store, record).await?;
    for hash in replaced.iter().chain(&record.family) {
        store.end(hash, now_ms(), remember).await?;
    }
    Ok(())
}

/// The longest chain of replaced ids followed when a session ends.
const MAX_PREDECESSORS: usize = 64;

/// The ids a session replaced that still resolve (each stays usable for a grace period after
/// the app re-issues its cookie), newest first: they must end with it. Each was retired before
/// the one after it, so the walk stops at the first that no longer resolves.
async fn live_predecessors(
    store: &SessionStore,
    record: &SessionRecord,
) -> Result<Vec<SessionHash>, StoreError> {
    let mut live = Vec::new();
    let mut previous = record.rotated_from.clone();
    while let Some(hash) = previous {
        if live.len() == MAX_PREDECESSORS {
            break;
        }
        let Some((record, _)) = store.peek(&hash).await? else {
            break;
        };
        if record.ends_ms() <= now_ms() {
            break;
        }
        previous = record.rotated_from;
        live.push(hash);
    }
    Ok(live)
}

/// Stores a new session and indexes it under its user, ending the oldest beyond the cap.
pub async fn store_session(
    sessions: &Sessions,
    hash: &SessionHash,
    record: &SessionRecord,
) -> Result<(), StoreError> {
    let settings = &sessions.settings;
    let acknowledged = sessions
        .store
        .save_acknowledged(hash, record, now_ms(), settings.touch_interval())
        .await?;
    if acknowledged == Some(false) {
        // Served anyway: refusing logins whenever a replica lags would turn a replica
        // problem into an outage. The session is lost only if the master fails before it
        // replicates; the counter shows how often that window was open.
        sessions.metrics.replica_wait_timeouts.inc();
        tracing::debug!(
            session = hash.short(),
            "new session not acknowledged by replicas within redis.wait_timeout"
        );
    }
    let evicted = register(
        &sessions.store,
        hash,
        record,
        settings.max_sessions_per_user,
        settings.absolute_lifetime,
        settings.touch_interval(),
    )
    .await?;
    sessions.metrics.sessions_evicted.inc_by(evicted as u64);
    Ok(())
}

/// Stores a session copied from an old store (the bulk pre-copy, a copy-forward) unless the
/// store holds that id already, live or ended, and indexes it under its user as
/// [`store_session`] does. Unlike a login it ends no other session: the per-user cap applies
/// at the user's next login.
///
/// The key lives, if unused, no longer than `lasts` (what the session had left in the old
/// store), so an abandoned session vanishes when it would have there. Its last renewal is
/// set a touch interval back, so the first request renews it as a copy-forward would be.
/// `check_only`: answers what it would do and writes nothing.
pub async fn store_session_if_absent(
    sessions: &Sessions,
    hash: &SessionHash,
    record: &SessionRecord,
    lasts: Option<Duration>,
    check_only: bool,
) -> Result<IfAbsent, StoreError> {
    let touch = sessions.settings.touch_interval();
    let now = now_ms();
    let ttl = record.ttl_ms(now, touch);
    let ttl = lasts
        .map_or(ttl, |lasts| ttl.min(lasts.as_millis() as u64))
        .max(1);
    // A second more than the interval: Redis keeps the last renewal in whole seconds, rounded
    // up, which would otherwise leave the first request up to a second short of due.
    let seen = now.saturating_sub(touch.as_millis() as u64 + 1000);
    let written = sessions
        .store
        .save_if_absent(hash, record, seen, ttl, check_only)
        .await?;
    if written == IfAbsent::Written && !check_only {
        register(&sessions.store, hash, record, 0, Duration::ZERO, touch).await?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::record::Identity;
    use crate::session::store::MemoryStore;

    fn record(created_ms: u64, lasts_ms: u64) -> SessionRecord {
        SessionRecord {
            identity: Identity {
                user: "erin".into(),
                roles: Vec::new(),
                email: None,
                attributes: Default::default(),
            },
            created_ms,
            expires_ms: created_ms + lasts_ms,
            idle_ms: lasts_ms,
            origin: None,
            device: None,
            client_ip: None,
            rotated_from: None,
            retires_ms: None,
            family: None,
        }
    }

    fn hash(n: u8) -> SessionHash {
        // The id is the digest's first half.
        SessionHash::parse(&format!("{n:02x}{}", "0".repeat(62))).expect("64 hex digits")
    }

    fn sessions(store: &SessionStore) -> Sessions {
        let settings = crate::config::parse_config(
            "[listener]\naddress = \"127.0.0.1:0\"\n[redis]\nurl = \"memory://\"\n\
             [session]\ncookie = \"sid\"\nid_format = \"plain\"\nidle_timeout = \"30m\"\nabsolute_lifetime = \"12h\"\n\
             [[upstreams]]\nname = \"app\"\ninstances = [{ name = \"a\", url = \"http://127.0.0.1:1\" }]\n\
             [[routes]]\nupstream = \"app\"\nmode = \"redis\"\n",
            std::path::Path::new("test.toml"),
        )
        .expect("a valid config");
        Sessions {
            store: store.clone(),
            settings: std::sync::Arc::new(settings.session),
            identity: std::sync::Arc::new(settings.identity),
            metrics: std::sync::Arc::new(crate::metrics::Metrics::new()),
        }
    }

    /// A copy made ahead of use lands only where the store holds nothing for the id (no
    /// session, no end marker), and a check writes nothing.
    #[tokio::test]
    async fn a_copy_if_absent_never_replaces_a_session_or_an_ended_id() {
        let store = SessionStore::Memory(MemoryStore::default());
        let sessions = sessions(&store);
        let copy = record(now_ms(), 3_600_000);
        let ten_minutes = Some(Duration::from_secs(600));
        let put = |n: u8, check_only: bool| {
            let (sessions, copy) = (sessions.clone(), copy.clone());
            async move {
                store_session_if_absent(&sessions, &hash(n), &copy, ten_minutes, check_only)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(put(1, true).await, IfAbsent::Written);
        assert_eq!(
            store.peek(&hash(1)).await.unwrap(),
            None,
            "a check writes nothing"
        );
        assert_eq!(put(1, false).await, IfAbsent::Written);
        assert_eq!(list(&store, "erin").await.unwrap().len(), 1, "indexed");
        assert_eq!(put(1, false).await, IfAbsent::Present);

        let mut newer = record(now_ms(), 60_000);
        newer.device = Some("the proxy's own".into());
        store
            .save_acknowledged(&hash(2), &newer, now_ms(), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(put(2, false).await, IfAbsent::Present);
        let (kept, _) = store.peek(&hash(2)).await.unwrap().unwrap();
        assert_eq!(kept, newer);

        store
            .end(&hash(3), now_ms(), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(put(3, true).await, IfAbsent::Ended);
        assert_eq!(put(3, false).await, IfAbsent::Ended);
        assert_eq!(
            store
                .load(&hash(3), now_ms(), Duration::from_secs(1))
                .await
                .unwrap(),
            crate::session::store::Loaded::Ended
        );
    }

    /// The memory store keeps the Redis semantics: ended entries are pruned and never count
    /// towards the cap; the oldest live session is the one ended.
    /// The memory store keeps the Redis semantics of `save_if_live`: only a live session's
    /// record is replaced; an ended or missing id stays as it is.
    #[tokio::test]
    async fn a_save_if_live_never_revives_an_ended_or_missing_id() {
        let store = SessionStore::Memory(MemoryStore::default());
        let touch = Duration::from_secs(1);
        let first = record(now_ms(), 60_000);
        let mut update = first.clone();
        update.device = Some("updated".into());
        let (store, update) = (&store, &update);
        let saved = |n: u8| async move {
            store
                .save_if_live(&hash(n), update, now_ms(), touch)
                .await
                .unwrap()
        };
        assert!(!saved(1).await, "missing");
        store
            .end(&hash(2), now_ms(), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(!saved(2).await, "ended");
        assert_eq!(
            store.load(&hash(2), now_ms(), touch).await.unwrap(),
            crate::session::store::Loaded::Ended
        );
        store
            .save_acknowledged(&hash(3), &first, now_ms(), touch)
            .await
            .unwrap();
        assert!(saved(3).await, "live");
        let (kept, _) = store.peek(&hash(3)).await.unwrap().unwrap();
        assert_eq!(&kept, update);
        assert!(store.peek(&hash(1)).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_cap_counts_live_sessions_and_ends_the_oldest() {
        let store = SessionStore::Memory(MemoryStore::default());
        let (remember, touch) = (Duration::from_secs(60), Duration::from_millis(1));
        let save_and_register = |n: u8, lasts_ms: u64, max: usize| {
            let (store, record) = (store.clone(), record(now_ms(), lasts_ms));
            async move {
                store
                    .save_acknowledged(&hash(n), &record, now_ms(), touch)
                    .await?;
                register(&store, &hash(n), &record, max, remember, touch).await
            }
        };
        for n in 0..5 {
            assert_eq!(save_and_register(n, 5, 0).await.unwrap(), 0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        for n in 10..12 {
            assert_eq!(
                save_and_register(n, 60_000, 2).await.unwrap(),
                0,
                "ended ones count"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(store.index_list("erin").await.unwrap().len(), 2, "pruned");
        assert_eq!(save_and_register(12, 60_000, 2).await.unwrap(), 1);
        let listed: Vec<String> = list(&store, "erin")
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.id_hash)
            .collect();
        assert_eq!(listed, vec![hash(11).to_string(), hash(12).to_string()]);
        assert_eq!(
            store.load(&hash(10), now_ms(), touch).await.unwrap(),
            crate::session::store::Loaded::Ended
        );
    }
}
