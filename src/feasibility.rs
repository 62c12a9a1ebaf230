//! Can this operation be carried out on the fleet as it is right now?
//!
//! Pure: an [`Operation`] and a topology snapshot (plus the agents other deployments
//! hold) in, a [`Feasible`] verdict or an [`Infeasible`] one out. An infeasible answer
//! always carries the reasons and, where there are any, feasible alternatives phrased
//! as utterances the operator can send as they are.

use std::collections::HashMap;

use serde::Serialize;

use crate::intent::suggest;
use crate::ops::{Operation, Scope, Selector};
use crate::routing::capacity::{Capacity, Limits};
use crate::routing::plan;
use crate::routing::table::RoutingTable;
use crate::topology::{AgentName, AgentView, Liveness, RegionHealth, Topology, VersionMatch};

/// What the check established, for the executor and the confirmation question.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Feasible {
    /// Agents the operation will change (deploy: those not already on the version).
    /// Shared names, not copies: a fleet-wide verdict on 10,000 agents would otherwise
    /// spend most of its time copying strings. They serialise as plain strings.
    pub targets: Vec<AgentName>,
    /// Agents in scope that already run the requested version (deploy only).
    pub already: Vec<AgentName>,
    /// Why the operation needs a yes/no first; `None` when it does not.
    pub risk: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Infeasible {
    pub reasons: Vec<String>,
    /// Utterances that would work instead.
    pub alternatives: Vec<String>,
    /// A rollout refused only because its agents belong to an unfinished deployment:
    /// "queue it" (offered among the alternatives) runs it behind that one.
    #[serde(skip)]
    pub queueable: bool,
}

impl Infeasible {
    pub fn new(reason: impl Into<String>) -> Infeasible {
        Infeasible { reasons: vec![reason.into()], alternatives: Vec::new(), queueable: false }
    }

    fn or(mut self, alternative: impl Into<String>) -> Infeasible {
        self.alternatives.push(alternative.into());
        self
    }
}

/// An agent with its index in `Topology::agents`, for the snapshot's per-agent columns.
type Indexed<'a> = (usize, &'a AgentView);

/// Agent name -> id of the active deployment that holds it.
pub type Busy = HashMap<String, String>;

/// The follow-up offered when a rollout overlaps an active one: the dialog then
/// queues the refused rollout behind it.
pub const QUEUE_IT: &str = "queue it";

/// Checks an operation whose slots are all filled.
pub fn check(op: &Operation, topo: &Topology, busy: &Busy) -> Result<Feasible, Infeasible> {
    if let Some(Some(scope)) = op.scope_slot() {
        check_scope_names(scope, topo)?;
    }
    match op {
        Operation::Deploy { extension: Some(ext), version: Some(ver), scope: Some(scope), .. } => {
            check_deploy(ext, ver, scope, topo, busy)
        }
        Operation::ShowAgent { agent: Some(a) } => known_agent(a, topo).map(|_| plain(Vec::new())),
        Operation::Drain { agent: Some(a) }
        | Operation::Cordon { agent: Some(a) }
        | Operation::Uncordon { agent: Some(a) }
        | Operation::Restart { agent: Some(a) } => check_agent_action(op, a, topo, busy),
        Operation::Failover { .. }
        | Operation::Failback { .. }
        | Operation::ShiftTraffic { .. }
        | Operation::ShowRouting { .. } => {
            // Without the router's table: as if no region had failed over.
            let table = RoutingTable::identity(topo.regions());
            check_traffic(op, topo, &table, &Capacity::from_topology(topo, Limits::default()))
        }
        Operation::FindAgents { extension: Some(e), .. } => {
            known_extension(&e.name, topo)?;
            Ok(plain(Vec::new()))
        }
        Operation::Versions { extension: Some(e), .. } => known_extension(e, topo).map(|_| plain(Vec::new())),
        _ => Ok(plain(Vec::new())),
    }
}

fn plain(targets: Vec<AgentName>) -> Feasible {
    Feasible { targets, already: Vec::new(), risk: None }
}

