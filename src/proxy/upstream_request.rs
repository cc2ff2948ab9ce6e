//! The upstream request filter: what the app is told. The session's identity (signed when
//! configured), the forwarding headers, one Cookie header, the request id, and an HTTP/1.1
//! request in origin form.

use super::context::RequestContext;
use super::headers;
use super::request_filter::REQUEST_ID;
use super::response::Answer;
use http::header::HOST;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{HeaderValue, Uri, Version};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn upstream_request_filter(context: &RequestContext, parts: &mut Parts) -> Result<(), Answer> {
    let config = &context.live.config;
    let identity = &config.identity;
    if let Some(session) = &context.session {
        let injected = headers::inject_identity(
            &mut parts.headers,
            &identity.headers,
            &session.record.identity,
        );
        if !injected {
            tracing::warn!(
                session = session.hash.short(),
                "the session's user cannot be a header value; the request goes on without identity"
            );
        }
        if let (true, Some(signature)) = (injected, &identity.signature) {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            headers::sign_identity(
                &mut parts.headers,
                &identity.headers,
                &session.record.identity,
                signature,
                now,
            );
        }
    }
    headers::set_forwarded(
        &mut parts.headers,
        &context.client,
        context.scheme,
        context.facts.host.as_deref(),
        config.listener.trust_forwarded_headers,
    );
    headers::merge_cookie_headers(&mut parts.headers);
    parts.headers.insert(REQUEST_ID, context.request_id.clone());
    to_origin_form(parts).map_err(Answer::BadRequest)
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
