//! The terminal UI's application state: everything the screen shows, and nothing
//! about terminals. Background work (the session, the poller, the orchestrator)
//! reaches it only through the `on_*` / `set_*` methods the event loop calls, so the
//! renderer can stay a pure function of this value.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::agent::protocol::ServingState;
use crate::orchestrate::RolloutEvent;
use crate::registry::DeploymentRecord;
use crate::reply::Reply;
use crate::topology::{AgentView, HealthThresholds, Liveness, RegionHealth, Topology};

/// How many samples a region's sparkline keeps (one per topology tick).
pub const SPARK_LEN: usize = 60;
/// Entries of history kept in memory and on disk.
pub const HISTORY_LEN: usize = 1000;
/// Chat entries kept; older ones scroll out of memory, not just off screen.
pub const LOG_LEN: usize = 500;

/// Push-to-talk (F5), as the title bar shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Talk {
    #[default]
    Idle,
    Listening,
    Transcribing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    Chat,
    Fleet,
    Deployments,
}

/// One entry of the chat scrollback.
#[derive(Debug, Clone, PartialEq)]
pub enum LogEntry {
    /// What the operator said and, once the session answered, the reply.
    Turn { utterance: String, reply: Option<Box<Reply>> },
    /// Something the fleet or a rollout did meanwhile.
    Notice(String),
}

/// The input line: text, a cursor (in chars) and the history.
#[derive(Debug, Clone, Default)]
pub struct InputLine {
    pub text: String,
    pub cursor: usize,
    pub history: Vec<String>,
    /// Position while browsing history with Up/Down; `None` when editing fresh text.
    pub browsing: Option<usize>,
    /// What was typed before browsing started, restored by Down past the newest.
    pub draft: String,
}

impl InputLine {
    pub fn set(&mut self, text: &str) {
        self.text = text.to_string();
        self.cursor = text.chars().count();
    }

    pub fn byte_at(&self, char_idx: usize) -> usize {
        self.text.char_indices().nth(char_idx).map(|(b, _)| b).unwrap_or(self.text.len())
    }

    pub fn insert(&mut self, c: char) {
        let at = self.byte_at(self.cursor);
        self.text.insert(at, c);
        self.cursor += 1;
        self.browsing = None;
    }

    pub fn backspace(&mut self) {
        if self.cursor > 0 {
            let at = self.byte_at(self.cursor - 1);
            self.text.remove(at);
            self.cursor -= 1;
        }
    }

    pub fn delete(&mut self) {
        if self.cursor < self.text.chars().count() {
            let at = self.byte_at(self.cursor);
            self.text.remove(at);
        }
    }

    /// Deletes the word before the cursor (Ctrl-W).
    pub fn delete_word(&mut self) {
        let chars: Vec<char> = self.text.chars().collect();
        let mut start = self.cursor.min(chars.len());
        while start > 0 && chars[start - 1].is_whitespace() {
            start -= 1;
        }
        while start > 0 && !chars[start - 1].is_whitespace() {
            start -= 1;
        }
        let (a, b) = (self.byte_at(start), self.byte_at(self.cursor));
        self.text.replace_range(a..b, "");
        self.cursor = start;
    }

    /// Records a submitted line, skipping blanks and repeats of the last entry.
    pub fn remember(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() || self.history.last().map(String::as_str) == Some(line) {
            return;
        }
        self.history.push(line.to_string());
        if self.history.len() > HISTORY_LEN {
            let excess = self.history.len() - HISTORY_LEN;
            self.history.drain(..excess);
        }
    }

    pub fn history_prev(&mut self) {
        if self.history.is_empty() {
            return;
        }
        let next = match self.browsing {
            None => {
                self.draft = self.text.clone();
                self.history.len() - 1
            }
            Some(i) => i.saturating_sub(1),
        };
        self.browsing = Some(next);
        let text = self.history[next].clone();
        self.set(&text);
    }

