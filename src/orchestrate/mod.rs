//! The orchestration core: the one place where rollouts run.
//!
//! [`plan`] splits a deployment's targets into steps; the [`Orchestrator`] journals the
//! deployment in the registry, runs each rollout as a background task (install a step,
//! bake, health gate, next step), rolls back by itself when an install fails or the
//! gate is breached, and takes pause / resume / abort / rollback / retry from any
//! front-end. Every transition is journalled before it is acted on, so a restarted
//! Parley ([`Orchestrator::recover`]) knows where each rollout stood.

mod analysis_gate;
mod announce;
mod control;
mod driver;
mod gate;
pub mod journal;
pub mod lifecycle;
mod plan;
mod run;
mod suspend;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::agent::{AgentClient, AgentError};
use crate::ops::{Actor, DeploymentStatus, Scope, Selector, Strategy};
use crate::registry::{Registry, RegistryError};
use crate::topology::{HealthThresholds, TopologyHandle};

pub use announce::{announce, event_deployment};
pub use control::{interrupted, queued};
pub use driver::Holder;
pub use gate::{Baseline, GateBreach, GateLimits, GateOutcome, GateResult, GateSpec, Tolerance};
pub use lifecycle::{switched_not_retired, QUEUED_BEHIND};
pub(crate) use plan::{describe_duration, describe_gate};
pub use plan::{plan, plan_with, Plan, PlanStep, Wait};

/// The start of a held deployment's reason when it waits for the operator's
/// "promote" (the next phase, or a blue-green switch or retirement).
pub const WAITING_FOR_PROMOTE: &str = "waiting for promote";

/// How rollouts run.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutSettings {
    /// Wait after each batch before the health gate, so that a bad version has time to show.
    pub bake: Duration,
    pub gate: HealthThresholds,
    /// How far above the not-yet-upgraded agents' median a metric may go.
    pub tolerance: Tolerance,
    /// How many failed, error and inconclusive measurements a gate tolerates.
    pub gate_limits: GateLimits,
    /// Agents that may fail to install in one step before the rollout stops and rolls back.
    pub max_failed_per_step: usize,
    /// Agents that may fail to install over the whole rollout.
    pub max_failed_total: usize,
    /// Progressive phases wait for "promote" before the next one.
    pub progressive_approval: bool,
    /// A blue-green deployment retires blue by itself this long after the switch;
    /// `None`: only when the operator says so.
    pub blue_retire_after: Option<Duration>,
    /// Batch size of a rolling deployment that names none, in percent of its targets.
    pub default_batch_percent: u8,
    /// Bound on one install (or removal, or health read) on one agent.
    pub install_timeout: Duration,
    /// How long a rollback keeps trying an agent that does not answer before it
    /// gives up on it (and the deployment ends `failed`, naming it).
    pub rollback_patience: Duration,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        RolloutSettings {
            bake: Duration::from_secs(2),
            gate: HealthThresholds::default(),
            tolerance: Tolerance::default(),
            gate_limits: GateLimits::default(),
            max_failed_per_step: 0,
            max_failed_total: 0,
            progressive_approval: true,
            blue_retire_after: Some(Duration::from_secs(3600)),
            default_batch_percent: 25,
            install_timeout: Duration::from_secs(30),
            rollback_patience: Duration::from_secs(5),
        }
    }
}

/// A setting outside the range it may take: says the range, and whoever reads the
/// setting (a config key, a command-line flag) names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be between {0}")]
pub struct OutOfRange(pub &'static str);

impl RolloutSettings {
    /// A bake of `secs` seconds, at most an hour.
    pub fn bake_secs(secs: f64) -> Result<Duration, OutOfRange> {
        if (0.0..=3600.0).contains(&secs) {
            Ok(Duration::from_secs_f64(secs))
        } else {
            Err(OutOfRange("0 and 3600"))
        }
    }

    /// A rolling batch of `percent` of the targets.
    pub fn batch_percent(percent: u8) -> Result<u8, OutOfRange> {
        if (1..=100).contains(&percent) {
            Ok(percent)
        } else {
            Err(OutOfRange("1 and 100"))
        }
    }

    /// Blue retired `secs` after the switch; 0: only on "promote". A standby kept for
    /// up to 30 days; longer is almost surely a typo, and a number that big would not
    /// fit a timer anyway.
    pub fn blue_retire_secs(secs: f64) -> Result<Option<Duration>, OutOfRange> {
        match secs {
            0.0 => Ok(None),
            s if s.is_finite() && s > 0.0 && s <= 30.0 * 86_400.0 => Ok(Some(Duration::from_secs_f64(s))),
            _ => Err(OutOfRange("0 (only on \"promote\") and 2592000 (30 days)")),
        }
    }
}

/// One agent a deployment will reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub agent: String,
    pub endpoint: String,
    /// The version installed before; `None` when the extension is not installed.
    pub previous: Option<String>,
    /// Where the agent sits, for progressive phases by group; empty when unknown.
    pub placement: Placement,
}

