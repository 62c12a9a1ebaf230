//! The traffic family: `failover`, `failback`, `shift_traffic` and `show_routing`:
//! their checks against the routing table and the headroom model
//! (`routing::capacity`), confirmation lines, execution (through the router, which
//! journals every table) and replies.

use serde_json::json;

use crate::feasibility::{known_region, plain, Feasible, Infeasible};
use crate::ops::{Actor, Operation};
use crate::reply::{Outcome, Reply, Table};
use crate::routing::capacity::{Capacity, Limits};
use crate::routing::plan;
use crate::routing::table::RoutingTable;
use crate::services::Services;
use crate::topology::{AgentName, Liveness, RegionHealth, Topology};

/// Checks a traffic operation as if no region had failed over (without the router's
/// table), with the default limits.
pub(super) fn check(op: &Operation, topo: &Topology) -> Result<Feasible, Infeasible> {
    let table = RoutingTable::identity(topo.regions());
    check_traffic(op, topo, &table, &Capacity::from_topology(topo, Limits::default()))
}

/// The check the dialog runs: against the router's table and its headroom model.
pub(super) fn check_live(services: &Services, op: &Operation, topo: &Topology) -> Result<Feasible, Infeasible> {
    let router = &services.router;
    check_traffic(op, topo, &router.table(), &router.capacity(topo))
}

/// The confirmation line. The counts are the agents the check found the change can
/// reach, never a promise of work that cannot happen.
pub(super) fn summary(op: &Operation, f: &Feasible) -> Option<String> {
    Some(match op {
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
        _ => return None,
    })
}

/// Carries out one of this family's operations.
pub(super) async fn run(services: &Services, actor: &Actor, op: &Operation, utterance: &str) -> Reply {
    match op {
        Operation::Failover { from: Some(from), to } => failover(services, actor, from, to.as_deref(), utterance).await,
        Operation::Failback { region: Some(r) } => failback(services, actor, r, utterance).await,
        Operation::ShiftTraffic { from: Some(from), to: Some(to), percent: Some(p) } => {
            match services.router.shift(from, to, *p, actor, utterance).await {
                Ok(applied) => Reply::new(
                    Outcome::Done,
                    format!(
                        "Sent {p}% of {from}'s traffic to {to}: {from} -> {} (routing version {}).",
                        applied.after.describe(from),
                        applied.version
                    ),
                )
                .with_details(json!({ "before": applied.before, "after": applied.after, "version": applied.version }))
                .with_follow_ups(["show routing".to_string(), format!("fail back {from}")]),
                Err(e) => Reply::new(Outcome::Failed, format!("The routing table was not changed: {e}.")),
            }
        }
        Operation::ShowRouting { .. } => show_routing(services).await,
        other => super::render::not_yet(other),
    }
}

