//! The validated configuration: the only form the rest of the crate reads. Built by
//! [`super::validate`] from the file; every value here has passed its checks.

use http::HeaderName;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The validated configuration of one running proxy.
#[derive(Debug, Clone)]
pub struct Config {
    /// SHA-256 of the file text (first 16 hex chars): which config is active.
    pub source_hash: String,
    pub listener: ListenerConfig,
    pub store: StoreConfig,
    pub session: SessionConfig,
    pub identity: IdentityConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    pub old_stores: Vec<OldStoreConfig>,
    pub admin: Option<AdminConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// The bearer token; `None` when its variable is unset (then only health endpoints answer).
    pub token: Option<String>,
    pub token_env: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// How long in-flight requests may run after SIGTERM before the process exits anyway.
    pub shutdown_grace: Duration,
    /// Keep client-sent `X-Forwarded-*` (only behind another trusted proxy); otherwise replace them.
    pub trust_forwarded_headers: bool,
    /// From accept to a complete first request head (TLS handshake included); a silent
    /// connection is closed after it.
    pub header_timeout: Duration,
    /// A connection with no request in progress is closed after this long (HTTP/1.1
    /// keep-alive between requests, HTTP/2 without open streams).
    pub idle_timeout: Duration,
    /// The longest a client may send nothing while sending a request body; the request is
    /// then ended (408 when the app has not answered yet).
    pub body_timeout: Duration,
    /// Open client connections at most (all client listeners together); `None`: derived
    /// from the open-file limit at start.
    pub max_connections: Option<usize>,
    pub runtime: ListenerRuntime,
    pub tls: Option<TlsListenerConfig>,
}

/// How client connections are spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerRuntime {
    /// One runtime whose threads share every connection (tasks move between threads).
    MultiThread,
    /// A single-threaded runtime per usable CPU, each accepting on its own `SO_REUSEPORT`
    /// listener on the address, as nginx workers do: a connection stays on one thread.
    PerCore,
}

/// An HTTPS listener: PEM certificate chain and key, re-read when the files change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListenerConfig {
    pub address: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where session records live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `redis://` or `rediss://` (kept whole for the Redis client; may hold a password).
    Redis(String),
    /// A master found through Redis Sentinel; failovers are followed.
    Sentinel(SentinelTarget),
    /// A Redis Cluster, discovered from seed nodes.
    Cluster(ClusterTarget),
    /// `memory://`: process memory, for the demo and local trials only.
    Memory,
}

/// `host:port` of one Redis node or sentinel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Credentials and TLS for the data nodes of a Sentinel or Cluster deployment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NodeAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: bool,
}

#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    pub sentinels: Vec<NodeAddress>,
    pub service_name: String,
    /// For the sentinels (Sentinel's own `requirepass`/ACL), not for the master.
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
    /// For the master and replicas.
    pub auth: NodeAuth,
}

#[derive(Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    pub nodes: Vec<NodeAddress>,
    pub auth: NodeAuth,
}

fn joined(addresses: &[NodeAddress]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl StoreUrl {
    /// The URL without any password, for messages.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Memory => "memory://".to_string(),
            StoreUrl::Redis(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}://***@{}", &url[..scheme], &url[at + 1..])
                }
                _ => url.clone(),
            },
            StoreUrl::Sentinel(target) => format!(
                "sentinel service {} via {}",
                target.service_name,
                joined(&target.sentinels)
            ),
            StoreUrl::Cluster(target) => format!("cluster via {}", joined(&target.nodes)),
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    // Credentials stay out of debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Redis(_) => f.write_str("Redis(..)"),
            StoreUrl::Sentinel(_) | StoreUrl::Cluster(_) => {
                write!(f, "{}", self.redacted())
            }
            StoreUrl::Memory => f.write_str("Memory"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    pub url: StoreUrl,
    /// Namespace of every key, e.g. `myapp:prod:`.
    pub key_prefix: String,
    pub connect_timeout: Duration,
    /// Bound on one Redis command; past it a request with a session gets a 503.
    pub command_timeout: Duration,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub pool_size: usize,
    /// Sent as `Retry-After` when the store cannot answer.
    pub retry_after: Duration,
    /// CA bundle for `rediss://` (and `tls = true`).
    pub ca_file: Option<PathBuf>,
    /// Replicas that must acknowledge a new session before the login answers (0: none).
    pub wait_replicas: u32,
    /// How long a login waits for them; past it the login is served anyway and counted.
    pub wait_timeout: Duration,
    pub near_cache: NearCacheConfig,
}

