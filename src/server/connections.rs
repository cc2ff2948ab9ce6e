//! Limits on client connections, so that clients that connect and then say nothing cannot hold
//! the process's file descriptors: a deadline from accept to the first complete request head,
//! an idle timeout between requests, a cap on open connections (all client listeners share
//! it), and the open-file limit raised to its hard limit at start.

use crate::config::ListenerConfig;
use crate::metrics::{GaugeGuard, Metrics};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Descriptors kept out of the default cap: upstream pools, Redis, old stores, the admin
/// listener, files. At most a quarter of the limit.
const RESERVED_DESCRIPTORS: u64 = 256;
/// The default cap never goes below this, however low the open-file limit.
const MIN_DEFAULT_CONNECTIONS: u64 = 16;

/// The timeouts of a listener and the connection slots it draws from.
#[derive(Clone)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    slots: Arc<Semaphore>,
    metrics: Option<Arc<Metrics>>,
}

impl ConnectionLimits {
    pub fn new(header_timeout: Duration, idle_timeout: Duration, max_connections: usize) -> Self {
        let max_connections = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimits {
            header_timeout,
            idle_timeout,
            max_connections,
            slots: Arc::new(Semaphore::new(max_connections)),
            metrics: None,
        }
    }

    /// Counts connections, timeouts, waits at the cap and failed accepts in `metrics`.
    pub fn observed_by(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }

    /// The listener's limits; without `max_connections`, a cap derived from `open_files`.
    pub fn for_listener(config: &ListenerConfig, open_files: u64) -> Self {
        let max = config
            .max_connections
            .unwrap_or_else(|| default_max_connections(open_files));
        Self::new(config.header_timeout, config.idle_timeout, max)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max_connections
            .saturating_sub(self.slots.available_permits())
    }

    pub(crate) fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    pub(crate) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }

    pub(crate) fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

/// Half of what is left of the open-file limit once descriptors for upstream, Redis and the
/// admin listener are set aside: a proxied request holds a client and an upstream connection.
pub fn default_max_connections(open_files: u64) -> usize {
    let reserved = RESERVED_DESCRIPTORS.min(open_files / 4);
    let max = (open_files.saturating_sub(reserved) / 2).max(MIN_DEFAULT_CONNECTIONS);
    usize::try_from(max).unwrap_or(usize::MAX)
}

/// The open-file limit before and after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit: the default soft limit (often 1024) is
/// far below what a proxy with thousands of keep-alive clients needs.
pub fn raise_open_file_limit() -> io::Result<OpenFileLimit> {
    let (before, hard) = rlimit::Resource::NOFILE.get()?;
    let soft = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(OpenFileLimit { before, soft, hard })
}

/// A client socket that holds its connection slot until it is closed, wherever it ends up
/// (an upgraded connection keeps the slot after the HTTP connection is done).
pub struct Counted<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    /// The open-connections gauge, counting this connection.
    _counted: Option<GaugeGuard>,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, slot: OwnedSemaphorePermit, limits: &ConnectionLimits) -> Self {
        Counted {
            inner,
            _slot: slot,
            _counted: limits
                .metrics()
                .map(|m| GaugeGuard::new(&m.client_connections)),
        }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Whether a connection has requests in progress, and since when it has had none. Requests
/// only record this; the connection's watchdog reads it when its timer fires (no wake-up per
/// request: that cost about 5,000 instructions a request).
pub(crate) struct Activity {
    accepted: Instant,
    state: Mutex<ActivityState>,
    /// The watchdog asks the connection to park (see `server::idle`) at its next idle read.
    park: AtomicBool,
    /// Bytes came from the client since the last response ended: a request may be arriving.
    read_since_idle: AtomicBool,
}

struct ActivityState {
    in_progress: usize,
    served: bool,
    idle_since: Instant,
}

/// Why a connection's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// No complete request head since accept.
    NoRequest,
    /// No request since the last one ended.
    Idle,
}

