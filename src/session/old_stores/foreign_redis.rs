//! The app's own Redis, read as its session library wrote it: connect-redis (`sess:<id>`, the
//! session as JSON) or phpredis (`PHPREDIS_SESSION:<id>`, PHP session format). One GET+PTTL
//! round trip per lookup, always bounded by the store's timeout. Listed (for the pre-copy) by
//! SCAN over the key template, never KEYS, with each page's values read in one round trip.

use super::php_serialize;
use crate::config::IdentityMapping;
use crate::session::cookie::SessionId;
use crate::session::old_store::{found, invalid, timed_out, unavailable};
use crate::session::old_store::{
    Decoded, Listed, Listing, LookupContext, OldSession, OldStore, OldStoreError,
};
use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::*;
use fred::types::config::{
    ConnectionConfig, PerformanceConfig, ReconnectPolicy, UnresponsiveConfig,
};
use serde_json::Value;
use std::time::{Duration, SystemTime};

/// How the value at the key is encoded (the config's own enum: `json` for connect-redis,
/// `php` for phpredis with either PHP handler).
pub use crate::config::ForeignRedisFormat as ForeignFormat;

pub struct ForeignRedisStore {
    name: String,
    client: Client,
    key_template: String,
    format: ForeignFormat,
    mapping: IdentityMapping,
    timeout: Duration,
}

impl ForeignRedisStore {
    /// `key_template` holds `{id}` where the raw session id goes, e.g. `sess:{id}`. A Redis that
    /// is down does not fail this: the client keeps reconnecting in the background and each
    /// lookup meanwhile fails within `timeout`, so the proxy starts and recovers on its own.
    pub async fn connect(
        name: &str,
        url: &str,
        key_template: &str,
        format: ForeignFormat,
        mapping: IdentityMapping,
        timeout: Duration,
    ) -> Result<ForeignRedisStore, OldStoreError> {
        if !key_template.contains("{id}") {
            return Err(invalid(name, "key template must contain {id}"));
        }
        let mut config = Config::from_url(url).map_err(|e| invalid(name, e))?;
        config.fail_fast = false;
        let client = Builder::from_config(config)
            .with_performance_config(|perf: &mut PerformanceConfig| {
                perf.default_command_timeout = timeout;
            })
            .with_connection_config(|conn: &mut ConnectionConfig| {
                conn.connection_timeout = timeout;
                conn.internal_command_timeout = timeout.max(Duration::from_secs(1));
                // A Redis that stops answering is dropped and reconnected, not waited on.
                conn.unresponsive = UnresponsiveConfig {
                    max_timeout: Some(timeout.max(Duration::from_millis(500)) * 4),
                    interval: Duration::from_millis(250),
                };
                // Commands wait for a reconnect only within their own timeout.
                conn.max_command_attempts = 1;
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build()
            .map_err(|e| invalid(name, e))?;
        client.connect();
        match tokio::time::timeout(timeout, client.wait_for_connect()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(store = name, error = %e, "old-store Redis not reachable yet; retrying in the background")
            }
            Err(_) => tracing::warn!(
                store = name,
                "old-store Redis not reachable yet; retrying in the background"
            ),
        }
        Ok(ForeignRedisStore {
            name: name.to_string(),
            client,
            key_template: key_template.to_string(),
            format,
            mapping,
            timeout,
        })
    }

    fn key(&self, id: &SessionId) -> String {
        self.key_template.replace("{id}", id.id())
    }

    async fn get_with_ttl(&self, key: &str) -> Result<(Option<Bytes>, i64), Error> {
        // Pipelined: one round trip, and no script to load (works on Redis Cluster too).
        let pipeline = self.client.pipeline();
        let () = pipeline.get(key).await?;
        let () = pipeline.pttl(key).await?;
        pipeline.all().await
    }

    fn decode(&self, raw: &[u8], pttl: i64) -> Decoded {
        let doc: Value = match self.format {
            ForeignFormat::Json => match serde_json::from_slice(raw) {
                Ok(doc) => doc,
                Err(e) => return Decoded::Unreadable(e.to_string()),
            },
            ForeignFormat::Php => match php_serialize::decode_session(raw) {
                Ok(doc) => doc,
                Err(e) => return Decoded::Unreadable(e.to_string()),
            },
        };
        let remaining = match pttl {
            ms if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            // No TTL on the key: connect-redis still says when the session ends.
            -1 if self.format == ForeignFormat::Json => match cookie_expires(&doc) {
                Some(expires) => match expires.duration_since(SystemTime::now()) {
                    Ok(left) => Some(left),
                    Err(_) => return Decoded::Expired,
                },
                None => None,
            },
            -1 => None,
            // Expired between GET and PTTL.
            _ => return Decoded::Expired,
        };
        found(&doc, &self.mapping, remaining)
    }

    /// `SCAN MATCH` pattern of the key template, and the text around `{id}` in it.
    fn scan_pattern(&self) -> Option<(String, &str, &str)> {
        let (prefix, suffix) = self.key_template.split_once("{id}")?;
        Some((
            format!("{}*{}", glob_escaped(prefix), glob_escaped(suffix)),
            prefix,
            suffix,
        ))
    }

    /// One page of the listing: SCAN from `cursor`, then every key's value and TTL in one
    /// pipelined round trip. Returns the page and the next cursor (`None` at the end).
    async fn list_page(
        &self,
        cursor: String,
        batch: usize,
    ) -> Result<(Vec<Listed>, Option<String>), OldStoreError> {
        let Some((pattern, prefix, suffix)) = self.scan_pattern() else {
            return Err(invalid(&self.name, "key template must contain {id}"));
        };
        let bounded = |e: Error| unavailable(&self.name, e);
        let count = Some(batch.clamp(1, 10_000) as u32);
        let (next, keys): (String, Vec<Bytes>) = self
            .client
            .scan_page(cursor, pattern, count, None)
            .await
            .map_err(bounded)?;
        // Keys that are not UTF-8 cannot come from a cookie: no request could use them.
        let ids: Vec<(String, String)> = keys
            .iter()
            .filter_map(|key| std::str::from_utf8(key).ok())
            .filter_map(|key| {
                let id = key.strip_prefix(prefix)?.strip_suffix(suffix)?;
                (!id.is_empty()).then(|| (key.to_string(), id.to_string()))
            })
            .collect();
        let mut listed = Vec::with_capacity(ids.len());
        if !ids.is_empty() {
            let pipeline = self.client.pipeline();
            for (key, _) in &ids {
                let () = pipeline.get(key.as_str()).await.map_err(bounded)?;
                let () = pipeline.pttl(key.as_str()).await.map_err(bounded)?;
            }
            // One answer per command: a key of another type fails alone, not the page.
            let mut answers = pipeline.try_all::<fred::types::Value>().await.into_iter();
            for (_, id) in ids {
                let (value, pttl) = (answers.next(), answers.next());
                let session = match (value, pttl) {
                    (Some(Ok(value)), Some(Ok(pttl))) => match value.as_bytes() {
                        Some(raw) => self.decode(raw, pttl.as_i64().unwrap_or(-2)),
                        // Gone (expired or deleted) since the SCAN.
                        None => Decoded::Expired,
                    },
                    (Some(Err(e)), _) | (_, Some(Err(e))) => Decoded::Unreadable(e.to_string()),
                    _ => Decoded::Unreadable("no answer for the key".into()),
                };
                listed.push(Listed {
                    id: SessionId::stored(id),
                    session,
                });
            }
        }
        Ok((listed, (next != "0").then_some(next)))
    }
}

/// `text` matched literally by a Redis glob pattern.
fn glob_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// connect-redis keeps `cookie.expires` as an ISO 8601 date (JavaScript `toISOString`).
fn cookie_expires(doc: &Value) -> Option<SystemTime> {
    let text = doc.pointer("/cookie/expires")?.as_str()?;
    humantime::parse_rfc3339(text).ok()
}

#[async_trait]
impl OldStore for ForeignRedisStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(
        &self,
        id: &SessionId,
        _context: &LookupContext<'_>,
    ) -> Result<Option<OldSession>, OldStoreError> {
        let key = self.key(id);
        let (raw, pttl) = tokio::time::timeout(self.timeout, self.get_with_ttl(&key))
            .await
            .map_err(|_| timed_out(&self.name, self.timeout))?
            .map_err(|e| unavailable(&self.name, e))?;
        Ok(raw.and_then(|raw| self.decode(&raw, pttl).into_lookup(&self.name, id)))
    }

