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

/// A child process, killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `cloak serve`, killed on drop.
struct Server {
    child: Killed,
    url: String,
    dir: tempfile::TempDir,
    stdout: Vec<String>,
    args: Vec<String>,
    models: usize,
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
    let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
    let models = 2 + usize::from(model.is_some());
    let (child, url, stdout) = spawn(dir.path(), &args, models);
    Server {
        child: Killed(child),
        url,
        dir,
        stdout,
        args,
        models,
    }
}

/// Starts `cloak ARGS` (a `cloak serve`) and reads its summary: the URL and `models` model
/// lines.
fn spawn(dir: &Path, args: &[String], models: usize) -> (Child, String, Vec<String>) {
    // Logs go to a file (a pipe nobody reads would fill and stall the server).
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloak"))
        .args(args)
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
                std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
            );
        };
        stdout.push(line.clone());
        if let Some(url) = line.strip_prefix("cloak serve: listening on ") {
            break url.to_owned();
        }
    };
    // The summary follows the listening line: platform, key hash, then one line per model.
    while stdout.iter().filter(|l| l.starts_with("  model ")).count() < models {
        match lines.next() {
            Some(Ok(line)) => stdout.push(line),
            _ => break,
        }
    }
    // Keep reading whatever else the server prints, so its stdout never hits a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, url, stdout)
}

impl Server {
    /// Stops the server and starts it again on the same address, with the same models and
    /// platform: a new process, so new keys and a new identity.
    fn restart(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let addr = self.url.strip_prefix("https://").unwrap().to_owned();
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                if a == "127.0.0.1:0" {
                    addr.clone()
                } else {
                    a.clone()
                }
            })
            .collect();
        let (child, url, stdout) = spawn(self.dir.path(), &args, self.models);
        assert_eq!(url, self.url);
        self.child = Killed(child);
        self.stdout = stdout;
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
    let report = triton_check(&python, server.url.strip_prefix("https://").unwrap());
    assert_triton_report(&server, &report);
}

