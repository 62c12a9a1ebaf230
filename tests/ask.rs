//! The "done means": `parley ask "roll out auth-filter 2.1.0 to ap-south"`
//! upgrades exactly the 12 ap-south agents, which then report 2.1.0 over HTTP, and
//! `d-1` is in the registry. Here the agents run in a separate process
//! (`parley fleet demo`) so the test can ask each of them directly.
//!
//! These run as a user does on a fresh machine: the first `ask` (or `chat`, `repl`)
//! on a data directory starts its server in the background and the others connect to
//! it; each test's [`Dir`] stops that server before the directory goes.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{demo_region, parley_bin};

/// A `parley` on `data_dir` that auto-starts the data directory's server (the opposite
/// of `common::parley`), which stops by itself 10 s after it is idle should a test
/// end without its [`Dir`] stopping it.
fn parley(data_dir: &std::path::Path) -> Command {
    let mut cmd = common::parley(data_dir);
    cmd.env_remove("PARLEY_IN_PROCESS").env("PARLEY_IDLE_STOP_SECS", "10");
    cmd
}

/// A temporary directory; the servers auto-started on it (or on `data` dirs under
/// it) are stopped with `parley serve stop` before it is removed.
struct Dir {
    tmp: tempfile::TempDir,
    data: Vec<std::path::PathBuf>,
}

fn tempdir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let data = vec![tmp.path().to_path_buf()];
    Dir { tmp, data }
}

