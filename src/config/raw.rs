//! The TOML file as written by the operator. Unknown keys are rejected so that a typo is an
//! error with a line number, not a silently ignored setting. `validate.rs` turns this into
//! the runtime [`super::Config`].

mod old_stores;

pub use old_stores::*;

use super::values::{HumanDuration, Text};
use crate::migration::Mode;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listener: RawListener,
    pub redis: Spanned<RawRedis>,
    pub session: RawSession,
    #[serde(default)]
    pub identity: RawIdentity,
    pub upstreams: Vec<RawUpstream>,
    pub routes: Spanned<Vec<RawRoute>>,
    /// Only checked to be tables here: [`read_old_stores`] reads them, keeping their lines.
    #[serde(default, rename = "old_stores")]
    pub _old_stores: Vec<toml::Table>,
    pub admin: Option<RawAdmin>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub address: Spanned<Text>,
    pub shutdown_grace: Option<HumanDuration>,
    #[serde(default)]
    pub trust_forwarded_headers: bool,
    /// From accept to a complete request head (TLS handshake included).
    pub header_timeout: Option<Spanned<HumanDuration>>,
    /// A keep-alive connection with no request in progress is closed after this long.
    pub idle_timeout: Option<Spanned<HumanDuration>>,
    /// The longest a client may pause while sending a request body.
    pub body_timeout: Option<Spanned<HumanDuration>>,
    /// Open client connections at most; by default derived from the open-file limit.
    pub max_connections: Option<Spanned<usize>>,
    /// How connections are spread over threads.
    pub runtime: Option<RawListenerRuntime>,
    /// An additional HTTPS listener.
    pub tls: Option<RawTls>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawListenerRuntime {
    MultiThread,
    PerCore,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub address: Spanned<Text>,
    pub cert: Spanned<Text>,
    pub key: Spanned<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Option<Spanned<Text>>,
    /// Name of the environment variable that holds the bearer token.
    pub token_env: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// One Redis. Exactly one of `url`, `sentinels` and `cluster_nodes` is set.
    pub url: Option<Spanned<Text>>,
    /// Sentinel addresses (`host:port`) of a Sentinel-managed master named `service_name`.
    pub sentinels: Option<Spanned<Vec<Spanned<Text>>>>,
    pub service_name: Option<Spanned<Text>>,
    /// Credentials for the sentinels themselves (not for the master).
    pub sentinel_username: Option<Spanned<Text>>,
    pub sentinel_password: Option<Spanned<Text>>,
    /// Seed nodes (`host:port`) of a Redis Cluster; the rest is discovered.
    pub cluster_nodes: Option<Spanned<Vec<Spanned<Text>>>>,
    /// Credentials and TLS for the data nodes of `sentinels` or `cluster_nodes` (a `url`
    /// carries its own).
    pub username: Option<Spanned<Text>>,
    pub password: Option<Spanned<Text>>,
    pub tls: Option<Spanned<bool>>,
    /// Replicas that must acknowledge a new session (`WAIT`) before the login answers.
    pub wait_replicas: Option<Spanned<u32>>,
    pub wait_timeout: Option<Spanned<HumanDuration>>,
    pub key_prefix: Option<Spanned<Text>>,
    pub connect_timeout: Option<HumanDuration>,
    pub command_timeout: Option<Spanned<HumanDuration>>,
    pub reconnect_min: Option<HumanDuration>,
    pub reconnect_max: Option<HumanDuration>,
    pub pool_size: Option<Spanned<usize>>,
    pub retry_after: Option<HumanDuration>,
    /// CA bundle (PEM) that signs the server certificate of a `rediss://` Redis.
    pub ca_file: Option<Spanned<Text>>,
    pub near_cache: Option<RawNearCache>,
}

