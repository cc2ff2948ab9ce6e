//! Bulk pre-copy (`unstick migrate`): every session of a route's old stores that can be listed,
//! written into Redis before the cutover as a copy-forward on first use would write it, never
//! over a session Redis holds nor over an id that ended. Idempotent, so a rerun finishes the job.

use super::context::Sessions;
use super::cookie::SessionId;
use super::old_store::{Decoded, OldSession, OldStoreError};
use super::old_stores::{open_old_store, OldStoreHandle};
use super::record::now_ms;
use super::resolve::copied_record;
use super::store::{IfAbsent, SessionStore, StoreError};
use super::users::store_session_if_absent;
use crate::config::{Config, OldStoreConfig, OldStoreKind, PostgresFormat, StoreUrl};
use crate::metrics::Metrics;
use futures_util::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Sessions read per second when the operator gives no rate: a few minutes for a hundred
/// thousand sessions, a load neither store notices.
pub const DEFAULT_RATE: u32 = 500;

/// How a run goes.
#[derive(Debug, Clone, Copy)]
pub struct PrecopyOptions {
    /// Count what would happen; write nothing.
    pub dry_run: bool,
    /// Sessions read per second (0: no limit).
    pub rate: u32,
    /// Sessions written at once.
    pub concurrency: usize,
    /// Sessions read from an old store per request.
    pub batch: usize,
}

impl Default for PrecopyOptions {
    fn default() -> PrecopyOptions {
        PrecopyOptions {
            dry_run: false,
            rate: DEFAULT_RATE,
            concurrency: 8,
            batch: 100,
        }
    }
}

/// What happened to the sessions listed so far (in a dry run: what would have).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrecopyCounts {
    pub listed: u64,
    /// Written into Redis (in a dry run: would be).
    pub copied: u64,
    /// Redis holds a session of that id already (newer, or copied by an earlier run).
    pub already_present: u64,
    /// The id ended (a logout unstick recorded): never brought back.
    pub ended: u64,
    /// Past its lifetime in the old store.
    pub expired: u64,
    /// The old store's payload could not be read.
    pub unreadable: u64,
    /// A session nobody is logged in to: nothing to copy.
    pub anonymous: u64,
}

/// How a run ended; the counts say how far it got.
#[derive(Debug)]
pub enum PrecopyEnd {
    Finished,
    /// Stopped by the operator; what was written is complete, and a rerun finishes the job.
    Interrupted,
    /// Stopped by a store that failed; a rerun goes on from there.
    Failed(PrecopyError),
}

#[derive(Debug)]
pub struct PrecopySummary {
    pub counts: PrecopyCounts,
    pub end: PrecopyEnd,
}

