//! The conversation side of the bridge, shared by Socket Mode and the Events API.
//!
//! Each (channel, thread) has one dialog [`Session`], owned by one task that takes
//! that thread's messages in arrival order, so "roll it back" in a thread means that
//! thread's deployment. The map of threads is bounded: a thread idle for longer
//! than `session_idle` starts afresh, and beyond `max_sessions` the least recently
//! used thread is forgotten (its task finishes what it was given, then ends). A
//! slash command (`/parley ...`) cannot be run in a thread, so its answer is posted
//! in the channel and becomes the root of the thread its conversation goes on in. The speaker of each turn becomes the session's actor
//! (`name`: Slack user id, `frontend`: `slack:<channel>`, `role` from the config),
//! which is what the role check and the audit log see. Redelivered events are
//! dropped by key in a bounded recently-seen set. Rollout progress is one message
//! per deployment, rewritten with `chat.update`; the end posts a summary.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::time::Instant;

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
    /// The thread's root `ts`: the conversation key with `channel`. `None` for a
    /// slash command, whose answer starts a thread.
    pub thread_ts: Option<String>,
    pub user: String,
    pub text: String,
    /// A slash command's `response_url`: the answer goes there (to the user only)
    /// when the bot may not post in the channel.
    pub response_url: Option<String>,
}

type ThreadKey = (String, String);

pub struct Bridge {
    settings: SlackSettings,
    secrets: Secrets,
    web: WebClient,
    factory: SessionFactory,
    threads: Mutex<Threads<mpsc::UnboundedSender<Inbound>>>,
    seen: Mutex<Seen>,
    /// Names slash-command conversations until their answer gives them a thread.
    commands: AtomicU64,
    progress: Mutex<HashMap<String, Progress>>,
    progress_changed: Notify,
}

impl Bridge {
    pub fn new(settings: SlackSettings, secrets: Secrets, web: WebClient, factory: SessionFactory) -> Arc<Bridge> {
        let threads = Threads::new(settings.session_idle, settings.max_sessions);
        Arc::new(Bridge {
            settings,
            secrets,
            web,
            factory,
            threads: Mutex::new(threads),
            seen: Mutex::new(Seen::default()),
            commands: AtomicU64::new(0),
            progress: Mutex::default(),
            progress_changed: Notify::new(),
        })
    }

    /// Takes an `events_api`, `interactive` or `slash_commands` payload (as Socket
    /// Mode wraps it, or as the Events API posts it). `fallback_key` de-duplicates
    /// payloads without an id of their own (Socket Mode passes the envelope id; an
    /// empty one means no de-duplication). Returns at once; the turn runs on the
    /// thread's task.
    pub fn accept(self: &Arc<Self>, kind: &str, payload: &Value, fallback_key: &str) -> bool {
        let parsed = match kind {
            "events_api" => parse_event(payload),
            "interactive" => parse_block_actions(payload).map(|(key, inbound)| (Some(key), inbound)),
            "slash_commands" => parse_slash_command(payload),
            _ => None,
        };
        let Some((key, inbound)) = parsed else { return false };
        let key = key.unwrap_or_else(|| fallback_key.to_string());
        if !key.is_empty() && !lock(&self.seen).insert(&key) {
            tracing::debug!(key, "slack redelivered an event; already handled");
            return false;
        }
        self.enqueue(inbound);
        true
    }

