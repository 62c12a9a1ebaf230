//! The agent itself: an HTTP+JSON server that reports its status and health and
//! installs, removes and acts on request. The same code runs the embedded demo fleet,
//! `parley agent` and the simulator, so Parley always drives agents over real HTTP.
//!
//! Installs are simulated (a delay, then the version is recorded), metrics are
//! synthesised from a per-agent baseline with a slow drift, and faults from
//! [`Faults`] can make an agent misbehave on cue.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::faults::{Faults, Reachability};
use super::http::HttpLimits;
use super::names::{self, Kind};
use super::protocol::{
    AgentAction, AgentStatus, ErrorBody, HealthSource, InstallRequest, InstalledExtension, Metrics, ServingState,
    PROTOCOL_VERSION,
};

/// Who the agent is and how it behaves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub name: String,
    pub region: String,
    pub zone: String,
    pub labels: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    /// Extensions installed at first start (a state file, when present, wins).
    pub extensions: BTreeMap<String, String>,
    /// Bearer token every request must carry; `None` accepts any request.
    pub token: Option<String>,
    /// Where installed extensions and the serving state are kept across restarts.
    pub state_file: Option<PathBuf>,
    /// How long a simulated install takes.
    pub install_delay: Duration,
    /// How long draining and restarting take.
    pub transition_delay: Duration,
    pub faults: Faults,
    /// Timeouts and the connection cap of its HTTP server.
    pub http: HttpLimits,
    /// Real installs and measured health (`parley agent --dir`); `None`: simulated.
    pub real: Option<Arc<super::real::RealExtensions>>,
}

impl AgentConfig {
    pub fn new(name: &str, region: &str, zone: &str) -> AgentConfig {
        AgentConfig {
            name: name.to_string(),
            region: region.to_string(),
            zone: zone.to_string(),
            labels: BTreeMap::new(),
            capabilities: Vec::new(),
            extensions: BTreeMap::new(),
            token: None,
            state_file: None,
            install_delay: Duration::from_millis(50),
            transition_delay: Duration::from_millis(200),
            faults: Faults::default(),
            http: HttpLimits::default(),
            real: None,
        }
    }
}

/// What an agent keeps in its state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PersistedState {
    extensions: BTreeMap<String, String>,
    state: ServingState,
}

#[derive(Debug)]
struct Runtime {
    extensions: BTreeMap<String, String>,
    state: ServingState,
    started_at: DateTime<Utc>,
    /// Bumped by every drain/restart so a late timer does not undo a newer action.
    generation: u64,
}

