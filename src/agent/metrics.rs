//! `GET /metrics`: what an agent measures, in the Prometheus text exposition format
//! (version 0.0.4), so that the metrics system operators already run can scrape every
//! agent (the real one, the demo fleet, the simulator) and gates can ask it.
//!
//! Every series carries `agent`, `region` and `zone`; the request series also carry
//! `extension` and `version`, one series per installed extension version, because
//! every request passes every installed extension. A new version starts new series
//! from zero and an uninstalled one's series end, so "the canary's error ratio" is a
//! query by version.
//!
//! The demo and simulated agents synthesise their traffic: requests arrive at a steady
//! rate and the error and latency counters grow as the agent's reported error rate and
//! p95 say (an exponential latency distribution with that p95), integrated over the
//! time since the last scrape. They say so in the HELP lines.
//!
//! A real agent (`parley agent --dir`) exports only what it measures
//! ([`Exporter::render_measured`]): the extension's own request, error and latency
//! series as its Prometheus endpoint last reported them (none when the manifest names
//! no endpoint), the extension processes' CPU and memory from `/proc`, its health
//! probes' results, and installs by result. A family with nothing measured behind it
//! is left out, not filled with zeros.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use super::protocol::{Metrics, ServingState};

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0];

/// Synthesised requests per second of an agent that serves.
const REQUESTS_PER_SEC: f64 = 100.0;

/// The counters of one installed extension version.
#[derive(Debug, Clone, Default)]
struct Series {
    requests: f64,
    errors: f64,
    /// Cumulative: requests at or under each bound of [`LATENCY_BUCKETS`].
    buckets: [f64; LATENCY_BUCKETS.len()],
    latency_sum: f64,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    series: BTreeMap<(String, String), Series>,
    /// (extension, version, result) -> installs.
    installs: BTreeMap<(String, String, &'static str), u64>,
    probes: u64,
}

/// The counters of one agent. Cheap to keep: a few series per agent, so the
/// simulator's 10,000 agents hold a few MB.
#[derive(Debug, Default)]
pub struct Exporter {
    state: Mutex<State>,
}

/// Who the series are about.
pub struct Identity<'a> {
    pub agent: &'a str,
    pub region: &'a str,
    pub zone: &'a str,
}

impl Exporter {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain counters: a panic elsewhere cannot leave them meaningless.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one install attempt.
    pub fn count_install(&self, extension: &str, version: &str, ok: bool) {
        let result = if ok { "succeeded" } else { "failed" };
        *self.lock().installs.entry((extension.to_string(), version.to_string(), result)).or_default() += 1;
    }

    /// Counts one answered `GET /v1/health`.
    pub fn count_probe(&self) {
        self.lock().probes += 1;
    }

    /// Advances the traffic counters to now at the agent's current health, then
    /// renders every series.
    pub fn render(
        &self,
        who: &Identity<'_>,
        extensions: &BTreeMap<String, String>,
        state: ServingState,
        m: &Metrics,
    ) -> String {
        let mut st = self.lock();
        advance(&mut st, extensions, state, m, Instant::now());
        render(&st, who, extensions, state, m)
    }
}

impl Exporter {
    /// A real agent's series: only what it measured (see the module's comment). `m`
    /// is its reported health, whose CPU and memory come from `/proc` (NaN: unknown).
    pub fn render_measured(
        &self,
        who: &Identity<'_>,
        extensions: &BTreeMap<String, String>,
        state: ServingState,
        m: &Metrics,
        measured: &[super::real::Measured],
    ) -> String {
        let st = self.lock();
        render_measured(&st, who, extensions, state, m, measured)
    }
}

/// A number as the exposition format writes it (`+Inf` for an unbounded bucket).
fn number(x: f64) -> String {
    if x == f64::INFINITY {
        "+Inf".into()
    } else {
        format!("{x}")
    }
}

