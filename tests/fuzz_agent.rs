//! A bounded fuzz campaign (a fixed number of proptest cases, a few seconds) against
//! the real agent HTTP server and the real registration endpoint over loopback:
//! random bytes, huge and deeply nested bodies, bad names and versions, traversal
//! strings, and raw garbage that is not HTTP at all. Every answer must be a clear 4xx
//! with an error body, no task may panic, and nothing may change: not the agent's
//! state file, not its status, not the registry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use parley::agent::names::{is_name, is_version};
use parley::agent::protocol::ErrorBody;
use parley::agent::server::{self, Agent, AgentConfig};
use parley::agent::AgentClient;
use parley::topology::poller::{Poller, PollerConfig};
use parley::topology::registration::{self, Registered, CREDENTIAL_HEADER};
use parley::topology::Catalog;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "fuzz-s3cret";
const AGENT_CASES: u32 = 3000;
const REGISTRATION_CASES: u32 = 3000;
const RAW_CASES: u32 = 400;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Strings meant to break names, versions and paths.
fn nasty() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "..",
            ".",
            "../../etc/passwd",
            "..\\..\\windows",
            "2.1.0/../..",
            "/",
            "%2e%2e",
            "a/b",
            "\0",
            "",
            " ",
            "1..2",
            "-rf",
            "+1",
            "auth-filter\n",
            "AUTH-FILTER",
            "edge_7",
            "edge.7",
            "é",
            "🚀",
            "${jndi:x}",
            "' OR 1=1 --",
            "<script>",
        ])
        .prop_map(String::from),
        "[./\\\\a-zA-Z0-9%_ -]{0,24}",
        any::<String>(),
        (65usize..400).prop_map(|n| "1".repeat(n)),
    ]
}

fn nasty_version() -> impl Strategy<Value = String> {
    nasty().prop_filter("an invalid version", |v| !is_version(v))
}

fn nasty_name() -> impl Strategy<Value = String> {
    nasty().prop_filter("an invalid name", |v| !is_name(v))
}

