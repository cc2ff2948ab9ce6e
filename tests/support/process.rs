//! The real `unstick` binary as a child process, for the tests about the process itself:
//! signals, reloads, exit codes, refused starts, resource limits and use.

use super::{LogLines, ProxyConfig, RunningProxy};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The real `unstick serve` process. Its JSON log lines are collected for assertions.
pub struct ProxyProcess {
    child: Child,
    pub address: SocketAddr,
    logs: LogLines,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    pub async fn start(config: &ProxyConfig) -> ProxyProcess {
        Self::start_with_env(&config.to_toml(), &[]).await
    }

    /// Starts with extra environment variables (e.g. the admin token).
    pub async fn start_with_env(toml: &str, env: &[(&str, &str)]) -> ProxyProcess {
        Self::start_with_open_files(toml, env, None).await
    }

    /// Starts with the open-file limit (soft, hard) set for the process, as a service
    /// manager or shell would set it.
    pub async fn start_with_open_files(
        toml: &str,
        env: &[(&str, &str)],
        open_files: Option<(u64, u64)>,
    ) -> ProxyProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("unstick.toml");
        std::fs::write(&path, toml).expect("write config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_unstick"));
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some((soft, hard)) = open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard));
            }
        }
        let mut child = command.spawn().expect("start unstick");
        let logs = LogLines::default();
        let (address_tx, address_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(doc) = serde_json::from_str::<serde_json::Value>(&line) {
                    if doc["fields"]["message"] == "unstick listening" {
                        if let Some(address) = doc["fields"]["address"].as_str() {
                            let _ =
                                address_tx.send(address.parse::<SocketAddr>().expect("address"));
                        }
                    }
                }
                sink.push(line);
            }
        });
        let address =
            tokio::task::spawn_blocking(move || address_rx.recv_timeout(Duration::from_secs(20)))
                .await
                .unwrap()
                .unwrap_or_else(|_| panic!("unstick did not start; logs:\n{}", logs.text()));
        ProxyProcess {
            child,
            address,
            logs,
            dir,
        }
    }

    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("unstick.toml")
    }

    /// Rewrites the config file, sends SIGHUP and waits until the proxy says it reloaded.
    pub async fn reload(&self, config: &ProxyConfig) {
        let reloads_before = self.count_logs("config reloaded");
        std::fs::write(self.config_path(), config.to_toml()).expect("write config");
        signal(self.pid(), "HUP");
        for _ in 0..200 {
            if self.count_logs("config reloaded") > reloads_before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no reload; logs:\n{}", self.logs());
    }

    /// URL on the admin listener (the config must have `[admin] address = "127.0.0.1:0"`).
    pub fn admin_url(&self, path: &str) -> String {
        let address = self
            .logs
            .lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|doc| doc["fields"]["message"] == "admin listening")
            .and_then(|doc| doc["fields"]["address"].as_str().map(String::from))
            .expect("admin listener in the logs");
        format!("http://{address}{path}")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's open-file limit as /proc shows it: (soft, hard).
    pub fn open_file_limit(&self) -> (String, String) {
        let limits =
            std::fs::read_to_string(format!("/proc/{}/limits", self.pid())).expect("proc limits");
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("Max open files");
        let mut values = line["Max open files".len()..].split_whitespace();
        (
            values.next().expect("soft").to_string(),
            values.next().expect("hard").to_string(),
        )
    }

    /// How many file descriptors the proxy process has open.
    pub fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|dir| dir.count())
            .unwrap_or(0)
    }

    /// CPU time the proxy process has used so far (user and system), in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("proc stat");
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 12th and 13th, in clock ticks (100 per second on Linux).
        let rest = &stat[stat.rfind(')').expect("stat") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    /// Resident memory of the proxy process now, in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Peak resident memory of the proxy process so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// `true` until the process has exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit on its own (after a signal sent elsewhere) and returns
    /// its status; panics if it is still running after `within`.
    pub async fn wait_for_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "unstick still running after {within:?}; logs:\n{}",
            self.logs()
        );
    }

    /// Sends SIGTERM (graceful shutdown) and returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        self.child.wait().expect("wait")
    }
}

impl RunningProxy for ProxyProcess {
    fn address(&self) -> SocketAddr {
        self.address
    }

    fn log_lines(&self) -> &LogLines {
        &self.logs
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// What `unstick serve` said on a config it must refuse.
pub struct RefusedStart {
    pub status: std::process::ExitStatus,
    pub stderr: String,
    /// Where the config file was written (messages name it).
    pub config_path: String,
}

/// Runs `unstick serve --config <file with toml>`; it must exit on its own within 20 s.
pub async fn serve_expecting_exit(toml: &str) -> RefusedStart {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unstick.toml");
    std::fs::write(&path, toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_unstick"))
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            return RefusedStart {
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
                config_path: path.display().to_string(),
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("unstick accepted the config and kept running:\n{toml}");
}

/// What a one-shot `unstick` command (not `serve`) printed, and how it exited.
#[derive(Debug)]
pub struct CommandRun {
    /// `None` when ended by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CommandRun {
    /// Everything it printed, for assertion messages.
    pub fn explain(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A one-shot `unstick <args> --config <file>` under way, with its config file.
pub struct OneShot {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl OneShot {
    /// Starts `unstick <args> --config <file holding toml>` with unstick's own debug logs on
    /// (they are checked for raw session ids) and stdin closed.
    pub fn start(toml: &str, args: &[&str]) -> OneShot {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("unstick.toml");
        std::fs::write(&path, toml).expect("write config");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_unstick"))
            .args(args)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info,unstick=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start unstick");
        OneShot { child, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Waits (at most a minute) for it to exit.
    pub async fn finish(self) -> CommandRun {
        let output = tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output())
            .await
            .expect("unstick still running after a minute")
            .expect("wait for unstick");
        CommandRun {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// Runs `unstick <args> --config <file holding toml>` to its end.
pub async fn run_unstick(toml: &str, args: &[&str]) -> CommandRun {
    OneShot::start(toml, args).finish().await
}
