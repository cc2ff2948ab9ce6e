//! The app's own "who am I" endpoint as an old store: the session's cookie sent to the
//! instance that holds it, and the identity read from the answer.

use crate::config::{IdentityMapping, OldStoreConfig, OldStoreKind, WhoamiFormat};
use crate::session::cookie::{SessionHash, SessionId};
use crate::session::old_store::{LookupContext, OldSession, OldStore, OldStoreError};
use crate::session::record::Identity;
use crate::session::whoami::{ask_whoami, WhoamiCall, WhoamiError};
use crate::upstream::{Instance, UpstreamPool};
use async_trait::async_trait;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The app's own "who am I" endpoint. Asked on the instance that holds the session; when that
/// is unknown, on the healthy instances a few at a time (the first that names a user wins).
/// A cookie no instance knows is remembered as a miss for a while, so junk cookies cannot make
/// every request fan out.
pub struct WhoamiStore {
    name: String,
    path: String,
    format: WhoamiFormat,
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
            format,
            fanout_concurrency,
            miss_ttl,
        } = &config.kind
        else {
            return None;
        };
        Some(WhoamiStore {
            name: config.name.clone(),
            path: path.clone(),
            format: format.clone(),
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
            format: &self.format,
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
