//! Sessions in Redis through one fred client pool per process.
//!
//! A session is one string at `<prefix>s:<id>` (`<id>`: [`SessionHash`], 22 characters):
//! the last renewal (10 digits, Unix seconds) followed by the JSON record, or `-` once the session
//! ended. A read is one GET; a renewal is a single-key Lua script (SETRANGE of the digits),
//! writes are plain SETs, all valid on Redis Cluster. A user's sessions are indexed in a
//! sorted set at `<prefix>u:<sha256(user), 128 bits, base64url>` (member: session id);
//! index and session keys are only ever touched by single-key commands, so they may live in
//! different slots. A session and its index entry take about 320 bytes of Redis memory.
//!
//! The index's score is when the session's key expires if it is not used again, so that
//! entries of sessions that ended are pruned by score (on each add and remove) without reading
//! session keys, and the index key expires with its longest live session. A session's renewal
//! (at most once per touch interval, sent beside the request, not awaited) raises its score
//! first and renews the session only when that succeeded: an entry never ends before its
//! session does, so "log out everywhere" finds every live session. Since the score is an
//! upper bound, some entries may belong to sessions that ended early (a logout not seen by
//! the index); the cap and the listing peek at the sessions and skip those.
//!
//! Keys of the earlier layout (a hash per session and 64-hex names) are converted at start by
//! the processes that use sessions, see [`legacy`]; until a pass finds none left, a miss also
//! looks for its earlier key.

mod legacy;

use super::health::Health;
use super::results::{IfAbsent, Loaded, StoreError};
use crate::config::{NodeAddress, StoreConfig, StoreUrl};
use crate::metrics::Metrics;
use crate::session::cookie::SessionHash;
use crate::session::record::SessionRecord;
use fred::prelude::*;
use fred::types::config::{
    ClusterDiscoveryPolicy, ConnectionConfig, PerformanceConfig, ReconnectPolicy, ServerConfig,
    TlsConnector, UnresponsiveConfig,
};
use fred::types::scripts::Script;
use fred::types::ClusterHash;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};
use std::time::Duration;
use std::time::Instant;

/// Renews a session's idle TTL: the TTL is the idle timeout plus the touch interval (so a
/// session in use never dies early), capped by the absolute expiry. Only for a key that still
/// holds a session. ARGV: now (10 digits, see [`seen_digits`]), ttl_ms.
const TOUCH: &str = r#"
if redis.call('GETRANGE', KEYS[1], 10, 10) == '{' then
  redis.call('SETRANGE', KEYS[1], 0, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"#;

/// How many digits of the last renewal (Unix seconds) start a session's value.
const SEEN_DIGITS: usize = 10;
/// The value of a session that ended.
const ENDED: &str = "-";

/// A session's value: the last renewal, then the record.
fn session_value(seen_ms: u64, record: &SessionRecord) -> Result<String, StoreError> {
    let json = serde_json::to_string(record).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    Ok(format!("{}{json}", seen_digits(seen_ms)))
}

/// Exactly [`SEEN_DIGITS`] digits (good until the year 2286), rounded up: renewals are never
/// closer than the touch interval.
fn seen_digits(ms: u64) -> String {
    format!("{:010}", ms.div_ceil(1000).min(9_999_999_999))
}

/// What a session key holds: read, then taken apart at once.
#[allow(clippy::large_enum_variant)]
enum Stored {
    Live { seen_ms: u64, record: SessionRecord },
    Ended,
    Unreadable(String),
}

fn parse_value(value: &str) -> Stored {
    if value == ENDED {
        return Stored::Ended;
    }
    let Some((seen, json)) = value.split_at_checked(SEEN_DIGITS) else {
        return Stored::Unreadable("too short".to_string());
    };
    let Ok(seen_s) = seen.parse::<u64>() else {
        return Stored::Unreadable("no renewal time".to_string());
    };
    let seen_ms = seen_s.saturating_mul(1000);
    match serde_json::from_str(json) {
        Ok(record) => Stored::Live { seen_ms, record },
        Err(e) => Stored::Unreadable(e.to_string()),
    }
}

/// Drops the entries of a user's index whose session has ended by `ARGV[2]` (now, ms), and
/// makes the index expire with its longest remaining session. Returns how many remain.
const INDEX_PRUNE: &str = r#"
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] and tonumber(last[2]) > now then
  redis.call('PEXPIRE', KEYS[1], tonumber(last[2]) - now)
  return redis.call('ZCARD', KEYS[1])
