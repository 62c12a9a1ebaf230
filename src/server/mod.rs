//! `parley serve`: one long-running process that owns the fleet model (poller,
//! discovery), the orchestrator, the router and the registry, and serves them to
//! clients over HTTP and a WebSocket event stream (docs/api.md) — always on the Unix
//! socket `<data-dir>/parley.sock`, on TCP only with `--listen`.
//!
//! Recovery runs once, here, at start; an orderly stop (SIGTERM, Ctrl-C or
//! `parley serve stop`) holds each running rollout before its next batch and the next
//! start carries it on, so only a crash leaves rollouts "interrupted".

mod auth;
mod events;
mod idle;
mod listener;
mod metrics;
mod routes;
mod shutdown;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::watch;

pub use auth::{Tokens, TokensError};
pub use events::rollout_message;

use crate::app::{Parley, StartError};
use crate::config::Config;
use crate::ops::{Actor, Role};
use crate::registry::DeploymentRecord;
use crate::services::Services;

/// The socket a data directory's server listens on, and clients look for.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("parley.sock")
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A TCP address besides the Unix socket (needs `tokens`).
    pub listen: Option<SocketAddr>,
    /// Bearer tokens for TCP callers.
    pub tokens: Option<PathBuf>,
    /// Refuse every change: a safe screen for a wall.
    pub read_only: bool,
    /// How long a stop waits for running steps to reach their next batch.
    pub grace: Duration,
    /// Stop by itself after this long with no client and nothing running: set only
    /// for a server a front-end started in the background; `None` stays until stopped.
    pub idle_stop: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error("--listen needs --tokens FILE: TCP callers are told apart by their bearer tokens")]
    NeedTokens,
    #[error("a Parley server already answers on {0}; stop it with `parley serve stop` first")]
    AlreadyRunning(PathBuf),
    #[error("cannot listen on {what}: {source}")]
    Bind { what: String, source: std::io::Error },
    #[error(transparent)]
    Orchestrate(#[from] crate::orchestrate::OrchestrateError),
}

/// What the routes share.
pub struct ServerState {
    services: Arc<Services>,
    /// What recovery found interrupted at start, for new sessions' first reply.
    interrupted: Vec<DeploymentRecord>,
    sessions: routes::Sessions,
    tokens: Option<Tokens>,
    read_only: bool,
    metrics: Arc<metrics::Metrics>,
    /// The server's own uid: the Unix socket admits only it.
    uid: u32,
    local_user: String,
    started: Instant,
    started_at: DateTime<Utc>,
    addresses: std::sync::Mutex<Vec<String>>,
    /// Set once a stop began: new turns are refused.
    stopping: AtomicBool,
    stop: watch::Sender<bool>,
    subscribers: AtomicUsize,
    /// Only for a server started by a front-end.
    idle: Option<Arc<idle::IdleStop>>,
}

impl ServerState {
    /// The role in effect for one granted `role`.
    fn cap(&self, role: Role) -> Role {
        if self.read_only {
            role.min(Role::Viewer)
        } else {
            role
        }
    }

    fn request_stop(&self) {
        let _ = self.stop.send(true);
    }

    fn status_json(&self, running: Vec<serde_json::Value>, kept: Option<idle::Kept>) -> serde_json::Value {
        let listen = self.addresses.lock().map(|a| a.clone()).unwrap_or_default();
        // When it would stop if nothing happens from now on; never while kept.
        let idle_stop_at = self.idle.as_ref().filter(|_| kept.is_none()).map(|i| {
            let left = i.after().saturating_sub(i.idle_for());
            Utc::now() + chrono::Duration::from_std(left).unwrap_or_else(|_| chrono::Duration::zero())
        });
        let kept_by = match kept {
            Some(idle::Kept::Client) => Some("client"),
            Some(idle::Kept::Rollout) => Some("rollout"),
            None => None,
        };
        json!({
            "autostarted": self.idle.is_some(),
            "idle_stop_secs": self.idle.as_ref().map(|i| i.after().as_secs()),
            "idle_stop_at": idle_stop_at,
            "kept_by": kept_by,
            "pid": std::process::id(),
            "version": env!("CARGO_PKG_VERSION"),
            "started_at": self.started_at,
            "uptime_secs": self.started.elapsed().as_secs(),
            "listen": listen,
            "read_only": self.read_only,
            "clients": {
                "sessions": self.session_count(),
                "subscribers": self.subscribers.load(Ordering::Relaxed),
            },
            "rollouts": running,
        })
    }
}

