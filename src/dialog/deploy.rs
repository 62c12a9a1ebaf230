//! The deploy family: `deploy` and its controls (`pause`, `resume`, `promote`,
//! `abort`, `rollback`, `retry`), `show_deployment` and `list_deployments`: their
//! checks, confirmation lines and plans, execution and replies. Rollouts start and
//! move only through the orchestrator; which control a deployment admits is the
//! lifecycle's answer (`orchestrate::lifecycle`), never decided here.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::json;

use crate::feasibility::{known_extension, names, plain, scope_words, Busy, Feasible, Indexed, Infeasible};
use crate::ops::{Actor, DeploymentStatus, Operation, Scope, Strategy, StrategyKind, TimeSpec};
use crate::orchestrate::lifecycle::{self, Control};
use crate::orchestrate::{plan_with, DeployRequest, Placement, Plan, RolloutSettings, Target};
use crate::registry::{DeploymentFilter, DeploymentRecord};
use crate::reply::{Outcome, Reply, Table};
use crate::services::Services;
use crate::topology::{AgentName, AgentView, Liveness, RegionHealth, Topology, VersionMatch};

/// The follow-up offered when a rollout overlaps an active one: the dialog then
/// queues the refused rollout behind it.
pub(super) const QUEUE_IT: &str = "queue it";

/// Checks a rollout against the fleet; the controls are checked against their
/// deployment's record instead ([`check_control`]).
pub(super) fn check(op: &Operation, topo: &Topology, busy: &Busy) -> Result<Feasible, Infeasible> {
    match op {
        Operation::Deploy { extension: Some(ext), version: Some(ver), scope: Some(scope), .. } => {
            check_deploy(ext, ver, scope, topo, busy)
        }
        _ => Ok(plain(Vec::new())),
    }
}

/// The check the dialog runs: a control against its deployment's record, a rollout
/// against the fleet and the agents other rollouts hold, then against its own plan.
pub(super) async fn check_live(services: &Services, op: &Operation, topo: &Topology) -> Result<Feasible, Infeasible> {
    if let Some(Some(id)) = op.deployment_slot() {
        let record = record(services, id).await?;
        return check_control(op, &record);
    }
    // A queued rollout may overlap: the orchestrator holds it until the other ends.
    let busy = match op {
        Operation::Deploy { queue: true, .. } => Busy::new(),
        _ => services.orchestrator.active_agents().await,
    };
    let feasible = check(op, topo, &busy)?;
    // A rollout that cannot be planned (phases that leave agents out, a limit for
    // another strategy) is refused now, not after the operator confirmed it.
    if let Some(why) = plan_problem(services, op, &feasible, topo) {
        return Err(Infeasible::new(why));
    }
    Ok(feasible)
}

/// The deployment a control names; a name that is not one gets the latest offered.
async fn record(services: &Services, id: &str) -> Result<DeploymentRecord, Infeasible> {
    match services.registry.deployment_by_name(id).await {
        Ok(Some(d)) => Ok(d),
        Ok(None) => {
            let latest = services.registry.latest_deployment().await.ok().flatten();
            let mut inf = Infeasible::new(match &latest {
                Some(l) => format!("There is no deployment {id}; the latest is {}.", l.name),
                None => format!("There is no deployment {id}; there are no deployments yet."),
            });
            if let Some(l) = latest {
                inf.alternatives.push(format!("show deployment {}", l.name));
            }
            inf.alternatives.push("list deployments".to_string());
            Err(inf)
        }
        Err(e) => Err(Infeasible::new(format!("The registry could not be read: {e}"))),
    }
}

/// Whether a deployment control fits the deployment's state: the lifecycle decides,
/// and says what to offer instead. The targets are the agents the control changes.
pub(super) fn check_control(op: &Operation, d: &DeploymentRecord) -> Result<Feasible, Infeasible> {
    let Some(control) = Control::of(op) else {
        let why = format!("{} is not a deployment control.", crate::words::spaced(op.name()));
        return Err(Infeasible::new(why));
    };
    match lifecycle::admits(d, control) {
        Ok(()) => Ok(Feasible {
            targets: lifecycle::changes(d, control).iter().map(|t| AgentName::new(&t.agent)).collect(),
            already: Vec::new(),
            risk: None,
        }),
        Err(refusal) => Err(Infeasible {
            alternatives: lifecycle::offers(d).into_iter().map(|c| c.utterance(&d.name)).collect(),
            ..Infeasible::new(format!("{}.", refusal.reason(&d.name)))
        }),
    }
}

/// Why a control needs a yes/no beyond what every operation is asked: resuming,
/// rolling back or retrying changes agents as a rollout does, so the rollout's rules
/// ([`deploy_risk`]) apply to the agents it changes.
pub(super) async fn risk(services: &Services, op: &Operation, topo: &Topology) -> Option<String> {
    match op {
        Operation::Resume { deployment: Some(id) }
        | Operation::Rollback { deployment: Some(id) }
        | Operation::Retry { deployment: Some(id) } => {
            let record = services.registry.deployment_by_name(id).await.ok().flatten()?;
            // Only the agents the control changes count: resuming a rollout whose
            // agents all run the version changes none of them.
            let control = Control::of(op)?;
            let agents: Vec<&AgentView> =
                lifecycle::changes(&record, control).iter().filter_map(|t| topo.agent(&t.agent)).collect();
            deploy_risk(&agents, topo)
        }
        _ => None,
    }
}

