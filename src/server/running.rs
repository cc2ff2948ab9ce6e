//! Starting the proxy from a config: listeners bound, store connected, live state built, then
//! requests served until shutdown. `unstick serve`, `unstick demo` and the in-process tests
//! all start it this way. With `listener.runtime = "per-core"` the client listener is served
//! by worker threads of their own (see [`per_core`]).

use super::connections::ConnectionLimits;
use super::per_core::{self, PerCoreListeners};
use super::tls::{serve_tls, TlsCertificates, TlsError};
use crate::admin::Admin;
use crate::config::{Config, ListenerRuntime};
use crate::live::LiveState;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::Reloader;
use crate::session::old_store::OldStoreError;
use crate::session::{SessionStore, StoreError};
use futures_util::FutureExt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `what` names the config key of the address, or is empty for `listener.address`.
    #[error("cannot listen on {address}{what}")]
    Listen {
        address: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    OldStore(#[from] OldStoreError),
}

/// A started proxy: every listener bound, the admin and HTTPS listeners serving, the client
/// listener served by [`RunningServer::serve_until`] (connections wait in its backlog until
/// then).
pub struct RunningServer {
    address: SocketAddr,
    https_address: Option<SocketAddr>,
    admin_address: Option<SocketAddr>,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    /// Taken by `serve_until`.
    listener: Option<ClientListener>,
    limits: ConnectionLimits,
    grace: Duration,
    /// Sending or dropping it starts the graceful shutdown of the HTTPS listener.
    stop_https: Option<oneshot::Sender<()>>,
    https: Option<JoinHandle<()>>,
    admin: Option<JoinHandle<()>>,
}

/// The client listener: one socket served by the main runtime, or one per worker thread.
enum ClientListener {
    Shared(TcpListener),
    PerCore(PerCoreListeners),
}

/// Starts the proxy for `config` up to [`RunningServer::serve_until`]. With `reload_from`, the
/// config is reloaded from that file on SIGHUP and when the file changes (see [`Reloader`]);
/// the watchers are in place before the listeners are announced, so a reload asked for at
/// once is not lost.
pub async fn start(
    config: Config,
    reload_from: Option<&Path>,
) -> Result<RunningServer, StartError> {
    // The limit in force: `unstick serve` has raised it to the hard limit by now.
    let open_files = rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(soft, _hard)| soft);
    let metrics = Arc::new(Metrics::new());
    let limits =
        ConnectionLimits::for_listener(&config.listener, open_files).observed_by(metrics.clone());
    if config
        .listener
        .max_connections
        .is_some_and(|max| max as u64 * 2 > open_files)
    {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_files,
            "listener.max_connections leaves too few file descriptors for upstream connections"
        );
    }
    tracing::info!(
        max_connections = limits.max_connections,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        "client connection settings"
    );
    // A certificate that cannot be read stops the start, naming the file.
    let tls = match &config.listener.tls {
        Some(tls) => Some((tls.address, TlsCertificates::load(tls)?)),
        None => None,
    };
    let grace = config.listener.shutdown_grace;
    let (listener, address) = match config.listener.runtime {
        ListenerRuntime::MultiThread => {
            let (listener, address) = bind(config.listener.address, "").await?;
            (ClientListener::Shared(listener), address)
        }
        ListenerRuntime::PerCore => {
            let address = config.listener.address;
            let listeners =
                PerCoreListeners::bind(address, per_core::workers()).map_err(|source| {
                    StartError::Listen {
                        address,
                        what: "",
                        source,
                    }
                })?;
            let bound = listeners.address();
            tracing::info!(workers = listeners.len(), "one runtime per core");
            (ClientListener::PerCore(listeners), bound)
        }
    };
    let store = SessionStore::connect(&config.store)
        .await?
        .observed_by(metrics.clone());
    let live = LiveState::build(config.clone(), store, metrics.clone(), None).await?;
    let proxy = Proxy::new(live);
    if let Some(path) = reload_from {
        let reloader = Reloader::new(path, proxy.clone(), metrics.clone());
        reloader.mark_active(&config);
        reloader.spawn_watchers();
    }
    let (admin, admin_address) = match &config.admin {
        Some(admin) => {
            let (listener, address) = bind(admin.address, " (admin.address)").await?;
            let api = Admin::new(
                proxy.clone(),
                metrics.clone(),
                admin.token.clone(),
                admin.token_env.clone(),
            );
            let admin_limits = ConnectionLimits::new(
                config.listener.header_timeout,
                config.listener.idle_timeout,
                crate::admin::MAX_CONNECTIONS,
            );
            let task = tokio::spawn(api.serve(listener, admin_limits));
            tracing::info!(%address, "admin listening");
            (Some(task), Some(address))
        }
        None => (None, None),
    };
    let (stop_https, https_stopped) = oneshot::channel::<()>();
    let (https, https_address) = match tls {
        Some((tls_address, certs)) => {
            let (tls_listener, tls_address) = bind(tls_address, " (listener.tls.address)").await?;
            let server_config = certs.server_config()?;
            certs.spawn_watcher();
            tracing::info!(address = %tls_address, "unstick listening (https)");
            let task = tokio::spawn(serve_tls(
                tls_listener,
                server_config,
                proxy.clone(),
                https_stopped.map(|_| ()),
                grace,
                limits.clone(),
            ));
            (Some(task), Some(tls_address))
        }
        None => (None, None),
    };
    tracing::info!(%address, "unstick listening");
    Ok(RunningServer {
        address,
        https_address,
        admin_address,
        proxy,
        metrics,
        listener: Some(listener),
        limits,
        grace,
        stop_https: Some(stop_https),
        https,
        admin,
    })
}

async fn bind(
    address: SocketAddr,
    what: &'static str,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Listen {
            address,
            what,
            source,
        })?;
    // With port 0 the system picked one: announce that one.
    let bound = listener.local_addr().unwrap_or(address);
    Ok((listener, bound))
}

impl RunningServer {
    /// The client listener's address (the port the system picked when the config said 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn https_address(&self) -> Option<SocketAddr> {
        self.https_address
    }

    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin_address
    }

    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves the client listener on this task until `shutdown` completes; then both client
    /// listeners stop accepting and requests in flight get up to `listener.shutdown_grace`.
    pub async fn serve_until(mut self, shutdown: impl Future<Output = ()>) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let stop_https = self.stop_https.take();
        let shutdown = async move {
            shutdown.await;
            drop(stop_https);
        };
        let proxy = self.proxy.clone();
        match listener {
            ClientListener::Shared(listener) => {
                super::serve(listener, proxy, shutdown, self.grace, self.limits.clone()).await
            }
            ClientListener::PerCore(listeners) => {
                listeners
                    .serve(proxy, shutdown, self.grace, self.limits.clone())
                    .await
            }
        }
        if let Some(https) = self.https.take() {
            let _ = https.await;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        // The admin listener has no graceful shutdown: it serves until the server is gone.
        if let Some(admin) = &self.admin {
            admin.abort();
        }
    }
}
