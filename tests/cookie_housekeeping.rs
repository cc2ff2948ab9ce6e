//! Sessions the app forgot: once unstick holds a session, the app clearing or replacing its
//! cookie as housekeeping (Django deleting a cookie it has no session for, Rails issuing a new
//! id for one, an id rotated on a privilege change) logs nobody out, while a real logout
//! still ends the session at once, everywhere. With the bundled app made to forget sessions
//! the way frameworks do, and with real Django and Rails.

mod support;

use std::net::SocketAddr;
use support::rails::RAILS_COOKIE;
use support::*;
use unstick::demo::{LegacyApp, LegacyAppConfig, UnknownSession};

const TOKEN: &str = "test-admin-token-0123456789";

/// An instance of the legacy app that treats unknown session cookies as `unknown` does.
async fn app(name: &str, unknown: UnknownSession, address: Option<SocketAddr>) -> LegacyApp {
    let mut config = LegacyAppConfig::new(name);
    config.unknown_session = unknown;
    legacy_app_with(config, address).await
}

/// Every user loads a page three times (following any cookie the answer sets, as a browser
/// does) and sees exactly their own identity.
async fn everyone_still_logged_in(proxy: &impl RunningProxy, users: &mut [(String, Browser)]) {
    for _ in 0..3 {
        for (name, browser) in users.iter_mut() {
            let (status, user, instance) = browser.refresh(proxy).await;
            assert_eq!(status, 200);
            assert_eq!(
                user.as_deref(),
                Some(name.as_str()),
                "{name} was logged out (answered by {instance:?}); proxy logs:\n{}",
                proxy.logs()
            );
            assert!(browser.cookie.is_some(), "{name}'s cookie was deleted");
        }
    }
}

/// The session cookie values a browser has held, to replay after a logout.
fn held(browser: &Browser, seen: &mut Vec<String>) {
    if let Some(cookie) = &browser.cookie {
        if !seen.contains(cookie) {
            seen.push(cookie.clone());
        }
    }
}

/// The whole migration with an app whose housekeeping touches unknown session cookies:
/// users logged in before unstick -> overlap (copied forward) -> every instance restarted
/// (the app forgets every session) -> redis -> every instance restarted again. Nobody is
/// logged out, a fresh login works, and a logout ends the session and every id it had.
async fn migrate_with_housekeeping(unknown: UnknownSession) -> (RedisServer, ProxyProcess) {
    let redis = RedisServer::start().await;
    let a = app("a", unknown, None).await;
    let b = app("b", unknown, None).await;
    let (a_address, b_address) = (a.address, b.address);
    let mut users = Vec::new();
    for i in 0..10 {
        let name = format!("user{i}");
        let instance = if i % 2 == 0 { a_address } else { b_address };
        let browser = login_directly(instance, &name).await;
        users.push((name, browser));
    }

    let mut config = ProxyConfig::new(&redis.url(), &[("a", a_address), ("b", b_address)]);
    whoami_old_store(&mut config);
    config.admin = true;
    config.mode = Mode::Overlap;
    // The binary: the admin API's token comes from its environment.
    let proxy =
        ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await;
    everyone_still_logged_in(&proxy, &mut users).await;
    assert_eq!(redis.keys("test:s:*").await.len(), 10, "copied forward");

    // A deploy: every instance restarts and forgets every session it held.
    a.stop().await;
    b.stop().await;
    let a = app("a", unknown, Some(a_address)).await;
    let b = app("b", unknown, Some(b_address)).await;
    let mut cookies_of_user0 = Vec::new();
    held(&users[0].1, &mut cookies_of_user0);
    everyone_still_logged_in(&proxy, &mut users).await;
    held(&users[0].1, &mut cookies_of_user0);

    config.mode = Mode::Redis;
    proxy.reload(&config).await;
    everyone_still_logged_in(&proxy, &mut users).await;
    held(&users[0].1, &mut cookies_of_user0);
    a.stop().await;
    b.stop().await;
    let _a = app("a", unknown, Some(a_address)).await;
    let _b = app("b", unknown, Some(b_address)).await;
    everyone_still_logged_in(&proxy, &mut users).await;
    held(&users[0].1, &mut cookies_of_user0);

    // A fresh login works at once.
    let mut newcomer = Browser::new();
    newcomer.login(&proxy, "newcomer").await;
    users.push(("newcomer".to_string(), newcomer));
    everyone_still_logged_in(&proxy, &mut users).await;
    held(&users[0].1, &mut cookies_of_user0);

    // A real logout ends the session on every instance, under every id it ever had.
    let (_, mut user0) = users.remove(0);
    assert_eq!(user0.logout(&proxy).await, 200);
    assert_eq!(user0.cookie, None, "the app's logout cleared the cookie");
    for cookie in &cookies_of_user0 {
        let replay = Browser {
            cookie: Some(cookie.clone()),
            ..Browser::new()
        };
        for _ in 0..4 {
            let (status, user, _) = replay.me(&proxy).await;
            assert_eq!((status, user), (200, None), "a logged-out id still works");
        }
    }
    everyone_still_logged_in(&proxy, &mut users).await;
    (redis, proxy)
}

