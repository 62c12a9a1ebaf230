//! The gate of a step when the extension's rollouts are judged by analysis templates
//! asked of Prometheus (`[metrics]`, see [`crate::analysis`]) instead of the built-in
//! gate: measure each template as scheduled, journal every measurement, and say
//! whether the rollout goes on, fails (and rolls back), or holds. A gate that could
//! not be measured (Prometheus down, a query refused) holds the rollout: a broken
//! metrics system says nothing about the new version, and it is never a pass.

use std::collections::BTreeMap;

use tokio::sync::watch;
use tokio::time::Instant;

use super::gate::{GateBreach, GateOutcome};
use super::journal::Event;
use super::run::Stop;
use super::{Control, Inner, OrchestrateError, PlanStep, RolloutEvent};
use crate::analysis::{self, GateRequirement, Sides, Template};
use crate::registry::{deployment_name, TargetRecord};

/// What the gate decided.
pub(super) enum Verdict {
    Continue,
    /// Roll back, with this reason.
    Fail(String),
    /// Hold for the operator, with this reason.
    Hold(String),
    /// The operator stopped the rollout while it was measured.
    Stop(Stop),
}

/// The requirements said with the rollout ("gated on p99 latency under 300 ms"), as
/// journalled in its `created` event.
async fn requirements(inner: &Inner, id: i64) -> Result<Vec<GateRequirement>, OrchestrateError> {
    let created = inner.registry.last_event(id, super::journal::kind::CREATED).await?;
    Ok(match created.as_ref().and_then(Event::of) {
        Some(Event::Created { gate, .. }) => gate,
        _ => Vec::new(),
    })
}

/// The templates that gate a rollout of `extension` with `requirements`: `None` when
/// no Prometheus is configured or none applies (the built-in gate judges then).
pub(super) fn resolve(
    inner: &Inner,
    extension: &str,
    requirements: &[GateRequirement],
) -> Result<Option<Vec<Template>>, analysis::AnalysisError> {
    if inner.prometheus.get().is_none() {
        if requirements.is_empty() {
            return Ok(None);
        }
        return Err(analysis::AnalysisError::Override(format!(
            "{} needs a metrics system: set [metrics] prometheus in the configuration",
            requirements.iter().map(GateRequirement::describe).collect::<Vec<_>>().join(", ")
        )));
    }
    let Some(fleet) = inner.fleet.get() else { return Ok(None) };
    let topo = fleet.snapshot();
    let catalog = topo.catalog();
    let listed = catalog.get(extension).map(|e| e.analysis.clone()).unwrap_or_default();
    let templates = analysis::templates_for(catalog.analysis_templates(), &listed, requirements)?;
    Ok((!templates.is_empty()).then_some(templates))
}

/// The gate in words, as plans show it: "Prometheus: error ratio limit 1% and 2x
/// baseline + 0.5%; p99 latency limit 300 ms and 1.5x baseline".
pub(super) fn describe(templates: &[Template]) -> String {
    let each: Vec<String> = templates
        .iter()
        .map(|t| match (&t.failure, &t.success) {
            (Some(f), _) => format!("{} limit {}", t.description, f.limits(t.unit, t.threshold)),
            (None, Some(s)) => format!("{} needs {}", t.description, s.limits(t.unit, t.threshold)),
            (None, None) => t.description.clone(),
        })
        .collect();
    format!("Prometheus: {}", each.join("; "))
}

/// `plan`'s steps in words, their gate the analysis templates' where they judge.
pub(super) fn describe_plan(
    inner: &Inner,
    plan: &super::Plan,
    extension: &str,
    requirements: &[GateRequirement],
) -> Vec<String> {
    let lines = plan.describe(&inner.settings);
    let Ok(Some(templates)) = resolve(inner, extension, requirements) else { return lines };
    let builtin = format!("gate: {}, against the agents not yet upgraded", super::describe_gate(&inner.settings.gate));
    let analysis = format!("gate: {}", describe(&templates));
    lines.into_iter().map(|l| l.replace(&builtin, &analysis)).collect()
}

/// The templates of deployment `id`, as [`resolve`] finds them now.
pub(super) async fn templates(
    inner: &Inner,
    id: i64,
    extension: &str,
) -> Result<Option<Vec<Template>>, OrchestrateError> {
    let said = requirements(inner, id).await?;
    resolve(inner, extension, &said).map_err(|e| OrchestrateError::InvalidPlan(e.to_string()))
}

fn regions(inner: &Inner, agents: &[String]) -> Vec<String> {
    let Some(fleet) = inner.fleet.get() else { return Vec::new() };
    let topo = fleet.snapshot();
    let mut out: Vec<String> = agents.iter().filter_map(|a| topo.agent(a).map(|a| a.region.clone())).collect();
    out.sort();
    out.dedup();
    out
}

