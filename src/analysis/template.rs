//! Analysis templates as data: a PromQL query with placeholders, the conditions that
//! judge its value, and how often and how many times to measure. In the spirit of Argo
//! Rollouts' AnalysisTemplate; loaded from the catalog (`[[analysis]]`).
//!
//! Placeholders are `{extension}`, `{version}`, `{agents}` and `{region}` (filled from
//! the step: its agents and the canary version, or the agents not yet upgraded and the
//! baseline version), which may stand only inside a double-quoted PromQL string and
//! are escaped there, so no value can change the query around them; `{agents}` and
//! `{region}` are regular expressions (for `=~`) with every name escaped. `{window}`
//! and `{interval}` are durations Parley writes itself (`30s`), outside strings.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Deserialize;

use super::AnalysisError;

/// How a template's values are read and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A share (0.041), shown as a percentage (4.1%).
    Ratio,
    /// Seconds (0.3), shown in milliseconds (300 ms).
    Seconds,
    /// Shown as it is.
    #[default]
    Plain,
}

impl Unit {
    pub fn show(self, v: f64) -> String {
        match self {
            Unit::Ratio => format!("{}%", trim(v * 100.0)),
            Unit::Seconds => format!("{} ms", trim(v * 1000.0)),
            Unit::Plain => trim(v),
        }
    }
}

/// A number with at most one decimal, or three significant digits when small.
fn trim(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    let r = if x.abs() >= 1.0 || x == 0.0 { (x * 10.0).round() / 10.0 } else { (x * 1000.0).round() / 1000.0 };
    format!("{r}")
}

/// One metric of an analysis, as written in the catalog.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateFile {
    pub name: String,
    /// What explanations call it ("error ratio"); the name when absent.
    #[serde(default)]
    pub description: Option<String>,
    pub query: String,
    #[serde(default)]
    pub unit: Unit,
    /// `threshold` in the conditions; a rollout may set its own ("under 300 ms").
    #[serde(default)]
    pub threshold: Option<f64>,
    #[serde(default)]
    pub success: Option<String>,
    #[serde(default)]
    pub failure: Option<String>,
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub window: Option<String>,
    #[serde(default)]
    pub failure_limit: u32,
    #[serde(default)]
    pub inconclusive_limit: u32,
    #[serde(default)]
    pub error_limit: u32,
}

fn one() -> u32 {
    1
}

/// A checked template, ready to fill.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub name: String,
    pub description: String,
    pub query: String,
    pub unit: Unit,
    pub threshold: Option<f64>,
    pub success: Option<Condition>,
    pub failure: Option<Condition>,
    pub count: u32,
    /// Between measurements.
    pub interval: Duration,
    /// The range of `{window}`.
    pub window: Duration,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
    pub error_limit: u32,
}

impl Template {
    pub fn from_file(f: TemplateFile) -> Result<Template, AnalysisError> {
        let bad = |reason: String| AnalysisError::Template { name: f.name.clone(), reason };
        check_placeholders(&f.query).map_err(bad)?;
        let parse_cond = |c: &Option<String>| c.as_deref().map(Condition::parse).transpose();
        let success = parse_cond(&f.success).map_err(|e| bad(format!("success: {e}")))?;
        let failure = parse_cond(&f.failure).map_err(|e| bad(format!("failure: {e}")))?;
        if success.is_none() && failure.is_none() {
            return Err(bad("needs a success or a failure condition".into()));
        }
        let uses_threshold = [&success, &failure].iter().any(|c| c.as_ref().is_some_and(Condition::uses_threshold));
        if uses_threshold && f.threshold.is_none() {
            return Err(bad("a condition uses `threshold`, but the template sets none".into()));
        }
        if !(1..=100).contains(&f.count) {
            return Err(bad("count must be between 1 and 100".into()));
        }
        let interval = match &f.interval {
            Some(s) => parse_duration(s).map_err(|e| bad(format!("interval: {e}")))?,
            None => Duration::from_secs(10),
        };
        let window = match &f.window {
            Some(s) => parse_duration(s).map_err(|e| bad(format!("window: {e}")))?,
            None => Duration::from_secs(30),
        };
        if window < Duration::from_millis(1) {
            return Err(bad("window must be at least 1ms".into()));
        }
        Ok(Template {
            description: f.description.clone().unwrap_or_else(|| f.name.replace('-', " ")),
            name: f.name,
            query: f.query,
            unit: f.unit,
            threshold: f.threshold,
            success,
            failure,
            count: f.count,
            interval,
            window,
            failure_limit: f.failure_limit,
            inconclusive_limit: f.inconclusive_limit,
            error_limit: f.error_limit,
        })
    }

