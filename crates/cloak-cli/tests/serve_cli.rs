//! `cloak serve`, `cloak attest server` and `cloak infer` as separate processes on loopback, as an
//! operator and a data owner run them, and the unmodified `tritonclient` against the server.
#![cfg(feature = "sim")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

#[path = "../../cloak-engine/tests/support/reference.rs"]
mod reference;

#[path = "support/cli.rs"]
mod cli;
use cli::{cloak, ok, s};

/// A running `cloak serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
    stdout: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn root(&self) -> PathBuf {
        self.dir.path().join("sim/root.der")
    }

    /// The policy flags of a data owner who trusts this simulation root and pins `mrenclave`.
    fn policy(&self, mrenclave: &str) -> Vec<String> {
        vec![
            "--trust-root".into(),
            s(&self.root()).into(),
            "--expect-mrenclave".into(),
            mrenclave.into(),
        ]
    }
}

/// The MRENCLAVE the simulated platform gives `cloak serve`: the SHA-256 of the executable.
fn cloak_mrenclave() -> String {
    let bytes = std::fs::read(env!("CARGO_BIN_EXE_cloak")).unwrap();
    hex_sha256(&bytes)
}

fn hex_sha256(bytes: &[u8]) -> String {
    use std::fmt::Write;
    cloak_crypto::hash::sha256(bytes)
        .iter()
        .fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Seals the demo model (and a tampered copy) and starts `cloak serve` on a free port.
fn serve(extra: &[&str]) -> Server {
    serve_with(extra, None)
}

/// [`serve`], plus `model` (name, ONNX bytes) when given.
fn serve_with(extra: &[&str], model: Option<(&str, &[u8])>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let onnx = dir.path().join("demo.onnx");
    std::fs::write(&onnx, include_bytes!("../assets/demo-mlp.onnx")).unwrap();
    let key = dir.path().join("demo.key");
    ok(&cloak(&[
        "model",
        "encrypt",
        s(&onnx),
        "--out",
        s(&models.join("demo.cloak")),
        "--key-out",
        s(&key),
        "--name",
        "demo",
    ]));
    let tampered_key = dir.path().join("tampered.key");
    let tampered = models.join("tampered.cloak");
    ok(&cloak(&[
        "model",
        "encrypt",
        s(&onnx),
        "--out",
        s(&tampered),
        "--key-out",
        s(&tampered_key),
        "--name",
        "tampered",
    ]));
    let mut bytes = std::fs::read(&tampered).unwrap();
    let at = bytes.len() / 2 + 100;
    bytes[at] ^= 0x80;
    std::fs::write(&tampered, bytes).unwrap();
    let sim = dir.path().join("sim");
    ok(&cloak(&["sim", "init", "--dir", s(&sim)]));

    let demo_key = format!("demo={}", s(&key));
    let tampered_key = format!("tampered={}", s(&tampered_key));
    let mut args = vec![
        "serve",
        "--model-dir",
        s(&models),
        "--listen",
        "127.0.0.1:0",
        "--platform",
        "sim",
        "--sim-dir",
        s(&sim),
        "--model-key",
        &demo_key,
        "--model-key",
        &tampered_key,
    ];
    let extra_key;
    if let Some((name, onnx)) = model {
        let path = dir.path().join(format!("{name}.onnx"));
        std::fs::write(&path, onnx).unwrap();
        let key = dir.path().join(format!("{name}.key"));
        ok(&cloak(&[
            "model",
            "encrypt",
            s(&path),
            "--out",
            s(&models.join(format!("{name}.cloak"))),
            "--key-out",
            s(&key),
            "--name",
            name,
        ]));
        std::fs::remove_file(&path).unwrap();
        extra_key = format!("{name}={}", s(&key));
        args.extend_from_slice(&["--model-key", &extra_key]);
    }
    args.extend_from_slice(extra);
    // Logs go to a file (a pipe nobody reads would fill and stall the server).
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloak"))
        .args(&args)
        .env("CLOAK_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let url = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cloak serve stopped: {stdout:?} {}",
                std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
            );
        };
        stdout.push(line.clone());
        if let Some(url) = line.strip_prefix("cloak serve: listening on ") {
            break url.to_owned();
        }
    };
    // The summary follows the listening line: platform, key hash, then one line per model.
    let models = 2 + usize::from(model.is_some());
    while stdout.iter().filter(|l| l.starts_with("  model ")).count() < models {
        match lines.next() {
            Some(Ok(line)) => stdout.push(line),
            _ => break,
        }
    }
    // Keep reading whatever else the server prints, so its stdout never hits a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server {
        child,
        url,
        dir,
        stdout,
    }
}

