//! Whether the session store is known to be down.
//!
//! While Redis answers nothing, each command would wait its full timeout and each request
//! would log a warning. Once it is known down (its connection lost, or a few commands in a row
//! failed for want of an answer), commands are not sent at all: the caller gets
//! [`StoreError::Down`] at once (a 503 for the request) until a probe of every connection
//! succeeds. Each change of state is logged once, with counts.

use super::results::StoreError;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Commands in a row without an answer that make the store known down. One is a blip (a
/// timeout under a load spike); three in a row, spread over the command timeout, are not.
pub const FAILURES_TO_DOWN: u32 = 3;

/// A failure is reported as news at most this often. When Redis dies under load, answers to
/// commands sent before reset the run of failures between those that fail, and each failure
/// after a success would otherwise be the first of a new run, a warning each.
const NEWS_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Health {
    down: AtomicBool,
    /// Commands in a row that got no answer, while up.
    failures: AtomicU32,
    /// Commands not sent since the store went down.
    skipped: AtomicU64,
    since: Mutex<Option<Instant>>,
    /// When a failure was last reported as news.
    last_news: Mutex<Option<Instant>>,
    /// Wakes the probe at once when a connection is re-established.
    pub(super) wake: tokio::sync::Notify,
    /// Tasks following the client's connection events. They hold the client, which holds
    /// their event channels: they are ended with the store, or would keep it alive forever.
    pub(super) watchers: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for Health {
    fn drop(&mut self) {
        let watchers = self.watchers.get_mut().unwrap_or_else(|p| p.into_inner());
        for watcher in watchers.drain(..) {
            watcher.abort();
        }
    }
}

impl Health {
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// How long the store has been known down.
    pub fn down_for(&self) -> Option<Duration> {
        if !self.is_down() {
            return None;
        }
        let since = *self.since.lock().unwrap_or_else(|p| p.into_inner());
        since.map(|since| since.elapsed())
    }

    /// The error for a command not sent because the store is down.
    pub fn skip(&self) -> StoreError {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        StoreError::Down(self.down_for().unwrap_or_default())
    }

    pub fn succeeded(&self) {
        // Read first: the hot path then writes nothing to this shared line.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a command that got no answer (`reason`). Returns the error for the caller (a
    /// failure after the first of a run is marked as a repeat: it was reported already) and
    /// whether the store just went down.
    pub fn failed(&self, reason: String) -> (StoreError, bool) {
        let in_a_row = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let down = in_a_row >= FAILURES_TO_DOWN
            && self.mark_down(&format!(
                "{in_a_row} commands in a row failed without an answer, the last: {reason}"
            ));
        let error = if in_a_row > 1 || self.is_down() || !self.claim_news() {
            StoreError::Repeated(reason)
        } else {
            StoreError::Unavailable(reason)
        };
        (error, down)
    }

    /// Whether a failure may be reported as news now (see [`NEWS_INTERVAL`]); if so, it is.
    fn claim_news(&self) -> bool {
        let mut last = self.last_news.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < NEWS_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Marks the store down; `true` when it was up (the caller starts probing).
    pub fn mark_down(&self, reason: &str) -> bool {
        if self.down.swap(true, Ordering::AcqRel) {
            return false;
        }
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.skipped.store(0, Ordering::Relaxed);
        tracing::warn!(
            reason,
            "session store down: answering 503 to requests with a session until it is back"
        );
        true
    }

    /// Marks the store up after a successful probe.
    pub fn mark_up(&self) {
        let since = self.since.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.failures.store(0, Ordering::Relaxed);
        if !self.down.swap(false, Ordering::AcqRel) {
            return;
        }
        // The next outage is news again, however soon.
        *self.last_news.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let down_for = since.map(|s| s.elapsed()).unwrap_or_default();
        let skipped = self.skipped.load(Ordering::Relaxed);
        // Nearly all are session lookups answered 503; on legacy routes the request went on
        // without Redis instead.
        tracing::info!(
            down_seconds = format!("{:.1}", down_for.as_secs_f64()),
            commands_not_sent = skipped,
            "session store back after {:.1} s; {skipped} requests were answered without asking \
             it meanwhile (503 with Retry-After; legacy routes without Redis)",
            down_for.as_secs_f64(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_after_failures_in_a_row_and_up_again() {
        let health = Health::default();
        let failure = || "timeout".to_string();
        let (first, down) = health.failed(failure());
        assert!(first.is_news() && !down);
        health.succeeded();
        let (after_a_success, down) = health.failed(failure());
        assert!(
            !after_a_success.is_news() && !down,
            "failures between answers (Redis dying under load) are reported once"
        );
        let (second, down) = health.failed(failure());
        assert!(!second.is_news() && !down, "a repeat is reported once");
        assert!(health.failed(failure()).1);
        assert!(health.is_down());
        assert!(!health.failed(failure()).1, "down once");
        assert!(matches!(health.skip(), StoreError::Down(_)));
        health.mark_up();
        assert!(!health.is_down());
        assert!(
            health.failed(failure()).0.is_news(),
            "a new run is news again"
        );
    }
}
