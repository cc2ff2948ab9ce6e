//! What unstick does when something around it fails: Redis down or hung, app instances that
//! refuse or stall, clients that send garbage, a shutdown in the middle of a request, and an
//! operator's typo in the config file.

mod support;

use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use unstick::config::{InstanceConfig, UpstreamConfig};
use unstick::demo::LegacyAppConfig;
use unstick::upstream::UpstreamPool;

// ---------------------------------------------------------------------------------------------
// Redis down or hung: the cookie holder gets "please retry", never an anonymous page.
// ---------------------------------------------------------------------------------------------

/// Logs alice in through the proxy, then restarts the (single) app instance so that it forgets
/// its own in-memory copy of the login: from then on only Redis vouches for alice, and an
/// anonymous pass-through would show up as `user: null`.
async fn alice_known_only_to_redis(
    redis: &RedisServer,
) -> (ProxyProcess, Browser, unstick::demo::LegacyApp) {
    let a = legacy_app("a").await;
    let address = a.address;
    let proxy = ProxyProcess::start(&ProxyConfig::new(&redis.url(), &[("a", address)])).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    a.stop().await;
    let a = legacy_app_with(LegacyAppConfig::new("a"), Some(address)).await;
    let (status, user, _) = alice.me(&proxy).await;
    assert_eq!(
        (status, user.as_deref()),
        (200, Some("alice")),
        "identity comes from Redis"
    );
    (proxy, alice, a)
}

/// Asserts the fail-closed answer: 503, a `Retry-After` in whole seconds, a short plain body
/// that says nothing about the user.
async fn assert_retry_later(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    let retry_after = response
        .headers()
        .get("retry-after")
        .expect("503 without Retry-After")
        .to_str()
        .unwrap()
        .parse::<u64>()
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    let body = response.text().await.unwrap();
    assert!(
        !body.is_empty() && body.len() < 200,
        "short explanation expected: {body:?}"
    );
    assert!(!body.contains("alice"), "{body:?}");
}

