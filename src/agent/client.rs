//! Parley's side of the agent protocol: one shared HTTP client with keep-alive
//! connections, a bearer token, and a timeout on every call, so that an agent that
//! hangs costs one timeout and never a stuck rollout. Extension names and versions
//! are checked against [`super::names`] before they go into a URL or a body.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::names::{self, Kind};
use super::protocol::{AgentAction, AgentStatus, ErrorBody, InstallRequest, Metrics};
use super::AgentError;

#[derive(Debug, Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    token: Option<String>,
    /// Bound on an install or removal, which on a real agent downloads, runs hooks and
    /// starts a service; every other call keeps the client's short timeout.
    install_timeout: Duration,
    /// The catalog's artifacts by (extension, version), sent with each install so a
    /// real agent knows what to fetch and what it must hash to.
    artifacts: std::sync::Arc<std::collections::BTreeMap<(String, String), crate::artifact::ArtifactRef>>,
}

/// Idle keep-alive connections kept per host by [`AgentClient::new`]: the poller's
/// default concurrency, so a default pass can reuse every connection it opened.
pub const DEFAULT_IDLE_PER_HOST: usize = crate::topology::poller::DEFAULT_CONCURRENCY;

impl AgentClient {
    /// `timeout` bounds every request, connection included.
    pub fn new(timeout: Duration, token: Option<String>) -> Result<AgentClient, AgentError> {
        AgentClient::with_idle_per_host(timeout, token, DEFAULT_IDLE_PER_HOST)
    }

    /// [`AgentClient::new`] keeping up to `idle_per_host` idle connections per host;
    /// give it the poll concurrency. A real fleet has one host per agent, but many
    /// agents behind one address (the simulator, a proxy) share one pool: with fewer
    /// idle slots than requests in flight, every pass would close and reopen the rest
    /// of its connections (and leave them in TIME_WAIT) instead of reusing them.
    pub fn with_idle_per_host(
        timeout: Duration,
        token: Option<String>,
        idle_per_host: usize,
    ) -> Result<AgentClient, AgentError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(idle_per_host.max(1))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| AgentError::Client(e.to_string()))?;
        Ok(AgentClient { http, token, install_timeout: timeout, artifacts: Default::default() })
    }

    /// This client bounding installs and removals by `timeout` instead of the timeout
    /// of every other call (`[fleet] install_timeout_ms`).
    pub fn with_install_timeout(mut self, timeout: Duration) -> AgentClient {
        self.install_timeout = timeout;
        self
    }

    /// The bound on one install or removal.
    pub fn install_timeout(&self) -> Duration {
        self.install_timeout
    }

    /// This client with the artifacts of `catalog`, sent with every install of a
    /// version the catalog has an artifact for.
    pub fn with_artifacts(mut self, catalog: &crate::topology::Catalog) -> AgentClient {
        self.artifacts = std::sync::Arc::new(catalog.artifacts());
        self
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
        let invalid =
            |e: names::InvalidName| AgentError::Invalid { endpoint: endpoint.to_string(), reason: e.to_string() };
        names::check_name(Kind::Extension, extension).map_err(invalid)?;
        names::check_version(version).map_err(invalid)?;
        let artifact = self.artifacts.get(&(extension.to_string(), version.to_string())).cloned();
        let body = InstallRequest { version: version.to_string(), artifact };
        let path = format!("/v1/extensions/{extension}");
        let what = format!("installing {extension} {version}");
        self.call_bounded(Method::PUT, endpoint, &path, Some(&body), Some(what)).await
    }

    /// Removes `extension`. Answers the agent's status after the removal.
    pub async fn remove(&self, endpoint: &str, extension: &str) -> Result<AgentStatus, AgentError> {
        names::check_name(Kind::Extension, extension)
            .map_err(|e| AgentError::Invalid { endpoint: endpoint.to_string(), reason: e.to_string() })?;
        let path = format!("/v1/extensions/{extension}");
        let what = format!("removing {extension}");
        self.call_bounded::<(), _>(Method::DELETE, endpoint, &path, None, Some(what)).await
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
        self.call_bounded(method, endpoint, path, body, None).await
    }

    /// A call; `install` names an install or removal, bounded by the install timeout
    /// instead of the client's.
    async fn call_bounded<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: &str,
        path: &str,
        body: Option<&B>,
        install: Option<String>,
    ) -> Result<T, AgentError> {
        let url = format!("{}{}", endpoint.trim_end_matches('/'), path);
        let mut req = self.http.request(method, &url);
        if install.is_some() {
            req = req.timeout(self.install_timeout);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let timed_out = |install: Option<String>| match install {
            Some(what) => {
                AgentError::InstallTimeout { endpoint: endpoint.to_string(), what, limit: self.install_timeout }
            }
            None => AgentError::Timeout { endpoint: endpoint.to_string() },
        };
        let resp = match req.send().await {
            Ok(resp) => resp,
            Err(e) if e.is_timeout() => return Err(timed_out(install)),
            Err(e) => return Err(AgentError::Unreachable { endpoint: endpoint.to_string(), reason: root_cause(&e) }),
        };
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Err(timed_out(install)),
            Err(e) => return Err(AgentError::Unreachable { endpoint: endpoint.to_string(), reason: root_cause(&e) }),
        };
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A keep-alive HTTP/1.1 server that answers `/v1/health` only once `together`
    /// requests are in flight, so each round needs that many connections at once;
    /// answers the address and the count of connections it accepted.
    async fn server(together: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(together));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        barrier.wait().await;
                        let body = r#"{"cpu_pct":1,"mem_pct":2,"error_rate_pct":0,"p95_ms":3}"#;
                        let head = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        if conn.write_all(format!("{head}{body}").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (format!("http://{addr}"), accepted)
    }

    async fn two_rounds(client: &AgentClient, endpoint: &str, n: usize) {
        for _ in 0..2 {
            let calls = (0..n).map(|_| client.health(endpoint));
            for r in futures::future::join_all(calls).await {
                assert_eq!(r.unwrap().p95_ms, 3.0);
            }
            // Let the connections go back to the pool before the next round.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn as_many_idle_connections_as_requests_in_flight_are_reused() {
        let (endpoint, accepted) = server(16).await;
        let client = AgentClient::with_idle_per_host(Duration::from_secs(5), None, 16).unwrap();
        two_rounds(&client, &endpoint, 16).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 16, "the second round reuses all 16");

        // The old fixed pool of 4: twelve connections closed and opened again.
        let (endpoint, accepted) = server(16).await;
        let client = AgentClient::with_idle_per_host(Duration::from_secs(5), None, 4).unwrap();
        two_rounds(&client, &endpoint, 16).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 16 + 12);
    }
}
