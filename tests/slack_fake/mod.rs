//! A fake Slack on loopback that speaks the real protocol: Web API JSON over HTTP
//! (`apps.connections.open`, `chat.postMessage`, `chat.update`, `{"ok": false}` and
//! `429` + `Retry-After`), slash commands' `response_url`, and Socket Mode over
//! WebSocket (`hello`, envelopes, acks `{"envelope_id"}`, `disconnect`, pings
//! answered). Plain (`http`/`ws`) or TLS (`https`/`wss`, with a CA made at start).
//! Used by `tests/slack.rs` and the bench.
//!
//! Like Slack, it can go silent on a socket (a network black hole: nothing sent,
//! nothing read, so not even a pong) and redeliver the envelopes nobody acked.

#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::serve::ListenerExt as _;
use axum::{Json, Router};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub body: Value,
    pub at: Instant,
    pub auth: String,
    /// The `ts` of the message a successful `chat.postMessage` made (or a
    /// `chat.update` rewrote).
    pub ts: Option<String>,
}

/// One Socket Mode connection as the fake sees it.
struct Conn {
    /// Frames to send: the envelope id (if any) and the text.
    tx: mpsc::UnboundedSender<(Option<String>, String)>,
    /// Set by `go_silent`: the connection neither sends nor reads from then on.
    silent: Arc<AtomicBool>,
    silence: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    calls: Vec<Call>,
    connections: Vec<Conn>,
    opened: usize,
    /// When each envelope went onto the wire (not when it was queued).
    sent_at: HashMap<String, Instant>,
    acks: Vec<(String, Duration)>,
    /// Every envelope sent, by id, until it is acked.
    unacked: HashMap<String, Value>,
    acked: HashSet<String>,
    rate_limit_next: usize,
    /// The `Retry-After` (seconds) those 429s carry.
    retry_after: u64,
    /// Channels the bot is not a member of: `chat.postMessage` there fails.
    not_in: HashSet<String>,
    ts: u64,
}

#[derive(Clone)]
pub struct FakeSlack {
    pub addr: SocketAddr,
    /// The CA that signed the fake's certificate (PEM), when it serves TLS.
    pub ca_pem: Option<String>,
    inner: Arc<Mutex<Inner>>,
}

