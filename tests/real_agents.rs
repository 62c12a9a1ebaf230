//! Real agents: three `parley agent --dir` processes installing real artifacts of
//! `hello-svc` (built by scripts/example-extensions, served over HTTP by python3's
//! http.server), driven by a canary rollout through `parley chat --json`; artifacts
//! that must be refused (tampered, wrong size, escaping the directory, a failing
//! hook); and an agent SIGKILLed in the middle of an install.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parley::agent::protocol::{AgentStatus, ErrorBody, ProbeState};
use parley::agent::AgentClient;
use parley::artifact::{sha256_hex, ArtifactRef};
use parley::topology::Catalog;
use serde_json::Value;

const TOKEN: &str = "real-s3cret";

/// A child process killed (and reaped) when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// SIGTERM, then wait: a graceful stop (services stopped too).
    fn stop(mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Builds the example artifacts into `dir/art`, served at the returned base URL by
/// `python3 -m http.server`; returns the server and the artifact directory.
fn artifacts(dir: &Path) -> (Proc, PathBuf, String) {
    let art = dir.join("art");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/example-extensions");
    let out = Command::new(&script).arg(&art).arg(&base).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let server = Proc(
        Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1", "--directory"])
            .arg(&art)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed for the example service"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the artifact server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, art, base)
}

fn catalog(art: &Path) -> Catalog {
    let path = art.join("catalog.toml");
    Catalog::from_toml(&std::fs::read_to_string(&path).unwrap(), "catalog.toml").unwrap().relative_to(Some(art))
}

/// Starts `parley agent --dir DIR` and returns it with its base URL.
fn start_agent(data: &Path, dir: &Path, name: &str, zone: &str) -> (Proc, String) {
    start_agent_with(data, dir, name, zone, &[])
}

/// The start timeout is generous: on a loaded machine python can take seconds to
/// answer, and an install answers once the new service passed its first probe (or
/// the start timeout ran out).
fn start_agent_with(data: &Path, dir: &Path, name: &str, zone: &str, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(common::parley_bin())
        .arg("--data-dir")
        .arg(data)
        .args(["agent", "--name", name, "--region", "us-east", "--zone", zone])
        .args(["--labels", "env=staging,tier=edge", "--listen", "127.0.0.1:0", "--start-timeout-ms", "8000"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .env("PARLEY_AGENT_TOKEN", TOKEN)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap_or("").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    // Keep draining, so a later line never finds the pipe closed.
    std::thread::spawn(move || for _ in stderr.lines() {});
    (Proc(child), url)
}

fn client(catalog: &Catalog) -> AgentClient {
    AgentClient::new(Duration::from_secs(20), Some(TOKEN.into())).unwrap().with_artifacts(catalog)
}

fn status(url: &str) -> AgentStatus {
    rt().block_on(AgentClient::new(Duration::from_secs(5), Some(TOKEN.into())).unwrap().status(url)).unwrap()
}

/// (version, probe state, pid, port) of hello-svc as the agent reports it.
fn hello(url: &str) -> Option<(String, ProbeState, Option<u32>, Option<u16>)> {
    let s = status(url);
    s.extensions.iter().find(|e| e.name == "hello-svc").map(|e| {
        let h = e.health.clone().expect("a real agent reports the extension's health");
        (e.version.clone(), h.state, h.pid, h.port)
    })
}

/// What the service on `port` says at /health: (HTTP status, version), or None when
/// nothing answers.
fn probe(port: u16) -> Option<(u16, String)> {
    rt().block_on(async {
        let resp = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/health"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let code = resp.status().as_u16();
        let body: Value = resp.json().await.ok()?;
        Some((code, body["version"].as_str().unwrap_or("").to_string()))
    })
}

fn current(dir: &Path) -> String {
    std::fs::read_link(dir.join("extensions/hello-svc/current")).unwrap().display().to_string()
}

fn alive(pid: u32) -> bool {
    // A reaped process has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(false)
}

/// The process group of `pid`, from /proc.
fn pgrp(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state, ppid, pgrp.
    stat.rsplit(')').next()?.split_whitespace().nth(2)?.parse().ok()
}

/// Live (not zombie) processes in process group `group`.
fn in_group(group: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| pgrp(*pid) == Some(group) && alive(*pid))
        .collect()
}

/// Writes `art/NAME.toml`, a catalog of hello-svc with `versions` (version, artifact
/// file), and returns its path and the catalog.
fn catalog_with(art: &Path, name: &str, versions: &[(&str, &Path)]) -> (PathBuf, Catalog) {
    let list: Vec<String> = versions.iter().map(|(v, _)| format!("\"{v}\"")).collect();
    let mut text = format!("[[extension]]\nname = \"hello-svc\"\nversions = [{}]\n", list.join(", "));
    for (v, file) in versions {
        let r = file_ref(file);
        text.push_str(&format!(
            "\n[extension.artifacts.\"{v}\"]\nurl = \"{}\"\nsha256 = \"{}\"\nsize = {}\n",
            r.url,
            r.sha256,
            r.size.unwrap()
        ));
    }
    let path = art.join(format!("{name}.toml"));
    std::fs::write(&path, &text).unwrap();
    (path.clone(), Catalog::from_toml(&text, "catalog").unwrap())
}

#[test]
fn a_canary_installs_real_versions_and_a_version_failing_its_probe_rolls_back_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, art, _) = artifacts(tmp.path());
    let cat = catalog(&art);
    let names = ["real-1", "real-2", "real-3"];
    let mut agents = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let dir = tmp.path().join(name);
        let zone = if i == 0 { "us-east-a" } else { "us-east-b" };
        let (p, url) = start_agent(&tmp.path().join("data"), &dir, name, zone);
        agents.push((p, url, dir));
    }
    // 1.0.0 everywhere first, straight through the protocol (with the catalog's artifact).
    let c = client(&cat);
    let mut old = BTreeMap::new();
    for (_, url, dir) in &agents {
        let s = rt().block_on(c.install(url, "hello-svc", "1.0.0")).unwrap();
        assert_eq!(s.extensions.len(), 1);
        let (v, state, pid, port) = hello(url).unwrap();
        assert_eq!((v.as_str(), state), ("1.0.0", ProbeState::Ok));
        assert_eq!(probe(port.unwrap()), Some((200, "1.0.0".into())));
        assert_eq!(current(dir), "1.0.0");
        old.insert(url.clone(), (pid.unwrap(), port.unwrap()));
    }

    let inventory = tmp.path().join("fleet.toml");
    let mut inv = String::new();
    for (_, url, _) in &agents {
        inv.push_str(&format!("[[agent]]\nendpoint = \"{url}\"\n"));
    }
    std::fs::write(&inventory, inv).unwrap();
    let config = tmp.path().join("parley.toml");
    std::fs::write(
        &config,
        format!(
            "catalog = \"{}\"\n[fleet]\ninventory = \"{}\"\n",
            art.join("catalog.toml").display(),
            inventory.display()
        ),
    )
    .unwrap();
    let data = tmp.path().join("parley");
    let mut cmd = common::parley(&data);
    cmd.arg("--config").arg(&config).env("PARLEY_AGENT_TOKEN", TOKEN);
    let mut chat = common::Chat::start_command(cmd, &data);
    chat.eventually("which agents run hello-svc 1.0.0?", |t| {
        t["details"]["agents"].as_array().map(Vec::len) == Some(3)
    });

    // 2.0.0: a clean canary.
    let t = chat.say_confirmed("canary hello-svc 2.0.0 to us-east");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    let mut new = BTreeMap::new();
    for (_, url, dir) in &agents {
        assert_eq!(current(dir), "2.0.0");
        assert!(dir.join("extensions/hello-svc/2.0.0/server.py").is_file());
        let (v, state, pid, port) = hello(url).unwrap();
        assert_eq!((v.as_str(), state), ("2.0.0", ProbeState::Ok));
        assert_eq!(probe(port.unwrap()), Some((200, "2.0.0".into())));
        let (old_pid, old_port) = old[url];
        assert!(!alive(old_pid), "1.0.0's process {old_pid} still runs");
        assert_eq!(probe(old_port), None, "1.0.0 still answers on {old_port}");
        new.insert(url.clone(), (pid.unwrap(), port.unwrap()));
    }

    // 2.1.0 answers its probe with 500: the gate fails at the first step and the
    // rollout returns the canary to 2.0.0 by itself.
    let t = chat.say_confirmed("canary hello-svc 2.1.0 to us-east");
    assert_eq!(t["deployment"], "d-2", "{t}");
    let done = chat.wait_for_status("d-2", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "rolled_back", "{done}");
    let said = done.to_string();
    assert!(said.contains("error rate 100%"), "the gate's reason: {said}");
    let mut touched = 0;
    for (_, url, dir) in &agents {
        assert_eq!(current(dir), "2.0.0");
        let (v, state, pid, port) = hello(url).unwrap();
        assert_eq!((v.as_str(), state), ("2.0.0", ProbeState::Ok));
        assert_eq!(probe(port.unwrap()), Some((200, "2.0.0".into())), "2.0.0 serves again on {url}");
        assert!(alive(pid.unwrap()));
        if dir.join("extensions/hello-svc/2.1.0").exists() {
            // The canary: 2.1.0 was unpacked and activated, then switched back from.
            touched += 1;
            assert_ne!(new[url].0, pid.unwrap(), "2.0.0 was restarted after 2.1.0 was stopped");
            let log = std::fs::read_to_string(dir.join("extensions/hello-svc/2.1.0/activations.log")).unwrap();
            assert_eq!(log.lines().filter(|l| l.starts_with("activated")).count(), 1, "{log}");
        } else {
            assert_eq!(new[url].0, pid.unwrap(), "an agent the canary never reached kept its process");
        }
    }
    assert_eq!(touched, 1, "the first canary step is one agent of three");
    chat.finish();
    for (p, _, _) in agents {
        p.stop();
    }
}

