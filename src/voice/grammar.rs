//! The spoken-command grammar (`intents/spoken.ebnf`) and the automaton that
//! decides, character by character, whether a transcript is still on its way to a
//! sentence of it.
//!
//! Whisper left to itself writes what English makes likely ("on the roll out" for
//! "pause the rollout"); constrained to this language it can only choose among
//! sentences Parley understands, which is what lifts accuracy on fleet commands.
//! The grammar names fleet things through slots (`<agent>`, `<region>`, ...) that
//! are filled from the live topology when a voice session starts, so a new agent
//! can be spoken to without editing the file.
//!
//! The compiled form is a Thompson NFA over lowercase ASCII bytes; [`Dfa`]
//! determinises it lazily, one state set at a time, as decoding asks.

use std::collections::HashMap;

use crate::topology::Topology;

/// The grammar built into the binary; `spoken.ebnf` in the intents directory replaces it.
pub const EMBEDDED: &str = include_str!("../../intents/spoken.ebnf");

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GrammarError {
    #[error("{origin}:{line}: {reason}")]
    Syntax { origin: String, line: usize, reason: String },
    #[error("{origin}: rule `{rule}` is used but never defined")]
    Undefined { origin: String, rule: String },
    #[error("{origin}: slot <{slot}> is not one Parley fills (agent region zone extension version env capability tier digits)")]
    UnknownSlot { origin: String, slot: String },
    #[error("{origin}: rule `{rule}` refers to itself without consuming a word")]
    Recursive { origin: String, rule: String },
    #[error("{origin}: there is no `command` rule (the whole utterance)")]
    NoStart { origin: String },
}

/// One piece of a rule.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    /// One word; `glued` means no separator before it.
    Word {
        text: String,
        glued: bool,
    },
    Rule(String),
    Slot {
        name: String,
        glued: bool,
    },
    Seq(Vec<Expr>),
    Alt(Vec<Expr>),
    Opt(Box<Expr>),
    Star(Box<Expr>),
}

/// The slots a grammar may use: filled from the fleet, plus `<digits>`.
const SLOTS: &[&str] = &["agent", "region", "zone", "extension", "version", "env", "capability", "tier", "digits"];

/// A parsed grammar: rules by name, in file order.
#[derive(Debug, Clone)]
pub struct SpokenGrammar {
    rules: HashMap<String, Expr>,
    order: Vec<String>,
    origin: String,
}

impl SpokenGrammar {
    pub fn embedded() -> Result<SpokenGrammar, GrammarError> {
        SpokenGrammar::parse(EMBEDDED, "intents/spoken.ebnf")
    }

    /// `spoken.ebnf` from an intents directory, or the embedded one when it has none.
    pub fn load(intents_dir: Option<&std::path::Path>) -> Result<SpokenGrammar, GrammarError> {
        if let Some(path) = intents_dir.map(|d| d.join("spoken.ebnf")).filter(|p| p.is_file()) {
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(&path).map_err(|e| GrammarError::Syntax {
                origin: origin.clone(),
                line: 0,
                reason: e.to_string(),
            })?;
            return SpokenGrammar::parse(&text, &origin);
        }
        SpokenGrammar::embedded()
    }

