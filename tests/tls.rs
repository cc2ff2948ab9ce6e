//! TLS at both ends, with certificates made at test time (rcgen): the HTTPS listener (HTTP/1.1
//! and HTTP/2 by ALPN, `X-Forwarded-Proto: https`, certificate reload without restart, a bad
//! certificate refused at start and ignored on reload, graceful shutdown), and sessions in a
//! Redis that speaks only TLS and only to an ACL user (`rediss://user:pass@...` + `ca_file`),
//! and in a TLS-only Sentinel service and Cluster (`tls = true` + `ca_file`).

mod support;

use bytes::Bytes;
use fred::prelude::*;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------------------------
// Certificates.
// ---------------------------------------------------------------------------------------------

/// A test CA that issues server certificates for `localhost` and 127.0.0.1.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// One issued server certificate: PEM texts and the leaf's DER (what a client sees).
struct ServerCert {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "unstick test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    fn issue(&self, common_name: &str, serial: u64) -> ServerCert {
        self.issue_with(
            common_name,
            serial,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    /// For Redis Cluster nodes, which present their certificate as clients too (cluster bus,
    /// replication).
    fn issue_for_node(&self, common_name: &str, serial: u64) -> ServerCert {
        self.issue_with(
            common_name,
            serial,
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }

    fn issue_with(
        &self,
        common_name: &str,
        serial: u64,
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> ServerCert {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.serial_number = Some(serial.into());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A rustls client that trusts only this CA and offers `alpn`.
    fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        TlsConnector::from(Arc::new(config))
    }
}

/// Writes `cert` to `path.cert.pem`/`path.key.pem` the way certbot or a Kubernetes secret
/// update does: a new file renamed over the old one.
fn install(cert: &ServerCert, cert_path: &Path, key_path: &Path) {
    replace_file(key_path, cert.key_pem.as_bytes());
    replace_file(cert_path, cert.cert_pem.as_bytes());
}

fn replace_file(path: &Path, content: &[u8]) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, content).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

// ---------------------------------------------------------------------------------------------
// An HTTPS client: hyper over tokio-rustls (ring), HTTP/1.1 or HTTP/2 by what ALPN chose.
// ---------------------------------------------------------------------------------------------

struct Answer {
    version: Version,
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Bytes,
    /// The protocol ALPN settled on.
    alpn: Option<Vec<u8>>,
    /// The leaf certificate the server presented.
    leaf: CertificateDer<'static>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers.get_all(SET_COOKIE).iter().find_map(|v| {
            let pair = v.to_str().ok()?.split(';').next()?.to_string();
            pair.starts_with(&format!("{name}=")).then_some(pair)
        })
    }
}

