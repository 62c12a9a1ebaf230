//! [`Reply`] -> Block Kit. Pure functions, so that what Slack shows is unit-tested
//! without Slack.
//!
//! A reply becomes a `section` with the message, the table as sections of `fields`
//! (Slack allows ten fields per section and fifty blocks per message), follow-ups as
//! buttons whose value is the utterance they stand for, and a risky operation as a
//! Confirm button carrying Slack's own confirm dialog plus a Cancel button, both
//! bound to that one proposal (its id and expiry are their value). All text from
//! outside is escaped ([`text::escape`]), so nothing a user wrote is read by Slack
//! as a mention or a link.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::text::{self, escape_within};
use crate::reply::{Proposal, Reply, Table};

/// Button action ids. A follow-up's `value` is the utterance it stands for; a
/// Confirm's or Cancel's is [`answer_value`].
pub const ACTION_FOLLOW_UP: &str = "parley_follow_up";
pub const ACTION_CONFIRM: &str = "parley_confirm";
pub const ACTION_CANCEL: &str = "parley_cancel";

/// Rows shown before "and N more"; keeps a message under Slack's block limit.
const MAX_ROWS: usize = 40;
const FIELDS_PER_SECTION: usize = 10;
/// Slack's limits on text objects.
const MAX_SECTION_TEXT: usize = 3000;
const MAX_FIELD_TEXT: usize = 2000;
const MAX_BUTTON_TEXT: usize = 75;
const MAX_BUTTONS: usize = 5;

/// `{"text": ..., "blocks": [...]}` for `chat.postMessage` / `chat.update`; `text`
/// is the notification and screen-reader fallback.
pub fn reply_message(reply: &Reply) -> Value {
    let mut blocks = vec![section(&reply.message)];
    if let Some(note) = reply.simulation_note() {
        // No block id: the waiting line's id is the one a closed proposal looks for.
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text::escape(&note)}]}));
    }
    if let Some(table) = &reply.table {
        blocks.extend(table_blocks(table));
    }
    if reply.needs_confirmation {
        if let Some(p) = &reply.proposal {
            blocks.push(context(&format!("Waiting for yes or no until {}.", p.expires_at.format("%H:%M UTC"))));
        }
        blocks.push(confirm_actions(&reply.message, reply.proposal.as_ref()));
    } else {
        let buttons: Vec<Value> = reply
            .follow_ups
            .iter()
            .take(MAX_BUTTONS)
            .enumerate()
            .map(|(i, f)| button(&format!("{ACTION_FOLLOW_UP}_{i}"), f, f, None))
            .collect();
        if !buttons.is_empty() {
            blocks.push(json!({"type": "actions", "elements": buttons}));
        }
    }
    json!({"text": escape_within(&reply.message, MAX_SECTION_TEXT), "blocks": blocks})
}

/// A message whose Confirm and Cancel are spent: the same text without its
/// buttons, and `note` (mrkdwn, already escaped) saying what became of it.
pub fn closed_message(shown: &Value, note: &str) -> Value {
    let mut blocks: Vec<Value> = shown
        .get("blocks")
        .and_then(Value::as_array)
        .map(|b| b.iter().filter(|b| b["type"] != "actions" && b["block_id"] != WAITING).cloned().collect())
        .unwrap_or_default();
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}));
    let mut message = json!({"blocks": blocks});
    message["text"] = shown.get("text").cloned().unwrap_or_else(|| json!(note));
    message
}

/// A Confirm's or Cancel's value: the proposal it answers and when that expires.
pub fn answer_value(p: &Proposal) -> String {
    json!({"proposal": p.id, "expires_at": p.expires_at.timestamp()}).to_string()
}

/// What [`answer_value`] wrote: the proposal id and its expiry; `None` for any
/// other value (a button from before proposals had ids).
pub fn parse_answer_value(value: &str) -> Option<(String, DateTime<Utc>)> {
    let v: Value = serde_json::from_str(value).ok()?;
    let id = v.get("proposal")?.as_str()?.to_string();
    let expires = DateTime::<Utc>::from_timestamp(v.get("expires_at")?.as_i64()?, 0)?;
    Some((id, expires))
}

