//! Audio in: WAV files of any common rate and channel count, raw PCM s16le, all
//! made 16 kHz mono f32 (what Whisper takes), and an energy-based voice-activity
//! segmenter that cuts a stream into utterances at silences.
//!
//! Files and live streams go through the same [`Segmenter`], so a command read
//! from a file is cut exactly as it would be when spoken.

use std::path::Path;

/// Whisper's sample rate.
pub const RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{path}: {reason}")]
    Wav { path: String, reason: String },
}

/// Reads a WAV file as 16 kHz mono.
pub fn load_wav(path: &Path) -> Result<Vec<f32>, AudioError> {
    let fail = |reason: String| AudioError::Wav { path: path.display().to_string(), reason };
    let mut reader = hound::WavReader::open(path).map_err(|e| fail(e.to_string()))?;
    let spec = reader.spec();
    if spec.channels == 0 || spec.sample_rate == 0 {
        return Err(fail("no channels or no sample rate".into()));
    }
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => {
            reader.samples::<f32>().collect::<Result<_, _>>().map_err(|e| fail(e.to_string()))?
        }
        hound::SampleFormat::Int => {
            let bits = u32::from(spec.bits_per_sample.clamp(1, 32));
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(|e| fail(e.to_string()))?
        }
    };
    let mono = downmix(&interleaved, usize::from(spec.channels));
    Ok(resample(&mono, spec.sample_rate, RATE))
}

/// Raw little-endian signed 16-bit samples as f32; an odd trailing byte is dropped.
pub fn pcm_s16le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0).collect()
}

pub fn downmix(interleaved: &[f32], channels: usize) -> Vec<f32> {
    if channels <= 1 {
        return interleaved.to_vec();
    }
    interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() / channels as f32).collect()
}

/// Band-limited resampling with a Hann-windowed sinc: linear interpolation would
/// fold 8-11 kHz of a 22.05 kHz recording back into the speech band.
pub fn resample(input: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || input.is_empty() || from == 0 || to == 0 {
        return input.to_vec();
    }
    const HALF: isize = 16;
    let ratio = f64::from(to) / f64::from(from);
    let cutoff = ratio.min(1.0);
    let out_len = (input.len() as f64 * ratio).floor() as usize;
    let mut out = Vec::with_capacity(out_len);
    let half_width = (HALF as f64 / cutoff).ceil() as isize;
    for n in 0..out_len {
        let t = n as f64 / ratio;
        let centre = t.floor() as isize;
        let mut acc = 0.0f64;
        let mut norm = 0.0f64;
        for k in (centre - half_width + 1)..=(centre + half_width) {
            if k < 0 || k as usize >= input.len() {
                continue;
            }
            let x = (t - k as f64) * cutoff;
            let sinc = if x.abs() < 1e-9 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
            let w = 0.5 + 0.5 * (std::f64::consts::PI * x / HALF as f64).cos();
            let w = if x.abs() >= HALF as f64 { 0.0 } else { w };
            acc += f64::from(input[k as usize]) * sinc * w;
            norm += sinc * w;
        }
        out.push(if norm.abs() > 1e-9 { (acc / norm) as f32 } else { 0.0 });
    }
    out
}

/// Settings of the voice-activity detector, at 16 kHz.
#[derive(Debug, Clone, Copy)]
pub struct VadSettings {
    /// Frame length in samples (30 ms).
    pub frame: usize,
    /// Silence that ends an utterance.
    pub hangover_frames: usize,
    /// Shorter bursts (clicks, coughs) are not utterances.
    pub min_speech_frames: usize,
    /// Audio kept before the first loud frame, so soft onsets ("f" of "fail") survive.
    pub preroll_frames: usize,
    /// RMS below this is never speech, whatever the noise floor.
    pub min_rms: f32,
    /// Speech is this many times louder (RMS) than the tracked noise floor.
    pub floor_ratio: f32,
    /// An utterance is cut here even without a pause (Whisper's window is 30 s).
    pub max_frames: usize,
}

impl Default for VadSettings {
    fn default() -> Self {
        VadSettings {
            frame: 480,
            hangover_frames: 20,
            min_speech_frames: 8,
            preroll_frames: 10,
            min_rms: 0.006,
            floor_ratio: 3.0,
            max_frames: 900,
        }
    }
}

/// Streaming segmenter: push audio as it comes, get finished utterances back.
pub struct Segmenter {
    s: VadSettings,
    pending: Vec<f32>,
    preroll: std::collections::VecDeque<Vec<f32>>,
    current: Vec<f32>,
    in_speech: bool,
    speech_frames: usize,
    silent_frames: usize,
    frames: usize,
    floor: f32,
}