    pub fn parse(text: &str, origin: &str) -> Result<SpokenGrammar, GrammarError> {
        // Join continuation lines (indented) onto their rule, remembering where it began.
        let mut chunks: Vec<(usize, String)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = strip_comment(raw);
            if line.trim().is_empty() {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                match chunks.last_mut() {
                    Some((_, body)) => {
                        body.push(' ');
                        body.push_str(line.trim());
                    }
                    None => {
                        return Err(GrammarError::Syntax {
                            origin: origin.into(),
                            line: i + 1,
                            reason: "an indented line continues a rule, but no rule came before it".into(),
                        })
                    }
                }
            } else {
                chunks.push((i + 1, line.trim().to_string()));
            }
        }
        let mut rules = HashMap::new();
        let mut order = Vec::new();
        for (line, chunk) in chunks {
            let err = |reason: String| GrammarError::Syntax { origin: origin.into(), line, reason };
            let Some((name, body)) = chunk.split_once('=') else {
                return Err(err("expected `name = expression`".into()));
            };
            let name = name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(format!("`{name}` is not a rule name (letters, digits, _)")));
            }
            let mut p = ExprParser { chars: body.chars().collect(), pos: 0 };
            let expr = p.alternatives().map_err(&err)?;
            p.skip_space();
            if p.pos < p.chars.len() {
                return Err(err(format!("unexpected `{}`", p.chars[p.pos..].iter().collect::<String>())));
            }
            if rules.insert(name.to_string(), expr).is_some() {
                return Err(err(format!("rule `{name}` is defined twice")));
            }
            order.push(name.to_string());
        }
        let grammar = SpokenGrammar { rules, order, origin: origin.to_string() };
        grammar.validate()?;
        Ok(grammar)
    }

    /// Every rule and slot used exists, and no rule can reach itself before a word.
    fn validate(&self) -> Result<(), GrammarError> {
        if !self.rules.contains_key("command") {
            return Err(GrammarError::NoStart { origin: self.origin.clone() });
        }
        for expr in self.rules.values() {
            let mut bad = None;
            visit(expr, &mut |e| match e {
                Expr::Rule(r) if !self.rules.contains_key(r) && bad.is_none() => {
                    bad = Some(GrammarError::Undefined { origin: self.origin.clone(), rule: r.clone() })
                }
                Expr::Slot { name, .. } if !SLOTS.contains(&name.as_str()) && bad.is_none() => {
                    bad = Some(GrammarError::UnknownSlot { origin: self.origin.clone(), slot: name.clone() })
                }
                _ => {}
            });
            if let Some(e) = bad {
                return Err(e);
            }
        }
        // Left recursion would make the automaton infinite.
        for name in &self.order {
            let mut stack = vec![name.clone()];
            let mut seen = std::collections::HashSet::new();
            while let Some(r) = stack.pop() {
                let Some(expr) = self.rules.get(&r) else { continue };
                for first in leading_rules(expr) {
                    if &first == name {
                        return Err(GrammarError::Recursive { origin: self.origin.clone(), rule: name.clone() });
                    }
                    if seen.insert(first.clone()) {
                        stack.push(first);
                    }
                }
            }
        }
        Ok(())
    }

    /// Rule names in file order.
    pub fn rule_names(&self) -> &[String] {
        &self.order
    }

    /// A random sentence of `rule`, for tests that check the typed parser agrees.
    pub fn sample(&self, rule: &str, slots: &Slots, rng: &mut impl rand::Rng) -> Option<String> {
        let mut words: Vec<(String, bool)> = Vec::new();
        self.sample_expr(self.rules.get(rule)?, slots, rng, &mut words, 0)?;
        let mut out = String::new();
        for (w, glued) in words {
            if !out.is_empty() && !glued {
                out.push(' ');
            }
            out.push_str(&w);
        }
        Some(out)
    }

    fn sample_expr(
        &self,
        e: &Expr,
        slots: &Slots,
        rng: &mut impl rand::Rng,
        out: &mut Vec<(String, bool)>,
        depth: usize,
    ) -> Option<()> {
        if depth > 64 {
            return None;
        }
        match e {
            Expr::Word { text, glued } => out.push((text.clone(), *glued)),
            Expr::Rule(r) => self.sample_expr(self.rules.get(r)?, slots, rng, out, depth + 1)?,
            Expr::Slot { name, glued } => {
                let phrases = slots.phrases(name);
                if phrases.is_empty() {
                    return None;
                }
                let phrase = &phrases[rng.gen_range(0..phrases.len())];
                for (i, w) in phrase.iter().enumerate() {
                    out.push((w.clone(), i == 0 && *glued));
                }
            }
            Expr::Seq(items) => {
                for i in items {
                    self.sample_expr(i, slots, rng, out, depth + 1)?;
                }
            }
            Expr::Alt(items) => {
                // An alternative whose slot is empty in this fleet is skipped.
                let mut order: Vec<usize> = (0..items.len()).collect();
                for i in (1..order.len()).rev() {
                    order.swap(i, rng.gen_range(0..=i));
                }
                for i in order {
                    let before = out.len();
                    if self.sample_expr(&items[i], slots, rng, out, depth + 1).is_some() {
                        return Some(());
                    }
                    out.truncate(before);
                }
                return None;
            }
            Expr::Opt(inner) => {
                if rng.gen_bool(0.5) {
                    let before = out.len();
                    if self.sample_expr(inner, slots, rng, out, depth + 1).is_none() {
                        out.truncate(before);
                    }
                }
            }
            Expr::Star(inner) => {
                while rng.gen_bool(0.3) {
                    self.sample_expr(inner, slots, rng, out, depth + 1)?;
                }
            }
        }
        Some(())
    }
}

