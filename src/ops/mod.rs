//! The typed vocabulary every stage of the pipeline shares.
//!
//! An [`Operation`] is what an utterance means, whichever front-end it came from and
//! whether the grammar or a language model understood it. Its serde form *is* the
//! public JSON operation contract of PRODUCT.md (`{"op": "deploy", ...}`), so the
//! types here must only change together with that contract.
//!
//! Slots the operator has not given yet are `None` (and omitted from the JSON); the
//! intent layer reports them as `missing`, and the dialog asks for them.

mod gate;
mod scope;
mod time;
mod unavailable;
mod version;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use gate::{GateRequirement, GateUnit};
pub use scope::{Scope, Selector, SelectorError};
pub use time::{TimeSpec, TimeSpecError};
pub use unavailable::{MaxUnavailable, MaxUnavailableError};
pub use version::{Version, VersionReq};

/// One operation of the contract. `#[serde(tag = "op")]` gives the contract's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    ShowTopology {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
    },
    ShowHealth {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
    },
    ShowAgent {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    FindAgents {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extension: Option<ExtensionRef>,
    },
    ListExtensions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
    },
    RunHealthCheck {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checks: Option<Vec<Check>>,
    },
    Deploy {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extension: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strategy: Option<Strategy>,
        /// Wait for "promote" between steps: `true` for every strategy, `false` not
        /// even between progressive phases; absent: progressive phases wait (as
        /// configured), other strategies do not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        require_approval: Option<bool>,
        /// How many agents may fail to install over the whole rollout before it stops
        /// and rolls back; absent: the configured failure budget.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_failures: Option<u32>,
        /// Overlapping an active rollout, wait for it instead of refusing.
        #[serde(default, skip_serializing_if = "is_false")]
        queue: bool,
        /// The rollout's own analysis thresholds ("gated on p99 latency under
        /// 300 ms"); absent: the catalog's templates as they are.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        gate: Vec<GateRequirement>,
    },
    Pause {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
    },
    Resume {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
    },
    Promote {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
    },
    Abort {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
    },
    Rollback {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
    },
    Retry {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
    },
    ShowDeployment {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
    },
    ListDeployments {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<DeploymentStatus>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<TimeSpec>,
    },
    Report {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<TimeSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<TimeSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
    },
    Drain {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    Cordon {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    Uncordon {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    Restart {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
    },
    Failover {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    Failback {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
    },
    ShiftTraffic {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        percent: Option<u8>,
    },
    ShowRouting {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
    },
    Watch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interval_secs: Option<u64>,
    },
    Unwatch,
    Help,
    Confirm,
    Cancel,
    /// Why a scope, an agent or a deployment is unhealthy, from evidence: "why is
    /// eu-west degraded?", "what's wrong with edge-14?", "why did d-4 fail?".
    Explain {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment: Option<String>,
        /// Look at one metric's history ("show me the errors on edge-14"): one of
        /// [`Metric::NAMES`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metric: Option<String>,
        /// Compare with the figures this long ago ("compare with yesterday": `1d`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compare: Option<TimeSpec>,
    },
    /// What changed over a span, on a scope: rollouts and their steps, rollbacks,
    /// routing changes, drains, cordons and restarts, with who and from where.
    Changes {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<TimeSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<TimeSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
    },
    /// Which versions run where: per extension, how many agents of the scope run each.
    Versions {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extension: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<Scope>,
    },
    /// The audit log: who asked for what, through which front-end, and how it ended.
    ShowAudit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<TimeSpec>,
        /// Only rows about this agent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<String>,
        /// Only rows of this operation (a contract name: `drain`, `deploy`, ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action: Option<String>,
    },
    /// Emergency stop: pause every running rollout and the automatic failover and
    /// failback until `unfreeze`.
    Freeze,
    Unfreeze,
}

/// A metric Parley reads from every agent, for `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    ErrorRate,
    P95,
    Cpu,
    Memory,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::ErrorRate, Metric::P95, Metric::Cpu, Metric::Memory];
    /// The names the contract uses, in [`Metric::ALL`]'s order.
    pub const NAMES: [&'static str; 4] = ["error_rate", "p95", "cpu", "memory"];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ErrorRate => "error_rate",
            Metric::P95 => "p95",
            Metric::Cpu => "cpu",
            Metric::Memory => "memory",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// In a sentence: "error rate", "p95 latency".
    pub fn words(self) -> &'static str {
        match self {
            Metric::ErrorRate => "error rate",
            Metric::P95 => "p95 latency",
            Metric::Cpu => "CPU",
            Metric::Memory => "memory",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An extension by name, optionally pinned to a version (used by `find_agents`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtensionRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// How a deployment reaches its agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    pub kind: StrategyKind,
    /// Cumulative percentages of the targets for canary / progressive, e.g. `[10, 50, 100]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<u8>>,
    /// Agents per batch for rolling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Rolling: each batch this share (1 to 100) of the targets, when no `batch_size`
    /// is given; absent: the configured share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_percent: Option<u8>,
    /// Rolling: at most this many targets unavailable (being installed, or cordoned,
    /// draining or down) at once; absent: the batch size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<MaxUnavailable>,
    /// Progressive: one phase per value of this placement key (`zone`, `region`, or a
    /// label such as `env` or `tier`), instead of percentages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// Progressive: one phase per selector, in this order (`["env:staging",
    /// "env:production"]`), instead of percentages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phases: Option<Vec<Selector>>,
}

impl Strategy {
    /// The strategy with nothing but its kind said.
    pub fn of(kind: StrategyKind) -> Strategy {
        Strategy {
            kind,
            steps: None,
            batch_size: None,
            batch_percent: None,
            max_unavailable: None,
            group_by: None,
            phases: None,
        }
    }

    /// In words, as the operator would say it: "rolling in batches of 10, at most 2
    /// agents unavailable at once", "progressive by zone".
    pub fn describe(&self) -> String {
        let mut out = self.kind.as_str().replace('_', "-");
        match (self.batch_size, self.batch_percent) {
            (Some(b), _) => out.push_str(&format!(" in batches of {b}")),
            (None, Some(p)) => out.push_str(&format!(" in batches of {p}%")),
            (None, None) => {}
        }
        match self.max_unavailable {
            Some(MaxUnavailable::Agents(n)) => {
                out.push_str(&format!(", at most {n} agent{} unavailable at once", crate::words::s(n)))
            }
            Some(MaxUnavailable::Percent(p)) => {
                out.push_str(&format!(", at most {p}% of the agents unavailable at once"))
            }
            None => {}
        }
        if let Some(key) = &self.group_by {
            out.push_str(&format!(" by {key}"));
        }
        if let Some(phases) = &self.phases {
            let names: Vec<&str> = phases.iter().map(|p| p.value().unwrap_or("fleet")).collect();
            out.push_str(&format!(" in phases {}", names.join(" then ")));
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    Canary,
    BlueGreen,
    Progressive,
    Rolling,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Canary => "canary",
            StrategyKind::BlueGreen => "blue_green",
            StrategyKind::Progressive => "progressive",
            StrategyKind::Rolling => "rolling",
        }
    }
}

/// The kinds of health check `run_health_check` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Connectivity,
    Functionality,
    Performance,
    Security,
    Resources,
}

impl Check {
    pub const ALL: [Check; 5] =
        [Check::Connectivity, Check::Functionality, Check::Performance, Check::Security, Check::Resources];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Connectivity => "connectivity",
            Check::Functionality => "functionality",
            Check::Performance => "performance",
            Check::Security => "security",
            Check::Resources => "resources",
        }
    }
}