/// The one progress message of a rollout, rewritten in place as it advances.
pub fn progress_message(deployment: &str, headline: &str, lines: &[String]) -> Value {
    let recent: Vec<&str> = lines.iter().rev().take(8).rev().map(String::as_str).collect();
    let body = if recent.is_empty() { String::new() } else { format!("\n{}", text::escape(&recent.join("\n"))) };
    let text = format!("*{}*: {}{body}", text::escape(deployment), text::escape(headline));
    json!({"text": escape_within(&format!("{deployment}: {headline}"), MAX_SECTION_TEXT), "blocks": [mrkdwn_section(&text)]})
}

/// A section of plain text from anywhere (escaped).
pub fn section(text: &str) -> Value {
    mrkdwn_section(&escape_within(text, MAX_SECTION_TEXT))
}

/// A section of mrkdwn this module wrote (already escaped where needed).
fn mrkdwn_section(mrkdwn: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(mrkdwn, MAX_SECTION_TEXT)}})
}

/// The block saying until when a proposal waits: dropped with the buttons.
const WAITING: &str = "parley_waiting";

fn context(plain: &str) -> Value {
    json!({"type": "context", "block_id": WAITING, "elements": [{"type": "mrkdwn", "text": text::escape(plain)}]})
}

fn table_blocks(table: &Table) -> Vec<Value> {
    let mut blocks = Vec::new();
    if !table.title.is_empty() {
        blocks.push(mrkdwn_section(&format!("*{}*", escape(&table.title))));
    }
    let fields: Vec<Value> = table.rows.iter().take(MAX_ROWS).map(|row| row_field(&table.columns, row)).collect();
    for chunk in fields.chunks(FIELDS_PER_SECTION) {
        blocks.push(json!({"type": "section", "fields": chunk}));
    }
    if table.rows.len() > MAX_ROWS {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": format!("and {} more", table.rows.len() - MAX_ROWS)}]}));
    }
    blocks
}

/// One row as one field: the first cell bold, the rest as `column: value` lines.
fn row_field(columns: &[String], row: &[String]) -> Value {
    let mut text = format!("*{}*", escape(row.first().map(String::as_str).unwrap_or("")));
    for (i, cell) in row.iter().enumerate().skip(1) {
        let name = columns.get(i).map(String::as_str).unwrap_or("");
        text.push_str(&format!("\n{}: {}", escape(name), escape(cell)));
    }
    json!({"type": "mrkdwn", "text": truncate(&text, MAX_FIELD_TEXT)})
}

fn confirm_actions(question: &str, proposal: Option<&Proposal>) -> Value {
    // Without a proposal (never from the dialog) the buttons answer nothing.
    let value = proposal.map(answer_value).unwrap_or_default();
    let dialog = json!({
        "title": {"type": "plain_text", "text": "Are you sure?"},
        "text": {"type": "mrkdwn", "text": escape_within(question, 300)},
        "confirm": {"type": "plain_text", "text": "Proceed"},
        "deny": {"type": "plain_text", "text": "Not yet"},
        "style": "danger",
    });
    json!({"type": "actions", "elements": [
        button(ACTION_CONFIRM, "Confirm", &value, Some(dialog)),
        button(ACTION_CANCEL, "Cancel", &value, None),
    ]})
}

fn button(action_id: &str, label: &str, value: &str, confirm: Option<Value>) -> Value {
    let mut b = json!({
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": truncate(label, MAX_BUTTON_TEXT)},
        "value": truncate(value, MAX_FIELD_TEXT),
    });
    if let Some(c) = confirm {
        b["style"] = json!("danger");
        b["confirm"] = c;
    }
    b
}

