//! Running unstick for months: the admin API and its token, metrics, revoking sessions, the
//! per-user cap, "log out everywhere", hot reload (good file, bad file, under load), signed
//! identity, the sessions CLI and request ids.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

const TOKEN: &str = "test-admin-token-0123456789";

fn test_app_config(redis: &RedisServer, app: &TestApp) -> ProxyConfig {
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.admin = true;
    config
}

/// The status code of an answer.
async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

fn admin(proxy: &ProxyProcess, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .request(method, proxy.admin_url(path))
        .bearer_auth(TOKEN)
}

#[tokio::test]
async fn admin_api_needs_the_token_except_for_health() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let config = test_app_config(&redis, &app);
    let proxy =
        ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await;
    let http = reqwest::Client::new();

    assert_eq!(status(http.get(proxy.admin_url("/healthz"))).await, 200);
    assert_eq!(status(http.get(proxy.admin_url("/readyz"))).await, 200);
    for path in ["/metrics", "/sessions?user=alice"] {
        assert_eq!(status(http.get(proxy.admin_url(path))).await, 401, "{path}");
        let wrong = http.get(proxy.admin_url(path)).bearer_auth("wrong");
        assert_eq!(status(wrong).await, 401, "{path}");
        let right = admin(&proxy, reqwest::Method::GET, path);
        assert_eq!(status(right).await, 200, "{path}");
    }
    let revoke = http.delete(proxy.admin_url("/sessions?user=alice"));
    assert_eq!(status(revoke).await, 401);

    // Redis gone: not ready.
    drop(redis);
    assert_eq!(status(http.get(proxy.admin_url("/readyz"))).await, 503);
}

#[tokio::test]
async fn without_a_token_the_admin_api_stays_closed() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let proxy = ProxyProcess::start(&test_app_config(&redis, &app)).await;
    let http = reqwest::Client::new();
    assert_eq!(status(http.get(proxy.admin_url("/healthz"))).await, 200);
    let metrics = http
        .get(proxy.admin_url("/metrics"))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 403);
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("UNSTICK_ADMIN_TOKEN"));
}

#[tokio::test]
async fn metrics_parse_and_move_with_requests() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &app);
    // Every lookup a Redis `load`, so that the command latency counts them all (with the near
    // cache, how many reach Redis depends on when its invalidation channel comes up).
    config
        .raw_lines
        .push(("[redis.near_cache]".into(), "enabled = false".into()));
    let proxy =
        ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await;

    let before = admin_metrics(&proxy, TOKEN).await;
    assert!(
        before.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    for line in before
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "unparsable sample: {line}");
    }
    let cookie = test_app_login(&proxy, "alice").await;
    for _ in 0..3 {
        user_seen(&proxy, &cookie).await;
    }
    reqwest::Client::new()
        .get(proxy.url("/echo"))
        .send()
        .await
        .unwrap();

    let after = admin_metrics(&proxy, TOKEN).await;
    assert_eq!(
        metric(
            &after,
            "unstick_requests_total",
            &[("status", "200"), ("mode", "redis")]
        ),
        5.0
    );
    assert_eq!(
        metric(
            &after,
            "unstick_session_outcomes_total",
            &[("outcome", "hit")]
        ),
        3.0
    );
    assert!(metric(&after, "unstick_request_duration_seconds_count", &[]) >= 5.0);
    assert_eq!(
        metric(&after, "unstick_upstream_healthy", &[("instance", "t")]),
        1.0
    );
    assert_eq!(metric(&after, "unstick_config_info", &[]), 1.0);
    assert!(
        metric(
            &after,
            "unstick_redis_command_duration_seconds_count",
            &[("command", "load")]
        ) >= 3.0,
        "Redis command latency is measured"
    );
    assert_eq!(metric(&after, "unstick_redis_errors_total", &[]), 0.0);
}

