//! `parley serve` and its clients, as operators use them: the real binary as a
//! server on a temporary data directory (its demo fleet inside it, a Unix socket and
//! TCP on port 0), `parley ask` processes as clients, and plain HTTP for what a
//! script or dashboard reads. See docs/api.md.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::parley_bin;

const OPERATOR_TOKEN: &str = "operator-token-4f1c9a7e2b";
const VIEWER_TOKEN: &str = "viewer-token-8d3e6b0a51";

/// A `parley` command on `dir` with rollout steps that bake long enough to act on
/// a rollout mid-way, and no server selected by the environment.
fn parley(dir: &Path, bake: &str) -> Command {
    let mut cmd = Command::new(parley_bin());
    cmd.arg("--data-dir").arg(dir).arg("--bake-secs").arg(bake);
    cmd.env_remove("PARLEY_AGENT_TOKEN").env_remove("PARLEY_SERVER").env_remove("PARLEY_TOKEN");
    cmd
}

fn write_tokens(dir: &Path, mode: u32) -> PathBuf {
    let path = dir.join(format!("tokens-{mode:o}"));
    std::fs::write(&path, format!("# TOKEN USER ROLE\n{OPERATOR_TOKEN} alice operator\n{VIEWER_TOKEN} wall viewer\n"))
        .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

struct Server {
    child: Child,
    /// `127.0.0.1:PORT` when it listens on TCP.
    tcp: Option<String>,
    dir: PathBuf,
    _stderr: Receiver<String>,
}

impl Server {
    /// Starts `parley serve` with `args` and waits for its "listening" line.
    fn start(dir: &Path, bake: &str, args: &[&str]) -> Server {
        let mut cmd = parley(dir, bake);
        cmd.arg("serve").args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn parley serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(90)).expect("parley serve printed nothing within 90 s");
        let socket = dir.join("parley.sock");
        assert!(
            line.starts_with(&format!("parley serve: listening on unix:{}", socket.display())),
            "unexpected first line: {line}"
        );
        let tcp = line.split(" and http://").nth(1).map(str::to_string);
        Server { child, tcp, dir: dir.to_path_buf(), _stderr: rx }
    }

    fn tcp_url(&self) -> String {
        format!("http://{}", self.tcp.as_ref().expect("listening on TCP"))
    }

    /// A GET over the Unix socket (the local user, an admin): status and JSON body.
    fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = unix_request(&self.dir.join("parley.sock"), "GET", path, None);
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn deployment(&self, name: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/deployments/{name}"));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until `name` exists with a status in `want`.
    fn wait_status(&self, name: &str, want: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(&format!("/v1/deployments/{name}"));
            if status == 200 && want.iter().any(|w| body["status"] == *w) {
                return body;
            }
            assert!(Instant::now() < deadline, "{name} never reached {want:?}: {body}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `name` has at least one agent installed and is still running.
    fn wait_mid_way(&self, name: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, body) = self.get(&format!("/v1/deployments/{name}"));
            let installed =
                body["targets"].as_array().map_or(0, |t| t.iter().filter(|t| t["state"] == "installed").count());
            if status == 200 && body["status"] == "running" && installed > 0 {
                return body;
            }
            assert!(Instant::now() < deadline, "{name} never got under way: {body}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// HTTP/1.1 over a Unix socket, one request per connection.
fn unix_request(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw_request(&mut s, "localhost", method, path, body, None)
}

fn tcp_request(addr: &str, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    raw_request(&mut s, addr, method, path, body, token)
}

fn raw_request<S: Read + Write>(
    s: &mut S,
    host: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, String) {
    let body = body.unwrap_or("");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A client `ask` in the background.
fn spawn_ask(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Child {
    let mut cmd = parley(dir, "0.05");
    cmd.arg("ask").args(args).envs(env.iter().copied());
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("spawn parley ask")
}

fn run_ask(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    wait_output(spawn_ask(dir, env, args), Duration::from_secs(90))
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

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The one JSON document `ask --json` printed.
fn one_json(o: &Output) -> Value {
    let text = stdout(o);
    let mut docs = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    let first = docs.next().unwrap_or_else(|| panic!("no JSON in {text:?}")).unwrap();
    assert!(docs.next().is_none(), "more than one JSON document: {text}");
    first
}

fn signal(child: &Child, sig: i32) {
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: kill(2) with a pid this test spawned and still holds.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

fn auth_filter_version(endpoint: &str) -> String {
    let addr = endpoint.trim_start_matches("http://");
    let (status, body) = tcp_request(addr, "GET", "/v1/status", None, None);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["extensions"].as_array().unwrap().iter().find(|e| e["name"] == "auth-filter").unwrap()["version"]
        .as_str()
        .unwrap()
        .to_string()
}

const DEPLOY_AP_SOUTH: &str = "roll out auth-filter 2.1.0 to ap-south as a canary, 25% then 50%";

#[test]
fn a_rollout_started_from_one_client_is_paused_from_another_and_followed_to_success_by_a_third() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path(), 0o600);
    let server = Server::start(dir.path(), "1.0", &["--listen", "127.0.0.1:0", "--tokens", tokens.to_str().unwrap()]);
    let tcp = server.tcp_url();
    let alice = [("PARLEY_SERVER", tcp.as_str()), ("PARLEY_TOKEN", OPERATOR_TOKEN)];

    // Client 1 (alice over TCP) starts the rollout and follows it.
    let starter = spawn_ask(dir.path(), &alice, &["--yes", "--json", DEPLOY_AP_SOUTH]);
    server.wait_mid_way("d-1");

    // Client 2 (the local user on the socket, found by itself) pauses it.
    let paused = run_ask(dir.path(), &[], &["pause d-1"]);
    assert_eq!(paused.status.code(), Some(0), "{}{}", stdout(&paused), stderr(&paused));
    assert!(stdout(&paused).starts_with("Paused d-1: auth-filter 2.1.0 to ap-south"), "{}", stdout(&paused));
    let held = server.wait_status("d-1", &["paused"], Duration::from_secs(5));
    // The rollout the server drives obeys: nothing more is installed while paused.
    let installed = |d: &Value| d["targets"].as_array().unwrap().iter().filter(|t| t["state"] == "installed").count();
    std::thread::sleep(Duration::from_millis(1500));
    let still = server.deployment("d-1");
    assert_eq!(still["status"], "paused");
    assert_eq!(installed(&still), installed(&held), "agents were installed while paused");

    // Client 3 (alice again, a new process mid-way) resumes it and follows it to the end.
    let resumer = run_ask(dir.path(), &alice, &["--yes", "--json", "resume d-1"]);
    assert_eq!(resumer.status.code(), Some(0), "{}{}", stdout(&resumer), stderr(&resumer));
    let end = one_json(&resumer);
    assert_eq!(end["operation"]["op"], "show_deployment");
    assert_eq!(end["details"]["status"], "succeeded");

    // Client 1 saw the same end, through the pause it did not make.
    let first = wait_output(starter, Duration::from_secs(60));
    assert_eq!(first.status.code(), Some(0), "{}{}", stdout(&first), stderr(&first));
    let doc = one_json(&first);
    assert_eq!(doc["deployment"], "d-1");
    assert_eq!(doc["details"]["status"], "succeeded");
    assert_eq!(doc["details"]["targets"].as_array().unwrap().len(), 12);

    // The agents report the new version over HTTP; the others are untouched.
    let (_, fleet) = server.get("/v1/fleet");
    let agents = fleet["agents"].as_array().unwrap();
    assert_eq!(agents.len(), 48);
    for a in agents {
        let want = if a["region"] == "ap-south" { "2.1.0" } else { "2.0.3" };
        assert_eq!(auth_filter_version(a["endpoint"].as_str().unwrap()), want, "{}", a["name"]);
    }

    // One deployment in the registry, with one owner: who started it.
    let (_, list) = server.get("/v1/deployments");
    let list = list["deployments"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "d-1");
    assert_eq!(list[0]["actor"], "alice");
    assert_eq!(list[0]["frontend"], "ask");

    // Every mutation is in the audit log with its user and front-end.
    let (_, audit) = server.get("/v1/audit?since=1h");
    let entries = audit["entries"].as_array().unwrap();
    let did = |op: &str| -> Vec<(String, String)> {
        entries
            .iter()
            .filter(|e| e["operation"]["op"] == op && e["result"] == "ok")
            .map(|e| (e["actor"].as_str().unwrap().to_string(), e["frontend"].as_str().unwrap().to_string()))
            .collect()
    };
    let local = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "operator".into());
    assert_eq!(did("deploy"), vec![("alice".to_string(), "ask".to_string())]);
    assert_eq!(did("pause"), vec![(local, "ask".to_string())]);
    assert_eq!(did("resume"), vec![("alice".to_string(), "ask".to_string())]);

    // The journal, as scripts read it.
    let (_, journal) = server.get("/v1/deployments/d-1/journal");
    let kinds: Vec<&str> = journal["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["created", "planned", "paused", "resumed", "succeeded"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    assert!(!kinds.contains(&"interrupted"), "{kinds:?}");

    // Parley's own metrics, for a Prometheus with the viewer's token.
    let addr = server.tcp.clone().unwrap();
    let (status, metrics) = tcp_request(&addr, "GET", "/metrics", None, Some(VIEWER_TOKEN));
    assert_eq!(status, 200);
    for line in [
        "parley_rollouts_total{outcome=\"succeeded\"} 1",
        "parley_agents{state=\"healthy\"} 48",
        "parley_gate_results_total{result=\"failed\"} 0",
        "parley_api_requests_total{route=\"/v1/turn\",status=\"200\"}",
        "parley_turn_duration_seconds_count",
        "parley_poll_pass_duration_seconds ",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
    let (status, body) = tcp_request(&addr, "GET", "/healthz", None, None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[test]
fn killing_an_ask_client_mid_rollout_leaves_the_rollout_running_on_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), "0.6", &[]);

    // SIGINT: the client detaches, saying so, with exit code 130.
    let first = spawn_ask(dir.path(), &[], &["--yes", DEPLOY_AP_SOUTH]);
    server.wait_mid_way("d-1");
    // The client follows through the event stream by now (it subscribed before the
    // first install); a moment more so the signal surely finds it following.
    std::thread::sleep(Duration::from_millis(300));
    signal(&first, libc::SIGINT);
    let first = wait_output(first, Duration::from_secs(20));
    assert_eq!(first.status.code(), Some(130), "{}{}", stdout(&first), stderr(&first));
    assert!(
        stderr(&first).contains(
            "Detached from d-1: it keeps running on the server. See how it ends with: parley ask \"show deployment d-1\""
        ),
        "{}",
        stderr(&first)
    );

    // An `ask` started while the server drives d-1 is a client: it marks nothing interrupted.
    let look = run_ask(dir.path(), &[], &["--json", "show deployment d-1"]);
    assert_eq!(look.status.code(), Some(0), "{}", stderr(&look));
    let look = one_json(&look);
    assert!(["running", "succeeded"].contains(&look["details"]["status"].as_str().unwrap()), "{look}");
    assert!(!look["message"].as_str().unwrap().contains("interrupted"), "{look}");

    // SIGKILL of a second client: its rollout (another region) goes on too.
    let second = spawn_ask(dir.path(), &[], &["--yes", "roll out rate-limiter 1.1.0 to eu-west in batches of 4"]);
    server.wait_mid_way("d-2");
    signal(&second, libc::SIGKILL);
    let _ = wait_output(second, Duration::from_secs(10));

    for id in ["d-1", "d-2"] {
        server.wait_status(id, &["succeeded"], Duration::from_secs(90));
        let shown = run_ask(dir.path(), &[], &["--json", &format!("show deployment {id}")]);
        assert_eq!(shown.status.code(), Some(0), "{}", stderr(&shown));
        let shown = one_json(&shown);
        assert_eq!(shown["details"]["status"], "succeeded");
        let message = shown["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{id}: ")) && message.contains(", succeeded after "), "{message}");
    }
    let (_, d1) = server.get("/v1/deployments/d-1/journal");
    let kinds: Vec<&str> = d1["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(!kinds.contains(&"interrupted") && !kinds.contains(&"paused"), "{kinds:?}");
}

#[test]
fn unauthenticated_viewer_and_world_readable_tokens_are_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path(), 0o600);
    let server = Server::start(dir.path(), "0.05", &["--listen", "127.0.0.1:0", "--tokens", tokens.to_str().unwrap()]);
    let addr = server.tcp.clone().unwrap();
    let turn = format!(r#"{{"session":"s1","utterance":"{DEPLOY_AP_SOUTH}"}}"#);

    // No token.
    let (status, body) = tcp_request(&addr, "POST", "/v1/turn", Some(&turn), None);
    assert_eq!(status, 401);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["error"],
        "this request has no token: send `Authorization: Bearer TOKEN` (clients: set PARLEY_TOKEN to a token from the server's tokens file)"
    );
    // A token that is not in the file.
    let (status, body) = tcp_request(&addr, "POST", "/v1/turn", Some(&turn), Some("guessed-token-123456789"));
    assert_eq!(status, 401, "{body}");
    // The client says the same, and fails.
    let tcp = server.tcp_url();
    let anonymous = run_ask(dir.path(), &[("PARLEY_SERVER", tcp.as_str())], &["--yes", DEPLOY_AP_SOUTH]);
    assert_eq!(anonymous.status.code(), Some(2));
    assert!(
        stderr(&anonymous).contains("the Parley server refused: this request has no token"),
        "{}",
        stderr(&anonymous)
    );

    // A viewer may look but not deploy; the refusal names the role needed.
    let wall = [("PARLEY_SERVER", tcp.as_str()), ("PARLEY_TOKEN", VIEWER_TOKEN)];
    let refused = run_ask(dir.path(), &wall, &["--yes", DEPLOY_AP_SOUTH]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(stdout(&refused).starts_with("deploy needs the operator role"), "{}", stdout(&refused));
    assert!(stdout(&refused).contains("wall is a viewer."), "{}", stdout(&refused));
    let looked = run_ask(dir.path(), &wall, &["how healthy is ap-south?"]);
    assert_eq!(looked.status.code(), Some(0), "{}", stdout(&looked));
    // A viewer may not stop the server either.
    let (status, body) = tcp_request(&addr, "POST", "/v1/stop", None, Some(VIEWER_TOKEN));
    assert_eq!(status, 403);
    assert!(body.contains("stopping the server needs the admin role; wall is a viewer"), "{body}");

    // Nothing changed: no deployment, every agent on its old version.
    let (_, list) = server.get("/v1/deployments");
    assert_eq!(list["deployments"], serde_json::json!([]));
    let (_, fleet) = server.get("/v1/fleet");
    for a in fleet["agents"].as_array().unwrap() {
        assert_eq!(auth_filter_version(a["endpoint"].as_str().unwrap()), "2.0.3");
    }
    drop(server);

    // A tokens file others may read: the server does not start.
    let other = tempfile::tempdir().unwrap();
    let open = write_tokens(other.path(), 0o644);
    let out = wait_output(
        {
            let mut cmd = parley(other.path(), "0.05");
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--tokens", open.to_str().unwrap()]);
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "error: the tokens file {p} has mode 0644; it holds secrets, so only its owner may read it: chmod 600 {p}",
            p = open.display()
        )
    );
    assert!(!other.path().join("parley.sock").exists());
    assert!(!other.path().join("parley.db").exists());
}

#[test]
fn an_orderly_stop_suspends_a_rollout_and_the_next_start_carries_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), "1.0", &["--grace-secs", "10"]);
    let follower = spawn_ask(dir.path(), &[], &["--yes", DEPLOY_AP_SOUTH]);
    server.wait_mid_way("d-1");

    let status = Command::new(parley_bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "status", "--json"])
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(0), "{}", String::from_utf8_lossy(&status.stderr));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["listen"], serde_json::json!([format!("unix:{}", dir.path().join("parley.sock").display())]));
    assert_eq!(status["rollouts"][0]["deployment"], "d-1");
    assert_eq!(status["rollouts"][0]["status"], "running");
    assert_eq!(status["clients"]["subscribers"], 1, "{status}");

    let stop = Command::new(parley_bin()).arg("--data-dir").arg(dir.path()).args(["serve", "stop"]).output().unwrap();
    assert_eq!(stop.status.code(), Some(0), "{}", String::from_utf8_lossy(&stop.stderr));
    assert_eq!(String::from_utf8_lossy(&stop.stdout), "Stopped; running rollouts carry on when it starts again.\n");
    let ended = server.child.wait().unwrap();
    assert_eq!(ended.code(), Some(0));
    assert!(!dir.path().join("parley.sock").exists());
    // The follower lost its server and says where the rollout stands.
    let follower = wait_output(follower, Duration::from_secs(20));
    assert_eq!(follower.status.code(), Some(1));
    assert!(stderr(&follower).contains("Lost the Parley server while following d-1"), "{}", stderr(&follower));

    let server = Server::start(dir.path(), "0.05", &[]);
    let done = server.wait_status("d-1", &["succeeded"], Duration::from_secs(60));
    assert_eq!(done["targets"].as_array().unwrap().len(), 12);
    let (_, journal) = server.get("/v1/deployments/d-1/journal");
    let events = journal["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(!kinds.contains(&"interrupted"), "an orderly stop is no interruption: {kinds:?}");
    let suspended = events.iter().find(|e| e["kind"] == "paused").expect("suspended");
    assert_eq!(suspended["data"]["by"], "parley serve");
    assert!(suspended["data"]["reason"].as_str().unwrap().starts_with("suspended at step "), "{suspended}");
    assert!(kinds.contains(&"resumed") && kinds.last() == Some(&"succeeded"), "{kinds:?}");
}
