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
    for mode in [Mode::AttestedTls, Mode::Encapsulated] {
        let client = Client::builder()
            .policy(pinned.clone())
            .mode(mode)
            .connect(&server.url)
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
    // The test process is another binary: a policy pinning it refuses this server.
    let other = host.sim.policy(cloak_test_support::sim::this_process());
    let refused = Client::builder()
        .policy(other)
        .connect(&server.url)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Appraisal(AppraisalError::Policy(v)) if v.code() == "measurement-mismatch"),
        "{refused}"
    );
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
