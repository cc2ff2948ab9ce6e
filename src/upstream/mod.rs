//! The app's instances: which are healthy, which one takes a request (round robin, or the
//! preferred instance while it is healthy), and sending a request with retry when it was
//! never sent (refused connection, stale keep-alive); one retry path for all requests.

mod connection;

pub use connection::ConnectError;

use crate::body::{self, Body, Upload};
use crate::config::{HealthCheckConfig, LbCookieConfig, UpstreamConfig};
use crate::session::cookie::cookie_values;
use connection::ConnectionPool;
use http::HeaderMap;
use http::{Request, Response};
use hyper::body::Incoming;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long an instance that refused a connection is skipped (when others are available).
const DOWN_COOLDOWN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nothing was sent: every instance refused or could not be reached.
    #[error("no instance of upstream {upstream} could be reached (last: {last})")]
    Unreachable { upstream: String, last: String },
    /// The request was (maybe partly) sent and then the connection failed: not safe to retry.
    #[error("upstream {instance} failed: {source}")]
    Failed {
        instance: String,
        source: hyper::Error,
    },
    /// No response head within the upstream's response timeout.
    #[error("upstream {instance} did not answer within {timeout:?}")]
    Timeout { instance: String, timeout: Duration },
}

/// One app instance.
pub struct Instance {
    pub name: String,
    pub authority: String,
    connections: ConnectionPool,
    /// Milliseconds since the pool's epoch until which this instance counts as down; 0 = up.
    down_until_ms: AtomicU64,
}

impl Instance {
    /// Whether the instance counts as up at `now_ms` (the pool's clock).
    fn is_up_at(&self, now_ms: u64) -> bool {
        self.down_until_ms.load(Ordering::Relaxed) <= now_ms
    }
}

/// The instances of one `[[upstreams]]` entry.
pub struct UpstreamPool {
    pub name: String,
    instances: Vec<Arc<Instance>>,
    next: AtomicUsize,
    epoch: Instant,
    connect_timeout: Duration,
    response_timeout: Duration,
    jvm_routes: BTreeMap<String, String>,
    lb_cookie: Option<LbCookieConfig>,
}

