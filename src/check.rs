//! `unstick check`: a preflight that can gate a deploy. It validates the config, reaches the
//! session store, and looks for settings that would log users out later: a Redis that may
//! evict or forget sessions, lifetimes shorter than the app's cookie, identity headers that
//! something between unstick and the app could drop or forge, routes with no way to see a
//! logout.
//!
//! Every problem is a [`Finding`] in the [`Report`], never an early error: the operator sees
//! everything that is wrong in one run. [`Report::passed`] is `false` with an error; a warning
//! (a risk the operator may knowingly accept) fails it only when strict.

use crate::config::{
    load_config, Config, ConfigError, IdentityConfig, SessionConfig, StoreConfig, StoreUrl,
    UnexplainedCookieChange,
};
use crate::session::store::RedisStore;
use fred::prelude::*;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

mod topology;

/// PINGs sent to measure latency; the median is reported.
const LATENCY_PINGS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One result of the preflight: what was found and, for a problem, why it matters and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// The area checked: `config`, `redis`, `session`, `headers`.
    pub topic: &'static str,
    /// What was found (and, for a problem, its consequence).
    pub what: String,
    /// How to fix it.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(topic: &'static str, what: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            topic,
            what: what.into(),
            fix: None,
        }
    }

    fn warning(topic: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warning,
            topic,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    fn error(topic: &'static str, what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Error,
            topic,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }
}

/// One line: `warning  redis: <what>. Fix: <how>`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = self.what.trim_end_matches('.');
        write!(f, "{:<8} {}: {what}", self.level.as_str(), self.topic)?;
        if let Some(fix) = &self.fix {
            write!(f, ". Fix: {fix}")?;
        }
        Ok(())
    }
}

/// Everything the preflight found, in the order it was checked.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn count(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// `true` without errors and, when `strict`, without warnings: safe to deploy. A warning
    /// is a risk the operator may knowingly accept, so it fails the check only when strict.
    pub fn passed(&self, strict: bool) -> bool {
        self.count(Level::Error) == 0 && !(strict && self.count(Level::Warning) > 0)
    }

    /// One line for the end of the output.
    pub fn summary(&self, strict: bool) -> String {
        let (errors, warnings, ok) = (
            self.count(Level::Error),
            self.count(Level::Warning),
            self.count(Level::Ok),
        );
        match (self.passed(strict), warnings) {
            (true, 0) => format!("check passed: {ok} ok, no warnings, no errors"),
            (true, _) => format!(
                "check passed with {warnings} warning(s), {ok} ok: read each warning and fix it \
                 or knowingly accept it (--strict fails on warnings)"
            ),
            (false, _) if errors == 0 => format!(
                "check failed (--strict): {warnings} warning(s), {ok} ok; fix them before \
                 deploying, or run without --strict to accept them"
            ),
            (false, _) => format!(
                "check failed: {errors} error(s), {warnings} warning(s), {ok} ok; fix the errors \
                 before deploying"
            ),
        }
    }

    fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }
}

/// The whole preflight for a config file. A file that does not validate is the only finding.
pub async fn check_file(path: &Path) -> Report {
    match load_config(path) {
        Ok(config) => {
            let mut report = Report::default();
            report.push(Finding::ok(
                "config",
                format!(
                    "{} is valid ({} upstream(s), {} route(s))",
                    path.display(),
                    config.upstreams.len(),
                    config.routes.len()
                ),
            ));
            report.findings.extend(check_config(&config).await.findings);
            report
        }
        Err(e) => Report {
            findings: vec![Finding::error(
                "config",
                one_line(&e.to_string()),
                config_fix(&e),
            )],
        },
    }
}

