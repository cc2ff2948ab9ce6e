//! The old stores read directly, against real servers and real payloads: a second
//! `redis-server` (connect-redis JSON, phpredis), PHP session files, and the local PostgreSQL
//! (connect-pg-simple, Django, a custom query). Payloads from real PHP and real Django are the
//! committed fixtures in tests/data (their scripts say how they were made).

mod support;

use base64::Engine;
use fred::interfaces::KeysInterface;
use fred::types::Expiration;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use support::{PgDatabase, RedisServer};
use unstick::config::{IdFormat, IdentityMapping, UpstreamConfig};
use unstick::session::cookie::parse_session_cookie;
use unstick::session::old_store::{
    Decoded, Listed, LookupContext, OldSession, OldStore, OldStoreError,
};
use unstick::session::old_stores::django::DjangoSigner;
use unstick::session::old_stores::php_serialize;
use unstick::session::old_stores::{
    ForeignFormat, ForeignRedisStore, PgFormat, PhpFilesStore, PostgresStore,
};
use unstick::session::SessionId;
use unstick::upstream::UpstreamPool;

// ---------------------------------------------------------------------------------------------
// Shared helpers

fn mapping(user: &str) -> IdentityMapping {
    IdentityMapping {
        user: user.into(),
        roles: "/roles".into(),
        email: "/email".into(),
        attributes: Default::default(),
    }
}

fn sid(id: &str) -> SessionId {
    parse_session_cookie(id, &IdFormat::Plain).expect("a plain id")
}

/// The direct stores use nothing of the lookup context but it must exist.
fn pool() -> Arc<UpstreamPool> {
    UpstreamPool::new(&UpstreamConfig {
        name: "app".into(),
        instances: Vec::new(),
        connect_timeout: Duration::from_secs(1),
        response_timeout: Duration::from_secs(1),
        max_idle_per_instance: 0,
        health_check: None,
        jvm_routes: Default::default(),
        lb_cookie: None,
    })
}

async fn lookup(store: &dyn OldStore, id: &str) -> Result<Option<OldSession>, OldStoreError> {
    let pool = pool();
    let context = LookupContext {
        pool: &pool,
        host: None,
        origin: None,
    };
    store.lookup(&sid(id), &context).await
}

async fn hit(store: &dyn OldStore, id: &str) -> OldSession {
    lookup(store, id)
        .await
        .unwrap_or_else(|e| panic!("lookup of {id} failed: {e}"))
        .unwrap_or_else(|| panic!("lookup of {id} missed"))
}

async fn miss(store: &dyn OldStore, id: &str) {
    let found = lookup(store, id).await.expect("lookup answered");
    assert!(found.is_none(), "{id} should be a miss, got {found:?}");
}

fn assert_remaining(session: &OldSession, low: Duration, high: Duration) {
    let remaining = session.remaining.expect("a remaining lifetime");
    assert!(
        remaining > low && remaining <= high,
        "remaining {remaining:?} not in ({low:?}, {high:?}]"
    );
}

fn iso_in(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let at = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs(offset_secs.unsigned_abs())
    };
    humantime::format_rfc3339_millis(at).to_string()
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("fixture JSON")
}

