//! Each strategy driven through `parley chat --json` against the embedded demo fleet:
//! a clean canary, a canary whose 25% step spikes the error rate, blue-green switch and
//! switch-back, and a progressive rollout that waits for "promote".

mod common;

use common::{demo_region, Chat};
use serde_json::Value;

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

fn states(details: &Value) -> Vec<(String, String)> {
    details["targets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| (t["agent"].as_str().unwrap_or("").to_string(), t["state"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn waiting(details: &Value) -> bool {
    details["status"] == "paused" && details["reason"].as_str().unwrap_or("").starts_with("waiting for promote")
}

#[test]
fn a_clean_canary_reaches_100_percent_in_the_default_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say("canary auth-filter 2.1.0 to ap-south");
    let plan = strings(&t["details"]["plan"]);
    // 1, 5, 10, 25, 50, 100% of 12 agents: 1% and 5% are both one agent.
    assert_eq!(plan.len(), 5, "{t}");
    assert!(plan[0].starts_with("step 1: 1 agent (1 of 12 agents, 8%): edge-19; bake"), "{}", plan[0]);
    assert!(plan[2].starts_with("step 3: 1 agent (3 of 12 agents, 25%): edge-21;"), "{}", plan[2]);
    assert!(plan[0].contains("gate: error rate < 1%, p95 < 500 ms, cpu < 80%, memory < 85%"), "{}", plan[0]);
    let t = chat.say_confirmed("canary auth-filter 2.1.0 to ap-south");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    assert!(states(&done["details"]).iter().all(|(_, s)| s == "installed"));
    let t = chat.eventually("which agents run auth-filter 2.1.0?", |t| strings(&t["details"]["agents"]).len() == 12);
    assert_eq!(strings(&t["details"]["agents"]), demo_region("ap-south"));
    chat.finish();
}

#[test]
fn a_canary_that_spikes_at_the_25_percent_step_is_rolled_back_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    // edge-21 is the agent the 25% step adds.
    let mut chat = Chat::start(dir.path(), &["--demo-faults", "error-spike:auth-filter@2.1.0/agent:edge-21"]);
    let t = chat.say_confirmed("canary auth-filter 2.1.0 to ap-south");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "rolled_back", "{done}");
    let reason = done["details"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("health gate failed at step 3 of 5 (25%): error rate"), "{reason}");
    assert!(reason.contains("> 1% (baseline ") && reason.contains("on edge-21"), "{reason}");
    assert!(reason.contains("3 agents returned to auth-filter 2.0.3"), "{reason}");
    chat.eventually("which agents run auth-filter 2.0.3?", |t| strings(&t["details"]["agents"]).len() == 48);

    // The report reads the journal: two gates passed, the third failed on the error rate.
    let t = chat.say("deployment report for the last 30 days");
    assert_eq!(t["operation"]["op"], "report", "{t}");
    let r = &t["details"];
    assert_eq!(r["total"], 1, "{t}");
    assert_eq!(r["by_status"]["rolled_back"], 1);
    assert_eq!(r["rollback_rate"], 1.0);
    assert_eq!(r["gates_by_outcome"], serde_json::json!({"successful": 2, "inconclusive": 0, "error": 0, "failed": 1}));
    assert_eq!(r["failed_gates_by_kind"], serde_json::json!({"error rate": 1}));
    let timeline = r["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 31, "{t}");
    let today = timeline.last().unwrap();
    assert_eq!((today["total"].clone(), today["by_status"].clone()), (1.into(), serde_json::json!({"rolled_back": 1})));
    assert!(
        t["message"].as_str().unwrap().ends_with("3 health gates evaluated, 1 did not pass (error rate 1)."),
        "{t}"
    );
    let rows = t["table"]["rows"].as_array().unwrap();
    assert!(rows.contains(&serde_json::json!(["failed gates", "error rate", "1", ""])), "{t}");
    chat.finish();
}

