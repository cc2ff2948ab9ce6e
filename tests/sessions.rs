//! A user's session through unstick in `redis` mode: login, hops between instances, restarts,
//! logout, expiry, signed cookies, and identity headers nobody can forge.

mod support;

use std::time::Duration;
use support::*;
use unstick::demo::LegacyAppConfig;

#[tokio::test]
async fn login_on_one_instance_holds_on_every_instance() {
    let (redis, _a, _b, proxy) = legacy_pair(|_| {}).await;

    let mut alice = Browser::new();
    let answer = alice.login(&proxy, "alice").await;
    assert_eq!(answer["user"], "alice");

    let mut instances = std::collections::HashSet::new();
    for _ in 0..10 {
        let (status, user, instance) = alice.me(&proxy).await;
        assert_eq!(status, 200);
        assert_eq!(user.as_deref(), Some("alice"));
        instances.insert(instance.unwrap());
    }
    assert_eq!(
        instances.len(),
        2,
        "round robin reached both instances: {instances:?}"
    );

    // Redis holds the session under the hash of its id, never the id itself.
    let id = alice.cookie_value();
    let keys = redis.keys("test:s:*").await;
    assert_eq!(keys, vec![format!("test:s:{}", session_hash(&id))]);
    // The per-user index is keyed by a hash of the user id too.
    assert_eq!(
        redis.keys("test:u:*").await,
        vec![format!("test:u:{}", session_hash("alice"))]
    );
    assert_eq!(
        redis.keys("test:[^l]*").await.len(),
        2,
        "{:?}",
        redis.keys("*").await
    );
    let client = redis.client().await;
    let stored: Option<String> = fred::interfaces::KeysInterface::get(&client, &keys[0])
        .await
        .unwrap();
    let record = stored_record(stored.clone()).unwrap();
    assert!(record.contains("\"u\":\"alice\""), "{record}");
    assert!(!record.contains(&id), "raw id stored: {stored:?}");
    assert!(!proxy.logs().contains(&id), "raw session id in the logs");
}

#[tokio::test]
async fn two_users_at_once_never_mix() {
    let (_redis, _a, _b, proxy) = legacy_pair(|_| {}).await;

    let mut alice = Browser::new();
    let mut bob = Browser::new();
    alice.login(&proxy, "alice").await;
    bob.login(&proxy, "bob").await;
    let anonymous = Browser::new();
    for _ in 0..6 {
        let (alice_seen, bob_seen, nobody) =
            tokio::join!(alice.me(&proxy), bob.me(&proxy), anonymous.me(&proxy));
        assert_eq!(alice_seen.1.as_deref(), Some("alice"));
        assert_eq!(bob_seen.1.as_deref(), Some("bob"));
        assert_eq!(nobody.1, None);
    }
}

#[tokio::test]
async fn restarting_every_instance_keeps_the_login() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let (a_address, b_address) = (a.address, b.address);
    let proxy = start_server(&ProxyConfig::new(
        &redis.url(),
        &[("a", a_address), ("b", b_address)],
    ))
    .await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;

    // A rolling deploy: each instance restarts, losing its in-memory sessions.
    a.stop().await;
    let (_, user, instance) = alice.me(&proxy).await;
    assert_eq!(
        (user.as_deref(), instance.as_deref()),
        (Some("alice"), Some("b")),
        "while a is down"
    );
    let _a = legacy_app_with(LegacyAppConfig::new("a"), Some(a_address)).await;
    b.stop().await;
    let _b = legacy_app_with(LegacyAppConfig::new("b"), Some(b_address)).await;

    for _ in 0..4 {
        let (status, user, _) = alice.me(&proxy).await;
        assert_eq!((status, user.as_deref()), (200, Some("alice")));
    }
}

#[tokio::test]
async fn logout_ends_the_session_everywhere() {
    let (redis, _a, _b, proxy) = legacy_pair(|_| {}).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    let stale_cookie = alice.cookie.clone();
    alice.me(&proxy).await;

    assert_eq!(alice.logout(&proxy).await, 200);
    assert_eq!(alice.cookie, None, "the app cleared its cookie");
    assert!(
        redis.keys("test:s:*").await.is_empty(),
        "session deleted from Redis"
    );

    // Even a client that keeps sending the old cookie is anonymous on every instance: the
    // logout went to the instance that held the login, so no copy survives anywhere.
    let replay = Browser {
        cookie: stale_cookie,
        ..Browser::new()
    };
    for _ in 0..4 {
        let (status, user, _) = replay.me(&proxy).await;
        assert_eq!((status, user), (200, None));
    }
}

