//! The background tasks: a rollout (step by step: install, bake, gate) and a rollback.
//! Each journals what it is about to do before doing it, and writes the outcome.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::analysis_gate::Verdict;
use super::gate::{self, Baseline, GateOutcome};
use super::journal::{self, Event};
use super::{Control, Inner, OrchestrateError, Plan, PlanStep, RolloutEvent, Wait, WAITING_FOR_PROMOTE};
use crate::agent::AgentError;
use crate::ops::DeploymentStatus;
use crate::registry::{deployment_name, DeploymentRecord, Hold, TargetJournal, TargetRecord, TargetState};

/// The start of a target's detail when its install failed (words for people: the
/// failure budget counts failures from the journal, see [`failed_installs`]).
const INSTALL_FAILED: &str = "install failed: ";

pub(crate) enum Job {
    Rollout {
        from_step: u32,
    },
    /// Return touched agents, then set `outcome` with `reason` (or `failed` if some
    /// agent could not be returned).
    Rollback {
        outcome: DeploymentStatus,
        reason: String,
    },
}

pub(crate) async fn run_job(inner: &Arc<Inner>, id: i64, job: Job, control: watch::Receiver<Control>) {
    let result = match job {
        Job::Rollout { from_step } => rollout(inner, id, from_step, control).await,
        Job::Rollback { outcome, reason } => rollback_and_finish(inner, id, outcome, &reason).await,
    };
    if let Err(e) = result {
        // Nobody awaits this task's result: the registry and the event stream are
        // where the operator learns that it stopped.
        let reason = format!("the rollout stopped unexpectedly: {e}");
        tracing::error!(deployment = %deployment_name(id), error = %e, "rollout task failed");
        let _ = inner.registry.set_status(id, DeploymentStatus::Failed, Some(&reason)).await;
        inner.emit(RolloutEvent::Finished { id: deployment_name(id), status: DeploymentStatus::Failed, reason });
    }
    // A held rollout ends its task only when it finishes, so this is the moment the
    // deployments queued behind it may start.
    let finished = inner.registry.deployment(id).await.ok().flatten().is_some_and(|d| !d.status.is_active());
    if finished {
        if let Err(e) = inner.start_queued(Some(id)).await {
            tracing::error!(deployment = %deployment_name(id), error = %e, "could not start queued deployments");
        }
    }
}

/// The deployment, its targets at the endpoints where they answer now.
async fn load(inner: &Inner, id: i64) -> Result<DeploymentRecord, OrchestrateError> {
    let mut rec =
        inner.registry.deployment(id).await?.ok_or_else(|| OrchestrateError::UnknownDeployment(deployment_name(id)))?;
    inner.resolve_endpoints(&mut rec);
    Ok(rec)
}

/// Why a rollout stops early: the operator aborted (or switched a blue-green
/// deployment back), with the status the deployment ends in once its agents are back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stop {
    pub outcome: DeploymentStatus,
    pub reason: String,
}

/// The failure budget (per step, in all): the operator's, said with the rollout and
/// journalled in its `created` event, or the settings'. The operator's number is for
/// the whole rollout, so it is the per-step limit too.
async fn budget(inner: &Inner, id: i64) -> Result<(usize, usize), OrchestrateError> {
    let said = match inner.last(id, journal::kind::CREATED).await? {
        Some(Event::Created { max_failures, .. }) => max_failures.and_then(|n| usize::try_from(n).ok()),
        _ => None,
    };
    Ok(match said {
        Some(n) => (n, n),
        None => (inner.settings.max_failed_per_step, inner.settings.max_failed_total),
    })
}

/// The plan the rollout was started with, as journalled in its `planned` event.
async fn planned(inner: &Inner, id: i64) -> Result<Option<Plan>, OrchestrateError> {
    Ok(match inner.last(id, journal::kind::PLANNED).await? {
        Some(Event::Planned { plan, .. }) => plan,
        _ => None,
    })
}

