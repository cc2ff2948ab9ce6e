//! Value types shared by the raw config structs: strings with `${VAR}` interpolation and
//! human durations (`250ms`, `30m`, `7d`). Both fail inside deserialization, so the TOML
//! error that results names the key and the line. Also the normal forms that config values
//! and requests are compared in (header names, paths).

use serde::{Deserialize, Deserializer};
use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// A string value in which `${VAR}` and `${VAR:-default}` are replaced from the environment.
#[derive(Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        interpolate(&raw, |name| std::env::var(name).ok())
            .map(Text)
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Debug for Text {
    // Values may hold secrets taken from the environment.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Text(..)")
    }
}

/// Replaces `${VAR}` and `${VAR:-default}` in `raw`; `$$` stands for a literal `$`.
pub fn interpolate(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in {raw:?}"))?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("`${{{expr}}}` is not a valid variable reference"));
            }
            match (lookup(name), default) {
                (Some(value), _) => out.push_str(&value),
                (None, Some(default)) => out.push_str(default),
                (None, None) => {
                    return Err(format!(
                        "environment variable {name} is not set (write `${{{name}:-default}}` for a default)"
                    ))
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A duration written the human way: `250ms`, `2s`, `30m`, `12h`, `7d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        humantime::parse_duration(raw.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "{raw:?} is not a duration ({e}); write e.g. \"250ms\", \"30m\", \"7d\""
                ))
            })
    }
}

/// Lower case with `_` read as `-`: many app servers (CGI-style `HTTP_X_AUTH_USER`) cannot
/// tell `X_Auth_User` from `X-Auth-User`, so neither may pass.
pub fn normalize_header_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// A request path as app servers route it, for matching `logout_paths` and `login_paths`:
/// path parameters cut (`/logout;jsessionid=...`: Tomcat and Jetty ignore them), `%XX` of
/// unreserved characters decoded (`/%6Cogout`), `.` and `..` segments resolved, empty
/// segments (`//`, a trailing `/`) dropped. Servers differ in which of these they do; matching
/// more spellings can only end a session the app kept, never keep one the app ended.
pub fn routed_path(path: &str) -> Cow<'_, str> {
    let plain = !path.contains([';', '%'])
        && !path.contains("//")
        && !path.contains("/.")
        && (path.len() <= 1 || !path.ends_with('/'));
    if plain {
        return Cow::Borrowed(path);
    }
    let mut segments: Vec<String> = Vec::new();
    for segment in path.split('/') {
        let segment = decode_unreserved(segment.split(';').next().unwrap_or_default());
        match segment.as_str() {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    Cow::Owned(format!("/{}", segments.join("/")))
}

/// `%XX` decoded where it stands for a letter, a digit, `-`, `.`, `_` or `~` (RFC 3986
/// section 2.3: the same either way); other escapes (`%2F`) are kept as they are.
fn decode_unreserved(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    // Only ASCII bytes were put in place of escapes: UTF-8 stays UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::{interpolate, routed_path};

    #[test]
    fn paths_are_compared_as_app_servers_route_them() {
        for (path, routed) in [
            ("/logout", "/logout"),
            ("/", "/"),
            ("/logout;jsessionid=A1B2", "/logout"),
            ("/a;v=1/logout", "/a/logout"),
            ("//logout", "/logout"),
            ("/logout/", "/logout"),
            ("/%6Cogout", "/logout"),
            ("/%6cogout", "/logout"),
            ("/a/../logout", "/logout"),
            ("/./logout", "/logout"),
            ("/../logout", "/logout"),
            ("/a%2Fb", "/a%2Fb"),
            ("/%zz", "/%zz"),
            ("/%", "/%"),
            ("/caf\u{e9}%41", "/caf\u{e9}A"),
        ] {
            assert_eq!(routed_path(path), routed, "{path}");
        }
        assert!(matches!(
            routed_path("/logout"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    fn env(name: &str) -> Option<String> {
        (name == "REDIS_URL").then(|| "redis://r:6379".to_string())
    }

    #[test]
    fn replaces_variables_and_defaults() {
        assert_eq!(
            interpolate("${REDIS_URL}/0", env).unwrap(),
            "redis://r:6379/0"
        );
        assert_eq!(interpolate("${NOPE:-memory://}", env).unwrap(), "memory://");
        assert_eq!(interpolate("a$$b $x", env).unwrap(), "a$b $x");
    }

    #[test]
    fn missing_variable_is_named() {
        let err = interpolate("${SESSION_SECRET}", env).unwrap_err();
        assert!(err.contains("SESSION_SECRET"), "{err}");
        assert!(interpolate("${unclosed", env).is_err());
        assert!(interpolate("${bad name}", env).is_err());
    }
}
