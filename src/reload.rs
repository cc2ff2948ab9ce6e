//! Hot reload: on SIGHUP or a change in the config file's directory (editors and Kubernetes
//! ConfigMaps replace files rather than write them), the file is parsed, validated and built
//! into a new runtime, then swapped in whole. A bad file is rejected with its key and line and
//! the running config stays.

use crate::config::{load_config, Config, ConfigError, ListenerConfig};
use crate::live::LiveState;
use crate::metrics::{ConfigLabels, Metrics, ResultLabels};
use crate::proxy::Proxy;
use crate::session::old_store::OldStoreError;
use crate::session::{SessionStore, StoreError};
use notify::{RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `[listener]` settings that differ and are read only at start: the sockets, the
/// connection limits and the shutdown grace. `trust_forwarded_headers` and `body_timeout` are not
/// among them: each request reads them from the running config.
fn restart_only_changes(running: &ListenerConfig, new: &ListenerConfig) -> Vec<&'static str> {
    // Destructured, so that a new setting must be sorted into one kind or the other.
    let ListenerConfig {
        address,
        shutdown_grace,
        trust_forwarded_headers: _,
        body_timeout: _,
        header_timeout,
        idle_timeout,
        max_connections,
        runtime,
        tls,
    } = new;
    [
        ("listener.address", running.address == *address),
        (
            "listener.shutdown_grace",
            running.shutdown_grace == *shutdown_grace,
        ),
        (
            "listener.header_timeout",
            running.header_timeout == *header_timeout,
        ),
        (
            "listener.idle_timeout",
            running.idle_timeout == *idle_timeout,
        ),
        (
            "listener.max_connections",
            running.max_connections == *max_connections,
        ),
        ("listener.runtime", running.runtime == *runtime),
        ("listener.tls", running.tls == *tls),
    ]
    .into_iter()
    .filter(|(_, same)| !same)
    .map(|(key, _)| key)
    .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the new session store could not be opened: {0}")]
    Store(#[from] StoreError),
    #[error("the new Redis ({0}) is not reachable; keeping the running config")]
    StoreUnreachable(String),
    #[error(transparent)]
    OldStore(#[from] OldStoreError),
}

pub struct Reloader {
    path: PathBuf,
    proxy: Arc<Proxy>,
    metrics: Arc<Metrics>,
}

impl Reloader {
    pub fn new(path: &Path, proxy: Arc<Proxy>, metrics: Arc<Metrics>) -> Arc<Reloader> {
        Arc::new(Reloader {
            path: path.to_path_buf(),
            proxy,
            metrics,
        })
    }

    /// Records the config that is active now (at start and after each reload).
    pub fn mark_active(&self, config: &Config) {
        self.metrics.config_info.clear();
        self.metrics
            .config_info
            .get_or_create(&ConfigLabels {
                hash: config.source_hash.clone(),
            })
            .set(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics.config_loaded_seconds.set(now);
    }

    /// Loads, validates and swaps in the config file. On error nothing changes.
    pub async fn reload(&self) -> Result<bool, ReloadError> {
        let config = load_config(&self.path)?;
        let running = self.proxy.live();
        if config.source_hash == running.config.source_hash {
            return Ok(false);
        }
        let restart_only = restart_only_changes(&running.config.listener, &config.listener);
        if !restart_only.is_empty() {
            tracing::warn!(
                "{} changed in {}: that takes a restart; the rest of the config is applied",
                restart_only.join(", "),
                self.path.display()
            );
        }
        if config.admin != running.config.admin {
            tracing::warn!(
                "[admin] changed in {}: that takes a restart",
                self.path.display()
            );
        }
        // The Redis client is kept unless its settings changed; a new one must connect first.
        let store = if config.store == running.config.store {
            running.sessions.store.clone()
        } else {
            let store = SessionStore::connect(&config.store)
                .await?
                .observed_by(self.metrics.clone());
            if !store.is_connected() {
                return Err(ReloadError::StoreUnreachable(config.store.url.redacted()));
            }
            store
        };
        let live =
            LiveState::build(config.clone(), store, self.metrics.clone(), Some(&running)).await?;
        self.proxy.replace(live);
        self.mark_active(&config);
        Ok(true)
    }

    async fn reload_and_report(&self, trigger: &str) {
        let result = match self.reload().await {
            Ok(true) => {
                tracing::info!(trigger, file = %self.path.display(), hash = %self.proxy.live().config.source_hash, "config reloaded");
                "ok"
            }
            Ok(false) => return,
            Err(e) => {
                tracing::error!(trigger, error = %e, "config reload rejected; the running config stays");
                "failed"
            }
        };
        self.metrics
            .config_reloads
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Reloads on SIGHUP and on changes in the config file's directory, until the process ends.
    pub fn spawn_watchers(self: &Arc<Self>) {
        #[cfg(unix)]
        {
            let reloader = self.clone();
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut hangup) = signal(SignalKind::hangup()) else {
                    tracing::warn!("cannot listen for SIGHUP; reload on file change only");
                    return;
                };
                while hangup.recv().await.is_some() {
                    reloader.reload_and_report("SIGHUP").await;
                }
            });
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let file_name = self.path.file_name().map(|n| n.to_os_string());
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                // Our file, or a ConfigMap's `..data` symlink swap.
                let ours = event.paths.iter().any(|p| {
                    p.file_name().map(|n| n.to_os_string()) == file_name
                        || p.to_string_lossy().contains("..data")
                });
                if ours && !event.kind.is_access() {
                    let _ = tx.send(());
                }
            }
        });
        let directory = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let watcher =
            watcher.and_then(|mut w| w.watch(&directory, RecursiveMode::NonRecursive).map(|_| w));
        let watcher = match watcher {
            Ok(watcher) => watcher,
            Err(e) => {
                tracing::warn!(error = %e, dir = %directory.display(), "cannot watch the config directory; reload with SIGHUP");
                return;
            }
        };
        let reloader = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher; // lives as long as this task
            while rx.recv().await.is_some() {
                // Editors write in several steps: wait for the burst to settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
                while rx.try_recv().is_ok() {}
                reloader.reload_and_report("file change").await;
            }
        });
    }
}