async fn rollout(
    inner: &Arc<Inner>,
    id: i64,
    from_step: u32,
    mut control: watch::Receiver<Control>,
) -> Result<(), OrchestrateError> {
    let name = deployment_name(id);
    let rec = load(inner, id).await?;
    let (extension, version, steps) = (rec.extension.clone(), rec.version.clone(), rec.step_count);
    let plan = planned(inner, id).await?;
    let (per_step, overall) = budget(inner, id).await?;
    let spec = inner.settings.gate_spec();
    // The last baseline seen, for the steps after which no target is left on the old
    // version (the last step of a canary, blue's retirement).
    let mut last_baseline: Option<Baseline> = None;
    // With `[metrics]` and templates for the extension, Prometheus judges instead;
    // each template's last baseline value is carried over the same way.
    let analysis = super::analysis_gate::templates(inner, id, &extension).await?;
    let mut analysis_baselines = BTreeMap::new();
    for step in from_step..steps {
        let plan_step: Option<PlanStep> = plan.as_ref().and_then(|p| p.steps.get(step as usize).cloned());
        if let Some(stop) = checkpoint(&mut control).await {
            return rollback_and_finish(inner, id, stop.outcome, &stop.reason).await;
        }
        inner.registry.set_current_step(id, step).await?;
        let rec = load(inner, id).await?;
        let added: Vec<String> = rec.targets.iter().filter(|t| t.step == step).map(|t| t.agent.clone()).collect();
        let phase = plan_step.as_ref().and_then(|p| p.name.clone());
        inner.journal(id, Event::StepStarted { step: step + 1, of: steps, agents: added.clone(), phase }).await?;
        inner.emit(RolloutEvent::StepStarted {
            id: name.clone(),
            step: step as usize + 1,
            of: steps as usize,
            agents: added,
        });
        if plan_step.as_ref().is_some_and(|p| p.switch) {
            // Parley does not route traffic: the switch is the recorded decision that
            // green is live and blue is the standby.
            let green = rec.targets.iter().filter(|t| t.step < step).count();
            let blue = rec.targets.iter().filter(|t| t.step > step).count();
            inner.journal(id, Event::Switched { green, blue }).await?;
        } else {
            // This step's agents, and agents of earlier steps a crash or retry left
            // mid-way; agents that failed within the budget stay as they are.
            let batch: Vec<TargetRecord> = rec
                .targets
                .iter()
                .filter(|t| {
                    (t.step == step && t.state != TargetState::Installed)
                        || (t.step < step && matches!(t.state, TargetState::Pending | TargetState::Installing))
                })
                .cloned()
                .collect();
            let slots = match plan.as_ref().and_then(|p| p.max_unavailable) {
                None => None,
                Some(limit) => match unavailable_slots(inner, id, &rec, &batch, limit, step, &mut control).await? {
                    Ok(s) => Some(s),
                    Err(stop) => return rollback_and_finish(inner, id, stop.outcome, &stop.reason).await,
                },
            };
            let failures = match slots {
                None => install_batch(inner, id, &extension, &version, &batch).await?,
                Some(slots) => install_limited(inner, id, &extension, &version, &batch, slots).await?,
            };
            if !failures.is_empty() {
                let total = failed_installs(inner, id).await?.max(failures.len());
                if failures.len() > per_step || total > overall {
                    let reason = format!(
                        "install failed at step {} of {steps}: {} (failure budget: {per_step} per step, {overall} in all; {} failed in this step, {total} in all)",
                        step + 1,
                        failures.iter().map(|(_, line)| line.as_str()).collect::<Vec<_>>().join("; "),
                        failures.len()
                    );
                    return fail(inner, id, &reason).await;
                }
                let agents: Vec<&str> = failures.iter().map(|(a, _)| a.as_str()).collect();
                let within = agents.iter().map(|a| a.to_string()).collect();
                inner.journal(id, Event::FailureWithinBudget { step: step + 1, agents: within }).await?;
                // An agent whose install failed may hold anything: put it back now so
                // that it runs a version the registry knows.
                let rec = load(inner, id).await?;
                let failed: Vec<TargetRecord> =
                    rec.targets.iter().filter(|t| agents.contains(&t.agent.as_str())).cloned().collect();
                rollback_agents(inner, &rec, &failed, true).await?;
            }
            if let Some(stop) = bake(inner.settings.bake, &mut control).await {
                return rollback_and_finish(inner, id, stop.outcome, &stop.reason).await;
            }
            let rec = load(inner, id).await?;
            let reached: Vec<TargetRecord> =
                rec.targets.iter().filter(|t| t.step <= step && t.state == TargetState::Installed).cloned().collect();
            let old: Vec<TargetRecord> = rec.targets.iter().filter(|t| t.step > step).cloned().collect();
            if let Some(templates) = analysis.as_deref() {
                let sides = (extension.as_str(), version.as_str());
                let verdict = super::analysis_gate::gate(
                    inner,
                    id,
                    step,
                    steps,
                    plan_step.as_ref(),
                    sides,
                    (&reached[..], &old[..]),
                    templates,
                    &mut analysis_baselines,
                    &mut control,
                )
                .await?;
                match verdict {
                    Verdict::Continue => {}
                    Verdict::Fail(reason) => return fail(inner, id, &reason).await,
                    Verdict::Stop(stop) => return rollback_and_finish(inner, id, stop.outcome, &stop.reason).await,
                    Verdict::Hold(reason) => {
                        if let Some(stop) = hold(inner, id, Hold::Inconclusive, reason, None, &mut control).await? {
                            return rollback_and_finish(inner, id, stop.outcome, &stop.reason).await;
                        }
                    }
                }
            } else {
                let timeout = inner.settings.install_timeout;
                let (upgraded, base) = futures::future::join(
                    gate::read_all(&inner.client, &reached, timeout),
                    gate::read_all(&inner.client, &old, timeout),
                )
                .await;
                if let Some(b) = gate::baseline(&base) {
                    last_baseline = Some(b);
                }
                let result = gate::judge(&spec, &upgraded, last_baseline);
                let unreachable: Vec<String> = result.unreachable.iter().map(|(a, _)| a.clone()).collect();
                inner
                    .journal(
                        id,
                        Event::GateEvaluated {
                            step: step + 1,
                            passed: result.passed(),
                            outcome: result.outcome,
                            failed_kinds: result.failed_kinds(),
                            breaches: result.breaches.clone(),
                            unreachable: result.unreachable.clone(),
                            baseline: result.baseline,
                            counts: result
                                .counts
                                .iter()
                                .map(|(k, v)| (k.as_str().to_string(), *v))
                                .collect::<BTreeMap<_, _>>(),
                            analysis: None,
                            source: None,
                        },
                    )
                    .await?;
                inner.emit(RolloutEvent::GateEvaluated {
                    id: name.clone(),
                    step: step as usize + 1,
                    passed: result.passed(),
                    outcome: result.outcome,
                    breaches: result.breaches.clone(),
                    unreachable,
                });
                match result.outcome {
                    GateOutcome::Successful => {}
                    GateOutcome::Failed | GateOutcome::Error => {
                        let what = if result.outcome == GateOutcome::Failed { "failed" } else { "could not be read" };
                        let pct =
                            plan_step.as_ref().map(|p| format!(" ({}%)", p.cumulative_percent)).unwrap_or_default();
                        let reason =
                            format!("health gate {what} at step {} of {steps}{pct}: {}", step + 1, result.describe());
                        return fail(inner, id, &reason).await;
                    }
                    GateOutcome::Inconclusive => {
                        let reason = format!(
                            "gate inconclusive at step {} of {steps}: {}; resume to carry on or abort to roll back",
                            step + 1,
                            result.describe()
                        );
                        if let Some(stop) = hold(inner, id, Hold::Inconclusive, reason, None, &mut control).await? {
                            return rollback_and_finish(inner, id, stop.outcome, &stop.reason).await;
                        }
                    }
                }
            }
        }
        if let Some(wait) = plan_step.as_ref().and_then(|p| p.wait) {
            if step + 1 < steps {
                let (reason, timer) = wait_reason(&rec, plan.as_ref(), step, wait, &inner.settings);
                if let Some(stop) = hold(inner, id, Hold::Promote, reason, timer, &mut control).await? {
                    return rollback_and_finish(inner, id, stop.outcome, &stop.reason).await;
                }
            }
        }
    }

    let transition = inner.transitions.lock().await;
    let abort = match &*control.borrow() {
        Control::Abort { reason, outcome } => Some(Stop { outcome: *outcome, reason: reason.clone() }),
        _ => None,
    };
    if let Some(stop) = abort {
        drop(transition);
        return rollback_and_finish(inner, id, stop.outcome, &stop.reason).await;
    }
    let rec = load(inner, id).await?;
    let installed = rec.targets.iter().filter(|t| t.state == TargetState::Installed).count();
    let count = rec.targets.len();
    let mut reason = if installed == count {
        format!("{count} agents on {extension} {version}")
    } else {
        format!("{installed} of {count} agents on {extension} {version}")
    };
    let failed: Vec<String> = rec
        .targets
        .iter()
        .filter(|t| t.state != TargetState::Installed)
        .map(|t| format!("{} ({})", t.agent, t.detail.as_deref().unwrap_or(t.state.as_str())))
        .collect();
    if !failed.is_empty() {
        reason.push_str(&format!("; failed within the failure budget: {}", failed.join(", ")));
    }
    inner.journal(id, Event::Succeeded { reason: reason.clone() }).await?;
    inner.registry.set_status(id, DeploymentStatus::Succeeded, Some(&reason)).await?;
    inner.emit(RolloutEvent::Finished { id: name, status: DeploymentStatus::Succeeded, reason });
    Ok(())
}

