//! The health gate between steps. Every agent reached so far is measured on four
//! metrics (error rate, p95 latency, CPU, memory) and each measurement is judged
//! against two thresholds: the absolute one (defaults 1%, 500 ms, 80%, 85%) and the
//! baseline, what the agents not yet upgraded show at the same moment plus a
//! tolerance. A new version is blamed only when it is worse than both: over the
//! absolute limit while the old version is fine is a failure; over it while the old
//! version is just as bad says nothing about the new one and is inconclusive.
//!
//! Each measurement is successful, failed, inconclusive (no data, or between the two
//! thresholds: over the absolute one, within the baseline's) or an error (the agent's health endpoint did not answer). Each outcome
//! has its own limit of tolerated measurements; the worst outcome over its limit is
//! the gate's outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::protocol::Metrics;
use crate::agent::AgentClient;
/// The outcome is the analysis layer's type: a template's measurement and the
/// built-in gate judge on the same scale.
pub use crate::analysis::GateOutcome;
use crate::registry::TargetRecord;
use crate::topology::HealthThresholds;

/// How many measurements of each kind a gate tolerates before that outcome is the
/// gate's. Zero everywhere: any bad measurement counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GateLimits {
    pub failed: usize,
    pub error: usize,
    pub inconclusive: usize,
}

/// How far above the baseline a metric may be before it counts as a regression:
/// `baseline * (1 + relative) + absolute`. The absolute part keeps tiny baselines
/// (an error rate of 0.05%) from turning noise into a regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    pub relative: f64,
    pub error_rate_pct: f64,
    pub p95_ms: f64,
    pub cpu_pct: f64,
    pub mem_pct: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Tolerance { relative: 0.5, error_rate_pct: 0.5, p95_ms: 50.0, cpu_pct: 10.0, mem_pct: 10.0 }
    }
}

/// Everything a gate judges with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GateSpec {
    pub thresholds: HealthThresholds,
    pub tolerance: Tolerance,
    pub limits: GateLimits,
}

/// One metric of one agent that was not successful.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateBreach {
    pub agent: String,
    /// `error rate %`, `p95 ms`, `cpu %`, `memory %` (as [`HealthThresholds::breaches`] names them).
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
    /// The not-yet-upgraded agents' median for this metric, when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    pub outcome: GateOutcome,
}

/// The baseline: median of each metric over the agents not yet upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub agents: usize,
    pub metrics: Metrics,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateResult {
    pub outcome: GateOutcome,
    /// Measurements that were failed or inconclusive.
    pub breaches: Vec<GateBreach>,
    /// Agents whose health could not be read, with why (each an `error` measurement).
    pub unreachable: Vec<(String, String)>,
    pub baseline: Option<Baseline>,
    /// How many measurements had each outcome.
    pub counts: BTreeMap<GateOutcome, usize>,
}

impl GateResult {
    pub fn passed(&self) -> bool {
        self.outcome == GateOutcome::Successful
    }

    /// "error rate 12.3% > 1% (baseline 0.2%) on edge-19, edge-20; edge-21 did not
    /// answer (...)": each metric once per outcome, with its worst value.
    pub fn describe(&self) -> String {
        // (worst outcome first, metric) -> (worst value, threshold, baseline, agents)
        type Row<'a> = (f64, f64, Option<f64>, Vec<&'a str>);
        let mut by_metric: BTreeMap<(std::cmp::Reverse<GateOutcome>, &str), Row<'_>> = BTreeMap::new();
        for b in &self.breaches {
            let e = by_metric.entry((std::cmp::Reverse(b.outcome), b.metric.as_str())).or_insert((
                b.value,
                b.threshold,
                b.baseline,
                Vec::new(),
            ));
            e.0 = e.0.max(b.value);
            e.3.push(b.agent.as_str());
        }
        let mut parts: Vec<String> = by_metric
            .into_iter()
            .map(|((outcome, metric), (worst, threshold, baseline, agents))| {
                let (label, unit) = metric_label(metric);
                let base = match baseline {
                    Some(b) => format!(" (baseline {}{unit})", round1(b)),
                    None => String::new(),
                };
                let tag = if outcome.0 == GateOutcome::Inconclusive { " [inconclusive]" } else { "" };
                format!(
                    "{label} {}{unit} > {}{unit}{base} on {}{tag}",
                    round1(worst),
                    round1(threshold),
                    agents.join(", ")
                )
            })
            .collect();
        for (agent, why) in &self.unreachable {
            parts.push(format!("{agent} did not report its health ({why})"));
        }
        if parts.is_empty() && self.outcome == GateOutcome::Inconclusive {
            parts.push("no agent reported any data".to_string());
        }
        parts.join("; ")
    }

    /// The metric kinds that failed, for reports ("error rate", "unreachable").
    pub fn failed_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .breaches
            .iter()
            .filter(|b| b.outcome == self.outcome)
            .map(|b| metric_label(&b.metric).0.to_string())
            .collect();
        if !self.unreachable.is_empty() && self.outcome == GateOutcome::Error {
            kinds.push("unreachable".to_string());
        }
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

