//! A bounded fuzz campaign over intent parsing and whole dialog turns: random bytes
//! (decoded as `chat --json` decodes a line), arbitrary Unicode, yes-spam, yes words
//! wrapped in junk, numbers at the edges of every range, and word salads.
//!
//! Deterministic (a fixed seed) and bounded (fixed case counts, a few seconds), so it
//! runs in CI with the rest; `PARLEY_FUZZ_SCALE=20` runs twenty times as many cases.
//! What it holds to:
//! - no input panics, in the parser or in a dialog turn;
//! - garbage is never a confirmation, and never causes a mutation: no deployment,
//!   no routing change, no drain, cordon or restart, nothing in the audit log as
//!   carried out, whatever question was pending when it came;
//! - a number in a command is either carried as said or the command is refused.
//!
//! Each test prints what it tried (`cargo test --test fuzz_dialog -- --nocapture`).

use std::panic::AssertUnwindSafe;
use std::path::Path;

use futures::FutureExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::Value;

use parley::app::Parley;
use parley::config::Config;
use parley::intent::{Grammar, Vocabulary};
use parley::ops::{Actor, Operation, Role};
use parley::registry::{AuditResult, DeploymentFilter};
use parley::reply::Outcome;

/// Cases per campaign, times `PARLEY_FUZZ_SCALE` (default 1).
fn scaled(n: u32) -> u32 {
    let scale = std::env::var("PARLEY_FUZZ_SCALE").ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(1);
    n.saturating_mul(scale.max(1))
}

const YES_WORDS: &[&str] =
    &["yes", "y", "k", "ok", "yeah", "sure", "confirm", "go ahead", "do it", "proceed", "YES", "Yes.", "yep"];

/// Numbers at and past the edges of every range the grammar reads.
const EDGE_NUMBERS: &[&str] = &[
    "-1",
    "-0",
    "\u{2212}5",
    "0",
    "1",
    "100",
    "101",
    "255",
    "256",
    "999999999",
    "1000000000",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "1e309",
    "2.1e309",
    "1e-5",
    "0.5",
    "2.5",
    "1,000",
    "\u{ff11}\u{ff10}",
    "\u{663}",
    "nan",
    "inf",
];

/// Commands with a number slot, each risky wherever it is in range (production
/// agents, traffic), so that even a valid one only asks: `(template, JSON pointer of
/// the number in the operation, largest value the slot takes)`.
const TEMPLATES: &[(&str, &str, u64)] = &[
    ("send {n}% of eu-west's traffic to us-east", "/percent", 100),
    ("roll out auth-filter 2.1 to eu-west in batches of {n}", "/strategy/batch_size", 999_999_999),
    ("roll out auth-filter 2.1 to us-east with at most {n} unavailable", "/strategy/max_unavailable", 999_999_999),
    ("roll out auth-filter 2.1 to us-west and allow {n} failures", "/max_failures", 999_999_999),
    ("roll out auth-filter 2.1 to eu-west as a canary {n}% then 50%", "/strategy/steps/0", 100),
    ("keep an eye on edge-7 every {n} seconds", "/interval_secs", 999_999_999),
];

/// Other commands with a number in them, for the dialog campaign: in range, each is
/// risky (production agents) or infeasible (no deployment exists), so it only asks.
const MORE_TEMPLATES: &[&str] =
    &["roll out auth-filter {n} to us-east", "pause d-{n}", "roll back d-{n}", "drain edge-{n}", "abort rollout {n}"];

fn junk() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just('\u{fffd}'),
            Just('\u{0}'),
            Just('\u{1b}'),
            Just('\u{7f}'),
            Just('\u{200b}'),
            Just('-'),
            Just('*'),
            Just('«'),
            Just('🚀'),
            // Not a letter, a space, or the punctuation a plain "Yes." or "don't" may hold.
            any::<char>().prop_filter("junk", |c| {
                !c.is_alphanumeric() && !c.is_whitespace() && !matches!(c, '.' | ',' | '!' | '\'' | '\u{2019}')
            }),
        ],
        1..4,
    )
    .prop_map(|c| c.into_iter().collect())
}