/// The confirmation line: a control's from its deployment's record (the agents it
/// changes, the versions they go to), a rollout's from its check.
pub(super) async fn summary(services: &Services, op: &Operation, f: &Feasible) -> Option<String> {
    if let Some(Some(id)) = op.deployment_slot() {
        if let Ok(Some(d)) = services.registry.deployment_by_name(id).await {
            if let Some(line) = control_summary(op, &d) {
                return Some(line);
            }
        }
    }
    Some(match op {
        Operation::Deploy { extension: Some(e), version: Some(v), scope: Some(s), strategy, .. } => {
            let how = strategy.as_ref().map(|s| s.describe()).unwrap_or_else(|| "rolling".to_string());
            format!(
                "Roll out {e} {v} to {} agent{} in {} ({how})",
                f.targets.len(),
                crate::words::s(f.targets.len()),
                scope_words(s)
            )
        }
        Operation::Abort { deployment: Some(d) } => {
            format!("Abort {d} and return its agents to their previous versions")
        }
        Operation::Rollback { deployment: Some(d) } => format!("Roll back {d} on {} agents", f.targets.len()),
        Operation::Resume { deployment: Some(d) } => format!("Resume {d}"),
        Operation::Retry { deployment: Some(d) } => format!("Retry {d}"),
        _ => return None,
    })
}

/// What the confirmation question shows of a deploy: its plan; `None` for the controls.
pub(super) fn preview(
    services: &Services,
    op: &Operation,
    feasible: &Feasible,
    topo: &Topology,
) -> Option<serde_json::Value> {
    match op {
        Operation::Deploy { extension: Some(ext), version: Some(ver), strategy, require_approval, gate, .. } => {
            let targets = targets(topo, ext, feasible);
            let strategy = strategy.clone().unwrap_or_else(default_strategy);
            let settings = services.orchestrator.settings();
            match plan_with(&strategy, &targets, settings, *require_approval) {
                Ok(p) => Some(json!({
                    "extension": ext, "version": ver, "strategy": strategy,
                    "targets": feasible.targets, "already": feasible.already,
                    "plan": services.orchestrator.describe_plan(&p, ext, gate),
                })),
                Err(e) => Some(json!({ "error": e.to_string() })),
            }
        }
        _ => None,
    }
}

/// The plan of a deploy as the confirmation's table: what the operator says yes to.
pub(super) fn confirmation_table(
    services: &Services,
    op: &Operation,
    feasible: &Feasible,
    topo: &Topology,
) -> Option<Table> {
    let Operation::Deploy { extension: Some(ext), strategy, require_approval, gate, .. } = op else { return None };
    let targets = targets(topo, ext, feasible);
    let strategy = strategy.clone().unwrap_or_else(default_strategy);
    let settings = services.orchestrator.settings();
    let plan = plan_with(&strategy, &targets, settings, *require_approval).ok()?;
    let analysis = services.orchestrator.describe_analysis(ext, gate);
    Some(plan_table(&plan, settings, analysis))
}

