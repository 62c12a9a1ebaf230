//! The time a Prometheus-backed gate adds per measurement: one analysis template (the
//! catalog's error ratio) filled for a canary of 3 agents and a baseline of 9, both
//! queries sent to a real local Prometheus (Debian's `prometheus`, started here on a
//! free port, scraping 12 simulated agents every second) and judged.
//!
//! Skipped, saying so, when `prometheus` is not installed.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use parley::agent::simulate::{SimOptions, Simulator};
use parley::analysis::{self, Auth, Prometheus, PrometheusConfig, Sides};
use parley::topology::Catalog;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gate(c: &mut Criterion) {
    if Command::new("prometheus").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        eprintln!("SKIPPED prometheus_gate: `prometheus` is not installed (apt-get install prometheus)");
        return;
    }
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() else { return };
    let Ok(sim) = rt.block_on(Simulator::start(SimOptions::new(12))) else { return eprintln!("no simulator") };
    let Ok(dir) = tempfile::tempdir() else { return };
    let targets: Vec<String> = sim
        .inventory()
        .iter()
        .map(|e| {
            let rest = e.endpoint.trim_start_matches("http://");
            let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
            // One address for every agent: the path tells them apart, and so must `instance`.
            format!(
                "{{\"targets\": [\"{host}\"], \"labels\": {{\"__metrics_path__\": \"/{path}/metrics\", \"instance\": \"{path}\"}}}}"
            )
        })
        .collect();
    let sd = dir.path().join("targets.json");
    let config = dir.path().join("prometheus.yml");
    let written = std::fs::write(&sd, format!("[{}]", targets.join(","))).and_then(|()| {
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: sim\n    file_sd_configs:\n      - files: [\"{}\"]\n",
                sd.display()
            ),
        )
    });
    if written.is_err() {
        return;
    }
    let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else { return };
    let Ok(port) = listener.local_addr().map(|a| a.port()) else { return };
    drop(listener);
    let Ok(child) = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    let _prometheus = Killed(child);
    let Ok(prom) = Prometheus::new(PrometheusConfig {
        url: format!("http://127.0.0.1:{port}"),
        auth: Auth::None,
        timeout: Duration::from_secs(5),
    }) else {
        return;
    };
    // Until every agent has been scraped twice, so that the queries have rates to sum.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rates =
            rt.block_on(prom.query(r#"count(rate(parley_agent_requests_total{extension="auth-filter"}[30s]) > 0)"#));
        if rates.ok().and_then(|s| s.first().map(|s| s.value)) == Some(12.0) {
            break;
        }
        if Instant::now() > deadline {
            return eprintln!("prometheus never scraped the simulated agents");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let Ok(catalog) = Catalog::embedded() else { return };
    let Some(template) = catalog.analysis_templates().iter().find(|t| t.name == "error-ratio").cloned() else { return };
    let templates = vec![template];
    let names: Vec<String> = sim.inventory().iter().filter_map(|e| e.name.clone()).collect();
    let sides = Sides {
        extension: "auth-filter".into(),
        // The canary "runs" the same version as the baseline here: the query's cost,
        // not its answer, is measured.
        version: "2.0.3".into(),
        canary: names[..3].to_vec(),
        canary_regions: vec!["us-east".into()],
        baseline_version: Some("2.0.3".into()),
        baseline: names[3..].to_vec(),
        baseline_regions: vec!["us-east".into(), "us-west".into()],
    };
    c.bench_function("prometheus_gate: one measurement (canary + baseline query, judged)", |b| {
        b.iter(|| {
            let mut baselines = BTreeMap::new();
            let mut run = analysis::Run::new(&prom, &templates, &sides, &mut baselines);
            rt.block_on(run.measure(0));
            run.finish().outcome
        })
    });
    rt.block_on(sim.shutdown());
}

criterion_group!(benches, gate);
criterion_main!(benches);
