//! Troubleshooting's own costs on a 10,000-agent fleet (20 regions, 5 zones each):
//! recording one poll into the metric history (paid on every poll), and explaining a
//! region where one version is out of threshold, with its history full. Targets:
//! recording < 10 ms, an explanation < 50 ms (a poll of that fleet takes 0.49 s).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use parley::agent::protocol::{Metrics, ServingState};
use parley::diagnose::{explain, Facts, Question};
use parley::ops::Scope;
use parley::topology::history::MetricHistory;
use parley::topology::{AgentView, Catalog, HealthThresholds, Liveness, Topology};

const AGENTS: usize = 10_000;
const REGIONS: usize = 20;
const ZONES_PER_REGION: usize = 5;

/// The fleet measured at `secs`; every seventh agent of region-0 runs auth-filter
/// 2.1.0 and, from `bad_from`, fails 5% of its requests.
fn topology(catalog: &Arc<Catalog>, secs: i64, bad_from: i64) -> Topology {
    let at = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs);
    let agents = (0..AGENTS)
        .map(|i| {
            let region = format!("region-{}", i % REGIONS);
            let zone = format!("{region}-{}", (i / REGIONS) % ZONES_PER_REGION);
            let new = i.is_multiple_of(REGIONS) && (i / REGIONS).is_multiple_of(7);
            let mut extensions = BTreeMap::new();
            extensions.insert("auth-filter".to_string(), if new { "2.1.0" } else { "2.0.3" }.to_string());
            extensions.insert("log-shipper".to_string(), "1.4.2".to_string());
            AgentView {
                name: format!("agent-{i}").into(),
                endpoint: format!("http://10.0.{}.{}:8080", i / 256, i % 256),
                region,
                zone,
                labels: BTreeMap::new(),
                capabilities: Vec::new(),
                extensions,
                metrics: Metrics {
                    cpu_pct: 30.0 + (i % 7) as f64,
                    mem_pct: 40.0,
                    error_rate_pct: if new && secs >= bad_from { 5.0 } else { (i % 5) as f64 / 10.0 },
                    p95_ms: 100.0 + (i % 50) as f64,
                },
                state: ServingState::Active,
                liveness: Liveness::Healthy,
                liveness_since: DateTime::<Utc>::UNIX_EPOCH,
                last_seen: Some(at),
                reported_at: Some(at),
                flapping: None,
                health_source: None,
                status_asked_at: None,
            }
        })
        .collect();
    Topology::new(agents, Arc::clone(catalog), Some(at))
}

fn bench(c: &mut Criterion) {
    let catalog = Arc::new(Catalog::embedded().expect("embedded catalog"));
    let history = MetricHistory::new();
    // A full history: more passes than the 10,000-agent budget keeps.
    let mut last = topology(&catalog, 0, 30);
    for secs in 0..40 {
        last = topology(&catalog, secs, 30);
        history.record(&last);
    }
    let mut secs = 40;
    c.bench_function("history_record_10000_agents", |b| {
        b.iter_batched(
            || {
                // A new measurement of every agent: built outside the timing.
                secs += 1;
                let mut agents = last.agents().to_vec();
                let at = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::seconds(secs);
                for a in &mut agents {
                    a.reported_at = Some(at);
                }
                Topology::new(agents, Arc::clone(&catalog), Some(at))
            },
            // Answered, so the snapshot is dropped outside the timing.
            |t| {
                history.record(&t);
                t
            },
            BatchSize::LargeInput,
        )
    });
    let scope = Scope::region("region-0");
    c.bench_function("explain_region_10000_agents", |b| {
        b.iter(|| {
            let facts = Facts {
                topo: &last,
                history: &history,
                thresholds: HealthThresholds::default(),
                changes: &[],
                deployments: &[],
                now: Utc::now(),
            };
            let d =
                explain(&facts, &Question { scope: &scope, subject: "region-0".into(), focus: None, compare: None });
            assert!(matches!(d.finding, parley::diagnose::Finding::Version { .. }), "{:?}", d.finding);
            d
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
