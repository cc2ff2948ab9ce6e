//! Finds the session a request belongs to, and its home: the instance that holds the app's
//! side of it. Where to look is the route's migration rule ([`crate::migration`]): Redis, then
//! the old stores where the mode asks them (a hit is copied forward).

use super::context::{RequestFacts, ResolvedSession, SessionRoute, Sessions};
use super::cookie::SessionId;
use super::device::device_label;
use super::old_store::{LookupContext, OldSession};
use super::record::{now_ms, SessionRecord};
use super::store::{IfAbsent, Loaded, StoreError};
use super::users::store_session_if_absent;
use crate::activity::Resolved;
use crate::config::SessionConfig;
use crate::migration::Mode;
use http::HeaderMap;
use std::sync::Arc;
use std::time::Instant;

/// How the session was found (or not), for metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    NoCookie,
    /// Found in Redis.
    Hit,
    /// Not in Redis (nor in any old store the mode asks).
    Miss,
    /// Logged out (this id): old stores were not asked, and the app is not sent the id.
    Ended(SessionId),
    /// Found in this old store and copied into Redis.
    CopiedForward(String),
    /// Redis could not answer on a route that does not require it; the request goes on as
    /// before unstick.
    StoreSkipped,
}

impl Outcome {
    /// `(outcome, store)` labels.
    pub fn labels(&self) -> (&'static str, &str) {
        match self {
            Outcome::NoCookie => ("no_cookie", ""),
            Outcome::Hit => ("hit", ""),
            Outcome::Miss => ("miss", ""),
            Outcome::Ended(_) => ("ended", ""),
            Outcome::CopiedForward(store) => ("copied_forward", store),
            Outcome::StoreSkipped => ("store_skipped", ""),
        }
    }

    /// How the dashboard counts a request that carried a session cookie, and, for the
    /// readiness sample, whether Redis holds its session now (`None`: no session a cutover
    /// could lose, or not known); `None` without a cookie. A miss where the old stores were
    /// asked too is anonymous in any mode; elsewhere the app may hold the session.
    pub fn resolved(&self, mode: Mode) -> Option<(Resolved, Option<bool>)> {
        match self {
            Outcome::NoCookie => None,
            Outcome::Hit => Some((Resolved::Redis, Some(true))),
            Outcome::CopiedForward(_) => Some((Resolved::CopiedForward, Some(true))),
            Outcome::Miss => Some((
                Resolved::Anonymous,
                (!mode.asks_old_stores_on_miss()).then_some(false),
            )),
            Outcome::Ended(_) => Some((Resolved::Anonymous, None)),
            Outcome::StoreSkipped => Some((Resolved::Unavailable, None)),
        }
    }
}

pub struct Resolution {
    pub session: Option<ResolvedSession>,
    /// The instance that holds the app's side of the session, when known. Looked up for a
    /// request without a live session only where the mode routes there.
    pub home: Option<String>,
    pub outcome: Outcome,
}

/// Resolves the session of a request with these session ids (in cookie order). A store error
/// on a route that requires the store is returned, never read as "no session": the caller
/// fails closed.
pub async fn resolve_session(
    sessions: &Sessions,
    route: &Arc<SessionRoute>,
    ids: &[SessionId],
    headers: &HeaderMap,
    facts: &RequestFacts,
) -> Result<Resolution, StoreError> {
    let mode = route.mode();
    if ids.is_empty() {
        return Ok(Resolution {
            session: None,
            home: home_without_session(sessions, route, ids, headers).await?,
            outcome: Outcome::NoCookie,
        });
    }
    let found = match find_in_store(sessions, ids).await {
        Ok(found) => found,
        Err(e) if !mode.requires_store() => {
            tracing::debug!(error = %e, "session store not answering on a route that does not require it; routing as before");
            return Ok(Resolution {
                session: None,
                home: carried_home(route, ids, headers),
                outcome: Outcome::StoreSkipped,
            });
        }
        Err(e) => return Err(e),
    };
    if let Found::Live(session) = found {
        return Ok(Resolution {
            home: session.record.origin.clone(),
            session: Some(*session),
            outcome: Outcome::Hit,
        });
    }
    let home = home_without_session(sessions, route, ids, headers).await?;
    if let Found::Ended(id) = found {
        return Ok(Resolution {
            session: None,
            home,
            outcome: Outcome::Ended(id),
        });
    }
    if mode.asks_old_stores_on_miss() {
        // Boxed: a rare branch whose future would otherwise enlarge every request's.
        let answer = Box::pin(ask_old_stores(sessions, route, ids, home.as_deref(), facts)).await?;
        match answer {
            OldStoreAnswer::Copied(session, store) => {
                return Ok(Resolution {
                    home: session.record.origin.clone().or(home),
                    session: Some(*session),
                    outcome: Outcome::CopiedForward(store),
                });
            }
            OldStoreAnswer::Ended(id) => {
                return Ok(Resolution {
                    session: None,
                    home,
                    outcome: Outcome::Ended(id),
                });
            }
            OldStoreAnswer::Missing => {}
        }
    } else if mode.warms(route.config.warm) {
        warm_in_background(sessions.clone(), route.clone(), ids, home.clone(), facts);
    }
    Ok(Resolution {
        session: None,
        home,
        outcome: Outcome::Miss,
    })
}

