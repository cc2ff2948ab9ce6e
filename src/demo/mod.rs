//! `unstick demo`: two instances of the bundled legacy app behind the proxy, round robin, with
//! Redis when `REDIS_URL` is set and process memory otherwise, and the admin listener with a
//! random token. One command, nothing to install; the app's page explains what unstick does.

pub mod legacy_app;
pub mod page;

pub use legacy_app::{LegacyApp, LegacyAppConfig, UnknownSession};
pub use page::{DemoTour, TourInstance};

use crate::config::{parse_config, ConfigError};
use crate::server::{shutdown_signal, start, StartError};
use rand::distributions::{Alphanumeric, DistString};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
}

/// The demo's config: a real config file's text, so what the demo runs is what an operator writes.
pub fn demo_config(
    listen: SocketAddr,
    admin: SocketAddr,
    store_url: &str,
    app_a: SocketAddr,
    app_b: SocketAddr,
) -> String {
    format!(
        r#"[listener]
address = "{listen}"
shutdown_grace = "5s"

[admin]
address = "{admin}"
token_env = "{ADMIN_TOKEN_ENV}"

[redis]
url = "{store_url}"
key_prefix = "demo:"

[session]
cookie = "demo.sid"
id_format = "plain"
idle_timeout = "30m"
absolute_lifetime = "12h"

[identity.capture]
source = "whoami"
whoami_path = "/me"
user = "/user"

[[upstreams]]
name = "legacy"
instances = [
  {{ name = "a", url = "http://{app_a}" }},
  {{ name = "b", url = "http://{app_b}" }},
]

[[routes]]
path_prefix = "/"
upstream = "legacy"
mode = "redis"
logout_paths = ["/logout"]
"#
    )
}

/// Holds the demo's admin token when set; otherwise a random one is made at start.
pub const ADMIN_TOKEN_ENV: &str = "UNSTICK_DEMO_ADMIN_TOKEN";

/// The admin listener (and its dashboard) on `admin`, or beside `listen` on a port the system picks.
pub async fn run_demo(listen: SocketAddr, admin: Option<SocketAddr>) -> Result<(), DemoError> {
    let store_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "memory://".to_string());
    let bind = |address: SocketAddr| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| DemoError::Listen { address, source })
    };
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let (listener_a, listener_b) = (bind(loopback).await?, bind(loopback).await?);
    let address_of = |listener: &TcpListener| {
        listener.local_addr().map_err(|source| DemoError::Listen {
            address: loopback,
            source,
        })
    };
    let (app_a, app_b) = (address_of(&listener_a)?, address_of(&listener_b)?);
    let admin = admin.unwrap_or_else(|| SocketAddr::new(listen.ip(), 0));
    let text = demo_config(listen, admin, &store_url, app_a, app_b);
    let mut config = parse_config(&text, Path::new("<demo>"))?;
    let mut token = String::new();
    if let Some(admin) = config.admin.as_mut() {
        token = admin
            .token
            .get_or_insert_with(|| Alphanumeric.sample_string(&mut rand::thread_rng(), 24))
            .clone();
    }
    let shutdown = shutdown_signal();
    let server = start(config, None).await?;
    let listen = server.address();
    let dashboard = server
        .admin_address()
        .map(|address| format!("http://{address}/dashboard"));

    let memory = store_url == "memory://";
    let tour = Arc::new(DemoTour {
        proxy_url: format!("http://{listen}"),
        store: if memory {
            "process memory of the demo (memory://)".to_string()
        } else {
            "Redis, from REDIS_URL".to_string()
        },
        dashboard_url: dashboard.clone(),
        instances: [("a", app_a), ("b", app_b)]
            .into_iter()
            .map(|(name, address)| TourInstance {
                name: name.to_string(),
                url: format!("http://{address}"),
                memory: Default::default(),
            })
            .collect(),
    });
    let start_app = |listener: TcpListener, name: &str| {
        let config = LegacyAppConfig {
            tour: Some(tour.clone()),
            ..LegacyAppConfig::new(name)
        };
        LegacyApp::start(listener, config)
    };
    let started = |result: std::io::Result<LegacyApp>| {
        result.map_err(|source| DemoError::Listen {
            address: loopback,
            source,
        })
    };
    let app_a = started(start_app(listener_a, "a").await)?;
    let app_b = started(start_app(listener_b, "b").await)?;

    let store_note = if memory {
        "process memory (in production: Redis; set REDIS_URL=redis://127.0.0.1:6379 to try it)"
    } else {
        "Redis from REDIS_URL"
    };
    let dashboard_line = match &dashboard {
        Some(url) => format!("\n  dashboard:             {url}   token: {token}"),
        None => String::new(),
    };
    let banner = format!(
        "\nunstick demo\n\
         \n  legacy app instance a: http://{a}  (keeps logins in its own memory)\
         \n  legacy app instance b: http://{b}\
         \n  unstick, round robin:  http://{listen}   sessions in {store_note}\
         {dashboard_line}\
         \n\nTry it:\
         \n  1. Open http://{listen}/ and log in. Reload a few times: the instance alternates\
         \n     between a and b, and you stay logged in on both. The page shows unstick's side:\
         \n     which instance knew you itself and which got your identity from unstick.\
         \n  2. Open each instance directly (links on the page): only the one that took the\
         \n     login knows you there.\
         \n  3. Log out: you are logged out everywhere.\
         \n\nOr with curl:\
         \n  curl -c /tmp/jar -d user=alice http://{listen}/login\
         \n  for i in 1 2 3 4; do curl -b /tmp/jar http://{listen}/me; echo; done\
         \n\nCtrl-C to stop.\n",
        a = app_a.address,
        b = app_b.address,
    );
    // One write: a reader that stops at the address line (and closes the pipe) must not catch
    // the rest half-written, and a closed stdout is no reason to stop the demo.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), banner.as_bytes());
    server.serve_until(shutdown).await;
    app_a.stop().await;
    app_b.stop().await;
    Ok(())
}