    async fn delete(&self, id: &SessionId) -> Result<(), OldStoreError> {
        let key = self.key(id);
        let _: i64 = tokio::time::timeout(self.timeout, self.client.del(key))
            .await
            .map_err(|_| timed_out(&self.name, self.timeout))?
            .map_err(|e| unavailable(&self.name, e))?;
        Ok(())
    }

    fn list(&self, batch: usize) -> Option<Listing<'_>> {
        let pages =
            futures_util::stream::try_unfold(Some("0".to_string()), move |cursor| async move {
                let Some(cursor) = cursor else {
                    return Ok(None);
                };
                let (listed, next) =
                    tokio::time::timeout(self.timeout * 4, self.list_page(cursor, batch))
                        .await
                        .map_err(|_| timed_out(&self.name, self.timeout * 4))??;
                Ok(Some((listed, next)))
            });
        Some(Box::pin(pages))
    }
}

impl Drop for ForeignRedisStore {
    // fred's connection task outlives its handles; a replaced store (config reload) must not
    // keep reconnecting forever.
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_javascript_dates() {
        let doc = json!({"cookie": {"expires": "2030-01-02T03:04:05.678Z"}});
        let expected = humantime::parse_rfc3339("2030-01-02T03:04:05.678Z").unwrap();
        assert_eq!(cookie_expires(&doc), Some(expected));
        assert_eq!(cookie_expires(&json!({"cookie": {"expires": null}})), None);
        assert_eq!(
            cookie_expires(&json!({"cookie": {"expires": "soon"}})),
            None
        );
    }

    #[test]
    fn scan_patterns_match_the_template_literally() {
        assert_eq!(glob_escaped("sess:"), "sess:");
        assert_eq!(glob_escaped("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