/// Why a feasible deploy cannot be planned, in the operator's words; `None` when it can.
pub(super) fn plan_problem(
    services: &Services,
    op: &Operation,
    feasible: &Feasible,
    topo: &Topology,
) -> Option<String> {
    let Operation::Deploy { extension: Some(ext), strategy, require_approval, gate, .. } = op else { return None };
    if let Err(e) = services.orchestrator.analysis_for(ext, gate) {
        return Some(format!("{}.", capitalise(&e.to_string())));
    }
    let targets = targets(topo, ext, feasible);
    if targets.is_empty() {
        return None;
    }
    let strategy = strategy.clone().unwrap_or_else(default_strategy);
    match plan_with(&strategy, &targets, services.orchestrator.settings(), *require_approval) {
        Ok(_) => None,
        Err(e) => Some(format!("{}.", capitalise(&e.to_string()))),
    }
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Carries out one of this family's operations.
pub(super) async fn run(
    services: &Services,
    actor: &Actor,
    op: &Operation,
    feasible: &Feasible,
    utterance: &str,
    topo: &Topology,
) -> Reply {
    match op {
        Operation::Deploy {
            extension: Some(ext),
            version: Some(ver),
            scope: Some(scope),
            strategy,
            require_approval,
            max_failures,
            queue,
            gate,
        } => {
            let request = DeployRequest {
                extension: ext.to_string(),
                version: ver.to_string(),
                scope: scope.clone(),
                strategy: strategy.clone().unwrap_or_else(default_strategy),
                targets: targets(topo, ext, feasible),
                actor: actor.clone(),
                utterance: utterance.to_string(),
                require_approval: *require_approval,
                max_failures: *max_failures,
                queue: *queue,
                gate: gate.clone(),
            };
            deploy(services, request, feasible).await
        }
        Operation::Pause { deployment: Some(id) } => control(services.orchestrator.pause(id, actor).await, "Paused"),
        Operation::Resume { deployment: Some(id) } => control(services.orchestrator.resume(id, actor).await, "Resumed"),
        Operation::Abort { deployment: Some(id) } => control(
            services.orchestrator.abort(id, actor).await,
            "Aborting; returning its agents to their previous versions:",
        ),
        Operation::Rollback { deployment: Some(id) } => {
            control(services.orchestrator.rollback(id, actor).await, "Rolling back to the previous versions:")
        }
        Operation::Retry { deployment: Some(id) } => {
            control(services.orchestrator.retry(id, actor).await, "Retrying from the step that failed:")
        }
        Operation::Promote { deployment: Some(id) } => {
            control(services.orchestrator.promote(id, actor).await, "Promoted; carrying on:")
        }
        Operation::ShowDeployment { deployment: Some(id) } => match services.registry.deployment_by_name(id).await {
            Ok(Some(d)) => super::gates::with_gates(deployment(&d), &services.registry, &d).await,
            Ok(None) => Reply::new(Outcome::Infeasible, format!("There is no deployment {id}.")).feasible(false),
            Err(e) => Reply::new(Outcome::Failed, format!("The registry could not be read: {e}")),
        },
        Operation::ListDeployments { scope, status, since } => {
            list_deployments(services, topo, scope.as_ref(), *status, since.as_ref()).await
        }
        other => super::render::not_yet(other),
    }
}

fn default_strategy() -> Strategy {
    Strategy::of(StrategyKind::Rolling)
}

fn targets(topo: &Topology, ext: &str, feasible: &Feasible) -> Vec<Target> {
    feasible
        .targets
        .iter()
        .filter_map(|name| topo.agent(name))
        .map(|a| Target {
            agent: a.name.to_string(),
            endpoint: a.endpoint.clone(),
            previous: a.extensions.get(ext).cloned(),
            placement: Placement {
                region: a.region.clone(),
                zone: a.zone.clone(),
                labels: a.labels.clone(),
                capabilities: a.capabilities.clone(),
            },
        })
        .collect()
}

async fn deploy(services: &Services, request: DeployRequest, feasible: &Feasible) -> Reply {
    let (ext, ver, scope, strategy) =
        (request.extension.clone(), request.version.clone(), request.scope.clone(), request.strategy.clone());
    let settings = services.orchestrator.settings();
    let described = plan_with(&strategy, &request.targets, settings, request.require_approval)
        .map(|p| services.orchestrator.describe_plan(&p, &ext, &request.gate))
        .unwrap_or_default();
    let mut from: BTreeMap<String, usize> = BTreeMap::new();
    for t in &request.targets {
        *from.entry(t.previous.clone().unwrap_or_else(|| "none".to_string())).or_default() += 1;
    }
    let from_text: Vec<String> = from.iter().map(|(v, n)| format!("{v} ({n})")).collect();
    let budget = request.max_failures;
    match services.orchestrator.start(request).await {
        Ok(d) if lifecycle::queued_behind(&d).is_some() => {
            let behind = lifecycle::queued_behind(&d).unwrap_or_default().to_string();
            Reply::new(
                Outcome::Started,
                format!(
                    "Queued {}: {ext} {ver} on {} agent{} in {} waits for {behind} and starts by itself when it finishes.",
                    d.name,
                    d.targets.len(),
                    crate::words::s(d.targets.len()),
                    scope_words(&scope),
                ),
            )
            .with_deployment(d.name.clone())
            .with_details(json!({ "plan": described, "targets": feasible.targets, "queued_behind": behind }))
            .with_follow_ups([format!("show deployment {}", d.name), format!("show deployment {behind}"), format!("abort {}", d.name)])
        }
        Ok(d) => {
            let how = strategy.describe();
            let mut message = format!(
                "Started {}: {ext} {} -> {ver} on {} agent{} in {}, {how}{} in {} step{}.",
                d.name,
                from_text.join(", "),
                d.targets.len(),
                crate::words::s(d.targets.len()),
                scope_words(&scope),
                // "rolling in batches of 4, at most 2 agents unavailable at once, in 3 steps"
                if how.contains(',') { "," } else { "" },
                described.len(),
                crate::words::s(described.len()),
            );
            if !feasible.already.is_empty() {
                message.push_str(&format!(" {} already run {ver} and are left alone.", feasible.already.len()));
            }
            if let Some(n) = budget {
                message.push_str(&format!(
                    " It stops and rolls back if more than {n} agent{} fail to install.",
                    crate::words::s(n)
                ));
            }
            let mut table = Table::new(format!("{} plan", d.name), &["Step"]);
            for line in &described {
                table.push(vec![line.clone()]);
            }
            Reply::new(Outcome::Started, message)
                .with_deployment(d.name.clone())
                .with_table(table)
                .with_details(json!({ "plan": described, "targets": feasible.targets, "already": feasible.already }))
                .with_follow_ups(deployment_offers(&d))
        }
        Err(e) => Reply::new(Outcome::Failed, format!("The rollout could not start: {e}")),
    }
}

fn control(result: Result<DeploymentRecord, crate::orchestrate::OrchestrateError>, verb: &str) -> Reply {
    match result {
        Ok(d) => {
            let mut reply = deployment(&d);
            reply.message = format!("{verb} {}", reply.message);
            reply.outcome = Outcome::Done;
            reply
        }
        Err(e) => Reply::new(Outcome::Failed, e.to_string()).feasible(false),
    }
}

async fn list_deployments(
    services: &Services,
    topo: &Topology,
    scope: Option<&Scope>,
    status: Option<DeploymentStatus>,
    since: Option<&TimeSpec>,
) -> Reply {
    let agents = scope.filter(|s| !s.is_fleet()).map(|s| topo.select(s).map(|a| a.name.to_string()).collect());
    let filter = DeploymentFilter { status, since: since.map(|s| s.resolve(Utc::now())), agents, limit: Some(50) };
    match services.registry.list_deployments(&filter).await {
        Ok(list) => deployments(&list, status, since),
        Err(e) => Reply::new(Outcome::Failed, format!("The registry could not be read: {e}")),
    }
}

/// "queue it": the deploy refused last for overlapping an active rollout, now queued.
/// Any other operation passes unchanged.
pub(super) fn queue_refused(op: Operation, refused: &mut Option<Operation>) -> Operation {
    match op {
        Operation::Deploy { extension: None, version: None, scope: None, queue: true, .. } => match refused.take() {
            Some(Operation::Deploy {
                extension,
                version,
                scope,
                strategy,
                require_approval,
                max_failures,
                gate,
                ..
            }) => Operation::Deploy {
                extension,
                version,
                scope,
                strategy,
                require_approval,
                max_failures,
                queue: true,
                gate,
            },
            _ => op,
        },
        op => op,
    }
}

fn duration_text(d: &DeploymentRecord) -> String {
    match d.duration() {
        Some(dur) => format!("{:.1} s", dur.num_milliseconds() as f64 / 1000.0),
        None => format!("{:.0} s so far", (chrono::Utc::now() - d.created_at).num_milliseconds() as f64 / 1000.0),
    }
}

pub(super) fn deployment(d: &DeploymentRecord) -> Reply {
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for t in &d.targets {
        *states.entry(t.state.as_str()).or_default() += 1;
    }
    let state_text: Vec<String> = states.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut message = format!(
        "{}: {} {} to {} ({}), {} after {}, step {} of {}; agents: {}.",
        d.name,
        d.extension,
        d.version,
        scope_words(&d.scope),
        d.strategy.describe(),
        d.status,
        duration_text(d),
        (d.current_step + 1).min(d.step_count.max(1)),
        d.step_count.max(1),
        state_text.join(", ")
    );
    if let Some(r) = &d.reason {
        message.push_str(&format!(" Reason: {r}"));
    }
    let mut table = Table::new(format!("{} targets", d.name), &["Agent", "Step", "Previous", "State", "Detail"]);
    for t in &d.targets {
        table.push(vec![
            t.agent.clone(),
            (t.step + 1).to_string(),
            t.previous_version.clone().unwrap_or_else(|| "none".into()),
            t.state.as_str().to_string(),
            t.detail.clone().unwrap_or_default(),
        ]);
    }
    Reply::new(Outcome::Answered, message)
        .with_deployment(d.name.clone())
        .with_table(table)
        .with_details(serde_json::to_value(d).unwrap_or_default())
        .with_follow_ups(deployment_offers(d))
}

/// What to say next about `d`: the lifecycle's offers, safest first. A finished
/// deployment is looked at through the health of where it ran.
fn deployment_offers(d: &DeploymentRecord) -> Vec<String> {
    lifecycle::offers(d)
        .into_iter()
        .map(|c| match c {
            Control::Show if !d.status.is_active() => match d.scope.first("region") {
                Some(r) => format!("how healthy is {r}?"),
                None => "how healthy is the fleet?".to_string(),
            },
            c => c.utterance(&d.name),
        })
        .collect()
}

/// The confirmation line of a deployment control, counting only the agents it
/// changes and naming the versions they go to; `None` for other operations.
fn control_summary(op: &Operation, d: &DeploymentRecord) -> Option<String> {
    let control = Control::of(op)?;
    let (name, ext, ver) = (&d.name, &d.extension, &d.version);
    let changed = lifecycle::changes(d, control).len();
    let total = d.targets.len();
    // "return 8 agents to auth-filter 2.0.3 and 4 to auth-filter 2.0.1"
    let returns = || {
        let to = |v: Option<String>| match v {
            Some(v) => format!("{ext} {v}"),
            None => format!("no {ext} (it was not installed before)"),
        };
        let groups: Vec<String> = lifecycle::returns_to(d)
            .into_iter()
            .enumerate()
            .map(|(i, (v, n))| match i {
                0 => format!("{n} agent{} to {}", crate::words::s(n), to(v)),
                _ => format!("{n} to {}", to(v)),
            })
            .collect();
        match groups.split_last() {
            None => "no agent was changed, so none is returned".to_string(),
            Some((last, [])) => format!("return {last}"),
            Some((last, rest)) => format!("return {} and {last}", rest.join(", ")),
        }
    };
    Some(match control {
        Control::Rollback if crate::orchestrate::switched_not_retired(d) => {
            format!("Switch {name} back to blue: {}", returns())
        }
        Control::Rollback => format!("Roll back {name} ({ext} {ver}): {}", returns()),
        Control::Abort => format!("Abort {name} ({ext} {ver}): {}", returns()),
        Control::Resume | Control::Promote | Control::Retry if changed == 0 => format!(
            "{} {name}: all {total} agent{} already run {ext} {ver}, so no agent changes",
            verb_of(control),
            crate::words::s(total)
        ),
        Control::Resume | Control::Promote | Control::Retry => format!(
            "{} {name}: install {ext} {ver} on the {changed} of {total} agent{} that do not run it yet",
            verb_of(control),
            crate::words::s(total)
        ),
        Control::Show | Control::Pause => return None,
    })
}

fn verb_of(control: Control) -> &'static str {
    match control {
        Control::Resume => "Resume",
        Control::Promote => "Promote",
        Control::Retry => "Retry",
        Control::Pause => "Pause",
        Control::Abort => "Abort",
        Control::Rollback => "Roll back",
        Control::Show => "Show",
    }
}

