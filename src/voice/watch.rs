//! Announcements while a voice session is watching: after "watch eu-west" the
//! front-end keeps listening and says each change as one short sentence (an agent
//! going down, a health gate breached, a rollout finishing).
//!
//! Only the news is said: a step starting or a gate passing is progress the
//! operator asked nothing about, and every sentence is read aloud with `--speak`,
//! so chatter would drown the replies. Routing notices are left to the session,
//! which leads the next reply with them, so nothing is said twice.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::ops::{Operation, Scope, Selector};
use crate::orchestrate::RolloutEvent;
use crate::topology::poller::TopologyEvent;

/// What the voice front-end says about a rollout event, if anything.
pub fn rollout_sentence(event: &RolloutEvent) -> Option<String> {
    match event {
        RolloutEvent::StepStarted { .. } | RolloutEvent::Resumed { .. } => None,
        RolloutEvent::GateEvaluated { passed: true, .. } => None,
        other => crate::orchestrate::announce(other),
    }
}

/// What the voice front-end says about a fleet change inside the watched scope.
/// No clock time: it is said as it happens.
pub fn fleet_sentence(event: &TopologyEvent, scope: Option<&Scope>) -> Option<String> {
    let (agent, region) = match event {
        TopologyEvent::LivenessChanged { agent, region, .. }
        | TopologyEvent::Flapping { agent, region, .. }
        | TopologyEvent::Settled { agent, region, .. }
        | TopologyEvent::Left { agent, region, .. } => (Some(agent.as_str()), region.as_str()),
        TopologyEvent::RegionChanged { region, .. } => (None, region.as_str()),
    };
    if !in_scope(scope, agent, region) {
        return None;
    }
    Some(match event {
        TopologyEvent::LivenessChanged { agent, region, from, to, .. } => {
            format!("{agent} in {region} is {} (was {})", to.as_str(), from.as_str())
        }
        TopologyEvent::RegionChanged { region, from, to, .. } => {
            format!("region {region} is {} (was {})", to.as_str(), from.as_str())
        }
        TopologyEvent::Flapping { agent, region, .. } => format!("{agent} in {region} is flapping"),
        TopologyEvent::Settled { agent, region, liveness, .. } => {
            format!("{agent} in {region} has settled: {}", liveness.as_str())
        }
        TopologyEvent::Left { agent, region, .. } => format!("{agent} in {region} left the fleet"),
    })
}

/// Region and agent selectors narrow what is announced; the others (zone, env,
/// capability, tier) are not carried by fleet events, so they announce everything
/// rather than silently nothing.
fn in_scope(scope: Option<&Scope>, agent: Option<&str>, region: &str) -> bool {
    let Some(scope) = scope else { return true };
    scope.0.iter().all(|s| match s {
        Selector::Region(r) => r == region,
        // A region-wide change concerns the agent's region too.
        Selector::Agent(a) => agent.is_none_or(|name| name == a),
        _ => true,
    })
}

/// Where announcements come from.
pub struct Sources {
    pub rollouts: broadcast::Receiver<RolloutEvent>,
    pub fleet: broadcast::Receiver<TopologyEvent>,
}

/// Says one announcement (print, and speak with `--speak`); may block.
pub type Sink = Arc<dyn Fn(String) + Send + Sync>;

/// The running announcer; [`Announcer::finish`] says what is still queued and stops.
pub struct Announcer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Announcer {
    /// Announces events while `watching` holds a `watch` operation; events that
    /// arrive while nothing is watched are dropped.
    pub fn spawn(mut sources: Sources, watching: watch::Receiver<Option<Operation>>, sink: Sink) -> Announcer {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut open = (true, true);
            loop {
                let line = tokio::select! {
                    _ = stopped.changed() => break,
                    e = sources.rollouts.recv(), if open.0 => match e {
                        Ok(e) => rollout_sentence(&e),
                        Err(broadcast::error::RecvError::Lagged(_)) => None,
                        Err(broadcast::error::RecvError::Closed) => { open.0 = false; None }
                    },
                    e = sources.fleet.recv(), if open.1 => match e {
                        Ok(e) => scope_of(&watching).and_then(|scope| fleet_sentence(&e, scope.as_ref())),
                        Err(broadcast::error::RecvError::Lagged(_)) => None,
                        Err(broadcast::error::RecvError::Closed) => { open.1 = false; None }
                    },
                };
                if let Some(line) = line.filter(|_| watching.borrow().is_some()) {
                    say(&sink, line).await;
                }
                if !open.0 && !open.1 {
                    // Nothing more can come; wait for the stop so `finish` stays simple.
                    let _ = stopped.changed().await;
                    break;
                }
            }
            // What was sent before the stop is still news: say it, in order.
            for line in drain(&mut sources, &watching) {
                say(&sink, line).await;
            }
        });
        Announcer { stop, task }
    }

    /// Says what is already queued, then stops.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The watched scope: None when nothing is watched, Some(None) for the fleet.
