//! Where the agents of a fleet are: the list of endpoints the poller asks.

use serde::{Deserialize, Serialize};

/// One agent to poll. Name, region and zone are optional hints used while the agent
/// has never answered (so a dead agent still shows up in its region as `down`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryEntry {
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}
