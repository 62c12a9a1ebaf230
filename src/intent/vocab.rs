//! What the fleet's names and the operator's fixed words look like, and the scanner
//! that finds them in a token list. Built once per topology snapshot because the
//! names change only when the fleet does.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::topology::{Catalog, Topology, VersionMatch};

use super::normalize::{is_bad_number, is_date, is_digits, is_dotted_version, is_number, looks_numeric, phrase, Token};

/// What a recognised stretch of the utterance is. The names (`as_str`) are the
/// placeholders patterns see in the skeleton (`{region}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Region,
    Zone,
    Agent,
    Env,
    Capability,
    Tier,
    Fleet,
    Extension,
    Version,
    Deployment,
    Status,
    Time,
    Interval,
    Batch,
    Strategy,
    Check,
    Percent,
    Number,
    /// A failure budget: "allow 2 failures", "more than 2 agents fail" (the value is
    /// how many may fail).
    Failures,
    /// "queue": start a rollout once the one it overlaps has finished.
    Queue,
    /// "at most 2 unavailable", "max unavailable 20%": the value is `2` or `20%`.
    Unavailable,
    /// "by zone", "zone by zone", "one region at a time": the placement key of
    /// progressive phases (`zone`, `region`, or a label key such as `env`).
    GroupBy,
    /// "in phases staging then production": the phases' selectors, comma-separated
    /// in the contract's form (`env:staging,env:production`).
    Phases,
    /// "with approval" (`true`), "without approval" (`false`).
    Approval,
    /// "p99 latency under 300 ms": an analysis template's threshold for this rollout;
    /// the value is `NAME:NUMBER:UNIT` (`p99-latency:300:ms`, unit may be empty).
    Gate,
    /// A pronoun ("it", "that", "the last one"): the dialog knows what it means.
    Ref,
    /// Looks like a name (hyphenated) but the fleet has nothing called that.
    Name,
    /// A number no slot can take as said: negative ("-50%"), too long
    /// ("18446744073709551616"), in exponent notation ("1e309"), a fraction of a
    /// percent ("2.5%") or more than 100%. The value is what was said; the parse is
    /// refused rather than read with some other number.
    Invalid,
}

impl Kind {
    pub const ALL: [Kind; 28] = [
        Kind::Region,
        Kind::Zone,
        Kind::Agent,
        Kind::Env,
        Kind::Capability,
        Kind::Tier,
        Kind::Fleet,
        Kind::Extension,
        Kind::Version,
        Kind::Deployment,
        Kind::Status,
        Kind::Time,
        Kind::Interval,
        Kind::Batch,
        Kind::Strategy,
        Kind::Check,
        Kind::Percent,
        Kind::Number,
        Kind::Failures,
        Kind::Queue,
        Kind::Unavailable,
        Kind::GroupBy,
        Kind::Phases,
        Kind::Approval,
        Kind::Gate,
        Kind::Ref,
        Kind::Name,
        Kind::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Region => "region",
            Kind::Zone => "zone",
            Kind::Agent => "agent",
            Kind::Env => "env",
            Kind::Capability => "capability",
            Kind::Tier => "tier",
            Kind::Fleet => "fleet",
            Kind::Extension => "extension",
            Kind::Version => "version",
            Kind::Deployment => "deployment",
            Kind::Status => "status",
            Kind::Time => "time",
            Kind::Interval => "interval",
            Kind::Batch => "batch",
            Kind::Strategy => "strategy",
            Kind::Check => "check",
            Kind::Percent => "percent",
            Kind::Number => "number",
            Kind::Failures => "failures",
            Kind::Queue => "queue",
            Kind::Unavailable => "unavailable",
            Kind::GroupBy => "group",
            Kind::Phases => "phases",
            Kind::Approval => "approval",
            Kind::Gate => "gate",
            Kind::Ref => "ref",
            Kind::Name => "name",
            Kind::Invalid => "invalid",
        }
    }

    /// Kinds that make up a scope, in the contract's canonical selector order.
    pub fn selector_rank(self) -> Option<u8> {
        match self {
            Kind::Region => Some(0),
            Kind::Zone => Some(1),
            Kind::Agent => Some(2),
            Kind::Env => Some(3),
            Kind::Capability => Some(4),
            Kind::Tier => Some(5),
            Kind::Fleet => Some(6),
            _ => None,
        }
    }
}

/// One recognised stretch of tokens `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub kind: Kind,
    /// Canonical value; `None` for a reference ("the rollout" is a deployment, but which
    /// one the dialog decides).
    pub value: Option<String>,
    /// The word before it (articles skipped), for slots that want a marker ("to", "from").
    pub marker: Option<String>,
    pub start: usize,
    pub end: usize,
}

/// The names of one topology snapshot plus the operator's fixed words.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// Normalised phrase -> (kind, canonical value or None for a reference).
    dict: HashMap<String, (Kind, Option<String>)>,
    /// Longest dictionary phrase in tokens.
    max_phrase: usize,
    /// "edge", "core", "gpu": so that "edge 70" reads as an agent name, if an unknown one.
    agent_prefixes: HashSet<String>,
    pub(crate) regions: Vec<String>,
    pub(crate) zones: Vec<String>,
    pub(crate) agents: Vec<String>,
    pub(crate) extensions: Vec<String>,
    /// Normalised word -> the placement key progressive phases can be grouped by
    /// ("zones" -> `zone`, "environment" -> `env`, and the fleet's label keys).
    group_words: HashMap<String, String>,
    catalog: Arc<Catalog>,
    /// The day "since monday" counts back from (UTC today unless set).
    today: chrono::NaiveDate,
}

