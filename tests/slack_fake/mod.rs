//! A fake Slack on loopback that speaks the real protocol: Web API JSON over HTTP
//! (`apps.connections.open`, `chat.postMessage`, `chat.update`, `{"ok": false}` and
//! `429` + `Retry-After`), Socket Mode over WebSocket (`hello`, envelopes, acks
//! `{"envelope_id"}`, `disconnect`). Used by `tests/slack.rs` and the bench.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::mpsc;

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub at: Instant,
    pub auth: String,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    connections: Vec<mpsc::UnboundedSender<String>>,
    opened: usize,
    sent_at: HashMap<String, Instant>,
    acks: Vec<(String, Duration)>,
    rate_limit_next: usize,
    ts: u64,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeSlack { addr, inner };
        let app = Router::new().route("/api/{method}", post(api)).route("/link", any(link)).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/api/", self.addr)
    }

    /// Sends a frame on the newest Socket Mode connection.
    pub fn send(&self, frame: Value) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(id) = frame.get("envelope_id").and_then(Value::as_str) {
            inner.sent_at.insert(id.to_string(), Instant::now());
        }
        inner.connections.last().expect("a socket mode connection").send(frame.to_string()).unwrap();
    }

    pub fn connections(&self) -> usize {
        self.inner.lock().unwrap().connections.len()
    }

    pub fn acks(&self) -> Vec<(String, Duration)> {
        self.inner.lock().unwrap().acks.clone()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.inner.lock().unwrap().calls.clone()
    }

    /// Messages posted or updated in `channel`.
    pub fn messages_in(&self, channel: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.body["channel"] == channel && c.method.starts_with("chat.")).collect()
    }

    /// Answers the next `n` chat calls with 429 and `Retry-After: 1`.
    pub fn rate_limit_next(&self, n: usize) {
        self.inner.lock().unwrap().rate_limit_next = n;
    }

    /// Waits (up to 30 s) until `pred` holds for the recorded calls.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Call]) -> bool) -> Vec<Call> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let calls = self.calls();
            if pred(&calls) {
                return calls;
            }
            assert!(Instant::now() < deadline, "never happened: {what}; calls: {calls:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_connections(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.connections() < n {
            assert!(Instant::now() < deadline, "no socket mode connection #{n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn api(State(fake): State<FakeSlack>, Path(method): Path<String>, headers: HeaderMap, body: String) -> Response {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut inner = fake.inner.lock().unwrap();
    if method == "apps.connections.open" {
        inner.opened += 1;
        inner.calls.push(Call { method, body, at: Instant::now(), auth });
        return Json(json!({"ok": true, "url": format!("ws://{}/link", fake.addr)})).into_response();
    }
    if inner.rate_limit_next > 0 {
        inner.rate_limit_next -= 1;
        inner.calls.push(Call { method: format!("{method} (429)"), body, at: Instant::now(), auth });
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    if body.get("channel").is_none() {
        return Json(json!({"ok": false, "error": "channel_not_found"})).into_response();
    }
    inner.ts += 1;
    let ts = match method.as_str() {
        "chat.update" => body["ts"].as_str().unwrap_or("").to_string(),
        _ => format!("9000.{:04}", inner.ts),
    };
    let channel = body["channel"].clone();
    inner.calls.push(Call { method, body, at: Instant::now(), auth });
    Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
}

async fn link(State(fake): State<FakeSlack>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| connection(fake, socket))
}

async fn connection(fake: FakeSlack, socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (mut write, mut read) = socket.split();
    let hello = json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}});
    if write.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    fake.inner.lock().unwrap().connections.push(tx);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(text) => if write.send(Message::Text(text.into())).await.is_err() { return },
                None => return,
            },
            frame = read.next() => match frame {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if let Some(id) = v.get("envelope_id").and_then(Value::as_str) {
                        let mut inner = fake.inner.lock().unwrap();
                        let latency = inner.sent_at.get(id).map(|s| s.elapsed()).unwrap_or_default();
                        inner.acks.push((id.to_string(), latency));
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

/// A Socket Mode `events_api` envelope around an `app_mention`.
pub fn mention(
    envelope_id: &str,
    event_id: &str,
    user: &str,
    channel: &str,
    ts: &str,
    thread_ts: Option<&str>,
    text: &str,
) -> Value {
    let mut event = json!({"type": "app_mention", "user": user, "channel": channel, "ts": ts,
        "text": format!("<@UPARLEY> {text}"), "event_ts": ts});
    if let Some(t) = thread_ts {
        event["thread_ts"] = json!(t);
    }
    json!({"envelope_id": envelope_id, "type": "events_api", "accepts_response_payload": false,
        "retry_attempt": 0, "retry_reason": "",
        "payload": {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": event_id,
            "event_time": 1, "event": event}})
}

/// A Socket Mode `interactive` envelope around a `block_actions` click.
pub fn click(
    envelope_id: &str,
    user: &str,
    channel: &str,
    thread_ts: &str,
    message_ts: &str,
    action_id: &str,
    value: &str,
) -> Value {
    json!({"envelope_id": envelope_id, "type": "interactive", "accepts_response_payload": false,
        "payload": {"type": "block_actions", "user": {"id": user}, "channel": {"id": channel},
            "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "thread_ts": thread_ts},
            "message": {"ts": message_ts, "thread_ts": thread_ts},
            "actions": [{"action_id": action_id, "block_id": "b", "type": "button", "value": value, "action_ts": format!("{envelope_id}.1")}]}})
}
