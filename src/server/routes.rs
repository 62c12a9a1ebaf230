//! The API's routes (docs/api.md): conversational turns, deployments and their
//! journal, the fleet, routing, the audit log, the event stream, the server's own
//! status, and `stop`. Every route but `/healthz` sits behind authentication; what a
//! turn may change is the dialog session's to decide, by the operation's own role.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::json;

use super::auth::{self, Caller};
use super::ServerState;
use crate::dialog::Session;
use crate::ops::{Actor, DeploymentStatus, Operation, Role};
use crate::reply::Outcome;

/// A session nobody used for this long is forgotten (its pending yes/no with it).
const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// An error as every route answers it: `{"code": ..., "error": ...}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "error": message}))).into_response()
}

pub fn router(state: &Arc<ServerState>, transport: auth::Transport) -> axum::Router {
    let api = axum::Router::new()
        .route("/v1/turn", post(turn))
        .route("/v1/deployments", get(deployments))
        .route("/v1/deployments/{name}", get(deployment))
        .route("/v1/deployments/{name}/journal", get(journal))
        .route("/v1/fleet", get(fleet))
        .route("/v1/audit", get(audit))
        .route("/v1/events", get(super::events::stream))
        .route("/v1/status", get(status))
        .route("/v1/stop", post(stop))
        .route("/metrics", get(metrics))
        .with_state(Arc::clone(state))
        .merge(crate::routing::http::router(state.services.router.clone()));
    let api = match transport {
        auth::Transport::Unix => api.layer(axum::middleware::from_fn_with_state(Arc::clone(state), auth::unix)),
        auth::Transport::Tcp => api.layer(axum::middleware::from_fn_with_state(Arc::clone(state), auth::tcp)),
    };
    api.route("/healthz", get(healthz))
        .layer(axum::middleware::from_fn_with_state(Arc::clone(state), count))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// Counts each request by its route (the pattern, not the path, so ids do not
/// multiply the series) and status.
async fn count(State(state): State<Arc<ServerState>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string());
    // A client asking is a client attached, for the idle stop.
    let _in_flight = state.idle.as_ref().map(|i| i.request());
    let response = next.run(req).await;
    state.metrics.request(route.as_deref().unwrap_or("unmatched"), response.status().as_u16());
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(&state.services),
    )
        .into_response()
}

/// One conversational turn.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnRequest {
    /// Chosen by the client; the same id continues a conversation ("it", yes/no).
    pub session: String,
    /// What was said...
    #[serde(default)]
    pub utterance: Option<String>,
    /// ...or the typed operation (the operation contract's JSON).
    #[serde(default)]
    pub operation: Option<Operation>,
    /// ...or a click on a Confirm/Cancel button bound to one proposal.
    #[serde(default)]
    pub answer: Option<ProposalAnswer>,
    /// The front-end speaking (`ask`, `chat-json`, `repl`, ...), for the audit log.
    #[serde(default)]
    pub frontend: Option<String>,
    /// A bridge speaking for one of its people (docs/api.md, "Bridges").
    #[serde(default)]
    pub on_behalf_of: Option<auth::OnBehalfOf>,
}

/// The yes or no of a button shown with proposal `proposal`: it answers that
/// proposal only, never whatever else is pending by then.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalAnswer {
    pub proposal: String,
    pub yes: bool,
}

enum TurnInput {
    Words(String),
    Typed(Operation),
    Answer(ProposalAnswer),
}

/// A conversation held by the server for one client.
pub struct SessionSlot {
    owner: String,
    session: Arc<tokio::sync::Mutex<Session>>,
    used: Instant,
}

pub type Sessions = std::sync::Mutex<HashMap<String, SessionSlot>>;

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn frontend_name(given: Option<&str>) -> Result<String, String> {
    let name = given.unwrap_or("api");
    if (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)) {
        Ok(name.to_string())
    } else {
        Err(format!("`frontend` must be 1 to 32 letters, digits or -_:. (like `ask`), not {name:?}"))
    }
}

