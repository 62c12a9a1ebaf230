//! Whisper through whisper-rs (whisper.cpp): one loaded model, one utterance at a
//! time, with the fleet's initial prompt and a confidence from token probabilities.

use std::path::Path;
use std::time::Instant;

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

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
}

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
        Ok(Transcriber { ctx, threads })
    }

    pub fn transcribe(&self, samples: &[f32], prompt: &str) -> Result<Transcript, TranscribeError> {
        let started = Instant::now();
        let mut state = self.ctx.create_state().map_err(|e| TranscribeError::Run(e.to_string()))?;
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
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
                log_p += f64::from(tok.token_probability().max(1e-6)).ln();
                n += 1;
            }
        }
        let confidence = if n == 0 { 0.0 } else { (log_p / f64::from(n)).exp() as f32 };
        Ok(Transcript { text: text.trim().to_string(), confidence, seconds: started.elapsed().as_secs_f64() })
    }
}
