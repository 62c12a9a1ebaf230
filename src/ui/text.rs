//! Plain-text rendering of a [`Reply`] for terminals without a TUI (REPL, `ask`).

use crate::reply::{Reply, Table};

/// Widest a table cell may be before it is cut with `…`; a one-column table (a plan,
/// a list of examples) may use most of a wide terminal.
const MAX_CELL: usize = 48;
const MAX_SINGLE_CELL: usize = 200;

pub fn render(reply: &Reply) -> String {
    let mut out = String::new();
    out.push_str(&reply.message);
    out.push('\n');
    if let Some(table) = &reply.table {
        out.push('\n');
        out.push_str(&render_table(table));
    }
    if !reply.follow_ups.is_empty() {
        out.push('\n');
        for (i, f) in reply.follow_ups.iter().enumerate() {
            out.push_str(&format!("  [{}] {}\n", i + 1, f));
        }
    }
    out
}

fn cut(cell: &str, max: usize) -> String {
    if cell.chars().count() <= max {
        cell.to_string()
    } else {
        let mut s: String = cell.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

/// An aligned table with a title and a rule under the header.
pub fn render_table(table: &Table) -> String {
    let max = if table.columns.len() == 1 { MAX_SINGLE_CELL } else { MAX_CELL };
    let header: Vec<String> = table.columns.iter().map(|c| cut(c, max)).collect();
    let rows: Vec<Vec<String>> = table.rows.iter().map(|r| r.iter().map(|c| cut(c, max)).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            } else {
                widths.push(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::from(" ");
        for (i, w) in widths.iter().enumerate() {
            let c = cells.get(i).map(String::as_str).unwrap_or("");
            let pad = w.saturating_sub(c.chars().count());
            s.push(' ');
            s.push_str(c);
            s.push_str(&" ".repeat(pad));
            s.push(' ');
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = format!("  {}\n", table.title);
    out.push_str(&line(&header));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&line(&rule));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Outcome;

    #[test]
    fn tables_align_and_follow_ups_are_numbered() {
        let mut t = Table::new("Health", &["Agent", "CPU %"]);
        t.push(vec!["edge-1".into(), "31".into()]);
        t.push(vec!["gpu-12".into(), "7".into()]);
        let r = Reply::new(Outcome::Answered, "ok").with_table(t).with_follow_ups(["show agent edge-1"]);
        assert_eq!(
            render(&r),
            "ok\n\n  Health\n  Agent   CPU %\n  ------  -----\n  edge-1  31\n  gpu-12  7\n\n  [1] show agent edge-1\n"
        );
    }
}