    pub fn history_next(&mut self) {
        match self.browsing {
            None => {}
            Some(i) if i + 1 < self.history.len() => {
                self.browsing = Some(i + 1);
                let text = self.history[i + 1].clone();
                self.set(&text);
            }
            Some(_) => {
                self.browsing = None;
                let draft = std::mem::take(&mut self.draft);
                self.set(&draft);
            }
        }
    }
}

/// Agents of a group by how an operator colours them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub healthy: usize,
    pub degraded: usize,
    pub suspect: usize,
    pub down: usize,
    /// Reachable but not taking work (cordoned, draining, drained, restarting).
    pub cordoned: usize,
    /// Answering and silent by turns: whatever the last poll caught, not healthy.
    pub flapping: usize,
}

impl Counts {
    pub fn add(&mut self, status: AgentStatus) {
        match status {
            AgentStatus::Healthy => self.healthy += 1,
            AgentStatus::Degraded => self.degraded += 1,
            AgentStatus::Suspect => self.suspect += 1,
            AgentStatus::Down => self.down += 1,
            AgentStatus::Cordoned => self.cordoned += 1,
            AgentStatus::Flapping => self.flapping += 1,
        }
    }

    pub fn total(&self) -> usize {
        self.healthy + self.degraded + self.suspect + self.down + self.cordoned + self.flapping
    }
}

/// The one colour-worthy status of an agent: liveness first, then flapping (an agent
/// that keeps dropping out is never shown healthy, whatever the last poll caught, as
/// `AgentView::is_healthy` says for every reply), then serving state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    Healthy,
    Degraded,
    Suspect,
    Down,
    Cordoned,
    Flapping,
}

impl AgentStatus {
    pub fn of(a: &AgentView) -> AgentStatus {
        match a.liveness {
            Liveness::Down => AgentStatus::Down,
            Liveness::Suspect => AgentStatus::Suspect,
            _ if a.flapping.is_some() => AgentStatus::Flapping,
            _ if a.state != ServingState::Active => AgentStatus::Cordoned,
            Liveness::Degraded => AgentStatus::Degraded,
            Liveness::Healthy => AgentStatus::Healthy,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Healthy => "healthy",
            AgentStatus::Degraded => "degraded",
            AgentStatus::Suspect => "suspect",
            AgentStatus::Down => "down",
            AgentStatus::Cordoned => "cordoned",
            AgentStatus::Flapping => "flapping",
        }
    }
}

/// How the fleet pane orders agents: grouped by region and zone (the default), or as
/// one table sorted by a column (`s` cycles), k9s-style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FleetSort {
    #[default]
    Grouped,
    /// Worst first: down, suspect, flapping, degraded, cordoned, healthy.
    Health,
    Name,
    Region,
    /// By the version of the extension in focus, oldest first.
    Version,
    /// Highest error rate first.
    ErrorRate,
    /// Highest p95 latency first.
    Latency,
}

impl FleetSort {
    pub const ALL: [FleetSort; 7] = [
        FleetSort::Grouped,
        FleetSort::Health,
        FleetSort::Name,
        FleetSort::Region,
        FleetSort::Version,
        FleetSort::ErrorRate,
        FleetSort::Latency,
    ];

    pub fn next(self) -> FleetSort {
        let i = FleetSort::ALL.iter().position(|s| *s == self).unwrap_or(0);
        FleetSort::ALL[(i + 1) % FleetSort::ALL.len()]
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FleetSort::Grouped => "grouped",
            FleetSort::Health => "health",
            FleetSort::Name => "name",
            FleetSort::Region => "region",
            FleetSort::Version => "version",
            FleetSort::ErrorRate => "error rate",
            FleetSort::Latency => "latency",
        }
    }
}

/// How bad a status is, for sorting worst first.
fn severity(s: AgentStatus) -> u8 {
    match s {
        AgentStatus::Down => 0,
        AgentStatus::Suspect => 1,
        AgentStatus::Flapping => 2,
        AgentStatus::Degraded => 3,
        AgentStatus::Cordoned => 4,
        AgentStatus::Healthy => 5,
    }
}

/// Regions that need a look first: partitioned, then degraded, then healthy.
pub fn region_severity(h: RegionHealth) -> u8 {
    match h {
        RegionHealth::Partitioned => 0,
        RegionHealth::Degraded => 1,
        RegionHealth::Healthy => 2,
    }
}