/// An agent's region, zone, labels and capabilities: what phases are made of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub region: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
}

impl Placement {
    /// Whether `agent`, placed here, is one of the agents `sel` names.
    pub fn matches(&self, agent: &str, sel: &Selector) -> bool {
        sel.selects(agent, &self.region, &self.zone, &self.labels, &self.capabilities)
    }

    /// The agent's value of a placement key: `zone`, `region`, or a label key.
    pub fn group(&self, key: &str) -> Option<&str> {
        let value = match key {
            "zone" => self.zone.as_str(),
            "region" => self.region.as_str(),
            label => self.labels.get(label).map(String::as_str).unwrap_or(""),
        };
        (!value.is_empty()).then_some(value)
    }
}

/// A feasible deploy operation, with its targets resolved from the topology.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub extension: String,
    pub version: String,
    pub scope: Scope,
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    pub actor: Actor,
    pub utterance: String,
    /// Wait for "promote" between steps: `Some(true)` whatever the strategy,
    /// `Some(false)` not even between progressive phases, `None` as the strategy does.
    pub require_approval: Option<bool>,
    /// The operator's failure budget for the whole rollout; `None`: the settings'.
    pub max_failures: Option<u32>,
    /// Overlapping an active rollout, queue behind it instead of refusing.
    pub queue: bool,
    /// The rollout's own analysis thresholds ("gated on p99 latency under 300 ms").
    pub gate: Vec<crate::ops::GateRequirement>,
}

impl RolloutSettings {
    pub fn gate_spec(&self) -> GateSpec {
        GateSpec { thresholds: self.gate, tolerance: self.tolerance, limits: self.gate_limits }
    }
}

/// Progress of rollouts, for front-ends to render. Steps are 1-based here, as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RolloutEvent {
    Started {
        id: String,
        extension: String,
        version: String,
        agents: usize,
        steps: usize,
    },
    StepStarted {
        id: String,
        step: usize,
        of: usize,
        agents: Vec<String>,
    },
    AgentInstalled {
        id: String,
        agent: String,
        version: String,
    },
    AgentFailed {
        id: String,
        agent: String,
        error: String,
    },
    GateEvaluated {
        id: String,
        step: usize,
        passed: bool,
        outcome: GateOutcome,
        breaches: Vec<GateBreach>,
        unreachable: Vec<String>,
    },
    Paused {
        id: String,
        reason: String,
    },
    Resumed {
        id: String,
    },
    Finished {
        id: String,
        status: DeploymentStatus,
        reason: String,
    },
    RollbackProgress {
        id: String,
        agent: String,
        version: Option<String>,
        ok: bool,
        detail: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum OrchestrateError {
    #[error("there is no deployment {0}")]
    UnknownDeployment(String),
    /// The control does not fit the deployment's state as its record shows it.
    #[error("{}", .refusal.reason(.deployment))]
    Refused { deployment: String, refusal: lifecycle::Refusal },
    /// The control does not fit what is running now; the message says what would.
    #[error("{0}")]
    WrongState(String),
    #[error("{} already part of {deployment}, which is still active; wait for it to finish or abort it", agents_phrase(.agents))]
    Overlap { agents: Vec<String>, deployment: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot plan the deployment: {0}")]
    InvalidPlan(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// Another process drives the rollouts of this data directory.
    #[error("{0} drives the rollouts of this data directory (lock {path}); say it there, or again once its rollouts have ended", path = .0.path.display())]
    Driven(Holder),
}

fn agents_phrase(agents: &[String]) -> String {
    format!("{} {}", crate::words::and_more(agents, 5), crate::words::is_are(agents.len()))
}

/// What the operator asked a running rollout task to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Control {
    Run,
    Pause,
    /// With the reason the registry records ("aborted by alice at step 2 of 4") and
    /// the status once the agents are returned (aborted, or rolled back for a
    /// blue-green switch-back).
    Abort {
        reason: String,
        outcome: DeploymentStatus,
    },
}

/// A background task working on one deployment (a rollout or a rollback).
struct Task {
    control: watch::Sender<Control>,
    done: watch::Receiver<bool>,
    /// Tells this task's entry from a later one for the same deployment.
    generation: u64,
}

pub(crate) struct Inner {
    registry: Registry,
    client: AgentClient,
    settings: RolloutSettings,
    events: broadcast::Sender<RolloutEvent>,
    tasks: Mutex<HashMap<i64, Task>>,
    generation: std::sync::atomic::AtomicU64,
    /// Serialises read-check-write of a deployment's status between the control
    /// methods and the tasks, so that e.g. an abort and a finishing rollout cannot
    /// both decide the outcome.
    transitions: tokio::sync::Mutex<()>,
    /// The live model of the fleet, for agents that are cordoned or down: they count
    /// against a rolling deployment's max-unavailable, and for where each agent answers
    /// now. Unset: none is known to be down, and targets keep their recorded endpoints.
    fleet: OnceLock<TopologyHandle>,
    /// The data directory's drive lock; unset (in-memory registries): this process is
    /// the only one that can see the registry.
    drive: OnceLock<driver::DriveLock>,
    /// The metrics system analysis templates ask (`[metrics]`); unset: built-in gates.
    prometheus: OnceLock<crate::analysis::Prometheus>,
}

/// While a control holds the drive lock; lets it go at the end if it started no task.
struct Driving<'a> {
    inner: &'a Inner,
}

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.inner.release_if_idle();
    }
}

