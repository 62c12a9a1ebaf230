//! The dialog session: the one entry point every front-end calls.
//!
//! A [`Session`] turns an utterance into a [`Reply`]: it parses with the grammar,
//! asks for missing slots and fills them from the next answer, resolves "it"/"that"
//! from the conversation's context, checks roles and feasibility, holds risky
//! operations for a yes/no (which expires after five minutes), executes, and records
//! every turn in the audit log (an executed operation, a refusal, a question, and
//! what was not understood alike). It knows nothing about terminals, Slack or audio.
//!
//! A held yes/no is a [`Proposal`] with its own id: a front-end that shows it with
//! buttons binds them to that id ([`Session::answer_proposal`]), so an old button can
//! never answer a newer proposal. Only its proposer or an admin may cancel it.
//!
//! When the grammar understands nothing, or leaves a slot it could not fill, and a
//! language model is configured, the model is asked; what it proposes goes through
//! the same [`Session::proceed`] path, and anything mutating is always read back for
//! a yes/no. A pending yes/no is never answered by the model.

mod agents;
mod deploy;
mod execute;
mod follow;
mod gates;
mod inspect;
mod render;
mod traffic;
mod troubleshoot;
mod undo;

pub use execute::check;
pub use troubleshoot::diagnosis_reply;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::feasibility::Feasible;
use crate::intent::{with_slot, Vocabulary};
use crate::llm::LlmError;
use crate::ops::{Actor, Effect, Operation, Role, Scope};
use crate::registry::{AuditEntry, AuditResult, DeploymentRecord};
use crate::reply::{Outcome, Proposal, Reply};
use crate::services::Services;
use crate::topology::Topology;

/// How long a risky operation waits for its yes/no.
pub const CONFIRMATION_TTL: Duration = Duration::from_secs(5 * 60);

/// What earlier turns established, for "it", "that" and "the rollout".
#[derive(Debug, Clone, Default)]
struct Context {
    deployment: Option<String>,
    agent: Option<String>,
    scope: Option<Scope>,
    /// A deploy refused because it overlaps an active rollout, for "queue it".
    queueable: Option<Operation>,
    /// The last thing acted on, of any kind, for "undo that".
    acted: Option<undo::Subject>,
    /// The last troubleshooting question, for "and us-east?".
    inquiry: Option<Operation>,
    /// The last operation carried out, for follow-ups ("and us-east?").
    last: Option<Operation>,
}

#[derive(Debug, Clone)]
enum Pending {
    /// An operation waiting for the operator to name a missing slot.
    Slots { op: Operation, missing: Vec<String>, utterance: String, via_llm: bool },
    /// A risky operation waiting for yes/no.
    Confirm {
        op: Operation,
        feasible: Feasible,
        utterance: String,
        asked: Instant,
        summary: String,
        proposal: Proposal,
    },
}

/// One conversation.
pub struct Session {
    services: Arc<Services>,
    actor: Actor,
    context: Context,
    pending: Option<Pending>,
    vocab: Option<(Arc<Topology>, Arc<Vocabulary>)>,
    watching: Option<Operation>,
    confirm_ttl: Duration,
    /// Said before the first reply: deployments a previous Parley left mid-way.
    restart_notice: Option<RestartNotice>,
    /// Routing changes Parley made by itself (cascade, automatic failback), told in the next reply.
    routing_notices: tokio::sync::broadcast::Receiver<String>,
    /// The front-end prints routing announcements itself.
    routing_live: bool,
    /// Whether this turn has written its audit row yet.
    audited: bool,
}

/// What the first reply after a restart leads with.
#[derive(Debug, Clone, PartialEq)]
pub struct RestartNotice {
    pub message: String,
    pub follow_ups: Vec<String>,
}

impl Session {
    pub fn new(services: Arc<Services>, actor: Actor) -> Session {
        let routing_notices = services.router.notices();
        Session {
            services,
            actor,
            context: Context::default(),
            pending: None,
            vocab: None,
            watching: None,
            confirm_ttl: CONFIRMATION_TTL,
            restart_notice: None,
            routing_notices,
            routing_live: false,
            audited: false,
        }
    }

