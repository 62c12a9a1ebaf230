//! Rollouts against the real demo fleet (HTTP on loopback) and a registry in memory.

use std::time::Duration;

use super::*;
use crate::agent::demo::{DemoFleet, DemoOptions};
use crate::agent::faults::FaultSpec;
use crate::agent::protocol::AgentAction;
use crate::ops::{MaxUnavailable, Role, StrategyKind};
use crate::registry::{DeploymentRecord, TargetState};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn fleet(faults: &str) -> DemoFleet {
    DemoFleet::start(DemoOptions {
        faults: FaultSpec::parse(faults).unwrap(),
        install_delay: Some(ms(2)),
        transition_delay: Some(ms(10)),
        ..DemoOptions::default()
    })
    .await
    .unwrap()
}

fn client() -> AgentClient {
    AgentClient::new(Duration::from_secs(3), None).unwrap()
}

async fn orchestrator(bake: Duration) -> Orchestrator {
    let settings = RolloutSettings { bake, install_timeout: Duration::from_secs(3), ..RolloutSettings::default() };
    Orchestrator::new(Registry::open_in_memory().await.unwrap(), client(), settings)
}

fn alice() -> Actor {
    Actor::new("alice", "repl", Role::Operator)
}

/// The fleet's agents in a region, in inventory order, as deployment targets.
fn targets(fleet: &DemoFleet, region: &str) -> Vec<Target> {
    fleet
        .inventory()
        .into_iter()
        .filter(|e| e.region.as_deref() == Some(region))
        .map(|e| {
            let agent = e.name.unwrap();
            let placement = placement(&agent);
            Target { agent, endpoint: e.endpoint, previous: Some("2.0.3".into()), placement }
        })
        .collect()
}

/// Where a demo agent sits, as the topology would say.
fn placement(agent: &str) -> Placement {
    let members = crate::agent::demo::demo_members().unwrap();
    let m = members.into_iter().find(|m| m.name == agent).unwrap();
    Placement { region: m.region, zone: m.zone, labels: m.labels, capabilities: m.capabilities }
}

fn request(targets: Vec<Target>, kind: StrategyKind) -> DeployRequest {
    DeployRequest {
        extension: "auth-filter".into(),
        version: "2.1.0".into(),
        scope: Scope::region("ap-south"),
        strategy: Strategy::of(kind),
        targets,
        actor: alice(),
        utterance: "roll out auth-filter 2.1.0 to ap-south".into(),
        require_approval: None,
        max_failures: None,
        queue: false,
        gate: Vec::new(),
    }
}

/// What each agent of the fleet reports for auth-filter, over HTTP.
async fn versions(fleet: &DemoFleet) -> Vec<(String, Option<String>)> {
    let c = client();
    let mut out = Vec::new();
    for e in fleet.inventory() {
        let status = c.status(&e.endpoint).await.unwrap();
        let v = status.extensions.iter().find(|x| x.name == "auth-filter").map(|x| x.version.clone());
        out.push((status.name, v));
    }
    out
}

fn on(v: &str) -> Option<String> {
    Some(v.to_string())
}