    /// The query for one side of a step.
    pub fn fill(&self, values: &Fill<'_>) -> String {
        fill(&self.query, values, self.window, self.interval)
    }
}

/// What a step fills a query with.
#[derive(Debug, Clone, Copy)]
pub struct Fill<'a> {
    pub extension: &'a str,
    pub version: &'a str,
    pub agents: &'a [String],
    pub regions: &'a [String],
}

const QUOTED: [&str; 4] = ["extension", "version", "agents", "region"];
const BARE: [&str; 2] = ["window", "interval"];

/// Walks the query's lexical structure: calls `f(placeholder, in_double_quotes)` for
/// each `{name}` and `out` for every other piece of text, in order.
fn walk(
    query: &str,
    mut on_text: impl FnMut(&str),
    mut on_slot: impl FnMut(&str, Quote) -> Result<(), String>,
) -> Result<(), String> {
    let bytes = query.as_bytes();
    let mut quote = Quote::None;
    let mut i = 0;
    let mut start = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Quote::Double | Quote::Single if c == b'\\' => {
                i += 2;
                continue;
            }
            Quote::Double if c == b'"' => quote = Quote::None,
            Quote::Single if c == b'\'' => quote = Quote::None,
            Quote::Raw if c == b'`' => quote = Quote::None,
            Quote::None if c == b'"' => quote = Quote::Double,
            Quote::None if c == b'\'' => quote = Quote::Single,
            Quote::None if c == b'`' => quote = Quote::Raw,
            _ => {}
        }
        if c == b'{' {
            let rest = &query[i + 1..];
            let len = rest.bytes().take_while(|b| b.is_ascii_lowercase() || *b == b'_').count();
            if len > 0 && rest.as_bytes().get(len) == Some(&b'}') {
                on_text(&query[start..i]);
                on_slot(&rest[..len], quote)?;
                i += len + 2;
                start = i;
                continue;
            }
        }
        i += 1;
    }
    if quote != Quote::None {
        return Err("a string in the query is not closed".into());
    }
    on_text(&query[start.min(query.len())..]);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
    Raw,
}

fn check_placeholders(query: &str) -> Result<(), String> {
    if query.trim().is_empty() {
        return Err("the query is empty".into());
    }
    walk(
        query,
        |_| {},
        |name, quote| {
            if QUOTED.contains(&name) {
                if quote != Quote::Double {
                    return Err(format!(
                        "{{{name}}} may stand only inside a double-quoted string (\"...{{{name}}}...\")"
                    ));
                }
            } else if BARE.contains(&name) {
                if quote != Quote::None {
                    return Err(format!("{{{name}}} is a duration and may not stand inside a string"));
                }
            } else {
                return Err(format!(
                    "unknown placeholder {{{name}}} (known: {{extension}} {{version}} {{agents}} {{region}} {{window}} {{interval}})"
                ));
            }
            Ok(())
        },
    )
}

/// A value as the inside of a double-quoted PromQL string.
pub fn escape_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// A literal as an RE2 regular expression matching exactly it (`-` is literal outside
/// a character class, so names read as they are).
pub fn escape_regex(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `a|b|c` of escaped names; names are sorted and unique.
fn alternation(names: &[String]) -> String {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted.dedup();
    sorted.iter().map(|n| escape_regex(n)).collect::<Vec<_>>().join("|")
}

/// Prometheus's own duration form.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    match ms {
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

pub fn fill(query: &str, values: &Fill<'_>, window: Duration, interval: Duration) -> String {
    let out_cell = std::cell::RefCell::new(String::with_capacity(query.len() + 64));
    // A template was checked at load; an unchecked one fills what it can.
    let _ = walk(
        query,
        |text| out_cell.borrow_mut().push_str(text),
        |name, _| {
            let value = match name {
                "extension" => escape_string(values.extension),
                "version" => escape_string(values.version),
                "agents" => escape_string(&alternation(values.agents)),
                "region" => escape_string(&alternation(values.regions)),
                "window" => format_duration(window),
                "interval" => format_duration(interval),
                other => format!("{{{other}}}"),
            };
            out_cell.borrow_mut().push_str(&value);
            Ok(())
        },
    );
    out_cell.into_inner()
}

/// `30s`, `1m`, `500ms`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 30s, 1m or 500ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("`{s}` is not a duration like 30s, 1m or 500ms")),
    };
    if d > Duration::from_secs(86_400) {
        return Err(format!("`{s}` is longer than a day"));
    }
    Ok(d)
}

