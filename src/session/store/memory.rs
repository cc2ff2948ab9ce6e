//! `memory://`: sessions in this process only. Lost on restart, not shared between proxies.

use super::session_key;
use crate::session::cookie::SessionHash;
use crate::session::record::SessionRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Entry {
    record: SessionRecord,
    seen_ms: u64,
    expires_at_ms: u64,
}

#[derive(Clone)]
pub struct MemoryStore {
    prefix: String,
    entries: Arc<Mutex<HashMap<SessionHash, Entry>>>,
}

impl MemoryStore {
    pub fn new(prefix: &str) -> MemoryStore {
        MemoryStore {
            prefix: prefix.to_string(),
            entries: Arc::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<SessionHash, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written; keep serving.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn load(&self, hash: &SessionHash, now_ms: u64, touch: Duration) -> Option<SessionRecord> {
        let mut entries = self.entries();
        if entries.get(hash).is_some_and(|e| e.expires_at_ms <= now_ms) {
            entries.remove(hash);
        }
        let entry = entries.get_mut(hash)?;
        if now_ms.saturating_sub(entry.seen_ms) >= touch.as_millis() as u64 {
            entry.seen_ms = now_ms;
            entry.expires_at_ms = now_ms + entry.record.ttl_ms(now_ms, touch);
        }
        Some(entry.record.clone())
    }

    pub fn save(&self, hash: &SessionHash, record: &SessionRecord, now_ms: u64, touch: Duration) {
        let entry = Entry {
            record: record.clone(),
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

    pub fn delete(&self, hash: &SessionHash) -> bool {
        self.entries().remove(hash).is_some()
    }

    pub fn key(&self, hash: &SessionHash) -> String {
        session_key(&self.prefix, hash)
    }
}