/// `[redis.near_cache]`: recently used sessions in process memory, dropped when Redis
/// reports a change to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NearCacheConfig {
    pub enabled: bool,
    pub max_entries: usize,
    /// An entry older than this is read again from Redis (defence in depth).
    pub max_age: Duration,
    /// While Redis is unreachable, cached sessions are served this long after it was last
    /// known up (zero: not at all).
    pub serve_stale_for: Duration,
}

/// How the session id is written in the app's cookie.
#[derive(Clone, PartialEq, Eq)]
pub enum IdFormat {
    /// The cookie value is the id.
    Plain,
    /// express-session: `s:<id>.<base64 HMAC-SHA256>`; the first secret signs, all verify.
    ExpressSigned { secrets: Vec<String> },
    /// Tomcat: `<id>.<jvmRoute>`.
    JvmRoute,
    /// Spring Session: padded standard base64 of `<id>` or `<id>.<route>`.
    SpringBase64,
    /// Laravel's `EncryptCookies`: base64 of a JSON envelope (`iv`, `value`, `mac`), the value
    /// AES-CBC encrypted and HMAC-SHA256 authenticated with the app key, holding
    /// `<HMAC-SHA1 of the cookie name>|<id>`. Every key decrypts (rotation).
    Laravel { keys: Vec<LaravelKey> },
}

/// One Laravel `APP_KEY`, with the value prefix it gives the session cookie.
#[derive(Clone, PartialEq, Eq)]
pub struct LaravelKey {
    /// 32 bytes (AES-256-CBC, Laravel's default) or 16 (AES-128-CBC).
    pub key: Vec<u8>,
    /// `CookieValuePrefix::create(cookie, key)`: hex HMAC-SHA1(key, cookie + "v2") and `|`.
    pub prefix: String,
}

impl LaravelKey {
    /// An `APP_KEY` as Laravel reads it (`base64:` and the key, or the raw key), for the
    /// cookie `cookie_name`; `None` when it is not a 16- or 32-byte key.
    pub fn new(app_key: &str, cookie_name: &str) -> Option<LaravelKey> {
        use base64::Engine;
        use hmac::Mac;
        let key = match app_key.strip_prefix("base64:") {
            Some(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?,
            None => app_key.as_bytes().to_vec(),
        };
        if key.len() != 32 && key.len() != 16 {
            return None;
        }
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&key).ok()?;
        mac.update(cookie_name.as_bytes());
        mac.update(b"v2");
        let prefix = format!("{}|", crate::hex_string(&mac.finalize().into_bytes()));
        Some(LaravelKey { key, prefix })
    }
}

impl std::fmt::Debug for IdFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdFormat::Plain => f.write_str("Plain"),
            IdFormat::ExpressSigned { secrets } => {
                write!(f, "ExpressSigned({} secrets)", secrets.len())
            }
            IdFormat::JvmRoute => f.write_str("JvmRoute"),
            IdFormat::SpringBase64 => f.write_str("SpringBase64"),
            IdFormat::Laravel { keys } => write!(f, "Laravel({} keys)", keys.len()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub cookie_name: String,
    pub id_format: IdFormat,
    /// Sliding: a session unused this long is gone.
    pub idle_timeout: Duration,
    /// Hard cap from creation, however active the session is.
    pub absolute_lifetime: Duration,
    /// 0 = no cap.
    pub max_sessions_per_user: usize,
    pub app_cookie_lifetime: Option<Duration>,
    pub duplicate_cookies: DuplicateCookies,
}

