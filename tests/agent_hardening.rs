//! Agents and registration under attack and under accident, over real sockets on
//! loopback: traversal names and versions, concurrent and killed state-file writers,
//! slowloris connections, and impostors at the registration endpoint.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley::agent::http::HttpLimits;
use parley::agent::protocol::{AgentStatus, ErrorBody, ServingState};
use parley::agent::server::{self, Agent, AgentConfig};
use parley::agent::standalone::{self, Registration, StandaloneOptions};
use parley::agent::{AgentClient, AgentError};
use parley::topology::poller::{Poller, PollerConfig};
use parley::topology::registration::{self, Registered, CREDENTIAL_HEADER};
use parley::topology::{Catalog, Liveness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TOKEN: &str = "hardening-s3cret";

struct Served {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

async fn serve(agent: Arc<Agent>) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::serve(listener, agent, async move {
        let _ = stopped.await;
    }));
    Served { url, stop: Some(stop), task }
}

fn config(name: &str, state_file: Option<&Path>) -> AgentConfig {
    let mut config = AgentConfig::new(name, "eu-west", "eu-west-a");
    config.extensions.insert("auth-filter".into(), "2.0.3".into());
    config.token = Some(TOKEN.into());
    config.state_file = state_file.map(Path::to_path_buf);
    config.install_delay = Duration::ZERO;
    config.transition_delay = Duration::from_millis(20);
    config
}

