//! [`Reply`] -> Block Kit. Pure functions, so that what Slack shows is unit-tested
//! without Slack.
//!
//! A reply becomes a `section` with the message, the table as sections of `fields`
//! (Slack allows ten fields per section and fifty blocks per message), follow-ups as
//! buttons whose value is the utterance they stand for, and a risky operation as a
//! Confirm button carrying Slack's own confirm dialog plus a Cancel button.

use serde_json::{json, Value};

use crate::reply::{Reply, Table};

/// Button action ids. A click's `value` is the utterance it stands for.
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
    if let Some(table) = &reply.table {
        blocks.extend(table_blocks(table));
    }
    if reply.needs_confirmation {
        blocks.push(confirm_actions(&reply.message));
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
    json!({"text": truncate(&reply.message, MAX_SECTION_TEXT), "blocks": blocks})
}

/// The one progress message of a rollout, rewritten in place as it advances.
pub fn progress_message(deployment: &str, headline: &str, lines: &[String]) -> Value {
    let recent: Vec<&str> = lines.iter().rev().take(8).rev().map(String::as_str).collect();
    let body = if recent.is_empty() { String::new() } else { format!("\n{}", recent.join("\n")) };
    let text = format!("*{deployment}*: {headline}{body}");
    json!({"text": format!("{deployment}: {headline}"), "blocks": [section(&text)]})
}

pub fn section(text: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(text, MAX_SECTION_TEXT)}})
}

fn table_blocks(table: &Table) -> Vec<Value> {
    let mut blocks = Vec::new();
    if !table.title.is_empty() {
        blocks.push(section(&format!("*{}*", escape(&table.title))));
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

fn confirm_actions(question: &str) -> Value {
    let dialog = json!({
        "title": {"type": "plain_text", "text": "Are you sure?"},
        "text": {"type": "mrkdwn", "text": truncate(question, 300)},
        "confirm": {"type": "plain_text", "text": "Proceed"},
        "deny": {"type": "plain_text", "text": "Not yet"},
        "style": "danger",
    });
    json!({"type": "actions", "elements": [
        button(ACTION_CONFIRM, "Confirm", "yes", Some(dialog)),
        button(ACTION_CANCEL, "Cancel", "no", None),
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

/// Slack's mrkdwn escaping: only `&`, `<` and `>` are special.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

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
        let m = reply_message(&reply);
        let actions = &m["blocks"][1]["elements"];
        assert_eq!(actions[0]["action_id"], ACTION_CONFIRM);
        assert_eq!(actions[0]["value"], "yes");
        assert_eq!(actions[0]["confirm"]["confirm"]["text"], "Proceed");
        assert_eq!(actions[1]["value"], "no");
        assert_eq!(escape("a<b>&"), "a&lt;b&gt;&amp;");
        assert_eq!(truncate(&"x".repeat(80), MAX_BUTTON_TEXT).chars().count(), 75);
    }
}
