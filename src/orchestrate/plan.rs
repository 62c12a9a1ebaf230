//! Planning: which agents each step of a rollout reaches, what each step is called and
//! what it waits for afterwards. Pure, so a plan can be shown to the operator before
//! anything happens and tested without a fleet.
//!
//! - canary: the given percentages, or 1, 5, 10, 25, 50, 100;
//! - progressive: named phases (canary 10%, half 50%, everyone 100% by default, or
//!   the given percentages), or one phase per group of agents (per zone, region or
//!   label value, or per selector in the order said), each waiting for "promote"
//!   before the next unless said otherwise;
//! - blue-green: green (half the targets) is installed and verified, then a switch
//!   step that makes green live and keeps blue on the old version as a standby, then
//!   blue is retired (upgraded) on "promote" or after a timer;
//! - rolling: batches of N agents (or a share of the targets), with at most
//!   max-unavailable of them out of service at once.

use std::collections::HashSet;

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
    /// Rolling: at most this many targets unavailable at once (being installed, or
    /// cordoned, draining or down); `None`: a whole batch at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<usize>,
}

/// One step: the agents it adds, and the share of all targets reached once it is done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    pub agents: Vec<String>,
    pub cumulative_percent: u8,
    /// The phase's name ("canary", "green", "eu-west-a"); `None` for plain numbered steps.
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
        // Percentages are of agents and cumulative: "(3 of 12 agents, 25%)" says both.
        let total = self.agent_count();
        let mut reached = 0;
        self.steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                reached += s.agents.len();
                let name = s.name.as_deref().map(|n| format!("{n}: ")).unwrap_or_default();
                let mut line = if s.switch {
                    format!(
                        "step {}: {name}mark green live and keep blue on the old version as a standby \
                         (no agent is changed; traffic routing is not managed by Parley)",
                        i + 1
                    )
                } else {
                    let noun = crate::words::noun(s.agents.len(), "agent");
                    let limit = match self.max_unavailable {
                        Some(m) => format!(
                            "; at most {m} agent{} unavailable at once",
                            crate::words::s(m)
                        ),
                        None => String::new(),
                    };
                    format!(
                        "step {}: {name}{} {noun} ({reached} of {total} agents, {}%): {}{limit}; bake {bake}; gate: {gate}, against the agents not yet upgraded",
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

/// Splits `targets` into steps for `strategy`, waiting for approval as the strategy does.
pub fn plan(strategy: &Strategy, targets: &[Target], settings: &RolloutSettings) -> Result<Plan, OrchestrateError> {
    plan_with(strategy, targets, settings, None)
}

/// Splits `targets` into steps for `strategy`. `require_approval`: `Some(true)` makes
/// every step but the last wait for "promote", `Some(false)` none (not even
/// progressive phases), `None` leaves it to the strategy and the settings.
pub fn plan_with(
    strategy: &Strategy,
    targets: &[Target],
    settings: &RolloutSettings,
    require_approval: Option<bool>,
) -> Result<Plan, OrchestrateError> {
    let mut seen = HashSet::new();
    let unique: Vec<&Target> = targets.iter().filter(|t| seen.insert(t.agent.as_str())).collect();
    let agents: Vec<String> = unique.iter().map(|t| t.agent.clone()).collect();
    if agents.is_empty() {
        return Err(OrchestrateError::InvalidPlan("the deployment has no target agents".into()));
    }
    let n = agents.len();
    let grouped = strategy.group_by.is_some() || strategy.phases.is_some();
    if grouped && strategy.kind != StrategyKind::Progressive {
        let how = match (&strategy.group_by, &strategy.phases) {
            (Some(key), _) => format!("by {key}"),
            _ => "in phases".to_string(),
        };
        return Err(OrchestrateError::InvalidPlan(format!(
            "phases {how} are for a progressive rollout, not {}; say \"progressive rollout of ... {how}\"",
            kind_words(strategy.kind)
        )));
    }
    if strategy.max_unavailable.is_some() && strategy.kind != StrategyKind::Rolling {
        return Err(OrchestrateError::InvalidPlan(format!(
            "max unavailable is for a rolling deployment, not {}",
            kind_words(strategy.kind)
        )));
    }
    let pct = |c: usize| u8::try_from((c * 100 + n / 2) / n).unwrap_or(100);
    let progressive = strategy.kind == StrategyKind::Progressive;
    let approve = require_approval.unwrap_or(progressive && settings.progressive_approval);
    // (cumulative count, name) per step.
    let counts: Vec<(usize, Option<String>)> = match strategy.kind {
        StrategyKind::BlueGreen => {
            if n < 2 {
                return Err(OrchestrateError::InvalidPlan(
                    "blue-green needs at least 2 agents, one green and one blue; use a rolling deployment".into(),
                ));
            }
            let green = n.div_ceil(2);
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
                max_unavailable: None,
            });
        }
        StrategyKind::Progressive if grouped => {
            let groups = groups(strategy, &unique)?;
            let last = groups.len().saturating_sub(1);
            let mut reached = 0;
            let steps = groups
                .into_iter()
                .enumerate()
                .map(|(i, (name, agents))| {
                    reached += agents.len();
                    PlanStep {
                        agents,
                        cumulative_percent: pct(reached),
                        name: Some(name),
                        switch: false,
                        wait: (approve && i < last).then_some(Wait::Promote),
                    }
                })
                .collect();
            return Ok(Plan { steps, max_unavailable: None });
        }
        StrategyKind::Rolling => {
            let share = |p: u8| (n * usize::from(p)).div_ceil(100);
            let batch = match (strategy.batch_size, strategy.batch_percent) {
                (Some(0), _) => {
                    return Err(OrchestrateError::InvalidPlan("a rolling batch size must be at least 1".into()))
                }
                (Some(b), _) => usize::try_from(b).unwrap_or(usize::MAX),
                (None, Some(p)) if (1..=100).contains(&p) => share(p),
                (None, Some(p)) => {
                    return Err(OrchestrateError::InvalidPlan(format!(
                        "batches of {p}% are not a share of the targets (1 to 100)"
                    )))
                }
                (None, None) => share(settings.default_batch_percent.clamp(1, 100)),
            }
            .max(1);
            (1..=n.div_ceil(batch)).map(|i| ((i * batch).min(n), None)).collect()
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
            let named = progressive && strategy.steps.is_none() && counts.len() == PROGRESSIVE_NAMES.len();
            counts
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    let name = if named {
                        PROGRESSIVE_NAMES.get(i).map(|s| s.to_string())
                    } else if progressive {
                        Some(format!("phase {}", i + 1))
                    } else {
                        None
                    };
                    (c, name)
                })
                .collect()
        }
    };
    let last = counts.len().saturating_sub(1);
    let mut steps = Vec::with_capacity(counts.len());
    let mut from = 0;
    for (i, (to, name)) in counts.into_iter().enumerate() {
        steps.push(PlanStep {
            agents: agents.get(from..to).map(<[String]>::to_vec).unwrap_or_default(),
            cumulative_percent: pct(to),
            name,
            switch: false,
            wait: (approve && i < last).then_some(Wait::Promote),
        });
        from = to;
    }
    let max_unavailable = strategy.max_unavailable.map(|m| m.agents(n));
    Ok(Plan { steps, max_unavailable })
}

