//! The embedded demo fleet: the 48 agents of `assets/demo-fleet.toml`, each a real
//! agent server on its own loopback port inside this process. Parley then polls them
//! exactly as it would poll a remote fleet.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::faults::FaultSpec;
use super::server::{self, Agent, AgentConfig};
use crate::ops::Selector;
use crate::topology::inventory::InventoryEntry;

const EMBEDDED: &str = include_str!("../../assets/demo-fleet.toml");

/// One agent of a fleet file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetMember {
    pub name: String,
    pub region: String,
    pub zone: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    agent: Vec<FleetMember>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("demo fleet file: {0}")]
    File(String),
    #[error("could not listen on loopback for agent {agent}: {source}")]
    Bind { agent: String, source: std::io::Error },
    #[error(transparent)]
    State(#[from] server::AgentStateError),
    #[error("demo fleet state directory {path}: {source}")]
    StateDir { path: String, source: std::io::Error },
}

/// How to run the demo fleet.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Token the agents require (None: no auth, loopback only).
    pub token: Option<String>,
    /// Keep each agent's installed extensions here, so they survive a restart of Parley
    /// and agree with the registry kept beside them.
    pub state_dir: Option<PathBuf>,
    pub faults: FaultSpec,
    /// Simulated install time per agent.
    pub install_delay: Option<Duration>,
    /// How long drain and restart take.
    pub transition_delay: Option<Duration>,
}

/// The members of the built-in demo fleet, in PRODUCT.md order.
pub fn demo_members() -> Result<Vec<FleetMember>, DemoError> {
    let file: FleetFile = toml::from_str(EMBEDDED).map_err(|e| DemoError::File(e.to_string()))?;
    Ok(file.agent)
}

