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
}

/// An extension installed on an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledExtension {
    pub name: String,
    pub version: String,
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

/// `GET /v1/health`: live metrics of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Metrics {
    /// CPU use, percent of the agent's allocation (0-100).
    pub cpu_pct: f64,
    /// Memory use, percent (0-100).
    pub mem_pct: f64,
    /// Requests that failed, percent (0-100).
    pub error_rate_pct: f64,
    /// 95th percentile request latency, milliseconds.
    pub p95_ms: f64,
}

/// `PUT /v1/extensions/{name}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallRequest {
    pub version: String,
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
