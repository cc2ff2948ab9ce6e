//! Real stacks migrated end to end (see tests/support/stack_walk.rs for the walk and its
//! promises): the bundled in-memory app, Django with database sessions, and Laravel with file
//! sessions on each instance's own disk.

mod support;

use std::net::SocketAddr;
use support::django::{DjangoTrust, DJANGO_SECRET_KEY};
use support::laravel::LARAVEL_APP_KEY;
use support::stack_walk::{walk_migration, Instance, Stack};
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
        config.id_format = format!("id_format = \"laravel\"\nsecrets = [\"{LARAVEL_APP_KEY}\"]");
        // `lifetime` in the app's config/session.php: Laravel's idle timeout and cookie Max-Age.
        config.idle_timeout = "120m".into();
        config.session_extra = "app_cookie_lifetime = \"120m\"".into();
        // Who is logged in, from the app's `GET /me` on the instance that set the cookie.
        config.capture = "source = \"whoami\"\nwhoami_path = \"/me\"\nuser = \"/user\"".into();
        let mut names = Vec::new();
        for instance in LARAVEL_OLD_INSTANCES {
            // gc_maxlifetime is that `lifetime` too; the login puts `user`.
            config.extra_tables += &format!(
                "[[old_stores]]\nname = \"laravel-{instance}\"\nkind = \"php-files\"\n\
                 dir = \"{}\"\nfile_prefix = \"\"\ngc_maxlifetime = \"120m\"\nuser = \"/user\"\n\n",
                self.sessions(instance).display()
            );
            names.push(format!("\"laravel-{instance}\""));
        }
        config.route_extra = format!(
            "logout_paths = [\"/logout\"]\nold_stores = [{}]",
            names.join(", ")
        );
    }

    async fn clean_up(&self) {
        for instance in LARAVEL_OLD_INSTANCES {
            for file in std::fs::read_dir(self.sessions(instance)).expect("sessions dir") {
                std::fs::remove_file(file.expect("session file").path()).expect("remove");
            }
        }
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
    walk_migration(&Django { database }).await;
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
    config.cookie = Laravel::COOKIE.into();
    stack.configure(&mut config);
    config.upstream_extra =
        "lb_cookie = { name = \"SERVERID\", values = { a = \"a\", b = \"b\" } }".into();
    config.mode = "legacy".into();
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

    config.mode = "overlap".into();
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
