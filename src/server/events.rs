//! `GET /v1/events`: one WebSocket stream of everything a front-end shows as it
//! happens — rollout progress (the orchestrator's events, with the sentence a
//! front-end prints), routing changes Parley made by itself, and fleet changes.
//! Each message is one JSON text frame; see docs/api.md.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::ServerState;
use crate::orchestrate::{announce, event_deployment, RolloutEvent};

/// One message of the stream, as JSON.
pub fn rollout_message(event: &RolloutEvent) -> serde_json::Value {
    json!({
        "type": "rollout",
        "deployment": event_deployment(event),
        "event": event,
        "announcement": announce(event),
    })
}

pub async fn stream(State(state): State<Arc<ServerState>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| serve_socket(state, socket))
}

/// Counts a subscriber while it is connected.
struct Subscribed(Arc<ServerState>);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_socket(state: Arc<ServerState>, mut socket: WebSocket) {
    state.subscribers.fetch_add(1, Ordering::Relaxed);
    let _count = Subscribed(Arc::clone(&state));
    // Subscribed before the hello, so a client that reads the hello and then asks
    // for a deployment's state misses nothing in between.
    let mut rollouts = state.services.orchestrator.subscribe();
    let mut routing = state.services.router.notices();
    let mut fleet = state.services.poller.events();
    let mut stop = state.stop.subscribe();
    let hello = json!({"type": "hello", "server": env!("CARGO_PKG_VERSION")});
    if socket.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    loop {
        let message = tokio::select! {
            // Only whether it stopped: the guard `wait_for` answers must not be held.
            _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                json!({"type": "shutdown", "announcement": "The Parley server is stopping; running rollouts carry on when it starts again."})
            }
            incoming = socket.recv() => match incoming {
                // The stream is one-way; pings are answered by axum, anything else ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            e = rollouts.recv() => match e {
                Ok(event) => rollout_message(&event),
                Err(RecvError::Lagged(n)) => json!({"type": "lagged", "missed": n}),
                Err(RecvError::Closed) => return,
            },
            n = routing.recv() => match n {
                Ok(text) => json!({"type": "routing", "announcement": text}),
                Err(RecvError::Lagged(n)) => json!({"type": "lagged", "missed": n}),
                Err(RecvError::Closed) => return,
            },
            f = fleet.recv() => match f {
                Ok(event) => json!({"type": "fleet", "event": event, "announcement": crate::ui::repl::announce_fleet(&event)}),
                // Fleet changes are the live model's to keep; missing some is no loss here.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
        };
        if socket.send(Message::Text(message.to_string().into())).await.is_err() {
            return;
        }
        if message["type"] == "shutdown" {
            let _ = socket.send(Message::Close(None)).await;
            return;
        }
    }
}
