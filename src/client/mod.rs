//! A client of `parley serve`: HTTP requests and the WebSocket event stream, over
//! the local Unix socket (`unix:PATH`) or TCP (`http://host:port`, with the bearer
//! token from `PARLEY_TOKEN`). Front-ends that are clients (`ask`, `chat`, `repl`)
//! use it instead of starting their own fleet, orchestrator and registry; `spawn`
//! finds the local server or starts one.

pub mod spawn;

mod bridge;
mod fleet;

pub use bridge::{Said, Speaker};
pub use fleet::{ServerEvent, TurnAnswer};

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use futures::StreamExt as _;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite;

use crate::reply::Reply;
pub use spawn::{Autostart, Connection, SpawnError};

/// The largest response the client reads (a fleet snapshot of thousands of agents).
const MAX_RESPONSE: usize = 64 * 1024 * 1024;
/// How long one request may take before the client gives up on the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("`{0}` is no server address: use unix:PATH or http://HOST:PORT")]
    BadUrl(String),
    #[error("cannot reach the Parley server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the Parley server at {url} did not answer within {} s", .after.as_secs())]
    Timeout { url: String, after: Duration },
    /// The server answered with an error; `message` is its own words.
    #[error("the Parley server refused: {message}")]
    Api { status: u16, code: String, message: String },
    #[error("the Parley server sent something that is not its API: {0}")]
    Protocol(String),
}

/// Where the server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerUrl {
    Unix(PathBuf),
    /// `host:port`.
    Http(String),
}

impl ServerUrl {
    pub fn parse(text: &str) -> Result<ServerUrl, ClientError> {
        let t = text.trim();
        if let Some(path) = t.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ClientError::BadUrl(text.to_string()));
            }
            return Ok(ServerUrl::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = t.strip_prefix("http://") {
            let authority = rest.trim_end_matches('/');
            if authority.is_empty() || authority.contains('/') || !authority.contains(':') {
                return Err(ClientError::BadUrl(text.to_string()));
            }
            return Ok(ServerUrl::Http(authority.to_string()));
        }
        Err(ClientError::BadUrl(text.to_string()))
    }
}

impl std::fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerUrl::Unix(p) => write!(f, "unix:{}", p.display()),
            ServerUrl::Http(a) => write!(f, "http://{a}"),
        }
    }
}

#[derive(Clone)]
pub struct Client {
    url: ServerUrl,
    /// Sent over TCP only; never logged.
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("url", &self.url).field("token", &self.token.as_ref().map(|_| "***")).finish()
    }
}

/// Which events stream messages a client reads: JSON values, one per frame.
pub struct Events {
    ws: tokio_tungstenite::WebSocketStream<Box<dyn IoBox>>,
}

/// A byte stream to the server, whichever the transport.
pub trait IoBox: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoBox for T {}

impl Events {
    /// The next message; `None` when the stream ended.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await? {
                Ok(tungstenite::Message::Text(text)) => match serde_json::from_str(&text) {
                    Ok(v) => return Some(v),
                    Err(e) => tracing::warn!(error = %e, "an event that is not JSON"),
                },
                Ok(tungstenite::Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

impl Client {
    pub fn new(url: ServerUrl, token: Option<String>) -> Client {
        Client { url, token: token.filter(|t| !t.is_empty()) }
    }

    /// The server `--server`/`PARLEY_SERVER` names, or the local one of `data_dir`
    /// when its socket answers; `None`: no server, so the front-end runs in-process.
    pub async fn select(server: Option<&str>, data_dir: &Path) -> Result<Option<Client>, ClientError> {
        let token = std::env::var("PARLEY_TOKEN").ok();
        if let Some(url) = server.map(str::trim).filter(|s| !s.is_empty()) {
            return Ok(Some(Client::new(ServerUrl::parse(url)?, token)));
        }
        let socket = crate::server::socket_path(data_dir);
        if !socket.exists() {
            return Ok(None);
        }
        let client = Client::new(ServerUrl::Unix(socket), None);
        match tokio::time::timeout(Duration::from_secs(2), client.get("/healthz")).await {
            Ok(Ok(_)) => Ok(Some(client)),
            // A socket file nobody answers on: a server that died. Work in-process.
            _ => Ok(None),
        }
    }

    pub fn url(&self) -> &ServerUrl {
        &self.url
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable { url: self.url.to_string(), reason: reason.to_string() }
    }

    async fn connect(&self) -> Result<Box<dyn IoBox>, ClientError> {
        match &self.url {
            ServerUrl::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path).await.map_err(|e| self.unreachable(e))?;
                Ok(Box::new(s))
            }
            ServerUrl::Http(authority) => {
                let s = tokio::net::TcpStream::connect(authority.as_str()).await.map_err(|e| self.unreachable(e))?;
                let _ = s.set_nodelay(true);
                Ok(Box::new(s))
            }
        }
    }

