//! `parley voice`: audio in, the same dialog session as every other front-end.
//!
//! Each utterance is transcribed, resolved against the fleet's words and handed to
//! [`crate::dialog::Session::handle`]. What an unsure transcript may do is the
//! gate's rule ([`super::gate`]): a mutation is held until a sure "yes", so a
//! mishearing can never change the fleet, and a question is answered with "I may
//! have misheard" first. Risky operations get the session's own read-back and
//! confirmation, answered by voice or typing like any other turn.
//!
//! As a client of `parley serve` ([`run_client`]) the audio and Whisper stay in this
//! process (the model is local); the grammar's vocabulary comes from the server's
//! fleet snapshot, the words go to the server as turns of one session (front-end
//! `voice`), and announcements come from its event stream. The hold-an-unsure-
//! transcript rule above is the same code either way.

use std::io::Write as _;
use std::path::PathBuf;

use serde_json::json;

use super::audio::{self, Segmenter, VadSettings};
use super::gate;
use super::grammar::{Matcher, Slots, SpokenGrammar};
use super::resolve::{self, Resolver};
use super::transcribe::Transcriber;
use crate::app::Parley;
use crate::client::{Client, ServerEvent};
use crate::intent::Grammar;
use crate::ops::{Actor, Operation};
use crate::reply::{Outcome, Reply};
use crate::topology::Topology;

pub use super::gate::{AGREEMENT_FLOOR, CONFIRM_BELOW};

/// When the second, unconstrained pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondPass {
    /// Only for a transcript the grammar-constrained pass was unsure of: the usual
    /// case costs one pass.
    WhenUnsure,
    /// For every utterance (to measure the gate).
    Always,
    Never,
}

#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    #[error(transparent)]
    Audio(#[from] audio::AudioError),
    #[error(transparent)]
    Transcribe(#[from] super::transcribe::TranscribeError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Server(#[from] crate::client::ClientError),
}

/// Who answers the turns. One per process, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// This process: a dialog session of its own.
    Local { session: crate::dialog::Session, services: std::sync::Arc<crate::services::Services> },
    /// A `parley serve`: one session of it, and what that session watches (read
    /// from the replies, for the announcer).
    Server { client: Client, session: String, watching: Option<Operation> },
}

impl Backend {
    async fn handle(&mut self, text: &str) -> Reply {
        match self {
            Backend::Local { session, .. } => session.handle(text).await,
            Backend::Server { client, session, watching } => match client.turn(session, text, "voice").await {
                Ok(reply) => {
                    if !reply.outcome.is_failure() {
                        match &reply.operation {
                            Some(op @ Operation::Watch { .. }) => *watching = Some(op.clone()),
                            Some(Operation::Unwatch) => *watching = None,
                            _ => {}
                        }
                    }
                    reply
                }
                Err(e) => Reply::new(Outcome::Failed, e.to_string()),
            },
        }
    }

    /// Once the input ended: in this process, the rollouts it started run to their
    /// end (announced while watching) before the process exits; a server's go on
    /// without this client.
    async fn settle(&self) {
        if let Backend::Local { services, .. } = self {
            services.orchestrator.wait_settled().await;
        }
    }

    fn watching(&self) -> Option<Operation> {
        match self {
            Backend::Local { session, .. } => session.watching().cloned(),
            Backend::Server { watching, .. } => watching.clone(),
        }
    }
}

/// Where audio comes from.
pub enum Input {
    Files(Vec<PathBuf>),
    /// Raw PCM s16le 16 kHz mono on standard input.
    StdinPcm,
    /// The microphone (opened by the caller, so a missing one fails before the model loads).
    Capture(super::mic::Capture),
}

pub struct VoiceOptions {
    pub model: PathBuf,
    pub json: bool,
    pub speak: bool,
    /// Only utterances starting with "parley" are commands (the rest is ignored).
    pub wake_word: bool,
    /// Decode only sentences of this grammar (None: free transcription).
    pub grammar: Option<SpokenGrammar>,
    /// Beam width (1: greedy).
    pub beam: i32,
    /// Transcripts heard with less confidence are held for a "yes" ([`CONFIRM_BELOW`] by default).
    pub confirm_below: f32,
    /// When a second, free decoding checks the grammar-constrained one.
    pub second_pass: SecondPass,
}

/// Runs every utterance of the input through the session; true when all went well.
pub async fn run(parley: &Parley, input: Input, options: &VoiceOptions) -> Result<bool, VoiceError> {
    let services = parley.services();
    let sources =
        super::watch::Sources { rollouts: services.orchestrator.subscribe(), fleet: services.poller.events() };
    let backend =
        Backend::Local { session: parley.session(Actor::local("voice")), services: std::sync::Arc::clone(services) };
    run_with(backend, &services.grammar, services.topology.snapshot(), sources, input, options).await
}

