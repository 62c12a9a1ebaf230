//! Drawing: a pure function of [`App`]. Nothing here reads the clock, the fleet or
//! the terminal, so a `TestBackend` frame is exactly what an operator would see.
//!
//! Big fleets stay cheap because the fleet pane draws only the rows that fit (the
//! grouping into regions and zones is done when the topology changes, not per frame).

use std::collections::VecDeque;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph};
use ratatui::Frame;

use super::state::{
    deployment_actions, AgentStatus, App, Button, Confirm, Counts, FleetRow, FleetSort, LogEntry, Pane, RegionSeries,
    Talk,
};
use crate::ops::{DeploymentStatus, Operation};
use crate::registry::{DeploymentRecord, TargetState};

use crate::reply::{Outcome, Reply, Table};
use crate::topology::{age_words, Reading, RegionHealth};
pub use crate::ui::text::wrap;

/// At least this wide and tall, all three panes show at once.
pub const WIDE_COLS: u16 = 120;
pub const WIDE_ROWS: u16 = 30;
/// Samples a sparkline shows.
const SPARK_SHOWN: usize = 8;
const SPARK_BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub fn render(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < 20 || area.height < 6 {
        frame.render_widget(Paragraph::new("Parley: terminal too small"), area);
        return;
    }
    let [title, body, input] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(1), Constraint::Length(3)]).areas(area);
    render_title(frame, app, title);
    if area.width >= WIDE_COLS && area.height >= WIDE_ROWS {
        let [left, right] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(body);
        // The deployments pane takes what its content needs (at most 45%); the fleet
        // table, which always has more to show on a big fleet, takes the rest.
        let wanted = deployments_height(app, right.width.saturating_sub(2) as usize) as u16 + 2;
        let most = right.height * 45 / 100;
        let deploys_h = wanted.clamp(3.min(most), most.max(3));
        let [fleet, deploys] = Layout::vertical([Constraint::Min(8), Constraint::Length(deploys_h)]).areas(right);
        render_chat(frame, app, left);
        render_fleet(frame, app, fleet);
        render_deployments(frame, app, deploys);
    } else {
        match app.focus {
            Pane::Chat => {
                // Narrow: a one-line strip keeps the latest rollout in sight while chatting.
                let latest = app.ordered_deployments().first().copied();
                match latest {
                    Some(d) if body.height > 8 => {
                        let [chat, strip] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(body);
                        render_chat(frame, app, chat);
                        frame.render_widget(Paragraph::new(compact_deployment(d, strip.width)), strip);
                    }
                    _ => render_chat(frame, app, body),
                }
            }
            Pane::Fleet => render_fleet(frame, app, body),
            Pane::Deployments => render_deployments(frame, app, body),
        }
    }
    render_input(frame, app, input);
    render_completions(frame, app, input);
    if app.confirm.is_some() {
        render_confirm(frame, app, area);
    }
    if app.show_help {
        render_help(frame, app, area);
    }
}

fn status_color(s: AgentStatus) -> Color {
    match s {
        AgentStatus::Healthy => Color::Green,
        AgentStatus::Degraded => Color::Yellow,
        AgentStatus::Suspect => Color::Magenta,
        AgentStatus::Down => Color::Red,
        AgentStatus::Cordoned => Color::Blue,
        AgentStatus::Flapping => Color::LightRed,
    }
}

fn region_color(h: RegionHealth) -> Color {
    match h {
        RegionHealth::Healthy => Color::Green,
        RegionHealth::Degraded => Color::Yellow,
        RegionHealth::Partitioned => Color::Red,
    }
}

fn deployment_color(s: DeploymentStatus) -> Color {
    match s {
        DeploymentStatus::Pending | DeploymentStatus::Running => Color::Cyan,
        DeploymentStatus::Paused | DeploymentStatus::RollingBack => Color::Yellow,
        DeploymentStatus::Succeeded => Color::Green,
        DeploymentStatus::Failed | DeploymentStatus::Aborted | DeploymentStatus::RolledBack => Color::Red,
    }
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    let style = if focused { Style::new().fg(Color::Cyan) } else { Style::new().fg(Color::DarkGray) };
    Block::new().borders(Borders::ALL).border_style(style).title(title)
}

fn render_title(frame: &mut Frame, app: &App, area: Rect) {
    let running = app.deployments.iter().filter(|d| d.status.is_active()).count();
    let mut spans = vec![
        Span::styled(" Parley ", Style::new().add_modifier(Modifier::BOLD).fg(Color::Black).bg(Color::Cyan)),
        Span::raw(format!(
            " {} agents, {} regions{} ",
            app.topology.agents().len(),
            app.topology.regions().len(),
            if running > 0 { format!(", {running} rolling out") } else { String::new() }
        )),
    ];
    // A partitioned region is the first thing an operator must see, not a count.
    for (region, health) in app.troubled_regions() {
        spans.push(Span::styled(
            format!(" {region} {} ", health.as_str().to_uppercase()),
            Style::new().fg(Color::Black).bg(region_color(health)).add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::raw(" "));
    }
    // The pane keys with their names when they fit, else the keys alone: a
    // partitioned region in the header matters more than the words "Chat" and "Fleet".
    let used: usize = spans.iter().map(|s| s.width()).sum();
    let long = used + 50 <= area.width as usize;
    for (key, name, pane) in
        [("F2", "Chat", Pane::Chat), ("F3", "Fleet", Pane::Fleet), ("F4", "Deploys", Pane::Deployments)]
    {
        let style = if app.focus == pane {
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED)
        } else {
            Style::new().fg(Color::Gray)
        };
        let label = if long { format!(" {key} {name} ") } else { format!(" {key} ") };
        spans.push(Span::styled(label, style));
    }
    match app.talk {
        Talk::Idle => {}
        Talk::Listening => spans.push(Span::styled(" listening… ", Style::new().fg(Color::Black).bg(Color::Red))),
        Talk::Transcribing => {
            spans.push(Span::styled(" transcribing… ", Style::new().fg(Color::Black).bg(Color::Yellow)))
        }
    }
    spans.push(Span::styled(if long { "  ? help  ^C quit" } else { " ? help" }, Style::new().fg(Color::DarkGray)));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else if width == 0 {
        String::new()
    } else {
        let mut c: String = s.chars().take(width - 1).collect();
        c.push('…');
        c
    }
}