/// Checks a traffic operation against the routing table and the headroom model
/// (`routing::capacity`): the regions exist and differ, a target is healthy, serving
/// and has the headroom, a failback goes only into a healthy region.
pub fn check_traffic(
    op: &Operation,
    topo: &Topology,
    table: &RoutingTable,
    cap: &Capacity,
) -> Result<Feasible, Infeasible> {
    let drained = |region: &str| -> Vec<AgentName> {
        topo.region_agents(region).filter(|a| a.liveness.is_reachable()).map(|a| a.name.clone()).collect()
    };
    match op {
        Operation::ShowRouting { .. } => Ok(plain(Vec::new())),
        Operation::Failover { from: Some(from), to } => {
            known_region(from, topo)?;
            if let Some(to) = to {
                known_region(to, topo)?;
                if to == from {
                    return Err(Infeasible::new(format!("{from} cannot fail over to itself."))
                        .or(format!("fail over {from} to the healthiest regions")));
                }
            }
            if !table.serves_itself(from) && !table.receives(from) {
                return Err(Infeasible::new(format!(
                    "{from} already serves no traffic: its traffic goes to {}.",
                    table.describe(from)
                ))
                .or("show routing")
                .or(format!("fail back {from}")));
            }
            if let Some(to) = to {
                if !cap.eligible(table, to) {
                    return Err(target_refused(from, to, table, cap));
                }
            }
            match plan::choose(cap, table, from, to.as_deref()) {
                Ok(targets) => {
                    let plan: Vec<String> = targets.iter().map(|r| format!("{} {}%", r.region, r.weight)).collect();
                    let cpu: Vec<String> = match crate::routing::table::failover(table, from, &targets) {
                        Ok(after) => targets
                            .iter()
                            .map(|r| format!("{} {:.0}%", r.region, cap.projected_cpu(&after, &r.region)))
                            .collect(),
                        Err(_) => Vec::new(),
                    };
                    // The agents a drain can reach; the summary tells how many (none when
                    // none answers), so the risk does not promise work.
                    let agents = drained(from);
                    // Only a target the operator named can be in another environment.
                    let across: Vec<String> = targets
                        .iter()
                        .filter(|r| !cap.same_env(from, &r.region))
                        .map(|r| {
                            format!(
                                "; {} is {}, not {} like {from}",
                                r.region,
                                cap.env(&r.region).unwrap_or("unlabelled"),
                                cap.env(from).unwrap_or("unlabelled")
                            )
                        })
                        .collect();
                    Ok(Feasible {
                        targets: agents,
                        already: Vec::new(),
                        risk: Some(format!(
                            "a failover moves all of {from}'s traffic ({}; projected CPU {} of a {:.0}% limit){}",
                            plan.join(", "),
                            cpu.join(", "),
                            cap.limits.cpu_pct,
                            across.concat()
                        )),
                    })
                }
                Err(short) => Err(shortfall(from, to.as_deref(), &short, table, cap)),
            }
        }
        Operation::ShiftTraffic { from: Some(from), to: Some(to), percent: Some(p) } => {
            known_region(from, topo)?;
            known_region(to, topo)?;
            if from == to {
                return Err(
                    Infeasible::new(format!("{from}'s traffic is already served by {from}.")).or("show routing")
                );
            }
            if *p == 0 || *p > 100 {
                return Err(Infeasible::new(format!("A share is between 1% and 100%, not {p}%.")));
            }
            if !cap.eligible(table, to) {
                return Err(target_refused(from, to, table, cap));
            }
            let most = plan::partial_pct(cap, table, from, to);
            if *p > most {
                let mut inf = Infeasible::new(format!(
                    "{to} can take at most {most}% of {from}'s traffic within its {:.0}% CPU limit, not {p}%.",
                    cap.limits.cpu_pct
                ));
                if most > 0 {
                    inf = inf.or(format!("send {most}% of {from}'s traffic to {to}"));
                }
                return Err(inf.or(format!("fail over {from} to the healthiest regions")));
            }
            Ok(Feasible {
                targets: Vec::new(),
                already: Vec::new(),
                risk: Some(format!("it moves {p}% of {from}'s traffic to {to}")),
            })
        }
        Operation::Failback { region: Some(region) } => {
            known_region(region, topo)?;
            let health = topo.region_health(region);
            if health != RegionHealth::Healthy {
                let troubled: Vec<String> = topo
                    .region_agents(region)
                    .filter(|a| a.liveness != Liveness::Healthy)
                    .take(4)
                    .map(|a| format!("{} is {}", a.name, a.liveness.as_str()))
                    .collect();
                return Err(Infeasible::new(format!(
                    "{region} is still {} ({}); failing back into it would send its traffic to agents that cannot serve it.",
                    health.as_str(),
                    troubled.join(", ")
                ))
                .or(format!("how healthy is {region}?"))
                .or("show routing"));
            }
            if table.routes(region) == [crate::routing::table::Route::new(region.as_str(), 100)] {
                return Err(
                    Infeasible::new(format!("{region} already serves all of its own traffic.")).or("show routing")
                );
            }
            let back: Vec<AgentName> =
                topo.region_agents(region).filter(|a| crate::routing::returnable(a)).map(|a| a.name.clone()).collect();
            // The summary tells how many agents return to service.
            Ok(Feasible {
                risk: Some(format!(
                    "a failback sends all of {region}'s traffic back to {region} ({})",
                    served_words(table, region)
                )),
                targets: back,
                already: Vec::new(),
            })
        }
        _ => Ok(plain(Vec::new())),
    }
}

