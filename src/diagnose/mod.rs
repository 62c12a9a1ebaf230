//! Troubleshooting from facts Parley already holds: "why is eu-west degraded?",
//! "what's wrong with edge-14?", "why did d-4 fail?".
//!
//! [`explain`] is a pure function of a topology snapshot, the metric history the
//! poller keeps and the changes the registry recorded: every line of evidence it
//! returns names where it comes from, nothing is guessed, and what cannot be known
//! from those facts is said as such. The next actions it proposes follow from the
//! evidence: a pattern that follows one version points at the rollout that brought
//! that version; one that follows a place blames no deployment.

pub mod changes;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ops::{Metric, Scope};
use crate::orchestrate::lifecycle::{self, Control};
use crate::registry::{DeploymentRecord, EventRecord};
use crate::topology::history::{MetricHistory, Sample};
use crate::topology::{AgentView, HealthThresholds, Reading, Topology};
use changes::{agent_words, Change, ChangeKind};

/// How far before a metric left its threshold a change counts as "shortly before".
pub const LEAD: chrono::Duration = chrono::Duration::minutes(30);
/// Samples a sparkline of an explanation shows.
pub const SPARK_SAMPLES: usize = 24;

/// One line of evidence and where it comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub kind: EvidenceKind,
    pub text: String,
    /// `poller history`, `topology`, `deployment journal d-1`, `routing journal v3`, ...
    pub source: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceKind {
    /// A metric out of (or within) its threshold, with its baseline and peers.
    Metric,
    /// A change recorded in the registry.
    Change,
    /// What the out-of-the-ordinary agents share: a version or a place.
    Pattern,
    /// The fleet's figures when nothing stands out.
    Figures,
}

/// What the evidence points at.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// Every agent answers and is within its thresholds.
    Ordinary,
    /// The agents out of threshold are those on one version of an extension.
    Version {
        extension: String,
        version: String,
        /// The population compared in (a region, or the fleet).
        within: String,
        /// The rollout that brought the version to them, when one did.
        #[serde(skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
    },
    /// The agents out of threshold are those of one zone (or region), whatever they run.
    Place { place: String },
    /// Out of threshold with nothing shared that the healthy agents lack.
    Outliers,
    /// Agents that do not answer (or keep changing).
    Unreachable,
    /// A deployment's own record: how it ended and why.
    Deployment { deployment: String, status: String },
}

/// One sparkline of an explanation: an agent's (or its peers' median) recent values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesLine {
    /// `edge-14`, or `peers eu-west-a (median of 5)`.
    pub label: String,
    pub suspect: bool,
    pub metric: &'static str,
    pub threshold: f64,
    pub values: Vec<f64>,
}

/// The explanation of one subject.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnosis {
    pub subject: String,
    pub finding: Finding,
    /// The first sentence of the answer.
    pub headline: String,
    pub evidence: Vec<Evidence>,
    /// What these facts cannot tell.
    pub unknown: Vec<String>,
    /// Next things to say, in order.
    pub actions: Vec<String>,
    /// The agents out of the ordinary, worst first.
    pub suspects: Vec<String>,
    /// Those they are compared with.
    pub peers: Vec<String>,
    pub series: Vec<SeriesLine>,
    pub history_since: Option<DateTime<Utc>>,
}

/// What an explanation is built from.
pub struct Facts<'a> {
    pub topo: &'a Topology,
    pub history: &'a MetricHistory,
    pub thresholds: HealthThresholds,
    /// Changes recorded over at least the history's span plus [`LEAD`].
    pub changes: &'a [Change],
    /// The deployments those changes name.
    pub deployments: &'a [DeploymentRecord],
    pub now: DateTime<Utc>,
}

/// What is asked.
pub struct Question<'a> {
    pub scope: &'a Scope,
    /// How the subject is said: "eu-west", "edge-14", "the fleet".
    pub subject: String,
    /// Only this metric ("show me the errors on edge-14").
    pub focus: Option<Metric>,
    /// Compare with the figures at this instant ("compare with yesterday").
    pub compare: Option<DateTime<Utc>>,
}

pub fn value(m: &crate::agent::protocol::Metrics, metric: Metric) -> f64 {
    match metric {
        Metric::ErrorRate => m.error_rate_pct,
        Metric::P95 => m.p95_ms,
        Metric::Cpu => m.cpu_pct,
        Metric::Memory => m.mem_pct,
    }
}

pub fn threshold(t: &HealthThresholds, metric: Metric) -> f64 {
    match metric {
        Metric::ErrorRate => t.error_rate_pct,
        Metric::P95 => t.p95_ms,
        Metric::Cpu => t.cpu_pct,
        Metric::Memory => t.mem_pct,
    }
}

/// A metric's value as replies write it: "12.3%", "0.21%", "612 ms", "43%".
pub fn show(metric: Metric, v: f64) -> String {
    match metric {
        Metric::ErrorRate if v < 1.0 => format!("{v:.2}%"),
        Metric::ErrorRate => format!("{v:.1}%"),
        Metric::P95 => format!("{v:.0} ms"),
        Metric::Cpu | Metric::Memory => format!("{v:.0}%"),
    }
}

/// `HH:MM:SS` UTC, as every time in an explanation is written.
pub fn clock(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", crate::words::either(n, one, many))
}

