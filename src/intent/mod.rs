//! Utterance -> typed [`Operation`], with the grammar as data (`intents/*.toml`).
//!
//! An utterance is tokenised ([`normalize`]), the fleet's names and the operator's
//! fixed words are recognised against a [`Vocabulary`] built from the topology
//! ([`vocab`]), and what remains is a *skeleton* such as
//! `roll out {extension} {version} to {region} as {strategy} {percent} then {percent}`.
//! The grammar's regexes pick the intent from the skeleton ([`grammar`]), and the
//! entities fill its slots ([`slots`]). Adding a phrasing is a line of TOML.
//!
//! Names nobody knows ("edge-70", "mars-north", "3.0") are kept as said: the
//! feasibility check, not this module, tells the operator, with [`suggest`]ions.

mod grammar;
mod noise;
pub(crate) mod normalize;
mod slots;
mod vocab;

#[cfg(test)]
mod tests;

use std::path::Path;

use serde::Serialize;
use serde_json::{json, Value};

use crate::ops::{Operation, Scope};
pub use grammar::SlotKind;
pub use noise::is_not_a_request;
pub use normalize::{canonical, MAX_INPUT_BYTES};
pub use vocab::{suggest, Vocabulary};

use normalize::Token;
use vocab::{Entity, Kind};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntentError {
    /// A grammar file that cannot be read or is not valid TOML of the expected shape.
    #[error("{file}: {reason}")]
    File { file: String, reason: String },
    /// A field of one intent that does not make sense.
    #[error("{file}: intent `{intent}`: field `{field}`: {reason}")]
    Field { file: String, intent: String, field: String, reason: String },
    /// A slot value that does not fit its operation.
    #[error("slot `{slot}` of `{op}`: {reason}")]
    Slot { op: String, slot: String, reason: String },
}

/// The loaded intents.
#[derive(Debug, Clone)]
pub struct Grammar {
    compiled: grammar::Compiled,
}

/// What an utterance meant, in the contract's shape (`{"operation": .., "missing": [..]}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Parse {
    /// `None` when nothing was understood.
    pub operation: Option<Operation>,
    /// Required slots not filled (and not referred to by pronoun).
    pub missing: Vec<String>,
    /// Slots the utterance filled with a pronoun ("roll it back" -> `["deployment"]`).
    pub references: Vec<String>,
    /// The utterance was longer than [`MAX_INPUT_BYTES`] and only its start was read.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Something said that no slot can take as said (a negative share, a number out of
    /// range, a value its operation refuses): the utterance is refused as a whole
    /// (`operation` is `None`), never read with a default or another number instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejected>,
    /// The utterance is only values (names, versions, numbers, shares) and the
    /// connecting words of an answer ("to", "the", "then"): what answers a question
    /// for a slot. Anything more ("how healthy is edge-20", "cordon edge-19") is a
    /// command of its own.
    #[serde(skip)]
    pub bare: bool,
}

/// Why an utterance was refused rather than understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Rejected {
    /// A number in a form or range nothing takes: `said` as typed ("-50%", "1e309").
    Number { said: String, reason: String },
    /// A value the operation's slot refuses ("at most 0 unavailable").
    Slot { slot: String, reason: String },
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Number { said, reason } => write!(f, "\"{said}\" is out of range: {reason}"),
            Rejected::Slot { slot, reason } => {
                write!(f, "the {} as said does not fit: {reason}", crate::words::spaced(slot))
            }
        }
    }
}

impl Rejected {
    fn number(said: &str) -> Rejected {
        let reason = if said.starts_with('-') {
            "a negative number means nothing here"
        } else if said.ends_with('%') && said.contains('.') {
            "shares are whole percentages"
        } else if said.ends_with('%') {
            "a share is at most 100%"
        } else if said.bytes().all(|b| b.is_ascii_digit()) {
            "the number is far larger than anything it could count"
        } else {
            "numbers are whole numbers in plain digits"
        };
        Rejected::Number { said: said.to_string(), reason: reason.to_string() }
    }
}

