//! The orchestrator's public controls: start, pause, resume, abort, rollback, retry,
//! agent actions and recovery after a restart. Each checks the deployment's state,
//! journals the request, and then signals or spawns the background task.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;

use super::lifecycle::{self, Control as Ctl, Stage, INTERRUPTED, QUEUED_BEHIND};
use super::run::{self, Job};
use super::{plan_with, Control, DeployRequest, Inner, OrchestrateError, Orchestrator, RolloutEvent, Task};
use crate::agent::protocol::{AgentAction, AgentStatus};
use crate::agent::AgentError;
use crate::ops::{Actor, DeploymentStatus};
use crate::registry::{DeploymentFilter, DeploymentRecord, NewDeployment, NewTarget, RegistryError, TargetState};

impl Orchestrator {
    /// Journals the deployment (running) and its plan, starts the rollout in the
    /// background, and answers at once.
    pub async fn start(&self, req: DeployRequest) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let plan = plan_with(&req.strategy, &req.targets, &inner.settings, req.require_approval)?;
        let _transition = inner.transitions.lock().await;
        let busy = inner.active_agents().await?;
        let blocker = match check_overlap(plan.steps.iter().flat_map(|s| s.agents.iter()), &busy, None) {
            Ok(()) => None,
            Err(OrchestrateError::Overlap { deployment, .. }) if req.queue => Some(deployment),
            Err(e) => return Err(e),
        };

