//! The confidence gate: what the voice front-end does with what it heard.
//!
//! One rule, asked by `frontend` for every utterance and by the spoken corpus
//! (`tests/voice_corpus.rs`) when it scores a run at every threshold, so the figures
//! measured are the rule shipped. Whisper decodes twice at most: under the spoken
//! grammar (which can only write commands, so it always finds one) and, when that
//! transcript is unsure, freely. The rule:
//!
//! - sure (confidence at or above the threshold): the constrained words act (risky
//!   operations still get the session's own read-back);
//! - unsure, but the free transcript means the same operation (and the confidence is
//!   at least [`AGREEMENT_FLOOR`]): the audio supports it twice, it acts, except a
//!   "yes";
//! - otherwise unsure. When the free transcript parses to a different operation it is
//!   preferred (it was not forced into a command by the grammar; on the corpus it was
//!   the right one in most such disagreements) and the constrained one is named as the
//!   alternative. Then a mutation is held for a "yes" (never run), a read-only question
//!   is answered but prefixed "I may have misheard" with the alternative as a
//!   follow-up (so it is never answered silently as if sure), a "yes" confirms
//!   nothing, and a "no" still cancels (it only drops what was held).

use crate::ops::{Effect, Operation};

/// Below this the transcript is unsure (see README, "Confidence, and the second pass").
pub const CONFIRM_BELOW: f32 = 0.55;

/// An unsure transcript still acts when the second, unconstrained decoding of the same
/// audio means the same operation, unless its confidence is under this floor.
pub const AGREEMENT_FLOOR: f32 = 0.25;

/// One utterance as heard: the words the parser read and what they mean.
#[derive(Debug, Clone, Copy)]
pub struct Heard<'a> {
    /// The first (grammar-constrained, or free without a grammar) transcript, normalised.
    pub words: &'a str,
    pub confidence: f32,
    pub understood: Option<&'a Operation>,
    /// The second, unconstrained pass, when it ran: its words (through the resolver)
    /// and what they mean.
    pub free: Option<(&'a str, Option<&'a Operation>)>,
}

/// What the front-end does with an utterance.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Sure enough: these words go to the session.
    Act { words: String },
    /// Unsure read-only question (or a watch, help): answered, with the doubt said
    /// first and the other reading offered after (see [`misheard_prefix`]).
    AnswerUnsure { words: String, alternative: Option<String> },
    /// Unsure mutation (or words that mean nothing): held until a sure "yes".
    Hold { words: String, alternative: Option<String> },
    /// An unsure "yes": confirms nothing; what was held stays held.
    UnsureConfirmation { words: String },
    /// A "no"/"cancel", however unsure: it only drops what was held (or answers the
    /// session's own read-back no).
    Cancel { words: String },
}

/// The gate at `threshold` (the session's `--confirm-below`).
pub fn decide(heard: &Heard<'_>, threshold: f32) -> Verdict {
    let words = heard.words.to_string();
    if matches!(heard.understood, Some(Operation::Cancel)) {
        return Verdict::Cancel { words };
    }
    if heard.confidence >= threshold {
        return Verdict::Act { words };
    }
    let free = heard.free.and_then(|(text, op)| op.map(|op| (text, op)));
    let agrees = heard.understood.is_some() && free.map(|(_, op)| op) == heard.understood;
    let confirmation = matches!(heard.understood, Some(Operation::Confirm));
    if agrees && !confirmation && heard.confidence >= AGREEMENT_FLOOR.min(threshold) {
        return Verdict::Act { words };
    }
    // Unsure: the free reading, when it means something else, is the better guess.
    let (words, op, alternative) = match free {
        Some((text, op)) if Some(op) != heard.understood => (text.to_string(), Some(op), Some(words)),
        _ => (words, heard.understood, None),
    };
    match op.map(Operation::effect) {
        Some(_) if matches!(op, Some(Operation::Confirm)) => Verdict::UnsureConfirmation { words },
        Some(_) if matches!(op, Some(Operation::Cancel)) => Verdict::Cancel { words },
        Some(Effect::Read | Effect::Dialog) => Verdict::AnswerUnsure { words, alternative },
        Some(Effect::Mutate) | None => Verdict::Hold { words, alternative },
    }
}

