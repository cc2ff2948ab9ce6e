//! `unstick check` as a deploy gate: the real binary against real Redis servers. Exit 0 only
//! when nothing is wrong; every problem is one readable line that says what to fix.

mod support;

use std::net::SocketAddr;
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

async fn run_check(toml: &str) -> CheckRun {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("unstick.toml");
    std::fs::write(&path, toml).expect("write config");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_unstick"))
        .args(["check", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run unstick check");
    CheckRun {
        code: output.status.code().expect("exit code"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
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
}

#[tokio::test]
async fn an_evicting_policy_fails_the_check_and_names_it() {
    let redis = RedisServer::start_with(true, &["--maxmemory-policy", "allkeys-lru"]).await;
    let run = run_check(&healthy_config(&redis.url()).to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
    let warnings = run.lines("warning");
    assert_eq!(warnings.len(), 1, "{}", run.explain());
    assert!(
        warnings[0].contains("maxmemory-policy is allkeys-lru")
            && warnings[0].contains("noeviction"),
        "{}",
        run.explain()
    );
    assert!(run.stdout.contains("check failed"), "{}", run.explain());

    // volatile-* evicts keys with a TTL, and every session has one.
    let redis = RedisServer::start_with(true, &["--maxmemory-policy", "volatile-lru"]).await;
    let run = run_check(&healthy_config(&redis.url()).to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
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
    let run = run_check(&healthy_config(&redis.url()).to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
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
    let run = run_check(&config.to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
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

    // Without app_cookie_lifetime nothing can be compared: said so, and not a pass.
    config.session.app_cookie_lifetime = None;
    let run = run_check(&config.to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
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
    let run = run_check(&config.to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
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
    let run = run_check(&config.to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
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
        )) && errors[0].contains("Fix: correct the key named above"),
        "{}",
        run.explain()
    );
}

#[tokio::test]
async fn memory_store_is_demo_only() {
    let run = run_check(&healthy_config("memory://").to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
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
    let run = run_check(&healthy_config(&redis.url()).to_toml()).await;
    assert_eq!(run.code, 1, "{}", run.explain());
    assert!(run.lines("error").is_empty(), "{}", run.explain());
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
