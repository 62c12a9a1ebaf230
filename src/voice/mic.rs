//! Live audio for `parley voice --listen` (and the TUI's push-to-talk): the
//! default input device through cpal, delivered as 16 kHz mono f32 chunks for the
//! same [`super::audio::Segmenter`] that cuts files and piped PCM.
//!
//! [`Capture`] is the seam: whatever produces the audio (a microphone, or a WAV
//! file standing in for one), the consumer only awaits chunks, so everything after
//! the device is tested without hardware.

use std::path::{Path, PathBuf};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use tokio::sync::mpsc;

use super::audio::{self, RATE};

/// Test and demo aid: when set, "the microphone" is this WAV file, played once as
/// if spoken and followed by silence. Read only by [`Capture::open`].
pub const MIC_WAV_ENV: &str = "PARLEY_MIC_WAV";

/// What to do instead when there is no microphone.
pub const PIPE_INSTEAD: &str =
    "pipe raw PCM (s16le, 16 kHz, mono) instead: `arecord -f S16_LE -r 16000 -c 1 -t raw | parley voice --listen --input -`";

#[derive(Debug, thiserror::Error)]
pub enum MicError {
    #[error("no usable microphone: the {host} audio host has no default input device; {PIPE_INSTEAD}")]
    NoDevice { host: String },
    #[error("no usable microphone: the default input device could not be opened ({reason}); {PIPE_INSTEAD}")]
    Open { reason: String },
    #[error("{path} (set by {MIC_WAV_ENV}): {source}")]
    Wav {
        path: String,
        #[source]
        source: audio::AudioError,
    },
}

/// A stream of 16 kHz mono audio; ends when the source does (a microphone does not).
pub struct Capture {
    chunks: mpsc::UnboundedReceiver<Vec<f32>>,
    /// Dropping it stops the device thread (and with it the cpal stream).
    _stop: Option<std::sync::mpsc::Sender<()>>,
    convert: Converter,
}

impl Capture {
    /// The microphone, or the WAV file named by [`MIC_WAV_ENV`].
    pub fn open() -> Result<Capture, MicError> {
        match std::env::var_os(MIC_WAV_ENV) {
            Some(path) if !path.is_empty() => Capture::wav(&PathBuf::from(path)),
            _ => Capture::microphone(),
        }
    }

    /// A WAV file as if it were spoken into the microphone, then a second of
    /// silence so the voice-activity detector closes the last utterance.
    pub fn wav(path: &Path) -> Result<Capture, MicError> {
        let samples =
            audio::load_wav(path).map_err(|source| MicError::Wav { path: path.display().to_string(), source })?;
        let (tx, rx) = mpsc::unbounded_channel();
        // Chunks of 100 ms, as a device delivers them; the receiver is still open here.
        for chunk in samples.chunks(RATE as usize / 10) {
            let _ = tx.send(chunk.to_vec());
        }
        let _ = tx.send(vec![0.0; RATE as usize]);
        Ok(Capture { chunks: rx, _stop: None, convert: Converter::new(1, RATE) })
    }

