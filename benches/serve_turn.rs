//! What the control plane adds: one conversational turn ("how healthy is ap-south?",
//! a 12-row answer, audited) in-process against the same turn through `parley serve`
//! on its Unix socket (client to reply: connect, HTTP/1.1, JSON both ways); and 50
//! WebSocket subscribers during a 1,000-agent rollout, each of which must receive every
//! progress event. Servers run in this process on temporary data directories.
//!
//! `cargo bench --bench serve_turn`; in test mode (`cargo test --benches`) each turn
//! runs once and the fan-out uses 48 agents and 5 subscribers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use parley::agent::simulate::{SimOptions, Simulator};
use parley::app::Parley;
use parley::client::{Client, ServerUrl};
use parley::config::{Config, FleetSource};
use parley::ops::Actor;

const UTTERANCE: &str = "how healthy is ap-south?";

fn config(dir: &std::path::Path) -> Config {
    let mut config = match Config::load(None) {
        Ok(c) => c,
        Err(e) => panic!("no default configuration: {e}"),
    };
    config.data_dir = dir.to_path_buf();
    config.db = None;
    config.rollout.bake = Duration::ZERO;
    config
}

/// Starts a server on `config` in this process; answers its client once it listens.
async fn start_server(config: Config) -> (Client, tokio::task::JoinHandle<()>) {
    let socket = parley::server::socket_path(&config.data_dir);
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let options = parley::server::ServeOptions {
            listen: None,
            tokens: None,
            read_only: false,
            grace: Duration::from_secs(5),
            idle_stop: None,
        };
        if let Err(e) = parley::server::serve(&config, &options, |_| {
            let _ = ready_tx.send(());
        })
        .await
        {
            eprintln!("the server failed: {e}");
        }
    });
    let _ = ready.await;
    (Client::new(ServerUrl::Unix(socket), None), task)
}

async fn stop_server(client: &Client, task: tokio::task::JoinHandle<()>) {
    let _ = client.request(axum::http::Method::POST, "/v1/stop", None).await;
    let _ = task.await;
}

fn turns(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let (Ok(local_dir), Ok(served_dir)) = (tempfile::tempdir(), tempfile::tempdir()) else { return };
    let parley = match rt.block_on(Parley::start(&config(local_dir.path()))) {
        Ok(p) => p,
        Err(e) => return eprintln!("Parley does not start: {e}"),
    };
    let mut session = parley.session(Actor::local("bench"));
    let (client, server) = rt.block_on(start_server(config(served_dir.path())));
    let session_id = "bench-session";
    // Both answer the same before anything is timed.
    let here = rt.block_on(session.handle(UTTERANCE));
    let there = match rt.block_on(client.turn(session_id, UTTERANCE, "bench")) {
        Ok(r) => r,
        Err(e) => return eprintln!("the server did not answer: {e}"),
    };
    assert_eq!(here.message, there.message);

    let mut group = c.benchmark_group("serve_turn");
    group.bench_function("in-process", |b| b.iter(|| rt.block_on(session.handle(UTTERANCE))));
    group.bench_function("through parley serve (unix socket)", |b| {
        b.iter(|| rt.block_on(client.turn(session_id, UTTERANCE, "bench")))
    });
    group.finish();
    rt.block_on(stop_server(&client, server));
    rt.block_on(parley.shutdown());
}

/// `subscribers` clients on the event stream while a rolling deploy covers
/// `agents` simulated agents; each counts the progress events of d-1.
async fn fan_out(agents: usize, subscribers: usize) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let mut options = SimOptions::new(agents);
    options.install_delay = Duration::from_millis(5);
    let sim = match Simulator::start(options).await {
        Ok(s) => s,
        Err(e) => return eprintln!("the simulator does not start: {e}"),
    };
    let inventory = dir.path().join("fleet.toml");
    if std::fs::write(&inventory, parley::topology::inventory::Inventory::to_toml(&sim.inventory())).is_err() {
        return;
    }
    let mut config = config(dir.path());
    config.fleet = FleetSource::Inventory(inventory);
    config.poll.concurrency = 256;
    let (client, server) = start_server(config).await;

    let counted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for _ in 0..subscribers {
        let mut events = match client.events().await {
            Ok(e) => e,
            Err(e) => return eprintln!("could not subscribe: {e}"),
        };
        let counted = Arc::clone(&counted);
        tasks.push(tokio::spawn(async move {
            let (mut progress, mut installed, mut lagged) = (0usize, 0usize, 0u64);
            while let Some(m) = events.next().await {
                match m["type"].as_str() {
                    Some("rollout") if m["deployment"] == "d-1" => {
                        progress += 1;
                        if m["event"]["event"] == "agent_installed" {
                            installed += 1;
                        }
                        if m["event"]["event"] == "finished" {
                            break;
                        }
                    }
                    Some("lagged") => lagged += m["missed"].as_u64().unwrap_or(0),
                    _ => {}
                }
            }
            if let Ok(mut c) = counted.lock() {
                c.push((progress, installed, lagged));
            }
        }));
    }
    let batch = (agents / 4).max(1);
    let started = Instant::now();
    let ask = format!("roll out auth-filter 2.1.0 to the fleet in batches of {batch}");
    let confirmed = match client.turn("fan-out", &ask, "bench").await {
        Ok(r) if r.needs_confirmation => client.turn("fan-out", "yes", "bench").await,
        other => other,
    };
    match confirmed {
        Ok(r) if r.deployment.as_deref() == Some("d-1") => {}
        Ok(r) => return eprintln!("the rollout did not start: {}", r.message),
        Err(e) => return eprintln!("the rollout did not start: {e}"),
    }
    for t in tasks {
        let _ = t.await;
    }
    let took = started.elapsed();
    let journal = client.get_json("/v1/deployments/d-1/journal").await.unwrap_or_default();
    let journalled_installs =
        journal["events"].as_array().map_or(0, |e| e.iter().filter(|e| e["kind"] == "install_succeeded").count());
    let counted = counted.lock().map(|c| c.clone()).unwrap_or_default();
    let every = counted.iter().all(|&(p, i, l)| p == counted[0].0 && i == agents && l == 0);
    println!(
        "fan-out: {agents} agents, {subscribers} subscribers, rollout {:.2} s: each received {} progress events ({} agent_installed; journal: {journalled_installs} installs); every subscriber got every event: {every}{}",
        took.as_secs_f64(),
        counted.first().map_or(0, |c| c.0),
        counted.first().map_or(0, |c| c.1),
        if every { String::new() } else { format!(" ({counted:?})") },
    );
    stop_server(&client, server).await;
    sim.shutdown().await;
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        return eprintln!("no tokio runtime");
    };
    let mut c = Criterion::default().configure_from_args();
    turns(&mut c, &rt);
    c.final_summary();
    let (agents, subscribers) = if quick { (48, 5) } else { (1000, 50) };
    rt.block_on(fan_out(agents, subscribers));
}
