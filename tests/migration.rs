//! The zero-logout migration: users logged in before unstick keep their login through
//! `legacy` -> `overlap` -> `redis`, rolling deploys and a rollback, and no request ever shows
//! another user's identity.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use support::*;
use unstick::demo::LegacyAppConfig;

/// Logs in on one app instance directly, as users did before unstick was placed in front.
async fn login_directly(app: SocketAddr, user: &str) -> Browser {
    let mut browser = Browser::new();
    let response = browser
        .http
        .post(format!("http://{app}/login"))
        .form(&[("user", user)])
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    browser.cookie = Some(cookie.split(';').next().unwrap().to_string());
    browser
}

fn whoami_old_store(config: &mut ProxyConfig) {
    config.extra_tables =
        "[[old_stores]]\nname = \"app\"\nkind = \"whoami\"\npath = \"/me\"\ntimeout = \"1s\"\n"
            .into();
    config.route_extra = "logout_paths = [\"/logout\"]\nold_stores = [\"app\"]".into();
}

/// Every user sees exactly their own identity, several times.
async fn everyone_still_logged_in(proxy: &ProxyProcess, users: &[(&str, &Browser)]) {
    for _ in 0..3 {
        for (name, browser) in users {
            let (status, user, instance) = browser.me(proxy).await;
            assert_eq!(status, 200);
            assert_eq!(
                user.as_deref(),
                Some(*name),
                "{name} got {user:?} from instance {instance:?}"
            );
        }
    }
}

#[tokio::test]
async fn nobody_is_logged_out_from_legacy_through_overlap_to_redis_and_back() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let (a_address, b_address) = (a.address, b.address);

    // Logged in before unstick exists: the sessions live only in each instance's memory.
    let alice = login_directly(a_address, "alice").await;
    let bob = login_directly(b_address, "bob").await;
    let carol = login_directly(a_address, "carol").await;
    let users = [("alice", &alice), ("bob", &bob), ("carol", &carol)];

    // Step 1: unstick in front, in overlap mode. The owner of each session is found by asking
    // the instances (no binding is known yet), and the session is copied into Redis.
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a_address), ("b", b_address)]);
    whoami_old_store(&mut config);
    config.mode = "overlap".into();
    let proxy = ProxyProcess::start(&config).await;
    everyone_still_logged_in(&proxy, &users).await;
    assert_eq!(
        redis.keys("test:s:*").await.len(),
        3,
        "every session copied forward"
    );
    // Sticky-preferred: the owner answers while it is healthy.
    assert_eq!(alice.me(&proxy).await.2.as_deref(), Some("a"));
    assert_eq!(bob.me(&proxy).await.2.as_deref(), Some("b"));

    // Step 2: a rolling deploy. Each restart wipes that instance's in-memory sessions.
    a.stop().await;
    everyone_still_logged_in(&proxy, &users).await;
    let a = legacy_app_with(LegacyAppConfig::new("a"), Some(a_address)).await;
    b.stop().await;
    everyone_still_logged_in(&proxy, &users).await;
    let _b = legacy_app_with(LegacyAppConfig::new("b"), Some(b_address)).await;
    everyone_still_logged_in(&proxy, &users).await;

    // Step 3: redis mode. Round robin now, identity from Redis only.
    config.mode = "redis".into();
    proxy.reload(&config).await;
    everyone_still_logged_in(&proxy, &users).await;
    let instances: HashSet<_> = futures_util::future::join_all((0..6).map(|_| alice.me(&proxy)))
        .await
        .into_iter()
        .filter_map(|(_, _, instance)| instance)
        .collect();
    assert_eq!(
        instances.len(),
        2,
        "redis mode balances over both instances"
    );

    // Step 4: rollback to legacy, then forward again. Still nobody logged out.
    config.mode = "legacy".into();
    proxy.reload(&config).await;
    everyone_still_logged_in(&proxy, &users).await;
    config.mode = "overlap".into();
    proxy.reload(&config).await;
    everyone_still_logged_in(&proxy, &users).await;
    config.mode = "redis".into();
    proxy.reload(&config).await;
    everyone_still_logged_in(&proxy, &users).await;

    // A new user logging in now works as well, and is not confused with anyone.
    let mut dave = Browser::new();
    dave.login(&proxy, "dave").await;
    everyone_still_logged_in(
        &proxy,
        &[
            ("alice", &alice),
            ("bob", &bob),
            ("carol", &carol),
            ("dave", &dave),
        ],
    )
    .await;
    drop(a);
}

