//! Old stores read directly (no app call): another Redis (connect-redis, phpredis), PostgreSQL
//! (connect-pg-simple, Django) and PHP session files. Each kind is an [`OldStore`]; the payload
//! formats they share (PHP serialize, Django signing) are their own modules.
//!
//! [`OldStore`]: super::old_store::OldStore

pub mod django;
pub mod foreign_redis;
pub mod php_files;
pub mod php_serialize;
pub mod postgres;

pub use foreign_redis::{ForeignFormat, ForeignRedisStore};
pub use php_files::PhpFilesStore;
pub use postgres::{PgFormat, PostgresStore};

use super::cookie::SessionId;
use super::mapping::identity_from_json;
use super::old_store::{OldSession, OldStoreError};
use crate::config::IdentityMapping;
use serde_json::Value;
use std::fmt::Display;
use std::time::Duration;

fn unavailable(store: &str, reason: impl Display) -> OldStoreError {
    OldStoreError::Unavailable {
        store: store.to_string(),
        reason: reason.to_string(),
    }
}

fn invalid(store: &str, reason: impl Display) -> OldStoreError {
    OldStoreError::Invalid {
        store: store.to_string(),
        reason: reason.to_string(),
    }
}

pub(super) fn timed_out(store: &str, timeout: Duration) -> OldStoreError {
    unavailable(store, format_args!("no answer within {timeout:?}"))
}

/// The mapped identity of a decoded session; `None` (a miss) when it names no user, which is a
/// session the app has but nobody logged in to.
fn found(
    doc: &Value,
    mapping: &IdentityMapping,
    remaining: Option<Duration>,
) -> Option<OldSession> {
    identity_from_json(doc, mapping).map(|identity| OldSession {
        identity,
        remaining,
        origin: None,
    })
}

/// A stored session we cannot read is not an identity: logged, then treated as a miss. The
/// raw id is never logged, only its hash.
fn unreadable(store: &str, id: &SessionId, error: impl Display) {
    tracing::warn!(
        store,
        session = id.hash().short(),
        error = %error,
        "unreadable session in old store; treating it as a miss"
    );
}
