//! Which regions take a failed-over region's traffic, and in what shares.
//!
//! Loads are in "CPU percent times agents", so regions of different sizes compare:
//! the traffic a failover moves is everything the source serves (its own traffic and
//! whatever other regions had routed into it), and a target's spare capacity is its
//! CPU limit minus what it already serves, both over its agents.

use super::capacity::Capacity;
use super::table::{apportion, Route, RoutingTable};

/// CPU%·agents a failover of `from` moves: all of `from`'s own traffic plus the
/// shares other regions send into it.
pub fn moving_load(cap: &Capacity, table: &RoutingTable, from: &str) -> f64 {
    let own = cap.loads.get(from).map_or(0.0, |s| s.demand_cpu * s.agents as f64);
    let inbound: f64 = table
        .regions
        .iter()
        .filter(|(src, _)| src.as_str() != from)
        .filter_map(|(src, _)| {
            cap.loads.get(src).map(|s| s.demand_cpu * s.agents as f64 * f64::from(table.weight(src, from)) / 100.0)
        })
        .sum();
    own + inbound
}

/// CPU%·agents `target` could still take once `from`'s own routes are taken off it.
pub fn spare(cap: &Capacity, table: &RoutingTable, from: &str, target: &str) -> f64 {
    let (Some(t), Some(s)) = (cap.loads.get(target), cap.loads.get(from)) else {
        return 0.0;
    };
    let served = cap.projected_cpu(table, target) * t.agents as f64
        - s.demand_cpu * s.agents as f64 * f64::from(table.weight(from, target)) / 100.0;
    (cap.limits.cpu_pct * t.agents as f64 - served).max(0.0)
}

/// Why no plan fits, with what would.
#[derive(Debug, Clone, PartialEq)]
pub struct Shortfall {
    /// Eligible targets with the whole percentage of the moving traffic each could
    /// take alone, largest first.
    pub candidates: Vec<(String, u8)>,
    /// A split over several eligible regions that fits, if there is one.
    pub split: Option<Vec<Route>>,
    /// Regions of another environment that could take all of it alone, most spare
    /// first: never chosen by themselves, only when the operator names one.
    pub elsewhere: Vec<String>,
}

/// Regions other than `from` that may take its traffic when Parley chooses: eligible,
/// and in `from`'s environment (production traffic stays in production).
fn eligible_for(cap: &Capacity, table: &RoutingTable, from: &str) -> Vec<(String, f64)> {
    let mut eligible: Vec<(String, f64)> = cap
        .loads
        .keys()
        .filter(|r| r.as_str() != from && cap.eligible(table, r) && cap.same_env(from, r))
        .map(|r| (r.clone(), spare(cap, table, from, r)))
        .collect();
    eligible.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    eligible
}