/// Names in natural order: edge-5 before edge-49, as an operator counts.
fn natural(name: &str) -> (&str, u64, &str) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (head, tail) = name.split_at(name.len() - digits);
    (head, tail.parse().unwrap_or(0), name)
}

/// Numeric parts of a version, so 2.10.0 sorts after 2.9.1.
fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+']).map(|p| p.parse::<u64>().unwrap_or(0)).collect()
}

/// Whether `version` is `prefix` or within it: `1.1` takes 1.1 and 1.1.4, not 1.10.
pub fn version_within(version: &str, prefix: &str) -> bool {
    let prefix = prefix.strip_prefix('v').unwrap_or(prefix);
    version == prefix || version.strip_prefix(prefix).is_some_and(|rest| rest.starts_with(['.', '-', '+']))
}

/// Whether a filter word reads as a version (`2.`, `1.1`, `v2`).
fn looks_like_version(word: &str) -> bool {
    let w = word.strip_prefix('v').unwrap_or(word);
    w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// One row of the fleet pane.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetRow {
    Region {
        name: String,
        health: RegionHealth,
        counts: Counts,
    },
    Zone {
        name: String,
        counts: Counts,
    },
    /// An index into the topology's agents.
    Agent(usize),
    /// The column header of the sorted table.
    Header,
}

/// Per-region history of the worst error rate and p95 latency, for sparklines.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionSeries {
    pub error_rate_pct: VecDeque<f64>,
    pub p95_ms: VecDeque<f64>,
}

impl RegionSeries {
    fn push(&mut self, err: f64, p95: f64) {
        for (buf, v) in [(&mut self.error_rate_pct, err), (&mut self.p95_ms, p95)] {
            if buf.len() == SPARK_LEN {
                buf.pop_front();
            }
            buf.push_back(v);
        }
    }
}

/// The buttons of the confirmation modal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Yes,
    No,
}

/// The confirmation modal: the proposal as the session made it, shown whole (and
/// scrolled when long), until a deliberate act answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Confirm {
    pub proposal: Reply,
    /// When the session asked; the same question asked again keeps this modal.
    pub asked: Instant,
    /// The button Enter presses; none until Left, Right or Tab chose one, so a stray
    /// Enter answers nothing.
    pub focus: Option<Button>,
    /// Lines scrolled down from the top of the proposal.
    pub scroll: usize,
    /// A y or n typed on an empty input line, held until it is clear that it is a
    /// keypress of its own and not the first letter of a word.
    pub held: Option<char>,
}

impl Confirm {
    pub fn new(proposal: Reply, asked: Instant) -> Confirm {
        Confirm { proposal, asked, focus: None, scroll: 0, held: None }
    }
}

/// The whole state of the screen.
#[derive(Debug, Clone)]
pub struct App {
    pub log: VecDeque<LogEntry>,
    pub input: InputLine,
    pub focus: Pane,
    /// Lines scrolled up from the bottom of the chat.
    pub chat_scroll: usize,
    /// Follow-ups of the last reply, and which one Tab last put in the input.
    pub follow_ups: Vec<String>,
    pub follow_up_pick: Option<usize>,
    /// Completion candidates: fleet names and grammar words.
    pub words: Vec<String>,
    /// A turn is with the session and has not been answered yet.
    pub waiting: bool,
    pub confirm: Option<Confirm>,
    pub show_help: bool,
    pub talk: Talk,

    pub topology: Arc<Topology>,
    pub thresholds: HealthThresholds,
    pub fleet_filter: String,
    pub editing_filter: bool,
    /// Rows the filter lets through, rebuilt when the topology or filter changes
    /// rather than on every frame: a 10,000-agent fleet must draw in a few ms.
    pub fleet_rows: Vec<FleetRow>,
    /// Positions in `fleet_rows` of agent rows, for moving the selection.
    pub agent_rows: Vec<usize>,
    pub selected_agent: Option<String>,
    pub series: HashMap<String, RegionSeries>,
    pub sort: FleetSort,
    /// The extension whose version column the fleet table shows: named in the filter,
    /// else the one the running rollout installs.
    pub focus_extension: Option<String>,
    /// `f`: only the agents of the running rollout, the selection on the one being
    /// installed now.
    pub follow: bool,
    /// Tab found several candidates: shown as a popup above the input line.
    pub completions: Vec<String>,
    /// Lines the help overlay is scrolled down.
    pub help_scroll: usize,

