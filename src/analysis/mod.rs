//! Health gates judged by the metrics system operators already run: analysis
//! templates ([`template`]) filled with a step's agents and versions, asked of
//! Prometheus ([`prometheus`]), and judged against thresholds or the baseline (the
//! agents not yet upgraded, same query, old version), measurement by measurement.
//!
//! A query that errors or times out is an `error` measurement, one that returns no
//! series or NaN is `inconclusive`; neither is ever a pass. Each metric tolerates as
//! many failed, error and inconclusive measurements as its template allows; the worst
//! metric over its limit is the analysis's outcome.

pub mod prometheus;
pub mod template;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use prometheus::{Auth, PromError, Prometheus, PrometheusConfig};
pub use template::{Condition, Fill, Template, TemplateFile, Unit};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    #[error("analysis template `{name}`: {reason}")]
    Template { name: String, reason: String },
    #[error("{0}")]
    Override(String),
}

pub use crate::ops::{GateRequirement, GateUnit};

/// The outcome of one measurement or of a whole gate, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateOutcome {
    Successful,
    Inconclusive,
    /// The metrics source broke: the agent did not answer its health endpoint.
    Error,
    Failed,
}

impl GateOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            GateOutcome::Successful => "successful",
            GateOutcome::Inconclusive => "inconclusive",
            GateOutcome::Error => "error",
            GateOutcome::Failed => "failed",
        }
    }
}

/// The requirement's threshold in the template's unit (seconds, a ratio).
pub fn threshold_for(r: &GateRequirement, unit: Unit) -> Result<f64, AnalysisError> {
    let t = f64::from(r.threshold);
    let wrong = |want: &str| {
        AnalysisError::Override(format!("{} is measured in {want}, so its limit cannot be {}", r.metric, r.describe()))
    };
    match (unit, r.unit) {
        (Unit::Seconds, Some(GateUnit::Ms)) => Ok(t / 1000.0),
        (Unit::Seconds, Some(GateUnit::S) | None) => Ok(t),
        (Unit::Ratio, Some(GateUnit::Percent)) => Ok(t / 100.0),
        (Unit::Plain, None) => Ok(t),
        (Unit::Seconds, _) => Err(wrong("time (ms or s)")),
        (Unit::Ratio, _) => Err(wrong("percent")),
        (Unit::Plain, _) => Err(wrong("plain numbers")),
    }
}

/// The templates a rollout of `extension` is judged by: the extension's, with the
/// rollout's own thresholds applied (a requirement naming a template the extension
/// does not list adds it).
pub fn templates_for(
    library: &[Template],
    listed: &[String],
    requirements: &[GateRequirement],
) -> Result<Vec<Template>, AnalysisError> {
    let mut out: Vec<Template> = listed.iter().filter_map(|n| library.iter().find(|t| t.name == *n).cloned()).collect();
    for r in requirements {
        let want = r.metric.to_lowercase().replace(' ', "-");
        let Some(base) = library.iter().find(|t| t.name == want) else {
            let known: Vec<&str> = library.iter().map(|t| t.name.as_str()).collect();
            return Err(AnalysisError::Override(format!(
                "there is no analysis template `{}`; the catalog has {}",
                r.metric,
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            )));
        };
        let threshold = threshold_for(r, base.unit)?;
        match out.iter_mut().find(|t| t.name == want) {
            Some(t) => t.threshold = Some(threshold),
            None => out.push(Template { threshold: Some(threshold), ..base.clone() }),
        }
    }
    Ok(out)
}

/// The two sides of a step: the upgraded agents and the ones not yet upgraded.
#[derive(Debug, Clone, Default)]
pub struct Sides {
    pub extension: String,
    pub version: String,
    pub canary: Vec<String>,
    pub canary_regions: Vec<String>,
    /// The version the baseline agents run; `None` when they ran none.
    pub baseline_version: Option<String>,
    pub baseline: Vec<String>,
    pub baseline_regions: Vec<String>,
}

/// One measurement of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    pub outcome: GateOutcome,
    /// In words: "error ratio 4.1% vs baseline 0.3%, limit 1% and 2x baseline".
    pub reason: String,
}

