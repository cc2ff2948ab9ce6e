//! `listener.runtime = "per-core"`: a single-threaded tokio runtime per usable CPU, each
//! accepting on its own `SO_REUSEPORT` listener on the one address, as nginx workers do. A
//! connection stays on the thread that accepted it; the live state is shared, so a reload
//! reaches every worker, and shutdown stops and drains them all.

use super::connections::ConnectionLimits;
use crate::proxy::Proxy;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

/// As `TcpListener::bind` has it.
const LISTEN_BACKLOG: u32 = 1024;

/// `TOKIO_WORKER_THREADS` when set (as the multi-thread runtime reads it), else one worker
/// per CPU this process may run on (taskset and cgroup limits count).
pub(crate) fn workers() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The bound listeners, one per worker, not yet served.
pub(crate) struct PerCoreListeners {
    listeners: Vec<std::net::TcpListener>,
    address: SocketAddr,
}

impl PerCoreListeners {
    /// Binds `workers` listeners to `address`; with port 0 the first one picks the port and
    /// the others join it.
    pub(crate) fn bind(address: SocketAddr, workers: usize) -> io::Result<PerCoreListeners> {
        let mut listeners = Vec::with_capacity(workers.max(1));
        let mut bound = address;
        for _ in 0..workers.max(1) {
            let listener = reuse_port_listener(bound)?;
            bound = listener.local_addr()?;
            listeners.push(listener);
        }
        Ok(PerCoreListeners {
            listeners,
            address: bound,
        })
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    pub(crate) fn len(&self) -> usize {
        self.listeners.len()
    }

    /// Serves every listener on a worker thread of its own until `shutdown` completes; then
    /// every worker stops accepting, and requests in flight get up to `grace`.
    pub(crate) async fn serve(
        self,
        proxy: Arc<Proxy>,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
        limits: ConnectionLimits,
    ) {
        let (stop, stopped) = watch::channel(false);
        // Upstream connections opened by one worker can carry another's requests: every
        // worker's runtime lives until all of them are done.
        let (release, released) = watch::channel(false);
        let dispatch = tracing::dispatcher::get_default(|current| current.clone());
        let mut finished = Vec::with_capacity(self.listeners.len());
        for (index, listener) in self.listeners.into_iter().enumerate() {
            let (done, worker_done) = oneshot::channel::<()>();
            let worker = Worker {
                listener,
                proxy: proxy.clone(),
                stopped: stopped.clone(),
                released: released.clone(),
                grace,
                limits: limits.clone(),
                done,
            };
            let dispatch = dispatch.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("unstick-worker-{index}"))
                .spawn(move || {
                    let _logging = tracing::dispatcher::set_default(&dispatch);
                    worker.run();
                });
            match spawned {
                Ok(_) => finished.push(worker_done),
                Err(e) => tracing::error!(error = %e, "cannot start a worker thread"),
            }
        }
        shutdown.await;
        let _ = stop.send(true);
        // A worker that ended (or never started) has dropped its sender: Err, also done.
        for worker_done in finished {
            let _ = worker_done.await;
        }
        let _ = release.send(true);
    }
}

struct Worker {
    listener: std::net::TcpListener,
    proxy: Arc<Proxy>,
    stopped: watch::Receiver<bool>,
    released: watch::Receiver<bool>,
    grace: Duration,
    limits: ConnectionLimits,
    done: oneshot::Sender<()>,
}

impl Worker {
    fn run(self) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker's runtime");
                return;
            }
        };
        let Worker {
            listener,
            proxy,
            mut stopped,
            mut released,
            grace,
            limits,
            done,
        } = self;
        runtime.block_on(async move {
            let listener = match TcpListener::from_std(listener) {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!(error = %e, "a worker cannot serve its listener");
                    return;
                }
            };
            // The sender dropped (the server future was dropped) also means stop.
            let shutdown = async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            super::serve(listener, proxy, shutdown, grace, limits).await;
            drop(done);
            let _ = released.wait_for(|release| *release).await;
        });
    }
}

/// A listening socket that shares its address with the other workers' (`SO_REUSEPORT`: the
/// kernel spreads new connections over them).
fn reuse_port_listener(address: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(address)?;
    // Registered with this runtime for a moment only: each worker registers it with its own.
    socket.listen(LISTEN_BACKLOG)?.into_std()
}