/// The reason a deployment holds with after `step`, and its timer.
fn wait_reason(
    rec: &DeploymentRecord,
    plan: Option<&Plan>,
    step: u32,
    wait: Wait,
    settings: &super::RolloutSettings,
) -> (String, Option<std::time::Duration>) {
    let next = plan.and_then(|p| p.steps.get(step as usize + 1));
    let this = plan.and_then(|p| p.steps.get(step as usize));
    let name =
        |s: Option<&PlanStep>, i: u32| s.and_then(|s| s.name.clone()).unwrap_or_else(|| format!("step {}", i + 1));
    let blue = rec.targets.iter().filter(|t| t.step > step).count();
    let green = rec.targets.iter().filter(|t| t.step <= step).count();
    match (wait, this.is_some_and(|s| s.name.as_deref() == Some("green"))) {
        (Wait::PromoteOrTimer, _) => {
            let timer = settings.blue_retire_after;
            let when =
                timer.map(|d| format!(" or by itself in {}", super::plan::describe_duration(d))).unwrap_or_default();
            (
                format!(
                    "{WAITING_FOR_PROMOTE} to retire blue: green ({green} agents on {} {}) is live and blue ({blue} agents) \
                     stays on the previous version as a standby; promote retires blue{when}, roll back switches back to blue",
                    rec.extension, rec.version
                ),
                timer,
            )
        }
        (Wait::Promote, true) => (
            format!(
                "{WAITING_FOR_PROMOTE} to switch: green ({green} agents) runs {} {} and passed its gate; \
                 promote marks green live (Parley does not route traffic; the switch is recorded)",
                rec.extension, rec.version
            ),
            None,
        ),
        (Wait::Promote, false) => (
            format!(
                "{WAITING_FOR_PROMOTE}: {} (step {} of {}) passed its gate; promote starts {}",
                name(this, step),
                step + 1,
                rec.step_count,
                name(next, step + 1)
            ),
            None,
        ),
    }
}