fn client() -> AgentClient {
    AgentClient::new(Duration::from_secs(3), Some(TOKEN.into())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_versions_and_names_are_refused_by_agent_and_client_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("edge-1.json");
    let agent = Agent::new(config("edge-1", Some(&state))).unwrap();
    let served = serve(Arc::clone(&agent)).await;
    let before = std::fs::read(&state).unwrap();
    let http = reqwest::Client::new();

    // The finding itself: `..` was installed as a version.
    let resp = http
        .put(format!("{}/v1/extensions/auth-filter", served.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"version": ".."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: ErrorBody = resp.json().await.unwrap();
    assert_eq!(
        body,
        ErrorBody {
            code: "bad_request".into(),
            error: "version `..` is not valid: use 1-64 of A-Z a-z 0-9 . + -, starting with a letter or digit, \
                    without `..`"
                .into()
        }
    );
    for version in ["../../etc/passwd", "2.1.0/../..", "", ".", "1..0", "-rf", "2.1.0\n", &"1".repeat(65)] {
        let resp = http
            .put(format!("{}/v1/extensions/auth-filter", served.url))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "version": version }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{version:?}");
    }
    // Names arrive percent-decoded: `%2E%2E` is `..`, `%2F` a slash.
    for name in ["..%2F..", "auth-filter%2F..", "Auth-Filter", "auth_filter", "%00", "a%20b"] {
        let put = http
            .put(format!("{}/v1/extensions/{name}", served.url))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"version": "2.1.0"}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 400, "PUT {name}");
        let delete =
            http.delete(format!("{}/v1/extensions/{name}", served.url)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(delete.status(), 400, "DELETE {name}");
    }

    // Parley's own client never sends them.
    let c = client();
    for (extension, version) in [("auth-filter", ".."), ("../actions/drain", "2.1.0"), ("auth-filter", "2.1.0?x=1")] {
        let err = c.install(&served.url, extension, version).await.unwrap_err();
        assert!(matches!(err, AgentError::Invalid { .. }), "{extension} {version}: {err:?}");
    }
    assert!(matches!(c.remove(&served.url, "..").await, Err(AgentError::Invalid { .. })));

    assert_eq!(std::fs::read(&state).unwrap(), before, "the state file is untouched");
    let status = agent.status();
    assert_eq!(status.state, ServingState::Active);
    assert_eq!(status.extensions.len(), 1);
    assert_eq!((status.extensions[0].name.as_str(), status.extensions[0].version.as_str()), ("auth-filter", "2.0.3"));

    // A state file or a configuration carrying such a version does not start an agent.
    std::fs::write(&state, r#"{"extensions": {"auth-filter": ".."}, "state": "active"}"#).unwrap();
    let err = Agent::new(config("edge-1", Some(&state))).unwrap_err();
    assert!(err.to_string().contains("version `..` is not valid"), "{err}");
    let err = Agent::new(config("../edge-1", None)).unwrap_err();
    assert!(err.to_string().contains("agent name `../edge-1` is not valid"), "{err}");
    served.stop().await;
}

/// Many installs and actions at once while a reader keeps reading the state file: every
/// read is a whole, valid state, and the file ends as the agent's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_tear_the_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("edge-2.json");
    let agent = Agent::new(config("edge-2", Some(&state))).unwrap();
    let served = serve(Arc::clone(&agent)).await;

    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, state) = (Arc::clone(&done), state.clone());
        std::thread::spawn(move || {
            let (mut reads, mut torn) = (0usize, 0usize);
            while !done.load(Ordering::Relaxed) {
                match std::fs::read(&state) {
                    Ok(bytes) => {
                        reads += 1;
                        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
                            torn += 1;
                        }
                    }
                    // Never missing: the rename replaces the file in one step.
                    Err(_) => torn += 1,
                }
            }
            (reads, torn)
        })
    };
    // Generous: on a loaded machine many fsyncs queue up behind one another.
    let c = AgentClient::new(Duration::from_secs(20), Some(TOKEN.into())).unwrap();
    let started = Instant::now();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (c, url) = (c.clone(), served.url.clone());
            tokio::spawn(async move {
                for i in 0..60 {
                    let extension = ["auth-filter", "log-shipper", "geo-router", "rate-limiter"][(w + i) % 4];
                    let version = ["1.0.0", "2.0.3", "2.1.0"][i % 3];
                    c.install(&url, extension, version).await.unwrap();
                    if i % 10 == 0 {
                        // Actions persist too, from other code paths.
                        let _ = c.action(&url, parley::agent::protocol::AgentAction::Cordon).await;
                        let _ = c.action(&url, parley::agent::protocol::AgentAction::Uncordon).await;
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    done.store(true, Ordering::Relaxed);
    let (reads, torn) = reader.join().unwrap();
    eprintln!("{reads} reads of the state file during 480 concurrent installs ({:?}); {torn} torn", started.elapsed());
    assert!(reads > 100, "the reader must have raced the writers: {reads}");
    assert_eq!(torn, 0, "{torn} of {reads} reads saw a torn state file");

    // The last write carries the last state.
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let status = agent.status();
    for e in &status.extensions {
        assert_eq!(saved["extensions"][&e.name], e.version.as_str(), "{saved}");
    }
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "edge-2.json")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    served.stop().await;
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `parley agent` on `state`; answers it and its URL, or what it said instead.
fn start_agent(state: &Path) -> Result<(Proc, String), String> {
    let mut child = Command::new(common::parley_bin())
        .arg("--data-dir")
        .arg(state.parent().unwrap())
        .args(["agent", "--name", "edge-301", "--region", "eu-west", "--zone", "eu-west-a"])
        .args(["--extensions", "auth-filter@2.0.3", "--listen", "127.0.0.1:0", "--state-file"])
        .arg(state)
        .env("PARLEY_AGENT_TOKEN", TOKEN)
        // More workers than cores: writers that overlap, even on a small machine.
        .env("TOKIO_WORKER_THREADS", "8")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    match line.trim().rsplit(' ').next() {
        Some(url) if url.starts_with("http://127.0.0.1:") => Ok((Proc(child), url.to_string())),
        _ => Err(line),
    }
}

/// SIGKILL while sixteen clients install as fast as they can: the agent always starts
/// again on its state file, and reports a version that was really installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_while_writing_its_state_always_starts_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("edge-301.json");
    let versions = ["1.0.0", "2.0.3", "2.1.0"];
    let kills = 12;
    let mut restarted = 0;
    let mut torn_kills = 0;
    for round in 0..kills {
        let (proc, url) = start_agent(&state).unwrap_or_else(|said| panic!("round {round}: did not start: {said}"));
        restarted += usize::from(round > 0);
        let c = AgentClient::new(Duration::from_millis(500), Some(TOKEN.into())).unwrap();
        let installs = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(std::sync::Mutex::new(None::<AgentError>));
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let (c, url, installs) = (c.clone(), url.clone(), Arc::clone(&installs));
                let (killed, last_error) = (Arc::clone(&killed), Arc::clone(&last_error));
                tokio::spawn(async move {
                    for i in 0.. {
                        match c.install(&url, "auth-filter", versions[(w + i) % 3]).await {
                            Ok(_) => {
                                installs.fetch_add(1, Ordering::Relaxed);
                            }
                            // A busy machine may let one time out; only the kill ends the loop.
                            Err(_) if killed.load(Ordering::Relaxed) => return,
                            Err(e) => *last_error.lock().unwrap() = Some(e),
                        }
                    }
                })
            })
            .collect();
        // Kill at a different moment each round, always mid-stream of writes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while installs.load(Ordering::Relaxed) == 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no install went through: {:?}",
                last_error.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The kill comes at a different moment each round, or at once if a reader ever
        // catches the file torn: the worst moment for the restart that follows.
        let kill_at = Instant::now() + Duration::from_millis(20 + 37 * round as u64);
        let watched = state.clone();
        let watcher = std::thread::spawn(move || {
            let mut proc = proc;
            let mut caught = false;
            while Instant::now() < kill_at && !caught {
                caught = std::fs::read(&watched)
                    .map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).is_err())
                    .unwrap_or(true);
            }
            let _ = proc.0.kill();
            let _ = proc.0.wait();
            caught
        });
        let caught_torn = tokio::task::spawn_blocking(move || watcher.join().unwrap()).await.unwrap();
        killed.store(true, Ordering::Relaxed);
        torn_kills += usize::from(caught_torn);
        for w in writers {
            w.await.unwrap();
        }
    }
    let (_proc, url) = start_agent(&state).unwrap_or_else(|said| panic!("after the last kill: {said}"));
    let status: AgentStatus = client().status(&url).await.unwrap();
    let installed = &status.extensions.iter().find(|e| e.name == "auth-filter").unwrap().version;
    assert!(versions.contains(&installed.as_str()), "{installed}");
    eprintln!(
        "{kills} kills mid-write ({torn_kills} the moment a reader saw the file torn); the agent started again {} of {kills} times",
        restarted + 1
    );
    assert_eq!(torn_kills, 0, "a reader saw the state file torn");
}

