//! The routing table and the pure plans that change it.
//!
//! For each region, the regions that serve its traffic and with what weight. Weights
//! are whole percentages summing to 100, so a load balancer can use them as they are;
//! a region that serves itself alone is `[(itself, 100)]`. Every plan here is a pure
//! function from one table to the next, so the checks, the executor and the cascade
//! watcher agree by construction and the benchmarks measure only the I/O around them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One serving region of a region's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub region: String,
    pub weight: u8,
}

impl Route {
    pub fn new(region: impl Into<String>, weight: u8) -> Route {
        Route { region: region.into(), weight }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("the routing table has no region `{0}`")]
    UnknownRegion(String),
    #[error("the weights of {region} sum to {sum}, not 100")]
    BadSum { region: String, sum: u32 },
    #[error("a share must be between 1 and 100 percent, not {0}")]
    BadPercent(u8),
    #[error("{0} cannot take its own traffic over from itself")]
    SameRegion(String),
    #[error("no region to send the traffic to")]
    NoTargets,
}

/// Region -> its serving regions. A `BTreeMap` so the JSON and the journal list regions
/// in one stable order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RoutingTable {
    pub regions: BTreeMap<String, Vec<Route>>,
}

impl RoutingTable {
    /// Every region serving itself alone: the table of a fleet that never failed over.
    pub fn identity<S: AsRef<str>>(regions: &[S]) -> RoutingTable {
        let regions = regions.iter().map(|r| (r.as_ref().to_string(), vec![Route::new(r.as_ref(), 100)])).collect();
        RoutingTable { regions }
    }

    /// Adds regions the table does not know yet (a fleet that grew) as serving themselves.
    pub fn with_regions<S: AsRef<str>>(mut self, regions: &[S]) -> RoutingTable {
        for r in regions {
            self.regions.entry(r.as_ref().to_string()).or_insert_with(|| vec![Route::new(r.as_ref(), 100)]);
        }
        self
    }

