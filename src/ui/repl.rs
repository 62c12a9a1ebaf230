//! `parley repl`: a line-oriented conversation for plain terminals, with history,
//! line editing, completion of fleet names, numbered follow-ups (type `1` to send the
//! first suggestion), and rollout progress printed above the prompt as it happens.
//!
//! [`repl_client`] is the same conversation as a client of `parley serve` (turns in
//! one server session, announcements from its event stream); leaving it leaves the
//! server's rollouts running and says so. [`repl`] runs in-process (`--in-process`).

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::{Arc, RwLock};

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, ExternalPrinter, Helper};
use tokio::sync::watch;

use crate::app::Parley;
use crate::client::Client;
use crate::config::Config;
use crate::ops::{Actor, Operation};
use crate::topology::poller::TopologyEvent;

use super::out::{reader_gone, Out};
use super::text;

/// Completion of agent, region, zone, extension and version names.
struct ReplHelper {
    words: Arc<RwLock<Vec<String>>>,
}

impl Completer for ReplHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = line.get(..pos).unwrap_or(line);
        let start = head.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
        let prefix = head.get(start..).unwrap_or("").to_lowercase();
        if prefix.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let words = self.words.read().map(|w| w.clone()).unwrap_or_default();
        let pairs = words
            .into_iter()
            .filter(|w| w.starts_with(&prefix))
            .map(|w| Pair { display: w.clone(), replacement: w })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ReplHelper {
    type Hint = String;
}
impl Highlighter for ReplHelper {
    fn highlight_prompt<'b, 's: 'b, 'p: 'b>(&'s self, prompt: &'p str, _default: bool) -> Cow<'b, str> {
        Cow::Borrowed(prompt)
    }
}
impl Validator for ReplHelper {}
impl Helper for ReplHelper {}

