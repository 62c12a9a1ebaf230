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
//! dropped by key in a bounded recently-seen set. Messages from bots (another app's
//! mention, or this bot's own) are never answered, so two bots cannot talk in a loop.
//!
//! A Confirm or Cancel button answers the one proposal it was shown with (its value
//! names it); once that proposal is answered, replaced or expired, the message is
//! rewritten without its buttons, saying who answered and when.
//!
//! As a client of `parley serve` (`--server`), the bridge is one client serving many
//! people: each Slack user has their own server session in each thread, every turn
//! names its speaker (`on_behalf_of`: `slack:<user id>` and the role `[slack.users]`
//! gives them), and the server caps that role at the bridge token's and audits the
//! Slack user. A yes or no (typed or clicked) answers only its speaker's own
//! proposal; someone else's "yes" in the thread is told whose proposal it is.
//!
//! Rollout progress is one message per deployment, rewritten with `chat.update`; the
//! end posts a summary. Events are recorded as they come, whoever started the
//! rollout, and a finished one is kept for a while, so a rollout that ends before its
//! "Started" reply is posted (a 429 can hold that back) still reports how it ended.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::time::Instant;

use super::blocks;
use super::config::{Secrets, SlackSettings};
use super::text;
use super::web::WebClient;
use crate::client::{Client, Said, ServerEvent, Speaker};
use crate::dialog::Session;
use crate::ops::{Actor, DeploymentStatus, Operation};
use crate::orchestrate::{announce, RolloutEvent};
use crate::reply::Outcome;

/// How many event keys are remembered for de-duplication. Slack redelivers within
/// minutes, so a few thousand recent keys are plenty and the memory stays bounded.
const SEEN_CAPACITY: usize = 10_000;

/// How long the progress of a rollout nobody in Slack follows (yet) is kept after it
/// finished, and at most how many such: a reply held back by Slack's rate limits
/// (`Retry-After`, five attempts) still finds how its rollout ended.
const KEEP_FINISHED: Duration = Duration::from_secs(15 * 60);
const MAX_UNFOLLOWED: usize = 256;

/// Sessions are created by the application (`Parley::session`), not by the bridge.
pub type SessionFactory = Box<dyn Fn(Actor) -> Session + Send + Sync>;

/// Where the bridge's turns are answered.
pub enum Turns {
    /// In this process: one dialog session per thread, its actor the speaker.
    Local(SessionFactory),
    /// By a `parley serve`: one server session per thread and Slack user.
    Server(Client),
}

/// One thread's conversation state, as its [`Turns`] keeps it.
enum Conversation {
    /// Boxed: a thread's state is kept per thread, most of them server-mode small.
    Local(Option<Box<Session>>),
    /// Per Slack user: the server session's id and the proposal it waits for.
    Server { nonce: u64, users: HashMap<String, ServerSession> },
}

struct ServerSession {
    id: String,
    pending: Option<crate::reply::Proposal>,
}

/// What one turn did to the confirmations in the thread.
struct Turned {
    reply: crate::reply::Reply,
    /// The speaker's pending proposal before and after the turn.
    before: Option<String>,
    pending: Option<String>,
    /// Server mode: only the speaker's own shown proposals are theirs to close;
    /// others' still-open proposals stay as they are.
    owner: Option<String>,
    others_pending: Vec<String>,
}

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
    /// A click on Confirm or Cancel: the proposal it answers.
    pub answer: Option<Answer>,
}

/// A Confirm or Cancel click.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The proposal the button was shown with; empty for a button that names none.
    pub proposal: String,
    pub yes: bool,
    /// The message the button is on, and that message as Slack sent it (for
    /// rewriting it without its buttons).
    pub message_ts: String,
    pub message: Option<Value>,
}

/// A message in this thread showing Confirm and Cancel for a proposal.
struct Shown {
    /// Who asked (the Slack user id).
    owner: String,
    proposal: String,
    ts: String,
    message: Value,
    expires_at: chrono::DateTime<chrono::Utc>,
}

type ThreadKey = (String, String);

pub struct Bridge {
    settings: SlackSettings,
    secrets: Secrets,
    web: WebClient,
    turns: Turns,
    threads: Mutex<Threads<mpsc::UnboundedSender<Inbound>>>,
    seen: Mutex<Seen>,
    /// Names slash-command conversations until their answer gives them a thread.
    commands: AtomicU64,
    progress: Mutex<HashMap<String, Progress>>,
    progress_changed: Notify,
}

