//! The request pipeline. [`Proxy::handle`] runs one request through named phases, in order,
//! over one [`context::RequestContext`] (the phase names are Pingora's):
//!
//! 1. [`request_filter`]: the route, header hygiene, the session cookie read;
//! 2. [`resolve`]: the session and its home instance, from the session layer;
//! 3. [`upstream_peer`]: the instance to prefer, by the route's migration rule;
//! 4. [`upstream_request_filter`]: identity, forwarding headers, origin form for the app;
//! 5. [`proxy_to_upstream`]: the app's answer;
//! 6. [`response_filter`]: logins and logouts recorded, internal headers out, upgrades;
//! 7. [`logging`]: request id, metrics.
//!
//! A phase that must answer itself (a bad request, a 503) returns the answer as its error.

pub mod context;
pub mod headers;
mod logging;
mod request_filter;
mod resolve;
pub mod response;
mod response_filter;
mod upgrade;
mod upstream_peer;
mod upstream_request;

use crate::body::{Body, BodyInFlight, ClientBody};
use crate::live::LiveState;
use arc_swap::ArcSwap;
use context::RequestContext;
use headers::ClientAddress;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use logging::logging;
use request_filter::request_filter;
use resolve::resolve;
use response::Answer;
use response_filter::response_filter;
use std::sync::Arc;
use std::time::Instant;
use tracing::Instrument;
use upstream_peer::{proxy_to_upstream, upstream_peer};
use upstream_request::upstream_request_filter;

/// The proxy: the live state (swapped whole on reload) and the pipeline over it.
pub struct Proxy {
    live: ArcSwap<LiveState>,
}

impl Proxy {
    pub fn new(live: LiveState) -> Arc<Proxy> {
        Arc::new(Proxy {
            live: ArcSwap::from_pointee(live),
        })
    }

    /// The live state requests starting now will use.
    pub fn live(&self) -> Arc<LiveState> {
        self.live.load_full()
    }

    /// Swaps in a new live state; requests in flight finish on the one they started with.
    pub fn replace(&self, live: LiveState) {
        self.live.store(Arc::new(live));
    }

    /// One request, from the client to the app and back. `scheme` is the listener's.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: &ClientAddress,
        scheme: &'static str,
    ) -> Response<Body> {
        let started = Instant::now();
        let mut request = request;
        let mut context = match request_filter(self.live(), &mut request, client, scheme) {
            Ok(context) => context,
            Err(answer) => return answer.into_response(),
        };
        let span = tracing::info_span!(
            "request",
            id = context.request_id.to_str().unwrap_or_default(),
            route = %context.route.label
        );
        let mut response = match forward(&mut context, request).instrument(span).await {
            Ok(response) => response,
            Err(answer) => answer.into_response(),
        };
        logging(&context, &mut response, started);
        response
    }
}

/// The phases between the request filter and logging, in order. The request is split here,
/// once: the phases work on its parts in place rather than passing them along by value.
async fn forward(
    context: &mut RequestContext,
    request: Request<Incoming>,
) -> Result<Response<Body>, Answer> {
    let (mut parts, body) = request.into_parts();
    resolve(context, &mut parts.headers).await?;
    let peer = upstream_peer(context);
    upstream_request_filter(context, &mut parts)?;
    let (body, upload) = match body.is_end_stream() {
        true => (crate::body::incoming(body), None),
        false => {
            let pause_limit = context.live.config.listener.body_timeout;
            let in_flight = parts.extensions.remove::<BodyInFlight>();
            let (body, upload) = ClientBody::new(body, pause_limit, in_flight);
            (body.boxed(), Some(upload))
        }
    };
    let request = Request::from_parts(parts, body);
    let (response, instance) = proxy_to_upstream(context, peer, request, upload).await?;
    response_filter(context, response, &instance).await
}
