//! The idle stop of a server a front-end started in the background
//! (`parley serve --idle-stop-secs N`, see `client::spawn`): once no client is
//! attached (no event-stream subscriber, no request in flight or for N seconds) and
//! nothing runs (no rollout or rollback task at work, none pending in the registry)
//! for N seconds, it stops by itself, in the same order as `parley serve stop`. A
//! server started by hand has no idle stop: it stays until it is stopped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::ServerState;
use crate::ops::DeploymentStatus;

pub struct IdleStop {
    after: Duration,
    /// The last moment a client was attached or something ran.
    last_busy: Mutex<Instant>,
    /// Requests being answered now: a long turn is a client attached.
    in_flight: AtomicUsize,
}

impl IdleStop {
    pub fn new(after: Duration) -> IdleStop {
        IdleStop { after, last_busy: Mutex::new(Instant::now()), in_flight: AtomicUsize::new(0) }
    }

    pub fn after(&self) -> Duration {
        self.after
    }

    fn touch(&self) {
        *self.last_busy.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// How long the server has been idle.
    pub fn idle_for(&self) -> Duration {
        self.last_busy.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    /// A request begins: the clock starts again when it ends.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlight(Arc::clone(self))
    }
}

/// One request being answered.
pub struct InFlight(Arc<IdleStop>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why the server cannot stop now, if anything keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// A client is subscribed to the event stream or a request is being answered.
    Client,
    /// A rollout or rollback is at work, or one is pending.
    Rollout,
}

impl ServerState {
    /// What keeps the server up now; `None`: nothing (it may stop once idle long
    /// enough). `asking` requests in flight are the caller's own (the status request
    /// asking this), not a client that keeps it.
    pub(super) async fn kept_by(&self, asking: usize) -> Option<Kept> {
        let in_flight = self.idle.as_ref().map_or(0, |i| i.in_flight.load(Ordering::SeqCst));
        if self.subscribers.load(Ordering::SeqCst) > 0 || in_flight > asking {
            return Some(Kept::Client);
        }
        if !self.services.orchestrator.settled() {
            return Some(Kept::Rollout);
        }
        // A paused rollout is safe to leave (the next start has it from the
        // registry); one pending, running or rolling back is not.
        match self.services.registry.active_deployments().await {
            Ok(active) if active.iter().all(|d| d.status == DeploymentStatus::Paused) => None,
            Ok(_) => Some(Kept::Rollout),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the active deployments; staying up");
                Some(Kept::Rollout)
            }
        }
    }
}

/// Stops the server once it has been idle for its idle period; returns at once for a
/// server started by hand.
pub async fn watch(state: Arc<ServerState>) {
    let Some(idle) = state.idle.clone() else { return };
    // Often enough that the stop comes soon after the period, rarely enough to cost nothing.
    let tick = (idle.after / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut stop = state.stop.subscribe();
    loop {
        tokio::select! {
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            _ = tokio::time::sleep(tick) => {}
        }
        if state.kept_by(0).await.is_some() {
            idle.touch();
            continue;
        }
        if idle.idle_for() >= idle.after {
            tracing::info!(
                idle_stop_secs = idle.after.as_secs(),
                "no client and nothing running for the idle period: stopping (this server was started by a client)"
            );
            state.request_stop();
            return;
        }
    }
}
