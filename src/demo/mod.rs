//! `unstick demo`: two instances of the bundled legacy app behind the proxy, round robin, with
//! Redis when `REDIS_URL` is set and process memory otherwise. One command, nothing to install.

pub mod legacy_app;

pub use legacy_app::{LegacyApp, LegacyAppConfig, UnknownSession};

use crate::config::{parse_config, ConfigError};
use crate::server::{shutdown_signal, start, StartError};
use std::net::SocketAddr;
use std::path::Path;
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
    store_url: &str,
    app_a: SocketAddr,
    app_b: SocketAddr,
) -> String {
    format!(
        r#"[listener]
address = "{listen}"
shutdown_grace = "5s"

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

pub async fn run_demo(listen: SocketAddr) -> Result<(), DemoError> {
    let store_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "memory://".to_string());
    let bind = |address: SocketAddr| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| DemoError::Listen { address, source })
    };
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let app_a = LegacyApp::start(bind(loopback).await?, LegacyAppConfig::new("a"))
        .await
        .map_err(|source| DemoError::Listen {
            address: loopback,
            source,
        })?;
    let app_b = LegacyApp::start(bind(loopback).await?, LegacyAppConfig::new("b"))
        .await
        .map_err(|source| DemoError::Listen {
            address: loopback,
            source,
        })?;
    let text = demo_config(listen, &store_url, app_a.address, app_b.address);
    let config = parse_config(&text, Path::new("<demo>"))?;
    let shutdown = shutdown_signal();
    let server = start(config, None).await?;
    let listen = server.address();

    let store_note = if store_url == "memory://" {
        "process memory (set REDIS_URL=redis://127.0.0.1:6379 to use Redis)".to_string()
    } else {
        "Redis from REDIS_URL".to_string()
    };
    let banner = format!(
        "\nunstick demo\n\
         \n  legacy app instance a: http://{a}  (keeps logins in its own memory)\
         \n  legacy app instance b: http://{b}\
         \n  unstick, round robin:  http://{listen}   sessions in {store_note}\
         \n\nTry it:\
         \n  1. Open http://{listen}/ and log in. Reload a few times: the instance alternates\
         \n     between a and b, and you stay logged in on both.\
         \n  2. Open http://{a}/ directly: instance a alone only knows logins made on it.\
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