fn strip_comment(line: &str) -> &str {
    // A '#' inside quotes is a word, not a comment.
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn visit(e: &Expr, f: &mut impl FnMut(&Expr)) {
    f(e);
    match e {
        Expr::Seq(v) | Expr::Alt(v) => v.iter().for_each(|i| visit(i, f)),
        Expr::Opt(i) | Expr::Star(i) => visit(i, f),
        _ => {}
    }
}

/// Rules that can be entered before any word of `e` is consumed.
fn leading_rules(e: &Expr) -> Vec<String> {
    fn walk(e: &Expr, out: &mut Vec<String>) -> bool {
        // Returns whether `e` can match nothing.
        match e {
            Expr::Word { .. } | Expr::Slot { .. } => false,
            Expr::Rule(r) => {
                out.push(r.clone());
                // Conservatively assume a rule may be empty only via Opt/Star; the
                // caller follows the chain through the rule itself.
                false
            }
            Expr::Seq(items) => {
                for i in items {
                    if !walk(i, out) {
                        return false;
                    }
                }
                true
            }
            Expr::Alt(items) => {
                let mut empty = false;
                for i in items {
                    empty |= walk(i, out);
                }
                empty
            }
            Expr::Opt(i) | Expr::Star(i) => {
                walk(i, out);
                true
            }
        }
    }
    let mut out = Vec::new();
    walk(e, &mut out);
    out
}

struct ExprParser {
    chars: Vec<char>,
    pos: usize,
}

impl ExprParser {
    fn skip_space(&mut self) {
        while self.chars.get(self.pos).is_some_and(|c| c.is_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.pos).copied()
    }

    fn alternatives(&mut self) -> Result<Expr, String> {
        let mut alts = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alts.push(self.sequence()?);
        }
        Ok(if alts.len() == 1 { alts.remove(0) } else { Expr::Alt(alts) })
    }

    fn sequence(&mut self) -> Result<Expr, String> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if matches!(c, '|' | ')' | ']') {
                break;
            }
            let mut item = self.atom()?;
            if self.chars.get(self.pos) == Some(&'*') {
                self.pos += 1;
                item = Expr::Star(Box::new(item));
            }
            items.push(item);
        }
        match items.len() {
            0 => Err("an empty alternative".into()),
            1 => Ok(items.remove(0)),
            _ => Ok(Expr::Seq(items)),
        }
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let glued = self.peek() == Some('~');
        if glued {
            self.pos += 1;
        }
        match self.peek() {
            Some('"') => {
                self.pos += 1;
                let start = self.pos;
                while self.chars.get(self.pos).is_some_and(|c| *c != '"') {
                    self.pos += 1;
                }
                if self.pos >= self.chars.len() {
                    return Err("a quote is not closed".into());
                }
                let text: String = self.chars[start..self.pos].iter().collect::<String>().to_lowercase();
                self.pos += 1;
                let words: Vec<Expr> = text
                    .split_whitespace()
                    .enumerate()
                    .map(|(i, w)| Expr::Word { text: w.to_string(), glued: glued && i == 0 })
                    .collect();
                if words.iter().any(|w| matches!(w, Expr::Word { text, .. } if !text.is_ascii())) {
                    return Err(format!("\"{text}\": words must be ASCII"));
                }
                match words.len() {
                    0 => Err("an empty quoted word".into()),
                    1 => Ok(words.into_iter().next().unwrap_or(Expr::Seq(Vec::new()))),
                    _ => Ok(Expr::Seq(words)),
                }
            }
            Some('<') => {
                self.pos += 1;
                let start = self.pos;
                while self.chars.get(self.pos).is_some_and(|c| *c != '>') {
                    self.pos += 1;
                }
                if self.pos >= self.chars.len() {
                    return Err("a <slot> is not closed".into());
                }
                let name: String = self.chars[start..self.pos].iter().collect();
                self.pos += 1;
                Ok(Expr::Slot { name: name.trim().to_string(), glued })
            }
            Some('(') | Some('[') if !glued => {
                let open = self.chars[self.pos];
                self.pos += 1;
                let inner = self.alternatives()?;
                let close = if open == '(' { ')' } else { ']' };
                if self.peek() != Some(close) {
                    return Err(format!("expected `{close}`"));
                }
                self.pos += 1;
                Ok(if open == '[' { Expr::Opt(Box::new(inner)) } else { inner })
            }
            Some(c) if (c.is_ascii_alphanumeric() || c == '_') && !glued => {
                let start = self.pos;
                while self.chars.get(self.pos).is_some_and(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    self.pos += 1;
                }
                Ok(Expr::Rule(self.chars[start..self.pos].iter().collect()))
            }
            Some(c) => Err(format!("unexpected `{c}`")),
            None => Err("the rule ends too early".into()),
        }
    }
}

