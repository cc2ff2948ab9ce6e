//! Fixtures for the end-to-end tests: a real `redis-server` per test, real app instances on
//! real sockets, unstick in the test process or as the real binary, and an HTTP client.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of the fixtures

pub mod browser;
pub mod closing_app;
pub mod config;
pub mod django;
pub mod laravel;
pub mod load;
pub mod postgres;
pub mod process;
pub mod rails;
pub mod redis;
pub mod redis_ha;
pub mod server;
pub mod stack_walk;
pub mod test_app;
pub mod tomcat;

use reqwest::header::{COOKIE, SET_COOKIE};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use unstick::demo::{LegacyApp, LegacyAppConfig};

pub use self::browser::HeadlessChromium;
pub use self::closing_app::{ClosingApp, KeepAlive};
pub use self::config::{
    Capture, HealthCheck, IdFormat, IdentityOptions, ListenerOptions, Mode, OldStore, ProxyConfig,
    RedisOptions, RouteOptions, SessionOptions, UpstreamOptions,
};
pub use self::django::DjangoApp;
pub use self::laravel::LaravelApp;
pub use self::load::{every_user_served, me_as, Outcomes, SessionLoad};
pub use self::postgres::PgDatabase;
pub use self::process::{
    run_unstick, serve_expecting_exit, signal, CommandRun, OneShot, ProxyProcess, RefusedStart,
};
pub use self::rails::RailsApp;
pub use self::redis::{connections_received, RedisServer};
pub use self::server::{start_server, TestServer};
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

/// A running proxy, in the test process ([`TestServer`]) or the binary ([`ProxyProcess`]):
/// what the helpers need of either.
pub trait RunningProxy {
    fn address(&self) -> SocketAddr;

    fn log_lines(&self) -> &LogLines;

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address(), path)
    }

    /// Every log line so far, one JSON document a line.
    fn logs(&self) -> String {
        self.log_lines().text()
    }

    /// How many log lines so far contain `text`.
    fn count_logs(&self, text: &str) -> usize {
        self.log_lines().count(text)
    }
}

/// A proxy shared between tasks.
impl<P: RunningProxy> RunningProxy for Arc<P> {
    fn address(&self) -> SocketAddr {
        self.as_ref().address()
    }

    fn log_lines(&self) -> &LogLines {
        self.as_ref().log_lines()
    }
}

/// A proxy's JSON log lines, as `unstick --log-format json` writes them, kept for assertions.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<String>>>);

impl LogLines {
    pub fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }

    pub fn count(&self, text: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(text))
            .count()
    }

    /// A subscriber that formats as the binary does at `RUST_LOG=info` and keeps the lines here.
    pub fn dispatch(&self) -> tracing::Dispatch {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .json()
            .with_writer(self.clone())
            .finish();
        tracing::Dispatch::new(subscriber)
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogLines {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter {
            lines: self.clone(),
            buffer: Vec::new(),
        }
    }
}

/// Collects one event's output; its lines are kept when it is dropped.
pub struct LogWriter {
    lines: LogLines,
    buffer: Vec<u8>,
}

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.buffer).lines() {
            self.lines.push(line.to_string());
        }
    }
}

