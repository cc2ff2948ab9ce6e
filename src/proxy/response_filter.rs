//! The response filter: what the app's answer says about the session (a login, a logout,
//! housekeeping) recorded by the session layer, then our internal and hop-by-hop headers out
//! and an accepted upgrade spliced through.

use super::context::RequestContext;
use super::response::Answer;
use super::{headers, upgrade};
use crate::body::{self, Body};
use crate::session::capture::{self, Recorder};
use crate::upstream::Instance;
use http::header::UPGRADE;
use http::{Response, StatusCode};
use hyper::body::Incoming;

pub async fn response_filter(
    context: &mut RequestContext,
    mut response: Response<Incoming>,
    instance: &Instance,
) -> Result<Response<Body>, Answer> {
    let live = &context.live;
    let route = &context.route.sessions;
    let status = response.status();
    let signals = capture::read_response(
        &live.sessions,
        route,
        &context.facts,
        status,
        response.headers_mut(),
        context.session.is_some(),
    );
    headers::strip_internal_headers(response.headers_mut(), &live.internal_response_headers);
    if !signals.is_empty() {
        let recorder = Recorder {
            sessions: &live.sessions,
            route,
            facts: &context.facts,
            instance,
        };
        // Boxed: a login or logout is rare, and its future would otherwise enlarge every
        // request's.
        let current = context.session.as_ref();
        let recorded = Box::pin(capture::apply(
            &recorder,
            signals,
            current,
            &context.session_ids,
        ))
        .await;
        if let Err(e) = recorded {
            if !route.mode().capture_error_is_fatal() {
                // A route that does not depend on Redis: the app's answer goes out as before.
                if e.is_news() {
                    tracing::warn!(error = %e, "legacy route: login or logout not recorded");
                } else {
                    tracing::debug!(error = %e, "legacy route: login or logout not recorded");
                }
            } else {
                if e.is_news() {
                    tracing::warn!(error = %e, "could not record a login or logout; answering 503");
                } else {
                    tracing::debug!(error = %e, "could not record a login or logout; answering 503");
                }
                return Err(Answer::RetryLater(live.config.store.retry_after));
            }
        }
    }
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let protocol = switching
        .then(|| response.headers().get(UPGRADE).cloned())
        .flatten();
    headers::strip_hop_by_hop(response.headers_mut(), protocol.as_ref());
    if let (true, Some(client_upgrade)) = (switching, context.client_upgrade.take()) {
        upgrade::splice(client_upgrade, hyper::upgrade::on(&mut response));
    }
    Ok(response.map(body::incoming))
}
