//! The live model of the fleet: agents with their place, labels, capabilities,
//! extensions, metrics and liveness, plus the extension catalog.
//!
//! Readers take a cheap [`TopologyHandle::snapshot`] (an `Arc` clone) and never hold
//! a lock across an await; the poller builds a whole new [`Topology`] and swaps it in.

pub mod catalog;
pub mod discovery;
pub mod history;
pub mod inventory;
pub mod poller;
pub mod registration;

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::agent::protocol::{HealthSource, Metrics, ServingState};
use crate::ops::{Scope, Selector};
pub use catalog::{Catalog, CatalogExtension, Dependency, VersionMatch};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopologyError {
    #[error("catalog {origin}: {reason}")]
    Catalog { origin: String, reason: String },
    #[error("fleet inventory {origin}: {reason}")]
    Inventory { origin: String, reason: String },
}

/// Thresholds above which a live agent counts as degraded. The orchestration layer's
/// health gates default to the same values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HealthThresholds {
    pub error_rate_pct: f64,
    pub p95_ms: f64,
    pub cpu_pct: f64,
    pub mem_pct: f64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds { error_rate_pct: 1.0, p95_ms: 500.0, cpu_pct: 80.0, mem_pct: 85.0 }
    }
}

impl HealthThresholds {
    /// The metrics that are over their threshold, as `(name, value, threshold)`.
    pub fn breaches(&self, m: &Metrics) -> Vec<(&'static str, f64, f64)> {
        let mut out = Vec::new();
        if m.error_rate_pct > self.error_rate_pct {
            out.push(("error rate %", m.error_rate_pct, self.error_rate_pct));
        }
        if m.p95_ms > self.p95_ms {
            out.push(("p95 ms", m.p95_ms, self.p95_ms));
        }
        if m.cpu_pct > self.cpu_pct {
            out.push(("cpu %", m.cpu_pct, self.cpu_pct));
        }
        if m.mem_pct > self.mem_pct {
            out.push(("memory %", m.mem_pct, self.mem_pct));
        }
        out
    }
}

/// Parley's judgement of an agent, from whether and what it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Answers, metrics within thresholds.
    Healthy,
    /// Answers, but a metric is over its threshold.
    Degraded,
    /// Stopped answering recently.
    Suspect,
    /// Stopped answering for longer.
    Down,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Healthy => "healthy",
            Liveness::Degraded => "degraded",
            Liveness::Suspect => "suspect",
            Liveness::Down => "down",
        }
    }

    /// The agent answers (healthy or degraded).
    pub fn is_reachable(self) -> bool {
        matches!(self, Liveness::Healthy | Liveness::Degraded)
    }
}

/// An agent's name, shared rather than copied: every snapshot, the name index and
/// every feasibility verdict (a fleet-wide one lists 10,000 of them) hold the same
/// allocation, so handing a name on costs a reference count, not a string copy.
/// Serialises as a plain string, so the JSON contract does not see it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AgentName(Arc<str>);