/// Holds the deployment (paused, with `why` and the `reason` that says it) until the
/// operator resumes or promotes it, or until `timer`. Answers the stop if the
/// operator aborted instead.
async fn hold(
    inner: &Arc<Inner>,
    id: i64,
    why: Hold,
    reason: String,
    timer: Option<std::time::Duration>,
    control: &mut watch::Receiver<Control>,
) -> Result<Option<Stop>, OrchestrateError> {
    {
        let _transition = inner.transitions.lock().await;
        if let Control::Abort { reason, outcome } = &*control.borrow() {
            return Ok(Some(Stop { outcome: *outcome, reason: reason.clone() }));
        }
        inner.journal(id, Event::Held { reason: reason.clone() }).await?;
        inner.registry.set_held(id, DeploymentStatus::Paused, &why, &reason).await?;
        inner.signal(id, Control::Pause);
        inner.emit(RolloutEvent::Paused { id: deployment_name(id), reason });
    }
    let Some(timer) = timer else { return Ok(checkpoint(control).await) };
    let deadline = Instant::now() + timer;
    tokio::select! {
        stop = checkpoint(control) => Ok(stop),
        _ = tokio::time::sleep_until(deadline) => {
            let _transition = inner.transitions.lock().await;
            if let Control::Abort { reason, outcome } = &*control.borrow() {
                return Ok(Some(Stop { outcome: *outcome, reason: reason.clone() }));
            }
            inner.journal(id, Event::HoldTimerElapsed { after_secs: timer.as_secs_f64() }).await?;
            inner.registry.set_status(id, DeploymentStatus::Running, None).await?;
            inner.signal(id, Control::Run);
            inner.emit(RolloutEvent::Resumed { id: deployment_name(id) });
            Ok(None)
        }
    }
}

/// Waits while paused. Answers the stop if the operator aborted.
async fn checkpoint(control: &mut watch::Receiver<Control>) -> Option<Stop> {
    loop {
        let current = control.borrow_and_update().clone();
        match current {
            Control::Run => return None,
            Control::Abort { reason, outcome } => return Some(Stop { outcome, reason }),
            Control::Pause => {
                if control.changed().await.is_err() {
                    // The controls are gone with the orchestrator; nothing will resume us.
                    return Some(Stop {
                        outcome: DeploymentStatus::Aborted,
                        reason: "the orchestrator stopped while the rollout was paused".into(),
                    });
                }
            }
        }
    }
}

/// Sleeps `bake`, pausing (and then baking again in full) or stopping on the operator's word.
pub(super) async fn bake(bake: std::time::Duration, control: &mut watch::Receiver<Control>) -> Option<Stop> {
    loop {
        if let Some(stop) = checkpoint(control).await {
            return Some(stop);
        }
        let deadline = Instant::now() + bake;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return None,
                changed = control.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep_until(deadline).await;
                        return None;
                    }
                    if *control.borrow() != Control::Run {
                        // Back to the checkpoint: it waits out the pause or reports the abort.
                        break;
                    }
                }
            }
        }
    }
}

