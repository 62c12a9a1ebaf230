//! Where the TUI's inputs come from: the in-process [`Parley`], or a `parley serve`
//! the TUI is a client of. Either way the event loop reads the same [`Feeds`] —
//! answers to turns, deployment lists, news (rollout events, notices) and fleet
//! snapshots — each fed by a task of its own, so which source it is never decides
//! what the loop does, and nothing the source waits for ever holds up a keystroke.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::app::Parley;
use crate::client::{Client, ServerEvent};
use crate::intent::Vocabulary;
use crate::ops::Actor;
use crate::orchestrate::RolloutEvent;
use crate::registry::{DeploymentFilter, DeploymentRecord};
use crate::reply::{Outcome, Reply};
use crate::topology::poller::TopologyEvent;
use crate::topology::{Catalog, HealthThresholds, Topology, TopologyHandle};

use super::DEPLOYMENTS_SHOWN;

/// How often a client TUI re-reads the server's fleet snapshot (and at once after a
/// fleet event).
const FLEET_REFRESH: Duration = Duration::from_secs(1);
/// How long a client TUI waits before it tries the event stream again.
const RECONNECT: Duration = Duration::from_secs(2);

/// Where the TUI's turns, fleet and rollouts are.
pub enum Source<'a> {
    /// This process runs the fleet, the orchestrator and the session.
    InProcess { parley: &'a Parley, actor: Actor },
    /// A `parley serve` does; the TUI is one of its clients. `catalog` is this
    /// configuration's, to rebuild the server's snapshots with.
    Server { client: &'a Client, catalog: Arc<Catalog> },
}

/// The session's answer to one utterance, with what the UI needs beside it.
pub struct Answer {
    pub reply: Reply,
    /// When the yes/no the session waits for was asked, if it waits for one.
    pub confirmation: Option<Instant>,
    pub words: Vec<String>,
}

/// Something that happened meanwhile, for the loop to show.
#[derive(Debug, Clone, PartialEq)]
pub enum News {
    Rollout(RolloutEvent),
    /// A line for the chat (a region changing, a routing notice, the server stopping).
    Notice(String),
    /// Events were missed: re-read the deployments.
    Reread,
}

/// The fleet as the screen shows it.
pub enum Snapshots {
    Local(TopologyHandle),
    /// Refreshed from the server by a task; the newest one.
    Remote(watch::Receiver<Arc<Topology>>),
}

impl Snapshots {
    /// The newest snapshot (the same `Arc` while nothing changed).
    pub fn current(&self) -> Arc<Topology> {
        match self {
            Snapshots::Local(h) => h.snapshot(),
            Snapshots::Remote(rx) => Arc::clone(&rx.borrow()),
        }
    }
}

/// What the loop reads and writes, whichever the source.
pub struct Feeds {
    /// Utterances to the session.
    pub say: mpsc::Sender<String>,
    pub answers: mpsc::Receiver<Answer>,
    /// Asks for the deployments to be listed again; asks coalesce (it holds one).
    pub relist: mpsc::Sender<()>,
    pub lists: mpsc::Receiver<Vec<DeploymentRecord>>,
    pub news: mpsc::Receiver<News>,
    pub fleet: Snapshots,
    pub thresholds: HealthThresholds,
    /// Notices to show first (rollouts a restart found interrupted).
    pub opening: Vec<String>,
    pub words: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Feeds {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The channels both sources fill.
struct Plumbing {
    say_tx: mpsc::Sender<String>,
    say_rx: mpsc::Receiver<String>,
    answer_tx: mpsc::Sender<Answer>,
    answer_rx: mpsc::Receiver<Answer>,
    relist_tx: mpsc::Sender<()>,
    relist_rx: mpsc::Receiver<()>,
    list_tx: mpsc::Sender<Vec<DeploymentRecord>>,
    list_rx: mpsc::Receiver<Vec<DeploymentRecord>>,
    news_tx: mpsc::Sender<News>,
    news_rx: mpsc::Receiver<News>,
}

impl Plumbing {
    fn new() -> Plumbing {
        let (say_tx, say_rx) = mpsc::channel(16);
        let (answer_tx, answer_rx) = mpsc::channel(16);
        let (relist_tx, relist_rx) = mpsc::channel(1);
        let (list_tx, list_rx) = mpsc::channel(4);
        let (news_tx, news_rx) = mpsc::channel(256);
        Plumbing { say_tx, say_rx, answer_tx, answer_rx, relist_tx, relist_rx, list_tx, list_rx, news_tx, news_rx }
    }
}

impl Source<'_> {
    /// Starts the tasks that feed the loop. A server that does not answer is an
    /// error here, before the terminal is taken.
    pub async fn feeds(&self) -> Result<Feeds, crate::client::ClientError> {
        match self {
            Source::InProcess { parley, actor } => Ok(local(parley, actor.clone())),
            Source::Server { client, catalog } => remote(client, Arc::clone(catalog)).await,
        }
    }
}

fn interrupted_notices(parley: &Parley) -> Vec<String> {
    parley
        .interrupted()
        .iter()
        .map(|d| {
            if d.status == crate::ops::DeploymentStatus::RollingBack {
                let why = d.reason.as_deref().unwrap_or("returning its agents");
                return format!("{} was rolling back when Parley stopped; finishing it now: {why}", d.name);
            }
            format!(
                "{} was interrupted ({}); say \"resume {}\" or \"roll back {}\".",
                d.name,
                d.reason.as_deref().unwrap_or("Parley stopped"),
                d.name,
                d.name
            )
        })
        .collect()
}

/// Forwards a broadcast into the news, each message as `map` makes it (or skips it).
fn forward<T: Clone + Send + 'static>(
    mut rx: broadcast::Receiver<T>,
    news: mpsc::Sender<News>,
    map: impl Fn(Result<T, u64>) -> Option<News> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let item = match rx.recv().await {
                Ok(v) => Ok(v),
                Err(broadcast::error::RecvError::Lagged(n)) => Err(n),
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if let Some(n) = map(item) {
                if news.send(n).await.is_err() {
                    return;
                }
            }
        }
    })
}

