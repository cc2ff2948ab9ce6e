//! Real stacks migrated end to end (see tests/support/stack_walk.rs for the walk and its
//! promises): the bundled in-memory app, Django with database sessions, Tomcat with
//! in-memory sessions and a `jvmRoute` per instance, and Rails with in-memory `cache_store`
//! sessions.

mod support;

use std::net::SocketAddr;
use support::django::{DjangoTrust, DJANGO_SECRET_KEY};
use support::rails::RAILS_COOKIE;
use support::stack_walk::{walk_migration, Instance, Stack};
use support::tomcat::jvm_route;
use support::*;
use unstick::demo::LegacyAppConfig;

/// The bundled app: sessions in process memory, the old store is its own `GET /me`.
struct Bundled;

impl Stack for Bundled {
    const COOKIE: &'static str = "demo.sid";

    async fn start(&self, name: &str, address: Option<SocketAddr>) -> Instance {
        let app = legacy_app_with(LegacyAppConfig::new(name), address).await;
        Instance {
            name: name.to_string(),
            address: app.address,
            process: Box::new(app),
        }
    }

    fn configure(&self, config: &mut ProxyConfig) {
        whoami_old_store(config);
    }
}

/// Django 5.2, database sessions in PostgreSQL read as the old store, identity through a view
/// that reads the header when Django's own session has no user.
struct Django {
    database: PgDatabase,
}

impl Stack for Django {
    const COOKIE: &'static str = "sessionid";

    async fn start(&self, name: &str, address: Option<SocketAddr>) -> Instance {
        let app = DjangoApp::start(&self.database, name, DjangoTrust::Header, address).await;
        Instance {
            name: name.to_string(),
            address: app.address,
            process: Box::new(app),
        }
    }

    fn configure(&self, config: &mut ProxyConfig) {
        config.extra_tables = format!(
            "[[old_stores]]\nname = \"django\"\nkind = \"postgres\"\nformat = \"django\"\n\
             url = \"{}\"\nsecret_keys = [\"{DJANGO_SECRET_KEY}\"]\nuser = \"/username\"\n",
            self.database.url()
        );
        config.route_extra = "logout_paths = [\"/logout\"]\nold_stores = [\"django\"]".into();
    }

    async fn clean_up(&self) {
        self.database.exec("DELETE FROM django_session");
    }
}

/// Rails 6.1, `cache_store` sessions in each instance's memory store (lost on restart); the
/// old store is the app's own `GET /me`. A controller filter reads the header when the Rails
/// session has no user. Rails issues a new id for any cookie it does not hold: housekeeping.
struct Rails;

impl Stack for Rails {
    const COOKIE: &'static str = RAILS_COOKIE;

    async fn start(&self, name: &str, address: Option<SocketAddr>) -> Instance {
        let app = RailsApp::start(name, address).await;
        Instance {
            name: name.to_string(),
            address: app.address,
            process: Box::new(app),
        }
    }

    fn configure(&self, config: &mut ProxyConfig) {
        // The cookie holds the bare id; Rails answers who is logged in at `/me`.
        config.id_format = "id_format = \"plain\"".into();
        config.capture = "source = \"whoami\"\nwhoami_path = \"/me\"\nuser = \"/user\"".into();
        whoami_old_store(config);
    }
}

/// Tomcat 10.1, sessions in each instance's memory (StandardManager, not saved on restart),
/// `JSESSIONID=<id>.<jvmRoute>` rotated by `changeSessionId()` at login; the old store is the
/// app's own `GET /me` on the instance the cookie's route names.
struct Tomcat;

impl Stack for Tomcat {
    const COOKIE: &'static str = "JSESSIONID";
    // Sticky by the route in JSESSIONID, as mod_jk and mod_proxy_balancer are.
    const LB_COOKIE: bool = false;

    async fn start(&self, name: &str, address: Option<SocketAddr>) -> Instance {
        let app = TomcatApp::start(name, address).await;
        Instance {
            name: name.to_string(),
            address: app.address,
            process: Box::new(app),
        }
    }

    fn configure(&self, config: &mut ProxyConfig) {
        config.id_format = "id_format = \"jvm-route\"".into();
        whoami_old_store(config);
        let routes: Vec<String> = config
            .instances
            .iter()
            .map(|(name, _)| format!("\"{}\" = \"{name}\"", jvm_route(name)))
            .collect();
        config.upstream_extra += &format!("\njvm_routes = {{ {} }}", routes.join(", "));
    }
}

#[tokio::test]
async fn the_bundled_in_memory_app_migrates_with_nobody_logged_out() {
    walk_migration(&Bundled).await;
}

