//! Push-to-talk for the TUI: record from the microphone until a pause (the same
//! voice-activity detector as `parley voice`) or until told to stop, transcribe
//! under the spoken grammar, and report through a channel, so the UI loop never
//! waits for audio or Whisper.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::topology::Topology;

#[cfg(feature = "whisper")]
use super::{
    audio::{Segmenter, VadSettings},
    frontend::CONFIRM_BELOW,
    grammar::{Matcher, Slots, SpokenGrammar},
    mic::Capture,
    resolve,
    transcribe::Transcriber,
};
#[cfg(not(feature = "whisper"))]
type Transcriber = ();

/// What a push-to-talk recording reports, in this order.
#[derive(Debug, Clone, PartialEq)]
pub enum TalkEvent {
    /// The recording ended; Whisper is working.
    Transcribing,
    /// What was said. `sure` is false when Whisper was unsure of it: the UI then
    /// offers the text for editing instead of sending it.
    Heard {
        text: String,
        sure: bool,
    },
    /// Nothing was said before the recording ended.
    Silence,
    Failed(String),
}

/// The model, loaded on the first press and kept for the next ones.
#[cfg_attr(not(feature = "whisper"), allow(dead_code))]
pub struct PushToTalk {
    model: PathBuf,
    intents_dir: Option<PathBuf>,
    loaded: Arc<Mutex<Option<Arc<Transcriber>>>>,
}

impl PushToTalk {
    pub fn new(model: PathBuf, intents_dir: Option<PathBuf>) -> PushToTalk {
        PushToTalk { model, intents_dir, loaded: Arc::new(Mutex::new(None)) }
    }

    /// Starts one recording; sending on (or dropping) the returned sender stops it
    /// early. Events arrive on `events`.
    #[cfg(feature = "whisper")]
    pub fn start(&self, topology: Arc<Topology>, events: mpsc::Sender<TalkEvent>) -> oneshot::Sender<()> {
        let (stop_tx, stop_rx) = oneshot::channel();
        let (model, intents, loaded) = (self.model.clone(), self.intents_dir.clone(), Arc::clone(&self.loaded));
        tokio::spawn(async move {
            let event = match record_and_transcribe(model, intents, loaded, topology, stop_rx, &events).await {
                Ok(e) => e,
                Err(e) => TalkEvent::Failed(e),
            };
            let _ = events.send(event).await;
        });
        stop_tx
    }

    /// Without whisper.cpp there is nothing to record with; say so.
    #[cfg(not(feature = "whisper"))]
    pub fn start(&self, _topology: Arc<Topology>, events: mpsc::Sender<TalkEvent>) -> oneshot::Sender<()> {
        let (stop_tx, _) = oneshot::channel();
        let _ = events.try_send(TalkEvent::Failed(
            "this parley was built without speech recognition; rebuild with `--features whisper`".into(),
        ));
        stop_tx
    }
}

#[cfg(feature = "whisper")]
async fn record_and_transcribe(
    model: PathBuf,
    intents: Option<PathBuf>,
    loaded: Arc<Mutex<Option<Arc<Transcriber>>>>,
    topology: Arc<Topology>,
    mut stop: oneshot::Receiver<()>,
    events: &mpsc::Sender<TalkEvent>,
) -> Result<TalkEvent, String> {
    // Opening a device waits for its thread (and ALSA's configuration parsing).
    let mut capture = tokio::task::spawn_blocking(Capture::open)
        .await
        .map_err(|e| format!("opening the microphone stopped: {e}"))?
        .map_err(|e| e.to_string())?;
    let mut segmenter = Segmenter::new(VadSettings::default());
    // The first utterance, cut at the first pause; or what was said when stopped.
    let samples = loop {
        tokio::select! {
            chunk = capture.next() => match chunk {
                Some(chunk) => {
                    if let Some(u) = segmenter.push(&chunk).into_iter().next() {
                        break Some(u);
                    }
                }
                None => break segmenter.finish(),
            },
            _ = &mut stop => break segmenter.finish(),
        }
    };
    drop(capture);
    let Some(samples) = samples else { return Ok(TalkEvent::Silence) };
    let _ = events.send(TalkEvent::Transcribing).await;
    tokio::task::spawn_blocking(move || {
        let transcriber = {
            let mut slot =
                loaded.lock().map_err(|_| "the speech model is unusable after an earlier failure".to_string())?;
            match slot.as_ref() {
                Some(t) => Arc::clone(t),
                None => {
                    let t = Arc::new(Transcriber::load(&model).map_err(|e| e.to_string())?);
                    *slot = Some(Arc::clone(&t));
                    t
                }
            }
        };
        let grammar = SpokenGrammar::load(intents.as_deref()).map_err(|e| e.to_string())?;
        let matcher = Matcher::compile(&grammar, &Slots::from_topology(&topology)).map_err(|e| e.to_string())?;
        let vocab = crate::intent::Vocabulary::from_topology(&topology);
        let heard = transcriber
            .transcribe(&samples, &resolve::initial_prompt(&vocab), Some(&matcher))
            .map_err(|e| e.to_string())?;
        let text = resolve::normalise(&heard.text);
        Ok(if text.is_empty() {
            TalkEvent::Silence
        } else {
            TalkEvent::Heard { text, sure: heard.confidence >= CONFIRM_BELOW }
        })
    })
    .await
    .map_err(|e| format!("transcription stopped: {e}"))?
}