/// One running agent: configuration plus mutable runtime state.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    runtime: Mutex<Runtime>,
    baseline: Metrics,
    /// Starts as `config.faults`; the simulator's control endpoint replaces it.
    faults: Mutex<Faults>,
    /// Bumped whenever the faults change, so parked (hung) requests look again.
    faults_changed: tokio::sync::watch::Sender<u64>,
    /// Changes asked to be persisted so far (see `persist`).
    changes: std::sync::atomic::AtomicU64,
    /// Held by the one writer of the state file at a time, from taking the snapshot to
    /// the rename, so that the file only ever moves forward; holds the number of
    /// changes the file on disk includes.
    writer: Mutex<u64>,
    /// The counters `GET /metrics` reports.
    exporter: super::metrics::Exporter,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentStateError {
    #[error("agent state file {path}: {reason}")]
    StateFile { path: String, reason: String },
    #[error("the agent cannot start: {0}")]
    Invalid(#[from] names::InvalidName),
}

impl Agent {
    /// Creates the agent, reading its state file when there is one. A state file that
    /// cannot be read is an error rather than a silent reset: the agent would otherwise
    /// report versions it does not run.
    pub fn new(config: AgentConfig) -> Result<Arc<Agent>, AgentStateError> {
        names::check_name(Kind::Agent, &config.name)?;
        check_extensions(&config.extensions)?;
        let mut extensions = config.extensions.clone();
        let mut state = ServingState::Active;
        if let Some(path) = &config.state_file {
            remove_stale_temporaries(path);
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let invalid = |reason: String| AgentStateError::StateFile {
                        path: path.display().to_string(),
                        reason: format!("not a valid state file ({reason}); move it away to start fresh"),
                    };
                    let saved: PersistedState = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
                    check_extensions(&saved.extensions).map_err(|e| invalid(e.to_string()))?;
                    extensions = saved.extensions;
                    // A restart finishes whatever transition was under way.
                    state = match saved.state {
                        ServingState::Draining => ServingState::Drained,
                        ServingState::Restarting => ServingState::Active,
                        other => other,
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(AgentStateError::StateFile { path: path.display().to_string(), reason: e.to_string() })
                }
            }
        }
        if config.real.is_some() {
            // What is on disk is what runs: the `current` links win over the state file.
            extensions = config.extensions.clone();
        }
        let baseline = baseline_for(&config.name);
        let faults = Mutex::new(config.faults.clone());
        let agent = Arc::new(Agent {
            config,
            runtime: Mutex::new(Runtime { extensions, state, started_at: Utc::now(), generation: 0 }),
            baseline,
            faults,
            faults_changed: tokio::sync::watch::Sender::new(0),
            changes: std::sync::atomic::AtomicU64::new(0),
            writer: Mutex::new(0),
            exporter: super::metrics::Exporter::default(),
        });
        agent.persist();
        Ok(agent)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The faults the agent has now.
    pub fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the agent's faults at run time (the simulator's control endpoint).
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
        self.faults_changed.send_modify(|n| *n += 1);
    }

    /// Whether the agent serves right now.
    pub fn reachability(&self) -> Reachability {
        self.faults().reachability(&self.config.region, now_ms())
    }

    /// Waits while the agent hangs: until its faults change or a flap edge passes.
    async fn wait_while_hung(&self) {
        loop {
            // Subscribe before looking, so a change between the two is not missed.
            let mut changed = self.faults_changed.subscribe();
            let faults = self.faults();
            let now = now_ms();
            if faults.reachability(&self.config.region, now) != Reachability::Hang {
                return;
            }
            let edge = faults.next_edge_ms(now).map(|at| Duration::from_millis(at.saturating_sub(now)));
            tokio::select! {
                _ = changed.changed() => {}
                _ = async {
                    match edge {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Runtime> {
        // The runtime holds plain data; a panic elsewhere cannot leave it half-written.
        self.runtime.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent's status as `GET /v1/status` reports it.
    pub fn status(&self) -> AgentStatus {
        let rt = self.lock();
        self.status_of(&rt)
    }

    fn status_of(&self, rt: &Runtime) -> AgentStatus {
        AgentStatus {
            protocol: PROTOCOL_VERSION,
            name: self.config.name.clone(),
            region: self.config.region.clone(),
            zone: self.config.zone.clone(),
            labels: self.config.labels.clone(),
            capabilities: self.config.capabilities.clone(),
            extensions: rt
                .extensions
                .iter()
                .map(|(name, version)| InstalledExtension {
                    name: name.clone(),
                    version: version.clone(),
                    health: self.config.real.as_ref().and_then(|r| r.health_of(name)),
                })
                .collect(),
            state: rt.state,
            metrics: self.metrics_for(rt),
            started_at: rt.started_at,
            health_source: Some(match self.config.real {
                Some(_) => HealthSource::Measured,
                None => HealthSource::Simulated,
            }),
        }
    }

    pub fn metrics(&self) -> Metrics {
        let rt = self.lock();
        self.metrics_for(&rt)
    }

    fn metrics_for(&self, rt: &Runtime) -> Metrics {
        if let Some(real) = &self.config.real {
            return real.metrics();
        }
        let extensions = &rt.extensions;
        // A slow drift (period of minutes) so sparklines move without tripping gates.
        let t = Utc::now().timestamp_millis() as f64 / 1000.0;
        let phase = (self.baseline.cpu_pct * 7.0) % std::f64::consts::TAU;
        let wobble = ((t / 40.0) + phase).sin();
        let mut m = Metrics {
            cpu_pct: (self.baseline.cpu_pct + 4.0 * wobble).clamp(0.0, 100.0),
            mem_pct: (self.baseline.mem_pct + 2.0 * wobble).clamp(0.0, 100.0),
            error_rate_pct: (self.baseline.error_rate_pct * (1.0 + 0.2 * wobble)).max(0.0),
            p95_ms: (self.baseline.p95_ms * (1.0 + 0.1 * wobble)).max(1.0),
        };
        let faults = self.faults();
        if let Some(spike) = faults.error_spike(extensions) {
            m.error_rate_pct += spike.error_rate_pct;
            m.p95_ms += spike.extra_p95_ms;
        }
        if let Some(extra) = faults.extra_latency_ms() {
            m.p95_ms += extra;
        }
        if rt.state == ServingState::Drained {
            // A drained agent serves no requests: nothing can fail and there is no
            // latency to measure, and what CPU it uses is its idle footprint. The
            // protocol says so with zeros (docs/agent-protocol.md).
            m.cpu_pct = (m.cpu_pct * IDLE_CPU_SHARE).min(100.0);
            m.error_rate_pct = 0.0;
            m.p95_ms = 0.0;
        }
        round_metrics(m)
    }

    /// Writes the state file, if the agent has one: one writer at a time, each into a
    /// temporary file of its own, flushed to disk, then renamed over the state file
    /// (and the directory flushed), so a reader or a restart after a kill at any moment
    /// finds either the previous state or the new one, whole.
    ///
    /// Callers return only once the file holds their change (the API answers after
    /// that), but writers queued behind one another share one write: whoever takes
    /// the lock writes everything changed so far, and those it covered just return.
    fn persist(&self) {
        use std::sync::atomic::Ordering;
        let Some(path) = &self.config.state_file else { return };
        // Counted after the change was made, so a snapshot taken after reading the
        // count includes this change.
        let mine = self.changes.fetch_add(1, Ordering::SeqCst) + 1;
        // Poisoning cannot leave the count meaningless: at worst one more write.
        let mut written = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if *written >= mine {
            return;
        }
        let covers = self.changes.load(Ordering::SeqCst);
        // Taken under the writer lock, so a later write always carries a later state.
        let saved = {
            let rt = self.lock();
            PersistedState { extensions: rt.extensions.clone(), state: rt.state }
        };
        let result = serde_json::to_vec_pretty(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| write_atomically(path, &bytes, covers));
        if result.is_ok() {
            *written = covers;
        }
        if let Err(e) = result {
            tracing::error!(agent = %self.config.name, path = %path.display(), error = %e, "could not write the agent state file");
        }
    }

    async fn install(
        &self,
        extension: &str,
        version: &str,
        artifact: Option<&crate::artifact::ArtifactRef>,
    ) -> Result<AgentStatus, ApiError> {
        names::check_name(Kind::Extension, extension)
            .and_then(|()| names::check_version(version))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if self.lock().state == ServingState::Restarting {
            return Err(ApiError::unavailable("the agent is restarting"));
        }
        if let Some(real) = &self.config.real {
            if let Err(e) = real.install(extension, version, artifact).await {
                self.exporter.count_install(extension, version, false);
                return Err(ApiError::failed(format!("installing {extension} {version} failed: {e}")));
            }
        } else {
            tokio::time::sleep(self.config.install_delay).await;
        }
        if self.config.real.is_none() && self.faults().install_fails(extension, version) {
            self.exporter.count_install(extension, version, false);
            return Err(ApiError::failed(format!(
                "installing {extension} {version} failed: package verification error"
            )));
        }
        self.lock().extensions.insert(extension.to_string(), version.to_string());
        self.exporter.count_install(extension, version, true);
        self.persist();
        tracing::info!(agent = %self.config.name, %extension, %version, "installed");
        Ok(self.status())
    }

    fn remove(&self, extension: &str) -> Result<AgentStatus, ApiError> {
        names::check_name(Kind::Extension, extension).map_err(|e| ApiError::bad_request(e.to_string()))?;
        {
            let mut rt = self.lock();
            // Like install: nothing changes under a restarting agent.
            if rt.state == ServingState::Restarting {
                return Err(ApiError::unavailable("the agent is restarting"));
            }
            if rt.extensions.remove(extension).is_none() {
                return Err(ApiError::not_found(format!("{extension} is not installed")));
            }
        }
        self.persist();
        Ok(self.status())
    }

    fn act(self: &Arc<Self>, action: AgentAction) -> Result<AgentStatus, ApiError> {
        let delay = self.config.transition_delay;
        let (generation, next_after_delay) = {
            let mut rt = self.lock();
            // Refusals and no-ops must leave the generation alone: bumping it cancels
            // the pending drain/restart timer, which would leave the agent draining or
            // restarting for ever.
            let after = match action {
                AgentAction::Cordon => {
                    if rt.state != ServingState::Active {
                        return Err(ApiError::conflict(format!(
                            "cannot cordon an agent that is {}",
                            rt.state.as_str()
                        )));
                    }
                    rt.state = ServingState::Cordoned;
                    None
                }
                AgentAction::Uncordon => {
                    if rt.state == ServingState::Restarting {
                        return Err(ApiError::conflict("cannot uncordon an agent that is restarting".to_string()));
                    }
                    rt.state = ServingState::Active;
                    None
                }
                AgentAction::Drain => {
                    if matches!(rt.state, ServingState::Draining | ServingState::Drained) {
                        tracing::info!(agent = %self.config.name, state = rt.state.as_str(), "drain: already");
                        return Ok(self.status_of(&rt));
                    }
                    rt.state = ServingState::Draining;
                    Some(ServingState::Drained)
                }
                AgentAction::Restart => {
                    rt.state = ServingState::Restarting;
                    Some(ServingState::Active)
                }
            };
            rt.generation += 1;
            (rt.generation, after)
        };
        self.persist();
        if let Some(next) = next_after_delay {
            let agent = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                {
                    let mut rt = agent.lock();
                    if rt.generation != generation {
                        return;
                    }
                    rt.state = next;
                    if action == AgentAction::Restart {
                        rt.started_at = Utc::now();
                    }
                }
                agent.persist();
            });
        }
        tracing::info!(agent = %self.config.name, action = action.as_str(), "action");
        Ok(self.status())
    }

    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(want) = &self.config.token else { return true };
        let got = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(got.as_bytes(), want.as_bytes())
    }
}

/// Finds the agent a request is for: the one agent of a plain agent server, or the
/// one named in the path of a server that hosts many (the simulator).
pub trait AgentLookup: Clone + Send + Sync + 'static {
    fn agent_for(&self, path: &str) -> Option<Arc<Agent>>;
}

impl AgentLookup for Arc<Agent> {
    fn agent_for(&self, _path: &str) -> Option<Arc<Agent>> {
        Some(Arc::clone(self))
    }
}

/// The agent a request is for, found through the router's [`AgentLookup`].
pub struct Target(pub Arc<Agent>);

impl<S: AgentLookup> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        state
            .agent_for(parts.uri.path())
            .map(Target)
            .ok_or_else(|| ApiError::not_found("no such agent; see docs/agent-protocol.md".to_string()))
    }
}