impl UpstreamPool {
    /// Builds the pool and, when configured, starts its active health check (which stops when
    /// the pool is dropped).
    pub fn new(config: &UpstreamConfig) -> Arc<UpstreamPool> {
        let pool = Arc::new(UpstreamPool {
            name: config.name.clone(),
            instances: config
                .instances
                .iter()
                .map(|i| {
                    Arc::new(Instance {
                        name: i.name.clone(),
                        authority: i.authority.clone(),
                        connections: ConnectionPool::new(
                            i.authority.clone(),
                            config.max_idle_per_instance,
                        ),
                        down_until_ms: AtomicU64::new(0),
                    })
                })
                .collect(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            jvm_routes: config.jvm_routes.clone(),
            lb_cookie: config.lb_cookie.clone(),
        });
        if let Some(check) = &config.health_check {
            tokio::spawn(health_check_loop(Arc::downgrade(&pool), check.clone()));
        }
        pool
    }

    pub fn instances(&self) -> &[Arc<Instance>] {
        &self.instances
    }

    pub fn instance(&self, name: &str) -> Option<&Arc<Instance>> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// The instance a request is bound to by what it carries, before unstick knew it: a route
    /// suffix in the session cookie (mapped, or an instance of that name), else the previous
    /// load balancer's sticky cookie.
    pub fn sticky_instance(
        &self,
        cookie_route: Option<&str>,
        headers: &HeaderMap,
    ) -> Option<&Arc<Instance>> {
        if let Some(route) = cookie_route {
            let name = self.jvm_routes.get(route).map_or(route, String::as_str);
            if let Some(instance) = self.instance(name) {
                return Some(instance);
            }
        }
        let lb = self.lb_cookie.as_ref()?;
        cookie_values(headers, &lb.name).find_map(|value| self.instance(lb.values.get(value)?))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn is_healthy(&self, instance: &Instance) -> bool {
        instance.is_up_at(self.now_ms())
    }

    fn mark_down(&self, instance: &Instance, for_how_long: Duration) {
        let until = self.now_ms() + for_how_long.as_millis() as u64;
        instance.down_until_ms.store(until, Ordering::Relaxed);
    }

    fn mark_up(&self, instance: &Instance) {
        instance.down_until_ms.store(0, Ordering::Relaxed);
    }

    /// The order in which instances are tried: the preferred one first when healthy, then the
    /// healthy ones round robin, then the ones marked down (their mark may be stale; trying
    /// them beats failing the request).
    fn candidates(&self, preferred: Option<&str>) -> Vec<Arc<Instance>> {
        let count = self.instances.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut order: Vec<Arc<Instance>> = Vec::with_capacity(count);
        let now = self.now_ms();
        if let Some(instance) = preferred.and_then(|name| self.instance(name)) {
            if instance.is_up_at(now) {
                order.push(instance.clone());
            }
        }
        let rotated = || (0..count).map(|i| &self.instances[(start + i) % count]);
        // Healthy ones first, then the rest: two passes rather than two more vectors.
        for healthy in [true, false] {
            for instance in rotated().filter(|i| i.is_up_at(now) == healthy) {
                if !order.iter().any(|o| Arc::ptr_eq(o, instance)) {
                    order.push(instance.clone());
                }
            }
        }
        order
    }

    /// Sends a client's request to the preferred instance when healthy, else any healthy one.
    /// A request that was never sent moves on to the next instance; one that was sent is not
    /// retried. `upgrade` requests get a connection of their own that is never pooled. The
    /// response timeout counts from the end of the request body (`upload`; `None`: a request
    /// without one), so that a slow upload is not cut by it; while the body is going, it
    /// bounds each wait for the app to take more of it.
    pub async fn send(
        &self,
        request: Request<Body>,
        preferred: Option<&str>,
        upgrade: bool,
        upload: Option<watch::Receiver<Upload>>,
    ) -> Result<(Response<Incoming>, Arc<Instance>), ForwardError> {
        let mut request = request;
        let mut upload = upload;
        // Built only when an instance fails: no allocation on the way of a request that works.
        let mut last_error = None;
        for instance in self.candidates(preferred) {
            match self
                .send_on(
                    &instance,
                    request,
                    upgrade,
                    self.response_timeout,
                    Resend::ClientRequest,
                    &mut upload,
                )
                .await
            {
                Ok(response) => return Ok((response, instance)),
                Err(Attempt::Unsent {
                    request: unsent,
                    error,
                }) => {
                    tracing::warn!(upstream = %self.name, instance = %instance.name, %error, "instance unreachable; trying another");
                    self.mark_down(&instance, DOWN_COOLDOWN);
                    request = *unsent;
                    last_error = Some(error);
                }
                Err(Attempt::Failed(error)) => return Err(error),
            }
        }
        Err(ForwardError::Unreachable {
            upstream: self.name.clone(),
            last: last_error.unwrap_or_else(|| "no instance tried".to_string()),
        })
    }

    /// Sends unstick's own request to one given instance (login capture, old-store lookups,
    /// health checks), bounded by `timeout`. No retry elsewhere: the answer must come from that
    /// instance.
    pub async fn send_to(
        &self,
        instance: &Instance,
        request: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut no_body = None;
        let attempt = self.send_on(
            instance,
            request,
            false,
            timeout,
            Resend::OwnRequest,
            &mut no_body,
        );
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(Attempt::Unsent { error, .. })) => Err(ForwardError::Unreachable {
                upstream: self.name.clone(),
                last: error,
            }),
            Ok(Err(Attempt::Failed(error))) => Err(error),
            Err(_) => Err(ForwardError::Timeout {
                instance: instance.name.clone(),
                timeout,
            }),
        }
    }

    /// One request to one instance, on a pooled connection when there is one. The app may
    /// have closed that idle connection just now (its keep-alive timeout): the request then
    /// goes once more on a fresh connection to the same instance, when it came back unsent or
    /// `resend` allows it.
    async fn send_on(
        &self,
        instance: &Instance,
        request: Request<Body>,
        upgrade: bool,
        response_timeout: Duration,
        resend: Resend,
        upload: &mut Option<watch::Receiver<Upload>>,
    ) -> Result<Response<Incoming>, Attempt> {
        let mut request = request;
        let mut pooled = if upgrade {
            None
        } else {
            instance.connections.take_idle()
        };
        loop {
            let reused = pooled.is_some();
            let long_idle = pooled
                .as_ref()
                .is_some_and(|p| p.pooled_at.elapsed() >= RESEND_AFTER_IDLE);
            let mut sender = match pooled.take() {
                Some(pooled) => pooled.sender,
                None => match instance.connections.connect(self.connect_timeout).await {
                    Ok(sender) => sender,
                    Err(e) => {
                        return Err(Attempt::Unsent {
                            request: Box::new(request),
                            error: e.to_string(),
                        })
                    }
                },
            };
            let replica = match resend {
                Resend::OwnRequest if reused => replica(&request),
                Resend::ClientRequest if long_idle => replica(&request),
                _ => None,
            };
            let answer = sender.try_send_request(request);
            let sent = answered_within(response_timeout, upload, answer).await;
            match sent {
                None => {
                    return Err(Attempt::Failed(ForwardError::Timeout {
                        instance: instance.name.clone(),
                        timeout: response_timeout,
                    }))
                }
                Some(Ok(response)) => {
                    if !upgrade {
                        instance.connections.put_back(sender);
                    }
                    return Ok(response);
                }
                Some(Err(mut error)) => match (error.take_message(), replica) {
                    (Some(unsent), _) if reused => request = unsent,
                    (None, Some(replica)) if closed_unanswered(error.error()) => request = replica,
                    (Some(unsent), _) => {
                        return Err(Attempt::Unsent {
                            request: Box::new(unsent),
                            error: error.into_error().to_string(),
                        })
                    }
                    (None, _) => {
                        return Err(Attempt::Failed(ForwardError::Failed {
                            instance: instance.name.clone(),
                            source: error.into_error(),
                        }))
                    }
                },
            }
        }
    }
}

