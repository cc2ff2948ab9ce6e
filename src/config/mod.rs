//! Configuration: the TOML file ([`raw`]) is parsed, interpolated ([`values`]) and validated
//! ([`validate`]) into [`Config`], the only form the rest of the crate reads.

mod raw;
mod validate;
pub mod values;

use http::HeaderName;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use validate::parse_config;

/// Why a config file was refused. Every message names the file, and the key and line where known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}:{line}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// Reads and validates a config file.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let source = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config(&source, path)
}

/// The validated configuration of one running proxy.
#[derive(Debug, Clone)]
pub struct Config {
    pub listener: ListenerConfig,
    pub store: StoreConfig,
    pub session: SessionConfig,
    pub identity: IdentityConfig,
    pub upstreams: Vec<UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// How long in-flight requests may run after SIGTERM before the process exits anyway.
    pub shutdown_grace: Duration,
    /// Keep client-sent `X-Forwarded-*` (only behind another trusted proxy); otherwise replace them.
    pub trust_forwarded_headers: bool,
}

/// Where session records live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `redis://` or `rediss://` (kept whole for the Redis client; may hold a password).
    Redis(String),
    /// `memory://`: process memory, for the demo and local trials only.
    Memory,
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Redis(_) => f.write_str("Redis(..)"),
            StoreUrl::Memory => f.write_str("Memory"),
        }
    }
}

#[derive(Debug, Clone)]
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
}

impl std::fmt::Debug for IdFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdFormat::Plain => f.write_str("Plain"),
            IdFormat::ExpressSigned { secrets } => {
                write!(f, "ExpressSigned({} secrets)", secrets.len())
            }
            IdFormat::JvmRoute => f.write_str("JvmRoute"),
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
#[derive(Debug, Clone)]
pub struct IdentityMapping {
    pub user: String,
    pub roles: String,
    pub email: String,
    /// Attribute name -> pointer.
    pub attributes: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum CaptureSource {
    /// GET this path on the instance that set the cookie, with the new cookie; JSON reply.
    Whoami { path: String, timeout: Duration },
    /// The app sends a JSON identity document in this response header; it never reaches the client.
    ResponseHeader { header: HeaderName },
}

#[derive(Debug, Clone)]
pub struct IdentityConfig {
    pub headers: IdentityHeaders,
    pub mapping: IdentityMapping,
    pub capture: CaptureSource,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    pub instances: Vec<InstanceConfig>,
    pub connect_timeout: Duration,
    /// Time to the response head; past it the client gets a 504.
    pub response_timeout: Duration,
    pub max_idle_per_instance: usize,
    pub health_check: Option<HealthCheckConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    pub name: String,
    /// `host:port` to connect to.
    pub authority: String,
}

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Where a route's sessions are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Redis only: a miss is an anonymous request.
    Redis,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Redis => "redis",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Lower-case host without port; `None` matches any host.
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: String,
    pub mode: Mode,
    /// A 2xx answer to a request on one of these paths ends the session.
    pub logout_paths: Vec<String>,
}
