//! One frame of the terminal UI with a 10,000-agent fleet, all three panes showing
//! (200x60), a rollout in the deployments pane and a chat with a table. Target: < 5 ms.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use parley::agent::protocol::{Metrics, ServingState};
use parley::ops::{DeploymentStatus, Scope, Strategy, StrategyKind};
use parley::registry::{DeploymentRecord, TargetRecord, TargetState};
use parley::reply::{Outcome, Reply, Table};
use parley::topology::AgentView;
use parley::topology::{Catalog, HealthThresholds, Liveness, Topology};
use parley::ui::tui::render::render;
use parley::ui::tui::state::{App, Pane};

const AGENTS: usize = 10_000;
const REGIONS: usize = 20;
const ZONES_PER_REGION: usize = 5;

fn topology() -> Topology {
    let agents = (0..AGENTS)
        .map(|i| {
            let region = format!("region-{}", i % REGIONS);
            let zone = format!("{region}-{}", (i / REGIONS) % ZONES_PER_REGION);
            let mut labels = BTreeMap::new();
            labels.insert("env".to_string(), "production".to_string());
            labels.insert("tier".to_string(), "edge".to_string());
            let mut extensions = BTreeMap::new();
            extensions.insert("auth-filter".to_string(), "2.0.3".to_string());
            AgentView {
                name: format!("agent-{i}").into(),
                endpoint: format!("http://10.0.{}.{}:8080", i / 256, i % 256),
                region,
                zone,
                labels,
                capabilities: Vec::new(),
                extensions,
                metrics: Metrics {
                    cpu_pct: 30.0,
                    mem_pct: 40.0,
                    error_rate_pct: (i % 13) as f64 / 10.0,
                    p95_ms: 100.0 + (i % 50) as f64,
                },
                state: if i % 97 == 0 { ServingState::Cordoned } else { ServingState::Active },
                liveness: match i % 101 {
                    0 => Liveness::Down,
                    1 => Liveness::Suspect,
                    2 => Liveness::Degraded,
                    _ => Liveness::Healthy,
                },
                liveness_since: DateTime::<Utc>::UNIX_EPOCH,
                last_seen: None,
                reported_at: Some(DateTime::<Utc>::UNIX_EPOCH),
                flapping: None,
                health_source: None,
                status_asked_at: None,
            }
        })
        .collect();
    Topology::new(agents, Arc::new(Catalog::embedded().expect("catalog")), None)
}

fn deployment() -> DeploymentRecord {
    let targets = (0..500)
        .map(|i| TargetRecord {
            agent: format!("agent-{}", i * REGIONS),
            endpoint: String::new(),
            previous_version: Some("2.0.3".into()),
            step: (i / 100) as u32,
            state: if i < 230 { TargetState::Installed } else { TargetState::Pending },
            detail: None,
        })
        .collect();
    DeploymentRecord {
        id: 1,
        name: "d-1".into(),
        extension: "auth-filter".into(),
        version: "2.1.0".into(),
        scope: Scope::region("region-0"),
        strategy: Strategy { steps: Some(vec![20, 40, 60, 80, 100]), ..Strategy::of(StrategyKind::Progressive) },
        status: DeploymentStatus::Running,
        hold: None,
        reason: None,
        actor: "bench".into(),
        frontend: "tui".into(),
        utterance: String::new(),
        current_step: 2,
        step_count: 5,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
        updated_at: DateTime::<Utc>::UNIX_EPOCH,
        finished_at: None,
        targets,
    }
}

fn bench(c: &mut Criterion) {
    let mut app = App::new(Arc::new(topology()), HealthThresholds::default());
    for _ in 0..60 {
        app.sample_series();
    }
    app.set_deployments(vec![deployment()]);
    app.focus = Pane::Fleet;
    app.selected_agent = Some("agent-5000".into());
    for i in 0..20 {
        app.on_submit(&format!("how healthy is region-{i}?"));
        let mut t = Table::new("Health", &["Agent", "Zone", "Health", "p95 ms"]);
        for a in 0..12 {
            t.push(vec![format!("agent-{a}"), format!("region-{i}-0"), "healthy".into(), "120".into()]);
        }
        app.on_reply(Reply::new(Outcome::Answered, format!("region-{i}: 500 agents.")).with_table(t), None);
    }
    let mut terminal = Terminal::new(TestBackend::new(200, 60)).expect("test backend");
    c.bench_function("tui_render_10k_agents_200x60", |b| {
        b.iter(|| {
            terminal.draw(|f| render(f, &app)).expect("draw");
        })
    });
    c.bench_function("tui_rebuild_fleet_rows_10k_agents", |b| b.iter(|| app.rebuild_fleet_rows()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