#[tokio::test]
async fn revoking_a_user_logs_out_every_device_and_nobody_else() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let proxy = ProxyProcess::start_with_env(
        &test_app_config(&redis, &app).to_toml(),
        &[("UNSTICK_ADMIN_TOKEN", TOKEN)],
    )
    .await;
    let laptop = test_app_login(&proxy, "alice").await;
    let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    let phone = test_app_login_from(&proxy, "alice", iphone).await;
    let bob = test_app_login(&proxy, "bob").await;

    let listed: serde_json::Value =
        json_of(admin(&proxy, reqwest::Method::GET, "/sessions?user=alice")).await;
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let mut devices: Vec<&str> = sessions
        .iter()
        .map(|s| s["device"].as_str().unwrap())
        .collect();
    devices.sort();
    assert_eq!(devices, ["Safari 17 on iPhone", "alice-device"]);
    // Redis keeps the label, not the 140-byte User-Agent.
    use fred::prelude::KeysInterface;
    let phone_key = format!("test:s:{}", session_hash(phone.split_once('=').unwrap().1));
    let stored: String = redis.client().await.get(&phone_key).await.unwrap();
    assert!(stored.contains(r#""ua":"Safari 17 on iPhone""#), "{stored}");
    assert!(!stored.contains("AppleWebKit"), "{stored}");
    for session in sessions {
        assert_eq!(session["id_hash"].as_str().unwrap().len(), 22);
        assert!(
            !listed
                .to_string()
                .contains(laptop.split_once('=').unwrap().1),
            "raw id listed"
        );
    }

    let revoked: serde_json::Value = json_of(admin(
        &proxy,
        reqwest::Method::DELETE,
        "/sessions?user=alice",
    ))
    .await;
    assert_eq!(revoked["revoked"], 2);
    assert_eq!(user_seen(&proxy, &laptop).await, None);
    assert_eq!(user_seen(&proxy, &phone).await, None);
    assert_eq!(user_seen(&proxy, &bob).await.as_deref(), Some("bob"));

    // One session by its hash.
    let bob_hash = session_hash(bob.split_once('=').unwrap().1);
    let one = admin(
        &proxy,
        reqwest::Method::DELETE,
        &format!("/sessions/{bob_hash}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(user_seen(&proxy, &bob).await, None);
}

#[tokio::test]
async fn the_oldest_session_is_ended_beyond_the_cap() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &app);
    config.session.max_sessions_per_user = Some(2);
    let proxy = ProxyProcess::start(&config).await;
    let first = test_app_login(&proxy, "carol").await;
    let second = test_app_login(&proxy, "carol").await;
    let dave = test_app_login(&proxy, "dave").await;
    let third = test_app_login(&proxy, "carol").await;
    assert_eq!(user_seen(&proxy, &first).await, None, "oldest evicted");
    assert_eq!(user_seen(&proxy, &second).await.as_deref(), Some("carol"));
    assert_eq!(user_seen(&proxy, &third).await.as_deref(), Some("carol"));
    assert_eq!(user_seen(&proxy, &dave).await.as_deref(), Some("dave"));
}

/// The user's index key, as unstick names it.
fn index_key(user: &str) -> String {
    format!("test:u:{}", session_hash(user))
}

#[tokio::test]
async fn a_users_index_holds_only_live_sessions_and_lives_as_long_as_the_longest() {
    use fred::prelude::*;
    const LOGINS: usize = 200;
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &app);
    config.session.idle_timeout = "2s".into();
    let proxy =
        ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await;
    let client = redis.client().await;
    let key = index_key("erin");
    let size = |client: fred::prelude::Client, key: String| async move {
        let (count, ttl, bytes): (u64, i64, u64) = (
            // Entries scored by end.
            client.zcount(&key, 1.0, f64::INFINITY).await.unwrap(),
            client.pttl(&key).await.unwrap(),
            client
                .custom(fred::cmd!("MEMORY"), vec!["USAGE", key.as_str()])
                .await
                .unwrap(),
        );
        (count, ttl, bytes)
    };

    // Many logins that each stay unused: every session ends after its 2 s idle timeout.
    let mut first = Vec::new();
    for _ in 0..LOGINS {
        first.push(test_app_login(&proxy, "erin").await);
    }
    let (_, ttl, full_bytes) = size(client.clone(), key.clone()).await;
    assert!(
        ttl <= 2_200,
        "the index outlives its sessions: PTTL {ttl} ms with a 2 s idle timeout"
    );
    tokio::time::sleep(Duration::from_millis(2_400)).await;
    assert_eq!(
        user_seen(&proxy, &first[LOGINS - 1]).await,
        None,
        "all ended"
    );

    // The next login prunes every ended entry; the index lives as long as its one session.
    let second = test_app_login(&proxy, "erin").await;
    let (count, ttl, bytes) = size(client.clone(), key.clone()).await;
    eprintln!("index of {LOGINS} sessions: {full_bytes} bytes; after they ended and one login: {count} entry, {bytes} bytes, PTTL {ttl} ms");
    assert_eq!(count, 1, "only the live session stays indexed");
    assert!(
        ttl > 0 && ttl <= 2_200,
        "PTTL {ttl} ms, the session has at most 2.1 s left"
    );
    assert!(bytes < 1_024, "index is {bytes} bytes for one session");

    // The cap counts live sessions only, and still ends the oldest live one.
    config.session.max_sessions_per_user = Some(3);
    proxy.reload(&config).await;
    let third = test_app_login(&proxy, "erin").await;
    let fourth = test_app_login(&proxy, "erin").await;
    let list = json_of(admin(&proxy, reqwest::Method::GET, "/sessions?user=erin")).await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 3, "{list}");
    let created: Vec<u64> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["created_ms"].as_u64().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {created:?}"
    );
    let fifth = test_app_login(&proxy, "erin").await;
    assert_eq!(
        user_seen(&proxy, &second).await,
        None,
        "the oldest live session is ended"
    );
    for cookie in [&third, &fourth, &fifth] {
        assert_eq!(user_seen(&proxy, cookie).await.as_deref(), Some("erin"));
    }
    let scrape = admin(&proxy, reqwest::Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&scrape, "unstick_sessions_evicted_total", &[]),
        1.0,
        "ended sessions are not evicted again"
    );
    assert_eq!(size(client.clone(), key.clone()).await.0, 3);

    // A session in use keeps its index entry (and the index) alive past its first idle timeout.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(user_seen(&proxy, &fifth).await.as_deref(), Some("erin"));
    }
    let (_, ttl, _) = size(client.clone(), key.clone()).await;
    assert!(
        ttl > 1_000,
        "the index follows its live session: PTTL {ttl} ms"
    );
    let list = json_of(admin(&proxy, reqwest::Method::GET, "/sessions?user=erin")).await;
    let listed: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id_hash"].as_str().unwrap())
        .collect();
    let fifth_hash = session_hash(fifth.split_once('=').unwrap().1);
    assert_eq!(listed, vec![fifth_hash.as_str()], "{list}");
}

