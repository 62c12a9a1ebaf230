//! `/metrics`: Parley's own health in the Prometheus text format (version 0.0.4).
//! Counters are kept here as the server sees requests and rollout events; gauges
//! (agents by state, the last poll pass) are read from the live model at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use crate::orchestrate::RolloutEvent;
use crate::services::Services;

/// Upper bounds of the turn-latency histogram, seconds.
const TURN_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5];

#[derive(Default)]
struct Counts {
    /// (route, status) -> requests.
    requests: BTreeMap<(String, u16), u64>,
    /// Finished rollouts by outcome (`succeeded`, `rolled_back`, ...).
    rollouts: BTreeMap<String, u64>,
    /// Gate evaluations by result (`passed`, `failed`).
    gates: BTreeMap<&'static str, u64>,
    turn_buckets: [u64; TURN_BUCKETS.len()],
    turn_count: u64,
    turn_sum: f64,
}

#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Plain counters: a panic mid-update leaves at worst one count off.
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn request(&self, route: &str, status: u16) {
        *self.lock().requests.entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn turn(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let mut c = self.lock();
        for (i, bound) in TURN_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                c.turn_buckets[i] += 1;
            }
        }
        c.turn_count += 1;
        c.turn_sum += secs;
    }

    pub fn event(&self, event: &RolloutEvent) {
        match event {
            RolloutEvent::Finished { status, .. } => {
                *self.lock().rollouts.entry(status.as_str().to_string()).or_default() += 1;
            }
            RolloutEvent::GateEvaluated { passed, .. } => {
                *self.lock().gates.entry(if *passed { "passed" } else { "failed" }).or_default() += 1;
            }
            _ => {}
        }
    }

    /// Counts rollout outcomes and gate results as the orchestrator announces them.
    pub fn spawn_collector(
        self: &std::sync::Arc<Self>,
        services: &Services,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let metrics = std::sync::Arc::clone(self);
        let mut events = services.orchestrator.subscribe();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    e = events.recv() => match e {
                        Ok(event) => metrics.event(&event),
                        Err(RecvError::Lagged(n)) => tracing::warn!(missed = n, "metrics missed rollout events"),
                        Err(RecvError::Closed) => return,
                    },
                }
            }
        })
    }

    /// The exposition text.
    pub fn render(&self, services: &Services) -> String {
        let mut out = String::new();
        let c = self.lock();
        family(&mut out, "parley_rollouts_total", "counter", "Rollouts finished since the server started, by outcome.");
        for (outcome, n) in &c.rollouts {
            let _ = writeln!(out, "parley_rollouts_total{{outcome=\"{outcome}\"}} {n}");
        }
        family(&mut out, "parley_gate_results_total", "counter", "Health gate evaluations, by result.");
        for result in ["passed", "failed"] {
            let _ =
                writeln!(out, "parley_gate_results_total{{result=\"{result}\"}} {}", c.gates.get(result).unwrap_or(&0));
        }
        family(&mut out, "parley_api_requests_total", "counter", "API requests, by route and HTTP status.");
        for ((route, status), n) in &c.requests {
            let _ = writeln!(out, "parley_api_requests_total{{route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
        family(&mut out, "parley_turn_duration_seconds", "histogram", "Time to answer one conversational turn.");
        for (bound, n) in TURN_BUCKETS.iter().zip(c.turn_buckets.iter()) {
            let _ = writeln!(out, "parley_turn_duration_seconds_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "parley_turn_duration_seconds_bucket{{le=\"+Inf\"}} {}", c.turn_count);
        let _ = writeln!(out, "parley_turn_duration_seconds_sum {}", c.turn_sum);
        let _ = writeln!(out, "parley_turn_duration_seconds_count {}", c.turn_count);
        drop(c);

        let (pass, passes) = services.poller.pass_stats();
        family(
            &mut out,
            "parley_poll_pass_duration_seconds",
            "gauge",
            "How long the last full poll of the fleet took.",
        );
        let _ = writeln!(out, "parley_poll_pass_duration_seconds {}", pass.as_secs_f64());
        family(&mut out, "parley_poll_passes_total", "counter", "Full poll passes over the fleet.");
        let _ = writeln!(out, "parley_poll_passes_total {passes}");
        family(&mut out, "parley_agents", "gauge", "Agents in the live model, by liveness.");
        let topo = services.topology.snapshot();
        let mut by_state: BTreeMap<&'static str, usize> =
            ["healthy", "degraded", "suspect", "down"].into_iter().map(|s| (s, 0)).collect();
        for a in topo.agents() {
            *by_state.entry(a.liveness.as_str()).or_default() += 1;
        }
        for (state, n) in by_state {
            let _ = writeln!(out, "parley_agents{{state=\"{state}\"}} {n}");
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
