//! The deployment lifecycle through the dialog session, on a real in-process demo
//! fleet: for a deployment in every state the lifecycle describes, every follow-up
//! the session offers, carried out through the session, is not refused; and a
//! control's confirmation counts only the agents it changes.

use std::path::Path;

use parley::app::Parley;
use parley::config::Config;
use parley::ops::{Actor, DeploymentStatus, Role, Scope, Strategy, StrategyKind};
use parley::orchestrate::lifecycle::{self, Stage};
use parley::orchestrate::{DeployRequest, Placement, Target, WAITING_FOR_PROMOTE};
use parley::registry::{DeploymentRecord, Hold, NewDeployment, NewTarget, TargetState};
use parley::reply::Outcome;

fn config(dir: &Path) -> Config {
    let path = dir.join("parley.toml");
    let text = "data_dir = \"state\"\n[rollout]\nbake_secs = 0.02\n[poll]\ninterval_ms = 200\n";
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path)).unwrap()
}

fn alice() -> Actor {
    Actor::new("alice", "test", Role::Operator)
}

/// A deployment in one state, as the registry would hold it.
#[derive(Clone)]
struct Shape {
    status: DeploymentStatus,
    hold: Option<Hold>,
    reason: Option<&'static str>,
    kind: StrategyKind,
    current_step: u32,
    step_count: u32,
    /// (plan step, state) of each target.
    targets: Vec<(u32, TargetState)>,
}

fn shape(
    status: DeploymentStatus,
    hold: Option<Hold>,
    reason: Option<&'static str>,
    targets: &[(u32, TargetState)],
) -> Shape {
    Shape {
        status,
        hold,
        reason,
        kind: StrategyKind::Rolling,
        current_step: 0,
        step_count: 2,
        targets: targets.to_vec(),
    }
}

/// One of every stage the lifecycle describes, and the blue-green switch. Running and
/// rolling back have no task behind them: the test must hold the drive lock throughout
/// (see [`hold_the_drive_lock`]), or the first control to take it would rightly take
/// them over as left by a dead Parley.
fn every_stage() -> Vec<Shape> {
    use DeploymentStatus as D;
    use TargetState as T;
    let switched = Shape {
        status: D::Paused,
        hold: Some(Hold::Promote),
        reason: Some("waiting for promote to retire blue: green is live"),
        kind: StrategyKind::BlueGreen,
        current_step: 1,
        step_count: 3,
        targets: vec![(0, T::Installed), (2, T::Pending)],
    };
    vec![
        shape(
            D::Pending,
            Some(Hold::Queued { behind: "d-999".into() }),
            Some("queued behind d-999"),
            &[(0, T::Pending)],
        ),
        shape(D::Running, None, None, &[(0, T::Installed)]),
        shape(D::Paused, Some(Hold::Paused), Some("paused by alice at step 1 of 2"), &[(0, T::Installed)]),
        shape(
            D::Paused,
            Some(Hold::Interrupted),
            Some("interrupted at step 1 of 2: Parley stopped"),
            &[(0, T::Installed)],
        ),
        shape(
            D::Paused,
            Some(Hold::Promote),
            Some("waiting for promote: step 1 of 2 passed its gate; promote starts step 2"),
            &[(0, T::Installed)],
        ),
        switched,
        shape(D::Succeeded, None, None, &[(0, T::Installed)]),
        shape(D::Failed, None, Some("rollback incomplete: edge-1 unreachable"), &[(0, T::Failed)]),
        shape(D::RolledBack, None, Some("health gate failed at step 1 of 2"), &[(0, T::RolledBack)]),
        shape(D::Aborted, None, Some("aborted by alice at step 1 of 2"), &[(0, T::RolledBack)]),
        shape(D::RollingBack, None, Some("aborted by alice at step 1 of 2"), &[(0, T::Installed)]),
    ]
}

/// Hands out agents no other deployment of the test uses, so no control is refused
/// for overlapping another.
struct Agents(Vec<(String, String, String)>);

impl Agents {
    fn of(parley: &Parley) -> Agents {
        let topo = parley.services().topology.snapshot();
        Agents(topo.agents().iter().map(|a| (a.name.to_string(), a.endpoint.clone(), a.region.clone())).rev().collect())
    }

    /// Name, endpoint and region of an agent not handed out before.
    fn take(&mut self) -> (String, String, String) {
        self.0.pop().expect("enough demo agents for every deployment")
    }
}

