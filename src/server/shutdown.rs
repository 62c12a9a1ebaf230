//! An orderly stop: on SIGTERM, Ctrl-C or `parley serve stop`, the server takes no
//! new turns, holds every running rollout before its next batch (a batch being
//! installed finishes, within the grace period), and records each as suspended, so
//! that the next start carries it on instead of calling it interrupted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::ServerState;
use crate::services::Services;

/// Until SIGTERM or SIGINT.
pub async fn signalled() {
    crate::agent::standalone::terminated().await;
}

pub async fn stop(state: &ServerState, services: &Services, grace: Duration) {
    state.stopping.store(true, Ordering::SeqCst);
    match services.orchestrator.suspend_running(grace).await {
        Ok(suspended) if suspended.is_empty() => tracing::info!("stopping; no rollout was running"),
        Ok(suspended) => tracing::info!(?suspended, "stopping; these rollouts carry on at the next start"),
        Err(e) => tracing::error!(error = %e, "could not suspend the running rollouts; the next start recovers them"),
    }
}
