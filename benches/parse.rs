//! Parse + entity resolution of a typical utterance on the demo fleet's vocabulary.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use parley::intent::{Grammar, Vocabulary};
use parley::topology::demo::demo_topology;

fn parse(c: &mut Criterion) {
    let (Ok(grammar), Ok(topology)) = (Grammar::embedded(), demo_topology()) else {
        eprintln!("the embedded grammar or catalog does not load");
        return;
    };
    let vocab = Vocabulary::from_topology(&topology);
    let utterance = "roll out auth-filter 2.1 to eu-west as a canary, 10% then 50%";
    c.bench_function("parse canary rollout", |b| b.iter(|| grammar.parse(black_box(utterance), &vocab)));
    c.bench_function("parse roll that back", |b| b.iter(|| grammar.parse(black_box("roll that back"), &vocab)));
}

criterion_group!(benches, parse);
criterion_main!(benches);