    /// Newest first, as the registry lists them.
    pub deployments: Vec<DeploymentRecord>,
    pub selected_deployment: usize,
    /// The latest gate result per deployment.
    pub gates: HashMap<String, GateView>,
    /// A title line: fleet source and counts.
    pub title: String,
}

/// The latest gate evaluation of a deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct GateView {
    pub step: usize,
    pub passed: bool,
    pub detail: String,
}

impl App {
    pub fn new(topology: Arc<Topology>, thresholds: HealthThresholds) -> App {
        let mut app = App {
            log: VecDeque::new(),
            input: InputLine::default(),
            focus: Pane::Chat,
            chat_scroll: 0,
            follow_ups: Vec::new(),
            follow_up_pick: None,
            words: Vec::new(),
            waiting: false,
            confirm: None,
            show_help: false,
            talk: Talk::Idle,
            topology: Arc::clone(&topology),
            thresholds,
            fleet_filter: String::new(),
            editing_filter: false,
            fleet_rows: Vec::new(),
            agent_rows: Vec::new(),
            selected_agent: None,
            series: HashMap::new(),
            sort: FleetSort::Grouped,
            focus_extension: None,
            follow: false,
            completions: Vec::new(),
            help_scroll: 0,
            deployments: Vec::new(),
            selected_deployment: 0,
            gates: HashMap::new(),
            title: "Parley".to_string(),
        };
        app.set_topology(topology);
        app
    }

    /// Swaps in a new fleet snapshot and rebuilds the rows the fleet pane shows.
    pub fn set_topology(&mut self, topology: Arc<Topology>) {
        self.topology = topology;
        self.rebuild_fleet_rows();
    }

    /// Adds one sample per region to the sparklines: the worst error rate and p95
    /// among reachable agents (an unreachable agent has no fresh metrics to add).
    pub fn sample_series(&mut self) {
        let mut worst: HashMap<&str, (f64, f64)> = HashMap::new();
        for a in self.topology.agents() {
            let e = worst.entry(a.region.as_str()).or_insert((0.0, 0.0));
            if a.liveness.is_reachable() {
                e.0 = e.0.max(a.metrics.error_rate_pct);
                e.1 = e.1.max(a.metrics.p95_ms);
            }
        }
        for (region, (err, p95)) in worst {
            self.series.entry(region.to_string()).or_default().push(err, p95);
        }
    }

    pub fn set_filter(&mut self, filter: &str) {
        self.fleet_filter = filter.to_string();
        self.rebuild_fleet_rows();
    }

    /// `only`: the agents of the followed rollout, when following.
    fn agent_matches(
        &self,
        i: usize,
        needle: &str,
        only: Option<&HashMap<&str, crate::registry::TargetState>>,
    ) -> bool {
        let Some(a) = self.topology.agents().get(i) else { return false };
        if only.is_some_and(|o| !o.contains_key(a.name.as_str())) {
            return false;
        }
        if needle.is_empty() {
            return true;
        }
        let status = AgentStatus::of(a).as_str();
        let focus = self.focus_extension.as_deref();
        needle.split_whitespace().all(|word| {
            if looks_like_version(word) {
                // `rate-limiter 1.1`: the version of the extension named; alone, any.
                return match focus {
                    Some(ext) => a.extensions.get(ext).is_some_and(|v| version_within(v, word)),
                    None => a.extensions.values().any(|v| version_within(v, word)),
                };
            }
            a.name.contains(word)
                || a.region.contains(word)
                || a.zone.contains(word)
                || status == word
                || a.capabilities.iter().any(|c| c == word)
                || a.labels.values().any(|v| v == word)
                || a.extensions.keys().any(|e| e.contains(word))
        })
    }

