//! The routing table and its journal. A change is one transaction: the journal entry
//! and the new rows land together or not at all, so the table a load balancer reads
//! always has its reason on record.

use super::store::{on_db, BeginWrite as _, Fetch};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{from_millis, to_millis, Registry, RegistryError};
use crate::routing::table::{Route, RoutingTable};

/// One journalled change of the routing table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutingChange {
    /// The table's version after this change.
    pub version: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub frontend: String,
    pub kind: String,
    pub reason: String,
    pub before: RoutingTable,
    pub after: RoutingTable,
}

/// A change to record, before it has a version.
#[derive(Debug, Clone)]
pub struct NewRoutingChange<'a> {
    pub actor: &'a str,
    pub frontend: &'a str,
    pub kind: &'a str,
    pub reason: &'a str,
    pub before: &'a RoutingTable,
    pub after: &'a RoutingTable,
}

impl Registry {
    /// The stored table and its version (0 and empty when nothing was ever stored).
    pub async fn routing_table(&self) -> Result<(RoutingTable, i64, Option<DateTime<Utc>>), RegistryError> {
        let _hold = self.hold();
        // (region, serving region, weight) rows, and the latest change's (id, at).
        let (rows, last): (Vec<RouteRow>, Option<(i64, i64)>) = on_db!(&self.db, |pool, dl| {
            let rows =
                sqlx::query_as("SELECT region, serving_region, weight FROM routing ORDER BY region, serving_region")
                    .fetch_all(pool)
                    .await?;
            let last = sqlx::query_as("SELECT id, at FROM routing_changes ORDER BY id DESC LIMIT 1")
                .fetch_optional(pool)
                .await?;
            (rows, last)
        });
        let mut table = RoutingTable::default();
        for (region, serving, weight) in rows {
            let weight = u8::try_from(weight).map_err(|_| RegistryError::Data(format!("routing weight {weight}")))?;
            table.regions.entry(region).or_default().push(Route::new(serving, weight));
        }
        let (version, at) = match last {
            Some((id, at)) => (id, Some(from_millis(at)?)),
            None => (0, None),
        };
        Ok((table, version, at))
    }

    /// Journals `change` and makes its `after` the stored table; answers the new version.
    pub async fn record_routing_change(&self, change: &NewRoutingChange<'_>) -> Result<i64, RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        let json = |t: &RoutingTable| serde_json::to_string(t).map_err(|e| RegistryError::Data(e.to_string()));
        let (before, after) = (json(change.before)?, json(change.after)?);
        let id = on_db!(&self.db, |pool, dl| {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query_scalar(&dl.sql(
                "INSERT INTO routing_changes (at, actor, frontend, kind, reason, before, after) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            ))
            .bind(to_millis(Utc::now()))
            .bind(change.actor)
            .bind(change.frontend)
            .bind(change.kind)
            .bind(change.reason)
            .bind(&before)
            .bind(&after)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM routing").execute(&mut *tx).await?;
            for (region, routes) in &change.after.regions {
                for r in routes.iter().filter(|r| r.weight > 0) {
                    sqlx::query(&dl.sql("INSERT INTO routing (region, serving_region, weight) VALUES (?, ?, ?)"))
                        .bind(region)
                        .bind(&r.region)
                        .bind(i64::from(r.weight))
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
            id
        });
        Ok(id)
    }

    /// The latest `limit` changes, oldest first.
    pub async fn routing_changes(&self, limit: u32) -> Result<Vec<RoutingChange>, RegistryError> {
        let _hold = self.hold();
        on_db!(&self.db, |pool, dl| {
            let rows = sqlx::query(&dl.sql(
                "SELECT * FROM (SELECT id, at, actor, frontend, kind, reason, before, after FROM routing_changes \
                 ORDER BY id DESC LIMIT ?) AS latest ORDER BY id",
            ))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter().map(change_from_row).collect()
        })
    }
}

/// A row of the routing table: (region, serving region, weight).
type RouteRow = (String, String, i64);

fn change_from_row(row: &impl Fetch) -> Result<RoutingChange, RegistryError> {
    let table = |s: String| serde_json::from_str(&s).map_err(|e| RegistryError::Data(format!("routing table: {e}")));
    Ok(RoutingChange {
        version: row.int("id")?,
        at: from_millis(row.int("at")?)?,
        actor: row.text("actor")?,
        frontend: row.text("frontend")?,
        kind: row.text("kind")?,
        reason: row.text("reason")?,
        before: table(row.text("before")?)?,
        after: table(row.text("after")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_is_journalled_and_becomes_the_table() {
        let reg = Registry::open_in_memory().await.unwrap();
        let (t, v, _) = reg.routing_table().await.unwrap();
        assert_eq!((t, v), (RoutingTable::default(), 0));
        let before = RoutingTable::identity(&["eu-west", "us-east"]);
        let after = crate::routing::table::failover(&before, "eu-west", &[Route::new("us-east", 100)]).unwrap();
        let change = NewRoutingChange {
            actor: "alice",
            frontend: "repl",
            kind: "failover",
            reason: "fail over eu-west",
            before: &before,
            after: &after,
        };
        assert_eq!(reg.record_routing_change(&change).await.unwrap(), 1);
        let (t, v, _) = reg.routing_table().await.unwrap();
        assert_eq!((t, v), (after.clone(), 1));
        let log = reg.routing_changes(10).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!((log[0].actor.as_str(), &log[0].before, &log[0].after), ("alice", &before, &after));
    }
}
