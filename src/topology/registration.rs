//! Discovery by registration: a small HTTP endpoint in Parley where agents announce
//! themselves (`POST /v1/register`), check that Parley still has them
//! (`POST /v1/heartbeat`) and leave when they shut down on purpose
//! (`DELETE /v1/register/{name}`). A registered agent joins the poller's inventory; a
//! deregistered one leaves the model rather than turning down (docs/discovery.md).
//!
//! Every route requires the fleet's bearer token when one is configured, but the
//! shared token only admits a *first* registration: that one binds the name to its
//! endpoint and answers a credential of the agent's own, which Parley keeps only as a
//! SHA-256 hash and never logs. From then on, re-registering (also from a new
//! endpoint, which moves the agent rather than leaving a stale twin), heartbeats and
//! deregistration need that credential in the `Parley-Agent-Credential` header. Without
//! it a bound name is only given to a new endpoint once Parley's own polls have proven
//! the bound one dead ([`Poller::proven_dead`]). Heartbeats never count as liveness.
//!
//! With a bindings file (Parley's `<data-dir>/registrations.json`) the bindings
//! survive a restart of Parley: they are loaded, and their agents polled, before the
//! endpoint answers anyone, so an impostor cannot take a name while its agent is
//! still finding out that Parley restarted.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::inventory::{normalise_endpoint, InventoryEntry};
use super::poller::{Deregistered, Poller};
use crate::agent::http::{serve_router, HttpLimits};
use crate::agent::names::{self, Kind};
use crate::agent::protocol::ErrorBody;
pub use crate::agent::protocol::{Registered, CREDENTIAL_HEADER};

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

/// A name bound to the endpoint that registered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Binding {
    endpoint: String,
    /// SHA-256 of the agent's credential.
    #[serde(with = "hex32")]
    credential: [u8; 32],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    zone: Option<String>,
}

impl Binding {
    fn entry(&self, name: &str) -> InventoryEntry {
        InventoryEntry {
            endpoint: self.endpoint.clone(),
            name: Some(name.to_string()),
            region: self.region.clone(),
            zone: self.zone.clone(),
        }
    }
}

/// `[u8; 32]` as 64 hex digits.
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        if text.len() != 64 {
            return Err(serde::de::Error::custom("a credential hash is 64 hex digits"));
        }
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = text
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| serde::de::Error::custom("a credential hash is 64 hex digits"))?;
        }
        Ok(out)
    }
}

#[derive(Clone)]
struct Registrar {
    poller: Arc<Poller>,
    token: Option<String>,
    /// Agent name -> binding. Taken before the poller's own lock, never the reverse.
    bindings: Arc<Mutex<HashMap<String, Binding>>>,
    /// Where the bindings are kept across restarts of Parley, if anywhere.
    file: Option<Arc<PathBuf>>,
}

/// How the registration endpoint runs.
#[derive(Debug, Clone, Default)]
pub struct RegistrationOptions {
    /// The fleet's shared bearer token; `None` admits anyone to a first registration.
    pub token: Option<String>,
    /// Keeps the bindings (names, endpoints, credential hashes) across restarts.
    pub bindings_file: Option<PathBuf>,
    pub limits: HttpLimits,
}

/// The registration routes, feeding `poller`, with bindings kept in memory only.
pub fn router(poller: Arc<Poller>, token: Option<String>) -> Router {
    routes(Registrar { poller, token, bindings: Arc::new(Mutex::new(HashMap::new())), file: None })
}

/// Loads the bindings of `file` (a missing file is an empty one) and has `poller` poll
/// their agents. A file that cannot be read or parsed is reported and set aside
/// (renamed `.bad`) rather than trusted in part: its agents register again.
fn load_bindings(file: &std::path::Path, poller: &Poller) -> HashMap<String, Binding> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            tracing::error!(file = %file.display(), error = %e, "cannot read the registration bindings; agents must register again");
            return HashMap::new();
        }
    };
    let parsed: Result<BTreeMap<String, Binding>, String> =
        serde_json::from_str(&text).map_err(|e| e.to_string()).and_then(|all: BTreeMap<String, Binding>| {
            for (name, b) in &all {
                names::check_name(Kind::Agent, name).map_err(|e| e.to_string())?;
                normalise_endpoint(&b.endpoint).map_err(|e| format!("{name}: endpoint: {e}"))?;
            }
            Ok(all)
        });
    match parsed {
        Ok(all) => {
            for (name, b) in &all {
                poller.register(b.entry(name));
            }
            tracing::info!(file = %file.display(), agents = all.len(), "registration bindings loaded");
            all.into_iter().collect()
        }
        Err(why) => {
            let aside = file.with_extension("json.bad");
            tracing::error!(file = %file.display(), %why, aside = %aside.display(), "the registration bindings are not valid; set aside, agents must register again");
            // If even the rename fails, the next write replaces the file.
            let _ = std::fs::rename(file, &aside);
            HashMap::new()
        }
    }
}