impl Dir {
    fn path(&self) -> &std::path::Path {
        self.tmp.path()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        for d in &self.data {
            if d.join("parley.sock").exists() {
                let _ = Command::new(parley_bin())
                    .arg("--data-dir")
                    .arg(d)
                    .args(["serve", "stop"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

struct Fleet(std::process::Child);

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn endpoints(inventory: &str) -> Vec<(String, String)> {
    let doc: toml::Value = toml::from_str(inventory).unwrap();
    doc["agent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap().to_string(), a["endpoint"].as_str().unwrap().to_string()))
        .collect()
}

fn auth_filter_version(endpoint: &str) -> String {
    let out = std::process::Command::new("curl").arg("-sf").arg(format!("{endpoint}/v1/status")).output();
    let body = match out {
        Ok(o) if o.status.success() => o.stdout,
        // Without curl, a tiny blocking HTTP/1.1 GET over a TCP socket does the same.
        _ => raw_get(endpoint, "/v1/status"),
    };
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    status["extensions"].as_array().unwrap().iter().find(|e| e["name"] == "auth-filter").unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string()
}

fn raw_get(endpoint: &str, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    body.as_bytes().to_vec()
}

#[test]
fn ask_rolls_out_to_exactly_the_twelve_ap_south_agents() {
    let mut dir = tempdir();
    let inventory = dir.path().join("fleet.toml");
    let fleet_dir = dir.path().join("fleet-state");
    let fleet = Fleet(
        Command::new(parley_bin())
            .arg("--data-dir")
            .arg(&fleet_dir)
            .args(["fleet", "demo", "--inventory-out"])
            .arg(&inventory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !inventory.exists() {
        assert!(Instant::now() < deadline, "the demo fleet never wrote its inventory");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let agents = endpoints(&std::fs::read_to_string(&inventory).unwrap());
    assert_eq!(agents.len(), 48);

    let parley_dir = dir.path().join("parley");
    dir.data.push(parley_dir.clone());
    let out = parley(&parley_dir)
        .arg("--fleet")
        .arg(&inventory)
        .args(["ask", "--yes", "roll out auth-filter 2.1.0 to ap-south"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Started d-1: auth-filter 2.0.3 (12) -> 2.1.0 on 12 agents in ap-south"), "{stdout}");
    // Through the server that `ask` started, which is still there for the next one.
    assert!(parley_dir.join("parley.sock").exists());
    assert!(stdout.contains("d-1: auth-filter 2.1.0 to ap-south (rolling), succeeded"), "{stdout}");

    let ap_south = demo_region("ap-south");
    for (name, endpoint) in &agents {
        let want = if ap_south.contains(name) { "2.1.0" } else { "2.0.3" };
        assert_eq!(auth_filter_version(endpoint), want, "{name}");
    }

    // d-1 is in the registry: a new process reads it back.
    let out = parley(&parley_dir)
        .arg("--fleet")
        .arg(&inventory)
        .args(["ask", "--json", "show deployment d-1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let turn: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(turn["details"]["status"], "succeeded");
    assert_eq!(turn["details"]["targets"].as_array().unwrap().len(), 12);
    drop(fleet);
}

#[test]
fn ask_exits_non_zero_when_infeasible_or_refused_at_the_prompt() {
    let dir = tempdir();
    let out = parley(dir.path()).args(["ask", "roll out model-server 0.4.0 to eu-west"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("model-server needs gpu"));

    // A risky request answered "no" (here: end of input) changes nothing and fails.
    let out = parley(dir.path()).args(["ask", "drain edge-7"]).stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Cancelled: Drain edge-7. Nothing was changed."));

    let out = parley(dir.path()).args(["ask", "how healthy is eu west?"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("eu-west: 12 agents, 12 healthy."));
}

#[test]
fn parse_prints_the_contract() {
    let dir = tempdir();
    let out = parley(dir.path())
        .args(["parse", "--json", "roll out auth-filter 2.1 to E.U. West as a canary, 10% then 50%"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"operation": {"op": "deploy", "extension": "auth-filter", "version": "2.1.0",
            "scope": ["region:eu-west"], "strategy": {"kind": "canary", "steps": [10, 50]}}, "missing": []})
    );
}

/// `parley` on its own data directory, its output wrapped as for a terminal of
/// `columns` (or, with `None`, as when standard output is not a terminal).
fn parley_at(data_dir: &std::path::Path, columns: Option<&str>) -> Command {
    let mut cmd = parley(data_dir);
    match columns {
        Some(c) => cmd.env("COLUMNS", c),
        None => cmd.env_remove("COLUMNS"),
    };
    cmd
}

/// Runs `cmd` with `input` on standard input.
fn run_with_input(mut cmd: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_prompt_takes_only_the_answers_it_shows() {
    let dir = tempdir();
    // "1" is not y or n: it used to leave the drain unanswered and exit 0.
    let mut cmd = parley_at(dir.path(), None);
    cmd.args(["ask", "drain edge-7"]);
    let out = run_with_input(cmd, "1\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("\"1\" is not an answer: type y to proceed, or n (or just Enter) to cancel."), "{stderr}");
    assert!(stdout.ends_with("Cancelled: Drain edge-7. Nothing was changed.\n"), "{stdout}");
    // The proposal shows no numbered answers the prompt would not take.
    assert!(!stdout.contains("[1] yes"), "{stdout}");

    let mut cmd = parley_at(dir.path(), None);
    cmd.args(["ask", "drain edge-7"]);
    let out = run_with_input(cmd, "Y\n");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("edge-7 is draining"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Every JSON value on `stdout`, in order; panics on anything else.
fn json_documents(stdout: &[u8]) -> Vec<serde_json::Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<serde_json::Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(stdout)))
}

#[test]
fn ask_json_prints_exactly_one_document() {
    let dir = tempdir();
    // Without --yes: the proposal, not carried out, with how to confirm it.
    let out =
        parley_at(dir.path(), None).args(["ask", "--json", "drain edge-7"]).stdin(Stdio::null()).output().unwrap();
    let docs = json_documents(&out.stdout);
    assert_eq!(docs.len(), 1, "{docs:?}");
    let turn = &docs[0];
    assert_eq!(out.status.code(), Some(1), "not executed: {turn}");
    assert_eq!(turn["outcome"], "needs_confirmation", "{turn}");
    assert_eq!(turn["needs_confirmation"], true);
    assert_eq!(turn["operation"], serde_json::json!({"op": "drain", "agent": "edge-7"}));
    assert_eq!(turn["follow_ups"], serde_json::json!([]));
    assert_eq!(turn["hint"], "Not executed: this needs confirmation. Run the same command with --yes to confirm it.");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    // With --yes: the turn that carried it out, and only that.
    let out = parley_at(dir.path(), None).args(["ask", "--json", "--yes", "drain edge-7"]).output().unwrap();
    let docs = json_documents(&out.stdout);
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(out.status.code(), Some(0), "{}", docs[0]);
    assert_eq!(docs[0]["outcome"], "done", "{}", docs[0]);

    // A rollout followed to its end: one document, how it ended.
    let out = parley_at(dir.path(), None)
        .args(["ask", "--json", "--yes", "roll out auth-filter 2.1.0 to ap-south"])
        .output()
        .unwrap();
    let docs = json_documents(&out.stdout);
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(out.status.code(), Some(0), "{}", docs[0]);
    assert_eq!(docs[0]["details"]["status"], "succeeded", "{}", docs[0]);
}

/// Spawns `cmd` with standard output a pipe whose reading end is closed at once,
/// as `| head -1` does once it has its line, and returns how the process ended.
fn with_stdout_closed(mut cmd: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take());
    let mut stdin = child.stdin.take().unwrap();
    // The process may have ended (quietly) before reading all of it.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn assert_quiet_end(what: &str, out: &std::process::Output) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let sigpipe = out.status.signal() == Some(13);
    assert!(out.status.code() == Some(0) || sigpipe, "{what}: {:?}\n{stderr}", out.status);
    assert!(stderr.is_empty(), "{what} printed on stderr:\n{stderr}");
}

#[test]
fn a_closed_stdout_ends_every_text_front_end_quietly() {
    let dir = tempdir();
    let mut ask = parley_at(dir.path(), None);
    ask.args(["ask", "how healthy is eu west?"]);
    assert_quiet_end("ask", &with_stdout_closed(ask, ""));

    let mut chat = parley_at(dir.path(), None);
    chat.args(["chat", "--json"]);
    assert_quiet_end("chat --json", &with_stdout_closed(chat, "how healthy is eu west?\nlist deployments\n"));

    let mut chat = parley_at(dir.path(), None);
    chat.arg("chat");
    assert_quiet_end("chat", &with_stdout_closed(chat, "how healthy is eu west?\n"));

    let mut repl = parley_at(dir.path(), None);
    repl.arg("repl");
    assert_quiet_end("repl", &with_stdout_closed(repl, "how healthy is eu west?\nexit\n"));

    let mut parse = parley_at(dir.path(), None);
    parse.args(["parse", "--json", "drain edge-7"]);
    assert_quiet_end("parse", &with_stdout_closed(parse, ""));

    // A rollout whose output nobody reads any more still runs to its end.
    let mut ask = parley_at(dir.path(), None);
    ask.args(["ask", "--yes", "roll out auth-filter 2.1.0 to ap-south"]);
    assert_quiet_end("ask --yes", &with_stdout_closed(ask, ""));
    let out = parley_at(dir.path(), None).args(["ask", "--json", "show deployment d-1"]).output().unwrap();
    let turn: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(turn["details"]["status"], "succeeded", "{turn}");
}

#[test]
fn text_wraps_to_the_terminal_width() {
    let dir = tempdir();
    let out = parley_at(dir.path(), Some("60")).args(["ask", "deploy model-server 0.4 to eu-west"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "model-server needs gpu, which 10 of the 12 agents in scope\n\
         lack: edge-13, edge-14, edge-15, edge-16, edge-17, edge-18\n\
         and 4 more. Instead you could say: \"roll out model-server\n\
         0.4.0 to the gpu agents in eu-west\".\n\
         \n\
         \x20 [1] roll out model-server 0.4.0 to the gpu agents in\n\
         \x20     eu-west\n"
    );

    // Not a terminal and no $COLUMNS: 80 columns.
    let out = parley_at(dir.path(), None).args(["ask", "deploy model-server 0.4 to eu-west"]).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "model-server needs gpu, which 10 of the 12 agents in scope lack: edge-13,\n\
         edge-14, edge-15, edge-16, edge-17, edge-18 and 4 more. Instead you could say:\n\
         \"roll out model-server 0.4.0 to the gpu agents in eu-west\".\n\
         \n\
         \x20 [1] roll out model-server 0.4.0 to the gpu agents in eu-west\n"
    );
}

#[test]
fn a_long_table_and_its_rule_fit_the_terminal() {
    let dir = tempdir();
    let out = parley_at(dir.path(), Some("60"))
        .args(["ask", "--yes", "roll out auth-filter 2.1.0 to ap-south"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let long: Vec<&str> = stdout.lines().filter(|l| l.chars().count() > 60).collect();
    assert!(long.is_empty(), "lines wider than 60 columns: {long:#?}\n{stdout}");
    let plan = stdout.split("\n\n").find(|b| b.starts_with("  d-1 plan")).unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        plan,
        "  d-1 plan
  Step
  ----------------------------------------------------------
  step 1: 3 agents (3 of 12 agents, 25%): edge-19, edge-20,
    edge-21; bake 50 ms; gate: error rate < 1%, p95 < 500
    ms, cpu < 80%, memory < 85%, against the agents not yet
    upgraded
  step 2: 3 agents (6 of 12 agents, 50%): edge-22, edge-23,
    edge-24; bake 50 ms; gate: error rate < 1%, p95 < 500
    ms, cpu < 80%, memory < 85%, against the agents not yet
    upgraded
  step 3: 3 agents (9 of 12 agents, 75%): core-13, core-14,
    core-15; bake 50 ms; gate: error rate < 1%, p95 < 500
    ms, cpu < 80%, memory < 85%, against the agents not yet
    upgraded
  step 4: 3 agents (12 of 12 agents, 100%): core-16, gpu-7,
    gpu-8; bake 50 ms; gate: error rate < 1%, p95 < 500 ms,
    cpu < 80%, memory < 85%, against the agents not yet
    upgraded"
    );
    // Each rule is as wide as its column, never wider than the table.
    let targets = stdout.split("\n\n").find(|b| b.starts_with("  d-1 targets")).unwrap_or_else(|| panic!("{stdout}"));
    let lines: Vec<&str> = targets.lines().collect();
    assert_eq!(lines[1], "  Agent    Step  Previous  State      Detail");
    assert_eq!(lines[2], "  -------  ----  --------  ---------  ------");
}

/// The demo fleet is a simulation, and replies about its health, installs and
/// rollouts say so once; replies about nothing on the agents (help, a cancellation)
/// do not. (A real agent's replies never do: tests/real_agents.rs.)
#[test]
fn replies_about_the_demo_fleet_say_once_that_it_is_simulated() {
    let dir = tempdir();
    let note = "Simulated fleet: installs and health are simulated.";
    let out = parley(dir.path()).args(["ask", "how healthy is eu west?"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("eu-west: 12 agents, 12 healthy."), "{text}");
    assert_eq!(lines.iter().filter(|l| **l == note).count(), 1, "{text}");

    let mut chat = common::Chat::start(dir.path(), &[]);
    let t = chat.say("how healthy is eu west?");
    assert_eq!(t["simulated"], serde_json::json!({"agents": 48, "of": 48}), "{t}");
    assert!(!t["message"].as_str().unwrap().contains(note), "the note is beside the message, not in it: {t}");
    let t = chat.say("roll out auth-filter 2.1.0 to ap-south");
    assert_eq!(t["outcome"], "needs_confirmation", "{t}");
    assert_eq!(t["simulated"]["agents"], 48, "{t}");
    let t = chat.say("no");
    assert_eq!((t["outcome"].as_str(), t.get("simulated")), (Some("cancelled"), None), "{t}");
    let t = chat.say("help");
    assert_eq!(t.get("simulated"), None, "{t}");
    chat.finish();
}