/// `cloak infer URL --model MODEL --input REQUEST [--json] POLICY...`.
fn cloak_infer(url: &str, model: &str, request: &Path, policy: &[&str], json: bool) -> Output {
    let mut args = vec!["infer", url, "--model", model, "--input", s(request)];
    if json {
        args.push("--json");
    }
    args.extend_from_slice(policy);
    cloak(&args)
}

fn write_request(dir: &Path) -> PathBuf {
    let request = dir.join("request.json");
    std::fs::write(
        &request,
        r#"{"id":"cli-1","inputs":[{"name":"features","datatype":"FP32","shape":[2,4],
            "data":[0.5,-1.0,2.0,3.14159,1,1,1,1]}]}"#,
    )
    .unwrap();
    request
}

#[test]
fn attest_and_infer_against_a_served_model() {
    let server = serve(&[]);
    let summary = server.stdout.join("\n");
    assert!(summary.contains("model ready      demo"), "{summary}");
    assert!(summary.contains("model FAILED     tampered"), "{summary}");

    let mrenclave = cloak_mrenclave();
    let policy = server.policy(&mrenclave);
    let policy: Vec<&str> = policy.iter().map(String::as_str).collect();

    // The data owner appraises the server: verdict, measurements, claims.
    let mut args = vec![
        "attest",
        "server",
        &server.url,
        "--json",
        "--nonce",
        "00112233",
    ];
    args.extend_from_slice(&policy);
    let out = cloak(&args);
    ok(&out);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["verdict"], "accepted");
    assert_eq!(verdict["simulated"], true);
    assert_eq!(verdict["nonce"], "00112233");
    assert_eq!(verdict["measurements"]["mrenclave"], mrenclave.as_str());
    assert_eq!(verdict["claims"]["platform"], "sim");
    let models = verdict["claims"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{models:?}");
    assert_eq!(models[0]["name"], "demo");
    assert_eq!(
        models[0]["sha256"],
        hex_sha256(include_bytes!("../assets/demo-mlp.onnx")).as_str()
    );

    // Inference: exactly the KServe v2 response body with --json.
    let request = write_request(server.dir.path());
    let out = cloak_infer(&server.url, "demo", &request, &policy, true);
    ok(&out);
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["model_name"], "demo");
    assert_eq!(response["id"], "cli-1");
    let probabilities = response["outputs"][0]["data"].as_array().unwrap();
    assert_eq!(probabilities.len(), 6);
    let row: f64 = probabilities[..3].iter().map(|v| v.as_f64().unwrap()).sum();
    assert!((row - 1.0).abs() < 1e-5, "softmax rows sum to 1: {row}");

    // Without --json: the verdict line, then the response.
    let out = cloak_infer(&server.url, "demo", &request, &policy, false);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("server accepted: MRENCLAVE"), "{text}");
    assert!(text.contains("SIMULATED"), "{text}");

    // An unknown model is the server's error, exit 2.
    let out = cloak_infer(&server.url, "nope", &request, &policy, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));

    // The tampered model: the server says why, over the protocol.
    let out = cloak_infer(&server.url, "tampered", &request, &policy, false);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("503") && stderr.contains("chunk-authentication"),
        "{stderr}"
    );

    // The server logged every request (debug level), and never an input value.
    let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap();
    assert!(log.contains("inference done"), "{log}");
    assert!(!log.contains("3.14159"), "{log}");
}

#[test]
fn a_rejected_server_gets_nothing() {
    let server = serve(&[]);
    let request = write_request(server.dir.path());
    let wrong = "ab".repeat(32);
    let root = server.root();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--trust-root", s(&root), "--expect-mrenclave", &wrong],
            "measurement-mismatch",
        ),
        // The strict default trusts only Intel's root.
        (vec![], "untrusted-root"),
    ];
    for (policy, reason) in cases {
        let mut args = vec!["attest", "server", &server.url, "--json"];
        args.extend_from_slice(&policy);
        let out = cloak(&args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(verdict["verdict"], "rejected");
        assert_eq!(verdict["reason"], reason);

        let out = cloak_infer(&server.url, "demo", &request, &policy, true);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            out.stdout.is_empty(),
            "nothing printed for a refused server"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("REJECTED") && stderr.contains(reason),
            "{stderr}"
        );
    }
    // Nothing was inferred: the server's own counters say so.
    let metrics = server_metrics(&server);
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("cloak_inference_requests_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn a_debug_enclave_is_refused_unless_allowed() {
    let server = serve(&["--sim-debug"]);
    let policy = server.policy(&cloak_mrenclave());
    let mut args = vec!["attest", "server", server.url.as_str(), "--json"];
    args.extend(policy.iter().map(String::as_str));
    let out = cloak(&args);
    assert_eq!(out.status.code(), Some(1));
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["reason"], "debug-enclave");
    args.push("--allow-debug");
    let out = cloak(&args);
    ok(&out);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["measurements"]["debug"], true);
}