/// Every measurement of one metric in one gate, and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricResult {
    pub name: String,
    pub description: String,
    /// The canary's query, as sent.
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_query: Option<String>,
    /// The failure condition (or the success one) as written in the template.
    pub condition: String,
    pub measurements: Vec<Measurement>,
    pub outcome: GateOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisResult {
    pub outcome: GateOutcome,
    pub metrics: Vec<MetricResult>,
}

impl AnalysisResult {
    pub fn passed(&self) -> bool {
        self.outcome == GateOutcome::Successful
    }

    /// The metrics with the gate's outcome, each with the measurement that decided it
    /// and its query: "error ratio 4.1% vs baseline 0.3%, limit 1% and 2x baseline
    /// (2 of 2 measurements failed; query: sum(...))".
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .metrics
            .iter()
            .filter(|m| m.outcome == self.outcome || self.outcome == GateOutcome::Successful)
            .map(|m| {
                let decisive = m.measurements.iter().rev().find(|x| x.outcome == m.outcome).or(m.measurements.last());
                let n = m.measurements.iter().filter(|x| x.outcome == m.outcome).count();
                format!(
                    "{} ({n} of {} measurements {}; query: {})",
                    decisive.map(|x| x.reason.as_str()).unwrap_or("not measured"),
                    m.measurements.len(),
                    m.outcome.as_str(),
                    m.query
                )
            })
            .collect();
        if parts.is_empty() {
            return "no metric was measured".to_string();
        }
        parts.join("; ")
    }

    /// For reports: the metrics that decided the outcome.
    pub fn failed_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self
            .metrics
            .iter()
            .filter(|m| m.outcome == self.outcome && m.outcome != GateOutcome::Successful)
            .map(|m| m.description.clone())
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    pub fn counts(&self) -> BTreeMap<GateOutcome, usize> {
        let mut counts = BTreeMap::new();
        for x in self.metrics.iter().flat_map(|m| &m.measurements) {
            *counts.entry(x.outcome).or_default() += 1;
        }
        counts
    }
}

/// When each template is measured, from the start of the gate: template `i` at
/// `k * interval` for `k < count`. Merged and in order.
pub fn schedule(templates: &[Template]) -> Vec<(Duration, Vec<usize>)> {
    let mut at: BTreeMap<Duration, Vec<usize>> = BTreeMap::new();
    for (i, t) in templates.iter().enumerate() {
        for k in 0..t.count {
            at.entry(t.interval * k).or_default().push(i);
        }
    }
    at.into_iter().collect()
}

/// One running analysis: the gate of one step, measurement by measurement.
pub struct Run<'a> {
    prometheus: &'a Prometheus,
    templates: &'a [Template],
    sides: &'a Sides,
    results: Vec<MetricResult>,
    /// Each template's last baseline value, carried over from earlier steps (the last
    /// step of a canary has no agent left on the old version).
    baselines: &'a mut BTreeMap<String, f64>,
}