/// A rollout's plan as the confirmation shows it: one row per step with its agents,
/// bake, gate and what it waits for after. The phase column is there only when a
/// step has a phase name (progressive rollouts), since a column of dashes says nothing.
/// `gate`: the analysis templates in words, when they judge instead of the built-in gate.
fn plan_table(plan: &Plan, settings: &RolloutSettings, gate: Option<String>) -> Table {
    let phased = plan.steps.iter().any(|s| s.name.is_some());
    let columns: &[&str] = if phased {
        &["Step", "Phase", "Agents", "Reached", "Bake", "Gate", "Then"]
    } else {
        &["Step", "Agents", "Reached", "Bake", "Gate", "Then"]
    };
    let mut t = Table::new("Plan", columns);
    let total = plan.agent_count();
    let mut reached = 0;
    let gate = gate.unwrap_or_else(|| crate::orchestrate::describe_gate(&settings.gate));
    let bake = crate::orchestrate::describe_duration(settings.bake);
    for (i, s) in plan.steps.iter().enumerate() {
        reached += s.agents.len();
        let agents = if s.switch {
            "none (marks green live)".to_string()
        } else {
            format!("{}: {}", s.agents.len(), crate::words::and_more(&s.agents, 6))
        };
        let then = match s.wait {
            Some(crate::orchestrate::Wait::Promote) => "wait for promote",
            Some(crate::orchestrate::Wait::PromoteOrTimer) => "wait for promote (or the retirement timer)",
            None if i + 1 == plan.steps.len() => "done",
            None => "next step",
        };
        let mut row = vec![(i + 1).to_string()];
        if phased {
            row.push(s.name.clone().unwrap_or_else(|| "-".into()));
        }
        row.extend([
            agents,
            format!("{reached} of {total} ({}%)", s.cumulative_percent),
            if s.switch { "-".into() } else { bake.clone() },
            if s.switch { "-".into() } else { gate.clone() },
            then.to_string(),
        ]);
        t.push(row);
    }
    t
}

