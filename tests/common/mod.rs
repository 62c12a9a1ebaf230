//! Drives the real `parley` binary: `chat --json` as a child process, one line in,
//! one JSON object out, with a timeout on every read so a hang fails the test.

#![allow(dead_code)]

pub mod tmux;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn parley_bin() -> &'static str {
    env!("CARGO_BIN_EXE_parley")
}

/// A `parley` command on its own data directory, with short bakes for tests.
pub fn parley(data_dir: &Path) -> Command {
    let mut cmd = Command::new(parley_bin());
    cmd.arg("--data-dir").arg(data_dir).arg("--bake-secs").arg("0.05");
    cmd.env_remove("PARLEY_AGENT_TOKEN");
    cmd
}

pub struct Chat {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub data_dir: PathBuf,
}

impl Chat {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Chat {
        let mut cmd = parley(data_dir);
        cmd.args(extra);
        Chat::start_command(cmd, data_dir)
    }

    /// `chat --json` appended to `cmd`, a `parley` command with its global options.
    pub fn start_command(mut cmd: Command, data_dir: &Path) -> Chat {
        cmd.arg("chat").arg("--json");
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn parley chat --json");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Chat { child, stdin, lines: rx, data_dir: data_dir.to_path_buf() }
    }

    /// Sends one utterance and returns its turn's JSON.
    pub fn say(&mut self, utterance: &str) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(utterance.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no answer within 30 s to {utterance:?}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// Asks `show deployment ID` until its status is one of `want` (or 30 s pass).
    pub fn wait_for_status(&mut self, id: &str, want: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let turn = self.say(&format!("show deployment {id}"));
            let status = turn["details"]["status"].as_str().unwrap_or("").to_string();
            if want.contains(&status.as_str()) {
                return turn;
            }
            assert!(Instant::now() < deadline, "{id} still {status}: {turn}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asks `question` until `pred` holds for its turn (the model refreshes every second).
    pub fn eventually(&mut self, question: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let turn = self.say(question);
            if pred(&turn) {
                return turn;
            }
            assert!(Instant::now() < deadline, "never true: {question}: {turn}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Closes standard input and waits for a clean exit.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "parley chat exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "parley chat did not exit after end of input");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Says `utterance`, and "yes" when Parley asks for confirmation; answers the last turn.
    pub fn say_confirmed(&mut self, utterance: &str) -> Value {
        let t = self.say(utterance);
        if t["needs_confirmation"] == true {
            return self.say("yes");
        }
        t
    }

    /// Asks `show deployment ID` until `pred` holds for its details (or 30 s pass).
    pub fn wait_for(&mut self, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let turn = self.say(&format!("show deployment {id}"));
            if pred(&turn["details"]) {
                return turn;
            }
            assert!(Instant::now() < deadline, "{id} never got there: {turn}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The process id, to kill it from outside.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Chat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Agent names of a region in the demo fleet, in fleet order.
pub fn demo_region(region: &str) -> Vec<String> {
    let (edge, core, gpu) = match region {
        "us-east" => (1..=6, 1..=4, 1..=2),
        "us-west" => (7..=12, 5..=8, 3..=4),
        "eu-west" => (13..=18, 9..=12, 5..=6),
        "ap-south" => (19..=24, 13..=16, 7..=8),
        _ => panic!("no region {region}"),
    };
    edge.map(|n| format!("edge-{n}"))
        .chain(core.map(|n| format!("core-{n}")))
        .chain(gpu.map(|n| format!("gpu-{n}")))
        .collect()
}

/// `parley fleet simulate` running in the background, killed when dropped; the
/// inventory it wrote is at `inventory`.
pub struct Simulator {
    child: Child,
    pub inventory: PathBuf,
}

impl Simulator {
    /// Starts `agents` simulated agents (with `faults`, as `--faults` takes them) and
    /// waits until their inventory is written.
    pub fn start(dir: &Path, agents: usize, faults: Option<&str>) -> Simulator {
        let inventory = dir.join("fleet.toml");
        let mut cmd = Command::new(parley_bin());
        cmd.arg("--data-dir").arg(dir.join("sim")).args(["fleet", "simulate", "--agents", &agents.to_string()]);
        if let Some(faults) = faults {
            cmd.args(["--faults", faults]);
        }
        let child = cmd
            .arg("--inventory-out")
            .arg(&inventory)
            .env_remove("PARLEY_AGENT_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sim = Simulator { child, inventory };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sim.inventory.exists() {
            assert!(Instant::now() < deadline, "the simulator never wrote its inventory");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The file is written before every agent listens.
        std::thread::sleep(Duration::from_millis(200));
        sim
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