    fn enqueue(self: &Arc<Self>, inbound: Inbound) {
        let thread = match &inbound.thread_ts {
            Some(ts) => ts.clone(),
            // Its own conversation until the answer's ts names the thread.
            None => format!("command:{}", self.commands.fetch_add(1, Ordering::Relaxed)),
        };
        let key = (inbound.channel.clone(), thread);
        let now = Instant::now();
        let mut threads = lock(&self.threads);
        let inbound = match threads.get(&key, now) {
            Some(tx) => match tx.send(inbound) {
                Ok(()) => return,
                // The task ended (it never does on its own); start a fresh one.
                Err(mpsc::error::SendError(inbound)) => inbound,
            },
            None => inbound,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(Arc::clone(self).thread_task(key.clone(), inbound.thread_ts.clone(), rx));
        let _ = tx.send(inbound);
        let dropped = threads.insert(key, tx, now);
        if !dropped.is_empty() {
            tracing::debug!(dropped = dropped.len(), "slack thread conversations expired or evicted");
        }
    }

    /// A slash command's conversation got its thread: later messages and clicks
    /// there reach the same session.
    fn rekey(&self, from: &ThreadKey, to: ThreadKey) {
        let mut threads = lock(&self.threads);
        if let Some(tx) = threads.remove(from) {
            threads.insert(to, tx, Instant::now());
        }
    }

    fn actor(&self, user: &str, channel: &str) -> Actor {
        Actor::new(user, format!("slack:{channel}"), self.settings.role_for(user, channel))
    }

    /// One thread's conversation. `thread_ts` is `None` for a slash command until
    /// its first answer is posted; that answer's `ts` is the thread from then on.
    async fn thread_task(
        self: Arc<Self>,
        key: ThreadKey,
        mut thread_ts: Option<String>,
        mut rx: mpsc::UnboundedReceiver<Inbound>,
    ) {
        let channel = key.0.clone();
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
            let message = blocks::reply_message(&reply);
            let token = &self.secrets.bot_token;
            match self.web.post_message(token, &channel, thread_ts.as_deref(), &message).await {
                Ok(ts) if thread_ts.is_none() && !ts.is_empty() => {
                    self.rekey(&key, (channel.clone(), ts.clone()));
                    thread_ts = Some(ts);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(channel, error = %e, "could not post a reply to slack");
                    if let Some(url) = &inbound.response_url {
                        // Not a member of the channel (or a DM the bot is not in): the
                        // person who asked still gets the answer, privately.
                        if let Err(e) = self.web.respond(url, &ephemeral(message)).await {
                            tracing::warn!(channel, error = %e, "could not answer through the response_url");
                        }
                    }
                }
            }
            if let (Some(id), Outcome::Started, Some(thread)) = (&reply.deployment, reply.outcome, &thread_ts) {
                self.follow(id, &channel, thread);
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

/// A slash command's answer for its `response_url`, seen only by the person who
/// asked, with a hint why it did not come in the channel.
fn ephemeral(mut message: Value) -> Value {
    message["response_type"] = json!("ephemeral");
    if let Some(blocks) = message.get_mut("blocks").and_then(Value::as_array_mut) {
        blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn",
            "text": "Only you can see this: invite me to the channel (`/invite @parley`) to answer there."}]}));
    }
    message
}

/// The live thread conversations and when each was last used, bounded in idle time
/// and in number.
struct Threads<V> {
    entries: HashMap<ThreadKey, (V, Instant)>,
    idle: Duration,
    cap: usize,
}

impl<V> Threads<V> {
    fn new(idle: Duration, cap: usize) -> Threads<V> {
        Threads { entries: HashMap::new(), idle, cap: cap.max(1) }
    }

    /// The entry for `key`, marked used at `now`; one idle for longer than `idle`
    /// is dropped instead (its conversation starts afresh).
    fn get(&mut self, key: &ThreadKey, now: Instant) -> Option<&V> {
        let expired = match self.entries.get(key) {
            None => return None,
            Some((_, used)) => now.saturating_duration_since(*used) > self.idle,
        };
        if expired {
            self.entries.remove(key);
            return None;
        }
        let entry = self.entries.get_mut(key)?;
        entry.1 = now;
        Some(&entry.0)
    }

    /// Adds (or replaces) `key`, first dropping the idle entries and then, while
    /// there is no room, the least recently used. Returns the keys dropped.
    fn insert(&mut self, key: ThreadKey, value: V, now: Instant) -> Vec<ThreadKey> {
        let idle = self.idle;
        let mut dropped: Vec<ThreadKey> = Vec::new();
        self.entries.retain(|k, (_, used)| {
            let keep = *k == key || now.saturating_duration_since(*used) <= idle;
            if !keep {
                dropped.push(k.clone());
            }
            keep
        });
        self.entries.remove(&key);
        while self.entries.len() >= self.cap {
            // A linear scan: it runs only at the cap, over at most `cap` entries.
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) else {
                break;
            };
            self.entries.remove(&oldest);
            dropped.push(oldest);
        }
        self.entries.insert(key, (value, now));
        dropped
    }

    fn remove(&mut self, key: &ThreadKey) -> Option<V> {
        self.entries.remove(key).map(|(v, _)| v)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
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
        thread_ts: Some(event.get("thread_ts").and_then(Value::as_str).unwrap_or(ts).to_string()),
        user: event.get("user")?.as_str()?.to_string(),
        text: strip_mentions(event.get("text").and_then(Value::as_str).unwrap_or("")),
        response_url: None,
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
        thread_ts: Some(thread_ts.to_string()),
        user: user.to_string(),
        text: value.to_string(),
        response_url: None,
    };
    Some((format!("action:{user}:{action_ts}:{}", action.get("action_id")?.as_str()?), inbound))
}

