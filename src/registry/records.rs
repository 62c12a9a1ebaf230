//! The plain records the registry stores and answers with.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ops::{Actor, DeploymentStatus, Operation, Role, Scope, Strategy};

/// `d-<id>`, the name operators and the contract use for a deployment.
pub fn deployment_name(id: i64) -> String {
    format!("d-{id}")
}

/// The id in `d-3` (or a bare `3`); `None` for anything else.
pub fn deployment_id_from_name(name: &str) -> Option<i64> {
    let trimmed = name.trim();
    let digits = trimmed.strip_prefix("d-").or_else(|| trimmed.strip_prefix("D-")).unwrap_or(trimmed);
    digits.parse::<i64>().ok().filter(|id| *id > 0)
}

/// Where one agent stands in a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    Pending,
    Installing,
    Installed,
    Failed,
    RolledBack,
    Unreachable,
}

impl TargetState {
    pub const ALL: [TargetState; 6] = [
        TargetState::Pending,
        TargetState::Installing,
        TargetState::Installed,
        TargetState::Failed,
        TargetState::RolledBack,
        TargetState::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Pending => "pending",
            TargetState::Installing => "installing",
            TargetState::Installed => "installed",
            TargetState::Failed => "failed",
            TargetState::RolledBack => "rolled_back",
            TargetState::Unreachable => "unreachable",
        }
    }

    pub fn parse(s: &str) -> Option<TargetState> {
        TargetState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// The rollout may have changed this agent: a rollback must visit it.
    pub fn is_touched(self) -> bool {
        matches!(
            self,
            TargetState::Installing | TargetState::Installed | TargetState::Failed | TargetState::Unreachable
        )
    }
}

/// Why a pending or paused deployment waits: the state the lifecycle decides on,
/// stored in its own column. The deployment's `reason` says the same for people and
/// is never read back to decide anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hold {
    /// Pending until the unfinished deployment `behind` (`d-<id>`) that shares
    /// agents with it finishes.
    Queued { behind: String },
    /// Paused by an operator.
    Paused,
    /// Paused by a health gate that could not decide: resume or abort.
    Inconclusive,
    /// Held before a step because as many of its agents as may be unavailable at
    /// once already are: resume once they are back, or abort.
    Unavailable,
    /// Held until "promote": the next phase, a blue-green switch or blue's retirement.
    Promote,
    /// Paused because a previous Parley stopped mid-way.
    Interrupted,
    /// Paused by an orderly stop of `parley serve`: the next start resumes it.
    Suspended,
}

/// One agent of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub agent: String,
    pub endpoint: String,
    /// The version before the deployment; `None` when the extension was not installed.
    pub previous_version: Option<String>,
    /// Index (0-based) of the plan step that first reaches this agent.
    pub step: u32,
    pub state: TargetState,
    pub detail: Option<String>,
}

/// A deployment as the registry knows it.
// Deserialize: clients of `parley serve` read the records the API sends back into this
// same type (src/client/fleet.rs), so both sides render one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub id: i64,
    /// `d-<id>`.
    pub name: String,
    pub extension: String,
    pub version: String,
    pub scope: Scope,
    pub strategy: Strategy,
    pub status: DeploymentStatus,
    /// Why it waits, while it is pending or paused for a reason the lifecycle knows.
    pub hold: Option<Hold>,
    /// What happened, for people only: nothing decides on its wording.
    pub reason: Option<String>,
    pub actor: String,
    pub frontend: String,
    pub utterance: String,
    /// The step in progress, or where the rollout stopped (0-based).
    pub current_step: u32,
    pub step_count: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub targets: Vec<TargetRecord>,
}

impl DeploymentRecord {
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| t.agent.as_str())
    }

    pub fn target(&self, agent: &str) -> Option<&TargetRecord> {
        self.targets.iter().find(|t| t.agent == agent)
    }

    /// How long the deployment ran, once finished.
    pub fn duration(&self) -> Option<chrono::Duration> {
        self.finished_at.map(|f| f - self.created_at)
    }
}

/// What a new deployment starts with.
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub extension: String,
    pub version: String,
    pub scope: Scope,
    pub strategy: Strategy,
    pub status: DeploymentStatus,
    pub actor: Actor,
    pub utterance: String,
    pub step_count: u32,
    pub targets: Vec<NewTarget>,
}

#[derive(Debug, Clone)]
pub struct NewTarget {
    pub agent: String,
    pub endpoint: String,
    pub previous_version: Option<String>,
    pub step: u32,
}

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    pub id: i64,
    /// `d-<id>`, or `None` for events outside a deployment (agent actions).
    pub deployment: Option<String>,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub data: serde_json::Value,
}

/// Which deployments a listing wants; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub status: Option<DeploymentStatus>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Touching at least one of these agents.
    pub agents: Option<BTreeSet<String>>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
}

/// How a request ended, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditResult {
    /// Carried out (a question answered, or a change made).
    Ok,
    Refused,
    Infeasible,
    Failed,
    /// Put to the operator, nothing carried out: a yes/no or a missing detail. The
    /// operation recorded is the one that would run.
    Asked,
    /// A proposal withdrawn before it ran.
    Cancelled,
}

impl AuditResult {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditResult::Ok => "ok",
            AuditResult::Refused => "refused",
            AuditResult::Infeasible => "infeasible",
            AuditResult::Failed => "failed",
            AuditResult::Asked => "asked",
            AuditResult::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<AuditResult> {
        [
            AuditResult::Ok,
            AuditResult::Refused,
            AuditResult::Infeasible,
            AuditResult::Failed,
            AuditResult::Asked,
            AuditResult::Cancelled,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Who asked for what, and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub frontend: String,
    pub role: Role,
    pub utterance: String,
    pub operation: Option<serde_json::Value>,
    pub result: AuditResult,
    pub message: String,
}

impl AuditEntry {
    /// An entry stamped now.
    pub fn new(
        actor: &Actor,
        utterance: &str,
        operation: Option<&Operation>,
        result: AuditResult,
        message: &str,
    ) -> AuditEntry {
        AuditEntry {
            at: Utc::now(),
            actor: actor.name.clone(),
            frontend: actor.frontend.clone(),
            role: actor.role,
            utterance: utterance.to_string(),
            operation: operation.map(Operation::to_json),
            result,
            message: message.to_string(),
        }
    }
}

pub(crate) fn parse_role(s: &str) -> Option<Role> {
    Role::parse(s)
}

/// One agent's entry in a step's journal: the event and the target's new state.
#[derive(Debug, Clone)]
pub struct TargetJournal<'a> {
    pub agent: &'a str,
    pub kind: &'a str,
    pub data: serde_json::Value,
    pub state: TargetState,
    pub detail: Option<&'a str>,
}

/// How [`Registry::admit_deployment`](super::Registry::admit_deployment) took a new deployment.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Recorded with the status it was given.
    Created(DeploymentRecord),
    /// Recorded pending, behind the unfinished deployment it overlaps.
    Queued { record: DeploymentRecord, behind: String },
    /// Not recorded: these agents belong to that unfinished deployment.
    Overlap { agents: Vec<String>, deployment: String },
}
