//! The near cache with real processes: two proxies on one Redis (a change made through either,
//! or by hand in Redis, is honoured by the other), hits that cost Redis no command, idle and
//! absolute ends and renewals of cached sessions, the loss of the invalidation connection,
//! and `serve_stale_for` while Redis is down (Sentinel and Cluster: tests/redis_ha.rs).

mod support;

use fred::prelude::*;
use std::time::{Duration, Instant};
use support::*;

const TOKEN: &str = "test-admin-token-0123456789";
/// Generous: eventual effects are polled for, never timed.
const DEADLINE: Duration = Duration::from_secs(15);

fn test_app_config(redis: &RedisServer, app: &TestApp) -> ProxyConfig {
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.admin = true;
    config
}

fn near_cache_line(config: &mut ProxyConfig, line: &str) {
    config
        .raw_lines
        .push(("[redis.near_cache]".to_string(), line.to_string()));
}

async fn start(config: &ProxyConfig) -> ProxyProcess {
    ProxyProcess::start_with_env(&config.to_toml(), &[("UNSTICK_ADMIN_TOKEN", TOKEN)]).await
}

async fn counter(proxy: &ProxyProcess, name: &str) -> f64 {
    metric(&admin_metrics(proxy, TOKEN).await, name, &[])
}

async fn cache_on(proxy: &ProxyProcess, cookie: &str, user: &str) {
    until_near_cached(proxy, TOKEN, cookie, user).await;
}

fn session_key(cookie: &str) -> String {
    format!("test:s:{}", session_hash(cookie.split_once('=').unwrap().1))
}

/// Calls of one Redis command so far (`INFO commandstats`).
async fn command_calls(client: &Client, command: &str) -> u64 {
    let info: String = client
        .custom(fred::cmd!("INFO"), vec!["commandstats"])
        .await
        .unwrap();
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

#[tokio::test]
async fn logouts_revokes_and_evictions_through_one_proxy_are_seen_by_the_other() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &app);
    config.session.max_sessions_per_user = Some(2);
    let one = start(&config).await;
    let two = start(&config).await;

    // A logout through one.
    let alice = test_app_login(&one, "alice").await;
    cache_on(&two, &alice, "alice").await;
    let logout = reqwest::Client::new()
        .post(one.url("/logout"))
        .header("cookie", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    until_refused(&two, &alice, "logout through the other proxy").await;
    assert!(counter(&two, "unstick_near_cache_invalidations_total").await >= 1.0);

    // An operator's revoke of every session of a user on one's admin API.
    let laptop = test_app_login(&one, "bob").await;
    let phone = test_app_login(&one, "bob").await;
    cache_on(&two, &laptop, "bob").await;
    cache_on(&two, &phone, "bob").await;
    let revoked = reqwest::Client::new()
        .delete(one.admin_url("/sessions?user=bob"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    until_refused(&two, &laptop, "revoke (laptop)").await;
    until_refused(&two, &phone, "revoke (phone)").await;

    // The per-user cap ends the oldest session.
    let first = test_app_login(&one, "carol").await;
    cache_on(&two, &first, "carol").await;
    let second = test_app_login(&one, "carol").await;
    let _third = test_app_login(&one, "carol").await;
    until_refused(&two, &first, "eviction by the cap").await;
    assert_eq!(user_seen(&two, &second).await.as_deref(), Some("carol"));

    // The app asks to log out everywhere.
    let dave = test_app_login(&one, "dave").await;
    cache_on(&two, &dave, "dave").await;
    log_out_everywhere(&one, &dave).await;
    until_refused(&two, &dave, "logout everywhere").await;

    assert!(counter(&two, "unstick_near_cache_invalidations_total").await >= 5.0);
    assert_eq!(user_seen(&two, &second).await.as_deref(), Some("carol"));
}

#[tokio::test]
async fn changes_made_by_hand_in_redis_are_seen() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let proxy = start(&test_app_config(&redis, &app)).await;
    let client = redis.client().await;

    let deleted = test_app_login(&proxy, "erin").await;
    cache_on(&proxy, &deleted, "erin").await;
    let _: i64 = client.del(session_key(&deleted)).await.unwrap();
    until_refused(&proxy, &deleted, "DEL").await;

    // Expired by Redis itself.
    let expired = test_app_login(&proxy, "frank").await;
    cache_on(&proxy, &expired, "frank").await;
    let _: bool = client
        .pexpire(session_key(&expired), 1, None)
        .await
        .unwrap();
    until_refused(&proxy, &expired, "expiry in Redis").await;

    let flushed = test_app_login(&proxy, "grace").await;
    cache_on(&proxy, &flushed, "grace").await;
    let flushes = counter(&proxy, "unstick_near_cache_flushes_total").await;
    let _: () = client.flushall(false).await.unwrap();
    until_refused(&proxy, &flushed, "FLUSHALL").await;
    assert!(counter(&proxy, "unstick_near_cache_flushes_total").await > flushes);
}

#[tokio::test]
async fn a_cached_session_costs_redis_no_command_and_the_cache_can_be_turned_off() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let client = redis.client().await;
    let cached = start(&test_app_config(&redis, &app)).await;
    let mut off = test_app_config(&redis, &app);
    near_cache_line(&mut off, "enabled = false");
    let uncached = start(&off).await;

    let cookie = test_app_login(&cached, "heidi").await;
    cache_on(&cached, &cookie, "heidi").await;
    let before = command_calls(&client, "get").await;
    for _ in 0..20 {
        assert_eq!(user_seen(&cached, &cookie).await.as_deref(), Some("heidi"));
    }
    assert_eq!(command_calls(&client, "get").await, before);
    let text = admin_metrics(&cached, TOKEN).await;
    assert_eq!(metric(&text, "unstick_near_cache_entries", &[]), 1.0);

    for _ in 0..20 {
        assert_eq!(
            user_seen(&uncached, &cookie).await.as_deref(),
            Some("heidi")
        );
    }
    assert_eq!(command_calls(&client, "get").await, before + 20);
    let text = admin_metrics(&uncached, TOKEN).await;
    assert_eq!(metric(&text, "unstick_near_cache_hits_total", &[]), 0.0);
}

