//! Bad input never panics or hangs: arbitrary text through the whole pipeline of
//! `parley chat --json` gets one JSON answer per line, and the session stays usable.

mod common;

use common::Chat;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[test]
fn nasty_lines_each_get_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut chat = Chat::start(dir.path(), &[]);
    let long = "roll out ".repeat(12_000);
    let nasty: Vec<String> = vec![
        String::new(),
        "\u{0}\u{1}\u{7f}\u{1b}[2J".into(),
        long,
        "ИНЖЕНЕР разверни auth-filter".into(),
        "部署 auth-filter 到 eu-west 🚀".into(),
        "drain ".into(),
        "roll out auth-filter 99999999999999999999 to eu-west".into(),
        "send 250% of eu-west's traffic to us-east".into(),
        "show deployment d-99999999999999999999999".into(),
        "\"}{][".into(),
        "yes".into(),
        "no".into(),
        "it".into(),
    ];
    for line in &nasty {
        let t = chat.say(line);
        assert!(t["message"].as_str().is_some_and(|m| !m.is_empty()), "{line:?}: {t}");
    }
    // Still answering properly afterwards.
    let t = chat.say("how healthy is ap-south?");
    assert_eq!(t["operation"], serde_json::json!({"op": "show_health", "scope": ["region:ap-south"]}));
    chat.finish();
}

#[test]
fn arbitrary_strings_through_parse_and_dialog() {
    let dir = tempfile::tempdir().unwrap();
    let chat = std::cell::RefCell::new(Chat::start(dir.path(), &[]));
    let mut runner = TestRunner::new(Config { cases: 120, ..Config::default() });
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
        "\u{0}",
        "🚀",
        "Ω",
    ]);
    let utterance = prop_oneof![
        any::<String>(),
        prop::collection::vec(words, 0..12).prop_map(|w| w.join(" ")),
        "[\\PC\\pC]{0,200}",
    ];
    runner
        .run(&utterance, |line| {
            // One line each: newlines inside a generated string would split it.
            let line = line.replace(['\n', '\r'], " ");
            let t = chat.borrow_mut().say(&line);
            prop_assert!(t["message"].as_str().is_some_and(|m| !m.is_empty()), "{:?}: {}", line, t);
            Ok(())
        })
        .unwrap();
    let mut chat = chat.into_inner();
    chat.say("cancel");
    chat.finish();
}
