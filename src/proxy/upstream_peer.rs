//! The upstream peer phase: every choice of app instance is made here. The route's migration
//! rule says whether to prefer the session's home ([`crate::migration::Mode::preferred_instance`]);
//! the pool then tries that instance while healthy, the others round robin, failing over.

use super::context::RequestContext;
use super::response::Answer;
use crate::body::Body;
use crate::upstream::{ForwardError, Instance};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;

/// The instance to prefer for this request, if any.
pub fn upstream_peer(context: &RequestContext) -> Option<&str> {
    let config = context.route.config();
    let logout_path = config.logout_paths.contains(&context.facts.path);
    config
        .mode
        .preferred_instance(context.home.as_deref(), logout_path)
}

/// Sends the request to the app: the preferred instance when healthy, else another.
pub async fn proxy_to_upstream(
    context: &RequestContext,
    peer: Option<&str>,
    request: Request<Body>,
) -> Result<(Response<Incoming>, Arc<Instance>), Answer> {
    let upgrade = context.client_upgrade.is_some();
    match context.route.pool().send(request, peer, upgrade).await {
        Ok(answer) => Ok(answer),
        Err(e @ ForwardError::Timeout { .. }) => {
            tracing::warn!(error = %e, "upstream timeout");
            Err(Answer::GatewayTimeout)
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream failed");
            Err(Answer::BadGateway)
        }
    }
}