/// A slash command (`/parley how healthy is eu-west`): Socket Mode's
/// `slash_commands` payload and the Events API's form fields are the same flat
/// string fields (`command`, `text`, `user_id`, `channel_id`, `trigger_id`,
/// `response_url`, ...). The `trigger_id` de-duplicates; an empty command text
/// asks for help.
pub fn parse_slash_command(payload: &Value) -> Option<(Option<String>, Inbound)> {
    let field = |name: &str| payload.get(name).and_then(Value::as_str).map(str::trim).filter(|v| !v.is_empty());
    field("command")?;
    let text = field("text").unwrap_or("help");
    let inbound = Inbound {
        channel: field("channel_id")?.to_string(),
        thread_ts: None,
        user: field("user_id")?.to_string(),
        text: text.split_whitespace().collect::<Vec<_>>().join(" "),
        response_url: field("response_url").map(str::to_string),
    };
    Some((field("trigger_id").map(|t| format!("command:{t}")), inbound))
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
                thread_ts: Some("10.1".into()),
                user: "U1".into(),
                text: "how healthy is us-east?".into(),
                response_url: None,
            }
        );
        let bot = json!({"type": "event_callback", "event": {"type": "message", "channel_type": "im",
            "bot_id": "B1", "user": "U1", "channel": "D1", "ts": "1", "text": "hi"}});
        assert!(parse_event(&bot).is_none());
        let click = json!({"type": "block_actions", "user": {"id": "U2"}, "channel": {"id": "C1"},
            "container": {"thread_ts": "10.1"}, "message": {"ts": "11.0"},
            "actions": [{"action_id": "parley_confirm", "value": "yes", "action_ts": "12.0"}]});
        let (key, i) = parse_block_actions(&click).unwrap();
        assert_eq!((i.thread_ts.as_deref(), i.text.as_str(), i.user.as_str()), (Some("10.1"), "yes", "U2"));
        assert_eq!(key, "action:U2:12.0:parley_confirm");
    }

    #[test]
    fn slash_commands_are_read_from_their_flat_fields() {
        let p = json!({"token": "t", "team_id": "T1", "team_domain": "acme", "channel_id": "C9",
            "channel_name": "ops", "user_id": "U7", "user_name": "ann", "command": "/parley",
            "text": "  how healthy   is eu-west ", "api_app_id": "A1", "is_enterprise_install": "false",
            "response_url": "https://hooks.slack.com/commands/T1/1/x", "trigger_id": "13.45.ab"});
        let (key, i) = parse_slash_command(&p).unwrap();
        assert_eq!(key.as_deref(), Some("command:13.45.ab"));
        assert_eq!(
            i,
            Inbound {
                channel: "C9".into(),
                thread_ts: None,
                user: "U7".into(),
                text: "how healthy is eu-west".into(),
                response_url: Some("https://hooks.slack.com/commands/T1/1/x".into()),
            }
        );
        let bare = json!({"command": "/parley", "text": "", "user_id": "U7", "channel_id": "C9"});
        let (key, i) = parse_slash_command(&bare).unwrap();
        assert_eq!((key, i.text.as_str()), (None, "help"));
        assert!(parse_slash_command(&json!({"text": "hi", "user_id": "U7", "channel_id": "C9"})).is_none());
    }

    fn key(thread: &str) -> ThreadKey {
        ("C1".to_string(), thread.to_string())
    }

    #[test]
    fn idle_thread_conversations_expire() {
        let t0 = Instant::now();
        let mut t = Threads::new(Duration::from_secs(60), 10);
        t.insert(key("a"), 1, t0);
        t.insert(key("b"), 2, t0);
        // Used at 50 s: idle for 50 s at 100 s, so still there; `b` is not.
        assert_eq!(t.get(&key("a"), t0 + Duration::from_secs(50)), Some(&1));
        assert_eq!(t.get(&key("a"), t0 + Duration::from_secs(100)), Some(&1));
        assert_eq!(t.get(&key("b"), t0 + Duration::from_secs(100)), None);
        assert_eq!(t.len(), 1, "the expired one is gone, not just hidden");
        // Inserting sweeps every expired entry.
        let dropped = t.insert(key("c"), 3, t0 + Duration::from_secs(161));
        assert_eq!(dropped, vec![key("a")]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn the_thread_map_is_capped_dropping_the_least_recently_used() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut t = Threads::new(Duration::from_secs(3600), 3);
        assert!(t.insert(key("a"), 1, at(1)).is_empty());
        assert!(t.insert(key("b"), 2, at(2)).is_empty());
        assert!(t.insert(key("c"), 3, at(3)).is_empty());
        // `a` was used last, so `b` is now the least recently used.
        assert_eq!(t.get(&key("a"), at(4)), Some(&1));
        assert_eq!(t.insert(key("d"), 4, at(5)), vec![key("b")]);
        assert_eq!(t.insert(key("e"), 5, at(6)), vec![key("c")]);
        assert_eq!(t.len(), 3);
        assert_eq!(t.get(&key("b"), at(7)), None);
        assert_eq!(t.get(&key("a"), at(7)), Some(&1));
        // Replacing a key does not evict anything.
        assert!(t.insert(key("a"), 10, at(8)).is_empty());
        assert_eq!(t.get(&key("a"), at(9)), Some(&10));
        assert_eq!(t.remove(&key("d")), Some(4));
        assert_eq!(t.len(), 2);
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
