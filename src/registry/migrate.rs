//! `parley registry migrate`: a whole registry copied from one store to another (a
//! single user's SQLite history into the team's PostgreSQL, or back out as a file),
//! with every id kept, so `d-7` is still `d-7` and its journal still its own.
//!
//! The copy reads the source in one transaction (a consistent snapshot even while a
//! server writes to it), writes the destination in one transaction (all of it, or
//! nothing if anything fails), then counts each table on both sides.

use super::store::{on_db, BeginWrite as _, Db, Dialect};
use super::{Registry, RegistryError};

/// A column's kind, as both stores keep it (INTEGER/BIGINT or TEXT, maybe NULL).
#[derive(Clone, Copy)]
enum Kind {
    Int,
    OptInt,
    Text,
    OptText,
}

/// One table as the copy sees it: its columns in both stores' schemas.
struct Table {
    /// The name as SQL writes it (quoted where PostgreSQL reserves the word).
    sql_name: &'static str,
    /// The name people read.
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    /// The identity column whose counter must continue after the copied rows.
    identity: Option<&'static str>,
}

use Kind::{Int, OptInt, OptText, Text};

/// Every table of the registry, parents before children (targets and events refer
/// to deployments).
const TABLES: [Table; 7] = [
    Table {
        sql_name: "deployments",
        name: "deployments",
        columns: &[
            ("id", Int),
            ("extension", Text),
            ("version", Text),
            ("scope", Text),
            ("strategy", Text),
            ("status", Text),
            ("hold", OptText),
            ("reason", OptText),
            ("actor_name", Text),
            ("actor_frontend", Text),
            ("utterance", Text),
            ("current_step", Int),
            ("step_count", Int),
            ("created_at", Int),
            ("updated_at", Int),
            ("finished_at", OptInt),
        ],
        identity: Some("id"),
    },
    // Targets keep the order they were inserted in (a step's agents are visited in
    // the plan's order): they are read in that order and inserted in it.
    Table {
        sql_name: "deployment_targets",
        name: "deployment targets",
        columns: &[
            ("deployment_id", Int),
            ("agent", Text),
            ("endpoint", Text),
            ("previous_version", OptText),
            ("step", Int),
            ("state", Text),
            ("detail", OptText),
        ],
        identity: None,
    },
    Table {
        sql_name: "events",
        name: "journal events",
        columns: &[("id", Int), ("deployment_id", OptInt), ("at", Int), ("kind", Text), ("data", Text)],
        identity: Some("id"),
    },
    Table {
        sql_name: "audit",
        name: "audit entries",
        columns: &[
            ("id", Int),
            ("at", Int),
            ("actor_name", Text),
            ("actor_frontend", Text),
            ("role", Text),
            ("utterance", Text),
            ("operation", OptText),
            ("result", Text),
            ("message", Text),
        ],
        identity: Some("id"),
    },
    Table {
        sql_name: "routing",
        name: "routing entries",
        columns: &[("region", Text), ("serving_region", Text), ("weight", Int)],
        identity: None,
    },
    Table {
        sql_name: "routing_changes",
        name: "routing changes",
        columns: &[
            ("id", Int),
            ("at", Int),
            ("actor", Text),
            ("frontend", Text),
            ("kind", Text),
            ("reason", Text),
            ("before", Text),
            ("after", Text),
        ],
        identity: Some("id"),
    },
    Table {
        sql_name: "\"freeze\"",
        name: "change freeze",
        columns: &[("id", Int), ("at", Int), ("actor", Text), ("frontend", Text), ("reason", Text)],
        identity: None,
    },
];

/// One value of a copied row.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
}

/// How many rows of one table were copied (and found again at the destination).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopiedTable {
    pub table: &'static str,
    pub rows: u64,
}

/// Why a copy was not made, beyond the stores' own errors.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(
        "{to} already holds {what}: migrate into an empty registry (a new database, or a file that does not exist yet)"
    )]
    NotEmpty { to: String, what: String },
    #[error(
        "{which} still {verb} in {from}: let {them} finish (or abort {them}) before moving the registry, or the copy would miss what happens next"
    )]
    Active { from: String, which: String, verb: &'static str, them: &'static str },
    #[error("the copy does not match its source: {table} has {source_rows} rows in {from} and {copied} in {to}")]
    Mismatch { table: &'static str, source_rows: u64, copied: u64, from: String, to: String },
    #[error("the source and the destination are the same registry ({0})")]
    Same(String),
}

/// Rows per multi-row INSERT: at most 16 columns, so far under either store's limit
/// on parameters.
const CHUNK: usize = 500;

