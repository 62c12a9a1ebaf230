//! The Slack bridge against a fake Slack on loopback (see `slack_fake`): Socket
//! Mode and the Events API, driven through the library, asserting what Slack was
//! sent and what the fleet did.

mod slack_fake;

use std::time::Duration;

use parley::app::Parley;
use parley::config::Config;
use parley::slack::config::{Secret, Secrets, SlackMode};
use parley::slack::{self, socket::SocketOptions, SlackRun};
use serde_json::Value;
use slack_fake::{click, mention, FakeSlack};

struct Bridge {
    fake: FakeSlack,
    parley: std::sync::Arc<Parley>,
    stop: tokio::sync::watch::Sender<bool>,
    events_addr: Option<std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

const SIGNING: &str = "test-signing-secret";

async fn start(mode: SlackMode) -> Bridge {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parley.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"state\"\n[rollout]\nbake_secs = 0.05\n[slack]\nbase_url = \"{}\"\n\
             [slack.users]\nUOPER = \"operator\"\nUADMIN = \"admin\"\n[slack.channels]\nCREADONLY = \"viewer\"\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let mut config = Config::load(Some(&path)).unwrap();
    config.slack.mode = mode;
    let parley = std::sync::Arc::new(Parley::start(&config).await.unwrap());
    let secrets = Secrets {
        bot_token: Secret::new("xoxb-test-bot"),
        app_token: Some(Secret::new("xapp-test-app")),
        signing_secret: Some(Secret::new(SIGNING)),
    };
    let (listener, events_addr) = match mode {
        SlackMode::Events => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let a = l.local_addr().unwrap();
            (Some(l), Some(a))
        }
        SlackMode::Socket => (None, None),
    };
    let socket = SocketOptions { ping_interval: Duration::from_secs(5), ..SocketOptions::default() };
    let run = SlackRun { settings: config.slack.clone(), secrets, socket, listener };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let p = std::sync::Arc::clone(&parley);
    tokio::spawn(async move { slack::run(&p, run, stop_rx).await.unwrap() });
    if mode == SlackMode::Socket {
        fake.wait_connections(1).await;
    }
    Bridge { fake, parley, stop, events_addr, _dir: dir }
}

fn text_of(call: &slack_fake::Call) -> String {
    call.body["text"].as_str().unwrap_or("").to_string()
}