impl<'a> Run<'a> {
    pub fn new(
        prometheus: &'a Prometheus,
        templates: &'a [Template],
        sides: &'a Sides,
        baselines: &'a mut BTreeMap<String, f64>,
    ) -> Run<'a> {
        let results = templates
            .iter()
            .map(|t| MetricResult {
                name: t.name.clone(),
                description: t.description.clone(),
                query: t.fill(&canary_fill(sides)),
                baseline_query: baseline_fill(sides).map(|f| t.fill(&f)),
                condition: t.failure.as_ref().or(t.success.as_ref()).map(|c| c.text().to_string()).unwrap_or_default(),
                measurements: Vec::new(),
                outcome: GateOutcome::Successful,
            })
            .collect();
        Run { prometheus, templates, sides, results, baselines }
    }

    /// Measures template `i` once.
    pub async fn measure(&mut self, i: usize) {
        let templates = self.templates;
        let (Some(t), Some(r)) = (templates.get(i), self.results.get(i)) else { return };
        let wants_baseline = [&t.failure, &t.success].iter().any(|c| c.as_ref().is_some_and(Condition::uses_baseline));
        let baseline_query =
            if wants_baseline && !self.sides.baseline.is_empty() { r.baseline_query.clone() } else { None };
        let canary_query = r.query.clone();
        let (canary, baseline) = match baseline_query {
            Some(q) => {
                let (c, b) =
                    futures::future::join(self.prometheus.query(&canary_query), self.prometheus.query(&q)).await;
                (c, Some(b))
            }
            None => (self.prometheus.query(&canary_query).await, None),
        };
        let carried = self.baselines.get(&t.name).copied();
        let baseline = match baseline {
            None => Ok(carried),
            Some(Err(e)) => Err(e),
            Some(Ok(samples)) => {
                let v = samples
                    .iter()
                    .map(|s| s.value)
                    .filter(|v| v.is_finite())
                    .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
                if let Some(v) = v {
                    self.baselines.insert(t.name.clone(), v);
                }
                Ok(v.or(carried))
            }
        };
        let m = judge(t, canary, baseline);
        if let Some(r) = self.results.get_mut(i) {
            r.measurements.push(m);
            r.outcome = verdict(t, &r.measurements, false);
        }
    }

    /// Whether some metric is already decided badly (failed or error over its limit),
    /// so that the remaining measurements would change nothing.
    pub fn decided(&self) -> bool {
        self.results.iter().any(|r| matches!(r.outcome, GateOutcome::Failed | GateOutcome::Error))
    }

    pub fn finish(mut self) -> AnalysisResult {
        for (t, r) in self.templates.iter().zip(self.results.iter_mut()) {
            r.outcome = verdict(t, &r.measurements, true);
        }
        let outcome = self.results.iter().map(|r| r.outcome).max().unwrap_or(GateOutcome::Inconclusive);
        AnalysisResult { outcome, metrics: self.results }
    }
}

fn canary_fill(s: &Sides) -> Fill<'_> {
    Fill { extension: &s.extension, version: &s.version, agents: &s.canary, regions: &s.canary_regions }
}

fn baseline_fill(s: &Sides) -> Option<Fill<'_>> {
    let version = s.baseline_version.as_deref()?;
    Some(Fill { extension: &s.extension, version, agents: &s.baseline, regions: &s.baseline_regions })
}

/// The metric's outcome from its measurements so far: the worst kind over its limit.
/// Not `done`, an inconclusive run is not over yet; with none measured at the end,
/// nothing is known.
fn verdict(t: &Template, ms: &[Measurement], done: bool) -> GateOutcome {
    let n = |o: GateOutcome| ms.iter().filter(|m| m.outcome == o).count();
    if n(GateOutcome::Failed) > t.failure_limit as usize {
        GateOutcome::Failed
    } else if n(GateOutcome::Error) > t.error_limit as usize {
        GateOutcome::Error
    } else if done && (ms.is_empty() || n(GateOutcome::Inconclusive) > t.inconclusive_limit as usize) {
        GateOutcome::Inconclusive
    } else {
        GateOutcome::Successful
    }
}

