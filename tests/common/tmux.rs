//! A tmux server of the test's own (its own socket) running the real `parley`
//! TUI in a session named `tui`, killed on drop even when an assert fails.

use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// A server on the socket `name`-<pid>, so parallel tests do not share one.
    pub fn new(name: &str) -> Tmux {
        Tmux { socket: format!("{name}-{}", std::process::id()) }
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("running tmux")
    }

    pub fn capture(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "tui"]).stdout).into_owned()
    }

    pub fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "tui"];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success(), "tmux send-keys {keys:?}");
    }

    /// Polls the screen until `pred` holds; panics with the last screen otherwise.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if pred(&screen) {
                return screen;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}; the screen was:\n{screen}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Tmux {
    /// As [`Tmux::wait_for`], and the screen is the same in two captures in a row: a
    /// capture taken while the TUI is redrawing holds half the new screen.
    pub fn wait_steady(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut last = String::new();
        loop {
            let screen = self.capture();
            if pred(&screen) && screen == last {
                return screen;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}; the screen was:\n{screen}");
            last = screen;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}