/// A request carrying several session cookies of different values (a host-only and a domain
/// cookie, or one planted from a subdomain): unstick and the app must not each pick another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateCookies {
    /// The first cookie (in the order sent) with a live session wins, and the app is sent
    /// that one only. A user with a stale second cookie is not locked out.
    #[default]
    KeepResolved,
    /// Answer 400: no session is chosen for a request that is ambiguous. For sites whose
    /// subdomains are not trusted (cookie tossing).
    Refuse,
}

impl SessionConfig {
    /// How stale the last-seen time may get before a request renews it. Renewals cost a
    /// write, so they are throttled; the TTL includes this slack so no session dies early.
    pub fn touch_interval(&self) -> Duration {
        (self.idle_timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
    }
}

/// Names of the headers unstick owns on the way to the app.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub user: HeaderName,
    pub roles: HeaderName,
    pub email: HeaderName,
    /// Attribute name -> header that carries it.
    pub attributes: BTreeMap<String, HeaderName>,
}

impl IdentityHeaders {
    /// Every header name a client must never be able to send itself.
    pub fn owned(&self) -> impl Iterator<Item = &HeaderName> {
        [&self.user, &self.roles, &self.email]
            .into_iter()
            .chain(self.attributes.values())
    }
}

/// JSON pointers that turn an app's identity document into an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityMapping {
    pub user: String,
    pub roles: String,
    pub email: String,
    /// Attribute name -> pointer.
    pub attributes: BTreeMap<String, String>,
}

/// How the answer of the app's "who am I" endpoint is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WhoamiFormat {
    /// A JSON document, read with the JSON pointers of the identity mapping.
    Json,
    /// An HTML page ("Logged in as alice"): each field picked from it.
    Html(HtmlIdentity),
}

/// Where the identity is on an HTML page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtmlIdentity {
    pub user: HtmlPick,
    pub roles: Option<HtmlPick>,
    pub email: Option<HtmlPick>,
}

/// One field of an HTML page: the text of the elements a CSS selector matches, or the first
/// capture group of a pattern's matches in the page source.
#[derive(Debug, Clone)]
pub enum HtmlPick {
    Selector(scraper::Selector),
    Pattern(regex::Regex),
}

