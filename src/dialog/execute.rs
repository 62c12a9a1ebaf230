//! The dispatchers. Each stage of carrying out an operation — its check, why it is
//! confirmed, the confirmation line and plan, its execution — hands the operation
//! to its family's file (`Operation::family`): `inspect`, `deploy`, `agents`,
//! `traffic`, `troubleshoot`. An operation's behaviour lives in its family's file;
//! nothing here matches on operations.

use serde_json::json;

use super::{agents, deploy, inspect, render, traffic, troubleshoot};
use crate::feasibility::{check_scope_names, plain, Busy, Feasible, Infeasible};
use crate::ops::{Actor, Family, Operation};
use crate::reply::{Outcome, Reply, Table};
use crate::services::Services;
use crate::topology::Topology;

/// Can this operation, its slots all filled, be carried out on the fleet as `topo`
/// has it, with `busy` the agents other rollouts hold? Pure: the names in its scope
/// first, then its family's own check; traffic as if no region had failed over.
pub fn check(op: &Operation, topo: &Topology, busy: &Busy) -> Result<Feasible, Infeasible> {
    if let Some(Some(scope)) = op.scope_slot() {
        check_scope_names(scope, topo)?;
    }
    family_check(op, topo, busy)
}

fn family_check(op: &Operation, topo: &Topology, busy: &Busy) -> Result<Feasible, Infeasible> {
    match op.family() {
        Family::Inspect => inspect::check(op, topo),
        Family::Deploy => deploy::check(op, topo, busy),
        Family::Agent => agents::check(op, topo, busy),
        Family::Traffic => traffic::check(op, topo),
        Family::Troubleshoot => troubleshoot::check(op, topo),
        Family::Dialog => Ok(plain(Vec::new())),
    }
}

/// The check the dialog runs, with what only the services know: the freeze, the
/// deployments' records, the router's table, the agents other rollouts hold.
pub(super) async fn check_live(services: &Services, op: &Operation, topo: &Topology) -> Result<Feasible, Infeasible> {
    if let Some(checked) = troubleshoot::check_live(services, op).await {
        return checked;
    }
    if op.family() == Family::Traffic {
        return traffic::check_live(services, op, topo);
    }
    if let Some(Some(scope)) = op.scope_slot() {
        check_scope_names(scope, topo)?;
    }
    match op.family() {
        Family::Deploy => deploy::check_live(services, op, topo).await,
        Family::Agent => agents::check(op, topo, &services.orchestrator.active_agents().await),
        _ => family_check(op, topo, &Busy::new()),
    }
}

/// Why `op` needs a yes/no, if it does. The rules live here and in the families'
/// checks (a failover's plan, a rollout's reach), never in the grammar.
pub(super) async fn risk(services: &Services, op: &Operation, feasible: &Feasible, topo: &Topology) -> Option<String> {
    // The check's own reason says what is at stake (a failover's plan), so it wins
    // over the generic one.
    if let Some(r) = &feasible.risk {
        return Some(r.clone());
    }
    if op.always_risky() {
        return Some(format!("{} is always confirmed", crate::words::spaced(op.name())));
    }
    match op.family() {
        Family::Deploy => deploy::risk(services, op, topo).await,
        _ => None,
    }
}

/// One line saying what a mutating operation will do, for the confirmation question.
pub(super) async fn summary(services: &Services, op: &Operation, f: &Feasible) -> String {
    match op.family() {
        Family::Deploy => deploy::summary(services, op, f).await,
        Family::Agent => agents::summary(op),
        Family::Traffic => traffic::summary(op, f),
        Family::Troubleshoot => troubleshoot::summary(op),
        Family::Inspect | Family::Dialog => None,
    }
    .unwrap_or_else(|| crate::words::spaced(op.name()))
}

/// What the confirmation question shows: the plan for a deploy, the targets otherwise.
pub(super) fn preview(
    services: &Services,
    op: &Operation,
    feasible: &Feasible,
    topo: &Topology,
) -> Option<serde_json::Value> {
    let own = match op.family() {
        Family::Deploy => deploy::preview(services, op, feasible, topo),
        _ => None,
    };
    own.or_else(|| Some(json!({ "targets": feasible.targets })))
}

/// The confirmation's table: a deploy's plan, what the operator says yes to.
pub(super) fn plan_table(services: &Services, op: &Operation, feasible: &Feasible, topo: &Topology) -> Option<Table> {
    match op.family() {
        Family::Deploy => deploy::confirmation_table(services, op, feasible, topo),
        _ => None,
    }
}

/// Executes `op`, already checked (and confirmed where needed).
pub(super) async fn run(
    services: &Services,
    actor: &Actor,
    op: &Operation,
    feasible: &Feasible,
    utterance: &str,
) -> Reply {
    let topo = services.topology.snapshot();
    let reply = match op.family() {
        Family::Inspect => inspect::run(services, op, &topo).await,
        Family::Deploy => deploy::run(services, actor, op, feasible, utterance, &topo).await,
        Family::Agent => agents::run(services, actor, op, &topo).await,
        Family::Traffic => traffic::run(services, actor, op, utterance).await,
        Family::Troubleshoot => troubleshoot::run(services, actor, op, utterance).await,
        Family::Dialog => render::not_yet(op),
    };
    let mut reply = reply.with_operation(Some(op.clone()));
    if reply.feasible.is_none() && reply.outcome != Outcome::Infeasible {
        reply.feasible = Some(true);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Scope;
    use crate::topology::test_support::demo_topology;

    #[test]
    fn unknown_versions_and_names_get_alternatives() {
        let t = demo_topology();
        let err =
            check(&Operation::deploy("auth-filter", "3.0", Scope::region("eu-west")), &t, &Busy::new()).unwrap_err();
        assert_eq!(err.reasons, ["The catalog has no version 3.0 of auth-filter; it has 1.0.0, 2.0.3, 2.1.0."]);
        assert_eq!(err.alternatives, ["roll out auth-filter 2.1.0 to eu-west"]);
        let err = check(&Operation::Drain { agent: Some("edge-70".into()) }, &t, &Busy::new()).unwrap_err();
        assert!(
            err.reasons[0].starts_with("There is no agent `edge-70` in the fleet. Did you mean edge-7"),
            "{:?}",
            err.reasons
        );
    }
}
