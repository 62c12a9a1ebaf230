//! `parley ask "<utterance>"`: one turn from the command line. A risky operation asks
//! for yes/no on the terminal (or takes `--yes`); a rollout is followed to the end
//! with a progress bar, and the exit code says whether it worked.

use std::io::{BufRead, IsTerminal, Write};

use crate::app::Parley;
use crate::ops::{Actor, DeploymentStatus};
use crate::reply::{Outcome, Reply};

use super::text;

pub struct AskOptions {
    /// Confirm risky operations without asking.
    pub yes: bool,
    /// Print the reply as the JSON of `chat --json` instead of text.
    pub json: bool,
}

/// Runs one utterance; `Ok(true)` when it succeeded.
pub async fn ask(parley: &Parley, actor: Actor, utterance: &str, options: &AskOptions) -> std::io::Result<bool> {
    let mut session = parley.session(actor);
    let mut reply = session.handle(utterance).await;
    if reply.needs_confirmation {
        show(&reply, options)?;
        let answer = if options.yes { "yes".to_string() } else { prompt_yes_no()? };
        reply = session.handle(&answer).await;
    }
    if reply.outcome == Outcome::Started {
        show(&reply, options)?;
        if let Some(id) = reply.deployment.clone() {
            follow(parley, &id, options.json).await;
            parley.services().poller.refresh().await;
            let done = session.handle(&format!("show deployment {id}")).await;
            show(&done, options)?;
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
    show(&reply, options)?;
    Ok(!reply.outcome.is_failure() && reply.outcome != Outcome::NeedsInput && reply.outcome != Outcome::Cancelled)
}

fn show(reply: &Reply, options: &AskOptions) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if options.json {
        writeln!(out, "{}", serde_json::to_string(reply).map_err(std::io::Error::other)?)
    } else {
        write!(out, "{}", text::render(reply))
    }
}

/// Reads yes/no from the terminal, or the first line of piped input.
fn prompt_yes_no() -> std::io::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Proceed? [y/N] ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    let line = line.trim();
    // Silence (end of input, or just Enter) is a no. The prompt offers [y/N], so its
    // `y` is the yes it asked for; the dialog's grammar takes no single letters.
    Ok(match line {
        "" => "no".to_string(),
        "y" | "Y" => "yes".to_string(),
        other => other.to_string(),
    })
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
