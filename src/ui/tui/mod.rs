//! `parley` (and `parley tui`): the terminal UI, in ratatui over crossterm.
//!
//! The shape follows gitui and bottom: [`state::App`] holds what the screen shows,
//! [`input`] turns keys into changes of it (or an [`input::Action`]), and
//! [`render::render`] draws it as a pure function. This module is the event loop
//! that joins them to the outside: the dialog session runs in its own task and
//! answers over a channel, the registry is read by another, and rollout and fleet
//! events arrive by broadcast, so no keystroke ever waits for the fleet.

pub mod input;
pub mod render;
pub mod state;

use std::io::{self, Stdout};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{Event, EventStream};
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use futures::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::{broadcast, mpsc};

use crate::app::Parley;
use crate::config::Config;
use crate::ops::Actor;
use crate::registry::{DeploymentFilter, Registry};
use crate::reply::Reply;
use crate::topology::poller::TopologyEvent;

use input::Action;
use state::App;

/// How often the screen looks at the topology snapshot (a pointer compare when
/// nothing changed).
const TICK: Duration = Duration::from_millis(250);
/// Sparklines take one sample per this many ticks.
const SAMPLE_EVERY: u32 = 4;
/// Deployments the pane lists.
const DEPLOYMENTS_SHOWN: u32 = 20;

/// The session's answer to one utterance, with what the UI needs beside it.
struct Answer {
    reply: Reply,
    /// When the yes/no the session waits for was asked, if it waits for one.
    confirmation: Option<std::time::Instant>,
    words: Vec<String>,
}

/// Restores the terminal when dropped, on every way out of [`run`] including `?`.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<(TerminalGuard, Terminal<CrosstermBackend<Stdout>>)> {
        install_panic_hook();
        enable_raw_mode()?;
        let guard = TerminalGuard;
        crossterm::execute!(io::stdout(), EnterAlternateScreen)?;
        let terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        Ok((guard, terminal))
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = crossterm::execute!(io::stdout(), LeaveAlternateScreen, crossterm::cursor::Show);
}

/// A panic would otherwise print into the alternate screen and leave the terminal raw;
/// restore first so the message is readable, then let the usual hook report it.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
}

/// Where the TUI keeps its input history.
pub fn history_path(config: &Config) -> PathBuf {
    config.data_dir.join("tui-history.txt")
}

pub fn load_history(path: &Path) -> Vec<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => text.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect(),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "could not read the TUI history");
            }
            Vec::new()
        }
    }
}

fn save_history(path: &Path, history: &[String]) {
    let skip = history.len().saturating_sub(state::HISTORY_LEN);
    let mut text = history[skip..].join("\n");
    text.push('\n');
    if let Err(e) = std::fs::write(path, text) {
        tracing::warn!(path = %path.display(), error = %e, "could not save the TUI history");
    }
}

/// Lists deployments whenever asked; asks coalesce because the channel holds one.
fn spawn_deployment_reader(
    registry: Registry,
    mut asks: mpsc::Receiver<()>,
    out: mpsc::Sender<Vec<crate::registry::DeploymentRecord>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let filter = DeploymentFilter { limit: Some(DEPLOYMENTS_SHOWN), ..Default::default() };
        while asks.recv().await.is_some() {
            match registry.list_deployments(&filter).await {
                Ok(list) => {
                    if out.send(list).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list deployments for the TUI"),
            }
        }
    })
}