/// The in-process source: the session in a task, the registry read by another, the
/// orchestrator's, poller's and router's broadcasts forwarded.
fn local(parley: &Parley, actor: Actor) -> Feeds {
    let services = Arc::clone(parley.services());
    let p = Plumbing::new();
    let mut session = parley.session(actor);
    session.announce_routing_live();
    let words = session.vocabulary().words();
    let (mut say_rx, answer_tx) = (p.say_rx, p.answer_tx);
    let mut tasks = vec![tokio::spawn(async move {
        while let Some(utterance) = say_rx.recv().await {
            let reply = session.handle(&utterance).await;
            let answer =
                Answer { reply, confirmation: session.confirmation_asked(), words: session.vocabulary().words() };
            if answer_tx.send(answer).await.is_err() {
                return;
            }
        }
    })];

    let (registry, mut relist_rx, list_tx) = (services.registry.clone(), p.relist_rx, p.list_tx);
    tasks.push(tokio::spawn(async move {
        let filter = DeploymentFilter { limit: Some(DEPLOYMENTS_SHOWN), ..Default::default() };
        while relist_rx.recv().await.is_some() {
            match registry.list_deployments(&filter).await {
                Ok(list) => {
                    if list_tx.send(list).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not list deployments for the TUI"),
            }
        }
    }));

    tasks.push(forward(services.orchestrator.subscribe(), p.news_tx.clone(), |e| match e {
        Ok(e) => Some(News::Rollout(e)),
        Err(_) => Some(News::Reread),
    }));
    tasks.push(forward(services.poller.events(), p.news_tx.clone(), |e| match e {
        // Single agents come and go in a big fleet; a region changing is news.
        Ok(e @ TopologyEvent::RegionChanged { .. }) => Some(News::Notice(crate::ui::repl::announce_fleet(&e))),
        _ => None,
    }));
    tasks.push(forward(services.router.notices(), p.news_tx, |n| match n {
        Ok(n) => Some(News::Notice(format!("routing: {n}"))),
        Err(n) => Some(News::Notice(format!("routing: {n} announcements were missed; see `show routing`."))),
    }));

    Feeds {
        say: p.say_tx,
        answers: p.answer_rx,
        relist: p.relist_tx,
        lists: p.list_rx,
        news: p.news_rx,
        fleet: Snapshots::Local(services.topology.clone()),
        thresholds: services.thresholds,
        opening: interrupted_notices(parley),
        words,
        tasks,
    }
}

/// A session id of this TUI's own, kept for the whole run: the confirmations it asks
/// for belong to it, and no other client's yes answers them.
fn session_id() -> String {
    format!("tui-{:016x}-{}", rand::random::<u64>(), std::process::id())
}

/// The client source: turns over `POST /v1/turn` on one session, deployments over
/// `GET /v1/deployments`, news from `GET /v1/events`, and the fleet snapshot read
/// every [`FLEET_REFRESH`] and after each fleet event.
async fn remote(client: &Client, catalog: Arc<Catalog>) -> Result<Feeds, crate::client::ClientError> {
    let first = client.topology(Arc::clone(&catalog)).await?;
    let words = Vocabulary::from_topology(&first).words();
    let (fleet_tx, fleet_rx) = watch::channel(first);
    let fleet_changed = Arc::new(Notify::new());
    let p = Plumbing::new();
    let mut tasks = Vec::new();

    {
        let (client, fleet, mut say_rx, answer_tx) = (client.clone(), fleet_rx.clone(), p.say_rx, p.answer_tx);
        tasks.push(tokio::spawn(async move {
            let session = session_id();
            // The proposal now pending and when it was first shown: the same proposal
            // asked again keeps its modal as the operator left it.
            let mut pending: Option<(String, Instant)> = None;
            while let Some(utterance) = say_rx.recv().await {
                let reply = match client.turn_answer(&session, &utterance, "tui").await {
                    Ok(t) => {
                        pending = t.pending.map(|p| match pending.take() {
                            Some((id, asked)) if id == p.id => (id, asked),
                            _ => (p.id, Instant::now()),
                        });
                        t.reply
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a turn failed");
                        Reply::new(Outcome::Failed, e.to_string())
                    }
                };
                let snapshot = Arc::clone(&fleet.borrow());
                let words = Vocabulary::from_topology(&snapshot).words();
                let answer = Answer { reply, confirmation: pending.as_ref().map(|(_, at)| *at), words };
                if answer_tx.send(answer).await.is_err() {
                    return;
                }
            }
        }));
    }

    {
        let (client, mut relist_rx, list_tx) = (client.clone(), p.relist_rx, p.list_tx);
        tasks.push(tokio::spawn(async move {
            while relist_rx.recv().await.is_some() {
                match client.deployments(DEPLOYMENTS_SHOWN).await {
                    Ok(list) => {
                        if list_tx.send(list).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not list deployments for the TUI"),
                }
            }
        }));
    }

    {
        let (client, changed) = (client.clone(), Arc::clone(&fleet_changed));
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(FLEET_REFRESH);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = changed.notified() => {}
                }
                match client.topology(Arc::clone(&catalog)).await {
                    Ok(t) => {
                        if fleet_tx.send(t).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "could not read the server's fleet"),
                }
            }
        }));
    }

    tasks.push(tokio::spawn(follow_events(client.clone(), p.news_tx, fleet_changed)));

    Ok(Feeds {
        say: p.say_tx,
        answers: p.answer_rx,
        relist: p.relist_tx,
        lists: p.list_rx,
        news: p.news_rx,
        fleet: Snapshots::Remote(fleet_rx),
        // The server judges agents by the default thresholds too (app.rs).
        thresholds: HealthThresholds::default(),
        opening: Vec::new(),
        words,
        tasks,
    })
}

