//! What changed, and who asked: the registry's deployment journal, routing journal,
//! event log and audit log read back by time and scope. The library functions a
//! front-end (or a future `parley audit` command) calls; the dialog renders them.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::registry::{AuditEntry, AuditResult, DeploymentRecord, EventRecord, Registry, RegistryError, MAX_ROWS};

/// What kind of change an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// A rollout was created (or queued).
    Deployment,
    /// A rollout step began installing on its agents.
    Step,
    /// Pause, resume, promote, abort, retry or a rollback asked for.
    Control,
    /// A rollout began returning its agents.
    Rollback,
    /// A rollout ended (succeeded, failed, aborted, rolled back).
    Finished,
    /// The routing table changed (failover, failback, shift, cascade, automatic failback).
    Routing,
    Drain,
    Cordon,
    Uncordon,
    Restart,
    Freeze,
    Unfreeze,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Deployment => "deployment",
            ChangeKind::Step => "step",
            ChangeKind::Control => "control",
            ChangeKind::Rollback => "rollback",
            ChangeKind::Finished => "finished",
            ChangeKind::Routing => "routing",
            ChangeKind::Drain => "drain",
            ChangeKind::Cordon => "cordon",
            ChangeKind::Uncordon => "uncordon",
            ChangeKind::Restart => "restart",
            ChangeKind::Freeze => "freeze",
            ChangeKind::Unfreeze => "unfreeze",
        }
    }
}

/// One change, with who made it and where it is recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub at: DateTime<Utc>,
    pub kind: ChangeKind,
    /// In words: "d-1 step 1 of 4 installed auth-filter 2.1.0 on edge-13, edge-14".
    pub summary: String,
    /// The agents it touched (empty for routing and freezes).
    pub agents: Vec<String>,
    /// The regions whose routing it changed.
    pub regions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Who asked for it (`parley` for what Parley did by itself).
    pub actor: String,
    pub frontend: String,
    /// Where it is recorded: `deployment journal d-1`, `routing journal v3`, `event log`.
    pub source: String,
}

/// Which changes a query wants. `agents`/`regions` narrow to changes touching any of
/// those agents or the routing of those regions; `None` is everything.
#[derive(Debug, Clone)]
pub struct ChangesQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub agents: Option<BTreeSet<String>>,
    pub regions: Option<BTreeSet<String>>,
}

/// Every change in the span, oldest first.
pub async fn changes(registry: &Registry, q: &ChangesQuery) -> Result<Vec<Change>, RegistryError> {
    let events = registry.events_between(q.from, q.to).await?;
    let mut deployments: HashMap<String, Option<DeploymentRecord>> = HashMap::new();
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let record = match &e.deployment {
            Some(name) => {
                if !deployments.contains_key(name) {
                    deployments.insert(name.clone(), registry.deployment_by_name(name).await?);
                }
                deployments.get(name).and_then(Option::as_ref)
            }
            None => None,
        };
        if let Some(c) = from_event(e, record, &events[i + 1..]) {
            out.push(c);
        }
    }
    for r in registry.routing_changes(MAX_ROWS).await? {
        if r.at < q.from || r.at > q.to {
            continue;
        }
        let mut regions: BTreeSet<String> = r.before.regions.keys().chain(r.after.regions.keys()).cloned().collect();
        regions.retain(|reg| r.before.routes(reg) != r.after.routes(reg));
        let moved: Vec<String> = regions.iter().map(|reg| format!("{reg} -> {}", r.after.describe(reg))).collect();
        out.push(Change {
            at: r.at,
            kind: ChangeKind::Routing,
            summary: format!("routing {}: {} ({})", crate::words::spaced(&r.kind), moved.join("; "), r.reason),
            agents: Vec::new(),
            regions: regions.into_iter().collect(),
            deployment: None,
            actor: r.actor.clone(),
            frontend: r.frontend.clone(),
            source: format!("routing journal v{}", r.version),
        });
    }
    out.retain(|c| touches(c, q));
    out.sort_by_key(|c| c.at);
    Ok(out)
}

