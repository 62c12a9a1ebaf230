//! How many agents a rolling deployment may take out of service at once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// At most this many of a rolling deployment's targets unavailable at the same time:
/// being installed, or cordoned, draining or down. The contract's form is a count of
/// agents (`2`) or a share of the targets (`"20%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxUnavailable {
    /// At least 1: with none allowed, nothing could ever be installed.
    Agents(u32),
    /// 1 to 100 percent of the targets.
    Percent(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a number of agents (at least 1) or a share of them such as `20%`")]
pub struct MaxUnavailableError(pub String);

impl MaxUnavailable {
    /// The number of agents for a deployment of `targets` agents. A share is rounded
    /// down, as Kubernetes does, so that "20%" never lets more than a fifth go; but at
    /// least one agent, or a small deployment could never move.
    pub fn agents(self, targets: usize) -> usize {
        match self {
            MaxUnavailable::Agents(n) => usize::try_from(n).unwrap_or(usize::MAX).max(1),
            MaxUnavailable::Percent(p) => (targets.saturating_mul(usize::from(p)) / 100).max(1),
        }
    }
}

impl fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaxUnavailable::Agents(n) => write!(f, "{n}"),
            MaxUnavailable::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for MaxUnavailable {
    type Err = MaxUnavailableError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MaxUnavailableError(s.to_string());
        let t = s.trim();
        match t.strip_suffix('%') {
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(MaxUnavailable::Percent(p)),
                _ => Err(err()),
            },
            None => match t.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(MaxUnavailable::Agents(n)),
                _ => Err(err()),
            },
        }
    }
}

impl Serialize for MaxUnavailable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MaxUnavailable::Agents(n) => s.serialize_u32(*n),
            MaxUnavailable::Percent(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for MaxUnavailable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) => match u32::try_from(n) {
                Ok(n) if n >= 1 => Ok(MaxUnavailable::Agents(n)),
                _ => Err(serde::de::Error::custom(MaxUnavailableError(n.to_string()))),
            },
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// The schema follows the hand-written serde form: a count or a percentage string.
impl schemars::JsonSchema for MaxUnavailable {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MaxUnavailable".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                { "type": "integer", "minimum": 1 },
                { "type": "string", "pattern": "^([1-9][0-9]?|100)%$" }
            ],
            "description": "agents that may be unavailable at once: a count (2) or a share of the targets (\"20%\")"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_count_is_a_number_and_a_share_a_percent_string() {
        assert_eq!(serde_json::to_value(MaxUnavailable::Agents(2)).unwrap(), json!(2));
        assert_eq!(serde_json::to_value(MaxUnavailable::Percent(20)).unwrap(), json!("20%"));
        let read = |v| serde_json::from_value::<MaxUnavailable>(v);
        assert_eq!(read(json!(2)).unwrap(), MaxUnavailable::Agents(2));
        assert_eq!(read(json!("20%")).unwrap(), MaxUnavailable::Percent(20));
        assert_eq!(read(json!("3")).unwrap(), MaxUnavailable::Agents(3));
        for bad in [json!(0), json!(-1), json!("0%"), json!("101%"), json!("lots"), json!(1.5)] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_share_rounds_down_but_never_below_one_agent() {
        assert_eq!(MaxUnavailable::Percent(20).agents(48), 9);
        assert_eq!(MaxUnavailable::Percent(20).agents(12), 2);
        assert_eq!(MaxUnavailable::Percent(20).agents(4), 1);
        assert_eq!(MaxUnavailable::Agents(2).agents(48), 2);
    }
}