/// Words an answer to a slot question may hold besides the values themselves.
const ANSWER_WORDS: &[&str] = &[
    "the",
    "a",
    "an",
    "to",
    "in",
    "on",
    "onto",
    "into",
    "at",
    "for",
    "of",
    "from",
    "and",
    "then",
    "with",
    "as",
    "by",
    "just",
    "only",
    "version",
    "agent",
    "region",
    "zone",
    "deployment",
    "number",
];

/// Whether a skeleton is only placeholders and [`ANSWER_WORDS`].
fn is_bare(skeleton: &str) -> bool {
    skeleton.split(' ').all(|w| w.is_empty() || w.starts_with('{') || ANSWER_WORDS.contains(&w))
}

impl Parse {
    fn nothing(truncated: bool, bare: bool) -> Parse {
        Parse { operation: None, missing: Vec::new(), references: Vec::new(), truncated, rejected: None, bare }
    }

    fn refused(truncated: bool, rejected: Rejected) -> Parse {
        Parse { rejected: Some(rejected), ..Parse::nothing(truncated, false) }
    }
}

impl Grammar {
    /// The grammar built into the binary.
    pub fn embedded() -> Result<Grammar, IntentError> {
        let files: Vec<(String, String)> =
            grammar::EMBEDDED.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect();
        Grammar::from_files(&files)
    }

    /// Every `*.toml` of `dir`, in name order, replacing the embedded grammar.
    pub fn load_dir(dir: &Path) -> Result<Grammar, IntentError> {
        Grammar::from_files(&grammar::read_dir(dir)?)
    }

    /// Grammar files as `(name used in errors, TOML text)`.
    pub fn from_files(files: &[(String, String)]) -> Result<Grammar, IntentError> {
        Ok(Grammar { compiled: grammar::compile(files)? })
    }

    /// The op names the grammar has intents for, in file order.
    pub fn ops(&self) -> Vec<&str> {
        self.compiled.intents.iter().map(|i| i.op.as_str()).collect()
    }

