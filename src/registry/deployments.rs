//! Deployments, their targets and the event log.

use super::store::{builder, on_db, BeginWrite as _, Fetch};
use chrono::Utc;

use super::records::{
    deployment_name, Admission, DeploymentFilter, DeploymentRecord, EventRecord, Hold, NewDeployment, TargetJournal,
    TargetRecord,
};
use super::{from_millis, to_millis, Registry, RegistryError, TargetState};
use crate::ops::DeploymentStatus;

/// How the reason of a queued deployment starts, for people (the state is its [`Hold`]).
pub const QUEUED_BEHIND: &str = "queued behind";

/// How a queued deployment's wait is journalled: the row (`kind`, `data`) of its
/// `queued` event, given the name of the deployment it waits behind. The journal's
/// events are the orchestrator's types (`orchestrate::journal::Event::Queued`),
/// which the registry below it does not know, so the caller hands the row over.
pub type QueuedRow<'a> = &'a (dyn Fn(&str) -> (String, serde_json::Value) + Sync);

const DEPLOYMENT_COLUMNS: &str = "id, extension, version, scope, strategy, status, hold, reason, actor_name, \
     actor_frontend, utterance, current_step, step_count, created_at, updated_at, finished_at";

/// Inserts a deployment and its targets in the open transaction `$tx` (of either
/// store, `$dl` its dialect); evaluates to the new id. Ids come from the store's
/// own counter (AUTOINCREMENT, or an identity column), so no two inserts, whichever
/// server makes them, get the same `d-<id>`.
macro_rules! insert_deployment {
    ($tx:ident, $dl:ident, $new:expr, $queued:expr) => {{
        let new: &NewDeployment = $new;
        let queued: Option<&(String, Hold)> = $queued;
        let (reason, hold) = match queued {
            Some((reason, hold)) => (Some(reason.as_str()), Some(json_text(hold)?)),
            None => (None, None),
        };
        let now = to_millis(Utc::now());
        let scope = json_text(&new.scope)?;
        let strategy = json_text(&new.strategy)?;
        let finished = (!new.status.is_active()).then_some(now);
        let id: i64 = sqlx::query_scalar(&$dl.sql(
            "INSERT INTO deployments (extension, version, scope, strategy, status, hold, reason, actor_name, \
             actor_frontend, utterance, current_step, step_count, created_at, updated_at, finished_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?) RETURNING id",
        ))
        .bind(&new.extension)
        .bind(&new.version)
        .bind(scope)
        .bind(strategy)
        .bind(new.status.as_str())
        .bind(hold)
        .bind(reason)
        .bind(&new.actor.name)
        .bind(&new.actor.frontend)
        .bind(&new.utterance)
        .bind(i64::from(new.step_count))
        .bind(now)
        .bind(now)
        .bind(finished)
        .fetch_one(&mut *$tx)
        .await?;
        for t in &new.targets {
            sqlx::query(&$dl.sql(
                "INSERT INTO deployment_targets (deployment_id, agent, endpoint, previous_version, step, state) \
                 VALUES (?, ?, ?, ?, ?, 'pending')",
            ))
            .bind(id)
            .bind(&t.agent)
            .bind(&t.endpoint)
            .bind(&t.previous_version)
            .bind(i64::from(t.step))
            .execute(&mut *$tx)
            .await?;
        }
        id
    }};
}

impl Registry {
    /// Records a new deployment with its targets, in one transaction.
    ///
    /// Every write takes [`Registry::write_lock`] first, and a transaction that writes
    /// begins with the store's write lock (see [`BeginWrite`](super::store::BeginWrite):
    /// on SQLite `BEGIN IMMEDIATE` takes it up front, where the busy timeout applies,
    /// never upgrading a read it began with).
    pub async fn create_deployment(&self, new: &NewDeployment) -> Result<DeploymentRecord, RegistryError> {
        let _hold = self.hold();
        let write = self.write_lock().await;
        let id = on_db!(&self.db, |pool, dl| {
            let mut tx = pool.begin_write().await?;
            let id = insert_deployment!(tx, dl, new, None);
            tx.commit().await?;
            id
        });
        drop(write);
        self.deployment(id).await?.ok_or_else(|| RegistryError::UnknownDeployment(deployment_name(id)))
    }