#[tokio::test]
async fn the_app_can_ask_to_log_out_everywhere() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let proxy = ProxyProcess::start(&test_app_config(&redis, &app)).await;
    let laptop = test_app_login(&proxy, "erin").await;
    let phone = test_app_login(&proxy, "erin").await;
    let frank = test_app_login(&proxy, "frank").await;
    let response = log_out_everywhere(&proxy, &laptop).await;
    assert!(
        response.headers().get("x-unstick-logout-all").is_none(),
        "internal header reached the client"
    );
    assert_eq!(user_seen(&proxy, &laptop).await, None);
    assert_eq!(user_seen(&proxy, &phone).await, None);
    assert_eq!(user_seen(&proxy, &frank).await.as_deref(), Some("frank"));
}

#[tokio::test]
async fn a_config_file_change_is_applied_and_a_broken_one_is_refused() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.mode = Mode::Legacy;
    let proxy = ProxyProcess::start(&config).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;

    // A broken file: rejected with key and line, the running config stays (legacy routing).
    let reloads = proxy.count_logs("config reloaded");
    std::fs::write(
        proxy.config_path(),
        config.to_toml().replace("idle_timeout", "idle_timout"),
    )
    .unwrap();
    signal(proxy.pid(), "HUP");
    for _ in 0..100 {
        if proxy.count_logs("config reload rejected") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = proxy.logs();
    assert!(
        logs.contains("config reload rejected")
            && logs.contains("idle_timout")
            && logs.contains("line 13"),
        "{logs}"
    );
    assert_eq!(proxy.count_logs("config reloaded"), reloads);
    assert_eq!(alice.me(&proxy).await.1.as_deref(), Some("alice"));

    // A valid edit, noticed by watching the file (no signal): the next request uses it.
    config.upstream.response_timeout = Some("7s".into());
    config.mode = Mode::Redis;
    std::fs::write(proxy.config_path(), config.to_toml()).unwrap();
    for _ in 0..200 {
        if proxy.count_logs("config reloaded") > reloads {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        proxy.count_logs("file change") > 0,
        "reload was not triggered by the file watcher"
    );
    let instances: std::collections::HashSet<_> =
        futures_util::future::join_all((0..6).map(|_| alice.me(&proxy)))
            .await
            .into_iter()
            .map(|(_, user, instance)| {
                assert_eq!(user.as_deref(), Some("alice"));
                instance.unwrap()
            })
            .collect();
    assert_eq!(instances.len(), 2, "redis mode now balances");
}

/// Waits until the proxy has logged `text` `count` times (up to 10 s).
async fn wait_for_logs(proxy: &ProxyProcess, text: &str, count: usize) {
    for _ in 0..200 {
        if proxy.count_logs(text) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{text:?} not logged {count} times; logs:\n{}", proxy.logs());
}

/// A reload keeps what it did not change: an instance the health check found down stays known
/// down (nothing sent to it, no health change announced again), and an old store keeps its
/// connection. A changed upstream starts afresh.
#[tokio::test]
async fn a_reload_keeps_health_marks_and_old_store_connections_it_did_not_change() {
    let redis = RedisServer::start().await;
    let old_redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.mode = Mode::Overlap;
    config.upstream.health_check = Some(HealthCheck {
        path: "/healthz".into(),
        interval: "200ms".into(),
        timeout: None,
    });
    config.use_old_store(
        OldStore::new("connect-redis", "redis")
            .with("url", &old_redis.url())
            .with("key", "sess:{id}")
            .with("format", "json"),
    );
    let proxy = ProxyProcess::start(&config).await;
    let old_store = old_redis.client().await;

    drop(b);
    wait_for_logs(&proxy, "instance health changed", 1).await;
    let connections = connections_received(&old_store).await;

    // Something else changes, twice.
    for idle_timeout in ["20m", "25m"] {
        config.session.idle_timeout = idle_timeout.into();
        proxy.reload(&config).await;
        for _ in 0..4 {
            let (status, _, instance) = Browser::new().me(&proxy).await;
            assert_eq!((status, instance.as_deref()), (200, Some("a")));
        }
    }
    // A few health check rounds.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        proxy.count_logs("instance health changed"),
        1,
        "{}",
        proxy.logs()
    );
    assert_eq!(
        proxy.count_logs("instance unreachable"),
        0,
        "{}",
        proxy.logs()
    );
    assert_eq!(connections_received(&old_store).await, connections);

    // The upstream itself changes: a new pool, whose health check finds b down anew.
    config.upstream.response_timeout = Some("7s".into());
    proxy.reload(&config).await;
    wait_for_logs(&proxy, "instance health changed", 2).await;
    // The old store did not change: still no new connection.
    assert_eq!(connections_received(&old_store).await, connections);
}

/// `listener.trust_forwarded_headers` is read per request: a reload applies it, and the
/// reload does not claim it needs a restart. A setting read only at start is still named.
#[tokio::test]
async fn trusting_forwarded_headers_applies_on_reload_without_a_restart() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &app);
    let proxy = ProxyProcess::start(&config).await;
    let forwarded_for = || async {
        let seen = json_of(
            reqwest::Client::new()
                .get(proxy.url("/echo"))
                .header("X-Forwarded-For", "203.0.113.7"),
        )
        .await;
        seen["headers"]["x-forwarded-for"].clone()
    };
    assert_eq!(forwarded_for().await, serde_json::json!(["127.0.0.1"]));

    config.listener.trust_forwarded_headers = true;
    proxy.reload(&config).await;
    assert_eq!(
        forwarded_for().await,
        serde_json::json!(["203.0.113.7, 127.0.0.1"])
    );
    assert_eq!(proxy.count_logs("takes a restart"), 0, "{}", proxy.logs());

    config.listener.idle_timeout = Some("2m".into());
    proxy.reload(&config).await;
    assert_eq!(proxy.count_logs("takes a restart"), 1);
    let logs = proxy.logs();
    let warning = logs
        .lines()
        .find(|line| line.contains("takes a restart"))
        .unwrap();
    assert!(warning.contains("listener.idle_timeout"), "{warning}");
    assert!(!warning.contains("trust_forwarded_headers"), "{warning}");
}

