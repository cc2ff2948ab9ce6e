//! The failure promises as a suite: real processes under a concurrent session load while Redis
//! is killed, frozen or paused, and while an app instance dies. Counted over every request: a
//! request carrying a session is answered as its own user or with 503 + Retry-After; never as
//! anonymous, never as somebody else; service comes back when Redis does, sessions included.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use unstick::demo::LegacyApp;

/// Six users logged in through unstick in front of instances `a` and `b`, both then restarted
/// so that they forget every login: only Redis vouches for the users, and an anonymous
/// pass-through would show as `user: null`.
struct Stage {
    redis: RedisServer,
    proxy: ProxyProcess,
    /// `(user, cookie)`.
    users: Vec<(String, String)>,
    apps: Vec<(LegacyApp, SocketAddr)>,
}

async fn stage(redis: RedisServer) -> Stage {
    let a = legacy_app("a").await;
    let b = legacy_app("b").await;
    let (a_address, b_address) = (a.address, b.address);
    let config = ProxyConfig::new(&redis.url(), &[("a", a_address), ("b", b_address)]);
    let proxy = ProxyProcess::start(&config).await;
    let mut users = Vec::new();
    for i in 0..6 {
        let name = format!("user{i}");
        let mut browser = Browser::new();
        browser.login(&proxy, &name).await;
        users.push((name, browser.cookie.expect("a login cookie")));
    }
    a.stop().await;
    b.stop().await;
    let apps = vec![
        (
            legacy_app_with(named("a"), Some(a_address)).await,
            a_address,
        ),
        (
            legacy_app_with(named("b"), Some(b_address)).await,
            b_address,
        ),
    ];
    let stage = Stage {
        redis,
        proxy,
        users,
        apps,
    };
    served_again(&stage).await;
    stage
}

fn named(name: &str) -> unstick::demo::LegacyAppConfig {
    unstick::demo::LegacyAppConfig::new(name)
}

/// Waits (bounded) until every user is answered as themselves again.
async fn served_again(stage: &Stage) {
    let served = every_user_served(&stage.proxy, &stage.users, Duration::from_secs(15)).await;
    assert!(
        served.is_some(),
        "not every user served again; logs:\n{}",
        stage.proxy.logs()
    );
}

/// Runs the load, applies `fault` once it runs, `heal` after a while, and returns what the
/// load saw until every user was served again (and a little after).
async fn under_load(
    stage: &mut Stage,
    fault: impl FnOnce(&mut RedisServer),
    heal: impl AsyncFnOnce(&mut RedisServer),
) -> Outcomes {
    let load = SessionLoad::start(&stage.proxy, &stage.users, 12);
    tokio::time::sleep(Duration::from_millis(300)).await;
    fault(&mut stage.redis);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    heal(&mut stage.redis).await;
    served_again(stage).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop().await
}

#[tokio::test]
async fn redis_killed_under_load_fails_closed_and_its_aof_keeps_every_session() {
    let mut stage = stage(RedisServer::start_persistent().await).await;
    let outcomes = under_load(
        &mut stage,
        RedisServer::kill,
        async |redis: &mut RedisServer| redis.restart().await,
    )
    .await;
    outcomes.assert_fail_closed(&stage.proxy.logs());
    assert!(
        outcomes.retry_later > 0,
        "the outage was seen: {outcomes:?}"
    );
    assert_eq!(stage.redis.keys("test:s:*").await.len(), 6, "sessions kept");
}

#[tokio::test]
async fn redis_frozen_under_load_fails_closed_and_recovers() {
    let mut stage = stage(RedisServer::start().await).await;
    let outcomes = under_load(
        &mut stage,
        |redis: &mut RedisServer| redis.pause(),
        async |redis: &mut RedisServer| redis.resume(),
    )
    .await;
    outcomes.assert_fail_closed(&stage.proxy.logs());
    assert!(
        outcomes.retry_later > 0,
        "the outage was seen: {outcomes:?}"
    );
}

#[tokio::test]
async fn redis_paused_by_client_pause_under_load_fails_closed_and_recovers() {
    let mut stage = stage(RedisServer::start().await).await;
    let admin = stage.redis.client().await;
    let outcomes = under_load(
        &mut stage,
        |_| {},
        async |_: &mut RedisServer| {
            // Pausing from here keeps the order with the load: the pause starts now and lifts
            // by itself.
            let _: String = fred::interfaces::ClientLike::custom(
                &admin,
                fred::cmd!("CLIENT"),
                vec!["PAUSE", "1500", "ALL"],
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(1600)).await;
        },
    )
    .await;
    outcomes.assert_fail_closed(&stage.proxy.logs());
    assert!(outcomes.retry_later > 0, "the pause was seen: {outcomes:?}");
}

#[tokio::test]
async fn an_app_instance_killed_under_load_logs_nobody_out() {
    let mut stage = stage(RedisServer::start().await).await;
    let load = SessionLoad::start(&stage.proxy, &stage.users, 12);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (a, _) = stage.apps.remove(0);
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    served_again(&stage).await;
    let outcomes = load.stop().await;
    assert_eq!(outcomes.anonymous, 0, "{outcomes:?}");
    assert_eq!(outcomes.wrong_user, 0, "{outcomes:?}");
    assert_eq!(outcomes.retry_later, 0, "Redis is fine: {outcomes:?}");
    // Only requests already sent to the dying instance may fail (never retried, as they may
    // not be idempotent): at most one per load loop.
    assert!(
        outcomes.other.iter().all(|(status, _)| *status == 502) && outcomes.other.len() <= 12,
        "{outcomes:?}"
    );
    assert!(outcomes.own_user > 0, "{outcomes:?}");
}