/// Agents already out of service count against a rolling deployment's
/// max-unavailable, as Kubernetes counts them: how many of the batch's serving agents
/// may be installed at once. None may be, while as many targets as the limit are
/// already out: the rollout holds, naming them, until the operator resumes it (and
/// looks again) or aborts it.
async fn unavailable_slots(
    inner: &Arc<Inner>,
    id: i64,
    rec: &DeploymentRecord,
    batch: &[TargetRecord],
    limit: usize,
    step: u32,
    control: &mut watch::Receiver<Control>,
) -> Result<Result<Slots, Stop>, OrchestrateError> {
    loop {
        let out = inner.unavailable(rec.targets.iter().map(|t| t.agent.as_str()));
        let free = limit.saturating_sub(out.len());
        let serving = batch.iter().filter(|t| !out.iter().any(|(a, _)| *a == t.agent)).count();
        if free > 0 || serving == 0 {
            if !out.is_empty() {
                let agents: Vec<String> = out.iter().map(|(a, why)| format!("{a} ({why})")).collect();
                inner.journal(id, Event::UnavailableCounted { step: step + 1, agents, slots: free }).await?;
            }
            return Ok(Ok(Slots { free, out: out.into_iter().map(|(a, _)| a).collect() }));
        }
        let reason = format!(
            "held before installing step {} of {}: {} already unavailable ({}) and at most {limit} may be at once; \
             resume once {} back, or abort",
            step + 1,
            rec.step_count,
            out.len(),
            out.iter().map(|(a, why)| format!("{a} {why}")).collect::<Vec<_>>().join(", "),
            crate::words::either(out.len(), "it is", "they are"),
        );
        if let Some(stop) = hold(inner, id, Hold::Unavailable, reason, None, control).await? {
            return Ok(Err(stop));
        }
    }
}

/// How a batch of a rolling deployment with max-unavailable may be installed.
struct Slots {
    /// Serving agents that may be installed at once.
    free: usize,
    /// Targets already out of service: installing one takes nothing more out.
    out: Vec<String>,
}

/// Installs `batch` with at most `slots.free` of its serving agents being installed at
/// any moment. Each agent is journalled as it starts and as it ends, so the journal
/// (and "show deployment") never shows more agents installing than the limit allows.
async fn install_limited(
    inner: &Inner,
    id: i64,
    extension: &str,
    version: &str,
    batch: &[TargetRecord],
    slots: Slots,
) -> Result<Vec<(String, String)>, OrchestrateError> {
    use futures::StreamExt;
    let (out, serving): (Vec<&TargetRecord>, Vec<&TargetRecord>) =
        batch.iter().partition(|t| slots.out.contains(&t.agent));
    let one = |t: &TargetRecord| {
        let t = t.clone();
        async move {
            let only = std::slice::from_ref(&t);
            install_batch(inner, id, extension, version, only).await
        }
    };
    let limited = futures::stream::iter(serving.into_iter().map(one)).buffer_unordered(slots.free.max(1)).collect();
    let free = futures::future::join_all(out.into_iter().map(one));
    let (limited, free): (Vec<_>, Vec<_>) = futures::future::join(limited, free).await;
    let mut failures = Vec::new();
    for result in limited.into_iter().chain(free) {
        failures.extend(result?);
    }
    Ok(failures)
}

