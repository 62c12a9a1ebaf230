//! `ask` and `chat` as clients of `parley serve`: the same words, flags, output and
//! exit codes as in-process (ui/ask.rs, ui/json.rs), but the turns are the server's
//! and so are the rollouts. `ask` follows a rollout it started or moved on (resume,
//! promote, retry) through the event stream until it ends, however it ends and
//! whoever ended it; Ctrl-C only detaches: the rollout goes on.

use std::io::IsTerminal as _;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

use super::ask::{self, AskOptions};
use super::out::Out;
use super::text;
use crate::client::{Client, ClientError};
use crate::ops::{DeploymentStatus, Operation};
use crate::reply::{Outcome, Reply};

/// How a client `ask` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AskEnd {
    /// Exit 0: answered, or the rollout succeeded.
    Succeeded,
    /// Exit 1: infeasible, refused, failed, not confirmed, or the rollout did not succeed.
    Failed,
    /// Exit 130: Ctrl-C while following; the rollout goes on.
    Detached,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A session id of this client's own.
fn session_id() -> String {
    format!("{:016x}-{}", rand::random::<u64>(), std::process::id())
}

/// Whether the turn set a rollout going that `ask` should follow to its end.
fn moves_a_rollout(reply: &Reply) -> bool {
    match reply.outcome {
        Outcome::Started => true,
        Outcome::Done => matches!(
            reply.operation,
            Some(Operation::Resume { .. } | Operation::Promote { .. } | Operation::Retry { .. })
        ),
        _ => false,
    }
}

pub async fn ask(client: &Client, utterance: &str, options: &AskOptions) -> Result<AskEnd, RemoteError> {
    let mut out = Out::new();
    let session = session_id();
    let mut reply = client.turn(&session, utterance, "ask").await?;
    if reply.needs_confirmation {
        if options.json && !options.yes {
            out.write(&ask::unconfirmed_json(&reply)?)?;
            return Ok(AskEnd::Failed);
        }
        if !options.json {
            let mut proposal = reply.clone();
            proposal.follow_ups.clear();
            out.write(&text::render(&proposal))?;
        }
        let confirmed = options.yes || ask::prompt_yes_no()?;
        reply = client.turn(&session, if confirmed { "yes" } else { "no" }, "ask").await?;
    }
    if let Some(id) = reply.deployment.clone().filter(|_| moves_a_rollout(&reply)) {
        if !options.json {
            out.write(&text::render(&reply))?;
        }
        let followed = follow(client, &id, options.json).await?;
        if let Followed::Lost = followed {
            // The server is stopping or gone: say where things stand, from it if it still answers.
            eprintln!(
                "Lost the Parley server while following {id}; the server carries it on when it is back: parley ask \"show deployment {id}\""
            );
            if let Ok(done) = client.turn(&session, &format!("show deployment {id}"), "ask").await {
                ask::show(&mut out, &done, options)?;
            }
            return Ok(AskEnd::Failed);
        }
        let done = client.turn(&session, &format!("show deployment {id}"), "ask").await?;
        if let Followed::Detached = followed {
            eprintln!(
                "Detached from {id}: it keeps running on the server. See how it ends with: parley ask \"show deployment {id}\""
            );
            ask::show(&mut out, &done, options)?;
            return Ok(AskEnd::Detached);
        }
        ask::show(&mut out, &done, options)?;
        let status = deployment_status(client, &id).await?;
        return Ok(if status == Some(DeploymentStatus::Succeeded) { AskEnd::Succeeded } else { AskEnd::Failed });
    }
    ask::show(&mut out, &reply, options)?;
    let ok = !reply.outcome.is_failure()
        && !matches!(reply.outcome, Outcome::NeedsInput | Outcome::NeedsConfirmation | Outcome::Cancelled);
    Ok(if ok { AskEnd::Succeeded } else { AskEnd::Failed })
}

async fn deployment_status(client: &Client, id: &str) -> Result<Option<DeploymentStatus>, ClientError> {
    let rec = client.deployment(id).await?;
    Ok(serde_json::from_value(rec["status"].clone()).ok())
}

enum Followed {
    Ended,
    Detached,
    /// The server went away (stopped or died) before the rollout ended.
    Lost,
}

/// Shows the rollout's progress on standard error until it ends (or Ctrl-C).
async fn follow(client: &Client, id: &str, quiet: bool) -> Result<Followed, ClientError> {
    // Subscribed first, then the record read: an end between the two is in the stream.
    let mut events = client.events().await?;
    let rec = client.deployment(id).await?;
    let ended = |rec: &serde_json::Value| {
        serde_json::from_value::<DeploymentStatus>(rec["status"].clone()).map(|s| !s.is_active()).unwrap_or(false)
    };
    if ended(&rec) {
        return Ok(Followed::Ended);
    }
    let targets = rec["targets"].as_array().cloned().unwrap_or_default();
    let installed = targets.iter().filter(|t| t["state"] == "installed").count();
    let bar = if quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(targets.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} agents  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(id.to_string());
    bar.set_position(installed as u64);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let result = loop {
        let message = tokio::select! {
            _ = &mut interrupted => break Followed::Detached,
            m = events.next() => m,
        };
        let Some(message) = message else { break Followed::Lost };
        match message["type"].as_str() {
            Some("rollout") if message["deployment"] == id => {
                let event = &message["event"];
                if event["event"] == "agent_installed" {
                    bar.inc(1);
                }
                if let Some(line) = message["announcement"].as_str() {
                    bar.set_message(line.to_string());
                }
                if event["event"] == "finished" {
                    break Followed::Ended;
                }
            }
            // Events were lost: the record says whether the end was among them.
            Some("lagged") => {
                let now = client.deployment(id).await?;
                if ended(&now) {
                    break Followed::Ended;
                }
            }
            Some("shutdown") => break Followed::Lost,
            _ => {}
        }
    };
    bar.finish_and_clear();
    Ok(result)
}

/// `chat [--json]` as a client: one turn per input line, in one server session.
/// Rollouts are the server's: the end of input ends the client, not them.
pub async fn chat(client: &Client, json: bool) -> Result<(), RemoteError> {
    let frontend = if json { "chat-json" } else { "chat" };
    let session = session_id();
    let mut input = BufReader::new(tokio::io::stdin());
    let mut out = tokio::io::stdout();
    let mut raw = Vec::new();
    loop {
        raw.clear();
        if input.read_until(b'\n', &mut raw).await? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&raw);
        let reply = client.turn(&session, line.trim_end_matches(['\n', '\r']), frontend).await?;
        let text = if json {
            let mut line = serde_json::to_string(&reply).map_err(std::io::Error::other)?;
            line.push('\n');
            line
        } else {
            text::render(&reply) + "\n"
        };
        let written = match out.write_all(text.as_bytes()).await {
            Ok(()) => out.flush().await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => {}
            Err(e) if super::out::reader_gone(&e) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