impl AgentName {
    pub fn new(name: &str) -> AgentName {
        AgentName(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for AgentName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AgentName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lets a `HashMap<AgentName, _>` be looked up with a `&str`.
impl Borrow<str> for AgentName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for AgentName {
    fn from(name: &str) -> AgentName {
        AgentName::new(name)
    }
}

impl From<String> for AgentName {
    fn from(name: String) -> AgentName {
        AgentName(Arc::from(name))
    }
}

impl From<&AgentName> for String {
    fn from(name: &AgentName) -> String {
        name.0.to_string()
    }
}

impl PartialEq<str> for AgentName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for AgentName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for AgentName {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

impl PartialEq<AgentName> for String {
    fn eq(&self, other: &AgentName) -> bool {
        **self == *other.0
    }
}

impl PartialEq<AgentName> for str {
    fn eq(&self, other: &AgentName) -> bool {
        *self == *other.0
    }
}

impl PartialEq<AgentName> for &str {
    fn eq(&self, other: &AgentName) -> bool {
        **self == *other.0
    }
}

impl Serialize for AgentName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// One agent as the model knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentView {
    pub name: AgentName,
    /// Base URL of the agent's HTTP API, e.g. `http://127.0.0.1:41234`.
    pub endpoint: String,
    pub region: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    /// Extension name -> installed version.
    pub extensions: BTreeMap<String, String>,
    pub metrics: Metrics,
    pub state: ServingState,
    pub liveness: Liveness,
    /// When the agent entered its current liveness.
    pub liveness_since: DateTime<Utc>,
    /// When the agent last answered, if ever.
    pub last_seen: Option<DateTime<Utc>>,
    /// When `state` and `metrics` were last measured: the time of the agent's last
    /// status answer (a heartbeat says the agent lives, but measures nothing). `None`:
    /// never, and `state` and `metrics` are placeholders. Read both through
    /// [`AgentView::serving`] and [`AgentView::reading`], never directly.
    pub reported_at: Option<DateTime<Utc>>,
    /// Set while the poller counts the agent as flapping (its liveness transitions are
    /// then held back from the events), so replies can say so instead of showing
    /// whichever state the last pass happened to catch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flapping: Option<Flapping>,
    /// Where the agent says its health comes from: `simulated` (the demo fleet, `fleet
    /// simulate`) or `measured` (a real agent); `None`: it has not said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_source: Option<HealthSource>,
    /// When the poller sent the status request that `extensions` comes from. An install
    /// Parley confirmed after that moment is newer than what the snapshot says (see
    /// [`TopologyHandle::record_installs`]); internal, so never serialised.
    #[serde(skip)]
    pub status_asked_at: Option<DateTime<Utc>>,
}

/// How much of the fleet is a simulation: agents whose installs are a delay and whose
/// health is synthesised. [`Topology::simulation`] is the one owner of the rule;
/// every reply about health, installs or rollouts asks it, and every front-end shows
/// [`Simulation::note`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Simulation {
    /// Agents that report their health as simulated ...
    pub agents: usize,
    /// ... of this many in the fleet.
    pub of: usize,
}

impl Simulation {
    /// The line every front-end shows once under such a reply.
    pub fn note(&self) -> String {
        if self.agents == self.of {
            "Simulated fleet: installs and health are simulated.".to_string()
        } else {
            format!("Simulated: {} of {} agents; their installs and health are simulated.", self.agents, self.of)
        }
    }
}

/// How much a flapping agent has been changing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Flapping {
    /// Liveness changes within the last `window`.
    pub changes: usize,
    #[serde(rename = "window_ms", serialize_with = "duration_ms")]
    pub window: std::time::Duration,
}

fn duration_ms<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AgentView {
    pub fn env(&self) -> Option<&str> {
        self.labels.get("env").map(String::as_str)
    }

    pub fn tier(&self) -> Option<&str> {
        self.labels.get("tier").map(String::as_str)
    }

    pub fn has_capability(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }

    pub fn matches(&self, sel: &Selector) -> bool {
        sel.selects(&self.name, &self.region, &self.zone, &self.labels, &self.capabilities)
    }

    pub fn matches_scope(&self, scope: &Scope) -> bool {
        scope.0.iter().all(|s| self.matches(s))
    }

    /// Answers within thresholds and keeps doing so: a flapping agent is not healthy,
    /// whatever the last poll happened to catch.
    pub fn is_healthy(&self) -> bool {
        self.liveness == Liveness::Healthy && self.flapping.is_none()
    }

    /// The agent's health in one word, as replies show it: "flapping" while it flaps,
    /// otherwise its liveness.
    pub fn health_word(&self) -> &'static str {
        if self.flapping.is_some() {
            "flapping"
        } else {
            self.liveness.as_str()
        }
    }

    /// Reachable and taking work: a rollout may touch it.
    pub fn is_available(&self) -> bool {
        self.liveness.is_reachable() && self.state == ServingState::Active
    }

    /// What is known of the agent's serving state. The one owner every front-end asks,
    /// so that a reply, the TUI and a fresh `ask` say the same of the same agent: only
    /// an agent that answers has a serving state now; of one that does not, its last
    /// report is history, and one that never answered has none.
    pub fn serving(&self) -> Serving {
        match self.reported_at {
            Some(_) if self.liveness.is_reachable() => Serving::Now(self.state),
            Some(at) => Serving::LastReported { state: self.state, at },
            None => Serving::Unknown,
        }
    }

    /// The agent's metrics as they may be shown at `as_of` (the snapshot's time): live
    /// while it answers, without error rate and latency while it serves no traffic, and
    /// marked stale with their age once it stops answering.
    pub fn reading(&self, as_of: DateTime<Utc>) -> Reading {
        let m = self.metrics;
        match self.reported_at {
            None => Reading::Never,
            Some(at) if !self.liveness.is_reachable() => {
                Reading::Stale { metrics: m, age: (as_of - at).to_std().unwrap_or_default() }
            }
            Some(_) if self.state == ServingState::Drained => {
                Reading::NoTraffic { cpu_pct: m.cpu_pct, mem_pct: m.mem_pct }
            }
            Some(_) => Reading::Live(m),
        }
    }
}

/// What Parley knows of an agent's serving state ([`AgentView::serving`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Reported by the agent, which answers now.
    Now(ServingState),
    /// The agent does not answer; this is what it last reported, and when.
    LastReported { state: ServingState, at: DateTime<Utc> },
    /// The agent does not answer and never did.
    Unknown,
}

