//! The Slack bridge: `parley slack`.
//!
//! Slack is one more front-end: mentions, direct messages and slash commands
//! (`/parley ...`) become utterances for a dialog [`Session`](crate::dialog::Session)
//! per thread, replies become Block Kit, button clicks become the next utterance.
//! Two ways in: Socket Mode ([`socket`], the default; no public URL) and the
//! Events API over signed HTTP ([`events`]). Everything Slack-specific stays in this module.

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
use config::{Secrets, SlackMode, SlackSettings};

#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error(transparent)]
    Secrets(#[from] config::SecretsError),
    #[error(transparent)]
    Web(#[from] web::WebError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
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

/// Runs the bridge until `stop` turns true.
pub async fn run(parley: &Parley, run: SlackRun, mut stop: watch::Receiver<bool>) -> Result<(), SlackError> {
    let SlackRun { settings, secrets, socket: socket_options, listener } = run;
    let trust = tls::Trust::from_ca_file(settings.ca_file.as_deref())?;
    let web = web::WebClient::with_trust(&settings.base_url, &trust)?;
    let services = Arc::clone(parley.services());
    let interrupted = parley.interrupted().to_vec();
    let factory: bridge::SessionFactory = Box::new(move |actor| {
        let mut session = crate::dialog::Session::new(Arc::clone(&services), actor).with_interrupted(&interrupted);
        // Threads are read later than a terminal; give a yes/no longer to arrive.
        session.set_confirmation_ttl(std::time::Duration::from_secs(30 * 60));
        session
    });
    let mode = settings.mode;
    let listen = settings.listen;
    let bridge = bridge::Bridge::new(settings, secrets.clone(), web.clone(), factory);
    let progress = tokio::spawn(Arc::clone(&bridge).run_progress(parley.services().orchestrator.subscribe()));
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
