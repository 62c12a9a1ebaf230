//! The real TUI in tmux: the deployments pane offers only the keys the lifecycle
//! admits. A blue-green rollout waiting for its switch offers promote, not resume;
//! the resume key does nothing there, and the promote key promotes.
//!
//! tmux is required (`.ci/run` installs it); without it this test fails rather than skips.

mod common;

use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;

#[test]
fn a_rollout_waiting_for_approval_offers_promote_in_the_pane_and_resume_does_nothing() {
    assert!(
        Command::new("tmux").arg("-V").output().map(|o| o.status.success()).unwrap_or(false),
        "tmux is not installed: this test drives the TUI through tmux (apt-get install tmux)."
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_parley");
    let script = format!("PARLEY_IN_PROCESS=1 {bin} --data-dir {} --bake-secs 0.05; sleep 60", dir.path().display());
    let tmux = Tmux::new("parley-lifecycle");
    let out = tmux.cmd(&["new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", "sh", "-c", &script]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    tmux.wait_for("the TUI", Duration::from_secs(60), |s| s.contains("48 agents, 4 regions"));

    tmux.send(&["roll out auth-filter 2.1.0 to ap-south as blue-green", "Enter"]);
    tmux.wait_for("the confirmation modal", Duration::from_secs(20), |s| s.contains("┌ Confirm "));
    tmux.send(&["y"]);
    let screen = tmux.wait_for("green to wait for its switch", Duration::from_secs(30), |s| {
        s.contains("next: [a] abort d-1  [o] promote d-1")
    });
    assert!(!screen.contains("[r] resume d-1"), "{screen}");

    // In the deployments pane: r is not offered, so it sends nothing.
    tmux.send(&["F4"]);
    tmux.send(&["r"]);
    std::thread::sleep(Duration::from_millis(500));
    let screen = tmux.capture();
    assert!(!screen.contains("resume d-1"), "{screen}");
    assert!(!screen.contains("is waiting for approval, not paused"), "{screen}");

    tmux.send(&["o"]);
    let screen = tmux.wait_for("the switch, waiting to retire blue", Duration::from_secs(30), |s| {
        // The pane cuts the line at its width.
        s.contains("next: [b] roll back d-1  [a] abort d-1  [o] prom")
    });
    assert!(screen.contains("› promote d-1"), "{screen}");
    tmux.send(&["C-c"]);
}
