//! Orchestration overhead of one rollout step over 1,000 demo agents on loopback, bake
//! time zero: journal, install on every agent over HTTP, read every agent's health,
//! judge the gate, journal the outcome; next to its floor (benches/common/floor.rs):
//! the same 2 requests per agent (a PUT, then a GET, each wave all at once as the
//! step sends them) with the same client settings against a bare HTTP server.
//! Each demo agent listens on its own port, so the floor is measured both ways: one
//! bare port per agent (the ratio uses this one, it is the demo fleet's pattern) and
//! one shared port (the simulator's pattern, for comparison).
//!
//! The journal is a registry file as `parley` keeps it (WAL, synchronous = FULL).
//!
//! `cargo bench --bench rollout_step` prints each run and the medians of 5;
//! `STEP_AGENTS=100,1000` and `STEP_RUNS` change the sizes and the number of runs.
//! The test-mode run (`cargo test --benches`) does one small step. Needs about four
//! file descriptors per agent: raise the open-file limit first (`ulimit -n 8192`).

use std::time::{Duration, Instant};

use hyper::body::Bytes;
use parley::agent::client::DEFAULT_IDLE_PER_HOST;
use parley::agent::demo::{demo_members, DemoFleet, DemoOptions};
use parley::agent::AgentClient;
use parley::ops::{Actor, Role, Scope, Strategy, StrategyKind};
use parley::orchestrate::{DeployRequest, Orchestrator, Placement, RolloutSettings, Target};
use parley::registry::Registry;

#[path = "common/floor.rs"]
mod floor;

/// `STEP_COUNT_SQL=1`: counts the statements sqlx runs (its `sqlx::query` events), by
/// first word, to say what one step asks of the registry. Off by default: a
/// subscriber costs time in the measured step.
mod sql_count {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    pub static COUNTS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

    struct Summary(Option<String>);
    impl tracing::field::Visit for Summary {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == "summary" {
                self.0 = Some(value.to_string());
            }
        }
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "summary" && self.0.is_none() {
                self.0 = Some(format!("{value:?}").trim_matches('"').to_string());
            }
        }
    }

    pub struct Layer;
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            if event.metadata().target() != "sqlx::query" {
                return;
            }
            let mut summary = Summary(None);
            event.record(&mut summary);
            let word = summary.0.unwrap_or_default().split_whitespace().next().unwrap_or("?").to_lowercase();
            if let Ok(mut c) = COUNTS.lock() {
                *c.entry(word).or_default() += 1;
            }
        }
    }

    pub fn install() {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer as _;
        let filter = tracing_subscriber::filter::Targets::new().with_target("sqlx::query", tracing::Level::TRACE);
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Layer.with_filter(filter)));
    }

    pub fn take() -> BTreeMap<String, usize> {
        COUNTS.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = std::env::var("STEP_AGENTS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![if quick { 50 } else { 1000 }]);
    let runs: usize = std::env::var("STEP_RUNS").ok().and_then(|n| n.parse().ok()).unwrap_or(if quick { 1 } else { 5 });
    let count_sql = std::env::var("STEP_COUNT_SQL").is_ok_and(|v| v == "1");
    if count_sql {
        sql_count::install();
    }
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
        eprintln!("no tokio runtime");
        return;
    };
    let mut rows = Vec::new();
    for agents in sizes {
        match rt.block_on(measure(agents, runs)) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("{agents} agents: {e}"),
        }
    }
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "| agents | floor, port per agent | floor, one shared port | Parley step | ratio to floor (port per agent) |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.1}x |",
            r.agents,
            floor::ms(r.floor_ports),
            floor::ms(r.floor_shared),
            floor::ms(r.parley),
            floor::ratio(r.parley, r.floor_ports)
        );
    }
}

struct Row {
    agents: usize,
    floor_ports: Duration,
    floor_shared: Duration,
    parley: Duration,
}

