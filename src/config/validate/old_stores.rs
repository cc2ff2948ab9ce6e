//! `[[old_stores]]`: where the app kept sessions before unstick, and how an identity is read
//! from a session found there. Keys of another kind were refused when the table was read.

use super::super::defaults;
use super::super::error::{ConfigError, Problem};
use super::super::raw::{
    RawOldStore, RawOldStoreKeys, RawPhpFilesStore, RawPostgresStore, RawRedisStore, RawWhoamiStore,
};
use super::super::validated::{
    ForeignRedisFormat, IdentityMapping, OldStoreConfig, OldStoreKind, PostgresFormat,
};
use super::super::values::Text;
use super::whoami::FormatKeys;
use super::{pointer, Validator};
use std::ops::Range;
use std::path::PathBuf;
use toml::Spanned;

/// The store being checked: `old_stores.<name>` and the line of its name, where a missing
/// key is reported.
struct Store {
    key: String,
    span: Range<usize>,
}

impl Store {
    fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.key)
    }
}

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
        let store = Store {
            key: format!("old_stores.{name}"),
            span: raw.name.span(),
        };
        let (kind, default_user) = match raw.kind {
            RawOldStoreKeys::Whoami(keys) => (self.whoami(keys, &store)?, defaults::USER_POINTER),
            RawOldStoreKeys::Redis(keys) => {
                (self.foreign_redis(keys, &store)?, defaults::USER_POINTER)
            }
            RawOldStoreKeys::Postgres(keys) => self.postgres(keys, &store)?,
            RawOldStoreKeys::PhpFiles(keys) => {
                (self.php_files(keys, &store)?, defaults::USER_POINTER)
            }
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

    /// A key this kind cannot do without, set and not empty.
    fn required(
        &self,
        value: Option<Spanned<Text>>,
        store: &Store,
        field: &str,
        hint: &'static str,
    ) -> Result<Spanned<String>, ConfigError> {
        match value {
            Some(v) if !v.get_ref().0.is_empty() => Ok(Spanned::new(v.span(), v.into_inner().0)),
            _ => Err(self.err(
                store.span.clone(),
                store.key(field),
                Problem::RequiredForKind(hint),
            )),
        }
    }

    fn foreign_redis(
        &self,
        raw: RawRedisStore,
        store: &Store,
    ) -> Result<OldStoreKind, ConfigError> {
        let url = self.required(raw.url, store, "url", "redis://host:port of the old store")?;
        let template = self.required(raw.key, store, "key", "e.g. \"sess:{id}\"")?;
        if !template.get_ref().contains("{id}") {
            return Err(self.err(template.span(), store.key("key"), Problem::KeyWithoutId));
        }
        let format = match raw.format {
            None => ForeignRedisFormat::Json,
            Some(f) => match f.get_ref().as_str() {
                "json" => ForeignRedisFormat::Json,
                "php" => ForeignRedisFormat::Php,
                other => {
                    let problem = Problem::UnknownFormat {
                        value: other.to_string(),
                        expected: "\"json\" or \"php\"",
                    };
                    return Err(self.err(f.span(), store.key("format"), problem));
                }
            },
        };
        Ok(OldStoreKind::Redis {
            url: url.into_inner(),
            key_template: template.into_inner(),
            format,
        })
    }

    /// A PostgreSQL store, and the pointer to its user when none is given (Django keeps the
    /// user's primary key).
    fn postgres(
        &self,
        raw: RawPostgresStore,
        store: &Store,
    ) -> Result<(OldStoreKind, &'static str), ConfigError> {
        let url = self.required(raw.url.clone(), store, "url", "postgres://user@host/db")?;
        let format = self.postgres_format(&raw, store)?;
        self.postgres_keys_fit(&raw, &format, store)?;
        let secret_keys: Vec<String> = raw
            .secret_keys
            .map(|keys| keys.into_inner().into_iter().map(|k| k.0).collect())
            .unwrap_or_default();
        if format == PostgresFormat::Django
            && (secret_keys.is_empty() || secret_keys.iter().any(String::is_empty))
        {
            let problem = Problem::RequiredForKind("Django's SECRET_KEY, then any older keys");
            return Err(self.err(store.span.clone(), store.key("secret_keys"), problem));
        }
        let (table, default_user) = match &format {
            PostgresFormat::ConnectPgSimple => {
                (defaults::CONNECT_PG_SIMPLE_TABLE, defaults::USER_POINTER)
            }
            PostgresFormat::Django => (defaults::DJANGO_TABLE, defaults::DJANGO_USER_POINTER),
            PostgresFormat::Custom { .. } => ("", defaults::USER_POINTER),
        };
        let kind = OldStoreKind::Postgres {
            url: url.into_inner(),
            format,
            table: raw
                .table
                .map_or_else(|| table.to_string(), |t| t.into_inner().0),
            secret_keys,
        };
        Ok((kind, default_user))
    }

    fn postgres_format(
        &self,
        raw: &RawPostgresStore,
        store: &Store,
    ) -> Result<PostgresFormat, ConfigError> {
        const FORMATS: &str = "\"connect-pg-simple\", \"django\" or \"custom\"";
        let Some(format) = &raw.format else {
            let problem = Problem::RequiredForKind(FORMATS);
            return Err(self.err(store.span.clone(), store.key("format"), problem));
        };
        match format.get_ref().as_str() {
            "connect-pg-simple" => Ok(PostgresFormat::ConnectPgSimple),
            "django" => Ok(PostgresFormat::Django),
            "custom" => self.custom_queries(raw, store),
            other => {
                let problem = Problem::UnknownFormat {
                    value: other.to_string(),
                    expected: FORMATS,
                };
                Err(self.err(format.span(), store.key("format"), problem))
            }
        }
    }

    /// Keys that only one format reads are refused with the others, not ignored.
    fn postgres_keys_fit(
        &self,
        raw: &RawPostgresStore,
        format: &PostgresFormat,
        store: &Store,
    ) -> Result<(), ConfigError> {
        let custom = matches!(format, PostgresFormat::Custom { .. });
        let checks = [
            (
                raw.table.as_ref().map(Spanned::span),
                "table",
                !custom,
                "format = \"connect-pg-simple\" or \"django\"",
            ),
            (
                raw.lookup_query.as_ref().map(Spanned::span),
                "lookup_query",
                custom,
                "format = \"custom\"",
            ),
            (
                raw.delete_query.as_ref().map(Spanned::span),
                "delete_query",
                custom,
                "format = \"custom\"",
            ),
            (
                raw.secret_keys.as_ref().map(Spanned::span),
                "secret_keys",
                *format == PostgresFormat::Django,
                "format = \"django\"",
            ),
        ];
        for (span, field, applies, needs) in checks {
            if let (Some(span), false) = (span, applies) {
                return Err(self.err(span, store.key(field), Problem::AppliesOnlyWith(needs)));
            }
        }
        Ok(())
    }

    /// `format = "custom"`: a lookup query and an optional delete query, each taking the
    /// session id as `$1`.
    fn custom_queries(
        &self,
        raw: &RawPostgresStore,
        store: &Store,
    ) -> Result<PostgresFormat, ConfigError> {
        let hint = "a SELECT of (session JSON as text, seconds left as float8) WHERE <id> = $1";
        let lookup = self.required(raw.lookup_query.clone(), store, "lookup_query", hint)?;
        let delete = raw
            .delete_query
            .as_ref()
            .map(|d| Spanned::new(d.span(), d.get_ref().0.clone()));
        for (query, field) in [
            (Some(&lookup), "lookup_query"),
            (delete.as_ref(), "delete_query"),
        ] {
            if let Some(query) = query.filter(|q| !q.get_ref().contains("$1")) {
                return Err(self.err(query.span(), store.key(field), Problem::QueryWithoutId));
            }
        }
        Ok(PostgresFormat::Custom {
            lookup: lookup.into_inner(),
            delete: delete.map(Spanned::into_inner),
        })
    }

    fn php_files(&self, raw: RawPhpFilesStore, store: &Store) -> Result<OldStoreKind, ConfigError> {
        let dir = self.required(raw.dir, store, "dir", "PHP's session.save_path")?;
        let file_prefix = match raw.file_prefix {
            None => defaults::PHP_FILE_PREFIX.to_string(),
            Some(prefix) if prefix.get_ref().0.contains(['/', '\0']) => {
                let span = prefix.span();
                return Err(self.err(span, store.key("file_prefix"), Problem::BadFilePrefix));
            }
            Some(prefix) => prefix.into_inner().0,
        };
        Ok(OldStoreKind::PhpFiles {
            dir: PathBuf::from(dir.into_inner()),
            file_prefix,
            gc_maxlifetime: raw.gc_maxlifetime.map_or(defaults::GC_MAXLIFETIME, |d| d.0),
        })
    }

    fn whoami(&self, raw: RawWhoamiStore, store: &Store) -> Result<OldStoreKind, ConfigError> {
        let keys = FormatKeys {
            format: &store.key("format"),
            needs: "format = \"html\"",
            table: &store.key,
        };
        Ok(OldStoreKind::Whoami {
            format: self.whoami_format(&raw.format, raw.html_picks(), &keys)?,
            path: raw
                .path
                .map_or_else(|| defaults::WHOAMI_PATH.to_string(), |p| p.0),
            fanout_concurrency: raw
                .fanout_concurrency
                .unwrap_or(defaults::FANOUT_CONCURRENCY)
                .clamp(1, defaults::FANOUT_CONCURRENCY_MAX),
            miss_ttl: raw.miss_ttl.map_or(defaults::MISS_TTL, |d| d.0),
        })
    }
}
