//! The one answer type every front-end renders: the TUI and REPL as text and tables,
//! `chat --json` as JSON, Slack as Block Kit, voice as speech.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ops::Operation;

/// What became of a turn. Front-ends use it for exit codes and colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A question was answered or a read op ran.
    Answered,
    /// A slot is missing; the message asks for it.
    NeedsInput,
    /// A risky operation waits for yes/no.
    NeedsConfirmation,
    /// A mutating operation was started (a rollout runs in the background).
    Started,
    /// A mutating operation finished successfully.
    Done,
    /// The operation cannot be carried out; the message says why and what can.
    Infeasible,
    /// The speaker may not run the operation.
    Refused,
    /// It was attempted and failed.
    Failed,
    /// Nothing was understood.
    NotUnderstood,
    /// A pending operation was cancelled or expired.
    Cancelled,
}

impl Outcome {
    /// Whether a one-shot command should exit non-zero.
    pub fn is_failure(self) -> bool {
        matches!(self, Outcome::Infeasible | Outcome::Refused | Outcome::Failed | Outcome::NotUnderstood)
    }
}

/// A table for people: a title, column headers and rows of cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        Table { title: title.into(), columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }
}

/// A risky operation held for yes/no, as a front-end binds its answer to it: a
/// Slack button carries `id`, so an old button cannot answer a newer proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Unique to this proposal (random, so not reused after a restart).
    pub id: String,
    /// After this the yes/no is refused and nothing changes.
    pub expires_at: DateTime<Utc>,
    /// Who asked for it: only they (or an admin) may cancel it.
    pub proposer: String,
    /// What it would do, in one line.
    pub summary: String,
}

impl Proposal {
    pub fn new(proposer: &str, summary: &str, ttl: std::time::Duration) -> Proposal {
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
        Proposal {
            id: format!("{:016x}", rand::random::<u64>()),
            expires_at: Utc::now().checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC),
            proposer: proposer.to_string(),
            summary: summary.to_string(),
        }
    }
}

/// One turn's answer. Its JSON form is what `parley chat --json` prints per turn, and
/// what a `parley serve` client reads back (hence `Deserialize`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The operation understood this turn (null when nothing was).
    pub operation: Option<Operation>,
    /// Required slots still missing.
    pub missing: Vec<String>,
    /// Result of the feasibility check; null when nothing was checked.
    pub feasible: Option<bool>,
    pub needs_confirmation: bool,
    /// The proposal a yes/no now answers (with `needs_confirmation`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposal: Option<Proposal>,
    /// The reply an operator reads.
    pub message: String,
    /// Useful next utterances or questions.
    pub follow_ups: Vec<String>,
    /// The deployment this turn started or acted on.
    pub deployment: Option<String>,
    /// Structured data behind the message (rows, a plan, a report).
    pub details: Option<serde_json::Value>,
    /// A table to show beside the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<Table>,
    pub outcome: Outcome,
    /// `"llm"` when the language model, not the grammar, understood the utterance.
    #[serde(skip_serializing_if = "Option::is_none", default, deserialize_with = "understood_by")]
    pub understood_by: Option<&'static str>,
    /// Set when the reply is about health, installs or rollouts on agents that are a
    /// simulation (the demo fleet, `fleet simulate`); front-ends show its note once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulated: Option<crate::topology::Simulation>,
}

/// Only the names the dialog writes are read back; anything else is as good as absent.
fn understood_by<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'static str>, D::Error> {
    let name: Option<String> = Option::deserialize(d)?;
    Ok(name.filter(|n| n == "llm").map(|_| "llm"))
}

impl Reply {
    pub fn new(outcome: Outcome, message: impl Into<String>) -> Reply {
        Reply {
            operation: None,
            missing: Vec::new(),
            feasible: None,
            needs_confirmation: false,
            proposal: None,
            message: message.into(),
            follow_ups: Vec::new(),
            deployment: None,
            details: None,
            table: None,
            outcome,
            understood_by: None,
            simulated: None,
        }
    }

    pub fn with_operation(mut self, op: Option<Operation>) -> Reply {
        self.operation = op;
        self
    }

    pub fn with_follow_ups<I, S>(mut self, items: I) -> Reply
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.follow_ups = items.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_table(mut self, table: Table) -> Reply {
        self.table = Some(table);
        self
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Reply {
        self.details = Some(details);
        self
    }

    pub fn with_deployment(mut self, id: impl Into<String>) -> Reply {
        self.deployment = Some(id.into());
        self
    }

    /// The line to show under the message: that what it reports is simulated.
    pub fn simulation_note(&self) -> Option<String> {
        self.simulated.map(|s| s.note())
    }

    pub fn feasible(mut self, feasible: bool) -> Reply {
        self.feasible = Some(feasible);
        self
    }
}