/// Every file under `dir` (but the logs) with its size and hash: what "nothing on
/// disk changed" compares.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(at).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel == "logs" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", std::fs::read_link(&p).unwrap().display()));
            } else if meta.is_dir() {
                out.insert(rel.clone(), "dir".into());
                walk(root, &p, out);
            } else {
                out.insert(rel, sha256_hex(&std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// PUTs an install with an explicit artifact; answers (status code, error body).
fn put(url: &str, version: &str, artifact: &ArtifactRef) -> (u16, ErrorBody) {
    rt().block_on(async {
        let body = serde_json::json!({ "version": version, "artifact": artifact });
        let resp = reqwest::Client::new()
            .put(format!("{url}/v1/extensions/hello-svc"))
            .bearer_auth(TOKEN)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (code, serde_json::from_str(&text).unwrap_or(ErrorBody { code: "?".into(), error: text }))
    })
}

fn file_ref(path: &Path) -> ArtifactRef {
    let bytes = std::fs::read(path).unwrap();
    ArtifactRef {
        url: format!("file://{}", path.display()),
        sha256: sha256_hex(&bytes),
        size: Some(bytes.len() as u64),
        signature: None,
    }
}

/// A variant of the 1.0.0 artifact as `version`, with `edit` run (sh) in its tree.
fn variant(art: &Path, version: &str, edit: &str) -> PathBuf {
    let tree = art.join(format!("tree-{version}"));
    std::fs::create_dir_all(&tree).unwrap();
    let out = art.join(format!("hello-svc-{version}.tar.gz"));
    let script = format!(
        "set -e; tar xzf {src} -C {tree}; cd {tree}; sed -i 's/^version = .*/version = \"{version}\"/' extension.toml; sed -i 's/1.0.0/{version}/' config.json; {edit}; tar czf {out} .",
        src = art.join("hello-svc-1.0.0.tar.gz").display(),
        tree = tree.display(),
        out = out.display(),
    );
    assert!(Command::new("sh").arg("-c").arg(&script).status().unwrap().success());
    out
}

#[test]
fn bad_artifacts_are_refused_with_a_reason_and_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, art, base) = artifacts(tmp.path());
    let cat = catalog(&art);
    let dir = tmp.path().join("agent");
    let (agent, url) = start_agent(&tmp.path().join("data"), &dir, "real-1", "us-east-a");
    rt().block_on(client(&cat).install(&url, "hello-svc", "1.0.0")).unwrap();
    let (_, _, pid, port) = hello(&url).unwrap();
    let before = snapshot(&dir);
    let reported = status(&url).extensions;
    let unchanged = |why: &str| {
        assert_eq!(snapshot(&dir), before, "disk changed after: {why}");
        assert_eq!(status(&url).extensions, reported, "reported state changed after: {why}");
        assert_eq!(probe(port.unwrap()), Some((200, "1.0.0".into())), "1.0.0 stopped serving after: {why}");
        assert_eq!(hello(&url).unwrap().2, pid);
    };

    // One byte changed.
    let good = art.join("hello-svc-2.0.0.tar.gz");
    let mut bytes = std::fs::read(&good).unwrap();
    let tampered = art.join("tampered.tar.gz");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&tampered, &bytes).unwrap();
    let mut r = file_ref(&good);
    let want = r.sha256.clone();
    r.url = format!("file://{}", tampered.display());
    let (code, e) = put(&url, "2.0.0", &r);
    assert_eq!((code, e.code.as_str()), (500, "install_failed"));
    assert_eq!(
        e.error,
        format!(
            "installing hello-svc 2.0.0 failed: file://{} does not match its SHA-256: the catalog says {want}, the file has {}",
            tampered.display(),
            sha256_hex(&bytes)
        )
    );
    unchanged("a tampered artifact");

    // A download of another size than the catalog says, over HTTP.
    let mut r = cat.get("hello-svc").unwrap().artifacts["2.0.0"].clone();
    let real_size = r.size.unwrap();
    // Shorter than the file: the download stops one byte past what was announced.
    r.size = Some(real_size - 100);
    let (code, e) = put(&url, "2.0.0", &r);
    assert_eq!(code, 500);
    assert_eq!(
        e.error,
        format!(
            "installing hello-svc 2.0.0 failed: {base}/hello-svc-2.0.0.tar.gz is larger than the {} bytes the catalog says",
            real_size - 100
        )
    );
    r.size = Some(real_size + 7);
    let (_, e) = put(&url, "2.0.0", &r);
    assert_eq!(
        e.error,
        format!(
            "installing hello-svc 2.0.0 failed: {base}/hello-svc-2.0.0.tar.gz is {real_size} bytes, the catalog says {} bytes",
            real_size + 7
        )
    );
    unchanged("wrong-size downloads");

    // An archive with a `../` entry (written by python's tarfile, which allows it).
    let evil = art.join("evil.tar.gz");
    let py = format!(
        "import tarfile, io\nt = tarfile.open('{}', 'w:gz')\nfor name, data in [('extension.toml', b'name = \"hello-svc\"\\nversion = \"6.6.6\"\\n'), ('../escaped.txt', b'out')]:\n    i = tarfile.TarInfo(name); i.size = len(data); t.addfile(i, io.BytesIO(data))\nt.close()\n",
        evil.display()
    );
    assert!(Command::new("python3").arg("-c").arg(&py).status().unwrap().success());
    let (code, e) = put(&url, "6.6.6", &file_ref(&evil));
    assert_eq!(code, 500);
    assert_eq!(
        e.error,
        "installing hello-svc 6.6.6 failed: archive entry `../escaped.txt` climbs out with `..`; the archive is refused"
    );
    assert!(!dir.join("extensions/hello-svc/escaped.txt").exists());
    assert!(!dir.join("extensions/escaped.txt").exists());
    unchanged("an archive escaping its directory");

    // A failing activate hook: the previous version is active again, and says so.
    let broken = variant(&art, "3.1.0", "echo 'echo cannot bind the admin socket >&2; exit 3' > hooks/activate.sh");
    let (code, e) = put(&url, "3.1.0", &file_ref(&broken));
    assert_eq!(code, 500);
    assert_eq!(
        e.error,
        "installing hello-svc 3.1.0 failed: activating hello-svc 3.1.0 failed: the activate hook exited with status 3: cannot bind the admin socket; hello-svc 1.0.0 is active again"
    );
    assert_eq!(current(&dir), "1.0.0");
    let (v, state, _, port) = hello(&url).unwrap();
    assert_eq!((v.as_str(), state), ("1.0.0", ProbeState::Ok));
    assert_eq!(probe(port.unwrap()), Some((200, "1.0.0".into())));

    // No artifact at all for a version the agent does not have.
    let (code, e) = rt().block_on(async {
        let resp = reqwest::Client::new()
            .put(format!("{url}/v1/extensions/hello-svc"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"version": "9.9.9"}))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<ErrorBody>().await.unwrap())
    });
    assert_eq!(code, 500);
    assert_eq!(e.error, "installing hello-svc 9.9.9 failed: hello-svc 9.9.9 is not on this agent and the request names no artifact; this agent installs real artifacts (url and sha256, from the catalog)");
    agent.stop();
}

