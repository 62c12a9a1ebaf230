//! Troubleshooting in conversation, through the library's one entry point
//! (`Session::handle`) against real agents over HTTP: the simulator with faults
//! injected while it runs, and the embedded demo fleet. "Why is it unhealthy" is
//! answered from the poller's metric history and the registry's journals; "what
//! changed" and "who drained" from the registry; the emergency stop holds two
//! running rollouts and an automatic failback that was about to happen.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use parley::agent::faults::FaultSpec;
use parley::agent::simulate::{SimOptions, Simulator};
use parley::app::Parley;
use parley::config::Config;
use parley::diagnose::{clock, duration_words, show};
use parley::ops::{Actor, DeploymentStatus, Metric, Role};
use parley::registry::Registry;
use parley::reply::{Outcome, Reply};
use parley::topology::inventory::Inventory;

/// A config of its own on the simulator's agents, with `poll` as its `[poll]` keys.
/// [`BY_HAND`] polls once a minute: the test polls itself, so the figures it checks
/// are those of a snapshot it knows.
fn config(dir: &Path, sim: &Simulator, extra: &str, poll: &str) -> Config {
    let inventory = dir.join("fleet.toml");
    std::fs::write(&inventory, Inventory::to_toml(&sim.inventory())).unwrap();
    let path = dir.join("parley.toml");
    let text = format!(
        "data_dir = \"{}\"\n[fleet]\ninventory = \"{}\"\n[poll]\n{poll}\n{extra}",
        dir.join("state").display(),
        inventory.display()
    );
    std::fs::write(&path, text).unwrap();
    Config::load(Some(&path)).unwrap()
}

const BY_HAND: &str = "interval_ms = 60000";

async fn sim(faults: &str) -> Simulator {
    let mut options = SimOptions::new(48);
    options.faults = FaultSpec::parse(faults).unwrap();
    options.install_delay = Duration::from_millis(5);
    options.transition_delay = Duration::from_millis(5);
    Simulator::start(options).await.unwrap()
}

fn rows(r: &Reply) -> Vec<Vec<String>> {
    r.table.as_ref().map(|t| t.rows.clone()).unwrap_or_default()
}