impl Serving {
    /// For replies: "active", or why it is not known ("serving state unknown (last
    /// reported active 42 s ago)"), the age as of `as_of`.
    pub fn describe(&self, as_of: DateTime<Utc>) -> String {
        match self {
            Serving::Now(s) => s.as_str().to_string(),
            Serving::LastReported { state, at } => format!(
                "serving state unknown (last reported {} {} ago)",
                state.as_str(),
                age_words((as_of - *at).to_std().unwrap_or_default())
            ),
            Serving::Unknown => "serving state unknown (it never answered)".to_string(),
        }
    }

    /// Known to take no new work right now (cordoned, draining, drained, restarting).
    pub fn not_serving_now(&self) -> bool {
        matches!(self, Serving::Now(s) if *s != ServingState::Active)
    }
}

/// An agent's metrics as they may be shown ([`AgentView::reading`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reading {
    /// Measured in the last answer of an agent that answers now.
    Live(Metrics),
    /// A drained agent: CPU and memory are measured, but with no requests there is no
    /// error rate or latency to speak of.
    NoTraffic { cpu_pct: f64, mem_pct: f64 },
    /// The agent does not answer: its last measured values, `age` old.
    Stale {
        metrics: Metrics,
        #[serde(rename = "age_ms", serialize_with = "duration_ms")]
        age: std::time::Duration,
    },
    /// Never measured.
    Never,
}

impl Reading {
    /// Error rate and p95 latency, only where they are live and meaningful.
    pub fn traffic(&self) -> Option<(f64, f64)> {
        match self {
            Reading::Live(m) => Some((m.error_rate_pct, m.p95_ms)),
            _ => None,
        }
    }

    /// For replies: "cpu 31%, memory 40%, error rate 0.12%, p95 150 ms", or what
    /// stands in for values that are not live.
    pub fn describe(&self) -> String {
        match self {
            Reading::Live(m) => format!(
                "cpu {:.0}%, memory {:.0}%, error rate {:.2}%, p95 {:.0} ms",
                m.cpu_pct, m.mem_pct, m.error_rate_pct, m.p95_ms
            ),
            Reading::NoTraffic { cpu_pct, mem_pct } => format!(
                "cpu {cpu_pct:.0}%, memory {mem_pct:.0}%; it serves no traffic, so it has no error rate or latency"
            ),
            Reading::Stale { age, .. } => {
                format!("no metrics: the last were measured {} ago and are stale", age_words(*age))
            }
            Reading::Never => "no metrics: it was never measured".to_string(),
        }
    }
}

/// An age as an operator reads it: "0.4 s", "42 s", "3 min", "2 h".
pub fn age_words(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s < 1 {
        format!("{:.1} s", d.as_secs_f64())
    } else if s < 120 {
        format!("{s} s")
    } else if s < 2 * 3600 {
        format!("{} min", s / 60)
    } else if s < 2 * 86_400 {
        format!("{} h", s / 3600)
    } else {
        format!("{} days", s / 86_400)
    }
}

/// How a region is doing as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionHealth {
    Healthy,
    /// Some agents degraded, suspect or down.
    Degraded,
    /// Every agent of the region is unreachable from Parley.
    Partitioned,
}

impl RegionHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            RegionHealth::Healthy => "healthy",
            RegionHealth::Degraded => "degraded",
            RegionHealth::Partitioned => "partitioned",
        }
    }
}

/// An immutable snapshot of the fleet.
#[derive(Debug, Clone)]
pub struct Topology {
    agents: Vec<AgentView>,
    index: HashMap<AgentName, usize>,
    regions: Vec<String>,
    zones: Vec<String>,
    /// Per region (in `regions` order): agent count and health, computed once per
    /// snapshot because feasibility and rendering ask for them on every turn.
    region_stats: Vec<RegionStats>,
    /// Each agent's index into `regions`, parallel to `agents`: large checks count per
    /// region without comparing region names agent by agent.
    agent_region: Vec<usize>,
    /// Whether each agent has `env=production`, parallel to `agents` (the risk rule asks
    /// it of every target).
    production: Vec<bool>,
    /// Per extension, which version each agent runs. A fleet-wide check on 10,000 agents
    /// otherwise spends most of its time in string compares of map keys and versions
    /// scattered over the heap.
    extension_columns: HashMap<String, ExtensionColumn>,
    catalog: Arc<Catalog>,
    refreshed_at: Option<DateTime<Utc>>,
}

/// Which version of one extension each agent of a snapshot runs, as an index into the
/// versions seen, so that a check over the whole fleet compares small integers.
#[derive(Debug, Clone, Default)]
pub struct ExtensionColumn {
    versions: Vec<String>,
    /// Parallel to the snapshot's agents: an index into `versions`, or `NOT_INSTALLED`.
    by_agent: Vec<u32>,
}

impl ExtensionColumn {
    const NOT_INSTALLED: u32 = u32::MAX;