/// Fixed words: (phrase, kind, value). Values `None` are references.
const FIXED: &[(&str, Kind, Option<&str>)] = &[
    ("fleet", Kind::Fleet, Some("fleet")),
    ("the fleet", Kind::Fleet, Some("fleet")),
    ("whole fleet", Kind::Fleet, Some("fleet")),
    ("the whole fleet", Kind::Fleet, Some("fleet")),
    ("the entire fleet", Kind::Fleet, Some("fleet")),
    ("entire fleet", Kind::Fleet, Some("fleet")),
    ("everywhere", Kind::Fleet, Some("fleet")),
    ("everything", Kind::Fleet, Some("fleet")),
    ("all agents", Kind::Fleet, Some("fleet")),
    ("all the agents", Kind::Fleet, Some("fleet")),
    ("every agent", Kind::Fleet, Some("fleet")),
    ("all regions", Kind::Fleet, Some("fleet")),
    ("every region", Kind::Fleet, Some("fleet")),
    ("canary", Kind::Strategy, Some("canary")),
    ("canaries", Kind::Strategy, Some("canary")),
    ("blue green", Kind::Strategy, Some("blue_green")),
    ("bluegreen", Kind::Strategy, Some("blue_green")),
    ("blue and green", Kind::Strategy, Some("blue_green")),
    ("progressive", Kind::Strategy, Some("progressive")),
    ("progressively", Kind::Strategy, Some("progressive")),
    ("rolling", Kind::Strategy, Some("rolling")),
    ("rolling update", Kind::Strategy, Some("rolling")),
    ("rolling upgrade", Kind::Strategy, Some("rolling")),
    ("with approval", Kind::Approval, Some("true")),
    ("with approvals", Kind::Approval, Some("true")),
    ("with manual approval", Kind::Approval, Some("true")),
    ("with manual approvals", Kind::Approval, Some("true")),
    ("with an approval", Kind::Approval, Some("true")),
    ("with approval between phases", Kind::Approval, Some("true")),
    ("with approval between steps", Kind::Approval, Some("true")),
    ("approval between phases", Kind::Approval, Some("true")),
    ("approval between steps", Kind::Approval, Some("true")),
    ("wait for approval", Kind::Approval, Some("true")),
    ("waiting for approval", Kind::Approval, Some("true")),
    ("wait for approval between phases", Kind::Approval, Some("true")),
    ("require approval", Kind::Approval, Some("true")),
    ("requiring approval", Kind::Approval, Some("true")),
    ("without approval", Kind::Approval, Some("false")),
    ("without approvals", Kind::Approval, Some("false")),
    ("without manual approval", Kind::Approval, Some("false")),
    ("without waiting for approval", Kind::Approval, Some("false")),
    ("no approval", Kind::Approval, Some("false")),
    ("no approvals", Kind::Approval, Some("false")),
    ("pending", Kind::Status, Some("pending")),
    ("queued", Kind::Status, Some("pending")),
    ("running", Kind::Status, Some("running")),
    ("in progress", Kind::Status, Some("running")),
    ("active", Kind::Status, Some("running")),
    ("paused", Kind::Status, Some("paused")),
    ("succeeded", Kind::Status, Some("succeeded")),
    ("successful", Kind::Status, Some("succeeded")),
    ("completed", Kind::Status, Some("succeeded")),
    ("finished", Kind::Status, Some("succeeded")),
    ("failed", Kind::Status, Some("failed")),
    ("failing", Kind::Status, Some("failed")),
    ("aborted", Kind::Status, Some("aborted")),
    ("rolled back", Kind::Status, Some("rolled_back")),
    ("rollbacks", Kind::Status, Some("rolled_back")),
    ("roll backs", Kind::Status, Some("rolled_back")),
    ("failures", Kind::Status, Some("failed")),
    ("aborts", Kind::Status, Some("aborted")),
    ("connectivity", Kind::Check, Some("connectivity")),
    ("network", Kind::Check, Some("connectivity")),
    ("reachability", Kind::Check, Some("connectivity")),
    ("functionality", Kind::Check, Some("functionality")),
    ("functional", Kind::Check, Some("functionality")),
    ("smoke", Kind::Check, Some("functionality")),
    ("performance", Kind::Check, Some("performance")),
    ("latency", Kind::Check, Some("performance")),
    ("security", Kind::Check, Some("security")),
    ("resources", Kind::Check, Some("resources")),
    ("resource", Kind::Check, Some("resources")),
    ("capacity", Kind::Check, Some("resources")),
    ("today", Kind::Time, Some("24h")),
    ("yesterday", Kind::Time, Some("2d")),
    ("this week", Kind::Time, Some("7d")),
    ("this month", Kind::Time, Some("30d")),
    ("this year", Kind::Time, Some("365d")),
    ("half", Kind::Percent, Some("50")),
    ("a half", Kind::Percent, Some("50")),
    ("a quarter", Kind::Percent, Some("25")),
    ("a third", Kind::Percent, Some("33")),
    ("three quarters", Kind::Percent, Some("75")),
    ("weekly", Kind::Time, Some("7d")),
    ("monthly", Kind::Time, Some("30d")),
    ("daily", Kind::Time, Some("24h")),
    ("latest", Kind::Version, Some("latest")),
    ("the latest", Kind::Version, Some("latest")),
    ("newest", Kind::Version, Some("latest")),
    ("the newest", Kind::Version, Some("latest")),
    ("latest version", Kind::Version, Some("latest")),
    ("the latest version", Kind::Version, Some("latest")),
    ("the newest version", Kind::Version, Some("latest")),
    ("most recent version", Kind::Version, Some("latest")),
    ("the most recent version", Kind::Version, Some("latest")),
    ("it", Kind::Ref, None),
    ("that", Kind::Ref, None),
    ("this", Kind::Ref, None),
    ("them", Kind::Ref, None),
    ("that one", Kind::Ref, None),
    ("this one", Kind::Ref, None),
    ("the last one", Kind::Ref, None),
    ("the same one", Kind::Ref, None),
    ("the rollout", Kind::Deployment, None),
    ("this rollout", Kind::Deployment, None),
    ("that rollout", Kind::Deployment, None),
    ("the last rollout", Kind::Deployment, None),
    ("the current rollout", Kind::Deployment, None),
    ("the deployment", Kind::Deployment, None),
    ("this deployment", Kind::Deployment, None),
    ("that deployment", Kind::Deployment, None),
    ("the last deployment", Kind::Deployment, None),
    ("the current deployment", Kind::Deployment, None),
    ("the release", Kind::Deployment, None),
    ("that release", Kind::Deployment, None),
    ("this release", Kind::Deployment, None),
];

