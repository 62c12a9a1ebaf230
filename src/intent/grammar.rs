//! The grammar files (`intents/*.toml`): their format, loading and validation.
//! Everything an operator can say lives in those files; this module only checks
//! them thoroughly at load so that a bad file fails loudly, once, naming its field.

use std::collections::HashSet;
use std::path::Path;

use regex::{Regex, RegexSet};
use serde::Deserialize;
use serde_json::{json, Value};

use super::normalize::phrase;
use super::vocab::Kind;
use super::IntentError;
use crate::ops::Operation;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    #[serde(default)]
    intent: Vec<IntentDef>,
    #[serde(default)]
    rewrite: Vec<RewriteDef>,
}

/// Words said one way and meant another ("hows" -> "how", "stop sending traffic
/// to" -> "move all traffic away from"), replaced before anything is recognised.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RewriteDef {
    say: Vec<String>,
    #[serde(rename = "as")]
    means: String,
}

/// A pattern, alone or with a priority of its own (over its intent's).
#[derive(Deserialize)]
#[serde(untagged)]
enum PatternDef {
    Plain(String),
    Ranked { re: String, priority: i32 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentDef {
    op: String,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    verbs: Vec<String>,
    patterns: Vec<PatternDef>,
    #[serde(default)]
    required: Vec<String>,
    #[serde(default)]
    pronoun: Option<String>,
    /// The utterance must be plain words ([`super::normalize::is_plain`]) for this
    /// intent to match at all.
    #[serde(default)]
    plain: bool,
    #[serde(default)]
    slot: Vec<SlotDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotDef {
    name: String,
    kind: String,
    #[serde(default)]
    markers: Vec<String>,
    #[serde(default)]
    ask: Option<String>,
    #[serde(default)]
    default: Option<toml::Value>,
}

/// How a slot's value is read from the entities of an utterance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Scope,
    Region,
    Agent,
    Extension,
    /// `{name, version}` for find_agents.
    ExtensionRef,
    Version,
    Deployment,
    Status,
    Time,
    Interval,
    Percent,
    Strategy,
    Checks,
    /// A count of agents (a failure budget).
    Count,
    /// A yes/no said by a word ("queue"): true when present.
    Flag,
    /// "with approval" (true) or "without approval" (false).
    Approval,
    /// Analysis thresholds said with a rollout ("gated on p99 latency under 300 ms").
    Gate,
}

impl SlotKind {
    const ALL: [(&'static str, SlotKind); 17] = [
        ("scope", SlotKind::Scope),
        ("region", SlotKind::Region),
        ("agent", SlotKind::Agent),
        ("extension", SlotKind::Extension),
        ("extension_ref", SlotKind::ExtensionRef),
        ("version", SlotKind::Version),
        ("deployment", SlotKind::Deployment),
        ("status", SlotKind::Status),
        ("time", SlotKind::Time),
        ("interval", SlotKind::Interval),
        ("percent", SlotKind::Percent),
        ("strategy", SlotKind::Strategy),
        ("checks", SlotKind::Checks),
        ("count", SlotKind::Count),
        ("flag", SlotKind::Flag),
        ("approval", SlotKind::Approval),
        ("gate", SlotKind::Gate),
    ];

    fn parse(s: &str) -> Option<SlotKind> {
        SlotKind::ALL.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }

    /// A value of this kind, to test at load that the op really has such a field.
    fn sample(self) -> Value {
        match self {
            SlotKind::Scope => json!(["fleet"]),
            SlotKind::Region | SlotKind::Agent | SlotKind::Extension => json!("x"),
            SlotKind::ExtensionRef => json!({"name": "x"}),
            SlotKind::Version => json!("1.0.0"),
            SlotKind::Deployment => json!("d-1"),
            SlotKind::Status => json!("failed"),
            SlotKind::Time => json!("1d"),
            SlotKind::Interval | SlotKind::Percent => json!(10),
            SlotKind::Strategy => json!({"kind": "canary"}),
            SlotKind::Checks => json!(["security"]),
            SlotKind::Count => json!(2),
            SlotKind::Flag | SlotKind::Approval => json!(true),
            SlotKind::Gate => json!([{"metric": "p99-latency", "threshold": 300, "unit": "ms"}]),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Slot {
    pub name: String,
    pub kind: SlotKind,
    /// Normalised words that must precede the value ("to", "from"); empty: any place.
    pub markers: Vec<String>,
    pub ask: Option<String>,
    pub default: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct Intent {
    pub op: String,
    pub priority: i32,
    pub patterns: Vec<Regex>,
    /// Each pattern's priority: its own, or the intent's.
    pub ranks: Vec<i32>,
    pub required: Vec<String>,
    pub pronoun: Option<String>,
    /// Matches only an utterance of plain words (`plain = true` in the file).
    pub plain: bool,
    pub slots: Vec<Slot>,
}

impl Intent {
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }
}

/// All intents, with one regex set over every pattern so that matching an utterance
/// is a single pass whatever the size of the grammar.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub intents: Vec<Intent>,
    set: RegexSet,
    /// For each pattern of the set: (intent index, pattern index).
    owners: Vec<(usize, usize)>,
    /// Hyphenated words from verbs ("fail-over"): not unknown names.
    pub plain_phrases: HashSet<String>,
    /// Every word the patterns and verbs spell out: never taken for a typo.
    pub words: HashSet<String>,
    /// One-word verbs of five letters or more, longest first: what a typo is read as.
    pub verbs: Vec<String>,
    /// (said, meant) token sequences, longest said first.
    pub rewrites: Vec<(Vec<String>, Vec<String>)>,
}

pub fn compile(files: &[(String, String)]) -> Result<Compiled, IntentError> {
    let mut intents = Vec::new();
    let mut sources = Vec::new();
    let mut owners = Vec::new();
    let mut plain_phrases = HashSet::new();
    let mut words = HashSet::new();
    let mut verbs: Vec<String> = Vec::new();
    let mut rewrites: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    for (file, text) in files {
        let parsed: FileDef =
            toml::from_str(text).map_err(|e| IntentError::File { file: file.clone(), reason: flat(&e.to_string()) })?;
        for r in &parsed.rewrite {
            let means: Vec<String> =
                phrase(&r.means).split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect();
            for said in &r.say {
                let said: Vec<String> = phrase(said).split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect();
                if said.is_empty() {
                    return Err(IntentError::File {
                        file: file.clone(),
                        reason: format!("rewrite of {:?}: nothing to replace", r.means),
                    });
                }
                rewrites.push((said, means.clone()));
            }
        }
        for def in parsed.intent {
            for v in &def.verbs {
                let p = phrase(v);
                if p.len() >= 5 && p.bytes().all(|b| b.is_ascii_lowercase()) && !verbs.contains(&p) {
                    verbs.push(p.clone());
                }
                words.extend(p.split(' ').map(str::to_string));
                plain_phrases.insert(p);
            }
            for pattern in def.patterns.iter().map(PatternDef::text) {
                words.extend(
                    pattern
                        .split(|c: char| !c.is_ascii_alphabetic())
                        .filter(|w| w.len() > 1)
                        .map(str::to_ascii_lowercase),
                );
            }
            let intent = compile_intent(file, def)?;
            for (p, re) in intent.patterns.iter().enumerate() {
                sources.push(re.as_str().to_string());
                owners.push((intents.len(), p));
            }
            intents.push(intent);
        }
    }
    let set = RegexSet::new(&sources)
        .map_err(|e| IntentError::File { file: "intents".into(), reason: flat(&e.to_string()) })?;
    verbs.sort_by_key(|v| std::cmp::Reverse(v.len()));
    rewrites.sort_by_key(|(said, _)| std::cmp::Reverse(said.len()));
    Ok(Compiled { intents, set, owners, plain_phrases, words, verbs, rewrites })
}

impl PatternDef {
    fn text(&self) -> &str {
        match self {
            PatternDef::Plain(s) => s,
            PatternDef::Ranked { re, .. } => re,
        }
    }
}

impl Compiled {
    /// The tokens with every rewrite applied (longest said first, left to right).
    pub fn rewrite(&self, tokens: Vec<super::normalize::Token>) -> Vec<super::normalize::Token> {
        if self.rewrites.is_empty() {
            return tokens;
        }
        let mut out = Vec::with_capacity(tokens.len());
        let mut i = 0;
        // Each word put in is a chunk of its own (from the top of the range, which
        // the tokenizer never reaches): words, not parts of one hyphenated name.
        let mut chunk = u32::MAX;
        'next: while i < tokens.len() {
            for (said, means) in &self.rewrites {
                let end = i + said.len();
                if end <= tokens.len() && tokens[i..end].iter().zip(said).all(|(t, w)| t.text == *w) {
                    for m in means {
                        out.push(super::normalize::Token { text: m.clone(), chunk });
                        chunk -= 1;
                    }
                    i = end;
                    continue 'next;
                }
            }
            out.push(tokens[i].clone());
            i += 1;
        }
        out
    }
}

/// TOML and regex errors come over several lines with carets; one line reads better
/// in a log and in a test.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn compile_intent(file: &str, def: IntentDef) -> Result<Intent, IntentError> {
    let err = |field: &str, reason: String| IntentError::Field {
        file: file.to_string(),
        intent: def.op.clone(),
        field: field.to_string(),
        reason,
    };
    if !Operation::NAMES.contains(&def.op.as_str()) {
        return Err(err("op", format!("unknown operation `{}`", def.op)));
    }
    if def.patterns.is_empty() {
        return Err(err("patterns", "no patterns".into()));
    }
    let mut verbs: Vec<String> = def.verbs.iter().map(|v| phrase(v)).filter(|v| !v.is_empty()).collect();
    verbs.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let verb_alt = format!("(?:{})", verbs.iter().map(|v| regex::escape(v)).collect::<Vec<_>>().join("|"));
    let mut patterns = Vec::new();
    let mut ranks = Vec::new();
    for def_p in &def.patterns {
        let p = def_p.text();
        ranks.push(match def_p {
            PatternDef::Ranked { priority, .. } => *priority,
            PatternDef::Plain(_) => def.priority,
        });
        if p.contains("{verb}") && verbs.is_empty() {
            return Err(err("patterns", format!("`{p}` uses {{verb}} but the intent has no verbs")));
        }
        let expanded = expand(p, &verb_alt);
        let re = Regex::new(&expanded).map_err(|e| err("patterns", flat(&e.to_string())))?;
        patterns.push(re);
    }
    let mut slots = Vec::new();
    for s in def.slot {
        let field = format!("slot.{}", s.name);
        let kind = SlotKind::parse(&s.kind).ok_or_else(|| err(&field, format!("unknown slot kind `{}`", s.kind)))?;
        // Building the op is the one check that cannot drift from the contract.
        Operation::from_json(json!({"op": def.op, s.name.clone(): kind.sample()})).map_err(|e| {
            err(&field, format!("`{}` has no field `{}` of kind {}: {}", def.op, s.name, s.kind, flat(&e.to_string())))
        })?;
        let default = match s.default {
            None => None,
            Some(v) => {
                let v = serde_json::to_value(v).map_err(|e| err(&field, e.to_string()))?;
                Operation::from_json(json!({"op": def.op, s.name.clone(): v.clone()}))
                    .map_err(|e| err(&field, format!("default does not fit: {}", flat(&e.to_string()))))?;
                Some(v)
            }
        };
        if slots.iter().any(|x: &Slot| x.name == s.name) {
            return Err(err(&field, "slot declared twice".into()));
        }
        slots.push(Slot {
            name: s.name,
            kind,
            markers: s.markers.iter().map(|m| phrase(m)).collect(),
            ask: s.ask,
            default,
        });
    }
    for r in &def.required {
        if !slots.iter().any(|s| s.name == *r) {
            return Err(err("required", format!("`{}` has no slot `{r}`", def.op)));
        }
    }
    if let Some(p) = &def.pronoun {
        if !slots.iter().any(|s| s.name == *p) {
            return Err(err("pronoun", format!("`{}` has no slot `{p}`", def.op)));
        }
    }
    Ok(Intent {
        op: def.op,
        priority: def.priority,
        patterns,
        ranks,
        required: def.required,
        pronoun: def.pronoun,
        plain: def.plain,
        slots,
    })
}

/// `{verb}` -> the intent's verbs; `{scope}` -> any selector placeholder; `{region}`
/// etc. -> the literal placeholder. Other braces (`{2}`) stay regex syntax.
fn expand(pattern: &str, verb_alt: &str) -> String {
    let mut out = String::with_capacity(pattern.len() * 2);
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}');
        let name = close.map(|c| &after[..c]).unwrap_or("");
        let replacement = match name {
            "verb" => Some(verb_alt.to_string()),
            "scope" => Some(r"\{(?:region|zone|agent|env|capability|tier|fleet|name)\}".to_string()),
            n if Kind::ALL.iter().any(|k| k.as_str() == n) => Some(format!(r"\{{{n}\}}")),
            _ => None,
        };
        match (replacement, close) {
            (Some(r), Some(c)) => {
                out.push_str(&r);
                rest = &after[c + 1..];
            }
            _ => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl Compiled {
    /// The intent whose patterns fit the skeleton best: highest priority, then the
    /// longest match (the more specific phrasing), then the earlier intent. Intents
    /// that want plain words are left out unless the utterance is `plain`.
    pub fn best(&self, skeleton: &str, plain: bool) -> Option<&Intent> {
        let mut best: Option<(i32, usize, usize)> = None;
        for idx in self.set.matches(skeleton).iter() {
            let Some(&(i, p)) = self.owners.get(idx) else { continue };
            let intent = &self.intents[i];
            if intent.plain && !plain {
                continue;
            }
            let len = intent.patterns[p].find(skeleton).map(|m| m.len()).unwrap_or(0);
            let rank = intent.ranks.get(p).copied().unwrap_or(intent.priority);
            let better = match best {
                None => true,
                Some((bp, bl, bi)) => (rank, len) > (bp, bl) || ((rank, len) == (bp, bl) && i < bi),
            };
            if better {
                best = Some((rank, len, i));
            }
        }
        best.map(|(_, _, i)| &self.intents[i])
    }

    pub fn intent(&self, op: &str) -> Option<&Intent> {
        self.intents.iter().find(|i| i.op == op)
    }
}

/// The embedded grammar files, in a fixed order.
pub const EMBEDDED: [(&str, &str); 7] = [
    ("intents/session.toml", include_str!("../../intents/session.toml")),
    ("intents/inspect.toml", include_str!("../../intents/inspect.toml")),
    ("intents/deploy.toml", include_str!("../../intents/deploy.toml")),
    ("intents/deployments.toml", include_str!("../../intents/deployments.toml")),
    ("intents/agents.toml", include_str!("../../intents/agents.toml")),
    ("intents/traffic.toml", include_str!("../../intents/traffic.toml")),
    ("intents/troubleshoot.toml", include_str!("../../intents/troubleshoot.toml")),
];

/// Reads every `*.toml` of a directory, sorted by name.
pub fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, IntentError> {
    let io = |e: std::io::Error| IntentError::File { file: dir.display().to_string(), reason: e.to_string() };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for p in paths {
        let text = std::fs::read_to_string(&p)
            .map_err(|e| IntentError::File { file: p.display().to_string(), reason: e.to_string() })?;
        files.push((p.display().to_string(), text));
    }
    Ok(files)
}
