//! A real Laravel 8 app (tests/apps/laravel) on PHP's built-in server: Laravel's own
//! `EncryptCookies` and `StartSession`, sessions in the file driver. Needs `php` (8.x) and
//! Debian's `php-laravel-framework` (Laravel 8.83, loaded from /usr/share/php).

use super::free_port;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The app's `APP_KEY` (AES-256-CBC), with which Laravel encrypts its session cookie.
pub const LARAVEL_APP_KEY: &str = "base64:dW5zdGljay10ZXN0LWxhcmF2ZWwtYXBwLWtleS0zMiE=";

pub struct LaravelApp {
    pub address: SocketAddr,
    child: Child,
    /// Holds the server's log and Laravel's package and service caches.
    _dir: tempfile::TempDir,
}

fn app_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/apps/laravel")
}

impl LaravelApp {
    /// Starts an instance named `instance` (shown in its answers) on `address` or a free port,
    /// keeping its session files in `sessions`.
    pub async fn start(instance: &str, sessions: &Path, address: Option<SocketAddr>) -> LaravelApp {
        let port = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut listen = address.unwrap_or_else(port);
        for _ in 0..50 {
            match Self::try_start(instance, sessions, listen).await {
                Ok(app) => return app,
                // A restart rebinds the old port: the old workers may hold it a moment longer.
                // A new instance takes another port: something else took that one.
                Err(log) if log.contains("Address already in use") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if address.is_none() {
                        listen = port();
                    }
                }
                Err(log) => panic!("Laravel app {instance} exited:\n{log}"),
            }
        }
        panic!("Laravel app {instance} could not listen on {listen}");
    }

    async fn try_start(
        instance: &str,
        sessions: &Path,
        address: SocketAddr,
    ) -> Result<LaravelApp, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("php.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut child = Command::new("php")
            .args(["-S", &address.to_string(), "-t", "public"])
            .current_dir(app_dir())
            // The built-in server answers one request at a time without workers.
            .env("PHP_CLI_SERVER_WORKERS", "4")
            .env("APP_KEY", LARAVEL_APP_KEY)
            .env("APP_INSTANCE", instance)
            .env("SESSION_FILES", sessions)
            // Laravel writes these caches at boot; not into the source tree.
            .env("APP_PACKAGES_CACHE", dir.path().join("packages.php"))
            .env("APP_SERVICES_CACHE", dir.path().join("services.php"))
            // Its own process group: the workers outlive a killed parent otherwise.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("php must be installed");
        let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        for _ in 0..300 {
            // Exited before listening, so before forking any worker.
            if child.try_wait().expect("try_wait").is_some() {
                return Err(read_log());
            }
            // Its own word that it listens: a connection could reach another process.
            if read_log().contains("Development Server") {
                let app = LaravelApp {
                    address,
                    child,
                    _dir: dir,
                };
                app.check_answers(instance).await;
                return Ok(app);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        kill_group(&mut child);
        panic!("Laravel app {instance} did not listen on {address}");
    }

    /// One request through Laravel, so a broken install fails here with the app's answer.
    async fn check_answers(&self, instance: &str) {
        let response = reqwest::get(format!("http://{}/me", self.address))
            .await
            .expect("Laravel answers");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status == 200 && body.contains(&format!("\"instance\":\"{instance}\"")),
            "Laravel app {instance} answered {status}: {body}\n(the tests need `php-cli` and \
             Debian's `php-laravel-framework`)"
        );
    }
}

/// Kills the server and its workers. The server is not reaped yet, so its id still names
/// this group alone.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
}

impl Drop for LaravelApp {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}
