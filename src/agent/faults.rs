//! Faults an agent can be told to have, for demos, chaos and tests:
//! `error-spike:EXT@VERSION[=PCT]` (the error rate jumps while that version is
//! installed), `install-fail:EXT@VERSION` (installing it fails), `slow:MS` (every
//! answer is delayed), `crash` (the agent stops serving: connections are refused or
//! dropped), `hang` (requests are accepted and never answered), `partition:REGION`
//! (every agent of the region hangs, as if the network to it were cut) and
//! `flap:PERIOD_MS` (the agent is alternately up and crashed, PERIOD_MS each) and
//! `latency:MS` (the p95 latency the agent reports rises by MS: a slow dependency,
//! where `slow:` delays the agent's own answers). A spec
//! is a comma-separated list; each fault may end in `/SELECTOR` (`/region:eu-west`,
//! `/agent:edge-3`) to hit only some agents of a fleet.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ops::Selector;

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    ErrorSpike {
        extension: String,
        version: String,
        error_rate_pct: f64,
    },
    InstallFail {
        extension: String,
        version: String,
    },
    /// Each answer waits `delay` plus up to `jitter` more (`slow:MS` or `slow:MIN-MAX`).
    Slow {
        delay: Duration,
        jitter: Duration,
    },
    Crash,
    Hang,
    /// Kept by every agent of a spec; only those in `region` hang.
    Partition {
        region: String,
    },
    Flap {
        period: Duration,
    },
    /// The reported p95 latency is this many milliseconds higher.
    Latency {
        extra_ms: u32,
    },
}

/// Whether an agent serves at all, given its faults and the time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reachability {
    Up,
    /// Accepts requests and never answers them.
    Hang,
    /// Refuses or drops connections.
    Crashed,
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

    /// What `latency:` adds to the reported p95 latency, in milliseconds.
    pub fn extra_latency_ms(&self) -> Option<f64> {
        self.0.iter().find_map(|f| match f {
            Fault::Latency { extra_ms } => Some(f64::from(*extra_ms)),
            _ => None,
        })
    }

    pub fn install_fails(&self, ext: &str, ver: &str) -> bool {
        self.0
            .iter()
            .any(|f| matches!(f, Fault::InstallFail { extension, version } if extension == ext && version == ver))
    }

    /// How the agent behaves now. `region` is the agent's own, for `partition:`;
    /// `now_ms` a wall-clock time in milliseconds, which sets the phase of `flap:`.
    pub fn reachability(&self, region: &str, now_ms: u64) -> Reachability {
        let mut out = Reachability::Up;
        for f in &self.0 {
            let this = match f {
                Fault::Crash => Reachability::Crashed,
                Fault::Flap { period } => {
                    let p = period.as_millis().max(1) as u64;
                    // Odd half-periods down: every flapping agent of a fleet flaps in step,
                    // which is what a flaky switch does.
                    if (now_ms / p) % 2 == 1 {
                        Reachability::Crashed
                    } else {
                        Reachability::Up
                    }
                }
                Fault::Hang => Reachability::Hang,
                Fault::Partition { region: r } if r == region => Reachability::Hang,
                _ => Reachability::Up,
            };
            // A crash wins over a hang: nothing is accepted at all.
            if this == Reachability::Crashed || (this == Reachability::Hang && out == Reachability::Up) {
                out = this;
            }
        }
        out
    }

    /// When the reachability may next change by itself (a flap edge), if ever.
    pub fn next_edge_ms(&self, now_ms: u64) -> Option<u64> {
        self.0
            .iter()
            .filter_map(|f| match f {
                Fault::Flap { period } => {
                    let p = period.as_millis().max(1) as u64;
                    Some((now_ms / p + 1) * p)
                }
                _ => None,
            })
            .min()
    }

    pub fn response_delay(&self) -> Option<Duration> {
        self.0.iter().find_map(|f| match f {
            Fault::Slow { delay, jitter } => {
                let spread = jitter.as_micros() as u64;
                if spread == 0 {
                    return Some(*delay);
                }
                // Sub-second clock bits are random enough for simulated network jitter
                // and need no RNG dependency.
                let nanos = u64::from(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.subsec_nanos())
                        .unwrap_or(0),
                );
                let mixed = nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
                Some(*delay + Duration::from_micros(mixed % (spread + 1)))
            }
            _ => None,
        })
    }
}

