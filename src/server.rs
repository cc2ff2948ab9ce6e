//! The client-facing listener: accepts connections, serves HTTP/1.1 (with upgrades) and h2c
//! through the proxy pipeline, and shuts down gracefully: stop accepting, let requests in
//! flight finish within the grace period. The HTTPS listener is in [`tls`].

pub mod connections;
mod idle;
mod per_core;
mod running;
pub mod tls;

pub use running::{start, RunningServer, StartError};

use crate::body::{Body, BodyInFlight};
use crate::metrics::GaugeGuard;
use crate::proxy::headers::ClientAddress;
use crate::proxy::Proxy;
use bytes::Bytes;
use connections::{AcceptState, Activity, ConnectionLimits, Counted, Expiry, Tracked};
use http::{Request, Response};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use idle::{ClientSocket, ClientStream, Protocol, PARK_AFTER};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
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
pub(crate) struct ConnectionBuilders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

pub(crate) fn connection_builders() -> ConnectionBuilders {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        // The connection's own watchdog bounds the head (from accept, and between requests);
        // hyper's would also close keep-alive connections idle for longer than it.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT)
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    ConnectionBuilders { http1, http2 }
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
    let builder = Arc::new(connection_builders());
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
    builder: &ConnectionBuilders,
    proxy: Arc<Proxy>,
    stream: S,
    client: SocketAddr,
    scheme: &'static str,
    accepted: Accepted,
) where
    S: ClientSocket,
{
    let client = ClientAddress::new(client.ip());
    let handler = move |request| {
        let (proxy, client) = (proxy.clone(), client.clone());
        // Boxed: the pipeline's future is about 4 KB, and hyper and the service wrapper each
        // move it; boxed, one pointer moves instead of 4 KB a few times per request.
        Box::pin(async move { proxy.handle(request, &client, scheme).await })
    };
    serve_connection(builder, stream, scheme, accepted, handler).await;
}

/// Serves one connection with `handler` until the client closes it, shutdown ends it, or it
/// stays without a request too long: no complete request head within the header timeout of
/// accept, or no request within the idle timeout of the last one.
pub(crate) async fn serve_connection<S, H, F>(
    builder: &ConnectionBuilders,
    stream: S,
    scheme: &'static str,
    accepted: Accepted,
    handler: H,
) where
    S: ClientSocket,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let Accepted {
        at,
        limits,
        shutdown,
    } = accepted;
    let activity = Activity::new(at);
    let mut service = {
        let activity = activity.clone();
        service_fn(move |mut request: Request<Incoming>| {
            let busy = activity.begin();
            if !request.body().is_end_stream() {
                // The request is in progress until its body is over too, not only its answer:
                // an app may answer before it has read the body (see `BodyInFlight`).
                let body_busy = BodyInFlight::new(activity.begin());
                request.extensions_mut().insert(body_busy);
            }
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await.map(|body| Tracked::new(body, busy))) }
        })
    };
    let mut watchdog = Watchdog {
        activity: activity.clone(),
        limits,
        shutdown,
        scheme,
        draining: false,
    };
    let mut stream = ClientStream::new(stream, activity);
    // HTTP/2 when the client opens with the h2 preface (h2c, or ALPN h2 over TLS), else HTTP/1.1.
    let protocol = match watchdog.until_client_speaks(stream.sniff_protocol()).await {
        Some(Ok(protocol)) => protocol,
        Some(Err(e)) => {
            tracing::debug!(error = %e, scheme, "client connection failed before its first request");
            return;
        }
        None => return,
    };
    if protocol == Protocol::Http2 {
        let mut connection = Box::pin(
            builder
                .http2
                .serve_connection(TokioIo::new(stream), service),
        );
        watchdog
            .run(connection.as_mut(), |c| c.graceful_shutdown(), false)
            .await;
        return;
    }
    // HTTP/1.1 in rounds: a round ends when the client closes, the connection is closed, or it
    // parks when idle; a parked connection waits outside hyper for the client's next bytes.
    loop {
        let mut connection = Box::new(
            builder
                .http1
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades(),
        );
        watchdog
            .run(Pin::new(&mut *connection), |c| c.graceful_shutdown(), true)
            .await;
        // `None`: upgraded, and the socket belongs to the tunnel now.
        let Some(parts) = connection.into_parts() else {
            return;
        };
        let mut parked = parts.io.into_inner();
        if !parked.parked() {
            return;
        }
        // A copy, and the buffer dropped now: its slice would keep hyper's whole read buffer
        // alive while parked.
        parked.unpark(Bytes::copy_from_slice(&parts.read_buf));
        drop(parts.read_buf);
        service = parts.service;
        let _parked = watchdog
            .limits
            .metrics()
            .map(|m| GaugeGuard::new(&m.client_connections_parked));
        match watchdog.until_client_speaks(parked.readable()).await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::debug!(error = %e, scheme, "parked client connection failed");
                return;
            }
            None => return,
        }
        stream = parked;
    }
}