/// Runs the terminal UI until the operator quits.
pub async fn run(parley: &Parley, config: &Config, actor: Actor) -> io::Result<()> {
    let services = Arc::clone(parley.services());
    let mut app = App::new(services.topology.snapshot(), services.thresholds);
    let history_file = history_path(config);
    app.input.history = load_history(&history_file);
    app.sample_series();
    for d in parley.interrupted() {
        if d.status == crate::ops::DeploymentStatus::RollingBack {
            let why = d.reason.as_deref().unwrap_or("returning its agents");
            app.notice(format!("{} was rolling back when Parley stopped; finishing it now: {why}", d.name));
            continue;
        }
        app.notice(format!(
            "{} was interrupted ({}); say \"resume {}\" or \"roll back {}\".",
            d.name,
            d.reason.as_deref().unwrap_or("Parley stopped"),
            d.name,
            d.name
        ));
    }

    let mut session = parley.session(actor);
    session.announce_routing_live();
    app.set_words(session.vocabulary().words());
    let (say_tx, mut say_rx) = mpsc::channel::<String>(16);
    let (answer_tx, mut answer_rx) = mpsc::channel::<Answer>(16);
    let session_task = tokio::spawn(async move {
        while let Some(utterance) = say_rx.recv().await {
            let reply = session.handle(&utterance).await;
            let answer =
                Answer { reply, confirmation: session.confirmation_asked(), words: session.vocabulary().words() };
            if answer_tx.send(answer).await.is_err() {
                return;
            }
        }
    });

    let (ask_tx, ask_rx) = mpsc::channel::<()>(1);
    let (list_tx, mut list_rx) = mpsc::channel(4);
    let reader = spawn_deployment_reader(services.registry.clone(), ask_rx, list_tx);
    let _ = ask_tx.try_send(());

    // Push-to-talk: the tiny.en model installed in the data directory (`parley voice
    // model install`), loaded on the first press.
    let talker = crate::voice::ptt::PushToTalk::new(
        crate::voice::provision::models_dir(&config.data_dir).join("ggml-tiny.en.bin"),
        config.intents_dir.clone(),
    );
    let (talk_tx, mut talk_rx) = mpsc::channel::<crate::voice::ptt::TalkEvent>(4);
    let mut talk_stop: Option<tokio::sync::oneshot::Sender<()>> = None;

    let mut rollouts = services.orchestrator.subscribe();
    let mut fleet = services.poller.events();
    let mut routing = services.router.notices();
    let mut routing_open = true;
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tick_count: u32 = 0;
    let (mut rollouts_open, mut fleet_open) = (true, true);

    let (guard, mut terminal) = TerminalGuard::enter()?;
    let mut keys = EventStream::new();
    // Until when a y or n on the confirmation modal waits to be a lone keypress.
    let mut held_until: Option<tokio::time::Instant> = None;
    let result: io::Result<()> = loop {
        if let Ok(size) = terminal.size() {
            render::fit_confirm_scroll(&mut app, ratatui::layout::Rect::new(0, 0, size.width, size.height));
            render::fit_help_scroll(&mut app, ratatui::layout::Rect::new(0, 0, size.width, size.height));
        }
        if let Err(e) = terminal.draw(|f| render::render(f, &app)) {
            break Err(e);
        }
        let held = async {
            match held_until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // Keys first: a key already waiting must be seen before the hold on a y
            // or n runs out, or the first letter of a pasted word would answer.
            biased;
            key = keys.next() => match key {
                Some(Ok(Event::Key(k))) => match input::handle_key(&mut app, k) {
                    Action::Quit => break Ok(()),
                    Action::Hold => held_until = Some(tokio::time::Instant::now() + input::LONE_KEY),
                    Action::Submit(utterance) => {
                        held_until = None;
                        if say_tx.send(utterance).await.is_err() {
                            app.notice("The session stopped; restart Parley.");
                        }
                    }
                    Action::Talk => match app.talk {
                        state::Talk::Idle => {
                            talk_stop = Some(talker.start(services.topology.snapshot(), talk_tx.clone()));
                            app.talk = state::Talk::Listening;
                        }
                        // The second press ends the recording; what was said is transcribed.
                        state::Talk::Listening => {
                            if let Some(stop) = talk_stop.take() {
                                let _ = stop.send(());
                            }
                        }
                        state::Talk::Transcribing => {}
                    },
                    Action::None if !app.holding() => held_until = None,
                    Action::None => {}
                },
                // A resize needs nothing but the redraw at the top of the loop.
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            _ = held => {
                held_until = None;
                if let Action::Submit(utterance) = input::release_held(&mut app) {
                    if say_tx.send(utterance).await.is_err() {
                        app.notice("The session stopped; restart Parley.");
                    }
                }
            },
            talk = talk_rx.recv() => {
                // The audio library may write its diagnostics straight to the terminal
                // (ALSA without a sound card does); repaint everything, not just changes.
                if let Err(e) = terminal.clear() {
                    break Err(e);
                }
                if let Some(utterance) = talk.and_then(|t| app.on_talk(t)) {
                    if say_tx.send(utterance).await.is_err() {
                        app.notice("The session stopped; restart Parley.");
                    }
                }
            },
            answer = answer_rx.recv() => {
                if let Some(a) = answer {
                    app.set_words(a.words);
                    app.on_reply(a.reply, a.confirmation);
                    let _ = ask_tx.try_send(());
                }
            },
            event = rollouts.recv(), if rollouts_open => match event {
                Ok(e) => {
                    app.on_rollout_event(&e);
                    let _ = ask_tx.try_send(());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => { let _ = ask_tx.try_send(()); }
                Err(broadcast::error::RecvError::Closed) => rollouts_open = false,
            },
            event = fleet.recv(), if fleet_open => match event {
                // Single agents come and go in a big fleet; a region changing is news.
                Ok(e @ TopologyEvent::RegionChanged { .. }) => app.notice(super::repl::announce_fleet(&e)),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => fleet_open = false,
            },
            notice = routing.recv(), if routing_open => match notice {
                Ok(n) => app.notice(format!("routing: {n}")),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    app.notice(format!("routing: {n} announcements were missed; see `show routing`."))
                }
                Err(broadcast::error::RecvError::Closed) => routing_open = false,
            },
            list = list_rx.recv() => {
                if let Some(list) = list {
                    app.set_deployments(list);
                }
            },
            _ = ticks.tick() => {
                let snapshot = services.topology.snapshot();
                if !Arc::ptr_eq(&snapshot, &app.topology) {
                    app.set_topology(snapshot);
                }
                tick_count = tick_count.wrapping_add(1);
                if tick_count.is_multiple_of(SAMPLE_EVERY) {
                    app.sample_series();
                }
            },
        }
    };
    drop(terminal);
    drop(guard);
    save_history(&history_file, &app.input.history);
    drop(say_tx);
    session_task.abort();
    reader.abort();
    result
}

#[cfg(test)]
mod tests;
