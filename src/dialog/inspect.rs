//! The inspect family: `show_topology`, `show_health`, `show_agent`, `find_agents`,
//! `list_extensions`, `run_health_check` and `report`: their checks, execution and
//! replies. They only read: the topology model, the agents' own checks, the registry.

use std::collections::BTreeMap;

use chrono::Utc;
use serde_json::json;

use crate::agent::checks::{run_checks, CheckResult};
use crate::feasibility::{known_agent, known_extension, plain, scope_words, Feasible, Infeasible};
use crate::ops::{Check, ExtensionRef, Operation, Scope, TimeSpec};
use crate::registry::Report;
use crate::reply::{Outcome, Reply, Table};
use crate::services::Services;
use crate::topology::{AgentView, Liveness, RegionHealth, Topology};

/// The names an inspection needs must exist; anything else can always be read.
pub(super) fn check(op: &Operation, topo: &Topology) -> Result<Feasible, Infeasible> {
    match op {
        Operation::ShowAgent { agent: Some(a) } => known_agent(a, topo).map(|_| plain(Vec::new())),
        Operation::FindAgents { extension: Some(e), .. } => known_extension(&e.name, topo).map(|_| plain(Vec::new())),
        _ => Ok(plain(Vec::new())),
    }
}

/// Carries out one of this family's operations.
pub(super) async fn run(services: &Services, op: &Operation, topo: &Topology) -> Reply {
    match op {
        Operation::ShowTopology { scope } => topology(topo, scope.as_ref().unwrap_or(&Scope::fleet())),
        Operation::ShowHealth { scope } => health(topo, scope.as_ref().unwrap_or(&Scope::fleet())),
        Operation::ShowAgent { agent: Some(name) } => match topo.agent(name) {
            Some(a) => agent(a, topo),
            None => Reply::new(Outcome::Infeasible, format!("There is no agent {name}.")),
        },
        Operation::FindAgents { scope, extension } => {
            found(topo, scope.as_ref().unwrap_or(&Scope::fleet()), extension.as_ref())
        }
        Operation::ListExtensions { scope } => extensions(topo, scope.as_ref().unwrap_or(&Scope::fleet())),
        Operation::RunHealthCheck { scope, checks: which } => {
            let scope = scope.clone().unwrap_or_else(Scope::fleet);
            let which = which.clone().unwrap_or_else(|| Check::ALL.to_vec());
            let agents: Vec<AgentView> = topo.select(&scope).cloned().collect();
            let results =
                run_checks(&services.client, &services.anonymous, &agents, &which, &services.thresholds).await;
            checks(&scope, &which, agents.len(), &results)
        }
        Operation::Report { since, until, scope: _ } => {
            let now = Utc::now();
            let from = since.unwrap_or(TimeSpec::days(30));
            let to = until.map(|u| u.resolve(now)).unwrap_or(now);
            match services.registry.report(from.resolve(now), to).await {
                Ok(r) => report(&from, until.as_ref(), &r),
                Err(e) => Reply::new(Outcome::Failed, format!("The registry could not be read: {e}")),
            }
        }
        other => super::render::not_yet(other),
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

fn topology(topo: &Topology, scope: &Scope) -> Reply {
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

fn health(topo: &Topology, scope: &Scope) -> Reply {
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
                .take(6)
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
            message.push_str(&format!(", {} {}: {}", these.len(), l.as_str(), named.join(", ")));
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
fn flapping_sentence(name: &str, f: &crate::topology::Flapping) -> String {
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

fn agent(a: &AgentView, topo: &Topology) -> Reply {
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

fn found(topo: &Topology, scope: &Scope, ext: Option<&ExtensionRef>) -> Reply {
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

fn extensions(topo: &Topology, scope: &Scope) -> Reply {
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

fn checks(scope: &Scope, checks: &[Check], agents: usize, results: &[CheckResult]) -> Reply {
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

fn report(since: &TimeSpec, until: Option<&TimeSpec>, r: &Report) -> Reply {
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

/// Names of agents in a list, for messages.
fn name_list(agents: &[&AgentView]) -> String {
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    crate::words::and_more(&names, 8)
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