fn kind_words(kind: StrategyKind) -> &'static str {
    match kind {
        StrategyKind::Canary => "a canary",
        StrategyKind::BlueGreen => "a blue-green deployment",
        StrategyKind::Progressive => "a progressive rollout",
        StrategyKind::Rolling => "a rolling deployment",
    }
}

/// The phases of a progressive rollout by group, in order, each with its agents (in
/// target order). Every target must fall in a phase and every phase must have an
/// agent: a rollout that silently skipped agents, or a phase that silently did
/// nothing, would not be what the operator asked for.
fn groups(strategy: &Strategy, targets: &[&Target]) -> Result<Vec<(String, Vec<String>)>, OrchestrateError> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut stray: Vec<&str> = Vec::new();
    if let Some(phases) = &strategy.phases {
        if phases.is_empty() {
            return Err(OrchestrateError::InvalidPlan("a progressive rollout in phases needs at least one".into()));
        }
        out = phases.iter().map(|p| (p.value().unwrap_or("fleet").to_string(), Vec::new())).collect();
        for t in targets {
            match phases.iter().position(|p| t.placement.matches(&t.agent, p)) {
                Some(i) => out[i].1.push(t.agent.clone()),
                None => stray.push(&t.agent),
            }
        }
        if !stray.is_empty() {
            let said: Vec<String> = phases.iter().map(|p| p.to_string()).collect();
            return Err(OrchestrateError::InvalidPlan(format!(
                "{} in none of the phases ({}); add a phase for {} or narrow the scope",
                some_agents(&stray),
                said.join(", "),
                crate::words::either(stray.len(), "it", "them")
            )));
        }
        if let Some((name, _)) = out.iter().find(|(_, agents)| agents.is_empty()) {
            return Err(OrchestrateError::InvalidPlan(format!(
                "phase {name} has no agent in the deployment's scope; name phases within it"
            )));
        }
        return Ok(out);
    }
    let key = strategy.group_by.as_deref().unwrap_or("zone");
    for t in targets {
        match t.placement.group(key) {
            Some(value) => match out.iter_mut().find(|(name, _)| name == value) {
                Some((_, agents)) => agents.push(t.agent.clone()),
                None => out.push((value.to_string(), vec![t.agent.clone()])),
            },
            None => stray.push(&t.agent),
        }
    }
    if !stray.is_empty() {
        return Err(OrchestrateError::InvalidPlan(format!(
            "{} no {key}, so {} cannot be put in a phase by {key}; name the phases instead (\"in phases ... then ...\")",
            some_agents(&stray).replacen(" is", " has", 1).replacen(" are", " have", 1),
            crate::words::either(stray.len(), "it", "they")
        )));
    }
    // Lower environments go first; other groups keep the fleet's order.
    if key == "env" {
        out.sort_by_key(|(name, _)| env_rank(name));
    }
    Ok(out)
}