/// Aliases for label values, used only when the fleet has the value they name.
const ENV_ALIASES: &[(&str, &str)] =
    &[("prod", "production"), ("prd", "production"), ("stage", "staging"), ("stg", "staging"), ("development", "dev")];

impl Vocabulary {
    pub fn from_topology(t: &Topology) -> Vocabulary {
        let mut v = Vocabulary {
            dict: HashMap::new(),
            max_phrase: 1,
            agent_prefixes: HashSet::new(),
            regions: t.regions().to_vec(),
            zones: t.zones().to_vec(),
            agents: t.agents().iter().map(|a| a.name.to_string()).collect(),
            extensions: t.catalog().extensions().iter().map(|e| e.name.clone()).collect(),
            group_words: HashMap::new(),
            catalog: t.catalog_arc(),
            today: chrono::Utc::now().date_naive(),
        };
        let mut keys: Vec<String> = vec!["zone".into(), "region".into()];
        keys.extend(t.label_keys());
        for key in keys {
            let word = phrase(&key);
            if word.is_empty() || word.contains(' ') {
                continue;
            }
            v.group_words.insert(format!("{word}s"), key.clone());
            v.group_words.insert(word, key);
        }
        if v.group_words.contains_key("env") {
            for word in ["environment", "environments", "envs"] {
                v.group_words.insert(word.to_string(), "env".to_string());
            }
        }
        // Insertion order is precedence: the first kind to claim a phrase keeps it
        // ("gpu" is a capability before it is a tier).
        for a in v.agents.clone() {
            v.add_name(&a, Kind::Agent);
            if let Some((prefix, n)) = a.rsplit_once('-') {
                if is_number(n) {
                    v.agent_prefixes.insert(phrase(prefix));
                }
            }
        }
        for z in v.zones.clone() {
            v.add_name(&z, Kind::Zone);
        }
        for r in v.regions.clone() {
            v.add_name(&r, Kind::Region);
        }
        for e in v.extensions.clone() {
            v.add_name(&e, Kind::Extension);
        }
        let envs = t.label_values("env");
        for e in &envs {
            v.add_name(e, Kind::Env);
        }
        for (alias, env) in ENV_ALIASES {
            if envs.iter().any(|e| e == env) {
                v.add(alias, Kind::Env, Some(env));
            }
        }
        for c in t.capabilities() {
            v.add_name(&c, Kind::Capability);
            v.add(&format!("a {c}"), Kind::Capability, Some(&c));
            v.add(&format!("{c}s"), Kind::Capability, Some(&c));
        }
        for tier in t.label_values("tier") {
            v.add_name(&tier, Kind::Tier);
            v.add(&format!("{tier} tier"), Kind::Tier, Some(&tier));
        }
        for (p, kind, value) in FIXED {
            v.add(p, *kind, *value);
        }
        v
    }

    /// The same vocabulary with weekdays ("since monday") counted back from `today`.
    pub fn with_today(mut self, today: chrono::NaiveDate) -> Vocabulary {
        self.today = today;
        self
    }

    /// "monday" -> the latest Monday on or before today, as a date.
    fn weekday(&self, word: &str) -> Option<String> {
        use chrono::Datelike as _;
        const DAYS: [&[&str]; 7] = [
            &["monday", "mon"],
            &["tuesday", "tue", "tues"],
            &["wednesday", "wed"],
            &["thursday", "thu", "thurs"],
            &["friday", "fri"],
            &["saturday", "sat"],
            &["sunday", "sun"],
        ];
        let day = DAYS.iter().position(|names| names.contains(&word))? as i64;
        let back = (i64::from(self.today.weekday().num_days_from_monday()) - day).rem_euclid(7);
        let date = self.today.checked_sub_signed(chrono::Duration::days(back))?;
        Some(date.format("%Y-%m-%d").to_string())
    }

