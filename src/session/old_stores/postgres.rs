//! Sessions in the app's PostgreSQL: connect-pg-simple's `session` table, Django's
//! `django_session` (signed payload), or a query of the operator's own. One connection, opened
//! lazily and again after it drops; statements prepared once per connection; every call bounded.
//! The two known tables are listed (for the pre-copy) in key order, one page after another.

use super::django::{DjangoError, DjangoSigner};
use crate::config::IdentityMapping;
use crate::session::cookie::SessionId;
use crate::session::old_store::{found, invalid, timed_out, unavailable};
use crate::session::old_store::{
    Decoded, Listed, Listing, LookupContext, OldSession, OldStore, OldStoreError,
};
use async_trait::async_trait;
use serde_json::Value;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};

/// Which table layout (and payload encoding) the app used.
#[derive(Clone)]
pub enum PgFormat {
    /// connect-pg-simple: `session(sid varchar pk, sess json, expire timestamp(6))`.
    ConnectPgSimple { table: String },
    /// Django >= 3.1: `django_session(session_key, session_data, expire_date)`.
    /// `secret_keys`: SECRET_KEY first, then the older keys still accepted.
    Django {
        secret_keys: Vec<String>,
        table: String,
    },
    /// The operator's own SQL. `lookup` takes the session id as `$1` and returns at most one
    /// live row: (session document as JSON `text`, seconds left as `float8` or NULL).
    /// `delete` (optional) takes the id as `$1`; without it the store is read-only.
    Custom {
        lookup: String,
        delete: Option<String>,
    },
}

impl std::fmt::Debug for PgFormat {
    // Secret keys must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgFormat::ConnectPgSimple { table } => write!(f, "ConnectPgSimple({table})"),
            PgFormat::Django { table, secret_keys } => {
                write!(f, "Django({table}, {} keys)", secret_keys.len())
            }
            PgFormat::Custom { .. } => f.write_str("Custom"),
        }
    }
}

enum Payload {
    Json,
    Django(DjangoSigner),
}

