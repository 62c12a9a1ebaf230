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
        let mut s = std::os::unix::net::UnixStream::connect(self.socket()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
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
    let script = format!(
        "{} --data-dir {} --server unix:{}; echo \"TUI EXITED $?\"; sleep 120",
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

#[test]
fn two_tuis_on_one_server_share_a_rollout_and_quitting_one_leaves_it_running() {
    assert!(
        Command::new("tmux").arg("-V").output().map(|o| o.status.success()).unwrap_or(false),
        "tmux is not installed: this test drives the TUI through tmux (apt-get install tmux)."
    );
    let root = tempfile::tempdir().unwrap();
    let (sdir, adir, bdir) = (root.path().join("server"), root.path().join("a"), root.path().join("b"));
    for d in [&sdir, &adir, &bdir] {
        std::fs::create_dir_all(d).unwrap();
    }
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
            " of 4) keeps running in the Parley server at {socket}; run `parley` again to follow it, or `parley ask \"show d-1\"`."
        )),
        "{line}"
    );

    // The server carries it to the end without A; B sees it finish.
    server.wait_status("d-1", "succeeded", Duration::from_secs(120));
    b.wait_for("B to show d-1 succeeded", Duration::from_secs(30), |s| {
        s.contains("d-1 auth-filter 2.1.0 → ap-south succeeded")
    });
    b.send(&["C-c"]);
    b.wait_for("B to exit", Duration::from_secs(30), |s| s.contains("TUI EXITED 0"));
}