async fn next_matching(rx: &mut broadcast::Receiver<RolloutEvent>, f: impl Fn(&RolloutEvent) -> bool) -> RolloutEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ev = rx.recv().await.unwrap();
            if f(&ev) {
                return ev;
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rolling_deploy_reaches_ap_south_and_nothing_else() {
    let fleet = fleet("").await;
    let orch = orchestrator(ms(5)).await;
    let mut rx = orch.subscribe();
    let rec = orch.start(request(targets(&fleet, "ap-south"), StrategyKind::Rolling)).await.unwrap();
    assert_eq!((rec.name.as_str(), rec.status, rec.step_count), ("d-1", DeploymentStatus::Running, 4));
    orch.wait("d-1").await;

    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(rec.status, DeploymentStatus::Succeeded, "{:?}", rec.reason);
    assert_eq!(rec.targets.len(), 12);
    assert!(rec.targets.iter().all(|t| t.state == TargetState::Installed));
    assert_eq!(rec.targets[0].agent, "edge-19");
    let ap_south: Vec<String> = targets(&fleet, "ap-south").into_iter().map(|t| t.agent).collect();
    for (agent, v) in versions(&fleet).await {
        let want = if ap_south.contains(&agent) { "2.1.0" } else { "2.0.3" };
        assert_eq!(v, on(want), "{agent}");
    }

    let kinds: Vec<String> = orch.registry().events(rec.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(&kinds[..3], ["created", "planned", "step_started"]);
    assert_eq!(kinds.last().map(String::as_str), Some("succeeded"));
    assert_eq!(kinds.iter().filter(|k| *k == "step_started").count(), 4);
    assert_eq!(kinds.iter().filter(|k| *k == "gate_evaluated").count(), 4);
    let events = orch.registry().events(rec.id).await.unwrap();
    for agent in &ap_south {
        let pos = |kind: &str| events.iter().position(|e| e.kind == kind && e.data["agent"] == agent.as_str());
        assert!(pos("install_started").unwrap() < pos("install_succeeded").unwrap(), "{agent}");
    }
    let finished = next_matching(&mut rx, |e| matches!(e, RolloutEvent::Finished { .. })).await;
    assert!(matches!(finished, RolloutEvent::Finished { status: DeploymentStatus::Succeeded, .. }));
    assert!(orch.active_agents().await.is_empty());
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_error_spike_fails_the_first_gate_and_everything_is_rolled_back() {
    let fleet = fleet("error-spike:auth-filter@2.1.0").await;
    let orch = orchestrator(ms(5)).await;
    orch.start(request(targets(&fleet, "ap-south"), StrategyKind::Rolling)).await.unwrap();
    orch.wait("d-1").await;
    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(rec.status, DeploymentStatus::RolledBack);
    let reason = rec.reason.unwrap();
    assert!(reason.contains("health gate failed at step 1 of 4"), "{reason}");
    assert!(reason.contains("error rate") && reason.contains("> 1%") && reason.contains("edge-19"), "{reason}");
    assert!(reason.contains("3 agents returned to auth-filter 2.0.3"), "{reason}");
    assert_eq!(rec.current_step, 0);
    assert_eq!(rec.targets.iter().filter(|t| t.state == TargetState::RolledBack).count(), 3);
    assert_eq!(rec.targets.iter().filter(|t| t.state == TargetState::Pending).count(), 9);
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")));
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_failed_install_names_the_agent_and_rolls_back() {
    let fleet = fleet("install-fail:auth-filter@2.1.0/agent:edge-20").await;
    let orch = orchestrator(ms(5)).await;
    orch.start(request(targets(&fleet, "ap-south"), StrategyKind::Rolling)).await.unwrap();
    orch.wait("d-1").await;
    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(rec.status, DeploymentStatus::RolledBack);
    let reason = rec.reason.unwrap();
    assert!(reason.starts_with("install failed at step 1 of 4: edge-20"), "{reason}");
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")));

    // Retry runs the same version again from the failed step; the fault is still there.
    let again = orch.retry("d-1", &alice()).await.unwrap();
    assert_eq!(again.status, DeploymentStatus::Running);
    orch.wait("d-1").await;
    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(rec.status, DeploymentStatus::RolledBack);
    let kinds: Vec<String> = orch.registry().events(rec.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&"retry".to_string()));
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_does_not_answer_fails_the_rollout_and_is_named() {
    let fleet = fleet("").await;
    let settings = RolloutSettings {
        bake: ms(5),
        install_timeout: Duration::from_secs(3),
        rollback_patience: ms(300),
        ..RolloutSettings::default()
    };
    let orch = Orchestrator::new(Registry::open_in_memory().await.unwrap(), client(), settings);
    let mut t = targets(&fleet, "ap-south")[..2].to_vec();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    t[1].endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut req = request(t, StrategyKind::Rolling);
    req.strategy.batch_size = Some(2);
    orch.start(req).await.unwrap();
    orch.wait("d-1").await;
    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    // The install failed and so did returning the agent: failed, naming it.
    assert_eq!(rec.status, DeploymentStatus::Failed);
    let reason = rec.reason.clone().unwrap();
    assert!(reason.contains("edge-20") && reason.contains("rollback incomplete"), "{reason}");
    assert_eq!(rec.target("edge-19").unwrap().state, TargetState::RolledBack);
    assert_eq!(rec.target("edge-20").unwrap().state, TargetState::Unreachable);
    fleet.shutdown().await;
}

#[tokio::test]
async fn pause_holds_the_rollout_and_resume_finishes_it() {
    let fleet = fleet("").await;
    let orch = orchestrator(ms(300)).await;
    let mut rx = orch.subscribe();
    orch.start(request(targets(&fleet, "ap-south"), StrategyKind::Rolling)).await.unwrap();
    next_matching(&mut rx, |e| matches!(e, RolloutEvent::AgentInstalled { .. })).await;
    let paused = orch.pause("d-1", &alice()).await.unwrap();
    assert_eq!(paused.status, DeploymentStatus::Paused);
    assert!(paused.reason.as_deref().unwrap().starts_with("paused by alice at step 1 of 4"), "{:?}", paused.reason);
    assert!(orch.pause("d-1", &alice()).await.unwrap_err().to_string().contains("already paused"));

    // A second deployment may not touch the same agents meanwhile.
    let clash = orch.start(request(targets(&fleet, "ap-south")[..1].to_vec(), StrategyKind::Rolling)).await;
    assert!(matches!(&clash, Err(OrchestrateError::Overlap { deployment, .. }) if deployment == "d-1"), "{clash:?}");

    tokio::time::sleep(ms(700)).await;
    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(rec.status, DeploymentStatus::Paused);
    assert_eq!(rec.current_step, 0, "no step starts while paused");
    assert_eq!(rec.targets.iter().filter(|t| t.state == TargetState::Pending).count(), 9);

    let resumed = orch.resume("d-1", &alice()).await.unwrap();
    assert_eq!(resumed.status, DeploymentStatus::Running);
    orch.wait("d-1").await;
    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(rec.status, DeploymentStatus::Succeeded);
    assert!(orch.resume("d-1", &alice()).await.unwrap_err().to_string().contains("already succeeded"));
    fleet.shutdown().await;
}

#[tokio::test]
async fn abort_mid_rollout_returns_every_touched_agent() {
    let fleet = fleet("").await;
    let orch = orchestrator(ms(200)).await;
    let mut rx = orch.subscribe();
    orch.start(request(targets(&fleet, "ap-south"), StrategyKind::Rolling)).await.unwrap();
    next_matching(&mut rx, |e| matches!(e, RolloutEvent::StepStarted { step: 2, .. })).await;
    let aborted = orch.abort("d-1", &alice()).await.unwrap();
    // Aborted only once the agents are back; until then it says it is returning them.
    assert_eq!(aborted.status, DeploymentStatus::RollingBack);
    assert!(aborted.reason.as_deref().unwrap().starts_with("aborted by alice at step 2 of 4; returning"));
    orch.wait("d-1").await;
    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(rec.status, DeploymentStatus::Aborted);
    let reason = rec.reason.unwrap();
    assert!(reason.starts_with("aborted by alice at step 2 of 4") && reason.contains("returned to"), "{reason}");
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")));
    assert!(orch.abort("d-1", &alice()).await.unwrap_err().to_string().contains("already aborted"));
    fleet.shutdown().await;
}

#[tokio::test]
async fn rollback_of_a_succeeded_deployment_restores_the_previous_version() {
    let fleet = fleet("").await;
    let orch = orchestrator(ms(1)).await;
    let mut req = request(targets(&fleet, "ap-south")[..4].to_vec(), StrategyKind::Canary);
    req.strategy.steps = Some(vec![25, 50]);
    orch.start(req).await.unwrap();
    orch.wait_idle().await;
    assert_eq!(versions(&fleet).await.iter().filter(|(_, v)| *v == on("2.1.0")).count(), 4);

    let e = orch.abort("d-1", &alice()).await.unwrap_err().to_string();
    assert_eq!(e, "d-1 already succeeded; roll it back instead");
    let rec = orch.rollback("d-1", &alice()).await.unwrap();
    assert_eq!(rec.status, DeploymentStatus::RollingBack);
    orch.wait("d-1").await;
    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(rec.status, DeploymentStatus::RolledBack);
    assert!(rec.reason.as_deref().unwrap().contains("4 agents returned to auth-filter 2.0.3"), "{:?}", rec.reason);
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")));
    assert!(orch.rollback("d-1", &alice()).await.unwrap_err().to_string().contains("already rolled back"));
    assert!(matches!(orch.pause("d-9", &alice()).await, Err(OrchestrateError::UnknownDeployment(_))));
    fleet.shutdown().await;
}

/// What the live model (not the agents) says a region's agents run of auth-filter.
fn modelled(handle: &crate::topology::TopologyHandle, agents: &[Target]) -> Vec<Option<String>> {
    let topo = handle.snapshot();
    agents.iter().map(|t| topo.agent(&t.agent).and_then(|a| a.extensions.get("auth-filter").cloned())).collect()
}

#[tokio::test]
async fn the_model_knows_what_a_rollout_and_its_rollback_installed_before_the_next_poll() {
    // Nothing polls after the first pass: what the model says after the rollout can
    // only come from the orchestrator. Without it, a rollout started right after this
    // one took its targets' previous versions from the pass before, and its rollback
    // returned agents to a version they no longer ran.
    let fleet = fleet("").await;
    let orch = orchestrator(ms(1)).await;
    let poller = crate::topology::poller::Poller::new(
        fleet.inventory(),
        client(),
        Arc::new(crate::topology::Catalog::embedded().unwrap()),
        crate::topology::poller::PollerConfig::default(),
    );
    poller.refresh().await;
    orch.watch_fleet(poller.handle());
    let t = targets(&fleet, "ap-south")[..4].to_vec();
    assert_eq!(modelled(&poller.handle(), &t), vec![on("2.0.3"); 4]);

    orch.start(request(t.clone(), StrategyKind::Rolling)).await.unwrap();
    orch.wait("d-1").await;
    assert_eq!(modelled(&poller.handle(), &t), vec![on("2.1.0"); 4]);

    orch.rollback("d-1", &alice()).await.unwrap();
    orch.wait("d-1").await;
    assert_eq!(modelled(&poller.handle(), &t), vec![on("2.0.3"); 4]);
    // A pass asked for after both agrees with them, and so does the model.
    poller.refresh().await;
    assert_eq!(modelled(&poller.handle(), &t), vec![on("2.0.3"); 4]);
    fleet.shutdown().await;
}

#[tokio::test]
async fn recover_pauses_what_a_killed_parley_left_running_and_resume_finishes_it() {
    let fleet = fleet("").await;
    let registry = Registry::open_in_memory().await.unwrap();
    let t = targets(&fleet, "ap-south");
    let new = crate::registry::NewDeployment {
        extension: "auth-filter".into(),
        version: "2.1.0".into(),
        scope: Scope::region("ap-south"),
        strategy: Strategy { steps: None, batch_size: Some(2), ..Strategy::of(StrategyKind::Rolling) },
        status: DeploymentStatus::Running,
        actor: alice(),
        utterance: "roll out auth-filter 2.1.0 to ap-south".into(),
        step_count: 3,
        targets: t[..6]
            .iter()
            .enumerate()
            .map(|(i, t)| crate::registry::NewTarget {
                agent: t.agent.clone(),
                endpoint: t.endpoint.clone(),
                previous_version: t.previous.clone(),
                step: (i / 2) as u32,
            })
            .collect(),
    };
    let d = registry.create_deployment(&new).await.unwrap();
    registry.set_current_step(d.id, 1).await.unwrap();
    registry.set_target_state(d.id, &t[2].agent, TargetState::Installing, None).await.unwrap();

    let settings = RolloutSettings { bake: ms(1), ..RolloutSettings::default() };
    let orch = Orchestrator::new(registry, client(), settings);
    let recovered = orch.recover().await.unwrap();
    assert_eq!(recovered.len(), 1);
    assert_eq!(recovered[0].status, DeploymentStatus::Paused);
    // The agents were read: edge-21, caught installing, still runs 2.0.3 and is pending again.
    assert_eq!(
        recovered[0].reason.as_deref(),
        Some(
            "interrupted at step 2 of 3: Parley stopped; checked 6 agents: 0 on auth-filter 2.1.0, 5 as journalled, \
             corrected edge-21 was installing and runs auth-filter 2.0.3"
        )
    );
    assert_eq!(recovered[0].target("edge-21").unwrap().state, TargetState::Pending);
    assert!(orch.recover().await.unwrap().is_empty(), "recovering twice changes nothing");
    assert_eq!(orch.active_agents().await.get("edge-19").map(String::as_str), Some("d-1"));

    orch.resume("d-1", &alice()).await.unwrap();
    orch.wait("d-1").await;
    let rec = orch.registry().deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(rec.status, DeploymentStatus::Succeeded, "{:?}", rec.reason);
    assert!(rec.targets.iter().all(|t| t.state == TargetState::Installed));
    assert_eq!(versions(&fleet).await.iter().filter(|(_, v)| *v == on("2.1.0")).count(), 6);
    fleet.shutdown().await;
}

#[tokio::test]
async fn agent_actions_are_journalled() {
    let fleet = fleet("").await;
    let orch = orchestrator(ms(1)).await;
    let entry = fleet.inventory().into_iter().next().unwrap();
    let status = orch.agent_action("edge-1", &entry.endpoint, AgentAction::Cordon, &alice()).await.unwrap();
    assert_eq!(status.state.as_str(), "cordoned");
    let kinds: Vec<String> = orch.registry().recent_events(10).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["agent_action_started", "agent_action_succeeded"]);
    fleet.shutdown().await;
}

async fn status_of(orch: &Orchestrator, id: &str) -> DeploymentRecord {
    orch.registry().deployment_by_name(id).await.unwrap().unwrap()
}

/// Until `id` is held waiting for promote (or `status`), or 10 s pass.
async fn until(orch: &Orchestrator, id: &str, f: impl Fn(&DeploymentRecord) -> bool) -> DeploymentRecord {
    for _ in 0..1000 {
        let rec = status_of(orch, id).await;
        if f(&rec) {
            return rec;
        }
        tokio::time::sleep(ms(10)).await;
    }
    panic!("{id} never got there: {:?}", status_of(orch, id).await);
}

fn waiting(rec: &DeploymentRecord) -> bool {
    rec.status == DeploymentStatus::Paused && rec.hold == Some(crate::registry::Hold::Promote)
}

#[tokio::test]
async fn a_progressive_rollout_waits_for_promote_between_phases() {
    let fleet = fleet("").await;
    let orch = orchestrator(ms(1)).await;
    orch.start(request(targets(&fleet, "ap-south"), StrategyKind::Progressive)).await.unwrap();
    let rec = until(&orch, "d-1", waiting).await;
    assert_eq!(rec.current_step, 0);
    let reason = rec.reason.clone().unwrap();
    assert!(reason.contains("canary (step 1 of 3) passed its gate; promote starts half"), "{reason}");
    assert_eq!(rec.targets.iter().filter(|t| t.state == TargetState::Installed).count(), 2);
    assert!(orch.resume("d-1", &alice()).await.unwrap_err().to_string().contains("promote d-1"));
    orch.promote("d-1", &alice()).await.unwrap();
    let rec = until(&orch, "d-1", |r| waiting(r) && r.current_step == 1).await;
    assert_eq!(rec.targets.iter().filter(|t| t.state == TargetState::Installed).count(), 6);
    orch.promote("d-1", &alice()).await.unwrap();
    orch.wait("d-1").await;
    assert_eq!(status_of(&orch, "d-1").await.status, DeploymentStatus::Succeeded);
    assert!(orch.promote("d-1", &alice()).await.is_err());
    let kinds: Vec<String> = orch.registry().events(1).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "promoted").count(), 2);
    fleet.shutdown().await;
}

#[tokio::test]
async fn blue_green_switches_and_switches_back_leaving_blue_untouched() {
    let fleet = fleet("").await;
    let orch = orchestrator(ms(1)).await;
    let t = targets(&fleet, "ap-south")[..4].to_vec();
    orch.start(request(t.clone(), StrategyKind::BlueGreen)).await.unwrap();
    let rec = until(&orch, "d-1", waiting).await;
    assert!(rec.reason.as_deref().unwrap().contains("to switch: green (2 agents)"), "{:?}", rec.reason);
    orch.promote("d-1", &alice()).await.unwrap();
    let rec = until(&orch, "d-1", |r| waiting(r) && r.current_step == 1).await;
    assert!(rec.reason.as_deref().unwrap().contains("to retire blue"), "{:?}", rec.reason);
    assert!(switched_not_retired(&rec));
    let v = versions(&fleet).await;
    let of = |a: &str| v.iter().find(|(n, _)| n == a).unwrap().1.clone();
    assert_eq!((of(&t[0].agent), of(&t[2].agent)), (on("2.1.0"), on("2.0.3")), "green new, blue old");

    let back = orch.rollback("d-1", &alice()).await.unwrap();
    assert_eq!(back.status, DeploymentStatus::RollingBack);
    orch.wait("d-1").await;
    let rec = status_of(&orch, "d-1").await;
    assert_eq!(rec.status, DeploymentStatus::RolledBack);
    assert!(rec.reason.as_deref().unwrap().starts_with("switched back to blue by alice"), "{:?}", rec.reason);
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")));

    // Again, this time retiring blue: every agent ends on the new version.
    orch.start(request(t, StrategyKind::BlueGreen)).await.unwrap();
    until(&orch, "d-2", waiting).await;
    orch.promote("d-2", &alice()).await.unwrap();
    until(&orch, "d-2", |r| waiting(r) && r.current_step == 1).await;
    orch.promote("d-2", &alice()).await.unwrap();
    orch.wait("d-2").await;
    assert_eq!(status_of(&orch, "d-2").await.status, DeploymentStatus::Succeeded);
    assert_eq!(versions(&fleet).await.iter().filter(|(_, v)| *v == on("2.1.0")).count(), 4);
    fleet.shutdown().await;
}

#[tokio::test]
async fn a_gate_as_bad_as_its_baseline_is_inconclusive_and_pauses_for_the_operator() {
    let fleet = fleet("error-spike:auth-filter@2.0.3=5,error-spike:auth-filter@2.1.0=5").await;
    let orch = orchestrator(ms(1)).await;
    orch.start(request(targets(&fleet, "ap-south"), StrategyKind::Rolling)).await.unwrap();
    let rec = until(&orch, "d-1", |r| r.status == DeploymentStatus::Paused).await;
    let reason = rec.reason.unwrap();
    assert!(reason.starts_with("gate inconclusive at step 1 of 4: error rate"), "{reason}");
    assert!(reason.contains("(baseline ") && reason.contains("edge-19"), "{reason}");
    orch.abort("d-1", &alice()).await.unwrap();
    orch.wait("d-1").await;
    assert_eq!(status_of(&orch, "d-1").await.status, DeploymentStatus::Aborted);
    fleet.shutdown().await;
}

#[tokio::test]
async fn install_failures_within_the_budget_do_not_stop_the_rollout() {
    let fleet = fleet("install-fail:auth-filter@2.1.0/agent:edge-20").await;
    let settings = RolloutSettings {
        bake: ms(1),
        install_timeout: Duration::from_secs(3),
        max_failed_per_step: 1,
        max_failed_total: 1,
        ..RolloutSettings::default()
    };
    let orch = Orchestrator::new(Registry::open_in_memory().await.unwrap(), client(), settings);
    orch.start(request(targets(&fleet, "ap-south"), StrategyKind::Rolling)).await.unwrap();
    orch.wait("d-1").await;
    let rec = status_of(&orch, "d-1").await;
    assert_eq!(rec.status, DeploymentStatus::Succeeded, "{:?}", rec.reason);
    let reason = rec.reason.clone().unwrap();
    assert!(
        reason.starts_with("11 of 12 agents on auth-filter 2.1.0; failed within the failure budget: edge-20"),
        "{reason}"
    );
    assert_eq!(rec.target("edge-20").unwrap().state, TargetState::RolledBack);
    let v = versions(&fleet).await;
    assert_eq!(v.iter().find(|(n, _)| n == "edge-20").unwrap().1, on("2.0.3"));
    fleet.shutdown().await;
}

/// Agents being installed at once, replayed from the journal: +1 at an agent's
/// `install_started`, -1 at its outcome. Each is journalled before the install is sent
/// and after it answered, so the real overlap is never larger than this.
async fn most_installing_at_once(orch: &Orchestrator, id: i64, ignore: &[&str]) -> usize {
    let mut now = 0usize;
    let mut most = 0;
    for e in orch.registry().events(id).await.unwrap() {
        let agent = e.data["agent"].as_str().unwrap_or("");
        if ignore.contains(&agent) {
            continue;
        }
        match e.kind.as_str() {
            "install_started" => {
                now += 1;
                most = most.max(now);
            }
            "install_succeeded" | "install_failed" => now = now.saturating_sub(1),
            _ => {}
        }
    }
    most
}

/// A fleet whose installs take `install` of (paused) time, and an orchestrator that
/// bakes `bake` and waits for agents longer than an install takes.
async fn slow_fleet(install: Duration, bake: Duration) -> (DemoFleet, Orchestrator) {
    let fleet = DemoFleet::start(DemoOptions { install_delay: Some(install), ..DemoOptions::default() }).await.unwrap();
    let timeout = install * 3;
    let settings = RolloutSettings { bake, install_timeout: timeout, ..RolloutSettings::default() };
    let client = AgentClient::new(timeout, None).unwrap();
    (fleet, Orchestrator::new(Registry::open_in_memory().await.unwrap(), client, settings))
}

fn rolling(targets: Vec<Target>, batch: u32, max_unavailable: Option<MaxUnavailable>) -> DeployRequest {
    let mut req = request(targets, StrategyKind::Rolling);
    req.strategy.batch_size = Some(batch);
    req.strategy.max_unavailable = max_unavailable;
    req
}

#[tokio::test(start_paused = true)]
async fn rolling_with_max_unavailable_never_has_more_agents_installing_than_the_limit() {
    let (fleet, orch) = slow_fleet(Duration::from_secs(20), Duration::from_secs(60)).await;
    let started = tokio::time::Instant::now();
    // ap-south's 12 agents in batches of 6, at most 2 out of service at once.
    orch.start(rolling(targets(&fleet, "ap-south"), 6, Some(MaxUnavailable::Agents(2)))).await.unwrap();
    orch.wait("d-1").await;
    let rec = status_of(&orch, "d-1").await;
    assert_eq!(rec.status, DeploymentStatus::Succeeded, "{:?}", rec.reason);
    assert_eq!(rec.step_count, 2);
    assert_eq!(most_installing_at_once(&orch, rec.id, &[]).await, 2);
    // Each batch of 6 is three rounds of 2 installs of 20 s, then a 60 s bake.
    assert!(started.elapsed() >= Duration::from_secs(2 * (3 * 20 + 60)), "{:?}", started.elapsed());
    assert!(versions(&fleet).await.iter().filter(|(_, v)| *v == on("2.1.0")).count() == 12);
    let planned = orch.registry().last_event(rec.id, "planned").await.unwrap().unwrap();
    let step1 = planned.data["steps"][0].as_str().unwrap().to_string();
    assert!(step1.contains("; at most 2 agents unavailable at once; bake 60 s"), "{step1}");

    // Without a limit the whole batch of 6 installs at once, as before.
    orch.start(rolling(targets(&fleet, "eu-west"), 6, None)).await.unwrap();
    orch.wait("d-2").await;
    let rec = status_of(&orch, "d-2").await;
    assert_eq!(rec.status, DeploymentStatus::Succeeded, "{:?}", rec.reason);
    assert_eq!(most_installing_at_once(&orch, rec.id, &[]).await, 6);
    fleet.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cordoned_target_counts_against_max_unavailable_and_too_many_hold_the_rollout() {
    let (fleet, orch) = slow_fleet(Duration::from_secs(20), Duration::from_secs(30)).await;
    let poller = Arc::new(crate::topology::poller::Poller::new(
        fleet.inventory(),
        client(),
        Arc::new(crate::topology::Catalog::embedded().unwrap()),
        crate::topology::poller::PollerConfig::default(),
    ));
    orch.watch_fleet(poller.handle());
    let endpoint =
        |name: &str| fleet.inventory().into_iter().find(|e| e.name.as_deref() == Some(name)).unwrap().endpoint;
    client().action(&endpoint("edge-20"), AgentAction::Cordon).await.unwrap();
    poller.refresh().await;

    // Batches of 4 with at most 2 unavailable: edge-20 (cordoned, in batch 1) is one of
    // the 2, so only one other agent installs at a time.
    let t: Vec<Target> = targets(&fleet, "ap-south")[..8].to_vec();
    orch.start(rolling(t.clone(), 4, Some(MaxUnavailable::Agents(2)))).await.unwrap();
    orch.wait("d-1").await;
    let rec = status_of(&orch, "d-1").await;
    assert_eq!(rec.status, DeploymentStatus::Succeeded, "{:?}", rec.reason);
    assert_eq!(most_installing_at_once(&orch, rec.id, &["edge-20"]).await, 1);
    let counted = orch.registry().last_event(rec.id, "unavailable_counted").await.unwrap().unwrap();
    assert_eq!(counted.data["agents"], serde_json::json!(["edge-20 (cordoned)"]));

    // With edge-21 cordoned too, no serving agent may go: the rollout holds before
    // installing anything and names them.
    client().action(&endpoint("edge-21"), AgentAction::Cordon).await.unwrap();
    poller.refresh().await;
    orch.rollback("d-1", &alice()).await.unwrap();
    orch.wait("d-1").await;
    orch.start(rolling(t, 4, Some(MaxUnavailable::Agents(2)))).await.unwrap();
    let rec = until(&orch, "d-2", |r| r.status == DeploymentStatus::Paused).await;
    assert_eq!(
        rec.reason.as_deref(),
        Some(
            "held before installing step 1 of 2: 2 already unavailable (edge-20 cordoned, edge-21 cordoned) and \
             at most 2 may be at once; resume once they are back, or abort"
        )
    );
    assert!(rec.targets.iter().all(|t| t.state == TargetState::Pending), "nothing installed");
    client().action(&endpoint("edge-21"), AgentAction::Uncordon).await.unwrap();
    poller.refresh().await;
    orch.resume("d-2", &alice()).await.unwrap();
    orch.wait("d-2").await;
    let rec = status_of(&orch, "d-2").await;
    assert_eq!(rec.status, DeploymentStatus::Succeeded, "{:?}", rec.reason);
    assert_eq!(most_installing_at_once(&orch, rec.id, &["edge-20"]).await, 1);
    fleet.shutdown().await;
}

/// The next event `f` accepts. On the paused clock a rollout's bakes and holds pass in
/// no real time, so the bound is a day of virtual time: a hang still fails the test.
async fn next_event(rx: &mut broadcast::Receiver<RolloutEvent>, f: impl Fn(&RolloutEvent) -> bool) -> RolloutEvent {
    tokio::time::timeout(Duration::from_secs(86_400), async {
        loop {
            let ev = rx.recv().await.unwrap();
            if f(&ev) {
                return ev;
            }
        }
    })
    .await
    .unwrap()
}

fn paused_with<'a>(id: &'a str, reason_has: &'static str) -> impl Fn(&RolloutEvent) -> bool + 'a {
    move |e| matches!(e, RolloutEvent::Paused { id: d, reason } if d == id && reason.contains(reason_has))
}

#[tokio::test(start_paused = true)]
async fn blue_is_retired_exactly_when_the_configured_timer_elapses_and_not_before() {
    let fleet = DemoFleet::start(DemoOptions { install_delay: Some(Duration::from_secs(5)), ..DemoOptions::default() })
        .await
        .unwrap();
    let retire = Duration::from_secs(30 * 60);
    let settings = RolloutSettings {
        bake: Duration::from_secs(120),
        install_timeout: Duration::from_secs(60),
        blue_retire_after: Some(retire),
        ..RolloutSettings::default()
    };
    let patient = AgentClient::new(Duration::from_secs(60), None).unwrap();
    let orch = Orchestrator::new(Registry::open_in_memory().await.unwrap(), patient, settings);
    let mut rx = orch.subscribe();
    let t = targets(&fleet, "ap-south")[..4].to_vec();
    let real = std::time::Instant::now();
    let rec = orch.start(request(t.clone(), StrategyKind::BlueGreen)).await.unwrap();
    let planned = orch.registry().last_event(rec.id, "planned").await.unwrap().unwrap();
    assert!(
        planned.data["steps"][1].as_str().unwrap().ends_with("then wait for promote or 1800 s to retire blue"),
        "{}",
        planned.data
    );
    next_event(&mut rx, paused_with("d-1", "to switch")).await;
    orch.promote("d-1", &alice()).await.unwrap();
    next_event(&mut rx, paused_with("d-1", "to retire blue")).await;
    // The hold's timer starts as the hold is announced, at this same virtual instant.
    let switched = tokio::time::Instant::now();
    let blue_untouched = |v: &[(String, Option<String>)]| {
        t[2..].iter().all(|b| v.iter().any(|(n, ver)| *n == b.agent && *ver == on("2.0.3")))
    };

    // One second before the timer: still held, blue still on the old version.
    let early = tokio::time::timeout_at(switched + retire - Duration::from_secs(1), async {
        next_event(&mut rx, |e| matches!(e, RolloutEvent::Resumed { .. } | RolloutEvent::StepStarted { .. })).await
    })
    .await;
    assert!(early.is_err(), "blue was retired early: {early:?}");
    assert!(waiting(&status_of(&orch, "d-1").await));
    assert!(blue_untouched(&versions(&fleet).await));

    // At the timer, and by itself: blue is retired and the rollout finishes.
    next_event(&mut rx, |e| matches!(e, RolloutEvent::Resumed { id } if id == "d-1")).await;
    assert_eq!(switched.elapsed(), retire, "retired exactly when the timer elapsed");
    orch.wait("d-1").await;
    let rec = status_of(&orch, "d-1").await;
    assert_eq!(rec.status, DeploymentStatus::Succeeded, "{:?}", rec.reason);
    assert_eq!(versions(&fleet).await.iter().filter(|(_, v)| *v == on("2.1.0")).count(), 4);
    let elapsed = orch.registry().last_event(rec.id, "hold_timer_elapsed").await.unwrap().unwrap();
    assert_eq!(elapsed.data["after_secs"], 1800.0);
    assert!(real.elapsed() < Duration::from_secs(10), "half an hour of virtual time took {:?}", real.elapsed());

    // Switched back a minute before the timer: green returns to the old version and
    // the timer, when it would have elapsed, retires nothing.
    orch.rollback("d-1", &alice()).await.unwrap();
    orch.wait("d-1").await;
    orch.start(request(t.clone(), StrategyKind::BlueGreen)).await.unwrap();
    next_event(&mut rx, paused_with("d-2", "to switch")).await;
    orch.promote("d-2", &alice()).await.unwrap();
    next_event(&mut rx, paused_with("d-2", "to retire blue")).await;
    tokio::time::sleep(retire - Duration::from_secs(60)).await;
    let back = orch.rollback("d-2", &alice()).await.unwrap();
    assert_eq!(back.status, DeploymentStatus::RollingBack);
    orch.wait("d-2").await;
    let rec = status_of(&orch, "d-2").await;
    assert_eq!(rec.status, DeploymentStatus::RolledBack, "{:?}", rec.reason);
    assert!(rec.reason.as_deref().unwrap().starts_with("switched back to blue by alice"), "{:?}", rec.reason);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")));
    assert!(orch.registry().last_event(rec.id, "hold_timer_elapsed").await.unwrap().is_none());
    assert_eq!(status_of(&orch, "d-2").await.status, DeploymentStatus::RolledBack);
    fleet.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_canary_in_the_default_steps_with_five_minute_bakes_finishes_in_virtual_time() {
    let fleet = DemoFleet::start(DemoOptions { install_delay: Some(Duration::from_secs(3)), ..DemoOptions::default() })
        .await
        .unwrap();
    let bake = Duration::from_secs(5 * 60);
    let settings = RolloutSettings { bake, install_timeout: Duration::from_secs(60), ..RolloutSettings::default() };
    let patient = AgentClient::new(Duration::from_secs(60), None).unwrap();
    let orch = Orchestrator::new(Registry::open_in_memory().await.unwrap(), patient, settings);
    let mut rx = orch.subscribe();
    let all: Vec<Target> =
        ["us-east", "us-west", "eu-west", "ap-south"].iter().flat_map(|r| targets(&fleet, r)).collect();
    let real = std::time::Instant::now();
    let started = tokio::time::Instant::now();
    let rec = orch.start(request(all, StrategyKind::Canary)).await.unwrap();
    // 1, 5, 10, 25, 50 and 100% of 48 agents: 1, 3, 5, 12, 24 and 48 in all.
    let mut per_step = vec![0usize; rec.step_count as usize];
    for t in &rec.targets {
        per_step[t.step as usize] += 1;
    }
    assert_eq!(per_step, [1, 2, 2, 7, 12, 24]);

    // Each gate is judged only once its step has baked the full five minutes.
    let mut gates = Vec::new();
    for step in 1..=6 {
        next_event(&mut rx, |e| matches!(e, RolloutEvent::StepStarted { step: s, .. } if *s == step)).await;
        let step_started = tokio::time::Instant::now();
        let gate = next_event(&mut rx, |e| matches!(e, RolloutEvent::GateEvaluated { .. })).await;
        assert!(matches!(gate, RolloutEvent::GateEvaluated { step: s, passed: true, .. } if s == step), "{gate:?}");
        gates.push(step_started.elapsed());
    }
    // An install takes 3 s (in parallel), then the bake; reading health takes no virtual time.
    assert_eq!(gates, vec![Duration::from_secs(3) + bake; 6]);
    let finished = next_event(&mut rx, |e| matches!(e, RolloutEvent::Finished { .. })).await;
    assert!(matches!(finished, RolloutEvent::Finished { status: DeploymentStatus::Succeeded, .. }), "{finished:?}");
    assert_eq!(started.elapsed(), 6 * (Duration::from_secs(3) + bake), "half an hour, in virtual time");
    assert!(real.elapsed() < Duration::from_secs(10), "it took {:?} of real time", real.elapsed());
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.1.0")));
    fleet.shutdown().await;
}

/// Gives one agent of the fleet `fault`, or none.
fn set_fault(fleet: &DemoFleet, agent: &str, fault: Option<crate::agent::faults::Fault>) {
    let a = fleet.agents().iter().find(|a| a.name() == agent).unwrap();
    a.set_faults(crate::agent::faults::Faults(fault.into_iter().collect()));
}

/// A deployment as a killed Parley left it: `rows` of (agent, step, state), and the
/// agents in `installed` already running 2.1.0.
async fn left_behind(
    fleet: &DemoFleet,
    registry: &Registry,
    status: DeploymentStatus,
    rows: &[(usize, u32, TargetState)],
    endpoint: impl Fn(&Target) -> String,
) -> DeploymentRecord {
    let t = targets(fleet, "ap-south");
    let new = crate::registry::NewDeployment {
        extension: "auth-filter".into(),
        version: "2.1.0".into(),
        scope: Scope::region("ap-south"),
        strategy: Strategy { steps: None, batch_size: Some(2), ..Strategy::of(StrategyKind::Rolling) },
        status,
        actor: alice(),
        utterance: "roll out auth-filter 2.1.0 to ap-south".into(),
        step_count: 2,
        targets: rows
            .iter()
            .map(|(i, step, _)| crate::registry::NewTarget {
                agent: t[*i].agent.clone(),
                endpoint: endpoint(&t[*i]),
                previous_version: Some("2.0.3".into()),
                step: *step,
            })
            .collect(),
    };
    let d = registry.create_deployment(&new).await.unwrap();
    for (i, _, state) in rows {
        registry.set_target_state(d.id, &t[*i].agent, *state, None).await.unwrap();
        if *state == TargetState::Installed {
            client().install(&t[*i].endpoint, "auth-filter", "2.1.0").await.unwrap();
        }
    }
    registry.deployment(d.id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_rollback_a_kill_left_midway_is_finished_at_recovery_with_the_reason_it_started_with() {
    let fleet = fleet("").await;
    let registry = Registry::open_in_memory().await.unwrap();
    let rows = [(0, 0, TargetState::RolledBack), (1, 0, TargetState::Installed), (2, 1, TargetState::Pending)];
    let d = left_behind(&fleet, &registry, DeploymentStatus::RollingBack, &rows, |t| t.endpoint.clone()).await;
    let why = "health gate failed at step 1 of 2 (50%): error rate 9% > 1% on edge-20";
    registry
        .append_event(Some(d.id), "rollback_started", &serde_json::json!({ "reason": why, "outcome": "rolled_back" }))
        .await
        .unwrap();

    let orch = Orchestrator::new(registry, client(), RolloutSettings { bake: ms(1), ..RolloutSettings::default() });
    let recovered = orch.recover().await.unwrap();
    assert_eq!(recovered.len(), 1);
    // Not paused, not "interrupted", not offered for resume: the rollback goes on.
    assert_eq!(recovered[0].status, DeploymentStatus::RollingBack);
    let reason = recovered[0].reason.clone().unwrap();
    assert_eq!(
        reason,
        format!(
            "{why}; Parley stopped while returning its agents and finishes it now (checked 3 agents: 1 on \
             auth-filter 2.1.0, all as journalled)"
        )
    );
    orch.wait("d-1").await;
    let rec = status_of(&orch, "d-1").await;
    assert_eq!(rec.status, DeploymentStatus::RolledBack, "{:?}", rec.reason);
    assert_eq!(rec.reason.as_deref(), Some(format!("{why}; 1 agent returned to auth-filter 2.0.3").as_str()));
    assert_eq!(rec.target("edge-20").unwrap().state, TargetState::RolledBack);
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")));
    let kinds: Vec<String> = orch.registry().events(rec.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "rollback_started",
            "reconciled",
            "rollback_resumed",
            "rollback_agent_started",
            "rollback_agent_succeeded",
            "finished"
        ]
    );
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_abort_is_rolling_back_until_the_agents_answer_and_refuses_other_controls_meanwhile() {
    let fleet = fleet("").await;
    let orch = orchestrator(ms(1)).await;
    let mut req = request(targets(&fleet, "ap-south")[..2].to_vec(), StrategyKind::Rolling);
    req.require_approval = Some(true);
    req.strategy.batch_size = Some(1);
    orch.start(req).await.unwrap();
    until(&orch, "d-1", |r| r.status == DeploymentStatus::Paused).await;
    // Hold the agent so that the rollback cannot finish at once.
    set_fault(&fleet, "edge-19", Some(crate::agent::faults::Fault::Hang));
    let rec = orch.abort("d-1", &alice()).await.unwrap();
    assert_eq!(rec.status, DeploymentStatus::RollingBack);
    let started = orch.registry().last_event(rec.id, "rollback_started").await.unwrap().unwrap();
    assert_eq!(started.data["outcome"], "aborted");
    assert_eq!(started.data["reason"], "aborted by alice at step 1 of 2");
    for e in [
        orch.abort("d-1", &alice()).await.unwrap_err(),
        orch.resume("d-1", &alice()).await.unwrap_err(),
        orch.rollback("d-1", &alice()).await.unwrap_err(),
    ] {
        assert!(e.to_string().starts_with("d-1 is rolling back (aborted by alice at step 1 of 2; returning"), "{e}");
    }
    // Nothing new may take its agents while they are being returned.
    let clash = orch.start(request(targets(&fleet, "ap-south")[..1].to_vec(), StrategyKind::Rolling)).await;
    assert!(matches!(&clash, Err(OrchestrateError::Overlap { deployment, .. }) if deployment == "d-1"), "{clash:?}");
    set_fault(&fleet, "edge-19", None);
    orch.wait("d-1").await;
    assert_eq!(status_of(&orch, "d-1").await.status, DeploymentStatus::Aborted);
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")));
    fleet.shutdown().await;
}

#[tokio::test]
async fn targets_are_reached_where_the_live_model_says_they_answer_now() {
    let fleet = fleet("").await;
    let registry = Registry::open_in_memory().await.unwrap();
    // Recorded at endpoints nothing listens on any more, as after a restart of the
    // embedded fleet.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let rows = [(0, 0, TargetState::Installed), (1, 0, TargetState::Installing), (2, 1, TargetState::Pending)];
    left_behind(&fleet, &registry, DeploymentStatus::Running, &rows, |_| gone.clone()).await;
    let orch = Orchestrator::new(registry, client(), RolloutSettings { bake: ms(1), ..RolloutSettings::default() });
    let poller = Arc::new(crate::topology::poller::Poller::new(
        fleet.inventory(),
        client(),
        Arc::new(crate::topology::Catalog::embedded().unwrap()),
        crate::topology::poller::PollerConfig::default(),
    ));
    poller.refresh().await;
    orch.watch_fleet(poller.handle());
    let recovered = orch.recover().await.unwrap();
    let reason = recovered[0].reason.clone().unwrap();
    assert!(reason.ends_with("checked 3 agents: 1 on auth-filter 2.1.0, 2 as journalled, corrected edge-20 was installing and runs auth-filter 2.0.3"), "{reason}");
    orch.resume("d-1", &alice()).await.unwrap();
    orch.wait("d-1").await;
    let rec = status_of(&orch, "d-1").await;
    assert_eq!(rec.status, DeploymentStatus::Succeeded, "{:?}", rec.reason);
    assert_eq!(versions(&fleet).await.iter().filter(|(_, v)| *v == on("2.1.0")).count(), 3);

    // And back, at the same live endpoints.
    orch.rollback("d-1", &alice()).await.unwrap();
    orch.wait("d-1").await;
    assert_eq!(status_of(&orch, "d-1").await.status, DeploymentStatus::RolledBack);
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")));
    fleet.shutdown().await;
}

#[tokio::test]
async fn an_agent_that_crashes_during_the_rollout_is_returned_once_it_answers_again() {
    let fleet = fleet("").await;
    let settings = RolloutSettings {
        bake: ms(300),
        install_timeout: Duration::from_secs(1),
        rollback_patience: Duration::from_secs(5),
        ..RolloutSettings::default()
    };
    let orch = Orchestrator::new(Registry::open_in_memory().await.unwrap(), client(), settings);
    let mut rx = orch.subscribe();
    let mut req = request(targets(&fleet, "ap-south")[..4].to_vec(), StrategyKind::Rolling);
    req.strategy.batch_size = Some(2);
    orch.start(req).await.unwrap();
    // edge-19 installed 2.1.0, then crashes during the bake: its gate cannot be read.
    next_matching(&mut rx, |e| matches!(e, RolloutEvent::AgentInstalled { agent, .. } if agent == "edge-19")).await;
    set_fault(&fleet, "edge-19", Some(crate::agent::faults::Fault::Crash));
    next_matching(&mut rx, |e| matches!(e, RolloutEvent::GateEvaluated { passed: false, .. })).await;
    // It comes back while the rollback is trying it.
    tokio::time::sleep(ms(600)).await;
    set_fault(&fleet, "edge-19", None);
    orch.wait("d-1").await;
    let rec = status_of(&orch, "d-1").await;
    assert_eq!(rec.status, DeploymentStatus::RolledBack, "{:?}", rec.reason);
    assert!(versions(&fleet).await.iter().all(|(_, v)| *v == on("2.0.3")), "every agent back on the old version");
    fleet.shutdown().await;
}