impl FakeSlack {
    /// Plain `http://` and `ws://`.
    pub async fn start() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeSlack { addr, ca_pem: None, inner: Arc::default() };
        // Slack's end does not delay small frames either.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let app = fake.router();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    /// `https://` and `wss://` with a certificate for 127.0.0.1 signed by a CA made
    /// now (in `ca_pem`), which nothing trusts unless told to.
    pub async fn start_tls() -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ca_pem, server_config) = tls::certificates();
        let fake = FakeSlack { addr, ca_pem: Some(ca_pem), inner: Arc::default() };
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let app = fake.router();
        tokio::spawn(async move { axum::serve(tls::TlsListener { tcp: listener, acceptor }, app).await.unwrap() });
        fake
    }

    fn router(&self) -> Router {
        Router::new()
            .route("/api/{method}", post(api))
            .route("/link", any(link))
            .route("/commands/{id}", post(response_url))
            .with_state(self.clone())
    }

    fn scheme(&self) -> (&'static str, &'static str) {
        if self.ca_pem.is_some() {
            ("https", "wss")
        } else {
            ("http", "ws")
        }
    }

    pub fn base_url(&self) -> String {
        format!("{}://{}/api/", self.scheme().0, self.addr)
    }

    /// A slash command's `response_url` on this fake.
    pub fn response_url(&self, id: &str) -> String {
        format!("{}://{}/commands/{id}", self.scheme().0, self.addr)
    }

    /// Sends a frame on the newest Socket Mode connection.
    pub fn send(&self, frame: Value) {
        let mut inner = self.inner.lock().unwrap();
        let id = frame.get("envelope_id").and_then(Value::as_str).map(str::to_string);
        if let Some(id) = &id {
            if !inner.acked.contains(id) {
                inner.unacked.insert(id.clone(), frame.clone());
            }
        }
        let conn = inner.connections.last().expect("a socket mode connection");
        // A silent connection swallows it, as a dead network path would.
        let _ = conn.tx.send((id, frame.to_string()));
    }

    /// The newest connection goes silent: from now on it sends nothing (frames sent
    /// to it are lost) and reads nothing (so pings go unanswered), and it stays open.
    pub fn go_silent(&self) {
        let inner = self.inner.lock().unwrap();
        let conn = inner.connections.last().expect("a socket mode connection");
        conn.silent.store(true, Ordering::SeqCst);
        // Wakes the reader, or leaves a permit for its next wait.
        conn.silence.notify_one();
    }

    /// Like Slack, sends again every envelope that was never acked, on the newest
    /// connection, with `retry_attempt` raised. Returns their ids.
    pub fn redeliver_unacked(&self) -> Vec<String> {
        let frames: Vec<Value> = {
            let inner = self.inner.lock().unwrap();
            let mut frames: Vec<Value> = inner.unacked.values().cloned().collect();
            frames.sort_by_key(|f| f["envelope_id"].as_str().unwrap_or("").to_string());
            frames
        };
        let mut ids = Vec::new();
        for mut frame in frames {
            let attempt = frame["retry_attempt"].as_u64().unwrap_or(0) + 1;
            frame["retry_attempt"] = json!(attempt);
            frame["retry_reason"] = json!("timeout");
            ids.push(frame["envelope_id"].as_str().unwrap_or("").to_string());
            self.send(frame);
        }
        ids
    }

    /// Socket Mode connections made so far.
    pub fn connections(&self) -> usize {
        self.inner.lock().unwrap().connections.len()
    }

    pub fn acks(&self) -> Vec<(String, Duration)> {
        self.inner.lock().unwrap().acks.clone()
    }

    pub fn ack_count(&self) -> usize {
        self.inner.lock().unwrap().acks.len()
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
        self.rate_limit_next_for(n, 1);
    }

    /// Answers the next `n` chat calls with 429 and `Retry-After: secs`.
    pub fn rate_limit_next_for(&self, n: usize, secs: u64) {
        let mut inner = self.inner.lock().unwrap();
        inner.rate_limit_next = n;
        inner.retry_after = secs;
    }

    /// The message `ts` in `channel` as Slack would show it now: its post, as last
    /// rewritten by `chat.update`.
    pub fn message(&self, channel: &str, ts: &str) -> Option<Value> {
        let calls = self.messages_in(channel);
        let post = calls.iter().find(|c| c.ts.as_deref() == Some(ts) && c.method == "chat.postMessage")?;
        let last =
            calls.iter().rev().find(|c| c.ts.as_deref() == Some(ts) && c.method == "chat.update").unwrap_or(post);
        let mut message = last.body.clone();
        message["ts"] = json!(ts);
        // An update does not move a message out of its thread.
        if let Some(thread) = post.body.get("thread_ts") {
            message["thread_ts"] = thread.clone();
        }
        Some(message)
    }

    /// A Socket Mode click on the button `action_id` of the message `ts` as it
    /// stands now, as Slack sends it (with the message); `None` when that message
    /// shows no such button (it was closed).
    pub fn click_on(&self, envelope_id: &str, user: &str, channel: &str, ts: &str, action_id: &str) -> Option<Value> {
        let message = self.message(channel, ts)?;
        let value = button_value(&message, action_id)?;
        let thread = message["thread_ts"].as_str().map(str::to_string);
        let mut frame = click(envelope_id, user, channel, thread.as_deref().unwrap_or(ts), ts, action_id, &value);
        if thread.is_none() {
            frame = json!({"envelope_id": envelope_id, "type": "interactive", "accepts_response_payload": false,
                "payload": block_actions(envelope_id, user, channel, None, ts, action_id, &value)});
        }
        let mut shown = message.clone();
        shown["type"] = json!("message");
        shown["user"] = json!("UPARLEY");
        shown["bot_id"] = json!("BPARLEY");
        frame["payload"]["message"] = shown;
        Some(frame)
    }

    /// The bot is not a member of `channel`: posting there fails with `not_in_channel`.
    pub fn not_in_channel(&self, channel: &str) {
        self.inner.lock().unwrap().not_in.insert(channel.to_string());
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
        inner.calls.push(Call { method, body, at: Instant::now(), auth, ts: None });
        let url = format!("{}://{}/link", fake.scheme().1, fake.addr);
        return Json(json!({"ok": true, "url": url})).into_response();
    }
    if inner.rate_limit_next > 0 {
        inner.rate_limit_next -= 1;
        inner.calls.push(Call { method: format!("{method} (429)"), body, at: Instant::now(), auth, ts: None });
        let retry_after = inner.retry_after.max(1).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after)],
            Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    let Some(channel) = body.get("channel").and_then(Value::as_str).map(str::to_string) else {
        return Json(json!({"ok": false, "error": "channel_not_found"})).into_response();
    };
    if inner.not_in.contains(&channel) {
        inner.calls.push(Call {
            method: format!("{method} (not_in_channel)"),
            body,
            at: Instant::now(),
            auth,
            ts: None,
        });
        return Json(json!({"ok": false, "error": "not_in_channel"})).into_response();
    }
    inner.ts += 1;
    let ts = match method.as_str() {
        "chat.update" => body["ts"].as_str().unwrap_or("").to_string(),
        _ => format!("9000.{:04}", inner.ts),
    };
    inner.calls.push(Call { method, body, at: Instant::now(), auth, ts: Some(ts.clone()) });
    Json(json!({"ok": true, "channel": channel, "ts": ts})).into_response()
}