/// [`router`] under `options`: with a bindings file, bindings are loaded (and their
/// agents polled) before this returns, and every change is written back.
pub fn router_with(poller: Arc<Poller>, options: &RegistrationOptions) -> Router {
    let bindings = options.bindings_file.as_deref().map(|f| load_bindings(f, &poller)).unwrap_or_default();
    routes(Registrar {
        poller,
        token: options.token.clone(),
        bindings: Arc::new(Mutex::new(bindings)),
        file: options.bindings_file.clone().map(Arc::new),
    })
}

fn routes(registrar: Registrar) -> Router {
    Router::new()
        .route("/v1/register", post(register))
        .route("/v1/heartbeat", post(heartbeat))
        .route("/v1/register/{name}", delete(deregister))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such endpoint; see docs/discovery.md") })
        .method_not_allowed_fallback(|| async {
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "that endpoint does not take that method")
        })
        .with_state(registrar)
}

/// Serves the registration endpoint on `listener` until `shutdown` resolves, with the
/// same header and body timeouts and connection cap as an agent ([`HttpLimits`]).
pub fn serve(
    listener: tokio::net::TcpListener,
    poller: Arc<Poller>,
    token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
    let options = RegistrationOptions { token, ..RegistrationOptions::default() };
    serve_with(listener, poller, &options, shutdown)
}

/// [`serve`] under `options` (a bindings file, other limits). The bindings are loaded,
/// and their agents added to `poller`, when this is called, before the future it
/// answers accepts anyone.
pub fn serve_with(
    listener: tokio::net::TcpListener,
    poller: Arc<Poller>,
    options: &RegistrationOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
    serve_router(listener, router_with(poller, options), options.limits, shutdown)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(ErrorBody { code: code.to_string(), error: message.to_string() })).into_response()
}

