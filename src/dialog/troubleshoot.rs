//! The troubleshooting family: `explain`, `changes`, `versions`, `show_audit`,
//! `freeze` and `unfreeze` — their checks, execution and replies. The rest of the
//! dialog reaches them through one dispatch line each.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::diagnose::changes::{self, agent_words, AuditQuery, Change, ChangesQuery};
use crate::diagnose::{self, clock, Diagnosis, Facts, Question, LEAD};
use crate::feasibility::{known_extension, plain, scope_words, Feasible, Infeasible};
use crate::ops::{Actor, Metric, Operation, Scope, TimeSpec};
use crate::registry::{AuditResult, DeploymentRecord};
use crate::reply::{Outcome, Reply, Table};
use crate::services::Services;
use crate::topology::Topology;

/// Continues an investigation: "and us-east?" asks what the last question asked,
/// of us-east; "compare with yesterday" and "show me the errors" without a subject
/// mean the subject being investigated. Remembers this family's questions.
pub(super) fn follow_on(op: Operation, utterance: &str, ctx: &mut super::Context) -> Operation {
    let text = utterance.trim().to_lowercase();
    let ellipsis = ["and ", "what about ", "how about "].iter().any(|p| text.starts_with(p));
    let op = match (op, ctx.inquiry.as_ref()) {
        (Operation::Explain { scope: Some(scope), deployment: None, metric: None, compare: None }, Some(last))
            if ellipsis =>
        {
            match last {
                Operation::Changes { since, until, .. } => {
                    Operation::Changes { since: *since, until: *until, scope: Some(scope) }
                }
                Operation::Versions { extension, .. } => {
                    Operation::Versions { extension: extension.clone(), scope: Some(scope) }
                }
                Operation::Explain { metric, compare, .. } => Operation::Explain {
                    scope: Some(scope),
                    deployment: None,
                    metric: metric.clone(),
                    compare: *compare,
                },
                _ => Operation::Explain { scope: Some(scope), deployment: None, metric: None, compare: None },
            }
        }
        (
            Operation::Explain { scope: None, deployment: None, metric, compare },
            Some(Operation::Explain { scope: last, deployment, .. }),
        ) => {
            let (scope, deployment) = match (last, deployment) {
                (Some(s), _) => (Some(s.clone()), None),
                (None, d) => (None, d.clone()),
            };
            Operation::Explain { scope, deployment, metric, compare }
        }
        (op, _) => op,
    };
    match &op {
        Operation::Explain { .. } | Operation::Changes { .. } | Operation::Versions { .. } => {
            ctx.inquiry = Some(op.clone())
        }
        // Another question ends the investigation; steering the dialog does not.
        op if op.effect() != crate::ops::Effect::Dialog => ctx.inquiry = None,
        _ => {}
    }
    op
}

/// The names this family's operations need must exist.
pub(super) fn check(op: &Operation, topo: &Topology) -> Result<Feasible, Infeasible> {
    match op {
        Operation::Versions { extension: Some(e), .. } => known_extension(e, topo).map(|_| plain(Vec::new())),
        _ => Ok(plain(Vec::new())),
    }
}

/// The confirmation line of this family's mutating operations.
pub(super) fn summary(op: &Operation) -> Option<String> {
    match op {
        Operation::Freeze => Some("Freeze the fleet".to_string()),
        _ => None,
    }
}

