//! What every dialog session shares: the grammar, the live model, the registry, the
//! orchestrator, the agent clients and the router. `app` builds it at start-up and
//! `dialog` uses it; it lives apart from both so that neither imports the other.

use std::sync::Arc;

use crate::agent::AgentClient;
use crate::intent::Grammar;
use crate::orchestrate::Orchestrator;
use crate::registry::Registry;
use crate::topology::poller::Poller;
use crate::topology::{HealthThresholds, TopologyHandle};

/// Everything a dialog session needs, shared by all sessions.
pub struct Services {
    pub grammar: Grammar,
    pub topology: TopologyHandle,
    pub poller: Arc<Poller>,
    pub registry: Registry,
    pub orchestrator: Orchestrator,
    pub client: AgentClient,
    /// A client without the token, for the security check.
    pub anonymous: AgentClient,
    pub thresholds: HealthThresholds,
    /// The language-model fallback, when `[llm]` is configured.
    pub llm: Option<crate::llm::Llm>,
    /// The routing table between regions.
    pub router: crate::routing::Router,
}
