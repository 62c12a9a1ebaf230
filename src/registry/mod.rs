//! The registry: Parley's durable memory of deployments, their targets, the event
//! log of every rollout transition, and the audit log of who asked for what.
//!
//! A small async API over one of two stores (sqlx, runtime queries): SQLite, the
//! embedded default, or PostgreSQL for a team (see [`store`]). SQLite runs in WAL
//! mode with `synchronous = FULL`, so a transition that was journalled survives
//! Parley being killed the next instant; the orchestrator journals before it acts.
//! PostgreSQL commits durably by default.

pub mod audit;
mod deployments;
mod inquiry;
mod migrate;
mod records;
mod report;
mod routing;
mod store;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use store::Db;
pub use store::{redact_url, Location};

pub use deployments::{QueuedRow, QUEUED_BEHIND};
pub use inquiry::{FreezeRecord, MAX_ROWS};
pub use migrate::{CopiedTable, MigrateError};
pub use records::{
    deployment_id_from_name, deployment_name, Admission, AuditEntry, AuditResult, DeploymentFilter, DeploymentRecord,
    EventRecord, Hold, NewDeployment, NewTarget, TargetJournal, TargetRecord, TargetState,
};
pub use report::{Report, TimelineDay};
pub use routing::{NewRoutingChange, RoutingChange};

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("could not create the registry's directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("could not read the registry {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a Parley registry (not a SQLite database); it was left untouched")]
    NotADatabase { path: PathBuf },
    #[error("the registry {path} is corrupt ({detail}); it was left untouched")]
    Corrupt { path: PathBuf, detail: String },
    #[error("could not lock {path} to bring the registry up to date: {source}")]
    Lock { path: PathBuf, source: std::io::Error },
    #[error("could not open the registry {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("could not bring the registry {path} up to date: {source}")]
    Migrate { path: PathBuf, source: sqlx::migrate::MigrateError },
    #[error("registry query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("the registry holds a value Parley cannot read: {0}")]
    Data(String),
    #[error("no deployment {0} in the registry")]
    UnknownDeployment(String),
    /// The URL is shown with its password replaced: see [`redact_url`].
    #[error("`{url}` is not a registry URL Parley can use: {detail}")]
    BadUrl { url: String, detail: String },
    #[error("could not connect to the registry database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("could not bring the registry database {url} up to date: {source}")]
    MigrateDatabase { url: String, source: sqlx::migrate::MigrateError },
}

/// How long a write waits for SQLite's write lock while another process holds it.
/// Writers in one process never wait on it (see [`Registry::write_lock`]): this only
/// bounds cross-process contention, so it is generous.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// A handle on the registry. Cheap to clone (a connection pool inside).
#[derive(Debug, Clone)]
pub struct Registry {
    db: Db,
    /// Serialises this process's writes to a SQLite file: see [`Registry::write_lock`].
    /// `None` on PostgreSQL, whose writers wait for each other's row locks.
    writer: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Hold tokio's clock while a query runs (in-memory registries: see [`ClockHold`]).
    hold_clock: bool,
}

/// Keeps a paused tokio clock (tests on virtual time) from running on while SQLite
/// works. SQLite answers from its own thread, which the runtime cannot see: it takes
/// the wait for idleness and jumps the clock to the next timer, firing bakes, holds
/// and the pool's own acquire timeout early. A blocking task in flight holds the
/// clock, as tokio documents; outside tokio's test builds it only costs a hand-off to
/// the blocking pool, and only in-memory registries (tests, benches, dry runs) take it.
struct ClockHold(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

impl ClockHold {
    fn start() -> ClockHold {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // Outside a runtime there is no clock to hold (and spawning would panic).
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Returns when the hold is dropped (its sender with it).
            drop(rt.spawn_blocking(move || {
                let _ = rx.recv();
            }));
        }
        ClockHold(tx)
    }
}

impl Registry {
    /// Opens (creating it and its directories if needed) the registry at `path`.
    /// A file that is not a SQLite database, or is corrupt, is an error naming the path
    /// and is not modified.
    pub async fn open(path: &Path) -> Result<Registry, RegistryError> {
        Registry::open_with(path, BUSY_TIMEOUT).await
    }

    async fn open_with(path: &Path, busy_timeout: Duration) -> Result<Registry, RegistryError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| RegistryError::CreateDir { path: dir.to_path_buf(), source })?;
        }
        // Checked before SQLite sees the file: SQLite would refuse it too, but only
        // after it may have created journal files beside it.
        check_header(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| open_error(path, source))?;
        let registry = Registry { db: Db::Sqlite(pool), writer: Some(file_writer(path)), hold_clock: false };
        registry.check_integrity(path).await?;
        // Two processes opening a new registry at once would both create its tables
        // (sqlx takes no lock on SQLite): one migrates at a time.
        let _migrating = migration_lock(path).await?;
        {
            let _write = registry.write_lock().await;
            registry
                .db
                .migrate()
                .await
                .map_err(|source| RegistryError::Migrate { path: path.to_path_buf(), source })?;
        }
        Ok(registry)
    }

    /// A private registry in memory, gone when the handle is dropped (tests, dry runs).
    pub async fn open_in_memory() -> Result<Registry, RegistryError> {
        let path = PathBuf::from(":memory:");
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|source| RegistryError::Open { path: path.clone(), source })?
            .foreign_keys(true);
        let _hold = ClockHold::start();
        // Every connection to `:memory:` is its own empty database: keep exactly one,
        // and never let the pool close it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|source| RegistryError::Open { path: path.clone(), source })?;
        sqlx::migrate!("./migrations").run(&pool).await.map_err(|source| RegistryError::Migrate { path, source })?;
        Ok(Registry { db: Db::Sqlite(pool), writer: Some(Arc::default()), hold_clock: true })
    }

    /// Opens the registry where `location` says: a SQLite file (as [`Registry::open`])
    /// or a PostgreSQL database, whose schema is brought up to date (its migrator
    /// takes an advisory lock, so servers starting together migrate once).
    pub async fn connect(location: &Location) -> Result<Registry, RegistryError> {
        match location {
            Location::Sqlite(path) => Registry::open(path).await,
            Location::Postgres(url) => {
                let db = store::connect_postgres(url).await?;
                db.migrate().await.map_err(|source| RegistryError::MigrateDatabase { url: redact_url(url), source })?;
                Ok(Registry { db, writer: None, hold_clock: false })
            }
        }
    }

    /// Which store this registry is on.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Taken by every write, before its connection: one write at a time per database
    /// file in this process, in arrival order (tokio's mutex is fair).
    ///
    /// SQLite has a single write lock per file, and a connection that finds it taken
    /// polls for it (its busy handler sleeps up to 100 ms between tries) until the
    /// busy timeout. Writers racing for it through the pool's several connections can
    /// lose every poll: under a drain's hundreds of concurrent writes on a loaded
    /// machine, with `synchronous = FULL` making each commit an fsync, one of them
    /// outwaited the timeout and failed with `database is locked`. Queued here they
    /// never contend for SQLite's lock, and the busy timeout is left to bound only
    /// another process's writes. Reads take no lock (WAL).
    async fn write_lock(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.writer {
            Some(writer) => Some(writer.lock().await),
            None => None,
        }
    }

    /// Held by every query: see [`ClockHold`].
    fn hold(&self) -> Option<ClockHold> {
        self.hold_clock.then(ClockHold::start)
    }

    async fn check_integrity(&self, path: &Path) -> Result<(), RegistryError> {
        let Db::Sqlite(pool) = &self.db else { return Ok(()) };
        let rows: Vec<(String,)> =
            sqlx::query_as("PRAGMA quick_check").fetch_all(pool).await.map_err(|e| open_error(path, e))?;
        let problems: Vec<String> = rows.into_iter().map(|(r,)| r).filter(|r| r != "ok").collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(RegistryError::Corrupt { path: path.to_path_buf(), detail: problems.join("; ") })
        }
    }
}

