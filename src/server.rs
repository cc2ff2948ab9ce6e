//! The client-facing listener: accepts connections, serves HTTP/1.1 (with upgrades) and h2c
//! through the proxy pipeline, and shuts down gracefully: stop accepting, let requests in
//! flight finish within the grace period. The HTTPS listener is in [`tls`].

pub mod tls;

use crate::proxy::headers::ClientAddress;
use crate::proxy::Proxy;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Largest request head accepted (request line and headers); beyond it the client gets 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// HTTP/1.1 and HTTP/2 with the same limits on every listener.
fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(MAX_HEAD_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD_BYTES as u32);
    builder
}

/// Serves until `shutdown` completes, then waits up to `grace` for open requests.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let builder = Arc::new(connection_builder());
    accept_until(
        listener,
        "http",
        shutdown,
        grace,
        move |stream, client, watcher| {
            let (builder, proxy) = (builder.clone(), proxy.clone());
            serve_connection(builder, proxy, stream, client, "http", watcher)
        },
    )
    .await;
}

/// Serves one accepted connection (plain, or after the TLS handshake) through the proxy until
/// the client closes it or shutdown ends it. `scheme` is the listener's, for X-Forwarded-Proto.
pub(crate) async fn serve_connection<S>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    proxy: Arc<Proxy>,
    stream: S,
    client: SocketAddr,
    scheme: &'static str,
    watcher: Watcher,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client = ClientAddress::new(client.ip());
    let service = service_fn(move |request| {
        let (proxy, client) = (proxy.clone(), client.clone());
        async move { Ok::<_, Infallible>(proxy.handle(request, &client, scheme).await) }
    });
    // HTTP/2 when the client opens with the h2 preface (h2c, or ALPN h2 over TLS), else HTTP/1.1.
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .into_owned();
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(error = %e, scheme, "client connection ended with an error");
    }
}

/// The accept loop shared by the listeners: each connection is handed to `on_connection` in
/// a task of its own, with a watcher so that shutdown waits for it. On `shutdown` the listener
/// closes at once (new connections are refused) and open connections get up to `grace`.
pub(crate) async fn accept_until<F, C>(
    listener: TcpListener,
    scheme: &'static str,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    on_connection: F,
) where
    F: Fn(TcpStream, SocketAddr, Watcher) -> C,
    C: Future<Output = ()> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, scheme, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(on_connection(stream, client, graceful.watcher()));
    }
    drop(listener);
    tracing::info!(
        scheme,
        "no longer accepting connections; finishing requests in flight"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
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

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown signal received");
}