fn pad(s: &str, width: usize) -> String {
    let c = cut(s, width);
    let n = c.chars().count();
    c + &" ".repeat(width.saturating_sub(n))
}

/// The scrollback as lines for a pane `width` columns wide.
pub fn chat_lines(app: &App, width: usize) -> Vec<Line<'static>> {
    let mut lines: Vec<Line<'static>> = Vec::new();
    let last_turn = app.log.iter().rposition(|e| matches!(e, LogEntry::Turn { .. }));
    for (idx, entry) in app.log.iter().enumerate() {
        match entry {
            LogEntry::Notice(text) => {
                for (i, l) in wrap(text, width.saturating_sub(4)).into_iter().enumerate() {
                    let lead = if i == 0 { "  » " } else { "    " };
                    lines.push(Line::styled(format!("{lead}{l}"), Style::new().fg(Color::DarkGray)));
                }
            }
            LogEntry::Turn { utterance, reply } => {
                if !lines.is_empty() {
                    lines.push(Line::raw(""));
                }
                if !utterance.is_empty() {
                    for (i, l) in wrap(utterance, width.saturating_sub(2)).into_iter().enumerate() {
                        let lead = if i == 0 { "› " } else { "  " };
                        lines.push(Line::styled(
                            format!("{lead}{l}"),
                            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                        ));
                    }
                }
                match reply {
                    None => lines.push(Line::styled("  …", Style::new().fg(Color::DarkGray))),
                    Some(r) => reply_lines(app, r.as_ref(), width, Some(idx) == last_turn, &mut lines),
                }
            }
        }
    }
    lines
}

fn outcome_style(o: Outcome) -> Style {
    match o {
        Outcome::Infeasible | Outcome::Refused | Outcome::Failed | Outcome::NotUnderstood => {
            Style::new().fg(Color::Red)
        }
        Outcome::NeedsConfirmation | Outcome::NeedsInput => Style::new().fg(Color::Yellow),
        Outcome::Started | Outcome::Done => Style::new().fg(Color::Green),
        Outcome::Answered | Outcome::Cancelled => Style::new(),
    }
}

fn reply_lines(app: &App, r: &Reply, width: usize, last: bool, lines: &mut Vec<Line<'static>>) {
    let style = outcome_style(r.outcome);
    for l in wrap(&r.message, width.saturating_sub(2)) {
        lines.push(Line::styled(format!("  {l}"), style));
    }
    if let Some(note) = r.simulation_note() {
        for l in wrap(&note, width.saturating_sub(2)) {
            lines.push(Line::styled(format!("  {l}"), Style::new().fg(Color::DarkGray)));
        }
    }
    if matches!(r.operation, Some(Operation::Explain { .. })) {
        explain_sparklines(r, width, lines);
    }
    if let Some(table) = &r.table {
        lines.push(Line::raw(""));
        if matches!(r.operation, Some(Operation::Report { .. })) {
            // Rollouts per day by outcome; the counts by status when there is no timeline.
            if !timeline_chart_lines(r.details.as_ref(), width, lines) {
                bar_chart_lines(table, width, lines);
            }
        } else {
            table_lines(table, width, lines);
        }
    }
    if last && !r.follow_ups.is_empty() {
        lines.push(Line::raw(""));
        for (i, f) in r.follow_ups.iter().enumerate() {
            let picked = app.follow_up_pick == Some(i);
            let style = if picked {
                Style::new().fg(Color::Cyan).add_modifier(Modifier::REVERSED)
            } else {
                Style::new().fg(Color::Cyan)
            };
            lines.push(Line::from(vec![
                Span::raw("  "),
                Span::styled(cut(&format!("[{}] {f}", i + 1), width.saturating_sub(2)), style),
            ]));
        }
    }
}

/// A table fitted to the pane: columns as wide as their widest cell, the widest ones
/// shrunk first when the pane is narrow.
fn table_lines(table: &Table, width: usize, lines: &mut Vec<Line<'static>>) {
    let ncols = table.columns.len().max(table.rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut widths = vec![0usize; ncols];
    for (i, c) in table.columns.iter().enumerate() {
        widths[i] = widths[i].max(c.chars().count());
    }
    for row in &table.rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    // Two spaces between columns when they fit, one when the pane is tight.
    let natural: usize = widths.iter().sum();
    let gap = if natural + 2 + 2 * ncols <= width { 2 } else { 1 };
    let budget = width.saturating_sub(2 + gap * ncols);
    while widths.iter().sum::<usize>() > budget {
        let Some((i, w)) = widths.iter().copied().enumerate().max_by_key(|&(_, w)| w) else { break };
        if w <= 3 {
            break;
        }
        widths[i] = w - 1;
    }
    let row_text = |cells: &[String]| -> String {
        let mut s = String::from("  ");
        for (i, w) in widths.iter().enumerate() {
            let c = cells.get(i).map(String::as_str).unwrap_or("");
            s.push_str(&pad(c, *w));
            s.push_str(&" ".repeat(gap));
        }
        s.trim_end().to_string()
    };
    lines.push(Line::styled(
        format!("  {}", cut(&table.title, width.saturating_sub(2))),
        Style::new().add_modifier(Modifier::BOLD),
    ));
    lines
        .push(Line::styled(row_text(&table.columns), Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)));
    for row in &table.rows {
        // Health words in a row colour the row, so a red line stands out in a long table.
        let colour = row.iter().find_map(|c| match c.as_str() {
            "down" | "partitioned" | "failed" | "rolled_back" => Some(Color::Red),
            "suspect" => Some(Color::Magenta),
            "degraded" | "paused" => Some(Color::Yellow),
            "cordoned" | "draining" | "drained" => Some(Color::Blue),
            _ => None,
        });
        let style = colour.map(|c| Style::new().fg(c)).unwrap_or_default();
        lines.push(Line::styled(row_text(row), style));
    }
}