/// One live connection with its prepared statements.
struct Connection {
    client: Client,
    lookup: Statement,
    delete: Option<Statement>,
    list: Option<Statement>,
    /// Drives the socket; aborted with the connection so a hung server leaks nothing.
    task: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub struct PostgresStore {
    name: String,
    config: tokio_postgres::Config,
    lookup_sql: String,
    delete_sql: Option<String>,
    /// A page of (id, payload, seconds left) after the id `$1`, at most `$2` rows, live or not.
    list_sql: Option<String>,
    payload: Payload,
    mapping: IdentityMapping,
    timeout: Duration,
    /// Held while (re)connecting, so concurrent lookups wait for one new connection instead of
    /// each opening their own.
    connection: Mutex<Option<Arc<Connection>>>,
}

/// A table name as `"name"` or `"schema"."name"`; only plain identifiers are accepted, so the
/// quoted form cannot break out of the SQL (the session id itself is always a parameter).
fn quote_table(table: &str) -> Option<String> {
    let parts: Vec<&str> = table.split('.').collect();
    if parts.len() > 2 {
        return None;
    }
    let plain = |part: &&str| {
        let mut bytes = part.bytes();
        matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$')
            && part.len() <= 63
    };
    parts.iter().all(plain).then(|| {
        parts
            .iter()
            .map(|part| format!("\"{part}\""))
            .collect::<Vec<_>>()
            .join(".")
    })
}

/// Whether a failed call means the connection is gone (rather than the query failing on a
/// healthy one). A server that ends a session sends a FATAL error (class 08, or 57P01-03 on
/// shutdown, termination or restart) before the socket closes.
fn connection_lost(error: &tokio_postgres::Error, connection: &Connection) -> bool {
    if error.is_closed() || connection.client.is_closed() {
        return true;
    }
    error.code().is_some_and(|code| {
        let code = code.code();
        code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
    })
}

/// tokio-postgres keeps the useful part (refused, bad password, no such table) in the source.
fn pg_error(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl PostgresStore {
    /// `conn_str` is a libpq-style URL or key=value string. A server that is down does not
    /// fail this (the first lookup connects); only settings that can never work do.
    pub async fn connect(
        name: &str,
        conn_str: &str,
        format: PgFormat,
        mapping: IdentityMapping,
        timeout: Duration,
    ) -> Result<PostgresStore, OldStoreError> {
        let mut config = tokio_postgres::Config::from_str(conn_str)
            .map_err(|e| invalid(name, format_args!("connection string: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("unstick");
        }
        let table = |table: &str| {
            quote_table(table).ok_or_else(|| invalid(name, format_args!("table name {table:?}")))
        };
        // Expiry is compared in the database, on its clock, as the apps themselves do.
        let (lookup_sql, delete_sql, list_sql, payload) = match format {
            PgFormat::ConnectPgSimple { table: t } => {
                let t = table(&t)?;
                (
                    format!(
                        "SELECT sess::text, EXTRACT(EPOCH FROM (expire - now()))::float8 \
                         FROM {t} WHERE sid = $1 AND expire >= now()"
                    ),
                    Some(format!("DELETE FROM {t} WHERE sid = $1")),
                    Some(format!(
                        "SELECT sid, sess::text, EXTRACT(EPOCH FROM (expire - now()))::float8 \
                         FROM {t} WHERE sid > $1 ORDER BY sid LIMIT $2"
                    )),
                    Payload::Json,
                )
            }
            PgFormat::Django {
                secret_keys,
                table: t,
            } => {
                if secret_keys.is_empty() {
                    return Err(invalid(name, "Django needs its SECRET_KEY"));
                }
                let t = table(&t)?;
                (
                    format!(
                        "SELECT session_data::text, \
                         EXTRACT(EPOCH FROM (expire_date - now()))::float8 \
                         FROM {t} WHERE session_key = $1 AND expire_date > now()"
                    ),
                    Some(format!("DELETE FROM {t} WHERE session_key = $1")),
                    Some(format!(
                        "SELECT session_key, session_data::text, \
                         EXTRACT(EPOCH FROM (expire_date - now()))::float8 \
                         FROM {t} WHERE session_key > $1 ORDER BY session_key LIMIT $2"
                    )),
                    Payload::Django(DjangoSigner::for_sessions(&secret_keys)),
                )
            }
            // The operator's query finds one id; there is no query to list them all.
            PgFormat::Custom { lookup, delete } => (lookup, delete, None, Payload::Json),
        };
        let store = PostgresStore {
            name: name.to_string(),
            config,
            lookup_sql,
            delete_sql,
            list_sql,
            payload,
            mapping,
            timeout,
            connection: Mutex::new(None),
        };
        // Connect now to report a wrong table or query early, but start without it.
        match tokio::time::timeout(timeout, store.connection()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(store = name, error = %e, "old-store PostgreSQL not usable yet; will retry on lookup")
            }
            Err(_) => tracing::warn!(
                store = name,
                "old-store PostgreSQL not reachable yet; will retry on lookup"
            ),
        }
        Ok(store)
    }

    /// The current connection, or a new one when there is none or it has closed.
    async fn connection(&self) -> Result<Arc<Connection>, OldStoreError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if !connection.client.is_closed() {
                return Ok(connection.clone());
            }
        }
        *slot = None;
        let (client, socket) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| unavailable(&self.name, pg_error(&e)))?;
        let name = self.name.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = socket.await {
                tracing::warn!(store = name, error = %pg_error(&e), "old-store PostgreSQL connection lost");
            }
        });
        let prepared = async {
            let lookup = client.prepare(&self.lookup_sql).await?;
            let delete = match &self.delete_sql {
                Some(sql) => Some(client.prepare(sql).await?),
                None => None,
            };
            let list = match &self.list_sql {
                Some(sql) => Some(client.prepare(sql).await?),
                None => None,
            };
            Ok::<_, tokio_postgres::Error>((lookup, delete, list))
        }
        .await;
        let (lookup, delete, list) = match prepared {
            Ok(statements) => statements,
            Err(e) => {
                task.abort();
                return Err(unavailable(
                    &self.name,
                    format_args!("preparing queries: {e}"),
                ));
            }
        };
        let connection = Arc::new(Connection {
            client,
            lookup,
            delete,
            list,
            task,
        });
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets `used` (if still current) so the next call reconnects: after a timeout the
    /// connection's state is unknown, and queries queued behind a hung one would all time out.
    async fn discard(&self, used: &Arc<Connection>) {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, used)) {
            *slot = None;
        }
    }

    /// Runs `call` on a connection within the timeout (connecting included). A connection
    /// found closed by the call (server restart, failover, idle kill) is replaced and the call
    /// made once more: the queries are idempotent, and the user should not see the reconnect.
    async fn with_connection<T, F, Fut>(&self, call: F) -> Result<T, OldStoreError>
    where
        F: Fn(Arc<Connection>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut retried = false;
        loop {
            let connection = tokio::time::timeout_at(deadline, self.connection())
                .await
                .map_err(|_| timed_out(&self.name, self.timeout))??;
            match tokio::time::timeout_at(deadline, call(connection.clone())).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => {
                    if !connection_lost(&e, &connection) {
                        return Err(unavailable(&self.name, pg_error(&e)));
                    }
                    self.discard(&connection).await;
                    if retried {
                        return Err(unavailable(&self.name, pg_error(&e)));
                    }
                    retried = true;
                }
                Err(_) => {
                    self.discard(&connection).await;
                    return Err(timed_out(&self.name, self.timeout));
                }
            }
        }
    }

    fn decode(&self, text: &str) -> Result<Value, String> {
        match &self.payload {
            Payload::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
            Payload::Django(signer) => signer.decode(text).map_err(|e| match e {
                // Forged, or signed with a key that is not configured (rotated away).
                DjangoError::BadSignature => {
                    "Django session signature matches no configured secret key".to_string()
                }
                e => e.to_string(),
            }),
        }
    }

    /// One row, as a lookup and a listing read it: the payload and the seconds it has left
    /// by the database's clock (`None`: the store does not say).
    fn read_row(&self, text: Option<String>, seconds_left: Option<f64>) -> Decoded {
        let remaining = match seconds_left {
            Some(seconds) => match Duration::try_from_secs_f64(seconds) {
                Ok(left) if !left.is_zero() => Some(left),
                // Expired (or at its last instant) by the database's clock.
                _ => return Decoded::Expired,
            },
            None => None,
        };
        let Some(text) = text else {
            return Decoded::Unreadable("the row holds no session data".into());
        };
        match self.decode(&text) {
            Ok(doc) => found(&doc, &self.mapping, remaining),
            Err(reason) => Decoded::Unreadable(reason),
        }
    }

    /// The page of rows after the id `after`, and the last id in it (`None` at the end).
    async fn list_page(
        &self,
        after: String,
        batch: usize,
    ) -> Result<(Vec<Listed>, Option<String>), OldStoreError> {
        let limit = batch.clamp(1, 10_000) as i64;
        let after = after.as_str();
        let rows = self
            .with_connection(|connection| async move {
                let Some(list) = &connection.list else {
                    return Ok(Vec::new());
                };
                let rows = connection.client.query(list, &[&after, &limit]).await?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.try_get::<_, String>(0)?,
                            row.try_get::<_, Option<String>>(1)?,
                            row.try_get::<_, Option<f64>>(2)?,
                        ))
                    })
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            })
            .await?;
        let last = (rows.len() as i64 == limit)
            .then(|| rows.last().map(|(id, _, _)| id.clone()))
            .flatten();
        let listed = rows
            .into_iter()
            .map(|(id, text, seconds_left)| Listed {
                session: self.read_row(text, seconds_left),
                id: SessionId::stored(id),
            })
            .collect();
        Ok((listed, last))
    }
}