/// A logout at another spelling of the logout path, which the app routes as that path
/// (Tomcat's `;jsessionid=` in rewritten links, a doubled or trailing `/`, `%6C` for `l`),
/// ends the session as the path itself does. (Fixed: only the exact path was a logout; the
/// app logged the user out, and unstick kept the session, its cleared cookie taken for
/// housekeeping.)
#[tokio::test]
async fn a_logout_at_another_spelling_of_the_logout_path_ends_the_session() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    let proxy = start_server(&config).await;
    for spelling in [
        "/logout;jsessionid=A1B2C3",
        "//logout",
        "/logout/",
        "/%6Cogout",
    ] {
        let cookie = test_app_login(&proxy, "alice").await;
        let response = reqwest::Client::new()
            .post(proxy.url(spelling))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{spelling}");
        assert_eq!(user_seen(&proxy, &cookie).await, None, "{spelling}");
    }
    assert!(redis.keys("test:s:*").await.is_empty(), "sessions left");
}

#[tokio::test]
async fn idle_sessions_expire_and_used_ones_slide() {
    let (redis, _a, _b, proxy) = legacy_pair(|config| {
        config.session.idle_timeout = "2s".into();
    })
    .await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;

    // Used every 0.7 s for 4 s: twice the idle timeout, still logged in.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(alice.me(&proxy).await.1.as_deref(), Some("alice"));
    }
    // Then left alone past the idle timeout (plus its renewal slack).
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let (status, user, instance) = alice.me(&proxy).await;
    assert_eq!(status, 200);
    // The instance that saw the login still remembers it in memory; any other does not.
    // Ask until the other instance answers, which shows the proxy no longer vouches for alice.
    let other = if instance.as_deref() == Some("a") {
        alice.me(&proxy).await
    } else {
        (status, user, instance)
    };
    assert_eq!(other.2.as_deref(), Some("b"));
    assert_eq!(other.1, None, "idle session still accepted");
    assert!(
        redis.keys("test:s:*").await.is_empty(),
        "idle session still in Redis"
    );
}

#[tokio::test]
async fn absolute_lifetime_ends_even_an_active_session() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.session.idle_timeout = "2s".into();
    config.session.absolute_lifetime = "3s".into();
    let proxy = start_server(&config).await;
    let cookie = test_app_login(&proxy, "carol").await;

    assert_eq!(user_seen(&proxy, &cookie).await.as_deref(), Some("carol"));
    let mut last = user_seen(&proxy, &cookie).await;
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = user_seen(&proxy, &cookie).await;
    }
    assert_eq!(
        last, None,
        "active for 4.5 s, past the 3 s absolute lifetime"
    );
}

#[tokio::test]
async fn remember_me_keeps_the_cookie_lifetime() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let proxy = start_server(&ProxyConfig::new(&redis.url(), &[("a", a.address)])).await;
    let response = Browser::new()
        .post(&proxy.url("/login"))
        .form(&[("user", "dave"), ("remember", "on")])
        .send()
        .await
        .unwrap();
    assert!(response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=2592000"));
    let keys = redis.keys("test:s:*").await;
    let ttl: i64 = fred::interfaces::KeysInterface::ttl(&redis.client().await, &keys[0])
        .await
        .unwrap();
    assert!(
        ttl > 29 * 24 * 3600,
        "a 30-day cookie got a {ttl} s session"
    );
}