/// [`run`] as a client of `parley serve`: `grammar` and `catalog` are this client's
/// configuration (the intents and the extension catalog), the fleet is the server's.
/// Rollouts a turn starts run in the server and go on after the input ends.
pub async fn run_client(
    client: &Client,
    grammar: &Grammar,
    catalog: std::sync::Arc<crate::topology::Catalog>,
    input: Input,
    options: &VoiceOptions,
) -> Result<bool, VoiceError> {
    // Subscribed before the first turn, so nothing a turn starts is missed.
    let mut events = client.events().await?;
    let topo = client.topology(catalog).await?;
    let (rollouts, _) = tokio::sync::broadcast::channel(1024);
    let (fleet, _) = tokio::sync::broadcast::channel(1024);
    let sources = super::watch::Sources { rollouts: rollouts.subscribe(), fleet: fleet.subscribe() };
    let pump = tokio::spawn(async move {
        while let Some(event) = events.next_event().await {
            match event {
                ServerEvent::Rollout(e) => drop(rollouts.send(e)),
                ServerEvent::Fleet { event, .. } => drop(fleet.send(event)),
                ServerEvent::Lagged { missed } => tracing::warn!(missed, "voice missed server events"),
                ServerEvent::Shutdown(_) => break,
                ServerEvent::Routing(_) => {}
            }
        }
    });
    let session = format!("voice-{:016x}-{}", rand::random::<u64>(), std::process::id());
    let backend = Backend::Server { client: client.clone(), session, watching: None };
    let ok = run_with(backend, grammar, topo, sources, input, options).await;
    pump.abort();
    ok
}

async fn run_with(
    backend: Backend,
    parser: &Grammar,
    topo: std::sync::Arc<Topology>,
    sources: super::watch::Sources,
    input: Input,
    options: &VoiceOptions,
) -> Result<bool, VoiceError> {
    let model = options.model.clone();
    let beam = options.beam;
    let transcriber = tokio::task::spawn_blocking(move || Transcriber::load(&model).map(|t| t.with_beam(beam)))
        .await
        .map_err(|e| VoiceError::Usage(format!("model loading stopped: {e}")))??;
    let transcriber = std::sync::Arc::new(transcriber);
    let vocab = crate::intent::Vocabulary::from_topology(&topo);
    let prompt = resolve::initial_prompt(&vocab);
    let resolver = Resolver::new(&vocab);
    let grammar = match &options.grammar {
        Some(g) => Some(std::sync::Arc::new(
            Matcher::compile(g, &Slots::from_topology(&topo)).map_err(|e| VoiceError::Usage(e.to_string()))?,
        )),
        None => None,
    };
    let (watching_tx, watching_rx) = tokio::sync::watch::channel(None);
    let mut turn = Turns {
        backend,
        pending: None,
        ok: true,
        source: None,
        grammar_vocab: vocab.clone(),
        grammar,
        parser,
        watching: watching_tx,
    };
    let speaker = if options.speak { Some(Speaker::find()) } else { None };
    let announcer = announcer(sources, watching_rx, options.json, speaker);

    let mut segmenter = Segmenter::new(VadSettings::default());
    let mut utterances: Vec<Vec<f32>> = Vec::new();
    match input {
        Input::Files(paths) => {
            for path in paths {
                let samples = audio::load_wav(&path)?;
                utterances.extend(segmenter.push(&samples));
                utterances.extend(segmenter.finish());
                turn.source = Some(path.display().to_string());
                for u in utterances.drain(..) {
                    turn.utterance(&transcriber, &u, &prompt, &resolver, options, speaker.as_ref()).await?;
                }
            }
        }
        Input::StdinPcm => {
            use tokio::io::AsyncReadExt as _;
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 32_000];
            let mut carry: Option<u8> = None;
            loop {
                let n = stdin.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                let mut bytes: Vec<u8> = carry.take().into_iter().collect();
                bytes.extend_from_slice(&buf[..n]);
                if bytes.len() % 2 == 1 {
                    carry = bytes.pop();
                }
                for u in segmenter.push(&audio::pcm_s16le(&bytes)) {
                    turn.utterance(&transcriber, &u, &prompt, &resolver, options, speaker.as_ref()).await?;
                }
            }
            if let Some(u) = segmenter.finish() {
                turn.utterance(&transcriber, &u, &prompt, &resolver, options, speaker.as_ref()).await?;
            }
        }
        Input::Capture(mut capture) => {
            while let Some(samples) = capture.next().await {
                for u in segmenter.push(&samples) {
                    turn.utterance(&transcriber, &u, &prompt, &resolver, options, speaker.as_ref()).await?;
                }
            }
            if let Some(u) = segmenter.finish() {
                turn.utterance(&transcriber, &u, &prompt, &resolver, options, speaker.as_ref()).await?;
            }
        }
    }
    turn.backend.settle().await;
    announcer.finish().await;
    Ok(turn.ok)
}

