//! The two stores behind the registry: SQLite (one file, the embedded default) and
//! PostgreSQL (one database a team shares). Every query is written once, in the SQL
//! both speak, and runs on either pool through [`on_db!`]: the few places where the
//! two differ (placeholders, the order targets were inserted in, how a writing
//! transaction begins) are the [`Dialect`]'s, and each record is read from a row of
//! either through one mapping over [`Fetch`].

use std::borrow::Cow;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Postgres, Row, Sqlite};

use super::RegistryError;

/// Where the registry lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://user:password@host:port/database`); it may hold
    /// a password, so it is only ever shown through [`redact_url`].
    Postgres(String),
}

impl Location {
    /// `postgres://...` or `postgresql://...` is a database; `sqlite:PATH` or a bare
    /// path is a SQLite file.
    pub fn parse(text: &str) -> Result<Location, RegistryError> {
        let t = text.trim();
        if t.starts_with("postgres://") || t.starts_with("postgresql://") {
            return Ok(Location::Postgres(t.to_string()));
        }
        let path = t.strip_prefix("sqlite://").or_else(|| t.strip_prefix("sqlite:")).unwrap_or(t);
        if path.is_empty() || path.contains("://") {
            return Err(RegistryError::BadUrl {
                url: redact_url(t),
                detail: "say postgres://user@host/database, sqlite:PATH or a file path".into(),
            });
        }
        Ok(Location::Sqlite(PathBuf::from(path)))
    }
}

/// Never shows the password a URL may carry.
impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Location::Postgres(u) => write!(f, "Postgres({})", redact_url(u)),
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "sqlite:{}", p.display()),
            Location::Postgres(u) => f.write_str(&redact_url(u)),
        }
    }
}

/// The URL with its password (in the authority or a `password=` parameter) replaced
/// by `***`: what every message, log line and error shows of a database URL.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?', '#']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i) {
            if let Some(colon) = out[rest..at].find(':').map(|i| rest + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// The pool of whichever store the registry is on.
#[derive(Clone)]
pub(super) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The pool's own Debug would show its options; the store's kind is enough.
impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Db::Sqlite(_) => "Db::Sqlite",
            Db::Postgres(_) => "Db::Postgres",
        })
    }
}

impl Db {
    /// Brings the schema up to date with this store's own migrations.
    pub(super) async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Db::Sqlite(pool) => sqlx::migrate!("./migrations").run(pool).await,
            Db::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await,
        }
    }
}

/// How long a PostgreSQL that does not answer is waited for before the error.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) async fn connect_postgres(url: &str) -> Result<Db, RegistryError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| RegistryError::BadUrl { url: redact_url(url), detail: e.to_string() })?;
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(PG_CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|source| RegistryError::Connect { url: redact_url(url), source })?;
    Ok(Db::Postgres(pool))
}

/// What a query's text must know about the store it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The query with its `?` placeholders as this store wants them (`$1`, `$2`, ...
    /// on PostgreSQL). No query of the registry has a `?` inside a string literal.
    pub(super) fn sql(self, sql: &str) -> Cow<'_, str> {
        match self {
            Dialect::Sqlite => Cow::Borrowed(sql),
            Dialect::Postgres => {
                let mut out = String::with_capacity(sql.len() + 8);
                let mut n = 0;
                for c in sql.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// The column that keeps the order a deployment's targets were inserted in
    /// (SQLite's implicit rowid; an identity column on PostgreSQL).
    pub(super) fn target_order(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "seq",
        }
    }
}

/// Runs `$body` with `$pool` bound to the store's pool and `$d` to its [`Dialect`]:
/// the body is written once and compiled for each store.
macro_rules! on_db {
    ($db:expr, |$pool:ident, $d:ident| $body:block) => {
        match $db {
            $crate::registry::store::Db::Sqlite($pool) => {
                #[allow(unused_variables)]
                let $d = $crate::registry::store::Dialect::Sqlite;
                $body
            }
            $crate::registry::store::Db::Postgres($pool) => {
                #[allow(unused_variables)]
                let $d = $crate::registry::store::Dialect::Postgres;
                $body
            }
        }
    };
}
pub(super) use on_db;

/// An arbitrary key for the transaction-scoped advisory lock every writing
/// transaction takes on PostgreSQL ("PARLEY" in ASCII).
const WRITE_LOCK_KEY: i64 = 0x5041_524c_4559;

/// A transaction that writes, begun so that two writers (in this process or another)
/// never interleave: SQLite's `BEGIN IMMEDIATE` takes the file's write lock up front;
/// on PostgreSQL an advisory lock held to the commit does the same across every
/// server on the database, so an admission's check and insert see no other's.
pub(super) trait BeginWrite {
    type Database: sqlx::Database;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Database>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Database = Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Database = Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK_KEY).execute(&mut *tx).await?;
        Ok(tx)
    }
}

/// The column reads every row mapping needs, on a row of either store (integers are
/// INTEGER on SQLite and BIGINT on PostgreSQL, texts TEXT on both).
pub(super) trait Fetch {
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error>;
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error>;
}

macro_rules! fetch_for {
    ($row:ty) => {
        impl Fetch for $row {
            fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_int(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
                self.try_get(column)
            }
            fn text(&self, column: &str) -> Result<String, sqlx::Error> {
                self.try_get(column)
            }
            fn opt_text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
                self.try_get(column)
            }
        }
    };
}
fetch_for!(SqliteRow);
fetch_for!(PgRow);

/// A query builder for the pool's store (its placeholders are the store's own).
pub(super) fn builder<'a, DB: sqlx::Database>(_pool: &sqlx::Pool<DB>, sql: String) -> sqlx::QueryBuilder<'a, DB> {
    sqlx::QueryBuilder::new(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            redact_url("postgres://parley:s3cret@db.example:5432/parley"),
            "postgres://parley:***@db.example:5432/parley"
        );
        assert_eq!(redact_url("postgres://parley@db/parley"), "postgres://parley@db/parley");
        assert_eq!(
            redact_url("postgresql://db/parley?user=p&password=s3cret&sslmode=require"),
            "postgresql://db/parley?user=p&password=***&sslmode=require"
        );
        assert_eq!(redact_url("postgres://u:p%40ss@h/d"), "postgres://u:***@h/d");
    }

    #[test]
    fn locations_are_read_from_urls_and_paths() {
        assert_eq!(Location::parse("postgres://u@h/d").unwrap(), Location::Postgres("postgres://u@h/d".into()));
        assert_eq!(Location::parse("sqlite:/tmp/p.db").unwrap(), Location::Sqlite("/tmp/p.db".into()));
        assert_eq!(Location::parse("state/parley.db").unwrap(), Location::Sqlite("state/parley.db".into()));
        let e = Location::parse("mysql://u:pw@h/d").unwrap_err().to_string();
        assert!(e.contains("mysql://u:***@h/d") && !e.contains("pw"), "{e}");
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(Dialect::Postgres.sql("a = ? AND b IN (?, ?)"), "a = $1 AND b IN ($2, $3)");
        assert_eq!(Dialect::Sqlite.sql("a = ?"), "a = ?");
    }
}
