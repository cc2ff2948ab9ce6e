//! Traffic that is not a small request and a small answer: WebSockets (anonymous and logged
//! in), 100 MB bodies both ways in flat memory, slow and stalled uploads, and HTTP/2 over
//! plain TCP (h2c).

mod support;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const HUNDRED_MB: u64 = 100 * 1024 * 1024;

/// The config for the proxy in front of one [`TestApp`], with logins captured through its
/// `/whoami`.
fn config_for(app: &TestApp, redis: &RedisServer) -> ProxyConfig {
    ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)])
}

/// Opens `/ws` through the proxy (with the cookie, if any), checks that text and binary
/// messages come back unchanged, and returns the `X-Echo-User` the app saw in the handshake.
async fn websocket_round_trip(proxy: &impl RunningProxy, cookie: Option<&str>) -> Option<String> {
    let mut request = format!("ws://{}/ws", proxy.address())
        .into_client_request()
        .unwrap();
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
    }
    let (mut socket, handshake) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket handshake through the proxy");
    assert_eq!(handshake.status(), 101);

    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let messages = [
        Message::text("hello through unstick"),
        Message::binary(binary),
        Message::text("ünïcödé ✓"),
        Message::binary(vec![0u8; 0]),
    ];
    for message in messages {
        socket.send(message.clone()).await.unwrap();
        let echoed = socket
            .next()
            .await
            .expect("socket closed early")
            .expect("read");
        assert_eq!(echoed, message);
    }
    socket.close(None).await.unwrap();
    handshake
        .headers()
        .get("x-echo-user")
        .map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn websockets_pass_through_for_anonymous_and_logged_in_clients() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let proxy = start_server(&config_for(&app, &redis)).await;

    assert_eq!(websocket_round_trip(&proxy, None).await, None);

    let cookie = test_app_login(&proxy, "xavier").await;
    assert_eq!(
        websocket_round_trip(&proxy, Some(&cookie)).await.as_deref(),
        Some("xavier"),
        "the handshake carried the session's identity"
    );

    // The proxy is still in shape for plain requests afterwards.
    let response = reqwest::get(proxy.url("/echo")).await.unwrap();
    assert_eq!(response.status(), 200);
}

/// An upload that takes longer than the app's response timeout is not cut by it: the timeout
/// counts from the end of the request body. A client that stops sending in the middle of its
/// body is answered 408 after `body_timeout` (and its app connection is let go); an app that
/// stops taking the body gets no longer than the response timeout (504).
#[tokio::test]
async fn slow_uploads_finish_and_stalled_ones_are_answered_408_or_504() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = config_for(&app, &redis);
    config.upstream.response_timeout = Some("1s".into());
    config.listener.body_timeout = Some("700ms".into());
    let proxy = ProxyProcess::start(&config).await;

    // Six chunks 400 ms apart: 2 s of upload, each pause within the body timeout.
    let stream = futures_util::stream::unfold(0, |sent| async move {
        if sent == 6 {
            return None;
        }
        if sent > 0 {
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        Some((
            Ok::<_, std::io::Error>(Bytes::from(vec![b'u'; 1000])),
            sent + 1,
        ))
    });
    let response = upload(&proxy, stream).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer, serde_json::json!({ "bytes": 6000 }));

    // 10 of the 100 bytes announced, then nothing.
    let mut stream = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut answer = String::new();
    let read =
        tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut answer)).await;
    assert!(read.is_ok(), "neither an answer nor a close: {answer:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        proxy.logs().contains("client body stalled"),
        "{}",
        proxy.logs()
    );

    // An app that accepts and then neither reads nor answers: once the socket buffers are
    // full the upload stops moving.
    let stuck = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stuck_address = stuck.local_addr().unwrap();
    std::thread::spawn(move || {
        let held: Vec<_> = stuck.incoming().take(2).collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(held);
    });
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", stuck_address)]);
    config.upstream.response_timeout = Some("1s".into());
    let proxy = ProxyProcess::start(&config).await;
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks =
        futures_util::stream::iter((0..512).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    assert_eq!(upload(&proxy, chunks).await.status(), 504);
}

/// `POST /upload` with `chunks` sent as they are produced (no length known up front). No
/// answer within 120 s fails the test.
async fn upload<S>(proxy: &impl RunningProxy, chunks: S) -> reqwest::Response
where
    S: futures_util::TryStream + Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    Bytes: From<S::Ok>,
{
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
        .post(proxy.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("an answer to the upload within 120 s")
}

#[tokio::test]
async fn hundred_megabyte_bodies_stream_both_ways_in_flat_memory() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    // The binary: its resident memory is what is measured.
    let proxy = ProxyProcess::start(&config_for(&app, &redis)).await;
    let http = reqwest::Client::new();

    // Upload: 1600 chunks of 64 KB, produced as they are sent (no length known up front).
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let chunks = HUNDRED_MB / chunk.len() as u64;
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    let response = upload(&proxy, stream).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer, serde_json::json!({ "bytes": HUNDRED_MB }));

    // Download: counted chunk by chunk, never held whole.
    let mut response = http
        .get(proxy.url(&format!("/download?bytes={HUNDRED_MB}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut received = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(chunk.iter().all(|b| *b == b'x'));
        received += chunk.len() as u64;
    }
    assert_eq!(received, HUNDRED_MB);

    // 200 MB went through; the proxy never held more than a sliver of it.
    let peak_mib = proxy.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 60,
        "peak RSS {peak_mib} MiB for 100 MB bodies: something buffers whole bodies"
    );
}

#[tokio::test]
async fn http2_prior_knowledge_clients_are_served_with_host_and_session() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let proxy = start_server(&config_for(&app, &redis)).await;

    let stream = tokio::net::TcpStream::connect(proxy.address).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    tokio::spawn(connection);

    let mut echo = |cookies: Vec<String>| {
        let mut request = http::Request::get(proxy.url("/echo"));
        for cookie in cookies {
            request = request.header("cookie", cookie);
        }
        let request = request.body(Empty::<Bytes>::new()).unwrap();
        let sent = sender.send_request(request);
        async move {
            let response = sent.await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), http::Version::HTTP_2);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()
        }
    };

    // HTTP/2 carries the host as `:authority` only; the HTTP/1.1 app needs a Host header.
    let anonymous = echo(vec![]).await;
    assert_eq!(
        anonymous["headers"]["host"],
        serde_json::json!([proxy.address.to_string()]),
        "{anonymous}"
    );
    assert_eq!(anonymous["path"], "/echo");
    assert!(anonymous["headers"].get("x-auth-user").is_none());

    // HTTP/2 clients may split cookies over several fields: the session is still found, and
    // the app gets them as one Cookie header.
    let session = test_app_login(&proxy, "yvonne").await;
    let logged_in = echo(vec!["theme=dark".into(), session.clone()]).await;
    assert_eq!(
        logged_in["headers"]["x-auth-user"],
        serde_json::json!(["yvonne"])
    );
    assert_eq!(
        logged_in["headers"]["cookie"],
        serde_json::json!([format!("theme=dark; {session}")])
    );
}
