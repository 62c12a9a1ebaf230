//! The deployment lifecycle: where a deployment stands, which controls its record
//! admits (with a typed refusal that says why and what to say instead), which it
//! offers next, safest first, and which agents each control would change.
//!
//! The orchestrator's controls, the dialog's checks and follow-ups and the TUI's
//! deployment keys all ask this module, so a front-end never offers what the
//! orchestrator then refuses. What only the running process knows (a rollback task
//! still running, a later deployment on the same agents) the orchestrator adds on top.

use crate::ops::{DeploymentStatus, Operation, StrategyKind};
use crate::registry::{DeploymentRecord, TargetRecord, TargetState};
pub use crate::registry::{Hold, QUEUED_BEHIND};

/// How the reason of a deployment that `Orchestrator::recover` paused starts (words
/// for people: the state is [`Hold::Interrupted`]).
pub(super) const INTERRUPTED: &str = "interrupted at";

/// What an operator can do to one deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Control {
    /// Look at it (changes nothing).
    Show,
    Pause,
    Resume,
    /// Approve what a held deployment waits for (next phase, blue-green switch or retirement).
    Promote,
    Abort,
    Rollback,
    Retry,
}

impl Control {
    /// The control an operation asks for, if it is one.
    pub fn of(op: &Operation) -> Option<Control> {
        Some(match op {
            Operation::ShowDeployment { .. } => Control::Show,
            Operation::Pause { .. } => Control::Pause,
            Operation::Resume { .. } => Control::Resume,
            Operation::Promote { .. } => Control::Promote,
            Operation::Abort { .. } => Control::Abort,
            Operation::Rollback { .. } => Control::Rollback,
            Operation::Retry { .. } => Control::Retry,
            _ => return None,
        })
    }

    /// The operation for this control on deployment `name`.
    pub fn operation(self, name: &str) -> Operation {
        let deployment = Some(name.to_string());
        match self {
            Control::Show => Operation::ShowDeployment { deployment },
            Control::Pause => Operation::Pause { deployment },
            Control::Resume => Operation::Resume { deployment },
            Control::Promote => Operation::Promote { deployment },
            Control::Abort => Operation::Abort { deployment },
            Control::Rollback => Operation::Rollback { deployment },
            Control::Retry => Operation::Retry { deployment },
        }
    }

    /// What an operator says for it, as the grammar reads it: "roll back d-3".
    pub fn utterance(self, name: &str) -> String {
        match self {
            Control::Show => format!("show deployment {name}"),
            Control::Pause => format!("pause {name}"),
            Control::Resume => format!("resume {name}"),
            Control::Promote => format!("promote {name}"),
            Control::Abort => format!("abort {name}"),
            Control::Rollback => format!("roll back {name}"),
            Control::Retry => format!("retry {name}"),
        }
    }

    /// The TUI's key for it in the deployments pane; `None` for Enter (show).
    pub fn key(self) -> Option<char> {
        match self {
            Control::Show => None,
            Control::Pause => Some('p'),
            Control::Resume => Some('r'),
            Control::Promote => Some('o'),
            Control::Abort => Some('a'),
            Control::Rollback => Some('b'),
            Control::Retry => Some('t'),
        }
    }
}

/// Where a deployment stands, as its record shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Pending until an overlapping deployment finishes.
    Queued {
        behind: String,
    },
    /// Installing, baking or judging a gate (or pending about to start).
    Running,
    /// Held by an operator, or by an inconclusive gate: resume or abort.
    Paused,
    /// Paused because a previous Parley stopped mid-way.
    Interrupted,
    /// Held until "promote": the next phase, a blue-green switch or blue's retirement.
    AwaitingPromote {
        what: String,
    },
    /// Returning its agents (a gate failure, an abort or a rollback); it ends by
    /// itself once every touched agent has answered.
    RollingBack {
        why: String,
    },
    Succeeded,
    Failed,
    RolledBack,
    Aborted,
}