    /// A fleet name under its spelled-out and run-together forms ("eu west", "euwest").
    fn add_name(&mut self, name: &str, kind: Kind) {
        self.add(name, kind, Some(name));
        let joined: String = name.chars().filter(|c| c.is_alphanumeric()).collect();
        self.add(&joined, kind, Some(name));
    }

    fn add(&mut self, text: &str, kind: Kind, value: Option<&str>) {
        let key = phrase(text);
        if key.is_empty() {
            return;
        }
        self.max_phrase = self.max_phrase.max(key.split(' ').count());
        self.dict.entry(key).or_insert((kind, value.map(str::to_string)));
    }

    /// Whether a single normalised word is, or is part of, a name or fixed word of
    /// this vocabulary ("router" of "geo router").
    pub fn knows(&self, word: &str) -> bool {
        self.dict.contains_key(word)
            || self.agent_prefixes.contains(word)
            || self.dict.keys().any(|k| k.split(' ').any(|w| w == word))
    }

    /// Region names, for did-you-mean with [`suggest`].
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    pub fn zones(&self) -> &[String] {
        &self.zones
    }

    pub fn agents(&self) -> &[String] {
        &self.agents
    }

    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Every name and fixed word, sorted: for completion in the REPL.
    pub fn words(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.regions.iter().chain(&self.zones).chain(&self.agents).chain(&self.extensions).cloned().collect();
        out.extend(self.dict.keys().filter(|k| !k.contains(' ')).cloned());
        out.sort();
        out.dedup();
        out
    }

    /// The catalog's version for what was said, or what was said (without a leading
    /// `v`) when the catalog has no single match: the feasibility check explains.
    pub fn resolve_version(&self, extension: Option<&str>, said: &str) -> String {
        let plain = said.strip_prefix('v').unwrap_or(said);
        match extension.map(|e| self.catalog.resolve_version(e, plain)) {
            Some(VersionMatch::Exact(v)) => v,
            _ => plain.to_string(),
        }
    }

