//! Parley's side of the agent protocol: one shared HTTP client with keep-alive
//! connections, a bearer token, and a timeout on every call, so that an agent that
//! hangs costs one timeout and never a stuck rollout.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::protocol::{AgentAction, AgentStatus, ErrorBody, InstallRequest, Metrics};
use super::AgentError;

#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    token: Option<String>,
}

impl AgentClient {
    /// `timeout` bounds every request, connection included.
    pub fn new(timeout: Duration, token: Option<String>) -> Result<AgentClient, AgentError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(4)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| AgentError::Client(e.to_string()))?;
        Ok(AgentClient { http, token })
    }

    pub async fn status(&self, endpoint: &str) -> Result<AgentStatus, AgentError> {
        self.call::<(), _>(Method::GET, endpoint, "/v1/status", None).await
    }

    pub async fn health(&self, endpoint: &str) -> Result<Metrics, AgentError> {
        self.call::<(), _>(Method::GET, endpoint, "/v1/health", None).await
    }

    /// Installs `version` of `extension`, replacing any other version. Answers the
    /// agent's status after the install.
    pub async fn install(&self, endpoint: &str, extension: &str, version: &str) -> Result<AgentStatus, AgentError> {
        let body = InstallRequest { version: version.to_string() };
        let path = format!("/v1/extensions/{extension}");
        self.call(Method::PUT, endpoint, &path, Some(&body)).await
    }

    /// Removes `extension`. Answers the agent's status after the removal.
    pub async fn remove(&self, endpoint: &str, extension: &str) -> Result<AgentStatus, AgentError> {
        let path = format!("/v1/extensions/{extension}");
        self.call::<(), _>(Method::DELETE, endpoint, &path, None).await
    }

    pub async fn action(&self, endpoint: &str, action: AgentAction) -> Result<AgentStatus, AgentError> {
        let path = format!("/v1/actions/{}", action.as_str());
        self.call::<(), _>(Method::POST, endpoint, &path, None).await
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, AgentError> {
        let url = format!("{}{}", endpoint.trim_end_matches('/'), path);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                AgentError::Timeout { endpoint: endpoint.to_string() }
            } else {
                AgentError::Unreachable { endpoint: endpoint.to_string(), reason: root_cause(&e) }
            }
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| AgentError::Unreachable { endpoint: endpoint.to_string(), reason: root_cause(&e) })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
            return Err(match status {
                StatusCode::UNAUTHORIZED => AgentError::Unauthorized { endpoint: endpoint.to_string() },
                _ => AgentError::Refused { endpoint: endpoint.to_string(), status: status.as_u16(), message },
            });
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::BadResponse { endpoint: endpoint.to_string(), reason: e.to_string() })
    }
}

/// The innermost cause, which is the useful part of reqwest's error chain
/// ("connection refused" rather than "error sending request").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