#[test]
fn blue_green_switches_and_switches_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say("roll out auth-filter 2.1.0 to ap-south as blue-green");
    let plan = strings(&t["details"]["plan"]);
    assert_eq!(plan.len(), 3, "{t}");
    assert!(plan[0].starts_with("step 1: green: 6 agents (6 of 12 agents, 50%)"), "{}", plan[0]);
    assert!(plan[1].contains("mark green live"), "{}", plan[1]);
    assert!(plan[2].starts_with("step 3: retire blue: 6 agents (12 of 12 agents, 100%)"), "{}", plan[2]);
    chat.say("yes");
    let t = chat.wait_for("d-1", waiting);
    assert!(t["details"]["reason"].as_str().unwrap().contains("to switch"), "{t}");
    let t = chat.say_confirmed("switch");
    assert_eq!(t["operation"]["op"], "promote", "{t}");
    let t = chat.wait_for("d-1", |d| waiting(d) && d["current_step"] == 1);
    assert!(t["details"]["reason"].as_str().unwrap().contains("to retire blue"), "{t}");
    let on_new =
        chat.eventually("which agents run auth-filter 2.1.0?", |t| strings(&t["details"]["agents"]).len() == 6);
    assert_eq!(strings(&on_new["details"]["agents"]), demo_region("ap-south")[..6].to_vec());

    let t = chat.say_confirmed("switch back");
    assert_eq!(t["operation"]["op"], "rollback", "{t}");
    let done = chat.wait_for_status("d-1", &["rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "rolled_back", "{done}");
    assert!(done["details"]["reason"].as_str().unwrap().starts_with("switched back to blue"), "{done}");
    chat.eventually("which agents run auth-filter 2.0.3?", |t| strings(&t["details"]["agents"]).len() == 48);
    chat.finish();
}

#[test]
fn a_progressive_rollout_waits_for_promote() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say_confirmed("roll out auth-filter 2.1.0 to ap-south as a progressive rollout");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let t = chat.wait_for("d-1", waiting);
    let reason = t["details"]["reason"].as_str().unwrap();
    assert!(reason.contains("canary (step 1 of 3) passed its gate; promote starts half"), "{reason}");
    let installed = states(&t["details"]).iter().filter(|(_, s)| s == "installed").count();
    assert_eq!(installed, 2);
    // It stays there until promoted.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let t = chat.say("show deployment d-1");
    assert!(waiting(&t["details"]), "{t}");
    let t = chat.say_confirmed("promote it");
    assert_eq!(t["operation"]["op"], "promote", "{t}");
    chat.wait_for("d-1", |d| waiting(d) && d["current_step"] == 1);
    chat.say_confirmed("approve the next phase");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    chat.finish();
}

#[test]
fn a_failure_budget_said_with_the_rollout_lets_it_succeed_naming_the_failed_agents() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(
        dir.path(),
        &[
            "--demo-faults",
            "install-fail:auth-filter@2.1.0/agent:edge-20, install-fail:auth-filter@2.1.0/agent:core-14",
        ],
    );
    let t = chat.say_confirmed("roll out auth-filter 2.1.0 to ap-south in batches of 4, allow 2 failures");
    assert_eq!(t["operation"]["max_failures"], 2, "{t}");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    let reason = done["details"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("10 of 12 agents on auth-filter 2.1.0; failed within the failure budget: "), "{reason}");
    assert!(reason.contains("edge-20 (install failed: ") && reason.contains("core-14 (install failed: "), "{reason}");
    chat.finish();
}

#[test]
fn an_overlapping_rollout_can_be_queued_and_starts_when_the_first_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    chat.say_confirmed("progressive rollout of auth-filter 2.1.0 to ap-south");
    chat.wait_for("d-1", waiting);
    let t = chat.say("roll out log-shipper 1.5.0 to ap-south");
    assert_eq!(t["feasible"], false, "{t}");
    assert!(strings(&t["follow_ups"]).contains(&"queue it".to_string()), "{t}");
    let t = chat.say_confirmed("queue it");
    assert_eq!(t["operation"]["queue"], true, "{t}");
    assert_eq!(t["operation"]["extension"], "log-shipper", "{t}");
    assert_eq!(t["deployment"], "d-2", "{t}");
    let t = chat.say("show deployment d-2");
    assert_eq!(t["details"]["status"], "pending", "{t}");
    assert_eq!(t["details"]["reason"], "queued behind d-1", "{t}");
    chat.say_confirmed("abort d-1");
    let done = chat.wait_for_status("d-2", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    assert_eq!(chat.say("show deployment d-1")["details"]["status"], "aborted");
    chat.finish();
}

/// Zone `a` of a demo region: the first half of each tier's agents there.
fn zone_a(region: &str) -> Vec<String> {
    let all = demo_region(region);
    all.iter().filter(|a| ["edge", "core", "gpu"].iter().any(|t| zone_a_of(&all, a, t))).cloned().collect()
}

