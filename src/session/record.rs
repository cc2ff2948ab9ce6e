//! What unstick keeps per session: who the user is and a little metadata for operators.
//! Stored as JSON with one- or two-letter names (Redis holds one per session); the long
//! names that earlier versions wrote are still read.

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
#[serde(into = "Stored", try_from = "Stored")]
pub struct SessionRecord {
    pub identity: Identity,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Unix milliseconds after which the session is over, however active.
    pub expires_ms: u64,
    /// Idle timeout of this session (a "remember me" cookie can make it longer than the default).
    pub idle_ms: u64,
    /// The instance that saw the login.
    pub origin: Option<String>,
    /// A short label of the client's device ([`super::device::device_label`]), stored as
    /// `ua`, where earlier versions kept the whole User-Agent (still read as it is).
    pub device: Option<String>,
    pub client_ip: Option<String>,
    /// The session id this one replaced when the app re-issued its cookie: a logout of this
    /// session ends that one too, even within its grace period.
    pub rotated_from: Option<SessionHash>,
    /// Set when the app replaced this id with a new one: the id stays usable until then, for
    /// requests the browser sent before it saw the new cookie. `expires_ms` keeps the
    /// session's own end, which the new id inherits.
    pub retires_ms: Option<u64>,
    /// The id the session started with, carried by every id the app re-issued for it (`None`:
    /// this is that id). Parallel requests can each get a new id from the app, so a session's
    /// ids form a tree, not a chain: a logout ends the whole family. The first id is also the
    /// one under which the app itself may still hold the login (an instance's memory keeps it
    /// after the cookie moved on): it is ended with a marker, and an ended id is withheld from
    /// the app.
    pub family: Option<SessionHash>,
}

/// A record as stored: flat, short names, nothing empty. Earlier versions wrote long names
/// and the identity nested under `identity`; both are read.
#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(rename = "identity", default, skip_serializing)]
    nested: Option<Identity>,
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(rename = "r", default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    email: Option<String>,
    #[serde(rename = "a", default, skip_serializing_if = "BTreeMap::is_empty")]
    attributes: BTreeMap<String, String>,
    #[serde(rename = "c", alias = "created_ms")]
    created_ms: u64,
    #[serde(rename = "x", alias = "expires_ms")]
    expires_ms: u64,
    #[serde(rename = "d", alias = "idle_ms")]
    idle_ms: u64,
    #[serde(
        rename = "o",
        alias = "origin",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    origin: Option<String>,
    #[serde(
        rename = "ua",
        alias = "user_agent",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    device: Option<String>,
    #[serde(
        rename = "ip",
        alias = "client_ip",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    client_ip: Option<String>,
    #[serde(
        rename = "rf",
        alias = "rotated_from",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    rotated_from: Option<SessionHash>,
    #[serde(
        rename = "rt",
        alias = "retires_ms",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    retires_ms: Option<u64>,
    #[serde(
        rename = "f",
        alias = "family",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    family: Option<SessionHash>,
}

impl From<SessionRecord> for Stored {
    fn from(record: SessionRecord) -> Stored {
        let Identity {
            user,
            roles,
            email,
            attributes,
        } = record.identity;
        Stored {
            nested: None,
            user: Some(user),
            roles,
            email,
            attributes,
            created_ms: record.created_ms,
            expires_ms: record.expires_ms,
            idle_ms: record.idle_ms,
            origin: record.origin,
            device: record.device,
            client_ip: record.client_ip,
            rotated_from: record.rotated_from,
            retires_ms: record.retires_ms,
            family: record.family,
        }
    }
}

impl TryFrom<Stored> for SessionRecord {
    type Error = &'static str;

    fn try_from(stored: Stored) -> Result<SessionRecord, &'static str> {
        let identity = match (stored.nested, stored.user) {
            (Some(identity), _) => identity,
            (None, Some(user)) => Identity {
                user,
                roles: stored.roles,
                email: stored.email,
                attributes: stored.attributes,
            },
            (None, None) => return Err("a session record without a user"),
        };
        Ok(SessionRecord {
            identity,
            created_ms: stored.created_ms,
            expires_ms: stored.expires_ms,
            idle_ms: stored.idle_ms,
            origin: stored.origin,
            device: stored.device,
            client_ip: stored.client_ip,
            rotated_from: stored.rotated_from,
            retires_ms: stored.retires_ms,
            family: stored.family,
        })
    }
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
        // Saturating: the record is read from the store, which is not trusted to be sane.
        let idle = self
            .idle_ms
            .saturating_add(touch_interval.as_millis() as u64);
        idle.min(self.ends_ms().saturating_sub(now_ms))
    }
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as earlier versions wrote it (long names, ids as 64 hex digits).
    const EARLIER: &str = r#"{"identity":{"user":"alice","roles":["admin"],"email":null,"attributes":{"team":"a"}},"created_ms":1,"expires_ms":3,"idle_ms":2,"origin":"app-1","user_agent":"curl/8","client_ip":"127.0.0.1","family":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","retires_ms":5}"#;

    #[test]
    fn reads_the_earlier_format_and_writes_short_names() {
        let record: SessionRecord = serde_json::from_str(EARLIER).unwrap();
        assert_eq!(record.identity.user, "alice");
        assert_eq!(record.identity.roles, vec!["admin".to_string()]);
        assert_eq!(record.identity.attributes["team"], "a");
        assert_eq!(
            (record.created_ms, record.idle_ms, record.expires_ms),
            (1, 2, 3)
        );
        assert_eq!(record.retires_ms, Some(5));
        assert_eq!(record.device.as_deref(), Some("curl/8"));
        let family = record.family.clone().unwrap();
        assert_eq!(family.as_str().len(), 22);
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"u":"alice","r":["admin"],"a":{{"team":"a"}},"c":1,"x":3,"d":2,"o":"app-1","ua":"curl/8","ip":"127.0.0.1","rt":5,"f":"{}"}}"#,
                family.as_str()
            )
        );
        let again: SessionRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(again, record);
        assert!(serde_json::from_str::<SessionRecord>(r#"{"c":1,"x":3,"d":2}"#).is_err());
    }
}
