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

use super::context::{RequestFacts, ResolvedSession, SessionRoute, Sessions};
use super::cookie::{
    parse_session_cookie, remove_session_set_cookies, session_cookie_change, CookieChange,
    SessionHash, SessionId,
};
use super::device::device_label;
use super::mapping::identity_from_json;
use super::record::{now_ms, Identity, SessionRecord};
use super::store::StoreError;
use super::users::{self, store_session};
use super::whoami::{ask_whoami, WhoamiCall, WhoamiError};
use crate::config::{CaptureSource, UnexplainedCookieChange};
use crate::migration::LogoutWrite;
use crate::upstream::Instance;
use http::{HeaderMap, StatusCode};
use std::time::Duration;

/// How long an id the app replaced still resolves: requests the browser sent before it saw
/// the new cookie (a page's parallel requests) must not arrive as anonymous.
const ROTATION_GRACE: Duration = Duration::from_secs(30);

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

#[derive(Clone)]
pub struct NewCookie {
    pub id: SessionId,
    /// The cookie value as the browser will send it (for the whoami call).
    pub cookie_value: String,
    /// Max-Age/Expires of a persistent ("remember me") cookie.
    pub cookie_lifetime: Option<Duration>,
}

/// The value is a bearer credential: hidden, as [`SessionId`]'s `Debug` hides the id.
impl std::fmt::Debug for NewCookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewCookie")
            .field("id", &self.id)
            .field("cookie_value", &"<hidden>")
            .field("cookie_lifetime", &self.cookie_lifetime)
            .finish()
    }
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

/// Where a response's session event is recorded: the session layer and route, the request's
/// facts and the instance that answered it.
#[derive(Clone, Copy)]
pub struct Recorder<'a> {
    pub sessions: &'a Sessions,
    pub route: &'a SessionRoute,
    pub facts: &'a RequestFacts,
    pub instance: &'a Instance,
}

