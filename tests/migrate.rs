//! `unstick migrate`, the bulk pre-copy, run as the real binary: sessions of a second
//! `redis-server` (connect-redis JSON), a PostgreSQL table in a schema of its own and a PHP
//! session directory copied into the proxy's Redis ahead of the cutover, then served by the
//! proxy without the old store. Newer sessions, ended ids and reruns are left alone.

mod support;

use fred::interfaces::{KeysInterface, SortedSetsInterface};
use fred::types::Expiration;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime};
use support::RunningProxy;
use support::{
    run_unstick, session_hash, signal, start_server, stored_record, user_seen, CommandRun, Mode,
    OldStore, OneShot, PgDatabase, ProxyConfig, RedisServer, TestApp,
};

/// A connect-redis value as express-session + passport write it; `user: None` is a session
/// nobody logged in to, `expires` an ISO date for a key without TTL.
fn express_session(user: Option<&str>, expires: Option<SystemTime>) -> String {
    json!({
        "cookie": {
            "originalMaxAge": 7_200_000,
            "expires": expires.map(|at| humantime::format_rfc3339_millis(at).to_string()),
            "httpOnly": true,
            "path": "/"
        },
        "passport": user.map(|user| json!({"user": user})),
        "roles": ["user", "beta"],
    })
    .to_string()
}

fn connect_redis_store(old: &RedisServer) -> OldStore {
    OldStore::new("old-redis", "redis")
        .with("url", &old.url())
        .with("key", "sess:{id}")
        .with("format", "json")
        .with("user", "/passport/user")
}

/// The proxy's config for a [`TestApp`] in overlap mode, asking `stores` in order.
fn config(redis: &RedisServer, app: &TestApp, stores: Vec<OldStore>) -> ProxyConfig {
    let mut config = ProxyConfig::for_test_app(&redis.url(), &[("t", app.address)]);
    config.mode = Mode::Overlap;
    for store in stores {
        config.use_old_store(store);
    }
    config
}

async fn migrate(config: &ProxyConfig, extra: &[&str]) -> CommandRun {
    let mut args = vec!["migrate", "--route", "/"];
    args.extend_from_slice(extra);
    run_unstick(&config.to_toml(), &args).await
}