/// Runs the unmodified `tritonclient` against `target` (`HOST:PORT` for the server's TLS,
/// `http://HOST:PORT` for a proxy) and returns its report.
fn triton_check(python: &Path, target: &str) -> Value {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/triton_client_check.py");
    let out = Command::new(python)
        .arg(&script)
        .args([target, "demo", "features", "3", "4"])
        .output()
        .unwrap();
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What tritonclient must have seen: health, metadata, errors with Triton's statuses, and the
/// same numbers in binary and JSON tensors as `cloak infer` gets for the same input.
fn assert_triton_report(server: &Server, report: &Value) {
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
    let pid = server.child.0.id();
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
                        // Queued or not, every answer's receipt is for exactly this request.
                        Ok(r) if r.status == 200 => {
                            match r.verify_receipt(session.server().claims(), &body) {
                                Ok(_) => latencies.push(sent.elapsed()),
                                Err(e) => errors.push(format!("receipt: {e}")),
                            }
                        }
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

/// A running `cloak proxy`, killed on drop.
struct Proxy {
    _child: Killed,
    url: String,
    log: PathBuf,
}

/// Starts `cloak proxy --upstream UPSTREAM --listen 127.0.0.1:0 ARGS`; `Err` with its output
/// when it exits instead of listening.
fn proxy(dir: &Path, upstream: &str, args: &[&str]) -> Result<Proxy, (Option<i32>, String)> {
    let log = dir.join(format!("proxy-{}.log", std::process::id() ^ rand_u32()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloak"))
        .args(["proxy", "--upstream", upstream, "--listen", "127.0.0.1:0"])
        .args(args)
        .env("CLOAK_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = match lines.next() {
        Some(Ok(line)) => line
            .strip_prefix("proxy listening on ")
            .and_then(|rest| rest.split(' ').next())
            .map(str::to_owned),
        _ => None,
    };
    let Some(url) = url else {
        let status = child.wait().unwrap();
        return Err((status.code(), std::fs::read_to_string(&log).unwrap()));
    };
    std::thread::spawn(move || lines.for_each(drop));
    Ok(Proxy {
        _child: Killed(child),
        url,
        log,
    })
}

fn rand_u32() -> u32 {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).unwrap();
    u32::from_le_bytes(bytes)
}

#[test]
fn tritonclient_through_the_verifying_proxy() {
    let Some(python) = python() else { return };
    let server = serve(&[]);
    let policy = server.policy(&cloak_mrenclave());
    let policy: Vec<&str> = policy.iter().map(String::as_str).collect();
    for mode in ["atls", "ohttp"] {
        let mut args = vec!["--mode", mode];
        args.extend_from_slice(&policy);
        let proxy = proxy(server.dir.path(), &server.url, &args).unwrap();
        let report = triton_check(&python, &proxy.url);
        assert_triton_report(&server, &report);
        // Every inference answer was checked against its receipt on the way.
        let log = std::fs::read_to_string(&proxy.log).unwrap();
        assert!(log.contains("upstream accepted"), "{log}");
        assert!(!log.contains("request not forwarded"), "{log}");
    }

    // A proxy whose policy rejects the upstream never listens.
    let zeros = "00".repeat(32);
    let args = [
        "--mode",
        "ohttp",
        "--trust-root",
        policy[1],
        "--expect-mrenclave",
        &zeros,
    ];
    let (code, log) = proxy(server.dir.path(), &server.url, &args)
        .err()
        .expect("a rejected upstream");
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("REJECTED (measurement-mismatch)"), "{log}");
    // And it listens on loopback only: it serves plaintext.
    let out = cloak(&["proxy", "--upstream", &server.url, "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

/// nginx from the distribution as an untrusted TLS-terminating load balancer on loopback, which
/// logs every request body it forwards. Killed on drop.
struct Nginx {
    _child: Killed,
    url: String,
    access_log: PathBuf,
    ca: PathBuf,
}

impl Nginx {
    fn access_log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.access_log).unwrap_or_default()).into_owned()
    }

    /// The access log once it has a line containing `needle`: nginx writes a request's line
    /// after the response has gone out, so a client can be faster than the log.
    fn access_log_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.access_log();
            if log.contains(needle) || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Starts nginx in front of `upstream` (host:port), or `None` where there is no nginx (CI
/// installs it and sets `CLOAK_REQUIRE_NGINX=1`).
fn nginx(dir: &Path, upstream: &str) -> Option<Nginx> {
    let binary = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    let Some(binary) = binary else {
        assert!(
            std::env::var("CLOAK_REQUIRE_NGINX").as_deref() != Ok("1"),
            "CLOAK_REQUIRE_NGINX=1 but there is no nginx (apt-get install nginx-light)"
        );
        eprintln!("skipping: no nginx");
        return None;
    };
    let root = dir.join("nginx");
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let ca = root.join("lb.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    std::fs::write(root.join("lb.key"), certified.signing_key.serialize_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = s(&root);
    // One process, no user switch, everything under `root`; the access log records each
    // request body as nginx forwards it (non-printable bytes escaped as \xHH).
    let config = format!(
        r#"daemon off;
master_process off;
pid {r}/nginx.pid;
error_log {r}/error.log info;
events {{ worker_connections 64; }}
http {{
    log_format bodies '$remote_addr "$request" $status "$http_content_type" "$request_body"';
    access_log {r}/access.log bodies;
    client_body_temp_path {r}/tmp/body;
    proxy_temp_path {r}/tmp/proxy;
    fastcgi_temp_path {r}/tmp/fastcgi;
    uwsgi_temp_path {r}/tmp/uwsgi;
    scgi_temp_path {r}/tmp/scgi;
    client_body_buffer_size 1m;
    client_max_body_size 16m;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {r}/lb.pem;
        ssl_certificate_key {r}/lb.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass https://{upstream};
            proxy_ssl_verify off;
            proxy_ssl_protocols TLSv1.3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#
    );
    std::fs::write(root.join("nginx.conf"), config).unwrap();
    let child = Command::new(binary)
        .args(["-p", r, "-c", s(&root.join("nginx.conf"))])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(root.join("stderr.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Some(Nginx {
        _child: Killed(child),
        url: format!("https://localhost:{port}"),
        access_log: root.join("access.log"),
        ca,
    })
}

/// `curl` with `args`; returns the status code and the body.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (status.trim().parse().unwrap(), body.to_owned())
}

#[test]
fn encrypted_requests_pass_a_tls_terminating_nginx_that_sees_only_ciphertext() {
    let server = serve(&[]);
    let upstream = server.url.strip_prefix("https://").unwrap().to_owned();
    let Some(lb) = nginx(server.dir.path(), &upstream) else {
        return;
    };
    let dir = server.dir.path();
    let policy = server.policy(&cloak_mrenclave());
    let policy: Vec<&str> = policy.iter().map(String::as_str).collect();
    // Values no log could contain by chance.
    let request = dir.join("secret-request.json");
    std::fs::write(
        &request,
        r#"{"inputs":[{"name":"features","datatype":"FP32","shape":[2,4],
            "data":[0.1234567,-0.7654321,0.3141593,0.2718282,-0.4242424,0.9999125,0.0123457,0.7777771]}]}"#,
    )
    .unwrap();
    let secrets = [
        "1234.5678",
        "8765.4321",
        "0.31415926",
        "2718.2818",
        "4242.4242",
    ];

    // A data owner through the load balancer: encapsulated to the enclave's attested key.
    let receipt = dir.join("receipt.txt");
    let attestation = dir.join("attestation.json");
    let mut args = vec![
        "infer",
        &lb.url,
        "--mode",
        "ohttp",
        "--ca",
        s(&lb.ca),
        "--model",
        "demo",
        "--input",
        s(&request),
        "--json",
        "--receipt-out",
        s(&receipt),
        "--attestation-out",
        s(&attestation),
    ];
    args.extend_from_slice(&policy);
    let out = cloak(&args);
    ok(&out);
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    let outputs: Vec<String> = response["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(outputs.len(), 6);
    // The output values distinctive enough to look for (not 0.0 or 1.0).
    let outputs: Vec<String> = outputs.into_iter().filter(|v| v.len() >= 8).collect();
    assert!(!outputs.is_empty(), "{response}");
    // The same request over attested TLS straight to the server gives the same numbers.
    let direct = cloak_infer(&server.url, "demo", &request, &policy, true);
    ok(&direct);
    let direct: Value = serde_json::from_slice(&direct.stdout).unwrap();
    assert_eq!(direct["outputs"], response["outputs"]);

    // nginx forwarded ciphertext: its log has the encapsulated request, no input or output
    // value; neither has the server's debug log.
    let ohttp_line = "\"POST /v1/ohttp HTTP/1.1\" 200 \"message/ohttp-req\"";
    let log = lb.access_log_with(ohttp_line);
    assert!(log.contains(ohttp_line), "{log}");
    let server_log = std::fs::read_to_string(dir.join("server.log")).unwrap();
    for value in secrets
        .iter()
        .copied()
        .chain(outputs.iter().map(String::as_str))
    {
        assert!(!log.contains(value), "nginx logged {value}: {log}");
        assert!(!server_log.contains(value), "the server logged {value}");
    }

    // The receipt verifies offline against the saved attestation, for exactly this request.
    let mut verify = vec![
        "receipt",
        "verify",
        s(&receipt),
        "--attestation",
        s(&attestation),
        "--request",
        s(&request),
        "--json",
    ];
    verify.extend_from_slice(&policy);
    let out = cloak(&verify);
    ok(&out);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["verdict"], "valid");
    assert_eq!(verdict["model"], "demo");
    // Another request body, a changed receipt byte, or a policy that rejects the enclave: exit 1.
    let other = dir.join("other-request.json");
    std::fs::write(&other, b"{}").unwrap();
    let mut wrong_body = verify.clone();
    wrong_body[6] = s(&other);
    let out = cloak(&wrong_body);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("receipt-input-mismatch"));
    let text = std::fs::read_to_string(&receipt).unwrap();
    let mut bytes = text.trim().as_bytes().to_vec();
    let at = bytes.len() / 2;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    let tampered = dir.join("tampered-receipt.txt");
    std::fs::write(&tampered, &bytes).unwrap();
    let mut changed = verify.clone();
    changed[2] = s(&tampered);
    let out = cloak(&changed);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let zeros = "00".repeat(32);
    let mut rejecting = verify.clone();
    let pin = rejecting
        .iter()
        .position(|a| *a == "--expect-mrenclave")
        .unwrap();
    rejecting[pin + 1] = &zeros;
    let out = cloak(&rejecting);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("measurement-mismatch"));

    // Attested TLS cannot pass a TLS-terminating proxy: the client sees nginx's certificate,
    // which carries no evidence, and sends nothing.
    let mut atls = vec!["infer", &lb.url, "--model", "demo", "--input", s(&request)];
    atls.extend_from_slice(&policy);
    let out = cloak(&atls);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The gateway's own refusals, in the clear and without content.
    let ca = s(&lb.ca);
    let gateway = format!("{}/v1/ohttp", lb.url);
    let (status, body) = curl(&[
        "--cacert",
        ca,
        "-H",
        "content-type: message/ohttp-req",
        "--data-binary",
        "not an encapsulated request",
        &gateway,
    ]);
    // Its first byte is not the attested key's id.
    assert_eq!(status, 400);
    assert!(body.contains("ohttp-key"), "{body}");
    assert!(!body.contains("encapsulated request"), "{body}");
    let (status, _) = curl(&[
        "--cacert",
        ca,
        "-H",
        "content-type: application/json",
        "--data-binary",
        "{}",
        &gateway,
    ]);
    assert_eq!(status, 415);

    // The control: a plaintext request through the same nginx lands in its log, so the
    // checks above could have failed.
    let (status, _) = curl(&[
        "--cacert",
        ca,
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("@{}", s(&request)),
        &format!("{}/v2/models/demo/infer", lb.url),
    ]);
    assert_eq!(status, 200);
    assert!(lb.access_log_with("0.1234567").contains("0.1234567"));

    // `cloak proxy --mode ohttp` through nginx; the server restarts behind it (new keys, new
    // identity) and the proxy appraises it again instead of failing.
    let mut args = vec!["--mode", "ohttp", "--ca", ca];
    args.extend_from_slice(&policy);
    let proxy = proxy(dir, &lb.url, &args).unwrap();
    let infer_url = format!("{}/v2/models/demo/infer", proxy.url);
    let post = [
        "-D",
        "-",
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("@{}", s(&request)),
        &infer_url,
    ];
    let (status, body) = curl(&post);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_ascii_lowercase().contains("cloak-receipt: "),
        "{body}"
    );
    let mut server = server;
    server.restart();
    let (status, body) = curl(&post);
    assert_eq!(status, 200, "{body}");
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(log.contains("identity changed; re-appraising"), "{log}");
}

#[test]
fn bench_reports_the_confidentiality_tax() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo-mlp.onnx");
    let out = cloak(&[
        "bench",
        "--model",
        s(&model),
        "--iterations",
        "4",
        "--warmup",
        "1",
        "--seconds",
        "0.2",
        "--concurrency",
        "1,3",
        "--idle-ms",
        "1",
        "--json",
    ]);
    ok(&out);
    let reports: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &reports.as_array().unwrap()[0];
    assert_eq!(report["model"], "demo-mlp.onnx");
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

    // Without models and without the model cache it says where they come from.
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cloak"))
        .arg("bench")
        .env("CLOAK_MODEL_CACHE", empty.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scripts/fetch-models.py"));
}