/// An explanation's sparklines: each suspect agent beside its peers' median, on the
/// same scale (the threshold is a full bar), so the difference is seen at a glance.
pub fn explain_sparklines(r: &Reply, width: usize, lines: &mut Vec<Line<'static>>) {
    let Some(series) = r.details.as_ref().and_then(|d| d.get("series")).and_then(|s| s.as_array()) else { return };
    let parse = |s: &serde_json::Value| -> Option<(String, bool, f64, VecDeque<f64>)> {
        let values: VecDeque<f64> = s.get("values")?.as_array()?.iter().filter_map(|v| v.as_f64()).collect();
        Some((
            s.get("label")?.as_str()?.to_string(),
            s.get("suspect")?.as_bool()?,
            s.get("threshold")?.as_f64()?,
            values,
        ))
    };
    let all: Vec<(String, bool, f64, VecDeque<f64>)> = series.iter().filter_map(parse).collect();
    if all.is_empty() {
        return;
    }
    let metric = series.first().and_then(|s| s.get("metric")).and_then(|m| m.as_str()).unwrap_or("");
    // Two sparklines and two labels share the line: twice the fleet pane's samples
    // when the chat is wide enough, as many otherwise.
    let n = if width >= 100 { 2 * SPARK_SHOWN } else { SPARK_SHOWN };
    let peers = all.iter().find(|s| !s.1);
    lines.push(Line::raw(""));
    lines.push(Line::styled(format!("  {metric} (full bar = threshold)"), Style::new().add_modifier(Modifier::BOLD)));
    let label_w = all.iter().map(|s| s.0.chars().count()).max().unwrap_or(0).min(24);
    let row = |s: &(String, bool, f64, VecDeque<f64>)| -> Vec<Span<'static>> {
        let colour = if s.1 { Color::Red } else { Color::Green };
        vec![
            Span::raw(format!("{} ", pad(&s.0, label_w))),
            Span::styled(sparkline(&s.3, s.2, n), Style::new().fg(colour)),
        ]
    };
    let suspects: Vec<&(String, bool, f64, VecDeque<f64>)> = all.iter().filter(|s| s.1).collect();
    if suspects.is_empty() {
        for s in all.iter() {
            let mut spans = vec![Span::raw("  ")];
            spans.extend(row(s));
            lines.push(Line::from(spans));
        }
        return;
    }
    for s in suspects {
        let mut spans = vec![Span::raw("  ")];
        spans.extend(row(s));
        if let Some(p) = peers {
            spans.push(Span::raw("  vs  "));
            spans.extend(row(p));
        }
        lines.push(Line::from(spans));
    }
}

fn outcome_colour(status: &str) -> Color {
    match status {
        "succeeded" => Color::Green,
        "running" | "pending" => Color::Cyan,
        "paused" | "rolling_back" => Color::Yellow,
        _ => Color::Red,
    }
}

/// The order outcomes stack in a day's bar, and their key.
const OUTCOMES: [(&str, char); 8] = [
    ("succeeded", '█'),
    ("rolled_back", '▓'),
    ("failed", '▒'),
    ("aborted", '░'),
    ("running", '█'),
    ("pending", '█'),
    ("paused", '█'),
    ("rolling_back", '▓'),
];

/// A report's timeline as a bar chart: one bar per day, as long as that day's
/// rollouts, in segments by outcome (succeeded green, rolled back and failed red,
/// in progress cyan), with a key. False when the reply has no timeline.
fn timeline_chart_lines(details: Option<&serde_json::Value>, width: usize, lines: &mut Vec<Line<'static>>) -> bool {
    let Some(days) = details.and_then(|d| d.get("timeline")).and_then(|t| t.as_array()) else { return false };
    if days.is_empty() {
        return false;
    }
    let max = days.iter().filter_map(|d| d["total"].as_u64()).max().unwrap_or(0).max(1);
    // "  12-01 " then the bar then " 12".
    let bar_w = width.saturating_sub(14).clamp(1, 60) as u64;
    lines.push(Line::styled("  Rollouts per day by outcome", Style::new().add_modifier(Modifier::BOLD)));
    let mut seen: Vec<&str> = Vec::new();
    for day in days {
        let date = day["date"].as_str().unwrap_or("");
        let label = date.get(5..).unwrap_or(date).to_string();
        let total = day["total"].as_u64().unwrap_or(0);
        let mut spans = vec![Span::raw(format!("  {label} "))];
        let mut used = 0u64;
        for (status, glyph) in OUTCOMES {
            let n = day["by_status"].get(status).and_then(|v| v.as_u64()).unwrap_or(0);
            if n == 0 {
                continue;
            }
            if !seen.contains(&status) {
                seen.push(status);
            }
            // At least one cell per outcome that happened, so a single rollback shows.
            let cells = ((n * bar_w) as f64 / max as f64).round().max(1.0) as u64;
            used += cells;
            spans.push(Span::styled(glyph.to_string().repeat(cells as usize), Style::new().fg(outcome_colour(status))));
        }
        let _ = used;
        spans.push(Span::raw(if total > 0 { format!(" {total}") } else { String::new() }));
        lines.push(Line::from(spans));
    }
    let key: Vec<Span> = OUTCOMES
        .iter()
        .filter(|(s, _)| seen.contains(s))
        .flat_map(|(s, g)| {
            [Span::styled(format!("{g}"), Style::new().fg(outcome_colour(s))), Span::raw(format!(" {s}  "))]
        })
        .collect();
    if !key.is_empty() {
        let mut spans = vec![Span::raw("  ")];
        spans.extend(key);
        lines.push(Line::from(spans));
    }
    true
}

