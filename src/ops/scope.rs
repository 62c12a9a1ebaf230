//! Scopes: which agents an operation is about, as a conjunction of selectors.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One selector of a scope. Its string form (`region:eu-west`) is the contract's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Selector {
    Fleet,
    Region(String),
    Zone(String),
    Agent(String),
    Env(String),
    Capability(String),
    Tier(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a selector (expected fleet, region:NAME, zone:NAME, agent:NAME, env:NAME, capability:NAME or tier:NAME)")]
pub struct SelectorError(pub String);

impl Selector {
    /// The kind part of the string form (`region`, `fleet`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Selector::Fleet => "fleet",
            Selector::Region(_) => "region",
            Selector::Zone(_) => "zone",
            Selector::Agent(_) => "agent",
            Selector::Env(_) => "env",
            Selector::Capability(_) => "capability",
            Selector::Tier(_) => "tier",
        }
    }

    /// Whether an agent placed so is one this selector names. The one rule that the
    /// live model, the orchestrator's placements and the demo fleet all apply.
    pub fn selects(
        &self,
        name: &str,
        region: &str,
        zone: &str,
        labels: &std::collections::BTreeMap<String, String>,
        capabilities: &[String],
    ) -> bool {
        match self {
            Selector::Fleet => true,
            Selector::Region(r) => region == r,
            Selector::Zone(z) => zone == z,
            Selector::Agent(a) => name == a,
            Selector::Env(e) => labels.get("env") == Some(e),
            Selector::Tier(t) => labels.get("tier") == Some(t),
            Selector::Capability(c) => capabilities.iter().any(|have| have == c),
        }
    }

    /// The name part, `None` for `fleet`.
    pub fn value(&self) -> Option<&str> {
        match self {
            Selector::Fleet => None,
            Selector::Region(v)
            | Selector::Zone(v)
            | Selector::Agent(v)
            | Selector::Env(v)
            | Selector::Capability(v)
            | Selector::Tier(v) => Some(v),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value() {
            None => f.write_str("fleet"),
            Some(v) => write!(f, "{}:{}", self.kind(), v),
        }
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "fleet" {
            return Ok(Selector::Fleet);
        }
        let (kind, value) = s.split_once(':').ok_or_else(|| SelectorError(s.to_string()))?;
        if value.is_empty() {
            return Err(SelectorError(s.to_string()));
        }
        let value = value.to_string();
        Ok(match kind {
            "region" => Selector::Region(value),
            "zone" => Selector::Zone(value),
            "agent" => Selector::Agent(value),
            "env" => Selector::Env(value),
            "capability" => Selector::Capability(value),
            "tier" => Selector::Tier(value),
            _ => return Err(SelectorError(s.to_string())),
        })
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The schema follows the hand-written serde form: one string per selector.
impl schemars::JsonSchema for Selector {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Selector".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^(fleet|(region|zone|agent|env|capability|tier):[^:\\s]+)$",
            "description": "fleet, region:NAME, zone:NAME, agent:NAME, env:NAME, capability:NAME or tier:NAME"
        })
    }
}

/// A list of selectors that must all hold (AND). An empty scope means the whole fleet.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Scope(pub Vec<Selector>);

impl Scope {
    pub fn fleet() -> Scope {
        Scope(vec![Selector::Fleet])
    }

    pub fn region(name: &str) -> Scope {
        Scope(vec![Selector::Region(name.to_string())])
    }

    /// True when the scope selects every agent.
    pub fn is_fleet(&self) -> bool {
        self.0.iter().all(|s| *s == Selector::Fleet)
    }

    /// The selectors other than `fleet`.
    pub fn selectors(&self) -> impl Iterator<Item = &Selector> {
        self.0.iter().filter(|s| **s != Selector::Fleet)
    }

    /// The value of the first selector of a kind (`region`, `agent`, ...).
    pub fn first(&self, kind: &str) -> Option<&str> {
        self.0.iter().find(|s| s.kind() == kind).and_then(Selector::value)
    }
}

impl fmt::Display for Scope {
    /// Human form: `eu-west`, `the fleet`, `eu-west, capability gpu`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_fleet() {
            return f.write_str("the whole fleet");
        }
        let mut first = true;
        for sel in self.selectors() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match sel {
                Selector::Region(v) | Selector::Zone(v) | Selector::Agent(v) => f.write_str(v)?,
                other => write!(f, "{} {}", other.kind(), other.value().unwrap_or_default())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_round_trip_through_their_string_form() {
        for s in
            ["fleet", "region:eu-west", "zone:us-east-a", "agent:edge-7", "env:staging", "capability:gpu", "tier:core"]
        {
            let sel: Selector = s.parse().unwrap();
            assert_eq!(sel.to_string(), s);
        }
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for s in ["", "region", "region:", "planet:mars", "Fleet"] {
            assert!(s.parse::<Selector>().is_err(), "{s}");
        }
    }

    #[test]
    fn scope_displays_for_people() {
        let scope = Scope(vec![Selector::Region("eu-west".into()), Selector::Capability("gpu".into())]);
        assert_eq!(scope.to_string(), "eu-west, capability gpu");
        assert_eq!(Scope::fleet().to_string(), "the whole fleet");
    }
}
