//! The poller: builds Parley's topology model from what the agents themselves report.
//!
//! Every pass asks each agent of the inventory for `GET /v1/status` (a bounded number
//! at a time, over one shared [`AgentClient`]), judges its liveness, builds a whole new
//! [`Topology`] and swaps it into the [`TopologyHandle`] readers hold. Nothing comes
//! from a fixture: the same code drives the embedded demo fleet and a real one.
//!
//! Between passes the poller remembers, per agent, what it last reported and when, so
//! that an agent that stops answering keeps its last known data while it turns
//! suspect, then down. Liveness and region-health transitions are broadcast as
//! [`TopologyEvent`]s for watchers. An agent whose liveness changes `flap_threshold`
//! times within `flap_window` is announced once as flapping and its further
//! transitions are kept out of the events until it has been stable for a whole
//! window, so a flaky agent cannot flood the operator.
//!
//! The inventory can change at run time: [`Poller::add_entry`] (DNS SRV discovery) and
//! [`Poller::register`] (the registration endpoint) add agents, [`Poller::deregister`]
//! drops a registered agent that is leaving on purpose, so that it vanishes from the
//! model instead of turning down. Liveness comes from the polls alone: a heartbeat
//! ([`Poller::knows`]) only tells an agent whether Parley still has it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::inventory::InventoryEntry;
use super::{
    AgentName, AgentView, Catalog, Flapping, HealthThresholds, Liveness, RegionHealth, Topology, TopologyHandle,
};
use crate::agent::protocol::{AgentStatus, Metrics, ServingState, PROTOCOL_VERSION};
use crate::agent::{AgentClient, AgentError};

/// Shown for an agent that never answered and whose inventory entry gives no hint.
const UNKNOWN_PLACE: &str = "unknown";

/// Status requests in flight at once unless `[poll] concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 64;

/// How often and how patiently the poller asks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollerConfig {
    /// Time between the starts of two passes.
    pub interval: Duration,
    /// An agent silent for this long since its last answer is suspect.
    pub suspect_after: Duration,
    /// An agent silent for this long since its last answer is down.
    pub down_after: Duration,
    /// Status requests in flight at once.
    pub concurrency: usize,
    pub thresholds: HealthThresholds,
    /// Liveness changes within `flap_window` that make an agent flapping.
    pub flap_threshold: usize,
    pub flap_window: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            interval: Duration::from_secs(1),
            suspect_after: Duration::from_secs(2),
            down_after: Duration::from_millis(3500),
            concurrency: DEFAULT_CONCURRENCY,
            thresholds: HealthThresholds::default(),
            flap_threshold: 4,
            flap_window: Duration::from_secs(60),
        }
    }
}

/// A change the poller saw between two passes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TopologyEvent {
    LivenessChanged {
        agent: String,
        region: String,
        from: Liveness,
        to: Liveness,
        at: DateTime<Utc>,
    },
    RegionChanged {
        region: String,
        from: RegionHealth,
        to: RegionHealth,
        at: DateTime<Utc>,
    },
    /// The agent changed liveness `changes` times within the flap window; its
    /// transitions are not reported one by one until it settles.
    Flapping {
        agent: String,
        region: String,
        changes: usize,
        at: DateTime<Utc>,
    },
    /// A flapping agent has kept one liveness for a whole flap window.
    Settled {
        agent: String,
        region: String,
        liveness: Liveness,
        at: DateTime<Utc>,
    },
    /// A registered agent deregistered (it is shutting down on purpose) and is no
    /// longer part of the model.
    Left {
        agent: String,
        region: String,
        at: DateTime<Utc>,
    },
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshStats {
    /// Agents that answered with a valid status.
    pub answered: usize,
    /// Agents that did not (unreachable, timed out, refused, or not the protocol).
    pub failed: usize,
    /// Events broadcast by this pass.
    pub events: usize,
    pub elapsed: Duration,
}

/// What the poller remembers about one agent between passes.
#[derive(Debug)]
struct Slot {
    /// The agent as the model last showed it (last known data while it is silent).
    view: AgentView,
    /// Monotonic time of the last answer, for the suspect/down clocks.
    answered_at: Option<Instant>,
    /// When its liveness changed lately (within the flap window).
    changes: VecDeque<Instant>,
    flapping: bool,
    /// The last pass got no answer from it: an answer now is a bounce.
    missed: bool,
    /// The agent registered itself, so it may also deregister itself.
    registered: bool,
    /// Deregistered: out of the model at once, out of the inventory at the start of the
    /// next pass (see `Memory::entries`).
    removed: bool,
    /// When the entry was added, and whether a pass has asked it since: what
    /// [`Poller::proven_dead`] judges by.
    added_at: Instant,
    polled: bool,
}

impl Slot {
    fn new(entry: &InventoryEntry, now: DateTime<Utc>) -> Slot {
        Slot {
            view: unseen_view(entry, now),
            answered_at: None,
            changes: VecDeque::new(),
            flapping: false,
            missed: false,
            registered: false,
            removed: false,
            added_at: Instant::now(),
            polled: false,
        }
    }
}

/// What [`Poller::deregister`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deregistered {
    /// The agent (every registered endpoint of that name) is out of the model.
    Removed(usize),
    /// The name is known, but from the inventory file or DNS SRV, which would bring it
    /// back: it is left alone.
    NotRegistered,
    Unknown,
}

#[derive(Debug)]
struct Memory {
    /// What to poll, shared with the pass in flight, which addresses slots by index.
    /// So that those indices stay valid, entries are only appended while a pass may be
    /// running; a deregistered one is marked `removed` in its slot and taken out at the
    /// start of the next pass, under the pass lock.
    entries: Arc<Vec<InventoryEntry>>,
    /// One per inventory entry, in inventory order.
    slots: Vec<Slot>,
    regions: HashMap<String, RegionHealth>,
    /// Names reported by more than one endpoint at the last pass, so the warning is
    /// logged when the set changes rather than every second.
    duplicates: Vec<String>,
    passes: u64,
}