/// The HTTP routes of the agent protocol (docs/agent-protocol.md).
pub fn router(agent: Arc<Agent>) -> Router {
    routes("").with_state(agent)
}

/// The protocol's routes under `prefix` (empty for a plain agent; `/a/{agent}` where
/// one server hosts many agents, each with base URL `http://host:port/a/NAME`).
pub fn routes<S: AgentLookup>(prefix: &str) -> Router<S> {
    Router::new()
        .route(&format!("{prefix}/v1/status"), get(status))
        .route(&format!("{prefix}/v1/health"), get(health))
        .route(&format!("{prefix}/v1/extensions"), get(extensions))
        .route(&format!("{prefix}/v1/extensions/{{name}}"), put(install).delete(remove))
        .route(&format!("{prefix}/v1/actions/{{action}}"), post(action))
        .route(&format!("{prefix}/metrics"), get(metrics_text))
        .fallback(|| async { ApiError::not_found("no such endpoint; see docs/agent-protocol.md".to_string()) })
        // Without this axum answers 405 with an empty body, breaking "every non-2xx
        // answer carries an ErrorBody".
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method; see docs/agent-protocol.md".to_string(),
            )
        })
}

/// Serves the agent on `listener` under its configured [`HttpLimits`] until
/// `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    agent: Arc<Agent>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = agent.config.http;
    super::http::serve_router(listener, router(agent), limits, shutdown).await
}

