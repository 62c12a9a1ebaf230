//! `GET /v1/routing` for load balancers and DNS, `GET /v1/routing/agents/{name}` for
//! agents learning whether they should serve (docs/routing.md). Read-only, so it
//! needs no token: the table says nothing an agent's own traffic does not.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::json;

use super::Router;

pub fn router(routing: Router) -> axum::Router {
    axum::Router::new()
        .route("/v1/routing", get(table))
        .route("/v1/routing/agents/{name}", get(agent))
        .with_state(routing)
}

async fn table(State(routing): State<Router>) -> Response {
    let snap = routing.snapshot();
    let regions: BTreeMap<&String, Vec<serde_json::Value>> = snap
        .table
        .regions
        .iter()
        .map(|(r, routes)| (r, routes.iter().map(|x| json!({"region": x.region, "weight": x.weight})).collect()))
        .collect();
    Json(json!({ "regions": regions, "version": snap.version, "updated_at": snap.updated_at })).into_response()
}

async fn agent(State(routing): State<Router>, Path(name): Path<String>) -> Response {
    let topo = routing.inner.topology.snapshot();
    match topo.agent(&name) {
        Some(a) => {
            let table = routing.table();
            Json(json!({ "agent": name, "region": a.region, "serving": table.serves_itself(&a.region),
                         "version": routing.snapshot().version }))
            .into_response()
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"code": "not_found", "error": format!("no agent {name}")})))
            .into_response(),
    }
}

/// Serves the endpoint on `addr` until `stop`.
pub async fn serve(
    routing: Router,
    addr: std::net::SocketAddr,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, super::RoutingError> {
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| super::RoutingError::Bind { addr, source })?;
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "routing endpoint");
    Ok(tokio::spawn(async move {
        let app = router(routing);
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    }))
}
