//! The zero-logout migration: users logged in before unstick keep their login through
//! `legacy` -> `overlap` -> `redis`, rolling deploys and a rollback, and no request ever shows
//! another user's identity.

mod support;

use std::collections::HashSet;
use support::*;
use unstick::demo::LegacyAppConfig;

/// Every user sees exactly their own identity, several times.
async fn everyone_still_logged_in(proxy: &impl RunningProxy, users: &[(&str, &Browser)]) {
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
    config.mode = Mode::Overlap;
    // The binary: the mode changes below are reloads on SIGHUP.
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
    config.mode = Mode::Redis;
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
    config.mode = Mode::Legacy;
    proxy.reload(&config).await;
    everyone_still_logged_in(&proxy, &users).await;
    config.mode = Mode::Overlap;
    proxy.reload(&config).await;
    everyone_still_logged_in(&proxy, &users).await;
    config.mode = Mode::Redis;
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
    config.mode = Mode::Overlap;
    let proxy = start_server(&config).await;
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
    config.upstream.lb_cookie = Some((
        "SERVERID".into(),
        vec![("s1".into(), "a".into()), ("s2".into(), "b".into())],
    ));
    config.mode = Mode::Legacy;
    let proxy = start_server(&config).await;
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
    let mut config =
        ProxyConfig::for_test_app(&redis.url(), &[("one", one.address), ("two", two.address)]);
    config.route.logout_paths.clear();
    config.use_old_store(OldStore::whoami("app", "/whoami").with("miss_ttl", "10m"));
    config.mode = Mode::Overlap;
    let proxy = start_server(&config).await;

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

/// A logout while another request of the same session is still at the old store wins: that
/// request's copy does not bring the session back over the logout. (Fixed: the copy-forward
/// was a plain write, over the marker the logout left.)
#[tokio::test]
async fn a_logout_during_an_old_store_lookup_is_not_undone_by_its_copy() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("one", app.address)]);
    // The app's answer to the old store's lookup is held, once read, until the test lets it go.
    config.use_old_store(OldStore::whoami("app", "/whoami?hold=1"));
    config.mode = Mode::Overlap;
    let proxy = start_server(&config).await;
    // Logged in before unstick: only the app holds the session.
    let login = reqwest::Client::new()
        .post(format!("http://{}/login?user=alice", app.address))
        .send()
        .await
        .unwrap();
    let cookie = cookie_set_by(&login);

    let page = in_flight(
        reqwest::Client::new()
            .get(proxy.url("/echo"))
            .header("cookie", &cookie),
    );
    app.until_held(1).await;
    let logout = in_flight(
        reqwest::Client::new()
            .post(proxy.url("/logout"))
            .header("cookie", &cookie),
    );
    app.until_held(2).await;
    // The logout's lookup answers first, and the logout ends the session; then the page's.
    app.release_newest_held();
    assert_eq!(logout.await.unwrap().status(), 200);
    app.release_held();
    let page: serde_json::Value = page.await.unwrap().json().await.unwrap();
    assert!(
        page["headers"].get("x-auth-user").is_none(),
        "answered after the logout, as alice: {page}"
    );

    assert_eq!(
        user_seen(&proxy, &cookie).await,
        None,
        "the logged-out session is back; logs:\n{}",
        proxy.logs()
    );
    let key = format!("test:s:{}", session_hash(cookie.trim_start_matches("sid=")));
    let value: Option<String> = fred::interfaces::KeysInterface::get(&redis.client().await, &key)
        .await
        .unwrap();
    assert_eq!(value.as_deref(), Some("-"));
}

#[tokio::test]
async fn a_slow_old_store_does_not_stall_requests() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("one", app.address)]);
    // The old store answers after a minute; its timeout is 300 ms.
    config.route.logout_paths.clear();
    config.use_old_store(OldStore::whoami("slow", "/slow?ms=60000").with("timeout", "300ms"));
    config.mode = Mode::Overlap;
    let proxy = start_server(&config).await;
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

#[tokio::test]
async fn an_express_session_in_connect_redis_is_copied_forward_with_its_lifetime() {
    let redis = RedisServer::start().await;
    let old_redis = RedisServer::start().await;
    // connect-redis wrote this session (express-session, secret "keyboard cat"), 2 hours left.
    let id = "kAuMTZsG0rGFHBzTdTRxWxg3XvRa4Rg_";
    let wire =
        "s%3AkAuMTZsG0rGFHBzTdTRxWxg3XvRa4Rg_.EVZ80zzGIOx6wXZyoVdkFMPh7U%2F%2FjOF%2FRhgCOUTTWLA";
    let session = serde_json::json!({
        "cookie": { "originalMaxAge": 7200000, "httpOnly": true, "path": "/" },
        "passport": { "user": "olga" },
        "roles": ["editor"]
    });
    let client = old_redis.client().await;
    let _: () = fred::interfaces::KeysInterface::set(
        &client,
        format!("sess:{id}"),
        session.to_string(),
        Some(fred::types::Expiration::EX(7200)),
        None,
        false,
    )
    .await
    .unwrap();

    let app = TestApp::start().await;
    let mut config = ProxyConfig::new(&redis.url(), &[("t", app.address)]);
    config.session.cookie = "connect.sid".into();
    config.session.id_format = IdFormat::ExpressSigned {
        secrets: vec!["new secret".into(), "keyboard cat".into()],
    };
    config.capture = Capture::whoami("/whoami");
    config.route.logout_paths.clear();
    config.use_old_store(
        OldStore::new("connect-redis", "redis")
            .with("url", &old_redis.url())
            .with("key", "sess:{id}")
            .with("format", "json")
            .with("user", "/passport/user"),
    );
    config.mode = Mode::Overlap;
    let proxy = start_server(&config).await;

    let echo = echo(&proxy, Some(&format!("connect.sid={wire}"))).await;
    assert_eq!(echo["headers"]["x-auth-user"], serde_json::json!(["olga"]));
    assert_eq!(
        echo["headers"]["x-auth-roles"],
        serde_json::json!(["editor"])
    );
    assert_eq!(
        echo["headers"]["cookie"],
        serde_json::json!([format!("connect.sid={wire}")]),
        "cookie passed unchanged"
    );
    let key = format!("test:s:{}", session_hash(id));
    let ttl: i64 = fred::interfaces::KeysInterface::ttl(&redis.client().await, &key)
        .await
        .unwrap();
    assert!(
        ttl > 7000,
        "the copy keeps the 2 hours it had left, got {ttl} s"
    );
    assert!(proxy.logs().contains("copied forward from old store"));
    assert!(!proxy.logs().contains(id), "raw session id in the logs");
}