fn unauthorised() -> Response {
    error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn forbidden(message: &str) -> Response {
    error(StatusCode::FORBIDDEN, "forbidden", message)
}

fn hash(credential: &str) -> [u8; 32] {
    Sha256::digest(credential.as_bytes()).into()
}

/// 32 random bytes from the thread's CSPRNG (seeded by the OS), as 64 hex digits.
fn new_credential() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Registrar {
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.token else { return true };
        let got = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(got.as_bytes().ct_eq(want.as_bytes()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Binding>> {
        // Plain data, each change made in one statement: a panic cannot leave it torn.
        self.bindings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `bindings` to the bindings file, if there is one. Called with the lock
    /// held, so writes happen one at a time and in the order of the changes.
    fn keep(&self, bindings: &HashMap<String, Binding>) {
        let Some(file) = &self.file else { return };
        let sorted: BTreeMap<&String, &Binding> = bindings.iter().collect();
        let result = serde_json::to_vec_pretty(&sorted)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::agent::server::write_atomically(file, &bytes, 0));
        if let Err(e) = result {
            tracing::error!(file = %file.display(), error = %e, "cannot keep the registration bindings; a restart of Parley forgets them");
        }
    }
}

/// Whether `headers` carry the credential `binding` was issued with.
fn proves(headers: &HeaderMap, binding: &Binding) -> bool {
    headers
        .get(CREDENTIAL_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| bool::from(hash(c).ct_eq(&binding.credential)))
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
    body.map(|Json(req)| req).map_err(|e| Box::new(bad_request(&format!("the body must be {shape}: {e}"))))
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
    let checked = names::check_name(Kind::Agent, &req.name)
        .and_then(|()| req.region.as_deref().map_or(Ok(()), |v| names::check_name(Kind::Region, v)))
        .and_then(|()| req.zone.as_deref().map_or(Ok(()), |v| names::check_name(Kind::Zone, v)));
    if let Err(e) = checked {
        return bad_request(&e.to_string());
    }
    let endpoint = match normalise_endpoint(&req.endpoint) {
        Ok(e) => e,
        Err(why) => return bad_request(&format!("endpoint `{}`: {why}", req.endpoint.escape_default())),
    };
    let entry = InventoryEntry {
        endpoint: endpoint.clone(),
        name: Some(req.name.clone()),
        region: req.region.clone(),
        zone: req.zone.clone(),
    };
    let mut bindings = r.lock();
    let (credential, moved_from) = match bindings.get_mut(&req.name) {
        Some(bound) if proves(&headers, bound) => {
            let moved = (!bound.endpoint.eq_ignore_ascii_case(&endpoint)).then(|| bound.endpoint.clone());
            bound.endpoint.clone_from(&endpoint);
            bound.region.clone_from(&req.region);
            bound.zone.clone_from(&req.zone);
            (None, moved)
        }
        Some(bound) if !r.poller.proven_dead(&bound.endpoint) => {
            tracing::warn!(agent = %req.name, bound = %bound.endpoint, claimed = %endpoint, "registration refused: the name is bound to a live agent");
            return forbidden(&format!(
                "{} is registered from another endpoint that is alive; only that agent, with its credential, can re-register it",
                req.name
            ));
        }
        Some(bound) => {
            // Parley's own polls have shown the bound endpoint dead: the name is free
            // again, and the old credential no longer proves anything.
            tracing::warn!(agent = %req.name, dead = %bound.endpoint, %endpoint, "a name whose endpoint was proven dead is bound anew");
            let credential = new_credential();
            let moved = Some(std::mem::replace(&mut bound.endpoint, endpoint.clone()));
            bound.credential = hash(&credential);
            bound.region.clone_from(&req.region);
            bound.zone.clone_from(&req.zone);
            (Some(credential), moved)
        }
        None => {
            // A name the inventory file or DNS SRV already gives a live endpoint is that
            // agent's, not a newcomer's.
            let others = r.poller.endpoints_named(&req.name);
            if let Some(other) = others.iter().find(|e| !e.eq_ignore_ascii_case(&endpoint) && !r.poller.proven_dead(e))
            {
                tracing::warn!(agent = %req.name, known = %other, claimed = %endpoint, "registration refused: the name is another live agent's");
                return forbidden(&format!("{} is already known at another endpoint that is alive", req.name));
            }
            let credential = new_credential();
            let binding = Binding {
                endpoint: endpoint.clone(),
                credential: hash(&credential),
                region: req.region.clone(),
                zone: req.zone.clone(),
            };
            bindings.insert(req.name.clone(), binding);
            (Some(credential), None)
        }
    };
    if let Some(old) = &moved_from {
        // One agent, one endpoint: the old one is not left behind as a stale twin.
        r.poller.forget_registered(old);
    }
    let new = r.poller.register(entry);
    r.keep(&bindings);
    drop(bindings);
    tracing::info!(agent = %req.name, %endpoint, new, moved_from = moved_from.as_deref().unwrap_or(""), "agent registered");
    Json(Registered { name: req.name, endpoint, new, credential }).into_response()
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
    if let Err(e) = names::check_name(Kind::Agent, &req.name) {
        return bad_request(&e.to_string());
    }
    // The guard goes at the end of this statement, before the poller is asked.
    let proven = r.lock().get(&req.name).map(|bound| proves(&headers, bound));
    match proven {
        Some(true) if r.poller.knows(&req.name) => StatusCode::NO_CONTENT.into_response(),
        Some(false) => forbidden("missing or wrong agent credential"),
        // The agent registers again on 404: Parley may have restarted and forgotten it.
        _ => error(StatusCode::NOT_FOUND, "not_found", "no agent of that name is registered; register first"),
    }
}

/// `DELETE /v1/register/{name}`: the agent is leaving on purpose (a graceful
/// shutdown), so it leaves the model instead of turning suspect, then down. Only the
/// agent itself, with its credential, may say so.
async fn deregister(State(r): State<Registrar>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if !r.authorised(&headers) {
        return unauthorised();
    }
    if let Err(e) = names::check_name(Kind::Agent, &name) {
        return bad_request(&e.to_string());
    }
    let mut bindings = r.lock();
    match bindings.get(&name) {
        Some(bound) if !proves(&headers, bound) => return forbidden("missing or wrong agent credential"),
        Some(_) => {}
        None if r.poller.knows(&name) => {
            return error(
                StatusCode::CONFLICT,
                "not_registered",
                "that agent comes from the inventory file or DNS SRV, not registration; remove it there",
            )
        }
        None => return error(StatusCode::NOT_FOUND, "not_found", "no agent of that name is registered"),
    }
    bindings.remove(&name);
    r.keep(&bindings);
    if r.poller.deregister(&name) == Deregistered::NotRegistered {
        // Also in the inventory file or DNS SRV under that name: that source stays.
        tracing::info!(agent = %name, "deregistered; its inventory entry stays");
    }
    StatusCode::NO_CONTENT.into_response()
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
        // The shared token alone no longer speaks for edge-9: it has its own credential.
        let resp = http
            .post(format!("{url}/v1/heartbeat"))
            .bearer_auth("tok")
            .json(&serde_json::json!({"name": "edge-9"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["code"], "forbidden");
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
        let registered: Registered = resp.json().await.unwrap();
        let credential = registered.credential.unwrap();
        assert_eq!(credential.len(), 64);
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
        // Any holder of the shared token is not the agent.
        let resp = gone("edge-9").bearer_auth("tok").send().await.unwrap();
        assert_eq!(resp.status(), 403);
        let resp = gone("edge-9").bearer_auth("tok").header(CREDENTIAL_HEADER, "0".repeat(64)).send().await.unwrap();
        assert_eq!(resp.status(), 403);
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
        let resp = gone("edge-9").bearer_auth("tok").header(CREDENTIAL_HEADER, &credential).send().await.unwrap();
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
        // It may come back by registering again, with a credential of its own again.
        let resp = http.post(format!("{url}/v1/register")).bearer_auth("tok").json(&body).send().await.unwrap();
        let again: Registered = resp.json().await.unwrap();
        assert!(again.new);
        assert!(again.credential.is_some_and(|c| c != credential));
        assert_eq!(poller.inventory().len(), 2);

        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