#[tokio::test]
async fn express_signed_cookies_verify_with_old_secrets_and_reject_tampering() {
    let redis = RedisServer::start().await;
    // The app still signs with its previous secret; unstick knows the new one first.
    let app_config = LegacyAppConfig {
        signing_secret: Some("old secret".into()),
        ..LegacyAppConfig::new("a")
    };
    let a = legacy_app_with(app_config.clone(), None).await;
    let b = legacy_app_with(
        LegacyAppConfig {
            name: "b".into(),
            ..app_config
        },
        None,
    )
    .await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.session.id_format = IdFormat::ExpressSigned {
        secrets: vec!["new secret".into(), "old secret".into()],
    };
    let proxy = start_server(&config).await;

    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    assert!(
        alice.cookie_value().starts_with("s%3A"),
        "express-style cookie: {}",
        alice.cookie_value()
    );
    for _ in 0..4 {
        assert_eq!(alice.me(&proxy).await.1.as_deref(), Some("alice"));
    }
    // The Redis key is the hash of the bare id, as unstick reads it from the signed value.
    let value = alice.cookie_value();
    let decoded = value
        .replace("%3A", ":")
        .replace("%2F", "/")
        .replace("%2B", "+")
        .replace("%3D", "=");
    let id = decoded
        .strip_prefix("s:")
        .unwrap()
        .rsplit_once('.')
        .unwrap()
        .0;
    assert_eq!(
        redis.keys("test:s:*").await,
        vec![format!("test:s:{}", session_hash(id))]
    );

    // One character of the signature changed: not a session, on any instance.
    let (head, signature) = value.rsplit_once('.').unwrap();
    let flipped: String = signature
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 0 {
                if c == 'A' {
                    'B'
                } else {
                    'A'
                }
            } else {
                c
            }
        })
        .collect();
    let tampered = Browser {
        cookie: Some(format!("demo.sid={head}.{flipped}")),
        ..Browser::new()
    };
    for _ in 0..4 {
        let (status, user, _) = tampered.me(&proxy).await;
        assert_eq!((status, user), (200, None));
    }
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_app() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    let proxy = start_server(&config).await;
    let http = reqwest::Client::new();
    let spoof = |request: reqwest::RequestBuilder| {
        request
            .header("X-Auth-User", "mallory")
            .header("x-auth-user", "mallory2")
            .header("X_Auth_User", "mallory3")
            .header("X-AUTH-ROLES", "admin")
            .header("x_auth_email", "m@evil.test")
            .header("Connection", "x-auth-user, X-Auth-Roles")
    };
    let owned = [
        "x-auth-user",
        "x_auth_user",
        "x-auth-roles",
        "x-auth-email",
        "x_auth_email",
    ];

    // Anonymous: none of the forged headers arrive.
    let echo: serde_json::Value = json_of(spoof(http.get(proxy.url("/echo")))).await;
    for name in owned {
        assert!(
            echo["headers"].get(name).is_none(),
            "{name} reached the app: {echo}"
        );
    }

    // Logged in: exactly one copy of each, from the session.
    let login = http
        .post(proxy.url("/login?user=erin"))
        .send()
        .await
        .unwrap();
    let cookie = cookie_set_by(&login);
    let echo: serde_json::Value =
        json_of(spoof(http.get(proxy.url("/echo"))).header("cookie", &cookie)).await;
    assert_eq!(echo["headers"]["x-auth-user"], serde_json::json!(["erin"]));
    assert_eq!(
        echo["headers"]["x-auth-roles"],
        serde_json::json!(["member"])
    );
    assert_eq!(
        echo["headers"]["x-auth-email"],
        serde_json::json!(["erin@example.test"])
    );
    assert!(echo["headers"].get("x_auth_user").is_none());
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"])
    );
}

#[tokio::test]
async fn identity_from_a_response_header_is_captured_and_hidden_from_the_client() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::new(&redis.url(), &[("t", app.address)]);
    config.session.cookie = "sid".into();
    config.capture = Capture::ResponseHeader("X-Unstick-Identity".into());
    let proxy = start_server(&config).await;
    let http = reqwest::Client::new();
    let login = http
        .post(proxy.url("/login?user=frank"))
        .send()
        .await
        .unwrap();
    assert!(
        login.headers().get("x-unstick-identity").is_none(),
        "internal header leaked to the client"
    );
    let cookie = cookie_set_by(&login);
    let echo = echo(&proxy, Some(&cookie)).await;
    assert_eq!(echo["headers"]["x-auth-user"], serde_json::json!(["frank"]));
    assert_eq!(
        echo["headers"]["x-auth-email"],
        serde_json::json!(["frank@example.test"])
    );
}

/// `[identity.capture]` reading the app's "Logged in as …" page at `/account`.
fn html_capture(redis: &RedisServer, app: &TestApp, picks: &[(&str, &str)]) -> ProxyConfig {
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.capture = Capture::WhoamiHtml {
        path: "/account".into(),
        picks: picks
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect(),
    };
    config
}