    /// The id of `version` in this column, if any agent runs it.
    pub fn version_id(&self, version: &str) -> Option<u32> {
        self.versions.iter().position(|v| v == version).map(|i| i as u32)
    }

    /// Whether the agent at `agent` (its index in the snapshot) runs version `id`.
    pub fn runs(&self, agent: usize, id: u32) -> bool {
        self.by_agent.get(agent) == Some(&id)
    }

    /// The agent's version id, `None` when it does not have the extension.
    pub fn id_of(&self, agent: usize) -> Option<u32> {
        self.by_agent.get(agent).copied().filter(|&v| v != Self::NOT_INSTALLED)
    }

    /// Every version some agent runs, indexed by id.
    pub fn versions(&self) -> &[String] {
        &self.versions
    }
}

#[derive(Debug, Clone, Copy)]
struct RegionStats {
    agents: usize,
    health: RegionHealth,
}

impl Topology {
    /// How much of the fleet reports simulated health; `None` when no agent does (a
    /// fleet of real agents, or of agents that do not say).
    pub fn simulation(&self) -> Option<Simulation> {
        let agents = self.agents.iter().filter(|a| a.health_source == Some(HealthSource::Simulated)).count();
        (agents > 0).then_some(Simulation { agents, of: self.agents.len() })
    }

    /// Builds a snapshot. Regions and zones keep the order in which agents list them.
    pub fn new(agents: Vec<AgentView>, catalog: Arc<Catalog>, refreshed_at: Option<DateTime<Utc>>) -> Topology {
        let mut index = HashMap::with_capacity(agents.len());
        let mut regions: Vec<String> = Vec::new();
        let mut zones: Vec<String> = Vec::new();
        // (agents, reachable, healthy) per region, in `regions` order.
        let mut counts: Vec<(usize, usize, usize)> = Vec::new();
        let mut agent_region = Vec::with_capacity(agents.len());
        let mut production = Vec::with_capacity(agents.len());
        let mut extension_columns: HashMap<String, ExtensionColumn> = HashMap::new();
        for (i, a) in agents.iter().enumerate() {
            production.push(a.env() == Some("production"));
            for (ext, ver) in &a.extensions {
                // Looked up by `&str` first: an owned key is only made for a new extension.
                let column = match extension_columns.get_mut(ext.as_str()) {
                    Some(c) => c,
                    None => extension_columns.entry(ext.clone()).or_insert_with(|| ExtensionColumn {
                        versions: Vec::new(),
                        by_agent: vec![ExtensionColumn::NOT_INSTALLED; agents.len()],
                    }),
                };
                let id = match column.versions.iter().position(|v| v == ver) {
                    Some(id) => id,
                    None => {
                        column.versions.push(ver.clone());
                        column.versions.len() - 1
                    }
                };
                // More distinct versions of one extension than u32 holds cannot come from
                // agents that each report a handful; such a version is simply not indexed.
                if let (Some(slot), Ok(id)) = (column.by_agent.get_mut(i), u32::try_from(id)) {
                    *slot = id;
                }
            }
            index.insert(a.name.clone(), i);
            let r = match regions.iter().position(|r| *r == a.region) {
                Some(r) => r,
                None => {
                    regions.push(a.region.clone());
                    counts.push((0, 0, 0));
                    regions.len() - 1
                }
            };
            agent_region.push(r);
            counts[r].0 += 1;
            counts[r].1 += usize::from(a.liveness.is_reachable());
            counts[r].2 += usize::from(a.is_healthy());
            if !zones.contains(&a.zone) {
                zones.push(a.zone.clone());
            }
        }
        let region_stats = counts
            .into_iter()
            .map(|(n, reachable, healthy)| RegionStats {
                agents: n,
                health: if reachable == 0 {
                    RegionHealth::Partitioned
                } else if healthy == n {
                    RegionHealth::Healthy
                } else {
                    RegionHealth::Degraded
                },
            })
            .collect();
        Topology {
            agents,
            index,
            regions,
            zones,
            region_stats,
            agent_region,
            production,
            extension_columns,
            catalog,
            refreshed_at,
        }
    }

    fn region_stats(&self, region: &str) -> Option<RegionStats> {
        self.regions.iter().position(|r| r == region).map(|i| self.region_stats[i])
    }

    /// How many agents a region has.
    pub fn region_size(&self, region: &str) -> usize {
        self.region_stats(region).map_or(0, |s| s.agents)
    }

    pub fn empty(catalog: Arc<Catalog>) -> Topology {
        Topology::new(Vec::new(), catalog, None)
    }

    pub fn agents(&self) -> &[AgentView] {
        &self.agents
    }

    pub fn agent(&self, name: &str) -> Option<&AgentView> {
        self.index.get(name).map(|&i| &self.agents[i])
    }

    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn catalog_arc(&self) -> Arc<Catalog> {
        Arc::clone(&self.catalog)
    }

