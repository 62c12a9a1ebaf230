//! `parley agent`: one agent as its own process, the same [`Agent`] code the demo
//! fleet and the simulator run, with its installed extensions in a state file so a
//! restarted agent reports what it really has. Optionally it registers itself with
//! Parley's registration endpoint, sends heartbeats, and deregisters when it is shut
//! down gracefully, so Parley drops it rather than reporting it down
//! (docs/discovery.md). The credential Parley issues at the first registration is
//! kept (mode 0600) beside the state file and presented on every later call.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::server::{self, Agent, AgentConfig, AgentStateError};
use crate::agent::protocol::{Registered, CREDENTIAL_HEADER};

#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error(transparent)]
    State(#[from] AgentStateError),
    #[error("could not listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("the agent server failed: {0}")]
    Serve(std::io::Error),
    #[error("could not build the registration client: {0}")]
    Client(String),
}

/// Where and how the agent announces itself to Parley.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Parley's registration endpoint, e.g. `http://parley.internal:7070`.
    pub url: String,
    /// The base URL Parley should poll; defaults to `http://<listen address>`.
    pub advertise: Option<String>,
    pub heartbeat: Duration,
}

#[derive(Debug, Clone)]
pub struct StandaloneOptions {
    pub agent: AgentConfig,
    pub listen: SocketAddr,
    pub register: Option<Registration>,
}

#[derive(Serialize)]
struct RegisterBody<'a> {
    name: &'a str,
    endpoint: &'a str,
    region: &'a str,
    zone: &'a str,
}

#[derive(Serialize)]
struct HeartbeatBody<'a> {
    name: &'a str,
}

/// The agent's own credential for the registration endpoint: in memory, and in a file
/// beside the state file when the agent has one, so a restarted agent is still itself.
#[derive(Debug, Clone, Default)]
struct Credential {
    file: Option<PathBuf>,
    value: Arc<Mutex<Option<String>>>,
}

impl Credential {
    /// Loads the credential kept by an earlier run, if any. An unreadable or malformed
    /// file is left alone and reported: the agent registers as if for the first time.
    fn load(file: Option<PathBuf>) -> Credential {
        let value = file.as_ref().and_then(|f| match std::fs::read_to_string(f) {
            Ok(text) if is_credential(text.trim()) => Some(text.trim().to_string()),
            Ok(_) => {
                tracing::warn!(file = %f.display(), "the registration credential file is malformed; ignoring it");
                None
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "cannot read the registration credential");
                None
            }
        });
        Credential { file, value: Arc::new(Mutex::new(value)) }
    }

    fn get(&self) -> Option<String> {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, credential: String) {
        if let Some(f) = &self.file {
            if let Err(e) = server::write_atomically(f, credential.as_bytes(), 0) {
                tracing::error!(file = %f.display(), error = %e, "cannot keep the registration credential; a restart will not be able to prove who it is");
            }
        }
        *self.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(credential);
    }

    /// Adds the credential header, when there is a credential.
    fn attach(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.get() {
            Some(c) => req.header(CREDENTIAL_HEADER, c),
            None => req,
        }
    }
}

/// The announcer task, stopped when the agent's server future is dropped without a
/// graceful stop (an in-process agent whose task is aborted), so that no heartbeat
/// outlives the agent it speaks for.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

