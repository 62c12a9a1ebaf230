//! Shell conventions: completions, the manual page, `--json` on the commands that
//! print data, a bare utterance asked as `ask` does, and `parley audit`.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{parley, parley_bin};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = common::in_process(&mut Command::new(parley_bin())).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_are_valid_scripts_for_each_shell() {
    let (code, bash, err) = run(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(bash.contains("_parley()"), "{bash}");
    assert!(bash.contains("complete -F _parley"), "{bash}");
    // Every subcommand completes, the new ones too.
    for sub in ["ask", "fleet", "audit", "completions", "man", "voice"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    // bash itself parses the script (bash is what runs this test suite's scripts).
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("parley.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    let (code, zsh, _) = run(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef parley"), "{zsh}");
    let (code, fish, _) = run(&["completions", "fish"]);
    assert_eq!(code, 0);
    assert!(fish.contains("complete -c parley"), "{fish}");
    assert!(fish.contains("-l since"), "the audit flag completes in fish: {fish}");

    let (code, _, err) = run(&["completions", "tcsh-9000"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid value 'tcsh-9000'"), "{err}");
}

#[test]
fn the_manual_page_renders_as_roff_with_every_subcommand() {
    let (code, man, err) = run(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(man.starts_with(".ie \\n(.g .ds Aq"), "{}", &man[..man.len().min(200)]);
    assert!(man.contains(".TH parley 1"), "{man}");
    assert!(man.contains("conversational operations assistant"), "{man}");
    for sub in ["parley\\-ask", "parley\\-audit", "parley\\-completions", "parley\\-fleet"] {
        assert!(man.contains(sub), "the manual lacks {sub}");
    }
    // man itself formats it when it is installed (CI installs man-db with the other tools).
    if Command::new("man").arg("--version").output().is_ok_and(|o| o.status.success()) {
        let dir = tempfile::tempdir().unwrap();
        let page = dir.path().join("parley.1");
        std::fs::write(&page, &man).unwrap();
        let out = Command::new("man").arg("-l").arg(&page).env("MANPAGER", "cat").env("MANWIDTH", "100").output();
        let out = out.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("Talk to your fleet"), "{text}");
    } else {
        eprintln!("man is not installed: formatting the page with man was skipped");
    }
}

#[test]
fn fleet_simulate_prints_its_inventory_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(parley_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["fleet", "simulate", "--agents", "6", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            text.push_str(&line);
            text.push('\n');
            if line == "]" {
                let _ = tx.send(text.clone());
            }
        }
    });
    let text = rx.recv_timeout(Duration::from_secs(30)).expect("no JSON inventory within 30 s");
    let _ = child.kill();
    let _ = child.wait();
    let agents: serde_json::Value = serde_json::from_str(&text).unwrap();
    let agents = agents.as_array().unwrap();
    assert_eq!(agents.len(), 6);
    for a in agents {
        assert!(a["endpoint"].as_str().unwrap().starts_with("http://127.0.0.1:"), "{a}");
        assert!(a["name"].is_string() && a["region"].is_string(), "{a}");
    }
}

#[test]
fn llm_check_and_voice_model_verify_answer_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(&["--data-dir", dir.path().to_str().unwrap(), "llm", "check", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"ok": false, "configured": false})
    );

    // An endpoint nobody listens on: configured, not answering.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("parley.toml");
    std::fs::write(
        &config,
        format!("[llm]\nbase_url = \"http://127.0.0.1:{port}/v1\"\nmodel = \"m\"\ntimeout_ms = 500\n"),
    )
    .unwrap();
    let (code, out, _) = run(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "llm",
        "check",
        "--json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["configured"], true);
    assert_eq!(v["base_url"], format!("http://127.0.0.1:{port}/v1"));
    assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");

    // A file that is no model is an error, not JSON claiming it is fine.
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"not a model").unwrap();
    let (code, out, err) = run(&[
        "--data-dir",
        dir.path().to_str().unwrap(),
        "voice",
        "model",
        "verify",
        "--json",
        junk.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("verifying") && err.contains("junk.bin"), "{err}");

    // The model scripts/test provisions, when this machine has it.
    let cache = std::env::var("PARLEY_MODEL_CACHE").map(std::path::PathBuf::from).unwrap_or_else(|_| {
        std::path::PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/parley-models")
    });
    let model = cache.join("models/ggml-tiny.en.bin");
    if model.is_file() {
        let (code, out, err) = run(&[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "voice",
            "model",
            "verify",
            "--json",
            model.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["hparams"]["n_mels"], 80);
        assert_eq!(v["hparams"]["n_audio_layer"], 4);
        assert_eq!(v["hparams"]["n_vocab"], 51864);
        assert_eq!(v["tokens"], 50256);
    } else {
        eprintln!("no provisioned tiny.en model at {}: its JSON summary was not checked", model.display());
    }
}

#[test]
fn words_that_are_no_subcommand_are_asked() {
    let dir = tempfile::tempdir().unwrap();
    let bare = parley(dir.path()).arg("how healthy is eu west?").output().unwrap();
    let stdout = String::from_utf8_lossy(&bare.stdout);
    assert_eq!(bare.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&bare.stderr));
    assert!(stdout.starts_with("eu-west: 12 agents, 12 healthy."), "{stdout}");
    // Several words without quotes are one utterance too.
    let words = parley(dir.path()).args(["how", "healthy", "is", "eu-west?"]).output().unwrap();
    assert_eq!(words.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&words.stdout).starts_with("eu-west: 12 agents, 12 healthy."));
    // Not understood: non-zero, as `ask` exits.
    let nonsense = parley(dir.path()).arg("purple monkey dishwasher").output().unwrap();
    assert_eq!(nonsense.status.code(), Some(1));
    // Real subcommands still are subcommands.
    let help = parley(dir.path()).args(["fleet", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("simulate"));
}