/// A TLS handshake with `address` as `localhost`: the stream, or the handshake error.
async fn handshake(
    connector: &TlsConnector,
    address: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// One request on a fresh TLS connection.
async fn https(
    connector: &TlsConnector,
    address: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> Answer {
    let stream = handshake(connector, address).await.expect("TLS handshake");
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(|p| p.to_vec());
    let leaf = session.peer_certificates().expect("server certificate")[0].clone();
    let h2 = alpn.as_deref() == Some(b"h2".as_slice());
    let mut request = Request::builder()
        .method(method)
        // HTTP/2 takes the authority from the URI, HTTP/1.1 from Host.
        .uri(if h2 {
            format!("https://localhost:{}{path}", address.port())
        } else {
            path.to_string()
        });
    if !h2 {
        request = request.header(HOST, format!("localhost:{}", address.port()));
    }
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    if form.is_some() {
        request = request.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
    }
    let request = request
        .body(Full::new(Bytes::from(form.unwrap_or("").to_string())))
        .unwrap();
    let io = TokioIo::new(stream);
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        sender.send_request(request).await.unwrap()
    };
    let version = response.version();
    let status = response.status();
    let headers = response.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(30), response.into_body().collect())
        .await
        .expect("body within 30 s")
        .unwrap()
        .to_bytes();
    Answer {
        version,
        status,
        headers,
        body,
        alpn,
        leaf,
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy with an HTTPS listener.
// ---------------------------------------------------------------------------------------------

/// A proxy with `[listener.tls]` on a free port, its certificate files, and the HTTPS address
/// it logged.
struct HttpsProxy {
    proxy: ProxyProcess,
    https: SocketAddr,
    cert_path: PathBuf,
    key_path: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start_https(mut config: ProxyConfig, cert: &ServerCert) -> HttpsProxy {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("server.crt");
    let key_path = dir.path().join("server.key");
    install(cert, &cert_path, &key_path);
    config.listener.tls = Some((cert_path.clone(), key_path.clone()));
    let proxy = ProxyProcess::start(&config).await;
    // Logged before "unstick listening", which start() waited for.
    let https = proxy
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|doc| doc["fields"]["message"] == "unstick listening (https)")
        .and_then(|doc| doc["fields"]["address"].as_str()?.parse().ok())
        .unwrap_or_else(|| panic!("no https listener; logs:\n{}", proxy.logs()));
    HttpsProxy {
        proxy,
        https,
        cert_path,
        key_path,
        _dir: dir,
    }
}

fn test_app_config(redis: &RedisServer, app: SocketAddr) -> ProxyConfig {
    ProxyConfig::for_test_app(&redis.url(), &[("t", app)])
}

#[tokio::test]
async fn https_over_http1_logs_in_to_the_legacy_app() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let ca = TestCa::new();
    let server = start_https(
        ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]),
        &ca.issue("unstick test", 1),
    )
    .await;
    let client = ca.client(&[b"http/1.1"]);

    let login = https(
        &client,
        server.https,
        "POST",
        "/login",
        None,
        Some("user=alice"),
    )
    .await;
    assert_eq!(login.alpn.as_deref(), Some(b"http/1.1".as_slice()));
    assert_eq!(login.version, Version::HTTP_11);
    assert_eq!(login.status, 200, "{:?}", login.body);
    assert_eq!(login.json()["user"], "alice");
    let cookie = login.set_cookie("demo.sid").expect("session cookie");

    // Each request on a new connection: round robin reaches both instances, the session
    // (in Redis) holds on both.
    let mut instances = std::collections::HashSet::new();
    for _ in 0..4 {
        let me = https(&client, server.https, "GET", "/me", Some(&cookie), None).await;
        assert_eq!(me.status, 200);
        assert_eq!(me.json()["user"], "alice");
        instances.insert(me.json()["instance"].as_str().unwrap().to_string());
    }
    assert_eq!(instances.len(), 2, "{instances:?}");
    assert_eq!(redis.keys("test:s:*").await.len(), 1);

    // The plain listener is still there and sees the same session.
    let plain = reqwest::Client::new()
        .get(server.proxy.url("/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = plain.json().await.unwrap();
    assert_eq!(doc["user"], "alice");
}

#[tokio::test]
async fn alpn_h2_serves_http2() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let ca = TestCa::new();
    let server = start_https(
        ProxyConfig::new(&redis.url(), &[("a", a.address)]),
        &ca.issue("unstick test", 1),
    )
    .await;
    // A browser offers both; the proxy prefers h2.
    let client = ca.client(&[b"h2", b"http/1.1"]);

    let login = https(
        &client,
        server.https,
        "POST",
        "/login",
        None,
        Some("user=bob"),
    )
    .await;
    assert_eq!(login.alpn.as_deref(), Some(b"h2".as_slice()));
    assert_eq!(login.version, Version::HTTP_2);
    assert_eq!(login.status, 200, "{:?}", login.body);
    let cookie = login.set_cookie("demo.sid").expect("session cookie");

    let me = https(&client, server.https, "GET", "/me", Some(&cookie), None).await;
    assert_eq!(me.version, Version::HTTP_2);
    assert_eq!(
        (me.status, me.json()["user"].clone()),
        (StatusCode::OK, "bob".into())
    );
}

#[tokio::test]
async fn the_app_is_told_the_client_came_over_https() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let ca = TestCa::new();
    let server = start_https(
        test_app_config(&redis, app.address),
        &ca.issue("unstick test", 1),
    )
    .await;

    for alpn in [b"http/1.1".as_slice(), b"h2".as_slice()] {
        let client = ca.client(&[alpn]);
        let echo = https(&client, server.https, "GET", "/echo", None, None).await;
        assert_eq!(echo.status, 200);
        let headers = &echo.json()["headers"];
        assert_eq!(
            headers["x-forwarded-proto"],
            serde_json::json!(["https"]),
            "{headers}"
        );
    }
    // And http on the plain listener.
    let plain: serde_json::Value = reqwest::get(server.proxy.url("/echo"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        plain["headers"]["x-forwarded-proto"],
        serde_json::json!(["http"])
    );
}

