//! Reports computed from what the registry stored, never from memory: what an operator
//! asks with "how did deployments go this month?".

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

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
}

impl Registry {
    pub async fn report(&self, since: DateTime<Utc>, until: DateTime<Utc>) -> Result<Report, RegistryError> {
        let rows = sqlx::query(
            "SELECT status, created_at, finished_at FROM deployments WHERE created_at >= ? AND created_at < ?",
        )
        .bind(to_millis(since))
        .bind(to_millis(until))
        .fetch_all(&self.pool)
        .await?;
        let mut by_status: BTreeMap<String, u64> =
            DeploymentStatus::ALL.iter().map(|s| (s.as_str().to_string(), 0)).collect();
        let mut durations = Vec::new();
        let (mut finished, mut succeeded, mut rolled_back) = (0u64, 0u64, 0u64);
        for row in &rows {
            let status: String = row.try_get("status")?;
            let status =
                DeploymentStatus::parse(&status).ok_or_else(|| RegistryError::Data(format!("status `{status}`")))?;
            *by_status.entry(status.as_str().to_string()).or_insert(0) += 1;
            if status.is_active() {
                continue;
            }
            finished += 1;
            succeeded += u64::from(status == DeploymentStatus::Succeeded);
            rolled_back += u64::from(status == DeploymentStatus::RolledBack);
            let created = from_millis(row.try_get("created_at")?)?;
            if let Some(end) = row.try_get::<Option<i64>, _>("finished_at")? {
                let secs = (from_millis(end)? - created).num_milliseconds() as f64 / 1000.0;
                durations.push(secs.max(0.0));
            }
        }
        durations.sort_by(f64::total_cmp);
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
        })
    }
}

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