        let mut targets = Vec::with_capacity(plan.agent_count());
        for (step, s) in plan.steps.iter().enumerate() {
            for agent in &s.agents {
                if let Some(t) = req.targets.iter().find(|t| t.agent == *agent) {
                    targets.push(NewTarget {
                        agent: t.agent.clone(),
                        endpoint: t.endpoint.clone(),
                        previous_version: t.previous.clone(),
                        step: u32::try_from(step).unwrap_or(u32::MAX),
                    });
                }
            }
        }
        let new = NewDeployment {
            extension: req.extension.clone(),
            version: req.version.clone(),
            scope: req.scope.clone(),
            strategy: req.strategy.clone(),
            status: if blocker.is_some() { DeploymentStatus::Pending } else { DeploymentStatus::Running },
            actor: req.actor.clone(),
            utterance: req.utterance.clone(),
            step_count: u32::try_from(plan.steps.len()).unwrap_or(u32::MAX),
            targets,
        };
        let record = inner.registry.create_deployment(&new).await?;
        let id = record.id;
        inner
            .journal(
                id,
                "created",
                json!({
                    "extension": req.extension, "version": req.version, "scope": req.scope,
                    "strategy": req.strategy, "by": req.actor.name, "frontend": req.actor.frontend,
                    "utterance": req.utterance, "agents": record.agents().collect::<Vec<_>>(),
                    "require_approval": req.require_approval, "max_failures": req.max_failures,
                }),
            )
            .await?;
        inner.journal(id, "planned", json!({ "plan": plan, "steps": plan.describe(&inner.settings) })).await?;
        if let Some(blocker) = blocker {
            let reason = format!("{QUEUED_BEHIND} {blocker}");
            inner.journal(id, "queued", json!({ "behind": blocker })).await?;
            inner.registry.set_status(id, DeploymentStatus::Pending, Some(&reason)).await?;
            return inner.load(&record.name).await;
        }
        inner.emit(RolloutEvent::Started {
            id: record.name.clone(),
            extension: record.extension.clone(),
            version: record.version.clone(),
            agents: record.targets.len(),
            steps: plan.steps.len(),
        });
        inner.spawn(id, Job::Rollout { from_step: 0 });
        Ok(record)
    }

    /// Holds the rollout before its next batch (or during the bake).
    pub async fn pause(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let rec = inner.load(id).await?;
        admitted(&rec, Ctl::Pause)?;
        let reason = format!("paused by {} at {}", actor.name, at_step(&rec));
        inner
            .journal(rec.id, "paused", json!({ "by": actor.name, "frontend": actor.frontend, "reason": reason }))
            .await?;
        inner.registry.set_status(rec.id, DeploymentStatus::Paused, Some(&reason)).await?;
        inner.signal(rec.id, Control::Pause);
        inner.emit(RolloutEvent::Paused { id: rec.name.clone(), reason });
        inner.load(id).await
    }

    /// Carries on a paused rollout, also one paused by [`Orchestrator::recover`].
    pub async fn resume(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let rec = inner.load(id).await?;
        admitted(&rec, Ctl::Resume)?;
        inner.journal(rec.id, "resumed", json!({ "by": actor.name, "frontend": actor.frontend })).await?;
        inner.registry.set_status(rec.id, DeploymentStatus::Running, None).await?;
        if !inner.signal(rec.id, Control::Run) {
            // No task in this process (Parley restarted): installs are idempotent, so
            // the interrupted step simply runs again.
            inner.spawn(rec.id, Job::Rollout { from_step: rec.current_step });
        }
        inner.emit(RolloutEvent::Resumed { id: rec.name.clone() });
        inner.load(id).await
    }

    /// Approves what a held deployment waits for: the next progressive phase, the
    /// blue-green switch, or blue's retirement.
    pub async fn promote(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let rec = inner.load(id).await?;
        admitted(&rec, Ctl::Promote)?;
        let what = rec.reason.clone().unwrap_or_default();
        inner
            .journal(
                rec.id,
                "promoted",
                json!({ "by": actor.name, "frontend": actor.frontend, "step": rec.current_step + 1, "waited": what }),
            )
            .await?;
        inner.registry.set_status(rec.id, DeploymentStatus::Running, None).await?;
        if !inner.signal(rec.id, Control::Run) {
            // No task in this process (Parley restarted while it waited): the step
            // before the hold passed, so carry on after it.
            inner.spawn(rec.id, Job::Rollout { from_step: rec.current_step + 1 });
        }
        inner.emit(RolloutEvent::Resumed { id: rec.name.clone() });
        inner.load(id).await
    }

    /// Stops the rollout and returns every agent it touched to its previous version.
    pub async fn abort(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let rec = inner.load(id).await?;
        admitted(&rec, Ctl::Abort)?;
        let reason = format!("aborted by {} at {}", actor.name, at_step(&rec));
        inner.journal(rec.id, "abort_requested", json!({ "by": actor.name, "frontend": actor.frontend })).await?;
        let progress = format!("{reason}; returning its agents to their previous versions");
        inner.registry.set_status(rec.id, DeploymentStatus::Aborted, Some(&progress)).await?;
        let control = Control::Abort { reason: reason.clone(), outcome: DeploymentStatus::Aborted };
        if !inner.signal(rec.id, control) {
            inner.spawn(rec.id, Job::Rollback { outcome: DeploymentStatus::Aborted, reason });
        }
        inner.load(id).await
    }

    /// Returns the agents of a finished deployment to their previous versions, in the background.
    pub async fn rollback(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let rec = inner.load(id).await?;
        let name = &rec.name;
        admitted(&rec, Ctl::Rollback)?;
        if lifecycle::switched_not_retired(&rec) {
            let reason = format!("switched back to blue by {}", actor.name);
            inner
                .journal(rec.id, "switch_back_requested", json!({ "by": actor.name, "frontend": actor.frontend }))
                .await?;
            let progress = format!("{reason}; returning green to the previous version");
            inner.registry.set_status(rec.id, DeploymentStatus::RolledBack, Some(&progress)).await?;
            let control = Control::Abort { reason: reason.clone(), outcome: DeploymentStatus::RolledBack };
            if !inner.signal(rec.id, control) {
                inner.spawn(rec.id, Job::Rollback { outcome: DeploymentStatus::RolledBack, reason });
            }
            return inner.load(id).await;
        }
        if interrupted(&rec) && !inner.has_task(rec.id) {
            // What an operator means by rolling back a rollout a restart left mid-way:
            // stop it for good and return the agents it touched.
            let reason = format!("rolled back by {} after it was interrupted at {}", actor.name, at_step(&rec));
            inner
                .journal(rec.id, "rollback_requested", json!({ "by": actor.name, "frontend": actor.frontend }))
                .await?;
            let progress = format!("{reason}; returning its agents to their previous versions");
            inner.registry.set_status(rec.id, DeploymentStatus::RolledBack, Some(&progress)).await?;
            inner.spawn(rec.id, Job::Rollback { outcome: DeploymentStatus::RolledBack, reason });
            return inner.load(id).await;
        }
        if inner.has_task(rec.id) {
            return Err(OrchestrateError::WrongState(format!("{name} is being rolled back already")));
        }
        // Rolling back under a later deployment of the same extension would silently
        // undo that one too.
        let agents: BTreeSet<String> = rec.agents().map(str::to_string).collect();
        let filter = DeploymentFilter { agents: Some(agents), ..DeploymentFilter::default() };
        let later = inner.registry.list_deployments(&filter).await?.into_iter().find(|d| {
            d.id > rec.id
                && d.extension == rec.extension
                && (d.status.is_active() || d.status == DeploymentStatus::Succeeded)
        });
        if let Some(later) = later {
            return Err(OrchestrateError::WrongState(format!(
                "{} changed {} on the same agents since ({}); roll that back first",
                later.name, later.extension, later.status
            )));
        }
        let reason = format!("rolled back by {}", actor.name);
        inner.journal(rec.id, "rollback_requested", json!({ "by": actor.name, "frontend": actor.frontend })).await?;
        let touched = rec.targets.iter().filter(|t| t.state.is_touched()).count();
        let progress = format!("{reason}; returning {touched} agents to their previous versions");
        inner.registry.set_status(rec.id, DeploymentStatus::RolledBack, Some(&progress)).await?;
        inner.spawn(rec.id, Job::Rollback { outcome: DeploymentStatus::RolledBack, reason });
        inner.load(id).await
    }

    /// Runs a failed, rolled back or aborted deployment again, from the step where it stopped.
    pub async fn retry(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let rec = inner.load(id).await?;
        let name = &rec.name;
        admitted(&rec, Ctl::Retry)?;
        if inner.has_task(rec.id) {
            return Err(OrchestrateError::WrongState(format!(
                "{name} is still returning its agents; retry it once that is done"
            )));
        }
        let busy = inner.active_agents().await?;
        check_overlap(rec.agents().map(str::to_string).collect::<Vec<_>>().iter(), &busy, Some(name))?;
        inner
            .journal(
                rec.id,
                "retry",
                json!({ "by": actor.name, "frontend": actor.frontend, "from_step": rec.current_step + 1 }),
            )
            .await?;
        inner.registry.reset_targets(rec.id, TargetState::Installed).await?;
        inner.registry.set_status(rec.id, DeploymentStatus::Running, None).await?;
        inner.emit(RolloutEvent::Started {
            id: name.clone(),
            extension: rec.extension.clone(),
            version: rec.version.clone(),
            agents: rec.targets.len(),
            steps: usize::try_from(rec.step_count).unwrap_or(usize::MAX),
        });
        inner.spawn(rec.id, Job::Rollout { from_step: rec.current_step });
        inner.load(id).await
    }

    /// Drain, cordon, uncordon or restart one agent, journalled like rollout steps.
    pub async fn agent_action(
        &self,
        agent: &str,
        endpoint: &str,
        action: AgentAction,
        actor: &Actor,
    ) -> Result<AgentStatus, OrchestrateError> {
        let inner = &self.inner;
        let base = json!({ "agent": agent, "action": action.as_str(), "by": actor.name, "frontend": actor.frontend });
        inner.registry.append_event(None, "agent_action_started", &base).await?;
        let answer = tokio::time::timeout(inner.settings.install_timeout, inner.client.action(endpoint, action))
            .await
            .unwrap_or_else(|_| Err(AgentError::Timeout { endpoint: endpoint.to_string() }));
        match answer {
            Ok(status) => {
                let data = json!({ "agent": agent, "action": action.as_str(), "state": status.state.as_str() });
                inner.registry.append_event(None, "agent_action_succeeded", &data).await?;
                Ok(status)
            }
            Err(e) => {
                let data = json!({ "agent": agent, "action": action.as_str(), "error": e.to_string() });
                inner.registry.append_event(None, "agent_action_failed", &data).await?;
                Err(e.into())
            }
        }
    }

    /// Agent name -> the deployment that is changing it (running, paused, or still
    /// rolling back), for the overlap check of a new deployment.
    pub async fn active_agents(&self) -> HashMap<String, String> {
        match self.inner.active_agents().await {
            Ok(map) => map,
            Err(e) => {
                tracing::error!(error = %e, "could not read active deployments");
                HashMap::new()
            }
        }
    }

    /// At start: deployments a stopped Parley left running or pending become paused,
    /// saying where they stood. Answers them so the front-end can tell the operator;
    /// `resume` continues one, `abort` returns its agents.
    pub async fn recover(&self) -> Result<Vec<DeploymentRecord>, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let mut out = Vec::new();
        for rec in inner.registry.active_deployments().await? {
            if rec.status == DeploymentStatus::Paused || queued(&rec) || inner.has_task(rec.id) {
                continue;
            }
            let reason = format!("{INTERRUPTED} {}: Parley stopped", at_step(&rec));
            inner.journal(rec.id, "interrupted", json!({ "reason": reason, "was": rec.status })).await?;
            inner.registry.set_status(rec.id, DeploymentStatus::Paused, Some(&reason)).await?;
            inner.emit(RolloutEvent::Paused { id: rec.name.clone(), reason });
            out.push(inner.load(&rec.name).await?);
        }
        drop(_transition);
        // Blockers that finished while Parley was down release their queue now.
        inner.start_queued(None).await?;
        Ok(out)
    }
}

