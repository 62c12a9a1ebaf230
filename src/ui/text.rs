//! Plain-text rendering of a [`Reply`] for terminals without a TUI (REPL, `ask`),
//! wrapped to the width of the terminal: prose by words, tables by shrinking their
//! widest columns and wrapping cells, so no line (and no rule) runs past the edge.

use std::io::IsTerminal as _;

use crate::ops::DeploymentStatus;
use crate::registry::DeploymentRecord;
use crate::reply::{Reply, Table};

/// The width when there is no terminal to ask and `$COLUMNS` is not set.
pub const DEFAULT_WIDTH: usize = 80;
/// Narrower than this, wrapping makes text harder to read than running past the edge.
const MIN_WIDTH: usize = 20;
/// Tables are indented this much under the message.
const INDENT: usize = 2;
/// Columns are shrunk no narrower than this when the terminal is tight.
const MIN_COLUMN: usize = 3;
/// Continuation lines of a wrapped cell in a column at least this wide are indented
/// two spaces, so rows of prose (a plan's steps) stay apart; narrower columns (names,
/// numbers) cannot spare the room.
const HANGING_FROM: usize = 20;

/// The width text output wraps to: `$COLUMNS` when it is set to a number (as GNU
/// tools read it, so a script can choose), else the width of the terminal standard
/// output is, else [`DEFAULT_WIDTH`].
pub fn terminal_width() -> usize {
    let from_env = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok()).filter(|w| *w > 0);
    let width = from_env.or_else(|| {
        std::io::stdout()
            .is_terminal()
            .then(crossterm::terminal::size)
            .and_then(Result::ok)
            .map(|(w, _)| w as usize)
            .filter(|w| *w > 0)
    });
    width.unwrap_or(DEFAULT_WIDTH).max(MIN_WIDTH)
}

/// `reply` as text for this terminal.
pub fn render(reply: &Reply) -> String {
    render_width(reply, terminal_width())
}

/// `reply` as text no wider than `width` columns (but for words longer than that).
pub fn render_width(reply: &Reply, width: usize) -> String {
    let mut out = String::new();
    for line in wrap(&reply.message, width) {
        push_line(&mut out, &line);
    }
    if let Some(note) = reply.simulation_note() {
        for line in wrap(&note, width) {
            push_line(&mut out, &line);
        }
    }
    if let Some(table) = &reply.table {
        out.push('\n');
        out.push_str(&render_table(table, width));
    }
    if !reply.follow_ups.is_empty() {
        out.push('\n');
        for (i, f) in reply.follow_ups.iter().enumerate() {
            let lead = format!("  [{}] ", i + 1);
            let hang = " ".repeat(lead.chars().count());
            for (j, line) in wrap(f, width.saturating_sub(hang.len())).into_iter().enumerate() {
                push_line(&mut out, &format!("{}{line}", if j == 0 { &lead } else { &hang }));
            }
        }
    }
    out
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Greedy word wrap to `width` characters; explicit newlines are kept and words
/// longer than a line are cut across lines. Shared with the TUI.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut len = 0;
        for word in para.split(' ') {
            let mut word: Vec<char> = word.chars().collect();
            while word.len() > width {
                if len > 0 {
                    out.push(std::mem::take(&mut line));
                    len = 0;
                }
                out.push(word.drain(..width).collect());
            }
            let wlen = word.len();
            if len > 0 && len + 1 + wlen > width {
                out.push(std::mem::take(&mut line));
                len = 0;
            }
            if len > 0 {
                line.push(' ');
                len += 1;
            }
            line.extend(word);
            len += wlen;
        }
        out.push(line);
    }
    out
}

/// A cell's lines in a column `width` wide.
fn cell_lines(cell: &str, width: usize) -> Vec<String> {
    if cell.chars().count() <= width {
        return vec![cell.to_string()];
    }
    let hang = if width >= HANGING_FROM { 2 } else { 0 };
    let mut lines = wrap(cell, width);
    if hang > 0 && lines.len() > 1 {
        let rest = lines.split_off(1).join(" ");
        lines.extend(wrap(&rest, width - hang).into_iter().map(|l| format!("{}{l}", " ".repeat(hang))));
    }
    lines
}

