//! Regions and traffic: the routing table Parley keeps in the registry, the plans
//! that change it, and the [`Router`] that applies them.
//!
//! Stages, one per file: [`table`] (the table and pure plans: failover, shift,
//! failback, cascade), [`capacity`] (the headroom model), [`plan`] (which regions take
//! a failover's traffic), [`http`] (`GET /v1/routing` for load balancers and agents).
//! The [`Router`] journals every change before it takes effect, serialises changes,
//! moves traffic on when a failover target fails (the cascade watcher) and, when
//! configured, fails a recovered region back after a period of health.

pub mod capacity;
pub mod http;
pub mod plan;
pub mod table;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::agent::protocol::AgentAction;
use crate::ops::Actor;
use crate::orchestrate::Orchestrator;
use crate::registry::{NewRoutingChange, Registry, RegistryError, RoutingChange};
use crate::topology::poller::TopologyEvent;
use crate::topology::{RegionHealth, Topology, TopologyHandle};
use capacity::{Capacity, Limits};
use table::{Route, RoutingTable, TableError};

/// Agent actions in flight at once when a region is drained or returned to service.
const ACTION_CONCURRENCY: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("{0}")]
    Refused(String),
    #[error("the routing endpoint could not listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
}

/// The `[routing]` settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutingSettings {
    pub limits: Limits,
    /// Fail a region back by itself once it has been healthy this long after trouble.
    pub auto_failback_after: Option<Duration>,
    /// Where `GET /v1/routing` is served; none: not served.
    pub listen: Option<std::net::SocketAddr>,
}

/// The table as it stands, with its version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub table: RoutingTable,
    pub version: i64,
    pub updated_at: Option<DateTime<Utc>>,
}

/// What a change did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub before: RoutingTable,
    pub after: RoutingTable,
    pub version: i64,
}

/// The outcome of asking a region's agents to stop or start serving.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentsMoved {
    pub ok: Vec<String>,
    pub failed: Vec<(String, String)>,
}

/// Owns the routing table. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    topology: TopologyHandle,
    orchestrator: Orchestrator,
    settings: RoutingSettings,
    current: RwLock<Snapshot>,
    /// Held across read-plan-journal-swap, so two changes never plan from one table.
    changes: tokio::sync::Mutex<()>,
    notices: broadcast::Sender<String>,
    /// Every change made, typed, for subscribers such as webhook notifications.
    applied: broadcast::Sender<RouteChange>,
    /// Each region's CPU demand as last measured while it served its own traffic. Once
    /// a region is failed over its agents idle, so their CPU no longer says what its
    /// traffic costs; without this, whether a second failover fits would depend on
    /// whether the poller had read the drained agents yet.
    demand: std::sync::Mutex<BTreeMap<String, f64>>,
}

/// A change of the routing table, as subscribers hear of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RouteChange {
    /// `failover`, `cascade`, `shift`, `failback` or `auto_failback`.
    pub kind: String,
    pub actor: String,
    pub frontend: String,
    pub reason: String,
    pub version: i64,
    /// Each region that sends traffic elsewhere, described as after the change.
    pub routes: Vec<String>,
}

impl Router {
    /// Loads the table from the registry, adding the regions of `topo` it lacks.
    pub async fn open(
        registry: Registry,
        topology: TopologyHandle,
        orchestrator: Orchestrator,
        settings: RoutingSettings,
    ) -> Result<Router, RoutingError> {
        let (table, version, updated_at) = registry.routing_table().await?;
        let table = table.with_regions(topology.snapshot().regions());
        let (notices, _) = broadcast::channel(64);
        let (applied, _) = broadcast::channel(64);
        let inner = Inner {
            registry,
            topology,
            orchestrator,
            settings,
            current: RwLock::new(Snapshot { table, version, updated_at }),
            changes: tokio::sync::Mutex::new(()),
            notices,
            applied,
            demand: std::sync::Mutex::new(BTreeMap::new()),
        };
        Ok(Router { inner: Arc::new(inner) })
    }

    pub fn settings(&self) -> &RoutingSettings {
        &self.inner.settings
    }