/// Installs on every agent of `batch` concurrently. Answers one line per failed agent.
async fn install_batch(
    inner: &Inner,
    id: i64,
    extension: &str,
    version: &str,
    batch: &[TargetRecord],
) -> Result<Vec<(String, String)>, OrchestrateError> {
    // Journalled before any install is sent, as one transaction for the whole step.
    let rows: Vec<(String, serde_json::Value)> = batch
        .iter()
        .map(|t| {
            Event::InstallStarted {
                agent: t.agent.clone(),
                version: version.to_string(),
                previous: t.previous_version.clone(),
            }
            .to_row()
        })
        .collect();
    let started: Vec<TargetJournal<'_>> = batch
        .iter()
        .zip(&rows)
        .map(|(t, (kind, data))| TargetJournal {
            agent: &t.agent,
            kind,
            data: data.clone(),
            state: TargetState::Installing,
            detail: None,
        })
        .collect();
    inner.registry.journal_targets(id, &started).await?;
    let calls = batch.iter().map(|t| async move { (t, install_one(inner, &t.endpoint, extension, version).await) });
    let results = futures::future::join_all(calls).await;
    let name = deployment_name(id);
    let mut failures = Vec::new();
    let mut succeeded = Vec::new();
    for (t, result) in &results {
        match result {
            Ok(()) => succeeded.push(&t.agent),
            Err((state, error)) => {
                failures.push((t.agent.clone(), error.clone(), format!("{INSTALL_FAILED}{error}"), *state));
            }
        }
    }
    let ok_rows: Vec<(String, serde_json::Value)> = succeeded
        .iter()
        .map(|agent| Event::InstallSucceeded { agent: agent.to_string(), version: version.to_string() }.to_row())
        .collect();
    let failed_rows: Vec<(String, serde_json::Value)> = failures
        .iter()
        .map(|(agent, error, _, _)| Event::InstallFailed { agent: agent.clone(), error: error.clone() }.to_row())
        .collect();
    let mut outcomes = Vec::with_capacity(results.len());
    for (agent, (kind, data)) in succeeded.iter().zip(&ok_rows) {
        outcomes.push(TargetJournal { agent, kind, data: data.clone(), state: TargetState::Installed, detail: None });
    }
    for ((agent, _, detail, state), (kind, data)) in failures.iter().zip(&failed_rows) {
        outcomes.push(TargetJournal { agent, kind, data: data.clone(), state: *state, detail: Some(detail) });
    }
    // Results are journalled before anyone is told about them.
    inner.registry.journal_targets(id, &outcomes).await?;
    inner.note_installed(extension, succeeded.iter().map(|agent| (agent.as_str(), Some(version))));
    for (t, result) in results {
        match result {
            Ok(()) => inner.emit(RolloutEvent::AgentInstalled {
                id: name.clone(),
                agent: t.agent.clone(),
                version: version.to_string(),
            }),
            Err((_, error)) => {
                inner.emit(RolloutEvent::AgentFailed { id: name.clone(), agent: t.agent.clone(), error })
            }
        }
    }
    Ok(failures
        .into_iter()
        .map(|(agent, error, _, _)| {
            let line = format!("{agent}: {error}");
            (agent, line)
        })
        .collect())
}

/// How many agents failed to install in this run of the rollout (since its last
/// retry), as the journal says: those whose latest install ended `install_failed`.
async fn failed_installs(inner: &Inner, id: i64) -> Result<usize, OrchestrateError> {
    let mut failed: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    for e in inner.registry.events(id).await? {
        match Event::of(&e) {
            Some(Event::Retry { .. }) => failed.clear(),
            Some(Event::InstallFailed { agent, .. }) => {
                failed.insert(agent, true);
            }
            Some(Event::InstallSucceeded { agent, .. }) => {
                failed.insert(agent, false);
            }
            _ => {}
        }
    }
    Ok(failed.values().filter(|f| **f).count())
}

/// One install, bounded, and checked against what the agent then reports: an agent
/// that answers 200 but does not run the version has not installed it.
async fn install_one(
    inner: &Inner,
    endpoint: &str,
    extension: &str,
    version: &str,
) -> Result<(), (TargetState, String)> {
    let timeout = inner.settings.install_timeout;
    let answer =
        tokio::time::timeout(timeout, inner.client.install(endpoint, extension, version)).await.unwrap_or_else(|_| {
            Err(AgentError::InstallTimeout {
                endpoint: endpoint.to_string(),
                what: format!("installing {extension} {version}"),
                limit: timeout,
            })
        });
    match answer {
        Ok(status) => {
            let found = status.extensions.iter().find(|e| e.name == extension).map(|e| e.version.as_str());
            if found == Some(version) {
                Ok(())
            } else {
                Err((
                    TargetState::Failed,
                    format!("reports {extension} {} after the install", found.unwrap_or("absent")),
                ))
            }
        }
        Err(e @ (AgentError::Timeout { .. } | AgentError::Unreachable { .. })) => {
            Err((TargetState::Unreachable, e.to_string()))
        }
        Err(e) => Err((TargetState::Failed, e.to_string())),
    }
}

async fn fail(inner: &Arc<Inner>, id: i64, reason: &str) -> Result<(), OrchestrateError> {
    inner.journal(id, Event::RolloutFailed { reason: reason.to_string() }).await?;
    rollback_and_finish(inner, id, DeploymentStatus::RolledBack, reason).await
}

