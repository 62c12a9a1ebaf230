//! Two real TUIs as clients of one real `parley serve` (its demo fleet inside it),
//! each in a tmux server of its own, as two operators would sit at them: a rollout
//! started in one is followed live in the other, paused from there and resumed from
//! the first; a `y` in one never answers the other's proposal; and quitting a TUI
//! leaves its rollout running in the server, which says so on the normal screen.
//!
//! tmux is required (`.ci/run` installs it); without it this test fails rather than skips.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::parley_bin;
use common::tmux::Tmux;

/// Each rollout step bakes this long: time to act on a rollout mid-way.
const BAKE: &str = "3";

struct Server {
    child: Child,
    dir: PathBuf,
    _stderr: Receiver<String>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut cmd = Command::new(parley_bin());
        cmd.arg("--data-dir").arg(dir).arg("--bake-secs").arg(BAKE).arg("serve");
        cmd.env_remove("PARLEY_AGENT_TOKEN").env_remove("PARLEY_SERVER").env_remove("PARLEY_TOKEN");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
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
        assert!(line.starts_with("parley serve: listening on unix:"), "unexpected first line: {line}");
        Server { child, dir: dir.to_path_buf(), _stderr: rx }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("parley.sock")
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path)
    }

    /// One bodiless request over the socket (the local user, an admin).
    fn request(&self, method: &str, path: &str) -> (u16, Value) {
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        // The server answers with a fixed length; no chunked bodies to undo.
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    fn deployment(&self, name: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/deployments/{name}"));
        assert_eq!(status, 200, "{body}");
        body
    }

    fn wait_status(&self, name: &str, want: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, body) = self.get(&format!("/v1/deployments/{name}"));
            if status == 200 && body["status"] == want {
                return body;
            }
            assert!(Instant::now() < deadline, "{name} never reached {want}: {body}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(record: &Value) -> usize {
    record["targets"].as_array().map_or(0, |t| t.iter().filter(|t| t["state"] == "installed").count())
}

/// A TUI in a tmux server of its own, a client of `server` with a data directory
/// of its own (its history); once it exits, the shell says so with its status.
fn client_tui(name: &str, dir: &Path, server: &Server) -> Tmux {
    client_tui_with(name, dir, server, "")
}

/// [`client_tui`] with `env` (`NAME=VALUE ...`) before the command.
fn client_tui_with(name: &str, dir: &Path, server: &Server, env: &str) -> Tmux {
    let script = format!(
        "{env} {} --data-dir {} --server unix:{}; echo \"TUI EXITED $?\"; sleep 120",
        parley_bin(),
        dir.display(),
        server.socket().display()
    );
    let tmux = Tmux::new(name);
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "140",
        "-y",
        "45",
        "env",
        "-u",
        "PARLEY_SERVER",
        "-u",
        "PARLEY_TOKEN",
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
    tmux.wait_for("the TUI on the server's fleet", Duration::from_secs(60), |s| s.contains("48 agents, 4 regions"));
    tmux
}

/// The pane with wrapped lines joined, as the text was printed.
fn joined(tmux: &Tmux) -> String {
    String::from_utf8_lossy(&tmux.cmd(&["capture-pane", "-p", "-J", "-t", "tui"]).stdout).into_owned()
}

/// The chat pane's text (the first box of each row), its wrapped lines joined.
fn chat_text(screen: &str) -> String {
    let rows: Vec<&str> =
        screen.lines().filter_map(|l| l.strip_prefix('│')).filter_map(|l| l.split('│').next()).map(str::trim).collect();
    rows.join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// tmux, which these tests need, and a temporary root holding the data directories
/// of a server and of two client TUIs.
fn server_and_two_clients() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    assert!(
        Command::new("tmux").arg("-V").output().map(|o| o.status.success()).unwrap_or(false),
        "tmux is not installed: this test drives the TUI through tmux (apt-get install tmux)."
    );
    let root = tempfile::tempdir().unwrap();
    let (sdir, adir, bdir) = (root.path().join("server"), root.path().join("a"), root.path().join("b"));
    for d in [&sdir, &adir, &bdir] {
        std::fs::create_dir_all(d).unwrap();
    }
    (root, sdir, adir, bdir)
}

#[test]
fn two_tuis_on_one_server_share_a_rollout_and_quitting_one_leaves_it_running() {
    let (_root, sdir, adir, bdir) = server_and_two_clients();
    let server = Server::start(&sdir);
    let a = client_tui("parley-client-a", &adir, &server);
    let b = client_tui("parley-client-b", &bdir, &server);

    // A proposes; the yes/no is A's session's alone.
    a.send(&["roll out auth-filter 2.1.0 to ap-south", "Enter"]);
    a.wait_for("A's confirmation modal", Duration::from_secs(30), |s| s.contains("┌ Confirm "));
    b.send(&["y", "Enter"]);
    b.wait_for("B's answer to its y", Duration::from_secs(30), |s| s.contains("I didn't understand \"y\"."));
    b.send(&["yes", "Enter"]);
    let screen = b.wait_for("B's answer to its yes", Duration::from_secs(30), |s| {
        s.contains("Nothing is waiting for confirmation.")
    });
    assert!(!screen.contains("┌ Confirm "), "B has no proposal of its own:\n{screen}");
    let (status, list) = server.get("/v1/deployments");
    assert_eq!(status, 200);
    assert_eq!(list["deployments"], serde_json::json!([]), "B's y and yes started nothing");
    let screen = a.capture();
    assert!(screen.contains("┌ Confirm "), "A's proposal is still open:\n{screen}");

    a.send(&["y"]);
    server.wait_status("d-1", "running", Duration::from_secs(30));

    // B follows the rollout live: its deployments pane shows it and its steps filling.
    b.wait_for("d-1 in B's deployments pane", Duration::from_secs(30), |s| {
        s.contains("d-1 auth-filter 2.1.0 → ap-south running")
    });
    b.wait_for("B to show the first step done", Duration::from_secs(60), |s| {
        s.contains("d-1 auth-filter 2.1.0 → ap-south running") && s.contains("100%  3/3")
    });

    // B pauses it; the server holds it and it stops advancing.
    b.send(&["pause d-1", "Enter"]);
    let paused = server.wait_status("d-1", "paused", Duration::from_secs(30));
    let (step, done) = (paused["current_step"].clone(), installed(&paused));
    assert!(done < 12, "paused before the end: {paused}");
    a.wait_for("A to show d-1 paused", Duration::from_secs(30), |s| {
        s.contains("d-1 auth-filter 2.1.0 → ap-south paused")
    });
    // Longer than two bakes: a rollout still running would have moved on.
    std::thread::sleep(Duration::from_secs(8));
    let still = server.deployment("d-1");
    assert_eq!(still["status"], "paused", "{still}");
    assert_eq!(still["current_step"], step, "no step advanced while paused: {still}");
    assert_eq!(installed(&still), done, "no agent installed while paused: {still}");

    // A resumes it, then quits while it runs: A exits at once and says it goes on.
    a.send(&["resume d-1", "Enter"]);
    // Resuming changes the 9 agents left, so it is proposed first, in A's modal.
    a.wait_for("A's resume proposal", Duration::from_secs(30), |s| {
        s.contains("┌ Confirm ") && s.contains("Resume d-1: install auth-filter 2.1.0")
    });
    a.send(&["y"]);
    server.wait_status("d-1", "running", Duration::from_secs(30));
    b.wait_for("B to show d-1 running again", Duration::from_secs(30), |s| {
        s.contains("d-1 auth-filter 2.1.0 → ap-south running")
    });
    a.send(&["F4"]);
    a.send(&["q"]);
    let screen = a.wait_for("A to exit", Duration::from_secs(30), |s| s.contains("TUI EXITED"));
    let at_exit = server.deployment("d-1");
    assert_eq!(at_exit["status"], "running", "A exited while d-1 still ran: {at_exit}");
    assert!(screen.contains("TUI EXITED 0"), "{screen}");
    let text = joined(&a);
    let line =
        text.lines().find(|l| l.starts_with("d-1 (")).unwrap_or_else(|| panic!("no keeps-running line:\n{text}"));
    let socket = format!("unix:{}", server.socket().display());
    let prefix = "d-1 (auth-filter 2.1.0 → ap-south, step ";
    assert!(line.starts_with(prefix), "{line}");
    assert!(
        line.ends_with(&format!(
            " of 4) keeps running in the Parley server at {socket}; follow it with: parley ask \"show d-1\""
        )),
        "{line}"
    );

    // The server carries it to the end without A; B sees it finish.
    server.wait_status("d-1", "succeeded", Duration::from_secs(120));
    b.wait_for("B to show d-1 succeeded", Duration::from_secs(30), |s| {
        s.contains("d-1 auth-filter 2.1.0 → ap-south succeeded")
    });

    // The server stops in order: B says so, and how to start it again.
    let (status, body) = server.request("POST", "/v1/stop");
    assert_eq!(status, 202, "{body}");
    let stopped = format!(
        "» The Parley server at {socket} stopped; running rollouts carry on when it starts again. \
         Start it with `parley serve`: this TUI reconnects by itself."
    );
    b.wait_for("B to tell the server stopped", Duration::from_secs(30), |s| chat_text(s).contains(&stopped));
    let mut server = server;
    let exited = server.child.wait().unwrap();
    assert!(exited.success(), "the server stopped in order: {exited}");

    // Started again, it is found again: B follows the new server's stream by itself.
    let server = Server::start(&sdir);
    let back = format!("» The Parley server at {socket} answers again.");
    b.wait_for("B to reconnect", Duration::from_secs(60), |s| chat_text(s).contains(&back));
    drop(server);
    b.send(&["C-c"]);
    b.wait_for("B to exit", Duration::from_secs(30), |s| s.contains("TUI EXITED 0"));
}

/// Push-to-talk in a client TUI: F5 transcribes locally (real Whisper, tiny.en, on an
/// espeak-ng recording standing in for the microphone) and the words are a turn of
/// the server's, which its audit log shows as the TUI's.
#[cfg(feature = "whisper")]
#[test]
fn push_to_talk_in_a_client_tui_is_a_turn_of_the_server() {
    for tool in ["tmux", "espeak-ng"] {
        let found = Command::new(tool).arg(if tool == "tmux" { "-V" } else { "--version" }).output().is_ok();
        assert!(found, "{tool} is not installed (.ci/run installs it)");
    }
    let cache = std::env::var_os("PARLEY_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/parley-models"));
    let model = cache.join("models/ggml-tiny.en.bin");
    assert!(model.is_file(), "{} is missing: scripts/test installs it (parley voice model install)", model.display());
    let root = tempfile::tempdir().unwrap();
    let (sdir, cdir) = (root.path().join("server"), root.path().join("client"));
    std::fs::create_dir_all(&sdir).unwrap();
    // The client's own data directory holds the model it transcribes with.
    std::fs::create_dir_all(cdir.join("models")).unwrap();
    std::os::unix::fs::symlink(&model, cdir.join("models/ggml-tiny.en.bin")).unwrap();
    let wav = root.path().join("mic.wav");
    let out = Command::new("espeak-ng")
        .arg("-w")
        .arg(&wav)
        .args(["-s", "150", "-v", "en-us", "how healthy is the fleet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "espeak-ng: {}", String::from_utf8_lossy(&out.stderr));

    let server = Server::start(&sdir);
    let tui = client_tui_with("parley-client-ptt", &cdir, &server, &format!("PARLEY_MIC_WAV={}", wav.display()));
    tui.send(&["F5"]);
    let screen = tui.wait_for("the spoken question's answer", Duration::from_secs(90), |s| {
        s.contains("the whole fleet: 48 agents, 48 healthy")
    });
    assert!(screen.contains("› how healthy is the fleet"), "the transcript is the operator's turn:\n{screen}");
    let (status, audit) = server.get("/v1/audit");
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().cloned().unwrap_or_default();
    assert!(
        entries.iter().any(|e| e["frontend"] == "tui" && e["utterance"] == "how healthy is the fleet"),
        "the server heard the TUI's turn: {audit}"
    );
    tui.send(&["C-c"]);
    tui.wait_for("the TUI to exit", Duration::from_secs(30), |s| s.contains("TUI EXITED 0"));
}

/// The process id of the TUI in `tmux`'s pane: the child of the pane's shell.
fn tui_pid(tmux: &Tmux) -> i32 {
    let out = tmux.cmd(&["display-message", "-p", "-t", "tui", "#{pane_pid}"]);
    let pane: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("tmux names the pane's pid");
    // The pane runs `env`, which becomes `sh`, whose child is the TUI.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: the name may hold spaces, so read after its ')'.
        let Some((head, tail)) = stat.rsplit_once(") ") else { continue };
        let ppid = tail.split_whitespace().nth(1).and_then(|p| p.parse::<i32>().ok());
        if ppid == Some(pane) && head.ends_with("(parley") {
            return head.split_whitespace().next().and_then(|p| p.parse().ok()).expect("a pid");
        }
    }
    panic!("no parley process under the pane's shell {pane}");
}

/// A rollout started in the TUI `name`, confirmed, and running in the server.
fn start_in_tui(name: &str, dir: &Path, server: &Server, utterance: &str, deployment: &str) -> Tmux {
    let tui = client_tui(name, dir, server);
    tui.send(&[utterance, "Enter"]);
    tui.wait_for("the confirmation modal", Duration::from_secs(30), |s| s.contains("┌ Confirm "));
    tui.send(&["y"]);
    server.wait_status(deployment, "running", Duration::from_secs(30));
    tui
}

#[test]
fn a_client_tui_killed_mid_rollout_leaves_the_rollout_running_in_the_server() {
    let (_root, sdir, adir, bdir) = server_and_two_clients();
    let server = Server::start(&sdir);
    let socket = format!("unix:{}", server.socket().display());

    // SIGINT from outside (a `kill`, not the Ctrl-C key): the TUI quits as on `q`,
    // gives the terminal back and says the rollout goes on.
    let a = start_in_tui("parley-kill-int", &adir, &server, "roll out auth-filter 2.1.0 to ap-south", "d-1");
    let status = Command::new("kill").args(["-INT", &tui_pid(&a).to_string()]).status().unwrap();
    assert!(status.success());
    let screen = a.wait_for("the TUI to exit on SIGINT", Duration::from_secs(30), |s| s.contains("TUI EXITED"));
    assert!(screen.contains("TUI EXITED 0"), "{screen}");
    let text = joined(&a);
    assert!(
        text.lines().any(|l| l.starts_with("d-1 (auth-filter 2.1.0 → ap-south, step ")
            && l.ends_with(&format!(
                "keeps running in the Parley server at {socket}; follow it with: parley ask \"show d-1\""
            ))),
        "{text}"
    );
    assert_eq!(server.deployment("d-1")["status"], "running");

    // SIGKILL: nothing runs in the TUI to say anything, and the server carries on.
    let b =
        start_in_tui("parley-kill-9", &bdir, &server, "roll out rate-limiter 1.1.0 to eu-west in batches of 4", "d-2");
    let status = Command::new("kill").args(["-KILL", &tui_pid(&b).to_string()]).status().unwrap();
    assert!(status.success());
    let screen = b.wait_for("the TUI to be gone", Duration::from_secs(30), |s| s.contains("TUI EXITED"));
    assert!(screen.contains("TUI EXITED 137"), "{screen}");

    for id in ["d-1", "d-2"] {
        let done = server.wait_status(id, "succeeded", Duration::from_secs(120));
        assert!(done["targets"].as_array().unwrap().iter().all(|t| t["state"] == "installed"), "{done}");
        let shown = Command::new(parley_bin())
            .arg("--data-dir")
            .arg(&adir)
            .args(["--server", &socket, "ask", &format!("show deployment {id}")])
            .env_remove("PARLEY_SERVER")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&shown.stdout);
        assert_eq!(shown.status.code(), Some(0), "{out}{}", String::from_utf8_lossy(&shown.stderr));
        assert!(out.starts_with(&format!("{id}: ")) && out.contains(", succeeded after"), "{out}");
        let (_, journal) = server.get(&format!("/v1/deployments/{id}/journal"));
        let kinds: Vec<&str> =
            journal["events"].as_array().unwrap().iter().filter_map(|e| e["kind"].as_str()).collect();
        assert!(!kinds.contains(&"interrupted") && !kinds.contains(&"paused"), "{id}: {kinds:?}");
    }
}
