//! The metric history the poller keeps: each agent's recent measurements, so that
//! `explain` can say since when a metric is out of threshold, what the agent's own
//! baseline was before, and draw sparklines.
//!
//! Only real measurements are kept (a new `reported_at`); an agent that does not
//! answer adds nothing, so a gap in the history is a gap in what is known. Memory is
//! bounded whatever the fleet's size: a fixed budget of samples is shared by the
//! agents (48 agents keep ten minutes at full rate and a day at one per minute;
//! 10,000 keep less of both), and each sample is 24 bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::{AgentName, Topology};
use crate::agent::protocol::Metrics;
use crate::ops::Metric;

/// Samples kept over all agents, per tier (recent, per minute).
const BUDGET: usize = 200_000;
const RECENT_MAX: usize = 600;
const RECENT_MIN: usize = 30;
const MINUTES_MAX: usize = 1440;
const MINUTES_MIN: usize = 10;

/// One measurement of one agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the epoch: when the agent measured it.
    at_ms: i64,
    values: [f32; 4],
}

impl Sample {
    pub fn new(at: DateTime<Utc>, m: &Metrics) -> Sample {
        Sample {
            at_ms: at.timestamp_millis(),
            values: [m.error_rate_pct as f32, m.p95_ms as f32, m.cpu_pct as f32, m.mem_pct as f32],
        }
    }

    pub fn at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.at_ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
    }

    pub fn get(&self, metric: Metric) -> f64 {
        let i = match metric {
            Metric::ErrorRate => 0,
            Metric::P95 => 1,
            Metric::Cpu => 2,
            Metric::Memory => 3,
        };
        f64::from(self.values[i])
    }
}

#[derive(Debug, Default)]
struct Series {
    recent: VecDeque<Sample>,
    /// One sample per minute, older than what `recent` holds too.
    minutes: VecDeque<Sample>,
}

#[derive(Debug, Default)]
struct Inner {
    series: HashMap<AgentName, Series>,
    /// When the first sample was taken: before it nothing is known.
    since: Option<DateTime<Utc>>,
}

/// Every agent's recent measurements. Written by the topology handle as snapshots are
/// swapped in; read by `explain` and the TUI.
#[derive(Debug, Default)]
pub struct MetricHistory {
    inner: Mutex<Inner>,
}

impl MetricHistory {
    pub fn new() -> MetricHistory {
        MetricHistory::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A reader that panicked leaves whole samples behind: the data is still good.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds what `topo` measured that is newer than what is kept; forgets agents
    /// that left the fleet.
    pub fn record(&self, topo: &Topology) {
        let n = topo.agents().len().max(1);
        let recent_cap = (BUDGET / n).clamp(RECENT_MIN, RECENT_MAX);
        let minutes_cap = (BUDGET / n).clamp(MINUTES_MIN, MINUTES_MAX);
        let mut inner = self.lock();
        if inner.series.len() > topo.agents().len() {
            inner.series.retain(|name, _| topo.agent(name.as_str()).is_some());
        }
        let mut first: Option<DateTime<Utc>> = None;
        for a in topo.agents() {
            let Some(at) = a.reported_at else { continue };
            if !a.liveness.is_reachable() {
                continue;
            }
            let sample = Sample::new(at, &a.metrics);
            let series = inner.series.entry(a.name.clone()).or_default();
            if series.recent.back().is_some_and(|last| last.at_ms >= sample.at_ms) {
                continue;
            }
            series.recent.push_back(sample);
            while series.recent.len() > recent_cap {
                series.recent.pop_front();
            }
            let new_minute = series.minutes.back().is_none_or(|last| sample.at_ms - last.at_ms >= 60_000);
            if new_minute {
                series.minutes.push_back(sample);
                while series.minutes.len() > minutes_cap {
                    series.minutes.pop_front();
                }
            }
            first = Some(first.map_or(at, |f| f.min(at)));
        }
        if inner.since.is_none() {
            inner.since = first;
        }
    }

    /// When the history begins (`None`: nothing was measured yet).
    pub fn since(&self) -> Option<DateTime<Utc>> {
        self.lock().since
    }

    /// The agent's samples, oldest first: the per-minute ones older than the recent
    /// ones, then the recent ones.
    pub fn samples(&self, agent: &str) -> Vec<Sample> {
        let inner = self.lock();
        let Some(s) = inner.series.get(agent) else { return Vec::new() };
        let start = s.recent.front().map_or(i64::MAX, |f| f.at_ms);
        s.minutes.iter().filter(|m| m.at_ms < start).chain(s.recent.iter()).copied().collect()
    }

    /// The agent's last `n` values of `metric`, oldest first (for sparklines).
    pub fn recent(&self, agent: &str, metric: Metric, n: usize) -> Vec<f64> {
        let inner = self.lock();
        let Some(s) = inner.series.get(agent) else { return Vec::new() };
        let skip = s.recent.len().saturating_sub(n);
        s.recent.iter().skip(skip).map(|x| x.get(metric)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::test_support::demo_topology;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs)
    }

    fn snapshot(secs: i64, edge_14_err: f64) -> Topology {
        let t = demo_topology();
        let mut agents = t.agents().to_vec();
        for a in &mut agents {
            a.reported_at = Some(at(secs));
            if a.name == "edge-14" {
                a.metrics.error_rate_pct = edge_14_err;
            }
        }
        Topology::new(agents, t.catalog_arc(), Some(at(secs)))
    }

    #[test]
    fn keeps_new_measurements_only_and_per_minute_ones_beyond_the_recent() {
        let h = MetricHistory::new();
        assert_eq!(h.since(), None);
        h.record(&snapshot(10, 0.2));
        h.record(&snapshot(10, 9.0)); // the same measurement again: not a new sample
        h.record(&snapshot(11, 5.0));
        assert_eq!(h.since(), Some(at(10)));
        let s = h.samples("edge-14");
        assert_eq!(s.iter().map(|x| x.get(Metric::ErrorRate)).collect::<Vec<_>>(), [0.2f32 as f64, 5.0]);
        assert_eq!(h.recent("edge-14", Metric::ErrorRate, 1), [5.0]);
        assert!(h.samples("edge-99").is_empty());
        // 48 agents keep 600 recent samples; older ones survive once a minute.
        for i in 0..700 {
            h.record(&snapshot(12 + i, 0.1));
        }
        let s = h.samples("edge-14");
        assert_eq!(s.last().map(Sample::at), Some(at(711)));
        assert_eq!(s.first().map(Sample::at), Some(at(10)), "the first minute's sample is kept");
        assert_eq!(s.len(), 600 + 2, "600 recent and the per-minute samples before them (10 s and 70 s)");
    }
}
