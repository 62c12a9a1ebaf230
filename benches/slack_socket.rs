//! Socket Mode throughput and envelope->ack latency against the fake Slack on
//! loopback. Measures the transport path only: receive frame -> parse -> ack ->
//! dispatch to a counting sink. Session work (parse, dialog, reply) is excluded
//! here; it is measured by the `parse` and dialog benches.
//!
//! Latency is what Slack would see: from the moment the fake writes an envelope
//! onto the socket to the moment it reads the ack (not from when the bench queued
//! it, which would count the fake's own queue). The wait loop reads a counter, not
//! a copy of every ack, so the bench does not compete with what it measures, and
//! the fake runs on a runtime of its own, as Slack would on its own machines.

#[path = "../tests/slack_fake/mod.rs"]
mod slack_fake;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parley::slack::config::Secret;
use parley::slack::socket::{self, Dispatch, Envelope, SocketOptions};
use parley::slack::web::WebClient;

struct Count(AtomicUsize);

impl Dispatch for Count {
    fn dispatch(&self, _envelope: Envelope) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() {
    // Slack is another machine: the fake gets a runtime (and a thread) of its own, so
    // the bridge's reads never wait in a run queue behind the fake's writes.
    let slack = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let fake = slack.block_on(slack_fake::FakeSlack::start());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let web = WebClient::new(&fake.base_url()).unwrap();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        let sink: Arc<dyn Dispatch> = count.clone();
        tokio::spawn(socket::run(web, Secret::new("xapp-bench"), sink, SocketOptions::default(), stop_rx));
        fake.wait_connections(1).await;
        let n = 20_000;
        let started = Instant::now();
        for i in 0..n {
            let id = format!("e{i}");
            fake.send(slack_fake::mention(&id, &format!("Ev{i}"), "U1", "C1", "1.1", None, "help"));
            // Paced in bursts so the latency measured is the bridge's, not a queue of 20k frames.
            if i % 50 == 49 {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
        while count.0.load(Ordering::Relaxed) < n || fake.ack_count() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        let mut lat: Vec<Duration> = fake.acks().into_iter().map(|a| a.1).collect();
        lat.sort();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "slack_socket: {n} envelopes in {:.2?} = {:.0} envelopes/s; envelope->ack p50 {:.2?}, p99 {:.2?}, \
             p99.9 {:.2?}, max {:.2?}",
            elapsed,
            n as f64 / elapsed.as_secs_f64(),
            pct(0.50),
            pct(0.99),
            pct(0.999),
            lat[lat.len() - 1]
        );
    });
}