#[async_trait]
impl OldStore for PostgresStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(
        &self,
        id: &SessionId,
        _context: &LookupContext<'_>,
    ) -> Result<Option<OldSession>, OldStoreError> {
        let session_id = id.id();
        let row = self
            .with_connection(|connection| async move {
                let row = connection
                    .client
                    .query_opt(&connection.lookup, &[&session_id])
                    .await?;
                row.map(|row| {
                    Ok::<_, tokio_postgres::Error>((
                        row.try_get::<_, Option<String>>(0)?,
                        row.try_get::<_, Option<f64>>(1)?,
                    ))
                })
                .transpose()
            })
            .await?;
        let Some((Some(text), seconds_left)) = row else {
            return Ok(None);
        };
        Ok(self
            .read_row(Some(text), seconds_left)
            .into_lookup(&self.name, id))
    }

    async fn delete(&self, id: &SessionId) -> Result<(), OldStoreError> {
        if self.delete_sql.is_none() {
            return Ok(());
        }
        let session_id = id.id();
        self.with_connection(|connection| async move {
            match &connection.delete {
                Some(delete) => connection.client.execute(delete, &[&session_id]).await,
                None => Ok(0),
            }
        })
        .await?;
        Ok(())
    }

    fn list(&self, batch: usize) -> Option<Listing<'_>> {
        self.list_sql.as_ref()?;
        // Keyset pages: each starts after the last id of the one before (ids are non-empty).
        let pages =
            futures_util::stream::try_unfold(Some(String::new()), move |after| async move {
                let Some(after) = after else {
                    return Ok(None);
                };
                let (listed, last) = self.list_page(after, batch).await?;
                Ok(Some((listed, last)))
            });
        Some(Box::pin(pages))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_identifiers_only() {
        assert_eq!(quote_table("session").as_deref(), Some("\"session\""));
        assert_eq!(
            quote_table("app.django_session").as_deref(),
            Some("\"app\".\"django_session\"")
        );
        for bad in [
            "",
            "a.b.c",
            "1abc",
            "session; DROP TABLE x",
            "se\"ssion",
            "a.",
            ".a",
            "sess ion",
            &"x".repeat(64),
        ] {
            assert_eq!(quote_table(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_secret_keys() {
        let format = PgFormat::Django {
            secret_keys: vec!["very-secret".into()],
            table: "django_session".into(),
        };
        assert_eq!(format!("{format:?}"), "Django(django_session, 1 keys)");
    }
}
