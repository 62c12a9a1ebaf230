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
pub mod source;
pub mod state;

use std::io::{self, Stdout, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{Event, EventStream};
use crossterm::terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen};
use futures::StreamExt;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc;

use crate::app::Parley;
use crate::client::Client;
use crate::config::Config;
use crate::ops::Actor;
use crate::topology::Catalog;

use input::Action;
use source::{Feeds, News, Source};
use state::App;

/// How often the screen looks at the topology snapshot (a pointer compare when
/// nothing changed).
const TICK: Duration = Duration::from_millis(250);
/// Sparklines take one sample per this many ticks.
const SAMPLE_EVERY: u32 = 4;
/// Deployments the pane lists.
const DEPLOYMENTS_SHOWN: u32 = 20;
/// How long a client TUI, once quit, waits for the server's list of what goes on
/// before it tells from the last list it had.
const EXIT_READ: Duration = Duration::from_secs(1);

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

/// Runs the terminal UI in-process until the operator quits.
pub async fn run(parley: &Parley, config: &Config, actor: Actor) -> Result<(), TuiError> {
    run_on(&Source::InProcess { parley, actor }, config).await
}

/// Runs the terminal UI as a client of the server `client` until the operator quits;
/// the server's rollouts go on without it, and once the terminal is restored the TUI
/// says which (see [`crate::ui::text::rollouts_keep_running`]).
pub async fn run_remote(client: &Client, config: &Config, catalog: Arc<Catalog>) -> Result<(), TuiError> {
    run_on(&Source::Server { client, catalog }, config).await
}

/// Why the TUI could not run.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(transparent)]
    Terminal(#[from] io::Error),
    #[error(transparent)]
    Server(#[from] crate::client::ClientError),
}

/// Runs the terminal UI on `source` until the operator quits.
pub async fn run_on(source: &Source<'_>, config: &Config) -> Result<(), TuiError> {
    let mut feeds = source.feeds().await?;
    let mut app = App::new(feeds.fleet.current(), feeds.thresholds);
    let history_file = history_path(config);
    app.input.history = load_history(&history_file);
    app.sample_series();
    for line in std::mem::take(&mut feeds.opening) {
        app.notice(line);
    }
    app.set_words(std::mem::take(&mut feeds.words));
    let _ = feeds.relist.try_send(());

    // Push-to-talk: the tiny.en model installed in the data directory (`parley voice
    // model install`), loaded on the first press.
    let talker = crate::voice::ptt::PushToTalk::new(
        crate::voice::provision::models_dir(&config.data_dir).join("ggml-tiny.en.bin"),
        config.intents_dir.clone(),
    );
    let (talk_tx, mut talk_rx) = mpsc::channel::<crate::voice::ptt::TalkEvent>(4);
    let mut talk_stop: Option<tokio::sync::oneshot::Sender<()>> = None;

    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tick_count: u32 = 0;
    let mut news_open = true;

    let mut quit_signals = QuitSignals::new()?;
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
                        say(&feeds, &mut app, utterance).await;
                    }
                    Action::Talk => match app.talk {
                        state::Talk::Idle => {
                            talk_stop = Some(talker.start(feeds.fleet.current(), talk_tx.clone()));
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
            _ = quit_signals.recv() => break Ok(()),
            _ = held => {
                held_until = None;
                if let Action::Submit(utterance) = input::release_held(&mut app) {
                    say(&feeds, &mut app, utterance).await;
                }
            },
            talk = talk_rx.recv() => {
                // The audio library may write its diagnostics straight to the terminal
                // (ALSA without a sound card does); repaint everything, not just changes.
                if let Err(e) = terminal.clear() {
                    break Err(e);
                }
                if let Some(utterance) = talk.and_then(|t| app.on_talk(t)) {
                    say(&feeds, &mut app, utterance).await;
                }
            },
            answer = feeds.answers.recv() => {
                if let Some(a) = answer {
                    app.set_words(a.words);
                    app.on_reply(a.reply, a.confirmation);
                    let _ = feeds.relist.try_send(());
                }
            },
            news = feeds.news.recv(), if news_open => match news {
                Some(News::Rollout(e)) => {
                    app.on_rollout_event(&e);
                    let _ = feeds.relist.try_send(());
                }
                Some(News::Notice(text)) => app.notice(text),
                Some(News::Reread) => { let _ = feeds.relist.try_send(()); }
                None => news_open = false,
            },
            list = feeds.lists.recv() => {
                if let Some(list) = list {
                    app.set_deployments(list);
                }
            },
            _ = ticks.tick() => {
                let snapshot = feeds.fleet.current();
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
    drop(feeds);
    if let Source::Server { client, .. } = source {
        // The server's word on what goes on, if it answers at once; else the last list.
        let list = match tokio::time::timeout(EXIT_READ, client.deployments(DEPLOYMENTS_SHOWN)).await {
            Ok(Ok(list)) => list,
            _ => app.deployments.clone(),
        };
        if let Some(text) = crate::ui::text::rollouts_keep_running(&list, &client.url().to_string()) {
            // After a hang-up there is no terminal to tell: nothing to do about it.
            let _ = writeln!(io::stdout(), "{text}");
        }
    }
    result.map_err(TuiError::from)
}

/// SIGINT, SIGTERM and SIGHUP (a `kill`, a closed terminal window): the TUI quits as
/// on `q`, so the terminal is given back in order and, as a client, it says which
/// rollouts keep running. Their default action would kill it in raw mode, on the
/// alternate screen. (Ctrl-C typed in the TUI is a key, not a signal: raw mode.)
struct QuitSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl QuitSignals {
    fn new() -> io::Result<QuitSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(QuitSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next of the three; cancel-safe, so it can sit in the loop's `select!`.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

/// Sends one utterance to the session.
async fn say(feeds: &Feeds, app: &mut App, utterance: String) {
    if feeds.say.send(utterance).await.is_err() {
        app.notice("The session stopped; restart Parley.");
    }
}

#[cfg(test)]
mod tests;