    /// The extension a filter names exactly (`/rate-limiter 1.1`), if any.
    fn filter_extension(&self) -> Option<String> {
        let needle = self.fleet_filter.trim().to_lowercase();
        needle.split_whitespace().find(|w| self.topology.catalog().get(w).is_some()).map(str::to_string)
    }

    /// The running (or paused) rollout the fleet pane follows: the newest active one.
    pub fn active_deployment(&self) -> Option<&DeploymentRecord> {
        self.deployments.iter().find(|d| d.status.is_active())
    }

    /// The state in the active rollout of the agent called `name`, if it is one of its targets.
    pub fn target_state(&self, name: &str) -> Option<crate::registry::TargetState> {
        self.active_deployment().and_then(|d| d.target(name)).map(|t| t.state)
    }

    /// Agents of the active rollout and their state in it.
    pub fn active_targets(&self) -> HashMap<&str, crate::registry::TargetState> {
        self.active_deployment()
            .map(|d| d.targets.iter().map(|t| (t.agent.as_str(), t.state)).collect())
            .unwrap_or_default()
    }

    /// The completion words: the session's vocabulary (names and grammar words) and
    /// every version the catalog knows, so `2.` completes too.
    pub fn set_words(&mut self, mut words: Vec<String>) {
        for ext in self.topology.catalog().extensions() {
            words.extend(ext.versions.iter().map(|v| v.to_string()));
        }
        words.sort();
        words.dedup();
        self.words = words;
    }

    /// `s`: the next sort order.
    pub fn cycle_sort(&mut self) {
        self.sort = self.sort.next();
        self.rebuild_fleet_rows();
    }

    /// `f`: follow the running rollout, or stop following.
    pub fn toggle_follow(&mut self) {
        self.follow = !self.follow && self.active_deployment().is_some();
        self.rebuild_fleet_rows();
        self.follow_selection();
    }

    /// While following, the selection sits on the agent being installed (or the next
    /// one to be), so the detail below the table is the rollout's latest.
    pub fn follow_selection(&mut self) {
        use crate::registry::TargetState;
        if !self.follow {
            return;
        }
        let Some(d) = self.active_deployment() else { return };
        let pick = d
            .targets
            .iter()
            .find(|t| t.state == TargetState::Installing)
            .or_else(|| d.targets.iter().find(|t| t.state == TargetState::Pending))
            .or_else(|| d.targets.iter().rev().find(|t| t.state == TargetState::Installed))
            .map(|t| t.agent.clone());
        if let Some(name) = pick {
            if self.selected_row_of(&name).is_some() {
                self.selected_agent = Some(name);
            }
        }
    }

    /// The agents of the pane, ordered by the sort column.
    fn sort_agents(&self, agents: &mut [usize]) {
        let topo = &self.topology;
        let all = topo.agents();
        let focus = self.focus_extension.as_deref();
        let version = |i: usize| focus.and_then(|e| all[i].extensions.get(e)).map(|v| version_key(v));
        let name = |i: usize| natural(all[i].name.as_str());
        match self.sort {
            FleetSort::Grouped | FleetSort::Name => agents.sort_by(|&a, &b| name(a).cmp(&name(b))),
            FleetSort::Health => agents.sort_by(|&a, &b| {
                severity(AgentStatus::of(&all[a]))
                    .cmp(&severity(AgentStatus::of(&all[b])))
                    .then_with(|| name(a).cmp(&name(b)))
            }),
            FleetSort::Region => agents.sort_by(|&a, &b| {
                (all[a].region.as_str(), all[a].zone.as_str(), name(a)).cmp(&(
                    all[b].region.as_str(),
                    all[b].zone.as_str(),
                    name(b),
                ))
            }),
            FleetSort::Version => {
                agents.sort_by(|&a, &b| version(a).cmp(&version(b)).then_with(|| name(a).cmp(&name(b))))
            }
            FleetSort::ErrorRate => agents.sort_by(|&a, &b| {
                all[b]
                    .metrics
                    .error_rate_pct
                    .total_cmp(&all[a].metrics.error_rate_pct)
                    .then_with(|| name(a).cmp(&name(b)))
            }),
            FleetSort::Latency => agents.sort_by(|&a, &b| {
                all[b].metrics.p95_ms.total_cmp(&all[a].metrics.p95_ms).then_with(|| name(a).cmp(&name(b)))
            }),
        }
    }