#[tokio::test]
async fn logout_during_overlap_is_not_undone_by_the_old_store() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut alice = login_directly(a.address, "alice").await;
    let stale = alice.cookie.clone();

    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    whoami_old_store(&mut config);
    config.mode = "overlap".into();
    let proxy = ProxyProcess::start(&config).await;
    assert_eq!(alice.me(&proxy).await.1.as_deref(), Some("alice"));

    assert_eq!(alice.logout(&proxy).await, 200);
    let replay = Browser {
        cookie: stale,
        ..Browser::new()
    };
    for _ in 0..4 {
        let (status, user, _) = replay.me(&proxy).await;
        assert_eq!((status, user), (200, None), "logged-out session came back");
    }
}

#[tokio::test]
async fn the_previous_load_balancers_sticky_cookie_routes_to_the_owner() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut bob = login_directly(b.address, "bob").await;
    // The old balancer had pinned bob to b with its own cookie.
    bob.cookie = Some(format!("{}; SERVERID=s2", bob.cookie.unwrap()));

    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.upstream_extra =
        "lb_cookie = { name = \"SERVERID\", values = { s1 = \"a\", s2 = \"b\" } }".into();
    config.mode = "legacy".into();
    let proxy = ProxyProcess::start(&config).await;
    // Legacy: exactly as before, every request goes to b, which knows bob.
    for _ in 0..4 {
        let (_, user, instance) = bob.me(&proxy).await;
        assert_eq!(
            (user.as_deref(), instance.as_deref()),
            (Some("bob"), Some("b"))
        );
    }
}

#[tokio::test]
async fn a_junk_cookie_does_not_fan_out_on_every_request() {
    let redis = RedisServer::start().await;
    let one = TestApp::start().await;
    let two = TestApp::start().await;
    let mut config = ProxyConfig::new(&redis.url(), &[("one", one.address), ("two", two.address)]);
    config.cookie = "sid".into();
    config.capture = "source = \"whoami\"\nwhoami_path = \"/whoami\"".into();
    config.extra_tables =
        "[[old_stores]]\nname = \"app\"\nkind = \"whoami\"\npath = \"/whoami\"\nmiss_ttl = \"10m\"\n".into();
    config.route_extra = "old_stores = [\"app\"]".into();
    config.mode = "overlap".into();
    let proxy = ProxyProcess::start(&config).await;

    let http = reqwest::Client::new();
    for _ in 0..20 {
        let response = http
            .get(proxy.url("/echo"))
            .header("cookie", "sid=junk-value")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let echo: serde_json::Value = response.json().await.unwrap();
        assert!(echo["headers"].get("x-auth-user").is_none());
    }
    // One fan-out (each instance asked once), then the miss is remembered.
    assert_eq!(one.whoami_calls() + two.whoami_calls(), 2);
}

#[tokio::test]
async fn a_slow_old_store_does_not_stall_requests() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::new(&redis.url(), &[("one", app.address)]);
    config.cookie = "sid".into();
    config.capture = "source = \"whoami\"\nwhoami_path = \"/whoami\"".into();
    // The old store answers after a minute; its timeout is 300 ms.
    config.extra_tables =
        "[[old_stores]]\nname = \"slow\"\nkind = \"whoami\"\npath = \"/slow?ms=60000\"\ntimeout = \"300ms\"\n".into();
    config.route_extra = "old_stores = [\"slow\"]".into();
    config.mode = "overlap".into();
    let proxy = ProxyProcess::start(&config).await;
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .unwrap();
    for _ in 0..3 {
        let response = http
            .get(proxy.url("/echo"))
            .header("cookie", "sid=someone")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert!(proxy.logs().contains("old store lookup failed"));
}
