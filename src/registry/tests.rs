use std::collections::BTreeSet;

use chrono::{Duration, Utc};

use super::*;
use crate::ops::{Actor, DeploymentStatus, Role, Scope, Strategy, StrategyKind};
use crate::orchestrate::journal::Event;

#[path = "../../tests/common/postgres.rs"]
mod pg;

/// The store one test of the suite runs on: the same assertions run on SQLite and on
/// a real PostgreSQL (a throwaway cluster, see tests/common/postgres.rs).
struct Store {
    reg: Registry,
    location: Location,
    // Kept alive for the test: the SQLite file's directory, or the database.
    _dir: Option<tempfile::TempDir>,
    _pg: Option<pg::Database>,
}

/// Which SQLite a suite test wants: in memory, or a file a second handle can open.
#[derive(Clone, Copy)]
enum SqliteKind {
    Memory,
    File,
}

impl Store {
    async fn sqlite(kind: SqliteKind) -> Store {
        match kind {
            SqliteKind::Memory => Store {
                reg: Registry::open_in_memory().await.unwrap(),
                location: Location::Sqlite(":memory:".into()),
                _dir: None,
                _pg: None,
            },
            SqliteKind::File => {
                let dir = tempfile::tempdir().unwrap();
                let location = Location::Sqlite(dir.path().join("parley.db"));
                Store { reg: Registry::connect(&location).await.unwrap(), location, _dir: Some(dir), _pg: None }
            }
        }
    }

    /// `None` (having said "skipped: ...") only where PostgreSQL is not installed.
    async fn postgres() -> Option<Store> {
        let db = tokio::task::spawn_blocking(pg::database).await.unwrap()?;
        let location = Location::Postgres(db.url.clone());
        let reg = Registry::connect(&location).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(reg.backend(), Backend::Postgres);
        Some(Store { reg, location, _dir: None, _pg: Some(db) })
    }

    /// A second handle on the same store (an in-memory one can only share its own).
    async fn open_again(&self) -> Registry {
        match &self.location {
            Location::Sqlite(p) if p.as_os_str() == ":memory:" => self.reg.clone(),
            other => Registry::connect(other).await.unwrap(),
        }
    }
}