/// Where `region`'s traffic goes now, for a failback's confirmation.
fn served_words(table: &RoutingTable, region: &str) -> String {
    format!("now served by {}", table.describe(region))
}

fn target_refused(from: &str, to: &str, table: &RoutingTable, cap: &Capacity) -> Infeasible {
    let why = match cap.loads.get(to) {
        Some(l) if l.health != RegionHealth::Healthy => format!("{to} is {}", l.health.as_str()),
        Some(_) if !table.serves_itself(to) => {
            format!("{to} is failed over itself (its traffic goes to {})", table.describe(to))
        }
        Some(l) if l.mem > cap.limits.mem_pct => {
            format!("{to}'s agents use {:.0}% memory, over the {:.0}% limit", l.mem, cap.limits.mem_pct)
        }
        _ => format!("{to} has no agents"),
    };
    let mut inf = Infeasible::new(format!("{why}, so it cannot take {from}'s traffic."));
    if let Ok(targets) = plan::choose(cap, table, from, None) {
        if let [only] = targets.as_slice() {
            inf = inf.or(format!("fail over {from} to {}", only.region));
        } else {
            inf = inf.or(format!("fail over {from} to the healthiest regions"));
        }
    }
    inf
}

fn shortfall(
    from: &str,
    to: Option<&str>,
    short: &plan::Shortfall,
    table: &RoutingTable,
    cap: &Capacity,
) -> Infeasible {
    let load = plan::moving_load(cap, table, from);
    let reason = match to {
        Some(to) => {
            let after = crate::routing::table::failover(table, from, &[crate::routing::table::Route::new(to, 100)]);
            let projected = after.map(|a| cap.projected_cpu(&a, to)).unwrap_or(f64::INFINITY);
            format!(
                "{to} cannot absorb {from}'s traffic: its agents would run at {projected:.0}% CPU, over the {:.0}% limit.",
                cap.limits.cpu_pct
            )
        }
        None if short.candidates.is_empty() => format!(
            "No other {} region is healthy and serving its own traffic, so none can take {from}'s traffic; Parley does not move it into another environment by itself.",
            cap.env(from).unwrap_or("unlabelled")
        ),
        None => format!(
            "No healthy {} region, nor any set of them, has the headroom for {from}'s traffic ({load:.0} CPU%·agents) within the {:.0}% CPU limit.",
            cap.env(from).unwrap_or("unlabelled"),
            cap.limits.cpu_pct
        ),
    };
    let mut inf = Infeasible::new(reason);
    if let Some(split) = &short.split {
        let parts: Vec<String> = split.iter().map(|r| format!("{} {}%", r.region, r.weight)).collect();
        inf.reasons.push(format!("A split fits: {}.", parts.join(", ")));
        inf = inf.or(format!("fail over {from} to the healthiest regions"));
    }
    if let Some(to) = to {
        let most = plan::partial_pct(cap, table, from, to);
        if most > 0 {
            inf = inf.or(format!("send {most}% of {from}'s traffic to {to}"));
        }
    }
    if let Some((best, pct)) = short.candidates.iter().find(|(r, _)| Some(r.as_str()) != to) {
        let most = plan::partial_pct(cap, table, from, best);
        if short.split.is_none() && most > 0 {
            inf = inf.or(format!("send {most}% of {from}'s traffic to {best}"));
        }
        let _ = pct;
    }
    // Another environment only when the operator names it, so it is offered by name,
    // after what stays in the environment.
    for r in short.elsewhere.iter().filter(|r| Some(r.as_str()) != to).take(2) {
        inf = inf.or(format!("fail over {from} to {r}"));
    }
    inf.or("show routing")
}

fn did_you_mean(said: &str, candidates: Vec<&str>) -> String {
    let near = suggest(said, candidates);
    if near.is_empty() {
        String::new()
    } else {
        format!(" Did you mean {}?", near.join(" or "))
    }
}

fn known_agent<'a>(name: &str, topo: &'a Topology) -> Result<&'a AgentView, Infeasible> {
    topo.agent(name).ok_or_else(|| {
        let candidates: Vec<&str> = topo.agents().iter().map(|a| a.name.as_str()).collect();
        let near = suggest(name, candidates.iter().copied());
        let mut inf =
            Infeasible::new(format!("There is no agent `{name}` in the fleet.{}", did_you_mean(name, candidates)));
        for n in near {
            inf = inf.or(format!("show agent {n}"));
        }
        inf
    })
}

