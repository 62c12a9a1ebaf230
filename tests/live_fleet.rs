//! A live fleet: real `parley agent` processes and a `parley fleet simulate` process,
//! killed, frozen and broken on cue, watched by the real poller; a partitioned region
//! refused by the conversation; spurious suspects counted under injected delay.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley::agent::AgentClient;
use parley::topology::inventory::{Inventory, InventoryEntry};
use parley::topology::poller::{Poller, PollerConfig};
use parley::topology::{Catalog, Liveness, RegionHealth};

const TOKEN: &str = "live-s3cret";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-CONT").arg(self.0.id().to_string()).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `parley agent` and returns it with its base URL (read from its stderr).
fn start_agent(data: &Path, name: &str, region: &str, listen: &str) -> (Proc, String) {
    start_agent_with(data, name, region, listen, &[])
}

/// [`start_agent`] with more `parley agent` arguments.
fn start_agent_with(data: &Path, name: &str, region: &str, listen: &str, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(common::parley_bin())
        .arg("--data-dir")
        .arg(data)
        .args(["agent", "--name", name, "--region", region, "--zone", &format!("{region}-a")])
        .args(["--labels", "env=production,tier=edge", "--extensions", "auth-filter@2.0.3", "--listen", listen])
        .args(extra)
        .env("PARLEY_AGENT_TOKEN", TOKEN)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    (Proc(child), url)
}