    fn host(&self) -> &str {
        match &self.url {
            ServerUrl::Unix(_) => "localhost",
            ServerUrl::Http(a) => a,
        }
    }

    /// One request; the body of a 2xx answer, or the server's error.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Vec<u8>, ClientError> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.request_inner(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout { url: self.url.to_string(), after: REQUEST_TIMEOUT }),
        }
    }

    async fn request_inner(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Vec<u8>, ClientError> {
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(io))
            .await
            .map_err(|e| self.unreachable(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder().method(method).uri(path).header(header::HOST, self.host());
        if let (Some(token), ServerUrl::Http(_)) = (&self.token, &self.url) {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(v) => builder.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string())),
            None => builder.body(Body::empty()),
        }
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| self.unreachable(e))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(Body::new(response.into_body()), MAX_RESPONSE)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(api_error(status, &bytes))
    }

    pub async fn get(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        self.request(Method::GET, path, None).await
    }

    pub async fn get_json(&self, path: &str) -> Result<Value, ClientError> {
        let bytes = self.get(path).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// One conversational turn of session `session`.
    pub async fn turn(&self, session: &str, utterance: &str, frontend: &str) -> Result<Reply, ClientError> {
        let value = self.turn_value(session, utterance, frontend).await?;
        <Reply as serde::Deserialize>::deserialize(value)
            .map_err(|e| ClientError::Protocol(format!("a turn's reply: {e}")))
    }

    /// A turn's answer as JSON.
    async fn turn_value(&self, session: &str, utterance: &str, frontend: &str) -> Result<Value, ClientError> {
        let body = serde_json::json!({"session": session, "utterance": utterance, "frontend": frontend});
        self.post_turn(&body).await
    }

    /// `POST /v1/turn` with `body` as it is; the answer as JSON.
    async fn post_turn(&self, body: &Value) -> Result<Value, ClientError> {
        let bytes = self.request(Method::POST, "/v1/turn", Some(body)).await?;
        // Through a `Value`: a reply owns all its text, so it is read from an owned document.
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("a turn's reply: {e}")))
    }

    /// The deployment's record as the registry has it now.
    pub async fn deployment(&self, name: &str) -> Result<Value, ClientError> {
        self.get_json(&format!("/v1/deployments/{name}")).await
    }

    /// Subscribes to the event stream; answers once the server's hello arrived, so
    /// everything after this call is in the stream.
    pub async fn events(&self) -> Result<Events, ClientError> {
        use tungstenite::client::IntoClientRequest as _;
        let io = self.connect().await?;
        let mut request = format!("ws://{}/v1/events", self.host())
            .into_client_request()
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let (Some(token), ServerUrl::Http(_)) = (&self.token, &self.url) {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| ClientError::Protocol("PARLEY_TOKEN is not a valid header value".into()))?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        let (ws, _) = tokio_tungstenite::client_async(request, io).await.map_err(|e| match e {
            tungstenite::Error::Http(response) => {
                let body = response.body().clone().unwrap_or_default();
                api_error(response.status(), &body)
            }
            other => self.unreachable(other),
        })?;
        let mut events = Events { ws };
        match events.next().await {
            Some(v) if v["type"] == "hello" => Ok(events),
            Some(other) => Err(ClientError::Protocol(format!("the event stream began with {other}"))),
            None => Err(self.unreachable("the event stream closed at once")),
        }
    }
}

fn api_error(status: StatusCode, body: &[u8]) -> ClientError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}: {}", String::from_utf8_lossy(body).trim()));
    ClientError::Api { status: status.as_u16(), code: v["code"].as_str().unwrap_or("").to_string(), message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_unix_paths_or_http_host_port() {
        assert_eq!(ServerUrl::parse("unix:/run/p.sock").unwrap(), ServerUrl::Unix("/run/p.sock".into()));
        assert_eq!(ServerUrl::parse("http://127.0.0.1:7878/").unwrap(), ServerUrl::Http("127.0.0.1:7878".into()));
        for bad in ["", "unix:", "https://x:1", "http://host", "tcp://x:1", "http://x:1/v1"] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