async fn wait_status(parley: &Parley, id: &str, want: impl Fn(DeploymentStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = parley.services().registry.deployment_by_name(id).await.unwrap().unwrap();
        if want(d.status) {
            return;
        }
        assert!(Instant::now() < deadline, "{id} stayed {:?}", d.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until `pred` holds of the snapshot.
async fn poll_until(parley: &Parley, what: &str, pred: impl Fn(&parley::topology::Topology) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        parley.services().poller.refresh().await;
        if pred(&parley.services().topology.snapshot()) {
            return;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An error spike tied to one version in one region is explained as that: the
/// version, the region, since when, the step that brought it and who started it,
/// with "roll back d-1" first; follow-ups carry the investigation on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_spike_on_one_version_in_one_region_is_blamed_on_the_rollout_that_brought_it() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim("").await;
    let parley = Parley::start(&config(dir.path(), &sim, "[rollout]\nbake_secs = 0.05\n", BY_HAND)).await.unwrap();
    let mut alice = parley.session(Actor::new("alice", "tui", Role::Operator));
    let r = alice.handle("roll out auth-filter 2.1.0 to the gpu agents in eu-west in batches of 2").await;
    assert_eq!(r.outcome, Outcome::NeedsConfirmation, "{}", r.message);
    let r = alice.handle("yes").await;
    assert_eq!(r.outcome, Outcome::Started, "{}", r.message);
    assert_eq!(r.deployment.as_deref(), Some("d-1"));
    // It passes its gate: the version goes bad only later.
    wait_status(&parley, "d-1", |s| s == DeploymentStatus::Succeeded).await;
    let d1 = parley.services().registry.deployment_by_name("d-1").await.unwrap().unwrap();
    let canaries: Vec<String> = d1.targets.iter().filter(|t| t.step == 0).map(|t| t.agent.clone()).collect();
    assert_eq!(canaries.len(), 2, "{canaries:?}");
    let events = parley.services().registry.events(d1.id).await.unwrap();
    let step = events.iter().find(|e| e.kind == "step_started").unwrap();

    // A healthy sample of every agent first, then the version goes bad.
    parley.services().poller.refresh().await;
    sim.agents().apply(&FaultSpec::parse("error-spike:auth-filter@2.1.0=8/region:eu-west").unwrap());
    poll_until(&parley, "the canaries over 1%", |t| {
        canaries.iter().all(|c| t.agent(c).is_some_and(|a| a.metrics.error_rate_pct > 1.0))
    })
    .await;
    parley.services().poller.refresh().await;
    let history = parley.services().topology.history();
    let start = canaries
        .iter()
        .filter_map(|c| history.samples(c).into_iter().find(|s| s.get(Metric::ErrorRate) > 1.0).map(|s| s.at()))
        .min()
        .unwrap();

    let mut bob = parley.session(Actor::new("bob", "slack:C042", Role::Operator));
    let r = bob.handle("why is eu-west degraded?").await;
    assert_eq!(r.outcome, Outcome::Answered, "{}", r.message);
    assert_eq!(r.operation.as_ref().map(|o| o.name()), Some("explain"));
    let worst = r.details.as_ref().unwrap()["suspects"][0].as_str().unwrap().to_string();
    assert!(canaries.contains(&worst), "{worst}");
    assert_eq!(
        r.message,
        format!(
            "eu-west is degraded since {}: the 2 agents out of threshold in eu-west are the ones on auth-filter 2.1.0 (error rate); \
             d-1 brought it to them in step 1 of 1 at {}, started by alice through tui, {} before it began. \
             Next: \"roll back d-1\", \"show deployment d-1\" or \"show me the errors on {worst}\".",
            clock(start),
            clock(step.at),
            duration_words(start - step.at),
        )
    );
    assert_eq!(r.follow_ups[0], "roll back d-1");
    let details = r.details.as_ref().unwrap();
    assert_eq!(
        details["finding"],
        serde_json::json!({"kind": "version", "extension": "auth-filter", "version": "2.1.0", "within": "eu-west", "deployment": "d-1"})
    );
    let evidence: Vec<(String, String)> = details["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["text"].as_str().unwrap().to_string(), e["source"].as_str().unwrap().to_string()))
        .collect();
    let mut names = canaries.clone();
    names.sort_by_key(|n| parley.services().topology.snapshot().agents().iter().position(|a| a.name == n.as_str()));
    let pattern = format!(
        "It follows a version: 2 of the 2 agents on auth-filter 2.1.0 are out of threshold ({}); none of the 10 agents on 2.0.3 is.",
        names.join(", ")
    );
    assert!(evidence.contains(&(pattern.clone(), "topology".to_string())), "{pattern}\n{evidence:#?}");
    // Each canary's error rate, since when, its own baseline and its zone's peers.
    let topo = parley.services().topology.snapshot();
    for c in &canaries {
        let a = topo.agent(c).unwrap();
        let line = evidence.iter().find(|(t, _)| t.starts_with(&format!("{c}: error rate "))).unwrap();
        assert!(
            line.0.starts_with(&format!(
                "{c}: error rate {} (threshold 1.0%) since ",
                show(Metric::ErrorRate, a.metrics.error_rate_pct)
            )),
            "{line:?}"
        );
        assert!(line.0.contains("; its own baseline before that "), "{line:?}");
        assert!(line.0.contains(&format!("; its peers in {} ", a.zone)), "{line:?}");
        assert_eq!(line.1, "poller history, topology");
    }
    let step_line = format!(
        "{} d-1 step 1 of 1 installed auth-filter 2.1.0 on {}, by alice through tui ({} before)",
        clock(step.at),
        step.data["agents"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect::<Vec<_>>().join(", "),
        duration_words(start - step.at)
    );
    assert!(
        evidence.contains(&(step_line.clone(), "deployment journal d-1".to_string())),
        "{step_line}\n{evidence:#?}"
    );
    // Sparklines: the suspects and their peers' median, for the TUI.
    let series = details["series"].as_array().unwrap();
    assert!(series.iter().any(|s| s["suspect"] == true), "{series:?}");
    assert!(series.iter().any(|s| s["suspect"] == false && s["label"].as_str().unwrap().starts_with("peers")));

    // "and us-east?" asks the same of us-east, where nothing is wrong.
    let r = bob.handle("and us-east?").await;
    assert_eq!(
        r.operation.as_ref().map(|o| o.to_json()),
        Some(serde_json::json!({"op": "explain", "scope": ["region:us-east"]}))
    );
    assert!(
        r.message.starts_with(
            "Nothing is out of the ordinary in us-east: all 12 agents answer, all within their thresholds."
        ),
        "{}",
        r.message
    );
    // "show me the errors on <it>" looks at the one metric.
    let r = bob.handle(&format!("show me the errors on {worst}")).await;
    assert_eq!(
        r.operation.as_ref().map(|o| o.to_json()),
        Some(serde_json::json!({"op": "explain", "scope": [format!("agent:{worst}")], "metric": "error_rate"}))
    );
    assert!(
        r.message.starts_with(&format!(
            "{worst} is over its error rate threshold since {}, like every agent on auth-filter 2.1.0 in eu-west; d-1 brought it",
            clock(history.samples(&worst).into_iter().find(|s| s.get(Metric::ErrorRate) > 1.0).unwrap().at())
        )),
        "{}",
        r.message
    );
    // "compare with yesterday": the history does not reach back a day, and says so.
    let r = bob.handle("compare with yesterday").await;
    assert_eq!(
        r.operation.as_ref().map(|o| o.to_json()),
        Some(serde_json::json!({"op": "explain", "scope": [format!("agent:{worst}")], "compare": "1d"}))
    );
    let unknown = r.details.as_ref().unwrap()["unknown"].as_array().unwrap().clone();
    assert!(
        unknown.iter().any(|u| u.as_str().unwrap().starts_with("There are no figures from ")
            && u.as_str().unwrap().ends_with(&format!(
                "to compare with: the metric history begins at {}.",
                clock(history.since().unwrap())
            ))),
        "{unknown:?}"
    );
    // A deployment explains itself from its journal, and its agents now.
    let r = bob.handle("why did d-1 fail?").await;
    assert!(
        r.message.starts_with(&format!(
            "d-1 (auth-filter 2.1.0 to eu-west gpu agents, started by alice through tui at {}) succeeded after 1 step: ",
            clock(d1.created_at)
        )),
        "{}",
        r.message
    );
    let figures = r.table.as_ref().unwrap().rows.iter().find(|row| row[0].starts_with("Now ")).unwrap().clone();
    assert_eq!(
        figures[0],
        format!("Now 2 of its 2 agents are out of threshold or not answering: {}.", names.join(", "))
    );
    sim.shutdown().await;
    parley.shutdown().await;
}

/// A slow zone with no recent change is explained as the zone; no deployment is blamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_zone_with_no_change_is_the_zone_and_no_deployment_is_blamed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim("latency:600/zone:us-west-b").await;
    let parley = Parley::start(&config(dir.path(), &sim, "", BY_HAND)).await.unwrap();
    parley.services().poller.refresh().await;
    let mut s = parley.session(Actor::new("carol", "repl", Role::Viewer));
    let r = s.handle("why is us-west slow?").await;
    assert_eq!(r.outcome, Outcome::Answered, "{}", r.message);
    let history = parley.services().topology.history();
    let since = history.since().unwrap();
    let worst = r.details.as_ref().unwrap()["suspects"][0].as_str().unwrap().to_string();
    assert_eq!(
        r.message,
        format!(
            "us-west is degraded: every agent of us-west-b is over its p95 latency threshold since at least {}, whatever it runs; \
             it follows the place, not a version. Next: \"show me the latency on {worst}\", \"how healthy is us-west-b?\" or \
             \"what changed on us-west-b today?\".",
            clock(since)
        )
    );
    let details = r.details.as_ref().unwrap();
    assert_eq!(details["finding"], serde_json::json!({"kind": "place", "place": "us-west-b"}));
    let topo = parley.services().topology.snapshot();
    let zone_b: BTreeSet<String> =
        topo.agents().iter().filter(|a| a.zone == "us-west-b").map(|a| a.name.to_string()).collect();
    let suspects: BTreeSet<String> =
        details["suspects"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(suspects, zone_b);
    let texts: Vec<&str> =
        details["evidence"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert!(
        texts.contains(
            &"It follows a place: 6 of the 6 agents in us-west-b are out of threshold; none in us-west-a is."
        ),
        "{texts:#?}"
    );
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("No rollout step, routing change, drain, cordon or restart touched them from ")),
        "{texts:#?}"
    );
    assert!(r.follow_ups.iter().all(|f| !f.contains("roll back") && !f.contains("abort")), "{:?}", r.follow_ups);
    assert!(!r.message.contains("d-"), "{}", r.message);

    // Slack shows the evidence as Block Kit fields, each with its source.
    let message = parley::slack::blocks::reply_message(&r);
    let fields: Vec<String> = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["fields"].as_array())
        .flatten()
        .map(|f| f["text"].as_str().unwrap().to_string())
        .collect();
    assert!(
        fields.contains(&"*It follows a place: 6 of the 6 agents in us-west-b are out of threshold; none in us-west-a is.*\nSource: topology".to_string()),
        "{fields:#?}"
    );
    // The TUI draws each suspect's sparkline beside its peers' median.
    let mut lines = Vec::new();
    parley::ui::tui::render::explain_sparklines(&r, 100, &mut lines);
    let text: Vec<String> =
        lines.iter().map(|l| l.spans.iter().map(|s| s.content.to_string()).collect::<String>()).collect();
    assert_eq!(text[1], "  p95 (full bar = threshold)");
    assert!(text[2].starts_with(&format!("  {worst} ")) && text[2].contains("  vs  peers (median of 6) "), "{text:#?}");
    assert_eq!(text.len(), 2 + 3, "three suspects drawn: {text:#?}");
    sim.shutdown().await;
    parley.shutdown().await;
}

/// A healthy fleet gets "nothing is out of the ordinary", with the figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_fleet_is_nothing_out_of_the_ordinary_with_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim("").await;
    let parley = Parley::start(&config(dir.path(), &sim, "", BY_HAND)).await.unwrap();
    let mut s = parley.session(Actor::new("dave", "repl", Role::Viewer));
    let r = s.handle("what's wrong with the fleet?").await;
    assert_eq!(r.operation.as_ref().map(|o| o.name()), Some("explain"));
    assert_eq!(r.message, "Nothing is out of the ordinary in the fleet: all 48 agents answer, all within their thresholds. Next: \"what changed today?\" or \"compare with yesterday\".");
    let topo = parley.services().topology.snapshot();
    let figure = |m: Metric, threshold: f64| {
        let mut v: Vec<f64> = topo.agents().iter().map(|a| parley::diagnose::value(&a.metrics, m)).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let median = (v[23] + v[24]) / 2.0;
        format!(
            "{} {}-{} (median {}, threshold {})",
            m.words(),
            show(m, v[0]),
            show(m, v[47]),
            show(m, median),
            show(m, threshold)
        )
    };
    let expected = format!(
        "{}; {}; {}; {}.",
        figure(Metric::ErrorRate, 1.0).replacen("error rate", "Error rate", 1),
        figure(Metric::P95, 500.0),
        figure(Metric::Cpu, 80.0),
        figure(Metric::Memory, 85.0)
    );
    assert_eq!(rows(&r)[0], [expected, "topology".to_string()]);
    assert_eq!(
        rows(&r)[1],
        [
            "No rollout step, routing change, drain, cordon or restart in the last hour.",
            "deployment journal, routing journal, event log"
        ]
    );
    sim.shutdown().await;
    parley.shutdown().await;
}

/// `changes` and `show_audit` answer from the registry, row for row, and "who drained
/// edge-7?" names the user and the front-end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_the_audit_log_answer_from_the_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.toml");
    std::fs::write(&path, "data_dir = \"state\"\n[rollout]\nbake_secs = 0.02\n[poll]\ninterval_ms = 200\n").unwrap();
    let config = Config::load(Some(&path)).unwrap();
    let parley = Parley::start(&config).await.unwrap();
    let mut alice = parley.session(Actor::new("alice", "tui", Role::Operator));
    let mut bob = parley.session(Actor::new("bob", "slack:C042", Role::Operator));
    let mut vic = parley.session(Actor::new("vic", "voice", Role::Viewer));
    assert_eq!(vic.handle("drain edge-7").await.outcome, Outcome::Refused);
    assert_eq!(alice.handle("drain edge-7").await.outcome, Outcome::NeedsConfirmation);
    assert_eq!(alice.handle("yes").await.outcome, Outcome::Done);
    assert_eq!(bob.handle("cordon edge-20").await.outcome, Outcome::Done);
    let r = bob.handle("roll out auth-filter 2.1.0 to edge-19").await;
    assert_eq!(r.outcome, Outcome::Started, "{}", r.message);
    wait_status(&parley, "d-1", |s| s == DeploymentStatus::Succeeded).await;

    let audit = parley.services().registry.list_audit(None, 100).await.unwrap();
    let drained =
        audit.iter().find(|a| a.utterance == "drain edge-7" && a.result == parley::registry::AuditResult::Ok).unwrap();
    let r = vic.handle("who drained edge-7?").await;
    assert_eq!(
        r.operation.as_ref().map(|o| o.to_json()),
        Some(serde_json::json!({"op": "show_audit", "since": "30d", "agent": "edge-7", "action": "drain"}))
    );
    assert_eq!(
        r.message,
        format!(
            "alice drained edge-7 at {} through tui (\"drain edge-7\"). Also asked, not carried out: vic (refused).",
            clock(drained.at)
        )
    );
    let who: Vec<(String, String, String, String)> =
        rows(&r).into_iter().map(|row| (row[1].clone(), row[2].clone(), row[4].clone(), row[5].clone())).collect();
    let s = |a: &str, b: &str, c: &str, d: &str| (a.to_string(), b.to_string(), c.to_string(), d.to_string());
    assert_eq!(
        who,
        [
            s("vic", "voice", "drain edge-7", "refused"),
            s("alice", "tui", "drain edge-7", "asked"),
            s("alice", "tui", "drain edge-7", "ok"),
        ]
    );

    let r = vic.handle("what changed in the last hour?").await;
    assert_eq!(r.operation.as_ref().map(|o| o.to_json()), Some(serde_json::json!({"op": "changes", "since": "1h"})));
    let changes: Vec<Vec<String>> = rows(&r).into_iter().map(|row| row[1..].to_vec()).collect();
    let v = |x: [&str; 4]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        changes,
        [
            v(["drain edge-7", "alice", "tui", "event log"]),
            v(["cordon edge-20", "bob", "slack:C042", "event log"]),
            v(["d-1 started: auth-filter 2.1.0 to 1 agent (rolling)", "bob", "slack:C042", "deployment journal d-1"]),
            v([
                "d-1 step 1 of 1 installed auth-filter 2.1.0 on edge-19",
                "bob",
                "slack:C042",
                "deployment journal d-1"
            ]),
            v(["d-1 succeeded: 1 agents on auth-filter 2.1.0", "bob", "slack:C042", "deployment journal d-1"]),
        ]
    );
    assert!(r.message.starts_with("5 changes since "), "{}", r.message);

    let r = vic.handle("what changed on edge-19 today?").await;
    assert_eq!(
        r.operation.as_ref().map(|o| o.to_json()),
        Some(serde_json::json!({"op": "changes", "since": "24h", "scope": ["agent:edge-19"]}))
    );
    assert_eq!(rows(&r).len(), 3, "{:?}", rows(&r));
    assert!(rows(&r).iter().all(|row| row[4] == "deployment journal d-1"));
    let r = vic.handle("what changed on edge-3 today?").await;
    assert!(r.message.starts_with("Nothing changed on edge-3 since "), "{}", r.message);

    let r = vic.handle("show the audit log for today").await;
    assert_eq!(
        r.operation.as_ref().map(|o| o.to_json()),
        Some(serde_json::json!({"op": "show_audit", "since": "24h"}))
    );
    let said: Vec<(String, String, String)> =
        rows(&r).into_iter().map(|row| (row[1].clone(), row[2].clone(), row[4].clone())).collect();
    let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        said,
        [
            t("vic", "voice", "drain edge-7"),
            t("alice", "tui", "drain edge-7"),
            t("alice", "tui", "drain edge-7"),
            t("bob", "slack:C042", "cordon edge-20"),
            t("bob", "slack:C042", "roll out auth-filter 2.1.0 to edge-19"),
            t("vic", "voice", "who drained edge-7?"),
            t("vic", "voice", "what changed in the last hour?"),
            t("vic", "voice", "what changed on edge-19 today?"),
            t("vic", "voice", "what changed on edge-3 today?"),
        ]
    );
    assert!(r.message.starts_with("The audit log since "), "{}", r.message);
    assert!(
        r.message.ends_with(" (24h): 9 entries from alice (tui), bob (slack:C042), vic (voice); 3 changed the fleet."),
        "{}",
        r.message
    );

    // "which version of auth-filter is ap-south on?": a per-version breakdown.
    let r = vic.handle("which version of auth-filter is ap-south on?").await;
    assert_eq!(
        r.operation.as_ref().map(|o| o.to_json()),
        Some(serde_json::json!({"op": "versions", "extension": "auth-filter", "scope": ["region:ap-south"]}))
    );
    assert_eq!(r.message, "In ap-south (12 agents): auth-filter 2.0.3 on 11, 2.1.0 on 1.");
    assert_eq!(rows(&r)[1], ["auth-filter", "2.1.0", "1", "edge-19"]);
    let r = vic.handle("what's running on gpu-1?").await;
    assert_eq!(
        r.message,
        "gpu-1 runs auth-filter 2.0.3, log-shipper 1.4.2, model-server 0.3.0 and rate-limiter 1.0.0."
    );
    parley.shutdown().await;
}