#[test]
fn an_agent_killed_in_the_middle_of_an_install_restarts_with_one_active_version() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, art, _) = artifacts(tmp.path());
    let cat = catalog(&art);
    let dir = tmp.path().join("agent");
    let data = tmp.path().join("data");
    let (agent, url) = start_agent(&data, &dir, "real-1", "us-east-a");
    rt().block_on(client(&cat).install(&url, "hello-svc", "1.0.0")).unwrap();
    let (_, _, old_pid, _) = hello(&url).unwrap();

    // 4.0.0's install hook takes its time: the agent is killed while it runs.
    // The hook's shell forks `sleep`: a grandchild of what the agent spawned.
    let slow = variant(&art, "4.0.0", "echo 'echo $$ > hook.pid; touch hook-started; sleep 20' > hooks/install.sh");
    let r = file_ref(&slow);
    let u = url.clone();
    let installing = std::thread::spawn(move || put(&u, "4.0.0", &r));
    let staging = dir.join("extensions/hello-svc/.staging-4.0.0");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !staging.join("hook-started").exists() {
        assert!(Instant::now() < deadline, "the install never reached its hook");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hook_pid: u32 = std::fs::read_to_string(staging.join("hook.pid")).unwrap().trim().parse().unwrap();
    let group = pgrp(hook_pid).unwrap();
    assert!(in_group(group).len() >= 2, "the hook's shell and its sleep: {:?}", in_group(group));
    drop(agent); // SIGKILL
    let _ = installing.join();
    // The hook, and what it started, die with the agent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !in_group(group).is_empty() {
        assert!(Instant::now() < deadline, "the hook's processes {:?} outlived their agent", in_group(group));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(staging.exists(), "killed mid-unpack: the staging directory is still there");
    // The service dies with its agent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(old_pid.unwrap()) {
        assert!(Instant::now() < deadline, "1.0.0's process outlived its agent");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (agent, url) = start_agent(&data, &dir, "real-1", "us-east-a");
    let s = status(&url);
    let versions: Vec<(String, String)> = s.extensions.iter().map(|e| (e.name.clone(), e.version.clone())).collect();
    assert_eq!(versions, [("hello-svc".to_string(), "1.0.0".to_string())]);
    assert_eq!(current(&dir), "1.0.0");
    let left: Vec<String> = std::fs::read_dir(dir.join("extensions/hello-svc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(left, ["1.0.0", "current"], "staging cleaned, only the active version");
    // Its service was started again at restart; on a loaded machine python may take
    // longer than the start timeout to answer, and until then the probe says failing.
    let deadline = Instant::now() + Duration::from_secs(15);
    while hello(&url).unwrap().1 != ProbeState::Ok {
        assert!(Instant::now() < deadline, "1.0.0 never answered its probe after the restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (v, state, pid, port) = hello(&url).unwrap();
    assert_eq!((v.as_str(), state), ("1.0.0", ProbeState::Ok));
    assert_ne!(pid, old_pid);
    assert_eq!(probe(port.unwrap()), Some((200, "1.0.0".into())));
    agent.stop();
}

#[test]
fn an_agent_with_a_public_key_installs_only_what_the_key_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, art, _) = artifacts(tmp.path());
    let prefix = tmp.path().join("release");
    let run = |args: &[&str]| {
        let out = Command::new(common::parley_bin())
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["artifact", "keygen", prefix.to_str().unwrap()]);
    let unsigned = catalog(&art);
    let signed_path = art.join("catalog.toml");
    let said = run(&[
        "artifact",
        "sign",
        "--key",
        prefix.with_extension("key").to_str().unwrap(),
        signed_path.to_str().unwrap(),
    ]);
    assert_eq!(said.trim(), format!("signed 3 artifacts in {}", signed_path.display()));
    let signed = catalog(&art);
    assert!(signed.get("hello-svc").unwrap().artifacts["1.0.0"].signature.is_some());

    let dir = tmp.path().join("agent");
    let key = prefix.with_extension("pub");
    let (agent, url) = start_agent_with(
        &tmp.path().join("data"),
        &dir,
        "real-1",
        "us-east-a",
        &["--public-key", key.to_str().unwrap()],
    );
    rt().block_on(client(&signed).install(&url, "hello-svc", "1.0.0")).unwrap();
    let (_, _, _, port) = hello(&url).unwrap();
    let before = snapshot(&dir);
    let reported = status(&url).extensions;

    let e = rt().block_on(client(&unsigned).install(&url, "hello-svc", "2.0.0")).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{url} refused the request (500): installing hello-svc 2.0.0 failed: the artifact for hello-svc 2.0.0 is not signed, and this agent accepts only signed artifacts")
    );
    // A signature moved to another version does not verify.
    let mut moved = signed.get("hello-svc").unwrap().artifacts["2.1.0"].clone();
    moved.signature = signed.get("hello-svc").unwrap().artifacts["2.0.0"].signature.clone();
    let (code, e) = put(&url, "2.1.0", &moved);
    assert_eq!(code, 500);
    assert_eq!(e.error, "installing hello-svc 2.1.0 failed: the signature of hello-svc 2.1.0 does not verify with this agent's public key: it was made by another key or for another artifact");
    assert_eq!(snapshot(&dir), before);
    assert_eq!(status(&url).extensions, reported);
    assert_eq!(probe(port.unwrap()), Some((200, "1.0.0".into())));

    rt().block_on(client(&signed).install(&url, "hello-svc", "2.0.0")).unwrap();
    assert_eq!(hello(&url).unwrap().0, "2.0.0");
    agent.stop();
}

/// Runs `parley` with `args`; answers (exit code, stdout).
fn parley_out(data: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(common::parley_bin()).arg("--data-dir").arg(data).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn a_bundle_checks_completely_names_what_is_wrong_and_feeds_an_agent_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (server, art, _) = artifacts(tmp.path());
    let catalog_file = art.join("catalog.toml");
    let s = |p: &Path| p.display().to_string();
    let prefix = tmp.path().join("release");
    assert_eq!(parley_out(&data, &["artifact", "keygen", &s(&prefix)]).0, 0);
    let (key, public) = (s(&prefix.with_extension("key")), s(&prefix.with_extension("pub")));

    // Full and signed, fetched over HTTP from the catalog's URLs.
    let full = tmp.path().join("full.bundle");
    let (code, said) =
        parley_out(&data, &["bundle", "create", "--catalog", &s(&catalog_file), "--key", &key, &s(&full)]);
    assert_eq!((code, said.trim()), (0, format!("wrote {}: 3 artifacts, signed", full.display()).as_str()));
    drop(server); // from here on there is no network source
    let (code, said) = parley_out(&data, &["bundle", "verify", "--public-key", &public, &s(&full)]);
    assert_eq!(
        (code, said.trim()),
        (
            0,
            format!("{} checks: 3 artifacts, every file's SHA-256 matches, signature verified", full.display())
                .as_str()
        )
    );

    // One byte changed in one artifact inside the bundle.
    let x = tmp.path().join("x");
    std::fs::create_dir(&x).unwrap();
    assert!(Command::new("tar").arg("xzf").arg(&full).arg("-C").arg(&x).status().unwrap().success());
    let inner = x.join("artifacts/hello-svc-2.0.0.tar.gz");
    let mut bytes = std::fs::read(&inner).unwrap();
    let listed = sha256_hex(&bytes);
    bytes[10] ^= 0x40;
    std::fs::write(&inner, &bytes).unwrap();
    let bad = tmp.path().join("bad.bundle");
    assert!(Command::new("tar").arg("czf").arg(&bad).arg("-C").arg(&x).arg(".").status().unwrap().success());
    let (code, said) = parley_out(&data, &["bundle", "verify", "--public-key", &public, &s(&bad)]);
    assert_eq!(code, 1, "{said}");
    assert_eq!(
        said.trim(),
        format!(
            "problem: artifacts/hello-svc-2.0.0.tar.gz has SHA-256 {}, bundle.toml says {listed}",
            sha256_hex(&bytes)
        )
    );
    let (code, said) = parley_out(&data, &["bundle", "import", "--into", &s(&tmp.path().join("never")), &s(&bad)]);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("the bundle does not check: artifacts/hello-svc-2.0.0.tar.gz has SHA-256"), "{said}");
    assert!(!tmp.path().join("never/catalog.toml").exists());

    // Unsigned under a public key.
    let unsigned = tmp.path().join("unsigned.bundle");
    assert_eq!(
        parley_out(&data, &["bundle", "create", "--catalog", &s(&catalog_file), &s(&unsigned)]).0,
        2,
        "the artifact server is gone: nothing to fetch"
    );
    let offline = tmp.path().join("offline");
    let (code, said) =
        parley_out(&data, &["bundle", "import", "--public-key", &public, "--into", &s(&offline), &s(&full)]);
    assert_eq!(
        (code, said.trim()),
        (
            0,
            format!(
                "imported 3 artifacts into {}; use catalog = \"{}\"",
                offline.display(),
                offline.join("catalog.toml").display()
            )
            .as_str()
        )
    );
    let (code, said) =
        parley_out(&data, &["bundle", "create", "--catalog", &s(&offline.join("catalog.toml")), &s(&unsigned)]);
    assert_eq!(code, 0, "{said}");
    let (code, said) = parley_out(&data, &["bundle", "verify", "--public-key", &public, &s(&unsigned)]);
    assert_eq!((code, said.trim()), (1, "problem: the bundle is not signed, and a public key was given"));

    // Incremental: only what the target lacks.
    let have = tmp.path().join("have.toml");
    let text = std::fs::read_to_string(offline.join("catalog.toml")).unwrap();
    let mut t: toml::Table = toml::from_str(&text).unwrap();
    let ext = t.get_mut("extension").and_then(|e| e.as_array_mut()).unwrap()[0].as_table_mut().unwrap();
    let arts = ext.get_mut("artifacts").and_then(|a| a.as_table_mut()).unwrap();
    for v in ["2.0.0", "2.1.0"] {
        arts.remove(v).unwrap();
    }
    std::fs::write(&have, toml::to_string(&t).unwrap()).unwrap();
    let inc = tmp.path().join("inc.bundle");
    let (code, said) = parley_out(
        &data,
        &["bundle", "create", "--catalog", &s(&offline.join("catalog.toml")), "--have", &s(&have), &s(&inc)],
    );
    assert_eq!(
        (code, said.trim()),
        (0, format!("wrote {}: 2 artifacts, 1 left out (the target has them)", inc.display()).as_str())
    );
    assert_eq!(parley_out(&data, &["bundle", "verify", &s(&inc)]).0, 0);

    // The imported catalog is an artifact source an agent installs from, with no server.
    let cat = catalog(&offline);
    assert!(cat.get("hello-svc").unwrap().artifacts["2.0.0"].url.starts_with(&s(&offline)));
    let dir = tmp.path().join("agent");
    let (agent, url) = start_agent(&data, &dir, "real-1", "us-east-a");
    rt().block_on(client(&cat).install(&url, "hello-svc", "2.0.0")).unwrap();
    let (v, state, _, port) = hello(&url).unwrap();
    assert_eq!((v.as_str(), state), ("2.0.0", ProbeState::Ok));
    assert_eq!(probe(port.unwrap()), Some((200, "2.0.0".into())));
    agent.stop();
}