/// The targets for a failover of `from`: `to` alone when named (in any environment:
/// the operator chose it), else the eligible region of `from`'s environment with the
/// most spare capacity, else the fewest such regions that together fit, weighted by
/// their spare capacity.
pub fn choose(cap: &Capacity, table: &RoutingTable, from: &str, to: Option<&str>) -> Result<Vec<Route>, Shortfall> {
    let load = moving_load(cap, table, from);
    let eligible = match to {
        Some(t) if t != from && cap.eligible(table, t) => vec![(t.to_string(), spare(cap, table, from, t))],
        Some(_) => Vec::new(),
        None => eligible_for(cap, table, from),
    };
    let mut eligible = eligible;
    if to.is_some() {
        // A named target is judged alone, but what else would fit is still offered.
        for e in eligible_for(cap, table, from) {
            if !eligible.iter().any(|(r, _)| *r == e.0) {
                eligible.push(e);
            }
        }
        eligible.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    let pct = |s: f64| if load <= 0.0 { 100 } else { (s / load * 100.0).floor().clamp(0.0, 100.0) as u8 };
    let candidates: Vec<(String, u8)> = eligible.iter().map(|(r, s)| (r.clone(), pct(*s))).collect();
    let mut others: Vec<(String, f64)> = cap
        .loads
        .keys()
        .filter(|r| r.as_str() != from && !cap.same_env(from, r) && cap.eligible(table, r))
        .map(|r| (r.clone(), spare(cap, table, from, r)))
        .filter(|(_, s)| *s >= load)
        .collect();
    others.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let elsewhere: Vec<String> = others.into_iter().map(|(r, _)| r).collect();
    // A split is over regions of `from`'s environment only, like any choice Parley makes.
    let own: Vec<(String, f64)> = eligible.iter().filter(|(r, _)| cap.same_env(from, r)).cloned().collect();
    let mut split = None;
    let mut sum = 0.0;
    for k in 0..own.len() {
        sum += own[k].1;
        if sum >= load && k > 0 {
            split = Some(apportion(&own[..=k]));
            break;
        }
    }
    match to {
        Some(t) => match eligible.iter().find(|(r, _)| r == t) {
            Some((_, s)) if *s >= load => Ok(vec![Route::new(t, 100)]),
            _ => Err(Shortfall { candidates, split, elsewhere }),
        },
        None => match own.first() {
            Some((r, s)) if *s >= load => Ok(vec![Route::new(r.clone(), 100)]),
            _ => split.clone().ok_or(Shortfall { candidates, split, elsewhere }),
        },
    }
}

/// Where a failed target's traffic goes when nothing fits: the eligible regions of its
/// environment with the most spare capacity first, by spare capacity; failing that
/// those regions evenly. Empty when no region of its environment is eligible: Parley
/// never moves traffic into another environment by itself.
pub fn cascade(cap: &Capacity, table: &RoutingTable, failed: &str) -> Vec<Route> {
    if let Ok(routes) = choose(cap, table, failed, None) {
        return routes;
    }
    let eligible: Vec<(String, f64)> =
        eligible_for(cap, table, failed).into_iter().map(|(r, s)| (r, s.max(1.0))).collect();
    apportion(&eligible)
}

/// The largest whole percentage of `from`'s own traffic `to` could take by a shift.
pub fn partial_pct(cap: &Capacity, table: &RoutingTable, from: &str, to: &str) -> u8 {
    if !cap.eligible(table, to) {
        return 0;
    }
    let Some(s) = cap.loads.get(from) else { return 0 };
    let unit = s.demand_cpu * s.agents as f64 / 100.0;
    if unit <= 0.0 {
        return 100;
    }
    (spare(cap, table, from, to) / unit).floor().clamp(0.0, 100.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::capacity::Limits;
    use crate::routing::table::failover;
    use crate::topology::test_support::demo_topology;

    #[test]
    fn a_full_target_is_refused_and_a_split_offered() {
        // Every region production, so that all of them may share the traffic.
        let mut agents = demo_topology().agents().to_vec();
        agents.iter_mut().for_each(|a| {
            a.labels.insert("env".into(), "production".into());
        });
        let topo = crate::topology::Topology::new(agents, demo_topology().catalog_arc(), None);
        let cap = Capacity::from_topology(&topo, Limits::default());
        let t = RoutingTable::identity(topo.regions());
        let first = choose(&cap, &t, "eu-west", Some("us-east")).unwrap();
        let t = failover(&t, "eu-west", &first).unwrap();
        let refused = choose(&cap, &t, "us-west", Some("us-east")).unwrap_err();
        let split = refused.split.unwrap();
        assert!(split.len() >= 2 && split.iter().all(|r| r.region != "eu-west"), "{split:?}");
        assert!(partial_pct(&cap, &t, "us-west", "us-east") < 100);
        assert_eq!(choose(&cap, &t, "us-west", None).unwrap(), [Route::new("ap-south", 100)]);
    }

    #[test]
    fn production_traffic_goes_to_staging_only_when_the_operator_names_it() {
        let topo = demo_topology();
        let cap = Capacity::from_topology(&topo, Limits::default());
        let t = RoutingTable::identity(topo.regions());
        let t = failover(&t, "eu-west", &[Route::new("us-east", 100)]).unwrap();
        // ap-south (staging) has the room, but production traffic stays in production
        // unless the operator names it.
        let auto = choose(&cap, &t, "us-west", None).unwrap_err();
        assert_eq!(auto.candidates.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>(), ["us-east"]);
        assert_eq!(auto.split, None);
        assert_eq!(auto.elsewhere, ["ap-south"]);
        assert_eq!(choose(&cap, &t, "us-west", Some("ap-south")).unwrap(), [Route::new("ap-south", 100)]);
    }

    #[test]
    fn a_partitioned_production_region_fails_over_to_production_only() {
        let mut agents = demo_topology().agents().to_vec();
        for a in agents.iter_mut().filter(|a| a.region == "eu-west") {
            a.liveness = crate::topology::Liveness::Down;
        }
        let topo = crate::topology::Topology::new(agents, demo_topology().catalog_arc(), None);
        let cap = Capacity::from_topology(&topo, Limits::default());
        let t = RoutingTable::identity(topo.regions());
        let chosen = choose(&cap, &t, "eu-west", None).unwrap();
        assert_eq!(chosen, [Route::new("us-east", 100)], "never ap-south, which is staging");
        assert_eq!(cascade(&cap, &t, "eu-west"), [Route::new("us-east", 100)]);
    }
}
