//! The Web API client: `chat.postMessage`, `chat.update`, `apps.connections.open`,
//! and slash commands' `response_url`.
//!
//! Messages to one channel go out one at a time, in order (a FIFO lock per channel),
//! so a `429` with `Retry-After` holds back that channel's queue and no other. The
//! token travels only in the `Authorization` header; errors carry Slack's error code
//! and the method, never a header or the token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::config::Secret;
use super::tls::{TlsError, Trust};

/// Attempts per call when Slack keeps answering 429.
const MAX_ATTEMPTS: u32 = 5;
/// Used when a 429 comes without a usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// A `Retry-After` longer than this is treated as this, so a misbehaving server
/// cannot park a channel for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("slack {method}: {error}")]
    Api { method: String, error: String },
    #[error("slack {method}: {reason}")]
    Transport { method: String, reason: String },
    #[error("slack {method}: still rate limited after {MAX_ATTEMPTS} attempts")]
    RateLimited { method: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

#[derive(Clone)]
pub struct WebClient {
    http: reqwest::Client,
    base_url: String,
    queues: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    /// For `wss://` with extra roots; `None` means tokio-tungstenite's built-in ones.
    websocket_tls: Option<Arc<rustls::ClientConfig>>,
}

impl WebClient {
    /// A client that trusts the built-in roots only.
    pub fn new(base_url: &str) -> Result<WebClient, WebError> {
        WebClient::with_trust(base_url, &Trust::builtin())
    }

    /// A client for `base_url` that trusts `trust` for the Web API and for the
    /// Socket Mode WebSocket alike.
    pub fn with_trust(base_url: &str, trust: &Trust) -> Result<WebClient, WebError> {
        let http = trust
            .apply(reqwest::Client::builder().timeout(Duration::from_secs(15)))?
            .build()
            .map_err(|e| WebError::Transport { method: "client".into(), reason: e.to_string() })?;
        Ok(WebClient {
            http,
            base_url: base_url.to_string(),
            queues: Arc::default(),
            websocket_tls: trust.websocket()?,
        })
    }

    /// The TLS connector for the Socket Mode WebSocket (`None`: the built-in roots).
    pub fn websocket_connector(&self) -> Option<tokio_tungstenite::Connector> {
        self.websocket_tls.as_ref().map(|c| tokio_tungstenite::Connector::Rustls(Arc::clone(c)))
    }

    /// Posts `message` (`text` + `blocks`) to `channel`, in `thread_ts` when given;
    /// returns the new message's `ts`.
    pub async fn post_message(
        &self,
        token: &Secret,
        channel: &str,
        thread_ts: Option<&str>,
        message: &Value,
    ) -> Result<String, WebError> {
        let mut body = message.clone();
        body["channel"] = json!(channel);
        if let Some(ts) = thread_ts {
            body["thread_ts"] = json!(ts);
        }
        let answer = self.queued(channel, token, "chat.postMessage", &body).await?;
        Ok(answer.get("ts").and_then(Value::as_str).unwrap_or_default().to_string())
    }

    /// Rewrites the message `ts` in `channel`.
    pub async fn update(&self, token: &Secret, channel: &str, ts: &str, message: &Value) -> Result<(), WebError> {
        let mut body = message.clone();
        body["channel"] = json!(channel);
        body["ts"] = json!(ts);
        self.queued(channel, token, "chat.update", &body).await.map(|_| ())
    }

    /// A Socket Mode WebSocket URL, with the app-level token.
    pub async fn open_connection(&self, app_token: &Secret) -> Result<String, WebError> {
        let method = "apps.connections.open";
        let answer = self.call(app_token, method, &json!({})).await?;
        answer
            .get("url")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| WebError::Api { method: method.into(), error: "no url in the answer".into() })
    }

    /// Answers a slash command through its `response_url` (the URL is the
    /// credential: no token is sent, and it never appears in an error).
    pub async fn respond(&self, response_url: &str, message: &Value) -> Result<(), WebError> {
        let method = "response_url";
        let response = self
            .http
            .post(response_url)
            .json(message)
            .send()
            .await
            .map_err(|e| WebError::Transport { method: method.into(), reason: e.without_url().to_string() })?;
        // Slack answers a plain `ok` (or an error text), not JSON.
        if response.status().is_success() {
            Ok(())
        } else {
            Err(WebError::Api { method: method.into(), error: format!("HTTP {}", response.status()) })
        }
    }

    async fn queued(&self, channel: &str, token: &Secret, method: &str, body: &Value) -> Result<Value, WebError> {
        let lane = {
            let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(queues.entry(channel.to_string()).or_default())
        };
        // tokio's Mutex is FIFO: messages leave in the order they were queued.
        let _turn = lane.lock().await;
        self.call(token, method, body).await
    }

    /// One method call, retried after `Retry-After` on 429.
    pub async fn call(&self, token: &Secret, method: &str, body: &Value) -> Result<Value, WebError> {
        let transport =
            |e: reqwest::Error| WebError::Transport { method: method.into(), reason: e.without_url().to_string() };
        let url = format!("{}{method}", self.base_url);
        for _ in 0..MAX_ATTEMPTS {
            let response =
                self.http.post(&url).bearer_auth(token.expose()).json(body).send().await.map_err(transport)?;
            if response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let wait = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(DEFAULT_RETRY_AFTER)
                    .min(MAX_RETRY_AFTER);
                tracing::info!(method, wait_ms = wait.as_millis() as u64, "slack rate limit; waiting");
                tokio::time::sleep(wait).await;
                continue;
            }
            let status = response.status();
            let answer: Value = response.json().await.map_err(|e| WebError::Transport {
                method: method.into(),
                reason: format!("HTTP {status}, not JSON: {}", e.without_url()),
            })?;
            if answer.get("ok").and_then(Value::as_bool) != Some(true) {
                let error = answer.get("error").and_then(Value::as_str).unwrap_or("unknown_error").to_string();
                return Err(WebError::Api { method: method.into(), error });
            }
            return Ok(answer);
        }
        Err(WebError::RateLimited { method: method.into() })
    }
}