/// Runs the server until it is told to stop; `on_ready` gets the addresses it
/// listens on (the TCP port is known only once bound, with port 0).
pub async fn serve(
    config: &Config,
    options: &ServeOptions,
    on_ready: impl FnOnce(&[String]),
) -> Result<(), ServeError> {
    // Everything that can be refused is refused before the fleet starts.
    let tokens = options.tokens.as_deref().map(Tokens::load).transpose()?;
    if options.listen.is_some() && tokens.is_none() {
        return Err(ServeError::NeedTokens);
    }
    let path = socket_path(&config.data_dir);
    let unix = listener::bind_unix(&path).await?;
    let _socket_file = listener::SocketFile(path.clone());
    let tcp = match options.listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { what: addr.to_string(), source })?,
        ),
        None => None,
    };

    let parley = Parley::start(config).await?;
    let services = Arc::clone(parley.services());
    let serve_actor = Actor::new("parley serve", "serve", Role::Admin);
    let resumed = services.orchestrator.resume_suspended(&serve_actor).await?;
    if !resumed.is_empty() {
        tracing::info!(?resumed, "carried on the rollouts the last orderly stop suspended");
    }

    let (stop, _) = watch::channel(false);
    let state = Arc::new(ServerState {
        services: Arc::clone(&services),
        interrupted: parley.interrupted().to_vec(),
        sessions: Default::default(),
        tokens,
        read_only: options.read_only,
        metrics: Arc::new(metrics::Metrics::default()),
        // SAFETY: getuid has no preconditions and cannot fail.
        uid: unsafe { libc::getuid() },
        local_user: auth::local_user(),
        started: Instant::now(),
        started_at: Utc::now(),
        addresses: std::sync::Mutex::new(Vec::new()),
        stopping: AtomicBool::new(false),
        stop,
        subscribers: AtomicUsize::new(0),
        idle: options.idle_stop.map(|after| Arc::new(idle::IdleStop::new(after))),
    });
    let collector = state.metrics.spawn_collector(&services, state.stop.subscribe());
    let idle_watch = tokio::spawn(idle::watch(Arc::clone(&state)));

    let mut addresses = vec![format!("unix:{}", path.display())];
    let mut servers = Vec::new();
    {
        let app = routes::router(&state, auth::Transport::Unix);
        let mut stop = state.stop.subscribe();
        servers.push(tokio::spawn(async move {
            let served =
                axum::serve(listener::UnixPeers(unix), app.into_make_service_with_connect_info::<listener::Peer>())
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the Unix socket server failed");
            }
        }));
    }
    if let Some(tcp) = tcp {
        if let Ok(addr) = tcp.local_addr() {
            addresses.push(format!("http://{addr}"));
        }
        let app = routes::router(&state, auth::Transport::Tcp);
        let mut stop = state.stop.subscribe();
        servers.push(tokio::spawn(async move {
            let served = axum::serve(tcp, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the TCP server failed");
            }
        }));
    }
    if let Ok(mut a) = state.addresses.lock() {
        *a = addresses.clone();
    }
    tracing::info!(?addresses, read_only = options.read_only, "parley serve is listening");
    on_ready(&addresses);

    let mut stopped = state.stop.subscribe();
    tokio::select! {
        _ = shutdown::signalled() => {}
        _ = stopped.wait_for(|s| *s) => {}
    }
    shutdown::stop(&state, &services, options.grace).await;
    state.request_stop();
    for server in servers {
        let _ = server.await;
    }
    let _ = collector.await;
    let _ = idle_watch.await;
    drop(state);
    drop(services);
    // Running rollouts are suspended by now; a rollback that is still returning its
    // agents past the grace period is finished by the next start's recovery.
    if tokio::time::timeout(options.grace + Duration::from_secs(5), parley.shutdown()).await.is_err() {
        tracing::warn!("a rollback was still running when the server stopped; the next start finishes it");
    }
    Ok(())
}
