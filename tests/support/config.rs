//! The proxy's config for a test: typed settings rendered as the one TOML file unstick reads.
//! `raw_lines` is the escape hatch for a line the settings cannot say.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A route's migration mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Legacy,
    Overlap,
    Redis,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Legacy => "legacy",
            Mode::Overlap => "overlap",
            Mode::Redis => "redis",
        })
    }
}

/// How the app's session cookie carries the id (`session.id_format` and its `secrets`).
#[derive(Clone, Debug)]
pub enum IdFormat {
    Plain,
    JvmRoute,
    ExpressSigned { secrets: Vec<String> },
    Laravel { app_keys: Vec<String> },
}

/// Where unstick learns who logged in (`[identity.capture]`).
#[derive(Clone, Debug)]
pub enum Capture {
    /// The app's "who am I" page; `user` is the JSON pointer to the user id in its answer.
    Whoami {
        path: String,
        user: Option<String>,
        timeout: Option<String>,
    },
    /// The app's "who am I" HTML page (`whoami_format = "html"`), read with these keys
    /// (`user_selector`, `roles_pattern`, ...).
    WhoamiHtml {
        path: String,
        picks: Vec<(String, String)>,
    },
    /// A response header the app sets on login.
    ResponseHeader(String),
}

impl Capture {
    pub fn whoami(path: &str) -> Capture {
        Capture::Whoami {
            path: path.into(),
            user: None,
            timeout: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ListenerOptions {
    pub trust_forwarded_headers: bool,
    pub header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub max_connections: Option<usize>,
    /// `runtime`: `multi-thread` or `per-core`.
    pub runtime: Option<String>,
    /// `[listener.tls]` on a port the system picks: (certificate file, key file).
    pub tls: Option<(PathBuf, PathBuf)>,
}

/// `[redis]`: a `url`, or `sentinels` with `service_name`, or `cluster_nodes`.
#[derive(Clone, Debug)]
pub struct RedisOptions {
    pub url: Option<String>,
    pub sentinels: Vec<String>,
    pub service_name: Option<String>,
    pub sentinel_password: Option<String>,
    pub cluster_nodes: Vec<String>,
    pub password: Option<String>,
    pub tls: bool,
    pub ca_file: Option<PathBuf>,
    pub key_prefix: String,
    pub connect_timeout: Option<String>,
    pub wait_replicas: Option<u32>,
    pub wait_timeout: Option<String>,
}

#[derive(Clone, Debug)]
pub struct SessionOptions {
    pub cookie: String,
    pub id_format: IdFormat,
    pub idle_timeout: String,
    pub absolute_lifetime: String,
    pub app_cookie_lifetime: Option<String>,
    pub max_sessions_per_user: Option<usize>,
    pub duplicate_cookies: Option<String>,
}

/// `[identity]` beside the capture: header names and the signature.
#[derive(Clone, Debug, Default)]
pub struct IdentityOptions {
    pub user_header: Option<String>,
    pub roles_header: Option<String>,
    pub email_header: Option<String>,
    pub signature_secret: Option<String>,
}

/// The one `[[upstreams]]` entry (`app`) besides its instances.
#[derive(Clone, Debug, Default)]
pub struct UpstreamOptions {
    pub response_timeout: Option<String>,
    /// A previous balancer's sticky cookie: name, and cookie value -> instance name.
    pub lb_cookie: Option<(String, Vec<(String, String)>)>,
    /// Tomcat's jvmRoute suffix -> instance name.
    pub jvm_routes: Vec<(String, String)>,
    pub health_check: Option<HealthCheck>,
}

/// The upstream's active health check.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    pub path: String,
    pub interval: String,
    pub timeout: Option<String>,
}

/// The one `[[routes]]` entry (`/` to `app`) besides its mode.
#[derive(Clone, Debug, Default)]
pub struct RouteOptions {
    pub logout_paths: Vec<String>,
    pub login_paths: Vec<String>,
    /// Names from [`ProxyConfig::old_stores`], asked in this order.
    pub old_stores: Vec<String>,
    pub unexplained_cookie_change: Option<String>,
}

/// An `[[old_stores]]` entry: name, kind and the kind's settings.
#[derive(Clone, Debug)]
pub struct OldStore {
    pub name: String,
    pub kind: String,
    settings: Vec<(String, Value)>,
}

#[derive(Clone, Debug)]
enum Value {
    Text(String),
    List(Vec<String>),
}

impl OldStore {
    pub fn new(name: &str, kind: &str) -> OldStore {
        OldStore {
            name: name.into(),
            kind: kind.into(),
            settings: Vec::new(),
        }
    }

    /// The app's own "who am I" page on the instance the request went to.
    pub fn whoami(name: &str, path: &str) -> OldStore {
        OldStore::new(name, "whoami").with("path", path)
    }

    /// A directory of PHP session files.
    pub fn php_files(name: &str, dir: &Path) -> OldStore {
        OldStore::new(name, "php-files").with("dir", &dir.display().to_string())
    }

    /// A text setting of the store (`timeout`, `user`, `format`, ...).
    pub fn with(mut self, key: &str, value: &str) -> OldStore {
        self.settings.push((key.into(), Value::Text(value.into())));
        self
    }

    /// A list setting of the store (`secret_keys`).
    pub fn with_list(mut self, key: &str, values: &[&str]) -> OldStore {
        let values = values.iter().map(|v| v.to_string()).collect();
        self.settings.push((key.into(), Value::List(values)));
        self
    }
}

/// A config for the proxy under test.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub instances: Vec<(String, SocketAddr)>,
    pub mode: Mode,
    pub listener: ListenerOptions,
    pub redis: RedisOptions,
    pub session: SessionOptions,
    pub identity: IdentityOptions,
    pub capture: Capture,
    pub upstream: UpstreamOptions,
    pub route: RouteOptions,
    pub old_stores: Vec<OldStore>,
    /// `[admin]` on a port the system picks (the token is `UNSTICK_ADMIN_TOKEN`'s).
    pub admin: bool,
    /// Lines written as they are at the end of a table, named by its header (`"[session]"`);
    /// a header the config has not got starts a table of its own at the end.
    pub raw_lines: Vec<(String, String)>,
}

impl ProxyConfig {
    /// Defaults for the bundled legacy app: cookie `demo.sid`, whoami at `/me`. An empty
    /// `redis_url` leaves the target to `redis.sentinels` or `redis.cluster_nodes`.
    pub fn new(redis_url: &str, instances: &[(&str, SocketAddr)]) -> ProxyConfig {
        ProxyConfig {
            instances: instances.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
            mode: Mode::Redis,
            listener: ListenerOptions::default(),
            redis: RedisOptions {
                url: (!redis_url.is_empty()).then(|| redis_url.to_string()),
                sentinels: Vec::new(),
                service_name: None,
                sentinel_password: None,
                cluster_nodes: Vec::new(),
                password: None,
                tls: false,
                ca_file: None,
                key_prefix: "test:".into(),
                connect_timeout: None,
                wait_replicas: None,
                wait_timeout: None,
            },
            session: SessionOptions {
                cookie: "demo.sid".into(),
                id_format: IdFormat::Plain,
                idle_timeout: "30m".into(),
                absolute_lifetime: "12h".into(),
                app_cookie_lifetime: None,
                max_sessions_per_user: None,
                duplicate_cookies: None,
            },
            identity: IdentityOptions::default(),
            capture: Capture::Whoami {
                path: "/me".into(),
                user: Some("/user".into()),
                timeout: None,
            },
            upstream: UpstreamOptions::default(),
            route: RouteOptions {
                logout_paths: vec!["/logout".into()],
                ..RouteOptions::default()
            },
            old_stores: Vec::new(),
            admin: false,
            raw_lines: Vec::new(),
        }
    }

