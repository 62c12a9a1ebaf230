//! Failover latency: time from a confirmed failover to the routing table journalled
//! and every agent of the source region accepting its drain, on the demo fleet (48
//! agents) and on 1,000 simulated agents (both in-process simulators on loopback
//! HTTP, with an on-disk registry in WAL mode). Each round fails eu-west over to
//! us-east, then fails it back and returns its agents, so every round does the same work.
//! Run with `cargo bench --bench failover`; `FAILOVER_ROUNDS` changes the rounds.

use std::time::{Duration, Instant};

use parley::agent::simulate::{SimOptions, Simulator};
use parley::app::Parley;
use parley::config::{Config, FleetSource};
use parley::ops::{Actor, Role};

async fn measure(agents: usize, rounds: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimOptions::new(agents)).await.unwrap();
    let inventory = dir.path().join("fleet.toml");
    std::fs::write(&inventory, parley::topology::inventory::Inventory::to_toml(&sim.inventory())).unwrap();
    let mut config = Config::load(None).unwrap();
    config.data_dir = dir.path().to_path_buf();
    config.db = None;
    config.fleet = FleetSource::Inventory(inventory);
    config.poll.concurrency = 256;
    let parley = Parley::start(&config).await.unwrap();
    let services = parley.services().clone();
    let actor = Actor::new("bench", "bench", Role::Admin);
    let mut times = Vec::new();
    for _ in 0..rounds {
        services.poller.refresh().await;
        let start = Instant::now();
        services.router.failover("eu-west", Some("us-east"), &actor, "bench").await.unwrap();
        let moved = services.router.set_serving("eu-west", false, &actor).await;
        times.push(start.elapsed());
        assert!(moved.failed.is_empty(), "{:?}", moved.failed);
        services.router.failback("eu-west", &actor, "bench").await.unwrap();
        services.router.set_serving("eu-west", true, &actor).await;
    }
    parley.shutdown().await;
    times
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let rounds =
        std::env::var("FAILOVER_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(if quick { 1 } else { 10 });
    let rt = tokio::runtime::Runtime::new().unwrap();
    for agents in [48, 1000] {
        let mut t = rt.block_on(measure(agents, rounds));
        t.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "failover eu-west -> us-east, {agents} agents ({} drained): median {:.1} ms, min {:.1} ms, max {:.1} ms over {} rounds",
            agents / 4,
            ms(t[t.len() / 2]),
            ms(t[0]),
            ms(t[t.len() - 1]),
            t.len()
        );
    }
}