/// A running fleet of in-process agents.
pub struct DemoFleet {
    entries: Vec<InventoryEntry>,
    agents: Vec<Arc<Agent>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl DemoFleet {
    /// Starts the built-in demo fleet.
    pub async fn start(options: DemoOptions) -> Result<DemoFleet, DemoError> {
        DemoFleet::start_members(demo_members()?, options).await
    }

    /// Starts any list of members, each on `127.0.0.1:0`.
    pub async fn start_members(members: Vec<FleetMember>, options: DemoOptions) -> Result<DemoFleet, DemoError> {
        if let Some(dir) = &options.state_dir {
            std::fs::create_dir_all(dir)
                .map_err(|source| DemoError::StateDir { path: dir.display().to_string(), source })?;
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut entries = Vec::with_capacity(members.len());
        let mut agents = Vec::with_capacity(members.len());
        let mut tasks = Vec::with_capacity(members.len());
        for m in members {
            let mut config = AgentConfig::new(&m.name, &m.region, &m.zone);
            config.faults = options.faults.for_agent(|sel| member_matches(&m, sel));
            config.labels = m.labels.clone();
            config.capabilities = m.capabilities.clone();
            config.extensions = m.extensions.clone();
            config.token = options.token.clone();
            config.state_file = options.state_dir.as_ref().map(|d| d.join(format!("{}.json", m.name)));
            if let Some(d) = options.install_delay {
                config.install_delay = d;
            }
            if let Some(d) = options.transition_delay {
                config.transition_delay = d;
            }
            let agent = Agent::new(config)?;
            let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .map_err(|source| DemoError::Bind { agent: m.name.clone(), source })?;
            let addr = listener.local_addr().map_err(|source| DemoError::Bind { agent: m.name.clone(), source })?;
            let mut rx = stop_rx.clone();
            let served = Arc::clone(&agent);
            let name = m.name.clone();
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|stopped| *stopped).await;
                };
                if let Err(e) = server::serve(listener, served, shutdown).await {
                    tracing::error!(agent = %name, error = %e, "demo agent stopped");
                }
            }));
            entries.push(InventoryEntry {
                endpoint: format!("http://{addr}"),
                name: Some(m.name.clone()),
                region: Some(m.region.clone()),
                zone: Some(m.zone.clone()),
            });
            agents.push(agent);
        }
        Ok(DemoFleet { entries, agents, stop, tasks })
    }

    /// Where each agent listens: the inventory Parley polls.
    pub fn inventory(&self) -> Vec<InventoryEntry> {
        self.entries.clone()
    }

    /// The in-process agents (for tests that look behind the HTTP API).
    pub fn agents(&self) -> &[Arc<Agent>] {
        &self.agents
    }

    /// Stops every agent and waits for their servers to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub(crate) fn member_matches(m: &FleetMember, sel: &Selector) -> bool {
    sel.selects(&m.name, &m.region, &m.zone, &m.labels, &m.capabilities)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::protocol::{AgentAction, ServingState};
    use crate::agent::{AgentClient, AgentError};

    #[test]
    fn the_fixture_is_the_product_pages_fleet() {
        let m = demo_members().unwrap();
        assert_eq!(m.len(), 48);
        let in_region = |r: &str| m.iter().filter(|a| a.region == r).count();
        assert_eq!([in_region("us-east"), in_region("us-west"), in_region("eu-west"), in_region("ap-south")], [12; 4]);
        let gpu8 = m.iter().find(|a| a.name == "gpu-8").unwrap();
        assert_eq!((gpu8.region.as_str(), gpu8.zone.as_str()), ("ap-south", "ap-south-b"));
        assert_eq!(gpu8.extensions.get("model-server").map(String::as_str), Some("0.3.0"));
        assert_eq!(m.iter().find(|a| a.name == "edge-19").unwrap().labels["env"], "staging");
        assert_eq!(m.iter().find(|a| a.name == "core-4").unwrap().zone, "us-east-b");
    }

    #[tokio::test]
    async fn agents_speak_the_protocol_over_http() {
        let dir = tempfile::tempdir().unwrap();
        let options = DemoOptions {
            token: Some("s3cret".into()),
            state_dir: Some(dir.path().to_path_buf()),
            install_delay: Some(Duration::from_millis(1)),
            transition_delay: Some(Duration::from_millis(20)),
            faults: FaultSpec::parse("install-fail:geo-router@3.3.0/agent:edge-1").unwrap(),
        };
        let fleet = DemoFleet::start(options.clone()).await.unwrap();
        let ep = fleet.inventory()[0].endpoint.clone();
        let client = AgentClient::new(Duration::from_secs(2), Some("s3cret".into())).unwrap();

        let status = client.install(&ep, "auth-filter", "2.1.0").await.unwrap();
        assert_eq!(status.name, "edge-1");
        assert!(status.extensions.iter().any(|e| e.name == "auth-filter" && e.version == "2.1.0"));

        let err = client.install(&ep, "geo-router", "3.3.0").await.unwrap_err();
        assert!(matches!(err, AgentError::Refused { status: 500, .. }), "{err:?}");

        let anonymous = AgentClient::new(Duration::from_secs(2), None).unwrap();
        let err = anonymous.install(&ep, "auth-filter", "1.0.0").await.unwrap_err();
        assert!(matches!(err, AgentError::Unauthorized { .. }), "{err:?}");

        let drained = client.action(&ep, AgentAction::Drain).await.unwrap();
        assert_eq!(drained.state, ServingState::Draining);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(client.status(&ep).await.unwrap().state, ServingState::Drained);
        fleet.shutdown().await;

        // A restarted fleet reports what its agents really have.
        let fleet = DemoFleet::start(options).await.unwrap();
        let ep = fleet.inventory()[0].endpoint.clone();
        let status = client.status(&ep).await.unwrap();
        assert!(status.extensions.iter().any(|e| e.name == "auth-filter" && e.version == "2.1.0"));
        assert_eq!(status.state, ServingState::Drained);
        fleet.shutdown().await;
    }

    #[tokio::test]
    async fn bad_requests_get_protocol_errors_and_change_nothing() {
        let fleet =
            DemoFleet::start_members(demo_members().unwrap()[..1].to_vec(), DemoOptions::default()).await.unwrap();
        let ep = fleet.inventory()[0].endpoint.clone();
        let http = reqwest::Client::new();
        for (method, path, body) in [
            (reqwest::Method::PUT, "/v1/extensions/auth-filter", "{\"version\": 3"),
            (reqwest::Method::PUT, "/v1/extensions/auth-filter", "{\"version\": \"1.0;rm -rf\"}"),
            (reqwest::Method::POST, "/v1/actions/explode", ""),
            (reqwest::Method::DELETE, "/v1/extensions/nothing", ""),
            (reqwest::Method::GET, "/v2/status", ""),
        ] {
            let resp = http
                .request(method.clone(), format!("{ep}{path}"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert!(resp.status().is_client_error(), "{method} {path}: {}", resp.status());
            let body: crate::agent::protocol::ErrorBody = resp.json().await.unwrap();
            assert!(!body.error.is_empty());
        }
        let client = AgentClient::new(Duration::from_secs(2), None).unwrap();
        let status = client.status(&ep).await.unwrap();
        assert!(status.extensions.iter().any(|e| e.name == "auth-filter" && e.version == "2.0.3"));
        fleet.shutdown().await;
    }
}