impl Activity {
    pub(crate) fn new(accepted: Instant) -> Arc<Activity> {
        Arc::new(Activity {
            accepted,
            state: Mutex::new(ActivityState {
                in_progress: 0,
                served: false,
                idle_since: accepted,
            }),
            park: AtomicBool::new(false),
            read_since_idle: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ActivityState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A complete request head arrived; the connection is busy until the guard is dropped
    /// (with the response body, once it is sent or abandoned).
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        {
            let mut state = self.lock();
            state.in_progress += 1;
            state.served = true;
        }
        // A park asked for before it began is off (after an upgrade the tunnel reads on).
        self.park.store(false, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Whether a request is in progress.
    pub(crate) fn busy(&self) -> bool {
        self.lock().in_progress > 0
    }

    /// When an idle HTTP/1.1 connection is to be parked, if it is idle after a response,
    /// nothing has come from the client since, and parking was not asked for already.
    pub(crate) fn park_at(&self, park_after: Duration) -> Option<Instant> {
        if self.park.load(Ordering::Relaxed) {
            return None;
        }
        let state = self.lock();
        let idle =
            state.in_progress == 0 && state.served && !self.read_since_idle.load(Ordering::Relaxed);
        idle.then(|| state.idle_since + park_after)
    }

    /// Asks the connection to park at its next read that would wait.
    pub(crate) fn request_park(&self) {
        self.park.store(true, Ordering::Relaxed);
    }

    /// Whether a read that would wait is to park the connection: asked to, and still idle.
    /// (A request that began since then keeps it in hyper: the read is its body or the
    /// client closing.)
    pub(crate) fn park_requested(&self) -> bool {
        self.park.load(Ordering::Relaxed) && !self.busy()
    }

    /// Bytes came from the client: no parking until the next response has ended.
    pub(crate) fn bytes_arrived(&self) {
        self.read_since_idle.store(true, Ordering::Relaxed);
        self.park.store(false, Ordering::Relaxed);
    }

    /// Back from parking, waiting for the next request.
    pub(crate) fn unparked(&self) {
        self.park.store(false, Ordering::Relaxed);
    }

    /// When the connection is to be closed if nothing changes; `None` while busy.
    pub(crate) fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Expiry)> {
        let state = self.lock();
        if state.in_progress > 0 {
            None
        } else if state.served {
            Some((state.idle_since + limits.idle_timeout, Expiry::Idle))
        } else {
            Some((self.accepted + limits.header_timeout, Expiry::NoRequest))
        }
    }
}

/// A request in progress on a connection.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut state = self.0.lock();
            state.in_progress = state.in_progress.saturating_sub(1);
            if state.in_progress == 0 {
                state.idle_since = Instant::now();
                self.0.read_since_idle.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// A response body that keeps its connection marked busy until it is dropped.
pub(crate) struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    pub(crate) fn new(inner: B, busy: Busy) -> Self {
        Tracked { inner, _busy: busy }
    }
}

impl<B> Body for Tracked<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Accept failures and waits at the cap, logged once when they start and once when they end
/// rather than once per accept.
#[derive(Default)]
pub(crate) struct AcceptState {
    at_cap: Option<CapEpisode>,
    /// Since when accept fails, and how often it did.
    failing: Option<(Instant, u64)>,
}

/// A stretch of time in which new connections had to wait for a slot.
struct CapEpisode {
    since: Instant,
    waits: u64,
    last_wait: Instant,
}

/// Pause after a failed accept; doubles while failures go on.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// The cap counts as left only after this long without a wait for a slot, so that a count
/// hovering at the cap (or waves of timed-out clients) logs no line per connection.
const CAP_QUIET: Duration = Duration::from_secs(1);

impl AcceptState {
    /// No slot is free: the next connection waits in the listen backlog.
    pub(crate) fn cap_reached(&mut self, limits: &ConnectionLimits, scheme: &'static str) {
        if let Some(metrics) = limits.metrics() {
            metrics.client_connection_waits.inc();
        }
        let now = Instant::now();
        match &mut self.at_cap {
            Some(episode) => {
                episode.waits += 1;
                episode.last_wait = now;
            }
            None => {
                self.at_cap = Some(CapEpisode {
                    since: now,
                    waits: 1,
                    last_wait: now,
                });
                tracing::warn!(
                    scheme,
                    open = limits.open(),
                    max_connections = limits.max_connections,
                    "connection limit reached; new connections wait until open ones close"
                );
            }
        }
    }

    /// A wait for a slot ended.
    pub(crate) fn slot_after_wait(&mut self) {
        if let Some(episode) = &mut self.at_cap {
            episode.last_wait = Instant::now();
        }
    }

    /// A slot was free at once: the cap is left once a tenth of the slots are free and no
    /// connection waited for a while.
    pub(crate) fn slot_free(&mut self, limits: &ConnectionLimits, scheme: &'static str) {
        if let Some(episode) = &self.at_cap {
            if limits.available() + 1 >= (limits.max_connections / 10).max(1)
                && episode.last_wait.elapsed() >= CAP_QUIET
            {
                tracing::info!(
                    scheme,
                    open = limits.open(),
                    max_connections = limits.max_connections,
                    waits = episode.waits,
                    seconds = episode.since.elapsed().as_secs_f64(),
                    "below the connection limit again"
                );
                self.at_cap = None;
            }
        }
    }

    /// Accept failed (out of file descriptors and the like); returns how long to pause.
    pub(crate) fn accept_failed(
        &mut self,
        error: &io::Error,
        limits: &ConnectionLimits,
        scheme: &'static str,
    ) -> Duration {
        if let Some(metrics) = limits.metrics() {
            metrics.accept_errors.inc();
        }
        let open = limits.open();
        let failures = match &mut self.failing {
            Some((_, failures)) => {
                *failures += 1;
                *failures
            }
            None => {
                self.failing = Some((Instant::now(), 1));
                tracing::warn!(
                    %error,
                    scheme,
                    open,
                    "accept failed; retrying with a pause until it succeeds again"
                );
                1
            }
        };
        let doublings = u32::try_from(failures.saturating_sub(1).min(6)).unwrap_or(6);
        (ACCEPT_BACKOFF_MIN * 2u32.pow(doublings)).min(ACCEPT_BACKOFF_MAX)
    }

    pub(crate) fn accepted(&mut self, open: usize, scheme: &'static str) {
        if let Some((since, failures)) = self.failing.take() {
            tracing::info!(
                scheme,
                open,
                failures,
                seconds = since.elapsed().as_secs_f64(),
                "accepting connections again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_leaves_room_for_upstream_and_redis() {
        assert_eq!(default_max_connections(1024), 384);
        assert_eq!(default_max_connections(256), 96);
        assert_eq!(default_max_connections(1_048_576), 524_160);
        assert_eq!(default_max_connections(10), 16);
    }

    #[tokio::test]
    async fn deadline_follows_requests() {
        let limits = ConnectionLimits::new(Duration::from_secs(1), Duration::from_secs(5), 4);
        let start = Instant::now();
        let activity = Activity::new(start);
        assert_eq!(
            activity.deadline(&limits),
            Some((start + Duration::from_secs(1), Expiry::NoRequest))
        );
        let busy = activity.begin();
        assert_eq!(activity.deadline(&limits), None);
        drop(busy);
        let (at, why) = activity.deadline(&limits).unwrap();
        assert_eq!(why, Expiry::Idle);
        assert!(at >= start + Duration::from_secs(5));
    }
}
