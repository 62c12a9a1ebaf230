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
