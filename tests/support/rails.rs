//! A real Rails 6.1 app (tests/apps/rails/config.ru) on Puma, with `cache_store` sessions in
//! each process's memory. Needs Debian's `ruby-rails` and `puma`.

use super::free_port;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The app's session cookie (`session_store :cache_store, key: ...`).
pub const RAILS_COOKIE: &str = "_legacy_session";

pub struct RailsApp {
    pub address: SocketAddr,
    child: Child,
    /// Holds Puma's and Rails' log (a pipe nobody reads would fill up).
    _log_dir: tempfile::TempDir,
}

fn app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apps/rails")
}

impl RailsApp {
    /// Starts an instance named `instance` (shown in its answers) on `address` or a free port.
    pub async fn start(instance: &str, address: Option<SocketAddr>) -> RailsApp {
        let address = address.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let log_dir = tempfile::tempdir().expect("temp dir");
        let log_path = log_dir.path().join("rails.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        // Production: classes loaded once, no reloader, no file watcher.
        let mut child = Command::new("puma")
            .current_dir(app_dir())
            .args([
                "--bind",
                &format!("tcp://{address}"),
                "--quiet",
                "config.ru",
            ])
            .env("RAILS_ENV", "production")
            .env("INSTANCE", instance)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("puma must be installed (Debian: ruby-rails puma)");
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(address).await.is_ok() {
                return RailsApp {
                    address,
                    child,
                    _log_dir: log_dir,
                };
            }
            if child.try_wait().expect("try_wait").is_some() {
                panic!(
                    "Rails app {instance} exited:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "Rails app {instance} did not listen on {address}:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
}

impl Drop for RailsApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