/// This family's checks, and the freeze's hold on operations that would move a
/// rollout forward. `None`: nothing to say here, the usual checks apply.
pub(super) async fn check_live(services: &Services, op: &Operation) -> Option<Result<Feasible, Infeasible>> {
    let plain = || Feasible { targets: Vec::new(), already: Vec::new(), risk: None };
    let refuse = |reason: String, alternatives: Vec<String>| {
        Some(Err(Infeasible { reasons: vec![reason], alternatives, queueable: false }))
    };
    let frozen = match services.registry.freeze().await {
        Ok(f) => f,
        Err(e) => return refuse(format!("The registry could not be read: {e}."), Vec::new()),
    };
    match op {
        op if crate::freeze::forbidden(op) => match frozen {
            Some(f) => refuse(
                format!(
                    "The fleet is frozen (since {} by {} through {}), so no rollout starts or moves on.",
                    clock(f.at),
                    f.actor,
                    f.frontend
                ),
                vec!["unfreeze".into(), "list deployments".into()],
            ),
            None => None,
        },
        Operation::Freeze => {
            let running: Vec<String> = match services.registry.active_deployments().await {
                Ok(list) => list
                    .into_iter()
                    .filter(|d| d.status == crate::ops::DeploymentStatus::Running)
                    .map(|d| d.name)
                    .collect(),
                Err(e) => return refuse(format!("The registry could not be read: {e}."), Vec::new()),
            };
            if let Some(f) = frozen {
                return refuse(
                    format!(
                        "The fleet is already frozen (since {} by {} through {}).",
                        clock(f.at),
                        f.actor,
                        f.frontend
                    ),
                    vec!["unfreeze".into()],
                );
            }
            let what = match running.len() {
                0 => "it stops every rollout from starting or moving on (none is running now)".to_string(),
                _ => format!("it pauses {} (running)", and_list(&running)),
            };
            Some(Ok(Feasible {
                risk: Some(format!("{what} and holds the automatic failover and failback until \"unfreeze\"")),
                ..plain()
            }))
        }
        Operation::Unfreeze if frozen.is_none() => refuse(
            "Nothing is frozen: rollouts and the automatic failover and failback run as usual.".into(),
            Vec::new(),
        ),
        Operation::Explain { deployment: Some(id), .. } => match services.registry.deployment_by_name(id).await {
            Ok(Some(_)) => Some(Ok(plain())),
            Ok(None) => refuse(format!("There is no deployment {id}."), vec!["list deployments".into()]),
            Err(e) => refuse(format!("The registry could not be read: {e}."), Vec::new()),
        },
        _ => None,
    }
}

fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Leads a reply with the freeze while one is in force.
pub(super) async fn mark_frozen(services: &Services, reply: &mut Reply) {
    if matches!(reply.operation, Some(Operation::Freeze | Operation::Unfreeze)) {
        return;
    }
    if let Ok(Some(f)) = services.registry.freeze().await {
        reply.message = format!("{} {}", crate::freeze::notice(&f), reply.message);
        if let Some(serde_json::Value::Object(map)) = &mut reply.details {
            map.insert("frozen".into(), json!(f));
        } else if reply.details.is_none() {
            reply.details = Some(json!({ "frozen": f }));
        }
    }
}

/// Carries out one of this family's operations.
pub(super) async fn run(services: &Services, actor: &Actor, op: &Operation, utterance: &str) -> Reply {
    let topo = services.topology.snapshot();
    match op {
        Operation::Explain { scope, deployment, metric, compare } => {
            explain(services, &topo, scope.as_ref(), deployment.as_deref(), metric.as_deref(), compare.as_ref()).await
        }
        Operation::Changes { since, until, scope } => {
            changes_reply(services, &topo, since, until, scope.as_ref()).await
        }
        Operation::Versions { extension, scope } => {
            versions(&topo, extension.as_deref(), scope.as_ref().unwrap_or(&Scope::fleet()))
        }
        Operation::ShowAudit { since, agent, action } => {
            audit_reply(services, since, agent.as_deref(), action.as_deref()).await
        }
        Operation::Freeze => freeze(services, actor, utterance).await,
        Operation::Unfreeze => unfreeze(services, actor).await,
        other => Reply::new(Outcome::Infeasible, format!("{} is not a troubleshooting operation.", other.name())),
    }
}

fn registry_failed(e: impl std::fmt::Display) -> Reply {
    Reply::new(Outcome::Failed, format!("The registry could not be read: {e}"))
}

/// The changes and deployments an explanation looks at: since the history began
/// (or the last day), and [`LEAD`] before.
async fn facts_changes(services: &Services, now: DateTime<Utc>) -> Result<(Vec<Change>, Vec<DeploymentRecord>), Reply> {
    let begin = services.topology.history().since().unwrap_or(now).min(now - chrono::Duration::hours(1));
    let q = ChangesQuery { from: begin - LEAD, to: now, agents: None, regions: None };
    let list = changes::changes(&services.registry, &q).await.map_err(registry_failed)?;
    let names: BTreeSet<&str> = list.iter().filter_map(|c| c.deployment.as_deref()).collect();
    let mut deployments = Vec::new();
    for n in names {
        if let Ok(Some(d)) = services.registry.deployment_by_name(n).await {
            deployments.push(d);
        }
    }
    Ok((list, deployments))
}