/// A report's counts as horizontal bars: reading proportions beats reading numbers.
fn bar_chart_lines(table: &Table, width: usize, lines: &mut Vec<Line<'static>>) {
    let values: Vec<(String, u64)> =
        table.rows.iter().filter_map(|r| Some((r.first()?.clone(), r.get(1)?.trim().parse::<u64>().ok()?))).collect();
    if values.len() != table.rows.len() {
        return table_lines(table, width, lines);
    }
    let label_w = values.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0).min(14);
    let max = values.iter().map(|(_, v)| *v).max().unwrap_or(0).max(1);
    let bar_w = width.saturating_sub(label_w + 12).clamp(1, 40);
    lines.push(Line::styled(format!("  {}", table.title), Style::new().add_modifier(Modifier::BOLD)));
    for (label, v) in values {
        let n = ((v as f64 / max as f64) * bar_w as f64).round() as usize;
        let colour = match label.as_str() {
            "succeeded" => Color::Green,
            "running" | "pending" => Color::Cyan,
            "paused" => Color::Yellow,
            _ => Color::Red,
        };
        lines.push(Line::from(vec![
            Span::raw(format!("  {} ", pad(&label, label_w))),
            Span::styled("█".repeat(n.max(usize::from(v > 0))), Style::new().fg(colour)),
            Span::raw(format!(" {v}")),
        ]));
    }
}

fn render_chat(frame: &mut Frame, app: &App, area: Rect) {
    let block = pane_block(" Chat ".to_string(), app.focus == Pane::Chat);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let lines = chat_lines(app, inner.width as usize);
    let height = inner.height as usize;
    let bottom = lines.len().saturating_sub(app.chat_scroll.min(lines.len().saturating_sub(height)));
    let top = bottom.saturating_sub(height);
    let shown: Vec<Line> = lines[top..bottom].to_vec();
    if shown.is_empty() {
        let hint = "Ask about the fleet or tell it what to do, e.g. \"how healthy is eu-west?\" or \
                    \"roll out auth-filter 2.1.0 to ap-south\". F1 or ? for keys.";
        let text: Vec<Line> = wrap(hint, inner.width as usize)
            .into_iter()
            .map(|l| Line::styled(l, Style::new().fg(Color::DarkGray)))
            .collect();
        frame.render_widget(Paragraph::new(text), inner);
    } else {
        frame.render_widget(Paragraph::new(shown), inner);
    }
}

fn render_input(frame: &mut Frame, app: &App, area: Rect) {
    let title = if app.waiting {
        " Ask · waiting for the fleet… ".to_string()
    } else if app.focus == Pane::Chat {
        " Ask · Enter send · Tab complete/follow-ups · ↑↓ history ".to_string()
    } else {
        " Ask · Esc/i to type here ".to_string()
    };
    let block = pane_block(cut(&title, area.width.saturating_sub(2) as usize), app.focus == Pane::Chat);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let width = inner.width.saturating_sub(2) as usize;
    // Scroll the line sideways so the cursor stays visible.
    let skip = app.input.cursor.saturating_sub(width.saturating_sub(1));
    let visible: String = app.input.text.chars().skip(skip).take(width).collect();
    frame.render_widget(Paragraph::new(format!("› {visible}")), inner);
    // Typing goes to the input line while a confirmation is up, so the cursor stays.
    if app.focus == Pane::Chat && !app.show_help {
        let x = inner.x + 2 + (app.input.cursor - skip) as u16;
        frame.set_cursor_position((x.min(inner.right().saturating_sub(1)), inner.y));
    }
}

/// The last `n` samples as bars, scaled to the threshold so a full bar means "at the gate".
pub fn sparkline(values: &VecDeque<f64>, full_scale: f64, n: usize) -> String {
    let skip = values.len().saturating_sub(n);
    let mut s: String = values
        .iter()
        .skip(skip)
        .map(|v| {
            let level = if full_scale > 0.0 { (v / full_scale * 7.0).round() } else { 0.0 };
            SPARK_BARS[level.clamp(0.0, 7.0) as usize]
        })
        .collect();
    let len = s.chars().count();
    s.push_str(&" ".repeat(n.saturating_sub(len)));
    s
}

fn counts_spans(c: &Counts) -> Vec<Span<'static>> {
    let mut out = Vec::new();
    for (n, status) in [
        (c.healthy, AgentStatus::Healthy),
        (c.degraded, AgentStatus::Degraded),
        (c.suspect, AgentStatus::Suspect),
        (c.down, AgentStatus::Down),
        (c.cordoned, AgentStatus::Cordoned),
        (c.flapping, AgentStatus::Flapping),
    ] {
        if n > 0 {
            out.push(Span::styled(format!("{n} {} ", status.as_str()), Style::new().fg(status_color(status))));
        }
    }
    out
}