    pub fn refreshed_at(&self) -> Option<DateTime<Utc>> {
        self.refreshed_at
    }

    /// Every label key any agent has (`env`, `tier`, ...), sorted.
    pub fn label_keys(&self) -> Vec<String> {
        let mut out: Vec<String> = self.agents.iter().flat_map(|a| a.labels.keys().cloned()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every value a label takes across the fleet (e.g. all `env` values), sorted.
    pub fn label_values(&self, key: &str) -> Vec<String> {
        let mut out: Vec<String> = self.agents.iter().filter_map(|a| a.labels.get(key).cloned()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every capability any agent has, sorted.
    pub fn capabilities(&self) -> Vec<String> {
        let mut out: Vec<String> = self.agents.iter().flat_map(|a| a.capabilities.iter().cloned()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// The agents a scope selects with their index in [`Topology::agents`], which the
    /// per-agent columns ([`Topology::agent_region`], [`Topology::is_production`],
    /// [`Topology::extension_column`]) take.
    pub fn select_indexed<'a>(&'a self, scope: &'a Scope) -> impl Iterator<Item = (usize, &'a AgentView)> + 'a {
        self.agents.iter().enumerate().filter(move |(_, a)| a.matches_scope(scope))
    }

    /// The index in [`Topology::regions`] of the region of the agent at `agent`.
    pub fn agent_region(&self, agent: usize) -> Option<usize> {
        self.agent_region.get(agent).copied()
    }

    /// Whether the agent at `agent` has `env=production`.
    pub fn is_production(&self, agent: usize) -> bool {
        self.production.get(agent).copied().unwrap_or(false)
    }

    /// Which version of `extension` each agent runs; `None` when no agent has it.
    pub fn extension_column(&self, extension: &str) -> Option<&ExtensionColumn> {
        self.extension_columns.get(extension)
    }

    /// The agents a scope selects, in fleet order.
    pub fn select<'a>(&'a self, scope: &'a Scope) -> impl Iterator<Item = &'a AgentView> + 'a {
        self.agents.iter().filter(move |a| a.matches_scope(scope))
    }

    pub fn region_agents<'a>(&'a self, region: &'a str) -> impl Iterator<Item = &'a AgentView> + 'a {
        self.agents.iter().filter(move |a| a.region == region)
    }

    /// Healthy when every agent is (a flapping one is not); partitioned when none
    /// answers; degraded otherwise.
    /// A region with no agents is healthy (there is nothing wrong to report).
    pub fn region_health(&self, region: &str) -> RegionHealth {
        self.region_stats(region).map_or(RegionHealth::Healthy, |s| s.health)
    }

    /// The `env` label every agent of `region` has, `None` when they differ or lack it:
    /// which traffic may go where follows it (production to production).
    pub fn region_env(&self, region: &str) -> Option<&str> {
        let mut envs = self.agents.iter().filter(|a| a.region == region).map(AgentView::env);
        let first = envs.next()??;
        envs.all(|e| e == Some(first)).then_some(first)
    }

    /// The time ages of measurements are told as of: the pass that made this snapshot
    /// (so one snapshot reads the same in every front-end), else now.
    pub fn as_of(&self) -> DateTime<Utc> {
        self.refreshed_at.unwrap_or_else(Utc::now)
    }

    /// When any agent of `region` last reported, if one ever did.
    pub fn region_reported_at(&self, region: &str) -> Option<DateTime<Utc>> {
        self.region_agents(region).filter_map(|a| a.reported_at).max()
    }
}

/// The shared, swappable current snapshot, and the metric history of the snapshots
/// swapped in.
#[derive(Debug, Clone)]
pub struct TopologyHandle {
    current: Arc<RwLock<Arc<Topology>>>,
    history: Arc<history::MetricHistory>,
    /// Installs and removals Parley itself confirmed that no poll has seen yet.
    confirmed: Arc<std::sync::Mutex<Vec<ConfirmedInstall>>>,
}

/// One agent's version of one extension as an install (or a rollback) confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfirmedInstall {
    pub agent: String,
    pub extension: String,
    /// `None`: the extension was removed.
    pub version: Option<String>,
    pub at: DateTime<Utc>,
}

impl ConfirmedInstall {
    pub fn now(agent: &str, extension: &str, version: Option<&str>) -> ConfirmedInstall {
        ConfirmedInstall {
            agent: agent.to_string(),
            extension: extension.to_string(),
            version: version.map(str::to_string),
            at: Utc::now(),
        }
    }

    /// Whether the agent's reading in a snapshot predates this install: a status asked
    /// for before the install finished may still show the version it replaced.
    fn newer_than(&self, view: &AgentView) -> bool {
        view.status_asked_at.is_none_or(|asked| asked < self.at)
    }
}

impl TopologyHandle {
    pub fn new(initial: Topology) -> TopologyHandle {
        let history = Arc::new(history::MetricHistory::new());
        history.record(&initial);
        TopologyHandle {
            current: Arc::new(RwLock::new(Arc::new(initial))),
            history,
            confirmed: Arc::new(std::sync::Mutex::new(Vec::new())),
        }
    }

