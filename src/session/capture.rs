//! Watches the app's responses for the session's beginning and end, by one rule:
//! - a logout path answering 2xx/3xx, or the app's logout header, is a **logout**;
//! - a new session cookie is a **login** when the app names a user for the new id;
//! - anything else the app does to the cookie of a session unstick holds is **housekeeping**
//!   (Django deletes a cookie it has no session for, Rails issues a new id for one): the
//!   session stays. A cleared cookie is not passed on, so the browser keeps its cookie; a new
//!   id takes the session over with its remaining lifetime. A route can opt out
//!   ([`UnexplainedCookieChange::EndSession`]).
//!
//! Reading the response ([`read_response`]) is separate from acting on it ([`apply`]) so that
//! legacy routes can act in the background without delaying the app's answer.

use super::cookie::{
    parse_session_cookie, remove_session_set_cookies, session_cookie_change, CookieChange,
    SessionHash, SessionId,
};
use super::mapping::identity_from_json;
use super::record::{now_ms, Identity, SessionRecord};
use super::resolve::ResolvedSession;
use super::store::StoreError;
use super::users;
use super::whoami::{ask_whoami, WhoamiCall, WhoamiError};
use crate::config::{CaptureSource, Mode, UnexplainedCookieChange};
use crate::runtime::{Route, Runtime};
use crate::upstream::Instance;
use http::{HeaderMap, StatusCode};
use std::net::IpAddr;
use std::time::Duration;

/// How long an id the app replaced still resolves: requests the browser sent before it saw
/// the new cookie (a page's parallel requests) must not arrive as anonymous.
const ROTATION_GRACE: Duration = Duration::from_secs(30);

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
    /// The app set its cookie to a new session id: a login, or an id it re-issued.
    NewCookie(Box<NewCookie>),
    /// The app cleared the cookie of a session unstick holds, with no sign of a logout. The
    /// `Set-Cookie` was taken out of the response: the browser keeps its cookie.
    ClearKept,
    /// A logout path answered successfully, the app sent the logout header, or it cleared a
    /// cookie on a route where that ends the session.
    Logout,
}

#[derive(Debug, Clone)]
pub struct NewCookie {
    pub id: SessionId,
    /// The cookie value as the browser will send it (for the whoami call).
    pub cookie_value: String,
    /// Max-Age/Expires of a persistent ("remember me") cookie.
    pub cookie_lifetime: Option<Duration>,
}

/// What a response asks of unstick.
#[derive(Debug, Clone)]
pub struct ResponseSignals {
    pub event: SessionEvent,
    /// The app asked to end every session of the user (e.g. after a password change).
    pub logout_everywhere: bool,
    /// A login path answered successfully: a login may have kept the request's session id.
    pub login_path: bool,
    /// The identity the app sent in the capture header, when that is the source.
    pub header_identity: Option<Identity>,
}

impl ResponseSignals {
    pub fn is_empty(&self) -> bool {
        matches!(self.event, SessionEvent::None) && !self.logout_everywhere && !self.login_path
    }
}

/// A login or logout that could not be recorded; on Redis-backed routes the caller answers
/// 503 so the user retries, rather than leaving a login unrecorded or a logout undone.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Without the app's word on the new id, a login of another user and housekeeping look
    /// alike; guessing could give one user's session to another.
    #[error("the app replaced the session cookie and could not say whose the new one is: {0}")]
    NewIdUnknown(#[from] WhoamiError),
}

impl CaptureError {
    /// Whether to log it (see [`StoreError::is_news`]).
    pub fn is_news(&self) -> bool {
        match self {
            CaptureError::Store(e) => e.is_news(),
            CaptureError::NewIdUnknown(_) => true,
        }
    }
}

