//! The dialog's own replies (help, watching, an infeasible verdict, the restart
//! notice) and the reply for an operation no family carries out. Each family of
//! operations renders its own replies in its own file.

use serde_json::json;

use crate::feasibility::{scope_words, Infeasible};
use crate::ops::{DeploymentStatus, Operation, Scope};
use crate::registry::{DeploymentRecord, TargetState};
use crate::reply::{Outcome, Reply, Table};

const EXAMPLES: [&str; 12] = [
    "how healthy is eu-west?",
    "show topology",
    "which agents in eu-west have a gpu?",
    "show agent edge-7",
    "list extensions in us-east",
    "run a connectivity check on ap-south",
    "roll out auth-filter 2.1 to ap-south",
    "roll out auth-filter 2.1 to eu-west as a canary, 10% then 50%",
    "pause it / resume it / roll it back / abort d-2",
    "list deployments since 7d",
    "deployment report for the last 30 days",
    "drain edge-7 / cordon edge-7 / uncordon edge-7 / restart edge-7",
];

pub(super) fn help() -> Reply {
    let mut table = Table::new("Things to say", &["Example"]);
    for e in EXAMPLES {
        table.push(vec![e.to_string()]);
    }
    Reply::new(
        Outcome::Answered,
        "Ask about the fleet or tell it what to do, in plain words. Risky changes (production, more than a quarter of a region, abort) wait for yes/no; `cancel` drops what is pending.",
    )
    .with_operation(Some(Operation::Help))
    .with_table(table)
    .with_follow_ups(["how healthy is the fleet?", "show topology", "list deployments"])
}

pub(super) fn watching(op: &Operation) -> Reply {
    let (scope, every) = match op {
        Operation::Watch { scope, interval_secs } => {
            (scope.clone().unwrap_or_else(Scope::fleet), interval_secs.unwrap_or(10))
        }
        _ => (Scope::fleet(), 10),
    };
    Reply::new(
        Outcome::Answered,
        format!("Watching {}: I'll announce agents going down or recovering and rollouts finishing (checked every {every} s). Say `stop watching` to end it.", scope_words(&scope)),
    )
    .with_operation(Some(op.clone()))
    .with_follow_ups(["stop watching"])
}

pub(super) fn unwatched(was: bool) -> Reply {
    let msg = if was { "Stopped watching." } else { "Nothing was being watched." };
    Reply::new(Outcome::Answered, msg).with_operation(Some(Operation::Unwatch))
}

pub(super) fn infeasible(op: &Operation, inf: &Infeasible) -> Reply {
    let mut message = inf.reasons.join(" ");
    if !inf.alternatives.is_empty() {
        message.push_str(" Instead you could say: ");
        message.push_str(&inf.alternatives.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(" or "));
        message.push('.');
    }
    Reply::new(Outcome::Infeasible, message)
        .with_operation(Some(op.clone()))
        .feasible(false)
        .with_follow_ups(inf.alternatives.clone())
        .with_details(json!({ "reasons": inf.reasons, "alternatives": inf.alternatives }))
}

/// An operation this build does not carry out, or one that reached execution with a
/// slot still empty.
pub(super) fn not_yet(op: &Operation) -> Reply {
    Reply::new(Outcome::Infeasible, format!("Parley cannot carry out {} yet.", crate::words::spaced(op.name())))
        .feasible(false)
}

/// The lead of the first reply after a restart; `None` when nothing was interrupted.
/// Rollouts a restart left mid-way are paused; rollbacks it left mid-way are being
/// finished, and say why they started and what the agents were found running.
pub(super) fn restart_notice(interrupted: &[DeploymentRecord]) -> Option<super::RestartNotice> {
    if interrupted.is_empty() {
        return None;
    }
    let (rolling, paused): (Vec<&DeploymentRecord>, Vec<&DeploymentRecord>) =
        interrupted.iter().partition(|d| d.status == DeploymentStatus::RollingBack);
    let mut parts = Vec::new();
    let mut follow_ups = Vec::new();
    if !paused.is_empty() {
        let lines: Vec<String> = paused
            .iter()
            .map(|d| {
                let installed = d.targets.iter().filter(|t| t.state == TargetState::Installed).count();
                format!(
                    "{} ({} {} to {}) stopped at step {} of {} with {installed} of {} agents on {}",
                    d.name,
                    d.extension,
                    d.version,
                    d.scope,
                    (d.current_step + 1).min(d.step_count.max(1)),
                    d.step_count.max(1),
                    d.targets.len(),
                    d.version
                )
            })
            .collect();
        let (noun, pronoun) =
            (crate::words::noun(paused.len(), "deployment"), crate::words::either(paused.len(), "it is", "they are"));
        let message = format!(
            "Parley restarted and found {} interrupted {noun}: {}; {pronoun} paused. Say \"resume d-N\" to carry on or \"roll back d-N\" to return the agents.",
            paused.len(),
            lines.join("; "),
        );
        parts.push(match paused.as_slice() {
            [d] => message.replace("d-N", &d.name),
            _ => message,
        });
        follow_ups.extend(paused.iter().flat_map(|d| [format!("resume {}", d.name), format!("roll back {}", d.name)]));
    }
    if !rolling.is_empty() {
        let lines: Vec<String> = rolling
            .iter()
            .map(|d| {
                format!(
                    "{} ({} {} to {}) was rolling back: {}",
                    d.name,
                    d.extension,
                    d.version,
                    d.scope,
                    d.reason.as_deref().unwrap_or("returning its agents")
                )
            })
            .collect();
        let noun = crate::words::noun(rolling.len(), "rollback");
        parts.push(format!("Parley restarted and found {} unfinished {noun}: {}.", rolling.len(), lines.join("; ")));
        follow_ups.extend(rolling.iter().map(|d| format!("show deployment {}", d.name)));
    }
    Some(super::RestartNotice { message: parts.join(" "), follow_ups })
}
