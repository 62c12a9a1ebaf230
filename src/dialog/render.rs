//! Turning model and registry data into replies: the message an operator reads, a
//! table where one helps, structured details, and the natural next questions.

use std::collections::BTreeMap;

use serde_json::json;

use crate::agent::checks::CheckResult;
use crate::feasibility::{scope_words, Feasible, Infeasible};
use crate::ops::{Check, DeploymentStatus, ExtensionRef, Operation, Scope, TimeSpec};
use crate::orchestrate::lifecycle::{self, Control};
use crate::orchestrate::{Plan, RolloutSettings};
use crate::registry::{DeploymentRecord, Report, TargetState};
use crate::reply::{Outcome, Reply, Table};
use crate::topology::{AgentView, Liveness, RegionHealth, Topology};

pub(super) fn help() -> Reply {
    // The one list of what Parley does (crate::help), as the TUI's overlay shows it.
    let mut table = Table::new("Things to say", &["What", "Example"]);
    for e in crate::help::EXAMPLES {
        table.push(vec![e.topic.to_string(), e.say.to_string()]);
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

/// One line saying what a mutating operation will do, for the confirmation question.
pub(super) fn summary(op: &Operation, f: &Feasible) -> String {
    match op {
        Operation::Deploy { extension: Some(e), version: Some(v), scope: Some(s), strategy, .. } => {
            let how = strategy.as_ref().map(|s| s.describe()).unwrap_or_else(|| "rolling".to_string());
            format!(
                "Roll out {e} {v} to {} agent{} in {} ({how})",
                f.targets.len(),
                crate::words::s(f.targets.len()),
                scope_words(s)
            )
        }
        Operation::Drain { agent: Some(a) } => format!("Drain {a}"),
        Operation::Cordon { agent: Some(a) } => format!("Cordon {a}"),
        Operation::Uncordon { agent: Some(a) } => format!("Uncordon {a}"),
        Operation::Restart { agent: Some(a) } => format!("Restart {a}"),
        Operation::Abort { deployment: Some(d) } => {
            format!("Abort {d} and return its agents to their previous versions")
        }
        Operation::Rollback { deployment: Some(d) } => format!("Roll back {d} on {} agents", f.targets.len()),
        Operation::Resume { deployment: Some(d) } => format!("Resume {d}"),
        Operation::Retry { deployment: Some(d) } => format!("Retry {d}"),
        // The counts are the agents the check found the change can reach, never a
        // promise of work that cannot happen.
        Operation::Failover { from: Some(from), to } => {
            let to = to.as_deref().unwrap_or("the healthiest regions with headroom");
            match f.targets.len() {
                0 => format!("Fail over {from} to {to} (none of its agents answers, so none can be drained)"),
                1 => format!("Fail over {from} to {to} and drain its 1 reachable agent"),
                n => format!("Fail over {from} to {to} and drain its {n} reachable agents"),
            }
        }
        Operation::ShiftTraffic { from: Some(from), to: Some(to), percent: Some(p) } => {
            format!("Send {p}% of {from}'s traffic to {to}")
        }
        Operation::Failback { region: Some(r) } => match f.targets.len() {
            0 => format!("Fail back {r} (none of its agents is drained, so none returns to service)"),
            1 => format!("Fail back {r} and return its 1 drained agent to service"),
            n => format!("Fail back {r} and return its {n} drained agents to service"),
        },
        Operation::Freeze => "Freeze the fleet".to_string(),
        other => other.name().replace('_', " "),
    }
}

/// Agents of liveness `l` that are not flapping: a flapping agent's liveness is only
/// what the last poll caught, so it is counted as flapping ([`flapping`]) instead.
fn count(agents: &[&AgentView], l: Liveness) -> usize {
    agents.iter().filter(|a| a.flapping.is_none() && a.liveness == l).count()
}

fn flapping(agents: &[&AgentView]) -> usize {
    agents.iter().filter(|a| a.flapping.is_some()).count()
}

/// Agents known to take no new work now; one that does not answer has no known state.
fn not_serving(agents: &[&AgentView]) -> usize {
    agents.iter().filter(|a| a.serving().not_serving_now()).count()
}

pub(super) fn topology(topo: &Topology, scope: &Scope) -> Reply {
    let agents: Vec<&AgentView> = topo.select(scope).collect();
    let mut table = Table::new(
        "Topology",
        &["Region", "Zone", "Env", "Agents", "Healthy", "Flapping", "Degraded", "Suspect", "Down", "Not serving"],
    );
    let mut regions = Vec::new();
    for region in topo.regions() {
        let in_region: Vec<&AgentView> = agents.iter().copied().filter(|a| &a.region == region).collect();
        if in_region.is_empty() {
            continue;
        }
        let mut zones = Vec::new();
        for zone in topo.zones() {
            let z: Vec<&AgentView> = in_region.iter().copied().filter(|a| &a.zone == zone).collect();
            if z.is_empty() {
                continue;
            }
            table.push(vec![
                region.clone(),
                zone.clone(),
                z[0].env().unwrap_or("-").to_string(),
                z.len().to_string(),
                count(&z, Liveness::Healthy).to_string(),
                flapping(&z).to_string(),
                count(&z, Liveness::Degraded).to_string(),
                count(&z, Liveness::Suspect).to_string(),
                count(&z, Liveness::Down).to_string(),
                not_serving(&z).to_string(),
            ]);
            zones.push(json!({ "zone": zone, "agents": z.iter().map(|a| &a.name).collect::<Vec<_>>() }));
        }
        regions.push(json!({ "region": region, "health": topo.region_health(region), "zones": zones }));
    }
    let healthy = count(&agents, Liveness::Healthy);
    let region_count = regions.len();
    let message = format!(
        "{} agent{} in {} region{} ({}); {} healthy{}.",
        agents.len(),
        crate::words::s(agents.len()),
        region_count,
        crate::words::s(region_count),
        topo.regions()
            .iter()
            .filter(|r| agents.iter().any(|a| &a.region == *r))
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        healthy,
        trouble_suffix(&agents),
    );
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(json!({ "regions": regions }))
        .with_follow_ups(["how healthy is the fleet?", "list extensions"])
}

fn trouble_suffix(agents: &[&AgentView]) -> String {
    let bad = troubled(agents);
    if bad.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = bad.iter().take(6).map(|a| format!("{} {}", a.name, a.health_word())).collect();
    format!(", {} not: {}", bad.len(), parts.join(", "))
}

pub(super) fn health(topo: &Topology, scope: &Scope) -> Reply {
    let agents: Vec<&AgentView> = topo.select(scope).collect();
    if agents.is_empty() {
        return Reply::new(Outcome::Answered, format!("No agent matches {scope}."));
    }
    let bad = troubled(&agents);
    let mut follow_ups = Vec::new();
    // The natural next step for each: a degraded agent still answers, so take it out
    // of service; one that does not answer cannot be acted on, so look (and wait).
    for a in bad.iter().take(3) {
        match a.liveness {
            Liveness::Degraded => follow_ups.push(format!("drain {}", a.name)),
            _ => follow_ups.push(format!("show agent {}", a.name)),
        }
    }
    let partitioned: Vec<&String> = topo
        .regions()
        .iter()
        .filter(|r| agents.iter().any(|a| &a.region == *r) && topo.region_health(r) == RegionHealth::Partitioned)
        .collect();

    let table = if scope.is_fleet() {
        let mut t = Table::new(
            "Health by region",
            &[
                "Region",
                "Health",
                "Agents",
                "Healthy",
                "Flapping",
                "Degraded",
                "Suspect",
                "Down",
                "Max err %",
                "Max p95 ms",
            ],
        );
        for region in topo.regions() {
            let r: Vec<&AgentView> = agents.iter().copied().filter(|a| &a.region == region).collect();
            // Only live traffic metrics: not those of agents that do not answer or serve nothing.
            let as_of = topo.as_of();
            let traffic: Vec<(f64, f64)> = r.iter().filter_map(|a| a.reading(as_of).traffic()).collect();
            let max = |f: fn(&(f64, f64)) -> f64| {
                traffic.iter().map(f).fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            };
            t.push(vec![
                region.clone(),
                topo.region_health(region).as_str().to_string(),
                r.len().to_string(),
                count(&r, Liveness::Healthy).to_string(),
                flapping(&r).to_string(),
                count(&r, Liveness::Degraded).to_string(),
                count(&r, Liveness::Suspect).to_string(),
                count(&r, Liveness::Down).to_string(),
                max(|t| t.0).map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
                max(|t| t.1).map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into()),
            ]);
        }
        t
    } else {
        agent_table("Health", &agents, topo.as_of())
    };

    let mut message = format!(
        "{}: {} agent{}, {} healthy",
        scope_words(scope),
        agents.len(),
        crate::words::s(agents.len()),
        count(&agents, Liveness::Healthy)
    );
    let flappers: Vec<&str> = agents.iter().filter(|a| a.flapping.is_some()).map(|a| a.name.as_str()).collect();
    if !flappers.is_empty() {
        let shown: Vec<&str> = flappers.iter().copied().take(6).collect();
        message.push_str(&format!(", {} flapping: {}", flappers.len(), shown.join(", ")));
    }
    for l in [Liveness::Degraded, Liveness::Suspect, Liveness::Down] {
        let these: Vec<&AgentView> =
            agents.iter().copied().filter(|a| a.flapping.is_none() && a.liveness == l).collect();
        if !these.is_empty() {
            let named: Vec<String> = these
                .iter()
                .take(crate::digest::NAMED)
                .map(|a| match l {
                    Liveness::Degraded => {
                        let why: Vec<String> = crate::topology::HealthThresholds::default()
                            .breaches(&a.metrics)
                            .iter()
                            .map(|(m, v, t)| format!("{m} {v:.1} > {t}"))
                            .collect();
                        format!("{} ({})", a.name, why.join(", "))
                    }
                    _ => format!("{} (since {})", a.name, a.liveness_since.format("%H:%M:%S")),
                })
                .collect();
            let more = these.len() - named.len();
            let more = if more > 0 { format!(" and {more} more") } else { String::new() };
            message.push_str(&format!(", {} {}: {}{more}", these.len(), l.as_str(), named.join(", ")));
        }
    }
    let cordoned = not_serving(&agents);
    if cordoned > 0 {
        message.push_str(&format!("; {cordoned} not serving (cordoned or drained)"));
    }
    message.push('.');
    // A flapping agent's liveness above is whatever the last pass caught; say that it
    // keeps changing, and why the operator hears nothing more about it.
    let flapping: Vec<(&AgentView, crate::topology::Flapping)> =
        agents.iter().filter_map(|a| a.flapping.map(|f| (*a, f))).collect();
    for (a, f) in flapping.iter().take(3) {
        message.push_str(&format!(" {}", flapping_sentence(&a.name, f)));
        let look = format!("show agent {}", a.name);
        if !follow_ups.contains(&look) {
            follow_ups.push(look);
        }
    }
    if flapping.len() > 3 {
        message.push_str(&format!(" {} more agents are flapping.", flapping.len() - 3));
    }
    if !partitioned.is_empty() {
        let names: Vec<&str> = partitioned.iter().map(|s| s.as_str()).collect();
        message.push_str(&format!(" {} is partitioned: no agent there answers.", names.join(", ")));
        follow_ups.push(format!("fail over {}", names[0]));
    }
    if bad.is_empty() {
        follow_ups.push(format!("run a health check on {}", scope_words(scope)));
        follow_ups.push("list deployments".to_string());
    }
    let details: Vec<serde_json::Value> = agents
        .iter()
        .map(|a| {
            // Metrics as they may be read: live, without traffic, or stale with their age.
            let mut d = json!({ "agent": a.name, "region": a.region, "liveness": a.liveness, "since": a.liveness_since, "state": serving_json(a.serving()), "reported_at": a.reported_at, "metrics": a.reading(topo.as_of()) });
            if let (Some(f), Some(obj)) = (a.flapping, d.as_object_mut()) {
                obj.insert("flapping".into(), json!(f));
            }
            d
        })
        .collect();
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(json!({ "agents": details }))
        .with_follow_ups(follow_ups)
}

/// The serving state for JSON: the state when known now, else `null` (what the agent
/// last reported is history; `reported_at` says when that was).
fn serving_json(serving: crate::topology::Serving) -> Option<crate::agent::protocol::ServingState> {
    match serving {
        crate::topology::Serving::Now(s) => Some(s),
        _ => None,
    }
}

/// "edge-7 is flapping: 5 state changes in the last 2 min; alerts for it are held back."
pub(super) fn flapping_sentence(name: &str, f: &crate::topology::Flapping) -> String {
    format!(
        "{name} is flapping: {} state change{} in the last {}; alerts for it are held back.",
        f.changes,
        crate::words::s(f.changes),
        span_words(f.window)
    )
}

/// A window as an operator says it: "minute", "2 min", "45 s", "0.4 s".
fn span_words(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let whole = d.subsec_nanos() == 0;
    if whole && secs == 60 {
        "minute".to_string()
    } else if whole && secs > 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else if whole && secs > 0 {
        format!("{secs} s")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// Per agent: a value only where it is live; "stale 42 s" for an agent that does not
/// answer, "no traffic" for the error rate and latency of a drained one.
fn agent_table(title: &str, agents: &[&AgentView], as_of: chrono::DateTime<chrono::Utc>) -> Table {
    use crate::topology::{age_words, Reading, Serving};
    let mut t = Table::new(title, &["Agent", "Zone", "Health", "State", "CPU %", "Mem %", "Err %", "p95 ms"]);
    for a in agents {
        let state = match a.serving() {
            Serving::Now(s) => s.as_str().to_string(),
            Serving::LastReported { .. } | Serving::Unknown => "unknown".to_string(),
        };
        let [cpu, mem, err, p95] = match a.reading(as_of) {
            Reading::Live(m) => [
                format!("{:.0}", m.cpu_pct),
                format!("{:.0}", m.mem_pct),
                format!("{:.2}", m.error_rate_pct),
                format!("{:.0}", m.p95_ms),
            ],
            Reading::NoTraffic { cpu_pct, mem_pct } => {
                [format!("{cpu_pct:.0}"), format!("{mem_pct:.0}"), "no traffic".into(), "no traffic".into()]
            }
            Reading::Stale { age, .. } => [format!("stale {}", age_words(age)), "-".into(), "-".into(), "-".into()],
            Reading::Never => ["-".into(), "-".into(), "-".into(), "-".into()],
        };
        t.push(vec![a.name.to_string(), a.zone.clone(), a.health_word().to_string(), state, cpu, mem, err, p95]);
    }
    t
}

pub(super) fn agent(a: &AgentView, topo: &Topology) -> Reply {
    let as_of = topo.as_of();
    let place = format!(
        "{} ({}, {}, {})",
        a.name,
        a.zone,
        a.env().unwrap_or("no env"),
        a.tier().map(|t| format!("tier {t}")).unwrap_or_else(|| "no tier".into()),
    );
    // State and metrics as `AgentView` says they are known, as every front-end tells them.
    let mut message = if a.liveness.is_reachable() {
        format!("{place} is {} and {}: {}.", a.health_word(), a.serving().describe(as_of), a.reading(as_of).describe())
    } else {
        format!(
            "{place} is {} since {}; {}; last seen {}; {}.",
            a.liveness.as_str(),
            a.liveness_since.format("%H:%M:%S"),
            a.serving().describe(as_of),
            a.last_seen.map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_else(|| "never".into()),
            a.reading(as_of).describe()
        )
    };
    if let Some(f) = &a.flapping {
        message.push(' ');
        message.push_str(&flapping_sentence(&a.name, f));
    }
    let mut table = Table::new(format!("{} extensions", a.name), &["Extension", "Version", "Latest"]);
    for (ext, ver) in &a.extensions {
        let latest =
            topo.catalog().get(ext).and_then(|e| e.latest()).map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        table.push(vec![ext.clone(), ver.clone(), latest]);
    }
    let mut follow = vec![format!("how healthy is {}?", a.region)];
    follow.push(match a.state {
        crate::agent::protocol::ServingState::Active => format!("cordon {}", a.name),
        _ => format!("uncordon {}", a.name),
    });
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(serde_json::to_value(a).unwrap_or_default())
        .with_follow_ups(follow)
}

pub(super) fn found(topo: &Topology, scope: &Scope, ext: Option<&ExtensionRef>) -> Reply {
    let agents: Vec<&AgentView> = topo
        .select(scope)
        .filter(|a| match ext {
            None => true,
            Some(e) => a.extensions.get(&e.name).is_some_and(|v| e.version.as_ref().is_none_or(|want| want == v)),
        })
        .collect();
    let what = match ext {
        Some(ExtensionRef { name, version: Some(v) }) => format!(" running {name} {v}"),
        Some(ExtensionRef { name, version: None }) => format!(" running {name}"),
        None => String::new(),
    };
    let message = if agents.is_empty() {
        format!("No agent in {scope}{what}.")
    } else {
        format!(
            "Found {} agent{} in {scope}{what}: {}.",
            agents.len(),
            crate::words::s(agents.len()),
            name_list(&agents)
        )
    };
    let mut table = Table::new("Agents", &["Agent", "Region", "Zone", "Health", "Capabilities", "Extensions"]);
    for a in &agents {
        table.push(vec![
            a.name.to_string(),
            a.region.clone(),
            a.zone.clone(),
            a.health_word().to_string(),
            if a.capabilities.is_empty() { "-".into() } else { a.capabilities.join(",") },
            a.extensions.iter().map(|(e, v)| format!("{e} {v}")).collect::<Vec<_>>().join(", "),
        ]);
    }
    let follow: Vec<String> = agents.iter().take(2).map(|a| format!("show agent {}", a.name)).collect();
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(json!({ "agents": agents.iter().map(|a| &a.name).collect::<Vec<_>>() }))
        .with_follow_ups(follow)
}

pub(super) fn extensions(topo: &Topology, scope: &Scope) -> Reply {
    let agents: Vec<&AgentView> = topo.select(scope).collect();
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for a in &agents {
        for (e, v) in &a.extensions {
            *counts.entry((e.clone(), v.clone())).or_default() += 1;
        }
    }
    let mut table = Table::new("Extensions", &["Extension", "Version", "Agents", "Catalog latest"]);
    let mut rows = Vec::new();
    for ((e, v), n) in &counts {
        let latest =
            topo.catalog().get(e).and_then(|c| c.latest()).map(|l| l.to_string()).unwrap_or_else(|| "-".into());
        table.push(vec![e.clone(), v.clone(), n.to_string(), latest.clone()]);
        rows.push(json!({ "extension": e, "version": v, "agents": n, "latest": latest }));
    }
    let names: Vec<String> = counts.keys().map(|(e, v)| format!("{e} {v}")).collect::<Vec<_>>();
    let message = format!(
        "{} across {} agent{} in {}: {}.",
        if names.len() == 1 { "1 extension version" } else { "Extension versions" },
        agents.len(),
        crate::words::s(agents.len()),
        scope_words(scope),
        names.join(", ")
    );
    let upgradable = counts
        .keys()
        .find(|(e, v)| topo.catalog().get(e).and_then(|c| c.latest()).is_some_and(|l| l.to_string() != *v));
    let mut follow = Vec::new();
    if let Some((e, _)) = upgradable {
        if let Some(l) = topo.catalog().get(e).and_then(|c| c.latest()) {
            follow.push(format!("roll out {e} {l} to {}", scope_words(scope)));
        }
    }
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(json!({ "extensions": rows }))
        .with_follow_ups(follow)
}

pub(super) fn checks(scope: &Scope, checks: &[Check], agents: usize, results: &[CheckResult]) -> Reply {
    let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.passed).collect();
    let passed = results.len() - failed.len();
    let kinds: Vec<&str> = checks.iter().map(|c| c.as_str()).collect();
    let mut message = format!(
        "{} check{} ({}) on {} agent{} in {}: {passed} passed, {} failed",
        results.len(),
        crate::words::s(results.len()),
        kinds.join(", "),
        agents,
        crate::words::s(agents),
        scope_words(scope),
        failed.len()
    );
    if failed.is_empty() {
        message.push('.');
    } else {
        let shown: Vec<String> =
            failed.iter().take(5).map(|r| format!("{} {}: {}", r.agent, r.check.as_str(), r.detail)).collect();
        message.push_str(&format!(": {}.", shown.join("; ")));
    }
    // Every row when it fits on a screen; otherwise the failures, which are what matter.
    let rows: Vec<&CheckResult> = if results.len() <= 60 { results.iter().collect() } else { failed.clone() };
    let mut table = Table::new("Health checks", &["Agent", "Check", "Result", "Detail"]);
    for r in rows {
        table.push(vec![
            r.agent.clone(),
            r.check.as_str().to_string(),
            if r.passed { "pass" } else { "FAIL" }.to_string(),
            r.detail.clone(),
        ]);
    }
    let follow: Vec<String> = failed.iter().take(2).map(|r| format!("show agent {}", r.agent)).collect();
    let outcome = if failed.is_empty() { Outcome::Answered } else { Outcome::Failed };
    Reply::new(outcome, message)
        .with_table(table)
        .with_details(json!({ "passed": passed, "failed": failed.len(), "results": results.iter().map(|r| json!({"agent": r.agent, "check": r.check, "passed": r.passed, "detail": r.detail})).collect::<Vec<_>>() }))
        .with_follow_ups(follow)
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
pub(super) fn deployment_offers(d: &DeploymentRecord) -> Vec<String> {
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
pub(super) fn control_summary(op: &Operation, d: &DeploymentRecord) -> Option<String> {
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
pub(super) fn plan_table(plan: &Plan, settings: &RolloutSettings, gate: Option<String>) -> Table {
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

pub(super) fn deployments(
    list: &[DeploymentRecord],
    status: Option<DeploymentStatus>,
    since: Option<&TimeSpec>,
) -> Reply {
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

pub(super) fn report(since: &TimeSpec, until: Option<&TimeSpec>, r: &Report) -> Reply {
    let pct = |x: Option<f64>| x.map(|v| format!("{:.0}%", v * 100.0)).unwrap_or_else(|| "-".into());
    let secs = |x: Option<f64>| x.map(|v| format!("{v:.1} s")).unwrap_or_else(|| "-".into());
    let window = match until {
        Some(u) => format!("from {since} to {u}"),
        None => format!("over the last {since}"),
    };
    let mut message = format!(
        "{} deployment{} {window}: success rate {}, rollback rate {}, median duration {}, p95 {}.",
        r.total,
        crate::words::s(r.total),
        pct(r.success_rate),
        pct(r.rollback_rate),
        secs(r.median_duration_secs),
        secs(r.p95_duration_secs)
    );
    let evaluated: u64 = r.gates_by_outcome.values().sum();
    let passed = r.gates_by_outcome.get("successful").copied().unwrap_or(0);
    if evaluated > 0 {
        let mut kinds: Vec<(&String, &u64)> = r.failed_gates_by_kind.iter().collect();
        // Most frequent first: the kind an operator should look at.
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let by_kind: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        message.push_str(&format!(" {evaluated} health gate{} evaluated, ", crate::words::s(evaluated)));
        if by_kind.is_empty() {
            message.push_str("all passed.");
        } else {
            message.push_str(&format!("{} did not pass ({}).", evaluated - passed, by_kind.join(", ")));
        }
    }
    // One table in sections, since a reply carries one table: statuses, failed gates
    // by kind, then the days that had deployments.
    let mut table = Table::new("Deployment report", &["Section", "Item", "Count", "Detail"]);
    for (status, n) in &r.by_status {
        table.push(vec!["status".into(), status.clone(), n.to_string(), String::new()]);
    }
    for (kind, n) in &r.failed_gates_by_kind {
        table.push(vec!["failed gates".into(), kind.clone(), n.to_string(), String::new()]);
    }
    for day in r.timeline.iter().filter(|d| d.total > 0) {
        let detail: Vec<String> = day.by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
        table.push(vec!["day".into(), day.date.to_string(), day.total.to_string(), detail.join(", ")]);
    }
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(serde_json::to_value(r).unwrap_or_default())
        .with_follow_ups(["list deployments", "show failed deployments"])
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
        let (noun, pronoun) = if paused.len() == 1 { ("deployment", "it is") } else { ("deployments", "they are") };
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
        let noun = if rolling.len() == 1 { "rollback" } else { "rollbacks" };
        parts.push(format!("Parley restarted and found {} unfinished {noun}: {}.", rolling.len(), lines.join("; ")));
        follow_ups.extend(rolling.iter().map(|d| format!("show deployment {}", d.name)));
    }
    Some(super::RestartNotice { message: parts.join(" "), follow_ups })
}

/// Names of agents in a list, for messages.
fn name_list(agents: &[&AgentView]) -> String {
    let mut names: Vec<String> = agents.iter().take(8).map(|a| a.name.to_string()).collect();
    if agents.len() > 8 {
        names.push(format!("{} more", agents.len() - 8));
    }
    names.join(", ")
}

/// Unreachable agents first, then degraded: the ones an operator wants to see.
fn troubled<'a>(agents: &[&'a AgentView]) -> Vec<&'a AgentView> {
    let mut out: Vec<&AgentView> = agents.iter().copied().filter(|a| !a.is_healthy()).collect();
    out.sort_by_key(|a| std::cmp::Reverse(a.liveness));
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::topology::test_support::demo_topology;
    use crate::topology::Flapping;

    #[test]
    fn a_flapping_agent_is_named_in_the_health_reply_with_its_changes_and_window() {
        let t = demo_topology();
        let mut agents = t.agents().to_vec();
        for a in agents.iter_mut() {
            if a.name == "edge-13" {
                a.liveness = Liveness::Down;
            }
            if a.name == "edge-14" {
                a.flapping = Some(Flapping { changes: 5, window: Duration::from_secs(120) });
            }
        }
        let t = Topology::new(agents, t.catalog_arc(), t.refreshed_at());
        let reply = health(&t, &Scope::region("eu-west"));
        assert_eq!(
            reply.message,
            "eu-west: 12 agents, 10 healthy, 1 flapping: edge-14, 1 down: edge-13 (since 00:00:00). edge-14 is \
             flapping: 5 state changes in the last 2 min; alerts for it are held back."
        );
        assert_eq!(reply.follow_ups, ["show agent edge-13", "show agent edge-14"]);
        let details = reply.details.unwrap();
        let rows = details["agents"].as_array().unwrap();
        assert_eq!(rows[1]["flapping"], json!({"changes": 5, "window_ms": 120_000}));
        assert!(rows[0].get("flapping").is_none(), "absent when not flapping: {}", rows[0]);
        // Whatever the last poll caught, the agent itself reads as flapping.
        let shown = agent(t.agent("edge-14").unwrap(), &t);
        assert!(
            shown.message.starts_with("edge-14 (eu-west-a, production, tier edge) is flapping and active: cpu"),
            "{}",
            shown.message
        );
        let fleet = health(&t, &Scope::fleet());
        let table = fleet.table.unwrap();
        assert_eq!(table.columns[3..5], ["Healthy", "Flapping"]);
        assert_eq!(table.rows[2][..7], ["eu-west", "degraded", "12", "10", "1", "0", "0"]);
    }

    #[test]
    fn flap_windows_read_as_an_operator_says_them() {
        let f = |changes, ms| flapping_sentence("edge-7", &Flapping { changes, window: Duration::from_millis(ms) });
        assert_eq!(
            f(4, 60_000),
            "edge-7 is flapping: 4 state changes in the last minute; alerts for it are held back."
        );
        assert_eq!(f(1, 45_000), "edge-7 is flapping: 1 state change in the last 45 s; alerts for it are held back.");
        assert_eq!(f(6, 400), "edge-7 is flapping: 6 state changes in the last 0.4 s; alerts for it are held back.");
        assert_eq!(
            f(6, 90_500),
            "edge-7 is flapping: 6 state changes in the last 90.5 s; alerts for it are held back."
        );
    }
}
