//! Keys -> state changes. Anything that needs the outside world (the session, the
//! process) comes back as an [`Action`] for the event loop; everything else is a
//! plain change to [`App`], so the keymap is testable without a terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use std::time::Duration;

use super::state::{deployment_actions, App, Button, Pane};

/// What the event loop must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    /// Send this utterance to the session.
    Submit(String),
    /// F5: start push-to-talk, or end the recording early.
    Talk,
    /// A y or n is held: call [`release_held`] when [`LONE_KEY`] passes with no
    /// other key.
    Hold,
    Quit,
}

/// Rows a page key moves.
const PAGE: usize = 10;

/// How long a y or n on an empty input line waits for another key before it counts
/// as an answer. Letters of a word typed or pasted come faster than this; a person
/// answering presses the key and stops.
pub const LONE_KEY: Duration = Duration::from_millis(300);

pub fn handle_key(app: &mut App, key: KeyEvent) -> Action {
    // Key releases and repeats arrive on some platforms; only presses count.
    if key.kind == KeyEventKind::Release {
        return Action::None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('q')) {
        return Action::Quit;
    }
    if app.show_help {
        // Up/Down/PgUp/PgDn scroll a help taller than the screen; any other key
        // closes it, so nobody is stuck behind it.
        match key.code {
            KeyCode::Up | KeyCode::Char('k') => app.help_scroll = app.help_scroll.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => app.help_scroll = app.help_scroll.saturating_add(1),
            KeyCode::PageUp => app.help_scroll = app.help_scroll.saturating_sub(PAGE),
            KeyCode::PageDown => app.help_scroll = app.help_scroll.saturating_add(PAGE),
            _ => {
                app.show_help = false;
                app.help_scroll = 0;
            }
        }
        return Action::None;
    }
    // The completion popup lasts until the next key; Tab again completes afresh.
    if key.code != KeyCode::Tab {
        app.completions.clear();
    }
    if app.confirm.is_some() {
        return confirm_key(app, key);
    }
    match key.code {
        KeyCode::F(1) => {
            app.show_help = true;
            return Action::None;
        }
        KeyCode::F(2) => {
            app.focus = Pane::Chat;
            return Action::None;
        }
        KeyCode::F(3) => {
            app.focus = Pane::Fleet;
            return Action::None;
        }
        KeyCode::F(4) => {
            app.focus = Pane::Deployments;
            return Action::None;
        }
        KeyCode::F(5) => return Action::Talk,
        KeyCode::BackTab => {
            app.focus = match app.focus {
                Pane::Chat => Pane::Fleet,
                Pane::Fleet => Pane::Deployments,
                Pane::Deployments => Pane::Chat,
            };
            return Action::None;
        }
        _ => {}
    }
    match app.focus {
        Pane::Chat => chat_key(app, key),
        Pane::Fleet => fleet_key(app, key),
        Pane::Deployments => deployments_key(app, key),
    }
}

/// Keys while the confirmation modal is up. Only deliberate acts answer it: y or n
/// alone on an empty input line (a lone keypress, see [`LONE_KEY`]), Enter on a
/// button chosen with Left/Right/Tab, or Esc to cancel. Anything else types into the
/// input line as usual, and Enter sends that as a turn of its own: the session
/// decides what becomes of the question. Nothing answers while a turn is with the
/// session, since its reply may replace the question.
fn confirm_key(app: &mut App, key: KeyEvent) -> Action {
    let plain = !key.modifiers.intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
    // A held y or n followed by another key was the start of a word.
    if let Some(c) = app.confirm.as_mut().and_then(|c| c.held.take()) {
        app.input.insert(c);
        app.follow_up_pick = None;
    }
    let empty = app.input.text.is_empty();
    let waiting = app.waiting;
    let Some(confirm) = app.confirm.as_mut() else { return Action::None };
    match key.code {
        KeyCode::Char(c @ ('y' | 'Y' | 'n' | 'N')) if plain && empty && !waiting => {
            confirm.held = Some(c);
            return Action::Hold;
        }
        KeyCode::Esc if !waiting => return answer(app, Button::No),
        KeyCode::Enter if empty => {
            return match confirm.focus {
                Some(button) if !waiting => answer(app, button),
                _ => Action::None,
            }
        }
        KeyCode::Left if empty => confirm.focus = Some(Button::Yes),
        KeyCode::Right if empty => confirm.focus = Some(Button::No),
        // Tab starts on "no", so Tab then Enter out of habit changes nothing.
        KeyCode::Tab | KeyCode::BackTab if empty => {
            confirm.focus = Some(match confirm.focus {
                Some(Button::No) => Button::Yes,
                _ => Button::No,
            })
        }
        KeyCode::Up => confirm.scroll = confirm.scroll.saturating_sub(1),
        KeyCode::Down => confirm.scroll = confirm.scroll.saturating_add(1),
        KeyCode::PageUp => confirm.scroll = confirm.scroll.saturating_sub(PAGE),
        KeyCode::PageDown => confirm.scroll = confirm.scroll.saturating_add(PAGE),
        // Panes, help and push-to-talk wait until the question is answered.
        KeyCode::F(_) | KeyCode::BackTab | KeyCode::Esc => {}
        _ => return chat_key(app, key),
    }
    Action::None
}