    /// The default input device. Fails (and nothing is listening) when there is none.
    pub fn microphone() -> Result<Capture, MicError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(u16, u32), MicError>>();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        // cpal streams are not Send on every platform: one thread owns it for its life.
        std::thread::Builder::new()
            .name("parley-mic".into())
            .spawn(move || match open_stream(tx) {
                Ok((stream, format)) => {
                    let _ = ready_tx.send(Ok(format));
                    // Until the Capture is dropped (its sender with it).
                    let _ = stop_rx.recv();
                    drop(stream);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| MicError::Open { reason: e.to_string() })?;
        let (channels, rate) =
            ready_rx.recv().map_err(|_| MicError::Open { reason: "the capture thread stopped".into() })??;
        Ok(Capture { chunks: rx, _stop: Some(stop_tx), convert: Converter::new(channels, rate) })
    }

    /// The next audio, 16 kHz mono; None when the source has ended.
    pub async fn next(&mut self) -> Option<Vec<f32>> {
        loop {
            let raw = self.chunks.recv().await?;
            let out = self.convert.push(&raw);
            if !out.is_empty() {
                return Some(out);
            }
        }
    }
}

fn open_stream(tx: mpsc::UnboundedSender<Vec<f32>>) -> Result<(cpal::Stream, (u16, u32)), MicError> {
    let host = cpal::default_host();
    let device =
        host.default_input_device().ok_or_else(|| MicError::NoDevice { host: host.id().name().to_string() })?;
    let config = device.default_input_config().map_err(|e| MicError::Open { reason: e.to_string() })?;
    let format = (config.channels(), config.sample_rate());
    let on_error = |e: cpal::Error| tracing::warn!(error = %e, "microphone stream error");
    let stream = match config.sample_format() {
        cpal::SampleFormat::F32 => build::<f32>(&device, config.into(), tx, on_error),
        cpal::SampleFormat::I16 => build::<i16>(&device, config.into(), tx, on_error),
        cpal::SampleFormat::I32 => build::<i32>(&device, config.into(), tx, on_error),
        cpal::SampleFormat::U16 => build::<u16>(&device, config.into(), tx, on_error),
        other => return Err(MicError::Open { reason: format!("unsupported sample format {other}") }),
    }?;
    stream.play().map_err(|e| MicError::Open { reason: e.to_string() })?;
    Ok((stream, format))
}

fn build<T>(
    device: &cpal::Device,
    config: cpal::StreamConfig,
    tx: mpsc::UnboundedSender<Vec<f32>>,
    on_error: impl FnMut(cpal::Error) + Send + 'static,
) -> Result<cpal::Stream, MicError>
where
    T: cpal::SizedSample,
    f32: cpal::FromSample<T>,
{
    device
        .build_input_stream::<T, _, _>(
            config,
            // The audio callback only copies; conversion happens on the consumer's side.
            move |data: &[T], _: &cpal::InputCallbackInfo| {
                let _ = tx.send(data.iter().map(|s| s.to_sample::<f32>()).collect());
            },
            on_error,
            None,
        )
        .map_err(|e| MicError::Open { reason: e.to_string() })
}

/// Device format to 16 kHz mono. Resamples whole 100 ms blocks: the resampler
/// works on a buffer, and blocks of a tenth of a second map onto exactly 1600
/// output samples for every common rate, so the stream's length does not drift.
struct Converter {
    channels: usize,
    rate: u32,
    mono: Vec<f32>,
}

impl Converter {
    fn new(channels: u16, rate: u32) -> Converter {
        Converter { channels: usize::from(channels.max(1)), rate, mono: Vec::new() }
    }

    fn push(&mut self, interleaved: &[f32]) -> Vec<f32> {
        let mono = audio::downmix(interleaved, self.channels);
        if self.rate == RATE {
            return mono;
        }
        self.mono.extend(mono);
        let block = (self.rate as usize / 10).max(1);
        let whole = self.mono.len() / block * block;
        if whole == 0 {
            return Vec::new();
        }
        let out = audio::resample(&self.mono[..whole], self.rate, RATE);
        self.mono.drain(..whole);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_audio_becomes_16k_mono_without_drift() {
        // 48 kHz stereo delivered in odd-sized chunks, as devices do.
        let mut c = Converter::new(2, 48_000);
        let mut total = 0;
        for _ in 0..10 {
            total += c.push(&vec![0.25; 2 * 4_801]).len();
        }
        // 48_010 frames: 48_000 converted (16_000 samples), 10 kept for the next block.
        assert_eq!(total, 16_000);
        assert_eq!(c.mono.len(), 10);
        let mut same = Converter::new(1, RATE);
        assert_eq!(same.push(&[0.5, 0.25]), vec![0.5, 0.25]);
    }

    #[tokio::test]
    async fn a_wav_source_plays_once_then_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: RATE,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for _ in 0..4_000 {
            w.write_sample(8_192i16).unwrap();
        }
        w.finalize().unwrap();
        let mut c = Capture::wav(&path).unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = c.next().await {
            got.extend(chunk);
        }
        assert_eq!(got.len(), 4_000 + RATE as usize);
        assert_eq!(got[0], 0.25);
        assert_eq!(got[4_000], 0.0);
        assert!(matches!(Capture::wav(&dir.path().join("none.wav")), Err(MicError::Wav { .. })));
    }
}
