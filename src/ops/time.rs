//! `since` / `until` values: a calendar date or a span back from now.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeSpec {
    /// `2026-11-01`: midnight UTC of that day.
    Date(NaiveDate),
    /// `30d`, `12h`, `15m`: that long before now.
    Span { amount: u32, unit: SpanUnit },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanUnit {
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl SpanUnit {
    fn suffix(self) -> char {
        match self {
            SpanUnit::Minutes => 'm',
            SpanUnit::Hours => 'h',
            SpanUnit::Days => 'd',
            SpanUnit::Weeks => 'w',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a date (2026-11-01) or a span (30d, 12h, 15m, 2w)")]
pub struct TimeSpecError(pub String);

impl TimeSpec {
    pub fn days(amount: u32) -> TimeSpec {
        TimeSpec::Span { amount, unit: SpanUnit::Days }
    }

    pub fn hours(amount: u32) -> TimeSpec {
        TimeSpec::Span { amount, unit: SpanUnit::Hours }
    }

    /// The instant this spec names, relative to `now`.
    pub fn resolve(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            TimeSpec::Date(d) => d.and_hms_opt(0, 0, 0).map(|t| t.and_utc()).unwrap_or(now),
            TimeSpec::Span { amount, unit } => {
                let amount = i64::from(amount);
                let span = match unit {
                    SpanUnit::Minutes => Duration::minutes(amount),
                    SpanUnit::Hours => Duration::hours(amount),
                    SpanUnit::Days => Duration::days(amount),
                    SpanUnit::Weeks => Duration::weeks(amount),
                };
                now.checked_sub_signed(span).unwrap_or(DateTime::<Utc>::MIN_UTC)
            }
        }
    }
}

impl fmt::Display for TimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeSpec::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            TimeSpec::Span { amount, unit } => write!(f, "{}{}", amount, unit.suffix()),
        }
    }
}

impl FromStr for TimeSpec {
    type Err = TimeSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || TimeSpecError(s.to_string());
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Ok(TimeSpec::Date(d));
        }
        let unit = match s.chars().last().ok_or_else(err)? {
            'm' => SpanUnit::Minutes,
            'h' => SpanUnit::Hours,
            'd' => SpanUnit::Days,
            'w' => SpanUnit::Weeks,
            _ => return Err(err()),
        };
        let digits = &s[..s.len() - 1];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let amount = digits.parse().map_err(|_| err())?;
        Ok(TimeSpec::Span { amount, unit })
    }
}

/// The schema follows the hand-written serde form: a date or a span as a string.
impl schemars::JsonSchema for TimeSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeSpec".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]+[mhdw])$",
            "description": "a date (2026-11-01) or a span back from now (30d, 12h, 15m, 2w)"
        })
    }
}

impl Serialize for TimeSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dates_and_spans() {
        assert_eq!("30d".parse::<TimeSpec>().unwrap(), TimeSpec::days(30));
        assert_eq!("12h".parse::<TimeSpec>().unwrap().to_string(), "12h");
        assert_eq!("2026-11-01".parse::<TimeSpec>().unwrap().to_string(), "2026-11-01");
        for bad in ["", "d", "-3d", "3x", "2026-13-01", "99999999999d"] {
            assert!(bad.parse::<TimeSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn resolves_relative_to_now() {
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(TimeSpec::days(1).resolve(now).to_rfc3339(), "2026-11-23T12:00:00+00:00");
    }
}