/// [`LONE_KEY`] passed after a y or n with no other key: it was an answer.
pub fn release_held(app: &mut App) -> Action {
    let Some(c) = app.confirm.as_mut().and_then(|c| c.held.take()) else { return Action::None };
    if !app.input.text.is_empty() || app.waiting {
        app.input.insert(c);
        return Action::None;
    }
    answer(app, if c.eq_ignore_ascii_case(&'y') { Button::Yes } else { Button::No })
}

fn answer(app: &mut App, button: Button) -> Action {
    app.confirm = None;
    let word = match button {
        Button::Yes => "yes",
        Button::No => "no",
    };
    submit(app, word.to_string())
}

fn submit(app: &mut App, utterance: String) -> Action {
    app.on_submit(&utterance);
    Action::Submit(utterance)
}

fn chat_key(app: &mut App, key: KeyEvent) -> Action {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    let input = &mut app.input;
    match key.code {
        KeyCode::Enter => {
            let line = input.text.trim().to_string();
            input.remember(&line);
            input.set("");
            input.browsing = None;
            if line.is_empty() {
                return Action::None;
            }
            if matches!(line.as_str(), "exit" | "quit" | ":q") {
                return Action::Quit;
            }
            // A bare number picks that follow-up, as in the REPL.
            let utterance = match line.parse::<usize>() {
                Ok(n) if n >= 1 && n <= app.follow_ups.len() => app.follow_ups[n - 1].clone(),
                _ => line,
            };
            return submit(app, utterance);
        }
        KeyCode::Char(d @ '1'..='9') if alt => {
            let n = d as usize - '0' as usize;
            if let Some(f) = app.follow_ups.get(n - 1).cloned() {
                return submit(app, f);
            }
        }
        KeyCode::Char('?') if input.text.is_empty() => app.show_help = true,
        KeyCode::Char('a') if ctrl => input.cursor = 0,
        KeyCode::Char('e') if ctrl => input.cursor = input.text.chars().count(),
        KeyCode::Char('u') if ctrl => input.set(""),
        KeyCode::Char('w') if ctrl => input.delete_word(),
        KeyCode::Char('l') if ctrl => app.chat_scroll = 0,
        KeyCode::Char(c) if !ctrl => {
            input.insert(c);
            app.follow_up_pick = None;
        }
        KeyCode::Backspace => input.backspace(),
        KeyCode::Delete => input.delete(),
        KeyCode::Left => input.cursor = input.cursor.saturating_sub(1),
        KeyCode::Right => input.cursor = (input.cursor + 1).min(input.text.chars().count()),
        KeyCode::Home => input.cursor = 0,
        KeyCode::End => input.cursor = input.text.chars().count(),
        KeyCode::Up => input.history_prev(),
        KeyCode::Down => input.history_next(),
        KeyCode::PageUp => app.chat_scroll += PAGE,
        KeyCode::PageDown => app.chat_scroll = app.chat_scroll.saturating_sub(PAGE),
        KeyCode::Tab => tab(app),
        KeyCode::Esc => app.focus = Pane::Fleet,
        _ => {}
    }
    Action::None
}