/// "edge-13, edge-14 and 3 more".
fn few(agents: &[String]) -> String {
    crate::words::and_more(agents, 3)
}

/// Runs the gate of `step` (0-based) on the agents `reached` so far against the
/// agents still on the old version (`old`).
#[allow(clippy::too_many_arguments)]
pub(super) async fn gate(
    inner: &Inner,
    id: i64,
    step: u32,
    steps: u32,
    plan_step: Option<&PlanStep>,
    (extension, version): (&str, &str),
    (reached, old): (&[TargetRecord], &[TargetRecord]),
    templates: &[Template],
    baselines: &mut BTreeMap<String, f64>,
    control: &mut watch::Receiver<Control>,
) -> Result<Verdict, OrchestrateError> {
    let Some(prometheus) = inner.prometheus.get() else { return Ok(Verdict::Continue) };
    let canary: Vec<String> = reached.iter().map(|t| t.agent.clone()).collect();
    let baseline: Vec<String> = old.iter().map(|t| t.agent.clone()).collect();
    // The version most of the old agents run is what the new one is compared with.
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for t in old.iter().chain(reached) {
        if let Some(v) = t.previous_version.as_deref() {
            *seen.entry(v).or_default() += 1;
        }
    }
    let baseline_version = seen.into_iter().max_by_key(|(_, n)| *n).map(|(v, _)| v.to_string());
    let sides = Sides {
        extension: extension.to_string(),
        version: version.to_string(),
        canary_regions: regions(inner, &canary),
        canary,
        baseline_regions: regions(inner, &baseline),
        baseline,
        baseline_version,
    };
    let mut run = analysis::Run::new(prometheus, templates, &sides, baselines);
    let started = Instant::now();
    for (offset, which) in analysis::schedule(templates) {
        let wait = (started + offset).saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            if let Some(stop) = super::run::bake(wait, control).await {
                return Ok(Verdict::Stop(stop));
            }
        }
        for i in which {
            run.measure(i).await;
        }
        if run.decided() {
            break;
        }
    }
    let result = run.finish();
    let breaches: Vec<GateBreach> = result
        .metrics
        .iter()
        .filter(|m| m.outcome != GateOutcome::Successful)
        .filter_map(|m| {
            let t = templates.iter().find(|t| t.name == m.name)?;
            let last = m.measurements.iter().rev().find(|x| x.outcome == m.outcome)?;
            let shown = |v: f64| match t.unit {
                analysis::Unit::Ratio => v * 100.0,
                analysis::Unit::Seconds => v * 1000.0,
                analysis::Unit::Plain => v,
            };
            Some(GateBreach {
                agent: few(&sides.canary),
                metric: m.description.clone(),
                value: last.canary.map(shown).unwrap_or(f64::NAN),
                threshold: t.threshold.map(shown).unwrap_or(f64::NAN),
                baseline: last.baseline.map(shown),
                outcome: m.outcome,
            })
        })
        .collect();
    let counts: BTreeMap<String, usize> = result.counts().iter().map(|(k, v)| (k.as_str().to_string(), *v)).collect();
    inner
        .journal(
            id,
            Event::GateEvaluated {
                step: step + 1,
                passed: result.passed(),
                outcome: result.outcome,
                failed_kinds: result.failed_kinds(),
                breaches: breaches.clone(),
                unreachable: Vec::new(),
                baseline: None,
                counts,
                analysis: Some(result.clone()),
                source: Some(prometheus.url().to_string()),
            },
        )
        .await?;
    inner.emit(RolloutEvent::GateEvaluated {
        id: deployment_name(id),
        step: step as usize + 1,
        passed: result.passed(),
        outcome: result.outcome,
        breaches,
        unreachable: Vec::new(),
    });
    let pct = plan_step.map(|p| format!(" ({}%)", p.cumulative_percent)).unwrap_or_default();
    let at = format!("at step {} of {steps}{pct}", step + 1);
    Ok(match result.outcome {
        GateOutcome::Successful => Verdict::Continue,
        GateOutcome::Failed => Verdict::Fail(format!("health gate failed {at}: {}", result.describe())),
        GateOutcome::Error => Verdict::Hold(format!(
            "health gate could not be measured {at}: {}; resume to carry on or abort to roll back",
            result.describe()
        )),
        GateOutcome::Inconclusive => Verdict::Hold(format!(
            "gate inconclusive {at}: {}; resume to carry on or abort to roll back",
            result.describe()
        )),
    })
}