/// Where an environment goes in a rollout by environment: production last.
fn env_rank(env: &str) -> u8 {
    match env {
        "dev" | "development" => 0,
        "test" | "testing" | "qa" => 1,
        "staging" | "stage" | "preprod" | "uat" => 2,
        "production" | "prod" => 9,
        _ => 3,
    }
}

/// "edge-1 is" / "edge-1, edge-2 and 3 more are".
fn some_agents(agents: &[&str]) -> String {
    format!("{} {}", crate::words::and_more(agents, 5), crate::words::is_are(agents.len()))
}

pub(crate) fn describe_gate(g: &HealthThresholds) -> String {
    format!("error rate < {}%, p95 < {} ms, cpu < {}%, memory < {}%", g.error_rate_pct, g.p95_ms, g.cpu_pct, g.mem_pct)
}

pub(crate) use crate::words::duration as describe_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrate::Placement;

    fn targets(n: usize) -> Vec<Target> {
        (1..=n)
            .map(|i| Target {
                agent: format!("edge-{i}"),
                endpoint: format!("http://h{i}"),
                previous: None,
                placement: Placement::default(),
            })
            .collect()
    }

    fn strategy(kind: StrategyKind, steps: Option<Vec<u8>>, batch_size: Option<u32>) -> Strategy {
        Strategy { steps, batch_size, ..Strategy::of(kind) }
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
        let share = |p| Strategy { batch_percent: Some(p), ..Strategy::of(StrategyKind::Rolling) };
        let p = plan(&share(40), &targets(12), &s).unwrap();
        assert_eq!(sizes(&p), [(5, 42), (5, 83), (2, 100)], "40% of 12, rounded up");
        assert!(plan(&share(0), &targets(12), &s).is_err());
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
        assert!(
            lines[0].starts_with("step 1: green: 3 agents (3 of 5 agents, 60%)")
                && lines[0].ends_with("then wait for promote")
        );
        assert!(
            lines[1].contains("mark green live") && lines[1].ends_with("wait for promote or 3600 s to retire blue")
        );
        assert!(plan(&strategy(StrategyKind::BlueGreen, None, None), &targets(1), &s).is_err());
    }

    #[test]
    fn require_approval_holds_every_step_but_the_last() {
        let s = RolloutSettings::default();
        let p = plan_with(&strategy(StrategyKind::Canary, Some(vec![50]), None), &targets(4), &s, Some(true)).unwrap();
        assert_eq!(p.steps.iter().map(|s| s.wait).collect::<Vec<_>>(), [Some(Wait::Promote), None]);
    }

    #[test]
    fn describe_reads_like_the_plan() {
        let t: Vec<Target> =
            (19..=30).map(|i| Target { agent: format!("edge-{i}"), ..targets(1)[0].clone() }).collect();
        let s = RolloutSettings::default();
        let lines = plan(&strategy(StrategyKind::Rolling, None, None), &t, &s).unwrap().describe(&s);
        assert_eq!(
            lines[0],
            "step 1: 3 agents (3 of 12 agents, 25%): edge-19, edge-20, edge-21; bake 2 s; gate: error rate < 1%, p95 < 500 ms, cpu < 80%, memory < 85%, against the agents not yet upgraded"
        );
        assert_eq!(lines.len(), 4);
    }

    /// ap-south's demo agents with their zones, tiers and envs: edge-19..24, core-13..16,
    /// gpu-7..8, the first half of each tier in zone a; plus two dev agents.
    fn placed() -> Vec<Target> {
        let mut out = Vec::new();
        let mut add = |agent: &str, zone: &str, tier: &str, env: &str| {
            let labels = [("env", env), ("tier", tier)].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            out.push(Target {
                agent: agent.to_string(),
                endpoint: String::new(),
                previous: None,
                placement: Placement { region: "ap-south".into(), zone: zone.into(), labels, capabilities: Vec::new() },
            });
        };
        for (i, a) in ["edge-19", "edge-20", "edge-21", "edge-22", "edge-23", "edge-24"].iter().enumerate() {
            add(a, if i < 3 { "ap-south-a" } else { "ap-south-b" }, "edge", "staging");
        }
        for (i, a) in ["core-13", "core-14", "core-15", "core-16"].iter().enumerate() {
            add(a, if i < 2 { "ap-south-a" } else { "ap-south-b" }, "core", "production");
        }
        add("gpu-7", "ap-south-a", "gpu", "dev");
        add("gpu-8", "ap-south-b", "gpu", "dev");
        out
    }

    fn phased(group_by: Option<&str>, phases: Option<&[&str]>) -> Strategy {
        Strategy {
            group_by: group_by.map(str::to_string),
            phases: phases.map(|p| p.iter().map(|s| s.parse().unwrap()).collect()),
            ..Strategy::of(StrategyKind::Progressive)
        }
    }

    fn phases_of(p: &Plan) -> Vec<(String, usize, u8)> {
        p.steps.iter().map(|s| (s.name.clone().unwrap(), s.agents.len(), s.cumulative_percent)).collect()
    }

    #[test]
    fn progressive_by_group_makes_one_named_phase_per_zone_or_label_value() {
        let s = RolloutSettings::default();
        let p = plan(&phased(Some("zone"), None), &placed(), &s).unwrap();
        assert_eq!(phases_of(&p), [("ap-south-a".into(), 6, 50), ("ap-south-b".into(), 6, 100)]);
        assert_eq!(p.steps[0].agents, ["edge-19", "edge-20", "edge-21", "core-13", "core-14", "gpu-7"]);
        assert_eq!(p.steps.iter().map(|s| s.wait).collect::<Vec<_>>(), [Some(Wait::Promote), None]);
        let lines = p.describe(&s);
        assert!(
            lines[0]
                .starts_with("step 1: ap-south-a: 6 agents (6 of 12 agents, 50%): edge-19, edge-20, edge-21, core-13"),
            "{}",
            lines[0]
        );
        assert!(lines[0].ends_with("; then wait for promote"), "{}", lines[0]);

        // By environment, lower environments first and production last, whatever the order of the fleet.
        let p = plan(&phased(Some("env"), None), &placed(), &s).unwrap();
        assert_eq!(phases_of(&p), [("dev".into(), 2, 17), ("staging".into(), 6, 67), ("production".into(), 4, 100)]);
        let p = plan(&phased(Some("tier"), None), &placed(), &s).unwrap();
        assert_eq!(phases_of(&p), [("edge".into(), 6, 50), ("core".into(), 4, 83), ("gpu".into(), 2, 100)]);
    }

    #[test]
    fn named_phases_go_in_the_order_said_and_must_cover_every_target() {
        let s = RolloutSettings::default();
        let p = plan(&phased(None, Some(&["env:dev", "tier:edge", "env:production"])), &placed(), &s).unwrap();
        assert_eq!(phases_of(&p), [("dev".into(), 2, 17), ("edge".into(), 6, 67), ("production".into(), 4, 100)]);
        // An agent in two phases goes in the first.
        let p = plan(&phased(None, Some(&["zone:ap-south-b", "fleet"])), &placed(), &s).unwrap();
        assert_eq!(phases_of(&p), [("ap-south-b".into(), 6, 50), ("fleet".into(), 6, 100)]);

        let err = |st: Strategy| plan(&st, &placed(), &s).unwrap_err().to_string();
        assert_eq!(
            err(phased(None, Some(&["env:staging", "env:production"]))),
            "cannot plan the deployment: gpu-7, gpu-8 are in none of the phases (env:staging, env:production); \
             add a phase for them or narrow the scope"
        );
        assert_eq!(
            err(phased(None, Some(&["env:staging", "zone:eu-west-a", "fleet"]))),
            "cannot plan the deployment: phase eu-west-a has no agent in the deployment's scope; name phases within it"
        );
        assert_eq!(
            err(phased(Some("rack"), None)),
            "cannot plan the deployment: edge-19, edge-20, edge-21, edge-22, edge-23 and 7 more have no rack, so they \
             cannot be put in a phase by rack; name the phases instead (\"in phases ... then ...\")"
        );
        assert_eq!(
            err(Strategy { group_by: Some("zone".into()), ..Strategy::of(StrategyKind::Canary) }),
            "cannot plan the deployment: phases by zone are for a progressive rollout, not a canary; \
             say \"progressive rollout of ... by zone\""
        );
    }

    #[test]
    fn approval_is_said_per_rollout_and_progressive_phases_wait_unless_told_not_to() {
        let s = RolloutSettings::default();
        let waits = |st: &Strategy, approval: Option<bool>| {
            plan_with(st, &placed(), &s, approval).unwrap().steps.iter().map(|s| s.wait).collect::<Vec<_>>()
        };
        let by_tier = phased(Some("tier"), None);
        assert_eq!(waits(&by_tier, None), [Some(Wait::Promote), Some(Wait::Promote), None]);
        assert_eq!(waits(&by_tier, Some(false)), [None, None, None]);
        let canary = strategy(StrategyKind::Canary, Some(vec![25, 50]), None);
        assert_eq!(waits(&canary, None), [None, None, None]);
        assert_eq!(waits(&canary, Some(true)), [Some(Wait::Promote), Some(Wait::Promote), None]);
        let percents = strategy(StrategyKind::Progressive, None, None);
        assert_eq!(waits(&percents, Some(false)), [None, None, None]);
    }

    #[test]
    fn max_unavailable_is_resolved_for_rolling_and_refused_elsewhere() {
        let s = RolloutSettings::default();
        let limited =
            |m| Strategy { batch_size: Some(6), max_unavailable: Some(m), ..Strategy::of(StrategyKind::Rolling) };
        let p = plan(&limited(crate::ops::MaxUnavailable::Agents(2)), &targets(12), &s).unwrap();
        assert_eq!((sizes(&p), p.max_unavailable), (vec![(6, 50), (6, 100)], Some(2)));
        assert!(
            p.describe(&s)[0].contains("edge-6; at most 2 agents unavailable at once; bake 2 s"),
            "{:?}",
            p.describe(&s)
        );
        let p = plan(&limited(crate::ops::MaxUnavailable::Percent(20)), &targets(12), &s).unwrap();
        assert_eq!(p.max_unavailable, Some(2), "20% of 12, rounded down");
        assert_eq!(
            plan(&strategy(StrategyKind::Rolling, None, Some(6)), &targets(12), &s).unwrap().max_unavailable,
            None
        );
        let canary = Strategy {
            max_unavailable: Some(crate::ops::MaxUnavailable::Agents(2)),
            ..Strategy::of(StrategyKind::Canary)
        };
        assert_eq!(
            plan(&canary, &targets(12), &s).unwrap_err().to_string(),
            "cannot plan the deployment: max unavailable is for a rolling deployment, not a canary"
        );
    }
}
