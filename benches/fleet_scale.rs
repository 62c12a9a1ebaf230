//! Scale of a live fleet: one full refresh of 10,000 simulated agents over loopback
//! HTTP, a feasibility check of a fleet-wide deploy on them, and the resident memory
//! of the process holding the model. The simulator runs as its own process
//! (`parley fleet simulate`), so the memory figure is Parley's alone.
//! Run with `cargo bench --bench fleet_scale`; `FLEET_AGENTS` changes the size.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley::agent::AgentClient;
use parley::feasibility::Busy;
use parley::ops::{Operation, Scope};
use parley::topology::inventory::Inventory;
use parley::topology::poller::{Poller, PollerConfig};
use parley::topology::Catalog;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let agents: usize =
        std::env::var("FLEET_AGENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(if quick { 200 } else { 10_000 });
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return eprintln!("no temporary directory: {e}"),
    };
    let out = dir.path().join("sim.toml");
    let child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["fleet", "simulate", "--agents", &agents.to_string(), "--inventory-out"])
        .arg(&out)
        .env_remove("PARLEY_AGENT_TOKEN")
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return eprintln!("could not start the simulator: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let inventory = loop {
        match Inventory::load(&out) {
            Ok(inv) if inv.len() == agents => break inv,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                return eprintln!("the simulator wrote no inventory");
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return eprintln!("no runtime: {e}"),
    };
    runtime.block_on(async {
        let rss_before = rss_kib();
        let config = PollerConfig::default();
        // As `parley` builds it: as many idle connections per host as polls in flight.
        let client = AgentClient::with_idle_per_host(Duration::from_secs(10), None, config.concurrency);
        let (Ok(client), Ok(catalog)) = (client, Catalog::embedded()) else {
            return eprintln!("no client or catalog");
        };
        let poller = Poller::new(inventory, client, Arc::new(catalog), config);
        let mut times = Vec::new();
        for _ in 0..if quick { 2 } else { 6 } {
            let stats = poller.refresh().await;
            assert_eq!(stats.answered, agents, "{stats:?}");
            times.push(stats.elapsed);
        }
        let cold = times[0];
        let mut warm = times[1..].to_vec();
        warm.sort();
        println!(
            "full refresh of {agents} agents over loopback HTTP: cold {cold:?}, warm median {:?} (min {:?}, max {:?})",
            warm[warm.len() / 2],
            warm[0],
            warm[warm.len() - 1]
        );

        let topo = poller.handle().snapshot();
        let op = Operation::deploy("auth-filter", "2.1.0", Scope::fleet());
        let busy = Busy::new();
        let n = if quick { 10 } else { 200 };
        let mut checks = Vec::with_capacity(n);
        for _ in 0..n {
            let start = Instant::now();
            let result = parley::dialog::check(std::hint::black_box(&op), &topo, &busy);
            checks.push(start.elapsed());
            std::hint::black_box(result.is_ok());
        }
        checks.sort();
        println!(
            "feasibility of a fleet-wide deploy on {agents} agents: median {:?}, p99 {:?}",
            checks[n / 2],
            checks[n * 99 / 100]
        );
        let rss = rss_kib();
        println!(
            "resident memory holding the fleet: {} MiB (before the poller: {} MiB)",
            rss / 1024,
            rss_before / 1024
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}