    pub fn parse(&self, utterance: &str, vocab: &Vocabulary) -> Parse {
        let (text, truncated) = normalize::truncate(utterance);
        if noise::is_not_a_request(text) {
            return Parse::nothing(truncated, false);
        }
        let tokens = self.tokens(text, vocab);
        let entities = vocab.scan(&tokens, &self.compiled.plain_phrases);
        if let Some(bad) = entities.iter().find(|e| e.kind == Kind::Invalid) {
            return Parse::refused(truncated, Rejected::number(bad.value.as_deref().unwrap_or_default()));
        }
        let skeleton = skeleton(&tokens, &entities);
        let bare = is_bare(&skeleton);
        let Some(intent) = self.compiled.best(&skeleton, normalize::is_plain(utterance)) else {
            return Parse::nothing(truncated, bare);
        };
        let filled = slots::fill(intent, &entities, vocab);
        let Ok(mut op) = Operation::from_json(json!({ "op": intent.op })) else {
            return Parse::nothing(truncated, bare);
        };
        // A value its slot refuses refuses the whole utterance: dropping just that slot
        // would carry out something else than was said (a default, or no limit).
        for (slot, value) in filled.values {
            match with_slot(&op, &slot, value) {
                Ok(next) => op = next,
                Err(e) => {
                    let reason = match e {
                        IntentError::Slot { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    return Parse::refused(truncated, Rejected::Slot { slot, reason });
                }
            }
        }
        let filled_now = op.filled_slots();
        let missing = intent
            .required
            .iter()
            .filter(|r| !filled_now.contains(r) && !filled.references.contains(r))
            .cloned()
            .collect();
        Parse { operation: Some(op), missing, references: filled.references, truncated, rejected: None, bare }
    }

    /// An utterance said right after `previous` was understood: a follow-up that only
    /// names something else ("and us-east?", "what about staging", "same for
    /// ap-south", "and edge-8 too") is `previous` with those values in place of its
    /// own; anything else is parsed as itself. Places replace places and traits
    /// (gpu, edge) replace traits, so "and the gpu ones?" after "how healthy is
    /// eu-west" asks about eu-west's gpu agents.
    pub fn parse_after(&self, previous: Option<&Operation>, utterance: &str, vocab: &Vocabulary) -> Parse {
        let parse = self.parse(utterance, vocab);
        let Some(previous) = previous.filter(|p| !matches!(p, Operation::Confirm | Operation::Cancel)) else {
            return parse;
        };
        if parse.rejected.is_some() {
            return parse;
        }
        let (text, _) = normalize::truncate(utterance);
        let tokens = self.tokens(text, vocab);
        let entities = vocab.scan(&tokens, &self.compiled.plain_phrases);
        let shape = skeleton(&tokens, &entities);
        // An elliptical "and us-east?" asks the last question again, even where a
        // pattern of its own reads it (explain's, for when nothing was asked before);
        // any other sentence that parses whole means what it says.
        let elliptical = ["and ", "what about ", "how about "].iter().any(|p| shape.starts_with(p));
        if parse.operation.is_some() && !parse.bare && !elliptical {
            return parse;
        }
        if !is_follow_up(&shape) {
            return parse;
        }
        let Some(intent) = self.compiled.intent(previous.name()) else { return parse };
        let said = slots::fill_said(intent, &entities, vocab);
        if said.is_empty() {
            return parse;
        }
        let mut op = previous.clone();
        for (slot, value) in said {
            let value = match (&value, op.to_json().get(&slot)) {
                (Value::Array(new), Some(Value::Array(old)))
                    if intent.slot(&slot).is_some_and(|s| s.kind == SlotKind::Scope) =>
                {
                    json!(merge_scope(old, new))
                }
                _ => value,
            };
            match with_slot(&op, &slot, value) {
                Ok(next) => op = next,
                Err(_) => return parse,
            }
        }
        let missing = self.missing(&op);
        Parse {
            operation: Some(op),
            missing,
            references: Vec::new(),
            truncated: parse.truncated,
            rejected: None,
            bare: false,
        }
    }

    /// The words of an utterance as the grammar reads them: normalised, shorthand
    /// rewritten, fillers dropped, typos of command words repaired.
    fn tokens(&self, text: &str, vocab: &Vocabulary) -> Vec<Token> {
        self.repair_typos(strip_fillers(self.compiled.rewrite(normalize::tokenize(text))), vocab)
    }

    /// Command words mistyped by one swapped, missing or extra letter ("depoly",
    /// "resatrt", "cordn") are read as the word meant. Only words of five letters or
    /// more that neither the fleet nor the grammar knows are touched, and only towards
    /// a verb of the grammar, never by changing a letter ("strain" stays "strain").
    fn repair_typos(&self, mut tokens: Vec<Token>, vocab: &Vocabulary) -> Vec<Token> {
        for t in tokens.iter_mut() {
            let w = t.text.as_str();
            if w.len() < 5
                || !w.bytes().all(|b| b.is_ascii_lowercase())
                || self.compiled.words.contains(w)
                || vocab.knows(w)
            {
                continue;
            }
            let fix = self.compiled.verbs.iter().find(|v| one_slip(w, v));
            if let Some(v) = fix {
                t.text = v.clone();
            }
        }
        tokens
    }

    /// The operator answered a question for `slot` of a pending `op`: parse just that
    /// slot's value from the answer ("eu-west", "2.1", "the latest", "edge seven").
    /// None when the answer holds no such value.
    pub fn parse_slot(&self, op: &Operation, slot: &str, answer: &str, vocab: &Vocabulary) -> Option<Value> {
        let intent = self.compiled.intent(op.name())?;
        let entities = self.answer_entities(answer, vocab)?;
        let mut claimed = vec![false; entities.len()];
        answer_value(intent, op, slot, &entities, &mut claimed, vocab)
    }

    /// The operator answered a question for the `missing` slots of a pending `op`:
    /// `op` with what the answer fills. Each missing slot takes its value wherever it
    /// was said; modifiers said with it ("eu-west, as a canary 10% then 50%", "with
    /// at most 1 unavailable") go into the slots not set yet, as they would in one
    /// sentence. `None` when the answer fills no missing slot, or holds a number that
    /// must be refused.
    pub fn answer(&self, op: &Operation, missing: &[String], answer: &str, vocab: &Vocabulary) -> Option<Operation> {
        let intent = self.compiled.intent(op.name())?;
        let entities = self.answer_entities(answer, vocab)?;
        let mut claimed = vec![false; entities.len()];
        let mut filled = op.clone();
        let mut any = false;
        for slot in missing {
            if let Some(value) = answer_value(intent, &filled, slot, &entities, &mut claimed, vocab) {
                if let Ok(next) = with_slot(&filled, slot, value) {
                    filled = next;
                    any = true;
                }
            }
        }
        if !any {
            return None;
        }
        let set = filled.filled_slots();
        let mut rest: Vec<&grammar::Slot> = intent.slots.iter().filter(|s| !set.contains(&s.name)).collect();
        rest.sort_by_key(|s| s.markers.is_empty());
        for def in rest {
            if let slots::Read::Value(v) = slots::read_slot(def, &entities, &mut claimed, vocab) {
                filled = with_slot(&filled, &def.name, v).ok()?;
            }
        }
        Some(filled)
    }

    /// The entities of an answer; `None` when it holds a number that must be refused.
    fn answer_entities(&self, answer: &str, vocab: &Vocabulary) -> Option<Vec<Entity>> {
        let (text, _) = normalize::truncate(answer);
        let tokens = self.tokens(text, vocab);
        let entities = vocab.scan(&tokens, &self.compiled.plain_phrases);
        (!entities.iter().any(|e| e.kind == Kind::Invalid)).then_some(entities)
    }

    /// The question to ask for a missing slot, with known slot values filled in.
    pub fn question(&self, op: &Operation, slot: &str, vocab: &Vocabulary) -> String {
        let template = self
            .compiled
            .intent(op.name())
            .and_then(|i| i.slot(slot))
            .and_then(|s| s.ask.clone())
            .unwrap_or_else(|| format!("What {} should I use?", crate::words::spaced(slot)));
        fill_template(&template, op, vocab)
    }

    pub fn required_slots(&self, op_name: &str) -> &[String] {
        self.compiled.intent(op_name).map(|i| i.required.as_slice()).unwrap_or(&[])
    }

    /// Missing required slots of an operation (used again after the dialog fills slots).
    pub fn missing(&self, op: &Operation) -> Vec<String> {
        let filled = op.filled_slots();
        self.required_slots(op.name()).iter().filter(|r| !filled.contains(r)).cloned().collect()
    }
}

/// Put a value into a slot: via JSON so that it works for every operation alike.
pub fn with_slot(op: &Operation, slot: &str, value: Value) -> Result<Operation, IntentError> {
    let err = |reason: String| IntentError::Slot { op: op.name().to_string(), slot: slot.to_string(), reason };
    let mut json = op.to_json();
    let Some(map) = json.as_object_mut() else {
        return Err(err("the operation is not a JSON object".into()));
    };
    if slot == "op" {
        return Err(err("`op` is not a slot".into()));
    }
    map.insert(slot.to_string(), value);
    Operation::from_json(json).map_err(|e| err(e.to_string()))
}

/// Whether `a` is `b` with two neighbouring letters swapped, or one letter more or
/// less: the slips of fast typing. A different letter in place of another is not
/// one of them; it makes other words too often ("brain", "strain").
fn one_slip(a: &str, b: &str) -> bool {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    if x.len() == y.len() {
        let diff: Vec<usize> = (0..x.len()).filter(|&i| x[i] != y[i]).collect();
        return diff.len() == 2 && diff[1] == diff[0] + 1 && x[diff[0]] == y[diff[1]] && x[diff[1]] == y[diff[0]];
    }
    let (long, short) = if x.len() > y.len() { (x, y) } else { (y, x) };
    if long.len() != short.len() + 1 {
        return false;
    }
    let cut = (0..short.len()).find(|&i| long[i] != short[i]).unwrap_or(short.len());
    long[cut + 1..] == short[cut..]
}

/// Words that open or close a follow-up ("and", "what about", "too"), and words
/// that stand for "the same things" in one ("ones", "agents").
const FOLLOW_UP_WORDS: &[&str] = &[
    "and", "what", "about", "how", "same", "for", "in", "on", "at", "with", "also", "the", "then", "ok", "okay", "too",
    "as", "well", "ones", "one", "agents", "nodes", "boxes", "hosts", "now", "there", "of", "thing", "since", "from",
    "until", "over", "during", "last",
];

/// A follow-up: only values, opened by a follow-up word ("and us-east?", "same for
/// ap-south") — a lone name is an answer or a request of its own.
fn is_follow_up(skeleton: &str) -> bool {
    let words: Vec<&str> = skeleton.split(' ').filter(|w| !w.is_empty()).collect();
    let opened = matches!(words.first(), Some(&("and" | "what" | "how" | "same" | "also")))
        || matches!(words.last(), Some(&("too" | "also")));
    opened
        && words.iter().any(|w| w.starts_with('{'))
        && words.iter().all(|w| w.starts_with('{') || FOLLOW_UP_WORDS.contains(w))
        && !words.iter().any(|w| matches!(*w, "{ref}" | "{invalid}"))
}

/// A scope said in a follow-up over the one before: places (fleet, region, zone,
/// agent, env) replace places, each trait (capability, tier) its own kind.
fn merge_scope(old: &[Value], new: &[Value]) -> Vec<Value> {
    let kind = |v: &Value| v.as_str().map(|s| s.split(':').next().unwrap_or(s).to_string()).unwrap_or_default();
    let place = |k: &str| matches!(k, "fleet" | "region" | "zone" | "agent" | "env");
    let new_places = new.iter().any(|v| place(&kind(v)));
    let mut out: Vec<Value> = old
        .iter()
        .filter(|v| {
            let k = kind(v);
            if place(&k) {
                !new_places
            } else {
                !new.iter().any(|n| kind(n) == k)
            }
        })
        .cloned()
        .collect();
    out.extend(new.iter().cloned());
    // The contract's selector order, as a scope said in one sentence has it.
    let rank = |v: &Value| match kind(v).as_str() {
        "region" => 0,
        "zone" => 1,
        "agent" => 2,
        "env" => 3,
        "capability" => 4,
        "tier" => 5,
        _ => 6,
    };
    out.sort_by_key(rank);
    out.dedup();
    if out.len() > 1 {
        out.retain(|v| v != "fleet");
    }
    if out.is_empty() {
        out.push(json!("fleet"));
    }
    out
}

/// Politeness and wake words carry no meaning for the grammar.
fn strip_fillers(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> =
        tokens.into_iter().filter(|t| !matches!(t.text.as_str(), "please" | "pls" | "plz" | "kindly")).collect();
    loop {
        let first = out.first().map(|t| t.text.as_str());
        let second = out.get(1).map(|t| t.text.as_str());
        let drop = match (first, second) {
            (Some("hey" | "hi"), Some("parley")) => 2,
            (Some("can" | "could" | "would" | "will"), Some("you")) => 2,
            (Some("parley"), _) => 1,
            // "ok resume d-5", "so what's up with core-2": a leading filler, when
            // something follows it ("ok" alone is a confirmation). Never before another
            // answer word: "ok ok ok ok" is a stuck key, not one "ok" (a confirmation).
            (Some("ok" | "okay" | "so" | "alright" | "um" | "uh" | "hmm" | "oh"), Some(next))
                if !matches!(
                    next,
                    "thanks"
                        | "thank"
                        | "yes"
                        | "sure"
                        | "go"
                        | "do"
                        | "now"
                        | "i"
                        | "then"
                        | "ok"
                        | "okay"
                        | "alright"
                        | "yeah"
                        | "yep"
                ) =>
            {
                1
            }
            _ => 0,
        };
        if drop == 0 {
            break;
        }
        out.drain(..drop);
    }
    out
}

/// The tokens with each entity replaced by its `{kind}` placeholder.
fn skeleton(tokens: &[Token], entities: &[Entity]) -> String {
    let mut out = String::with_capacity(tokens.len() * 8);
    let mut next = entities.iter().peekable();
    let mut i = 0;
    while i < tokens.len() {
        if !out.is_empty() {
            out.push(' ');
        }
        match next.peek() {
            Some(e) if e.start == i => {
                out.push('{');
                out.push_str(e.kind.as_str());
                out.push('}');
                i = e.end.max(i + 1);
                next.next();
            }
            _ => {
                out.push_str(&tokens[i].text);
                i += 1;
            }
        }
    }
    out
}

/// The value an answer gives `slot` of `op`, claiming the entities it uses; `None`
/// when it gives none, or one the slot refuses.
fn answer_value(
    intent: &grammar::Intent,
    op: &Operation,
    slot: &str,
    entities: &[Entity],
    claimed: &mut [bool],
    vocab: &Vocabulary,
) -> Option<Value> {
    let def = intent.slot(slot)?;
    // Markers matter in a sentence, not in a one-value answer.
    let def = grammar::Slot { markers: Vec::new(), ..def.clone() };
    let value = match slots::read_slot(&def, entities, claimed, vocab) {
        slots::Read::Value(v) => Some(v),
        _ => bare_number(def.kind, entities, claimed),
    }?;
    let value = match (def.kind, value) {
        (SlotKind::Version, Value::String(v)) => {
            let ext = op.to_json().get("extension").and_then(Value::as_str).map(str::to_string);
            json!(vocab.resolve_version(ext.as_deref(), &v))
        }
        (_, v) => v,
    };
    with_slot(op, slot, value.clone()).ok().map(|_| value)
}

/// An answer of just a number, for slots where a number alone is a value.
fn bare_number(kind: SlotKind, entities: &[Entity], claimed: &mut [bool]) -> Option<Value> {
    let (i, e) = entities.iter().enumerate().find(|(i, e)| !claimed[*i] && e.kind == Kind::Number)?;
    let n: u64 = e.value.as_deref()?.parse().ok()?;
    let value = match kind {
        SlotKind::Percent if n <= 100 => json!(n),
        SlotKind::Interval => json!(n),
        SlotKind::Version => json!(n.to_string()),
        SlotKind::Deployment => json!(format!("d-{n}")),
        _ => return None,
    };
    claimed[i] = true;
    Some(value)
}

/// `{field}` -> the op's value for it; `{versions}`, `{extensions}`, `{regions}` ->
/// what the fleet offers. A field not known yet reads "the <field>".
fn fill_template(template: &str, op: &Operation, vocab: &Vocabulary) -> String {
    let json = op.to_json();
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push('{');
            rest = after;
            continue;
        };
        let name = &after[..close];
        rest = &after[close + 1..];
        let text = match name {
            "versions" => {
                let ext = json.get("extension").and_then(Value::as_str);
                match ext.and_then(|e| vocab.catalog().get(e)) {
                    Some(e) => and_list(&e.version_strings()),
                    None => "versions for each extension".to_string(),
                }
            }
            "extensions" => and_list(&vocab.extensions),
            "regions" => and_list(&vocab.regions),
            "scope" => match json.get("scope").cloned().map(serde_json::from_value::<Scope>) {
                Some(Ok(scope)) => scope.to_string(),
                _ => "the scope".to_string(),
            },
            field => match json.get(field) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Object(o)) => o.get("name").and_then(Value::as_str).unwrap_or(field).to_string(),
                Some(v) => v.to_string(),
                None => format!("the {}", crate::words::spaced(field)),
            },
        };
        out.push_str(&text);
    }
    out.push_str(rest);
    out
}

/// "a, b and c"
fn and_list(items: &[String]) -> String {
    match items {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