/// Reads what a response asks of unstick; a cleared cookie that is housekeeping is taken out.
/// `resolved`: the request carried a session unstick holds. No I/O.
pub fn read_response(
    runtime: &Runtime,
    route: &Route,
    facts: &RequestFacts,
    status: StatusCode,
    headers: &mut HeaderMap,
    resolved: bool,
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
    let answered = status.is_success() || status.is_redirection();
    let logout = headers.contains_key(&config.identity.logout_header)
        || (answered && route.config.logout_paths.contains(&facts.path));
    let login_path = answered && route.config.login_paths.contains(&facts.path);
    let cookie_name = &config.session.cookie_name;
    let keep_on_clear =
        resolved && route.config.unexplained_cookie_change == UnexplainedCookieChange::KeepSession;
    let event = match session_cookie_change(headers, cookie_name) {
        _ if logout => SessionEvent::Logout,
        Some(CookieChange::Cleared) if keep_on_clear => {
            remove_session_set_cookies(headers, cookie_name);
            SessionEvent::ClearKept
        }
        Some(CookieChange::Cleared) => SessionEvent::Logout,
        Some(CookieChange::Set { value, lifetime }) => {
            match parse_session_cookie(&value, &config.session.id_format) {
                Some(id) => SessionEvent::NewCookie(Box::new(NewCookie {
                    id,
                    cookie_value: value,
                    cookie_lifetime: lifetime,
                })),
                None => SessionEvent::None,
            }
        }
        None => SessionEvent::None,
    };
    ResponseSignals {
        event,
        logout_everywhere,
        login_path,
        header_identity,
    }
}

/// Records a session event. `ids` are the session ids the request carried, `current` the one
/// resolved.
pub async fn apply(
    runtime: &Runtime,
    route: &Route,
    signals: ResponseSignals,
    current: Option<&ResolvedSession>,
    ids: &[SessionId],
    instance: &Instance,
    facts: &RequestFacts,
) -> Result<(), CaptureError> {
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
    // A login that kept the session id is looked for only where the route says logins happen
    // (each look is a call to the app), and only for a session unstick does not hold yet.
    let kept_id_login = signals.login_path && current.is_none();
    match signals.event {
        SessionEvent::ClearKept => {
            runtime.metrics.cookie_change("clear_kept");
            if let Some(current) = current {
                tracing::debug!(session = current.hash.short(), "the app cleared its cookie without a logout; the session stays and the browser keeps its cookie");
            }
            Ok(())
        }
        SessionEvent::Logout => {
            // A cookie cleared for a session unstick does not hold (an app's housekeeping, or
            // a logout of a session only the app knows) is counted apart from real logouts.
            let change = if current.is_some() {
                "logout"
            } else {
                "logout_unheld"
            };
            runtime.metrics.cookie_change(change);
            Ok(end_sessions(runtime, route, ids, current).await?)
        }
        // The request's own id re-sent (Laravel re-encrypts its cookie on every response,
        // rolling cookies): not a new session, whether or not unstick holds it; except on a
        // login path, where the app may have logged the user in under that id.
        SessionEvent::NewCookie(new)
            if !kept_id_login && ids.iter().any(|id| id.id() == new.id.id()) =>
        {
            Ok(())
        }
        SessionEvent::NewCookie(new) => {
            let identity = signals.header_identity;
            Box::pin(new_cookie(
                runtime, route, *new, identity, current, instance, facts,
            ))
            .await
        }
        // A login path answered without a new cookie: the app may have logged the user in
        // under the request's own id (PHP without session_regenerate_id, say).
        SessionEvent::None => match ids.first() {
            Some(id) if kept_id_login => {
                let kept = NewCookie {
                    id: id.clone(),
                    cookie_value: id.cookie_value().to_string(),
                    cookie_lifetime: None,
                };
                let identity = signals.header_identity;
                Box::pin(new_cookie(
                    runtime, route, kept, identity, current, instance, facts,
                ))
                .await
            }
            _ => Ok(()),
        },
    }
}

