//! `parley ask "<utterance>"`: one turn from the command line. A risky operation asks
//! for yes/no on the terminal (or takes `--yes`); a rollout is followed to the end
//! with a progress bar, and the exit code says whether it worked.
//!
//! With `--json`, standard output is exactly one JSON document: the turn that decides
//! the exit code (for a rollout that was followed, how it ended). Without `--yes` a
//! risky operation is not asked about on the terminal then: its proposal is the
//! document, with a `hint` to pass `--yes`, and the exit code is 1.

use std::io::{BufRead, IsTerminal, Write};

use crate::app::Parley;
use crate::ops::{Actor, DeploymentStatus};
use crate::reply::{Outcome, Reply};

use super::out::Out;
use super::text;

pub struct AskOptions {
    /// Confirm risky operations without asking.
    pub yes: bool,
    /// Print the reply as the JSON of `chat --json` instead of text.
    pub json: bool,
}

/// What `ask --json` says beside a proposal it did not carry out.
pub const NOT_CONFIRMED_HINT: &str =
    "Not executed: this needs confirmation. Run the same command with --yes to confirm it.";

/// Runs one utterance; `Ok(true)` when it succeeded.
pub async fn ask(parley: &Parley, actor: Actor, utterance: &str, options: &AskOptions) -> std::io::Result<bool> {
    let mut out = Out::new();
    let mut session = parley.session(actor);
    let mut reply = session.handle(utterance).await;
    if reply.needs_confirmation {
        if options.json && !options.yes {
            out.write(&unconfirmed_json(&reply)?)?;
            return Ok(false);
        }
        if !options.json {
            // The prompt is the question: numbered "[1] yes [2] no" would offer
            // answers it does not take.
            let mut proposal = reply.clone();
            proposal.follow_ups.clear();
            out.write(&text::render(&proposal))?;
        }
        let confirmed = options.yes || prompt_yes_no()?;
        reply = session.handle(if confirmed { "yes" } else { "no" }).await;
    }
    if reply.outcome == Outcome::Started {
        if let Some(id) = reply.deployment.clone() {
            if !options.json {
                out.write(&text::render(&reply))?;
            }
            follow(parley, &id, options.json).await;
            parley.services().poller.refresh().await;
            let done = session.handle(&format!("show deployment {id}")).await;
            show(&mut out, &done, options)?;
            let ok = parley
                .services()
                .registry
                .deployment_by_name(&id)
                .await
                .ok()
                .flatten()
                .is_some_and(|d| d.status == DeploymentStatus::Succeeded);
            return Ok(ok);
        }
    }
    show(&mut out, &reply, options)?;
    Ok(!reply.outcome.is_failure()
        && !matches!(reply.outcome, Outcome::NeedsInput | Outcome::NeedsConfirmation | Outcome::Cancelled))
}

pub(crate) fn show(out: &mut Out, reply: &Reply, options: &AskOptions) -> std::io::Result<()> {
    if options.json {
        let mut line = serde_json::to_string(reply).map_err(std::io::Error::other)?;
        line.push('\n');
        out.write(&line)
    } else {
        out.write(&text::render(reply))
    }
}

/// The proposal as `ask --json` prints it when `--yes` was not given: the turn as
/// `chat --json` has it, but with no follow-ups ("yes" and "no" answer a
/// conversation, and this one ends here) and a hint saying how to confirm.
pub(crate) fn unconfirmed_json(reply: &Reply) -> std::io::Result<String> {
    let mut value = serde_json::to_value(reply).map_err(std::io::Error::other)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("follow_ups".into(), serde_json::json!([]));
        map.insert("hint".into(), serde_json::json!(NOT_CONFIRMED_HINT));
    }
    Ok(value.to_string() + "\n")
}

/// An answer to `Proceed? [y/N]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Yes,
    No,
    /// Anything else: never taken as either.
    Unclear(String),
}

impl Answer {
    /// Exactly what the prompt shows: y or yes, n or no, and Enter (the capital N) for no.
    fn parse(line: &str) -> Answer {
        let line = line.trim();
        match line.to_lowercase().as_str() {
            "y" | "yes" => Answer::Yes,
            "" | "n" | "no" => Answer::No,
            _ => Answer::Unclear(line.to_string()),
        }
    }
}

const PROMPT: &str = "Proceed? [y/N] ";
/// Times a terminal is asked before an answer that is not y or n counts as no.
const TRIES: usize = 3;

/// Reads yes/no from the terminal (asking again when the answer is neither), or the
/// first line of piped input. `Ok(true)` only for a yes; end of input is a no.
pub(crate) fn prompt_yes_no() -> std::io::Result<bool> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    for _ in 0..TRIES {
        if interactive {
            eprint!("{PROMPT}");
            std::io::stderr().flush()?;
        }
        let mut raw = Vec::new();
        if stdin.lock().read_until(b'\n', &mut raw)? == 0 {
            return Ok(false);
        }
        match Answer::parse(&String::from_utf8_lossy(&raw)) {
            Answer::Yes => return Ok(true),
            Answer::No => return Ok(false),
            Answer::Unclear(what) => {
                eprintln!("\"{what}\" is not an answer: type y to proceed, or n (or just Enter) to cancel.");
                // A script gets one line to answer with; only a person is asked again.
                if !interactive {
                    break;
                }
            }
        }
    }
    eprintln!("No yes or no was given, so nothing is done.");
    Ok(false)
}

/// Shows the rollout's progress on standard error until it ends.
async fn follow(parley: &Parley, id: &str, quiet: bool) {
    let orchestrator = &parley.services().orchestrator;
    let mut events = orchestrator.subscribe();
    let total =
        parley.services().registry.deployment_by_name(id).await.ok().flatten().map(|d| d.targets.len()).unwrap_or(0);
    let bar = if quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} agents  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(id.to_string());
    let wait = orchestrator.wait(id);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            _ = &mut wait => break,
            event = events.recv() => match event {
                Ok(event) if crate::orchestrate::event_deployment(&event) == id => {
                    if let crate::orchestrate::RolloutEvent::AgentInstalled { .. } = event {
                        bar.inc(1);
                    }
                    if let Some(line) = crate::orchestrate::announce(&event) {
                        bar.set_message(line);
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => { (&mut wait).await; break; }
            }
        }
    }
    bar.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::Answer;

    #[test]
    fn the_prompt_takes_exactly_what_it_shows() {
        for yes in ["y", "Y", "yes", " Yes\n"] {
            assert_eq!(Answer::parse(yes), Answer::Yes, "{yes:?}");
        }
        for no in ["", "\n", "n", "N", "no", "NO"] {
            assert_eq!(Answer::parse(no), Answer::No, "{no:?}");
        }
        for other in ["1", "2", "yep", "sure", "y n", "ja"] {
            assert_eq!(Answer::parse(other), Answer::Unclear(other.to_string()), "{other:?}");
        }
    }
}
