//! The headroom model: can a region's agents absorb more traffic?
//!
//! Each region's *demand* is the mean CPU of its reachable agents, taken as the load
//! its own traffic puts on a region of its size. A region's projected CPU under a
//! table is the sum, over every region whose traffic it serves, of that region's
//! demand times the weight times the ratio of the two regions' agent counts (twice
//! the agents absorb a share at half the utilisation). A target may take a share only
//! while its projected CPU stays at or under the CPU limit (80% by default, the health
//! threshold) and its agents' memory is under the memory limit (85%) as it stands:
//! memory is dominated by an agent's fixed footprint rather than its request rate, so
//! it gates but is not scaled.
//!
//! A region with no reachable agent has unknown demand; the fleet's mean stands in,
//! so that its traffic is never treated as free.

use std::collections::BTreeMap;

use serde::Serialize;

use super::table::RoutingTable;
use crate::agent::protocol::ServingState;
use crate::topology::{RegionHealth, Topology};

/// Utilisation a target may reach after a move.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    pub cpu_pct: f64,
    pub mem_pct: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { cpu_pct: 80.0, mem_pct: 85.0 }
    }
}

/// What the model knows of one region.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RegionLoad {
    /// Agents in the region (reachable or not): the capacity that serves its share.
    pub agents: usize,
    /// Mean CPU % of the region's own traffic on its own agents, measured on the
    /// reachable agents that serve (a drained agent's CPU is its idle footprint, not
    /// traffic); the fleet's mean when none does.
    pub demand_cpu: f64,
    /// Reachable agents that serve traffic: those `demand_cpu` was measured on.
    pub serving: usize,
    /// Mean memory % of its reachable agents.
    pub mem: f64,
    pub health: RegionHealth,
}

/// The loads of every region of a snapshot, and the limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capacity {
    pub loads: BTreeMap<String, RegionLoad>,
    pub limits: Limits,
    /// Each region's environment (the `env` label all its agents share), for the rule
    /// that traffic goes to its own environment unless the operator names a target.
    pub envs: BTreeMap<String, String>,
}

impl Capacity {
    pub fn from_topology(topo: &Topology, limits: Limits) -> Capacity {
        let mut sums: BTreeMap<String, (usize, usize, f64, f64)> = BTreeMap::new();
        let (mut all_n, mut all_cpu, mut all_mem) = (0usize, 0.0, 0.0);
        for a in topo.agents() {
            let e = sums.entry(a.region.clone()).or_default();
            e.0 += 1;
            if a.liveness.is_reachable() && a.state != ServingState::Drained {
                e.1 += 1;
                e.2 += a.metrics.cpu_pct;
                e.3 += a.metrics.mem_pct;
                all_n += 1;
                all_cpu += a.metrics.cpu_pct;
                all_mem += a.metrics.mem_pct;
            }
        }
        let fleet_cpu = if all_n > 0 { all_cpu / all_n as f64 } else { 0.0 };
        let fleet_mem = if all_n > 0 { all_mem / all_n as f64 } else { 0.0 };
        let loads = sums
            .into_iter()
            .map(|(region, (n, up, cpu, mem))| {
                let (demand_cpu, mem) =
                    if up > 0 { (cpu / up as f64, mem / up as f64) } else { (fleet_cpu, fleet_mem) };
                let health = topo.region_health(&region);
                (region, RegionLoad { agents: n, demand_cpu, serving: up, mem, health })
            })
            .collect();
        let envs =
            topo.regions().iter().filter_map(|r| topo.region_env(r).map(|e| (r.clone(), e.to_string()))).collect();
        Capacity { loads, limits, envs }
    }

    /// The environment of `region`, if all its agents share one.
    pub fn env(&self, region: &str) -> Option<&str> {
        self.envs.get(region).map(String::as_str)
    }

    /// Whether `a` and `b` are in the same environment (both unlabelled counts as the
    /// same: a fleet without `env` labels has one environment).
    pub fn same_env(&self, a: &str, b: &str) -> bool {
        self.env(a) == self.env(b)
    }