/// `[redis.near_cache]`: recently used sessions kept in process memory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNearCache {
    pub enabled: Option<bool>,
    pub max_entries: Option<Spanned<usize>>,
    pub max_age: Option<Spanned<HumanDuration>>,
    pub serve_stale_for: Option<HumanDuration>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawIdFormat {
    Plain,
    ExpressSigned,
    JvmRoute,
    SpringBase64,
    Laravel,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub cookie: Spanned<Text>,
    pub id_format: Spanned<RawIdFormat>,
    #[serde(default)]
    pub secrets: Vec<Text>,
    pub idle_timeout: Spanned<HumanDuration>,
    pub absolute_lifetime: Spanned<HumanDuration>,
    /// Most sessions one user may hold; the oldest is ended beyond it. 0 = no cap.
    #[serde(default)]
    pub max_sessions_per_user: usize,
    /// How long the app's own cookie lives (its Max-Age), for `unstick check`.
    pub app_cookie_lifetime: Option<HumanDuration>,
    /// What to do with a request carrying several session cookies of different values.
    pub duplicate_cookies: Option<RawDuplicateCookies>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawDuplicateCookies {
    KeepResolved,
    Refuse,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIdentity {
    pub user_header: Option<Spanned<Text>>,
    pub roles_header: Option<Spanned<Text>>,
    pub email_header: Option<Spanned<Text>>,
    #[serde(default)]
    pub attributes: BTreeMap<String, Spanned<RawAttribute>>,
    #[serde(default)]
    pub capture: RawCapture,
    /// Response header with which the app asks to end every session of the user.
    pub logout_all_header: Option<Spanned<Text>>,
    /// Response header with which the app says this response is a logout.
    pub logout_header: Option<Spanned<Text>>,
    /// Sign the injected identity headers so the app can check they came from unstick.
    pub signature: Option<RawSignature>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignature {
    pub secret: Spanned<Text>,
    pub header: Option<Spanned<Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttribute {
    pub header: Text,
    pub pointer: Text,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawCaptureSource {
    #[default]
    Whoami,
    ResponseHeader,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    #[serde(default)]
    pub source: RawCaptureSource,
    pub whoami_path: Option<Spanned<Text>>,
    pub whoami_timeout: Option<HumanDuration>,
    /// "json" (read with `user`, `roles`, `email`) or "html" (with the keys below).
    pub whoami_format: Option<Spanned<String>>,
    /// With the "html" format: a CSS selector or a pattern (with a capture group) per field.
    pub user_selector: Option<Spanned<String>>,
    pub user_pattern: Option<Spanned<String>>,
    pub roles_selector: Option<Spanned<String>>,
    pub roles_pattern: Option<Spanned<String>>,
    pub email_selector: Option<Spanned<String>>,
    pub email_pattern: Option<Spanned<String>>,
    pub response_header: Option<Spanned<Text>>,
    pub user: Option<Text>,
    pub roles: Option<Text>,
    pub email: Option<Text>,
}

impl RawCapture {
    /// The selector and pattern keys of the "html" format, per field.
    pub fn html_picks(&self) -> RawHtmlPicks<'_> {
        [
            ("user", &self.user_selector, &self.user_pattern),
            ("roles", &self.roles_selector, &self.roles_pattern),
            ("email", &self.email_selector, &self.email_pattern),
        ]
    }
}

/// Per field (user, roles, email): its selector and its pattern, as written.
pub type RawHtmlPicks<'a> = [(
    &'static str,
    &'a Option<Spanned<String>>,
    &'a Option<Spanned<String>>,
); 3];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub name: Spanned<String>,
    pub instances: Spanned<Vec<RawInstance>>,
    pub connect_timeout: Option<HumanDuration>,
    pub response_timeout: Option<HumanDuration>,
    pub max_idle_per_instance: Option<usize>,
    pub health_check: Option<RawHealthCheck>,
    /// Route suffix in the cookie (`<id>.<route>`) -> instance name.
    #[serde(default)]
    pub jvm_routes: BTreeMap<String, Spanned<String>>,
    /// The previous load balancer's sticky cookie.
    pub lb_cookie: Option<Spanned<RawLbCookie>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLbCookie {
    pub name: String,
    /// Cookie value -> instance name.
    pub values: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    pub name: Spanned<String>,
    pub url: Spanned<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Spanned<Text>,
    pub interval: Option<HumanDuration>,
    pub timeout: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<Text>,
    pub path_prefix: Option<Spanned<Text>>,
    pub upstream: Spanned<String>,
    pub mode: Mode,
    #[serde(default)]
    pub logout_paths: Vec<Spanned<Text>>,
    #[serde(default)]
    pub login_paths: Vec<Spanned<Text>>,
    /// Names of `[[old_stores]]`, asked in this order (overlap, and warming in legacy).
    #[serde(default)]
    pub old_stores: Vec<Spanned<String>>,
    /// Legacy mode: copy sessions into Redis in the background.
    #[serde(default)]
    pub warm: bool,
    /// What a cleared or replaced session cookie means without a logout signal.
    pub unexplained_cookie_change: Option<RawUnexplainedCookieChange>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawUnexplainedCookieChange {
    KeepSession,
    EndSession,
}
