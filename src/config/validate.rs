//! Turns a [`RawConfig`] into a [`Config`], checking what TOML types cannot: references between
//! sections, header names, URLs, lifetimes. Each error carries the key and its line. One
//! submodule per section; routes, which refer to the other sections, are checked here.

mod identity;
mod listener;
mod old_stores;
mod redis;
mod session;
mod upstreams;
mod whoami;

use super::defaults;
use super::error::ConfigError;
use super::error::Problem;
use super::raw::*;
use super::validated::*;
use crate::config::values::{routed_path, Text};
use http::HeaderName;
use std::ops::Range;
use std::path::Path;
use toml::Spanned;

/// Parses and validates config text; `path` is only used in messages.
pub fn parse_config(source: &str, path: &Path) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(source).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let validator = Validator { source, path };
    let old_stores =
        read_old_stores(source).map_err(|e| validator.err(e.span, e.key, e.problem))?;
    validator.config(raw, old_stores)
}

struct Validator<'a> {
    source: &'a str,
    path: &'a Path,
}

impl Validator<'_> {
    fn err(&self, span: Range<usize>, key: impl Into<String>, problem: Problem) -> ConfigError {
        let line = self.source[..span.start.min(self.source.len())]
            .matches('\n')
            .count()
            + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            key: key.into(),
            problem,
        }
    }

    fn header_name(&self, value: &Spanned<Text>, key: &str) -> Result<HeaderName, ConfigError> {
        HeaderName::from_bytes(value.get_ref().0.as_bytes()).map_err(|_| {
            self.err(
                value.span(),
                key,
                Problem::BadHeaderName(value.get_ref().0.clone()),
            )
        })
    }

    fn config(&self, raw: RawConfig, old_stores: Vec<RawOldStore>) -> Result<Config, ConfigError> {
        let listener = self.listener(raw.listener)?;
        let admin = self.admin(raw.admin)?;
        let store = self.store(raw.redis)?;
        let session = self.session(raw.session)?;
        let identity = self.identity(raw.identity)?;
        let upstreams = self.upstreams(raw.upstreams)?;
        if raw.routes.get_ref().is_empty() {
            return Err(self.err(raw.routes.span(), "routes", Problem::NoRoutes));
        }
        let old_stores = self.old_stores(old_stores)?;
        let mut routes = Vec::new();
        for route in raw.routes.into_inner() {
            routes.push(self.route(route, &upstreams, &old_stores)?);
        }
        use sha2::Digest;
        Ok(Config {
            source_hash: crate::hex_string(&sha2::Sha256::digest(self.source.as_bytes())[..8]),
            listener,
            store,
            session,
            identity,
            upstreams,
            routes,
            old_stores,
            admin,
        })
    }

    /// A list of request paths, each starting with `/`.
    fn paths(&self, raw: Vec<Spanned<Text>>, key: &str) -> Result<Vec<String>, ConfigError> {
        let mut paths = Vec::new();
        for path in raw {
            if !path.get_ref().0.starts_with('/') {
                return Err(self.err(path.span(), key, Problem::PathWithoutLeadingSlash));
            }
            // Compared with a request's path in the same form.
            paths.push(routed_path(&path.into_inner().0).into_owned());
        }
        Ok(paths)
    }

    /// The route's upstream, which must be one of `upstreams`.
    fn route_upstream(
        &self,
        raw: &Spanned<String>,
        upstreams: &[UpstreamConfig],
    ) -> Result<String, ConfigError> {
        let upstream = raw.get_ref().clone();
        if !upstreams.iter().any(|u| u.name == upstream) {
            let known = upstreams.iter().map(|u| u.name.clone()).collect();
            return Err(self.err(
                raw.span(),
                "routes.upstream",
                Problem::UnknownUpstream {
                    name: upstream,
                    known,
                },
            ));
        }
        Ok(upstream)
    }

    /// The route's old stores, each one of `old_stores`, in the order given.
    fn route_old_stores(
        &self,
        raw: &[Spanned<String>],
        old_stores: &[OldStoreConfig],
    ) -> Result<Vec<String>, ConfigError> {
        let mut stores = Vec::new();
        for name in raw {
            if !old_stores.iter().any(|s| s.name == *name.get_ref()) {
                return Err(self.err(
                    name.span(),
                    "routes.old_stores",
                    Problem::UnknownOldStore(name.get_ref().clone()),
                ));
            }
            stores.push(name.get_ref().clone());
        }
        Ok(stores)
    }

    fn route(
        &self,
        raw: RawRoute,
        upstreams: &[UpstreamConfig],
        old_stores: &[OldStoreConfig],
    ) -> Result<RouteConfig, ConfigError> {
        let upstream = self.route_upstream(&raw.upstream, upstreams)?;
        let path_prefix = match &raw.path_prefix {
            Some(p) if !p.get_ref().0.starts_with('/') => {
                return Err(self.err(p.span(), "routes.path_prefix", Problem::NoLeadingSlash))
            }
            Some(p) => p.get_ref().0.clone(),
            None => defaults::PATH_PREFIX.to_string(),
        };
        let logout_paths = self.paths(raw.logout_paths, "routes.logout_paths")?;
        let login_paths = self.paths(raw.login_paths, "routes.login_paths")?;
        let stores = self.route_old_stores(&raw.old_stores, old_stores)?;
        let mode = raw.mode;
        if mode.needs_old_stores() && stores.is_empty() {
            let span = raw.upstream.span();
            return Err(self.err(span, "routes.old_stores", Problem::OverlapWithoutOldStores));
        }
        if raw.warm && stores.is_empty() {
            let span = raw.upstream.span();
            return Err(self.err(span, "routes.warm", Problem::WarmWithoutOldStores));
        }
        Ok(RouteConfig {
            host: raw.host.map(|h| h.0.to_ascii_lowercase()),
            path_prefix,
            upstream,
            mode,
            logout_paths,
            login_paths,
            old_stores: stores,
            warm: raw.warm,
            unexplained_cookie_change: match raw.unexplained_cookie_change {
                None | Some(RawUnexplainedCookieChange::KeepSession) => {
                    UnexplainedCookieChange::KeepSession
                }
                Some(RawUnexplainedCookieChange::EndSession) => UnexplainedCookieChange::EndSession,
            },
        })
    }
}

