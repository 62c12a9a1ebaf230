//! The language-model fallback: any OpenAI-compatible Chat Completions endpoint
//! (Ollama, llama.cpp server, vLLM, OpenAI) turns an utterance the grammar missed
//! into a typed [`Operation`].
//!
//! The model only proposes. Its answer is validated by the contract's deserialiser
//! ([`parse`]), then goes through the dialog's own path: references, missing slots,
//! roles, feasibility against the live fleet, and a read-back confirmation for
//! anything that mutates. Every failure is an [`LlmError`] the dialog turns into a
//! reply; nothing runs on a partial answer.
//!
//! Structured output is asked for as `response_format: json_schema`; a server that
//! rejects that is asked through a forced tool call, and one that rejects tools gets
//! the schema as text and its answer is searched for a JSON object. The first mode
//! that works is remembered.

mod client;
pub mod parse;
pub mod request;
pub mod schema;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

use crate::ops::Operation;
pub use request::{Input, Prompts};
use serde::Deserialize;

/// How structured output is asked of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LlmMode {
    /// Try `json_schema`, then tools, then plain text, and remember what worked.
    Auto,
    JsonSchema,
    Tools,
    Plain,
}

/// The `[llm]` section of the config file, resolved (`config` reads it). The key is read from the environment at load time
/// so that it never has to be written into a file.
#[derive(Clone, PartialEq)]
pub struct LlmConfig {
    /// Up to and including the version prefix, e.g. `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub mode: LlmMode,
    pub prompts_dir: Option<PathBuf>,
}

// Hand-written so that the key can never reach a log line through `{:?}`.
impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("mode", &self.mode)
            .field("prompts_dir", &self.prompts_dir)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    #[error("the language model did not answer in {} s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("could not reach the language model at {0}")]
    Connect(String),
    #[error("the language model is rate limited{}", match .retry_after {
        Some(d) => format!(" (it asks to wait {} s)", d.as_secs_f64().ceil()),
        None => String::new(),
    })]
    RateLimited { retry_after: Option<Duration> },
    #[error("the language model endpoint refused the request ({status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the language model endpoint failed ({status}): {message}")]
    Server { status: u16, message: String },
    #[error("the language model's answer was not a Chat Completions response: {0}")]
    BadResponse(String),
    #[error("the language model's answer was cut off")]
    Truncated,
    #[error("the language model did not answer with a JSON object")]
    NotJson,
    #[error("the language model declined: {0}")]
    Refused(String),
    #[error("the language model named an operation Parley does not have: `{name}`")]
    UnknownOp { name: String, suggestions: Vec<String> },
    #[error("the language model's operation does not fit the contract: {0}")]
    Invalid(String),
    #[error("prompts: {0}")]
    Prompts(String),
}

impl LlmError {
    /// The endpoint did not give an answer at all (as opposed to a useless one).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            LlmError::Timeout(_)
                | LlmError::Connect(_)
                | LlmError::RateLimited { .. }
                | LlmError::Rejected { .. }
                | LlmError::Server { .. }
                | LlmError::BadResponse(_)
        )
    }
}

/// How structured output is requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    JsonSchema,
    Tools,
    Plain,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::JsonSchema => "json_schema",
            Mode::Tools => "tools",
            Mode::Plain => "plain",
        }
    }

    /// The next style to try when the server refuses this one.
    fn fallback(self) -> Option<Mode> {
        match self {
            Mode::JsonSchema => Some(Mode::Tools),
            Mode::Tools => Some(Mode::Plain),
            Mode::Plain => None,
        }
    }

    /// Whether a 400's message blames this mode's part of the request.
    fn refused_by(self, message: &str) -> bool {
        let m = message.to_ascii_lowercase();
        match self {
            Mode::JsonSchema => m.contains("response_format") || m.contains("json_schema"),
            Mode::Tools => m.contains("tool") || m.contains("function"),
            Mode::Plain => false,
        }
    }

    fn code(self) -> u8 {
        match self {
            Mode::JsonSchema => 0,
            Mode::Tools => 1,
            Mode::Plain => 2,
        }
    }

    fn from_code(c: u8) -> Mode {
        match c {
            1 => Mode::Tools,
            2 => Mode::Plain,
            _ => Mode::JsonSchema,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured endpoint.
pub struct Llm {
    base_url: String,
    model: String,
    client: client::Client,
    prompts: Prompts,
    auto: bool,
    /// The mode in use ([`Mode::code`]); moves forward only, when the server refuses one.
    mode: AtomicU8,
}

/// What [`Llm::check`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    pub base_url: String,
    pub model: String,
    pub mode: Mode,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.mode {
            Mode::JsonSchema => "structured output via json_schema",
            Mode::Tools => "structured output via a tool call",
            Mode::Plain => "no structured output; JSON is read from plain text",
        };
        write!(f, "{} answers (model {}): {how}", self.base_url, self.model)
    }
}

