//! Health gates judged by a real Prometheus (the distribution's `prometheus`
//! package, started here on a free port with a temporary data directory and a 1 s
//! scrape of the test's agents): agents' `/metrics` pass `promtool check metrics`; a
//! canary whose new version raises its error counters fails its gate by the query
//! and rolls back; a healthy one passes; a Prometheus stopped mid-rollout holds it
//! with `error`, never a pass. Skipped, saying so, only where the binaries are missing.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{parley_bin, Chat};
use parley::agent::server::{self, Agent, AgentConfig};
use parley::analysis::{Auth, PromError, Prometheus, PrometheusConfig};
use serde_json::Value;

fn installed(binary: &str) -> bool {
    Command::new(binary).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

macro_rules! require {
    ($binary:expr) => {
        if !installed($binary) {
            eprintln!("SKIPPED: `{}` is not installed (apt-get install prometheus)", $binary);
            return;
        }
    };
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A throwaway Prometheus scraping the targets in `targets.json` (file discovery, so
/// targets can be given once the agents are up) every second. Killed when dropped.
struct PromServer {
    child: Option<Child>,
    url: String,
    targets: PathBuf,
    _dir: tempfile::TempDir,
}

impl PromServer {
    fn start() -> PromServer {
        PromServer::start_with(None)
    }

    /// With `web` as Prometheus's `--web.config.file` (basic auth users), when given.
    fn start_with(web: Option<&str>) -> PromServer {
        let dir = tempfile::tempdir().unwrap();
        let targets = dir.path().join("targets.json");
        std::fs::write(&targets, "[]").unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: parley\n    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
                targets.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let mut cmd = Command::new("prometheus");
        if let Some(web) = web {
            let path = dir.path().join("web.yml");
            std::fs::write(&path, web).unwrap();
            cmd.arg(format!("--web.config.file={}", path.display()));
        }
        let child = cmd
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let server = PromServer { child: Some(child), url: format!("http://127.0.0.1:{port}"), targets, _dir: dir };
        let ready = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < ready, "prometheus did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        if web.is_none() {
            server.eventually("prometheus ready", "vector(1)", |v| v == Some(1.0));
        }
        server
    }

    /// Points the scrape at `endpoints` (agent base URLs, with or without a path).
    fn scrape(&self, endpoints: &[String]) {
        let groups: Vec<Value> = endpoints
            .iter()
            .map(|e| {
                let rest = e.trim_start_matches("http://");
                let (host, path) =
                    rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, String::new()));
                serde_json::json!({ "targets": [host], "labels": { "__metrics_path__": format!("{path}/metrics") } })
            })
            .collect();
        let tmp = self.targets.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&groups).unwrap()).unwrap();
        std::fs::rename(&tmp, &self.targets).unwrap();
    }

    fn client(&self) -> Prometheus {
        Prometheus::new(PrometheusConfig { url: self.url.clone(), auth: Auth::None, timeout: Duration::from_secs(5) })
            .unwrap()
    }

    fn query(&self, q: &str) -> Result<Vec<parley::analysis::prometheus::Sample>, PromError> {
        let client = self.client();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(client.query(q))
    }

    /// Queries `q` until the first series' value satisfies `pred` (30 s at most).
    fn eventually(&self, what: &str, q: &str, pred: impl Fn(Option<f64>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.query(q).ok().and_then(|s| s.first().map(|s| s.value));
            if pred(v) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {q} is {v:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The embedded catalog with its analysis templates measuring twice, a second apart,
/// so that a gate takes seconds, not the shipped 20.
fn fast_catalog(dir: &Path) -> PathBuf {
    let text =
        include_str!("../assets/catalog.toml").replace("count = 3\ninterval = \"10s\"", "count = 2\ninterval = \"1s\"");
    assert!(text.contains("count = 2\ninterval = \"1s\""), "the catalog's templates changed shape");
    let path = dir.join("catalog.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `parley chat --json` on the demo fleet, gated by `prom`, with a bake long enough
/// for two scrapes of a new version.
fn chat(dir: &Path, prom: &PromServer, faults: Option<&str>) -> Chat {
    let config = dir.join("parley.toml");
    std::fs::write(
        &config,
        format!(
            "catalog = {:?}\n[rollout]\nbake_secs = 3\n[metrics]\nprometheus = \"{}\"\ntimeout_ms = 2000\n",
            fast_catalog(dir).display().to_string(),
            prom.url
        ),
    )
    .unwrap();
    let mut cmd = Command::new(parley_bin());
    cmd.arg("--config").arg(&config).arg("--data-dir").arg(dir.join("state"));
    if let Some(f) = faults {
        cmd.arg("--demo-faults").arg(f);
    }
    cmd.env_remove("PARLEY_AGENT_TOKEN");
    let mut chat = Chat::start_command(cmd, &dir.join("state"));
    let t = chat.say("how healthy is eu-west?");
    assert_eq!(t["operation"]["op"], "show_health", "{t}");
    let inventory = std::fs::read_to_string(dir.join("state/demo-fleet/inventory.toml")).unwrap();
    let parsed: toml::Value = toml::from_str(&inventory).unwrap();
    let endpoints: Vec<String> =
        parsed["agent"].as_array().unwrap().iter().map(|a| a["endpoint"].as_str().unwrap().to_string()).collect();
    assert_eq!(endpoints.len(), 48);
    prom.scrape(&endpoints);
    prom.eventually("every demo agent scraped", "count(up == 1)", |v| v == Some(48.0));
    // Two scrapes of every series, so that rates exist before the first gate.
    prom.eventually(
        "rates of the baseline",
        r#"count(rate(parley_agent_requests_total{extension="auth-filter"}[30s]) > 0)"#,
        |v| v == Some(48.0),
    );
    chat
}

#[test]
fn agents_metrics_pass_promtool_and_count_what_they_serve() {
    require!("promtool");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (text, unauthorised) = rt.block_on(async {
        let mut config = AgentConfig::new("edge-7", "us-west", "us-west-a");
        config.extensions.insert("auth-filter".into(), "2.0.3".into());
        config.extensions.insert("log-shipper".into(), "1.4.2".into());
        config.token = Some("s3cret".into());
        let agent: Arc<Agent> = Agent::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, agent, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::new();
        let url = format!("http://{addr}/metrics");
        let get = || http.get(&url).bearer_auth("s3cret").send();
        get().await.unwrap();
        // One install through the protocol, counted by version and result.
        http.put(format!("http://{addr}/v1/extensions/auth-filter"))
            .bearer_auth("s3cret")
            .json(&serde_json::json!({"version": "2.1.0"}))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let answer = get().await.unwrap();
        assert_eq!(answer.headers()["content-type"].to_str().unwrap(), "text/plain; version=0.0.4; charset=utf-8");
        let text = answer.text().await.unwrap();
        let unauthorised = http.get(&url).send().await.unwrap().status().as_u16();
        let _ = stop.send(());
        let _ = task.await;
        // The simulator serves each agent's metrics under its own path.
        let sim = parley::agent::simulate::Simulator::start(parley::agent::simulate::SimOptions::new(2)).await.unwrap();
        let sim_text =
            http.get(format!("http://{}/a/edge-1/metrics", sim.addr())).send().await.unwrap().text().await.unwrap();
        assert!(sim_text.contains(r#"parley_agent_extension_info{agent="edge-1",region="us-east""#), "{sim_text}");
        sim.shutdown().await;
        (text, unauthorised)
    });
    assert_eq!(unauthorised, 401, "metrics are behind the agent's token");
    let labels = r#"agent="edge-7",region="us-west",zone="us-west-a""#;
    assert!(
        text.contains(&format!(
        "parley_agent_installs_total{{{labels},extension=\"auth-filter\",version=\"2.1.0\",result=\"succeeded\"}} 1\n"
    )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "parley_agent_extension_info{{{labels},extension=\"auth-filter\",version=\"2.1.0\"}} 1\n"
        )),
        "{text}"
    );
    assert!(!text.contains("version=\"2.0.3\""), "the replaced version's series ended:\n{text}");
    let requests = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(
                "parley_agent_requests_total{{{labels},extension=\"log-shipper\",version=\"1.4.2\"}} "
            ))
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no log-shipper requests in\n{text}"));
    // 100 requests a second over the 1.1 s between the two scrapes.
    assert!((100..=130).contains(&requests), "{requests} requests\n{text}");
    for series in [
        "parley_agent_request_duration_seconds_bucket",
        "parley_agent_cpu_usage_ratio",
        "parley_agent_memory_usage_ratio",
        "parley_agent_serving",
        "parley_agent_health_probes_total",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }

    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

#[test]
fn the_provider_answers_instant_and_range_queries_and_names_what_went_wrong() {
    require!("prometheus");
    let prom = PromServer::start();
    let client = prom.client();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let v = rt.block_on(client.query("vector(0.25)")).unwrap();
    assert_eq!(v.iter().map(|s| s.value).collect::<Vec<_>>(), [0.25]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let range = rt.block_on(client.query_range("vector(2)", now - 10.0, now, Duration::from_secs(5))).unwrap();
    assert_eq!(range.len(), 1);
    assert!(range[0].points.len() >= 2 && range[0].points.iter().all(|(_, v)| *v == 2.0), "{range:?}");
    // No series is an empty answer, not a zero.
    assert_eq!(rt.block_on(client.query(r#"up{job="nobody"}"#)).unwrap(), vec![]);
    match rt.block_on(client.query("sum(rate(x[5m]")) {
        Err(PromError::Query { status: 400, kind, message }) => {
            assert_eq!(kind, "bad_data");
            assert!(message.contains("parse error"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // A server that accepts and never answers: a timeout, in the configured time.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let slow = Prometheus::new(PrometheusConfig {
        url: url.clone(),
        auth: Auth::Bearer("t0ken".into()),
        timeout: Duration::from_millis(300),
    })
    .unwrap();
    let started = Instant::now();
    let e = rt.block_on(slow.query("up")).unwrap_err();
    assert_eq!(e, PromError::Timeout { url, ms: 300 });
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(!format!("{e} {slow:?}").contains("t0ken"), "the token never shows");
    drop(silent);
}

#[test]
fn basic_auth_reaches_a_protected_prometheus_and_wrong_credentials_are_named_without_the_secret() {
    require!("prometheus");
    // bcrypt of "s3cret-pass" (cost 4): Prometheus's own basic auth.
    let web = "basic_auth_users:\n  parley: $2b$04$LFgn3OU0tCeL4l1jL.Gh5OTp8PmhrBSaGWiVfQIuX5fOBpbCpshmC\n";
    let prom = PromServer::start_with(Some(web));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let with = |auth: Auth| {
        Prometheus::new(PrometheusConfig { url: prom.url.clone(), auth, timeout: Duration::from_secs(5) }).unwrap()
    };
    let right = with(Auth::Basic { username: "parley".into(), password: "s3cret-pass".into() });
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        match rt.block_on(right.query("vector(3)")) {
            Ok(v) => break v,
            Err(e) => {
                assert!(Instant::now() < deadline, "never answered: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert_eq!(answer.iter().map(|s| s.value).collect::<Vec<_>>(), [3.0]);
    let wrong = with(Auth::Basic { username: "parley".into(), password: "guess".into() });
    let e = rt.block_on(wrong.query("vector(3)")).unwrap_err();
    assert_eq!(e, PromError::Unauthorized { url: prom.url.clone(), status: 401 });
    assert_eq!(e.to_string(), format!("Prometheus at {} refused the credentials (401)", prom.url));
    assert!(!format!("{e} {wrong:?} {right:?}").contains("s3cret-pass") && !format!("{wrong:?}").contains("guess"));
    let none = rt.block_on(with(Auth::None).query("vector(3)")).unwrap_err();
    assert_eq!(none, PromError::Unauthorized { url: prom.url.clone(), status: 401 });
}

#[test]
fn a_canary_whose_new_version_raises_its_errors_fails_by_the_query_and_rolls_back() {
    require!("prometheus");
    let prom = PromServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut chat = chat(dir.path(), &prom, Some("error-spike:auth-filter@2.1.0/region:eu-west"));
    // The operator's threshold replaces the template's 500 ms, and the plan says so.
    let ask =
        chat.say("roll out auth-filter 2.1 to eu-west as a canary, 25% then 100%, gated on p99 latency under 600 ms");
    assert_eq!(
        ask["operation"]["gate"],
        serde_json::json!([{"metric": "p99-latency", "threshold": 600, "unit": "ms"}]),
        "{ask}"
    );
    let gate_cell = ask["table"]["rows"][0]
        .as_array()
        .and_then(|r| r.get(4))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        gate_cell,
        "Prometheus: error ratio limit 1% and 2x baseline + 0.5%; p99 latency limit 600 ms and 1.5x baseline",
        "{ask}"
    );
    let t = chat.say("yes");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed", "paused"]);
    assert_eq!(done["details"]["status"], "rolled_back", "{done}");
    let reason = done["details"]["reason"].as_str().unwrap();
    assert!(reason.starts_with("health gate failed at step 1 of 2 (25%): error ratio "), "{reason}");
    assert!(reason.contains(" vs baseline ") && reason.contains(", limit 1% and 2x baseline + 0.5%"), "{reason}");
    assert!(
        reason.contains(r#"query: sum(rate(parley_agent_request_errors_total{extension="auth-filter",version="2.1.0",agent=~"edge-13|edge-14|edge-15"}[1m]))"#),
        "{reason}"
    );
    assert!(
        reason.contains("; p99 latency ") && reason.contains(", limit 600 ms and 1.5x baseline (1 of 1"),
        "{reason}"
    );
    assert!(reason.ends_with("3 agents returned to auth-filter 2.0.3"), "{reason}");
    // The canary's value is the spike (12% on top of its own), the baseline the old version's.
    let analysis = &done["details"]["gates"][0]["analysis"]["metrics"][0];
    let m = &analysis["measurements"][0];
    assert_eq!(m["outcome"], "failed", "{done}");
    assert!(m["canary"].as_f64().unwrap() > 0.1, "{m}");
    assert!(m["baseline"].as_f64().unwrap() < 0.005, "{m}");
    // "why did step 1 fail?" shows every measurement with its query.
    let why = chat.say("why did step 1 fail?");
    assert_eq!(why["operation"]["op"], "show_deployment", "{why}");
    let text = why["message"].as_str().unwrap();
    assert!(text.contains(&format!("Gate at step 1: failed (Prometheus {})", prom.url)), "{text}");
    assert!(text.contains("  error ratio: failed (value > threshold and value > 2 * baseline + 0.005)"), "{text}");
    assert!(text.contains("    query: sum(rate(parley_agent_request_errors_total{"), "{text}");
    assert!(text.contains("    1. failed error ratio "), "{text}");
    // The report names the metrics that stopped it.
    let report = chat.say("deployment report for the last 30 days");
    assert_eq!(
        report["details"]["failed_gates_by_kind"],
        serde_json::json!({"error ratio": 1, "p99 latency": 1}),
        "{report}"
    );
    assert_eq!(report["details"]["gates_by_outcome"]["failed"], 1, "{report}");
    chat.finish();
}

#[test]
fn a_healthy_canary_passes_its_prometheus_gates_and_prometheus_stopped_mid_rollout_holds_it() {
    require!("prometheus");
    let mut prom = PromServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut chat = chat(dir.path(), &prom, None);
    let t = chat.say_confirmed("roll out auth-filter 2.1 to eu-west as a canary, 25% then 100%");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed", "paused"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    let gates = done["details"]["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 2, "{done}");
    for g in gates {
        assert_eq!(g["outcome"], "successful", "{g}");
        let metrics = g["analysis"]["metrics"].as_array().unwrap();
        let names: Vec<&str> = metrics.iter().map(|m| m["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["error-ratio", "p99-latency"]);
        for m in metrics {
            assert_eq!(m["measurements"].as_array().unwrap().len(), 2, "{m}");
        }
    }

    // The next rollout: Prometheus is gone before its first gate.
    let t = chat.say_confirmed("roll out rate-limiter 1.1 to eu-west as a canary, 25% then 100%");
    assert_eq!(t["deployment"], "d-2", "{t}");
    prom.stop();
    let held = chat.wait_for_status("d-2", &["succeeded", "rolled_back", "failed", "paused"]);
    // rate-limiter has no templates: the built-in gate judges it, Prometheus or not.
    assert_eq!(held["details"]["status"], "succeeded", "{held}");
    let t = chat.say_confirmed("roll out auth-filter 2.0.3 to eu-west as a canary, 25% then 100%");
    assert_eq!(t["deployment"], "d-3", "{t}");
    let held = chat.wait_for_status("d-3", &["succeeded", "rolled_back", "failed", "paused"]);
    assert_eq!(held["details"]["status"], "paused", "{held}");
    let reason = held["details"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "health gate could not be measured at step 1 of 2 (25%): error ratio: the query failed: Prometheus at {} is unreachable",
            prom.url
        )),
        "{reason}"
    );
    assert!(reason.ends_with("resume to carry on or abort to roll back"), "{reason}");
    let gate = &held["details"]["gates"][0];
    assert_eq!(gate["outcome"], "error", "{held}");
    assert_eq!(gate["passed"], false);
    chat.finish();
}
