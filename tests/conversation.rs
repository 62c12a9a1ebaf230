//! Multi-turn conversations through `parley chat --json` on the embedded demo fleet,
//! checking the exact operations and the fleet state they leave.

mod common;

use common::{demo_region, Chat};
use serde_json::{json, Value};

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
}

#[test]
fn slot_filling_confirmation_rollout_and_roll_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);

    let t = chat.say("roll out auth-filter");
    assert_eq!(t["operation"], json!({"op": "deploy", "extension": "auth-filter"}));
    assert_eq!(t["missing"], json!(["version", "scope"]));
    assert_eq!(t["outcome"], "needs_input");

    let t = chat.say("2.1");
    assert_eq!(t["operation"], json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0"}));
    assert_eq!(t["missing"], json!(["scope"]));

    let t = chat.say("ap south");
    assert_eq!(
        t["operation"],
        json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:ap-south"]})
    );
    assert_eq!(t["feasible"], true);
    assert_eq!(t["needs_confirmation"], true);
    assert_eq!(strings(&t["details"]["targets"]), demo_region("ap-south"));

    let t = chat.say("yes");
    assert_eq!(t["outcome"], "started");
    assert_eq!(t["deployment"], "d-1");

    let done = chat.wait_for_status("d-1", &["succeeded", "failed", "rolled_back"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    let installed: Vec<&str> =
        done["details"]["targets"].as_array().unwrap().iter().map(|t| t["state"].as_str().unwrap()).collect();
    assert_eq!(installed, vec!["installed"; 12]);

    // The model, polled from the agents over HTTP, now shows exactly ap-south on 2.1.0.
    let t = chat.eventually("which agents run auth-filter 2.1.0?", |t| strings(&t["details"]["agents"]).len() == 12);
    assert_eq!(strings(&t["details"]["agents"]), demo_region("ap-south"));
    let t = chat.say("which agents run auth-filter 2.0.3?");
    assert_eq!(strings(&t["details"]["agents"]).len(), 36);

    // "it" is the deployment this conversation started.
    let t = chat.say("roll it back");
    assert_eq!(t["operation"], json!({"op": "rollback", "deployment": "d-1"}));
    assert_eq!(t["needs_confirmation"], true);
    let t = chat.say("yes");
    assert_eq!(t["deployment"], "d-1");
    let back = chat.wait_for_status("d-1", &["rolled_back", "failed"]);
    assert_eq!(back["details"]["status"], "rolled_back", "{back}");
    chat.eventually("which agents run auth-filter 2.0.3?", |t| strings(&t["details"]["agents"]).len() == 48);
    chat.finish();
}

#[test]
fn cancel_drops_a_risky_request_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let t = chat.say("drain edge seven");
    assert_eq!(t["operation"], json!({"op": "drain", "agent": "edge-7"}));
    assert_eq!(t["needs_confirmation"], true);
    let t = chat.say("no");
    assert_eq!(t["outcome"], "cancelled");
    assert_eq!(t["message"], "Cancelled: Drain edge-7. Nothing was changed.");
    let t = chat.say("show agent edge-7");
    assert_eq!(t["details"]["state"], "active");
    let t = chat.say("yes");
    assert_eq!(t["message"], "Nothing is waiting for confirmation.");

    // Confirmed, the same request drains the agent, and "it" is that agent.
    chat.say("drain edge-7");
    let t = chat.say("yes");
    assert_eq!(t["outcome"], "done", "{t}");
    let t = chat.eventually("show agent edge-7", |t| t["details"]["state"] == "drained");
    assert_eq!(t["details"]["region"], "us-west");
    let t = chat.say("uncordon it");
    assert_eq!(t["operation"], json!({"op": "uncordon", "agent": "edge-7"}));
    chat.say("yes");
    chat.eventually("show agent edge-7", |t| t["details"]["state"] == "active");
    chat.finish();
}

#[test]
fn infeasible_requests_say_why_and_offer_what_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);

    let t = chat.say("deploy model-server 0.4.0 to eu-west");
    assert_eq!(t["feasible"], false);
    assert_eq!(
        t["details"]["reasons"],
        json!(["model-server needs gpu, which 10 of the 12 agents in scope lack: edge-13, edge-14, edge-15, edge-16, edge-17, edge-18 and 4 more."])
    );
    let alternative = t["follow_ups"][0].as_str().unwrap().to_string();
    assert_eq!(alternative, "roll out model-server 0.4.0 to the gpu agents in eu-west");
    // The alternative is itself a request Parley understands and can carry out.
    let t = chat.say(&alternative);
    assert_eq!(
        t["operation"],
        json!({"op": "deploy", "extension": "model-server", "version": "0.4.0", "scope": ["region:eu-west", "capability:gpu"]})
    );
    assert_eq!(t["feasible"], true);
    assert_eq!(strings(&t["details"]["targets"]), ["gpu-5", "gpu-6"]);
    chat.say("cancel");

    let t = chat.say("drain edge-70");
    assert_eq!(t["feasible"], false);
    assert!(
        t["message"].as_str().unwrap().starts_with("There is no agent `edge-70` in the fleet. Did you mean edge-7"),
        "{t}"
    );

    let t = chat.say("roll out auth-filter 3.0 to ap-south");
    assert_eq!(t["feasible"], false);
    assert_eq!(t["follow_ups"], json!(["roll out auth-filter 2.1.0 to ap-south"]));

    let t = chat.say("roll it back");
    assert_eq!(t["feasible"], false);
    assert_eq!(t["message"], "There are no deployments yet, so there is nothing to refer to.");

    let t = chat.say("flibber the quux");
    assert_eq!(t["operation"], Value::Null);
    assert_eq!(t["outcome"], "not_understood");
    chat.finish();
}

#[test]
fn a_failing_health_gate_rolls_the_rollout_back_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &["--demo-faults", "error-spike:auth-filter@2.1.0/region:ap-south"]);
    chat.say("roll out auth-filter 2.1.0 to ap-south");
    let t = chat.say("yes");
    assert_eq!(t["deployment"], "d-1");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "rolled_back", "{done}");
    let reason = done["details"]["reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    chat.eventually("which agents run auth-filter 2.0.3?", |t| strings(&t["details"]["agents"]).len() == 48);
    chat.finish();
}
