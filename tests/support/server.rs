//! unstick's server inside the test process, started as `unstick serve` starts it
//! (`unstick::server::start`), for the tests that are about requests rather than the process.

use super::{LogLines, ProxyConfig, RunningProxy};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

/// A server started by [`start_server`]; dropping it stops the server at once, as killing
/// the process would.
pub struct TestServer {
    pub address: SocketAddr,
    logs: LogLines,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the server for `config` on a free port and returns once it accepts connections.
///
/// The server gets a tokio runtime and thread of its own rather than the test's: its
/// background tasks (Redis client, health checks) end with it, a test on a current-thread
/// runtime that blocks cannot starve it, and its log lines, written as the binary writes them
/// with `--log-format json`, are told apart from those of other servers in the process.
pub async fn start_server(config: &ProxyConfig) -> TestServer {
    unstick::install_crypto_provider();
    let toml = config.to_toml();
    let config = unstick::config::parse_config(&toml, Path::new("unstick.toml"))
        .unwrap_or_else(|e| panic!("invalid test config: {e}\n{toml}"));
    let logs = LogLines::default();
    let dispatch = logs.dispatch();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let _logging = tracing::dispatcher::set_default(&dispatch);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(move || log_this_thread_to(&dispatch))
            .on_thread_stop(|| {
                THREAD_LOGGING
                    .with(|guard| guard.borrow_mut().take())
                    .map_or((), drop)
            })
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            match unstick::server::start(config, None).await {
                Ok(server) => {
                    let _ = ready_tx.send(Ok(server.address()));
                    // Served on this thread, as the binary serves on its main one, until the
                    // fixture is dropped: then at once, as killing the process would.
                    tokio::select! {
                        _ = server.serve_until(std::future::pending()) => {}
                        _ = stop_rx => {}
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            }
        });
        // Whatever the server still runs (connections, reconnects) ends here, without waiting.
        runtime.shutdown_background();
    });
    let started = tokio::time::timeout(Duration::from_secs(20), ready_rx).await;
    let address = match started {
        Ok(Ok(Ok(address))) => address,
        Ok(Ok(Err(e))) => panic!("unstick did not start: {e}; logs:\n{}", logs.text()),
        _ => panic!("unstick did not start; logs:\n{}", logs.text()),
    };
    // Tests also assert that something is *not* logged: a sink that caught nothing would
    // pass them all.
    assert_eq!(
        logs.count("unstick listening"),
        1,
        "the server's logs were not captured:\n{}",
        logs.text()
    );
    TestServer {
        address,
        logs,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

thread_local! {
    /// The server's log sink, as the default of each of its runtime's threads.
    static THREAD_LOGGING: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { std::cell::RefCell::new(None) };
}

fn log_this_thread_to(dispatch: &tracing::Dispatch) {
    let guard = tracing::dispatcher::set_default(dispatch);
    THREAD_LOGGING.with(|slot| *slot.borrow_mut() = Some(guard));
}

impl RunningProxy for TestServer {
    fn address(&self) -> SocketAddr {
        self.address
    }

    fn log_lines(&self) -> &LogLines {
        &self.logs
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