impl Stage {
    /// Reads the record's status and hold; the reason is only ever words to show.
    pub fn of(rec: &DeploymentRecord) -> Stage {
        let reason = rec.reason.as_deref().unwrap_or("");
        match (rec.status, &rec.hold) {
            (DeploymentStatus::Pending, Some(Hold::Queued { behind })) => Stage::Queued { behind: behind.clone() },
            (DeploymentStatus::Pending | DeploymentStatus::Running, _) => Stage::Running,
            (DeploymentStatus::Paused, Some(Hold::Promote)) => Stage::AwaitingPromote {
                what: if reason.is_empty() { "waiting for promote".to_string() } else { reason.to_string() },
            },
            (DeploymentStatus::Paused, Some(Hold::Interrupted)) => Stage::Interrupted,
            (DeploymentStatus::Paused, _) => Stage::Paused,
            (DeploymentStatus::RollingBack, _) => Stage::RollingBack {
                why: if reason.is_empty() { "returning its agents".to_string() } else { reason.to_string() },
            },
            (DeploymentStatus::Succeeded, _) => Stage::Succeeded,
            (DeploymentStatus::Failed, _) => Stage::Failed,
            (DeploymentStatus::RolledBack, _) => Stage::RolledBack,
            (DeploymentStatus::Aborted, _) => Stage::Aborted,
        }
    }
}

/// The deployment a queued one waits for; `None` when it is not queued.
pub fn queued_behind(rec: &DeploymentRecord) -> Option<&str> {
    match (rec.status, &rec.hold) {
        (DeploymentStatus::Pending, Some(Hold::Queued { behind })) => Some(behind),
        _ => None,
    }
}

/// A blue-green deployment whose green is live and whose blue still runs the old
/// version: a rollback switches back to blue.
pub fn switched_not_retired(rec: &DeploymentRecord) -> bool {
    rec.strategy.kind == StrategyKind::BlueGreen
        && rec.status.is_active()
        && rec.current_step == 1
        && rec.targets.iter().all(|t| t.step != 2 || t.state == TargetState::Pending)
}

/// Why a control does not fit a deployment's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Waits for another deployment; only abort applies.
    Queued {
        behind: String,
    },
    AlreadyPaused,
    /// Held for promote, which is not a pause.
    AwaitingPromote {
        what: String,
    },
    AlreadyRunning,
    NothingToPromote {
        status: DeploymentStatus,
    },
    /// Pause, resume, promote or abort of a deployment that has finished.
    Finished {
        status: DeploymentStatus,
    },
    /// Rollback or retry of a deployment that is still active.
    StillActive {
        status: DeploymentStatus,
        control: Control,
    },
    /// Rollback of a deployment whose agents were already returned.
    AlreadyReturned {
        status: DeploymentStatus,
    },
    NothingToRetry,
    /// Any control but show while the deployment returns its agents.
    RollingBack {
        why: String,
    },
}

impl Refusal {
    /// Why, in the operator's words, naming what to say instead.
    pub fn reason(&self, name: &str) -> String {
        match self {
            Refusal::Queued { behind } => format!(
                "{name} is queued behind {behind}; it starts by itself when that finishes (abort {name} to drop it)"
            ),
            Refusal::AlreadyPaused => format!("{name} is already paused; resume it to carry on"),
            Refusal::AwaitingPromote { what } => format!(
                "{name} is waiting for approval, not paused ({what}): say \"promote {name}\" to go on, or \"abort {name}\""
            ),
            Refusal::AlreadyRunning => format!("{name} is already running"),
            Refusal::NothingToPromote { status } => format!(
                "{name} has nothing waiting for promotion (it is {status}); progressive phases, blue-green switches \
                 and deployments started with approval wait for it"
            ),
            Refusal::Finished { status } => match status {
                DeploymentStatus::Succeeded => format!("{name} already succeeded; roll it back instead"),
                DeploymentStatus::Failed => format!("{name} already failed; roll it back or retry it"),
                DeploymentStatus::RolledBack => format!("{name} was already rolled back; retry it to try again"),
                DeploymentStatus::Aborted => format!("{name} was already aborted; retry it to try again"),
                s => format!("{name} is {s}"),
            },
            Refusal::StillActive { status, control: Control::Retry } => {
                format!("{name} is still {status}; it can be retried once it has failed or been rolled back")
            }
            Refusal::StillActive { status, .. } => {
                format!("{name} is still {status}; abort it to stop it and return its agents")
            }
            Refusal::AlreadyReturned { status: DeploymentStatus::Aborted } => {
                format!("{name} was aborted and its agents were already returned; retry it to try again")
            }
            Refusal::AlreadyReturned { .. } => format!("{name} was already rolled back; retry it to try again"),
            Refusal::NothingToRetry => format!("{name} succeeded; there is nothing to retry"),
            Refusal::RollingBack { why } => {
                format!("{name} is rolling back ({why}); it ends by itself once its agents have answered")
            }
        }
    }
}