/// One measurement: the canary's answer judged with the baseline's.
fn judge(
    t: &Template,
    canary: Result<Vec<prometheus::Sample>, PromError>,
    baseline: Result<Option<f64>, PromError>,
) -> Measurement {
    let at = Utc::now();
    let measured = |outcome, canary, baseline, reason| Measurement { at, canary, baseline, outcome, reason };
    let samples = match canary {
        Ok(s) => s,
        Err(e) => return measured(GateOutcome::Error, None, None, format!("{}: the query failed: {e}", t.description)),
    };
    let baseline = match baseline {
        Ok(b) => b,
        Err(e) => {
            return measured(
                GateOutcome::Error,
                None,
                None,
                format!("{}: the baseline query failed: {e}", t.description),
            )
        }
    };
    let values: Vec<f64> = samples.iter().map(|s| s.value).filter(|v| v.is_finite()).collect();
    if values.is_empty() {
        let why = if samples.is_empty() { "no series" } else { "no data (NaN)" };
        return measured(
            GateOutcome::Inconclusive,
            None,
            baseline,
            format!("{}: the query returned {why}, so there is nothing to judge", t.description),
        );
    }
    // Several series: each is judged, and the worst counts.
    let mut worst: Option<(GateOutcome, f64)> = None;
    for v in values {
        let o = outcome(t, v, baseline);
        if worst.is_none_or(|(w, _)| o > w) {
            worst = Some((o, v));
        }
    }
    let Some((o, v)) = worst else { return measured(GateOutcome::Inconclusive, None, baseline, String::new()) };
    let base = match baseline {
        Some(b) => format!(" vs baseline {}", t.unit.show(b)),
        None => String::new(),
    };
    let limit = match (&t.failure, &t.success) {
        (Some(f), _) => format!(", limit {}", f.limits(t.unit, t.threshold)),
        (None, Some(s)) => format!(", needs {}", s.limits(t.unit, t.threshold)),
        (None, None) => String::new(),
    };
    let tail = match o {
        GateOutcome::Inconclusive if baseline.is_none() => " (no baseline to compare with)",
        GateOutcome::Inconclusive => " (neither condition holds)",
        _ => "",
    };
    measured(o, Some(v), baseline, format!("{} {}{base}{limit}{tail}", t.description, t.unit.show(v)))
}