/// The app set its cookie to a new id. Without a session unstick holds, it is a login when the
/// app names a user. With one, it is a login only when the app names a user for the new id
/// (another user: the old session ends; the same user: the id rotated, the session goes on);
/// otherwise housekeeping, and the new id takes the session over.
async fn new_cookie(
    runtime: &Runtime,
    route: &Route,
    new: NewCookie,
    header_identity: Option<Identity>,
    current: Option<&ResolvedSession>,
    instance: &Instance,
    facts: &RequestFacts,
) -> Result<(), CaptureError> {
    let hash = new.id.hash();
    if current.is_some_and(|c| c.hash == hash) {
        // The same session re-sent (rolling cookies, re-encrypted values): nothing new.
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
    let identity =
        new_cookie_identity(runtime, route, &new, header_identity, instance, facts).await;
    let Some(current) = current else {
        let identity = identity.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "login seen but its identity could not be read; not stored");
            None
        });
        if let Some(identity) = identity {
            store_login(
                runtime,
                &hash,
                identity,
                new.cookie_lifetime,
                instance,
                facts,
            )
            .await?;
        }
        return Ok(());
    };
    let user = &current.record.identity.user;
    match identity? {
        Some(identity) if identity.user != *user => {
            // Another user logged in on this browser: the old session ends now.
            end_sessions(
                runtime,
                route,
                std::slice::from_ref(&current.id),
                Some(current),
            )
            .await?;
            store_login(
                runtime,
                &hash,
                identity,
                new.cookie_lifetime,
                instance,
                facts,
            )
            .await?;
        }
        Some(identity) => {
            rotate_session(runtime, current, &hash, Some(identity), instance).await?;
            runtime.metrics.cookie_change("rotated");
            tracing::info!(session = hash.short(), previous = current.hash.short(), %user, "session id rotated by the app; identity refreshed");
        }
        None if route.config.unexplained_cookie_change == UnexplainedCookieChange::EndSession => {
            runtime.metrics.cookie_change("logout");
            end_sessions(
                runtime,
                route,
                std::slice::from_ref(&current.id),
                Some(current),
            )
            .await?;
        }
        None => {
            rotate_session(runtime, current, &hash, None, instance).await?;
            runtime.metrics.cookie_change("rebound");
            tracing::debug!(
                session = hash.short(),
                previous = current.hash.short(),
                "the app issued a new id without a login; it takes the session over"
            );
        }
    }
    Ok(())
}

/// Who the app says the new cookie belongs to: `Ok(None)` when it names nobody.
async fn new_cookie_identity(
    runtime: &Runtime,
    route: &Route,
    new: &NewCookie,
    header_identity: Option<Identity>,
    instance: &Instance,
    facts: &RequestFacts,
) -> Result<Option<Identity>, WhoamiError> {
    match &runtime.config.identity.capture {
        CaptureSource::ResponseHeader { .. } => Ok(header_identity),
        CaptureSource::Whoami { path, timeout } => {
            let call = WhoamiCall {
                path,
                cookie_name: &runtime.config.session.cookie_name,
                cookie_value: &new.cookie_value,
                host: facts.host.as_deref(),
                timeout: *timeout,
                mapping: &runtime.config.identity.mapping,
            };
            ask_whoami(&route.pool, instance, &call).await
        }
    }
}

/// A new session record for a login, stored and indexed.
async fn store_login(
    runtime: &Runtime,
    hash: &SessionHash,
    identity: Identity,
    cookie_lifetime: Option<Duration>,
    instance: &Instance,
    facts: &RequestFacts,
) -> Result<(), StoreError> {
    let record = new_record(runtime, identity, cookie_lifetime, instance, facts);
    store_session(runtime, hash, &record).await?;
    runtime.metrics.cookie_change("login");
    tracing::info!(session = hash.short(), user = %record.identity.user, instance = %instance.name, "login: session stored");
    Ok(())
}

