//! A real agent's install path: fetch (a local file), SHA-256 verify, unpack and
//! activate (link switch and hooks) of a 50 MB artifact; and the resident memory of a
//! `parley agent --dir` process with 20 installed extensions, each with a supervised
//! service and a health probe. `cargo bench --bench real_install`; in test mode
//! (`cargo test --bench real_install`) the artifact is 1 MB and memory is still measured.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use parley::agent::real::{RealExtensions, RealOptions};
use parley::artifact::{sha256_hex, ArtifactRef};

/// A `.tar.gz` of `name` `version` with `payload` bytes of incompressible data.
fn artifact(dir: &Path, name: &str, version: &str, payload: usize, service: bool) -> (PathBuf, ArtifactRef) {
    let tree = dir.join(format!("tree-{name}-{version}"));
    std::fs::create_dir_all(&tree).unwrap();
    let mut manifest = format!(
        "name = \"{name}\"\nversion = \"{version}\"\n[hooks]\ninstall = \"test -f extension.toml\"\nactivate = \"true\"\n[health]\ncommand = \"true\"\ninterval_ms = 1000\n"
    );
    if service {
        manifest.push_str("[service]\ncommand = [\"sleep\", \"3600\"]\n");
    }
    std::fs::write(tree.join("extension.toml"), manifest).unwrap();
    let mut data = vec![0u8; payload];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::File::create(tree.join("payload.bin")).unwrap().write_all(&data).unwrap();
    let out = dir.join(format!("{name}-{version}.tar.gz"));
    let ok = Command::new("tar").arg("czf").arg(&out).arg("-C").arg(&tree).arg(".").status().unwrap().success();
    assert!(ok);
    let bytes = std::fs::read(&out).unwrap();
    let r = ArtifactRef {
        url: out.display().to_string(),
        sha256: sha256_hex(&bytes),
        size: Some(bytes.len() as u64),
        signature: None,
    };
    (out, r)
}

fn install_bench(c: &mut Criterion, quick: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let size = if quick { 1 << 20 } else { 50 << 20 };
    let (_, r) = artifact(tmp.path(), "big-ext", "1.0.0", size, false);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("real_install");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    let label = format!("verify_unpack_activate_{}MB", size >> 20);
    group.bench_function(label, |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let (real, _) = RealExtensions::open(RealOptions::new(dir.path().to_path_buf())).unwrap();
                (dir, real)
            },
            |(dir, real)| {
                rt.block_on(real.install("big-ext", "1.0.0", Some(&r))).unwrap();
                (dir, real)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// RSS of a real agent process with 20 extensions installed and their services up.
fn agent_rss() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("agent");
    let mut child = Command::new(env!("CARGO_BIN_EXE_parley"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(["agent", "--name", "bench-1", "--region", "us-east", "--zone", "us-east-a", "--listen", "127.0.0.1:0"])
        .arg("--dir")
        .arg(&dir)
        .env_remove("PARLEY_AGENT_TOKEN")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stopped however this ends, so no agent outlives the bench.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").arg(self.0.id().to_string()).status();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let child = Stop(child);
    let mut line = String::new();
    let mut err = std::io::BufReader::new(stderr);
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    let url = line.trim().rsplit(' ').next().unwrap().to_string();
    let rss = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap()
    };
    let before = rss(child.0.id());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    for i in 0..20 {
        let name = format!("ext-{i}");
        let (_, r) = artifact(tmp.path(), &name, "1.0.0", 4096, true);
        let body = serde_json::json!({"version": "1.0.0", "artifact": r});
        let resp = rt.block_on(client.put(format!("{url}/v1/extensions/{name}")).json(&body).send()).unwrap();
        assert!(resp.status().is_success(), "{}", rt.block_on(resp.text()).unwrap());
    }
    let took = started.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let after = rss(child.0.id());
    println!(
        "agent resident memory: {:.1} MiB at start, {:.1} MiB with 20 installed extensions (services and probes running); 20 installs took {:.2} s",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        took.as_secs_f64()
    );
    drop(child);
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let mut c = Criterion::default().configure_from_args();
    install_bench(&mut c, quick);
    c.final_summary();
    agent_rss();
}