async fn turn(
    State(state): State<Arc<ServerState>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    let req: TurnRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &format!("not a turn: {e}")),
    };
    if !valid_id(&req.session) {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "`session` must be 1 to 64 letters, digits, - or _ (the client picks it)",
        );
    }
    let frontend = match frontend_name(req.frontend.as_deref()) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e),
    };
    let what = match (req.utterance, req.operation, req.answer) {
        (Some(u), None, None) => TurnInput::Words(u),
        (None, Some(op), None) => TurnInput::Typed(op),
        (None, None, Some(a)) => TurnInput::Answer(a),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "a turn has exactly one of `utterance`, `operation` and `answer`",
            )
        }
    };
    let (speaker, role) = match caller.speaker(req.on_behalf_of.as_ref()) {
        Ok(s) => s,
        Err(refusal) => return error(StatusCode::FORBIDDEN, "forbidden", &refusal),
    };
    if state.stopping.load(Ordering::SeqCst) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the Parley server is stopping; ask again once it is back",
        );
    }
    let actor = Actor::new(speaker, frontend, role);
    let session = match state.session(&req.session, &actor).await {
        Ok(s) => s,
        Err(owner) => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                &format!("session {} belongs to {owner}; pick another session id", req.session),
            )
        }
    };
    let started = Instant::now();
    let mut session = session.lock().await;
    // Roles and the audit log follow the speaker of each turn.
    session.set_actor(actor);
    let mut reply = match what {
        TurnInput::Words(utterance) => session.handle(&utterance).await,
        TurnInput::Typed(op) => session.handle_operation(op).await,
        TurnInput::Answer(a) => session.answer_proposal(&a.proposal, a.yes).await,
    };
    // What the session waits a yes/no for after this turn, whatever the turn was: a
    // question asked over an open proposal leaves it pending, and a front-end that
    // shows a confirmation (the TUI's modal) needs to know it still is.
    let pending = session.proposal().cloned();
    drop(session);
    state.metrics.turn(started.elapsed());
    if state.read_only && reply.outcome == Outcome::Refused && caller.granted > Role::Viewer {
        reply.message =
            format!("{} (This server runs with --read-only: nothing can be changed through it.)", reply.message);
    }
    Json(TurnAnswer { reply, pending_confirmation: pending }).into_response()
}

/// A turn's answer: the reply, and beside its fields (additive, so the chat contract
/// is unchanged) the proposal still waiting for this session's yes/no.
#[derive(Debug, serde::Serialize)]
struct TurnAnswer {
    #[serde(flatten)]
    reply: crate::reply::Reply,
    pending_confirmation: Option<crate::reply::Proposal>,
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
}

async fn deployments(State(state): State<Arc<ServerState>>, Query(q): Query<ListQuery>) -> Response {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => match DeploymentStatus::ALL.into_iter().find(|d| d.as_str() == s) {
            Some(d) => Some(d),
            None => {
                let known: Vec<&str> = DeploymentStatus::ALL.iter().map(|d| d.as_str()).collect();
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    &format!("no status {s:?}; one of {}", known.join(", ")),
                );
            }
        },
    };
    let filter = crate::registry::DeploymentFilter {
        status,
        limit: Some(q.limit.unwrap_or(100).min(1000)),
        ..Default::default()
    };
    match state.services.registry.list_deployments(&filter).await {
        Ok(list) => Json(json!({ "deployments": list })).into_response(),
        Err(e) => internal(&e),
    }
}

async fn deployment(State(state): State<Arc<ServerState>>, Path(name): Path<String>) -> Response {
    match state.services.registry.deployment_by_name(&name).await {
        Ok(Some(d)) => Json(d).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", &format!("there is no deployment {name}")),
        Err(e) => internal(&e),
    }
}

async fn journal(State(state): State<Arc<ServerState>>, Path(name): Path<String>) -> Response {
    let registry = &state.services.registry;
    let rec = match registry.deployment_by_name(&name).await {
        Ok(Some(d)) => d,
        Ok(None) => return error(StatusCode::NOT_FOUND, "not_found", &format!("there is no deployment {name}")),
        Err(e) => return internal(&e),
    };
    match registry.events(rec.id).await {
        Ok(events) => Json(json!({ "deployment": name, "events": events })).into_response(),
        Err(e) => internal(&e),
    }
}