/// Polls `/me` until the answer is no longer 503 (bounded), and returns it.
async fn me_once_recovered(
    browser: &Browser,
    proxy: &ProxyProcess,
) -> (u16, Option<String>, Option<String>) {
    for _ in 0..200 {
        let answer = browser.me(proxy).await;
        if answer.0 != 503 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still 503 after Redis came back; logs:\n{}", proxy.logs());
}

#[tokio::test]
async fn redis_down_answers_503_to_session_holders_and_recovers_with_the_same_identity() {
    let mut redis = RedisServer::start_persistent().await;
    let (proxy, alice, _app) = alice_known_only_to_redis(&redis).await;

    redis.kill();

    // Every request with the session cookie: "please retry", never the app answering anonymously.
    for _ in 0..5 {
        let response = alice.get(&proxy.url("/me")).send().await.unwrap();
        assert_retry_later(response).await;
    }
    // Requests without a session never touch Redis and are served as before.
    let (status, user, _) = Browser::new().me(&proxy).await;
    assert_eq!((status, user), (200, None));
    // A login during the outage cannot be recorded: the user is told to retry, and gets no
    // cookie that would later turn out to belong to nobody.
    let login = Browser::new()
        .post(&proxy.url("/login"))
        .form(&[("user", "bob")])
        .send()
        .await
        .unwrap();
    assert!(login.headers().get("set-cookie").is_none());
    assert_retry_later(login).await;

    redis.restart().await;
    let (status, user, _) = me_once_recovered(&alice, &proxy).await;
    assert_eq!((status, user.as_deref()), (200, Some("alice")));
    assert_eq!(
        redis.keys("test:s:*").await.len(),
        1,
        "alice's session survived, and no other was created"
    );
}

#[tokio::test]
async fn hung_redis_answers_503_within_the_command_timeout_and_recovers() {
    let redis = RedisServer::start_persistent().await;
    let (proxy, alice, _app) = alice_known_only_to_redis(&redis).await;

    // SIGSTOP: the socket stays open and nothing answers. The 250 ms command timeout turns
    // that into a 503 rather than a request that waits as long as Redis does.
    redis.pause();
    for _ in 0..3 {
        let response = alice.get(&proxy.url("/me")).send().await.unwrap();
        assert_retry_later(response).await;
    }
    let (status, user, _) = Browser::new().me(&proxy).await;
    assert_eq!((status, user), (200, None));

    redis.resume();
    let (status, user, _) = me_once_recovered(&alice, &proxy).await;
    assert_eq!((status, user.as_deref()), (200, Some("alice")));
}

#[tokio::test]
async fn redis_down_at_start_does_not_keep_the_proxy_from_serving() {
    let mut redis = RedisServer::start().await;
    redis.kill();
    let a = legacy_app("a").await;
    let proxy = ProxyProcess::start(&ProxyConfig::new(&redis.url(), &[("a", a.address)])).await;

    let (status, user, _) = Browser::new().me(&proxy).await;
    assert_eq!((status, user), (200, None));
    let cookie_holder = Browser {
        cookie: Some("demo.sid=issued-before-the-outage".into()),
        ..Browser::new()
    };
    let response = cookie_holder.get(&proxy.url("/me")).send().await.unwrap();
    assert_retry_later(response).await;

    redis.restart().await;
    let (status, user, _) = me_once_recovered(&cookie_holder, &proxy).await;
    assert_eq!(
        (status, user),
        (200, None),
        "an unknown session is anonymous"
    );
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    assert_eq!(alice.me(&proxy).await.1.as_deref(), Some("alice"));
    assert_eq!(redis.keys("test:s:*").await.len(), 1);
}

/// One answer to a request of the load: (status, carried Retry-After, user the app was told
/// about, latency, sent while Redis was out).
struct Answer {
    status: u16,
    retry_after: bool,
    user: Option<String>,
    took: Duration,
    cookie: Option<usize>,
    sent_at: std::time::Instant,
}

/// Session and anonymous requests from concurrent clients until `stop` is set.
fn load(
    proxy: &ProxyProcess,
    cookies: &[String],
    workers: usize,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Answer>>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    (0..workers)
        .map(|worker| {
            let (http, url, stop) = (http.clone(), proxy.url("/echo"), stop.clone());
            let cookies = cookies.to_vec();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut i = worker;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // One worker sends no cookie: those requests must never notice Redis.
                    let cookie = (worker != 0).then_some(i % cookies.len());
                    let mut request = http.get(&url);
                    if let Some(c) = cookie {
                        request = request.header("cookie", &cookies[c]);
                    }
                    let sent_at = std::time::Instant::now();
                    let response = request.send().await.unwrap();
                    let status = response.status().as_u16();
                    let retry_after = response.headers().contains_key("retry-after");
                    let body = response.bytes().await.unwrap();
                    let user = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|echo| {
                            echo["headers"]["x-auth-user"][0].as_str().map(String::from)
                        });
                    answers.push(Answer {
                        status,
                        retry_after,
                        user,
                        took: sent_at.elapsed(),
                        cookie,
                        sent_at,
                    });
                    i += 1;
                }
                answers
            })
        })
        .collect()
}

