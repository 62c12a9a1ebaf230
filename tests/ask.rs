//! The "done means": `parley ask "roll out auth-filter 2.1.0 to ap-south"`
//! upgrades exactly the 12 ap-south agents, which then report 2.1.0 over HTTP, and
//! `d-1` is in the registry. Here the agents run in a separate process
//! (`parley fleet demo`) so the test can ask each of them directly.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{demo_region, parley, parley_bin};

struct Fleet(std::process::Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn endpoints(inventory: &str) -> Vec<(String, String)> {
    let doc: toml::Value = toml::from_str(inventory).unwrap();
    doc["agent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_string(), a["endpoint"].as_str().unwrap().to_string()))
        .collect()
}

fn auth_filter_version(endpoint: &str) -> String {
    let out = std::process::Command::new("curl").arg("-sf").arg(format!("{endpoint}/v1/status")).output();
    let body = match out {
        Ok(o) if o.status.success() => o.stdout,
        // Without curl, a tiny blocking HTTP/1.1 GET over a TCP socket does the same.
        _ => raw_get(endpoint, "/v1/status"),
    };
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    status["extensions"].as_array().unwrap().iter().find(|e| e["name"] == "auth-filter").unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn raw_get(endpoint: &str, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    body.as_bytes().to_vec()
}

#[test]
fn ask_rolls_out_to_exactly_the_twelve_ap_south_agents() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("fleet.toml");
    let fleet_dir = dir.path().join("fleet-state");
    let fleet = Fleet(
        Command::new(parley_bin())
            .arg("--data-dir")
            .arg(&fleet_dir)
            .args(["fleet", "demo", "--inventory-out"])
            .arg(&inventory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !inventory.exists() {
        assert!(Instant::now() < deadline, "the demo fleet never wrote its inventory");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let agents = endpoints(&std::fs::read_to_string(&inventory).unwrap());
    assert_eq!(agents.len(), 48);

    let parley_dir = dir.path().join("parley");
    let out = parley(&parley_dir)
        .arg("--fleet")
        .arg(&inventory)
        .args(["ask", "--yes", "roll out auth-filter 2.1.0 to ap-south"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Started d-1: auth-filter 2.0.3 (12) -> 2.1.0 on 12 agents in ap-south"), "{stdout}");
    assert!(stdout.contains("d-1: auth-filter 2.1.0 to ap-south (rolling), succeeded"), "{stdout}");

    let ap_south = demo_region("ap-south");
    for (name, endpoint) in &agents {
        let want = if ap_south.contains(name) { "2.1.0" } else { "2.0.3" };
        assert_eq!(auth_filter_version(endpoint), want, "{name}");
    }

    // d-1 is in the registry: a new process reads it back.
    let out = parley(&parley_dir)
        .arg("--fleet")
        .arg(&inventory)
        .args(["ask", "--json", "show deployment d-1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let turn: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(turn["details"]["status"], "succeeded");
    assert_eq!(turn["details"]["targets"].as_array().unwrap().len(), 12);
    drop(fleet);
}

#[test]
fn ask_exits_non_zero_when_infeasible_or_refused_at_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let out = parley(dir.path()).args(["ask", "roll out model-server 0.4.0 to eu-west"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("model-server needs gpu"));

    // A risky request answered "no" (here: end of input) changes nothing and fails.
    let out = parley(dir.path()).args(["ask", "drain edge-7"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Cancelled: Drain edge-7. Nothing was changed."));

    let out = parley(dir.path()).args(["ask", "how healthy is eu west?"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("eu-west: 12 agents, 12 healthy."));
}

#[test]
fn parse_prints_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let out = parley(dir.path())
        .args(["parse", "--json", "roll out auth-filter 2.1 to E.U. West as a canary, 10% then 50%"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"operation": {"op": "deploy", "extension": "auth-filter", "version": "2.1.0",
            "scope": ["region:eu-west"], "strategy": {"kind": "canary", "steps": [10, 50]}}, "missing": []})
    );
}