#[test]
fn a_mistyped_subcommand_is_refused_with_a_suggestion_while_sentences_are_asked() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = parley(dir.path()).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A lone word a slip from a command: refused, exit 2, nothing asked.
    for (typo, meant) in
        [("stauts", "status"), ("complitions", "completions"), ("fleat", "fleet"), ("audti", "audit"), ("tu", "tui")]
    {
        let (code, out, err) = run(&[typo]);
        assert_eq!(code, Some(2), "{typo}: {out}{err}");
        assert_eq!(err, format!("error: unknown command '{typo}'; did you mean '{meant}'?\n"), "{typo}");
        assert_eq!(out, "", "{typo} was not asked");
    }
    // Under a subcommand, clap's own refusal: exit 2, never asked.
    let (code, out, err) = run(&["fleet", "lsit"]);
    assert_eq!((code, out.as_str()), (Some(2), ""), "{err}");
    assert!(err.starts_with("error: unrecognized subcommand 'lsit'"), "{err}");
    // The word meant is itself a sentence: `parley status` asks how the fleet is.
    let (code, out, _) = run(&["status"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("the whole fleet: 48 agents, 48 healthy."), "{out}");
    // Real sentences, and single words close to nothing, are still asked.
    let (code, out, _) = run(&["how healthy is eu-west?"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("eu-west: 12 agents, 12 healthy."), "{out}");
    let (code, out, _) = run(&["healthy"]);
    assert_eq!(code, Some(0), "a word the grammar reads is a question: {out}");
    let (code, out, _) = run(&["xyzzy"]);
    assert_eq!(code, Some(1));
    assert!(out.starts_with("I didn't understand \"xyzzy\"."), "{out}");
}

#[test]
fn audit_shows_who_did_what_from_which_front_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = parley(dir.path()).args(["ask", "how healthy is eu west?"]).env("USER", "alice").output().unwrap();
    assert!(out.status.success());
    let out = parley(dir.path()).arg("list deployments").env("USER", "bob").output().unwrap();
    assert!(out.status.success());
    let started = Instant::now();
    let out = parley(dir.path()).args(["audit", "--since", "1h", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Read from the registry alone, without starting a fleet.
    assert!(started.elapsed() < Duration::from_secs(10));
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = entries.as_array().unwrap();
    let who: Vec<(&str, &str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["frontend"].as_str().unwrap(),
                e["utterance"].as_str().unwrap(),
                e["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        who,
        [("alice", "ask", "how healthy is eu west?", "ok"), ("bob", "ask", "list deployments", "ok")],
        "{entries:?}"
    );

    let out = parley(dir.path()).args(["audit"]).env("COLUMNS", "120").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.starts_with("2 requests since "), "{text}");
    let alice = text.lines().find(|l| l.contains("alice")).unwrap_or_default();
    assert!(alice.contains("ask") && alice.contains("admin") && alice.contains("how healthy is eu west?"), "{text}");

    // A start in the future: an empty log says so.
    let out = parley(dir.path()).args(["audit", "--since", "2999-01-01"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("No requests since 2999-01-01 00:00."));
    let out = parley(dir.path()).args(["audit", "--since", "last tuesday"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`last tuesday` is not a time to start from"));
}
