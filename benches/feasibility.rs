//! The feasibility check of a deploy on the demo fleet (48 agents), as a session runs
//! it before every rollout: names, catalog, capabilities, dependencies, availability,
//! overlapping rollouts and risk.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use parley::dialog::check;
use parley::feasibility::Busy;
use parley::ops::{Operation, Scope, Selector};
use parley::topology::demo::demo_topology;

fn feasibility(c: &mut Criterion) {
    let Ok(topology) = demo_topology() else {
        eprintln!("the embedded catalog does not load");
        return;
    };
    let deploy = Operation::deploy;
    let region = deploy("auth-filter", "2.1.0", Scope::region("eu-west"));
    let fleet = deploy("waf-rules", "2024.2", Scope::fleet());
    let refused = deploy("model-server", "0.4.0", Scope(vec![Selector::Region("eu-west".into())]));
    let busy: Busy = [("edge-1".to_string(), "d-7".to_string())].into_iter().collect();
    c.bench_function("feasibility deploy to a region", |b| b.iter(|| check(black_box(&region), &topology, &busy)));
    c.bench_function("feasibility deploy fleet-wide with a dependency", |b| {
        b.iter(|| check(black_box(&fleet), &topology, &Busy::new()))
    });
    c.bench_function("feasibility refused (capability)", |b| b.iter(|| check(black_box(&refused), &topology, &busy)));
}

/// 10,000 agents in the demo's four regions: the scale the live-fleet issue asks for.
fn large_fleet(c: &mut Criterion) {
    use std::sync::Arc;

    use parley::topology::demo::agent;
    use parley::topology::{Catalog, Topology};

    let Ok(catalog) = Catalog::embedded() else {
        eprintln!("the embedded catalog does not load");
        return;
    };
    let regions = ["us-east", "us-west", "eu-west", "ap-south"];
    let agents = (0..10_000)
        .map(|i| {
            let region = regions[i % 4];
            let env = if region == "ap-south" { "staging" } else { "production" };
            let zone = format!("{region}-{}", if i % 8 < 4 { "a" } else { "b" });
            agent(&format!("edge-{}", i + 1), region, &zone, "edge", env, &[])
        })
        .collect();
    let topology = Topology::new(agents, Arc::new(catalog), None);
    let fleet = Operation::deploy("auth-filter", "2.1.0", Scope::fleet());
    c.bench_function("feasibility deploy fleet-wide on 10,000 agents", |b| {
        b.iter(|| check(black_box(&fleet), &topology, &Busy::new()))
    });
}

criterion_group!(benches, feasibility, large_fleet);
criterion_main!(benches);
