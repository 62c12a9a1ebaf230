//! Unit tests of the intent layer against the demo fleet.

use std::sync::OnceLock;

use proptest::prelude::*;
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

fn check_all(cases: &[(&str, Value)]) {
    let mut failures = Vec::new();
    for (u, want) in cases {
        let got = op(u);
        if got != *want {
            failures.push(format!("{u:?}\n   got  {got}\n   want {want}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} wrong:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn the_product_page_examples() {
    check_all(&[
        (
            "roll out auth-filter 2.1 to eu-west as a canary, 10% then 50%",
            json!({"op":"deploy","extension":"auth-filter","version":"2.1.0","scope":["region:eu-west"],
                   "strategy":{"kind":"canary","steps":[10,50]}}),
        ),
        ("how healthy is us-east?", json!({"op":"show_health","scope":["region:us-east"]})),
        (
            "which agents in eu-west have a gpu?",
            json!({"op":"find_agents","scope":["region:eu-west","capability:gpu"]}),
        ),
        ("roll that back", json!({"op":"rollback"})),
        ("drain edge seven", json!({"op":"drain","agent":"edge-7"})),
        ("fail over eu-west to us-east", json!({"op":"failover","from":"eu-west","to":"us-east"})),
        ("evacuate ap-south", json!({"op":"failover","from":"ap-south"})),
        (
            "send 20% of eu-west's traffic to us-east",
            json!({"op":"shift_traffic","from":"eu-west","to":"us-east","percent":20}),
        ),
        ("deployment report for the last 30 days", json!({"op":"report","since":"30d"})),
        (
            "show failed deployments since 2026-11-01",
            json!({"op":"list_deployments","status":"failed","since":"2026-11-01"}),
        ),
        (
            "run a security and connectivity check on ap-south",
            json!({"op":"run_health_check","scope":["region:ap-south"],"checks":["connectivity","security"]}),
        ),
        ("watch eu-west every 10 seconds", json!({"op":"watch","scope":["region:eu-west"],"interval_secs":10})),
        ("stop watching", json!({"op":"unwatch"})),
        (
            "upgrade the gpu agents in us-west to model-server latest",
            json!({"op":"deploy","extension":"model-server","version":"0.4.0",
                   "scope":["region:us-west","capability:gpu"]}),
        ),
        (
            "deploy waf-rules 2024.2 to staging",
            json!({"op":"deploy","extension":"waf-rules","version":"2024.2","scope":["env:staging"]}),
        ),
        (
            "roll out auth-filter 2.1.0 to ap-south",
            json!({"op":"deploy","extension":"auth-filter","version":"2.1.0","scope":["region:ap-south"]}),
        ),
        (
            "which agents run auth-filter 2.0.3",
            json!({"op":"find_agents","extension":{"name":"auth-filter","version":"2.0.3"}}),
        ),
        ("promote it", json!({"op":"promote"})),
    ]);
    assert_eq!(parse("roll that back").references, ["deployment"]);
}

#[test]
fn two_or_more_phrasings_for_every_op() {
    let cases = [
        ("show me the topology", json!({"op":"show_topology","scope":["fleet"]})),
        ("what does eu-west look like", json!({"op":"show_topology","scope":["region:eu-west"]})),
        ("show topology of us east", json!({"op":"show_topology","scope":["region:us-east"]})),
        ("how is the fleet doing", json!({"op":"show_health","scope":["fleet"]})),
        ("is anything down in ap-south", json!({"op":"show_health","scope":["region:ap-south"]})),
        ("health of production", json!({"op":"show_health","scope":["env:production"]})),
        ("show edge-7", json!({"op":"show_agent","agent":"edge-7"})),
        ("tell me about gpu 3", json!({"op":"show_agent","agent":"gpu-3"})),
        ("what's up with core-2", json!({"op":"show_agent","agent":"core-2"})),
        ("find gpu agents", json!({"op":"find_agents","scope":["capability:gpu"]})),
        ("list the edge agents in eu-west", json!({"op":"find_agents","scope":["region:eu-west","tier:edge"]})),
        ("where is model-server running", json!({"op":"find_agents","extension":{"name":"model-server"}})),
        ("what extensions are installed on edge-7", json!({"op":"list_extensions","scope":["agent:edge-7"]})),
        ("list extensions", json!({"op":"list_extensions","scope":["fleet"]})),
        ("show the catalog", json!({"op":"list_extensions","scope":["fleet"]})),
        ("check eu-west", json!({"op":"run_health_check","scope":["region:eu-west"]})),
        ("run a full health check", json!({"op":"run_health_check","scope":["fleet"]})),
        (
            "run performance tests on production",
            json!({"op":"run_health_check","scope":["env:production"],"checks":["performance"]}),
        ),
        (
            "deploy auth-filter 2.0.3 everywhere",
            json!({"op":"deploy","extension":"auth-filter","version":"2.0.3","scope":["fleet"]}),
        ),
        (
            "please push rate limiter v1.1 to the edge tier in us-east, 4 at a time",
            json!({"op":"deploy","extension":"rate-limiter","version":"1.1.0","scope":["region:us-east","tier:edge"],
                   "strategy":{"kind":"rolling","batch_size":4}}),
        ),
        (
            "install geo-router 3.3 on prod blue green",
            json!({"op":"deploy","extension":"geo-router","version":"3.3.0","scope":["env:production"],
                   "strategy":{"kind":"blue_green"}}),
        ),
        (
            "update log shipper to the latest version on all agents progressively 25% then 50% then 100%",
            json!({"op":"deploy","extension":"log-shipper","version":"1.5.0","scope":["fleet"],
                   "strategy":{"kind":"progressive","steps":[25,50,100]}}),
        ),
        (
            "rolling upgrade of rate-limiter 1.1 in us-east in batches of 3",
            json!({"op":"deploy","extension":"rate-limiter","version":"1.1.0","scope":["region:us-east"],
                   "strategy":{"kind":"rolling","batch_size":3}}),
        ),
        (
            "canary auth-filter 2.1 on 5% of eu-west",
            json!({"op":"deploy","extension":"auth-filter","version":"2.1.0","scope":["region:eu-west"],
                   "strategy":{"kind":"canary","steps":[5]}}),
        ),
        (
            "deploy auth-filter 2 to eu-west",
            json!({"op":"deploy","extension":"auth-filter","version":"2","scope":["region:eu-west"]}),
        ),
        ("rollout status", json!({"op":"show_deployment"})),
        ("cancel d-3", json!({"op":"abort","deployment":"d-3"})),
        ("cancel that", json!({"op":"cancel"})),
        (
            "hey parley, can you show the health of eu-west please",
            json!({"op":"show_health","scope":["region:eu-west"]}),
        ),
        ("pause", json!({"op":"pause"})),
        ("pause d-4", json!({"op":"pause","deployment":"d-4"})),
        ("hold the rollout", json!({"op":"pause"})),
        ("resume it", json!({"op":"resume"})),
        ("continue deployment 12", json!({"op":"resume","deployment":"d-12"})),
        ("carry on", json!({"op":"resume"})),
        ("promote d-2", json!({"op":"promote","deployment":"d-2"})),
        ("go to the next step", json!({"op":"promote"})),
        ("abort", json!({"op":"abort"})),
        ("abort d-3", json!({"op":"abort","deployment":"d-3"})),
        ("kill deployment 7", json!({"op":"abort","deployment":"d-7"})),
        ("stop the rollout", json!({"op":"abort"})),
        ("roll back d-3", json!({"op":"rollback","deployment":"d-3"})),
        ("rollback", json!({"op":"rollback"})),
        ("revert it", json!({"op":"rollback"})),
        ("retry d-5", json!({"op":"retry","deployment":"d-5"})),
        ("try it again", json!({"op":"retry"})),
        ("redeploy", json!({"op":"retry"})),
        ("show deployment three", json!({"op":"show_deployment","deployment":"d-3"})),
        ("how is the rollout going", json!({"op":"show_deployment"})),
        ("status of d 2", json!({"op":"show_deployment","deployment":"d-2"})),
        ("list deployments", json!({"op":"list_deployments"})),
        ("what's running", json!({"op":"list_deployments","status":"running"})),
        (
            "show rolled back deployments in eu-west this week",
            json!({"op":"list_deployments","scope":["region:eu-west"],"status":"rolled_back","since":"7d"}),
        ),
        ("report", json!({"op":"report"})),
        ("give me a summary of the past 12 hours", json!({"op":"report","since":"12h"})),
        (
            "deployment report from 2026-10-01 to 2026-11-01",
            json!({"op":"report","since":"2026-10-01","until":"2026-11-01"}),
        ),
        ("drain edge-7", json!({"op":"drain","agent":"edge-7"})),
        ("take core 3 out of rotation", json!({"op":"drain","agent":"core-3"})),
        ("cordon edge-3", json!({"op":"cordon","agent":"edge-3"})),
        ("stop scheduling on edge 4", json!({"op":"cordon","agent":"edge-4"})),
        ("uncordon edge-3", json!({"op":"uncordon","agent":"edge-3"})),
        ("put edge-3 back into rotation", json!({"op":"uncordon","agent":"edge-3"})),
        ("restart core 5", json!({"op":"restart","agent":"core-5"})),
        ("reboot gpu-1", json!({"op":"restart","agent":"gpu-1"})),
        ("failover to us-east", json!({"op":"failover","to":"us-east"})),
        ("move all traffic out of eu-west into us-west", json!({"op":"failover","from":"eu-west","to":"us-west"})),
        ("fail back eu-west", json!({"op":"failback","region":"eu-west"})),
        ("restore us-east", json!({"op":"failback","region":"us-east"})),
        (
            "shift 30 percent of traffic from us-east to us-west",
            json!({"op":"shift_traffic","from":"us-east","to":"us-west","percent":30}),
        ),
        ("redirect traffic from ap-south to eu-west", json!({"op":"shift_traffic","from":"ap-south","to":"eu-west"})),
        ("show routing", json!({"op":"show_routing","scope":["fleet"]})),
        ("where is traffic going in eu-west", json!({"op":"show_routing","scope":["region:eu-west"]})),
        ("monitor production", json!({"op":"watch","scope":["env:production"]})),
        ("keep an eye on edge-7 every minute", json!({"op":"watch","scope":["agent:edge-7"],"interval_secs":60})),
        ("unwatch", json!({"op":"unwatch"})),
        ("enough updates", json!({"op":"unwatch"})),
        ("help", json!({"op":"help"})),
        ("what can you do", json!({"op":"help"})),
        ("yes", json!({"op":"confirm"})),
        ("yes please", json!({"op":"confirm"})),
        ("yeah", json!({"op":"confirm"})),
        ("yep", json!({"op":"confirm"})),
        ("do it", json!({"op":"confirm"})),
        ("go ahead", json!({"op":"confirm"})),
        ("proceed", json!({"op":"confirm"})),
        ("confirm", json!({"op":"confirm"})),
        ("no", json!({"op":"cancel"})),
        ("n", json!({"op":"cancel"})),
        ("nope", json!({"op":"cancel"})),
        ("cancel", json!({"op":"cancel"})),
        ("never mind", json!({"op":"cancel"})),
        ("abort that question", json!({"op":"cancel"})),
        // Troubleshooting (intents/troubleshoot.toml).
        ("why is eu-west degraded?", json!({"op":"explain","scope":["region:eu-west"]})),
        ("what's wrong with edge-14?", json!({"op":"explain","scope":["agent:edge-14"]})),
        ("why did d-4 fail?", json!({"op":"explain","deployment":"d-4"})),
        ("show me the errors on edge-14", json!({"op":"explain","scope":["agent:edge-14"],"metric":"error_rate"})),
        ("compare with yesterday", json!({"op":"explain","compare":"1d"})),
        ("what changed in the last hour?", json!({"op":"changes","since":"1h"})),
        ("what changed on edge-14 today?", json!({"op":"changes","since":"24h","scope":["agent:edge-14"]})),
        (
            "which version of auth-filter is eu-west on?",
            json!({"op":"versions","extension":"auth-filter","scope":["region:eu-west"]}),
        ),
        ("what's running on gpu-1?", json!({"op":"versions","scope":["agent:gpu-1"]})),
        ("show the audit log for today", json!({"op":"show_audit","since":"24h"})),
        ("who drained edge-7?", json!({"op":"show_audit","since":"30d","agent":"edge-7","action":"drain"})),
        ("stop everything", json!({"op":"freeze"})),
        ("freeze", json!({"op":"freeze"})),
        ("freeze it", json!({"op":"pause"})),
        ("unfreeze", json!({"op":"unfreeze"})),
        ("lift the freeze", json!({"op":"unfreeze"})),
    ];
    check_all(&cases);
    // Every op of the contract is covered twice or more, by the grammar and here.
    let (g, _) = fixture();
    for name in Operation::NAMES {
        assert!(g.ops().contains(&name), "no intent for {name}");
        let n = cases.iter().filter(|(_, v)| v["op"] == name).count();
        assert!(n >= 2, "{name}: {n} phrasings tested");
    }
}

#[test]
fn fuzzy_names_and_number_words() {
    for said in ["E.U. West", "eu west", "EU-WEST", "euwest", "Eu-West."] {
        assert_eq!(
            op(&format!("how healthy is {said}")),
            json!({"op":"show_health","scope":["region:eu-west"]}),
            "{said}"
        );
    }
    for said in ["edge seven", "edge 7", "Edge-7", "EDGE7"] {
        assert_eq!(op(&format!("drain {said}")), json!({"op":"drain","agent":"edge-7"}), "{said}");
    }
    assert_eq!(op("show health of us east a"), json!({"op":"show_health","scope":["zone:us-east-a"]}));
    assert_eq!(op("restart edge twenty four"), json!({"op":"restart","agent":"edge-24"}));
    assert_eq!(
        op("shift fifty per cent of us-west traffic to us-east"),
        json!({"op":"shift_traffic","from":"us-west","to":"us-east","percent":50})
    );
    assert_eq!(
        op("send a hundred percent of ap-south to eu-west"),
        json!({"op":"shift_traffic","from":"ap-south","to":"eu-west","percent":100})
    );
    for said in ["2.1", "two point one", "v2.1.0", "version 2.1"] {
        assert_eq!(
            op(&format!("deploy auth-filter {said} to eu-west")),
            json!({"op":"deploy","extension":"auth-filter","version":"2.1.0","scope":["region:eu-west"]}),
            "{said}"
        );
    }
    assert_eq!(op("deploy auth-filter newest to eu-west")["version"], "2.1.0");
    assert_eq!(op("show deployment three")["deployment"], "d-3");
    assert_eq!(op("pause d3")["deployment"], "d-3");
}

#[test]
fn unknown_names_are_kept_as_said() {
    assert_eq!(op("drain edge-70"), json!({"op":"drain","agent":"edge-70"}));
    assert_eq!(op("fail over mars-north to us-east"), json!({"op":"failover","from":"mars-north","to":"us-east"}));
    assert_eq!(
        op("deploy auth-filtr 2.1 to eu-west"),
        json!({"op":"deploy","extension":"auth-filtr","version":"2.1","scope":["region:eu-west"]})
    );
    assert_eq!(op("deploy auth-filter 3.0 to eu-west")["version"], "3.0");
    assert_eq!(op("deploy auth-filter 2 to mars-north")["scope"], json!(["region:mars-north"]));
    let v = &fixture().1;
    assert_eq!(suggest("auth-filtr", v.extensions.iter().map(String::as_str)), ["auth-filter"]);
    assert_eq!(suggest("edge-70", v.agents.iter().map(String::as_str))[0], "edge-7");
    assert_eq!(suggest("mars-north", v.regions.iter().map(String::as_str)), Vec::<String>::new());
    assert_eq!(suggest("us-eats", v.regions.iter().map(String::as_str))[0], "us-east");
}

#[test]
fn scope_words_and_selector_order() {
    assert_eq!(op("health of the whole fleet")["scope"], json!(["fleet"]));
    assert_eq!(op("how is everything")["scope"], json!(["fleet"]));
    assert_eq!(op("show health for all agents")["scope"], json!(["fleet"]));
    assert_eq!(op("health of prod")["scope"], json!(["env:production"]));
    assert_eq!(op("health of staging")["scope"], json!(["env:staging"]));
    assert_eq!(op("health of the edge tier in eu-west-b")["scope"], json!(["zone:eu-west-b", "tier:edge"]));
    assert_eq!(
        op("which agents with a gpu in production are in us-west")["scope"],
        json!(["region:us-west", "env:production", "capability:gpu"])
    );
}

#[test]
fn pronouns_become_references() {
    let p = parse("roll it back");
    assert_eq!(p.operation, Some(Operation::Rollback { deployment: None }));
    assert_eq!(p.references, ["deployment"]);
    assert!(p.missing.is_empty());
    assert_eq!(parse("abort the rollout").references, ["deployment"]);
    assert_eq!(parse("pause the last one").references, ["deployment"]);
    assert_eq!(parse("drain it").references, ["agent"]);
    assert_eq!(parse("drain it").missing, Vec::<String>::new());
    assert_eq!(parse("restart them").references, ["agent"]);
    assert_eq!(parse("abort d-3").references, Vec::<String>::new());
    // A value said beside the pronoun wins.
    assert_eq!(op("show the deployment d-9")["deployment"], "d-9");
}

#[test]
fn missing_slots() {
    let p = parse("deploy auth-filter");
    assert_eq!(p.missing, ["version", "scope"]);
    assert_eq!(parse("drain").missing, ["agent"]);
    assert_eq!(parse("shift traffic").missing, ["from", "to", "percent"]);
    assert_eq!(parse("fail over").missing, ["from"]);
    let (g, _) = fixture();
    assert_eq!(g.required_slots("deploy"), ["extension", "version", "scope"]);
    assert!(g.required_slots("rollback").is_empty());
    let op = p.operation.expect("deploy");
    assert_eq!(g.missing(&op), ["version", "scope"]);
    let op = with_slot(&op, "version", json!("2.1.0")).expect("fits");
    assert_eq!(g.missing(&op), ["scope"]);
}

#[test]
fn nothing_understood_is_null() {
    for u in ["", "   ", "the weather in paris", "??", "колобок", "🚀🚀"] {
        let p = parse(u);
        assert_eq!(p.operation, None, "{u}");
        assert_eq!(
            serde_json::to_value(&p).expect("json"),
            json!({"operation": null, "missing": [], "references": []})
        );
    }
}

#[test]
fn parse_serialises_as_the_contract() {
    let p = parse("deploy auth-filter");
    assert_eq!(
        serde_json::to_value(&p).expect("json"),
        json!({"operation": {"op":"deploy","extension":"auth-filter"}, "missing": ["version","scope"], "references": []})
    );
}

#[test]
fn answers_fill_one_slot() {
    let (g, v) = fixture();
    let deploy = parse("deploy auth-filter").operation.expect("deploy");
    assert_eq!(g.parse_slot(&deploy, "version", "2.1", v), Some(json!("2.1.0")));
    assert_eq!(g.parse_slot(&deploy, "version", "the latest", v), Some(json!("2.1.0")));
    assert_eq!(g.parse_slot(&deploy, "version", "two point zero point three", v), Some(json!("2.0.3")));
    assert_eq!(g.parse_slot(&deploy, "version", "3.0", v), Some(json!("3.0")));
    assert_eq!(g.parse_slot(&deploy, "scope", "eu-west", v), Some(json!(["region:eu-west"])));
    assert_eq!(
        g.parse_slot(&deploy, "scope", "gpu agents in E.U. west", v),
        Some(json!(["region:eu-west", "capability:gpu"]))
    );
    assert_eq!(g.parse_slot(&deploy, "scope", "everywhere", v), Some(json!(["fleet"])));
    assert_eq!(g.parse_slot(&deploy, "scope", "whatever", v), None);
    assert_eq!(
        g.parse_slot(&deploy, "strategy", "as a canary, 5% then 20%", v),
        Some(json!({"kind":"canary","steps":[5,20]}))
    );
    assert_eq!(g.parse_slot(&deploy, "colour", "red", v), None);
    let drain = Operation::Drain { agent: None };
    assert_eq!(g.parse_slot(&drain, "agent", "edge seven", v), Some(json!("edge-7")));
    assert_eq!(g.parse_slot(&drain, "agent", "it", v), None);
    let failover = Operation::Failover { from: Some("eu-west".into()), to: None };
    assert_eq!(g.parse_slot(&failover, "to", "us east", v), Some(json!("us-east")));
    let shift = Operation::ShiftTraffic { from: None, to: None, percent: None };
    assert_eq!(g.parse_slot(&shift, "percent", "twenty", v), Some(json!(20)));
    assert_eq!(g.parse_slot(&shift, "percent", "30%", v), Some(json!(30)));
    assert_eq!(g.parse_slot(&shift, "percent", "300", v), None);
    let ext = Operation::Deploy {
        extension: None,
        version: None,
        scope: None,
        strategy: None,
        require_approval: None,
        max_failures: None,
        queue: false,
        gate: Vec::new(),
    };
    assert_eq!(g.parse_slot(&ext, "extension", "the model server", v), Some(json!("model-server")));
}

#[test]
fn questions_use_what_is_known() {
    let (g, v) = fixture();
    let deploy = parse("deploy auth-filter").operation.expect("deploy");
    assert_eq!(
        g.question(&deploy, "version", v),
        "Which version of auth-filter? The catalog has 1.0.0, 2.0.3 and 2.1.0."
    );
    let deploy = with_slot(&deploy, "version", json!("2.1.0")).expect("fits");
    assert_eq!(
        g.question(&deploy, "scope", v),
        "Where should I roll out auth-filter 2.1.0: a region (us-east, us-west, eu-west and ap-south), an environment, or the whole fleet?"
    );
    assert_eq!(g.question(&Operation::Drain { agent: None }, "agent", v), "Which agent should I drain?");
    let shift = Operation::ShiftTraffic { from: Some("eu-west".into()), to: None, percent: None };
    assert_eq!(g.question(&shift, "to", v), "Which region should take eu-west's traffic?");
}

#[test]
fn with_slot_checks_the_contract() {
    let op = Operation::Drain { agent: None };
    assert_eq!(
        with_slot(&op, "agent", json!("edge-7")).expect("fits"),
        Operation::Drain { agent: Some("edge-7".into()) }
    );
    let err = with_slot(&op, "colour", json!("red")).expect_err("no such field");
    assert!(err.to_string().starts_with("slot `colour` of `drain`: unknown field `colour`"), "{err}");
    assert!(with_slot(&op, "op", json!("deploy")).is_err());
}

#[test]
fn vocabulary_words_for_completion() {
    let words = fixture().1.words();
    for w in ["eu-west", "edge-7", "us-east-a", "auth-filter", "canary", "production", "gpu"] {
        assert!(words.iter().any(|x| x == w), "{w}");
    }
    assert!(vocab::fixed_values_are_valid());
}

fn grammar_error(text: &str) -> String {
    match Grammar::from_files(&[("intents/deploy.toml".to_string(), text.to_string())]) {
        Ok(_) => "no error".to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_grammar_files_name_file_intent_and_field() {
    assert_eq!(
        grammar_error("[[intent]]\nop = \"deploy\"\npatterns = ['^deploy (']\n"),
        "intents/deploy.toml: intent `deploy`: field `patterns`: regex parse error: ^deploy ( ^ error: unclosed group"
    );
    assert_eq!(
        grammar_error("[[intent]]\nop = \"explode\"\npatterns = ['^boom']\n"),
        "intents/deploy.toml: intent `explode`: field `op`: unknown operation `explode`"
    );
    assert_eq!(
        grammar_error("[[intent]]\nop = \"deploy\"\npatterns = ['^deploy']\n[[intent.slot]]\nname = \"extension\"\nkind = \"colour\"\n"),
        "intents/deploy.toml: intent `deploy`: field `slot.extension`: unknown slot kind `colour`"
    );
    assert_eq!(
        grammar_error("[[intent]]\nop = \"deploy\"\npatterns = ['^deploy']\nrequired = [\"colour\"]\n"),
        "intents/deploy.toml: intent `deploy`: field `required`: `deploy` has no slot `colour`"
    );
    assert_eq!(
        grammar_error("[[intent]]\nop = \"drain\"\npatterns = ['^drain']\n[[intent.slot]]\nname = \"region\"\nkind = \"region\"\n"),
        "intents/deploy.toml: intent `drain`: field `slot.region`: `drain` has no field `region` of kind region: unknown field `region`, expected `agent`"
    );
    assert_eq!(
        grammar_error("[[intent]]\nop = \"watch\"\npatterns = ['^watch']\n[[intent.slot]]\nname = \"scope\"\nkind = \"scope\"\ndefault = [\"planet:mars\"]\n"),
        "intents/deploy.toml: intent `watch`: field `slot.scope`: default does not fit: `planet:mars` is not a selector (expected fleet, region:NAME, zone:NAME, agent:NAME, env:NAME, capability:NAME or tier:NAME)"
    );
    assert_eq!(
        grammar_error("[[intent]]\nop = \"help\"\npatterns = ['^{verb}']\n"),
        "intents/deploy.toml: intent `help`: field `patterns`: `^{verb}` uses {verb} but the intent has no verbs"
    );
    let e = grammar_error("[[intent]]\nop = \"help\"\n");
    assert!(e.starts_with("intents/deploy.toml: TOML parse error") && e.contains("missing field `patterns`"), "{e}");
    let e = grammar_error("[[intent]\n");
    assert!(e.starts_with("intents/deploy.toml: TOML parse error"), "{e}");
}

#[test]
fn a_grammar_directory_overrides_the_embedded_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mine.toml"),
        "[[intent]]\nop = \"drain\"\nverbs = [\"empty out\"]\npatterns = ['^{verb}']\nrequired = [\"agent\"]\n\
         [[intent.slot]]\nname = \"agent\"\nkind = \"agent\"\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("README.md"), "not a grammar").expect("write");
    let g = Grammar::load_dir(dir.path()).expect("loads");
    let v = &fixture().1;
    assert_eq!(g.parse("empty out edge 7", v).operation, Some(Operation::Drain { agent: Some("edge-7".into()) }));
    assert_eq!(g.parse("drain edge 7", v).operation, None);
    std::fs::write(dir.path().join("bad.toml"), "[[intent]]\nop = \"nope\"\npatterns = ['x']\n").expect("write");
    let err = Grammar::load_dir(dir.path()).expect_err("bad op").to_string();
    assert_eq!(
        err,
        format!("{}: intent `nope`: field `op`: unknown operation `nope`", dir.path().join("bad.toml").display())
    );
    assert!(Grammar::load_dir(&dir.path().join("absent")).is_err());
}

#[test]
fn long_input_is_cut_and_stays_fast() {
    let long = "roll out auth-filter 2.1 to eu-west ".repeat(3000);
    let start = std::time::Instant::now();
    let p = parse(&long);
    assert!(p.truncated);
    assert_eq!(p.operation.as_ref().map(Operation::name), Some("deploy"));
    let garbage: String = (0..100_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    assert_eq!(parse(&garbage).operation, None);
    assert!(start.elapsed() < std::time::Duration::from_secs(2), "{:?}", start.elapsed());
}

const WORDS: &[&str] = &[
    "roll",
    "out",
    "auth-filter",
    "2.1",
    "to",
    "eu-west",
    "as",
    "a",
    "canary",
    "10%",
    "then",
    "fifty",
    "percent",
    "drain",
    "edge",
    "seven",
    "it",
    "that",
    "back",
    "fail",
    "over",
    "us-east",
    "yes",
    "no",
    "abort",
    "d-3",
    "deployment",
    "three",
    "every",
    "10",
    "seconds",
    "last",
    "30",
    "days",
    "since",
    "2026-11-01",
    "gpu",
    "agents",
    "which",
    "have",
    "report",
    "batches",
    "of",
    "4",
    "at",
    "time",
    "point",
    "hundred",
    "the",
    "latest",
    "version",
    "v",
    "mars-north",
    "edge-70",
    "-",
    ".",
    "%",
    "'s",
    "🚀",
    "колобок",
    "東京",
    "\u{0}",
    "\n",
    "\t",
    "  ",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_text(s in any::<String>()) {
        check_round_trip(&s);
    }

    #[test]
    fn never_panics_on_vocabulary_mixes(words in proptest::collection::vec(proptest::sample::select(WORDS), 0..40)) {
        check_round_trip(&words.join(" "));
        check_round_trip(&words.concat());
    }

    #[test]
    fn never_panics_on_other_scripts(s in "[\\p{Cyrillic}\\p{Han}\\p{Emoji}\\p{Cc} 0-9%.-]{0,200}") {
        check_round_trip(&s);
    }
}

#[test]
fn never_panics_on_huge_lines() {
    for unit in ["a", "7 ", "é", "🚀", "\u{0}", "edge-", "twenty ", "point one ", "d-", "- ", "%"] {
        check_round_trip(&unit.repeat(100_000 / unit.len()));
    }
}

fn check_round_trip(s: &str) {
    let (g, v) = fixture();
    let p = g.parse(s, v);
    if let Some(op) = &p.operation {
        assert_eq!(Operation::from_json(op.to_json()).ok().as_ref(), Some(op), "{s:?}");
        for slot in ["scope", "version", "agent", "percent", "deployment", "to", "strategy"] {
            if let Some(value) = g.parse_slot(op, slot, s, v) {
                assert!(with_slot(op, slot, value).is_ok(), "{s:?}");
            }
        }
        let _ = g.question(op, "scope", v);
    }
    let drain = Operation::Drain { agent: None };
    let _ = g.parse_slot(&drain, "agent", s, v);
}

/// For grammar authors: `PARLEY_UTT='one|two' cargo test --lib intent::tests::show_skeletons -- --nocapture`
/// prints each utterance's skeleton and parse.
#[test]
fn show_skeletons() {
    let (g, v) = fixture();
    for u in std::env::var("PARLEY_UTT").unwrap_or_default().split('|').filter(|s| !s.is_empty()) {
        let tokens = strip_fillers(normalize::tokenize(u));
        let entities = v.scan(&tokens, &g.compiled.plain_phrases);
        let parsed = serde_json::to_string(&g.parse(u, v)).unwrap_or_default();
        eprintln!("{u}\n  skel: {}\n  parse: {parsed}", skeleton(&tokens, &entities));
    }
}

#[test]
fn a_failure_budget_and_queueing_are_deploy_fields() {
    check_all(&[
        (
            "roll out auth-filter 2.1.0 to ap-south, allow 2 failures",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:ap-south"], "max_failures": 2}),
        ),
        (
            "roll out auth-filter 2.1.0 to ap-south and stop if more than 3 agents fail",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:ap-south"], "max_failures": 3}),
        ),
        (
            "deploy log-shipper 1.5.0 to eu-west with a failure budget of 1",
            json!({"op": "deploy", "extension": "log-shipper", "version": "1.5.0", "scope": ["region:eu-west"], "max_failures": 1}),
        ),
        (
            "roll out auth-filter 2.1.0 to ap-south and queue it",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:ap-south"], "queue": true}),
        ),
        ("queue it", json!({"op": "deploy", "queue": true})),
        // Absent when not said; "queued" stays a status.
        (
            "roll out auth-filter 2.1.0 to ap-south",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:ap-south"]}),
        ),
        ("list queued deployments", json!({"op": "list_deployments", "status": "pending"})),
    ]);
}

#[test]
fn max_unavailable_is_a_rolling_field_counted_or_in_percent() {
    let deploy = |strategy: Value| {
        json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:eu-west"],
               "strategy": strategy})
    };
    check_all(&[
        (
            "roll out auth-filter 2.1 to eu-west rolling in batches of 10 with at most 2 unavailable",
            deploy(json!({"kind": "rolling", "batch_size": 10, "max_unavailable": 2})),
        ),
        (
            "roll out auth-filter 2.1 to eu-west in batches of 4, max unavailable 20%",
            deploy(json!({"kind": "rolling", "batch_size": 4, "max_unavailable": "20%"})),
        ),
        (
            "roll out auth-filter 2.1 to eu-west with no more than 3 agents unavailable at a time",
            deploy(json!({"kind": "rolling", "max_unavailable": 3})),
        ),
        (
            "rolling upgrade of auth-filter 2.1 in eu-west, maximum unavailable of 1",
            deploy(json!({"kind": "rolling", "max_unavailable": 1})),
        ),
        (
            "roll out auth-filter 2.1 to eu-west 6 at a time with at most 25% unavailable at once",
            deploy(json!({"kind": "rolling", "batch_size": 6, "max_unavailable": "25%"})),
        ),
        // Batches may be a share of the targets, not a canary step.
        (
            "roll out auth-filter 2.1 to eu-west in batches of 25%",
            deploy(json!({"kind": "rolling", "batch_percent": 25})),
        ),
        ("roll out auth-filter 2.1 to eu-west 25% at a time", deploy(json!({"kind": "rolling", "batch_percent": 25}))),
        (
            "rolling upgrade of auth-filter 2.1 in eu-west, 10% per batch, at most 1 unavailable",
            deploy(json!({"kind": "rolling", "batch_percent": 10, "max_unavailable": 1})),
        ),
        // A failure budget still reads as one beside it.
        (
            "roll out auth-filter 2.1 to eu-west, at most 2 unavailable, stop if more than 1 agent fails",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:eu-west"],
                   "strategy": {"kind": "rolling", "max_unavailable": 2}, "max_failures": 1}),
        ),
    ]);
}

#[test]
fn progressive_phases_by_group_by_name_and_with_approval() {
    let deploy = |scope: Value, strategy: Value| json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": scope, "strategy": strategy});
    check_all(&[
        (
            "progressive rollout of auth-filter 2.1 to eu-west by zone",
            deploy(json!(["region:eu-west"]), json!({"kind": "progressive", "group_by": "zone"})),
        ),
        (
            "roll out auth-filter 2.1 to the fleet region by region",
            deploy(json!(["fleet"]), json!({"kind": "progressive", "group_by": "region"})),
        ),
        (
            "roll out auth-filter 2.1 to the fleet one environment at a time",
            deploy(json!(["fleet"]), json!({"kind": "progressive", "group_by": "env"})),
        ),
        (
            "progressive rollout of auth-filter 2.1 to eu-west by tier",
            deploy(json!(["region:eu-west"]), json!({"kind": "progressive", "group_by": "tier"})),
        ),
        (
            "progressive rollout of auth-filter 2.1 in phases staging then production",
            deploy(json!(["fleet"]), json!({"kind": "progressive", "phases": ["env:staging", "env:production"]})),
        ),
        (
            "roll out auth-filter 2.1 to eu-west in phases eu-west-b first then eu-west-a",
            deploy(
                json!(["region:eu-west"]),
                json!({"kind": "progressive", "phases": ["zone:eu-west-b", "zone:eu-west-a"]}),
            ),
        ),
        (
            "progressive rollout of auth-filter 2.1 to eu-west by zone with approval",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:eu-west"],
                   "strategy": {"kind": "progressive", "group_by": "zone"}, "require_approval": true}),
        ),
        (
            "progressive rollout of auth-filter 2.1 to eu-west by zone without approval",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:eu-west"],
                   "strategy": {"kind": "progressive", "group_by": "zone"}, "require_approval": false}),
        ),
        (
            "roll out auth-filter 2.1 to eu-west as a canary, 10% then 50%, with approval",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:eu-west"],
                   "strategy": {"kind": "canary", "steps": [10, 50]}, "require_approval": true}),
        ),
        // Percentages still make percentage phases.
        (
            "progressive rollout of auth-filter 2.1 to eu-west, 20% then 60%",
            deploy(json!(["region:eu-west"]), json!({"kind": "progressive", "steps": [20, 60]})),
        ),
    ]);
}