fn start_simulator(data: &Path, agents: usize, faults: &str, token: Option<&str>) -> (Proc, Vec<InventoryEntry>) {
    let out = data.join("sim.toml");
    let mut cmd = Command::new(common::parley_bin());
    cmd.arg("--data-dir").arg(data).args(["fleet", "simulate", "--agents", &agents.to_string(), "--faults", faults]);
    cmd.arg("--inventory-out").arg(&out).stderr(Stdio::null());
    match token {
        Some(t) => cmd.env("PARLEY_AGENT_TOKEN", t),
        None => cmd.env_remove("PARLEY_AGENT_TOKEN"),
    };
    let child = Proc(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(inv) = Inventory::load(&out) {
            if inv.len() == agents {
                return (child, inv);
            }
        }
        assert!(Instant::now() < deadline, "the simulator wrote no inventory");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(p: &Proc, sig: &str) {
    assert!(Command::new("kill").arg(format!("-{sig}")).arg(p.0.id().to_string()).status().unwrap().success());
}

fn entry(url: &str, name: &str) -> InventoryEntry {
    InventoryEntry { endpoint: url.to_string(), name: Some(name.to_string()), region: None, zone: None }
}

/// Polls until `name` has liveness `want`; answers how long that took.
async fn until(poller: &Poller, name: &str, want: &[Liveness], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        poller.refresh().await;
        if let Some(a) = poller.handle().snapshot().agent(name) {
            if want.contains(&a.liveness) {
                return start.elapsed();
            }
        }
        assert!(start.elapsed() < limit, "{name} not {want:?} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_frozen_and_crashed_agents_turn_suspect_then_down_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let (killed, killed_url) = start_agent(dir.path(), "edge-101", "eu-north", "127.0.0.1:0");
    let (frozen, frozen_url) = start_agent(&dir.path().join("b"), "edge-102", "eu-north", "127.0.0.1:0");
    let (_sim, sim_inv) = start_simulator(dir.path(), 8, "", Some(TOKEN));
    let mut inventory = vec![entry(&killed_url, "edge-101"), entry(&frozen_url, "edge-102")];
    inventory.extend(sim_inv.iter().cloned());

    let client = AgentClient::new(Duration::from_millis(250), Some(TOKEN.into())).unwrap();
    // A request without the token is refused and changes nothing.
    let anonymous = AgentClient::new(Duration::from_secs(2), None).unwrap();
    assert!(anonymous.install(&killed_url, "auth-filter", "1.0.0").await.is_err());
    client.install(&killed_url, "auth-filter", "2.1.0").await.unwrap();

    let config = PollerConfig {
        interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(300),
        down_after: Duration::from_millis(800),
        ..PollerConfig::default()
    };
    let poller = Poller::new(inventory, client.clone(), Arc::new(Catalog::embedded().unwrap()), config);
    let stats = poller.refresh().await;
    assert_eq!((stats.answered, stats.failed), (10, 0));
    let crashed = sim_inv[3].name.clone().unwrap();

    signal(&killed, "KILL");
    signal(&frozen, "STOP");
    let http = reqwest::Client::new();
    let control = format!("{}/v1/faults", sim_inv[0].endpoint.split("/a/").next().unwrap());
    let resp = http.post(&control).bearer_auth(TOKEN).body(format!("crash/agent:{crashed}")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Suspect within suspect_after plus one interval, one request timeout and slack
    // for a busy 2-core machine; down likewise.
    let slack = Duration::from_millis(100 + 250 + 450);
    for name in ["edge-101", "edge-102", crashed.as_str()] {
        let t = until(&poller, name, &[Liveness::Suspect, Liveness::Down], Duration::from_secs(5)).await;
        assert!(t <= config.suspect_after + slack, "{name} suspect after {t:?}");
    }
    let t = until(&poller, "edge-102", &[Liveness::Down], Duration::from_secs(5)).await;
    assert!(t <= config.down_after + slack, "down after {t:?}");
    for name in ["edge-101", crashed.as_str()] {
        until(&poller, name, &[Liveness::Down], Duration::from_millis(500)).await;
    }
    let snapshot = poller.handle().snapshot();
    assert_eq!(snapshot.agent("edge-101").unwrap().extensions["auth-filter"], "2.1.0", "last known data kept");
    assert_eq!(snapshot.region_health("eu-north"), RegionHealth::Partitioned);

    // Back: the frozen one thaws, the killed one restarts on its port with its state
    // file, the crashed one is repaired.
    signal(&frozen, "CONT");
    let port = killed_url.rsplit(':').next().unwrap();
    drop(killed);
    let (_restarted, _) = start_agent(dir.path(), "edge-101", "eu-north", &format!("127.0.0.1:{port}"));
    assert_eq!(http.delete(&control).bearer_auth(TOKEN).send().await.unwrap().status(), 200);
    for name in ["edge-101", "edge-102", crashed.as_str()] {
        until(&poller, name, &[Liveness::Healthy, Liveness::Degraded], Duration::from_secs(5)).await;
    }
    let snapshot = poller.handle().snapshot();
    assert_eq!(snapshot.agent("edge-101").unwrap().extensions["auth-filter"], "2.1.0", "the state file survived");
    assert_ne!(snapshot.region_health("eu-north"), RegionHealth::Partitioned);
}

/// Two real `parley agent` processes register with Parley's registration endpoint.
/// The one stopped with SIGTERM deregisters on its way out and leaves the model at
/// once; the one killed with SIGKILL cannot, and is reported down as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_stopped_with_sigterm_deregisters_while_a_killed_one_turns_down() {
    let dir = tempfile::tempdir().unwrap();
    let client = AgentClient::new(Duration::from_millis(250), Some(TOKEN.into())).unwrap();
    let config = PollerConfig {
        interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(300),
        down_after: Duration::from_millis(800),
        ..PollerConfig::default()
    };
    let poller = Arc::new(Poller::new(Vec::new(), client, Arc::new(Catalog::embedded().unwrap()), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(parley::topology::registration::serve(
        listener,
        Arc::clone(&poller),
        Some(TOKEN.into()),
        async move {
            let _ = stopped.await;
        },
    ));
    let register = ["--register", url.as_str(), "--heartbeat-ms", "100"];
    let (mut leaving, _) = start_agent_with(&dir.path().join("a"), "edge-201", "eu-north", "127.0.0.1:0", &register);
    let (killed, _) = start_agent_with(&dir.path().join("b"), "edge-202", "eu-north", "127.0.0.1:0", &register);
    let deadline = Instant::now() + Duration::from_secs(10);
    while poller.inventory().len() < 2 {
        assert!(Instant::now() < deadline, "the agents did not register: {:?}", poller.inventory());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = poller.refresh().await;
    assert_eq!((stats.answered, stats.failed), (2, 0));

    signal(&leaving, "TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = leaving.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "parley agent did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "a graceful stop exits cleanly: {status}");
    // Gone from the model the moment it left, without waiting for a pass.
    let names = |p: &Poller| p.handle().snapshot().agents().iter().map(|a| a.name.to_string()).collect::<Vec<_>>();
    assert_eq!(names(&poller), ["edge-202"]);

    signal(&killed, "KILL");
    until(&poller, "edge-202", &[Liveness::Down], Duration::from_secs(5)).await;
    // Passes since have neither polled the one that left nor brought it back.
    assert_eq!(names(&poller), ["edge-202"]);
    assert_eq!(poller.inventory().len(), 1);
    assert_eq!(poller.handle().snapshot().region_health("eu-north"), RegionHealth::Partitioned);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Real `parley agent` processes and the registration endpoint: an agent killed and
/// started again on another port (same data directory, so the same credential) moves
/// its registration instead of leaving a twin, while a second process claiming its
/// name from elsewhere is refused for as long as the agent answers Parley's polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_moves_its_registration_and_an_impostor_process_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let client = AgentClient::new(Duration::from_millis(250), Some(TOKEN.into())).unwrap();
    let config = PollerConfig {
        interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(300),
        down_after: Duration::from_millis(800),
        ..PollerConfig::default()
    };
    let poller = Arc::new(Poller::new(Vec::new(), client, Arc::new(Catalog::embedded().unwrap()), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(parley::topology::registration::serve(
        listener,
        Arc::clone(&poller),
        Some(TOKEN.into()),
        async move {
            let _ = stopped.await;
        },
    ));
    let endpoints = |p: &Poller| p.inventory().iter().map(|e| e.endpoint.clone()).collect::<Vec<_>>();
    let wait_for = |want: String| {
        let poller = Arc::clone(&poller);
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            while endpoints(&poller) != [want.clone()] {
                assert!(Instant::now() < deadline, "inventory {:?}, want [{want}]", endpoints(&poller));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let register = ["--register", url.as_str(), "--heartbeat-ms", "100"];
    let data = dir.path().join("a");
    let (first, first_url) = start_agent_with(&data, "edge-401", "eu-north", "127.0.0.1:0", &register);
    wait_for(first_url.clone()).await;
    poller.refresh().await;
    assert_eq!(poller.handle().snapshot().agent("edge-401").unwrap().liveness, Liveness::Healthy);
    let credential = std::fs::read_to_string(data.join("agents").join("edge-401.credential")).unwrap();
    assert_eq!(credential.len(), 64);

    // A second process with the same name, its own data directory and the token.
    let (_impostor, impostor_url) =
        start_agent_with(&dir.path().join("b"), "edge-401", "eu-north", "127.0.0.1:0", &register);
    for _ in 0..10 {
        poller.refresh().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(endpoints(&poller), std::slice::from_ref(&first_url), "the impostor at {impostor_url} is not polled");
    let named = poller.handle().snapshot().agents().iter().filter(|a| a.name == "edge-401").count();
    assert_eq!(named, 1);

    // Killed and started again at once on a new port: the old endpoint is not yet
    // proven dead, but the credential proves who it is.
    signal(&first, "KILL");
    drop(first);
    let (_again, again_url) = start_agent_with(&data, "edge-401", "eu-north", "127.0.0.1:0", &register);
    assert_ne!(again_url, first_url);
    wait_for(again_url.clone()).await;
    poller.refresh().await;
    let model = poller.handle().snapshot();
    let twins: Vec<&str> =
        model.agents().iter().filter(|a| a.name == "edge-401").map(|a| a.endpoint.as_str()).collect();
    assert_eq!(twins, [again_url.as_str()], "no stale twin");
    assert_eq!(model.agent("edge-401").unwrap().liveness, Liveness::Healthy);

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[test]
fn a_deploy_into_a_partitioned_region_is_refused_with_the_reason_and_only_looks_as_alternatives() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, _) = start_simulator(dir.path(), 48, "partition:eu-west", None);
    let config = dir.path().join("parley.toml");
    std::fs::write(
        &config,
        "[fleet]\ninventory = \"sim.toml\"\ntimeout_ms = 300\n[poll]\ninterval_ms = 200\nsuspect_after_ms = 400\ndown_after_ms = 800\n",
    )
    .unwrap();
    let mut chat = common::Chat::start(&dir.path().join("state"), &["--config", config.to_str().unwrap()]);
    let health = chat.eventually("how healthy is eu-west?", |t| {
        t["message"].as_str().is_some_and(|m| m.contains("partitioned") && m.contains("since"))
    });
    assert!(health["message"].as_str().unwrap().contains("down"), "{health}");
    // A question changes nothing, so its follow-ups push no change into production:
    // failing eu-west over is for the operator to ask for, not a suggestion.
    assert!(!health["follow_ups"].as_array().unwrap().iter().any(|f| f == "fail over eu-west"), "{health}");
    let turn = chat.say("roll out auth-filter 2.1.0 to eu-west");
    assert_eq!(turn["feasible"], false, "{turn}");
    let message = turn["message"].as_str().unwrap();
    assert!(message.contains("eu-west is partitioned"), "{message}");
    let follow: Vec<&str> = turn["follow_ups"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    // Looks only: a rollout to another (production) region is not what was asked.
    assert_eq!(follow, ["how healthy is eu-west?", "show routing"]);
    chat.kill();
}

#[test]
fn a_flapping_agent_is_named_in_the_health_reply_and_its_alerts_are_held_back() {
    let dir = tempfile::tempdir().unwrap();
    // edge-7 of a 12-agent simulated fleet is in eu-west; 500 ms up, 500 ms crashed:
    // healthy, suspect, down, healthy again about every second with these settings.
    let (_sim, _) = start_simulator(dir.path(), 12, "flap:500/agent:edge-7", None);
    let config = dir.path().join("parley.toml");
    std::fs::write(
        &config,
        "[fleet]\ninventory = \"sim.toml\"\ntimeout_ms = 300\n[poll]\ninterval_ms = 100\nsuspect_after_ms = 200\n\
         down_after_ms = 400\nflap_threshold = 4\nflap_window_ms = 10000\n",
    )
    .unwrap();
    let mut chat = common::Chat::start(&dir.path().join("state"), &["--config", config.to_str().unwrap()]);
    let turn = chat.eventually("how healthy is eu-west?", |t| {
        t["message"].as_str().is_some_and(|m| m.contains("edge-7 is flapping"))
    });
    let message = turn["message"].as_str().unwrap();
    // "... edge-7 is flapping: N state changes in the last 10 s; alerts for it are held back."
    let (_, sentence) = message.split_once("edge-7 is flapping: ").unwrap();
    let (count, rest) = sentence.split_once(' ').unwrap();
    let changes: u64 = count.parse().unwrap_or_else(|_| panic!("{message}"));
    assert!(changes >= 4, "flagged at the threshold of 4: {message}");
    assert_eq!(rest, "state changes in the last 10 s; alerts for it are held back.", "{message}");
    let row = turn["details"]["agents"].as_array().unwrap().iter().find(|r| r["agent"] == "edge-7").unwrap().clone();
    assert_eq!(row["flapping"]["window_ms"], 10_000, "{row}");
    assert!(row["flapping"]["changes"].as_u64().unwrap() >= 4, "{row}");
    let follow: Vec<&str> = turn["follow_ups"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
    assert!(follow.contains(&"show agent edge-7"), "{follow:?}");
    // Nobody else in the region is called flapping.
    assert_eq!(message.matches("is flapping").count(), 1, "{message}");
    chat.kill();
}

/// Under injected delay of 50-250 ms against a 200 ms request timeout, about a
/// quarter of the answers are late; the grace period must keep spurious suspects rare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_delay_gives_few_false_suspects() {
    let mut options = parley::agent::simulate::SimOptions::new(40);
    options.faults = parley::agent::faults::FaultSpec::parse("slow:50-250").unwrap();
    let sim = parley::agent::simulate::Simulator::start(options).await.unwrap();
    let client = AgentClient::new(Duration::from_millis(200), None).unwrap();
    let config = PollerConfig {
        interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(1000),
        down_after: Duration::from_millis(2000),
        ..PollerConfig::default()
    };
    let poller = Poller::new(sim.inventory(), client, Arc::new(Catalog::embedded().unwrap()), config);
    let mut events = poller.events();
    let passes = 20;
    let mut failed = 0;
    for _ in 0..passes {
        failed += poller.refresh().await.failed;
    }
    let suspects = std::iter::from_fn(|| events.try_recv().ok())
        .filter(
            |e| matches!(e, parley::topology::poller::TopologyEvent::LivenessChanged { to, .. } if !to.is_reachable()),
        )
        .count();
    let probes = 40 * passes;
    let rate = suspects as f64 / probes as f64;
    eprintln!("{failed} of {probes} probes late; {suspects} spurious suspects (rate {rate:.4})");
    assert!(failed > 0, "the injected delay must make some probes late");
    assert!(rate <= 0.005, "{suspects} spurious suspects in {probes} probes");
    sim.shutdown().await;
}
