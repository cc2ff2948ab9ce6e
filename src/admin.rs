//! The admin listener (loopback by default): `/healthz` and `/readyz` for orchestrators, and,
//! behind a bearer token, `/metrics` and the sessions API. Without a configured token only the
//! health endpoints answer: the admin API is never open by default.
//!
//! - `GET /sessions?user=U`: the user's sessions (hashed ids, device, IP, times).
//! - `DELETE /sessions/<id-hash>`: end one session.
//! - `DELETE /sessions?user=U`: end every session of the user ("log out everywhere").

use crate::body::{self, Body};
use crate::metrics::{InstanceLabels, Metrics};
use crate::proxy::Proxy;
use crate::server::connections::ConnectionLimits;
use crate::session::users;
use crate::session::SessionHash;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::HeaderValue;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
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
}

impl Admin {
    pub fn new(
        proxy: Arc<Proxy>,
        metrics: Arc<Metrics>,
        token: Option<String>,
        token_env: String,
    ) -> Arc<Admin> {
        if token.is_none() {
            tracing::warn!("admin API disabled: set {token_env} to a random token to enable /metrics and /sessions");
        }
        Arc::new(Admin {
            proxy,
            metrics,
            token,
            token_env,
        })
    }

    /// Serves until the task is dropped, in its own accept loop with its own connection
    /// slots, so that a saturated proxy listener leaves health checks answered.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, limits: ConnectionLimits) {
        let builder = Arc::new(crate::server::connection_builder());
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
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => self.ready().await,
            _ => {
                if let Some(denied) = self.deny(&request) {
                    return denied;
                }
                let query: HashMap<String, String> = request
                    .uri()
                    .query()
                    .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                    .unwrap_or_default();
                match (&method, path.as_str()) {
                    (&Method::GET, "/metrics") => self.metrics_text(),
                    (&Method::GET, "/sessions") => self.list(query.get("user")).await,
                    (&Method::DELETE, "/sessions") => self.revoke_user(query.get("user")).await,
                    (&Method::DELETE, p) if p.starts_with("/sessions/") => {
                        self.revoke(&p["/sessions/".len()..]).await
                    }
                    _ => text(StatusCode::NOT_FOUND, "not found\n"),
                }
            }
        }
    }

    /// The refusal for a request without the right bearer token; `None` lets it through.
    fn deny(&self, request: &Request<Incoming>) -> Option<Response<Body>> {
        let Some(token) = &self.token else {
            return Some(text(
                StatusCode::FORBIDDEN,
                format!("admin API disabled: set {}\n", self.token_env),
            ));
        };
        let given = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), token.as_bytes()) {
            None
        } else {
            let mut response = text(StatusCode::UNAUTHORIZED, "bearer token required\n");
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            Some(response)
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

    async fn list(&self, user: Option<&String>) -> Response<Body> {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return text(StatusCode::BAD_REQUEST, "give ?user=<user id>\n");
        };
        let live = self.proxy.live();
        match users::list(&live.sessions.store, user).await {
            Ok(sessions) => json(
                StatusCode::OK,
                &serde_json::json!({ "user": user, "sessions": sessions }),
            ),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        }
    }

    async fn revoke(&self, id_hash: &str) -> Response<Body> {
        let Some(hash) = SessionHash::parse(id_hash) else {
            return text(
                StatusCode::BAD_REQUEST,
                "expected a session id hash as listed (22 characters, or the 64 hex digits earlier versions listed)\n",
            );
        };
        let live = self.proxy.live();
        match users::revoke(
            &live.sessions.store,
            &hash,
            live.config.session.absolute_lifetime,
        )
        .await
        {
            Ok(true) => {
                self.metrics.sessions_revoked.inc();
                json(StatusCode::OK, &serde_json::json!({ "revoked": 1 }))
            }
            Ok(false) => json(StatusCode::NOT_FOUND, &serde_json::json!({ "revoked": 0 })),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        }
    }

    async fn revoke_user(&self, user: Option<&String>) -> Response<Body> {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return text(StatusCode::BAD_REQUEST, "give ?user=<user id>\n");
        };
        let live = self.proxy.live();
        match users::revoke_user(
            &live.sessions.store,
            user,
            live.config.session.absolute_lifetime,
        )
        .await
        {
            Ok(count) => {
                self.metrics.sessions_revoked.inc_by(count as u64);
                json(StatusCode::OK, &serde_json::json!({ "revoked": count }))
            }
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
