//! The Events API over HTTP: `POST /slack/events`, `POST /slack/interactive` and
//! `POST /slack/commands` (slash commands, form-encoded, signed the same way).
//!
//! Every request must carry `X-Slack-Signature: v0=<hex HMAC-SHA256 of
//! "v0:<timestamp>:<body>">` under the signing secret, compared in constant time,
//! with an `X-Slack-Request-Timestamp` within five minutes of now; anything else is
//! refused with 401 before its body is even parsed. Answers go back at once (Slack
//! gives up after three seconds); the turn runs on the thread's task.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use super::bridge::Bridge;
use super::config::Secret;

/// Requests older (or further in the future) than this are refused as replays.
pub const MAX_AGE_SECS: i64 = 300;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("no X-Slack-Signature or X-Slack-Request-Timestamp")]
    Unsigned,
    #[error("the request timestamp is not a number")]
    BadTimestamp,
    #[error("the request is older than {MAX_AGE_SECS} s")]
    Stale,
    #[error("the signature does not match")]
    Forged,
}

/// Checks a request as Slack's "verifying requests from Slack" describes.
pub fn verify(
    secret: &Secret,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), VerifyError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else { return Err(VerifyError::Unsigned) };
    let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if (now_secs - ts).abs() > MAX_AGE_SECS {
        return Err(VerifyError::Stale);
    }
    let expected = sign(secret, timestamp.trim(), body);
    if bool::from(expected.as_bytes().ct_eq(signature.trim().as_bytes())) {
        Ok(())
    } else {
        Err(VerifyError::Forged)
    }
}

/// `v0=<hex>` for `body` at `timestamp`.
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + digest.len() * 2);
    out.push_str("v0=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[derive(Clone)]
struct AppState {
    bridge: Arc<Bridge>,
    secret: Secret,
}

pub fn router(bridge: Arc<Bridge>, secret: Secret) -> Router {
    Router::new()
        .route("/slack/events", post(events))
        .route("/slack/interactive", post(interactive))
        .route("/slack/commands", post(commands))
        .with_state(AppState { bridge, secret })
}

fn check(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<(), StatusCode> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    verify(&state.secret, header("x-slack-request-timestamp"), header("x-slack-signature"), body, now).map_err(|e| {
        tracing::warn!(error = %e, "refused a slack request");
        StatusCode::UNAUTHORIZED
    })
}

async fn events(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(status) = check(&state, &headers, &body) {
        return status.into_response();
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    match payload.get("type").and_then(Value::as_str) {
        Some("url_verification") => {
            let challenge = payload.get("challenge").and_then(Value::as_str).unwrap_or("");
            Json(json!({ "challenge": challenge })).into_response()
        }
        Some("event_callback") => {
            state.bridge.accept("events_api", &payload, "");
            StatusCode::OK.into_response()
        }
        _ => StatusCode::OK.into_response(),
    }
}

async fn interactive(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(status) = check(&state, &headers, &body) {
        return status.into_response();
    }
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(_) => return (StatusCode::BAD_REQUEST, "not a form").into_response(),
    };
    let Some(payload) = form.get("payload").and_then(|p| serde_json::from_str::<Value>(p).ok()) else {
        return (StatusCode::BAD_REQUEST, "no payload").into_response();
    };
    state.bridge.accept("interactive", &payload, "");
    StatusCode::OK.into_response()
}

/// A slash command: its form fields are the payload. The empty 200 is Slack's
/// "acknowledged, nothing to show yet"; the answer is posted in the channel.
async fn commands(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(status) = check(&state, &headers, &body) {
        return status.into_response();
    }
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(_) => return (StatusCode::BAD_REQUEST, "not a form").into_response(),
    };
    let payload = Value::Object(form.into_iter().map(|(k, v)| (k, Value::String(v))).collect());
    state.bridge.accept("slash_commands", &payload, "");
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_slacks_documented_example() {
        // The worked example from Slack's "Verifying requests from Slack".
        let secret = Secret::new("8f742231b10e8888abcd99yyyzzz85a5");
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        let sig = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";
        assert_eq!(sign(&secret, "1531420618", body), sig);
        assert_eq!(verify(&secret, Some("1531420618"), Some(sig), body, 1531420618 + 10), Ok(()));
        assert_eq!(verify(&secret, Some("1531420618"), Some(sig), body, 1531420618 + 301), Err(VerifyError::Stale));
        assert_eq!(verify(&secret, Some("1531420618"), Some("v0=00"), body, 1531420618), Err(VerifyError::Forged));
        assert_eq!(verify(&secret, None, Some(sig), body, 0), Err(VerifyError::Unsigned));
    }
}
