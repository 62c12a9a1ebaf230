//! Orchestration overhead of one rollout step over 1,000 simulated agents on loopback,
//! bake time zero: journal, install on every agent over HTTP, read every agent's
//! health, judge the gate, journal the outcome. Each agent listens on its own port,
//! so raise the open-file limit first (`ulimit -n 8192`).
//!
//! `cargo bench --bench rollout_step` prints the median of a few runs.

use std::time::{Duration, Instant};

use parley::agent::demo::{demo_members, DemoFleet, DemoOptions};
use parley::agent::AgentClient;
use parley::ops::{Actor, Role, Scope, Strategy, StrategyKind};
use parley::orchestrate::{DeployRequest, Orchestrator, Placement, RolloutSettings, Target};
use parley::registry::Registry;

const AGENTS: usize = 1000;
const RUNS: usize = 5;

fn main() {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("no tokio runtime");
        return;
    };
    rt.block_on(run());
}

async fn run() {
    let Ok(base) = demo_members() else { return eprintln!("the demo fleet does not load") };
    let members: Vec<_> = (0..AGENTS)
        .map(|i| {
            let mut m = base[i % base.len()].clone();
            m.name = format!("bench-{i}");
            m
        })
        .collect();
    let options = DemoOptions { install_delay: Some(Duration::ZERO), ..DemoOptions::default() };
    let fleet = match DemoFleet::start_members(members, options).await {
        Ok(f) => f,
        Err(e) => return eprintln!("could not start {AGENTS} agents ({e}); raise the open-file limit"),
    };
    let Ok(client) = AgentClient::new(Duration::from_secs(10), None) else { return };
    let settings = RolloutSettings {
        bake: Duration::ZERO,
        install_timeout: Duration::from_secs(10),
        ..RolloutSettings::default()
    };
    let mut times = Vec::new();
    for run in 0..RUNS {
        let (from, to) = if run % 2 == 0 { ("2.0.3", "2.1.0") } else { ("2.1.0", "2.0.3") };
        let Ok(registry) = Registry::open_in_memory().await else { return };
        let orch = Orchestrator::new(registry, client.clone(), settings.clone());
        let targets: Vec<Target> = fleet
            .inventory()
            .into_iter()
            .map(|e| Target {
                agent: e.name.unwrap_or_default(),
                endpoint: e.endpoint,
                previous: Some(from.into()),
                placement: Placement::default(),
            })
            .collect();
        let request = DeployRequest {
            extension: "auth-filter".into(),
            version: to.into(),
            scope: Scope::fleet(),
            strategy: Strategy { steps: None, batch_size: Some(AGENTS as u32), ..Strategy::of(StrategyKind::Rolling) },
            targets,
            actor: Actor::new("bench", "bench", Role::Operator),
            utterance: "bench".into(),
            require_approval: None,
            max_failures: None,
            queue: false,
            gate: Vec::new(),
        };
        let started = Instant::now();
        let rec = match orch.start(request).await {
            Ok(r) => r,
            Err(e) => return eprintln!("start failed: {e}"),
        };
        orch.wait(&rec.name).await;
        let took = started.elapsed();
        let status = orch.registry().deployment_by_name(&rec.name).await.ok().flatten().map(|d| d.status);
        println!("run {}: one step over {AGENTS} agents in {:.0} ms ({status:?})", run + 1, took.as_secs_f64() * 1e3);
        times.push(took);
    }
    times.sort();
    println!("median: {:.0} ms for one rollout step over {AGENTS} agents", times[times.len() / 2].as_secs_f64() * 1e3);
    fleet.shutdown().await;
}
