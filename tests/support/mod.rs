//! Fixtures for the end-to-end tests: a real `redis-server` per test, real app instances on
//! real sockets, the real `unstick` binary, and an HTTP client.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of the fixtures

pub mod closing_app;
pub mod django;
pub mod laravel;
pub mod load;
pub mod postgres;
pub mod rails;
pub mod redis;
pub mod redis_ha;
pub mod stack_walk;
pub mod test_app;
pub mod tomcat;

use reqwest::header::{COOKIE, SET_COOKIE};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use unstick::demo::{LegacyApp, LegacyAppConfig};

pub use self::closing_app::{ClosingApp, KeepAlive};
pub use self::django::DjangoApp;
pub use self::laravel::LaravelApp;
pub use self::load::{every_user_served, me_as, Outcomes, SessionLoad};
pub use self::postgres::PgDatabase;
pub use self::rails::RailsApp;
pub use self::redis::{connections_received, RedisServer};
pub use self::test_app::TestApp;
pub use self::tomcat::TomcatApp;

/// A loopback port that was free a moment ago (nothing listens on it once this returns).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config for the proxy under test, written out as a real TOML file.
pub struct ProxyConfig {
    pub redis_url: String,
    pub instances: Vec<(String, SocketAddr)>,
    pub cookie: String,
    /// The `id_format` line(s) of `[session]`.
    pub id_format: String,
    pub idle_timeout: String,
    pub absolute_lifetime: String,
    /// The `[identity.capture]` table body.
    pub capture: String,
    /// Extra lines for the `[[upstreams]]` table.
    pub upstream_extra: String,
    /// Extra lines for the `[[routes]]` table.
    pub route_extra: String,
    /// Extra lines for `[redis]`.
    pub redis_extra: String,
    /// The route's migration mode.
    pub mode: String,
    /// Whole tables appended at the end (e.g. `[[old_stores]]`).
    pub extra_tables: String,
    /// Extra lines for `[session]`.
    pub session_extra: String,
    /// Extra lines for `[listener]`.
    pub listener_extra: String,
}

impl ProxyConfig {
    /// Defaults for the bundled legacy app: cookie `demo.sid`, whoami at `/me`.
    pub fn new(redis_url: &str, instances: &[(&str, SocketAddr)]) -> ProxyConfig {
        ProxyConfig {
            redis_url: redis_url.to_string(),
            instances: instances.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
            cookie: "demo.sid".into(),
            id_format: "id_format = \"plain\"".into(),
            idle_timeout: "30m".into(),
            absolute_lifetime: "12h".into(),
            capture: "source = \"whoami\"\nwhoami_path = \"/me\"\nuser = \"/user\"".into(),
            upstream_extra: String::new(),
            route_extra: "logout_paths = [\"/logout\"]".into(),
            redis_extra: String::new(),
            mode: "redis".into(),
            extra_tables: String::new(),
            session_extra: String::new(),
            listener_extra: String::new(),
        }
    }

    /// Defaults for [`TestApp`] instances: cookie `sid`, whoami at `/whoami`.
    pub fn for_test_app(redis_url: &str, instances: &[(&str, SocketAddr)]) -> ProxyConfig {
        let mut config = ProxyConfig::new(redis_url, instances);
        config.cookie = "sid".into();
        config.capture = "source = \"whoami\"\nwhoami_path = \"/whoami\"".into();
        config
    }

    pub fn to_toml(&self) -> String {
        let instances: Vec<String> = self
            .instances
            .iter()
            .map(|(name, addr)| format!("  {{ name = \"{name}\", url = \"http://{addr}\" }},"))
            .collect();
        format!(
            "[listener]\naddress = \"127.0.0.1:0\"\nshutdown_grace = \"10s\"\n{}\n\
             [redis]\n{}key_prefix = \"test:\"\n{}\n\n\
             [session]\ncookie = \"{}\"\n{}\nidle_timeout = \"{}\"\nabsolute_lifetime = \"{}\"\n{}\n\n\
             [identity.capture]\n{}\n\n\
             [[upstreams]]\nname = \"app\"\ninstances = [\n{}\n]\n{}\n\n\
             [[routes]]\npath_prefix = \"/\"\nupstream = \"app\"\nmode = \"{}\"\n{}\n\n{}\n",
            // No line of its own when empty: tests name the lines of later keys.
            if self.listener_extra.is_empty() {
                String::new()
            } else {
                format!("{}\n", self.listener_extra)
            },
            // No url: the target is in redis_extra (sentinels or cluster_nodes).
            match self.redis_url.as_str() {
                "" => String::new(),
                url => format!("url = \"{url}\"\n"),
            },
            self.redis_extra,
            self.cookie,
            self.id_format,
            self.idle_timeout,
            self.absolute_lifetime,
            self.session_extra,
            self.capture,
            instances.join("\n"),
            self.upstream_extra,
            self.mode,
            self.route_extra,
            self.extra_tables,
        )
    }
}