/// What to do about a config that does not load, by what went wrong: only a validation error
/// names a key.
fn config_fix(error: &ConfigError) -> String {
    let fix = match error {
        ConfigError::Io { .. } => {
            "check the path (--config or UNSTICK_CONFIG) and that this user can read the file"
                .to_string()
        }
        ConfigError::Invalid { key, line, .. } => format!("correct `{key}` on line {line}"),
        ConfigError::Parse { message, .. } if message.contains("environment variable") => {
            "set the variable in unstick's environment (an EnvironmentFile, docker -e), or give \
             it a default with ${VAR:-default}"
                .to_string()
        }
        ConfigError::Parse { .. } => {
            "correct the file at the line and column shown (TOML syntax, a key's name or its \
             value)"
                .to_string()
        }
    };
    format!("{fix}; nothing else was checked")
}

/// The checks of a validated config: store, lifetimes, identity header names.
pub async fn check_config(config: &Config) -> Report {
    let mut report = Report::default();
    report.findings.extend(check_store(&config.store).await);
    report.findings.extend(check_lifetimes(&config.session));
    report
        .findings
        .extend(check_identity_headers(&config.identity));
    report.findings.extend(check_logout_signals(config));
    report
}

/// Every route needs a way to see a logout: by default a cleared or replaced cookie is read as
/// the app's housekeeping, not as a logout.
pub fn check_logout_signals(config: &Config) -> Vec<Finding> {
    let logout_header = config.identity.logout_header.as_str();
    let mut findings = Vec::new();
    for route in &config.routes {
        let label = format!(
            "{}{}",
            route.host.as_deref().unwrap_or(""),
            route.path_prefix
        );
        if !route.logout_paths.is_empty() {
            findings.push(Finding::ok(
                "routes",
                format!(
                    "route {label}: logouts seen on {}",
                    route.logout_paths.join(", ")
                ),
            ));
        } else if route.unexplained_cookie_change == UnexplainedCookieChange::KeepSession {
            findings.push(Finding::warning(
                "routes",
                format!(
                    "route {label} has no logout_paths: a logout is then seen only when the app \
                     sends {logout_header}; an app that clears its cookie to log out keeps the \
                     user logged in at the proxy"
                ),
                format!(
                    "list the app's logout paths in logout_paths (e.g. [\"/logout\"]), or make \
                     the app send {logout_header} on logout"
                ),
            ));
        }
    }
    findings
}

/// A TOML parse error spans several lines (a source snippet with a caret); keep its text only.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .trim_start()
                    .starts_with('|')
        })
        .collect::<Vec<_>>()
        .join(": ")
}

/// Reaches the store and reads the Redis settings sessions depend on.
pub async fn check_store(config: &StoreConfig) -> Vec<Finding> {
    if config.url == StoreUrl::Memory {
        return vec![Finding::warning(
            "redis",
            "session store is memory:// (demo only): sessions live in one process, are lost \
             on every restart and are not shared between proxies; Redis checks skipped",
            "set redis.url to a redis:// or rediss:// URL (e.g. \"${REDIS_URL}\"), or \
             redis.sentinels or redis.cluster_nodes",
        )];
    }
    let shown = config.url.redacted();
    let unreachable = |error: String| {
        Finding::error(
            "redis",
            format!("cannot reach Redis at {shown}: {error}"),
            "check the [redis] addresses, credentials, the network path and that Redis runs; \
             while it is down every request that carries a session gets a 503",
        )
    };
    let store = match RedisStore::connect(config).await {
        Ok(store) => store,
        Err(e) => return vec![unreachable(e.to_string())],
    };
    let mut findings = Vec::new();
    match measure_latency(&store).await {
        Err(e) if store.is_connected() => findings.push(unreachable(e)),
        Err(_) => findings.push(unreachable(
            match tcp_probe(config, config.connect_timeout).await {
                Some(Err(os)) => format!("TCP connection failed ({os})"),
                Some(Ok(())) => "the port accepts TCP connections but the Redis handshake did \
                                 not complete (wrong password or ACL user, TLS mismatch, \
                                 unknown sentinel service name, or not Redis)"
                    .to_string(),
                None => format!(
                    "no connection within redis.connect_timeout ({})",
                    human(config.connect_timeout)
                ),
            },
        )),
        Ok((median, max)) => {
            findings.push(latency_finding(&shown, median, max, config.command_timeout));
            findings.extend(topology::check_topology(config, store.pool()).await);
            findings.extend(check_redis_settings(store.pool()).await);
        }
    }
    // Stop the client's background reconnects: the check is over.
    let _ = tokio::time::timeout(Duration::from_secs(1), store.pool().quit()).await;
    findings
}

