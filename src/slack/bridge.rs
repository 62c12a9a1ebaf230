//! The conversation side of the bridge, shared by Socket Mode and the Events API.
//!
//! Each (channel, thread) has one dialog [`Session`], owned by one task that takes
//! that thread's messages in arrival order, so "roll it back" in a thread means that
//! thread's deployment. The speaker of each turn becomes the session's actor
//! (`name`: Slack user id, `frontend`: `slack:<channel>`, `role` from the config),
//! which is what the role check and the audit log see. Redelivered events are
//! dropped by key in a bounded recently-seen set. Rollout progress is one message
//! per deployment, rewritten with `chat.update`; the end posts a summary.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{broadcast, mpsc, Notify};

use super::blocks;
use super::config::{Secrets, SlackSettings};
use super::web::WebClient;
use crate::dialog::Session;
use crate::ops::Actor;
use crate::orchestrate::{announce, RolloutEvent};
use crate::reply::Outcome;

/// How many event keys are remembered for de-duplication. Slack redelivers within
/// minutes, so a few thousand recent keys are plenty and the memory stays bounded.
const SEEN_CAPACITY: usize = 10_000;

/// Sessions are created by the application (`Parley::session`), not by the bridge.
pub type SessionFactory = Box<dyn Fn(Actor) -> Session + Send + Sync>;

/// One thing someone said or clicked in Slack.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub channel: String,
    /// The thread's root `ts`: the conversation key with `channel`.
    pub thread_ts: String,
    pub user: String,
    pub text: String,
}

pub struct Bridge {
    settings: SlackSettings,
    secrets: Secrets,
    web: WebClient,
    factory: SessionFactory,
    threads: Mutex<HashMap<(String, String), mpsc::UnboundedSender<Inbound>>>,
    seen: Mutex<Seen>,
    progress: Mutex<HashMap<String, Progress>>,
    progress_changed: Notify,
}

impl Bridge {
    pub fn new(settings: SlackSettings, secrets: Secrets, web: WebClient, factory: SessionFactory) -> Arc<Bridge> {
        Arc::new(Bridge {
            settings,
            secrets,
            web,
            factory,
            threads: Mutex::default(),
            seen: Mutex::new(Seen::default()),
            progress: Mutex::default(),
            progress_changed: Notify::new(),
        })
    }

    /// Takes an `events_api` or `interactive` payload (as Socket Mode wraps it, or as
    /// the Events API posts it). `fallback_key` de-duplicates payloads without an
    /// `event_id`. Returns at once; the turn runs on the thread's task.
    pub fn accept(self: &Arc<Self>, kind: &str, payload: &Value, fallback_key: &str) -> bool {
        let parsed = match kind {
            "events_api" => {
                parse_event(payload).map(|(id, inbound)| (id.unwrap_or_else(|| fallback_key.to_string()), inbound))
            }
            "interactive" => parse_block_actions(payload),
            _ => None,
        };
        let Some((key, inbound)) = parsed else { return false };
        if !lock(&self.seen).insert(&key) {
            tracing::debug!(key, "slack redelivered an event; already handled");
            return false;
        }
        self.enqueue(inbound);
        true
    }

