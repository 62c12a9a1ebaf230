//! Scale of a live fleet: one full refresh of 10,000 simulated agents over loopback
//! HTTP, a feasibility check of a fleet-wide deploy on them, and the resident memory
//! of the process holding the model. The simulator runs as its own process
//! (`parley fleet simulate`), so the memory figure is Parley's alone.
//! Each refresh is measured next to its floor (benches/common/floor.rs): the same
//! GETs with the same client settings and concurrency against a bare HTTP server on
//! one port, as the simulator serves every agent from one port.
//! Run with `cargo bench --bench fleet_scale`; `FLEET_AGENTS=1000,10000` changes the
//! sizes (a table at the end), `FLEET_RUNS` the number of warm refreshes.

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

#[path = "common/floor.rs"]
mod floor;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once quickly.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("FLEET_AGENTS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![if quick { 200 } else { 10_000 }]);
    let runs: usize =
        std::env::var("FLEET_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(if quick { 1 } else { 5 });
    let mut rows = Vec::new();
    for agents in sizes {
        match measure(agents, runs, quick) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("{agents} agents: {e}"),
        }
    }
    if rows.is_empty() {
        return;
    }
    println!();
    println!("| agents | floor (one port, 64 in flight) | Parley warm refresh | ratio | cold refresh | feasibility median | RSS |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1}x | {} | {:?} | {} MiB |",
            r.agents,
            floor::ms(r.floor),
            floor::ms(r.warm),
            floor::ratio(r.warm, r.floor),
            floor::ms(r.cold),
            r.feasibility,
            r.rss_mib
        );
    }
}

struct Row {
    agents: usize,
    floor: Duration,
    warm: Duration,
    cold: Duration,
    feasibility: Duration,
    rss_mib: u64,
}

fn measure(agents: usize, runs: usize, quick: bool) -> Result<Row, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("no temporary directory: {e}"))?;
    let out = dir.path().join("sim.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["fleet", "simulate", "--agents", &agents.to_string(), "--inventory-out"])
        .arg(&out)
        .env_remove("PARLEY_AGENT_TOKEN")
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start the simulator: {e}"))?;
    let result = with_simulator(agents, runs, quick, &out);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn with_simulator(agents: usize, runs: usize, quick: bool, out: &std::path::Path) -> Result<Row, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let inventory = loop {
        match Inventory::load(out) {
            Ok(inv) if inv.len() == agents => break inv,
            _ if Instant::now() > deadline => return Err("the simulator wrote no inventory".into()),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let urls: Vec<String> = inventory.iter().map(|e| format!("{}/v1/status", e.endpoint)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    runtime.block_on(async {
        let rss_before = rss_kib();
        let config = PollerConfig::default();
        // The floor: the same GETs, same client settings and concurrency, answered by a
        // bare server on its own runtime (the simulator is another process) with the
        // body a simulated agent answers.
        let floor_client = floor::client(Duration::from_secs(10), config.concurrency);
        let body = match urls.first() {
            Some(u) => floor_client.get(u).send().await.map_err(|e| e.to_string())?.bytes().await.map_err(|e| e.to_string())?,
            None => return Err("no agents".to_string()),
        };
        let bare = floor::start_on_own_thread(body, 2).map_err(|e| format!("no bare server: {e}"))?;
        let bare_urls: std::sync::Arc<Vec<String>> = std::sync::Arc::new(
            inventory
                .iter()
                .map(|e| format!("{bare}{}/v1/status", e.endpoint.find("/a/").map_or("", |at| &e.endpoint[at..])))
                .collect(),
        );
        // As `parley` builds it: as many idle connections per host as polls in flight.
        let client = AgentClient::with_idle_per_host(Duration::from_secs(10), None, config.concurrency);
        let (Ok(client), Ok(catalog)) = (client, Catalog::embedded()) else {
            return Err("no client or catalog".to_string());
        };
        let concurrency = config.concurrency;
        let poller = Poller::new(inventory, client, Arc::new(catalog), config);
        let (mut floors, mut times) = (Vec::new(), Vec::new());
        for run in 0..=runs {
            let (f, failed) = floor::refresh(&floor_client, std::sync::Arc::clone(&bare_urls), concurrency).await;
            let stats = poller.refresh().await;
            if failed > 0 || stats.answered != agents {
                return Err(format!("{failed} floor requests failed; Parley: {stats:?}"));
            }
            println!(
                "{agents} agents, refresh {run}{}: floor {}, Parley {}, ratio {:.1}x",
                if run == 0 { " (cold)" } else { "" },
                floor::ms(f),
                floor::ms(stats.elapsed),
                floor::ratio(stats.elapsed, f)
            );
            floors.push(f);
            times.push(stats.elapsed);
        }
        let cold = times[0];
        let warm = floor::median(&mut times[1..].to_vec());
        let floor_warm = floor::median(&mut floors[1..].to_vec());
        println!(
            "full refresh of {agents} agents over loopback HTTP: cold {}, warm median of {runs} {} against a floor of {}: {:.1}x",
            floor::ms(cold),
            floor::ms(warm),
            floor::ms(floor_warm),
            floor::ratio(warm, floor_warm)
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
        Ok(Row { agents, floor: floor_warm, warm, cold, feasibility: checks[n / 2], rss_mib: rss / 1024 })
    })
}