    /// Records a new deployment unless one of its agents belongs to an unfinished
    /// deployment: checked and written in one transaction that holds the store's
    /// write lock (SQLite's file lock, or PostgreSQL's advisory lock shared by every
    /// server on the database), so two processes (or tasks) admitting at the same
    /// instant cannot both see the agents free. With `queue` given, an overlapping
    /// deployment is recorded pending behind the oldest one it overlaps. `events` are
    /// journalled in the same transaction (its `created` and `planned` events), so
    /// a deployment never exists without its plan.
    pub async fn admit_deployment(
        &self,
        new: &NewDeployment,
        queue: Option<QueuedRow<'_>>,
        events: &[(&str, serde_json::Value)],
    ) -> Result<Admission, RegistryError> {
        let _hold = self.hold();
        // In-process writers queue on the write lock; another process's admission
        // waits on the store's (BEGIN IMMEDIATE within the busy timeout, or the
        // advisory lock).
        let write = self.write_lock().await;
        let admitted: Result<(i64, Option<i64>), Admission> = on_db!(&self.db, |pool, dl| {
            let mut tx = pool.begin_write().await?;
            let rows: Vec<(String, i64)> = sqlx::query_as(&dl.sql(&format!(
                "SELECT t.agent, t.deployment_id FROM deployment_targets t JOIN deployments d ON d.id = t.deployment_id \
                 WHERE d.status IN ({ACTIVE}) ORDER BY d.id, t.{}",
                dl.target_order()
            )))
            .fetch_all(&mut *tx)
            .await?;
            let clash: Vec<(String, i64)> =
                rows.into_iter().filter(|(agent, _)| new.targets.iter().any(|t| t.agent == *agent)).collect();
            let blocker = clash.first().map(|(_, d)| *d);
            match (blocker, queue) {
                (Some(blocker), None) => {
                    let mut agents: Vec<String> = Vec::new();
                    for (agent, d) in clash {
                        if d == blocker && !agents.contains(&agent) {
                            agents.push(agent);
                        }
                    }
                    Err(Admission::Overlap { agents, deployment: deployment_name(blocker) })
                }
                _ => {
                    let queued = blocker.map(|b| {
                        let behind = deployment_name(b);
                        (format!("{QUEUED_BEHIND} {behind}"), Hold::Queued { behind })
                    });
                    let mut new = new.clone();
                    if queued.is_some() {
                        new.status = DeploymentStatus::Pending;
                    }
                    let id = insert_deployment!(tx, dl, &new, queued.as_ref());
                    let at = to_millis(Utc::now());
                    let behind = blocker.zip(queue).map(|(b, row)| row(&deployment_name(b)));
                    let rows = events.iter().map(|(k, v)| (k.to_string(), v.clone())).chain(behind);
                    for (kind, data) in rows {
                        sqlx::query(&dl.sql("INSERT INTO events (deployment_id, at, kind, data) VALUES (?, ?, ?, ?)"))
                            .bind(id)
                            .bind(at)
                            .bind(kind)
                            .bind(data.to_string())
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    Ok((id, blocker))
                }
            }
        });
        drop(write);
        let (id, blocker) = match admitted {
            Ok(admitted) => admitted,
            Err(overlap) => return Ok(overlap),
        };
        let record = self.deployment(id).await?.ok_or_else(|| RegistryError::UnknownDeployment(deployment_name(id)))?;
        Ok(match blocker {
            Some(b) => Admission::Queued { record, behind: deployment_name(b) },
            None => Admission::Created(record),
        })
    }

    /// Sets the status and its reason, and lifts any hold. A terminal status stamps
    /// `finished_at`; an active one clears it (a retried or resumed deployment is not
    /// finished).
    pub async fn set_status(
        &self,
        id: i64,
        status: DeploymentStatus,
        reason: Option<&str>,
    ) -> Result<(), RegistryError> {
        self.write_status(id, status, None, reason).await
    }

    /// Holds the deployment: `status` (pending or paused) with why it waits, and
    /// the reason that says so to people.
    pub async fn set_held(
        &self,
        id: i64,
        status: DeploymentStatus,
        hold: &Hold,
        reason: &str,
    ) -> Result<(), RegistryError> {
        self.write_status(id, status, Some(hold), Some(reason)).await
    }

    async fn write_status(
        &self,
        id: i64,
        status: DeploymentStatus,
        hold: Option<&Hold>,
        reason: Option<&str>,
    ) -> Result<(), RegistryError> {
        let _clock = self.hold();
        let hold = hold.map(json_text).transpose()?;
        let _write = self.write_lock().await;
        let now = to_millis(Utc::now());
        let finished = (!status.is_active()).then_some(now);
        let done = on_db!(&self.db, |pool, dl| {
            sqlx::query(&dl.sql(
                "UPDATE deployments SET status = ?, hold = ?, reason = ?, updated_at = ?, finished_at = ? WHERE id = ?",
            ))
            .bind(status.as_str())
            .bind(hold)
            .bind(reason)
            .bind(now)
            .bind(finished)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        require_row(done, id)
    }

    /// Changes only the reason (progress of a rollback that runs after the status was set).
    pub async fn set_reason(&self, id: i64, reason: &str) -> Result<(), RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        let done = on_db!(&self.db, |pool, dl| {
            sqlx::query(&dl.sql("UPDATE deployments SET reason = ?, updated_at = ? WHERE id = ?"))
                .bind(reason)
                .bind(to_millis(Utc::now()))
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        require_row(done, id)
    }

    pub async fn set_current_step(&self, id: i64, step: u32) -> Result<(), RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        let done = on_db!(&self.db, |pool, dl| {
            sqlx::query(&dl.sql("UPDATE deployments SET current_step = ?, updated_at = ? WHERE id = ?"))
                .bind(i64::from(step))
                .bind(to_millis(Utc::now()))
                .bind(id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        require_row(done, id)
    }

    /// Updates one agent of a deployment.
    pub async fn set_target_state(
        &self,
        id: i64,
        agent: &str,
        state: TargetState,
        detail: Option<&str>,
    ) -> Result<(), RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        let done = on_db!(&self.db, |pool, dl| {
            sqlx::query(
                &dl.sql("UPDATE deployment_targets SET state = ?, detail = ? WHERE deployment_id = ? AND agent = ?"),
            )
            .bind(state.as_str())
            .bind(detail)
            .bind(id)
            .bind(agent)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if done == 0 {
            return Err(RegistryError::UnknownDeployment(format!("{} (agent {agent})", deployment_name(id))));
        }
        Ok(())
    }

    /// Records the version an agent runs before this deployment (a queued deployment
    /// learns it when it starts).
    pub async fn set_target_previous(&self, id: i64, agent: &str, previous: Option<&str>) -> Result<(), RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        on_db!(&self.db, |pool, dl| {
            sqlx::query(
                &dl.sql("UPDATE deployment_targets SET previous_version = ? WHERE deployment_id = ? AND agent = ?"),
            )
            .bind(previous)
            .bind(id)
            .bind(agent)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Puts every target that is not in `keep` back to pending (a retry starts over on them).
    pub async fn reset_targets(&self, id: i64, keep: TargetState) -> Result<(), RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        on_db!(&self.db, |pool, dl| {
            sqlx::query(&dl.sql(
                "UPDATE deployment_targets SET state = 'pending', detail = NULL WHERE deployment_id = ? AND state != ?",
            ))
            .bind(id)
            .bind(keep.as_str())
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Appends to the event log; answers the event's id.
    pub async fn append_event(
        &self,
        deployment: Option<i64>,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<i64, RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        let id = on_db!(&self.db, |pool, dl| {
            sqlx::query_scalar(
                &dl.sql("INSERT INTO events (deployment_id, at, kind, data) VALUES (?, ?, ?, ?) RETURNING id"),
            )
            .bind(deployment)
            .bind(to_millis(Utc::now()))
            .bind(kind)
            .bind(data.to_string())
            .fetch_one(pool)
            .await?
        });
        Ok(id)
    }

    /// Journals one event and one target state change per agent of a step, in a single
    /// transaction: all of them are recorded or none is. A step over a thousand agents
    /// would otherwise cost two thousand separate synchronous commits; and since
    /// statements, not rows, are most of a commit's cost, the events go in as
    /// multi-row INSERTs (in the entries' order, which is the journal's) and the
    /// targets that end in the same state with the same detail (a whole batch that
    /// installed) as one UPDATE per chunk.
    pub async fn journal_targets(&self, id: i64, entries: &[TargetJournal<'_>]) -> Result<(), RegistryError> {
        let _hold = self.hold();
        let _write = self.write_lock().await;
        let at = to_millis(Utc::now());
        let groups = same_outcome_groups(entries);
        let data: Vec<String> = entries.iter().map(|e| e.data.to_string()).collect();
        on_db!(&self.db, |pool, dl| {
            let mut tx = pool.begin_write().await?;
            for (chunk, data) in entries.chunks(JOURNAL_CHUNK).zip(data.chunks(JOURNAL_CHUNK)) {
                let sql = format!(
                    "INSERT INTO events (deployment_id, at, kind, data) VALUES {}",
                    vec!["(?, ?, ?, ?)"; chunk.len()].join(", ")
                );
                let sql = dl.sql(&sql);
                let mut insert = sqlx::query(&sql);
                for (e, data) in chunk.iter().zip(data) {
                    insert = insert.bind(id).bind(at).bind(e.kind).bind(data.as_str());
                }
                insert.execute(&mut *tx).await?;
            }
            for ((state, detail), agents) in &groups {
                for agents in agents.chunks(JOURNAL_CHUNK) {
                    let sql = format!(
                        "UPDATE deployment_targets SET state = ?, detail = ? WHERE deployment_id = ? AND agent IN ({})",
                        vec!["?"; agents.len()].join(", ")
                    );
                    let sql = dl.sql(&sql);
                    let mut update = sqlx::query(&sql).bind(state.as_str()).bind(*detail).bind(id);
                    for agent in agents {
                        update = update.bind(*agent);
                    }
                    let done = update.execute(&mut *tx).await?;
                    if done.rows_affected() != agents.len() as u64 {
                        let missing = agents.first().copied().unwrap_or_default();
                        return Err(RegistryError::UnknownDeployment(format!(
                            "{} (agents {missing}…: {} of {} are its targets)",
                            deployment_name(id),
                            done.rows_affected(),
                            agents.len()
                        )));
                    }
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The events of one deployment, oldest first.
    pub async fn events(&self, deployment: i64) -> Result<Vec<EventRecord>, RegistryError> {
        let _hold = self.hold();
        on_db!(&self.db, |pool, dl| {
            let rows = sqlx::query(
                &dl.sql("SELECT id, deployment_id, at, kind, data FROM events WHERE deployment_id = ? ORDER BY id"),
            )
            .bind(deployment)
            .fetch_all(pool)
            .await?;
            rows.iter().map(event_from_row).collect()
        })
    }

    /// The latest event of `kind` for one deployment.
    pub async fn last_event(&self, deployment: i64, kind: &str) -> Result<Option<EventRecord>, RegistryError> {
        let _hold = self.hold();
        on_db!(&self.db, |pool, dl| {
            let row = sqlx::query(&dl.sql(
                "SELECT id, deployment_id, at, kind, data FROM events WHERE deployment_id = ? AND kind = ? \
                 ORDER BY id DESC LIMIT 1",
            ))
            .bind(deployment)
            .bind(kind)
            .fetch_optional(pool)
            .await?;
            row.as_ref().map(event_from_row).transpose()
        })
    }

    /// The latest `limit` events of any kind, oldest first.
    pub async fn recent_events(&self, limit: u32) -> Result<Vec<EventRecord>, RegistryError> {
        let _hold = self.hold();
        on_db!(&self.db, |pool, dl| {
            let rows = sqlx::query(&dl.sql(
                "SELECT * FROM (SELECT id, deployment_id, at, kind, data FROM events ORDER BY id DESC LIMIT ?) AS recent \
                 ORDER BY id",
            ))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter().map(event_from_row).collect()
        })
    }

    pub async fn deployment(&self, id: i64) -> Result<Option<DeploymentRecord>, RegistryError> {
        let _hold = self.hold();
        let record = on_db!(&self.db, |pool, dl| {
            let row = sqlx::query(&dl.sql(&format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = ?")))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(deployment_from_row).transpose()?
        });
        match record {
            Some(record) => Ok(Some(self.with_targets(record).await?)),
            None => Ok(None),
        }
    }

    /// The deployment named `d-<id>`; `None` for a name that is not one or is unknown.
    pub async fn deployment_by_name(&self, name: &str) -> Result<Option<DeploymentRecord>, RegistryError> {
        let _hold = self.hold();
        match super::deployment_id_from_name(name) {
            Some(id) => self.deployment(id).await,
            None => Ok(None),
        }
    }

    /// The most recently created deployment.
    pub async fn latest_deployment(&self) -> Result<Option<DeploymentRecord>, RegistryError> {
        let _hold = self.hold();
        let filter = DeploymentFilter { limit: Some(1), ..DeploymentFilter::default() };
        Ok(self.list_deployments(&filter).await?.into_iter().next())
    }

    /// Deployments matching the filter, newest first.
    pub async fn list_deployments(&self, filter: &DeploymentFilter) -> Result<Vec<DeploymentRecord>, RegistryError> {
        let _hold = self.hold();
        if filter.agents.as_ref().is_some_and(|a| a.is_empty()) {
            return Ok(Vec::new());
        }
        let records: Vec<DeploymentRecord> = on_db!(&self.db, |pool, dl| {
            let mut q = builder(pool, format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments d WHERE 1 = 1"));
            if let Some(status) = filter.status {
                q.push(" AND status = ").push_bind(status.as_str());
            }
            if let Some(since) = filter.since {
                q.push(" AND created_at >= ").push_bind(to_millis(since));
            }
            if let Some(agents) = &filter.agents {
                q.push(" AND EXISTS (SELECT 1 FROM deployment_targets t WHERE t.deployment_id = d.id AND t.agent IN (");
                let mut sep = q.separated(", ");
                for a in agents {
                    sep.push_bind(a.clone());
                }
                q.push("))");
            }
            q.push(" ORDER BY id DESC");
            if let Some(limit) = filter.limit {
                q.push(" LIMIT ").push_bind(i64::from(limit));
            }
            let rows = q.build().fetch_all(pool).await?;
            rows.iter().map(deployment_from_row).collect::<Result<_, _>>()?
        });
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            out.push(self.with_targets(record).await?);
        }
        Ok(out)
    }

    /// Deployments that may still change agents (pending, running, paused, rolling
    /// back), oldest first.
    pub async fn active_deployments(&self) -> Result<Vec<DeploymentRecord>, RegistryError> {
        let _hold = self.hold();
        let records: Vec<DeploymentRecord> = on_db!(&self.db, |pool, dl| {
            let rows =
                sqlx::query(&dl.sql(&format!(
                    "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE status IN ({ACTIVE}) ORDER BY id"
                )))
                .fetch_all(pool)
                .await?;
            rows.iter().map(deployment_from_row).collect::<Result<_, _>>()?
        });
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            out.push(self.with_targets(record).await?);
        }
        Ok(out)
    }

    async fn with_targets(&self, mut record: DeploymentRecord) -> Result<DeploymentRecord, RegistryError> {
        let _hold = self.hold();
        record.targets = on_db!(&self.db, |pool, dl| {
            let rows = sqlx::query(&dl.sql(&format!(
                "SELECT agent, endpoint, previous_version, step, state, detail FROM deployment_targets \
                 WHERE deployment_id = ? ORDER BY step, {}",
                dl.target_order()
            )))
            .bind(record.id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(target_from_row).collect::<Result<_, _>>()?
        });
        Ok(record)
    }
}

/// The statuses of a deployment that may still change its agents, for SQL.
const ACTIVE: &str = "'pending', 'running', 'paused', 'rolling_back'";

fn require_row(affected: u64, id: i64) -> Result<(), RegistryError> {
    if affected == 0 {
        Err(RegistryError::UnknownDeployment(deployment_name(id)))
    } else {
        Ok(())
    }
}

fn json_text<T: serde::Serialize>(value: &T) -> Result<String, RegistryError> {
    serde_json::to_string(value).map_err(|e| RegistryError::Data(e.to_string()))
}

fn step_u32(v: i64, what: &str) -> Result<u32, RegistryError> {
    u32::try_from(v).map_err(|_| RegistryError::Data(format!("{what} {v} is out of range")))
}

fn deployment_from_row(row: &impl Fetch) -> Result<DeploymentRecord, RegistryError> {
    let id: i64 = row.int("id")?;
    let name = deployment_name(id);
    let scope: String = row.text("scope")?;
    let strategy: String = row.text("strategy")?;
    let status: String = row.text("status")?;
    let hold: Option<String> = row.opt_text("hold")?;
    let finished: Option<i64> = row.opt_int("finished_at")?;
    Ok(DeploymentRecord {
        id,
        extension: row.text("extension")?,
        version: row.text("version")?,
        scope: serde_json::from_str(&scope).map_err(|e| RegistryError::Data(format!("{name} scope: {e}")))?,
        strategy: serde_json::from_str(&strategy).map_err(|e| RegistryError::Data(format!("{name} strategy: {e}")))?,
        status: DeploymentStatus::parse(&status)
            .ok_or_else(|| RegistryError::Data(format!("{name} status `{status}`")))?,
        hold: hold
            .map(|h| serde_json::from_str(&h).map_err(|e| RegistryError::Data(format!("{name} hold `{h}`: {e}"))))
            .transpose()?,
        reason: row.opt_text("reason")?,
        actor: row.text("actor_name")?,
        frontend: row.text("actor_frontend")?,
        utterance: row.text("utterance")?,
        current_step: step_u32(row.int("current_step")?, "current step")?,
        step_count: step_u32(row.int("step_count")?, "step count")?,
        created_at: from_millis(row.int("created_at")?)?,
        updated_at: from_millis(row.int("updated_at")?)?,
        finished_at: finished.map(from_millis).transpose()?,
        targets: Vec::new(),
        name,
    })
}

fn target_from_row(row: &impl Fetch) -> Result<TargetRecord, RegistryError> {
    let state: String = row.text("state")?;
    Ok(TargetRecord {
        agent: row.text("agent")?,
        endpoint: row.text("endpoint")?,
        previous_version: row.opt_text("previous_version")?,
        step: step_u32(row.int("step")?, "target step")?,
        state: TargetState::parse(&state).ok_or_else(|| RegistryError::Data(format!("target state `{state}`")))?,
        detail: row.opt_text("detail")?,
    })
}

pub(super) fn event_from_row(row: &impl Fetch) -> Result<EventRecord, RegistryError> {
    let deployment: Option<i64> = row.opt_int("deployment_id")?;
    let data: String = row.text("data")?;
    Ok(EventRecord {
        id: row.int("id")?,
        deployment: deployment.map(deployment_name),
        at: from_millis(row.int("at")?)?,
        kind: row.text("kind")?,
        // A hand-edited row should not hide the rest of the log: keep it as text.
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)),
    })
}

/// Rows per multi-row statement of [`Registry::journal_targets`]: 4 parameters per
/// event row keeps a statement far under both stores' limits on parameters
/// (SQLite's 32,766, PostgreSQL's 65,535), and long enough that a step over 1,000
/// agents is a handful of statements.
const JOURNAL_CHUNK: usize = 500;

/// Where a target ends: its state and detail.
type Outcome<'a> = (TargetState, Option<&'a str>);

/// The agents of `entries` by the state and detail they end in, each agent once
/// (its last entry wins, as the one-by-one updates it replaces did), groups in the
/// order they first appear.
fn same_outcome_groups<'a>(entries: &[TargetJournal<'a>]) -> Vec<(Outcome<'a>, Vec<&'a str>)> {
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        last.insert(e.agent, i);
    }
    let mut groups: Vec<(Outcome<'a>, Vec<&'a str>)> = Vec::new();
    let mut index: std::collections::HashMap<Outcome<'a>, usize> = std::collections::HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if last.get(e.agent) != Some(&i) {
            continue;
        }
        let key = (e.state, e.detail);
        let at = *index.entry(key).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[at].1.push(e.agent);
    }
    groups
}