/// Runs the REPL until `exit`, `quit`, Ctrl-D or Ctrl-C.
pub async fn repl(parley: &Parley, config: &Config, actor: Actor) -> Result<(), ReadlineError> {
    let services = Arc::clone(parley.services());
    let mut session = parley.session(actor);
    session.announce_routing_live();
    let words = Arc::new(RwLock::new(session.vocabulary().words()));
    let mut rl: Editor<ReplHelper, DefaultHistory> = Editor::new()?;
    rl.set_helper(Some(ReplHelper { words: Arc::clone(&words) }));
    let history = config.history_path();
    if let Err(e) = rl.load_history(&history) {
        if !matches!(&e, ReadlineError::Io(io) if io.kind() == std::io::ErrorKind::NotFound) {
            tracing::warn!(path = %history.display(), error = %e, "could not read the REPL history");
        }
    }

    // Replies go through `Out`, so a reader that goes away (`| head`) ends the REPL
    // quietly instead of with an error.
    let mut out = Out::new();
    out.write(&format!(
        "Parley on {} agents in {} regions. Ask anything; `help` for examples, `exit` to leave.\n",
        services.topology.snapshot().agents().len(),
        services.topology.snapshot().regions().len()
    ))?;
    // Shown before the first prompt, so the first reply does not repeat it.
    if let Some(notice) = session.take_restart_notice() {
        out.write(&format!("{}\n", notice.message))?;
    }

    // Progress and announcements print above the prompt without breaking the line
    // being typed.
    let (watch_tx, watch_rx) = watch::channel::<Option<Operation>>(None);
    let mut printer: Box<dyn FnMut(String) -> bool + Send> = match rl.create_external_printer() {
        Ok(mut p) => Box::new(move |line| p.print(line).is_ok()),
        // Piped input has no line being edited to print above (and rustyline has no
        // printer without a terminal): announcements are plain lines of output.
        Err(_) => Box::new(|line: String| {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_ok()
        }),
    };
    let mut rollouts = services.orchestrator.subscribe();
    let mut fleet_events = services.poller.events();
    let mut routing = services.router.notices();
    let announcer = tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                e = rollouts.recv() => match e {
                    Ok(e) => crate::orchestrate::announce(&e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(_) => break,
                },
                n = routing.recv() => match n {
                    Ok(n) => Some(format!("routing: {n}")),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(_) => break,
                },
                e = fleet_events.recv() => match e {
                    Ok(e) if watch_rx.borrow().is_some() => Some(announce_fleet(&e)),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(_) => break,
                },
            };
            if let Some(line) = line {
                if !printer(format!("  » {line}\n")) {
                    break;
                }
            }
        }
    });

    let mut follow_ups: Vec<String> = Vec::new();
    loop {
        if out.gone() {
            break;
        }
        let read = tokio::task::block_in_place(|| rl.readline("parley> "));
        let line = match read {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            // The prompt could not be written: the reader of standard output has gone.
            Err(ReadlineError::Io(e)) if reader_gone(&e) => break,
            Err(e) => return Err(e),
        };
        let trimmed = line.trim();
        if matches!(trimmed, "exit" | "quit" | ":q") {
            break;
        }
        if trimmed.is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(trimmed);
        // A bare number picks that follow-up from the last reply.
        let utterance = match trimmed.parse::<usize>() {
            Ok(n) if n >= 1 && n <= follow_ups.len() => {
                let chosen = follow_ups[n - 1].clone();
                out.write(&format!("  > {chosen}\n"))?;
                chosen
            }
            _ => trimmed.to_string(),
        };
        let reply = session.handle(&utterance).await;
        out.write(&format!("{}\n", text::render(&reply)))?;
        follow_ups = reply.follow_ups.clone();
        let _ = watch_tx.send(session.watching().cloned());
        if let Ok(mut w) = words.write() {
            *w = session.vocabulary().words();
        }
    }
    announcer.abort();
    if let Err(e) = rl.save_history(&history) {
        tracing::warn!(path = %history.display(), error = %e, "could not save the REPL history");
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error(transparent)]
    Line(#[from] ReadlineError),
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The names completion offers, from the server's fleet snapshot (`GET /v1/fleet`):
/// agents, regions, zones and extensions.
fn fleet_words(fleet: &serde_json::Value) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    for agent in fleet["agents"].as_array().into_iter().flatten() {
        for key in ["name", "region", "zone"] {
            if let Some(w) = agent[key].as_str() {
                words.push(w.to_lowercase());
            }
        }
        if let Some(exts) = agent["extensions"].as_object() {
            words.extend(exts.keys().map(|k| k.to_lowercase()));
        }
    }
    words.sort();
    words.dedup();
    words
}