#[tokio::test]
async fn cached_sessions_are_renewed_and_still_end_when_idle_or_at_their_lifetime() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut config = test_app_config(&redis, &app);
    // Renewed at most every 200 ms.
    config.session.idle_timeout = "2s".into();
    config.session.absolute_lifetime = "6s".into();
    let proxy = start(&config).await;
    let client = redis.client().await;

    // Used from the cache for longer than the idle timeout: the hits renew it in Redis.
    let busy = test_app_login(&proxy, "ivan").await;
    let idle = test_app_login(&proxy, "judy").await;
    cache_on(&proxy, &idle, "judy").await;
    let logged_in = Instant::now();
    let seen_at_login = stored_seen(client.get(session_key(&busy)).await.unwrap()).unwrap();
    let mut uses = 0;
    while logged_in.elapsed() < Duration::from_secs(3) {
        assert_eq!(user_seen(&proxy, &busy).await.as_deref(), Some("ivan"));
        uses += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits = counter(&proxy, "unstick_near_cache_hits_total").await;
    assert!(hits >= f64::from(uses) / 2.0, "{hits} hits of {uses} uses");
    let seen = stored_seen(client.get(session_key(&busy)).await.unwrap()).unwrap();
    assert!(seen > seen_at_login, "renewed in Redis by cached uses");

    // Unused for its idle timeout: ended, though it was cached.
    assert_eq!(user_seen(&proxy, &idle).await, None, "idle session served");

    // Used without a pause, it still ends at its absolute lifetime.
    let started = Instant::now();
    while user_seen(&proxy, &busy).await.is_some() {
        assert!(started.elapsed() < DEADLINE, "served past its lifetime");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged_in.elapsed() >= Duration::from_secs(5));
}

#[tokio::test]
async fn losing_the_invalidation_connection_drops_the_cache_and_tracking_resumes() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let proxy = start(&test_app_config(&redis, &app)).await;
    let client = redis.client().await;

    let cookie = test_app_login(&proxy, "kate").await;
    cache_on(&proxy, &cookie, "kate").await;
    let flushes = counter(&proxy, "unstick_near_cache_flushes_total").await;
    // The invalidation connection is the only one in subscriber mode.
    let killed: i64 = client
        .custom(fred::cmd!("CLIENT"), vec!["KILL", "TYPE", "pubsub"])
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let started = Instant::now();
    while counter(&proxy, "unstick_near_cache_flushes_total").await <= flushes {
        assert!(started.elapsed() < DEADLINE, "cache not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(proxy.count_logs("near cache off") >= 1, "{}", proxy.logs());

    // Back and tracking again: cached anew, and a change is seen.
    cache_on(&proxy, &cookie, "kate").await;
    let _: i64 = client.del(session_key(&cookie)).await.unwrap();
    until_refused(&proxy, &cookie, "DEL after the reconnection").await;
}

#[tokio::test]
async fn while_redis_is_down_cached_sessions_fail_closed_unless_served_stale_for_a_while() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let mut stale_config = test_app_config(&redis, &app);
    near_cache_line(&mut stale_config, "serve_stale_for = \"10s\"");
    let stale = start(&stale_config).await;
    let strict = start(&test_app_config(&redis, &app)).await;

    let cached = test_app_login(&stale, "leo").await;
    cache_on(&stale, &cached, "leo").await;
    cache_on(&strict, &cached, "leo").await;
    let uncached = test_app_login(&stale, "mia").await;
    redis.kill();
    let killed = Instant::now();

    // Without serve_stale_for: 503s once the loss is known, as without the cache.
    let started = Instant::now();
    loop {
        let status = echo_status(&strict, &cached).await;
        if status == 503 {
            break;
        }
        assert_eq!(status, 200);
        assert!(started.elapsed() < DEADLINE, "cached session served on");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..5 {
        assert_eq!(echo_status(&strict, &cached).await, 503);
    }

    // With it: the cached session is served, an uncached one is not, and not for long.
    assert_eq!(user_seen(&stale, &cached).await.as_deref(), Some("leo"));
    assert_eq!(echo_status(&stale, &uncached).await, 503);
    while echo_status(&stale, &cached).await != 503 {
        assert!(killed.elapsed() < DEADLINE * 2, "stale session served on");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "stale session served for about {:?} after Redis died",
        killed.elapsed()
    );
}

async fn echo_status(proxy: &impl RunningProxy, cookie: &str) -> u16 {
    reqwest::Client::new()
        .get(proxy.url("/echo"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
