//! The `cloak-server` binary — what the enclave runs — as an operator runs it: on the simulated
//! platform its MRENCLAVE is the SHA-256 of the `cloak-server` executable itself, so a client
//! pins that binary (and no other), and its flags and refusals are its own.
#![cfg(feature = "sim")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cloak_client::{AppraisalError, Client, Error, Mode};
use cloak_test_support::cli::{self, ok, s};
use cloak_test_support::models::{DEMO_ONNX, seal};
use cloak_test_support::process::{Launch, Spawned};
use cloak_test_support::sim::{Sim, measurement_of};

fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cloak-server"))
}

/// A model directory with the demo model, its key file (mode 0600), and a simulated platform.
struct Host {
    dir: tempfile::TempDir,
    sim: Sim,
    key: PathBuf,
}

impl Host {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        std::fs::create_dir(&models).unwrap();
        let key = seal(&models, "demo", "demo", DEMO_ONNX);
        let key_path = dir.path().join("demo.key");
        std::fs::write(&key_path, key.to_key_file().as_bytes()).unwrap();
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let sim = Sim::init(&dir.path().join("sim"));
        Self {
            dir,
            sim,
            key: key_path,
        }
    }

    fn args<'a>(&'a self, key: &'a Path) -> Vec<String> {
        [
            "--model-dir",
            s(&self.dir.path().join("models")),
            "--platform",
            "sim",
            "--sim-dir",
            s(self.sim.dir()),
            "--listen",
            "127.0.0.1:0",
            "--model-key",
            &format!("demo={}", s(key)),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    }

    fn serve(&self) -> Spawned {
        Launch::new(
            &exe(),
            &self.args(&self.key),
            &self.dir.path().join("server.log"),
            "cloak-server: listening on ",
        )
        .then_read_until(|lines| lines.iter().any(|l| l.contains("model ready")))
        .spawn()
    }
}

/// The demo model answers over attested TLS and as encrypted requests, with receipts, to a
/// client under `policy`.
async fn infers_in_both_modes(url: &str, policy: &cloak_client::AppraisalPolicy) {
    for mode in [Mode::AttestedTls, Mode::Encapsulated] {
        let client = Client::builder()
            .policy(policy.clone())
            .mode(mode)
            .connect(url)
            .await
            .unwrap();
        let features =
            cloak_client::Tensor::from_values(vec![1, 4], &[0.5f32, 1.0, -1.0, 2.0]).unwrap();
        let request = cloak_client::InferRequest::new(vec![cloak_client::NamedTensor::new(
            "features", features,
        )]);
        let answer = client.infer("demo", &request).await.unwrap();
        assert_eq!(answer.receipt.model, "demo");
    }
}

