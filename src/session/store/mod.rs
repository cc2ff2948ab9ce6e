//! Where session records live: Redis in production, process memory for the demo only.
//! Both give the same semantics: a sliding idle TTL renewed at most once per touch interval,
//! and a hard absolute expiry.

mod health;
mod memory;
mod redis;
mod results;

pub use self::memory::MemoryStore;
pub use self::redis::{tls_client_config, RedisStore};
pub use self::results::{Loaded, StoreError};

use super::cookie::SessionHash;
use super::record::SessionRecord;
use crate::config::{StoreConfig, StoreUrl};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// The session store of a running proxy (one per process, shared by all routes).
#[derive(Clone)]
pub enum SessionStore {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl SessionStore {
    /// Builds the store. Redis is connected in the background: a Redis that is down at start
    /// is reported, and requests with a session get a 503 until it is reachable.
    pub async fn connect(config: &StoreConfig) -> Result<SessionStore, StoreError> {
        match &config.url {
            StoreUrl::Redis(_) | StoreUrl::Sentinel(_) | StoreUrl::Cluster(_) => {
                Ok(SessionStore::Redis(RedisStore::connect(config).await?))
            }
            StoreUrl::Memory => {
                tracing::warn!(
                    "SESSION STORE IS PROCESS MEMORY (memory://): sessions are lost on restart and not shared \
                     between proxies. For the demo and local trials only; use redis:// in production."
                );
                Ok(SessionStore::Memory(MemoryStore::default()))
            }
        }
    }

    /// Loads a live session and renews its idle timeout when the last renewal is older than
    /// `touch_interval`: one round trip.
    pub async fn load(
        &self,
        hash: &SessionHash,
        now_ms: u64,
        touch_interval: Duration,
    ) -> Result<Loaded, StoreError> {
        match self {
            SessionStore::Redis(store) => {
                let loaded = store
                    .observed("load", store.load(hash, now_ms, touch_interval))
                    .await?;
                if !matches!(loaded, Loaded::Missing) || !store.converts_earlier_layout() {
                    return Ok(loaded);
                }
                match store
                    .observed("convert", store.convert_earlier_session(hash))
                    .await?
                {
                    true => {
                        store
                            .observed("load", store.load(hash, now_ms, touch_interval))
                            .await
                    }
                    false => Ok(loaded),
                }
            }
            SessionStore::Memory(store) => Ok(store.load(hash, now_ms, touch_interval)),
        }
    }

    /// Ends a session and remembers for `remember_for` that it ended, so that an old store
    /// still holding it cannot bring it back during a migration.
    pub async fn end(
        &self,
        hash: &SessionHash,
        now_ms: u64,
        remember_for: Duration,
    ) -> Result<(), StoreError> {
        match self {
            SessionStore::Redis(store) => {
                store.observed("end", store.end(hash, remember_for)).await
            }
            SessionStore::Memory(store) => {
                store.end(hash, now_ms, remember_for);
                Ok(())
            }
        }
    }

    /// Writes a session with its TTL.
    pub async fn save(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        now_ms: u64,
        touch_interval: Duration,
    ) -> Result<(), StoreError> {
        match self {
            SessionStore::Redis(store) => {
                store
                    .observed("save", store.save(hash, record, now_ms, touch_interval))
                    .await
            }
            SessionStore::Memory(store) => {
                store.save(hash, record, now_ms, touch_interval);
                Ok(())
            }
        }
    }

    /// Writes a new session; with `redis.wait_replicas`, also waits for replicas to hold it.
    /// `Ok(Some(false))`: written, but not acknowledged in time.
    pub async fn save_acknowledged(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        now_ms: u64,
        touch_interval: Duration,
    ) -> Result<Option<bool>, StoreError> {
        match self {
            SessionStore::Redis(store) => {
                store
                    .observed(
                        "save_acknowledged",
                        store.save_acknowledged(hash, record, now_ms, touch_interval),
                    )
                    .await
            }
            SessionStore::Memory(store) => {
                store.save(hash, record, now_ms, touch_interval);
                Ok(None)
            }
        }
    }

    /// Deletes a session; `true` when it existed.
    pub async fn delete(&self, hash: &SessionHash) -> Result<bool, StoreError> {
        match self {
            SessionStore::Redis(store) => store.observed("delete", store.delete(hash)).await,
            SessionStore::Memory(store) => Ok(store.delete(hash)),
        }
    }

    /// A session's record and last-seen time, without renewing it (admin listings).
    pub async fn peek(
        &self,
        hash: &SessionHash,
    ) -> Result<Option<(SessionRecord, u64)>, StoreError> {
        match self {
            SessionStore::Redis(store) => {
                let peeked = store.observed("peek", store.peek(hash)).await?;
                if peeked.is_some()
                    || !store.converts_earlier_layout()
                    || !store
                        .observed("convert", store.convert_earlier_session(hash))
                        .await?
                {
                    return Ok(peeked);
                }
                store.observed("peek", store.peek(hash)).await
            }
            SessionStore::Memory(store) => Ok(store.peek(hash, super::record::now_ms())),
        }
    }