#[test]
fn installs_have_their_own_timeout_longer_than_the_call_timeout_and_one_past_it_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, art, _) = artifacts(tmp.path());
    let one = art.join("hello-svc-1.0.0.tar.gz");
    // 5.0.0's install hook takes 3 s, 6.0.0's 7 s (its hooks may take 10).
    let slow = variant(&art, "5.0.0", "echo 'sleep 3' > hooks/install.sh");
    let slower = variant(&art, "6.0.0", "echo 'sleep 7' > hooks/install.sh");
    let (catalog_file, cat) = catalog_with(&art, "slow", &[("1.0.0", &one), ("5.0.0", &slow), ("6.0.0", &slower)]);
    let dir = tmp.path().join("agent");
    let (agent, url) = start_agent(&tmp.path().join("data"), &dir, "real-1", "us-east-a");
    rt().block_on(client(&cat).install(&url, "hello-svc", "1.0.0")).unwrap();

    // Through chat: calls to agents time out after 1 s, the 3 s install does not.
    let inventory = tmp.path().join("fleet.toml");
    std::fs::write(&inventory, format!("[[agent]]\nendpoint = \"{url}\"\n")).unwrap();
    let config = tmp.path().join("parley.toml");
    std::fs::write(
        &config,
        format!(
            "catalog = \"{}\"\n[fleet]\ninventory = \"{}\"\ntimeout_ms = 1000\n",
            catalog_file.display(),
            inventory.display()
        ),
    )
    .unwrap();
    let data = tmp.path().join("parley");
    let mut cmd = common::parley(&data);
    cmd.arg("--config").arg(&config).env("PARLEY_AGENT_TOKEN", TOKEN);
    let mut chat = common::Chat::start_command(cmd, &data);
    let t = chat.eventually("which agents run hello-svc 1.0.0?", |t| {
        t["details"]["agents"].as_array().map(Vec::len) == Some(1)
    });
    // A real agent's replies are not labelled as a simulation.
    assert_eq!(t.get("simulated"), None, "{t}");
    assert!(!t["message"].as_str().unwrap().contains("imulated"), "{t}");
    let started = Instant::now();
    let t = chat.say_confirmed("canary hello-svc 5.0.0 to us-east");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    assert_eq!(done.get("simulated"), None, "{done}");
    assert!(started.elapsed() >= Duration::from_secs(3));
    chat.finish();
    assert_eq!(current(&dir), "5.0.0");
    assert_eq!(hello(&url).unwrap().1, ProbeState::Ok);

    // Straight through the client: a 5 s install bound, and a 7 s hook.
    let c = AgentClient::new(Duration::from_secs(1), Some(TOKEN.into()))
        .unwrap()
        .with_artifacts(&cat)
        .with_install_timeout(Duration::from_secs(5));
    let started = Instant::now();
    let e = rt().block_on(c.install(&url, "hello-svc", "6.0.0")).unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        e.to_string(),
        format!(
            "{url} did not finish installing hello-svc 6.0.0 within 5 s (the install timeout, [fleet] install_timeout_ms)"
        )
    );
    assert!(took >= Duration::from_secs(5) && took < Duration::from_secs(7), "{took:?}");
    // Status reads keep the short timeout and answer meanwhile.
    assert_eq!(rt().block_on(c.status(&url)).unwrap().extensions[0].version, "5.0.0");
    // The agent finishes what it began (a dropped request cuts nothing off half-way).
    let deadline = Instant::now() + Duration::from_secs(15);
    let version = || status(&url).extensions.iter().find(|e| e.name == "hello-svc").map(|e| e.version.clone());
    while version().as_deref() != Some("6.0.0") {
        assert!(Instant::now() < deadline, "the install did not finish on the agent");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, state, _, port) = hello(&url).unwrap();
    assert_eq!(state, ProbeState::Ok);
    assert_eq!(probe(port.unwrap()), Some((200, "6.0.0".into())));
    assert_eq!(current(&dir), "6.0.0");
    agent.stop();
}

