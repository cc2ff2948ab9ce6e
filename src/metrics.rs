//! Prometheus metrics of one process. They outlive config reloads (the registry is created once)
//! and are exported as text by the admin listener's `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

// The labels counted on every request are shared or static strings, so that counting a
// request allocates nothing (an empty `String` does not allocate either).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Arc<String>,
    pub mode: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Arc<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// hit, miss, ended, fallback_hit, fallback_miss, copied_forward, old_store_error, store_error
    pub outcome: &'static str,
    /// The old store involved, or empty.
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CookieChangeLabels {
    /// login, rotated, rebound, clear_kept, logout, logout_unheld
    pub change: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    pub command: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub upstream: String,
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    pub hash: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// header (no request head in time) or idle (no request since the last one)
    pub timeout: &'static str,
}

fn latency_histogram() -> Histogram {
    // 0.1 ms .. ~6.5 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub session_outcomes: Family<OutcomeLabels, Counter>,
    /// The counters of [`STORELESS_OUTCOMES`], looked up once (see [`RouteMetrics`]).
    storeless_outcomes: [OnceLock<Counter>; STORELESS_OUTCOMES.len()],
    pub redis_seconds: Family<CommandLabels, Histogram, fn() -> Histogram>,
    pub redis_errors: Family<CommandLabels, Counter>,
    pub redis_skipped: Family<CommandLabels, Counter>,
    /// 0 while the session store is known down (set when scraped).
    pub store_up: Gauge,
    pub upstream_healthy: Family<InstanceLabels, Gauge>,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_info: Family<ConfigLabels, Gauge>,
    pub config_loaded_seconds: Gauge<f64, AtomicU64>,
    pub sessions_revoked: Counter,
    pub sessions_evicted: Counter,
    pub cookie_changes: Family<CookieChangeLabels, Counter>,
    pub client_connections: Gauge,
    pub client_connections_parked: Gauge,
    pub client_connection_timeouts: Family<TimeoutLabels, Counter>,
    pub client_connection_waits: Counter,
    pub accept_errors: Counter,
    /// New sessions that `redis.wait_replicas` replicas did not acknowledge in time.
    pub replica_wait_timeouts: Counter,
    pub near_cache_hits: Counter,
    pub near_cache_misses: Counter,
    pub near_cache_invalidations: Counter,
    pub near_cache_flushes: Counter,
    /// Sessions held by the near cache (set when scraped).
    pub near_cache_entries: Gauge,
    /// The dashboard's per-route history (not exported to Prometheus).
    pub activity: crate::activity::Activity,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("unstick");
        let metrics = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            session_outcomes: Family::default(),
            storeless_outcomes: Default::default(),
            redis_seconds: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            redis_errors: Family::default(),
            redis_skipped: Family::default(),
            store_up: Gauge::default(),
            upstream_healthy: Family::default(),
            config_reloads: Family::default(),
            config_info: Family::default(),
            config_loaded_seconds: Gauge::default(),
            sessions_revoked: Counter::default(),
            sessions_evicted: Counter::default(),
            cookie_changes: Family::default(),
            client_connections: Gauge::default(),
            client_connections_parked: Gauge::default(),
            client_connection_timeouts: Family::default(),
            client_connection_waits: Counter::default(),
            accept_errors: Counter::default(),
            replica_wait_timeouts: Counter::default(),
            near_cache_hits: Counter::default(),
            near_cache_misses: Counter::default(),
            near_cache_invalidations: Counter::default(),
            near_cache_flushes: Counter::default(),
            near_cache_entries: Gauge::default(),
            activity: Default::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Requests by route, migration mode and status",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Request latency through the proxy",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "session_outcomes",
            "How request sessions were resolved (hit, miss, fallback_hit, copied_forward, ...)",
            metrics.session_outcomes.clone(),
        );
        registry.register(
            "redis_command_duration_seconds",
            "Session store command latency",
            metrics.redis_seconds.clone(),
        );
        registry.register(
            "redis_errors",
            "Session store commands that failed or timed out",
            metrics.redis_errors.clone(),
        );
        registry.register(
            "redis_commands_skipped",
            "Session store commands not sent because the store was known down (each answered 503)",
            metrics.redis_skipped.clone(),
        );
        registry.register(
            "session_store_up",
            "0 while the session store is known down and requests with a session get 503 at once",
            metrics.store_up.clone(),
        );
        registry.register(
            "upstream_healthy",
            "1 when the instance is taking requests",
            metrics.upstream_healthy.clone(),
        );
        registry.register(
            "config_reloads",
            "Config reloads by result (ok, failed)",
            metrics.config_reloads.clone(),
        );
        registry.register(
            "config_info",
            "1 for the hash of the active config",
            metrics.config_info.clone(),
        );
        registry.register(
            "config_loaded_timestamp_seconds",
            "Unix time the active config was loaded",
            metrics.config_loaded_seconds.clone(),
        );
        registry.register(
            "sessions_revoked",
            "Sessions ended by an operator or by the app",
            metrics.sessions_revoked.clone(),
        );
        registry.register(
            "sessions_evicted",
            "Sessions ended by the per-user cap",
            metrics.sessions_evicted.clone(),
        );
        registry.register(
            "session_cookie_changes",
            "What the app setting or clearing the session cookie was read as (login, rotated, \
             rebound and clear_kept keep the user's session, logout ends it, logout_unheld \
             marks ended an id unstick held no session for)",
            metrics.cookie_changes.clone(),
        );
        registry.register(
            "client_connections",
            "Open client connections (HTTP and HTTPS listeners)",
            metrics.client_connections.clone(),
        );
        registry.register(
            "client_connections_parked",
            "Idle HTTP/1.1 keep-alive client connections held as a bare socket, without \
             their HTTP buffers, until the client's next request",
            metrics.client_connections_parked.clone(),
        );
        registry.register(
            "client_connection_timeouts",
            "Client connections closed for want of a request (header: none since accept; \
             idle: none since the last one)",
            metrics.client_connection_timeouts.clone(),
        );
        registry.register(
            "client_connection_waits",
            "Times the accept loop waited for a slot at listener.max_connections",
            metrics.client_connection_waits.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts (out of file descriptors and the like)",
            metrics.accept_errors.clone(),
        );
        registry.register(
            "session_replica_wait_timeouts",
            "New sessions served although redis.wait_replicas replicas did not acknowledge them \
             within redis.wait_timeout (lost if the master fails before they replicate)",
            metrics.replica_wait_timeouts.clone(),
        );
        registry.register(
            "near_cache_hits",
            "Session lookups answered from process memory without asking Redis",
            metrics.near_cache_hits.clone(),
        );
        registry.register(
            "near_cache_misses",
            "Session lookups the near cache could not answer (asked Redis)",
            metrics.near_cache_misses.clone(),
        );
        registry.register(
            "near_cache_invalidations",
            "Near cache entries dropped because their session changed (in Redis or here)",
            metrics.near_cache_invalidations.clone(),
        );
        registry.register(
            "near_cache_flushes",
            "Times the whole near cache was dropped (invalidation connection lost or regained, \
             Redis flushed, invalidations missed)",
            metrics.near_cache_flushes.clone(),
        );
        registry.register(
            "near_cache_entries",
            "Sessions held in the near cache",
            metrics.near_cache_entries.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    pub fn outcome(&self, outcome: &'static str, store: &str) {
        if store.is_empty() {
            if let Some((_, counter)) = STORELESS_OUTCOMES
                .iter()
                .zip(self.storeless_outcomes.iter())
                .find(|(name, _)| **name == outcome)
            {
                counter
                    .get_or_init(|| self.outcome_counter(outcome, store))
                    .inc();
                return;
            }
        }
        self.outcome_counter(outcome, store).inc();
    }

    fn outcome_counter(&self, outcome: &'static str, store: &str) -> Counter {
        self.session_outcomes
            .get_or_create(&OutcomeLabels {
                outcome,
                store: store.to_string(),
            })
            .clone()
    }

    pub fn cookie_change(&self, change: &'static str) {
        self.cookie_changes
            .get_or_create(&CookieChangeLabels { change })
            .inc();
    }

    pub fn connection_timeout(&self, timeout: &'static str) {
        self.client_connection_timeouts
            .get_or_create(&TimeoutLabels { timeout })
            .inc();
    }

    pub fn redis_command(&self, command: &'static str, took: Duration, ok: bool) {
        let labels = CommandLabels { command };
        self.redis_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if !ok {
            self.redis_errors.get_or_create(&labels).inc();
        }
    }

    pub fn redis_command_skipped(&self, command: &'static str) {
        self.redis_skipped
            .get_or_create(&CommandLabels { command })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Session outcomes that name no old store, counted on nearly every request.
const STORELESS_OUTCOMES: [&str; 6] = [
    "hit",
    "miss",
    "no_cookie",
    "ended",
    "store_skipped",
    "store_error",
];

/// A route's request counters (by status) and latency histogram, looked up once instead of
/// on every request: a label lookup hashes the route's name under a lock, about 1,000
/// instructions each.
pub struct RouteMetrics {
    requests: Family<RequestLabels, Counter>,
    route: Arc<String>,
    mode: &'static str,
    /// Statuses 100 to 599, each looked up at its first request.
    by_status: Box<[OnceLock<Counter>]>,
    seconds: Histogram,
}

impl RouteMetrics {
    pub fn new(metrics: &Metrics, route: Arc<String>, mode: &'static str) -> Self {
        let seconds = metrics
            .request_seconds
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .clone();
        RouteMetrics {
            requests: metrics.requests.clone(),
            route,
            mode,
            by_status: (100..600).map(|_| OnceLock::new()).collect(),
            seconds,
        }
    }

    /// One request answered with `status` after `seconds`.
    pub fn request(&self, status: u16, seconds: f64) {
        let counter = || {
            self.requests
                .get_or_create(&RequestLabels {
                    route: self.route.clone(),
                    mode: self.mode,
                    status,
                })
                .clone()
        };
        match status
            .checked_sub(100)
            .and_then(|i| self.by_status.get(usize::from(i)))
        {
            Some(slot) => slot.get_or_init(counter).inc(),
            None => counter().inc(),
        };
        self.seconds.observe(seconds);
    }
}

/// Counts one in a gauge for as long as it lives (an open connection, a parked one).
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(prefix)?.trim().parse().ok())
    }

    #[test]
    fn looked_up_once_requests_and_outcomes_are_counted_under_their_labels() {
        let metrics = Metrics::new();
        let route = RouteMetrics::new(&metrics, Arc::new("shop/".to_string()), "redis");
        for status in [200, 200, 503, 999] {
            route.request(status, 0.01);
        }
        metrics.outcome("hit", "");
        metrics.outcome("hit", "");
        metrics.outcome("copied_forward", "php");
        let text = metrics.encode();
        let requests = |status: &str| {
            sample(
                &text,
                &format!(
                    "unstick_requests_total{{route=\"shop/\",mode=\"redis\",status=\"{status}\"}}"
                ),
            )
        };
        assert_eq!(requests("200"), Some(2.0), "{text}");
        assert_eq!(requests("503"), Some(1.0), "{text}");
        assert_eq!(requests("999"), Some(1.0), "{text}");
        assert_eq!(
            sample(
                &text,
                "unstick_request_duration_seconds_count{route=\"shop/\"}"
            ),
            Some(4.0),
            "{text}"
        );
        let outcome = |labels: &str| {
            sample(
                &text,
                &format!("unstick_session_outcomes_total{{{labels}}}"),
            )
        };
        assert_eq!(outcome("outcome=\"hit\",store=\"\""), Some(2.0), "{text}");
        assert_eq!(
            outcome("outcome=\"copied_forward\",store=\"php\""),
            Some(1.0),
            "{text}"
        );
    }
}