impl Verdict {
    /// The words the verdict is about.
    pub fn words(&self) -> &str {
        match self {
            Verdict::Act { words }
            | Verdict::AnswerUnsure { words, .. }
            | Verdict::Hold { words, .. }
            | Verdict::UnsureConfirmation { words }
            | Verdict::Cancel { words } => words,
        }
    }

    /// Whether anything runs without a further "yes" (a read-only answer given with
    /// doubt counts: it is answered).
    pub fn acts(&self) -> bool {
        matches!(self, Verdict::Act { .. } | Verdict::AnswerUnsure { .. })
    }
}

/// Said before an unsure read-only answer.
pub fn misheard_prefix(words: &str) -> String {
    format!("I may have misheard: I took it as \"{words}\".")
}

/// Said after an unsure read-only answer when the other pass heard something else.
pub fn misheard_follow_up(alternative: &str) -> String {
    format!("If you said \"{alternative}\", say it again.")
}

/// The read-back of an unsure mutation.
pub fn held_message(words: &str, alternative: Option<&str>) -> String {
    let or = alternative.map(|a| format!(" (or \"{a}\")")).unwrap_or_default();
    format!("I heard \"{words}\"{or} but I'm not sure. Say or type yes to go ahead, or say it again.")
}

/// The reply to an unsure "yes".
pub fn unsure_confirmation_message(words: &str) -> String {
    format!("I'm not sure I heard \"{words}\", so nothing was done. Say it again, or type it.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(region: &str) -> Operation {
        Operation::from_json(serde_json::json!({"op": "show_health", "scope": [format!("region:{region}")]}))
            .expect("show_health")
    }

    fn op(json: serde_json::Value) -> Operation {
        Operation::from_json(json).expect("an operation")
    }

    fn heard<'a>(words: &'a str, confidence: f32, understood: Option<&'a Operation>) -> Heard<'a> {
        Heard { words, confidence, understood, free: None }
    }

    #[test]
    fn a_sure_transcript_acts_whatever_the_second_pass() {
        let drain = op(serde_json::json!({"op": "drain", "agent": "edge-7"}));
        let restart = op(serde_json::json!({"op": "restart", "agent": "edge-7"}));
        let h = Heard { free: Some(("restart edge 7", Some(&restart))), ..heard("drain edge 7", 0.55, Some(&drain)) };
        assert_eq!(decide(&h, 0.55), Verdict::Act { words: "drain edge 7".into() });
    }

    #[test]
    fn agreement_above_the_floor_acts_and_below_it_does_not() {
        let drain = op(serde_json::json!({"op": "drain", "agent": "edge-7"}));
        let h = Heard { free: Some(("Drain edge 7.", Some(&drain))), ..heard("drain edge 7", 0.25, Some(&drain)) };
        assert_eq!(decide(&h, 0.55), Verdict::Act { words: "drain edge 7".into() });
        let h = Heard { confidence: 0.249, ..h };
        assert_eq!(decide(&h, 0.55), Verdict::Hold { words: "drain edge 7".into(), alternative: None });
    }

    /// The corpus's case: "is us east okay" heard under the grammar as a failover at
    /// 0.02, freely as the health question. The question is answered, with the doubt
    /// said, and the failover is only named.
    #[test]
    fn an_unsure_mutation_gives_way_to_a_free_read_only_reading() {
        let failover = op(serde_json::json!({"op": "failover", "from": "us-east", "to": "us-west"}));
        let q = health("us-east");
        let h = Heard {
            free: Some(("is us-east okay", Some(&q))),
            ..heard("failover us east to us west", 0.02, Some(&failover))
        };
        assert_eq!(
            decide(&h, 0.55),
            Verdict::AnswerUnsure {
                words: "is us-east okay".into(),
                alternative: Some("failover us east to us west".into())
            }
        );
    }

    #[test]
    fn an_unsure_question_is_answered_with_doubt_never_as_if_sure() {
        let q = health("eu-west");
        let h = heard("how healthy is eu west", 0.1, Some(&q));
        assert_eq!(
            decide(&h, 0.55),
            Verdict::AnswerUnsure { words: "how healthy is eu west".into(), alternative: None }
        );
        // A free pass that understood nothing leaves the constrained reading.
        let h = Heard { free: Some(("Hi, how is it?", None)), ..h };
        assert_eq!(
            decide(&h, 0.55),
            Verdict::AnswerUnsure { words: "how healthy is eu west".into(), alternative: None }
        );
        assert_eq!(
            misheard_prefix("how healthy is eu west"),
            "I may have misheard: I took it as \"how healthy is eu west\"."
        );
    }

    #[test]
    fn a_free_mutation_is_held_never_run() {
        let q = health("us-west");
        let evacuate = op(serde_json::json!({"op": "failover", "from": "us-west"}));
        let h = Heard {
            free: Some(("evacuate us-west", Some(&evacuate))),
            ..heard("how healthy is us west", 0.01, Some(&q))
        };
        let v = decide(&h, 0.55);
        assert_eq!(
            v,
            Verdict::Hold { words: "evacuate us-west".into(), alternative: Some("how healthy is us west".into()) }
        );
        assert!(!v.acts());
        assert_eq!(
            held_message("evacuate us-west", Some("how healthy is us west")),
            "I heard \"evacuate us-west\" (or \"how healthy is us west\") but I'm not sure. Say or type yes to go ahead, or say it again."
        );
    }

    #[test]
    fn an_unsure_yes_never_confirms_even_when_both_passes_agree() {
        let h =
            Heard { free: Some(("Yes.", Some(&Operation::Confirm))), ..heard("yes", 0.5, Some(&Operation::Confirm)) };
        assert_eq!(decide(&h, 0.55), Verdict::UnsureConfirmation { words: "yes".into() });
        assert!(!decide(&h, 0.55).acts());
        // A sure one does.
        assert_eq!(decide(&h, 0.5), Verdict::Act { words: "yes".into() });
        // "go ahead" heard for "evacuate us west" (the corpus, confidence 0.001): the
        // free reading is held as a mutation, and nothing is confirmed.
        let evacuate = op(serde_json::json!({"op": "failover", "from": "us-west"}));
        let h = Heard {
            free: Some(("evacuate us-west", Some(&evacuate))),
            ..heard("go ahead", 0.001, Some(&Operation::Confirm))
        };
        assert_eq!(
            decide(&h, 0.55),
            Verdict::Hold { words: "evacuate us-west".into(), alternative: Some("go ahead".into()) }
        );
        // A free "yes" for an unsure constrained command confirms nothing either.
        let drain = op(serde_json::json!({"op": "drain", "agent": "edge-7"}));
        let h = Heard { free: Some(("Yes.", Some(&Operation::Confirm))), ..heard("drain edge 7", 0.1, Some(&drain)) };
        assert_eq!(decide(&h, 0.55), Verdict::UnsureConfirmation { words: "Yes.".into() });
    }

    #[test]
    fn cancel_is_taken_however_unsure() {
        let h = heard("cancel", 0.01, Some(&Operation::Cancel));
        assert_eq!(decide(&h, 0.55), Verdict::Cancel { words: "cancel".into() });
    }

    #[test]
    fn words_that_mean_nothing_are_held() {
        let h = heard("hmm", 0.2, None);
        assert_eq!(decide(&h, 0.55), Verdict::Hold { words: "hmm".into(), alternative: None });
    }
}
