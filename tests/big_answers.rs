//! Big answers are summarised: "how healthy is us-east?" on 500 simulated agents
//! answers with the counts and the unhealthy agents by name (at most ten, then "and N
//! more"), a table of those, and the full table offered as a follow-up that the
//! parser reads; `chat --json` keeps every agent in `details`.

mod common;

use std::process::Command;

use serde_json::Value;

#[test]
fn how_healthy_is_a_region_of_500_agents_is_a_summary_with_the_full_table_offered() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_parley");
    // 2,000 agents, 500 per region: us-east-b's 250 report a p95 over the 500 ms
    // threshold (degraded), and edge-1 (us-east-a) does not answer at all.
    let sim = common::Simulator::start(dir.path(), 2000, Some("latency:900/zone:us-east-b,crash/agent:edge-1"));
    let inventory = &sim.inventory;
    let ask = |args: &[&str]| {
        let out = Command::new(bin)
            .arg("--data-dir")
            .arg(dir.path().join("parley"))
            .arg("--fleet")
            .arg(inventory)
            .arg("ask")
            .args(args)
            .env_remove("PARLEY_AGENT_TOKEN")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };

    let (code, json) = ask(&["--json", "how healthy is us-east?"]);
    assert_eq!(code, Some(0), "{json}");
    let turn: Value = serde_json::from_str(&json).unwrap();
    let message = turn["message"].as_str().unwrap();
    assert!(message.starts_with("us-east: 500 agents, 249 healthy, 250 degraded: "), "{message}");
    // Ten degraded agents named with what is over its threshold, then the rest counted;
    // the one that does not answer by name.
    assert!(message.contains(" (p95 ms "), "{message}");
    assert!(message.contains(" > 500) and 240 more, 1 down: edge-1 (since "), "{message}");
    assert!(
        message.ends_with(
            "). The table shows the first 10 of the 251 not healthy; say \"list all agents in us-east\" for all 500."
        ),
        "{message}"
    );
    // The table: the ten named, worst first, not 500 rows.
    let rows = turn["table"]["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 10, "{}", turn["table"]);
    assert_eq!(rows[0][0], "edge-1");
    assert_eq!(rows[0][2], "down");
    assert!(rows[1..].iter().all(|r| r[2] == "degraded" && r[1] == "us-east-b"), "{}", turn["table"]);
    assert_eq!(turn["table"]["title"], "Health: 10 of 500 (not healthy)");
    // chat --json keeps every agent in details, and says what the table left out.
    assert_eq!(turn["details"]["agents"].as_array().unwrap().len(), 500);
    let summary = &turn["details"]["summary"];
    assert_eq!(summary["total"], 500);
    assert_eq!(summary["counts"]["healthy"], 249);
    assert_eq!(summary["counts"]["degraded"], 250);
    assert_eq!(summary["counts"]["down"], 1);
    assert_eq!(summary["unhealthy"].as_array().unwrap().len(), 251);
    assert_eq!(summary["unhealthy"][0], "edge-1");
    assert_eq!(summary["rows_shown"], 10);
    assert_eq!(summary["full"], "list all agents in us-east");
    assert_eq!(turn["follow_ups"][0], "list all agents in us-east");

    // The follow-up is the full table.
    let (code, json) = ask(&["--json", "list all agents in us-east"]);
    assert_eq!(code, Some(0), "{json}");
    let turn: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        turn["operation"],
        serde_json::json!({"op": "find_agents", "scope": ["region:us-east"], "all": true}),
        "{json}"
    );
    assert_eq!(turn["table"]["rows"].as_array().unwrap().len(), 500);
    assert!(turn["details"].get("summary").is_none());

    // A search as big is summarised the same way, counts included.
    let (_, json) = ask(&["--json", "which agents in us-east run auth-filter?"]);
    let turn: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(turn["table"]["rows"].as_array().unwrap().len(), 10, "{json}");
    let message = turn["message"].as_str().unwrap();
    // edge-1 never answered, so nobody knows what it runs: 499 found.
    assert!(message.starts_with("Found 499 agents in us-east running auth-filter: "), "{message}");
    assert!(
        message.contains(
            " Of the 499: 249 healthy, 250 degraded. Not healthy: edge-5 (degraded), edge-13 (degraded), edge-21 (degraded), "
        ),
        "{message}"
    );
    assert!(
        message.ends_with(
            " and 240 more. The table shows the first 10 of the 250 not healthy; \
             say \"list all agents in us-east running auth-filter\" for all 499."
        ),
        "{message}"
    );
    assert_eq!(turn["follow_ups"][0], "list all agents in us-east running auth-filter");

    // As text (`ask`, the REPL): a screenful, not 500 rows.
    let (code, text) = ask(&["how healthy is us-east?"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.lines().count() < 40, "{text}");
    assert!(text.contains("[1] list all agents in us-east"), "{text}");
    assert!(text.contains("Health: 10 of 500 (not healthy)"), "{text}");
}
