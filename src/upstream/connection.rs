//! Keep-alive HTTP/1.1 connections to one app instance. Our own pool rather than a generic
//! client, so that a request the connection never sent (refused connect, stale keep-alive) is
//! handed back and can be retried elsewhere instead of failing.

use crate::body::Body;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {authority} timed out after {timeout:?}")]
    Timeout {
        authority: String,
        timeout: Duration,
    },
    #[error("connect to {authority}: {source}")]
    Io {
        authority: String,
        source: std::io::Error,
    },
    #[error("HTTP handshake with {authority}: {source}")]
    Handshake {
        authority: String,
        source: hyper::Error,
    },
}

/// Idle (and finishing) connections of one instance. A connection is put back as soon as its
/// response head arrives; it becomes ready again once that response body is done.
pub struct ConnectionPool {
    authority: String,
    max_idle: usize,
    idle: Mutex<Vec<PooledConnection>>,
}

/// A connection taken from the pool, and since when it had been there.
pub struct PooledConnection {
    pub sender: SendRequest<Body>,
    pub pooled_at: Instant,
}

impl ConnectionPool {
    pub fn new(authority: String, max_idle: usize) -> ConnectionPool {
        ConnectionPool {
            authority,
            max_idle,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<PooledConnection>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The ready pooled connection used last, if any (closed ones are dropped on the way).
    pub fn take_idle(&self) -> Option<PooledConnection> {
        let mut idle = self.idle();
        idle.retain(|pooled| !pooled.sender.is_closed());
        let position = idle.iter().rposition(|pooled| pooled.sender.is_ready())?;
        Some(idle.swap_remove(position))
    }

    /// Returns a connection for reuse.
    pub fn put_back(&self, sender: SendRequest<Body>) {
        let mut idle = self.idle();
        if idle.len() < self.max_idle && !sender.is_closed() {
            idle.push(PooledConnection {
                sender,
                pooled_at: Instant::now(),
            });
        }
    }

    /// Opens a new connection. `upgrades` keeps the socket usable after a 101 response.
    pub async fn connect(&self, timeout: Duration) -> Result<SendRequest<Body>, ConnectError> {
        let authority = &self.authority;
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(authority)).await {
            Err(_) => {
                return Err(ConnectError::Timeout {
                    authority: authority.clone(),
                    timeout,
                })
            }
            Ok(Err(source)) => {
                return Err(ConnectError::Io {
                    authority: authority.clone(),
                    source,
                })
            }
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| ConnectError::Handshake {
                authority: authority.clone(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}
