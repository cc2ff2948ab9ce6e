//! The kinds of old store and opening one: the app's whoami endpoint, another Redis
//! (connect-redis, phpredis), PostgreSQL (connect-pg-simple, Django) and PHP session files.
//! Payload formats the kinds share (PHP serialize, Django signing) are their own modules.

pub mod django;
pub mod foreign_redis;
pub mod php_files;
pub mod php_serialize;
pub mod postgres;
pub mod whoami;

pub use foreign_redis::{ForeignFormat, ForeignRedisStore};
pub use php_files::PhpFilesStore;
pub use postgres::{PgFormat, PostgresStore};
pub use whoami::WhoamiStore;

use super::cookie::SessionId;
use super::old_store::{timed_out, Listing, LookupContext, OldSession, OldStore, OldStoreError};
use crate::config::{OldStoreConfig, OldStoreKind, PostgresFormat};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// An opened old store with its lookup bound.
#[derive(Clone)]
pub struct OldStoreHandle {
    store: Arc<dyn OldStore>,
    timeout: Duration,
}

impl OldStoreHandle {
    pub fn name(&self) -> &str {
        self.store.name()
    }

    /// A lookup that gives up after the store's timeout: a slow old store must not stall requests.
    pub async fn lookup(
        &self,
        id: &SessionId,
        context: &LookupContext<'_>,
    ) -> Result<Option<OldSession>, OldStoreError> {
        self.bounded(self.store.lookup(id, context)).await
    }

    pub async fn delete(&self, id: &SessionId) -> Result<(), OldStoreError> {
        self.bounded(self.store.delete(id)).await
    }

    /// Every session of the store, in batches (see [`OldStore::list`]); `None` when the store
    /// cannot be listed. Each call to the store within is bounded by the store itself.
    pub fn list(&self, batch: usize) -> Option<Listing<'_>> {
        self.store.list(batch)
    }

    async fn bounded<T>(
        &self,
        operation: impl Future<Output = Result<T, OldStoreError>>,
    ) -> Result<T, OldStoreError> {
        tokio::time::timeout(self.timeout, operation)
            .await
            .unwrap_or_else(|_| Err(timed_out(self.name(), self.timeout)))
    }
}

/// Opens the old store a config describes (connecting where the kind needs a connection).
pub async fn open_old_store(
    config: &OldStoreConfig,
    cookie_name: &str,
) -> Result<OldStoreHandle, OldStoreError> {
    let store = open_store_kind(config, cookie_name).await?;
    Ok(OldStoreHandle {
        store,
        timeout: config.timeout,
    })
}

async fn open_store_kind(
    config: &OldStoreConfig,
    cookie_name: &str,
) -> Result<Arc<dyn OldStore>, OldStoreError> {
    match &config.kind {
        OldStoreKind::Whoami { .. } => WhoamiStore::new(config, cookie_name)
            .map(|store| Arc::new(store) as Arc<dyn OldStore>)
            .ok_or_else(|| OldStoreError::Unavailable {
                store: config.name.clone(),
                reason: "not a whoami store".into(),
            }),
        OldStoreKind::Redis {
            url,
            key_template,
            format,
        } => {
            let store = ForeignRedisStore::connect(
                &config.name,
                url,
                key_template,
                *format,
                config.mapping.clone(),
                config.timeout,
            )
            .await?;
            Ok(Arc::new(store))
        }
        OldStoreKind::Postgres {
            url,
            format,
            table,
            secret_keys,
        } => {
            let format = match format {
                PostgresFormat::ConnectPgSimple => PgFormat::ConnectPgSimple {
                    table: table.clone(),
                },
                PostgresFormat::Django => PgFormat::Django {
                    secret_keys: secret_keys.clone(),
                    table: table.clone(),
                },
                PostgresFormat::Custom { lookup, delete } => PgFormat::Custom {
                    lookup: lookup.clone(),
                    delete: delete.clone(),
                },
            };
            let store = PostgresStore::connect(
                &config.name,
                url,
                format,
                config.mapping.clone(),
                config.timeout,
            )
            .await?;
            Ok(Arc::new(store))
        }
        OldStoreKind::PhpFiles {
            dir,
            file_prefix,
            gc_maxlifetime,
        } => Ok(Arc::new(PhpFilesStore::new(
            &config.name,
            dir.clone(),
            file_prefix,
            *gc_maxlifetime,
            config.mapping.clone(),
        ))),
    }
}