/// The usual stage: a Redis, legacy app instances `a` and `b`, and unstick (in the test
/// process) in front of them with the default config as `edit` leaves it.
pub async fn legacy_pair(
    edit: impl FnOnce(&mut ProxyConfig),
) -> (RedisServer, LegacyApp, LegacyApp, TestServer) {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    edit(&mut config);
    let proxy = start_server(&config).await;
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
    config.use_old_store(OldStore::whoami("app", "/me").with("timeout", "1s"));
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
    pub async fn login(&mut self, proxy: &impl RunningProxy, user: &str) -> serde_json::Value {
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

    pub async fn logout(&mut self, proxy: &impl RunningProxy) -> reqwest::StatusCode {
        let response = self.post(&proxy.url("/logout")).send().await.unwrap();
        self.remember(&response);
        response.status()
    }

    /// `GET /me`: (status, user, instance). The user is `None` when anonymous.
    pub async fn me(&self, proxy: &impl RunningProxy) -> (u16, Option<String>, Option<String>) {
        me_answer(self.get(&proxy.url("/me")).send().await.unwrap()).await
    }

    /// Waits until `GET /me` through `proxy` answers as nobody: another proxy's change
    /// reaches this one's near cache through Redis, a moment later.
    pub async fn until_anonymous(&self, proxy: &impl RunningProxy, what: &str) {
        let started = std::time::Instant::now();
        loop {
            let (status, user, _) = self.me(proxy).await;
            if (status, user.as_deref()) == (200, None) {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{what}: still answered {status} as {user:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `GET /me` as a browser loads a page: a cookie the answer sets or clears is kept.
    pub async fn refresh(
        &mut self,
        proxy: &impl RunningProxy,
    ) -> (u16, Option<String>, Option<String>) {
        self.visit(proxy, "/me").await
    }

    /// `GET path` (answered like `/me`) as a browser loads a page, keeping the cookie it sets.
    pub async fn visit(
        &mut self,
        proxy: &impl RunningProxy,
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

/// A session id's (or user id's) hash as unstick names keys by it: the first 128 bits of its
/// SHA-256 in base64url.
pub fn session_hash(id: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(id.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// The whole SHA-256 in hex, as earlier versions named keys and listed sessions.
pub fn legacy_session_hash(id: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(id.as_bytes()))
}

/// The JSON record in a session key's value (after the digits of its last renewal); `None`
/// for no key or a session that ended.
pub fn stored_record(value: Option<String>) -> Option<String> {
    value.and_then(|v| {
        v.get(10..)
            .filter(|json| json.starts_with('{'))
            .map(String::from)
    })
}

/// The last renewal (Unix seconds) in a session key's value: its first 10 digits.
pub fn stored_seen(value: Option<String>) -> Option<u64> {
    value.and_then(|v| v.get(..10).and_then(|digits| digits.parse().ok()))
}

/// Logs `user` in on a [`TestApp`] through the proxy (user agent `<user>-device`); returns
/// the `sid=...` pair to send as the `Cookie` header.
pub async fn test_app_login(proxy: &impl RunningProxy, user: &str) -> String {
    test_app_login_from(proxy, user, &format!("{user}-device")).await
}

/// [`test_app_login`] from a client that sends `user_agent`.
pub async fn test_app_login_from(
    proxy: &impl RunningProxy,
    user: &str,
    user_agent: &str,
) -> String {
    let response = reqwest::Client::new()
        .post(proxy.url(&format!("/login?user={user}")))
        .header("user-agent", user_agent)
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
pub async fn echo(proxy: &impl RunningProxy, cookie: Option<&str>) -> serde_json::Value {
    let mut request = reqwest::Client::new().get(proxy.url("/echo"));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    json_of(request).await
}

/// Sends `request` in the background: a request under way while the test does something else.
pub fn in_flight(request: reqwest::RequestBuilder) -> tokio::task::JoinHandle<reqwest::Response> {
    tokio::spawn(async move { request.send().await.unwrap() })
}

/// The user of this [`TestApp`] session changes their password: the app answers with
/// `X-Unstick-Logout-All`, which asks unstick to end every session of that user.
pub async fn log_out_everywhere(proxy: &impl RunningProxy, cookie: &str) -> reqwest::Response {
    let response = reqwest::Client::new()
        .post(proxy.url("/password-changed"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// The user a [`TestApp`] was told about (`X-Auth-User`) for a request with this cookie.
pub async fn user_seen(proxy: &impl RunningProxy, cookie: &str) -> Option<String> {
    let echo = echo(proxy, Some(cookie)).await;
    echo["headers"]["x-auth-user"][0].as_str().map(String::from)
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

/// Uses the session through `proxy` (`UNSTICK_ADMIN_TOKEN=token`) until the proxy answers it
/// from its near cache (its hit counter moves).
pub async fn until_near_cached(proxy: &ProxyProcess, token: &str, cookie: &str, user: &str) {
    let hits = || async {
        let text = admin_metrics(proxy, token).await;
        metric(&text, "unstick_near_cache_hits_total", &[])
    };
    let before = hits().await;
    let started = std::time::Instant::now();
    loop {
        assert_eq!(user_seen(proxy, cookie).await.as_deref(), Some(user));
        if hits().await > before {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{user}'s session never cached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls (bounded) until `proxy` no longer passes the session's user to the app.
pub async fn until_refused(proxy: &impl RunningProxy, cookie: &str, what: &str) {
    let started = std::time::Instant::now();
    while user_seen(proxy, cookie).await.is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: the session is still served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
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