/// A session payload written by real PHP (tests/data/make_php_sessions.php).
fn php_payload(name: &str, handler: &str) -> Vec<u8> {
    let doc = fixture("php_sessions.json");
    let session = doc["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name && s["handler"] == handler)
        .unwrap_or_else(|| panic!("no PHP fixture {name}/{handler}"));
    base64::engine::general_purpose::STANDARD
        .decode(session["data_base64"].as_str().unwrap())
        .unwrap()
}

/// A connect-redis value as express-session + passport write it.
fn express_session(user: &str, expires: Option<String>) -> String {
    json!({
        "cookie": {
            "originalMaxAge": expires.as_ref().map(|_| 7_200_000),
            "expires": expires,
            "secure": false,
            "httpOnly": true,
            "path": "/",
            "sameSite": "lax"
        },
        "passport": {"user": user},
        "roles": ["user", "beta"],
        "email": format!("{user}@example.test"),
        "views": 3
    })
    .to_string()
}

// ---------------------------------------------------------------------------------------------
// Real PHP payloads

#[test]
fn real_php_payloads_decode_as_php_sees_them() {
    let doc = fixture("php_sessions.json");
    let sessions = doc["sessions"].as_array().unwrap();
    assert!(sessions.len() >= 10);
    for session in sessions {
        let data = base64::engine::general_purpose::STANDARD
            .decode(session["data_base64"].as_str().unwrap())
            .unwrap();
        let decoded = php_serialize::decode_session(&data).unwrap_or_else(|e| {
            panic!("{} / {}: {e}", session["name"], session["handler"]);
        });
        assert_eq!(
            decoded, session["expected"],
            "{} / {}",
            session["name"], session["handler"]
        );
    }
}

#[test]
fn damaged_real_payloads_never_panic_or_verify() {
    // PHP: every truncation and a byte flip at every position of every real payload.
    let doc = fixture("php_sessions.json");
    for session in doc["sessions"].as_array().unwrap() {
        let data = base64::engine::general_purpose::STANDARD
            .decode(session["data_base64"].as_str().unwrap())
            .unwrap();
        for cut in 0..data.len() {
            let _ = php_serialize::decode_session(&data[..cut]);
            let mut flipped = data.clone();
            flipped[cut] ^= 0x5a;
            let _ = php_serialize::decode_session(&flipped);
        }
    }
    // Django: no damaged payload verifies, whatever it decodes to.
    let (doc, sessions) = django_fixture();
    let signer = DjangoSigner::for_sessions(&[doc["secret_key"].as_str().unwrap().to_string()]);
    for session in &sessions {
        let data = session["session_data"].as_str().unwrap();
        for cut in 0..data.len() {
            assert!(signer.decode(&data[..cut]).is_err());
            let mut flipped = data.as_bytes().to_vec();
            flipped[cut] = if flipped[cut] == b'x' { b'y' } else { b'x' };
            let flipped = String::from_utf8(flipped).unwrap();
            assert!(signer.decode(&flipped).is_err(), "{flipped}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Another Redis: connect-redis and phpredis

const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

async fn foreign_redis(
    redis: &RedisServer,
    template: &str,
    format: ForeignFormat,
    user: &str,
) -> ForeignRedisStore {
    ForeignRedisStore::connect(
        "old-redis",
        &redis.url(),
        template,
        format,
        mapping(user),
        REDIS_TIMEOUT,
    )
    .await
    .expect("store")
}

#[tokio::test]
async fn connect_redis_json_hit_keeps_its_ttl() {
    let redis = RedisServer::start().await;
    let client = redis.client().await;
    let id = "kAuMTZsG0rGFHBzTdTRxWxg3XvRa4Rg_";
    let _: () = client
        .set(
            format!("sess:{id}"),
            express_session("alice", Some(iso_in(7200))),
            Some(Expiration::PX(60_000)),
            None,
            false,
        )
        .await
        .unwrap();
    let store = foreign_redis(&redis, "sess:{id}", ForeignFormat::Json, "/passport/user").await;

    let session = hit(&store, id).await;
    assert_eq!(session.identity.user, "alice");
    assert_eq!(session.identity.roles, ["user", "beta"]);
    assert_eq!(
        session.identity.email.as_deref(),
        Some("alice@example.test")
    );
    // The key's TTL wins over cookie.expires when both exist.
    assert_remaining(&session, Duration::from_secs(55), Duration::from_secs(60));
    assert_eq!(session.origin, None);
}

#[tokio::test]
async fn connect_redis_json_without_ttl_uses_cookie_expires() {
    let redis = RedisServer::start().await;
    let client = redis.client().await;
    for (id, expires) in [
        ("live", Some(iso_in(7200))),
        ("gone", Some(iso_in(-60))),
        ("browser-session", None),
    ] {
        let _: () = client
            .set(
                format!("sess:{id}"),
                express_session("bob", expires),
                None,
                None,
                false,
            )
            .await
            .unwrap();
    }
    let store = foreign_redis(&redis, "sess:{id}", ForeignFormat::Json, "/passport/user").await;

    let live = hit(&store, "live").await;
    assert_remaining(&live, Duration::from_secs(7190), Duration::from_secs(7200));
    // cookie.expires in the past: the session is over even though the key has no TTL.
    miss(&store, "gone").await;
    // No TTL and no expiry anywhere: found, lifetime left to the copy's defaults.
    assert_eq!(hit(&store, "browser-session").await.remaining, None);
}

#[tokio::test]
async fn phpredis_real_php_payloads_hit_with_their_ttl() {
    let redis = RedisServer::start().await;
    let client = redis.client().await;
    for (id, handler) in [("php1", "php"), ("php2", "php_serialize")] {
        let payload = bytes::Bytes::from(php_payload("plain_login", handler));
        let _: () = client
            .set(
                format!("PHPREDIS_SESSION:{id}"),
                payload,
                Some(Expiration::EX(1440)),
                None,
                false,
            )
            .await
            .unwrap();
    }
    let store = foreign_redis(
        &redis,
        "PHPREDIS_SESSION:{id}",
        ForeignFormat::Php,
        "/user_id",
    )
    .await;

    for id in ["php1", "php2"] {
        let session = hit(&store, id).await;
        assert_eq!(session.identity.user, "42");
        assert_eq!(session.identity.roles, ["user", "editor"]);
        assert_eq!(
            session.identity.email.as_deref(),
            Some("carol@example.test")
        );
        assert_remaining(
            &session,
            Duration::from_secs(1430),
            Duration::from_secs(1440),
        );
    }
}

#[tokio::test]
async fn foreign_redis_misses_missing_anonymous_and_unreadable_sessions() {
    let redis = RedisServer::start().await;
    let client = redis.client().await;
    let anonymous = json!({"cookie": {"expires": null}, "views": 1}).to_string();
    let _: () = client
        .set("sess:anon", anonymous, None, None, false)
        .await
        .unwrap();
    let _: () = client
        .set("sess:junk", "{not json", None, None, false)
        .await
        .unwrap();
    let store = foreign_redis(&redis, "sess:{id}", ForeignFormat::Json, "/passport/user").await;

    miss(&store, "nobody").await;
    miss(&store, "anon").await;
    miss(&store, "junk").await;
}

#[tokio::test]
async fn foreign_redis_delete_removes_the_key() {
    let redis = RedisServer::start().await;
    let client = redis.client().await;
    let _: () = client
        .set(
            "sess:sess:doomed",
            express_session("carol", None),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    // A doubled prefix, as some connect-redis setups write it.
    let store = foreign_redis(
        &redis,
        "sess:sess:{id}",
        ForeignFormat::Json,
        "/passport/user",
    )
    .await;
    hit(&store, "doomed").await;

    store.delete(&sid("doomed")).await.unwrap();
    let exists: i64 = client.exists("sess:sess:doomed").await.unwrap();
    assert_eq!(exists, 0);
    miss(&store, "doomed").await;
    // Deleting what is not there is fine.
    store.delete(&sid("doomed")).await.unwrap();
}

/// Asserts the lookup fails, and within the store's timeout (plus scheduling slack).
async fn assert_fails_fast(store: &dyn OldStore, timeout: Duration) {
    let started = Instant::now();
    let result = lookup(store, "anyone").await;
    let elapsed = started.elapsed();
    assert!(result.is_err(), "expected an error, got {result:?}");
    eprintln!(
        "failed in {elapsed:?} (timeout {timeout:?}): {}",
        result.unwrap_err()
    );
    assert!(
        elapsed < timeout + Duration::from_millis(500),
        "took {elapsed:?} (timeout {timeout:?})"
    );
}

#[tokio::test]
async fn foreign_redis_down_or_hung_fails_within_the_timeout_and_recovers() {
    let mut redis = RedisServer::start().await;
    let store = foreign_redis(&redis, "sess:{id}", ForeignFormat::Json, "/passport/user").await;
    miss(&store, "anyone").await;

    // Hung: the socket is open but nothing answers.
    redis.pause();
    assert_fails_fast(&store, REDIS_TIMEOUT).await;
    assert_fails_fast(&store, REDIS_TIMEOUT).await;
    redis.resume();

    // Dead: connection refused while the client reconnects.
    redis.kill();
    assert_fails_fast(&store, REDIS_TIMEOUT).await;
    assert_fails_fast(&store, REDIS_TIMEOUT).await;
    assert!(store.delete(&sid("anyone")).await.is_err());

    // Back (empty: it kept nothing): the store reconnects on its own.
    redis.restart().await;
    let client = redis.client().await;
    let _: () = client
        .set(
            "sess:back",
            express_session("dora", None),
            None,
            None,
            false,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match lookup(&store, "back").await {
            Ok(Some(session)) => {
                assert_eq!(session.identity.user, "dora");
                break;
            }
            other if Instant::now() > deadline => panic!("no recovery: {other:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn foreign_redis_never_reached_starts_and_fails_within_the_timeout() {
    // Nothing listens on this port.
    let port = support::free_port();
    let started = Instant::now();
    let store = ForeignRedisStore::connect(
        "old-redis",
        &format!("redis://127.0.0.1:{port}"),
        "sess:{id}",
        ForeignFormat::Json,
        mapping("/passport/user"),
        REDIS_TIMEOUT,
    )
    .await
    .expect("a store that is down still starts");
    assert!(started.elapsed() < REDIS_TIMEOUT + Duration::from_millis(500));
    assert_fails_fast(&store, REDIS_TIMEOUT).await;
}

#[tokio::test]
async fn foreign_redis_rejects_a_template_without_id() {
    let result = ForeignRedisStore::connect(
        "old-redis",
        "redis://127.0.0.1:1",
        "sess:",
        ForeignFormat::Json,
        mapping("/passport/user"),
        REDIS_TIMEOUT,
    )
    .await;
    assert!(matches!(result, Err(OldStoreError::Invalid { .. })));
}

// ---------------------------------------------------------------------------------------------
// PHP session files

fn php_files_store(dir: &std::path::Path) -> PhpFilesStore {
    PhpFilesStore::new(
        "php-files",
        dir.to_path_buf(),
        "sess_",
        Duration::from_secs(1440),
        mapping("/user_id"),
    )
}

#[tokio::test]
async fn laravel_file_sessions_hit_with_their_lifetime() {
    // What Laravel 8's file driver writes to storage/framework/sessions/<id>: serialize() of
    // the session's attributes (made with PHP 8.2's serialize()).
    let payload = "a:4:{s:6:\"_token\";s:40:\"TTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTTT\";\
                   s:9:\"_previous\";a:1:{s:3:\"url\";s:21:\"http://127.0.0.1/home\";}\
                   s:6:\"_flash\";a:2:{s:3:\"old\";a:0:{}s:3:\"new\";a:0:{}}\
                   s:50:\"login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d\";i:7;}";
    let dir = tempfile::tempdir().unwrap();
    let id = "Vq0ZkYw3l2Xb8nR1cT5uP7eJ9sH4gF6dA0mK2iLo";
    std::fs::write(dir.path().join(id), payload).unwrap();
    let store = PhpFilesStore::new(
        "laravel-files",
        dir.path().to_path_buf(),
        "",
        Duration::from_secs(120 * 60),
        mapping("/login_web_59ba36addc2b2f9401580f014c7f58ea4e30989d"),
    );
    let session = hit(&store, id).await;
    assert_eq!(session.identity.user, "7");
    assert_remaining(
        &session,
        Duration::from_secs(7190),
        Duration::from_secs(7200),
    );
    miss(&store, &format!("sess_{id}")).await;
}

fn set_mtime(path: &std::path::Path, age: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn php_files_live_file_hits_with_its_remaining_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let id = "q7n3l0v2e8k5hb1rj4c6m9p0ts";
    let path = dir.path().join(format!("sess_{id}"));
    std::fs::write(&path, php_payload("plain_login", "php")).unwrap();
    set_mtime(&path, Duration::from_secs(440));
    let store = php_files_store(dir.path());

    let session = hit(&store, id).await;
    assert_eq!(session.identity.user, "42");
    assert_eq!(session.identity.roles, ["user", "editor"]);
    // 1440 s of gc_maxlifetime, 440 s of it used.
    assert_remaining(
        &session,
        Duration::from_secs(990),
        Duration::from_secs(1000),
    );

    // A real PHP payload with multibyte strings, written by the php_serialize handler.
    let multibyte = "Zo3,multi-byte";
    std::fs::write(
        dir.path().join(format!("sess_{multibyte}")),
        php_payload("multibyte", "php_serialize"),
    )
    .unwrap();
    let store = PhpFilesStore::new(
        "php-files",
        dir.path().to_path_buf(),
        "sess_",
        Duration::from_secs(1440),
        mapping("/user"),
    );
    assert_eq!(hit(&store, multibyte).await.identity.user, "zoë-日本-🦀");
}

#[tokio::test]
async fn php_files_past_gc_maxlifetime_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sess_stale");
    std::fs::write(&path, php_payload("plain_login", "php")).unwrap();
    set_mtime(&path, Duration::from_secs(1441));
    let store = php_files_store(dir.path());
    miss(&store, "stale").await;
    miss(&store, "absent").await;
}

#[tokio::test]
async fn php_files_ids_that_are_not_php_ids_never_reach_the_disk() {
    let root = tempfile::tempdir().unwrap();
    let sessions = root.path().join("sessions");
    std::fs::create_dir(&sessions).unwrap();
    // Laid out so that each traversal below WOULD reach this live session file if the id
    // were joined into a path unchecked.
    let target = root.path().join("secret");
    std::fs::write(&target, php_payload("plain_login", "php")).unwrap();
    std::fs::create_dir(sessions.join("sess_x")).unwrap();
    std::fs::create_dir(sessions.join("sess_")).unwrap();
    let store = php_files_store(&sessions);

    for id in [
        "x/../../secret",
        "/../../secret",
        "../../etc/passwd",
        "x/../../secret\0",
        "..",
    ] {
        miss(&store, id).await;
        store.delete(&sid(id)).await.unwrap();
    }
    assert!(target.exists(), "a traversal id deleted a file");

    // A symlink named like a session is not one (PHP opens with O_NOFOLLOW).
    std::os::unix::fs::symlink(&target, sessions.join("sess_link")).unwrap();
    miss(&store, "link").await;
}

#[tokio::test]
async fn php_files_delete_removes_the_file_and_unreadable_files_miss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sess_bye");
    std::fs::write(&path, php_payload("plain_login", "php")).unwrap();
    std::fs::write(dir.path().join("sess_junk"), b"user_id|s:99:\"short\";").unwrap();
    let store = php_files_store(dir.path());

    hit(&store, "bye").await;
    store.delete(&sid("bye")).await.unwrap();
    assert!(!path.exists());
    miss(&store, "bye").await;
    store.delete(&sid("bye")).await.unwrap();
    miss(&store, "junk").await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

const PG_TIMEOUT: Duration = Duration::from_secs(2);

/// connect-pg-simple's own table.sql.
const CONNECT_PG_SIMPLE_TABLE: &str = r#"
CREATE TABLE "session" (
  "sid" varchar NOT NULL COLLATE "default",
  "sess" json NOT NULL,
  "expire" timestamp(6) NOT NULL
) WITH (OIDS=FALSE);
ALTER TABLE "session" ADD CONSTRAINT "session_pkey" PRIMARY KEY ("sid") NOT DEFERRABLE INITIALLY IMMEDIATE;
CREATE INDEX "IDX_session_expire" ON "session" ("expire");
"#;

/// What Django's sessions migration 0001 creates on PostgreSQL.
const DJANGO_TABLE: &str = r#"
CREATE TABLE "django_session" (
  "session_key" varchar(40) NOT NULL PRIMARY KEY,
  "session_data" text NOT NULL,
  "expire_date" timestamp with time zone NOT NULL
);
CREATE INDEX "django_session_expire_date_a5c62663" ON "django_session" ("expire_date");
"#;

/// A row as connect-pg-simple writes it (`to_timestamp` of the cookie's expiry in seconds).
fn insert_express_row(db: &PgDatabase, sid: &str, user: &str, expires_in_secs: i64) {
    let sess = express_session(user, Some(iso_in(expires_in_secs))).replace('\'', "''");
    db.exec(&format!(
        "INSERT INTO session (sess, expire, sid) \
         SELECT '{sess}', to_timestamp(extract(epoch from now()) + {expires_in_secs}), '{sid}'"
    ));
}

async fn pg_store(db: &PgDatabase, format: PgFormat, user: &str) -> PostgresStore {
    PostgresStore::connect("old-pg", &db.url(), format, mapping(user), PG_TIMEOUT)
        .await
        .expect("store")
}

fn connect_pg_simple() -> PgFormat {
    PgFormat::ConnectPgSimple {
        table: "session".into(),
    }
}

#[tokio::test]
async fn connect_pg_simple_live_row_hits_and_expired_row_misses() {
    let db = PgDatabase::create();
    db.exec(CONNECT_PG_SIMPLE_TABLE);
    insert_express_row(&db, "live-sid", "erin", 3600);
    insert_express_row(&db, "old-sid", "frank", -5);
    let store = pg_store(&db, connect_pg_simple(), "/passport/user").await;

    let session = hit(&store, "live-sid").await;
    assert_eq!(session.identity.user, "erin");
    assert_eq!(session.identity.roles, ["user", "beta"]);
    assert_remaining(
        &session,
        Duration::from_secs(3590),
        Duration::from_secs(3600),
    );
    miss(&store, "old-sid").await;
    miss(&store, "no-such-sid").await;
    // The id is a bound parameter, never SQL.
    miss(&store, "x' OR '1'='1").await;
}

#[tokio::test]
async fn connect_pg_simple_delete_removes_the_row() {
    let db = PgDatabase::create();
    db.exec(CONNECT_PG_SIMPLE_TABLE);
    insert_express_row(&db, "bye-sid", "gina", 3600);
    insert_express_row(&db, "stay-sid", "hank", 3600);
    let store = pg_store(&db, connect_pg_simple(), "/passport/user").await;

    hit(&store, "bye-sid").await;
    store.delete(&sid("bye-sid")).await.unwrap();
    assert_eq!(db.count("SELECT count(*) FROM session"), 1);
    miss(&store, "bye-sid").await;
    hit(&store, "stay-sid").await;
}

fn django_fixture() -> (Value, Vec<Value>) {
    let doc = fixture("django_sessions.json");
    let sessions = doc["sessions"].as_array().unwrap().clone();
    (doc, sessions)
}

fn django_store_format(keys: &[&Value]) -> PgFormat {
    PgFormat::Django {
        secret_keys: keys
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect(),
        table: "django_session".into(),
    }
}

#[tokio::test]
async fn django_real_sessions_with_current_and_rotated_keys() {
    let db = PgDatabase::create();
    db.exec(DJANGO_TABLE);
    let (doc, sessions) = django_fixture();
    for session in &sessions {
        db.exec(&format!(
            "INSERT INTO django_session VALUES ('{}', '{}', now() + interval '2 weeks')",
            session["session_key"].as_str().unwrap(),
            session["session_data"].as_str().unwrap(),
        ));
    }
    // The app's settings: SECRET_KEY plus the rotated-away key in SECRET_KEY_FALLBACKS.
    let store = pg_store(
        &db,
        django_store_format(&[&doc["secret_key"], &doc["old_secret_key"]]),
        "/_auth_user_id",
    )
    .await;
    // Only the current key: sessions signed with the old one no longer verify.
    let current_only = pg_store(
        &db,
        django_store_format(&[&doc["secret_key"]]),
        "/_auth_user_id",
    )
    .await;

    for session in &sessions {
        let key = session["session_key"].as_str().unwrap();
        let signed_with = session["signed_with"].as_str().unwrap();
        let user_id = session["user_id"].as_str().unwrap();
        match signed_with {
            "current" | "old" => {
                // Real Django accepted it too (its answer is in the fixture).
                assert_eq!(session["django_decodes_to"]["_auth_user_id"], user_id);
                let found = hit(&store, key).await;
                assert_eq!(found.identity.user, user_id, "{}", session["name"]);
                assert_remaining(
                    &found,
                    Duration::from_secs(14 * 86400 - 60),
                    Duration::from_secs(14 * 86400),
                );
                if signed_with == "current" {
                    hit(&current_only, key).await;
                } else {
                    miss(&current_only, key).await;
                }
            }
            // Signed by another app's key: Django itself decodes it to an empty session.
            _ => {
                assert_eq!(session["django_decodes_to"], json!({}));
                miss(&store, key).await;
            }
        }
    }
    // Both compressed and uncompressed payloads were exercised.
    assert!(sessions.iter().any(|s| s["compressed"] == true));
    assert!(sessions.iter().any(|s| s["compressed"] == false));
}

#[tokio::test]
async fn django_expired_and_tampered_rows_miss_and_delete_removes_the_row() {
    let db = PgDatabase::create();
    db.exec(DJANGO_TABLE);
    let (doc, sessions) = django_fixture();
    let alice = &sessions[0];
    let data = alice["session_data"].as_str().unwrap();
    db.exec(&format!(
        "INSERT INTO django_session VALUES ('alive', '{data}', now() + interval '1 hour'), \
         ('expired', '{data}', now() - interval '1 second')"
    ));
    // One payload byte changed: the signature no longer covers it.
    let mut tampered: Vec<char> = data.chars().collect();
    tampered[5] = if tampered[5] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    db.exec(&format!(
        "INSERT INTO django_session VALUES ('tampered', '{tampered}', now() + interval '1 hour')"
    ));
    let store = pg_store(
        &db,
        django_store_format(&[&doc["secret_key"]]),
        "/_auth_user_id",
    )
    .await;

    hit(&store, "alive").await;
    miss(&store, "expired").await;
    miss(&store, "tampered").await;

    store.delete(&sid("alive")).await.unwrap();
    assert_eq!(
        db.count("SELECT count(*) FROM django_session WHERE session_key = 'alive'"),
        0
    );
    miss(&store, "alive").await;
}

#[tokio::test]
async fn postgres_custom_query() {
    let db = PgDatabase::create();
    db.exec(
        "CREATE TABLE app_sessions (token text PRIMARY KEY, doc jsonb, valid_until timestamptz);
         INSERT INTO app_sessions VALUES
           ('t1', '{\"account\": {\"id\": 77}}', now() + interval '10 minutes'),
           ('t2', '{\"account\": {\"id\": 78}}', now() - interval '1 minute');",
    );
    let format = PgFormat::Custom {
        lookup: "SELECT doc::text, EXTRACT(EPOCH FROM valid_until - now())::float8 \
                 FROM app_sessions WHERE token = $1 AND valid_until > now()"
            .into(),
        delete: None,
    };
    let store = pg_store(&db, format, "/account/id").await;
    let session = hit(&store, "t1").await;
    assert_eq!(session.identity.user, "77");
    assert_remaining(&session, Duration::from_secs(590), Duration::from_secs(600));
    miss(&store, "t2").await;
    // No delete query: deleting is a no-op, not an error.
    store.delete(&sid("t1")).await.unwrap();
    hit(&store, "t1").await;
}

/// `format = "custom"` in the config file reaches the store: its queries are the ones run.
#[tokio::test]
async fn postgres_custom_queries_from_the_config_file() {
    let db = PgDatabase::create();
    db.exec(
        "CREATE TABLE app_sessions (token text PRIMARY KEY, doc jsonb, valid_until timestamptz);
         INSERT INTO app_sessions VALUES
           ('c1', '{\"account\": {\"id\": 81}}', now() + interval '10 minutes'),
           ('c2', '{\"account\": {\"id\": 82}}', now() + interval '10 minutes');",
    );
    let text = format!(
        r#"
[listener]
address = "127.0.0.1:8080"
[redis]
url = "memory://"
[session]
cookie = "sid"
id_format = "plain"
idle_timeout = "30m"
absolute_lifetime = "12h"
[[upstreams]]
name = "app"
instances = [{{ name = "a", url = "http://127.0.0.1:3001" }}]
[[routes]]
upstream = "app"
mode = "overlap"
old_stores = ["pg"]
[[old_stores]]
name = "pg"
kind = "postgres"
url = "{}"
format = "custom"
lookup_query = """SELECT doc::text, EXTRACT(EPOCH FROM valid_until - now())::float8
  FROM app_sessions WHERE token = $1 AND valid_until > now()"""
delete_query = "DELETE FROM app_sessions WHERE token = $1"
user = "/account/id"
"#,
        db.url()
    );
    let config = unstick::config::parse_config(&text, std::path::Path::new("custom.toml"))
        .expect("a valid config");
    let store = unstick::session::old_stores::open_old_store(&config.old_stores[0], "sid")
        .await
        .expect("store");
    let pool = pool();
    let context = LookupContext {
        pool: &pool,
        host: None,
        origin: None,
    };
    let found = store.lookup(&sid("c1"), &context).await.expect("lookup");
    let session = found.expect("c1 is found");
    assert_eq!(session.identity.user, "81");
    assert_remaining(&session, Duration::from_secs(590), Duration::from_secs(600));
    store.delete(&sid("c1")).await.expect("delete");
    assert_eq!(db.count("SELECT count(*) FROM app_sessions"), 1);
    let found = store.lookup(&sid("c1"), &context).await.expect("lookup");
    assert!(found.is_none(), "{found:?}");
}

#[tokio::test]
async fn postgres_reconnects_after_the_connection_drops() {
    let db = PgDatabase::create();
    db.exec(CONNECT_PG_SIMPLE_TABLE);
    insert_express_row(&db, "sid", "ivan", 3600);
    let store = pg_store(&db, connect_pg_simple(), "/passport/user").await;
    hit(&store, "sid").await;

    // The server ends our connection (a restart or failover looks the same from here).
    let terminated = db.count(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = '{}' AND application_name = 'unstick'",
        db.name()
    ));
    assert_eq!(terminated, 1);
    // Straight away (the drop may not be noticed yet): the lookup reconnects and succeeds.
    assert_eq!(hit(&store, "sid").await.identity.user, "ivan");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Again, after the drop was noticed.
    db.count(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = '{}' AND application_name = 'unstick'",
        db.name()
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hit(&store, "sid").await.identity.user, "ivan");
    store.delete(&sid("sid")).await.unwrap();
}

#[tokio::test]
async fn postgres_down_or_hung_fails_within_the_timeout() {
    let timeout = Duration::from_millis(500);
    // Nothing listens: refused at once.
    let port = support::free_port();
    let started = Instant::now();
    let refused = PostgresStore::connect(
        "old-pg",
        &format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        connect_pg_simple(),
        mapping("/passport/user"),
        timeout,
    )
    .await
    .expect("a store that is down still starts");
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    assert_fails_fast(&refused, timeout).await;
    assert!(refused.delete(&sid("x")).await.is_err());

    // Accepts connections but never answers (a hung server or a black-holed network).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let hung = PostgresStore::connect(
        "old-pg",
        &format!("postgres://postgres@127.0.0.1:{silent_port}/postgres"),
        connect_pg_simple(),
        mapping("/passport/user"),
        timeout,
    )
    .await
    .expect("a store that is down still starts");
    assert!(started.elapsed() < timeout + Duration::from_millis(500));
    assert_fails_fast(&hung, timeout).await;
    assert_fails_fast(&hung, timeout).await;
}

#[tokio::test]
async fn postgres_rejects_settings_that_cannot_work() {
    let bad_table = PostgresStore::connect(
        "old-pg",
        "postgres://postgres@127.0.0.1:5432/postgres",
        PgFormat::ConnectPgSimple {
            table: "session; DROP TABLE users".into(),
        },
        mapping("/passport/user"),
        PG_TIMEOUT,
    )
    .await;
    assert!(matches!(bad_table, Err(OldStoreError::Invalid { .. })));
    let no_keys = PostgresStore::connect(
        "old-pg",
        "postgres://postgres@127.0.0.1:5432/postgres",
        PgFormat::Django {
            secret_keys: Vec::new(),
            table: "django_session".into(),
        },
        mapping("/_auth_user_id"),
        PG_TIMEOUT,
    )
    .await;
    assert!(matches!(no_keys, Err(OldStoreError::Invalid { .. })));
    let bad_url = PostgresStore::connect(
        "old-pg",
        "postgres://127.0.0.1:notaport/db",
        connect_pg_simple(),
        mapping("/passport/user"),
        PG_TIMEOUT,
    )
    .await;
    assert!(matches!(bad_url, Err(OldStoreError::Invalid { .. })));
}

// ---------------------------------------------------------------------------------------------
// Listing (the bulk pre-copy): every session, read as its lookup reads it

/// Every session the store lists, in small pages so that paging is exercised.
async fn listed(store: &dyn OldStore) -> Vec<Listed> {
    let mut listing = store.list(2).expect("a store that can be listed");
    let mut all = Vec::new();
    while let Some(page) = listing.next().await {
        all.extend(page.expect("a page"));
    }
    all
}

/// Each listed session reads as a lookup of its id does: the same identity and about the same
/// remaining lifetime for a session, a miss for anything else. Returns the listed users.
async fn listed_as_looked_up(store: &dyn OldStore) -> Vec<String> {
    let mut users = Vec::new();
    for entry in listed(store).await {
        let looked_up = lookup(store, entry.id.id()).await.expect("lookup answered");
        match (entry.session, looked_up) {
            (Decoded::Session(listed), Some(found)) => {
                assert_eq!(listed.identity, found.identity);
                let (a, b) = (listed.remaining.unwrap(), found.remaining.unwrap());
                assert!(a.abs_diff(b) < Duration::from_secs(5), "{a:?} vs {b:?}");
                users.push(listed.identity.user);
            }
            (other, None) => assert!(!matches!(other, Decoded::Session(_)), "{other:?}"),
            (other, found) => panic!("listed {other:?}, looked up {found:?}"),
        }
    }
    users.sort();
    users
}

#[tokio::test]
async fn django_listing_reads_rows_as_lookups_do() {
    let db = PgDatabase::create();
    db.exec(DJANGO_TABLE);
    let (doc, sessions) = django_fixture();
    for session in &sessions {
        db.exec(&format!(
            "INSERT INTO django_session VALUES ('{}', '{}', now() + interval '2 weeks')",
            session["session_key"].as_str().unwrap(),
            session["session_data"].as_str().unwrap(),
        ));
    }
    let store = pg_store(
        &db,
        django_store_format(&[&doc["secret_key"], &doc["old_secret_key"]]),
        "/_auth_user_id",
    )
    .await;
    let mut expected: Vec<String> = sessions
        .iter()
        .filter(|s| matches!(s["signed_with"].as_str(), Some("current" | "old")))
        .map(|s| s["user_id"].as_str().unwrap().to_string())
        .collect();
    expected.sort();
    assert!(expected.len() >= 2);
    assert_eq!(listed_as_looked_up(&store).await, expected);
    assert_eq!(listed(&store).await.len(), sessions.len());
}

#[tokio::test]
async fn phpredis_listing_scans_the_key_template_only() {
    let redis = RedisServer::start().await;
    let client = redis.client().await;
    let template = "PHPREDIS_SESSION:[app]:{id}";
    for (key, payload) in [
        (
            "PHPREDIS_SESSION:[app]:php1",
            php_payload("plain_login", "php"),
        ),
        (
            "PHPREDIS_SESSION:[app]:php2",
            php_payload("plain_login", "php_serialize"),
        ),
        ("PHPREDIS_SESSION:[app]:junk", b"user|s:99:\"x".to_vec()),
        // Matched by the template read as a glob, but not by the template itself.
        ("PHPREDIS_SESSION:a:php3", php_payload("plain_login", "php")),
        ("other:php4", php_payload("plain_login", "php")),
    ] {
        let _: () = client
            .set(
                key,
                bytes::Bytes::from(payload),
                Some(Expiration::EX(1440)),
                None,
                false,
            )
            .await
            .unwrap();
    }
    let store = foreign_redis(&redis, template, ForeignFormat::Php, "/user_id").await;
    assert_eq!(listed_as_looked_up(&store).await, ["42", "42"]);
    let all = listed(&store).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all
        .iter()
        .any(|l| l.id.id() == "junk" && matches!(l.session, Decoded::Unreadable(_))));
}

#[tokio::test]
async fn a_custom_postgres_query_cannot_be_listed() {
    let db = PgDatabase::create();
    let store = pg_store(
        &db,
        PgFormat::Custom {
            lookup: "SELECT '{}'::text, NULL::float8 WHERE $1::text IS NULL".into(),
            delete: None,
        },
        "/user",
    )
    .await;
    assert!(store.list(10).is_none());
}
