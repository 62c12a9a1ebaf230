//! The HTTP side: one POST to `{base_url}/chat/completions`, with the bearer key,
//! a timeout, and one bounded wait when the server says 429 with `Retry-After`.
//! Errors are typed and never carry the key or the request body.

use std::time::Duration;

use serde_json::Value;

use super::LlmError;

/// The longest `Retry-After` that is honoured; a longer one is reported instead, since
/// the operator is waiting for the answer.
pub const MAX_RETRY_WAIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl Client {
    pub fn new(base_url: &str, api_key: Option<String>, timeout: Duration) -> Result<Client, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| LlmError::Connect(e.to_string()))?;
        Ok(Client { http, url: format!("{}/chat/completions", base_url.trim_end_matches('/')), api_key, timeout })
    }

    /// Posts `body` and returns the response's JSON, or the error the server gave.
    pub async fn post(&self, body: &Value) -> Result<Value, LlmError> {
        match self.post_once(body).await {
            Err(LlmError::RateLimited { retry_after: Some(wait) }) if wait <= MAX_RETRY_WAIT => {
                tokio::time::sleep(wait).await;
                self.post_once(body).await
            }
            other => other,
        }
    }

    async fn post_once(&self, body: &Value) -> Result<Value, LlmError> {
        let mut request = self.http.post(&self.url).json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        let text = response.text().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|_| LlmError::BadResponse(snippet(&text)));
        }
        let message = error_message(&text);
        match status.as_u16() {
            429 => Err(LlmError::RateLimited { retry_after: retry_after.or(Some(Duration::from_secs(1))) }),
            400..=499 => Err(LlmError::Rejected { status: status.as_u16(), message }),
            _ => Err(LlmError::Server { status: status.as_u16(), message }),
        }
    }

    fn transport(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.timeout)
        } else if e.is_connect() {
            LlmError::Connect(self.url.clone())
        } else if e.is_decode() || e.is_body() {
            LlmError::BadResponse("the answer was cut off".into())
        } else {
            // reqwest's message names the URL, never headers, so the key stays out.
            LlmError::Connect(format!("{}: {}", self.url, e.without_url()))
        }
    }
}

/// The `error.message` of an OpenAI-style error body, or the start of the body.
fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| snippet(text))
}

fn snippet(text: &str) -> String {
    let s: String = text.chars().take(200).collect();
    if s.is_empty() {
        "(empty body)".to_string()
    } else {
        s
    }
}
