//! Screens rendered into ratatui's `TestBackend` from hand-built state, with exact
//! expectations on what an operator would read, and the keymap driven without a
//! terminal.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use std::time::Instant;

use super::input::{handle_key, release_held, Action};
use super::render::render;
use super::state::{App, Button, Pane};
use crate::ops::{DeploymentStatus, Operation, Scope, Strategy, StrategyKind};
use crate::orchestrate::RolloutEvent;
use crate::registry::{DeploymentRecord, Hold, TargetRecord, TargetState};
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

fn partitioned(region: &str) -> Topology {
    let t = demo_topology().unwrap();
    let mut agents = t.agents().to_vec();
    for a in agents.iter_mut().filter(|a| a.region == region) {
        a.liveness = Liveness::Down;
    }
    // The demo's agents last reported at the epoch; this pass is 42 s later.
    Topology::new(agents, t.catalog_arc(), Some(DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(42)))
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
        strategy: Strategy { steps: Some(vec![10, 100]), batch_size: None, ..Strategy::of(StrategyKind::Canary) },
        status: DeploymentStatus::Running,
        hold: None,
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

/// The part of a row from column `from` on (columns, not bytes).
fn from_col(line: &str, from: usize) -> String {
    line.chars().skip(from).collect()
}

#[test]
fn a_flapping_agent_is_shown_flapping_in_the_fleet_pane_never_healthy() {
    let t = demo_topology().unwrap();
    let mut agents = t.agents().to_vec();
    for a in agents.iter_mut().filter(|a| a.name == "edge-14") {
        // The last poll caught it answering; it keeps dropping out all the same.
        a.flapping = Some(crate::topology::Flapping { changes: 30, window: std::time::Duration::from_secs(60) });
    }
    let mut a = app();
    a.set_topology(Arc::new(Topology::new(agents, t.catalog_arc(), None)));
    a.focus = Pane::Fleet;
    a.set_filter("eu-west-a");
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(lines[3], "│  eu-west-a    5 healthy 1 flapping                                           │");
    assert!(lines[5].starts_with("│    edge-14    flapping  "), "{}", lines[5]);
    // The filter knows the word, as it knows "down".
    a.set_filter("flapping");
    let lines = buffer_to_lines(&a, 80, 24);
    assert!(lines[4].starts_with("│    edge-14    flapping  "), "{}", lines[4]);
}

#[test]
fn a_partitioned_region_in_the_fleet_pane_at_80x24() {
    let mut a = app();
    a.set_topology(Arc::new(partitioned("eu-west")));
    a.sample_series();
    a.sample_series();
    a.focus = Pane::Fleet;
    a.set_filter("eu-west");
    let lines = buffer_to_lines(&a, 80, 24);
    // The header says the region is partitioned; the pane keys shrink to make room.
    assert_eq!(lines[0], " Parley  48 agents, 4 regions  eu-west PARTITIONED   F2  F3  F4  ? help");
    assert_eq!(lines[1], "┌ Fleet · filter: eu-west · 12 shown · s sort: grouped ────────────────────────┐");
    // Nothing answers: no sparklines that would look calm, and stale values said so.
    assert_eq!(lines[2], "│eu-west   partitioned   12 no answer · metrics stale 42 s                     │");
    assert_eq!(lines[3], "│  eu-west-a    6 down                                                         │");
    assert_eq!(lines[4], "│    edge-13    down      no answer · stale 42 s                               │");
    assert_eq!(lines[9], "│    gpu-5      down      no answer · stale 42 s                               │");
    assert_eq!(lines[10], "│  eu-west-b    6 down                                                         │");
    assert_eq!(lines[14], "│    core-11    down      no answer · stale 42 s                               │");
    // The details take the four lines they need; the list has the rest.
    assert_eq!(lines[15], "│ edge-13 ─────────────────────────────────────────────────────────────────────│");
    assert_eq!(lines[16], "│eu-west / eu-west-a · production · tier edge                                  │");
    // Its last report is history, not its state: the words `AgentView::serving` owns.
    assert_eq!(lines[17], "│down · serving state unknown (last reported active 42 s ago) · no live metrics│");
    assert_eq!(lines[19], "│extensions: auth-filter 2.0.3, log-shipper 1.4.2, rate-limiter 1.0.0          │");
    assert_eq!(lines[20], "└──────────────────────────────────────────────────────────────────────────────┘");
    assert_eq!(lines[22], "│›                                                                             │");

    // Colours carry the health: the region word and its down agents are red.
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
    terminal.draw(|f| render(f, &a)).unwrap();
    let buffer = terminal.backend().buffer();
    assert_eq!(buffer[(11, 2)].fg, ratatui::style::Color::Red);
    assert_eq!(buffer[(6, 4)].fg, ratatui::style::Color::Red);
    // The selected agent is highlighted.
    assert!(buffer[(6, 4)].modifier.contains(ratatui::style::Modifier::REVERSED));

    // Healthy regions are filtered out; clearing the filter brings them back, green.
    a.set_filter("");
    // The partitioned region comes first; the healthy ones follow in fleet order.
    let regions: Vec<&str> = a
        .fleet_rows
        .iter()
        .filter_map(|r| match r {
            super::state::FleetRow::Region { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(regions, ["eu-west", "us-east", "us-west", "ap-south"]);
    a.selected_agent = Some("edge-1".into());
    let lines = buffer_to_lines(&a, 80, 24);
    let us_east = lines.iter().position(|l| l.starts_with("│us-east ")).unwrap();
    assert_eq!(lines[us_east], "│us-east   healthy       12 err ▂▂       p95 ▃▃                                │");
    assert_eq!(lines[us_east + 1], "│  us-east-a    6 healthy                                                      │");
}

#[test]
fn a_drained_region_shows_no_traffic_rather_than_calm_metrics() {
    let t = demo_topology().unwrap();
    let mut agents = t.agents().to_vec();
    for a in agents.iter_mut().filter(|a| a.region == "eu-west") {
        a.state = crate::agent::protocol::ServingState::Drained;
        a.metrics.cpu_pct = 3.0;
    }
    let mut a = app();
    a.set_topology(Arc::new(Topology::new(agents, t.catalog_arc(), t.refreshed_at())));
    a.sample_series();
    a.focus = Pane::Fleet;
    a.set_filter("eu-west");
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(lines[2], "│eu-west   healthy       12 no traffic to measure                              │");
    assert_eq!(lines[4], "│    edge-13    cordoned  no traffic                                           │");
    assert_eq!(lines[17], "│cordoned · drained · cpu 3% mem 40% · no traffic                              │");
}

#[test]
fn the_fleet_filter_matches_status_capability_and_names() {
    let mut a = app();
    a.set_topology(Arc::new(partitioned("eu-west")));
    a.set_filter("gpu down");
    let names: Vec<String> = a
        .agent_rows
        .iter()
        .filter_map(|&r| match &a.fleet_rows[r] {
            super::state::FleetRow::Agent(i) => Some(a.topology.agents()[*i].name.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["gpu-5", "gpu-6"]);
    a.set_filter("nothing-like-this");
    let lines = buffer_to_lines(
        &{
            let mut b = a.clone();
            b.focus = Pane::Fleet;
            b
        },
        80,
        24,
    );
    assert_eq!(lines[2], "│No agent matches the filter (c clears it).                                    │");
}

#[test]
fn a_rollout_mid_canary_at_120x40() {
    let mut a = app();
    a.set_deployments(vec![canary_mid_way()]);
    a.on_rollout_event(&RolloutEvent::GateEvaluated {
        id: "d-3".into(),
        step: 1,
        passed: true,
        breaches: vec![],
        unreachable: vec![],
        outcome: crate::orchestrate::GateOutcome::Successful,
    });
    let lines = buffer_to_lines(&a, 120, 40);
    assert_eq!(
        lines[0],
        " Parley  48 agents, 4 regions, 1 rolling out  F2 Chat  F3 Fleet  F4 Deploys   ? help  ^C quit"
    );
    assert_eq!(from_col(&lines[2], 0), "│  » d-3: step 1 passed its health gate                          ││us-east   healthy       12 err          p95         │");
    // The deployments pane is as tall as what it shows; the fleet table gets the rest.
    let top = lines.iter().position(|l| l.contains("┌ Deployments")).unwrap();
    assert_eq!(top, 29, "{lines:#?}");
    assert!(lines[top + 7].contains("└──"), "the pane ends after its content: {lines:#?}");
    let pane: Vec<String> = lines[top..top + 7].iter().map(|l| from_col(l, 65)).collect();
    assert_eq!(
        pane,
        [
            "│┌ Deployments ───────────────────────────────────────┐",
            "││  d-3 auth-filter 2.1.0 → eu-west running           │",
            "││   step 1  ████████████████████████ 100%  1/1       │",
            "││  ▸step 2  ████████░░░░░░░░░░░░░░░░  36%  4/11      │",
            "││   gate step 1 passed                               │",
            "││   live err 0.1% (max 1.0)  p95 120 ms (max 500)    │",
            "││   next: [p] pause d-3  [a] abort d-3               │",
        ]
    );

    // The same rollout at 80x24 while chatting: a one-line strip above the input.
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(lines[20], " d-3 auth-filter 2.1.0 running     ████░░░░░░  41%  step 2/2");
}

#[test]
fn a_failed_gate_shows_its_breach() {
    let mut a = app();
    let mut d = canary_mid_way();
    d.status = DeploymentStatus::Paused;
    a.set_deployments(vec![d]);
    a.on_rollout_event(&RolloutEvent::GateEvaluated {
        id: "d-3".into(),
        step: 2,
        passed: false,
        breaches: vec![crate::orchestrate::GateBreach {
            agent: "edge-14".into(),
            metric: "error rate %".into(),
            value: 4.2,
            threshold: 1.0,
            baseline: Some(0.2),
            outcome: crate::orchestrate::GateOutcome::Failed,
        }],
        unreachable: vec![],
        outcome: crate::orchestrate::GateOutcome::Failed,
    });
    a.focus = Pane::Deployments;
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(lines[2], "│▸ d-3 auth-filter 2.1.0 → eu-west paused                                      │");
    assert_eq!(lines[5], "│   gate step 2 FAILED edge-14 error rate % 4.2>1                              │");
    // Paused mid-way: a rollback would be refused (abort returns the agents), so it
    // is not offered; the safe key comes first.
    assert_eq!(lines[7], "│   next: [a] abort d-3  [r] resume d-3                                        │");
    assert_eq!(handle_key(&mut a, key(KeyCode::Char('b'))), Action::None);
}

#[test]
fn a_rollout_waiting_for_approval_offers_promote_not_resume() {
    let mut a = app();
    let mut d = canary_mid_way();
    d.status = DeploymentStatus::Paused;
    d.hold = Some(Hold::Promote);
    d.reason = Some("waiting for promote: canary (step 1 of 2) passed its gate; promote starts step 2".into());
    a.set_deployments(vec![d]);
    a.focus = Pane::Deployments;
    let lines = buffer_to_lines(&a, 80, 24);
    let next = lines.iter().find(|l| l.contains("next:")).cloned().unwrap_or_default();
    assert_eq!(next, "│   next: [a] abort d-3  [o] promote d-3                                       │");
    // The resume key does nothing here: the orchestrator would refuse it.
    assert_eq!(handle_key(&mut a, key(KeyCode::Char('r'))), Action::None);
    assert_eq!(handle_key(&mut a, key(KeyCode::Char('o'))), Action::Submit("promote d-3".into()));
}

fn proposal() -> Reply {
    Reply::new(
        Outcome::NeedsConfirmation,
        "Roll out auth-filter 2.1.0 to 12 agents in eu-west (rolling). This needs confirmation because it changes production agents. Proceed? (yes/no)",
    )
    .with_follow_ups(["yes", "no"])
}

/// The app with the proposal's modal up, as the session left it.
fn modal_up() -> (App, Instant) {
    let mut a = app();
    type_text(&mut a, "roll out auth-filter 2.1.0 to eu-west");
    assert_eq!(handle_key(&mut a, key(KeyCode::Enter)), Action::Submit("roll out auth-filter 2.1.0 to eu-west".into()));
    let asked = Instant::now();
    a.on_reply(proposal(), Some(asked));
    (a, asked)
}

#[test]
fn a_pending_confirmation_is_a_modal_at_80x24() {
    let (mut a, _) = modal_up();
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(
        lines[7..15],
        [
            "│  [┌ Confirm ─────────────────────────────────────────────────────────────┐   │",
            "│   │ Roll out auth-filter 2.1.0 to 12 agents in eu-west (rolling). This   │   │",
            "│   │ needs confirmation because it changes production agents. Proceed?    │   │",
            "│   │ (yes/no)                                                             │   │",
            "│   │                                                                      │   │",
            "│   │                           [y] yes    [n] no                          │   │",
            "│   │          y or n alone answers · ←→ then Enter · Esc cancels          │   │",
            "│   └──────────────────────────────────────────────────────────────────────┘   │",
        ]
    );
    // A y alone is held until it is clear no word follows, then answers.
    assert_eq!(handle_key(&mut a, key(KeyCode::Char('y'))), Action::Hold);
    assert!(a.confirm.is_some());
    assert_eq!(release_held(&mut a), Action::Submit("yes".into()));
    assert!(a.confirm.is_none());
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(lines[5], "│                                                                              │");
    assert_eq!(lines[6], "│› yes                                                                         │");
    assert_eq!(lines[7], "│  …                                                                           │");
    assert_eq!(lines[21], "┌ Ask · waiting for the fleet… ────────────────────────────────────────────────┐");

    a.on_reply(Reply::new(Outcome::NeedsConfirmation, "Fail over eu-west to us-east? (yes/no)"), Some(Instant::now()));
    assert_eq!(handle_key(&mut a, key(KeyCode::Esc)), Action::Submit("no".into()));
    a.on_reply(Reply::new(Outcome::NeedsConfirmation, "Drain edge-7? (yes/no)"), Some(Instant::now()));
    assert_eq!(handle_key(&mut a, key(KeyCode::Char('n'))), Action::Hold);
    assert_eq!(release_held(&mut a), Action::Submit("no".into()));
}

#[test]
fn words_typed_over_the_modal_go_to_the_input_line_and_never_answer_it() {
    let (mut a, _) = modal_up();
    // The y of "deployments" and the n of "running" are letters, not answers.
    for word in ["show deployments", "running", "yesterday's rollouts", "no way", "N"] {
        for c in word.chars() {
            let action = handle_key(&mut a, key(KeyCode::Char(c)));
            assert!(matches!(action, Action::None | Action::Hold), "{c:?} of {word:?}: {action:?}");
        }
        if a.holding() {
            // "N" alone is held: the next key (Ctrl-U here) makes it text.
            assert_eq!(word, "N");
        }
        assert_eq!(handle_key(&mut a, KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)), Action::None);
        assert!(a.confirm.is_some(), "{word:?} closed the modal");
        assert_eq!(a.input.text, "");
    }
    type_text(&mut a, "show deployments");
    assert_eq!(a.input.text, "show deployments");
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(lines[13], "│   │      Enter sends what you typed · Ctrl-U clears it · Esc cancels     │   │");
    assert_eq!(lines[22], "│› show deployments                                                            │");
    // Enter sends it as a turn of its own; until the session answers, nothing answers
    // the modal, since the session may replace the question.
    assert_eq!(handle_key(&mut a, key(KeyCode::Enter)), Action::Submit("show deployments".into()));
    assert!(a.confirm.is_some() && a.waiting);
    assert_eq!(handle_key(&mut a, key(KeyCode::Char('y'))), Action::None);
    assert_eq!(handle_key(&mut a, key(KeyCode::Esc)), Action::None);
    assert_eq!(a.input.text, "y");
    // The session dropped the question for the new request: the modal goes.
    a.on_reply(Reply::new(Outcome::Answered, "(Dropped the unconfirmed request.) No deployments."), None);
    assert!(a.confirm.is_none());
}

#[test]
fn enter_presses_only_a_button_that_was_chosen() {
    let (mut a, _) = modal_up();
    assert_eq!(handle_key(&mut a, key(KeyCode::Enter)), Action::None, "no button has the focus yet");
    assert!(a.confirm.is_some());
    assert_eq!(handle_key(&mut a, key(KeyCode::Tab)), Action::None);
    assert_eq!(a.confirm.as_ref().and_then(|c| c.focus), Some(Button::No), "Tab starts on no");
    assert_eq!(handle_key(&mut a, key(KeyCode::Left)), Action::None);
    assert_eq!(a.confirm.as_ref().and_then(|c| c.focus), Some(Button::Yes));
    assert_eq!(handle_key(&mut a, key(KeyCode::Right)), Action::None);
    assert_eq!(handle_key(&mut a, key(KeyCode::Enter)), Action::Submit("no".into()));

    let (mut a, _) = modal_up();
    handle_key(&mut a, key(KeyCode::Left));
    assert_eq!(handle_key(&mut a, key(KeyCode::Enter)), Action::Submit("yes".into()));
}

#[test]
fn the_same_question_asked_again_keeps_the_proposal_in_the_modal() {
    let (mut a, asked) = modal_up();
    type_text(&mut a, "hmm");
    assert_eq!(handle_key(&mut a, key(KeyCode::Enter)), Action::Submit("hmm".into()));
    let again = Reply::new(Outcome::NeedsConfirmation, "I'm waiting for yes or no on: Roll out auth-filter 2.1.0.");
    a.on_reply(again, Some(asked));
    assert_eq!(a.confirm.as_ref().map(|c| &c.proposal.message), Some(&proposal().message));
    // A new question replaces it.
    a.on_reply(Reply::new(Outcome::NeedsConfirmation, "Drain edge-7? (yes/no)"), Some(Instant::now()));
    assert_eq!(a.confirm.as_ref().map(|c| c.proposal.message.as_str()), Some("Drain edge-7? (yes/no)"));
}

#[test]
fn a_long_plan_is_shown_whole_in_the_modal_and_scrolls() {
    let mut a = app();
    let mut plan = Table::new("Plan", &["Step"]);
    for i in 1..=20 {
        plan.push(vec![format!(
            "step {i}: 1 agent (edge-{i}); bake 2 s; gate: error rate < 1%, p95 < 500 ms, cpu < 80%, memory < 85%"
        )]);
    }
    a.on_reply(
        Reply::new(Outcome::NeedsConfirmation, "Roll out auth-filter 2.1.0 to 20 agents. Proceed? (yes/no)")
            .with_table(plan),
        Some(Instant::now()),
    );
    let area = ratatui::layout::Rect::new(0, 0, 80, 24);
    super::render::fit_confirm_scroll(&mut a, area);
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(lines[1], "┌ Ch┌ Confirm ─────────────────────────────────────────────────────────────┐───┐");
    assert_eq!(lines[2], "│  s│ Roll out auth-filter 2.1.0 to 20 agents. Proceed? (yes/no)           │c… │");
    assert_eq!(lines[7], "│  s│   step 1: 1 agent (edge-1); bake 2 s; gate: error rate < 1%, p95 <   │c… │");
    assert_eq!(lines[8], "│  s│     500 ms, cpu < 80%, memory < 85%                                  │c… │");
    assert_eq!(lines[18], "│  s│                           [y] yes    [n] no                          │,… │");
    assert_eq!(lines[20], "└───└──────────────────────────────────────────────── ↑↓ 0 above, 30 below ┘───┘");
    assert_eq!(
        lines[22], "│›                                                                             │",
        "the input line stays in sight"
    );
    // Scrolling past the end stops at the last step; nothing of it is cut.
    for _ in 0..10 {
        handle_key(&mut a, key(KeyCode::PageDown));
    }
    super::render::fit_confirm_scroll(&mut a, area);
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(lines[15], "│  s│   step 20: 1 agent (edge-20); bake 2 s; gate: error rate < 1%, p95 < │,… │");
    assert_eq!(lines[16], "│  s│     500 ms, cpu < 80%, memory < 85%                                  │,… │");
    assert_eq!(lines[20], "└───└──────────────────────────────────────────────── ↑↓ 30 above, 0 below ┘───┘");
}

#[test]
fn replies_render_tables_as_tables_and_reports_as_bars() {
    let mut a = app();
    a.on_submit("how healthy is ap-south?");
    let mut t = Table::new("Health", &["Agent", "Zone", "Health", "State", "CPU %", "Mem %", "Err %", "p95 ms"]);
    for row in [
        ["edge-19", "ap-south-a", "healthy", "active", "33", "37", "0.26", "86"],
        ["edge-20", "ap-south-a", "down", "active", "-", "-", "-", "-"],
    ] {
        t.push(row.iter().map(|c| c.to_string()).collect());
    }
    let health = Reply::new(Outcome::Answered, "ap-south: 12 agents, 11 healthy, 1 down.")
        .with_table(t)
        .with_follow_ups(["run a health check on ap-south", "list deployments"]);
    a.on_reply(health, None);
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(
        lines[2..11],
        [
            "│› how healthy is ap-south?                                                    │",
            "│  ap-south: 12 agents, 11 healthy, 1 down.                                    │",
            "│                                                                              │",
            "│  Health                                                                      │",
            "│  Agent    Zone        Health   State   CPU %  Mem %  Err %  p95 ms           │",
            "│  edge-19  ap-south-a  healthy  active  33     37     0.26   86               │",
            "│  edge-20  ap-south-a  down     active  -      -      -      -                │",
            "│                                                                              │",
            "│  [1] run a health check on ap-south                                          │",
        ]
    );

    a.on_submit("report for the last 30d");
    let mut t = Table::new("Deployments by status", &["Status", "Count"]);
    t.push(vec!["succeeded".into(), "6".into()]);
    t.push(vec!["rolled_back".into(), "2".into()]);
    let report = Reply::new(Outcome::Answered, "8 deployments over the last 30d: success rate 75%.")
        .with_operation(Some(Operation::Report { since: None, until: None, scope: None }))
        .with_table(t);
    a.on_reply(report, None);
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(
        lines[10..16],
        [
            "│› report for the last 30d                                                     │",
            "│  8 deployments over the last 30d: success rate 75%.                          │",
            "│                                                                              │",
            "│  Deployments by status                                                       │",
            "│  succeeded   ████████████████████████████████████████ 6                      │",
            "│  rolled_back █████████████ 2                                                 │",
        ]
    );
    // Follow-ups show only under the last reply.
    assert!(!lines.iter().any(|l| l.contains("[1] run a health check")));
}

#[test]
fn tiny_and_huge_terminals_do_not_panic() {
    let mut a = app();
    a.set_deployments(vec![canary_mid_way()]);
    a.show_help = true;
    for (w, h) in [(1, 1), (19, 5), (20, 6), (40, 10), (80, 24), (300, 100)] {
        let lines = buffer_to_lines(&a, w, h);
        assert_eq!(lines.len(), h as usize);
    }
    assert_eq!(buffer_to_lines(&a, 19, 5)[0], "Parley: terminal to");
}

#[test]
fn help_opens_with_question_mark_on_an_empty_line_and_any_key_closes_it() {
    let mut a = app();
    handle_key(&mut a, key(KeyCode::Char('?')));
    assert!(a.show_help);
    let lines = buffer_to_lines(&a, 80, 24);
    assert_eq!(lines[0], " ┌ Help · any key closes ─────────────────────────────────────────────────────┐");
    assert_eq!(lines[1], "┌│ Keys                                                                       │┐");
    assert_eq!(lines[2], "││ Enter                    send what you typed                               ││");
    // Longer text wraps under itself rather than being cut.
    assert_eq!(lines[3], "││ Tab                      complete a name, region, extension or version (a  ││");
    assert_eq!(lines[4], "││                          popup lists several); on an empty line, cycle     ││");
    assert!(lines[23].ends_with("↑↓ scroll · 0 above, 47 below ┘┘"), "{}", lines[23]);
    assert!(!lines.iter().any(|l| l.contains('…')), "nothing cut: {lines:#?}");
    // Down scrolls through the examples, one per thing Parley does: every one of them
    // is on some screen, whole, and the last screen says nothing is below.
    let mut seen = String::new();
    for _ in 0..60 {
        seen.push_str(&buffer_to_lines(&a, 80, 24).join("\n"));
        handle_key(&mut a, key(KeyCode::Down));
        super::render::fit_help_scroll(&mut a, ratatui::layout::Rect::new(0, 0, 80, 24));
    }
    assert!(a.show_help);
    for e in crate::help::EXAMPLES {
        // Wrapped under itself where it is long: its start on the topic's line.
        let start = &e.say[..e.say.len().min(25)];
        assert!(seen.lines().any(|l| l.contains(&format!(" {} ", e.topic)) && l.contains(start)), "{e:?}");
    }
    let text = buffer_to_lines(&a, 80, 24).join("\n");
    assert!(text.contains(" 47 above, 0 below "), "{text}");
    assert_eq!(a.help_scroll, 47, "the scroll stops at the end");
    // At 250x70 it all fits: no scrolling hint.
    let big = buffer_to_lines(&a, 250, 70).join("\n");
    assert!(big.contains("Say, for example") && big.contains("fail over eu-west") && !big.contains("↑↓ scroll"));
    handle_key(&mut a, key(KeyCode::Char('x')));
    assert!(!a.show_help);
    assert_eq!(a.input.text, "");
    // Inside a sentence, ? is just a character.
    type_text(&mut a, "how healthy is ap-south?");
    assert!(!a.show_help);
    assert_eq!(a.input.text, "how healthy is ap-south?");
}

#[test]
fn editing_history_completion_and_follow_ups() {
    let mut a = app();
    a.words = vec!["ap-south".into(), "auth-filter".into(), "edge-1".into(), "edge-10".into()];
    type_text(&mut a, "roll out au");
    handle_key(&mut a, key(KeyCode::Tab));
    assert_eq!(a.input.text, "roll out auth-filter ");
    type_text(&mut a, "2.1.0 to ap");
    handle_key(&mut a, key(KeyCode::Tab));
    assert_eq!(a.input.text, "roll out auth-filter 2.1.0 to ap-south ");
    handle_key(&mut a, KeyEvent::new(KeyCode::Char('w'), KeyModifiers::CONTROL));
    assert_eq!(a.input.text, "roll out auth-filter 2.1.0 to ");
    // Ambiguous: complete to the common prefix only.
    type_text(&mut a, "edge-");
    handle_key(&mut a, key(KeyCode::Tab));
    assert_eq!(a.input.text, "roll out auth-filter 2.1.0 to edge-1");
    handle_key(&mut a, KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    assert_eq!(a.input.text, "");

    type_text(&mut a, "how healthy is eu-west");
    handle_key(&mut a, key(KeyCode::Home));
    handle_key(&mut a, key(KeyCode::Delete));
    handle_key(&mut a, key(KeyCode::Char('H')));
    assert_eq!(a.input.text, "How healthy is eu-west");
    assert_eq!(handle_key(&mut a, key(KeyCode::Enter)), Action::Submit("How healthy is eu-west".into()));
    a.on_reply(Reply::new(Outcome::Answered, "ok").with_follow_ups(["show agent edge-1", "list deployments"]), None);

    // Tab on an empty line cycles the follow-ups; a bare number sends one.
    handle_key(&mut a, key(KeyCode::Tab));
    assert_eq!(a.input.text, "show agent edge-1");
    handle_key(&mut a, key(KeyCode::Tab));
    assert_eq!(a.input.text, "list deployments");
    handle_key(&mut a, KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    type_text(&mut a, "2");
    assert_eq!(handle_key(&mut a, key(KeyCode::Enter)), Action::Submit("list deployments".into()));
    a.on_reply(Reply::new(Outcome::Answered, "none").with_follow_ups(["report"]), None);
    assert_eq!(
        handle_key(&mut a, KeyEvent::new(KeyCode::Char('1'), KeyModifiers::ALT)),
        Action::Submit("report".into())
    );

    // History: what was typed, not what a number stood for; the draft comes back.
    type_text(&mut a, "draft");
    handle_key(&mut a, key(KeyCode::Up));
    assert_eq!(a.input.text, "2");
    handle_key(&mut a, key(KeyCode::Up));
    assert_eq!(a.input.text, "How healthy is eu-west");
    handle_key(&mut a, key(KeyCode::Down));
    handle_key(&mut a, key(KeyCode::Down));
    assert_eq!(a.input.text, "draft");

    assert_eq!(handle_key(&mut a, KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
}

#[test]
fn fleet_and_deployment_keys() {
    let mut a = app();
    handle_key(&mut a, key(KeyCode::F(3)));
    assert_eq!(a.focus, Pane::Fleet);
    assert_eq!(a.selected_agent.as_deref(), Some("edge-1"));
    handle_key(&mut a, key(KeyCode::Down));
    handle_key(&mut a, key(KeyCode::Char('j')));
    assert_eq!(a.selected_agent.as_deref(), Some("edge-3"));
    handle_key(&mut a, key(KeyCode::Char('/')));
    type_text(&mut a, "gpu");
    handle_key(&mut a, key(KeyCode::Enter));
    assert_eq!(a.fleet_filter, "gpu");
    assert_eq!(a.selected_agent.as_deref(), Some("gpu-1"));
    handle_key(&mut a, key(KeyCode::End));
    assert_eq!(a.selected_agent.as_deref(), Some("gpu-8"));
    assert_eq!(handle_key(&mut a, key(KeyCode::Enter)), Action::Submit("show agent gpu-8".into()));
    assert_eq!(a.focus, Pane::Chat);

    a.set_deployments(vec![canary_mid_way()]);
    handle_key(&mut a, key(KeyCode::F(4)));
    assert_eq!(handle_key(&mut a, key(KeyCode::Char('r'))), Action::None, "a running rollout cannot be resumed");
    assert_eq!(handle_key(&mut a, key(KeyCode::Char('p'))), Action::Submit("pause d-3".into()));
    handle_key(&mut a, key(KeyCode::F(4)));
    assert_eq!(handle_key(&mut a, key(KeyCode::Char('q'))), Action::Quit);
}

#[test]
fn sparklines_scale_to_the_gate_threshold() {
    let values: std::collections::VecDeque<f64> = [0.0, 0.5, 1.0, 3.0].into_iter().collect();
    assert_eq!(super::render::sparkline(&values, 1.0, 6), "▁▅██  ");
    assert_eq!(super::render::sparkline(&values, 1.0, 2), "██");
}

#[test]
fn push_to_talk_shows_its_state_and_sends_only_what_whisper_was_sure_of() {
    use super::state::Talk;
    use crate::voice::ptt::TalkEvent;
    let mut a = app();
    assert_eq!(handle_key(&mut a, key(KeyCode::F(5))), Action::Talk);
    a.talk = Talk::Listening;
    assert!(buffer_to_lines(&a, 120, 30)[0].contains(" listening… "), "{:?}", buffer_to_lines(&a, 120, 30)[0]);
    assert_eq!(a.on_talk(TalkEvent::Transcribing), None);
    assert_eq!(a.talk, Talk::Transcribing);
    assert!(buffer_to_lines(&a, 120, 30)[0].contains(" transcribing… "));
    // A sure transcript is a turn, shown as the operator's line and waiting for the reply.
    let sent = a.on_talk(TalkEvent::Heard { text: "how healthy is ap-south".into(), sure: true });
    assert_eq!(sent.as_deref(), Some("how healthy is ap-south"));
    assert_eq!(a.talk, Talk::Idle);
    assert!(a.waiting);
    assert!(!buffer_to_lines(&a, 120, 30)[0].contains("listening"));
    // An unsure one waits in the input line for Enter.
    assert_eq!(a.on_talk(TalkEvent::Heard { text: "drain edge-7".into(), sure: false }), None);
    assert_eq!(a.input.text, "drain edge-7");
    assert_eq!(a.on_talk(TalkEvent::Failed("no usable microphone".into())), None);
    assert_eq!(a.talk, Talk::Idle);
}

/// A client TUI that quits says, on the normal screen, what goes on in the server
/// without it: running and paused rollouts, each with where it is; finished ones not.
#[test]
fn quitting_a_client_tui_tells_which_rollouts_keep_running_in_the_server() {
    let running = canary_mid_way();
    let mut paused = canary_mid_way();
    paused.id = 4;
    paused.name = "d-4".into();
    paused.scope = Scope::region("ap-south");
    paused.status = DeploymentStatus::Paused;
    paused.current_step = 0;
    let mut done = canary_mid_way();
    done.name = "d-2".into();
    done.status = DeploymentStatus::Succeeded;
    let server = "unix:/tmp/p/parley.sock";
    assert_eq!(
        super::source::keeps_running(&[running, paused, done.clone()], server).as_deref(),
        Some(
            "d-3 (auth-filter 2.1.0 → eu-west, step 2 of 2) keeps running in the Parley server at unix:/tmp/p/parley.sock; \
             run `parley` again to follow it, or `parley ask \"show d-3\"`.\n\
             d-4 (auth-filter 2.1.0 → ap-south, paused at step 1 of 2) stays paused in the Parley server at \
             unix:/tmp/p/parley.sock; run `parley` again to follow it, or `parley ask \"show d-4\"`."
        )
    );
    assert_eq!(super::source::keeps_running(&[done], server), None);
}
