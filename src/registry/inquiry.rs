//! Reads by time for troubleshooting ("what changed in the last hour?", "show the
//! audit log for today"), and the durable emergency stop.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::audit::audit_entry;
use super::deployments::event_from_row;
use super::records::{AuditEntry, EventRecord};
use super::store::{on_db, BeginWrite as _, Fetch};
use super::{from_millis, to_millis, Registry, RegistryError};
use crate::ops::Actor;

/// The emergency stop in force: who froze the fleet, from where, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FreezeRecord {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub frontend: String,
    pub reason: String,
}

/// At most this many rows answer one query: a span of a busy month is summarised, not dumped.
pub const MAX_ROWS: u32 = 5000;

impl Registry {
    /// Events (of every deployment and outside them) in `[from, to]`, oldest first,
    /// at most [`MAX_ROWS`] (the latest).
    pub async fn events_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<EventRecord>, RegistryError> {
        let _hold = self.hold();
        on_db!(&self.db, |pool, dl| {
            let rows = sqlx::query(&dl.sql(
                "SELECT * FROM (SELECT id, deployment_id, at, kind, data FROM events WHERE at >= ? AND at <= ? \
                 ORDER BY id DESC LIMIT ?) AS latest ORDER BY id",
            ))
            .bind(to_millis(from))
            .bind(to_millis(to))
            .bind(i64::from(MAX_ROWS))
            .fetch_all(pool)
            .await?;
            rows.iter().map(event_from_row).collect()
        })
    }

    /// Audit entries in `[from, to]`, oldest first, the latest `limit`.
    pub async fn audit_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, RegistryError> {
        let _hold = self.hold();
        on_db!(&self.db, |pool, dl| {
            let rows = sqlx::query(&dl.sql(
                "SELECT * FROM (SELECT id, at, actor_name, actor_frontend, role, utterance, operation, result, message \
                 FROM audit WHERE at >= ? AND at <= ? ORDER BY id DESC LIMIT ?) AS latest ORDER BY id",
            ))
            .bind(to_millis(from))
            .bind(to_millis(to))
            .bind(i64::from(limit.min(MAX_ROWS)))
            .fetch_all(pool)
            .await?;
            rows.iter().map(audit_entry).collect()
        })
    }

    /// The emergency stop in force, if any.
    pub async fn freeze(&self) -> Result<Option<FreezeRecord>, RegistryError> {
        let _hold = self.hold();
        on_db!(&self.db, |pool, dl| {
            let row = sqlx::query("SELECT at, actor, frontend, reason FROM \"freeze\" WHERE id = 1")
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(freeze_from_row).transpose()
        })
    }

    /// Freezes the fleet, journalling it; a freeze already in force is kept as it was
    /// (its first author and time are what matters) and returned.
    pub async fn set_freeze(&self, actor: &Actor, reason: &str) -> Result<FreezeRecord, RegistryError> {
        {
            let _hold = self.hold();
            let _write = self.write_lock().await;
            let now = to_millis(Utc::now());
            on_db!(&self.db, |pool, dl| {
                let mut tx = pool.begin_write().await?;
                // `ON CONFLICT DO NOTHING` is SQLite's `INSERT OR IGNORE`, in the words
                // both stores know.
                let inserted = sqlx::query(&dl.sql(
                    "INSERT INTO \"freeze\" (id, at, actor, frontend, reason) VALUES (1, ?, ?, ?, ?) \
                     ON CONFLICT (id) DO NOTHING",
                ))
                .bind(now)
                .bind(&actor.name)
                .bind(&actor.frontend)
                .bind(reason)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if inserted > 0 {
                    let data = serde_json::json!({ "by": actor.name, "frontend": actor.frontend, "reason": reason });
                    sqlx::query(
                        &dl.sql("INSERT INTO events (deployment_id, at, kind, data) VALUES (NULL, ?, 'freeze', ?)"),
                    )
                    .bind(now)
                    .bind(data.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            });
        }
        self.freeze().await?.ok_or_else(|| RegistryError::Data("the freeze was not recorded".to_string()))
    }

    /// Lifts the freeze, journalling it; answers the freeze that was lifted (`None`:
    /// there was none, and nothing was written).
    pub async fn lift_freeze(&self, actor: &Actor) -> Result<Option<FreezeRecord>, RegistryError> {
        let was = self.freeze().await?;
        if was.is_none() {
            return Ok(None);
        }
        let _hold = self.hold();
        let _write = self.write_lock().await;
        let deleted = on_db!(&self.db, |pool, dl| {
            let mut tx = pool.begin_write().await?;
            let deleted = sqlx::query("DELETE FROM \"freeze\" WHERE id = 1").execute(&mut *tx).await?.rows_affected();
            if deleted > 0 {
                let data = serde_json::json!({ "by": actor.name, "frontend": actor.frontend });
                sqlx::query(
                    &dl.sql("INSERT INTO events (deployment_id, at, kind, data) VALUES (NULL, ?, 'unfreeze', ?)"),
                )
                .bind(to_millis(Utc::now()))
                .bind(data.to_string())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            deleted
        });
        Ok(if deleted > 0 { was } else { None })
    }
}

fn freeze_from_row(row: &impl Fetch) -> Result<FreezeRecord, RegistryError> {
    Ok(FreezeRecord {
        at: from_millis(row.int("at")?)?,
        actor: row.text("actor")?,
        frontend: row.text("frontend")?,
        reason: row.text("reason")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Role;

    #[tokio::test]
    async fn a_freeze_is_kept_once_and_lifted_with_both_in_the_event_log() {
        let reg = Registry::open_in_memory().await.unwrap();
        assert_eq!(reg.freeze().await.unwrap(), None);
        let alice = Actor::new("alice", "voice", Role::Operator);
        let f = reg.set_freeze(&alice, "stop everything").await.unwrap();
        assert_eq!((f.actor.as_str(), f.frontend.as_str(), f.reason.as_str()), ("alice", "voice", "stop everything"));
        let bob = Actor::new("bob", "tui", Role::Admin);
        let again = reg.set_freeze(&bob, "freeze").await.unwrap();
        assert_eq!(again, f, "the first freeze stands");
        assert_eq!(reg.lift_freeze(&bob).await.unwrap(), Some(f));
        assert_eq!(reg.lift_freeze(&bob).await.unwrap(), None);
        assert_eq!(reg.freeze().await.unwrap(), None);
        let far = Utc::now() + chrono::Duration::hours(1);
        let events = reg.events_between(DateTime::<Utc>::UNIX_EPOCH, far).await.unwrap();
        let kinds: Vec<(&str, &str)> =
            events.iter().map(|e| (e.kind.as_str(), e.data["by"].as_str().unwrap_or(""))).collect();
        assert_eq!(kinds, [("freeze", "alice"), ("unfreeze", "bob")]);
        assert!(reg.events_between(far, far).await.unwrap().is_empty());
    }
}
