//! "Undo that": what the last thing acted on was, of any kind, and what undoing it
//! means. A deployment is rolled back (or aborted while it runs), a routing change is
//! reverted to the region serving itself, a drained or cordoned agent is put back in
//! service; where undo has no meaning (a restart), the reply says so.

use crate::agent::protocol::AgentAction;
use crate::ops::Operation;
use crate::orchestrate::lifecycle::{self, Control};
use crate::registry::DeploymentRecord;
use crate::reply::{Outcome, Reply};
use crate::routing::table::{Route, RoutingTable};

/// The last thing a turn acted on (or, for a deployment, looked at by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Subject {
    Deployment(String),
    /// The routing of `region` was changed by `kind` (a shift, failover or failback).
    Routing {
        region: String,
        kind: RoutingKind,
    },
    Agent {
        name: String,
        action: AgentAction,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RoutingKind {
    Shift,
    Failover,
    Failback,
}

impl Subject {
    /// What an executed operation acted on; `deployment` is the deployment its reply named.
    pub(super) fn of(op: &Operation, deployment: Option<&str>) -> Option<Subject> {
        let routing = |region: &Option<String>, kind| region.clone().map(|region| Subject::Routing { region, kind });
        let agent = |name: &Option<String>, action| name.clone().map(|name| Subject::Agent { name, action });
        match op {
            Operation::ShiftTraffic { from, .. } => routing(from, RoutingKind::Shift),
            Operation::Failover { from, .. } => routing(from, RoutingKind::Failover),
            Operation::Failback { region } => routing(region, RoutingKind::Failback),
            Operation::Drain { agent: a } => agent(a, AgentAction::Drain),
            Operation::Cordon { agent: a } => agent(a, AgentAction::Cordon),
            Operation::Uncordon { agent: a } => agent(a, AgentAction::Uncordon),
            Operation::Restart { agent: a } => agent(a, AgentAction::Restart),
            _ => deployment.map(|d| Subject::Deployment(d.to_string())),
        }
    }
}

/// What "undo that" comes to.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Undo {
    /// The operation that undoes it, checked and confirmed like any other.
    Do(Operation),
    /// Undo means nothing there (or more than Parley can do): why, and what to say instead.
    Explain { message: String, follow_ups: Vec<String> },
}

impl Undo {
    pub(super) fn reply(message: String, follow_ups: Vec<String>) -> Reply {
        Reply::new(Outcome::Infeasible, message).feasible(false).with_follow_ups(follow_ups)
    }
}

/// A rollback that names no deployment ("undo that", "roll it back"), read against
/// what was acted on last: the operation that undoes it, or a reply saying what undo
/// would mean there.
pub(super) fn resolve(
    subject: &Subject,
    deployment: Option<&DeploymentRecord>,
    routing_before: Option<&RoutingTable>,
) -> Undo {
    let explain = |message: String, follow_ups: Vec<String>| Undo::Explain { message, follow_ups };
    match subject {
        // A rollout still running is undone by stopping it and returning its agents;
        // one that finished, by rolling it back (the lifecycle refuses what does not fit).
        Subject::Deployment(name) => Undo::Do(match deployment.and_then(lifecycle::undo) {
            Some(Control::Abort) => Control::Abort.operation(name),
            _ => Control::Rollback.operation(name),
        }),
        Subject::Agent { name, action: AgentAction::Drain | AgentAction::Cordon } => {
            Undo::Do(Operation::Uncordon { agent: Some(name.clone()) })
        }
        Subject::Agent { name, action: AgentAction::Uncordon } => explain(
            format!(
                "The last change put {name} back in service; undoing it means taking it out again, so say which: \
                 \"cordon {name}\" (keeps serving what it has) or \"drain {name}\" (stops serving)."
            ),
            vec![format!("cordon {name}"), format!("drain {name}")],
        ),
        Subject::Agent { name, action: AgentAction::Restart } => explain(
            format!("The last change restarted {name}; a restart cannot be undone."),
            vec![format!("show agent {name}")],
        ),
        Subject::Routing { region, kind: RoutingKind::Shift | RoutingKind::Failover } => {
            let own = [Route::new(region.as_str(), 100)];
            match routing_before.map(|t| t.routes(region)) {
                // Before the change the region served itself: failing back restores that.
                Some(routes) if routes == own => Undo::Do(Operation::Failback { region: Some(region.clone()) }),
                Some(_) => explain(
                    format!(
                        "Before the last change {region} was served by {}; Parley can only fail it back to \
                         serving itself, which is not what it was.",
                        routing_before.map(|t| t.describe(region)).unwrap_or_default()
                    ),
                    vec!["show routing".to_string(), format!("fail back {region}")],
                ),
                None => explain(
                    format!(
                        "The routing history does not say what {region} was before, so there is nothing to restore."
                    ),
                    vec!["show routing".to_string()],
                ),
            }
        }
        Subject::Routing { region, kind: RoutingKind::Failback } => explain(
            format!(
                "The last change failed {region} back to serving itself; undoing it means moving its traffic away \
                 again: say \"fail over {region}\"."
            ),
            vec!["show routing".to_string()],
        ),
    }
}

impl super::Session {
    /// A rollback that names no deployment ("undo that", "roll it back") undoes the
    /// last thing acted on, whatever it was; any other operation passes unchanged.
    /// `Err`: undo means nothing there, with the reply that says so.
    pub(super) async fn undo(&self, op: Operation) -> Result<Operation, (Operation, Reply)> {
        let (Operation::Rollback { deployment: None }, Some(subject)) = (&op, &self.context.acted) else {
            return Ok(op);
        };
        let record = match subject {
            Subject::Deployment(d) => self.services.registry.deployment_by_name(d).await.ok().flatten(),
            _ => None,
        };
        let before = match subject {
            Subject::Routing { .. } => {
                self.services.router.history(1).await.ok().and_then(|h| h.into_iter().last()).map(|c| c.before)
            }
            _ => None,
        };
        match resolve(subject, record.as_ref(), before.as_ref()) {
            Undo::Do(undone) => Ok(undone),
            Undo::Explain { message, follow_ups } => {
                let reply = Undo::reply(message, follow_ups).with_operation(Some(op.clone()));
                Err((op, reply))
            }
        }
    }
}
