//! What one request carries from phase to phase: the live state it started with, its route,
//! the facts the session layer needs, and what each phase found.

use super::headers::ClientAddress;
use crate::live::{LiveState, Route};
use crate::session::{RequestFacts, ResolvedSession, SessionId};
use http::HeaderValue;
use hyper::upgrade::OnUpgrade;
use std::sync::Arc;

pub struct RequestContext {
    /// One snapshot of the config for the whole request.
    pub live: Arc<LiveState>,
    pub route: Arc<Route>,
    /// A visible-ASCII token (the client's, when sane, or a random one).
    pub request_id: HeaderValue,
    pub client: ClientAddress,
    /// The listener's scheme, `http` or `https`.
    pub scheme: &'static str,
    pub facts: RequestFacts,
    /// The session ids the request carries, in cookie order; an id that resolved as ended is
    /// taken out with its cookie, so that these are the ids the app sees.
    pub session_ids: Vec<SessionId>,
    /// Several session cookies of different values came with the request.
    pub ambiguous_cookies: bool,
    /// The client's side of a protocol upgrade it asked for.
    pub client_upgrade: Option<OnUpgrade>,
    /// The request's live session, once resolved.
    pub session: Option<ResolvedSession>,
    /// The instance that holds the app's side of the session, when known.
    pub home: Option<String>,
}