fn known_region(name: &str, topo: &Topology) -> Result<(), Infeasible> {
    if topo.regions().iter().any(|r| r == name) {
        return Ok(());
    }
    let candidates: Vec<&str> = topo.regions().iter().map(String::as_str).collect();
    Err(Infeasible::new(format!(
        "There is no region `{name}`; the fleet has {}.{}",
        candidates.join(", "),
        did_you_mean(name, candidates.clone())
    )))
}

fn known_extension(name: &str, topo: &Topology) -> Result<(), Infeasible> {
    if topo.catalog().get(name).is_some() {
        return Ok(());
    }
    let candidates: Vec<&str> = topo.catalog().extensions().iter().map(|e| e.name.as_str()).collect();
    Err(Infeasible::new(format!(
        "The catalog has no extension `{name}`; it has {}.{}",
        candidates.join(", "),
        did_you_mean(name, candidates.clone())
    )))
}

fn check_scope_names(scope: &Scope, topo: &Topology) -> Result<(), Infeasible> {
    for sel in scope.selectors() {
        match sel {
            Selector::Region(r) => known_region(r, topo)?,
            Selector::Agent(a) => {
                known_agent(a, topo)?;
            }
            Selector::Zone(z) => {
                if !topo.zones().iter().any(|x| x == z) {
                    let candidates: Vec<&str> = topo.zones().iter().map(String::as_str).collect();
                    return Err(Infeasible::new(format!("There is no zone `{z}`.{}", did_you_mean(z, candidates))));
                }
            }
            Selector::Env(e) => {
                let values = topo.label_values("env");
                if !values.iter().any(|v| v == e) {
                    return Err(Infeasible::new(format!(
                        "No agent has env `{e}`; the fleet has {}.",
                        values.join(", ")
                    )));
                }
            }
            Selector::Tier(t) => {
                let values = topo.label_values("tier");
                if !values.iter().any(|v| v == t) {
                    return Err(Infeasible::new(format!(
                        "No agent is in tier `{t}`; the fleet has {}.",
                        values.join(", ")
                    )));
                }
            }
            Selector::Capability(c) => {
                let values = topo.capabilities();
                if !values.iter().any(|v| v == c) {
                    return Err(Infeasible::new(format!(
                        "No agent has the capability `{c}`; the fleet has {}.",
                        if values.is_empty() { "none".to_string() } else { values.join(", ") }
                    )));
                }
            }
            Selector::Fleet => {}
        }
    }
    Ok(())
}

fn names(agents: &[&AgentView]) -> String {
    let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
    crate::words::and_more(&names, 6)
}