async fn explain(
    services: &Services,
    topo: &Topology,
    scope: Option<&Scope>,
    deployment: Option<&str>,
    metric: Option<&str>,
    compare: Option<&TimeSpec>,
) -> Reply {
    let now = Utc::now();
    let (list, deployments) = match facts_changes(services, now).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let facts = Facts {
        topo,
        history: services.topology.history(),
        thresholds: services.thresholds,
        changes: &list,
        deployments: &deployments,
        now,
    };
    let focus = match metric {
        Some(m) => match Metric::parse(m) {
            Some(m) => Some(m),
            None => {
                return Reply::new(
                    Outcome::Infeasible,
                    format!("There is no metric `{m}`; Parley reads {}.", Metric::NAMES.join(", ")),
                )
                .feasible(false)
            }
        },
        None => None,
    };
    let d = match deployment {
        Some(id) => {
            let Ok(Some(dep)) = services.registry.deployment_by_name(id).await else {
                return Reply::new(Outcome::Infeasible, format!("There is no deployment {id}.")).feasible(false);
            };
            let events = services.registry.events(dep.id).await.unwrap_or_default();
            diagnose::explain_deployment(&facts, &dep, &events)
        }
        None => {
            let scope = scope.cloned().unwrap_or_else(Scope::fleet);
            let subject = scope_words(&scope);
            let subject = if scope.is_fleet() { "the fleet".to_string() } else { subject };
            let q = Question { scope: &scope, subject, focus, compare: compare.map(|c| c.resolve(now)) };
            diagnose::explain(&facts, &q)
        }
    };
    diagnosis_reply(&d)
}

/// The reply of an explanation: the headline and the next steps in the message (what
/// voice says), the evidence as a table (what Slack shows as fields), everything in
/// `details`.
pub fn diagnosis_reply(d: &Diagnosis) -> Reply {
    let mut message = d.headline.clone();
    if !d.actions.is_empty() {
        let quoted: Vec<String> = d.actions.iter().take(3).map(|a| format!("\"{a}\"")).collect();
        message.push_str(&format!(" Next: {}.", or_list(&quoted)));
    }
    let mut table = Table::new(format!("Evidence: {}", d.subject), &["Finding", "Source"]);
    for e in &d.evidence {
        table.push(vec![e.text.clone(), e.source.clone()]);
    }
    for u in &d.unknown {
        table.push(vec![u.clone(), "not known".into()]);
    }
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(serde_json::to_value(d).unwrap_or_default())
        .with_follow_ups(d.actions.clone())
}

fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// "since 00:12:05 (1h)" or "since 2026-11-01".
fn span_words(from: DateTime<Utc>, spec: &TimeSpec, now: DateTime<Utc>) -> String {
    if now - from <= chrono::Duration::hours(24) {
        format!("since {} ({})", clock(from), spec)
    } else {
        format!("since {} ({})", from.format("%Y-%m-%d %H:%M"), spec)
    }
}