/// The `{name}` or `{action}` segment of a path, whatever else the path captures.
#[derive(Deserialize)]
struct NamePath {
    name: String,
}

#[derive(Deserialize)]
struct ActionPath {
    action: String,
}

async fn status(Target(agent): Target, headers: HeaderMap) -> Result<Json<AgentStatus>, ApiError> {
    guard(&agent, &headers).await?;
    Ok(Json(agent.status()))
}

async fn health(Target(agent): Target, headers: HeaderMap) -> Result<Json<Metrics>, ApiError> {
    guard(&agent, &headers).await?;
    agent.exporter.count_probe();
    Ok(Json(agent.metrics()))
}

/// `GET /metrics` in the Prometheus text format (see [`super::metrics`]); behind the
/// same token and faults as the rest of the protocol.
async fn metrics_text(Target(agent): Target, headers: HeaderMap) -> Result<Response, ApiError> {
    guard(&agent, &headers).await?;
    let (extensions, state, m) = {
        let rt = agent.lock();
        (rt.extensions.clone(), rt.state, agent.metrics_for(&rt))
    };
    let c = &agent.config;
    let who = super::metrics::Identity { agent: &c.name, region: &c.region, zone: &c.zone };
    let body = match &c.real {
        // A real agent exports what it measures, never traffic it did not see.
        Some(real) => agent.exporter.render_measured(&who, &extensions, state, &m, &real.measured()),
        None => agent.exporter.render(&who, &extensions, state, &m),
    };
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

async fn extensions(Target(agent): Target, headers: HeaderMap) -> Result<Json<Vec<InstalledExtension>>, ApiError> {
    guard(&agent, &headers).await?;
    Ok(Json(agent.status().extensions))
}

async fn install(
    Target(agent): Target,
    headers: HeaderMap,
    Path(NamePath { name }): Path<NamePath>,
    body: Result<Json<InstallRequest>, JsonRejection>,
) -> Result<Json<AgentStatus>, ApiError> {
    guard(&agent, &headers).await?;
    let Json(req) =
        body.map_err(|e| ApiError::bad_request(format!("the body must be {{\"version\": \"...\"}}: {e}")))?;
    // Its own task: a client that stops waiting (its install timeout) drops this
    // handler, and an install cut off half-way would leave the agent reporting one
    // version while another is linked. The install finishes, or undoes itself.
    let task = tokio::spawn(async move { agent.install(&name, &req.version, req.artifact.as_ref()).await });
    task.await.map_err(|e| ApiError::failed(format!("the install stopped: {e}")))?.map(Json)
}

async fn remove(
    Target(agent): Target,
    headers: HeaderMap,
    Path(NamePath { name }): Path<NamePath>,
) -> Result<Json<AgentStatus>, ApiError> {
    guard(&agent, &headers).await?;
    let Some(real) = agent.config.real.clone() else { return agent.remove(&name).map(Json) };
    names::check_name(Kind::Extension, &name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if agent.lock().state == ServingState::Restarting {
        return Err(ApiError::unavailable("the agent is restarting"));
    }
    // As for installs: a client that stops waiting does not cut a removal off half-way.
    let task = tokio::spawn(async move {
        real.remove(&name).await.map_err(|e| match e {
            super::real::InstallError::NotInstalled { .. } => ApiError::not_found(e.to_string()),
            e => ApiError::failed(format!("removing {name} failed: {e}")),
        })?;
        agent.remove(&name)
    });
    task.await.map_err(|e| ApiError::failed(format!("the removal stopped: {e}")))?.map(Json)
}

async fn action(
    Target(agent): Target,
    headers: HeaderMap,
    Path(ActionPath { action }): Path<ActionPath>,
) -> Result<Json<AgentStatus>, ApiError> {
    guard(&agent, &headers).await?;
    let action = match action.as_str() {
        "drain" => AgentAction::Drain,
        "cordon" => AgentAction::Cordon,
        "uncordon" => AgentAction::Uncordon,
        "restart" => AgentAction::Restart,
        other => return Err(ApiError::not_found(format!("no action `{other}` (drain, cordon, uncordon, restart)"))),
    };
    agent.act(action).map(Json)
}

/// Injected crashes and hangs first (a crashed agent checks nothing), then
/// authentication (a refused request changes nothing), then other injected faults.
async fn guard(agent: &Agent, headers: &HeaderMap) -> Result<(), ApiError> {
    agent.wait_while_hung().await;
    if agent.reachability() == Reachability::Crashed {
        return Err(ApiError { drop_connection: true, ..ApiError::unavailable("crashed") });
    }
    if !agent.authorised(headers) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token".to_string(),
        ));
    }
    if let Some(delay) = agent.faults().response_delay() {
        tokio::time::sleep(delay).await;
    }
    Ok(())
}

