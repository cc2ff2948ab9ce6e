//! What resolving and capturing work with, and nothing more: the session store and settings
//! shared by every route ([`Sessions`]), one route's migration and instances
//! ([`SessionRoute`]), and the facts of one request ([`RequestFacts`], [`ResolvedSession`]).

use super::cookie::{SessionHash, SessionId};
use super::old_stores::OldStoreHandle;
use super::record::SessionRecord;
use super::store::SessionStore;
use crate::activity::RouteActivity;
use crate::config::{IdentityConfig, RouteConfig, SessionConfig};
use crate::metrics::Metrics;
use crate::migration::Mode;
use crate::upstream::UpstreamPool;
use http::HeaderValue;
use std::net::IpAddr;
use std::sync::Arc;

/// The session store with the settings every route shares. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    pub store: SessionStore,
    pub settings: Arc<SessionConfig>,
    pub identity: Arc<IdentityConfig>,
    pub metrics: Arc<Metrics>,
}

/// A route as the session layer sees it: its migration mode and rules, the app instances
/// that hold the app's side of sessions, and the old stores to ask.
pub struct SessionRoute {
    pub config: RouteConfig,
    pub pool: Arc<UpstreamPool>,
    /// Asked in order on a miss (overlap) or for warming (legacy).
    pub old_stores: Vec<OldStoreHandle>,
    /// What the dashboard shows of the route; outlives reloads.
    pub activity: Arc<RouteActivity>,
}

impl SessionRoute {
    pub fn mode(&self) -> Mode {
        self.config.mode
    }
}

/// Facts about the request that a new session record keeps.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    /// As app servers route it ([`crate::config::values::routed_path`]), for `logout_paths`
    /// and `login_paths`.
    pub path: String,
    pub host: Option<String>,
    /// The header as sent; a record keeps only its [`super::device::device_label`].
    pub user_agent: Option<HeaderValue>,
    pub client_ip: IpAddr,
}

/// A request's live session.
#[derive(Debug, Clone)]
pub struct ResolvedSession {
    pub id: SessionId,
    pub hash: SessionHash,
    pub record: SessionRecord,
}
