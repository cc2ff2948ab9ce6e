//! `unstick check` as a deploy gate: the real binary against real Redis servers. Exit 1 on an
//! error, and on a warning with `--strict`; every problem is one readable line that says what
//! to fix.

mod support;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use support::*;

/// What one `unstick check` run printed and returned.
struct CheckRun {
    code: i32,
    stdout: String,
    stderr: String,
}

impl CheckRun {
    /// The finding lines at `level` (`ok`, `warning`, `error`).
    fn lines(&self, level: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(level))
            .collect()
    }

    fn explain(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the real binary with `args` and extra environment variables (none of the variables
/// unstick reads is inherited from the test's own environment).
async fn run_unstick(args: &[&OsStr], env: &[(&str, &str)]) -> CheckRun {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_unstick"));
    command.args(args).env("RUST_LOG", "warn");
    for name in [
        "UNSTICK_CONFIG",
        "UNSTICK_LOG_FORMAT",
        "REDIS_URL",
        "SESSION_SECRET",
        "UNSTICK_ADMIN_TOKEN",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    let output = command.output().await.expect("run unstick");
    CheckRun {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `unstick check --config FILE [flags]`.
async fn check_path(path: &Path, flags: &[&str], env: &[(&str, &str)]) -> CheckRun {
    let mut args: Vec<&OsStr> = vec!["check".as_ref(), "--config".as_ref(), path.as_os_str()];
    args.extend(flags.iter().map(OsStr::new));
    run_unstick(&args, env).await
}

async fn run_check_with(toml: &str, flags: &[&str]) -> CheckRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("unstick.toml");
    std::fs::write(&path, toml).expect("write config");
    check_path(&path, flags, &[]).await
}

async fn run_check(toml: &str) -> CheckRun {
    run_check_with(toml, &[]).await
}

/// A config with warnings and no error: exit 0 with the warnings listed, exit 1 with
/// `--strict`. Returns the default run.
async fn run_check_warnings_only(toml: &str) -> CheckRun {
    let strict = run_check_with(toml, &["--strict"]).await;
    assert_eq!(strict.code, 1, "{}", strict.explain());
    assert!(
        strict.stdout.contains("check failed (--strict)"),
        "{}",
        strict.explain()
    );
    let run = run_check(toml).await;
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(run.lines("error").is_empty(), "{}", run.explain());
    assert!(!run.lines("warning").is_empty(), "{}", run.explain());
    assert!(
        run.stdout.contains(&format!(
            "check passed with {} warning(s)",
            run.lines("warning").len()
        )),
        "{}",
        run.explain()
    );
    assert_eq!(
        strict.lines("warning"),
        run.lines("warning"),
        "same findings either way"
    );
    run
}

/// A config with nothing to complain about: lifetimes that cover the app's cookie, default
/// (safe) identity headers. Upstreams are not contacted by `check`.
fn healthy_config(redis_url: &str) -> ProxyConfig {
    let instance: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let mut config = ProxyConfig::new(redis_url, &[("a", instance)]);
    config.session.idle_timeout = "30d".into();
    config.session.absolute_lifetime = "30d".into();
    config.session.app_cookie_lifetime = Some("30d".into());
    config
}

/// Redis as it should be for sessions: never evicts, persists.
async fn healthy_redis() -> RedisServer {
    RedisServer::start_with(true, &["--maxmemory-policy", "noeviction"]).await
}

#[tokio::test]
async fn healthy_setup_passes_and_reports_latency() {
    let redis = healthy_redis().await;
    let run = run_check(&healthy_config(&redis.url()).to_toml()).await;
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(run.lines("warning").is_empty(), "{}", run.explain());
    assert!(run.lines("error").is_empty(), "{}", run.explain());
    assert!(
        run.stdout
            .contains(&format!("{} reachable, latency", redis.url())),
        "{}",
        run.explain()
    );
    assert!(
        run.stdout.contains("median of 5 PINGs"),
        "{}",
        run.explain()
    );
    assert!(run.stdout.contains("noeviction"), "{}", run.explain());
    assert!(
        run.stdout.contains("append-only file is on"),
        "{}",
        run.explain()
    );
    assert!(run.stdout.contains("check passed"), "{}", run.explain());
    let strict = run_check_with(&healthy_config(&redis.url()).to_toml(), &["--strict"]).await;
    assert_eq!(strict.code, 0, "{}", strict.explain());
    // A preflight check reads; it never writes to the Redis it checks.
    use fred::prelude::ServerInterface;
    let keys: u64 = redis.client().await.dbsize().await.unwrap();
    assert_eq!(keys, 0, "check wrote to Redis");
}

#[tokio::test]
async fn an_evicting_policy_is_a_warning_that_names_it() {
    let redis = RedisServer::start_with(true, &["--maxmemory-policy", "allkeys-lru"]).await;
    let run = run_check_warnings_only(&healthy_config(&redis.url()).to_toml()).await;
    let warnings = run.lines("warning");
    assert_eq!(warnings.len(), 1, "{}", run.explain());
    assert!(
        warnings[0].contains("maxmemory-policy is allkeys-lru")
            && warnings[0].contains("noeviction"),
        "{}",
        run.explain()
    );

    // volatile-* evicts keys with a TTL, and every session has one.
    let redis = RedisServer::start_with(true, &["--maxmemory-policy", "volatile-lru"]).await;
    let run = run_check_warnings_only(&healthy_config(&redis.url()).to_toml()).await;
    assert!(
        run.lines("warning")
            .iter()
            .any(|l| l.contains("volatile-lru") && l.contains("TTL")),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn redis_without_persistence_is_a_warning() {
    let redis = RedisServer::start_with(false, &["--maxmemory-policy", "noeviction"]).await;
    let run = run_check_warnings_only(&healthy_config(&redis.url()).to_toml()).await;
    let warnings = run.lines("warning");
    assert_eq!(warnings.len(), 1, "{}", run.explain());
    assert!(
        warnings[0].contains("persistence is off"),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn redis_down_is_an_error() {
    // A port where nothing listens.
    let port = free_port();
    let mut config = healthy_config(&format!("redis://127.0.0.1:{port}"));
    config.redis.connect_timeout = Some("500ms".into());
    let started = std::time::Instant::now();
    let run = run_check(&config.to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
    let errors = run.lines("error");
    assert_eq!(errors.len(), 1, "{}", run.explain());
    assert!(
        errors[0].contains(&format!("cannot reach Redis at redis://127.0.0.1:{port}: TCP connection failed (Connection refused")),
        "{}",
        run.explain()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "check took {:?}",
        started.elapsed()
    );
    // The offline checks still ran: one run shows everything that is wrong.
    assert!(
        run.stdout.contains("ok       headers:"),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn lifetimes_shorter_than_the_app_cookie_warn() {
    let redis = healthy_redis().await;
    let mut config = healthy_config(&redis.url());
    config.session.idle_timeout = "30m".into();
    config.session.absolute_lifetime = "12h".into();
    let run = run_check_warnings_only(&config.to_toml()).await;
    let warnings = run.lines("warning");
    assert_eq!(warnings.len(), 2, "{}", run.explain());
    assert!(
        warnings[0].contains("session.idle_timeout (30m) is shorter than")
            && warnings[0].contains("app_cookie_lifetime"),
        "{}",
        run.explain()
    );
    assert!(
        warnings[1].contains("session.absolute_lifetime (12h) is shorter than"),
        "{}",
        run.explain()
    );

    // Without app_cookie_lifetime nothing can be compared: said so, as a warning.
    config.session.app_cookie_lifetime = None;
    let run = run_check_warnings_only(&config.to_toml()).await;
    assert!(
        run.lines("warning")
            .iter()
            .any(|l| l.contains("app_cookie_lifetime is not set")),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn unsafe_identity_header_names_warn() {
    let redis = healthy_redis().await;
    let mut config = healthy_config(&redis.url());
    config.identity = IdentityOptions {
        user_header: Some("X_User".into()),
        roles_header: Some("X-Forwarded-Roles".into()),
        email_header: Some("Email".into()),
        ..IdentityOptions::default()
    };
    let run = run_check_warnings_only(&config.to_toml()).await;
    let warnings = run.lines("warning");
    assert_eq!(warnings.len(), 3, "{}", run.explain());
    assert!(
        warnings[0].contains("identity.user_header = \"x_user\"") && warnings[0].contains("nginx"),
        "{}",
        run.explain()
    );
    assert!(
        warnings[1].contains("identity.roles_header = \"x-forwarded-roles\""),
        "{}",
        run.explain()
    );
    assert!(
        warnings[2].contains("identity.email_header = \"email\"")
            && warnings[2].contains("no private prefix"),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn a_route_without_a_logout_path_warns() {
    let redis = healthy_redis().await;
    let mut config = healthy_config(&redis.url());
    config.route.logout_paths.clear();
    let run = run_check_warnings_only(&config.to_toml()).await;
    let warnings = run.lines("warning");
    assert_eq!(warnings.len(), 1, "{}", run.explain());
    assert!(
        warnings[0].contains("route / has no logout_paths")
            && warnings[0].contains("x-unstick-logout")
            && warnings[0].contains("keeps the user logged in"),
        "{}",
        run.explain()
    );
    // A route that reads every cleared cookie as a logout sees logouts without one.
    config.route.unexplained_cookie_change = Some("end-session".into());
    let run = run_check(&config.to_toml()).await;
    assert_eq!(run.code, 0, "{}", run.explain());
}

#[tokio::test]
async fn config_typo_names_key_and_line() {
    let toml = healthy_config("redis://127.0.0.1:1").to_toml();
    let line = toml
        .lines()
        .position(|l| l.starts_with("idle_timeout"))
        .unwrap()
        + 1;
    let run = run_check(&toml.replace("idle_timeout", "idle_timout")).await;
    assert_eq!(run.code, 1, "{}", run.explain());
    let errors = run.lines("error");
    assert_eq!(errors.len(), 1, "{}", run.explain());
    assert!(
        errors[0].contains("idle_timout") && errors[0].contains(&format!("line {line}")),
        "{}",
        run.explain()
    );
    // Nothing else is checked against a config that does not load.
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.explain());
    // The TOML error names the key in its message; the fix points at its line.
    assert!(
        errors[0].contains("Fix: correct the file at the line and column shown"),
        "{}",
        run.explain()
    );

    // A value that parses but does not validate: key and line too.
    let line = toml
        .lines()
        .position(|l| l.starts_with("key_prefix"))
        .unwrap()
        + 1;
    let run = run_check(&toml.replace("key_prefix = \"test:\"", "key_prefix = \"\"")).await;
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(
        run.lines("error")[0].contains(&format!(":{line}: `redis.key_prefix`")),
        "{}",
        run.explain()
    );
    assert!(
        run.lines("error")[0].contains(&format!("Fix: correct `redis.key_prefix` on line {line}")),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn old_store_key_of_another_kind_names_key_and_line() {
    let mut config = healthy_config("redis://127.0.0.1:1");
    config.old_stores.push(
        OldStore::new("old", "redis")
            .with("url", "redis://127.0.0.1:1")
            .with("key", "sess:{id}")
            .with("dir", "/tmp"),
    );
    let toml = config.to_toml();
    let line = toml.lines().position(|l| l.starts_with("dir =")).unwrap() + 1;
    let run = run_check(&toml).await;
    assert_eq!(run.code, 1, "{}", run.explain());
    let errors = run.lines("error");
    assert_eq!(errors.len(), 1, "{}", run.explain());
    assert!(
        errors[0].contains(&format!(
            ":{line}: `old_stores.old.dir`: a key of kind = \"php-files\", not of kind = \"redis\""
        )) && errors[0].contains(&format!("Fix: correct `old_stores.old.dir` on line {line}")),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn memory_store_is_demo_only() {
    let run = run_check_warnings_only(&healthy_config("memory://").to_toml()).await;
    let warnings = run.lines("warning");
    assert_eq!(warnings.len(), 1, "{}", run.explain());
    assert!(
        warnings[0].contains("memory:// (demo only)")
            && warnings[0].contains("Redis checks skipped"),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn config_command_refused_is_a_warning_not_a_failure_to_connect() {
    // An ACL user without CONFIG, as on managed Redis.
    let redis = RedisServer::start_with(
        true,
        &[
            "--user", "default", "on", "nopass", "~*", "&*", "+@all", "-config",
        ],
    )
    .await;
    let run = run_check_warnings_only(&healthy_config(&redis.url()).to_toml()).await;
    assert!(
        run.stdout.contains("reachable, latency"),
        "{}",
        run.explain()
    );
    let warnings = run.lines("warning");
    assert_eq!(warnings.len(), 1, "{}", run.explain());
    assert!(
        warnings[0].contains("cannot read the Redis settings") && warnings[0].contains("NOPERM"),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn wrong_password_is_an_error_that_says_so() {
    let redis = RedisServer::start_with(true, &["--requirepass", "sekrit"]).await;
    let mut config = healthy_config(&redis.url());
    config.redis.connect_timeout = Some("500ms".into());
    let run = run_check(&config.to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
    let errors = run.lines("error");
    assert_eq!(errors.len(), 1, "{}", run.explain());
    assert!(
        errors[0].contains("handshake did not complete (wrong password"),
        "{}",
        run.explain()
    );

    // The right password passes, and never appears in the output.
    let config = healthy_config(&format!(
        "redis://:sekrit@{}",
        redis.url().trim_start_matches("redis://")
    ));
    let run = run_check(&config.to_toml()).await;
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(!run.stdout.contains("sekrit"), "{}", run.explain());
    assert!(
        run.stdout.contains("redis://***@127.0.0.1"),
        "{}",
        run.explain()
    );
}

/// A file of this repository.
fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The commented reference config, with the variables it names set, passes even `--strict`
/// against a Redis set up as advised: what it recommends is what `check` asks for.
#[tokio::test]
async fn the_example_config_passes_a_strict_check() {
    let redis = healthy_redis().await;
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("SESSION_SECRET", "example")];
    let run = check_path(&repo_file("config/unstick.toml"), &["--strict"], &env).await;
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(run.lines("warning").is_empty(), "{}", run.explain());
    assert!(run.lines("error").is_empty(), "{}", run.explain());
    assert!(
        run.stdout.contains(&format!("{url} reachable")),
        "{}",
        run.explain()
    );
    assert!(
        run.stdout.contains("no warnings, no errors"),
        "{}",
        run.explain()
    );
}

/// Every config shipped in config/ (the reference, the docker-compose one) loads with the
/// variables it needs, and has no error against a good Redis.
#[tokio::test]
async fn every_shipped_config_loads() {
    let redis = healthy_redis().await;
    let url = redis.url();
    let env = [("REDIS_URL", url.as_str()), ("SESSION_SECRET", "example")];
    let mut checked = 0;
    for entry in std::fs::read_dir(repo_file("config")).expect("config/") {
        let path = entry.expect("config entry").path();
        if path.extension() != Some(OsStr::new("toml")) {
            continue;
        }
        let run = check_path(&path, &[], &env).await;
        assert_eq!(run.code, 0, "{}: {}", path.display(), run.explain());
        assert!(run.lines("error").is_empty(), "{}", run.explain());
        assert!(run.stdout.contains("is valid"), "{}", run.explain());
        checked += 1;
    }
    assert!(checked >= 2, "config/*.toml: {checked} file(s)");
}

/// A `${VAR}` without a value and without a default: the error names the variable and the
/// line, and the fix says to set it (there is no key to correct).
#[tokio::test]
async fn a_missing_variable_is_named_with_its_line() {
    let path = repo_file("config/unstick.toml");
    let source = std::fs::read_to_string(&path).expect("config/unstick.toml");
    let line = source
        .lines()
        .position(|l| l.contains("${SESSION_SECRET}") && !l.trim_start().starts_with('#'))
        .expect("a SESSION_SECRET line")
        + 1;
    let run = check_path(&path, &[], &[]).await;
    assert_eq!(run.code, 1, "{}", run.explain());
    let errors = run.lines("error");
    assert_eq!(errors.len(), 1, "{}", run.explain());
    assert!(
        errors[0].contains("environment variable SESSION_SECRET is not set")
            && errors[0].contains(&format!("line {line}")),
        "{}",
        run.explain()
    );
    assert!(
        errors[0].contains("Fix: set the variable in unstick's environment"),
        "{}",
        run.explain()
    );
    assert!(!run.stdout.contains("named above"), "{}", run.explain());
}

/// A file that cannot be read: the fix is about the path, not a key.
#[tokio::test]
async fn a_missing_file_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = check_path(&dir.path().join("nope.toml"), &[], &[]).await;
    assert_eq!(run.code, 1, "{}", run.explain());
    let errors = run.lines("error");
    assert!(
        errors[0].contains("cannot read config file") && errors[0].contains("Fix: check the path"),
        "{}",
        run.explain()
    );
}

// The command line around check and sessions.

fn os(args: &[&'static str]) -> Vec<&'static OsStr> {
    args.iter().map(|arg| OsStr::new(*arg)).collect()
}

/// `-c/--config` before or after the subcommand, or `UNSTICK_CONFIG`; without any of them a
/// usage error that names both.
#[tokio::test]
async fn the_config_path_is_accepted_anywhere() {
    let redis = healthy_redis().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("unstick.toml");
    std::fs::write(&path, healthy_config(&redis.url()).to_toml()).expect("write config");
    let file = path.as_os_str();

    for args in [
        vec![OsStr::new("--config"), file, OsStr::new("check")],
        vec![OsStr::new("check"), OsStr::new("-c"), file],
    ] {
        let run = run_unstick(&args, &[]).await;
        assert_eq!(run.code, 0, "{args:?}: {}", run.explain());
    }
    let run = run_unstick(
        &os(&["check"]),
        &[("UNSTICK_CONFIG", path.to_str().unwrap())],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.explain());

    for args in [
        vec![
            OsStr::new("sessions"),
            OsStr::new("list"),
            OsStr::new("--user"),
            OsStr::new("alice"),
            OsStr::new("--config"),
            file,
        ],
        vec![
            OsStr::new("sessions"),
            OsStr::new("--config"),
            file,
            OsStr::new("list"),
            OsStr::new("--user"),
            OsStr::new("alice"),
        ],
    ] {
        let run = run_unstick(&args, &[]).await;
        assert_eq!(run.code, 0, "{args:?}: {}", run.explain());
        let listed: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
        assert_eq!(listed["user"], "alice", "{}", run.explain());
    }

    let run = run_unstick(&os(&["check"]), &[]).await;
    assert_eq!(run.code, 2, "{}", run.explain());
    assert!(
        run.stderr.contains("--config FILE") && run.stderr.contains("UNSTICK_CONFIG"),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn help_explains_the_arguments_and_version_the_build() {
    let run = run_unstick(&os(&["sessions", "revoke", "--help"]), &[]).await;
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout.contains("<ID_HASH>")
            && run.stdout.contains("`id_hash` field of `sessions list`"),
        "{}",
        run.explain()
    );
    assert!(
        run.stdout.contains("--config <FILE>") && run.stdout.contains("UNSTICK_CONFIG"),
        "{}",
        run.explain()
    );
    let run = run_unstick(&os(&["sessions", "list", "--help"]), &[]).await;
    assert!(
        run.stdout.contains("--user <USER>") && run.stdout.contains("identity header"),
        "{}",
        run.explain()
    );
    let run = run_unstick(&os(&["check", "--help"]), &[]).await;
    assert!(run.stdout.contains("--strict"), "{}", run.explain());

    let run = run_unstick(&os(&["--version"]), &[]).await;
    assert_eq!(run.code, 0, "{}", run.explain());
    assert!(
        run.stdout
            .starts_with(&format!("unstick {}\n", env!("CARGO_PKG_VERSION"))),
        "{}",
        run.explain()
    );
    for field in ["commit:", "target:", "profile:", "rustc:"] {
        assert!(
            run.stdout.lines().any(|l| l.starts_with(field)),
            "{field} {}",
            run.explain()
        );
    }
}

/// Logs to a file or a pipe (journald, docker logs) are plain text: no colour codes.
#[tokio::test]
async fn logs_off_a_terminal_have_no_colour_codes() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_unstick"))
        .args(["demo-app", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .env_remove("UNSTICK_LOG_FORMAT")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start demo-app");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
        .await
        .expect("a log line in time")
        .expect("read stderr")
        .expect("a log line");
    let _ = child.kill().await;
    assert!(line.contains("legacy app listening"), "{line:?}");
    assert!(line.contains("INFO"), "{line:?}");
    assert!(!line.contains('\u{1b}'), "colour codes in {line:?}");
}
