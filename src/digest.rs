//! Big answers, summarised: when an answer about agents is too big to read as a table,
//! and what it holds instead. This module is the one owner of that rule; the session
//! applies it to a reply before any front-end sees it, so the text of `ask` and the
//! REPL, the TUI, Slack and `chat --json` all show the same summary.
//!
//! A summary keeps: the counts by health, the unhealthy agents by name (at most
//! [`NAMED`], then "and N more"), a table of those agents only, and, as its first
//! follow-up, a sentence the parser reads as the full table ("list all agents in
//! us-east", `find_agents` with `all`). `chat --json` still carries every agent in
//! `details` (the data is not the screen), and `details.summary` says what the table
//! left out.

use serde_json::json;

use crate::ops::{ExtensionRef, Scope, Selector};
use crate::reply::Reply;
use crate::topology::{AgentView, Liveness, Topology};

/// An answer with more agent rows than this is summarised. A region of the demo fleet
/// (12) or the whole of it (48) stays a table, as does a screenful.
pub const MOST_ROWS: usize = 50;

/// Unhealthy agents named in the message, and kept in the table, at most.
pub const NAMED: usize = 10;

/// Whether an answer of `rows` agent rows is big.
pub fn is_big(rows: usize) -> bool {
    rows > MOST_ROWS
}

/// How an agent counts: healthy, flapping (whatever the last poll caught) or its liveness.
fn health(a: &AgentView) -> Option<Liveness> {
    if a.flapping.is_some() {
        None
    } else {
        Some(a.liveness)
    }
}

fn word(h: Option<Liveness>) -> &'static str {
    h.map(Liveness::as_str).unwrap_or("flapping")
}

/// Counts by health in a fixed order, the zero ones left out: `[("healthy", 470), ("down", 30)]`.
pub fn counts(agents: &[&AgentView]) -> Vec<(&'static str, usize)> {
    [Some(Liveness::Healthy), None, Some(Liveness::Degraded), Some(Liveness::Suspect), Some(Liveness::Down)]
        .into_iter()
        .map(|h| (word(h), agents.iter().filter(|a| health(a) == h).count()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The agents that are not healthy, worst first (down, suspect, degraded, flapping),
/// in the order given within each.
pub fn unhealthy<'a>(agents: &[&'a AgentView]) -> Vec<&'a AgentView> {
    let rank = |a: &AgentView| match health(a) {
        Some(Liveness::Down) => 0,
        Some(Liveness::Suspect) => 1,
        Some(Liveness::Degraded) => 2,
        None => 3,
        Some(Liveness::Healthy) => 4,
    };
    let mut out: Vec<&AgentView> = agents.iter().copied().filter(|a| rank(a) < 4).collect();
    out.sort_by_key(|a| rank(a));
    out
}

/// The sentence that asks for every row of `scope` (and `extension`): one the parser
/// reads as `find_agents` with `all` and the same filters.
pub fn full_table_utterance(scope: &Scope, extension: Option<&ExtensionRef>) -> String {
    let mut traits = Vec::new();
    let mut places = Vec::new();
    for s in &scope.0 {
        match s {
            Selector::Fleet => {}
            Selector::Capability(c) => traits.push(c.clone()),
            Selector::Tier(t) => traits.push(t.clone()),
            Selector::Env(e) => traits.push(e.clone()),
            Selector::Region(r) | Selector::Zone(r) | Selector::Agent(r) => places.push(r.clone()),
        }
    }
    let mut out = String::from("list all ");
    for t in traits {
        out.push_str(&t);
        out.push(' ');
    }
    out.push_str("agents");
    if !places.is_empty() {
        out.push_str(" in ");
        out.push_str(&places.join(" "));
    }
    if let Some(e) = extension {
        out.push_str(" running ");
        out.push_str(&e.name);
        if let Some(v) = &e.version {
            out.push(' ');
            out.push_str(v);
        }
    }
    out
}

/// What a reply's message already says of its agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    /// Nothing of their health (a search): the summary adds the counts and names.
    Nothing,
    /// The counts by health and the unhealthy by name, bounded (a health answer).
    CountsAndNames,
}

