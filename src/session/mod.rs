//! Sessions: the app's cookie formats ([`cookie`]), what is kept per session ([`record`]),
//! where it is kept ([`store`]), how a request's session is found by migration mode
//! ([`resolve`]), where identity comes from ([`mapping`], [`whoami`], [`old_store`] and its
//! kinds in [`old_stores`]), how logins and logouts are seen in responses ([`capture`]), and a user's
//! sessions: index, revocation, cap ([`users`]).

pub mod capture;
pub mod cookie;
pub mod mapping;
pub mod old_store;
pub mod old_stores;
pub mod record;
pub mod resolve;
pub mod store;
pub mod users;
pub mod whoami;

pub use cookie::{SessionHash, SessionId};
pub use record::{Identity, SessionRecord};
pub use resolve::{resolve_session, ResolvedSession};
pub use store::{SessionStore, StoreError};
