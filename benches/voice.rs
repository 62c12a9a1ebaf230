//! Voice benchmarks: Whisper model load time, and the whole path of a 4-second
//! spoken command to its typed operation (constrained transcription, the shared
//! normaliser, the intent parser), for every installed model (tiny.en, base) in
//! `$PARLEY_MODEL_CACHE/models` (default ~/.cache/parley-models/models).
//! Speech is synthesised with espeak-ng. Run: `cargo bench --features whisper --bench voice`
//! (add `cuda` to the features for the GPU build).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use parley::intent::Vocabulary;
use parley::voice::grammar::{Matcher, Slots, SpokenGrammar};
use parley::voice::{audio, resolve, transcribe::Transcriber};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let cache = std::env::var_os("PARLEY_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/parley-models"));
    let wav = std::env::temp_dir().join(format!("parley-bench-{}.wav", std::process::id()));
    let text = "roll out auth filter two point one to E U west as a canary, ten percent then fifty percent";
    let ok =
        Command::new("espeak-ng").arg("-w").arg(&wav).args(["-s", "160", text]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("espeak-ng is needed to synthesise the benchmark's command");
        return;
    }
    let samples = audio::load_wav(&wav).unwrap_or_default();
    let _ = std::fs::remove_file(&wav);
    println!("command: {:.2} s of audio", samples.len() as f64 / f64::from(audio::RATE));
    // `cargo test` runs benches without `--bench`: one pass then, to show it still works.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (load_runs, transcribe_runs) = if quick { (1, 1) } else { (3, 5) };
    // What `parley voice` uses on the demo fleet: its prompt, its grammar, beam search.
    let Ok(topo) = parley::topology::demo::demo_topology() else {
        eprintln!("the embedded demo fleet did not load");
        return;
    };
    let vocab = Vocabulary::from_topology(&topo);
    let prompt = resolve::initial_prompt(&vocab);
    let Ok(parser) = parley::intent::Grammar::embedded() else {
        eprintln!("the embedded grammar did not load");
        return;
    };
    let grammar = match SpokenGrammar::embedded().and_then(|g| Matcher::compile(&g, &Slots::from_topology(&topo))) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("the spoken grammar did not compile: {e}");
            return;
        }
    };
    for name in ["tiny.en", "base"] {
        let path = cache.join("models").join(format!("ggml-{name}.bin"));
        if !path.is_file() {
            println!("{name}: not installed ({}), skipped", path.display());
            continue;
        }
        let mut loads = Vec::new();
        let mut model = None;
        for _ in 0..load_runs {
            let t = Instant::now();
            model = Transcriber::load(&path).ok();
            loads.push(t.elapsed().as_secs_f64());
        }
        let Some(model) = model else {
            println!("{name}: failed to load");
            continue;
        };
        let mut runs = Vec::new();
        let mut heard = String::new();
        let mut op = None;
        for _ in 0..transcribe_runs {
            let t = Instant::now();
            if let Ok(tr) = model.transcribe(&samples, &prompt, Some(&grammar)) {
                heard = resolve::normalise(&tr.text);
                op = parser.parse(&heard, &vocab).operation;
            }
            runs.push(t.elapsed().as_secs_f64());
        }
        println!("{name}: operation {}", op.map(|o| o.to_json().to_string()).unwrap_or_else(|| "none".into()));
        println!(
            "{name}: load median {:.3} s; command to operation median {:.3} s (min {:.3}) of {transcribe_runs}; heard {heard:?}",
            median(loads),
            median(runs.clone()),
            runs.iter().copied().fold(f64::INFINITY, f64::min)
        );
    }
}
