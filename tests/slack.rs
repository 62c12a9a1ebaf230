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
use slack_fake::{block_actions, bot_mention, button_value, click, mention, slash_command, slash_fields, FakeSlack};

struct Bridge {
    fake: FakeSlack,
    parley: std::sync::Arc<Parley>,
    stop: tokio::sync::watch::Sender<bool>,
    events_addr: Option<std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

const SIGNING: &str = "test-signing-secret";

async fn start(mode: SlackMode) -> Bridge {
    start_with(mode, FakeSlack::start().await, "", Duration::from_secs(5)).await
}

/// A bridge on `fake`, with `slack_extra` added to the `[slack]` table (before its
/// sub-tables) and the Socket Mode watchdog at `ping_interval`.
async fn start_with(mode: SlackMode, fake: FakeSlack, slack_extra: &str, ping_interval: Duration) -> Bridge {
    let dir = tempfile::tempdir().unwrap();
    if let Some(ca) = &fake.ca_pem {
        std::fs::write(dir.path().join("fake-ca.pem"), ca).unwrap();
    }
    let path = dir.path().join("parley.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"state\"\n[rollout]\nbake_secs = 0.05\n[slack]\nbase_url = \"{}\"\n{slack_extra}\n\
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
    let socket = SocketOptions { ping_interval, ..SocketOptions::default() };
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
    // The button names the proposal it was shown with.
    let value = actions["elements"][0]["value"].as_str().unwrap();
    assert!(slack::blocks::parse_answer_value(value).is_some(), "{value}");
    assert!(actions["elements"][0]["confirm"]["title"].is_object());
    let question_ts = question.ts.clone().unwrap();
    b.fake.send(b.fake.click_on("e2", "UOPER", "C1", &question_ts, "parley_confirm").unwrap());
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

/// Signs and posts `body` to the bridge's Events API endpoint `path`.
async fn post_signed(addr: std::net::SocketAddr, path: &str, content_type: &str, body: String) -> reqwest::Response {
    let now = chrono::Utc::now().timestamp().to_string();
    let sig = slack::events::sign(&Secret::new(SIGNING), &now, body.as_bytes());
    reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", content_type)
        .header("X-Slack-Request-Timestamp", now)
        .header("X-Slack-Signature", sig)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn form(fields: &[(String, String)]) -> String {
    serde_urlencoded::to_string(fields).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_replaced_within_the_watchdog_time_and_nothing_is_lost() {
    let ping = Duration::from_millis(250);
    let b = start_with(SlackMode::Socket, FakeSlack::start().await, "", ping).await;
    b.fake.send(mention("e1", "Ev1", "UVIEW", "C1", "800.1", None, "how healthy is us-east?"));
    b.fake.wait_for("the first answer", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    // Slack's side goes dark: no frames, no pongs; the TCP connection stays up. An
    // envelope sent now is lost on the way.
    let silent_at = std::time::Instant::now();
    b.fake.go_silent();
    b.fake.send(mention("e2", "Ev2", "UVIEW", "C1", "800.2", None, "how healthy is eu-west?"));
    b.fake.wait_connections(2).await;
    let replaced_after = silent_at.elapsed();
    // A ping after one interval of silence, the socket given up after another.
    assert!(replaced_after < ping * 2 + Duration::from_secs(2), "replaced after {replaced_after:?}");
    let opens = b.fake.calls().iter().filter(|c| c.method == "apps.connections.open").count();
    assert_eq!(opens, 2);
    // Slack redelivers what was never acked, on the new connection.
    assert_eq!(b.fake.redeliver_unacked(), ["e2"]);
    b.fake
        .wait_for("the lost question answered", |c| {
            c.iter().any(|c| c.method == "chat.postMessage" && c.body["thread_ts"] == "800.2")
        })
        .await;
    assert_eq!(b.fake.acks().iter().map(|a| a.0.as_str()).collect::<Vec<_>>(), ["e1", "e2"]);
    assert_eq!(replies_in_thread(&b.fake, "C1", "800.2").len(), 1);
    assert!(text_of(&replies_in_thread(&b.fake, "C1", "800.2")[0]).contains("eu-west"));
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_wss_with_a_ca_from_the_config_round_trip_a_health_question() {
    let fake = FakeSlack::start_tls().await;
    assert!(fake.base_url().starts_with("https://127.0.0.1:"), "{}", fake.base_url());
    let app_token = Secret::new("xapp-test-app");
    // The fake's CA is nobody's: with the built-in roots only, Slack cannot be reached.
    let builtin = slack::web::WebClient::new(&fake.base_url()).unwrap();
    let e = builtin.open_connection(&app_token).await.unwrap_err().to_string();
    assert!(e.starts_with("slack apps.connections.open:") && !e.contains("xapp-test-app"), "{e}");
    assert!(fake.calls().is_empty(), "{:#?}", fake.calls());
    // Trusted through `[slack] ca_file` (relative to the config file).
    let b = start_with(SlackMode::Socket, fake, "ca_file = \"fake-ca.pem\"", Duration::from_secs(5)).await;
    b.fake.send(mention("e1", "Ev1", "UVIEW", "C1", "900.1", None, "how healthy is eu-west?"));
    let calls = b.fake.wait_for("an answer over https", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    let post = calls.iter().find(|c| c.method == "chat.postMessage").unwrap();
    assert_eq!((post.body["channel"].as_str(), post.body["thread_ts"].as_str()), (Some("C1"), Some("900.1")));
    assert!(text_of(post).contains("eu-west"), "{:#?}", post.body);
    assert_eq!(b.fake.acks().iter().map(|a| a.0.as_str()).collect::<Vec<_>>(), ["e1"]);
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slash_command_over_socket_mode_is_acked_and_answered_in_the_channel_with_roles_and_audit() {
    let b = start(SlackMode::Socket).await;
    let url = b.fake.response_url("1");
    let ask = slash_fields("UVIEW", "C1", "how healthy is eu-west", "trig-1", &url);
    b.fake.send(slash_command("e1", &ask));
    // Redelivered (same trigger, new envelope): acked, not run again.
    b.fake.send(slash_command("e1-retry", &ask));
    let deploy = slash_fields("UVIEW", "C1", "roll out auth-filter 2.1.0 to ap-south", "trig-2", &url);
    b.fake.send(slash_command("e2", &deploy));
    let calls =
        b.fake.wait_for("two answers", |c| c.iter().filter(|c| c.method == "chat.postMessage").count() == 2).await;
    let posts: Vec<_> = calls.iter().filter(|c| c.method == "chat.postMessage").collect();
    // Slash commands do not run in threads: the answers are channel messages.
    for p in &posts {
        assert_eq!(p.body["channel"], "C1");
        assert!(p.body.get("thread_ts").is_none(), "{:#?}", p.body);
        assert_eq!(p.auth, "Bearer xoxb-test-bot");
    }
    let health = posts.iter().find(|p| text_of(p).contains("eu-west")).unwrap();
    assert_eq!(health.body["blocks"][0]["type"], "section");
    let refused = posts.iter().find(|p| !text_of(p).contains("eu-west")).unwrap();
    assert!(text_of(refused).contains("needs the operator role"), "{:#?}", refused.body);
    let mut acks: Vec<String> = b.fake.acks().into_iter().map(|a| a.0).collect();
    acks.sort();
    assert_eq!(acks, ["e1", "e1-retry", "e2"]);
    let audit = b.parley.services().registry.list_audit(None, 10).await.unwrap();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert!(audit.iter().all(|a| a.actor == "UVIEW" && a.frontend == "slack:C1"), "{audit:#?}");
    assert!(audit.iter().any(|a| a.result.as_str() == "refused"), "{audit:#?}");
    // Where the bot may not post, the asker gets the answer through response_url.
    b.fake.not_in_channel("CSECRET");
    let url = b.fake.response_url("2");
    b.fake.send(slash_command("e3", &slash_fields("UVIEW", "CSECRET", "how healthy is us-west", "trig-3", &url)));
    let calls = b.fake.wait_for("the response_url answer", |c| c.iter().any(|c| c.method == "response_url/2")).await;
    let answer = calls.iter().find(|c| c.method == "response_url/2").unwrap();
    assert_eq!(answer.body["response_type"], "ephemeral");
    assert!(text_of(answer).contains("us-west"), "{:#?}", answer.body);
    assert_eq!(answer.auth, "", "a response_url needs no token");
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slash_command_over_http_is_acked_at_once_and_its_confirm_button_continues_in_a_thread() {
    let b = start(SlackMode::Events).await;
    let addr = b.events_addr.unwrap();
    let url = b.fake.response_url("1");
    let body = form(&slash_fields("UOPER", "C1", "roll out auth-filter 2.1.0 to eu-west", "trig-9", &url));
    // Unsigned: refused like any Events API request.
    let unsigned = reqwest::Client::new()
        .post(format!("http://{addr}/slack/commands"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let started = std::time::Instant::now();
    let ack = post_signed(addr, "/slack/commands", "application/x-www-form-urlencoded", body).await;
    assert_eq!(ack.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    // An empty 200 is Slack's "acknowledged"; a body would be shown as the answer.
    assert_eq!(ack.text().await.unwrap(), "");
    let calls = b.fake.wait_for("the question", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    let question = calls.iter().find(|c| c.method == "chat.postMessage").unwrap();
    assert!(question.body.get("thread_ts").is_none(), "{:#?}", question.body);
    assert!(question.body["text"].as_str().unwrap().contains("eu-west"), "{:#?}", question.body);
    // The question was posted as 9000.0001; its Confirm button, clicked over HTTP.
    let question_ts = "9000.0001";
    assert_eq!(question.ts.as_deref(), Some(question_ts));
    let value = button_value(&question.body, "parley_confirm").unwrap();
    let payload = block_actions("a1", "UOPER", "C1", None, question_ts, "parley_confirm", &value);
    let body = form(&[("payload".to_string(), payload.to_string())]);
    let clicked = post_signed(addr, "/slack/interactive", "application/x-www-form-urlencoded", body).await;
    assert_eq!(clicked.status(), 200);
    b.fake
        .wait_for("the summary in the question's thread", |c| {
            c.iter().any(|c| c.body["thread_ts"] == question_ts && text_of(c).contains("d-1: succeeded"))
        })
        .await;
    let thread = replies_in_thread(&b.fake, "C1", question_ts);
    assert!(text_of(&thread[0]).contains("d-1"), "{:#?}", thread[0].body);
    let d = b.parley.services().registry.deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(d.status.as_str(), "succeeded");
    let audit = b.parley.services().registry.list_audit(None, 10).await.unwrap();
    assert!(audit.iter().all(|a| a.actor == "UOPER" && a.frontend == "slack:C1"), "{audit:#?}");
    let _ = b.stop.send(true);
}

/// `parley slack`, the real binary, against the fake Slack in Socket Mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parley_binary_answers_a_health_question_in_its_thread() {
    let fake = FakeSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("parley.toml");
    std::fs::write(&config, format!("[slack]\nbase_url = \"{}\"\nping_interval_secs = 5\n", fake.base_url())).unwrap();
    let data = dir.path().join("data");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .arg("slack")
        .env("SLACK_BOT_TOKEN", "xoxb-binary-secret")
        .env("SLACK_APP_TOKEN", "xapp-binary-secret")
        .env_remove("SLACK_SIGNING_SECRET")
        .env("PARLEY_LOG", "debug")
        // The bridge is a client: with nothing running it starts the data directory's
        // server, which this test stops at the end.
        .env_remove("PARLEY_IN_PROCESS")
        .env_remove("PARLEY_SERVER")
        .env("PARLEY_IDLE_STOP_SECS", "30")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Child(child);
    fake.wait_connections(1).await;
    assert_eq!(fake.calls()[0].auth, "Bearer xapp-binary-secret");
    fake.send(mention("e1", "Ev1", "UVIEW", "C1", "1000.1", None, "how healthy is eu-west?"));
    let calls = fake.wait_for("an answer", |c| c.iter().any(|c| c.method == "chat.postMessage")).await;
    let post = calls.iter().find(|c| c.method == "chat.postMessage").unwrap();
    assert_eq!((post.body["channel"].as_str(), post.body["thread_ts"].as_str()), (Some("C1"), Some("1000.1")));
    assert!(text_of(post).contains("eu-west"), "{:#?}", post.body);
    assert_eq!(post.auth, "Bearer xoxb-binary-secret");
    // SIGTERM: the bridge stops cleanly.
    let pid = child.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "parley slack did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status:?}\n{stderr}");
    // The turn was the server's, audited as the Slack user in that channel; the
    // server never saw the Slack secrets (it is started without them).
    let bin = env!("CARGO_BIN_EXE_parley");
    let audit =
        std::process::Command::new(bin).arg("--data-dir").arg(&data).args(["audit", "--json"]).output().unwrap();
    let audit: serde_json::Value = serde_json::from_slice(&audit.stdout).unwrap();
    let entries = audit.as_array().cloned().unwrap_or_default();
    assert!(
        entries.iter().any(|e| e["actor"] == "slack:UVIEW"
            && e["frontend"] == "slack:C1"
            && e["utterance"] == "how healthy is eu-west?"),
        "{audit:#}"
    );
    let stop = std::process::Command::new(bin).arg("--data-dir").arg(&data).args(["serve", "stop"]).output().unwrap();
    assert!(stop.status.success(), "serve stop: {}", String::from_utf8_lossy(&stop.stderr));
    // Neither token reached the terminal or any file Parley wrote (logs at debug, registry).
    assert!(!stderr.contains("binary-secret"), "{stderr}");
    for file in walk(&data).into_iter().filter(|f| f.is_file()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(13).any(|w| w == b"binary-secret"), "a token in {}", file.display());
    }
    assert!(walk(&data).iter().any(|f| f.ends_with("parley.log")), "{:?}", walk(&data));
}

/// Kills the child if a test fails before it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Acks of frames that arrive together are written together: none may be lost or
/// handed on twice at the batch boundaries, and order is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_envelopes_is_acked_and_handed_on_once_each_in_order() {
    use parley::slack::socket::{Dispatch, Envelope};
    struct Record(std::sync::Mutex<Vec<String>>);
    impl Dispatch for Record {
        fn dispatch(&self, envelope: Envelope) {
            self.0.lock().unwrap().push(envelope.envelope_id);
        }
    }
    let fake = FakeSlack::start().await;
    let web = slack::web::WebClient::new(&fake.base_url()).unwrap();
    let record = std::sync::Arc::new(Record(std::sync::Mutex::new(Vec::new())));
    let sink: std::sync::Arc<dyn Dispatch> = record.clone();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(slack::socket::run(web, Secret::new("xapp-burst"), sink, SocketOptions::default(), stop_rx));
    fake.wait_connections(1).await;
    let n = 500;
    let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        fake.send(mention(id, &format!("Ev{i}"), "U1", "C1", "1.1", None, "help"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while record.0.lock().unwrap().len() < n || fake.ack_count() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} handed on, {} acked",
            record.0.lock().unwrap().len(),
            fake.ack_count()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*record.0.lock().unwrap(), ids);
    assert_eq!(fake.acks().into_iter().map(|a| a.0).collect::<Vec<_>>(), ids);
    let _ = stop.send(true);
}

/// The `n`th (1-based) message the bot posted in `thread`, once there is one.
async fn nth_post(fake: &FakeSlack, channel: &str, thread: &str, n: usize) -> slack_fake::Call {
    fake.wait_for(&format!("post #{n} in {thread}"), |_| replies_in_thread(fake, channel, thread).len() >= n).await;
    replies_in_thread(fake, channel, thread).swap_remove(n - 1)
}

fn has_buttons(message: &Value) -> bool {
    message["blocks"].as_array().unwrap().iter().any(|b| b["type"] == "actions")
}

/// The context line a closed confirmation ends with.
fn closing_note(message: &Value) -> String {
    let last = message["blocks"].as_array().unwrap().last().unwrap();
    last["elements"][0]["text"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_confirm_button_confirms_nothing_and_a_spent_one_is_closed() {
    let b = start(SlackMode::Socket).await;
    b.fake.send(mention("e1", "Ev1", "UOPER", "C1", "210.1", None, "roll out auth-filter 2.1.0 to eu-west"));
    let q1 = nth_post(&b.fake, "C1", "210.1", 1).await;
    assert!(has_buttons(&q1.body), "{:#?}", q1.body);
    let q1_ts = q1.ts.clone().unwrap();
    let eu_west_yes = button_value(&q1.body, "parley_confirm").unwrap();
    // A newer proposal in the same thread replaces it, and its message loses its buttons.
    b.fake.send(mention("e2", "Ev2", "UOPER", "C1", "210.2", Some("210.1"), "roll out auth-filter 2.1.0 to us-east"));
    let q2 = nth_post(&b.fake, "C1", "210.1", 2).await;
    let q2_ts = q2.ts.clone().unwrap();
    assert!(text_of(&q2).contains("us-east"), "{:#?}", q2.body);
    b.fake
        .wait_for("the eu-west question closed", |c| {
            c.iter().any(|c| c.method == "chat.update" && c.ts.as_deref() == Some(q1_ts.as_str()))
        })
        .await;
    let closed = b.fake.message("C1", &q1_ts).unwrap();
    assert!(!has_buttons(&closed), "{closed:#?}");
    assert!(closing_note(&closed).starts_with("No longer pending after <@UOPER>'s message at "), "{closed:#?}");
    assert!(text_of(&q1).contains("eu-west"));
    assert_eq!(closed["text"], q1.body["text"], "the question's words stay");
    // The eu-west Confirm, clicked anyway (a screen not yet updated): nothing starts.
    b.fake.send(click("e3", "UOPER", "C1", "210.1", &q1_ts, "parley_confirm", &eu_west_yes));
    let refusal = nth_post(&b.fake, "C1", "210.1", 3).await;
    assert!(
        text_of(&refusal)
            .starts_with("That proposal is no longer pending, so nothing was changed. Waiting for yes or no now: "),
        "{:#?}",
        refusal.body
    );
    assert!(text_of(&refusal).contains("us-east"), "{:#?}", refusal.body);
    assert!(b.parley.services().registry.deployment_by_name("d-1").await.unwrap().is_none());
    // The us-east question still waits, and its own Confirm starts us-east.
    assert!(has_buttons(&b.fake.message("C1", &q2_ts).unwrap()));
    b.fake.send(b.fake.click_on("e4", "UOPER", "C1", &q2_ts, "parley_confirm").unwrap());
    b.fake
        .wait_for("the summary", |c| {
            c.iter().any(|c| c.body["thread_ts"] == "210.1" && text_of(c).contains("d-1: succeeded"))
        })
        .await;
    let d = b.parley.services().registry.deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(d.utterance, "roll out auth-filter 2.1.0 to us-east");
    let confirmed = b.fake.message("C1", &q2_ts).unwrap();
    assert!(!has_buttons(&confirmed), "{confirmed:#?}");
    assert!(closing_note(&confirmed).starts_with("Confirmed by <@UOPER> at "), "{confirmed:#?}");
    assert!(b.fake.click_on("e5", "UOPER", "C1", &q2_ts, "parley_confirm").is_none(), "a spent button is gone");
    // Clicked twice before Slack showed the update: the second click changes nothing.
    let us_east_yes = button_value(&q2.body, "parley_confirm").unwrap();
    let before = replies_in_thread(&b.fake, "C1", "210.1").len();
    b.fake.send(click("e6", "UOPER", "C1", "210.1", &q2_ts, "parley_confirm", &us_east_yes));
    let again = nth_post(&b.fake, "C1", "210.1", before + 1).await;
    assert_eq!(text_of(&again), "That proposal is no longer pending, so nothing was changed.");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = b.parley.services().registry.deployment_by_name("d-1").await.unwrap().unwrap();
    assert_eq!(d.status.as_str(), "succeeded");
    assert!(b.parley.services().registry.deployment_by_name("d-2").await.unwrap().is_none());
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_proposer_or_an_admin_can_cancel_a_pending_rollout() {
    let b = start(SlackMode::Socket).await;
    b.fake.send(mention("e1", "Ev1", "UOPER", "C1", "220.1", None, "roll out auth-filter 2.1.0 to eu-west"));
    let q = nth_post(&b.fake, "C1", "220.1", 1).await;
    let q_ts = q.ts.clone().unwrap();
    // A viewer presses Cancel on the operator's rollout: refused, and it still waits.
    b.fake.send(b.fake.click_on("e2", "UVIEW", "C1", &q_ts, "parley_cancel").unwrap());
    let refused = nth_post(&b.fake, "C1", "220.1", 2).await;
    assert!(
        text_of(&refused).starts_with("Only UOPER (who asked for it) or an admin can cancel this; UVIEW is a viewer. Still waiting for yes or no on: "),
        "{:#?}",
        refused.body
    );
    // Nor may the viewer confirm it, and a question of theirs in the thread leaves it waiting.
    b.fake.send(b.fake.click_on("e3", "UVIEW", "C1", &q_ts, "parley_confirm").unwrap());
    let refused = nth_post(&b.fake, "C1", "220.1", 3).await;
    assert!(text_of(&refused).contains("needs the operator role; UVIEW is a viewer"), "{:#?}", refused.body);
    b.fake.send(mention("e4", "Ev4", "UVIEW", "C1", "220.2", Some("220.1"), "how healthy is eu-west?"));
    let answer = nth_post(&b.fake, "C1", "220.1", 4).await;
    assert!(!text_of(&answer).contains("Dropped"), "{:#?}", answer.body);
    assert!(has_buttons(&b.fake.message("C1", &q_ts).unwrap()), "the proposal's buttons stay");
    assert!(!b.fake.calls().iter().any(|c| c.method == "chat.update"), "{:#?}", b.fake.calls());
    // An admin may withdraw it.
    b.fake.send(b.fake.click_on("e5", "UADMIN", "C1", &q_ts, "parley_cancel").unwrap());
    let cancelled = nth_post(&b.fake, "C1", "220.1", 5).await;
    assert!(text_of(&cancelled).starts_with("Cancelled: "), "{:#?}", cancelled.body);
    b.fake.wait_for("the question closed", |c| c.iter().any(|c| c.method == "chat.update")).await;
    let closed = b.fake.message("C1", &q_ts).unwrap();
    assert!(!has_buttons(&closed));
    assert!(closing_note(&closed).starts_with("Cancelled by <@UADMIN> at "), "{closed:#?}");
    assert!(b.parley.services().registry.deployment_by_name("d-1").await.unwrap().is_none());
    let audit = b.parley.services().registry.list_audit(None, 20).await.unwrap();
    assert!(
        audit.iter().any(|a| a.actor == "UVIEW"
            && a.result.as_str() == "refused"
            && a.operation.as_ref().is_some_and(|o| o["op"] == "cancel")),
        "{audit:#?}"
    );
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_from_slack_is_decoded_and_nothing_a_user_wrote_pings_anyone() {
    let b = start(SlackMode::Socket).await;
    let sneaky = "<!channel> <!here> <!subteam^S123|@oncall> &lt;b&gt; &amp; <@U0SOMEONE> now";
    b.fake.send(mention("e1", "Ev1", "UVIEW", "C1", "230.1", None, sneaky));
    let reply = nth_post(&b.fake, "C1", "230.1", 1).await;
    assert_eq!(
        text_of(&reply),
        "I didn't understand \"@channel @here @oncall &lt;b&gt; &amp; @U0SOMEONE now\". Try one of these, or `help` for more."
    );
    // No mention, broadcast or link of the user's anywhere in what was sent.
    let sent = reply.body.to_string();
    for control in ["<!", "<@", "<#", "<http"] {
        assert!(!sent.contains(control), "{control} in {sent}");
    }
    // A channel link reads as its name.
    b.fake.send(mention("e2", "Ev2", "UVIEW", "C1", "230.2", None, "how healthy is <#C0EUWEST|eu-west>?"));
    let answer = nth_post(&b.fake, "C1", "230.2", 1).await;
    assert!(text_of(&answer).starts_with("eu-west"), "{:#?}", answer.body);
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_bots_mention_and_the_bots_own_messages_are_not_answered() {
    let b = start(SlackMode::Socket).await;
    b.fake.send(bot_mention("e1", "Ev1", "C1", "240.1", "how healthy is us-east?"));
    b.fake.send(mention("e2", "Ev2", "UPARLEY", "C1", "240.2", None, "how healthy is us-east?"));
    b.fake.send(mention("e3", "Ev3", "UVIEW", "C1", "240.3", None, "how healthy is us-east?"));
    b.fake.wait_for("the person's answer", |c| c.iter().any(|c| c.body["thread_ts"] == "240.3")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posts: Vec<_> = b.fake.calls().into_iter().filter(|c| c.method == "chat.postMessage").collect();
    assert_eq!(posts.len(), 1, "{posts:#?}");
    assert_eq!(b.fake.ack_count(), 3, "bots' envelopes are acked all the same");
    let audit = b.parley.services().registry.list_audit(None, 10).await.unwrap();
    assert_eq!(audit.iter().map(|a| a.actor.as_str()).collect::<Vec<_>>(), ["UVIEW"]);
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mention_that_is_not_understood_is_audited() {
    let b = start(SlackMode::Socket).await;
    b.fake.send(mention("e1", "Ev1", "UVIEW", "C1", "250.1", None, "flibber the gizmo"));
    nth_post(&b.fake, "C1", "250.1", 1).await;
    let audit = b.parley.services().registry.list_audit(None, 10).await.unwrap();
    let rows: Vec<_> = audit
        .iter()
        .map(|a| {
            (a.actor.as_str(), a.frontend.as_str(), a.utterance.as_str(), a.result.as_str(), a.operation.is_none())
        })
        .collect();
    assert_eq!(rows, [("UVIEW", "slack:C1", "flibber the gizmo", "failed", true)], "{audit:#?}");
    assert!(audit[0].message.starts_with("I didn't understand \"flibber the gizmo\""), "{audit:#?}");
    let _ = b.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_ends_before_its_started_reply_is_posted_still_reports_how_it_ended() {
    let b = start(SlackMode::Socket).await;
    b.fake.send(mention("e1", "Ev1", "UOPER", "C1", "260.1", None, "roll out auth-filter 2.1.0 to eu-west"));
    let q = nth_post(&b.fake, "C1", "260.1", 1).await;
    // Slack holds back the channel's next call for 4 s; the rollout is quicker.
    b.fake.rate_limit_next_for(1, 4);
    b.fake.send(b.fake.click_on("e2", "UOPER", "C1", q.ts.as_deref().unwrap(), "parley_confirm").unwrap());
    let registry = &b.parley.services().registry;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = registry.deployment_by_name("d-1").await.unwrap();
        if d.is_some_and(|d| d.status.as_str() == "succeeded") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "d-1 never succeeded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        replies_in_thread(&b.fake, "C1", "260.1").len(),
        1,
        "the rollout ended before its Started reply was posted"
    );
    b.fake
        .wait_for("the summary", |c| {
            c.iter().any(|c| c.body["thread_ts"] == "260.1" && text_of(c).starts_with("d-1: succeeded."))
        })
        .await;
    let thread = replies_in_thread(&b.fake, "C1", "260.1");
    assert!(text_of(&thread[1]).contains("d-1"), "the Started reply: {:#?}", thread[1].body);
    // The progress message, as it stands at the end, says how the rollout ended.
    let progress = thread
        .iter()
        .find(|c| c.body["blocks"][0]["text"]["text"].as_str().unwrap_or("").starts_with("*d-1*"))
        .unwrap();
    let shown = b.fake.message("C1", progress.ts.as_deref().unwrap()).unwrap();
    assert_eq!(shown["text"], "d-1: succeeded", "{shown:#?}");
    let _ = b.stop.send(true);
}

const BRIDGE_TOKEN: &str = "bridge-token-5e2a9c4f7d1b";
const ALICE_TOKEN: &str = "alice-token-0b8e3f6a2c9d";

/// `parley serve` (the real binary) on `dir`, with TCP on port 0 and a tokens file
/// holding a bridge token (an operator) and a plain one; its `http://` address.
fn start_server(dir: &std::path::Path) -> (Child, String) {
    use std::io::BufRead as _;
    use std::os::unix::fs::PermissionsExt as _;
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("# TOKEN USER ROLE [bridge]\n{BRIDGE_TOKEN} slackbot operator bridge\n{ALICE_TOKEN} alice admin\n"),
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--data-dir")
        .arg(dir.join("server"))
        .args(["--bake-secs", "0.05", "serve", "--listen", "127.0.0.1:0", "--tokens"])
        .arg(&tokens)
        .env_remove("PARLEY_SERVER")
        .env_remove("PARLEY_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let child = Child(child);
    let line = rx.recv_timeout(Duration::from_secs(90)).expect("parley serve printed nothing within 90 s");
    let addr = line.split(" and http://").nth(1).unwrap_or_else(|| panic!("no TCP address in {line:?}"));
    (child, format!("http://{addr}"))
}

async fn server_get(url: &str, path: &str) -> Value {
    let r = reqwest::Client::new().get(format!("{url}{path}")).bearer_auth(BRIDGE_TOKEN).send().await.unwrap();
    r.json().await.unwrap()
}

/// The bridge as a client of a real `parley serve` over TCP with a bridge token: two
/// Slack users in one thread, each with their own server session. The viewer's yes
/// (typed or clicked) confirms nothing and says whose proposal it is; the operator's
/// yes starts the rollout in the server, whose progress and end reach the thread
/// from the event stream; the server's audit names the Slack users, and a viewer's
/// pause is refused naming the operator role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_client_of_parley_serve_each_slack_user_confirms_only_their_own_proposal() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = start_server(dir.path());
    let fake = FakeSlack::start().await;
    let path = dir.path().join("parley.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"bridge\"\n[slack]\nbase_url = \"{}\"\n[slack.users]\nUOPER = \"operator\"\nUADMIN = \"admin\"\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let config = Config::load(Some(&path)).unwrap();
    let secrets = Secrets {
        bot_token: Secret::new("xoxb-test-bot"),
        app_token: Some(Secret::new("xapp-test-app")),
        signing_secret: None,
    };
    let socket = SocketOptions { ping_interval: Duration::from_secs(5), ..SocketOptions::default() };
    let run = SlackRun { settings: config.slack.clone(), secrets, socket, listener: None };
    let client =
        parley::client::Client::new(parley::client::ServerUrl::parse(&url).unwrap(), Some(BRIDGE_TOKEN.to_string()));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move { slack::run_client(client, run, stop_rx).await.unwrap() });
    fake.wait_connections(1).await;

    fake.send(mention("e1", "Ev1", "UOPER", "C1", "300.1", None, "roll out auth-filter 2.1.0 to eu-west"));
    let question = nth_post(&fake, "C1", "300.1", 1).await;
    assert!(has_buttons(&question.body), "{:#?}", question.body);
    let q_ts = question.ts.clone().unwrap();

    // The viewer's typed yes answers nothing of theirs, and says whose proposal waits.
    fake.send(mention("e2", "Ev2", "UVIEW", "C1", "300.2", Some("300.1"), "yes"));
    let told = nth_post(&fake, "C1", "300.1", 2).await;
    let told = text_of(&told);
    assert!(
        told.starts_with("Nothing is waiting for confirmation. The proposal waiting in this thread (")
            && told.ends_with(
                ") is UOPER's: only they can confirm or cancel it; a yes or no answers only what its speaker asked for."
            ),
        "{told}"
    );
    // Nor does the viewer's click on the operator's Confirm button; the buttons stay.
    fake.send(fake.click_on("e3", "UVIEW", "C1", &q_ts, "parley_confirm").unwrap());
    let told = text_of(&nth_post(&fake, "C1", "300.1", 3).await);
    assert!(told.starts_with("Nothing was changed. The proposal waiting in this thread ("), "{told}");
    assert!(has_buttons(&fake.message("C1", &q_ts).unwrap()), "the operator's buttons stay");
    let r = reqwest::Client::new().get(format!("{url}/v1/deployments/d-1")).bearer_auth(BRIDGE_TOKEN).send().await;
    assert_eq!(r.unwrap().status(), 404, "nothing was started by the viewer");

    // The operator's yes starts it in the server; progress and the end reach the thread.
    fake.send(mention("e4", "Ev4", "UOPER", "C1", "300.3", Some("300.1"), "yes"));
    fake.wait_for("the summary", |c| {
        c.iter().any(|c| c.body["thread_ts"] == "300.1" && text_of(c).contains("d-1: succeeded"))
    })
    .await;
    fake.wait_for("the question closed", |c| c.iter().any(|c| c.method == "chat.update" && c.body["ts"] == q_ts)).await;
    assert!(
        closing_note(&fake.message("C1", &q_ts).unwrap()).starts_with("No longer pending after <@UOPER>'s message at ")
    );
    let d1 = server_get(&url, "/v1/deployments/d-1").await;
    assert_eq!(d1["status"], "succeeded", "{d1:#}");

    // A viewer may not pause; the refusal names the role it needs.
    fake.send(mention("e5", "Ev5", "UVIEW", "C1", "300.4", Some("300.1"), "pause d-1"));
    fake.wait_for("the refusal", |c| c.iter().any(|c| text_of(c).contains("pause needs the operator role"))).await;
    let refused = fake.calls().into_iter().find(|c| text_of(c).contains("pause needs the operator role")).unwrap();
    assert!(text_of(&refused).contains("slack:UVIEW is a viewer"), "{:#?}", refused.body);
    // The bridge's token is an operator: an admin in [slack.users] acts as one through it.
    fake.send(mention("e6", "Ev6", "UADMIN", "C1", "300.5", Some("300.1"), "fail over eu-west to us-east"));
    fake.wait_for("the capped refusal", |c| c.iter().any(|c| text_of(c).contains("slack:UADMIN is an operator"))).await;

    // The server's audit names each Slack user and the channel, never the bridge's token user.
    let audit = server_get(&url, "/v1/audit?since=today").await;
    let entries = audit["entries"].as_array().unwrap();
    let row = |actor: &str, op: &str, result: &str| {
        entries.iter().any(|e| {
            e["actor"] == actor && e["frontend"] == "slack:C1" && e["operation"]["op"] == op && e["result"] == result
        })
    };
    assert!(row("slack:UOPER", "deploy", "ok"), "{audit:#}");
    assert!(row("slack:UVIEW", "pause", "refused"), "{audit:#}");
    assert!(row("slack:UVIEW", "confirm", "ok") || row("slack:UVIEW", "confirm", "infeasible"), "{audit:#}");
    assert!(!entries.iter().any(|e| e["actor"] == "slackbot"), "{audit:#}");

    // A token not marked `bridge` may not speak for anyone else.
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/turn"))
        .bearer_auth(ALICE_TOKEN)
        .json(&serde_json::json!({"session": "s1", "utterance": "pause d-1", "on_behalf_of": {"user": "slack:UOPER", "role": "operator"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["error"],
        "`on_behalf_of` is only for a bridge: alice's token is not marked `bridge` in the server's tokens file (`TOKEN USER ROLE bridge`)"
    );
    let _ = stop.send(true);
}