/// "stop everything" pauses both running rollouts and holds an automatic failback
/// whose timer is running; the freeze is in the registry (another process sees it),
/// every reply says so, and "unfreeze" lets the failback happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emergency_stop_holds_two_rollouts_and_an_automatic_failback() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim("partition:eu-west").await;
    let extra = "[rollout]\nbake_secs = 30\n[routing]\nauto_failback_secs = 3\n";
    let config = config(dir.path(), &sim, extra, "interval_ms = 200\nsuspect_after_ms = 400\ndown_after_ms = 800");
    let parley = Parley::start(&config).await.unwrap();
    poll_until(&parley, "eu-west partitioned", |t| {
        t.region_health("eu-west") == parley::topology::RegionHealth::Partitioned
    })
    .await;
    let mut ada = parley.session(Actor::new("ada", "voice", Role::Admin));
    assert_eq!(ada.handle("fail over eu-west to us-east").await.outcome, Outcome::NeedsConfirmation);
    assert_eq!(ada.handle("yes").await.outcome, Outcome::Done);
    // Two staging rollouts, each baking for 30 s.
    for agent in ["edge-4", "edge-8"] {
        let r = ada.handle(&format!("roll out auth-filter 2.1.0 to {agent}")).await;
        assert_eq!(r.outcome, Outcome::Started, "{}", r.message);
    }
    // The router sees eu-west down after its failover (it checks twice a second)...
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // ... then eu-west recovers: the automatic failback's 3 s start counting.
    sim.agents().apply(&FaultSpec::default());
    poll_until(&parley, "eu-west healthy", |t| t.region_health("eu-west") == parley::topology::RegionHealth::Healthy)
        .await;
    let version = parley.services().router.snapshot().version;

    let r = ada.handle("stop everything").await;
    assert_eq!(r.operation.as_ref().map(|o| o.name()), Some("freeze"));
    assert_eq!(
        r.message,
        "Freeze the fleet. This needs confirmation because it pauses d-1 and d-2 (running) and holds the automatic failover and failback until \"unfreeze\". Proceed? (yes/no)"
    );
    let r = ada.handle("yes").await;
    assert_eq!(r.outcome, Outcome::Done, "{}", r.message);
    let frozen_at = parley.services().registry.freeze().await.unwrap().unwrap().at;
    assert_eq!(
        r.message,
        format!("Froze the fleet at {}: automatic failover and failback are held and no rollout starts or moves on until \"unfreeze\". Paused d-1 and d-2.", clock(frozen_at))
    );
    for id in ["d-1", "d-2"] {
        let d = parley.services().registry.deployment_by_name(id).await.unwrap().unwrap();
        assert_eq!(d.status, DeploymentStatus::Paused, "{id}");
    }
    // Durable: another process opening the registry sees it.
    let other = Registry::open(&config.db_path()).await.unwrap();
    let seen = other.freeze().await.unwrap().unwrap();
    assert_eq!((seen.actor.as_str(), seen.frontend.as_str()), ("ada", "voice"));

    // The failback was due after 3 s; 5 s later nothing has moved.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(parley.services().router.snapshot().version, version, "the freeze held the failback");
    let mut olga = parley.session(Actor::new("olga", "tui", Role::Operator));
    let notice = format!("(Frozen since {} by ada through voice: rollouts are paused and automatic failover and failback are held; say \"unfreeze\" to lift it.)", clock(frozen_at));
    let r = olga.handle("how healthy is us-east?").await;
    assert!(r.message.starts_with(&notice), "{}", r.message);
    let r = olga.handle("resume d-1").await;
    assert_eq!(r.outcome, Outcome::Infeasible);
    assert!(
        r.message.contains(&format!(
            "The fleet is frozen (since {} by ada through voice), so no rollout starts or moves on.",
            clock(frozen_at)
        )),
        "{}",
        r.message
    );
    let r = olga.handle("roll out auth-filter 2.1.0 to edge-12").await;
    assert_eq!(r.outcome, Outcome::Infeasible, "{}", r.message);

    let r = olga.handle("unfreeze").await;
    assert_eq!(r.outcome, Outcome::Done, "{}", r.message);
    assert_eq!(
        r.message,
        format!("Lifted the freeze (by ada through voice at {}): automatic failover and failback run again and rollouts may start. Still paused, each until resumed: d-1 and d-2.", clock(frozen_at))
    );
    assert_eq!(r.follow_ups, ["resume d-1", "resume d-2"]);
    // Its timer ran out while frozen: it fails back at the router's next look.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while parley.services().router.snapshot().version == version {
        if Instant::now() > deadline {
            let t = parley.services().topology.snapshot();
            let eu: Vec<String> = t
                .region_agents("eu-west")
                .map(|a| format!("{} {} {:?} {:?}", a.name, a.health_word(), a.state, a.flapping))
                .collect();
            panic!(
                "no automatic failback after the freeze was lifted: {:?} {eu:?} {:?}",
                t.region_health("eu-west"),
                parley.services().router.history(10).await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = olga.handle("how healthy is us-east?").await;
    assert!(!r.message.contains("Frozen"), "{}", r.message);
    let events = parley
        .services()
        .registry
        .events_between(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH, chrono::Utc::now())
        .await
        .unwrap();
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e.deployment.is_none())
        .map(|e| e.kind.as_str())
        .filter(|k| k.ends_with("freeze"))
        .collect();
    assert_eq!(kinds, ["freeze", "unfreeze"]);
    for id in ["d-1", "d-2"] {
        assert_eq!(olga.handle(&format!("abort {id}")).await.outcome, Outcome::Refused, "olga did not start {id}");
    }
    sim.shutdown().await;
    parley.shutdown().await;
}

