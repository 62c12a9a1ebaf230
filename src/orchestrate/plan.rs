//! Planning: which agents each step of a rollout reaches, what each step is called and
//! what it waits for afterwards. Pure, so a plan can be shown to the operator before
//! anything happens and tested without a fleet.
//!
//! - canary: the given percentages, or 1, 5, 10, 25, 50, 100;
//! - progressive: named phases (canary 10%, half 50%, everyone 100% by default, or
//!   the given percentages), each waiting for "promote" before the next;
//! - blue-green: green (half the targets) is installed and verified, then a switch
//!   step that makes green live and keeps blue on the old version as a standby, then
//!   blue is retired (upgraded) on "promote" or after a timer;
//! - rolling: batches of N agents (or a share of the targets).

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{OrchestrateError, RolloutSettings, Target};
use crate::ops::{Strategy, StrategyKind};
use crate::topology::HealthThresholds;

const CANARY_STEPS: [u8; 6] = [1, 5, 10, 25, 50, 100];
const PROGRESSIVE_STEPS: [u8; 3] = [10, 50, 100];
const PROGRESSIVE_NAMES: [&str; 3] = ["canary", "half", "everyone"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
}

/// One step: the agents it adds, and the share of all targets reached once it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    pub agents: Vec<String>,
    pub cumulative_percent: u8,
    /// The phase's name ("canary", "green"); `None` for plain numbered steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Blue-green: the step that makes green live (installs nothing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub switch: bool,
    /// What the rollout waits for once this step has passed its gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
}

/// A hold after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    /// Until the operator says "promote".
    Promote,
    /// Until "promote", or by itself after the blue-retirement timer.
    PromoteOrTimer,
}

impl Plan {
    /// One line per step, for the operator to read before confirming.
    pub fn describe(&self, settings: &RolloutSettings) -> Vec<String> {
        let gate = describe_gate(&settings.gate);
        let bake = describe_duration(settings.bake);
        self.steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let name = s.name.as_deref().map(|n| format!("{n}: ")).unwrap_or_default();
                let mut line = if s.switch {
                    format!(
                        "step {}: {name}mark green live and keep blue on the old version as a standby \
                         (no agent is changed; traffic routing is not managed by Parley)",
                        i + 1
                    )
                } else {
                    let noun = if s.agents.len() == 1 { "agent" } else { "agents" };
                    format!(
                        "step {}: {name}{} {noun} ({}%): {}; bake {bake}; gate: {gate}, against the agents not yet upgraded",
                        i + 1,
                        s.agents.len(),
                        s.cumulative_percent,
                        s.agents.join(", ")
                    )
                };
                match s.wait {
                    Some(Wait::Promote) => line.push_str("; then wait for promote"),
                    Some(Wait::PromoteOrTimer) => {
                        let timer = settings
                            .blue_retire_after
                            .map(|d| format!(" or {}", describe_duration(d)))
                            .unwrap_or_default();
                        line.push_str(&format!("; then wait for promote{timer} to retire blue"));
                    }
                    None => {}
                }
                line
            })
            .collect()
    }

    pub fn agent_count(&self) -> usize {
        self.steps.iter().map(|s| s.agents.len()).sum()
    }
}

/// Splits `targets` into steps for `strategy`, without extra approvals.
pub fn plan(strategy: &Strategy, targets: &[Target], settings: &RolloutSettings) -> Result<Plan, OrchestrateError> {
    plan_with(strategy, targets, settings, false)
}