/// Handshakes until the server presents `expected`, for at most `within`.
async fn wait_for_certificate(
    client: &TlsConnector,
    server: &HttpsProxy,
    expected: &CertificateDer<'static>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(stream) = handshake(client, server.https).await {
            let served = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
            if &served == expected {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within {within:?}; logs:\n{}",
            server.proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_replaced_certificate_is_served_without_restart_and_a_bad_one_is_ignored() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let ca = TestCa::new();
    let first = ca.issue("unstick first", 1);
    let server = start_https(ProxyConfig::new(&redis.url(), &[("a", a.address)]), &first).await;
    let client = ca.client(&[b"http/1.1"]);
    let pid = server.proxy.pid();

    let answer = https(&client, server.https, "GET", "/me", None, None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.leaf, first.der);

    // Renewal: a new key and certificate (other CN and serial) replace the files.
    let second = ca.issue("unstick second", 2);
    assert_ne!(second.der, first.der);
    install(&second, &server.cert_path, &server.key_path);
    wait_for_certificate(&client, &server, &second.der, Duration::from_secs(20)).await;
    assert!(server.proxy.count_logs("TLS certificate reloaded") >= 1);
    let answer = https(&client, server.https, "GET", "/me", None, None).await;
    assert_eq!((answer.status, &answer.leaf), (StatusCode::OK, &second.der));

    // A broken certificate file is refused with an error naming it; the last good pair stays.
    let failures_before = server.proxy.count_logs("TLS certificate reload failed");
    replace_file(
        &server.cert_path,
        b"-----BEGIN CERTIFICATE-----\nnot base64\n",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.proxy.count_logs("TLS certificate reload failed") == failures_before {
        assert!(
            Instant::now() < deadline,
            "no reload error logged; logs:\n{}",
            server.proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error_line = server
        .proxy
        .logs()
        .lines()
        .rev()
        .find(|l| l.contains("TLS certificate reload failed"))
        .unwrap()
        .to_string();
    assert!(error_line.contains("server.crt"), "{error_line}");
    let answer = https(&client, server.https, "GET", "/me", None, None).await;
    assert_eq!((answer.status, &answer.leaf), (StatusCode::OK, &second.der));

    // A key that belongs to another certificate is refused too.
    let third = ca.issue("unstick third", 3);
    let stray = ca.issue("unstick stray", 4);
    let failures_before = server.proxy.count_logs("TLS certificate reload failed");
    replace_file(&server.key_path, stray.key_pem.as_bytes());
    replace_file(&server.cert_path, third.cert_pem.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server
        .proxy
        .count_logs("does not belong to the certificate")
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "no mismatch error logged; logs:\n{}",
            server.proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.proxy.count_logs("TLS certificate reload failed") > failures_before);
    let answer = https(&client, server.https, "GET", "/me", None, None).await;
    assert_eq!((answer.status, &answer.leaf), (StatusCode::OK, &second.der));

    // Fixing the files brings the new pair in, still the same process.
    install(&third, &server.cert_path, &server.key_path);
    wait_for_certificate(&client, &server, &third.der, Duration::from_secs(20)).await;
    assert_eq!(server.proxy.pid(), pid);
}

#[tokio::test]
async fn an_unusable_certificate_stops_the_start_naming_the_file() {
    let ca = TestCa::new();
    let good = ca.issue("unstick test", 1);
    let other = ca.issue("unstick other", 2);
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("site.crt");
    let key = dir.path().join("site.key");
    let config = |cert: &Path, key: &Path| -> String {
        let mut config = ProxyConfig::new("memory://", &[("a", "127.0.0.1:9".parse().unwrap())]);
        config.listener.tls = Some((cert.to_path_buf(), key.to_path_buf()));
        config.to_toml()
    };

    // Missing.
    let missing = dir.path().join("missing.crt");
    std::fs::write(&key, &good.key_pem).unwrap();
    let RefusedStart { status, stderr, .. } = serve_expecting_exit(&config(&missing, &key)).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot read TLS certificate file") && stderr.contains("missing.crt"),
        "{stderr}"
    );

    // Not PEM.
    std::fs::write(&cert, "hello").unwrap();
    let RefusedStart { status, stderr, .. } = serve_expecting_exit(&config(&cert, &key)).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("invalid TLS certificate file") && stderr.contains("site.crt"),
        "{stderr}"
    );

    // A certificate where the key should be.
    std::fs::write(&cert, &good.cert_pem).unwrap();
    std::fs::write(&key, &good.cert_pem).unwrap();
    let RefusedStart { status, stderr, .. } = serve_expecting_exit(&config(&cert, &key)).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("invalid TLS key file") && stderr.contains("site.key"),
        "{stderr}"
    );

    // A key of another certificate.
    std::fs::write(&key, &other.key_pem).unwrap();
    let RefusedStart { status, stderr, .. } = serve_expecting_exit(&config(&cert, &key)).await;
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("does not belong") && stderr.contains("site.key"),
        "{stderr}"
    );
}