/// The life cycle of a deployment, as the registry records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    Pending,
    Running,
    Paused,
    /// Returning its agents (after a failed gate or install, an abort, a rollback);
    /// the final status is written only once the agents have answered.
    RollingBack,
    Succeeded,
    Failed,
    Aborted,
    RolledBack,
}

impl DeploymentStatus {
    pub const ALL: [DeploymentStatus; 8] = [
        DeploymentStatus::Pending,
        DeploymentStatus::Running,
        DeploymentStatus::Paused,
        DeploymentStatus::RollingBack,
        DeploymentStatus::Succeeded,
        DeploymentStatus::Failed,
        DeploymentStatus::Aborted,
        DeploymentStatus::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentStatus::Pending => "pending",
            DeploymentStatus::Running => "running",
            DeploymentStatus::Paused => "paused",
            DeploymentStatus::RollingBack => "rolling_back",
            DeploymentStatus::Succeeded => "succeeded",
            DeploymentStatus::Failed => "failed",
            DeploymentStatus::Aborted => "aborted",
            DeploymentStatus::RolledBack => "rolled_back",
        }
    }

    pub fn parse(s: &str) -> Option<DeploymentStatus> {
        DeploymentStatus::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// A deployment in this state may still change agents.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DeploymentStatus::Pending
                | DeploymentStatus::Running
                | DeploymentStatus::Paused
                | DeploymentStatus::RollingBack
        )
    }
}