    /// Scans tokens into entities. `plain_phrases` are hyphenated words that are not
    /// names ("fail-over", "roll-out"), taken from the grammar's verbs.
    pub fn scan(&self, tokens: &[Token], plain_phrases: &HashSet<String>) -> Vec<Entity> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            match self.recognise(tokens, i, plain_phrases) {
                Some((kind, value, len)) => {
                    out.push(Entity { kind, value, marker: marker(tokens, i), start: i, end: i + len });
                    i += len.max(1);
                }
                None => i += 1,
            }
        }
        // "auth-filter 2": a bare number right after an extension is its version.
        for k in 1..out.len() {
            if out[k].kind == Kind::Number && out[k - 1].kind == Kind::Extension && out[k - 1].end == out[k].start {
                out[k].kind = Kind::Version;
            }
        }
        steps_without_units(&mut out);
        out
    }

    /// "p99 latency under 300 ms", "error ratio below 2%", "p99-latency < 300ms": a
    /// catalog analysis template (by its description's words or its name), a bound
    /// word, a whole number and an optional unit.
    fn gate_requirement<'a>(&self, w: &dyn Fn(usize) -> &'a str, i: usize) -> Option<(String, usize)> {
        let templates = self.catalog.analysis_templates();
        let (name, mut at) = templates.iter().find_map(|t| {
            if w(i) == t.name {
                return Some((t.name.clone(), i + 1));
            }
            let words: Vec<&str> = t.description.split_whitespace().collect();
            let fits = !words.is_empty() && words.iter().enumerate().all(|(k, word)| w(i + k) == *word);
            fits.then(|| (t.name.clone(), i + words.len()))
        })?;
        at += match (w(at), w(at + 1)) {
            ("under" | "below" | "<" | "within", _) => 1,
            ("less" | "lower", "than") | ("at", "most") | ("no", "more" | "higher") => 2,
            _ => return None,
        };
        if w(at) == "than" {
            at += 1;
        }
        let said = w(at);
        let (digits, glued) = said.split_at(said.find(|c: char| !c.is_ascii_digit()).unwrap_or(said.len()));
        if digits.is_empty() || digits.len() > 9 {
            return None;
        }
        let n: u32 = digits.parse().ok()?;
        let unit_of = |u: &str| match u {
            "ms" | "msec" | "millisecond" | "milliseconds" => Some("ms"),
            "s" | "sec" | "secs" | "second" | "seconds" => Some("s"),
            "%" | "percent" => Some("percent"),
            _ => None,
        };
        let (unit, len) = if !glued.is_empty() {
            (unit_of(glued)?, at + 1 - i)
        } else {
            match unit_of(w(at + 1)) {
                Some(u) => (u, at + 2 - i),
                None => ("", at + 1 - i),
            }
        };
        Some((format!("{name}:{n}:{unit}"), len))
    }

    fn recognise(&self, t: &[Token], i: usize, plain: &HashSet<String>) -> Option<(Kind, Option<String>, usize)> {
        let w = |k: usize| t.get(k).map(|x| x.text.as_str()).unwrap_or("");
        let num = |k: usize| if is_number(w(k)) { w(k).parse::<u64>().ok() } else { None };
        if let Some((gate, len)) = self.gate_requirement(&w, i) {
            return Some((Kind::Gate, Some(gate), len));
        }
        if let Some((n, len)) = failure_budget(&w, &num, i) {
            return Some((Kind::Failures, Some(n.to_string()), len));
        }
        // "queued" stays the status (pending); only the verb asks for queueing.
        if w(i) == "queue" {
            return Some((Kind::Queue, Some("true".to_string()), 1));
        }
        if let Some((n, len)) = max_unavailable(&w, &num, i) {
            return Some((Kind::Unavailable, Some(n), len));
        }
        if let Some((key, len)) = self.group_by(t, i) {
            return Some((Kind::GroupBy, Some(key), len));
        }
        if let Some((phases, len)) = self.phases(t, i) {
            return Some((Kind::Phases, Some(phases), len));
        }
        let word = w(i);

        // Numbers nothing takes as said are refused, never bent into another number:
        // "-50%" is not 50%, "1e309" is not 1, "2.5%" is not 25%.
        let percent_after = w(i + 1) == "%";
        if is_bad_number(word)
            || (percent_after
                && (is_dotted_version(word)
                    || num(i).is_some_and(|n| n > 100)
                    || (looks_numeric(word) && !is_number(word))))
            || (looks_numeric(word) && !is_number(word) && counts_here(&w, i))
        {
            let said = if percent_after { format!("{word}%") } else { word.to_string() };
            return Some((Kind::Invalid, Some(said), 1 + usize::from(percent_after)));
        }

        // Numbers with a meaning given by the words around them.
        if word == "every" {
            if let Some(n) = num(i + 1) {
                if let Some(secs) = unit_secs(w(i + 2)) {
                    return Some((Kind::Interval, Some((n.saturating_mul(secs)).to_string()), 3));
                }
            }
            if let Some((n, unit)) = glued(w(i + 1)) {
                if let Some(secs) = unit_secs(unit) {
                    return Some((Kind::Interval, Some(n.saturating_mul(secs).to_string()), 2));
                }
            }
            if let Some(secs) = unit_secs(w(i + 1)) {
                return Some((Kind::Interval, Some(secs.to_string()), 2));
            }
        }
        if matches!(word, "last" | "past" | "previous") || (word == "the" && matches!(w(i + 1), "last" | "past")) {
            let j = if word == "the" { i + 1 } else { i };
            if let Some(n) = num(j + 1) {
                if let Some(span) = span(n, w(j + 2)) {
                    return Some((Kind::Time, Some(span), j + 3 - i));
                }
            }
            if let Some(span) = span(1, w(j + 1)) {
                return Some((Kind::Time, Some(span), j + 2 - i));
            }
        }
        // A batch is a count of agents ("4") or a share of the targets ("25%").
        let batch = |at: usize| -> Option<(String, usize)> {
            let n = num(at)?;
            if w(at + 1) == "%" {
                return (1..=100).contains(&n).then(|| (format!("{n}%"), 2));
            }
            Some((n.to_string(), 1))
        };
        if (matches!(word, "batches" | "batch") && w(i + 1) == "of") || (word == "batch" && w(i + 1) == "size") {
            if let Some((b, len)) = batch(i + 2) {
                return Some((Kind::Batch, Some(b), 2 + len));
            }
        }
        // Deployment ids are kept as said however long ("d-18446744073709551615"), so
        // that one nobody has is reported as such, not dropped for the latest.
        if matches!(word, "d" | "deployment" | "rollout") {
            if is_digits(w(i + 1)) {
                return Some((Kind::Deployment, Some(deployment_id(w(i + 1))), 2));
            }
            if w(i + 1) == "number" && is_digits(w(i + 2)) {
                return Some((Kind::Deployment, Some(deployment_id(w(i + 2))), 3));
            }
        }
        if let Some(n) = word.strip_prefix('d').filter(|n| is_digits(n)) {
            return Some((Kind::Deployment, Some(deployment_id(n)), 1));
        }
        if word == "version" || word == "v" {
            let next = w(i + 1);
            if is_dotted_version(next) || is_number(next) {
                return Some((Kind::Version, Some(next.to_string()), 2));
            }
        }
        if is_dotted_version(word) {
            return Some((Kind::Version, Some(word.to_string()), 1));
        }
        if is_date(word) {
            return Some((Kind::Time, Some(word.to_string()), 1));
        }
        // "since monday", "since last friday": a weekday is a date only after a word
        // that starts a period ("mon" alone is no date).
        let since = |k: usize| k > 0 && matches!(w(k - 1), "since" | "from" | "after");
        if since(i) {
            let (day, len) = if word == "last" { (w(i + 1), 2) } else { (word, 1) };
            if let Some(date) = self.weekday(day) {
                return Some((Kind::Time, Some(date), len));
            }
        }
        if let Some(n) = num(i) {
            if w(i + 1) == "%" && n <= 100 {
                // "25% at a time", "25% per batch": a rolling batch, not a canary step.
                let batch_words = (w(i + 2) == "at" && w(i + 3) == "a" && w(i + 4) == "time")
                    || (w(i + 2) == "per" && w(i + 3) == "batch");
                if batch_words && n >= 1 {
                    return Some((Kind::Batch, Some(format!("{n}%")), 5));
                }
                return Some((Kind::Percent, Some(n.to_string()), 2));
            }
            let (skip, unit) = if matches!(w(i + 1), "agents" | "agent" | "nodes") { (1, i + 2) } else { (0, i + 1) };
            if w(unit) == "at" && w(unit + 1) == "a" && w(unit + 2) == "time" {
                return Some((Kind::Batch, Some(n.to_string()), 4 + skip));
            }
            if w(unit) == "per" && w(unit + 1) == "batch" {
                return Some((Kind::Batch, Some(n.to_string()), 3 + skip));
            }
            if let Some(span) = span(n, w(i + 1)) {
                // "12 hours" after "since"/"for" reads as a span too
                return Some((Kind::Time, Some(span), 2));
            }
        }
        if let Some((n, unit)) = glued(word) {
            if let Some(span) = span(n, unit) {
                return Some((Kind::Time, Some(span), 1));
            }
        }

        // Fleet names and fixed words, longest phrase first.
        let best = self.lookup(t, i);
        // "edge 70": an agent's shape, but no agent has that name.
        // However long the number: "edge-99999999999" is an agent nobody has, not the
        // tier "edge" and a number.
        if best.as_ref().is_none_or(|b| b.2 == 1) && self.agent_prefixes.contains(word) {
            if let Some(n) = num(i + 1) {
                return Some((Kind::Agent, Some(format!("{word}-{n}")), 2));
            }
            if is_digits(w(i + 1)) {
                return Some((Kind::Agent, Some(format!("{word}-{}", w(i + 1))), 2));
            }
        }
        if best.is_some() {
            return best;
        }
        // A hyphenated chunk nobody knows ("mars-north", "auth-filtr"): kept as said.
        let chunk = t[i].chunk;
        let len = t[i..].iter().take_while(|x| x.chunk == chunk).count();
        // A chunk that holds a known name or word after its first token ("restart-
        // edge-5", as Whisper writes "Restart edge five") is words run together, not
        // a name: each is read on its own.
        let known_inside = (i + 1..i + len).any(|j| {
            self.lookup(t, j).is_some() || (self.agent_prefixes.contains(t[j].text.as_str()) && j + 1 < i + len)
        });
        if len > 1 && (i == 0 || t[i - 1].chunk != chunk) && !known_inside {
            let parts: Vec<&str> = t[i..i + len].iter().map(|x| x.text.as_str()).collect();
            if parts.iter().all(|p| p.chars().all(|c| c.is_alphanumeric())) && !plain.contains(&parts.join(" ")) {
                return Some((Kind::Name, Some(parts.join("-")), len));
            }
        }
        if let Some(n) = num(i) {
            return Some((Kind::Number, Some(n.to_string()), 1));
        }
        None
    }

    /// The longest fleet name or fixed word starting at token `i`.
    fn lookup(&self, t: &[Token], i: usize) -> Option<(Kind, Option<String>, usize)> {
        let mut key = String::new();
        let mut best: Option<(Kind, Option<String>, usize)> = None;
        for len in 1..=self.max_phrase.min(t.len().saturating_sub(i)) {
            if len > 1 {
                key.push(' ');
            }
            key.push_str(&t[i + len - 1].text);
            if let Some((kind, value)) = self.dict.get(&key) {
                best = Some((*kind, value.clone(), len));
            }
        }
        best
    }

    /// "by zone", "zone by zone", "per region", "one zone at a time", "by label tier":
    /// the placement key, and how many tokens say it.
    fn group_by(&self, t: &[Token], i: usize) -> Option<(String, usize)> {
        let w = |k: usize| t.get(k).map(|x| x.text.as_str()).unwrap_or("");
        let key = |word: &str| self.group_words.get(word).cloned();
        match w(i) {
            "by" | "per" if w(i + 1) == "label" => key(w(i + 2)).map(|k| (k, 3)),
            "by" | "per" => key(w(i + 1)).map(|k| (k, 2)),
            "1" | "a" | "one" if w(i + 2) == "at" && w(i + 3) == "a" && w(i + 4) == "time" => {
                key(w(i + 1)).map(|k| (k, 5))
            }
            word if w(i + 1) == "by" && w(i + 2) == word => key(word).map(|k| (k, 3)),
            _ => None,
        }
    }

    /// "in phases staging then production", "phases: eu-west-a, eu-west-b": the
    /// phases' selectors in the contract's form, comma-separated, and how many tokens
    /// say them.
    fn phases(&self, t: &[Token], i: usize) -> Option<(String, usize)> {
        let w = |k: usize| t.get(k).map(|x| x.text.as_str()).unwrap_or("");
        let is_phases = |s: &str| matches!(s, "phases" | "stages" | "waves");
        let mut j = match w(i) {
            "in" if is_phases(w(i + 1)) => i + 2,
            "in" if is_number(w(i + 1)) && is_phases(w(i + 2)) => i + 3,
            s if is_phases(s) => i + 1,
            _ => return None,
        };
        if w(j) == "of" {
            j += 1;
        }
        let mut selectors: Vec<String> = Vec::new();
        let mut end = j;
        while j < t.len() {
            let Some((kind, Some(value), len)) = self.lookup(t, j) else { break };
            if kind.selector_rank().is_none() || kind == Kind::Fleet {
                break;
            }
            selectors.push(format!("{}:{value}", kind.as_str()));
            j += len;
            end = j;
            // Words between two phases: "then", "and then", "followed by", "first".
            while matches!(
                w(j),
                "then" | "and" | "followed" | "by" | "first" | "next" | "after" | "that" | "finally" | "last"
            ) {
                j += 1;
            }
        }
        // A trailing "first" or "last" belongs to the phase before it.
        while matches!(w(end), "first" | "last") {
            end += 1;
        }
        if selectors.is_empty() {
            return None;
        }
        Some((selectors.join(","), end - i))
    }

    /// The kind a name nobody knows most resembles, for placing it in a scope.
    pub fn guess_kind(&self, said: &str) -> Kind {
        let best = |names: &[String]| names.iter().map(|n| strsim::levenshtein(n, said)).min().unwrap_or(usize::MAX);
        let (r, z, a) = (best(&self.regions), best(&self.zones), best(&self.agents));
        if a < r && a < z {
            Kind::Agent
        } else if z < r {
            Kind::Zone
        } else {
            Kind::Region
        }
    }
}