/// A plain TCP connect to the first configured address (the URL's host, the first sentinel or
/// cluster node), for the operating system's reason (refused, unreachable, unknown host);
/// `None` when there is no address or it took too long.
async fn tcp_probe(config: &StoreConfig, timeout: Duration) -> Option<Result<(), String>> {
    let address = match &config.url {
        StoreUrl::Redis(url) => {
            let parsed = fred::types::config::Config::from_url(url).ok()?;
            let server = parsed.server.hosts().into_iter().next()?;
            (server.host.to_string(), server.port)
        }
        StoreUrl::Sentinel(target) => {
            let first = target.sentinels.first()?;
            (first.host.clone(), first.port)
        }
        StoreUrl::Cluster(target) => {
            let first = target.nodes.first()?;
            (first.host.clone(), first.port)
        }
        StoreUrl::Memory => return None,
    };
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Some(Ok(())),
        Ok(Err(e)) => Some(Err(e.to_string())),
        Err(_) => None,
    }
}

/// Median and maximum of a few PINGs.
async fn measure_latency(store: &RedisStore) -> Result<(Duration, Duration), String> {
    let mut samples = Vec::with_capacity(LATENCY_PINGS);
    for _ in 0..LATENCY_PINGS {
        samples.push(store.ping().await.map_err(|e| e.to_string())?);
    }
    samples.sort();
    Ok((samples[samples.len() / 2], samples[samples.len() - 1]))
}

fn latency_finding(
    shown: &str,
    median: Duration,
    max: Duration,
    command_timeout: Duration,
) -> Finding {
    let measured = format!(
        "latency {} (median of {LATENCY_PINGS} PINGs, max {})",
        millis(median),
        millis(max)
    );
    if median * 2 >= command_timeout {
        Finding::warning(
            "redis",
            format!(
                "{shown} reachable, but {measured} is close to redis.command_timeout ({}): \
                 requests with a session will get 503s when Redis is a little slower",
                human(command_timeout)
            ),
            "run unstick closer to Redis, or raise redis.command_timeout",
        )
    } else {
        Finding::ok("redis", format!("{shown} reachable, {measured}"))
    }
}

/// Eviction policy and persistence, read with `CONFIG GET`.
async fn check_redis_settings(pool: &Pool) -> Vec<Finding> {
    let mut findings = Vec::new();
    let policy = match config_get(pool, "maxmemory-policy").await {
        Ok(policy) => policy,
        Err(e) => {
            findings.push(Finding::warning(
                "redis",
                format!(
                    "cannot read the Redis settings (CONFIG GET refused: {e}), so \
                     maxmemory-policy and persistence were not checked"
                ),
                "check them by hand or in the provider's parameter group: maxmemory-policy must \
                 be noeviction, and RDB or AOF persistence should be on; or allow `config|get` \
                 to this ACL user",
            ));
            return findings;
        }
    };
    let maxmemory = config_get(pool, "maxmemory").await.ok();
    findings.push(eviction_finding(&policy, maxmemory.as_deref()));
    match (
        config_get(pool, "save").await,
        config_get(pool, "appendonly").await,
    ) {
        (Ok(save), Ok(appendonly)) => findings.push(persistence_finding(&save, &appendonly)),
        (Err(e), _) | (_, Err(e)) => findings.push(Finding::warning(
            "redis",
            format!("cannot read the persistence settings (CONFIG GET: {e})"),
            "make sure RDB snapshots or AOF are on, or sessions are lost when Redis restarts",
        )),
    }
    findings
}

