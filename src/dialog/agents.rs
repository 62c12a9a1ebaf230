//! The agent family: `drain`, `cordon`, `uncordon` and `restart` of one agent:
//! their check, confirmation line, execution (through the orchestrator, which
//! journals and audits it) and reply.

use serde_json::json;

use crate::agent::protocol::AgentAction;
use crate::feasibility::{known_agent, plain, Busy, Feasible, Infeasible};
use crate::ops::{Actor, Operation};
use crate::reply::{Outcome, Reply};
use crate::services::Services;
use crate::topology::Topology;

/// The agent must exist and answer, be in a state the action changes, and not be
/// in the middle of a rollout for the actions that take it out of service.
pub(super) fn check(op: &Operation, topo: &Topology, busy: &Busy) -> Result<Feasible, Infeasible> {
    match action_of(op) {
        Some((name, _)) => check_action(op, name, topo, busy),
        None => Ok(plain(Vec::new())),
    }
}

/// The agent an operation of this family names, and what it asks of it.
fn action_of(op: &Operation) -> Option<(&str, AgentAction)> {
    match op {
        Operation::Drain { agent: Some(a) } => Some((a, AgentAction::Drain)),
        Operation::Cordon { agent: Some(a) } => Some((a, AgentAction::Cordon)),
        Operation::Uncordon { agent: Some(a) } => Some((a, AgentAction::Uncordon)),
        Operation::Restart { agent: Some(a) } => Some((a, AgentAction::Restart)),
        _ => None,
    }
}

/// The confirmation line: "Drain edge-7".
pub(super) fn summary(op: &Operation) -> Option<String> {
    let (name, action) = action_of(op)?;
    let verb = match action {
        AgentAction::Drain => "Drain",
        AgentAction::Cordon => "Cordon",
        AgentAction::Uncordon => "Uncordon",
        AgentAction::Restart => "Restart",
    };
    Some(format!("{verb} {name}"))
}

/// Carries out one of this family's operations.
pub(super) async fn run(services: &Services, actor: &Actor, op: &Operation, topo: &Topology) -> Reply {
    match action_of(op) {
        Some((name, action)) => agent_action(services, actor, topo, name, action).await,
        None => super::render::not_yet(op),
    }
}

fn check_action(op: &Operation, name: &str, topo: &Topology, busy: &Busy) -> Result<Feasible, Infeasible> {
    use crate::agent::protocol::ServingState as S;
    let agent = known_agent(name, topo)?;
    if !agent.liveness.is_reachable() {
        return Err(Infeasible::new(format!(
            "{name} is {} (since {}); Parley cannot reach it to {}.",
            agent.liveness.as_str(),
            agent.liveness_since.format("%H:%M:%S"),
            op.name()
        ))
        .or(format!("show agent {name}"))
        .or(format!("how healthy is {}?", agent.region)));
    }
    if let Some(d) = busy.get(name) {
        if matches!(op, Operation::Drain { .. } | Operation::Restart { .. }) {
            return Err(Infeasible::new(format!("{d} is rolling out to {name}; wait for it or pause it first."))
                .or(format!("show deployment {d}"))
                .or(format!("pause {d}")));
        }
    }
    let state = agent.state;
    let already = match op {
        Operation::Cordon { .. } if state == S::Cordoned => Some(("already cordoned", format!("uncordon {name}"))),
        Operation::Uncordon { .. } if state == S::Active => Some(("already active", format!("cordon {name}"))),
        Operation::Drain { .. } if matches!(state, S::Draining | S::Drained) => {
            Some(("already drained or draining", format!("uncordon {name}")))
        }
        _ => None,
    };
    if let Some((what, alt)) = already {
        return Err(Infeasible::new(format!("{name} is {what}.")).or(alt));
    }
    let risk = if agent.env() == Some("production") {
        Some(format!("{name} serves production ({})", agent.region))
    } else {
        None
    };
    Ok(Feasible { targets: vec![agent.name.clone()], already: Vec::new(), risk })
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
