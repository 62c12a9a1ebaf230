//! Faults an agent can be told to have, for demos, chaos and tests:
//! `error-spike:EXT@VERSION[=PCT]` (the error rate jumps while that version is
//! installed), `install-fail:EXT@VERSION` (installing it fails) and `slow:MS`
//! (every answer is delayed). A spec is a comma-separated list; each fault may end in
//! `/SELECTOR` (`/region:eu-west`, `/agent:edge-3`) to hit only some agents of a fleet.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ops::Selector;

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    ErrorSpike { extension: String, version: String, error_rate_pct: f64 },
    InstallFail { extension: String, version: String },
    Slow { delay: Duration },
}

/// The faults one agent has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults(pub Vec<Fault>);

/// What an error spike adds to an agent's metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    pub error_rate_pct: f64,
    pub extra_p95_ms: f64,
}

impl Faults {
    pub fn error_spike(&self, installed: &BTreeMap<String, String>) -> Option<Spike> {
        self.0.iter().find_map(|f| match f {
            Fault::ErrorSpike { extension, version, error_rate_pct }
                if installed.get(extension).is_some_and(|v| v == version) =>
            {
                Some(Spike { error_rate_pct: *error_rate_pct, extra_p95_ms: 350.0 })
            }
            _ => None,
        })
    }

    pub fn install_fails(&self, ext: &str, ver: &str) -> bool {
        self.0
            .iter()
            .any(|f| matches!(f, Fault::InstallFail { extension, version } if extension == ext && version == ver))
    }

    pub fn response_delay(&self) -> Option<Duration> {
        self.0.iter().find_map(|f| match f {
            Fault::Slow { delay } => Some(*delay),
            _ => None,
        })
    }
}

/// A parsed fault spec: each fault with the selector of the agents it applies to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec(pub Vec<(Fault, Option<Selector>)>);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("fault `{fault}`: {reason} (expected error-spike:EXT@VERSION[=PCT], install-fail:EXT@VERSION or slow:MS, optionally ending in /SELECTOR)")]
pub struct FaultSpecError {
    pub fault: String,
    pub reason: String,
}

impl FaultSpec {
    pub fn parse(spec: &str) -> Result<FaultSpec, FaultSpecError> {
        let mut out = Vec::new();
        for raw in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let err = |reason: &str| FaultSpecError { fault: raw.to_string(), reason: reason.to_string() };
            let (body, selector) = match raw.split_once('/') {
                Some((b, s)) => (b, Some(s.parse::<Selector>().map_err(|e| err(&e.to_string()))?)),
                None => (raw, None),
            };
            let (kind, arg) = body.split_once(':').ok_or_else(|| err("missing `:`"))?;
            let ext_at = |arg: &str| -> Result<(String, String), FaultSpecError> {
                let (e, v) = arg.split_once('@').ok_or_else(|| err("expected EXT@VERSION"))?;
                if e.is_empty() || v.is_empty() {
                    return Err(err("expected EXT@VERSION"));
                }
                Ok((e.to_string(), v.to_string()))
            };
            let fault = match kind {
                "error-spike" => {
                    let (target, pct) = match arg.split_once('=') {
                        Some((t, p)) => (t, p.parse::<f64>().map_err(|_| err("the rate must be a number"))?),
                        None => (arg, 12.0),
                    };
                    if !(0.0..=100.0).contains(&pct) {
                        return Err(err("the rate must be between 0 and 100"));
                    }
                    let (extension, version) = ext_at(target)?;
                    Fault::ErrorSpike { extension, version, error_rate_pct: pct }
                }
                "install-fail" => {
                    let (extension, version) = ext_at(arg)?;
                    Fault::InstallFail { extension, version }
                }
                "slow" => {
                    let ms = arg.trim_end_matches("ms").parse::<u64>().map_err(|_| err("expected milliseconds"))?;
                    Fault::Slow { delay: Duration::from_millis(ms.min(600_000)) }
                }
                _ => return Err(err("unknown fault kind")),
            };
            out.push((fault, selector));
        }
        Ok(FaultSpec(out))
    }

    /// The faults that apply to an agent, given a predicate telling whether a selector
    /// matches it.
    pub fn for_agent(&self, matches: impl Fn(&Selector) -> bool) -> Faults {
        Faults(self.0.iter().filter(|(_, sel)| sel.as_ref().is_none_or(&matches)).map(|(f, _)| f.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs_with_selectors() {
        let spec = FaultSpec::parse(
            "error-spike:auth-filter@2.1.0=8/region:eu-west, install-fail:geo-router@3.3.0, slow:250ms",
        )
        .unwrap();
        assert_eq!(spec.0.len(), 3);
        assert_eq!(
            spec.0[0],
            (
                Fault::ErrorSpike { extension: "auth-filter".into(), version: "2.1.0".into(), error_rate_pct: 8.0 },
                Some(Selector::Region("eu-west".into()))
            )
        );
        let eu = spec.for_agent(|s| *s == Selector::Region("eu-west".into()));
        assert_eq!(eu.0.len(), 3);
        let us = spec.for_agent(|_| false);
        assert_eq!(us.0.len(), 2);
        assert_eq!(us.response_delay(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn refuses_malformed_specs_with_the_reason() {
        for (bad, why) in [
            ("boom:x", "unknown fault kind"),
            ("error-spike:auth-filter", "expected EXT@VERSION"),
            ("slow:fast", "expected milliseconds"),
            ("error-spike:a@1=300", "between 0 and 100"),
            ("slow:5/planet:mars", "not a selector"),
        ] {
            let e = FaultSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
