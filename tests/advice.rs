//! What Parley suggests and what it asks a yes/no for, through `parley chat --json`:
//! follow-ups come from the deployment lifecycle, safest first, and never offer what
//! would be refused; a question never pushes a production change; "undo that" undoes
//! the last thing acted on, of any kind; a confirmation shows what is confirmed.

mod common;

use common::Chat;
use serde_json::{json, Value};

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn waiting(details: &Value) -> bool {
    details["status"] == "paused" && details["reason"].as_str().unwrap_or("").starts_with("waiting for promote")
}

#[test]
fn after_a_failed_health_gate_the_first_follow_up_is_a_look_not_a_retry() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &["--demo-faults", "error-spike:auth-filter@2.1.0/agent:edge-21"]);
    let t = chat.say_confirmed("canary auth-filter 2.1.0 to ap-south");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "rolled_back", "{done}");
    assert_eq!(done["follow_ups"], json!(["how healthy is ap-south?", "retry d-1"]), "{done}");
    chat.finish();
}

#[test]
fn a_question_about_extensions_suggests_no_production_rollout() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    // us-east is production and runs auth-filter 2.0.3 where the catalog has 2.1.0.
    let t = chat.say("list extensions in us-east");
    assert_eq!(t["outcome"], "answered", "{t}");
    assert_eq!(t["follow_ups"], json!([]), "{t}");
    chat.finish();
}

#[test]
fn a_started_rollout_offers_only_what_it_admits() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say_confirmed("roll out auth-filter 2.1.0 to ap-south");
    assert_eq!(t["outcome"], "started", "{t}");
    // Not "roll it back": a running rollout is aborted, and a rollback would be refused.
    assert_eq!(t["follow_ups"], json!(["show deployment d-1", "pause d-1", "abort d-1"]), "{t}");
    chat.wait_for_status("d-1", &["succeeded"]);
    chat.finish();
}

#[test]
fn a_rollout_waiting_for_approval_offers_promote_and_never_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    chat.say_confirmed("roll out auth-filter 2.1.0 to ap-south as blue-green");
    let t = chat.wait_for("d-1", waiting);
    assert_eq!(t["follow_ups"], json!(["show deployment d-1", "abort d-1", "promote d-1"]), "{t}");
    let t = chat.say("resume d-1");
    assert_eq!(t["feasible"], false, "{t}");
    let message = t["message"].as_str().unwrap();
    assert!(
        message.starts_with("d-1 is waiting for approval, not paused (waiting for promote to switch:"),
        "{message}"
    );
    assert!(message.contains("say \"promote d-1\" to go on, or \"abort d-1\"."), "{message}");
    assert_eq!(t["follow_ups"], json!(["show deployment d-1", "abort d-1", "promote d-1"]), "{t}");
    chat.say_confirmed("abort d-1");
    chat.wait_for_status("d-1", &["aborted"]);
    chat.finish();
}

#[test]
fn undo_after_a_traffic_shift_restores_the_routing_not_an_unrelated_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    chat.say_confirmed("roll out auth-filter 2.1.0 to ap-south");
    chat.wait_for_status("d-1", &["succeeded"]);
    let t = chat.say_confirmed("shift 20% of us-east's traffic to us-west");
    assert_eq!(t["outcome"], "done", "{t}");
    let t = chat.say("undo that");
    assert_eq!(t["operation"], json!({"op": "failback", "region": "us-east"}), "{t}");
    let t = if t["needs_confirmation"] == true { chat.say("yes") } else { t };
    assert_eq!(t["outcome"], "done", "{t}");
    let t = chat.say("show routing");
    assert_eq!(t["message"].as_str().unwrap().split(" (routing").next(), Some("Every region serves its own traffic"));
    // The deployment was left alone.
    let t = chat.say("show deployment d-1");
    assert_eq!(t["details"]["status"], "succeeded", "{t}");
    chat.finish();
}

#[test]
fn undo_after_a_drain_puts_the_agent_back_and_after_a_restart_says_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say_confirmed("drain edge-19");
    assert_eq!(t["outcome"], "done", "{t}");
    let t = chat.say_confirmed("undo that");
    assert_eq!(t["operation"], json!({"op": "uncordon", "agent": "edge-19"}), "{t}");
    assert_eq!(t["outcome"], "done", "{t}");
    let t = chat.say_confirmed("restart edge-20");
    assert_eq!(t["outcome"], "done", "{t}");
    let t = chat.say("undo that");
    assert_eq!(t["feasible"], false, "{t}");
    assert_eq!(t["message"], "The last change restarted edge-20; a restart cannot be undone.");
    assert_eq!(t["follow_ups"], json!(["show agent edge-20"]));
    chat.finish();
}

#[test]
fn a_rollout_confirmation_shows_its_plan_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say("roll out auth-filter 2.1.0 to us-east as a canary, 25% then 100%");
    assert_eq!(t["needs_confirmation"], true, "{t}");
    let table = &t["table"];
    assert_eq!(table["title"], "Plan", "{t}");
    // A canary has no phase names, so the plan has no phase column.
    assert_eq!(strings(&table["columns"]), ["Step", "Agents", "Reached", "Bake", "Gate", "Then"]);
    let gate = "error rate < 1%, p95 < 500 ms, cpu < 80%, memory < 85%";
    assert_eq!(
        table["rows"],
        json!([
            ["1", "3: edge-1, edge-2, edge-3", "3 of 12 (25%)", "50 ms", gate, "next step"],
            [
                "2",
                "9: edge-4, edge-5, edge-6, core-1, core-2, core-3 and 3 more",
                "12 of 12 (100%)",
                "50 ms",
                gate,
                "done"
            ],
        ]),
        "{t}"
    );
    chat.say("no");
    // Phases have names, and then the plan shows them.
    let t = chat.say("progressive rollout of auth-filter 2.1 to eu-west by zone");
    assert_eq!(t["needs_confirmation"], true, "{t}");
    assert_eq!(strings(&t["table"]["columns"]), ["Step", "Phase", "Agents", "Reached", "Bake", "Gate", "Then"]);
    let phases: Vec<&str> = t["table"]["rows"].as_array().unwrap().iter().map(|r| r[1].as_str().unwrap()).collect();
    assert_eq!(phases, ["eu-west-a", "eu-west-b"], "{t}");
    chat.say("no");
    chat.finish();
}

#[test]
fn a_rollback_confirmation_names_the_versions_it_returns_to_per_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    chat.say_confirmed("roll out rate-limiter 0.9.0 to edge-19");
    chat.wait_for_status("d-1", &["succeeded"]);
    chat.say_confirmed("roll out rate-limiter 1.1.0 to ap-south");
    chat.wait_for_status("d-2", &["succeeded"]);
    let t = chat.say("roll back d-2");
    assert_eq!(t["needs_confirmation"], true, "{t}");
    assert_eq!(
        t["message"],
        "Roll back d-2 (rate-limiter 1.1.0): return 11 agents to rate-limiter 1.0.0 and 1 to rate-limiter 0.9.0. \
         This needs confirmation because it changes 12 of 12 agents in ap-south (more than a quarter). Proceed? (yes/no)"
    );
    chat.say("no");
    chat.finish();
}