pub use super::text::escape;

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Outcome;

    #[test]
    fn a_reply_about_a_simulated_fleet_carries_the_note_as_context() {
        let mut reply = Reply::new(Outcome::Answered, "us-east: 12 of 12 healthy");
        reply.simulated = Some(crate::topology::Simulation { agents: 48, of: 48 });
        let m = reply_message(&reply);
        assert_eq!(m["text"], "us-east: 12 of 12 healthy");
        assert_eq!(m["blocks"][1]["type"], "context");
        assert_eq!(m["blocks"][1]["elements"][0]["text"], "Simulated fleet: installs and health are simulated.");
    }

    #[test]
    fn a_table_becomes_fields_and_follow_ups_become_buttons() {
        let mut table = Table::new("Health of us-east", &["agent", "health", "cpu"]);
        for n in 1..=12 {
            table.push(vec![format!("edge-{n}"), "healthy".into(), "12%".into()]);
        }
        let reply = Reply::new(Outcome::Answered, "us-east: 12 of 12 healthy")
            .with_table(table)
            .with_follow_ups(["show topology of us-east"]);
        let m = reply_message(&reply);
        assert_eq!(m["text"], "us-east: 12 of 12 healthy");
        let blocks = m["blocks"].as_array().unwrap();
        assert_eq!(blocks[0]["text"]["text"], "us-east: 12 of 12 healthy");
        assert_eq!(blocks[1]["text"]["text"], "*Health of us-east*");
        assert_eq!(blocks[2]["fields"].as_array().unwrap().len(), 10);
        assert_eq!(blocks[2]["fields"][0]["text"], "*edge-1*\nhealth: healthy\ncpu: 12%");
        assert_eq!(blocks[3]["fields"].as_array().unwrap().len(), 2);
        assert_eq!(blocks[4]["elements"][0]["value"], "show topology of us-east");
        assert_eq!(blocks[4]["elements"][0]["action_id"], "parley_follow_up_0");
    }

    #[test]
    fn a_risky_operation_gets_a_confirm_dialog() {
        let mut reply =
            Reply::new(Outcome::NeedsConfirmation, "Deploy a<b> to eu-west? (yes/no)").with_follow_ups(["yes", "no"]);
        reply.needs_confirmation = true;
        let proposal = Proposal::new("U1", "deploy a<b> to eu-west", std::time::Duration::from_secs(60));
        reply.proposal = Some(proposal.clone());
        let m = reply_message(&reply);
        assert_eq!(m["text"], "Deploy a&lt;b&gt; to eu-west? (yes/no)");
        assert_eq!(m["blocks"][0]["text"]["text"], "Deploy a&lt;b&gt; to eu-west? (yes/no)");
        assert_eq!(m["blocks"][1]["block_id"], WAITING);
        let actions = &m["blocks"][2]["elements"];
        assert_eq!(actions[0]["action_id"], ACTION_CONFIRM);
        // Both buttons name this proposal and its expiry, nothing else.
        assert_eq!(
            parse_answer_value(actions[0]["value"].as_str().unwrap()),
            Some((proposal.id.clone(), DateTime::<Utc>::from_timestamp(proposal.expires_at.timestamp(), 0).unwrap()))
        );
        assert_eq!(actions[1]["value"], actions[0]["value"]);
        assert_eq!(parse_answer_value("yes"), None);
        assert_eq!(actions[0]["confirm"]["confirm"]["text"], "Proceed");
        assert_eq!(actions[0]["confirm"]["text"]["text"], "Deploy a&lt;b&gt; to eu-west? (yes/no)");
        // Once answered: the same words, no buttons, and what became of it.
        let closed = closed_message(&m, "Confirmed by <@U1>");
        let kinds: Vec<&str> =
            closed["blocks"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["section", "context"]);
        assert_eq!(closed["blocks"][1]["elements"][0]["text"], "Confirmed by <@U1>");
        assert_eq!(closed["text"], m["text"]);
        assert_eq!(escape("a<b>&"), "a&lt;b&gt;&amp;");
        assert_eq!(truncate(&"x".repeat(80), MAX_BUTTON_TEXT).chars().count(), 75);
    }
}
