//! The Socket Mode client.
//!
//! `apps.connections.open` gives a WebSocket URL; every envelope is acknowledged
//! with its `envelope_id` before its work is handed on, so Slack never redelivers
//! because Parley was slow. On `disconnect` (Slack's `refresh_requested`,
//! `link_disabled`, `warning`) a new connection is opened while the old one keeps
//! reading until Slack closes it, so nothing in flight on it is lost; duplicates
//! that this overlap or Slack's retries produce are dropped by the dispatcher. A
//! socket that stays silent through a ping interval gets a ping, and one that stays
//! silent after it is replaced (Slack redelivers what it sent there unacknowledged).
//! Failures back off exponentially with full jitter.
//!
//! The ack is the first thing done with a frame: the reading task writes it itself
//! (nothing else is queued on the socket but its own pings) before it hands the
//! envelope on, the acks of frames that arrived together leave in one write, and
//! Nagle's algorithm is off on the connection so a small ack is not held back
//! waiting for the TCP acknowledgement of the previous one.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, SinkExt as _, StreamExt as _};
use rand::Rng as _;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::config::Secret;
use super::web::WebClient;

/// One Socket Mode envelope (`events_api`, `interactive`, `slash_commands`).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub envelope_id: String,
    pub kind: String,
    pub payload: Value,
    pub retry_attempt: u64,
}

/// Where acknowledged envelopes go. Must return at once: the socket's read loop
/// waits for it.
pub trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, envelope: Envelope);
}

/// Connecting (TCP, TLS and the WebSocket handshake) may take this long before it
/// counts as a failure and is retried with backoff.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Closing a socket we gave up on may take this long; a peer that does not read
/// must not keep the task alive.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// Silence after which a ping is sent, and after which an unanswered ping
    /// replaces the socket (`[slack] ping_interval_secs`).
    pub ping_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl Default for SocketOptions {
    fn default() -> SocketOptions {
        SocketOptions {
            ping_interval: Duration::from_secs(15),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

impl SocketOptions {
    /// The defaults with the watchdog interval of the `[slack]` settings.
    pub fn from_settings(settings: &super::config::SlackSettings) -> SocketOptions {
        SocketOptions { ping_interval: settings.ping_interval, ..SocketOptions::default() }
    }
}

#[derive(Debug)]
enum Control {
    Hello,
    /// Slack asked for a new connection, or the socket went silent.
    Replace(u64),
    Closed(u64),
}

/// Runs until `stop` turns true.
pub async fn run(
    web: WebClient,
    app_token: Secret,
    sink: Arc<dyn Dispatch>,
    options: SocketOptions,
    mut stop: watch::Receiver<bool>,
) {
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    let mut current: Option<u64> = None;
    let mut next_id = 0u64;
    let mut failures = 0u32;
    loop {
        if current.is_none() {
            let opened = match web.open_connection(&app_token).await {
                Ok(url) => connect(&web, &url).await,
                Err(e) => Err(e.to_string()),
            };
            match opened {
                Ok(ws) => {
                    next_id += 1;
                    current = Some(next_id);
                    tokio::spawn(connection(next_id, ws, Arc::clone(&sink), ctl_tx.clone(), options.clone()));
                }
                Err(e) => {
                    failures += 1;
                    let wait = backoff(&options, failures);
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "slack socket mode connection failed");
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(wait) => continue,
                    }
                }
            }
        }
        let ctl = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            ctl = ctl_rx.recv() => ctl,
        };
        match ctl {
            Some(Control::Hello) => failures = 0,
            Some(Control::Replace(id)) if current == Some(id) => current = None,
            Some(Control::Closed(id)) if current == Some(id) => {
                current = None;
                failures += 1;
                let wait = backoff(&options, failures);
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            Some(_) => {}
            None => return,
        }
    }
}

/// Exponential backoff with full jitter, so many bridges do not reconnect in step.
fn backoff(options: &SocketOptions, failures: u32) -> Duration {
    let exp = options.backoff_base.saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    let cap = exp.min(options.backoff_max);
    cap.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the WebSocket at `url` (`wss://` with the client's trust), Nagle off.
async fn connect(web: &WebClient, url: &str) -> Result<Ws, String> {
    // The URL carries a one-time ticket; errors are reported without it.
    let connecting = tokio_tungstenite::connect_async_tls_with_config(url, None, true, web.websocket_connector());
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok((ws, _response))) => Ok(ws),
        Ok(Err(e)) => Err(format!("websocket: {e}")),
        Err(_) => Err(format!("websocket: no connection within {CONNECT_TIMEOUT:?}")),
    }
}

async fn connection(
    id: u64,
    ws: Ws,
    sink: Arc<dyn Dispatch>,
    ctl: mpsc::UnboundedSender<Control>,
    options: SocketOptions,
) {
    let (mut write, mut read) = ws.split();
    let mut last = Instant::now();
    let mut pinged = false;
    let mut replaced = false;
    let mut batch: Vec<Envelope> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            f = read.next() => f,
            _ = tokio::time::sleep_until(last + options.ping_interval) => {
                if pinged || replaced {
                    // Silent after a ping (or draining after a disconnect): give up on it.
                    if !replaced {
                        tracing::warn!(connection = id, "slack socket went silent; replacing it");
                        let _ = ctl.send(Control::Replace(id));
                    }
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, write.close()).await;
                    return;
                }
                pinged = true;
                last = Instant::now();
                if write.send(Message::Ping(Vec::new().into())).await.is_err() {
                    let _ = ctl.send(Control::Closed(id));
                    return;
                }
                continue;
            }
        };
        last = Instant::now();
        pinged = false;
        // This frame and whatever else has already arrived (up to MAX_BATCH): acks
        // are buffered and leave in one write, so a burst costs one syscall rather
        // than one per envelope, and none waits behind another's wake-up.
        let mut frame = first;
        let mut closed = false;
        for taken in 1..=MAX_BATCH {
            let text = match frame {
                Some(Ok(Message::Text(t))) => Some(t),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    closed = true;
                    break;
                }
                Some(Ok(_)) => None,
            };
            if let Some(text) = text {
                match read_frame(id, text.as_str()) {
                    Frame::Hello => {
                        let _ = ctl.send(Control::Hello);
                    }
                    Frame::Disconnect => {
                        if !replaced {
                            replaced = true;
                            let _ = ctl.send(Control::Replace(id));
                        }
                    }
                    Frame::Envelope(envelope) => {
                        let ack = serde_json::json!({ "envelope_id": envelope.envelope_id }).to_string();
                        // Buffered, not yet written: see the flush below.
                        if write.feed(Message::Text(ack.into())).await.is_err() {
                            closed = true;
                            break;
                        }
                        batch.push(envelope);
                    }
                    Frame::Other => {}
                }
            }
            if taken == MAX_BATCH {
                break;
            }
            // Only what is already here; never waits.
            match read.next().now_or_never() {
                Some(next) => frame = next,
                None => break,
            }
        }
        // Even when the socket is closing, the acks already buffered may still get
        // out; if they do not, those envelopes are not handed on: Slack redelivers
        // what it did not see acknowledged, on the next connection.
        let acked = batch.is_empty() || write.flush().await.is_ok();
        if acked {
            // Acknowledged: now, and only now, the work may start.
            for envelope in batch.drain(..) {
                sink.dispatch(envelope);
            }
        } else {
            batch.clear();
        }
        if closed || !acked {
            let _ = ctl.send(Control::Closed(id));
            return;
        }
    }
}

