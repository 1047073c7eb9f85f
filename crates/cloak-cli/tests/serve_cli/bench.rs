//! `cloak bench`: the confidentiality tax, reported consistently.

use std::process::Command;

use cloak_test_support::cli::{ok, s};
use serde_json::Value;

use crate::{cloak, exe};

/// `cloak bench --model DEMO --warmup 1 --json ARGS`, required to succeed: its one report.
fn bench_demo(args: &[&str]) -> Value {
    let model = cloak_test_support::models::demo_path();
    let mut all = vec!["bench", "--model", s(&model), "--warmup", "1", "--json"];
    all.extend_from_slice(args);
    let out = cloak(&all);
    ok(&out);
    let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
    reports.as_array().unwrap()[0].clone()
}

#[test]
fn bench_reports_the_confidentiality_tax() {
    let report = &bench_demo(&[
        "--iterations",
        "4",
        "--seconds",
        "0.2",
        "--concurrency",
        "1,3",
        "--idle-ms",
        "1",
    ]);
    assert_eq!(report["model"], "demo-mlp.onnx");
    assert_eq!(report["engine"], "tract");
    assert_eq!(report["engine_threads"], 1);
    // Encapsulated requests travel inside the server's TLS, as a client's to a balancer.
    assert_eq!(report["ohttp_transport"], "https");
    let field = |name: &str| report[name].as_f64().unwrap_or(f64::NAN);
    for name in [
        "engine_ms_p50",
        "atls_ms_p50",
        "ohttp_ms_p50",
        "tax_atls",
        "tax_ohttp",
    ] {
        assert!(field(name) > 0.0, "{name}: {report}");
    }
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
    assert!(close(
        field("tax_atls"),
        field("atls_ms_p50") / field("engine_ms_p50")
    ));
    assert!(close(
        field("tax_ohttp"),
        field("ohttp_ms_p50") / field("engine_ms_p50")
    ));
    let throughput = report["throughput"].as_array().unwrap();
    assert_eq!(throughput.len(), 2);
    assert_eq!(throughput[1]["clients"], 3);
    for point in throughput {
        for mode in ["engine_rps", "atls_rps", "ohttp_rps"] {
            assert!(point[mode].as_f64().unwrap() > 0.0, "{point}");
        }
    }

    // Or to the plain-HTTP listener for them, as a TLS-terminating balancer forwards them.
    let report = &bench_demo(&[
        "--iterations",
        "2",
        "--seconds",
        "0.1",
        "--concurrency",
        "1",
        "--ohttp-plain",
    ]);
    assert_eq!(report["ohttp_transport"], "http");
    assert!(report["ohttp_ms_p50"].as_f64().unwrap() > 0.0, "{report}");

    // Without models and without the model cache it says where they come from.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(exe())
        .arg("bench")
        .env("CLOAK_MODEL_CACHE", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scripts/fetch-models.py"));
}

/// With `--engine onnxruntime` every row names the engine, and the server it measures — whose
/// measurement covers the library — is appraised and answers with receipts.
#[test]
fn bench_names_the_onnxruntime_engine() {
    let Some(library) = cloak_test_support::deps::onnxruntime_library() else {
        return;
    };
    let model = cloak_test_support::models::demo_path();
    let out = cloak(&[
        "bench",
        "--model",
        s(&model),
        "--engine",
        "onnxruntime",
        "--onnxruntime-lib",
        s(&library),
        "--engine-threads",
        "2",
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--window",
        "0.2s",
        "--concurrency",
        "1",
        "--json",
    ]);
    ok(&out);
    let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &reports.as_array().unwrap()[0];
    assert_eq!(report["engine"], "onnxruntime");
    assert_eq!(report["engine_threads"], 2);
    let version = report["engine_version"].as_str().unwrap();
    let name = library.file_name().unwrap().to_str().unwrap();
    assert!(name.ends_with(version), "{name} {version}");
    assert!(report["atls_ms_p50"].as_f64().unwrap() > 0.0, "{report}");
}
