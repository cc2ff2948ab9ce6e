//! What unstick keeps per session: who the user is and a little metadata for operators.

use super::cookie::SessionHash;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The identity injected into requests as headers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub user: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub email: Option<String>,
    /// Attribute name (from `[identity.attributes]`) -> value.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One session as stored, keyed by the hash of its id (never the id itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub identity: Identity,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Unix milliseconds after which the session is over, however active.
    pub expires_ms: u64,
    /// Idle timeout of this session (a "remember me" cookie can make it longer than the default).
    pub idle_ms: u64,
    /// The instance that saw the login.
    #[serde(default)]
    pub origin: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub client_ip: Option<String>,
    /// The session id this one replaced when the app re-issued its cookie: a logout of this
    /// session ends that one too, even within its grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated_from: Option<SessionHash>,
    /// Set when the app replaced this id with a new one: the id stays usable until then, for
    /// requests the browser sent before it saw the new cookie. `expires_ms` keeps the
    /// session's own end, which the new id inherits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retires_ms: Option<u64>,
    /// The id the session started with, carried by every id the app re-issued for it (`None`:
    /// this is that id). Parallel requests can each get a new id from the app, so a session's
    /// ids form a tree, not a chain: a logout ends the whole family. The first id is also the
    /// one under which the app itself may still hold the login (an instance's memory keeps it
    /// after the cookie moved on): it is ended with a marker, and an ended id is withheld from
    /// the app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<SessionHash>,
}

impl SessionRecord {
    /// The family this record belongs to, `hash` being its own id's.
    pub fn family<'a>(&'a self, hash: &'a SessionHash) -> &'a SessionHash {
        self.family.as_ref().unwrap_or(hash)
    }

    /// Unix milliseconds after which this id no longer resolves, however active.
    pub fn ends_ms(&self) -> u64 {
        self.retires_ms
            .map_or(self.expires_ms, |retires| retires.min(self.expires_ms))
    }

    /// Milliseconds this record may still live if unused from `now_ms` on.
    pub fn ttl_ms(&self, now_ms: u64, touch_interval: Duration) -> u64 {
        let idle = self.idle_ms + touch_interval.as_millis() as u64;
        idle.min(self.ends_ms().saturating_sub(now_ms))
    }
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
