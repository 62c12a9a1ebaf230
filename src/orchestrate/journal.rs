//! The journal: every transition of a rollout (and every agent action) as a typed
//! event, written to the registry's event log before the orchestrator acts on it.
//!
//! Each event is one row: its `kind` column is the variant's name (`created`,
//! `step_started`, ...) and its `data` column the variant's fields as JSON, exactly
//! as they have always been written, so old logs read back and readers of the log
//! that know only JSON keep working. Whatever the orchestrator later needs from the
//! journal (the operator's failure budget, the plan, why a rollback started) it reads
//! from these types, never by looking up keys in the JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::gate::{Baseline, GateBreach, GateOutcome};
use super::plan::Plan;
use crate::ops::{DeploymentStatus, Scope, Strategy};
use crate::registry::{EventRecord, TargetState};

/// One entry of the event log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// The deployment was admitted, with what the operator said and the settings it
    /// runs with.
    Created {
        extension: String,
        version: String,
        scope: Scope,
        strategy: Strategy,
        by: String,
        frontend: String,
        utterance: String,
        agents: Vec<String>,
        /// The operator's "with approval" (or "without"); `None`: as the strategy does.
        #[serde(default)]
        require_approval: Option<bool>,
        /// The operator's failure budget for the whole rollout; `None`: the settings'.
        #[serde(default)]
        max_failures: Option<u32>,
        /// The rollout's own analysis thresholds ("gated on p99 latency under 300 ms").
        #[serde(default)]
        gate: Vec<crate::ops::GateRequirement>,
    },
    /// The plan it was started with, and the plan in words.
    Planned {
        plan: Option<Plan>,
        #[serde(default)]
        steps: Vec<String>,
    },
    /// Waits for the unfinished deployment `behind` that shares agents with it.
    Queued {
        behind: String,
    },
    /// No longer waits; `was` the reason it waited with.
    Dequeued {
        was: Option<String>,
    },
    StepStarted {
        step: u32,
        of: u32,
        agents: Vec<String>,
        phase: Option<String>,
    },
    /// A blue-green switch: green is live, blue the standby.
    Switched {
        green: usize,
        blue: usize,
    },
    InstallStarted {
        agent: String,
        version: String,
        previous: Option<String>,
    },
    InstallSucceeded {
        agent: String,
        version: String,
    },
    InstallFailed {
        agent: String,
        error: String,
    },
    FailureWithinBudget {
        step: u32,
        agents: Vec<String>,
    },
    GateEvaluated {
        step: u32,
        passed: bool,
        outcome: GateOutcome,
        failed_kinds: Vec<String>,
        breaches: Vec<GateBreach>,
        unreachable: Vec<(String, String)>,
        baseline: Option<Baseline>,
        counts: BTreeMap<String, usize>,
        /// A gate by Prometheus: every measurement of every template.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        analysis: Option<crate::analysis::AnalysisResult>,
        /// The Prometheus that was asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source: Option<String>,
    },
    /// Held by the rollout itself (for promote, or by an inconclusive gate).
    Held {
        reason: String,
    },
    HoldTimerElapsed {
        after_secs: f64,
    },
    /// Agents already out of service counted against max-unavailable before a step.
    UnavailableCounted {
        step: u32,
        agents: Vec<String>,
        slots: usize,
    },
    Paused {
        by: String,
        frontend: String,
        reason: String,
    },
    Resumed {
        by: String,
        frontend: String,
    },
    Promoted {
        by: String,
        frontend: String,
        step: u32,
        waited: String,
    },
    AbortRequested {
        by: String,
        frontend: String,
    },
    SwitchBackRequested {
        by: String,
        frontend: String,
    },
    RollbackRequested {
        by: String,
        frontend: String,
    },
    Retry {
        by: String,
        frontend: String,
        from_step: u32,
    },
    /// Found mid-way by the next Parley, and paused.
    Interrupted {
        reason: String,
        was: DeploymentStatus,
    },
    /// What the agents reported when a restart compared them with the journal.
    Reconciled {
        summary: String,
        agents: Vec<Found>,
    },
    /// A rollback is under way: why, how it is to end, and the agents it returns.
    RollbackStarted {
        reason: String,
        outcome: DeploymentStatus,
        #[serde(default)]
        agents: Vec<String>,
    },
    RollbackResumed {
        reason: String,
        outcome: DeploymentStatus,
        found: String,
    },
    RollbackAgentStarted {
        agent: String,
        to: Option<String>,
    },
    RollbackAgentSucceeded {
        agent: String,
        to: Option<String>,
    },
    RollbackAgentFailed {
        agent: String,
        to: Option<String>,
        error: String,
    },
    RolloutFailed {
        reason: String,
    },
    Succeeded {
        reason: String,
    },
    Finished {
        status: DeploymentStatus,
        reason: String,
    },
    AgentActionStarted {
        agent: String,
        action: String,
        by: String,
        frontend: String,
    },
    AgentActionSucceeded {
        agent: String,
        action: String,
        state: String,
    },
    AgentActionFailed {
        agent: String,
        action: String,
        error: String,
    },
}

