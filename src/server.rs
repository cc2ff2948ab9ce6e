//! The client-facing listener: accepts connections, serves HTTP/1.1 (with upgrades) and h2c
//! through the proxy pipeline, and shuts down gracefully: stop accepting, let requests in
//! flight finish within the grace period. The HTTPS listener is in [`tls`].

pub mod connections;
mod per_core;
mod running;
pub mod tls;

pub use running::{start, RunningServer, StartError};

use crate::body::Body;
use crate::proxy::headers::ClientAddress;
use crate::proxy::Proxy;
use connections::{AcceptState, Activity, ConnectionLimits, Counted, Expiry, Tracked};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// Largest request head accepted (request line and headers); beyond it the client gets 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// HTTP/2 pings find peers that vanished while streams are open (idle connections are closed
/// by the idle timeout whether or not they answer pings).
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);
/// After a timeout, how long a connection may take to close gracefully (HTTP/2 GOAWAY)
/// before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// HTTP/1.1 and HTTP/2 with the same limits on every listener.
pub(crate) fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection's own watchdog bounds the head (from accept, and between requests);
        // hyper's would also close keep-alive connections idle for longer than it.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    builder
}

/// What a connection task gets from the accept loop.
pub(crate) struct Accepted {
    pub(crate) at: Instant,
    pub(crate) limits: ConnectionLimits,
    /// Changes when the listener shuts down; dropped when the connection is done.
    pub(crate) shutdown: watch::Receiver<()>,
}

/// Serves until `shutdown` completes, then waits up to `grace` for open requests.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: ConnectionLimits,
) {
    let builder = Arc::new(connection_builder());
    accept_until(
        listener,
        "http",
        shutdown,
        grace,
        limits,
        move |stream, client, accepted| {
            let (builder, proxy) = (builder.clone(), proxy.clone());
            async move { serve_proxied(&builder, proxy, stream, client, "http", accepted).await }
        },
    )
    .await;
}

/// Serves one accepted connection (plain, or after the TLS handshake) through the proxy.
/// `scheme` is the listener's, for X-Forwarded-Proto.
pub(crate) async fn serve_proxied<S>(
    builder: &auto::Builder<TokioExecutor>,
    proxy: Arc<Proxy>,
    stream: S,
    client: SocketAddr,
    scheme: &'static str,
    accepted: Accepted,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client = ClientAddress::new(client.ip());
    let handler = move |request| {
        let (proxy, client) = (proxy.clone(), client.clone());
        async move { proxy.handle(request, &client, scheme).await }
    };
    serve_connection(builder, stream, scheme, accepted, handler).await;
}

/// Serves one connection with `handler` until the client closes it, shutdown ends it, or it
/// stays without a request too long: no complete request head within the header timeout of
/// accept, or no request within the idle timeout of the last one.
pub(crate) async fn serve_connection<S, H, F>(
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    scheme: &'static str,
    accepted: Accepted,
    handler: H,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Accepted {
        at,
        limits,
        mut shutdown,
    } = accepted;
    let activity = Activity::new(at);
    let service = {
        let activity = activity.clone();
        service_fn(move |request| {
            let busy = activity.begin();
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await.map(|body| Tracked::new(body, busy))) }
        })
    };
    // HTTP/2 when the client opens with the h2 preface (h2c, or ALPN h2 over TLS), else HTTP/1.1.
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut draining = false;
    // Set once the connection was asked to close: past it, it is dropped.
    let mut close_by: Option<Instant> = None;
    // While requests are in progress there is no deadline; the watchdog looks again this often.
    let recheck = limits.header_timeout.min(limits.idle_timeout);
    loop {
        let deadline = match close_by {
            Some(at) => Some((at, None)),
            None => activity.deadline(&limits).map(|(at, why)| (at, Some(why))),
        };
        // Requests do not wake the watchdog: it sleeps to the deadline as it stood, and on
        // waking finds it moved (a request came) or passed.
        let wake = deadline.map_or_else(|| Instant::now() + recheck, |(at, _)| at);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, scheme, "client connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(wake) => {
                match deadline {
                    // Requests in progress: look again later.
                    None => {}
                    // A request that slipped in before the close finishes first.
                    Some((_, None)) if activity.busy() => {
                        close_by = Some(Instant::now() + CLOSE_GRACE)
                    }
                    Some((_, None)) => {
                        tracing::debug!(scheme, "client connection did not close in time; dropped");
                        return;
                    }
                    // Re-checked: a request may have come since, moving the deadline.
                    Some((_, Some(why)))
                        if activity
                            .deadline(&limits)
                            .is_some_and(|(at, _)| at <= Instant::now()) =>
                    {
                        let (timeout, reason) = match why {
                            Expiry::NoRequest => ("header", "no request head within the header timeout"),
                            Expiry::Idle => ("idle", "idle for the idle timeout"),
                        };
                        tracing::debug!(scheme, reason, "closing client connection");
                        if let Some(metrics) = limits.metrics() {
                            metrics.connection_timeout(timeout);
                        }
                        connection.as_mut().graceful_shutdown();
                        close_by = Some(Instant::now() + CLOSE_GRACE);
                    }
                    Some(_) => {}
                }
            }
        }
    }
}

/// The accept loop shared by the listeners: each connection is handed to `on_connection` in
/// a task of its own. At most `limits.max_connections` are open at once: at the cap the loop
/// waits for a slot and new connections wait in the listen backlog. On `shutdown` the listener
/// closes at once (new connections are refused) and open connections get up to `grace`.
pub(crate) async fn accept_until<F, C>(
    listener: TcpListener,
    scheme: &'static str,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: ConnectionLimits,
    on_connection: F,
) where
    F: Fn(Counted<TcpStream>, SocketAddr, Accepted) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    // Every connection holds a receiver; `closed` completes when the last one is done.
    let (shutdown_tx, shutdown_rx) = watch::channel(());
    let mut state = AcceptState::default();
    tokio::pin!(shutdown);
    loop {
        let slot = match limits.try_slot() {
            Some(slot) => {
                state.slot_free(&limits, scheme);
                slot
            }
            None => {
                state.cap_reached(&limits, scheme);
                tokio::select! {
                    slot = limits.slot() => match slot {
                        Some(slot) => {
                            state.slot_after_wait();
                            slot
                        }
                        None => break,
                    },
                    _ = &mut shutdown => break,
                }
            }
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    let pause = state.accept_failed(&e, &limits, scheme);
                    drop(slot);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => continue,
                        _ = &mut shutdown => break,
                    }
                }
            },
            _ = &mut shutdown => break,
        };
        state.accepted(limits.open(), scheme);
        let _ = stream.set_nodelay(true);
        let accepted = Accepted {
            at: Instant::now(),
            limits: limits.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let stream = Counted::new(stream, slot, &limits);
        tokio::spawn(on_connection(stream, client, accepted));
    }
    drop(listener);
    tracing::info!(
        scheme,
        "no longer accepting connections; finishing requests in flight"
    );
    drop(shutdown_rx);
    let _ = shutdown_tx.send(());
    if tokio::time::timeout(grace, shutdown_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            scheme,
            "requests still open after the grace period; exiting anyway"
        );
    }
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed by the call, not when
/// the future is first polled: call it before the listeners open, so that a signal sent as
/// soon as they answer stops the server instead of killing it.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
    }
}
