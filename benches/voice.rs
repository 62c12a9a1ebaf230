//! Voice benchmarks (criterion): Whisper model load time, and the whole path of a
//! 4-second spoken command to its typed operation with the model loaded, as a
//! long-lived voice session runs it: grammar-constrained transcription, the shared
//! normaliser, the intent parser, and the second, unconstrained pass when the first
//! was unsure (below `CONFIRM_BELOW`). For every installed model (tiny.en, base) in
//! `$PARLEY_MODEL_CACHE/models` (default ~/.cache/parley-models/models).
//! Speech is synthesised with espeak-ng. Run: `cargo bench --features whisper --bench voice`
//! (add `cuda` to the features for the GPU build); the machine's load average is
//! printed with the figures, since the two-core machine is shared.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use parley::intent::{Grammar, Vocabulary};
use parley::ops::Operation;
use parley::voice::frontend::CONFIRM_BELOW;
use parley::voice::grammar::{Matcher, Slots, SpokenGrammar};
use parley::voice::resolve::{self, Resolver};
use parley::voice::{audio, transcribe::Transcriber};

/// What one command comes to on the session's path.
fn command_to_operation(
    model: &Transcriber,
    samples: &[f32],
    prompt: &str,
    grammar: &Matcher,
    parser: &Grammar,
    vocab: &Vocabulary,
    resolver: &Resolver,
) -> (String, f32, Option<Operation>) {
    let Ok(heard) = model.transcribe(samples, prompt, Some(grammar)) else {
        return (String::new(), 0.0, None);
    };
    let text = resolve::normalise(&heard.text);
    let op = parser.parse(&text, vocab).operation;
    if heard.confidence < CONFIRM_BELOW {
        // The front-end's second pass: what the audio says without the grammar.
        if let Ok(free) = model.transcribe(samples, prompt, None) {
            black_box(parser.parse(&resolver.resolve(&free.text), vocab).operation == op);
        }
    }
    (text, heard.confidence, op)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn voice(c: &mut Criterion) {
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
    // What `parley voice` uses on the demo fleet: its prompt, its grammar, beam search.
    let Ok(topo) = parley::topology::demo::demo_topology() else {
        eprintln!("the embedded demo fleet did not load");
        return;
    };
    let vocab = Vocabulary::from_topology(&topo);
    let prompt = resolve::initial_prompt(&vocab);
    let resolver = Resolver::new(&vocab);
    let Ok(parser) = Grammar::embedded() else {
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
    let mut group = c.benchmark_group("voice");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(1));
    for name in ["tiny.en", "base"] {
        let path = cache.join("models").join(format!("ggml-{name}.bin"));
        if !path.is_file() {
            println!("{name}: not installed ({}), skipped", path.display());
            continue;
        }
        group.bench_function(format!("{name} load"), |b| b.iter(|| black_box(Transcriber::load(&path).is_ok())));
        let Ok(model) = Transcriber::load(&path) else {
            println!("{name}: failed to load");
            continue;
        };
        let (heard, confidence, op) =
            command_to_operation(&model, &samples, &prompt, &grammar, &parser, &vocab, &resolver);
        println!(
            "{name}: heard {heard:?} (confidence {confidence:.2}); operation {}; load average {}",
            op.map(|o| o.to_json().to_string()).unwrap_or_else(|| "none".into()),
            load_average()
        );
        group.bench_function(format!("{name} command to operation"), |b| {
            b.iter(|| command_to_operation(&model, &samples, &prompt, &grammar, &parser, &vocab, &resolver))
        });
        println!("{name}: load average after {}", load_average());
    }
    group.finish();
}

criterion_group!(benches, voice);
criterion_main!(benches);
