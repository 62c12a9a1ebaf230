//! Push-to-talk in the real TUI, in tmux: F5 records from "the microphone" (here
//! `PARLEY_MIC_WAV`, an espeak-ng recording standing in for the device) until the
//! pause after the command, real Whisper (tiny.en) transcribes it, and the transcript
//! is a turn of the session like a typed one.
//!
//! Needs tmux, espeak-ng and the tiny.en model in `$PARLEY_MODEL_CACHE` (scripts/test
//! provisions it before the tests); a missing one fails the test with the reason.
#![cfg(feature = "whisper")]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;

fn model() -> PathBuf {
    let cache = std::env::var_os("PARLEY_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/parley-models"));
    let path = cache.join("models/ggml-tiny.en.bin");
    assert!(path.is_file(), "{} is missing: scripts/test installs it (parley voice model install)", path.display());
    path
}

#[test]
fn f5_records_until_the_pause_and_the_transcript_is_a_turn() {
    for tool in ["tmux", "espeak-ng"] {
        let found = Command::new(tool).arg(if tool == "tmux" { "-V" } else { "--version" }).output().is_ok();
        assert!(found, "{tool} is not installed (.ci/run installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    // The TUI uses the tiny.en model of its data directory.
    std::fs::create_dir_all(dir.path().join("models")).unwrap();
    std::os::unix::fs::symlink(model(), dir.path().join("models/ggml-tiny.en.bin")).unwrap();
    let wav = dir.path().join("mic.wav");
    let out = Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .args(["-s", "150", "-v", "en-us", "how healthy is the fleet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "espeak-ng: {}", String::from_utf8_lossy(&out.stderr));

    let script = format!(
        "PARLEY_IN_PROCESS=1 PARLEY_MIC_WAV={wav} {bin} --data-dir {data}; sleep 60",
        wav = wav.display(),
        bin = env!("CARGO_BIN_EXE_parley"),
        data = dir.path().display()
    );
    let tmux = Tmux::new("parley-ptt");
    let out = tmux.cmd(&["new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", "sh", "-c", &script]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    tmux.wait_for("the TUI", Duration::from_secs(60), |s| s.contains("48 agents, 4 regions"));

    tmux.send(&["F5"]);
    // The recording ends at the pause by itself; Whisper's answer is sent as a turn.
    let screen = tmux.wait_for("the spoken question's answer", Duration::from_secs(90), |s| {
        s.contains("the whole fleet: 48 agents, 48 healthy")
    });
    assert!(screen.contains("› how healthy is the fleet"), "the transcript is the operator's turn:\n{screen}");
    assert!(!screen.contains("listening…") && !screen.contains("transcribing…"), "{screen}");
    tmux.send(&["C-c"]);
}

/// Without a microphone (CI, this container) F5 says so in the chat, and whatever the
/// audio library printed to the terminal is painted over.
#[test]
fn f5_without_a_microphone_says_so_and_leaves_the_screen_clean() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "PARLEY_IN_PROCESS=1 env -u PARLEY_MIC_WAV {bin} --data-dir {data}; sleep 60",
        bin = env!("CARGO_BIN_EXE_parley"),
        data = dir.path().display()
    );
    let tmux = Tmux::new("parley-nomic");
    let out = tmux.cmd(&["new-session", "-d", "-s", "tui", "-x", "120", "-y", "40", "sh", "-c", &script]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    tmux.wait_for("the TUI", Duration::from_secs(60), |s| s.contains("48 agents, 4 regions"));
    tmux.send(&["F5"]);
    tmux.wait_for("the notice on a clean screen", Duration::from_secs(20), |s| {
        s.contains("» Push-to-talk: no usable microphone:") && !s.contains("ALSA lib") && !s.contains("listening…")
    });
    tmux.send(&["C-c"]);
}