/// Redis goes away under a concurrent session load (`hung`: SIGSTOP, else killed) and comes
/// back: every session request is a 503 with Retry-After, never anonymous; once the store is
/// known down, requests are answered without asking Redis, the outage is logged once, and
/// readiness and metrics say so; afterwards the same cookies work again.
async fn outage_under_load(hung: bool) {
    const TOKEN: &str = "test-admin-token-0123456789";
    let mut redis = RedisServer::start_persistent().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &[("t", app.address)]);
    config.admin = true;
    let proxy =
        ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await;
    let users = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7"];
    let mut cookies = Vec::new();
    for user in users {
        cookies.push(test_app_login(&proxy, user).await);
    }
    let http = reqwest::Client::new();
    let scrape = || admin_metrics(&proxy, TOKEN);
    let ready = || async {
        http.get(proxy.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let warnings = || proxy.count_logs("\"level\":\"WARN\"");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers = load(&proxy, &cookies, 16, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let warnings_before = warnings();
    let before = scrape().await;
    let lookups = |scrape: &str| {
        metric(
            scrape,
            "unstick_redis_command_duration_seconds_count",
            &[("command", "load")],
        )
    };
    let (errors_before, lookups_before) = (
        metric(&before, "unstick_redis_errors_total", &[]),
        lookups(&before),
    );
    let out_at = std::time::Instant::now();
    if hung {
        redis.pause();
    } else {
        redis.kill();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = scrape().await;
    let ready_during = ready().await;
    let warnings_during = warnings() - warnings_before;
    let back_at = std::time::Instant::now();
    if hung {
        redis.resume();
    } else {
        redis.restart().await;
    }
    // Recovery: every cookie is served with its user again.
    let mut recovered = false;
    for _ in 0..100 {
        let mut all = true;
        for (cookie, user) in cookies.iter().zip(users) {
            all &= user_seen_or_503(&proxy, cookie).await.as_deref() == Some(user);
        }
        if all {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }
    assert!(
        recovered,
        "sessions not served after Redis came back; logs:\n{}",
        proxy.logs()
    );

    // Never anonymous: a session request is served with its own user or told to retry.
    for answer in &answers {
        match answer.cookie {
            None => assert_eq!((answer.status, answer.user.as_deref()), (200, None)),
            Some(c) if answer.status == 200 => {
                assert_eq!(
                    answer.user.as_deref(),
                    Some(users[c]),
                    "anonymous pass-through"
                )
            }
            Some(_) => assert!(
                answer.status == 503 && answer.retry_after,
                "session request answered {} (Retry-After: {})",
                answer.status,
                answer.retry_after
            ),
        }
    }
    let outage: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.cookie.is_some() && a.sent_at >= out_at && a.sent_at < back_at)
        .collect();
    let refused = outage.iter().filter(|a| a.status == 503).count();
    let mut took: Vec<Duration> = outage
        .iter()
        .filter(|a| a.sent_at >= out_at + Duration::from_secs(1))
        .map(|a| a.took)
        .collect();
    took.sort();
    let p50 = took.get(took.len() / 2).copied().unwrap_or_default();
    let errors = metric(&during, "unstick_redis_errors_total", &[]) - errors_before;
    let sent = lookups(&during) - lookups_before;
    let skipped = metric(&during, "unstick_redis_commands_skipped_total", &[]);
    eprintln!(
        "outage ({}): {} session requests answered, {refused} of them 503; p50 {p50:?} after the \
         first second; {sent} lookups sent to Redis, {skipped} not sent; {errors} Redis commands \
         failed; {warnings_during} warnings logged",
        if hung { "SIGSTOP" } else { "killed" },
        outage.len()
    );
    for line in proxy
        .logs()
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("store back"))
    {
        let doc: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let reason = doc["fields"]["reason"].as_str().unwrap_or_default();
        eprintln!("  {}: {} {reason}", doc["level"], doc["fields"]["message"]);
    }
    assert!(refused >= 100, "too little load to judge: {refused} 503s");
    assert!(
        sent * 10.0 <= skipped,
        "{sent} lookups sent to a Redis that was out, {skipped} answered without asking it"
    );
    assert!(
        errors * 10.0 <= refused as f64,
        "{errors} Redis commands failed for {refused} requests answered 503: the store was asked \
         each time"
    );
    assert!(
        warnings_during <= 5,
        "{warnings_during} warnings during the outage; logs:\n{}",
        proxy.logs()
    );
    assert_eq!(
        proxy.count_logs("session store down"),
        1,
        "{}",
        proxy.logs()
    );
    assert_eq!(
        proxy.count_logs("session store back"),
        1,
        "{}",
        proxy.logs()
    );
    assert_eq!(
        ready_during, 503,
        "readiness agrees with the known-down state"
    );
    assert_eq!(metric(&during, "unstick_session_store_up", &[]), 0.0);
    assert_eq!(ready().await, 200);
    assert_eq!(
        metric(&scrape().await, "unstick_session_store_up", &[]),
        1.0
    );
}

#[tokio::test]
async fn a_lost_connection_makes_redis_known_down_before_any_request_waits() {
    let mut redis = RedisServer::start_persistent().await;
    let (proxy, alice, _app) = alice_known_only_to_redis(&redis).await;
    redis.kill();
    let mut known = false;
    for _ in 0..40 {
        if proxy.count_logs("connection lost") > 0 {
            known = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        known,
        "no request was needed to notice; logs:\n{}",
        proxy.logs()
    );
    let response = alice.get(&proxy.url("/me")).send().await.unwrap();
    assert_retry_later(response).await;
    assert_eq!(
        proxy.count_logs("session lookup failed"),
        0,
        "nothing was asked"
    );

    redis.restart().await;
    let (status, user, _) = me_once_recovered(&alice, &proxy).await;
    assert_eq!((status, user.as_deref()), (200, Some("alice")));
    assert_eq!(proxy.count_logs("session store back"), 1);
}

/// The user the app was told about, or `None` (anonymous, or a 503).
async fn user_seen_or_503(proxy: &ProxyProcess, cookie: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .get(proxy.url("/echo"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = response.json().await.ok()?;
    echo["headers"]["x-auth-user"][0].as_str().map(String::from)
}

#[tokio::test]
async fn redis_killed_under_load_is_known_down_answered_at_once_and_logged_once() {
    outage_under_load(false).await;
}

#[tokio::test]
async fn redis_hung_under_load_is_known_down_answered_at_once_and_logged_once() {
    outage_under_load(true).await;
}

// ---------------------------------------------------------------------------------------------
// App instances that refuse, vanish or stall.
// ---------------------------------------------------------------------------------------------

/// An address where nothing listens: connecting to it is refused.
async fn dead_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn test_app_config(redis: &RedisServer, instances: &[(&str, SocketAddr)]) -> ProxyConfig {
    ProxyConfig::for_test_app(&redis.url(), instances)
}

#[tokio::test]
async fn a_refusing_instance_costs_no_request() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let dead = dead_address().await;
    let proxy = ProxyProcess::start(&test_app_config(
        &redis,
        &[("dead", dead), ("live", app.address)],
    ))
    .await;
    let http = reqwest::Client::new();
    // Round robin puts the dead instance first for one of the first two requests; the refused
    // connection means the request was never sent, so it is retried on the live instance.
    for i in 0..10 {
        let response = http.get(proxy.url("/echo")).send().await.unwrap();
        assert_eq!(response.status(), 200, "request {i}");
        let echo: serde_json::Value = response.json().await.unwrap();
        assert_eq!(echo["path"], "/echo");
    }
}

#[tokio::test]
async fn no_reachable_instance_is_a_502() {
    let redis = RedisServer::start().await;
    let (one, two) = (dead_address().await, dead_address().await);
    let proxy = ProxyProcess::start(&test_app_config(&redis, &[("one", one), ("two", two)])).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        let response = http.get(proxy.url("/echo")).send().await.unwrap();
        assert_eq!(response.status(), 502);
        let body = response.text().await.unwrap();
        assert!(body.len() < 200, "{body:?}");
    }
}

#[tokio::test]
async fn an_app_slower_than_the_response_timeout_is_a_504() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &[("t", app.address)]);
    config.upstream.response_timeout = Some("500ms".into());
    let proxy = ProxyProcess::start(&config).await;
    let http = reqwest::Client::new();

    let response = http.get(proxy.url("/slow?ms=3000")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    // Within the timeout the same app is served normally.
    let response = http.get(proxy.url("/slow?ms=10")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "slow answer");
}

/// The pool of one instance `a` at `address`, without a health check of its own.
fn one_instance_pool(address: SocketAddr) -> std::sync::Arc<UpstreamPool> {
    UpstreamPool::new(&UpstreamConfig {
        name: "app".into(),
        instances: vec![InstanceConfig {
            name: "a".into(),
            authority: address.to_string(),
        }],
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(5),
        max_idle_per_instance: 4,
        health_check: None,
        jvm_routes: Default::default(),
        lb_cookie: None,
    })
}

/// `GET path` as unstick asks an instance on its own behalf (login capture, health check).
fn own_request(path: &str, app: &ClosingApp) -> http::Request<unstick::body::Body> {
    http::Request::get(path)
        .header("host", app.address.to_string())
        .header("cookie", "sid=alice")
        .body(unstick::body::empty())
        .unwrap()
}

/// The app closes a pooled connection while it is idle (its keep-alive timeout) and unstick
/// has not read the FIN yet: unstick's own call to that instance (a login's whoami capture, a
/// health probe) goes out again on a fresh connection instead of failing. The test runs on one
/// thread, so the pool's connection tasks run only when the test awaits: the app's close
/// always lands before unstick can notice it.
#[tokio::test(flavor = "current_thread")]
async fn a_connection_the_app_closed_while_idle_is_replaced_not_failed() {
    let app = ClosingApp::start(KeepAlive::UntilClosed);
    let pool = one_instance_pool(app.address);
    let instance = pool.instance("a").unwrap().clone();
    for round in 1..=3 {
        if round > 1 {
            close_while_idle(&app).await;
        }
        let response = pool
            .send_to(
                &instance,
                own_request("/whoami", &app),
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|e| panic!("whoami call {round} failed: {e}"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"user":"alice"}"#);
    }
    assert_eq!(app.connections(), 3, "one fresh connection per closed one");
}

/// The same race for a client's request: a GET on a connection the app closed while it was
/// idle in the pool goes again on a fresh connection and is answered, not a 502. A POST in the
/// same place is not repeated: the app may have acted on it.
#[tokio::test(flavor = "current_thread")]
async fn a_clients_get_meeting_the_apps_keep_alive_timeout_is_sent_again() {
    let app = ClosingApp::start(KeepAlive::UntilClosed);
    let pool = one_instance_pool(app.address);
    let client_request = |method: &str, path: &str| {
        let body = match method {
            "POST" => unstick::body::full("user=bob"),
            _ => unstick::body::empty(),
        };
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", app.address.to_string())
            .header("cookie", "sid=alice")
            .body(body)
            .unwrap()
    };
    for round in 1..=3 {
        if round > 1 {
            close_while_idle(&app).await;
        }
        let (response, _) = pool
            .send(client_request("GET", "/whoami"), None, false, None)
            .await
            .unwrap_or_else(|e| panic!("GET {round} failed: {e}"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"user":"alice"}"#);
    }
    assert_eq!(app.connections(), 3, "one fresh connection per closed one");

    close_while_idle(&app).await;
    let posted = pool
        .send(client_request("POST", "/login?user=bob"), None, false, None)
        .await;
    assert!(
        matches!(posted, Err(unstick::upstream::ForwardError::Failed { .. })),
        "a POST that went out is not sent again: {:?}",
        posted.map(|(response, _)| response.status())
    );
    assert_eq!(app.connections(), 3, "no new connection for the POST");
}

/// Leaves the pool's connection idle for longer than a keep-alive race needs to be covered
/// (100 ms), then has the app close it. The test's runtime is blocked while the FIN arrives,
/// so unstick has not noticed it when the next request takes the connection.
async fn close_while_idle(app: &ClosingApp) {
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.close_idle_connections();
    std::thread::sleep(Duration::from_millis(50));
}

/// An app that closes keep-alive connections after a short idle, as Node and gunicorn do,
/// probed about as often: every login is captured and the app is never marked down.
#[tokio::test]
async fn an_app_closing_idle_connections_stays_healthy_and_its_logins_are_captured() {
    let redis = RedisServer::start().await;
    let app = ClosingApp::start(KeepAlive::IdleTimeout(Duration::from_millis(100)));
    let mut config = test_app_config(&redis, &[("a", app.address)]);
    config.upstream.health_check = Some(HealthCheck {
        path: "/healthz".into(),
        interval: "100ms".into(),
        timeout: Some("1s".into()),
    });
    let proxy = ProxyProcess::start(&config).await;
    for round in 0..15 {
        let user = format!("user{round}");
        let cookie = test_app_login(&proxy, &user).await;
        assert_eq!(
            user_seen(&proxy, &cookie).await.as_deref(),
            Some(user.as_str())
        );
        // Around the app's idle timeout, so that its closes meet unstick's next calls.
        tokio::time::sleep(Duration::from_millis(95 + round % 10)).await;
    }
    assert_eq!(
        proxy.count_logs("instance health changed"),
        0,
        "{}",
        proxy.logs()
    );
    assert!(app.connections() > 1, "the app closed its connections");
}

// ---------------------------------------------------------------------------------------------
// Malformed input: never a panic, never a hang.
// ---------------------------------------------------------------------------------------------

/// Sends raw bytes on a fresh connection and returns all the proxy answers until it closes the
/// connection. Writing and reading run together: the proxy may answer (and close) before it
/// has read everything. No answer and no close within 10 s is a hang, and fails the test.
async fn raw_exchange(address: SocketAddr, request: &[u8]) -> String {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = async {
        // The proxy may close early (431): a failed write is expected then.
        let _ = writer.write_all(request).await;
    };
    let read = async {
        let mut answer = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break answer,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    };
    let joined = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(write, read) });
    let ((), answer) = joined.await.unwrap_or_else(|_| {
        panic!(
            "no answer and no close within 10 s for {:?}",
            String::from_utf8_lossy(&request[..request.len().min(80)])
        )
    });
    // Kept open until here: a half-closed request could be dropped by the server.
    drop(writer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {answer:?}"))
}

/// `GET /me` with the given extra header lines, on a connection the proxy then closes.
fn get_me_with(header_lines: &[&[u8]]) -> Vec<u8> {
    let mut request = b"GET /me HTTP/1.1\r\nHost: unstick.test\r\nConnection: close\r\n".to_vec();
    for line in header_lines {
        request.extend_from_slice(line);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request
}

#[tokio::test]
async fn malformed_requests_get_an_error_or_an_anonymous_answer_and_change_nothing() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let mut proxy = ProxyProcess::start(&ProxyConfig::new(&redis.url(), &[("a", a.address)])).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;

    // A head far beyond the 64 KB limit.
    let big_header = [b"X-Big: ".as_slice(), &vec![b'a'; 100 * 1024]].concat();
    let answer = raw_exchange(proxy.address, &get_me_with(&[&big_header])).await;
    assert_eq!(status_of(&answer), 431, "{answer:.200}");
    // And more header lines than a request may have.
    let many_headers: Vec<Vec<u8>> = (0..500)
        .map(|i| format!("X-H{i}: v").into_bytes())
        .collect();
    let many: Vec<&[u8]> = many_headers.iter().map(Vec::as_slice).collect();
    let answer = raw_exchange(proxy.address, &get_me_with(&many)).await;
    assert_eq!(status_of(&answer), 431, "{answer:.200}");

    // Bytes that cannot be in a header, and request lines that are not HTTP.
    for bad in [
        get_me_with(&[b"X-Bad: a\x00b"]),
        get_me_with(&[b"X-Bad: a\rb"]),
        get_me_with(&[b"Bad Name: v"]),
        get_me_with(&[b"B\x01d: v"]),
        get_me_with(&[b": no name"]),
        b"GARBAGE\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET /me HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n".to_vec(),
        b"\xff\xfe\xfd\r\n\r\n".to_vec(),
        // The route is chosen by the host: the app must never see another one.
        b"GET /me HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /me HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /me HTTP/1.1\r\nHost: evil@good.test\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /me HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
    ] {
        let answer = raw_exchange(proxy.address, &bad).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{:?} answered {answer:.200}",
            String::from_utf8_lossy(&bad)
        );
    }

    // Junk in the session cookie is no session: the app answers anonymously.
    let long_cookie = format!("Cookie: demo.sid={}", "x".repeat(8 * 1024));
    let junk: [&[u8]; 9] = [
        b"Cookie: demo.sid=%%%",
        b"Cookie: demo.sid=",
        b"Cookie: ;;;;",
        b"Cookie: demo.sid",
        b"Cookie: =;=;demo.sid==;",
        b"Cookie: demo.sid=\"unterminated",
        long_cookie.as_bytes(),
        b"Cookie: demo.sid=\xff\xfe\x80\x81",
        b"Cookie: \xc3\x28=\xa0\xa1; demo.sid=\xe2\x28\xa1",
    ];
    for line in junk {
        let answer = raw_exchange(proxy.address, &get_me_with(&[line])).await;
        let shown = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
        assert_eq!(status_of(&answer), 200, "{shown:?}: {answer:.300}");
        assert!(answer.contains("\"user\":null"), "{shown:?}: {answer:.300}");
    }
    // All of them at once, as separate Cookie headers.
    let answer = raw_exchange(proxy.address, &get_me_with(&junk)).await;
    assert_eq!(status_of(&answer), 200, "{answer:.300}");
    assert!(answer.contains("\"user\":null"), "{answer:.300}");

    // Nothing above disturbed the proxy or alice's session.
    let (status, user, _) = alice.me(&proxy).await;
    assert_eq!((status, user.as_deref()), (200, Some("alice")));
    assert_eq!(redis.keys("test:s:*").await.len(), 1);
    assert!(
        proxy.is_running(),
        "unstick exited; logs:\n{}",
        proxy.logs()
    );
    assert!(
        !proxy.logs().contains("panicked"),
        "a panic was logged:\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn the_app_reads_the_same_request_unstick_read() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let proxy = ProxyProcess::start(&test_app_config(&redis, &[("t", app.address)])).await;

    // Content-Length next to chunked framing (a request-smuggling classic): unstick reads
    // the chunked body, and so must the app; the stale length may not reach it.
    for headers in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
    ] {
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: unstick.test\r\n{headers}\r\nConnection: close\r\n\r\n\
             b\r\nhello world\r\n0\r\n\r\n"
        );
        let answer = raw_exchange(proxy.address, request.as_bytes()).await;
        assert_eq!(status_of(&answer), 200, "{headers:?}: {answer}");
        assert!(
            answer.ends_with("{\"bytes\":11}"),
            "{headers:?}: the app read another body: {answer}"
        );
    }

    // An absolute-form target names the host, whatever the Host header says (RFC 9112
    // section 3.2.2): the app sees the host unstick routed on.
    let answer = raw_exchange(
        proxy.address,
        b"GET http://app.test:8080/echo HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let echo: serde_json::Value =
        serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(
        echo["headers"]["host"],
        serde_json::json!(["app.test:8080"])
    );
    assert_eq!(
        echo["headers"]["x-forwarded-host"],
        serde_json::json!(["app.test"])
    );
}

/// An app that answers every request with the same raw bytes and closes: for answers a
/// well-behaved HTTP library would refuse to produce.
async fn raw_app(answer: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buffer[..n]),
                    }
                }
                let _ = stream.write_all(answer).await;
            });
        }
    });
    (address, task)
}

