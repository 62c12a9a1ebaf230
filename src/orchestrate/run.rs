//! The background tasks: a rollout (step by step: install, bake, gate) and a rollback.
//! Each journals what it is about to do before doing it, and writes the outcome.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::gate;
use super::{Control, Inner, OrchestrateError, RolloutEvent};
use crate::agent::AgentError;
use crate::ops::DeploymentStatus;
use crate::registry::{deployment_name, DeploymentRecord, TargetRecord, TargetState};

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
}

async fn load(inner: &Inner, id: i64) -> Result<DeploymentRecord, OrchestrateError> {
    inner.registry.deployment(id).await?.ok_or_else(|| OrchestrateError::UnknownDeployment(deployment_name(id)))
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
    for step in from_step..steps {
        if let Some(reason) = checkpoint(&mut control).await {
            return rollback_and_finish(inner, id, DeploymentStatus::Aborted, &reason).await;
        }
        inner.registry.set_current_step(id, step).await?;
        let rec = load(inner, id).await?;
        let added: Vec<String> = rec.targets.iter().filter(|t| t.step == step).map(|t| t.agent.clone()).collect();
        inner.journal(id, "step_started", json!({ "step": step + 1, "of": steps, "agents": added })).await?;
        inner.emit(RolloutEvent::StepStarted {
            id: name.clone(),
            step: step as usize + 1,
            of: steps as usize,
            agents: added,
        });
        // Agents of earlier steps that are not installed (a retry, or a resume after a
        // crash mid-install) go in this batch too.
        let batch: Vec<TargetRecord> =
            rec.targets.iter().filter(|t| t.step <= step && t.state != TargetState::Installed).cloned().collect();
        let failures = install_batch(inner, id, &extension, &version, &batch).await?;
        if !failures.is_empty() {
            let reason = format!("install failed at step {} of {steps}: {}", step + 1, failures.join("; "));
            return fail(inner, id, &reason).await;
        }
        if let Some(reason) = bake(inner.settings.bake, &mut control).await {
            return rollback_and_finish(inner, id, DeploymentStatus::Aborted, &reason).await;
        }
        let reached: Vec<TargetRecord> =
            load(inner, id).await?.targets.into_iter().filter(|t| t.step <= step).collect();
        let result =
            gate::evaluate(&inner.client, &reached, &inner.settings.gate, inner.settings.install_timeout).await;
        let unreachable: Vec<String> = result.unreachable.iter().map(|(a, _)| a.clone()).collect();
        inner
            .journal(
                id,
                "gate_evaluated",
                json!({ "step": step + 1, "passed": result.passed(), "breaches": result.breaches,
                        "unreachable": result.unreachable }),
            )
            .await?;
        inner.emit(RolloutEvent::GateEvaluated {
            id: name.clone(),
            step: step as usize + 1,
            passed: result.passed(),
            breaches: result.breaches.clone(),
            unreachable,
        });
        if !result.passed() {
            let reason = format!("health gate failed at step {} of {steps}: {}", step + 1, result.describe());
            return fail(inner, id, &reason).await;
        }
    }

    let transition = inner.transitions.lock().await;
    let abort = match &*control.borrow() {
        Control::Abort { reason } => Some(reason.clone()),
        _ => None,
    };
    if let Some(reason) = abort {
        drop(transition);
        return rollback_and_finish(inner, id, DeploymentStatus::Aborted, &reason).await;
    }
    let count = load(inner, id).await?.targets.len();
    let reason = format!("{count} agents on {extension} {version}");
    inner.journal(id, "succeeded", json!({ "reason": reason })).await?;
    inner.registry.set_status(id, DeploymentStatus::Succeeded, Some(&reason)).await?;
    inner.emit(RolloutEvent::Finished { id: name, status: DeploymentStatus::Succeeded, reason });
    Ok(())
}

/// Waits while paused. Answers the abort reason if the operator aborted.
async fn checkpoint(control: &mut watch::Receiver<Control>) -> Option<String> {
    loop {
        let current = control.borrow_and_update().clone();
        match current {
            Control::Run => return None,
            Control::Abort { reason } => return Some(reason),
            Control::Pause => {
                if control.changed().await.is_err() {
                    // The controls are gone with the orchestrator; nothing will resume us.
                    return Some("the orchestrator stopped while the rollout was paused".into());
                }
            }
        }
    }
}