/// `session_cookie_changes{change="..."}` from the admin listener's metrics.
async fn cookie_changes(proxy: &ProxyProcess, change: &str) -> f64 {
    let text = admin_metrics(proxy, TOKEN).await;
    metric(
        &text,
        "unstick_session_cookie_changes_total",
        &[("change", change)],
    )
}

#[tokio::test]
async fn the_requests_own_id_sent_back_is_no_new_session() {
    // Laravel re-encrypts its cookie on every response, rolling cookies are re-sent: for a
    // session unstick does not hold, that was taken for a new cookie, and every anonymous
    // page cost a whoami call (and, outside `redis`, a Redis write).
    for mode in [Mode::Legacy, Mode::Overlap, Mode::Redis] {
        let redis = RedisServer::start().await;
        let app = TestApp::start().await;
        let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
        config.mode = mode;
        // An old store that asks the app nothing: the whoami calls counted are the captures.
        let empty = tempfile::tempdir().unwrap();
        config.use_old_store(OldStore::php_files("files", empty.path()));
        let proxy = start_server(&config).await;
        let http = reqwest::Client::new();
        let first = http.get(proxy.url("/page")).send().await.unwrap();
        let cookie = cookie_set_by(&first);
        // A new id: the app is asked once whether it is a login.
        assert_eq!(app.whoami_calls(), 1, "{mode}");
        // Sessions, indexes and bindings (not the layout marker, written at start).
        let keys = redis.keys("test:[sub]:*").await;
        for _ in 0..5 {
            let again = http
                .get(proxy.url("/page"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(cookie_set_by(&again), cookie, "{mode}: passed on unchanged");
        }
        assert_eq!(app.whoami_calls(), 1, "{mode}: whoami asked again");
        assert_eq!(
            redis.keys("test:[sub]:*").await,
            keys,
            "{mode}: Redis written"
        );
        // A login is still a new id, and is seen.
        let login = test_app_login(&proxy, "ann").await;
        assert_eq!(
            user_seen(&proxy, &login).await.as_deref(),
            Some("ann"),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn an_app_deleting_cookies_it_does_not_know_logs_nobody_out() {
    let (_redis, proxy) = migrate_with_housekeeping(UnknownSession::Clear).await;
    assert!(cookie_changes(&proxy, "clear_kept").await > 0.0);
    assert_eq!(
        proxy.count_logs("logout: session ended"),
        1,
        "only the real logout ended a session:\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn an_app_reissuing_ids_it_does_not_know_logs_nobody_out() {
    let (_redis, proxy) = migrate_with_housekeeping(UnknownSession::Reissue).await;
    assert!(cookie_changes(&proxy, "rebound").await > 0.0);
    assert_eq!(proxy.count_logs("logout: session ended"), 1);
}

#[tokio::test]
async fn without_a_logout_signal_a_cleared_cookie_is_housekeeping() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address)]);
    config.route.logout_paths.clear();
    let proxy = start_server(&config).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    // The app's logout page clears its cookie, but nothing tells unstick it is a logout: the
    // risk the README names. The session stays, and so does the browser's cookie.
    assert_eq!(alice.logout(&proxy).await, 200);
    assert!(alice.cookie.is_some(), "the deletion was passed on");
    assert_eq!(redis.keys("test:s:*").await.len(), 1);
    assert_eq!(alice.me(&proxy).await.1.as_deref(), Some("alice"));
}

#[tokio::test]
async fn the_apps_logout_header_ends_the_session_on_any_path() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.route.logout_paths.clear();
    let proxy = start_server(&config).await;
    let cookie = test_app_login(&proxy, "alice").await;
    assert_eq!(user_seen(&proxy, &cookie).await.as_deref(), Some("alice"));
    let response = reqwest::Client::new()
        .post(proxy.url("/signout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("x-unstick-logout").is_none(),
        "the signal is for unstick only"
    );
    assert!(redis.keys("test:s:*").await.is_empty(), "session ended");
    assert_eq!(user_seen(&proxy, &cookie).await, None);
}

#[tokio::test]
async fn a_new_id_the_app_cannot_vouch_for_is_refused_not_guessed() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    // The binary: the config changes below are reloads on SIGHUP.
    let proxy = ProxyProcess::start(&config).await;
    let cookie = test_app_login(&proxy, "alice").await;
    // The app's "who am I" stops answering in time.
    config.capture = Capture::Whoami {
        path: "/slow?ms=5000".into(),
        user: None,
        timeout: Some("300ms".into()),
    };
    proxy.reload(&config).await;
    let response = reqwest::Client::new()
        .post(proxy.url("/elevate"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    // A login of someone else and housekeeping look alike without the app's word: the user
    // retries rather than getting a guess.
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("set-cookie").is_none());
    assert_eq!(user_seen(&proxy, &cookie).await.as_deref(), Some("alice"));
}

#[tokio::test]
async fn a_cleared_cookie_ends_the_session_where_the_route_says_so() {
    let redis = RedisServer::start().await;
    let a = app("a", UnknownSession::Clear, None).await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address)]);
    config.route.unexplained_cookie_change = Some("end-session".into());
    let proxy = start_server(&config).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    let address = a.address;
    a.stop().await;
    let _a = app("a", UnknownSession::Clear, Some(address)).await;
    // The restarted instance deletes the cookie; this route trusts that as a logout.
    let (_, user, _) = alice.refresh(&proxy).await;
    assert_eq!(user.as_deref(), Some("alice"), "identity of this request");
    assert_eq!(alice.cookie, None, "the deletion reached the browser");
    assert!(redis.keys("test:s:*").await.is_empty(), "session ended");
}

