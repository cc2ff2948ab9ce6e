//! `[[old_stores]]`: where the app kept sessions before unstick, and how an identity is read
//! from a session found there.

use super::super::defaults;
use super::super::error::Problem;
use super::super::raw::{RawOldStore, RawOldStoreKind};
use super::super::values::Text;
use super::super::{
    ConfigError, ForeignRedisFormat, IdentityMapping, OldStoreConfig, OldStoreKind, PostgresFormat,
};
use super::{pointer, Validator};
use std::path::PathBuf;

impl Validator<'_> {
    pub(super) fn old_stores(
        &self,
        raw: Vec<RawOldStore>,
    ) -> Result<Vec<OldStoreConfig>, ConfigError> {
        let mut old_stores: Vec<OldStoreConfig> = Vec::new();
        for store in raw {
            if old_stores.iter().any(|s| s.name == *store.name.get_ref()) {
                let problem = Problem::NameTaken("old stores");
                return Err(self.err(store.name.span(), "old_stores.name", problem));
            }
            old_stores.push(self.old_store(store)?);
        }
        Ok(old_stores)
    }

    fn old_store(&self, raw: RawOldStore) -> Result<OldStoreConfig, ConfigError> {
        let name = raw.name.get_ref().clone();
        let span = raw.name.span();
        let key = format!("old_stores.{name}");
        let missing = |field: &str, hint: &'static str| {
            self.err(
                span.clone(),
                format!("{key}.{field}"),
                Problem::RequiredForKind(hint),
            )
        };
        let text = |value: Option<Text>, field: &str, hint: &'static str| {
            value
                .map(|t| t.0)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| missing(field, hint))
        };
        let default_user = match (raw.kind, raw.format.as_deref()) {
            (RawOldStoreKind::Postgres, Some("django")) => defaults::DJANGO_USER_POINTER,
            _ => defaults::USER_POINTER,
        };
        let kind = match raw.kind {
            RawOldStoreKind::Whoami => OldStoreKind::Whoami {
                path: raw
                    .path
                    .map_or_else(|| defaults::WHOAMI_PATH.to_string(), |p| p.0),
                fanout_concurrency: raw
                    .fanout_concurrency
                    .unwrap_or(defaults::FANOUT_CONCURRENCY)
                    .clamp(1, defaults::FANOUT_CONCURRENCY_MAX),
                miss_ttl: raw.miss_ttl.map_or(defaults::MISS_TTL, |d| d.0),
            },
            RawOldStoreKind::Redis => OldStoreKind::Redis {
                url: text(raw.url, "url", "redis://host:port of the old store")?,
                key_template: {
                    let template = text(raw.key, "key", "e.g. \"sess:{id}\"")?;
                    if !template.contains("{id}") {
                        return Err(self.err(span, format!("{key}.key"), Problem::KeyWithoutId));
                    }
                    template
                },
                format: match raw.format.as_deref() {
                    Some("json") | None => ForeignRedisFormat::Json,
                    Some("php") => ForeignRedisFormat::Php,
                    Some(other) => {
                        return Err(self.err(
                            span,
                            format!("{key}.format"),
                            Problem::UnknownFormat {
                                value: other.to_string(),
                                expected: "\"json\" or \"php\"",
                            },
                        ))
                    }
                },
            },
            RawOldStoreKind::Postgres => {
                let format = match raw.format.as_deref() {
                    Some("connect-pg-simple") => PostgresFormat::ConnectPgSimple,
                    Some("django") => PostgresFormat::Django,
                    Some(other) => {
                        return Err(self.err(
                            span,
                            format!("{key}.format"),
                            Problem::UnknownFormat {
                                value: other.to_string(),
                                expected: "\"connect-pg-simple\" or \"django\"",
                            },
                        ))
                    }
                    None => return Err(missing("format", "\"connect-pg-simple\" or \"django\"")),
                };
                let secret_keys: Vec<String> = raw.secret_keys.into_iter().map(|k| k.0).collect();
                if format == PostgresFormat::Django
                    && (secret_keys.is_empty() || secret_keys.iter().any(String::is_empty))
                {
                    return Err(missing(
                        "secret_keys",
                        "Django's SECRET_KEY, then any older keys",
                    ));
                }
                OldStoreKind::Postgres {
                    url: text(raw.url, "url", "postgres://user@host/db")?,
                    table: raw.table.map_or_else(
                        || match format {
                            PostgresFormat::ConnectPgSimple => {
                                defaults::CONNECT_PG_SIMPLE_TABLE.to_string()
                            }
                            PostgresFormat::Django => defaults::DJANGO_TABLE.to_string(),
                        },
                        |t| t.0,
                    ),
                    format,
                    secret_keys,
                }
            }
            RawOldStoreKind::PhpFiles => OldStoreKind::PhpFiles {
                dir: PathBuf::from(text(raw.dir, "dir", "PHP's session.save_path")?),
                file_prefix: match raw.file_prefix {
                    None => defaults::PHP_FILE_PREFIX.to_string(),
                    Some(prefix) if prefix.0.contains(['/', '\0']) => {
                        return Err(self.err(
                            span,
                            format!("{key}.file_prefix"),
                            Problem::BadFilePrefix,
                        ))
                    }
                    Some(prefix) => prefix.0,
                },
                gc_maxlifetime: raw.gc_maxlifetime.map_or(defaults::GC_MAXLIFETIME, |d| d.0),
            },
        };
        Ok(OldStoreConfig {
            name,
            kind,
            timeout: raw.timeout.map_or(defaults::OLD_STORE_TIMEOUT, |d| d.0),
            mapping: IdentityMapping {
                user: pointer(raw.user.as_ref(), default_user),
                roles: pointer(raw.roles.as_ref(), defaults::ROLES_POINTER),
                email: pointer(raw.email.as_ref(), defaults::EMAIL_POINTER),
                attributes: raw.attributes.into_iter().map(|(k, v)| (k, v.0)).collect(),
            },
        })
    }
}