enum Found {
    Live(Box<ResolvedSession>),
    Ended(SessionId),
    Missing,
}

/// The first id with a live session in the store, else the first that ended. One round trip
/// per id tried. A live session wins over an ended one sent before it: a browser can keep the
/// cookie of a session that ended (another path or domain) beside a new login's, and the
/// ended one is then withheld as any other cookie of that name (`keep_only_session_cookie`).
async fn find_in_store(sessions: &Sessions, ids: &[SessionId]) -> Result<Found, StoreError> {
    let touch = sessions.settings.touch_interval();
    let mut ended = None;
    for id in ids {
        let hash = id.hash();
        match sessions.store.load(&hash, now_ms(), touch).await? {
            Loaded::Live(record) => {
                return Ok(Found::Live(Box::new(ResolvedSession {
                    id: id.clone(),
                    hash,
                    record,
                })))
            }
            Loaded::Ended => {
                ended.get_or_insert_with(|| id.clone());
            }
            Loaded::Missing => {}
        }
    }
    if let Some(id) = ended {
        return Ok(Found::Ended(id));
    }
    // An app that decodes its cookie reads an ended id escaped another way (`%61bc` for
    // `abc`) as that id: such a spelling stays withheld too. Ids without escapable bytes have
    // no other spelling, and cost no lookup here.
    for id in ids {
        for hash in id.escaped_variants() {
            if sessions.store.load(&hash, now_ms(), touch).await? == Loaded::Ended {
                return Ok(Found::Ended(id.clone()));
            }
        }
    }
    Ok(Found::Missing)
}

/// The home of a session unstick holds no record of, where the mode routes there: the
/// binding recorded when the app set the cookie, else what the request carries. On a route
/// that does not require the store, a store error falls back to what the request carries.
async fn home_without_session(
    sessions: &Sessions,
    route: &SessionRoute,
    ids: &[SessionId],
    headers: &HeaderMap,
) -> Result<Option<String>, StoreError> {
    if !route.mode().routes_to_home() {
        return Ok(None);
    }
    let recorded = match ids.first() {
        Some(id) => match sessions.store.binding(&id.hash()).await {
            Ok(binding) => binding,
            Err(_) if !route.mode().requires_store() => None,
            Err(e) => return Err(e),
        },
        None => None,
    };
    match recorded.filter(|instance| route.pool.instance(instance).is_some()) {
        Some(instance) => Ok(Some(instance)),
        None => Ok(carried_home(route, ids, headers)),
    }
}

/// The instance the request carries a binding to, before unstick has a record of it: a
/// route suffix in the session cookie, or the previous load balancer's sticky cookie.
fn carried_home(route: &SessionRoute, ids: &[SessionId], headers: &HeaderMap) -> Option<String> {
    let cookie_route = ids.iter().find_map(|id| id.route());
    route
        .pool
        .sticky_instance(cookie_route, headers)
        .map(|instance| instance.name.clone())
}

/// What the old stores answered for a request's ids.
enum OldStoreAnswer {
    /// Found in this old store and copied into the session store.
    Copied(Box<ResolvedSession>, String),
    /// Found, but the id ended while the old store was asked (a logout came first).
    Ended(SessionId),
    Missing,
}