fn fleet_row_line(app: &App, row: &FleetRow, selected: bool, width: usize) -> Line<'static> {
    match row {
        FleetRow::Region { name, health, counts } => {
            let empty = RegionSeries::default();
            let series = app.series.get(name).unwrap_or(&empty);
            let mut spans = vec![
                Span::styled(pad(name, 10), Style::new().add_modifier(Modifier::BOLD)),
                Span::styled(
                    pad(health.as_str(), 12),
                    Style::new().fg(region_color(*health)).add_modifier(Modifier::BOLD),
                ),
                Span::raw(format!("{:>4} ", counts.total())),
            ];
            let as_of = app.topology.as_of();
            if *health == RegionHealth::Partitioned {
                // No agent answers: there is nothing live to draw, and flat bars would
                // read as a calm region. Say how old what is known is instead.
                let age = app.topology.region_reported_at(name).map(|at| (as_of - at).to_std());
                let text = match age {
                    Some(age) => format!("no answer · metrics stale {}", age_words(age.unwrap_or_default())),
                    None => "no answer · never measured".to_string(),
                };
                spans.push(Span::styled(text, Style::new().fg(Color::Red)));
            } else if !app.topology.region_agents(name).any(|a| a.reading(as_of).traffic().is_some()) {
                // Drained (failed over): flat bars would read as a calm region serving traffic.
                spans.push(Span::styled("no traffic to measure", Style::new().fg(Color::DarkGray)));
            } else if width >= 52 {
                spans.push(Span::styled(
                    format!("err {}", sparkline(&series.error_rate_pct, app.thresholds.error_rate_pct, SPARK_SHOWN)),
                    Style::new().fg(Color::Red),
                ));
                spans.push(Span::styled(
                    format!(" p95 {}", sparkline(&series.p95_ms, app.thresholds.p95_ms, SPARK_SHOWN)),
                    Style::new().fg(Color::Yellow),
                ));
            }
            Line::from(spans)
        }
        FleetRow::Zone { name, counts } => {
            let mut spans = vec![Span::raw(format!("  {} ", pad(name, 12)))];
            spans.extend(counts_spans(counts));
            Line::from(spans)
        }
        FleetRow::Header => {
            let version = app.focus_extension.as_deref().map(|e| pad(e, VERSION_W)).unwrap_or_default();
            let text = format!(
                "  {} {} {} {version} {:>6} {:>7}",
                pad("NAME", 10),
                pad("REGION", 12),
                pad("HEALTH", 9),
                "ERR%",
                "P95 ms"
            );
            Line::styled(cut(&text, width), Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED))
        }
        FleetRow::Agent(i) => {
            let Some(a) = app.topology.agents().get(*i) else { return Line::raw("") };
            let status = AgentStatus::of(a);
            let target = app.target_state(&a.name);
            let marker = match target {
                None => "  ",
                Some(TargetState::Installed) => "✓ ",
                Some(TargetState::Installing) => "▶ ",
                Some(TargetState::Pending) => "· ",
                Some(_) => "✗ ",
            };
            let mut style = Style::new().fg(status_color(status));
            if target.is_some() {
                style = style.add_modifier(Modifier::BOLD).bg(Color::Rgb(20, 30, 60));
            }
            if selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            if app.sort != FleetSort::Grouped {
                let version = app
                    .focus_extension
                    .as_deref()
                    .map(|e| pad(a.extensions.get(e).map(String::as_str).unwrap_or("-"), VERSION_W))
                    .unwrap_or_default();
                let (err, p95) = match a.reading(app.topology.as_of()) {
                    Reading::Live(m) => (format!("{:.1}", m.error_rate_pct), format!("{:.0}", m.p95_ms)),
                    _ => ("-".to_string(), "-".to_string()),
                };
                let text = format!(
                    "{marker}{} {} {} {version} {err:>6} {p95:>7}",
                    pad(&a.name, 10),
                    pad(&a.region, 12),
                    pad(status.as_str(), 9)
                );
                return Line::styled(cut(&text, width), style);
            }
            let metrics = match a.reading(app.topology.as_of()) {
                Reading::Live(m) => format!("err {:>4.1}%  p95 {:>4.0} ms", m.error_rate_pct, m.p95_ms),
                Reading::NoTraffic { .. } => "no traffic".to_string(),
                Reading::Stale { age, .. } => format!("no answer · stale {}", age_words(age)),
                Reading::Never => "no answer · never measured".to_string(),
            };
            let version = match app.focus_extension.as_deref() {
                Some(e) => format!("{} ", pad(a.extensions.get(e).map(String::as_str).unwrap_or("-"), VERSION_W)),
                None => String::new(),
            };
            let text = format!("  {marker}{} {} {version}{metrics}", pad(&a.name, 10), pad(status.as_str(), 9));
            Line::styled(cut(&text, width), style)
        }
    }
}

/// The version column is this wide.
const VERSION_W: usize = 9;

fn render_fleet(frame: &mut Frame, app: &App, area: Rect) {
    let shown = app.agent_rows.len();
    let mut title = if app.editing_filter {
        format!(" Fleet · filter: {}▏ ", app.fleet_filter)
    } else if app.fleet_filter.is_empty() {
        " Fleet · / filter ".to_string()
    } else {
        format!(" Fleet · filter: {} ", app.fleet_filter)
    };
    title.push_str(&format!("· {shown} shown · s sort: {} ", app.sort.as_str()));
    if app.follow {
        if let Some(d) = app.active_deployment() {
            title.push_str(&format!("· following {} (f stops) ", d.name));
        }
    } else if app.active_deployment().is_some() {
        title.push_str("· f follow rollout ");
    }
    let title = cut(&title, area.width.saturating_sub(2) as usize);
    let block = pane_block(title, app.focus == Pane::Fleet);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let selected_row = app.selected_fleet_row();
    let agent = app.selected_agent.as_deref().and_then(|n| app.topology.agent(n));
    // The selected agent's details take the rows they need (a border and their lines),
    // the list every other row.
    let detail_lines = agent.map(|a| agent_detail_lines(app, a, inner.width as usize));
    let (list, detail) = match &detail_lines {
        Some(d) if inner.height >= 14 => {
            let [l, d] = Layout::vertical([Constraint::Min(4), Constraint::Length(d.len() as u16 + 1)]).areas(inner);
            (l, Some(d))
        }
        _ => (inner, None),
    };
    let height = list.height as usize;
    if app.fleet_rows.is_empty() {
        frame.render_widget(Paragraph::new("No agent matches the filter (c clears it)."), list);
    } else {
        // The sorted table's column header stays on top however far it scrolls.
        let header = app.fleet_rows.iter().position(|r| *r == FleetRow::Header);
        let (mut lines, height) = match header {
            Some(_) if height > 2 => {
                (vec![fleet_row_line(app, &FleetRow::Header, false, list.width as usize)], height - 1)
            }
            _ => (Vec::new(), height),
        };
        // Keep the selection in view, with context above it; only visible rows are built.
        let offset = match selected_row {
            Some(r) if r >= height / 2 => (r - height / 2).min(app.fleet_rows.len().saturating_sub(height)),
            _ => 0,
        };
        let focused = app.focus == Pane::Fleet;
        let pinned = !lines.is_empty();
        lines.extend(
            app.fleet_rows
                .iter()
                .enumerate()
                .filter(|(i, _)| !pinned || Some(*i) != header)
                .skip(offset)
                .take(height)
                .map(|(i, row)| fleet_row_line(app, row, focused && Some(i) == selected_row, list.width as usize)),
        );
        frame.render_widget(Paragraph::new(lines), list);
    }
    if let (Some(a), Some(d), Some(lines)) = (agent, detail, detail_lines) {
        let block = Block::new()
            .borders(Borders::TOP)
            .border_style(Style::new().fg(Color::DarkGray))
            .title(format!(" {} ", a.name));
        let inner = block.inner(d);
        frame.render_widget(block, d);
        frame.render_widget(Paragraph::new(lines), inner);
    }
}