    fn enqueue(self: &Arc<Self>, inbound: Inbound) {
        let key = (inbound.channel.clone(), inbound.thread_ts.clone());
        let mut threads = lock(&self.threads);
        let tx = threads.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Arc::clone(self).thread_task(key.0.clone(), key.1.clone(), rx));
            tx
        });
        if let Err(mpsc::error::SendError(inbound)) = tx.send(inbound) {
            // The task ended (it never does on its own); start a fresh one.
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(Arc::clone(self).thread_task(key.0.clone(), key.1.clone(), rx));
            let _ = tx.send(inbound);
            threads.insert(key, tx);
        }
    }

    fn actor(&self, user: &str, channel: &str) -> Actor {
        Actor::new(user, format!("slack:{channel}"), self.settings.role_for(user, channel))
    }

    async fn thread_task(
        self: Arc<Self>,
        channel: String,
        thread_ts: String,
        mut rx: mpsc::UnboundedReceiver<Inbound>,
    ) {
        let mut session: Option<Session> = None;
        while let Some(inbound) = rx.recv().await {
            let actor = self.actor(&inbound.user, &channel);
            let session = match &mut session {
                Some(s) => {
                    s.set_actor(actor);
                    s
                }
                None => session.insert((self.factory)(actor)),
            };
            let reply = session.handle(&inbound.text).await;
            if let (Some(id), Outcome::Started) = (&reply.deployment, reply.outcome) {
                self.follow(id, &channel, &thread_ts);
            }
            let message = blocks::reply_message(&reply);
            if let Err(e) = self.web.post_message(&self.secrets.bot_token, &channel, Some(&thread_ts), &message).await {
                tracing::warn!(channel, error = %e, "could not post a reply to slack");
            }
        }
    }

    /// Progress of `deployment` goes to this thread from now on.
    fn follow(&self, deployment: &str, channel: &str, thread_ts: &str) {
        let mut progress = lock(&self.progress);
        let p = progress.entry(deployment.to_string()).or_default();
        p.location = Some((channel.to_string(), thread_ts.to_string()));
        p.dirty = true;
        drop(progress);
        self.progress_changed.notify_one();
    }

    /// Follows the orchestrator's events until they end, keeping one progress
    /// message per followed deployment up to date. Events that arrive together are
    /// folded into one update, so a fast rollout does not flood Slack.
    pub async fn run_progress(self: Arc<Self>, mut events: broadcast::Receiver<RolloutEvent>) {
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) => self.record(&e),
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(n, "slack progress missed events"),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = self.progress_changed.notified() => {}
            }
            while let Ok(e) = events.try_recv() {
                self.record(&e);
            }
            self.flush().await;
        }
    }

    fn record(&self, event: &RolloutEvent) {
        let id = crate::orchestrate::event_deployment(event);
        let mut progress = lock(&self.progress);
        let p = progress.entry(id.to_string()).or_default();
        match event {
            RolloutEvent::AgentInstalled { .. } => p.installed += 1,
            RolloutEvent::Finished { .. } => p.finished = announce(event),
            _ => {}
        }
        if let Some(line) = announce(event) {
            p.lines.push(line);
            if p.lines.len() > 50 {
                p.lines.remove(0);
            }
        }
        p.dirty = true;
    }

    async fn flush(&self) {
        let work: Vec<(String, Progress)> = {
            let mut progress = lock(&self.progress);
            // Deployments nobody in Slack started are not ours to report; forget them
            // once they finish so the map stays small.
            progress.retain(|_, p| p.location.is_some() || p.finished.is_none());
            progress
                .iter_mut()
                .filter(|(_, p)| p.dirty && p.location.is_some())
                .map(|(id, p)| {
                    p.dirty = false;
                    (id.clone(), p.clone())
                })
                .collect()
        };
        for (id, p) in work {
            let Some((channel, thread)) = &p.location else { continue };
            let headline = match &p.finished {
                Some(_) => "finished".to_string(),
                None => {
                    format!("in progress, {} agent{} installed", p.installed, if p.installed == 1 { "" } else { "s" })
                }
            };
            let message = blocks::progress_message(&id, &headline, &p.lines);
            let token = &self.secrets.bot_token;
            let ts = match &p.ts {
                Some(ts) => match self.web.update(token, channel, ts, &message).await {
                    Ok(()) => Some(ts.clone()),
                    Err(e) => {
                        tracing::warn!(deployment = id, error = %e, "could not update slack progress");
                        Some(ts.clone())
                    }
                },
                None => match self.web.post_message(token, channel, Some(thread), &message).await {
                    Ok(ts) => Some(ts),
                    Err(e) => {
                        tracing::warn!(deployment = id, error = %e, "could not post slack progress");
                        None
                    }
                },
            };
            if let Some(summary) = &p.finished {
                let m = blocks::reply_message(&crate::reply::Reply::new(Outcome::Done, summary.clone()));
                if let Err(e) = self.web.post_message(token, channel, Some(thread), &m).await {
                    tracing::warn!(deployment = id, error = %e, "could not post the slack summary");
                }
                lock(&self.progress).remove(&id);
            } else if let Some(p) = lock(&self.progress).get_mut(&id) {
                p.ts = ts;
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Progress {
    location: Option<(String, String)>,
    ts: Option<String>,
    installed: usize,
    lines: Vec<String>,
    finished: Option<String>,
    dirty: bool,
}

/// A poisoned lock only means another task panicked mid-update; the maps stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Recently seen keys, oldest evicted first.
#[derive(Default)]
struct Seen {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Seen {
    /// False when `key` was seen already.
    fn insert(&mut self, key: &str) -> bool {
        if self.set.contains(key) {
            return false;
        }
        if self.order.len() >= SEEN_CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(key.to_string());
        self.order.push_back(key.to_string());
        true
    }
}

/// An `event_callback` with an `app_mention`, or a direct message from a person.
/// Returns the `event_id` (for de-duplication) and what was said.
pub fn parse_event(payload: &Value) -> Option<(Option<String>, Inbound)> {
    if payload.get("type")?.as_str()? != "event_callback" {
        return None;
    }
    let event = payload.get("event")?;
    let kind = event.get("type")?.as_str()?;
    let direct = kind == "message"
        && event.get("channel_type").and_then(Value::as_str) == Some("im")
        // Edits, joins and the bot's own messages come as subtypes or with bot_id.
        && event.get("subtype").is_none()
        && event.get("bot_id").is_none();
    if !(kind == "app_mention" || direct) {
        return None;
    }
    let ts = event.get("ts")?.as_str()?;
    let inbound = Inbound {
        channel: event.get("channel")?.as_str()?.to_string(),
        thread_ts: event.get("thread_ts").and_then(Value::as_str).unwrap_or(ts).to_string(),
        user: event.get("user")?.as_str()?.to_string(),
        text: strip_mentions(event.get("text").and_then(Value::as_str).unwrap_or("")),
    };
    let id = payload.get("event_id").and_then(Value::as_str).map(str::to_string);
    Some((id, inbound))
}

/// A `block_actions` click on one of our buttons: its value is the utterance.
pub fn parse_block_actions(payload: &Value) -> Option<(String, Inbound)> {
    if payload.get("type")?.as_str()? != "block_actions" {
        return None;
    }
    let action = payload.get("actions")?.as_array()?.first()?;
    let value = action.get("value")?.as_str()?;
    let message = payload.get("message");
    let thread_ts = payload
        .get("container")
        .and_then(|c| c.get("thread_ts"))
        .or_else(|| message.and_then(|m| m.get("thread_ts")))
        .or_else(|| message.and_then(|m| m.get("ts")))
        .and_then(Value::as_str)?;
    let user = payload.get("user")?.get("id")?.as_str()?;
    let action_ts = action.get("action_ts").and_then(Value::as_str).unwrap_or("");
    let inbound = Inbound {
        channel: payload.get("channel")?.get("id")?.as_str()?.to_string(),
        thread_ts: thread_ts.to_string(),
        user: user.to_string(),
        text: value.to_string(),
    };
    Some((format!("action:{user}:{action_ts}:{}", action.get("action_id")?.as_str()?), inbound))
}

/// `<@U123> how healthy is us-east?` -> `how healthy is us-east?`
fn strip_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        out.push_str(&rest[..start]);
        match rest[start..].find('>') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn mentions_and_direct_messages_are_read_and_other_events_ignored() {
        let p = json!({"type": "event_callback", "event_id": "Ev1", "event": {"type": "app_mention",
            "user": "U1", "channel": "C1", "ts": "10.1", "text": "<@UBOT>  how healthy is us-east?"}});
        let (id, i) = parse_event(&p).unwrap();
        assert_eq!(id.as_deref(), Some("Ev1"));
        assert_eq!(
            i,
            Inbound {
                channel: "C1".into(),
                thread_ts: "10.1".into(),
                user: "U1".into(),
                text: "how healthy is us-east?".into()
            }
        );
        let bot = json!({"type": "event_callback", "event": {"type": "message", "channel_type": "im",
            "bot_id": "B1", "user": "U1", "channel": "D1", "ts": "1", "text": "hi"}});
        assert!(parse_event(&bot).is_none());
        let click = json!({"type": "block_actions", "user": {"id": "U2"}, "channel": {"id": "C1"},
            "container": {"thread_ts": "10.1"}, "message": {"ts": "11.0"},
            "actions": [{"action_id": "parley_confirm", "value": "yes", "action_ts": "12.0"}]});
        let (key, i) = parse_block_actions(&click).unwrap();
        assert_eq!((i.thread_ts.as_str(), i.text.as_str(), i.user.as_str()), ("10.1", "yes", "U2"));
        assert_eq!(key, "action:U2:12.0:parley_confirm");
    }

    #[test]
    fn the_seen_set_is_bounded() {
        let mut s = Seen::default();
        assert!(s.insert("a"));
        assert!(!s.insert("a"));
        for n in 0..SEEN_CAPACITY {
            s.insert(&n.to_string());
        }
        assert_eq!(s.order.len(), SEEN_CAPACITY);
        assert!(s.insert("a"), "the oldest key was evicted");
    }
}