    /// Makes the first reply say which deployments `recover` found interrupted and
    /// where they stood, and offer to resume or roll back each.
    pub fn with_interrupted(mut self, interrupted: &[DeploymentRecord]) -> Session {
        self.restart_notice = render::restart_notice(interrupted);
        if let Some(d) = interrupted.first() {
            self.context.deployment = Some(d.name.clone());
        }
        self
    }

    /// The restart notice, for a front-end that shows it before any turn (the REPL);
    /// the first reply then does not repeat it.
    pub fn take_restart_notice(&mut self) -> Option<RestartNotice> {
        self.restart_notice.take()
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Who speaks next in a shared conversation (a Slack thread has many speakers);
    /// roles and the audit log follow the speaker of each turn.
    pub fn set_actor(&mut self, actor: Actor) {
        self.actor = actor;
    }

    /// Shortens or lengthens how long confirmations wait (tests, Slack's longer threads).
    pub fn set_confirmation_ttl(&mut self, ttl: Duration) {
        self.confirm_ttl = ttl;
    }

    /// Whether a risky operation waits for yes/no.
    pub fn awaiting_confirmation(&self) -> bool {
        matches!(self.pending, Some(Pending::Confirm { .. }))
    }

    /// The risky operation waiting for yes/no, if any.
    pub fn proposal(&self) -> Option<&Proposal> {
        match &self.pending {
            Some(Pending::Confirm { proposal, .. }) => Some(proposal),
            _ => None,
        }
    }

    /// When the pending yes/no was asked, if one is pending. A front-end tells a new
    /// question from the same one asked again ("I'm waiting for yes or no") by it.
    pub fn confirmation_asked(&self) -> Option<std::time::Instant> {
        match &self.pending {
            Some(Pending::Confirm { asked, .. }) => Some(asked.into_std()),
            _ => None,
        }
    }

    /// Answers the proposal `id` (from a button bound to it) with yes or no. When
    /// that proposal is not the one pending (answered, replaced or forgotten since),
    /// nothing is changed and whatever is pending stays pending.
    pub async fn answer_proposal(&mut self, id: &str, yes: bool) -> Reply {
        let word = if yes { "yes" } else { "no" };
        if self.proposal().is_some_and(|p| p.id == id) {
            return self.handle(word).await;
        }
        self.audited = false;
        let now = match self.proposal() {
            Some(p) => format!(" Waiting for yes or no now: {}.", p.summary),
            None => String::new(),
        };
        let reply = Reply::new(
            Outcome::Infeasible,
            format!("That proposal is no longer pending, so nothing was changed.{now}"),
        )
        .with_operation(Some(if yes { Operation::Confirm } else { Operation::Cancel }))
        .feasible(false);
        self.finish_turn(&format!("{word} (proposal {id})"), reply).await
    }

    /// In a shared conversation, whether the speaker may withdraw `proposal`.
    fn may_cancel(&self, proposal: &Proposal) -> bool {
        self.actor.name == proposal.proposer || self.actor.role >= Role::Admin
    }

    /// The active `watch`, if the operator asked for one.
    pub fn watching(&self) -> Option<&Operation> {
        self.watching.as_ref()
    }

    /// The deployment "it" refers to now.
    pub fn current_deployment(&self) -> Option<&str> {
        self.context.deployment.as_deref()
    }

    /// The vocabulary of the current topology snapshot, rebuilt only when the
    /// snapshot changes (names change rarely; the poller swaps snapshots often, but
    /// building the vocabulary is cheap next to a poll).
    pub fn vocabulary(&mut self) -> Arc<Vocabulary> {
        let topo = self.services.topology.snapshot();
        if let Some((t, v)) = &self.vocab {
            if Arc::ptr_eq(t, &topo) {
                return Arc::clone(v);
            }
        }
        let v = Arc::new(Vocabulary::from_topology(&topo));
        self.vocab = Some((topo, Arc::clone(&v)));
        v
    }

    /// Routing changes Parley made by itself since the last call, for a front-end
    /// that announces them as they happen (`watch`); the next reply leads with the rest.
    pub fn take_routing_notices(&mut self) -> Vec<String> {
        use tokio::sync::broadcast::error::TryRecvError;
        let mut out = Vec::new();
        loop {
            match self.routing_notices.try_recv() {
                Ok(n) => out.push(n),
                Err(TryRecvError::Lagged(n)) => {
                    out.push(format!("({n} routing announcements were missed; see `show routing`.)"))
                }
                Err(TryRecvError::Empty | TryRecvError::Closed) => return out,
            }
        }
    }

    /// For front-ends that print routing announcements as they happen (REPL, TUI):
    /// replies then no longer lead with them, so nothing is said twice.
    pub fn announce_routing_live(&mut self) {
        self.routing_live = true;
    }

    /// Answers one utterance.
    pub async fn handle(&mut self, utterance: &str) -> Reply {
        self.audited = false;
        let reply = self.answer(utterance).await;
        self.finish_turn(utterance, reply).await
    }

    /// Answers a typed operation (what the server's API takes beside words), as if it
    /// had been said: slots, roles, feasibility and confirmation alike; "confirm" and
    /// "cancel" answer the proposal that is waiting.
    pub async fn handle_operation(&mut self, op: Operation) -> Reply {
        match op {
            Operation::Confirm => return self.handle("yes").await,
            Operation::Cancel => return self.handle("no").await,
            _ => {}
        }
        self.audited = false;
        let utterance = format!("({})", op.name().replace('_', " "));
        let reply = self.proceed(op, Vec::new(), &utterance, false).await;
        self.finish_turn(&utterance, reply).await
    }

    /// What every turn ends with: announcements, and the turn's audit row when
    /// nothing more specific was written.
    async fn finish_turn(&mut self, utterance: &str, mut reply: Reply) -> Reply {
        if !self.audited {
            let result = match reply.outcome {
                // Not understood is a request that failed (the operation is null).
                Outcome::NotUnderstood | Outcome::Failed => AuditResult::Failed,
                Outcome::Refused => AuditResult::Refused,
                Outcome::Infeasible => AuditResult::Infeasible,
                // Nothing was carried out: the row must not read as if it had been.
                Outcome::NeedsConfirmation | Outcome::NeedsInput => AuditResult::Asked,
                Outcome::Cancelled => AuditResult::Cancelled,
                _ => AuditResult::Ok,
            };
            let entry = AuditEntry::new(&self.actor, utterance, reply.operation.as_ref(), result, &reply.message);
            if let Err(e) = self.services.registry.append_audit(&entry).await {
                tracing::error!(error = %e, "could not write the audit log");
            }
            self.audited = true;
        }
        self.vet_follow_ups(&mut reply).await;
        troubleshoot::mark_frozen(&self.services, &mut reply).await;
        // What it reports of a simulated fleet is simulated: the fleet model knows
        // which agents are, and every front-end shows the note.
        let reports = matches!(
            reply.outcome,
            Outcome::Answered | Outcome::NeedsConfirmation | Outcome::Started | Outcome::Done | Outcome::Failed
        );
        if reports && reply.operation.as_ref().is_some_and(Operation::reports_on_agents) {
            reply.simulated = self.services.topology.snapshot().simulation();
        }
        let notices = self.take_routing_notices();
        if !notices.is_empty() && !self.routing_live {
            reply.message = format!("{} {}", notices.join(" "), reply.message);
        }
        if let Some(notice) = self.restart_notice.take() {
            reply.message = format!("{} {}", notice.message, reply.message);
            let rest: Vec<String> = reply.follow_ups.into_iter().filter(|f| !notice.follow_ups.contains(f)).collect();
            reply.follow_ups = notice.follow_ups.into_iter().chain(rest).collect();
        }
        reply
    }

    async fn answer(&mut self, utterance: &str) -> Reply {
        let text = utterance.trim();
        if text.is_empty() {
            return Reply::new(Outcome::NotUnderstood, "Say what you want to know or do, or `help` for examples.")
                .with_follow_ups(["help", "how healthy is the fleet?"]);
        }
        let vocab = self.vocabulary();
        // A follow-up ("and us-east?") repeats the last operation with what it names,
        // unless a question is waiting for its answer.
        let previous = self.context.last.as_ref().filter(|_| self.pending.is_none());
        let parse = self.services.grammar.parse_after(previous, text, &vocab);
        if let Some(rejected) = &parse.rejected {
            return self.rejected(rejected, &vocab);
        }

        match self.pending.take() {
            Some(Pending::Confirm { op, feasible, utterance, asked, summary, proposal }) => {
                let expired = asked.elapsed() > self.confirm_ttl;
                match parse.operation {
                    Some(Operation::Confirm) if expired => {
                        return Reply::new(
                            Outcome::Cancelled,
                            format!(
                                "That confirmation expired after {} minutes, so nothing was changed: {summary}. Ask again for a fresh check.",
                                self.confirm_ttl.as_secs() / 60
                            ),
                        )
                        .with_operation(Some(Operation::Confirm))
                        .with_follow_ups([utterance]);
                    }
                    // In a shared conversation the one who says yes may not be the
                    // one who asked; the one who says yes must hold the role.
                    Some(Operation::Confirm) => {
                        if let Some(reply) = self.refusal(&op).await {
                            self.audit(&op, &utterance, AuditResult::Refused, &reply.message).await;
                            self.pending = Some(Pending::Confirm { op, feasible, utterance, asked, summary, proposal });
                            return reply;
                        }
                        return self.execute_and_audit(op, Some(feasible), &utterance).await;
                    }
                    // A shared conversation: a proposal is withdrawn only by whoever
                    // made it, or an admin.
                    Some(Operation::Cancel) if !expired && !self.may_cancel(&proposal) => {
                        let reply = Reply::new(
                            Outcome::Refused,
                            format!(
                                "Only {} (who asked for it) or an admin can cancel this; {} is {} {}. Still waiting for yes or no on: {summary}.",
                                proposal.proposer,
                                self.actor.name,
                                if self.actor.role == Role::Viewer { "a" } else { "an" },
                                self.actor.role.as_str()
                            ),
                        )
                        .with_operation(Some(Operation::Cancel));
                        self.pending = Some(Pending::Confirm { op, feasible, utterance, asked, summary, proposal });
                        return reply;
                    }
                    Some(Operation::Cancel) => {
                        return Reply::new(Outcome::Cancelled, format!("Cancelled: {summary}. Nothing was changed."))
                            .with_operation(Some(Operation::Cancel));
                    }
                    Some(other) => {
                        let may_drop = expired || self.may_cancel(&proposal);
                        let held =
                            Pending::Confirm { op, feasible, utterance, asked, summary: summary.clone(), proposal };
                        let mut reply = self.proceed(other, parse.references, text, false).await;
                        if !may_drop && self.pending.is_none() {
                            // Someone else's question in the thread leaves the proposal
                            // waiting: only its proposer or an admin may drop it.
                            self.pending = Some(held);
                            return reply;
                        }
                        // A new request replaces the question; say so, so nobody thinks
                        // the earlier one is still waiting.
                        reply.message = format!("(Dropped the unconfirmed request: {summary}.) {}", reply.message);
                        return reply;
                    }
                    None if !expired => {
                        let mut r =
                            Reply::new(Outcome::NeedsConfirmation, format!("I'm waiting for yes or no on: {summary}."))
                                .with_operation(Some(op.clone()))
                                .with_follow_ups(["yes", "no"]);
                        r.needs_confirmation = true;
                        r.proposal = Some(proposal.clone());
                        self.pending = Some(Pending::Confirm { op, feasible, utterance, asked, summary, proposal });
                        return r;
                    }
                    None => {}
                }
            }
            Some(Pending::Slots { op, missing, utterance, via_llm }) => {
                if parse.operation == Some(Operation::Cancel) {
                    return Reply::new(
                        Outcome::Cancelled,
                        format!("Dropped the unfinished {} request.", crate::words::spaced(op.name())),
                    )
                    .with_operation(Some(Operation::Cancel));
                }
                // A complete new command replaces the question and is handled (and
                // confirmed) as itself, with everything it says: "how healthy is
                // edge-20?" after "Which agent?" asks about edge-20 and restarts
                // nothing. Only an answer that is just values answers the question.
                if let Some(new) = parse.operation.as_ref().filter(|o| !parse.bare && **o != Operation::Confirm) {
                    return self.proceed(new.clone(), parse.references, text, false).await;
                }
                if let Some(filled) = self.services.grammar.answer(&op, &missing, text, &vocab) {
                    let combined = format!("{utterance} / {text}");
                    return self.proceed(filled, Vec::new(), &combined, via_llm).await;
                }
                // A bare value that fits none of the missing slots ("d-3" when asked
                // for an agent) is a request of its own.
                match parse.operation {
                    Some(op2) if !matches!(op2, Operation::Confirm) => {
                        return self.proceed(op2, parse.references, text, false).await
                    }
                    _ => {
                        let question = self.services.grammar.question(&op, &missing[0], &vocab);
                        self.pending =
                            Some(Pending::Slots { op: op.clone(), missing: missing.clone(), utterance, via_llm });
                        let mut r = Reply::new(Outcome::NeedsInput, format!("I didn't get that. {question}"))
                            .with_operation(Some(op));
                        r.missing = missing;
                        return r;
                    }
                }
            }
            None => {}
        }

        match parse.operation {
            None if self.services.llm.is_some() => self.via_llm(text, &vocab, None, &[]).await,
            None => self.not_understood(text),
            Some(Operation::Confirm) => Reply::new(Outcome::Answered, "Nothing is waiting for confirmation.")
                .with_operation(Some(Operation::Confirm)),
            Some(Operation::Cancel) => {
                Reply::new(Outcome::Answered, "Nothing to cancel.").with_operation(Some(Operation::Cancel))
            }
            Some(op) if !parse.missing.is_empty() && self.services.llm.is_some() => {
                // The grammar knew the intent but not every slot: the model may read
                // the rest. Its answer is used only if it is the same operation with
                // fewer gaps; otherwise the grammar's question stands.
                let services = Arc::clone(&self.services);
                let better = match services.llm.as_ref() {
                    Some(llm) => {
                        let context = self.llm_context(Some(&op), &parse.missing);
                        let input = crate::llm::Input { vocab: &vocab, context: &context, utterance: text };
                        llm.understand(&input).await
                    }
                    None => Ok(None),
                };
                match better {
                    Ok(Some(b))
                        if b.name() == op.name() && services.grammar.missing(&b).len() < parse.missing.len() =>
                    {
                        let b = normalise(b, &vocab);
                        let reply = self.proceed(b, parse.references, text, true).await;
                        mark_llm(reply)
                    }
                    Ok(_) => self.proceed(op, parse.references, text, false).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "language model fallback for a missing slot failed");
                        self.proceed(op, parse.references, text, false).await
                    }
                }
            }
            Some(op) => self.proceed(op, parse.references, text, false).await,
        }
    }

    fn llm_context(&self, grammar: Option<&Operation>, missing: &[String]) -> serde_json::Value {
        crate::llm::context(
            self.context.deployment.as_deref(),
            self.context.agent.as_deref(),
            self.context.scope.as_ref().map(|s| s.to_string()),
            grammar,
            missing,
        )
    }

    /// The grammar understood nothing: ask the model, and treat its answer like a
    /// grammar result, except that anything mutating is always confirmed.
    async fn via_llm(
        &mut self,
        text: &str,
        vocab: &Vocabulary,
        grammar: Option<&Operation>,
        missing: &[String],
    ) -> Reply {
        let services = Arc::clone(&self.services);
        let Some(llm) = services.llm.as_ref() else {
            return self.not_understood(text);
        };
        let context = self.llm_context(grammar, missing);
        let input = crate::llm::Input { vocab, context: &context, utterance: text };
        let reply = match llm.understand(&input).await {
            Ok(None) => {
                let mut r = self.not_understood(text);
                r.message = format!("{} (The language model found no operation in it either.)", r.message);
                r
            }
            Ok(Some(Operation::Confirm)) => Reply::new(Outcome::Answered, "Nothing is waiting for confirmation.")
                .with_operation(Some(Operation::Confirm)),
            Ok(Some(Operation::Cancel)) => {
                Reply::new(Outcome::Answered, "Nothing to cancel.").with_operation(Some(Operation::Cancel))
            }
            Ok(Some(op)) => {
                let op = normalise(op, vocab);
                self.proceed(op, Vec::new(), text, true).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "language model fallback failed");
                return llm_failure(&e, text);
            }
        };
        mark_llm(reply)
    }

    /// The utterance said something no slot takes as said ("-50%", "1e309"): nothing
    /// is done, and whatever was pending stays pending, asked again.
    fn rejected(&self, rejected: &crate::intent::Rejected, vocab: &Vocabulary) -> Reply {
        let message = format!("I can't act on that: {rejected}. Nothing was done.");
        match &self.pending {
            Some(Pending::Confirm { op, summary, .. }) => {
                let mut r = Reply::new(
                    Outcome::NeedsConfirmation,
                    format!("{message} I'm still waiting for yes or no on: {summary}."),
                )
                .with_operation(Some(op.clone()))
                .with_follow_ups(["yes", "no"]);
                r.needs_confirmation = true;
                r
            }
            Some(Pending::Slots { op, missing, .. }) => {
                let question =
                    missing.first().map(|slot| self.services.grammar.question(op, slot, vocab)).unwrap_or_default();
                let mut r = Reply::new(Outcome::NeedsInput, format!("{message} {question}").trim_end().to_string())
                    .with_operation(Some(op.clone()));
                r.missing = missing.clone();
                r
            }
            None => Reply::new(Outcome::NotUnderstood, message).with_follow_ups(["help"]),
        }
    }

    fn not_understood(&self, text: &str) -> Reply {
        let shown: String = text.chars().take(80).collect();
        Reply::new(
            Outcome::NotUnderstood,
            format!("I didn't understand \"{shown}\". Try one of these, or `help` for more."),
        )
        .with_follow_ups(["how healthy is the fleet?", "show topology", "list deployments", "help"])
    }

    /// Fills references, asks for what is missing, checks, confirms or executes.
    /// `via_llm`: the language model understood `op`, so anything mutating is read
    /// back and confirmed whatever its scope.
    async fn proceed(&mut self, op: Operation, references: Vec<String>, utterance: &str, via_llm: bool) -> Reply {
        let op = deploy::queue_refused(op, &mut self.context.queueable);
        let op = match self.undo(op).await {
            Ok(op) => op,
            Err((op, reply)) => {
                self.audit(&op, utterance, AuditResult::Infeasible, &reply.message).await;
                return reply;
            }
        };
        let op = match self.resolve_references(op, &references).await {
            Ok(op) => op,
            Err(reply) => return reply,
        };
        let op = troubleshoot::follow_on(op, utterance, &mut self.context);
        let missing = self.services.grammar.missing(&op);
        if let Some(first) = missing.first() {
            let vocab = self.vocabulary();
            let question = self.services.grammar.question(&op, first, &vocab);
            self.pending = Some(Pending::Slots {
                op: op.clone(),
                missing: missing.clone(),
                utterance: utterance.to_string(),
                via_llm,
            });
            let mut reply = Reply::new(Outcome::NeedsInput, question).with_operation(Some(op));
            reply.missing = missing;
            return reply;
        }

        if let Some(reply) = self.refusal(&op).await {
            self.audit(&op, utterance, AuditResult::Refused, &reply.message).await;
            return reply;
        }

        match &op {
            Operation::Help => return render::help(),
            Operation::Watch { .. } => {
                self.watching = Some(op.clone());
                return render::watching(&op);
            }
            Operation::Unwatch => {
                let was = self.watching.take();
                return render::unwatched(was.is_some());
            }
            _ => {}
        }

        let topo = self.services.topology.snapshot();
        let feasible = match execute::check_live(&self.services, &op, &topo).await {
            Ok(f) => f,
            Err(inf) => {
                if matches!(op, Operation::Deploy { .. }) && inf.queueable {
                    self.context.queueable = Some(op.clone());
                }
                let reply = render::infeasible(&op, &inf);
                if op.mutates() {
                    self.audit(&op, utterance, AuditResult::Infeasible, &reply.message).await;
                }
                return reply;
            }
        };

        if op.mutates() {
            let risk = match execute::risk(&self.services, &op, &feasible, &topo).await {
                Some(r) => Some(r),
                None if via_llm => Some("the language model, not the grammar, understood it".to_string()),
                None => None,
            };
            if let Some(risk) = risk {
                let summary = execute::summary(&self.services, &op, &feasible).await;
                let plan = execute::preview(&self.services, &op, &feasible, &topo);
                let plan_table = execute::plan_table(&self.services, &op, &feasible, &topo);
                let read_back =
                    if via_llm { format!("I understood (via the language model): {summary}") } else { summary.clone() };
                let mut reply = Reply::new(
                    Outcome::NeedsConfirmation,
                    format!("{read_back}. This needs confirmation because {risk}. Proceed? (yes/no)"),
                )
                .with_operation(Some(op.clone()))
                .with_follow_ups(["yes", "no"])
                .feasible(true);
                reply.needs_confirmation = true;
                if via_llm {
                    // Its read-back already says so; `mark_llm` adds nothing to the text.
                    reply.understood_by = Some("llm");
                }
                reply.details = plan;
                let proposal = Proposal::new(&self.actor.name, &summary, self.confirm_ttl);
                reply.proposal = Some(proposal.clone());
                reply.table = plan_table;
                self.pending = Some(Pending::Confirm {
                    op,
                    feasible,
                    utterance: utterance.to_string(),
                    asked: Instant::now(),
                    summary,
                    proposal,
                });
                return reply;
            }
        }
        self.execute_and_audit(op, Some(feasible), utterance).await
    }

    /// The role `op` needs from this speaker, and why when it is more than the
    /// operation's own: aborting a rollout someone else started is an admin's call.
    async fn needed_role(&self, op: &Operation) -> (Role, Option<String>) {
        let base = op.required_role();
        if let Operation::Abort { deployment: Some(id) } = op {
            if let Ok(Some(d)) = self.services.registry.deployment_by_name(id).await {
                if d.actor != self.actor.name && base < Role::Admin {
                    return (Role::Admin, Some(format!("{id} was started by {}", d.actor)));
                }
            }
        }
        (base, None)
    }

    /// A refused reply when the speaker lacks the role `op` needs; `None` when allowed.
    async fn refusal(&self, op: &Operation) -> Option<Reply> {
        let (needed, why) = self.needed_role(op).await;
        if self.actor.role >= needed {
            return None;
        }
        let because = why.map(|w| format!(" ({w})")).unwrap_or_default();
        Some(
            Reply::new(
                Outcome::Refused,
                format!(
                    "{} needs the {} role{because}; {} is {} {}.",
                    crate::words::spaced(op.name()),
                    needed.as_str(),
                    self.actor.name,
                    if self.actor.role == Role::Viewer { "a" } else { "an" },
                    self.actor.role.as_str()
                ),
            )
            .with_operation(Some(op.clone())),
        )
    }

    async fn execute_and_audit(&mut self, op: Operation, feasible: Option<Feasible>, utterance: &str) -> Reply {
        let feasible = feasible.unwrap_or(Feasible { targets: Vec::new(), already: Vec::new(), risk: None });
        let reply = execute::run(&self.services, &self.actor, &op, &feasible, utterance).await;
        self.remember(&op, &reply);
        let result = match reply.outcome {
            Outcome::Failed => AuditResult::Failed,
            Outcome::Infeasible => AuditResult::Infeasible,
            Outcome::Refused => AuditResult::Refused,
            _ => AuditResult::Ok,
        };
        self.audit(&op, utterance, result, &reply.message).await;
        reply
    }

    /// Updates the context from an executed turn.
    fn remember(&mut self, op: &Operation, reply: &Reply) {
        self.context.last = Some(op.clone());
        let acted = op.mutates() && !reply.outcome.is_failure();
        if acted || matches!(op, Operation::ShowDeployment { .. }) {
            if let Some(subject) = undo::Subject::of(op, reply.deployment.as_deref()) {
                self.context.acted = Some(subject);
            }
        }
        if let Some(d) = &reply.deployment {
            self.context.deployment = Some(d.clone());
        }
        if let Some(Some(a)) = op.agent_slot() {
            self.context.agent = Some(a.clone());
        }
        if let Some(Some(scope)) = op.scope_slot() {
            if !scope.is_fleet() {
                self.context.scope = Some(scope.clone());
                if let Some(a) = scope.first("agent") {
                    self.context.agent = Some(a.to_string());
                }
            }
        }
    }

    /// Fills slots the utterance referred to ("roll it back", "drain it", "there").
    async fn resolve_references(&mut self, op: Operation, references: &[String]) -> Result<Operation, Reply> {
        let mut op = op;
        // Deployment controls with no id mean the deployment in context, as the
        // contract says; without context, the most recent one.
        if let Some(None) = op.deployment_slot() {
            let id = match &self.context.deployment {
                Some(d) => Some(d.clone()),
                None => self.services.registry.latest_deployment().await.ok().flatten().map(|d| d.name.clone()),
            };
            match id {
                Some(id) => op = set(&op, "deployment", serde_json::Value::String(id)),
                None => {
                    return Err(Reply::new(
                        Outcome::Infeasible,
                        "There are no deployments yet, so there is nothing to refer to.",
                    )
                    .with_operation(Some(op))
                    .feasible(false)
                    .with_follow_ups(["list extensions", "how healthy is the fleet?"]))
                }
            }
        }
        for slot in references {
            let value = match slot.as_str() {
                "agent" => self.context.agent.clone().map(serde_json::Value::String),
                "scope" => self.context.scope.as_ref().and_then(|s| serde_json::to_value(s).ok()),
                "deployment" => self.context.deployment.clone().map(serde_json::Value::String),
                _ => None,
            };
            if let Some(v) = value {
                op = set(&op, slot, v);
            }
        }
        Ok(op)
    }

    async fn audit(&mut self, op: &Operation, utterance: &str, result: AuditResult, message: &str) {
        if op.effect() == Effect::Dialog {
            return;
        }
        self.audited = true;
        let entry = AuditEntry::new(&self.actor, utterance, Some(op), result, message);
        if let Err(e) = self.services.registry.append_audit(&entry).await {
            tracing::error!(error = %e, "could not write the audit log");
        }
    }
}

