//! Recently used sessions in process memory, kept coherent by Redis: a connection of its own
//! runs `CLIENT TRACKING on REDIRECT <itself> BCAST PREFIX <session keys>` and subscribes to
//! `__redis__:invalidate`, so Redis reports every change to any session key (logout, revoke,
//! renewal, expiry, `DEL`, `FLUSHALL`) and the entry is dropped. Entries are used only while
//! that connection is up and answering; losing or regaining it drops them all. On a Redis
//! Cluster each primary reports only its own keys, so there is one such connection per
//! primary, followed as the cluster's primaries change, and entries are used only while every
//! one of them is up.
//!
//! Why BCAST on one RESP2 connection rather than default tracking over RESP3: default tracking
//! needs every pool connection switched to RESP3 and tracked (each reconnect of any of them
//! flushes the cache), and Redis remembers every key each of them read (per-read work and
//! memory in Redis, bounded by `tracking-table-max-keys`). BCAST costs one message per write
//! to a session key, renewals included (at most one per session per touch interval), to each
//! process, and leaves the hot path's HMGET untouched. RESP2 because fred drops the RESP3
//! message of a `FLUSHALL`.

use crate::config::NearCacheConfig;
use crate::metrics::Metrics;
use crate::session::record::SessionRecord;
use fred::prelude::*;
use fred::types::client::Invalidation;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// Where Redis sends tracking messages to a RESP2 connection.
const INVALIDATION_CHANNEL: &str = "__redis__:invalidate";
/// How often the invalidation connection is checked: one that silently stopped delivering (a
/// network black hole, a frozen Redis) would leave entries in use that Redis can no longer
/// invalidate. With the default command timeout, such a fault is acted on within 350 ms.
const PING_INTERVAL: Duration = Duration::from_millis(100);
/// Invalidations of different keys in flight at once that a read can tell apart (see
/// [`Ticket`]); more only means a read is sometimes not cached for another key's change.
const STRIPES: usize = 1024;
/// How long after Redis refused `CLIENT TRACKING` it is asked again.
const TRACKING_RETRY: Duration = Duration::from_secs(5);

pub struct NearCache {
    entries: quick_cache::sync::Cache<Box<[u8]>, Arc<Entry>>,
    max_age: Duration,
    serve_stale_for: Duration,
    /// The invalidation connection is up and tracking: entries may be used.
    tracking: AtomicBool,
    /// Bumped by every flush and every loss of the connection.
    epoch: AtomicU64,
    /// Bumped by every invalidation of a key in the stripe.
    stripes: Box<[AtomicU64]>,
    stripe_of: RandomState,
    /// When Redis last answered the invalidation connection, ms since `started`.
    last_up_ms: AtomicU64,
    started: Instant,
    metrics: OnceLock<Arc<Metrics>>,
    /// The invalidation connections (one, or one per Cluster primary) and their tasks, closed
    /// with the cache or when replaced.
    members: Mutex<Members>,
    /// Tasks of the cache as a whole (following a Cluster's primaries).
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// The invalidation connections of the cache: entries are used only while all of them track.
#[derive(Default)]
struct Members {
    /// Bumped when the set is replaced: reports from a replaced connection's tasks are ignored.
    generation: u64,
    tracking: Vec<bool>,
    clients: Vec<Client>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Members {
    /// Stops the connections and their tasks.
    fn close(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let clients = std::mem::take(&mut self.clients);
        // Outside a runtime (the process ending) the connections just close with them.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for client in clients {
                runtime.spawn(async move {
                    let _ = client.quit().await;
                });
            }
        }
    }
}

/// One invalidation connection of the cache, as of one set of them.
#[derive(Debug, Clone, Copy)]
struct Member {
    generation: u64,
    index: usize,
}

struct Entry {
    record: SessionRecord,
    /// Last renewal (Unix ms) as this process knows it.
    seen_ms: AtomicU64,
    stored: Instant,
}

/// Taken before a read from Redis: its answer is cached only if no invalidation of its key
/// (nor a flush) came in meanwhile, since the answer may predate that change.
pub struct Ticket {
    key: Box<[u8]>,
    epoch: u64,
    stripe: usize,
    seq: u64,
}

