//! Carrying out a checked operation: reads answer from the topology model and the
//! registry; changes go through the orchestrator, the one place that touches agents
//! for rollouts and agent actions.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::json;

use super::render;
use crate::agent::checks::run_checks;
use crate::agent::protocol::AgentAction;
use crate::feasibility::{scope_words, Feasible, Infeasible};
use crate::ops::{Actor, Check, DeploymentStatus, Operation, Scope, Strategy, StrategyKind, TimeSpec};
use crate::orchestrate::lifecycle::{self, Control};
use crate::orchestrate::{plan_with, DeployRequest, Placement, Target};
use crate::registry::{DeploymentFilter, DeploymentRecord};
use crate::reply::{Outcome, Reply, Table};
use crate::services::Services;
use crate::topology::{AgentName, AgentView, Topology};

/// Executes `op`, already checked (and confirmed where needed).
pub(super) async fn run(
    services: &Services,
    actor: &Actor,
    op: &Operation,
    feasible: &Feasible,
    utterance: &str,
) -> Reply {
    let topo = services.topology.snapshot();
    let reply = match op {
        Operation::ShowTopology { scope } => render::topology(&topo, scope.as_ref().unwrap_or(&Scope::fleet())),
        Operation::ShowHealth { scope } => {
            let scope = scope.clone().unwrap_or_else(Scope::fleet);
            let full = crate::digest::full_table_utterance(&scope, None);
            crate::digest::summarise(render::health(&topo, &scope), &topo, &full, crate::digest::Said::CountsAndNames)
        }
        Operation::ShowAgent { agent: Some(name) } => match topo.agent(name) {
            Some(a) => render::agent(a, &topo),
            None => Reply::new(Outcome::Infeasible, format!("There is no agent {name}.")),
        },
        Operation::FindAgents { scope, extension, all } => {
            let scope = scope.clone().unwrap_or_else(Scope::fleet);
            let reply = render::found(&topo, &scope, extension.as_ref());
            match all {
                true => reply,
                false => {
                    let full = crate::digest::full_table_utterance(&scope, extension.as_ref());
                    crate::digest::summarise(reply, &topo, &full, crate::digest::Said::Nothing)
                }
            }
        }
        Operation::ListExtensions { scope } => render::extensions(&topo, scope.as_ref().unwrap_or(&Scope::fleet())),
        Operation::RunHealthCheck { scope, checks } => {
            let scope = scope.clone().unwrap_or_else(Scope::fleet);
            let checks = checks.clone().unwrap_or_else(|| Check::ALL.to_vec());
            let agents: Vec<AgentView> = topo.select(&scope).cloned().collect();
            let results =
                run_checks(&services.client, &services.anonymous, &agents, &checks, &services.thresholds).await;
            render::checks(&scope, &checks, agents.len(), &results)
        }
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
                targets: targets(&topo, ext, feasible),
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
            Ok(Some(d)) => super::gates::with_gates(render::deployment(&d), &services.registry, &d).await,
            Ok(None) => Reply::new(Outcome::Infeasible, format!("There is no deployment {id}.")).feasible(false),
            Err(e) => Reply::new(Outcome::Failed, format!("The registry could not be read: {e}")),
        },
        Operation::ListDeployments { scope, status, since } => {
            list_deployments(services, &topo, scope.as_ref(), *status, since.as_ref()).await
        }
        Operation::Report { since, until, scope: _ } => {
            let now = Utc::now();
            let from = since.unwrap_or(TimeSpec::days(30));
            let to = until.map(|u| u.resolve(now)).unwrap_or(now);
            match services.registry.report(from.resolve(now), to).await {
                Ok(report) => render::report(&from, until.as_ref(), &report),
                Err(e) => Reply::new(Outcome::Failed, format!("The registry could not be read: {e}")),
            }
        }
        Operation::Drain { agent: Some(a) } => agent_action(services, actor, &topo, a, AgentAction::Drain).await,
        Operation::Cordon { agent: Some(a) } => agent_action(services, actor, &topo, a, AgentAction::Cordon).await,
        Operation::Uncordon { agent: Some(a) } => agent_action(services, actor, &topo, a, AgentAction::Uncordon).await,
        Operation::Restart { agent: Some(a) } => agent_action(services, actor, &topo, a, AgentAction::Restart).await,
        Operation::Failover { from: Some(from), to } => failover(services, actor, from, to.as_deref(), utterance).await,
        Operation::Failback { region: Some(r) } => failback(services, actor, r, utterance).await,
        Operation::ShiftTraffic { from: Some(from), to: Some(to), percent: Some(p) } => {
            match services.router.shift(from, to, *p, actor, utterance).await {
                Ok(applied) => Reply::new(
                    Outcome::Done,
                    format!(
                        "Sent {p}% of {from}'s traffic to {to}: {from} -> {} (routing version {}).",
                        applied.after.describe(from),
                        applied.version
                    ),
                )
                .with_details(json!({ "before": applied.before, "after": applied.after, "version": applied.version }))
                .with_follow_ups(["show routing".to_string(), format!("fail back {from}")]),
                Err(e) => Reply::new(Outcome::Failed, format!("The routing table was not changed: {e}.")),
            }
        }
        Operation::ShowRouting { .. } => show_routing(services).await,
        op if super::troubleshoot::handles(op) => super::troubleshoot::run(services, actor, op, utterance).await,
        other => {
            Reply::new(Outcome::Infeasible, format!("Parley cannot carry out {} yet.", other.name().replace('_', " ")))
                .feasible(false)
        }
    };
    let mut reply = reply.with_operation(Some(op.clone()));
    if reply.feasible.is_none() && reply.outcome != Outcome::Infeasible {
        reply.feasible = Some(true);
    }
    reply
}