/// Bodies that are not a valid request: random bytes, huge, deeply nested, wrong shapes.
fn garbage_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (64usize * 1024..300 * 1024).prop_map(|n| {
            let mut v = br#"{"version": ""#.to_vec();
            v.resize(n, b'1');
            v.extend_from_slice(br#""}"#);
            v
        }),
        (1usize..20_000).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes()),
        (1usize..3_000).prop_map(|d| format!("{}1{}", r#"{"version":"#.repeat(d), "}".repeat(d)).into_bytes()),
        nasty_version().prop_map(|v| serde_json::to_vec(&serde_json::json!({ "version": v })).unwrap_or_default()),
        any::<i64>().prop_map(|n| format!(r#"{{"version": {n}}}"#).into_bytes()),
        Just(br#"{"versio": "2.1.0"}"#.to_vec()),
        Just(b"null".to_vec()),
        Just(br#"{"version": null}"#.to_vec()),
    ]
}

#[derive(Debug, Clone)]
struct AgentCase {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    json: bool,
    token: bool,
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn agent_case() -> impl Strategy<Value = AgentCase> {
    let install = (nasty_name(), garbage_body(), any::<bool>(), prop::bool::weighted(0.9)).prop_map(
        |(name, body, json, token)| {
            // A good name with a bad body, or a bad name with any body.
            let name = if name.len() % 3 == 0 { "auth-filter".to_string() } else { name };
            AgentCase { method: "PUT", path: format!("/v1/extensions/{}", percent(&name)), body, json, token }
        },
    );
    let install_bad_version = (nasty_version(), prop::bool::weighted(0.9)).prop_map(|(v, token)| AgentCase {
        method: "PUT",
        path: "/v1/extensions/auth-filter".into(),
        body: serde_json::to_vec(&serde_json::json!({ "version": v })).unwrap_or_default(),
        json: true,
        token,
    });
    let remove = (nasty_name(), prop::bool::weighted(0.9)).prop_map(|(name, token)| AgentCase {
        method: "DELETE",
        path: format!("/v1/extensions/{}", percent(&name)),
        body: Vec::new(),
        json: false,
        token,
    });
    let action = (
        nasty().prop_filter("not an action", |a| !["drain", "cordon", "uncordon", "restart"].contains(&a.as_str())),
        garbage_body(),
    )
        .prop_map(|(a, body)| AgentCase {
            method: "POST",
            path: format!("/v1/actions/{}", percent(&a)),
            body,
            json: true,
            token: true,
        });
    let unauthorised = garbage_body().prop_map(|body| AgentCase {
        method: "POST",
        path: "/v1/actions/drain".into(),
        body,
        json: true,
        token: false,
    });
    let nowhere = (nasty(), garbage_body()).prop_map(|(p, body)| AgentCase {
        method: "PATCH",
        path: format!("/v1/{}", percent(&p)),
        body,
        json: true,
        token: true,
    });
    prop_oneof![3 => install, 2 => install_bad_version, 1 => remove, 1 => action, 1 => unauthorised, 1 => nowhere]
}

#[derive(Debug, Clone)]
struct RegistrationCase {
    method: &'static str,
    path: String,
    body: Vec<u8>,
    token: bool,
    credential: Option<String>,
}

fn registration_case() -> impl Strategy<Value = RegistrationCase> {
    let endpoint = prop_oneof![
        Just("http://127.0.0.1:9".to_string()),
        Just("file:///etc/passwd".to_string()),
        Just("http://[::1".to_string()),
        nasty(),
    ];
    // Some field is always invalid, so no case may register anything.
    let register = (nasty_name(), endpoint.clone(), nasty(), nasty(), 0u8..3, prop::bool::weighted(0.9)).prop_map(
        |(bad, endpoint, region, zone, which, token)| {
            let (name, region, zone) = match which {
                0 => (bad, "eu-west".to_string(), "eu-west-a".to_string()),
                1 => ("edge-77".to_string(), bad, zone),
                _ => ("edge-77".to_string(), region, bad),
            };
            let body = serde_json::json!({"name": name, "endpoint": endpoint, "region": region, "zone": zone});
            RegistrationCase {
                method: "POST",
                path: "/v1/register".into(),
                body: serde_json::to_vec(&body).unwrap_or_default(),
                token,
                credential: None,
            }
        },
    );
    let register_garbage = garbage_body().prop_map(|body| RegistrationCase {
        method: "POST",
        path: "/v1/register".into(),
        body,
        token: true,
        credential: None,
    });
    // The bound name from elsewhere, with or without a forged credential.
    let impostor =
        (endpoint, prop::option::of("[0-9a-f]{64}|[ -~]{0,80}")).prop_map(|(endpoint, credential)| RegistrationCase {
            method: "POST",
            path: "/v1/register".into(),
            body: serde_json::to_vec(&serde_json::json!({"name": "edge-5", "endpoint": endpoint})).unwrap_or_default(),
            token: true,
            credential,
        });
    let heartbeat = (prop_oneof![nasty(), Just("edge-5".to_string())], prop::option::of("[ -~]{0,80}"), garbage_body())
        .prop_map(|(name, credential, junk)| RegistrationCase {
            method: "POST",
            path: "/v1/heartbeat".into(),
            body: if name.len() % 2 == 0 {
                serde_json::to_vec(&serde_json::json!({ "name": name })).unwrap_or_default()
            } else {
                junk
            },
            token: true,
            credential,
        });
    let deregister = (prop_oneof![nasty(), Just("edge-5".to_string())], prop::option::of("[ -~]{0,80}"), any::<bool>())
        .prop_map(|(name, credential, token)| RegistrationCase {
            method: "DELETE",
            path: format!("/v1/register/{}", percent(&name)),
            body: Vec::new(),
            token,
            credential,
        });
    prop_oneof![2 => register, 2 => register_garbage, 2 => impostor, 1 => heartbeat, 2 => deregister]
}

/// Sends one request; answers its status and body.
async fn send(
    http: &reqwest::Client,
    method: &str,
    url: &str,
    body: Vec<u8>,
    json: bool,
    token: bool,
    credential: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = http.request(method, url).body(body);
    if json {
        req = req.header("content-type", "application/json");
    }
    if token {
        req = req.bearer_auth(TOKEN);
    }
    if let Some(c) = credential {
        req = req.header(CREDENTIAL_HEADER, c);
    }
    let resp = req.send().await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, bytes.to_vec()))
}

#[derive(Default)]
struct Tally {
    inputs: AtomicUsize,
    /// Status code -> answers, for the report.
    statuses: Mutex<std::collections::BTreeMap<u16, usize>>,
    unclear: Mutex<Vec<String>>,
    mutations: Mutex<Vec<String>>,
}

impl Tally {
    fn unclear(&self, what: String) {
        self.unclear.lock().unwrap().push(what);
    }
    fn mutation(&self, what: String) {
        self.mutations.lock().unwrap().push(what);
    }
}

/// A clear refusal: 4xx with an `ErrorBody`.
fn clear_refusal(tally: &Tally, status: u16, body: &[u8]) -> bool {
    *tally.statuses.lock().unwrap().entry(status).or_default() += 1;
    (400..500).contains(&status) && serde_json::from_slice::<ErrorBody>(body).is_ok_and(|b| !b.code.is_empty())
}

#[test]
fn garbage_at_the_agent_and_the_registration_endpoint_is_refused_and_changes_nothing() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let tally = Tally::default();

    // The agent: a real server with a state file and a token.
    let state = dir.path().join("edge-5.json");
    let mut config = AgentConfig::new("edge-5", "eu-west", "eu-west-a");
    config.extensions.insert("auth-filter".into(), "2.0.3".into());
    config.token = Some(TOKEN.into());
    config.state_file = Some(state.clone());
    config.install_delay = Duration::ZERO;
    let agent = Agent::new(config).unwrap();
    let (agent_url, parley_url, poller, credential) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(server::serve(listener, Arc::clone(&agent), std::future::pending::<()>()));

        // Parley's registration endpoint, with edge-5 registered and bound.
        let client = AgentClient::new(Duration::from_millis(300), Some(TOKEN.into())).unwrap();
        let poller =
            Arc::new(Poller::new(Vec::new(), client, Arc::new(Catalog::embedded().unwrap()), PollerConfig::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let parley_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(registration::serve(
            listener,
            Arc::clone(&poller),
            Some(TOKEN.into()),
            std::future::pending::<()>(),
        ));
        let resp = reqwest::Client::new()
            .post(format!("{parley_url}/v1/register"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"name": "edge-5", "endpoint": agent_url, "region": "eu-west"}))
            .send()
            .await
            .unwrap();
        let registered: Registered = resp.json().await.unwrap();
        poller.refresh().await;
        (agent_url, parley_url, poller, registered.credential.unwrap())
    });
    let state_before = std::fs::read(&state).unwrap();
    let status_before = agent.status();
    let inventory_before = poller.inventory();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let rng = || TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let config = |cases| Config { cases, failure_persistence: None, ..Config::default() };

    let mut runner = TestRunner::new_with_rng(config(AGENT_CASES), rng());
    runner
        .run(&agent_case(), |case| {
            tally.inputs.fetch_add(1, Ordering::Relaxed);
            let url = format!("{agent_url}{}", case.path);
            let answer = rt.block_on(send(&http, case.method, &url, case.body.clone(), case.json, case.token, None));
            match answer {
                Ok((status, body)) if clear_refusal(&tally, status, &body) => {}
                other => tally.unclear(format!("{} {}: {other:?}", case.method, case.path)),
            }
            let now = agent.status();
            if now.extensions != status_before.extensions || now.state != status_before.state {
                tally.mutation(format!("agent changed by {case:?}"));
            }
            if std::fs::read(&state).ok().as_deref() != Some(&state_before[..]) {
                tally.mutation(format!("state file changed by {} {}", case.method, case.path));
            }
            Ok(())
        })
        .unwrap();

    let mut runner = TestRunner::new_with_rng(config(REGISTRATION_CASES), rng());
    runner
        .run(&registration_case(), |case| {
            tally.inputs.fetch_add(1, Ordering::Relaxed);
            let url = format!("{parley_url}{}", case.path);
            let answer = rt.block_on(send(
                &http,
                case.method,
                &url,
                case.body.clone(),
                true,
                case.token,
                case.credential.as_deref(),
            ));
            match answer {
                Ok((status, body)) if clear_refusal(&tally, status, &body) => {}
                other => tally.unclear(format!(
                    "{} {} {:?}: {other:?}",
                    case.method,
                    case.path,
                    String::from_utf8_lossy(&case.body)
                )),
            }
            if poller.inventory() != inventory_before {
                tally.mutation(format!("registry changed by {case:?}"));
            }
            Ok(())
        })
        .unwrap();

    // Not HTTP at all: bytes straight onto the socket. Any answer or a close is fine;
    // what matters is that both servers survive and nothing changes.
    let mut runner = TestRunner::new_with_rng(config(RAW_CASES), rng());
    runner
        .run(&prop::collection::vec(any::<u8>(), 1..2048), |bytes| {
            tally.inputs.fetch_add(1, Ordering::Relaxed);
            for url in [&agent_url, &parley_url] {
                let addr = url.trim_start_matches("http://").to_string();
                rt.block_on(async {
                    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                    let _ = s.write_all(&bytes).await;
                    let _ = s.shutdown().await;
                    let mut sink = Vec::new();
                    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut sink)).await;
                    if !sink.is_empty() && !sink.starts_with(b"HTTP/1.1 4") {
                        tally.unclear(format!("raw {bytes:?}: {}", String::from_utf8_lossy(&sink)));
                    }
                });
            }
            Ok(())
        })
        .unwrap();

    // Both still serve, and edge-5 is still itself.
    rt.block_on(async {
        let c = AgentClient::new(Duration::from_secs(3), Some(TOKEN.into())).unwrap();
        assert_eq!(c.status(&agent_url).await.unwrap().name, "edge-5");
        let resp = http
            .post(format!("{parley_url}/v1/heartbeat"))
            .bearer_auth(TOKEN)
            .header(CREDENTIAL_HEADER, &credential)
            .json(&serde_json::json!({"name": "edge-5"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    });
    assert_eq!(poller.inventory(), inventory_before);

    let inputs = tally.inputs.load(Ordering::Relaxed);
    let panics = PANICS.load(Ordering::SeqCst);
    let unclear = tally.unclear.lock().unwrap().clone();
    let mutations = tally.mutations.lock().unwrap().clone();
    eprintln!(
        "fuzz: {inputs} inputs in {:.1} s; {panics} panics; {} mutations; {} answers that were not a clear 4xx; statuses {:?}",
        started.elapsed().as_secs_f64(),
        mutations.len(),
        unclear.len(),
        tally.statuses.lock().unwrap()
    );
    assert_eq!(panics, 0);
    assert!(mutations.is_empty(), "{:#?}", &mutations[..mutations.len().min(5)]);
    assert!(unclear.is_empty(), "{} unclear, e.g. {:#?}", unclear.len(), &unclear[..unclear.len().min(5)]);
    assert!(started.elapsed() < Duration::from_secs(20), "the campaign took {:?}", started.elapsed());
}