/// What each slot can be said as: phrases of words.
#[derive(Debug, Clone, Default)]
pub struct Slots {
    phrases: HashMap<String, Vec<Vec<String>>>,
}

/// "12" -> "twelve", "21" -> "twenty one"; None beyond 99.
fn spoken_number(digits: &str) -> Option<Vec<String>> {
    let words = crate::intent::normalize::words_for(digits.parse().ok()?)?;
    Some(words.into_iter().map(str::to_string).collect())
}

impl Slots {
    pub fn new() -> Slots {
        Slots::default()
    }

    /// The live fleet's names, each under the forms Whisper writes them in.
    pub fn from_topology(t: &Topology) -> Slots {
        let mut s = Slots::new();
        for a in t.agents() {
            s.add_name("agent", &a.name);
        }
        for r in t.regions() {
            s.add_name("region", r);
        }
        for z in t.zones() {
            s.add_name("zone", z);
        }
        for e in t.catalog().extensions() {
            s.add_name("extension", &e.name);
            for version in e.version_strings() {
                s.add_version(&version);
            }
        }
        for e in t.label_values("env") {
            s.add_name("env", &e);
        }
        for tier in t.label_values("tier") {
            s.add_name("tier", &tier);
        }
        for c in t.capabilities() {
            s.add_name("capability", &c);
        }
        s
    }

    fn add(&mut self, slot: &str, words: Vec<String>) {
        let list = self.phrases.entry(slot.to_string()).or_default();
        if !words.is_empty() && !list.contains(&words) {
            list.push(words);
        }
    }

    /// "edge-12" as "edge 12" and "edge twelve"; "us-east" as "us east".
    pub fn add_name(&mut self, slot: &str, name: &str) {
        let parts: Vec<String> =
            name.to_lowercase().split(['-', '_', ' ']).filter(|p| !p.is_empty()).map(str::to_string).collect();
        if parts.is_empty() || parts.iter().any(|p| !p.is_ascii()) {
            return;
        }
        self.add(slot, parts.clone());
        // Spoken digits: each all-digit part also as words.
        if parts.iter().any(|p| p.bytes().all(|b| b.is_ascii_digit())) {
            let mut spoken = Vec::new();
            for p in &parts {
                match (p.bytes().all(|b| b.is_ascii_digit()), spoken_number(p)) {
                    (true, Some(words)) => spoken.extend(words),
                    _ => spoken.push(p.clone()),
                }
            }
            self.add(slot, spoken);
        }
    }