    pub fn routes(&self, region: &str) -> &[Route] {
        self.regions.get(region).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The weight `region`'s traffic has on `to`.
    pub fn weight(&self, region: &str, to: &str) -> u8 {
        self.routes(region).iter().filter(|r| r.region == to).map(|r| r.weight).sum()
    }

    /// Whether `region` serves (some of) its own traffic: agents there should serve.
    pub fn serves_itself(&self, region: &str) -> bool {
        self.weight(region, region) > 0
    }

    /// Regions that serve none of their own traffic (failed over), in order.
    pub fn evacuated(&self) -> Vec<&str> {
        self.regions.keys().filter(|r| !self.serves_itself(r)).map(String::as_str).collect()
    }

    /// Whether `region`'s agents take any traffic at all, their own or another region's.
    pub fn receives(&self, region: &str) -> bool {
        self.regions.values().flatten().any(|r| r.region == region && r.weight > 0)
    }

    /// Every row sums to 100 and names only known regions.
    pub fn validate(&self) -> Result<(), TableError> {
        for (region, routes) in &self.regions {
            let sum: u32 = routes.iter().map(|r| u32::from(r.weight)).sum();
            if sum != 100 {
                return Err(TableError::BadSum { region: region.clone(), sum });
            }
            if let Some(r) = routes.iter().find(|r| !self.regions.contains_key(&r.region)) {
                return Err(TableError::UnknownRegion(r.region.clone()));
            }
        }
        Ok(())
    }

    /// One line per region, for replies: `eu-west -> us-east 100`.
    pub fn describe(&self, region: &str) -> String {
        let routes: Vec<String> = self.routes(region).iter().map(|r| format!("{} {}", r.region, r.weight)).collect();
        routes.join(", ")
    }

    fn known(&self, region: &str) -> Result<(), TableError> {
        if self.regions.contains_key(region) {
            Ok(())
        } else {
            Err(TableError::UnknownRegion(region.to_string()))
        }
    }
}

/// Whole percentages in proportion to `shares`, summing to exactly 100 (largest
/// remainder), dropping zero weights. Empty or all-zero shares give nothing.
pub fn apportion(shares: &[(String, f64)]) -> Vec<Route> {
    let total: f64 = shares.iter().map(|(_, s)| s.max(0.0)).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let exact: Vec<f64> = shares.iter().map(|(_, s)| s.max(0.0) * 100.0 / total).collect();
    let mut weights: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
    let mut left = 100u32.saturating_sub(weights.iter().sum());
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    for i in order.iter().cycle().take(shares.len() * 100) {
        if left == 0 {
            break;
        }
        weights[*i] += 1;
        left -= 1;
    }
    shares
        .iter()
        .zip(weights)
        .filter(|(_, w)| *w > 0)
        .map(|((r, _), w)| Route::new(r.clone(), u8::try_from(w).unwrap_or(100)))
        .collect()
}

/// Adds `weight` on `region` to `routes`, merging with an existing entry.
fn add(routes: &mut Vec<Route>, region: &str, weight: u32) {
    if weight == 0 {
        return;
    }
    match routes.iter_mut().find(|r| r.region == region) {
        Some(r) => r.weight = u8::try_from(u32::from(r.weight) + weight).unwrap_or(100),
        None => routes.push(Route::new(region, u8::try_from(weight).unwrap_or(100))),
    }
}

/// Splits `weight` over `targets` in their proportions, in whole percent.
fn spread(weight: u32, targets: &[Route]) -> Vec<(String, u32)> {
    let total: u32 = targets.iter().map(|t| u32::from(t.weight)).sum();
    if total == 0 {
        return Vec::new();
    }
    let mut out: Vec<(String, u32)> =
        targets.iter().map(|t| (t.region.clone(), weight * u32::from(t.weight) / total)).collect();
    let mut left = weight - out.iter().map(|(_, w)| w).sum::<u32>();
    for o in out.iter_mut() {
        if left == 0 {
            break;
        }
        o.1 += 1;
        left -= 1;
    }
    out
}

/// `from` stops serving: its own traffic goes to `targets` (weights summing to 100),
/// and so does every other region's share that was routed into `from`, so no traffic
/// is left on a failed region. Used for a failover and for a cascade alike.
pub fn failover(table: &RoutingTable, from: &str, targets: &[Route]) -> Result<RoutingTable, TableError> {
    table.known(from)?;
    if targets.is_empty() {
        return Err(TableError::NoTargets);
    }
    for t in targets {
        table.known(&t.region)?;
        if t.region == from {
            return Err(TableError::SameRegion(from.to_string()));
        }
    }
    let sum: u32 = targets.iter().map(|t| u32::from(t.weight)).sum();
    if sum != 100 {
        return Err(TableError::BadSum { region: from.to_string(), sum });
    }
    let mut next = table.clone();
    for (region, routes) in next.regions.iter_mut() {
        if region == from {
            *routes = targets.to_vec();
            continue;
        }
        let moved: u32 = routes.iter().filter(|r| r.region == from).map(|r| u32::from(r.weight)).sum();
        if moved == 0 {
            continue;
        }
        routes.retain(|r| r.region != from);
        for (to, w) in spread(moved, targets) {
            add(routes, &to, w);
        }
    }
    Ok(next)
}

/// `percent` of `from`'s traffic moves to `to`: taken from what `from` serves itself
/// first, then from its other serving regions, largest first.
pub fn shift(table: &RoutingTable, from: &str, to: &str, percent: u8) -> Result<RoutingTable, TableError> {
    table.known(from)?;
    table.known(to)?;
    if from == to {
        return Err(TableError::SameRegion(from.to_string()));
    }
    if percent == 0 || percent > 100 {
        return Err(TableError::BadPercent(percent));
    }
    let mut next = table.clone();
    let routes = next.regions.entry(from.to_string()).or_default();
    let mut left = u32::from(percent);
    let mut order: Vec<usize> = (0..routes.len()).filter(|&i| routes[i].region != to).collect();
    order.sort_by_key(|&i| (routes[i].region != from, std::cmp::Reverse(routes[i].weight)));
    for i in order {
        let take = left.min(u32::from(routes[i].weight));
        routes[i].weight -= u8::try_from(take).unwrap_or(0);
        left -= take;
    }
    let moved = u32::from(percent) - left;
    add(routes, to, moved);
    routes.retain(|r| r.weight > 0);
    Ok(next)
}

/// `region` serves its own traffic alone again; the traffic other regions had sent
/// elsewhere is left as it is (each fails back on its own).
pub fn failback(table: &RoutingTable, region: &str) -> Result<RoutingTable, TableError> {
    table.known(region)?;
    let mut next = table.clone();
    next.regions.insert(region.to_string(), vec![Route::new(region, 100)]);
    Ok(next)
}

/// Regions whose traffic has weight on `failed` (including `failed` itself), that a
/// cascade must move.
pub fn stranded<'a>(table: &'a RoutingTable, failed: &str) -> Vec<&'a str> {
    table
        .regions
        .iter()
        .filter(|(_, routes)| routes.iter().any(|r| r.region == failed && r.weight > 0))
        .map(|(r, _)| r.as_str())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGIONS: [&str; 4] = ["us-east", "us-west", "eu-west", "ap-south"];

    #[test]
    fn failover_and_failback_restore_the_identity_exactly() {
        let t = RoutingTable::identity(&REGIONS);
        let f = failover(&t, "eu-west", &[Route::new("us-east", 100)]).unwrap();
        assert_eq!(f.routes("eu-west"), [Route::new("us-east", 100)]);
        assert!(!f.serves_itself("eu-west"));
        f.validate().unwrap();
        assert_eq!(failback(&f, "eu-west").unwrap(), t);
    }

    #[test]
    fn a_cascade_moves_traffic_on_and_never_back_into_the_failed_region() {
        let t = RoutingTable::identity(&REGIONS);
        let f = failover(&t, "eu-west", &[Route::new("us-east", 100)]).unwrap();
        assert_eq!(stranded(&f, "us-east"), ["eu-west", "us-east"]);
        let c = failover(&f, "us-east", &[Route::new("us-west", 60), Route::new("ap-south", 40)]).unwrap();
        c.validate().unwrap();
        assert_eq!(c.routes("eu-west"), [Route::new("us-west", 60), Route::new("ap-south", 40)]);
        assert!(!c.receives("us-east") && !c.receives("eu-west"));
    }

    #[test]
    fn shifts_take_from_the_region_itself_first_and_keep_sums_at_100() {
        let t = RoutingTable::identity(&REGIONS);
        let s = shift(&t, "eu-west", "us-east", 20).unwrap();
        assert_eq!(s.routes("eu-west"), [Route::new("eu-west", 80), Route::new("us-east", 20)]);
        let s = shift(&s, "eu-west", "us-west", 90).unwrap();
        s.validate().unwrap();
        assert_eq!(s.weight("eu-west", "us-west"), 90);
        assert_eq!(shift(&t, "eu-west", "eu-west", 5), Err(TableError::SameRegion("eu-west".into())));
        assert_eq!(shift(&t, "eu-west", "us-east", 0), Err(TableError::BadPercent(0)));
    }

    #[test]
    fn apportion_sums_to_100() {
        let r = apportion(&[("a".into(), 1.0), ("b".into(), 1.0), ("c".into(), 1.0)]);
        assert_eq!(r.iter().map(|r| u32::from(r.weight)).sum::<u32>(), 100);
        assert!(apportion(&[]).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn every_plan_keeps_the_table_valid(p in 1u8..=100, a in 0usize..4, b in 0usize..4, w in 1u8..100) {
            let t = RoutingTable::identity(&REGIONS);
            if a != b {
                let s = shift(&t, REGIONS[a], REGIONS[b], p).unwrap();
                s.validate().unwrap();
                let c = (b + 1) % 4;
                if c != a {
                    let f = failover(&s, REGIONS[a], &[Route::new(REGIONS[b], w), Route::new(REGIONS[c], 100 - w)]).unwrap();
                    f.validate().unwrap();
                    proptest::prop_assert!(!f.receives(REGIONS[a]));
                }
            }
        }
    }
}