fn deployments(list: &[DeploymentRecord], status: Option<DeploymentStatus>, since: Option<&TimeSpec>) -> Reply {
    let filter = match (status, since) {
        (Some(s), Some(t)) => format!(" {s} since {t}"),
        (Some(s), None) => format!(" {s}"),
        (None, Some(t)) => format!(" since {t}"),
        (None, None) => String::new(),
    };
    let mut table =
        Table::new("Deployments", &["Id", "Extension", "Version", "Scope", "Strategy", "Status", "Started", "Took"]);
    for d in list {
        table.push(vec![
            d.name.clone(),
            d.extension.clone(),
            d.version.clone(),
            scope_words(&d.scope),
            d.strategy.kind.as_str().to_string(),
            d.status.as_str().to_string(),
            d.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            duration_text(d),
        ]);
    }
    let message = if list.is_empty() {
        format!("No deployments{filter}.")
    } else {
        // A held deployment waits for someone: say why right in the listing.
        let names: Vec<String> = list
            .iter()
            .take(5)
            .map(|d| match (&d.status, &d.reason) {
                (DeploymentStatus::Paused, Some(r)) => format!("{} paused ({r})", d.name),
                _ => format!("{} {}", d.name, d.status),
            })
            .collect();
        format!(
            "{} deployment{}{filter}: {}{}.",
            list.len(),
            crate::words::s(list.len()),
            names.join(", "),
            if list.len() > 5 { ", ..." } else { "" }
        )
    };
    let follow: Vec<String> = list.iter().take(2).map(|d| format!("show deployment {}", d.name)).collect();
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(json!({ "deployments": list.iter().map(|d| json!({"id": d.name, "extension": d.extension, "version": d.version, "status": d.status, "scope": d.scope, "reason": d.reason})).collect::<Vec<_>>() }))
        .with_follow_ups(follow)
}

