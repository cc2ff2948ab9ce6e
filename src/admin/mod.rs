//! The admin listener (loopback by default): `/healthz` and `/readyz` for orchestrators, and,
//! behind the token, `/metrics`, the sessions API ([`sessions_api`]) and the migration
//! dashboard ([`dashboard`]). Without a configured token only the health endpoints answer.

mod auth;
mod chart;
mod dashboard;
mod sessions_api;

use crate::body::{self, Body};
use crate::metrics::{InstanceLabels, Metrics};
use crate::proxy::Proxy;
use crate::server::connections::ConnectionLimits;
use http::header::CONTENT_TYPE;
use http::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Open admin connections at most (health checks and operators need few).
pub const MAX_CONNECTIONS: usize = 64;

pub struct Admin {
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
    token: Option<String>,
    token_env: String,
    /// Signs the dashboard's login cookies and form tokens (a fresh key each start).
    login: auth::Login,
    /// The last count of sessions in the store, refreshed at most every half minute.
    session_count: dashboard::SessionCount,
}

impl Admin {
    pub fn new(
        proxy: Arc<Proxy>,
        metrics: Arc<Metrics>,
        token: Option<String>,
        token_env: String,
    ) -> Arc<Admin> {
        if token.is_none() {
            tracing::warn!("admin API disabled: set {token_env} to a random token to enable /metrics, /sessions and /dashboard");
        }
        Arc::new(Admin {
            proxy,
            metrics,
            token,
            token_env,
            login: auth::Login::default(),
            session_count: dashboard::SessionCount::default(),
        })
    }

    /// Serves until the task is dropped, in its own accept loop with its own connection
    /// slots, so that a saturated proxy listener leaves health checks answered.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, limits: ConnectionLimits) {
        let builder = Arc::new(crate::server::connection_builders());
        crate::server::accept_until(
            listener,
            "admin",
            std::future::pending(),
            Duration::ZERO,
            limits,
            move |stream, _client, accepted| {
                let (admin, builder) = (self.clone(), builder.clone());
                async move {
                    let handler = move |request| {
                        let admin = admin.clone();
                        async move { admin.handle(request).await }
                    };
                    crate::server::serve_connection(&builder, stream, "admin", accepted, handler)
                        .await;
                }
            },
        )
        .await;
    }

    pub async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        match (&method, path.as_str()) {
            (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => return self.ready().await,
            _ => {}
        }
        let Some(token) = &self.token else {
            return text(
                StatusCode::FORBIDDEN,
                format!("admin API disabled: set {}\n", self.token_env),
            );
        };
        if path == dashboard::PATH || path.starts_with(dashboard::PREFIX) {
            return self.dashboard(request, token).await;
        }
        if !self.login.bearer_matches(request.headers(), token) {
            let mut response = text(StatusCode::UNAUTHORIZED, "bearer token required\n");
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return response;
        }
        let query = query_of(&request);
        match (&method, path.as_str()) {
            (&Method::GET, "/metrics") => self.metrics_text(),
            (&Method::GET, "/sessions") => self.list_json(query.get("user")).await,
            (&Method::DELETE, "/sessions") => self.revoke_user_json(query.get("user")).await,
            (&Method::DELETE, p) if p.starts_with("/sessions/") => {
                self.revoke_json(&p["/sessions/".len()..]).await
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Ready when the session store answers (the proxy would serve sessions). While it is
    /// known down the answer is 503 at once, as for requests with a session.
    async fn ready(&self) -> Response<Body> {
        let live = self.proxy.live();
        if let Some(down_for) = live.sessions.store.down_for() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "session store down for {:.1} s: requests with a session get 503\n",
                    down_for.as_secs_f64()
                ),
            );
        }
        match tokio::time::timeout(
            live.config.store.command_timeout * 4,
            live.sessions.store.ping(),
        )
        .await
        {
            Ok(Ok(_)) => text(StatusCode::OK, "ready\n"),
            Ok(Err(e)) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("session store: {e}\n"),
            ),
            Err(_) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "session store: no answer\n",
            ),
        }
    }

    fn metrics_text(&self) -> Response<Body> {
        let live = self.proxy.live();
        self.metrics
            .store_up
            .set(i64::from(live.sessions.store.down_for().is_none()));
        self.metrics
            .near_cache_entries
            .set(live.sessions.store.near_cache_entries() as i64);
        self.metrics.upstream_healthy.clear();
        for route in &live.routes {
            for instance in route.pool().instances() {
                self.metrics
                    .upstream_healthy
                    .get_or_create(&InstanceLabels {
                        upstream: route.pool().name.clone(),
                        instance: instance.name.clone(),
                    })
                    .set(i64::from(route.pool().is_healthy(instance)));
            }
        }
        let mut response = text(StatusCode::OK, self.metrics.encode());
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        );
        response
    }
}

/// The query string's parameters (the last of a repeated name wins).
fn query_of<B>(request: &Request<B>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Compares without an early exit, so the time taken tells nothing of where they differ, nor
/// how long the secret is.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn text(status: StatusCode, message: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut response = Response::new(body::full(message));
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = text(status, value.to_string());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn secrets_compare_equal_only_when_they_are() {
        assert!(constant_time_eq(b"token-123", b"token-123"));
        assert!(!constant_time_eq(b"token-123", b"token-124"));
        assert!(!constant_time_eq(b"token-123", b"token-12"));
        assert!(!constant_time_eq(b"", b"token"));
    }
}