#[tokio::test]
async fn sigterm_lets_an_https_request_in_flight_finish() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let ca = TestCa::new();
    let mut server = start_https(
        test_app_config(&redis, app.address),
        &ca.issue("unstick test", 1),
    )
    .await;
    let address = server.https;

    // One request in flight over each protocol.
    let h1 = ca.client(&[b"http/1.1"]);
    let h2 = ca.client(&[b"h2"]);
    let slow_h1 =
        tokio::spawn(async move { https(&h1, address, "GET", "/slow?ms=2000", None, None).await });
    let slow_h2 =
        tokio::spawn(async move { https(&h2, address, "GET", "/slow?ms=2000", None, None).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!slow_h1.is_finished() && !slow_h2.is_finished());

    signal(server.proxy.pid(), "TERM");
    let refused = stops_accepting(address).await;
    assert!(refused, "https still accepting connections after SIGTERM");

    for slow in [slow_h1, slow_h2] {
        let answer = slow.await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "slow answer");
    }
    let exit = server.proxy.wait_for_exit(Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0), "logs:\n{}", server.proxy.logs());
}

// ---------------------------------------------------------------------------------------------
// Redis over TLS with an ACL user.
// ---------------------------------------------------------------------------------------------

/// A `redis-server` that listens only on a TLS port and knows only the ACL user `app`
/// (password `secret`); the default user is off.
struct TlsRedis {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl TlsRedis {
    fn start(ca: &TestCa) -> TlsRedis {
        let dir = tempfile::tempdir().unwrap();
        let server = ca.issue("redis", 10);
        let write = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path.to_str().unwrap().to_string()
        };
        let cert = write("redis.crt", &server.cert_pem);
        let key = write("redis.key", &server.key_pem);
        let ca_file = write("ca.crt", &ca.pem());
        let acl = write(
            "users.acl",
            "user default off\nuser app on >secret ~* &* +@all\n",
        );
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--dir", dir.path().to_str().unwrap()])
                .args(["--tls-cert-file", &cert, "--tls-key-file", &key])
                .args(["--tls-ca-cert-file", &ca_file, "--tls-auth-clients", "no"])
                .args(["--aclfile", &acl])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed");
            for _ in 0..100 {
                if let Ok(Some(status)) = child.try_wait() {
                    // A redis-server built without TLS refuses the --tls-* options.
                    assert!(
                        !status.success(),
                        "redis-server exited at once: built without TLS?"
                    );
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return TlsRedis { port, child, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start redis-server with TLS (is it built with TLS support?)");
    }

    fn url(&self) -> String {
        format!("rediss://app:secret@127.0.0.1:{}", self.port)
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A client as `app` over TLS, for assertions.
    async fn client(&self, ca: &TestCa) -> Client {
        let mut config =
            Config::from_url(&format!("redis://app:secret@127.0.0.1:{}", self.port)).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.tls = Some(fred::types::config::TlsConnector::from(tls).into());
        let client = Client::new(config, None, None, None);
        client.init().await.expect("connect to the TLS redis");
        client
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sessions_reach_a_redis_over_tls_as_an_acl_user() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(&ca);
    let a = legacy_app("a").await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address)]);
    config.redis.ca_file = Some(redis.ca_file());
    let proxy = ProxyProcess::start(&config).await;
    assert!(
        proxy.count_logs("connected to Redis") >= 1,
        "logs:\n{}",
        proxy.logs()
    );
    assert!(!proxy.logs().contains("secret"), "password in the logs");

    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    let (status, user, _) = alice.me(&proxy).await;
    assert_eq!((status, user.as_deref()), (200, Some("alice")));

    // The session is in that Redis, which only TLS clients logged in as `app` can reach.
    let client = redis.client(&ca).await;
    let keys: Vec<String> = client
        .custom(fred::cmd!("KEYS"), vec!["test:s:*"])
        .await
        .unwrap();
    assert_eq!(
        keys,
        vec![format!("test:s:{}", session_hash(&alice.cookie_value()))]
    );
    let stored: Option<String> = client.get(&keys[0]).await.unwrap();
    let record = stored_record(stored).unwrap();
    assert!(record.contains("\"u\":\"alice\""), "{record}");
    // Every client connection there, the proxy's pool included, is the ACL user.
    let clients: String = client
        .custom(fred::cmd!("CLIENT"), vec!["LIST"])
        .await
        .unwrap();
    assert!(clients.lines().count() >= 2, "{clients}");
    assert!(
        clients.lines().all(|l| l.contains(" user=app ")),
        "{clients}"
    );
}

#[tokio::test]
async fn rediss_without_the_right_ca_does_not_connect() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(&ca);
    let a = legacy_app("a").await;
    // Another CA's bundle: the Redis certificate cannot be verified.
    let stranger = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let wrong_ca = dir.path().join("other-ca.crt");
    std::fs::write(&wrong_ca, stranger.pem()).unwrap();
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address)]);
    config.redis.ca_file = Some(wrong_ca.clone());
    config.redis.connect_timeout = Some("500ms".into());
    let proxy = ProxyProcess::start(&config).await;
    assert_eq!(
        proxy.count_logs("connected to Redis"),
        0,
        "{}",
        proxy.logs()
    );
    assert!(proxy.count_logs("Redis not reachable yet") >= 1);

    // An unreadable CA file stops the start, naming the file.
    config.redis.ca_file = Some("/nonexistent/ca.pem".into());
    let RefusedStart { status, stderr, .. } = serve_expecting_exit(&config.to_toml()).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("/nonexistent/ca.pem"), "{stderr}");
}

