//! Regions and traffic end to end: `parley chat --json` against a simulated fleet
//! (`parley fleet simulate`): a failover with headroom drains the source, one into a
//! full region is refused with a split, a partitioned target cascades, and failing
//! back after recovery restores the routing table exactly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{parley_bin, Chat};
use parley::topology::inventory::Inventory;
use serde_json::{json, Value};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the simulator; answers it and its base address (`127.0.0.1:PORT`).
fn simulator(data: &Path, agents: usize) -> (Proc, String) {
    let out = data.join("sim.toml");
    let mut cmd = Command::new(parley_bin());
    cmd.arg("--data-dir").arg(data.join("sim")).args(["fleet", "simulate", "--agents", &agents.to_string()]);
    cmd.arg("--inventory-out").arg(&out).stderr(Stdio::null()).env_remove("PARLEY_AGENT_TOKEN");
    let child = Proc(cmd.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(inv) = Inventory::load(&out) {
            if inv.len() == agents {
                let url = inv[0].endpoint.trim_start_matches("http://").to_string();
                let base = url.split('/').next().unwrap().to_string();
                return (child, base);
            }
        }
        assert!(Instant::now() < deadline, "the simulator wrote no inventory");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A bare HTTP/1.1 request; answers the status code and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    // Chunked bodies: the JSON sits between the chunk-size lines.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => body[a..=b].to_string(),
        _ => body,
    };
    (code, body)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn routes(turn: &Value, region: &str) -> Vec<String> {
    turn["details"]["regions"][region]
        .as_array()
        .unwrap_or_else(|| panic!("no routes for {region}: {turn}"))
        .iter()
        .map(|r| r["region"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn failover_refusal_cascade_and_failback_against_the_simulator() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, sim) = simulator(dir.path(), 48);
    let routing = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("parley.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"state\"\n[fleet]\ninventory = \"sim.toml\"\ntimeout_ms = 400\n\
             [poll]\ninterval_ms = 200\nsuspect_after_ms = 500\ndown_after_ms = 1000\n\
             [routing]\nlisten = \"{routing}\"\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new(parley_bin());
    cmd.arg("--config").arg(&config).env_remove("PARLEY_AGENT_TOKEN");
    let mut chat = Chat::start_command(cmd, dir.path());

    // A failover with headroom: confirmed, the table moves, the source agents stop serving.
    let ask = chat.say("fail over eu-west to us-east");
    assert_eq!(ask["needs_confirmation"], true, "{ask}");
    let done = chat.say("yes");
    let message = done["message"].as_str().unwrap();
    assert!(message.starts_with("Failed over eu-west to us-east in "), "{done}");
    assert_eq!(done["details"]["drained"].as_array().unwrap().len(), 12, "{done}");
    assert!(done["details"]["elapsed_ms"].as_u64().unwrap() < 10_000, "{done}");
    let drained: Vec<String> =
        done["details"]["drained"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    for agent in &drained {
        let (code, body) = http(&sim, "GET", &format!("/a/{agent}/v1/status"), "");
        let state: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(code, 200);
        assert!(["draining", "drained"].contains(&state["state"].as_str().unwrap()), "{agent}: {body}");
    }
    let (code, body) = http(&routing, "GET", "/v1/routing", "");
    let table: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(table["regions"]["eu-west"], json!([{"region": "us-east", "weight": 100}]));
    assert_eq!(table["version"], 1);
    let (_, body) = http(&routing, "GET", &format!("/v1/routing/agents/{}", drained[0]), "");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["serving"], false, "{body}");
    let (_, body) = http(&routing, "GET", "/v1/routing/agents/edge-1", "");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["serving"], true, "{body}");

    // Once the poller has read the drained agents (their CPU is now an idle footprint),
    // eu-west's traffic must still weigh what it did while it served: what fits next may
    // not depend on whether a poll came in between.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for agent in &drained {
        loop {
            let seen = chat.say(&format!("show agent {agent}"));
            if seen["details"]["state"] == "drained" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{agent} never polled as drained: {seen}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    // us-east now carries two regions: a third does not fit, and no other production
    // region is left. Staging has the room, but only by name.
    let refused = chat.say("fail over us-west to us-east");
    assert_eq!(refused["feasible"], false, "{refused}");
    let message = refused["message"].as_str().unwrap();
    assert!(message.starts_with("us-east cannot absorb us-west's traffic"), "{refused}");
    assert!(!message.contains("A split fits"), "{refused}");
    let alternatives: Vec<&str> = refused["follow_ups"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(alternatives.contains(&"fail over us-west to ap-south"), "{refused}");
    let auto = chat.say("fail over us-west to the healthiest regions");
    assert_eq!(auto["feasible"], false, "{auto}");
    assert!(
        auto["message"]
            .as_str()
            .unwrap()
            .starts_with("No healthy production region, nor any set of them, has the headroom for us-west's traffic"),
        "{auto}"
    );
    let follow: Vec<&str> = auto["follow_ups"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(follow.contains(&"fail over us-west to ap-south"), "{auto}");
    let named = chat.say("fail over us-west to ap-south");
    assert_eq!(named["needs_confirmation"], true, "{named}");
    assert!(
        named["message"]
            .as_str()
            .unwrap()
            .contains("% of a 80% limit); ap-south is staging, not production like us-west. Proceed? (yes/no)"),
        "{named}"
    );
    assert_eq!(chat.say("no")["operation"]["op"], "cancel");

    // The failover target fails: everything it served moves on, never into a failed region.
    let (code, _) = http(&sim, "POST", "/v1/faults", "partition:us-east");
    assert_eq!(code, 200);
    let told = std::cell::Cell::new(false);
    let moved = chat.eventually("show routing", |t| {
        told.set(told.get() || t["message"].as_str().unwrap_or("").contains("Failover target us-east is partitioned"));
        let eu = routes(t, "eu-west");
        let us = routes(t, "us-east");
        !eu.iter().chain(&us).any(|r| r == "eu-west" || r == "us-east")
    });
    // Parley moved production traffic on by itself, so only into production.
    assert_eq!(routes(&moved, "eu-west"), ["us-west"], "{moved}");
    assert_eq!(routes(&moved, "us-east"), ["us-west"], "{moved}");
    let refused = chat.say("fail back us-east");
    assert_eq!(refused["feasible"], false, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("us-east is still"), "{refused}");
    told.set(
        told.get() || refused["message"].as_str().unwrap_or("").contains("Failover target us-east is partitioned"),
    );
    assert!(told.get(), "the operator was never told of the cascade: {moved}");

    // Recovery, then failback of both: the table is exactly what it was.
    let (code, _) = http(&sim, "DELETE", "/v1/faults", "");
    assert_eq!(code, 200);
    chat.eventually("how healthy is us-east?", |t| {
        t["message"].as_str().unwrap_or("").contains("healthy")
            && !t["message"].as_str().unwrap_or("").contains("partitioned")
            && !t["message"].as_str().unwrap_or("").contains("suspect")
            && !t["message"].as_str().unwrap_or("").contains("down")
    });
    // us-east's agents were never drained (it failed, nobody drained it); eu-west's were.
    let back = chat.say_confirmed("fail back us-east");
    let message = back["message"].as_str().unwrap();
    assert!(message.starts_with("Failed back us-east"), "{back}");
    assert!(
        message.contains("; none of its agents was drained, so none needed returning to service (routing version "),
        "{back}"
    );
    let ask = chat.say("fail back eu-west");
    assert_eq!(ask["needs_confirmation"], true, "{ask}");
    assert!(
        ask["message"].as_str().unwrap().starts_with("Fail back eu-west and return its 12 drained agents to service."),
        "{ask}"
    );
    let back = chat.say("yes");
    let message = back["message"].as_str().unwrap();
    assert!(message.starts_with("Failed back eu-west"), "{back}");
    assert!(message.contains("; 12 agents back in service (routing version "), "{back}");
    let table = chat.say("show routing");
    for r in ["us-east", "us-west", "eu-west", "ap-south"] {
        assert_eq!(table["details"]["regions"][r], json!([{"region": r, "weight": 100}]), "{table}");
    }
    let (_, body) = http(&sim, "GET", &format!("/a/{}/v1/status", drained[0]), "");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["state"], "active", "{body}");
    chat.finish();
}

/// Starts the simulator and `chat --json` against it, with a short poll.
fn fleet(dir: &Path) -> (Proc, String, std::path::PathBuf) {
    let (sim_proc, sim) = simulator(dir, 48);
    let config = dir.join("parley.toml");
    std::fs::write(
        &config,
        "data_dir = \"state\"\n[fleet]\ninventory = \"sim.toml\"\ntimeout_ms = 400\n\
         [poll]\ninterval_ms = 200\nsuspect_after_ms = 500\ndown_after_ms = 1000\n",
    )
    .unwrap();
    (sim_proc, sim, config)
}

fn chat_on(config: &Path, dir: &Path) -> Chat {
    let mut cmd = Command::new(parley_bin());
    cmd.arg("--config").arg(config).env_remove("PARLEY_AGENT_TOKEN");
    Chat::start_command(cmd, dir)
}

/// "in 0.4 s" of a reply, in seconds.
fn told_seconds(message: &str) -> f64 {
    let after = message.split(" in ").nth(1).unwrap_or_else(|| panic!("no duration: {message}"));
    after.split(" s:").next().unwrap().parse().unwrap_or_else(|_| panic!("no duration: {message}"))
}

#[test]
fn a_partitioned_production_region_fails_over_to_production_with_true_counts_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, sim, config) = fleet(dir.path());
    let mut chat = chat_on(&config, dir.path());
    chat.eventually("how healthy is the fleet?", |t| t["message"].as_str().unwrap_or("").contains("48 healthy"));
    let (code, _) = http(&sim, "POST", "/v1/faults", "partition:eu-west");
    assert_eq!(code, 200);
    chat.eventually("how healthy is the fleet?", |t| {
        t["message"].as_str().unwrap_or("").contains("eu-west is partitioned: no agent there answers.")
    });

    // Production to production: us-east, never staging ap-south; no drain promised that
    // cannot happen.
    let ask = chat.say("fail over eu-west");
    assert_eq!(ask["needs_confirmation"], true, "{ask}");
    let message = ask["message"].as_str().unwrap();
    let lead = "Fail over eu-west to the healthiest regions with headroom (none of its agents answers, so none can be \
                drained). This needs confirmation because a failover moves all of eu-west's traffic (";
    assert!(message.starts_with(lead), "{ask}");
    let target = message[lead.len()..].split(' ').next().unwrap().to_string();
    assert!(["us-east", "us-west"].contains(&target.as_str()), "a production region, not staging ap-south: {ask}");
    assert!(message[lead.len()..].starts_with(&format!("{target} 100%; projected CPU {target} ")), "{ask}");
    assert!(message.ends_with("% of a 80% limit). Proceed? (yes/no)"), "{ask}");

    // The time told is the time taken.
    let started = Instant::now();
    let done = chat.say("yes");
    let wall = started.elapsed().as_secs_f64();
    let message = done["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("Failed over eu-west to {target} in ")), "{done}");
    assert!(
        message.ends_with(&format!(
            ": eu-west -> {target} 100; none of its 12 agents answers, so none was drained (routing version 1)."
        )),
        "{done}"
    );
    let told = told_seconds(message);
    assert!((wall - told).abs() < 0.25, "took {wall:.2} s by the test's clock, told {told} s: {done}");
    let elapsed_ms = done["details"]["elapsed_ms"].as_u64().unwrap() as f64;
    assert!((elapsed_ms / 1000.0 - told).abs() < 0.06, "{done}");
    assert_eq!(done["details"]["drained"], json!([]), "{done}");

    // Failback is confirmed like a failover, and counts what it returned: nothing.
    let (code, _) = http(&sim, "DELETE", "/v1/faults", "");
    assert_eq!(code, 200);
    chat.eventually("how healthy is the fleet?", |t| t["message"].as_str().unwrap_or("").contains("48 healthy"));
    let ask = chat.say("fail back eu-west");
    assert_eq!(ask["needs_confirmation"], true, "{ask}");
    assert_eq!(
        ask["message"],
        "Fail back eu-west (none of its agents is drained, so none returns to service). This needs confirmation \
         because a failback sends all of eu-west's traffic back to eu-west (now served by TARGET 100). Proceed? (yes/no)"
            .replace("TARGET", &target),
        "{ask}"
    );
    let back = chat.say("yes");
    let message = back["message"].as_str().unwrap();
    assert!(message.starts_with("Failed back eu-west in "), "{back}");
    assert!(
        message.ends_with(
            ": it serves its own traffic again; none of its agents was drained, so none needed returning to service (routing version 2)."
        ),
        "{back}"
    );
    assert_eq!(back["details"]["uncordoned"], json!([]), "{back}");
    chat.finish();
}

/// The part of a `show agent` reply after its place: "is down since ...".
fn state_words(turn: &Value) -> String {
    let m = turn["message"].as_str().unwrap_or_else(|| panic!("no message: {turn}"));
    let at = m.find(") is ").unwrap_or_else(|| panic!("no state in {m}"));
    m[at + 2..].to_string()
}

#[test]
fn a_crashed_agent_is_told_the_same_way_by_a_long_session_and_a_fresh_ask() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, sim, config) = fleet(dir.path());
    let mut chat = chat_on(&config, dir.path());
    let live = chat.eventually("show agent edge-3", |t| state_words(t).starts_with("is healthy and active: cpu "));
    assert!(state_words(&live).contains("%, error rate "), "{live}");

    // A drained agent answers, but serves nothing: no error rate or latency to show.
    let drain = chat.say_confirmed("drain edge-7");
    assert!(drain["message"].as_str().unwrap().starts_with("edge-7 is draining"), "{drain}");
    let drained = chat.eventually("show agent edge-7", |t| state_words(t).starts_with("is healthy and drained: "));
    let words = state_words(&drained);
    assert!(words.starts_with("is healthy and drained: cpu "), "{drained}");
    assert!(words.ends_with("%; it serves no traffic, so it has no error rate or latency."), "{drained}");
    let health = chat.say("how healthy is eu-west?");
    let table = serde_json::to_string(&health["table"]).unwrap();
    assert!(table.contains("\"no traffic\""), "{health}");

    let (code, _) = http(&sim, "POST", "/v1/faults", "crash/agent:edge-3");
    assert_eq!(code, 200);
    // The session saw it answer: its last report is history, with its age.
    let down = chat.eventually("show agent edge-3", |t| state_words(t).starts_with("is down since "));
    let words = state_words(&down);
    let tail = words.split_once("; ").map(|(_, t)| t.to_string()).unwrap_or_default();
    assert!(tail.starts_with("serving state unknown (last reported active "), "{down}");
    assert!(tail.contains(" s ago); last seen "), "{down}");
    assert!(tail.contains("; no metrics: the last were measured "), "{down}");
    assert!(tail.ends_with(" ago and are stale."), "{down}");
    assert!(!words.contains("and active") && !words.contains("and drained"), "{down}");
    assert_eq!(down["details"]["state"], "active", "the agent's last report stays in the record: {down}");
    let health = chat.say("how healthy is eu-west?");
    let row = health["details"]["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["agent"] == "edge-3")
        .unwrap_or_else(|| panic!("edge-3 is in eu-west: {health}"))
        .clone();
    assert_eq!(row["state"], Value::Null, "{health}");
    assert_eq!(row["metrics"]["kind"], "stale", "{health}");

    // A fresh `ask` never saw it answer: it says so, and calls it nothing else.
    let out = Command::new(parley_bin())
        .arg("--config")
        .arg(&config)
        .args(["ask", "--json", "show", "agent", "edge-3"])
        .env_remove("PARLEY_AGENT_TOKEN")
        .env("PARLEY_IN_PROCESS", "1")
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let fresh: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", out.stdout));
    let words = state_words(&fresh);
    assert!(words.starts_with("is down since "), "{fresh}");
    assert!(
        words.ends_with(
            "; serving state unknown (it never answered); last seen never; no metrics: it was never measured."
        ),
        "{fresh}"
    );
    chat.finish();
}