/// The REPL as a client of `parley serve`: the same prompts and answers as [`repl`],
/// each turn through the server in one session, progress and announcements from
/// the server's event stream. `exit`, Ctrl-D and Ctrl-C return at once; rollouts
/// keep running in the server, and the last line says which and how to follow them.
pub async fn repl_client(client: &Client, config: &Config) -> Result<(), ReplError> {
    let session = format!("repl-{:016x}-{}", rand::random::<u64>(), std::process::id());
    let fleet = client.get_json("/v1/fleet").await?;
    let words = Arc::new(RwLock::new(fleet_words(&fleet)));
    let mut rl: Editor<ReplHelper, DefaultHistory> = Editor::new()?;
    rl.set_helper(Some(ReplHelper { words: Arc::clone(&words) }));
    let history = config.history_path();
    if let Err(e) = rl.load_history(&history) {
        if !matches!(&e, ReadlineError::Io(io) if io.kind() == std::io::ErrorKind::NotFound) {
            tracing::warn!(path = %history.display(), error = %e, "could not read the REPL history");
        }
    }
    let mut out = Out::new();
    out.write(&format!(
        "Parley on {} agents in {} regions. Ask anything; `help` for examples, `exit` to leave.\n",
        fleet["agents"].as_array().map_or(0, Vec::len),
        fleet["regions"].as_array().map_or(0, Vec::len),
    ))?;

    // Subscribed before the first prompt, so nothing said after it is missed.
    let mut events = client.events().await?;
    let (watch_tx, watch_rx) = watch::channel(false);
    let mut printer: Box<dyn FnMut(String) -> bool + Send> = match rl.create_external_printer() {
        Ok(mut p) => Box::new(move |line| p.print(line).is_ok()),
        Err(_) => Box::new(|line: String| {
            let mut out = std::io::stdout().lock();
            out.write_all(line.as_bytes()).and_then(|()| out.flush()).is_ok()
        }),
    };
    let announcer = tokio::spawn(async move {
        while let Some(message) = events.next().await {
            let said = message["announcement"].as_str();
            let line = match message["type"].as_str() {
                Some("rollout") => said.map(str::to_string),
                Some("routing") => said.map(|n| format!("routing: {n}")),
                // Fleet changes only while the operator watches, as in-process.
                Some("fleet") if *watch_rx.borrow() => said.map(str::to_string),
                Some("shutdown") => said.map(str::to_string),
                _ => None,
            };
            if let Some(line) = line {
                if !printer(format!("  » {line}\n")) {
                    break;
                }
            }
        }
    });

    let mut follow_ups: Vec<String> = Vec::new();
    loop {
        if out.gone() {
            break;
        }
        let read = tokio::task::block_in_place(|| rl.readline("parley> "));
        let line = match read {
            Ok(line) => line,
            Err(ReadlineError::Interrupted | ReadlineError::Eof) => break,
            Err(ReadlineError::Io(e)) if reader_gone(&e) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if matches!(trimmed, "exit" | "quit" | ":q") {
            break;
        }
        if trimmed.is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(trimmed);
        let utterance = match trimmed.parse::<usize>() {
            Ok(n) if n >= 1 && n <= follow_ups.len() => {
                let chosen = follow_ups[n - 1].clone();
                out.write(&format!("  > {chosen}\n"))?;
                chosen
            }
            _ => trimmed.to_string(),
        };
        let reply = match client.turn(&session, &utterance, "repl").await {
            Ok(r) => r,
            // The server's own refusal (stopping, a bad request) is an answer to show;
            // the server being gone ends the REPL.
            Err(crate::client::ClientError::Api { message, .. }) => {
                out.write(&format!("{message}\n"))?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        out.write(&format!("{}\n", text::render(&reply)))?;
        follow_ups = reply.follow_ups.clone();
        // The session's `watch` holds until `unwatch`, as in-process.
        match &reply.operation {
            Some(Operation::Watch { .. }) => {
                let _ = watch_tx.send(true);
            }
            Some(Operation::Unwatch) => {
                let _ = watch_tx.send(false);
            }
            _ => {}
        }
    }
    announcer.abort();
    if let Err(e) = rl.save_history(&history) {
        tracing::warn!(path = %history.display(), error = %e, "could not save the REPL history");
    }
    // Leaving is at once: the rollouts are the server's. Say which go on.
    if let Ok(list) = client.get_json("/v1/deployments?limit=1000").await {
        let records: Vec<crate::registry::DeploymentRecord> =
            serde_json::from_value(list["deployments"].clone()).unwrap_or_default();
        if let Some(line) = text::rollouts_keep_running(&records, &client.url().to_string()) {
            out.write(&format!("{line}\n"))?;
        }
    }
    Ok(())
}

/// A fleet change as one short sentence, for `watch`.
pub fn announce_fleet(e: &TopologyEvent) -> String {
    match e {
        TopologyEvent::LivenessChanged { agent, region, from, to, at } => {
            format!("{} {agent} ({region}) is {} (was {})", at.format("%H:%M:%S"), to.as_str(), from.as_str())
        }
        TopologyEvent::RegionChanged { region, from, to, at } => {
            format!("{} region {region} is {} (was {})", at.format("%H:%M:%S"), to.as_str(), from.as_str())
        }
        TopologyEvent::Flapping { agent, region, changes, at } => {
            format!(
                "{} {agent} ({region}) is flapping ({changes} changes); quiet until it settles",
                at.format("%H:%M:%S")
            )
        }
        TopologyEvent::Settled { agent, region, liveness, at } => {
            format!("{} {agent} ({region}) has settled: {}", at.format("%H:%M:%S"), liveness.as_str())
        }
        TopologyEvent::Left { agent, region, at } => {
            format!("{} {agent} ({region}) deregistered and left the fleet", at.format("%H:%M:%S"))
        }
    }
}