/// [`Server::policy`] as the client library takes it.
fn library_policy(server: &Server) -> cloak_attest::policy::AppraisalPolicy {
    let root = std::fs::read(server.root()).unwrap();
    let mrenclave = cloak_attest::types::parse_hex::<32>(&cloak_mrenclave()).unwrap();
    cloak_attest::policy::AppraisalPolicy::strict()
        .with_trust_root(cloak_attest::policy::TrustRootPolicy::Der(root))
        .with_sgx_identity(cloak_attest::policy::SgxIdentityPolicy {
            mrenclave: Some(vec![cloak_attest::types::Measurement::from_bytes(
                mrenclave,
            )]),
            ..Default::default()
        })
}

/// `/metrics`, read over attested TLS with the client library.
fn server_metrics(server: &Server) -> String {
    let policy = library_policy(server);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = cloak_client::Client::bootstrap(&server.url, policy, None)
            .await
            .unwrap();
        String::from_utf8(client.get("/metrics").await.unwrap().body).unwrap()
    })
}

fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let candidates = [
        std::env::var_os("CLOAK_PYTHON").map(PathBuf::from),
        Some(root.join(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    let found = candidates.into_iter().flatten().find(|python| {
        Command::new(python)
            .args(["-c", "import tritonclient.http, numpy"])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CLOAK_REQUIRE_PYTHON").as_deref() != Ok("1"),
            "CLOAK_REQUIRE_PYTHON=1 but no Python with tritonclient[http] \
             (pip install -r tests/python/requirements.txt)"
        );
        eprintln!("skipping: no Python with tritonclient[http]");
    }
    found
}

#[test]
fn tritonclient_works_unmodified() {
    let Some(python) = python() else { return };
    let server = serve(&[]);
    let host_port = server.url.strip_prefix("https://").unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/triton_client_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([host_port, "demo", "features", "3", "4"])
        .output()
        .unwrap();
    ok(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["live"], true);
    assert_eq!(report["ready"], true);
    assert_eq!(report["model_ready"], true);
    assert_eq!(report["unknown_model_ready"], false);
    assert_eq!(report["server_metadata"]["name"], "cloak");
    assert_eq!(report["model_metadata"]["inputs"][0]["name"], "features");
    assert_eq!(report["unknown_model_error"]["status"], "404");
    assert_eq!(report["wrong_shape_error"]["status"], "400");
    // Binary and JSON tensors give the same numbers, equal to `cloak infer` on the same input.
    let binary = &report["results"]["binary"];
    let json = &report["results"]["json"];
    assert_eq!(binary["id"], "req-binary");
    assert_eq!(json["id"], "req-json");
    assert_eq!(binary["outputs"], json["outputs"]);
    let input = report["input"].clone();
    let request = server.dir.path().join("triton-input.json");
    std::fs::write(
        &request,
        serde_json::to_vec(&serde_json::json!({"inputs":[{"name":"features","datatype":"FP32","shape":[3,4],"data":input}]}))
            .unwrap(),
    )
    .unwrap();
    let policy = server.policy(&cloak_mrenclave());
    let out = cloak_infer(
        &server.url,
        "demo",
        &request,
        &policy.iter().map(String::as_str).collect::<Vec<_>>(),
        true,
    );
    ok(&out);
    let ours: Value = serde_json::from_slice(&out.stdout).unwrap();
    // numpy widens the FP32 values to Python floats; both sides are the same FP32 numbers.
    let flat: Vec<f32> = binary["outputs"]["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    let expected: Vec<f32> = ours["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(flat, expected);
}

/// The server process's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn percentile(sorted: &[std::time::Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// 64 concurrent attested clients against a real model for `CLOAK_LOAD_SECONDS` (default 5;
/// the issue's figure is `CLOAK_LOAD_SECONDS=60`), loopback only: no errors, latency and
/// throughput printed, and the server's RSS stable after warm-up.
#[test]
fn load_64_clients() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let seconds: u64 = std::env::var("CLOAK_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let clients: usize = std::env::var("CLOAK_LOAD_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let real = reference::load("ppocr-cls");
    let (model, inputs) = match &real {
        Some(real) => ("ppocr-cls", real.inputs.clone()),
        None => (
            "demo",
            vec![(
                "features".to_owned(),
                cloak_proto::tensor::Tensor::from_values(vec![1, 4], &[0.5f32, 1.0, -1.0, 2.0])
                    .unwrap(),
            )],
        ),
    };
    let server = serve_with(
        &["--max-queue", "256"],
        real.as_ref().map(|r| ("ppocr-cls", r.onnx.as_slice())),
    );
    let pid = server.child.id();
    let request = cloak_proto::kserve::InferRequest::new(
        inputs
            .into_iter()
            .map(|(name, tensor)| cloak_proto::kserve::NamedTensor::new(name, tensor))
            .collect(),
    )
    .with_binary_data_output(true);
    let body = request
        .encode(|_| cloak_proto::kserve::TensorEncoding::Binary)
        .unwrap();
    let (body, header_len) = (body.body().to_vec(), body.header_len());
    let path = format!("/v2/models/{model}/infer");

    let policy = library_policy(&server);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (latencies, errors, elapsed, rss) = runtime.block_on(async {
        let client = cloak_client::Client::bootstrap(&server.url, policy, None)
            .await
            .unwrap();
        // Warm-up ends when every client has finished two requests (connections made, plans
        // compiled, per-thread arenas touched), however long that takes on a busy machine;
        // the measured run of `seconds` starts there.
        let warmed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = client.clone();
            let (body, path) = (body.clone(), path.clone());
            let (warmed, stop) = (Arc::clone(&warmed), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = Vec::new();
                let mut session = match client.session().await {
                    Ok(session) => session,
                    Err(e) => {
                        warmed.fetch_add(1, Ordering::SeqCst);
                        return (Vec::new(), vec![format!("connect: {e}")]);
                    }
                };
                let mut done = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let sent = Instant::now();
                    match session.post(&path, body.clone(), header_len).await {
                        Ok(r) if r.status == 200 => latencies.push(sent.elapsed()),
                        Ok(r) => errors.push(format!(
                            "{}: {}",
                            r.status,
                            String::from_utf8_lossy(&r.body)
                        )),
                        Err(e) => errors.push(e.to_string()),
                    }
                    done += 1;
                    if done == 2 {
                        warmed.fetch_add(1, Ordering::SeqCst);
                    }
                }
                (latencies, errors)
            }));
        }
        let warm_deadline = Instant::now() + Duration::from_secs(120);
        while warmed.load(Ordering::SeqCst) < clients && Instant::now() < warm_deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut rss = Vec::new();
        while Instant::now() < deadline {
            rss.push(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut latencies = Vec::new();
        let mut errors = Vec::new();
        for task in tasks {
            let (l, e) = task.await.unwrap();
            latencies.extend(l);
            errors.extend(e);
        }
        let elapsed = started.elapsed();
        (latencies, errors, elapsed, rss)
    });
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}\nserver log tail: {}",
        errors.len(),
        errors.first(),
        std::fs::read_to_string(server.dir.path().join("server.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut sorted = latencies;
    sorted.sort();
    assert!(!sorted.is_empty());
    let mid = rss[rss.len() / 2];
    let max = *rss.iter().max().unwrap();
    let last = *rss.last().unwrap();
    println!(
        "load: model {model}, {clients} clients, {:.1} s: {} requests, 0 errors, {:.1} req/s, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; server RSS after warm-up {:.1} MiB, \
         at half time {:.1} MiB, max {:.1} MiB, at the end {:.1} MiB",
        elapsed.as_secs_f64(),
        sorted.len(),
        sorted.len() as f64 / elapsed.as_secs_f64(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
        rss[0] as f64 / 1024.0,
        mid as f64 / 1024.0,
        max as f64 / 1024.0,
        last as f64 / 1024.0,
    );
    // Stable: over the second half of the run the resident set does not keep growing with the
    // request count (the first half absorbs the plan, the 64 connections' buffers and the
    // allocator's per-thread arenas). Allowed: 10 % plus 8 MiB of allocator noise.
    assert!(
        max <= mid + mid / 10 + 8 * 1024,
        "server RSS grew from {mid} KiB at half time to {max} KiB"
    );
}
