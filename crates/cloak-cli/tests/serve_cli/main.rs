//! `cloak serve`, `cloak attest server`, `cloak infer`, `cloak proxy` and `cloak bench` as
//! separate processes on loopback, as an operator and a data owner run them; the unmodified
//! `tritonclient` against the server and through the proxy; encrypted requests through a real
//! nginx; and a load test. One test binary, a module per subject.
#![cfg(feature = "sim")]

mod bench;
mod load;
mod nginx;
mod proxy;
mod serve;
#[path = "../support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cloak_test_support::cli::{ok, s};
use cloak_test_support::models::DEMO_ONNX;
use cloak_test_support::process::{Launch, Spawned};
use cloak_test_support::sim::{Sim, measurement_of};
use serde_json::Value;
use support::{cloak, exe};

/// The MRENCLAVE the simulated platform gives `cloak serve`: the SHA-256 of the executable.
fn cloak_mrenclave() -> [u8; 32] {
    measurement_of(&exe())
}

/// A running `cloak serve`, killed on drop.
struct Server {
    process: Spawned,
    url: String,
    dir: tempfile::TempDir,
    sim: Sim,
    args: Vec<String>,
    models: usize,
}

impl Server {
    /// The policy flags of a data owner who trusts this simulation root and pins `cloak`.
    fn policy(&self) -> Vec<String> {
        self.sim.policy_flags(cloak_mrenclave())
    }

    /// [`Server::policy`] as the client library takes it.
    fn library_policy(&self) -> cloak_client::AppraisalPolicy {
        self.sim.policy(cloak_mrenclave())
    }

    fn log(&self) -> String {
        self.process.log_text()
    }

    /// Stops the server and starts it again on the same address, with the same models and
    /// platform: a new process, so new keys and a new identity.
    fn restart(&mut self) {
        self.process.kill();
        // The attested-TLS listener comes back on its port; other listeners take any.
        let addr = self.url.strip_prefix("https://").unwrap().to_owned();
        let mut args = self.args.clone();
        let at = args.iter().position(|a| a == "--listen").unwrap() + 1;
        args[at] = addr;
        self.process = launch(self.dir.path(), &args, self.models);
        assert_eq!(self.process.url, self.url);
    }
}

/// Seals the demo model (and a tampered copy) and starts `cloak serve` on a free port.
fn serve(extra: &[&str]) -> Server {
    serve_with(extra, None)
}

/// Seals `onnx` as model `name` with `cloak model encrypt`; returns `NAME=KEYFILE`.
fn encrypt(dir: &Path, models: &Path, name: &str, onnx: &[u8]) -> String {
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, onnx).unwrap();
    let key = dir.join(format!("{name}.key"));
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
    format!("{name}={}", s(&key))
}

/// [`serve`], plus `model` (name, ONNX bytes) when given.
fn serve_with(extra: &[&str], model: Option<(&str, &[u8])>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let mut keys = vec![
        encrypt(dir.path(), &models, "demo", DEMO_ONNX),
        encrypt(dir.path(), &models, "tampered", DEMO_ONNX),
    ];
    cloak_test_support::models::tamper(&models.join("tampered.cloak"));
    if let Some((name, onnx)) = model {
        keys.push(encrypt(dir.path(), &models, name, onnx));
    }
    let sim = Sim::init(&dir.path().join("sim"));
    let mut args: Vec<String> = [
        "serve",
        "--model-dir",
        s(&models),
        "--listen",
        "127.0.0.1:0",
        "--platform",
        "sim",
        "--sim-dir",
        s(sim.dir()),
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    for key in &keys {
        args.extend(["--model-key".to_owned(), key.clone()]);
    }
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let process = launch(dir.path(), &args, keys.len());
    Server {
        url: process.url.clone(),
        process,
        dir,
        sim,
        args,
        models: keys.len(),
    }
}

/// Starts `cloak ARGS` (a `cloak serve`) and reads its summary through `models` model lines.
fn launch(dir: &Path, args: &[String], models: usize) -> Spawned {
    Launch::new(
        &exe(),
        args,
        &dir.join("server.log"),
        "cloak serve: listening on ",
    )
    .then_read_until(|lines| lines.iter().filter(|l| l.starts_with("  model ")).count() >= models)
    .spawn()
}

/// `cloak infer URL --model MODEL --input REQUEST [--json] POLICY...`.
fn cloak_infer(url: &str, model: &str, request: &Path, policy: &[String], json: bool) -> Output {
    let mut args = vec!["infer", url, "--model", model, "--input", s(request)];
    if json {
        args.push("--json");
    }
    args.extend(policy.iter().map(String::as_str));
    cloak(&args)
}

/// `cloak receipt verify RECEIPT --attestation ATTESTATION --request REQUEST --json` with
/// `policy`'s flags.
fn receipt_verify_args<'a>(
    receipt: &'a Path,
    attestation: &'a Path,
    request: &'a Path,
    policy: &'a [String],
) -> Vec<&'a str> {
    let mut args = vec![
        "receipt",
        "verify",
        s(receipt),
        "--attestation",
        s(attestation),
        "--request",
        s(request),
        "--json",
    ];
    args.extend(policy.iter().map(String::as_str));
    args
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

/// `/metrics`, read over attested TLS with the client library.
fn server_metrics(server: &Server) -> String {
    cloak_test_support::block_on(async {
        let client = cloak_client::Client::builder()
            .policy(server.library_policy())
            .connect(&server.url)
            .await
            .unwrap();
        String::from_utf8(client.get("/metrics").await.unwrap().body).unwrap()
    })
}

/// A running `cloak proxy`, killed on drop.
struct Proxy {
    process: Spawned,
}

impl Proxy {
    fn url(&self) -> &str {
        &self.process.url
    }

    fn log(&self) -> String {
        self.process.log_text()
    }
}

/// Starts `cloak proxy --upstream UPSTREAM --listen 127.0.0.1:0 ARGS`; `Err` with its exit code
/// and output when it exits instead of listening.
fn proxy(dir: &Path, upstream: &str, args: &[&str]) -> Result<Proxy, (Option<i32>, String)> {
    let log = tempfile::Builder::new()
        .prefix("proxy-")
        .suffix(".log")
        .tempfile_in(dir)
        .unwrap()
        .into_temp_path()
        .keep()
        .unwrap();
    let mut all = vec!["proxy", "--upstream", upstream, "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Launch::new(&exe(), &all, &log, "proxy listening on ")
        .try_spawn()
        .map(|process| Proxy { process })
}

/// Runs the unmodified `tritonclient` against `target` (`HOST:PORT` for the server's TLS,
/// `http://HOST:PORT` for a proxy) and returns its report.
fn triton_check(python: &Path, target: &str) -> Value {
    let script = cloak_test_support::deps::repo_root().join("tests/python/triton_client_check.py");
    let out = Command::new(python)
        .arg(&script)
        .args([target, "demo", "features", "3", "4"])
        .output()
        .unwrap();
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Python with the unmodified `tritonclient`, or `None` (skipped, said out loud).
fn tritonclient() -> Option<PathBuf> {
    cloak_test_support::deps::python(&["tritonclient.http", "numpy"])
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
    let out = cloak_infer(&server.url, "demo", &request, &server.policy(), true);
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
