//! The process model, as a user meets it on a machine with nothing running: a
//! front-end (`ask`, `repl`) finds no server on the data directory's socket, starts
//! `parley serve` in the background and connects; that server stops by itself once
//! no client is attached and nothing runs for its idle period. Real processes on
//! temporary data directories; every server a test starts is killed by its guard if
//! it is still there at the end.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::parley_bin;

const DEPLOY_AP_SOUTH: &str = "roll out auth-filter 2.1.0 to ap-south as a canary, 25% then 50%";

/// A `parley` on `dir` as a user runs it: no server named, no opt-out, and the
/// auto-started server's idle period `idle` seconds.
fn parley(dir: &Path, bake: &str, idle: u64) -> Command {
    let mut cmd = Command::new(parley_bin());
    cmd.arg("--data-dir").arg(dir).arg("--bake-secs").arg(bake);
    cmd.env_remove("PARLEY_AGENT_TOKEN")
        .env_remove("PARLEY_SERVER")
        .env_remove("PARLEY_TOKEN")
        .env_remove("PARLEY_IN_PROCESS")
        .env("PARLEY_IDLE_STOP_SECS", idle.to_string());
    cmd
}

/// Kills, at the end of a test however it ends, every server process on its data
/// directory that is still there.
struct Guard(PathBuf);

impl Drop for Guard {
    fn drop(&mut self) {
        for pid in servers_of(&self.0) {
            // SAFETY: kill(2) on a pid whose command line names this test's own data directory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Whether `pid` is a live process (a zombie nobody reaped yet is not).
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').map(|(_, rest)| rest.trim_start()).is_some_and(|r| !r.starts_with('Z')),
        Err(_) => false,
    }
}

/// The live `parley ... serve` processes whose command line names `dir`.
fn servers_of(dir: &Path) -> Vec<i32> {
    let want = dir.to_string_lossy().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = raw.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).to_string()).collect();
        if args.iter().any(|a| a == "serve") && args.contains(&want) && running(pid) {
            out.push(pid);
        }
    }
    out
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("spawn parley")
}

fn wait_output(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a parley client did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn ask(dir: &Path, bake: &str, idle: u64, args: &[&str]) -> Output {
    let mut cmd = parley(dir, bake, idle);
    cmd.arg("ask").args(args);
    wait_output(spawn(cmd), Duration::from_secs(120))
}

/// `parley serve status --json`; `None` when no server answers.
fn status(dir: &Path) -> Option<Value> {
    let out = Command::new(parley_bin())
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "status", "--json"])
        .env_remove("PARLEY_SERVER")
        .output()
        .unwrap();
    out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// A GET over the data directory's socket: status and JSON body (0 when it does not answer).