    /// Records installs the orchestrator confirmed, so that the model says what the
    /// agents run now rather than at the last poll: a rollout planned right after
    /// another one finished takes its targets' previous versions from the snapshot,
    /// and its rollback returns them there. Each stays applied over the poller's
    /// snapshots until a status asked for after it has been read.
    pub fn record_installs(&self, installs: Vec<ConfirmedInstall>) {
        if installs.is_empty() {
            return;
        }
        let mut confirmed = self.lock_confirmed();
        confirmed.extend(installs);
        let current = self.snapshot();
        if let Some(patched) = apply_confirmed(&current, &mut confirmed) {
            self.swap(patched);
        }
    }

    fn lock_confirmed(&self) -> std::sync::MutexGuard<'_, Vec<ConfirmedInstall>> {
        // The list is whole after any push; a panic elsewhere cannot leave it half-written.
        self.confirmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn swap(&self, next: Topology) {
        let next = Arc::new(next);
        match self.current.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// What the agents measured in the snapshots swapped in so far.
    pub fn history(&self) -> &history::MetricHistory {
        &self.history
    }

    /// The current snapshot; cheap, and never blocks for longer than a pointer copy.
    pub fn snapshot(&self) -> Arc<Topology> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            // A writer panicked mid-swap; the Arc inside is still a whole snapshot.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Swaps in a new snapshot (the poller's job), with the confirmed installs its
    /// readings predate applied over it.
    pub fn replace(&self, next: Topology) {
        let mut confirmed = self.lock_confirmed();
        let next = apply_confirmed(&next, &mut confirmed).unwrap_or(next);
        drop(confirmed);
        self.history.record(&next);
        self.swap(next);
    }
}

/// `topology` with the confirmed installs that are newer than its readings applied;
/// drops those a later reading has seen (or whose agent is gone). `None`: nothing to
/// change.
fn apply_confirmed(topology: &Topology, confirmed: &mut Vec<ConfirmedInstall>) -> Option<Topology> {
    confirmed.retain(|c| topology.agent(&c.agent).is_some_and(|view| c.newer_than(view)));
    let differs = |c: &ConfirmedInstall| {
        topology.agent(&c.agent).is_some_and(|view| view.extensions.get(&c.extension) != c.version.as_ref())
    };
    if !confirmed.iter().any(differs) {
        return None;
    }
    let mut agents = topology.agents().to_vec();
    // In the order confirmed: a rollback after an install leaves the rollback's version.
    for c in confirmed.iter() {
        let Some(&i) = topology.index.get(c.agent.as_str()) else { continue };
        let view = &mut agents[i];
        match &c.version {
            Some(v) => {
                view.extensions.insert(c.extension.clone(), v.clone());
            }
            None => {
                view.extensions.remove(&c.extension);
            }
        }
    }
    Some(Topology::new(agents, topology.catalog_arc(), topology.refreshed_at()))
}

pub mod demo {
    //! The demo fleet of PRODUCT.md built in memory, without any HTTP: unit tests,
    //! benches and examples share it so their expectations agree.
    use super::*;

    pub fn agent(name: &str, region: &str, zone: &str, tier: &str, env: &str, caps: &[&str]) -> AgentView {
        let mut labels = BTreeMap::new();
        labels.insert("env".to_string(), env.to_string());
        labels.insert("tier".to_string(), tier.to_string());
        let mut extensions = BTreeMap::new();
        extensions.insert("auth-filter".to_string(), "2.0.3".to_string());
        extensions.insert("rate-limiter".to_string(), "1.0.0".to_string());
        extensions.insert("log-shipper".to_string(), "1.4.2".to_string());
        if caps.contains(&"gpu") {
            extensions.insert("model-server".to_string(), "0.3.0".to_string());
        }
        AgentView {
            name: AgentName::new(name),
            endpoint: format!("http://127.0.0.1:1/{name}"),
            region: region.to_string(),
            zone: zone.to_string(),
            labels,
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            extensions,
            metrics: Metrics { cpu_pct: 30.0, mem_pct: 40.0, error_rate_pct: 0.1, p95_ms: 120.0 },
            state: ServingState::Active,
            liveness: Liveness::Healthy,
            liveness_since: DateTime::<Utc>::UNIX_EPOCH,
            last_seen: Some(DateTime::<Utc>::UNIX_EPOCH),
            reported_at: Some(DateTime::<Utc>::UNIX_EPOCH),
            flapping: None,
            health_source: None,
            status_asked_at: None,
        }
    }

