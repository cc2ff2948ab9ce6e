//! What an old store is: where the app kept its sessions before unstick. During a migration a
//! Redis miss asks them, in order, and a hit is copied forward into Redis. Each kind in
//! [`super::old_stores`] implements [`OldStore`]; this module holds what the kinds share.

use super::cookie::SessionId;
use super::mapping::identity_from_json;
use super::record::Identity;
use super::whoami::WhoamiError;
use crate::config::IdentityMapping;
use crate::upstream::UpstreamPool;
use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde_json::Value;
use std::fmt::Display;
use std::time::Duration;

/// A session found in an old store.
#[derive(Debug, Clone)]
pub struct OldSession {
    pub identity: Identity,
    /// What is left of its lifetime there, when the store knows; the copy keeps it.
    pub remaining: Option<Duration>,
    /// The instance that holds it, when known.
    pub origin: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum OldStoreError {
    #[error(transparent)]
    Whoami(#[from] WhoamiError),
    #[error("old store {store}: {reason}")]
    Unavailable { store: String, reason: String },
    /// A setting the store cannot work with (bad URL, table name, key template).
    #[error("old store {store}: invalid setting: {reason}")]
    Invalid { store: String, reason: String },
}

/// What a stored session reads as: one reading for a lookup and for a listing.
#[derive(Debug)]
pub enum Decoded {
    Session(OldSession),
    /// A session nobody is logged in to: it names no user.
    Anonymous,
    /// Past its lifetime in the old store (or gone since it was listed).
    Expired,
    /// Cannot be read; the reason never holds the id.
    Unreadable(String),
}

impl Decoded {
    /// As a lookup answers: a session, or a miss (an unreadable one is logged first).
    pub(super) fn into_lookup(self, store: &str, id: &SessionId) -> Option<OldSession> {
        match self {
            Decoded::Session(session) => Some(session),
            Decoded::Unreadable(reason) => {
                unreadable(store, id, reason);
                None
            }
            Decoded::Anonymous | Decoded::Expired => None,
        }
    }
}

/// One session of a store's listing: its id (a credential: never logged) and its reading.
#[derive(Debug)]
pub struct Listed {
    pub id: SessionId,
    pub session: Decoded,
}

/// A store's sessions in batches, read in the store's own order.
pub type Listing<'a> = BoxStream<'a, Result<Vec<Listed>, OldStoreError>>;

/// What a lookup may use besides the session id.
pub struct LookupContext<'a> {
    pub pool: &'a UpstreamPool,
    /// The Host of the user's request.
    pub host: Option<&'a str>,
    /// The instance known to hold the session (cookie route, sticky cookie, recorded binding).
    pub origin: Option<&'a str>,
}

#[async_trait]
pub trait OldStore: Send + Sync {
    /// Name used in logs and metrics.
    fn name(&self) -> &str;

    /// `Ok(None)` is a miss; an error means the store could not say.
    async fn lookup(
        &self,
        id: &SessionId,
        context: &LookupContext<'_>,
    ) -> Result<Option<OldSession>, OldStoreError>;

    /// Ends the session in this store too (a logout during the migration), where the store can
    /// be written. The default is a store that cannot be written.
    async fn delete(&self, _id: &SessionId) -> Result<(), OldStoreError> {
        Ok(())
    }

    /// Every session the store holds, in batches of about `batch`, each read as
    /// [`OldStore::lookup`] reads it (for the bulk pre-copy). Nothing is read until the
    /// listing is polled. `None`: the store cannot be listed, which is the default.
    fn list(&self, _batch: usize) -> Option<Listing<'_>> {
        None
    }
}

pub(super) fn unavailable(store: &str, reason: impl Display) -> OldStoreError {
    OldStoreError::Unavailable {
        store: store.to_string(),
        reason: reason.to_string(),
    }
}

pub(super) fn invalid(store: &str, reason: impl Display) -> OldStoreError {
    OldStoreError::Invalid {
        store: store.to_string(),
        reason: reason.to_string(),
    }
}

pub(super) fn timed_out(store: &str, timeout: Duration) -> OldStoreError {
    unavailable(store, format_args!("no answer within {timeout:?}"))
}

/// The mapped identity of a decoded session; [`Decoded::Anonymous`] when it names no user,
/// which is a session the app has but nobody logged in to.
pub(super) fn found(
    doc: &Value,
    mapping: &IdentityMapping,
    remaining: Option<Duration>,
) -> Decoded {
    match identity_from_json(doc, mapping) {
        Some(identity) => Decoded::Session(OldSession {
            identity,
            remaining,
            origin: None,
        }),
        None => Decoded::Anonymous,
    }
}

/// A stored session we cannot read is not an identity: logged, then treated as a miss. The
/// raw id is never logged, only its hash.
pub(super) fn unreadable(store: &str, id: &SessionId, error: impl Display) {
    tracing::warn!(
        store,
        session = id.hash().short(),
        error = %error,
        "unreadable session in old store; treating it as a miss"
    );
}