/// The selected agent's details, `w` columns wide: where it is, how it is, what it
/// can do and what it runs.
fn agent_detail_lines(app: &App, a: &crate::topology::AgentView, w: usize) -> Vec<Line<'static>> {
    let status = AgentStatus::of(a);
    let mut lines = vec![
        Line::raw(cut(
            &format!("{} / {} · {} · tier {}", a.region, a.zone, a.env().unwrap_or("-"), a.tier().unwrap_or("-")),
            w,
        )),
        Line::from(vec![
            Span::styled(status.as_str(), Style::new().fg(status_color(status)).add_modifier(Modifier::BOLD)),
            Span::raw(cut(
                &format!(
                    " · {} · {}",
                    a.serving().describe(app.topology.as_of()),
                    match a.reading(app.topology.as_of()) {
                        Reading::Live(m) => format!(
                            "cpu {:.0}% mem {:.0}% err {:.2}% p95 {:.0} ms",
                            m.cpu_pct, m.mem_pct, m.error_rate_pct, m.p95_ms
                        ),
                        Reading::NoTraffic { cpu_pct, mem_pct } => {
                            format!("cpu {cpu_pct:.0}% mem {mem_pct:.0}% · no traffic")
                        }
                        // The age is that of the last report, told just before.
                        Reading::Stale { .. } => "no live metrics".to_string(),
                        Reading::Never => "never measured".to_string(),
                    }
                ),
                w.saturating_sub(status.as_str().len()),
            )),
        ]),
        Line::raw(cut(
            &format!(
                "capabilities: {}",
                if a.capabilities.is_empty() { "-".to_string() } else { a.capabilities.join(", ") }
            ),
            w,
        )),
    ];
    let exts: Vec<String> = a.extensions.iter().map(|(n, v)| format!("{n} {v}")).collect();
    for l in wrap(&format!("extensions: {}", exts.join(", ")), w) {
        lines.push(Line::raw(l));
    }
    lines
}

/// Per step: (agents installed, agents in the step).
pub fn step_progress(d: &DeploymentRecord) -> Vec<(usize, usize)> {
    let steps = (d.step_count as usize).max(d.targets.iter().map(|t| t.step as usize + 1).max().unwrap_or(0));
    let mut out = vec![(0usize, 0usize); steps];
    for t in &d.targets {
        if let Some(s) = out.get_mut(t.step as usize) {
            s.1 += 1;
            if t.state == TargetState::Installed {
                s.0 += 1;
            }
        }
    }
    out
}

fn gauge(done: usize, total: usize, width: usize) -> (String, String, u16) {
    let pct = (done * 100).checked_div(total).unwrap_or(0) as u16;
    let filled = (done * width).checked_div(total).unwrap_or(0).min(width);
    ("█".repeat(filled), "░".repeat(width - filled), pct)
}

fn compact_deployment(d: &DeploymentRecord, width: u16) -> Line<'static> {
    let done = d.targets.iter().filter(|t| t.state == TargetState::Installed).count();
    let (full, empty, pct) = gauge(done, d.targets.len(), 10);
    let head = format!(" {} {} {} ", d.name, d.extension, d.version);
    let spans = vec![
        Span::styled(head, Style::new().add_modifier(Modifier::BOLD)),
        Span::styled(pad(d.status.as_str(), 12), Style::new().fg(deployment_color(d.status))),
        Span::styled(full, Style::new().fg(deployment_color(d.status))),
        Span::styled(empty, Style::new().fg(Color::DarkGray)),
        Span::raw(format!(" {pct:>3}%  step {}/{}", (d.current_step + 1).min(d.step_count.max(1)), d.step_count)),
    ];
    let line = Line::from(spans);
    if line.width() > width as usize {
        Line::raw(cut(&line.to_string(), width as usize))
    } else {
        line
    }
}

/// The live gate values of a deployment: the worst error rate and p95 among the
/// agents it has installed on, against the gate's thresholds.
fn live_gate(app: &App, d: &DeploymentRecord) -> Option<(f64, f64)> {
    let mut worst: Option<(f64, f64)> = None;
    for t in d.targets.iter().filter(|t| t.state == TargetState::Installed) {
        if let Some(a) = app.topology.agent(&t.agent).filter(|a| a.liveness.is_reachable()) {
            let w = worst.get_or_insert((0.0, 0.0));
            w.0 = w.0.max(a.metrics.error_rate_pct);
            w.1 = w.1.max(a.metrics.p95_ms);
        }
    }
    worst
}

fn deployment_lines(app: &App, d: &DeploymentRecord, selected: bool, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let marker = if selected { "▸ " } else { "  " };
    let colour = deployment_color(d.status);
    lines.push(Line::from(vec![
        Span::raw(marker),
        Span::styled(format!("{} ", d.name), Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{} ",
            cut(&format!("{} {} → {}", d.extension, d.version, d.scope), width.saturating_sub(24))
        )),
        Span::styled(d.status.as_str().to_string(), Style::new().fg(colour).add_modifier(Modifier::BOLD)),
    ]));
    let bar_w = width.saturating_sub(28).clamp(4, 30);
    let current = d.current_step as usize;
    for (i, (done, total)) in step_progress(d).into_iter().enumerate() {
        let (full, empty, pct) = gauge(done, total, bar_w);
        let here = d.status.is_active() && i == current;
        lines.push(Line::from(vec![
            Span::raw(format!("  {}step {:<2} ", if here { "▸" } else { " " }, i + 1)),
            Span::styled(full, Style::new().fg(colour)),
            Span::styled(empty, Style::new().fg(Color::DarkGray)),
            Span::raw(format!(" {pct:>3}%  {done}/{total}")),
        ]));
    }
    let mut gate = vec![Span::raw("   gate ")];
    match app.gates.get(&d.name) {
        Some(g) if g.passed => {
            gate.push(Span::styled(format!("step {} passed", g.step), Style::new().fg(Color::Green)))
        }
        Some(g) => gate.push(Span::styled(
            cut(&format!("step {} FAILED {}", g.step, g.detail), width.saturating_sub(8)),
            Style::new().fg(Color::Red),
        )),
        None => gate.push(Span::styled("not evaluated yet", Style::new().fg(Color::DarkGray))),
    }
    lines.push(Line::from(gate));
    if let Some((err, p95)) = live_gate(app, d) {
        let t = app.thresholds;
        let style = |bad: bool| Style::new().fg(if bad { Color::Red } else { Color::Green });
        lines.push(Line::from(vec![
            Span::raw("   live "),
            Span::styled(format!("err {err:.1}%"), style(err > t.error_rate_pct)),
            Span::raw(format!(" (max {:.1})  ", t.error_rate_pct)),
            Span::styled(format!("p95 {p95:.0} ms"), style(p95 > t.p95_ms)),
            Span::raw(format!(" (max {:.0})", t.p95_ms)),
        ]));
    }
    if let Some(reason) = d.reason.as_deref().filter(|_| !d.status.is_active()) {
        lines.push(Line::styled(format!("   {}", cut(reason, width.saturating_sub(3))), Style::new().fg(Color::Gray)));
    }
    let keys: Vec<String> = deployment_actions(d).into_iter().map(|(key, a)| format!("[{key}] {a}")).collect();
    lines.push(Line::styled(cut(&format!("   next: {}", keys.join("  ")), width), Style::new().fg(Color::Cyan)));
    lines
}