/// Each test body runs twice, as `<name>::sqlite` and `<name>::postgres`.
macro_rules! on_both_backends {
    ($(#[$doc:meta])* async fn $name:ident($store:ident: $kind:ident) $body:block) => {
        $(#[$doc])*
        mod $name {
            use super::*;

            async fn body($store: Store) $body

            #[tokio::test]
            async fn sqlite() {
                body(Store::sqlite(SqliteKind::$kind).await).await
            }

            #[tokio::test]
            async fn postgres() {
                if let Some(store) = Store::postgres().await {
                    body(store).await
                }
            }
        }
    };
}

fn new_deployment(agents: &[&str], status: DeploymentStatus) -> NewDeployment {
    NewDeployment {
        extension: "auth-filter".into(),
        version: "2.1.0".into(),
        scope: Scope::region("ap-south"),
        strategy: Strategy { steps: None, batch_size: Some(2), ..Strategy::of(StrategyKind::Rolling) },
        status,
        actor: Actor::new("alice", "repl", Role::Operator),
        utterance: "roll out auth-filter 2.1.0 to ap-south".into(),
        step_count: 2,
        targets: agents
            .iter()
            .enumerate()
            .map(|(i, a)| NewTarget {
                agent: a.to_string(),
                endpoint: format!("http://127.0.0.1:{}", 9000 + i),
                previous_version: (i != 0).then(|| "2.0.3".to_string()),
                step: (i / 2) as u32,
            })
            .collect(),
    }
}

on_both_backends! {
    async fn deployments_round_trip(store: Memory) {
    let reg = store.reg.clone();
    let d = reg
        .create_deployment(&new_deployment(&["edge-19", "edge-20", "edge-21"], DeploymentStatus::Running))
        .await
        .unwrap();
    assert_eq!(d.name, "d-1");
    assert_eq!(d.targets.len(), 3);
    assert_eq!(d.targets[0].previous_version, None);
    assert_eq!(d.targets[2].step, 1);
    assert!(d.targets.iter().all(|t| t.state == TargetState::Pending));
    assert_eq!(d.finished_at, None);

    reg.set_target_state(d.id, "edge-20", TargetState::Installed, Some("2.1.0")).await.unwrap();
    reg.set_current_step(d.id, 1).await.unwrap();
    reg.set_status(d.id, DeploymentStatus::Succeeded, Some("3 agents on 2.1.0")).await.unwrap();
    let got = reg.deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(got.status, DeploymentStatus::Succeeded);
    assert_eq!(got.reason.as_deref(), Some("3 agents on 2.1.0"));
    assert_eq!(got.current_step, 1);
    assert!(got.finished_at.is_some());
    assert_eq!(got.target("edge-20").unwrap().state, TargetState::Installed);
    assert_eq!(got.scope, Scope::region("ap-south"));

    assert!(reg.deployment_by_name("d-99").await.unwrap().is_none());
    assert!(reg.deployment_by_name("banana").await.unwrap().is_none());
    assert!(matches!(
        reg.set_status(99, DeploymentStatus::Failed, None).await,
        Err(RegistryError::UnknownDeployment(n)) if n == "d-99"
    ));
    }
}

on_both_backends! {
    async fn lists_filter_by_status_time_and_agents(store: Memory) {
    let reg = store.reg.clone();
    let a = reg.create_deployment(&new_deployment(&["edge-1", "edge-2"], DeploymentStatus::Running)).await.unwrap();
    let b = reg.create_deployment(&new_deployment(&["edge-3"], DeploymentStatus::Running)).await.unwrap();
    reg.set_status(a.id, DeploymentStatus::Failed, Some("install failed")).await.unwrap();

    let failed = DeploymentFilter { status: Some(DeploymentStatus::Failed), ..Default::default() };
    assert_eq!(reg.list_deployments(&failed).await.unwrap().iter().map(|d| d.id).collect::<Vec<_>>(), vec![a.id]);
    let on_edge3 = DeploymentFilter { agents: Some(BTreeSet::from(["edge-3".to_string()])), ..Default::default() };
    assert_eq!(reg.list_deployments(&on_edge3).await.unwrap()[0].id, b.id);
    let future = DeploymentFilter { since: Some(Utc::now() + Duration::hours(1)), ..Default::default() };
    assert!(reg.list_deployments(&future).await.unwrap().is_empty());
    let all = reg.list_deployments(&DeploymentFilter::default()).await.unwrap();
    assert_eq!(all.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["d-2", "d-1"]);
    assert_eq!(reg.latest_deployment().await.unwrap().unwrap().id, b.id);
    assert_eq!(reg.active_deployments().await.unwrap().iter().map(|d| d.id).collect::<Vec<_>>(), vec![b.id]);
    }
}

on_both_backends! {
    async fn events_keep_their_order_and_ids_are_never_reused(store: Memory) {
    let reg = store.reg.clone();
    let d = reg.create_deployment(&new_deployment(&["edge-1"], DeploymentStatus::Running)).await.unwrap();
    for kind in ["created", "install_started", "install_succeeded"] {
        reg.append_event(Some(d.id), kind, &serde_json::json!({ "agent": "edge-1" })).await.unwrap();
    }
    reg.append_event(None, "agent_action", &serde_json::json!({ "agent": "edge-9" })).await.unwrap();
    let events = reg.events(d.id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["created", "install_started", "install_succeeded"]
    );
    assert_eq!(events[0].deployment.as_deref(), Some("d-1"));
    assert_eq!(reg.recent_events(1).await.unwrap()[0].kind, "agent_action");

    reg.exec("DELETE FROM deployments WHERE id = ?", &[Some(d.id)]).await.unwrap();
    let next = reg.create_deployment(&new_deployment(&["edge-1"], DeploymentStatus::Running)).await.unwrap();
    assert_eq!(next.name, "d-2");
    }
}

on_both_backends! {
    async fn audit_entries_are_kept(store: Memory) {
    let reg = store.reg.clone();
    let actor = Actor::new("U0123", "slack:C0456", Role::Viewer);
    let op = crate::ops::Operation::Drain { agent: Some("edge-7".into()) };
    reg.append_audit(&AuditEntry::new(
        &actor,
        "drain edge-7",
        Some(&op),
        AuditResult::Refused,
        "viewers may not drain",
    ))
    .await
    .unwrap();
    reg.append_audit(&AuditEntry::new(&actor, "gibberish", None, AuditResult::Failed, "not understood")).await.unwrap();
    let entries = reg.list_audit(None, 10).await.unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].operation, Some(serde_json::json!({"op": "drain", "agent": "edge-7"})));
    assert_eq!(entries[0].result, AuditResult::Refused);
    assert_eq!(entries[0].role, Role::Viewer);
    assert_eq!(entries[1].operation, None);
    assert!(reg.list_audit(Some(Utc::now() + Duration::hours(1)), 10).await.unwrap().is_empty());
    }
}

