//! Real stacks migrated end to end (see tests/support/stack_walk.rs for the walk and its
//! promises): the bundled in-memory app, Django with database sessions, and Tomcat with
//! in-memory sessions and a `jvmRoute` per instance.

mod support;

use std::net::SocketAddr;
use support::django::{DjangoTrust, DJANGO_SECRET_KEY};
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
    walk_migration(&Django { database }).await;
}

#[tokio::test]
async fn tomcat_migrates_with_nobody_logged_out() {
    walk_migration(&Tomcat).await;
}
