//! A real Django app (tests/apps/django_app.py) on Django's own server, with database
//! sessions in a PostgreSQL database of the test's own. Needs `python3` with the packages in
//! tests/apps/requirements.txt.

use super::{free_port, PgDatabase};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The app's `SECRET_KEY`, with which its database sessions are signed.
pub const DJANGO_SECRET_KEY: &str = "unstick-test-django-secret-key-0123456789";

/// How the app trusts the identity unstick injects (`X-Auth-User`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DjangoTrust {
    /// A view reads the header when the app's own session has no user; no session is written.
    Header,
    /// Django's `RemoteUserMiddleware`, which logs the header's user into a fresh session
    /// (and out again on a request without the header).
    RemoteUser,
    /// Django's `PersistentRemoteUserMiddleware`: as above, but a request without the header
    /// keeps the session's login.
    PersistentRemoteUser,
}

impl DjangoTrust {
    fn as_str(self) -> &'static str {
        match self {
            DjangoTrust::Header => "header",
            DjangoTrust::RemoteUser => "remote-user",
            DjangoTrust::PersistentRemoteUser => "persistent-remote-user",
        }
    }
}

pub struct DjangoApp {
    pub address: SocketAddr,
    child: Child,
    /// Holds the server's log (one line per request: a pipe nobody reads would fill up).
    _log_dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apps/django_app.py")
}

impl DjangoApp {
    /// Creates Django's tables (sessions, users) in `database`.
    pub fn migrate(database: &PgDatabase) {
        let output = Command::new("python3")
            .arg(script())
            .args(["migrate", database.name()])
            .output()
            .expect("python3 must be installed");
        assert!(
            output.status.success(),
            "Django migrate failed (the tests need `pip install -r tests/apps/requirements.txt`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts an instance named `instance` (shown in its answers) on `address` or a free port.
    pub async fn start(
        database: &PgDatabase,
        instance: &str,
        trust: DjangoTrust,
        address: Option<SocketAddr>,
    ) -> DjangoApp {
        let address = address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log_path = log_dir.path().join("django.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new("python3")
            .arg(script())
            .args(["serve", &address.port().to_string(), database.name()])
            .args([instance, trust.as_str()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("python3 must be installed");
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return DjangoApp {
                    address,
                    child,
                    _log_dir: log_dir,
                };
            }
            if child.try_wait().expect("try_wait").is_some() {
                panic!(
                    "Django app {instance} exited:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        panic!("Django app {instance} did not listen on {address}");
    }

    /// Stops the process: its in-flight requests and connections end with it.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DjangoApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