    /// Groups agents by region and zone, keeping the filter's matches. Regions and
    /// zones keep fleet order; zone counts are over the matching agents.
    pub fn rebuild_fleet_rows(&mut self) {
        self.focus_extension =
            self.filter_extension().or_else(|| self.active_deployment().map(|d| d.extension.clone()));
        if self.follow && self.active_deployment().is_none() {
            self.follow = false;
        }
        if self.sort != FleetSort::Grouped {
            return self.rebuild_table_rows();
        }
        let needle = self.fleet_filter.trim().to_lowercase();
        let topo = Arc::clone(&self.topology);
        let targets = self.active_targets();
        let only = self.follow.then_some(&targets);
        let mut by_zone: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut zones_of_region: HashMap<&str, Vec<&str>> = HashMap::new();
        for (i, a) in topo.agents().iter().enumerate() {
            if !self.agent_matches(i, &needle, only) {
                continue;
            }
            let zones = zones_of_region.entry(a.region.as_str()).or_default();
            if !zones.contains(&a.zone.as_str()) {
                zones.push(a.zone.as_str());
            }
            by_zone.entry(a.zone.as_str()).or_default().push(i);
        }
        let mut rows = Vec::new();
        let mut agent_rows = Vec::new();
        // Partitioned and degraded regions first: what needs a look is at the top.
        let mut regions: Vec<&String> = topo.regions().iter().collect();
        regions.sort_by_key(|r| region_severity(topo.region_health(r)));
        for region in regions {
            let Some(zones) = zones_of_region.get(region.as_str()) else { continue };
            let mut region_counts = Counts::default();
            let region_pos = rows.len();
            rows.push(FleetRow::Region {
                name: region.clone(),
                health: topo.region_health(region),
                counts: Counts::default(),
            });
            for zone in zones {
                let members = by_zone.get(zone).map(Vec::as_slice).unwrap_or(&[]);
                let mut counts = Counts::default();
                for &i in members {
                    let a = &topo.agents()[i];
                    counts.add(AgentStatus::of(a));
                }
                region_counts.healthy += counts.healthy;
                region_counts.degraded += counts.degraded;
                region_counts.suspect += counts.suspect;
                region_counts.down += counts.down;
                region_counts.cordoned += counts.cordoned;
                region_counts.flapping += counts.flapping;
                rows.push(FleetRow::Zone { name: zone.to_string(), counts });
                for &i in members {
                    agent_rows.push(rows.len());
                    rows.push(FleetRow::Agent(i));
                }
            }
            if let Some(FleetRow::Region { counts, .. }) = rows.get_mut(region_pos) {
                *counts = region_counts;
            }
        }
        self.fleet_rows = rows;
        self.agent_rows = agent_rows;
        let still_there = self.selected_agent.as_ref().is_some_and(|name| self.selected_row_of(name).is_some());
        if !still_there {
            self.selected_agent = self.first_agent_name();
        }
    }

