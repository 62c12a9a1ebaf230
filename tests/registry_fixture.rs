//! A registry written by the previous release (no `hold` column: the state of a
//! waiting deployment lived in the wording of its reason) opens, migrates once, and
//! shows the same deployments, with their holds, targets and journal.

use std::path::PathBuf;

use parley::ops::DeploymentStatus as D;
use parley::orchestrate::journal::Event;
use parley::orchestrate::lifecycle::{self, Control as C, Stage};
use parley::registry::{DeploymentFilter, Hold, Registry, TargetState as T};

fn fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.db");
    let from = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry-0004.db");
    std::fs::copy(&from, &path).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    (dir, path)
}

#[tokio::test]
async fn an_old_registry_migrates_with_its_holds_parsed_once_and_shows_the_same_deployments() {
    let (_dir, path) = fixture();
    let reg = Registry::open(&path).await.unwrap();
    let all = reg.list_deployments(&DeploymentFilter::default()).await.unwrap();
    let got: Vec<(&str, D, Option<Hold>, &str)> = all
        .iter()
        .rev()
        .map(|d| (d.name.as_str(), d.status, d.hold.clone(), d.reason.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        vec![
            ("d-1", D::Succeeded, None, "4 agents on auth-filter 2.1.0"),
            (
                "d-2",
                D::Paused,
                Some(Hold::Promote),
                "waiting for promote: step 1 (step 1 of 2) passed its gate; promote starts step 2"
            ),
            ("d-3", D::Pending, Some(Hold::Queued { behind: "d-2".into() }), "queued behind d-2"),
            ("d-4", D::Aborted, None, "aborted by alice at step 1 of 2; 2 agents returned to auth-filter 2.0.3"),
            ("d-5", D::Paused, Some(Hold::Paused), "paused by alice at step 1 of 2"),
            (
                "d-6",
                D::Paused,
                Some(Hold::Interrupted),
                "interrupted at step 2 of 2: Parley stopped; checked 2 agents: 1 on auth-filter 2.1.0, all as journalled"
            ),
            (
                "d-7",
                D::Paused,
                Some(Hold::Inconclusive),
                "gate inconclusive at step 1 of 2: p95 650 ms > 500 ms (baseline 600 ms) on edge-1 [inconclusive]; \
                 resume to carry on or abort to roll back"
            ),
            (
                "d-8",
                D::Failed,
                None,
                "health gate failed at step 1 of 2 (50%): error rate 9.0% > 2.0% on us-east-7; rollback incomplete: \
                 us-east-7 still runs auth-filter 2.1.0 (could not return it to 2.0.3: timed out)"
            ),
            ("d-9", D::RollingBack, None, "aborted by bob at step 1 of 2; returning 1 agent to their previous versions"),
        ]
    );

    // What each one is, and what an operator is offered for it, comes from the hold.
    let stages: Vec<Stage> = all.iter().rev().map(Stage::of).collect();
    assert_eq!(stages[2], Stage::Queued { behind: "d-2".into() });
    assert!(matches!(&stages[1], Stage::AwaitingPromote { what } if what.ends_with("promote starts step 2")));
    assert_eq!((&stages[4], &stages[5], &stages[6]), (&Stage::Paused, &Stage::Interrupted, &Stage::Paused));
    let offers: Vec<Vec<C>> = all.iter().rev().map(lifecycle::offers).collect();
    assert_eq!(offers[1], [C::Show, C::Abort, C::Promote]);
    assert_eq!(offers[2], [C::Show, C::Abort]);
    assert_eq!(offers[5], [C::Show, C::Rollback, C::Resume]);
    assert_eq!(offers[6], [C::Show, C::Abort, C::Resume]);

    // Targets and the journal are as they were.
    let d2 = &all[all.len() - 2];
    let states: Vec<(&str, T)> = d2.targets.iter().map(|t| (t.agent.as_str(), t.state)).collect();
    assert_eq!(
        states,
        [("core-13", T::Installed), ("core-14", T::Installed), ("core-15", T::Pending), ("core-16", T::Pending)]
    );
    let kinds: Vec<String> = reg.events(d2.id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "planned",
            "step_started",
            "install_started",
            "install_started",
            "install_succeeded",
            "install_succeeded",
            "gate_evaluated",
            "held"
        ]
    );
    let log = reg.recent_events(1000).await.unwrap();
    assert_eq!(log.len(), 55);
    // Every event the old release's orchestrator journalled (d-1 to d-5; d-6 to d-9
    // were written by hand) reads back as a typed event, and the settings a rollout
    // was started with come from its `created` event.
    let real = ["d-1", "d-2", "d-3", "d-4", "d-5"];
    let unread: Vec<&str> = log
        .iter()
        .filter(|e| e.deployment.as_deref().is_some_and(|d| real.contains(&d)) && Event::of(e).is_none())
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(log.iter().filter(|e| e.deployment.as_deref().is_some_and(|d| real.contains(&d))).count(), 51);
    assert!(unread.is_empty(), "{unread:?}");
    // The registry's own `queued` row, written untyped by the old release, is the
    // journal's typed event.
    let queued: Vec<(Option<&str>, Option<Event>)> =
        log.iter().filter(|e| e.kind == "queued").map(|e| (e.deployment.as_deref(), Event::of(e))).collect();
    assert_eq!(queued, [(Some("d-3"), Some(Event::Queued { behind: "d-2".into() }))]);
    let events = reg.events(d2.id).await.unwrap();
    let Some(Event::Created { max_failures, require_approval, agents, .. }) = Event::of(&events[0]) else {
        panic!("{:?}", events[0])
    };
    assert_eq!((max_failures, require_approval, agents.len()), (Some(1), Some(true), 4));
    assert!(matches!(Event::of(&events[1]), Some(Event::Planned { plan: Some(p), .. }) if p.steps.len() == 2));
    // Ids keep counting from where the old registry stopped.
    drop(reg);
    let again = Registry::open(&path).await.unwrap();
    assert_eq!(again.list_deployments(&DeploymentFilter::default()).await.unwrap().len(), 9);
}