/// Lines that mean nothing, though some hold a yes word or a number.
fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        any::<String>(),
        "[\\PC\\pC]{0,200}",
        "\\PC{1,3}",
        // Four "yes" in a row is still a yes; five or more is spam.
        (5usize..12_000).prop_map(|n| "yes ".repeat(n)),
        (prop::sample::select(YES_WORDS), junk(), junk()).prop_map(|(w, a, b)| format!("{a}{w}{b}")),
        (prop::sample::select(YES_WORDS), junk()).prop_map(|(w, a)| format!("{w}{a}")),
        (prop::sample::select(YES_WORDS), 5usize..20).prop_map(|(w, n)| vec![w; n].join(" ")),
        prop::sample::select(EDGE_NUMBERS).prop_map(str::to_string),
        (prop::sample::select(TEMPLATES), prop::sample::select(EDGE_NUMBERS))
            .prop_filter("out of range", |((_, _, max), n)| in_range(n, *max).is_none())
            .prop_map(|((t, _, _), n)| t.replace("{n}", n)),
        (prop::sample::select(MORE_TEMPLATES), prop::sample::select(EDGE_NUMBERS))
            .prop_map(|(t, n)| t.replace("{n}", n)),
    ]
}

/// The value a number takes in a slot whose largest value is `max`, if it fits as said.
fn in_range(said: &str, max: u64) -> Option<u64> {
    let digits: String = said.chars().filter(|c| *c != ',').collect();
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().filter(|n| *n <= max)
}

/// A line of command words in any order: the dialog must answer it, whatever it does.
fn word_salad() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "roll",
        "out",
        "auth-filter",
        "2.1",
        "to",
        "eu-west",
        "drain",
        "edge",
        "seven",
        "it",
        "yes",
        "no",
        "%",
        "canary",
        "then",
        "fail",
        "over",
        "cancel",
        "report",
        "since",
        "d-1",
        "restart",
        "how",
        "healthy",
        "is",
        "batches",
        "of",
        "at",
        "most",
        "unavailable",
        "allow",
        "failures",
        "-3",
        "1e309",
        "\u{0}",
        "🚀",
        "Ω",
    ]);
    prop::collection::vec(words, 0..12).prop_map(|w| w.join(" "))
}

/// What is said before the garbage: a risky request held for yes/no, a question for a
/// missing slot, or nothing.
const OPENERS: &[&str] = &[
    "",
    "drain edge-7",
    "restart edge-1",
    "cordon edge-2",
    "roll out auth-filter 2.1 to eu-west",
    "roll out auth-filter 2.1 to the whole fleet",
    "send 30% of eu-west's traffic to us-east",
    "fail over eu-west",
    "restart",
    "drain",
    "roll out auth-filter",
    "roll out auth-filter 2.1",
    "send 30% of eu-west's traffic",
];

fn fixture() -> (Grammar, Vocabulary) {
    let topology = parley::topology::demo::demo_topology().expect("demo topology");
    (Grammar::embedded().expect("grammar"), Vocabulary::from_topology(&topology))
}

#[test]
fn garbage_never_parses_as_a_confirmation() {
    let (grammar, vocab) = fixture();
    let cases = scaled(10_000);
    let mut runner = TestRunner::new(ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() });
    let tried = std::cell::Cell::new(0u32);
    runner
        .run(&garbage(), |line| {
            tried.set(tried.get() + 1);
            let parse = grammar.parse(&line, &vocab);
            prop_assert_ne!(parse.operation, Some(Operation::Confirm), "{:?}", line);
            Ok(())
        })
        .unwrap();
    eprintln!("parse: {} garbage lines, 0 panics, 0 read as a confirmation", tried.get());
}

#[test]
fn a_number_is_carried_as_said_or_refused() {
    let (grammar, vocab) = fixture();
    let mut tried = 0;
    let mut refused = 0;
    for (template, pointer, max) in TEMPLATES {
        for n in EDGE_NUMBERS {
            let line = template.replace("{n}", n);
            let parse = grammar.parse(&line, &vocab);
            tried += 1;
            let Some(op) = parse.operation else {
                refused += 1;
                assert!(parse.rejected.is_some() || in_range(n, *max).is_none(), "{line:?}: {parse:?}");
                continue;
            };
            let carried = op.to_json().pointer(pointer).cloned();
            // Seconds of "every N seconds" are the interval itself.
            let want = in_range(n, *max).map(Value::from);
            assert_eq!(carried, want, "{line:?} was read as {}", op.to_json());
        }
    }
    eprintln!("parse: {tried} commands with edge numbers, {refused} refused, the rest carried as said");
}