async fn changes_reply(
    services: &Services,
    topo: &Topology,
    since: &Option<TimeSpec>,
    until: &Option<TimeSpec>,
    scope: Option<&Scope>,
) -> Reply {
    let now = Utc::now();
    let spec = since.unwrap_or(TimeSpec::hours(1));
    let from = spec.resolve(now);
    let to = until.map(|u| u.resolve(now)).unwrap_or(now);
    let scoped = scope.filter(|s| !s.is_fleet());
    let (agents, regions) = match scoped {
        Some(s) => {
            let agents: BTreeSet<String> = topo.select(s).map(|a| a.name.to_string()).collect();
            // A named agent that left the fleet still has its history.
            let mut agents = agents;
            if let Some(a) = s.first("agent") {
                agents.insert(a.to_string());
            }
            let regions: BTreeSet<String> = topo.select(s).map(|a| a.region.clone()).collect();
            (Some(agents), Some(regions))
        }
        None => (None, None),
    };
    let q = ChangesQuery { from, to, agents, regions };
    let list = match changes::changes(&services.registry, &q).await {
        Ok(l) => l,
        Err(e) => return registry_failed(e),
    };
    let place = match scoped {
        Some(s) => format!(" on {}", scope_words(s)),
        None => String::new(),
    };
    let span = span_words(from, &spec, now);
    let message = if list.is_empty() {
        format!(
            "Nothing changed{place} {span}: no rollout, step, rollback, routing change, drain, cordon or restart is recorded."
        )
    } else {
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &list {
            *kinds.entry(c.kind.as_str()).or_default() += 1;
        }
        let counts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let last = list
            .last()
            .map(|c| format!(" The latest, at {}: {}, by {} through {}.", clock(c.at), c.summary, c.actor, c.frontend))
            .unwrap_or_default();
        format!("{} change{}{place} {span} ({}).{last}", list.len(), crate::words::s(list.len()), counts.join(", "))
    };
    let mut table = Table::new(format!("Changes{place} {span}"), &["Time", "Change", "Who", "From", "Source"]);
    for c in &list {
        table.push(vec![clock(c.at), c.summary.clone(), c.actor.clone(), c.frontend.clone(), c.source.clone()]);
    }
    let mut follow = Vec::new();
    if let Some(d) = list.iter().rev().find_map(|c| c.deployment.clone()) {
        follow.push(format!("show deployment {d}"));
    }
    let subject = scoped.map(scope_words).unwrap_or_else(|| "the fleet".into());
    follow.push(format!("what's wrong with {subject}?"));
    follow.push("show the audit log for today".into());
    let mut reply = Reply::new(Outcome::Answered, message)
        .with_details(json!({ "since": from, "until": to, "scope": scope, "changes": list }))
        .with_follow_ups(follow);
    if !list.is_empty() {
        reply = reply.with_table(table);
    }
    reply
}

fn versions(topo: &Topology, extension: Option<&str>, scope: &Scope) -> Reply {
    let agents: Vec<&crate::topology::AgentView> = topo.select(scope).collect();
    let place = if scope.is_fleet() { "the fleet".to_string() } else { scope_words(scope) };
    // extension -> version -> agents
    let mut by: BTreeMap<&str, BTreeMap<&str, Vec<String>>> = BTreeMap::new();
    for a in &agents {
        for (e, v) in &a.extensions {
            if extension.is_none_or(|x| x == e) {
                by.entry(e.as_str()).or_default().entry(v.as_str()).or_default().push(a.name.to_string());
            }
        }
    }
    let mut table = Table::new(format!("Versions in {place}"), &["Extension", "Version", "Agents", "Which"]);
    let mut sentences = Vec::new();
    for (e, versions) in &by {
        let mut parts = Vec::new();
        // Most agents first: the odd ones out stand out at the end.
        let mut vs: Vec<(&&str, &Vec<String>)> = versions.iter().collect();
        vs.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        for (v, names) in &vs {
            table.push(vec![e.to_string(), v.to_string(), names.len().to_string(), agent_words(names)]);
            parts.push(if agents.len() == 1 {
                v.to_string()
            } else {
                format!(
                    "{v} on {}",
                    if names.len() == agents.len() { format!("all {}", names.len()) } else { names.len().to_string() }
                )
            });
        }
        let with: usize = versions.values().map(Vec::len).sum();
        if with < agents.len() && agents.len() > 1 {
            parts.push(format!("not installed on {}", agents.len() - with));
        }
        sentences.push(format!("{e} {}", parts.join(", ")));
    }
    let message = match (extension, agents.len()) {
        (_, 0) => format!("No agent is in {place}."),
        (Some(e), n) if by.is_empty() => format!("{e} is not installed on any of the {n} agents in {place}."),
        (Some(_), 1) => format!("{place} runs {}.", sentences.join("; ")),
        (Some(_), n) => format!("In {place} ({n} agents): {}.", sentences.join("; ")),
        (None, 1) => format!("{place} runs {}.", and_list(&sentences)),
        (None, n) => format!("In {place} ({n} agents): {}.", sentences.join("; ")),
    };
    let details: BTreeMap<&str, BTreeMap<&str, &Vec<String>>> =
        by.iter().map(|(e, vs)| (*e, vs.iter().map(|(v, n)| (*v, n)).collect())).collect();
    let mut follow = Vec::new();
    if let Some(e) = extension {
        if let Some(vs) = by.get(e) {
            if vs.len() > 1 {
                follow.push(format!("what's wrong with {place}?"));
            }
        }
    }
    follow.push(format!("what changed on {place} today?"));
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(json!({ "scope": scope, "agents": agents.len(), "extensions": details }))
        .with_follow_ups(follow)
}

