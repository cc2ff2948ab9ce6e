//! The upstream peer phase: every choice of app instance is made here. The route's migration
//! rule says whether to prefer the session's home ([`crate::migration::Mode::preferred_instance`]);
//! the pool then tries that instance while healthy, the others round robin, failing over.

use super::context::RequestContext;
use super::response::Answer;
use crate::body::{Body, BodyStalled, Upload};
use crate::upstream::{ForwardError, Instance};
use http::{Request, Response};
use hyper::body::Incoming;
use std::sync::Arc;
use tokio::sync::watch;

/// The instance to prefer for this request, if any.
pub fn upstream_peer(context: &RequestContext) -> Option<&str> {
    let config = context.route.config();
    let logout_path = config.logout_paths.contains(&context.facts.path);
    config
        .mode
        .preferred_instance(context.home.as_deref(), logout_path)
}

/// Sends the request to the app: the preferred instance when healthy, else another.
/// `upload` reports the client's body as it goes (`None`: it has none).
pub async fn proxy_to_upstream(
    context: &RequestContext,
    peer: Option<&str>,
    request: Request<Body>,
    upload: Option<watch::Receiver<Upload>>,
) -> Result<(Response<Incoming>, Arc<Instance>), Answer> {
    let upgrade = context.client_upgrade.is_some();
    let pool = context.route.pool();
    match pool.send(request, peer, upgrade, upload).await {
        Ok(answer) => Ok(answer),
        Err(ForwardError::Failed { source, .. }) if BodyStalled::caused(&source) => {
            tracing::info!(error = %source, "client body stalled; answering 408");
            Err(Answer::RequestTimeout)
        }
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