/// A protocol error: status code plus the JSON [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// A simulated crash: the connection is cut instead of answered.
    drop_connection: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: String) -> ApiError {
        ApiError { status, code, message, drop_connection: false }
    }
    pub(crate) fn bad_request(message: String) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub(crate) fn not_found(message: String) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    fn conflict(message: String) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }
    fn unavailable(message: &str) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message.to_string())
    }
    fn failed(message: String) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "install_failed", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.drop_connection {
            // A body that fails makes hyper abort the connection: the client sees the
            // connection drop with no answer, as from a process that died mid-request.
            let failing = futures::stream::once(async {
                Err::<axum::body::Bytes, std::io::Error>(std::io::Error::other("simulated crash"))
            });
            return (self.status, axum::body::Body::from_stream(failing)).into_response();
        }
        (self.status, Json(ErrorBody { code: self.code.to_string(), error: self.message })).into_response()
    }
}

/// Every extension name and version of `extensions` follows [`names`].
fn check_extensions(extensions: &BTreeMap<String, String>) -> Result<(), names::InvalidName> {
    extensions.iter().try_for_each(|(name, version)| {
        names::check_name(Kind::Extension, name).and_then(|()| names::check_version(version))
    })
}

/// `.<file name>.<pid>.<n>.tmp` beside `path`: no two writers, in this process or in
/// another one on the same file (an agent started twice by mistake), share one.
fn temporary_for(path: &std::path::Path, n: u64) -> PathBuf {
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{file}.{}.{n}.tmp", std::process::id()))
}