/// Slack answers a `response_url` post with a plain `ok`.
async fn response_url(State(fake): State<FakeSlack>, Path(id): Path<String>, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let call = Call { method: format!("response_url/{id}"), body, at: Instant::now(), auth: String::new(), ts: None };
    fake.inner.lock().unwrap().calls.push(call);
    "ok".into_response()
}

async fn link(State(fake): State<FakeSlack>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| connection(fake, socket))
}

/// One Socket Mode connection: a writer task sends what the test queues (stamping
/// each envelope as it goes onto the wire) while this task reads acks, so an ack is
/// read as soon as it arrives, never behind the fake's own writing.
async fn connection(fake: FakeSlack, socket: WebSocket) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Option<String>, String)>();
    let (mut write, mut read) = socket.split();
    let hello = json!({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"},
        "debug_info": {"host": "fake", "approximate_connection_time": 18060}});
    if write.send(Message::Text(hello.to_string().into())).await.is_err() {
        return;
    }
    let silent = Arc::new(AtomicBool::new(false));
    let silence = Arc::new(Notify::new());
    fake.inner.lock().unwrap().connections.push(Conn {
        tx,
        silent: Arc::clone(&silent),
        silence: Arc::clone(&silence),
    });
    let writer = {
        let (fake, silent) = (fake.clone(), Arc::clone(&silent));
        tokio::spawn(async move {
            while let Some((id, text)) = rx.recv().await {
                if silent.load(Ordering::SeqCst) {
                    continue;
                }
                if let Some(id) = id {
                    fake.inner.lock().unwrap().sent_at.insert(id, Instant::now());
                }
                if write.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        })
    };
    loop {
        let frame = tokio::select! {
            f = read.next() => f,
            _ = silence.notified() => None,
        };
        if silent.load(Ordering::SeqCst) {
            // Hold the socket open without reading it (so no pong goes out); the
            // writer keeps its half and sends nothing more.
            std::future::pending::<()>().await;
        }
        match frame {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if let Some(id) = v.get("envelope_id").and_then(Value::as_str) {
                    let now = Instant::now();
                    let mut inner = fake.inner.lock().unwrap();
                    let latency = inner.sent_at.get(id).map(|s| now.duration_since(*s)).unwrap_or_default();
                    inner.acks.push((id.to_string(), latency));
                    inner.unacked.remove(id);
                    inner.acked.insert(id.to_string());
                }
            }
            Some(Ok(_)) => {}
            _ => {
                writer.abort();
                return;
            }
        }
    }
}

/// The value of the button `action_id` in `message`'s blocks.
pub fn button_value(message: &Value, action_id: &str) -> Option<String> {
    message["blocks"].as_array()?.iter().filter(|b| b["type"] == "actions").find_map(|b| {
        b["elements"].as_array()?.iter().find(|e| e["action_id"] == action_id)?["value"].as_str().map(str::to_string)
    })
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
    events_api(envelope_id, event_id, event)
}

/// An `app_mention` written by another app's bot (`bot_id`, its bot user).
pub fn bot_mention(envelope_id: &str, event_id: &str, channel: &str, ts: &str, text: &str) -> Value {
    let event = json!({"type": "app_mention", "user": "UOTHERBOT", "bot_id": "BOTHER", "app_id": "A9",
        "bot_profile": {"id": "BOTHER", "app_id": "A9", "name": "echo-bot"}, "channel": channel, "ts": ts,
        "text": format!("<@UPARLEY> {text}"), "event_ts": ts});
    events_api(envelope_id, event_id, event)
}