impl Segmenter {
    pub fn new(s: VadSettings) -> Segmenter {
        Segmenter {
            s,
            pending: Vec::new(),
            preroll: std::collections::VecDeque::new(),
            current: Vec::new(),
            in_speech: false,
            speech_frames: 0,
            silent_frames: 0,
            frames: 0,
            floor: s.min_rms,
        }
    }

    pub fn push(&mut self, samples: &[f32]) -> Vec<Vec<f32>> {
        self.pending.extend_from_slice(samples);
        let mut done = Vec::new();
        let frame = self.s.frame.max(1);
        let whole = self.pending.len() / frame * frame;
        let frames: Vec<Vec<f32>> = self.pending[..whole].chunks(frame).map(<[f32]>::to_vec).collect();
        self.pending.drain(..whole);
        for f in frames {
            if let Some(u) = self.frame(f) {
                done.push(u);
            }
        }
        done
    }

    /// End of stream: what was being said is an utterance too.
    pub fn finish(&mut self) -> Option<Vec<f32>> {
        let rest = std::mem::take(&mut self.pending);
        if self.in_speech {
            self.current.extend(rest);
        }
        self.close()
    }

    fn frame(&mut self, f: Vec<f32>) -> Option<Vec<f32>> {
        let rms = (f.iter().map(|v| v * v).sum::<f32>() / f.len().max(1) as f32).sqrt();
        let loud = rms > self.s.min_rms.max(self.floor * self.s.floor_ratio);
        if !loud {
            // The floor follows quiet frames quickly down and slowly up, so steady
            // noise raises it but speech does not.
            self.floor = if rms < self.floor { rms.max(1e-5) } else { self.floor * 0.98 + rms * 0.02 };
        }
        if !self.in_speech {
            if loud {
                self.in_speech = true;
                self.current = self.preroll.drain(..).flatten().collect();
                self.current.extend(&f);
                self.speech_frames = 1;
                self.silent_frames = 0;
                self.frames = 1;
            } else {
                self.preroll.push_back(f);
                while self.preroll.len() > self.s.preroll_frames {
                    self.preroll.pop_front();
                }
            }
            return None;
        }
        self.current.extend(&f);
        self.frames += 1;
        if loud {
            self.speech_frames += 1;
            self.silent_frames = 0;
        } else {
            self.silent_frames += 1;
        }
        if self.silent_frames >= self.s.hangover_frames || self.frames >= self.s.max_frames {
            return self.close();
        }
        None
    }

    fn close(&mut self) -> Option<Vec<f32>> {
        let was = self.in_speech;
        self.in_speech = false;
        let utterance = std::mem::take(&mut self.current);
        let enough = self.speech_frames >= self.s.min_speech_frames;
        self.speech_frames = 0;
        self.silent_frames = 0;
        (was && enough).then_some(utterance)
    }
}

/// Cuts a whole recording into utterances.
pub fn segment(samples: &[f32]) -> Vec<Vec<f32>> {
    let mut seg = Segmenter::new(VadSettings::default());
    let mut out = seg.push(samples);
    out.extend(seg.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(secs: f32, amp: f32) -> Vec<f32> {
        (0..(secs * RATE as f32) as usize).map(|i| amp * (i as f32 * 0.05).sin()).collect()
    }

    #[test]
    fn silence_separated_bursts_are_separate_utterances() {
        let mut audio = tone(0.5, 0.0);
        audio.extend(tone(1.0, 0.3));
        audio.extend(tone(1.0, 0.0));
        audio.extend(tone(0.8, 0.3));
        audio.extend(tone(0.3, 0.0));
        let parts = segment(&audio);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].len() >= RATE as usize);
        // A click is not an utterance.
        assert!(segment(&[tone(0.5, 0.0), tone(0.06, 0.5), tone(0.5, 0.0)].concat()).is_empty());
    }

    #[test]
    fn resampling_keeps_length_ratio_and_tone() {
        let input: Vec<f32> =
            (0..44_100).map(|i| (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 44_100.0).sin()).collect();
        let out = resample(&input, 44_100, RATE);
        assert_eq!(out.len(), 16_000);
        let rms = (out[1000..15000].iter().map(|v| v * v).sum::<f32>() / 14000.0).sqrt();
        assert!((rms - std::f32::consts::FRAC_1_SQRT_2).abs() < 0.02, "{rms}");
        assert_eq!(downmix(&[1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
        assert_eq!(pcm_s16le(&[0, 0x40, 0xff]), vec![0.5]);
    }
}