/// The event stream as news, for as long as the TUI runs: when the stream ends
/// (the server stopped, or went away) it is tried again, and once back the
/// deployments are re-read, since whatever happened meanwhile was missed.
async fn follow_events(client: Client, news: mpsc::Sender<News>, fleet_changed: Arc<Notify>) {
    let server = client.url().to_string();
    // Whether the operator was told the stream is gone (told once, not per retry).
    let mut lost = false;
    loop {
        match client.events().await {
            Ok(mut events) => {
                if lost {
                    lost = false;
                    let back = format!("The Parley server at {server} answers again.");
                    if news.send(News::Notice(back)).await.is_err() || news.send(News::Reread).await.is_err() {
                        return;
                    }
                }
                while let Some(event) = events.next_event().await {
                    let item = match event {
                        ServerEvent::Rollout(e) => News::Rollout(e),
                        ServerEvent::Routing(text) => News::Notice(format!("routing: {text}")),
                        ServerEvent::Fleet { event, announcement } => {
                            fleet_changed.notify_one();
                            match event {
                                TopologyEvent::RegionChanged { .. } => News::Notice(announcement),
                                _ => continue,
                            }
                        }
                        ServerEvent::Lagged { .. } => News::Reread,
                        ServerEvent::Shutdown(_) => {
                            lost = true;
                            News::Notice(stopped_notice(&server))
                        }
                    };
                    if news.send(item).await.is_err() {
                        return;
                    }
                }
                if !lost {
                    lost = true;
                    let gone =
                        format!("Lost the Parley server at {server}; its rollouts are its own. Reconnecting ...");
                    if news.send(News::Notice(gone)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                if !lost {
                    lost = true;
                    let gone = format!("No event stream from the Parley server at {server}: {e}. Retrying ...");
                    if news.send(News::Notice(gone)).await.is_err() {
                        return;
                    }
                }
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// What the chat says when the server announces it stops.
pub fn stopped_notice(server: &str) -> String {
    format!(
        "The Parley server at {server} stopped; running rollouts carry on when it starts again. \
         Start it with `parley serve`: this TUI reconnects by itself."
    )
}

/// What a client TUI prints on the normal screen once it quit: each deployment that
/// goes on in the server without it, and how to follow it again. `None` when nothing
/// goes on.
pub fn keeps_running(deployments: &[DeploymentRecord], server: &str) -> Option<String> {
    let lines: Vec<String> = deployments
        .iter()
        .filter(|d| d.status.is_active())
        .map(|d| {
            let target = crate::feasibility::scope_words(&d.scope);
            let at = format!("step {} of {}", (d.current_step + 1).min(d.step_count.max(1)), d.step_count);
            let (what, verb) = match d.status {
                crate::ops::DeploymentStatus::Running => (at, "keeps running"),
                crate::ops::DeploymentStatus::Paused => (format!("paused at {at}"), "stays paused"),
                crate::ops::DeploymentStatus::Pending => ("pending".to_string(), "waits"),
                _ => ("rolling back".to_string(), "keeps rolling back"),
            };
            format!(
                "{name} ({ext} {ver} → {target}, {what}) {verb} in the Parley server at {server}; \
                 run `parley` again to follow it, or `parley ask \"show {name}\"`.",
                name = d.name,
                ext = d.extension,
                ver = d.version,
            )
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}
