//! The dialog session through the library API, on a real in-process demo fleet:
//! confirmation expiry, roles, and the audit log of executed operations.

use std::path::Path;
use std::time::Duration;

use parley::app::Parley;
use parley::config::{Config, FleetSource};
use parley::ops::{Actor, Role};
use parley::registry::AuditResult;
use parley::reply::Outcome;

/// A config file of its own, so the test does not depend on the user's.
fn config(dir: &Path) -> Config {
    let path = dir.join("parley.toml");
    let text = "data_dir = \"state\"\n[rollout]\nbake_secs = 0.02\n[poll]\ninterval_ms = 200\n";
    std::fs::write(&path, text).unwrap();
    let config = Config::load(Some(&path)).unwrap();
    assert_eq!(config.fleet, FleetSource::Demo { faults: String::new() });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_expires_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut session = parley.session(Actor::new("alice", "test", Role::Operator));
    session.set_confirmation_ttl(Duration::from_millis(50));

    let r = session.handle("restart edge-3").await;
    assert!(r.needs_confirmation, "{}", r.message);
    assert!(session.awaiting_confirmation());
    tokio::time::sleep(Duration::from_millis(120)).await;
    let r = session.handle("yes").await;
    assert_eq!(r.outcome, Outcome::Cancelled);
    assert!(
        r.message.starts_with("That confirmation expired after 0 minutes, so nothing was changed: Restart edge-3."),
        "{}",
        r.message
    );
    assert_eq!(r.follow_ups, ["restart edge-3"]);
    let r = session.handle("show agent edge-3").await;
    assert!(r.message.contains("is healthy and active"), "{}", r.message);
    parley.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_may_look_but_not_change_and_everything_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut viewer = parley.session(Actor::new("victor", "slack:C042", Role::Viewer));
    let r = viewer.handle("how healthy is us-east?").await;
    assert_eq!(r.outcome, Outcome::Answered);
    let r = viewer.handle("drain edge-2").await;
    assert_eq!(r.outcome, Outcome::Refused);
    assert_eq!(r.message, "drain needs the operator role; victor is a viewer.");

    let mut operator = parley.session(Actor::new("olga", "repl", Role::Operator));
    let r = operator.handle("cordon edge-20").await;
    assert_eq!(r.outcome, Outcome::Done, "{}", r.message);
    assert_eq!(r.message, "edge-20 is cordoned: it keeps serving but takes no new work or rollouts (state: cordoned).");
    let r = operator.handle("cordon edge-20").await;
    assert_eq!(r.outcome, Outcome::Infeasible);
    assert_eq!(r.message, "edge-20 is already cordoned. Instead you could say: \"uncordon edge-20\".");

    let audit = parley.services().registry.list_audit(None, 10).await.unwrap();
    let rows: Vec<(&str, &str, &str, AuditResult, Option<&str>)> = audit
        .iter()
        .map(|a| {
            (
                a.actor.as_str(),
                a.frontend.as_str(),
                a.utterance.as_str(),
                a.result,
                a.operation.as_ref().and_then(|o| o["op"].as_str()),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("victor", "slack:C042", "how healthy is us-east?", AuditResult::Ok, Some("show_health")),
            ("victor", "slack:C042", "drain edge-2", AuditResult::Refused, Some("drain")),
            ("olga", "repl", "cordon edge-20", AuditResult::Ok, Some("cordon")),
            ("olga", "repl", "cordon edge-20", AuditResult::Infeasible, Some("cordon")),
        ]
    );
    parley.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborting_someone_elses_rollout_takes_an_admin() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut olga = parley.session(Actor::new("olga", "slack:C1", Role::Operator));
    // One staging agent: not risky, so it starts at once.
    let r = olga.handle("roll out auth-filter 2.1.0 to edge-19").await;
    assert_eq!(r.outcome, Outcome::Started, "{}", r.message);
    assert_eq!(r.deployment.as_deref(), Some("d-1"));

    let mut otto = parley.session(Actor::new("otto", "slack:C1", Role::Operator));
    let r = otto.handle("abort d-1").await;
    assert_eq!(r.outcome, Outcome::Refused);
    assert_eq!(r.message, "abort needs the admin role (d-1 was started by olga); otto is an operator.");

    let mut ada = parley.session(Actor::new("ada", "repl", Role::Admin));
    let r = ada.handle("abort d-1").await;
    assert_ne!(r.outcome, Outcome::Refused, "{}", r.message);
    parley.shutdown().await;
}

/// Operations the audit log records as carried out, as `(op, utterance)`.
async fn executed(parley: &Parley) -> Vec<(String, String)> {
    let audit = parley.services().registry.list_audit(None, 1000).await.unwrap();
    audit
        .iter()
        .filter(|a| a.result == AuditResult::Ok)
        .filter_map(|a| {
            let op = a.operation.as_ref()?["op"].as_str()?.to_string();
            let mutates = parley::ops::Operation::from_json(a.operation.clone()?).ok()?.mutates();
            mutates.then(|| (op, a.utterance.clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noise_and_yes_spam_confirm_nothing_and_a_plain_yes_does() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut session = parley.session(Actor::new("olga", "test", Role::Operator));
    let r = session.handle("drain edge-7").await;
    assert!(r.needs_confirmation, "{}", r.message);

    // `chat --json` reads "\xffk\xff" as U+FFFD k U+FFFD.
    let spam = "yes ".repeat(10_000);
    for noise in ["\u{fffd}k\u{fffd}", "k", "y", "\u{fffd}yes\u{fffd}", "yes yes yes yes yes", spam.as_str()] {
        let r = session.handle(noise).await;
        assert_eq!(r.outcome, Outcome::NeedsConfirmation, "{noise:.40?}: {}", r.message);
        assert_eq!(r.message, "I'm waiting for yes or no on: Drain edge-7.", "{noise:.40?}");
    }
    assert_eq!(executed(&parley).await, []);

    let r = session.handle("Yes.").await;
    assert_eq!(r.outcome, Outcome::Done, "{}", r.message);
    assert_eq!(executed(&parley).await, [("drain".to_string(), "drain edge-7".to_string())]);
    parley.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_new_command_answering_a_question_is_handled_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut session = parley.session(Actor::new("olga", "test", Role::Operator));

    let r = session.handle("restart").await;
    assert_eq!((r.outcome, r.message.as_str()), (Outcome::NeedsInput, "Which agent should I restart?"));
    let r = session.handle("how healthy is edge-20?").await;
    assert_eq!(r.outcome, Outcome::Answered, "{}", r.message);
    assert_eq!(r.message, "edge-20: 1 agent, 1 healthy.");
    assert_eq!(executed(&parley).await, [], "nothing restarted");

    let r = session.handle("drain edge-99999999999").await;
    assert_eq!(r.outcome, Outcome::Infeasible);
    assert!(r.message.starts_with("There is no agent `edge-99999999999` in the fleet."), "{}", r.message);
    let r = session.handle("restart").await;
    assert_eq!(r.outcome, Outcome::NeedsInput);
    let r = session.handle("cordon edge-19").await;
    assert_eq!(r.outcome, Outcome::Done, "{}", r.message);
    assert_eq!(r.message, "edge-19 is cordoned: it keeps serving but takes no new work or rollouts (state: cordoned).");
    assert_eq!(executed(&parley).await, [("cordon".to_string(), "cordon edge-19".to_string())]);

    // A bare value still answers the question, even one that alone reads as a command
    // ("edge-20" on its own shows that agent).
    session.handle("restart").await;
    let r = session.handle("edge-20").await;
    assert_eq!(r.outcome, Outcome::Done, "{}", r.message);
    assert_eq!(r.operation.map(|o| o.to_json()), Some(serde_json::json!({"op": "restart", "agent": "edge-20"})));
    parley.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modifiers_said_with_an_answer_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut session = parley.session(Actor::new("olga", "test", Role::Operator));
    let op = |r: &parley::reply::Reply| r.operation.as_ref().map(|o| o.to_json());

    session.handle("roll out auth-filter 2.1").await;
    let r = session.handle("roll out auth-filter 2.1 to eu-west with at most 1 unavailable").await;
    assert!(r.needs_confirmation, "{}", r.message);
    assert_eq!(
        op(&r),
        Some(serde_json::json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0",
            "scope": ["region:eu-west"], "strategy": {"kind": "rolling", "max_unavailable": 1}}))
    );
    session.handle("no").await;

    session.handle("roll out auth-filter 2.1").await;
    let r = session.handle("us-east, as a canary, 10% then 50%").await;
    assert!(r.needs_confirmation, "{}", r.message);
    assert_eq!(
        op(&r),
        Some(serde_json::json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0",
            "scope": ["region:us-east"], "strategy": {"kind": "canary", "steps": [10, 50]}}))
    );
    session.handle("no").await;
    assert_eq!(executed(&parley).await, []);
    parley.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_input_is_refused_never_bent() {
    let dir = tempfile::tempdir().unwrap();
    let parley = Parley::start(&config(dir.path())).await.unwrap();
    let mut session = parley.session(Actor::new("olga", "test", Role::Operator));
    let r = session.handle("roll out auth-filter 2.1.0 to edge-19").await;
    assert_eq!(r.deployment.as_deref(), Some("d-1"), "{}", r.message);
    let routing = parley.services().router.table();

    let r = session.handle("pause d-18446744073709551615").await;
    assert_eq!(r.outcome, Outcome::Infeasible);
    assert!(
        r.message.starts_with("There is no deployment d-18446744073709551615; the latest is d-1."),
        "{}",
        r.message
    );
    for (said, why) in [
        ("send -50% of eu-west's traffic to us-east", "\"-50%\" is out of range: a negative number means nothing here"),
        ("send 2.5% of eu-west's traffic to us-east", "\"2.5%\" is out of range: shares are whole percentages"),
        (
            "roll out auth-filter 2.1 to eu-west and allow -3 failures",
            "\"-3\" is out of range: a negative number means nothing here",
        ),
        (
            "roll out auth-filter 2.1 to us-east as a canary -1% then 50%",
            "\"-1%\" is out of range: a negative number means nothing here",
        ),
        (
            "roll out auth-filter 2.1 to us-west in batches of 18446744073709551616",
            "\"18446744073709551616\" is out of range: the number is far larger than anything it could count",
        ),
        (
            "roll out auth-filter 2.1 to us-west with at most 1e309 unavailable",
            "\"1e309\" is out of range: numbers are whole numbers in plain digits",
        ),
        (
            "roll out auth-filter 2.1e309 to eu-west",
            "\"2.1e309\" is out of range: numbers are whole numbers in plain digits",
        ),
    ] {
        let r = session.handle(said).await;
        assert_eq!(r.outcome, Outcome::NotUnderstood, "{said}: {}", r.message);
        assert_eq!(r.message, format!("I can't act on that: {why}. Nothing was done."), "{said}");
        assert!(r.operation.is_none() && !r.needs_confirmation, "{said}");
    }
    // The same refusal while a question waits leaves the question waiting.
    session.handle("roll out auth-filter 2.1 to eu-west").await;
    let r = session.handle("2.1e309").await;
    assert_eq!(r.outcome, Outcome::NeedsConfirmation);
    assert_eq!(
        r.message,
        "I can't act on that: \"2.1e309\" is out of range: numbers are whole numbers in plain digits. Nothing was \
         done. I'm still waiting for yes or no on: Roll out auth-filter 2.1.0 to 12 agents in eu-west (rolling)."
    );
    session.handle("no").await;

    assert_eq!(parley.services().router.table(), routing, "no traffic moved");
    let d1 = parley.services().registry.deployment_by_name("d-1").await.unwrap().unwrap();
    assert_ne!(d1.status, parley::ops::DeploymentStatus::Paused);
    assert!(parley.services().registry.deployment_by_name("d-2").await.unwrap().is_none(), "no second rollout");
    parley.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_flapping_every_poll_is_shown_flapping_and_a_rollout_into_it_is_warned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.toml");
    // Down 200 ms, up 200 ms, polled every 100 ms: never silent long enough for "suspect".
    let text = "data_dir = \"state\"\n[fleet]\ndemo_faults = \"flap:200/agent:edge-19\"\n[rollout]\nbake_secs = 0.02\n\
                [poll]\ninterval_ms = 100\nsuspect_after_ms = 2000\ndown_after_ms = 3500\nflap_window_ms = 5000\n";
    std::fs::write(&path, text).unwrap();
    let parley = Parley::start(&Config::load(Some(&path)).unwrap()).await.unwrap();
    let mut session = parley.session(Actor::new("olga", "test", Role::Operator));
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let shown = loop {
        let r = session.handle("show agent edge-19").await;
        if r.message.contains("is flapping and active") || std::time::Instant::now() > deadline {
            break r.message;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(shown.starts_with("edge-19 (ap-south-a, staging, tier edge) is flapping and active"), "{shown}");
    let r = session.handle("how healthy is ap-south?").await;
    assert!(r.message.starts_with("ap-south: 12 agents, 11 healthy, 1 flapping: edge-19."), "{}", r.message);
    let r = session.handle("how healthy is the fleet?").await;
    let table = r.table.unwrap();
    let row = table.rows.iter().find(|row| row[0] == "ap-south").unwrap();
    assert_eq!(row[1..5], ["degraded", "12", "11", "1"], "{:?}", table.columns);

    // One staging agent would start at once; flapping, it is confirmed first.
    let r = session.handle("roll out auth-filter 2.1.0 to edge-19").await;
    assert_eq!(r.outcome, Outcome::NeedsConfirmation, "{}", r.message);
    assert!(
        r.message
            .contains("because edge-19 is flapping (it keeps dropping out), so installing or checking it may fail"),
        "{}",
        r.message
    );
    session.handle("no").await;
    assert!(parley.services().registry.deployment_by_name("d-1").await.unwrap().is_none());
    parley.shutdown().await;
}