/// The previous word, skipping articles: what a slot's `markers` compare with.
fn marker(tokens: &[Token], start: usize) -> Option<String> {
    tokens[..start]
        .iter()
        .rev()
        .map(|t| t.text.as_str())
        .find(|w| !matches!(*w, "the" | "a" | "an"))
        .map(str::to_string)
}

/// Whether the token at `i` stands where a whole count goes: after "batches of",
/// "every", "at most", "allow", or before "unavailable", "failures", "agents", a time
/// unit, "at a time", "per batch". A "2.5" or "nan" there is refused: dropping it
/// would mean the default ("in batches of 0.5" a default batch, "at most nan
/// unavailable" no limit).
fn counts_here<'a>(w: &dyn Fn(usize) -> &'a str, i: usize) -> bool {
    let before = |k: usize| if i >= k { w(i - k) } else { "" };
    let after_words = matches!(
        (before(2), before(1)),
        ("batches" | "batch", "of")
            | ("batch", "size")
            | (_, "every")
            | ("at", "most")
            | ("up", "to")
            | ("more", "than")
            | ("max" | "maximum", "unavailable")
            | (_, "allow")
            | ("failure", "budget")
    );
    let before_words = matches!(
        w(i + 1),
        "unavailable"
            | "failures"
            | "failure"
            | "fail"
            | "fails"
            | "agents"
            | "agent"
            | "nodes"
            | "node"
            | "s"
            | "sec"
            | "secs"
            | "second"
            | "seconds"
            | "m"
            | "min"
            | "mins"
            | "minute"
            | "minutes"
            | "h"
            | "hr"
            | "hrs"
            | "hour"
            | "hours"
            | "d"
            | "day"
            | "days"
            | "w"
            | "week"
            | "weeks"
    ) || (w(i + 1) == "at" && w(i + 2) == "a" && w(i + 3) == "time")
        || (w(i + 1) == "per" && w(i + 2) == "batch");
    after_words || before_words
}