on_both_backends! {
    async fn report_counts_rates_and_durations(store: Memory) {
    let reg = store.reg.clone();
    let start = Utc::now() - Duration::hours(2);
    // (status, duration in seconds)
    let plan = [
        (DeploymentStatus::Succeeded, 10),
        (DeploymentStatus::Succeeded, 20),
        (DeploymentStatus::RolledBack, 30),
        (DeploymentStatus::Failed, 100),
        (DeploymentStatus::Running, 0),
    ];
    for (status, secs) in plan {
        let d = reg.create_deployment(&new_deployment(&["edge-1"], status)).await.unwrap();
        let finished = (!status.is_active()).then(|| to_millis(start + Duration::seconds(secs)));
        let set = "UPDATE deployments SET created_at = ?, finished_at = ? WHERE id = ?";
        reg.exec(set, &[Some(to_millis(start)), finished, Some(d.id)]).await.unwrap();
    }
    let r = reg.report(start - Duration::hours(1), Utc::now()).await.unwrap();
    assert_eq!(r.total, 5);
    assert_eq!(r.finished, 4);
    assert_eq!(r.by_status["succeeded"], 2);
    assert_eq!(r.by_status["pending"], 0);
    assert_eq!(r.success_rate, Some(0.5));
    assert_eq!(r.rollback_rate, Some(0.25));
    assert_eq!(r.median_duration_secs, Some(25.0));
    assert_eq!(r.p95_duration_secs, Some(100.0));

    let empty = reg.report(start - Duration::hours(9), start - Duration::hours(8)).await.unwrap();
    assert_eq!((empty.total, empty.success_rate, empty.median_duration_secs), (0, None, None));
    assert!(empty.failed_gates_by_kind.is_empty());
    }
}

on_both_backends! {
    async fn report_counts_failed_gates_by_kind_and_a_timeline_by_day(store: Memory) {
    let reg = store.reg.clone();
    let now = Utc::now();
    let day = |n: i64| (now - Duration::days(n)).date_naive().and_hms_opt(12, 0, 0).unwrap().and_utc();
    // (created on day -n, status)
    let plan = [
        (3, DeploymentStatus::Succeeded),
        (3, DeploymentStatus::RolledBack),
        (1, DeploymentStatus::RolledBack),
        (1, DeploymentStatus::Succeeded),
        (1, DeploymentStatus::Succeeded),
        // Outside the window: neither counted nor its gates.
        (40, DeploymentStatus::RolledBack),
    ];
    let mut ids = Vec::new();
    for (n, status) in plan {
        let d = reg.create_deployment(&new_deployment(&["edge-1"], status)).await.unwrap();
        let set = "UPDATE deployments SET created_at = ?, finished_at = ? WHERE id = ?";
        let (created, finished) = (to_millis(day(n)), to_millis(day(n) + Duration::seconds(30)));
        reg.exec(set, &[Some(created), Some(finished), Some(d.id)]).await.unwrap();
        ids.push(d.id);
    }
    let gate =
        |outcome: &str, kinds: &[&str]| serde_json::json!({ "step": 1, "outcome": outcome, "failed_kinds": kinds });
    for (id, data) in [
        (ids[0], gate("successful", &[])),
        (ids[0], gate("successful", &[])),
        (ids[1], gate("successful", &[])),
        (ids[1], gate("failed", &["error rate", "p95"])),
        (ids[2], gate("error", &["unreachable"])),
        (ids[3], gate("inconclusive", &["p95"])),
        (ids[3], gate("successful", &[])),
        (ids[5], gate("failed", &["error rate"])),
    ] {
        reg.append_event(Some(id), "gate_evaluated", &data).await.unwrap();
    }
    // Other kinds of events are not gates.
    reg.append_event(Some(ids[1]), "rollout_failed", &serde_json::json!({ "reason": "x" })).await.unwrap();

    let r = reg.report(now - Duration::days(30), now).await.unwrap();
    assert_eq!(r.total, 5);
    let outcomes: Vec<(&str, u64)> = r.gates_by_outcome.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(outcomes, [("error", 1), ("failed", 1), ("inconclusive", 1), ("successful", 4)]);
    let kinds: Vec<(&str, u64)> = r.failed_gates_by_kind.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(kinds, [("error rate", 1), ("p95", 2), ("unreachable", 1)]);

    // Every day of the window, quiet ones included, oldest first.
    assert_eq!(r.timeline.len(), 31);
    assert_eq!(r.timeline.first().unwrap().date, (now - Duration::days(30)).date_naive());
    assert_eq!(r.timeline.last().unwrap().date, now.date_naive());
    type Day<'a> = (chrono::NaiveDate, u64, Vec<(&'a str, u64)>);
    let busy: Vec<Day> = r
        .timeline
        .iter()
        .filter(|d| d.total > 0)
        .map(|d| (d.date, d.total, d.by_status.iter().map(|(k, v)| (k.as_str(), *v)).collect()))
        .collect();
    assert_eq!(
        busy,
        [
            (day(3).date_naive(), 2, vec![("rolled_back", 1), ("succeeded", 1)]),
            (day(1).date_naive(), 3, vec![("rolled_back", 1), ("succeeded", 2)]),
        ]
    );

    // A long window lists only the days with deployments.
    let r = reg.report(now - Duration::days(400), now).await.unwrap();
    assert_eq!(r.timeline.iter().map(|d| d.total).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(r.failed_gates_by_kind["error rate"], 2);
    }
}