/// What the cache answers for a session key.
// A hit is what nearly every lookup returns: boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Lookup {
    /// The record, and whether this request renews the session (its last renewal is a touch
    /// interval old; this process renews it once).
    Hit(SessionRecord, bool),
    /// Ask Redis; cache its answer with the ticket, if any.
    Miss(Option<Ticket>),
}

impl Drop for NearCache {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|p| p.into_inner());
        for task in tasks.drain(..) {
            task.abort();
        }
        self.members
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .close();
    }
}

impl NearCache {
    pub fn new(config: &NearCacheConfig) -> NearCache {
        NearCache {
            entries: quick_cache::sync::Cache::new(config.max_entries),
            max_age: config.max_age,
            serve_stale_for: config.serve_stale_for,
            tracking: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            stripe_of: RandomState::new(),
            last_up_ms: AtomicU64::new(0),
            started: Instant::now(),
            metrics: OnceLock::new(),
            members: Mutex::new(Members::default()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Starts following Redis's invalidations on `client` (not connected yet) for keys that
    /// start with `prefix`. Entries are used once it tracks.
    /// `answer_within`: how long a PING of that connection may take before it is not trusted.
    pub fn start(
        config: &NearCacheConfig,
        client: Client,
        prefix: String,
        answer_within: Duration,
    ) -> Arc<NearCache> {
        let cache = Arc::new(NearCache::new(config));
        cache.replace_members(vec![client], &prefix, answer_within);
        cache
    }

    /// Starts following a Redis Cluster: one invalidation connection per primary (made by
    /// `connect_to`, not connected yet), replaced whenever `cluster` (a client of the store)
    /// sees its primaries change.
    pub fn start_on_cluster<E: std::fmt::Display + 'static>(
        config: &NearCacheConfig,
        cluster: Client,
        connect_to: impl Fn(&Server) -> Result<Client, E> + Send + 'static,
        prefix: String,
        answer_within: Duration,
    ) -> Arc<NearCache> {
        let cache = Arc::new(NearCache::new(config));
        let task = tokio::spawn(follow_primaries(
            Arc::downgrade(&cache),
            cluster,
            connect_to,
            prefix,
            answer_within,
        ));
        *cache.tasks.lock().unwrap_or_else(|p| p.into_inner()) = vec![task.abort_handle()];
        cache
    }

    /// Replaces the invalidation connections with `clients` (not connected yet): entries are
    /// dropped and used again once every one of them tracks.
    fn replace_members(
        self: &Arc<Self>,
        clients: Vec<Client>,
        prefix: &str,
        answer_within: Duration,
    ) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members.close();
        members.generation += 1;
        members.tracking = vec![false; clients.len()];
        let generation = members.generation;
        drop(members);
        self.lost(None, "invalidation connections replaced");
        let weak = Arc::downgrade(self);
        let mut tasks = Vec::new();
        for (index, client) in clients.iter().enumerate() {
            let member = Member { generation, index };
            tasks.push(tokio::spawn(follow_invalidations(
                weak.clone(),
                member,
                client.invalidation_rx(),
            )));
            tasks.push(tokio::spawn(track_on_each_connection(
                weak.clone(),
                member,
                client.clone(),
                client.error_rx(),
                client.reconnect_rx(),
                prefix.to_string(),
            )));
            tasks.push(tokio::spawn(check_connection(
                weak.clone(),
                member,
                client.clone(),
                answer_within,
            )));
            client.connect();
        }
        let tasks = tasks.iter().map(|t| t.abort_handle()).collect();
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        if members.generation == generation {
            members.clients = clients;
            members.tasks = tasks;
        } else {
            // Replaced again meanwhile: these are not followed.
            Members {
                clients,
                tasks,
                ..Members::default()
            }
            .close();
        }
    }

    pub fn observed_by(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    fn count(&self, counter: impl FnOnce(&Metrics)) {
        if let Some(metrics) = self.metrics.get() {
            counter(metrics);
        }
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    fn stripe(&self, key: &[u8]) -> usize {
        (self.stripe_of.hash_one(key) as usize) % STRIPES
    }

    /// The cached session at `key`, if it may be used as of `now_ms`.
    pub fn lookup(&self, key: &str, now_ms: u64, touch: Duration) -> Lookup {
        if !self.tracking.load(Ordering::Acquire) {
            self.count(|m| {
                m.near_cache_misses.inc();
            });
            return Lookup::Miss(None);
        }
        let key = key.as_bytes();
        if let Some(entry) = self.entries.get(key) {
            if self.usable(&entry, now_ms, touch, true) {
                let seen = entry.seen_ms.load(Ordering::Acquire);
                // One request per process renews it: the one that moves `seen` forward.
                let renew = now_ms.saturating_sub(seen) >= touch.as_millis() as u64
                    && entry
                        .seen_ms
                        .compare_exchange(seen, now_ms, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok();
                self.count(|m| {
                    m.near_cache_hits.inc();
                });
                return Lookup::Hit(entry.record.clone(), renew);
            }
            self.entries
                .remove_if(key, |held| Arc::ptr_eq(held, &entry));
        }
        self.count(|m| {
            m.near_cache_misses.inc();
        });
        let stripe = self.stripe(key);
        Lookup::Miss(Some(Ticket {
            key: key.into(),
            epoch: self.epoch.load(Ordering::SeqCst),
            stripe,
            seq: self.stripes[stripe].load(Ordering::SeqCst),
        }))
    }

    /// Whether an entry still stands for the session as Redis holds it: not past its absolute
    /// end nor the end of its idle TTL (as of its last renewal), and (`fresh`) not older than
    /// `max_age`.
    fn usable(&self, entry: &Entry, now_ms: u64, touch: Duration, fresh: bool) -> bool {
        let seen = entry.seen_ms.load(Ordering::Acquire);
        let idle_end = seen.saturating_add(entry.record.ttl_ms(seen, touch));
        now_ms < entry.record.ends_ms()
            && now_ms < idle_end
            && (!fresh || entry.stored.elapsed() < self.max_age)
    }

    fn ticket_holds(&self, ticket: &Ticket) -> bool {
        self.tracking.load(Ordering::SeqCst)
            && self.epoch.load(Ordering::SeqCst) == ticket.epoch
            && self.stripes[ticket.stripe].load(Ordering::SeqCst) == ticket.seq
    }

    /// Caches what Redis answered for the ticket's key, unless the key changed (or the cache
    /// was flushed) since the ticket was taken. `seen_ms`: its last renewal.
    pub fn insert(&self, ticket: Ticket, record: &SessionRecord, seen_ms: u64) {
        if !self.ticket_holds(&ticket) {
            return;
        }
        let entry = Arc::new(Entry {
            record: record.clone(),
            seen_ms: AtomicU64::new(seen_ms),
            stored: Instant::now(),
        });
        self.entries.insert(ticket.key.clone(), entry.clone());
        // An invalidation between the check and the insert bumped the counter before
        // removing the (not yet inserted) key: take the entry back out.
        if !self.ticket_holds(&ticket) {
            self.entries
                .remove_if(&ticket.key[..], |held| Arc::ptr_eq(held, &entry));
        }
    }

    /// Drops the entry at `key` (its session changed), and keeps reads in flight for it from
    /// being cached.
    pub fn invalidate(&self, key: &[u8]) {
        self.stripes[self.stripe(key)].fetch_add(1, Ordering::SeqCst);
        if self.entries.remove(key).is_some() {
            self.count(|m| {
                m.near_cache_invalidations.inc();
            });
        }
    }

    /// A renewal this process sent for the entry failed: Redis may not have renewed it.
    pub fn renewal_failed(&self, key: &[u8]) {
        self.invalidate(key);
    }

    /// Drops every entry.
    fn flush(&self, why: &str) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.entries.clear();
        self.count(|m| {
            m.near_cache_flushes.inc();
        });
        tracing::debug!(why, "near cache flushed");
    }

    fn mark_up(&self) {
        self.last_up_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Release);
    }

    /// An invalidation connection (`None`: all of them) is lost (or not trusted): no entry is
    /// used from now on; they are dropped, unless kept to be served while Redis is unreachable.
    fn lost(&self, member: Option<Member>, why: &str) {
        if let Some(member) = member {
            let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
            if members.generation != member.generation {
                // A replaced connection: it no longer counts.
                return;
            }
            if let Some(tracking) = members.tracking.get_mut(member.index) {
                *tracking = false;
            }
        }
        let was_tracking = self.tracking.swap(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if was_tracking && self.serve_stale_for.is_zero() {
            self.flush(why);
        }
        if was_tracking {
            // Info, like its "on again": a lost connection is Redis's outage, which the store's
            // health already warns of once; the cache only falls back to reading Redis.
            tracing::info!(
                reason = why,
                "near cache off: its invalidation connection to Redis is down; sessions are \
                 read from Redis until it is back"
            );
        }
    }

    /// An invalidation connection tracks again; once all do, entries are used again (those
    /// from before cannot be trusted).
    fn tracked(&self, member: Member, reconnected: bool) {
        {
            let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
            if members.generation != member.generation {
                return;
            }
            if let Some(tracking) = members.tracking.get_mut(member.index) {
                *tracking = true;
            }
            if !members.tracking.iter().all(|t| *t) {
                return;
            }
        }
        if self.serve_stale_for.is_zero() {
            // Dropped when the connection was lost; nothing was cached since.
            self.epoch.fetch_add(1, Ordering::SeqCst);
        } else {
            self.flush("invalidation connection re-established");
        }
        self.mark_up();
        self.tracking.store(true, Ordering::SeqCst);
        if reconnected {
            tracing::info!("near cache on again: its invalidation connection to Redis is back");
        }
    }

    /// A cached session to serve while Redis is unreachable (`redis.near_cache.serve_stale_for`
    /// since it was last known up), if any.
    pub fn stale(&self, key: &str, now_ms: u64, touch: Duration) -> Option<SessionRecord> {
        if self.serve_stale_for.is_zero() {
            return None;
        }
        let last_up = Duration::from_millis(self.last_up_ms.load(Ordering::Acquire));
        if self.started.elapsed().saturating_sub(last_up) > self.serve_stale_for {
            return None;
        }
        let entry = self.entries.peek(key.as_bytes())?;
        self.usable(&entry, now_ms, touch, false)
            .then(|| entry.record.clone())
    }

    fn invalidated(&self, invalidation: Invalidation) {
        // No keys: the database was flushed.
        if invalidation.keys.is_empty() {
            self.flush("Redis flushed its keys");
            return;
        }
        for key in &invalidation.keys {
            self.invalidate(key.as_bytes());
        }
    }
}

async fn follow_invalidations(
    cache: Weak<NearCache>,
    member: Member,
    mut invalidations: tokio::sync::broadcast::Receiver<Invalidation>,
) {
    loop {
        let received = invalidations.recv().await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        match received {
            Ok(invalidation) => cache.invalidated(invalidation),
            // Some were missed: any entry may be stale.
            Err(RecvError::Lagged(_)) => cache.flush("invalidation messages missed"),
            Err(RecvError::Closed) => {
                cache.lost(Some(member), "invalidation messages ended");
                return;
            }
        }
    }
}

/// Follows the invalidation connection: on its loss no entry is used; on every (re)connection
/// Redis is asked to report changes to session keys on it, then entries are used again. One
/// task, errors first, so that a loss reported before a reconnection is never applied after it.
async fn track_on_each_connection(
    cache: Weak<NearCache>,
    member: Member,
    client: Client,
    mut errors: tokio::sync::broadcast::Receiver<(Error, Option<Server>)>,
    mut reconnects: tokio::sync::broadcast::Receiver<Server>,
    prefix: String,
) {
    let mut connections = 0u64;
    loop {
        let reconnected = tokio::select! {
            biased;
            error = errors.recv() => match error {
                Ok((error, _)) => Err(error.to_string()),
                Err(RecvError::Lagged(_)) => Err("connection errors".to_string()),
                Err(RecvError::Closed) => return,
            },
            reconnect = reconnects.recv() => match reconnect {
                Ok(_) | Err(RecvError::Lagged(_)) => Ok(()),
                Err(RecvError::Closed) => return,
            },
        };
        let Some(state) = cache.upgrade() else {
            return;
        };
        if let Err(error) = reconnected {
            state.lost(Some(member), &error);
            continue;
        }
        connections += 1;
        state.lost(Some(member), "invalidation connection re-established");
        match track(&client, &prefix).await {
            Ok(()) => state.tracked(member, connections > 1),
            Err(error) => {
                tracing::warn!(
                    %error,
                    "near cache off: Redis refused to report changes to session keys \
                     (CLIENT TRACKING); sessions are read from Redis on every request"
                );
                drop(state);
                // Tries again on a new connection, without hammering Redis.
                tokio::time::sleep(TRACKING_RETRY).await;
                let _ = client.force_reconnection().await;
            }
        }
    }
}

/// `CLIENT TRACKING` redirected to this same connection, then the subscription to where
/// Redis sends the messages (after which the connection takes no other command but PING).
async fn track(client: &Client, prefix: &str) -> Result<(), Error> {
    let id: i64 = client.client_id().await?;
    let _: Value = client
        .client_tracking("on", Some(id), prefix, true, false, false, false)
        .await?;
    client.subscribe(INVALIDATION_CHANNEL).await
}

/// PINGs the invalidation connection every [`PING_INTERVAL`]: one that does not answer within
/// `timeout` is not trusted (entries unused, so lookups fail closed as without the cache) and
/// is re-established.
async fn check_connection(
    cache: Weak<NearCache>,
    member: Member,
    client: Client,
    timeout: Duration,
) {
    loop {
        tokio::time::sleep(PING_INTERVAL).await;
        let Some(state) = cache.upgrade() else {
            return;
        };
        if !state.tracking.load(Ordering::Acquire) {
            continue;
        }
        // A subscribed RESP2 connection answers PING with an array.
        match tokio::time::timeout(timeout, client.ping::<Value>(None)).await {
            Ok(Ok(_)) => {
                state.mark_up();
                continue;
            }
            Ok(Err(error)) => state.lost(Some(member), &format!("PING failed: {error}")),
            Err(_) => state.lost(Some(member), "PING not answered in time"),
        }
        // Not holding the cache while Redis may take long to answer again: a reload that
        // replaced the store ends this task and the connection.
        drop(state);
        let _ = client.force_reconnection().await;
    }
}

/// How often a Cluster's primaries are compared with the invalidation connections, besides
/// on every change the store's client reports.
const PRIMARIES_CHECK: Duration = Duration::from_secs(1);

/// Keeps one invalidation connection per primary of the Cluster `cluster` belongs to: when
/// the primaries change (a failover, a resharding onto a new node), the set is replaced.
async fn follow_primaries<E: std::fmt::Display>(
    cache: Weak<NearCache>,
    cluster: Client,
    connect_to: impl Fn(&Server) -> Result<Client, E>,
    prefix: String,
    answer_within: Duration,
) {
    let mut changes = cluster.cluster_change_rx();
    let mut followed: Vec<Server> = Vec::new();
    loop {
        let mut primaries = cluster
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .unwrap_or_default();
        primaries.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        if !primaries.is_empty() && primaries != followed {
            let Some(state) = cache.upgrade() else {
                return;
            };
            match primaries
                .iter()
                .map(&connect_to)
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(clients) => {
                    tracing::debug!(
                        primaries = primaries.len(),
                        "near cache follows the cluster's primaries"
                    );
                    state.replace_members(clients, &prefix, answer_within);
                    followed = primaries;
                }
                Err(error) => {
                    state.lost(None, "cluster primaries unreachable");
                    tracing::warn!(%error, "near cache off: no invalidation connection to a cluster primary");
                }
            }
        }
        tokio::select! {
            change = changes.recv() => if let Err(RecvError::Closed) = change {
                return;
            },
            _ = tokio::time::sleep(PRIMARIES_CHECK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::record::Identity;

    fn config() -> NearCacheConfig {
        NearCacheConfig {
            enabled: true,
            max_entries: 100,
            max_age: Duration::from_secs(60),
            serve_stale_for: Duration::ZERO,
        }
    }

    fn record(now_ms: u64) -> SessionRecord {
        SessionRecord {
            identity: Identity {
                user: "alice".into(),
                roles: Vec::new(),
                email: None,
                attributes: Default::default(),
            },
            created_ms: now_ms,
            expires_ms: now_ms + 3_600_000,
            idle_ms: 600_000,
            origin: None,
            device: None,
            client_ip: None,
            rotated_from: None,
            retires_ms: None,
            family: None,
        }
    }

    const TOUCH: Duration = Duration::from_secs(60);

    /// A cache with `connections` invalidation connections (as on a Cluster), none tracking.
    fn cache_with(connections: usize) -> (NearCache, Vec<Member>) {
        let cache = NearCache::new(&config());
        cache.members.lock().unwrap().tracking = vec![false; connections];
        let members = (0..connections)
            .map(|index| Member {
                generation: 0,
                index,
            })
            .collect();
        (cache, members)
    }

    fn tracking_cache() -> NearCache {
        let (cache, members) = cache_with(1);
        cache.tracked(members[0], false);
        cache
    }

    fn miss(cache: &NearCache, key: &str, now: u64) -> Ticket {
        match cache.lookup(key, now, TOUCH) {
            Lookup::Miss(Some(ticket)) => ticket,
            _ => panic!("expected a miss with a ticket"),
        }
    }

    #[test]
    fn a_read_overtaken_by_an_invalidation_is_not_cached() {
        let cache = tracking_cache();
        let now = 1_000_000;
        let ticket = miss(&cache, "k", now);
        cache.invalidate(b"k");
        cache.insert(ticket, &record(now), now);
        assert!(matches!(cache.lookup("k", now, TOUCH), Lookup::Miss(_)));
        let ticket = miss(&cache, "k", now);
        cache.insert(ticket, &record(now), now);
        assert!(matches!(
            cache.lookup("k", now, TOUCH),
            Lookup::Hit(_, false)
        ));
    }

    #[test]
    fn nothing_is_used_or_cached_while_not_tracking() {
        let (cache, members) = cache_with(1);
        cache.tracked(members[0], false);
        let now = 1_000_000;
        let ticket = miss(&cache, "k", now);
        cache.lost(Some(members[0]), "test");
        cache.insert(ticket, &record(now), now);
        assert!(matches!(cache.lookup("k", now, TOUCH), Lookup::Miss(None)));
        cache.tracked(members[0], true);
        assert!(matches!(
            cache.lookup("k", now, TOUCH),
            Lookup::Miss(Some(_))
        ));
    }

    #[test]
    fn on_a_cluster_entries_are_used_only_while_every_primary_is_followed() {
        let (cache, members) = cache_with(3);
        let now = 1_000_000;
        cache.tracked(members[0], false);
        cache.tracked(members[1], false);
        assert!(matches!(cache.lookup("k", now, TOUCH), Lookup::Miss(None)));
        cache.tracked(members[2], false);
        let ticket = miss(&cache, "k", now);
        cache.insert(ticket, &record(now), now);
        assert!(matches!(cache.lookup("k", now, TOUCH), Lookup::Hit(..)));

        // One primary's connection lost: nothing is used, and its return alone brings back
        // no entry from before.
        cache.lost(Some(members[1]), "test");
        assert!(matches!(cache.lookup("k", now, TOUCH), Lookup::Miss(None)));
        cache.tracked(members[1], true);
        assert!(matches!(
            cache.lookup("k", now, TOUCH),
            Lookup::Miss(Some(_))
        ));

        // A connection of a replaced set counts for nothing.
        let stale = Member {
            generation: 7,
            index: 0,
        };
        cache.lost(Some(stale), "replaced");
        assert!(matches!(
            cache.lookup("k", now, TOUCH),
            Lookup::Miss(Some(_))
        ));
    }

    #[test]
    fn entries_end_with_the_session_and_renew_once_per_interval() {
        let cache = tracking_cache();
        let now = 1_000_000;
        let session = record(now);
        let ticket = miss(&cache, "k", now);
        cache.insert(ticket, &session, now);
        let touch_ms = TOUCH.as_millis() as u64;
        assert!(matches!(
            cache.lookup("k", now + touch_ms - 1, TOUCH),
            Lookup::Hit(_, false)
        ));
        assert!(matches!(
            cache.lookup("k", now + touch_ms, TOUCH),
            Lookup::Hit(_, true)
        ));
        assert!(
            matches!(
                cache.lookup("k", now + touch_ms + 1, TOUCH),
                Lookup::Hit(_, false)
            ),
            "renewed once"
        );
        // Idle: past the TTL of the last renewal.
        let idle_end = now + touch_ms + session.idle_ms + touch_ms;
        assert!(matches!(
            cache.lookup("k", idle_end, TOUCH),
            Lookup::Miss(_)
        ));
        // Absolute: its end comes before the idle one.
        let ending = SessionRecord {
            expires_ms: now + 1_000,
            ..session
        };
        let ticket = miss(&cache, "k", now);
        cache.insert(ticket, &ending, now);
        assert!(matches!(
            cache.lookup("k", now + 999, TOUCH),
            Lookup::Hit(..)
        ));
        assert!(matches!(
            cache.lookup("k", now + 1_000, TOUCH),
            Lookup::Miss(_)
        ));
    }
}