/// The metrics `reading` has over their thresholds, worst (relative to its threshold) first.
fn breaches(reading: &Reading, t: &HealthThresholds, focus: Option<Metric>) -> Vec<Metric> {
    let live: Vec<(Metric, f64)> = match reading {
        Reading::Live(m) => Metric::ALL.iter().map(|&k| (k, value(m, k))).collect(),
        Reading::NoTraffic { cpu_pct, mem_pct } => vec![(Metric::Cpu, *cpu_pct), (Metric::Memory, *mem_pct)],
        Reading::Stale { .. } | Reading::Never => Vec::new(),
    };
    let mut out: Vec<(Metric, f64)> = live
        .into_iter()
        .filter(|(k, v)| focus.is_none_or(|f| f == *k) && *v > threshold(t, *k))
        .map(|(k, v)| (k, v / threshold(t, k)))
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out.into_iter().map(|(k, _)| k).collect()
}

/// When the run of samples over the threshold that ends now began, and whether the
/// history began inside it (then it is only "since at least").
fn breach_start(samples: &[Sample], metric: Metric, limit: f64) -> Option<(DateTime<Utc>, bool)> {
    let mut start = None;
    for s in samples.iter().rev() {
        if s.get(metric) > limit {
            start = Some(s.at());
        } else {
            return start.map(|t| (t, false));
        }
    }
    start.map(|t| (t, true))
}

/// The agent's own median of `metric` before `before` (its baseline).
fn baseline(samples: &[Sample], metric: Metric, before: DateTime<Utc>) -> Option<f64> {
    median(samples.iter().filter(|s| s.at() < before).map(|s| s.get(metric)).collect())
}

/// The sample nearest `at`, if one is within two minutes of it.
fn sample_at(samples: &[Sample], at: DateTime<Utc>) -> Option<Sample> {
    let best = samples.iter().min_by_key(|s| (s.at() - at).num_milliseconds().abs())?;
    ((best.at() - at).num_seconds().abs() <= 120).then_some(*best)
}

struct Suspect<'a> {
    agent: &'a AgentView,
    metrics: Vec<Metric>,
}