/// Lines the deployments pane would show, all of it, at `width`.
fn deployments_height(app: &App, width: usize) -> usize {
    let ordered = app.ordered_deployments();
    if ordered.is_empty() {
        return 1;
    }
    ordered
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if d.status.is_active() || i == app.selected_deployment || i == 0 {
                deployment_lines(app, d, false, width).len()
            } else {
                1
            }
        })
        .sum()
}

fn render_deployments(frame: &mut Frame, app: &App, area: Rect) {
    let block = pane_block(" Deployments ".to_string(), app.focus == Pane::Deployments);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let ordered = app.ordered_deployments();
    if ordered.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled("No deployments yet.", Style::new().fg(Color::DarkGray))),
            inner,
        );
        return;
    }
    let width = inner.width as usize;
    let mut lines = Vec::new();
    let mut selected_at = 0;
    for (i, d) in ordered.iter().enumerate() {
        let selected = i == app.selected_deployment;
        if selected {
            selected_at = lines.len();
        }
        // Active, selected and the newest deployment get the full view; the rest a line.
        if d.status.is_active() || selected || i == 0 {
            lines.extend(deployment_lines(app, d, selected && app.focus == Pane::Deployments, width));
        } else {
            lines.push(compact_deployment(d, inner.width));
        }
    }
    let height = inner.height as usize;
    let offset = if selected_at + 4 > height { (selected_at + 4 - height).min(lines.len()) } else { 0 };
    let shown: Vec<Line> = lines.into_iter().skip(offset).take(height).collect();
    frame.render_widget(Paragraph::new(shown), inner);
}

fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let w = width.min(area.width);
    let h = height.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

/// The modal is at most this wide; a plan wraps inside it.
const CONFIRM_WIDTH: u16 = 72;
/// Rows of the modal besides the proposal: borders, a blank, the buttons, a hint.
const CONFIRM_CHROME: u16 = 5;

/// The proposal's lines in the modal: the message, then its table (a plan), whole,
/// wrapped rather than cut, so what is confirmed is what was read.
fn confirm_lines(c: &Confirm, width: usize) -> Vec<String> {
    let mut lines = wrap(&c.proposal.message, width);
    if let Some(table) = &c.proposal.table {
        lines.push(String::new());
        lines.extend(crate::ui::text::render_table(table, width).lines().map(str::to_string));
    }
    lines
}

/// The modal's place, its proposal lines and how many of them fit at once.
fn confirm_layout(c: &Confirm, area: Rect) -> (Rect, Vec<String>, usize) {
    // Between the title bar and the input box: what is typed stays in sight.
    let body = Rect { y: area.y + 1, height: area.height.saturating_sub(4), ..area };
    let width = body.width.saturating_sub(4).min(CONFIRM_WIDTH);
    let lines = confirm_lines(c, width.saturating_sub(4) as usize);
    let height = (lines.len() as u16).saturating_add(CONFIRM_CHROME).min(body.height);
    let shown = height.saturating_sub(CONFIRM_CHROME) as usize;
    (centred(body, width, height), lines, shown.max(1))
}

/// Keeps the modal's scroll within its proposal for a screen of `area`; the event
/// loop calls it before drawing, since keys scroll without knowing the screen.
pub fn fit_confirm_scroll(app: &mut App, area: Rect) {
    if let Some(c) = app.confirm.as_mut() {
        let (_, lines, shown) = confirm_layout(c, area);
        c.scroll = c.scroll.min(lines.len().saturating_sub(shown));
    }
}

fn render_confirm(frame: &mut Frame, app: &App, area: Rect) {
    let Some(c) = &app.confirm else { return };
    let (popup, text, shown) = confirm_layout(c, area);
    let top = c.scroll.min(text.len().saturating_sub(shown));
    let below = text.len().saturating_sub(top + shown);
    frame.render_widget(Clear, popup);
    let mut block = Block::new()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))
        .title(" Confirm ");
    if top > 0 || below > 0 {
        block = block.title_bottom(Line::from(format!(" ↑↓ {top} above, {below} below ")).right_aligned());
    }
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    let mut lines: Vec<Line> = text.into_iter().skip(top).take(shown).map(|l| Line::raw(format!(" {l}"))).collect();
    lines.push(Line::raw(""));
    let button = |label: &'static str, which: Button, colour: Color| {
        let mut style = Style::new().fg(colour).add_modifier(Modifier::BOLD);
        if c.focus == Some(which) {
            style = style.add_modifier(Modifier::REVERSED);
        }
        Span::styled(label, style)
    };
    lines.push(
        Line::from(vec![
            button("[y] yes", Button::Yes, Color::Green),
            Span::raw("    "),
            button("[n] no", Button::No, Color::Red),
        ])
        .centered(),
    );
    let hint = if app.waiting {
        "waiting for the answer to what you sent…"
    } else if !app.input.text.is_empty() {
        "Enter sends what you typed · Ctrl-U clears it · Esc cancels"
    } else {
        "y or n alone answers · ←→ then Enter · Esc cancels"
    };
    lines.push(Line::styled(hint, Style::new().fg(Color::DarkGray)).centered());
    frame.render_widget(Paragraph::new(lines), inner);
}