/// A Socket Mode `events_api` envelope around `event`, with the `authorizations`
/// that name this app's bot user (`UPARLEY`), as Slack sends them.
pub fn events_api(envelope_id: &str, event_id: &str, event: Value) -> Value {
    json!({"envelope_id": envelope_id, "type": "events_api", "accepts_response_payload": false,
        "retry_attempt": 0, "retry_reason": "",
        "payload": {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": event_id,
            "event_time": 1, "event": event,
            "authorizations": [{"enterprise_id": null, "team_id": "T1", "user_id": "UPARLEY", "is_bot": true,
                "is_enterprise_install": false}]}})
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
        "payload": block_actions(envelope_id, user, channel, Some(thread_ts), message_ts, action_id, value)})
}

/// A `block_actions` payload: a click on a button of the message `message_ts`
/// (in the thread `thread_ts`, or a channel message of its own).
pub fn block_actions(
    action_key: &str,
    user: &str,
    channel: &str,
    thread_ts: Option<&str>,
    message_ts: &str,
    action_id: &str,
    value: &str,
) -> Value {
    let mut container = json!({"type": "message", "message_ts": message_ts, "channel_id": channel,
        "is_ephemeral": false});
    let mut message = json!({"type": "message", "ts": message_ts, "user": "UPARLEY", "bot_id": "BPARLEY"});
    if let Some(t) = thread_ts {
        container["thread_ts"] = json!(t);
        message["thread_ts"] = json!(t);
    }
    json!({"type": "block_actions", "user": {"id": user, "username": "someone", "team_id": "T1"},
        "api_app_id": "A1", "token": "verification-token", "trigger_id": format!("{action_key}.trigger"),
        "team": {"id": "T1", "domain": "acme"}, "channel": {"id": channel, "name": "ops"},
        "container": container, "message": message,
        "actions": [{"action_id": action_id, "block_id": "b", "type": "button", "value": value,
            "text": {"type": "plain_text", "text": value}, "action_ts": format!("{action_key}.1")}]})
}

/// The fields of a slash command as Slack sends them (`application/x-www-form-urlencoded`
/// over HTTP; the same fields, all strings, as Socket Mode's payload).
pub fn slash_fields(
    user: &str,
    channel: &str,
    text: &str,
    trigger_id: &str,
    response_url: &str,
) -> Vec<(String, String)> {
    [
        ("token", "verification-token"),
        ("team_id", "T1"),
        ("team_domain", "acme"),
        ("channel_id", channel),
        ("channel_name", "ops"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", "/parley"),
        ("text", text),
        ("api_app_id", "A1"),
        ("is_enterprise_install", "false"),
        ("response_url", response_url),
        ("trigger_id", trigger_id),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A Socket Mode `slash_commands` envelope.
pub fn slash_command(envelope_id: &str, fields: &[(String, String)]) -> Value {
    let payload: serde_json::Map<String, Value> = fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    json!({"envelope_id": envelope_id, "type": "slash_commands", "accepts_response_payload": true,
        "payload": payload})
}

mod tls {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::net::{TcpListener, TcpStream};

    /// A CA, and a server configuration whose certificate (for 127.0.0.1 and
    /// localhost) that CA signed. Returns the CA as PEM.
    pub fn certificates() -> (String, rustls::ServerConfig) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Parley test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "fake slack");
        let cert = params.signed_by(&key, &issuer).unwrap();
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        (ca_cert.pem(), config)
    }

    /// TCP with a TLS handshake on accept, for `axum::serve`.
    pub struct TlsListener {
        pub tcp: TcpListener,
        pub acceptor: tokio_rustls::TlsAcceptor,
    }

    impl axum::serve::Listener for TlsListener {
        type Io = tokio_rustls::server::TlsStream<TcpStream>;
        type Addr = std::net::SocketAddr;

        async fn accept(&mut self) -> (Self::Io, Self::Addr) {
            loop {
                let Ok((tcp, addr)) = self.tcp.accept().await else { continue };
                let _ = tcp.set_nodelay(true);
                let handshake = self.acceptor.accept(tcp);
                // A client that fails (or never finishes) its handshake is dropped.
                if let Ok(Ok(tls)) = tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await {
                    return (tls, addr);
                }
            }
        }

        fn local_addr(&self) -> std::io::Result<Self::Addr> {
            self.tcp.local_addr()
        }
    }
}