fn outcome(t: &Template, value: f64, baseline: Option<f64>) -> GateOutcome {
    let v = template::Values { value, baseline, threshold: t.threshold };
    let failure = t.failure.as_ref().map(|c| c.holds(&v));
    let success = t.success.as_ref().map(|c| c.holds(&v));
    match (failure, success) {
        (Some(Some(true)), _) => GateOutcome::Failed,
        (Some(None), _) => GateOutcome::Inconclusive,
        (_, Some(Some(true))) => GateOutcome::Successful,
        (_, Some(None)) => GateOutcome::Inconclusive,
        (Some(Some(false)), None) => GateOutcome::Successful,
        (Some(Some(false)), Some(Some(false))) => GateOutcome::Inconclusive,
        (None, Some(Some(false))) => GateOutcome::Failed,
        (None, None) => GateOutcome::Inconclusive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(failure: Option<&str>, success: Option<&str>) -> Template {
        Template::from_file(TemplateFile {
            name: "error-ratio".into(),
            description: None,
            query: r#"sum(rate(e{version="{version}",agent=~"{agents}"}[{window}]))"#.into(),
            unit: Unit::Ratio,
            threshold: Some(0.01),
            success: success.map(String::from),
            failure: failure.map(String::from),
            count: 2,
            interval: Some("5s".into()),
            window: None,
            failure_limit: 0,
            inconclusive_limit: 0,
            error_limit: 0,
        })
        .unwrap()
    }

    fn sample(v: f64) -> Vec<prometheus::Sample> {
        vec![prometheus::Sample { labels: BTreeMap::new(), value: v }]
    }

    #[test]
    fn a_measurement_names_the_value_the_baseline_and_the_limit() {
        let t = template(Some("value > threshold and value > 2 * baseline"), None);
        let m = judge(&t, Ok(sample(0.041)), Ok(Some(0.003)));
        assert_eq!(m.outcome, GateOutcome::Failed);
        assert_eq!(m.reason, "error ratio 4.1% vs baseline 0.3%, limit 1% and 2x baseline");
        let m = judge(&t, Ok(sample(0.002)), Ok(Some(0.003)));
        assert_eq!(m.outcome, GateOutcome::Successful);
        let m = judge(&t, Ok(sample(0.041)), Ok(None));
        assert_eq!(
            (m.outcome, m.reason.as_str()),
            (GateOutcome::Inconclusive, "error ratio 4.1%, limit 1% and 2x baseline (no baseline to compare with)")
        );
    }

    #[test]
    fn errors_and_missing_data_never_pass() {
        let t = template(Some("value > threshold"), Some("value <= threshold"));
        let down = PromError::Unreachable { url: "http://127.0.0.1:9".into(), reason: "connection refused".into() };
        let m = judge(&t, Err(down.clone()), Ok(None));
        assert_eq!(m.outcome, GateOutcome::Error);
        assert!(m.reason.contains("the query failed: Prometheus at http://127.0.0.1:9 is unreachable"), "{}", m.reason);
        assert_eq!(judge(&t, Ok(vec![]), Ok(None)).outcome, GateOutcome::Inconclusive);
        assert!(judge(&t, Ok(vec![]), Ok(None)).reason.contains("returned no series"));
        assert_eq!(judge(&t, Ok(sample(f64::NAN)), Ok(None)).outcome, GateOutcome::Inconclusive);
        assert_eq!(judge(&t, Ok(sample(0.001)), Err(down)).outcome, GateOutcome::Error);
        // Only a success condition: not meeting it fails.
        let t = template(None, Some("value <= threshold"));
        assert_eq!(judge(&t, Ok(sample(0.02)), Ok(None)).outcome, GateOutcome::Failed);
        // Both conditions, neither holds: inconclusive.
        let t = template(Some("value > 2 * threshold"), Some("value <= threshold"));
        assert_eq!(judge(&t, Ok(sample(0.015)), Ok(None)).outcome, GateOutcome::Inconclusive);
    }

    #[test]
    fn limits_decide_the_metric_and_the_worst_metric_the_gate() {
        let mut t = template(Some("value > threshold"), None);
        let at = Utc::now();
        let m = |o| Measurement { at, canary: None, baseline: None, outcome: o, reason: String::new() };
        use GateOutcome::*;
        assert_eq!(verdict(&t, &[m(Successful), m(Failed)], true), Failed);
        t.failure_limit = 1;
        assert_eq!(verdict(&t, &[m(Successful), m(Failed)], true), Successful);
        assert_eq!(verdict(&t, &[m(Inconclusive), m(Successful)], false), Successful, "not over yet");
        assert_eq!(verdict(&t, &[m(Inconclusive), m(Successful)], true), Inconclusive);
        assert_eq!(verdict(&t, &[m(Error)], true), Error);
        assert_eq!(verdict(&t, &[], true), Inconclusive, "nothing measured is no pass");
    }

    #[test]
    fn a_rollouts_threshold_replaces_the_templates_in_its_unit() {
        let mut p99 = template(Some("value > threshold"), None);
        p99.name = "p99-latency".into();
        p99.unit = Unit::Seconds;
        let library = vec![template(Some("value > threshold"), None), p99];
        let listed = vec!["error-ratio".to_string()];
        let req = GateRequirement { metric: "p99 latency".into(), threshold: 300, unit: Some(GateUnit::Ms) };
        let ts = templates_for(&library, &listed, std::slice::from_ref(&req)).unwrap();
        assert_eq!(
            ts.iter().map(|t| (t.name.as_str(), t.threshold)).collect::<Vec<_>>(),
            [("error-ratio", Some(0.01)), ("p99-latency", Some(0.3))]
        );
        let bad = GateRequirement { metric: "p99-latency".into(), threshold: 3, unit: Some(GateUnit::Percent) };
        assert!(templates_for(&library, &listed, &[bad]).unwrap_err().to_string().contains("measured in time"));
        let unknown = GateRequirement { metric: "p42".into(), threshold: 3, unit: None };
        assert!(templates_for(&library, &listed, &[unknown])
            .unwrap_err()
            .to_string()
            .contains("no analysis template `p42`; the catalog has error-ratio, p99-latency"));
    }

    #[test]
    fn measurements_are_scheduled_per_template() {
        let mut a = template(Some("value > threshold"), None);
        a.count = 3;
        a.interval = Duration::from_secs(2);
        let mut b = a.clone();
        b.count = 2;
        b.interval = Duration::from_secs(3);
        let s = schedule(&[a, b]);
        let secs: Vec<(u64, Vec<usize>)> = s.into_iter().map(|(d, i)| (d.as_secs(), i)).collect();
        assert_eq!(secs, [(0, vec![0, 1]), (2, vec![0]), (3, vec![1]), (4, vec![0])]);
    }
}