fn metric_label(metric: &str) -> (&str, &str) {
    match metric {
        "error rate %" => ("error rate", "%"),
        "p95 ms" => ("p95", " ms"),
        "cpu %" => ("cpu", "%"),
        "memory %" => ("memory", "%"),
        other => (other, ""),
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Reads the health of `agents` concurrently, each read bounded by `timeout`.
pub async fn read_all(
    client: &AgentClient,
    agents: &[TargetRecord],
    timeout: Duration,
) -> Vec<(String, Result<Metrics, String>)> {
    let reads = agents.iter().map(|t| async move {
        let read = match tokio::time::timeout(timeout, client.health(&t.endpoint)).await {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer in {} ms", timeout.as_millis())),
        };
        (t.agent.clone(), read)
    });
    futures::future::join_all(reads).await
}

/// The median of each metric over the readings that succeeded; `None` without any.
pub fn baseline(readings: &[(String, Result<Metrics, String>)]) -> Option<Baseline> {
    let ok: Vec<&Metrics> = readings.iter().filter_map(|(_, r)| r.as_ref().ok()).collect();
    if ok.is_empty() {
        return None;
    }
    let med = |f: fn(&Metrics) -> f64| {
        let mut xs: Vec<f64> = ok.iter().map(|m| f(m)).collect();
        xs.sort_by(f64::total_cmp);
        let n = xs.len();
        if n % 2 == 1 {
            xs[n / 2]
        } else {
            (xs[n / 2 - 1] + xs[n / 2]) / 2.0
        }
    };
    Some(Baseline {
        agents: ok.len(),
        metrics: Metrics {
            cpu_pct: med(|m| m.cpu_pct),
            mem_pct: med(|m| m.mem_pct),
            error_rate_pct: med(|m| m.error_rate_pct),
            p95_ms: med(|m| m.p95_ms),
        },
    })
}

/// Judges the upgraded agents' readings against the thresholds and the baseline.
pub fn judge(
    spec: &GateSpec,
    upgraded: &[(String, Result<Metrics, String>)],
    baseline: Option<Baseline>,
) -> GateResult {
    let mut counts: BTreeMap<GateOutcome, usize> = BTreeMap::new();
    let mut breaches = Vec::new();
    let mut unreachable = Vec::new();
    let t = &spec.thresholds;
    let tol = &spec.tolerance;
    for (agent, reading) in upgraded {
        let m = match reading {
            Ok(m) => m,
            Err(why) => {
                *counts.entry(GateOutcome::Error).or_default() += 1;
                unreachable.push((agent.clone(), why.clone()));
                continue;
            }
        };
        let rows: [(&str, f64, f64, Option<f64>, f64); 4] = [
            (
                "error rate %",
                m.error_rate_pct,
                t.error_rate_pct,
                baseline.map(|b| b.metrics.error_rate_pct),
                tol.error_rate_pct,
            ),
            ("p95 ms", m.p95_ms, t.p95_ms, baseline.map(|b| b.metrics.p95_ms), tol.p95_ms),
            ("cpu %", m.cpu_pct, t.cpu_pct, baseline.map(|b| b.metrics.cpu_pct), tol.cpu_pct),
            ("memory %", m.mem_pct, t.mem_pct, baseline.map(|b| b.metrics.mem_pct), tol.mem_pct),
        ];
        for (metric, value, threshold, base, slack) in rows {
            let outcome = if !value.is_finite() {
                GateOutcome::Inconclusive
            } else {
                let over_absolute = value > threshold;
                // Without a baseline (every target upgraded, or none answered) the
                // absolute threshold is all there is to judge by.
                let over_baseline = base.is_none_or(|b| value > b * (1.0 + tol.relative) + slack);
                // Under the absolute threshold is always fine: a metric drifting
                // above a tiny baseline would otherwise pause clean rollouts on noise.
                match (over_absolute, over_baseline) {
                    (true, true) => GateOutcome::Failed,
                    (true, false) => GateOutcome::Inconclusive,
                    (false, _) => GateOutcome::Successful,
                }
            };
            *counts.entry(outcome).or_default() += 1;
            if outcome != GateOutcome::Successful {
                breaches.push(GateBreach {
                    agent: agent.clone(),
                    metric: metric.to_string(),
                    value,
                    threshold,
                    baseline: base,
                    outcome,
                });
            }
        }
    }
    let over = |o: GateOutcome, limit: usize| counts.get(&o).copied().unwrap_or(0) > limit;
    let outcome = if upgraded.is_empty() {
        // Nothing was measured: no evidence either way.
        GateOutcome::Inconclusive
    } else if over(GateOutcome::Failed, spec.limits.failed) {
        GateOutcome::Failed
    } else if over(GateOutcome::Error, spec.limits.error) {
        GateOutcome::Error
    } else if over(GateOutcome::Inconclusive, spec.limits.inconclusive) {
        GateOutcome::Inconclusive
    } else {
        GateOutcome::Successful
    };
    GateResult { outcome, breaches, unreachable, baseline, counts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(err: f64, p95: f64) -> Metrics {
        Metrics { cpu_pct: 30.0, mem_pct: 40.0, error_rate_pct: err, p95_ms: p95 }
    }

    fn ok(agent: &str, metrics: Metrics) -> (String, Result<Metrics, String>) {
        (agent.to_string(), Ok(metrics))
    }

    #[test]
    fn a_spike_over_threshold_and_baseline_fails_and_names_gate_agents_and_amount() {
        let base = baseline(&[ok("core-1", m(0.2, 100.0)), ok("core-2", m(0.3, 120.0)), ok("core-3", m(0.1, 90.0))]);
        let r = judge(
            &GateSpec::default(),
            &[ok("edge-19", m(12.34, 100.0)), ok("edge-20", m(11.0, 120.0)), ok("edge-21", m(0.2, 110.0))],
            base,
        );
        assert_eq!(r.outcome, GateOutcome::Failed);
        assert_eq!(r.describe(), "error rate 12.3% > 1% (baseline 0.2%) on edge-19, edge-20");
        assert_eq!(r.failed_kinds(), ["error rate"]);
    }

    #[test]
    fn over_threshold_while_the_baseline_is_as_bad_is_inconclusive() {
        let base = baseline(&[ok("core-1", m(0.2, 600.0))]);
        let r = judge(&GateSpec::default(), &[ok("edge-1", m(0.2, 650.0))], base);
        assert_eq!(r.outcome, GateOutcome::Inconclusive);
        assert!(
            r.describe().contains("p95 650 ms > 500 ms (baseline 600 ms) on edge-1 [inconclusive]"),
            "{}",
            r.describe()
        );
    }

    #[test]
    fn worst_outcome_over_its_limit_wins() {
        let base = baseline(&[ok("core-1", m(0.2, 600.0))]);
        let readings = vec![
            ok("edge-1", m(0.2, 650.0)),
            ("edge-2".to_string(), Err("timed out".to_string())),
            ok("edge-3", m(9.0, 100.0)),
        ];
        assert_eq!(judge(&GateSpec::default(), &readings, base).outcome, GateOutcome::Failed);
        let lenient = GateSpec { limits: GateLimits { failed: 1, error: 0, inconclusive: 0 }, ..GateSpec::default() };
        let r = judge(&lenient, &readings, base);
        assert_eq!(r.outcome, GateOutcome::Error);
        assert!(r.describe().contains("edge-2 did not report its health (timed out)"));
        let more = GateSpec { limits: GateLimits { failed: 1, error: 1, inconclusive: 0 }, ..GateSpec::default() };
        assert_eq!(judge(&more, &readings, base).outcome, GateOutcome::Inconclusive);
        let all = GateSpec { limits: GateLimits { failed: 1, error: 1, inconclusive: 1 }, ..GateSpec::default() };
        assert_eq!(judge(&all, &readings, base).outcome, GateOutcome::Successful);
    }

    #[test]
    fn without_a_baseline_the_absolute_threshold_decides_and_no_data_is_inconclusive() {
        assert_eq!(judge(&GateSpec::default(), &[ok("a", m(0.5, 100.0))], None).outcome, GateOutcome::Successful);
        assert_eq!(judge(&GateSpec::default(), &[ok("a", m(1.5, 100.0))], None).outcome, GateOutcome::Failed);
        assert_eq!(judge(&GateSpec::default(), &[], None).outcome, GateOutcome::Inconclusive);
        let nan = judge(&GateSpec::default(), &[ok("a", m(f64::NAN, 100.0))], None);
        assert_eq!(nan.outcome, GateOutcome::Inconclusive);
    }
}
