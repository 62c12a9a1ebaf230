//! Screens rendered into ratatui's `TestBackend` from hand-built state, with exact
//! expectations on what an operator would read, and the keymap driven without a
//! terminal.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::input::{handle_key, Action};
use super::render::render;
use super::state::{App, Pane};
use crate::ops::{DeploymentStatus, Operation, Scope, Strategy, StrategyKind};
use crate::orchestrate::RolloutEvent;
use crate::registry::{DeploymentRecord, TargetRecord, TargetState};
use crate::reply::{Outcome, Reply, Table};
use crate::topology::demo::demo_topology;
use crate::topology::{HealthThresholds, Liveness, Topology};

fn app() -> App {
    App::new(Arc::new(demo_topology().unwrap()), HealthThresholds::default())
}

/// Every row of the screen as text, trailing blanks trimmed.
fn buffer_to_lines(app: &App, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| render(f, app)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    (0..height)
        .map(|y| {
            let row: String = (0..width).map(|x| buffer[(x, y)].symbol().to_string()).collect();
            row.trim_end().to_string()
        })
        .collect()
}

fn show(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn partitioned(region: &str) -> Topology {
    let t = demo_topology().unwrap();
    let mut agents = t.agents().to_vec();
    for a in agents.iter_mut().filter(|a| a.region == region) {
        a.liveness = Liveness::Down;
    }
    Topology::new(agents, t.catalog_arc(), None)
}

/// d-3: auth-filter 2.1.0 to eu-west as a canary 10% then 100%, mid-way through step 2.
fn canary_mid_way() -> DeploymentRecord {
    let agents = [
        "edge-13", "edge-14", "edge-15", "edge-16", "edge-17", "edge-18", "core-9", "core-10", "core-11", "core-12",
        "gpu-5", "gpu-6",
    ];
    let targets = agents
        .iter()
        .enumerate()
        .map(|(i, a)| TargetRecord {
            agent: a.to_string(),
            endpoint: String::new(),
            previous_version: Some("2.0.3".into()),
            step: u32::from(i > 0),
            state: match i {
                0..=4 => TargetState::Installed,
                5 => TargetState::Installing,
                _ => TargetState::Pending,
            },
            detail: None,
        })
        .collect();
    DeploymentRecord {
        id: 3,
        name: "d-3".into(),
        extension: "auth-filter".into(),
        version: "2.1.0".into(),
        scope: Scope::region("eu-west"),
        strategy: Strategy { kind: StrategyKind::Canary, steps: Some(vec![10, 100]), batch_size: None },
        status: DeploymentStatus::Running,
        reason: None,
        actor: "alice".into(),
        frontend: "tui".into(),
        utterance: "roll out auth-filter 2.1.0 to eu-west as a canary".into(),
        current_step: 1,
        step_count: 2,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        updated_at: DateTime::<Utc>::UNIX_EPOCH,
        finished_at: None,
        targets,
    }
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        handle_key(app, key(KeyCode::Char(c)));
    }
}

#[test]
fn print_screens() {
    let mut a = app();
    println!("{}", show(&buffer_to_lines(&a, 80, 24)));
    a.set_topology(Arc::new(partitioned("eu-west")));
    a.focus = Pane::Fleet;
    a.set_filter("eu-west");
    println!("{}", show(&buffer_to_lines(&a, 80, 24)));
    let mut a = app();
    a.set_deployments(vec![canary_mid_way()]);
    a.on_rollout_event(&RolloutEvent::GateEvaluated {
        id: "d-3".into(),
        step: 1,
        passed: true,
        breaches: vec![],
        unreachable: vec![],
    });
    println!("{}", show(&buffer_to_lines(&a, 120, 40)));
    let mut a = app();
    type_text(&mut a, "roll out auth-filter 2.1.0 to eu-west");
    let act = handle_key(&mut a, key(KeyCode::Enter));
    println!("{act:?}");
    let r = Reply::new(Outcome::NeedsConfirmation, "Roll out auth-filter 2.1.0 to 12 agents in eu-west (rolling). This needs confirmation because it changes production agents. Proceed? (yes/no)").with_follow_ups(["yes", "no"]);
    a.on_reply(r, true);
    println!("{}", show(&buffer_to_lines(&a, 80, 24)));
    let mut a = app();
    a.on_submit("how healthy is ap-south?");
    let mut t = Table::new("Health", &["Agent", "Zone", "Health", "State", "CPU %", "Mem %", "Err %", "p95 ms"]);
    t.push(vec![
        "edge-19".into(),
        "ap-south-a".into(),
        "healthy".into(),
        "active".into(),
        "33".into(),
        "37".into(),
        "0.26".into(),
        "86".into(),
    ]);
    t.push(vec![
        "edge-20".into(),
        "ap-south-a".into(),
        "down".into(),
        "active".into(),
        "-".into(),
        "-".into(),
        "-".into(),
        "-".into(),
    ]);
    a.on_reply(
        Reply::new(Outcome::Answered, "ap-south: 12 agents, 11 healthy, 1 down.")
            .with_table(t)
            .with_follow_ups(["run a health check on ap-south", "list deployments"]),
        false,
    );
    a.on_submit("report for the last 30d");
    let mut t = Table::new("Deployments by status", &["Status", "Count"]);
    t.push(vec!["succeeded".into(), "6".into()]);
    t.push(vec!["rolled_back".into(), "2".into()]);
    a.on_reply(
        Reply::new(Outcome::Answered, "8 deployments over the last 30d: success rate 75%.")
            .with_operation(Some(Operation::Report { since: None, until: None, scope: None }))
            .with_table(t),
        false,
    );
    println!("{}", show(&buffer_to_lines(&a, 80, 24)));
}