/// The policy refused the server for its MRENCLAVE.
fn assert_measurement_mismatch(refused: &Error) {
    assert!(
        matches!(refused, Error::Appraisal(AppraisalError::Policy(v)) if v.code() == "measurement-mismatch"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_pin_the_server_binary_and_nothing_else() {
    let host = Host::new();
    let server = host.serve();
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    assert!(
        server
            .stdout
            .iter()
            .any(|l| l.contains("model ready      demo")),
        "{:?}",
        server.stdout
    );
    let pinned = host.sim.policy(measurement_of(&exe()));
    infers_in_both_modes(&server.url, &pinned).await;
    // The test process is another binary: a policy pinning it refuses this server.
    let other = host.sim.policy(cloak_test_support::sim::this_process());
    let refused = Client::builder()
        .policy(other)
        .connect(&server.url)
        .await
        .unwrap_err();
    assert_measurement_mismatch(&refused);
}

#[test]
fn bad_starts_exit_2_and_say_why() {
    let host = Host::new();
    let run = |args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli::run(&exe(), &args)
    };
    // No Gramine here.
    let mut gramine = host.args(&host.key);
    let at = gramine.iter().position(|a| a == "sim").unwrap();
    gramine[at] = "gramine".into();
    gramine.retain(|a| a != "--sim-dir" && a != s(host.sim.dir()));
    let out = run(&gramine);
    assert_eq!(out.status.code(), Some(2), "{}", cli::stderr(&out));
    assert!(
        cli::stderr(&out).contains("/dev/attestation"),
        "{}",
        cli::stderr(&out)
    );
    // A key file other users can read.
    std::fs::set_permissions(&host.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&host.args(&host.key));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        cli::stderr(&out).contains("chmod 600"),
        "{}",
        cli::stderr(&out)
    );
    // A duration that is not one.
    let mut args = host.args(&host.key);
    args.extend(["--queue-timeout".to_owned(), "soon".to_owned()]);
    let out = run(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(cli::stderr(&out).contains("30s"), "{}", cli::stderr(&out));
    // Help names the flags, under their headings.
    let out = cli::run(&exe(), &["--help"]);
    ok(&out);
    let help = cli::stdout(&out);
    for needle in [
        "--model-dir",
        "--kbs-denied-retry",
        "Limits:",
        "Key broker:",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

/// What a client sees of a server: its appraisal, over a fresh connection.
async fn appraise(
    url: &str,
    policy: cloak_client::AppraisalPolicy,
) -> Result<std::sync::Arc<cloak_client::Appraisal>, Error> {
    let client = Client::builder().policy(policy).connect(url).await?;
    Ok(client.appraisal())
}

/// `--engine onnxruntime`: the library's SHA-256 is in the claims and, on the simulated
/// platform, in the measurement — so a policy pinning the tract build refuses it, and a library
/// swapped on disk changes nothing while the server runs (it runs what it loaded) but changes
/// the claims and the measurement at the next start, which the earlier pin then refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_onnxruntime_library_is_in_the_claims_and_the_measurement() {
    let Some(real) = cloak_test_support::deps::onnxruntime_library() else {
        return;
    };
    let host = Host::new();
    let library = host.dir.path().join("libonnxruntime.so.1");
    std::fs::copy(&real, &library).unwrap();
    let serve = || {
        let mut args = host.args(&host.key);
        args.extend(
            ["--engine", "onnxruntime", "--onnxruntime-lib", s(&library)].map(String::from),
        );
        Launch::new(
            &exe(),
            &args,
            &host.dir.path().join("server.log"),
            "cloak-server: listening on ",
        )
        .then_read_until(|lines| lines.iter().any(|l| l.contains("model ready")))
        .spawn()
    };
    let sha = |path: &Path| cloak_crypto::hash::sha256(&std::fs::read(path).unwrap());
    let measured = |library_sha: [u8; 32]| {
        cloak_tee::sim::enclave_measurement(&measurement_of(&exe()), &[library_sha])
    };

    let first_sha = sha(&library);
    let mut server = serve();
    assert!(
        server
            .stdout
            .iter()
            .any(|l| l.contains("engine           onnxruntime")),
        "{:?}",
        server.stdout
    );
    let pinned = host.sim.policy(measured(first_sha));
    let appraisal = appraise(&server.url, pinned.clone()).await.unwrap();
    let engine = appraisal.server().claims().engine.clone().unwrap();
    assert_eq!(engine.name, "onnxruntime");
    assert_eq!(engine.library_sha256, Some(first_sha));
    assert!(engine.version.starts_with("1."), "{}", engine.version);
    infers_in_both_modes(&server.url, &pinned).await;
    // The tract build of the same executable is another enclave.
    let tract_pin = host.sim.policy(measurement_of(&exe()));
    let refused = appraise(&server.url, tract_pin).await.unwrap_err();
    assert_measurement_mismatch(&refused);

    // Another library (here: the same bytes and one more, which still loads) replaces the file
    // while the server runs: it still runs, and states, what it loaded.
    let mut swapped = std::fs::read(&library).unwrap();
    swapped.push(0);
    let staged = host.dir.path().join("staged.so");
    std::fs::write(&staged, &swapped).unwrap();
    std::fs::rename(&staged, &library).unwrap();
    let second_sha = sha(&library);
    assert_ne!(second_sha, first_sha);
    let appraisal = appraise(&server.url, pinned.clone()).await.unwrap();
    assert_eq!(
        appraisal
            .server()
            .claims()
            .engine
            .as_ref()
            .unwrap()
            .library_sha256,
        Some(first_sha)
    );

    // At the next start the server states the new library and is another enclave: the pin on
    // the first refuses it.
    server.kill();
    let server = serve();
    let refused = appraise(&server.url, pinned).await.unwrap_err();
    assert_measurement_mismatch(&refused);
    let appraisal = appraise(&server.url, host.sim.policy(measured(second_sha)))
        .await
        .unwrap();
    assert_eq!(
        appraisal
            .server()
            .claims()
            .engine
            .as_ref()
            .unwrap()
            .library_sha256,
        Some(second_sha)
    );
}

/// Every wrong engine setting stops the start with exit status 2 and a sentence — never a crash:
/// no library named, a file that is not a library, and a library that claims a version but
/// gives no API (which makes `ort` panic inside; contained).
#[test]
fn a_wrong_engine_library_is_a_clear_startup_error() {
    let host = Host::new();
    let run = |extra: &[&str]| {
        let mut args = host.args(&host.key);
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = std::process::Command::new(exe());
        command.args(&args).env_remove("CLOAK_ONNXRUNTIME_LIB");
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", cli::stderr(&out));
        cli::stderr(&out)
    };
    let stderr = run(&["--engine", "onnxruntime"]);
    assert!(stderr.contains("--onnxruntime-lib"), "{stderr}");
    let text = host.dir.path().join("libonnxruntime.so.1.32.0");
    std::fs::write(&text, "not a library").unwrap();
    let stderr = run(&["--engine", "onnxruntime", "--onnxruntime-lib", s(&text)]);
    assert!(
        stderr.contains("engine is unavailable") && stderr.contains(s(&text)),
        "{stderr}"
    );
    if let Some(fake) = cloak_test_support::deps::fake_onnxruntime(host.dir.path(), "1.99.0") {
        let stderr = run(&["--engine", "onnxruntime", "--onnxruntime-lib", s(&fake)]);
        assert!(stderr.contains("engine is unavailable"), "{stderr}");
    }
    let stderr = run(&["--engine-threads", "0"]);
    assert!(stderr.contains("--engine-threads"), "{stderr}");
}