impl PartialEq for HtmlPick {
    fn eq(&self, other: &HtmlPick) -> bool {
        match (self, other) {
            (HtmlPick::Selector(a), HtmlPick::Selector(b)) => a == b,
            (HtmlPick::Pattern(a), HtmlPick::Pattern(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for HtmlPick {}

#[derive(Debug, Clone)]
pub enum CaptureSource {
    /// GET this path on the instance that set the cookie, with the new cookie.
    Whoami {
        path: String,
        timeout: Duration,
        format: WhoamiFormat,
    },
    /// The app sends a JSON identity document in this response header; it never reaches the client.
    ResponseHeader { header: HeaderName },
}

#[derive(Clone)]
pub struct IdentityConfig {
    pub headers: IdentityHeaders,
    pub mapping: IdentityMapping,
    pub capture: CaptureSource,
    /// Response header with which the app asks to end all of the user's sessions.
    pub logout_all_header: HeaderName,
    /// Response header with which the app says a response is a logout (any path).
    pub logout_header: HeaderName,
    pub signature: Option<SignatureConfig>,
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("headers", &self.headers)
            .field("capture", &self.capture)
            .field("signed", &self.signature.is_some())
            .finish()
    }
}

/// HMAC-SHA256 over the injected identity and a timestamp, in one header.
#[derive(Clone)]
pub struct SignatureConfig {
    pub secret: String,
    pub header: HeaderName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    pub instances: Vec<InstanceConfig>,
    pub connect_timeout: Duration,
    /// Time to the response head; past it the client gets a 504.
    pub response_timeout: Duration,
    pub max_idle_per_instance: usize,
    pub health_check: Option<HealthCheckConfig>,
    /// Cookie route suffix -> instance name (a route equal to an instance name needs no entry).
    pub jvm_routes: BTreeMap<String, String>,
    pub lb_cookie: Option<LbCookieConfig>,
}

/// The sticky cookie of the load balancer unstick replaces (e.g. HAProxy `SERVERID`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbCookieConfig {
    pub name: String,
    /// Cookie value -> instance name.
    pub values: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    pub name: String,
    /// `host:port` to connect to.
    pub authority: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

pub use crate::migration::Mode;

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: String,
    pub mode: Mode,
    /// A 2xx answer to a request on one of these paths ends the session. As
    /// [`super::values::routed_path`] gives them, as requests' paths are compared.
    pub logout_paths: Vec<String>,
    /// A 2xx/3xx answer on one of these paths is checked for a login that kept the session id.
    pub login_paths: Vec<String>,
    /// Names of old stores, asked in order.
    pub old_stores: Vec<String>,
    /// Legacy mode: copy sessions into Redis in the background.
    pub warm: bool,
    /// What a cleared or replaced session cookie means when nothing says it is a logout.
    pub unexplained_cookie_change: UnexplainedCookieChange,
}

impl RouteConfig {
    /// `host` + `path_prefix`: how metrics, logs and `unstick migrate --route` name the route.
    pub fn label(&self) -> String {
        match &self.host {
            Some(host) => format!("{host}{}", self.path_prefix),
            None => self.path_prefix.clone(),
        }
    }
}

/// How a route reads the app clearing or replacing the cookie of a session unstick holds,
/// when no logout path or logout header says it is a logout and the app names no user for a
/// new id. Frameworks do this as housekeeping (Django deletes a cookie it has no session for,
/// Rails issues a new id for one), so by default it is not a logout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnexplainedCookieChange {
    /// Housekeeping: a cleared cookie is not passed on (the browser keeps its cookie), a new
    /// id takes over the session.
    #[default]
    KeepSession,
    /// The app's cookie is authoritative: clearing or replacing it ends the session.
    EndSession,
}

/// Where the app kept sessions before unstick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldStoreConfig {
    pub name: String,
    pub kind: OldStoreKind,
    /// Bound on one lookup; past it the request goes on without this store's answer.
    pub timeout: Duration,
    pub mapping: IdentityMapping,
}

#[derive(Clone, PartialEq, Eq)]
pub enum OldStoreKind {
    /// The app's own endpoint on the instance that holds the session.
    Whoami {
        path: String,
        format: WhoamiFormat,
        /// Instances asked at once when the owner is unknown.
        fanout_concurrency: usize,
        /// How long an unknown cookie is remembered as a miss (no repeated fan-out).
        miss_ttl: Duration,
    },
    /// Another Redis with the app's own layout.
    Redis {
        url: String,
        key_template: String,
        format: ForeignRedisFormat,
    },
    Postgres {
        url: String,
        format: PostgresFormat,
        /// Empty with [`PostgresFormat::Custom`] (its queries name their tables).
        table: String,
        /// Django: SECRET_KEY, then older keys still accepted.
        secret_keys: Vec<String>,
    },
    PhpFiles {
        dir: PathBuf,
        /// `sess_` (PHP) or empty (Laravel's file driver).
        file_prefix: String,
        gc_maxlifetime: Duration,
    },
}

impl std::fmt::Debug for OldStoreKind {
    // URLs and keys may hold secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OldStoreKind::Whoami { path, .. } => write!(f, "Whoami({path})"),
            OldStoreKind::Redis {
                key_template,
                format,
                ..
            } => write!(f, "Redis({key_template}, {format:?})"),
            OldStoreKind::Postgres { format, table, .. } => {
                write!(f, "Postgres({table}, {format:?})")
            }
            OldStoreKind::PhpFiles { dir, .. } => write!(f, "PhpFiles({})", dir.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignRedisFormat {
    /// connect-redis: the session as JSON.
    Json,
    /// phpredis: PHP's session serialize format.
    Php,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostgresFormat {
    /// `session(sid, sess json, expire)`.
    ConnectPgSimple,
    /// `django_session(session_key, session_data, expire_date)`, signed payload.
    Django,
    /// The operator's own SQL: `lookup` takes the session id as `$1` and returns at most one
    /// row (session JSON as `text`, seconds left as `float8` or NULL); `delete` (optional)
    /// takes the id as `$1`.
    Custom {
        lookup: String,
        delete: Option<String>,
    },
}