impl Registry {
    /// Copies every row of `self` into `to`, which must hold nothing yet. `from` and
    /// `to_name` are how the two are named in messages (passwords redacted);
    /// `progress` hears each table as it is copied.
    pub async fn copy_into(
        &self,
        to: &Registry,
        names: (&str, &str),
        mut progress: impl FnMut(&CopiedTable),
    ) -> Result<Vec<CopiedTable>, MigrateError> {
        let (from_name, to_name) = names;
        if from_name == to_name {
            return Err(MigrateError::Same(from_name.to_string()));
        }
        let active = self.active_deployments().await?;
        let driven: Vec<String> = active
            .iter()
            .filter(|d| {
                matches!(d.status, crate::ops::DeploymentStatus::Running | crate::ops::DeploymentStatus::RollingBack)
            })
            .map(|d| d.name.clone())
            .collect();
        if !driven.is_empty() {
            let one = driven.len() == 1;
            return Err(MigrateError::Active {
                from: from_name.to_string(),
                which: driven.join(", "),
                verb: if one { "runs" } else { "run" },
                them: if one { "it" } else { "them" },
            });
        }
        let existing = to.row_counts().await?;
        let filled: Vec<String> =
            existing.iter().filter(|c| c.rows > 0).map(|c| format!("{} {}", c.rows, c.table)).collect();
        if !filled.is_empty() {
            return Err(MigrateError::NotEmpty { to: to_name.to_string(), what: filled.join(", ") });
        }

        let snapshot = read_all(&self.db).await?;
        write_all(&to.db, &snapshot).await?;

        let source_counts: Vec<u64> = snapshot.iter().map(|rows| rows.len() as u64).collect();
        let copied = to.row_counts().await?;
        let mut out = Vec::with_capacity(TABLES.len());
        for (c, source_rows) in copied.into_iter().zip(source_counts) {
            if c.rows != source_rows {
                return Err(MigrateError::Mismatch {
                    table: c.table,
                    source_rows,
                    copied: c.rows,
                    from: from_name.to_string(),
                    to: to_name.to_string(),
                });
            }
            progress(&c);
            out.push(c);
        }
        Ok(out)
    }

    /// The number of rows of each table, in [`TABLES`]' order.
    async fn row_counts(&self) -> Result<Vec<CopiedTable>, RegistryError> {
        let mut out = Vec::with_capacity(TABLES.len());
        for t in &TABLES {
            let sql = format!("SELECT COUNT(*) AS n FROM {}", t.sql_name);
            let n: i64 = on_db!(&self.db, |pool, dl| {
                use sqlx::Row as _;
                sqlx::query(&sql).fetch_one(pool).await?.try_get("n")?
            });
            out.push(CopiedTable { table: t.name, rows: n.max(0) as u64 });
        }
        Ok(out)
    }
}

/// Every table's rows, read in one transaction.
async fn read_all(db: &Db) -> Result<Vec<Vec<Vec<Cell>>>, RegistryError> {
    let mut out = Vec::with_capacity(TABLES.len());
    on_db!(db, |pool, dl| {
        let mut tx = pool.begin().await?;
        for t in &TABLES {
            let columns: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
            let order = match t.sql_name {
                "deployment_targets" => dl.target_order().to_string(),
                "routing" => "region, serving_region".to_string(),
                _ => "id".to_string(),
            };
            let sql = format!("SELECT {} FROM {} ORDER BY {order}", columns.join(", "), t.sql_name);
            let rows = sqlx::query(&sql).fetch_all(&mut *tx).await?;
            let mut table = Vec::with_capacity(rows.len());
            for row in &rows {
                table.push(read_row(row, t)?);
            }
            out.push(table);
        }
        tx.commit().await?;
    });
    Ok(out)
}

fn read_row<R: super::store::Fetch>(row: &R, t: &Table) -> Result<Vec<Cell>, sqlx::Error> {
    t.columns
        .iter()
        .map(|(c, kind)| {
            Ok(match kind {
                Int => Cell::Int(Some(row.int(c)?)),
                OptInt => Cell::Int(row.opt_int(c)?),
                Text => Cell::Text(Some(row.text(c)?)),
                OptText => Cell::Text(row.opt_text(c)?),
            })
        })
        .collect()
}

/// Inserts `snapshot` (as [`read_all`] returns it) in one writing transaction, then
/// moves each identity counter past the copied ids, so the next `d-<n>` continues.
async fn write_all(db: &Db, snapshot: &[Vec<Vec<Cell>>]) -> Result<(), RegistryError> {
    on_db!(db, |pool, dl| {
        let mut tx = pool.begin_write().await?;
        for (t, rows) in TABLES.iter().zip(snapshot) {
            let columns: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
            let one = format!("({})", vec!["?"; columns.len()].join(", "));
            for chunk in rows.chunks(CHUNK) {
                let sql = format!(
                    "INSERT INTO {} ({}) VALUES {}",
                    t.sql_name,
                    columns.join(", "),
                    vec![one.as_str(); chunk.len()].join(", ")
                );
                let sql = dl.sql(&sql);
                let mut insert = sqlx::query(&sql);
                for row in chunk {
                    for cell in row {
                        insert = match cell {
                            Cell::Int(v) => insert.bind(*v),
                            Cell::Text(v) => insert.bind(v.as_deref()),
                        };
                    }
                }
                insert.execute(&mut *tx).await?;
            }
            // SQLite's AUTOINCREMENT counters follow explicit ids by themselves;
            // PostgreSQL's identity sequences must be told.
            if let (Some(column), Dialect::Postgres, false) = (t.identity, dl, rows.is_empty()) {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', '{column}'), (SELECT MAX({column}) FROM {0}))",
                    t.sql_name
                );
                sqlx::query(&sql).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
    });
    Ok(())
}