/// Watches one client connection: closes it when shutdown begins or when it has gone without a
/// request too long, and asks an idle HTTP/1.1 connection to park.
struct Watchdog {
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    /// Changes when the listener shuts down.
    shutdown: watch::Receiver<()>,
    scheme: &'static str,
    draining: bool,
}

impl Watchdog {
    /// Runs a hyper connection until it ends; `close` asks it to close gracefully.
    async fn run<C>(&mut self, mut connection: Pin<&mut C>, close: fn(Pin<&mut C>), parkable: bool)
    where
        C: Future<Output = hyper::Result<()>>,
    {
        let (activity, limits, scheme) = (&self.activity, &self.limits, self.scheme);
        if self.draining {
            close(connection.as_mut());
        }
        // Set once the connection was asked to close: past it, it is dropped.
        let mut close_by: Option<Instant> = None;
        // While requests are in progress there is no deadline; the watchdog looks again this often.
        let recheck = limits.header_timeout.min(limits.idle_timeout);
        loop {
            let deadline = match close_by {
                Some(at) => Some((at, None)),
                None => activity.deadline(limits).map(|(at, why)| (at, Some(why))),
            };
            // Requests do not wake the watchdog: it sleeps to the deadline as it stood, and on
            // waking finds it moved (a request came) or passed.
            let mut wake = deadline.map_or_else(|| Instant::now() + recheck, |(at, _)| at);
            let mut park_at = None;
            if parkable && close_by.is_none() && !self.draining {
                // Not idle yet (or parking already asked for): look again within PARK_AFTER,
                // so a connection parks at most twice that long after its last response.
                park_at = activity.park_at(PARK_AFTER);
                wake = wake.min(park_at.unwrap_or_else(|| Instant::now() + PARK_AFTER));
            }
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, scheme, "client connection ended with an error");
                    }
                    return;
                }
                _ = self.shutdown.changed(), if !self.draining => {
                    self.draining = true;
                    close(connection.as_mut());
                }
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    // Still idle since then: park at the next read that would wait.
                    if park_at.is_some_and(|at| at <= now)
                        && activity.park_at(PARK_AFTER).is_some_and(|at| at <= now)
                    {
                        activity.request_park();
                        continue;
                    }
                    match deadline {
                        // Requests in progress: look again later.
                        None => {}
                        // A request that slipped in before the close finishes first.
                        Some((_, None)) if activity.busy() => {
                            close_by = Some(now + CLOSE_GRACE)
                        }
                        Some((_, None)) => {
                            tracing::debug!(scheme, "client connection did not close in time; dropped");
                            return;
                        }
                        // Re-checked: a request may have come since, moving the deadline.
                        Some((_, Some(why)))
                            if activity.deadline(limits).is_some_and(|(at, _)| at <= now) =>
                        {
                            self.timed_out(why);
                            close(connection.as_mut());
                            close_by = Some(now + CLOSE_GRACE);
                        }
                        Some(_) => {}
                    }
                }
            }
        }
    }

    /// Waits outside hyper (before the first request, or parked) for the client to send
    /// something; `None` if the header or idle timeout passed first, or shutdown began.
    async fn until_client_speaks<T>(&mut self, waiting: impl Future<Output = T>) -> Option<T> {
        if self.draining {
            return None;
        }
        let deadline = self.activity.deadline(&self.limits);
        let wake = deadline.map_or_else(Instant::now, |(at, _)| at);
        tokio::select! {
            result = waiting => Some(result),
            _ = self.shutdown.changed() => {
                self.draining = true;
                None
            }
            _ = tokio::time::sleep_until(wake), if deadline.is_some() => {
                if let Some((_, why)) = deadline {
                    self.timed_out(why);
                }
                None
            }
        }
    }

    fn timed_out(&self, why: Expiry) {
        let (timeout, reason) = match why {
            Expiry::NoRequest => ("header", "no request head within the header timeout"),
            Expiry::Idle => ("idle", "idle for the idle timeout"),
        };
        tracing::debug!(scheme = self.scheme, reason, "closing client connection");
        if let Some(metrics) = self.limits.metrics() {
            metrics.connection_timeout(timeout);
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