/// `answer`, or `None` when the app takes longer than `timeout`: to answer once the request
/// body is over (`upload`; `None`: at once), or to take more of the body while it goes. A
/// pause of the client is not the app's: the client's own pause limit ends it.
async fn answered_within<F: std::future::Future>(
    timeout: Duration,
    upload: &mut Option<watch::Receiver<Upload>>,
    answer: F,
) -> Option<F::Output> {
    let mut answer = std::pin::pin!(answer);
    if let Some(progress) = upload {
        loop {
            tokio::select! {
                output = &mut answer => return Some(output),
                changed = progress.changed() => if changed.is_err() { break },
                () = tokio::time::sleep(timeout) => {
                    if !progress.borrow().waiting_for_client {
                        return None;
                    }
                }
            }
        }
        *upload = None;
    }
    tokio::time::timeout(timeout, answer).await.ok()
}

/// When a request that went out on a reused connection may go again on a fresh one. Either
/// way, one that was never sent goes again, and only safe bodiless requests are repeated
/// after they went out (RFC 9110 section 9.2.2, RFC 9112 section 9.3.1).
#[derive(Clone, Copy)]
enum Resend {
    /// A client's request: repeated when its connection had been idle in the pool for
    /// [`RESEND_AFTER_IDLE`] or more and closed before any answer. That is the app's
    /// keep-alive timeout meeting the request; a connection in steady use does not meet it,
    /// and copying every request's headers to cover that case would cost every request.
    ClientRequest,
    /// unstick's own bodiless GETs (login capture, old-store lookups, health checks):
    /// repeated whenever the connection closed before any answer.
    OwnRequest,
}

/// How long a pooled connection must have been idle before a client's safe request sent on it
/// is copied, to go again should the app have closed the connection (see [`Resend`]). App
/// servers' keep-alive timeouts are a second or more (Node 5 s, gunicorn 2 s, Tomcat 20 s).
const RESEND_AFTER_IDLE: Duration = Duration::from_millis(100);

/// A copy of a bodiless request with a safe method (RFC 9110 section 9.2.1), to send again.
fn replica(request: &Request<Body>) -> Option<Request<Body>> {
    use hyper::body::Body as _;
    if !request.method().is_safe() || !request.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(body::empty());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// The connection ended before an answer began: closed, or reset by the app.
fn closed_unanswered(error: &hyper::Error) -> bool {
    use std::io::ErrorKind;
    let io_kind = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    error.is_incomplete_message()
        || matches!(
            io_kind,
            Some(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted)
        )
}

/// How one instance failed a request.
enum Attempt {
    /// Never sent (no connection, or a fresh one closed first): safe to send elsewhere.
    Unsent {
        request: Box<Request<Body>>,
        error: String,
    },
    /// Sent (maybe partly), or no answer in time: not safe to send again.
    Failed(ForwardError),
}

/// Probes each instance every `interval`; a non-2xx/3xx answer or no answer marks it down
/// until the next probe succeeds. Stops when the pool is gone (replaced by a reload).
async fn health_check_loop(pool: Weak<UpstreamPool>, check: HealthCheckConfig) {
    let mut ticker = tokio::time::interval(check.interval);
    loop {
        ticker.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        for instance in pool.instances.clone() {
            let request = Request::get(check.path.as_str())
                .header(http::header::HOST, instance.authority.as_str())
                .header("user-agent", "unstick-health-check")
                .body(body::empty());
            let Ok(request) = request else { continue };
            let healthy = match pool.send_to(&instance, request, check.timeout).await {
                Ok(response) => {
                    response.status().is_success() || response.status().is_redirection()
                }
                Err(_) => false,
            };
            let was_healthy = pool.is_healthy(&instance);
            if healthy {
                pool.mark_up(&instance);
            } else {
                // Down until a later probe says otherwise.
                pool.mark_down(&instance, Duration::from_secs(365 * 24 * 3600));
            }
            if healthy != was_healthy {
                tracing::warn!(upstream = %pool.name, instance = %instance.name, healthy, "instance health changed");
            }
        }
    }
}