/// What the app saw for `GET /echo` with this cookie: (user, roles).
async fn identity_seen(
    proxy: &impl RunningProxy,
    cookie: &str,
) -> (Option<String>, Option<String>) {
    let echo = echo(proxy, Some(cookie)).await;
    let header = |name: &str| echo["headers"][name][0].as_str().map(String::from);
    (header("x-auth-user"), header("x-auth-roles"))
}

#[tokio::test]
async fn an_id_rotated_on_a_privilege_change_keeps_the_user_with_the_new_roles() {
    let redis = RedisServer::start().await;
    let one = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("one", one.address)]);
    config.use_old_store(OldStore::whoami("app", "/whoami"));
    config.mode = Mode::Overlap;
    // The binary: the config changes below are reloads on SIGHUP.
    let proxy = ProxyProcess::start(&config).await;
    let before = test_app_login(&proxy, "alice").await;
    let member = (Some("alice".to_string()), Some("member".to_string()));
    let admin = (Some("alice".to_string()), Some("member,admin".to_string()));
    assert_eq!(identity_seen(&proxy, &before).await, member);

    let response = reqwest::Client::new()
        .post(proxy.url("/elevate"))
        .header("cookie", &before)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let after = cookie_set_by(&response);
    assert_ne!(after, before);
    assert_eq!(identity_seen(&proxy, &after).await, admin);
    // The old id still resolves for requests already under way, with what it had, briefly.
    assert_eq!(identity_seen(&proxy, &before).await, member);
    let old_key = format!("test:s:{}", session_hash(before.trim_start_matches("sid=")));
    let ttl: i64 = fred::interfaces::KeysInterface::pttl(&redis.client().await, &old_key)
        .await
        .unwrap();
    assert!(
        (1..=30_000).contains(&ttl),
        "the replaced id lives for its grace period only, not {ttl} ms"
    );

    // The app forgets everything (a deploy); the elevated session lives on in Redis.
    drop(one);
    let two = TestApp::start().await;
    config.instances = vec![("two".into(), two.address)];
    config.mode = Mode::Redis;
    proxy.reload(&config).await;
    assert_eq!(identity_seen(&proxy, &after).await, admin);

    // Logging out with the new id ends the old one too, though it was in its grace period.
    let response = reqwest::Client::new()
        .post(proxy.url("/logout"))
        .header("cookie", &after)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(identity_seen(&proxy, &after).await, (None, None));
    assert_eq!(identity_seen(&proxy, &before).await, (None, None));
}

