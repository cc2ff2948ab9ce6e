//! Watches the app's responses for the session's beginning and end: a new session cookie is a
//! login (or an id regeneration) whose identity is captured and stored; a cleared cookie or a
//! successful answer on a logout path deletes the session.

use super::cookie::{parse_session_cookie, session_cookie_change, CookieChange};
use super::mapping::identity_from_json;
use super::record::{now_ms, Identity, SessionRecord};
use super::resolve::ResolvedSession;
use super::store::StoreError;
use super::whoami::{ask_whoami, WhoamiCall};
use crate::config::CaptureSource;
use crate::runtime::{Route, Runtime};
use crate::upstream::Instance;
use http::{HeaderMap, StatusCode};
use std::net::IpAddr;
use std::time::Duration;

/// Facts about the request that a new session record keeps.
pub struct RequestFacts {
    pub path: String,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub client_ip: IpAddr,
}

/// What a response did to the session, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionChange {
    None,
    /// A new session was stored.
    LoggedIn,
    /// The app set a new cookie but named no user: nothing stored.
    Anonymous,
    /// The session was deleted.
    LoggedOut,
}

/// Looks at a response from `instance` and updates the store. A store error means the login or
/// logout could not be recorded: the caller answers 503 so the user retries, rather than
/// leaving a login unrecorded or a logged-out session alive.
pub async fn observe_response(
    runtime: &Runtime,
    route: &Route,
    facts: &RequestFacts,
    current: Option<&ResolvedSession>,
    instance: &Instance,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> Result<SessionChange, StoreError> {
    let config = &runtime.config;
    // Read the app's identity header before it is removed from the response.
    let header_identity = match &config.identity.capture {
        CaptureSource::ResponseHeader { header } => headers
            .get(header)
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v.as_bytes()).ok())
            .and_then(|doc| identity_from_json(&doc, &config.identity.mapping)),
        CaptureSource::Whoami { .. } => None,
    };
    for name in &runtime.internal_response_headers {
        headers.remove(name);
    }

    let is_logout_path = route.config.logout_paths.contains(&facts.path);
    let logout_ok = is_logout_path && (status.is_success() || status.is_redirection());
    let change = session_cookie_change(headers, &config.session.cookie_name);

    let new_value = match change {
        Some(CookieChange::Set { value, lifetime }) if !logout_ok => Some((value, lifetime)),
        Some(CookieChange::Cleared) | Some(CookieChange::Set { .. }) => None,
        None if logout_ok => None,
        None => return Ok(SessionChange::None),
    };
    let Some((value, cookie_lifetime)) = new_value else {
        // Logout: cleared cookie or a logout path answered.
        if let Some(current) = current {
            runtime.store.delete(&current.hash).await?;
            tracing::info!(session = current.hash.short(), user = %current.record.identity.user, "logout: session deleted");
            return Ok(SessionChange::LoggedOut);
        }
        return Ok(SessionChange::None);
    };

    let Some(new_id) = parse_session_cookie(&value, &config.session.id_format) else {
        return Ok(SessionChange::None);
    };
    let new_hash = new_id.hash();
    if current.is_some_and(|c| c.hash == new_hash) {
        // The same session re-sent (rolling cookies): nothing new.
        return Ok(SessionChange::None);
    }

    let identity: Option<Identity> = match &config.identity.capture {
        CaptureSource::ResponseHeader { .. } => header_identity,
        CaptureSource::Whoami { path, timeout } => {
            let call = WhoamiCall {
                path,
                cookie_name: &config.session.cookie_name,
                cookie_value: &value,
                host: facts.host.as_deref(),
                timeout: *timeout,
                mapping: &config.identity.mapping,
            };
            match ask_whoami(&route.pool, instance, &call).await {
                Ok(identity) => identity,
                Err(e) => {
                    tracing::warn!(error = %e, "login seen but its identity could not be read; not stored");
                    None
                }
            }
        }
    };

    // The browser now holds the new cookie: the old session (id regeneration) is over.
    if let Some(current) = current {
        runtime.store.delete(&current.hash).await?;
    }
    let Some(identity) = identity else {
        return Ok(SessionChange::Anonymous);
    };
    let now = now_ms();
    let session = &config.session;
    // A persistent ("remember me") cookie keeps the lifetime the app gave it.
    let lifetime = cookie_lifetime.unwrap_or(Duration::ZERO);
    let idle = session.idle_timeout.max(lifetime);
    let absolute = session.absolute_lifetime.max(lifetime);
    let record = SessionRecord {
        identity,
        created_ms: now,
        expires_ms: now + absolute.as_millis() as u64,
        idle_ms: idle.as_millis() as u64,
        origin: Some(instance.name.clone()),
        user_agent: facts.user_agent.clone(),
        client_ip: Some(facts.client_ip.to_string()),
    };
    runtime
        .store
        .save(&new_hash, &record, now, session.touch_interval())
        .await?;
    tracing::info!(session = new_hash.short(), user = %record.identity.user, instance = %instance.name, "login: session stored");
    Ok(SessionChange::LoggedIn)
}