/// While the operator watches, each change is printed (one JSON line
/// `{"announcement": ...}` with --json) and spoken with --speak, between turns.
fn announcer(
    sources: super::watch::Sources,
    watching: tokio::sync::watch::Receiver<Option<crate::ops::Operation>>,
    json: bool,
    speaker: Option<Speaker>,
) -> super::watch::Announcer {
    let sink: super::watch::Sink = std::sync::Arc::new(move |line: String| {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout must not stop the session; the turns will report it.
        let _ =
            if json { writeln!(stdout, "{}", json!({"announcement": line})) } else { writeln!(stdout, "» {line}\n") };
        let _ = stdout.flush();
        drop(stdout);
        if let Some(s) = speaker {
            s.say(&line);
        }
    });
    super::watch::Announcer::spawn(sources, watching, sink)
}

/// The second, unconstrained decoding of an utterance.
struct FreePass {
    transcript: String,
    /// Through the resolver, as the parser reads free text.
    words: String,
    op: Option<Operation>,
    seconds: f64,
}

struct Turns<'p> {
    backend: Backend,
    /// Reads what the words mean (the same grammar the dialog session parses with).
    parser: &'p Grammar,
    grammar_vocab: crate::intent::Vocabulary,
    /// The spoken grammar compiled for this fleet (None: free transcription).
    grammar: Option<std::sync::Arc<Matcher>>,
    /// The file an utterance came from, reported with it.
    source: Option<String>,
    /// A low-confidence transcript waiting for "yes".
    pending: Option<String>,
    ok: bool,
    /// What the session watches, for the announcer.
    watching: tokio::sync::watch::Sender<Option<crate::ops::Operation>>,
}