#[tokio::test]
async fn the_client_reads_the_same_response_unstick_read() {
    let redis = RedisServer::start().await;
    // Content-Length next to chunked framing, from the app this time: the chunked framing
    // is the length, and the stale Content-Length may not reach the client.
    let (app, _task) = raw_app(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\
          Connection: close\r\n\r\nb\r\nhello world\r\n0\r\n\r\n",
    )
    .await;
    let proxy = ProxyProcess::start(&test_app_config(&redis, &[("raw", app)])).await;
    let response = reqwest::get(proxy.url("/x")).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers().get("content-length"), None);
    assert_eq!(response.text().await.unwrap(), "hello world");
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut proxy = ProxyProcess::start(&test_app_config(&redis, &[("t", app.address)])).await;
    let address = proxy.address;

    let slow = tokio::spawn({
        let url = proxy.url("/slow?ms=2000");
        async move {
            let response = reqwest::get(url).await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
    });
    // Let the request reach the app, which holds it for two seconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!slow.is_finished());

    signal(proxy.pid(), "TERM");
    let refused = stops_accepting(address).await;
    assert!(refused, "still accepting connections after SIGTERM");
    assert!(
        !slow.is_finished(),
        "the listener must close before the requests in flight are done, not after"
    );

    let (status, body) = slow.await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "slow answer"));
    let exit = proxy.wait_for_exit(Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0), "logs:\n{}", proxy.logs());
}

