//! The live state built from one [`Config`]: routes bound to upstream pools and old stores,
//! the session store, the owned header set. A request loads one `Arc<LiveState>` and uses it
//! to the end; a reload swaps in a new one whole.

use crate::config::{CaptureSource, Config, OldStoreConfig, RouteConfig, UpstreamConfig};
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::headers::OwnedHeaders;
use crate::session::old_store::OldStoreError;
use crate::session::old_stores::{open_old_store, OldStoreHandle};
use crate::session::{SessionRoute, SessionStore, Sessions};
use crate::upstream::UpstreamPool;
use http::HeaderName;
use std::collections::HashMap;
use std::sync::Arc;

pub struct Route {
    /// `host` + `path_prefix`, for metrics and logs.
    pub label: Arc<String>,
    /// Its requests by status and their latency.
    pub metrics: RouteMetrics,
    /// The route as the session layer sees it: config, instances, old stores.
    pub sessions: Arc<SessionRoute>,
}

impl Route {
    pub fn config(&self) -> &RouteConfig {
        &self.sessions.config
    }

    pub fn pool(&self) -> &Arc<UpstreamPool> {
        &self.sessions.pool
    }
}

pub struct LiveState {
    pub config: Arc<Config>,
    /// The session store and the settings the session layer works with.
    pub sessions: Sessions,
    pub routes: Vec<Arc<Route>>,
    /// Headers no client may send: identity, internal, untrusted forwarding.
    pub owned_headers: OwnedHeaders,
    /// Response headers meant for unstick only; removed before the client sees the response.
    pub internal_response_headers: Vec<HeaderName>,
    pub metrics: Arc<Metrics>,
}

impl LiveState {
    /// Builds pools, old stores and routes around an existing store and metrics registry,
    /// keeping from `previous` (a reload) the pools and old stores whose config is unchanged.
    /// Must run inside the Tokio runtime (pools start their health checks).
    pub async fn build(
        config: Config,
        store: SessionStore,
        metrics: Arc<Metrics>,
        previous: Option<&LiveState>,
    ) -> Result<LiveState, OldStoreError> {
        let reuse = Reuse { previous };
        let pools: HashMap<&str, Arc<UpstreamPool>> = config
            .upstreams
            .iter()
            .map(|u| {
                let pool = reuse.pool(u).unwrap_or_else(|| UpstreamPool::new(u));
                (u.name.as_str(), pool)
            })
            .collect();
        let mut old_stores: HashMap<&str, OldStoreHandle> = HashMap::new();
        for old in &config.old_stores {
            let used = config
                .routes
                .iter()
                .any(|r| r.old_stores.contains(&old.name));
            if used {
                let cookie_name = &config.session.cookie_name;
                let handle = match reuse.old_store(old, cookie_name) {
                    Some(handle) => handle,
                    None => open_old_store(old, cookie_name).await?,
                };
                old_stores.insert(&old.name, handle);
            }
        }
        let mut routes: Vec<Arc<Route>> = config
            .routes
            .iter()
            .filter_map(|r| {
                let pool = pools.get(r.upstream.as_str())?.clone();
                let label = Arc::new(r.label());
                Some(Arc::new(Route {
                    metrics: RouteMetrics::new(&metrics, label.clone(), r.mode.as_str()),
                    sessions: Arc::new(SessionRoute {
                        activity: metrics.activity.route(&label),
                        config: r.clone(),
                        pool,
                        old_stores: r
                            .old_stores
                            .iter()
                            .filter_map(|name| old_stores.get(name.as_str()).cloned())
                            .collect(),
                    }),
                    label,
                }))
            })
            .collect();
        // Most specific first: a route for a host before any-host routes, longer prefixes first.
        routes.sort_by_key(|r| {
            (
                r.config().host.is_none(),
                std::cmp::Reverse(r.config().path_prefix.len()),
            )
        });
        let identity = &config.identity;
        let signature_header = identity.signature.as_ref().map(|s| &s.header);
        let mut internal_response_headers = vec![
            identity.logout_all_header.clone(),
            identity.logout_header.clone(),
        ];
        if let CaptureSource::ResponseHeader { header } = &identity.capture {
            internal_response_headers.push(header.clone());
        }
        // Without a trusted proxy in front, a client's own forwarding claims are dropped
        // (X-Forwarded-For, -Proto and -Host are replaced by ours), and so are the rewrite
        // hints some frameworks route by (Symfony and IIS read X-Original-URL as the path).
        let untrusted_forwarding = [
            "forwarded",
            "x-real-ip",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-ssl",
            "x-forwarded-scheme",
            "x-forwarded-server",
            "front-end-https",
            "x-original-url",
            "x-rewrite-url",
        ]
        .map(HeaderName::from_static);
        let untrusted_forwarding = untrusted_forwarding
            .iter()
            .filter(|_| !config.listener.trust_forwarded_headers);
        let owned_headers = OwnedHeaders::new(
            identity
                .headers
                .owned()
                .chain(signature_header)
                .chain(&internal_response_headers)
                .chain(untrusted_forwarding),
        );
        let sessions = Sessions {
            store,
            settings: Arc::new(config.session.clone()),
            identity: Arc::new(config.identity.clone()),
            metrics: metrics.clone(),
        };
        Ok(LiveState {
            config: Arc::new(config),
            sessions,
            routes,
            owned_headers,
            internal_response_headers,
            metrics,
        })
    }

    /// The route for a request's host (lower case, without port) and path.
    pub fn route_for(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.routes.iter().find(|route| {
            let config = route.config();
            let host_matches = match (&config.host, host) {
                (None, _) => true,
                (Some(want), Some(have)) => want == have,
                (Some(_), None) => false,
            };
            host_matches && path_has_prefix(path, &config.path_prefix)
        })
    }
}

/// What a reload keeps of the running live state: a pool whose upstream config is unchanged
/// (its health marks and idle connections with it), and an old store whose config and
/// session cookie name are unchanged (its connections with it).
struct Reuse<'a> {
    previous: Option<&'a LiveState>,
}

impl Reuse<'_> {
    fn pool(&self, config: &UpstreamConfig) -> Option<Arc<UpstreamPool>> {
        let previous = self.previous?;
        let unchanged = previous.config.upstreams.iter().any(|u| u == config);
        let route = previous
            .routes
            .iter()
            .find(|r| r.pool().name == config.name)?;
        unchanged.then(|| route.pool().clone())
    }

    fn old_store(&self, config: &OldStoreConfig, cookie_name: &str) -> Option<OldStoreHandle> {
        let previous = self.previous?;
        let unchanged = previous.config.session.cookie_name == cookie_name
            && previous.config.old_stores.iter().any(|o| o == config);
        let mut handles = previous.routes.iter().flat_map(|r| &r.sessions.old_stores);
        let handle = handles.find(|h| h.name() == config.name)?;
        unchanged.then(|| handle.clone())
    }
}

/// `/api` matches `/api` and `/api/x` but not `/apiary`.
fn path_has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::path_has_prefix;

    #[test]
    fn prefixes_match_at_segment_boundaries() {
        assert!(path_has_prefix("/anything", "/"));
        assert!(path_has_prefix("/api", "/api"));
        assert!(path_has_prefix("/api/users", "/api"));
        assert!(!path_has_prefix("/apiary", "/api"));
        assert!(path_has_prefix("/api/x", "/api/"));
        assert!(!path_has_prefix("/other", "/api"));
    }
}