/// Writes `bytes` to `path` through a temporary file of its own: written, flushed to
/// disk, renamed over `path`, and the directory flushed so that the rename survives a
/// power cut too. On failure the temporary is removed and `path` is untouched.
pub(crate) fn write_atomically(path: &std::path::Path, bytes: &[u8], n: u64) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = temporary_for(path, n);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            // The state file and the registration credential beside it are the agent's
            // own: nobody else on the host needs to read them.
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        // Nothing to do if it is already gone.
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Directories cannot be opened for syncing everywhere; the rename has happened.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Removes temporaries of `path` that a killed writer left behind.
fn remove_stale_temporaries(path: &std::path::Path) {
    let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else { return };
    let dir = if dir.as_os_str().is_empty() { std::path::Path::new(".") } else { dir };
    let prefix = format!(".{}.", file.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".tmp") {
            // Another agent on the same file would be a mistake; its write fails loudly.
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn now_ms() -> u64 {
    u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0)
}

/// The share of its serving CPU a drained reference agent still uses.
const IDLE_CPU_SHARE: f64 = 0.1;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A stable per-agent baseline, so each agent looks different but the same across runs.
fn baseline_for(name: &str) -> Metrics {
    // FNV-1a: stable across Rust versions, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    let unit = |shift: u32| ((h >> shift) & 0xffff) as f64 / 65535.0;
    Metrics {
        cpu_pct: 20.0 + 25.0 * unit(0),
        mem_pct: 30.0 + 25.0 * unit(16),
        error_rate_pct: 0.05 + 0.3 * unit(32),
        p95_ms: 80.0 + 120.0 * unit(48),
    }
}

fn round_metrics(m: Metrics) -> Metrics {
    let r = |x: f64, scale: f64| (x * scale).round() / scale;
    Metrics {
        cpu_pct: r(m.cpu_pct, 10.0),
        mem_pct: r(m.mem_pct, 10.0),
        error_rate_pct: r(m.error_rate_pct, 100.0),
        p95_ms: r(m.p95_ms, 1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(transition_ms: u64) -> Arc<Agent> {
        let mut config = AgentConfig::new("edge-1", "us-east", "us-east-a");
        config.extensions.insert("auth-filter".into(), "2.0.3".into());
        config.transition_delay = Duration::from_millis(transition_ms);
        Agent::new(config).unwrap()
    }

    #[tokio::test]
    async fn refused_or_repeated_actions_do_not_cancel_a_pending_transition() {
        let a = agent(30);
        assert_eq!(a.act(AgentAction::Drain).unwrap().state, ServingState::Draining);
        assert!(a.act(AgentAction::Cordon).is_err());
        assert_eq!(a.act(AgentAction::Drain).unwrap().state, ServingState::Draining);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(a.status().state, ServingState::Drained);

        assert_eq!(a.act(AgentAction::Restart).unwrap().state, ServingState::Restarting);
        assert!(a.act(AgentAction::Uncordon).is_err());
        assert!(a.act(AgentAction::Cordon).is_err());
        assert!(a.remove("auth-filter").is_err());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(a.status().state, ServingState::Active);
        assert_eq!(a.status().extensions.len(), 1);
    }

    #[tokio::test]
    async fn a_drained_agent_reports_no_traffic_metrics_and_its_idle_cpu() {
        let a = agent(10);
        let serving = a.status().metrics;
        assert!(serving.error_rate_pct > 0.0 && serving.p95_ms > 0.0, "{serving:?}");
        a.act(AgentAction::Drain).unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let drained = a.status();
        assert_eq!(drained.state, ServingState::Drained);
        assert_eq!((drained.metrics.error_rate_pct, drained.metrics.p95_ms), (0.0, 0.0));
        assert!(drained.metrics.cpu_pct < serving.cpu_pct / 2.0, "{:?}", drained.metrics);
        assert_eq!(drained.metrics.mem_pct, a.metrics().mem_pct);
        a.act(AgentAction::Uncordon).unwrap();
        assert!(a.status().metrics.p95_ms > 0.0);
    }

    #[tokio::test]
    async fn an_uncordon_during_a_drain_cancels_it() {
        let a = agent(30);
        a.act(AgentAction::Drain).unwrap();
        assert_eq!(a.act(AgentAction::Uncordon).unwrap().state, ServingState::Active);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(a.status().state, ServingState::Active);
    }

    #[tokio::test]
    async fn a_wrong_method_gets_an_error_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, agent(30), async move {
            let _ = stopped.await;
        }));
        let resp = reqwest::Client::new().post(format!("http://{addr}/v1/status")).send().await.unwrap();
        assert_eq!(resp.status(), 405);
        let body: ErrorBody = resp.json().await.unwrap();
        assert_eq!(body.code, "method_not_allowed");
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
}