/// Starts a real two-step rollout on two agents of `agents` (so no other deployment of
/// the test uses them) that waits for promote after its first step, and waits until it
/// does. Its task stays alive, so this process holds the data directory's drive lock
/// until the rollout is aborted: as a live Parley would while the deployments the test
/// fabricates are its own, and none is taken over as left by a dead one.
async fn hold_the_drive_lock(parley: &Parley, agents: &mut Agents) -> DeploymentRecord {
    let topo = parley.services().topology.snapshot();
    let targets: Vec<Target> = (0..2)
        .map(|_| {
            let (name, _, _) = agents.take();
            let a = topo.agent(&name).expect("a demo agent");
            Target {
                agent: name,
                endpoint: a.endpoint.clone(),
                previous: a.extensions.get("auth-filter").cloned(),
                placement: Placement {
                    region: a.region.clone(),
                    zone: a.zone.clone(),
                    labels: a.labels.clone(),
                    capabilities: a.capabilities.clone(),
                },
            }
        })
        .collect();
    let orchestrator = &parley.services().orchestrator;
    let rec = orchestrator
        .start(DeployRequest {
            extension: "auth-filter".into(),
            version: "2.1.0".into(),
            scope: Scope::region(&targets[0].placement.region),
            strategy: Strategy { batch_size: Some(1), ..Strategy::of(StrategyKind::Rolling) },
            targets,
            actor: alice(),
            utterance: "roll out auth-filter 2.1.0 in batches of 1 with approval".into(),
            require_approval: Some(true),
            max_failures: None,
            queue: false,
            gate: Vec::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("the rollout that holds the drive lock: {e}"));
    assert_eq!(rec.step_count, 2);
    // Settled: its task is held (or has ended, which the asserts below would catch).
    orchestrator.wait_settled().await;
    let held = parley.services().registry.deployment_by_name(&rec.name).await.unwrap().unwrap();
    assert_eq!(held.status, DeploymentStatus::Paused, "{}: {:?}", held.name, held.reason);
    assert!(
        held.reason.as_deref().is_some_and(|r| r.starts_with(WAITING_FOR_PROMOTE)),
        "{}: {:?}",
        held.name,
        held.reason
    );
    held
}

async fn create(parley: &Parley, agents: &mut Agents, s: &Shape) -> DeploymentRecord {
    let registry = &parley.services().registry;
    let mut region = String::new();
    let targets: Vec<NewTarget> = s
        .targets
        .iter()
        .map(|(step, _)| {
            let (agent, endpoint, r) = agents.take();
            region = r;
            NewTarget { agent, endpoint, previous_version: Some("2.0.3".into()), step: *step }
        })
        .collect();
    let names: Vec<String> = targets.iter().map(|t| t.agent.clone()).collect();
    let new = NewDeployment {
        extension: "auth-filter".into(),
        version: "2.1.0".into(),
        scope: Scope::region(&region),
        strategy: Strategy::of(s.kind),
        status: s.status,
        actor: alice(),
        utterance: "made by the test".into(),
        step_count: s.step_count,
        targets,
    };
    let rec = registry.create_deployment(&new).await.unwrap_or_else(|e| panic!("create: {e}"));
    let written = match (&s.hold, s.reason) {
        (Some(hold), Some(reason)) => registry.set_held(rec.id, s.status, hold, reason).await,
        _ => registry.set_status(rec.id, s.status, s.reason).await,
    };
    written.unwrap_or_else(|e| panic!("{}: status: {e}", rec.name));
    registry.set_current_step(rec.id, s.current_step).await.unwrap_or_else(|e| panic!("{}: step: {e}", rec.name));
    for (name, (_, state)) in names.iter().zip(&s.targets) {
        registry
            .set_target_state(rec.id, name, *state, None)
            .await
            .unwrap_or_else(|e| panic!("{}: {name} {state:?}: {e}", rec.name));
    }
    registry.deployment_by_name(&rec.name).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_follow_up_offered_for_every_state_is_carried_out_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut agents = Agents::of(&parley);
    let holder = hold_the_drive_lock(&parley, &mut agents).await;
    let mut session = parley.session(alice());
    let mut tried = 0;
    for s in every_stage() {
        let shown = create(&parley, &mut agents, &s).await;
        let stage = Stage::of(&shown);
        let reply = session.handle(&format!("show deployment {}", shown.name)).await;
        assert_eq!(reply.outcome, Outcome::Answered, "{stage:?}: {}", reply.message);
        assert!(!reply.follow_ups.is_empty(), "{stage:?} offers nothing");
        for follow in &reply.follow_ups {
            // A fresh deployment in the same state for each, since carrying one out changes it.
            let fresh = create(&parley, &mut agents, &s).await;
            assert_eq!(Stage::of(&fresh), stage);
            let said = follow.replace(&shown.name, &fresh.name);
            let mut r = session.handle(&said).await;
            if r.needs_confirmation {
                r = session.handle("yes").await;
            }
            assert!(
                !matches!(r.outcome, Outcome::Refused | Outcome::Infeasible | Outcome::Failed | Outcome::NotUnderstood)
                    && r.feasible != Some(false),
                "{stage:?}: offered \"{said}\", which was refused: {:?} {}",
                r.outcome,
                r.message
            );
            tried += 1;
            // One change at a time: the next deployment is created on a quiet registry.
            parley.services().orchestrator.wait_settled().await;
        }
        // And the lifecycle's own list, which the TUI's keys come from.
        for c in lifecycle::offers(&shown) {
            assert_eq!(lifecycle::admits(&shown, c), Ok(()), "{stage:?} offers {c:?}");
        }
    }
    assert!(tried >= 20, "only {tried} follow-ups were tried");
    // Still held for promote: nothing took it over, and the lock was ours throughout.
    let still = parley.services().registry.deployment_by_name(&holder.name).await.unwrap().unwrap();
    assert_eq!((still.status, still.reason), (holder.status, holder.reason));
    parley.services().orchestrator.abort(&holder.name, &alice()).await.unwrap();
    parley.services().orchestrator.wait_idle().await;
    parley.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_started_by_someone_else_is_not_offered_an_abort_the_speaker_may_not_do() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut agents = Agents::of(&parley);
    let running = create(&parley, &mut agents, &every_stage()[1]).await;
    // Aborting alice's rollout is an admin's call; olga is an operator.
    let mut olga = parley.session(Actor::new("olga", "test", Role::Operator));
    let reply = olga.handle(&format!("show deployment {}", running.name)).await;
    let name = &running.name;
    assert_eq!(reply.follow_ups, [format!("show deployment {name}"), format!("pause {name}")]);
    parley.shutdown().await;
}

/// A paused rollout on the 12 agents of ap-south, the first `installed` of them upgraded.
async fn paused_in_ap_south(parley: &Parley, installed: usize) -> DeploymentRecord {
    let topo = parley.services().topology.snapshot();
    let registry = &parley.services().registry;
    let region: Vec<(String, String)> =
        topo.region_agents("ap-south").map(|a| (a.name.to_string(), a.endpoint.clone())).collect();
    let new = NewDeployment {
        extension: "auth-filter".into(),
        version: "2.1.0".into(),
        scope: Scope::region("ap-south"),
        strategy: Strategy::of(StrategyKind::Rolling),
        status: DeploymentStatus::Paused,
        actor: alice(),
        utterance: "roll out auth-filter 2.1.0 to ap-south".into(),
        step_count: 1,
        targets: region
            .iter()
            .map(|(agent, endpoint)| NewTarget {
                agent: agent.clone(),
                endpoint: endpoint.clone(),
                previous_version: Some("2.0.3".into()),
                step: 0,
            })
            .collect(),
    };
    let rec = registry.create_deployment(&new).await.unwrap();
    registry.set_held(rec.id, DeploymentStatus::Paused, &Hold::Paused, "paused by alice at step 1 of 1").await.unwrap();
    for (agent, _) in region.iter().take(installed) {
        registry.set_target_state(rec.id, agent, TargetState::Installed, None).await.unwrap();
    }
    rec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_counts_only_the_agents_still_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut session = parley.session(alice());

    let half = paused_in_ap_south(&parley, 6).await;
    let r = session.handle(&format!("resume {}", half.name)).await;
    assert!(r.needs_confirmation, "{}", r.message);
    assert_eq!(
        r.message,
        format!(
            "Resume {}: install auth-filter 2.1.0 on the 6 of 12 agents that do not run it yet. This needs \
             confirmation because it changes 6 of 12 agents in ap-south (more than a quarter). Proceed? (yes/no)",
            half.name
        )
    );
    let r = session.handle("no").await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    parley.services().orchestrator.abort(&half.name, &alice()).await.unwrap();
    parley.services().orchestrator.wait(&half.name).await;

    // Every agent already upgraded: nothing changes, so nothing is claimed or asked.
    let all = paused_in_ap_south(&parley, 12).await;
    let r = session.handle(&format!("resume {}", all.name)).await;
    assert!(!r.needs_confirmation, "{}", r.message);
    assert_eq!(r.outcome, Outcome::Done, "{}", r.message);
    assert!(!r.message.contains("12 of 12"), "{}", r.message);
    assert!(r.message.starts_with(&format!("Resumed {}:", all.name)), "{}", r.message);
    parley.services().orchestrator.wait_idle().await;
    parley.shutdown().await;
}