/// A condition on a measured value: comparisons of `value` with sums and products of
/// numbers, `threshold` and `baseline` (the not-yet-upgraded agents' value of the
/// same query), joined by `and` / `or` (`and` binds tighter):
/// `value > 2 * baseline + 0.005 and value > threshold`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// Alternatives (`or`) of conjunctions (`and`) of comparisons.
    any: Vec<Vec<Comparison>>,
    text: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    op: Op,
    /// Terms summed: coefficient times a factor.
    rhs: Vec<(f64, Factor)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Factor {
    One,
    Threshold,
    Baseline,
}

/// What a condition is judged with.
#[derive(Debug, Clone, Copy)]
pub struct Values {
    pub value: f64,
    pub baseline: Option<f64>,
    pub threshold: Option<f64>,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, String> {
        let mut any = Vec::new();
        for alt in split_words(text, "or") {
            let mut all = Vec::new();
            for cmp in split_words(&alt, "and") {
                all.push(parse_comparison(cmp.trim())?);
            }
            any.push(all);
        }
        Ok(Condition { any, text: text.trim().to_string() })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    fn uses_threshold(&self) -> bool {
        self.any.iter().flatten().any(|c| c.rhs.iter().any(|(_, f)| *f == Factor::Threshold))
    }

    pub fn uses_baseline(&self) -> bool {
        self.any.iter().flatten().any(|c| c.rhs.iter().any(|(_, f)| *f == Factor::Baseline))
    }

    /// Whether it holds; `None` when it depends on a baseline there is none of.
    pub fn holds(&self, v: &Values) -> Option<bool> {
        let mut unknown = false;
        for all in &self.any {
            let mut ok = Some(true);
            for c in all {
                match (ok, c.holds(v)) {
                    (_, Some(false)) => {
                        ok = Some(false);
                        break;
                    }
                    (Some(true), None) => ok = None,
                    _ => {}
                }
            }
            match ok {
                Some(true) => return Some(true),
                None => unknown = true,
                Some(false) => {}
            }
        }
        if unknown {
            None
        } else {
            Some(false)
        }
    }

    /// The limits in words, in `unit`: "2x baseline + 0.5% and 1%".
    pub fn limits(&self, unit: Unit, threshold: Option<f64>) -> String {
        self.any
            .iter()
            .map(|all| all.iter().map(|c| c.rhs_text(unit, threshold)).collect::<Vec<_>>().join(" and "))
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

impl Comparison {
    fn holds(&self, v: &Values) -> Option<bool> {
        let mut rhs = 0.0;
        for (k, f) in &self.rhs {
            rhs += k * match f {
                Factor::One => 1.0,
                Factor::Threshold => v.threshold?,
                Factor::Baseline => v.baseline?,
            };
        }
        let x = v.value;
        Some(match self.op {
            Op::Lt => x < rhs,
            Op::Le => x <= rhs,
            Op::Gt => x > rhs,
            Op::Ge => x >= rhs,
        })
    }

    fn rhs_text(&self, unit: Unit, threshold: Option<f64>) -> String {
        let mut parts = Vec::new();
        for (k, f) in &self.rhs {
            let part = match f {
                Factor::One => unit.show(*k),
                Factor::Threshold => unit.show(k * threshold.unwrap_or(f64::NAN)),
                Factor::Baseline if *k == 1.0 => "baseline".to_string(),
                Factor::Baseline => format!("{}x baseline", trim(*k)),
            };
            parts.push(part);
        }
        let op = match self.op {
            Op::Lt => "under ",
            Op::Le => "at most ",
            Op::Gt | Op::Ge => "",
        };
        format!("{op}{}", parts.join(" + "))
    }
}

/// `text` split at the whole word `word`.
fn split_words(text: &str, word: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for w in text.split_whitespace() {
        if w == word {
            out.push(String::new());
        } else {
            if let Some(s) = out.last_mut() {
                if !s.is_empty() {
                    s.push(' ');
                }
                s.push_str(w);
            }
        }
    }
    out
}

fn parse_comparison(text: &str) -> Result<Comparison, String> {
    let rest = text
        .strip_prefix("value")
        .ok_or_else(|| format!("`{text}`: a comparison starts with `value` (value > 2 * baseline)"))?
        .trim_start();
    let (op, rhs) = if let Some(r) = rest.strip_prefix("<=") {
        (Op::Le, r)
    } else if let Some(r) = rest.strip_prefix(">=") {
        (Op::Ge, r)
    } else if let Some(r) = rest.strip_prefix('<') {
        (Op::Lt, r)
    } else if let Some(r) = rest.strip_prefix('>') {
        (Op::Gt, r)
    } else {
        return Err(format!("`{text}`: expected <, <=, > or >= after `value`"));
    };
    let mut terms = Vec::new();
    // Sums of products; a `-` is a negative coefficient.
    let normalised = rhs.replace('-', " + -1 * ");
    for term in normalised.split('+') {
        let term = term.trim();
        if term.is_empty() {
            if terms.is_empty() && normalised.trim_start().starts_with('+') {
                continue;
            }
            return Err(format!("`{text}`: an empty term"));
        }
        let mut k = 1.0;
        let mut factor = Factor::One;
        for f in term.split('*') {
            match f.trim() {
                "threshold" if factor == Factor::One => factor = Factor::Threshold,
                "baseline" if factor == Factor::One => factor = Factor::Baseline,
                "threshold" | "baseline" => {
                    return Err(format!("`{text}`: at most one of threshold, baseline per term"))
                }
                n => {
                    let x: f64 =
                        n.parse().map_err(|_| format!("`{text}`: `{n}` is not a number, threshold or baseline"))?;
                    if !x.is_finite() {
                        return Err(format!("`{text}`: `{n}` is not a finite number"));
                    }
                    k *= x;
                }
            }
        }
        terms.push((k, factor));
    }
    if terms.is_empty() {
        return Err(format!("`{text}`: nothing to compare with"));
    }
    Ok(Comparison { op, rhs: terms })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ERRORS: &str = r#"sum(rate(parley_agent_request_errors_total{extension="{extension}",version="{version}",agent=~"{agents}"}[{window}]))"#;

    fn names(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_query_is_filled_with_the_steps_values() {
        let agents = names(&["edge-20", "edge-19"]);
        let regions = names(&["eu-west"]);
        let q = fill(
            ERRORS,
            &Fill { extension: "auth-filter", version: "2.1.0", agents: &agents, regions: &regions },
            Duration::from_secs(30),
            Duration::from_secs(5),
        );
        assert_eq!(
            q,
            r#"sum(rate(parley_agent_request_errors_total{extension="auth-filter",version="2.1.0",agent=~"edge-19|edge-20"}[30s]))"#
        );
    }

    #[test]
    fn placeholders_outside_strings_or_unknown_are_refused() {
        assert!(check_placeholders(ERRORS).is_ok());
        let e = check_placeholders("rate(x{a=b}[5m]) > {version}").unwrap_err();
        assert!(e.contains("{version} may stand only inside a double-quoted string"), "{e}");
        let e = check_placeholders(r#"x{a='{agents}'}"#).unwrap_err();
        assert!(e.contains("{agents} may stand only inside"), "{e}");
        let e = check_placeholders(r#"x{a="{window}"}"#).unwrap_err();
        assert!(e.contains("{window} is a duration"), "{e}");
        let e = check_placeholders(r#"x{a="{nmae}"}"#).unwrap_err();
        assert!(e.contains("unknown placeholder {nmae}"), "{e}");
        assert!(check_placeholders(r#"x{a="{agents}}"#).unwrap_err().contains("not closed"));
    }

    #[test]
    fn conditions_compare_with_thresholds_and_the_baseline() {
        let c = Condition::parse("value > 2 * baseline + 0.005 and value > threshold").unwrap();
        let v = |value, baseline| Values { value, baseline, threshold: Some(0.01) };
        assert_eq!(c.holds(&v(0.041, Some(0.003))), Some(true));
        assert_eq!(c.holds(&v(0.009, Some(0.001))), Some(false), "under the threshold");
        assert_eq!(c.holds(&v(0.02, Some(0.01))), Some(false), "within 2x baseline + 0.5%");
        assert_eq!(c.holds(&v(0.02, None)), None, "no baseline: cannot say");
        assert_eq!(c.holds(&v(0.005, None)), Some(false), "false whatever the baseline");
        assert_eq!(c.limits(Unit::Ratio, Some(0.01)), "2x baseline + 0.5% and 1%");
        let c = Condition::parse("value < threshold or value <= baseline").unwrap();
        assert_eq!(c.holds(&Values { value: 0.4, baseline: None, threshold: Some(0.3) }), None);
        assert_eq!(c.holds(&Values { value: 0.2, baseline: None, threshold: Some(0.3) }), Some(true));
        assert_eq!(c.limits(Unit::Seconds, Some(0.3)), "under 300 ms or at most baseline");
        assert_eq!(
            Condition::parse("value > baseline - 0.1").unwrap().holds(&Values {
                value: 0.15,
                baseline: Some(0.2),
                threshold: None
            }),
            Some(true)
        );
        for bad in
            ["value", "x > 1", "value > ", "value > 1 +", "value > nan", "value > baseline * threshold", "value = 1"]
        {
            assert!(Condition::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_read_like_prometheus() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("48h").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(30)), "30s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn units_show_as_operators_read_them() {
        assert_eq!(Unit::Ratio.show(0.041), "4.1%");
        assert_eq!(Unit::Ratio.show(0.003), "0.3%");
        assert_eq!(Unit::Seconds.show(0.3), "300 ms");
        assert_eq!(Unit::Plain.show(0.25), "0.25");
    }

    /// An independent reading of PromQL's lexical structure: the query without the
    /// contents of its double-quoted strings, and those contents decoded.
    fn lex(q: &str) -> (String, Vec<String>) {
        let mut skeleton = String::new();
        let mut strings = Vec::new();
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            skeleton.push(c);
            if c != '"' {
                continue;
            }
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => panic!("unterminated string in {q}"),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some('\\') => s.push('\\'),
                        Some('"') => s.push('"'),
                        Some('n') => s.push('\n'),
                        Some('r') => s.push('\r'),
                        Some('t') => s.push('\t'),
                        Some('u') => {
                            let hex: String = (&mut chars).take(4).collect();
                            s.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                        }
                        other => panic!("escape {other:?} in {q}"),
                    },
                    Some(c) => s.push(c),
                }
            }
            skeleton.push('"');
            strings.push(s);
        }
        (skeleton, strings)
    }

    /// An RE2 pattern of escaped literals, read back: each alternative unescaped.
    fn unalternate(re: &str) -> Vec<String> {
        let mut out = vec![String::new()];
        let mut chars = re.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.last_mut().unwrap().push(chars.next().unwrap()),
                '|' => out.push(String::new()),
                c => {
                    assert!(!"\\.+*?()|[]{}^$".contains(c), "unescaped {c:?} in {re}");
                    out.last_mut().unwrap().push(c)
                }
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]
        #[test]
        fn no_template_input_can_change_the_query_around_it(
            extension in ".{0,12}",
            version in "[\"\\\\}{|.*a-z0-9\n\t\u{0}-\u{1f}é]{0,12}",
            agents in proptest::collection::vec(".{1,10}", 1..4),
            region in "[\"\\\\a-z|)(-]{1,10}",
        ) {
            let template = r#"sum(rate(m{extension="{extension}",version="{version}",agent=~"{agents}",region=~"{region}"}[{window}])) / on() group_left x{e="{extension}"}"#;
            let regions = vec![region.clone()];
            let q = fill(template, &Fill { extension: &extension, version: &version, agents: &agents, regions: &regions }, Duration::from_secs(30), Duration::from_secs(5));
            let (skeleton, strings) = lex(&q);
            proptest::prop_assert_eq!(
                skeleton,
                r#"sum(rate(m{extension="",version="",agent=~"",region=~""}[30s])) / on() group_left x{e=""}"#
            );
            proptest::prop_assert_eq!(strings.len(), 5);
            proptest::prop_assert_eq!(&strings[0], &extension);
            proptest::prop_assert_eq!(&strings[1], &version);
            let mut want = agents.clone();
            want.sort();
            want.dedup();
            proptest::prop_assert_eq!(unalternate(&strings[2]), want);
            proptest::prop_assert_eq!(unalternate(&strings[3]), vec![region]);
            proptest::prop_assert_eq!(&strings[4], &extension);
        }
    }
}
