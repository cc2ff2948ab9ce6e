//! `[[old_stores]]` as written: the keys every store has, and one struct per `kind` that
//! refuses the keys of other kinds, each with the line it was written on.
//!
//! Not `#[serde(tag = "kind")]`: serde buffers an internally tagged table before it picks the
//! variant, which loses toml's spans. `Spanned` fields then fail to deserialize, and an unknown
//! key is reported at the `[[old_stores]]` header instead of its own line. So each table is
//! read again from a span-keeping `toml_edit` document: the common keys (with `kind`) first,
//! then the rest into the struct of that kind.

use super::super::error::Problem;
use super::super::values::{HumanDuration, Text};
use serde::de::{self, IntoDeserializer};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;
use toml_edit::{InlineTable, Item, Value};

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RawOldStoreKind {
    Whoami,
    Redis,
    Postgres,
    PhpFiles,
}

impl RawOldStoreKind {
    const ALL: [RawOldStoreKind; 4] = [
        RawOldStoreKind::Whoami,
        RawOldStoreKind::Redis,
        RawOldStoreKind::Postgres,
        RawOldStoreKind::PhpFiles,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RawOldStoreKind::Whoami => "whoami",
            RawOldStoreKind::Redis => "redis",
            RawOldStoreKind::Postgres => "postgres",
            RawOldStoreKind::PhpFiles => "php-files",
        }
    }

    /// The keys of this kind beyond the common ones.
    fn keys(self) -> &'static [&'static str] {
        match self {
            RawOldStoreKind::Whoami => struct_keys::<RawWhoamiStore>(),
            RawOldStoreKind::Redis => struct_keys::<RawRedisStore>(),
            RawOldStoreKind::Postgres => struct_keys::<RawPostgresStore>(),
            RawOldStoreKind::PhpFiles => struct_keys::<RawPhpFilesStore>(),
        }
    }
}

/// One old store: the keys of every kind, and those of its kind.
#[derive(Debug)]
pub struct RawOldStore {
    pub name: Spanned<String>,
    pub timeout: Option<HumanDuration>,
    /// Identity mapping: JSON pointers into the stored session.
    pub user: Option<Text>,
    pub roles: Option<Text>,
    pub email: Option<Text>,
    pub attributes: BTreeMap<String, Text>,
    pub kind: RawOldStoreKeys,
}

/// The keys every old store has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommon {
    name: Spanned<String>,
    #[serde(rename = "kind")]
    _kind: RawOldStoreKind,
    timeout: Option<HumanDuration>,
    user: Option<Text>,
    roles: Option<Text>,
    email: Option<Text>,
    #[serde(default)]
    attributes: BTreeMap<String, Text>,
}

/// Just the kind, read before anything else.
#[derive(Deserialize)]
struct RawKindOnly {
    kind: RawOldStoreKind,
}

#[derive(Debug)]
pub enum RawOldStoreKeys {
    Whoami(RawWhoamiStore),
    Redis(RawRedisStore),
    Postgres(RawPostgresStore),
    PhpFiles(RawPhpFilesStore),
}

/// The app's own endpoint on the instance that holds the session.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWhoamiStore {
    pub path: Option<Text>,
    pub fanout_concurrency: Option<usize>,
    pub miss_ttl: Option<HumanDuration>,
    /// "json" (read with `user`, `roles`, `email`) or "html" (with the keys below).
    pub format: Option<Spanned<String>>,
    /// With the "html" format: a CSS selector or a pattern (with a capture group) per field.
    pub user_selector: Option<Spanned<String>>,
    pub user_pattern: Option<Spanned<String>>,
    pub roles_selector: Option<Spanned<String>>,
    pub roles_pattern: Option<Spanned<String>>,
    pub email_selector: Option<Spanned<String>>,
    pub email_pattern: Option<Spanned<String>>,
}

impl RawWhoamiStore {
    /// The selector and pattern keys of the "html" format, per field.
    pub fn html_picks(&self) -> super::RawHtmlPicks<'_> {
        [
            ("user", &self.user_selector, &self.user_pattern),
            ("roles", &self.roles_selector, &self.roles_pattern),
            ("email", &self.email_selector, &self.email_pattern),
        ]
    }
}

/// Another Redis with the app's own layout (connect-redis, phpredis).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedisStore {
    pub url: Option<Spanned<Text>>,
    pub key: Option<Spanned<Text>>,
    pub format: Option<Spanned<String>>,
}

/// The app's PostgreSQL: a known table layout, or the operator's own queries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgresStore {
    pub url: Option<Spanned<Text>>,
    pub format: Option<Spanned<String>>,
    pub table: Option<Spanned<Text>>,
    pub secret_keys: Option<Spanned<Vec<Text>>>,
    /// `format = "custom"`: the session id is `$1`; one row of (JSON text, seconds left).
    pub lookup_query: Option<Spanned<Text>>,
    /// `format = "custom"`: deletes the session `$1` (optional: read-only without it).
    pub delete_query: Option<Spanned<Text>>,
}

/// PHP's files session handler, or Laravel's file driver.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPhpFilesStore {
    pub dir: Option<Spanned<Text>>,
    pub file_prefix: Option<Spanned<Text>>,
    pub gc_maxlifetime: Option<HumanDuration>,
}

/// Why one old store could not be read: the span of the offending key (or its table).
#[derive(Debug)]
pub struct OldStoreReadError {
    pub span: Range<usize>,
    pub key: String,
    pub problem: Problem,
}

