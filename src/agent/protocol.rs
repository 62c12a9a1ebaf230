//! The wire types of the agent protocol (docs/agent-protocol.md). Shared by the agent
//! server, Parley's client and the simulator, so both sides agree by construction.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Protocol version reported by every agent; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// `GET /v1/status`: everything Parley's topology model needs from one agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub protocol: u32,
    pub name: String,
    pub region: String,
    pub zone: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub extensions: Vec<InstalledExtension>,
    pub state: ServingState,
    pub metrics: Metrics,
    pub started_at: DateTime<Utc>,
    /// Where the metrics come from: `simulated` (the demo fleet, the simulator) or
    /// `measured` (a real agent). Absent from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_source: Option<HealthSource>,
}

/// Where an agent's metrics come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthSource {
    /// Synthesised from a baseline: the demo fleet and `fleet simulate`.
    Simulated,
    /// Probes, `/proc` and the extensions' own endpoints: `parley agent --dir`.
    Measured,
}

/// An extension installed on an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledExtension {
    pub name: String,
    pub version: String,
    /// A real agent's view of the installed version: its probe, what the probe says,
    /// its service's process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ExtensionHealth>,
}

/// What a real agent measures of one installed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtensionHealth {
    /// `GET http://127.0.0.1:PORT/health` or `command ...`; absent: the manifest names no probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    pub state: ProbeState,
    /// The service's process id, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The port the agent gave the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// The latest probe's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeState {
    Ok,
    Failing,
    /// Nothing probed yet, or nothing to probe.
    Unknown,
}

/// Whether the agent takes work. Reported by the agent; changed by drain/cordon/uncordon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServingState {
    /// Serving and schedulable.
    Active,
    /// Serving what it has, but takes nothing new (cordoned).
    Cordoned,
    /// Finishing in-flight work, then stops serving.
    Draining,
    /// Not serving.
    Drained,
    /// Restarting; back to active when done.
    Restarting,
}

impl ServingState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServingState::Active => "active",
            ServingState::Cordoned => "cordoned",
            ServingState::Draining => "draining",
            ServingState::Drained => "drained",
            ServingState::Restarting => "restarting",
        }
    }
}

/// `GET /v1/health`: live metrics of one agent. A real agent with nothing to measure
/// a figure by sends `null` for it, read as NaN: unknown, which health gates count as
/// inconclusive, never as a value.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// CPU use, percent of the agent's allocation (0-100).
    #[serde(deserialize_with = "nan_if_null")]
    pub cpu_pct: f64,
    /// Memory use, percent (0-100).
    #[serde(deserialize_with = "nan_if_null")]
    pub mem_pct: f64,
    /// Requests that failed, percent (0-100).
    #[serde(deserialize_with = "nan_if_null")]
    pub error_rate_pct: f64,
    /// 95th percentile request latency, milliseconds.
    #[serde(deserialize_with = "nan_if_null")]
    pub p95_ms: f64,
}

/// `null` (what serde_json writes for NaN) back to NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// `PUT /v1/extensions/{name}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRequest {
    pub version: String,
    /// Where the version's artifact is and its SHA-256 (from Parley's catalog). A
    /// real agent needs it unless it has the version on disk; simulated agents ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<crate::artifact::ArtifactRef>,
}

/// The body of every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable: `unauthorized`, `bad_request`, `not_found`, `method_not_allowed`,
    /// `conflict`, `install_failed`, `unavailable`.
    pub code: String,
    /// For people.
    pub error: String,
}

/// The one-word actions of `POST /v1/actions/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentAction {
    Drain,
    Cordon,
    Uncordon,
    Restart,
}

impl AgentAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentAction::Drain => "drain",
            AgentAction::Cordon => "cordon",
            AgentAction::Uncordon => "uncordon",
            AgentAction::Restart => "restart",
        }
    }
}

// Registration (`topology::registration` serves it, `agent::standalone` asks it).

/// The header an agent presents its credential in.
pub const CREDENTIAL_HEADER: &str = "parley-agent-credential";

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub name: String,
    pub endpoint: String,
    /// False when the endpoint was already polled (a re-registration).
    pub new: bool,
    /// Issued when the name is bound (a first registration, or a rebinding after the
    /// old endpoint was proven dead): the agent keeps it and presents it from then on.
    /// Shown once; Parley keeps only its hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}
