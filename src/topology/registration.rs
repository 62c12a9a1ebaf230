//! Discovery by registration: a small HTTP endpoint in Parley where agents announce
//! themselves (`POST /v1/register`), keep proving they are alive
//! (`POST /v1/heartbeat`) and leave when they shut down on purpose
//! (`DELETE /v1/register/{name}`). A registered agent joins the poller's inventory; its
//! heartbeats count as answers for the suspect/down clocks; a deregistered one leaves
//! the model rather than turning down. Every route requires the fleet's bearer token
//! when one is configured (docs/discovery.md).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::inventory::{normalise_endpoint, InventoryEntry};
use super::poller::{Deregistered, Poller};
use crate::agent::protocol::ErrorBody;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    pub endpoint: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub name: String,
}

#[derive(Debug, Serialize)]
struct Registered {
    name: String,
    endpoint: String,
    /// False when the endpoint was already polled (a re-registration).
    new: bool,
}

#[derive(Clone)]
struct Registrar {
    poller: Arc<Poller>,
    token: Option<String>,
}

/// The registration routes, feeding `poller`.
pub fn router(poller: Arc<Poller>, token: Option<String>) -> Router {
    Router::new()
        .route("/v1/register", post(register))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/register/{name}", delete(deregister))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see docs/discovery.md") })
        .with_state(Registrar { poller, token })
}

/// Serves the registration endpoint on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    poller: Arc<Poller>,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(poller, token)).with_graceful_shutdown(shutdown).await
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(ErrorBody { code: code.to_string(), error: message.to_string() })).into_response()
}

impl Registrar {
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else { return true };
        let got = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        got.len() == want.len() && got.bytes().zip(want.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

fn plain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn unauthorised() -> Response {
    error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
}

/// Authentication first (a refused request changes nothing), then the JSON body;
/// `shape` tells the caller what the body should have looked like.
fn accept<T>(
    r: &Registrar,
    headers: &HeaderMap,
    body: Result<Json<T>, JsonRejection>,
    shape: &str,
) -> Result<T, Box<Response>> {
    if !r.authorised(headers) {
        return Err(Box::new(unauthorised()));
    }
    body.map(|Json(req)| req)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, "bad_request", &format!("the body must be {shape}: {e}"))))
}

async fn register(
    State(r): State<Registrar>,
    headers: HeaderMap,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Response {
    let req = match accept(&r, &headers, body, r#"{"name", "endpoint", "region", "zone"}"#) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    let places = [Some(&req.name), req.region.as_ref(), req.zone.as_ref()];
    if places.iter().flatten().any(|v| !plain(v)) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "name, region and zone must be 1-64 of A-Z a-z 0-9 - _ .",
        );
    }
    let endpoint = match normalise_endpoint(&req.endpoint) {
        Ok(e) => e,
        Err(why) => {
            return error(StatusCode::BAD_REQUEST, "bad_request", &format!("endpoint `{}`: {why}", req.endpoint))
        }
    };
    let entry =
        InventoryEntry { endpoint: endpoint.clone(), name: Some(req.name.clone()), region: req.region, zone: req.zone };
    let new = r.poller.register(entry);
    // A registration is itself a sign of life.
    r.poller.heartbeat(&req.name);
    tracing::info!(agent = %req.name, %endpoint, new, "agent registered");
    Json(Registered { name: req.name, endpoint, new }).into_response()
}

async fn heartbeat(
    State(r): State<Registrar>,
    headers: HeaderMap,
    body: Result<Json<HeartbeatRequest>, JsonRejection>,
) -> Response {
    let req = match accept(&r, &headers, body, r#"{"name"}"#) {
        Ok(req) => req,
        Err(refused) => return *refused,
    };
    if r.poller.heartbeat(&req.name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        // The agent registers again on 404: Parley may have restarted and forgotten it.
        error(StatusCode::NOT_FOUND, "not_found", "no agent of that name is registered; register first")
    }
}