fn check_deploy(ext: &str, ver: &str, scope: &Scope, topo: &Topology, busy: &Busy) -> Result<Feasible, Infeasible> {
    known_extension(ext, topo)?;
    let entry = topo.catalog().get(ext).ok_or_else(|| Infeasible::new(format!("no extension `{ext}`")))?;
    if !entry.has_version(ver) {
        let known = entry.version_strings();
        let mut inf = Infeasible::new(match entry.resolve_version(ver) {
            VersionMatch::Ambiguous(fits) => {
                format!("`{ver}` could mean {} of {ext}; say which.", fits.join(" or "))
            }
            _ => format!("The catalog has no version {ver} of {ext}; it has {}.", known.join(", ")),
        });
        if let Some(latest) = entry.latest() {
            inf = inf.or(format!("roll out {ext} {latest} to {}", scope_words(scope)));
        }
        return Err(inf);
    }
    let in_scope_i: Vec<Indexed<'_>> = topo.select_indexed(scope).collect();
    let in_scope: Vec<&AgentView> = in_scope_i.iter().map(|(_, a)| *a).collect();
    if in_scope.is_empty() {
        return Err(Infeasible::new(format!("No agent matches {scope}."))
            .or(format!("show topology of {}", scope_words(scope))));
    }

    // The regions in scope, by index; region health itself is precomputed.
    let mut in_region = vec![false; topo.regions().len()];
    for r in in_scope_i.iter().filter_map(|(i, _)| topo.agent_region(*i)) {
        if let Some(present) = in_region.get_mut(r) {
            *present = true;
        }
    }
    let partitioned: Vec<&str> = topo
        .regions()
        .iter()
        .zip(&in_region)
        .filter(|(r, present)| **present && topo.region_health(r) == RegionHealth::Partitioned)
        .map(|(r, _)| r.as_str())
        .collect();
    if !partitioned.is_empty() {
        // Only looks: another region is not what the operator asked for, and rolling
        // out there (often production) is a risk nobody meant to take.
        let inf = Infeasible::new(format!(
            "{} is partitioned: Parley cannot reach any of its agents, so it cannot install or verify anything there.",
            partitioned.join(", ")
        ))
        .or(format!("how healthy is {}?", partitioned[0]))
        .or("show routing");
        return Err(inf);
    }

    let mut reasons = Vec::new();
    let mut alternatives = Vec::new();

    let lacking: Vec<&AgentView> = if entry.requires.is_empty() {
        Vec::new()
    } else {
        in_scope.iter().copied().filter(|a| entry.requires.iter().any(|c| !a.has_capability(c))).collect()
    };
    if !lacking.is_empty() {
        let caps = entry.requires.join(", ");
        reasons.push(format!(
            "{ext} needs {caps}, which {} of the {} agents in scope lack: {}.",
            lacking.len(),
            in_scope.len(),
            names(&lacking)
        ));
        let able = in_scope.len() - lacking.len();
        if able > 0 {
            alternatives.push(format!("roll out {ext} {ver} to the {caps} agents in {}", scope_words(scope)));
        }
    }

    for dep in &entry.depends {
        // Each distinct installed version is parsed and matched once, then looked up
        // per agent by its id.
        let column = topo.extension_column(&dep.name);
        let fits: Vec<bool> = column
            .map(|c| c.versions().iter().map(|v| v.parse().ok().is_some_and(|v| dep.req.matches(&v))).collect())
            .unwrap_or_default();
        let unmet: Vec<&AgentView> = in_scope_i
            .iter()
            .filter(|(i, _)| {
                !column.and_then(|c| c.id_of(*i)).is_some_and(|id| fits.get(id as usize).copied().unwrap_or(false))
            })
            .map(|(_, a)| *a)
            .collect();
        if !unmet.is_empty() {
            reasons.push(format!(
                "{ext} needs {} {} on the same agents; {} of them do not have it: {}.",
                dep.name,
                dep.req,
                unmet.len(),
                names(&unmet)
            ));
            if let Some(latest) = topo.catalog().get(&dep.name).and_then(|d| d.latest()) {
                alternatives.push(format!("roll out {} {latest} to {} first", dep.name, scope_words(scope)));
            }
        }
    }

    let unavailable: Vec<&AgentView> = in_scope.iter().copied().filter(|a| !a.is_available()).collect();
    if !unavailable.is_empty() {
        let detail: Vec<String> = unavailable
            .iter()
            .take(6)
            .map(|a| {
                if a.liveness.is_reachable() {
                    format!("{} is {}", a.name, a.state.as_str())
                } else {
                    format!("{} is {}", a.name, a.liveness.as_str())
                }
            })
            .collect();
        reasons.push(format!(
            "{} of the {} agents in scope cannot take a rollout now: {}.",
            unavailable.len(),
            in_scope.len(),
            detail.join(", ")
        ));
        for zone in topo.zones() {
            let zone_agents: Vec<&&AgentView> = in_scope.iter().filter(|a| &a.zone == zone).collect();
            if !zone_agents.is_empty() && zone_agents.iter().all(|a| a.is_available()) {
                alternatives.push(format!("roll out {ext} {ver} to {zone}"));
            }
        }
        if let Some(a) = unavailable.iter().find(|a| a.liveness == Liveness::Down) {
            alternatives.push(format!("show agent {}", a.name));
        }
    }

    // Hashing every name costs more than the rest of a large check; skip it when no
    // rollout is active, which is the common case.
    let held: Vec<(&AgentView, &String)> = if busy.is_empty() {
        Vec::new()
    } else {
        in_scope.iter().filter_map(|a| busy.get(a.name.as_str()).map(|d| (*a, d))).collect()
    };
    if !held.is_empty() {
        let mut ids: Vec<&str> = held.iter().map(|(_, d)| d.as_str()).collect();
        ids.sort();
        ids.dedup();
        let agents: Vec<&AgentView> = held.iter().map(|(a, _)| *a).collect();
        reasons.push(format!(
            "{} still rolling out to {} of these agents ({}); one rollout at a time per agent.",
            ids.join(", "),
            agents.len(),
            names(&agents)
        ));
        alternatives.push(QUEUE_IT.to_string());
        alternatives.push(format!("show deployment {}", ids[0]));
        alternatives.push(format!("abort {}", ids[0]));
    }

    if !reasons.is_empty() {
        return Err(Infeasible { reasons, alternatives, queueable: !held.is_empty() });
    }

    let column = topo.extension_column(ext);
    let wanted = column.and_then(|c| c.version_id(ver));
    let (already, targets): (Vec<Indexed<'_>>, Vec<Indexed<'_>>) = in_scope_i
        .iter()
        .copied()
        .partition(|(i, _)| matches!((column, wanted), (Some(c), Some(id)) if c.runs(*i, id)));
    if targets.is_empty() {
        let mut inf = Infeasible::new(format!("All {} agents in {scope} already run {ext} {ver}.", already.len()));
        inf = inf.or(format!("find agents running {ext} {ver}"));
        return Err(inf);
    }
    let risk = risk_of(targets.iter().map(|(i, _)| (topo.agent_region(*i), topo.is_production(*i))), topo);
    let flapping: Vec<&AgentView> = targets.iter().map(|(_, a)| *a).filter(|a| a.flapping.is_some()).collect();
    let risk = with_flapping(risk, &flapping);
    Ok(Feasible {
        targets: targets.iter().map(|(_, a)| a.name.clone()).collect(),
        already: already.iter().map(|(_, a)| a.name.clone()).collect(),
        risk,
    })
}