fn render_measured(
    st: &State,
    who: &Identity<'_>,
    extensions: &BTreeMap<String, String>,
    state: ServingState,
    m: &Metrics,
    measured: &[super::real::Measured],
) -> String {
    let base =
        format!("agent=\"{}\",region=\"{}\",zone=\"{}\"", escape(who.agent), escape(who.region), escape(who.zone));
    let ext_labels = |ext: &str, ver: &str| format!("{base},extension=\"{}\",version=\"{}\"", escape(ext), escape(ver));
    let mut out = String::with_capacity(2048);
    // A family is written only when it has a sample: its HELP and TYPE come with it.
    let family = |out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<String>| {
        if samples.is_empty() {
            return;
        }
        header(out, name, kind, help);
        for line in samples {
            out.push_str(&line);
            out.push('\n');
        }
    };
    let scraped: Vec<(String, &super::prom::Scrape)> =
        measured.iter().filter_map(|x| Some((ext_labels(&x.name, &x.version), x.scrape.as_ref()?))).collect();

    family(
        &mut out,
        "parley_agent_requests_total",
        "counter",
        "Requests this extension version served, as its own Prometheus endpoint counts them (last scrape).",
        scraped
            .iter()
            .filter(|(_, s)| s.requests_seen)
            .map(|(l, s)| format!("parley_agent_requests_total{{{l}}} {}", number(s.requests)))
            .collect(),
    );
    family(
        &mut out,
        "parley_agent_request_errors_total",
        "counter",
        "Requests this extension version failed, as its own Prometheus endpoint counts them (last scrape).",
        scraped
            .iter()
            .filter(|(_, s)| s.errors_seen)
            .map(|(l, s)| format!("parley_agent_request_errors_total{{{l}}} {}", number(s.errors)))
            .collect(),
    );
    let mut histogram = Vec::new();
    for (labels, s) in &scraped {
        // Only a whole histogram: one without its +Inf bucket is not one.
        let Some(total) = s.buckets.iter().find(|(le, _)| le.0 == f64::INFINITY).map(|(_, n)| *n) else { continue };
        for (le, n) in &s.buckets {
            histogram.push(format!(
                "parley_agent_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {}",
                number(le.0),
                number(*n)
            ));
        }
        if let Some(sum) = s.latency_sum {
            histogram.push(format!("parley_agent_request_duration_seconds_sum{{{labels}}} {}", number(sum)));
        }
        histogram.push(format!(
            "parley_agent_request_duration_seconds_count{{{labels}}} {}",
            number(s.latency_count.unwrap_or(total))
        ));
    }
    family(
        &mut out,
        "parley_agent_request_duration_seconds",
        "histogram",
        "Request latency of this extension version, from its own Prometheus endpoint (last scrape).",
        histogram,
    );
    let known = |x: f64| (!x.is_nan()).then_some(x);
    family(
        &mut out,
        "parley_agent_cpu_usage_ratio",
        "gauge",
        "CPU use of the extension processes, as a share of the host's CPU (0-1, from /proc).",
        known(m.cpu_pct).map(|c| format!("parley_agent_cpu_usage_ratio{{{base}}} {}", c / 100.0)).into_iter().collect(),
    );
    family(
        &mut out,
        "parley_agent_memory_usage_ratio",
        "gauge",
        "Resident memory of the extension processes, as a share of the host's memory (0-1, from /proc).",
        known(m.mem_pct)
            .map(|c| format!("parley_agent_memory_usage_ratio{{{base}}} {}", c / 100.0))
            .into_iter()
            .collect(),
    );
    family(
        &mut out,
        "parley_agent_extension_probe_up",
        "gauge",
        "1 when the extension version's last health probe passed, 0 when it failed.",
        measured
            .iter()
            .filter_map(|x| {
                x.last_probe.map(|(ok, _)| {
                    format!("parley_agent_extension_probe_up{{{}}} {}", ext_labels(&x.name, &x.version), u8::from(ok))
                })
            })
            .collect(),
    );
    family(
        &mut out,
        "parley_agent_extension_probe_duration_seconds",
        "gauge",
        "How long the extension version's last health probe took.",
        measured
            .iter()
            .filter_map(|x| {
                x.last_probe.map(|(_, secs)| {
                    format!(
                        "parley_agent_extension_probe_duration_seconds{{{}}} {}",
                        ext_labels(&x.name, &x.version),
                        number(secs)
                    )
                })
            })
            .collect(),
    );
    family(
        &mut out,
        "parley_agent_extension_probes_total",
        "counter",
        "Health probes of the extension version since it was activated, by result.",
        measured
            .iter()
            .filter(|x| x.probes != (0, 0))
            .flat_map(|x| {
                let labels = ext_labels(&x.name, &x.version);
                [("passed", x.probes.0), ("failed", x.probes.1)]
                    .map(|(r, n)| format!("parley_agent_extension_probes_total{{{labels},result=\"{r}\"}} {n}"))
            })
            .collect(),
    );
    family(
        &mut out,
        "parley_agent_extension_info",
        "gauge",
        "Extension versions installed now (always 1).",
        extensions
            .iter()
            .map(|(ext, ver)| format!("parley_agent_extension_info{{{}}} 1", ext_labels(ext, ver)))
            .collect(),
    );
    family(
        &mut out,
        "parley_agent_serving",
        "gauge",
        "1 for the serving state the agent is in, 0 for the others.",
        SERVING_STATES
            .iter()
            .map(|s| format!("parley_agent_serving{{{base},state=\"{}\"}} {}", s.as_str(), u8::from(*s == state)))
            .collect(),
    );
    family(
        &mut out,
        "parley_agent_installs_total",
        "counter",
        "Install requests by extension version and result.",
        st.installs
            .iter()
            .map(|((ext, ver, result), n)| {
                format!("parley_agent_installs_total{{{},result=\"{result}\"}} {n}", ext_labels(ext, ver))
            })
            .collect(),
    );
    family(
        &mut out,
        "parley_agent_health_probes_total",
        "counter",
        "Health probes (GET /v1/health) the agent answered.",
        vec![format!("parley_agent_health_probes_total{{{base}}} {}", st.probes)],
    );
    out
}