/// Says in the reply that the model, not the grammar, understood the turn.
fn mark_llm(mut reply: Reply) -> Reply {
    if reply.understood_by.replace("llm").is_none() {
        reply.message = format!("(Understood via the language model.) {}", reply.message);
    }
    match &mut reply.details {
        Some(serde_json::Value::Object(map)) => {
            map.insert("understood_by".into(), serde_json::json!("llm"));
        }
        None => reply.details = Some(serde_json::json!({"understood_by": "llm"})),
        Some(_) => {}
    }
    reply
}

/// Versions as the model said them ("2.1") become the catalog's ("2.1.0"), as the
/// grammar does for what it reads.
fn normalise(op: Operation, vocab: &Vocabulary) -> Operation {
    if let Operation::Deploy { extension, version: Some(v), .. } = &op {
        let resolved = vocab.resolve_version(extension.as_deref(), v);
        if &resolved != v {
            return set(&op, "version", serde_json::Value::String(resolved));
        }
    }
    op
}

/// A model that failed or answered nonsense: say what happened; nothing was done.
fn llm_failure(e: &LlmError, text: &str) -> Reply {
    let shown: String = text.chars().take(80).collect();
    let outcome = if e.is_unavailable() { Outcome::Failed } else { Outcome::NotUnderstood };
    let mut follow_ups = vec!["help".to_string()];
    let message = match e {
        LlmError::UnknownOp { name, suggestions } => {
            follow_ups = suggestions.iter().map(|s| crate::words::spaced(s)).chain(follow_ups).collect();
            let hint = match suggestions.as_slice() {
                [] => String::new(),
                s => format!(" Did you mean {}?", s.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" or ")),
            };
            format!(
                "I didn't understand \"{shown}\", and the language model read it as `{name}`, which is not an operation I have; nothing was done.{hint} Try rephrasing, or `help` for examples."
            )
        }
        e if e.is_unavailable() => {
            format!(
                "I didn't understand \"{shown}\" and {e}; nothing was done. Try rephrasing, or `help` for examples."
            )
        }
        e => format!(
            "I didn't understand \"{shown}\", and {e}; nothing was done. Try rephrasing, or `help` for examples."
        ),
    };
    let mut reply = Reply::new(outcome, message).with_follow_ups(follow_ups);
    reply.understood_by = Some("llm");
    reply.details = Some(serde_json::json!({"understood_by": "llm", "llm_error": e.to_string()}));
    reply
}

fn set(op: &Operation, slot: &str, value: serde_json::Value) -> Operation {
    with_slot(op, slot, value).unwrap_or_else(|_| op.clone())
}