/// `DELETE /v1/register/{name}`: the agent is leaving on purpose (a graceful
/// shutdown), so it leaves the model instead of turning suspect, then down.
async fn deregister(State(r): State<Registrar>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if !r.authorised(&headers) {
        return unauthorised();
    }
    match r.poller.deregister(&name) {
        Deregistered::Removed(_) => StatusCode::NO_CONTENT.into_response(),
        Deregistered::NotRegistered => error(
            StatusCode::CONFLICT,
            "not_registered",
            "that agent comes from the inventory file or DNS SRV, not registration; remove it there",
        ),
        Deregistered::Unknown => error(StatusCode::NOT_FOUND, "not_found", "no agent of that name is registered"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::server::AgentConfig;
    use crate::agent::standalone::{self, Registration, StandaloneOptions};
    use crate::agent::AgentClient;
    use crate::topology::poller::PollerConfig;
    use crate::topology::{Catalog, Liveness};

    type Server = tokio::task::JoinHandle<Result<(), std::io::Error>>;

    /// An empty poller behind the registration endpoint on a free port, token "tok".
    async fn endpoint(agent_timeout: Duration) -> (Arc<Poller>, String, tokio::sync::oneshot::Sender<()>, Server) {
        let client = AgentClient::new(agent_timeout, Some("tok".into())).unwrap();
        let poller =
            Arc::new(Poller::new(Vec::new(), client, Arc::new(Catalog::embedded().unwrap()), PollerConfig::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::clone(&poller), Some("tok".into()), async move {
            let _ = stopped.await;
        }));
        (poller, url, stop, server)
    }

    #[tokio::test]
    async fn a_registered_agent_is_polled_and_bad_registrations_change_nothing() {
        let (poller, url, stop, server) = endpoint(Duration::from_secs(2)).await;

        let http = reqwest::Client::new();
        let body = serde_json::json!({"name": "edge-9", "endpoint": "http://127.0.0.1:9/", "region": "eu-west"});
        let resp = http.post(format!("{url}/v1/register")).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let bad = serde_json::json!({"name": "edge 9", "endpoint": "http://127.0.0.1:9"});
        let resp = http.post(format!("{url}/v1/register")).bearer_auth("tok").json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let resp = http
            .post(format!("{url}/v1/heartbeat"))
            .bearer_auth("tok")
            .json(&serde_json::json!({"name": "edge-9"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert!(poller.inventory().is_empty());

        // A real `parley agent` registering itself.
        let mut config = AgentConfig::new("edge-9", "eu-west", "eu-west-a");
        config.token = Some("tok".into());
        let options = StandaloneOptions {
            agent: config,
            listen: "127.0.0.1:0".parse().unwrap(),
            register: Some(Registration { url: url.clone(), advertise: None, heartbeat: Duration::from_millis(50) }),
        };
        let (agent_stop, agent_stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn(standalone::run(options, |_| {}, async move {
            let _ = agent_stopped.await;
        }));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while poller.inventory().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(poller.inventory().len(), 1);
        poller.refresh().await;
        let t = poller.handle().snapshot();
        let a = t.agent("edge-9").unwrap();
        assert_eq!((a.region.as_str(), a.liveness), ("eu-west", Liveness::Healthy));
        let resp = http
            .post(format!("{url}/v1/heartbeat"))
            .bearer_auth("tok")
            .json(&serde_json::json!({"name": "edge-9"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
        let _ = agent_stop.send(());
        agent.await.unwrap().unwrap();
        // Its graceful shutdown deregistered it: out of the model at once, not down.
        assert!(poller.handle().snapshot().agent("edge-9").is_none());
        assert!(poller.inventory().is_empty());
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn deregistration_needs_the_token_a_known_name_and_a_registered_agent() {
        let (poller, url, stop, server) = endpoint(Duration::from_millis(200)).await;
        let http = reqwest::Client::new();
        let body = serde_json::json!({"name": "edge-9", "endpoint": "http://127.0.0.1:9", "region": "eu-west"});
        let resp = http.post(format!("{url}/v1/register")).bearer_auth("tok").json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        // Found by DNS SRV, which would bring it back: not for an agent to remove.
        poller.add_entry(InventoryEntry {
            endpoint: "http://127.0.0.1:10".into(),
            name: Some("core-3".into()),
            region: None,
            zone: None,
        });
        poller.refresh().await;
        assert_eq!(poller.handle().snapshot().agents().len(), 2);

        let gone = |name: &str| http.delete(format!("{url}/v1/register/{name}"));
        let resp = gone("edge-9").send().await.unwrap();
        assert_eq!(resp.status(), 401);
        let resp = gone("edge-9").bearer_auth("wrong").send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(poller.inventory().len(), 2, "a refused request changes nothing");
        assert!(poller.handle().snapshot().agent("edge-9").is_some());

        let resp = gone("edge-99").bearer_auth("tok").send().await.unwrap();
        assert_eq!(resp.status(), 404);
        let err: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(err, serde_json::json!({"code": "not_found", "error": "no agent of that name is registered"}));
        let resp = gone("core-3").bearer_auth("tok").send().await.unwrap();
        assert_eq!(resp.status(), 409);
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["code"], "not_registered");

        let mut events = poller.events();
        let resp = gone("edge-9").bearer_auth("tok").send().await.unwrap();
        assert_eq!(resp.status(), 204);
        let left = events.try_recv().unwrap();
        assert!(
            matches!(&left, crate::topology::poller::TopologyEvent::Left { agent, region, .. } if agent == "edge-9" && region == "eu-west"),
            "{left:?}"
        );
        assert_eq!(
            crate::ui::repl::announce_fleet(&left).split_once(' ').unwrap().1,
            "edge-9 (eu-west) deregistered and left the fleet"
        );
        let names: Vec<String> =
            poller.handle().snapshot().agents().iter().map(|a| a.name.to_string()).collect::<Vec<_>>();
        assert_eq!(names, ["core-3"], "gone from the model at once");
        let endpoints: Vec<String> = poller.inventory().iter().map(|e| e.endpoint.clone()).collect();
        assert_eq!(endpoints, ["http://127.0.0.1:10"]);
        poller.refresh().await;
        assert_eq!(poller.handle().snapshot().agents().len(), 1, "and not polled again");
        assert_eq!(gone("edge-9").bearer_auth("tok").send().await.unwrap().status(), 404);
        // It may come back by registering again.
        let resp = http.post(format!("{url}/v1/register")).bearer_auth("tok").json(&body).send().await.unwrap();
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["new"], true);
        assert_eq!(poller.inventory().len(), 2);

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