fn touches(c: &Change, q: &ChangesQuery) -> bool {
    if q.agents.is_none() && q.regions.is_none() {
        return true;
    }
    // A freeze stops everything, so it concerns every scope.
    if matches!(c.kind, ChangeKind::Freeze | ChangeKind::Unfreeze) {
        return true;
    }
    let by_agent = q.agents.as_ref().is_some_and(|set| c.agents.iter().any(|a| set.contains(a)));
    let by_region = q.regions.as_ref().is_some_and(|set| c.regions.iter().any(|r| set.contains(r)));
    by_agent || by_region
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// Names of agents for a sentence: the first six, then how many more.
pub fn agent_words(agents: &[String]) -> String {
    crate::words::and_more(agents, 6)
}

fn from_event(e: &EventRecord, d: Option<&DeploymentRecord>, later: &[EventRecord]) -> Option<Change> {
    let name = e.deployment.clone().unwrap_or_default();
    let source = match &e.deployment {
        Some(n) => format!("deployment journal {n}"),
        None => "event log".to_string(),
    };
    let targets: Vec<String> = d.map(|d| d.agents().map(str::to_string).collect()).unwrap_or_default();
    let what = d.map(|d| format!("{} {}", d.extension, d.version)).unwrap_or_else(|| "a rollout".to_string());
    let by = text(&e.data, "by");
    let frontend = text(&e.data, "frontend");
    // Steps, rollbacks and endings are the rollout's own doing, for whoever started it.
    let owner = || (d.map(|d| d.actor.clone()).unwrap_or_default(), d.map(|d| d.frontend.clone()).unwrap_or_default());
    let change = |kind, summary: String, agents: Vec<String>, (actor, frontend): (String, String)| Change {
        at: e.at,
        kind,
        summary,
        agents,
        regions: Vec::new(),
        deployment: e.deployment.clone(),
        actor,
        frontend,
        source: source.clone(),
    };
    let asked = || (by.clone().unwrap_or_default(), frontend.clone().unwrap_or_default());
    Some(match e.kind.as_str() {
        "created" => {
            let agents = strings(&e.data["agents"]);
            let n = agents.len();
            let how = e
                .data
                .get("strategy")
                .and_then(|s| serde_json::from_value::<crate::ops::Strategy>(s.clone()).ok())
                .map(|s| s.describe())
                .unwrap_or_default();
            change(
                ChangeKind::Deployment,
                format!("{name} started: {what} to {} ({how})", crate::words::count(n, "agent")),
                agents,
                asked(),
            )
        }
        "step_started" => {
            let agents = strings(&e.data["agents"]);
            let step = e.data["step"].as_u64().unwrap_or(0);
            let of = e.data["of"].as_u64().unwrap_or(0);
            change(
                ChangeKind::Step,
                format!("{name} step {step} of {of} installed {what} on {}", agent_words(&agents)),
                agents,
                owner(),
            )
        }
        kind @ ("paused"
        | "resumed"
        | "abort_requested"
        | "rollback_requested"
        | "switch_back_requested"
        | "retry"
        | "promoted") => {
            let verb = match kind {
                "paused" => "paused",
                "resumed" => "resumed",
                "abort_requested" => "abort asked for",
                "rollback_requested" => "rollback asked for",
                "switch_back_requested" => "switch back asked for",
                "retry" => "retried",
                _ => "promoted",
            };
            let who = if by.is_some() { asked() } else { owner() };
            let reason = text(&e.data, "reason").map(|r| format!(" ({r})")).unwrap_or_default();
            change(ChangeKind::Control, format!("{name} {verb}{reason}"), targets, who)
        }
        "rollback_started" => {
            let mut agents = strings(&e.data["agents"]);
            if agents.is_empty() {
                agents = targets;
            }
            let reason = text(&e.data, "reason").unwrap_or_default();
            change(
                ChangeKind::Rollback,
                format!("{name} began returning {}: {reason}", agent_words(&agents)),
                agents,
                owner(),
            )
        }
        "succeeded" => {
            let reason = text(&e.data, "reason").map(|r| format!(": {r}")).unwrap_or_default();
            change(ChangeKind::Finished, format!("{name} succeeded{reason}"), targets, owner())
        }
        "rollout_failed" => {
            let reason = text(&e.data, "reason").map(|r| format!(": {r}")).unwrap_or_default();
            change(ChangeKind::Finished, format!("{name} failed{reason}"), targets, owner())
        }
        "finished" => {
            let status = crate::words::spaced(&text(&e.data, "status").unwrap_or_default());
            let reason = text(&e.data, "reason").map(|r| format!(": {r}")).unwrap_or_default();
            change(ChangeKind::Finished, format!("{name} {status}{reason}"), targets, owner())
        }
        "agent_action_started" => {
            let agent = text(&e.data, "agent")?;
            let action = text(&e.data, "action")?;
            let kind = match action.as_str() {
                "drain" => ChangeKind::Drain,
                "cordon" => ChangeKind::Cordon,
                "uncordon" => ChangeKind::Uncordon,
                "restart" => ChangeKind::Restart,
                _ => return None,
            };
            // How it ended is the next event about the same agent and action.
            let ended = later.iter().find(|l| {
                l.deployment.is_none()
                    && l.data.get("agent") == e.data.get("agent")
                    && l.data.get("action") == e.data.get("action")
                    && l.kind.starts_with("agent_action_")
                    && l.kind != "agent_action_started"
            });
            let how = match ended.map(|l| l.kind.as_str()) {
                Some("agent_action_succeeded") => String::new(),
                Some(_) => format!(" (failed: {})", ended.and_then(|l| text(&l.data, "error")).unwrap_or_default()),
                None => " (no answer recorded)".to_string(),
            };
            change(kind, format!("{action} {agent}{how}"), vec![agent], asked())
        }
        "freeze" => change(
            ChangeKind::Freeze,
            "froze the fleet: rollouts paused, automatic failover and failback held".to_string(),
            Vec::new(),
            asked(),
        ),
        "unfreeze" => change(ChangeKind::Unfreeze, "lifted the freeze".to_string(), Vec::new(), asked()),
        _ => return None,
    })
}

/// Which audit rows a query wants.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Rows whose operation names this agent (as its `agent`, or in its scope).
    pub agent: Option<String>,
    /// Rows of this operation (`drain`, `deploy`, ...).
    pub action: Option<String>,
    pub limit: u32,
}