    /// "2.1.0" as "2.1.0", "2.1", "v2.1" and "two point one".
    pub fn add_version(&mut self, version: &str) {
        let v = version.to_lowercase();
        if !v.is_ascii() || v.is_empty() {
            return;
        }
        let mut forms = vec![v.clone()];
        if let Some(short) = v.strip_suffix(".0") {
            forms.push(short.to_string());
        }
        for f in forms {
            self.add("version", vec![format!("v{f}")]);
            self.add("version", vec![f.clone()]);
            let mut spoken = Vec::new();
            for (i, part) in f.split('.').enumerate() {
                if i > 0 {
                    spoken.push("point".to_string());
                }
                match spoken_number(part) {
                    Some(words) => spoken.extend(words),
                    None => spoken.push(part.to_string()),
                }
            }
            self.add("version", spoken);
        }
    }

    pub fn phrases(&self, slot: &str) -> &[Vec<String>] {
        if slot == "digits" {
            return &DIGIT_SAMPLES;
        }
        self.phrases.get(slot).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// What `<digits>` stands for when sentences are drawn for tests.
static DIGIT_SAMPLES: std::sync::LazyLock<Vec<Vec<String>>> =
    std::sync::LazyLock::new(|| ["1", "2", "3", "7", "10", "25", "30"].iter().map(|d| vec![d.to_string()]).collect());

/// A transition of the NFA.
#[derive(Debug, Clone, Copy)]
enum Edge {
    Eps(u32),
    Byte(u8, u32),
    /// Any ASCII digit.
    Digit(u32),
}

/// The grammar compiled for one fleet: a Thompson NFA over lowercase ASCII.
#[derive(Debug, Clone)]
pub struct Matcher {
    edges: Vec<Vec<Edge>>,
    start: u32,
    accept: u32,
}

impl Matcher {
    pub fn compile(grammar: &SpokenGrammar, slots: &Slots) -> Result<Matcher, GrammarError> {
        let mut b = Builder { edges: Vec::new(), grammar, slots, rule_depth: 0 };
        let start = b.state();
        let body_end = b.expr(&Expr::Rule("command".into()), start)?;
        // Whisper ends sentences with punctuation.
        let accept = b.state();
        b.eps(body_end, accept);
        for p in [b'.', b'?', b'!'] {
            b.byte(body_end, p, accept);
        }
        Ok(Matcher { edges: b.edges, start, accept })
    }

    /// Whether a whole transcript is a sentence of the grammar.
    pub fn accepts(&self, text: &str) -> bool {
        let mut dfa = Dfa::new(self);
        let start = dfa.start();
        dfa.walk(start, text.trim_start().as_bytes()).is_some_and(|s| dfa.is_accepting(s))
    }

    fn closure(&self, seeds: impl IntoIterator<Item = u32>) -> Vec<u32> {
        let mut set: Vec<u32> = Vec::new();
        let mut stack: Vec<u32> = seeds.into_iter().collect();
        let mut seen = vec![false; self.edges.len()];
        while let Some(s) = stack.pop() {
            let Some(flag) = seen.get_mut(s as usize) else { continue };
            if *flag {
                continue;
            }
            *flag = true;
            set.push(s);
            for e in &self.edges[s as usize] {
                if let Edge::Eps(t) = e {
                    stack.push(*t);
                }
            }
        }
        set.sort_unstable();
        set
    }
}

struct Builder<'g> {
    edges: Vec<Vec<Edge>>,
    grammar: &'g SpokenGrammar,
    slots: &'g Slots,
    rule_depth: usize,
}

impl Builder<'_> {
    fn state(&mut self) -> u32 {
        self.edges.push(Vec::new());
        (self.edges.len() - 1) as u32
    }

    fn eps(&mut self, from: u32, to: u32) {
        self.edges[from as usize].push(Edge::Eps(to));
    }