async fn audit_reply(
    services: &Services,
    since: &Option<TimeSpec>,
    agent: Option<&str>,
    action: Option<&str>,
) -> Reply {
    if let Some(a) = action {
        if !Operation::NAMES.contains(&a) {
            return Reply::new(Outcome::Infeasible, format!("`{a}` is not an operation of the contract."))
                .feasible(false);
        }
    }
    let now = Utc::now();
    let spec = since.unwrap_or(TimeSpec::hours(24));
    let from = spec.resolve(now);
    let q =
        AuditQuery { from, to: now, agent: agent.map(str::to_string), action: action.map(str::to_string), limit: 200 };
    let rows = match changes::audit(&services.registry, &q).await {
        Ok(r) => r,
        Err(e) => return registry_failed(e),
    };
    let span = span_words(from, &spec, now);
    let mut table = Table::new(format!("Audit log {span}"), &["Time", "Who", "Front-end", "Role", "Said", "Result"]);
    for r in &rows {
        table.push(vec![
            clock(r.at),
            r.actor.clone(),
            r.frontend.clone(),
            r.role.as_str().to_string(),
            r.utterance.clone(),
            r.result.as_str().to_string(),
        ]);
    }
    let message = match (action, agent) {
        (Some(op), subject) => {
            let verb = changes::past_tense(op);
            let object = subject.map(|a| format!(" {a}")).unwrap_or_default();
            let done: Vec<&crate::registry::AuditEntry> = rows.iter().filter(|r| changes::carried_out(r)).collect();
            match done.last() {
                Some(last) => {
                    let what = if subject.is_some() { object.trim().to_string() } else { describe_op(last) };
                    let mut m = format!(
                        "{} {verb} {what} at {} through {} (\"{}\").",
                        last.actor,
                        clock(last.at),
                        last.frontend,
                        last.utterance
                    );
                    if done.len() > 1 {
                        let earlier: Vec<String> = done[..done.len() - 1]
                            .iter()
                            .rev()
                            .take(3)
                            .map(|r| format!("{} at {} through {}", r.actor, clock(r.at), r.frontend))
                            .collect();
                        m.push_str(&format!(" Earlier {span}: {}.", earlier.join("; ")));
                    }
                    let refused: Vec<String> = rows
                        .iter()
                        .filter(|r| {
                            matches!(r.result, AuditResult::Refused | AuditResult::Failed | AuditResult::Infeasible)
                        })
                        .map(|r| format!("{} ({})", r.actor, r.result.as_str()))
                        .collect();
                    if !refused.is_empty() {
                        m.push_str(&format!(" Also asked, not carried out: {}.", refused.join(", ")));
                    }
                    m
                }
                None if rows.is_empty() => format!("Nobody {verb}{object} {span}, as far as the audit log says."),
                None => format!(
                    "Nobody {verb}{object} {span}: {} asked and it was not carried out (see the table).",
                    and_list(&rows.iter().map(|r| format!("{} ({})", r.actor, r.result.as_str())).collect::<Vec<_>>())
                ),
            }
        }
        (None, Some(a)) if rows.is_empty() => format!("No request about {a} {span}."),
        (None, Some(a)) => {
            format!("{} about {a} {span}.", crate::words::count(rows.len(), "request"))
        }
        (None, None) if rows.is_empty() => format!("The audit log has no entries {span}."),
        (None, None) => {
            let people: BTreeSet<String> = rows.iter().map(|r| format!("{} ({})", r.actor, r.frontend)).collect();
            let changed = rows
                .iter()
                .filter(|r| changes::carried_out(r))
                .filter(|r| {
                    r.operation.as_ref().and_then(|o| Operation::from_json(o.clone()).ok()).is_some_and(|o| o.mutates())
                })
                .count();
            format!(
                "The audit log {span}: {} entr{} from {}; {changed} changed the fleet.",
                rows.len(),
                crate::words::either(rows.len(), "y", "ies"),
                people.into_iter().collect::<Vec<_>>().join(", ")
            )
        }
    };
    let mut follow = vec!["what changed today?".to_string()];
    if let Some(a) = agent {
        follow.insert(0, format!("show agent {a}"));
    }
    let mut reply = Reply::new(Outcome::Answered, message)
        .with_details(json!({ "since": from, "agent": agent, "action": action, "entries": rows }))
        .with_follow_ups(follow);
    if !rows.is_empty() {
        reply = reply.with_table(table);
    }
    reply
}