async fn read_closed(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A 408 or 503 before the close is fine; keep reading until the close.
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// 200 connections that never finish their request head: real requests are still
/// answered at once, and every one of the 200 is closed after the header timeout; a
/// trickled body gets 408; over the connection cap a client is told 503 and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_while_real_requests_are_answered() {
    let mut cfg = config("edge-3", None);
    cfg.http = HttpLimits {
        header_timeout: Duration::from_millis(1000),
        body_timeout: Duration::from_millis(1000),
        max_connections: 256,
        ..HttpLimits::default()
    };
    let agent = Agent::new(cfg).unwrap();
    let served = serve(Arc::clone(&agent)).await;
    let addr = served.url.trim_start_matches("http://").to_string();
    let opened = Instant::now();
    let mut half_open = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: edge-3\r\nX-Slow: ").await.unwrap();
        half_open.push(s);
    }
    let c = AgentClient::new(Duration::from_secs(3), Some(TOKEN.into())).unwrap();
    let asked = Instant::now();
    let status = c.status(&served.url).await.unwrap();
    let answered_in = asked.elapsed();
    assert_eq!(status.name, "edge-3");
    assert!(answered_in < Duration::from_secs(2), "answered in {answered_in:?} under 200 half-open connections");
    let mut closed = 0;
    for s in &mut half_open {
        closed += usize::from(read_closed(s, Duration::from_secs(4)).await);
    }
    let all_closed_after = opened.elapsed();
    eprintln!(
        "200 half-open connections: a real request answered in {answered_in:?}; {closed} closed within {all_closed_after:?} (header timeout 1 s)"
    );
    assert_eq!(closed, 200);
    assert!(all_closed_after < Duration::from_secs(4), "{all_closed_after:?}");

    // A body that never finishes.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/extensions/auth-filter HTTP/1.1\r\nHost: edge-3\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"vers"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let started = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"timeout""#), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(agent.status().extensions[0].version, "2.0.3");
    served.stop().await;

    // The cap: 20 connections held, the 21st is told so and closed at once.
    let mut cfg = config("edge-4", None);
    cfg.http = HttpLimits { header_timeout: Duration::from_millis(800), max_connections: 20, ..HttpLimits::default() };
    let served = serve(Agent::new(cfg).unwrap()).await;
    let addr = served.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /v1/status HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // Give the server the time to accept all 20 before the 21st.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_millis(500), extra.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with(r#"{"code":"unavailable","error":"too many open connections"}"#), "{answer}");
    // Once the held ones time out, the agent answers again.
    for s in &mut held {
        assert!(read_closed(s, Duration::from_secs(3)).await);
    }
    assert_eq!(c.status(&served.url).await.unwrap().name, "edge-4");
    served.stop().await;
}