    /// Defaults for [`super::TestApp`] instances: cookie `sid`, whoami at `/whoami`.
    pub fn for_test_app(redis_url: &str, instances: &[(&str, SocketAddr)]) -> ProxyConfig {
        let mut config = ProxyConfig::new(redis_url, instances);
        config.session.cookie = "sid".into();
        config.capture = Capture::whoami("/whoami");
        config
    }

    /// Adds `store` (or replaces the one of its name) and has the route ask it for sessions
    /// unstick does not hold.
    pub fn use_old_store(&mut self, store: OldStore) {
        if !self.route.old_stores.contains(&store.name) {
            self.route.old_stores.push(store.name.clone());
        }
        match self.old_stores.iter_mut().find(|s| s.name == store.name) {
            Some(existing) => *existing = store,
            None => self.old_stores.push(store),
        }
    }

    /// The config file's text. Its first line is a comment and every table is followed by
    /// one empty line: tests name the lines of keys (`idle_timeout` is line 13 by default).
    pub fn to_toml(&self) -> String {
        let mut tables = vec![
            self.listener_table(),
            self.redis_table(),
            self.session_table(),
        ];
        if let Some(identity) = self.identity_table() {
            tables.push(identity);
        }
        tables.push(self.capture_table());
        tables.push(self.upstream_table());
        tables.push(self.route_table());
        for store in &self.old_stores {
            let mut table = Table::new("[[old_stores]]");
            table.text("name", &store.name);
            table.text("kind", &store.kind);
            for (key, value) in &store.settings {
                match value {
                    Value::Text(text) => table.text(key, text),
                    Value::List(list) => table.list(key, list),
                }
            }
            tables.push(table);
        }
        if self.admin {
            let mut table = Table::new("[admin]");
            table.text("address", "127.0.0.1:0");
            tables.push(table);
        }
        for (header, line) in &self.raw_lines {
            match tables.iter_mut().find(|t| &t.header == header) {
                Some(table) => table.lines.push(line.clone()),
                None => {
                    let mut table = Table::new(header);
                    table.lines.push(line.clone());
                    tables.push(table);
                }
            }
        }
        let mut text = String::from("# unstick config written by the test fixtures\n");
        for table in tables {
            text.push_str(&table.header);
            text.push('\n');
            for line in table.lines {
                text.push_str(&line);
                text.push('\n');
            }
            text.push('\n');
        }
        text
    }

