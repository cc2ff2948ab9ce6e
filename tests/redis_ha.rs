//! Redis deployments beyond one server: a Redis Cluster and a Sentinel service whose master is
//! killed under session load, logins that wait for a replica, several proxies sharing one
//! Redis, and their near caches following a failover. Real `redis-server` processes, the real binary, the bundled legacy app.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::redis_ha::{wait_until, RedisCluster, RedisSentinel, SentinelPasswords, SERVICE};
use support::*;
use unstick::demo::{LegacyApp, LegacyAppConfig};

const TOKEN: &str = "test-admin-token-0123456789";

/// What `unstick check` printed.
async fn run_check(toml: &str) -> String {
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
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Restarts both app instances on their addresses: they forget every login, so from now on
/// only Redis vouches for a user, and an anonymous pass-through shows as `user: null`.
async fn forget_app_sessions(a: LegacyApp, b: LegacyApp) -> (LegacyApp, LegacyApp) {
    let (address_a, address_b) = (a.address, b.address);
    a.stop().await;
    b.stop().await;
    (
        legacy_app_with(LegacyAppConfig::new("a"), Some(address_a)).await,
        legacy_app_with(LegacyAppConfig::new("b"), Some(address_b)).await,
    )
}

/// Logs `count` users in through the proxy; returns (user, cookie) pairs.
async fn log_users_in(proxy: &ProxyProcess, count: usize) -> Vec<(String, String)> {
    let mut users = Vec::new();
    for i in 0..count {
        let user = format!("user{i}");
        let mut browser = Browser::new();
        browser.login(proxy, &user).await;
        users.push((user, browser.cookie.clone().expect("login cookie")));
    }
    users
}

/// Fails the master over under load (`fail_over`, then `settled` resolves once the topology
/// has a new master) and reports: time from `fail_over` to serving every user again, and
/// what the load saw.
async fn fail_over_under_load(
    proxy: &ProxyProcess,
    users: &[(String, String)],
    fail_over: impl FnOnce(),
    settled: impl std::future::Future<Output = ()>,
) -> (Duration, Outcomes) {
    let load = SessionLoad::start(proxy, users, 4);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    fail_over();
    settled.await;
    // Bounded: the failover itself takes a few seconds; past 15 s something is stuck.
    let recovered = every_user_served(proxy, users, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let outcomes = load.stop().await;
    let Some(recovered) = recovered else {
        panic!(
            "not every user served again within 15 s of the kill; {outcomes:?}\nlogs:\n{}",
            proxy.logs()
        );
    };
    (recovered - killed, outcomes)
}

#[tokio::test]
async fn cluster_master_killed_under_load_sessions_survive_and_no_request_passes_anonymous() {
    let mut cluster = RedisCluster::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut config = ProxyConfig::new("", &[("a", a.address), ("b", b.address)]);
    config.redis.cluster_nodes = cluster.seeds();
    config.redis.wait_replicas = Some(1);
    config.redis.wait_timeout = Some("500ms".into());
    let proxy = ProxyProcess::start(&config).await;

    let report = run_check(&config.to_toml()).await;
    assert!(
        report.contains("topology: cluster: 3 masters, 3 replicas"),
        "{report}"
    );

    let users = log_users_in(&proxy, 12).await;
    let (_a, _b) = forget_app_sessions(a, b).await;
    for (user, cookie) in &users {
        let mut once = Outcomes::default();
        me_as(
            &reqwest::Client::new(),
            &proxy.url("/me"),
            user,
            cookie,
            &mut once,
        )
        .await;
        assert_eq!(once.own_user, 1, "{user} known to Redis only: {once:?}");
    }

    // The master holding the most sessions (every session was acknowledged by a replica).
    let mut victim = (0, 0);
    for port in cluster.master_ports().await {
        let keys = cluster.keys_on(port).await;
        if keys > victim.1 {
            victim = (port, keys);
        }
    }
    assert!(victim.1 > 0, "no master holds a session");
    let (took, outcomes) = fail_over_under_load(
        &proxy,
        &users,
        || cluster.node_mut(victim.0).kill(),
        async {},
    )
    .await;
    eprintln!(
        "cluster: master :{} ({} keys) killed; every user served again after {took:?}; {outcomes:?}",
        victim.0, victim.1
    );
    outcomes.assert_fail_closed(&proxy.logs());
    assert!(
        took <= Duration::from_secs(5),
        "serving again took {took:?}"
    );

    // The replica took over: three masters again, and the proxy's check sees it.
    cluster.wait_healthy(3, Duration::from_secs(10)).await;
    let report = run_check(&config.to_toml()).await;
    assert!(
        report.contains("topology: cluster: 3 masters, 2 replicas"),
        "{report}"
    );
}

#[tokio::test]
async fn sentinel_master_killed_under_load_sessions_survive_and_no_request_passes_anonymous() {
    let mut service = RedisSentinel::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let mut config = ProxyConfig::new("", &[("a", a.address), ("b", b.address)]);
    config.redis.sentinels = service.sentinel_addresses();
    config.redis.service_name = Some(SERVICE.into());
    config.redis.wait_replicas = Some(1);
    config.redis.wait_timeout = Some("500ms".into());
    let proxy = ProxyProcess::start(&config).await;

    let report = run_check(&config.to_toml()).await;
    let expected = format!(
        "topology: sentinel service {SERVICE}: master at 127.0.0.1:{}, 1 replica online",
        service.master.port
    );
    assert!(report.contains(&expected), "{report}");
    assert!(
        report.contains(&format!(
            "sentinels: 3 of 3 configured answer for {SERVICE} (quorum 2)"
        )),
        "{report}"
    );

    let users = log_users_in(&proxy, 12).await;
    let (_a, _b) = forget_app_sessions(a, b).await;
    let old_master = service.master.port;
    let (took, outcomes) =
        fail_over_under_load(&proxy, &users, || service.master.kill(), async {}).await;
    eprintln!("sentinel: master killed; every user served again after {took:?}; {outcomes:?}");
    outcomes.assert_fail_closed(&proxy.logs());
    assert!(
        took <= Duration::from_secs(5),
        "serving again took {took:?}"
    );
    assert_eq!(
        service.reported_master_port().await,
        Some(service.replica.port),
        "the sentinels promoted the replica (old master :{old_master})"
    );
    let session_keys = service
        .replica
        .cli(&["--scan", "--pattern", "test:s:*"])
        .await;
    assert_eq!(session_keys.lines().count(), 12, "{session_keys}");
}

/// `redis-cli -p <port> args...`, run to completion (for a command given in a sync closure).
fn cli_now(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn planned_failovers_under_load_pass_no_request_anonymous_and_take_new_logins() {
    // Sentinel: SENTINEL FAILOVER demotes the master (the sentinels disconnect its clients).
    let service = RedisSentinel::start().await;
    let cluster = RedisCluster::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let apps = [("a", a.address), ("b", b.address)];
    let mut sentinel_config = ProxyConfig::new("", &apps);
    sentinel_config.redis.sentinels = service.sentinel_addresses();
    sentinel_config.redis.service_name = Some(SERVICE.into());
    sentinel_config.redis.wait_replicas = Some(1);
    let mut cluster_config = ProxyConfig::new("", &apps);
    cluster_config.redis.cluster_nodes = cluster.seeds();
    cluster_config.redis.wait_replicas = Some(1);
    let via_sentinel = ProxyProcess::start(&sentinel_config).await;
    let via_cluster = ProxyProcess::start(&cluster_config).await;
    let sentinel_users = log_users_in(&via_sentinel, 8).await;
    let cluster_users = log_users_in(&via_cluster, 8).await;
    let (_a, _b) = forget_app_sessions(a, b).await;

    let sentinel_port = service.sentinels[0].port;
    let promoted = async {
        support::redis_ha::wait_until(Duration::from_secs(10), "replica promoted", || async {
            service.reported_master_port().await == Some(service.replica.port)
        })
        .await
    };
    let (took, outcomes) = fail_over_under_load(
        &via_sentinel,
        &sentinel_users,
        || {
            let answer = cli_now(sentinel_port, &["SENTINEL", "FAILOVER", SERVICE]);
            assert!(answer.starts_with("OK"), "SENTINEL FAILOVER: {answer}");
        },
        promoted,
    )
    .await;
    eprintln!("sentinel: planned failover; every user served again after {took:?}; {outcomes:?}");
    outcomes.assert_fail_closed(&via_sentinel.logs());

    // Cluster: CLUSTER FAILOVER on a replica swaps it with its master without data loss.
    let masters = cluster.master_ports().await;
    let replica = cluster
        .nodes
        .iter()
        .find(|n| !masters.contains(&n.port))
        .expect("a replica")
        .port;
    let promoted = async {
        support::redis_ha::wait_until(Duration::from_secs(10), "replica promoted", || async {
            cluster.master_ports().await.contains(&replica)
        })
        .await
    };
    let (took, outcomes) = fail_over_under_load(
        &via_cluster,
        &cluster_users,
        || {
            let answer = cli_now(replica, &["CLUSTER", "FAILOVER"]);
            assert!(answer.starts_with("OK"), "CLUSTER FAILOVER: {answer}");
        },
        promoted,
    )
    .await;
    eprintln!("cluster: planned failover; every user served again after {took:?}; {outcomes:?}");
    outcomes.assert_fail_closed(&via_cluster.logs());

    // Logins are written to the new masters.
    for proxy in [&via_sentinel, &via_cluster] {
        let login = Browser::new()
            .post(&proxy.url("/login"))
            .form(&[("user", "late")])
            .send()
            .await
            .expect("login");
        assert_eq!(login.status(), 200, "logs:\n{}", proxy.logs());
    }
}

#[tokio::test]
async fn sentinels_and_master_with_their_own_passwords() {
    let passwords = SentinelPasswords {
        data: "data-secret",
        sentinels: "sentinel-secret",
    };
    let service = RedisSentinel::start_with(Some(passwords), None).await;
    let a = legacy_app("a").await;
    let config_with = |sentinel_password: &str| {
        let mut config = ProxyConfig::new("", &[("a", a.address)]);
        config.redis.sentinels = service.sentinel_addresses();
        config.redis.service_name = Some(SERVICE.into());
        config.redis.password = Some(passwords.data.into());
        config.redis.sentinel_password = Some(sentinel_password.into());
        config
    };
    let config = config_with(passwords.sentinels);
    let proxy = ProxyProcess::start(&config).await;
    let mut alice = Browser::new();
    alice.login(&proxy, "alice").await;
    assert_eq!(alice.me(&proxy).await.1.as_deref(), Some("alice"));
    let report = run_check(&config.to_toml()).await;
    assert!(report.contains("1 replica online"), "{report}");
    assert!(report.contains("3 of 3 configured answer"), "{report}");

    // The sentinels' password is theirs: the master's does not open them.
    let report = run_check(&config_with(passwords.data).to_toml()).await;
    assert!(
        report.contains("error    redis: cannot reach Redis at sentinel service mymaster via"),
        "{report}"
    );
    assert!(report.contains("wrong password"), "{report}");
}

#[tokio::test]
async fn a_sentinel_config_without_its_service_name_is_refused_naming_the_key_and_line() {
    let mut config = ProxyConfig::new("", &[("a", "127.0.0.1:1".parse().unwrap())]);
    config.redis.sentinels = vec!["127.0.0.1:26379".into(), "127.0.0.1".into()];
    let toml = config.to_toml();
    let line = toml
        .lines()
        .position(|l| l.starts_with("sentinels"))
        .expect("sentinels line")
        + 1;
    let refused = serve_expecting_exit(&toml).await;
    assert!(!refused.status.success(), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!(
            "{}:{line}: `redis.sentinels`: \"127.0.0.1\": no port",
            refused.config_path
        )),
        "{}",
        refused.stderr
    );
    config.redis.sentinels = vec!["127.0.0.1:26379".into()];
    let refused = serve_expecting_exit(&config.to_toml()).await;
    assert!(
        refused
            .stderr
            .contains("`redis.service_name`: required with redis.sentinels"),
        "{}",
        refused.stderr
    );
}

#[tokio::test]
async fn a_login_that_no_replica_acknowledges_is_served_and_counted() {
    let master = RedisServer::start().await;
    let master_port = master.port.to_string();
    let mut replica =
        RedisServer::start_with(false, &["--replicaof", "127.0.0.1", &master_port]).await;
    let a = legacy_app("a").await;
    let mut config = ProxyConfig::new(&master.url(), &[("a", a.address)]);
    config.redis.wait_replicas = Some(1);
    config.redis.wait_timeout = Some("300ms".into());
    config.admin = true;
    let proxy =
        ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await;
    let timeouts = || async {
        let text = admin_metrics(&proxy, TOKEN).await;
        text.lines()
            .find(|l| l.starts_with("unstick_session_replica_wait_timeouts_total "))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .expect("replica wait metric")
    };
    support::redis_ha::wait_until(Duration::from_secs(10), "replica in sync", || async {
        let info = support::redis_ha::cli(replica.port, &["INFO", "replication"]).await;
        info.contains("master_link_status:up")
    })
    .await;

    // With the replica in sync the login is acknowledged at once.
    let started = Instant::now();
    Browser::new().login(&proxy, "alice").await;
    let acknowledged = started.elapsed();
    assert_eq!(timeouts().await, 0);

    // Without it the login waits wait_timeout, then is served anyway and counted.
    replica.kill();
    let started = Instant::now();
    let mut bob = Browser::new();
    bob.login(&proxy, "bob").await;
    let unacknowledged = started.elapsed();
    eprintln!("login acknowledged in {acknowledged:?}; unacknowledged after {unacknowledged:?}");
    assert!(
        unacknowledged >= Duration::from_millis(300),
        "{unacknowledged:?}"
    );
    assert_eq!(timeouts().await, 1);
    assert_eq!(bob.me(&proxy).await.1.as_deref(), Some("bob"));
}

// ---------------------------------------------------------------------------------------------
// Several proxies, one Redis.
// ---------------------------------------------------------------------------------------------

fn shared_config(redis: &RedisServer, a: SocketAddr, b: SocketAddr) -> String {
    let mut config = ProxyConfig::new(&redis.url(), &[("a", a), ("b", b)]);
    config.admin = true;
    config.to_toml()
}

#[tokio::test]
async fn two_proxies_on_one_redis_share_logins_logouts_and_revocations() {
    let redis = RedisServer::start().await;
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let toml = shared_config(&redis, a.address, b.address);
    let env = [("UNSTICK_ADMIN_TOKEN", TOKEN)];
    let one = ProxyProcess::start_with_env(&toml, &env).await;
    let two = ProxyProcess::start_with_env(&toml, &env).await;

    let mut alice = Browser::new();
    alice.login(&one, "alice").await;
    let mut bob = Browser::new();
    bob.login(&two, "bob").await;
    // Only Redis vouches from here on.
    let (_a, _b) = forget_app_sessions(a, b).await;

    // A login through one proxy is seen by the other.
    for proxy in [&one, &two] {
        assert_eq!(alice.me(proxy).await.1.as_deref(), Some("alice"));
        assert_eq!(bob.me(proxy).await.1.as_deref(), Some("bob"));
    }

    // A logout through the second proxy ends the session on both.
    let alice_cookie = alice.cookie.clone();
    let status = alice.logout(&two).await;
    assert!(status.is_success() || status.is_redirection(), "{status}");
    let stale = Browser {
        cookie: alice_cookie,
        ..Browser::new()
    };
    for proxy in [&one, &two] {
        stale
            .until_anonymous(proxy, "alice's old cookie after her logout")
            .await;
    }

    // An operator's revoke on the first proxy's admin API ends bob's session on both.
    let revoked: serde_json::Value = reqwest::Client::new()
        .delete(one.admin_url("/sessions?user=bob"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("revoke")
        .json()
        .await
        .expect("revoke answer");
    assert_eq!(revoked["revoked"], 1, "{revoked}");
    for proxy in [&two, &one] {
        bob.until_anonymous(proxy, "bob's cookie after the revoke")
            .await;
    }
}

/// Two proxies with `config` and their admin listeners; every login waits for a replica, so
/// that sessions survive their primary's death.
async fn two_proxies_surviving_a_failover(mut config: ProxyConfig) -> (ProxyProcess, ProxyProcess) {
    config.redis.wait_replicas = Some(1);
    config.redis.wait_timeout = Some("2s".into());
    config.admin = true;
    let env = [("UNSTICK_ADMIN_TOKEN", TOKEN)];
    let one = ProxyProcess::start_with_env(&config.to_toml(), &env).await;
    let two = ProxyProcess::start_with_env(&config.to_toml(), &env).await;
    (one, two)
}

/// How often `proxy`'s near cache was dropped whole.
async fn cache_flushes(proxy: &ProxyProcess) -> f64 {
    metric(
        &admin_metrics(proxy, TOKEN).await,
        "unstick_near_cache_flushes_total",
        &[],
    )
}

#[tokio::test]
async fn with_sentinel_the_near_caches_follow_the_master_across_a_failover() {
    let mut service = RedisSentinel::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app("", &[("t", app.address)]);
    config.redis.sentinels = service.sentinel_addresses();
    config.redis.service_name = Some(SERVICE.into());
    let (one, two) = two_proxies_surviving_a_failover(config).await;

    let alice = test_app_login(&one, "alice").await;
    until_near_cached(&two, TOKEN, &alice, "alice").await;
    let revoked = reqwest::Client::new()
        .delete(one.admin_url("/sessions?user=alice"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), 200);
    until_refused(&two, &alice, "revoke through the other proxy").await;

    // The master dies; the promoted replica tracks for both proxies.
    let bob = test_app_login(&one, "bob").await;
    until_near_cached(&two, TOKEN, &bob, "bob").await;
    let flushes = cache_flushes(&two).await;
    service.master.kill();
    wait_until(Duration::from_secs(30), "the replica promoted", || async {
        service.reported_master_port().await == Some(service.replica.port)
    })
    .await;
    for proxy in [&one, &two] {
        until_served_again(proxy, &bob, "bob served again").await;
    }
    until_near_cached(&two, TOKEN, &bob, "bob").await;
    let after = cache_flushes(&two).await;
    assert!(after > flushes, "the cache was dropped on the switch");
    logout(&one, &bob).await;
    until_refused(&two, &bob, "logout after the failover").await;
}

/// Waits (bounded) until `proxy` serves `cookie` again after a failover: each proxy finds the
/// new primary on its own.
async fn until_served_again(proxy: &ProxyProcess, cookie: &str, what: &str) {
    wait_until(Duration::from_secs(30), what, || async {
        let answer = reqwest::Client::new()
            .get(proxy.url("/echo"))
            .header("cookie", cookie)
            .send()
            .await;
        matches!(answer, Ok(answer) if answer.status() == 200)
    })
    .await;
}

async fn logout(proxy: &ProxyProcess, cookie: &str) {
    let logout = reqwest::Client::new()
        .post(proxy.url("/logout"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("logout");
    assert_eq!(logout.status(), 200);
}

#[tokio::test]
async fn on_a_cluster_the_near_caches_hear_every_primary_and_follow_a_failover() {
    let mut cluster = RedisCluster::start().await;
    let app = TestApp::start().await;
    let mut config = ProxyConfig::for_test_app("", &[("t", app.address)]);
    config.redis.cluster_nodes = cluster.seeds();
    let (one, two) = two_proxies_surviving_a_failover(config).await;

    // Sessions on every primary, each cached by the other proxy.
    let mut sessions = Vec::new();
    for i in 0..12 {
        let user = format!("user{i}");
        let cookie = test_app_login(&one, &user).await;
        until_near_cached(&two, TOKEN, &cookie, &user).await;
        sessions.push((user, cookie));
    }
    let primaries = cluster.master_ports().await;
    assert_eq!(primaries.len(), 3);
    for port in &primaries {
        assert!(cluster.keys_on(*port).await > 0, "no session on :{port}");
    }

    // A logout through one is seen by two, whichever primary holds the session.
    for (user, cookie) in &sessions[..6] {
        logout(&one, cookie).await;
        until_refused(&two, cookie, user).await;
    }

    // The primary holding the most sessions dies; its replica is promoted.
    let mut victim = (0, 0);
    for port in primaries {
        let keys = cluster.keys_on(port).await;
        if keys > victim.1 {
            victim = (port, keys);
        }
    }
    let flushes = cache_flushes(&two).await;
    cluster.node_mut(victim.0).kill();
    cluster.wait_healthy(3, Duration::from_secs(30)).await;
    for (user, cookie) in &sessions[6..] {
        until_served_again(&one, cookie, user).await;
        until_served_again(&two, cookie, user).await;
        until_near_cached(&two, TOKEN, cookie, user).await;
    }
    let after = cache_flushes(&two).await;
    assert!(after > flushes, "the cache was dropped on the switch");

    // Logouts through one are still seen by two, on the new primaries too.
    for (user, cookie) in &sessions[6..] {
        logout(&one, cookie).await;
        until_refused(&two, cookie, user).await;
    }
}
