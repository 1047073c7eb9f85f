//! Times an engine on a cached model and its reference inputs, for `scripts/bench-engine.py`,
//! which runs onnxruntime from Python on the same inputs beside it.
//!
//! ```text
//! cargo run -p cloak-engine --example latency -- MODEL.onnx REF_DIR [WARMUP RUNS]
//!     [--engine tract|onnxruntime] [--threads N] [--onnxruntime-lib PATH]
//! ```
//! Prints one JSON object: the engine, load (parse + prepare) time, and per-run latencies in
//! milliseconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::num::NonZeroUsize;
use std::path::Path;
use std::time::Instant;

use cloak_engine::{Engine, EngineKind};

fn main() {
    let mut positional = Vec::new();
    let (mut kind, mut threads, mut library) = (EngineKind::Tract, NonZeroUsize::MIN, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--engine" => kind = args.next().expect("--engine NAME").parse().unwrap(),
            "--threads" => threads = args.next().expect("--threads N").parse().expect("N"),
            "--onnxruntime-lib" => library = Some(args.next().expect("--onnxruntime-lib PATH")),
            _ => positional.push(arg),
        }
    }
    if positional.len() < 2 {
        eprintln!(
            "usage: latency MODEL.onnx REF_DIR [WARMUP RUNS] [--engine tract|onnxruntime] \
             [--threads N] [--onnxruntime-lib PATH]"
        );
        std::process::exit(2);
    }
    let onnx = std::fs::read(&positional[0]).expect("read the model");
    let ref_dir = Path::new(&positional[1]);
    let warmup: usize = positional.get(2).map_or(3, |v| v.parse().expect("WARMUP"));
    let runs: usize = positional.get(3).map_or(20, |v| v.parse().expect("RUNS"));
    let engine = match kind {
        EngineKind::OnnxRuntime => {
            Engine::onnxruntime(library.expect("--onnxruntime-lib")).unwrap_or_else(|e| fail(&e))
        }
        _ => Engine::tract(),
    }
    .with_threads(threads);
    let inputs = cloak_test_support::models::reference::tensors(ref_dir, "inputs");
    let loading = Instant::now();
    let model = engine.load("bench", &onnx).unwrap_or_else(|e| fail(&e));
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
    let info = engine.info();
    println!(
        "{}",
        serde_json::json!({
            "engine": info.kind().name(),
            "version": info.version(),
            "threads": info.threads().get(),
            "load_ms": load_ms,
            "runs_ms": times,
        })
    );
}

fn fail(error: &cloak_engine::EngineError) -> ! {
    eprintln!("{error}");
    std::process::exit(1)
}