// ---------------------------------------------------------------------------------------------
// Config typos are refused at start, naming the key and the line.
// ---------------------------------------------------------------------------------------------

/// The 1-based line of the first line of `toml` that starts with `prefix`.
fn line_of(toml: &str, prefix: &str) -> usize {
    toml.lines()
        .position(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("{prefix:?} not in config"))
        + 1
}

fn valid_config() -> String {
    ProxyConfig::new(
        "redis://127.0.0.1:1",
        &[("a", "127.0.0.1:1".parse().unwrap())],
    )
    .to_toml()
}

#[tokio::test]
async fn an_unknown_key_is_refused_naming_the_key_and_its_line() {
    let toml = valid_config().replace("idle_timeout", "idle_timout");
    let line = line_of(&toml, "idle_timout");
    let RefusedStart {
        status,
        stderr,
        config_path: path,
    } = serve_expecting_exit(&toml).await;
    assert!(!status.success(), "exited 0: {stderr}");
    assert!(stderr.contains("idle_timout"), "{stderr}");
    assert!(stderr.contains(&format!("line {line}")), "{stderr}");
    assert!(stderr.contains(&path), "{stderr}");
}

#[tokio::test]
async fn a_route_to_an_unknown_upstream_is_refused_naming_the_key_and_its_line() {
    let toml = valid_config().replace("upstream = \"app\"", "upstream = \"ap\"");
    let line = line_of(&toml, "upstream = \"ap\"");
    let RefusedStart {
        status,
        stderr,
        config_path: path,
    } = serve_expecting_exit(&toml).await;
    assert!(!status.success(), "exited 0: {stderr}");
    assert!(stderr.contains("routes.upstream"), "{stderr}");
    assert!(stderr.contains("\"ap\""), "{stderr}");
    assert!(stderr.contains(&format!("{path}:{line}")), "{stderr}");
}