#[tokio::test]
async fn a_file_registry_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/registry.db");
    {
        let reg = Registry::open(&path).await.unwrap();
        let d = reg.create_deployment(&new_deployment(&["edge-1", "edge-2"], DeploymentStatus::Running)).await.unwrap();
        reg.append_event(Some(d.id), "install_started", &serde_json::json!({"agent": "edge-1"})).await.unwrap();
        reg.set_status(d.id, DeploymentStatus::Paused, Some("paused by alice")).await.unwrap();
        let actor = Actor::new("alice", "tui", Role::Admin);
        reg.append_audit(&AuditEntry::new(&actor, "pause d-1", None, AuditResult::Ok, "paused")).await.unwrap();
        reg.sqlite_pool().close().await;
    }
    let reg = Registry::open(&path).await.unwrap();
    let d = reg.deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(d.status, DeploymentStatus::Paused);
    assert_eq!(d.targets.len(), 2);
    assert_eq!(reg.events(d.id).await.unwrap().len(), 1);
    assert_eq!(reg.list_audit(None, 10).await.unwrap().len(), 1);
    let mode: (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(reg.sqlite_pool()).await.unwrap();
    assert_eq!(mode.0, "wal");
    let sync: (i64,) = sqlx::query_as("PRAGMA synchronous").fetch_one(reg.sqlite_pool()).await.unwrap();
    assert_eq!(sync.0, 2, "synchronous = FULL");
    let fk: (i64,) = sqlx::query_as("PRAGMA foreign_keys").fetch_one(reg.sqlite_pool()).await.unwrap();
    assert_eq!(fk.0, 1);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    // Deterministic "random" bytes: a fixed LCG, so a failure reproduces.
    let mut seed: u32 = 0x2545_f491;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        })
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    let err = Registry::open(&path).await.unwrap_err();
    assert!(matches!(err, RegistryError::NotADatabase { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[tokio::test]
async fn a_database_with_a_damaged_body_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.db");
    {
        let reg = Registry::open(&path).await.unwrap();
        reg.create_deployment(&new_deployment(&["edge-1"], DeploymentStatus::Running)).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(reg.sqlite_pool()).await.unwrap();
        reg.sqlite_pool().close().await;
    }
    let mut bytes = std::fs::read(&path).unwrap();
    // Keep the header, wreck every page after the first.
    for b in bytes.iter_mut().skip(4096) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = Registry::open(&path).await.unwrap_err();
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

on_both_backends! {
    /// As two processes (or two servers on one PostgreSQL) would.
    async fn two_registries_on_one_store_admitting_the_same_agents_at_once_admit_one(store: File) {
    let (a, b) = (store.reg.clone(), store.open_again().await);
    for round in 0..5 {
        let agents = ["edge-19", "edge-20", "edge-21"];
        let new = new_deployment(&agents, DeploymentStatus::Running);
        let (x, y) = tokio::join!(a.admit_deployment(&new, None, &[]), b.admit_deployment(&new, None, &[]));
        let (x, y) = (x.unwrap(), y.unwrap());
        let created: Vec<&DeploymentRecord> = [&x, &y]
            .into_iter()
            .filter_map(|r| match r {
                Admission::Created(d) => Some(d),
                _ => None,
            })
            .collect();
        assert_eq!(created.len(), 1, "round {round}: {x:?} / {y:?}");
        let refused = if matches!(x, Admission::Created(_)) { &y } else { &x };
        assert_eq!(
            refused,
            &Admission::Overlap { agents: agents.map(String::from).to_vec(), deployment: created[0].name.clone() }
        );
        a.set_status(created[0].id, DeploymentStatus::Succeeded, None).await.unwrap();
    }
    }
}

on_both_backends! {
    async fn a_rolling_back_deployment_is_unfinished_and_queues_what_overlaps_it(store: Memory) {
    let reg = store.reg.clone();
    let d = reg.create_deployment(&new_deployment(&["edge-1", "edge-2"], DeploymentStatus::Running)).await.unwrap();
    reg.set_status(d.id, DeploymentStatus::RollingBack, Some("returning")).await.unwrap();
    let got = reg.deployment(d.id).await.unwrap().unwrap();
    assert_eq!((got.status, got.finished_at), (DeploymentStatus::RollingBack, None));
    assert_eq!(reg.active_deployments().await.unwrap().len(), 1);
    let events = [("created", serde_json::json!({})), ("planned", serde_json::json!({ "plan": null }))];
    let queued = reg
        .admit_deployment(&new_deployment(&["edge-2", "edge-3"], DeploymentStatus::Running), Some(&queued_row), &events)
        .await
        .unwrap();
    let Admission::Queued { record, behind } = queued else { panic!("{queued:?}") };
    assert_eq!(
        (record.status, record.reason.as_deref(), behind.as_str()),
        (DeploymentStatus::Pending, Some("queued behind d-1"), "d-1")
    );
    let events = reg.events(record.id).await.unwrap();
    let kinds: Vec<String> = events.iter().map(|e| e.kind.clone()).collect();
    assert_eq!(kinds, ["created", "planned", "queued"], "journalled with the deployment, in one transaction");
    assert_eq!(Event::of(&events[2]), Some(Event::Queued { behind: "d-1".into() }), "{:?}", events[2]);
    }
}

/// The orchestrator's `queued` row, as it hands it to the registry.
fn queued_row(behind: &str) -> (String, serde_json::Value) {
    Event::Queued { behind: behind.to_string() }.to_row()
}

#[tokio::test]
async fn the_rolling_back_migration_keeps_every_deployment_target_and_event() {
    // A registry as the previous release left it (migrations 1 and 2 only).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.db");
    {
        let options =
            sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true).foreign_keys(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.migrations =
            std::borrow::Cow::Owned(migrator.migrations.iter().filter(|m| m.version < 3).cloned().collect());
        migrator.run(&pool).await.unwrap();
        let scope = serde_json::to_string(&Scope::region("ap-south")).unwrap();
        let strategy = serde_json::to_string(&Strategy::of(StrategyKind::Rolling)).unwrap();
        for status in ["running", "failed"] {
            sqlx::query(
                "INSERT INTO deployments (extension, version, scope, strategy, status, actor_name, actor_frontend, \
                 utterance, created_at, updated_at) VALUES ('a', '1', ?, ?, ?, 'x', 'y', 'z', 1, 1)",
            )
            .bind(&scope)
            .bind(&strategy)
            .bind(status)
            .execute(&pool)
            .await
            .unwrap();
        }
        for sql in [
            "DELETE FROM deployments WHERE id = 2",
            "INSERT INTO deployment_targets (deployment_id, agent, endpoint, step, state) \
             VALUES (1, 'edge-1', 'http://e', 0, 'installed')",
            "INSERT INTO events (deployment_id, at, kind, data) VALUES (1, 1, 'created', '{}')",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let reg = Registry::open(&path).await.unwrap();
    let d = reg.deployment(1).await.unwrap().unwrap();
    assert_eq!((d.status, d.targets.len()), (DeploymentStatus::Running, 1));
    assert_eq!(reg.events(1).await.unwrap().len(), 1);
    reg.set_status(1, DeploymentStatus::RollingBack, None).await.unwrap();
    // Ids are never handed out twice, even the deleted d-2's.
    let next = reg.create_deployment(&new_deployment(&["edge-9"], DeploymentStatus::Running)).await.unwrap();
    assert_eq!(next.name, "d-3");
    // Targets and events still belong to their deployment.
    sqlx::query("DELETE FROM deployments WHERE id = 1").execute(reg.sqlite_pool()).await.unwrap();
    assert!(reg.events(1).await.unwrap().is_empty());
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deployment_targets WHERE deployment_id = 1")
        .fetch_one(reg.sqlite_pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// Every write path at once from 64 tasks on a multi-thread runtime, half of them
/// through a second registry on the same file (as a test or a second process opens
/// one): none may fail with `database is locked`. SQLite has one write lock per
/// file and its busy handler polls for it, so writers racing through several
/// connections can lose every poll for the whole busy timeout on a loaded machine;
/// a short timeout here stands in for that machine (before writes were queued on
/// the registry's write lock this failed on an idle one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_writers_on_one_file_never_fail_for_contention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.db");
    // A busy timeout a loaded machine's fsyncs would outlast many times over: a write
    // must never need it within one process.
    let busy = std::time::Duration::from_millis(100);
    let (a, b) = (Registry::open_with(&path, busy).await.unwrap(), Registry::open_with(&path, busy).await.unwrap());
    let agents: Vec<String> = (0..64).map(|i| format!("edge-{i}")).collect();
    let names: Vec<&str> = agents.iter().map(String::as_str).collect();
    let d = a.create_deployment(&new_deployment(&names, DeploymentStatus::Running)).await.unwrap();
    let started = std::time::Instant::now();
    let tasks: Vec<_> = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| {
            let (reg, agent) = (if i % 2 == 0 { a.clone() } else { b.clone() }, agent.clone());
            tokio::spawn(async move {
                for round in 0..4 {
                    let data = serde_json::json!({ "agent": agent, "round": round });
                    reg.append_event(None, "agent_action_started", &data).await?;
                    reg.set_target_state(d.id, &agent, TargetState::Installing, Some("draining")).await?;
                    let entry = AuditEntry {
                        at: Utc::now(),
                        actor: "bench".into(),
                        frontend: "bench".into(),
                        role: Role::Admin,
                        utterance: format!("drain {agent}"),
                        operation: None,
                        result: AuditResult::Ok,
                        message: String::new(),
                    };
                    reg.append_audit(&entry).await?;
                    let journal = TargetJournal {
                        agent: &agent,
                        kind: "installed",
                        data,
                        state: TargetState::Installed,
                        detail: None,
                    };
                    reg.journal_targets(d.id, &[journal]).await?;
                    if i % 8 == 0 {
                        let new = new_deployment(&[&format!("other-{i}-{round}")], DeploymentStatus::Succeeded);
                        reg.admit_deployment(&new, None, &[]).await?;
                        reg.create_deployment(&new).await?;
                    }
                }
                Ok::<(), RegistryError>(())
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        t.await.unwrap().unwrap_or_else(|e| panic!("writer {i} failed: {e}"));
    }
    let events = a.recent_events(10_000).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "agent_action_started").count(), 64 * 4);
    assert_eq!(a.list_audit(None, 10_000).await.unwrap().len(), 64 * 4);
    let d = b.deployment(d.id).await.unwrap().unwrap();
    assert!(d.targets.iter().all(|t| t.state == TargetState::Installed), "{:?}", d.targets);
    eprintln!("64 writers x 4 rounds in {:?}", started.elapsed());
}

#[tokio::test]
async fn the_hold_migration_reads_each_reason_once_and_leaves_the_rest_unheld() {
    // A registry as the release before typed holds left it (migrations 1 to 4).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.db");
    let rows = [
        ("pending", "queued behind d-12"),
        ("pending", "Queued behind d-3 (typed by hand)"),
        (
            "paused",
            "held before installing step 2 of 3: 1 already unavailable (edge-4 down) and at most 1 may be at once",
        ),
        ("paused", "waiting for promote to retire blue: green (2 agents) is live"),
        ("paused", "something an older release wrote"),
        ("running", "waiting for promote"),
        ("succeeded", "queued behind d-1"),
    ];
    {
        let options =
            sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true).foreign_keys(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.migrations =
            std::borrow::Cow::Owned(migrator.migrations.iter().filter(|m| m.version < 5).cloned().collect());
        migrator.run(&pool).await.unwrap();
        let scope = serde_json::to_string(&Scope::region("ap-south")).unwrap();
        let strategy = serde_json::to_string(&Strategy::of(StrategyKind::Rolling)).unwrap();
        for (status, reason) in rows {
            sqlx::query(
                "INSERT INTO deployments (extension, version, scope, strategy, status, reason, actor_name, \
                 actor_frontend, utterance, created_at, updated_at) VALUES ('a', '1', ?, ?, ?, ?, 'x', 'y', 'z', 1, 1)",
            )
            .bind(&scope)
            .bind(&strategy)
            .bind(status)
            .bind(reason)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let reg = Registry::open(&path).await.unwrap();
    let mut holds = Vec::new();
    for id in 1..=7 {
        let d = reg.deployment(id).await.unwrap().unwrap();
        assert_eq!(d.reason.as_deref(), Some(rows[(id - 1) as usize].1), "the reason is kept, for people");
        holds.push(d.hold);
    }
    assert_eq!(
        holds,
        [
            Some(Hold::Queued { behind: "d-12".into() }),
            None,
            Some(Hold::Unavailable),
            Some(Hold::Promote),
            Some(Hold::Paused),
            None,
            None,
        ]
    );
    // From now on the hold is written with the status, and lifted with it.
    reg.set_held(1, DeploymentStatus::Paused, &Hold::Inconclusive, "gate inconclusive").await.unwrap();
    assert_eq!(reg.deployment(1).await.unwrap().unwrap().hold, Some(Hold::Inconclusive));
    reg.set_status(1, DeploymentStatus::Running, None).await.unwrap();
    assert_eq!(reg.deployment(1).await.unwrap().unwrap().hold, None);
}

on_both_backends! {
    /// Deployment ids stay `d-<n>`, each handed out once, under inserts racing from
    /// two handles (two servers, on PostgreSQL).
    async fn concurrent_inserts_get_distinct_ids(store: File) {
        let (a, b) = (store.reg.clone(), store.open_again().await);
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let reg = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move {
                    let agent = format!("edge-{i}");
                    reg.create_deployment(&new_deployment(&[&agent], DeploymentStatus::Running)).await.unwrap().name
                })
            })
            .collect();
        let mut names = Vec::new();
        for t in tasks {
            names.push(t.await.unwrap());
        }
        names.sort_by_key(|n| deployment_id_from_name(n));
        let want: Vec<String> = (1..=16).map(deployment_name).collect();
        assert_eq!(names, want);
    }
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_naming_it_without_its_password() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("postgres://parley:hunter2@127.0.0.1:{port}/parley");
    let err = Registry::connect(&Location::parse(&url).unwrap()).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, RegistryError::Connect { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!(
            "could not connect to the registry database postgres://parley:***@127.0.0.1:{port}/parley: "
        )),
        "{text}"
    );
    assert!(!text.contains("hunter2") && !format!("{err:?}").contains("hunter2"), "{text}");
    let bad = Registry::connect(&Location::Postgres("postgres://parley:hunter2@[::1/x".into())).await.unwrap_err();
    assert!(matches!(bad, RegistryError::BadUrl { .. }) && !bad.to_string().contains("hunter2"), "{bad}");
}

on_both_backends! {
    /// A step's journal over more agents than one multi-row statement takes, with
    /// several outcomes: every event in order, every target in its own state and
    /// detail; and one entry for an agent that is no target records nothing at all.
    async fn a_large_steps_journal_is_recorded_whole_in_order_or_not_at_all(store: Memory) {
    let reg = store.reg.clone();
    let names: Vec<String> = (0..1203).map(|i| format!("edge-{i}")).collect();
    let agents: Vec<&str> = names.iter().map(String::as_str).collect();
    let d = reg.create_deployment(&new_deployment(&agents, DeploymentStatus::Running)).await.unwrap();
    let details: Vec<String> = (0..1203).map(|i| format!("install failed: code {i}")).collect();
    let entries: Vec<TargetJournal<'_>> = agents
        .iter()
        .enumerate()
        .map(|(i, agent)| {
            let (kind, state, detail) = match i % 10 {
                3 => ("install_failed", TargetState::Failed, Some(details[i].as_str())),
                7 => ("install_failed", TargetState::Unreachable, Some("no answer in 2 s")),
                _ => ("install_succeeded", TargetState::Installed, None),
            };
            TargetJournal { agent, kind, data: serde_json::json!({ "agent": agent, "i": i }), state, detail }
        })
        .collect();
    reg.journal_targets(d.id, &entries).await.unwrap();
    let events = reg.events(d.id).await.unwrap();
    let order: Vec<u64> = events.iter().filter_map(|e| e.data["i"].as_u64()).collect();
    assert_eq!(order, (0..1203).collect::<Vec<u64>>(), "the journal keeps the entries' order");
    assert_eq!(events.iter().filter(|e| e.kind == "install_failed").count(), 240);
    let got = reg.deployment(d.id).await.unwrap().unwrap();
    for (i, t) in got.targets.iter().enumerate() {
        assert_eq!(t.agent, agents[i]);
        let want = match i % 10 {
            3 => (TargetState::Failed, Some(details[i].clone())),
            7 => (TargetState::Unreachable, Some("no answer in 2 s".to_string())),
            _ => (TargetState::Installed, None),
        };
        assert_eq!((t.state, t.detail.clone()), want, "{}", t.agent);
    }

    // All or nothing: a batch naming one agent that is not a target changes nothing.
    let again: Vec<TargetJournal<'_>> = ["edge-0", "edge-1", "edge-9999"]
        .into_iter()
        .map(|agent| TargetJournal {
            agent,
            kind: "install_started",
            data: serde_json::json!({ "agent": agent }),
            state: TargetState::Installing,
            detail: None,
        })
        .collect();
    assert!(matches!(reg.journal_targets(d.id, &again).await, Err(RegistryError::UnknownDeployment(_))));
    assert_eq!(reg.events(d.id).await.unwrap().len(), 1203, "no event of the refused batch");
    let after = reg.deployment(d.id).await.unwrap().unwrap();
    assert_eq!(after.targets[0].state, TargetState::Installed, "no target of the refused batch moved");
    }
}

on_both_backends! {
    /// `registry migrate` into this store: every row with its id, the next id after
    /// the copied ones, and refusals for a running rollout, a store that holds
    /// something, and the same registry twice.
    async fn a_registry_is_copied_whole_with_its_ids_and_only_into_an_empty_one(store: Memory) {
    let from = Registry::open_in_memory().await.unwrap();
    let d1 = from.create_deployment(&new_deployment(&["edge-1", "edge-2", "edge-3"], DeploymentStatus::Running)).await.unwrap();
    from.append_event(Some(d1.id), "install_started", &serde_json::json!({"agent": "edge-2"})).await.unwrap();
    from.set_target_state(d1.id, "edge-2", TargetState::Failed, Some("exit 3")).await.unwrap();
    from.append_audit(&AuditEntry::new(&Actor::new("ann", "repl", Role::Operator), "roll out", None, AuditResult::Ok, "ok"))
        .await
        .unwrap();

    // A rollout the source still drives is not moved from under it.
    let e = from.copy_into(&store.reg, ("sqlite:a", "b"), |_| {}).await.unwrap_err().to_string();
    assert_eq!(
        e,
        "d-1 still runs in sqlite:a: let it finish (or abort it) before moving the registry, or the copy would miss what happens next"
    );
    from.set_status(d1.id, DeploymentStatus::Failed, Some("install failed")).await.unwrap();
    let d2 = from.create_deployment(&new_deployment(&["edge-9"], DeploymentStatus::Paused)).await.unwrap();

    let mut told = Vec::new();
    let copied = from.copy_into(&store.reg, ("sqlite:a", "b"), |c| told.push(c.table)).await.unwrap();
    let rows: Vec<(&str, u64)> = copied.iter().map(|c| (c.table, c.rows)).collect();
    assert_eq!(
        rows,
        [
            ("deployments", 2),
            ("deployment targets", 4),
            ("journal events", 1),
            ("audit entries", 1),
            ("routing entries", 0),
            ("routing changes", 0),
            ("change freeze", 0),
        ]
    );
    assert_eq!(told.len(), 7);
    let (a, b) = (from.deployment(d1.id).await.unwrap().unwrap(), store.reg.deployment(d1.id).await.unwrap().unwrap());
    assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::to_value(&b).unwrap(), "d-1 is the same record");
    let agents: Vec<&str> = b.targets.iter().map(|t| t.agent.as_str()).collect();
    assert_eq!(agents, ["edge-1", "edge-2", "edge-3"], "targets keep their order");
    assert_eq!(store.reg.deployment(d2.id).await.unwrap().unwrap().status, DeploymentStatus::Paused);
    assert_eq!(store.reg.events(d1.id).await.unwrap().len(), 1);
    // Ids go on after the copied ones.
    let d3 = store.reg.create_deployment(&new_deployment(&["edge-4"], DeploymentStatus::Running)).await.unwrap();
    assert_eq!(d3.name, "d-3");

    let e = from.copy_into(&store.reg, ("sqlite:a", "b"), |_| {}).await.unwrap_err().to_string();
    assert!(e.starts_with("b already holds 3 deployments, 5 deployment targets, 1 journal events, 1 audit entries"), "{e}");
    let e = from.copy_into(&store.reg, ("b", "b"), |_| {}).await.unwrap_err().to_string();
    assert_eq!(e, "the source and the destination are the same registry (b)");
    }
}
