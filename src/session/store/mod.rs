//! Where session records live: Redis in production, process memory for the demo only.
//! Both give the same semantics: a sliding idle TTL renewed at most once per touch interval,
//! and a hard absolute expiry.

mod health;
mod memory;
mod near_cache;
mod redis;
mod results;

pub use self::memory::MemoryStore;
pub use self::near_cache::NearCache;
pub use self::redis::{tls_client_config, RedisStore};
pub use self::results::{IfAbsent, Loaded, StoreError};

use super::cookie::SessionHash;
use super::record::SessionRecord;
use crate::config::{StoreConfig, StoreUrl};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// The session store of a running proxy (one per process, shared by all routes).
#[derive(Clone)]
pub enum SessionStore {
    /// With the near cache, unless `[redis.near_cache]` turned it off (or on a Cluster).
    Redis(RedisStore, Option<Arc<NearCache>>),
    Memory(MemoryStore),
}

impl SessionStore {
    /// Builds the store. Redis is connected in the background: a Redis that is down at start
    /// is reported, and requests with a session get a 503 until it is reachable.
    pub async fn connect(config: &StoreConfig) -> Result<SessionStore, StoreError> {
        match &config.url {
            StoreUrl::Redis(_) | StoreUrl::Sentinel(_) | StoreUrl::Cluster(_) => {
                let store = RedisStore::connect(config).await?;
                store.convert_earlier_layout_in_background();
                let near = near_cache(config, &store)?;
                Ok(SessionStore::Redis(store, near))
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
            SessionStore::Redis(store, near) => {
                let loaded = load_redis(store, near, hash, now_ms, touch_interval).await?;
                if !matches!(loaded, Loaded::Missing) || !store.converts_earlier_layout() {
                    return Ok(loaded);
                }
                // Rare (keys of the earlier layout, until converted): boxed, so that every
                // lookup's future stays small.
                Box::pin(async {
                    match store
                        .observed("convert", store.convert_earlier_session(hash))
                        .await?
                    {
                        true => load_redis(store, near, hash, now_ms, touch_interval).await,
                        false => Ok(loaded),
                    }
                })
                .await
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
            SessionStore::Redis(store, near) => {
                let ended = store.observed("end", store.end(hash, remember_for)).await;
                forget(store, near, hash);
                ended
            }
            SessionStore::Memory(store) => {
                store.end(hash, now_ms, remember_for);
                Ok(())
            }
        }
    }

    /// Replaces the record of a session that is still live, in one atomic step; `false` when
    /// the id ended or is gone (a logout or a revoke came first): nothing is written, so an
    /// update made for a request in flight never brings an ended session back.
    pub async fn save_if_live(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        now_ms: u64,
        touch_interval: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            SessionStore::Redis(store, near) => {
                let saved = store
                    .observed(
                        "save_if_live",
                        store.save_if_live(hash, record, now_ms, touch_interval),
                    )
                    .await;
                forget(store, near, hash);
                saved
            }
            SessionStore::Memory(store) => {
                Ok(store.save_if_live(hash, record, now_ms, touch_interval))
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
            SessionStore::Redis(store, near) => {
                let saved = store
                    .observed(
                        "save_acknowledged",
                        store.save_acknowledged(hash, record, now_ms, touch_interval),
                    )
                    .await;
                forget(store, near, hash);
                saved
            }
            SessionStore::Memory(store) => {
                store.save(hash, record, now_ms, touch_interval);
                Ok(None)
            }
        }
    }

    /// Writes a session unless the store holds that id already, live or ended, in one atomic
    /// step: a copy made ahead of use never replaces a newer session nor revives a logout.
    /// The key lives `ttl_ms` if unused; `seen_ms` is its last renewal. `check_only`: says
    /// what it would do, writes nothing.
    pub async fn save_if_absent(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        seen_ms: u64,
        ttl_ms: u64,
        check_only: bool,
    ) -> Result<IfAbsent, StoreError> {
        match self {
            SessionStore::Redis(store, near) => {
                let saved = store
                    .observed(
                        "save_if_absent",
                        store.save_if_absent(hash, record, seen_ms, ttl_ms, check_only),
                    )
                    .await;
                forget(store, near, hash);
                saved
            }
            SessionStore::Memory(store) => {
                Ok(store.save_if_absent(hash, record, seen_ms, ttl_ms, check_only))
            }
        }
    }

    /// Deletes a session; `true` when it existed.
    pub async fn delete(&self, hash: &SessionHash) -> Result<bool, StoreError> {
        match self {
            SessionStore::Redis(store, near) => {
                let deleted = store.observed("delete", store.delete(hash)).await;
                forget(store, near, hash);
                deleted
            }
            SessionStore::Memory(store) => Ok(store.delete(hash)),
        }
    }

    /// A session's record and last-seen time, without renewing it (admin listings).
    pub async fn peek(
        &self,
        hash: &SessionHash,
    ) -> Result<Option<(SessionRecord, u64)>, StoreError> {
        match self {
            SessionStore::Redis(store, _) => {
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
            SessionStore::Redis(store, _) => {
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
            SessionStore::Redis(store, _) => {
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
            SessionStore::Redis(store, _) => {
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
            SessionStore::Redis(store, _) => {
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
            SessionStore::Redis(store, _) => {
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
            SessionStore::Redis(store, _) => {
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
            SessionStore::Redis(store, _) => store.observed("ping", store.ping()).await,
            SessionStore::Memory(_) => Ok(Duration::ZERO),
        }
    }

    /// Roughly how many sessions the store holds, counting at most `cap` (Redis: session keys,
    /// logout markers included); `true` when the count stopped at the cap.
    pub async fn count_sessions(&self, cap: usize) -> Result<(usize, bool), StoreError> {
        match self {
            SessionStore::Redis(store, _) => {
                store.observed("scan", store.count_session_keys(cap)).await
            }
            SessionStore::Memory(store) => {
                Ok((store.live_sessions(super::record::now_ms()), false))
            }
        }
    }

    /// Counts command latency and errors in `metrics` from now on.
    pub fn observed_by(self, metrics: Arc<Metrics>) -> SessionStore {
        match self {
            SessionStore::Redis(store, near) => {
                if let Some(near) = &near {
                    near.observed_by(metrics.clone());
                }
                SessionStore::Redis(store.observed_by(metrics), near)
            }
            memory => memory,
        }
    }

    /// Sessions held by the near cache.
    pub fn near_cache_entries(&self) -> usize {
        match self {
            SessionStore::Redis(_, Some(near)) => near.entry_count(),
            _ => 0,
        }
    }

    /// How long the store has been known down (requests with a session get a 503 without
    /// asking it), if it is.
    pub fn down_for(&self) -> Option<Duration> {
        match self {
            SessionStore::Redis(store, _) => store.down_for(),
            SessionStore::Memory(_) => None,
        }
    }

    /// Whether the store can take commands now.
    pub fn is_connected(&self) -> bool {
        match self {
            SessionStore::Redis(store, _) => store.is_connected(),
            SessionStore::Memory(_) => true,
        }
    }
}

/// A session lookup in Redis, through the near cache when there is one.
async fn load_redis(
    store: &RedisStore,
    near: &Option<Arc<NearCache>>,
    hash: &SessionHash,
    now_ms: u64,
    touch: Duration,
) -> Result<Loaded, StoreError> {
    match near {
        Some(near) => Box::pin(load_through(store, near, hash, now_ms, touch)).await,
        None => {
            store
                .observed("load", store.load(hash, now_ms, touch))
                .await
        }
    }
}

/// The near cache of `[redis.near_cache]`, following Redis's invalidations of session keys.
fn near_cache(
    config: &StoreConfig,
    store: &RedisStore,
) -> Result<Option<Arc<NearCache>>, StoreError> {
    if !config.near_cache.enabled {
        return Ok(None);
    }
    if let StoreUrl::Cluster(_) = config.url {
        let node_config = config.clone();
        return Ok(Some(NearCache::start_on_cluster(
            &config.near_cache,
            store.a_client(),
            move |node| redis::invalidation_client_to(&node_config, node),
            store.session_key_prefix(),
            config.command_timeout,
        )));
    }
    let client = redis::invalidation_client(config)?;
    Ok(Some(NearCache::start(
        &config.near_cache,
        client,
        store.session_key_prefix(),
        config.command_timeout,
    )))
}

/// A session lookup through the near cache: a hit asks Redis nothing (but still renews the
/// session once per touch interval); a miss reads Redis and caches a live session. While
/// Redis is unreachable, a cached session may be served (`serve_stale_for`).
async fn load_through(
    store: &RedisStore,
    near: &Arc<NearCache>,
    hash: &SessionHash,
    now_ms: u64,
    touch: Duration,
) -> Result<Loaded, StoreError> {
    let key = store.key(hash);
    let ticket = match near.lookup(&key, now_ms, touch) {
        near_cache::Lookup::Hit(record, renew) => {
            if renew {
                renew_cached(store, near, hash, &record, key, now_ms, touch);
            }
            return Ok(Loaded::Live(record));
        }
        near_cache::Lookup::Miss(ticket) => ticket,
    };
    let read = store.observed("load", store.read(hash, now_ms)).await;
    let (loaded, seen) = match read {
        Ok(read) => read,
        Err(
            error @ (StoreError::Unavailable(_) | StoreError::Repeated(_) | StoreError::Down(_)),
        ) => {
            return match near.stale(&key, now_ms, touch) {
                Some(record) => Ok(Loaded::Live(record)),
                None => Err(error),
            };
        }
        Err(error) => return Err(error),
    };
    if let Loaded::Live(record) = &loaded {
        let due = now_ms.saturating_sub(seen) >= touch.as_millis() as u64;
        if let Some(ticket) = ticket {
            near.insert(ticket, record, if due { now_ms } else { seen });
        }
        if due {
            renew_cached(store, near, hash, record, key, now_ms, touch);
        }
    }
    Ok(loaded)
}

/// Sends a session's renewal beside the request; if it fails, the cached entry (which
/// counts the session as renewed) is dropped.
fn renew_cached(
    store: &RedisStore,
    near: &Arc<NearCache>,
    hash: &SessionHash,
    record: &SessionRecord,
    key: String,
    now_ms: u64,
    touch: Duration,
) {
    let renewal = store.renewal(hash, record, now_ms, touch);
    let near = Arc::downgrade(near);
    tokio::spawn(async move {
        if !renewal.await {
            if let Some(near) = near.upgrade() {
                near.renewal_failed(key.as_bytes());
            }
        }
    });
}

/// After this process changed a session in Redis: its entry is dropped now rather than when
/// Redis's message arrives, so that the next request here sees the change.
fn forget(store: &RedisStore, near: &Option<Arc<NearCache>>, hash: &SessionHash) {
    if let Some(near) = near {
        near.invalidate(store.key(hash).as_bytes());
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