/// Runs rollouts. Cheap to clone; every clone drives the same tasks.
#[derive(Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

impl Orchestrator {
    pub fn new(registry: Registry, client: AgentClient, settings: RolloutSettings) -> Orchestrator {
        let (events, _) = broadcast::channel(1024);
        Orchestrator {
            inner: Arc::new(Inner {
                registry,
                client,
                settings,
                events,
                tasks: Mutex::new(HashMap::new()),
                generation: std::sync::atomic::AtomicU64::new(0),
                transitions: tokio::sync::Mutex::new(()),
                fleet: OnceLock::new(),
                drive: OnceLock::new(),
                prometheus: OnceLock::new(),
            }),
        }
    }

    /// Lets rollouts see which agents are cordoned, draining or down right now, so
    /// that they count against a rolling deployment's max-unavailable. Set once, at
    /// start; a second call changes nothing.
    pub fn watch_fleet(&self, topology: TopologyHandle) {
        let _ = self.inner.fleet.set(topology);
    }

    /// Drives rollouts only while holding `path` (an OS file lock in the data
    /// directory), so that two processes on one registry never drive the same
    /// deployments. Set once, at start, before [`Orchestrator::recover`].
    pub fn lock_data_dir(&self, path: &std::path::Path) {
        let _ = self.inner.drive.set(driver::DriveLock::new(path));
    }

    /// Gates the rollouts of extensions with analysis templates by queries to this
    /// Prometheus. Set once, at start; a second call changes nothing.
    pub fn use_prometheus(&self, prometheus: crate::analysis::Prometheus) {
        let _ = self.inner.prometheus.set(prometheus);
    }

    /// The analysis templates a rollout of `extension` with `gate` would be judged
    /// by; `None`: the built-in gate. An error says why the requirements cannot be met.
    pub fn analysis_for(
        &self,
        extension: &str,
        gate: &[crate::ops::GateRequirement],
    ) -> Result<Option<Vec<crate::analysis::Template>>, crate::analysis::AnalysisError> {
        analysis_gate::resolve(&self.inner, extension, gate)
    }

    /// A plan's steps in words for a rollout of `extension` with `gate`: as
    /// [`Plan::describe`], with the analysis templates as the gate where they judge.
    pub fn describe_plan(&self, plan: &Plan, extension: &str, gate: &[crate::ops::GateRequirement]) -> Vec<String> {
        analysis_gate::describe_plan(&self.inner, plan, extension, gate)
    }

    /// The analysis gate in words for a rollout of `extension` with `gate`; `None`:
    /// the built-in gate judges.
    pub fn describe_analysis(&self, extension: &str, gate: &[crate::ops::GateRequirement]) -> Option<String> {
        self.analysis_for(extension, gate).ok().flatten().map(|ts| analysis_gate::describe(&ts))
    }

    pub fn settings(&self) -> &RolloutSettings {
        &self.inner.settings
    }

    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Progress of every rollout from now on. A receiver that lags loses the oldest
    /// events (the registry still has them all).
    pub fn subscribe(&self) -> broadcast::Receiver<RolloutEvent> {
        self.inner.events.subscribe()
    }

