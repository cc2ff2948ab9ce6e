//! Redis deployments that fail over, built from real `redis-server` processes on loopback
//! ports: a Cluster (3 masters, 3 replicas) and a Sentinel service (master, replica, 3
//! sentinels). Every process belongs to the test and is killed on drop.

use super::free_port;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name the sentinels monitor the master under.
pub const SERVICE: &str = "mymaster";

/// One `redis-server` (or sentinel) process.
pub struct RedisNode {
    pub port: u16,
    child: Option<Child>,
    /// What `cli` adds to reach it: a password, TLS settings.
    cli_flags: Vec<String>,
}

impl RedisNode {
    /// Starts `redis-server` with `args` (which must include `--port`/`port`); `None` when it
    /// exits or does not listen within 5 s (port taken).
    async fn spawn(port: u16, args: &[String]) -> Option<RedisNode> {
        let mut child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(RedisNode {
                    port,
                    child: Some(child),
                    cli_flags: Vec::new(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the process is gone at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `redis-cli -p <port> args...`, its output (empty when the node does not answer).
    pub async fn cli(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = self.cli_flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        cli(self.port, &all).await
    }

    fn with_password(mut self, password: Option<&str>) -> RedisNode {
        if let Some(password) = password {
            self.cli_flags
                .extend(["-a", password, "--no-auth-warning"].map(String::from));
        }
        self
    }

    fn with_tls(mut self, tls: Option<&TlsFiles>) -> RedisNode {
        if let Some(tls) = tls {
            self.cli_flags.extend(tls.cli_flags());
        }
        self
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn cli(port: u16, args: &[&str]) -> String {
    let run = tokio::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(5), run).await {
        Ok(Ok(output)) => String::from_utf8_lossy(&output.stdout).into_owned(),
        _ => String::new(),
    }
}

/// `field:value` lines of an INFO answer.
pub fn info_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Polls `condition` every 100 ms until it holds; panics with `what` after `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {within:?}");
}

fn base_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir.to_str().expect("utf-8 temp dir"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
}

/// PEM files for a Redis that speaks only TLS (clients are not asked for certificates).
#[derive(Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
}

impl TlsFiles {
    /// `redis-server` arguments: TLS only (`--port 0`), for clients, replication and the
    /// cluster bus.
    fn server_args(&self, port: u16) -> Vec<String> {
        let path = |p: &std::path::Path| p.display().to_string();
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(&self.cert),
            "--tls-key-file".into(),
            path(&self.key),
            "--tls-ca-cert-file".into(),
            path(&self.ca),
            "--tls-auth-clients".into(),
            "no".into(),
            "--tls-replication".into(),
            "yes".into(),
            "--tls-cluster".into(),
            "yes".into(),
        ]
    }

    fn cli_flags(&self) -> Vec<String> {
        vec![
            "--tls".into(),
            "--cacert".into(),
            self.ca.display().to_string(),
        ]
    }
}

/// A Redis Cluster of 3 masters with one replica each, `cluster-node-timeout` 1000 ms.
pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
    cli_flags: Vec<String>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    pub async fn start() -> RedisCluster {
        Self::start_with(None).await
    }

    /// With `tls`, every node listens only on TLS, and talks TLS to the others.
    pub async fn start_with(tls: Option<TlsFiles>) -> RedisCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let cli_flags = tls.as_ref().map(TlsFiles::cli_flags).unwrap_or_default();
        let mut nodes = Vec::new();
        while nodes.len() < 6 {
            let port = free_cluster_port();
            let mut args = base_args(port, dir.path());
            if let Some(tls) = &tls {
                args.extend(tls.server_args(port));
            }
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "1000",
                ]
                .map(String::from),
            );
            if let Some(mut node) = RedisNode::spawn(port, &args).await {
                node.cli_flags = cli_flags.clone();
                nodes.push(node);
            }
        }
        let addresses: Vec<String> = nodes.iter().map(RedisNode::address).collect();
        let create = tokio::process::Command::new("redis-cli")
            .args(&cli_flags)
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        // It waits for the nodes to meet on the cluster bus, forever if they cannot.
        let created = tokio::time::timeout(Duration::from_secs(30), create)
            .await
            .expect("redis-cli --cluster create: the nodes did not join within 30 s")
            .expect("redis-cli");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed:\n{}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = RedisCluster {
            nodes,
            cli_flags,
            _dir: dir,
        };
        cluster.wait_healthy(3, Duration::from_secs(20)).await;
        cluster
    }

    /// `host:port` of every node, for `redis.cluster_nodes`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisNode::address).collect()
    }

    /// Waits until every live node sees `cluster_state:ok` and `masters` masters with a
    /// replica in sync behind each of the live ones.
    pub async fn wait_healthy(&self, masters: usize, within: Duration) {
        wait_until(within, "cluster healthy", || async {
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                let info = info_fields(&node.cli(&["CLUSTER", "INFO"]).await);
                if info.get("cluster_state").map(String::as_str) != Some("ok") {
                    return false;
                }
            }
            let live_masters = self.master_ports().await;
            if live_masters.len() != masters {
                return false;
            }
            for port in live_masters {
                let info = info_fields(&self.cli(port, &["INFO", "replication"]).await);
                let synced = info
                    .iter()
                    .filter(|(k, v)| k.starts_with("slave") && v.contains("state=online"))
                    .count();
                if synced == 0 && masters == 3 && self.nodes.iter().all(|n| n.is_running()) {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// Ports of the masters that serve slots, as a live node sees them.
    pub async fn master_ports(&self) -> Vec<u16> {
        let Some(node) = self.nodes.iter().find(|n| n.is_running()) else {
            return Vec::new();
        };
        node.cli(&["CLUSTER", "NODES"])
            .await
            .lines()
            .filter(|l| {
                let fields: Vec<&str> = l.split_whitespace().collect();
                fields
                    .get(2)
                    .is_some_and(|f| f.split(',').any(|f| f == "master") && !f.contains("fail"))
                    && fields.len() > 8
            })
            .filter_map(|l| {
                let address = l.split_whitespace().nth(1)?;
                address.split('@').next()?.rsplit(':').next()?.parse().ok()
            })
            .collect()
    }

    /// Keys on the master at `port` (DBSIZE).
    pub async fn keys_on(&self, port: u16) -> usize {
        self.cli(port, &["DBSIZE"])
            .await
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// `redis-cli` against one node of this cluster (with its TLS settings).
    pub async fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut all: Vec<&str> = self.cli_flags.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        cli(port, &all).await
    }

    pub fn node_mut(&mut self, port: u16) -> &mut RedisNode {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }
}

/// A master and its replica, watched by 3 sentinels (quorum 2, down-after 1000 ms).
pub struct RedisSentinel {
    pub master: RedisNode,
    pub replica: RedisNode,
    pub sentinels: Vec<RedisNode>,
    dir: tempfile::TempDir,
}

/// Passwords of a Sentinel deployment that requires them.
#[derive(Clone, Copy)]
pub struct SentinelPasswords<'a> {
    /// `requirepass` of the master and replica (and `masterauth`, `sentinel auth-pass`).
    pub data: &'a str,
    /// `requirepass` of the sentinels (and `sentinel sentinel-pass`).
    pub sentinels: &'a str,
}

impl RedisSentinel {
    pub async fn start() -> RedisSentinel {
        Self::start_with(None, None).await
    }

    /// With `tls`, the master, the replica and the sentinels listen only on TLS.
    pub async fn start_with(
        passwords: Option<SentinelPasswords<'_>>,
        tls: Option<TlsFiles>,
    ) -> RedisSentinel {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_password = passwords.map(|p| p.data);
        let auth_args: Vec<String> = match data_password {
            Some(p) => ["--requirepass", p, "--masterauth", p]
                .map(String::from)
                .to_vec(),
            None => Vec::new(),
        };
        let master = loop {
            let port = free_port();
            let mut args = base_args(port, dir.path());
            args.extend(auth_args.iter().cloned());
            args.extend(tls.iter().flat_map(|t| t.server_args(port)));
            if let Some(node) = RedisNode::spawn(port, &args).await {
                break node.with_password(data_password).with_tls(tls.as_ref());
            }
        };
        let master_port = master.port.to_string();
        let replica = loop {
            let port = free_port();
            let mut args = base_args(port, dir.path());
            args.extend(auth_args.iter().cloned());
            args.extend(tls.iter().flat_map(|t| t.server_args(port)));
            args.extend(["--replicaof", "127.0.0.1", &master_port].map(String::from));
            if let Some(node) = RedisNode::spawn(port, &args).await {
                break node.with_password(data_password).with_tls(tls.as_ref());
            }
        };
        wait_until(Duration::from_secs(10), "replica in sync", || async {
            let info = info_fields(&replica.cli(&["INFO", "replication"]).await);
            info.get("master_link_status").map(String::as_str) == Some("up")
        })
        .await;
        let mut sentinels = Vec::new();
        while sentinels.len() < 3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{port}.conf"));
            let listen = match &tls {
                Some(tls) => format!(
                    "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\n\
                     tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                    tls.cert.display(),
                    tls.key.display(),
                    tls.ca.display()
                ),
                None => format!("port {port}\n"),
            };
            let mut text = format!(
                "{listen}bind 127.0.0.1\ndir {}\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {SERVICE} 1000\n\
                 sentinel failover-timeout {SERVICE} 5000\n\
                 sentinel parallel-syncs {SERVICE} 1\n",
                dir.path().display()
            );
            if let Some(passwords) = passwords {
                text.push_str(&format!(
                    "sentinel auth-pass {SERVICE} {}\nrequirepass {}\nsentinel sentinel-pass {}\n",
                    passwords.data, passwords.sentinels, passwords.sentinels
                ));
            }
            std::fs::write(&conf, text).expect("write sentinel.conf");
            let args = [conf.display().to_string(), "--sentinel".to_string()];
            if let Some(node) = RedisNode::spawn(port, &args).await {
                sentinels.push(
                    node.with_password(passwords.map(|p| p.sentinels))
                        .with_tls(tls.as_ref()),
                );
            }
        }
        let service = RedisSentinel {
            master,
            replica,
            sentinels,
            dir,
        };
        // Sentinels find each other and the replica through the master: wait until each knows
        // both, or a failover could not reach its quorum.
        wait_until(
            Duration::from_secs(20),
            "sentinels see each other",
            || async {
                for sentinel in &service.sentinels {
                    let fields = sentinel_master(sentinel).await;
                    if fields.get("num-other-sentinels").map(String::as_str) != Some("2")
                        || fields.get("num-slaves").map(String::as_str) != Some("1")
                    {
                        return false;
                    }
                }
                true
            },
        )
        .await;
        service
    }

    /// `host:port` of every sentinel, for `redis.sentinels`.
    pub fn sentinel_addresses(&self) -> Vec<String> {
        self.sentinels.iter().map(RedisNode::address).collect()
    }

    /// The master's port as the first live sentinel reports it.
    pub async fn reported_master_port(&self) -> Option<u16> {
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let answer = sentinel
                .cli(&["SENTINEL", "get-master-addr-by-name", SERVICE])
                .await;
            if let Some(port) = answer.lines().nth(1) {
                return port.trim().parse().ok();
            }
        }
        None
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// `SENTINEL MASTER <service>` as a field map (redis-cli prints one value per line).
async fn sentinel_master(sentinel: &RedisNode) -> HashMap<String, String> {
    let text = sentinel.cli(&["SENTINEL", "MASTER", SERVICE]).await;
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .filter_map(|pair| Some((pair.first()?.to_string(), pair.get(1)?.to_string())))
        .collect()
}