/// One `CONFIG GET` value (RESP2 pairs or a RESP3 map; empty when Redis does not know the name).
async fn config_get(pool: &Pool, name: &str) -> Result<String, String> {
    let values: HashMap<String, String> = pool
        .next()
        .custom(fred::cmd!("CONFIG"), vec!["GET", name])
        .await
        .map_err(|e| e.details().to_string())?;
    Ok(values.get(name).cloned().unwrap_or_default())
}

/// Only `noeviction` keeps sessions: every other policy evicts keys with a TTL, and every
/// session has one.
pub fn eviction_finding(policy: &str, maxmemory: Option<&str>) -> Finding {
    let limit = match maxmemory {
        Some("0") => {
            " (maxmemory is 0 today, so nothing is evicted until a limit is set, \
                      as managed Redis always does)"
        }
        _ => "",
    };
    let fix = "set maxmemory-policy noeviction (CONFIG SET maxmemory-policy noeviction and in \
               redis.conf, or the provider's parameter group), and alert on used memory";
    match policy {
        "noeviction" => Finding::ok(
            "redis",
            "maxmemory-policy is noeviction: Redis never evicts a live session",
        ),
        p if p.starts_with("allkeys-") => Finding::warning(
            "redis",
            format!(
                "maxmemory-policy is {p}: when memory is full Redis evicts any key, live \
                 sessions included, and those users are logged out{limit}"
            ),
            fix,
        ),
        p if p.starts_with("volatile-") => Finding::warning(
            "redis",
            format!(
                "maxmemory-policy is {p}: when memory is full Redis evicts keys that have a TTL, \
                 and every session has one, so those users are logged out{limit}"
            ),
            fix,
        ),
        p => Finding::warning(
            "redis",
            format!(
                "maxmemory-policy is {p:?}, which unstick does not know: it may evict sessions"
            ),
            fix,
        ),
    }
}

/// Sessions survive a Redis restart only with RDB snapshots or the AOF.
pub fn persistence_finding(save: &str, appendonly: &str) -> Finding {
    let aof = appendonly.eq_ignore_ascii_case("yes");
    let rdb = !save.trim().is_empty();
    match (aof, rdb) {
        (false, false) => Finding::warning(
            "redis",
            "persistence is off (save is empty and appendonly is no): a Redis restart logs \
             every user out",
            "turn on appendonly yes (or RDB snapshots with save), or run a replica that takes \
             over",
        ),
        (true, _) => Finding::ok("redis", "persistence: append-only file is on"),
        (false, true) => Finding::ok(
            "redis",
            format!(
                "persistence: RDB snapshots (save {}); sessions created since the last \
                 snapshot are lost if Redis crashes",
                save.trim()
            ),
        ),
    }
}