/// A parsed fault spec: each fault with the selector of the agents it applies to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec(pub Vec<(Fault, Option<Selector>)>);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("fault `{fault}`: {reason} (expected error-spike:EXT@VERSION[=PCT], install-fail:EXT@VERSION, slow:MS, crash, hang, partition:REGION, flap:PERIOD_MS or latency:MS, optionally ending in /SELECTOR)")]
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
            let (kind, arg) = match body {
                "crash" | "hang" => (body, ""),
                _ => body.split_once(':').ok_or_else(|| err("missing `:`"))?,
            };
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
                    let ms =
                        |a: &str| a.trim_end_matches("ms").parse::<u64>().map_err(|_| err("expected milliseconds"));
                    let (lo, hi) = match arg.split_once('-') {
                        Some((lo, hi)) => (ms(lo)?, ms(hi)?),
                        None => (ms(arg)?, ms(arg)?),
                    };
                    if hi < lo {
                        return Err(err("expected MIN-MAX with MIN <= MAX"));
                    }
                    let (lo, hi) = (lo.min(600_000), hi.min(600_000));
                    Fault::Slow { delay: Duration::from_millis(lo), jitter: Duration::from_millis(hi - lo) }
                }
                "crash" | "hang" if !arg.is_empty() => return Err(err("takes no argument")),
                "crash" => Fault::Crash,
                "hang" => Fault::Hang,
                "partition" => {
                    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                        return Err(err("expected a region name"));
                    }
                    Fault::Partition { region: arg.to_string() }
                }
                "flap" => {
                    let ms = arg.trim_end_matches("ms").parse::<u64>().map_err(|_| err("expected milliseconds"))?;
                    if !(10..=3_600_000).contains(&ms) {
                        return Err(err("the period must be between 10 ms and an hour"));
                    }
                    Fault::Flap { period: Duration::from_millis(ms) }
                }
                "latency" => {
                    let ms = arg.trim_end_matches("ms").parse::<u32>().map_err(|_| err("expected milliseconds"))?;
                    if ms > 600_000 {
                        return Err(err("at most 600000 ms"));
                    }
                    Fault::Latency { extra_ms: ms }
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
        let jittery = FaultSpec::parse("slow:50-150").unwrap().for_agent(|_| true);
        for _ in 0..50 {
            let d = jittery.response_delay().unwrap();
            assert!((Duration::from_millis(50)..=Duration::from_millis(150)).contains(&d), "{d:?}");
        }
    }

    #[test]
    fn latency_raises_the_reported_p95_of_the_agents_it_selects() {
        let spec = FaultSpec::parse("latency:400/zone:eu-west-b").unwrap();
        let b = spec.for_agent(|s| *s == Selector::Zone("eu-west-b".into()));
        assert_eq!(b.extra_latency_ms(), Some(400.0));
        assert_eq!(b.response_delay(), None, "the agent itself answers at once");
        assert_eq!(spec.for_agent(|_| false).extra_latency_ms(), None);
    }

    #[test]
    fn crash_hang_partition_and_flap_set_reachability() {
        let spec = FaultSpec::parse("partition:eu-west, flap:100/agent:edge-1, hang/agent:edge-2").unwrap();
        let eu = spec.for_agent(|_| false);
        assert_eq!(eu.reachability("eu-west", 0), Reachability::Hang);
        assert_eq!(eu.reachability("us-east", 0), Reachability::Up);
        let flapping = spec.for_agent(|s| *s == Selector::Agent("edge-1".into()));
        assert_eq!(flapping.reachability("us-east", 50), Reachability::Up);
        assert_eq!(flapping.reachability("us-east", 150), Reachability::Crashed);
        assert_eq!(flapping.reachability("eu-west", 150), Reachability::Crashed, "a crash wins over a hang");
        assert_eq!(flapping.next_edge_ms(150), Some(200));
        let crashed = FaultSpec::parse("crash").unwrap().for_agent(|_| true);
        assert_eq!(crashed.reachability("x", 0), Reachability::Crashed);
        assert_eq!(crashed.next_edge_ms(0), None);
    }

    #[test]
    fn refuses_malformed_specs_with_the_reason() {
        for (bad, why) in [
            ("boom:x", "unknown fault kind"),
            ("error-spike:auth-filter", "expected EXT@VERSION"),
            ("slow:fast", "expected milliseconds"),
            ("error-spike:a@1=300", "between 0 and 100"),
            ("slow:5/planet:mars", "not a selector"),
            ("partition:", "expected a region name"),
            ("flap:1", "between 10 ms"),
            ("crash:now", "takes no argument"),
            ("latency:soon", "expected milliseconds"),
            ("latency:700000", "at most 600000 ms"),
        ] {
            let e = FaultSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
