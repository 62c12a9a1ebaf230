//! What Parley adds around one language-model call: building the Chat Completions
//! request (schema, fleet vocabulary, context, quoted utterance) and validating a
//! canned answer into an `Operation`. No network; target under 200 µs.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

use parley::intent::Vocabulary;
use parley::llm::{parse, request, Input, Mode, Prompts};
use parley::ops::Operation;
use parley::topology::demo::demo_topology;

fn overhead(c: &mut Criterion) {
    let topo = match demo_topology() {
        Ok(t) => t,
        Err(e) => panic!("demo topology: {e}"),
    };
    let vocab = Vocabulary::from_topology(&topo);
    let prompts = match Prompts::embedded() {
        Ok(p) => p,
        Err(e) => panic!("prompts: {e}"),
    };
    let context = parley::llm::context(Some("d-3"), Some("edge-7"), None, None, &[]);
    let answer = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "{\"operation\": {\"op\": \"deploy\", \"extension\": \"auth-filter\", \"version\": \"2.1.0\", \"scope\": [\"region:eu-west\"], \"strategy\": {\"kind\": \"canary\", \"steps\": [10, 50]}}, \"missing\": []}"}}]
    })
    .to_string();
    // The schema is built once per process; warm it outside the measurement.
    let _ = parley::llm::schema::answer_schema();

    c.bench_function("llm_overhead: build request + validate answer", |b| {
        b.iter(|| {
            let input = Input {
                vocab: &vocab,
                context: &context,
                utterance: "push the newest auth filter to europe west, carefully, ten then fifty percent",
            };
            let body = request::build(&prompts, "llama3.1", Mode::JsonSchema, &input);
            let wire = body.to_string();
            let response: serde_json::Value = serde_json::from_str(&answer).unwrap_or_default();
            let op: Option<Operation> = parse::operation(&response).unwrap_or(None);
            (wire.len(), op)
        })
    });
}

criterion_group!(benches, overhead);
criterion_main!(benches);
