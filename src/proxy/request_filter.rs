//! The request filter, the first phase: the route for the request's host and path, header
//! hygiene (hop-by-hop headers out, every client copy of our identity and internal headers
//! out) and the session cookie read into session ids.

use super::context::RequestContext;
use super::headers::{self, ClientAddress};
use super::response::Answer;
use crate::config::values::routed_path;
use crate::config::DuplicateCookies;
use crate::live::LiveState;
use crate::session::cookie::session_cookies;
use crate::session::RequestFacts;
use http::header::{HOST, USER_AGENT};
use http::uri::Authority;
use http::{HeaderValue, Request};
use hyper::body::Incoming;
use std::sync::Arc;

/// Routes and cleans the request in place; the context the later phases share starts here.
pub fn request_filter(
    live: Arc<LiveState>,
    request: &mut Request<Incoming>,
    client: &ClientAddress,
    scheme: &'static str,
) -> Result<RequestContext, Answer> {
    let host = request_host(request).map_err(Answer::BadRequest)?;
    let route = live
        .route_for(host.as_deref(), request.uri().path())
        .ok_or(Answer::NoRoute)?
        .clone();
    let request_id = request_id(request.headers());
    let upgrade = headers::requested_upgrade(request.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut *request));
    let sent = request.headers_mut();
    headers::strip_hop_by_hop(sent, upgrade.as_ref());
    headers::strip_reserved_headers(sent, &live.owned_headers);

    let session = &live.config.session;
    let sent = request.headers();
    let cookies = session_cookies(sent, session);
    if cookies.conflicting && session.duplicate_cookies == DuplicateCookies::Refuse {
        return Err(Answer::BadRequest(
            "Several session cookies with different values: clear this site's cookies and log in again.\n",
        ));
    }
    let facts = RequestFacts {
        path: routed_path(request.uri().path()).into_owned(),
        host,
        user_agent: sent.get(USER_AGENT).cloned(),
        client_ip: client.ip,
    };
    let context = RequestContext {
        live,
        route,
        request_id,
        client: client.clone(),
        scheme,
        facts,
        session_ids: cookies.ids,
        ambiguous_cookies: cookies.conflicting,
        client_upgrade,
        session: None,
        home: None,
    };
    Ok(context)
}

pub(super) const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The client's `X-Request-Id` when it is a sane token (so traces join up across proxies),
/// else a new random one. A header value, so that the app's request and the response carry
/// it without a copy each.
fn request_id(headers: &http::HeaderMap) -> HeaderValue {
    let given = headers.get(&REQUEST_ID).filter(|id| {
        let id = id.as_bytes();
        !id.is_empty()
            && id.len() <= 128
            && id
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
    });
    match given {
        Some(id) => id.clone(),
        None => {
            let id = crate::hex_string(&rand::random::<u128>().to_be_bytes());
            // Hex digits are always a valid header value.
            HeaderValue::from_maybe_shared(bytes::Bytes::from(id))
                .unwrap_or_else(|_| HeaderValue::from_static("-"))
        }
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
