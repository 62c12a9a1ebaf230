//! Unit tests of the intent layer against the demo fleet.

use std::sync::OnceLock;

use serde_json::{json, Value};

use super::*;
use crate::topology::test_support::demo_topology;

fn fixture() -> &'static (Grammar, Vocabulary) {
    static F: OnceLock<(Grammar, Vocabulary)> = OnceLock::new();
    F.get_or_init(|| (Grammar::embedded().expect("embedded grammar"), Vocabulary::from_topology(&demo_topology())))
}

fn parse(u: &str) -> Parse {
    let (g, v) = fixture();
    g.parse(u, v)
}

fn op(u: &str) -> Value {
    parse(u).operation.map(|o| o.to_json()).unwrap_or(Value::Null)
}

#[test]
fn debug_dump() {
    let (g, v) = fixture();
    for u in std::env::var("PARLEY_UTT").unwrap_or_default().split('|').filter(|s| !s.is_empty()) {
        let tokens = strip_fillers(normalize::tokenize(u));
        let ents = v.scan(&tokens, &g.compiled.plain_phrases);
        eprintln!("{u}\n  skel: {}\n  parse: {}", skeleton(&tokens, &ents), serde_json::to_string(&g.parse(u, v)).unwrap());
    }
}