    /// Adds a session to its user's index with the time its record expires if unused
    /// (`ends_ms`; renewals raise it). Entries that ended by `now_ms` are dropped, and the
    /// index lasts as long as its longest session. Returns how many entries remain.
    pub async fn index_add(
        &self,
        user: &str,
        hash: &SessionHash,
        ends_ms: u64,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let user_key = user_key(user);
        match self {
            SessionStore::Redis(store) => {
                store
                    .observed(
                        "index_add",
                        store.index_add(&user_key, hash, ends_ms, now_ms),
                    )
                    .await
            }
            SessionStore::Memory(store) => Ok(store.index_add(&user_key, hash, ends_ms, now_ms)),
        }
    }

    pub async fn index_remove(&self, user: &str, hash: &SessionHash) -> Result<(), StoreError> {
        let user_key = user_key(user);
        let now = super::record::now_ms();
        match self {
            SessionStore::Redis(store) => {
                store
                    .observed("index_remove", store.index_remove(&user_key, hash, now))
                    .await
            }
            SessionStore::Memory(store) => {
                store.index_remove(&user_key, hash, now);
                Ok(())
            }
        }
    }

    /// A user's indexed sessions that may still be live, in no useful order (callers peek
    /// at each and sort by creation).
    pub async fn index_list(&self, user: &str) -> Result<Vec<SessionHash>, StoreError> {
        let user_key = user_key(user);
        let now = super::record::now_ms();
        match self {
            SessionStore::Redis(store) => {
                if store.converts_earlier_layout() {
                    let earlier = legacy_user_key(user);
                    store
                        .observed("convert", store.convert_earlier_index(&earlier))
                        .await?;
                }
                store
                    .observed("index_list", store.index_list(&user_key, now))
                    .await
            }
            SessionStore::Memory(store) => Ok(store.index_list(&user_key, now)),
        }
    }

    pub async fn index_drop(&self, user: &str) -> Result<(), StoreError> {
        let user_key = user_key(user);
        match self {
            SessionStore::Redis(store) => {
                store
                    .observed("index_drop", store.index_drop(&user_key))
                    .await
            }
            SessionStore::Memory(store) => {
                store.index_drop(&user_key);
                Ok(())
            }
        }
    }

    /// Records which instance set a session cookie (kept for `keep`), so that requests keep
    /// going there while the app holds the session itself.
    pub async fn bind(
        &self,
        hash: &SessionHash,
        instance: &str,
        keep: Duration,
    ) -> Result<(), StoreError> {
        match self {
            SessionStore::Redis(store) => {
                store
                    .observed("bind", store.bind(hash, instance, keep))
                    .await
            }
            SessionStore::Memory(store) => {
                store.bind(
                    hash,
                    instance,
                    super::record::now_ms() + keep.as_millis() as u64,
                );
                Ok(())
            }
        }
    }

    pub async fn binding(&self, hash: &SessionHash) -> Result<Option<String>, StoreError> {
        match self {
            SessionStore::Redis(store) => {
                let binding = store.observed("binding", store.binding(hash)).await?;
                if binding.is_some()
                    || !store.converts_earlier_layout()
                    || !store
                        .observed("convert", store.convert_earlier_binding(hash))
                        .await?
                {
                    return Ok(binding);
                }
                store.observed("binding", store.binding(hash)).await
            }
            SessionStore::Memory(store) => Ok(store.binding(hash, super::record::now_ms())),
        }
    }

    /// Round-trip time to the store.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        match self {
            SessionStore::Redis(store) => store.observed("ping", store.ping()).await,
            SessionStore::Memory(_) => Ok(Duration::ZERO),
        }
    }

    /// Counts command latency and errors in `metrics` from now on.
    pub fn observed_by(self, metrics: Arc<Metrics>) -> SessionStore {
        match self {
            SessionStore::Redis(store) => SessionStore::Redis(store.observed_by(metrics)),
            memory => memory,
        }
    }

    /// How long the store has been known down (requests with a session get a 503 without
    /// asking it), if it is.
    pub fn down_for(&self) -> Option<Duration> {
        match self {
            SessionStore::Redis(store) => store.down_for(),
            SessionStore::Memory(_) => None,
        }
    }

    /// Whether the store can take commands now.
    pub fn is_connected(&self) -> bool {
        match self {
            SessionStore::Redis(store) => store.is_connected(),
            SessionStore::Memory(_) => true,
        }
    }
}

/// A user id as it appears in key names: hashed (the first 128 bits of its SHA-256, in
/// base64url), so keys carry no personal data and no characters that need escaping.
fn user_key(user: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(user.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// The user key of the earlier layout: the whole SHA-256 in hex.
fn legacy_user_key(user: &str) -> String {
    use sha2::Digest;
    crate::hex_string(&sha2::Sha256::digest(user.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every request awaits a session lookup. A store future that carried fred's command future
    /// inline (several KB) would make each request's future that large, copied on every request.
    #[test]
    fn session_lookup_future_stays_small() {
        let store = SessionStore::Memory(MemoryStore::default());
        let hash = SessionHash::parse(&"0".repeat(64)).expect("a valid hash");
        let lookup = store.load(&hash, 0, Duration::from_secs(60));
        let size = std::mem::size_of_val(&lookup);
        assert!(size <= 512, "session lookup future is {size} bytes");
    }
}