/// Reads what a response asks of unstick; a cleared cookie that is housekeeping is taken out.
/// `resolved`: the request carried a session unstick holds. No I/O.
pub fn read_response(
    sessions: &Sessions,
    route: &SessionRoute,
    facts: &RequestFacts,
    status: StatusCode,
    headers: &mut HeaderMap,
    resolved: bool,
) -> ResponseSignals {
    let identity = &sessions.identity;
    let logout_everywhere = headers.contains_key(&identity.logout_all_header);
    let header_identity = match &identity.capture {
        CaptureSource::ResponseHeader { header } => headers
            .get(header)
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v.as_bytes()).ok())
            .and_then(|doc| identity_from_json(&doc, &identity.mapping)),
        CaptureSource::Whoami { .. } => None,
    };
    let answered = status.is_success() || status.is_redirection();
    let logout = headers.contains_key(&identity.logout_header)
        || (answered && route.config.logout_paths.contains(&facts.path));
    let login_path = answered && route.config.login_paths.contains(&facts.path);
    let cookie_name = &sessions.settings.cookie_name;
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
            match parse_session_cookie(&value, &sessions.settings.id_format) {
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
    at: &Recorder<'_>,
    signals: ResponseSignals,
    current: Option<&ResolvedSession>,
    ids: &[SessionId],
) -> Result<(), CaptureError> {
    let Recorder { sessions, .. } = *at;
    let mut current = current;
    if signals.logout_everywhere {
        if let Some(session) = current {
            let remember = sessions.settings.absolute_lifetime;
            let ended =
                users::revoke_user(&sessions.store, &session.record.identity.user, remember)
                    .await?;
            sessions.metrics.sessions_revoked.inc_by(ended as u64);
            // The current session is among them; a new cookie in this response starts afresh.
            current = None;
        }
    }
    // A login that kept the session id is looked for only where the route says logins happen
    // (each look is a call to the app), and only for a session unstick does not hold yet.
    let kept_id_login = signals.login_path && current.is_none();
    match signals.event {
        SessionEvent::ClearKept => {
            sessions.metrics.cookie_change("clear_kept");
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
            sessions.metrics.cookie_change(change);
            Ok(end_sessions(sessions, at.route, ids, current).await?)
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
            Box::pin(new_cookie(at, *new, identity, current)).await
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
                Box::pin(new_cookie(at, kept, identity, current)).await
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
    at: &Recorder<'_>,
    new: NewCookie,
    header_identity: Option<Identity>,
    current: Option<&ResolvedSession>,
) -> Result<(), CaptureError> {
    let Recorder {
        sessions,
        route,
        instance,
        ..
    } = *at;
    let hash = new.id.hash();
    if current.is_some_and(|c| c.hash == hash) {
        // The same session re-sent (rolling cookies, re-encrypted values): nothing new.
        return Ok(());
    }
    if route.mode().binds_new_cookies() {
        // While the app still holds sessions itself, the next request must find this
        // instance again, whether or not an identity can be read.
        let lifetime = sessions.settings.absolute_lifetime;
        sessions.store.bind(&hash, &instance.name, lifetime).await?;
    }
    let identity = new_cookie_identity(at, &new, header_identity).await;
    let Some(current) = current else {
        let identity = identity.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "login seen but its identity could not be read; not stored");
            None
        });
        if let Some(identity) = identity {
            store_login(at, &hash, identity, new.cookie_lifetime).await?;
        }
        return Ok(());
    };
    let user = &current.record.identity.user;
    match identity? {
        Some(identity) if identity.user != *user => {
            // Another user logged in on this browser: the old session ends now.
            end_current(sessions, route, current).await?;
            store_login(at, &hash, identity, new.cookie_lifetime).await?;
        }
        Some(identity) => {
            if !rotate_session(sessions, current, &hash, Some(identity), instance).await? {
                return Ok(());
            }
            sessions.metrics.cookie_change("rotated");
            tracing::info!(session = hash.short(), previous = current.hash.short(), %user, "session id rotated by the app; identity refreshed");
        }
        None if route.config.unexplained_cookie_change == UnexplainedCookieChange::EndSession => {
            sessions.metrics.cookie_change("logout");
            end_current(sessions, route, current).await?;
        }
        None => {
            if !rotate_session(sessions, current, &hash, None, instance).await? {
                return Ok(());
            }
            sessions.metrics.cookie_change("rebound");
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
    at: &Recorder<'_>,
    new: &NewCookie,
    header_identity: Option<Identity>,
) -> Result<Option<Identity>, WhoamiError> {
    let identity = &at.sessions.identity;
    match &identity.capture {
        CaptureSource::ResponseHeader { .. } => Ok(header_identity),
        CaptureSource::Whoami {
            path,
            timeout,
            format,
        } => {
            let call = WhoamiCall {
                path,
                cookie_name: &at.sessions.settings.cookie_name,
                cookie_value: &new.cookie_value,
                host: at.facts.host.as_deref(),
                timeout: *timeout,
                format,
                mapping: &identity.mapping,
            };
            ask_whoami(&at.route.pool, at.instance, &call).await
        }
    }
}

/// A new session record for a login, stored and indexed.
async fn store_login(
    at: &Recorder<'_>,
    hash: &SessionHash,
    identity: Identity,
    cookie_lifetime: Option<Duration>,
) -> Result<(), StoreError> {
    let record = new_record(at, identity, cookie_lifetime);
    store_session(at.sessions, hash, &record).await?;
    at.sessions.metrics.cookie_change("login");
    tracing::info!(session = hash.short(), user = %record.identity.user, instance = %at.instance.name, "login: session stored");
    Ok(())
}

/// The app's new id takes the request's session over: same user (with the identity the app
/// gave, if any), same created and end times, and the instance that issued the id as its
/// origin (it holds the app's side of the session now). The old id is retired: it resolves
/// for [`ROTATION_GRACE`] more, and a logout of the new id ends it at once.
///
/// `false`: the old id ended while the response was on its way (a logout in another tab, a
/// revoke), so the new one is ended too rather than carrying the session on.
async fn rotate_session(
    sessions: &Sessions,
    current: &ResolvedSession,
    new_hash: &SessionHash,
    identity: Option<Identity>,
    instance: &Instance,
) -> Result<bool, StoreError> {
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
    let store = &sessions.store;
    store
        .index_remove(&current.record.identity.user, &current.hash)
        .await?;
    // The new id is stored and indexed before the old one is retired: a revoke that comes
    // after the retirement finds the new id in the index, and one that came before leaves
    // nothing live to retire.
    store_session(sessions, new_hash, &record).await?;
    let mut retired = current.record.clone();
    let deadline = now + ROTATION_GRACE.as_millis() as u64;
    retired.retires_ms = Some(retired.retires_ms.map_or(deadline, |r| r.min(deadline)));
    let touch = sessions.settings.touch_interval();
    if store
        .save_if_live(&current.hash, &retired, now, touch)
        .await?
    {
        return Ok(true);
    }
    let user = &record.identity.user;
    store.index_remove(user, new_hash).await?;
    let remember = sessions.settings.absolute_lifetime;
    // A marker, not a deletion: the instance that issued the new id holds it as a login.
    store.end(new_hash, now, remember).await?;
    tracing::info!(
        session = new_hash.short(),
        previous = current.hash.short(),
        "the app re-issued the id of a session that ended meanwhile; the new id is ended too"
    );
    Ok(false)
}

fn new_record(
    at: &Recorder<'_>,
    identity: Identity,
    cookie_lifetime: Option<Duration>,
) -> SessionRecord {
    let settings = &at.sessions.settings;
    let now = now_ms();
    // A persistent ("remember me") cookie keeps the lifetime the app gave it.
    let lifetime = cookie_lifetime.unwrap_or(Duration::ZERO);
    let idle = settings.idle_timeout.max(lifetime);
    let absolute = settings.absolute_lifetime.max(lifetime);
    SessionRecord {
        identity,
        created_ms: now,
        expires_ms: now + absolute.as_millis() as u64,
        idle_ms: idle.as_millis() as u64,
        origin: Some(at.instance.name.clone()),
        device: device_label(at.facts.user_agent.as_ref()),
        client_ip: Some(at.facts.client_ip.to_string()),
        rotated_from: None,
        retires_ms: None,
        family: None,
    }
}

/// Ends the session the request resolved (see [`end_sessions`]).
async fn end_current(
    sessions: &Sessions,
    route: &SessionRoute,
    current: &ResolvedSession,
) -> Result<(), StoreError> {
    end_sessions(
        sessions,
        route,
        std::slice::from_ref(&current.id),
        Some(current),
    )
    .await
}

/// Ends the request's sessions, the ids the current one replaced, and the other live ids of
/// its family (given by the app to parallel requests). In `redis` mode the keys are deleted;
/// while old stores may still hold the session (`overlap`, `legacy`), a marker stays so they
/// cannot bring it back, and the old stores that can be written are told too.
async fn end_sessions(
    sessions: &Sessions,
    route: &SessionRoute,
    ids: &[SessionId],
    current: Option<&ResolvedSession>,
) -> Result<(), StoreError> {
    if let Some(current) = current {
        sessions
            .store
            .index_remove(&current.record.identity.user, &current.hash)
            .await?;
        let remember = sessions.settings.absolute_lifetime;
        users::end_replaced_ids(&sessions.store, &current.record, remember).await?;
        end_family(sessions, route, current).await?;
    }
    for id in ids {
        let hash = id.hash();
        let held = current.is_some_and(|c| c.hash == hash);
        if end_session(sessions, route, &hash).await? && held {
            tracing::info!(session = hash.short(), "logout: session ended");
        } else {
            tracing::debug!(
                session = hash.short(),
                "logout of a session unstick did not hold: marked ended"
            );
        }
        if route.mode().binds_new_cookies() {
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
    sessions: &Sessions,
    route: &SessionRoute,
    current: &ResolvedSession,
) -> Result<(), StoreError> {
    let store = &sessions.store;
    let user = &current.record.identity.user;
    let family = current.record.family(&current.hash);
    let remember = sessions.settings.absolute_lifetime;
    for (hash, record) in users::family_members(store, user, family, &current.hash).await? {
        store.index_remove(user, &hash).await?;
        users::end_replaced_ids(store, &record, remember).await?;
        end_session(sessions, route, &hash).await?;
    }
    Ok(())
}

/// Ends one session in the store, by mode (see [`end_sessions`]); `true` when it was there to
/// end (always, outside `redis` mode).
async fn end_session(
    sessions: &Sessions,
    route: &SessionRoute,
    hash: &SessionHash,
) -> Result<bool, StoreError> {
    match route.mode().logout_write() {
        LogoutWrite::Delete => sessions.store.delete(hash).await,
        LogoutWrite::EndedMarker => {
            let remember = sessions.settings.absolute_lifetime;
            sessions.store.end(hash, now_ms(), remember).await?;
            Ok(true)
        }
    }
}
