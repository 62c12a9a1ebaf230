//! The HTTP server loop of the agent and of Parley's registration endpoint, with the
//! limits `axum::serve` does not have: a client that never finishes its request head,
//! or trickles its body, is cut off after a timeout, bodies are bounded, and the number
//! of open connections is capped, so a few hundred half-open sockets (slowloris) can
//! neither exhaust the process's file descriptors nor keep it from answering Parley.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::protocol::ErrorBody;

/// How patient the server is with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// A request head (request line and headers) must be complete this long after the
    /// server starts waiting for it; an idle keep-alive connection is closed after it too.
    pub header_timeout: Duration,
    /// A request body must be complete this long after its head.
    pub body_timeout: Duration,
    /// Longest request body accepted; the protocol's bodies are a few dozen bytes.
    pub max_body: usize,
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        // Parley polls every agent about once a second, so a keep-alive connection of
        // its own is never idle for 10 s; an honest request head arrives in one packet.
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_body: 64 * 1024,
            max_connections: 512,
        }
    }
}

/// What a connection over the limit is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n\
content-length: 58\r\n\r\n{\"code\":\"unavailable\",\"error\":\"too many open connections\"}";

/// Serves `router` on `listener` under `limits` until `shutdown` resolves, then stops
/// accepting, lets requests in flight finish and returns.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(limits, bounded_body));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        // Finished connections are reaped here so the set does not grow for ever.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: wait a
                // little rather than spin, and keep serving the connections we have.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::warn!(%peer, limit = limits.max_connections, "too many open connections; refusing one");
            // Best effort: a full socket buffer just means the client sees the close.
            let _ = stream.try_write(BUSY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                // The guard `wait_for` answers must not be held across the await below.
                () = async { let _ = stopping.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                // Timeouts and clients that hang up are routine; not worth more than debug.
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    // No receiver left (every connection gone) is fine: nothing to tell.
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Reads the whole body within `body_timeout` and `max_body` before any handler sees
/// it, so that no handler can be kept waiting by a client that trickles bytes.
async fn bounded_body(State(limits): State<HttpLimits>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large =
        || refuse(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body is over {} bytes", limits.max_body));
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return too_large();
    }
    let bytes = match tokio::time::timeout(limits.body_timeout, axum::body::to_bytes(body, limits.max_body)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) if declared.is_none() => return too_large(),
        Ok(Err(e)) => {
            return refuse(StatusCode::BAD_REQUEST, "bad_request", format!("the body could not be read: {e}"))
        }
        Err(_) => {
            return refuse(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("the body did not arrive within {} ms", limits.body_timeout.as_millis()),
            )
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

fn refuse(status: StatusCode, code: &str, error: String) -> Response {
    let mut resp = (status, Json(ErrorBody { code: code.to_string(), error })).into_response();
    // The rest of a refused body may still be on its way: do not try to read past it.
    resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
    resp
}
