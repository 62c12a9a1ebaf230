//! Reports computed from what the registry stored, never from memory: what an operator
//! asks with "how did deployments go this month?". Gate figures come from the journal's
//! `gate_evaluated` events, so a report says why rollouts stopped, not only that they did.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::store::{on_db, Fetch};
use super::{from_millis, to_millis, Registry, RegistryError};
use crate::ops::DeploymentStatus;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Deployments created in `[since, until)`.
    pub total: u64,
    /// Every status, zero included, so a table always has the same rows.
    pub by_status: BTreeMap<String, u64>,
    /// Of those, how many have finished (no longer pending, running or paused).
    pub finished: u64,
    /// Succeeded / finished; `None` when nothing finished.
    pub success_rate: Option<f64>,
    /// Rolled back / finished; `None` when nothing finished.
    pub rollback_rate: Option<f64>,
    pub median_duration_secs: Option<f64>,
    pub p95_duration_secs: Option<f64>,
    /// Health gates evaluated for those deployments, by outcome (every outcome, zero
    /// included): successful, inconclusive, error, failed.
    pub gates_by_outcome: BTreeMap<String, u64>,
    /// Gates that did not pass (failed, error or inconclusive), by the metric kind that
    /// stopped them ("error rate", "p95", "cpu", "memory", "unreachable"; "other" when
    /// the journal names none). A gate that tripped on two kinds counts under both.
    pub failed_gates_by_kind: BTreeMap<String, u64>,
    /// Deployments per UTC day of creation, by status, oldest first: every day of the
    /// window when it spans at most [`DENSE_TIMELINE_DAYS`] days (so a bar chart shows
    /// quiet days), only days with deployments otherwise.
    pub timeline: Vec<TimelineDay>,
}

/// Windows up to this many days get a row for every day in the timeline.
pub const DENSE_TIMELINE_DAYS: i64 = 92;

/// One day of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineDay {
    pub date: NaiveDate,
    pub total: u64,
    /// Only the statuses that occurred that day.
    pub by_status: BTreeMap<String, u64>,
}

impl Registry {
    pub async fn report(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Report, RegistryError> {
        let _hold = self.hold();
        // (status, created_at, finished_at) of each deployment in the window.
        let rows: Vec<(String, i64, Option<i64>)> = on_db!(&self.db, |pool, dl| {
            let rows = sqlx::query(&dl.sql(
                "SELECT status, created_at, finished_at FROM deployments WHERE created_at >= ? AND created_at < ?",
            ))
            .bind(to_millis(since))
            .bind(to_millis(until))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| Ok((r.text("status")?, r.int("created_at")?, r.opt_int("finished_at")?)))
                .collect::<Result<_, sqlx::Error>>()?
        });
        let mut by_status: BTreeMap<String, u64> =
            DeploymentStatus::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
        let mut durations = Vec::new();
        let mut days: BTreeMap<NaiveDate, TimelineDay> = BTreeMap::new();
        let (mut finished, mut succeeded, mut rolled_back) = (0u64, 0u64, 0u64);
        for (status, created, end) in &rows {
            let status =
                DeploymentStatus::parse(status).ok_or_else(|| RegistryError::Data(format!("status `{status}`")))?;
            *by_status.entry(status.as_str().to_string()).or_insert(0) += 1;
            let created = from_millis(*created)?;
            let day = days.entry(created.date_naive()).or_insert_with(|| TimelineDay {
                date: created.date_naive(),
                total: 0,
                by_status: BTreeMap::new(),
            });
            day.total += 1;
            *day.by_status.entry(status.as_str().to_string()).or_insert(0) += 1;
            if status.is_active() {
                continue;
            }
            finished += 1;
            succeeded += u64::from(status == DeploymentStatus::Succeeded);
            rolled_back += u64::from(status == DeploymentStatus::RolledBack);
            if let Some(end) = *end {
                let secs = (from_millis(end)? - created).num_milliseconds() as f64 / 1000.0;
                durations.push(secs.max(0.0));
            }
        }
        durations.sort_by(f64::total_cmp);
        let (gates_by_outcome, failed_gates_by_kind) = self.gate_counts(since, until).await?;
        let (first, last) = (since.date_naive(), until.date_naive());
        if (last - first).num_days() <= DENSE_TIMELINE_DAYS {
            for date in first.iter_days().take_while(|d| *d <= last) {
                days.entry(date).or_insert_with(|| TimelineDay { date, total: 0, by_status: BTreeMap::new() });
            }
        }
        let rate = |n: u64| (finished > 0).then(|| n as f64 / finished as f64);
        Ok(Report {
            since,
            until,
            total: rows.len() as u64,
            by_status,
            finished,
            success_rate: rate(succeeded),
            rollback_rate: rate(rolled_back),
            median_duration_secs: median(&durations),
            p95_duration_secs: percentile(&durations, 95.0),
            gates_by_outcome,
            failed_gates_by_kind,
            timeline: days.into_values().collect(),
        })
    }

    /// Gate outcomes and the failed kinds of the gates evaluated for deployments
    /// created in `[since, until)`, read from the journal.
    async fn gate_counts(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(BTreeMap<String, u64>, BTreeMap<String, u64>), RegistryError> {
        let _hold = self.hold();
        let rows: Vec<(String,)> = on_db!(&self.db, |pool, dl| {
            sqlx::query_as(&dl.sql(
                "SELECT e.data FROM events e JOIN deployments d ON d.id = e.deployment_id \
                 WHERE e.kind = 'gate_evaluated' AND d.created_at >= ? AND d.created_at < ?",
            ))
            .bind(to_millis(since))
            .bind(to_millis(until))
            .fetch_all(pool)
            .await?
        });
        let mut outcomes: BTreeMap<String, u64> = GATE_OUTCOMES.iter().map(|o| (o.to_string(), 0)).collect();
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for (data,) in rows {
            // A hand-edited or older event without the fields still counts, as "other".
            let data: serde_json::Value = serde_json::from_str(&data).unwrap_or_default();
            let outcome = data["outcome"].as_str().unwrap_or("unknown").to_string();
            let passed = outcome == "successful";
            *outcomes.entry(outcome).or_insert(0) += 1;
            if passed {
                continue;
            }
            let named: Vec<&str> = data["failed_kinds"]
                .as_array()
                .map(|a| a.iter().filter_map(|k| k.as_str()).collect())
                .unwrap_or_default();
            if named.is_empty() {
                *kinds.entry("other".to_string()).or_insert(0) += 1;
            }
            for kind in named {
                *kinds.entry(kind.to_string()).or_insert(0) += 1;
            }
        }
        Ok((outcomes, kinds))
    }
}

/// The gate outcomes as the journal spells them (`GateOutcome` in the orchestrator).
const GATE_OUTCOMES: [&str; 4] = ["successful", "inconclusive", "error", "failed"];

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => sorted.get(n / 2).copied(),
        _ => Some((sorted.get(n / 2 - 1)? + sorted.get(n / 2)?) / 2.0),
    }
}

/// Nearest-rank percentile: a value that really occurred, never an interpolation.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_nearest_rank_percentile() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), Some(3.0));
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&xs, 95.0), Some(19.0));
        assert_eq!(percentile(&[5.0], 95.0), Some(5.0));
    }
}
