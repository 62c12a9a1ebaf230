//! Turns a bridge sends for the people it serves (the Slack bridge: one client, many
//! Slack users). Each turn names its speaker (`on_behalf_of`); the server decides
//! whether this client may speak for others and caps the role at its own
//! (docs/api.md, "Bridges").

use serde_json::{json, Value};

use super::fleet::{read_answer, TurnAnswer};
use super::{Client, ClientError};
use crate::ops::Role;

/// The person a bridge speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speaker {
    /// `SOURCE:ID`, as the server's audit log names them (`slack:U0123ABC`).
    pub user: String,
    /// The role the bridge's own configuration gives them.
    pub role: Role,
}

/// What the person said or clicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    Words(String),
    /// A Confirm (`yes`) or Cancel button bound to one proposal.
    Answer {
        proposal: String,
        yes: bool,
    },
}

impl Client {
    /// One turn of `session`, spoken by `speaker`, with the proposal that session
    /// waits for afterwards.
    pub async fn turn_for(
        &self,
        session: &str,
        said: &Said,
        frontend: &str,
        speaker: &Speaker,
    ) -> Result<TurnAnswer, ClientError> {
        let mut body = json!({
            "session": session,
            "frontend": frontend,
            "on_behalf_of": {"user": speaker.user, "role": speaker.role.as_str()},
        });
        match said {
            Said::Words(text) => body["utterance"] = Value::from(text.as_str()),
            Said::Answer { proposal, yes } => body["answer"] = json!({"proposal": proposal, "yes": yes}),
        }
        read_answer(self.post_turn(&body).await?)
    }
}