/// Splits `targets` into steps for `strategy`; `require_approval` makes every step
/// but the last wait for "promote".
pub fn plan_with(
    strategy: &Strategy,
    targets: &[Target],
    settings: &RolloutSettings,
    require_approval: bool,
) -> Result<Plan, OrchestrateError> {
    let mut seen = HashSet::new();
    let agents: Vec<String> =
        targets.iter().filter(|t| seen.insert(t.agent.as_str())).map(|t| t.agent.clone()).collect();
    if agents.is_empty() {
        return Err(OrchestrateError::InvalidPlan("the deployment has no target agents".into()));
    }
    let n = agents.len();
    let counts: Vec<usize> = match strategy.kind {
        StrategyKind::BlueGreen => {
            if n < 2 {
                return Err(OrchestrateError::InvalidPlan(
                    "blue-green needs at least 2 agents, one green and one blue; use a rolling deployment".into(),
                ));
            }
            let green = n.div_ceil(2);
            let pct = |c: usize| u8::try_from((c * 100 + n / 2) / n).unwrap_or(100);
            let step = |agents: &[String], c: usize, name: &str, switch: bool, wait: Option<Wait>| PlanStep {
                agents: agents.to_vec(),
                cumulative_percent: pct(c),
                name: Some(name.to_string()),
                switch,
                wait,
            };
            return Ok(Plan {
                steps: vec![
                    step(&agents[..green], green, "green", false, Some(Wait::Promote)),
                    step(&[], green, "switch", true, Some(Wait::PromoteOrTimer)),
                    step(&agents[green..], n, "retire blue", false, None),
                ],
            });
        }
        StrategyKind::Rolling => {
            let batch = match strategy.batch_size {
                Some(0) => return Err(OrchestrateError::InvalidPlan("a rolling batch size must be at least 1".into())),
                Some(b) => usize::try_from(b).unwrap_or(usize::MAX),
                None => (n * usize::from(settings.default_batch_percent.clamp(1, 100))).div_ceil(100),
            }
            .max(1);
            (1..=n.div_ceil(batch)).map(|i| (i * batch).min(n)).collect()
        }
        StrategyKind::Canary | StrategyKind::Progressive => {
            let defaults: &[u8] =
                if strategy.kind == StrategyKind::Canary { &CANARY_STEPS } else { &PROGRESSIVE_STEPS };
            let mut percents: Vec<u8> = strategy.steps.clone().unwrap_or_else(|| defaults.to_vec());
            if let Some(bad) = percents.iter().find(|p| **p == 0 || **p > 100) {
                return Err(OrchestrateError::InvalidPlan(format!(
                    "step {bad}% is not a share of the targets (1 to 100)"
                )));
            }
            percents.sort_unstable();
            if percents.last() != Some(&100) {
                percents.push(100);
            }
            let mut counts: Vec<usize> = Vec::new();
            for p in percents {
                let c = (n * usize::from(p)).div_ceil(100).clamp(1, n);
                // A step that reaches no new agent would only add a bake and a gate.
                if counts.last().is_none_or(|last| c > *last) {
                    counts.push(c);
                }
            }
            counts
        }
    };
    let progressive = strategy.kind == StrategyKind::Progressive;
    let named = progressive && strategy.steps.is_none() && counts.len() == PROGRESSIVE_NAMES.len();
    let approve = require_approval || (progressive && settings.progressive_approval);
    let last = counts.len().saturating_sub(1);
    let mut steps = Vec::with_capacity(counts.len());
    let mut from = 0;
    for (i, to) in counts.into_iter().enumerate() {
        let name = if named {
            PROGRESSIVE_NAMES.get(i).map(|s| s.to_string())
        } else if progressive {
            Some(format!("phase {}", i + 1))
        } else {
            None
        };
        steps.push(PlanStep {
            agents: agents.get(from..to).map(<[String]>::to_vec).unwrap_or_default(),
            cumulative_percent: u8::try_from((to * 100 + n / 2) / n).unwrap_or(100),
            name,
            switch: false,
            wait: (approve && i < last).then_some(Wait::Promote),
        });
        from = to;
    }
    Ok(Plan { steps })
}

pub(crate) fn describe_gate(g: &HealthThresholds) -> String {
    format!("error rate < {}%, p95 < {} ms, cpu < {}%, memory < {}%", g.error_rate_pct, g.p95_ms, g.cpu_pct, g.mem_pct)
}

