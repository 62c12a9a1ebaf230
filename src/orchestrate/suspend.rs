//! An orderly stop of the process that drives rollouts (`parley serve` on SIGTERM or
//! `parley serve stop`): each running rollout is held before its next batch, saying so,
//! and the next start carries it on. Unlike a crash (which recovery reports as
//! "interrupted" and leaves for the operator), nothing here needs a decision.

use std::time::Duration;

use super::journal::Event;
use super::lifecycle::Hold;
use super::{Control, OrchestrateError, Orchestrator, RolloutEvent};
use crate::ops::{Actor, DeploymentStatus};

/// Who the journal names for a suspension.
const BY: &str = "parley serve";

impl Orchestrator {
    /// Holds every rollout this process runs before its next batch (a batch being
    /// installed finishes), waits up to `grace` for them to get there, and answers the
    /// deployments suspended. Rollbacks under way are not held: they are let finish
    /// within the same grace, and recovery finishes any that did not.
    pub async fn suspend_running(&self, grace: Duration) -> Result<Vec<String>, OrchestrateError> {
        let inner = &self.inner;
        let mut suspended = Vec::new();
        {
            let _transition = inner.transitions.lock().await;
            for rec in inner.registry.active_deployments().await? {
                if rec.status != DeploymentStatus::Running || !inner.has_task(rec.id) {
                    continue;
                }
                let reason = format!(
                    "suspended at step {} of {}: the Parley server stopped in order; it carries on when the server starts again",
                    rec.current_step + 1,
                    rec.step_count.max(1)
                );
                inner
                    .journal(rec.id, Event::Paused { by: BY.into(), frontend: "serve".into(), reason: reason.clone() })
                    .await?;
                inner.registry.set_held(rec.id, DeploymentStatus::Paused, &Hold::Suspended, &reason).await?;
                inner.signal(rec.id, Control::Pause);
                inner.emit(RolloutEvent::Paused { id: rec.name.clone(), reason });
                suspended.push(rec.name);
            }
        }
        // The task holds once its batch's installs are in; until then a target is
        // `installing`. Past the grace period the next start re-runs that batch
        // (installs are idempotent).
        let settled = async {
            loop {
                let mut busy = false;
                for name in &suspended {
                    if let Ok(Some(rec)) = inner.registry.deployment_by_name(name).await {
                        busy |= rec.targets.iter().any(|t| t.state == crate::registry::TargetState::Installing);
                    }
                }
                if !busy {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.wait_settled().await;
        };
        if tokio::time::timeout(grace, settled).await.is_err() {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "a rollout step was still installing when the grace period ended"
            );
        }
        Ok(suspended)
    }

    /// At start, after [`Orchestrator::recover`]: carries on what an orderly stop
    /// suspended. Answers the deployments resumed; one that cannot be resumed stays
    /// paused and is logged.
    pub async fn resume_suspended(&self, actor: &Actor) -> Result<Vec<String>, OrchestrateError> {
        let mut resumed = Vec::new();
        for rec in self.inner.registry.active_deployments().await? {
            if rec.status != DeploymentStatus::Paused || rec.hold != Some(Hold::Suspended) {
                continue;
            }
            match self.resume(&rec.name, actor).await {
                Ok(_) => resumed.push(rec.name),
                Err(e) => tracing::warn!(deployment = %rec.name, error = %e, "could not resume a suspended rollout"),
            }
        }
        Ok(resumed)
    }
}