const SERVING_STATES: [ServingState; 5] = [
    ServingState::Active,
    ServingState::Cordoned,
    ServingState::Draining,
    ServingState::Drained,
    ServingState::Restarting,
];

fn advance(st: &mut State, extensions: &BTreeMap<String, String>, state: ServingState, m: &Metrics, now: Instant) {
    let dt = st.last.map(|l| now.saturating_duration_since(l).as_secs_f64()).unwrap_or(0.0);
    st.last = Some(now);
    // Series of versions no longer installed end; new ones start at zero.
    st.series.retain(|(ext, ver), _| extensions.get(ext) == Some(ver));
    let serving = state != ServingState::Drained && state != ServingState::Restarting;
    let n = if serving { REQUESTS_PER_SEC * dt } else { 0.0 };
    let error_share = (m.error_rate_pct / 100.0).clamp(0.0, 1.0);
    // Exponential latencies with the reported p95: F(x) = 1 - exp(-x ln 20 / p95).
    let p95_s = (m.p95_ms / 1000.0).max(1e-6);
    let rate = 20f64.ln() / p95_s;
    for (ext, ver) in extensions {
        let key = (ext.clone(), ver.clone());
        let Some(s) = st.series.get_mut(&key) else {
            // Installed since the last scrape: counted from now on.
            st.series.insert(key, Series::default());
            continue;
        };
        if n <= 0.0 {
            continue;
        }
        s.requests += n;
        s.errors += n * error_share;
        s.latency_sum += n / rate;
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            s.buckets[i] += n * (1.0 - (-rate * le).exp());
        }
    }
}

/// A label value as the exposition format quotes it.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Counters are whole requests: the integral's floor, which only ever grows.
fn whole(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.floor() as u64
    } else {
        0
    }
}

