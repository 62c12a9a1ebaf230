//! `[[notify]]` webhooks against a real local HTTP receiver (axum on port 0): every
//! body carries a valid HMAC-SHA256 signature, a failed delivery is retried, and the
//! notifications arrive in the order the rollouts and the failover happened.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac as _};
use serde_json::Value;

use common::{parley, Chat};

const SECRET: &str = "s3cret-for-the-webhook-test";

#[derive(Default)]
struct Seen {
    /// Accepted notifications, in arrival order: (delivery, event, deployment).
    accepted: Vec<(u64, String, Option<String>)>,
    /// Requests whose signature did not verify.
    forged: usize,
    /// Requests answered 503 on purpose.
    refused: usize,
}

/// The receiver checks signatures itself, with the hmac crate, as any receiver would.
fn signed(body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.strip_prefix("sha256=")) else { return false };
    let Ok(bytes) =
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16)).collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&bytes).is_ok()
}

fn start_receiver(seen: Arc<Mutex<Seen>>) -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap().port()).unwrap();
            let app = axum::Router::new().route(
                "/hook/T0SECRETPATH",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    let seen = Arc::clone(&seen);
                    async move {
                        let mut seen = seen.lock().unwrap();
                        let sig = headers.get("x-parley-signature").and_then(|v| v.to_str().ok());
                        if !signed(&body, sig) {
                            seen.forged += 1;
                            return StatusCode::UNAUTHORIZED;
                        }
                        // The very first delivery fails once: it must come again, before the second.
                        if seen.refused == 0 {
                            seen.refused += 1;
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let v: Value = serde_json::from_slice(&body).unwrap();
                        let delivery = headers["x-parley-delivery"].to_str().unwrap().parse().unwrap();
                        assert_eq!(headers["x-parley-event"].to_str().unwrap(), v["event"].as_str().unwrap());
                        seen.accepted.push((
                            delivery,
                            v["event"].as_str().unwrap().to_string(),
                            v["deployment"].as_str().map(str::to_string),
                        ));
                        StatusCode::NO_CONTENT
                    }
                }),
            );
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap()
}

#[test]
fn webhooks_receive_signed_notifications_in_order_with_retries() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let port = start_receiver(Arc::clone(&seen));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("parley.toml");
    std::fs::write(
        &config,
        format!("[[notify]]\nurl = \"http://127.0.0.1:{port}/hook/T0SECRETPATH\"\nsecret = \"{SECRET}\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();

    let data = dir.path().join("data");
    let mut cmd = parley(&data);
    cmd.arg("--config").arg(&config).args(["--demo-faults", "error-spike:auth-filter@2.1.0/agent:edge-21"]);
    let mut chat = Chat::start_command(cmd, &data);

    let t = chat.say_confirmed("canary auth-filter 2.1.0 to ap-south");
    assert_eq!(t["deployment"], "d-1", "{t}");
    let done = chat.wait_for_status("d-1", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "rolled_back", "{done}");
    let t = chat.say_confirmed("roll out auth-filter 2.1.0 to us-east");
    assert_eq!(t["deployment"], "d-2", "{t}");
    let done = chat.wait_for_status("d-2", &["succeeded", "rolled_back", "failed"]);
    assert_eq!(done["details"]["status"], "succeeded", "{done}");
    let steps = done["details"]["plan"]["steps"].as_array().map(Vec::len);
    let t = chat.say_confirmed("fail over eu-west to us-east");
    assert!(t["message"].as_str().unwrap().starts_with("Failed over eu-west to us-east"), "{t}");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last = seen.lock().unwrap().accepted.last().map(|(_, e, _)| e.clone());
        if last.as_deref() == Some("failover") {
            break;
        }
        assert!(Instant::now() < deadline, "no failover notification: {:?}", seen.lock().unwrap().accepted);
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.forged, 0);
    assert_eq!(seen.refused, 1);
    let events: Vec<(&str, Option<&str>)> = seen.accepted.iter().map(|(_, e, d)| (e.as_str(), d.as_deref())).collect();
    let d1: Vec<&str> = events.iter().filter(|(_, d)| *d == Some("d-1")).map(|(e, _)| *e).collect();
    // Canary: 1 agent, then 10%, then the 25% step that adds edge-21 fails its gate.
    assert_eq!(
        d1,
        ["rollout.started", "rollout.step_passed", "rollout.step_passed", "rollout.step_failed", "rollout.rolled_back"]
    );
    let d2: Vec<&str> = events.iter().filter(|(_, d)| *d == Some("d-2")).map(|(e, _)| *e).collect();
    assert_eq!(d2.first(), Some(&"rollout.started"), "{d2:?}");
    assert_eq!(d2.last(), Some(&"rollout.succeeded"), "{d2:?}");
    assert!(d2[1..d2.len() - 1].iter().all(|e| *e == "rollout.step_passed"), "{d2:?}");
    if let Some(steps) = steps {
        assert_eq!(d2.len(), steps + 2, "a step_passed per step: {d2:?}");
    }
    // The order they happened in: all of d-1, then all of d-2, then the failover.
    let order: Vec<Option<&str>> = events.iter().map(|(_, d)| *d).collect();
    let mut expected = vec![Some("d-1"); d1.len()];
    expected.extend(vec![Some("d-2"); d2.len()]);
    expected.push(None);
    assert_eq!(order, expected);
    assert_eq!(events.last(), Some(&("failover", None)));
    // Deliveries are numbered 1, 2, 3, ... per target; the retried first one kept its number.
    let deliveries: Vec<u64> = seen.accepted.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(deliveries, (1..=deliveries.len() as u64).collect::<Vec<_>>());
    drop(seen);
    drop(chat);

    // Neither the secret nor the URL's token reaches the log.
    let log = std::fs::read_to_string(data.join("logs/parley.log")).unwrap_or_default();
    assert!(!log.contains(SECRET) && !log.contains("T0SECRETPATH"), "{log}");
}

#[test]
fn a_config_file_with_a_secret_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("parley.toml");
    std::fs::write(&config, format!("[[notify]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = parley(dir.path()).arg("--config").arg(&config).args(["ask", "list deployments"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        format!(
            "error: config file {}: it holds a notify secret but is mode 0644; run chmod 600 on it, or move the \
             secret to the environment (secret_env)",
            config.display()
        )
    );
    assert!(!err.contains(SECRET));
    // From the environment, the file may be world-readable.
    std::fs::write(&config, "[[notify]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret_env = \"PARLEY_TEST_HOOK\"\n")
        .unwrap();
    let out = parley(dir.path())
        .arg("--config")
        .arg(&config)
        .env("PARLEY_TEST_HOOK", SECRET)
        .args(["ask", "list deployments"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
}