/// `reply`, whose table has a row per agent (its name in the first cell; `topo` says
/// how each is), summarised when it is big: the table keeps the first [`NAMED`]
/// unhealthy agents, the message gains the counts and those names unless it `said`
/// them, and what the table shows, and the first follow-up is `full`. A small
/// answer, or one whose rows are no agents, is returned as it is.
pub fn summarise(mut reply: Reply, topo: &Topology, full: &str, said: Said) -> Reply {
    let agents: Vec<&AgentView> = match &reply.table {
        Some(t) => t.rows.iter().filter_map(|r| topo.agent(r.first()?)).collect(),
        None => return reply,
    };
    if !is_big(agents.len()) {
        return reply;
    }
    let agents = agents.as_slice();
    let total = agents.len();
    let bad = unhealthy(agents);
    let named: Vec<String> = bad.iter().map(|a| format!("{} ({})", a.name, word(health(a)))).collect();
    let counted = counts(agents);
    let mut message = reply.message.trim_end().to_string();
    let shown = bad.len().min(NAMED);
    if said == Said::Nothing {
        let parts: Vec<String> = counted.iter().map(|(w, n)| format!("{n} {w}")).collect();
        message.push_str(&format!(" Of the {total}: {}.", parts.join(", ")));
        if !bad.is_empty() {
            message.push_str(&format!(" Not healthy: {}.", crate::words::and_more(&named, NAMED)));
        }
    }
    if bad.is_empty() {
        message.push_str(&format!(" All {total} are healthy, so no table; say \"{full}\" for every row."));
    } else {
        let which = if shown == bad.len() {
            format!("the {shown} not healthy")
        } else {
            format!("the first {shown} of the {} not healthy", bad.len())
        };
        message.push_str(&format!(" The table shows {which}; say \"{full}\" for all {total}."));
    }
    reply.message = message;
    if bad.is_empty() {
        reply.table = None;
    }
    if let Some(table) = reply.table.as_mut() {
        let keep: Vec<&str> = bad.iter().take(NAMED).map(|a| a.name.as_str()).collect();
        table.rows.retain(|r| r.first().is_some_and(|n| keep.contains(&n.as_str())));
        table.title = format!("{}: {} of {total} (not healthy)", table.title, table.rows.len());
    }
    reply.follow_ups.retain(|f| f != full);
    reply.follow_ups.insert(0, full.to_string());
    let summary = json!({
        "total": total,
        "counts": counted.iter().map(|(w, n)| (w.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "unhealthy": bad.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
        "rows_shown": reply.table.as_ref().map(|t| t.rows.len()).unwrap_or(0),
        "full": full,
    });
    match reply.details.as_mut().and_then(|d| d.as_object_mut()) {
        Some(obj) => {
            obj.insert("summary".into(), summary);
        }
        None => reply.details = Some(json!({ "summary": summary })),
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intent::{Grammar, Vocabulary};
    use crate::ops::Operation;
    use crate::topology::test_support::demo_topology;

    #[test]
    fn the_full_table_offered_parses_to_every_row_of_the_same_agents() {
        let grammar = Grammar::embedded().unwrap();
        let vocab = Vocabulary::from_topology(&demo_topology());
        let ext = |name: &str, version: Option<&str>| ExtensionRef {
            name: name.to_string(),
            version: version.map(str::to_string),
        };
        for (scope, extension) in [
            (Scope::region("us-east"), None),
            (Scope::fleet(), None),
            (Scope(vec![Selector::Zone("eu-west-b".into())]), None),
            (Scope(vec![Selector::Region("us-east".into()), Selector::Capability("gpu".into())]), None),
            (Scope(vec![Selector::Region("ap-south".into()), Selector::Tier("core".into())]), None),
            (Scope::region("us-east"), Some(ext("auth-filter", None))),
            (Scope::region("eu-west"), Some(ext("rate-limiter", Some("1.0.0")))),
        ] {
            let said = full_table_utterance(&scope, extension.as_ref());
            let parsed = grammar.parse(&said, &vocab).operation;
            assert_eq!(parsed, Some(Operation::FindAgents { scope: Some(scope), extension, all: true }), "{said:?}");
        }
    }

    #[test]
    fn a_demo_region_or_the_whole_demo_fleet_is_no_big_answer() {
        assert!(!is_big(12) && !is_big(48) && !is_big(MOST_ROWS));
        assert!(is_big(MOST_ROWS + 1) && is_big(500));
    }
}

#[cfg(test)]
mod front_ends {
    use super::*;
    use crate::reply::{Outcome, Table};
    use crate::topology::test_support::demo_topology;
    use crate::topology::AgentName;

    /// 120 agents like edge-1, every tenth down; a reply listing them all.
    fn big() -> (Topology, Reply) {
        let t = demo_topology();
        let base = t.agents()[0].clone();
        let agents = (1..=120)
            .map(|i| {
                let mut a = base.clone();
                a.name = AgentName::new(&format!("edge-{i}"));
                if i % 10 == 0 {
                    a.liveness = Liveness::Down;
                }
                a
            })
            .collect();
        let topo = Topology::new(agents, t.catalog_arc(), t.refreshed_at());
        let mut table = Table::new("Agents", &["Agent", "Health"]);
        for a in topo.agents() {
            table.push(vec![a.name.to_string(), a.health_word().to_string()]);
        }
        let reply = Reply::new(Outcome::Answered, "Found 120 agents.")
            .with_table(table)
            .with_follow_ups(["show agent edge-10"]);
        (topo, reply)
    }

    #[test]
    fn text_slack_and_json_show_the_same_summary() {
        let (topo, reply) = big();
        let r = summarise(reply, &topo, "list all agents in us-east", Said::Nothing);
        assert_eq!(
            r.message,
            "Found 120 agents. Of the 120: 108 healthy, 12 down. Not healthy: edge-10 (down), edge-20 (down), \
             edge-30 (down), edge-40 (down), edge-50 (down), edge-60 (down), edge-70 (down), edge-80 (down), \
             edge-90 (down), edge-100 (down) and 2 more. The table shows the first 10 of the 12 not healthy; \
             say \"list all agents in us-east\" for all 120."
        );
        assert_eq!(r.follow_ups, ["list all agents in us-east", "show agent edge-10"]);
        let table = r.table.as_ref().unwrap();
        assert_eq!(table.title, "Agents: 10 of 120 (not healthy)");
        let names: Vec<&str> = table.rows.iter().map(|row| row[0].as_str()).collect();
        assert_eq!(
            names,
            [
                "edge-10", "edge-20", "edge-30", "edge-40", "edge-50", "edge-60", "edge-70", "edge-80", "edge-90",
                "edge-100"
            ]
        );

        // Text (ask, the REPL): those ten rows and the offer.
        let text = crate::ui::text::render(&r);
        assert_eq!(text.lines().filter(|l| l.starts_with("  edge-") && l.ends_with("  down")).count(), 10, "{text}");
        assert!(text.contains("[1] list all agents in us-east"), "{text}");
        // Slack: ten rows as fields, the offer as the first button.
        let slack = crate::slack::blocks::reply_message(&r);
        let fields: usize = slack["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|b| b.get("fields").and_then(|f| f.as_array()).map(Vec::len))
            .sum();
        assert_eq!(fields, 10, "{slack}");
        assert!(slack.to_string().contains("list all agents in us-east"), "{slack}");
        // chat --json: the summary in details.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["details"]["summary"]["counts"], serde_json::json!({"healthy": 108, "down": 12}));
        assert_eq!(json["details"]["summary"]["rows_shown"], 10);
    }

    #[test]
    fn all_healthy_is_said_without_an_empty_table_and_small_answers_are_kept() {
        let (topo, reply) = big();
        let healthy: Vec<crate::topology::AgentView> = topo
            .agents()
            .iter()
            .cloned()
            .map(|mut a| {
                a.liveness = Liveness::Healthy;
                a
            })
            .collect();
        let topo = Topology::new(healthy, topo.catalog_arc(), topo.refreshed_at());
        let r = summarise(reply.clone(), &topo, "list all agents", Said::CountsAndNames);
        assert_eq!(
            r.message,
            "Found 120 agents. All 120 are healthy, so no table; say \"list all agents\" for every row."
        );
        assert!(r.table.is_none());
        // 50 rows: no summary at all.
        let mut small = reply;
        if let Some(t) = small.table.as_mut() {
            t.rows.truncate(MOST_ROWS);
        }
        assert_eq!(summarise(small.clone(), &topo, "list all agents", Said::Nothing), small);
    }
}