/// Whether `rec` admits `control`, as far as its record tells.
pub fn admits(rec: &DeploymentRecord, control: Control) -> Result<(), Refusal> {
    use Stage as S;
    let stage = Stage::of(rec);
    let status = rec.status;
    let finished = || Refusal::Finished { status };
    if let S::RollingBack { why } = &stage {
        if control != Control::Show {
            return Err(Refusal::RollingBack { why: why.clone() });
        }
    }
    match control {
        Control::Show => Ok(()),
        Control::Pause => match stage {
            S::Running => Ok(()),
            S::Queued { behind } => Err(Refusal::Queued { behind }),
            S::AwaitingPromote { what } => Err(Refusal::AwaitingPromote { what }),
            S::Paused | S::Interrupted => Err(Refusal::AlreadyPaused),
            _ => Err(finished()),
        },
        Control::Resume => match stage {
            S::Paused | S::Interrupted => Ok(()),
            S::Queued { behind } => Err(Refusal::Queued { behind }),
            S::AwaitingPromote { what } => Err(Refusal::AwaitingPromote { what }),
            S::Running => Err(Refusal::AlreadyRunning),
            _ => Err(finished()),
        },
        Control::Promote => match stage {
            S::AwaitingPromote { .. } => Ok(()),
            s if status.is_active() && !matches!(s, S::Queued { .. }) => Err(Refusal::NothingToPromote { status }),
            S::Queued { behind } => Err(Refusal::Queued { behind }),
            _ => Err(finished()),
        },
        Control::Abort if status.is_active() => Ok(()),
        Control::Abort => Err(finished()),
        Control::Rollback => match stage {
            _ if switched_not_retired(rec) => Ok(()),
            S::Interrupted | S::Succeeded | S::Failed => Ok(()),
            S::Aborted | S::RolledBack => Err(Refusal::AlreadyReturned { status }),
            _ => Err(Refusal::StillActive { status, control }),
        },
        Control::Retry => match stage {
            S::Failed | S::RolledBack | S::Aborted => Ok(()),
            S::Succeeded => Err(Refusal::NothingToRetry),
            _ => Err(Refusal::StillActive { status, control }),
        },
    }
}

/// What to offer next for `rec`, safest first: look at it, then what returns agents
/// or holds the rollout, and only then what carries on or tries again. Every control
/// offered is admitted.
pub fn offers(rec: &DeploymentRecord) -> Vec<Control> {
    use Control as C;
    let order: &[Control] = match Stage::of(rec) {
        Stage::Queued { .. } => &[C::Show, C::Abort],
        Stage::Running => &[C::Show, C::Rollback, C::Pause, C::Abort],
        Stage::Paused => &[C::Show, C::Rollback, C::Abort, C::Resume],
        Stage::Interrupted => &[C::Show, C::Rollback, C::Resume],
        Stage::AwaitingPromote { .. } => &[C::Show, C::Rollback, C::Abort, C::Promote],
        Stage::RollingBack { .. } => &[C::Show],
        Stage::Succeeded => &[C::Show, C::Rollback],
        Stage::Failed => &[C::Show, C::Rollback, C::Retry],
        // A rollout that was returned (often by its own health gate) is retried only
        // after a look: retrying runs the same version again.
        Stage::RolledBack | Stage::Aborted => &[C::Show, C::Retry],
    };
    order.iter().copied().filter(|c| admits(rec, *c).is_ok()).collect()
}