/// Reads every `[[old_stores]]` table of `source` (already parsed once, so its syntax is valid).
pub fn read_old_stores(source: &str) -> Result<Vec<RawOldStore>, OldStoreReadError> {
    let document = toml_edit::ImDocument::parse(source).map_err(|e| OldStoreReadError {
        span: e.span().unwrap_or_default(),
        key: "old_stores".into(),
        problem: Problem::Unreadable(e.message().to_string()),
    })?;
    let Some(item) = document.get("old_stores") else {
        return Ok(Vec::new());
    };
    let whole = item.span().unwrap_or_default();
    let tables: Vec<(InlineTable, Range<usize>)> = match item {
        Item::ArrayOfTables(tables) => tables
            .iter()
            .map(|t| {
                let span = t.span().unwrap_or_else(|| whole.clone());
                (t.clone().into_inline_table(), span)
            })
            .collect(),
        Item::Value(Value::Array(values)) => values
            .iter()
            .filter_map(|v| {
                let span = v.span().unwrap_or_else(|| whole.clone());
                v.as_inline_table().map(|t| (t.clone(), span))
            })
            .collect(),
        _ => Vec::new(),
    };
    tables
        .into_iter()
        .map(|(table, span)| read_old_store(table, span))
        .collect()
}

fn read_old_store(
    table: InlineTable,
    table_span: Range<usize>,
) -> Result<RawOldStore, OldStoreReadError> {
    let name = table
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| "old_stores".to_string(), |n| format!("old_stores.{n}"));
    let refused = |span: Range<usize>, problem| OldStoreReadError {
        key: key_at(&table, &name, &span),
        span,
        problem,
    };
    let unreadable = |e: toml_edit::de::Error| {
        let span = e.span().unwrap_or_else(|| table_span.clone());
        refused(span, Problem::Unreadable(e.message().to_string()))
    };
    let kind = RawKindOnly::deserialize(deserializer(&table))
        .map_err(unreadable)?
        .kind;
    let common_keys = struct_keys::<RawCommon>();
    let mut common = table.clone();
    common.retain(|key, _| common_keys.contains(&key));
    let mut own = table.clone();
    own.retain(|key, _| !common_keys.contains(&key));
    if let Some((span, problem)) = key_of_other_kind(&own, kind) {
        return Err(refused(span.unwrap_or_else(|| table_span.clone()), problem));
    }
    let common = RawCommon::deserialize(deserializer(&common)).map_err(unreadable)?;
    let own = || deserializer(&own);
    let keys = match kind {
        RawOldStoreKind::Whoami => {
            RawOldStoreKeys::Whoami(Deserialize::deserialize(own()).map_err(unreadable)?)
        }
        RawOldStoreKind::Redis => {
            RawOldStoreKeys::Redis(Deserialize::deserialize(own()).map_err(unreadable)?)
        }
        RawOldStoreKind::Postgres => {
            RawOldStoreKeys::Postgres(Deserialize::deserialize(own()).map_err(unreadable)?)
        }
        RawOldStoreKind::PhpFiles => {
            RawOldStoreKeys::PhpFiles(Deserialize::deserialize(own()).map_err(unreadable)?)
        }
    };
    Ok(RawOldStore {
        name: common.name,
        timeout: common.timeout,
        user: common.user,
        roles: common.roles,
        email: common.email,
        attributes: common.attributes,
        kind: keys,
    })
}

/// The first key of `own` that `kind` does not have, with its span: one of another kind is
/// named as such, and for any other the message lists every key this kind has.
fn key_of_other_kind(
    own: &InlineTable,
    kind: RawOldStoreKind,
) -> Option<(Option<Range<usize>>, Problem)> {
    own.iter().find_map(|(key, value)| {
        if kind.keys().contains(&key) {
            return None;
        }
        let owners: Vec<&str> = RawOldStoreKind::ALL
            .into_iter()
            .filter(|k| k.keys().contains(&key))
            .map(RawOldStoreKind::as_str)
            .collect();
        let problem = if owners.is_empty() {
            let keys = struct_keys::<RawCommon>().iter().chain(kind.keys());
            Problem::UnknownKey {
                key: key.to_string(),
                kind: kind.as_str(),
                expected: keys
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        } else {
            Problem::KeyOfOtherKind {
                kind: kind.as_str(),
                owners: owners.join("\" or \""),
            }
        };
        let span = own.key(key).and_then(toml_edit::Key::span);
        Some((span.or_else(|| value.span()), problem))
    })
}

fn deserializer(table: &InlineTable) -> toml_edit::de::ValueDeserializer {
    Value::InlineTable(table.clone()).into_deserializer()
}

/// `old_stores.<name>.<key>` for the key written at `span`, else `old_stores.<name>`.
fn key_at(table: &InlineTable, name: &str, span: &Range<usize>) -> String {
    for (key, value) in table.iter() {
        let key_span = table.key(key).and_then(toml_edit::Key::span);
        let within = |s: Option<Range<usize>>| s.is_some_and(|s| s.contains(&span.start));
        if key_span.as_ref() == Some(span) || within(value.span()) {
            return format!("{name}.{key}");
        }
    }
    name.to_string()
}

/// The keys a derived `Deserialize` struct accepts: the list serde hands the deserializer.
fn struct_keys<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut keys = StructKeys(&[]);
    let _ = T::deserialize(&mut keys);
    keys.0
}

/// A deserializer that only records the field names it is asked for.
struct StructKeys(&'static [&'static str]);

impl<'de> de::Deserializer<'de> for &mut StructKeys {
    type Error = de::value::Error;

    fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only structs are inspected"))
    }

    fn deserialize_struct<V: de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = fields;
        Err(de::Error::custom("inspected"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_their_own_keys() {
        assert_eq!(
            RawOldStoreKind::PhpFiles.keys(),
            ["dir", "file_prefix", "gc_maxlifetime"]
        );
        assert!(struct_keys::<RawCommon>().contains(&"kind"));
        assert!(RawOldStoreKind::Redis.keys().contains(&"url"));
    }
}
