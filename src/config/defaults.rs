//! What a key left out of the config file means, and the bounds validation holds values to.
//! One place, so that validation, the demo and the README's reference table say the same.

use super::validated::ListenerRuntime;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

// [listener]
pub const LISTENER_RUNTIME: ListenerRuntime = ListenerRuntime::MultiThread;
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

// [admin]
pub const ADMIN_ADDRESS: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 9901));
pub const ADMIN_TOKEN_ENV: &str = "UNSTICK_ADMIN_TOKEN";

// [redis]
pub const KEY_PREFIX: &str = "unstick:";
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(250);
pub const RECONNECT_MIN: Duration = Duration::from_millis(50);
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
pub const POOL_SIZE: usize = 2;
pub const POOL_SIZE_MAX: usize = 64;
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
pub const WAIT_REPLICAS_MAX: u32 = 16;
pub const WAIT_TIMEOUT: Duration = Duration::from_millis(100);
pub const WAIT_TIMEOUT_MAX: Duration = Duration::from_secs(10);

// [redis.near_cache]
pub const NEAR_CACHE_ENABLED: bool = true;
pub const NEAR_CACHE_MAX_ENTRIES: usize = 100_000;
pub const NEAR_CACHE_MAX_ENTRIES_MAX: usize = 10_000_000;
pub const NEAR_CACHE_MAX_AGE: Duration = Duration::from_secs(300);
pub const NEAR_CACHE_SERVE_STALE_FOR: Duration = Duration::ZERO;

// [session]
pub const IDLE_TIMEOUT_MIN: Duration = Duration::from_secs(1);
/// Browsers keep a cookie at most 400 days (RFC 6265bis section 5.5), so no session is longer:
/// the bound of `absolute_lifetime`, and of a lifetime an app's cookie or an old store gives.
pub const SESSION_LIFETIME_MAX: Duration = Duration::from_secs(400 * 24 * 3600);

// [identity]
pub const USER_HEADER: &str = "x-auth-user";
pub const ROLES_HEADER: &str = "x-auth-roles";
pub const EMAIL_HEADER: &str = "x-auth-email";
pub const LOGOUT_HEADER: &str = "x-unstick-logout";
pub const LOGOUT_ALL_HEADER: &str = "x-unstick-logout-all";
pub const SIGNATURE_HEADER: &str = "x-auth-signature";
pub const SIGNATURE_SECRET_MIN_LEN: usize = 16;
pub const IDENTITY_RESPONSE_HEADER: &str = "x-unstick-identity";
pub const WHOAMI_PATH: &str = "/whoami";
/// How a whoami answer is read: `json` or `html`.
pub const WHOAMI_FORMAT: &str = "json";
pub const WHOAMI_TIMEOUT: Duration = Duration::from_secs(2);
/// JSON pointers into an identity document (and into an old store's session).
pub const USER_POINTER: &str = "/user";
pub const ROLES_POINTER: &str = "/roles";
pub const EMAIL_POINTER: &str = "/email";

// [[upstreams]]
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_IDLE_PER_INSTANCE: usize = 128;
pub const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(5);
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

// [[routes]]
pub const PATH_PREFIX: &str = "/";

// [[old_stores]]
pub const OLD_STORE_TIMEOUT: Duration = Duration::from_millis(500);
pub const FANOUT_CONCURRENCY: usize = 4;
pub const FANOUT_CONCURRENCY_MAX: usize = 64;
pub const MISS_TTL: Duration = Duration::from_secs(60);
pub const CONNECT_PG_SIMPLE_TABLE: &str = "session";
pub const DJANGO_TABLE: &str = "django_session";
/// Django keeps only the user's primary key in the session.
pub const DJANGO_USER_POINTER: &str = "/_auth_user_id";
pub const PHP_FILE_PREFIX: &str = "sess_";
/// PHP's `session.gc_maxlifetime` default (24 minutes).
pub const GC_MAXLIFETIME: Duration = Duration::from_secs(1440);
