//! Keys of the earlier layout (a hash per session with fields `rec`, `seen`, `gone`; session,
//! index and binding keys and index members named by the whole SHA-256 in hex), converted to
//! the current one. Every process scans for them at start, a pass at a time, until a pass
//! finds none, then writes `<prefix>layout`; a process that finds that key does not scan.
//! Until then a miss also converts the key it missed under its earlier name, if there is one.

use super::{session_value, unavailable, RedisStore, ENDED};
use crate::session::cookie::SessionHash;
use crate::session::record::{now_ms, SessionRecord};
use crate::session::store::results::StoreError;
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{Expiration, SetOptions};
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// `<prefix>layout`: written once no key of the earlier layout is left.
const LAYOUT_KEY: &str = "layout";
const LAYOUT: &str = "2";
/// Between passes that still found earlier keys: the next pass normally finds none, unless
/// proxies of the earlier version are still writing them (a rolling upgrade); then less often.
const FIRST_PASS_INTERVAL: Duration = Duration::from_secs(1);
const MAX_PASS_INTERVAL: Duration = Duration::from_secs(30);
/// Before retrying a pass that failed (Redis unreachable).
const RETRY_INTERVAL: Duration = Duration::from_secs(2);
const SCAN_COUNT: u32 = 1000;

/// An earlier session hash: rec, seen, gone ('' when absent) and PTTL.
const READ_SESSION: &str = r#"
local v = redis.call('HMGET', KEYS[1], 'rec', 'seen', 'gone')
return {v[1] or '', v[2] or '', v[3] or '', tostring(redis.call('PTTL', KEYS[1]))}
"#;

/// An earlier binding: value ('' when absent) and PTTL.
const READ_BINDING: &str = r#"
return {redis.call('GET', KEYS[1]) or '', tostring(redis.call('PTTL', KEYS[1]))}
"#;

/// An earlier user index: PTTL, then member and score pairs, scored by end. An index scored
/// by creation (no `~` member) gets the end of its own TTL for every entry, an upper bound
/// of its sessions' ends. ARGV: now_ms.
const READ_INDEX: &str = r#"
local ttl = redis.call('PTTL', KEYS[1])
local bound = nil
if ttl > 0 and not redis.call('ZSCORE', KEYS[1], '~') then
  bound = tostring(tonumber(ARGV[1]) + ttl)
end
local out = {tostring(ttl)}
local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #entries, 2 do
  table.insert(out, entries[i])
  table.insert(out, bound or entries[i + 1])
end
return out
"#;