async fn measure(agents: usize, runs: usize) -> Result<Row, String> {
    let base = demo_members().map_err(|e| format!("the demo fleet does not load: {e}"))?;
    let members: Vec<_> = (0..agents)
        .map(|i| {
            let mut m = base[i % base.len()].clone();
            m.name = format!("bench-{i}");
            m
        })
        .collect();
    let options = DemoOptions { install_delay: Some(Duration::ZERO), ..DemoOptions::default() };
    let fleet = DemoFleet::start_members(members, options)
        .await
        .map_err(|e| format!("could not start {agents} agents ({e}); raise the open-file limit"))?;

    // The floor answers with the bodies a real demo agent answers, so both sides move
    // and parse the same bytes.
    let floor_client = floor::client(TIMEOUT, DEFAULT_IDLE_PER_HOST);
    let first = fleet.inventory().first().map(|e| e.endpoint.clone()).ok_or("no agents")?;
    let health = fetch(&floor_client, &format!("{first}/v1/health")).await?;
    let status = fetch(&floor_client, &format!("{first}/v1/status")).await?;
    let install_body = br#"{"version":"2.1.0"}"#;
    println!(
        "{agents} agents: a demo agent answers a status in {} bytes, a health read in {} bytes",
        status.len(),
        health.len()
    );
    let per_port = floor::BareServer::start(agents, health.clone(), status.clone())
        .await
        .map_err(|e| format!("could not open {agents} bare ports ({e}); raise the open-file limit"))?;
    let shared = floor::BareServer::start(1, health, status).await.map_err(|e| e.to_string())?;
    let shared_endpoints: Vec<String> = (0..agents).map(|_| shared.endpoints[0].clone()).collect();

    let client = AgentClient::new(TIMEOUT, None).map_err(|e| e.to_string())?;
    let settings = RolloutSettings { bake: Duration::ZERO, install_timeout: TIMEOUT, ..RolloutSettings::default() };
    let (mut f_ports, mut f_shared, mut steps) = (Vec::new(), Vec::new(), Vec::new());
    // One unmeasured round first, so that every measured round finds warm connections
    // on both sides.
    for run in 0..=runs {
        let (fp, failed_p) = floor::rollout_step(&floor_client, &per_port.endpoints, install_body).await;
        let (fs, failed_s) = floor::rollout_step(&floor_client, &shared_endpoints, install_body).await;
        if failed_p + failed_s > 0 {
            return Err(format!("{failed_p} + {failed_s} floor requests failed"));
        }
        let (from, to) = if run % 2 == 0 { ("2.0.3", "2.1.0") } else { ("2.1.0", "2.0.3") };
        // The registry `parley` keeps: a file in WAL mode with synchronous = FULL, so the
        // step's journal commits are real fsyncs (STEP_REGISTRY=memory for comparison).
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let registry = if std::env::var("STEP_REGISTRY").is_ok_and(|v| v == "memory") {
            Registry::open_in_memory().await
        } else {
            Registry::open(&dir.path().join("registry.db")).await
        }
        .map_err(|e| e.to_string())?;
        let orch = Orchestrator::new(registry, client.clone(), settings.clone());
        let request = request(&fleet, from, to, agents);
        sql_count::take();
        let started_utc = chrono::Utc::now();
        let started = Instant::now();
        let rec = orch.start(request).await.map_err(|e| format!("start failed: {e}"))?;
        orch.wait(&rec.name).await;
        let took = started.elapsed();
        let statements = sql_count::take();
        if !statements.is_empty() {
            println!("{agents} agents, run {run}: SQL statements in the step, by first word: {statements:?}");
        }
        let status = orch.registry().deployment_by_name(&rec.name).await.ok().flatten().map(|d| d.status);
        if std::env::var("STEP_PHASES").is_ok_and(|v| v == "1") {
            println!(
                "{agents} agents, run {run}: step from {} to {}: {}",
                started_utc.format("%H:%M:%S%.6f"),
                chrono::Utc::now().format("%H:%M:%S%.6f"),
                phases(&orch, &rec.name, started_utc).await
            );
        }
        if run == 0 {
            println!(
                "{agents} agents, warm-up: floor {} / {}, step {} ({status:?})",
                floor::ms(fp),
                floor::ms(fs),
                floor::ms(took)
            );
            continue;
        }
        println!(
            "{agents} agents, run {run}: floor (port per agent) {}, floor (one port) {}, Parley step {} ({status:?}), ratio {:.1}x",
            floor::ms(fp),
            floor::ms(fs),
            floor::ms(took),
            floor::ratio(took, fp)
        );
        f_ports.push(fp);
        f_shared.push(fs);
        steps.push(took);
    }
    let row = Row {
        agents,
        floor_ports: floor::median(&mut f_ports),
        floor_shared: floor::median(&mut f_shared),
        parley: floor::median(&mut steps),
    };
    println!(
        "median of {runs}: one rollout step over {agents} agents {} against a floor of {} (port per agent; {} on one port): {:.1}x",
        floor::ms(row.parley),
        floor::ms(row.floor_ports),
        floor::ms(row.floor_shared),
        floor::ratio(row.parley, row.floor_ports)
    );
    per_port.stop();
    shared.stop();
    fleet.shutdown().await;
    Ok(row)
}

/// `STEP_PHASES=1`: where the step's time went, read off the journal's own clock
/// (milliseconds after the step started at which each kind of event was first and
/// last journalled).
async fn phases(orch: &Orchestrator, name: &str, started: chrono::DateTime<chrono::Utc>) -> String {
    let Some(id) = name.strip_prefix("d-").and_then(|n| n.parse().ok()) else { return String::new() };
    let Ok(events) = orch.registry().events(id).await else { return String::new() };
    let mut seen: Vec<(String, i64, i64)> = Vec::new();
    for e in events {
        let at = (e.at - started).num_milliseconds();
        match seen.iter_mut().find(|(k, _, _)| *k == e.kind) {
            Some(entry) => entry.2 = at,
            None => seen.push((e.kind, at, at)),
        }
    }
    seen.iter()
        .map(|(k, first, last)| if first == last { format!("{k} @{first}") } else { format!("{k} @{first}..{last}") })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Bytes, String> {
    let resp = client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    resp.bytes().await.map_err(|e| format!("{url}: {e}"))
}

fn request(fleet: &DemoFleet, from: &str, to: &str, agents: usize) -> DeployRequest {
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
    DeployRequest {
        extension: "auth-filter".into(),
        version: to.into(),
        scope: Scope::fleet(),
        strategy: Strategy { steps: None, batch_size: Some(agents as u32), ..Strategy::of(StrategyKind::Rolling) },
        targets,
        actor: Actor::new("bench", "bench", Role::Operator),
        utterance: "bench".into(),
        require_approval: None,
        max_failures: None,
        queue: false,
        gate: Vec::new(),
    }
}
