//! The HTTPS listener: the same proxy pipeline as the plain listener, over rustls (ring), with
//! ALPN `h2` and `http/1.1`. The PEM certificate chain and key are read at start (a bad file
//! stops the start, naming the file) and re-read whenever they change: a change in their
//! directories (certbot and Kubernetes secrets replace files rather than write them) or, as a
//! fallback, a periodic check. A new pair is swapped in whole for the next handshakes; a bad
//! one is logged and the previous certificate stays.

use crate::config::TlsListenerConfig;
use crate::proxy::Proxy;
use crate::server::connections::ConnectionLimits;
use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Fallback re-check of the files, for file systems whose changes are not reported.
const POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Writers replace a pair in several steps: wait for the burst to settle.
const SETTLE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} file {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid TLS {what} file {path}: {reason}")]
    Invalid {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS key file {key} does not belong to the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a PEM certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or SEC1) and
/// checks that they belong together.
fn parse_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let invalid = |what: &'static str, path: &Path, reason: String| TlsError::Invalid {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate", cert_path, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(
            "certificate",
            cert_path,
            "no PEM CERTIFICATE block".to_string(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| invalid("key", key_path, format!("no usable PEM private key ({e})")))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid("key", key_path, e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Compares the key's public half with the leaf's, parsing the leaf on the way.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        }),
        Err(e) => Err(invalid("certificate", cert_path, e.to_string())),
    }
}

/// A short fingerprint of the leaf certificate, for logs.
fn fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|c| crate::hex_string(&Sha256::digest(c.as_ref())[..8]))
        .unwrap_or_default()
}

/// Hands every handshake the certificate that is current at that moment.
#[derive(Debug)]
struct SwappableCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The listener's certificate and key files, what was last read from them, and the live pair.
pub struct TlsCertificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    live: Arc<SwappableCert>,
    /// SHA-256 of the cert and key file bytes last read, good or bad: a bad pair is reported
    /// once, not at every check.
    last_seen: Mutex<[u8; 32]>,
}

fn digest_of(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((cert_pem.len() as u64).to_be_bytes());
    hasher.update(cert_pem);
    hasher.update(key_pem);
    hasher.finalize().into()
}

impl TlsCertificates {
    /// Reads and checks the pair; the error names the file at fault.
    pub fn load(config: &TlsListenerConfig) -> Result<Arc<TlsCertificates>, TlsError> {
        let cert_pem = read("certificate", &config.cert)?;
        let key_pem = read("key", &config.key)?;
        let pair = parse_pair(&config.cert, &cert_pem, &config.key, &key_pem)?;
        tracing::info!(cert = %config.cert.display(), fingerprint = %fingerprint(&pair), "TLS certificate loaded");
        Ok(Arc::new(TlsCertificates {
            cert_path: config.cert.clone(),
            key_path: config.key.clone(),
            live: Arc::new(SwappableCert(ArcSwap::from_pointee(pair))),
            last_seen: Mutex::new(digest_of(&cert_pem, &key_pem)),
        }))
    }

    /// A rustls server config that always serves the live pair; ALPN h2, then http/1.1.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.live.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Re-reads the files. `Ok(true)`: a new pair is live; `Ok(false)`: the files did not
    /// change since the last read; `Err`: they changed but are unusable, the old pair stays.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert_pem = read("certificate", &self.cert_path)?;
        let key_pem = read("key", &self.key_path)?;
        let digest = digest_of(&cert_pem, &key_pem);
        {
            let mut last = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
            if *last == digest {
                return Ok(false);
            }
            *last = digest;
        }
        let pair = parse_pair(&self.cert_path, &cert_pem, &self.key_path, &key_pem)?;
        let fingerprint = fingerprint(&pair);
        self.live.0.store(Arc::new(pair));
        tracing::info!(cert = %self.cert_path.display(), %fingerprint, "TLS certificate reloaded");
        Ok(true)
    }

    async fn reload_and_report(self: &Arc<Self>) {
        let certs = self.clone();
        match tokio::task::spawn_blocking(move || certs.reload()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(
                error = %e,
                "TLS certificate reload failed; still serving the previous certificate"
            ),
            Err(e) => tracing::error!(error = %e, "TLS certificate reload task failed"),
        }
    }

    /// Watches the files' directories and re-checks them periodically, until the process ends.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut directories: Vec<PathBuf> = [&self.cert_path, &self.key_path]
            .iter()
            .map(|path| match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        directories.dedup();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if let Ok(event) = event {
                if !event.kind.is_access() {
                    let _ = tx.send(());
                }
            }
        })
        .and_then(|mut watcher| {
            for dir in &directories {
                watcher.watch(dir, RecursiveMode::NonRecursive)?;
            }
            Ok(watcher)
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the TLS certificate files; re-checking them every {POLL_INTERVAL:?}");
                None
            }
        };
        let certs = self.clone();
        tokio::spawn(async move {
            let _watcher = watcher; // lives as long as this task
            let mut poll = tokio::time::interval(POLL_INTERVAL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            poll.tick().await; // the first tick is immediate; the files were just read
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        if event.is_none() {
                            // The watcher is gone; polling goes on.
                            poll.tick().await;
                        } else {
                            tokio::time::sleep(SETTLE).await;
                            while rx.try_recv().is_ok() {}
                        }
                    }
                    _ = poll.tick() => {}
                }
                certs.reload_and_report().await;
            }
        });
    }
}

/// Serves HTTPS until `shutdown` completes, then waits up to `grace` for open requests. The
/// handshake and the first request head together must arrive within the header timeout.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    proxy: Arc<Proxy>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: ConnectionLimits,
) {
    let acceptor = TlsAcceptor::from(tls);
    let builder = Arc::new(super::connection_builders());
    super::accept_until(
        listener,
        "https",
        shutdown,
        grace,
        limits,
        move |stream, client, accepted| {
            let (acceptor, builder, proxy) = (acceptor.clone(), builder.clone(), proxy.clone());
            // The handshake runs in the connection's task: a slow client holds up no one, and
            // shutdown waits for handshakes in progress too.
            async move {
                let deadline = accepted.at + accepted.limits.header_timeout;
                let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, %client, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%client, "TLS handshake timed out");
                        return;
                    }
                };
                super::serve_proxied(&builder, proxy, stream, client, "https", accepted).await;
            }
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_and_invalid_files_are_named() {
        let dir = std::env::temp_dir().join(format!("unstick-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let config = TlsListenerConfig {
            address: "127.0.0.1:0".parse().unwrap(),
            cert: cert.clone(),
            key: key.clone(),
        };
        let Err(e) = TlsCertificates::load(&config) else {
            panic!("missing files accepted")
        };
        assert!(e.to_string().contains("cert.pem"), "{e}");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let Err(e) = TlsCertificates::load(&config) else {
            panic!("garbage accepted")
        };
        assert!(e.to_string().contains("cert.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