/// One agent as a restart found it (see [`Event::Reconciled`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Found {
    /// It did not answer.
    Silent { agent: String, journal: TargetState, error: String },
    /// It runs `runs` (`None`: not the extension); `now` is the journal's correction.
    Answered { agent: String, journal: TargetState, runs: Option<String>, now: Option<TargetState> },
}

/// The names of the events the orchestrator looks up by kind.
pub mod kind {
    pub const CREATED: &str = "created";
    pub const PLANNED: &str = "planned";
    pub const ROLLBACK_STARTED: &str = "rollback_started";
}

impl Event {
    /// The `kind` column and the `data` column of the event's row.
    pub fn to_row(&self) -> (String, Value) {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        let kind = value
            .as_object_mut()
            .and_then(|o| o.remove("kind"))
            .and_then(|k| k.as_str().map(str::to_string))
            .unwrap_or_default();
        (kind, value)
    }

    /// The event a row of the log holds; `None` for a kind this release does not know
    /// or data that does not fit it (a hand-edited row).
    pub fn from_row(kind: &str, data: &Value) -> Option<Event> {
        let mut fields = data.as_object()?.clone();
        fields.insert("kind".to_string(), Value::String(kind.to_string()));
        serde_json::from_value(Value::Object(fields)).ok()
    }

    /// The event an [`EventRecord`] holds.
    pub fn of(record: &EventRecord) -> Option<Event> {
        Event::from_row(&record.kind, &record.data)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ops::StrategyKind;

    #[test]
    fn rows_are_written_as_before_and_read_back() {
        let created = Event::Created {
            extension: "auth-filter".into(),
            version: "2.1.0".into(),
            scope: Scope::region("ap-south"),
            strategy: Strategy::of(StrategyKind::Rolling),
            by: "alice".into(),
            frontend: "repl".into(),
            utterance: "roll out auth-filter 2.1.0".into(),
            agents: vec!["edge-1".into()],
            require_approval: None,
            max_failures: Some(2),
            gate: Vec::new(),
        };
        let (kind, data) = created.to_row();
        assert_eq!(kind, "created");
        assert_eq!(data["max_failures"], json!(2));
        assert_eq!(data["by"], json!("alice"));
        assert!(data.get("kind").is_none());
        assert_eq!(Event::from_row(&kind, &data), Some(created));

        let held = Event::Held { reason: "waiting for promote".into() };
        assert_eq!(held.to_row(), ("held".to_string(), json!({ "reason": "waiting for promote" })));
        let found = Event::Reconciled {
            summary: "checked 2 agents".into(),
            agents: vec![
                Found::Silent { agent: "edge-1".into(), journal: TargetState::Installed, error: "timed out".into() },
                Found::Answered {
                    agent: "edge-2".into(),
                    journal: TargetState::Installing,
                    runs: Some("2.1.0".into()),
                    now: Some(TargetState::Installed),
                },
            ],
        };
        let (kind, data) = found.to_row();
        assert_eq!(
            data["agents"],
            json!([
                { "agent": "edge-1", "journal": "installed", "error": "timed out" },
                { "agent": "edge-2", "journal": "installing", "runs": "2.1.0", "now": "installed" },
            ])
        );
        assert_eq!(Event::from_row(&kind, &data), Some(found));
    }

    #[test]
    fn a_created_event_from_an_older_release_reads_its_budget_and_an_unknown_row_is_none() {
        // As the previous release wrote it (before the budget was said with the rollout).
        let old = json!({ "extension": "auth-filter", "version": "2.1.0", "scope": Scope::region("ap-south"),
                          "strategy": Strategy::of(StrategyKind::Rolling), "by": "alice", "frontend": "repl",
                          "utterance": "u", "agents": [] });
        let Some(Event::Created { max_failures, require_approval, .. }) = Event::from_row(kind::CREATED, &old) else {
            panic!("an old created event did not read back");
        };
        assert_eq!((max_failures, require_approval), (None, None));
        assert_eq!(Event::from_row("something_new", &json!({})), None);
        assert_eq!(Event::from_row(kind::CREATED, &json!("not an object")), None);
    }
}
