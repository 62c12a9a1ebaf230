//! `parley registry migrate`, the real binary: a single user's SQLite history
//! (rollouts made by `parley ask` on the demo fleet) moved into a real PostgreSQL (a
//! throwaway cluster, tests/common/postgres.rs), read back there exactly as it read
//! before, continued there with the next id, and copied back out to a file.

mod common;
#[path = "common/postgres.rs"]
mod pg;

use std::path::Path;
use std::process::Output;

use serde_json::Value;

fn run(data: &Path, args: &[&str]) -> Output {
    common::parley(data).args(args).output().expect("running parley")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ask --json QUESTION` on the registry `db` (a path or a URL).
fn ask(data: &Path, db: &str, question: &str) -> Value {
    let out = run(data, &["--db", db, "ask", "--yes", "--json", question]);
    serde_json::from_str(&ok(&out)).expect("ask --json prints one JSON document")
}

#[test]
fn a_sqlite_history_moves_to_postgres_reads_the_same_there_and_goes_on_with_the_next_id() {
    let Some(database) = pg::database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (data, team) = (dir.path().join("data"), dir.path().join("team"));
    let file = data.join("parley.db");
    std::fs::create_dir_all(&data).unwrap();
    let sqlite = file.to_str().unwrap();

    // A single user's history: two rollouts followed to their end, one question.
    let d1 = ask(&data, sqlite, "roll out auth-filter 2.1.0 to ap-south");
    assert_eq!(d1["deployment"], "d-1", "{d1}");
    let d2 = ask(&data, sqlite, "roll out rate-limiter 1.1.0 to eu-west in batches of 4");
    assert_eq!(d2["deployment"], "d-2", "{d2}");
    ask(&data, sqlite, "how healthy is ap-south?");
    let before: Vec<Value> = ["show deployment d-1", "show deployment d-2", "list deployments"]
        .iter()
        .map(|q| ask(&data, sqlite, q)["message"].clone())
        .collect();

    let out =
        run(&data, &["registry", "migrate", "--from", &format!("sqlite:{sqlite}"), "--to", &database.url, "--json"]);
    let copied: Value = serde_json::from_str(&ok(&out)).expect("migrate --json");
    let rows = |table: &str| {
        copied["tables"].as_array().unwrap().iter().find(|t| t["table"] == table).map(|t| t["rows"].as_u64().unwrap())
    };
    assert_eq!(rows("deployments"), Some(2), "{copied}");
    assert_eq!(rows("deployment targets"), Some(24), "{copied}");
    assert!(rows("journal events").unwrap() > 24, "{copied}");
    // Every `ask` above was audited (the question, each proposal and its start, the shows).
    assert!(rows("audit entries").unwrap() >= 6, "{copied}");

    // The team's server reads it as the user's did.
    std::fs::create_dir_all(&team).unwrap();
    let after: Vec<Value> = ["show deployment d-1", "show deployment d-2", "list deployments"]
        .iter()
        .map(|q| ask(&team, &database.url, q)["message"].clone())
        .collect();
    assert_eq!(after, before);
    let d3 = ask(&team, &database.url, "roll out auth-filter 2.1.0 to eu-west");
    assert_eq!(d3["deployment"], "d-3", "ids go on after the copied ones: {d3}");

    // The database now holds a history: a second copy into it is refused, and says why.
    let again = run(&data, &["registry", "migrate", "--from", sqlite, "--to", &database.url]);
    assert_eq!(again.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains(" already holds 3 deployments, "), "{stderr}");
    assert!(stderr.contains("migrate into an empty registry"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // And out again to a file, as a backup: it reads the same, d-3 included.
    let back = dir.path().join("backup.db");
    let out = run(&data, &["registry", "migrate", "--from", &database.url, "--to", back.to_str().unwrap()]);
    let text = ok(&out);
    assert!(text.contains(&format!("\n  {:<18}  {:>7}\n", "deployments", 3)), "{text}");
    assert!(
        text.ends_with("Every table has as many rows as its source. Point Parley at it with --db or [registry] url.\n")
    );
    let shown = ask(&team, back.to_str().unwrap(), "show deployment d-1");
    assert_eq!(shown["message"], before[0]);

    // Nothing is made of a source that is not there, and an existing file is not overwritten.
    let missing =
        run(&data, &["registry", "migrate", "--from", "/nonexistent/parley.db", "--to", &database.url_of("x")]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no registry at /nonexistent/parley.db"));
    let exists = run(&data, &["registry", "migrate", "--from", &database.url, "--to", back.to_str().unwrap()]);
    assert_eq!(exists.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&exists.stderr).contains("exists already"));
}
