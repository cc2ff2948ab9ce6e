//! Value types shared by the raw config structs: strings with `${VAR}` interpolation and
//! human durations (`250ms`, `30m`, `7d`). Both fail inside deserialization, so the TOML
//! error that results names the key and the line.

use serde::{Deserialize, Deserializer};
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

#[cfg(test)]
mod tests {
    use super::interpolate;

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