/// Envelopes read before their acks are written together.
const MAX_BATCH: usize = 32;

enum Frame {
    Hello,
    Disconnect,
    Envelope(Envelope),
    Other,
}

fn read_frame(connection: u64, text: &str) -> Frame {
    let Ok(mut value) = serde_json::from_str::<Value>(text) else {
        tracing::warn!(connection, "slack sent a frame that is not JSON; ignored");
        return Frame::Other;
    };
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("").to_string();
    match kind.as_str() {
        "hello" => return Frame::Hello,
        "disconnect" => {
            let reason = value.get("reason").and_then(Value::as_str).unwrap_or("unknown");
            tracing::info!(connection, reason, "slack asked for a new connection");
            return Frame::Disconnect;
        }
        _ => {}
    }
    let Some(envelope_id) = value.get("envelope_id").and_then(Value::as_str).map(str::to_string) else {
        return Frame::Other;
    };
    Frame::Envelope(Envelope {
        envelope_id,
        kind,
        retry_attempt: value.get("retry_attempt").and_then(Value::as_u64).unwrap_or(0),
        payload: value.get_mut("payload").map(Value::take).unwrap_or(Value::Null),
    })
}

/// The bridge as a dispatcher (it needs its `Arc` to start thread tasks).
pub struct BridgeSink(pub Arc<super::bridge::Bridge>);

impl Dispatch for BridgeSink {
    fn dispatch(&self, envelope: Envelope) {
        self.0.accept(&envelope.kind, &envelope.payload, &envelope.envelope_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let o = SocketOptions::default();
        for failures in 1..40 {
            let w = backoff(&o, failures);
            assert!(w <= o.backoff_max, "{w:?}");
            assert!(w >= o.backoff_base / 2, "{w:?}");
        }
        assert!(backoff(&o, 30) >= o.backoff_max / 2);
    }
}