/// An aligned table with a title and a rule under the header, no wider than
/// `width`: two spaces between columns when that fits, one when it does not, then
/// the widest columns are narrowed and their cells wrapped.
pub fn render_table(table: &Table, width: usize) -> String {
    let ncols = table.columns.len().max(table.rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut widths = vec![0usize; ncols];
    for row in std::iter::once(&table.columns).chain(&table.rows) {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let total = |widths: &[usize], gap: usize| INDENT + widths.iter().sum::<usize>() + gap * ncols.saturating_sub(1);
    let gap = if total(&widths, 2) <= width { 2 } else { 1 };
    while total(&widths, gap) > width {
        let Some((i, w)) = widths.iter().copied().enumerate().max_by_key(|&(_, w)| w) else { break };
        if w <= MIN_COLUMN {
            break;
        }
        widths[i] = w - 1;
    }

    let mut out = String::new();
    for line in wrap(&table.title, width.saturating_sub(INDENT)) {
        push_line(&mut out, &format!("{}{line}", " ".repeat(INDENT)));
    }
    let mut row_lines = |cells: &[String]| {
        let wrapped: Vec<Vec<String>> =
            widths.iter().enumerate().map(|(i, w)| cell_lines(cells.get(i).map_or("", String::as_str), *w)).collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        for n in 0..height {
            let mut s = " ".repeat(INDENT);
            for (i, w) in widths.iter().enumerate() {
                let c = wrapped[i].get(n).map_or("", String::as_str);
                s.push_str(c);
                s.push_str(&" ".repeat(w.saturating_sub(c.chars().count())));
                s.push_str(&" ".repeat(gap));
            }
            push_line(&mut out, &s);
        }
    };
    row_lines(&table.columns);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    row_lines(&rule);
    for r in &table.rows {
        row_lines(r);
    }
    out
}

/// What a client leaving says about the rollouts that go on without it: one line per
/// deployment still active in the server at `server_url`, where it stands and how to
/// follow it. `None` when none is active. The one rule for every front-end that leaves
/// a server's rollouts behind (the TUI, the REPL).
pub fn rollouts_keep_running(records: &[DeploymentRecord], server_url: &str) -> Option<String> {
    // Over TCP the follower has to name the server; the local socket is found again.
    let server = if server_url.starts_with("http://") { format!(" --server {server_url}") } else { String::new() };
    let lines: Vec<String> = records
        .iter()
        .filter(|d| d.status.is_active())
        .map(|d| {
            let at = format!("step {} of {}", (d.current_step + 1).min(d.step_count.max(1)), d.step_count.max(1));
            let (what, verb) = match d.status {
                DeploymentStatus::Paused => (format!("paused at {at}"), "stays paused"),
                DeploymentStatus::Pending => ("pending".to_string(), "waits"),
                DeploymentStatus::RollingBack => ("rolling back".to_string(), "keeps rolling back"),
                _ => (at, "keeps running"),
            };
            format!(
                "{name} ({ext} {ver} → {target}, {what}) {verb} in the Parley server at {server_url}; \
                 follow it with: parley{server} ask \"show {name}\"",
                name = d.name,
                ext = d.extension,
                ver = d.version,
                target = crate::feasibility::scope_words(&d.scope),
            )
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::Outcome;

    /// Records as the registry makes them (and the server's API sends them).
    async fn records(statuses: &[crate::ops::DeploymentStatus]) -> Vec<DeploymentRecord> {
        use crate::ops::{Actor, Role, Scope, Strategy, StrategyKind};
        use crate::registry::{NewDeployment, NewTarget, Registry};
        let registry = Registry::open_in_memory().await.unwrap();
        let mut out = Vec::new();
        for (i, status) in statuses.iter().enumerate() {
            let new = NewDeployment {
                extension: "auth-filter".into(),
                version: "2.1.0".into(),
                scope: Scope::region("ap-south"),
                strategy: Strategy { steps: None, batch_size: Some(2), ..Strategy::of(StrategyKind::Rolling) },
                status: *status,
                actor: Actor::new("alice", "repl", Role::Operator),
                utterance: "roll out auth-filter 2.1.0 to ap-south".into(),
                step_count: 3,
                targets: vec![NewTarget {
                    agent: format!("edge-{}", 19 + i),
                    endpoint: "http://127.0.0.1:1".into(),
                    previous_version: Some("2.0.3".into()),
                    step: 0,
                }],
            };
            out.push(registry.create_deployment(&new).await.unwrap());
        }
        // Through JSON, as a client reads them.
        serde_json::from_value(serde_json::to_value(&out).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn leaving_names_the_rollouts_that_keep_running_and_how_to_follow_them() {
        use crate::ops::DeploymentStatus::*;
        let local = "unix:/var/lib/parley/parley.sock";
        assert_eq!(rollouts_keep_running(&records(&[Succeeded, Aborted]).await, local), None);
        assert_eq!(
            rollouts_keep_running(&records(&[Succeeded, Running]).await, local).as_deref(),
            Some(
                "d-2 (auth-filter 2.1.0 → ap-south, step 1 of 3) keeps running in the Parley server at \
                 unix:/var/lib/parley/parley.sock; follow it with: parley ask \"show d-2\""
            )
        );
        assert_eq!(
            rollouts_keep_running(&records(&[Running, Paused, Pending, RollingBack]).await, "http://10.0.0.5:7878")
                .as_deref(),
            Some(
                "d-1 (auth-filter 2.1.0 → ap-south, step 1 of 3) keeps running in the Parley server at \
                 http://10.0.0.5:7878; follow it with: parley --server http://10.0.0.5:7878 ask \"show d-1\"\n\
                 d-2 (auth-filter 2.1.0 → ap-south, paused at step 1 of 3) stays paused in the Parley server at \
                 http://10.0.0.5:7878; follow it with: parley --server http://10.0.0.5:7878 ask \"show d-2\"\n\
                 d-3 (auth-filter 2.1.0 → ap-south, pending) waits in the Parley server at \
                 http://10.0.0.5:7878; follow it with: parley --server http://10.0.0.5:7878 ask \"show d-3\"\n\
                 d-4 (auth-filter 2.1.0 → ap-south, rolling back) keeps rolling back in the Parley server at \
                 http://10.0.0.5:7878; follow it with: parley --server http://10.0.0.5:7878 ask \"show d-4\""
            )
        );
    }

    #[test]
    fn tables_align_and_follow_ups_are_numbered() {
        let mut t = Table::new("Health", &["Agent", "CPU %"]);
        t.push(vec!["edge-1".into(), "31".into()]);
        t.push(vec!["gpu-12".into(), "7".into()]);
        let r = Reply::new(Outcome::Answered, "ok").with_table(t).with_follow_ups(["show agent edge-1"]);
        assert_eq!(
            render_width(&r, 80),
            "ok\n\n  Health\n  Agent   CPU %\n  ------  -----\n  edge-1  31\n  gpu-12  7\n\n  [1] show agent edge-1\n"
        );
    }

    #[test]
    fn a_reply_about_a_simulated_fleet_says_so_under_its_message() {
        let mut r = Reply::new(Outcome::Answered, "eu-west: 12 agents, 12 healthy.").with_follow_ups(["help"]);
        r.simulated = Some(crate::topology::Simulation { agents: 3, of: 5 });
        assert_eq!(
            render_width(&r, 80),
            "eu-west: 12 agents, 12 healthy.\nSimulated: 3 of 5 agents; their installs and health are simulated.\n\n  [1] help\n"
        );
    }

    #[test]
    fn messages_and_follow_ups_wrap_at_sixty_columns() {
        let r = Reply::new(
            Outcome::Infeasible,
            "model-server needs gpu, which 10 of the 12 agents in scope lack: edge-13, edge-14, edge-15, \
             edge-16, edge-17, edge-18 and 4 more.",
        )
        .with_follow_ups(["roll out model-server 0.4.0 to the gpu agents in eu-west, one zone at a time"]);
        assert_eq!(
            render_width(&r, 60),
            "model-server needs gpu, which 10 of the 12 agents in scope\n\
             lack: edge-13, edge-14, edge-15, edge-16, edge-17, edge-18\n\
             and 4 more.\n\
             \n  [1] roll out model-server 0.4.0 to the gpu agents in\n      eu-west, one zone at a time\n"
        );
    }

    #[test]
    fn a_long_one_column_table_wraps_its_cells_and_its_rule_fits() {
        let mut t = Table::new("d-1 plan", &["Step"]);
        t.push(vec!["step 1: 3 agents (3 of 12 agents, 25%): edge-19, edge-20, edge-21; bake 2 s; gate: error rate < 1%, p95 < 500 ms".into()]);
        t.push(vec!["step 2: 3 agents (6 of 12 agents, 50%)".into()]);
        let text = render_table(&t, 60);
        assert_eq!(
            text,
            "  d-1 plan\n  Step\n  ----------------------------------------------------------\n  \
             step 1: 3 agents (3 of 12 agents, 25%): edge-19, edge-20,\n    \
             edge-21; bake 2 s; gate: error rate < 1%, p95 < 500 ms\n  \
             step 2: 3 agents (6 of 12 agents, 50%)\n"
        );
        assert!(text.lines().all(|l| l.chars().count() <= 60), "{text}");
    }

    #[test]
    fn a_wide_table_narrows_its_widest_column_to_the_terminal() {
        let mut t = Table::new("Agents", &["Agent", "Region", "Extensions"]);
        t.push(vec![
            "edge-1".into(),
            "us-east".into(),
            "auth-filter 2.0.3, rate-limiter 1.0.0, log-shipper 1.4.2".into(),
        ]);
        assert_eq!(
            render_table(&t, 40),
            "  Agents\n  Agent  Region  Extensions\n  ------ ------- -----------------------\n  \
             edge-1 us-east auth-filter 2.0.3,\n                   \
             rate-limiter 1.0.0,\n                   log-shipper 1.4.2\n"
        );
    }

    #[test]
    fn words_longer_than_the_line_are_cut_across_lines() {
        assert_eq!(wrap("see abcdefghij now", 4), ["see", "abcd", "efgh", "ij", "now"]);
        assert_eq!(wrap("a\nb c", 80), ["a", "b c"]);
    }
}
