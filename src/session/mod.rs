//! Sessions, a layer below the proxy: the app's cookie formats ([`cookie`]), what is kept per
//! session ([`record`], [`device`]) and where ([`store`]), how a request's session is found ([`resolve`])
//! and how responses begin and end it ([`capture`]), where identity comes from ([`mapping`],
//! [`whoami`], old stores: [`old_store`] and its kinds in [`old_stores`]), and a user's
//! sessions: index, revocation, cap ([`users`]); copying an old store's sessions ahead of
//! the cutover ([`precopy`]). Resolve and capture take only what
//! [`context`] holds; this layer knows nothing of the proxy or the live config.

pub mod capture;
pub mod context;
pub mod cookie;
pub mod device;
pub mod mapping;
pub mod old_store;
pub mod old_stores;
pub mod precopy;
pub mod record;
pub mod resolve;
pub mod store;
pub mod users;
pub mod whoami;

pub use context::{RequestFacts, ResolvedSession, SessionRoute, Sessions};
pub use cookie::{SessionHash, SessionId};
pub use record::{Identity, SessionRecord};
pub use resolve::resolve_session;
pub use store::{SessionStore, StoreError};
