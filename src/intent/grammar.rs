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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentDef {
    op: String,
    #[serde(default)]
    priority: i32,
    #[serde(default)]
    verbs: Vec<String>,
    patterns: Vec<String>,
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
}

pub fn compile(files: &[(String, String)]) -> Result<Compiled, IntentError> {
    let mut intents = Vec::new();
    let mut sources = Vec::new();
    let mut owners = Vec::new();
    let mut plain_phrases = HashSet::new();
    for (file, text) in files {
        let parsed: FileDef =
            toml::from_str(text).map_err(|e| IntentError::File { file: file.clone(), reason: flat(&e.to_string()) })?;
        for def in parsed.intent {
            for v in &def.verbs {
                plain_phrases.insert(phrase(v));
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
    Ok(Compiled { intents, set, owners, plain_phrases })
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
    for p in &def.patterns {
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
            let better = match best {
                None => true,
                Some((bp, bl, bi)) => {
                    (intent.priority, len) > (bp, bl) || ((intent.priority, len) == (bp, bl) && i < bi)
                }
            };
            if better {
                best = Some((intent.priority, len, i));
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