end
redis.call('DEL', KEYS[1])
return 0
"#;

/// Adds a session to a user's index, pruned. ARGV: id, now_ms, ends_ms (when the session's
/// key expires if unused). Returns how many entries remain.
fn index_add_script() -> String {
    format!("redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])\n{INDEX_PRUNE}")
}

/// Removes a session from a user's index, pruned. ARGV: id, now_ms.
fn index_remove_script() -> String {
    format!("redis.call('ZREM', KEYS[1], ARGV[1])\n{INDEX_PRUNE}")
}

/// The sessions of a user's index not ended by now. ARGV: unused, now_ms.
const INDEX_LIST: &str = "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')";

/// Raises a session's end in its user's index on renewal (re-adding it if the entry was
/// pruned) and the index's TTL with it; never lowers either. ARGV: id, now_ms, ends_ms.
const INDEX_TOUCH: &str = r#"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if (not score) or tonumber(score) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
end
local ttl = tonumber(ARGV[3]) - tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], math.max(1, ttl))
end
return 1
"#;

#[derive(Clone)]
pub struct RedisStore {
    pool: Pool,
    /// Set when new sessions must reach replicas before a login answers.
    acknowledged: Option<Arc<AcknowledgedWrites>>,
    prefix: Arc<str>,
    touch_script: Arc<Script>,
    /// Where command latency and errors are counted, once the process has a registry.
    metrics: Option<Arc<Metrics>>,
    index_add_script: Arc<Script>,
    index_remove_script: Arc<Script>,
    index_touch_script: Arc<Script>,
    index_list_script: Arc<Script>,
    health: Arc<Health>,
    probe: Probe,
    /// Set while keys of the earlier layout may remain (see [`legacy`]).
    legacy: Arc<AtomicBool>,
}

/// How the store finds out that Redis answers again while it is known down.
#[derive(Clone, Copy)]
struct Probe {
    timeout: Duration,
    interval: Duration,
}

/// No answer (an outage: counts towards the store being down), or an answer that is an error.
/// What fred says when no connection can take a command (`router::commands`).
const NO_CONNECTION: &str = "Failed to route command.";

fn unavailable(error: Error) -> StoreError {
    match error.kind() {
        ErrorKind::Timeout
        | ErrorKind::IO
        | ErrorKind::Canceled
        | ErrorKind::Backpressure
        | ErrorKind::Routing
        | ErrorKind::Tls
        | ErrorKind::Cluster
        | ErrorKind::Sentinel => StoreError::Unavailable(error.to_string()),
        // fred's word when it has no connection to send on (Redis just died): an outage, not
        // a refusal, though its kind says nothing.
        ErrorKind::Unknown if error.details() == NO_CONNECTION => {
            StoreError::Unavailable(error.to_string())
        }
        _ => StoreError::Refused(error.to_string()),
    }
}