/// `chat --json` carries the evidence as structured `details`: the finding, each line
/// with its source, what is unknown, the actions and the sparkline series.
#[test]
fn chat_json_carries_the_evidence_as_details() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = common::Chat::start(dir.path(), &["--demo-faults", "latency:600/agent:edge-14"]);
    let turn = chat.eventually("what's wrong with edge-14?", |t| t["details"]["finding"]["kind"] == "outliers");
    assert_eq!(turn["operation"], serde_json::json!({"op": "explain", "scope": ["agent:edge-14"]}));
    assert_eq!(turn["outcome"], "answered");
    let details = &turn["details"];
    assert_eq!(details["subject"], "edge-14");
    assert_eq!(details["suspects"], serde_json::json!(["edge-14"]));
    let evidence = details["evidence"].as_array().unwrap();
    assert!(evidence.iter().all(|e| e["source"].as_str().is_some_and(|s| !s.is_empty())), "{evidence:?}");
    assert!(evidence[0]["text"].as_str().unwrap().starts_with("edge-14: p95 latency "), "{evidence:?}");
    assert_eq!(evidence[0]["kind"], "metric");
    assert!(details["unknown"].as_array().is_some_and(|u| !u.is_empty()));
    assert!(details["series"].as_array().is_some_and(|s| s.iter().any(|x| x["label"] == "edge-14")));
    assert_eq!(turn["follow_ups"][0], "show me the latency on edge-14");
    chat.finish();
}