fn check_agent_action(op: &Operation, name: &str, topo: &Topology, busy: &Busy) -> Result<Feasible, Infeasible> {
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

/// Why a rollout to `targets` needs confirmation, if it does: production agents, or
/// more than a quarter of any region's agents.
pub fn deploy_risk(targets: &[&AgentView], topo: &Topology) -> Option<String> {
    let risk = risk_of(
        targets.iter().map(|a| (topo.regions().iter().position(|r| *r == a.region), a.env() == Some("production"))),
        topo,
    );
    let flapping: Vec<&AgentView> = targets.iter().copied().filter(|a| a.flapping.is_some()).collect();
    with_flapping(risk, &flapping)
}

/// A rollout into agents that keep dropping out is warned about and confirmed, even
/// where it would otherwise start at once: the last poll caught them answering, but
/// an install or a health gate on them may fail for no fault of the version.
fn with_flapping(risk: Option<String>, flapping: &[&AgentView]) -> Option<String> {
    let warning = match flapping {
        [] => return risk,
        [one] => format!("{} is flapping (it keeps dropping out), so installing or checking it may fail", one.name),
        many => {
            format!("{} targets are flapping ({}), so installing or checking them may fail", many.len(), names(many))
        }
    };
    Some(match risk {
        Some(r) => format!("{r}; {warning}"),
        None => warning,
    })
}

/// [`deploy_risk`] over each target's region index (in `Topology::regions`) and
/// whether it serves production, which a large check reads from the snapshot's columns.
fn risk_of(targets: impl Iterator<Item = (Option<usize>, bool)>, topo: &Topology) -> Option<String> {
    let mut why = Vec::new();
    let mut prod = 0usize;
    let mut hits = vec![0usize; topo.regions().len()];
    for (region, production) in targets {
        prod += usize::from(production);
        if let Some(h) = region.and_then(|r| hits.get_mut(r)) {
            *h += 1;
        }
    }
    if prod > 0 {
        why.push(format!("it touches {prod} production agent{}", crate::words::s(prod)));
    }
    for (region, hit) in topo.regions().iter().zip(hits) {
        let total = topo.region_size(region);
        if total > 0 && hit * 4 > total {
            why.push(format!("it changes {hit} of {total} agents in {region} (more than a quarter)"));
        }
    }
    if why.is_empty() {
        None
    } else {
        Some(why.join("; "))
    }
}

/// A scope as words that the grammar reads back ("eu-west", "gpu agents in us-west").
pub fn scope_words(scope: &Scope) -> String {
    if scope.is_fleet() {
        return "the whole fleet".to_string();
    }
    let mut parts = Vec::new();
    for sel in scope.selectors() {
        parts.push(match sel {
            Selector::Region(v) | Selector::Zone(v) | Selector::Agent(v) => v.clone(),
            Selector::Env(v) => v.clone(),
            Selector::Capability(v) => format!("{v} agents"),
            Selector::Tier(v) => format!("{v} agents"),
            Selector::Fleet => continue,
        });
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::test_support::demo_topology;

    fn deploy(ext: &str, ver: &str, scope: Scope) -> Operation {
        Operation::Deploy {
            extension: Some(ext.into()),
            version: Some(ver.into()),
            scope: Some(scope),
            strategy: None,
            require_approval: None,
            max_failures: None,
            queue: false,
            gate: Vec::new(),
        }
    }

    #[test]
    fn a_staging_region_rollout_targets_its_twelve_agents_and_is_risky_by_size() {
        let t = demo_topology();
        let ok = check(&deploy("auth-filter", "2.1.0", Scope::region("ap-south")), &t, &Busy::new()).unwrap();
        assert_eq!(ok.targets.len(), 12);
        assert_eq!(ok.risk.as_deref(), Some("it changes 12 of 12 agents in ap-south (more than a quarter)"));
    }

    #[test]
    fn model_server_needs_gpu() {
        let t = demo_topology();
        let err = check(&deploy("model-server", "0.4.0", Scope::region("eu-west")), &t, &Busy::new()).unwrap_err();
        assert_eq!(
            err.reasons,
            ["model-server needs gpu, which 10 of the 12 agents in scope lack: edge-13, edge-14, edge-15, edge-16, edge-17, edge-18 and 4 more."]
        );
        assert_eq!(err.alternatives, ["roll out model-server 0.4.0 to the gpu agents in eu-west"]);
    }

    #[test]
    fn unknown_versions_and_names_get_alternatives() {
        let t = demo_topology();
        let err = check(&deploy("auth-filter", "3.0", Scope::region("eu-west")), &t, &Busy::new()).unwrap_err();
        assert_eq!(err.reasons, ["The catalog has no version 3.0 of auth-filter; it has 1.0.0, 2.0.3, 2.1.0."]);
        assert_eq!(err.alternatives, ["roll out auth-filter 2.1.0 to eu-west"]);
        let err = check(&Operation::Drain { agent: Some("edge-70".into()) }, &t, &Busy::new()).unwrap_err();
        assert!(
            err.reasons[0].starts_with("There is no agent `edge-70` in the fleet. Did you mean edge-7"),
            "{:?}",
            err.reasons
        );
    }

    #[test]
    fn overlapping_rollouts_are_refused() {
        let t = demo_topology();
        let busy: Busy = [("edge-19".to_string(), "d-4".to_string())].into_iter().collect();
        let err = check(&deploy("auth-filter", "2.1.0", Scope::region("ap-south")), &t, &busy).unwrap_err();
        assert_eq!(
            err.reasons,
            ["d-4 still rolling out to 1 of these agents (edge-19); one rollout at a time per agent."]
        );
        assert_eq!(err.alternatives, ["queue it", "show deployment d-4", "abort d-4"]);
    }

    fn with_agents(t: &Topology, change: impl Fn(&mut AgentView)) -> Topology {
        let mut agents = t.agents().to_vec();
        agents.iter_mut().for_each(change);
        Topology::new(agents, t.catalog_arc(), t.refreshed_at())
    }

    #[test]
    fn waf_rules_needs_auth_filter_two_on_the_same_agents() {
        let t = demo_topology();
        assert!(check(&deploy("waf-rules", "2024.2", Scope::region("ap-south")), &t, &Busy::new()).is_ok());
        let t = with_agents(&t, |a| {
            if a.name == "edge-19" || a.name == "gpu-8" {
                a.extensions.insert("auth-filter".into(), "1.0.0".into());
            }
        });
        let err = check(&deploy("waf-rules", "2024.2", Scope::region("ap-south")), &t, &Busy::new()).unwrap_err();
        assert_eq!(
            err.reasons,
            ["waf-rules needs auth-filter >= 2.0 on the same agents; 2 of them do not have it: edge-19, gpu-8."]
        );
        assert_eq!(err.alternatives, ["roll out auth-filter 2.1.0 to ap-south first"]);
    }

    #[test]
    fn a_partitioned_region_is_refused_with_healthy_alternatives() {
        let t = with_agents(&demo_topology(), |a| {
            if a.region == "eu-west" {
                a.liveness = Liveness::Down;
            }
        });
        let err = check(&deploy("auth-filter", "2.1.0", Scope::region("eu-west")), &t, &Busy::new()).unwrap_err();
        assert_eq!(
            err.reasons,
            ["eu-west is partitioned: Parley cannot reach any of its agents, so it cannot install or verify anything there."]
        );
        assert_eq!(err.alternatives, ["how healthy is eu-west?", "show routing"]);
    }

    #[test]
    fn a_failback_returns_only_drained_agents_and_is_risky() {
        use crate::agent::protocol::ServingState as S;
        let t = with_agents(&demo_topology(), |a| match a.name.as_str() {
            "edge-13" => a.state = S::Cordoned,
            "edge-14" => a.state = S::Active,
            _ if a.region == "eu-west" => a.state = S::Drained,
            _ => {}
        });
        let table = RoutingTable::identity(t.regions());
        let table =
            crate::routing::table::failover(&table, "eu-west", &[crate::routing::table::Route::new("us-east", 100)])
                .unwrap();
        let cap = Capacity::from_topology(&t, Limits::default());
        let ok = check_traffic(&Operation::Failback { region: Some("eu-west".into()) }, &t, &table, &cap).unwrap();
        assert_eq!(ok.targets.len(), 10);
        assert!(!ok.targets.iter().any(|n| n == "edge-13" || n == "edge-14"), "{:?}", ok.targets);
        assert_eq!(
            ok.risk.as_deref(),
            Some("a failback sends all of eu-west's traffic back to eu-west (now served by us-east 100)")
        );
    }

    #[test]
    fn a_partitioned_region_fails_over_within_production_and_drains_nobody() {
        let t = with_agents(&demo_topology(), |a| {
            if a.region == "eu-west" {
                a.liveness = Liveness::Down;
            }
        });
        let table = RoutingTable::identity(t.regions());
        let cap = Capacity::from_topology(&t, Limits::default());
        let op = Operation::Failover { from: Some("eu-west".into()), to: None };
        let ok = check_traffic(&op, &t, &table, &cap).unwrap();
        assert!(ok.targets.is_empty());
        assert_eq!(
            ok.risk.as_deref(),
            Some("a failover moves all of eu-west's traffic (us-east 100%; projected CPU us-east 60% of a 80% limit)")
        );
        // us-east failed over into us-west leaves no production room: staging ap-south
        // has it, and is offered by name, never taken by itself.
        let route = |r: &str| [crate::routing::table::Route::new(r, 100)];
        let full = crate::routing::table::failover(&table, "us-east", &route("us-west")).unwrap();
        let err = check_traffic(&op, &t, &full, &cap).unwrap_err();
        assert!(err.reasons[0].starts_with("No healthy production region, nor any set of them,"), "{err:?}");
        assert_eq!(
            err.alternatives,
            ["send 66% of eu-west's traffic to us-west", "fail over eu-west to ap-south", "show routing"]
        );
        let named = Operation::Failover { from: Some("eu-west".into()), to: Some("ap-south".into()) };
        let ok = check_traffic(&named, &t, &full, &cap).unwrap();
        assert!(ok.risk.unwrap().ends_with("; ap-south is staging, not production like eu-west"));
        // With no other production region serving at all, it says so.
        let none = crate::routing::table::failover(&full, "us-west", &route("ap-south")).unwrap();
        let err = check_traffic(&op, &t, &none, &cap).unwrap_err();
        assert_eq!(
            err.reasons,
            ["No other production region is healthy and serving its own traffic, so none can take eu-west's traffic; Parley does not move it into another environment by itself."]
        );
    }

    #[test]
    fn a_rollout_into_a_flapping_agent_is_warned_and_confirmed() {
        use crate::topology::Flapping;
        let edge_19 = Scope(vec![Selector::Agent("edge-19".into())]);
        // One staging agent: not risky, so it would start at once.
        let ok = check(&deploy("auth-filter", "2.1.0", edge_19.clone()), &demo_topology(), &Busy::new()).unwrap();
        assert_eq!(ok.risk, None);
        let flap = Some(Flapping { changes: 30, window: std::time::Duration::from_secs(60) });
        let t = with_agents(&demo_topology(), |a| {
            if a.name == "edge-19" || a.name == "edge-20" {
                a.flapping = flap;
            }
        });
        let ok = check(&deploy("auth-filter", "2.1.0", edge_19), &t, &Busy::new()).unwrap();
        assert_eq!(
            ok.risk.as_deref(),
            Some("edge-19 is flapping (it keeps dropping out), so installing or checking it may fail")
        );
        let ok = check(&deploy("auth-filter", "2.1.0", Scope::region("ap-south")), &t, &Busy::new()).unwrap();
        assert_eq!(
            ok.risk.as_deref(),
            Some(
                "it changes 12 of 12 agents in ap-south (more than a quarter); 2 targets are flapping (edge-19, \
                 edge-20), so installing or checking them may fail"
            )
        );
        let targets: Vec<&AgentView> = ["edge-19"].iter().filter_map(|n| t.agent(n)).collect();
        assert_eq!(
            deploy_risk(&targets, &t).as_deref(),
            Some("edge-19 is flapping (it keeps dropping out), so installing or checking it may fail")
        );
    }

    #[test]
    fn down_and_cordoned_agents_block_a_rollout_and_whole_zones_are_offered() {
        let t = with_agents(&demo_topology(), |a| {
            if a.name == "edge-13" {
                a.liveness = Liveness::Down;
            }
            if a.name == "core-9" {
                a.state = crate::agent::protocol::ServingState::Cordoned;
            }
        });
        let err = check(&deploy("auth-filter", "2.1.0", Scope::region("eu-west")), &t, &Busy::new()).unwrap_err();
        assert_eq!(
            err.reasons,
            ["2 of the 12 agents in scope cannot take a rollout now: edge-13 is down, core-9 is cordoned."]
        );
        assert_eq!(err.alternatives, ["roll out auth-filter 2.1.0 to eu-west-b", "show agent edge-13"]);
    }
}