/// "canary at 5%, then 20, then 60", "progressive 2 10 40": numbers that follow a
/// step strategy or a step share are shares too, as people list them without
/// repeating the unit. Only a run of bare numbers up to 100 counts, each after the
/// strategy or a share with nothing but list words between ("then", "and", "at").
fn steps_without_units(out: &mut [Entity]) {
    let steps = |e: &Entity| {
        e.kind == Kind::Percent
            || (e.kind == Kind::Strategy && matches!(e.value.as_deref(), Some("canary" | "progressive")))
    };
    let Some(first) = out.iter().position(steps) else { return };
    let mut listing = false;
    for e in out.iter_mut().skip(first) {
        if steps(e) {
            listing = true;
            continue;
        }
        let small = e.value.as_deref().and_then(|v| v.parse::<u64>().ok()).is_some_and(|n| (1..=100).contains(&n));
        if e.kind == Kind::Number && small && listing {
            e.kind = Kind::Percent;
        } else if !matches!(
            e.kind,
            Kind::Region
                | Kind::Zone
                | Kind::Env
                | Kind::Fleet
                | Kind::Extension
                | Kind::Version
                | Kind::Capability
                | Kind::Tier
        ) {
            listing = false;
        }
    }
}

/// `d-<digits>` without leading zeros ("d007" is d-7).
fn deployment_id(digits: &str) -> String {
    let t = digits.trim_start_matches('0');
    format!("d-{}", if t.is_empty() { "0" } else { t })
}

/// "30s", "10m", "24h", "30d": number glued to a unit letter.
fn glued(word: &str) -> Option<(u64, &str)> {
    let split = word.find(|c: char| !c.is_ascii_digit())?;
    if split == 0 || split > 9 {
        return None;
    }
    let n = word[..split].parse().ok()?;
    Some((n, &word[split..]))
}

fn unit_secs(unit: &str) -> Option<u64> {
    Some(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        _ => return None,
    })
}