fn check_deploy(ext: &str, ver: &str, scope: &Scope, topo: &Topology, busy: &Busy) -> Result<Feasible, Infeasible> {
    known_extension(ext, topo)?;
    let entry = topo.catalog().get(ext).ok_or_else(|| Infeasible::new(format!("no extension `{ext}`")))?;
    if !entry.has_version(ver) {
        let known = entry.version_strings();
        let mut inf = Infeasible::new(match entry.resolve_version(ver) {
            VersionMatch::Ambiguous(fits) => {
                format!("`{ver}` could mean {} of {ext}; say which.", fits.join(" or "))
            }
            _ => format!("The catalog has no version {ver} of {ext}; it has {}.", known.join(", ")),
        });
        if let Some(latest) = entry.latest() {
            inf = inf.or(format!("roll out {ext} {latest} to {}", scope_words(scope)));
        }
        return Err(inf);
    }
    let in_scope_i: Vec<Indexed<'_>> = topo.select_indexed(scope).collect();
    let in_scope: Vec<&AgentView> = in_scope_i.iter().map(|(_, a)| *a).collect();
    if in_scope.is_empty() {
        return Err(Infeasible::new(format!("No agent matches {scope}."))
            .or(format!("show topology of {}", scope_words(scope))));
    }

    // The regions in scope, by index; region health itself is precomputed.
    let mut in_region = vec![false; topo.regions().len()];
    for r in in_scope_i.iter().filter_map(|(i, _)| topo.agent_region(*i)) {
        if let Some(present) = in_region.get_mut(r) {
            *present = true;
        }
    }
    let partitioned: Vec<&str> = topo
        .regions()
        .iter()
        .zip(&in_region)
        .filter(|(r, present)| **present && topo.region_health(r) == RegionHealth::Partitioned)
        .map(|(r, _)| r.as_str())
        .collect();
    if !partitioned.is_empty() {
        // Only looks: another region is not what the operator asked for, and rolling
        // out there (often production) is a risk nobody meant to take.
        let inf = Infeasible::new(format!(
            "{} is partitioned: Parley cannot reach any of its agents, so it cannot install or verify anything there.",
            partitioned.join(", ")
        ))
        .or(format!("how healthy is {}?", partitioned[0]))
        .or("show routing");
        return Err(inf);
    }

    let mut reasons = Vec::new();
    let mut alternatives = Vec::new();

    let lacking: Vec<&AgentView> = if entry.requires.is_empty() {
        Vec::new()
    } else {
        in_scope.iter().copied().filter(|a| entry.requires.iter().any(|c| !a.has_capability(c))).collect()
    };
    if !lacking.is_empty() {
        let caps = entry.requires.join(", ");
        reasons.push(format!(
            "{ext} needs {caps}, which {} of the {} agents in scope lack: {}.",
            lacking.len(),
            in_scope.len(),
            names(&lacking)
        ));
        let able = in_scope.len() - lacking.len();
        if able > 0 {
            alternatives.push(format!("roll out {ext} {ver} to the {caps} agents in {}", scope_words(scope)));
        }
    }

    for dep in &entry.depends {
        // Each distinct installed version is parsed and matched once, then looked up
        // per agent by its id.
        let column = topo.extension_column(&dep.name);
        let fits: Vec<bool> = column
            .map(|c| c.versions().iter().map(|v| v.parse().ok().is_some_and(|v| dep.req.matches(&v))).collect())
            .unwrap_or_default();
        let unmet: Vec<&AgentView> = in_scope_i
            .iter()
            .filter(|(i, _)| {
                !column.and_then(|c| c.id_of(*i)).is_some_and(|id| fits.get(id as usize).copied().unwrap_or(false))
            })
            .map(|(_, a)| *a)
            .collect();
        if !unmet.is_empty() {
            reasons.push(format!(
                "{ext} needs {} {} on the same agents; {} of them do not have it: {}.",
                dep.name,
                dep.req,
                unmet.len(),
                names(&unmet)
            ));
            if let Some(latest) = topo.catalog().get(&dep.name).and_then(|d| d.latest()) {
                alternatives.push(format!("roll out {} {latest} to {} first", dep.name, scope_words(scope)));
            }
        }
    }

    let unavailable: Vec<&AgentView> = in_scope.iter().copied().filter(|a| !a.is_available()).collect();
    if !unavailable.is_empty() {
        let detail: Vec<String> = unavailable
            .iter()
            .take(6)
            .map(|a| {
                if a.liveness.is_reachable() {
                    format!("{} is {}", a.name, a.state.as_str())
                } else {
                    format!("{} is {}", a.name, a.liveness.as_str())
                }
            })
            .collect();
        reasons.push(format!(
            "{} of the {} agents in scope cannot take a rollout now: {}.",
            unavailable.len(),
            in_scope.len(),
            detail.join(", ")
        ));
        for zone in topo.zones() {
            let zone_agents: Vec<&&AgentView> = in_scope.iter().filter(|a| &a.zone == zone).collect();
            if !zone_agents.is_empty() && zone_agents.iter().all(|a| a.is_available()) {
                alternatives.push(format!("roll out {ext} {ver} to {zone}"));
            }
        }
        if let Some(a) = unavailable.iter().find(|a| a.liveness == Liveness::Down) {
            alternatives.push(format!("show agent {}", a.name));
        }
    }

    // Hashing every name costs more than the rest of a large check; skip it when no
    // rollout is active, which is the common case.
    let held: Vec<(&AgentView, &String)> = if busy.is_empty() {
        Vec::new()
    } else {
        in_scope.iter().filter_map(|a| busy.get(a.name.as_str()).map(|d| (*a, d))).collect()
    };
    if !held.is_empty() {
        let mut ids: Vec<&str> = held.iter().map(|(_, d)| d.as_str()).collect();
        ids.sort();
        ids.dedup();
        let agents: Vec<&AgentView> = held.iter().map(|(a, _)| *a).collect();
        reasons.push(format!(
            "{} still rolling out to {} of these agents ({}); one rollout at a time per agent.",
            ids.join(", "),
            agents.len(),
            names(&agents)
        ));
        alternatives.push(QUEUE_IT.to_string());
        alternatives.push(format!("show deployment {}", ids[0]));
        alternatives.push(format!("abort {}", ids[0]));
    }

    if !reasons.is_empty() {
        return Err(Infeasible { reasons, alternatives, queueable: !held.is_empty() });
    }

    let column = topo.extension_column(ext);
    let wanted = column.and_then(|c| c.version_id(ver));
    let (already, targets): (Vec<Indexed<'_>>, Vec<Indexed<'_>>) = in_scope_i
        .iter()
        .copied()
        .partition(|(i, _)| matches!((column, wanted), (Some(c), Some(id)) if c.runs(*i, id)));
    if targets.is_empty() {
        let mut inf = Infeasible::new(format!("All {} agents in {scope} already run {ext} {ver}.", already.len()));
        inf = inf.or(format!("find agents running {ext} {ver}"));
        return Err(inf);
    }
    let risk = risk_of(targets.iter().map(|(i, _)| (topo.agent_region(*i), topo.is_production(*i))), topo);
    let flapping: Vec<&AgentView> = targets.iter().map(|(_, a)| *a).filter(|a| a.flapping.is_some()).collect();
    let risk = with_flapping(risk, &flapping);
    Ok(Feasible {
        targets: targets.iter().map(|(_, a)| a.name.clone()).collect(),
        already: already.iter().map(|(_, a)| a.name.clone()).collect(),
        risk,
    })
}