/// Checks a traffic operation against the routing table and the headroom model
/// (`routing::capacity`): the regions exist and differ, a target is healthy, serving
/// and has the headroom, a failback goes only into a healthy region.
pub(super) fn check_traffic(
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

/// Journals the new table, then drains the source's agents all at once. The time told
/// is measured on the clock (tokio's, so a paused test clock measures too) from the
/// confirmed request to the reply, the fresh poll included; the counts are what the
/// agents answered.
async fn failover(services: &Services, actor: &Actor, from: &str, to: Option<&str>, utterance: &str) -> Reply {
    let started = tokio::time::Instant::now();
    let applied = match services.router.failover(from, to, actor, utterance).await {
        Ok(a) => a,
        Err(e) => return Reply::new(Outcome::Failed, format!("Nothing was failed over: {e}.")).feasible(false),
    };
    let moved = services.router.set_serving(from, false, actor).await;
    // A poll only shows what changed; with no agent drained it would only wait on
    // agents that do not answer.
    if !moved.ok.is_empty() {
        services.poller.refresh().await;
    }
    let took = started.elapsed();
    let size = services.topology.snapshot().region_size(from);
    let targets: Vec<&str> = applied.after.routes(from).iter().map(|r| r.region.as_str()).collect();
    let drained = match (moved.ok.len(), moved.failed.len()) {
        (0, 0) => format!("none of its {size} agents answers, so none was drained"),
        (n, _) if n == size => format!("its {n} agent{} drained", crate::words::s(n)),
        (n, _) => format!("{n} of its {size} agents drained"),
    };
    let mut message = format!(
        "Failed over {from} to {} in {:.1} s: {from} -> {}; {drained} (routing version {}).",
        targets.join(" and "),
        took.as_secs_f64(),
        applied.after.describe(from),
        applied.version
    );
    if !moved.failed.is_empty() {
        let names: Vec<String> = moved.failed.iter().take(4).map(|(n, e)| format!("{n} ({e})")).collect();
        message.push_str(&format!(" {} could not be drained: {}.", moved.failed.len(), names.join(", ")));
    }
    Reply::new(Outcome::Done, message)
        .with_details(json!({
            "before": applied.before, "after": applied.after, "version": applied.version,
            "drained": moved.ok, "not_drained": moved.failed.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            "elapsed_ms": took.as_millis() as u64,
        }))
        .with_follow_ups(["show routing".to_string(), format!("how healthy is {from}?"), format!("fail back {from}")])
}

/// Journals the table, then returns the agents a drain took out to service; timed and
/// counted as [`failover`] is.
async fn failback(services: &Services, actor: &Actor, region: &str, utterance: &str) -> Reply {
    let started = tokio::time::Instant::now();
    let applied = match services.router.failback(region, actor, utterance).await {
        Ok(a) => a,
        Err(e) => return Reply::new(Outcome::Failed, format!("Nothing was failed back: {e}.")).feasible(false),
    };
    let moved = services.router.set_serving(region, true, actor).await;
    if !moved.ok.is_empty() {
        services.poller.refresh().await;
    }
    let took = started.elapsed();
    Reply::new(
        Outcome::Done,
        format!(
            "Failed back {region} in {:.1} s: it serves its own traffic again; {} (routing version {}).",
            took.as_secs_f64(),
            crate::routing::returned_words(&moved),
            applied.version
        ),
    )
    .with_details(json!({
        "before": applied.before, "after": applied.after, "version": applied.version, "uncordoned": moved.ok,
        "not_uncordoned": moved.failed.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "elapsed_ms": took.as_millis() as u64,
    }))
    .with_follow_ups(["show routing".to_string(), format!("how healthy is {region}?")])
}

async fn show_routing(services: &Services) -> Reply {
    let snap = services.router.snapshot();
    let mut table = Table::new(format!("Routing (version {})", snap.version), &["Region", "Served by"]);
    for region in snap.table.regions.keys() {
        table.push(vec![region.clone(), snap.table.describe(region)]);
    }
    let history = services.router.history(10).await.unwrap_or_default();
    // One table for every front-end: the current routes, then the recent changes.
    for c in history.iter().rev() {
        table.push(vec![
            format!("v{} {}", c.version, c.at.format("%H:%M:%S")),
            format!("{} by {} ({}): {}", c.kind, c.actor, c.frontend, c.reason),
        ]);
    }
    let moved: Vec<String> = snap
        .table
        .regions
        .keys()
        .filter(|r| snap.table.routes(r) != [crate::routing::table::Route::new(r.as_str(), 100)])
        .map(|r| format!("{r} -> {}", snap.table.describe(r)))
        .collect();
    let message = if moved.is_empty() {
        format!("Every region serves its own traffic (routing version {}).", snap.version)
    } else {
        format!("{} (routing version {}); every other region serves itself.", moved.join("; "), snap.version)
    };
    Reply::new(Outcome::Answered, message)
        .with_table(table)
        .with_details(json!({ "regions": snap.table.regions, "version": snap.version, "updated_at": snap.updated_at, "history": history }))
        .with_follow_ups(["how healthy is the fleet?"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::test_support::demo_topology;
    use crate::topology::AgentView;

    fn with_agents(t: &Topology, change: impl Fn(&mut AgentView)) -> Topology {
        let mut agents = t.agents().to_vec();
        agents.iter_mut().for_each(change);
        Topology::new(agents, t.catalog_arc(), t.refreshed_at())
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
}