    fn listener_table(&self) -> Table {
        let options = &self.listener;
        let mut table = Table::new("[listener]");
        table.text("address", "127.0.0.1:0");
        table.text("shutdown_grace", "10s");
        if options.trust_forwarded_headers {
            table.value("trust_forwarded_headers", "true");
        }
        table.optional_text("header_timeout", &options.header_timeout);
        table.optional_text("idle_timeout", &options.idle_timeout);
        table.optional_text("body_timeout", &options.body_timeout);
        if let Some(max) = options.max_connections {
            table.value("max_connections", &max.to_string());
        }
        table.optional_text("runtime", &options.runtime);
        if let Some((cert, key)) = &options.tls {
            // A sub-table: its lines follow the listener's own keys.
            table.lines.push(String::new());
            table.lines.push("[listener.tls]".into());
            table.text("address", "127.0.0.1:0");
            table.text("cert", &cert.display().to_string());
            table.text("key", &key.display().to_string());
        }
        table
    }

    fn redis_table(&self) -> Table {
        let options = &self.redis;
        let mut table = Table::new("[redis]");
        table.optional_text("url", &options.url);
        table.text("key_prefix", &options.key_prefix);
        if !options.sentinels.is_empty() {
            table.list("sentinels", &options.sentinels);
        }
        table.optional_text("service_name", &options.service_name);
        table.optional_text("sentinel_password", &options.sentinel_password);
        if !options.cluster_nodes.is_empty() {
            table.list("cluster_nodes", &options.cluster_nodes);
        }
        table.optional_text("password", &options.password);
        if options.tls {
            table.value("tls", "true");
        }
        if let Some(ca_file) = &options.ca_file {
            table.text("ca_file", &ca_file.display().to_string());
        }
        table.optional_text("connect_timeout", &options.connect_timeout);
        if let Some(replicas) = options.wait_replicas {
            table.value("wait_replicas", &replicas.to_string());
        }
        table.optional_text("wait_timeout", &options.wait_timeout);
        table
    }

    fn session_table(&self) -> Table {
        let options = &self.session;
        let mut table = Table::new("[session]");
        table.text("cookie", &options.cookie);
        match &options.id_format {
            IdFormat::Plain => table.text("id_format", "plain"),
            IdFormat::JvmRoute => table.text("id_format", "jvm-route"),
            IdFormat::ExpressSigned { secrets } => {
                table.text("id_format", "express-signed");
                table.list("secrets", secrets);
            }
            IdFormat::Laravel { app_keys } => {
                table.text("id_format", "laravel");
                table.list("secrets", app_keys);
            }
        }
        table.text("idle_timeout", &options.idle_timeout);
        table.text("absolute_lifetime", &options.absolute_lifetime);
        table.optional_text("app_cookie_lifetime", &options.app_cookie_lifetime);
        if let Some(max) = options.max_sessions_per_user {
            table.value("max_sessions_per_user", &max.to_string());
        }
        table.optional_text("duplicate_cookies", &options.duplicate_cookies);
        table
    }

