//! The orchestrator's public controls: start, pause, resume, abort, rollback, retry,
//! agent actions and recovery after a restart. Each checks the deployment's state,
//! journals the request, and then signals or spawns the background task.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;

use super::journal::{self, Event, Found};
use super::lifecycle::{self, Control as Ctl, Hold, Stage, INTERRUPTED, QUEUED_BEHIND};
use super::run::{self, Job};
use super::{plan_with, Control, DeployRequest, Inner, OrchestrateError, Orchestrator, RolloutEvent, Task};
use crate::agent::protocol::{AgentAction, AgentStatus};
use crate::agent::AgentError;
use crate::ops::{Actor, DeploymentStatus};
use crate::registry::{
    Admission, DeploymentFilter, DeploymentRecord, NewDeployment, NewTarget, RegistryError, TargetState,
};

impl Orchestrator {
    /// Journals the deployment (running) and its plan, starts the rollout in the
    /// background, and answers at once.
    pub async fn start(&self, req: DeployRequest) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let plan = plan_with(&req.strategy, &req.targets, &inner.settings, req.require_approval)?;
        // A threshold for a template that does not exist, or in the wrong unit, is
        // refused before anything is journalled.
        super::analysis_gate::resolve(inner, &req.extension, &req.gate)
            .map_err(|e| OrchestrateError::InvalidPlan(e.to_string()))?;
        let _transition = inner.transitions.lock().await;
        let _driving = inner.drive().await?;

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
        let created = Event::Created {
            extension: req.extension.clone(),
            version: req.version.clone(),
            scope: req.scope.clone(),
            strategy: req.strategy.clone(),
            by: req.actor.name.clone(),
            frontend: req.actor.frontend.clone(),
            utterance: req.utterance.clone(),
            agents: targets.iter().map(|t| t.agent.clone()).collect(),
            require_approval: req.require_approval,
            max_failures: req.max_failures,
            gate: req.gate.clone(),
        };
        let steps = super::analysis_gate::describe_plan(inner, &plan, &req.extension, &req.gate);
        let planned = Event::Planned { steps, plan: Some(plan.clone()) };
        let new = NewDeployment {
            extension: req.extension.clone(),
            version: req.version.clone(),
            scope: req.scope.clone(),
            strategy: req.strategy.clone(),
            status: DeploymentStatus::Running,
            actor: req.actor.clone(),
            utterance: req.utterance.clone(),
            step_count: u32::try_from(plan.steps.len()).unwrap_or(u32::MAX),
            targets,
        };
        // The overlap check and the insert are one transaction: see `admit_deployment`.
        let rows = [created.to_row(), planned.to_row()];
        let events: Vec<(&str, serde_json::Value)> = rows.iter().map(|(k, d)| (k.as_str(), d.clone())).collect();
        let queued = |behind: &str| Event::Queued { behind: behind.to_string() }.to_row();
        let queue: Option<crate::registry::QueuedRow<'_>> = req.queue.then_some(&queued);
        let record = match inner.registry.admit_deployment(&new, queue, &events).await? {
            Admission::Overlap { agents, deployment } => return Err(OrchestrateError::Overlap { agents, deployment }),
            Admission::Queued { record, .. } => return Ok(record),
            Admission::Created(record) => record,
        };
        inner.emit(RolloutEvent::Started {
            id: record.name.clone(),
            extension: record.extension.clone(),
            version: record.version.clone(),
            agents: record.targets.len(),
            steps: plan.steps.len(),
        });
        inner.spawn(record.id, Job::Rollout { from_step: 0 });
        Ok(record)
    }

    /// Holds the rollout before its next batch (or during the bake).
    pub async fn pause(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let _driving = inner.drive().await?;
        let rec = inner.load(id).await?;
        admitted(&rec, Ctl::Pause)?;
        let reason = format!("paused by {} at {}", actor.name, at_step(&rec));
        inner
            .journal(
                rec.id,
                Event::Paused { by: actor.name.clone(), frontend: actor.frontend.clone(), reason: reason.clone() },
            )
            .await?;
        inner.registry.set_held(rec.id, DeploymentStatus::Paused, &Hold::Paused, &reason).await?;
        inner.signal(rec.id, Control::Pause);
        inner.emit(RolloutEvent::Paused { id: rec.name.clone(), reason });
        inner.load(id).await
    }

    /// Carries on a paused rollout, also one paused by [`Orchestrator::recover`].
    pub async fn resume(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let _driving = inner.drive().await?;
        let rec = inner.load(id).await?;
        admitted(&rec, Ctl::Resume)?;
        inner.journal(rec.id, Event::Resumed { by: actor.name.clone(), frontend: actor.frontend.clone() }).await?;
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
        let _driving = inner.drive().await?;
        let rec = inner.load(id).await?;
        admitted(&rec, Ctl::Promote)?;
        let what = rec.reason.clone().unwrap_or_default();
        inner
            .journal(
                rec.id,
                Event::Promoted {
                    by: actor.name.clone(),
                    frontend: actor.frontend.clone(),
                    step: rec.current_step + 1,
                    waited: what,
                },
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
    /// The deployment is `rolling_back` until they have answered; only then `aborted`.
    pub async fn abort(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let _driving = inner.drive().await?;
        let rec = inner.load(id).await?;
        admitted(&rec, Ctl::Abort)?;
        let reason = format!("aborted by {} at {}", actor.name, at_step(&rec));
        inner
            .journal(rec.id, Event::AbortRequested { by: actor.name.clone(), frontend: actor.frontend.clone() })
            .await?;
        inner.stop_and_return(&rec, DeploymentStatus::Aborted, reason).await?;
        inner.load(id).await
    }

    /// Returns the agents of a finished deployment to their previous versions, in the background.
    pub async fn rollback(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let _driving = inner.drive().await?;
        let rec = inner.load(id).await?;
        let name = &rec.name;
        admitted(&rec, Ctl::Rollback)?;
        if lifecycle::switched_not_retired(&rec) {
            let reason = format!("switched back to blue by {}", actor.name);
            inner
                .journal(
                    rec.id,
                    Event::SwitchBackRequested { by: actor.name.clone(), frontend: actor.frontend.clone() },
                )
                .await?;
            inner.stop_and_return(&rec, DeploymentStatus::RolledBack, reason).await?;
            return inner.load(id).await;
        }
        if interrupted(&rec) && !inner.has_task(rec.id) {
            // What an operator means by rolling back a rollout a restart left mid-way:
            // stop it for good and return the agents it touched.
            let reason = format!("rolled back by {} after it was interrupted at {}", actor.name, at_step(&rec));
            inner
                .journal(rec.id, Event::RollbackRequested { by: actor.name.clone(), frontend: actor.frontend.clone() })
                .await?;
            inner.stop_and_return(&rec, DeploymentStatus::RolledBack, reason).await?;
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
        inner
            .journal(rec.id, Event::RollbackRequested { by: actor.name.clone(), frontend: actor.frontend.clone() })
            .await?;
        inner.stop_and_return(&rec, DeploymentStatus::RolledBack, reason).await?;
        inner.load(id).await
    }

    /// Runs a failed, rolled back or aborted deployment again, from the step where it stopped.
    pub async fn retry(&self, id: &str, actor: &Actor) -> Result<DeploymentRecord, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let _driving = inner.drive().await?;
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
                Event::Retry {
                    by: actor.name.clone(),
                    frontend: actor.frontend.clone(),
                    from_step: rec.current_step + 1,
                },
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
        let started = Event::AgentActionStarted {
            agent: agent.to_string(),
            action: action.as_str().to_string(),
            by: actor.name.clone(),
            frontend: actor.frontend.clone(),
        };
        inner.record(None, &started).await?;
        let answer = tokio::time::timeout(inner.settings.install_timeout, inner.client.action(endpoint, action))
            .await
            .unwrap_or_else(|_| Err(AgentError::Timeout { endpoint: endpoint.to_string() }));
        match answer {
            Ok(status) => {
                let done = Event::AgentActionSucceeded {
                    agent: agent.to_string(),
                    action: action.as_str().to_string(),
                    state: status.state.as_str().to_string(),
                };
                inner.record(None, &done).await?;
                Ok(status)
            }
            Err(e) => {
                let failed = Event::AgentActionFailed {
                    agent: agent.to_string(),
                    action: action.as_str().to_string(),
                    error: e.to_string(),
                };
                inner.record(None, &failed).await?;
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

    /// At start: takes the data directory's drive lock and, if no other process
    /// drives, takes over what a stopped Parley left unfinished, after comparing each
    /// deployment's journal with what its agents report (and correcting the journal
    /// where they contradict it). A running rollout becomes paused, saying where it
    /// stood and what was found: `resume` continues it, `roll back` returns its agents.
    /// A rollback that was under way is finished, for the reason it started with.
    /// Answers both kinds, so the front-end can tell the operator; nothing when
    /// another live process drives this data directory (its rollouts are not ours).
    pub async fn recover(&self) -> Result<Vec<DeploymentRecord>, OrchestrateError> {
        let inner = &self.inner;
        let _transition = inner.transitions.lock().await;
        let fresh = match inner.drive.get() {
            None => true,
            Some(lock) => match lock.acquire() {
                Ok(fresh) => fresh,
                Err(holder) => {
                    tracing::info!(%holder, "another process drives this data directory; nothing to recover here");
                    return Ok(Vec::new());
                }
            },
        };
        let _driving = super::Driving { inner };
        if !fresh {
            return Ok(Vec::new());
        }
        inner.take_over().await
    }
}

impl Inner {
    /// Takes over the unfinished deployments that have no task here; called with
    /// `transitions` held, right after this process took the drive lock (so nobody
    /// else runs them). See [`Orchestrator::recover`].
    pub(super) async fn take_over(self: &Arc<Self>) -> Result<Vec<DeploymentRecord>, OrchestrateError> {
        let mut out = Vec::new();
        for mut rec in self.registry.active_deployments().await? {
            if queued(&rec) || self.has_task(rec.id) {
                continue;
            }
            self.resolve_endpoints(&mut rec);
            let found = self.reconcile(&rec).await?;
            match rec.status {
                DeploymentStatus::RollingBack => {
                    let (outcome, reason) = self.rollback_intent(&rec).await?;
                    let progress = format!(
                        "{reason}; Parley stopped while returning its agents and finishes it now ({})",
                        found.summary
                    );
                    self.journal(
                        rec.id,
                        Event::RollbackResumed { reason: reason.clone(), outcome, found: found.summary.clone() },
                    )
                    .await?;
                    self.registry.set_reason(rec.id, &progress).await?;
                    self.spawn(rec.id, Job::Rollback { outcome, reason });
                }
                DeploymentStatus::Running | DeploymentStatus::Pending => {
                    let rec = self.load(&rec.name).await?;
                    let reason = format!("{INTERRUPTED} {}: Parley stopped; {}", at_step(&rec), found.summary);
                    self.journal(rec.id, Event::Interrupted { reason: reason.clone(), was: rec.status }).await?;
                    self.registry.set_held(rec.id, DeploymentStatus::Paused, &Hold::Interrupted, &reason).await?;
                    self.emit(RolloutEvent::Paused { id: rec.name.clone(), reason });
                }
                // Held (for promote, by the operator): it waits for the operator as it did.
                _ => continue,
            }
            out.push(self.load(&rec.name).await?);
        }
        // Blockers that finished while Parley was down release their queue now.
        self.start_queued_locked(None).await?;
        Ok(out)
    }

    /// Compares what the journal says of each target with what the agent reports now,
    /// journals the findings (`reconciled`) and corrects the journal where the agent
    /// contradicts it: the agents are the truth. An agent a kill caught mid-install
    /// is installed or still pending, whichever it reports.
    async fn reconcile(&self, rec: &DeploymentRecord) -> Result<Reconciled, OrchestrateError> {
        let timeout = self.settings.install_timeout;
        let reads = rec.targets.iter().map(|t| async move {
            let status = tokio::time::timeout(timeout, self.client.status(&t.endpoint)).await;
            let version = match status {
                Ok(Ok(s)) => Ok(s.extensions.iter().find(|e| e.name == rec.extension).map(|e| e.version.clone())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(AgentError::Timeout { endpoint: t.endpoint.clone() }.to_string()),
            };
            (t, version)
        });
        let mut agree = 0usize;
        let mut on_new = 0usize;
        let mut corrected = Vec::new();
        let mut silent = Vec::new();
        let mut entries = Vec::new();
        for (t, version) in futures::future::join_all(reads).await {
            let version = match version {
                Ok(v) => v,
                Err(error) => {
                    silent.push(t.agent.clone());
                    entries.push(Found::Silent { agent: t.agent.clone(), journal: t.state, error });
                    continue;
                }
            };
            let new = version.as_deref() == Some(rec.version.as_str());
            let old = version == t.previous_version;
            on_new += usize::from(new);
            let runs = version
                .as_deref()
                .map(|v| format!("{} {v}", rec.extension))
                .unwrap_or_else(|| format!("no {}", rec.extension));
            // What the journal should say, when the agent contradicts it.
            let fix = match t.state {
                TargetState::Installed if !new => Some(TargetState::Pending),
                TargetState::Installing | TargetState::Pending | TargetState::RolledBack if new => {
                    Some(TargetState::Installed)
                }
                TargetState::Installing if old => Some(TargetState::Pending),
                _ => None,
            };
            entries.push(Found::Answered { agent: t.agent.clone(), journal: t.state, runs: version.clone(), now: fix });
            match fix {
                Some(state) => {
                    let detail = format!("found running {runs} after a restart (journal said {})", t.state.as_str());
                    self.registry.set_target_state(rec.id, &t.agent, state, Some(&detail)).await?;
                    corrected.push(format!(
                        "{} was {} and runs {runs}",
                        t.agent,
                        crate::words::spaced(t.state.as_str())
                    ));
                }
                None => agree += 1,
            }
        }
        let mut parts =
            vec![format!("checked {} agents: {on_new} on {} {}", rec.targets.len(), rec.extension, rec.version)];
        if corrected.is_empty() && silent.is_empty() {
            parts.push("all as journalled".to_string());
        } else {
            parts.push(format!("{agree} as journalled"));
        }
        if !corrected.is_empty() {
            parts.push(format!("corrected {}", corrected.join(", ")));
        }
        if !silent.is_empty() {
            parts.push(format!("no answer from {}", silent.join(", ")));
        }
        let summary = parts.join(", ");
        self.journal(rec.id, Event::Reconciled { summary: summary.clone(), agents: entries }).await?;
        Ok(Reconciled { summary })
    }

    /// Why a rollback that is under way started and how it ends, as journalled.
    async fn rollback_intent(&self, rec: &DeploymentRecord) -> Result<(DeploymentStatus, String), OrchestrateError> {
        Ok(match self.rollback_started(rec.id).await? {
            Some((outcome, reason)) => (outcome, reason),
            None => (DeploymentStatus::RolledBack, rec.reason.clone().unwrap_or_else(|| "rolled back".to_string())),
        })
    }

    /// Marks the deployment `rolling_back` for `reason`, journalling how it is to end,
    /// before any agent is touched: a Parley killed from here on finishes it at restart.
    /// Called with `transitions` held.
    pub(super) async fn begin_rollback(
        &self,
        rec: &DeploymentRecord,
        outcome: DeploymentStatus,
        reason: &str,
    ) -> Result<(), OrchestrateError> {
        let touched: Vec<String> =
            rec.targets.iter().filter(|t| t.state.is_touched()).map(|t| t.agent.clone()).collect();
        let started = Event::RollbackStarted { reason: reason.to_string(), outcome, agents: touched.clone() };
        self.journal(rec.id, started).await?;
        let noun = crate::words::noun(touched.len(), "agent");
        let progress = format!("{reason}; returning {} {noun} to their previous versions", touched.len());
        self.registry.set_status(rec.id, DeploymentStatus::RollingBack, Some(&progress)).await?;
        Ok(())
    }

    /// The operator's abort, rollback or switch-back: journalled as under way, then
    /// handed to the rollout task if one runs here (it stops at its next checkpoint),
    /// else to a new rollback task. Called with `transitions` held.
    async fn stop_and_return(
        self: &Arc<Self>,
        rec: &DeploymentRecord,
        outcome: DeploymentStatus,
        reason: String,
    ) -> Result<(), OrchestrateError> {
        self.begin_rollback(rec, outcome, &reason).await?;
        let control = Control::Abort { reason: reason.clone(), outcome };
        if !self.signal(rec.id, control) {
            self.spawn(rec.id, Job::Rollback { outcome, reason });
        }
        Ok(())
    }
}

/// What [`Inner::reconcile`] found, in a clause for the deployment's reason.
struct Reconciled {
    summary: String,
}

impl Inner {
    /// Starts every queued deployment whose blockers have finished, oldest first;
    /// one still blocked gets its reason updated to name what it now waits for.
    /// `finishing`: a deployment whose task is ending and no longer blocks anything.
    pub(super) async fn start_queued(self: &Arc<Self>, finishing: Option<i64>) -> Result<(), OrchestrateError> {
        let _transition = self.transitions.lock().await;
        self.start_queued_locked(finishing).await
    }

    async fn start_queued_locked(self: &Arc<Self>, finishing: Option<i64>) -> Result<(), OrchestrateError> {
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
                    self.journal(rec.id, Event::Dequeued { was: rec.reason.clone() }).await?;
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
                    let hold = Hold::Queued { behind: deployment.clone() };
                    if rec.hold.as_ref() != Some(&hold) {
                        let reason = format!("{QUEUED_BEHIND} {deployment}");
                        self.journal(rec.id, Event::Queued { behind: deployment.clone() }).await?;
                        self.registry.set_held(rec.id, DeploymentStatus::Pending, &hold, &reason).await?;
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
        let mut rec = rec.clone();
        self.resolve_endpoints(&mut rec);
        let rec = &rec;
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
        let mut rec = self
            .registry
            .deployment_by_name(id)
            .await?
            .ok_or_else(|| OrchestrateError::UnknownDeployment(id.to_string()))?;
        self.resolve_endpoints(&mut rec);
        Ok(rec)
    }

    /// Journals `event` for deployment `id`.
    pub(super) async fn journal(&self, id: i64, event: Event) -> Result<(), RegistryError> {
        self.record(Some(id), &event).await
    }

    /// Appends `event` to the log, for a deployment or (agent actions) for none.
    pub(super) async fn record(&self, deployment: Option<i64>, event: &Event) -> Result<(), RegistryError> {
        let (kind, data) = event.to_row();
        self.registry.append_event(deployment, &kind, &data).await.map(|_| ())
    }

    /// The latest event of `kind` for deployment `id`, typed; `None` when there is
    /// none (or it does not read as that kind).
    pub(super) async fn last(&self, id: i64, kind: &str) -> Result<Option<Event>, RegistryError> {
        Ok(self.registry.last_event(id, kind).await?.as_ref().and_then(Event::of))
    }

    /// How the rollback under way is to end and why, as its `rollback_started` said.
    pub(super) async fn rollback_started(&self, id: i64) -> Result<Option<(DeploymentStatus, String)>, RegistryError> {
        Ok(match self.last(id, journal::kind::ROLLBACK_STARTED).await? {
            Some(Event::RollbackStarted { outcome, reason, .. }) => Some((outcome, reason)),
            _ => None,
        })
    }

    /// Agent name -> the unfinished deployment (rolling back included) that has it.
    async fn active_agents(&self) -> Result<HashMap<String, String>, RegistryError> {
        let mut map = HashMap::new();
        let active = self.registry.active_deployments().await?;
        for d in &active {
            for agent in d.agents() {
                map.entry(agent.to_string()).or_insert_with(|| d.name.clone());
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
            let done = DoneGuard { inner: Arc::clone(&inner), id, generation, done: done_tx };
            run::run_job(&inner, id, job, control_rx).await;
            drop(done);
            // Under `transitions`, so a control that took the lock for a task it is
            // about to spawn never sees it let go in between.
            let _transition = inner.transitions.lock().await;
            inner.release_if_idle();
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
