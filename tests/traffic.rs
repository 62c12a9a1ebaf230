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

    // us-east now carries two regions: a third does not fit, and a split is offered.
    let refused = chat.say("fail over us-west to us-east");
    assert_eq!(refused["feasible"], false, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("A split fits"), "{refused}");
    let alternatives: Vec<&str> = refused["follow_ups"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(alternatives.contains(&"fail over us-west to the healthiest regions"), "{refused}");
    let split = chat.say("fail over us-west to the healthiest regions");
    assert_eq!(split["needs_confirmation"], true, "{split}");
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
    let back = chat.say_confirmed("fail back us-east");
    assert!(back["message"].as_str().unwrap().starts_with("Failed back us-east"), "{back}");
    let back = chat.say_confirmed("fail back eu-west");
    assert!(back["message"].as_str().unwrap().starts_with("Failed back eu-west"), "{back}");
    let table = chat.say("show routing");
    for r in ["us-east", "us-west", "eu-west", "ap-south"] {
        assert_eq!(table["details"]["regions"][r], json!([{"region": r, "weight": 100}]), "{table}");
    }
    let (_, body) = http(&sim, "GET", &format!("/a/{}/v1/status", drained[0]), "");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["state"], "active", "{body}");
    chat.finish();
}