/// Merges entries into a current user index, never lowering an entry's end or the index's
/// TTL. ARGV: ttl_ms, then id and end pairs.
const MERGE_INDEX: &str = r#"
for i = 2, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if (not score) or tonumber(score) < tonumber(ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
  end
end
local ttl = tonumber(ARGV[1])
if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
"#;

/// A key of the earlier layout, by kind, with the hex digest that named it.
enum Earlier<'a> {
    Session(&'a str),
    Index(&'a str),
    Binding(&'a str),
}

fn is_digest_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The current user key for an earlier one: both come from the same digest.
fn user_key_of_hex(hex: &str) -> Option<String> {
    use base64::Engine;
    let mut head = [0u8; 16];
    hex::decode_to_slice(&hex[..32], &mut head).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(head))
}

/// `text` matched literally by a SCAN pattern.
fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

impl RedisStore {
    /// Whether keys of the earlier layout may remain.
    pub fn converts_earlier_layout(&self) -> bool {
        self.legacy.load(Ordering::Relaxed)
    }

    fn earlier<'a>(&self, key: &'a str) -> Option<Earlier<'a>> {
        let rest = key.strip_prefix(&*self.prefix)?;
        let (kind, hex) = rest.split_at_checked(2)?;
        if !is_digest_hex(hex) {
            return None;
        }
        match kind {
            "s:" => Some(Earlier::Session(hex)),
            "u:" => Some(Earlier::Index(hex)),
            "b:" => Some(Earlier::Binding(hex)),
            _ => None,
        }
    }

    /// Converts the session `hash` names from its earlier key, if the hash knows that name
    /// and the key is there. Whether it was.
    pub async fn convert_earlier_session(&self, hash: &SessionHash) -> Result<bool, StoreError> {
        match hash.legacy_hex() {
            Some(hex) if self.converts_earlier_layout() => self.convert_session(&hex).await,
            _ => Ok(false),
        }
    }

    /// Converts the binding of `hash` from its earlier key, if there is one.
    pub async fn convert_earlier_binding(&self, hash: &SessionHash) -> Result<bool, StoreError> {
        match hash.legacy_hex() {
            Some(hex) if self.converts_earlier_layout() => self.convert_binding(&hex).await,
            _ => Ok(false),
        }
    }

    /// Merges a user's earlier index (named by `legacy_user_key`, the whole digest in hex)
    /// into the current one.
    pub async fn convert_earlier_index(&self, legacy_user_key: &str) -> Result<bool, StoreError> {
        match self.converts_earlier_layout() {
            true => self.convert_index(legacy_user_key).await,
            false => Ok(false),
        }
    }

    async fn convert_session(&self, hex: &str) -> Result<bool, StoreError> {
        let Some(hash) = SessionHash::parse(hex) else {
            return Ok(false);
        };
        let client = self.pool.next();
        let old_key = self.prefixed("s:", hex);
        let fields: Vec<String> = Script::from_lua(READ_SESSION)
            .evalsha_with_reload(client, old_key.clone(), Vec::<String>::new())
            .await
            .map_err(unavailable)?;
        let [rec, seen, gone, ttl] = fields.as_slice() else {
            return Err(StoreError::Refused(
                "unexpected answer to a read".to_string(),
            ));
        };
        let ttl: i64 = ttl.parse().unwrap_or(-2);
        let value = if !rec.is_empty() {
            match serde_json::from_str::<SessionRecord>(rec) {
                Ok(record) => session_value(seen.parse().unwrap_or(0), &record)?,
                Err(e) => {
                    tracing::warn!(session = hash.short(), error = %e, "unreadable session record of the earlier layout; left as it is");
                    return Ok(false);
                }
            }
        } else if !gone.is_empty() {
            ENDED.to_string()
        } else {
            return Ok(false);
        };
        // NX: a session the current layout already holds (ended since, say) stays as it is.
        let _: Option<String> = client
            .set(
                self.key(&hash),
                value,
                (ttl > 0).then_some(Expiration::PX(ttl)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        let _: i64 = client.del(old_key).await.map_err(unavailable)?;
        Ok(true)
    }

    async fn convert_binding(&self, hex: &str) -> Result<bool, StoreError> {
        let Some(hash) = SessionHash::parse(hex) else {
            return Ok(false);
        };
        let client = self.pool.next();
        let old_key = self.prefixed("b:", hex);
        let fields: Vec<String> = Script::from_lua(READ_BINDING)
            .evalsha_with_reload(client, old_key.clone(), Vec::<String>::new())
            .await
            .map_err(unavailable)?;
        let [instance, ttl] = fields.as_slice() else {
            return Err(StoreError::Refused(
                "unexpected answer to a read".to_string(),
            ));
        };
        let ttl: i64 = ttl.parse().unwrap_or(-2);
        if instance.is_empty() || ttl <= 0 {
            return Ok(false);
        }
        let _: Option<String> = client
            .set(
                self.binding_key(&hash),
                instance.as_str(),
                Some(Expiration::PX(ttl)),
                Some(SetOptions::NX),
                false,
            )
            .await
            .map_err(unavailable)?;
        let _: i64 = client.del(old_key).await.map_err(unavailable)?;
        Ok(true)
    }

    async fn convert_index(&self, hex: &str) -> Result<bool, StoreError> {
        let Some(user_key) = user_key_of_hex(hex) else {
            return Ok(false);
        };
        let client = self.pool.next();
        let old_key = self.user_key(hex);
        let read: Vec<String> = Script::from_lua(READ_INDEX)
            .evalsha_with_reload(client, old_key.clone(), vec![now_ms().to_string()])
            .await
            .map_err(unavailable)?;
        let Some((ttl, entries)) = read.split_first() else {
            return Err(StoreError::Refused(
                "unexpected answer to a read".to_string(),
            ));
        };
        let mut merged = vec![ttl.clone()];
        for pair in entries.chunks_exact(2) {
            if let Some(hash) = SessionHash::parse(&pair[0]) {
                merged.extend([hash.to_string(), pair[1].clone()]);
            }
        }
        if merged.len() == 1 {
            let _: i64 = client.del(old_key).await.map_err(unavailable)?;
            return Ok(false);
        }
        let _: i64 = Script::from_lua(MERGE_INDEX)
            .evalsha_with_reload(client, self.user_key(&user_key), merged)
            .await
            .map_err(unavailable)?;
        let _: i64 = client.del(old_key).await.map_err(unavailable)?;
        Ok(true)
    }

    /// One SCAN over the prefix, converting every earlier key found. How many there were.
    async fn convert_pass(&self) -> Result<usize, StoreError> {
        let client = self.pool.next();
        let pattern = format!("{}*", glob_escape(&self.prefix));
        type Keys = Pin<Box<dyn Stream<Item = Result<Key, Error>> + Send>>;
        let mut keys: Keys = if client.is_clustered() {
            Box::pin(client.scan_cluster_buffered(pattern, Some(SCAN_COUNT), None))
        } else {
            Box::pin(client.scan_buffered(pattern, Some(SCAN_COUNT), None))
        };
        let mut converted = 0;
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            let Some(name) = key.as_str() else {
                continue;
            };
            let done = match self.earlier(name) {
                Some(Earlier::Session(hex)) => self.convert_session(hex).await?,
                Some(Earlier::Index(hex)) => self.convert_index(hex).await?,
                Some(Earlier::Binding(hex)) => self.convert_binding(hex).await?,
                None => continue,
            };
            converted += usize::from(done);
        }
        Ok(converted)
    }

    /// Whether the layout is current: read from `<prefix>layout`, or found by a pass that
    /// had nothing left to convert. Misses stop looking for earlier keys from then on.
    async fn convert_earlier_keys(&self) -> Result<bool, StoreError> {
        let marker_key = self.prefixed(LAYOUT_KEY, "");
        let marker: Option<String> = self.pool.get(&marker_key).await.map_err(unavailable)?;
        if marker.as_deref() == Some(LAYOUT) {
            self.legacy.store(false, Ordering::Relaxed);
            return Ok(true);
        }
        let converted = self.convert_pass().await?;
        if converted > 0 {
            tracing::info!(
                converted,
                "converted sessions, user indexes and bindings of the earlier Redis layout"
            );
            return Ok(false);
        }
        self.legacy.store(false, Ordering::Relaxed);
        let _: () = self
            .pool
            .set(marker_key, LAYOUT, None, None, false)
            .await
            .map_err(unavailable)?;
        Ok(true)
    }
}

/// Converts earlier keys until none is left, then stops looking for them. Ends with the
/// store (when this task holds its last handle).
pub(super) fn convert_in_background(store: RedisStore) {
    tokio::spawn(async move {
        let mut interval = FIRST_PASS_INTERVAL;
        while Arc::strong_count(&store.legacy) > 1 {
            let wait = match store.convert_earlier_keys().await {
                Ok(true) => return,
                Ok(false) => {
                    let wait = interval;
                    interval = (interval * 2).min(MAX_PASS_INTERVAL);
                    wait
                }
                Err(e) => {
                    tracing::debug!(error = %e, "converting the earlier Redis layout: will retry");
                    RETRY_INTERVAL
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::super::{parse_value, Stored};
    use super::*;

    #[test]
    fn scan_patterns_match_the_prefix_literally() {
        assert_eq!(glob_escape("app:*[x]?\\"), "app:\\*\\[x\\]\\?\\\\");
    }

    #[test]
    fn earlier_user_keys_map_to_the_current_ones() {
        use sha2::Digest;
        let hex = crate::hex_string(&sha2::Sha256::digest(b"alice"));
        assert_eq!(
            user_key_of_hex(&hex),
            Some(crate::session::store::user_key("alice"))
        );
    }

    #[test]
    fn values_round_trip() {
        assert!(matches!(parse_value(ENDED), Stored::Ended));
        assert!(matches!(parse_value("12"), Stored::Unreadable(_)));
    }
}