/// The configured lifetimes against the lifetime the app promises with its cookie.
pub fn check_lifetimes(session: &SessionConfig) -> Vec<Finding> {
    let idle = session.idle_timeout;
    let absolute = session.absolute_lifetime;
    let Some(cookie) = session.app_cookie_lifetime else {
        return vec![Finding::warning(
            "session",
            format!(
                "session.app_cookie_lifetime is not set, so idle_timeout ({}) and \
                 absolute_lifetime ({}) cannot be checked against the app's cookie",
                human(idle),
                human(absolute)
            ),
            "set session.app_cookie_lifetime to the Max-Age of the app's session cookie \
             (e.g. \"14d\"; \"0s\" for a cookie that ends with the browser)",
        )];
    };
    if cookie.is_zero() {
        return vec![Finding::ok(
            "session",
            format!(
                "the app's cookie ends with the browser session; idle_timeout ({}) and \
                 absolute_lifetime ({}) apply",
                human(idle),
                human(absolute)
            ),
        )];
    }
    let mut findings = Vec::new();
    let promised = human(cookie);
    // Logins unstick sees with a Max-Age keep that lifetime; everything else (sessions copied
    // from an old store, cookies set before unstick was in front) gets the configured ones.
    let fix = |key: &str| {
        format!("raise session.{key} to at least {promised}, or shorten the app's cookie lifetime")
    };
    if idle < cookie {
        findings.push(Finding::warning(
            "session",
            format!(
                "session.idle_timeout ({}) is shorter than session.app_cookie_lifetime \
                 ({promised}): users whose cookie promises {promised} are logged out after {} \
                 without a request",
                human(idle),
                human(idle)
            ),
            fix("idle_timeout"),
        ));
    }
    if absolute < cookie {
        findings.push(Finding::warning(
            "session",
            format!(
                "session.absolute_lifetime ({}) is shorter than session.app_cookie_lifetime \
                 ({promised}): every session ends after {} even though its cookie lives on",
                human(absolute),
                human(absolute)
            ),
            fix("absolute_lifetime"),
        ));
    }
    if findings.is_empty() {
        findings.push(Finding::ok(
            "session",
            format!(
                "idle_timeout ({}) and absolute_lifetime ({}) cover app_cookie_lifetime \
                 ({promised})",
                human(idle),
                human(absolute)
            ),
        ));
    }
    findings
}

/// Names of the headers unstick injects towards the app, with the config key of each.
pub fn check_identity_headers(identity: &IdentityConfig) -> Vec<Finding> {
    let headers = &identity.headers;
    let mut named: Vec<(String, &str)> = vec![
        ("identity.user_header".into(), headers.user.as_str()),
        ("identity.roles_header".into(), headers.roles.as_str()),
        ("identity.email_header".into(), headers.email.as_str()),
    ];
    for (attribute, header) in &headers.attributes {
        named.push((format!("identity.attributes.{attribute}"), header.as_str()));
    }
    if let Some(signature) = &identity.signature {
        named.push((
            "identity.signature.header".into(),
            signature.header.as_str(),
        ));
    }
    let mut findings = Vec::new();
    for (key, name) in &named {
        let risks = header_name_risks(name);
        if !risks.is_empty() {
            findings.push(Finding::warning(
                "headers",
                format!("{key} = {name:?}: {}", risks.join("; ")),
                "rename it to a private name such as X-Auth-User (letters, digits and `-`), \
                 and make the app read the new name",
            ));
        }
    }
    if findings.is_empty() {
        let names: Vec<&str> = named.iter().map(|(_, name)| *name).collect();
        findings.push(Finding::ok(
            "headers",
            format!("identity headers use safe names: {}", names.join(", ")),
        ));
    }
    findings
}

/// Why a header name is a risky choice for an injected identity; empty when it is fine.
pub fn header_name_risks(name: &str) -> Vec<String> {
    let mut risks = Vec::new();
    if name.contains('_') {
        risks.push(
            "contains `_`: nginx drops such headers by default (underscores_in_headers off), \
             and CGI/WSGI/PHP give `_` and `-` the same variable name"
                .to_string(),
        );
    }
    let normalized = crate::config::values::normalize_header_name(name);
    if let Some(reason) = reserved_reason(&normalized) {
        risks.push(reason.to_string());
    } else if !normalized.contains('-') {
        risks.push(
            "no private prefix: a bare name like this can collide with headers that browsers, \
             proxies or libraries send (prefer X-Auth-... or your own prefix)"
                .to_string(),
        );
    }
    risks
}