/// Every session key in Redis holds the marker of an ended id: no session is left.
async fn only_markers_left(redis: &RedisServer) {
    let client = redis.client().await;
    for key in redis.keys("test:s:*").await {
        let value: Option<String> = fred::interfaces::KeysInterface::get(&client, &key)
            .await
            .unwrap();
        assert_eq!(value.as_deref(), Some("-"), "a session is left at {key}");
    }
}

/// A request under way when its session is revoked (a password change on another device)
/// comes back with an id the app rotated: the new id is no session either, and the old one
/// stays ended. (Fixed: the rotation wrote the new id, and the old one's grace period, over
/// the revocation, and the session lived on.)
#[tokio::test]
async fn an_id_rotated_while_its_session_is_revoked_stays_ended() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    let proxy = start_server(&config).await;
    let phone = test_app_login(&proxy, "alice").await;
    let laptop = test_app_login(&proxy, "alice").await;

    let elevate = in_flight(
        reqwest::Client::new()
            .post(proxy.url("/elevate?hold=1"))
            .header("cookie", &phone),
    );
    // The phone's request is past unstick and at the app when the laptop changes the password.
    app.until_held(1).await;
    log_out_everywhere(&proxy, &laptop).await;
    assert_eq!(user_seen(&proxy, &laptop).await, None);
    app.release_held();
    let response = elevate.await.unwrap();
    assert_eq!(response.status(), 200);
    let rotated = cookie_set_by(&response);
    assert_ne!(rotated, phone);

    assert_eq!(
        user_seen(&proxy, &rotated).await,
        None,
        "the revoked session lives on under the app's new id; logs:\n{}",
        proxy.logs()
    );
    assert_eq!(user_seen(&proxy, &phone).await, None);
    only_markers_left(&redis).await;
}

/// An id that ended is withheld from the app, and the app's answer is not read as being
/// about it: a login page answered without a cookie is no login under the ended id, though
/// the instance still holds that login in its memory (a revoke never tells the app).
/// (Fixed: the login page's answer was taken as a login under the revoked id, and the app
/// vouched for it.)
#[tokio::test]
async fn a_login_page_visited_with_a_revoked_id_does_not_bring_it_back() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    // `GET /echo` answers 200 without setting a cookie, as a login form does.
    config.route.login_paths = vec!["/echo".into()];
    let proxy = start_server(&config).await;
    let cookie = test_app_login(&proxy, "alice").await;
    assert_eq!(user_seen(&proxy, &cookie).await.as_deref(), Some("alice"));
    log_out_everywhere(&proxy, &cookie).await;

    for visit in 1..=3 {
        assert_eq!(
            user_seen(&proxy, &cookie).await,
            None,
            "visit {visit} of the login page: the revoked session is back; logs:\n{}",
            proxy.logs()
        );
    }
    only_markers_left(&redis).await;
}

/// The `Cookie` pairs of the session cookie set by `responses`, in order.
fn session_cookies_set(responses: &[reqwest::Response], name: &str) -> Vec<String> {
    let mut pairs = Vec::new();
    for response in responses {
        for value in response.headers().get_all("set-cookie") {
            let pair = value.to_str().unwrap().split(';').next().unwrap().trim();
            if pair.split_once('=').is_some_and(|(n, _)| n == name) {
                pairs.push(pair.to_string());
            }
        }
    }
    pairs
}

/// A page's parallel requests: each answer that sets the session cookie is followed, the last
/// one kept, as a browser does. Returns every cookie set.
async fn load_page_in_parallel(proxy: &impl RunningProxy, browser: &mut Browser) -> Vec<String> {
    let mut set = Vec::new();
    for _ in 0..3 {
        let requests = (0..6).map(|_| browser.get(&proxy.url("/me")).send());
        let mut responses = Vec::new();
        for response in futures_util::future::join_all(requests).await {
            responses.push(response.unwrap());
        }
        let cookies = session_cookies_set(&responses, browser.cookie_name);
        if let Some(last) = cookies.last() {
            browser.cookie = Some(last.clone());
        }
        set.extend(cookies);
    }
    set
}

