//! `[redis]`: which Redis (one URL, a Sentinel service or a Cluster), how sessions are keyed,
//! and the client's timeouts and pool.

use super::super::defaults;
use super::super::error::{ConfigError, NodeAddressFault, Problem};
use super::super::raw::{RawNearCache, RawRedis};
use super::super::validated::{
    ClusterTarget, NearCacheConfig, NodeAddress, NodeAuth, SentinelTarget, StoreConfig, StoreUrl,
};
use super::super::values::{HumanDuration, Text};
use super::Validator;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// A set, non-empty string value.
fn text(value: &Option<Spanned<Text>>) -> Option<String> {
    value
        .as_ref()
        .map(|v| v.get_ref().0.clone())
        .filter(|v| !v.is_empty())
}

impl Validator<'_> {
    /// `host:port` (IPv6 as `[::1]:6379`) of a sentinel or cluster node.
    fn node_address(&self, value: &Spanned<Text>, key: &str) -> Result<NodeAddress, ConfigError> {
        let text = value.get_ref().0.trim();
        let bad = |why: NodeAddressFault| {
            let text = text.to_string();
            self.err(value.span(), key, Problem::NotANodeAddress { text, why })
        };
        if text.contains("://") {
            return Err(bad(NodeAddressFault::IsAUrl));
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| bad(NodeAddressFault::NoPort))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad(NodeAddressFault::NoHost));
        }
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(NodeAddress {
                host: host.to_string(),
                port,
            }),
            _ => Err(bad(NodeAddressFault::BadPort)),
        }
    }

    fn node_list(
        &self,
        list: &Spanned<Vec<Spanned<Text>>>,
        key: &str,
    ) -> Result<Vec<NodeAddress>, ConfigError> {
        if list.get_ref().is_empty() {
            return Err(self.err(list.span(), key, Problem::NoNodes));
        }
        let mut nodes: Vec<NodeAddress> = Vec::new();
        for value in list.get_ref() {
            let node = self.node_address(value, key)?;
            if nodes.contains(&node) {
                return Err(self.err(value.span(), key, Problem::NodeListedTwice(node)));
            }
            nodes.push(node);
        }
        Ok(nodes)
    }

    /// Exactly one kind of target is named, and no key of another kind is set: such keys are
    /// refused rather than silently ignored.
    fn target_keys_fit(&self, raw: &Spanned<RawRedis>) -> Result<(), ConfigError> {
        let table = raw.get_ref();
        let named = [
            table.url.is_some(),
            table.sentinels.is_some(),
            table.cluster_nodes.is_some(),
        ];
        if named.iter().filter(|n| **n).count() != 1 {
            return Err(self.err(raw.span(), "redis", Problem::NotOneRedisTarget));
        }
        if table.sentinels.is_none() {
            for (value, key) in [
                (&table.service_name, "redis.service_name"),
                (&table.sentinel_username, "redis.sentinel_username"),
                (&table.sentinel_password, "redis.sentinel_password"),
            ] {
                if let Some(value) = value {
                    let problem = Problem::AppliesOnlyWith("redis.sentinels");
                    return Err(self.err(value.span(), key, problem));
                }
            }
        }
        if table.url.is_some() {
            for (value, key) in [
                (table.username.as_ref().map(Spanned::span), "redis.username"),
                (table.password.as_ref().map(Spanned::span), "redis.password"),
            ] {
                if let Some(span) = value {
                    return Err(self.err(span, key, Problem::CredentialsBesideUrl));
                }
            }
            if let Some(tls) = &table.tls {
                return Err(self.err(tls.span(), "redis.tls", Problem::TlsBesideUrl));
            }
        }
        Ok(())
    }

    /// Which Redis: one `url`, a Sentinel service, or a Cluster.
    fn store_target(&self, raw: &Spanned<RawRedis>) -> Result<StoreUrl, ConfigError> {
        self.target_keys_fit(raw)?;
        let table = raw.get_ref();
        if let Some(url) = &table.url {
            return self.single_url(url);
        }
        let auth = NodeAuth {
            username: text(&table.username),
            password: text(&table.password),
            tls: table.tls.as_ref().is_some_and(|t| *t.get_ref()),
        };
        if let Some(sentinels) = &table.sentinels {
            let sentinels = self.node_list(sentinels, "redis.sentinels")?;
            let service_name = text(&table.service_name).ok_or_else(|| {
                self.err(raw.span(), "redis.service_name", Problem::NoServiceName)
            })?;
            return Ok(StoreUrl::Sentinel(SentinelTarget {
                sentinels,
                service_name,
                sentinel_username: text(&table.sentinel_username),
                sentinel_password: text(&table.sentinel_password),
                auth,
            }));
        }
        let nodes = match &table.cluster_nodes {
            Some(nodes) => self.node_list(nodes, "redis.cluster_nodes")?,
            None => Vec::new(),
        };
        Ok(StoreUrl::Cluster(ClusterTarget { nodes, auth }))
    }

    fn single_url(&self, url: &Spanned<Text>) -> Result<StoreUrl, ConfigError> {
        let url_text = url.get_ref().0.trim().to_string();
        if url_text == "memory://" {
            return Ok(StoreUrl::Memory);
        }
        if url_text.starts_with("redis://") || url_text.starts_with("rediss://") {
            // Parsed as redis:// so that validating a rediss:// URL does not load CA files.
            fred::types::config::Config::from_url(&url_text.replacen("rediss://", "redis://", 1))
                .map_err(|e| {
                let problem = Problem::UnusableRedisUrl(e.to_string());
                self.err(url.span(), "redis.url", problem)
            })?;
            return Ok(StoreUrl::Redis(url_text));
        }
        let sentinel_or_cluster_url =
            url_text.contains("-sentinel://") || url_text.contains("-cluster://");
        Err(self.err(
            url.span(),
            "redis.url",
            Problem::NotARedisUrl {
                sentinel_or_cluster_url,
            },
        ))
    }

    fn key_prefix(&self, raw: Option<Spanned<Text>>) -> Result<String, ConfigError> {
        let Some(prefix) = raw else {
            return Ok(defaults::KEY_PREFIX.to_string());
        };
        let text = prefix.get_ref().0.clone();
        if text.is_empty() || text.contains(char::is_whitespace) {
            return Err(self.err(prefix.span(), "redis.key_prefix", Problem::BadKeyPrefix));
        }
        Ok(text)
    }

    fn pool_size(&self, raw: Option<Spanned<usize>>) -> Result<usize, ConfigError> {
        match raw {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > defaults::POOL_SIZE_MAX => {
                let problem = Problem::PoolSizeOutOfRange {
                    max: defaults::POOL_SIZE_MAX,
                };
                Err(self.err(n.span(), "redis.pool_size", problem))
            }
            Some(n) => Ok(*n.get_ref()),
            None => Ok(defaults::POOL_SIZE),
        }
    }

    /// `wait_replicas` and `wait_timeout`: what a login waits for before it answers.
    fn replica_wait(
        &self,
        replicas: Option<Spanned<u32>>,
        timeout: Option<Spanned<HumanDuration>>,
        url: &StoreUrl,
    ) -> Result<(u32, Duration), ConfigError> {
        let wait_replicas = match replicas {
            Some(n) if *n.get_ref() > defaults::WAIT_REPLICAS_MAX => {
                let problem = Problem::TooManyReplicas {
                    max: defaults::WAIT_REPLICAS_MAX,
                };
                return Err(self.err(n.span(), "redis.wait_replicas", problem));
            }
            Some(n) if *n.get_ref() > 0 && *url == StoreUrl::Memory => {
                let problem = Problem::MemoryHasNoReplicas;
                return Err(self.err(n.span(), "redis.wait_replicas", problem));
            }
            Some(n) => *n.get_ref(),
            None => 0,
        };
        let wait_timeout = match timeout {
            Some(t) if t.get_ref().0.is_zero() || t.get_ref().0 > defaults::WAIT_TIMEOUT_MAX => {
                let problem = Problem::WaitTimeoutOutOfRange {
                    max: defaults::WAIT_TIMEOUT_MAX,
                };
                return Err(self.err(t.span(), "redis.wait_timeout", problem));
            }
            Some(t) if wait_replicas == 0 => {
                let problem = Problem::AppliesOnlyWith("redis.wait_replicas of 1 or more");
                return Err(self.err(t.span(), "redis.wait_timeout", problem));
            }
            Some(t) => t.get_ref().0,
            None => defaults::WAIT_TIMEOUT,
        };
        Ok((wait_replicas, wait_timeout))
    }

    fn near_cache(&self, raw: Option<RawNearCache>) -> Result<NearCacheConfig, ConfigError> {
        let raw = raw.unwrap_or_default();
        let max_entries = match raw.max_entries {
            Some(n) if *n.get_ref() == 0 || *n.get_ref() > defaults::NEAR_CACHE_MAX_ENTRIES_MAX => {
                let problem = Problem::NearCacheSizeOutOfRange {
                    max: defaults::NEAR_CACHE_MAX_ENTRIES_MAX,
                };
                return Err(self.err(n.span(), "redis.near_cache.max_entries", problem));
            }
            Some(n) => *n.get_ref(),
            None => defaults::NEAR_CACHE_MAX_ENTRIES,
        };
        Ok(NearCacheConfig {
            enabled: raw.enabled.unwrap_or(defaults::NEAR_CACHE_ENABLED),
            max_entries,
            max_age: self.positive(
                raw.max_age,
                "redis.near_cache.max_age",
                defaults::NEAR_CACHE_MAX_AGE,
            )?,
            serve_stale_for: raw
                .serve_stale_for
                .map_or(defaults::NEAR_CACHE_SERVE_STALE_FOR, |d| d.0),
        })
    }

    pub(super) fn store(&self, spanned: Spanned<RawRedis>) -> Result<StoreConfig, ConfigError> {
        let url = self.store_target(&spanned)?;
        let raw = spanned.into_inner();
        let key_prefix = self.key_prefix(raw.key_prefix)?;
        let command_timeout = self.positive(
            raw.command_timeout,
            "redis.command_timeout",
            defaults::COMMAND_TIMEOUT,
        )?;
        let pool_size = self.pool_size(raw.pool_size)?;
        let (wait_replicas, wait_timeout) =
            self.replica_wait(raw.wait_replicas, raw.wait_timeout, &url)?;
        let or = |value: Option<HumanDuration>, default: Duration| value.map_or(default, |d| d.0);
        Ok(StoreConfig {
            url,
            key_prefix,
            connect_timeout: or(raw.connect_timeout, defaults::REDIS_CONNECT_TIMEOUT),
            command_timeout,
            reconnect_min: or(raw.reconnect_min, defaults::RECONNECT_MIN),
            reconnect_max: or(raw.reconnect_max, defaults::RECONNECT_MAX),
            pool_size,
            retry_after: or(raw.retry_after, defaults::RETRY_AFTER),
            ca_file: raw.ca_file.map(|f| PathBuf::from(f.into_inner().0)),
            wait_replicas,
            wait_timeout,
            near_cache: self.near_cache(raw.near_cache)?,
        })
    }
}
