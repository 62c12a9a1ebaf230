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
}

/// The targets for a failover of `from`: `to` alone when named, else the eligible
/// region with the most spare capacity, else the fewest eligible regions that
/// together fit, weighted by their spare capacity.
pub fn choose(cap: &Capacity, table: &RoutingTable, from: &str, to: Option<&str>) -> Result<Vec<Route>, Shortfall> {
    let load = moving_load(cap, table, from);
    let mut eligible: Vec<(String, f64)> = cap
        .loads
        .keys()
        .filter(|r| r.as_str() != from && cap.eligible(table, r))
        .map(|r| (r.clone(), spare(cap, table, from, r)))
        .collect();
    eligible.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let pct = |s: f64| if load <= 0.0 { 100 } else { (s / load * 100.0).floor().clamp(0.0, 100.0) as u8 };
    let candidates: Vec<(String, u8)> = eligible.iter().map(|(r, s)| (r.clone(), pct(*s))).collect();
    let mut split = None;
    let mut sum = 0.0;
    for k in 0..eligible.len() {
        sum += eligible[k].1;
        if sum >= load && k > 0 {
            split = Some(apportion(&eligible[..=k]));
            break;
        }
    }
    match to {
        Some(t) => match eligible.iter().find(|(r, _)| r == t) {
            Some((_, s)) if *s >= load => Ok(vec![Route::new(t, 100)]),
            _ => Err(Shortfall { candidates, split }),
        },
        None => match eligible.first() {
            Some((r, s)) if *s >= load => Ok(vec![Route::new(r.clone(), 100)]),
            _ => split.clone().ok_or(Shortfall { candidates, split }),
        },
    }
}

/// Where a failed target's traffic goes when nothing fits: the eligible regions with
/// the most spare capacity first, by spare capacity; failing that the eligible regions
/// evenly. Empty when no region is eligible at all.
pub fn cascade(cap: &Capacity, table: &RoutingTable, failed: &str) -> Vec<Route> {
    if let Ok(routes) = choose(cap, table, failed, None) {
        return routes;
    }
    let eligible: Vec<(String, f64)> = cap
        .loads
        .keys()
        .filter(|r| r.as_str() != failed && cap.eligible(table, r))
        .map(|r| (r.clone(), spare(cap, table, failed, r).max(1.0)))
        .collect();
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
        let topo = demo_topology();
        let cap = Capacity::from_topology(&topo, Limits::default());
        let t = RoutingTable::identity(topo.regions());
        let first = choose(&cap, &t, "eu-west", Some("us-east")).unwrap();
        let t = failover(&t, "eu-west", &first).unwrap();
        let refused = choose(&cap, &t, "us-west", Some("us-east")).unwrap_err();
        let split = refused.split.unwrap();
        assert!(split.len() >= 2 && split.iter().all(|r| r.region != "eu-west"), "{split:?}");
        assert!(partial_pct(&cap, &t, "us-west", "us-east") < 100);
        let auto = choose(&cap, &t, "us-west", None).unwrap();
        assert_eq!(auto, [Route::new("ap-south", 100)]);
    }
}