/// A span back from now in the contract's form ("30d"); months and years as days.
fn span(n: u64, unit: &str) -> Option<String> {
    let n = u32::try_from(n).ok()?;
    Some(match unit {
        "m" | "min" | "mins" | "minute" | "minutes" => format!("{n}m"),
        "h" | "hr" | "hrs" | "hour" | "hours" => format!("{n}h"),
        "d" | "day" | "days" => format!("{n}d"),
        "w" | "wk" | "wks" | "week" | "weeks" => format!("{n}w"),
        "month" | "months" => format!("{}d", n.checked_mul(30)?),
        "year" | "years" => format!("{}d", n.checked_mul(365)?),
        _ => return None,
    })
}

/// Deployment statuses and check kinds the scanner emits, checked against the
/// contract's enums so a typo here fails a test rather than a user.
#[cfg(test)]
pub fn fixed_values_are_valid() -> bool {
    use crate::ops::{Check, DeploymentStatus};
    FIXED.iter().all(|(_, kind, value)| match (kind, value) {
        (Kind::Status, Some(v)) => DeploymentStatus::parse(v).is_some(),
        (Kind::Check, Some(v)) => Check::ALL.iter().any(|c| c.as_str() == *v),
        _ => true,
    })
}

/// Close names for one nobody knows, best first, at most three.
pub fn suggest<'a>(said: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let said = said.to_lowercase();
    // Beyond about a third of the name changed, a "did you mean" is noise.
    let limit = (said.chars().count() / 3).max(2);
    // Ties in edit distance go to the name sharing the longer start ("edge-70" -> "edge-7").
    let mut scored: Vec<(usize, f64, String)> = candidates
        .into_iter()
        .map(|c| {
            let lower = c.to_lowercase();
            (strsim::levenshtein(&said, &lower), strsim::jaro_winkler(&said, &lower), c.to_string())
        })
        .filter(|(d, _, _)| *d <= limit)
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    scored.dedup_by(|a, b| a.2 == b.2);
    scored.into_iter().take(3).map(|(_, _, c)| c).collect()
}

/// "more than N [agents] fail", "N failures", "N agents fail", "failure budget [of] N":
/// how many agents may fail, and how many tokens say it.
fn failure_budget<'a>(
    w: &dyn Fn(usize) -> &'a str,
    num: &dyn Fn(usize) -> Option<u64>,
    i: usize,
) -> Option<(u64, usize)> {
    let fail_word = |s: &str| matches!(s, "fail" | "fails" | "failing" | "failed" | "failure" | "failures");
    let agents_word = |s: &str| matches!(s, "agents" | "agent" | "nodes" | "installs");
    // After the number: "fail", or "agents fail"; answers the tokens used from `at`.
    let after = |at: usize| -> Option<(u64, usize)> {
        let n = num(at)?;
        if fail_word(w(at + 1)) {
            Some((n, 2))
        } else if agents_word(w(at + 1)) && fail_word(w(at + 2)) {
            Some((n, 3))
        } else {
            None
        }
    };
    if matches!(w(i), "more" | "over") {
        let skip = usize::from(w(i + 1) == "than");
        return after(i + 1 + skip).map(|(n, len)| (n, len + 1 + skip));
    }
    if w(i) == "failure" && w(i + 1) == "budget" {
        let skip = usize::from(w(i + 2) == "of");
        return num(i + 2 + skip).map(|n| (n, 3 + skip));
    }
    after(i)
}

/// "at most 2 unavailable", "no more than 2 agents unavailable at a time", "max
/// unavailable 20%", "maximum unavailable of 3": the limit in the contract's form
/// (`2`, `20%`), and how many tokens say it.
fn max_unavailable<'a>(
    w: &dyn Fn(usize) -> &'a str,
    num: &dyn Fn(usize) -> Option<u64>,
    i: usize,
) -> Option<(String, usize)> {
    // After the number: "%" or "agents", then (for the number-first forms) "unavailable".
    let amount = |at: usize| -> Option<(String, usize)> {
        let n = num(at)?;
        match w(at + 1) {
            "%" if n <= 100 => Some((format!("{n}%"), 2)),
            "agents" | "agent" | "nodes" | "node" => Some((n.to_string(), 2)),
            _ => Some((n.to_string(), 1)),
        }
    };
    // "at once", "at a time", "at the same time" say nothing more.
    let tail = |at: usize| -> usize {
        match (w(at), w(at + 1), w(at + 2), w(at + 3)) {
            ("at", "once", _, _) => 2,
            ("at", "a", "time", _) => 3,
            ("at", "the", "same", "time") => 4,
            _ => 0,
        }
    };
    let word = w(i);
    if matches!(word, "max" | "maximum") && w(i + 1) == "unavailable" {
        let skip = usize::from(matches!(w(i + 2), "of" | "is"));
        let (value, len) = amount(i + 2 + skip)?;
        let end = i + 2 + skip + len;
        return Some((value, end + tail(end) - i));
    }
    let lead = match (word, w(i + 1), w(i + 2)) {
        ("at", "most", _) | ("up", "to", _) => 2,
        ("no", "more", "than") => 3,
        ("max" | "maximum", _, _) => 1,
        _ => 0,
    };
    let (value, len) = amount(i + lead)?;
    let end = i + lead + len;
    if w(end) != "unavailable" {
        return None;
    }
    Some((value, end + 1 + tail(end + 1) - i))
}