/// The real `unstick serve` process. Its JSON log lines are collected for assertions.
pub struct ProxyProcess {
    child: Child,
    pub address: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    pub async fn start(config: &ProxyConfig) -> ProxyProcess {
        Self::start_toml(&config.to_toml()).await
    }

    pub async fn start_toml(toml: &str) -> ProxyProcess {
        Self::start_with_env(toml, &[]).await
    }

    /// Starts with extra environment variables (e.g. the admin token).
    pub async fn start_with_env(toml: &str, env: &[(&str, &str)]) -> ProxyProcess {
        Self::start_with_open_files(toml, env, None).await
    }

    /// Starts with the open-file limit (soft, hard) set for the process, as a service
    /// manager or shell would set it.
    pub async fn start_with_open_files(
        toml: &str,
        env: &[(&str, &str)],
        open_files: Option<(u64, u64)>,
    ) -> ProxyProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("unstick.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_unstick"));
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((soft, hard)) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
            }
        }
        let mut child = command.spawn().expect("start unstick");
        let logs: Arc<Mutex<Vec<String>>> = Arc::default();
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&line) {
                    if doc["fields"]["message"] == "unstick listening" {
                        if let Some(address) = doc["fields"]["address"].as_str() {
                            let _ =
                                address_tx.send(address.parse::<SocketAddr>().expect("address"));
                        }
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let address =
            tokio::task::spawn_blocking(move || address_rx.recv_timeout(Duration::from_secs(20)))
                .await
                .unwrap()
                .unwrap_or_else(|_| {
                    panic!(
                        "unstick did not start; logs:\n{}",
                        logs.lock().unwrap().join("\n")
                    )
                });
        ProxyProcess {
            child,
            address,
            logs,
            dir,
        }
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("unstick.toml")
    }

    /// Rewrites the config file, sends SIGHUP and waits until the proxy says it reloaded.
    pub async fn reload(&self, config: &ProxyConfig) {
        let reloads_before = self.count_logs("config reloaded");
        std::fs::write(self.config_path(), config.to_toml()).expect("write config");
        signal(self.pid(), "HUP");
        for _ in 0..200 {
            if self.count_logs("config reloaded") > reloads_before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no reload; logs:\n{}", self.logs());
    }

    /// URL on the admin listener (the config must have `[admin] address = "127.0.0.1:0"`).
    pub fn admin_url(&self, path: &str) -> String {
        let logs = self.logs.lock().unwrap();
        let address = logs
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|doc| doc["fields"]["message"] == "admin listening")
            .and_then(|doc| doc["fields"]["address"].as_str().map(String::from))
            .expect("admin listener in the logs");
        format!("http://{address}{path}")
    }

    /// How many log lines so far contain `text`.
    pub fn count_logs(&self, text: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's open-file limit as /proc shows it: (soft, hard).
    pub fn open_file_limit(&self) -> (String, String) {
        let limits =
            std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).expect("proc limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files");
        let mut values = line["Max open files".len()..].split_whitespace();
        (
            values.next().expect("soft").to_string(),
            values.next().expect("hard").to_string(),
        )
    }

    /// How many file descriptors the proxy process has open.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// CPU time the proxy process has used so far (user and system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("proc stat");
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 12th and 13th, in clock ticks (100 per second on Linux).
        let rest = &stat[stat.rfind(')').expect("stat") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    /// Resident memory of the proxy process now, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Peak resident memory of the proxy process so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// `true` until the process has exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit on its own (after a signal sent elsewhere) and returns
    /// its status; panics if it is still running after `within`.
    pub async fn wait_for_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "unstick still running after {within:?}; logs:\n{}",
            self.logs()
        );
    }

    /// Sends SIGTERM (graceful shutdown) and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        self.child.wait().expect("wait")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// The usual stage: a Redis, legacy app instances `a` and `b`, and unstick in front of them