/// How one status request ended.
struct Outcome {
    index: usize,
    result: Result<AgentStatus, AgentError>,
    at: Instant,
    at_utc: DateTime<Utc>,
    /// When the request was sent: what the answer says is at least this new.
    asked_utc: DateTime<Utc>,
}

/// Polls a fleet and keeps the topology model current.
pub struct Poller {
    client: AgentClient,
    catalog: Arc<Catalog>,
    config: PollerConfig,
    handle: TopologyHandle,
    events: broadcast::Sender<TopologyEvent>,
    memory: Mutex<Memory>,
    /// Serialises passes, so a slow pass can never overwrite a newer one's results.
    pass: tokio::sync::Mutex<()>,
    /// The last pass's duration in microseconds and how many passes ran, for `/metrics`.
    last_pass_us: std::sync::atomic::AtomicU64,
    pass_count: std::sync::atomic::AtomicU64,
}

impl Poller {
    pub fn new(
        inventory: Vec<InventoryEntry>,
        client: AgentClient,
        catalog: Arc<Catalog>,
        config: PollerConfig,
    ) -> Poller {
        let now = Utc::now();
        let slots = inventory.iter().map(|entry| Slot::new(entry, now)).collect();
        // Room for every agent and region to change at once (a partition), so a watcher
        // that reads after each pass never lags.
        let capacity = (inventory.len() + 64).clamp(256, 16_384);
        let (events, _) = broadcast::channel(capacity);
        // Until the first pass the model is empty (refreshed_at None): unknown, not down.
        let handle = TopologyHandle::new(Topology::empty(Arc::clone(&catalog)));
        let mut config = config;
        config.concurrency = config.concurrency.max(1);
        Poller {
            client,
            catalog,
            config,
            handle,
            events,
            memory: Mutex::new(Memory {
                entries: Arc::new(inventory),
                slots,
                regions: HashMap::new(),
                duplicates: Vec::new(),
                passes: 0,
            }),
            pass: tokio::sync::Mutex::new(()),
            last_pass_us: std::sync::atomic::AtomicU64::new(0),
            pass_count: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How long the last full pass took and how many passes have run (for `/metrics`).
    pub fn pass_stats(&self) -> (Duration, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (Duration::from_micros(self.last_pass_us.load(Relaxed)), self.pass_count.load(Relaxed))
    }

    /// The handle readers take snapshots from.
    pub fn handle(&self) -> TopologyHandle {
        self.handle.clone()
    }

    /// Liveness and region-health transitions from now on.
    pub fn events(&self) -> broadcast::Receiver<TopologyEvent> {
        self.events.subscribe()
    }

    pub fn config(&self) -> &PollerConfig {
        &self.config
    }

    /// The inventory being polled now (without agents that deregistered).
    pub fn inventory(&self) -> Arc<Vec<InventoryEntry>> {
        let memory = self.lock();
        if memory.slots.iter().any(|s| s.removed) {
            let kept = memory.entries.iter().zip(&memory.slots).filter(|(_, s)| !s.removed).map(|(e, _)| e.clone());
            Arc::new(kept.collect())
        } else {
            Arc::clone(&memory.entries)
        }
    }

    /// Adds an agent to poll from the next pass on. An endpoint already polled keeps
    /// its slot and only takes the new hints; answers whether the endpoint is new.
    pub fn add_entry(&self, entry: InventoryEntry) -> bool {
        self.add(entry, false)
    }

    /// [`Poller::add_entry`] for an agent that announced itself, which may later leave
    /// with [`Poller::deregister`].
    pub fn register(&self, entry: InventoryEntry) -> bool {
        self.add(entry, true)
    }

    fn add(&self, entry: InventoryEntry, registered: bool) -> bool {
        let mut memory = self.lock();
        let key = entry.endpoint.to_ascii_lowercase();
        if let Some(i) = memory.entries.iter().position(|e| e.endpoint.to_ascii_lowercase() == key) {
            let Memory { entries, slots, .. } = &mut *memory;
            let Some(slot) = slots.get_mut(i) else { return false };
            let returning = slot.removed;
            if returning {
                // Back before its tombstone was swept: a fresh start, not its old history.
                *slot = Slot::new(&entry, Utc::now());
            }
            slot.registered |= registered;
            if entries[i] != entry {
                Arc::make_mut(entries)[i] = entry;
            }
            return returning;
        }
        let mut slot = Slot::new(&entry, Utc::now());
        slot.registered = registered;
        Arc::make_mut(&mut memory.entries).push(entry);
        memory.slots.push(slot);
        true
    }

    /// Takes the registered agent called `name` (its reported name, or the name it
    /// registered with) out of the model at once and out of the inventory before the
    /// next pass: an agent shutting down on purpose is gone, not down. Agents from the
    /// inventory file or DNS SRV are not touched, since those would bring them back.
    pub fn deregister(&self, name: &str) -> Deregistered {
        let mut memory = self.lock();
        let Memory { entries, slots, .. } = &mut *memory;
        let mut known = false;
        let mut left = Vec::new();
        for (slot, entry) in slots.iter_mut().zip(entries.iter()) {
            if slot.removed || (slot.view.name != name && entry.name.as_deref() != Some(name)) {
                continue;
            }
            known = true;
            if slot.registered {
                slot.removed = true;
                left.push(TopologyEvent::Left {
                    agent: slot.view.name.to_string(),
                    region: slot.view.region.clone(),
                    at: Utc::now(),
                });
            }
        }
        if left.is_empty() {
            return if known { Deregistered::NotRegistered } else { Deregistered::Unknown };
        }
        let removed = left.len();
        // Under the memory lock, like a pass's own swap, so that a pass finishing now
        // cannot put back a snapshot that still has the agent. Before the first pass the
        // model is empty (unknown, not down) and stays so.
        if memory.passes > 0 {
            let refreshed = self.handle.snapshot().refreshed_at();
            self.handle.replace(self.build(&memory, refreshed));
        }
        tracing::info!(agent = %name, endpoints = removed, "agent deregistered");
        for event in left {
            // No receivers is not an error: nobody is watching right now.
            let _ = self.events.send(event);
        }
        Deregistered::Removed(removed)
    }

    /// The snapshot of what the memory holds now.
    fn build(&self, memory: &Memory, refreshed_at: Option<DateTime<Utc>>) -> Topology {
        let agents: Vec<AgentView> = memory.slots.iter().filter(|s| !s.removed).map(|s| s.view.clone()).collect();
        Topology::new(agents, Arc::clone(&self.catalog), refreshed_at)
    }

    /// Sweeps deregistered entries out and answers what the next pass polls. Only
    /// called with the pass lock held, so no pass holds indices into the old list.
    fn sweep(&self) -> Arc<Vec<InventoryEntry>> {
        let mut memory = self.lock();
        if memory.slots.iter().any(|s| s.removed) {
            let Memory { entries, slots, .. } = &mut *memory;
            let kept: Vec<InventoryEntry> =
                entries.iter().zip(slots.iter()).filter(|(_, s)| !s.removed).map(|(e, _)| e.clone()).collect();
            *entries = Arc::new(kept);
            slots.retain(|s| !s.removed);
        }
        Arc::clone(&memory.entries)
    }

    /// Whether the poller knows an agent called `name` (its reported name, or the
    /// inventory's hint before it answered). A heartbeat asks only this: liveness comes
    /// from Parley's own polls, so a heartbeat, which anyone can send, never keeps an
    /// agent that does not answer looking alive.
    pub fn knows(&self, name: &str) -> bool {
        !self.endpoints_named(name).is_empty()
    }

    /// The endpoints polled for an agent called `name` (reported or hinted).
    pub fn endpoints_named(&self, name: &str) -> Vec<String> {
        let memory = self.lock();
        memory
            .slots
            .iter()
            .zip(memory.entries.iter())
            .filter(|(slot, entry)| !slot.removed && (slot.view.name == name || entry.name.as_deref() == Some(name)))
            .map(|(_, entry)| entry.endpoint.clone())
            .collect()
    }

    /// Whether Parley's own polls have shown the agent at `endpoint` dead: asked at
    /// least once, down at the last pass, and silent (never answered, or not since)
    /// for `down_after`. An endpoint that is not polled at all counts as dead too.
    pub fn proven_dead(&self, endpoint: &str) -> bool {
        let now = Instant::now();
        let memory = self.lock();
        let found = memory
            .slots
            .iter()
            .zip(memory.entries.iter())
            .find(|(slot, entry)| !slot.removed && entry.endpoint.eq_ignore_ascii_case(endpoint));
        match found {
            None => true,
            Some((slot, _)) => {
                let silent_since = slot.answered_at.unwrap_or(slot.added_at);
                slot.polled
                    && slot.view.liveness == Liveness::Down
                    && now.saturating_duration_since(silent_since) >= self.config.down_after
            }
        }
    }

    /// Stops polling the registered entry at `endpoint` without announcing anything:
    /// the agent moved to another endpoint ([`Poller::register`]ed next), it did not
    /// leave. Answers whether there was such an entry.
    pub fn forget_registered(&self, endpoint: &str) -> bool {
        let mut memory = self.lock();
        let mut forgot = false;
        let Memory { entries, slots, .. } = &mut *memory;
        for (slot, entry) in slots.iter_mut().zip(entries.iter()) {
            if !slot.removed && slot.registered && entry.endpoint.eq_ignore_ascii_case(endpoint) {
                slot.removed = true;
                forgot = true;
            }
        }
        if forgot && memory.passes > 0 {
            // As in `deregister`: under the memory lock, so no pass puts the twin back.
            let refreshed = self.handle.snapshot().refreshed_at();
            self.handle.replace(self.build(&memory, refreshed));
        }
        forgot
    }

    /// Stops polling the agent at `endpoint`, which discovery (DNS SRV) added and whose
    /// record has been gone for its grace period: it left the fleet, it is not down.
    /// Announced as [`TopologyEvent::Left`]. Registered agents are not touched (they
    /// leave by deregistering). Answers whether there was such an entry.
    pub fn drop_discovered(&self, endpoint: &str) -> bool {
        let mut memory = self.lock();
        let Memory { entries, slots, .. } = &mut *memory;
        let mut left = Vec::new();
        for (slot, entry) in slots.iter_mut().zip(entries.iter()) {
            if !slot.removed && !slot.registered && entry.endpoint.eq_ignore_ascii_case(endpoint) {
                slot.removed = true;
                left.push(TopologyEvent::Left {
                    agent: slot.view.name.to_string(),
                    region: slot.view.region.clone(),
                    at: Utc::now(),
                });
            }
        }
        if left.is_empty() {
            return false;
        }
        // As in `deregister`: under the memory lock, so no pass puts it back.
        if memory.passes > 0 {
            let refreshed = self.handle.snapshot().refreshed_at();
            self.handle.replace(self.build(&memory, refreshed));
        }
        drop(memory);
        tracing::info!(%endpoint, "agent dropped: its DNS SRV record is gone");
        for event in left {
            let _ = self.events.send(event);
        }
        true
    }

    /// One full pass over the inventory; the new snapshot is in the handle when it returns.
    pub async fn refresh(&self) -> RefreshStats {
        let _pass = self.pass.lock().await;
        let started = Instant::now();
        let client = &self.client;
        let inventory = self.sweep();
        // Indices rather than `&InventoryEntry` items: a closure taking a borrowed argument
        // makes the future lose `Send` for `tokio::spawn` (rust-lang/rust#102211).
        let inventory = &*inventory;
        let mut outcomes: Vec<Outcome> = stream::iter(0..inventory.len())
            .map(|index| async move {
                let entry = &inventory[index];
                let asked_utc = Utc::now();
                let result = client.status(&entry.endpoint).await.and_then(|status| check_protocol(entry, status));
                Outcome { index, result, at: Instant::now(), at_utc: Utc::now(), asked_utc }
            })
            .buffer_unordered(self.config.concurrency)
            .collect()
            .await;
        outcomes.sort_unstable_by_key(|o| o.index);

        let polled = outcomes.len();
        let (events, answered) = self.apply(outcomes);
        let failed = polled - answered;
        let sent = events.len();
        for event in events {
            // No receivers is not an error: nobody is watching right now.
            let _ = self.events.send(event);
        }
        let stats = RefreshStats { answered, failed, events: sent, elapsed: started.elapsed() };
        self.last_pass_us
            .store(u64::try_from(stats.elapsed.as_micros()).unwrap_or(u64::MAX), std::sync::atomic::Ordering::Relaxed);
        self.pass_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(
            answered,
            failed,
            events = sent,
            elapsed_ms = stats.elapsed.as_millis() as u64,
            "topology refreshed"
        );
        stats
    }

    /// Refreshes every `interval` until `shutdown` turns true (or its sender goes away).
    pub fn spawn(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.config.interval);
            // A pass slower than the interval delays the next one instead of bunching them.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                if *shutdown.borrow() {
                    return;
                }
                tokio::select! {
                    _ = ticks.tick() => {}
                    changed = shutdown.changed() => {
                        if changed.is_err() { return; }
                        continue;
                    }
                }
                tokio::select! {
                    _ = self.refresh() => {}
                    // Dropping a pass mid-way is safe: nothing is applied until its end.
                    changed = shutdown.changed() => {
                        if changed.is_err() { return; }
                    }
                }
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        // The memory is replaced field by field under the lock; a panic cannot leave a
        // slot half-written in a way the next pass does not overwrite.
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Folds one pass's outcomes into the memory, swaps the new snapshot in and answers
    /// the events. Synchronous: the lock is never held across an await.
    fn apply(&self, outcomes: Vec<Outcome>) -> (Vec<TopologyEvent>, usize) {
        let now = Instant::now();
        let now_utc = Utc::now();
        let mut memory = self.lock();
        let first_pass = memory.passes == 0;
        memory.passes += 1;
        let mut events = Vec::new();
        let mut answered = 0;
        let entries = Arc::clone(&memory.entries);
        for outcome in outcomes {
            let Some(slot) = memory.slots.get_mut(outcome.index) else { continue };
            let Some(entry) = entries.get(outcome.index) else { continue };
            if slot.removed {
                // Deregistered while this pass was asking it: it is gone, whatever it said.
                continue;
            }
            slot.polled = true;
            // An agent that registered under one name and reports another would take
            // that other agent's name in the model (and its rollouts): not an answer.
            let result = match outcome.result {
                Ok(status) if slot.registered && entry.name.as_deref().is_some_and(|n| n != status.name) => {
                    Err(AgentError::BadResponse {
                        endpoint: entry.endpoint.clone(),
                        reason: format!(
                            "registered as `{}` but reports the name `{}`",
                            entry.name.as_deref().unwrap_or_default(),
                            names_shown(&status.name)
                        ),
                    })
                }
                other => other,
            };

            let previous = slot.view.liveness;
            // An answer after a missed poll is a bounce, and counts as a change even
            // when liveness did not move: an agent down every other second never stays
            // silent long enough to turn suspect, yet it is anything but healthy.
            let bounced = result.is_ok() && slot.missed;
            slot.missed = result.is_err();
            let mut why: Option<AgentError> = None;
            let next = match result {
                Ok(status) => {
                    answered += 1;
                    let liveness = if self.config.thresholds.breaches(&status.metrics).is_empty() {
                        Liveness::Healthy
                    } else {
                        Liveness::Degraded
                    };
                    update_view(&mut slot.view, entry, status);
                    slot.view.last_seen = Some(outcome.at_utc);
                    slot.view.reported_at = Some(outcome.at_utc);
                    slot.view.status_asked_at = Some(outcome.asked_utc);
                    slot.answered_at = Some(outcome.at);
                    liveness
                }
                Err(e) => {
                    tracing::debug!(endpoint = %entry.endpoint, error = %e, "agent did not answer");
                    why = Some(e);
                    match slot.answered_at {
                        None => Liveness::Down,
                        Some(at) => {
                            let silent = now.saturating_duration_since(at);
                            if silent >= self.config.down_after {
                                Liveness::Down
                            } else if silent >= self.config.suspect_after {
                                Liveness::Suspect
                            } else {
                                // One missed answer inside the grace period changes nothing.
                                previous
                            }
                        }
                    }
                }
            };
            if first_pass || next != previous {
                slot.view.liveness = next;
                slot.view.liveness_since = now_utc;
            }
            if !first_pass && (next != previous || bounced) {
                let reason = why.as_ref().map(ToString::to_string).unwrap_or_default();
                slot.changes.push_back(now);
                while slot.changes.front().is_some_and(|&t| now.saturating_duration_since(t) > self.config.flap_window)
                {
                    slot.changes.pop_front();
                }
                if slot.flapping {
                    tracing::debug!(agent = %slot.view.name, from = previous.as_str(), to = next.as_str(), "liveness changed (flapping)");
                } else if slot.changes.len() >= self.config.flap_threshold.max(2) {
                    slot.flapping = true;
                    tracing::warn!(agent = %slot.view.name, changes = slot.changes.len(), "agent is flapping");
                    events.push(TopologyEvent::Flapping {
                        agent: slot.view.name.to_string(),
                        region: slot.view.region.clone(),
                        changes: slot.changes.len(),
                        at: now_utc,
                    });
                } else if next != previous {
                    tracing::info!(agent = %slot.view.name, from = previous.as_str(), to = next.as_str(), %reason, "liveness changed");
                    events.push(TopologyEvent::LivenessChanged {
                        agent: slot.view.name.to_string(),
                        region: slot.view.region.clone(),
                        from: previous,
                        to: next,
                        at: now_utc,
                    });
                }
            }
        }
        for slot in memory.slots.iter_mut().filter(|s| !s.removed) {
            if slot.flapping {
                // Changes that left the window no longer count, also in passes without one.
                while slot.changes.front().is_some_and(|&t| now.saturating_duration_since(t) > self.config.flap_window)
                {
                    slot.changes.pop_front();
                }
            }
            if slot.flapping
                && slot.changes.back().is_none_or(|&t| now.saturating_duration_since(t) >= self.config.flap_window)
            {
                slot.flapping = false;
                slot.changes.clear();
                tracing::info!(agent = %slot.view.name, liveness = slot.view.liveness.as_str(), "agent settled");
                events.push(TopologyEvent::Settled {
                    agent: slot.view.name.to_string(),
                    region: slot.view.region.clone(),
                    liveness: slot.view.liveness,
                    at: now_utc,
                });
            }
            slot.view.flapping =
                slot.flapping.then_some(Flapping { changes: slot.changes.len(), window: self.config.flap_window });
        }

        let topology = self.build(&memory, Some(now_utc));
        let duplicates = duplicate_names(topology.agents());
        if duplicates != memory.duplicates {
            if !duplicates.is_empty() {
                tracing::warn!(names = ?duplicates, "several endpoints report the same agent name; `agent:<name>` is ambiguous");
            }
            memory.duplicates = duplicates;
        }

        let mut regions = HashMap::with_capacity(topology.regions().len());
        for region in topology.regions() {
            let health = topology.region_health(region);
            if let Some(&before) = memory.regions.get(region) {
                if before != health && !first_pass {
                    tracing::info!(%region, from = before.as_str(), to = health.as_str(), "region health changed");
                    events.push(TopologyEvent::RegionChanged {
                        region: region.clone(),
                        from: before,
                        to: health,
                        at: now_utc,
                    });
                }
            }
            regions.insert(region.clone(), health);
        }
        memory.regions = regions;
        // Swapped in under the memory lock: see `Poller::deregister`.
        self.handle.replace(topology);
        (events, answered)
    }
}

/// At most 64 characters of a name an agent reported, for a log line.
fn names_shown(name: &str) -> String {
    name.chars().take(64).flat_map(char::escape_default).collect()
}

/// An answer in another protocol version is not something the model can trust.
fn check_protocol(entry: &InventoryEntry, status: AgentStatus) -> Result<AgentStatus, AgentError> {
    if status.protocol == PROTOCOL_VERSION {
        Ok(status)
    } else {
        Err(AgentError::BadResponse {
            endpoint: entry.endpoint.clone(),
            reason: format!("speaks protocol {}, Parley speaks {PROTOCOL_VERSION}", status.protocol),
        })
    }
}

/// An agent that has never answered: inventory hints only.
fn unseen_view(entry: &InventoryEntry, now: DateTime<Utc>) -> AgentView {
    AgentView {
        name: AgentName::new(entry.name.as_deref().unwrap_or(&entry.endpoint)),
        endpoint: entry.endpoint.clone(),
        region: entry.region.clone().unwrap_or_else(|| UNKNOWN_PLACE.to_string()),
        zone: entry.zone.clone().unwrap_or_else(|| UNKNOWN_PLACE.to_string()),
        labels: BTreeMap::new(),
        capabilities: Vec::new(),
        extensions: BTreeMap::new(),
        metrics: Metrics::default(),
        // A placeholder, never told as a state: `reported_at: None` makes
        // `AgentView::serving` say it is unknown. Drained, so nothing is scheduled there.
        state: ServingState::Drained,
        liveness: Liveness::Down,
        liveness_since: now,
        last_seen: None,
        reported_at: None,
        flapping: None,
        health_source: None,
        status_asked_at: None,
    }
}

/// Takes what the agent reports (its own name and place win over the inventory's
/// hints, which may be stale); an empty field falls back to the hint.
fn update_view(view: &mut AgentView, entry: &InventoryEntry, status: AgentStatus) {
    let or_hint = |reported: String, hint: &Option<String>, fallback: &str| {
        if reported.trim().is_empty() {
            hint.clone().unwrap_or_else(|| fallback.to_string())
        } else {
            reported
        }
    };
    let name = or_hint(status.name, &entry.name, &entry.endpoint);
    // The name rarely changes; keeping the shared one spares an allocation per agent
    // per pass and keeps every snapshot pointing at one copy.
    if view.name != name {
        view.name = AgentName::from(name);
    }
    view.region = or_hint(status.region, &entry.region, UNKNOWN_PLACE);
    view.zone = or_hint(status.zone, &entry.zone, UNKNOWN_PLACE);
    view.labels = status.labels;
    view.capabilities = status.capabilities;
    view.extensions = status.extensions.into_iter().map(|e| (e.name, e.version)).collect();
    view.metrics = status.metrics;
    view.state = status.state;
    view.health_source = status.health_source;
}

/// Names reported by more than one endpoint, sorted. The model keeps every such agent
/// (each is real) rather than guessing which one the name means.
fn duplicate_names(agents: &[AgentView]) -> Vec<String> {
    let mut seen: HashMap<&str, bool> = HashMap::with_capacity(agents.len());
    let mut out = Vec::new();
    for a in agents {
        match seen.get_mut(a.name.as_str()) {
            Some(reported) if !*reported => {
                *reported = true;
                out.push(a.name.to_string());
            }
            Some(_) => {}
            None => {
                seen.insert(a.name.as_str(), false);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::demo::{demo_members, DemoFleet, DemoOptions};
    use crate::agent::faults::FaultSpec;
    use crate::agent::server::{self, Agent, AgentConfig};

    fn client() -> AgentClient {
        AgentClient::new(Duration::from_millis(500), None).unwrap()
    }

    fn catalog() -> Arc<Catalog> {
        Arc::new(Catalog::embedded().unwrap())
    }

    fn short() -> PollerConfig {
        PollerConfig {
            interval: Duration::from_millis(50),
            suspect_after: Duration::from_millis(100),
            down_after: Duration::from_millis(300),
            ..PollerConfig::default()
        }
    }

    #[tokio::test]
    async fn the_demo_fleet_polls_into_the_product_pages_topology() {
        let fleet = DemoFleet::start(DemoOptions::default()).await.unwrap();
        let inventory = fleet.inventory();
        let poller = Poller::new(inventory.clone(), client(), catalog(), PollerConfig::default());
        let handle = poller.handle();
        assert!(handle.snapshot().agents().is_empty());
        assert_eq!(handle.snapshot().refreshed_at(), None);

        let stats = poller.refresh().await;
        assert_eq!((stats.answered, stats.failed, stats.events), (48, 0, 0));
        let t = handle.snapshot();
        assert_eq!(t.agents().len(), 48);
        assert_eq!(t.regions(), ["us-east", "us-west", "eu-west", "ap-south"]);
        assert_eq!(
            t.zones(),
            ["us-east-a", "us-east-b", "us-west-a", "us-west-b", "eu-west-a", "eu-west-b", "ap-south-a", "ap-south-b"]
        );
        // Inventory order.
        let endpoints: Vec<&str> = t.agents().iter().map(|a| a.endpoint.as_str()).collect();
        let expected: Vec<&str> = inventory.iter().map(|e| e.endpoint.as_str()).collect();
        assert_eq!(endpoints, expected);

        let regions = ["us-east", "us-west", "eu-west", "ap-south"];
        for (tier, per_region) in [("edge", 6), ("core", 4), ("gpu", 2)] {
            for n in 1..=per_region * 4 {
                let a = t.agent(&format!("{tier}-{n}")).unwrap();
                let r = (n - 1) / per_region;
                let half = if (n - 1) % per_region < per_region / 2 { "a" } else { "b" };
                assert_eq!(a.region, regions[r], "{}", a.name);
                assert_eq!(a.zone, format!("{}-{half}", regions[r]), "{}", a.name);
                assert_eq!(a.env(), Some(if r == 3 { "staging" } else { "production" }));
                assert_eq!(a.liveness, Liveness::Healthy, "{}: {:?}", a.name, a.metrics);
                assert_eq!(a.state, ServingState::Active);
                assert!(a.last_seen.is_some());
                let mut want = vec![("auth-filter", "2.0.3"), ("log-shipper", "1.4.2"), ("rate-limiter", "1.0.0")];
                if tier == "gpu" {
                    assert!(a.has_capability("gpu"));
                    want.push(("model-server", "0.3.0"));
                    want.sort();
                } else {
                    assert_eq!(a.tier(), Some(tier));
                }
                let got: Vec<(&str, &str)> = a.extensions.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                assert_eq!(got, want, "{}", a.name);
            }
        }
        for r in regions {
            assert_eq!(t.region_health(r), RegionHealth::Healthy);
        }

        // A change made through the protocol shows up in the next pass; liveness_since
        // survives passes in which liveness did not change.
        let since = t.agent("edge-7").unwrap().liveness_since;
        let ep = &t.agent("edge-7").unwrap().endpoint;
        client().install(ep, "auth-filter", "2.1.0").await.unwrap();
        poller.refresh().await;
        let t = handle.snapshot();
        let a = t.agent("edge-7").unwrap();
        assert_eq!(a.extensions["auth-filter"], "2.1.0");
        assert_eq!(a.liveness_since, since);
        assert_eq!(t.agent("edge-8").unwrap().extensions["auth-filter"], "2.0.3");
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn silent_agents_turn_suspect_then_down_and_a_dead_region_is_partitioned() {
        let members: Vec<_> = demo_members().unwrap().into_iter().filter(|m| m.region == "ap-south").take(3).collect();
        let fleet = DemoFleet::start_members(members.clone(), DemoOptions::default()).await.unwrap();
        // Wider than short(): the grace-period step must not race a busy test machine.
        let config = PollerConfig {
            suspect_after: Duration::from_millis(250),
            down_after: Duration::from_millis(600),
            ..short()
        };
        let poller = Poller::new(fleet.inventory(), client(), catalog(), config);
        let mut events = poller.events();
        poller.refresh().await;
        let first = poller.handle().snapshot();
        assert!(first.agents().iter().all(|a| a.liveness == Liveness::Healthy));
        assert!(events.try_recv().is_err(), "the first pass reports no transitions");

        fleet.shutdown().await;
        // Inside the grace period a missed answer changes nothing.
        let stats = poller.refresh().await;
        assert_eq!((stats.answered, stats.failed), (0, 3));
        assert!(poller.handle().snapshot().agents().iter().all(|a| a.liveness == Liveness::Healthy));

        tokio::time::sleep(Duration::from_millis(270)).await;
        poller.refresh().await;
        let t = poller.handle().snapshot();
        for (a, m) in t.agents().iter().zip(&members) {
            assert_eq!(a.liveness, Liveness::Suspect);
            // Last known data is kept.
            assert_eq!(a.name, m.name);
            assert_eq!(a.extensions["auth-filter"], "2.0.3");
            assert_eq!(a.last_seen, first.agent(&m.name).unwrap().last_seen);
        }
        assert_eq!(t.region_health("ap-south"), RegionHealth::Partitioned);
        let got: Vec<TopologyEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(
            matches!(&got[0], TopologyEvent::LivenessChanged { agent, region, from: Liveness::Healthy, to: Liveness::Suspect, .. } if agent == "edge-19" && region == "ap-south")
        );
        assert!(
            matches!(&got[3], TopologyEvent::RegionChanged { region, from: RegionHealth::Healthy, to: RegionHealth::Partitioned, .. } if region == "ap-south")
        );

        tokio::time::sleep(Duration::from_millis(350)).await;
        poller.refresh().await;
        let t = poller.handle().snapshot();
        assert!(t.agents().iter().all(|a| a.liveness == Liveness::Down));
        let got: Vec<TopologyEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert_eq!(got.len(), 3, "partitioned stays partitioned: {got:?}");
        assert!(got
            .iter()
            .all(|e| matches!(e, TopologyEvent::LivenessChanged { from: Liveness::Suspect, to: Liveness::Down, .. })));
    }

    #[tokio::test]
    async fn an_agent_that_never_answered_is_down_with_its_hints() {
        // Bind then drop: a port nobody listens on.
        let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        let inventory = vec![
            InventoryEntry {
                endpoint: format!("http://{addr}"),
                name: Some("edge-99".into()),
                region: Some("eu-west".into()),
                zone: Some("eu-west-b".into()),
            },
            InventoryEntry { endpoint: "http://127.0.0.1:1".into(), name: None, region: None, zone: None },
        ];
        let poller = Poller::new(inventory, client(), catalog(), short());
        let stats = poller.refresh().await;
        assert_eq!((stats.answered, stats.failed), (0, 2));
        let t = poller.handle().snapshot();
        let a = t.agent("edge-99").unwrap();
        assert_eq!(
            (a.region.as_str(), a.zone.as_str(), a.liveness, a.last_seen),
            ("eu-west", "eu-west-b", Liveness::Down, None)
        );
        let b = t.agent("http://127.0.0.1:1").unwrap();
        assert_eq!((b.region.as_str(), b.liveness), ("unknown", Liveness::Down));
        assert_eq!(t.region_health("eu-west"), RegionHealth::Partitioned);
    }

    #[tokio::test]
    async fn the_reported_name_wins_over_the_inventory_hint() {
        let members = demo_members().unwrap()[..1].to_vec();
        let fleet = DemoFleet::start_members(members, DemoOptions::default()).await.unwrap();
        let mut inventory = fleet.inventory();
        inventory[0].name = Some("old-name".into());
        inventory[0].region = Some("mars".into());
        let poller = Poller::new(inventory, client(), catalog(), short());
        poller.refresh().await;
        let t = poller.handle().snapshot();
        assert!(t.agent("old-name").is_none());
        assert_eq!(t.agent("edge-1").unwrap().region, "us-east");
        assert_eq!(t.regions(), ["us-east"]);
        fleet.shutdown().await;
    }

    /// Serves `agent` on `port` (0: any) until the returned sender fires.
    async fn serve_on(agent: Arc<Agent>, port: u16) -> (u16, tokio::sync::oneshot::Sender<()>, JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server::serve(listener, agent, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        (port, stop, task)
    }

    #[tokio::test]
    async fn an_agent_that_comes_back_is_healthy_again() {
        let mut config = AgentConfig::new("edge-42", "us-west", "us-west-a");
        config.extensions.insert("auth-filter".into(), "2.0.3".into());
        let agent = Agent::new(config).unwrap();
        let (port, stop, task) = serve_on(Arc::clone(&agent), 0).await;
        let inventory =
            vec![InventoryEntry { endpoint: format!("http://127.0.0.1:{port}"), name: None, region: None, zone: None }];
        // A fresh client per pass is not needed: the pool drops connections the server closed.
        let poller = Poller::new(inventory, client(), catalog(), short());
        let mut events = poller.events();
        poller.refresh().await;
        assert_eq!(poller.handle().snapshot().agent("edge-42").unwrap().liveness, Liveness::Healthy);

        let _ = stop.send(());
        task.await.unwrap();
        tokio::time::sleep(Duration::from_millis(320)).await;
        poller.refresh().await;
        let down = poller.handle().snapshot();
        let a = down.agent("edge-42").unwrap();
        assert_eq!(a.liveness, Liveness::Down);
        let down_since = a.liveness_since;

        let (_, stop, task) = serve_on(agent, port).await;
        poller.refresh().await;
        let t = poller.handle().snapshot();
        let a = t.agent("edge-42").unwrap();
        assert_eq!(a.liveness, Liveness::Healthy);
        assert!(a.liveness_since > down_since);
        let got: Vec<(Liveness, Liveness)> = std::iter::from_fn(|| events.try_recv().ok())
            .filter_map(|e| match e {
                TopologyEvent::LivenessChanged { from, to, .. } => Some((from, to)),
                _ => None,
            })
            .collect();
        assert_eq!(got, [(Liveness::Healthy, Liveness::Down), (Liveness::Down, Liveness::Healthy)]);
        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_error_spike_makes_an_agent_degraded() {
        let members = demo_members().unwrap()[..2].to_vec();
        let options = DemoOptions {
            faults: FaultSpec::parse("error-spike:auth-filter@2.1.0/agent:edge-1").unwrap(),
            install_delay: Some(Duration::from_millis(1)),
            ..DemoOptions::default()
        };
        let fleet = DemoFleet::start_members(members, options).await.unwrap();
        let poller = Poller::new(fleet.inventory(), client(), catalog(), short());
        let mut events = poller.events();
        poller.refresh().await;
        for ep in fleet.inventory() {
            client().install(&ep.endpoint, "auth-filter", "2.1.0").await.unwrap();
        }
        poller.refresh().await;
        let t = poller.handle().snapshot();
        let a = t.agent("edge-1").unwrap();
        assert_eq!(a.liveness, Liveness::Degraded, "{:?}", a.metrics);
        assert!(a.metrics.error_rate_pct > 1.0);
        assert_eq!(t.agent("edge-2").unwrap().liveness, Liveness::Healthy);
        assert_eq!(t.region_health("us-east"), RegionHealth::Degraded);
        let got: Vec<TopologyEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn a_flapping_agent_is_announced_once_then_quiet_until_it_settles() {
        use crate::agent::faults::{Fault, Faults};
        let fleet =
            DemoFleet::start_members(demo_members().unwrap()[..1].to_vec(), DemoOptions::default()).await.unwrap();
        let config = PollerConfig {
            suspect_after: Duration::ZERO,
            down_after: Duration::ZERO,
            flap_threshold: 4,
            flap_window: Duration::from_millis(400),
            ..short()
        };
        let poller = Poller::new(fleet.inventory(), client(), catalog(), config);
        let mut events = poller.events();
        poller.refresh().await;
        let agent = &fleet.agents()[0];
        for i in 0..8 {
            agent.set_faults(if i % 2 == 0 { Faults(vec![Fault::Crash]) } else { Faults::default() });
            poller.refresh().await;
        }
        let got: Vec<TopologyEvent> = std::iter::from_fn(|| events.try_recv().ok())
            .filter(|e| !matches!(e, TopologyEvent::RegionChanged { .. }))
            .collect();
        assert_eq!(got.len(), 4, "three transitions, then one flapping notice: {got:?}");
        assert!(matches!(&got[3], TopologyEvent::Flapping { agent, changes: 4, .. } if agent == "edge-1"));
        // The snapshot says so too, for the health reply: the changes still in the window
        // (up to all eight, fewer if this machine was slow) and the window itself.
        let flapping = poller.handle().snapshot().agent("edge-1").unwrap().flapping.unwrap();
        assert!((1..=8).contains(&flapping.changes), "{flapping:?}");
        assert_eq!(flapping.window, Duration::from_millis(400));

        tokio::time::sleep(Duration::from_millis(450)).await;
        poller.refresh().await;
        let got: Vec<TopologyEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        // A flapping agent is not healthy, so its region is healthy again only now.
        assert!(
            matches!(got.as_slice(), [
                TopologyEvent::Settled { agent, liveness: Liveness::Healthy, .. },
                TopologyEvent::RegionChanged { from: RegionHealth::Degraded, to: RegionHealth::Healthy, .. },
            ] if agent == "edge-1"),
            "{got:?}"
        );
        assert_eq!(poller.handle().snapshot().agent("edge-1").unwrap().flapping, None);
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn an_agent_down_every_other_poll_is_flapping_though_never_suspect() {
        use crate::agent::faults::{Fault, Faults};
        let fleet =
            DemoFleet::start_members(demo_members().unwrap()[..1].to_vec(), DemoOptions::default()).await.unwrap();
        // As `flap:1000` against a poll a second: every other poll goes unanswered, each
        // silence shorter than the grace before "suspect".
        let config = PollerConfig {
            suspect_after: Duration::from_secs(10),
            down_after: Duration::from_secs(20),
            flap_threshold: 4,
            flap_window: Duration::from_secs(60),
            ..short()
        };
        let poller = Poller::new(fleet.inventory(), client(), catalog(), config);
        let mut events = poller.events();
        poller.refresh().await;
        let agent = &fleet.agents()[0];
        for i in 0..8 {
            agent.set_faults(if i % 2 == 0 { Faults(vec![Fault::Crash]) } else { Faults::default() });
            poller.refresh().await;
        }
        let t = poller.handle().snapshot();
        let a = t.agent("edge-1").unwrap();
        assert_eq!(a.liveness, Liveness::Healthy, "never silent for long enough to be suspect");
        assert_eq!(a.flapping, Some(Flapping { changes: 4, window: Duration::from_secs(60) }));
        assert_eq!(a.health_word(), "flapping");
        assert_eq!(t.region_health("us-east"), RegionHealth::Degraded);
        let got: Vec<TopologyEvent> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert!(
            got.iter().any(|e| matches!(e, TopologyEvent::Flapping { agent, changes: 4, .. } if agent == "edge-1")),
            "{got:?}"
        );
        assert!(!got.iter().any(|e| matches!(e, TopologyEvent::LivenessChanged { .. })), "{got:?}");
        fleet.shutdown().await;
    }

    #[test]
    fn duplicate_names_are_found_once_each() {
        use crate::topology::test_support::agent;
        let a = agent("edge-1", "us-east", "us-east-a", "edge", "production", &[]);
        let b = agent("edge-2", "us-east", "us-east-a", "edge", "production", &[]);
        let agents = vec![a.clone(), b.clone(), a.clone(), a, b];
        assert_eq!(duplicate_names(&agents), ["edge-1", "edge-2"]);
        assert!(duplicate_names(&agents[..2]).is_empty());
    }

    #[tokio::test]
    async fn the_spawned_loop_refreshes_until_shutdown() {
        let fleet =
            DemoFleet::start_members(demo_members().unwrap()[..2].to_vec(), DemoOptions::default()).await.unwrap();
        let poller = Arc::new(Poller::new(fleet.inventory(), client(), catalog(), short()));
        let handle = poller.handle();
        let (stop, stop_rx) = watch::channel(false);
        let task = Arc::clone(&poller).spawn(stop_rx);
        let deadline = Instant::now() + Duration::from_secs(5);
        while handle.snapshot().agents().len() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first = handle.snapshot().refreshed_at().unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(handle.snapshot().refreshed_at().unwrap() > first);
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task).await.unwrap().unwrap();
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn many_unreachable_agents_cost_one_bounded_pass() {
        // Port 1 on loopback refuses at once: this measures the poller, not timeouts.
        let inventory: Vec<InventoryEntry> = (0..2_000)
            .map(|i| InventoryEntry {
                endpoint: format!("http://127.0.0.{}:1", 1 + i % 200),
                name: Some(format!("agent-{i}")),
                region: Some(format!("r-{}", i % 10)),
                zone: None,
            })
            .collect();
        let poller = Poller::new(inventory, client(), catalog(), short());
        let stats = poller.refresh().await;
        assert_eq!((stats.answered, stats.failed), (0, 2_000));
        let t = poller.handle().snapshot();
        assert_eq!(t.agents().len(), 2_000);
        assert_eq!(t.regions().len(), 10);
        assert!(stats.elapsed < Duration::from_secs(10), "{stats:?}");
    }
}
