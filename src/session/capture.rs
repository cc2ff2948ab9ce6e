//! Watches the app's responses for the session's beginning and end: a new session cookie is a
//! login (or an id regeneration) whose identity is captured and stored; a cleared cookie or a
//! successful answer on a logout path ends the session.
//!
//! Reading the response ([`read_response`]) is separate from acting on it ([`apply`]) so that
//! legacy routes can act in the background without delaying the app's answer.

use super::cookie::{
    parse_session_cookie, session_cookie_change, CookieChange, SessionHash, SessionId,
};
use super::mapping::identity_from_json;
use super::record::{now_ms, Identity, SessionRecord};
use super::resolve::ResolvedSession;
use super::store::StoreError;
use super::users;
use super::whoami::{ask_whoami, WhoamiCall};
use crate::config::{CaptureSource, Mode};
use crate::runtime::{Route, Runtime};
use crate::upstream::Instance;
use http::{HeaderMap, StatusCode};
use std::net::IpAddr;
use std::time::Duration;

/// Facts about the request that a new session record keeps.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub path: String,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub client_ip: IpAddr,
}

/// What a response says about the session.
#[derive(Debug, Clone)]
pub enum SessionEvent {
    None,
    /// The app set a new session cookie.
    Login(Box<Login>),
    /// The app cleared its cookie, or a logout path answered successfully.
    Logout,
}

#[derive(Debug, Clone)]
pub struct Login {
    pub id: SessionId,
    /// The cookie value as the browser will send it (for the whoami call).
    pub cookie_value: String,
    /// Max-Age/Expires of a persistent ("remember me") cookie.
    pub cookie_lifetime: Option<Duration>,
    /// The identity the app sent in the capture header, when that is the source.
    pub header_identity: Option<Identity>,
}

/// What a response asks of unstick.
#[derive(Debug, Clone)]
pub struct ResponseSignals {
    pub event: SessionEvent,
    /// The app asked to end every session of the user (e.g. after a password change).
    pub logout_everywhere: bool,
}

impl ResponseSignals {
    pub fn is_empty(&self) -> bool {
        matches!(self.event, SessionEvent::None) && !self.logout_everywhere
    }
}

/// Reads what a response asks of unstick and removes the headers meant for unstick only.
/// No I/O.
pub fn read_response(
    runtime: &Runtime,
    route: &Route,
    facts: &RequestFacts,
    status: StatusCode,
    headers: &mut HeaderMap,
) -> ResponseSignals {
    let config = &runtime.config;
    let logout_everywhere = headers.contains_key(&config.identity.logout_all_header);
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
    let logout_path = route.config.logout_paths.contains(&facts.path)
        && (status.is_success() || status.is_redirection());
    let event = match session_cookie_change(headers, &config.session.cookie_name) {
        _ if logout_path => SessionEvent::Logout,
        Some(CookieChange::Cleared) => SessionEvent::Logout,
        Some(CookieChange::Set { value, lifetime }) => {
            match parse_session_cookie(&value, &config.session.id_format) {
                Some(id) => SessionEvent::Login(Box::new(Login {
                    id,
                    cookie_value: value,
                    cookie_lifetime: lifetime,
                    header_identity,
                })),
                None => SessionEvent::None,
            }
        }
        None => SessionEvent::None,
    };
    ResponseSignals {
        event,
        logout_everywhere,
    }
}