/// with the default config as `edit` leaves it.
pub async fn legacy_pair(
    edit: impl FnOnce(&mut ProxyConfig),
) -> (RedisServer, LegacyApp, LegacyApp, ProxyProcess) {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    edit(&mut config);
    let proxy = ProxyProcess::start(&config).await;
    (redis, a, b, proxy)
}

/// Starts an instance of the bundled legacy app on a free port (or the given address).
pub async fn legacy_app(name: &str) -> LegacyApp {
    legacy_app_with(LegacyAppConfig::new(name), None).await
}

pub async fn legacy_app_with(config: LegacyAppConfig, address: Option<SocketAddr>) -> LegacyApp {
    let address = address.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
    // A restarted instance rebinds its old port; the old socket may linger briefly.
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(address).await {
            return LegacyApp::start(listener, config).await.expect("start app");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot bind {address}");
}

/// Logs in on one app instance directly, as users did before unstick was placed in front.
pub async fn login_directly(app: SocketAddr, user: &str) -> Browser {
    let mut browser = Browser::new();
    browser.login_directly(app, user).await;
    browser
}

/// The route asks the legacy app's instances (`GET /me`) for sessions unstick does not hold.
pub fn whoami_old_store(config: &mut ProxyConfig) {
    config.extra_tables =
        "[[old_stores]]\nname = \"app\"\nkind = \"whoami\"\npath = \"/me\"\ntimeout = \"1s\"\n"
            .into();
    config.route_extra = "logout_paths = [\"/logout\"]\nold_stores = [\"app\"]".into();
}

/// A browser-like client: no redirects followed, cookies kept by hand so tests see them.
pub struct Browser {
    pub http: reqwest::Client,
    pub cookie: Option<String>,
    /// The app's session cookie, the one this browser keeps.
    pub cookie_name: &'static str,
    /// Another cookie sent with every request (`name=value`): a previous balancer's sticky
    /// cookie.
    pub sticky: Option<String>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

impl Browser {
    pub fn new() -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            cookie: None,
            cookie_name: "demo.sid",
            sticky: None,
        }
    }

    /// A browser for an app whose session cookie is `cookie_name`.
    pub fn for_cookie(cookie_name: &'static str) -> Browser {
        Browser {
            cookie_name,
            ..Browser::new()
        }
    }

    fn remember(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap().trim();
            if let Some((n, v)) = pair.split_once('=') {
                if n == self.cookie_name {
                    let cleared = v.is_empty() || text.contains("Max-Age=0");
                    self.cookie = (!cleared).then(|| pair.to_string());
                }
            }
        }
    }

    /// The `Cookie` header this browser sends: the session cookie and the sticky one.
    fn cookie_header(&self) -> Option<String> {
        match (&self.cookie, &self.sticky) {
            (Some(cookie), Some(sticky)) => Some(format!("{cookie}; {sticky}")),
            (cookie, sticky) => cookie.clone().or_else(|| sticky.clone()),
        }
    }

    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.get(url);
        match self.cookie_header() {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        }
    }

    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        let request = self.http.post(url);
        match self.cookie_header() {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        }
    }

    /// Logs in through the app's form (`POST /login`, field `user`); keeps the cookie.
    pub async fn login(&mut self, proxy: &ProxyProcess, user: &str) -> serde_json::Value {
        let response = self
            .post(&proxy.url("/login"))
            .form(&[("user", user)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "login answered {}",
            response.status()
        );
        self.remember(&response);
        assert!(self.cookie.is_some(), "login set no cookie");
        response.json().await.unwrap()
    }

    /// Logs in on one app instance directly, without unstick in front.
    pub async fn login_directly(&mut self, app: SocketAddr, user: &str) {
        let response = self
            .http
            .post(format!("http://{app}/login"))
            .form(&[("user", user)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "login at {app}");
        self.remember(&response);
        assert!(self.cookie.is_some(), "login at {app} set no cookie");
    }

    pub async fn logout(&mut self, proxy: &ProxyProcess) -> reqwest::StatusCode {
        let response = self.post(&proxy.url("/logout")).send().await.unwrap();
        self.remember(&response);
        response.status()
    }

    /// `GET /me`: (status, user, instance). The user is `None` when anonymous.
    pub async fn me(&self, proxy: &ProxyProcess) -> (u16, Option<String>, Option<String>) {
        me_answer(self.get(&proxy.url("/me")).send().await.unwrap()).await
    }

    /// `GET /me` as a browser loads a page: a cookie the answer sets or clears is kept.
    pub async fn refresh(&mut self, proxy: &ProxyProcess) -> (u16, Option<String>, Option<String>) {
        self.visit(proxy, "/me").await
    }

    /// `GET path` (answered like `/me`) as a browser loads a page, keeping the cookie it sets.
    pub async fn visit(
        &mut self,
        proxy: &ProxyProcess,
        path: &str,
    ) -> (u16, Option<String>, Option<String>) {
        let response = self.get(&proxy.url(path)).send().await.unwrap();
        self.remember(&response);
        me_answer(response).await
    }

    /// The session id in the cookie (the value after `<name>=`).
    pub fn cookie_value(&self) -> String {
        self.cookie
            .as_ref()
            .unwrap()
            .split_once('=')
            .unwrap()
            .1
            .to_string()
    }
}

/// The legacy app's answer to `GET /me`: (status, user, instance); the user is `None` when
/// anonymous.
async fn me_answer(response: reqwest::Response) -> (u16, Option<String>, Option<String>) {
    let status = response.status().as_u16();
    if status != 200 {
        return (status, None, None);
    }
    let doc: serde_json::Value = response.json().await.unwrap();
    (
        status,
        doc["user"].as_str().map(String::from),
        doc["instance"].as_str().map(String::from),
    )
}

/// SHA-256 hex of a session id, as unstick keys it.
pub fn session_hash(id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))
}