/// Rails re-issues an id it does not hold, so in `redis` mode a page's parallel requests each
/// get a new id from a different instance: the session's ids branch. Each branch keeps the
/// user logged in, and a logout with whichever id the browser kept, or an operator's revoke
/// of any one of them, ends every one.
/// (Fixed: both ended the one id's chain only; the other branches stayed logged in.)
#[tokio::test]
async fn rails_parallel_requests_branch_the_ids_and_a_logout_or_revoke_ends_every_branch() {
    let redis = RedisServer::start().await;
    let a = RailsApp::start("a", None).await;
    let b = RailsApp::start("b", None).await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.session.cookie = RAILS_COOKIE.into();
    config.admin = true;
    // The binary: the admin API's token comes from its environment.
    let proxy =
        ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await;
    let replay = |cookie: &String| Browser {
        cookie: Some(cookie.clone()),
        ..Browser::for_cookie(RAILS_COOKIE)
    };
    for (user, ending) in [("alice", "logout"), ("bob", "revoke")] {
        let mut browser = Browser::for_cookie(RAILS_COOKIE);
        browser.login(&proxy, user).await;
        let mut ids = vec![browser.cookie.clone().unwrap()];
        ids.extend(load_page_in_parallel(&proxy, &mut browser).await);
        assert!(ids.len() > 2, "Rails issued no new ids: {ids:?}");
        for id in &ids {
            let (status, seen, _) = replay(id).me(&proxy).await;
            assert_eq!((status, seen.as_deref()), (200, Some(user)));
        }
        if ending == "logout" {
            assert_eq!(browser.logout(&proxy).await, 200);
            // What is left in Redis are markers that the ids ended, no session.
            only_markers_left(&redis).await;
        } else {
            let hash = session_hash(&browser.cookie_value());
            let response = reqwest::Client::new()
                .delete(proxy.admin_url(&format!("/sessions/{hash}")))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }
        // The login's own id too: the instance that saw the login still holds it in its memory
        // (the logout reached another one, a revoke none), but an ended id never reaches it.
        for id in &ids {
            let (status, seen, instance) = replay(id).me(&proxy).await;
            assert_eq!(
                (status, seen),
                (200, None),
                "{ending}: an id of the ended session still works (answered by {instance:?}); \
                 logs:\n{}",
                proxy.logs()
            );
        }
    }
}

/// The branches of one browser's session count once against `max_sessions_per_user`: a page's
/// parallel requests on Rails do not push the user's other device over the cap.
#[tokio::test]
async fn rails_branches_of_one_session_count_once_against_the_cap() {
    let redis = RedisServer::start().await;
    let a = RailsApp::start("a", None).await;
    let b = RailsApp::start("b", None).await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.session.cookie = RAILS_COOKIE.into();
    config.session.max_sessions_per_user = Some(2);
    let proxy = start_server(&config).await;
    let mut laptop = Browser::for_cookie(RAILS_COOKIE);
    laptop.login(&proxy, "alice").await;
    let mut phone = Browser::for_cookie(RAILS_COOKIE);
    phone.login(&proxy, "alice").await;
    let set = load_page_in_parallel(&proxy, &mut phone).await;
    assert!(set.len() > 2, "Rails issued no new ids: {set:?}");
    for (device, browser) in [("laptop", &mut laptop), ("phone", &mut phone)] {
        for _ in 0..4 {
            let (status, user, instance) = browser.refresh(&proxy).await;
            assert_eq!(
                (status, user.as_deref()),
                (200, Some("alice")),
                "the {device} was logged out (answered by {instance:?}); logs:\n{}",
                proxy.logs()
            );
        }
    }
}

#[tokio::test]
async fn a_login_that_keeps_the_session_id_is_seen_on_a_login_path() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    // The binary: the config changes below are reloads on SIGHUP.
    let proxy = ProxyProcess::start(&config).await;
    let login_keeping_id = |cookie: &'static str| {
        reqwest::Client::new()
            .post(proxy.url("/login-keep?user=alice"))
            .header("cookie", cookie)
            .send()
    };
    // Without login_paths nothing tells unstick the visitor logged in: in redis mode the
    // session is not unstick's.
    assert_eq!(
        login_keeping_id("sid=visitor1").await.unwrap().status(),
        200
    );
    assert_eq!(user_seen(&proxy, "sid=visitor1").await, None);
    assert!(redis.keys("test:s:*").await.is_empty());

    config.route.login_paths = vec!["/login-keep".into()];
    proxy.reload(&config).await;
    let calls = app.whoami_calls();
    assert_eq!(
        login_keeping_id("sid=visitor2").await.unwrap().status(),
        200
    );
    assert_eq!(app.whoami_calls(), calls + 1, "the app was asked once");
    assert_eq!(
        user_seen(&proxy, "sid=visitor2").await.as_deref(),
        Some("alice")
    );
    // Elsewhere the request's own id costs no call to the app.
    let calls = app.whoami_calls();
    echo(&proxy, Some("sid=visitor3")).await;
    assert_eq!(app.whoami_calls(), calls);
}
