//! The request pipeline. [`Proxy::handle`] takes one config snapshot and the route; `forward`
//! below is the rest of the flow of one request, top to bottom, numbered as in the design.
//! Each step lives in its own module (headers, session, upstream, capture).

pub mod headers;
pub mod response;
mod upgrade;

use crate::body::Body;
use crate::config::{DuplicateCookies, Mode};
use crate::metrics::{RequestLabels, RouteLabels};
use crate::runtime::{Route, Runtime};
use crate::session::capture::{self, RequestFacts};
use crate::session::cookie::{
    has_conflicting_cookies, keep_only_session_cookie, remove_session_cookie,
    session_ids_from_request,
};
use crate::session::resolve::Outcome;
use crate::session::resolve_session;
use crate::upstream::ForwardError;
use arc_swap::ArcSwap;
use headers::ClientAddress;
use http::header::{HOST, UPGRADE, USER_AGENT};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

/// The proxy: the live runtime (swapped whole on reload) and the pipeline over it.
pub struct Proxy {
    live: ArcSwap<Runtime>,
}

impl Proxy {
    pub fn new(runtime: Runtime) -> Arc<Proxy> {
        Arc::new(Proxy {
            live: ArcSwap::from_pointee(runtime),
        })
    }

    /// The runtime requests starting now will use.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.live.load_full()
    }

    /// Swaps in a new runtime; requests in flight finish on the one they started with.
    pub fn replace(&self, runtime: Runtime) {
        self.live.store(Arc::new(runtime));
    }

    /// One request, from the client to the app and back. `scheme` is the listener's.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientAddress,
        scheme: &'static str,
    ) -> Response<Body> {
        let started = Instant::now();
        // 1. One snapshot of the config for the whole request, and the route.
        let runtime = self.runtime();
        let host = match request_host(&request) {
            Ok(host) => host,
            Err(message) => return response::bad_request(message),
        };
        let Some(route) = runtime.route_for(host.as_deref(), request.uri().path()) else {
            return response::no_route();
        };
        let request_id = request_id(request.headers());
        let span = tracing::info_span!("request", id = %request_id, route = %route.label);
        let mut response = forward(&runtime, route, request, host, client, scheme, &request_id)
            .instrument(span)
            .await;
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
        let metrics = &runtime.metrics;
        metrics
            .requests
            .get_or_create(&RequestLabels {
                route: route.label.clone(),
                mode: route.config.mode.as_str(),
                status: response.status().as_u16(),
            })
            .inc();
        metrics
            .request_seconds
            .get_or_create(&RouteLabels {
                route: route.label.clone(),
            })
            .observe(started.elapsed().as_secs_f64());
        response
    }
}

