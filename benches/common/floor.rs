//! The loopback floor a fleet benchmark is measured against: the same number of HTTP
//! requests, with the same client settings and the same concurrency as Parley's own
//! operation, answered by a bare HTTP server (hyper, one fixed body per request, no
//! agent logic). Absolute times on a shared machine drift with its load; the ratio of
//! Parley's time to a floor measured in the same run holds much better.
//!
//! Included by each fleet bench with `#[path = "common/floor.rs"] mod floor;`, so
//! every bench uses one definition of the floor.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A bare HTTP/1.1 keep-alive server answering every GET with one fixed JSON body and
/// every other request with another (an agent answers an install with its status).
pub struct BareServer {
    pub endpoints: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
}

impl BareServer {
    /// `ports` listeners on loopback port 0, spawned on the current runtime (as the
    /// demo fleet's agents are).
    pub async fn start(ports: usize, get: Bytes, put: Bytes) -> std::io::Result<BareServer> {
        let mut endpoints = Vec::with_capacity(ports);
        let mut tasks = Vec::with_capacity(ports);
        for _ in 0..ports {
            let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
            endpoints.push(format!("http://{}", listener.local_addr()?));
            tasks.push(tokio::spawn(accept(listener, get.clone(), put.clone())));
        }
        Ok(BareServer { endpoints, tasks })
    }

    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for BareServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// One listener on its own runtime in its own thread, as a fleet simulator in another
/// process would be: the floor for a client polling many agents behind one address.
/// Answers the base URL; the server lives until the process ends.
pub fn start_on_own_thread(body: Bytes, workers: usize) -> std::io::Result<String> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(workers.max(1)).enable_all().build()?;
    let std_listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            if let Ok(listener) = TcpListener::from_std(std_listener) {
                accept(listener, body.clone(), body).await;
            }
        })
    });
    Ok(format!("http://{addr}"))
}

async fn accept(listener: TcpListener, get: Bytes, put: Bytes) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (get, put) = (get.clone(), put.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let body = if req.method() == hyper::Method::GET { get.clone() } else { put.clone() };
                async move {
                    let mut resp = Response::new(Full::new(body));
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// A client built exactly as `parley::agent::AgentClient::with_idle_per_host` builds
/// its own (src/agent/client.rs): same timeouts, idle pool size and TCP_NODELAY.
pub fn client(timeout: Duration, idle_per_host: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_max_idle_per_host(idle_per_host.max(1))
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default()
}

/// One request as Parley sends it: method, URL, optional JSON body; reads the whole
/// answer and parses it as JSON (Parley parses every answer too). Answers whether it
/// succeeded.
async fn one(client: &reqwest::Client, method: reqwest::Method, url: &str, body: Option<&[u8]>) -> bool {
    let mut req = client.request(method, url);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_vec());
    }
    let Ok(resp) = req.send().await else { return false };
    let Ok(bytes) = resp.bytes().await else { return false };
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok()
}

/// The floor of a rollout step: a PUT to every endpoint at once (the installs, as
/// `install_batch` joins them all), then a GET to every endpoint at once (the health
/// reads, as the gate joins them all). Answers the time and how many failed.
pub async fn rollout_step(client: &reqwest::Client, endpoints: &[String], install_body: &[u8]) -> (Duration, usize) {
    let started = Instant::now();
    let puts = futures::future::join_all(endpoints.iter().map(|e| async move {
        one(client, reqwest::Method::PUT, &format!("{e}/v1/extensions/x"), Some(install_body)).await
    }))
    .await;
    let gets = futures::future::join_all(
        endpoints
            .iter()
            .map(|e| async move { one(client, reqwest::Method::GET, &format!("{e}/v1/health"), None).await }),
    )
    .await;
    let failed = puts.iter().chain(&gets).filter(|ok| !**ok).count();
    (started.elapsed(), failed)
}

/// The floor of a refresh: one GET per URL with at most `concurrency` in flight (the
/// poller's `buffer_unordered`). Answers the time and how many failed.
pub async fn refresh(client: &reqwest::Client, urls: Arc<Vec<String>>, concurrency: usize) -> (Duration, usize) {
    use futures::StreamExt;
    let started = Instant::now();
    let urls2 = Arc::clone(&urls);
    let oks: Vec<bool> = futures::stream::iter(0..urls.len())
        .map(|i| {
            let urls = Arc::clone(&urls2);
            async move { one(client, reqwest::Method::GET, &urls[i], None).await }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    (started.elapsed(), oks.iter().filter(|ok| !**ok).count())
}

/// Median of `times` (sorted in place); zero when empty.
pub fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

/// Milliseconds with one decimal, for the tables.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Parley's time over the floor's.
pub fn ratio(parley: Duration, floor: Duration) -> f64 {
    if floor.is_zero() {
        return f64::NAN;
    }
    parley.as_secs_f64() / floor.as_secs_f64()
}