fn is_credential(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where the credential of an agent whose state is in `state_file` is kept.
pub fn credential_file(state_file: &std::path::Path) -> PathBuf {
    state_file.with_extension("credential")
}

/// Runs the agent until `shutdown` resolves; `ready` hears the bound address first
/// (useful with port 0). A registered agent then deregisters (while it still serves,
/// so no poll in between sees it gone), and in-flight requests finish before it returns.
pub async fn run(
    options: StandaloneOptions,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), StandaloneError> {
    let agent = Agent::new(options.agent)?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| StandaloneError::Bind { addr: options.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StandaloneError::Bind { addr: options.listen, source })?;
    tracing::info!(agent = agent.name(), %addr, "agent listening");
    ready(addr);
    let announcer = match options.register {
        Some(reg) => {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .map_err(|e| StandaloneError::Client(e.to_string()))?;
            let endpoint = reg.advertise.clone().unwrap_or_else(|| format!("http://{addr}"));
            let credential = Credential::load(agent.config().state_file.as_deref().map(credential_file));
            let task = AbortOnDrop(Some(tokio::spawn(announce(
                http.clone(),
                Arc::clone(&agent),
                reg.clone(),
                endpoint,
                credential.clone(),
            ))));
            Some((task, http, reg.url, agent.config().name.clone(), agent.config().token.clone(), credential))
        }
        None => None,
    };
    let leave = async move {
        shutdown.await;
        if let Some((mut task, http, url, name, token, credential)) = announcer {
            // Stopped first and waited for, so no heartbeat or registration in flight can
            // land after the deregistration and bring the agent back.
            if let Some(task) = task.0.take() {
                task.abort();
                let _ = task.await;
            }
            deregister(&http, &url, &name, token.as_deref(), &credential).await;
        }
    };
    server::serve(listener, agent, leave).await.map_err(StandaloneError::Serve)
}

/// Tells Parley the agent is leaving. Best effort: if Parley cannot be reached, it
/// will see the agent go down instead, which is what would happen without this.
async fn deregister(http: &reqwest::Client, url: &str, name: &str, token: Option<&str>, credential: &Credential) {
    let base = url.trim_end_matches('/');
    let mut req = credential.attach(http.delete(format!("{base}/v1/register/{name}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    match req.send().await {
        Ok(resp) if resp.status().is_success() => tracing::info!(url = %base, "deregistered from Parley"),
        Ok(resp) => {
            tracing::warn!(url = %base, status = resp.status().as_u16(), "Parley refused the deregistration")
        }
        Err(e) => tracing::warn!(url = %base, error = %e, "could not reach Parley to deregister"),
    }
}

/// Registers, then heartbeats; registers again whenever Parley says it does not know
/// the agent (Parley restarted) or cannot be reached. Never gives up: an agent
/// outlives the Parley that polls it, and a name Parley refuses (bound to another
/// endpoint that is alive) may be given to it once Parley has seen that one die.
async fn announce(
    http: reqwest::Client,
    agent: Arc<Agent>,
    reg: Registration,
    endpoint: String,
    credential: Credential,
) {
    let base = reg.url.trim_end_matches('/').to_string();
    let token = agent.config().token.clone();
    let with_token = |req: reqwest::RequestBuilder| match &token {
        Some(t) => credential.attach(req.bearer_auth(t)),
        None => credential.attach(req),
    };
    let config = agent.config().clone();
    let mut registered = false;
    let mut ticks = tokio::time::interval(reg.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if !registered {
            let body =
                RegisterBody { name: &config.name, endpoint: &endpoint, region: &config.region, zone: &config.zone };
            match with_token(http.post(format!("{base}/v1/register"))).json(&body).send().await {
                Ok(resp) if resp.status().is_success() => match resp.json::<Registered>().await {
                    Ok(answer) => {
                        if let Some(issued) = answer.credential {
                            credential.set(issued);
                        }
                        tracing::info!(url = %base, "registered with Parley");
                        registered = true;
                    }
                    Err(e) => {
                        tracing::warn!(url = %base, error = %e, "Parley's registration answer is not the protocol")
                    }
                },
                Ok(resp) => {
                    tracing::warn!(url = %base, status = resp.status().as_u16(), "Parley refused the registration")
                }
                Err(e) => tracing::warn!(url = %base, error = %e, "could not reach Parley to register"),
            }
            continue;
        }
        let body = HeartbeatBody { name: &config.name };
        match with_token(http.post(format!("{base}/v1/heartbeat"))).json(&body).send().await {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => {
                tracing::warn!(status = resp.status().as_u16(), "heartbeat refused; registering again");
                registered = false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed; registering again");
                registered = false;
            }
        }
    }
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM: what a service manager sends to stop.
pub async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the agent");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `k=v,k=v` (as `--labels` takes them).
pub fn parse_labels(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("label `{pair}` is not key=value"))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() || v.is_empty() {
            return Err(format!("label `{pair}` is not key=value"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// `name@version,name@version` (as `--extensions` takes them).
pub fn parse_extensions(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    let mut out = std::collections::BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (n, v) = pair.split_once('@').ok_or_else(|| format!("extension `{pair}` is not name@version"))?;
        if n.is_empty() || v.is_empty() {
            return Err(format!("extension `{pair}` is not name@version"));
        }
        out.insert(n.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_or_say_what_is_wrong() {
        let l = parse_labels("env=production, tier=edge").unwrap();
        assert_eq!(l["tier"], "edge");
        assert_eq!(parse_labels("env").unwrap_err(), "label `env` is not key=value");
        let e = parse_extensions("auth-filter@2.0.3,log-shipper@1.4.2").unwrap();
        assert_eq!(e["log-shipper"], "1.4.2");
        assert!(parse_extensions("auth-filter").is_err());
    }
}
