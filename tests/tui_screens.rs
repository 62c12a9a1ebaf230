//! Every screen of the TUI at 80x24 and at 250x70, through tmux on the demo fleet: the
//! help overlay (scrolled on the small terminal, with its hint; whole on the big one),
//! the confirmation modal, the fleet pane and the deployments pane. Each screen is
//! checked for what an operator must be able to read on it, and that nothing runs
//! past the terminal's edge.

mod common;

use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;

fn start(name: &str, cols: u16, rows: u16) -> (tempfile::TempDir, Tmux) {
    assert!(
        Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()),
        "tmux is not installed: this end-to-end test drives the TUI through tmux (scripts/deps installs it)."
    );
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "PARLEY_IN_PROCESS=1 {bin} --data-dir {data} --bake-secs 0.05; sleep 60",
        bin = env!("CARGO_BIN_EXE_parley"),
        data = dir.path().display()
    );
    let tmux = Tmux::new(name);
    let (x, y) = (cols.to_string(), rows.to_string());
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        &x,
        "-y",
        &y,
        "env",
        "-u",
        "PARLEY_AGENT_TOKEN",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    // The header is drawn first and the input box last: a capture in between would be
    // a screen half drawn.
    tmux.wait_for("the TUI", Duration::from_secs(60), |s| {
        s.contains("48 agents, 4 regions") && s.lines().last().is_some_and(|l| l.starts_with('└'))
    });
    (dir, tmux)
}

fn within(screen: &str, cols: usize, rows: usize) {
    assert_eq!(screen.lines().count(), rows, "{screen}");
    assert!(screen.lines().all(|l| l.chars().count() <= cols), "a line runs past column {cols}:\n{screen}");
}

/// The help's last example, the bottom of its text.
const LAST_EXAMPLE: &str = "cancel";

#[test]
fn help_confirmation_fleet_and_deployments_at_80x24() {
    let (_dir, tmux) = start("parley-screens-small", 80, 24);

    // Help: taller than the screen, so it scrolls and says so on its border.
    tmux.send(&["?"]);
    let screen = tmux.wait_steady("the help", Duration::from_secs(10), |s| s.contains("┌ Help · any key closes"));
    within(&screen, 80, 24);
    assert!(screen.contains(" Keys"), "{screen}");
    assert!(screen.contains("↑↓ scroll · 0 above, "), "the scroll hint:\n{screen}");
    assert!(!screen.contains('…'), "the help cuts none of its text:\n{screen}");
    for _ in 0..12 {
        tmux.send(&["PageDown"]);
    }
    let screen = tmux.wait_steady("the end of the help", Duration::from_secs(10), |s| s.contains(" 0 below ┘"));
    within(&screen, 80, 24);
    let last =
        screen.lines().find(|l| l.contains(" cancel ") || l.trim_end_matches(['│', ' ', '┐']).ends_with(LAST_EXAMPLE));
    assert!(last.is_some(), "the last example is reached:\n{screen}");
    assert!(screen.contains("fail over eu-west to us-east") || screen.contains("why is eu-west degraded?"), "{screen}");
    // Up after scrolling past the end moves at once: the scroll stops at the end.
    tmux.send(&["Up"]);
    tmux.wait_for("one line up", Duration::from_secs(10), |s| s.contains(" 1 below ┘"));
    tmux.send(&["Escape"]);
    tmux.wait_for("the help to close", Duration::from_secs(10), |s| !s.contains("┌ Help"));

    // The confirmation modal: the proposal and its plan scroll inside it, the answer
    // buttons and their hint always in sight.
    tmux.send(&["-l", "roll out auth-filter 2.1.0 to ap-south"]);
    tmux.send(&["Enter"]);
    let screen = tmux.wait_steady("the modal", Duration::from_secs(20), |s| s.contains("┌ Confirm "));
    within(&screen, 80, 24);
    assert!(screen.contains("Roll out auth-filter 2.1.0 to 12 agents in ap-south"), "{screen}");
    assert!(screen.contains("[y] yes    [n] no"), "{screen}");
    assert!(screen.contains("y or n alone answers · ←→ then Enter · Esc cancels"), "{screen}");
    assert!(screen.contains("↑↓ 0 above, "), "the plan scrolls:\n{screen}");
    for _ in 0..40 {
        tmux.send(&["Down"]);
    }
    let screen = tmux.wait_steady("the plan's end", Duration::from_secs(10), |s| s.contains(", 0 below ┘"));
    assert!(screen.contains("   4    3: core-16,") && screen.contains("done"), "the last step of the plan:\n{screen}");
    tmux.send(&["y"]);
    tmux.wait_for("the rollout to end", Duration::from_secs(60), |s| {
        s.contains("succeeded") && !s.contains("┌ Confirm")
    });

    // The deployments pane, alone on the small screen.
    tmux.send(&["F4"]);
    let screen = tmux.wait_steady("the deployments pane", Duration::from_secs(30), |s| {
        s.contains("d-1 auth-filter 2.1.0 → ap-south succeeded") && s.contains("next: [b] roll back d-1")
    });
    within(&screen, 80, 24);
    let gauges = screen.lines().filter(|l| l.contains("step ") && l.contains("100%  3/3")).count();
    assert_eq!(gauges, 4, "four steps of three agents:\n{screen}");

    // The fleet pane: regions, zones and agents, and the selected agent's details.
    tmux.send(&["F3"]);
    let screen = tmux.wait_steady("the fleet pane", Duration::from_secs(10), |s| s.contains("┌ Fleet"));
    within(&screen, 80, 24);
    assert!(screen.contains("48 shown · s sort: grouped"), "{screen}");
    assert!(screen.lines().any(|l| l.contains("us-east") && l.contains("healthy") && l.contains("12")), "{screen}");
    assert!(screen.lines().any(|l| l.contains("edge-1 ") && l.contains("healthy")), "{screen}");
    assert!(screen.contains("│ edge-1 ──"), "the selected agent's details:\n{screen}");
    // The details take the rows they need; the list every other row, none left blank.
    let lines: Vec<&str> = screen.lines().collect();
    let top = lines.iter().position(|l| l.starts_with("┌ Fleet")).unwrap();
    let bottom = lines.iter().position(|l| l.starts_with("└")).unwrap();
    let blank = (top + 1..bottom).filter(|&i| lines[i].trim_matches(['│', ' ']).is_empty()).count();
    assert_eq!(blank, 0, "no empty rows in the fleet pane:\n{screen}");
    assert!(screen.contains("us-east / us-east-a · production · tier edge"), "{screen}");
    tmux.send(&["C-c"]);
}

