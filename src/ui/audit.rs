//! `parley audit` as text: who did what, when, from which front-end, and how it ended.

use chrono::{DateTime, Local, Utc};

use crate::registry::AuditEntry;
use crate::reply::{Outcome, Reply, Table};

/// The entries as a table under one line that says how many there are since when,
/// wrapped to the terminal like every other text reply.
pub fn render(entries: &[AuditEntry], since: DateTime<Utc>) -> String {
    crate::ui::text::render(&reply(entries, since))
}

/// The reply `render` prints (the table an operator reads).
pub fn reply(entries: &[AuditEntry], since: DateTime<Utc>) -> Reply {
    let since_local = since.with_timezone(&Local).format("%Y-%m-%d %H:%M");
    if entries.is_empty() {
        return Reply::new(Outcome::Answered, format!("No requests since {since_local}."));
    }
    let mut table = Table::new("Audit log", &["time", "who", "front-end", "role", "said", "result"]);
    for e in entries {
        table.push(vec![
            e.at.with_timezone(&Local).format("%m-%d %H:%M:%S").to_string(),
            e.actor.clone(),
            e.frontend.clone(),
            e.role.as_str().to_string(),
            e.utterance.clone(),
            e.result.as_str().to_string(),
        ]);
    }
    let n = entries.len();
    Reply::new(Outcome::Answered, format!("{} since {since_local}.", crate::words::count(n, "request")))
        .with_table(table)
}
