//! The server's state as the typed model a front-end renders: the fleet snapshot as
//! a [`Topology`], deployments as [`DeploymentRecord`]s, turns with the proposal the
//! session still waits for, and the event stream as [`ServerEvent`]s. Each is a serde
//! round-trip of the type the server serialised, so a client front-end (the TUI over
//! `--server`) renders exactly what an in-process one would.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::{Client, ClientError, Events};
use crate::orchestrate::RolloutEvent;
use crate::registry::DeploymentRecord;
use crate::reply::{Proposal, Reply};
use crate::topology::poller::TopologyEvent;
use crate::topology::{AgentView, Catalog, Topology};

/// `GET /v1/fleet`, the parts a snapshot is rebuilt from (regions and their health
/// are derived again by [`Topology::new`], by the same rule the server used).
#[derive(Deserialize)]
struct FleetAnswer {
    refreshed_at: Option<DateTime<Utc>>,
    agents: Vec<AgentView>,
}

#[derive(Deserialize)]
struct DeploymentsAnswer {
    deployments: Vec<DeploymentRecord>,
}

/// One turn as a front-end that shows confirmations needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnAnswer {
    pub reply: Reply,
    /// The proposal the session waits a yes/no for after this turn (whatever the
    /// turn was), `None` when it waits for none.
    pub pending: Option<Proposal>,
}

/// One message of the event stream, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// Rollout progress, as the orchestrator published it.
    Rollout(RolloutEvent),
    /// A routing change Parley made by itself; the sentence to show.
    Routing(String),
    /// A change of the fleet model, with its sentence.
    Fleet { event: TopologyEvent, announcement: String },
    /// This subscriber fell behind and lost `missed` messages: re-read what it shows.
    Lagged { missed: u64 },
    /// The server is stopping; the stream ends after this.
    Shutdown(String),
}

impl ServerEvent {
    /// Reads one stream message; `Ok(None)` for a message this client does not know
    /// (a newer server may add types: ignoring them keeps old clients working).
    pub fn from_message(v: Value) -> Result<Option<ServerEvent>, ClientError> {
        let bad = |what: &str, e: serde_json::Error| ClientError::Protocol(format!("a {what} event: {e}"));
        let text = |v: &Value| v["announcement"].as_str().unwrap_or_default().to_string();
        Ok(Some(match v["type"].as_str() {
            Some("rollout") => {
                ServerEvent::Rollout(RolloutEvent::deserialize(v["event"].clone()).map_err(|e| bad("rollout", e))?)
            }
            Some("routing") => ServerEvent::Routing(text(&v)),
            Some("fleet") => ServerEvent::Fleet {
                event: TopologyEvent::deserialize(v["event"].clone()).map_err(|e| bad("fleet", e))?,
                announcement: text(&v),
            },
            Some("lagged") => ServerEvent::Lagged { missed: v["missed"].as_u64().unwrap_or(0) },
            Some("shutdown") => ServerEvent::Shutdown(text(&v)),
            _ => return Ok(None),
        }))
    }
}

impl Events {
    /// The next message this client knows, typed; `None` when the stream ended. A
    /// message that does not read as its type is logged and skipped.
    pub async fn next_event(&mut self) -> Option<ServerEvent> {
        loop {
            let v = self.next().await?;
            match ServerEvent::from_message(v) {
                Ok(Some(e)) => return Some(e),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "skipped an event message"),
            }
        }
    }
}

impl Client {
    /// The server's fleet snapshot. `catalog` is the extension catalog of this
    /// client's configuration: the API carries the agents, and the catalog is
    /// configuration both sides read from the same file.
    pub async fn topology(&self, catalog: Arc<Catalog>) -> Result<Arc<Topology>, ClientError> {
        let value = self.get_json("/v1/fleet").await?;
        let fleet = FleetAnswer::deserialize(value).map_err(|e| ClientError::Protocol(format!("the fleet: {e}")))?;
        Ok(Arc::new(Topology::new(fleet.agents, catalog, fleet.refreshed_at)))
    }

    /// The newest `limit` deployments, newest first.
    pub async fn deployments(&self, limit: u32) -> Result<Vec<DeploymentRecord>, ClientError> {
        let value = self.get_json(&format!("/v1/deployments?limit={limit}")).await?;
        DeploymentsAnswer::deserialize(value)
            .map(|a| a.deployments)
            .map_err(|e| ClientError::Protocol(format!("the deployments: {e}")))
    }

    /// One deployment's record, typed.
    pub async fn deployment_record(&self, name: &str) -> Result<DeploymentRecord, ClientError> {
        let value = self.deployment(name).await?;
        DeploymentRecord::deserialize(value).map_err(|e| ClientError::Protocol(format!("deployment {name}: {e}")))
    }

    /// One turn of session `session`, with the proposal it waits for afterwards.
    pub async fn turn_answer(&self, session: &str, utterance: &str, frontend: &str) -> Result<TurnAnswer, ClientError> {
        let value = self.turn_value(session, utterance, frontend).await?;
        read_answer(value)
    }
}

/// A turn's answer: the reply, and the proposal the session still waits for.
pub(super) fn read_answer(mut value: Value) -> Result<TurnAnswer, ClientError> {
    let pending = match value.as_object_mut().and_then(|o| o.remove("pending_confirmation")) {
        None | Some(Value::Null) => None,
        Some(p) => {
            Some(Proposal::deserialize(p).map_err(|e| ClientError::Protocol(format!("a pending proposal: {e}")))?)
        }
    };
    let reply = Reply::deserialize(value).map_err(|e| ClientError::Protocol(format!("a turn's reply: {e}")))?;
    Ok(TurnAnswer { reply, pending })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::test_support::demo_topology;

    /// The snapshot a client rebuilds from the server's JSON is the server's.
    #[test]
    fn a_fleet_snapshot_survives_the_api() {
        let topo = demo_topology();
        let json = serde_json::json!({"refreshed_at": topo.refreshed_at(), "agents": topo.agents()});
        let fleet = FleetAnswer::deserialize(json).unwrap();
        let back = Topology::new(fleet.agents, topo.catalog_arc(), fleet.refreshed_at);
        assert_eq!(back.agents(), topo.agents());
        assert_eq!(back.regions(), topo.regions());
        for r in topo.regions() {
            assert_eq!(back.region_health(r), topo.region_health(r));
        }
    }

    #[test]
    fn stream_messages_read_back_as_their_types() {
        let event = RolloutEvent::Paused { id: "d-3".into(), reason: "asked by ana".into() };
        let message = crate::server::rollout_message(&event);
        assert_eq!(ServerEvent::from_message(message).unwrap(), Some(ServerEvent::Rollout(event)));
        let lagged = serde_json::json!({"type": "lagged", "missed": 7});
        assert_eq!(ServerEvent::from_message(lagged).unwrap(), Some(ServerEvent::Lagged { missed: 7 }));
        let unknown = serde_json::json!({"type": "something-new"});
        assert_eq!(ServerEvent::from_message(unknown).unwrap(), None);
    }
}