/// Standard, hop-by-hop and security-relevant request headers that must never carry identity.
fn reserved_reason(name: &str) -> Option<&'static str> {
    const HOP_BY_HOP: &str =
        "a hop-by-hop header: proxies remove it, so the app would never see the identity";
    const SECURITY: &str = "a standard header that the app, its framework or another proxy \
                            already interprets (routing, authentication, client address, CSRF)";
    const FRAMING: &str = "describes the request message itself: overwriting it breaks the \
                           request";
    const STANDARD: &str = "a standard HTTP request header that clients send themselves";
    const EXACT: &[(&str, &str)] = &[
        ("host", SECURITY),
        ("cookie", SECURITY),
        ("set-cookie", SECURITY),
        ("authorization", SECURITY),
        ("forwarded", SECURITY),
        ("via", SECURITY),
        ("x-real-ip", SECURITY),
        ("x-client-ip", SECURITY),
        ("true-client-ip", SECURITY),
        ("client-ip", SECURITY),
        ("origin", SECURITY),
        ("referer", SECURITY),
        ("x-http-method-override", SECURITY),
        ("x-method-override", SECURITY),
        ("x-original-url", SECURITY),
        ("x-rewrite-url", SECURITY),
        ("x-requested-with", SECURITY),
        ("x-csrf-token", SECURITY),
        ("x-xsrf-token", SECURITY),
        ("expect", FRAMING),
        ("range", FRAMING),
        ("user-agent", STANDARD),
        ("from", STANDARD),
        ("date", STANDARD),
        ("cache-control", STANDARD),
        ("pragma", STANDARD),
        ("dnt", STANDARD),
    ];
    const PREFIXES: &[(&str, &str)] = &[
        ("x-forwarded-", SECURITY),
        ("content-", FRAMING),
        ("sec-", SECURITY),
        ("accept", STANDARD),
        ("if-", STANDARD),
    ];
    if crate::proxy::headers::is_hop_by_hop(name) {
        return Some(HOP_BY_HOP);
    }
    EXACT
        .iter()
        .find(|(reserved, _)| *reserved == name)
        .or_else(|| PREFIXES.iter().find(|(prefix, _)| name.starts_with(prefix)))
        .map(|(_, reason)| *reason)
}