#[tokio::test]
async fn reloading_under_load_fails_no_request() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    let proxy = ProxyProcess::start(&config).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    let alice = std::sync::Arc::new(alice);
    let proxy = std::sync::Arc::new(proxy);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (alice, proxy, stop) = (alice.clone(), proxy.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match alice.me(&proxy).await {
                    (200, Some(user), _) if user == "alice" => ok += 1,
                    other => failed.push(other),
                }
            }
            (ok, failed)
        }));
    }
    // 100 reloads, each one swapping the route's mode while requests are in flight.
    let modes = [
        Mode::Overlap,
        Mode::Redis,
        Mode::Legacy,
        Mode::Redis,
        Mode::Overlap,
        Mode::Redis,
    ];
    config.route.logout_paths.clear();
    config.use_old_store(OldStore::whoami("app", "/me"));
    for mode in modes.iter().cycle().take(100) {
        config.mode = *mode;
        proxy.reload(&config).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for worker in workers {
        let (ok, failed) = worker.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during reloads: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 50, "the load loop ran ({total} requests)");
}

#[tokio::test]
async fn signed_identity_verifies_with_the_shared_secret() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &app);
    config.identity.signature_secret = Some("0123456789abcdef0123".into());
    let proxy = ProxyProcess::start(&config).await;
    let cookie = test_app_login(&proxy, "gina").await;
    let echo: serde_json::Value = json_of(
        reqwest::Client::new()
            .get(proxy.url("/echo"))
            .header("cookie", &cookie)
            .header("x-auth-signature", "t=1,v1=forged"),
    )
    .await;
    let headers = &echo["headers"];
    let signature = headers["x-auth-signature"].as_array().unwrap();
    assert_eq!(
        signature.len(),
        1,
        "the client's forged signature was removed"
    );
    let value = signature[0].as_str().unwrap();
    let (t, v1) = value
        .strip_prefix("t=")
        .unwrap()
        .split_once(",v1=")
        .unwrap();
    // What the app computes (see the README): v1, t, user, roles, email.
    let text = format!(
        "v1\n{t}\n{}\n{}\n{}",
        headers["x-auth-user"][0].as_str().unwrap(),
        headers["x-auth-roles"][0].as_str().unwrap(),
        headers["x-auth-email"][0].as_str().unwrap()
    );
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef0123").unwrap();
    mac.update(text.as_bytes());
    assert_eq!(v1, hex::encode(mac.finalize().into_bytes()));
}