/// The agent's `GET /metrics`.
fn scrape(url: &str) -> String {
    rt().block_on(async {
        let resp = reqwest::Client::new().get(format!("{url}/metrics")).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    })
}

/// The value of the sample `series` (name and labels exactly), if there is one.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `promtool check metrics` on `text`, where promtool is installed.
fn promtool(text: &str) {
    use std::io::Write;
    let Ok(mut check) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED: promtool is not installed (apt-get install prometheus)");
        return;
    };
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

#[test]
fn a_real_agent_exports_only_what_it_measures() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, art, _) = artifacts(tmp.path());
    let dir = tmp.path().join("agent");
    let (agent, url) = start_agent(&tmp.path().join("data"), &dir, "real-1", "us-east-a");
    let who = "agent=\"real-1\",region=\"us-east\",zone=\"us-east-a\"";
    let traffic = ["parley_agent_requests_total", "parley_agent_request_errors_total", "parley_agent_request_duration"];

    // Nothing installed: nothing to measure but the agent's own answers.
    let text = scrape(&url);
    for series in traffic.iter().chain(&["parley_agent_cpu_usage_ratio", "parley_agent_memory_usage_ratio"]) {
        assert!(!text.contains(series), "{series} with nothing measured:\n{text}");
    }
    assert_eq!(sample(&text, &format!("parley_agent_serving{{{who},state=\"active\"}}")), Some(1.0), "{text}");
    promtool(&text);

    // A service without a metrics endpoint: its probe and /proc, no traffic series.
    let quiet = variant(&art, "7.0.0", "sed -i '/^\\[metrics\\]/,$d' extension.toml");
    let (code, e) = put(&url, "7.0.0", &file_ref(&quiet));
    assert_eq!(code, 200, "{}", e.error);
    let ext = format!("{who},extension=\"hello-svc\",version=\"7.0.0\"");
    let text = scrape(&url);
    for series in traffic {
        assert!(!text.contains(series), "{series} without an endpoint to read it from:\n{text}");
    }
    assert_eq!(sample(&text, &format!("parley_agent_extension_probe_up{{{ext}}}")), Some(1.0), "{text}");
    assert_eq!(sample(&text, &format!("parley_agent_extension_info{{{ext}}}")), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, &format!("parley_agent_installs_total{{{ext},result=\"succeeded\"}}")),
        Some(1.0),
        "{text}"
    );
    let memory = sample(&text, &format!("parley_agent_memory_usage_ratio{{{who}}}")).unwrap();
    assert!(memory > 0.0 && memory < 1.0, "{text}");
    assert!(sample(&text, &format!("parley_agent_cpu_usage_ratio{{{who}}}")).is_some(), "{text}");
    promtool(&text);

    // A service with one: what it counts, exactly. Its probe is a command, so only
    // the requests below reach it; its /health answers 500 (config.json unhealthy).
    let loud = variant(
        &art,
        "8.0.0",
        "sed -i 's|^http = .*|command = \"true\"|' extension.toml; sed -i 's/true}/false}/' config.json",
    );
    let (code, e) = put(&url, "8.0.0", &file_ref(&loud));
    assert_eq!(code, 200, "{}", e.error);
    let port = hello(&url).unwrap().3.unwrap();
    // Its probe (`true`) passes before python listens: wait for the port.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "8.0.0 never listened on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    rt().block_on(async {
        let http = reqwest::Client::new();
        for path in ["/", "/", "/", "/", "/", "/health", "/health"] {
            http.get(format!("http://127.0.0.1:{port}{path}")).send().await.unwrap();
        }
    });
    let ext = format!("{who},extension=\"hello-svc\",version=\"8.0.0\"");
    let requests = format!("parley_agent_requests_total{{{ext}}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(&url);
        if sample(&text, &requests) == Some(7.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "the agent never read 7 requests:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(sample(&text, &format!("parley_agent_request_errors_total{{{ext}}}")), Some(2.0), "{text}");
    // Bucket by bucket, what the service itself says.
    let own = rt().block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap().text().await.unwrap()
    });
    let mut buckets = 0;
    for le in ["0.005", "0.01", "0.05", "0.1", "0.5", "1.0", "+Inf"] {
        let theirs = sample(&own, &format!("hello_request_seconds_bucket{{le=\"{le}\"}}")).unwrap();
        let le = if le == "1.0" { "1" } else { le };
        let ours = sample(&text, &format!("parley_agent_request_duration_seconds_bucket{{{ext},le=\"{le}\"}}"));
        assert_eq!(ours, Some(theirs), "le {le}:\n{text}\n{own}");
        buckets += 1;
    }
    assert_eq!(buckets, 7);
    assert_eq!(sample(&text, &format!("parley_agent_request_duration_seconds_count{{{ext}}}")), Some(7.0));
    assert_eq!(
        sample(&text, &format!("parley_agent_request_duration_seconds_sum{{{ext}}}")),
        sample(&own, "hello_request_seconds_sum"),
        "{text}"
    );
    let old: Vec<&str> = text.lines().filter(|l| l.contains("version=\"7.0.0\"")).collect();
    assert_eq!(
        old,
        [format!(
            "parley_agent_installs_total{{{who},extension=\"hello-svc\",version=\"7.0.0\",result=\"succeeded\"}} 1"
        )],
        "the old version's series end but its install count:\n{text}"
    );
    promtool(&text);
    agent.stop();
}