    fn byte(&mut self, from: u32, b: u8, to: u32) {
        self.edges[from as usize].push(Edge::Byte(b, to));
    }

    /// Between words: a space or a hyphen, after an optional comma or full stop
    /// (Whisper punctuates: "Drain edge 7, please." is not in the grammar, but
    /// "Yes, please" is).
    fn separator(&mut self, from: u32) -> u32 {
        let mid = self.state();
        self.eps(from, mid);
        for p in [b',', b'.'] {
            self.byte(from, p, mid);
        }
        let to = self.state();
        self.byte(mid, b' ', to);
        // "auth-filter", and "us- east" as Whisper sometimes spaces hyphens.
        let hyphen = self.state();
        self.byte(mid, b'-', hyphen);
        self.eps(hyphen, to);
        self.byte(hyphen, b' ', to);
        to
    }

    fn word(&mut self, from: u32, text: &str, glued: bool) -> u32 {
        let mut at = if glued { from } else { self.separator(from) };
        for b in text.bytes() {
            let next = self.state();
            self.byte(at, b.to_ascii_lowercase(), next);
            at = next;
        }
        at
    }

    fn expr(&mut self, e: &Expr, from: u32) -> Result<u32, GrammarError> {
        match e {
            Expr::Word { text, glued } => Ok(self.word(from, text, *glued)),
            Expr::Rule(name) => {
                // Rules are inlined; validation ruled out left recursion, and depth
                // bounds right recursion through `*`-free self reference.
                self.rule_depth += 1;
                if self.rule_depth > 32 {
                    return Err(GrammarError::Recursive { origin: self.grammar.origin.clone(), rule: name.clone() });
                }
                let body = self.grammar.rules.get(name).cloned().ok_or_else(|| GrammarError::Undefined {
                    origin: self.grammar.origin.clone(),
                    rule: name.clone(),
                })?;
                let end = self.expr(&body, from);
                self.rule_depth -= 1;
                end
            }
            Expr::Slot { name, glued } if name == "digits" => {
                let first = if *glued { from } else { self.separator(from) };
                let end = self.state();
                self.edges[first as usize].push(Edge::Digit(end));
                self.edges[end as usize].push(Edge::Digit(end));
                Ok(end)
            }
            Expr::Slot { name, glued } => {
                let end = self.state();
                // A slot the fleet has nothing for matches nothing (a dead branch).
                for phrase in self.slots.phrases(name).to_vec() {
                    let mut at = from;
                    for (i, w) in phrase.iter().enumerate() {
                        at = self.word(at, w, i == 0 && *glued);
                    }
                    self.eps(at, end);
                }
                Ok(end)
            }
            Expr::Seq(items) => {
                let mut at = from;
                for i in items {
                    at = self.expr(i, at)?;
                }
                Ok(at)
            }
            Expr::Alt(items) => {
                let end = self.state();
                for i in items {
                    let start = self.state();
                    self.eps(from, start);
                    let e = self.expr(i, start)?;
                    self.eps(e, end);
                }
                Ok(end)
            }
            Expr::Opt(inner) => {
                let start = self.state();
                self.eps(from, start);
                let e = self.expr(inner, start)?;
                let end = self.state();
                self.eps(e, end);
                self.eps(from, end);
                Ok(end)
            }
            Expr::Star(inner) => {
                let hub = self.state();
                self.eps(from, hub);
                let e = self.expr(inner, hub)?;
                self.eps(e, hub);
                Ok(hub)
            }
        }
    }
}

/// A lazily built DFA over a [`Matcher`]: each state is a set of NFA states,
/// created the first time decoding reaches it. Input is lowercased ASCII; any
/// other byte leads nowhere.
pub struct Dfa<'m> {
    matcher: &'m Matcher,
    sets: Vec<Vec<u32>>,
    accepting: Vec<bool>,
    index: HashMap<Vec<u32>, u32>,
    /// Per state, per ASCII byte: u32::MAX unknown, DEAD no way on.
    next: Vec<[u32; 128]>,
}