#[test]
fn help_confirmation_fleet_and_deployments_at_250x70() {
    let (_dir, tmux) = start("parley-screens-big", 250, 70);

    // Wide: chat, fleet and deployments at once.
    let screen = tmux.capture();
    within(&screen, 250, 70);
    for pane in ["┌ Chat ", "┌ Fleet ", "┌ Deployments "] {
        assert!(screen.contains(pane), "{pane} is shown:\n{screen}");
    }
    // With nothing to show, the deployments pane is one line tall; the fleet takes the rest.
    let deploys = screen.lines().position(|l| l.contains("┌ Deployments")).unwrap();
    assert_eq!(deploys, 70 - 3 - 3, "{screen}");

    // The help fits whole: no scroll hint, its first and last lines both in sight.
    tmux.send(&["?"]);
    let screen = tmux.wait_steady("the help", Duration::from_secs(10), |s| s.contains("┌ Help · any key closes"));
    within(&screen, 250, 70);
    assert!(!screen.contains("↑↓ scroll"), "{screen}");
    assert!(screen.contains(" Keys") && screen.contains(" Say, for example"), "{screen}");
    assert!(screen.contains("roll out auth-filter 2.1 to eu-west gated on p99 latency under 300 ms"), "{screen}");
    assert!(screen.contains("show the audit log for today"), "{screen}");
    assert!(screen.lines().any(|l| l.contains(" cancel ") && l.contains("cancel")), "{screen}");
    assert!(!screen.contains('…'), "{screen}");
    tmux.send(&["Escape"]);
    tmux.wait_for("the help to close", Duration::from_secs(10), |s| !s.contains("┌ Help"));

    // The modal shows the whole plan without scrolling.
    tmux.send(&["-l", "roll out auth-filter 2.1.0 to ap-south"]);
    tmux.send(&["Enter"]);
    let screen = tmux.wait_steady("the modal", Duration::from_secs(20), |s| s.contains("┌ Confirm "));
    within(&screen, 250, 70);
    assert!(!screen.contains(" above, "), "no scrolling needed:\n{screen}");
    assert!(screen.contains("3 of 12 (25%)") && screen.contains("12 of 12 (100%)"), "{screen}");
    assert!(screen.contains("[y] yes    [n] no"), "{screen}");
    tmux.send(&["y"]);

    // The deployments pane grows to what it shows; the fleet pane keeps the rest.
    let screen = tmux.wait_steady("the rollout to end", Duration::from_secs(60), |s| {
        s.contains("d-1 auth-filter 2.1.0 → ap-south succeeded") && s.contains("next: [b] roll back d-1")
    });
    within(&screen, 250, 70);
    let lines: Vec<&str> = screen.lines().collect();
    let top = lines.iter().position(|l| l.contains("┌ Deployments")).unwrap();
    let bottom = (top + 1..lines.len()).find(|&i| lines[i].contains("└")).unwrap();
    let right = |l: &str| l.chars().skip(137).collect::<String>();
    let blank = (top + 1..bottom).filter(|&i| right(lines[i]).trim_matches(['│', ' ']).is_empty()).count();
    assert_eq!(blank, 0, "no empty rows in the deployments pane:\n{screen}");
    let gauges = lines.iter().filter(|l| l.contains("step ") && l.contains("100%  3/3")).count();
    assert_eq!(gauges, 4, "{screen}");
    // The fleet pane, grouped: every region, its zones and agents.
    for region in ["us-east", "us-west", "eu-west", "ap-south"] {
        assert!(lines.iter().any(|l| right(l).contains(&format!("│{region} "))), "{region}:\n{screen}");
    }
    tmux.send(&["C-c"]);
}