/// The rustls client settings for `rediss://`: trust the CA bundle in `ca_file` (PEM), or the
/// system's roots without one. Ring, like the rest of the process.
pub fn tls_client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |reason: String| {
                StoreError::Unavailable(format!("redis.ca_file {}: {reason}", path.display()))
            };
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(format!("not a PEM CA bundle: {e}")))?;
            if certs.is_empty() {
                return Err(bad("no PEM CERTIFICATE block in it".to_string()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "cannot read some system CA certificates");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(StoreError::Unavailable(
                    "rediss:// without redis.ca_file, and no system CA certificates found"
                        .to_string(),
                ));
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Unavailable(format!("cannot set up TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(config)
}

/// The fred client config for the configured Redis: one URL (ACL user and password included:
/// `rediss://user:pass@host:port`), a Sentinel service, or a Cluster. TLS uses our rustls
/// settings rather than fred's default ones.
fn client_config(config: &StoreConfig) -> Result<Config, StoreError> {
    let (server, auth) = match &config.url {
        StoreUrl::Redis(url) => return url_config(url, config),
        StoreUrl::Memory => {
            return Err(StoreError::Unavailable(
                "memory:// is not a Redis".to_string(),
            ))
        }
        StoreUrl::Sentinel(target) => (
            ServerConfig::Sentinel {
                hosts: servers(&target.sentinels),
                service_name: target.service_name.clone(),
                username: target.sentinel_username.clone(),
                password: target.sentinel_password.clone(),
            },
            &target.auth,
        ),
        StoreUrl::Cluster(target) => (
            ServerConfig::Clustered {
                hosts: servers(&target.nodes),
                // Seed nodes and the last routing table: a dead seed does not stop discovery.
                policy: ClusterDiscoveryPolicy::UseCache,
            },
            &target.auth,
        ),
    };
    let tls = match auth.tls {
        true => Some(TlsConnector::from(tls_client_config(config.ca_file.as_deref())?).into()),
        false => {
            warn_unused_ca_file(config);
            None
        }
    };
    Ok(Config {
        server,
        username: auth.username.clone(),
        password: auth.password.clone(),
        tls,
        ..Config::default()
    })
}

fn servers(addresses: &[NodeAddress]) -> Vec<Server> {
    addresses
        .iter()
        .map(|a| Server::new(a.host.as_str(), a.port))
        .collect()
}

fn warn_unused_ca_file(config: &StoreConfig) {
    if config.ca_file.is_some() {
        tracing::warn!("redis.ca_file is set but Redis is not reached over TLS; it is not used");
    }
}

fn url_config(url: &str, config: &StoreConfig) -> Result<Config, StoreError> {
    let Some(rest) = url.strip_prefix("rediss://") else {
        warn_unused_ca_file(config);
        return Config::from_url(url).map_err(unavailable);
    };
    let mut redis_config = Config::from_url(&format!("redis://{rest}")).map_err(unavailable)?;
    let tls = tls_client_config(config.ca_file.as_deref())?;
    redis_config.tls = Some(TlsConnector::from(tls).into());
    Ok(redis_config)
}

/// `longest` is the longest a command on these connections may legitimately take.
fn build_pool(
    redis_config: Config,
    config: &StoreConfig,
    longest: Duration,
) -> Result<Pool, StoreError> {
    let clustered = redis_config.server.is_clustered();
    Builder::from_config(redis_config)
        .with_performance_config(|perf: &mut PerformanceConfig| {
            perf.default_command_timeout = config.command_timeout;
        })
        .with_connection_config(|conn: &mut ConnectionConfig| {
            conn.connection_timeout = config.connect_timeout;
            conn.internal_command_timeout = config.command_timeout.max(Duration::from_secs(1));
            // A Redis that stops answering (paused, network black hole) is dropped and
            // reconnected rather than queued behind forever.
            conn.unresponsive = UnresponsiveConfig {
                max_timeout: Some(longest.max(Duration::from_millis(500)) * 4),
                interval: Duration::from_millis(250),
            };
            // Commands wait for a reconnect only within their own timeout. On a Cluster, fred
            // counts the re-send after a MOVED redirect (failover, resharding) as an attempt:
            // with one, the first command to each moved slot failed.
            conn.max_command_attempts = if clustered { 2 } else { 1 };
        })
        .set_policy(reconnect_policy(config))
        .build_pool(config.pool_size)
        .map_err(unavailable)
}

fn reconnect_policy(config: &StoreConfig) -> ReconnectPolicy {
    ReconnectPolicy::new_exponential(
        0,
        config.reconnect_min.as_millis().max(1) as u32,
        config.reconnect_max.as_millis().max(1) as u32,
        2,
    )
}

/// One connection of its own (not connected yet) to the pool's Redis, for the near cache's
/// invalidation messages: it is put in subscriber mode, so it can take no other commands.
pub(super) fn invalidation_client(config: &StoreConfig) -> Result<Client, StoreError> {
    invalidation_client_with(config, client_config(config)?)
}

/// An invalidation connection to one node of a Cluster (its own keys are reported on it).
pub(super) fn invalidation_client_to(
    config: &StoreConfig,
    node: &Server,
) -> Result<Client, StoreError> {
    let mut redis_config = client_config(config)?;
    redis_config.server = ServerConfig::Centralized {
        server: node.clone(),
    };
    invalidation_client_with(config, redis_config)
}

fn invalidation_client_with(
    config: &StoreConfig,
    mut redis_config: Config,
) -> Result<Client, StoreError> {
    redis_config.fail_fast = false;
    Builder::from_config(redis_config)
        .with_connection_config(|conn: &mut ConnectionConfig| {
            conn.connection_timeout = config.connect_timeout;
            conn.internal_command_timeout = config.command_timeout.max(Duration::from_secs(1));
            conn.max_command_attempts = 1;
        })
        .set_policy(reconnect_policy(config))
        .build()
        .map_err(unavailable)
}

/// Connections for session writes that wait for replicas (`redis.wait_replicas`).
struct AcknowledgedWrites {
    pool: Pool,
    replicas: u32,
    timeout: Duration,
    command_timeout: Duration,
}

impl RedisStore {
    /// A client of the store's pool (on a Cluster, it knows the cluster's primaries).
    pub(super) fn a_client(&self) -> Client {
        self.pool.next().clone()
    }

    pub async fn connect(config: &StoreConfig) -> Result<RedisStore, StoreError> {
        let mut redis_config = client_config(config)?;
        // Keep retrying the first connection too: the proxy must start (and serve requests
        // without sessions) while Redis is down, and recover on its own.
        redis_config.fail_fast = false;
        let pool = build_pool(redis_config.clone(), config, config.command_timeout)?;
        let health = Arc::new(Health::default());
        let probe = Probe {
            timeout: config.command_timeout,
            interval: config
                .reconnect_min
                .clamp(Duration::from_millis(100), Duration::from_secs(1)),
        };
        watch_connections(&pool, &health, probe);
        pool.connect();
        // Logins that wait for replicas get their own connections: WAIT blocks the
        // connection it runs on, and every session lookup pipelined behind it would wait too.
        let acknowledged = match config.wait_replicas {
            0 => None,
            replicas => {
                let longest = config.command_timeout + config.wait_timeout;
                let pool = build_pool(redis_config, config, longest)?;
                pool.connect();
                Some(Arc::new(AcknowledgedWrites {
                    pool,
                    replicas,
                    timeout: config.wait_timeout,
                    command_timeout: config.command_timeout,
                }))
            }
        };
        let connected = async {
            pool.wait_for_connect().await?;
            match &acknowledged {
                Some(acknowledged) => acknowledged.pool.wait_for_connect().await,
                None => Ok(()),
            }
        };
        let reached = match tokio::time::timeout(config.connect_timeout, connected).await {
            Ok(Ok(())) => {
                tracing::info!(redis = %config.url.redacted(), "connected to Redis");
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Redis not reachable yet; retrying in the background");
                false
            }
            Err(_) => {
                tracing::warn!("Redis not reachable yet; retrying in the background");
                false
            }
        };
        if !reached && health.mark_down("not reachable at start") {
            probe_until_up(pool.clone(), Arc::downgrade(&health), probe);
        }
        let store = RedisStore {
            pool,
            acknowledged,
            prefix: Arc::from(config.key_prefix.as_str()),
            touch_script: Arc::new(Script::from_lua(TOUCH)),
            metrics: None,
            index_add_script: Arc::new(Script::from_lua(index_add_script())),
            index_remove_script: Arc::new(Script::from_lua(index_remove_script())),
            index_touch_script: Arc::new(Script::from_lua(INDEX_TOUCH)),
            index_list_script: Arc::new(Script::from_lua(INDEX_LIST)),
            health,
            probe,
            legacy: Arc::new(AtomicBool::new(true)),
        };
        Ok(store)
    }

    /// Starts converting the keys of the earlier layout in the background (see [`legacy`]).
    /// For the processes that use sessions; `check` connects without it, and writes nothing.
    pub fn convert_earlier_layout_in_background(&self) {
        legacy::convert_in_background(self.clone());
    }

    pub fn observed_by(mut self, metrics: Arc<Metrics>) -> RedisStore {
        self.metrics = Some(metrics);
        self
    }

    /// Runs one store operation, counting its latency and failure under `command`; while the
    /// store is known down the operation is not run at all (see [`Health`]).
    ///
    /// The operation is boxed before anything awaits it: a fred command future is several KB,
    /// and unboxed it would make every future above it (up to the request's) as large, to be
    /// moved around on each request.
    pub fn observed<'a, T: 'a>(
        &'a self,
        command: &'static str,
        operation: impl Future<Output = Result<T, StoreError>> + Send + 'a,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'a {
        let operation = Box::pin(operation);
        async move {
            if self.health.is_down() {
                if let Some(metrics) = &self.metrics {
                    metrics.redis_command_skipped(command);
                }
                return Err(self.health.skip());
            }
            let started = Instant::now();
            let result = operation.await;
            if let Some(metrics) = &self.metrics {
                metrics.redis_command(command, started.elapsed(), result.is_ok());
            }
            match result {
                Ok(value) => {
                    self.health.succeeded();
                    Ok(value)
                }
                Err(StoreError::Unavailable(reason)) => {
                    let (error, down) = self.health.failed(reason);
                    if down {
                        probe_until_up(self.pool.clone(), Arc::downgrade(&self.health), self.probe);
                    }
                    Err(error)
                }
                Err(error) => Err(error),
            }
        }
    }

    /// How long the store has been known down, if it is.
    pub fn down_for(&self) -> Option<Duration> {
        self.health.down_for()
    }

    /// `<prefix><kind><id>`: every key unstick writes.
    fn prefixed(&self, kind: &str, id: &str) -> String {
        [&self.prefix, kind, id].concat()
    }

    pub fn key(&self, hash: &SessionHash) -> String {
        self.prefixed("s:", hash.as_str())
    }

    /// What every session key starts with (and no other key of unstick's): the prefix the
    /// near cache asks Redis to report changes under.
    pub fn session_key_prefix(&self) -> String {
        self.prefixed("s:", "")
    }

    fn binding_key(&self, hash: &SessionHash) -> String {
        self.prefixed("b:", hash.as_str())
    }

    fn user_key(&self, user_key: &str) -> String {
        self.prefixed("u:", user_key)
    }

    pub fn is_connected(&self) -> bool {
        self.pool.is_connected()
    }

    /// Counts session keys (logout markers included) by SCAN, `COUNT 1000` a page, stopping
    /// at `cap`; `true` when it stopped there. Never KEYS: other clients keep being served.
    pub async fn count_session_keys(&self, cap: usize) -> Result<(usize, bool), StoreError> {
        use fred::types::scan::Scanner;
        use futures_util::StreamExt;
        // The prefix is the operator's; glob characters in it match only themselves.
        let mut pattern = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str("s:*");
        let client = self.pool.next();
        let mut pages = if client.is_clustered() {
            client.scan_cluster(pattern, Some(1000), None).boxed()
        } else {
            client.scan(pattern, Some(1000), None).boxed()
        };
        let mut count = 0;
        while let Some(page) = pages.next().await {
            let mut page = page.map_err(unavailable)?;
            count += page.take_results().map_or(0, |keys| keys.len());
            if count >= cap {
                page.cancel();
                return Ok((count, true));
            }
            page.next();
        }
        Ok((count, false))
    }

    /// The client pool, for commands outside the session hot path (checks, admin).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// One GET: the hot path costs Redis no script. When the last renewal is older than the
    /// touch interval, the renewal is sent beside the request, not waited for.
    pub async fn load(
        &self,
        hash: &SessionHash,
        now_ms: u64,
        touch: Duration,
    ) -> Result<Loaded, StoreError> {
        let (loaded, seen) = self.read(hash, now_ms).await?;
        if let Loaded::Live(record) = &loaded {
            if now_ms.saturating_sub(seen) >= touch.as_millis() as u64 {
                tokio::spawn(self.renewal(hash, record, now_ms, touch));
            }
        }
        Ok(loaded)
    }

    /// A session as of `now_ms` and when it was last renewed (ms; 0 if never), without
    /// renewing it. One GET.
    pub(super) async fn read(
        &self,
        hash: &SessionHash,
        now_ms: u64,
    ) -> Result<(Loaded, u64), StoreError> {
        let key = self.key(hash);
        let value: Option<String> = self.pool.get(&key).await.map_err(unavailable)?;
        let Some(value) = value else {
            return Ok((Loaded::Missing, 0));
        };
        let (seen, record) = match parse_value(&value) {
            Stored::Live { seen_ms, record } => (seen_ms, record),
            Stored::Ended => return Ok((Loaded::Ended, 0)),
            Stored::Unreadable(e) => {
                // Unreadable (written by an incompatible version, or by hand): treat as no session.
                tracing::warn!(session = hash.short(), error = %e, "unreadable session record; ignoring it");
                return Ok((Loaded::Missing, 0));
            }
        };
        if now_ms >= record.ends_ms() {
            // Past its absolute lifetime (or retired); its TTL, capped at that instant, removes
            // the key.
            return Ok((Loaded::Missing, 0));
        }
        Ok((Loaded::Live(record), seen))
    }

    /// Renews a session's idle TTL as of `now_ms` (and its user-index entry first); `false`
    /// when it may not have been renewed. Sent beside the request: the caller spawns it.
    pub(super) fn renewal(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        now_ms: u64,
        touch: Duration,
    ) -> impl Future<Output = bool> + Send + 'static {
        let key = self.key(hash);
        let ttl = record.ttl_ms(now_ms, touch).max(1);
        // A retired id left its user's index when the app replaced it.
        let index = record
            .retires_ms
            .is_none()
            .then(|| self.user_key(&super::user_key(&record.identity.user)));
        let member = hash.to_string();
        let (script, client) = (self.touch_script.clone(), self.pool.next().clone());
        let index_script = self.index_touch_script.clone();
        async move {
            if let Some(index) = index {
                let ends = (now_ms + ttl).to_string();
                let indexed: Result<i64, _> = index_script
                    .evalsha_with_reload(&client, index, vec![member, now_ms.to_string(), ends])
                    .await;
                if let Err(e) = indexed {
                    // The session is not renewed either, so that it cannot outlive its
                    // index entry; its TTL carries a touch interval of slack.
                    tracing::debug!(error = %e, "session index renewal failed");
                    return false;
                }
            }
            let renewed: Result<i64, _> = script
                .evalsha_with_reload(&client, key, vec![seen_digits(now_ms), ttl.to_string()])
                .await;
            if let Err(e) = renewed {
                // The TTL carries a touch interval of slack; the next request retries.
                tracing::debug!(error = %e, "session renewal failed");
                return false;
            }
            true
        }
    }

    pub async fn save(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        now_ms: u64,
        touch: Duration,
    ) -> Result<(), StoreError> {
        self.save_on(self.pool.next(), hash, record, now_ms, touch)
            .await
    }

    /// Saves a new session and, with `redis.wait_replicas`, waits (`WAIT`) until that many
    /// replicas hold it. `Ok(None)` when no acknowledgement is configured; otherwise whether
    /// the replicas acknowledged within `redis.wait_timeout`.
    pub async fn save_acknowledged(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        now_ms: u64,
        touch: Duration,
    ) -> Result<Option<bool>, StoreError> {
        let Some(acknowledged) = &self.acknowledged else {
            self.save(hash, record, now_ms, touch).await?;
            return Ok(None);
        };
        // WAIT counts the writes of the connection it runs on: the same client, and on a
        // Cluster the node that owns the session's slot.
        let client = acknowledged.pool.next();
        self.save_on(client, hash, record, now_ms, touch).await?;
        let slot = fred::util::redis_keyslot(self.key(hash).as_bytes());
        let options = Options {
            cluster_hash: Some(ClusterHash::Custom(slot)),
            timeout: Some(acknowledged.timeout + acknowledged.command_timeout),
            ..Options::default()
        };
        let replicas: i64 = client
            .with_options(&options)
            .wait(
                i64::from(acknowledged.replicas),
                acknowledged.timeout.as_millis().max(1) as i64,
            )
            .await
            .map_err(unavailable)?;
        Ok(Some(replicas >= i64::from(acknowledged.replicas)))
    }

    async fn save_on(
        &self,
        client: &Client,
        hash: &SessionHash,
        record: &SessionRecord,
        now_ms: u64,
        touch: Duration,
    ) -> Result<(), StoreError> {
        let value = session_value(now_ms, record)?;
        let ttl = record.ttl_ms(now_ms, touch).max(1);
        let expiry = fred::types::Expiration::PX(ttl as i64);
        let _: () = client
            .set(self.key(hash), value, Some(expiry), None, false)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn end(&self, hash: &SessionHash, remember_for: Duration) -> Result<(), StoreError> {
        let expiry = fred::types::Expiration::PX(remember_for.as_millis().max(1) as i64);
        let _: () = self
            .pool
            .set(self.key(hash), ENDED, Some(expiry), None, false)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn delete(&self, hash: &SessionHash) -> Result<bool, StoreError> {
        let removed: i64 = self.pool.del(self.key(hash)).await.map_err(unavailable)?;
        Ok(removed > 0)
    }

    /// The record and last-seen time, without renewing anything.
    pub async fn peek(
        &self,
        hash: &SessionHash,
    ) -> Result<Option<(SessionRecord, u64)>, StoreError> {
        let value: Option<String> = self.pool.get(self.key(hash)).await.map_err(unavailable)?;
        Ok(match value.as_deref().map(parse_value) {
            Some(Stored::Live { seen_ms, record }) => Some((record, seen_ms)),
            _ => None,
        })
    }

    pub async fn index_add(
        &self,
        user_key: &str,
        hash: &SessionHash,
        ends_ms: u64,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let size: i64 = self
            .index_add_script
            .evalsha_with_reload(
                self.pool.next(),
                self.user_key(user_key),
                vec![hash.to_string(), now_ms.to_string(), ends_ms.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(size.max(0) as usize)
    }

    pub async fn index_remove(
        &self,
        user_key: &str,
        hash: &SessionHash,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .index_remove_script
            .evalsha_with_reload(
                self.pool.next(),
                self.user_key(user_key),
                vec![hash.to_string(), now_ms.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The sessions indexed as not ended by `now_ms`, in no useful order.
    pub async fn index_list(
        &self,
        user_key: &str,
        now_ms: u64,
    ) -> Result<Vec<SessionHash>, StoreError> {
        let members: Vec<String> = self
            .index_list_script
            .evalsha_with_reload(
                self.pool.next(),
                self.user_key(user_key),
                vec![String::new(), now_ms.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(members
            .iter()
            .filter_map(|m| SessionHash::parse(m))
            .collect())
    }

    pub async fn index_drop(&self, user_key: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .pool
            .del(self.user_key(user_key))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn bind(
        &self,
        hash: &SessionHash,
        instance: &str,
        keep: Duration,
    ) -> Result<(), StoreError> {
        let key = self.binding_key(hash);
        let expiry = fred::types::Expiration::PX(keep.as_millis().max(1) as i64);
        let _: () = self
            .pool
            .set(key, instance, Some(expiry), None, false)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub async fn binding(&self, hash: &SessionHash) -> Result<Option<String>, StoreError> {
        self.pool
            .get(self.binding_key(hash))
            .await
            .map_err(unavailable)
    }

    /// Round-trip time of a PING, for `check` and readiness.
    pub async fn ping(&self) -> Result<Duration, StoreError> {
        let started = std::time::Instant::now();
        let _: String = self.pool.next().ping(None).await.map_err(unavailable)?;
        Ok(started.elapsed())
    }
}

/// Follows the pool's connections: when none is left, the store is known down at once (no
/// command waits its timeout to find out); a reconnection wakes the probe.
fn watch_connections(pool: &Pool, health: &Arc<Health>, probe: Probe) {
    for client in pool.clients() {
        let (lost, back) = (Arc::downgrade(health), Arc::downgrade(health));
        let watched = pool.clone();
        let on_error = client.on_error(move |(error, _)| {
            let (health, pool) = (lost.clone(), watched.clone());
            async move {
                let all_lost = pool.clients().iter().all(|c| !c.is_connected());
                if let Some(state) = health.upgrade() {
                    if all_lost && state.mark_down(&format!("connection lost: {error}")) {
                        probe_until_up(pool, health, probe);
                    }
                }
                Ok(())
            }
        });
        let on_reconnect = client.on_reconnect(move |_| {
            let health = back.clone();
            async move {
                if let Some(health) = health.upgrade() {
                    health.wake.notify_one();
                }
                Ok(())
            }
        });
        let mut watchers = health.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.extend([on_error.abort_handle(), on_reconnect.abort_handle()]);
    }
}

/// While the store is known down, PINGs every connection of the pool now and then (and at
/// once after a reconnection) and marks the store up when all answer. Ends with the store.
fn probe_until_up(pool: Pool, health: Weak<Health>, probe: Probe) {
    tokio::spawn(async move {
        loop {
            let Some(state) = health.upgrade() else {
                return;
            };
            if !state.is_down() {
                return;
            }
            let pings = pool.clients().iter().map(|client| async move {
                let answer = tokio::time::timeout(probe.timeout, client.ping::<String>(None)).await;
                matches!(answer, Ok(Ok(_)))
            });
            if futures_util::future::join_all(pings)
                .await
                .into_iter()
                .all(|ok| ok)
            {
                state.mark_up();
                return;
            }
            let wake = state.wake.notified();
            tokio::select! {
                _ = tokio::time::sleep(probe.interval) => {}
                _ = wake => {}
            }
        }
    });
}

/// Writes a session only where the key holds nothing: not a session (newer, written by the
/// proxy) and not the marker of an id that ended. Returns 1 written (or, with ARGV[3] = 1,
/// would be written: nothing is), 0 present, 2 ended. Single key. ARGV: value, ttl_ms,
/// check_only.
const SAVE_IF_ABSENT_LUA: &str = r#"
local value = redis.call('GET', KEYS[1])
if value == '-' then return 2 end
if value then return 0 end
if ARGV[3] == '1' then return 1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

static SAVE_IF_ABSENT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(SAVE_IF_ABSENT_LUA));

/// Replaces a session's record only while the key holds a live session (as [`TOUCH`] tells
/// one): not the marker of an id that ended, not a key deleted by a logout. Returns 1 written,
/// 0 not. Single key. ARGV: value, ttl_ms.
const SAVE_IF_LIVE_LUA: &str = r#"
if redis.call('GETRANGE', KEYS[1], 10, 10) ~= '{' then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

static SAVE_IF_LIVE: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(SAVE_IF_LIVE_LUA));

impl RedisStore {
    /// See [`super::SessionStore::save_if_absent`].
    pub async fn save_if_absent(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        seen_ms: u64,
        ttl_ms: u64,
        check_only: bool,
    ) -> Result<IfAbsent, StoreError> {
        let value = session_value(seen_ms, record)?;
        let answer: i64 = SAVE_IF_ABSENT
            .evalsha_with_reload(
                self.pool.next(),
                self.key(hash),
                vec![
                    value,
                    ttl_ms.max(1).to_string(),
                    u8::from(check_only).to_string(),
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(match answer {
            1 => IfAbsent::Written,
            2 => IfAbsent::Ended,
            _ => IfAbsent::Present,
        })
    }

    /// See [`super::SessionStore::save_if_live`].
    pub async fn save_if_live(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        now_ms: u64,
        touch: Duration,
    ) -> Result<bool, StoreError> {
        let value = session_value(now_ms, record)?;
        let ttl = record.ttl_ms(now_ms, touch).max(1);
        let answer: i64 = SAVE_IF_LIVE
            .evalsha_with_reload(
                self.pool.next(),
                self.key(hash),
                vec![value, ttl.to_string()],
            )
            .await
            .map_err(unavailable)?;
        Ok(answer == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_connection_is_an_outage_and_an_error_reply_a_refusal() {
        let outage = unavailable(Error::new(ErrorKind::Unknown, NO_CONNECTION));
        assert!(matches!(outage, StoreError::Unavailable(_)), "{outage}");
        let refused = unavailable(Error::new(ErrorKind::Unknown, "ERR unknown command"));
        assert!(matches!(refused, StoreError::Refused(_)), "{refused}");
    }
}