fn render(
    st: &State,
    who: &Identity<'_>,
    extensions: &BTreeMap<String, String>,
    state: ServingState,
    m: &Metrics,
) -> String {
    let base =
        format!("agent=\"{}\",region=\"{}\",zone=\"{}\"", escape(who.agent), escape(who.region), escape(who.zone));
    let ext_labels = |ext: &str, ver: &str| format!("{base},extension=\"{}\",version=\"{}\"", escape(ext), escape(ver));
    let mut out = String::with_capacity(4096);

    header(
        &mut out,
        "parley_agent_requests_total",
        "counter",
        "Requests served while this extension version was installed (every request passes every installed extension; synthesised by demo and simulated agents).",
    );
    for ((ext, ver), s) in &st.series {
        let _ = writeln!(out, "parley_agent_requests_total{{{}}} {}", ext_labels(ext, ver), whole(s.requests));
    }
    header(
        &mut out,
        "parley_agent_request_errors_total",
        "counter",
        "Requests that failed while this extension version was installed.",
    );
    for ((ext, ver), s) in &st.series {
        let _ = writeln!(out, "parley_agent_request_errors_total{{{}}} {}", ext_labels(ext, ver), whole(s.errors));
    }
    header(
        &mut out,
        "parley_agent_request_duration_seconds",
        "histogram",
        "Request latency while this extension version was installed.",
    );
    for ((ext, ver), s) in &st.series {
        let labels = ext_labels(ext, ver);
        let count = whole(s.requests);
        for (le, n) in LATENCY_BUCKETS.iter().zip(s.buckets.iter()) {
            // Floors of cumulative counts stay cumulative; never above the total.
            let _ = writeln!(
                out,
                "parley_agent_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                whole(*n).min(count)
            );
        }
        let _ = writeln!(out, "parley_agent_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "parley_agent_request_duration_seconds_sum{{{labels}}} {:.6}", s.latency_sum.max(0.0));
        let _ = writeln!(out, "parley_agent_request_duration_seconds_count{{{labels}}} {count}");
    }
    header(&mut out, "parley_agent_cpu_usage_ratio", "gauge", "CPU use as a share of the agent's allocation (0-1).");
    let _ = writeln!(out, "parley_agent_cpu_usage_ratio{{{base}}} {}", m.cpu_pct / 100.0);
    header(
        &mut out,
        "parley_agent_memory_usage_ratio",
        "gauge",
        "Memory use as a share of the agent's allocation (0-1).",
    );
    let _ = writeln!(out, "parley_agent_memory_usage_ratio{{{base}}} {}", m.mem_pct / 100.0);
    header(&mut out, "parley_agent_extension_info", "gauge", "Extension versions installed now (always 1).");
    for (ext, ver) in extensions {
        let _ = writeln!(out, "parley_agent_extension_info{{{}}} 1", ext_labels(ext, ver));
    }
    header(&mut out, "parley_agent_serving", "gauge", "1 for the serving state the agent is in, 0 for the others.");
    for s in [
        ServingState::Active,
        ServingState::Cordoned,
        ServingState::Draining,
        ServingState::Drained,
        ServingState::Restarting,
    ] {
        let _ = writeln!(out, "parley_agent_serving{{{base},state=\"{}\"}} {}", s.as_str(), u8::from(s == state));
    }
    header(&mut out, "parley_agent_installs_total", "counter", "Install requests by extension version and result.");
    for ((ext, ver, result), n) in &st.installs {
        let _ = writeln!(out, "parley_agent_installs_total{{{},result=\"{result}\"}} {n}", ext_labels(ext, ver));
    }
    header(
        &mut out,
        "parley_agent_health_probes_total",
        "counter",
        "Health probes (GET /v1/health) the agent answered.",
    );
    let _ = writeln!(out, "parley_agent_health_probes_total{{{base}}} {}", st.probes);
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn counters_grow_with_the_reported_error_rate_and_a_new_version_starts_from_zero() {
        let who = Identity { agent: "edge-1", region: "us-east", zone: "us-east-a" };
        let mut st = State::default();
        let mut exts = BTreeMap::new();
        exts.insert("auth-filter".to_string(), "2.0.3".to_string());
        let m = Metrics { cpu_pct: 30.0, mem_pct: 40.0, error_rate_pct: 2.0, p95_ms: 200.0 };
        let t0 = Instant::now();
        advance(&mut st, &exts, ServingState::Active, &m, t0);
        advance(&mut st, &exts, ServingState::Active, &m, t0 + Duration::from_secs(10));
        let text = render(&st, &who, &exts, ServingState::Active, &m);
        let labels =
            "{agent=\"edge-1\",region=\"us-east\",zone=\"us-east-a\",extension=\"auth-filter\",version=\"2.0.3\"}";
        assert_eq!(value(&text, &format!("parley_agent_requests_total{labels}")), 1000.0);
        assert_eq!(value(&text, &format!("parley_agent_request_errors_total{labels}")), 20.0);
        // 95% of requests at or under the p95: between the 0.15 s and 0.25 s buckets.
        let le = |b: &str| {
            value(
                &text,
                &format!("parley_agent_request_duration_seconds_bucket{{agent=\"edge-1\",region=\"us-east\",zone=\"us-east-a\",extension=\"auth-filter\",version=\"2.0.3\",le=\"{b}\"}}"),
            )
        };
        assert!(le("0.15") < 950.0 && le("0.25") > 950.0, "{text}");
        assert_eq!(le("+Inf"), 1000.0);
        assert_eq!(
            value(&text, "parley_agent_cpu_usage_ratio{agent=\"edge-1\",region=\"us-east\",zone=\"us-east-a\"}"),
            0.3
        );

        exts.insert("auth-filter".to_string(), "2.1.0".to_string());
        advance(&mut st, &exts, ServingState::Active, &m, t0 + Duration::from_secs(11));
        let text = render(&st, &who, &exts, ServingState::Active, &m);
        assert!(!text.contains("version=\"2.0.3\""), "the old version's series end:\n{text}");
        assert_eq!(value(&text, &format!("parley_agent_requests_total{}", labels.replace("2.0.3", "2.1.0"))), 0.0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
