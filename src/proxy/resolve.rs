//! The resolve phase: the session the request belongs to and its home instance, from the
//! session layer. A store error on a route that requires the store fails closed (503): a
//! request that carries a session is never served as anonymous.

use super::context::RequestContext;
use super::response::Answer;
use crate::activity::Resolved;
use crate::session::cookie::{keep_only_session_cookie, remove_session_cookie};
use crate::session::resolve::{Outcome, Resolution};
use crate::session::resolve_session;
use http::HeaderMap;

pub async fn resolve(context: &mut RequestContext, headers: &mut HeaderMap) -> Result<(), Answer> {
    let live = &context.live;
    let found = resolve_session(
        &live.sessions,
        &context.route.sessions,
        &context.session_ids,
        headers,
        &context.facts,
    )
    .await;
    let resolution = match found {
        Ok(resolution) => resolution,
        Err(e) => {
            live.metrics.outcome("store_error", "");
            count_on_dashboard(context, None);
            // An outage is logged by the store once; each request's failure only when news.
            if e.is_news() {
                tracing::warn!(error = %e, "session lookup failed; answering 503");
            } else {
                tracing::debug!(error = %e, "session lookup failed; answering 503");
            }
            return Err(Answer::RetryLater(live.config.store.retry_after));
        }
    };
    let (outcome, store) = resolution.outcome.labels();
    live.metrics.outcome(outcome, store);
    count_on_dashboard(context, Some(&resolution));
    let cookie_name = &live.config.session.cookie_name;
    if let Outcome::Ended(ended) = &resolution.outcome {
        // A logged-out id never reaches the app: an instance may still hold its login. Nor is
        // the app's answer read as being about it (a login path answered without a cookie
        // would otherwise be taken as a login under that id, and bring it back).
        remove_session_cookie(headers, cookie_name, ended.cookie_value());
        context.session_ids.retain(|id| id != ended);
    }
    if let (true, Some(session)) = (context.ambiguous_cookies, &resolution.session) {
        // The app must read the session unstick resolved, not another of the same name.
        keep_only_session_cookie(headers, cookie_name, session.id.cookie_value());
    }
    context.session = resolution.session;
    context.home = resolution.home;
    Ok(())
}

/// Counts the request on its route's dashboard: how it was resolved (`None`: the store
/// failed), and its session for the readiness sample. Requests without a cookie are not counted.
fn count_on_dashboard(context: &RequestContext, resolution: Option<&Resolution>) {
    let (resolved, session) = match resolution {
        None => (Resolved::Unavailable, None),
        Some(resolution) => {
            let mode = context.route.config().mode;
            let Some((resolved, in_redis)) = resolution.outcome.resolved(mode) else {
                return;
            };
            // The sample follows the id that resolved, else the first one carried.
            let id = match &resolution.session {
                Some(session) => Some(&session.id),
                None => context.session_ids.first(),
            };
            (resolved, id.zip(in_redis).map(|(id, held)| (id.id(), held)))
        }
    };
    let window = context.live.config.session.idle_timeout;
    let activity = &context.route.sessions.activity;
    activity.resolved(resolved, session, window);
}