/// Explains a scope (a region, zone, agent, or the fleet).
pub fn explain(f: &Facts, q: &Question) -> Diagnosis {
    let topo = f.topo;
    let as_of = topo.as_of();
    let scoped: Vec<&AgentView> = topo.select(q.scope).collect();
    let regions: BTreeSet<&str> = scoped.iter().map(|a| a.region.as_str()).collect();
    // Compared within the one region the question is about, or over the fleet.
    let (population, within): (Vec<&AgentView>, String) = match regions.iter().next() {
        Some(r) if regions.len() == 1 => (topo.region_agents(r).collect(), (*r).to_string()),
        _ => (topo.agents().iter().collect(), "the fleet".to_string()),
    };
    let unreachable: Vec<&AgentView> =
        scoped.iter().copied().filter(|a| !a.liveness.is_reachable() || a.flapping.is_some()).collect();
    let over = |a: &AgentView| breaches(&a.reading(as_of), &f.thresholds, q.focus);
    let pop_over: Vec<Suspect> = population
        .iter()
        .filter(|a| a.liveness.is_reachable() && a.flapping.is_none())
        .map(|a| Suspect { agent: a, metrics: over(a) })
        .filter(|s| !s.metrics.is_empty())
        .collect();
    let suspects: Vec<&Suspect> = pop_over.iter().filter(|s| s.agent.matches_scope(q.scope)).collect();
    let history_since = f.history.since();
    let mut d = Diagnosis {
        subject: q.subject.clone(),
        finding: Finding::Ordinary,
        headline: String::new(),
        evidence: Vec::new(),
        unknown: Vec::new(),
        actions: Vec::new(),
        suspects: Vec::new(),
        peers: Vec::new(),
        series: Vec::new(),
        history_since,
    };

    if scoped.is_empty() {
        d.headline = format!("No agent is in {}, so there is nothing to explain.", q.subject);
        d.actions.push("show topology".into());
        return d;
    }
    if suspects.is_empty() && unreachable.is_empty() {
        ordinary(f, q, &scoped, &mut d);
        return d;
    }

    // The metrics the suspects are over, worst first; each explained in turn.
    let mut metrics: Vec<Metric> = Vec::new();
    for s in &suspects {
        for m in &s.metrics {
            if !metrics.contains(m) {
                metrics.push(*m);
            }
        }
    }
    let lead_metric = metrics.first().copied();
    let mut starts: Vec<DateTime<Utc>> = Vec::new();
    let mut since_history = false;
    for &metric in &metrics {
        let limit = threshold(&f.thresholds, metric);
        let on: Vec<&&Suspect> = suspects.iter().filter(|s| s.metrics.contains(&metric)).collect();
        for s in on.iter().take(6) {
            let a = s.agent;
            let now_v = value(&a.metrics, metric);
            let samples = f.history.samples(a.name.as_str());
            let mut text =
                format!("{}: {} {} (threshold {})", a.name, metric.words(), show(metric, now_v), show(metric, limit));
            match breach_start(&samples, metric, limit) {
                Some((start, partial)) => {
                    starts.push(start);
                    since_history |= partial;
                    if partial {
                        text.push_str(&format!(" since at least {} (the history begins then)", clock(start)));
                    } else {
                        text.push_str(&format!(" since {}", clock(start)));
                    }
                    if let Some(b) = baseline(&samples, metric, start) {
                        text.push_str(&format!("; its own baseline before that {}", show(metric, b)));
                    }
                }
                None => text.push_str(" in its latest report"),
            }
            let peers: Vec<&AgentView> = peers_of(a, &population, &pop_over);
            let peer_values: Vec<f64> = peers.iter().filter_map(|p| reading_value(&p.reading(as_of), metric)).collect();
            if let Some(m) = median(peer_values) {
                let where_ = if peers.iter().all(|p| p.zone == a.zone) { a.zone.clone() } else { a.region.clone() };
                text.push_str(&format!("; its peers in {where_} {} (median of {})", show(metric, m), peers.len()));
            }
            d.evidence.push(Evidence { kind: EvidenceKind::Metric, text, source: "poller history, topology".into() });
        }
        if on.len() > 6 {
            d.evidence.push(Evidence {
                kind: EvidenceKind::Metric,
                text: format!("and {} more agents over the {} threshold", on.len() - 6, metric.words()),
                source: "topology".into(),
            });
        }
    }
    if since_history {
        if let Some(h) = history_since {
            d.unknown.push(format!(
                "The metric history begins at {}; whether the agents were over their thresholds before that is not known.",
                clock(h)
            ));
        }
    }
    let first_start = starts.iter().min().copied();

    // What the agents out of threshold share, among the population's.
    let pop_over_names: BTreeSet<&str> = pop_over.iter().map(|s| s.agent.name.as_str()).collect();
    let version = lead_metric.and_then(|_| version_pattern(&population, &pop_over_names, f));
    let place = place_pattern(&population, &pop_over_names, &within);
    let suspect_names: Vec<String> = suspects.iter().map(|s| s.agent.name.to_string()).collect();
    d.suspects = suspect_names.clone();
    let worst = suspects.first().map(|s| s.agent.name.to_string());

    // Changes on the out-of-threshold agents (or their regions' routing) around then.
    let touched: BTreeSet<&str> =
        pop_over_names.iter().copied().chain(unreachable.iter().map(|a| a.name.as_str())).collect();
    let their_regions: BTreeSet<&str> =
        pop_over.iter().map(|s| s.agent.region.as_str()).chain(unreachable.iter().map(|a| a.region.as_str())).collect();
    let window_from = first_start.map(|s| s - LEAD).unwrap_or(f.now - LEAD);
    let relevant: Vec<&Change> = f
        .changes
        .iter()
        .filter(|c| c.at >= window_from && c.at <= f.now)
        .filter(|c| {
            c.agents.iter().any(|a| touched.contains(a.as_str()))
                || c.regions.iter().any(|r| their_regions.contains(r.as_str()))
        })
        .collect();

    let metric_words = lead_metric.map(|m| m.words()).unwrap_or("health");
    match (&version, &place) {
        (Some(v), _) => {
            let dep = v.deployment.as_ref().and_then(|n| f.deployments.iter().find(|d| &d.name == n));
            d.finding = Finding::Version {
                extension: v.extension.clone(),
                version: v.version.clone(),
                within: within.clone(),
                deployment: v.deployment.clone(),
            };
            d.evidence.push(Evidence { kind: EvidenceKind::Pattern, text: v.text.clone(), source: "topology".into() });
            if let Some(p) = &place {
                d.evidence.push(Evidence {
                    kind: EvidenceKind::Pattern,
                    text: format!("They are also all in {}, where no agent runs another version, so the place alone cannot be ruled out.", p.place),
                    source: "topology".into(),
                });
            }
            let mut headline = format!(
                "{} {} {}: the {} out of threshold in {within} are the ones on {} {} ({})",
                q.subject,
                if suspects.len() + unreachable.len() == 1 && q.scope.first("agent").is_some() {
                    "is"
                } else {
                    "is degraded"
                },
                match first_start {
                    Some(s) if !since_history => format!("since {}", clock(s)),
                    Some(s) => format!("since at least {}", clock(s)),
                    None => "now".into(),
                },
                plural(v.on_version_over, "agent", "agents"),
                v.extension,
                v.version,
                metric_words,
            );
            if q.scope.first("agent").is_some() && suspects.len() == 1 {
                headline = format!(
                    "{} is over its {} threshold {}, like every agent on {} {} in {within}",
                    q.subject,
                    metric_words,
                    match first_start {
                        Some(s) if !since_history => format!("since {}", clock(s)),
                        Some(s) => format!("since at least {}", clock(s)),
                        None => "now".into(),
                    },
                    v.extension,
                    v.version,
                );
            }
            if let Some(dep) = dep {
                let step = relevant
                    .iter()
                    .chain(f.changes.iter().collect::<Vec<_>>().iter())
                    .find(|c| {
                        c.kind == ChangeKind::Step
                            && c.deployment.as_deref() == Some(dep.name.as_str())
                            && c.agents.iter().any(|a| pop_over_names.contains(a.as_str()))
                    })
                    .copied();
                if let Some(step) = step {
                    let gap = first_start.map(|s| s - step.at);
                    let when = match gap {
                        Some(g) if !since_history && g >= chrono::Duration::zero() => {
                            format!(", {} before it began", duration_words(g))
                        }
                        _ => String::new(),
                    };
                    headline.push_str(&format!(
                        "; {} brought it to them in {} at {}, started by {} through {}{when}",
                        dep.name,
                        step.summary
                            .split(" installed")
                            .next()
                            .unwrap_or(&step.summary)
                            .trim_start_matches(&format!("{} ", dep.name)),
                        clock(step.at),
                        dep.actor,
                        dep.frontend
                    ));
                } else {
                    headline.push_str(&format!(
                        "; {} brought it, started by {} through {}",
                        dep.name, dep.actor, dep.frontend
                    ));
                }
                let undo =
                    if lifecycle::admits(dep, Control::Rollback).is_ok() { Control::Rollback } else { Control::Abort };
                d.actions.push(undo.utterance(&dep.name));
                d.actions.push(Control::Show.utterance(&dep.name));
            } else {
                d.unknown.push(format!(
                    "No rollout recorded here brought {} {} to these agents, so who installed it is not known.",
                    v.extension, v.version
                ));
            }
            d.headline = format!("{headline}.");
            d.peers = v.others.clone();
            if let (Some(w), Some(m)) = (&worst, lead_metric) {
                d.actions.push(focus_utterance(m, w));
            }
        }
        (None, Some(p)) => {
            d.finding = Finding::Place { place: p.place.clone() };
            d.evidence.push(Evidence { kind: EvidenceKind::Pattern, text: p.text.clone(), source: "topology".into() });
            d.evidence.push(Evidence {
                kind: EvidenceKind::Pattern,
                text: "No version sets them apart: the agents out of threshold run the same versions as agents that are not.".into(),
                source: "topology".into(),
            });
            let since = match first_start {
                Some(s) if !since_history => format!("since {}", clock(s)),
                Some(s) => format!("since at least {}", clock(s)),
                None => "now".into(),
            };
            d.headline = format!(
                "{} {}: {} of {} is over its {} threshold {since}, whatever it runs; it follows the place, not a version.",
                q.subject,
                if q.scope.first("agent").is_some() { "is affected by its zone" } else { "is degraded" },
                if p.all { "every agent" } else { "most agents" },
                p.place,
                metric_words
            );
            d.peers = p.others.clone();
            if let (Some(w), Some(m)) = (&worst, lead_metric) {
                d.actions.push(focus_utterance(m, w));
            }
            d.actions.push(format!("how healthy is {}?", p.place));
            d.actions.push(format!("what changed on {} today?", p.place));
        }
        (None, None) if !suspects.is_empty() => {
            d.finding = Finding::Outliers;
            d.evidence.push(Evidence {
                kind: EvidenceKind::Pattern,
                text: format!(
                    "No version or place sets {} apart from the agents within their thresholds in {within}.",
                    crate::words::either(suspects.len(), "it", "them")
                ),
                source: "topology".into(),
            });
            d.headline = format!(
                "{} {}: {} over the {} threshold ({}), and nothing it shares with others explains it.",
                q.subject,
                if q.scope.first("agent").is_some() { "is an outlier" } else { "is degraded" },
                plural(suspects.len(), "agent is", "agents are"),
                metric_words,
                agent_words(&suspect_names),
            );
            if let (Some(w), Some(m)) = (&worst, lead_metric) {
                d.actions.push(focus_utterance(m, w));
                d.actions.push(format!("what changed on {w} today?"));
                if suspects.len() == 1 {
                    d.actions.push(format!("drain {w}"));
                }
            }
        }
        (None, None) => {
            d.finding = Finding::Unreachable;
            let names: Vec<String> = unreachable.iter().map(|a| a.name.to_string()).collect();
            d.headline = if names.len() == scoped.len() && names.len() > 1 {
                format!(
                    "{}: none of its {} agents answers (or they keep changing): {}.",
                    q.subject,
                    names.len(),
                    agent_words(&names)
                )
            } else {
                format!(
                    "{}: {} {} not answering or keep changing ({}); the rest is within its thresholds.",
                    q.subject,
                    plural(names.len(), "agent", "agents"),
                    crate::words::is_are(names.len()),
                    agent_words(&names)
                )
            };
            d.suspects = names.clone();
            if let Some(w) = names.first() {
                d.actions.push(format!("show agent {w}"));
                d.actions.push(format!("what changed on {w} today?"));
            }
        }
    }

    for a in &unreachable {
        let what = match (a.flapping, a.reported_at) {
            (Some(fl), _) => {
                format!("{} keeps changing: {} state changes in the last {} s", a.name, fl.changes, fl.window.as_secs())
            }
            (None, Some(at)) => format!(
                "{} is {} since {}; its last report was at {}",
                a.name,
                a.liveness.as_str(),
                clock(a.liveness_since),
                clock(at)
            ),
            (None, None) => format!("{} is {} and never answered", a.name, a.liveness.as_str()),
        };
        d.evidence.push(Evidence { kind: EvidenceKind::Metric, text: what, source: "topology".into() });
        d.unknown.push(format!("What {} measures now is not known: it does not answer.", a.name));
    }

    if relevant.is_empty() {
        d.evidence.push(Evidence {
            kind: EvidenceKind::Change,
            text: format!(
                "No rollout step, routing change, drain, cordon or restart touched them from {} to now.",
                clock(window_from)
            ),
            source: "deployment journal, routing journal, event log".into(),
        });
    }
    for c in relevant.iter().take(8) {
        let rel = match first_start {
            Some(s) if c.at <= s => format!(" ({} before)", duration_words(s - c.at)),
            Some(s) => format!(" ({} after it began)", duration_words(c.at - s)),
            None => String::new(),
        };
        d.evidence.push(Evidence {
            kind: EvidenceKind::Change,
            text: format!("{} {}, by {} through {}{rel}", clock(c.at), c.summary, c.actor, c.frontend),
            source: c.source.clone(),
        });
    }
    if let Some(at) = q.compare {
        compare(
            f,
            &d.suspects.iter().filter_map(|n| topo.agent(n)).collect::<Vec<_>>(),
            lead_metric.unwrap_or(Metric::ErrorRate),
            at,
            &mut d,
        );
    }
    d.unknown.push("The agents report error rate, p95 latency, CPU and memory only: what the errors are, and anything inside the agents, Parley does not see.".into());
    let series_metric = lead_metric.unwrap_or(Metric::ErrorRate);
    series(f, &d.suspects.clone(), &d.peers.clone(), series_metric, &mut d);
    d
}

