//! Responses unstick writes itself: an [`Answer`] a phase gives instead of the app's, as a
//! short plain-text body, never cached.

use crate::body::{self, Body};
use http::header::{CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::HeaderValue;
use http::{Response, StatusCode};
use std::time::Duration;

/// An answer unstick gives itself instead of the app's; a phase returns it as its error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    BadRequest(&'static str),
    NoRoute,
    /// The session store cannot answer: the user should retry shortly (never served
    /// anonymously).
    RetryLater(Duration),
    BadGateway,
    GatewayTimeout,
    /// The client stopped sending its request body (`listener.body_timeout`).
    RequestTimeout,
}

impl Answer {
    pub fn into_response(self) -> Response<Body> {
        match self {
            Answer::BadRequest(text) => bad_request(text),
            Answer::NoRoute => no_route(),
            Answer::RetryLater(after) => retry_later(after),
            Answer::BadGateway => bad_gateway(),
            Answer::GatewayTimeout => gateway_timeout(),
            Answer::RequestTimeout => request_timeout(),
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn retry_later(retry_after: Duration) -> Response<Body> {
    let mut response = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "Your session could not be checked just now. Please retry in a moment.\n",
    );
    let seconds = retry_after.as_secs().max(1);
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(seconds));
    response
}

fn no_route() -> Response<Body> {
    plain(StatusCode::NOT_FOUND, "No route for this host and path.\n")
}

fn bad_gateway() -> Response<Body> {
    plain(
        StatusCode::BAD_GATEWAY,
        "The application could not be reached.\n",
    )
}

fn gateway_timeout() -> Response<Body> {
    plain(
        StatusCode::GATEWAY_TIMEOUT,
        "The application did not answer in time.\n",
    )
}

/// With `Connection: close` (RFC 9110 section 15.5.9): the rest of the body may still come.
fn request_timeout() -> Response<Body> {
    let mut response = plain(
        StatusCode::REQUEST_TIMEOUT,
        "The request body stopped arriving.\n",
    );
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn bad_request(text: &'static str) -> Response<Body> {
    plain(StatusCode::BAD_REQUEST, text)
}
