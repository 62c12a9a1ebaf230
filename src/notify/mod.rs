//! Webhook notifications, as Argo Rollouts and Flagger send them: each `[[notify]]`
//! target receives a signed JSON body when a rollout starts, passes or fails a step,
//! is rolled back, succeeds (or fails, or is aborted), and when traffic fails over.
//!
//! The body is signed with HMAC-SHA256 under the target's secret, in the header
//! `X-Parley-Signature: sha256=<hex>`; a receiver recomputes it over the raw body and
//! compares in constant time. Each target has its own queue and one sender, so
//! notifications arrive in the order they happened; a failed delivery (no answer, or
//! an answer that is not 2xx) is retried with exponential backoff before the next
//! one is sent, and given up (with a log line) after `max_attempts`.
//!
//! The source of truth is the orchestrator's event broadcast and the router's
//! change broadcast; nothing here decides anything about rollouts.

pub mod config;

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::ops::DeploymentStatus;
use crate::orchestrate::RolloutEvent;
use crate::routing::RouteChange;
pub use config::NotifyTarget;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-parley-signature";
/// The header that names the event, so a receiver can route without parsing.
pub const EVENT_HEADER: &str = "x-parley-event";
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long shutdown waits for queued notifications to go out.
const DRAIN: Duration = Duration::from_secs(10);

/// What a notification is about. A state is a type: receivers filter on these names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    RolloutStarted,
    StepPassed,
    StepFailed,
    RolledBack,
    Succeeded,
    Failed,
    Aborted,
    Failover,
    Failback,
    TrafficShifted,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::RolloutStarted,
        EventKind::StepPassed,
        EventKind::StepFailed,
        EventKind::RolledBack,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::Aborted,
        EventKind::Failover,
        EventKind::Failback,
        EventKind::TrafficShifted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RolloutStarted => "rollout.started",
            EventKind::StepPassed => "rollout.step_passed",
            EventKind::StepFailed => "rollout.step_failed",
            EventKind::RolledBack => "rollout.rolled_back",
            EventKind::Succeeded => "rollout.succeeded",
            EventKind::Failed => "rollout.failed",
            EventKind::Aborted => "rollout.aborted",
            EventKind::Failover => "failover",
            EventKind::Failback => "failback",
            EventKind::TrafficShifted => "traffic_shifted",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One notification's body.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub event: EventKind,
    pub at: DateTime<Utc>,
    /// One line for people (what the REPL announces).
    pub summary: String,
    /// The deployment, for rollout events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// The event as the orchestrator or router told it.
    pub data: serde_json::Value,
}

/// The notification a rollout event makes, if it is one worth sending.
pub fn from_rollout(event: &RolloutEvent) -> Option<Notification> {
    let kind = match event {
        RolloutEvent::Started { .. } => EventKind::RolloutStarted,
        RolloutEvent::GateEvaluated { passed: true, .. } => EventKind::StepPassed,
        RolloutEvent::GateEvaluated { passed: false, .. } => EventKind::StepFailed,
        RolloutEvent::Finished { status, .. } => match status {
            DeploymentStatus::Succeeded => EventKind::Succeeded,
            DeploymentStatus::RolledBack => EventKind::RolledBack,
            DeploymentStatus::Aborted => EventKind::Aborted,
            DeploymentStatus::Failed => EventKind::Failed,
            _ => return None,
        },
        _ => return None,
    };
    Some(Notification {
        event: kind,
        at: Utc::now(),
        summary: crate::orchestrate::announce(event).unwrap_or_default(),
        deployment: Some(crate::orchestrate::event_deployment(event).to_string()),
        data: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
    })
}

/// The notification a routing change makes.
pub fn from_route(change: &RouteChange) -> Notification {
    let kind = match change.kind.as_str() {
        "failover" | "cascade" => EventKind::Failover,
        "failback" | "auto_failback" => EventKind::Failback,
        _ => EventKind::TrafficShifted,
    };
    let routes =
        if change.routes.is_empty() { "every region serves itself".to_string() } else { change.routes.join("; ") };
    Notification {
        event: kind,
        at: Utc::now(),
        summary: format!(
            "{} by {} ({}): {routes} (routing version {})",
            change.kind, change.actor, change.frontend, change.version
        ),
        deployment: None,
        data: serde_json::to_value(change).unwrap_or(serde_json::Value::Null),
    }
}

/// `sha256=<hex>` of HMAC-SHA256 over `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Whether `signature` (a header value) is the signature of `body`, compared in
/// constant time: what a receiver does, and what the tests' receiver does.
pub fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let want = sign(secret, body);
    want.len() == signature.len() && bool::from(want.as_bytes().ct_eq(signature.as_bytes()))
}

