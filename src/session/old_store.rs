//! Old stores: where the app kept its sessions before unstick. During a migration a Redis miss
//! asks them, in order, and a hit is copied forward into Redis. Each kind implements
//! [`OldStore`]; the first kind is the app's own whoami endpoint.

use super::cookie::SessionHash;
use super::cookie::SessionId;
use super::old_stores::{timed_out, ForeignRedisStore, PgFormat, PhpFilesStore, PostgresStore};
use super::record::Identity;
use super::whoami::{ask_whoami, WhoamiCall, WhoamiError};
use crate::config::{IdentityMapping, OldStoreConfig, OldStoreKind, PostgresFormat};
use crate::upstream::{Instance, UpstreamPool};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The app's own "who am I" endpoint. Asked on the instance that holds the session; when that
/// is unknown, on the healthy instances a few at a time (the first that names a user wins).
/// A cookie no instance knows is remembered as a miss for a while, so junk cookies cannot make
/// every request fan out.
pub struct WhoamiStore {
    name: String,
    path: String,
    cookie_name: String,
    timeout: Duration,
    mapping: IdentityMapping,
    fanout_concurrency: usize,
    misses: MissCache,
}

impl WhoamiStore {
    pub fn new(config: &OldStoreConfig, cookie_name: &str) -> Option<WhoamiStore> {
        let OldStoreKind::Whoami {
            path,
            fanout_concurrency,
            miss_ttl,
        } = &config.kind
        else {
            return None;
        };
        Some(WhoamiStore {
            name: config.name.clone(),
            path: path.clone(),
            cookie_name: cookie_name.to_string(),
            timeout: config.timeout,
            mapping: config.mapping.clone(),
            fanout_concurrency: *fanout_concurrency,
            misses: MissCache::new(*miss_ttl),
        })
    }

    async fn ask(
        &self,
        pool: &UpstreamPool,
        instance: &Instance,
        id: &SessionId,
        host: Option<&str>,
    ) -> Result<Option<Identity>, WhoamiError> {
        let call = WhoamiCall {
            path: &self.path,
            cookie_name: &self.cookie_name,
            cookie_value: id.cookie_value(),
            host,
            timeout: self.timeout,
            mapping: &self.mapping,
        };
        ask_whoami(pool, instance, &call).await
    }
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
        let hash = id.hash();
        if self.misses.contains(&hash) {
            return Ok(None);
        }
        let pool = context.pool;
        let found = match context.origin.and_then(|name| pool.instance(name)) {
            // The owner is known: only it can hold an in-memory session.
            Some(origin) => self
                .ask(pool, origin, id, context.host)
                .await?
                .map(|identity| (identity, origin.name.clone())),
            None => {
                let healthy: Vec<Arc<Instance>> = pool
                    .instances()
                    .iter()
                    .filter(|i| pool.is_healthy(i))
                    .cloned()
                    .collect();
                let mut answers = futures_util::stream::iter(healthy)
                    .map(|instance| async move {
                        let answer = self.ask(pool, &instance, id, context.host).await;
                        (answer, instance.name.clone())
                    })
                    .buffer_unordered(self.fanout_concurrency);
                let mut found = None;
                let mut last_error = None;
                while let Some((answer, instance)) = answers.next().await {
                    match answer {
                        Ok(Some(identity)) => {
                            found = Some((identity, instance));
                            break;
                        }
                        Ok(None) => {}
                        Err(e) => last_error = Some(e),
                    }
                }
                match (found, last_error) {
                    (Some(found), _) => Some(found),
                    // Some instance could not answer: it may hold the session, so no miss is remembered.
                    (None, Some(e)) => return Err(e.into()),
                    (None, None) => None,
                }
            }
        };
        match found {
            Some((identity, origin)) => Ok(Some(OldSession {
                identity,
                remaining: None,
                origin: Some(origin),
            })),
            None => {
                self.misses.insert(hash);
                Ok(None)
            }
        }
    }
}

/// Session hashes recently found in no old store, with when they were found missing.
pub struct MissCache {
    ttl: Duration,
    entries: Mutex<HashMap<SessionHash, Instant>>,
}

/// Beyond this many remembered misses the oldest knowledge is dropped (memory stays bounded).
const MAX_REMEMBERED_MISSES: usize = 100_000;

impl MissCache {
    pub fn new(ttl: Duration) -> MissCache {
        MissCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    pub fn contains(&self, hash: &SessionHash) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(hash).is_some_and(|at| at.elapsed() < self.ttl)
    }

    pub fn insert(&self, hash: SessionHash) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_REMEMBERED_MISSES {
            entries.retain(|_, at| at.elapsed() < self.ttl);
            if entries.len() >= MAX_REMEMBERED_MISSES {
                entries.clear();
            }
        }
        entries.insert(hash, Instant::now());
    }
}

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