/// "d-3", "eu-west", "auth-filter 2.1.0 to eu-west": what an audited operation acted on.
fn describe_op(r: &crate::registry::AuditEntry) -> String {
    let Some(o) = &r.operation else { return "something".into() };
    for key in ["agent", "deployment", "from", "region"] {
        if let Some(v) = o.get(key).and_then(|v| v.as_str()) {
            return v.to_string();
        }
    }
    match (o.get("extension").and_then(|v| v.as_str()), o.get("version").and_then(|v| v.as_str())) {
        (Some(e), Some(v)) => {
            let scope = o.get("scope").and_then(|s| serde_json::from_value::<Scope>(s.clone()).ok());
            format!("{e} {v}{}", scope.map(|s| format!(" to {}", scope_words(&s))).unwrap_or_default())
        }
        _ => "the fleet".into(),
    }
}

async fn freeze(services: &Services, actor: &Actor, utterance: &str) -> Reply {
    match crate::freeze::freeze(&services.registry, &services.orchestrator, actor, utterance).await {
        Ok(f) => {
            let mut message = format!(
                "Froze the fleet at {}: automatic failover and failback are held and no rollout starts or moves on until \"unfreeze\".",
                clock(f.record.at)
            );
            match f.paused.len() {
                0 => message.push_str(" No rollout was running."),
                _ => message.push_str(&format!(" Paused {}.", and_list(&f.paused))),
            }
            if !f.not_paused.is_empty() {
                let names: Vec<String> = f.not_paused.iter().map(|(n, why)| format!("{n} ({why})")).collect();
                message.push_str(&format!(
                    " Not paused here: {}; the process that drives them pauses them within a second.",
                    names.join("; ")
                ));
            }
            let mut follow = vec!["list deployments".to_string(), "show routing".to_string()];
            follow.push("unfreeze".into());
            Reply::new(Outcome::Done, message)
                .with_details(json!({
                    "frozen": f.record,
                    "paused": f.paused,
                    "not_paused": f.not_paused.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                }))
                .with_follow_ups(follow)
        }
        Err(e) => Reply::new(Outcome::Failed, format!("The freeze could not be recorded, so nothing changed: {e}.")),
    }
}

async fn unfreeze(services: &Services, actor: &Actor) -> Reply {
    match crate::freeze::unfreeze(&services.registry, actor).await {
        Ok(Some((was, paused))) => {
            let mut message = format!(
                "Lifted the freeze (by {} through {} at {}): automatic failover and failback run again and rollouts may start.",
                was.actor,
                was.frontend,
                clock(was.at)
            );
            let follow: Vec<String> = paused.iter().take(3).map(|d| format!("resume {d}")).collect();
            if !paused.is_empty() {
                message.push_str(&format!(" Still paused, each until resumed: {}.", and_list(&paused)));
            }
            Reply::new(Outcome::Done, message)
                .with_details(json!({ "lifted": was, "paused": paused }))
                .with_follow_ups(follow)
        }
        Ok(None) => Reply::new(Outcome::Infeasible, "Nothing is frozen.").feasible(false),
        Err(e) => Reply::new(Outcome::Failed, format!("The freeze could not be lifted: {e}.")),
    }
}