#[derive(Debug, thiserror::Error)]
pub enum PrecopyError {
    #[error("no route {route:?} in the config. Fix: pass --route with a route named by host and path prefix, as metrics name them; its routes: {known}")]
    UnknownRoute { route: String, known: String },
    #[error("route {route} asks no old stores, so there is nothing to pre-copy. Fix: name the route's old stores in its old_stores")]
    NoOldStores { route: String },
    #[error("route {route} has no old store that can be listed: {reasons}")]
    NothingToList { route: String, reasons: String },
    #[error("redis.url is memory://: that store lives inside the running proxy. Fix: pre-copy into the Redis the proxy uses (redis.url = \"redis://...\")")]
    MemoryStore,
    #[error("session store not reachable: {0}. Fix: check redis.url and that Redis answers (`unstick check`)")]
    StoreUnreachable(StoreError),
    #[error(transparent)]
    OldStore(#[from] OldStoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A route's listable old stores and the session store, opened for a pre-copy.
pub struct Precopy {
    pub route: String,
    sessions: Sessions,
    stores: Vec<OldStoreHandle>,
    /// Why each of the route's other old stores is not read.
    pub unlisted: Vec<String>,
}

/// Why an old store cannot be listed, or `None` when it can.
fn unlistable(handle: &OldStoreHandle, config: &OldStoreConfig) -> Option<String> {
    if handle.list(1).is_some() {
        return None;
    }
    let kind = match &config.kind {
        OldStoreKind::Whoami { .. } => "kind whoami",
        OldStoreKind::Postgres {
            format: PostgresFormat::Custom { .. },
            ..
        } => "kind postgres with a custom lookup_query",
        OldStoreKind::Redis { .. } => "kind redis",
        OldStoreKind::Postgres { .. } => "kind postgres",
        OldStoreKind::PhpFiles { .. } => "kind php-files",
    };
    Some(format!(
        "old store {} ({kind}) cannot be listed; its sessions are copied forward on first use instead",
        config.name
    ))
}

impl Precopy {
    /// Finds the route (by host and path prefix, as metrics name it), opens its old stores
    /// and the session store, and checks that Redis answers.
    pub async fn open(config: &Config, route: &str) -> Result<Precopy, PrecopyError> {
        let Some(found) = config.routes.iter().find(|r| r.label() == route) else {
            let known: Vec<String> = config.routes.iter().map(|r| r.label()).collect();
            return Err(PrecopyError::UnknownRoute {
                route: route.to_string(),
                known: known.join(", "),
            });
        };
        if found.old_stores.is_empty() {
            return Err(PrecopyError::NoOldStores {
                route: route.to_string(),
            });
        }
        if config.store.url == StoreUrl::Memory {
            return Err(PrecopyError::MemoryStore);
        }
        let mut stores = Vec::new();
        let mut unlisted = Vec::new();
        // Validation made every name an old store of the config.
        let configs = found
            .old_stores
            .iter()
            .filter_map(|name| config.old_stores.iter().find(|o| &o.name == name));
        for old in configs {
            let handle = open_old_store(old, &config.session.cookie_name).await?;
            match unlistable(&handle, old) {
                None => stores.push(handle),
                Some(reason) => unlisted.push(reason),
            }
        }
        if stores.is_empty() {
            return Err(PrecopyError::NothingToList {
                route: route.to_string(),
                reasons: unlisted.join("; "),
            });
        }
        let store = SessionStore::connect(&config.store).await?;
        store.ping().await.map_err(PrecopyError::StoreUnreachable)?;
        Ok(Precopy {
            route: route.to_string(),
            sessions: Sessions {
                store,
                settings: Arc::new(config.session.clone()),
                identity: Arc::new(config.identity.clone()),
                metrics: Arc::new(Metrics::new()),
            },
            stores,
            unlisted,
        })
    }

    /// The summary for the operator: one line per count, then the old stores not read.
    pub fn report(&self, counts: &PrecopyCounts, dry_run: bool) -> String {
        let mut text = format!("pre-copy of route {}", self.route);
        text.push_str(if dry_run {
            " (dry run: nothing written)\n"
        } else {
            "\n"
        });
        let copied = if dry_run { "would copy" } else { "copied" };
        for (label, value) in [
            ("listed", counts.listed),
            (copied, counts.copied),
            ("already present", counts.already_present),
            ("ended (logged out)", counts.ended),
            ("expired", counts.expired),
            ("unreadable", counts.unreadable),
            ("anonymous (no user)", counts.anonymous),
        ] {
            text.push_str(&format!("  {:<20}{value}\n", format!("{label}:")));
        }
        for reason in &self.unlisted {
            text.push_str(&format!("  not listed: {reason}\n"));
        }
        text
    }

    /// Copies every listed session, in the route's order of old stores (a session in two is
    /// taken from the first, as a lookup would). `progress` is told the counts as they change;
    /// when `stop` completes, no new session is started, the ones being written finish, and
    /// the run ends as [`PrecopyEnd::Interrupted`].
    pub async fn run(
        &self,
        options: PrecopyOptions,
        progress: &(dyn Fn(&PrecopyCounts) + Sync),
        stop: impl Future<Output = ()>,
    ) -> PrecopySummary {
        let mut run = Run {
            counts: PrecopyCounts::default(),
            writes: JoinSet::new(),
            failure: None,
            unreadable_logged: 0,
        };
        tokio::pin!(stop);
        let mut pace = Pace::new(options.rate);
        let mut end = PrecopyEnd::Finished;
        'stores: for store in &self.stores {
            let Some(mut listing) = store.list(options.batch.max(1)) else {
                continue;
            };
            loop {
                let page = tokio::select! {
                    biased;
                    () = &mut stop => { end = PrecopyEnd::Interrupted; break 'stores; }
                    page = listing.next() => page,
                };
                let page = match page {
                    None => break,
                    Some(Ok(page)) => page,
                    Some(Err(e)) => {
                        run.failure.get_or_insert(PrecopyError::OldStore(e));
                        break 'stores;
                    }
                };
                for listed in page {
                    let interrupted = tokio::select! {
                        biased;
                        () = &mut stop => true,
                        () = pace.wait() => false,
                    };
                    if interrupted {
                        end = PrecopyEnd::Interrupted;
                        break 'stores;
                    }
                    run.counts.listed += 1;
                    match listed.session {
                        Decoded::Session(old) => {
                            while run.writes.len() >= options.concurrency.max(1) {
                                run.settle_one().await;
                            }
                            if run.failure.is_some() {
                                break 'stores;
                            }
                            let sessions = self.sessions.clone();
                            run.writes
                                .spawn(copy(sessions, listed.id, old, options.dry_run));
                        }
                        Decoded::Anonymous => run.counts.anonymous += 1,
                        Decoded::Expired => run.counts.expired += 1,
                        Decoded::Unreadable(reason) => {
                            run.counts.unreadable += 1;
                            run.log_unreadable(store.name(), &listed.id, &reason);
                        }
                    }
                    progress(&run.counts);
                }
            }
        }
        // Every write started is finished, whatever stopped the run: each is complete or absent.
        while !run.writes.is_empty() {
            run.settle_one().await;
            progress(&run.counts);
        }
        if let Some(failure) = run.failure {
            end = PrecopyEnd::Failed(failure);
        }
        PrecopySummary {
            counts: run.counts,
            end,
        }
    }
}

/// The state of one run: counts, the writes under way, the first failure.
struct Run {
    counts: PrecopyCounts,
    writes: JoinSet<Result<IfAbsent, StoreError>>,
    failure: Option<PrecopyError>,
    unreadable_logged: usize,
}

/// Unreadable sessions whose reason is logged (at debug); the rest are only counted.
const UNREADABLE_SAMPLES: usize = 5;

impl Run {
    /// Waits for one write to finish and counts it.
    async fn settle_one(&mut self) {
        let Some(done) = self.writes.join_next().await else {
            return;
        };
        match done {
            Ok(Ok(IfAbsent::Written)) => self.counts.copied += 1,
            Ok(Ok(IfAbsent::Present)) => self.counts.already_present += 1,
            Ok(Ok(IfAbsent::Ended)) => self.counts.ended += 1,
            Ok(Err(e)) => {
                self.failure.get_or_insert(PrecopyError::Store(e));
            }
            // A write task panicked: nothing was counted for it; a rerun covers it.
            Err(e) => {
                self.failure
                    .get_or_insert(PrecopyError::Store(StoreError::Refused(e.to_string())));
            }
        }
    }

    fn log_unreadable(&mut self, store: &str, id: &SessionId, reason: &str) {
        if self.unreadable_logged < UNREADABLE_SAMPLES {
            self.unreadable_logged += 1;
            tracing::debug!(
                store,
                session = id.hash().short(),
                reason,
                "unreadable session in old store; not copied"
            );
        }
    }
}

/// Writes one session as a copy-forward would, unless Redis holds that id already.
async fn copy(
    sessions: Sessions,
    id: SessionId,
    old: OldSession,
    dry_run: bool,
) -> Result<IfAbsent, StoreError> {
    let lasts = old.remaining;
    let record = copied_record(&sessions.settings, old, now_ms(), None, None, None);
    store_session_if_absent(&sessions, &id.hash(), &record, lasts, dry_run).await
}

/// Spaces sessions `1 / rate` seconds apart on average. Behind schedule (a slow store), it
/// catches up by at most [`Pace::CATCH_UP`], never in one burst.
struct Pace {
    period: Option<Duration>,
    next: Instant,
}

impl Pace {
    const CATCH_UP: Duration = Duration::from_millis(50);

    fn new(rate: u32) -> Pace {
        Pace {
            period: (rate > 0).then(|| Duration::from_secs(1) / rate),
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        if let Some(at) = self.slot(Instant::now()) {
            tokio::time::sleep_until(at).await;
        }
    }

    /// When the next session may start, given the time now (`None`: at once), and books it.
    fn slot(&mut self, now: Instant) -> Option<Instant> {
        let period = self.period?;
        if now > self.next + Self::CATCH_UP {
            self.next = now - Self::CATCH_UP;
        }
        let at = self.next;
        self.next += period;
        (at > now).then_some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_spaces_sessions_and_catches_up_only_a_little() {
        let mut pace = Pace::new(100);
        let start = pace.next;
        let slots: Vec<Option<Instant>> = (0..200).map(|_| pace.slot(start)).collect();
        assert_eq!(slots[0], None, "the first starts at once");
        assert_eq!(slots[1], Some(start + Duration::from_millis(10)));
        assert_eq!(slots[199], Some(start + Duration::from_millis(1990)));
        // Far behind schedule (a slow store): a few sessions at once, then the rate again.
        let late = start + Duration::from_secs(10);
        let at_once = (0..20).take_while(|_| pace.slot(late).is_none()).count();
        assert_eq!(
            at_once, 6,
            "the one due now and 50 ms of catching up at 100/s"
        );
        let mut unlimited = Pace::new(0);
        assert!((0..1000).all(|_| unlimited.slot(start).is_none()));
    }
}
