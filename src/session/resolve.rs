//! Finds the session a request belongs to, according to its route's migration mode, and the
//! instance the request should prefer.
//!
//! - `redis`: Redis only.
//! - `overlap`: Redis; on a miss the route's old stores in order; a hit is copied forward.
//! - `legacy`: sticky to the owner as before; Redis is asked but never required.

use super::capture::{store_session, RequestFacts};
use super::cookie::{SessionHash, SessionId};
use super::old_store::{LookupContext, OldSession};
use super::record::{now_ms, SessionRecord};
use super::store::{Loaded, StoreError};
use crate::config::Mode;
use crate::runtime::{Route, Runtime};
use http::HeaderMap;
use std::sync::Arc;

/// A request's live session.
#[derive(Debug, Clone)]
pub struct ResolvedSession {
    pub id: SessionId,
    pub hash: SessionHash,
    pub record: SessionRecord,
}

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
    /// Legacy mode: Redis could not answer; the request goes on as before unstick.
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
}

pub struct Resolution {
    pub session: Option<ResolvedSession>,
    /// The instance to prefer while healthy (sticky), if the mode wants one.
    pub origin: Option<String>,
    pub outcome: Outcome,
}

/// Resolves the session of a request with these session ids (in cookie order). A store error
/// on a Redis-backed mode is returned, never read as "no session": the caller fails closed.
pub async fn resolve_session(
    runtime: &Arc<Runtime>,
    route: &Arc<Route>,
    ids: &[SessionId],
    headers: &HeaderMap,
    facts: &RequestFacts,
) -> Result<Resolution, StoreError> {
    let mode = route.config.mode;
    if ids.is_empty() {
        return Ok(Resolution {
            session: None,
            origin: origin_without_session(runtime, route, ids, headers).await?,
            outcome: Outcome::NoCookie,
        });
    }
    let found = match (mode, find_in_store(runtime, ids).await) {
        (_, Ok(found)) => found,
        (Mode::Legacy, Err(e)) => {
            tracing::debug!(error = %e, "legacy route: session store not answering; routing as before");
            return Ok(Resolution {
                session: None,
                origin: sticky_origin(route, ids, headers),
                outcome: Outcome::StoreSkipped,
            });
        }
        (_, Err(e)) => return Err(e),
    };
    if let Found::Live(session) = found {
        let origin = match mode {
            Mode::Redis => None,
            Mode::Overlap | Mode::Legacy => session.record.origin.clone(),
        };
        return Ok(Resolution {
            session: Some(*session),
            origin,
            outcome: Outcome::Hit,
        });
    }
    let origin = origin_without_session(runtime, route, ids, headers).await?;
    if let Found::Ended(id) = found {
        return Ok(Resolution {
            session: None,
            origin,
            outcome: Outcome::Ended(id),
        });
    }
    match mode {
        // Boxed: a rare branch whose future would otherwise enlarge every request's.
        Mode::Overlap => match Box::pin(ask_old_stores(
            runtime,
            route,
            ids,
            origin.as_deref(),
            facts,
        ))
        .await?
        {
            Some((session, store)) => Ok(Resolution {
                origin: session.record.origin.clone().or(origin),
                session: Some(session),
                outcome: Outcome::CopiedForward(store),
            }),
            None => Ok(Resolution {
                session: None,
                origin,
                outcome: Outcome::Miss,
            }),
        },
        Mode::Legacy | Mode::Redis => {
            if mode == Mode::Legacy && route.config.warm {
                warm_in_background(runtime.clone(), route.clone(), ids, origin.clone(), facts);
            }
            Ok(Resolution {
                session: None,
                origin,
                outcome: Outcome::Miss,
            })
        }
    }
}

enum Found {
    Live(Box<ResolvedSession>),
    Ended(SessionId),
    Missing,
}

/// The first id with a live (or ended) session in the store. One round trip per id tried.
async fn find_in_store(runtime: &Runtime, ids: &[SessionId]) -> Result<Found, StoreError> {
    let session = &runtime.config.session;
    for id in ids {
        let hash = id.hash();
        match runtime
            .store
            .load(&hash, now_ms(), session.touch_interval())
            .await?
        {
            Loaded::Live(record) => {
                return Ok(Found::Live(Box::new(ResolvedSession {
                    id: id.clone(),
                    hash,
                    record,
                })))
            }
            Loaded::Ended => return Ok(Found::Ended(id.clone())),
            Loaded::Missing => {}
        }
    }
    Ok(Found::Missing)
}