    /// The sorted table: a count line per region (worst first), the column header,
    /// then every matching agent in the sort order.
    fn rebuild_table_rows(&mut self) {
        let needle = self.fleet_filter.trim().to_lowercase();
        let topo = Arc::clone(&self.topology);
        let targets = self.active_targets();
        let only = self.follow.then_some(&targets);
        let mut agents: Vec<usize> =
            (0..topo.agents().len()).filter(|&i| self.agent_matches(i, &needle, only)).collect();
        let mut counts: HashMap<&str, Counts> = HashMap::new();
        for &i in &agents {
            let a = &topo.agents()[i];
            counts.entry(a.region.as_str()).or_default().add(AgentStatus::of(a));
        }
        let mut regions: Vec<&String> = topo.regions().iter().filter(|r| counts.contains_key(r.as_str())).collect();
        regions.sort_by_key(|r| region_severity(topo.region_health(r)));
        let mut rows: Vec<FleetRow> = regions
            .iter()
            .map(|r| FleetRow::Region {
                name: r.to_string(),
                health: topo.region_health(r),
                counts: counts.get(r.as_str()).copied().unwrap_or_default(),
            })
            .collect();
        self.sort_agents(&mut agents);
        if !agents.is_empty() {
            rows.push(FleetRow::Header);
        }
        let mut agent_rows = Vec::with_capacity(agents.len());
        for i in agents {
            agent_rows.push(rows.len());
            rows.push(FleetRow::Agent(i));
        }
        self.fleet_rows = rows;
        self.agent_rows = agent_rows;
        let still_there = self.selected_agent.as_ref().is_some_and(|name| self.selected_row_of(name).is_some());
        if !still_there {
            self.selected_agent = self.first_agent_name();
        }
    }

    /// The header's warning: regions that are partitioned or degraded, worst first.
    pub fn troubled_regions(&self) -> Vec<(String, RegionHealth)> {
        let mut out: Vec<(String, RegionHealth)> = self
            .topology
            .regions()
            .iter()
            .map(|r| (r.clone(), self.topology.region_health(r)))
            .filter(|(_, h)| *h != RegionHealth::Healthy)
            .collect();
        out.sort_by_key(|(r, h)| (region_severity(*h), r.clone()));
        out
    }

    fn first_agent_name(&self) -> Option<String> {
        self.agent_rows.first().and_then(|&r| match self.fleet_rows.get(r) {
            Some(FleetRow::Agent(i)) => self.topology.agents().get(*i).map(|a| a.name.to_string()),
            _ => None,
        })
    }

    /// The position in `agent_rows` of the named agent.
    fn selected_row_of(&self, name: &str) -> Option<usize> {
        self.agent_rows.iter().position(|&r| {
            matches!(self.fleet_rows.get(r), Some(FleetRow::Agent(i))
                if self.topology.agents().get(*i).is_some_and(|a| a.name == name))
        })
    }

    /// The row in `fleet_rows` of the selected agent.
    pub fn selected_fleet_row(&self) -> Option<usize> {
        let name = self.selected_agent.as_ref()?;
        self.selected_row_of(name).and_then(|p| self.agent_rows.get(p).copied())
    }

    pub fn move_agent_selection(&mut self, delta: isize) {
        if self.agent_rows.is_empty() {
            return;
        }
        let current = self.selected_agent.as_ref().and_then(|n| self.selected_row_of(n)).unwrap_or(0) as isize;
        let next = (current + delta).clamp(0, self.agent_rows.len() as isize - 1) as usize;
        if let Some(FleetRow::Agent(i)) = self.agent_rows.get(next).and_then(|&r| self.fleet_rows.get(r)) {
            self.selected_agent = self.topology.agents().get(*i).map(|a| a.name.to_string());
        }
    }

    /// Whether a y or n on the confirmation modal waits to be a lone keypress.
    pub fn holding(&self) -> bool {
        self.confirm.as_ref().is_some_and(|c| c.held.is_some())
    }

    /// The operator said something; the session will answer.
    pub fn on_submit(&mut self, utterance: &str) {
        self.push_log(LogEntry::Turn { utterance: utterance.to_string(), reply: None });
        self.waiting = true;
        self.chat_scroll = 0;
        self.follow_up_pick = None;
    }