/// Records a session event. `ids` are the session ids the request carried, `current` the one
/// resolved. A store error means the login or logout could not be recorded: on Redis-backed
/// routes the caller answers 503 so the user retries, rather than leaving a login unrecorded
/// or a logged-out session alive.
pub async fn apply(
    runtime: &Runtime,
    route: &Route,
    signals: ResponseSignals,
    current: Option<&ResolvedSession>,
    ids: &[SessionId],
    instance: &Instance,
    facts: &RequestFacts,
) -> Result<(), StoreError> {
    let mut current = current;
    if signals.logout_everywhere {
        if let Some(session) = current {
            let remember = runtime.config.session.absolute_lifetime;
            let ended =
                users::revoke_user(&runtime.store, &session.record.identity.user, remember).await?;
            runtime.metrics.sessions_revoked.inc_by(ended as u64);
            // The current session is among them; a new cookie in this response starts afresh.
            current = None;
        }
    }
    match signals.event {
        SessionEvent::None => Ok(()),
        SessionEvent::Logout => end_sessions(runtime, route, ids, current).await,
        SessionEvent::Login(login) => {
            let Login {
                id,
                cookie_value,
                cookie_lifetime,
                header_identity,
            } = *login;
            let hash = id.hash();
            if current.is_some_and(|c| c.hash == hash) {
                // The same session re-sent (rolling cookies): nothing new.
                return Ok(());
            }
            if route.config.mode != Mode::Redis {
                // While the app still holds sessions itself, the next request must find this
                // instance again, whether or not an identity can be read.
                let session = &runtime.config.session;
                runtime
                    .store
                    .bind(&hash, &instance.name, session.absolute_lifetime)
                    .await?;
            }
            let identity = match &runtime.config.identity.capture {
                CaptureSource::ResponseHeader { .. } => header_identity,
                CaptureSource::Whoami { path, timeout } => {
                    let call = WhoamiCall {
                        path,
                        cookie_name: &runtime.config.session.cookie_name,
                        cookie_value: &cookie_value,
                        host: facts.host.as_deref(),
                        timeout: *timeout,
                        mapping: &runtime.config.identity.mapping,
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
                return Ok(());
            };
            let record = new_record(runtime, identity, cookie_lifetime, instance, facts);
            store_session(runtime, &hash, &record).await?;
            tracing::info!(session = hash.short(), user = %record.identity.user, instance = %instance.name, "login: session stored");
            Ok(())
        }
    }
}

/// Stores a new session and indexes it under its user, ending the oldest beyond the cap.
pub(crate) async fn store_session(
    runtime: &Runtime,
    hash: &SessionHash,
    record: &SessionRecord,
) -> Result<(), StoreError> {
    let session = &runtime.config.session;
    runtime
        .store
        .save(hash, record, record.created_ms, session.touch_interval())
        .await?;
    let evicted = users::register(
        &runtime.store,
        hash,
        record,
        session.max_sessions_per_user,
        session.absolute_lifetime,
    )
    .await?;
    runtime.metrics.sessions_evicted.inc_by(evicted as u64);
    Ok(())
}

fn new_record(
    runtime: &Runtime,
    identity: Identity,
    cookie_lifetime: Option<Duration>,
    instance: &Instance,
    facts: &RequestFacts,
) -> SessionRecord {
    let session = &runtime.config.session;
    let now = now_ms();
    // A persistent ("remember me") cookie keeps the lifetime the app gave it.
    let lifetime = cookie_lifetime.unwrap_or(Duration::ZERO);
    let idle = session.idle_timeout.max(lifetime);
    let absolute = session.absolute_lifetime.max(lifetime);
    SessionRecord {
        identity,
        created_ms: now,
        expires_ms: now + absolute.as_millis() as u64,
        idle_ms: idle.as_millis() as u64,
        origin: Some(instance.name.clone()),
        user_agent: facts.user_agent.clone(),
        client_ip: Some(facts.client_ip.to_string()),
    }
}

/// Ends the request's sessions. In `redis` mode the key is deleted; while old stores may still
/// hold the session (`overlap`, `legacy`), a marker stays so they cannot bring it back, and
/// the old stores that can be written are told too.
async fn end_sessions(
    runtime: &Runtime,
    route: &Route,
    ids: &[SessionId],
    current: Option<&ResolvedSession>,
) -> Result<(), StoreError> {
    if let Some(current) = current {
        runtime
            .store
            .index_remove(&current.record.identity.user, &current.hash)
            .await?;
    }
    for id in ids {
        let hash = id.hash();
        let ended = match route.config.mode {
            Mode::Redis => runtime.store.delete(&hash).await?,
            Mode::Overlap | Mode::Legacy => {
                let remember = runtime.config.session.absolute_lifetime;
                runtime.store.end(&hash, now_ms(), remember).await?;
                for store in &route.old_stores {
                    if let Err(e) = store.delete(id).await {
                        tracing::warn!(store = store.name(), error = %e, "logout not written to old store");
                    }
                }
                true
            }
        };
        if ended {
            tracing::info!(session = hash.short(), "logout: session ended");
        }
    }
    Ok(())
}
