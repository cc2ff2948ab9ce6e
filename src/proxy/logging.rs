//! The logging phase, last: the request id on the response, and the request counted and
//! timed by route, mode and status.

use super::context::RequestContext;
use super::request_filter::REQUEST_ID;
use crate::body::Body;
use crate::metrics::{RequestLabels, RouteLabels};
use http::Response;
use std::time::Instant;

pub fn logging(context: &RequestContext, response: &mut Response<Body>, started: Instant) {
    response
        .headers_mut()
        .insert(REQUEST_ID, context.request_id.clone());
    let metrics = &context.live.metrics;
    let route = &context.route;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.label.clone(),
            mode: route.config().mode.as_str(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .request_seconds
        .get_or_create(&RouteLabels {
            route: route.label.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
}