#[tokio::test]
async fn sessions_cli_lists_and_revokes() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let config = test_app_config(&redis, &app);
    let proxy = ProxyProcess::start(&config).await;
    let one = test_app_login(&proxy, "hank").await;
    let two = test_app_login(&proxy, "hank").await;
    let cli = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_unstick"))
            .arg("sessions")
            .arg("--config")
            .arg(proxy.config_path())
            .args(args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, listed) = cli(&["list", "--user", "hank"]);
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 2);

    // The form earlier versions listed (the whole digest in hex) is still accepted.
    let first = legacy_session_hash(one.split_once('=').unwrap().1);
    assert!(cli(&["revoke", &first]).0);
    assert_eq!(user_seen(&proxy, &one).await, None);
    assert_eq!(user_seen(&proxy, &two).await.as_deref(), Some("hank"));
    let listed_form = session_hash(one.split_once('=').unwrap().1);
    assert!(
        !cli(&["revoke", &listed_form]).0,
        "revoking twice reports failure"
    );

    let (ok, out) = cli(&["revoke-user", "hank"]);
    assert!(ok && out.contains("revoked 1"), "{out}");
    assert_eq!(user_seen(&proxy, &two).await, None);
}

#[tokio::test]
async fn every_request_carries_a_request_id_and_logs_never_hold_session_ids() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let proxy = ProxyProcess::start(&test_app_config(&redis, &app)).await;
    let cookie = test_app_login(&proxy, "ivy").await;
    let response = reqwest::Client::new()
        .get(proxy.url("/echo"))
        .header("cookie", &cookie)
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["headers"]["x-request-id"][0], "trace-42");
    let generated = reqwest::Client::new()
        .get(proxy.url("/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(generated.headers()["x-request-id"].len(), 32);
    assert!(
        !proxy.logs().contains(cookie.split_once('=').unwrap().1),
        "raw session id in the logs"
    );
}

/// `listener.runtime = "per-core"`: a worker thread per core, each accepting on its own
/// listener on the one address. Every connection (fresh ones may land on any worker) gets the
/// session from Redis, a reload reaches every worker, and SIGTERM stops every listener and
/// lets the requests in flight on all of them finish before exit 0.
#[tokio::test]
async fn per_core_workers_serve_sessions_reload_together_and_drain_on_sigterm() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &app);
    config.listener.runtime = Some("per-core".into());
    let mut proxy = ProxyProcess::start(&config).await;

    let alice = test_app_login(&proxy, "alice").await;
    for _ in 0..8 {
        let seen = echo(&proxy, Some(&alice)).await;
        assert_eq!(seen["headers"]["x-auth-user"], serde_json::json!(["alice"]));
    }

    config.listener.trust_forwarded_headers = true;
    proxy.reload(&config).await;
    for _ in 0..8 {
        let seen = json_of(
            reqwest::Client::new()
                .get(proxy.url("/echo"))
                .header("X-Forwarded-For", "203.0.113.7"),
        )
        .await;
        assert_eq!(
            seen["headers"]["x-forwarded-for"],
            serde_json::json!(["203.0.113.7, 127.0.0.1"])
        );
    }

    // Slow requests on connections of their own, so that they are spread over the workers.
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let url = proxy.url("/slow?ms=2000");
            tokio::spawn(async move {
                let response = reqwest::Client::new().get(url).send().await.unwrap();
                (response.status(), response.text().await.unwrap())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(slow.iter().all(|request| !request.is_finished()));

    signal(proxy.pid(), "TERM");
    assert!(
        stops_accepting(proxy.address).await,
        "still accepting connections after SIGTERM"
    );
    for request in slow {
        let (status, body) = request.await.unwrap();
        assert_eq!((status.as_u16(), body.as_str()), (200, "slow answer"));
    }
    let exit = proxy.wait_for_exit(Duration::from_secs(15)).await;
    assert_eq!(exit.code(), Some(0), "logs:\n{}", proxy.logs());
}

/// Sessions and user indexes as the previous release wrote them (a hash per session with the
/// JSON record in `rec`; key names and index members the whole SHA-256 in hex; an index of
/// the release before scored by creation) still resolve after the upgrade, "log out
/// everywhere" finds them, and the id form that release listed still revokes one.
#[tokio::test]
async fn sessions_of_the_earlier_redis_layout_survive_the_upgrade() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let client = redis.client().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let ttl: i64 = 1_800_000 + 60_000;
    use fred::prelude::*;
    let sessions = [
        ("alice-laptop-0001", "alice"),
        ("alice-phone-0002", "alice"),
        ("bob-desk-0003", "bob"),
    ];
    for (id, user) in sessions {
        let key = format!("test:s:{}", legacy_session_hash(id));
        let record = serde_json::json!({
            "identity": {"user": user, "roles": [], "email": null, "attributes": {}},
            "created_ms": now - 1000, "expires_ms": now + 3_600_000, "idle_ms": 1_800_000,
            "origin": "t", "user_agent": format!("{id}-agent"), "client_ip": "127.0.0.1",
        });
        let fields = vec![
            ("rec", record.to_string()),
            ("seen", now.to_string()),
            ("abs", (now + 3_600_000).to_string()),
            ("idle", "1800000".to_string()),
        ];
        let _: i64 = client.hset(&key, fields).await.unwrap();
        let _: i64 = client.pexpire(&key, ttl, None).await.unwrap();
    }
    let end = (now + ttl as u64) as f64;
    let alice_index = format!("test:u:{}", legacy_session_hash("alice"));
    let entries = vec![
        (0.0, "~".to_string()),
        (end, legacy_session_hash("alice-laptop-0001")),
        (end, legacy_session_hash("alice-phone-0002")),
    ];
    let _: i64 = client
        .zadd(&alice_index, None, None, false, false, entries)
        .await
        .unwrap();
    let _: i64 = client.pexpire(&alice_index, ttl, None).await.unwrap();
    // Scored by creation, the format before scores by end.
    let bob_index = format!("test:u:{}", legacy_session_hash("bob"));
    let entries = vec![((now - 1000) as f64, legacy_session_hash("bob-desk-0003"))];
    let _: i64 = client
        .zadd(&bob_index, None, None, false, false, entries)
        .await
        .unwrap();
    let _: i64 = client.pexpire(&bob_index, ttl, None).await.unwrap();

    let config = test_app_config(&redis, &app);
    let proxy =
        ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await;
    for (id, user) in sessions {
        let cookie = format!("sid={id}");
        assert_eq!(
            user_seen(&proxy, &cookie).await.as_deref(),
            Some(user),
            "{id}"
        );
    }
    let listed = json_of(admin(&proxy, reqwest::Method::GET, "/sessions?user=alice")).await;
    let listed = listed["sessions"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed
        .iter()
        .all(|s| s["id_hash"].as_str().unwrap().len() == 22));

    let revoked = json_of(admin(
        &proxy,
        reqwest::Method::DELETE,
        "/sessions?user=alice",
    ))
    .await;
    assert_eq!(revoked["revoked"], 2, "{revoked}");
    assert_eq!(user_seen(&proxy, "sid=alice-laptop-0001").await, None);
    assert_eq!(user_seen(&proxy, "sid=alice-phone-0002").await, None);
    assert_eq!(
        user_seen(&proxy, "sid=bob-desk-0003").await.as_deref(),
        Some("bob")
    );
    let listed = json_of(admin(&proxy, reqwest::Method::GET, "/sessions?user=bob")).await;
    assert_eq!(listed["sessions"].as_array().unwrap().len(), 1, "{listed}");

    let hex = legacy_session_hash("bob-desk-0003");
    let one = admin(&proxy, reqwest::Method::DELETE, &format!("/sessions/{hex}"));
    assert_eq!(status(one).await, 200);
    assert_eq!(user_seen(&proxy, "sid=bob-desk-0003").await, None);

    // Once converted, no key is named in hex, and the layout is marked current.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while redis.keys("test:layout").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            redis.keys("*").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let keys = redis.keys("test:*").await;
    assert!(
        keys.iter()
            .all(|k| k.rsplit(':').next().unwrap().len() != 64),
        "{keys:?}"
    );
    // From then on a miss costs one lookup: it no longer looks for an earlier key.
    let count = |metrics: &str, command: &str| -> u64 {
        let line =
            format!("unstick_redis_command_duration_seconds_count{{command=\"{command}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line.as_str()))
            .map_or(0, |n| n.trim().parse().unwrap())
    };
    let before = admin_metrics(&proxy, TOKEN).await;
    assert_eq!(user_seen(&proxy, "sid=nobody-0004").await, None);
    let after = admin_metrics(&proxy, TOKEN).await;
    assert_eq!(count(&after, "load"), count(&before, "load") + 1);
    assert_eq!(count(&after, "convert"), count(&before, "convert"));
}