/// A metric of a reading, when it has one (a drained agent has no error rate).
fn reading_value(r: &Reading, metric: Metric) -> Option<f64> {
    match (r, metric) {
        (Reading::Live(m), _) => Some(value(m, metric)),
        (Reading::NoTraffic { cpu_pct, .. }, Metric::Cpu) => Some(*cpu_pct),
        (Reading::NoTraffic { mem_pct, .. }, Metric::Memory) => Some(*mem_pct),
        _ => None,
    }
}

fn focus_utterance(m: Metric, agent: &str) -> String {
    match m {
        Metric::ErrorRate => format!("show me the errors on {agent}"),
        Metric::P95 => format!("show me the latency on {agent}"),
        Metric::Cpu => format!("show me the cpu on {agent}"),
        Metric::Memory => format!("show me the memory on {agent}"),
    }
}

/// "4 s", "3 min", "2 h".
pub fn duration_words(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    if d.num_milliseconds() < 1000 {
        "under a second".to_string()
    } else if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h", s / 3600)
    }
}

/// The agent's peers: the others of its zone that are within their thresholds, or of
/// its region when its whole zone is out.
fn peers_of<'a>(a: &AgentView, population: &[&'a AgentView], over: &[Suspect]) -> Vec<&'a AgentView> {
    let is_over = |p: &AgentView| over.iter().any(|s| s.agent.name == p.name);
    let ok = |p: &&&AgentView| p.name != a.name && p.liveness.is_reachable() && !is_over(p);
    let zone: Vec<&AgentView> = population.iter().filter(|p| p.zone == a.zone).filter(ok).copied().collect();
    if !zone.is_empty() {
        return zone;
    }
    population.iter().filter(|p| p.region == a.region).filter(ok).copied().collect()
}