async fn fleet(State(state): State<Arc<ServerState>>) -> Response {
    let topo = state.services.topology.snapshot();
    let regions: Vec<serde_json::Value> =
        topo.regions().iter().map(|r| json!({"region": r, "health": topo.region_health(r).as_str()})).collect();
    Json(json!({
        "refreshed_at": topo.refreshed_at(),
        "regions": regions,
        "agents": topo.agents(),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    since: Option<String>,
    limit: Option<u32>,
}

async fn audit(State(state): State<Arc<ServerState>>, Query(q): Query<AuditParams>) -> Response {
    use crate::registry::audit::{parse_since, AuditQuery};
    let since = match parse_since(q.since.as_deref().unwrap_or("today"), chrono::Local::now()) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", &e),
    };
    let query = AuditQuery { since: Some(since), limit: q.limit.unwrap_or(1000).min(10_000) };
    match state.services.registry.audit(&query).await {
        Ok(entries) => Json(json!({ "since": since, "entries": entries })).into_response(),
        Err(e) => internal(&e),
    }
}

async fn status(State(state): State<Arc<ServerState>>) -> Response {
    let running = match state.services.registry.active_deployments().await {
        Ok(list) => list
            .into_iter()
            .map(|d| json!({"deployment": d.name, "status": d.status, "step": d.current_step + 1, "steps": d.step_count}))
            .collect::<Vec<_>>(),
        Err(e) => return internal(&e),
    };
    let kept = state.kept_by(1).await;
    Json(state.status_json(running, kept)).into_response()
}

async fn stop(State(state): State<Arc<ServerState>>, Extension(caller): Extension<Caller>) -> Response {
    if let Some(refused) = caller.refuse_below(Role::Admin, "stopping the server") {
        return refused;
    }
    let entry = crate::registry::AuditEntry::new(
        &Actor::new(caller.name.clone(), format!("serve-{}", caller.transport.as_str()), caller.granted),
        "parley serve stop",
        None,
        crate::registry::AuditResult::Ok,
        "the server stops in order; running rollouts carry on at its next start",
    );
    if let Err(e) = state.services.registry.append_audit(&entry).await {
        tracing::error!(error = %e, "could not write the audit log");
    }
    state.request_stop();
    (StatusCode::ACCEPTED, Json(json!({"stopping": true}))).into_response()
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "API request failed");
    error(StatusCode::INTERNAL_SERVER_ERROR, "internal", &e.to_string())
}

impl ServerState {
    /// The session `id`, made for `actor` if new; `Err(owner)` when it is someone else's.
    async fn session(&self, id: &str, actor: &Actor) -> Result<Arc<tokio::sync::Mutex<Session>>, String> {
        if let Some(found) = self.lookup(id, actor)? {
            return Ok(found);
        }
        // Deployments recovery found interrupted are told to new sessions only while
        // they still are.
        let mut still = Vec::new();
        for d in &self.interrupted {
            if let Ok(Some(now)) = self.services.registry.deployment_by_name(&d.name).await {
                if crate::orchestrate::interrupted(&now) {
                    still.push(now);
                }
            }
        }
        let session = Arc::new(tokio::sync::Mutex::new(
            Session::new(Arc::clone(&self.services), actor.clone()).with_interrupted(&still),
        ));
        let mut sessions = self.lock_sessions();
        sessions.retain(|_, s| s.used.elapsed() < SESSION_IDLE);
        let slot = sessions.entry(id.to_string()).or_insert_with(|| SessionSlot {
            owner: actor.name.clone(),
            session: Arc::clone(&session),
            used: Instant::now(),
        });
        if slot.owner != actor.name {
            return Err(slot.owner.clone());
        }
        Ok(Arc::clone(&slot.session))
    }

    fn lookup(&self, id: &str, actor: &Actor) -> Result<Option<Arc<tokio::sync::Mutex<Session>>>, String> {
        let mut sessions = self.lock_sessions();
        match sessions.get_mut(id) {
            Some(slot) if slot.owner != actor.name => Err(slot.owner.clone()),
            Some(slot) => {
                slot.used = Instant::now();
                Ok(Some(Arc::clone(&slot.session)))
            }
            None => Ok(None),
        }
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionSlot>> {
        // Inserts and removes only: a poisoned map is still whole.
        self.sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn session_count(&self) -> usize {
        self.lock_sessions().len()
    }
}
