//! Turns a [`RawConfig`] into a [`Config`], checking what TOML types cannot: references between
//! sections, header names, URLs, lifetimes. Each error carries the key and its line.

use super::raw::*;
use super::*;
use crate::config::values::{HumanDuration, Text};
use std::collections::HashSet;
use std::ops::Range;
use toml::Spanned;

const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_millis(100);

/// Parses and validates config text; `path` is only used in messages.
pub fn parse_config(source: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(source).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    Validator { source, path }.config(raw)
}

struct Validator<'a> {
    source: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let line = self.source[..span.start.min(self.source.len())]
            .matches('\n')
            .count()
            + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            key: key.into(),
            message: message.into(),
        }
    }

    fn header_name(&self, value: &Spanned<Text>, key: &str) -> Result<HeaderName, ConfigError> {
        HeaderName::from_bytes(value.get_ref().0.as_bytes()).map_err(|_| {
            self.err(
                value.span(),
                key,
                format!("{:?} is not a valid header name", value.get_ref().0),
            )
        })
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listener = self.listener(raw.listener)?;
        let admin = self.admin(raw.admin)?;
        let store = self.store(raw.redis)?;
        let session = self.session(raw.session)?;
        let identity = self.identity(raw.identity)?;
        let mut upstreams = Vec::new();
        for upstream in raw.upstreams {
            if upstreams
                .iter()
                .any(|u: &UpstreamConfig| u.name == *upstream.name.get_ref())
            {
                return Err(self.err(
                    upstream.name.span(),
                    "upstreams.name",
                    "two upstreams share this name",
                ));
            }
            upstreams.push(self.upstream(upstream)?);
        }
        if raw.routes.is_empty() {
            return Err(ConfigError::Parse {
                path: self.path.to_path_buf(),
                message: "no [[routes]]: add at least one route (e.g. path_prefix = \"/\")".into(),
            });
        }
        let mut old_stores: Vec<OldStoreConfig> = Vec::new();
        for store in raw.old_stores {
            if old_stores.iter().any(|s| s.name == *store.name.get_ref()) {
                return Err(self.err(
                    store.name.span(),
                    "old_stores.name",
                    "two old stores share this name",
                ));
            }
            old_stores.push(self.old_store(store)?);
        }
        let mut routes = Vec::new();
        for route in raw.routes {
            routes.push(self.route(route, &upstreams, &old_stores)?);
        }
        use sha2::Digest;
        Ok(Config {
            source_hash: crate::hex_string(&sha2::Sha256::digest(self.source.as_bytes())[..8]),
            listener,
            store,
            session,
            identity,
            upstreams,
            routes,
            old_stores,
            admin,
        })
    }

    fn address(&self, value: &Spanned<Text>, key: &str) -> Result<SocketAddr, ConfigError> {
        value.get_ref().0.trim().parse().map_err(|_| {
            self.err(
                value.span(),
                key,
                "expected an IP address and port, e.g. \"0.0.0.0:8080\"",
            )
        })
    }

    fn admin(&self, raw: Option<RawAdmin>) -> Result<Option<AdminConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let address = match &raw.address {
            Some(address) => self.address(address, "admin.address")?,
            None => SocketAddr::from(([127, 0, 0, 1], 9901)),
        };
        let token_env = raw
            .token_env
            .map_or_else(|| "UNSTICK_ADMIN_TOKEN".to_string(), |t| t.0);
        let token = std::env::var(&token_env).ok().filter(|t| !t.is_empty());
        Ok(Some(AdminConfig {
            address,
            token,
            token_env,
        }))
    }

    fn listener(&self, raw: RawListener) -> Result<ListenerConfig, ConfigError> {
        let address = self.address(&raw.address, "listener.address")?;
        let tls = match raw.tls {
            Some(tls) => Some(TlsListenerConfig {
                address: self.address(&tls.address, "listener.tls.address")?,
                cert: PathBuf::from(&tls.cert.get_ref().0),
                key: PathBuf::from(&tls.key.get_ref().0),
            }),
            None => None,
        };
        let positive =
            |value: Option<Spanned<HumanDuration>>, key: &str, default: Duration| match value {
                Some(d) if d.get_ref().0.is_zero() => {
                    Err(self.err(d.span(), key, "must be greater than zero"))
                }
                Some(d) => Ok(d.into_inner().0),
                None => Ok(default),
            };
        let max_connections = match raw.max_connections {
            Some(n) if *n.get_ref() == 0 => {
                return Err(self.err(
                    n.span(),
                    "listener.max_connections",
                    "must be at least 1 (leave it out for a default from the open-file limit)",
                ))
            }
            Some(n) => Some(n.into_inner()),
            None => None,
        };
        Ok(ListenerConfig {
            address,
            shutdown_grace: raw.shutdown_grace.map_or(Duration::from_secs(30), |d| d.0),
            trust_forwarded_headers: raw.trust_forwarded_headers,
            header_timeout: positive(
                raw.header_timeout,
                "listener.header_timeout",
                DEFAULT_HEADER_TIMEOUT,
            )?,
            idle_timeout: positive(
                raw.idle_timeout,
                "listener.idle_timeout",
                DEFAULT_IDLE_TIMEOUT,
            )?,
            max_connections,
            tls,
        })
    }

    /// `host:port` (IPv6 as `[::1]:6379`) of a sentinel or cluster node.
    fn node_address(&self, value: &Spanned<Text>, key: &str) -> Result<NodeAddress, ConfigError> {
        let text = value.get_ref().0.trim();
        let bad = |why: &str| {
            self.err(
                value.span(),
                key,
                format!("{text:?}: {why}; write \"host:port\", e.g. \"10.0.0.5:26379\""),
            )
        };
        if text.contains("://") {
            return Err(bad("a bare address is expected here, not a URL"));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad("no host"));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(NodeAddress {
                host: host.to_string(),
                port,
            }),
            _ => Err(bad("the port must be a number from 1 to 65535")),
        }
    }

    fn node_list(
        &self,
        list: &Spanned<Vec<Spanned<Text>>>,
        key: &str,
    ) -> Result<Vec<NodeAddress>, ConfigError> {
        if list.get_ref().is_empty() {
            return Err(self.err(list.span(), key, "list at least one \"host:port\""));
        }
        let mut nodes: Vec<NodeAddress> = Vec::new();
        for value in list.get_ref() {
            let node = self.node_address(value, key)?;
            if nodes.contains(&node) {
                return Err(self.err(value.span(), key, format!("{node} is listed twice")));
            }
            nodes.push(node);
        }
        Ok(nodes)
    }

    /// Which Redis: one `url`, a Sentinel service, or a Cluster. Exactly one is named; keys
    /// that belong to another kind are refused rather than silently ignored.
    fn store_target(&self, raw: &Spanned<RawRedis>) -> Result<StoreUrl, ConfigError> {
        let table = raw.get_ref();
        let text = |value: &Option<Spanned<Text>>| {
            value
                .as_ref()
                .map(|v| v.get_ref().0.clone())
                .filter(|v| !v.is_empty())
        };
        let named = [
            table.url.is_some(),
            table.sentinels.is_some(),
            table.cluster_nodes.is_some(),
        ];
        if named.iter().filter(|n| **n).count() != 1 {
            return Err(self.err(
                raw.span(),
                "redis",
                "set exactly one of `url` (one Redis), `sentinels` with `service_name` (Redis \
                 Sentinel) or `cluster_nodes` (Redis Cluster)",
            ));
        }
        let only_with = |value: Option<Range<usize>>, key: &str, needs: &str| match value {
            Some(span) => Err(self.err(span, key, format!("applies only with {needs}"))),
            None => Ok(()),
        };
        if table.sentinels.is_none() {
            for (value, key) in [
                (&table.service_name, "redis.service_name"),
                (&table.sentinel_username, "redis.sentinel_username"),
                (&table.sentinel_password, "redis.sentinel_password"),
            ] {
                only_with(value.as_ref().map(Spanned::span), key, "redis.sentinels")?;
            }
        }
        if let Some(url) = &table.url {
            for (value, key) in [
                (table.username.as_ref().map(Spanned::span), "redis.username"),
                (table.password.as_ref().map(Spanned::span), "redis.password"),
            ] {
                if let Some(span) = value {
                    return Err(self.err(
                        span,
                        key,
                        "with redis.url the credentials go in the URL \
                         (redis://user:password@host:port); this key is for sentinels or \
                         cluster_nodes",
                    ));
                }
            }
            if let Some(tls) = &table.tls {
                return Err(self.err(
                    tls.span(),
                    "redis.tls",
                    "with redis.url, TLS is chosen by the scheme: write rediss://",
                ));
            }
            return self.single_url(url);
        }
        let auth = NodeAuth {
            username: text(&table.username),
            password: text(&table.password),
            tls: table.tls.as_ref().is_some_and(|t| *t.get_ref()),
        };
        if let Some(sentinels) = &table.sentinels {
            let sentinels = self.node_list(sentinels, "redis.sentinels")?;
            let service_name = text(&table.service_name).ok_or_else(|| {
                self.err(
                    raw.span(),
                    "redis.service_name",
                    "required with redis.sentinels: the name the sentinels monitor the master \
                     under (`sentinel monitor <name> ...`), e.g. \"mymaster\"",
                )
            })?;
            return Ok(StoreUrl::Sentinel(SentinelTarget {
                sentinels,
                service_name,
                sentinel_username: text(&table.sentinel_username),
                sentinel_password: text(&table.sentinel_password),
                auth,
            }));
        }
        let nodes = match &table.cluster_nodes {
            Some(nodes) => self.node_list(nodes, "redis.cluster_nodes")?,
            None => Vec::new(),
        };
        Ok(StoreUrl::Cluster(ClusterTarget { nodes, auth }))
    }

    fn single_url(&self, url: &Spanned<Text>) -> Result<StoreUrl, ConfigError> {
        let url_text = url.get_ref().0.trim().to_string();
        if url_text == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        if url_text.starts_with("redis://") || url_text.starts_with("rediss://") {
            // Parsed as redis:// so that validating a rediss:// URL does not load CA files.
            fred::types::config::Config::from_url(&url_text.replacen("rediss://", "redis://", 1))
                .map_err(|e| {
                self.err(
                    url.span(),
                    "redis.url",
                    format!("not a usable Redis URL: {e}"),
                )
            })?;
            return Ok(StoreUrl::Redis(url_text));
        }
        let hint = if url_text.contains("-sentinel://") || url_text.contains("-cluster://") {
            "; for Sentinel or Cluster use the keys `sentinels` + `service_name` or \
             `cluster_nodes` instead of a URL"
        } else {
            ""
        };
        Err(self.err(
            url.span(),
            "redis.url",
            format!(
                "expected redis://host:port, rediss://host:port, or memory:// (demo only){hint}"
            ),
        ))
    }

    fn store(&self, spanned: Spanned<RawRedis>) -> Result<StoreConfig, ConfigError> {
        let url = self.store_target(&spanned)?;
        let raw = spanned.into_inner();
        let key_prefix = match raw.key_prefix {
            Some(prefix) => {
                let text = prefix.get_ref().0.clone();
                if text.is_empty() || text.contains(char::is_whitespace) {
                    return Err(self.err(
                        prefix.span(),
                        "redis.key_prefix",
                        "must be non-empty without spaces, e.g. \"myapp:prod:\"",
                    ));
                }
                text
            }
            None => "unstick:".to_string(),
        };
        let command_timeout = match raw.command_timeout {
            Some(t) if t.get_ref().0.is_zero() => {
                return Err(self.err(
                    t.span(),
                    "redis.command_timeout",
                    "must be greater than zero",
                ))
            }
            Some(t) => t.get_ref().0,
            None => DEFAULT_COMMAND_TIMEOUT,
        };
        let pool_size = match raw.pool_size {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > 64 => {
                return Err(self.err(n.span(), "redis.pool_size", "must be between 1 and 64"))
            }
            Some(n) => *n.get_ref(),
            None => 2,
        };
        let wait_replicas = match raw.wait_replicas {
            Some(n) if *n.get_ref() > 16 => {
                return Err(self.err(
                    n.span(),
                    "redis.wait_replicas",
                    "at most 16 (the replicas of one master that must hold a new session)",
                ))
            }
            Some(n) if *n.get_ref() > 0 && url == StoreUrl::Memory => {
                return Err(self.err(
                    n.span(),
                    "redis.wait_replicas",
                    "memory:// has no replicas; remove it or use Redis",
                ))
            }
            Some(n) => *n.get_ref(),
            None => 0,
        };
        let wait_timeout = match raw.wait_timeout {
            Some(t) if t.get_ref().0.is_zero() || t.get_ref().0 > Duration::from_secs(10) => {
                return Err(self.err(
                    t.span(),
                    "redis.wait_timeout",
                    "must be between 1ms and 10s (a login waits this long at most)",
                ))
            }
            Some(t) if wait_replicas == 0 => {
                return Err(self.err(
                    t.span(),
                    "redis.wait_timeout",
                    "applies only with redis.wait_replicas of 1 or more",
                ))
            }
            Some(t) => t.get_ref().0,
            None => DEFAULT_WAIT_TIMEOUT,
        };
        Ok(StoreConfig {
            url,
            key_prefix,
            connect_timeout: raw.connect_timeout.map_or(Duration::from_secs(2), |d| d.0),
            command_timeout,
            reconnect_min: raw.reconnect_min.map_or(Duration::from_millis(50), |d| d.0),
            reconnect_max: raw.reconnect_max.map_or(Duration::from_secs(2), |d| d.0),
            pool_size,
            retry_after: raw.retry_after.map_or(Duration::from_secs(1), |d| d.0),
            ca_file: raw.ca_file.map(|f| PathBuf::from(f.into_inner().0)),
            wait_replicas,
            wait_timeout,
        })
    }

    fn session(&self, raw: RawSession) -> Result<SessionConfig, ConfigError> {
        let cookie_name = raw.cookie.get_ref().0.clone();
        if cookie_name.is_empty()
            || cookie_name.contains(|c: char| c.is_whitespace() || "=;,\"".contains(c))
        {
            return Err(self.err(
                raw.cookie.span(),
                "session.cookie",
                "not a valid cookie name",
            ));
        }
        let id_format = match raw.id_format.get_ref() {
            RawIdFormat::Plain => IdFormat::Plain,
            RawIdFormat::JvmRoute => IdFormat::JvmRoute,
            RawIdFormat::SpringBase64 => IdFormat::SpringBase64,
            RawIdFormat::ExpressSigned => {
                let secrets: Vec<String> = raw.secrets.into_iter().map(|s| s.0).collect();
                if secrets.is_empty() || secrets.iter().any(String::is_empty) {
                    return Err(self.err(
                        raw.id_format.span(),
                        "session.secrets",
                        "express-signed needs `secrets = [\"current\", \"older\", ...]` (the app's secrets, none empty)",
                    ));
                }
                IdFormat::ExpressSigned { secrets }
            }
            RawIdFormat::Laravel => {
                let invalid = || {
                    self.err(
                        raw.id_format.span(),
                        "session.secrets",
                        "laravel needs `secrets = [\"${APP_KEY}\", ...]`: the app's keys, current \
                         first, each \"base64:...\" of 32 bytes (AES-256-CBC) or 16 (AES-128-CBC)",
                    )
                };
                if raw.secrets.is_empty() {
                    return Err(invalid());
                }
                let mut keys = Vec::new();
                for secret in &raw.secrets {
                    let key = LaravelKey::new(&secret.0, &cookie_name).ok_or_else(invalid)?;
                    keys.push(key);
                }
                IdFormat::Laravel { keys }
            }
        };
        let idle_timeout = raw.idle_timeout.get_ref().0;
        let absolute_lifetime = raw.absolute_lifetime.get_ref().0;
        if idle_timeout < Duration::from_secs(1) {
            return Err(self.err(
                raw.idle_timeout.span(),
                "session.idle_timeout",
                "must be at least 1s",
            ));
        }
        if absolute_lifetime < idle_timeout {
            return Err(self.err(
                raw.absolute_lifetime.span(),
                "session.absolute_lifetime",
                "must not be shorter than session.idle_timeout",
            ));
        }
        Ok(SessionConfig {
            cookie_name,
            id_format,
            idle_timeout,
            absolute_lifetime,
            max_sessions_per_user: raw.max_sessions_per_user,
            app_cookie_lifetime: raw.app_cookie_lifetime.map(|d| d.0),
            duplicate_cookies: match raw.duplicate_cookies {
                None | Some(RawDuplicateCookies::KeepResolved) => DuplicateCookies::KeepResolved,
                Some(RawDuplicateCookies::Refuse) => DuplicateCookies::Refuse,
            },
        })
    }

    fn identity(&self, raw: RawIdentity) -> Result<IdentityConfig, ConfigError> {
        let header = |value: &Option<Spanned<Text>>, key: &str, default: &'static str| match value {
            Some(v) => self.header_name(v, key),
            None => Ok(HeaderName::from_static(default)),
        };
        let mut headers = IdentityHeaders {
            user: header(&raw.user_header, "identity.user_header", "x-auth-user")?,
            roles: header(&raw.roles_header, "identity.roles_header", "x-auth-roles")?,
            email: header(&raw.email_header, "identity.email_header", "x-auth-email")?,
            attributes: BTreeMap::new(),
        };
        let capture = &raw.capture;
        let mut mapping = IdentityMapping {
            user: pointer(capture.user.as_ref(), "/user"),
            roles: pointer(capture.roles.as_ref(), "/roles"),
            email: pointer(capture.email.as_ref(), "/email"),
            attributes: BTreeMap::new(),
        };
        for (name, attribute) in &raw.attributes {
            let key = format!("identity.attributes.{name}");
            let value = attribute.get_ref();
            let header = HeaderName::from_bytes(value.header.0.as_bytes()).map_err(|_| {
                self.err(
                    attribute.span(),
                    &key,
                    "`header` is not a valid header name",
                )
            })?;
            if !value.pointer.0.is_empty() && !value.pointer.0.starts_with('/') {
                return Err(self.err(
                    attribute.span(),
                    &key,
                    "`pointer` must be a JSON pointer such as \"/tenant\"",
                ));
            }
            headers.attributes.insert(name.clone(), header);
            mapping
                .attributes
                .insert(name.clone(), value.pointer.0.clone());
        }
        let mut seen = HashSet::new();
        for name in headers.owned() {
            if !seen.insert(crate::proxy::headers::normalize_header_name(name.as_str())) {
                return Err(ConfigError::Parse {
                    path: self.path.to_path_buf(),
                    message: format!("identity header {name} is configured twice"),
                });
            }
        }
        let capture = match raw.capture.source {
            RawCaptureSource::Whoami => {
                let path = match &raw.capture.whoami_path {
                    Some(p) if !p.get_ref().0.starts_with('/') => {
                        return Err(self.err(
                            p.span(),
                            "identity.capture.whoami_path",
                            "must start with /",
                        ))
                    }
                    Some(p) => p.get_ref().0.clone(),
                    None => "/whoami".to_string(),
                };
                CaptureSource::Whoami {
                    path,
                    timeout: raw
                        .capture
                        .whoami_timeout
                        .map_or(Duration::from_secs(2), |d| d.0),
                }
            }
            RawCaptureSource::ResponseHeader => CaptureSource::ResponseHeader {
                header: match &raw.capture.response_header {
                    Some(h) => self.header_name(h, "identity.capture.response_header")?,
                    None => HeaderName::from_static("x-unstick-identity"),
                },
            },
        };
        let logout_all_header = match &raw.logout_all_header {
            Some(h) => self.header_name(h, "identity.logout_all_header")?,
            None => HeaderName::from_static("x-unstick-logout-all"),
        };
        let logout_header = match &raw.logout_header {
            Some(h) => self.header_name(h, "identity.logout_header")?,
            None => HeaderName::from_static("x-unstick-logout"),
        };
        let signature = match &raw.signature {
            Some(signature) => {
                let secret = signature.secret.get_ref().0.clone();
                if secret.len() < 16 {
                    return Err(self.err(
                        signature.secret.span(),
                        "identity.signature.secret",
                        "use a random secret of at least 16 characters",
                    ));
                }
                let header = match &signature.header {
                    Some(h) => self.header_name(h, "identity.signature.header")?,
                    None => HeaderName::from_static("x-auth-signature"),
                };
                Some(SignatureConfig { secret, header })
            }
            None => None,
        };
        Ok(IdentityConfig {
            headers,
            mapping,
            capture,
            logout_all_header,
            logout_header,
            signature,
        })
    }

    fn upstream(&self, raw: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
        let name = raw.name.get_ref().clone();
        if raw.instances.get_ref().is_empty() {
            return Err(self.err(
                raw.instances.span(),
                format!("upstreams.{name}.instances"),
                "needs at least one instance",
            ));
        }
        let mut instances: Vec<InstanceConfig> = Vec::new();
        for instance in raw.instances.into_inner() {
            let key = format!("upstreams.{name}.instances.url");
            let url = &instance.url.get_ref().0;
            let uri: http::Uri = url.parse().map_err(|_| {
                self.err(instance.url.span(), &key, format!("{url:?} is not a URL"))
            })?;
            if uri.scheme_str() != Some("http") || uri.port_u16().is_none() {
                return Err(self.err(
                    instance.url.span(),
                    &key,
                    "expected http://host:port (plain HTTP to the app, with a port)",
                ));
            }
            if uri.path() != "/" && !uri.path().is_empty() {
                return Err(self.err(
                    instance.url.span(),
                    &key,
                    "must not have a path; requests keep their own path",
                ));
            }
            let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
            if instances.iter().any(|i| i.name == *instance.name.get_ref()) {
                return Err(self.err(
                    instance.name.span(),
                    format!("upstreams.{name}.instances.name"),
                    "two instances share this name",
                ));
            }
            instances.push(InstanceConfig {
                name: instance.name.into_inner(),
                authority,
            });
        }
        let health_check = match raw.health_check {
            Some(check) => {
                if !check.path.get_ref().0.starts_with('/') {
                    return Err(self.err(
                        check.path.span(),
                        format!("upstreams.{name}.health_check.path"),
                        "must start with /",
                    ));
                }
                Some(HealthCheckConfig {
                    path: check.path.into_inner().0,
                    interval: check.interval.map_or(Duration::from_secs(5), |d| d.0),
                    timeout: check.timeout.map_or(Duration::from_secs(2), |d| d.0),
                })
            }
            None => None,
        };
        let known = |value: &Spanned<String>, key: &str| {
            if instances.iter().any(|i| i.name == *value.get_ref()) {
                Ok(value.get_ref().clone())
            } else {
                Err(self.err(
                    value.span(),
                    format!("upstreams.{name}.{key}"),
                    format!("no instance named {:?} in this upstream", value.get_ref()),
                ))
            }
        };
        let mut jvm_routes = BTreeMap::new();
        for (route, instance) in &raw.jvm_routes {
            jvm_routes.insert(route.clone(), known(instance, "jvm_routes")?);
        }
        let lb_cookie = match raw.lb_cookie {
            Some(cookie) => {
                let span = cookie.span();
                let cookie = cookie.into_inner();
                let mut values = BTreeMap::new();
                for (value, instance) in cookie.values {
                    known(
                        &Spanned::new(span.clone(), instance.clone()),
                        "lb_cookie.values",
                    )?;
                    values.insert(value, instance);
                }
                Some(LbCookieConfig {
                    name: cookie.name,
                    values,
                })
            }
            None => None,
        };
        Ok(UpstreamConfig {
            jvm_routes,
            lb_cookie,
            name,
            instances,
            connect_timeout: raw.connect_timeout.map_or(Duration::from_secs(2), |d| d.0),
            response_timeout: raw
                .response_timeout
                .map_or(Duration::from_secs(60), |d| d.0),
            max_idle_per_instance: raw.max_idle_per_instance.unwrap_or(128),
            health_check,
        })
    }

    fn old_store(&self, raw: RawOldStore) -> Result<OldStoreConfig, ConfigError> {
        let name = raw.name.get_ref().clone();
        let span = raw.name.span();
        let key = format!("old_stores.{name}");
        let missing = |field: &str, hint: &str| {
            self.err(
                span.clone(),
                format!("{key}.{field}"),
                format!("required for this kind: {hint}"),
            )
        };
        let text = |value: Option<Text>, field: &str, hint: &str| {
            value
                .map(|t| t.0)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| missing(field, hint))
        };
        let default_user = match (raw.kind, raw.format.as_deref()) {
            (RawOldStoreKind::Postgres, Some("django")) => "/_auth_user_id",
            _ => "/user",
        };
        let kind = match raw.kind {
            RawOldStoreKind::Whoami => OldStoreKind::Whoami {
                path: raw.path.map_or_else(|| "/whoami".to_string(), |p| p.0),
                fanout_concurrency: raw.fanout_concurrency.unwrap_or(4).clamp(1, 64),
                miss_ttl: raw.miss_ttl.map_or(Duration::from_secs(60), |d| d.0),
            },
            RawOldStoreKind::Redis => OldStoreKind::Redis {
                url: text(raw.url, "url", "redis://host:port of the old store")?,
                key_template: {
                    let template = text(raw.key, "key", "e.g. \"sess:{id}\"")?;
                    if !template.contains("{id}") {
                        return Err(self.err(span, format!("{key}.key"), "must contain {id}"));
                    }
                    template
                },
                format: match raw.format.as_deref() {
                    Some("json") | None => ForeignRedisFormat::Json,
                    Some("php") => ForeignRedisFormat::Php,
                    Some(other) => {
                        return Err(self.err(
                            span,
                            format!("{key}.format"),
                            format!("{other:?}: expected \"json\" or \"php\""),
                        ))
                    }
                },
            },
            RawOldStoreKind::Postgres => {
                let format = match raw.format.as_deref() {
                    Some("connect-pg-simple") => PostgresFormat::ConnectPgSimple,
                    Some("django") => PostgresFormat::Django,
                    other => {
                        return Err(self.err(
                            span,
                            format!("{key}.format"),
                            format!("{other:?}: expected \"connect-pg-simple\" or \"django\""),
                        ))
                    }
                };
                let secret_keys: Vec<String> = raw.secret_keys.into_iter().map(|k| k.0).collect();
                if format == PostgresFormat::Django
                    && (secret_keys.is_empty() || secret_keys.iter().any(String::is_empty))
                {
                    return Err(missing(
                        "secret_keys",
                        "Django's SECRET_KEY, then any older keys",
                    ));
                }
                OldStoreKind::Postgres {
                    url: text(raw.url, "url", "postgres://user@host/db")?,
                    table: raw.table.map_or_else(
                        || match format {
                            PostgresFormat::ConnectPgSimple => "session".to_string(),
                            PostgresFormat::Django => "django_session".to_string(),
                        },
                        |t| t.0,
                    ),
                    format,
                    secret_keys,
                }
            }
            RawOldStoreKind::PhpFiles => OldStoreKind::PhpFiles {
                dir: PathBuf::from(text(raw.dir, "dir", "PHP's session.save_path")?),
                file_prefix: match raw.file_prefix {
                    None => "sess_".to_string(),
                    Some(prefix) if prefix.0.contains(['/', '\0']) => return Err(self.err(
                        span,
                        format!("{key}.file_prefix"),
                        "a file name prefix cannot contain / (\"sess_\" for PHP, \"\" for Laravel)",
                    )),
                    Some(prefix) => prefix.0,
                },
                gc_maxlifetime: raw
                    .gc_maxlifetime
                    .map_or(Duration::from_secs(1440), |d| d.0),
            },
        };
        Ok(OldStoreConfig {
            name,
            kind,
            timeout: raw.timeout.map_or(Duration::from_millis(500), |d| d.0),
            mapping: IdentityMapping {
                user: pointer(raw.user.as_ref(), default_user),
                roles: pointer(raw.roles.as_ref(), "/roles"),
                email: pointer(raw.email.as_ref(), "/email"),
                attributes: raw.attributes.into_iter().map(|(k, v)| (k, v.0)).collect(),
            },
        })
    }

    /// A list of request paths, each starting with `/`.
    fn paths(&self, raw: Vec<Spanned<Text>>, key: &str) -> Result<Vec<String>, ConfigError> {
        let mut paths = Vec::new();
        for path in raw {
            if !path.get_ref().0.starts_with('/') {
                return Err(self.err(path.span(), key, "each path must start with /"));
            }
            paths.push(path.into_inner().0);
        }
        Ok(paths)
    }

    fn route(
        &self,
        raw: RawRoute,
        upstreams: &[UpstreamConfig],
        old_stores: &[OldStoreConfig],
    ) -> Result<RouteConfig, ConfigError> {
        let upstream = raw.upstream.get_ref().clone();
        if !upstreams.iter().any(|u| u.name == upstream) {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            return Err(self.err(
                raw.upstream.span(),
                "routes.upstream",
                format!(
                    "no upstream named {upstream:?} (known: {})",
                    known.join(", ")
                ),
            ));
        }
        let path_prefix = match &raw.path_prefix {
            Some(p) if !p.get_ref().0.starts_with('/') => {
                return Err(self.err(p.span(), "routes.path_prefix", "must start with /"))
            }
            Some(p) => p.get_ref().0.clone(),
            None => "/".to_string(),
        };
        let logout_paths = self.paths(raw.logout_paths, "routes.logout_paths")?;
        let login_paths = self.paths(raw.login_paths, "routes.login_paths")?;
        let mut stores = Vec::new();
        for name in &raw.old_stores {
            if !old_stores.iter().any(|s| s.name == *name.get_ref()) {
                return Err(self.err(
                    name.span(),
                    "routes.old_stores",
                    format!("no [[old_stores]] named {:?}", name.get_ref()),
                ));
            }
            stores.push(name.get_ref().clone());
        }
        let mode = match raw.mode {
            RawMode::Legacy => Mode::Legacy,
            RawMode::Overlap => Mode::Overlap,
            RawMode::Redis => Mode::Redis,
        };
        if mode == Mode::Overlap && stores.is_empty() {
            return Err(self.err(
                raw.upstream.span(),
                "routes.old_stores",
                "overlap mode needs the old stores to ask, e.g. old_stores = [\"app-whoami\"]",
            ));
        }
        if raw.warm && stores.is_empty() {
            return Err(self.err(
                raw.upstream.span(),
                "routes.warm",
                "warming copies from old stores: list them in old_stores",
            ));
        }
        Ok(RouteConfig {
            host: raw.host.map(|h| h.0.to_ascii_lowercase()),
            path_prefix,
            upstream,
            mode,
            logout_paths,
            login_paths,
            old_stores: stores,
            warm: raw.warm,
            unexplained_cookie_change: match raw.unexplained_cookie_change {
                None | Some(RawUnexplainedCookieChange::KeepSession) => {
                    UnexplainedCookieChange::KeepSession
                }
                Some(RawUnexplainedCookieChange::EndSession) => UnexplainedCookieChange::EndSession,
            },
        })
    }
}

