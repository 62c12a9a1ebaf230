//! The health gates of a deployment, as "show deployment d-4", "show the analysis of
//! d-4" and "why did it fail?" show them: every gate from the journal and, for gates
//! judged by analysis templates, every measurement with its query, the canary's and
//! the baseline's values and the condition.

use crate::registry::{DeploymentRecord, Registry};
use crate::reply::Reply;

/// `reply` (about `d`) with its gates: `details.gates` and, for analysis gates, one
/// line per measurement under the message.
pub(super) async fn with_gates(mut reply: Reply, registry: &Registry, d: &DeploymentRecord) -> Reply {
    let events = match registry.events(d.id).await {
        Ok(e) => e,
        // The deployment itself was read; its gates are extra detail, said missing.
        Err(e) => {
            reply.message.push_str(&format!("\n(The gates could not be read: {e}.)"));
            return reply;
        }
    };
    let gates: Vec<serde_json::Value> =
        events.into_iter().filter(|e| e.kind == "gate_evaluated").map(|e| e.data).collect();
    let mut lines = Vec::new();
    for g in &gates {
        let Some(metrics) = g["analysis"]["metrics"].as_array() else { continue };
        lines.push(format!(
            "Gate at step {}: {} (Prometheus {})",
            g["step"],
            g["outcome"].as_str().unwrap_or("?"),
            g["source"].as_str().unwrap_or("?")
        ));
        for m in metrics {
            lines.push(format!(
                "  {}: {} ({})",
                m["description"].as_str().unwrap_or("?"),
                m["outcome"].as_str().unwrap_or("?"),
                m["condition"].as_str().unwrap_or("")
            ));
            lines.push(format!("    query: {}", m["query"].as_str().unwrap_or("")));
            for (i, x) in m["measurements"].as_array().into_iter().flatten().enumerate() {
                lines.push(format!(
                    "    {}. {} {}",
                    i + 1,
                    x["outcome"].as_str().unwrap_or("?"),
                    x["reason"].as_str().unwrap_or("")
                ));
            }
        }
    }
    if !lines.is_empty() {
        reply.message.push('\n');
        reply.message.push_str(&lines.join("\n"));
    }
    if let Some(serde_json::Value::Object(map)) = reply.details.as_mut() {
        map.insert("gates".to_string(), serde_json::Value::Array(gates));
    }
    reply
}