/// Returns every touched agent to its previous version, then records `outcome`, or
/// `failed` naming the agents that could not be returned and what they may still run.
/// The deployment is `rolling_back` throughout (journalled with why and how it is to
/// end before any agent is touched), and its final status is written only once every
/// agent has answered: a Parley killed meanwhile finds the rollback unfinished and
/// finishes it. A rollback already under way (an abort that reached the task, one
/// resumed after a restart) keeps the reason and outcome it was journalled with.
async fn rollback_and_finish(
    inner: &Arc<Inner>,
    id: i64,
    outcome: DeploymentStatus,
    reason: &str,
) -> Result<(), OrchestrateError> {
    let (outcome, reason) = {
        let _transition = inner.transitions.lock().await;
        let rec = load(inner, id).await?;
        if rec.status == DeploymentStatus::RollingBack {
            inner.rollback_started(id).await?.unwrap_or_else(|| (outcome, reason.to_string()))
        } else {
            inner.begin_rollback(&rec, outcome, reason).await?;
            (outcome, reason.to_string())
        }
    };
    let rec = load(inner, id).await?;
    let touched: Vec<TargetRecord> = rec.targets.iter().filter(|t| t.state.is_touched()).cloned().collect();
    let failures = rollback_agents(inner, &rec, &touched, false).await?;
    let (status, reason) = if failures.is_empty() {
        (outcome, format!("{reason}; {}", returned_summary(&rec, &touched)))
    } else {
        (DeploymentStatus::Failed, format!("{reason}; rollback incomplete: {}", failures.join("; ")))
    };
    let _transition = inner.transitions.lock().await;
    inner.journal(id, Event::Finished { status, reason: reason.clone() }).await?;
    inner.registry.set_status(id, status, Some(&reason)).await?;
    inner.emit(RolloutEvent::Finished { id: rec.name.clone(), status, reason });
    Ok(())
}

fn returned_summary(rec: &DeploymentRecord, touched: &[TargetRecord]) -> String {
    match touched {
        [] => "no agent had been changed".to_string(),
        [first, rest @ ..] => {
            let n = touched.len();
            let noun = crate::words::noun(n, "agent");
            if rest.iter().all(|t| t.previous_version == first.previous_version) {
                match &first.previous_version {
                    Some(v) => format!("{n} {noun} returned to {} {v}", rec.extension),
                    None => format!("{} removed from {n} {noun}", rec.extension),
                }
            } else {
                format!("{n} {noun} returned to their previous versions")
            }
        }
    }
}

/// Returns `touched` to their previous versions. `after_failure`: they failed to
/// install (within the budget), and their detail keeps saying so.
async fn rollback_agents(
    inner: &Inner,
    rec: &DeploymentRecord,
    touched: &[TargetRecord],
    after_failure: bool,
) -> Result<Vec<String>, OrchestrateError> {
    for t in touched {
        inner
            .journal(rec.id, Event::RollbackAgentStarted { agent: t.agent.clone(), to: t.previous_version.clone() })
            .await?;
    }
    let calls = touched.iter().map(|t| async move { (t, restore_one(inner, t, &rec.extension).await) });
    let results = futures::future::join_all(calls).await;
    let mut failures = Vec::new();
    for (t, result) in results {
        let to = t.previous_version.clone();
        match result {
            Ok(()) => {
                inner.journal(rec.id, Event::RollbackAgentSucceeded { agent: t.agent.clone(), to: to.clone() }).await?;
                inner.note_installed(&rec.extension, [(t.agent.as_str(), to.as_deref())]);
                let mut detail = format!("returned to {}", to.as_deref().unwrap_or("not installed"));
                if after_failure {
                    detail = format!("{}; {detail}", t.detail.as_deref().unwrap_or(INSTALL_FAILED));
                }
                inner.registry.set_target_state(rec.id, &t.agent, TargetState::RolledBack, Some(&detail)).await?;
                inner.emit(RolloutEvent::RollbackProgress {
                    id: rec.name.clone(),
                    agent: t.agent.clone(),
                    version: to,
                    ok: true,
                    detail,
                });
            }
            Err(error) => {
                inner
                    .journal(
                        rec.id,
                        Event::RollbackAgentFailed { agent: t.agent.clone(), to: to.clone(), error: error.clone() },
                    )
                    .await?;
                let left_on = match t.state {
                    TargetState::Installed => format!("{} still runs {} {}", t.agent, rec.extension, rec.version),
                    _ => format!("{} runs an unknown version of {}", t.agent, rec.extension),
                };
                let wanted = match &to {
                    Some(v) => format!("could not return it to {v}"),
                    None => format!("could not remove {}", rec.extension),
                };
                let line = format!("{left_on} ({wanted}: {error})");
                let detail = if after_failure {
                    format!("{}; {line}", t.detail.as_deref().unwrap_or(INSTALL_FAILED))
                } else {
                    line.clone()
                };
                inner.registry.set_target_state(rec.id, &t.agent, t.state, Some(&detail)).await?;
                inner.emit(RolloutEvent::RollbackProgress {
                    id: rec.name.clone(),
                    agent: t.agent.clone(),
                    version: to,
                    ok: false,
                    detail: line.clone(),
                });
                failures.push(line);
            }
        }
    }
    Ok(failures)
}