#[test]
fn a_confirmation_is_plain_words_of_reasonable_length_and_nothing_else() {
    for yes in ["yes", "Yes.", "YES!", "yes, go ahead", "yes please", "ok", "do it", "yes i am sure", "yes do it now"] {
        assert_eq!(op(yes), json!({"op":"confirm"}), "{yes:?}");
    }
    let spam = "yes ".repeat(10_000);
    for noise in [
        "k",
        "y",
        "Y",
        "\u{fffd}k\u{fffd}",
        "\u{ff}k\u{ff}",
        "\u{fffd}yes\u{fffd}",
        "\u{0}yes",
        "yes\u{1b}[2J",
        "«yes»",
        "yes 🚀",
        "-yes-",
        "y.e.s",
        "yes yes yes yes yes",
        spam.as_str(),
    ] {
        assert_eq!(op(noise), Value::Null, "{noise:?} confirmed something: {:?}", parse(noise));
    }
    // A cancel may stay lenient: it changes nothing.
    assert_eq!(op("n"), json!({"op":"cancel"}));
}

#[test]
fn out_of_range_numbers_are_refused_never_bent() {
    let refused = |u: &str| {
        let p = parse(u);
        assert_eq!(p.operation, None, "{u:?} was read as {:?}", p.operation);
        p.rejected.unwrap_or_else(|| panic!("{u:?}: no rejection")).to_string()
    };
    assert_eq!(
        refused("send -50% of eu-west's traffic to us-east"),
        "\"-50%\" is out of range: a negative number means nothing here"
    );
    assert_eq!(
        refused("send −50% of eu-west's traffic to us-east"),
        "\"-50%\" is out of range: a negative number means nothing here"
    );
    assert_eq!(
        refused("roll out auth-filter 2.1 to eu-west and allow -3 failures"),
        "\"-3\" is out of range: a negative number means nothing here"
    );
    assert_eq!(
        refused("roll out auth-filter 2.1 to eu-west as a canary -1% then 50%"),
        "\"-1%\" is out of range: a negative number means nothing here"
    );
    assert_eq!(
        refused("roll out auth-filter 2.1 to eu-west in batches of 18446744073709551616"),
        "\"18446744073709551616\" is out of range: the number is far larger than anything it could count"
    );
    assert_eq!(
        refused("roll out auth-filter 2.1 to eu-west with at most 1e309 unavailable"),
        "\"1e309\" is out of range: numbers are whole numbers in plain digits"
    );
    assert_eq!(
        refused("roll out auth-filter 1e+309 to eu-west"),
        "\"1e+309\" is out of range: numbers are whole numbers in plain digits"
    );
    assert_eq!(
        refused("roll out auth-filter 2.1e309 to eu-west"),
        "\"2.1e309\" is out of range: numbers are whole numbers in plain digits"
    );
    assert_eq!(
        refused("send 2.5% of eu-west's traffic to us-east"),
        "\"2.5%\" is out of range: shares are whole percentages"
    );
    assert_eq!(
        refused("send 250% of eu-west's traffic to us-east"),
        "\"250%\" is out of range: a share is at most 100%"
    );
    // A value its slot refuses refuses the utterance, rather than dropping the slot.
    assert_eq!(
        refused("roll out auth-filter 2.1 to eu-west with at most 0 unavailable"),
        "the strategy as said does not fit: `0` is not a number of agents (at least 1) or a share of them such as `20%`"
    );
    // Ids are kept as said, so that one nobody has is reported, not replaced.
    assert_eq!(op("pause d-18446744073709551615"), json!({"op":"pause","deployment":"d-18446744073709551615"}));
    assert_eq!(op("pause d18446744073709551615"), json!({"op":"pause","deployment":"d-18446744073709551615"}));
    assert_eq!(op("drain edge-99999999999"), json!({"op":"drain","agent":"edge-99999999999"}));
    // What is in range still reads as before.
    assert_eq!(
        op("send 50% of eu-west's traffic to us-east"),
        json!({"op":"shift_traffic","from":"eu-west","to":"us-east","percent":50})
    );
    assert_eq!(op("pause d007"), json!({"op":"pause","deployment":"d-7"}));
}

