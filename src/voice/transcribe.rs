//! Whisper through whisper-rs (whisper.cpp): one loaded model, one utterance at a
//! time, with the fleet's initial prompt, decoding constrained to the spoken
//! grammar (see `constrain`), and a confidence from token probabilities.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use whisper_rs::{whisper_rs_sys, FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

use super::constrain::{Constraint, TokenTrie};
use super::grammar::Matcher;

#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error("loading the Whisper model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("transcription failed: {0}")]
    Run(String),
}

/// What was heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    /// Geometric mean of the text tokens' probabilities, 0..1.
    pub confidence: f32,
    pub seconds: f64,
}

pub struct Transcriber {
    ctx: WhisperContext,
    threads: i32,
    /// The model's text tokens, for the grammar constraint.
    trie: TokenTrie,
    /// Beam width; 1 is greedy decoding.
    beam: i32,
}

/// Beam search keeps a hypothesis the greedy first word would have thrown away
/// ("resume" after a likelier but ungrammatical "renew"): on the spoken test set it
/// was worth a command or two in 34 for about a quarter more decoding time.
pub const DEFAULT_BEAM: i32 = 4;

impl Transcriber {
    pub fn load(path: &Path) -> Result<Transcriber, TranscribeError> {
        // whisper.cpp logs every load step to stderr; the operator reads stderr.
        whisper_rs::install_logging_hooks();
        if !path.is_file() {
            return Err(TranscribeError::Load {
                path: path.display().to_string(),
                reason: "no such file (install one with `parley voice model install tiny.en`)".into(),
            });
        }
        let ctx = WhisperContext::new_with_params(path, WhisperContextParameters::default())
            .map_err(|e| TranscribeError::Load { path: path.display().to_string(), reason: e.to_string() })?;
        let threads = std::thread::available_parallelism().map(|n| n.get().min(8) as i32).unwrap_or(2);
        let eot = ctx.token_eot();
        let trie = TokenTrie::new(eot, (0..eot).filter_map(|id| ctx.token_to_bytes(id).ok().map(|b| (id, b))));
        Ok(Transcriber { ctx, threads, trie, beam: DEFAULT_BEAM })
    }

    /// Beam width for decoding (1: greedy).
    pub fn with_beam(mut self, beam: i32) -> Transcriber {
        self.beam = beam.clamp(1, 8);
        self
    }

    /// One utterance. With a `grammar`, Whisper can only write sentences of it; the
    /// confidence then measures how much of Whisper's own belief those sentences
    /// held, so speech outside the grammar comes back unsure rather than confidently
    /// forced into a command.
    pub fn transcribe(
        &self,
        samples: &[f32],
        prompt: &str,
        grammar: Option<&Matcher>,
    ) -> Result<Transcript, TranscribeError> {
        let started = Instant::now();
        let mut state = self.ctx.create_state().map_err(|e| TranscribeError::Run(e.to_string()))?;
        let mut params = if self.beam > 1 {
            FullParams::new(SamplingStrategy::BeamSearch { beam_size: self.beam, patience: -1.0 })
        } else {
            FullParams::new(SamplingStrategy::Greedy { best_of: 1 })
        };
        params.set_n_threads(self.threads);
        // Commands are English; a multilingual model must not guess another language
        // from a short clip.
        params.set_language(Some("en"));
        params.set_no_context(true);
        params.set_single_segment(true);
        params.set_no_timestamps(true);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        params.set_initial_prompt(prompt);
        // One deterministic pass: the temperature fallback would re-decode by sampling.
        params.set_temperature(0.0);
        params.set_temperature_inc(0.0);
        let n_vocab = usize::try_from(self.ctx.n_vocab()).unwrap_or(0);
        // Beam search runs its decoders' logits through the callback from several
        // threads at once, hence the mutex.
        let filter = grammar.map(|m| {
            Mutex::new(Filter {
                constraint: Constraint::new(m, &self.trie),
                eot: self.trie.end_of_text(),
                log_mass: HashMap::new(),
                allowed: Vec::new(),
            })
        });
        let shared = filter.as_ref().map(|f| Shared { filter: f, n_vocab });
        if let Some(sh) = shared.as_ref() {
            // SAFETY: `filter_logits` only reads `tokens`/`logits` within the lengths
            // whisper.cpp passes, and `sh` outlives `state.full` below, which is the
            // only time whisper.cpp calls it (params are consumed by that call).
            unsafe {
                params.set_filter_logits_callback(Some(filter_logits));
                params.set_filter_logits_callback_user_data((sh as *const Shared).cast_mut().cast::<c_void>());
            }
        }
        // Whisper needs at least one second; pad short clips with silence.
        let mut audio = samples.to_vec();
        if audio.len() < 16_000 + 1600 {
            audio.resize(16_000 + 1600, 0.0);
        }
        state.full(params, &audio).map_err(|e| TranscribeError::Run(e.to_string()))?;
        let mut text = String::new();
        let mut log_p = 0.0f64;
        let mut n = 0u32;
        let eot = self.ctx.token_eot();
        let mut prefix: Vec<i32> = Vec::new();
        for i in 0..state.full_n_segments() {
            let Some(seg) = state.get_segment(i) else { continue };
            if let Ok(t) = seg.to_str_lossy() {
                text.push_str(&t);
            }
            for j in 0..seg.n_tokens() {
                let Some(tok) = seg.get_token(j) else { continue };
                // Special tokens (timestamps, end of text) say nothing about the words.
                if tok.token_id() >= eot {
                    continue;
                }
                // Under the grammar, p is renormalised over what the grammar allowed;
                // times the share of belief the grammar kept, it is Whisper's own.
                let kept = filter
                    .as_ref()
                    .and_then(|f| f.lock().ok().and_then(|f| f.log_mass.get(&prefix).copied()))
                    .unwrap_or(0.0);
                log_p += f64::from(tok.token_probability().max(1e-6)).ln() + kept;
                n += 1;
                prefix.push(tok.token_id());
            }
        }
        let confidence = if n == 0 { 0.0 } else { (log_p / f64::from(n)).exp() as f32 };
        Ok(Transcript { text: text.trim().to_string(), confidence, seconds: started.elapsed().as_secs_f64() })
    }
}