fn get(dir: &Path, path: &str) -> (u16, Value) {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(dir.join("parley.sock")) else {
        return (0, Value::Null);
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let raw = text(&buf);
    let code = raw.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn installed(d: &Value) -> usize {
    d["targets"].as_array().map_or(0, |t| t.iter().filter(|t| t["state"] == "installed").count())
}

/// Until `name` runs with at least one agent installed.
fn wait_mid_way(dir: &Path, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, d) = get(dir, &format!("/v1/deployments/{name}"));
        if code == 200 && d["status"] == "running" && installed(&d) > 0 {
            return d;
        }
        assert!(Instant::now() < deadline, "{name} never got under way: {d}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Until the server `pid` is gone and its socket file with it.
fn wait_stopped(dir: &Path, pid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while running(pid) || dir.join("parley.sock").exists() {
        assert!(Instant::now() < deadline, "the auto-started server {pid} did not stop by itself within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pid_of(status: &Value) -> i32 {
    i32::try_from(status["pid"].as_i64().unwrap()).unwrap()
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with a pid this test spawned and still holds.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

fn journal_kinds(dir: &Path, name: &str) -> Vec<String> {
    let (code, journal) = get(dir, &format!("/v1/deployments/{name}/journal"));
    assert_eq!(code, 200, "{journal}");
    journal["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str().map(str::to_string)).collect()
}

#[test]
fn ask_with_nothing_running_starts_a_server_that_stays_then_stops_by_itself_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = Guard(dir.path().to_path_buf());
    // The idle period from the config file this time (the other tests use the
    // environment).
    let config = dir.path().join("parley.toml");
    std::fs::write(&config, "[server]\nidle_stop_secs = 4\n").unwrap();
    let mut cmd = parley(dir.path(), "0.05", 1);
    cmd.env_remove("PARLEY_IDLE_STOP_SECS").arg("--config").arg(&config).args(["ask", "how healthy is eu-west?"]);
    let out = wait_output(spawn(cmd), Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).starts_with("eu-west: 12 agents, 12 healthy."), "{}", text(&out.stdout));
    // Said on a terminal only: a script's standard error stays its own.
    assert_eq!(text(&out.stderr), "");

    // The server is still there after the client left, and says what kind it is.
    let s = status(dir.path()).expect("the auto-started server answers after the client left");
    assert_eq!(s["autostarted"], true, "{s}");
    assert_eq!(s["idle_stop_secs"], 4, "{s}");
    assert!(s["idle_stop_at"].is_string(), "{s}");
    assert_eq!(s["kept_by"], Value::Null, "{s}");
    let pid = pid_of(&s);
    assert!(running(pid));
    assert_eq!(servers_of(dir.path()), vec![pid]);
    let shown =
        Command::new(parley_bin()).arg("--data-dir").arg(dir.path()).args(["serve", "status"]).output().unwrap();
    let shown = text(&shown.stdout);
    assert!(
        shown.lines().nth(1).is_some_and(|l| l.starts_with("started by a client: stops by itself at ")
            && l.ends_with(" unless a client or a rollout comes (4 s idle)")),
        "{shown}"
    );

    // With no client and nothing running, it stops by itself, in order.
    wait_stopped(dir.path(), pid, Duration::from_secs(60));
    assert!(status(dir.path()).is_none());
    let log = std::fs::read_to_string(dir.path().join("logs/parley.log")).unwrap();
    assert!(log.contains("no client and nothing running for the idle period: stopping"), "{log}");
    assert!(log.contains("parley serve: stopped"), "the server's own stderr goes to the log: {log}");
}

#[test]
fn two_asks_started_at_once_on_an_empty_data_dir_end_with_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = Guard(dir.path().to_path_buf());
    let spawn_one = || {
        let mut cmd = parley(dir.path(), "0.05", 30);
        cmd.args(["ask", "how healthy is eu-west?"]);
        spawn(cmd)
    };
    let (a, b) = (spawn_one(), spawn_one());
    for out in [wait_output(a, Duration::from_secs(120)), wait_output(b, Duration::from_secs(120))] {
        assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).starts_with("eu-west: 12 agents, 12 healthy."), "{}", text(&out.stdout));
    }
    let s = status(dir.path()).expect("a server answers");
    assert_eq!(servers_of(dir.path()), vec![pid_of(&s)], "exactly one server");
    let log = std::fs::read_to_string(dir.path().join("logs/parley.log")).unwrap();
    assert_eq!(log.matches("started a Parley server in the background").count(), 1, "{log}");
}

#[test]
fn a_stale_socket_of_a_killed_server_is_replaced_by_a_new_server_on_the_next_ask() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = Guard(dir.path().to_path_buf());
    let first = ask(dir.path(), "0.05", 30, &["how healthy is eu-west?"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let old = pid_of(&status(dir.path()).unwrap());
    // SAFETY: kill(2) on the server this test's `ask` started (its pid from its own status).
    assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while running(old) {
        assert!(Instant::now() < deadline, "the killed server is still there");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(dir.path().join("parley.sock").exists(), "a killed server leaves its socket file behind");

    let second = ask(dir.path(), "0.05", 30, &["how healthy is eu-west?"]);
    assert_eq!(second.status.code(), Some(0), "{}{}", text(&second.stdout), text(&second.stderr));
    assert!(text(&second.stdout).starts_with("eu-west: 12 agents, 12 healthy."), "{}", text(&second.stdout));
    let new = pid_of(&status(dir.path()).expect("the new server answers"));
    assert_ne!(new, old);
    assert_eq!(servers_of(dir.path()), vec![new]);
}

#[test]
fn a_one_shot_ask_while_the_server_drives_a_rollout_does_not_mark_it_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = Guard(dir.path().to_path_buf());
    let mut cmd = parley(dir.path(), "0.8", 30);
    cmd.args(["ask", "--yes", "--json", DEPLOY_AP_SOUTH]);
    let follower = spawn(cmd);
    wait_mid_way(dir.path(), "d-1");

    // A second client process on the same data directory, auto-connecting.
    let health = ask(dir.path(), "0.8", 30, &["how healthy is eu-west?"]);
    assert_eq!(health.status.code(), Some(0), "{}{}", text(&health.stdout), text(&health.stderr));
    assert!(text(&health.stdout).starts_with("eu-west: 12 agents, 12 healthy."), "{}", text(&health.stdout));
    assert!(!text(&health.stdout).contains("interrupted"), "{}", text(&health.stdout));
    let (_, d1) = get(dir.path(), "/v1/deployments/d-1");
    assert_eq!(d1["status"], "running", "{d1}");
    // It connected to the running server: one start in the log, one server.
    let log = std::fs::read_to_string(dir.path().join("logs/parley.log")).unwrap();
    assert_eq!(log.matches("started a Parley server in the background").count(), 1, "{log}");
    assert_eq!(servers_of(dir.path()).len(), 1);

    // The rollout goes on to its end, followed by the first client.
    let followed = wait_output(follower, Duration::from_secs(120));
    assert_eq!(followed.status.code(), Some(0), "{}{}", text(&followed.stdout), text(&followed.stderr));
    let doc: Value = serde_json::from_slice(&followed.stdout).unwrap();
    assert_eq!(doc["details"]["status"], "succeeded", "{doc}");
    let kinds = journal_kinds(dir.path(), "d-1");
    assert!(!kinds.iter().any(|k| k == "interrupted" || k == "paused"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("succeeded"), "{kinds:?}");
}

#[test]
fn ctrl_c_detaches_ask_and_the_server_stays_while_the_rollout_runs_and_stops_after() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = Guard(dir.path().to_path_buf());
    let idle = 2;
    // Three steps of 2 s bakes: the rollout outlasts the idle period after the detach.
    let mut cmd = parley(dir.path(), "2.0", idle);
    cmd.args(["ask", "--yes", DEPLOY_AP_SOUTH]);
    let follower = spawn(cmd);
    wait_mid_way(dir.path(), "d-1");
    let pid = pid_of(&status(dir.path()).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    signal(&follower, libc::SIGINT);
    let out = wait_output(follower, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(130), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "Detached from d-1: it keeps running on the server. See how it ends with: parley ask \"show deployment d-1\""
        ),
        "{}",
        text(&out.stderr)
    );

    // Looked at less often than the idle period, so that no request of ours keeps
    // the server up: the running rollout alone must.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut looks = 0;
    loop {
        std::thread::sleep(Duration::from_secs(idle + 1));
        assert!(running(pid), "the server stopped while d-1 still ran (after {looks} looks)");
        let (code, d1) = get(dir.path(), "/v1/deployments/d-1");
        assert_eq!(code, 200, "{d1}");
        looks += 1;
        if d1["status"] == "succeeded" {
            break;
        }
        assert_eq!(d1["status"], "running", "{d1}");
        assert!(Instant::now() < deadline, "d-1 never ended: {d1}");
    }
    assert!(looks >= 2, "the rollout ended before it outlasted an idle period; the check proves nothing");
    // Nothing running, no client: it stops by itself.
    wait_stopped(dir.path(), pid, Duration::from_secs(60));
}

#[test]
fn exit_from_the_repl_while_a_rollout_runs_says_it_keeps_running_in_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = Guard(dir.path().to_path_buf());
    let mut cmd = parley(dir.path(), "1.5", 30);
    cmd.arg("repl").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut repl = cmd.spawn().unwrap();
    let mut stdin = repl.stdin.take().unwrap();
    writeln!(stdin, "{DEPLOY_AP_SOUTH}").unwrap();
    writeln!(stdin, "yes").unwrap();
    stdin.flush().unwrap();
    wait_mid_way(dir.path(), "d-1");
    writeln!(stdin, "exit").unwrap();
    drop(stdin);
    let out = wait_output(repl, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("Parley on 48 agents in 4 regions."), "{stdout}");
    assert!(stdout.contains("Started d-1"), "{stdout}");
    let last = stdout.lines().last().unwrap_or("");
    let socket = dir.path().join("parley.sock");
    assert!(last.starts_with("d-1 (auth-filter 2.1.0 → ap-south, step "), "{stdout}");
    assert!(
        last.ends_with(&format!(
            " keeps running in the Parley server at unix:{}; follow it with: parley ask \"show d-1\"",
            socket.display()
        )),
        "{stdout}"
    );
    // The REPL returned at once: the rollout is still the server's to finish.
    let (_, d1) = get(dir.path(), "/v1/deployments/d-1");
    assert_eq!(d1["status"], "running", "{d1}");
    let (_, list) = get(dir.path(), "/v1/deployments");
    assert_eq!(list["deployments"][0]["frontend"], "repl", "{list}");
}

#[test]
fn a_rollout_aborted_from_another_client_ends_the_follow_of_ask() {
    let dir = tempfile::tempdir().unwrap();
    let _guard = Guard(dir.path().to_path_buf());
    let mut cmd = parley(dir.path(), "1.5", 30);
    cmd.args(["ask", "--yes", "--json", DEPLOY_AP_SOUTH]);
    let follower = spawn(cmd);
    wait_mid_way(dir.path(), "d-1");
    let abort = ask(dir.path(), "1.5", 30, &["--yes", "abort d-1"]);
    assert_eq!(abort.status.code(), Some(0), "{}{}", text(&abort.stdout), text(&abort.stderr));
    // The follower sees the end someone else made, and says how it ended (not succeeded: exit 1).
    let followed = wait_output(follower, Duration::from_secs(90));
    assert_eq!(followed.status.code(), Some(1), "{}{}", text(&followed.stdout), text(&followed.stderr));
    let doc: Value = serde_json::from_slice(&followed.stdout).unwrap();
    assert_eq!(doc["deployment"], "d-1", "{doc}");
    let end = doc["details"]["status"].as_str().unwrap_or("").to_string();
    assert!(["aborted", "rolled_back"].contains(&end.as_str()), "{doc}");
}
