//! Why a config file was refused: [`ConfigError`] names the file, and the key and line where
//! known; [`Problem`] says what is wrong with a value, in the words `unstick check` prints.

use super::validated::NodeAddress;
use std::path::PathBuf;

/// Why a config file was refused. Every message names the file, and the key and line where known.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not TOML, or not the shape of the file (toml's message holds the line).
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}:{line}: `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        problem: Problem,
    },
}

/// What is wrong with one key's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A value toml could not read into its key (wrong type, unknown key, missing key).
    #[error("{0}")]
    Unreadable(String),
    #[error("must be greater than zero")]
    NotPositive,
    #[error("expected an IP address and port, e.g. \"0.0.0.0:8080\"")]
    NotASocketAddress,
    #[error("must be at least 1 (leave it out for a default from the open-file limit)")]
    NoConnections,
    #[error("{text:?}: {why}; write \"host:port\", e.g. \"10.0.0.5:26379\"")]
    NotANodeAddress { text: String, why: NodeAddressFault },
    #[error("list at least one \"host:port\"")]
    NoNodes,
    #[error("{0} is listed twice")]
    NodeListedTwice(NodeAddress),
    #[error(
        "set exactly one of `url` (one Redis), `sentinels` with `service_name` (Redis \
         Sentinel) or `cluster_nodes` (Redis Cluster)"
    )]
    NotOneRedisTarget,
    #[error("applies only with {0}")]
    AppliesOnlyWith(&'static str),
    #[error(
        "with redis.url the credentials go in the URL (redis://user:password@host:port); this \
         key is for sentinels or cluster_nodes"
    )]
    CredentialsBesideUrl,
    #[error("with redis.url, TLS is chosen by the scheme: write rediss://")]
    TlsBesideUrl,
    #[error(
        "required with redis.sentinels: the name the sentinels monitor the master under \
         (`sentinel monitor <name> ...`), e.g. \"mymaster\""
    )]
    NoServiceName,
    #[error("not a usable Redis URL: {0}")]
    UnusableRedisUrl(String),
    #[error(
        "expected redis://host:port, rediss://host:port, or memory:// (demo only){}",
        if *.sentinel_or_cluster_url {
            "; for Sentinel or Cluster use the keys `sentinels` + `service_name` or \
             `cluster_nodes` instead of a URL"
        } else {
            ""
        }
    )]
    NotARedisUrl { sentinel_or_cluster_url: bool },
    #[error("must be non-empty without spaces, e.g. \"myapp:prod:\"")]
    BadKeyPrefix,
    #[error("must be between 1 and {max}")]
    PoolSizeOutOfRange { max: usize },
    #[error("must be between 1 and {max} (set enabled = false to turn the near cache off)")]
    NearCacheSizeOutOfRange { max: usize },
    #[error("at most {max} (the replicas of one master that must hold a new session)")]
    TooManyReplicas { max: u32 },
    #[error("memory:// has no replicas; remove it or use Redis")]
    MemoryHasNoReplicas,
    #[error("must be between 1ms and {} (a login waits this long at most)", humantime::format_duration(*.max))]
    WaitTimeoutOutOfRange { max: std::time::Duration },
    #[error("not a valid cookie name")]
    BadCookieName,
    #[error(
        "express-signed needs `secrets = [\"current\", \"older\", ...]` (the app's secrets, none empty)"
    )]
    NoExpressSecrets,
    #[error(
        "laravel needs `secrets = [\"${{APP_KEY}}\", ...]`: the app's keys, current first, each \
         \"base64:...\" of 32 bytes (AES-256-CBC) or 16 (AES-128-CBC)"
    )]
    BadLaravelKeys,
    #[error("must be at least {}", humantime::format_duration(*.min))]
    TooShort { min: std::time::Duration },
    #[error("must be at most {} days (browsers keep no cookie longer)", .max.as_secs() / 86_400)]
    TooLong { max: std::time::Duration },
    #[error("must not be shorter than session.idle_timeout")]
    LifetimeBelowIdleTimeout,
    #[error("{0:?} is not a valid header name")]
    BadHeaderName(String),
    #[error("`header` is not a valid header name")]
    BadAttributeHeader,
    #[error("`pointer` must be a JSON pointer such as \"/tenant\"")]
    BadAttributePointer,
    #[error("identity header {0} is configured twice")]
    HeaderConfiguredTwice(String),
    #[error("use a random secret of at least {min} characters")]
    WeakSecret { min: usize },
    #[error("must start with /")]
    NoLeadingSlash,
    #[error("each path must start with /")]
    PathWithoutLeadingSlash,
    #[error("two {0} share this name")]
    NameTaken(&'static str),
    #[error("needs at least one instance")]
    NoInstances,
    #[error("{0:?} is not a URL")]
    NotAUrl(String),
    #[error("expected http://host:port (plain HTTP to the app, with a port)")]
    NotHttpWithPort,
    #[error("must not have a path; requests keep their own path")]
    UrlWithPath,
    #[error("no instance named {0:?} in this upstream")]
    UnknownInstance(String),
    #[error("no upstream named {name:?} (known: {})", .known.join(", "))]
    UnknownUpstream { name: String, known: Vec<String> },
    #[error("no [[old_stores]] named {0:?}")]
    UnknownOldStore(String),
    #[error("no [[routes]]: add at least one route (e.g. path_prefix = \"/\")")]
    NoRoutes,
    #[error("overlap mode needs the old stores to ask, e.g. old_stores = [\"app-whoami\"]")]
    OverlapWithoutOldStores,
    #[error("warming copies from old stores: list them in old_stores")]
    WarmWithoutOldStores,
    #[error("required for this kind: {0}")]
    RequiredForKind(&'static str),
    #[error("a key of kind = \"{owners}\", not of kind = \"{kind}\"")]
    KeyOfOtherKind { kind: &'static str, owners: String },
    #[error("unknown field `{key}` for kind = \"{kind}\", expected one of {expected}")]
    UnknownKey {
        key: String,
        kind: &'static str,
        expected: String,
    },
    #[error("must contain {{id}}")]
    KeyWithoutId,
    #[error("must take the session id as $1")]
    QueryWithoutId,
    #[error("{value:?}: expected {expected}")]
    UnknownFormat {
        value: String,
        expected: &'static str,
    },
    #[error("set either `{field}_selector` or `{field}_pattern`, not both")]
    SelectorAndPattern { field: &'static str },
    #[error("not a CSS selector: {0}")]
    BadSelector(String),
    #[error("not a regular expression: {0}")]
    BadPattern(String),
    #[error("needs a capture group around the value, e.g. 'Logged in as (\\w+)'")]
    PatternWithoutGroup,
    #[error("the \"html\" format needs `user_selector` or `user_pattern`, e.g. user_selector = \"#user\"")]
    HtmlWithoutUser,
    #[error("a file name prefix cannot contain / (\"sess_\" for PHP, \"\" for Laravel)")]
    BadFilePrefix,
}

/// Why a `host:port` of a sentinel or cluster node was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NodeAddressFault {
    #[error("a bare address is expected here, not a URL")]
    IsAUrl,
    #[error("no port")]
    NoPort,
    #[error("no host")]
    NoHost,
    #[error("the port must be a number from 1 to 65535")]
    BadPort,
}