/// What the logits callback is handed.
struct Shared<'f, 'a> {
    filter: &'f Mutex<Filter<'a>>,
    n_vocab: usize,
}

/// What the logits callback works with during one `full` call.
struct Filter<'a> {
    constraint: Constraint<'a>,
    eot: i32,
    /// ln of the probability mass the grammar allowed, per decoded prefix.
    log_mass: HashMap<Vec<i32>, f64>,
    /// Scratch mask, one entry per token.
    allowed: Vec<bool>,
}

impl Filter<'_> {
    fn apply(&mut self, decoded: &[i32], logits: &mut [f32]) {
        let Some(allowed) = self.constraint.allowed(decoded) else {
            // The transcript already left the grammar: decode freely from here.
            return;
        };
        self.allowed.clear();
        self.allowed.resize(logits.len(), false);
        for &t in &allowed.tokens {
            if let Some(a) = usize::try_from(t).ok().and_then(|i| self.allowed.get_mut(i)) {
                *a = true;
            }
        }
        if allowed.end {
            if let Some(a) = usize::try_from(self.eot).ok().and_then(|i| self.allowed.get_mut(i)) {
                *a = true;
            }
        }
        if !self.allowed.iter().any(|a| *a) {
            return;
        }
        let max = logits.iter().copied().filter(|l| l.is_finite()).fold(f32::NEG_INFINITY, f32::max);
        let (mut all, mut kept) = (0.0f64, 0.0f64);
        for (l, a) in logits.iter_mut().zip(&self.allowed) {
            if l.is_finite() {
                let e = f64::from(*l - max).exp();
                all += e;
                if *a {
                    kept += e;
                }
            }
            if !*a {
                *l = f32::NEG_INFINITY;
            }
        }
        if all > 0.0 {
            self.log_mass.insert(decoded.to_vec(), (kept.max(1e-300) / all).ln());
        }
    }
}

/// whisper.cpp's logits filter: called once per decoding step with the tokens so
/// far and the next token's logits.
unsafe extern "C" fn filter_logits(
    _ctx: *mut whisper_rs_sys::whisper_context,
    _state: *mut whisper_rs_sys::whisper_state,
    tokens: *const whisper_rs_sys::whisper_token_data,
    n_tokens: c_int,
    logits: *mut f32,
    user_data: *mut c_void,
) {
    if user_data.is_null() || logits.is_null() {
        return;
    }
    // SAFETY: user_data is the `Shared` set by `transcribe`, alive for the call.
    let shared = unsafe { &*user_data.cast::<Shared>() };
    let decoded: Vec<i32> = match usize::try_from(n_tokens) {
        // SAFETY: whisper.cpp passes its token vector's data and length.
        Ok(n) if n > 0 && !tokens.is_null() => {
            unsafe { std::slice::from_raw_parts(tokens, n) }.iter().map(|t| t.id).collect()
        }
        _ => Vec::new(),
    };
    // SAFETY: the logits buffer holds one float per vocabulary entry.
    let logits = unsafe { std::slice::from_raw_parts_mut(logits, shared.n_vocab) };
    // A panic must not unwind into C; a failed step leaves the logits as they were.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Ok(mut filter) = shared.filter.lock() {
            filter.apply(&decoded, logits);
        }
    }));
}