/// The pipeline, steps 2 to 7 of the design, in order.
async fn forward(
    runtime: &Arc<Runtime>,
    route: &Arc<Route>,
    mut request: Request<Incoming>,
    host: Option<String>,
    client: &ClientAddress,
    scheme: &'static str,
    request_id: &str,
) -> Response<Body> {
    let config = &runtime.config;
    let mode = route.config.mode;

    // 2. Header hygiene: hop-by-hop headers out, and every client copy of our identity and
    //    internal headers (and of forwarding headers we do not trust).
    let upgrade = headers::requested_upgrade(request.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, upgrade.as_ref());
    headers::strip_reserved_headers(&mut parts.headers, &runtime.owned_headers);
    let facts = RequestFacts {
        path: parts.uri.path().to_string(),
        host,
        user_agent: parts
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(String::from),
        client_ip: client.ip,
    };

    // 3. + 4. The app's session cookie -> session id(s) -> the session, by the route's mode.
    let cookie_name = &config.session.cookie_name;
    let ambiguous = has_conflicting_cookies(&parts.headers, cookie_name);
    if ambiguous && config.session.duplicate_cookies == DuplicateCookies::Refuse {
        return response::bad_request(
            "Several session cookies with different values: clear this site's cookies and log in again.\n",
        );
    }
    let ids = session_ids_from_request(&parts.headers, &config.session);
    let resolution = match resolve_session(runtime, route, &ids, &parts.headers, &facts).await {
        Ok(resolution) => resolution,
        Err(e) => {
            // Fail closed: never serve a request that carries a session as anonymous.
            runtime.metrics.outcome("store_error", "");
            // An outage is logged by the store once; each request's failure only when news.
            if e.is_news() {
                tracing::warn!(error = %e, "session lookup failed; answering 503");
            } else {
                tracing::debug!(error = %e, "session lookup failed; answering 503");
            }
            return response::retry_later(config.store.retry_after);
        }
    };
    let (outcome, store) = resolution.outcome.labels();
    runtime.metrics.outcome(outcome, store);
    if let Outcome::Ended(ended) = &resolution.outcome {
        // A logged-out id never reaches the app: an instance may still hold its login.
        remove_session_cookie(&mut parts.headers, cookie_name, ended.cookie_value());
    }
    let session = resolution.session;
    if let (true, Some(session)) = (ambiguous, &session) {
        // The app must read the session unstick resolved, not another of the same name.
        keep_only_session_cookie(&mut parts.headers, cookie_name, session.id.cookie_value());
    }

    // 6. Identity and forwarding headers; an HTTP/1.1 request in origin form for the app.
    if let Some(session) = &session {
        headers::inject_identity(
            &mut parts.headers,
            &config.identity.headers,
            &session.record.identity,
        );
        if let Some(signature) = &config.identity.signature {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            headers::sign_identity(
                &mut parts.headers,
                &config.identity.headers,
                &session.record.identity,
                signature,
                now,
            );
        }
    }
    headers::set_forwarded(
        &mut parts.headers,
        client,
        scheme,
        facts.host.as_deref(),
        config.listener.trust_forwarded_headers,
    );
    headers::merge_cookie_headers(&mut parts.headers);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        parts.headers.insert(REQUEST_ID, value);
    }
    if let Err(message) = to_origin_form(&mut parts) {
        return response::bad_request(message);
    }
    let request = Request::from_parts(parts, body.boxed());

    // 5. An instance. redis: any healthy one (identity travels in the headers), except that a
    //    logout goes to the instance that saw the login so the app's own copy ends too.
    //    overlap, legacy: the session's origin while it is healthy.
    let preferred = match mode {
        Mode::Redis if route.config.logout_paths.contains(&facts.path) => {
            session.as_ref().and_then(|s| s.record.origin.clone())
        }
        Mode::Redis => None,
        Mode::Overlap | Mode::Legacy => resolution.origin,
    };
    let (mut response, instance) = match route
        .pool
        .send(request, preferred.as_deref(), client_upgrade.is_some())
        .await
    {
        Ok(answer) => answer,
        Err(e @ ForwardError::Timeout { .. }) => {
            tracing::warn!(error = %e, "upstream timeout");
            return response::gateway_timeout();
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream failed");
            return response::bad_gateway();
        }
    };

    // 7. The response: logins and logouts, then header hygiene on the way out.
    let status = response.status();
    let signals = capture::read_response(
        runtime,
        route,
        &facts,
        status,
        response.headers_mut(),
        session.is_some(),
    );
    headers::strip_internal_headers(response.headers_mut(), &runtime.internal_response_headers);
    if !signals.is_empty() {
        // Boxed: a login or logout is rare, and its future would otherwise enlarge every
        // request's.
        let record = Box::pin(capture::apply(
            runtime,
            route,
            signals,
            session.as_ref(),
            &ids,
            &instance,
            &facts,
        ));
        let recorded = record.await;
        if let (Mode::Legacy, Err(e)) = (mode, &recorded) {
            // Legacy never depends on Redis: the app's answer goes out as before.
            if e.is_news() {
                tracing::warn!(error = %e, "legacy route: login or logout not recorded");
            } else {
                tracing::debug!(error = %e, "legacy route: login or logout not recorded");
            }
        } else if let Err(e) = recorded {
            if e.is_news() {
                tracing::warn!(error = %e, "could not record a login or logout; answering 503");
            } else {
                tracing::debug!(error = %e, "could not record a login or logout; answering 503");
            }
            return response::retry_later(config.store.retry_after);
        }
    }
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let protocol = switching
        .then(|| response.headers().get(UPGRADE).cloned())
        .flatten();
    headers::strip_hop_by_hop(response.headers_mut(), protocol.as_ref());
    if let (true, Some(client_upgrade)) = (switching, client_upgrade) {
        upgrade::splice(client_upgrade, hyper::upgrade::on(&mut response));
    }
    response.map(|body| body.boxed())
}

const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id` when it is a sane token (so traces join up across proxies),
/// else a new random one.
fn request_id(headers: &http::HeaderMap) -> String {
    let given = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
    match given {
        Some(id) => id.to_string(),
        None => crate::hex_string(&rand::random::<u128>().to_be_bytes()),
    }
}

/// The request's host, lower case and without port. The route is chosen by it, so the app
/// must see the same one: the target's authority when there is one (HTTP/2, absolute form;
/// RFC 9112 section 3.2.2 says it wins over any Host header), else the single Host header.
/// Several Host headers, or one that is not a plain `host[:port]`, are refused (RFC 9112
/// section 3.2), so that unstick and the app cannot read different hosts from one request.
fn request_host(request: &Request<Incoming>) -> Result<Option<String>, &'static str> {
    if let Some(authority) = request.uri().authority() {
        return Ok(Some(authority.host().to_ascii_lowercase()));
    }
    let mut values = request.headers().get_all(HOST).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("More than one Host header.\n");
    }
    if value.is_empty() {
        return Ok(None);
    }
    let authority = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<Authority>().ok())
        .filter(|a| !a.as_str().contains('@'))
        .ok_or("Bad Host header.\n")?;
    Ok(Some(authority.host().to_ascii_lowercase()))
}

/// The app speaks HTTP/1.1 and expects `GET /path?query` with a Host header.
fn to_origin_form(parts: &mut http::request::Parts) -> Result<(), &'static str> {
    if let Some(authority) = parts.uri.authority() {
        // The target's authority replaces any Host header (see `request_host`), without
        // userinfo, which has no place in Host.
        let host = match authority.port() {
            Some(port) => format!("{}:{port}", authority.host()),
            None => authority.host().to_string(),
        };
        let value = HeaderValue::from_str(&host).map_err(|_| "Bad Host.\n")?;
        parts.headers.insert(HOST, value);
    } else if parts.headers.get(HOST).is_none() {
        return Err("Missing Host header.\n");
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    Ok(())
}