#[test]
fn an_answer_is_bare_values_and_a_command_is_not() {
    for answer in ["edge-20", "2.1", "the latest", "ap south", "to eu-west", "version 2.1", "d-3", "10% then 50%"] {
        assert!(parse(answer).bare, "{answer:?} is an answer");
    }
    for command in ["how healthy is edge-20?", "cordon edge-19", "roll out auth-filter 2.1 to eu-west", "show d-3"] {
        assert!(!parse(command).bare, "{command:?} is a command");
    }
}

#[test]
fn an_answer_keeps_the_modifiers_said_with_it() {
    let (g, v) = fixture();
    let deploy = parse("roll out auth-filter 2.1").operation.expect("deploy");
    let missing = vec!["scope".to_string()];
    let got = g.answer(&deploy, &missing, "eu-west, as a canary 10% then 50%", v).map(|o| o.to_json());
    assert_eq!(
        got,
        Some(json!({"op":"deploy","extension":"auth-filter","version":"2.1.0","scope":["region:eu-west"],
            "strategy":{"kind":"canary","steps":[10,50]}}))
    );
    let got = g.answer(&deploy, &missing, "eu-west with at most 1 unavailable", v).map(|o| o.to_json());
    assert_eq!(
        got,
        Some(json!({"op":"deploy","extension":"auth-filter","version":"2.1.0","scope":["region:eu-west"],
            "strategy":{"kind":"rolling","max_unavailable":1}}))
    );
    assert_eq!(g.answer(&deploy, &missing, "eu-west in batches of -3", v), None);
    assert_eq!(g.answer(&deploy, &missing, "whatever", v), None);
}