/// Why a rollout to `targets` needs confirmation, if it does: production agents, or
/// more than a quarter of any region's agents.
pub(super) fn deploy_risk(targets: &[&AgentView], topo: &Topology) -> Option<String> {
    let risk = risk_of(
        targets.iter().map(|a| (topo.regions().iter().position(|r| *r == a.region), a.env() == Some("production"))),
        topo,
    );
    let flapping: Vec<&AgentView> = targets.iter().copied().filter(|a| a.flapping.is_some()).collect();
    with_flapping(risk, &flapping)
}

/// A rollout into agents that keep dropping out is warned about and confirmed, even
/// where it would otherwise start at once: the last poll caught them answering, but
/// an install or a health gate on them may fail for no fault of the version.
fn with_flapping(risk: Option<String>, flapping: &[&AgentView]) -> Option<String> {
    let warning = match flapping {
        [] => return risk,
        [one] => format!("{} is flapping (it keeps dropping out), so installing or checking it may fail", one.name),
        many => {
            format!("{} targets are flapping ({}), so installing or checking them may fail", many.len(), names(many))
        }
    };
    Some(match risk {
        Some(r) => format!("{r}; {warning}"),
        None => warning,
    })
}

/// [`deploy_risk`] over each target's region index (in `Topology::regions`) and
/// whether it serves production, which a large check reads from the snapshot's columns.
fn risk_of(targets: impl Iterator<Item = (Option<usize>, bool)>, topo: &Topology) -> Option<String> {
    let mut why = Vec::new();
    let mut prod = 0usize;
    let mut hits = vec![0usize; topo.regions().len()];
    for (region, production) in targets {
        prod += usize::from(production);
        if let Some(h) = region.and_then(|r| hits.get_mut(r)) {
            *h += 1;
        }
    }
    if prod > 0 {
        why.push(format!("it touches {prod} production agent{}", crate::words::s(prod)));
    }
    for (region, hit) in topo.regions().iter().zip(hits) {
        let total = topo.region_size(region);
        if total > 0 && hit * 4 > total {
            why.push(format!("it changes {hit} of {total} agents in {region} (more than a quarter)"));
        }
    }
    if why.is_empty() {
        None
    } else {
        Some(why.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::check;
    use crate::ops::Selector;
    use crate::topology::test_support::demo_topology;

    #[test]
    fn a_staging_region_rollout_targets_its_twelve_agents_and_is_risky_by_size() {
        let t = demo_topology();
        let ok =
            check(&Operation::deploy("auth-filter", "2.1.0", Scope::region("ap-south")), &t, &Busy::new()).unwrap();
        assert_eq!(ok.targets.len(), 12);
        assert_eq!(ok.risk.as_deref(), Some("it changes 12 of 12 agents in ap-south (more than a quarter)"));
    }

    #[test]
    fn model_server_needs_gpu() {
        let t = demo_topology();
        let err =
            check(&Operation::deploy("model-server", "0.4.0", Scope::region("eu-west")), &t, &Busy::new()).unwrap_err();
        assert_eq!(
            err.reasons,
            ["model-server needs gpu, which 10 of the 12 agents in scope lack: edge-13, edge-14, edge-15, edge-16, edge-17, edge-18 and 4 more."]
        );
        assert_eq!(err.alternatives, ["roll out model-server 0.4.0 to the gpu agents in eu-west"]);
    }

    #[test]
    fn overlapping_rollouts_are_refused() {
        let t = demo_topology();
        let busy: Busy = [("edge-19".to_string(), "d-4".to_string())].into_iter().collect();
        let err = check(&Operation::deploy("auth-filter", "2.1.0", Scope::region("ap-south")), &t, &busy).unwrap_err();
        assert_eq!(
            err.reasons,
            ["d-4 still rolling out to 1 of these agents (edge-19); one rollout at a time per agent."]
        );
        assert_eq!(err.alternatives, ["queue it", "show deployment d-4", "abort d-4"]);
    }

    fn with_agents(t: &Topology, change: impl Fn(&mut AgentView)) -> Topology {
        let mut agents = t.agents().to_vec();
        agents.iter_mut().for_each(change);
        Topology::new(agents, t.catalog_arc(), t.refreshed_at())
    }

    #[test]
    fn waf_rules_needs_auth_filter_two_on_the_same_agents() {
        let t = demo_topology();
        assert!(check(&Operation::deploy("waf-rules", "2024.2", Scope::region("ap-south")), &t, &Busy::new()).is_ok());
        let t = with_agents(&t, |a| {
            if a.name == "edge-19" || a.name == "gpu-8" {
                a.extensions.insert("auth-filter".into(), "1.0.0".into());
            }
        });
        let err =
            check(&Operation::deploy("waf-rules", "2024.2", Scope::region("ap-south")), &t, &Busy::new()).unwrap_err();
        assert_eq!(
            err.reasons,
            ["waf-rules needs auth-filter >= 2.0 on the same agents; 2 of them do not have it: edge-19, gpu-8."]
        );
        assert_eq!(err.alternatives, ["roll out auth-filter 2.1.0 to ap-south first"]);
    }

    #[test]
    fn a_partitioned_region_is_refused_with_healthy_alternatives() {
        let t = with_agents(&demo_topology(), |a| {
            if a.region == "eu-west" {
                a.liveness = Liveness::Down;
            }
        });
        let err =
            check(&Operation::deploy("auth-filter", "2.1.0", Scope::region("eu-west")), &t, &Busy::new()).unwrap_err();
        assert_eq!(
            err.reasons,
            ["eu-west is partitioned: Parley cannot reach any of its agents, so it cannot install or verify anything there."]
        );
        assert_eq!(err.alternatives, ["how healthy is eu-west?", "show routing"]);
    }

    #[test]
    fn a_rollout_into_a_flapping_agent_is_warned_and_confirmed() {
        use crate::topology::Flapping;
        let edge_19 = Scope(vec![Selector::Agent("edge-19".into())]);
        // One staging agent: not risky, so it would start at once.
        let ok =
            check(&Operation::deploy("auth-filter", "2.1.0", edge_19.clone()), &demo_topology(), &Busy::new()).unwrap();
        assert_eq!(ok.risk, None);
        let flap = Some(Flapping { changes: 30, window: std::time::Duration::from_secs(60) });
        let t = with_agents(&demo_topology(), |a| {
            if a.name == "edge-19" || a.name == "edge-20" {
                a.flapping = flap;
            }
        });
        let ok = check(&Operation::deploy("auth-filter", "2.1.0", edge_19), &t, &Busy::new()).unwrap();
        assert_eq!(
            ok.risk.as_deref(),
            Some("edge-19 is flapping (it keeps dropping out), so installing or checking it may fail")
        );
        let ok =
            check(&Operation::deploy("auth-filter", "2.1.0", Scope::region("ap-south")), &t, &Busy::new()).unwrap();
        assert_eq!(
            ok.risk.as_deref(),
            Some(
                "it changes 12 of 12 agents in ap-south (more than a quarter); 2 targets are flapping (edge-19, \
                 edge-20), so installing or checking them may fail"
            )
        );
        let targets: Vec<&AgentView> = ["edge-19"].iter().filter_map(|n| t.agent(n)).collect();
        assert_eq!(
            deploy_risk(&targets, &t).as_deref(),
            Some("edge-19 is flapping (it keeps dropping out), so installing or checking it may fail")
        );
    }

    #[test]
    fn down_and_cordoned_agents_block_a_rollout_and_whole_zones_are_offered() {
        let t = with_agents(&demo_topology(), |a| {
            if a.name == "edge-13" {
                a.liveness = Liveness::Down;
            }
            if a.name == "core-9" {
                a.state = crate::agent::protocol::ServingState::Cordoned;
            }
        });
        let err =
            check(&Operation::deploy("auth-filter", "2.1.0", Scope::region("eu-west")), &t, &Busy::new()).unwrap_err();
        assert_eq!(
            err.reasons,
            ["2 of the 12 agents in scope cannot take a rollout now: edge-13 is down, core-9 is cordoned."]
        );
        assert_eq!(err.alternatives, ["roll out auth-filter 2.1.0 to eu-west-b", "show agent edge-13"]);
    }
}
