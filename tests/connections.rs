//! Client connections that say nothing, or nothing more: closed after the header timeout
//! (plain, h2c, TLS) or the idle timeout (HTTP/1.1 keep-alive, HTTP/2), idle keep-alive
//! connections parked without their buffers and served again, a cap on open connections that
//! keeps the admin listener answering and the accept loop quiet, and the open-file limit
//! raised at start.

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "test-admin-token-0123456789";
/// The generous bound for "closed by a 1 s timeout".
const CLOSE_BOUND: Duration = Duration::from_secs(6);
/// The HTTP/2 client preface and an empty SETTINGS frame: all an h2c client sends first.
const H2_PREFACE_AND_SETTINGS: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

/// The test process runs many sockets at once across tests: give it its hard limit.
fn raise_own_open_file_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

/// The client listener's header and idle timeouts.
fn timeouts(header: &str, idle: &str) -> ListenerOptions {
    ListenerOptions {
        header_timeout: Some(header.into()),
        idle_timeout: Some(idle.into()),
        ..ListenerOptions::default()
    }
}

async fn stage(listener: ListenerOptions, admin: bool) -> (RedisServer, TestApp, ProxyProcess) {
    raise_own_open_file_limit();
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.listener = listener;
    config.admin = admin;
    let proxy =
        ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await;
    (redis, app, proxy)
}

/// The value of an unlabelled (or exactly labelled) sample in the admin's `/metrics`.
async fn metric(proxy: &ProxyProcess, sample: &str) -> f64 {
    let text = admin_metrics(proxy, TOKEN).await;
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
}

/// Opens `count` connections to `address`, each sending `first` (maybe nothing) and then
/// nothing more.
async fn open_quiet(address: SocketAddr, count: usize, first: &'static [u8]) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        if !first.is_empty() {
            stream.write_all(first).await.expect("write");
        }
        streams.push(stream);
    }
    streams
}

/// Waits for the server to close each stream (EOF or reset); returns how many it closed within
/// `bound` and when the last of those closed.
async fn closed_within(streams: Vec<TcpStream>, bound: Duration) -> (usize, Duration) {
    let started = Instant::now();
    let waits: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let closed = tokio::time::timeout_at((started + bound).into(), async {
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(_) => {} // h2c: the server's SETTINGS and GOAWAY
                        }
                    }
                })
                .await
                .is_ok();
                closed.then(|| started.elapsed())
            })
        })
        .collect();
    let mut count = 0;
    let mut last = Duration::ZERO;
    for wait in waits {
        if let Some(at) = wait.await.unwrap() {
            count += 1;
            last = last.max(at);
        }
    }
    (count, last)
}

async fn get_status(url: &str) -> u16 {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_header_timeout() {
    let (_redis, _app, proxy) = stage(timeouts("1s", "30s"), false).await;

    let mut streams = open_quiet(proxy.address, 200, b"").await;
    let plain = streams.len();
    // h2c: the preface and SETTINGS, then nothing.
    streams.extend(open_quiet(proxy.address, 50, H2_PREFACE_AND_SETTINGS).await);
    // Half a request head, then nothing (slowloris).
    streams.extend(open_quiet(proxy.address, 50, b"GET /echo HTTP/1.1\r\nHost: x\r\n").await);
    let total = streams.len();
    let (closed, last) = closed_within(streams, CLOSE_BOUND).await;
    println!("{closed} of {total} quiet connections ({plain} silent, 50 h2c, 50 half heads) closed, the last after {last:?}");
    assert_eq!(
        closed, total,
        "quiet connections left open past {CLOSE_BOUND:?}"
    );

    // The proxy serves as before.
    assert_eq!(get_status(&proxy.url("/echo")).await, 200);
}

/// A CA and a leaf for `localhost`, as PEM files in `dir`; returns a client that trusts the CA.
fn certificates(dir: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Where the proxy's HTTPS listener listens, from its start-up log.
fn https_address(proxy: &ProxyProcess) -> SocketAddr {
    proxy
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|doc| doc["fields"]["message"] == "unstick listening (https)")
        .and_then(|doc| doc["fields"]["address"].as_str()?.parse().ok())
        .expect("https listener")
}

/// A TLS connection to `localhost` at `address`, handshake done.
async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    address: SocketAddr,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(address).await.unwrap();
    let server_name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(server_name, tcp)
        .await
        .expect("handshake")
}

/// The proxy with an HTTPS listener (a fresh CA and a leaf for `localhost`), a client that
/// trusts it, and where it listens.
struct TlsStage {
    connector: tokio_rustls::TlsConnector,
    https: SocketAddr,
    proxy: ProxyProcess,
    _redis: RedisServer,
    _app: TestApp,
    _certificates: tempfile::TempDir,
}