fn pointer(value: Option<&Text>, default: &str) -> String {
    value.map_or_else(|| default.to_string(), |t| t.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[listener]
address = "127.0.0.1:8080"

[redis]
url = "redis://127.0.0.1:6379"

[session]
cookie = "connect.sid"
id_format = "plain"
idle_timeout = "30m"
absolute_lifetime = "12h"

[[upstreams]]
name = "app"
instances = [{ name = "a", url = "http://127.0.0.1:3001" }]

[[routes]]
upstream = "app"
mode = "redis"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_config(text, Path::new("unstick.toml"))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.store.command_timeout, Duration::from_millis(250));
        assert_eq!(config.identity.headers.user.as_str(), "x-auth-user");
        assert_eq!(config.routes[0].path_prefix, "/");
        assert_eq!(config.upstreams[0].instances[0].authority, "127.0.0.1:3001");
        assert_eq!(config.listener.header_timeout, Duration::from_secs(10));
        assert_eq!(config.listener.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.listener.max_connections, None);
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        let text = MINIMAL.replace(
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\nheader_timeout = \"2s\"\nidle_timeout = \"5s\"\nmax_connections = 50",
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.listener.header_timeout, Duration::from_secs(2));
        assert_eq!(config.listener.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.listener.max_connections, Some(50));
        let message = parse(&text.replace("max_connections = 50", "max_connections = 0"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("unstick.toml:6: `listener.max_connections`"),
            "{message}"
        );
        let message = parse(&text.replace("\"2s\"", "\"0s\""))
            .unwrap_err()
            .to_string();
        assert!(message.contains("listener.header_timeout"), "{message}");
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = MINIMAL.replace("idle_timeout", "idle_timout");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("idle_timout"), "{message}");
        assert!(message.contains("line 11"), "{message}");
    }

    #[test]
    fn bad_reference_names_key_and_line() {
        let text = MINIMAL.replace("upstream = \"app\"", "upstream = \"ap\"");
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("unstick.toml:19: `routes.upstream`"),
            "{message}"
        );
    }

    #[test]
    fn bad_duration_is_named() {
        let text = MINIMAL.replace("\"30m\"", "\"thirty minutes\"");
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.contains("idle_timeout") && message.contains("line 11"),
            "{message}"
        );
    }

    fn with_redis(lines: &str) -> String {
        MINIMAL.replace("url = \"redis://127.0.0.1:6379\"", lines)
    }

    fn refused(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn sentinel_service() {
        let config = parse(&with_redis(
            "sentinels = [\"10.0.0.1:26379\", \"[::1]:26380\"]\nservice_name = \"mymaster\"\n\
             sentinel_password = \"s\"\npassword = \"p\"\ntls = true\nwait_replicas = 1",
        ))
        .unwrap();
        let StoreUrl::Sentinel(target) = &config.store.url else {
            panic!("{:?}", config.store.url)
        };
        assert_eq!(target.service_name, "mymaster");
        assert_eq!(target.sentinels[1].to_string(), "[::1]:26380");
        assert_eq!(target.sentinel_password.as_deref(), Some("s"));
        assert_eq!(target.auth.password.as_deref(), Some("p"));
        assert!(target.auth.tls);
        assert_eq!(config.store.wait_replicas, 1);
        assert_eq!(config.store.wait_timeout, Duration::from_millis(100));
        let shown = config.store.url.redacted();
        assert_eq!(
            shown,
            "sentinel service mymaster via 10.0.0.1:26379, [::1]:26380"
        );
    }

    #[test]
    fn cluster_nodes() {
        let config = parse(&with_redis("cluster_nodes = [\"10.0.0.1:6379\"]")).unwrap();
        assert!(matches!(&config.store.url, StoreUrl::Cluster(t) if t.nodes.len() == 1));
    }

    #[test]
    fn redis_target_errors_name_key_and_line() {
        // Line 6 is the url line of MINIMAL, replaced by the first line below.
        let cases = [
            (
                "sentinels = [\"10.0.0.1:26379\"]",
                "unstick.toml:5: `redis.service_name`",
            ),
            (
                "sentinels = [\"10.0.0.1\"]\nservice_name = \"m\"",
                "unstick.toml:6: `redis.sentinels`: \"10.0.0.1\": no port",
            ),
            (
                "cluster_nodes = [\"a:1\", \"redis://b:2\"]",
                "unstick.toml:6: `redis.cluster_nodes`: \"redis://b:2\": a bare address",
            ),
            (
                "cluster_nodes = []",
                "unstick.toml:6: `redis.cluster_nodes`: list at least one",
            ),
            (
                "cluster_nodes = [\"a:1\", \"a:1\"]",
                "unstick.toml:6: `redis.cluster_nodes`: a:1 is listed twice",
            ),
            (
                "url = \"redis://r:6379\"\ncluster_nodes = [\"a:1\"]",
                "unstick.toml:5: `redis`: set exactly one of",
            ),
            (
                "key_prefix = \"x:\"",
                "unstick.toml:5: `redis`: set exactly one of",
            ),
            (
                "cluster_nodes = [\"a:1\"]\nservice_name = \"m\"",
                "unstick.toml:7: `redis.service_name`: applies only with redis.sentinels",
            ),
            (
                "url = \"redis://r:6379\"\npassword = \"p\"",
                "unstick.toml:7: `redis.password`: with redis.url the credentials go in the URL",
            ),
            (
                "url = \"redis://r:6379\"\ntls = true",
                "unstick.toml:7: `redis.tls`: with redis.url, TLS is chosen by the scheme",
            ),
            (
                "url = \"redis-sentinel://r:26379\"",
                "for Sentinel or Cluster use the keys",
            ),
            (
                "url = \"redis://r:6379\"\nwait_timeout = \"1s\"",
                "unstick.toml:7: `redis.wait_timeout`: applies only with redis.wait_replicas",
            ),
            (
                "url = \"redis://r:6379\"\nwait_replicas = 1\nwait_timeout = \"0s\"",
                "unstick.toml:8: `redis.wait_timeout`: must be between",
            ),
            (
                "url = \"memory://\"\nwait_replicas = 1",
                "unstick.toml:7: `redis.wait_replicas`: memory:// has no replicas",
            ),
        ];
        for (lines, expected) in cases {
            let message = refused(&with_redis(lines));
            assert!(
                message.starts_with(expected) || message.contains(expected),
                "{lines:?}: {message}"
            );
        }
    }

    #[test]
    fn express_signed_needs_secrets() {
        let text = MINIMAL.replace("\"plain\"", "\"express-signed\"");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("session.secrets"), "{message}");
    }
}