impl Llm {
    pub fn new(config: &LlmConfig) -> Result<Llm, LlmError> {
        let prompts = match &config.prompts_dir {
            Some(dir) => Prompts::load_dir(dir)?,
            None => Prompts::embedded()?,
        };
        let (auto, start) = match config.mode {
            LlmMode::Auto => (true, Mode::JsonSchema),
            LlmMode::JsonSchema => (false, Mode::JsonSchema),
            LlmMode::Tools => (false, Mode::Tools),
            LlmMode::Plain => (false, Mode::Plain),
        };
        Ok(Llm {
            base_url: config.base_url.clone(),
            model: config.model.clone(),
            client: client::Client::new(&config.base_url, config.api_key.clone(), config.timeout)?,
            prompts,
            auto,
            mode: AtomicU8::new(start.code()),
        })
    }

    /// The structured-output mode requests use now.
    pub fn mode(&self) -> Mode {
        Mode::from_code(self.mode.load(Ordering::Relaxed))
    }

    /// The operation the model reads in `input` (`None`: it reads none).
    pub async fn understand(&self, input: &Input<'_>) -> Result<Option<Operation>, LlmError> {
        let mut mode = self.mode();
        loop {
            let body = request::build(&self.prompts, &self.model, mode, input);
            match self.client.post(&body).await {
                Ok(response) => return parse::operation(&response),
                Err(LlmError::Rejected { status: 400, message }) if self.auto && mode.refused_by(&message) => {
                    match mode.fallback() {
                        Some(next) => {
                            tracing::info!(from = %mode, to = %next, "the language model refused a structured-output mode");
                            self.mode.fetch_max(next.code(), Ordering::Relaxed);
                            mode = next;
                        }
                        None => return Err(LlmError::Rejected { status: 400, message }),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Asks a tiny question in each mode (or only the configured one) and reports the
    /// first that gives a valid answer. An error means the endpoint does not answer.
    pub async fn check(&self) -> Result<CheckReport, LlmError> {
        let modes: Vec<Mode> =
            if self.auto { vec![Mode::JsonSchema, Mode::Tools, Mode::Plain] } else { vec![self.mode()] };
        let mut last = None;
        for mode in modes {
            let body = request::probe(&self.prompts, &self.model, mode);
            match self.client.post(&body).await {
                Ok(response) => match parse::operation(&response) {
                    Ok(_) => {
                        return Ok(CheckReport { base_url: self.base_url.clone(), model: self.model.clone(), mode })
                    }
                    // It answered, but this mode's answer was not usable: try the next.
                    Err(e) => last = Some(e),
                },
                Err(e @ LlmError::Rejected { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(LlmError::NotJson))
    }
}

/// The dialog context the model sees: what "it" and "there" refer to, and what the
/// grammar made of the utterance, if anything.
pub fn context(
    deployment: Option<&str>,
    agent: Option<&str>,
    scope: Option<String>,
    grammar: Option<&Operation>,
    missing: &[String],
) -> Value {
    let mut map = serde_json::Map::new();
    if let Some(d) = deployment {
        map.insert("current_deployment".into(), json!(d));
    }
    if let Some(a) = agent {
        map.insert("current_agent".into(), json!(a));
    }
    if let Some(s) = scope {
        map.insert("current_scope".into(), json!(s));
    }
    if let Some(op) = grammar {
        map.insert("grammar_guess".into(), op.to_json());
        map.insert("grammar_missing".into(), json!(missing));
    }
    Value::Object(map)
}
