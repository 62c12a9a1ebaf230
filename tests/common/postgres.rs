//! A real, throwaway PostgreSQL server for tests and benches: never a mock. The
//! distribution's binaries (`initdb`, `pg_ctl`, `createdb`, from
//! /usr/lib/postgresql/*/bin, which scripts/deps installs) make a cluster in a temp
//! dir, listening on a free port on 127.0.0.1 with its Unix socket in that dir; each
//! caller gets a database of its own on it. The cluster is shared by the tests of one
//! process that overlap, and stopped and removed when the last of them lets go.
//!
//! As root, `initdb` refuses to run: the server then runs as `nobody` (through
//! `runuser`), owning the temp dir.
//!
//! Only when no PostgreSQL binaries are installed does [`database`] answer `None`,
//! having printed why ("skipped: ..."); any other failure is a panic: a test that
//! can run must.
//!
//! This file is included by path in src/registry/tests.rs and benches too, so it uses
//! nothing but std and tempfile.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// One running cluster.
pub struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run the server's tools as this user (root cannot).
    run_as: Option<&'static str>,
    // Last: removed after the server stopped.
    dir: tempfile::TempDir,
}

/// A database of its own on a shared cluster; the cluster lives while any does.
pub struct Database {
    pub url: String,
    pub name: String,
    cluster: Arc<Cluster>,
}

impl Database {
    /// A URL on the same server naming another database (that may not exist).
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://parley@127.0.0.1:{}/{name}", self.cluster.port)
    }

    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// Another, empty database on the same cluster.
    pub fn sibling(&self) -> Database {
        self.cluster.create_database()
    }
}

/// The directory holding `initdb` and `pg_ctl`: the newest of
/// /usr/lib/postgresql/*/bin, or the one on PATH.
pub fn find_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// A fresh database on this process's cluster (started when none runs); `None`, with
/// a "skipped: ..." line, only when PostgreSQL is not installed.
pub fn database() -> Option<Database> {
    static CLUSTER: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
    let Some(bin) = find_binaries() else {
        eprintln!(
            "skipped: no PostgreSQL binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin or on PATH; \
             scripts/deps installs Debian's postgresql package"
        );
        return None;
    };
    let cluster = {
        let mut shared = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        match shared.upgrade() {
            Some(c) => c,
            None => {
                let c = Arc::new(Cluster::start(&bin));
                *shared = Arc::downgrade(&c);
                c
            }
        }
    };
    Some(cluster.create_database())
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

fn check(what: &str, out: std::io::Result<Output>) {
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{what} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("{what} could not run: {e}"),
    }
}

impl Cluster {
    fn tool(&self, name: &str) -> Command {
        tool(&self.bin, self.run_as, name, self.dir.path())
    }

    fn start(bin: &Path) -> Cluster {
        let run_as = is_root().then_some("nobody");
        let dir = tempfile::Builder::new().prefix("parley-pg-").tempdir().expect("a temp dir");
        if let Some(user) = run_as {
            check("chown", Command::new("chown").arg(format!("{user}:")).arg(dir.path()).output());
        }
        let data = dir.path().join("data");
        check(
            "initdb",
            tool(bin, run_as, "initdb", dir.path())
                .args(["-A", "trust", "-U", "parley", "-E", "UTF8", "--no-sync", "--locale=C", "-D"])
                .arg(&data)
                .output(),
        );
        let log = dir.path().join("server.log");
        // A port found free may be taken before the server binds it: try a few.
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            let options = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                dir.path().display()
            );
            let out = tool(bin, run_as, "pg_ctl", dir.path())
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "120", "-o", &options, "start"])
                .output();
            if out.as_ref().is_ok_and(|o| o.status.success()) {
                return Cluster { bin: bin.to_path_buf(), data, port, run_as, dir };
            }
            last = Some(out);
        }
        let server_log = std::fs::read_to_string(&log).unwrap_or_default();
        check(&format!("pg_ctl start (server log: {server_log})"), last.expect("five tries"));
        unreachable!("check panics on a failed start")
    }

    fn create_database(self: &Arc<Self>) -> Database {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!("t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        check(
            "createdb",
            self.tool("createdb")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "parley", &name])
                .output(),
        );
        Database { url: format!("postgres://parley@127.0.0.1:{}/{name}", self.port), name, cluster: Arc::clone(self) }
    }
}

fn tool(bin: &Path, run_as: Option<&str>, name: &str, cwd: &Path) -> Command {
    let mut cmd = match run_as {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(bin.join(name));
            c
        }
        None => Command::new(bin.join(name)),
    };
    // The unprivileged user must be able to stand in its working directory.
    cmd.current_dir(cwd);
    cmd
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Immediate: the databases are throwaway, and a clean shutdown only costs time.
        let _ = self.tool("pg_ctl").arg("-D").arg(&self.data).args(["-m", "immediate", "-w", "stop"]).output();
    }
}
