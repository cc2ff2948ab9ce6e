//! A real `redis-server` owned by one test: its own port and data directory, and the means
//! to kill, restart, pause and resume it.

use super::free_port;
use fred::prelude::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistent: bool,
    extra_args: Vec<String>,
}

impl RedisServer {
    /// A Redis that keeps nothing on disk.
    pub async fn start() -> RedisServer {
        Self::start_with(false, &[]).await
    }

    /// A Redis with an fsync-always append-only file: its data survives kill and restart.
    pub async fn start_persistent() -> RedisServer {
        Self::start_with(true, &[]).await
    }

    pub async fn start_with(persistent: bool, extra_args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port: 0,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            persistent,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().await {
                return server;
            }
        }
        panic!("could not start redis-server");
    }

    async fn spawn(&mut self) -> bool {
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--dir", self.dir.path().to_str().unwrap()])
            .args(self.extra_args.iter())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.persistent {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let mut child = command.spawn().expect("redis-server must be installed");
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    /// SIGSTOP: the socket stays open but nothing answers (a hung Redis).
    pub fn pause(&self) {
        super::signal(self.pid(), "STOP");
    }

    pub fn resume(&self) {
        super::signal(self.pid(), "CONT");
    }

    /// A plain client for assertions on what is stored.
    pub async fn client(&self) -> Client {
        let client = Client::new(Config::from_url(&self.url()).unwrap(), None, None, None);
        client.init().await.expect("connect to test redis");
        client
    }

    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let client = self.client().await;
        let keys: Vec<String> = client
            .custom(fred::cmd!("KEYS"), vec![pattern])
            .await
            .unwrap();
        keys
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server must be resumed to die cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// How many connections the server has accepted so far (`INFO stats`), asked on `client`'s
/// own connection so that asking adds none.
pub async fn connections_received(client: &Client) -> u64 {
    let info: String = client
        .custom(fred::cmd!("INFO"), vec!["stats"])
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("total_connections_received in INFO stats")
}