const UNKNOWN: u32 = u32::MAX;
const DEAD: u32 = u32::MAX - 1;

/// States kept before the cache starts over (a long session meets many sentences).
const MAX_STATES: usize = 20_000;

impl<'m> Dfa<'m> {
    pub fn new(matcher: &'m Matcher) -> Dfa<'m> {
        let mut dfa = Dfa { matcher, sets: Vec::new(), accepting: Vec::new(), index: HashMap::new(), next: Vec::new() };
        let start = matcher.closure([matcher.start]);
        dfa.intern(start);
        dfa
    }

    /// Before any input. Utterances begin as if after a space, so the first word's
    /// separator is there whether or not Whisper's first token starts with one.
    pub fn start(&mut self) -> u32 {
        self.step(0, b' ').unwrap_or(0)
    }

    fn intern(&mut self, set: Vec<u32>) -> u32 {
        if let Some(&id) = self.index.get(&set) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.accepting.push(set.binary_search(&self.matcher.accept).is_ok());
        self.index.insert(set.clone(), id);
        self.sets.push(set);
        self.next.push([UNKNOWN; 128]);
        id
    }

    pub fn is_accepting(&self, state: u32) -> bool {
        self.accepting.get(state as usize).copied().unwrap_or(false)
    }

    /// The state after one more byte, or None when no sentence continues that way.
    pub fn step(&mut self, state: u32, byte: u8) -> Option<u32> {
        let b = byte.to_ascii_lowercase();
        if b >= 128 {
            return None;
        }
        let s = state as usize;
        let cached = self.next.get(s)?[b as usize];
        match cached {
            DEAD => return None,
            UNKNOWN => {}
            id => return Some(id),
        }
        let mut seeds = Vec::new();
        for &n in &self.sets[s] {
            for e in &self.matcher.edges[n as usize] {
                match *e {
                    Edge::Byte(eb, t) if eb == b => seeds.push(t),
                    Edge::Digit(t) if b.is_ascii_digit() => seeds.push(t),
                    _ => {}
                }
            }
        }
        if seeds.is_empty() {
            self.next[s][b as usize] = DEAD;
            return None;
        }
        let set = self.matcher.closure(seeds);
        let id = self.intern(set);
        self.next[s][b as usize] = id;
        Some(id)
    }

    pub fn walk(&mut self, mut state: u32, bytes: &[u8]) -> Option<u32> {
        for &b in bytes {
            state = self.step(state, b)?;
        }
        Some(state)
    }

    pub fn matcher(&self) -> &'m Matcher {
        self.matcher
    }

