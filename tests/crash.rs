//! Kill Parley with SIGKILL at chosen moments of a rollout, start it again on the same
//! data directory, finish what was left (resume, or the rollback it finishes by
//! itself), and check that every agent and the registry agree.
//!
//! Each moment runs twice: with the embedded demo fleet (which dies with Parley and
//! comes back on new ports, its versions kept in the data directory) and with a
//! separate `parley fleet demo` (which survives the kill). edge-19 answers 300 ms late
//! (`slow`), so that installs, gates and rollbacks on it last long enough to be
//! killed in the middle of.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{demo_region, parley_bin, Chat};
use serde_json::Value;

/// A fault that keeps edge-19 (in the first batch) busy long enough to be killed in.
const SLOW: &str = "slow:300/agent:edge-19";
/// And one that fails the second step's gate.
const SPIKE: &str = "slow:300/agent:edge-19,error-spike:auth-filter@2.1.0/agent:edge-22";
const ROLLOUT: &str = "roll out auth-filter 2.1.0 to ap-south in batches of 3";

struct Fleet(Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_fleet(dir: &Path, inventory: &Path, faults: &str) -> Fleet {
    let child = Command::new(parley_bin())
        .arg("--data-dir")
        .arg(dir)
        .arg("--demo-faults")
        .arg(faults)
        .arg("fleet")
        .arg("demo")
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

/// Where the agents live for one run.
enum Agents {
    /// In Parley's own process, with these faults.
    Embedded(String),
    /// In a `parley fleet demo` of their own.
    Separate { inventory: PathBuf, _fleet: Fleet },
}

struct Run {
    data: tempfile::TempDir,
    _fleet_dir: tempfile::TempDir,
    agents: Agents,
}

impl Run {
    fn new(separate: bool, faults: &str) -> Run {
        let data = tempfile::tempdir().unwrap();
        let fleet_dir = tempfile::tempdir().unwrap();
        let agents = if separate {
            let inventory = fleet_dir.path().join("fleet.toml");
            let fleet = start_fleet(fleet_dir.path(), &inventory, faults);
            Agents::Separate { inventory, _fleet: fleet }
        } else {
            Agents::Embedded(faults.to_string())
        };
        Run { data, _fleet_dir: fleet_dir, agents }
    }

    fn chat(&self, bake: &str) -> Chat {
        let mut cmd = Command::new(parley_bin());
        cmd.arg("--data-dir").arg(self.data.path()).arg("--bake-secs").arg(bake);
        match &self.agents {
            Agents::Embedded(faults) => cmd.arg("--demo-faults").arg(faults),
            Agents::Separate { inventory, .. } => cmd.arg("--fleet").arg(inventory),
        };
        cmd.env_remove("PARLEY_AGENT_TOKEN");
        Chat::start_command(cmd, self.data.path())
    }
}

fn sigkill(chat: Chat) {
    let killed = Command::new("kill").args(["-9", &chat.pid().to_string()]).status().unwrap();
    assert!(killed.success());
    chat.kill();
}

fn targets(details: &Value) -> Vec<(String, String)> {
    details["targets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| (t["agent"].as_str().unwrap_or("").to_string(), t["state"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn state_of(details: &Value, agent: &str) -> String {
    targets(details).into_iter().find(|(a, _)| a == agent).map(|(_, s)| s).unwrap_or_default()
}

fn agents(turn: &Value) -> Vec<String> {
    let mut a: Vec<String> =
        turn["details"]["agents"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
    a.sort();
    a
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Every agent and the registry agree: the agents on 2.1.0 are exactly the targets
/// the registry has installed (and, ending `status`, that is `on_new`).
fn agree(chat: &mut Chat, status: &str, on_new: &[String]) -> Value {
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "aborted", "failed"]);
    assert_eq!(done["details"]["status"], status, "{done}");
    let installed: Vec<String> =
        targets(&done["details"]).into_iter().filter(|(_, s)| s == "installed").map(|(a, _)| a).collect();
    assert_eq!(sorted(installed), sorted(on_new.to_vec()), "registry: {done}");
    let want = sorted(on_new.to_vec());
    let t = chat.eventually("which agents run auth-filter 2.1.0?", |t| agents(t) == want);
    assert_eq!(agents(&t), want, "agents: {t}");
    done
}

/// Where in the rollout the kill lands.
#[derive(Clone, Copy, Debug)]
enum Moment {
    BeforeConfirmation,
    RightAfterYes,
    MidInstall,
    MidGate,
    AutomaticRollback,
    Abort,
    ManualRollback,
}

fn kill_at(moment: Moment, separate: bool) {
    let faults = match moment {
        Moment::AutomaticRollback => SPIKE,
        // Nothing to be caught in the middle of: no need to slow anything down.
        Moment::BeforeConfirmation | Moment::RightAfterYes => "",
        _ => SLOW,
    };
    let run = Run::new(separate, faults);
    let all = demo_region("ap-south");
    let mut first = run.chat("0.1");
    match moment {
        Moment::BeforeConfirmation => {
            let t = first.say(ROLLOUT);
            assert_eq!(t["needs_confirmation"], true, "{t}");
        }
        Moment::RightAfterYes => {
            first.say(ROLLOUT);
            let t = first.say("yes");
            assert_eq!(t["deployment"], "d-1", "{t}");
        }
        Moment::MidInstall => {
            first.say_confirmed(ROLLOUT);
            first.wait_for("d-1", |d| state_of(d, "edge-19") == "installing");
        }
        Moment::MidGate => {
            first.say_confirmed(ROLLOUT);
            first.wait_for("d-1", |d| state_of(d, "edge-19") == "installed");
            // The 0.1 s bake, then the gate waits 0.3 s on edge-19.
            std::thread::sleep(Duration::from_millis(200));
        }
        Moment::AutomaticRollback => {
            first.say_confirmed(ROLLOUT);
            first.wait_for("d-1", |d| d["status"] == "rolling_back");
        }
        Moment::Abort => {
            first.say_confirmed(ROLLOUT);
            first.wait_for("d-1", |d| state_of(d, "edge-22") == "installed");
            let t = first.say_confirmed("abort d-1");
            assert_eq!(t["details"]["status"], "rolling_back", "{t}");
        }
        Moment::ManualRollback => {
            first.say_confirmed(ROLLOUT);
            first.wait_for_status("d-1", &["succeeded"]);
            let t = first.say_confirmed("roll back d-1");
            assert_eq!(t["details"]["status"], "rolling_back", "{t}");
        }
    }
    sigkill(first);

    let mut second = run.chat("0.05");
    let notice = second.say("list deployments");
    let message = notice["message"].as_str().unwrap_or("").to_string();
    match moment {
        Moment::BeforeConfirmation => {
            assert!(!message.starts_with("Parley restarted"), "{notice}");
            assert_eq!(notice["details"]["deployments"].as_array().map(Vec::len), Some(0), "nothing started: {notice}");
            let t = second.eventually("which agents run auth-filter 2.1.0?", |t| agents(t).is_empty());
            assert!(agents(&t).is_empty());
        }
        Moment::RightAfterYes | Moment::MidInstall | Moment::MidGate => {
            assert!(message.starts_with("Parley restarted and found 1 interrupted deployment: d-1"), "{notice}");
            let d = second.say("show deployment d-1");
            let reason = d["details"]["reason"].as_str().unwrap().to_string();
            // What the agents were found running is said, and agrees with the journal.
            assert!(
                reason.starts_with("interrupted at step") && reason.contains("Parley stopped; checked 12 agents: "),
                "{reason}"
            );
            let t = second.say_confirmed("resume d-1");
            assert_eq!(t["deployment"], "d-1", "{t}");
            agree(&mut second, "succeeded", &all);
        }
        Moment::AutomaticRollback | Moment::Abort | Moment::ManualRollback => {
            let why = match moment {
                Moment::AutomaticRollback => "health gate failed at step 2 of 4",
                Moment::Abort => "aborted by ",
                _ => "rolled back by ",
            };
            let lead = format!(
                "Parley restarted and found 1 unfinished rollback: d-1 (auth-filter 2.1.0 to ap-south) was rolling back: {why}"
            );
            assert!(message.starts_with(&lead), "{notice}");
            assert!(
                message.contains("Parley stopped while returning its agents and finishes it now (checked 12 agents"),
                "{notice}"
            );
            assert!(!notice["follow_ups"].as_array().unwrap().iter().any(|f| f == "resume d-1"), "{notice}");
            let outcome = if matches!(moment, Moment::Abort) { "aborted" } else { "rolled_back" };
            let done = agree(&mut second, outcome, &[]);
            let reason = done["details"]["reason"].as_str().unwrap();
            assert!(reason.starts_with(why), "the reason the rollback started with is kept: {reason}");
        }
    }
    second.finish();
    eprintln!("kill {moment:?} ({}): consistent", if separate { "separate fleet" } else { "embedded fleet" });
}

#[test]
fn kill_before_confirmation_embedded() {
    kill_at(Moment::BeforeConfirmation, false);
}

#[test]
fn kill_before_confirmation_separate_fleet() {
    kill_at(Moment::BeforeConfirmation, true);
}

#[test]
fn kill_right_after_yes_embedded() {
    kill_at(Moment::RightAfterYes, false);
}

#[test]
fn kill_right_after_yes_separate_fleet() {
    kill_at(Moment::RightAfterYes, true);
}

#[test]
fn kill_mid_install_embedded() {
    kill_at(Moment::MidInstall, false);
}

#[test]
fn kill_mid_install_separate_fleet() {
    kill_at(Moment::MidInstall, true);
}

#[test]
fn kill_mid_gate_embedded() {
    kill_at(Moment::MidGate, false);
}

#[test]
fn kill_mid_gate_separate_fleet() {
    kill_at(Moment::MidGate, true);
}

#[test]
fn kill_during_automatic_rollback_embedded() {
    kill_at(Moment::AutomaticRollback, false);
}

#[test]
fn kill_during_automatic_rollback_separate_fleet() {
    kill_at(Moment::AutomaticRollback, true);
}

#[test]
fn kill_during_abort_embedded() {
    kill_at(Moment::Abort, false);
}

#[test]
fn kill_during_abort_separate_fleet() {
    kill_at(Moment::Abort, true);
}

#[test]
fn kill_during_manual_rollback_embedded() {
    kill_at(Moment::ManualRollback, false);
}

#[test]
fn kill_during_manual_rollback_separate_fleet() {
    kill_at(Moment::ManualRollback, true);
}

/// Two processes on one data directory: the second does not pause the first's live
/// rollout at start-up, refuses to drive it (naming who does), and two "yes" at the
/// same instant start one rollout, not two.
#[test]
fn a_second_process_on_the_same_data_directory_neither_pauses_nor_duplicates_a_live_rollout() {
    let run = Run::new(false, SLOW);
    let mut a = run.chat("1");
    let mut b = run.chat("1");
    // Both asked, both confirm at once.
    assert_eq!(a.say(ROLLOUT)["needs_confirmation"], true);
    assert_eq!(b.say(ROLLOUT)["needs_confirmation"], true);
    let (ta, tb) = std::thread::scope(|s| {
        let ha = s.spawn(|| a.say("yes"));
        let hb = s.spawn(|| b.say("yes"));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    let started: Vec<&Value> = [&ta, &tb].into_iter().filter(|t| t["deployment"] == "d-1").collect();
    assert_eq!(started.len(), 1, "exactly one rollout: {ta} / {tb}");
    let (driver, other, refused) = if ta["deployment"] == "d-1" { (a, b, tb) } else { (b, a, ta) };
    let said = refused["message"].as_str().unwrap();
    assert!(
        said.contains(&format!("another Parley (pid {}) drives the rollouts of this data directory", driver.pid()))
            || said.contains("already part of d-1"),
        "{refused}"
    );
    let mut driver = driver;
    let mut other = other;
    // A third process starting now leaves d-1 running.
    let mut third = run.chat("1");
    let t = third.say("show deployment d-1");
    assert_eq!(t["details"]["status"], "running", "{t}");
    assert!(!t["message"].as_str().unwrap().starts_with("Parley restarted"), "{t}");
    let t = other.say_confirmed("pause d-1");
    let said = t["message"].as_str().unwrap();
    assert!(
        said.starts_with(&format!("another Parley (pid {}) drives the rollouts of this data directory", driver.pid())),
        "{t}"
    );
    let done = driver.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    assert_eq!(targets(&done["details"]).len(), 12);
    let list = third.say("list deployments");
    assert_eq!(list["details"]["deployments"].as_array().map(Vec::len), Some(1), "one, not two: {list}");
    third.finish();
    other.finish();
    driver.finish();
}
