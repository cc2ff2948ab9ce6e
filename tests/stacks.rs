//! Real stacks migrated end to end (see tests/support/stack_walk.rs for the walk and its
//! promises): the bundled in-memory app, Django with database sessions, Tomcat with
//! in-memory sessions and a `jvmRoute` per instance, Rails with in-memory `cache_store`
//! sessions, and Laravel with file sessions on each instance's own disk.

mod support;

use std::net::SocketAddr;
use support::django::{DjangoTrust, DJANGO_SECRET_KEY};
use support::laravel::LARAVEL_APP_KEY;
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
    trust: DjangoTrust,
}

impl Django {
    fn new(trust: DjangoTrust) -> Django {
        let database = PgDatabase::create();
        DjangoApp::migrate(&database);
        Django { database, trust }
    }
}

impl Stack for Django {
    const COOKIE: &'static str = "sessionid";

    async fn start(&self, name: &str, address: Option<SocketAddr>) -> Instance {
        let app = DjangoApp::start(&self.database, name, self.trust, address).await;
        Instance {
            name: name.to_string(),
            address: app.address,
            process: Box::new(app),
        }
    }

    fn configure(&self, config: &mut ProxyConfig) {
        config.use_old_store(
            OldStore::new("django", "postgres")
                .with("format", "django")
                .with("url", &self.database.url())
                .with_list("secret_keys", &[DJANGO_SECRET_KEY])
                .with("user", "/username"),
        );
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
        config.session.id_format = IdFormat::Plain;
        config.capture = Capture::Whoami {
            path: "/me".into(),
            user: Some("/user".into()),
            timeout: None,
        };
        whoami_old_store(config);
    }
}

/// Laravel 8, file sessions: each instance keeps them in its own directory, as on its own disk
/// behind a sticky balancer, and loses them when it restarts. The old stores are those
/// directories, one `php-files` store each, read in order.
struct Laravel {
    /// `<instance>/` holds that instance's session files.
    disks: tempfile::TempDir,
}

/// The instances that held sessions before unstick: their directories are the old stores.
const LARAVEL_OLD_INSTANCES: [&str; 2] = ["a", "b"];

impl Laravel {
    fn sessions(&self, instance: &str) -> std::path::PathBuf {
        self.disks.path().join(instance)
    }
}

impl Stack for Laravel {
    const COOKIE: &'static str = "laravel_session";

    async fn start(&self, name: &str, address: Option<SocketAddr>) -> Instance {
        // A (re)started instance comes up with an empty disk: its sessions are gone.
        let sessions = self.sessions(name);
        let _ = std::fs::remove_dir_all(&sessions);
        std::fs::create_dir_all(&sessions).expect("sessions dir");
        let app = LaravelApp::start(name, &sessions, address).await;
        Instance {
            name: name.to_string(),
            address: app.address,
            process: Box::new(app),
        }
    }

    fn configure(&self, config: &mut ProxyConfig) {
        config.session.id_format = IdFormat::Laravel {
            app_keys: vec![LARAVEL_APP_KEY.into()],
        };
        // `lifetime` in the app's config/session.php: Laravel's idle timeout and cookie Max-Age.
        config.session.idle_timeout = "120m".into();
        config.session.app_cookie_lifetime = Some("120m".into());
        // Who is logged in, from the app's `GET /me` on the instance that set the cookie.
        config.capture = Capture::Whoami {
            path: "/me".into(),
            user: Some("/user".into()),
            timeout: None,
        };
        for instance in LARAVEL_OLD_INSTANCES {
            // gc_maxlifetime is that `lifetime` too; the login puts `user`.
            config.use_old_store(
                OldStore::php_files(&format!("laravel-{instance}"), &self.sessions(instance))
                    .with("file_prefix", "")
                    .with("gc_maxlifetime", "120m")
                    .with("user", "/user"),
            );
        }
    }

    async fn clean_up(&self) {
        for instance in LARAVEL_OLD_INSTANCES {
            for file in std::fs::read_dir(self.sessions(instance)).expect("sessions dir") {
                std::fs::remove_file(file.expect("session file").path()).expect("remove");
            }
        }
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
        config.session.id_format = IdFormat::JvmRoute;
        whoami_old_store(config);
        config.upstream.jvm_routes = config
            .instances
            .iter()
            .map(|(name, _)| (jvm_route(name), name.clone()))
            .collect();
    }
}

#[tokio::test]
async fn the_bundled_in_memory_app_migrates_with_nobody_logged_out() {
    walk_migration(&Bundled).await;
}

#[tokio::test]
async fn django_migrates_with_nobody_logged_out() {
    let walked = walk_migration(&Django::new(DjangoTrust::Header)).await;
    // Once the session table was emptied, Django deleted cookies it no longer knew: kept.
    assert!(walked.clear_kept > 0, "Django cleared no cookie");
}

