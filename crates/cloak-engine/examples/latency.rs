//! Times the engine on a cached model and its reference inputs, for `scripts/bench-engine.py`,
//! which runs onnxruntime on the same inputs beside it.
//!
//! ```text
//! cargo run -p cloak-engine --example latency -- MODEL.onnx REF_DIR [WARMUP RUNS]
//! ```
//! Prints one JSON object: load (parse + optimize) time, and per-run latencies in milliseconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Instant;

use cloak_engine::Engine;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: latency MODEL.onnx REF_DIR [WARMUP RUNS]");
        std::process::exit(2);
    }
    let onnx = std::fs::read(&args[1]).expect("read the model");
    let ref_dir = Path::new(&args[2]);
    let warmup: usize = args.get(3).map_or(3, |v| v.parse().expect("WARMUP"));
    let runs: usize = args.get(4).map_or(20, |v| v.parse().expect("RUNS"));
    let inputs = cloak_test_support::models::reference::tensors(ref_dir, "inputs");
    let loading = Instant::now();
    let model = Engine::new()
        .load("bench", &onnx)
        .unwrap_or_else(|e| fail(&e));
    let load_ms = loading.elapsed().as_secs_f64() * 1e3;
    let mut session = model.session();
    for _ in 0..warmup {
        session.run(inputs.clone()).unwrap_or_else(|e| fail(&e));
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let batch = inputs.clone();
        let started = Instant::now();
        let outputs = session.run(batch).unwrap_or_else(|e| fail(&e));
        times.push(started.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(outputs);
    }
    println!(
        "{}",
        serde_json::json!({"engine": "tract", "load_ms": load_ms, "runs_ms": times})
    );
}

fn fail(error: &cloak_engine::EngineError) -> ! {
    eprintln!("{error}");
    std::process::exit(1)
}