fn pointer(value: Option<&Text>, default: &str) -> String {
    value.map_or_else(|| default.to_string(), |t| t.0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MINIMAL: &str = r#"
[listener]
address = "127.0.0.1:8080"

[redis]
url = "redis://127.0.0.1:6379"

[session]
cookie = "connect.sid"
id_format = "plain"
idle_timeout = "30m"
absolute_lifetime = "12h"

[[upstreams]]
name = "app"
instances = [{ name = "a", url = "http://127.0.0.1:3001" }]

[[routes]]
upstream = "app"
mode = "redis"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        parse_config(text, Path::new("unstick.toml"))
    }

    /// The line `needle` is on in `text`.
    fn line_of(text: &str, needle: &str) -> usize {
        let at = text.find(needle).unwrap();
        text[..at].matches('\n').count() + 1
    }

    fn html_capture(lines: &str) -> String {
        format!("{MINIMAL}\n[identity.capture]\nsource = \"whoami\"\nwhoami_path = \"/account\"\n{lines}\n")
    }

    #[test]
    fn whoami_html_picks_are_compiled() {
        let text = html_capture(
            "whoami_format = \"html\"\nuser_selector = \"#user\"\nroles_pattern = 'Roles: ([\\w,]+)'",
        );
        let config = parse(&text).unwrap();
        let CaptureSource::Whoami {
            format: WhoamiFormat::Html(html),
            ..
        } = &config.identity.capture
        else {
            panic!("not html: {:?}", config.identity.capture);
        };
        assert!(matches!(html.user, HtmlPick::Selector(_)));
        assert!(matches!(html.roles, Some(HtmlPick::Pattern(_))));
        assert_eq!(html.email, None);
        let json = parse(&html_capture("")).unwrap();
        assert!(matches!(
            json.identity.capture,
            CaptureSource::Whoami {
                format: WhoamiFormat::Json,
                ..
            }
        ));
    }

    #[test]
    fn whoami_html_errors_name_the_key_and_line() {
        let cases = [
            (
                "whoami_format = \"html\"\nuser_selector = \"#user\"\nuser_pattern = 'as (\\w+)'",
                "user_pattern = ",
                "identity.capture.user_pattern",
                "not both",
            ),
            (
                "whoami_format = \"html\"\nuser_selector = \"div[\"",
                "user_selector = ",
                "identity.capture.user_selector",
                "not a CSS selector",
            ),
            (
                "whoami_format = \"html\"\nuser_pattern = 'Logged in as \\w+'",
                "user_pattern = ",
                "identity.capture.user_pattern",
                "capture group",
            ),
            (
                "whoami_format = \"html\"\nemail_pattern = '(unclosed'\nuser_selector = \"#u\"",
                "email_pattern = ",
                "identity.capture.email_pattern",
                "not a regular expression",
            ),
            (
                "whoami_format = \"html\"\nroles_selector = \"li\"",
                "whoami_format = ",
                "identity.capture.whoami_format",
                "needs `user_selector` or `user_pattern`",
            ),
            (
                "user_selector = \"#user\"",
                "user_selector = ",
                "identity.capture.user_selector",
                "applies only with whoami_format = \"html\"",
            ),
            (
                "whoami_format = \"xml\"",
                "whoami_format = ",
                "identity.capture.whoami_format",
                "expected \"json\" or \"html\"",
            ),
        ];
        for (lines, at, key, problem) in cases {
            let text = html_capture(lines);
            let message = parse(&text).unwrap_err().to_string();
            let line = line_of(&text, at);
            assert!(
                message.starts_with(&format!("unstick.toml:{line}: `{key}`: ")),
                "{lines}: {message}"
            );
            assert!(message.contains(problem), "{lines}: {message}");
        }
    }

    #[test]
    fn whoami_old_store_reads_html_and_names_its_errors() {
        let store = |lines: &str| {
            format!("{MINIMAL}\n[[old_stores]]\nname = \"app\"\nkind = \"whoami\"\npath = \"/account\"\n{lines}\n")
        };
        let config = parse(&store(
            "format = \"html\"\nuser_pattern = 'Logged in as (\\w+)'",
        ))
        .unwrap();
        assert!(matches!(
            &config.old_stores[0].kind,
            OldStoreKind::Whoami { format: WhoamiFormat::Html(html), .. }
                if matches!(html.user, HtmlPick::Pattern(_))
        ));
        let text = store("format = \"html\"\nuser_pattern = 'Logged in as \\w+'");
        let message = parse(&text).unwrap_err().to_string();
        let line = line_of(&text, "user_pattern");
        assert!(
            message.starts_with(&format!(
                "unstick.toml:{line}: `old_stores.app.user_pattern`: "
            )),
            "{message}"
        );
        assert!(message.contains("capture group"), "{message}");
        let text = store("user_selector = \"#user\"");
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.contains("`old_stores.app.user_selector`"),
            "{message}"
        );
        assert!(message.contains("format = \"html\""), "{message}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.store.command_timeout, Duration::from_millis(250));
        assert_eq!(config.identity.headers.user.as_str(), "x-auth-user");
        assert_eq!(config.routes[0].path_prefix, "/");
        assert_eq!(config.upstreams[0].instances[0].authority, "127.0.0.1:3001");
        assert_eq!(config.listener.header_timeout, Duration::from_secs(10));
        assert_eq!(config.listener.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.listener.max_connections, None);
    }

    #[test]
    fn connection_limits_are_read_and_checked() {
        let text = MINIMAL.replace(
            "address = \"127.0.0.1:8080\"",
            "address = \"127.0.0.1:8080\"\nheader_timeout = \"2s\"\nidle_timeout = \"5s\"\nmax_connections = 50",
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.listener.header_timeout, Duration::from_secs(2));
        assert_eq!(config.listener.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.listener.max_connections, Some(50));
        let message = parse(&text.replace("max_connections = 50", "max_connections = 0"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("unstick.toml:6: `listener.max_connections`"),
            "{message}"
        );
        let message = parse(&text.replace("\"2s\"", "\"0s\""))
            .unwrap_err()
            .to_string();
        assert!(message.contains("listener.header_timeout"), "{message}");
    }

    #[test]
    fn a_session_longer_than_browsers_keep_cookies_is_refused() {
        let text = MINIMAL.replace(
            "absolute_lifetime = \"12h\"",
            "absolute_lifetime = \"500days\"",
        );
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("unstick.toml:12: `session.absolute_lifetime`")
                && message.contains("at most 400 days"),
            "{message}"
        );
        assert!(parse(&text.replace("500days", "400days")).is_ok());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = MINIMAL.replace("idle_timeout", "idle_timout");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("idle_timout"), "{message}");
        assert!(message.contains("line 11"), "{message}");
    }

    #[test]
    fn bad_reference_names_key_and_line() {
        let text = MINIMAL.replace("upstream = \"app\"", "upstream = \"ap\"");
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.starts_with("unstick.toml:19: `routes.upstream`"),
            "{message}"
        );
    }

    #[test]
    fn bad_duration_is_named() {
        let text = MINIMAL.replace("\"30m\"", "\"thirty minutes\"");
        let message = parse(&text).unwrap_err().to_string();
        assert!(
            message.contains("idle_timeout") && message.contains("line 11"),
            "{message}"
        );
    }

    fn with_redis(lines: &str) -> String {
        MINIMAL.replace("url = \"redis://127.0.0.1:6379\"", lines)
    }

    fn refused(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn sentinel_service() {
        let config = parse(&with_redis(
            "sentinels = [\"10.0.0.1:26379\", \"[::1]:26380\"]\nservice_name = \"mymaster\"\n\
             sentinel_password = \"s\"\npassword = \"p\"\ntls = true\nwait_replicas = 1",
        ))
        .unwrap();
        let StoreUrl::Sentinel(target) = &config.store.url else {
            panic!("{:?}", config.store.url)
        };
        assert_eq!(target.service_name, "mymaster");
        assert_eq!(target.sentinels[1].to_string(), "[::1]:26380");
        assert_eq!(target.sentinel_password.as_deref(), Some("s"));
        assert_eq!(target.auth.password.as_deref(), Some("p"));
        assert!(target.auth.tls);
        assert_eq!(config.store.wait_replicas, 1);
        assert_eq!(config.store.wait_timeout, Duration::from_millis(100));
        let shown = config.store.url.redacted();
        assert_eq!(
            shown,
            "sentinel service mymaster via 10.0.0.1:26379, [::1]:26380"
        );
    }

    #[test]
    fn cluster_nodes() {
        let config = parse(&with_redis("cluster_nodes = [\"10.0.0.1:6379\"]")).unwrap();
        assert!(matches!(&config.store.url, StoreUrl::Cluster(t) if t.nodes.len() == 1));
    }

    #[test]
    fn redis_target_errors_name_key_and_line() {
        // Line 6 is the url line of MINIMAL, replaced by the first line below.
        let cases = [
            (
                "sentinels = [\"10.0.0.1:26379\"]",
                "unstick.toml:5: `redis.service_name`",
            ),
            (
                "sentinels = [\"10.0.0.1\"]\nservice_name = \"m\"",
                "unstick.toml:6: `redis.sentinels`: \"10.0.0.1\": no port",
            ),
            (
                "cluster_nodes = [\"a:1\", \"redis://b:2\"]",
                "unstick.toml:6: `redis.cluster_nodes`: \"redis://b:2\": a bare address",
            ),
            (
                "cluster_nodes = []",
                "unstick.toml:6: `redis.cluster_nodes`: list at least one",
            ),
            (
                "cluster_nodes = [\"a:1\", \"a:1\"]",
                "unstick.toml:6: `redis.cluster_nodes`: a:1 is listed twice",
            ),
            (
                "url = \"redis://r:6379\"\ncluster_nodes = [\"a:1\"]",
                "unstick.toml:5: `redis`: set exactly one of",
            ),
            (
                "key_prefix = \"x:\"",
                "unstick.toml:5: `redis`: set exactly one of",
            ),
            (
                "cluster_nodes = [\"a:1\"]\nservice_name = \"m\"",
                "unstick.toml:7: `redis.service_name`: applies only with redis.sentinels",
            ),
            (
                "url = \"redis://r:6379\"\npassword = \"p\"",
                "unstick.toml:7: `redis.password`: with redis.url the credentials go in the URL",
            ),
            (
                "url = \"redis://r:6379\"\ntls = true",
                "unstick.toml:7: `redis.tls`: with redis.url, TLS is chosen by the scheme",
            ),
            (
                "url = \"redis-sentinel://r:26379\"",
                "for Sentinel or Cluster use the keys",
            ),
            (
                "url = \"redis://r:6379\"\nwait_timeout = \"1s\"",
                "unstick.toml:7: `redis.wait_timeout`: applies only with redis.wait_replicas",
            ),
            (
                "url = \"redis://r:6379\"\nwait_replicas = 1\nwait_timeout = \"0s\"",
                "unstick.toml:8: `redis.wait_timeout`: must be between",
            ),
            (
                "url = \"memory://\"\nwait_replicas = 1",
                "unstick.toml:7: `redis.wait_replicas`: memory:// has no replicas",
            ),
        ];
        for (lines, expected) in cases {
            let message = refused(&with_redis(lines));
            assert!(
                message.starts_with(expected) || message.contains(expected),
                "{lines:?}: {message}"
            );
        }
    }

    #[test]
    fn identity_header_twice_names_key_and_line() {
        let identity =
            |lines: &str| MINIMAL.replace("[[upstreams]]", &format!("{lines}\n\n[[upstreams]]"));
        let message = refused(&identity("[identity]\nroles_header = \"X-Auth-User\""));
        assert!(
            message.starts_with(
                "unstick.toml:15: `identity.roles_header`: identity header x-auth-user is configured twice"
            ),
            "{message}"
        );
        let message = refused(&identity(
            "[identity.attributes]\ntenant = { header = \"x-auth-email\", pointer = \"/t\" }",
        ));
        assert!(
            message.starts_with("unstick.toml:15: `identity.attributes.tenant`: identity header"),
            "{message}"
        );
    }

    #[test]
    fn no_routes_names_key_and_line() {
        let text = format!(
            "routes = []\n{}",
            MINIMAL.replace("[[routes]]\nupstream = \"app\"\nmode = \"redis\"\n", "")
        );
        let message = refused(&text);
        assert!(
            message.starts_with("unstick.toml:1: `routes`: no [[routes]]: add at least one route"),
            "{message}"
        );
    }

    /// MINIMAL with one `[[old_stores]]` table; its first line is line 23.
    fn with_old_store(lines: &str) -> String {
        format!("{MINIMAL}\n[[old_stores]]\n{lines}\n")
    }

    #[test]
    fn old_store_key_of_another_kind_names_key_and_line() {
        let message = refused(&with_old_store(
            "name = \"old\"\nkind = \"redis\"\nurl = \"redis://r:6379\"\nkey = \"s:{id}\"\ndir = \"/tmp\"",
        ));
        assert_eq!(
            message,
            "unstick.toml:27: `old_stores.old.dir`: a key of kind = \"php-files\", not of kind = \"redis\""
        );
        // Before `kind`, too, and in an inline table.
        let message = refused(&with_old_store(
            "dir = \"/tmp\"\nname = \"old\"\nkind = \"whoami\"",
        ));
        assert!(
            message.starts_with("unstick.toml:23: `old_stores.old.dir`"),
            "{message}"
        );
        let text =
            format!("old_stores = [{{ name = \"w\", kind = \"whoami\", url = \"x\" }}]\n{MINIMAL}");
        assert_eq!(
            refused(&text),
            "unstick.toml:1: `old_stores.w.url`: a key of kind = \"redis\" or \"postgres\", \
             not of kind = \"whoami\""
        );
    }

    #[test]
    fn old_store_unreadable_values_name_key_and_line() {
        let cases = [
            ("name = \"w\"\nkind = \"whoami\"\nfoo = 1", "unstick.toml:25: `old_stores.w.foo`: unknown field `foo` for kind = \"whoami\", \
                 expected one of `name`, `kind`, `timeout`, `user`, `roles`, `email`, `attributes`, \
                 `path`, `fanout_concurrency`, `miss_ttl`, `format`, `user_selector`, `user_pattern`, \
                 `roles_selector`, `roles_pattern`, `email_selector`, `email_pattern`"),
            ("name = \"w\"\nkind = \"mongo\"", "unstick.toml:24: `old_stores.w.kind`: unknown variant `mongo`"),
            ("name = \"w\"", "unstick.toml:22: `old_stores.w`: missing field `kind`"),
            ("name = \"w\"\nkind = \"whoami\"\nmiss_ttl = \"soon\"", "unstick.toml:25: `old_stores.w.miss_ttl`: \"soon\" is not a duration"),
            ("name = \"w\"\nkind = \"whoami\"\npath = \"${UNSTICK_TEST_UNSET}\"", "unstick.toml:25: `old_stores.w.path`: environment variable UNSTICK_TEST_UNSET is not set"),
            ("name = \"r\"\nkind = \"redis\"\nkey = \"s:{id}\"", "unstick.toml:23: `old_stores.r.url`: required for this kind"),
            ("name = \"r\"\nkind = \"redis\"\nurl = \"redis://r\"\nkey = \"s\"", "unstick.toml:26: `old_stores.r.key`: must contain {id}"),
            ("name = \"f\"\nkind = \"php-files\"\ndir = \"/d\"\nfile_prefix = \"a/b\"", "unstick.toml:26: `old_stores.f.file_prefix`: a file name prefix cannot contain /"),
        ];
        for (lines, expected) in cases {
            let message = refused(&with_old_store(lines));
            assert!(message.starts_with(expected), "{lines:?}: {message}");
        }
    }

    #[test]
    fn old_stores_of_each_kind_are_read() {
        let text = with_old_store(
            "name = \"w\"\nkind = \"whoami\"\nfanout_concurrency = 500\n\n[[old_stores]]\n\
             name = \"d\"\nkind = \"postgres\"\nformat = \"django\"\nurl = \"postgres://db\"\n\
             secret_keys = [\"k\"]\ntimeout = \"1s\"\n[old_stores.attributes]\ntenant = \"/t\"",
        );
        let config = parse(&text).unwrap();
        let [whoami, django] = &config.old_stores[..] else {
            panic!("{:?}", config.old_stores)
        };
        assert!(matches!(
            whoami.kind,
            OldStoreKind::Whoami { fanout_concurrency: 64, ref path, .. } if path == "/whoami"
        ));
        assert_eq!(whoami.timeout, defaults::OLD_STORE_TIMEOUT);
        let OldStoreKind::Postgres {
            format,
            table,
            secret_keys,
            ..
        } = &django.kind
        else {
            panic!("{:?}", django.kind)
        };
        assert_eq!(*format, PostgresFormat::Django);
        assert_eq!((table.as_str(), secret_keys.len()), ("django_session", 1));
        assert_eq!(django.mapping.user, "/_auth_user_id");
        assert_eq!(django.mapping.attributes["tenant"], "/t");
        assert_eq!(django.timeout, Duration::from_secs(1));
    }

    #[test]
    fn postgres_custom_queries() {
        let custom =
            "name = \"pg\"\nkind = \"postgres\"\nurl = \"postgres://db\"\nformat = \"custom\"\n";
        let lookup = "lookup_query = \"SELECT doc::text, NULL::float8 FROM s WHERE id = $1\"";
        let config = parse(&with_old_store(&format!(
            "{custom}{lookup}\ndelete_query = \"DELETE FROM s WHERE id = $1\""
        )))
        .unwrap();
        let OldStoreKind::Postgres { format, .. } = &config.old_stores[0].kind else {
            panic!("{:?}", config.old_stores[0].kind)
        };
        assert_eq!(
            *format,
            PostgresFormat::Custom {
                lookup: "SELECT doc::text, NULL::float8 FROM s WHERE id = $1".into(),
                delete: Some("DELETE FROM s WHERE id = $1".into()),
            }
        );
        assert_eq!(config.old_stores[0].mapping.user, "/user");
        let cases = [
            (custom.to_string(), "unstick.toml:23: `old_stores.pg.lookup_query`: required for this kind"),
            (format!("{custom}lookup_query = \"SELECT 1\""), "unstick.toml:27: `old_stores.pg.lookup_query`: must take the session id as $1"),
            (format!("{custom}{lookup}\ndelete_query = \"DELETE FROM s\""), "unstick.toml:28: `old_stores.pg.delete_query`: must take the session id as $1"),
            (format!("{custom}{lookup}\ntable = \"s\""), "unstick.toml:28: `old_stores.pg.table`: applies only with format = \"connect-pg-simple\" or \"django\""),
            (format!("{custom}{lookup}\nsecret_keys = [\"k\"]"), "unstick.toml:28: `old_stores.pg.secret_keys`: applies only with format = \"django\""),
            (custom.replace("custom", "connect-pg-simple") + lookup, "unstick.toml:27: `old_stores.pg.lookup_query`: applies only with format = \"custom\""),
            (custom.replace("custom", "mysql"), "unstick.toml:26: `old_stores.pg.format`: \"mysql\": expected \"connect-pg-simple\", \"django\" or \"custom\""),
        ];
        for (lines, expected) in cases {
            let message = refused(&with_old_store(&lines));
            assert!(message.starts_with(expected), "{lines:?}: {message}");
        }
    }

    #[test]
    fn express_signed_needs_secrets() {
        let text = MINIMAL.replace("\"plain\"", "\"express-signed\"");
        let message = parse(&text).unwrap_err().to_string();
        assert!(message.contains("session.secrets"), "{message}");
    }
}