/// Asks the route's old stores in order; the first hit is copied into the session store.
/// An old store that fails or times out is skipped (and counted): it must not stall requests.
async fn ask_old_stores(
    sessions: &Sessions,
    route: &SessionRoute,
    ids: &[SessionId],
    origin: Option<&str>,
    facts: &RequestFacts,
) -> Result<OldStoreAnswer, StoreError> {
    let context = LookupContext {
        pool: &route.pool,
        host: facts.host.as_deref(),
        origin,
    };
    for id in ids {
        for store in &route.old_stores {
            let name = store.name().to_string();
            let started = Instant::now();
            let found = store.lookup(id, &context).await;
            route
                .activity
                .old_store_lookup(started.elapsed(), found.is_err());
            match found {
                Ok(Some(old)) => {
                    sessions.metrics.outcome("fallback_hit", &name);
                    let Some(session) = copy_forward(sessions, id, old, origin, facts).await?
                    else {
                        return Ok(OldStoreAnswer::Ended(id.clone()));
                    };
                    tracing::info!(
                        session = session.hash.short(),
                        user = %session.record.identity.user,
                        store = %name,
                        "copied forward from old store"
                    );
                    return Ok(OldStoreAnswer::Copied(Box::new(session), name));
                }
                Ok(None) => sessions.metrics.outcome("fallback_miss", &name),
                Err(e) => {
                    sessions.metrics.outcome("old_store_error", &name);
                    tracing::warn!(store = %name, error = %e, "old store lookup failed");
                }
            }
        }
    }
    Ok(OldStoreAnswer::Missing)
}

/// The record of an old store's session copied into the session store, from `now_ms` on. It
/// keeps at least the lifetime it had left there, so no migrated session expires earlier
/// than it would have without unstick.
pub fn copied_record(
    settings: &SessionConfig,
    old: OldSession,
    now_ms: u64,
    origin: Option<&str>,
    device: Option<String>,
    client_ip: Option<String>,
) -> SessionRecord {
    // An old store's own word on how long the session has left, bounded as any lifetime.
    let remaining = old
        .remaining
        .unwrap_or_default()
        .min(crate::config::defaults::SESSION_LIFETIME_MAX);
    SessionRecord {
        identity: old.identity,
        created_ms: now_ms,
        expires_ms: now_ms + settings.absolute_lifetime.max(remaining).as_millis() as u64,
        idle_ms: settings.idle_timeout.max(remaining).as_millis() as u64,
        origin: old.origin.or_else(|| origin.map(String::from)),
        device,
        client_ip,
        rotated_from: None,
        retires_ms: None,
        family: None,
    }
}

/// Writes an old store's session into the session store (see [`copied_record`]) as the
/// pre-copy does: only where the store holds nothing for the id. The old store was asked
/// while the session store was not looking: a logout meanwhile left a marker, which wins
/// (`None`), and a copy by a parallel request is kept as it is.
async fn copy_forward(
    sessions: &Sessions,
    id: &SessionId,
    old: OldSession,
    origin: Option<&str>,
    facts: &RequestFacts,
) -> Result<Option<ResolvedSession>, StoreError> {
    let record = copied_record(
        &sessions.settings,
        old,
        now_ms(),
        origin,
        device_label(facts.user_agent.as_ref()),
        Some(facts.client_ip.to_string()),
    );
    let hash = id.hash();
    let record = match store_session_if_absent(sessions, &hash, &record, None, false).await? {
        IfAbsent::Written => record,
        IfAbsent::Present => {
            let touch = sessions.settings.touch_interval();
            match sessions.store.load(&hash, now_ms(), touch).await? {
                Loaded::Live(stored) => stored,
                Loaded::Ended | Loaded::Missing => return Ok(None),
            }
        }
        IfAbsent::Ended => return Ok(None),
    };
    Ok(Some(ResolvedSession {
        id: id.clone(),
        hash,
        record,
    }))
}

/// Warming: copy the session into Redis without delaying the request.
fn warm_in_background(
    sessions: Sessions,
    route: Arc<SessionRoute>,
    ids: &[SessionId],
    origin: Option<String>,
    facts: &RequestFacts,
) {
    let ids = ids.to_vec();
    let facts = facts.clone();
    tokio::spawn(async move {
        match ask_old_stores(&sessions, &route, &ids, origin.as_deref(), &facts).await {
            Ok(OldStoreAnswer::Copied(_, store)) => sessions.metrics.outcome("warmed", &store),
            Ok(OldStoreAnswer::Ended(_) | OldStoreAnswer::Missing) => {}
            Err(e) => tracing::debug!(error = %e, "warming skipped: session store unavailable"),
        }
    });
}
