//! `memory://`: sessions in this process only. Lost on restart, not shared between proxies.

use super::results::{IfAbsent, Loaded};
use crate::session::cookie::SessionHash;
use crate::session::record::SessionRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Entry {
    /// `None`: the session ended (a tombstone).
    record: Option<SessionRecord>,
    seen_ms: u64,
    expires_at_ms: u64,
}

/// User key -> (session hash, ms when its record expires if unused), as in Redis: renewals
/// raise the end, and ended entries are pruned on add and remove.
type UserIndex = HashMap<String, Vec<(SessionHash, u64)>>;

#[derive(Clone, Default)]
pub struct MemoryStore {
    entries: Arc<Mutex<HashMap<SessionHash, Entry>>>,
    users: Arc<Mutex<UserIndex>>,
    /// Session hash -> (instance, until ms).
    bindings: Arc<Mutex<HashMap<SessionHash, (String, u64)>>>,
}

impl MemoryStore {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SessionHash, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written; keep serving.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn load(&self, hash: &SessionHash, now_ms: u64, touch: Duration) -> Loaded {
        let mut entries = self.entries();
        if entries.get(hash).is_some_and(|e| e.expires_at_ms <= now_ms) {
            entries.remove(hash);
        }
        let Some(entry) = entries.get_mut(hash) else {
            return Loaded::Missing;
        };
        let Some(record) = &entry.record else {
            return Loaded::Ended;
        };
        if now_ms.saturating_sub(entry.seen_ms) >= touch.as_millis() as u64 {
            entry.seen_ms = now_ms;
            entry.expires_at_ms = now_ms + record.ttl_ms(now_ms, touch);
            if record.retires_ms.is_none() {
                let user_key = super::user_key(&record.identity.user);
                self.index_touch(&user_key, hash, entry.expires_at_ms);
            }
        }
        Loaded::Live(record.clone())
    }

    /// Raises a session's end in its user's index (re-adding a pruned entry), never lowers it.
    fn index_touch(&self, user_key: &str, hash: &SessionHash, ends_ms: u64) {
        let mut users = self.users();
        let sessions = users.entry(user_key.to_string()).or_default();
        match sessions.iter_mut().find(|(h, _)| h == hash) {
            Some((_, ends)) => *ends = (*ends).max(ends_ms),
            None => sessions.push((hash.clone(), ends_ms)),
        }
    }

    pub fn end(&self, hash: &SessionHash, now_ms: u64, remember_for: Duration) {
        let entry = Entry {
            record: None,
            seen_ms: now_ms,
            expires_at_ms: now_ms + remember_for.as_millis() as u64,
        };
        self.entries().insert(hash.clone(), entry);
    }

    pub fn save(&self, hash: &SessionHash, record: &SessionRecord, now_ms: u64, touch: Duration) {
        let entry = Entry {
            record: Some(record.clone()),
            seen_ms: now_ms,
            expires_at_ms: now_ms + record.ttl_ms(now_ms, touch),
        };
        let mut entries = self.entries();
        // Expired entries are dropped lazily; sweep now and then so memory stays bounded.
        if entries.len() % 1024 == 1023 {
            entries.retain(|_, e| e.expires_at_ms > now_ms);
        }
        entries.insert(hash.clone(), entry);
    }

    pub fn save_if_live(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        now_ms: u64,
        touch: Duration,
    ) -> bool {
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(hash) else {
            return false;
        };
        if entry.record.is_none() || entry.expires_at_ms <= now_ms {
            return false;
        }
        *entry = Entry {
            record: Some(record.clone()),
            seen_ms: now_ms,
            expires_at_ms: now_ms + record.ttl_ms(now_ms, touch),
        };
        true
    }

    pub fn save_if_absent(
        &self,
        hash: &SessionHash,
        record: &SessionRecord,
        seen_ms: u64,
        ttl_ms: u64,
        check_only: bool,
    ) -> IfAbsent {
        let now = super::super::record::now_ms();
        let mut entries = self.entries();
        match entries.get(hash).filter(|e| e.expires_at_ms > now) {
            Some(Entry { record: None, .. }) => return IfAbsent::Ended,
            Some(_) => return IfAbsent::Present,
            None if check_only => return IfAbsent::Written,
            None => {}
        }
        let entry = Entry {
            record: Some(record.clone()),
            seen_ms,
            expires_at_ms: now + ttl_ms,
        };
        entries.insert(hash.clone(), entry);
        IfAbsent::Written
    }

    /// Live sessions (tombstones and expired entries not counted).
    pub fn live_sessions(&self, now_ms: u64) -> usize {
        let entries = self.entries();
        let live = |e: &&Entry| e.record.is_some() && e.expires_at_ms > now_ms;
        entries.values().filter(live).count()
    }

    pub fn delete(&self, hash: &SessionHash) -> bool {
        self.entries().remove(hash).is_some()
    }

    pub fn peek(&self, hash: &SessionHash, now_ms: u64) -> Option<(SessionRecord, u64)> {
        let entries = self.entries();
        let entry = entries.get(hash).filter(|e| e.expires_at_ms > now_ms)?;
        Some((entry.record.clone()?, entry.seen_ms))
    }

    fn users(&self) -> std::sync::MutexGuard<'_, UserIndex> {
        self.users
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn index_add(
        &self,
        user_key: &str,
        hash: &SessionHash,
        ends_ms: u64,
        now_ms: u64,
    ) -> usize {
        let mut users = self.users();
        let sessions = users.entry(user_key.to_string()).or_default();
        sessions.retain(|(h, ends)| h != hash && *ends > now_ms);
        sessions.push((hash.clone(), ends_ms));
        sessions.len()
    }

    pub fn index_remove(&self, user_key: &str, hash: &SessionHash, now_ms: u64) {
        let mut users = self.users();
        if let Some(sessions) = users.get_mut(user_key) {
            sessions.retain(|(h, ends)| h != hash && *ends > now_ms);
            if sessions.is_empty() {
                users.remove(user_key);
            }
        }
    }

    pub fn index_list(&self, user_key: &str, now_ms: u64) -> Vec<SessionHash> {
        self.users()
            .get(user_key)
            .map(|sessions| {
                sessions
                    .iter()
                    .filter(|(_, ends)| *ends > now_ms)
                    .map(|(h, _)| h.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn index_drop(&self, user_key: &str) {
        self.users().remove(user_key);
    }

    pub fn bind(&self, hash: &SessionHash, instance: &str, until_ms: u64) {
        let mut bindings = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        if bindings.len() % 1024 == 1023 {
            bindings.retain(|_, (_, until)| *until > super::super::record::now_ms());
        }
        bindings.insert(hash.clone(), (instance.to_string(), until_ms));
    }

    pub fn binding(&self, hash: &SessionHash, now_ms: u64) -> Option<String> {
        let bindings = self.bindings.lock().unwrap_or_else(|p| p.into_inner());
        bindings
            .get(hash)
            .filter(|(_, until)| *until > now_ms)
            .map(|(instance, _)| instance.clone())
    }
}
