//! The fleet simulator behind `parley fleet simulate`: N agents served from one
//! process, for demos, load and chaos. Every agent is the real agent code
//! ([`Agent`]); all of them share one loopback listener and are told apart by a path
//! prefix, so that 10,000 agents cost one socket rather than 10,000 (the default file
//! descriptor limit is far below what 10,000 listeners plus their connections need).
//! Agent `edge-7` of a simulator on `127.0.0.1:7100` has the base URL
//! `http://127.0.0.1:7100/a/edge-7`, under which it speaks exactly the documented
//! agent protocol.
//!
//! Faults can be given at start or changed at run time through the control endpoint
//! on the same address (`POST /v1/faults` with a spec, `DELETE /v1/faults`), so tests
//! and demos can break things on cue; see docs/simulator.md.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::demo::{member_matches, FleetMember};
use super::faults::{FaultSpec, Faults};
use super::server::{self, Agent, AgentConfig, AgentLookup};
use crate::topology::inventory::InventoryEntry;

/// The regions of the demo fleet; a simulated fleet spreads over the same four.
pub const REGIONS: [&str; 4] = ["us-east", "us-west", "eu-west", "ap-south"];

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the simulator could not listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    State(#[from] server::AgentStateError),
    #[error("a simulated fleet needs between 1 and 100000 agents, not {0}")]
    Size(usize),
}

/// How to run a simulated fleet.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub agents: usize,
    pub listen: SocketAddr,
    /// Token the agents and the control endpoint require.
    pub token: Option<String>,
    pub faults: FaultSpec,
    pub install_delay: Duration,
    pub transition_delay: Duration,
}

impl SimOptions {
    pub fn new(agents: usize) -> SimOptions {
        SimOptions {
            agents,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            faults: FaultSpec::default(),
            install_delay: Duration::from_millis(40),
            transition_delay: Duration::from_millis(300),
        }
    }
}

/// `n` agents across the four demo regions, shaped like the demo fleet: per twelve
/// agents of a region six `edge-`, four `core-` and two `gpu-`, half in zone `-a`;
/// `ap-south` is staging, the rest production.
pub fn sim_members(n: usize) -> Vec<FleetMember> {
    let mut counters: HashMap<&str, usize> = HashMap::new();
    (0..n)
        .map(|i| {
            let region = REGIONS[i % REGIONS.len()];
            let k = i / REGIONS.len();
            let slot = k % 12;
            let tier = match slot {
                0..=5 => "edge",
                6..=9 => "core",
                _ => "gpu",
            };
            let counter = counters.entry(tier).or_insert(0);
            *counter += 1;
            let zone = format!("{region}-{}", if k.is_multiple_of(2) { "a" } else { "b" });
            let mut labels = BTreeMap::new();
            labels.insert("env".to_string(), if region == "ap-south" { "staging" } else { "production" }.to_string());
            labels.insert("tier".to_string(), tier.to_string());
            let mut extensions = BTreeMap::new();
            for (e, v) in [("auth-filter", "2.0.3"), ("rate-limiter", "1.0.0"), ("log-shipper", "1.4.2")] {
                extensions.insert(e.to_string(), v.to_string());
            }
            let mut capabilities = Vec::new();
            if tier == "gpu" {
                capabilities.push("gpu".to_string());
                extensions.insert("model-server".to_string(), "0.3.0".to_string());
            }
            FleetMember {
                name: format!("{tier}-{counter}"),
                region: region.to_string(),
                zone,
                labels,
                capabilities,
                extensions,
            }
        })
        .collect()
}

/// The agents of a simulator, by name; routes requests by their `/a/NAME` prefix.
#[derive(Clone)]
pub struct SimAgents {
    by_name: Arc<HashMap<String, Arc<Agent>>>,
    members: Arc<Vec<FleetMember>>,
    token: Option<String>,
}

