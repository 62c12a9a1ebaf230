//! The health gate between steps: every agent reached so far must answer its health
//! endpoint within the thresholds. An agent that does not answer fails the gate.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::agent::AgentClient;
use crate::registry::TargetRecord;
use crate::topology::HealthThresholds;

/// One metric over its threshold on one agent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateBreach {
    pub agent: String,
    /// `error rate %`, `p95 ms`, `cpu %`, `memory %` (as [`HealthThresholds::breaches`] names them).
    pub metric: String,
    pub value: f64,
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateResult {
    pub breaches: Vec<GateBreach>,
    /// Agents whose health could not be read, with why.
    pub unreachable: Vec<(String, String)>,
}

impl GateResult {
    pub fn passed(&self) -> bool {
        self.breaches.is_empty() && self.unreachable.is_empty()
    }

    /// "error rate 12.3% > 1% on edge-19, edge-20; edge-21 did not answer (...)":
    /// each metric once, with its worst value, and the agents that breached it.
    pub fn describe(&self) -> String {
        let mut by_metric: BTreeMap<&str, (f64, f64, Vec<&str>)> = BTreeMap::new();
        for b in &self.breaches {
            let e = by_metric.entry(b.metric.as_str()).or_insert((b.value, b.threshold, Vec::new()));
            e.0 = e.0.max(b.value);
            e.2.push(b.agent.as_str());
        }
        let mut parts: Vec<String> = by_metric
            .into_iter()
            .map(|(metric, (worst, threshold, agents))| {
                let (label, unit) = metric_label(metric);
                format!("{label} {}{unit} > {}{unit} on {}", round1(worst), round1(threshold), agents.join(", "))
            })
            .collect();
        for (agent, why) in &self.unreachable {
            parts.push(format!("{agent} did not report its health ({why})"));
        }
        parts.join("; ")
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

/// Reads the health of `targets` concurrently, each read bounded by `timeout`.
pub async fn evaluate(
    client: &AgentClient,
    targets: &[TargetRecord],
    thresholds: &HealthThresholds,
    timeout: Duration,
) -> GateResult {
    let reads = targets.iter().map(|t| async move {
        let read = tokio::time::timeout(timeout, client.health(&t.endpoint)).await;
        (t.agent.clone(), read)
    });
    let mut result = GateResult { breaches: Vec::new(), unreachable: Vec::new() };
    for (agent, read) in futures::future::join_all(reads).await {
        match read {
            Ok(Ok(metrics)) => {
                for (metric, value, threshold) in thresholds.breaches(&metrics) {
                    result.breaches.push(GateBreach {
                        agent: agent.clone(),
                        metric: metric.to_string(),
                        value,
                        threshold,
                    });
                }
            }
            Ok(Err(e)) => result.unreachable.push((agent, e.to_string())),
            Err(_) => result.unreachable.push((agent, format!("no answer in {} ms", timeout.as_millis()))),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_each_metric_once_with_its_worst_value() {
        let b = |agent: &str, metric: &str, value: f64, threshold: f64| GateBreach {
            agent: agent.into(),
            metric: metric.into(),
            value,
            threshold,
        };
        let r = GateResult {
            breaches: vec![
                b("edge-19", "error rate %", 12.34, 1.0),
                b("edge-20", "error rate %", 11.0, 1.0),
                b("edge-20", "p95 ms", 612.0, 500.0),
            ],
            unreachable: vec![("edge-21".into(), "timed out".into())],
        };
        assert!(!r.passed());
        assert_eq!(
            r.describe(),
            "error rate 12.3% > 1% on edge-19, edge-20; p95 612 ms > 500 ms on edge-20; edge-21 did not report its health (timed out)"
        );
    }
}