impl Bridge {
    pub fn new(settings: SlackSettings, secrets: Secrets, web: WebClient, turns: Turns) -> Arc<Bridge> {
        let threads = Threads::new(settings.session_idle, settings.max_sessions);
        Arc::new(Bridge {
            settings,
            secrets,
            web,
            turns,
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
        let mut conversation = match &self.turns {
            Turns::Local(_) => Conversation::Local(None),
            Turns::Server(_) => Conversation::Server { nonce: rand::random(), users: HashMap::new() },
        };
        let mut shown: Vec<Shown> = Vec::new();
        while let Some(inbound) = rx.recv().await {
            // Events of a rollout this turn starts come after this instant.
            let turn_began = Instant::now();
            let Turned { reply, before, pending, owner, others_pending } =
                self.turn(&mut conversation, &channel, &inbound).await;
            self.close_answered(
                &channel,
                &inbound,
                before.as_deref(),
                pending.as_deref(),
                (owner.as_deref(), &others_pending),
                &mut shown,
            )
            .await;
            let message = blocks::reply_message(&reply);
            let token = &self.secrets.bot_token;
            match self.web.post_message(token, &channel, thread_ts.as_deref(), &message).await {
                Ok(ts) => {
                    if let (true, Some(p)) = (reply.needs_confirmation, &reply.proposal) {
                        if !ts.is_empty() {
                            shown.push(Shown {
                                owner: inbound.user.clone(),
                                proposal: p.id.clone(),
                                ts: ts.clone(),
                                message: message.clone(),
                                expires_at: p.expires_at,
                            });
                        }
                    }
                    if thread_ts.is_none() && !ts.is_empty() {
                        self.rekey(&key, (channel.clone(), ts.clone()));
                        thread_ts = Some(ts);
                    }
                }
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
                self.follow(id, &channel, thread, turn_began);
            }
        }
    }

    /// One turn of the thread's conversation, in this process or on the server.
    async fn turn(&self, conversation: &mut Conversation, channel: &str, inbound: &Inbound) -> Turned {
        match (conversation, &self.turns) {
            (Conversation::Local(session), Turns::Local(factory)) => {
                let actor = self.actor(&inbound.user, channel);
                let session = match session {
                    Some(s) => {
                        s.set_actor(actor);
                        s
                    }
                    None => session.insert(Box::new(factory(actor))),
                };
                let before = session.proposal().map(|p| p.id.clone());
                let reply = match &inbound.answer {
                    Some(a) => session.answer_proposal(&a.proposal, a.yes).await,
                    None => session.handle(&inbound.text).await,
                };
                let pending = session.proposal().map(|p| p.id.clone());
                Turned { reply, before, pending, owner: None, others_pending: Vec::new() }
            }
            (Conversation::Server { nonce, users }, Turns::Server(client)) => {
                let others: Vec<(String, crate::reply::Proposal)> = users
                    .iter()
                    .filter(|(u, _)| *u != &inbound.user)
                    .filter_map(|(u, s)| s.pending.clone().map(|p| (u.clone(), p)))
                    .collect();
                let session = users
                    .entry(inbound.user.clone())
                    .or_insert_with(|| ServerSession { id: server_session_id(*nonce, &inbound.user), pending: None });
                let before = session.pending.as_ref().map(|p| p.id.clone());
                let said = match &inbound.answer {
                    Some(a) => Said::Answer { proposal: a.proposal.clone(), yes: a.yes },
                    None => Said::Words(inbound.text.clone()),
                };
                let speaker = Speaker {
                    user: format!("slack:{}", inbound.user),
                    role: self.settings.role_for(&inbound.user, channel),
                };
                let frontend = format!("slack:{channel}");
                let mut reply = match client.turn_for(&session.id, &said, &frontend, &speaker).await {
                    Ok(answer) => {
                        session.pending = answer.pending;
                        answer.reply
                    }
                    Err(e) => {
                        tracing::warn!(channel, error = %e, "the Parley server did not answer a slack turn");
                        crate::reply::Reply::new(Outcome::Failed, e.to_string())
                    }
                };
                let pending = session.pending.as_ref().map(|p| p.id.clone());
                not_yours(inbound, &mut reply, &others);
                Turned {
                    reply,
                    before,
                    pending,
                    owner: Some(inbound.user.clone()),
                    others_pending: others.into_iter().map(|(_, p)| p.id).collect(),
                }
            }
            // A conversation is made for the bridge's own kind of turns (above).
            (_, _) => Turned {
                reply: crate::reply::Reply::new(Outcome::Failed, "This conversation lost its session; ask again."),
                before: None,
                pending: None,
                owner: None,
                others_pending: Vec::new(),
            },
        }
    }

    /// Rewrites, without their buttons, the messages whose proposal is no longer
    /// pending after this turn (`before`: pending before it, `pending`: now), saying
    /// what became of it. A click on a button that answers nothing pending closes
    /// the message it is on too.
    async fn close_answered(
        &self,
        channel: &str,
        inbound: &Inbound,
        before: Option<&str>,
        pending: Option<&str>,
        (owner, others_pending): (Option<&str>, &[String]),
        shown: &mut Vec<Shown>,
    ) {
        let now = chrono::Utc::now();
        let at = now.format("%H:%M:%S UTC");
        let who = text::user_mention(&inbound.user);
        let token = &self.secrets.bot_token;
        // On a server each person's proposals are their own session's: this turn can
        // close only the speaker's.
        let (closed, open): (Vec<Shown>, Vec<Shown>) =
            shown.drain(..).partition(|s| Some(s.proposal.as_str()) != pending && owner.is_none_or(|o| o == s.owner));
        *shown = open;
        let mut rewritten: Vec<String> = Vec::new();
        for s in closed {
            let note = match &inbound.answer {
                // This click answered it.
                Some(a) if a.proposal == s.proposal && before == Some(s.proposal.as_str()) => {
                    if now > s.expires_at {
                        format!("Expired at {}; nothing was changed.", s.expires_at.format("%H:%M UTC"))
                    } else if a.yes {
                        format!("Confirmed by {who} at {at}.")
                    } else {
                        format!("Cancelled by {who} at {at}.")
                    }
                }
                _ if now > s.expires_at => {
                    format!("Expired at {}; nothing was changed by it.", s.expires_at.format("%H:%M UTC"))
                }
                _ => format!("No longer pending after {who}'s message at {at}; these buttons do nothing now."),
            };
            if let Err(e) = self.web.update(token, channel, &s.ts, &blocks::closed_message(&s.message, &note)).await {
                tracing::warn!(channel, error = %e, "could not close a confirmation in slack");
            }
            rewritten.push(s.ts);
        }
        // A button from a message this conversation no longer knows (an earlier
        // session, a restart): its message is closed from what Slack sent.
        if let Some(a) = &inbound.answer {
            let answered_now = before == Some(a.proposal.as_str()) && pending != before;
            let still_open = Some(a.proposal.as_str()) == pending;
            let someone_elses = others_pending.contains(&a.proposal);
            if !still_open && !answered_now && !someone_elses && !rewritten.contains(&a.message_ts) {
                if let Some(message) = a.message.as_ref().filter(|m| m.get("blocks").is_some()) {
                    let note = format!("No longer pending; {who} clicked at {at} and nothing was changed.");
                    let closed = blocks::closed_message(message, &note);
                    if let Err(e) = self.web.update(token, channel, &a.message_ts, &closed).await {
                        tracing::warn!(channel, error = %e, "could not close a stale confirmation in slack");
                    }
                }
            }
        }
    }

    /// Progress of `deployment` goes to this thread from now on. What was recorded
    /// of it before `since` belongs to an earlier run (a finished rollout now rolled
    /// back or retried) and is dropped; anything since is kept and reported.
    fn follow(&self, deployment: &str, channel: &str, thread_ts: &str, since: Instant) {
        let mut progress = lock(&self.progress);
        let p = progress.entry(deployment.to_string()).or_default();
        if p.finished_at.is_some_and(|t| t < since) {
            *p = Progress::default();
        }
        p.location = Some((channel.to_string(), thread_ts.to_string()));
        p.dirty = true;
        drop(progress);
        self.progress_changed.notify_one();
    }

    /// Follows the orchestrator's events until they end, keeping one progress
    /// message per followed deployment up to date. Receiving never waits for Slack
    /// (a slow or rate-limited `chat.update` cannot make the event channel lag), and
    /// events that arrive while an update is on its way are folded into the next one,
    /// so a fast rollout does not flood Slack.
    pub async fn run_progress(self: Arc<Self>, mut events: broadcast::Receiver<RolloutEvent>) {
        let receive = async {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        self.record(&e);
                        self.progress_changed.notify_one();
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(n, "slack progress missed events"),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        self.publish_progress(receive).await;
    }

    /// [`Bridge::run_progress`] from a server's event stream (`first`: the stream
    /// already subscribed to, before any turn was taken, so no rollout's start is
    /// missed). A stream that ends (the server restarting) is subscribed to again.
    pub async fn run_server_progress(self: Arc<Self>, client: Client, first: crate::client::Events) {
        let receive = async {
            let mut events = Some(first);
            loop {
                let Some(mut stream) = events.take() else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match client.events().await {
                        Ok(s) => events = Some(s),
                        Err(e) => tracing::warn!(error = %e, "slack progress: the event stream is not back yet"),
                    }
                    continue;
                };
                while let Some(event) = stream.next_event().await {
                    match event {
                        ServerEvent::Rollout(e) => {
                            self.record(&e);
                            self.progress_changed.notify_one();
                        }
                        ServerEvent::Lagged { missed } => tracing::warn!(missed, "slack progress missed events"),
                        ServerEvent::Shutdown(_) => break,
                        ServerEvent::Routing(_) | ServerEvent::Fleet { .. } => {}
                    }
                }
                tracing::warn!("slack progress: the server's event stream ended; subscribing again");
            }
        };
        self.publish_progress(receive).await;
    }

    async fn publish_progress(&self, receive: impl std::future::Future<Output = ()>) {
        let publish = async {
            loop {
                self.progress_changed.notified().await;
                self.flush().await;
            }
        };
        tokio::select! {
            () = receive => {}
            () = publish => {}
        }
        self.flush().await;
    }

    fn record(&self, event: &RolloutEvent) {
        let id = crate::orchestrate::event_deployment(event);
        let mut progress = lock(&self.progress);
        let p = progress.entry(id.to_string()).or_default();
        match event {
            RolloutEvent::AgentInstalled { .. } => p.installed += 1,
            RolloutEvent::Finished { status, .. } => {
                p.finished = announce(event).map(|summary| (*status, summary));
                p.finished_at = Some(Instant::now());
            }
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
            // Deployments nobody in Slack follows are kept a while after they finish
            // (their follower may still be on its way), then forgotten, so the map
            // stays small.
            let now = Instant::now();
            progress.retain(|_, p| {
                p.location.is_some() || p.finished_at.is_none_or(|t| now.saturating_duration_since(t) < KEEP_FINISHED)
            });
            let mut unfollowed: Vec<(Instant, String)> = progress
                .iter()
                .filter(|(_, p)| p.location.is_none())
                .filter_map(|(id, p)| p.finished_at.map(|t| (t, id.clone())))
                .collect();
            if unfollowed.len() > MAX_UNFOLLOWED {
                unfollowed.sort();
                for (_, id) in unfollowed.iter().take(unfollowed.len() - MAX_UNFOLLOWED) {
                    progress.remove(id);
                }
            }
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
                Some((status, _)) => status.to_string(),
                None => {
                    format!("in progress, {} agent{} installed", p.installed, crate::words::s(p.installed))
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
            if let Some((_, summary)) = &p.finished {
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
    /// How it ended, and the sentence that says so.
    finished: Option<(DeploymentStatus, String)>,
    finished_at: Option<Instant>,
    dirty: bool,
}

/// A server session id for one Slack user in one thread (`nonce` is the thread's):
/// letters, digits, `-` and `_`, at most 64.
fn server_session_id(nonce: u64, user: &str) -> String {
    let user: String = user.chars().filter(char::is_ascii_alphanumeric).take(40).collect();
    format!("slack-{nonce:016x}-{user}")
}

/// A yes or no that found nothing of its speaker's to answer while someone else's
/// proposal waits in the thread: says whose it is, so nobody thinks it was confirmed.
/// A click on someone else's button is said to have changed nothing (the server's
/// "no longer pending" would read as if the proposal were gone); a typed yes or no
/// keeps the server's words and gets the note after them.
fn not_yours(inbound: &Inbound, reply: &mut crate::reply::Reply, others: &[(String, crate::reply::Proposal)]) {
    let owner_of = |id: &str| others.iter().find(|(_, p)| p.id == id);
    let (owner, proposal) = match &inbound.answer {
        Some(a) => match owner_of(&a.proposal) {
            Some(found) => found,
            None => return,
        },
        None => {
            let answered_nothing = reply.outcome == Outcome::Answered
                && matches!(reply.operation, Some(Operation::Confirm | Operation::Cancel));
            match others.first() {
                Some(found) if answered_nothing => found,
                _ => return,
            }
        }
    };
    let note = format!(
        "The proposal waiting in this thread ({}) is {owner}'s: only they can confirm or cancel it; a yes or no answers only what its speaker asked for.",
        proposal.summary
    );
    reply.message = match &inbound.answer {
        Some(_) => format!("Nothing was changed. {note}"),
        None => format!("{} {note}", reply.message),
    };
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

/// An `event_callback` with an `app_mention`, or a direct message, from a person.
/// Returns the `event_id` (for de-duplication) and what was said, decoded from
/// Slack's formatting. Anything a bot wrote is ignored: it carries `bot_id` or the
/// `bot_message` subtype, or comes from this app's own bot user (named in the
/// payload's `authorizations`).
pub fn parse_event(payload: &Value) -> Option<(Option<String>, Inbound)> {
    if payload.get("type")?.as_str()? != "event_callback" {
        return None;
    }
    let event = payload.get("event")?;
    let kind = event.get("type")?.as_str()?;
    let own: Vec<String> = payload
        .get("authorizations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("is_bot").and_then(Value::as_bool) == Some(true))
        .filter_map(|a| a.get("user_id").and_then(Value::as_str).map(str::to_string))
        .collect();
    let user = event.get("user").and_then(Value::as_str);
    let subtype = event.get("subtype").and_then(Value::as_str);
    if event.get("bot_id").is_some()
        || subtype == Some("bot_message")
        || user.is_some_and(|u| own.iter().any(|o| o == u))
    {
        return None;
    }
    let direct = kind == "message"
        && event.get("channel_type").and_then(Value::as_str) == Some("im")
        // Edits, joins and the like come as subtypes.
        && subtype.is_none();
    if !(kind == "app_mention" || direct) {
        return None;
    }
    let ts = event.get("ts")?.as_str()?;
    let raw = event.get("text").and_then(Value::as_str).unwrap_or("");
    let inbound = Inbound {
        channel: event.get("channel")?.as_str()?.to_string(),
        thread_ts: Some(event.get("thread_ts").and_then(Value::as_str).unwrap_or(ts).to_string()),
        user: user?.to_string(),
        text: text::decode(strip_leading_mention(raw, &own), &own),
        response_url: None,
        answer: None,
    };
    let id = payload.get("event_id").and_then(Value::as_str).map(str::to_string);
    Some((id, inbound))
}

/// A `block_actions` click on one of our buttons: a follow-up's value is the
/// utterance; Confirm and Cancel answer the proposal their value names.
pub fn parse_block_actions(payload: &Value) -> Option<(String, Inbound)> {
    if payload.get("type")?.as_str()? != "block_actions" {
        return None;
    }
    let action = payload.get("actions")?.as_array()?.first()?;
    let value = action.get("value")?.as_str()?;
    let action_id = action.get("action_id")?.as_str()?;
    let message = payload.get("message");
    let thread_ts = payload
        .get("container")
        .and_then(|c| c.get("thread_ts"))
        .or_else(|| message.and_then(|m| m.get("thread_ts")))
        .or_else(|| message.and_then(|m| m.get("ts")))
        .and_then(Value::as_str)?;
    let user = payload.get("user")?.get("id")?.as_str()?;
    let action_ts = action.get("action_ts").and_then(Value::as_str).unwrap_or("");
    let answer = match action_id {
        blocks::ACTION_CONFIRM | blocks::ACTION_CANCEL => Some(Answer {
            // A value naming no proposal (an older message's "yes") answers nothing.
            proposal: blocks::parse_answer_value(value).map(|(id, _)| id).unwrap_or_default(),
            yes: action_id == blocks::ACTION_CONFIRM,
            message_ts: message
                .and_then(|m| m.get("ts"))
                .or_else(|| payload.get("container").and_then(|c| c.get("message_ts")))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            message: message.cloned(),
        }),
        _ => None,
    };
    let inbound = Inbound {
        channel: payload.get("channel")?.get("id")?.as_str()?.to_string(),
        thread_ts: Some(thread_ts.to_string()),
        user: user.to_string(),
        text: if answer.is_some() { String::new() } else { value.to_string() },
        response_url: None,
        answer,
    };
    Some((format!("action:{user}:{action_ts}:{action_id}"), inbound))
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
        text: text::decode(text, &[]),
        response_url: field("response_url").map(str::to_string),
        answer: None,
    };
    Some((field("trigger_id").map(|t| format!("command:{t}")), inbound))
}

/// `<@U123> how healthy is us-east?` -> `how healthy is us-east?`: the mention an
/// `app_mention` starts with is the bot's, even where the payload does not say
/// which user the bot is. Mentions of anyone else are left for [`text::decode`].
fn strip_leading_mention<'a>(text: &'a str, own: &[String]) -> &'a str {
    let trimmed = text.trim_start();
    if let (true, Some(end)) = (trimmed.starts_with("<@"), trimmed.find('>')) {
        let id = trimmed[2..end].split('|').next().unwrap_or("");
        if own.is_empty() || own.iter().any(|o| o == id) {
            return &trimmed[end + 1..];
        }
    }
    text
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
                answer: None,
            }
        );
        let bot = json!({"type": "event_callback", "event": {"type": "message", "channel_type": "im",
            "bot_id": "B1", "user": "U1", "channel": "D1", "ts": "1", "text": "hi"}});
        assert!(parse_event(&bot).is_none());
        let click = json!({"type": "block_actions", "user": {"id": "U2"}, "channel": {"id": "C1"},
            "container": {"thread_ts": "10.1"}, "message": {"ts": "11.0"},
            "actions": [{"action_id": "parley_confirm", "value": "yes", "action_ts": "12.0"}]});
        let (key, i) = parse_block_actions(&click).unwrap();
        assert_eq!((i.thread_ts.as_deref(), i.user.as_str()), (Some("10.1"), "U2"));
        // A bare "yes" names no proposal, so it answers none.
        let answer = i.answer.unwrap();
        assert_eq!((answer.proposal.as_str(), answer.yes, answer.message_ts.as_str()), ("", true, "11.0"));
        assert_eq!(key, "action:U2:12.0:parley_confirm");
        let follow_up = json!({"type": "block_actions", "user": {"id": "U2"}, "channel": {"id": "C1"},
            "container": {"thread_ts": "10.1"}, "message": {"ts": "11.0"},
            "actions": [{"action_id": "parley_follow_up_0", "value": "show topology", "action_ts": "12.1"}]});
        let (_, i) = parse_block_actions(&follow_up).unwrap();
        assert_eq!((i.text.as_str(), i.answer), ("show topology", None));
    }

    #[test]
    fn what_bots_write_is_never_answered() {
        let auth = json!([{"enterprise_id": null, "team_id": "T1", "user_id": "UBOT", "is_bot": true}]);
        let event =
            |event: Value| json!({"type": "event_callback", "event_id": "Ev9", "authorizations": auth, "event": event});
        // Another app mentioning this one: it has a bot_id.
        let other_bot = event(json!({"type": "app_mention", "user": "UOTHERBOT", "bot_id": "B2", "channel": "C1",
            "ts": "1.1", "text": "<@UBOT> how healthy is us-east?"}));
        assert!(parse_event(&other_bot).is_none());
        let legacy = event(json!({"type": "app_mention", "subtype": "bot_message", "username": "relay",
            "channel": "C1", "ts": "1.2", "text": "<@UBOT> help"}));
        assert!(parse_event(&legacy).is_none());
        let own = event(json!({"type": "message", "channel_type": "im", "user": "UBOT", "channel": "D1",
            "ts": "1.3", "text": "I didn't understand"}));
        assert!(parse_event(&own).is_none());
        // A person, naming the bot and a channel, with Slack's escaping.
        let person = event(json!({"type": "app_mention", "user": "U1", "channel": "C1", "ts": "1.4",
            "text": "<@UBOT> how healthy is <#C7|eu-west> &amp; <@U2>?"}));
        let (_, i) = parse_event(&person).unwrap();
        assert_eq!(i.text, "how healthy is eu-west & @U2 ?");
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
                answer: None,
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