/// Certificate, key and CA files for Redis nodes, written to `dir`.
fn node_tls_files(ca: &TestCa, dir: &Path) -> support::redis_ha::TlsFiles {
    let server = ca.issue_for_node("redis-node", 20);
    let files = support::redis_ha::TlsFiles {
        cert: dir.join("redis.crt"),
        key: dir.join("redis.key"),
        ca: dir.join("ca.crt"),
    };
    std::fs::write(&files.cert, &server.cert_pem).unwrap();
    std::fs::write(&files.key, &server.key_pem).unwrap();
    std::fs::write(&files.ca, ca.pem()).unwrap();
    files
}

#[tokio::test]
async fn sessions_reach_a_sentinel_service_over_tls() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let files = node_tls_files(&ca, dir.path());
    let service = support::redis_ha::RedisSentinel::start_with(None, Some(files.clone())).await;
    let a = legacy_app("a").await;
    let mut config = ProxyConfig::new("", &[("a", a.address)]);
    config.redis.sentinels = service.sentinel_addresses();
    config.redis.service_name = Some(support::redis_ha::SERVICE.into());
    config.redis.tls = true;
    config.redis.ca_file = Some(files.ca.clone());
    let proxy = ProxyProcess::start(&config).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    let (status, user, _) = alice.me(&proxy).await;
    assert_eq!((status, user.as_deref()), (200, Some("alice")));
    let key = format!("test:s:{}", session_hash(&alice.cookie_value()));
    assert_eq!(service.master.cli(&["EXISTS", &key]).await.trim(), "1");
}

#[tokio::test]
async fn sessions_reach_a_redis_cluster_over_tls() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let files = node_tls_files(&ca, dir.path());
    let cluster = support::redis_ha::RedisCluster::start_with(Some(files.clone())).await;
    let a = legacy_app("a").await;
    let mut config = ProxyConfig::new("", &[("a", a.address)]);
    config.redis.cluster_nodes = cluster.seeds();
    config.redis.tls = true;
    config.redis.ca_file = Some(files.ca.clone());
    let proxy = ProxyProcess::start(&config).await;

    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    let (status, user, _) = alice.me(&proxy).await;
    assert_eq!((status, user.as_deref()), (200, Some("alice")));
    let key = format!("test:s:{}", session_hash(&alice.cookie_value()));
    let mut found = 0;
    for port in cluster.master_ports().await {
        found += cluster
            .cli(port, &["EXISTS", &key])
            .await
            .trim()
            .parse::<u32>()
            .unwrap_or(0);
    }
    assert_eq!(found, 1, "the session is on one master of the TLS cluster");

    // Without tls the nodes do not answer: TLS is what was used.
    config.redis.tls = false;
    config.redis.ca_file = None;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unstick.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_unstick"))
        .args(["check", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("error    redis: cannot reach Redis at cluster via"),
        "{report}"
    );
}