/// Puts one agent back as it was, and reads it back to be sure. An agent that does
/// not answer is tried again for a while (one that crashed or flaps may come back; an
/// install that timed out may still land after the restore, and the read-back catches
/// it), so that no agent that answers is left on the new version.
async fn restore_one(inner: &Inner, t: &TargetRecord, extension: &str) -> Result<(), String> {
    let deadline = Instant::now() + inner.settings.rollback_patience;
    let mut pause = std::time::Duration::from_millis(200);
    loop {
        let error = match restore_once(inner, t, extension).await {
            Ok(()) => match confirm(inner, t, extension).await {
                Ok(()) => return Ok(()),
                Err(Confirm::Differs(e)) | Err(Confirm::Silent(e)) => e,
            },
            Err(Confirm::Differs(e)) => return Err(e),
            Err(Confirm::Silent(e)) => e,
        };
        if Instant::now() + pause > deadline {
            return Err(error);
        }
        tracing::debug!(agent = %t.agent, %error, "returning the agent failed; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(2));
    }
}

/// Why returning an agent did not work: it answered and runs something else, or it
/// did not answer (worth another try).
enum Confirm {
    Differs(String),
    Silent(String),
}

fn classify(e: AgentError) -> Confirm {
    match e {
        // An install that ran out of time may still finish on the agent: try again.
        AgentError::Timeout { .. } | AgentError::InstallTimeout { .. } | AgentError::Unreachable { .. } => {
            Confirm::Silent(e.to_string())
        }
        // A refusal (the agent is restarting, say) may pass too.
        AgentError::Refused { status, .. } if status >= 500 => Confirm::Silent(e.to_string()),
        e => Confirm::Differs(e.to_string()),
    }
}

async fn restore_once(inner: &Inner, t: &TargetRecord, extension: &str) -> Result<(), Confirm> {
    let timeout = inner.settings.install_timeout;
    let endpoint = t.endpoint.as_str();
    let call = async {
        match &t.previous_version {
            Some(v) => inner.client.install(endpoint, extension, v).await.map(Some),
            None => match inner.client.remove(endpoint, extension).await {
                // Already absent is what we want.
                Err(AgentError::Refused { status: 404, .. }) => Ok(None),
                other => other.map(Some),
            },
        }
    };
    let status = tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(AgentError::Timeout { endpoint: endpoint.to_string() }))
        .map_err(classify)?;
    let Some(status) = status else { return Ok(()) };
    let found = status.extensions.iter().find(|e| e.name == extension).map(|e| e.version.clone());
    if found == t.previous_version {
        Ok(())
    } else {
        Err(Confirm::Differs(format!("it reports {extension} {} afterwards", found.as_deref().unwrap_or("absent"))))
    }
}

/// Reads the agent back after its restore: what it runs now is what is recorded.
async fn confirm(inner: &Inner, t: &TargetRecord, extension: &str) -> Result<(), Confirm> {
    let timeout = inner.settings.install_timeout;
    let status = tokio::time::timeout(timeout, inner.client.status(&t.endpoint))
        .await
        .unwrap_or_else(|_| Err(AgentError::Timeout { endpoint: t.endpoint.clone() }))
        .map_err(classify)?;
    let found = status.extensions.iter().find(|e| e.name == extension).map(|e| e.version.clone());
    if found == t.previous_version {
        Ok(())
    } else {
        // Something landed after the restore (a late install): put it back again.
        Err(Confirm::Silent(format!("it reports {extension} {} afterwards", found.as_deref().unwrap_or("absent"))))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_pause_during_the_bake_holds_it_and_the_bake_starts_over_after_resume() {
        let (tx, mut rx) = watch::channel(Control::Run);
        let started = Instant::now();
        let task = tokio::spawn(async move { bake(Duration::from_secs(2), &mut rx).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(Control::Pause).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!task.is_finished(), "paused: the bake waits");
        tx.send(Control::Run).unwrap();
        assert_eq!(task.await.unwrap(), None);
        assert_eq!(started.elapsed(), Duration::from_secs(63), "a full bake after the resume");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abort_ends_the_bake_at_once_with_its_reason() {
        let (tx, mut rx) = watch::channel(Control::Run);
        let started = Instant::now();
        let task = tokio::spawn(async move { bake(Duration::from_secs(30), &mut rx).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(Control::Abort { reason: "aborted by bob".into(), outcome: DeploymentStatus::Aborted }).unwrap();
        assert_eq!(task.await.unwrap().map(|s| s.reason).as_deref(), Some("aborted by bob"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