/// Sleeps `bake`, pausing (and then baking again in full) or stopping on the operator's word.
async fn bake(bake: std::time::Duration, control: &mut watch::Receiver<Control>) -> Option<String> {
    loop {
        if let Some(reason) = checkpoint(control).await {
            return Some(reason);
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

/// Installs on every agent of `batch` concurrently. Answers one line per failed agent.
async fn install_batch(
    inner: &Inner,
    id: i64,
    extension: &str,
    version: &str,
    batch: &[TargetRecord],
) -> Result<Vec<String>, OrchestrateError> {
    for t in batch {
        inner
            .journal(
                id,
                "install_started",
                json!({ "agent": t.agent, "version": version, "previous": t.previous_version }),
            )
            .await?;
        inner.registry.set_target_state(id, &t.agent, TargetState::Installing, None).await?;
    }
    let calls = batch.iter().map(|t| async move { (t, install_one(inner, &t.endpoint, extension, version).await) });
    let results = futures::future::join_all(calls).await;
    let name = deployment_name(id);
    let mut failures = Vec::new();
    for (t, result) in results {
        match result {
            Ok(()) => {
                inner.journal(id, "install_succeeded", json!({ "agent": t.agent, "version": version })).await?;
                inner.registry.set_target_state(id, &t.agent, TargetState::Installed, None).await?;
                inner.emit(RolloutEvent::AgentInstalled {
                    id: name.clone(),
                    agent: t.agent.clone(),
                    version: version.to_string(),
                });
            }
            Err((state, error)) => {
                inner.journal(id, "install_failed", json!({ "agent": t.agent, "error": error })).await?;
                inner.registry.set_target_state(id, &t.agent, state, Some(&error)).await?;
                inner.emit(RolloutEvent::AgentFailed {
                    id: name.clone(),
                    agent: t.agent.clone(),
                    error: error.clone(),
                });
                failures.push(format!("{}: {error}", t.agent));
            }
        }
    }
    Ok(failures)
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
    let answer = tokio::time::timeout(timeout, inner.client.install(endpoint, extension, version))
        .await
        .unwrap_or_else(|_| Err(AgentError::Timeout { endpoint: endpoint.to_string() }));
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
    inner.journal(id, "rollout_failed", json!({ "reason": reason })).await?;
    rollback_and_finish(inner, id, DeploymentStatus::RolledBack, reason).await
}

/// Returns every touched agent to its previous version, then records `outcome`, or
/// `failed` naming the agents that could not be returned and what they may still run.
async fn rollback_and_finish(
    inner: &Arc<Inner>,
    id: i64,
    outcome: DeploymentStatus,
    reason: &str,
) -> Result<(), OrchestrateError> {
    let rec = load(inner, id).await?;
    let touched: Vec<TargetRecord> = rec.targets.iter().filter(|t| t.state.is_touched()).cloned().collect();
    inner
        .journal(
            id,
            "rollback_started",
            json!({ "reason": reason, "agents": touched.iter().map(|t| &t.agent).collect::<Vec<_>>() }),
        )
        .await?;
    let failures = rollback_agents(inner, &rec, &touched).await?;
    let (status, reason) = if failures.is_empty() {
        (outcome, format!("{reason}; {}", returned_summary(&rec, &touched)))
    } else {
        (DeploymentStatus::Failed, format!("{reason}; rollback incomplete: {}", failures.join("; ")))
    };
    let _transition = inner.transitions.lock().await;
    inner.journal(id, "finished", json!({ "status": status, "reason": reason })).await?;
    inner.registry.set_status(id, status, Some(&reason)).await?;
    inner.emit(RolloutEvent::Finished { id: rec.name.clone(), status, reason });
    Ok(())
}

fn returned_summary(rec: &DeploymentRecord, touched: &[TargetRecord]) -> String {
    match touched {
        [] => "no agent had been changed".to_string(),
        [first, rest @ ..] => {
            let n = touched.len();
            let noun = if n == 1 { "agent" } else { "agents" };
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

async fn rollback_agents(
    inner: &Inner,
    rec: &DeploymentRecord,
    touched: &[TargetRecord],
) -> Result<Vec<String>, OrchestrateError> {
    for t in touched {
        inner.journal(rec.id, "rollback_agent_started", json!({ "agent": t.agent, "to": t.previous_version })).await?;
    }
    let calls = touched.iter().map(|t| async move { (t, restore_one(inner, t, &rec.extension).await) });
    let results = futures::future::join_all(calls).await;
    let mut failures = Vec::new();
    for (t, result) in results {
        let to = t.previous_version.clone();
        match result {
            Ok(()) => {
                inner.journal(rec.id, "rollback_agent_succeeded", json!({ "agent": t.agent, "to": to })).await?;
                let detail = format!("returned to {}", to.as_deref().unwrap_or("not installed"));
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
                    .journal(rec.id, "rollback_agent_failed", json!({ "agent": t.agent, "to": to, "error": error }))
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
                inner.registry.set_target_state(rec.id, &t.agent, t.state, Some(&line)).await?;
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

/// Puts one agent back as it was: the previous version, or no extension at all.
async fn restore_one(inner: &Inner, t: &TargetRecord, extension: &str) -> Result<(), String> {
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
        .map_err(|e| e.to_string())?;
    let Some(status) = status else { return Ok(()) };
    let found = status.extensions.iter().find(|e| e.name == extension).map(|e| e.version.clone());
    if found == t.previous_version {
        Ok(())
    } else {
        Err(format!("it reports {extension} {} afterwards", found.as_deref().unwrap_or("absent")))
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
        tx.send(Control::Abort { reason: "aborted by bob".into() }).unwrap();
        assert_eq!(task.await.unwrap().as_deref(), Some("aborted by bob"));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