    /// The 48-agent demo fleet of PRODUCT.md, all healthy, with the embedded catalog.
    pub fn demo_topology() -> Result<Topology, TopologyError> {
        let regions = ["us-east", "us-west", "eu-west", "ap-south"];
        let mut agents = Vec::new();
        for (tier, per_region, caps) in [("edge", 6, vec![]), ("core", 4, vec![]), ("gpu", 2, vec!["gpu"])] {
            let mut n = 0;
            for region in regions {
                let env = if region == "ap-south" { "staging" } else { "production" };
                for i in 0..per_region {
                    n += 1;
                    let zone = if i < per_region / 2 { format!("{region}-a") } else { format!("{region}-b") };
                    agents.push(agent(&format!("{tier}-{n}"), region, &zone, tier, env, &caps));
                }
            }
        }
        let catalog = Arc::new(Catalog::embedded()?);
        Ok(Topology::new(agents, catalog, Some(DateTime::<Utc>::UNIX_EPOCH)))
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A demo-shaped topology built in memory, for unit tests of the layers above.
    use super::*;

    #[allow(unused_imports)]
    pub use super::demo::agent;

    /// The 48-agent demo fleet of PRODUCT.md, all healthy, without any HTTP.
    pub fn demo_topology() -> Topology {
        super::demo::demo_topology().expect("embedded catalog")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::demo_topology;
    use super::*;

    #[test]
    fn demo_shape_selects_as_the_product_page_says() {
        let t = demo_topology();
        assert_eq!(t.agents().len(), 48);
        assert_eq!(t.regions(), ["us-east", "us-west", "eu-west", "ap-south"]);
        assert_eq!(t.select(&Scope::region("ap-south")).count(), 12);
        let gpu_eu = Scope(vec![Selector::Region("eu-west".into()), Selector::Capability("gpu".into())]);
        let names: Vec<&str> = t.select(&gpu_eu).map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["gpu-5", "gpu-6"]);
        assert_eq!(t.agent("edge-13").unwrap().region, "eu-west");
        assert_eq!(t.agent("edge-13").unwrap().zone, "eu-west-a");
        assert_eq!(t.agent("edge-16").unwrap().zone, "eu-west-b");
    }

    #[test]
    fn extension_columns_say_which_version_each_agent_runs() {
        let mut t = demo_topology();
        t.agents[1].extensions.insert("auth-filter".into(), "2.1.0".into());
        let t = Topology::new(t.agents, t.catalog, None);
        let auth = t.extension_column("auth-filter").unwrap();
        assert_eq!(auth.versions(), ["2.0.3", "2.1.0"]);
        let new = auth.version_id("2.1.0").unwrap();
        assert!(auth.runs(1, new) && !auth.runs(0, new));
        let model = t.extension_column("model-server").unwrap();
        let gpu_1 = t.agents().iter().position(|a| a.name == "gpu-1").unwrap();
        assert_eq!((model.id_of(0), model.id_of(gpu_1)), (None, Some(0)));
        assert!(t.extension_column("waf-rules").is_none());
        assert_eq!(auth.version_id("1.0.0"), None);
        let edge_19 = t.agents().iter().position(|a| a.name == "edge-19").unwrap();
        assert!(t.is_production(0) && !t.is_production(edge_19), "ap-south is staging");
        assert_eq!(t.agent_region(edge_19), Some(3));
    }

    #[test]
    fn serving_state_and_metrics_are_told_only_as_far_as_they_are_known() {
        let t = demo_topology();
        let at = DateTime::<Utc>::UNIX_EPOCH;
        let later = at + chrono::Duration::seconds(42);
        let mut a = t.agent("edge-13").unwrap().clone();
        assert_eq!(a.serving(), Serving::Now(ServingState::Active));
        assert_eq!(a.serving().describe(later), "active");
        assert!(matches!(a.reading(later), Reading::Live(_)));

        // Crashed after answering: what it said last is history, with its age.
        a.liveness = Liveness::Down;
        assert_eq!(a.serving(), Serving::LastReported { state: ServingState::Active, at });
        assert_eq!(a.serving().describe(later), "serving state unknown (last reported active 42 s ago)");
        assert!(!a.serving().not_serving_now());
        assert_eq!(a.reading(later).traffic(), None);
        assert_eq!(a.reading(later).describe(), "no metrics: the last were measured 42 s ago and are stale");

        // Never answered: the placeholder state is not a state.
        a.reported_at = None;
        a.state = ServingState::Drained;
        assert_eq!(a.serving(), Serving::Unknown);
        assert_eq!(a.serving().describe(later), "serving state unknown (it never answered)");
        assert!(!a.serving().not_serving_now());
        assert_eq!(a.reading(later), Reading::Never);

        // Drained and answering: CPU and memory are real, traffic metrics are not.
        a.reported_at = Some(at);
        a.liveness = Liveness::Healthy;
        assert!(a.serving().not_serving_now());
        assert_eq!(a.reading(later), Reading::NoTraffic { cpu_pct: 30.0, mem_pct: 40.0 });
        assert_eq!(
            a.reading(later).describe(),
            "cpu 30%, memory 40%; it serves no traffic, so it has no error rate or latency"
        );
    }

    #[test]
    fn regions_have_the_env_all_their_agents_share() {
        let t = demo_topology();
        assert_eq!(t.region_env("eu-west"), Some("production"));
        assert_eq!(t.region_env("ap-south"), Some("staging"));
        assert_eq!(t.region_env("mars"), None);
    }

    #[test]
    fn a_region_with_every_agent_down_is_partitioned() {
        let mut t = demo_topology();
        for a in t.agents.iter_mut().filter(|a| a.region == "eu-west") {
            a.liveness = Liveness::Down;
        }
        let t = Topology::new(t.agents, t.catalog, None);
        assert_eq!(t.region_health("eu-west"), RegionHealth::Partitioned);
        assert_eq!(t.region_health("us-east"), RegionHealth::Healthy);
    }

    #[test]
    fn a_flapping_agent_is_not_healthy_and_its_region_is_not_either() {
        let mut t = demo_topology();
        for a in t.agents.iter_mut().filter(|a| a.name == "edge-14") {
            a.flapping = Some(Flapping { changes: 30, window: std::time::Duration::from_secs(60) });
        }
        let t = Topology::new(t.agents, t.catalog, None);
        let a = t.agent("edge-14").unwrap();
        assert_eq!(a.liveness, Liveness::Healthy, "the last poll caught it answering");
        assert!(!a.is_healthy());
        assert_eq!(a.health_word(), "flapping");
        assert_eq!(t.region_health("eu-west"), RegionHealth::Degraded);
        assert_eq!(t.region_health("us-east"), RegionHealth::Healthy);
    }

    /// A snapshot as a poll pass builds it: every agent's status asked for at `asked`.
    fn polled(asked: DateTime<Utc>, edge_19_auth: &str) -> Topology {
        let mut t = demo_topology();
        for a in t.agents.iter_mut() {
            a.status_asked_at = Some(asked);
            if a.name == "edge-19" {
                a.extensions.insert("auth-filter".into(), edge_19_auth.into());
            }
        }
        Topology::new(t.agents, t.catalog, None)
    }

    fn auth_on(handle: &TopologyHandle, agent: &str) -> Option<String> {
        handle.snapshot().agent(agent).and_then(|a| a.extensions.get("auth-filter").cloned())
    }

    #[test]
    fn a_confirmed_install_outlives_polls_asked_before_it_and_yields_to_later_ones() {
        let before = Utc::now() - chrono::Duration::seconds(5);
        let handle = TopologyHandle::new(polled(before, "2.0.3"));
        handle.record_installs(vec![ConfirmedInstall::now("edge-19", "auth-filter", Some("2.1.0"))]);
        assert_eq!(auth_on(&handle, "edge-19").as_deref(), Some("2.1.0"), "applied at once");
        assert_eq!(handle.snapshot().extension_column("auth-filter").unwrap().versions(), ["2.0.3", "2.1.0"]);

        // A pass whose request went out before the install still reads the old version.
        handle.replace(polled(before, "2.0.3"));
        assert_eq!(auth_on(&handle, "edge-19").as_deref(), Some("2.1.0"));

        // A reading asked for afterwards is the agent's own word, whatever it says.
        let after = Utc::now() + chrono::Duration::seconds(1);
        handle.replace(polled(after, "1.9.0"));
        assert_eq!(auth_on(&handle, "edge-19").as_deref(), Some("1.9.0"));
        handle.replace(polled(before, "2.0.3"));
        assert_eq!(auth_on(&handle, "edge-19").as_deref(), Some("2.0.3"), "the install was forgotten once seen");
    }

    #[test]
    fn a_rollback_confirmed_after_an_install_leaves_the_rolled_back_version_or_none() {
        let before = Utc::now() - chrono::Duration::seconds(5);
        let handle = TopologyHandle::new(polled(before, "2.0.3"));
        handle.record_installs(vec![ConfirmedInstall::now("edge-19", "auth-filter", Some("2.1.0"))]);
        handle.record_installs(vec![
            ConfirmedInstall::now("edge-19", "auth-filter", None),
            ConfirmedInstall::now("no-such-agent", "auth-filter", Some("2.1.0")),
        ]);
        assert_eq!(auth_on(&handle, "edge-19"), None);
        handle.replace(polled(before, "2.0.3"));
        assert_eq!(auth_on(&handle, "edge-19"), None);
        assert_eq!(auth_on(&handle, "edge-20").as_deref(), Some("2.0.3"), "other agents as polled");
    }
}