fn human(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_noeviction_keeps_sessions() {
        assert_eq!(eviction_finding("noeviction", Some("0")).level, Level::Ok);
        for policy in [
            "allkeys-lru",
            "allkeys-lfu",
            "allkeys-random",
            "volatile-lru",
            "volatile-lfu",
            "volatile-random",
            "volatile-ttl",
            "something-new",
        ] {
            let finding = eviction_finding(policy, Some("100mb"));
            assert_eq!(finding.level, Level::Warning, "{policy}");
            assert!(finding.what.contains(policy), "{finding}");
        }
        assert!(eviction_finding("volatile-ttl", None)
            .what
            .contains("every session has one"));
    }

    #[test]
    fn persistence_needs_rdb_or_aof() {
        assert_eq!(persistence_finding("", "no").level, Level::Warning);
        assert_eq!(persistence_finding("", "yes").level, Level::Ok);
        assert_eq!(persistence_finding("3600 1 300 100", "no").level, Level::Ok);
    }

    #[test]
    fn header_names() {
        for safe in ["x-auth-user", "x-auth-roles", "acme-user", "remote-user"] {
            assert!(header_name_risks(safe).is_empty(), "{safe}");
        }
        for unsafe_name in [
            "x_user",
            "host",
            "cookie",
            "authorization",
            "connection",
            "x-forwarded-user",
            "forwarded",
            "content-type",
            "transfer-encoding",
            "user",
            "email",
        ] {
            assert!(!header_name_risks(unsafe_name).is_empty(), "{unsafe_name}");
        }
        // `X_User`: underscore only; the normalized name has a prefix.
        assert_eq!(header_name_risks("x_user").len(), 1);
        // An underscore and a reserved name: both reasons.
        assert_eq!(header_name_risks("x_forwarded_user").len(), 2);
    }

    #[test]
    fn every_header_the_proxy_strips_as_hop_by_hop_is_refused_for_identity() {
        for name in &crate::proxy::headers::HOP_BY_HOP {
            let risks = header_name_risks(name.as_str());
            assert!(
                risks.iter().any(|r| r.contains("hop-by-hop")),
                "{name}: {risks:?}"
            );
        }
    }

    fn session(idle: &str, absolute: &str, cookie: Option<&str>) -> SessionConfig {
        let parse = |d: &str| humantime::parse_duration(d).unwrap();
        SessionConfig {
            cookie_name: "sid".into(),
            id_format: crate::config::IdFormat::Plain,
            idle_timeout: parse(idle),
            absolute_lifetime: parse(absolute),
            max_sessions_per_user: 0,
            app_cookie_lifetime: cookie.map(parse),
            duplicate_cookies: Default::default(),
        }
    }

    #[test]
    fn lifetimes_must_cover_the_app_cookie() {
        let levels = |s: &SessionConfig| -> Vec<Level> {
            check_lifetimes(s).iter().map(|f| f.level).collect()
        };
        assert_eq!(levels(&session("30d", "30d", Some("30d"))), [Level::Ok]);
        assert_eq!(levels(&session("30m", "12h", Some("0s"))), [Level::Ok]);
        assert_eq!(levels(&session("30m", "12h", None)), [Level::Warning]);
        assert_eq!(
            levels(&session("30m", "12h", Some("30d"))),
            [Level::Warning, Level::Warning]
        );
        let idle_only = check_lifetimes(&session("1h", "60d", Some("30d")));
        assert_eq!(idle_only.len(), 1);
        assert!(idle_only[0].what.contains("session.idle_timeout (1h)"));
    }

    #[test]
    fn parse_errors_become_one_line() {
        let message =
            "cfg.toml: TOML parse error at line 9, column 1\n  |\n9 | idle_timout = \"30m\"\n  \
                       | ^^^^^^^^^^^\nunknown field `idle_timout`, expected one of `cookie`\n";
        assert_eq!(
            one_line(message),
            "cfg.toml: TOML parse error at line 9, column 1: unknown field `idle_timout`, \
             expected one of `cookie`"
        );
    }

    #[test]
    fn warnings_pass_unless_strict_and_errors_never_pass() {
        let mut report = Report::default();
        report.push(Finding::ok("config", "valid"));
        assert!(report.passed(false) && report.passed(true));
        assert!(report.summary(true).contains("no warnings, no errors"));
        report.push(Finding::warning("redis", "w", "f"));
        assert!(report.passed(false));
        assert!(!report.passed(true));
        assert!(report
            .summary(false)
            .starts_with("check passed with 1 warning(s)"));
        assert!(report
            .summary(true)
            .starts_with("check failed (--strict): 1 warning(s)"));
        assert_eq!(report.findings[1].to_string(), "warning  redis: w. Fix: f");
        report.push(Finding::error("redis", "e", "f"));
        assert!(!report.passed(false) && !report.passed(true));
        assert!(report.summary(false).contains("1 error(s), 1 warning(s)"));
    }

    #[test]
    fn a_config_error_fix_names_only_what_the_error_names() {
        let path = std::path::PathBuf::from("u.toml");
        let invalid = ConfigError::Invalid {
            path: path.clone(),
            line: 7,
            key: "redis.key_prefix".into(),
            problem: crate::config::Problem::NotPositive,
        };
        assert_eq!(
            config_fix(&invalid),
            "correct `redis.key_prefix` on line 7; nothing else was checked"
        );
        let io = ConfigError::Io {
            path: path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert!(config_fix(&io).starts_with("check the path"));
        let env = ConfigError::Parse {
            path,
            message: "line 3: environment variable SESSION_SECRET is not set".into(),
        };
        assert!(config_fix(&env).starts_with("set the variable"));
        for error in [io, env] {
            assert!(!config_fix(&error).contains("key named"));
        }
    }
}