    fn identity_table(&self) -> Option<Table> {
        let options = &self.identity;
        let mut table = Table::new("[identity]");
        table.optional_text("user_header", &options.user_header);
        table.optional_text("roles_header", &options.roles_header);
        table.optional_text("email_header", &options.email_header);
        if let Some(secret) = &options.signature_secret {
            table.value("signature", &format!("{{ secret = {} }}", quoted(secret)));
        }
        (!table.lines.is_empty()).then_some(table)
    }

    fn capture_table(&self) -> Table {
        let mut table = Table::new("[identity.capture]");
        match &self.capture {
            Capture::Whoami {
                path,
                user,
                timeout,
            } => {
                table.text("source", "whoami");
                table.text("whoami_path", path);
                table.optional_text("whoami_timeout", timeout);
                table.optional_text("user", user);
            }
            Capture::WhoamiHtml { path, picks } => {
                table.text("source", "whoami");
                table.text("whoami_path", path);
                table.text("whoami_format", "html");
                for (key, value) in picks {
                    table.text(key, value);
                }
            }
            Capture::ResponseHeader(header) => {
                table.text("source", "response-header");
                table.text("response_header", header);
            }
        }
        table
    }

    fn upstream_table(&self) -> Table {
        let options = &self.upstream;
        let mut table = Table::new("[[upstreams]]");
        table.text("name", "app");
        table.lines.push("instances = [".into());
        for (name, address) in &self.instances {
            table.lines.push(format!(
                "  {{ name = {}, url = {} }},",
                quoted(name),
                quoted(&format!("http://{address}"))
            ));
        }
        table.lines.push("]".into());
        table.optional_text("response_timeout", &options.response_timeout);
        if let Some((name, values)) = &options.lb_cookie {
            table.value(
                "lb_cookie",
                &format!("{{ name = {}, values = {} }}", quoted(name), inline(values)),
            );
        }
        if !options.jvm_routes.is_empty() {
            table.value("jvm_routes", &inline(&options.jvm_routes));
        }
        if let Some(check) = &options.health_check {
            let timeout = match &check.timeout {
                Some(timeout) => format!(", timeout = {}", quoted(timeout)),
                None => String::new(),
            };
            table.value(
                "health_check",
                &format!(
                    "{{ path = {}, interval = {}{timeout} }}",
                    quoted(&check.path),
                    quoted(&check.interval)
                ),
            );
        }
        table
    }

    fn route_table(&self) -> Table {
        let options = &self.route;
        let mut table = Table::new("[[routes]]");
        table.text("path_prefix", "/");
        table.text("upstream", "app");
        table.text("mode", &self.mode.to_string());
        if !options.logout_paths.is_empty() {
            table.list("logout_paths", &options.logout_paths);
        }
        if !options.login_paths.is_empty() {
            table.list("login_paths", &options.login_paths);
        }
        if !options.old_stores.is_empty() {
            table.list("old_stores", &options.old_stores);
        }
        table.optional_text(
            "unexplained_cookie_change",
            &options.unexplained_cookie_change,
        );
        table
    }
}

/// One table of the file: its header line and the lines under it.
struct Table {
    header: String,
    lines: Vec<String>,
}

impl Table {
    fn new(header: &str) -> Table {
        Table {
            header: header.into(),
            lines: Vec::new(),
        }
    }

    /// `key = value`, the value written as given (numbers, booleans, inline tables).
    fn value(&mut self, key: &str, value: &str) {
        self.lines.push(format!("{key} = {value}"));
    }

    fn text(&mut self, key: &str, text: &str) {
        self.value(key, &quoted(text));
    }

    fn optional_text(&mut self, key: &str, text: &Option<String>) {
        if let Some(text) = text {
            self.text(key, text);
        }
    }

    fn list(&mut self, key: &str, items: &[String]) {
        let items: Vec<String> = items.iter().map(|i| quoted(i)).collect();
        self.value(key, &format!("[{}]", items.join(", ")));
    }
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An inline table of strings: `{ "key" = "value", ... }`.
fn inline(pairs: &[(String, String)]) -> String {
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{} = {}", quoted(k), quoted(v)))
        .collect();
    format!("{{ {} }}", pairs.join(", "))
}
