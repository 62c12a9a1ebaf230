//! What Parley can do, one example each: the one list that the `help` reply (text,
//! REPL, Slack, `chat --json`) and the TUI's help overlay both show. Each example is
//! a sentence the grammar reads as the operation it stands for; a unit test feeds
//! every one through the parser, so help never offers what Parley would not
//! understand.

/// One thing Parley does and a sentence that does it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Example {
    /// What it is, in a word or two ("canary", "failover").
    pub topic: &'static str,
    /// What to say.
    pub say: &'static str,
    /// The operation it parses to, as a JSON subset of the contract (`{"op": ...}` and
    /// the fields that make it this topic): what the test checks.
    pub parses_to: &'static str,
}

const fn ex(topic: &'static str, say: &'static str, parses_to: &'static str) -> Example {
    Example { topic, say, parses_to }
}

/// Every capability, in the order an operator meets them.
pub const EXAMPLES: &[Example] = &[
    ex("health", "how healthy is eu-west?", r#"{"op":"show_health","scope":["region:eu-west"]}"#),
    ex("all rows", "list all agents in us-east", r#"{"op":"find_agents","scope":["region:us-east"],"all":true}"#),
    ex("topology", "show topology", r#"{"op":"show_topology"}"#),
    ex(
        "find",
        "which agents in eu-west have a gpu?",
        r#"{"op":"find_agents","scope":["region:eu-west","capability:gpu"]}"#,
    ),
    ex("agent", "show agent edge-7", r#"{"op":"show_agent","agent":"edge-7"}"#),
    ex("extensions", "list extensions in us-east", r#"{"op":"list_extensions","scope":["region:us-east"]}"#),
    ex("checks", "run a connectivity check on ap-south", r#"{"op":"run_health_check","checks":["connectivity"]}"#),
    ex(
        "rolling",
        "roll out auth-filter 2.1 to ap-south",
        r#"{"op":"deploy","extension":"auth-filter","version":"2.1.0"}"#,
    ),
    ex(
        "canary",
        "roll out auth-filter 2.1 to eu-west as a canary, 10% then 50%",
        r#"{"op":"deploy","strategy":{"kind":"canary","steps":[10,50]}}"#,
    ),
    ex(
        "blue-green",
        "roll out auth-filter 2.1 to ap-south as blue-green",
        r#"{"op":"deploy","strategy":{"kind":"blue_green"}}"#,
    ),
    ex(
        "progressive",
        "progressive rollout of auth-filter 2.1 to eu-west by zone",
        r#"{"op":"deploy","strategy":{"kind":"progressive"}}"#,
    ),
    ex(
        "analysis",
        "roll out auth-filter 2.1 to eu-west gated on p99 latency under 300 ms",
        r#"{"op":"deploy","gate":[{"metric":"p99-latency","threshold":300,"unit":"ms"}]}"#,
    ),
    ex("approval", "canary auth-filter 2.1 to eu-west with approval", r#"{"op":"deploy","require_approval":true}"#),
    ex("queue", "roll out auth-filter 2.1 to ap-south and queue it", r#"{"op":"deploy","queue":true}"#),
    ex("promote", "promote d-1", r#"{"op":"promote","deployment":"d-1"}"#),
    ex("pause", "pause d-1", r#"{"op":"pause","deployment":"d-1"}"#),
    ex("resume", "resume d-1", r#"{"op":"resume","deployment":"d-1"}"#),
    ex("abort", "abort d-1", r#"{"op":"abort","deployment":"d-1"}"#),
    ex("roll back", "roll back d-1", r#"{"op":"rollback","deployment":"d-1"}"#),
    ex("retry", "retry d-1", r#"{"op":"retry","deployment":"d-1"}"#),
    ex("deployment", "show deployment d-1", r#"{"op":"show_deployment","deployment":"d-1"}"#),
    ex("deployments", "list deployments since 7d", r#"{"op":"list_deployments","since":"7d"}"#),
    ex("report", "deployment report for the last 30 days", r#"{"op":"report","since":"30d"}"#),
    ex("drain", "drain edge-7", r#"{"op":"drain","agent":"edge-7"}"#),
    ex("cordon", "cordon edge-7", r#"{"op":"cordon","agent":"edge-7"}"#),
    ex("uncordon", "uncordon edge-7", r#"{"op":"uncordon","agent":"edge-7"}"#),
    ex("restart", "restart edge-7", r#"{"op":"restart","agent":"edge-7"}"#),
    ex("failover", "fail over eu-west to us-east", r#"{"op":"failover","from":"eu-west","to":"us-east"}"#),
    ex("failback", "fail back eu-west", r#"{"op":"failback","region":"eu-west"}"#),
    ex(
        "routing",
        "shift 20% of eu-west's traffic to us-east",
        r#"{"op":"shift_traffic","from":"eu-west","to":"us-east","percent":20}"#,
    ),
    ex("routes", "show routing", r#"{"op":"show_routing"}"#),
    ex("watch", "watch eu-west", r#"{"op":"watch","scope":["region:eu-west"]}"#),
    ex("stop watching", "stop watching", r#"{"op":"unwatch"}"#),
    ex("explain", "why is eu-west degraded?", r#"{"op":"explain"}"#),
    ex("changes", "what changed in eu-west today?", r#"{"op":"changes"}"#),
    ex("versions", "which versions of auth-filter are running?", r#"{"op":"versions"}"#),
    ex("audit", "show the audit log for today", r#"{"op":"show_audit"}"#),
    ex("freeze", "freeze all rollouts", r#"{"op":"freeze"}"#),
    ex("unfreeze", "unfreeze", r#"{"op":"unfreeze"}"#),
    ex("cancel", "cancel", r#"{"op":"cancel"}"#),
];

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::intent::{Grammar, Vocabulary};
    use crate::topology::test_support::demo_topology;

    /// `want`'s every key is in `got` with the same value (objects compared the same
    /// way, anything else exactly).
    fn holds(got: &Value, want: &Value) -> bool {
        match (got, want) {
            (Value::Object(g), Value::Object(w)) => w.iter().all(|(k, v)| g.get(k).is_some_and(|gv| holds(gv, v))),
            _ => got == want,
        }
    }

    #[test]
    fn every_help_example_parses_to_the_operation_it_describes() {
        let grammar = Grammar::embedded().unwrap();
        let vocab = Vocabulary::from_topology(&demo_topology());
        let mut wrong = Vec::new();
        for e in EXAMPLES {
            let want: Value = serde_json::from_str(e.parses_to).unwrap();
            let parse = grammar.parse(e.say, &vocab);
            let got = parse.operation.map(|o| o.to_json()).unwrap_or(Value::Null);
            if !holds(&got, &want) || !parse.missing.is_empty() {
                wrong.push(format!(
                    "{} {:?}\n   got  {got} missing {:?}\n   want {want}",
                    e.topic, e.say, parse.missing
                ));
            }
        }
        assert!(wrong.is_empty(), "{} of {} help examples:\n{}", wrong.len(), EXAMPLES.len(), wrong.join("\n"));
    }

    #[test]
    fn help_names_every_family_of_operation_once() {
        let topics: Vec<&str> = EXAMPLES.iter().map(|e| e.topic).collect();
        let mut unique = topics.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), topics.len(), "one example per topic: {topics:?}");
        // Every operation of the contract an operator says (confirm is a yes/no, help is this).
        let ops: Vec<String> = EXAMPLES
            .iter()
            .map(|e| serde_json::from_str::<Value>(e.parses_to).unwrap()["op"].as_str().unwrap().to_string())
            .collect();
        for name in crate::ops::Operation::NAMES {
            if ["confirm", "help"].contains(&name) {
                continue;
            }
            assert!(ops.iter().any(|o| o == name), "help has no example of {name}");
        }
    }
}