fn scope_of(watching: &watch::Receiver<Option<Operation>>) -> Option<Option<Scope>> {
    match &*watching.borrow() {
        Some(Operation::Watch { scope, .. }) => Some(scope.clone()),
        Some(_) => Some(None),
        None => None,
    }
}

fn drain(sources: &mut Sources, watching: &watch::Receiver<Option<Operation>>) -> Vec<String> {
    let mut out = Vec::new();
    let Some(scope) = scope_of(watching) else { return out };
    while let Ok(e) = sources.rollouts.try_recv() {
        out.extend(rollout_sentence(&e));
    }
    while let Ok(e) = sources.fleet.try_recv() {
        out.extend(fleet_sentence(&e, scope.as_ref()));
    }
    out
}

async fn say(sink: &Sink, line: String) {
    let sink = Arc::clone(sink);
    // Speaking blocks for the length of the sentence; keep it off the runtime.
    let _ = tokio::task::spawn_blocking(move || sink(line)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::DeploymentStatus;
    use crate::topology::Liveness;
    use std::sync::Mutex;

    fn down(agent: &str, region: &str) -> TopologyEvent {
        TopologyEvent::LivenessChanged {
            agent: agent.into(),
            region: region.into(),
            from: Liveness::Healthy,
            to: Liveness::Down,
            at: chrono::Utc::now(),
        }
    }

    #[test]
    fn only_news_is_said_and_only_inside_the_scope() {
        let step = RolloutEvent::StepStarted { id: "d1".into(), step: 1, of: 2, agents: vec!["edge-1".into()] };
        assert_eq!(rollout_sentence(&step), None);
        let done = RolloutEvent::Finished {
            id: "d1".into(),
            status: DeploymentStatus::Succeeded,
            reason: "all 4 agents run it".into(),
        };
        assert_eq!(rollout_sentence(&done), crate::orchestrate::announce(&done));
        let eu = Scope::region("eu-west");
        assert_eq!(
            fleet_sentence(&down("edge-7", "eu-west"), Some(&eu)).as_deref(),
            Some("edge-7 in eu-west is down (was healthy)")
        );
        assert_eq!(fleet_sentence(&down("edge-9", "us-east"), Some(&eu)), None);
        assert!(fleet_sentence(&down("edge-9", "us-east"), None).is_some());
    }

    #[tokio::test]
    async fn announces_while_watching_and_drains_on_finish() {
        let (rtx, rollouts) = broadcast::channel(16);
        let (ftx, fleet) = broadcast::channel(16);
        let (wtx, wrx) = watch::channel(None);
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = Arc::clone(&said);
        let sink: Sink = Arc::new(move |l| log.lock().unwrap().push(l));
        let announcer = Announcer::spawn(Sources { rollouts, fleet }, wrx, sink);
        wtx.send_replace(Some(Operation::Watch { scope: Some(Scope::region("eu-west")), interval_secs: None }));
        ftx.send(down("edge-9", "us-east")).unwrap();
        ftx.send(down("edge-7", "eu-west")).unwrap();
        rtx.send(RolloutEvent::Paused { id: "d1".into(), reason: "gate".into() }).unwrap();
        announcer.finish().await;
        let mut said = said.lock().unwrap().clone();
        // The two sources are independent; their order relative to each other is not promised.
        said.sort();
        assert_eq!(said, vec!["d1: paused (gate)".to_string(), "edge-7 in eu-west is down (was healthy)".to_string()]);
    }

    #[tokio::test]
    async fn nothing_is_said_when_nothing_is_watched() {
        let (rtx, rollouts) = broadcast::channel(16);
        let (_ftx, fleet) = broadcast::channel::<TopologyEvent>(16);
        let (_wtx, wrx) = watch::channel(None);
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let log = Arc::clone(&said);
        let announcer =
            Announcer::spawn(Sources { rollouts, fleet }, wrx, Arc::new(move |l| log.lock().unwrap().push(l)));
        rtx.send(RolloutEvent::Paused { id: "d1".into(), reason: "gate".into() }).unwrap();
        announcer.finish().await;
        assert!(said.lock().unwrap().is_empty());
    }
}