/// What "undo that" means for a deployment: stop and return an active one, roll back
/// a finished one. `None` when there is nothing left to undo.
pub fn undo(rec: &DeploymentRecord) -> Option<Control> {
    [Control::Rollback, Control::Abort].into_iter().find(|c| admits(rec, *c).is_ok())
}

/// The agents `control` would change on `rec`: a rollback or abort visits those the
/// rollout touched; resume, promote and retry install where the version is not yet.
pub fn changes(rec: &DeploymentRecord, control: Control) -> Vec<&TargetRecord> {
    let touched = |t: &&TargetRecord| t.state.is_touched();
    let to_install = |t: &&TargetRecord| t.state != TargetState::Installed;
    match control {
        Control::Show | Control::Pause => Vec::new(),
        Control::Rollback | Control::Abort => rec.targets.iter().filter(touched).collect(),
        Control::Resume | Control::Promote | Control::Retry => rec.targets.iter().filter(to_install).collect(),
    }
}

/// Where a rollback of `rec` returns its agents: each previous version ("none": the
/// extension is removed) with how many agents go back to it, most agents first.
pub fn returns_to(rec: &DeploymentRecord) -> Vec<(Option<String>, usize)> {
    let mut groups: Vec<(Option<String>, usize)> = Vec::new();
    for t in changes(rec, Control::Rollback) {
        match groups.iter_mut().find(|(v, _)| *v == t.previous_version) {
            Some((_, n)) => *n += 1,
            None => groups.push((t.previous_version.clone(), 1)),
        }
    }
    groups.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    groups
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::ops::{Scope, Strategy};

    fn rec(status: DeploymentStatus, reason: Option<&str>, states: &[TargetState]) -> DeploymentRecord {
        held(status, None, reason, states)
    }

    fn held(
        status: DeploymentStatus,
        hold: Option<Hold>,
        reason: Option<&str>,
        states: &[TargetState],
    ) -> DeploymentRecord {
        DeploymentRecord {
            id: 3,
            name: "d-3".into(),
            extension: "auth-filter".into(),
            version: "2.1.0".into(),
            scope: Scope::region("ap-south"),
            strategy: Strategy::of(StrategyKind::Rolling),
            status,
            hold,
            reason: reason.map(str::to_string),
            actor: "alice".into(),
            frontend: "test".into(),
            utterance: String::new(),
            current_step: 0,
            step_count: 2,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            finished_at: None,
            targets: states
                .iter()
                .enumerate()
                .map(|(i, s)| TargetRecord {
                    agent: format!("edge-{}", 19 + i),
                    endpoint: String::new(),
                    previous_version: Some(if i < 2 { "2.0.3" } else { "2.0.1" }.into()),
                    step: u32::try_from(i % 2).unwrap_or(0),
                    state: *s,
                    detail: None,
                })
                .collect(),
        }
    }

    /// One record of every stage the module can describe, with the blue-green switch.
    fn every_stage() -> Vec<DeploymentRecord> {
        use DeploymentStatus as D;
        use TargetState as T;
        let mut switched = held(
            D::Paused,
            Some(Hold::Promote),
            Some("waiting for promote to retire blue"),
            &[T::Installed, T::Pending],
        );
        switched.strategy = Strategy::of(StrategyKind::BlueGreen);
        switched.current_step = 1;
        switched.targets[1].step = 2;
        vec![
            held(D::Pending, Some(Hold::Queued { behind: "d-1".into() }), Some("queued behind d-1"), &[T::Pending]),
            rec(D::Running, None, &[T::Installed, T::Pending]),
            held(D::Paused, Some(Hold::Paused), Some("paused by alice at step 1 of 2"), &[T::Installed, T::Pending]),
            held(
                D::Paused,
                Some(Hold::Interrupted),
                Some("interrupted at step 1 of 2: Parley stopped"),
                &[T::Installed, T::Pending],
            ),
            held(
                D::Paused,
                Some(Hold::Promote),
                Some("waiting for promote before step 2 of 2"),
                &[T::Installed, T::Pending],
            ),
            switched,
            rec(D::Succeeded, None, &[T::Installed, T::Installed]),
            rec(D::Failed, Some("rollback incomplete"), &[T::Failed, T::Pending]),
            rec(D::RolledBack, Some("health gate failed at step 1 of 2"), &[T::RolledBack, T::Pending]),
            rec(D::Aborted, Some("aborted by alice"), &[T::RolledBack, T::Pending]),
        ]
    }

    #[test]
    fn every_offer_is_admitted_and_the_safe_ones_come_first() {
        for r in every_stage() {
            let offered = offers(&r);
            assert_eq!(offered.first(), Some(&Control::Show), "{:?}", Stage::of(&r));
            for c in &offered {
                assert_eq!(admits(&r, *c), Ok(()), "{c:?} offered for {:?}", Stage::of(&r));
            }
            // Nothing that carries on or tries again comes before what stops or returns.
            let first_forward =
                offered.iter().position(|c| matches!(c, Control::Resume | Control::Promote | Control::Retry));
            let last_safe =
                offered.iter().rposition(|c| matches!(c, Control::Rollback | Control::Abort | Control::Pause));
            if let (Some(f), Some(s)) = (first_forward, last_safe) {
                assert!(s < f, "{offered:?} for {:?}", Stage::of(&r));
            }
        }
    }

    #[test]
    fn each_stage_offers_exactly_its_controls() {
        use Control as C;
        let got: Vec<Vec<Control>> = every_stage().iter().map(offers).collect();
        assert_eq!(
            got,
            vec![
                vec![C::Show, C::Abort],
                vec![C::Show, C::Pause, C::Abort],
                vec![C::Show, C::Abort, C::Resume],
                vec![C::Show, C::Rollback, C::Resume],
                vec![C::Show, C::Abort, C::Promote],
                vec![C::Show, C::Rollback, C::Abort, C::Promote],
                vec![C::Show, C::Rollback],
                vec![C::Show, C::Rollback, C::Retry],
                vec![C::Show, C::Retry],
                vec![C::Show, C::Retry],
            ]
        );
    }

    #[test]
    fn a_rollout_waiting_for_approval_is_promoted_not_resumed() {
        let r = &every_stage()[4];
        let refusal = admits(r, Control::Resume).unwrap_err();
        assert_eq!(
            refusal.reason(&r.name),
            "d-3 is waiting for approval, not paused (waiting for promote before step 2 of 2): say \"promote d-3\" \
             to go on, or \"abort d-3\""
        );
        assert!(!offers(r).contains(&Control::Resume));
    }

    #[test]
    fn a_running_rollout_is_not_offered_a_rollback_and_undo_means_abort() {
        let r = &every_stage()[1];
        assert_eq!(
            admits(r, Control::Rollback).unwrap_err().reason(&r.name),
            "d-3 is still running; abort it to stop it and return its agents"
        );
        assert_eq!(undo(r), Some(Control::Abort));
        assert_eq!(undo(&every_stage()[6]), Some(Control::Rollback));
        assert_eq!(undo(&every_stage()[8]), None);
    }

    #[test]
    fn controls_count_only_the_agents_they_change() {
        use TargetState as T;
        let all_in = rec(DeploymentStatus::Paused, Some("paused by alice"), &[T::Installed; 12]);
        assert!(changes(&all_in, Control::Resume).is_empty());
        assert_eq!(changes(&all_in, Control::Abort).len(), 12);
        let half = rec(DeploymentStatus::Paused, Some("paused by alice"), &[T::Installed, T::Pending, T::Pending]);
        assert_eq!(changes(&half, Control::Resume).len(), 2);
        assert_eq!(changes(&half, Control::Rollback).len(), 1);
        let mixed = rec(DeploymentStatus::Succeeded, None, &[T::Installed, T::Installed, T::Installed, T::Pending]);
        assert_eq!(returns_to(&mixed), vec![(Some("2.0.3".to_string()), 2), (Some("2.0.1".to_string()), 1)]);
    }
}
