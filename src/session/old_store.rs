//! Old stores: where the app kept its sessions before unstick. During a migration a Redis miss
//! asks them, in order, and a hit is copied forward into Redis. Each kind implements
//! [`OldStore`]; the first kind is the app's own whoami endpoint.

use super::cookie::SessionId;
use super::record::Identity;
use super::whoami::{ask_whoami, WhoamiCall, WhoamiError};
use crate::config::IdentityMapping;
use crate::upstream::UpstreamPool;
use async_trait::async_trait;
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
}

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
}

/// The app's own "who am I" endpoint on the instance that holds the session.
pub struct WhoamiStore {
    pub name: String,
    pub path: String,
    pub cookie_name: String,
    pub timeout: Duration,
    pub mapping: IdentityMapping,
}

#[async_trait]
impl OldStore for WhoamiStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(
        &self,
        id: &SessionId,
        context: &LookupContext<'_>,
    ) -> Result<Option<OldSession>, OldStoreError> {
        let Some(instance) = context.origin.and_then(|name| context.pool.instance(name)) else {
            return Ok(None);
        };
        let call = WhoamiCall {
            path: &self.path,
            cookie_name: &self.cookie_name,
            cookie_value: id.cookie_value(),
            host: context.host,
            timeout: self.timeout,
            mapping: &self.mapping,
        };
        let identity = ask_whoami(context.pool, instance, &call).await?;
        Ok(identity.map(|identity| OldSession {
            identity,
            remaining: None,
            origin: Some(instance.name.clone()),
        }))
    }
}
