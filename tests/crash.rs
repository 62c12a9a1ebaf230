//! Kill Parley with SIGKILL mid-rollout, start it again: it reports the interrupted
//! deployment, the agents agree with the registry, and the rollout resumes to the end.
//! The agents live in a separate `parley fleet demo` process, so they survive the kill.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{demo_region, parley_bin, Chat};
use serde_json::Value;

struct Fleet(Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_fleet(dir: &Path, inventory: &Path) -> Fleet {
    let child = Command::new(parley_bin())
        .arg("fleet")
        .arg("demo")
        .arg("--data-dir")
        .arg(dir)
        .arg("--inventory-out")
        .arg(inventory)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !inventory.is_file() || std::fs::metadata(inventory).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the demo fleet wrote no inventory");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    Fleet(child)
}

fn chat(data: &Path, inventory: &Path, bake: &str) -> Chat {
    let mut cmd = Command::new(parley_bin());
    cmd.arg("--data-dir").arg(data).arg("--fleet").arg(inventory).arg("--bake-secs").arg(bake);
    cmd.env_remove("PARLEY_AGENT_TOKEN");
    Chat::start_command(cmd, data)
}

fn targets(details: &Value) -> Vec<(String, String)> {
    details["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["agent"].as_str().unwrap().to_string(), t["state"].as_str().unwrap().to_string()))
        .collect()
}

fn agents(turn: &Value) -> Vec<String> {
    turn["details"]["agents"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

#[test]
fn sigkill_mid_rollout_then_restart_reports_it_and_resumes_to_completion() {
    let fleet_dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let inventory = fleet_dir.path().join("fleet.toml");
    let _fleet = start_fleet(fleet_dir.path(), &inventory);

    let mut first = chat(data.path(), &inventory, "0.5");
    let t = first.say_confirmed("roll out auth-filter 2.1.0 to ap-south in batches of 3");
    assert_eq!(t["deployment"], "d-1", "{t}");
    // Mid-way: the first batch is installed, later ones are not.
    first.wait_for("d-1", |d| targets(d).iter().filter(|(_, s)| s == "installed").count() >= 3);
    let pid = first.pid();
    let killed = Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
    assert!(killed.success());
    first.kill();

    let mut second = chat(data.path(), &inventory, "0.05");
    let first_turn = second.say("list deployments");
    let t = second.say("show deployment d-1");
    assert_eq!(t["details"]["status"], "paused");
    let reason = t["details"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("interrupted at step") && reason.ends_with("of 4: Parley stopped"), "{reason}");
    let step = reason.trim_start_matches("interrupted at step ").split(' ').next().unwrap();
    let on_new = targets(&t["details"]).iter().filter(|(_, s)| s == "installed").count();

    // The first reply after the restart leads with what was interrupted and where,
    // and offers both ways on; later replies do not repeat it.
    let notice = format!(
        "Parley restarted and found 1 interrupted deployment: d-1 (auth-filter 2.1.0 to ap-south) stopped at \
         step {step} of 4 with {on_new} of 12 agents on 2.1.0; it is paused. Say \"resume d-1\" to carry on or \
         \"roll back d-1\" to return the agents. "
    );
    let message = first_turn["message"].as_str().unwrap();
    assert_eq!(message, format!("{notice}1 deployment: d-1 paused ({reason})."), "{first_turn}");
    assert_eq!(first_turn["follow_ups"][0], "resume d-1", "{first_turn}");
    assert_eq!(first_turn["follow_ups"][1], "roll back d-1", "{first_turn}");
    assert!(!t["message"].as_str().unwrap().starts_with("Parley restarted"), "{t}");

    // Registry and agents agree: installed targets run 2.1.0; only installed (or
    // in-flight) targets may.
    let states = targets(&t["details"]);
    let installed: Vec<String> = states.iter().filter(|(_, s)| s == "installed").map(|(a, _)| a.clone()).collect();
    let maybe: Vec<String> =
        states.iter().filter(|(_, s)| s == "installed" || s == "installing").map(|(a, _)| a.clone()).collect();
    assert!(!installed.is_empty() && installed.len() < 12, "{states:?}");
    let on_new = agents(&second.eventually("which agents run auth-filter 2.1.0?", |t| {
        let a = agents(t);
        installed.iter().all(|i| a.contains(i))
    }));
    assert!(on_new.iter().all(|a| maybe.contains(a)), "{on_new:?} vs {states:?}");

    let t = second.say_confirmed("resume d-1");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = second.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    let t = second.eventually("which agents run auth-filter 2.1.0?", |t| agents(t).len() == 12);
    assert_eq!(agents(&t), demo_region("ap-south"));
    second.finish();
}
