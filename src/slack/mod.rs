//! The Slack bridge: `parley slack`.
//!
//! Slack is one more front-end: mentions, direct messages and slash commands
//! (`/parley ...`) become utterances for a dialog [`Session`](crate::dialog::Session)
//! per thread, replies become Block Kit, button clicks become the next utterance.
//! Two ways in: Socket Mode ([`socket`], the default; no public URL) and the
//! Events API over signed HTTP ([`events`]). Everything Slack-specific stays in this module.
//! The turns are answered in this process ([`run`]) or, with `--server`, by a
//! `parley serve` the bridge is a client of ([`run_client`]).

pub mod blocks;
pub mod bridge;
pub mod config;
pub mod events;
pub mod socket;
pub mod text;
pub mod tls;
pub mod web;

use std::sync::Arc;

use tokio::sync::watch;

use crate::app::Parley;
use crate::client::Client;
use config::{Secrets, SlackMode, SlackSettings};

#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error(transparent)]
    Secrets(#[from] config::SecretsError),
    #[error(transparent)]
    Web(#[from] web::WebError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Server(#[from] crate::client::ClientError),
    #[error("listening on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// What `run` needs besides the running Parley.
pub struct SlackRun {
    pub settings: SlackSettings,
    pub secrets: Secrets,
    pub socket: socket::SocketOptions,
    /// For the Events API: an already bound listener (tests bind port 0).
    pub listener: Option<tokio::net::TcpListener>,
}

/// Runs the bridge until `stop` turns true, its turns answered in this process.
pub async fn run(parley: &Parley, run: SlackRun, stop: watch::Receiver<bool>) -> Result<(), SlackError> {
    let services = Arc::clone(parley.services());
    let interrupted = parley.interrupted().to_vec();
    let factory: bridge::SessionFactory = Box::new(move |actor| {
        let mut session = crate::dialog::Session::new(Arc::clone(&services), actor).with_interrupted(&interrupted);
        // Threads are read later than a terminal; give a yes/no longer to arrive.
        session.set_confirmation_ttl(std::time::Duration::from_secs(30 * 60));
        session
    });
    let events = parley.services().orchestrator.subscribe();
    serve(run, bridge::Turns::Local(factory), stop, |bridge| tokio::spawn(bridge.run_progress(events))).await
}

/// Runs the bridge as a client of `parley serve`: the server answers every turn,
/// for the Slack user who spoke (docs/api.md, "Bridges"), and its event stream
/// brings rollout progress. The stream is subscribed to before Slack is.
pub async fn run_client(client: Client, run: SlackRun, stop: watch::Receiver<bool>) -> Result<(), SlackError> {
    let events = client.events().await?;
    let progress_client = client.clone();
    serve(run, bridge::Turns::Server(client), stop, move |bridge| {
        tokio::spawn(bridge.run_server_progress(progress_client, events))
    })
    .await
}

async fn serve(
    run: SlackRun,
    turns: bridge::Turns,
    mut stop: watch::Receiver<bool>,
    progress: impl FnOnce(Arc<bridge::Bridge>) -> tokio::task::JoinHandle<()>,
) -> Result<(), SlackError> {
    let SlackRun { settings, secrets, socket: socket_options, listener } = run;
    let trust = tls::Trust::from_ca_file(settings.ca_file.as_deref())?;
    let web = web::WebClient::with_trust(&settings.base_url, &trust)?;
    let mode = settings.mode;
    let listen = settings.listen;
    let bridge = bridge::Bridge::new(settings, secrets.clone(), web.clone(), turns);
    let progress = progress(Arc::clone(&bridge));
    match mode {
        SlackMode::Socket => {
            let app_token = secrets.app_token.clone().ok_or(config::SecretsError::Missing("SLACK_APP_TOKEN"))?;
            let sink = Arc::new(socket::BridgeSink(Arc::clone(&bridge)));
            socket::run(web, app_token, sink, socket_options, stop).await;
        }
        SlackMode::Events => {
            let secret = secrets.signing_secret.clone().ok_or(config::SecretsError::Missing("SLACK_SIGNING_SECRET"))?;
            let listener = match listener {
                Some(l) => l,
                None => tokio::net::TcpListener::bind(listen)
                    .await
                    .map_err(|e| SlackError::Listen { addr: listen.to_string(), reason: e.to_string() })?,
            };
            let app = events::router(Arc::clone(&bridge), secret);
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
                .map_err(|e| SlackError::Listen { addr: listen.to_string(), reason: e.to_string() })?;
        }
    }
    progress.abort();
    Ok(())
}
