//! A rollout's own health-gate threshold, as said ("gated on p99 latency under
//! 300 ms"): which analysis template it sets and to what.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `{"metric": "p99-latency", "threshold": 300, "unit": "ms"}` in a deploy's `gate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GateRequirement {
    /// An analysis template's name: `p99-latency`, `error-ratio`, ...
    pub metric: String,
    /// The limit as said, in `unit` (an integer, like every number of the contract).
    pub threshold: u32,
    /// Absent: the template's own unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<GateUnit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GateUnit {
    Ms,
    S,
    Percent,
}

impl GateUnit {
    pub fn symbol(self) -> &'static str {
        match self {
            GateUnit::Ms => " ms",
            GateUnit::S => " s",
            GateUnit::Percent => "%",
        }
    }
}

impl GateRequirement {
    /// "p99 latency under 300 ms".
    pub fn describe(&self) -> String {
        let unit = self.unit.map(GateUnit::symbol).unwrap_or("");
        format!("{} under {}{unit}", self.metric.replace('-', " "), self.threshold)
    }
}