/// Where a request without a live session goes. `redis`: any instance. `overlap`: the
/// instance bound to the session (see [`known_origin`]). `legacy`: the same, but a Redis that
/// does not answer never fails the request; what the request carries decides then.
async fn origin_without_session(
    runtime: &Runtime,
    route: &Route,
    ids: &[SessionId],
    headers: &HeaderMap,
) -> Result<Option<String>, StoreError> {
    match route.config.mode {
        Mode::Redis => Ok(None),
        Mode::Overlap => known_origin(runtime, route, ids, headers).await,
        Mode::Legacy => Ok(known_origin(runtime, route, ids, headers)
            .await
            .unwrap_or_else(|_| sticky_origin(route, ids, headers))),
    }
}

/// The instance that holds a session unstick has no record of: the binding recorded when the
/// app set the cookie, else what the request carries (cookie route, balancer cookie).
async fn known_origin(
    runtime: &Runtime,
    route: &Route,
    ids: &[SessionId],
    headers: &HeaderMap,
) -> Result<Option<String>, StoreError> {
    if let Some(id) = ids.first() {
        if let Some(instance) = runtime.store.binding(&id.hash()).await? {
            if route.pool.instance(&instance).is_some() {
                return Ok(Some(instance));
            }
        }
    }
    Ok(sticky_origin(route, ids, headers))
}

/// The instance the request carries a binding to, before unstick has a record of it.
fn sticky_origin(route: &Route, ids: &[SessionId], headers: &HeaderMap) -> Option<String> {
    let cookie_route = ids.iter().find_map(|id| id.route());
    route
        .pool
        .sticky_instance(cookie_route, headers)
        .map(|instance| instance.name.clone())
}

/// Asks the route's old stores in order; the first hit is copied into the session store.
/// An old store that fails or times out is skipped (and counted): it must not stall requests.
async fn ask_old_stores(
    runtime: &Runtime,
    route: &Route,
    ids: &[SessionId],
    origin: Option<&str>,
    facts: &RequestFacts,
) -> Result<Option<(ResolvedSession, String)>, StoreError> {
    let context = LookupContext {
        pool: &route.pool,
        host: facts.host.as_deref(),
        origin,
    };
    for id in ids {
        for store in &route.old_stores {
            let name = store.name().to_string();
            match store.lookup(id, &context).await {
                Ok(Some(old)) => {
                    runtime.metrics.outcome("fallback_hit", &name);
                    let session = copy_forward(runtime, id, old, origin, facts).await?;
                    tracing::info!(
                        session = session.hash.short(),
                        user = %session.record.identity.user,
                        store = %name,
                        "copied forward from old store"
                    );
                    return Ok(Some((session, name)));
                }
                Ok(None) => runtime.metrics.outcome("fallback_miss", &name),
                Err(e) => {
                    runtime.metrics.outcome("old_store_error", &name);
                    tracing::warn!(store = %name, error = %e, "old store lookup failed");
                }
            }
        }
    }
    Ok(None)
}

/// Writes an old store's session into the session store. It keeps at least the lifetime it
/// had left there, so no migrated session expires earlier than it would have without unstick.
async fn copy_forward(
    runtime: &Runtime,
    id: &SessionId,
    old: OldSession,
    origin: Option<&str>,
    facts: &RequestFacts,
) -> Result<ResolvedSession, StoreError> {
    let session = &runtime.config.session;
    let now = now_ms();
    let remaining = old.remaining.unwrap_or_default();
    let record = SessionRecord {
        identity: old.identity,
        created_ms: now,
        expires_ms: now + session.absolute_lifetime.max(remaining).as_millis() as u64,
        idle_ms: session.idle_timeout.max(remaining).as_millis() as u64,
        origin: old.origin.or_else(|| origin.map(String::from)),
        user_agent: facts.user_agent.clone(),
        client_ip: Some(facts.client_ip.to_string()),
        rotated_from: None,
        retires_ms: None,
        family: None,
    };
    let hash = id.hash();
    store_session(runtime, &hash, &record).await?;
    Ok(ResolvedSession {
        id: id.clone(),
        hash,
        record,
    })
}

/// Legacy mode with warming: copy the session into Redis without delaying the request.
fn warm_in_background(
    runtime: Arc<Runtime>,
    route: Arc<Route>,
    ids: &[SessionId],
    origin: Option<String>,
    facts: &RequestFacts,
) {
    let ids = ids.to_vec();
    let facts = facts.clone();
    tokio::spawn(async move {
        match ask_old_stores(&runtime, &route, &ids, origin.as_deref(), &facts).await {
            Ok(Some((_, store))) => runtime.metrics.outcome("warmed", &store),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "warming skipped: session store unavailable"),
        }
    });
}
