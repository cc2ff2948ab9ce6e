//! The logging phase, last: the request id on the response, and the request counted and
//! timed by route, mode and status.

use super::context::RequestContext;
use super::request_filter::REQUEST_ID;
use crate::body::Body;
use http::Response;
use std::time::Instant;

pub fn logging(context: &RequestContext, response: &mut Response<Body>, started: Instant) {
    response
        .headers_mut()
        .insert(REQUEST_ID, context.request_id.clone());
    context
        .route
        .metrics
        .request(response.status().as_u16(), started.elapsed().as_secs_f64());
}
