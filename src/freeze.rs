//! The emergency stop: "stop everything" / "freeze" pauses every running rollout and
//! holds the automatic failover (cascade) and failback until "unfreeze".
//!
//! The freeze lives in the registry, so it holds for every process on the data
//! directory and across a restart: the process that drives the rollouts pauses any
//! that run while it is in force ([`spawn_guard`], also for a freeze another process
//! recorded), the router reads it before every change it would make by itself, and
//! the dialog refuses what would move a rollout forward (deploy, resume, promote,
//! retry) while it holds. Lifting it resumes nothing: each paused rollout waits for
//! its own "resume".

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ops::{Actor, DeploymentStatus, Operation, Role};
use crate::orchestrate::Orchestrator;
use crate::registry::{FreezeRecord, Registry, RegistryError};

/// How often the driving process looks for rollouts to hold while frozen.
pub const GUARD_INTERVAL: Duration = Duration::from_millis(500);

/// What a freeze did.
#[derive(Debug, Clone, PartialEq)]
pub struct Frozen {
    pub record: FreezeRecord,
    /// The freeze was already in force (by `record.actor`); nothing new was recorded.
    pub already: bool,
    /// Rollouts paused now.
    pub paused: Vec<String>,
    /// Rollouts that could not be paused here, with why (another process drives
    /// them: its guard pauses them within [`GUARD_INTERVAL`]).
    pub not_paused: Vec<(String, String)>,
}

/// Records the freeze and pauses every running rollout this process can.
pub async fn freeze(
    registry: &Registry,
    orchestrator: &Orchestrator,
    actor: &Actor,
    reason: &str,
) -> Result<Frozen, RegistryError> {
    let before = registry.freeze().await?;
    let record = registry.set_freeze(actor, reason).await?;
    let (paused, not_paused) = hold_running(registry, orchestrator, actor).await?;
    Ok(Frozen { record, already: before.is_some(), paused, not_paused })
}

/// Lifts the freeze; answers what was lifted and the rollouts left paused.
pub async fn unfreeze(
    registry: &Registry,
    actor: &Actor,
) -> Result<Option<(FreezeRecord, Vec<String>)>, RegistryError> {
    let Some(was) = registry.lift_freeze(actor).await? else { return Ok(None) };
    let paused: Vec<String> = registry
        .active_deployments()
        .await?
        .into_iter()
        .filter(|d| d.status == DeploymentStatus::Paused)
        .map(|d| d.name)
        .collect();
    Ok(Some((was, paused)))
}

/// Pauses every running rollout; answers those paused and those that could not be.
pub async fn hold_running(
    registry: &Registry,
    orchestrator: &Orchestrator,
    actor: &Actor,
) -> Result<(Vec<String>, Vec<(String, String)>), RegistryError> {
    let mut paused = Vec::new();
    let mut failed = Vec::new();
    for d in registry.active_deployments().await? {
        if d.status != DeploymentStatus::Running {
            continue;
        }
        match orchestrator.pause(&d.name, actor).await {
            Ok(_) => paused.push(d.name),
            Err(e) => failed.push((d.name, e.to_string())),
        }
    }
    Ok((paused, failed))
}

/// While a freeze is in force (recorded by any process), pauses whatever rollout this
/// process runs, so a rollout cannot slip past a freeze made elsewhere.
pub fn spawn_guard(registry: Registry, orchestrator: Orchestrator, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GUARD_INTERVAL);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
            }
            let record = match registry.freeze().await {
                Ok(Some(r)) => r,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read the freeze");
                    continue;
                }
            };
            let running = match registry.active_deployments().await {
                Ok(list) => list.into_iter().any(|d| d.status == DeploymentStatus::Running),
                Err(_) => false,
            };
            if !running {
                continue;
            }
            let actor = Actor::new(record.actor.clone(), record.frontend.clone(), Role::Admin);
            match hold_running(&registry, &orchestrator, &actor).await {
                Ok((paused, _)) if !paused.is_empty() => {
                    tracing::info!(?paused, "paused by the freeze in force")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not hold rollouts for the freeze"),
            }
        }
    })
}

/// What every reply says while frozen.
pub fn notice(r: &FreezeRecord) -> String {
    format!(
        "(Frozen since {} by {} through {}: rollouts are paused and automatic failover and failback are held; say \"unfreeze\" to lift it.)",
        r.at.format("%H:%M:%S"),
        r.actor,
        r.frontend
    )
}

/// Whether `op` would move a rollout forward, which a freeze forbids.
pub fn forbidden(op: &Operation) -> bool {
    matches!(
        op,
        Operation::Deploy { .. } | Operation::Resume { .. } | Operation::Promote { .. } | Operation::Retry { .. }
    )
}