/// A registration endpoint and an empty poller on loopback.
struct Parley {
    poller: Arc<Poller>,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

const DOWN_AFTER: Duration = Duration::from_millis(600);

async fn parley() -> Parley {
    parley_with(None).await
}

async fn parley_with(bindings_file: Option<std::path::PathBuf>) -> Parley {
    let config = PollerConfig {
        interval: Duration::from_millis(100),
        suspect_after: Duration::from_millis(300),
        down_after: DOWN_AFTER,
        ..PollerConfig::default()
    };
    let client = AgentClient::new(Duration::from_millis(250), Some(TOKEN.into())).unwrap();
    let poller = Arc::new(Poller::new(Vec::new(), client, Arc::new(Catalog::embedded().unwrap()), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let options = registration::RegistrationOptions {
        token: Some(TOKEN.into()),
        bindings_file,
        ..registration::RegistrationOptions::default()
    };
    let task = tokio::spawn(registration::serve_with(listener, Arc::clone(&poller), &options, async move {
        let _ = stopped.await;
    }));
    Parley { poller, url, stop: Some(stop), task }
}

impl Parley {
    fn endpoints(&self) -> Vec<String> {
        self.poller.inventory().iter().map(|e| e.endpoint.clone()).collect()
    }

    /// Waits until the inventory is `want`, in any order.
    async fn wait_for_endpoints(&self, want: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let sorted = || {
            let mut e = self.endpoints();
            e.sort();
            e
        };
        while sorted() != want {
            assert!(Instant::now() < deadline, "inventory {:?}, want {want:?}", self.endpoints());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn liveness(&self, name: &str) -> Option<Liveness> {
        self.poller.refresh().await;
        self.poller.handle().snapshot().agent(name).map(|a| a.liveness)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap().unwrap();
    }
}

/// `parley agent` in-process, registering with `parley`; abort the task to kill it
/// (no deregistration), or send on the channel to stop it gracefully.
fn start_registered(
    parley: &Parley,
    state: &Path,
) -> (oneshot::Receiver<String>, oneshot::Sender<()>, JoinHandle<Result<(), standalone::StandaloneError>>) {
    let options = StandaloneOptions {
        agent: config("edge-9", Some(state)),
        listen: "127.0.0.1:0".parse().unwrap(),
        register: Some(Registration { url: parley.url.clone(), advertise: None, heartbeat: Duration::from_millis(50) }),
    };
    let (addr_tx, addr_rx) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(standalone::run(
        options,
        move |addr| {
            let _ = addr_tx.send(format!("http://{addr}"));
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (addr_rx, stop, task)
}

fn register_body(name: &str, endpoint: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "endpoint": endpoint, "region": "eu-west", "zone": "eu-west-a"})
}

/// The impersonation findings, one after another on one registration endpoint: an
/// impostor at a second endpoint, a token holder deregistering someone else, spoofed
/// heartbeats for a dead agent, the move to a new endpoint, and the rebinding of a
/// name whose endpoint Parley's own polls have proven dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_name_belongs_to_its_agent_and_liveness_comes_from_polls() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("edge-9.json");
    let parley = parley().await;
    let http = reqwest::Client::new();

    let (addr, _stop, real) = start_registered(&parley, &state);
    let real_url = addr.await.unwrap();
    parley.wait_for_endpoints(&[&real_url]).await;
    assert_eq!(parley.liveness("edge-9").await, Some(Liveness::Healthy));
    let credential_file = standalone::credential_file(&state);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !credential_file.exists() {
        assert!(Instant::now() < deadline, "no credential kept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let credential = std::fs::read_to_string(&credential_file).unwrap();
    assert_eq!(credential.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credential_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    // An impostor: a real agent server that also calls itself edge-9, at a second
    // endpoint, with the shared token.
    let impostor = Agent::new(config("edge-9", None)).unwrap();
    let impostor_served = serve(Arc::clone(&impostor)).await;
    let resp = http
        .post(format!("{}/v1/register", parley.url))
        .bearer_auth(TOKEN)
        .json(&register_body("edge-9", &impostor_served.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let err: ErrorBody = resp.json().await.unwrap();
    assert_eq!(err.code, "forbidden");
    assert_eq!(
        err.error,
        "edge-9 is registered from another endpoint that is alive; only that agent, with its credential, can re-register it"
    );
    assert_eq!(parley.endpoints(), std::slice::from_ref(&real_url), "the impostor is not polled");
    // A rollout resolves edge-9 through the model: the real agent, nobody else.
    parley.poller.refresh().await;
    let model = parley.poller.handle().snapshot();
    let named: Vec<&str> = model.agents().iter().filter(|a| a.name == "edge-9").map(|a| a.endpoint.as_str()).collect();
    assert_eq!(named, [real_url.as_str()]);

    // Registering under a fresh name but reporting edge-9 does not get in either.
    let resp = http
        .post(format!("{}/v1/register", parley.url))
        .bearer_auth(TOKEN)
        .json(&register_body("edge-99", &impostor_served.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    parley.poller.refresh().await;
    let model = parley.poller.handle().snapshot();
    assert_eq!(model.agents().iter().filter(|a| a.name == "edge-9").count(), 1);
    assert_eq!(model.agent("edge-99").map(|a| a.liveness), Some(Liveness::Down), "its answers are refused");

    // Any holder of the shared token is not edge-9.
    let resp = http.delete(format!("{}/v1/register/edge-9", parley.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(parley.poller.handle().snapshot().agents().iter().filter(|a| a.name == "edge-9").count(), 1);

    // edge-9 dies (no deregistration). Heartbeats keep coming: spoofed ones with the
    // token are refused, and even ones with its credential do not keep it alive.
    real.abort();
    let _ = real.await;
    let died = Instant::now();
    let liveness = loop {
        for proof in [None, Some(credential.as_str())] {
            let mut req = http
                .post(format!("{}/v1/heartbeat", parley.url))
                .bearer_auth(TOKEN)
                .json(&serde_json::json!({"name": "edge-9"}));
            if let Some(c) = proof {
                req = req.header(CREDENTIAL_HEADER, c);
            }
            let status = req.send().await.unwrap().status();
            assert_eq!(status, if proof.is_some() { 204 } else { 403 });
        }
        let liveness = parley.liveness("edge-9").await;
        if liveness == Some(Liveness::Down) || died.elapsed() > Duration::from_secs(4) {
            break liveness;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let down_in = died.elapsed();
    assert_eq!(liveness, Some(Liveness::Down), "heartbeats kept a dead agent {liveness:?} for {down_in:?}");
    assert!(down_in < DOWN_AFTER + Duration::from_millis(1500), "down after {down_in:?}");

    // It comes back on another port with its state directory: the registration
    // moves, and the old endpoint is not left behind as a twin.
    let (addr, stop, again) = start_registered(&parley, &state);
    let moved_url = addr.await.unwrap();
    assert_ne!(moved_url, real_url);
    parley.wait_for_endpoints(&[&moved_url, &impostor_served.url]).await;
    assert_eq!(parley.liveness("edge-9").await, Some(Liveness::Healthy));
    assert_eq!(std::fs::read_to_string(&credential_file).unwrap(), credential, "still itself");

    // Killed again and proven dead by the polls: then, and only then, the name is
    // free without the credential, and the old credential stops working.
    again.abort();
    let _ = again.await;
    drop(stop);
    let died = Instant::now();
    while parley.liveness("edge-9").await != Some(Liveness::Down) || died.elapsed() < DOWN_AFTER {
        assert!(died.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resp = http
        .post(format!("{}/v1/register", parley.url))
        .bearer_auth(TOKEN)
        .json(&register_body("edge-9", &impostor_served.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rebound: Registered = resp.json().await.unwrap();
    assert!(rebound.credential.as_ref().is_some_and(|c| *c != credential));
    assert!(!parley.endpoints().contains(&moved_url), "{:?}", parley.endpoints());
    let resp = http
        .post(format!("{}/v1/heartbeat", parley.url))
        .bearer_auth(TOKEN)
        .header(CREDENTIAL_HEADER, &credential)
        .json(&serde_json::json!({"name": "edge-9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    impostor_served.stop().await;
    parley.stop().await;
}

/// A graceful stop deregisters with the agent's own credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_deregisters_with_the_agents_credential() {
    let dir = tempfile::tempdir().unwrap();
    let parley = parley().await;
    let (addr, stop, task) = start_registered(&parley, &dir.path().join("edge-9.json"));
    let url = addr.await.unwrap();
    parley.wait_for_endpoints(&[&url]).await;
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(parley.endpoints().is_empty());
    assert!(parley.poller.handle().snapshot().agent("edge-9").is_none());
    parley.stop().await;
}

/// Parley restarts: the bindings come back from its data directory before anyone can
/// register, the agent is polled at once, an impostor is still refused and the agent's
/// credential still works. The file holds hashes, never a credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_survive_a_restart_of_parley() {
    let dir = tempfile::tempdir().unwrap();
    let bindings = dir.path().join("registrations.json");
    let state = dir.path().join("edge-9.json");
    let first = parley_with(Some(bindings.clone())).await;
    let (addr, _stop, agent) = start_registered(&first, &state);
    let url = addr.await.unwrap();
    first.wait_for_endpoints(&[&url]).await;
    let credential_file = standalone::credential_file(&state);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !credential_file.exists() {
        assert!(Instant::now() < deadline, "no credential kept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let credential = std::fs::read_to_string(&credential_file).unwrap();
    first.stop().await;

    let kept = std::fs::read_to_string(&bindings).unwrap();
    assert!(!kept.contains(&credential), "{kept}");
    let saved: serde_json::Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(saved["edge-9"]["endpoint"], url.as_str(), "{kept}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&bindings).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let second = parley_with(Some(bindings.clone())).await;
    // Loaded before the endpoint accepts anyone, without the agent registering again.
    assert_eq!(second.endpoints(), std::slice::from_ref(&url));
    assert_eq!(second.liveness("edge-9").await, Some(Liveness::Healthy));
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/register", second.url))
        .bearer_auth(TOKEN)
        .json(&register_body("edge-9", "http://127.0.0.1:9"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403, "an impostor right after the restart");
    let resp = http
        .post(format!("{}/v1/heartbeat", second.url))
        .bearer_auth(TOKEN)
        .header(CREDENTIAL_HEADER, &credential)
        .json(&serde_json::json!({"name": "edge-9"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    agent.abort();
    let _ = agent.await;
    second.stop().await;

    // A file that is not valid is set aside, not trusted in part.
    std::fs::write(&bindings, "{\"../x\": {\"endpoint\": \"http://127.0.0.1:9\", \"credential\": \"00\"}}").unwrap();
    let third = parley_with(Some(bindings.clone())).await;
    assert!(third.endpoints().is_empty());
    assert!(bindings.with_extension("json.bad").exists());
    third.stop().await;
}