impl Inner {
    /// Starts every queued deployment whose blockers have finished, oldest first;
    /// one still blocked gets its reason updated to name what it now waits for.
    /// `finishing`: a deployment whose task is ending and no longer blocks anything.
    pub(super) async fn start_queued(self: &Arc<Self>, finishing: Option<i64>) -> Result<(), OrchestrateError> {
        let _transition = self.transitions.lock().await;
        let active = self.registry.active_deployments().await?;
        if !active.iter().any(queued) {
            return Ok(());
        }
        let mut busy = self.active_agents().await?;
        if let Some(done) = finishing.map(crate::registry::deployment_name) {
            busy.retain(|_, d| *d != done);
        }
        for rec in active.iter().filter(|d| queued(d)) {
            let own = Some(&rec.name);
            // Queued ones count as busy only for those queued after them: first come, first served.
            let ahead: HashMap<String, String> = busy
                .iter()
                .filter(|(_, d)| active.iter().any(|a| a.name == **d && (!queued(a) || a.id < rec.id)))
                .map(|(a, d)| (a.clone(), d.clone()))
                .collect();
            match check_overlap(rec.agents().map(str::to_string).collect::<Vec<_>>().iter(), &ahead, own) {
                Ok(()) => {
                    self.refresh_previous(rec).await?;
                    self.journal(rec.id, "dequeued", json!({ "was": rec.reason })).await?;
                    self.registry.set_status(rec.id, DeploymentStatus::Running, None).await?;
                    self.emit(RolloutEvent::Started {
                        id: rec.name.clone(),
                        extension: rec.extension.clone(),
                        version: rec.version.clone(),
                        agents: rec.targets.len(),
                        steps: usize::try_from(rec.step_count).unwrap_or(usize::MAX),
                    });
                    self.spawn(rec.id, Job::Rollout { from_step: 0 });
                }
                Err(OrchestrateError::Overlap { deployment, .. }) => {
                    let reason = format!("{QUEUED_BEHIND} {deployment}");
                    if rec.reason.as_deref() != Some(reason.as_str()) {
                        self.journal(rec.id, "queued", json!({ "behind": deployment })).await?;
                        self.registry.set_reason(rec.id, &reason).await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The versions the agents of a queued deployment run now: the deployment ahead
    /// of it may have changed them since it was queued, and a rollback must return
    /// them to what they ran just before this one.
    async fn refresh_previous(&self, rec: &DeploymentRecord) -> Result<(), OrchestrateError> {
        let timeout = self.settings.install_timeout;
        let reads = rec.targets.iter().map(|t| async move {
            let status = tokio::time::timeout(timeout, self.client.status(&t.endpoint)).await;
            (t, status)
        });
        for (t, status) in futures::future::join_all(reads).await {
            // An agent that does not answer keeps the version seen at queueing; the
            // install will find it unreachable anyway.
            if let Ok(Ok(status)) = status {
                let now = status.extensions.iter().find(|e| e.name == rec.extension).map(|e| e.version.clone());
                if now != t.previous_version {
                    self.registry.set_target_previous(rec.id, &t.agent, now.as_deref()).await?;
                }
            }
        }
        Ok(())
    }

    pub(super) async fn load(&self, id: &str) -> Result<DeploymentRecord, OrchestrateError> {
        self.registry.deployment_by_name(id).await?.ok_or_else(|| OrchestrateError::UnknownDeployment(id.to_string()))
    }

    pub(super) async fn journal(&self, id: i64, kind: &str, data: serde_json::Value) -> Result<(), RegistryError> {
        self.registry.append_event(Some(id), kind, &data).await.map(|_| ())
    }

    async fn active_agents(&self) -> Result<HashMap<String, String>, RegistryError> {
        let mut map = HashMap::new();
        let active = self.registry.active_deployments().await?;
        for d in &active {
            for agent in d.agents() {
                map.entry(agent.to_string()).or_insert_with(|| d.name.clone());
            }
        }
        // A finished deployment whose rollback still runs is changing its agents too.
        let running: Vec<i64> = self
            .lock_tasks()
            .iter()
            .filter(|(id, t)| !*t.done.borrow() && !active.iter().any(|d| d.id == **id))
            .map(|(id, _)| *id)
            .collect();
        for id in running {
            if let Some(d) = self.registry.deployment(id).await? {
                for t in d.targets.iter().filter(|t| t.state.is_touched()) {
                    map.entry(t.agent.clone()).or_insert_with(|| d.name.clone());
                }
            }
        }
        Ok(map)
    }

    /// Starts the background task for a deployment and registers it for control and waiting.
    pub(super) fn spawn(self: &Arc<Self>, id: i64, job: Job) {
        let (control_tx, control_rx) = watch::channel(Control::Run);
        let (done_tx, done_rx) = watch::channel(false);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.lock_tasks().insert(id, Task { control: control_tx, done: done_rx, generation });
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            // Marks the task done even if it panics, so `wait` never hangs.
            let _done = DoneGuard { inner: Arc::clone(&inner), id, generation, done: done_tx };
            run::run_job(&inner, id, job, control_rx).await;
        });
    }
}

struct DoneGuard {
    inner: Arc<Inner>,
    id: i64,
    generation: u64,
    done: watch::Sender<bool>,
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        let _ = self.done.send(true);
        let mut tasks = self.inner.lock_tasks();
        if tasks.get(&self.id).is_some_and(|t| t.generation == self.generation) {
            tasks.remove(&self.id);
        }
    }
}

fn check_overlap<'a>(
    agents: impl Iterator<Item = &'a String>,
    busy: &HashMap<String, String>,
    except: Option<&String>,
) -> Result<(), OrchestrateError> {
    let mut clash: Vec<(String, String)> =
        agents.filter_map(|a| busy.get(a).filter(|d| Some(*d) != except).map(|d| (a.clone(), d.clone()))).collect();
    let Some((_, deployment)) = clash.first().cloned() else { return Ok(()) };
    clash.retain(|(_, d)| *d == deployment);
    Err(OrchestrateError::Overlap { agents: clash.into_iter().map(|(a, _)| a).collect(), deployment })
}

/// Paused by [`Orchestrator::recover`]: a previous Parley stopped mid-way.
pub fn interrupted(rec: &DeploymentRecord) -> bool {
    Stage::of(rec) == Stage::Interrupted
}

/// Waiting (pending) for an overlapping deployment to finish.
pub fn queued(rec: &DeploymentRecord) -> bool {
    matches!(Stage::of(rec), Stage::Queued { .. })
}

/// The lifecycle's verdict on `control` for `rec`, as the orchestrator's error.
fn admitted(rec: &DeploymentRecord, control: Ctl) -> Result<(), OrchestrateError> {
    lifecycle::admits(rec, control)
        .map_err(|refusal| OrchestrateError::Refused { deployment: rec.name.clone(), refusal })
}

fn at_step(rec: &DeploymentRecord) -> String {
    format!("step {} of {}", rec.current_step + 1, rec.step_count.max(1))
}