#[tokio::test]
async fn a_php_file_session_is_copied_forward() {
    let redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sess_abcdef0123456789"),
        "user|s:4:\"paul\";roles|a:1:{i:0;s:5:\"admin\";}",
    )
    .unwrap();
    let app = TestApp::start().await;
    let mut config = ProxyConfig::new(&redis.url(), &[("t", app.address)]);
    config.session.cookie = "PHPSESSID".into();
    config.capture = Capture::whoami("/whoami");
    config.route.logout_paths.clear();
    config.use_old_store(OldStore::php_files("php", dir.path()).with("gc_maxlifetime", "24m"));
    config.mode = Mode::Overlap;
    let proxy = start_server(&config).await;
    assert_eq!(
        user_seen(&proxy, "PHPSESSID=abcdef0123456789")
            .await
            .as_deref(),
        Some("paul")
    );
    assert_eq!(user_seen(&proxy, "PHPSESSID=../../etc/passwd").await, None);
    // Now in Redis: it holds even when the old file is gone.
    std::fs::remove_file(dir.path().join("sess_abcdef0123456789")).unwrap();
    assert_eq!(
        user_seen(&proxy, "PHPSESSID=abcdef0123456789")
            .await
            .as_deref(),
        Some("paul")
    );
}

#[tokio::test]
async fn a_laravel_file_session_is_copied_forward_from_its_encrypted_cookie() {
    // Cookies encrypted by Laravel 8 itself (tests/data/make_laravel_cookies.php).
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("data/laravel_cookies.json")).unwrap();
    let same_id: Vec<&serde_json::Value> = fixture["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"].as_str().unwrap().starts_with("the same id"))
        .collect();
    let id = same_id[0]["id"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(id),
        "a:2:{s:6:\"_token\";s:40:\"TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT\";\
         s:50:\"login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d\";i:7;}",
    )
    .unwrap();

    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.session.cookie = "laravel_session".into();
    config.session.id_format = IdFormat::Laravel {
        app_keys: vec![
            fixture["app_keys"]["current"].as_str().unwrap().into(),
            fixture["app_keys"]["old"].as_str().unwrap().into(),
        ],
    };
    config.use_old_store(
        OldStore::php_files("laravel", dir.path())
            .with("file_prefix", "")
            .with("gc_maxlifetime", "2h")
            .with(
                "user",
                "/login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d",
            ),
    );
    config.mode = Mode::Overlap;
    let proxy = start_server(&config).await;
    for cookie in &same_id {
        let cookie = format!("laravel_session={}", cookie["value"].as_str().unwrap());
        assert_eq!(user_seen(&proxy, &cookie).await.as_deref(), Some("7"));
    }
    // Both encryptions are one session: copied forward once.
    assert_eq!(
        redis.keys("test:s:*").await,
        [format!("test:s:{}", session_hash(id))]
    );
    // A cookie encrypted with a key the app does not have is no session.
    let foreign = fixture["cookies"][2]["value"].as_str().unwrap();
    assert_eq!(
        user_seen(&proxy, &format!("laravel_session={foreign}")).await,
        None
    );
}

#[tokio::test]
async fn legacy_mode_keeps_a_new_login_on_its_instance_even_without_an_identity() {
    let (redis, _a, _b, proxy) = legacy_pair(|config| {
        // Day one: no usable identity source yet, and no sticky cookie from an old balancer.
        config.capture = Capture::whoami("/not-there");
        config.mode = Mode::Legacy;
    })
    .await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    let mut instances = HashSet::new();
    for _ in 0..6 {
        let (status, user, instance) = alice.me(&proxy).await;
        assert_eq!((status, user.as_deref()), (200, Some("alice")));
        instances.insert(instance.unwrap());
    }
    assert_eq!(
        instances.len(),
        1,
        "every request went to the instance that holds the session"
    );
    assert!(
        redis.keys("test:s:*").await.is_empty(),
        "no identity, so no session record"
    );
}

#[tokio::test]
async fn legacy_mode_does_not_depend_on_redis() {
    let (mut redis, _a, b, proxy) = legacy_pair(|config| config.mode = Mode::Legacy).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    let bob = login_directly(b.address, "bob").await;
    redis.kill();
    // Redis gone: the rollback mode still answers, as before unstick, for the login it saw
    // (round robin may land elsewhere, which the app itself then treats as anonymous) and
    // for anyone without a session.
    for _ in 0..4 {
        let (status, _, _) = alice.me(&proxy).await;
        assert_eq!(status, 200);
        let (status, _, _) = bob.me(&proxy).await;
        assert_eq!(status, 200);
        assert_eq!(Browser::new().me(&proxy).await.0, 200);
    }
}