/// The audit rows of the span that fit the query, oldest first, the latest `limit`.
pub async fn audit(registry: &Registry, q: &AuditQuery) -> Result<Vec<AuditEntry>, RegistryError> {
    let rows = registry.audit_between(q.from, q.to, MAX_ROWS).await?;
    let mut kept: Vec<AuditEntry> = rows
        .into_iter()
        .filter(|r| {
            let op = r.operation.as_ref();
            let name_ok = q.action.as_deref().is_none_or(|a| op.and_then(|o| o["op"].as_str()) == Some(a));
            let agent_ok = q.agent.as_deref().is_none_or(|a| op.is_some_and(|o| names_agent(o, a)));
            name_ok && agent_ok
        })
        .collect();
    let skip = kept.len().saturating_sub(q.limit as usize);
    Ok(kept.split_off(skip))
}

/// Whether an operation's JSON names `agent`: its `agent` field or an `agent:` selector.
fn names_agent(op: &Value, agent: &str) -> bool {
    op.get("agent").and_then(Value::as_str) == Some(agent)
        || op
            .get("scope")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|sel| sel.as_str() == Some(&format!("agent:{agent}"))))
}

/// "drained", "rolled out": the operation as a past-tense verb, for "who drained edge-7?".
pub fn past_tense(op: &str) -> String {
    match op {
        "drain" => "drained".into(),
        "cordon" => "cordoned".into(),
        "uncordon" => "uncordoned".into(),
        "restart" => "restarted".into(),
        "deploy" => "rolled out".into(),
        "pause" => "paused".into(),
        "resume" => "resumed".into(),
        "promote" => "promoted".into(),
        "abort" => "aborted".into(),
        "rollback" => "rolled back".into(),
        "retry" => "retried".into(),
        "failover" => "failed over".into(),
        "failback" => "failed back".into(),
        "shift_traffic" => "shifted traffic of".into(),
        "freeze" => "froze".into(),
        "unfreeze" => "unfroze".into(),
        other => format!("ran {}", crate::words::spaced(other)),
    }
}

/// Whether an audit row was carried out (not asked, refused or failed).
pub fn carried_out(r: &AuditEntry) -> bool {
    r.result == AuditResult::Ok
}