impl std::fmt::Display for DeploymentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may run an operation. Ordered: an admin may do whatever an operator may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// What kind of effect an operation has. Decided here, from the type, and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Answers from the topology model or the registry; changes nothing.
    Read,
    /// Changes agents, deployments or routing.
    Mutate,
    /// Steers the conversation itself (confirm, cancel, help, watch).
    Dialog,
}

/// Which family of operations an operation belongs to: one file of the dialog
/// (`src/dialog/<family>.rs`) holds each family's check, confirmation line,
/// execution and reply, and the dialog's dispatchers match on this, never on the
/// operations themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Reads of the fleet and its history: topology, health, agents, extensions,
    /// health checks, the deployment report.
    Inspect,
    /// Rollouts, their controls (pause, resume, promote, abort, rollback, retry) and
    /// their records.
    Deploy,
    /// Actions on one agent: drain, cordon, uncordon, restart.
    Agent,
    /// Routing: failover, failback, traffic shifts, the routing table.
    Traffic,
    /// Troubleshooting: explain, changes, versions, the audit log, freeze.
    Troubleshoot,
    /// Steering the conversation itself: help, watch, confirm, cancel.
    Dialog,
}

impl Operation {
    /// A deploy of `extension` `version` to `scope` with the configured strategy and
    /// nothing else said, as "roll out auth-filter 2.1.0 to the fleet" parses.
    pub fn deploy(extension: &str, version: &str, scope: Scope) -> Operation {
        Operation::Deploy {
            extension: Some(extension.to_string()),
            version: Some(version.to_string()),
            scope: Some(scope),
            strategy: None,
            require_approval: None,
            max_failures: None,
            queue: false,
            gate: Vec::new(),
        }
    }

