//! The report's chart is a bar chart of rollouts per day by outcome: a registry with
//! known deployments on known days, asked for its report in the TUI (through tmux),
//! draws exactly those bars, each as long as that day's rollouts, in segments by
//! outcome, with a key.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{Duration as Days, NaiveDate, Utc};
use common::tmux::Tmux;
use parley::ops::{Actor, DeploymentStatus as D, Role, Scope, Strategy, StrategyKind};
use parley::registry::{NewDeployment, NewTarget, Registry};

/// Deployments created at noon (UTC) `n` days ago with these outcomes.
const PLAN: [(i64, D); 9] = [
    (5, D::Succeeded),
    (5, D::Succeeded),
    (5, D::RolledBack),
    (5, D::Failed),
    (3, D::Aborted),
    (1, D::Succeeded),
    (1, D::RolledBack),
    (1, D::Succeeded),
    (1, D::Succeeded),
];

fn noon(days_ago: i64) -> chrono::DateTime<Utc> {
    (Utc::now() - Days::days(days_ago)).date_naive().and_hms_opt(12, 0, 0).unwrap().and_utc()
}

async fn seed(db: &Path) {
    let reg = Registry::open(db).await.unwrap();
    let mut ids = Vec::new();
    for (_, status) in PLAN {
        let d = reg
            .create_deployment(&NewDeployment {
                extension: "auth-filter".into(),
                version: "2.1.0".into(),
                scope: Scope::region("ap-south"),
                strategy: Strategy::of(StrategyKind::Rolling),
                status,
                actor: Actor::new("alice", "repl", Role::Operator),
                utterance: "roll out auth-filter 2.1.0 to ap-south".into(),
                step_count: 1,
                targets: vec![NewTarget {
                    agent: "edge-19".into(),
                    endpoint: "http://127.0.0.1:9".into(),
                    previous_version: Some("2.0.3".into()),
                    step: 0,
                }],
            })
            .await
            .unwrap();
        ids.push(d.id);
    }
    drop(reg);
    // The registry stamps a deployment with the time it was created; these were
    // "created" on past days, which only the database itself can be told.
    let pool = sqlx::sqlite::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    for ((days_ago, _), id) in PLAN.iter().zip(ids) {
        let at = noon(*days_ago);
        sqlx::query("UPDATE deployments SET created_at = ?, finished_at = ? WHERE id = ?")
            .bind(at.timestamp_millis())
            .bind(at.timestamp_millis() + 30_000)
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

#[test]
fn the_report_draws_rollouts_per_day_by_outcome_in_tmux() {
    assert!(
        Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success()),
        "tmux is not installed: this end-to-end test drives the TUI through tmux (scripts/deps installs it)."
    );
    let dir = tempfile::tempdir().unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(seed(&dir.path().join("parley.db")));

    let script =
        format!("{bin} --data-dir {data}; sleep 60", bin = env!("CARGO_BIN_EXE_parley"), data = dir.path().display());
    let tmux = Tmux::new("parley-report");
    let out = tmux.cmd(&["new-session", "-d", "-s", "tui", "-x", "100", "-y", "40", "sh", "-c", &script]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    tmux.wait_for("the TUI", Duration::from_secs(60), |s| s.contains("48 agents, 4 regions"));
    tmux.send(&["-l", "deployment report for the last 7 days"]);
    tmux.send(&["Enter"]);
    let screen = tmux.wait_for("the chart", Duration::from_secs(20), |s| s.contains("Rollouts per day by outcome"));

    // The chat is 98 columns inside its border: bars of at most 60 cells, the
    // busiest days (4 rollouts) full, so one rollout is 15 cells.
    let label = |days_ago: i64| -> String {
        let d: NaiveDate = (Utc::now() - Days::days(days_ago)).date_naive();
        d.format("%m-%d").to_string()
    };
    let bar = |parts: &[(char, usize)]| -> String { parts.iter().map(|(c, n)| c.to_string().repeat(n * 15)).collect() };
    let mut want = vec!["  Rollouts per day by outcome".to_string()];
    for days_ago in (0..=7).rev() {
        let line = match days_ago {
            5 => format!("  {} {} 4", label(5), bar(&[('█', 2), ('▓', 1), ('▒', 1)])),
            3 => format!("  {} {} 1", label(3), bar(&[('░', 1)])),
            1 => format!("  {} {} 4", label(1), bar(&[('█', 3), ('▓', 1)])),
            n => format!("  {}", label(n)),
        };
        want.push(line);
    }
    want.push("  █ succeeded  ▓ rolled_back  ▒ failed  ░ aborted".to_string());

    let inside: Vec<String> =
        screen.lines().map(|l| l.trim_start_matches('│').trim_end_matches(['│', ' ']).to_string()).collect();
    let start = inside.iter().position(|l| l == "  Rollouts per day by outcome").unwrap();
    assert_eq!(inside[start..start + want.len()], want[..], "{screen}");
    // The message says the same numbers the bars draw.
    assert!(screen.contains("9 deployments over the last 7d"), "{screen}");
    tmux.send(&["C-c"]);
}