const HELP: &[(&str, &str)] = &[
    ("Enter", "send what you typed"),
    (
        "Tab",
        "complete a name, region, extension or version (a popup lists several); on an empty line, cycle follow-ups",
    ),
    ("1-9 Enter, Alt-1..9", "send that follow-up"),
    ("Up / Down", "history (kept between sessions)"),
    ("Ctrl-A/E/W/U", "start, end, delete word, clear line"),
    ("PgUp / PgDn", "scroll the chat"),
    ("F2 F3 F4, Shift-Tab", "chat, fleet, deployments pane"),
    ("F5", "push to talk: speak, then pause or F5 again"),
    ("Fleet: /", "filter: names, regions, states (down), extensions and versions (/rate-limiter 1.1)"),
    ("Fleet: s", "sort: grouped, health, name, region, version, error rate, latency"),
    ("Fleet: f", "follow the running rollout: its agents only, the selection on the one installing"),
    ("Fleet: j k c Enter", "move, clear filter, ask about the agent"),
    ("Deploys: j k p r o a b t", "move, pause, resume, promote, abort, roll back, retry"),
    ("y / n alone, ←→ Enter", "answer a confirmation; typing goes to input"),
    ("Esc", "leave a pane or dialog"),
    ("Ctrl-C, q, exit", "quit (q outside the chat)"),
];

/// The help's lines for a popup `width` wide: every key and example, wrapped, never cut.
fn help_lines(width: usize) -> Vec<Line<'static>> {
    // What Parley can do, one example each: the list the `help` reply shows too.
    let say: Vec<(&str, &str)> = crate::help::EXAMPLES.iter().map(|e| (e.topic, e.say)).collect();
    let key_w = HELP.iter().chain(&say).map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let text_w = width.saturating_sub(key_w + 3).max(10);
    let mut lines = Vec::new();
    let section = |title: &str, rows: &[(&str, &str)], lines: &mut Vec<Line<'static>>| {
        lines.push(Line::styled(format!(" {title}"), Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)));
        for (k, v) in rows {
            for (i, part) in wrap(v, text_w).into_iter().enumerate() {
                let key = if i == 0 { pad(k, key_w) } else { " ".repeat(key_w) };
                lines.push(Line::from(vec![
                    Span::styled(format!(" {key} "), Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)),
                    Span::raw(part),
                ]));
            }
        }
    };
    section("Keys", HELP, &mut lines);
    lines.push(Line::raw(""));
    section("Say, for example", &say, &mut lines);
    lines
}

/// How far the help can scroll on a screen of `area`.
fn help_layout(area: Rect, scroll: usize) -> (Rect, Vec<Line<'static>>, usize) {
    let width = area.width.saturating_sub(2).min(120);
    let lines = help_lines(width.saturating_sub(2) as usize);
    let height = (lines.len() as u16 + 2).min(area.height);
    let shown = height.saturating_sub(2) as usize;
    let top = scroll.min(lines.len().saturating_sub(shown));
    (centred(area, width, height), lines, top)
}

/// Keeps the help's scroll within its text for a screen of `area`, so that Up after
/// many Downs moves at once (the event loop calls it before drawing).
pub fn fit_help_scroll(app: &mut App, area: Rect) {
    let (_, _, top) = help_layout(area, app.help_scroll);
    app.help_scroll = top;
}

fn render_help(frame: &mut Frame, app: &App, area: Rect) {
    let (popup, lines, top) = help_layout(area, app.help_scroll);
    frame.render_widget(Clear, popup);
    let shown = popup.height.saturating_sub(2) as usize;
    let below = lines.len().saturating_sub(top + shown);
    let mut block =
        Block::new().borders(Borders::ALL).border_style(Style::new().fg(Color::Cyan)).title(" Help · any key closes ");
    if top > 0 || below > 0 {
        block = block.title_bottom(Line::from(format!(" ↑↓ scroll · {top} above, {below} below ")).right_aligned());
    }
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    frame.render_widget(Paragraph::new(lines.into_iter().skip(top).take(shown).collect::<Vec<_>>()), inner);
}

/// The Tab popup: candidates above the input line, as many columns as fit.
fn render_completions(frame: &mut Frame, app: &App, input: Rect) {
    if app.completions.is_empty() {
        return;
    }
    let cell = app.completions.iter().map(|c| c.chars().count()).max().unwrap_or(1) + 2;
    let width = input.width.saturating_sub(4).max(10);
    let per_row = ((width as usize - 2) / cell).max(1);
    let rows_needed = app.completions.len().div_ceil(per_row);
    let max_rows = input.y.saturating_sub(2).clamp(1, 10) as usize;
    let rows = rows_needed.min(max_rows);
    let mut lines: Vec<Line> = (0..rows)
        .map(|r| {
            let text: String = app.completions.iter().skip(r * per_row).take(per_row).map(|c| pad(c, cell)).collect();
            Line::raw(format!(" {}", text.trim_end()))
        })
        .collect();
    let hidden = app.completions.len().saturating_sub(rows * per_row);
    if hidden > 0 {
        if let Some(last) = lines.last_mut() {
            *last = Line::raw(format!("{last} … {hidden} more"));
        }
    }
    let title = format!(" {} matches · Tab ", app.completions.len());
    let used = lines.iter().map(|l| l.width()).max().unwrap_or(10).max(title.chars().count()) as u16 + 2;
    let h = rows as u16 + 2;
    let popup = Rect { x: input.x + 1, y: input.y.saturating_sub(h), width: used.max(12).min(width), height: h };
    frame.render_widget(Clear, popup);
    let block = Block::new().borders(Borders::ALL).border_style(Style::new().fg(Color::Cyan)).title(title);
    let inner = block.inner(popup);
    frame.render_widget(block, popup);
    frame.render_widget(Paragraph::new(lines), inner);
}