    /// Until the task working on `id` (a rollout or rollback) ends; at once if none runs.
    pub async fn wait(&self, id: &str) {
        let Some(num) = crate::registry::deployment_id_from_name(id) else { return };
        let done = self.inner.lock_tasks().get(&num).map(|t| t.done.clone());
        if let Some(mut done) = done {
            let _ = done.wait_for(|d| *d).await;
        }
    }

    /// Until every task has ended or is paused: what a front-end waits for before it
    /// exits. A paused rollout is safe to leave; the registry has it, and the next
    /// Parley resumes or rolls it back on request.
    pub async fn wait_settled(&self) {
        loop {
            let busy =
                self.inner.lock_tasks().values().any(|t| !*t.done.borrow() && *t.control.borrow() != Control::Pause);
            if !busy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Until no rollout or rollback task runs. A paused rollout's task is still
    /// running (it waits for resume or abort), so this waits for it too.
    pub async fn wait_idle(&self) {
        loop {
            let pending: Vec<watch::Receiver<bool>> =
                self.inner.lock_tasks().values().map(|t| t.done.clone()).collect();
            if pending.is_empty() {
                return;
            }
            for mut done in pending {
                let _ = done.wait_for(|d| *d).await;
            }
        }
    }
}

impl Inner {
    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Task>> {
        // A panic while holding this lock cannot leave the map half-updated (single
        // inserts and removes), so a poisoned lock is still good to use.
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn emit(&self, event: RolloutEvent) {
        // No subscriber is fine: the registry is the record.
        let _ = self.events.send(event);
    }

    /// Tells the live model what agents run now that Parley installed or restored it,
    /// ahead of the next poll: the next rollout's previous versions (what its rollback
    /// returns to) are read from the model.
    fn note_installed<'a>(&self, extension: &str, installed: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) {
        let Some(fleet) = self.fleet.get() else { return };
        let confirmed = installed
            .into_iter()
            .map(|(agent, version)| crate::topology::ConfirmedInstall::now(agent, extension, version))
            .collect();
        fleet.record_installs(confirmed);
    }

    /// Which of `agents` the live model says cannot serve now, each with why
    /// ("cordoned", "down"). Agents it does not know are taken as serving.
    fn unavailable<'a>(&self, agents: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
        let Some(fleet) = self.fleet.get() else { return Vec::new() };
        let topo = fleet.snapshot();
        agents
            .filter_map(|name| {
                let a = topo.agent(name)?;
                if a.is_available() {
                    return None;
                }
                let why = if a.liveness.is_reachable() { a.state.as_str() } else { a.liveness.as_str() };
                Some((name.to_string(), why.to_string()))
            })
            .collect()
    }

    /// Where each target answers now: agents are targets by name, and the live model
    /// knows their current endpoint (the demo fleet comes back on new ports after a
    /// restart; a real agent may register elsewhere). Agents it does not know keep the
    /// recorded one.
    fn resolve_endpoints(&self, rec: &mut crate::registry::DeploymentRecord) {
        let Some(fleet) = self.fleet.get() else { return };
        let topo = fleet.snapshot();
        for t in &mut rec.targets {
            if let Some(a) = topo.agent(&t.agent) {
                if a.endpoint != t.endpoint {
                    t.endpoint = a.endpoint.clone();
                }
            }
        }
    }

    /// Takes the drive lock for this process. Taken just now: nobody else drives, so
    /// what is unfinished and has no task here was left by a process that died, and is
    /// taken over (see [`Orchestrator::recover`]). Call with `transitions` held.
    async fn drive(self: &Arc<Self>) -> Result<Driving<'_>, OrchestrateError> {
        let Some(lock) = self.drive.get() else { return Ok(Driving { inner: self }) };
        let fresh = lock.acquire().map_err(OrchestrateError::Driven)?;
        let driving = Driving { inner: self };
        if fresh {
            self.take_over().await?;
        }
        Ok(driving)
    }

    /// Lets the drive lock go once no task runs here, so another process may drive.
    fn release_if_idle(&self) {
        let Some(lock) = self.drive.get() else { return };
        let busy = self.lock_tasks().values().any(|t| !*t.done.borrow());
        if !busy && lock.held() {
            lock.release();
        }
    }

    fn has_task(&self, id: i64) -> bool {
        self.lock_tasks().get(&id).is_some_and(|t| !*t.done.borrow())
    }

    fn signal(&self, id: i64, control: Control) -> bool {
        match self.lock_tasks().get(&id) {
            Some(t) if !*t.done.borrow() => t.control.send(control).is_ok(),
            _ => false,
        }
    }
}