impl AgentLookup for SimAgents {
    fn agent_for(&self, path: &str) -> Option<Arc<Agent>> {
        let rest = path.strip_prefix("/a/")?;
        let name = rest.split('/').next()?;
        self.by_name.get(name).cloned()
    }
}

impl SimAgents {
    /// Gives every agent the faults of `spec` that select it, replacing what it had.
    pub fn apply(&self, spec: &FaultSpec) {
        for m in self.members.iter() {
            if let Some(agent) = self.by_name.get(&m.name) {
                agent.set_faults(spec.for_agent(|sel| member_matches(m, sel)));
            }
        }
    }

    pub fn agent(&self, name: &str) -> Option<&Arc<Agent>> {
        self.by_name.get(name)
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else { return true };
        headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|got| got.len() == want.len() && got.bytes().zip(want.bytes()).all(|(a, b)| a == b))
    }
}

/// A running simulated fleet.
pub struct Simulator {
    addr: SocketAddr,
    agents: SimAgents,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Simulator {
    pub async fn start(options: SimOptions) -> Result<Simulator, SimError> {
        if options.agents == 0 || options.agents > 100_000 {
            return Err(SimError::Size(options.agents));
        }
        let members = sim_members(options.agents);
        let mut by_name = HashMap::with_capacity(members.len());
        for m in &members {
            let mut config = AgentConfig::new(&m.name, &m.region, &m.zone);
            config.labels = m.labels.clone();
            config.capabilities = m.capabilities.clone();
            config.extensions = m.extensions.clone();
            config.token = options.token.clone();
            config.faults = options.faults.for_agent(|sel| member_matches(m, sel));
            config.install_delay = options.install_delay;
            config.transition_delay = options.transition_delay;
            by_name.insert(m.name.clone(), Agent::new(config)?);
        }
        let agents = SimAgents { by_name: Arc::new(by_name), members: Arc::new(members), token: options.token };
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .map_err(|source| SimError::Bind { addr: options.listen, source })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind { addr: options.listen, source })?;
        let app = router(agents.clone());
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "the simulator stopped");
            }
        });
        Ok(Simulator { addr, agents, stop, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The agents as an inventory: base URL `http://ADDR/a/NAME` with name, region and
    /// zone as hints.
    pub fn inventory(&self) -> Vec<InventoryEntry> {
        self.agents
            .members
            .iter()
            .map(|m| InventoryEntry {
                endpoint: format!("http://{}/a/{}", self.addr, m.name),
                name: Some(m.name.clone()),
                region: Some(m.region.clone()),
                zone: Some(m.zone.clone()),
            })
            .collect()
    }

    pub fn agents(&self) -> &SimAgents {
        &self.agents
    }

    /// Stops serving. Hung requests are cut rather than waited for.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.agents.apply(&FaultSpec::default());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// The agents under `/a/NAME/...` plus the control endpoint `/v1/faults`.
fn router(agents: SimAgents) -> Router {
    let control = Router::new()
        .route("/v1/faults", get(list_faults).post(set_faults).delete(clear_faults))
        .with_state(agents.clone());
    server::routes::<SimAgents>("/a/{agent}").with_state(agents).merge(control)
}

#[derive(Serialize)]
struct FaultsAnswer {
    /// Agents with at least one fault, and what they have.
    agents: BTreeMap<String, Vec<String>>,
}

fn answer(agents: &SimAgents) -> FaultsAnswer {
    let mut out = BTreeMap::new();
    for m in agents.members.iter() {
        if let Some(a) = agents.by_name.get(&m.name) {
            let Faults(faults) = a.faults();
            if !faults.is_empty() {
                out.insert(m.name.clone(), faults.iter().map(|f| format!("{f:?}")).collect());
            }
        }
    }
    FaultsAnswer { agents: out }
}

fn refused(status: StatusCode, code: &str, error: String) -> Response {
    (status, Json(super::protocol::ErrorBody { code: code.to_string(), error })).into_response()
}

async fn list_faults(State(agents): State<SimAgents>, headers: HeaderMap) -> Response {
    if !agents.authorised(&headers) {
        return refused(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token".to_string());
    }
    Json(answer(&agents)).into_response()
}

/// The body is the spec itself, as on the command line (`crash/agent:edge-3`); it
/// replaces every fault the fleet had.
async fn set_faults(State(agents): State<SimAgents>, headers: HeaderMap, body: String) -> Response {
    if !agents.authorised(&headers) {
        return refused(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token".to_string());
    }
    match FaultSpec::parse(body.trim()) {
        Ok(spec) => {
            agents.apply(&spec);
            tracing::info!(spec = %body.trim(), "simulator faults replaced");
            Json(answer(&agents)).into_response()
        }
        Err(e) => refused(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    }
}

async fn clear_faults(State(agents): State<SimAgents>, headers: HeaderMap) -> Response {
    if !agents.authorised(&headers) {
        return refused(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token".to_string());
    }
    agents.apply(&FaultSpec::default());
    Json(answer(&agents)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{AgentClient, AgentError};

    #[test]
    fn members_are_shaped_like_the_demo_fleet() {
        let m = sim_members(48);
        let count = |f: &dyn Fn(&FleetMember) -> bool| m.iter().filter(|a| f(a)).count();
        assert_eq!(count(&|a| a.region == "eu-west"), 12);
        assert_eq!(count(&|a| a.name.starts_with("edge-")), 24);
        assert_eq!(count(&|a| a.name.starts_with("gpu-") && a.capabilities == ["gpu"]), 8);
        assert_eq!(count(&|a| a.labels["env"] == "staging"), 12);
        let mut names: Vec<&str> = m.iter().map(|a| a.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 48);
    }

    #[tokio::test]
    async fn agents_behind_one_listener_speak_the_protocol_and_break_on_cue() {
        let mut options = SimOptions::new(8);
        options.token = Some("t0k".into());
        let sim = Simulator::start(options).await.unwrap();
        let inv = sim.inventory();
        let client = AgentClient::new(Duration::from_millis(300), Some("t0k".into())).unwrap();
        let status = client.status(&inv[0].endpoint).await.unwrap();
        assert_eq!(status.name, inv[0].name.clone().unwrap());
        let s = client.install(&inv[1].endpoint, "auth-filter", "2.1.0").await.unwrap();
        assert_eq!(s.name, inv[1].name.clone().unwrap());

        let anonymous = AgentClient::new(Duration::from_millis(300), None).unwrap();
        assert!(matches!(anonymous.status(&inv[0].endpoint).await, Err(AgentError::Unauthorized { .. })));

        let http = reqwest::Client::new();
        let control = format!("http://{}/v1/faults", sim.addr());
        let resp = http.post(&control).body("crash/agent:edge-1").send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let target = inv.iter().find(|e| e.name.as_deref() == Some("edge-1")).unwrap().endpoint.clone();
        assert_eq!(client.status(&target).await.unwrap().name, "edge-1");

        let resp = http.post(&control).bearer_auth("t0k").body("crash/agent:edge-1, hang/region:us-west").send().await;
        assert_eq!(resp.unwrap().status(), 200);
        let err = client.status(&target).await.unwrap_err();
        assert!(matches!(err, AgentError::Unreachable { .. }), "{err:?}");
        let hung = inv.iter().find(|e| e.region.as_deref() == Some("us-west")).unwrap();
        assert!(matches!(client.status(&hung.endpoint).await, Err(AgentError::Timeout { .. })));
        let other = inv.iter().find(|e| e.region.as_deref() == Some("eu-west")).unwrap();
        assert!(client.status(&other.endpoint).await.is_ok());

        let resp = http.post(&control).bearer_auth("t0k").body("boom").send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let resp = http.delete(&control).bearer_auth("t0k").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(client.status(&target).await.unwrap().name, "edge-1");
        assert!(client.status(&hung.endpoint).await.is_ok());
        let resp = http.get(format!("http://{}/a/nobody/v1/status", sim.addr())).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        sim.shutdown().await;
    }
}