#[tokio::test]
async fn django_migrates_with_nobody_logged_out() {
    let database = PgDatabase::create();
    DjangoApp::migrate(&database);
    let walked = walk_migration(&Django { database }).await;
    // Once the session table was emptied, Django deleted cookies it no longer knew: kept.
    assert!(walked.clear_kept > 0, "Django cleared no cookie");
}

#[tokio::test]
async fn rails_migrates_with_nobody_logged_out() {
    let walked = walk_migration(&Rails).await;
    // Rails re-issued ids it did not hold (a hop to another instance, a restart), and each
    // new id took its session over.
    assert!(walked.rebound > 0, "Rails re-issued no id");
}

#[tokio::test]
async fn tomcat_migrates_with_nobody_logged_out() {
    walk_migration(&Tomcat).await;
}

/// A Tomcat page that makes a session for every visitor (as a JSP does by default) answers a
/// logged-in user on another instance with a new JSESSIONID for that instance: housekeeping,
/// not a login. Logs alice in through unstick in `mode`, visits such pages, logs out; returns
/// the running stage and every cookie she held, the login's first.
async fn tomcat_pages_that_make_sessions(
    mode: &str,
) -> ((RedisServer, [TomcatApp; 2], ProxyProcess), Vec<String>) {
    let redis = RedisServer::start().await;
    let a = TomcatApp::start("a", None).await;
    let b = TomcatApp::start("b", None).await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.cookie = Tomcat::COOKIE.into();
    config.mode = mode.into();
    Tomcat.configure(&mut config);
    let proxy = ProxyProcess::start(&config).await;
    let mut browser = Browser::for_cookie(Tomcat::COOKIE);
    browser.login(&proxy, "alice").await;
    let mut cookies = vec![browser.cookie.clone().unwrap()];
    for _ in 0..6 {
        let (status, user, instance) = browser.visit(&proxy, "/page").await;
        assert_eq!(
            (status, user.as_deref()),
            (200, Some("alice")),
            "{mode}: logged out on a page that makes a session (answered by {instance:?}); logs:\n{}",
            proxy.logs()
        );
        let cookie = browser.cookie.clone().unwrap();
        if !cookies.contains(&cookie) {
            cookies.push(cookie);
        }
    }
    assert_eq!(browser.logout(&proxy).await, 200);
    ((redis, [a, b], proxy), cookies)
}

/// `GET /me` with `cookie`, twice (so on both instances): anonymous.
async fn assert_logged_out(proxy: &ProxyProcess, cookie: &str) {
    let replay = Browser {
        cookie: Some(cookie.to_string()),
        ..Browser::for_cookie(Tomcat::COOKIE)
    };
    for _ in 0..2 {
        let (status, user, instance) = replay.me(proxy).await;
        assert_eq!(
            (status, user.as_deref()),
            (200, None),
            "{cookie} came back after the logout (answered by {instance:?})"
        );
    }
}

/// `redis`: requests go to any instance, so the cookie moves with every request; the user
/// stays logged in, and the ids the pages issued end with the logout.
#[tokio::test]
async fn tomcat_pages_that_make_sessions_keep_users_logged_in() {
    let ((_redis, _tomcats, proxy), cookies) = tomcat_pages_that_make_sessions("redis").await;
    assert!(cookies.len() > 2, "the cookie did not move: {cookies:?}");
    // The login's own id is the test's below.
    for cookie in &cookies[1..] {
        assert_logged_out(&proxy, cookie).await;
    }
}

/// `overlap` keeps the user on the instance that holds the session: the id never moves and
/// the logout reaches the app's own session (the way around the gap below).
#[tokio::test]
async fn tomcat_pages_that_make_sessions_keep_one_id_in_overlap() {
    let ((_redis, _tomcats, proxy), cookies) = tomcat_pages_that_make_sessions("overlap").await;
    assert_eq!(cookies.len(), 1, "the cookie moved: {cookies:?}");
    assert_logged_out(&proxy, &cookies[0]).await;
}

/// The login's id still names a logged-in session in the memory of the Tomcat that issued
/// it, and the logout reaches the app with the browser's latest id only: the ended session
/// takes its login id along, and unstick withholds an ended id from the app.
#[tokio::test]
async fn tomcat_login_id_stays_logged_out_after_the_cookie_moved() {
    let ((_redis, _tomcats, proxy), cookies) = tomcat_pages_that_make_sessions("redis").await;
    assert_logged_out(&proxy, &cookies[0]).await;
}