    /// The current table, with regions the fleet gained since it was stored.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = match self.inner.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        s.table = s.table.with_regions(self.inner.topology.snapshot().regions());
        s
    }

    pub fn table(&self) -> RoutingTable {
        self.snapshot().table
    }

    /// The loads of `topo` under the configured limits, a failed-over region keeping the
    /// demand it had while it served (see `Inner::demand`).
    pub fn capacity(&self, topo: &Topology) -> Capacity {
        let mut cap = Capacity::from_topology(topo, self.inner.settings.limits);
        let table = self.table();
        let mut demand = match self.inner.demand.lock() {
            Ok(d) => d,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (region, load) in cap.loads.iter_mut() {
            if table.serves_itself(region) {
                if load.serving > 0 {
                    demand.insert(region.clone(), load.demand_cpu);
                }
            } else if let Some(d) = demand.get(region) {
                load.demand_cpu = *d;
            }
        }
        cap
    }

    /// Announcements of changes Parley made by itself (cascades, automatic failbacks).
    pub fn notices(&self) -> broadcast::Receiver<String> {
        self.inner.notices.subscribe()
    }

    /// Every change of the table from now on (a lagging receiver loses the oldest).
    pub fn changes(&self) -> broadcast::Receiver<RouteChange> {
        self.inner.applied.subscribe()
    }

    pub async fn history(&self, limit: u32) -> Result<Vec<RoutingChange>, RoutingError> {
        Ok(self.inner.registry.routing_changes(limit).await?)
    }

    /// Plans from the current table with `plan`, journals, then makes it current.
    pub async fn apply(
        &self,
        kind: &str,
        actor: &Actor,
        reason: &str,
        plan: impl FnOnce(&RoutingTable, &Capacity) -> Result<RoutingTable, RoutingError>,
    ) -> Result<Applied, RoutingError> {
        let _guard = self.inner.changes.lock().await;
        let before = self.table();
        let cap = self.capacity(&self.inner.topology.snapshot());
        let after = plan(&before, &cap)?;
        after.validate()?;
        let change = NewRoutingChange {
            actor: &actor.name,
            frontend: &actor.frontend,
            kind,
            reason,
            before: &before,
            after: &after,
        };
        let version = self.inner.registry.record_routing_change(&change).await?;
        let snap = Snapshot { table: after.clone(), version, updated_at: Some(Utc::now()) };
        match self.inner.current.write() {
            Ok(mut s) => *s = snap,
            Err(poisoned) => *poisoned.into_inner() = snap,
        }
        let routes = after
            .regions
            .keys()
            .filter(|src| after.weight(src, src) < 100)
            .map(|src| format!("{src} -> {}", after.describe(src)))
            .collect();
        // No subscriber is fine: the registry journalled the change.
        let _ = self.inner.applied.send(RouteChange {
            kind: kind.to_string(),
            actor: actor.name.clone(),
            frontend: actor.frontend.clone(),
            reason: reason.to_string(),
            version,
            routes,
        });
        Ok(Applied { before, after, version })
    }

    /// Fails `from` over to `to` (or to the regions the capacity model picks).
    pub async fn failover(
        &self,
        from: &str,
        to: Option<&str>,
        actor: &Actor,
        reason: &str,
    ) -> Result<Applied, RoutingError> {
        self.apply("failover", actor, reason, |t, cap| {
            let targets = plan::choose(cap, t, from, to).map_err(|_| {
                RoutingError::Refused(format!(
                    "the regions that could take {from}'s traffic no longer have the headroom; nothing was changed"
                ))
            })?;
            Ok(table::failover(t, from, &targets)?)
        })
        .await
    }

    pub async fn shift(
        &self,
        from: &str,
        to: &str,
        percent: u8,
        actor: &Actor,
        reason: &str,
    ) -> Result<Applied, RoutingError> {
        self.apply("shift", actor, reason, |t, _| Ok(table::shift(t, from, to, percent)?)).await
    }

    pub async fn failback(&self, region: &str, actor: &Actor, reason: &str) -> Result<Applied, RoutingError> {
        let kind = if actor.frontend == "auto" { "auto_failback" } else { "failback" };
        self.apply(kind, actor, reason, |t, cap| match cap.loads.get(region).map(|l| l.health) {
            Some(RegionHealth::Healthy) | None => Ok(table::failback(t, region)?),
            Some(h) => Err(RoutingError::Refused(format!("{region} is {}; it is not failed back", h.as_str()))),
        })
        .await
    }

    /// Drains (`serve == false`) the reachable agents of `region`, or returns to
    /// service (`serve == true`) those of them a drain took out ([`returnable`]), all
    /// at once within [`ACTION_CONCURRENCY`], through the orchestrator so each action
    /// is journalled like any other. What it answers is what the agents did: a reply
    /// counts only those.
    pub async fn set_serving(&self, region: &str, serve: bool, actor: &Actor) -> AgentsMoved {
        let topo = self.inner.topology.snapshot();
        let action = if serve { AgentAction::Uncordon } else { AgentAction::Drain };
        let agents: Vec<(String, String)> = topo
            .region_agents(region)
            .filter(|a| if serve { returnable(a) } else { a.liveness.is_reachable() })
            .map(|a| (a.name.to_string(), a.endpoint.clone()))
            .collect();
        let orchestrator = &self.inner.orchestrator;
        let results: Vec<(String, Result<(), String>)> = futures::stream::iter(agents)
            .map(|(name, endpoint)| async move {
                let r = orchestrator
                    .agent_action(&name, &endpoint, action, actor)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                (name, r)
            })
            .buffer_unordered(ACTION_CONCURRENCY)
            .collect()
            .await;
        let mut moved = AgentsMoved::default();
        for (name, r) in results {
            match r {
                Ok(()) => moved.ok.push(name),
                Err(e) => moved.failed.push((name, e)),
            }
        }
        moved.ok.sort();
        moved
    }

    /// Whether an emergency stop is in force (any process may have recorded it): then
    /// Parley changes no routing by itself. An unreadable registry counts as frozen,
    /// since acting on a table nobody can journal would be worse.
    async fn frozen(&self) -> bool {
        match self.inner.registry.freeze().await {
            Ok(f) => f.is_some(),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the freeze; holding automatic routing changes");
                true
            }
        }
    }

    fn announce(&self, message: String) {
        tracing::info!(%message, "routing");
        let _ = self.inner.notices.send(message);
    }

    /// A region changed health: when it serves another region's traffic and is now
    /// partitioned, move everything it serves on to healthy regions with headroom.
    /// A degraded target is only announced: a single slow agent should not move a
    /// region's traffic without an operator.
    pub async fn on_region_changed(&self, region: &str, to: RegionHealth) {
        let table = self.table();
        let serves_others = table.regions.iter().any(|(src, _)| src != region && table.weight(src, region) > 0);
        if !serves_others {
            return;
        }
        let sources: Vec<String> = table::stranded(&table, region).into_iter().map(str::to_string).collect();
        if to == RegionHealth::Degraded {
            self.announce(format!(
                "{region}, which serves traffic of {}, is degraded; say \"fail over {region}\" to move it on.",
                sources.join(", ")
            ));
            return;
        }
        if to != RegionHealth::Partitioned {
            return;
        }
        if self.frozen().await {
            self.announce(format!(
                "Failover target {region} is partitioned, and its traffic was not moved on: the fleet is frozen."
            ));
            return;
        }
        let system = Actor::new("parley", "auto", crate::ops::Role::Admin);
        let reason = format!("cascade: failover target {region} is partitioned");
        let result = self
            .apply("cascade", &system, &reason, |t, cap| {
                let chosen: Vec<Route> = plan::cascade(cap, t, region);
                if chosen.is_empty() {
                    return Err(RoutingError::Refused(
                        "no healthy region of its environment is left to take it".to_string(),
                    ));
                }
                Ok(table::failover(t, region, &chosen)?)
            })
            .await;
        match result {
            Ok(applied) => {
                let lines: Vec<String> =
                    sources.iter().map(|s| format!("{s} -> {}", applied.after.describe(s))).collect();
                self.announce(format!(
                    "Failover target {region} is partitioned; moved its traffic on: {} (routing version {}).",
                    lines.join("; "),
                    applied.version
                ));
            }
            Err(e) => self.announce(format!(
                "Failover target {region} is partitioned, and its traffic could not be moved on: {e}."
            )),
        }
    }

    /// Starts the cascade watcher and, when configured, the automatic failback.
    pub fn spawn(
        &self,
        mut events: broadcast::Receiver<TopologyEvent>,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let router = self.clone();
        tokio::spawn(async move {
            // Evacuated regions seen unhealthy since their failover, and since when they are healthy.
            let mut troubled: HashMap<String, Option<Instant>> = HashMap::new();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                // The select only picks; the work happens after it, so no borrow of the
                // stop signal is held across an await.
                let event = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    e = events.recv() => Some(e),
                    _ = tick.tick() => None,
                };
                match event {
                    Some(Ok(TopologyEvent::RegionChanged { region, to, .. })) => {
                        router.on_region_changed(&region, to).await
                    }
                    Some(Ok(_)) | Some(Err(broadcast::error::RecvError::Lagged(_))) => {}
                    Some(Err(broadcast::error::RecvError::Closed)) => return,
                    None => router.auto_failback(&mut troubled).await,
                }
            }
        })
    }

    async fn auto_failback(&self, troubled: &mut HashMap<String, Option<Instant>>) {
        let Some(after) = self.inner.settings.auto_failback_after else { return };
        let table = self.table();
        let topo = self.inner.topology.snapshot();
        let evacuated: Vec<String> = table.evacuated().into_iter().map(str::to_string).collect();
        troubled.retain(|r, _| evacuated.contains(r));
        for region in evacuated {
            let healthy = topo.region_health(&region) == RegionHealth::Healthy;
            match troubled.get_mut(&region) {
                None if !healthy => {
                    troubled.insert(region, None);
                }
                Some(since) if !healthy => *since = None,
                Some(since @ None) => *since = Some(Instant::now()),
                // A freeze holds the failback; the region stays healthy-since, so it
                // fails back as soon as the freeze is lifted.
                Some(Some(t)) if t.elapsed() >= after && self.frozen().await => {}
                Some(Some(t)) if t.elapsed() >= after => {
                    let system = Actor::new("parley", "auto", crate::ops::Role::Admin);
                    let reason = format!("automatic failback: healthy for {} s", after.as_secs());
                    match self.failback(&region, &system, &reason).await {
                        Ok(applied) => {
                            let moved = self.set_serving(&region, true, &system).await;
                            troubled.remove(&region);
                            self.announce(format!(
                                "{region} has been healthy for {} s: failed it back automatically ({}, routing version {}).",
                                after.as_secs(),
                                returned_words(&moved),
                                applied.version
                            ));
                        }
                        Err(e) => tracing::warn!(%region, error = %e, "automatic failback"),
                    }
                }
                _ => {}
            }
        }
    }
}

/// Whether a failback returns `agent` to service: it answers and a drain (a
/// failover's, or an operator's) has it out of service. Cordoned agents were set
/// aside for a reason of their own and are left so.
pub fn returnable(agent: &crate::topology::AgentView) -> bool {
    use crate::agent::protocol::ServingState as S;
    matches!(agent.serving(), crate::topology::Serving::Now(S::Draining | S::Drained))
}

/// "3 agents back in service", or that none needed it, for replies and announcements.
pub fn returned_words(moved: &AgentsMoved) -> String {
    let mut out = match moved.ok.len() {
        0 if !moved.failed.is_empty() => "no agent back in service".to_string(),
        0 => "none of its agents was drained, so none needed returning to service".to_string(),
        1 => "1 agent back in service".to_string(),
        n => format!("{n} agents back in service"),
    };
    if !moved.failed.is_empty() {
        let names: Vec<String> = moved.failed.iter().take(4).map(|(n, e)| format!("{n} ({e})")).collect();
        out.push_str(&format!("; {} could not be returned: {}", moved.failed.len(), names.join(", ")));
    }
    out
}