/// The two stores a registry can be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The write lock shared by every [`Registry`] this process opened on the file at
/// `path` (tests and tools open a second one beside Parley's).
fn file_writer(path: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static WRITERS: Mutex<Vec<(PathBuf, Weak<tokio::sync::Mutex<()>>)>> = Mutex::new(Vec::new());
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut writers = WRITERS.lock().unwrap_or_else(|e| e.into_inner());
    writers.retain(|(_, w)| w.strong_count() > 0);
    if let Some(writer) = writers.iter().find(|(p, _)| *p == key).and_then(|(_, w)| w.upgrade()) {
        return writer;
    }
    let writer = Arc::new(tokio::sync::Mutex::new(()));
    writers.push((key, Arc::downgrade(&writer)));
    writer
}

/// An exclusive OS lock on `<registry>.migrate.lock`, held while migrations run;
/// released when the file is dropped (or the process dies).
async fn migration_lock(path: &Path) -> Result<std::fs::File, RegistryError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "parley.db".into());
    let lock = path.with_file_name(format!("{name}.migrate.lock"));
    let error = |source| RegistryError::Lock { path: lock.clone(), source };
    let file =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(error)?;
    // Blocks until the other process is done: off the async threads.
    tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| error(std::io::Error::other(e)))?
        .map_err(error)
}

fn check_header(path: &Path) -> Result<(), RegistryError> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(RegistryError::Read { path: path.to_path_buf(), source }),
    };
    let mut header = Vec::with_capacity(16);
    (&mut file)
        .take(16)
        .read_to_end(&mut header)
        .map_err(|source| RegistryError::Read { path: path.to_path_buf(), source })?;
    // An empty file is what `touch` leaves: SQLite treats it as a new database.
    if header.is_empty() || header == SQLITE_HEADER {
        Ok(())
    } else {
        Err(RegistryError::NotADatabase { path: path.to_path_buf() })
    }
}

fn open_error(path: &Path, source: sqlx::Error) -> RegistryError {
    let path = path.to_path_buf();
    match source.as_database_error().and_then(|d| d.code()).as_deref() {
        // SQLITE_NOTADB and SQLITE_CORRUPT (primary codes).
        Some("26") => RegistryError::NotADatabase { path },
        Some("11") => RegistryError::Corrupt { path, detail: source.to_string() },
        _ => RegistryError::Open { path, source },
    }
}

pub(crate) fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_millis(ms: i64) -> Result<DateTime<Utc>, RegistryError> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| RegistryError::Data(format!("timestamp {ms} is out of range")))
}

#[cfg(test)]
impl Registry {
    /// The SQLite pool, for tests of what only SQLite has (pragmas, the file).
    pub(crate) fn sqlite_pool(&self) -> &sqlx::SqlitePool {
        match &self.db {
            Db::Sqlite(pool) => pool,
            Db::Postgres(_) => panic!("not a SQLite registry"),
        }
    }

    /// Runs one statement written with `?` placeholders on either store (tests that
    /// set up what no API writes, e.g. a deployment created days ago).
    pub(crate) async fn exec(&self, sql: &str, args: &[Option<i64>]) -> Result<u64, sqlx::Error> {
        Ok(store::on_db!(&self.db, |pool, dl| {
            let text = dl.sql(sql);
            let mut q = sqlx::query(&text);
            for a in args {
                q = q.bind(*a);
            }
            q.execute(pool).await?.rows_affected()
        }))
    }
}
