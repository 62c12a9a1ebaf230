//! Rollout events as short sentences, for the REPL, `watch` and voice.

use super::RolloutEvent;

/// One line for an event worth telling an operator about; `None` for the chatter
/// (single installs) that a progress bar shows better.
pub fn announce(event: &RolloutEvent) -> Option<String> {
    Some(match event {
        RolloutEvent::Started { id, extension, version, agents, steps } => {
            format!("{id}: rolling out {extension} {version} to {agents} agents in {steps} steps")
        }
        RolloutEvent::StepStarted { id, step, of, agents } => {
            format!("{id}: step {step} of {of} on {} agent{}", agents.len(), crate::words::s(agents.len()))
        }
        RolloutEvent::AgentInstalled { .. } => return None,
        RolloutEvent::AgentFailed { id, agent, error } => format!("{id}: {agent} failed: {error}"),
        RolloutEvent::GateEvaluated { id, step, passed: true, .. } => {
            format!("{id}: step {step} passed its health gate")
        }
        RolloutEvent::GateEvaluated { id, step, passed: false, outcome, breaches, unreachable } => {
            let mut parts: Vec<String> = breaches
                .iter()
                .take(3)
                .map(|b| format!("{} {} {:.1} > {}", b.agent, b.metric, b.value, b.threshold))
                .collect();
            if !unreachable.is_empty() {
                parts.push(format!("{} unreachable", unreachable.join(", ")));
            }
            let verdict = match outcome {
                super::GateOutcome::Inconclusive => "was INCONCLUSIVE at",
                super::GateOutcome::Error => "could not read",
                _ => "FAILED",
            };
            format!("{id}: step {step} {verdict} its health gate: {}", parts.join("; "))
        }
        RolloutEvent::Paused { id, reason } => format!("{id}: paused ({reason})"),
        RolloutEvent::Resumed { id } => format!("{id}: resumed"),
        RolloutEvent::Finished { id, status, reason } => format!("{id}: {status}. {reason}"),
        RolloutEvent::RollbackProgress { id, agent, version, ok: false, detail } => {
            format!("{id}: could not return {agent} to {}: {detail}", version.as_deref().unwrap_or("no version"))
        }
        RolloutEvent::RollbackProgress { .. } => return None,
    })
}

/// The deployment an event belongs to.
pub fn event_deployment(event: &RolloutEvent) -> &str {
    match event {
        RolloutEvent::Started { id, .. }
        | RolloutEvent::StepStarted { id, .. }
        | RolloutEvent::AgentInstalled { id, .. }
        | RolloutEvent::AgentFailed { id, .. }
        | RolloutEvent::GateEvaluated { id, .. }
        | RolloutEvent::Paused { id, .. }
        | RolloutEvent::Resumed { id }
        | RolloutEvent::Finished { id, .. }
        | RolloutEvent::RollbackProgress { id, .. } => id,
    }
}