/// The app's new id takes the request's session over: same user (with the identity the app
/// gave, if any), same created and end times, and the instance that issued the id as its
/// origin (it holds the app's side of the session now). The old id is retired: it resolves
/// for [`ROTATION_GRACE`] more, and a logout of the new id ends it at once.
async fn rotate_session(
    runtime: &Runtime,
    current: &ResolvedSession,
    new_hash: &SessionHash,
    identity: Option<Identity>,
    instance: &Instance,
) -> Result<(), StoreError> {
    let now = now_ms();
    let mut record = current.record.clone();
    if let Some(identity) = identity {
        record.identity = identity;
    }
    record.origin = Some(instance.name.clone());
    record.rotated_from = Some(current.hash.clone());
    record.family = Some(current.record.family(&current.hash).clone());
    record.retires_ms = None;
    // Out of the index first, so that a per-user cap does not count the old id.
    let store = &runtime.store;
    store
        .index_remove(&current.record.identity.user, &current.hash)
        .await?;
    store_session(runtime, new_hash, &record).await?;
    let mut retired = current.record.clone();
    let deadline = now + ROTATION_GRACE.as_millis() as u64;
    retired.retires_ms = Some(retired.retires_ms.map_or(deadline, |r| r.min(deadline)));
    let touch = runtime.config.session.touch_interval();
    store.save(&current.hash, &retired, now, touch).await
}

/// Stores a new session and indexes it under its user, ending the oldest beyond the cap.
pub(crate) async fn store_session(
    runtime: &Runtime,
    hash: &SessionHash,
    record: &SessionRecord,
) -> Result<(), StoreError> {
    let session = &runtime.config.session;
    let acknowledged = runtime
        .store
        .save_acknowledged(hash, record, now_ms(), session.touch_interval())
        .await?;
    if acknowledged == Some(false) {
        // Served anyway: refusing logins whenever a replica lags would turn a replica
        // problem into an outage. The session is lost only if the master fails before it
        // replicates; the counter shows how often that window was open.
        runtime.metrics.replica_wait_timeouts.inc();
        tracing::debug!(
            session = hash.short(),
            "new session not acknowledged by replicas within redis.wait_timeout"
        );
    }
    let evicted = users::register(
        &runtime.store,
        hash,
        record,
        session.max_sessions_per_user,
        session.absolute_lifetime,
        session.touch_interval(),
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
        rotated_from: None,
        retires_ms: None,
        family: None,
    }
}

/// Ends the request's sessions, the ids the current one replaced, and the other live ids of
/// its family (given by the app to parallel requests). In `redis` mode the keys are deleted;
/// while old stores may still hold the session (`overlap`, `legacy`), a marker stays so they
/// cannot bring it back, and the old stores that can be written are told too.
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
        let remember = runtime.config.session.absolute_lifetime;
        users::end_replaced_ids(&runtime.store, &current.record, remember).await?;
        end_family(runtime, route, current).await?;
    }
    for id in ids {
        let hash = id.hash();
        let held = current.is_some_and(|c| c.hash == hash);
        if end_session(runtime, route, &hash).await? && held {
            tracing::info!(session = hash.short(), "logout: session ended");
        } else {
            tracing::debug!(
                session = hash.short(),
                "logout of a session unstick did not hold: marked ended"
            );
        }
        if route.config.mode != Mode::Redis {
            for store in &route.old_stores {
                if let Err(e) = store.delete(id).await {
                    tracing::warn!(store = store.name(), error = %e, "logout not written to old store");
                }
            }
        }
    }
    Ok(())
}

/// Ends the user's other live ids of the current session's family, and the ids they replaced.
async fn end_family(
    runtime: &Runtime,
    route: &Route,
    current: &ResolvedSession,
) -> Result<(), StoreError> {
    let store = &runtime.store;
    let user = &current.record.identity.user;
    let family = current.record.family(&current.hash);
    let remember = runtime.config.session.absolute_lifetime;
    for (hash, record) in users::family_members(store, user, family, &current.hash).await? {
        store.index_remove(user, &hash).await?;
        users::end_replaced_ids(store, &record, remember).await?;
        end_session(runtime, route, &hash).await?;
    }
    Ok(())
}

/// Ends one session in the store, by mode (see [`end_sessions`]); `true` when it was there to
/// end (always, outside `redis` mode).
async fn end_session(
    runtime: &Runtime,
    route: &Route,
    hash: &SessionHash,
) -> Result<bool, StoreError> {
    match route.config.mode {
        Mode::Redis => runtime.store.delete(hash).await,
        Mode::Overlap | Mode::Legacy => {
            let remember = runtime.config.session.absolute_lifetime;
            runtime.store.end(hash, now_ms(), remember).await?;
            Ok(true)
        }
    }
}