/// Logs `user` in on a [`TestApp`] through the proxy (user agent `<user>-device`); returns
/// the `sid=...` pair to send as the `Cookie` header.
pub async fn test_app_login(proxy: &ProxyProcess, user: &str) -> String {
    let response = reqwest::Client::new()
        .post(proxy.url(&format!("/login?user={user}")))
        .header("user-agent", format!("{user}-device"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    cookie_set_by(&response)
}

/// The `name=value` pair of the response's (first) `Set-Cookie`, ready to send as `Cookie`.
pub fn cookie_set_by(response: &reqwest::Response) -> String {
    let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap();
    set_cookie.split(';').next().unwrap().trim().to_string()
}

/// Whether `address` refuses new connections within about a second (a listener closing).
pub async fn stops_accepting(address: SocketAddr) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(address).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The JSON body of the answer to `request`.
pub async fn json_of(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// What a [`TestApp`] received for `GET /echo` through the proxy with this `Cookie` header.
pub async fn echo(proxy: &ProxyProcess, cookie: Option<&str>) -> serde_json::Value {
    let mut request = reqwest::Client::new().get(proxy.url("/echo"));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    json_of(request).await
}

/// The user a [`TestApp`] was told about (`X-Auth-User`) for a request with this cookie.
pub async fn user_seen(proxy: &ProxyProcess, cookie: &str) -> Option<String> {
    let echo = echo(proxy, Some(cookie)).await;
    echo["headers"]["x-auth-user"][0].as_str().map(String::from)
}

/// What `unstick serve` said on a config it must refuse.
pub struct RefusedStart {
    pub status: std::process::ExitStatus,
    pub stderr: String,
    /// Where the config file was written (messages name it).
    pub config_path: String,
}

/// Runs `unstick serve --config <file with toml>`; it must exit on its own within 20 s.
pub async fn serve_expecting_exit(toml: &str) -> RefusedStart {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unstick.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_unstick"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            return RefusedStart {
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                config_path: path.display().to_string(),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("unstick accepted the config and kept running:\n{toml}");
}

/// The admin listener's `/metrics` text (the proxy runs with `UNSTICK_ADMIN_TOKEN=token`).
pub async fn admin_metrics(proxy: &ProxyProcess, token: &str) -> String {
    reqwest::Client::new()
        .get(proxy.admin_url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of the samples of `name` whose labels include `labels`, in a Prometheus text scrape.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}