/// The summary's counts by label (`copied: 3` -> `copied` = 3).
fn counts(run: &CommandRun) -> Vec<(String, u64)> {
    run.stdout
        .lines()
        .filter_map(|line| {
            let (label, value) = line.trim().rsplit_once(':')?;
            Some((label.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

fn count(run: &CommandRun, label: &str) -> u64 {
    counts(run)
        .into_iter()
        .find(|(l, _)| l == label)
        .map(|(_, value)| value)
        .unwrap_or_else(|| panic!("no {label:?} in the summary:\n{}", run.explain()))
}

/// The session's record in the proxy's Redis and its key's PTTL (ms).
async fn stored(redis: &RedisServer, id: &str) -> Option<(Value, i64)> {
    let client = redis.client().await;
    let key = format!("test:s:{}", session_hash(id));
    let rec = stored_record(client.get(&key).await.unwrap());
    let ttl: i64 = client.pttl(&key).await.unwrap();
    rec.map(|rec| (serde_json::from_str(&rec).unwrap(), ttl))
}

/// Whether the user's index in the proxy's Redis holds the session.
async fn indexed(redis: &RedisServer, user: &str, id: &str) -> bool {
    let score: Option<f64> = redis
        .client()
        .await
        .zscore(format!("test:u:{}", session_hash(user)), session_hash(id))
        .await
        .unwrap();
    score.is_some()
}

async fn session_keys(redis: &RedisServer) -> usize {
    redis.keys("test:s:*").await.len()
}

#[tokio::test]
async fn foreign_redis_sessions_are_copied_ahead_and_served_without_the_old_store() {
    let redis = RedisServer::start().await;
    let mut old = RedisServer::start().await;
    let app = TestApp::start().await;
    let config = config(&redis, &app, vec![connect_redis_store(&old)]);
    let proxy = start_server(&config).await;
    let writer = old.client().await;
    let set = |key: &str, value: String, ttl: Option<i64>| {
        let writer = writer.clone();
        let key = key.to_string();
        async move {
            let () = writer
                .set(key, value, ttl.map(Expiration::EX), None, false)
                .await
                .unwrap();
        }
    };

    // bob and carol used the proxy already: bob's session is in Redis (newer than what the
    // old store will hold), carol logged out (an ended id). The old app still has both.
    set(
        "sess:bob-sid",
        express_session(Some("bob"), None),
        Some(3600),
    )
    .await;
    set(
        "sess:carol-sid",
        express_session(Some("carol"), None),
        Some(3600),
    )
    .await;
    assert_eq!(
        user_seen(&proxy, "sid=bob-sid").await.as_deref(),
        Some("bob")
    );
    assert_eq!(
        user_seen(&proxy, "sid=carol-sid").await.as_deref(),
        Some("carol")
    );
    let logout = reqwest::Client::new()
        .post(proxy.url("/logout"))
        .header("cookie", "sid=carol-sid")
        .send()
        .await
        .unwrap();
    assert!(logout.status().is_success());
    assert_eq!(user_seen(&proxy, "sid=carol-sid").await, None);
    set(
        "sess:bob-sid",
        express_session(Some("mallory"), None),
        Some(3600),
    )
    .await;
    set(
        "sess:carol-sid",
        express_session(Some("carol"), None),
        Some(3600),
    )
    .await;

    // alice never came back since the old app logged her in: 10 minutes left there.
    set(
        "sess:alice-sid",
        express_session(Some("alice"), None),
        Some(600),
    )
    .await;
    // dan's key has no TTL, and its cookie expired a minute ago.
    let past = SystemTime::now() - Duration::from_secs(60);
    set(
        "sess:dan-sid",
        express_session(Some("dan"), Some(past)),
        None,
    )
    .await;
    set("sess:anon-sid", express_session(None, None), Some(600)).await;
    set("sess:junk-sid", "{not json".into(), Some(600)).await;
    set(
        "other:alice-sid",
        express_session(Some("eve"), None),
        Some(600),
    )
    .await;
    let keys_before = session_keys(&redis).await;

    let dry = migrate(&config, &["--dry-run"]).await;
    assert_eq!(dry.code, Some(0), "{}", dry.explain());
    assert!(
        dry.stdout.contains("dry run: nothing written"),
        "{}",
        dry.explain()
    );
    for (label, expected) in [
        ("listed", 6),
        ("would copy", 1),
        ("already present", 1),
        ("ended (logged out)", 1),
        ("expired", 1),
        ("unreadable", 1),
        ("anonymous (no user)", 1),
    ] {
        assert_eq!(count(&dry, label), expected, "{label}: {}", dry.explain());
    }
    assert_eq!(
        session_keys(&redis).await,
        keys_before,
        "a dry run writes nothing"
    );
    assert!(stored(&redis, "alice-sid").await.is_none());

    let run = migrate(&config, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.explain());
    for (label, expected) in [
        ("listed", 6),
        ("copied", 1),
        ("already present", 1),
        ("ended (logged out)", 1),
        ("expired", 1),
        ("unreadable", 1),
        ("anonymous (no user)", 1),
    ] {
        assert_eq!(count(&run, label), expected, "{label}: {}", run.explain());
    }
    for id in ["alice-sid", "bob-sid", "carol-sid", "junk-sid", "anon-sid"] {
        assert!(
            !run.stderr.contains(id),
            "raw session id logged:\n{}",
            run.explain()
        );
    }

    // alice: as a copy-forward writes her, living no longer than the old store would have.
    let (record, ttl) = stored(&redis, "alice-sid").await.expect("alice copied");
    assert_eq!(record["u"], "alice");
    assert_eq!(record["r"], json!(["user", "beta"]));
    assert!(
        ttl > 590_000 && ttl <= 600_000,
        "the copy keeps the 10 minutes it had left, no more: PTTL {ttl} ms"
    );
    assert!(
        indexed(&redis, "alice", "alice-sid").await,
        "in alice's index"
    );
    // bob's newer session is untouched, carol's logout holds, the rest were not copied.
    let (record, _) = stored(&redis, "bob-sid").await.expect("bob's session");
    assert_eq!(record["u"], "bob");
    assert!(stored(&redis, "carol-sid").await.is_none());
    for id in ["dan-sid", "anon-sid", "junk-sid"] {
        assert!(stored(&redis, id).await.is_none(), "{id} copied");
    }

    // A rerun copies nothing twice.
    let rerun = migrate(&config, &[]).await;
    assert_eq!(rerun.code, Some(0), "{}", rerun.explain());
    assert_eq!(count(&rerun, "copied"), 0, "{}", rerun.explain());
    assert_eq!(count(&rerun, "already present"), 2, "{}", rerun.explain());
    assert_eq!(
        count(&rerun, "ended (logged out)"),
        1,
        "{}",
        rerun.explain()
    );

    // The old store is gone; alice is logged in from Redis alone, and carol stays out.
    old.kill();
    assert_eq!(
        user_seen(&proxy, "sid=alice-sid").await.as_deref(),
        Some("alice")
    );
    assert_eq!(user_seen(&proxy, "sid=carol-sid").await, None);
    // Her first request renews the copy to the full idle timeout, as for a copy-forward.
    let mut renewed = 0;
    for _ in 0..100 {
        renewed = stored(&redis, "alice-sid").await.expect("alice").1;
        if renewed > 600_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        renewed > 1_700_000,
        "renewed to the idle timeout: PTTL {renewed} ms"
    );
    assert_eq!(
        proxy
            .logs()
            .matches("copied forward from old store")
            .count(),
        2
    );
}

const CONNECT_PG_SIMPLE_TABLE: &str = r#"
CREATE SCHEMA legacy;
CREATE TABLE legacy.session (
  "sid" varchar NOT NULL COLLATE "default" PRIMARY KEY,
  "sess" json NOT NULL,
  "expire" timestamp(6) NOT NULL
);
"#;

/// A row as connect-pg-simple writes it.
fn insert_pg_session(db: &PgDatabase, sid: &str, sess: &str, expires_in_secs: i64) {
    db.exec(&format!(
        "INSERT INTO legacy.session (sid, sess, expire) \
         SELECT '{sid}', '{}', to_timestamp(extract(epoch from now()) + {expires_in_secs})",
        sess.replace('\'', "''")
    ));
}

#[tokio::test]
async fn postgres_and_php_sessions_are_copied_and_a_whoami_store_is_named_as_unlisted() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let db = PgDatabase::create();
    db.exec(CONNECT_PG_SIMPLE_TABLE);
    // More rows than one page (100), so the listing goes page after page.
    for n in 0..130 {
        insert_pg_session(
            &db,
            &format!("pg-{n:03}"),
            &express_session(Some(&format!("user{n}")), None),
            3600,
        );
    }
    insert_pg_session(&db, "pg-old", &express_session(Some("olga"), None), -60);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sess_php0123456789"),
        "user|s:4:\"paul\";roles|a:1:{i:0;s:5:\"admin\";}",
    )
    .unwrap();
    std::fs::write(dir.path().join("sess_phpstale01"), "user|s:4:\"sam\";").unwrap();
    let stale = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(dir.path().join("sess_phpstale01"))
        .unwrap()
        .set_modified(stale)
        .unwrap();
    std::fs::write(dir.path().join("sess_phpbroken1"), "user|s:99:\"x").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a session").unwrap();

    let config = config(
        &redis,
        &app,
        vec![
            OldStore::whoami("app", "/whoami"),
            OldStore::new("old-pg", "postgres")
                .with("url", &db.url())
                .with("format", "connect-pg-simple")
                .with("table", "legacy.session")
                .with("user", "/passport/user"),
            OldStore::php_files("php", dir.path()).with("gc_maxlifetime", "24m"),
        ],
    );

    let run = migrate(&config, &[]).await;
    assert_eq!(run.code, Some(0), "{}", run.explain());
    assert_eq!(count(&run, "listed"), 134, "{}", run.explain());
    assert_eq!(count(&run, "copied"), 131, "{}", run.explain());
    assert_eq!(count(&run, "expired"), 2, "{}", run.explain());
    assert_eq!(count(&run, "unreadable"), 1, "{}", run.explain());
    assert!(
        run.stdout.contains(
            "old store app (kind whoami) cannot be listed; its sessions are copied forward on first use instead"
        ),
        "{}",
        run.explain()
    );
    let (record, ttl) = stored(&redis, "pg-007").await.expect("a postgres session");
    assert_eq!(record["u"], "user7");
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "PTTL {ttl} ms");
    let (record, ttl) = stored(&redis, "php0123456789")
        .await
        .expect("the PHP session");
    assert_eq!(record["u"], "paul");
    assert!(
        ttl > 1_400_000 && ttl <= 1_440_000,
        "24 minutes at most: PTTL {ttl} ms"
    );
    assert!(stored(&redis, "pg-old").await.is_none());
    assert!(stored(&redis, "phpstale01").await.is_none());

    // Through the proxy, with the database and the files gone.
    drop(db);
    std::fs::remove_file(dir.path().join("sess_php0123456789")).unwrap();
    let proxy = start_server(&config).await;
    assert_eq!(
        user_seen(&proxy, "sid=php0123456789").await.as_deref(),
        Some("paul")
    );
    assert_eq!(
        user_seen(&proxy, "sid=pg-129").await.as_deref(),
        Some("user129")
    );
    assert_eq!(app.whoami_calls(), 0, "no old store was asked");
}

#[tokio::test]
async fn an_interrupted_run_leaves_whole_sessions_and_a_rerun_finishes() {
    let redis = RedisServer::start().await;
    let old = RedisServer::start().await;
    let app = TestApp::start().await;
    let writer = old.client().await;
    for n in 0..200 {
        let () = writer
            .set(
                format!("sess:s{n:03}"),
                express_session(Some(&format!("u{n}")), None),
                Some(Expiration::EX(3600)),
                None,
                false,
            )
            .await
            .unwrap();
    }
    let config = config(&redis, &app, vec![connect_redis_store(&old)]);

    let slow = OneShot::start(
        &config.to_toml(),
        &["migrate", "--route", "/", "--rate", "40"],
    );
    for _ in 0..200 {
        if session_keys(&redis).await >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(slow.pid(), "INT");
    let stopped = slow.finish().await;
    assert_eq!(stopped.code, Some(130), "{}", stopped.explain());
    assert!(
        stopped.stderr.contains("run the same command again"),
        "{}",
        stopped.explain()
    );
    let first = count(&stopped, "copied");
    assert!(first > 0 && first < 200, "{}", stopped.explain());
    // Every session written is whole: record, TTL and index entry.
    assert_eq!(session_keys(&redis).await as u64, first);
    for key in redis.keys("test:s:*").await {
        let client = redis.client().await;
        let rec = stored_record(client.get(&key).await.unwrap()).unwrap();
        let record: Value = serde_json::from_str(&rec).unwrap();
        let ttl: i64 = client.pttl(&key).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL");
        let user = record["u"].as_str().unwrap();
        let hash = key.trim_start_matches("test:s:");
        let score: Option<f64> = client
            .zscore(format!("test:u:{}", session_hash(user)), hash)
            .await
            .unwrap();
        assert!(score.is_some(), "{user}'s session not indexed");
    }

    let rerun = migrate(&config, &["--rate", "0"]).await;
    assert_eq!(rerun.code, Some(0), "{}", rerun.explain());
    assert_eq!(
        count(&rerun, "already present"),
        first,
        "{}",
        rerun.explain()
    );
    assert_eq!(count(&rerun, "copied"), 200 - first, "{}", rerun.explain());
    assert_eq!(session_keys(&redis).await, 200);
}

#[tokio::test]
async fn an_unknown_route_or_a_route_without_a_listable_store_is_refused() {
    let redis = RedisServer::start().await;
    let app = TestApp::start().await;
    let config = config(&redis, &app, vec![OldStore::whoami("app", "/whoami")]);

    let unknown = run_unstick(&config.to_toml(), &["migrate", "--route", "/shop"]).await;
    assert_eq!(unknown.code, Some(1), "{}", unknown.explain());
    assert!(
        unknown.stderr.contains("no route \"/shop\" in the config")
            && unknown.stderr.contains("its routes: /"),
        "{}",
        unknown.explain()
    );

    let whoami_only = migrate(&config, &[]).await;
    assert_eq!(whoami_only.code, Some(1), "{}", whoami_only.explain());
    assert!(
        whoami_only.stderr.contains(
            "route / has no old store that can be listed: old store app (kind whoami) cannot be \
             listed; its sessions are copied forward on first use instead"
        ),
        "{}",
        whoami_only.explain()
    );
    assert_eq!(session_keys(&redis).await, 0);
}