    /// CPU % `target`'s agents would run at under `table`.
    pub fn projected_cpu(&self, table: &RoutingTable, target: &str) -> f64 {
        let Some(t) = self.loads.get(target).filter(|t| t.agents > 0) else {
            return f64::INFINITY;
        };
        table
            .regions
            .iter()
            .map(|(src, routes)| {
                let w: f64 = routes.iter().filter(|r| r.region == target).map(|r| f64::from(r.weight)).sum();
                match self.loads.get(src) {
                    Some(s) => s.demand_cpu * w / 100.0 * s.agents as f64 / t.agents as f64,
                    None => 0.0,
                }
            })
            .sum()
    }

    /// Whether `target` may take any traffic from others: healthy, serving, memory below the limit.
    pub fn eligible(&self, table: &RoutingTable, target: &str) -> bool {
        self.loads
            .get(target)
            .is_some_and(|t| t.health == RegionHealth::Healthy && t.mem <= self.limits.mem_pct && t.agents > 0)
            && table.serves_itself(target)
    }

    /// The largest whole percentage of `from`'s traffic that `to` can take on top of
    /// `table` within the limits (0 when it is not eligible).
    pub fn headroom_pct(&self, table: &RoutingTable, from: &str, to: &str) -> u8 {
        if from == to || !self.eligible(table, to) {
            return 0;
        }
        let (Some(s), Some(t)) = (self.loads.get(from), self.loads.get(to)) else {
            return 0;
        };
        let spare = self.limits.cpu_pct - self.projected_cpu(table, to);
        let per_pct = s.demand_cpu / 100.0 * s.agents as f64 / t.agents as f64;
        if spare <= 0.0 {
            return 0;
        }
        if per_pct <= 0.0 {
            return 100;
        }
        (spare / per_pct).floor().clamp(0.0, 100.0) as u8
    }

    /// Eligible regions other than `from` by headroom for `from`'s traffic, largest
    /// first (ties by name), with that headroom.
    pub fn candidates(&self, table: &RoutingTable, from: &str, exclude: &[&str]) -> Vec<(String, u8)> {
        let mut out: Vec<(String, u8)> = self
            .loads
            .keys()
            .filter(|r| r.as_str() != from && !exclude.contains(&r.as_str()))
            .filter(|r| self.eligible(table, r))
            .map(|r| (r.clone(), self.headroom_pct(table, from, r)))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::test_support::demo_topology;

    #[test]
    fn one_region_fits_into_another_but_not_a_third() {
        let topo = demo_topology();
        let cap = Capacity::from_topology(&topo, Limits::default());
        let t = RoutingTable::identity(topo.regions());
        let first = cap.headroom_pct(&t, "eu-west", "us-east");
        assert_eq!(first, 100, "{cap:?}");
        let t =
            super::super::table::failover(&t, "eu-west", &[super::super::table::Route::new("us-east", 100)]).unwrap();
        assert!(cap.headroom_pct(&t, "us-west", "us-east") < 100);
        assert_eq!(cap.headroom_pct(&t, "us-west", "eu-west"), 0, "an evacuated region takes nothing");
    }

    #[test]
    fn drained_agents_idle_cpu_is_not_taken_for_their_regions_demand() {
        let mut agents = demo_topology().agents().to_vec();
        for a in agents.iter_mut().filter(|a| a.region == "eu-west") {
            a.state = ServingState::Drained;
            a.metrics.cpu_pct = 3.0;
        }
        let topo = Topology::new(agents, demo_topology().catalog_arc(), None);
        let cap = Capacity::from_topology(&topo, Limits::default());
        let eu = cap.loads["eu-west"];
        assert_eq!((eu.agents, eu.serving), (12, 0));
        let serving: Vec<f64> =
            topo.agents().iter().filter(|a| a.region != "eu-west").map(|a| a.metrics.cpu_pct).collect();
        let mean = serving.iter().sum::<f64>() / serving.len() as f64;
        assert!((eu.demand_cpu - mean).abs() < 1e-9, "{} vs the serving agents' mean {mean}", eu.demand_cpu);
    }
}