    /// True when the cache has grown past its bound; the caller starts a new Dfa.
    pub fn is_full(&self) -> bool {
        self.sets.len() > MAX_STATES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_slots() -> Slots {
        let mut s = Slots::new();
        for a in ["edge-7", "edge-12", "core-3", "gpu-2"] {
            s.add_name("agent", a);
        }
        for r in ["eu-west", "us-east"] {
            s.add_name("region", r);
        }
        s.add_name("extension", "auth-filter");
        s.add_version("2.1.0");
        s.add_name("env", "production");
        s.add_name("capability", "gpu");
        s
    }

    fn matcher() -> Matcher {
        Matcher::compile(&SpokenGrammar::embedded().unwrap(), &demo_slots()).unwrap()
    }

    #[test]
    fn commands_as_whisper_writes_them_are_in_the_language() {
        let m = matcher();
        for ok in [
            "drain edge 7",
            " Drain edge-7.",
            "drain edge seven",
            "cordon off node edge twelve",
            "Roll out auth-filter 2.1 to eu-west as a canary.",
            "deploy auth filter two point one to eu west",
            "shift 10% of traffic from us-east to eu west",
            "how healthy is the fleet?",
            "Yes, please.",
            "parley, pause the rollout",
            "show d3",
            "show deployment d 3",
            "which agents in eu west have a gpu",
        ] {
            assert!(m.accepts(ok), "{ok:?} should be accepted");
        }
        for bad in ["brain edge 7", "drain edge 8", "on the roll out", "drain", "deploy auth filter 9.9 to eu west"] {
            assert!(!m.accepts(bad), "{bad:?} should be refused");
        }
    }

    #[test]
    fn prefixes_stay_alive_until_they_cannot_become_a_sentence() {
        let m = matcher();
        let mut dfa = Dfa::new(&m);
        let s = dfa.start();
        let s = dfa.walk(s, b"drain ed").expect("a prefix of drain edge 7");
        assert!(!dfa.is_accepting(s));
        assert!(dfa.walk(s, b"ge 1").is_some_and(|t| !dfa.is_accepting(t)), "edge 1 is on the way to edge 12");
        assert!(dfa.walk(s, b"ge 12").is_some_and(|t| dfa.is_accepting(t)));
        assert!(dfa.walk(s, b"x").is_none());
    }

    #[test]
    fn broken_grammars_are_refused_with_the_line() {
        let e = SpokenGrammar::parse("command = \"drain\" <agnt>", "g").unwrap_err();
        assert_eq!(e, GrammarError::UnknownSlot { origin: "g".into(), slot: "agnt".into() });
        let e = SpokenGrammar::parse("command = x\nx = \"a\" (\"b\"", "g").unwrap_err();
        assert_eq!(e, GrammarError::Syntax { origin: "g".into(), line: 2, reason: "expected `)`".into() });
        let e = SpokenGrammar::parse("command = y", "g").unwrap_err();
        assert_eq!(e, GrammarError::Undefined { origin: "g".into(), rule: "y".into() });
        let e = SpokenGrammar::parse("command = [\"a\"] command \"b\"", "g").unwrap_err();
        assert_eq!(e, GrammarError::Recursive { origin: "g".into(), rule: "command".into() });
        let e = SpokenGrammar::parse("drain = \"drain\"", "g").unwrap_err();
        assert_eq!(e, GrammarError::NoStart { origin: "g".into() });
    }

    #[test]
    fn names_are_offered_in_digits_and_words() {
        let s = demo_slots();
        assert!(s.phrases("agent").contains(&vec!["edge".to_string(), "twelve".to_string()]));
        assert!(s.phrases("version").contains(&vec!["two".into(), "point".into(), "one".into()]));
        assert!(s.phrases("version").contains(&vec!["2.1".to_string()]));
    }

    /// Every sentence the voice grammar lets Whisper produce must mean, to the
    /// typed parser, the operation its rule is named after: otherwise a perfectly
    /// heard command would do something else (or nothing).
    #[test]
    fn every_spoken_sentence_parses_as_its_operation() {
        use rand::SeedableRng as _;
        let topo = crate::topology::test_support::demo_topology();
        let slots = Slots::from_topology(&topo);
        let vocab = crate::intent::Vocabulary::from_topology(&topo);
        let typed = crate::intent::Grammar::embedded().unwrap();
        let grammar = SpokenGrammar::embedded().unwrap();
        let matcher = Matcher::compile(&grammar, &slots).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut failures = Vec::new();
        let mut ops = 0;
        for rule in grammar.rule_names() {
            if !typed.ops().contains(&rule.as_str()) {
                continue;
            }
            ops += 1;
            for _ in 0..60 {
                let sentence = grammar.sample(rule, &slots, &mut rng).unwrap();
                assert!(matcher.accepts(&sentence), "{sentence:?} drawn from `{rule}` is not accepted");
                let parse = typed.parse(&sentence, &vocab);
                let got = parse.operation.as_ref().map(|o| o.name().to_string());
                if got.as_deref() != Some(rule.as_str()) {
                    failures.push(format!("{rule}: {sentence:?} -> {got:?} missing {:?}", parse.missing));
                }
            }
        }
        failures.sort();
        failures.dedup();
        assert!(ops >= 35, "only {ops} operations have a spoken rule");
        assert!(failures.is_empty(), "{} sentences misread:\n{}", failures.len(), failures.join("\n"));
    }
}