fn config(dir: &Path) -> Config {
    let path = dir.join("parley.toml");
    // Polling stays slow: the campaign checks the fleet itself at the end.
    let text = "data_dir = \"state\"\n[rollout]\nbake_secs = 0.02\n";
    std::fs::write(&path, text).expect("config");
    Config::load(Some(&path)).expect("config")
}

/// `count` cases of `strategy`, drawn from a fixed seed.
fn draw<S: Strategy>(strategy: S, count: u32) -> Vec<S::Value> {
    let mut runner = TestRunner::deterministic();
    (0..count).filter_map(|_| strategy.new_tree(&mut runner).ok().map(|t| t.current())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_changes_the_fleet_whatever_was_pending() {
    let dir = tempfile::tempdir().expect("tempdir");
    let parley = Parley::start(&config(dir.path())).await.expect("start");
    let services = std::sync::Arc::clone(parley.services());
    let routing = services.router.table();
    // An admin may do anything, so only the dialog stands between garbage and the fleet.
    let mut session = parley.session(Actor::new("ada", "fuzz", Role::Admin));

    let cases = draw((prop::sample::select(OPENERS), prop::collection::vec(garbage(), 1..6)), scaled(800));
    let (mut lines, mut panics, mut mutations) = (0usize, Vec::new(), Vec::new());
    let started = std::time::Instant::now();
    for (opener, garbage) in &cases {
        if !opener.is_empty() {
            let r = session.handle(opener).await;
            assert!(!matches!(r.outcome, Outcome::Done | Outcome::Started), "{opener}: {}", r.message);
        }
        for line in garbage {
            lines += 1;
            match AssertUnwindSafe(session.handle(line)).catch_unwind().await {
                Err(_) => panics.push(line.clone()),
                Ok(r) => {
                    let mutating = r.operation.as_ref().is_some_and(Operation::mutates);
                    if mutating && matches!(r.outcome, Outcome::Done | Outcome::Started | Outcome::Failed) {
                        mutations.push(format!("{opener:?} then {line:.80?}: {}", r.message));
                    }
                }
            }
        }
        session.handle("no").await;
    }
    let elapsed = started.elapsed();

    // The fleet and the registry agree that nothing happened.
    services.poller.refresh().await;
    let topology = services.topology.snapshot();
    let moved: Vec<String> = topology
        .agents()
        .iter()
        .filter(|a| a.state != parley::agent::protocol::ServingState::Active)
        .map(|a| format!("{} {}", a.name, a.state.as_str()))
        .collect();
    let deployments = services.registry.list_deployments(&DeploymentFilter::default()).await.expect("deployments");
    let executed: Vec<String> = services
        .registry
        .list_audit(None, 100_000)
        .await
        .expect("audit")
        .into_iter()
        .filter(|a| matches!(a.result, AuditResult::Ok | AuditResult::Failed))
        .filter(|a| a.operation.clone().and_then(|o| Operation::from_json(o).ok()).is_some_and(|o| o.mutates()))
        .map(|a| format!("{:.80?}", a.utterance))
        .collect();
    eprintln!(
        "dialog: {} openers, {lines} garbage lines in {:.1} s, {} panics, {} mutations",
        cases.len(),
        elapsed.as_secs_f64(),
        panics.len(),
        mutations.len() + moved.len() + deployments.len() + executed.len()
    );
    assert_eq!(panics, Vec::<String>::new());
    assert_eq!(mutations, Vec::<String>::new());
    assert_eq!(moved, Vec::<String>::new(), "agents changed state");
    assert_eq!(deployments.iter().map(|d| d.name.clone()).collect::<Vec<_>>(), Vec::<String>::new());
    assert_eq!(executed, Vec::<String>::new(), "the audit log has mutations carried out");
    assert_eq!(services.router.table(), routing, "traffic moved");

    // Word salads may well mean something; the dialog answers each and stays usable.
    let salads = draw(word_salad(), scaled(500));
    for line in &salads {
        match AssertUnwindSafe(session.handle(line)).catch_unwind().await {
            Err(_) => panic!("panicked on {line:?}"),
            Ok(r) => assert!(!r.message.is_empty(), "{line:?}"),
        }
    }
    session.handle("no").await;
    let r = session.handle("how healthy is ap-south?").await;
    assert_eq!(r.outcome, Outcome::Answered, "{}", r.message);
    eprintln!("dialog: {} word salads, 0 panics", salads.len());
    parley.shutdown().await;
}