fn replies_in_thread(fake: &FakeSlack, channel: &str, thread: &str) -> Vec<slack_fake::Call> {
    fake.messages_in(channel)
        .into_iter()
        .filter(|c| c.body["thread_ts"] == thread && c.method == "chat.postMessage")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_question_is_answered_in_its_thread() {
    let b = start(SlackMode::Socket).await;
    b.fake.send(mention("e1", "Ev1", "UVIEW", "C1", "100.1", None, "how healthy is us-east?"));
    let calls = b.fake.wait_for("an answer", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    let post = calls.iter().find(|c| c.method == "chat.postMessage").unwrap();
    assert_eq!(post.body["channel"], "C1");
    assert_eq!(post.body["thread_ts"], "100.1");
    assert_eq!(post.auth, "Bearer xoxb-test-bot");
    assert!(text_of(post).contains("us-east"), "{:#?}", post.body);
    assert_eq!(post.body["blocks"][0]["type"], "section");
    assert_eq!(b.fake.acks().iter().map(|a| a.0.as_str()).collect::<Vec<_>>(), ["e1"]);
    let audit = b.parley.services().registry.list_audit(None, 10).await.unwrap();
    let last = audit.last().unwrap();
    assert_eq!((last.actor.as_str(), last.frontend.as_str()), ("UVIEW", "slack:C1"));
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_is_confirmed_by_a_button_click_and_reported_in_its_thread() {
    let b = start(SlackMode::Socket).await;
    b.fake.send(mention("e1", "Ev1", "UOPER", "C1", "200.1", None, "roll out auth-filter 2.1.0 to eu-west"));
    let calls = b.fake.wait_for("a question", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    let question = calls.iter().find(|c| c.method == "chat.postMessage").unwrap();
    let actions = question.body["blocks"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(actions["type"], "actions", "{:#?}", question.body);
    assert_eq!(actions["elements"][0]["value"], "yes");
    assert!(actions["elements"][0]["confirm"]["title"].is_object());
    b.fake.send(click("e2", "UOPER", "C1", "200.1", "9000.0001", "parley_confirm", "yes"));
    b.fake
        .wait_for("a summary", |c| {
            c.iter().any(|c| c.body["thread_ts"] == "200.1" && text_of(c).contains("d-1: succeeded"))
        })
        .await;
    let thread = replies_in_thread(&b.fake, "C1", "200.1");
    assert!(text_of(&thread[1]).contains("d-1"), "{:#?}", thread[1].body);
    // Progress is one message rewritten in place, not one post per event.
    let progress: Vec<_> = thread.iter().filter(|c| text_of(c).starts_with("d-1: ")).collect();
    assert!(progress.len() <= 2, "{progress:#?}");
    let updates = b.fake.calls().iter().filter(|c| c.method == "chat.update").count();
    assert!(updates >= 1);
    let d = b.parley.services().registry.deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(d.status.as_str(), "succeeded");
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_envelope_is_acked_again_but_executed_once() {
    let b = start(SlackMode::Socket).await;
    let first = mention("e1", "Ev1", "UOPER", "C1", "300.1", None, "how healthy is us-east?");
    let mut again = mention("e1-retry", "Ev1", "UOPER", "C1", "300.1", None, "how healthy is us-east?");
    again["retry_attempt"] = Value::from(1);
    again["retry_reason"] = Value::from("timeout");
    b.fake.send(first);
    b.fake.send(again);
    b.fake.wait_for("an answer", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.fake.acks().len(), 2);
    assert_eq!(replies_in_thread(&b.fake, "C1", "300.1").len(), 1);
    let audit = b.parley.services().registry.list_audit(None, 10).await.unwrap();
    assert_eq!(audit.iter().filter(|a| a.utterance.contains("us-east")).count(), 1, "{audit:#?}");
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_mid_conversation_is_survived() {
    let b = start(SlackMode::Socket).await;
    b.fake.send(mention("e1", "Ev1", "UOPER", "C1", "400.1", None, "roll out auth-filter 2.1.0 to eu-west"));
    b.fake.wait_for("a question", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    b.fake.send(serde_json::json!({"type": "disconnect", "reason": "refresh_requested",
        "debug_info": {"host": "fake"}}));
    b.fake.wait_connections(2).await;
    b.fake.send(mention("e2", "Ev2", "UOPER", "C1", "400.2", Some("400.1"), "yes"));
    b.fake
        .wait_for("the rollout", |c| {
            c.iter().any(|c| c.body["thread_ts"] == "400.1" && text_of(c).contains("d-1: succeeded"))
        })
        .await;
    assert_eq!(b.fake.acks().len(), 2);
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewers_deploy_is_refused_with_the_role_it_needs() {
    let b = start(SlackMode::Socket).await;
    b.fake.send(mention("e1", "Ev1", "UVIEW", "C1", "500.1", None, "roll out auth-filter 2.1.0 to ap-south"));
    // An operator in a channel limited to viewers is a viewer there.
    b.fake.send(mention("e2", "Ev2", "UOPER", "CREADONLY", "500.2", None, "roll out auth-filter 2.1.0 to ap-south"));
    let calls =
        b.fake.wait_for("two refusals", |c| c.iter().filter(|c| c.method == "chat.postMessage").count() == 2).await;
    for c in calls.iter().filter(|c| c.method == "chat.postMessage") {
        assert!(text_of(c).contains("needs the operator role"), "{:#?}", c.body);
    }
    let audit = b.parley.services().registry.list_audit(None, 10).await.unwrap();
    assert!(audit
        .iter()
        .any(|a| a.actor == "UOPER" && a.frontend == "slack:CREADONLY" && a.result.as_str() == "refused"));
    assert!(b.parley.services().registry.deployment_by_name("d-1").await.unwrap().is_none());
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_delay() {
    let b = start(SlackMode::Socket).await;
    b.fake.rate_limit_next(1);
    b.fake.send(mention("e1", "Ev1", "UVIEW", "C1", "600.1", None, "help"));
    let calls = b.fake.wait_for("the retried post", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    let limited = calls.iter().find(|c| c.method == "chat.postMessage (429)").unwrap();
    let posted = calls.iter().find(|c| c.method == "chat.postMessage").unwrap();
    assert!(posted.at.duration_since(limited.at) >= Duration::from_millis(990));
    assert_eq!(limited.body, posted.body);
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_unsigned_and_replayed_events_api_requests_are_refused() {
    let b = start(SlackMode::Events).await;
    let url = format!("http://{}/slack/events", b.events_addr.unwrap());
    let http = reqwest::Client::new();
    let secret = Secret::new(SIGNING);
    let now = chrono::Utc::now().timestamp();
    let post = |body: String, ts: Option<String>, sig: Option<String>| {
        let mut r = http.post(&url).header("content-type", "application/json").body(body);
        if let Some(ts) = ts {
            r = r.header("X-Slack-Request-Timestamp", ts);
        }
        if let Some(sig) = sig {
            r = r.header("X-Slack-Signature", sig);
        }
        r.send()
    };
    let event = mention("-", "EvA", "UOPER", "C1", "700.1", None, "drain edge-7")["payload"].to_string();
    // Unsigned.
    assert_eq!(post(event.clone(), None, None).await.unwrap().status(), 401);
    // Forged: signed with another secret.
    let forged = slack::events::sign(&Secret::new("wrong"), &now.to_string(), event.as_bytes());
    assert_eq!(post(event.clone(), Some(now.to_string()), Some(forged)).await.unwrap().status(), 401);
    // Replayed: a valid signature from ten minutes ago.
    let old = (now - 600).to_string();
    let replay = slack::events::sign(&secret, &old, event.as_bytes());
    assert_eq!(post(event.clone(), Some(old), Some(replay)).await.unwrap().status(), 401);
    // Tampered: a valid signature over another body.
    let sig = slack::events::sign(&secret, &now.to_string(), b"{}");
    assert_eq!(post(event.clone(), Some(now.to_string()), Some(sig)).await.unwrap().status(), 401);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(b.fake.calls().is_empty(), "{:#?}", b.fake.calls());
    assert!(b.parley.services().registry.list_audit(None, 10).await.unwrap().is_empty());
    // url_verification, then a genuine event, answered at once and handled.
    let challenge = serde_json::json!({"type": "url_verification", "challenge": "c-123", "token": "t"}).to_string();
    let sig = slack::events::sign(&secret, &now.to_string(), challenge.as_bytes());
    let answer: Value = post(challenge, Some(now.to_string()), Some(sig)).await.unwrap().json().await.unwrap();
    assert_eq!(answer["challenge"], "c-123");
    let sig = slack::events::sign(&secret, &now.to_string(), event.as_bytes());
    let started = std::time::Instant::now();
    assert_eq!(post(event, Some(now.to_string()), Some(sig)).await.unwrap().status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    let calls = b.fake.wait_for("an answer", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    assert!(text_of(&calls[0]).contains("edge-7"), "{:#?}", calls[0].body);
    let _ = b.stop.send(true);
}