/// Tab completes the word at the cursor from fleet names; on an empty line (or a line
/// Tab itself filled) it cycles through the last reply's follow-ups.
fn tab(app: &mut App) {
    let filled_by_tab = app.follow_up_pick.is_some_and(|i| app.follow_ups.get(i) == Some(&app.input.text));
    if (app.input.text.is_empty() || filled_by_tab) && !app.follow_ups.is_empty() {
        let next = app.follow_up_pick.map(|i| (i + 1) % app.follow_ups.len()).unwrap_or(0);
        app.follow_up_pick = Some(next);
        let text = app.follow_ups[next].clone();
        app.input.set(&text);
        return;
    }
    let input = &mut app.input;
    let head: String = input.text.chars().take(input.cursor).collect();
    let start =
        head.rfind(char::is_whitespace).map(|i| i + head[i..].chars().next().map_or(1, char::len_utf8)).unwrap_or(0);
    let prefix = head[start..].to_lowercase();
    if prefix.is_empty() {
        return;
    }
    let matches: Vec<&String> = app.words.iter().filter(|w| w.starts_with(&prefix)).collect();
    let Some(first) = matches.first() else { return };
    // More than one: the popup lists them, as the REPL does, while the line takes
    // their common prefix.
    let popup: Vec<String> =
        if matches.len() > 1 { matches.iter().map(|m| m.to_string()).collect() } else { Vec::new() };
    // Complete to the longest common prefix, so `edge-1` then Tab offers no guess.
    let mut common: String = first.to_string();
    for m in &matches[1..] {
        let n = common.chars().zip(m.chars()).take_while(|(a, b)| a == b).count();
        common = common.chars().take(n).collect();
    }
    let complete = matches.len() == 1;
    let tail: String = input.text.chars().skip(input.cursor).collect();
    let mut text = head[..start].to_string();
    text.push_str(&common);
    if complete && !tail.starts_with(' ') {
        text.push(' ');
    }
    let cursor = text.chars().count();
    text.push_str(&tail);
    input.text = text;
    input.cursor = cursor;
    app.completions = popup;
}

fn fleet_key(app: &mut App, key: KeyEvent) -> Action {
    if app.editing_filter {
        let mut filter = app.fleet_filter.clone();
        match key.code {
            KeyCode::Enter | KeyCode::Esc => app.editing_filter = false,
            KeyCode::Backspace => {
                filter.pop();
            }
            KeyCode::Char(c) => filter.push(c),
            _ => {}
        }
        if filter != app.fleet_filter {
            app.set_filter(&filter);
        }
        return Action::None;
    }
    match key.code {
        KeyCode::Char('q') => return Action::Quit,
        KeyCode::Char('/') => app.editing_filter = true,
        KeyCode::Char('c') => app.set_filter(""),
        KeyCode::Char('s') => app.cycle_sort(),
        KeyCode::Char('f') => app.toggle_follow(),
        KeyCode::Char('?') => app.show_help = true,
        KeyCode::Up | KeyCode::Char('k') => app.move_agent_selection(-1),
        KeyCode::Down | KeyCode::Char('j') => app.move_agent_selection(1),
        KeyCode::PageUp => app.move_agent_selection(-(PAGE as isize)),
        KeyCode::PageDown => app.move_agent_selection(PAGE as isize),
        KeyCode::Home => app.move_agent_selection(isize::MIN / 2),
        KeyCode::End => app.move_agent_selection(isize::MAX / 2),
        KeyCode::Enter => {
            if let Some(name) = app.selected_agent.clone() {
                app.focus = Pane::Chat;
                return submit(app, format!("show agent {name}"));
            }
        }
        KeyCode::Esc | KeyCode::Tab | KeyCode::Char('i') => app.focus = Pane::Chat,
        _ => {}
    }
    Action::None
}

fn deployments_key(app: &mut App, key: KeyEvent) -> Action {
    let count = app.deployments.len();
    // Only a key the lifecycle offers for the selected deployment does anything.
    let action_of = |app: &App, key: Option<char>| -> Option<String> {
        let d = app.selected_deployment()?;
        match key {
            None => Some(format!("show deployment {}", d.name)),
            Some(k) => deployment_actions(d).into_iter().find(|(c, _)| *c == k).map(|(_, a)| a),
        }
    };
    let verb = match key.code {
        KeyCode::Char('q') => return Action::Quit,
        KeyCode::Char('?') => {
            app.show_help = true;
            return Action::None;
        }
        KeyCode::Up | KeyCode::Char('k') => {
            app.selected_deployment = app.selected_deployment.saturating_sub(1);
            return Action::None;
        }
        KeyCode::Down | KeyCode::Char('j') => {
            app.selected_deployment = (app.selected_deployment + 1).min(count.saturating_sub(1));
            return Action::None;
        }
        KeyCode::Esc | KeyCode::Tab | KeyCode::Char('i') => {
            app.focus = Pane::Chat;
            return Action::None;
        }
        KeyCode::Char(c) => Some(c),
        KeyCode::Enter => None,
        _ => return Action::None,
    };
    match action_of(app, verb) {
        Some(utterance) => {
            app.focus = Pane::Chat;
            submit(app, utterance)
        }
        None => Action::None,
    }
}