#[tokio::test]
async fn django_with_remote_user_middleware_migrates_with_nobody_logged_out() {
    // unstick's whoami call carries no header, so the middleware logs each fresh session out
    // again: the app re-issues the id on every request. Costly, but nobody is logged out.
    let walked = walk_migration(&Django::new(DjangoTrust::RemoteUser)).await;
    assert!(walked.rebound > 0, "Django re-issued no id");
}

#[tokio::test]
async fn django_with_persistent_remote_user_middleware_reissues_each_id_once() {
    let walked = walk_migration(&Django::new(DjangoTrust::PersistentRemoteUser)).await;
    // Once the table was emptied, each of the 6 users then logged in was logged in again by
    // the middleware under a new id, once: no re-issue per request.
    assert!(
        (1..=6).contains(&(walked.rotated + walked.rebound)),
        "{} rotated, {} rebound",
        walked.rotated,
        walked.rebound
    );
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
    mode: Mode,
) -> ((RedisServer, [TomcatApp; 2], ProxyProcess), Vec<String>) {
    let redis = RedisServer::start().await;
    let a = TomcatApp::start("a", None).await;
    let b = TomcatApp::start("b", None).await;
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.session.cookie = Tomcat::COOKIE.into();
    config.mode = mode;
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
    let ((_redis, _tomcats, proxy), cookies) = tomcat_pages_that_make_sessions(Mode::Redis).await;
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
    let ((_redis, _tomcats, proxy), cookies) = tomcat_pages_that_make_sessions(Mode::Overlap).await;
    assert_eq!(cookies.len(), 1, "the cookie moved: {cookies:?}");
    assert_logged_out(&proxy, &cookies[0]).await;
}

/// The login's id still names a logged-in session in the memory of the Tomcat that issued
/// it, and the logout reaches the app with the browser's latest id only: the ended session
/// takes its login id along, and unstick withholds an ended id from the app.
#[tokio::test]
async fn tomcat_login_id_stays_logged_out_after_the_cookie_moved() {
    let ((_redis, _tomcats, proxy), cookies) = tomcat_pages_that_make_sessions(Mode::Redis).await;
    assert_logged_out(&proxy, &cookies[0]).await;
}

#[tokio::test]
async fn laravel_migrates_with_nobody_logged_out() {
    let disks = tempfile::tempdir().expect("temp dir");
    walk_migration(&Laravel { disks }).await;
}

/// The walk shows nobody is logged out; this shows how a session from before unstick gets to
/// Redis: copied from its instance's session files in `overlap`, not earlier.
#[tokio::test]
async fn laravel_sessions_from_before_unstick_are_copied_from_their_instances_files() {
    let stack = Laravel {
        disks: tempfile::tempdir().expect("temp dir"),
    };
    let redis = RedisServer::start().await;
    let a = stack.start("a", None).await;
    let b = stack.start("b", None).await;
    let mut browser = Browser::for_cookie(Laravel::COOKIE);
    browser.login_directly(b.address, "ann").await;
    browser.sticky = Some("SERVERID=b".into());
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a.address), ("b", b.address)]);
    config.session.cookie = Laravel::COOKIE.into();
    stack.configure(&mut config);
    config.upstream.lb_cookie = Some((
        "SERVERID".into(),
        vec![("a".into(), "a".into()), ("b".into(), "b".into())],
    ));
    config.mode = Mode::Legacy;
    let proxy = ProxyProcess::start(&config).await;
    for _ in 0..3 {
        let (status, user, instance) = browser.refresh(&proxy).await;
        assert_eq!(
            (status, user.as_deref(), instance.as_deref()),
            (200, Some("ann"), Some("b"))
        );
    }
    // Legacy leaves the session to the app: Laravel re-encrypting its cookie is no login.
    assert!(redis.keys("test:s:*").await.is_empty());

    config.mode = Mode::Overlap;
    proxy.reload(&config).await;
    let (status, user, _) = browser.refresh(&proxy).await;
    assert_eq!((status, user.as_deref()), (200, Some("ann")));
    assert_eq!(redis.keys("test:s:*").await.len(), 1);
    let logs = proxy.logs();
    let copied: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("copied forward from old store"))
        .collect();
    assert_eq!(copied.len(), 1, "logs:\n{logs}");
    assert!(
        copied[0].contains("\"store\":\"laravel-b\""),
        "{}",
        copied[0]
    );

    // b restarts with an empty disk: ann's session lives on in Redis.
    let address = b.address;
    drop(b);
    let _b = stack.start("b", Some(address)).await;
    let (status, user, instance) = browser.refresh(&proxy).await;
    assert_eq!(
        (status, user.as_deref(), instance.as_deref()),
        (200, Some("ann"), Some("b"))
    );
}