struct VersionPattern {
    extension: String,
    version: String,
    on_version_over: usize,
    others: Vec<String>,
    deployment: Option<String>,
    text: String,
}

/// The extension version every out-of-threshold agent runs and no agent within its
/// thresholds on another version shares the trouble of: preferring one a recorded
/// rollout brought to them.
fn version_pattern(population: &[&AgentView], over: &BTreeSet<&str>, f: &Facts) -> Option<VersionPattern> {
    if over.is_empty() {
        return None;
    }
    let mut extensions: BTreeSet<&str> = BTreeSet::new();
    for a in population {
        extensions.extend(a.extensions.keys().map(String::as_str));
    }
    let mut found: Vec<VersionPattern> = Vec::new();
    for ext in extensions {
        // version -> (agents that answer, of them out of threshold)
        let mut by: BTreeMap<&str, (Vec<&AgentView>, usize)> = BTreeMap::new();
        for a in population.iter().filter(|a| a.liveness.is_reachable()) {
            if let Some(v) = a.extensions.get(ext) {
                let e = by.entry(v.as_str()).or_default();
                e.0.push(a);
                e.1 += usize::from(over.contains(a.name.as_str()));
            }
        }
        if by.len() < 2 {
            continue;
        }
        for (v, (agents, n_over)) in &by {
            let others_clean = by.iter().filter(|(w, _)| *w != v).all(|(_, (_, n))| *n == 0);
            if *n_over == over.len() && *n_over * 2 >= agents.len() && others_clean {
                let others: Vec<&AgentView> =
                    by.iter().filter(|(w, _)| *w != v).flat_map(|(_, (a, _))| a.iter().copied()).collect();
                let other_versions: Vec<&str> = by.keys().filter(|w| *w != v).copied().collect();
                let deployment = f
                    .changes
                    .iter()
                    .rev()
                    .filter(|c| c.kind == ChangeKind::Step && c.agents.iter().any(|a| over.contains(a.as_str())))
                    .filter_map(|c| c.deployment.as_ref())
                    .find(|name| {
                        f.deployments.iter().any(|d| &d.name == *name && d.extension == ext && d.version == *v)
                    })
                    .cloned();
                found.push(VersionPattern {
                    extension: ext.to_string(),
                    version: v.to_string(),
                    on_version_over: *n_over,
                    others: others.iter().map(|a| a.name.to_string()).collect(),
                    deployment,
                    text: format!(
                        "It follows a version: {} of the {} on {ext} {v} are out of threshold ({}); none of the {} on {} is.",
                        n_over,
                        plural(agents.len(), "agent", "agents"),
                        agent_words(&agents.iter().filter(|a| over.contains(a.name.as_str())).map(|a| a.name.to_string()).collect::<Vec<_>>()),
                        plural(others.len(), "agent", "agents"),
                        other_versions.join(" or "),
                    ),
                });
            }
        }
    }
    // A version a rollout brought beats one that was always there; then the rarest.
    found.sort_by_key(|p| (p.deployment.is_none(), p.on_version_over));
    found.into_iter().next()
}

struct PlacePattern {
    place: String,
    all: bool,
    others: Vec<String>,
    text: String,
}

/// The zone (or, over the fleet, the region) every out-of-threshold agent is in,
/// where at least half are out while another place has none out.
fn place_pattern(population: &[&AgentView], over: &BTreeSet<&str>, within: &str) -> Option<PlacePattern> {
    if over.len() < 2 {
        return None;
    }
    let key = |a: &AgentView| if within == "the fleet" { a.region.clone() } else { a.zone.clone() };
    let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for a in population.iter().filter(|a| a.liveness.is_reachable()) {
        let e = by.entry(key(a)).or_default();
        e.0 += 1;
        e.1 += usize::from(over.contains(a.name.as_str()));
    }
    let (place, (n, n_over)) = by.iter().find(|(_, (_, o))| *o == over.len())?;
    let clean: Vec<&String> = by.iter().filter(|(p, (_, o))| *p != place && *o == 0).map(|(p, _)| p).collect();
    if n_over * 2 < *n || clean.is_empty() {
        return None;
    }
    let others: Vec<String> = population
        .iter()
        .filter(|a| a.liveness.is_reachable() && key(a) != *place)
        .map(|a| a.name.to_string())
        .collect();
    Some(PlacePattern {
        place: place.clone(),
        all: n_over == n,
        others,
        text: format!(
            "It follows a place: {n_over} of the {} in {place} are out of threshold; none in {} is.",
            plural(*n, "agent", "agents"),
            clean.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(" or ")
        ),
    })
}