    /// The contract's name of the operation (`"deploy"`, `"show_health"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Operation::ShowTopology { .. } => "show_topology",
            Operation::ShowHealth { .. } => "show_health",
            Operation::ShowAgent { .. } => "show_agent",
            Operation::FindAgents { .. } => "find_agents",
            Operation::ListExtensions { .. } => "list_extensions",
            Operation::RunHealthCheck { .. } => "run_health_check",
            Operation::Deploy { .. } => "deploy",
            Operation::Pause { .. } => "pause",
            Operation::Resume { .. } => "resume",
            Operation::Promote { .. } => "promote",
            Operation::Abort { .. } => "abort",
            Operation::Rollback { .. } => "rollback",
            Operation::Retry { .. } => "retry",
            Operation::ShowDeployment { .. } => "show_deployment",
            Operation::ListDeployments { .. } => "list_deployments",
            Operation::Report { .. } => "report",
            Operation::Drain { .. } => "drain",
            Operation::Cordon { .. } => "cordon",
            Operation::Uncordon { .. } => "uncordon",
            Operation::Restart { .. } => "restart",
            Operation::Failover { .. } => "failover",
            Operation::Failback { .. } => "failback",
            Operation::ShiftTraffic { .. } => "shift_traffic",
            Operation::ShowRouting { .. } => "show_routing",
            Operation::Watch { .. } => "watch",
            Operation::Unwatch => "unwatch",
            Operation::Help => "help",
            Operation::Confirm => "confirm",
            Operation::Cancel => "cancel",
            Operation::Explain { .. } => "explain",
            Operation::Changes { .. } => "changes",
            Operation::Versions { .. } => "versions",
            Operation::ShowAudit { .. } => "show_audit",
            Operation::Freeze => "freeze",
            Operation::Unfreeze => "unfreeze",
        }
    }

    /// Every operation name of the contract, in the contract's order.
    pub const NAMES: [&'static str; 35] = [
        "show_topology",
        "show_health",
        "show_agent",
        "find_agents",
        "list_extensions",
        "run_health_check",
        "deploy",
        "pause",
        "resume",
        "promote",
        "abort",
        "rollback",
        "retry",
        "show_deployment",
        "list_deployments",
        "report",
        "drain",
        "cordon",
        "uncordon",
        "restart",
        "failover",
        "failback",
        "shift_traffic",
        "show_routing",
        "watch",
        "unwatch",
        "help",
        "confirm",
        "cancel",
        "explain",
        "changes",
        "versions",
        "show_audit",
        "freeze",
        "unfreeze",
    ];

    /// The family that carries the operation out (see [`Family`]).
    pub fn family(&self) -> Family {
        match self {
            Operation::ShowTopology { .. }
            | Operation::ShowHealth { .. }
            | Operation::ShowAgent { .. }
            | Operation::FindAgents { .. }
            | Operation::ListExtensions { .. }
            | Operation::RunHealthCheck { .. }
            | Operation::Report { .. } => Family::Inspect,
            Operation::Deploy { .. }
            | Operation::Pause { .. }
            | Operation::Resume { .. }
            | Operation::Promote { .. }
            | Operation::Abort { .. }
            | Operation::Rollback { .. }
            | Operation::Retry { .. }
            | Operation::ShowDeployment { .. }
            | Operation::ListDeployments { .. } => Family::Deploy,
            Operation::Drain { .. }
            | Operation::Cordon { .. }
            | Operation::Uncordon { .. }
            | Operation::Restart { .. } => Family::Agent,
            Operation::Failover { .. }
            | Operation::Failback { .. }
            | Operation::ShiftTraffic { .. }
            | Operation::ShowRouting { .. } => Family::Traffic,
            Operation::Explain { .. }
            | Operation::Changes { .. }
            | Operation::Versions { .. }
            | Operation::ShowAudit { .. }
            | Operation::Freeze
            | Operation::Unfreeze => Family::Troubleshoot,
            Operation::Watch { .. } | Operation::Unwatch | Operation::Help | Operation::Confirm | Operation::Cancel => {
                Family::Dialog
            }
        }
    }

    /// Whether the operation reads, changes the fleet, or steers the dialog.
    pub fn effect(&self) -> Effect {
        match self {
            Operation::ShowTopology { .. }
            | Operation::ShowHealth { .. }
            | Operation::ShowAgent { .. }
            | Operation::FindAgents { .. }
            | Operation::ListExtensions { .. }
            | Operation::RunHealthCheck { .. }
            | Operation::ShowDeployment { .. }
            | Operation::ListDeployments { .. }
            | Operation::Report { .. }
            | Operation::ShowRouting { .. }
            | Operation::Explain { .. }
            | Operation::Changes { .. }
            | Operation::Versions { .. }
            | Operation::ShowAudit { .. } => Effect::Read,
            Operation::Deploy { .. }
            | Operation::Pause { .. }
            | Operation::Resume { .. }
            | Operation::Promote { .. }
            | Operation::Abort { .. }
            | Operation::Rollback { .. }
            | Operation::Retry { .. }
            | Operation::Drain { .. }
            | Operation::Cordon { .. }
            | Operation::Uncordon { .. }
            | Operation::Restart { .. }
            | Operation::Failover { .. }
            | Operation::Failback { .. }
            | Operation::ShiftTraffic { .. }
            | Operation::Freeze
            | Operation::Unfreeze => Effect::Mutate,
            Operation::Watch { .. } | Operation::Unwatch | Operation::Help | Operation::Confirm | Operation::Cancel => {
                Effect::Dialog
            }
        }
    }

    /// True when executing the operation changes agents, deployments or routing.
    pub fn mutates(&self) -> bool {
        self.effect() == Effect::Mutate
    }

    /// Operations that are risky whatever their scope (PRODUCT.md: failover, abort; a
    /// failback moves a whole region's traffic as a failover does; a freeze stops
    /// every rollout and the automatic recovery at once).
    /// Scope-dependent risk (production, more than a quarter of a region) needs the
    /// topology and is decided by the feasibility check.
    pub fn always_risky(&self) -> bool {
        matches!(
            self,
            Operation::Failover { .. }
                | Operation::Failback { .. }
                | Operation::Abort { .. }
                | Operation::ShiftTraffic { .. }
                | Operation::Freeze
        )
    }

    /// The least role allowed to run the operation.
    pub fn required_role(&self) -> Role {
        match self {
            Operation::Failover { .. } | Operation::Failback { .. } | Operation::ShiftTraffic { .. } => Role::Admin,
            op if op.mutates() => Role::Operator,
            _ => Role::Viewer,
        }
    }

    /// The deployment the operation names, for the ones that act on a deployment.
    pub fn deployment_slot(&self) -> Option<&Option<String>> {
        match self {
            Operation::Pause { deployment }
            | Operation::Resume { deployment }
            | Operation::Promote { deployment }
            | Operation::Abort { deployment }
            | Operation::Rollback { deployment }
            | Operation::Retry { deployment }
            | Operation::ShowDeployment { deployment } => Some(deployment),
            _ => None,
        }
    }

    /// The agent the operation names, for the ones that act on one agent.
    pub fn agent_slot(&self) -> Option<&Option<String>> {
        match self {
            Operation::ShowAgent { agent }
            | Operation::Drain { agent }
            | Operation::Cordon { agent }
            | Operation::Uncordon { agent }
            | Operation::Restart { agent }
            | Operation::ShowAudit { agent, .. } => Some(agent),
            _ => None,
        }
    }

    /// The scope the operation names, if it has a scope field.
    pub fn scope_slot(&self) -> Option<&Option<Scope>> {
        match self {
            Operation::ShowTopology { scope }
            | Operation::ShowHealth { scope }
            | Operation::FindAgents { scope, .. }
            | Operation::ListExtensions { scope }
            | Operation::RunHealthCheck { scope, .. }
            | Operation::Deploy { scope, .. }
            | Operation::ListDeployments { scope, .. }
            | Operation::Report { scope, .. }
            | Operation::ShowRouting { scope }
            | Operation::Watch { scope, .. }
            | Operation::Explain { scope, .. }
            | Operation::Changes { scope, .. }
            | Operation::Versions { scope, .. } => Some(scope),
            _ => None,
        }
    }

    /// The operation as a JSON object of the contract.
    pub fn to_json(&self) -> serde_json::Value {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Builds an operation from the contract's JSON object, e.g. from slot values the
    /// intent layer collected. The error names the field that did not fit.
    pub fn from_json(value: serde_json::Value) -> Result<Operation, serde_json::Error> {
        serde_json::from_value(value)
    }

    /// The names of the fields this operation has filled, as they appear in its JSON.
    pub fn filled_slots(&self) -> Vec<String> {
        match self.to_json() {
            serde_json::Value::Object(map) => map.keys().filter(|k| *k != "op").cloned().collect(),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deploy_serialises_to_the_contract_shape() {
        let op = Operation::Deploy {
            extension: Some("auth-filter".into()),
            version: Some("2.1.0".into()),
            scope: Some(Scope(vec![Selector::Region("eu-west".into())])),
            strategy: Some(Strategy { steps: Some(vec![10, 50]), ..Strategy::of(StrategyKind::Canary) }),
            require_approval: None,
            max_failures: None,
            queue: false,
            gate: Vec::new(),
        };
        assert_eq!(
            op.to_json(),
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0",
                   "scope": ["region:eu-west"],
                   "strategy": {"kind": "canary", "steps": [10, 50]}})
        );
    }

    #[test]
    fn a_deploy_from_before_max_unavailable_and_phases_still_parses() {
        let old = json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:eu-west"],
                         "strategy": {"kind": "rolling", "batch_size": 4}, "require_approval": true});
        let Operation::Deploy { strategy: Some(s), require_approval, .. } = Operation::from_json(old.clone()).unwrap()
        else {
            panic!("not a deploy")
        };
        assert_eq!((s.max_unavailable, s.group_by, s.phases, require_approval), (None, None, None, Some(true)));
        assert_eq!(Operation::from_json(old.clone()).unwrap().to_json(), old, "and writes back the same");

        let new = json!({"op": "deploy", "strategy": {"kind": "progressive", "phases": ["env:staging", "env:production"]},
                         "require_approval": false});
        assert_eq!(Operation::from_json(new.clone()).unwrap().to_json(), new);
        let rolling =
            json!({"op": "deploy", "strategy": {"kind": "rolling", "batch_size": 10, "max_unavailable": "20%"}});
        assert_eq!(Operation::from_json(rolling.clone()).unwrap().to_json(), rolling);
        assert!(Operation::from_json(json!({"op": "deploy", "strategy": {"kind": "rolling", "max_unavailable": 0}}))
            .is_err());
    }

    #[test]
    fn absent_fields_are_omitted_and_unit_ops_are_bare() {
        assert_eq!(Operation::Rollback { deployment: None }.to_json(), json!({"op": "rollback"}));
        assert_eq!(Operation::Confirm.to_json(), json!({"op": "confirm"}));
    }

    #[test]
    fn every_name_round_trips() {
        for name in Operation::NAMES {
            let op = Operation::from_json(json!({ "op": name })).expect(name);
            assert_eq!(op.name(), name);
        }
    }

    #[test]
    fn unknown_fields_and_ops_are_refused() {
        assert!(Operation::from_json(json!({"op": "deploy", "colour": "red"})).is_err());
        assert!(Operation::from_json(json!({"op": "explode"})).is_err());
    }

    #[test]
    fn effect_and_role_come_from_the_type() {
        assert!(Operation::Drain { agent: None }.mutates());
        assert!(!Operation::ShowHealth { scope: None }.mutates());
        assert_eq!(Operation::Help.effect(), Effect::Dialog);
        assert_eq!(Operation::Failover { from: None, to: None }.required_role(), Role::Admin);
        assert_eq!(Operation::Restart { agent: None }.required_role(), Role::Operator);
        assert_eq!(Operation::Report { since: None, until: None, scope: None }.required_role(), Role::Viewer);
    }
}

/// Who is speaking, through which front-end: for role checks and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// A user name or id (`alice`, a Slack user id `U0123`).
    pub name: String,
    /// `repl`, `tui`, `ask`, `chat-json`, `voice`, `slack:C0456`, ...
    pub frontend: String,
    pub role: Role,
}

impl Actor {
    pub fn new(name: impl Into<String>, frontend: impl Into<String>, role: Role) -> Actor {
        Actor { name: name.into(), frontend: frontend.into(), role }
    }

    /// The local operator at this terminal: named after the OS user, full rights
    /// (whoever runs the binary could talk to the agents directly anyway).
    pub fn local(frontend: &str) -> Actor {
        let name = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "operator".to_string());
        Actor::new(name, frontend, Role::Admin)
    }
}