impl Turns<'_> {
    async fn utterance(
        &mut self,
        transcriber: &std::sync::Arc<Transcriber>,
        samples: &[f32],
        prompt: &str,
        resolver: &Resolver,
        options: &VoiceOptions,
        speaker: Option<&Speaker>,
    ) -> Result<(), VoiceError> {
        let t = transcriber.clone();
        let constrained = self.grammar.is_some();
        let (audio, prompt_owned, grammar) = (samples.to_vec(), prompt.to_string(), self.grammar.clone());
        let heard = tokio::task::spawn_blocking(move || t.transcribe(&audio, &prompt_owned, grammar.as_deref()))
            .await
            .map_err(|e| VoiceError::Usage(format!("transcription stopped: {e}")))??;
        // Under the grammar every word is already one Parley knows; the resolver's
        // guesses would only undo the constraint ("ten" is not "then").
        let mut text = if constrained { resolve::normalise(&heard.text) } else { resolver.resolve(&heard.text) };
        if options.wake_word {
            match text.strip_prefix("parley") {
                Some(rest) => text = rest.trim_start_matches([',', ' ']).to_string(),
                None => return Ok(()),
            }
        }
        if text.trim().is_empty() {
            return Ok(());
        }
        // What the words mean, whatever the session then does with them: reported
        // with every turn so a mishearing can be judged (and measured).
        let parse = |words: &str| self.parser.parse(words, &self.grammar_vocab).operation;
        let understood = parse(&text);
        // The grammar lets Whisper write only commands, so the constrained pass always
        // finds one; whether the audio supports it is asked again without the
        // grammar (the gate, `voice::gate`, weighs the two).
        let unsure = heard.confidence < options.confirm_below;
        let second = constrained
            && understood.is_some()
            && match options.second_pass {
                SecondPass::Always => true,
                SecondPass::WhenUnsure => unsure,
                SecondPass::Never => false,
            };
        let free = if second {
            let t = transcriber.clone();
            let (samples, prompt_owned) = (samples.to_vec(), prompt.to_string());
            let free = tokio::task::spawn_blocking(move || t.transcribe(&samples, &prompt_owned, None))
                .await
                .map_err(|e| VoiceError::Usage(format!("transcription stopped: {e}")))??;
            let words = resolver.resolve(&free.text);
            let op = parse(&words);
            Some(FreePass { transcript: free.text, words, op, seconds: free.seconds })
        } else {
            None
        };
        let verdict = gate::decide(
            &gate::Heard {
                words: &text,
                confidence: heard.confidence,
                understood: understood.as_ref(),
                free: free.as_ref().map(|f| (f.words.as_str(), f.op.as_ref())),
            },
            options.confirm_below,
        );
        let agrees = free.as_ref().is_some_and(|f| f.op.is_some() && f.op == understood);
        let second_json = free.as_ref().map(|f| {
            json!({"transcript": f.transcript, "heard": f.words, "understood": f.op, "agrees": agrees,
                "seconds": f.seconds})
        });
        // What a held turn proposes: the reading the gate preferred.
        let proposed = if verdict.words() == text { understood.clone() } else { parse(verdict.words()) };
        let held = |message: String| {
            json!({"operation": null, "proposed": proposed, "understood": understood, "needs_confirmation": true,
                "message": message, "transcript": heard.text, "heard": text, "confidence": heard.confidence,
                "second_pass": second_json, "transcribe_seconds": heard.seconds})
        };
        let reply = match &verdict {
            gate::Verdict::Cancel { .. } if self.pending.take().is_some() => {
                let out = json!({"operation": null, "understood": understood,
                    "message": "Cancelled; nothing was done.", "transcript": heard.text, "heard": text,
                    "confidence": heard.confidence});
                return self.emit(out, options, speaker);
            }
            // A session question (a risky operation's read-back) is answered no.
            gate::Verdict::Cancel { words } => self.backend.handle(words).await,
            gate::Verdict::UnsureConfirmation { words } => {
                // What was held stays held: "cancel" misheard as "confirm" must not
                // start a rollout.
                return self.emit(held(gate::unsure_confirmation_message(words)), options, speaker);
            }
            gate::Verdict::Hold { words, alternative } => {
                // Nothing unsure changes anything; it replaces anything held before.
                self.pending = Some(words.clone());
                return self.emit(held(gate::held_message(words, alternative.as_deref())), options, speaker);
            }
            gate::Verdict::Act { words } => match self.pending.take() {
                Some(pending) if matches!(understood, Some(Operation::Confirm)) => self.backend.handle(&pending).await,
                // Something new, said clearly: whatever was held is dropped.
                _ => self.backend.handle(words).await,
            },
            gate::Verdict::AnswerUnsure { words, alternative } => {
                // A question is safe to answer, but never as if sure: the doubt comes
                // first and the other reading is offered after.
                self.pending = None;
                let mut reply = self.backend.handle(words).await;
                let mut message = format!("{}\n{}", gate::misheard_prefix(words), reply.message);
                if let Some(alt) = alternative {
                    message = format!("{message}\n{}", gate::misheard_follow_up(alt));
                    reply.follow_ups.insert(0, alt.clone());
                }
                reply.message = message;
                reply
            }
        };
        if matches!(reply.outcome, crate::reply::Outcome::Failed | crate::reply::Outcome::Infeasible) {
            self.ok = false;
        }
        self.watching.send_replace(self.backend.watching());
        let mut out = serde_json::to_value(&reply).unwrap_or_else(|_| json!({"message": reply.message}));
        if let Some(obj) = out.as_object_mut() {
            obj.insert("transcript".into(), json!(heard.text));
            obj.insert("heard".into(), json!(text));
            obj.insert("understood".into(), json!(understood));
            obj.insert("confidence".into(), json!(heard.confidence));
            obj.insert("transcribe_seconds".into(), json!(heard.seconds));
            obj.insert("second_pass".into(), json!(second_json));
            obj.insert("unsure".into(), json!(matches!(verdict, gate::Verdict::AnswerUnsure { .. })));
        }
        self.emit(out, options, speaker)
    }

    fn emit(
        &self,
        mut out: serde_json::Value,
        options: &VoiceOptions,
        speaker: Option<&Speaker>,
    ) -> Result<(), VoiceError> {
        if let (Some(obj), Some(src)) = (out.as_object_mut(), &self.source) {
            obj.insert("source".into(), json!(src));
        }
        let message = out.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_string();
        let mut stdout = std::io::stdout().lock();
        if options.json {
            writeln!(stdout, "{out}")?;
        } else {
            let heard = out.get("heard").and_then(|m| m.as_str()).unwrap_or_default();
            writeln!(stdout, "> {heard}\n{message}\n")?;
        }
        stdout.flush()?;
        if let Some(s) = speaker {
            s.say(&message);
        }
        Ok(())
    }
}

/// `--speak`: espeak-ng when it is installed; otherwise one clear notice.
#[derive(Debug, Clone, Copy)]
pub struct Speaker {
    available: bool,
}

impl Speaker {
    pub fn find() -> Speaker {
        let available = std::process::Command::new("espeak-ng")
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !available {
            eprintln!("--speak: espeak-ng is not installed, so replies are printed only (apt-get install espeak-ng).");
        }
        Speaker { available }
    }

    pub fn say(&self, text: &str) {
        if !self.available || text.is_empty() {
            return;
        }
        // Announcements are spoken from another thread; one sentence at a time, not over each other.
        static SPEAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = SPEAKING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Speaking is best effort: a failed speech synthesiser must not stop the session.
        let _ = std::process::Command::new("espeak-ng").args(["-s", "165", "--", text]).status();
    }
}
