//! The migration dashboard on the admin listener: its login (form and bearer token), the
//! per-route chart and cutover readiness after real traffic, and the session search with
//! revoke; last, the same through headless Chromium.

mod support;

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use support::*;
use unstick::demo::LegacyApp;

const TOKEN: &str = "dashboard-admin-token-0123456789";

/// The real binary with `[admin]` and the token set.
async fn start_proxy(config: &mut ProxyConfig) -> ProxyProcess {
    config.admin = true;
    ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Logs in through the form; returns the `unstick_admin=...` pair to send as `Cookie`.
async fn dashboard_login(proxy: &ProxyProcess) -> String {
    let response = client()
        .post(proxy.admin_url("/dashboard/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[LOCATION], "/dashboard");
    cookie_set_by(&response)
}

/// A dashboard page's HTML as the logged-in person sees it.
async fn page(proxy: &ProxyProcess, login: &str, path: &str) -> String {
    let response = client()
        .get(proxy.admin_url(path))
        .header(COOKIE, login)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    response.text().await.unwrap()
}

/// The value of the first hidden field `name` in `html`.
fn field(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn the_dashboard_needs_the_token_and_its_cookie_is_not_the_token() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    let proxy = start_proxy(&mut config).await;
    let http = client();

    let anonymous = http
        .get(proxy.admin_url("/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()[LOCATION], "/dashboard/login");
    let form = http
        .get(proxy.admin_url("/dashboard/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains(r#"name="token""#));

    let wrong = http
        .post(proxy.admin_url("/dashboard/login"))
        .form(&[("token", "guess")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let right = http
        .post(proxy.admin_url("/dashboard/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    let set_cookie = right.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("unstick_admin="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(
        !set_cookie.contains(TOKEN),
        "the cookie is the token: {set_cookie}"
    );
    let login = cookie_set_by(&right);
    let html = page(&proxy, &login, "/dashboard").await;
    assert!(html.contains("mode: redis"), "{html}");

    // Scripts: the bearer token; a forged cookie is nobody.
    let scripted = http
        .get(proxy.admin_url("/dashboard"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(scripted.status(), 200);
    let forged = http
        .get(proxy.admin_url("/dashboard"))
        .header(COOKIE, format!("unstick_admin=1.{}", "0".repeat(64)))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::SEE_OTHER);

    // A form posted without the page's form token (another site's form) is refused.
    let form_token = field(&html, "form_token");
    let cross_site = http
        .post(proxy.admin_url("/dashboard/logout"))
        .header(COOKIE, &login)
        .form(&[("form_token", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let logout = http
        .post(proxy.admin_url("/dashboard/logout"))
        .header(COOKIE, &login)
        .form(&[("form_token", form_token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), StatusCode::SEE_OTHER);
    assert!(logout.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

#[tokio::test]
async fn without_a_token_there_is_no_dashboard() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.admin = true;
    let proxy = ProxyProcess::start(&config).await;
    for path in ["/dashboard", "/dashboard/login"] {
        let response = client().get(proxy.admin_url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let login = client()
        .post(proxy.admin_url("/dashboard/login"))
        .form(&[("token", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::FORBIDDEN);
}

/// A legacy-app stage: Redis, instances `a` and `b`, and the real binary in `mode` with the
/// instances' "who am I" page as old store.
async fn legacy_stage(mode: Mode) -> (RedisServer, LegacyApp, LegacyApp, ProxyProcess) {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.mode = mode;
    whoami_old_store(&mut config);
    let proxy = start_proxy(&mut config).await;
    (redis, a, b, proxy)
}

/// Overlap: a user logged in before unstick is copied forward, then found in Redis; a stale
/// cookie is anonymous (in any mode, so it does not hold the cutover back). The chart counts
/// each, and the readiness sentence says the route is ready.
#[tokio::test]
async fn the_chart_and_readiness_follow_the_traffic() {
    let (_redis, a, _b, proxy) = legacy_stage(Mode::Overlap).await;
    let login = dashboard_login(&proxy).await;
    let before = page(&proxy, &login, "/dashboard").await;
    assert!(before.contains("mode: overlap"), "{before}");
    assert!(before.contains("no evidence yet"), "{before}");
    assert_eq!(before.matches(r#"class="point""#).count(), 0);

    let old_user = login_directly(a.address, "olga").await;
    for _ in 0..3 {
        assert_eq!(old_user.me(&proxy).await.1.as_deref(), Some("olga"));
    }
    let mut stale = Browser::new();
    stale.cookie = Some("demo.sid=no-such-session".into());
    assert_eq!(stale.me(&proxy).await.1, None);

    let html = page(&proxy, &login, "/dashboard").await;
    assert!(html.contains("Redis hit: 2 in the hour"), "{html}");
    assert!(
        html.contains("old store, copied forward: 1 in the hour"),
        "{html}"
    );
    assert!(html.contains("copied forward: 1 in the hour"), "{html}");
    assert!(
        html.contains("anonymous (no session found): 1 in the hour"),
        "{html}"
    );
    assert!(html.contains("store unavailable: 0 in the hour"), "{html}");
    assert!(html.contains("lookups: 2 in the hour"), "{html}");
    assert!(html.contains("errors: 0 in the hour"), "{html}");
    assert!(html.matches(r#"class="point""#).count() >= 5, "{html}");
    assert!(
        html.contains(
            "safe to switch to redis: 100.0% of sessions active in the last 30 min are in Redis"
        ),
        "{html}"
    );
}

/// Legacy: a session the app holds but Redis does not would be lost by a cutover; the
/// sentence says so, with how many, and what to do.
#[tokio::test]
async fn readiness_names_the_sessions_a_cutover_would_lose() {
    let (_redis, a, _b, proxy) = legacy_stage(Mode::Legacy).await;
    let old_user = login_directly(a.address, "olga").await;
    assert_eq!(old_user.me(&proxy).await.1.as_deref(), Some("olga"));
    let mut new_user = Browser::new();
    new_user.login(&proxy, "nina").await;
    assert_eq!(new_user.me(&proxy).await.1.as_deref(), Some("nina"));

    let login = dashboard_login(&proxy).await;
    let html = page(&proxy, &login, "/dashboard").await;
    assert!(html.contains("mode: legacy"), "{html}");
    assert!(
        html.contains(
            "not yet: 50.0% of sessions active in the last 30 min are in Redis; 1 is not, and \
             switching to redis now would log them out. To get there, switch to overlap first"
        ),
        "{html}"
    );
}

#[tokio::test]
async fn search_escapes_user_names_and_revoke_ends_the_session() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    let proxy = start_proxy(&mut config).await;
    let hostile = "<script>alert(1)</script>";
    let response = client()
        .post(proxy.url("/login"))
        .query(&[("user", hostile)])
        .header("user-agent", "<img src=x onerror=alert(2)>")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let session = cookie_set_by(&response);
    let bystander = test_app_login(&proxy, "bob").await;
    assert_eq!(user_seen(&proxy, &session).await.as_deref(), Some(hostile));

    let login = dashboard_login(&proxy).await;
    let overview = page(&proxy, &login, "/dashboard").await;
    assert!(
        overview.contains(r#"<strong id="sessions-in-redis">2</strong>"#),
        "{overview}"
    );
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("user", hostile)
        .finish();
    let html = page(&proxy, &login, &format!("/dashboard/sessions?{query}")).await;
    assert!(
        html.contains("1 session(s) of &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script"), "unescaped: {html}");
    assert!(!html.contains("<img"), "unescaped: {html}");
    let id_hash = field(&html, "id_hash");
    assert_eq!(id_hash, session_hash(session.split_once('=').unwrap().1));

    let revoke = client()
        .post(proxy.admin_url("/dashboard/revoke"))
        .header(COOKIE, &login)
        .form(&[
            ("form_token", field(&html, "form_token").as_str()),
            ("user", hostile),
            ("id_hash", id_hash.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), StatusCode::SEE_OTHER);
    let after = revoke.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(after.ends_with("revoked=1"), "{after}");
    assert_eq!(user_seen(&proxy, &session).await, None);
    assert_eq!(user_seen(&proxy, &bystander).await.as_deref(), Some("bob"));
    let html = page(&proxy, &login, &after).await;
    assert!(html.contains("Revoked 1 session(s)."), "{html}");
    assert!(html.contains("0 session(s) of"), "{html}");
}

/// In headless Chromium: log in through the form, see the chart's points after traffic,
/// search a user and click revoke; the session no longer works through the proxy.
#[tokio::test]
async fn in_a_browser_the_dashboard_shows_traffic_and_revokes() {
    use fantoccini::Locator;
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    let proxy = start_proxy(&mut config).await;
    let carol = test_app_login(&proxy, "carol").await;
    for _ in 0..5 {
        assert_eq!(user_seen(&proxy, &carol).await.as_deref(), Some("carol"));
    }

    let chromium = HeadlessChromium::start().await;
    let browser = &chromium.client;
    browser.goto(&proxy.admin_url("/dashboard")).await.unwrap();
    assert!(browser
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/dashboard/login"));
    chromium
        .type_into(Locator::Css("input[name=token]"), TOKEN)
        .await;
    chromium.click(Locator::Css("form.login button")).await;
    let mode = chromium.text_of(Locator::Css("section.route .mode")).await;
    assert_eq!(mode, "mode: redis");
    let points = browser
        .find_all(Locator::Css("svg.resolutions circle.point"))
        .await
        .unwrap();
    assert!(!points.is_empty(), "no points on the chart");

    chromium.click(Locator::LinkText("Sessions")).await;
    chromium
        .type_into(Locator::Css("form.search input[name=user]"), "carol")
        .await;
    chromium.click(Locator::Css("form.search button")).await;
    chromium.click(Locator::Css("button.revoke")).await;
    let notice = chromium.text_of(Locator::Id("revoked")).await;
    assert_eq!(notice, "Revoked 1 session(s).");
    assert_eq!(user_seen(&proxy, &carol).await, None);
    chromium.close().await;
}

/// While Redis is down, requests with a session get 503: the chart counts them as store
/// unavailable and the page says the store is down.
#[tokio::test]
async fn a_store_outage_shows_as_unavailable() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    let proxy = start_proxy(&mut config).await;
    let session = test_app_login(&proxy, "dora").await;
    redis.kill();
    let refused = client()
        .get(proxy.url("/echo"))
        .header(COOKIE, &session)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let login = dashboard_login(&proxy).await;
    // The store is marked down as the client notices the lost connection: poll for it.
    let mut html = page(&proxy, &login, "/dashboard").await;
    for _ in 0..100 {
        if html.contains("down for") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        html = page(&proxy, &login, "/dashboard").await;
    }
    assert!(html.contains("store unavailable: 1 in the hour"), "{html}");
    assert!(html.contains("Redis hit: 0 in the hour"), "{html}");
    assert!(
        html.contains("Session store: <span class=\"bad\">down for"),
        "{html}"
    );
}