/// Zips the tree `src` into `out` with python's zipfile, then runs `extra` (python,
/// with the open ZipFile `z`) to add entries.
fn zip_tree(src: Option<&Path>, out: &Path, extra: &str) {
    let py = format!(
        "import os, zipfile\nz = zipfile.ZipFile('{out}', 'w', zipfile.ZIP_DEFLATED, strict_timestamps=False)\nsrc = {src}\nif src:\n    for root, dirs, files in os.walk(src):\n        for f in sorted(files):\n            p = os.path.join(root, f)\n            z.write(p, os.path.relpath(p, src))\n{extra}\nz.close()\n",
        out = out.display(),
        src = src.map(|s| format!("'{}'", s.display())).unwrap_or_else(|| "None".into()),
    );
    let ran = Command::new("python3").arg("-c").arg(&py).output().unwrap();
    assert!(ran.status.success(), "{}", String::from_utf8_lossy(&ran.stderr));
}

#[test]
fn a_zip_artifact_installs_and_serves_and_escaping_zips_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_server, art, _) = artifacts(tmp.path());
    let cat = catalog(&art);
    let dir = tmp.path().join("agent");
    let (agent, url) = start_agent(&tmp.path().join("data"), &dir, "real-1", "us-east-a");
    rt().block_on(client(&cat).install(&url, "hello-svc", "1.0.0")).unwrap();

    variant(&art, "9.0.0", "true");
    let zipped = art.join("hello-svc-9.0.0.zip");
    zip_tree(Some(&art.join("tree-9.0.0")), &zipped, "");
    let (code, e) = put(&url, "9.0.0", &file_ref(&zipped));
    assert_eq!(code, 200, "{}", e.error);
    let (v, state, pid, port) = hello(&url).unwrap();
    assert_eq!((v.as_str(), state), ("9.0.0", ProbeState::Ok));
    assert_eq!(probe(port.unwrap()), Some((200, "9.0.0".into())));
    assert_eq!(current(&dir), "9.0.0");
    assert!(dir.join("extensions/hello-svc/9.0.0/server.py").is_file());

    let before = snapshot(&dir);
    let reported = status(&url).extensions;
    let manifest = "z.writestr('extension.toml', 'name = \"hello-svc\"\\nversion = \"6.6.7\"\\n')";
    let refused = |name: &str, extra: &str, says: &str| {
        let evil = art.join(name);
        zip_tree(None, &evil, &format!("{manifest}\n{extra}"));
        let (code, e) = put(&url, "6.6.7", &file_ref(&evil));
        assert_eq!(code, 500);
        assert_eq!(e.error, format!("installing hello-svc 6.6.7 failed: {says}"));
        assert_eq!(snapshot(&dir), before, "disk changed after {name}");
        assert_eq!(status(&url).extensions, reported);
        assert_eq!(probe(port.unwrap()), Some((200, "9.0.0".into())));
        assert_eq!(hello(&url).unwrap().2, pid);
    };
    refused(
        "climbs.zip",
        "z.writestr('../escaped.txt', 'out')",
        "archive entry `../escaped.txt` climbs out with `..`; the archive is refused",
    );
    assert!(!dir.join("extensions/hello-svc/escaped.txt").exists());
    assert!(!dir.join("extensions/escaped.txt").exists());
    let link = |target: &str| {
        format!("i = zipfile.ZipInfo('data')\ni.create_system = 3\ni.external_attr = 0o120777 << 16\nz.writestr(i, '{target}')")
    };
    refused(
        "link-out.zip",
        &link("../../../etc"),
        "archive entry `data` is a link that climbs out with `..`; the archive is refused",
    );
    refused(
        "link-abs.zip",
        &link("/etc"),
        "archive entry `data` is a link to an absolute path; the archive is refused",
    );
    refused(
        "absolute.zip",
        "z.writestr('/tmp/parley-absolute.txt', 'out')",
        "archive entry `/tmp/parley-absolute.txt` is an absolute path; the archive is refused",
    );
    agent.stop();
}