/// What the confirmation question shows: the plan for a deploy, the targets otherwise.
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
        _ => Some(json!({ "targets": feasible.targets })),
    }
}

/// The plan of a deploy as the confirmation's table: what the operator says yes to.
pub(super) fn plan_table(services: &Services, op: &Operation, feasible: &Feasible, topo: &Topology) -> Option<Table> {
    let Operation::Deploy { extension: Some(ext), strategy, require_approval, gate, .. } = op else { return None };
    let targets = targets(topo, ext, feasible);
    let strategy = strategy.clone().unwrap_or_else(default_strategy);
    let settings = services.orchestrator.settings();
    let plan = plan_with(&strategy, &targets, settings, *require_approval).ok()?;
    let analysis = services.orchestrator.describe_analysis(ext, gate);
    Some(render::plan_table(&plan, settings, analysis))
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

/// Whether a deployment control fits the deployment's state: the lifecycle decides,
/// and says what to offer instead. The targets are the agents the control changes.
pub(super) fn check_control(op: &Operation, d: &DeploymentRecord) -> Result<Feasible, Infeasible> {
    let Some(control) = Control::of(op) else {
        let why = format!("{} is not a deployment control.", op.name().replace('_', " "));
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
                .with_follow_ups(render::deployment_offers(&d))
        }
        Err(e) => Reply::new(Outcome::Failed, format!("The rollout could not start: {e}")),
    }
}

fn control(result: Result<DeploymentRecord, crate::orchestrate::OrchestrateError>, verb: &str) -> Reply {
    match result {
        Ok(d) => {
            let mut reply = render::deployment(&d);
            reply.message = format!("{verb} {}", reply.message);
            reply.outcome = Outcome::Done;
            reply
        }
        Err(e) => Reply::new(Outcome::Failed, e.to_string()).feasible(false),
    }
}