fn zone_a_of(all: &[String], agent: &str, tier: &str) -> bool {
    let of_tier: Vec<&String> = all.iter().filter(|a| a.starts_with(&format!("{tier}-"))).collect();
    of_tier.iter().position(|a| *a == agent).is_some_and(|i| i < of_tier.len() / 2)
}

#[test]
fn a_progressive_rollout_by_zone_has_a_phase_per_zone_and_waits_for_promote_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say("progressive rollout of auth-filter 2.1 to eu-west by zone");
    assert_eq!(t["operation"]["strategy"], serde_json::json!({"kind": "progressive", "group_by": "zone"}), "{t}");
    assert!(
        t["message"]
            .as_str()
            .unwrap()
            .starts_with("Roll out auth-filter 2.1.0 to 12 agents in eu-west (progressive by zone)."),
        "{t}"
    );
    let plan = strings(&t["details"]["plan"]);
    assert_eq!(plan.len(), 2, "{t}");
    assert!(
        plan[0]
            .starts_with("step 1: eu-west-a: 6 agents (6 of 12 agents, 50%): edge-13, edge-14, edge-15, core-9, core-10, gpu-5; bake"),
        "{}",
        plan[0]
    );
    assert!(plan[0].ends_with("; then wait for promote"), "{}", plan[0]);
    assert!(
        plan[1].starts_with(
            "step 2: eu-west-b: 6 agents (12 of 12 agents, 100%): edge-16, edge-17, edge-18, core-11, core-12, gpu-6; bake"
        ),
        "{}",
        plan[1]
    );
    let t = chat.say("yes");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let t = chat.wait_for("d-1", waiting);
    let reason = t["details"]["reason"].as_str().unwrap();
    assert!(reason.contains("eu-west-a (step 1 of 2) passed its gate; promote starts eu-west-b"), "{reason}");
    let on_new =
        chat.eventually("which agents run auth-filter 2.1.0?", |t| strings(&t["details"]["agents"]).len() == 6);
    assert_eq!(strings(&on_new["details"]["agents"]), zone_a("eu-west"));
    chat.say_confirmed("promote d-1");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    chat.eventually("which agents run auth-filter 2.1.0?", |t| strings(&t["details"]["agents"]).len() == 12);
    chat.finish();
}

#[test]
fn phases_staging_then_production_without_approval_run_through_staging_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say("progressive rollout of auth-filter 2.1 in phases staging then production without approval");
    assert_eq!(t["operation"]["scope"], serde_json::json!(["fleet"]), "{t}");
    assert_eq!(t["operation"]["strategy"]["phases"], serde_json::json!(["env:staging", "env:production"]), "{t}");
    assert_eq!(t["operation"]["require_approval"], false, "{t}");
    let plan = strings(&t["details"]["plan"]);
    assert_eq!(plan.len(), 2, "{t}");
    assert!(plan[0].starts_with("step 1: staging: 12 agents (12 of 48 agents, 25%): edge-19, edge-20,"), "{}", plan[0]);
    assert!(
        plan[1].starts_with("step 2: production: 36 agents (48 of 48 agents, 100%): edge-1, edge-2,"),
        "{}",
        plan[1]
    );
    assert!(plan.iter().all(|l| !l.contains("wait for promote")), "{plan:?}");
    chat.say("yes");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    // Staging (ap-south) went first: its agents are step 1's.
    let targets = done["details"]["targets"].as_array().unwrap();
    let first: Vec<&str> =
        targets.iter().filter(|t| t["step"] == 0).map(|t| t["agent"].as_str().unwrap_or("")).collect();
    assert_eq!(first, demo_region("ap-south"), "{done}");
    chat.finish();
}

#[test]
fn phases_that_leave_agents_out_are_refused_before_anything_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say("progressive rollout of auth-filter 2.1 to eu-west in phases eu-west-a");
    assert_eq!(t["outcome"], "infeasible", "{t}");
    assert_eq!(
        t["message"],
        "Cannot plan the deployment: edge-16, edge-17, edge-18, core-11, core-12 and 1 more are in none of the \
         phases (zone:eu-west-a); add a phase for them or narrow the scope.",
        "{t}"
    );
    chat.finish();
}