pub(crate) fn describe_duration(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: usize) -> Vec<Target> {
        (1..=n)
            .map(|i| Target { agent: format!("edge-{i}"), endpoint: format!("http://h{i}"), previous: None })
            .collect()
    }

    fn strategy(kind: StrategyKind, steps: Option<Vec<u8>>, batch_size: Option<u32>) -> Strategy {
        Strategy { kind, steps, batch_size }
    }

    fn sizes(p: &Plan) -> Vec<(usize, u8)> {
        p.steps.iter().map(|s| (s.agents.len(), s.cumulative_percent)).collect()
    }

    #[test]
    fn rolling_uses_a_quarter_by_default_and_the_batch_size_when_given() {
        let s = RolloutSettings::default();
        let p = plan(&strategy(StrategyKind::Rolling, None, None), &targets(12), &s).unwrap();
        assert_eq!(sizes(&p), [(3, 25), (3, 50), (3, 75), (3, 100)]);
        let p = plan(&strategy(StrategyKind::Rolling, None, Some(5)), &targets(12), &s).unwrap();
        assert_eq!(sizes(&p), [(5, 42), (5, 83), (2, 100)]);
        let p = plan(&strategy(StrategyKind::Rolling, None, None), &targets(2), &s).unwrap();
        assert_eq!(sizes(&p), [(1, 50), (1, 100)]);
        assert!(plan(&strategy(StrategyKind::Rolling, None, Some(0)), &targets(2), &s).is_err());
    }

    #[test]
    fn canary_steps_collapse_and_end_at_all_agents() {
        let s = RolloutSettings::default();
        let p = plan(&strategy(StrategyKind::Canary, None, None), &targets(12), &s).unwrap();
        assert_eq!(sizes(&p), [(1, 8), (1, 17), (1, 25), (3, 50), (6, 100)]);
        let p = plan(&strategy(StrategyKind::Canary, Some(vec![50, 10, 10]), None), &targets(10), &s).unwrap();
        assert_eq!(sizes(&p), [(1, 10), (4, 50), (5, 100)]);
        let p = plan(&strategy(StrategyKind::Progressive, None, None), &targets(4), &s).unwrap();
        assert_eq!(sizes(&p), [(1, 25), (1, 50), (2, 100)]);
        let names: Vec<_> = p.steps.iter().map(|s| s.name.clone().unwrap()).collect();
        assert_eq!(names, ["canary", "half", "everyone"]);
        let waits: Vec<_> = p.steps.iter().map(|s| s.wait).collect();
        assert_eq!(waits, [Some(Wait::Promote), Some(Wait::Promote), None]);
        let p = plan(&strategy(StrategyKind::Canary, None, None), &targets(1), &s).unwrap();
        assert_eq!(sizes(&p), [(1, 100)]);
        assert_eq!(p.agent_count(), 1);
        assert!(plan(&strategy(StrategyKind::Canary, Some(vec![0, 50]), None), &targets(4), &s).is_err());
    }

    #[test]
    fn duplicate_targets_count_once_and_no_targets_is_an_error() {
        let s = RolloutSettings::default();
        let mut t = targets(3);
        t.push(t[0].clone());
        let p = plan(&strategy(StrategyKind::Rolling, None, Some(10)), &t, &s).unwrap();
        assert_eq!(p.agent_count(), 3);
        assert!(matches!(
            plan(&strategy(StrategyKind::Rolling, None, None), &[], &s),
            Err(OrchestrateError::InvalidPlan(_))
        ));
    }

    #[test]
    fn blue_green_is_green_then_switch_then_retire_blue() {
        let s = RolloutSettings::default();
        let p = plan(&strategy(StrategyKind::BlueGreen, None, None), &targets(5), &s).unwrap();
        assert_eq!(sizes(&p), [(3, 60), (0, 60), (2, 100)]);
        assert!(p.steps[1].switch);
        assert_eq!(p.steps[0].wait, Some(Wait::Promote));
        assert_eq!(p.steps[1].wait, Some(Wait::PromoteOrTimer));
        let lines = p.describe(&s);
        assert!(lines[0].starts_with("step 1: green: 3 agents (60%)") && lines[0].ends_with("then wait for promote"));
        assert!(
            lines[1].contains("mark green live") && lines[1].ends_with("wait for promote or 3600 s to retire blue")
        );
        assert!(plan(&strategy(StrategyKind::BlueGreen, None, None), &targets(1), &s).is_err());
    }

    #[test]
    fn require_approval_holds_every_step_but_the_last() {
        let s = RolloutSettings::default();
        let p = plan_with(&strategy(StrategyKind::Canary, Some(vec![50]), None), &targets(4), &s, true).unwrap();
        assert_eq!(p.steps.iter().map(|s| s.wait).collect::<Vec<_>>(), [Some(Wait::Promote), None]);
    }

    #[test]
    fn describe_reads_like_the_plan() {
        let t: Vec<Target> =
            (19..=30).map(|i| Target { agent: format!("edge-{i}"), endpoint: String::new(), previous: None }).collect();
        let s = RolloutSettings::default();
        let lines = plan(&strategy(StrategyKind::Rolling, None, None), &t, &s).unwrap().describe(&s);
        assert_eq!(
            lines[0],
            "step 1: 3 agents (25%): edge-19, edge-20, edge-21; bake 2 s; gate: error rate < 1%, p95 < 500 ms, cpu < 80%, memory < 85%, against the agents not yet upgraded"
        );
        assert_eq!(lines.len(), 4);
    }
}
