//! The real binary in tmux: ask a health question, deploy, confirm in the modal,
//! watch the gauge reach 100%, quit, and check the terminal came back.
//!
//! tmux is required: CI installs it (`.ci/run`). Without it this test fails rather
//! than skips, so a missing tool cannot pass for a working UI.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::tmux::Tmux;

fn tmux_available() -> bool {
    Command::new("tmux").arg("-V").output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn health_deploy_confirm_and_watch_the_gauge_in_tmux() {
    assert!(
        tmux_available(),
        "tmux is not installed: this end-to-end test drives the TUI through tmux. \
         Install it (apt-get install tmux; .ci/run does) and run again."
    );
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_parley");
    let done_marker = dir.path().join("exited");
    // A shell around parley keeps the pane alive after it exits, so the test can read
    // the exit status and the terminal modes parley left behind.
    let script = format!(
        "PARLEY_IDLE_STOP_SECS=3 {bin} --data-dir {data} --bake-secs 0.05; echo \"parley exited rc=$?\"; \
         stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '; echo; \
         touch {marker}; sleep 60",
        data = dir.path().display(),
        marker = done_marker.display(),
    );
    let tmux = Tmux::new("parley-e2e");
    let out = tmux.cmd(&["new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", "sh", "-c", &script]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));

    let startup = Duration::from_secs(60);
    tmux.wait_for("the TUI", startup, |s| s.contains("48 agents, 4 regions") && s.contains("Fleet"));

    tmux.send(&["how healthy is ap-south?", "Enter"]);
    let screen = tmux.wait_for("the health answer", Duration::from_secs(20), |s| s.contains("ap-south: 12 agents"));
    assert!(screen.contains("│› how healthy is ap-south?"), "{screen}");
    assert!(
        screen.lines().any(|l| l.contains("Agent") && l.contains("Zone") && l.contains("p95 ms")),
        "the health table has a header:\n{screen}"
    );
    assert!(screen.lines().any(|l| l.contains("gpu-8") && l.contains("ap-south-b")), "and rows:\n{screen}");

    tmux.send(&["roll out auth-filter 2.1.0 to ap-south", "Enter"]);
    let screen = tmux.wait_for("the confirmation modal", Duration::from_secs(20), |s| s.contains("┌ Confirm "));
    assert!(screen.contains("[y] yes    [n] no"), "{screen}");

    tmux.send(&["y"]);
    let screen = tmux.wait_for("the rollout to finish", Duration::from_secs(60), |s| {
        s.contains("d-1 auth-filter 2.1.0 → ap-south succeeded") && s.contains("next: [b] roll back d-1")
    });
    assert!(!screen.contains("┌ Confirm "), "the modal closed:\n{screen}");
    let gauges = screen.lines().filter(|l| l.contains("step ") && l.contains("100%  3/3")).count();
    assert_eq!(gauges, 4, "four steps of three agents, each at 100%:\n{screen}");
    assert!(screen.contains("Started d-1"), "{screen}");

    tmux.send(&["C-c"]);
    let start = Instant::now();
    while !done_marker.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "parley did not exit; screen:\n{}", tmux.capture());
        std::thread::sleep(Duration::from_millis(100));
    }
    let screen = tmux.wait_for("the exit status", Duration::from_secs(5), |s| s.contains("icanon"));
    assert!(screen.contains("parley exited rc=0"), "{screen}");
    assert!(screen.contains("icanon echo") || screen.contains("echo icanon"), "terminal modes restored:\n{screen}");
    assert!(!screen.contains("Deployments"), "the alternate screen is gone:\n{screen}");

    let history = std::fs::read_to_string(dir.path().join("tui-history.txt")).unwrap();
    assert_eq!(history, "how healthy is ap-south?\nroll out auth-filter 2.1.0 to ap-south\n");
    assert!(!Path::new(&dir.path().join("logs/parley.log")).metadata().map(|m| m.len() == 0).unwrap_or(true));
}

/// Typing over an open confirmation: the y of "show deployments" once started a
/// 12-agent production rollout and the n of "running" cancelled one. Letters go to
/// the input line; only a lone key, a chosen button or Esc answers.
#[test]
fn words_typed_over_a_confirmation_never_answer_it_in_tmux() {
    assert!(tmux_available(), "tmux is not installed: this end-to-end test drives the TUI through tmux.");
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_parley");
    let done_marker = dir.path().join("exited");
    let script = format!(
        "PARLEY_IDLE_STOP_SECS=3 {bin} --data-dir {data} --bake-secs 0.05; echo \"parley exited rc=$?\"; touch {marker}; sleep 60",
        data = dir.path().display(),
        marker = done_marker.display(),
    );
    let tmux = Tmux::new("parley-typing");
    let out = tmux.cmd(&["new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", "sh", "-c", &script]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    tmux.wait_for("the TUI", Duration::from_secs(60), |s| s.contains("48 agents, 4 regions") && s.contains("Fleet"));

    tmux.send(&["roll out auth-filter 2.1.0 to us-east", "Enter"]);
    tmux.wait_for("the confirmation modal", Duration::from_secs(20), |s| {
        s.contains("┌ Confirm ") && s.contains("12 agents in us-east")
    });
    // Well past the wait that tells a lone key from the letters of a word.
    let settle = Duration::from_millis(1500);

    tmux.send(&["show deployments"]);
    tmux.wait_for("the words in the input line", Duration::from_secs(10), |s| s.contains("│› show deployments"));
    std::thread::sleep(settle);
    let screen = tmux.capture();
    assert!(screen.contains("┌ Confirm "), "the modal is still open:\n{screen}");
    assert!(!screen.contains("d-1") && !screen.contains("rolling out"), "nothing started:\n{screen}");

    tmux.send(&["C-u"]);
    tmux.send(&["running"]);
    tmux.wait_for("the word in the input line", Duration::from_secs(10), |s| s.contains("│› running"));
    std::thread::sleep(settle);
    let screen = tmux.capture();
    assert!(screen.contains("┌ Confirm "), "the n of \"running\" did not cancel:\n{screen}");
    assert!(!screen.contains("Cancelled"), "{screen}");

    // Sent with Enter, the words are a request of their own: the session drops the
    // unconfirmed rollout for it, and says so.
    tmux.send(&["C-u"]);
    tmux.send(&["show deployments", "Enter"]);
    let screen = tmux.wait_for("the list", Duration::from_secs(20), |s| {
        s.contains("Dropped the unconfirmed") && !s.contains("┌ Confirm ")
    });
    assert!(screen.contains("No deployments yet."), "{screen}");

    // A lone n is still an answer.
    tmux.send(&["roll out auth-filter 2.1.0 to us-east", "Enter"]);
    tmux.wait_for("the modal again", Duration::from_secs(20), |s| s.contains("┌ Confirm "));
    tmux.send(&["n"]);
    let screen = tmux.wait_for("the cancellation", Duration::from_secs(20), |s| {
        s.contains("Cancelled: Roll out auth-filter 2.1.0") && !s.contains("┌ Confirm ")
    });
    assert!(screen.contains("No deployments yet."), "{screen}");

    tmux.send(&["C-c"]);
    let start = Instant::now();
    while !done_marker.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "parley did not exit; screen:\n{}", tmux.capture());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The registry, read by a new process, has no deployment.
    let out = common::parley(dir.path()).args(["ask", "--json", "list deployments"]).output().unwrap();
    let turn: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(turn["message"], "No deployments.", "{turn}");
}