/// Nothing out of the ordinary: say so with the figures.
fn ordinary(f: &Facts, q: &Question, scoped: &[&AgentView], d: &mut Diagnosis) {
    let as_of = f.topo.as_of();
    let metrics: Vec<Metric> = match q.focus {
        Some(m) => vec![m],
        None => Metric::ALL.to_vec(),
    };
    let mut parts = Vec::new();
    for &m in &metrics {
        let vals: Vec<f64> = scoped.iter().filter_map(|a| reading_value(&a.reading(as_of), m)).collect();
        let (Some(lo), Some(hi)) = (vals.iter().copied().reduce(f64::min), vals.iter().copied().reduce(f64::max))
        else {
            continue;
        };
        let med = median(vals).unwrap_or(lo);
        parts.push(format!(
            "{} {}-{} (median {}, threshold {})",
            m.words(),
            show(m, lo),
            show(m, hi),
            show(m, med),
            show(m, threshold(&f.thresholds, m))
        ));
    }
    let n = scoped.len();
    d.finding = Finding::Ordinary;
    d.headline = format!(
        "Nothing is out of the ordinary in {}: {} answer{}, all within their thresholds.",
        q.subject,
        if n == 1 { "its agent".to_string() } else { format!("all {n} agents") },
        crate::words::verb_s(n)
    );
    d.evidence.push(Evidence {
        kind: EvidenceKind::Figures,
        text: format!("{}.", capitalise(&parts.join("; "))),
        source: "topology".into(),
    });
    let agents: BTreeSet<&str> = scoped.iter().map(|a| a.name.as_str()).collect();
    let regions: BTreeSet<&str> = scoped.iter().map(|a| a.region.as_str()).collect();
    let since = f.now - chrono::Duration::hours(1);
    let recent: Vec<&Change> = f
        .changes
        .iter()
        .filter(|c| c.at >= since)
        .filter(|c| {
            c.agents.iter().any(|a| agents.contains(a.as_str()))
                || c.regions.iter().any(|r| regions.contains(r.as_str()))
        })
        .collect();
    d.evidence.push(Evidence {
        kind: EvidenceKind::Change,
        text: match recent.last() {
            None => "No rollout step, routing change, drain, cordon or restart in the last hour.".to_string(),
            Some(c) => format!(
                "{} in the last hour, the latest at {}: {}, by {} through {}.",
                plural(recent.len(), "change", "changes"),
                clock(c.at),
                c.summary,
                c.actor,
                c.frontend
            ),
        },
        source: "deployment journal, routing journal, event log".into(),
    });
    if let Some(at) = q.compare {
        compare(f, scoped, q.focus.unwrap_or(Metric::ErrorRate), at, d);
    }
    let peers: Vec<String> = scoped.iter().take(3).map(|a| a.name.to_string()).collect();
    series(f, &peers, &[], q.focus.unwrap_or(Metric::ErrorRate), d);
    d.actions.push(if q.scope.is_fleet() {
        "what changed today?".to_string()
    } else {
        format!("what changed on {} today?", q.subject)
    });
    if q.compare.is_none() {
        d.actions.push("compare with yesterday".into());
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Figures then and now, or that the history does not reach back so far.
fn compare(f: &Facts, agents: &[&AgentView], metric: Metric, at: DateTime<Utc>, d: &mut Diagnosis) {
    let mut then = Vec::new();
    let mut now = Vec::new();
    for a in agents {
        if let Some(s) = sample_at(&f.history.samples(a.name.as_str()), at) {
            then.push(s.get(metric));
            now.push(value(&a.metrics, metric));
        }
    }
    match (median(then), median(now)) {
        (Some(t), Some(n)) => d.evidence.push(Evidence {
            kind: EvidenceKind::Metric,
            text: format!(
                "At {} the {} was {} (median of {}); now it is {}.",
                at.format("%Y-%m-%d %H:%M"),
                metric.words(),
                show(metric, t),
                plural(agents.len(), "agent", "agents"),
                show(metric, n)
            ),
            source: "poller history".into(),
        }),
        _ => d.unknown.push(format!(
            "There are no figures from {} to compare with: the metric history begins at {}.",
            at.format("%Y-%m-%d %H:%M"),
            f.history.since().map(clock).unwrap_or_else(|| "no time yet".into())
        )),
    }
}

/// Sparklines: the suspects (up to three) and their peers' median, side by side.
fn series(f: &Facts, suspects: &[String], peers: &[String], metric: Metric, d: &mut Diagnosis) {
    let limit = threshold(&f.thresholds, metric);
    for s in suspects.iter().take(3) {
        let values = f.history.recent(s, metric, SPARK_SAMPLES);
        if !values.is_empty() {
            d.series.push(SeriesLine {
                label: s.clone(),
                suspect: !peers.is_empty() || d.finding != Finding::Ordinary,
                metric: metric.as_str(),
                threshold: limit,
                values,
            });
        }
    }
    if peers.is_empty() {
        return;
    }
    let rows: Vec<Vec<f64>> =
        peers.iter().map(|p| f.history.recent(p, metric, SPARK_SAMPLES)).filter(|v| !v.is_empty()).collect();
    let n = rows.iter().map(Vec::len).min().unwrap_or(0);
    if n == 0 {
        return;
    }
    let values: Vec<f64> =
        (0..n).map(|i| median(rows.iter().map(|r| r[r.len() - n + i]).collect()).unwrap_or(0.0)).collect();
    d.series.push(SeriesLine {
        label: format!("peers (median of {})", rows.len()),
        suspect: false,
        metric: metric.as_str(),
        threshold: limit,
        values,
    });
}

/// Explains a deployment from its own record and journal, and its agents' health now.
pub fn explain_deployment(f: &Facts, dep: &DeploymentRecord, events: &[EventRecord]) -> Diagnosis {
    let mut d = Diagnosis {
        subject: dep.name.clone(),
        finding: Finding::Deployment { deployment: dep.name.clone(), status: dep.status.as_str().to_string() },
        headline: String::new(),
        evidence: Vec::new(),
        unknown: Vec::new(),
        actions: Vec::new(),
        suspects: Vec::new(),
        peers: Vec::new(),
        series: Vec::new(),
        history_since: f.history.since(),
    };
    let source = format!("deployment journal {}", dep.name);
    let status = crate::words::spaced(dep.status.as_str());
    let step = format!("step {} of {}", dep.current_step + 1, dep.step_count);
    let reason = dep.reason.clone().unwrap_or_else(|| "no reason was recorded".into());
    d.headline = format!(
        "{} ({} {} to {}, started by {} through {} at {}) {}{}: {reason}.",
        dep.name,
        dep.extension,
        dep.version,
        crate::feasibility::scope_words(&dep.scope),
        dep.actor,
        dep.frontend,
        clock(dep.created_at),
        if dep.status.is_active() { "is ".to_string() } else { String::new() },
        match dep.status {
            crate::ops::DeploymentStatus::Succeeded => {
                format!("{status} after {}", plural(dep.step_count as usize, "step", "steps"))
            }
            _ => format!("{status} at {step}"),
        }
    );
    let failed_gate =
        events.iter().rev().find(|e| e.kind == "gate_evaluated" && e.data["passed"] == serde_json::json!(false));
    if let Some(g) = failed_gate {
        let breaches = g.data["breaches"].as_array().cloned().unwrap_or_default();
        for b in breaches.iter().take(6) {
            let base = b["baseline"].as_f64().map(|v| format!(", baseline {v}")).unwrap_or_default();
            d.evidence.push(Evidence {
                kind: EvidenceKind::Metric,
                text: format!(
                    "{} at step {}: {} {} > {}{base} ({})",
                    b["agent"].as_str().unwrap_or("?"),
                    g.data["step"],
                    b["metric"].as_str().unwrap_or("?"),
                    b["value"],
                    b["threshold"],
                    b["outcome"].as_str().unwrap_or("?")
                ),
                source: format!("{source}, health gate at {}", clock(g.at)),
            });
            if let Some(a) = b["agent"].as_str() {
                if !d.suspects.iter().any(|s| s == a) {
                    d.suspects.push(a.to_string());
                }
            }
        }
    }
    for t in dep.targets.iter().filter(|t| {
        t.state == crate::registry::TargetState::Failed || t.state == crate::registry::TargetState::Unreachable
    }) {
        d.evidence.push(Evidence {
            kind: EvidenceKind::Metric,
            text: format!("{} {}: {}", t.agent, t.state.as_str(), t.detail.clone().unwrap_or_default()),
            source: source.clone(),
        });
    }
    for e in events.iter().filter(|e| {
        matches!(
            e.kind.as_str(),
            "paused" | "abort_requested" | "rollback_requested" | "rollback_started" | "finished" | "interrupted"
        )
    }) {
        let who = e.data["by"]
            .as_str()
            .map(|b| format!(" by {b} through {}", e.data["frontend"].as_str().unwrap_or("?")))
            .unwrap_or_default();
        let why = e.data["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default();
        d.evidence.push(Evidence {
            kind: EvidenceKind::Change,
            text: format!("{} {}{who}{why}", clock(e.at), crate::words::spaced(&e.kind)),
            source: source.clone(),
        });
    }
    // Its agents now.
    let as_of = f.topo.as_of();
    let mut still = Vec::new();
    for t in &dep.targets {
        if let Some(a) = f.topo.agent(&t.agent) {
            let over = breaches(&a.reading(as_of), &f.thresholds, None);
            if !over.is_empty() || !a.liveness.is_reachable() {
                still.push(a.name.to_string());
            }
        }
    }
    d.evidence.push(Evidence {
        kind: EvidenceKind::Figures,
        text: if still.is_empty() {
            format!("Now all {} of its agents answer within their thresholds.", dep.targets.len())
        } else {
            format!(
                "Now {} of its {} agents are out of threshold or not answering: {}.",
                still.len(),
                dep.targets.len(),
                agent_words(&still)
            )
        },
        source: "topology".into(),
    });
    d.actions = lifecycle::offers(dep).into_iter().map(|c| c.utterance(&dep.name)).collect();
    if let Some(a) = d.suspects.first() {
        d.actions.push(format!("what's wrong with {a}?"));
    }
    if failed_gate.is_none()
        && dep.targets.iter().all(|t| t.state != crate::registry::TargetState::Failed)
        && dep.status == crate::ops::DeploymentStatus::Failed
    {
        d.unknown
            .push("No failed health gate or install is journalled; the reason above is all that is recorded.".into());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{DeploymentStatus, Strategy, StrategyKind};
    use crate::registry::{TargetRecord, TargetState};
    use crate::topology::test_support::demo_topology;
    use crate::topology::Liveness;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs)
    }

    /// The demo fleet measured at `secs`, changed by `f`.
    fn snapshot(secs: i64, f: impl Fn(&mut AgentView)) -> Topology {
        let t = demo_topology();
        let mut agents = t.agents().to_vec();
        for a in &mut agents {
            a.reported_at = Some(at(secs));
            a.last_seen = Some(at(secs));
            f(a);
        }
        Topology::new(agents, t.catalog_arc(), Some(at(secs)))
    }

    fn deployment(agents: &[&str]) -> DeploymentRecord {
        DeploymentRecord {
            id: 1,
            name: "d-1".into(),
            extension: "auth-filter".into(),
            version: "2.1.0".into(),
            scope: Scope::region("eu-west"),
            strategy: Strategy::of(StrategyKind::Rolling),
            status: DeploymentStatus::Succeeded,
            hold: None,
            reason: None,
            actor: "alice".into(),
            frontend: "tui".into(),
            utterance: "roll out auth-filter 2.1.0 to eu-west-b".into(),
            current_step: 0,
            step_count: 1,
            created_at: at(14),
            updated_at: at(16),
            finished_at: Some(at(16)),
            targets: agents
                .iter()
                .map(|a| TargetRecord {
                    agent: a.to_string(),
                    endpoint: String::new(),
                    previous_version: Some("2.0.3".into()),
                    step: 0,
                    state: TargetState::Installed,
                    detail: None,
                })
                .collect(),
        }
    }

    #[test]
    fn a_zone_on_a_new_version_is_blamed_on_its_rollout_and_the_place_is_not_ruled_out() {
        let zone_b = ["edge-16", "edge-17", "edge-18", "core-11", "core-12", "gpu-6"];
        let bad = |a: &mut AgentView, err: f64| {
            if zone_b.contains(&a.name.as_str()) {
                a.extensions.insert("auth-filter".into(), "2.1.0".into());
                a.metrics.error_rate_pct = err;
            }
        };
        let history = MetricHistory::new();
        history.record(&snapshot(10, |a| bad(a, 0.2)));
        history.record(&snapshot(20, |a| bad(a, 6.0)));
        let topo = snapshot(30, |a| bad(a, 6.5));
        history.record(&topo);
        let step = Change {
            at: at(15),
            kind: ChangeKind::Step,
            summary: "d-1 step 1 of 1 installed auth-filter 2.1.0 on edge-16".into(),
            agents: zone_b.iter().map(|s| s.to_string()).collect(),
            regions: Vec::new(),
            deployment: Some("d-1".into()),
            actor: "alice".into(),
            frontend: "tui".into(),
            source: "deployment journal d-1".into(),
        };
        let deployments = [deployment(&zone_b)];
        let facts = Facts {
            topo: &topo,
            history: &history,
            thresholds: HealthThresholds::default(),
            changes: std::slice::from_ref(&step),
            deployments: &deployments,
            now: at(31),
        };
        let scope = Scope::region("eu-west");
        let d = explain(&facts, &Question { scope: &scope, subject: "eu-west".into(), focus: None, compare: None });
        assert_eq!(
            d.finding,
            Finding::Version {
                extension: "auth-filter".into(),
                version: "2.1.0".into(),
                within: "eu-west".into(),
                deployment: Some("d-1".into())
            }
        );
        assert_eq!(
            d.headline,
            "eu-west is degraded since 00:00:20: the 6 agents out of threshold in eu-west are the ones on auth-filter 2.1.0 \
             (error rate); d-1 brought it to them in step 1 of 1 at 00:00:15, started by alice through tui, 5 s before it began."
        );
        let texts: Vec<&str> = d.evidence.iter().map(|e| e.text.as_str()).collect();
        assert!(texts.contains(
            &"They are also all in eu-west-b, where no agent runs another version, so the place alone cannot be ruled out."
        ));
        assert!(texts.contains(
            &"edge-16: error rate 6.5% (threshold 1.0%) since 00:00:20; its own baseline before that 0.20%; its peers in eu-west 0.10% (median of 6)"
        ), "{texts:#?}");
        assert_eq!(d.actions[..2], ["roll back d-1", "show deployment d-1"]);
        assert_eq!(d.peers.len(), 6);
    }

    #[test]
    fn an_outlier_is_an_outlier_and_what_a_silent_agent_measures_is_unknown() {
        let f = |a: &mut AgentView| match a.name.as_str() {
            "edge-14" => a.metrics.cpu_pct = 95.0,
            "edge-13" => {
                a.liveness = Liveness::Down;
                a.liveness_since = at(25);
                a.reported_at = Some(at(5));
            }
            _ => {}
        };
        let history = MetricHistory::new();
        let topo = snapshot(30, f);
        history.record(&topo);
        let facts = Facts {
            topo: &topo,
            history: &history,
            thresholds: HealthThresholds::default(),
            changes: &[],
            deployments: &[],
            now: at(31),
        };
        let scope = Scope::region("eu-west");
        let d = explain(&facts, &Question { scope: &scope, subject: "eu-west".into(), focus: None, compare: None });
        assert_eq!(d.finding, Finding::Outliers);
        assert_eq!(d.suspects, ["edge-14"]);
        assert_eq!(
            d.headline,
            "eu-west is degraded: 1 agent is over the CPU threshold (edge-14), and nothing it shares with others explains it."
        );
        let texts: Vec<&str> = d.evidence.iter().map(|e| e.text.as_str()).collect();
        assert!(texts.contains(&"edge-13 is down since 00:00:25; its last report was at 00:00:05"), "{texts:#?}");
        assert!(d.unknown.contains(&"What edge-13 measures now is not known: it does not answer.".to_string()));
        assert!(d.unknown.iter().any(|u| u.starts_with("The metric history begins at 00:00:30")));
        assert_eq!(d.actions, ["show me the cpu on edge-14", "what changed on edge-14 today?", "drain edge-14"]);
        // Only the CPU counts when the question is about memory.
        let d = explain(
            &facts,
            &Question {
                scope: &Scope::region("us-east"),
                subject: "us-east".into(),
                focus: Some(Metric::Memory),
                compare: None,
            },
        );
        assert_eq!(d.finding, Finding::Ordinary);
        assert_eq!(d.evidence[0].text, "Memory 40%-40% (median 40%, threshold 85%).");
    }
}