#[tokio::test]
async fn a_login_is_captured_from_the_apps_html_page_by_selector_or_pattern() {
    let by_selector: &[(&str, &str)] = &[
        ("user_selector", "#user"),
        ("roles_selector", ".roles li"),
        ("email_selector", "a.email"),
    ];
    let by_pattern: &[(&str, &str)] = &[
        ("user_pattern", r"Logged in as <b id=user>\s*(\w+)"),
        ("roles_pattern", r"<li>(\w+)</li>"),
        ("email_pattern", r"mailto:([^']+)"),
    ];
    let user_only: &[(&str, &str)] = &[("user_pattern", r"Logged in as <b id=user>\s*(\w+)")];
    for (picks, roles, email) in [
        (by_selector, Some(vec!["member"]), Some("ivan@example.test")),
        (by_pattern, Some(vec!["member"]), Some("ivan@example.test")),
        (user_only, None, None),
    ] {
        let redis = RedisServer::start().await;
        let app = TestApp::start().await;
        let proxy = start_server(&html_capture(&redis, &app, picks)).await;
        let login = reqwest::Client::new()
            .post(proxy.url("/login?user=ivan"))
            .send()
            .await
            .unwrap();
        let cookie = cookie_set_by(&login);
        let echo = echo(&proxy, Some(&cookie)).await;
        let headers = &echo["headers"];
        assert_eq!(
            headers["x-auth-user"],
            serde_json::json!(["ivan"]),
            "{picks:?}"
        );
        assert_eq!(
            headers.get("x-auth-email"),
            email.map(|e| serde_json::json!([e])).as_ref(),
            "{picks:?}"
        );
        match roles {
            Some(roles) => assert_eq!(
                headers["x-auth-roles"],
                serde_json::json!(roles),
                "{picks:?}"
            ),
            None => assert!(
                headers
                    .get("x-auth-roles")
                    .is_none_or(|r| r == &serde_json::json!([""])),
                "{picks:?}: {headers}"
            ),
        }
        assert_eq!(redis.keys("test:s:*").await.len(), 1, "{picks:?}");
    }
}

#[tokio::test]
async fn a_logged_out_html_page_means_anonymous() {
    for picks in [
        [("user_selector", "#user")],
        [("user_pattern", r"Logged in as <b id=user>\s*(\w*)")],
    ] {
        let redis = RedisServer::start().await;
        let app = TestApp::start().await;
        let proxy = start_server(&html_capture(&redis, &app, &picks)).await;
        // `/page` hands out a new session id with no login: the account page shows nobody.
        let page = reqwest::Client::new()
            .get(proxy.url("/page"))
            .send()
            .await
            .unwrap();
        let cookie = cookie_set_by(&page);
        let echo = echo(&proxy, Some(&cookie)).await;
        assert!(
            echo["headers"].get("x-auth-user").is_none(),
            "{picks:?}: {echo}"
        );
        assert!(redis.keys("test:s:*").await.is_empty(), "{picks:?}");
        assert!(
            app.account_calls() >= 1,
            "the page was asked about the new cookie"
        );
        assert_eq!(app.whoami_calls(), 0, "the JSON endpoint was not asked");
    }
}

#[tokio::test]
async fn the_whoami_old_store_reads_an_existing_session_from_the_html_page() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    // Logged in before unstick: the session lives only in the app's memory.
    let login = reqwest::Client::new()
        .post(format!("http://{}/login?user=judy", app.address))
        .send()
        .await
        .unwrap();
    let cookie = cookie_set_by(&login);
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.mode = Mode::Overlap;
    config.use_old_store(
        OldStore::whoami("account-page", "/account")
            .with("format", "html")
            .with("user_selector", "#user")
            .with("roles_pattern", r"<li>(\w+)</li>"),
    );
    let proxy = start_server(&config).await;
    let echo = echo(&proxy, Some(&cookie)).await;
    assert_eq!(echo["headers"]["x-auth-user"], serde_json::json!(["judy"]));
    assert_eq!(
        echo["headers"]["x-auth-roles"],
        serde_json::json!(["member"])
    );
    assert_eq!(
        redis.keys("test:s:*").await.len(),
        1,
        "copied forward into Redis"
    );
    assert!(app.account_calls() >= 1);
    assert_eq!(app.whoami_calls(), 0, "the JSON endpoint was not asked");
}