    /// The session answered the oldest unanswered turn; `confirmation` is when the
    /// yes/no it now waits for was asked, if it waits for one. The session decides:
    /// the modal shows exactly what it holds.
    pub fn on_reply(&mut self, reply: Reply, confirmation: Option<Instant>) {
        self.waiting = false;
        self.chat_scroll = 0;
        self.follow_ups = reply.follow_ups.clone();
        self.follow_up_pick = None;
        self.confirm = match (confirmation, self.confirm.take()) {
            (None, _) => None,
            // Asked again (something typed over the modal was not a request): the
            // proposal as first shown stays, with its plan, where the operator left it.
            (Some(asked), Some(open)) if open.asked == asked => Some(Confirm { held: None, ..open }),
            (Some(asked), _) => {
                // Typing goes to the input line while the modal is up.
                self.focus = Pane::Chat;
                Some(Confirm::new(reply.clone(), asked))
            }
        };
        let slot = self.log.iter_mut().find(|e| matches!(e, LogEntry::Turn { reply: None, .. }));
        match slot {
            Some(LogEntry::Turn { reply: r, .. }) => *r = Some(Box::new(reply)),
            _ => self.push_log(LogEntry::Turn { utterance: String::new(), reply: Some(Box::new(reply)) }),
        }
    }

    /// A push-to-talk report; returns the utterance to send as a turn. A
    /// transcript Whisper was unsure of is put in the input line instead, for the
    /// operator to correct or send with Enter: a mishearing never runs by itself.
    pub fn on_talk(&mut self, event: crate::voice::ptt::TalkEvent) -> Option<String> {
        use crate::voice::ptt::TalkEvent;
        self.talk = Talk::Idle;
        match event {
            TalkEvent::Transcribing => self.talk = Talk::Transcribing,
            TalkEvent::Heard { text, sure: true } => {
                self.on_submit(&text);
                return Some(text);
            }
            TalkEvent::Heard { text, sure: false } => {
                self.notice(format!("I heard \"{text}\" but I'm not sure; it is in the input line: Enter sends it."));
                self.input.set(&text);
            }
            TalkEvent::Silence => self.notice("Push-to-talk heard nothing."),
            TalkEvent::Failed(why) => self.notice(format!("Push-to-talk: {why}")),
        }
        None
    }

    pub fn notice(&mut self, text: impl Into<String>) {
        self.push_log(LogEntry::Notice(text.into()));
    }

    fn push_log(&mut self, entry: LogEntry) {
        self.log.push_back(entry);
        while self.log.len() > LOG_LEN {
            self.log.pop_front();
        }
    }

    /// Records gate results and tells the chat about the events worth a line.
    pub fn on_rollout_event(&mut self, event: &RolloutEvent) {
        if let RolloutEvent::GateEvaluated { id, step, passed, breaches, unreachable, .. } = event {
            let mut parts: Vec<String> = breaches
                .iter()
                .take(3)
                .map(|b| format!("{} {} {:.1}>{}", b.agent, b.metric, b.value, b.threshold))
                .collect();
            if !unreachable.is_empty() {
                parts.push(format!("{} unreachable", unreachable.len()));
            }
            self.gates.insert(id.clone(), GateView { step: *step, passed: *passed, detail: parts.join("; ") });
        }
        if let Some(line) = crate::orchestrate::announce(event) {
            self.notice(line);
        }
    }

    pub fn set_deployments(&mut self, deployments: Vec<DeploymentRecord>) {
        self.deployments = deployments;
        self.selected_deployment = self.selected_deployment.min(self.deployments.len().saturating_sub(1));
        // The version column and the rollout's rows follow what is rolling out now.
        self.rebuild_fleet_rows();
        self.follow_selection();
    }

    /// Deployments in the order the pane shows them: active ones first, then recent.
    pub fn ordered_deployments(&self) -> Vec<&DeploymentRecord> {
        let (mut active, recent): (Vec<_>, Vec<_>) = self.deployments.iter().partition(|d| d.status.is_active());
        active.extend(recent);
        active
    }

    pub fn selected_deployment(&self) -> Option<&DeploymentRecord> {
        self.ordered_deployments().get(self.selected_deployment).copied()
    }
}

/// What an operator can do next about a deployment, with the pane's key for each:
/// the lifecycle's offers, safest first (showing it is Enter, so not listed).
pub fn deployment_actions(d: &DeploymentRecord) -> Vec<(char, String)> {
    crate::orchestrate::lifecycle::offers(d)
        .into_iter()
        .filter_map(|c| c.key().map(|k| (k, c.utterance(&d.name))))
        .collect()
}