async fn agent_action(services: &Services, actor: &Actor, topo: &Topology, name: &str, action: AgentAction) -> Reply {
    let Some(agent) = topo.agent(name) else {
        return Reply::new(Outcome::Infeasible, format!("There is no agent {name}.")).feasible(false);
    };
    match services.orchestrator.agent_action(name, &agent.endpoint, action, actor).await {
        Ok(status) => {
            services.poller.refresh().await;
            let what = match action {
                AgentAction::Drain => "is draining: it finishes in-flight work and then stops serving",
                AgentAction::Cordon => "is cordoned: it keeps serving but takes no new work or rollouts",
                AgentAction::Uncordon => "is active again and takes work and rollouts",
                AgentAction::Restart => "is restarting",
            };
            let follow = match action {
                AgentAction::Drain | AgentAction::Cordon => format!("uncordon {name}"),
                AgentAction::Uncordon | AgentAction::Restart => format!("show agent {name}"),
            };
            Reply::new(Outcome::Done, format!("{name} {what} (state: {}).", status.state.as_str()))
                .with_details(json!({ "agent": name, "state": status.state }))
                .with_follow_ups([follow, format!("how healthy is {}?", agent.region)])
        }
        Err(e) => Reply::new(Outcome::Failed, format!("{} {name} failed: {e}", action.as_str())),
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
        Ok(list) => render::deployments(&list, status, since),
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

/// Journals the new table, then drains the source's agents all at once. The time told
/// is measured on the clock (tokio's, so a paused test clock measures too) from the
/// confirmed request to the reply, the fresh poll included; the counts are what the
/// agents answered.
async fn failover(services: &Services, actor: &Actor, from: &str, to: Option<&str>, utterance: &str) -> Reply {
    let started = tokio::time::Instant::now();
    let applied = match services.router.failover(from, to, actor, utterance).await {
        Ok(a) => a,
        Err(e) => return Reply::new(Outcome::Failed, format!("Nothing was failed over: {e}.")).feasible(false),
    };
    let moved = services.router.set_serving(from, false, actor).await;
    // A poll only shows what changed; with no agent drained it would only wait on
    // agents that do not answer.
    if !moved.ok.is_empty() {
        services.poller.refresh().await;
    }
    let took = started.elapsed();
    let size = services.topology.snapshot().region_size(from);
    let targets: Vec<&str> = applied.after.routes(from).iter().map(|r| r.region.as_str()).collect();
    let drained = match (moved.ok.len(), moved.failed.len()) {
        (0, 0) => format!("none of its {size} agents answers, so none was drained"),
        (n, _) if n == size => format!("its {n} agent{} drained", crate::words::s(n)),
        (n, _) => format!("{n} of its {size} agents drained"),
    };
    let mut message = format!(
        "Failed over {from} to {} in {:.1} s: {from} -> {}; {drained} (routing version {}).",
        targets.join(" and "),
        took.as_secs_f64(),
        applied.after.describe(from),
        applied.version
    );
    if !moved.failed.is_empty() {
        let names: Vec<String> = moved.failed.iter().take(4).map(|(n, e)| format!("{n} ({e})")).collect();
        message.push_str(&format!(" {} could not be drained: {}.", moved.failed.len(), names.join(", ")));
    }
    Reply::new(Outcome::Done, message)
        .with_details(json!({
            "before": applied.before, "after": applied.after, "version": applied.version,
            "drained": moved.ok, "not_drained": moved.failed.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "elapsed_ms": took.as_millis() as u64,
        }))
        .with_follow_ups(["show routing".to_string(), format!("how healthy is {from}?"), format!("fail back {from}")])
}

/// Journals the table, then returns the agents a drain took out to service; timed and
/// counted as [`failover`] is.
async fn failback(services: &Services, actor: &Actor, region: &str, utterance: &str) -> Reply {
    let started = tokio::time::Instant::now();
    let applied = match services.router.failback(region, actor, utterance).await {
        Ok(a) => a,
        Err(e) => return Reply::new(Outcome::Failed, format!("Nothing was failed back: {e}.")).feasible(false),
    };
    let moved = services.router.set_serving(region, true, actor).await;
    if !moved.ok.is_empty() {
        services.poller.refresh().await;
    }
    let took = started.elapsed();
    Reply::new(
        Outcome::Done,
        format!(
            "Failed back {region} in {:.1} s: it serves its own traffic again; {} (routing version {}).",
            took.as_secs_f64(),
            crate::routing::returned_words(&moved),
            applied.version
        ),
    )
    .with_details(json!({
        "before": applied.before, "after": applied.after, "version": applied.version, "uncordoned": moved.ok,
        "not_uncordoned": moved.failed.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "elapsed_ms": took.as_millis() as u64,
    }))
    .with_follow_ups(["show routing".to_string(), format!("how healthy is {region}?")])
}

async fn show_routing(services: &Services) -> Reply {
    let snap = services.router.snapshot();
    let mut table = Table::new(format!("Routing (version {})", snap.version), &["Region", "Served by"]);
    for region in snap.table.regions.keys() {
        table.push(vec![region.clone(), snap.table.describe(region)]);
    }
    let history = services.router.history(10).await.unwrap_or_default();
    // One table for every front-end: the current routes, then the recent changes.
    for c in history.iter().rev() {
        table.push(vec![
            format!("v{} {}", c.version, c.at.format("%H:%M:%S")),
            format!("{} by {} ({}): {}", c.kind, c.actor, c.frontend, c.reason),
        ]);
    }
    let moved: Vec<String> = snap
        .table
        .regions
        .keys()
        .filter(|r| snap.table.routes(r) != [crate::routing::table::Route::new(r.as_str(), 100)])
        .map(|r| format!("{r} -> {}", snap.table.describe(r)))
        .collect();
    let message = if moved.is_empty() {
        format!("Every region serves its own traffic (routing version {}).", snap.version)
    } else {
        format!("{} (routing version {}); every other region serves itself.", moved.join("; "), snap.version)
    };
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(json!({ "regions": snap.table.regions, "version": snap.version, "updated_at": snap.updated_at, "history": history }))
        .with_follow_ups(["how healthy is the fleet?"])
}