async fn stage_tls(header_timeout: &str, idle_timeout: &str, admin: bool) -> TlsStage {
    let dir = tempfile::tempdir().unwrap();
    let connector = certificates(dir.path());
    let listener = ListenerOptions {
        tls: Some((dir.path().join("cert.pem"), dir.path().join("key.pem"))),
        ..timeouts(header_timeout, idle_timeout)
    };
    let (redis, app, proxy) = stage(listener, admin).await;
    TlsStage {
        connector,
        https: https_address(&proxy),
        proxy,
        _redis: redis,
        _app: app,
        _certificates: dir,
    }
}

#[tokio::test]
async fn silent_connections_to_the_tls_listener_are_closed_after_the_header_timeout() {
    let stage = stage_tls("1s", "30s", false).await;
    let (connector, https) = (&stage.connector, stage.https);

    // No handshake at all.
    let silent = open_quiet(https, 100, b"").await;
    // A complete handshake, then no request.
    let mut shaken = Vec::new();
    for _ in 0..20 {
        shaken.push(tls_connect(connector, https).await);
    }
    let started = Instant::now();
    let (closed, last) = closed_within(silent, CLOSE_BOUND).await;
    assert_eq!(closed, 100, "connections without a handshake left open");
    let mut open_after_handshake = 0;
    for mut stream in shaken {
        let mut buf = [0u8; 64];
        let left = CLOSE_BOUND.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(_)) => panic!("unexpected bytes from the server"),
            Err(_) => open_after_handshake += 1,
        }
    }
    println!("100 silent TLS connections closed, the last after {last:?}");
    assert_eq!(
        open_after_handshake, 0,
        "TLS connections without a request left open"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let (_redis, _app, proxy) = stage(timeouts("1s", "3s"), false).await;
    let request = || {
        Request::get(format!("http://{}/echo", proxy.address))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

    // HTTP/1.1 keep-alive.
    let io = TokioIo::new(TcpStream::connect(proxy.address).await.unwrap());
    let (mut http1, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
    let http1_closed = tokio::spawn(connection);
    // HTTP/2 with prior knowledge (h2c).
    let io = TokioIo::new(TcpStream::connect(proxy.address).await.unwrap());
    let (mut http2, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    let http2_closed = tokio::spawn(connection);

    for _ in 0..2 {
        let response = http1.send_request(request()).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
        let response = http2.send_request(request()).await.unwrap();
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap();
        // Past the header timeout, within the idle timeout: the connections stay open.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // A request that takes longer than the idle timeout is not cut, on either connection.
    let slow = || {
        Request::get(format!("http://{}/slow?ms=4000", proxy.address))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let (slow1, slow2) = tokio::join!(http1.send_request(slow()), http2.send_request(slow()));
    for response in [slow1.unwrap(), slow2.unwrap()] {
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "slow answer");
    }

    let idle_since = Instant::now();
    let bound = Duration::from_secs(3) + CLOSE_BOUND;
    tokio::time::timeout(bound, http1_closed)
        .await
        .expect("idle HTTP/1.1 connection left open")
        .unwrap()
        .ok();
    let http1_after = idle_since.elapsed();
    tokio::time::timeout(bound, http2_closed)
        .await
        .expect("idle HTTP/2 connection left open")
        .unwrap()
        .ok();
    println!(
        "idle connections closed: HTTP/1.1 after {http1_after:?}, HTTP/2 after {:?} (idle_timeout 3s)",
        idle_since.elapsed()
    );
}

/// A keep-alive request with an `X-Client` header, which the app's `/echo` sends back.
fn echo_request(client: &str) -> String {
    format!("GET /echo HTTP/1.1\r\nHost: parked\r\nX-Client: {client}\r\n\r\n")
}

/// Reads one response (head and Content-Length body) from a raw HTTP/1.1 connection and
/// returns its status and the `X-Client` the app saw.
async fn read_echo<S: tokio::io::AsyncRead + Unpin>(stream: &mut BufReader<S>) -> (u16, String) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let read = stream.read_until(b'\n', &mut head).await.unwrap();
        assert!(read > 0, "connection closed mid-response: {head:?}");
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    let echoed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let client = echoed["headers"]["x-client"][0]
        .as_str()
        .unwrap_or("")
        .to_string();
    (status, client)
}

/// A request whose body is still coming when its answer has gone (the app answered before it
/// read the body, as Node apps can) keeps its connection from parking: the rest of the body
/// is body, never a request. (Fixed: the connection counted as idle once the answer had gone,
/// parked mid-body, and read the rest of the body as a new request, a request smuggled past
/// whatever stands in front of unstick.)
#[tokio::test]
async fn the_rest_of_a_body_after_its_answer_is_never_read_as_a_request() {
    let (_redis, _app, proxy) = stage(timeouts("10s", "30s"), true).await;
    let smuggled = echo_request("smuggled");
    let mut client = BufReader::new(TcpStream::connect(proxy.address).await.unwrap());
    let head = format!(
        "POST /answer-early HTTP/1.1\r\nHost: parked\r\nContent-Length: {}\r\n\r\n",
        10 + smuggled.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(b"0123456789").await.unwrap();
    assert_eq!(read_echo(&mut client).await, (200, String::new()));
    // The client pauses for far longer than an idle connection takes to park, then sends the
    // rest of the body (which reads like a request), and then a request of its own.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    client.write_all(smuggled.as_bytes()).await.unwrap();
    client
        .write_all(echo_request("next").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_echo(&mut client).await,
        (200, "next".into()),
        "the body's rest was answered as a request; logs:\n{}",
        proxy.logs()
    );
}

/// Waits (bounded) until the proxy's parked-connections gauge reads `count`.
async fn until_parked(proxy: &ProxyProcess, count: usize) {
    for _ in 0..100 {
        if metric(proxy, "unstick_client_connections_parked").await == count as f64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} connections parked, not {count}",
        metric(proxy, "unstick_client_connections_parked").await
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_park_and_serve_their_next_requests() {
    let (_redis, _app, proxy) = stage(timeouts("10s", "30s"), true).await;
    const CLIENTS: usize = 20;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let mut client = BufReader::new(TcpStream::connect(proxy.address).await.unwrap());
        client
            .write_all(echo_request(&format!("c{i}")).as_bytes())
            .await
            .unwrap();
        assert_eq!(read_echo(&mut client).await, (200, format!("c{i}")));
        clients.push(client);
    }

    // Idle for a while, every connection is parked and still open.
    until_parked(&proxy, CLIENTS).await;
    assert_eq!(
        metric(&proxy, "unstick_client_connections").await,
        CLIENTS as f64
    );

    // Each serves its next request: on the same socket, for the right client.
    for (i, client) in clients.iter_mut().enumerate() {
        client
            .write_all(echo_request(&format!("again{i}")).as_bytes())
            .await
            .unwrap();
        assert_eq!(read_echo(client).await, (200, format!("again{i}")));
    }
    until_parked(&proxy, CLIENTS).await;

    // Two requests pipelined into a parked connection are both answered, in order.
    let pipelined = format!("{}{}", echo_request("first"), echo_request("second"));
    clients[0].write_all(pipelined.as_bytes()).await.unwrap();
    assert_eq!(read_echo(&mut clients[0]).await, (200, "first".into()));
    assert_eq!(read_echo(&mut clients[0]).await, (200, "second".into()));

    // A request head that arrives in two parts, the second after longer than it takes to
    // park an idle connection, is not cut by parking.
    until_parked(&proxy, CLIENTS).await;
    let request = echo_request("slow head");
    let (start, rest) = request.split_at(20);
    clients[1].write_all(start.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    clients[1].write_all(rest.as_bytes()).await.unwrap();
    assert_eq!(read_echo(&mut clients[1]).await, (200, "slow head".into()));

    // A request answered, and the start of the next one pipelined behind it whose rest comes
    // only after the connection would have parked: both are answered.
    until_parked(&proxy, CLIENTS).await;
    let late = echo_request("late rest");
    let (start, rest) = late.split_at(25);
    let pipelined = format!("{}{start}", echo_request("on time"));
    clients[2].write_all(pipelined.as_bytes()).await.unwrap();
    assert_eq!(read_echo(&mut clients[2]).await, (200, "on time".into()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    clients[2].write_all(rest.as_bytes()).await.unwrap();
    assert_eq!(read_echo(&mut clients[2]).await, (200, "late rest".into()));

    // A WebSocket opened on a connection that was parked.
    until_parked(&proxy, CLIENTS).await;
    let client = clients.pop().unwrap();
    let url = format!("ws://{}/ws", proxy.address);
    let (mut socket, handshake) = tokio_tungstenite::client_async(url, client)
        .await
        .expect("WebSocket handshake on a parked connection");
    assert_eq!(handshake.status(), 101);
    let message = Message::text("through a parked connection");
    socket.send(message.clone()).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), message);
    socket.close(None).await.unwrap();

    // Closed by the client while parked: counted out.
    drop(clients);
    until_parked(&proxy, 0).await;
}

#[tokio::test]
async fn idle_tls_keep_alive_connections_park_and_serve_their_next_requests() {
    let stage = stage_tls("10s", "30s", true).await;
    let proxy = &stage.proxy;
    let mut client = BufReader::new(tls_connect(&stage.connector, stage.https).await);
    for round in 0..3 {
        let name = format!("tls {round}");
        client
            .write_all(echo_request(&name).as_bytes())
            .await
            .unwrap();
        assert_eq!(read_echo(&mut client).await, (200, name));
        until_parked(proxy, 1).await;
    }
}

#[tokio::test]
async fn at_the_connection_cap_health_checks_answer_and_new_clients_wait_their_turn() {
    let listener = ListenerOptions {
        max_connections: Some(50),
        ..timeouts("2s", "30s")
    };
    let (_redis, _app, proxy) = stage(listener, true).await;
    let before = proxy.open_descriptors();

    // 50 fill the cap; 30 more wait in the listen backlog.
    let streams = open_quiet(proxy.address, 80, b"").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = proxy.open_descriptors();
    assert!(
        during <= before + 50 + 3,
        "{during} descriptors open with 80 clients and a cap of 50 (had {before})"
    );
    let health = Instant::now();
    assert_eq!(get_status(&proxy.admin_url("/healthz")).await, 200);
    println!(
        "at the cap: /healthz answered in {:?}, {before} -> {during} descriptors",
        health.elapsed()
    );
    assert_eq!(metric(&proxy, "unstick_client_connections").await, 50.0);
    assert!(metric(&proxy, "unstick_client_connection_waits_total").await >= 1.0);

    // A real client waits until the silent ones time out, then is served.
    let waited = Instant::now();
    assert_eq!(get_status(&proxy.url("/echo")).await, 200);
    println!(
        "a request at the cap was served after {:?}",
        waited.elapsed()
    );
    let (closed, last) = closed_within(streams, Duration::from_secs(15)).await;
    assert_eq!(closed, 80, "silent connections left open");
    println!("80 silent connections closed in waves of 50, the last after {last:?}");
    let timeouts = r#"unstick_client_connection_timeouts_total{timeout="header"}"#;
    assert_eq!(metric(&proxy, timeouts).await, 80.0);

    let cap_lines = proxy.count_logs("connection limit reached")
        + proxy.count_logs("below the connection limit");
    assert!(
        (1..=4).contains(&cap_lines),
        "{cap_lines} log lines about the cap:\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn out_of_file_descriptors_the_proxy_backs_off_and_health_checks_still_answer() {
    raise_own_open_file_limit();
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.listener.header_timeout = Some("3s".into());
    config.admin = true;
    // A hard limit of 256 cannot be raised: the default cap must keep the process below it.
    let proxy = ProxyProcess::start_with_open_files(&config.to_toml(), &[], Some((256, 256))).await;

    let streams = open_quiet(proxy.address, 300, b"").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let descriptors = proxy.open_descriptors();
    let cpu_before = proxy.cpu_seconds();
    let health = tokio::time::timeout(Duration::from_secs(5), async {
        reqwest::get(proxy.admin_url("/healthz"))
            .await
            .map(|r| r.status().as_u16())
    })
    .await;
    assert!(
        matches!(health, Ok(Ok(200))),
        "/healthz with 300 silent clients: {health:?} ({descriptors} descriptors); logs:\n{}",
        proxy.logs()
    );
    // Saturated, the process waits rather than spins.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = proxy.cpu_seconds() - cpu_before;
    let accept_failures = proxy.count_logs("accept failed");
    let cap_lines = proxy.count_logs("connection limit reached");
    println!(
        "300 silent clients at an fd limit of 256: {descriptors} descriptors, {cpu:.2} s CPU in the \
         next second, {accept_failures} accept-failure lines, {cap_lines} cap lines"
    );
    assert!(
        cpu < 0.5 && accept_failures <= 2 && cap_lines <= 1,
        "{cpu:.2} s CPU, {accept_failures} accept-failure lines, {cap_lines} cap lines:\n{}",
        proxy.logs()
    );

    // Served once its turn comes: waves of silent clients time out ahead of it.
    assert_eq!(get_status(&proxy.url("/echo")).await, 200);
    // A line when the cap is reached and one when it is left: none per connection.
    let cap_lines = proxy.count_logs("connection limit reached")
        + proxy.count_logs("below the connection limit");
    assert!(cap_lines <= 3, "{cap_lines} cap lines:\n{}", proxy.logs());
    drop(streams);
}

#[tokio::test]
async fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    let (_, hard) = rlimit::Resource::NOFILE.get().unwrap();
    if hard == rlimit::INFINITY {
        println!("hard open-file limit is unlimited: nothing to compare");
        return;
    }
    let soft = (hard / 2).min(512);
    let proxy =
        ProxyProcess::start_with_open_files(&config.to_toml(), &[], Some((soft, hard))).await;
    let (soft_now, hard_now) = proxy.open_file_limit();
    assert_eq!(hard_now, hard.to_string());
    assert_eq!(
        soft_now,
        hard_now,
        "started with a soft limit of {soft}; logs:\n{}",
        proxy.logs()
    );
}
