//! A user's sessions: the per-user index, listing for operators, revocation ("log out
//! everywhere"), and the cap on concurrent sessions. Revoked and evicted sessions are ended
//! with a marker so that no old store can bring them back during a migration.

use super::cookie::SessionHash;
use super::record::{now_ms, SessionRecord};
use super::store::{SessionStore, StoreError};
use serde::Serialize;
use std::time::Duration;

/// What an operator sees of a session: never the raw id.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    pub id_hash: String,
    pub user: String,
    pub user_agent: Option<String>,
    pub client_ip: Option<String>,
    pub origin: Option<String>,
    pub created_ms: u64,
    pub last_seen_ms: u64,
    pub expires_ms: u64,
}

/// Indexes a new session under its user and, when the user now holds more than `max`
/// sessions (0 = no cap), ends the oldest. The ids the app re-issued for one session (branches
/// of parallel requests, see [`SessionRecord::family`]) count as one. Returns how many were
/// evicted.
pub async fn register(
    store: &SessionStore,
    hash: &SessionHash,
    record: &SessionRecord,
    max: usize,
    remember: Duration,
) -> Result<usize, StoreError> {
    let user = &record.identity.user;
    let keep = Duration::from_millis(record.expires_ms.saturating_sub(record.created_ms));
    let count = store.index_add(user, hash, record.created_ms, keep).await?;
    if max == 0 || count <= max {
        return Ok(0);
    }
    // Oldest first, as the index lists them; each family with its live ids.
    let mut families: Vec<(SessionHash, Vec<(SessionHash, SessionRecord)>)> = Vec::new();
    for old in store.index_list(user).await? {
        let Some((old_record, _)) = store.peek(&old).await? else {
            continue;
        };
        let family = old_record.family(&old).clone();
        match families.iter_mut().find(|(f, _)| *f == family) {
            Some((_, ids)) => ids.push((old, old_record)),
            None => families.push((family, vec![(old, old_record)])),
        }
    }
    let new_family = record.family(hash);
    let mut live = families.len();
    let mut evicted = 0;
    for (family, ids) in families {
        if live <= max {
            break;
        }
        if family == *new_family {
            continue;
        }
        for (old, old_record) in ids {
            end(store, &old, &old_record, remember).await?;
            store.index_remove(user, &old).await?;
            tracing::info!(session = old.short(), %user, "session cap reached: oldest session ended");
        }
        live -= 1;
        evicted += 1;
    }
    Ok(evicted)
}

/// The user's live sessions, oldest first. Index entries of sessions that expired are pruned.
pub async fn list(store: &SessionStore, user: &str) -> Result<Vec<SessionSummary>, StoreError> {
    let mut sessions = Vec::new();
    for hash in store.index_list(user).await? {
        match store.peek(&hash).await? {
            Some((record, last_seen_ms)) => sessions.push(SessionSummary {
                id_hash: hash.to_string(),
                user: record.identity.user,
                user_agent: record.user_agent,
                client_ip: record.client_ip,
                origin: record.origin,
                created_ms: record.created_ms,
                last_seen_ms,
                expires_ms: record.expires_ms,
            }),
            None => store.index_remove(user, &hash).await?,
        }
    }
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
    for previous in live_predecessors(store, record).await? {
        store.end(&previous, now_ms(), remember).await?;
    }
    Ok(())
}

/// The longest chain of replaced ids followed when a session ends.
const MAX_PREDECESSORS: usize = 64;

/// The ids a session replaced that still resolve (each stays usable for a grace period after
/// the app re-issues its cookie), newest first: they must end with it. Each was retired before
/// the one after it, so the walk stops at the first that no longer resolves.
pub async fn live_predecessors(
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
