//! Real stacks migrated end to end (see tests/support/stack_walk.rs for the walk and its
//! promises): the bundled in-memory app, Django with database sessions, and Rails with
//! in-memory `cache_store` sessions.

mod support;

use std::net::SocketAddr;
use support::django::{DjangoTrust, DJANGO_SECRET_KEY};
use support::rails::RAILS_COOKIE;
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