/// Starts the notifier: a dispatcher that turns events into notifications and one
/// sender per target. Ends when `stop` turns true, after the queued notifications
/// went out (or [`DRAIN`] passed).
pub fn spawn(
    targets: Vec<NotifyTarget>,
    mut rollouts: broadcast::Receiver<RolloutEvent>,
    mut routes: broadcast::Receiver<RouteChange>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().user_agent(concat!("parley/", env!("CARGO_PKG_VERSION"))).build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "no HTTP client for notifications; none will be sent");
                return;
            }
        };
        let mut queues = Vec::with_capacity(targets.len());
        let mut senders = Vec::with_capacity(targets.len());
        for target in targets {
            let (tx, rx) = mpsc::unbounded_channel::<Notification>();
            senders.push(tokio::spawn(deliver_all(client.clone(), target.clone(), rx)));
            queues.push((target, tx));
        }
        loop {
            let note = tokio::select! {
                // Biased: events already broadcast before stop still go out.
                biased;
                e = rollouts.recv() => match e {
                    Ok(event) => from_rollout(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "notifications fell behind the rollout events; some were not sent");
                        None
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                c = routes.recv() => match c {
                    Ok(change) => Some(from_route(&change)),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "notifications fell behind the routing changes; some were not sent");
                        None
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = stop.wait_for(|s| *s) => break,
            };
            let Some(note) = note else { continue };
            for (target, tx) in &queues {
                if target.wants(note.event) {
                    let _ = tx.send(note.clone());
                }
            }
        }
        // Closing the queues lets each sender finish what it holds, then end.
        drop(queues);
        let all = futures::future::join_all(senders);
        if tokio::time::timeout(DRAIN, all).await.is_err() {
            tracing::warn!("notifications still queued at shutdown were not sent");
        }
    })
}

/// Sends the notifications of one target, one at a time, in order.
async fn deliver_all(client: reqwest::Client, target: NotifyTarget, mut queue: mpsc::UnboundedReceiver<Notification>) {
    let mut delivery: u64 = 0;
    while let Some(note) = queue.recv().await {
        delivery += 1;
        let body = match serde_json::to_vec(&note) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, event = note.event.as_str(), "a notification could not be encoded");
                continue;
            }
        };
        if let Err(last) = deliver(&client, &target, &body, note.event, delivery).await {
            tracing::warn!(
                target = %target.redacted_url(),
                event = note.event.as_str(),
                attempts = target.max_attempts,
                error = %last,
                "notification given up"
            );
        }
    }
}

/// Posts one body until a 2xx answer, retrying with exponential backoff.
pub async fn deliver(
    client: &reqwest::Client,
    target: &NotifyTarget,
    body: &[u8],
    event: EventKind,
    delivery: u64,
) -> Result<(), String> {
    let signature = sign(&target.secret, body);
    let mut backoff = target.first_backoff;
    let mut last = String::new();
    for attempt in 1..=target.max_attempts {
        let sent = client
            .post(&target.url)
            .timeout(target.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, &signature)
            .header(EVENT_HEADER, event.as_str())
            .header("x-parley-delivery", delivery.to_string())
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("HTTP {}", r.status().as_u16()),
            // Without the URL: reqwest's error text names it, and it may hold a token.
            Err(e) => last = e.without_url().to_string(),
        }
        tracing::debug!(target = %target.redacted_url(), attempt, error = %last, "notification not delivered; retrying");
        if attempt < target.max_attempts {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = sign("k", b"{}");
        assert!(verify("k", b"{}", &s));
        assert!(!verify("k", b"{ }", &s));
        assert!(!verify("other", b"{}", &s));
        assert!(!verify("k", b"{}", "sha256=00"));
    }

    #[test]
    fn rollout_events_map_to_the_events_receivers_filter_on() {
        let finished = |status| RolloutEvent::Finished { id: "d-3".into(), status, reason: "r".into() };
        assert_eq!(from_rollout(&finished(DeploymentStatus::RolledBack)).unwrap().event, EventKind::RolledBack);
        assert_eq!(from_rollout(&finished(DeploymentStatus::Succeeded)).unwrap().event, EventKind::Succeeded);
        assert!(from_rollout(&RolloutEvent::Resumed { id: "d-3".into() }).is_none());
        let started = RolloutEvent::Started {
            id: "d-3".into(),
            extension: "auth-filter".into(),
            version: "2.1.0".into(),
            agents: 12,
            steps: 4,
        };
        let n = from_rollout(&started).unwrap();
        assert_eq!(n.summary, "d-3: rolling out auth-filter 2.1.0 to 12 agents in 4 steps");
        let body = serde_json::to_value(&n).unwrap();
        assert_eq!(body["event"], "rollout.started");
        assert_eq!(body["deployment"], "d-3");
        assert_eq!(body["data"]["extension"], "auth-filter");
    }
}
