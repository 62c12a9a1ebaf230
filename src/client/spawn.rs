//! Finding the local server, or starting one: with no `--server`/`PARLEY_SERVER`,
//! a front-end uses the `parley serve` answering on `<data-dir>/parley.sock`, and
//! when none answers starts one in the background and connects, as tmux, gpg-agent
//! or `emacs --daemon` do. The server it starts is the same binary with the same
//! fleet-selecting options, detached (its own session, standard streams to the log
//! file) and marked with `--idle-stop-secs`, so that it stops by itself once no
//! client is attached and nothing runs.
//!
//! Two clients starting at once end with one server: the start is done under an
//! exclusive lock on `<data-dir>/parley.sock.lock`, and whoever gets the lock second
//! finds the first one's server answering. A socket file left by a killed server
//! answers nobody; the new server replaces it.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Client, ClientError, ServerUrl};

/// How long a started server may take to answer: it starts the fleet (the demo
/// fleet's 48 agents, or a first poll of a large inventory) before it serves.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one probe of the socket may take: a server that bound its socket but is
/// still starting accepts and answers later.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot start a Parley server: {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the Parley server started for {data_dir} exited ({status}) before it answered; its log is {log}")]
    Exited { data_dir: String, status: String, log: String },
    #[error("the Parley server started for {data_dir} did not answer on {socket} within {} s; its log is {log}", .after.as_secs())]
    NoAnswer { data_dir: String, socket: String, after: Duration, log: String },
}

/// How to start the data directory's server when none answers.
#[derive(Debug, Clone)]
pub struct Autostart {
    /// The binary: this one.
    pub program: PathBuf,
    /// The global options that select the fleet and its settings (`--data-dir`,
    /// `--config`, `--fleet`, ...), put before `serve`, so the server owns the fleet
    /// this front-end would have run.
    pub args: Vec<OsString>,
    /// What `--idle-stop-secs` the server gets.
    pub idle_stop: Duration,
    /// Where its standard output and error go (the data directory's log).
    pub log: PathBuf,
}

/// Where a front-end's turns go.
pub enum Connection {
    /// A server: the one named, the local one that answered, or one just started.
    Server { client: Client, started: bool },
    /// No server and none to be started (`--in-process`, `[server] autostart = false`).
    InProcess,
}

impl Client {
    /// The server `server` names; else the one answering on `data_dir`'s socket; else,
    /// with `autostart`, one started now; else [`Connection::InProcess`].
    pub async fn connect_or_start(
        server: Option<&str>,
        data_dir: &Path,
        autostart: Option<&Autostart>,
    ) -> Result<Connection, SpawnError> {
        if let Some(client) = Client::select(server, data_dir).await? {
            return Ok(Connection::Server { client, started: false });
        }
        let Some(autostart) = autostart else { return Ok(Connection::InProcess) };
        let socket = crate::server::socket_path(data_dir);
        std::fs::create_dir_all(data_dir)
            .map_err(|source| SpawnError::Io { what: format!("creating {}", data_dir.display()), source })?;
        let lock_path = lock_path(data_dir);
        let lock = lock(&lock_path).await?;
        // Whoever held the lock before may have started it meanwhile.
        let client = Client::new(ServerUrl::Unix(socket.clone()), None);
        if answers(&client).await {
            return Ok(Connection::Server { client, started: false });
        }
        let mut child = spawn(autostart)?;
        tracing::info!(pid = child.id(), data_dir = %data_dir.display(), "started a Parley server in the background");
        let waited = wait_until_answering(&client, &mut child, data_dir, &socket, &autostart.log).await;
        // The server holds no copy of the lock (files are opened close-on-exec); the
        // next client that locks finds it answering.
        drop(lock);
        let ours = waited?;
        Ok(Connection::Server { client, started: ours })
    }
}

/// The lock a start is made under, beside the socket.
pub fn lock_path(data_dir: &Path) -> PathBuf {
    let socket = crate::server::socket_path(data_dir);
    let mut name = socket.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| OsString::from("parley.sock"));
    name.push(".lock");
    socket.with_file_name(name)
}

/// Takes the exclusive lock, waiting for another client's start to end (bounded:
/// a start gives up after [`START_TIMEOUT`], and so does waiting for one).
async fn lock(path: &Path) -> Result<File, SpawnError> {
    let io = |source| SpawnError::Io { what: format!("locking {}", path.display()), source };
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
    let deadline = Instant::now() + START_TIMEOUT + PROBE_TIMEOUT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io(std::io::Error::other("another client has been starting a server for too long")))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
    }
}

async fn answers(client: &Client) -> bool {
    matches!(tokio::time::timeout(PROBE_TIMEOUT, client.get("/healthz")).await, Ok(Ok(_)))
}

fn spawn(autostart: &Autostart) -> Result<Child, SpawnError> {
    use std::os::unix::process::CommandExt as _;
    let log = autostart.log.display().to_string();
    if let Some(dir) = autostart.log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|source| SpawnError::Io { what: format!("creating {}", dir.display()), source })?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&autostart.log)
        .map_err(|source| SpawnError::Io { what: format!("opening {log}"), source })?;
    let err = out.try_clone().map_err(|source| SpawnError::Io { what: format!("opening {log}"), source })?;
    let mut command = Command::new(&autostart.program);
    command
        .args(&autostart.args)
        .arg("serve")
        .arg("--idle-stop-secs")
        .arg(autostart.idle_stop.as_secs().max(1).to_string())
        // It is the local server: it must not look for another one.
        .env_remove("PARLEY_SERVER")
        // The client's own credentials stay with the client: a token for some other
        // server, and the Slack bridge's secrets, which the server never uses.
        .env_remove("PARLEY_TOKEN")
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("SLACK_APP_TOKEN")
        .env_remove("SLACK_SIGNING_SECRET")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: between fork and exec only setsid runs, which is async-signal-safe; it
    // puts the server in a session of its own, with no controlling terminal, so the
    // terminal's Ctrl-C and hang-up reach the front-end and not the server.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
        .spawn()
        .map_err(|source| SpawnError::Io { what: format!("running {}", autostart.program.display()), source })
}

/// Until the socket answers; `Ok(true)`: the server started here answers, `Ok(false)`:
/// another one does (it was starting when this one was, and this one gave way).
async fn wait_until_answering(
    client: &Client,
    child: &mut Child,
    data_dir: &Path,
    socket: &Path,
    log: &Path,
) -> Result<bool, SpawnError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if answers(client).await {
            return Ok(matches!(child.try_wait(), Ok(None)));
        }
        match child.try_wait() {
            // A socket still there is another server's (one that fails to start
            // removes its own): one started by hand that is still starting its fleet.
            Ok(Some(_)) if socket.exists() && Instant::now() < deadline => {}
            Ok(Some(status)) => {
                return Err(SpawnError::Exited {
                    data_dir: data_dir.display().to_string(),
                    status: status.to_string(),
                    log: log.display().to_string(),
                })
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not ask whether the started server still runs"),
        }
        if Instant::now() >= deadline {
            return Err(SpawnError::NoAnswer {
                data_dir: data_dir.display().to_string(),
                socket: socket.display().to_string(),
                after: START_TIMEOUT,
                log: log.display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_sits_beside_the_socket() {
        assert_eq!(lock_path(Path::new("/var/lib/parley")), PathBuf::from("/var/lib/parley/parley.sock.lock"));
    }
}