#[test]
fn an_analysis_threshold_is_a_deploy_field_and_gate_questions_show_the_deployment() {
    check_all(&[
        (
            "roll out auth-filter 2.1 to eu-west as a canary, gated on p99 latency under 300 ms",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:eu-west"],
                   "strategy": {"kind": "canary"}, "gate": [{"metric": "p99-latency", "threshold": 300, "unit": "ms"}]}),
        ),
        (
            "canary auth-filter 2.1 to eu-west 10% then 50% with error ratio below 2%",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:eu-west"],
                   "strategy": {"kind": "canary", "steps": [10, 50]},
                   "gate": [{"metric": "error-ratio", "threshold": 2, "unit": "percent"}]}),
        ),
        (
            "roll out auth-filter 2.1 to eu-west with p99 latency less than 1s and error ratio under 1 percent",
            json!({"op": "deploy", "extension": "auth-filter", "version": "2.1.0", "scope": ["region:eu-west"],
                   "gate": [{"metric": "p99-latency", "threshold": 1, "unit": "s"},
                            {"metric": "error-ratio", "threshold": 1, "unit": "percent"}]}),
        ),
        ("show the analysis of d-4", json!({"op": "show_deployment", "deployment": "d-4"})),
        ("why did d-3 roll back?", json!({"op": "explain", "deployment": "d-3"})),
        ("why did step 2 fail?", json!({"op": "show_deployment"})),
        ("show me the gates", json!({"op": "show_deployment"})),
    ]);
}
