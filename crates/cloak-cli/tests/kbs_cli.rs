//! The key broker end to end, as separate processes on loopback: the model owner runs
//! `cloak kbs`, the host runs `cloak serve --kbs` on the simulated platform, and keys reach the
//! enclave only when its evidence satisfies each model's policy. Restarts use the sealed keys;
//! tampered sealed keys and rebuilt binaries go back to the broker; the audit log records every
//! decision and detects edits.
#![cfg(all(feature = "sim", feature = "kbs"))]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use cloak_test_support::process::{Launch, Spawned};
use support::{cloak, cloak_line, exe, ok, s};

/// The MRENCLAVE the simulated platform gives a process: the SHA-256 of its executable.
fn mrenclave_of(exe: &Path) -> String {
    hex::encode(cloak_test_support::sim::measurement_of(exe))
}

/// Starts `exe args`, logging to `log`, and waits for the line starting with `marker` on
/// stdout (the URL follows it).
fn spawn(exe: &Path, args: &[&str], log: &Path, marker: &str) -> Spawned {
    Launch::new(exe, args, log, marker).spawn()
}

/// A host's directory with a simulated platform made by `cloak sim init`: the directory, the
/// platform's directory and its root certificate.
fn host() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let sim = tmp.path().join("sim");
    ok(&cloak(&["sim", "init", "--dir", s(&sim)]));
    let root = sim.join("root.der");
    (tmp, sim, root)
}

/// A host (see [`host`]) with the demo model sealed as `demo` in its `models` directory.
struct DemoHost {
    tmp: tempfile::TempDir,
    sim: PathBuf,
    root: PathBuf,
    models: PathBuf,
    /// The demo model's key file.
    demo_key: PathBuf,
}

fn demo_host() -> DemoHost {
    let (tmp, sim, root) = host();
    let models = tmp.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let demo_key = seal_demo(tmp.path(), &models, "demo");
    DemoHost {
        tmp,
        sim,
        root,
        models,
        demo_key,
    }
}

/// The model owner's side: a broker database, its admin token, and the running broker.
struct Owner {
    dir: PathBuf,
    /// A SQLite file or a PostgreSQL URL.
    db: String,
    token: PathBuf,
    /// The master-key file, when it is not `DB.master-key` (PostgreSQL).
    master_key: Option<PathBuf>,
}

impl Owner {
    fn init(dir: &Path) -> Self {
        let db = dir.join("kbs.db");
        let token = dir.join("admin.token");
        ok(&cloak_line(&format!(
            "kbs init --db {} --admin-token-out {}",
            s(&db),
            s(&token)
        )));
        Self {
            dir: dir.to_path_buf(),
            db: s(&db).to_owned(),
            token,
            master_key: None,
        }
    }

    /// A broker on the PostgreSQL database at `url`, its master key in a file of its own.
    fn init_postgres(dir: &Path, url: &str) -> Self {
        let token = dir.join("admin.token");
        let master_key = dir.join("kbs.master-key");
        ok(&cloak(&[
            "kbs",
            "init",
            "--db",
            url,
            "--admin-token-out",
            s(&token),
            "--master-key-out",
            s(&master_key),
        ]));
        Self {
            dir: dir.to_path_buf(),
            db: url.to_owned(),
            token,
            master_key: Some(master_key),
        }
    }

    /// `cloak kbs serve` on `listen` (`127.0.0.1:0` for any port).
    fn serve(&self, listen: &str, extra: &[&str]) -> Spawned {
        let mut args = vec!["kbs", "serve", "--db", &self.db, "--listen", listen];
        if let Some(master_key) = &self.master_key {
            args.extend(["--master-key", s(master_key)]);
        }
        args.extend_from_slice(extra);
        let log = self.dir.join(format!(
            "kbs-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        spawn(&exe(), &args, &log, "cloak kbs: listening on ")
    }

    fn admin(&self, url: &str, command: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "kbs",
            command,
            "--url",
            url,
            "--admin-token-file",
            s(&self.token),
        ];
        args.extend_from_slice(extra);
        cloak(&args)
    }

    /// Registers `model` with its key file and a policy (TOML text).
    fn add_model(&self, url: &str, model: &str, key: &Path, policy: &str) {
        let path = self.dir.join(format!("{model}.policy.toml"));
        std::fs::write(&path, policy).unwrap();
        ok(&self.admin(
            url,
            "add-model",
            &["--name", model, "--key", s(key), "--policy", s(&path)],
        ));
    }

    fn set_policy(&self, url: &str, model: &str, policy: &str) {
        let path = self.dir.join(format!("{model}.policy2.toml"));
        std::fs::write(&path, policy).unwrap();
        ok(&self.admin(url, "set-policy", &["--name", model, "--policy", s(&path)]));
    }

    /// The audit records (JSON).
    fn audit(&self, url: &str) -> Vec<Value> {
        let out = self.admin(url, "audit", &["--json"]);
        ok(&out);
        let response: Value = serde_json::from_slice(&out.stdout).unwrap();
        response["records"].as_array().unwrap().clone()
    }
}

/// The release decisions for `model` in the audit: (decision, reason, mrenclave).
fn releases(records: &[Value], model: &str) -> Vec<(String, String, String)> {
    records
        .iter()
        .filter(|r| r["event"] == "release" && r["model"] == model)
        .map(|r| {
            (
                r["decision"].as_str().unwrap().to_owned(),
                r["reason"].as_str().unwrap().to_owned(),
                r["measurements"]["mrenclave"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

/// Seals the demo model under `name` into `models`; returns its key file.
fn seal_demo(dir: &Path, models: &Path, name: &str) -> PathBuf {
    let onnx = dir.join("demo.onnx");
    if !onnx.exists() {
        std::fs::write(&onnx, include_bytes!("../assets/demo-mlp.onnx")).unwrap();
    }
    let key = dir.join(format!("{name}.key"));
    ok(&cloak_line(&format!(
        "model encrypt {} --out {} --key-out {} --name {}",
        s(&onnx),
        s(&models.join(format!("{name}.cloak"))),
        s(&key),
        name
    )));
    key
}

/// A copy of the `cloak` binary in `dir` with other bytes, so another MRENCLAVE.
fn rebuild(dir: &Path) -> PathBuf {
    let rebuilt = dir.join("cloak-rebuilt");
    let mut exe = std::fs::read(exe()).unwrap();
    exe.extend_from_slice(b"\0rebuilt");
    std::fs::write(&rebuilt, exe).unwrap();
    std::fs::set_permissions(
        &rebuilt,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    rebuilt
}

/// A release policy trusting the simulation root at `root`, pinning `mrenclaves`, plus `extra`
/// lines at the top level.
fn policy(root: &Path, mrenclaves: &[&str], extra: &str) -> String {
    let list = mrenclaves
        .iter()
        .map(|m| format!("\"{m}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "trust_root = \"{}\"\n{extra}\n[sgx]\nmrenclave = [{list}]\n",
        s(root)
    )
}

/// `cloak serve --kbs URL` (run from `exe`) on `models`, with extra flags.
fn serve(exe: &Path, dir: &Path, models: &Path, sim: &Path, kbs: &str, extra: &[&str]) -> Spawned {
    let mut args = vec![
        "serve",
        "--model-dir",
        s(models),
        "--listen",
        "127.0.0.1:0",
        "--platform",
        "sim",
        "--sim-dir",
        s(sim),
        "--kbs",
        kbs,
        "--kbs-max-backoff",
        "1",
        "--kbs-denied-retry",
        "3600",
    ];
    args.extend_from_slice(extra);
    let log = dir.join("server.log");
    spawn(exe, &args, &log, "cloak serve: listening on ")
}

/// A policy that trusts the simulation root at `root` and tolerates any status and debug (the
/// tests observe servers with it; they do not appraise).
fn observer_policy(root: &Path) -> cloak_attest::policy::AppraisalPolicy {
    let root = std::fs::read(root).unwrap();
    let mut policy = cloak_attest::policy::AppraisalPolicy::strict()
        .with_trust_root(cloak_attest::policy::TrustRootPolicy::Der(root))
        .with_debug(cloak_attest::policy::DebugPolicy::Allow);
    for status in ["OutOfDate", "SWHardeningNeeded"] {
        policy = policy.allow_tcb_status(status.parse().unwrap());
    }
    policy
}

/// An observer's client for the server at `url` over attested TLS: it reads whichever enclave
/// answers, to see what it claims and reports.
async fn observer(url: &str, root: &Path) -> cloak_client::Client {
    cloak_client::Client::builder()
        .policy(observer_policy(root))
        .dangerously_accept_any_enclave()
        .connect(url)
        .await
        .unwrap()
}

/// Connects to the server at `url` over attested TLS; returns the model names its claims bind
/// and the body of `POST path`.
fn fetch(url: &str, root: &Path, path: &str) -> (Vec<String>, Vec<u8>) {
    cloak_test_support::block_on(async {
        let client = observer(url, root).await;
        let claimed = client
            .appraisal()
            .server()
            .claims()
            .models
            .iter()
            .map(|m| m.name.clone())
            .collect();
        // A server re-attests as keys arrive (a model's, a fleet's); an observer asks again
        // when two changes overtake its one re-appraisal.
        let mut attempts = 0;
        let body = loop {
            match client
                .send(cloak_client::Method::Post, path, b"{}".to_vec(), None)
                .await
            {
                Err(cloak_client::Error::IdentityChanged(_)) if attempts < 3 => attempts += 1,
                answer => break answer.unwrap().body,
            }
        };
        (claimed, body)
    })
}

/// The repository index of the server at `url`: name → (state, reason).
fn index(url: &str, root: &Path) -> BTreeMap<String, (String, String)> {
    let (_, body) = fetch(url, root, "/v2/repository/index");
    let entries: Vec<Value> = serde_json::from_slice(&body).unwrap();
    entries
        .into_iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                (
                    e["state"].as_str().unwrap().to_owned(),
                    e["reason"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// Polls the index until `model` satisfies `done` (30 s at most); returns (state, reason).
fn wait_for(
    server: &Spawned,
    root: &Path,
    model: &str,
    done: impl Fn(&str, &str) -> bool,
) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let states = index(&server.url, root);
        if let Some((state, reason)) = states.get(model)
            && done(state, reason)
        {
            return (state.clone(), reason.clone());
        }
        assert!(
            Instant::now() < deadline,
            "model {model} never reached the expected state: {states:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn is_ready(state: &str, _: &str) -> bool {
    state == "READY"
}

/// The broker refused the release (the index reason ends with the status code).
fn is_denied(_: &str, reason: &str) -> bool {
    reason.ends_with("(key-release-denied)")
}

/// The server is retrying a broker it cannot reach.
fn is_waiting(_: &str, reason: &str) -> bool {
    reason.ends_with("(key-pending)") && reason.contains("unreachable")
}

fn infer_demo(server: &Spawned, dir: &Path, root: &Path, model: &str) -> Value {
    let request = dir.join("request.json");
    std::fs::write(
        &request,
        r#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.5,-1.0,2.0,3.0]}]}"#,
    )
    .unwrap();
    let out = cloak_line(&format!(
        "infer {} --model {} --input {} --trust-root {} --expect-mrenclave {} \
         --allow-status OutOfDate --json",
        &server.url,
        model,
        s(&request),
        s(root),
        mrenclave_of(&exe())
    ));
    ok(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The released key opens the model, a policy for another measurement gets nothing; restarts
/// serve from the sealed key while the broker is down; a tampered sealed key and a rebuilt
/// binary (a new MRENCLAVE) cannot unseal and go back to the broker once it is up.
#[test]
fn release_seal_restart_and_rebuild() {
    let DemoHost {
        tmp,
        sim,
        root,
        models,
        demo_key,
    } = demo_host();
    let dir = tmp.path();
    let other_key = seal_demo(dir, &models, "other");

    let owner = Owner::init(dir);
    let broker = owner.serve("127.0.0.1:0", &[]);
    let kbs = broker.url.clone();
    let port = kbs.rsplit(':').next().unwrap().to_owned();
    let ours = mrenclave_of(&exe());
    owner.add_model(&kbs, "demo", &demo_key, &policy(&root, &[&ours], ""));
    owner.add_model(
        &kbs,
        "other",
        &other_key,
        &policy(&root, &["00".repeat(32).as_str()], ""),
    );

    // First start: the broker releases demo's key, and refuses other's. Once demo is ready the
    // server re-attests: new connections see it in the claims.
    let server = serve(&exe(), dir, &models, &sim, &kbs, &[]);
    wait_for(&server, &root, "demo", is_ready);
    assert_eq!(
        fetch(&server.url, &root, "/v2/repository/index").0,
        ["demo"]
    );
    let (state, reason) = wait_for(&server, &root, "other", is_denied);
    assert_eq!(state, "UNAVAILABLE");
    assert!(reason.contains("measurement-mismatch"), "{reason}");
    let output = infer_demo(&server, dir, &root, "demo");
    assert_eq!(output["model_name"], "demo");
    let sealed = models.join("demo.cloak.sealed-key");
    wait_for_file(&sealed);
    assert!(sealed.exists());
    assert!(!models.join("other.cloak.sealed-key").exists());
    let records = owner.audit(&kbs);
    assert_eq!(
        releases(&records, "demo"),
        [("granted".into(), "granted".into(), ours.clone())]
    );
    assert_eq!(
        releases(&records, "other"),
        [("denied".into(), "measurement-mismatch".into(), ours.clone())]
    );
    // The key never reaches the host's disk in plaintext.
    let key_hex = std::fs::read_to_string(&demo_key).unwrap();
    let key_hex = key_hex.lines().last().unwrap().rsplit(':').next().unwrap();
    let key_bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&key_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let sealed_bytes = std::fs::read(&sealed).unwrap();
    assert!(!sealed_bytes.windows(32).any(|w| w == key_bytes.as_slice()));
    drop(server);

    // Restart with the broker stopped: demo is served from its sealed key.
    drop(broker);
    let server = serve(&exe(), dir, &models, &sim, &kbs, &[]);
    assert_eq!(index(&server.url, &root)["demo"].0, "READY");
    let (_, reason) = wait_for(&server, &root, "other", is_waiting);
    assert!(reason.contains("waiting for the key broker"), "{reason}");
    infer_demo(&server, dir, &root, "demo");
    drop(server);

    // A tampered sealed key does not unseal: demo waits for the broker, and gets its key
    // again as soon as the broker is back (on the same address).
    let mut bytes = std::fs::read(&sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&sealed, &bytes).unwrap();
    let server = serve(&exe(), dir, &models, &sim, &kbs, &[]);
    let (state, reason) = wait_for(&server, &root, "demo", is_waiting);
    assert_eq!(state, "UNAVAILABLE");
    assert!(reason.contains("sealed key does not unseal"), "{reason}");
    let broker = owner.serve(&format!("127.0.0.1:{port}"), &[]);
    wait_for(&server, &root, "demo", is_ready);
    infer_demo(&server, dir, &root, "demo");
    assert_eq!(releases(&owner.audit(&kbs), "demo").len(), 2);
    drop(server);
    drop(broker);

    // A rebuilt server binary has another MRENCLAVE: the sealed key (bound to the old
    // measurement) does not unseal, and the broker releases the key only once the owner's
    // policy names the new measurement.
    let rebuilt = rebuild(dir);
    let theirs = mrenclave_of(&rebuilt);
    let server = serve(&rebuilt, dir, &models, &sim, &kbs, &[]);
    let (_, reason) = wait_for(&server, &root, "demo", is_waiting);
    assert!(reason.contains("measurement-mismatch"), "{reason}");
    let broker = owner.serve(&format!("127.0.0.1:{port}"), &[]);
    let (_, reason) = wait_for(&server, &root, "demo", is_denied);
    assert!(reason.contains("measurement-mismatch"), "{reason}");
    drop(server);
    owner.set_policy(&kbs, "demo", &policy(&root, &[&ours, &theirs], ""));
    let server = serve(&rebuilt, dir, &models, &sim, &kbs, &[]);
    wait_for(&server, &root, "demo", is_ready);
    let demo = releases(&owner.audit(&kbs), "demo");
    assert_eq!(
        demo.last().unwrap(),
        &("granted".to_owned(), "granted".to_owned(), theirs.clone())
    );
    assert!(
        demo.contains(&(
            "denied".into(),
            "measurement-mismatch".into(),
            theirs.clone()
        )),
        "{demo:?} {theirs}"
    );
    drop(broker);
}

/// Each kind of policy refusal keeps the key, leaves the model unavailable with the matching
/// reason, and is audited with it; the server keeps serving its other models.
#[test]
fn refusals_name_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let owner = Owner::init(dir);
    let broker = owner.serve("127.0.0.1:0", &[]);
    let kbs = broker.url.clone();
    let ours = mrenclave_of(&exe());

    // An OutOfDate platform: a policy requiring UpToDate, one naming only Intel's root, one
    // pinning another enclave (while tolerating OutOfDate); and a model with a given key.
    let out_of_date = dir.join("sim-ood");
    ok(&cloak_line(&format!(
        "sim init --dir {} --tcb-status OutOfDate",
        s(&out_of_date)
    )));
    let root = out_of_date.join("root.der");
    let models = dir.join("models-ood");
    std::fs::create_dir(&models).unwrap();
    let tolerant = "allowed_tcb_statuses = [\"UpToDate\", \"OutOfDate\"]";
    for (name, policy_text) in [
        ("needs-uptodate", policy(&root, &[&ours], "")),
        ("intel-only", {
            let text = policy(&root, &[&ours], tolerant);
            text.replace(
                &format!("trust_root = \"{}\"", s(&root)),
                "trust_root = \"intel\"",
            )
        }),
        (
            "other-enclave",
            policy(&root, &["11".repeat(32).as_str()], tolerant),
        ),
    ] {
        let key = seal_demo(dir, &models, name);
        owner.add_model(&kbs, name, &key, &policy_text);
    }
    let given = seal_demo(dir, &models, "given");
    let given_flag = format!("given={}", s(&given));
    let server = serve(
        &exe(),
        dir,
        &models,
        &out_of_date,
        &kbs,
        &["--model-key", &given_flag],
    );
    for (model, code) in [
        ("needs-uptodate", "tcb-status-not-allowed"),
        ("intel-only", "untrusted-root"),
        ("other-enclave", "measurement-mismatch"),
    ] {
        let (state, reason) = wait_for(&server, &root, model, is_denied);
        assert_eq!(state, "UNAVAILABLE", "{model}");
        assert!(reason.contains(code), "{model}: {reason}");
        assert_eq!(
            releases(&owner.audit(&kbs), model),
            [("denied".into(), code.into(), ours.clone())],
            "{model}"
        );
    }
    assert_eq!(index(&server.url, &root)["given"].0, "READY");
    infer_demo(&server, dir, &root, "given");
    drop(server);

    // A debug enclave on an up-to-date platform: refused unless the policy allows debug.
    let sim = dir.join("sim");
    ok(&cloak(&["sim", "init", "--dir", s(&sim)]));
    let root = sim.join("root.der");
    let models = dir.join("models-debug");
    std::fs::create_dir(&models).unwrap();
    let key = seal_demo(dir, &models, "no-debug");
    owner.add_model(&kbs, "no-debug", &key, &policy(&root, &[&ours], ""));
    let server = serve(&exe(), dir, &models, &sim, &kbs, &["--sim-debug"]);
    let (_, reason) = wait_for(&server, &root, "no-debug", is_denied);
    assert!(reason.contains("debug-enclave"), "{reason}");
    let records = owner.audit(&kbs);
    let decision = releases(&records, "no-debug");
    assert_eq!(
        decision,
        [("denied".into(), "debug-enclave".into(), ours.clone())]
    );
    let record = records
        .iter()
        .find(|r| r["model"] == "no-debug" && r["event"] == "release")
        .unwrap();
    assert_eq!(record["measurements"]["debug"], "true");
    assert!(record["client"].as_str().unwrap().starts_with("127.0.0.1"));
    drop(server);
    drop(broker);
}

/// A minimal HTTP/1.1 JSON POST over plain TCP (the broker on loopback); returns status and
/// body.
fn post(url: &str, path: &str, body: &str) -> (u16, Value) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Replayed and late release requests, wrong admin tokens, and an edited audit log.
#[test]
fn replay_expiry_tokens_and_audit_edits() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let DemoHost {
        tmp,
        sim,
        root,
        models: _,
        demo_key: key,
    } = demo_host();
    let dir = tmp.path();
    let owner = Owner::init(dir);
    let broker = owner.serve("127.0.0.1:0", &["--nonce-ttl", "2"]);
    let kbs = broker.url.clone();
    let mrenclave = "22".repeat(32);
    owner.add_model(&kbs, "demo", &key, &policy(&root, &[&mrenclave], ""));

    // An enclave that satisfies the policy, speaking the protocol by hand.
    let platform = cloak_tee::sim::SimPlatform::open(&sim).unwrap();
    let mut identity = cloak_tee::Platform::identity(&platform).unwrap();
    identity.mrenclave = [0x22; 32];
    let platform = platform.with_enclave(identity);
    let release_body = |nonce: &[u8], ephemeral: &[u8; 32]| {
        let report_data = cloak_proto::kbs::release_report_data(nonce, ephemeral);
        let evidence = cloak_tee::Platform::evidence(&platform, &report_data).unwrap();
        let collateral = String::from_utf8(evidence.collateral.unwrap()).unwrap();
        format!(
            r#"{{"nonce":"{}","evidence":"{}","collateral":{collateral},"ephemeral_key":"{}"}}"#,
            b64.encode(nonce),
            b64.encode(&evidence.quote),
            b64.encode(ephemeral)
        )
    };
    let challenge = || {
        let (status, body) = post(&kbs, "/kbs/v1/challenge", r#"{"model":"demo"}"#);
        assert_eq!(status, 200, "{body}");
        b64.decode(body["nonce"].as_str().unwrap()).unwrap()
    };

    let ephemeral = cloak_crypto::hpke::HpkeKeyPair::generate();
    let nonce = challenge();
    let request = release_body(&nonce, ephemeral.public_key());
    let (status, released) = post(&kbs, "/kbs/v1/release", &request);
    assert_eq!(status, 200, "{released}");
    let sealed = cloak_crypto::hpke::HpkeSealed {
        enc: b64
            .decode(released["enc"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
        ciphertext: b64
            .decode(released["sealed_key"].as_str().unwrap())
            .unwrap(),
    };
    let opened = ephemeral
        .open(&sealed, &cloak_proto::kbs::release_info("demo"), &nonce)
        .unwrap();
    let expected =
        cloak_crypto::key::ModelKey::from_key_file(&std::fs::read_to_string(&key).unwrap())
            .unwrap();
    assert_eq!(opened.as_slice(), expected.secret_bytes());

    // The same request again: the nonce was used.
    let (status, body) = post(&kbs, "/kbs/v1/release", &request);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "nonce-unknown");

    // Evidence bound to another ephemeral key than the one sent.
    let nonce = challenge();
    let other = cloak_crypto::hpke::HpkeKeyPair::generate();
    let mut swapped: Value =
        serde_json::from_str(&release_body(&nonce, ephemeral.public_key())).unwrap();
    swapped["ephemeral_key"] = Value::String(b64.encode(other.public_key()));
    let (status, body) = post(&kbs, "/kbs/v1/release", &swapped.to_string());
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "report-data-mismatch");

    // A nonce used after it expired (the broker runs with --nonce-ttl 2).
    let nonce = challenge();
    std::thread::sleep(Duration::from_millis(3100));
    let (status, body) = post(
        &kbs,
        "/kbs/v1/release",
        &release_body(&nonce, ephemeral.public_key()),
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "nonce-expired");

    // A wrong admin token changes nothing and is audited.
    let wrong = dir.join("wrong.token");
    std::fs::write(&wrong, "0".repeat(64)).unwrap();
    let policy_path = dir.join("lax.toml");
    std::fs::write(&policy_path, policy(&root, &[&"33".repeat(32)], "")).unwrap();
    let out = cloak_line(&format!(
        "kbs set-policy --url {} --admin-token-file {} --name demo --policy {}",
        &kbs,
        s(&wrong),
        s(&policy_path)
    ));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
    let records = owner.audit(&kbs);
    assert!(
        records
            .iter()
            .any(|r| r["decision"] == "denied" && r["reason"] == "unauthorized")
    );
    let decisions = releases(&records, "demo");
    assert_eq!(decisions.len(), 4, "{decisions:?}");
    assert_eq!(decisions[0].0, "granted");

    // The chain verifies; an edited record (a denial turned into a grant) is detected.
    let verify = owner.admin(&kbs, "audit", &["--verify"]);
    ok(&verify);
    drop(broker);
    let connection = rusqlite::Connection::open(&owner.db).unwrap();
    let changed = connection
        .execute(
            "UPDATE audit_log SET decision = 'granted', reason = 'granted' \
             WHERE seq = (SELECT MAX(seq) FROM audit_log WHERE event = 'release')",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(connection);
    let broker = owner.serve("127.0.0.1:0", &[]);
    let verify = owner.admin(&broker.url, "audit", &["--verify", "--json"]);
    assert_eq!(verify.status.code(), Some(1), "{verify:?}");
    let response: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(response["verification"]["intact"], false);
    assert!(response["verification"]["first_bad_seq"].as_u64().is_some());
}

/// A broker serving TLS: `cloak serve --kbs https://... --kbs-ca CA` obtains the key; without
/// the CA (the Mozilla roots do not know this certificate) the server keeps retrying and says
/// why.
#[test]
fn an_https_broker_is_trusted_through_kbs_ca() {
    let (tmp, sim, root) = host();
    let dir = tmp.path();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("kbs-cert.pem");
    let key = dir.join("kbs-key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let owner = Owner::init(dir);
    let broker = owner.serve(
        "127.0.0.1:0",
        &["--tls-cert", s(&cert), "--tls-key", s(&key)],
    );
    let port = broker.url.rsplit(':').next().unwrap();
    assert!(broker.url.starts_with("https://"), "{}", broker.url);
    let kbs = format!("https://localhost:{port}");
    let models = dir.join("models");
    std::fs::create_dir(&models).unwrap();
    let model_key = seal_demo(dir, &models, "demo");
    let policy_path = dir.join("demo.policy.toml");
    std::fs::write(&policy_path, policy(&root, &[&mrenclave_of(&exe())], "")).unwrap();
    ok(&owner.admin(
        &kbs,
        "add-model",
        &[
            "--name",
            "demo",
            "--key",
            s(&model_key),
            "--policy",
            s(&policy_path),
            "--ca",
            s(&cert),
        ],
    ));

    let untrusting = serve(&exe(), dir, &models, &sim, &kbs, &[]);
    let (_, reason) = wait_for(&untrusting, &root, "demo", is_waiting);
    assert!(reason.to_lowercase().contains("certificate"), "{reason}");
    drop(untrusting);
    let trusting = serve(&exe(), dir, &models, &sim, &kbs, &["--kbs-ca", s(&cert)]);
    wait_for(&trusting, &root, "demo", is_ready);
    infer_demo(&trusting, dir, &root, "demo");
}

/// The broker's lease reaches the running server: a removed model stops being served within
/// half a lease (when the server confirms it), and its sealed key is deleted.
#[test]
fn a_revoked_key_stops_a_running_server() {
    let DemoHost {
        tmp,
        sim,
        root,
        models,
        demo_key,
    } = demo_host();
    let dir = tmp.path();
    let owner = Owner::init(dir);
    let broker = owner.serve("127.0.0.1:0", &[]);
    let ours = mrenclave_of(&exe());
    let leased = policy(&root, &[&ours], "lease = \"4s\"");
    owner.add_model(&broker.url, "demo", &demo_key, &leased);
    let server = serve(&exe(), dir, &models, &sim, &broker.url, &[]);
    wait_for(&server, &root, "demo", is_ready);
    infer_demo(&server, dir, &root, "demo");
    let sealed = models.join("demo.cloak.sealed-key");
    wait_for_file(&sealed);
    assert!(sealed.exists());

    // The lease is confirmed while the broker still releases the key: past its first end, the
    // model is still served.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(index(&server.url, &root)["demo"].0, "READY");
    let granted = releases(&owner.audit(&broker.url), "demo")
        .into_iter()
        .filter(|(decision, ..)| decision == "granted")
        .count();
    assert!(
        granted >= 2,
        "the lease was not confirmed: {granted} releases"
    );

    // The owner removes the model: within half a lease the server stops serving it.
    ok(&owner.admin(&broker.url, "remove-model", &["--name", "demo"]));
    let removed = Instant::now();
    let (state, reason) = wait_for(&server, &root, "demo", |state, _| state != "READY");
    assert!(
        removed.elapsed() < Duration::from_secs(4),
        "revocation took {:?}",
        removed.elapsed()
    );
    assert_eq!(state, "UNAVAILABLE");
    assert!(reason.ends_with("(key-revoked)"), "{reason}");
    assert!(!sealed.exists(), "the revoked key stayed sealed on disk");
}

/// While the broker is unreachable a leased key serves until its lease ends, then stops; a
/// sealed key put back after its lease ended is not used at the next start.
#[test]
fn an_unconfirmed_lease_ends_and_an_old_sealed_key_does_not_revive_it() {
    let DemoHost {
        tmp,
        sim,
        root,
        models,
        demo_key,
    } = demo_host();
    let dir = tmp.path();
    let owner = Owner::init(dir);
    let broker = owner.serve("127.0.0.1:0", &[]);
    let kbs = broker.url.clone();
    let ours = mrenclave_of(&exe());
    owner.add_model(
        &kbs,
        "demo",
        &demo_key,
        &policy(&root, &[&ours], "lease = \"6s\""),
    );
    // Timed from before the server starts: its lease begins after this, whenever the server
    // gets it, and how long the test takes to see it ready does not shorten what is measured.
    let started = Instant::now();
    let server = serve(&exe(), dir, &models, &sim, &kbs, &[]);
    wait_for(&server, &root, "demo", is_ready);
    let sealed = models.join("demo.cloak.sealed-key");
    let kept = dir.join("kept.sealed-key");
    wait_for_file(&sealed);
    std::fs::copy(&sealed, &kept).unwrap();

    // The broker goes away: the model is served until the lease ends, not after.
    drop(broker);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(index(&server.url, &root)["demo"].0, "READY");
    let (state, reason) = wait_for(&server, &root, "demo", |state, _| state != "READY");
    // Started, then released a 6 s lease, served, stopped: at least the lease (less the
    // server's margin), and not much beyond it (start-up and polling, generous under load).
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_secs(5) && lasted < Duration::from_secs(15),
        "served for {lasted:?} under a 6 s lease"
    );
    assert_eq!(state, "UNAVAILABLE");
    assert!(reason.contains("key-lease-expired"), "{reason}");
    assert!(!sealed.exists());
    drop(server);

    // The host puts the old sealed key back and restarts the server: its lease has ended.
    std::fs::copy(&kept, &sealed).unwrap();
    let server = serve(&exe(), dir, &models, &sim, &kbs, &[]);
    let (state, reason) = wait_for(&server, &root, "demo", |_, reason| {
        reason.contains("lease ended")
    });
    assert_eq!(state, "UNAVAILABLE");
    assert!(reason.contains("key-lease-expired"), "{reason}");
}

/// Waits (up to 10 s) for `path` to exist: a server seals a released key to disk as it serves
/// the model, not necessarily before it reports the model ready.
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A restart is when a host can present a sealed key the broker has since revoked: a server
/// that starts from a sealed key serves it while it confirms the lease at once, not when half
/// of a long lease is left, so a removal reaches it within seconds — whichever sealed file the
/// host puts back.
#[test]
fn a_restarted_server_confirms_its_sealed_lease_at_once() {
    let DemoHost {
        tmp,
        sim,
        root,
        models,
        demo_key,
    } = demo_host();
    let dir = tmp.path();
    let owner = Owner::init(dir);
    let broker = owner.serve("127.0.0.1:0", &[]);
    let ours = mrenclave_of(&exe());
    owner.add_model(
        &broker.url,
        "demo",
        &demo_key,
        &policy(&root, &[&ours], "lease = \"1h\""),
    );
    let server = serve(&exe(), dir, &models, &sim, &broker.url, &[]);
    wait_for(&server, &root, "demo", is_ready);
    let sealed = models.join("demo.cloak.sealed-key");
    let kept = dir.join("kept.sealed-key");
    // Stopped only once the key is sealed: killed earlier, it would have sealed nothing.
    wait_for_file(&sealed);
    drop(server);
    std::fs::copy(&sealed, &kept).unwrap();

    // Restarted while the key is granted: served from the sealed key, and confirmed at once
    // (a second granted release, though the lease has most of an hour left).
    let granted = || {
        releases(&owner.audit(&broker.url), "demo")
            .into_iter()
            .filter(|(decision, ..)| decision == "granted")
            .count()
    };
    assert_eq!(granted(), 1);
    let server = serve(&exe(), dir, &models, &sim, &broker.url, &[]);
    wait_for(&server, &root, "demo", is_ready);
    let deadline = Instant::now() + Duration::from_secs(20);
    while granted() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(granted(), 2, "the sealed lease was not confirmed at start");
    drop(server);

    ok(&owner.admin(&broker.url, "remove-model", &["--name", "demo"]));
    for _ in 0..2 {
        // The host restores the sealed key from before the removal (its lease has most of an
        // hour left) and restarts the server.
        std::fs::copy(&kept, &sealed).unwrap();
        let started = Instant::now();
        let server = serve(&exe(), dir, &models, &sim, &broker.url, &[]);
        let (state, _) = wait_for(&server, &root, "demo", |_, reason| {
            reason.contains("key-revoked")
        });
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "revocation took {:?}",
            started.elapsed()
        );
        assert_eq!(state, "UNAVAILABLE");
        assert!(!sealed.exists(), "the revoked key stayed sealed on disk");
    }
}

/// Two broker replicas on one PostgreSQL database act as one broker: a model added at one is
/// released by the other; when the replica a server uses dies, its lease is confirmed through
/// the other (`--kbs` twice); a removal there reaches the running server; and every replica
/// shows the same audit chain, which verifies. Without a master key beside the database, init and serve
/// say what to give.
#[test]
fn two_broker_replicas_on_postgres_act_as_one() {
    let Some(cluster) = cloak_test_support::postgres::TempPostgres::start() else {
        return;
    };
    let url = cluster.database("kbs");
    let DemoHost {
        tmp,
        sim,
        root,
        models,
        demo_key,
    } = demo_host();
    let dir = tmp.path();

    let without_key = cloak(&[
        "kbs",
        "init",
        "--db",
        &url,
        "--admin-token-out",
        s(&dir.join("t")),
    ]);
    assert_eq!(without_key.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&without_key.stderr).contains("--master-key-out"),
        "{without_key:?}"
    );
    let owner = Owner::init_postgres(dir, &url);
    let no_key = cloak(&["kbs", "serve", "--db", &url, "--listen", "127.0.0.1:0"]);
    assert_eq!(no_key.status.code(), Some(2), "{no_key:?}");

    let a = owner.serve("127.0.0.1:0", &[]);
    let b = owner.serve("127.0.0.1:0", &[]);
    let ours = mrenclave_of(&exe());
    owner.add_model(
        &a.url,
        "demo",
        &demo_key,
        &policy(&root, &[&ours], "lease = \"4s\""),
    );
    // The server knows both replicas (and first asks the one about to die).
    let server = serve(&exe(), dir, &models, &sim, &a.url, &["--kbs", &b.url]);
    wait_for(&server, &root, "demo", is_ready);
    infer_demo(&server, dir, &root, "demo");

    // Replica a dies: the 4 s lease is confirmed through b, past its end.
    drop(a);
    let granted_before = releases(&owner.audit(&b.url), "demo").len();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(index(&server.url, &root)["demo"].0, "READY");
    assert!(releases(&owner.audit(&b.url), "demo").len() > granted_before);

    ok(&owner.admin(&b.url, "remove-model", &["--name", "demo"]));
    let removed = Instant::now();
    let (state, reason) = wait_for(&server, &root, "demo", |state, _| state != "READY");
    assert!(removed.elapsed() < Duration::from_secs(4));
    assert_eq!(state, "UNAVAILABLE");
    assert!(reason.ends_with("(key-revoked)"), "{reason}");

    // A replica started on the same database shows the same chain (which its audit verifies).
    let c = owner.serve("127.0.0.1:0", &[]);
    let (from_b, from_c) = (owner.audit(&b.url), owner.audit(&c.url));
    assert_eq!(from_b, from_c);
    let events: Vec<&str> = from_b
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    assert_eq!(events.first(), Some(&"add-model"));
    assert_eq!(events.last(), Some(&"remove-model"));
    assert!(
        releases(&from_b, "demo")
            .iter()
            .any(|(decision, ..)| decision == "granted")
    );
}

/// A model whose owner names a token key is served only with a token that key signed: for that
/// model, within its quota; a token the host mints with a key of its own gets nothing.
#[test]
fn only_the_owners_tokens_open_a_model() {
    let DemoHost {
        tmp,
        sim,
        root,
        models,
        demo_key,
    } = demo_host();
    let dir = tmp.path();
    let owner = Owner::init(dir);
    let signing = dir.join("owner.tokenkey");
    let out = cloak(&["token", "keygen", "--out", s(&signing)]);
    ok(&out);
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let broker = owner.serve("127.0.0.1:0", &[]);
    let ours = mrenclave_of(&exe());
    let extra = format!("token_key = \"{public}\"");
    owner.add_model(
        &broker.url,
        "demo",
        &demo_key,
        &policy(&root, &[&ours], &extra),
    );
    let server = serve(&exe(), dir, &models, &sim, &broker.url, &[]);
    wait_for(&server, &root, "demo", is_ready);

    let request = dir.join("request.json");
    std::fs::write(
        &request,
        r#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.5,-1.0,2.0,3.0]}]}"#,
    )
    .unwrap();
    let infer = |token: Option<&Path>| {
        let mut line = format!(
            "infer {} --model demo --input {} --trust-root {} --expect-mrenclave {ours} \
             --allow-status OutOfDate --json",
            server.url,
            s(&request),
            s(&root)
        );
        if let Some(token) = token {
            line.push_str(&format!(" --token-file {}", s(token)));
        }
        let out = cloak_line(&line);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let issue = |key: &Path, model: &str, name: &str, extra: &[&str]| {
        let path = dir.join(name);
        let mut args = vec![
            "token",
            "issue",
            "--key",
            s(key),
            "--model",
            model,
            "--expires-in",
            "1h",
            "--out",
            s(&path),
        ];
        args.extend_from_slice(extra);
        ok(&cloak(&args));
        path
    };

    // No token: refused, before any inference.
    let (code, stderr) = infer(None);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("token-missing"), "{stderr}");
    // The owner's token, quota 2: two inferences, then no more.
    let two = issue(&signing, "demo", "two.token", &["--quota", "2"]);
    assert_eq!(infer(Some(&two)).0, Some(0));
    assert_eq!(infer(Some(&two)).0, Some(0));
    let (_, stderr) = infer(Some(&two));
    assert!(stderr.contains("token-quota-exhausted"), "{stderr}");
    // Inside an encapsulated request the token reaches the enclave as well (and only it).
    let sealed = issue(&signing, "demo", "sealed.token", &[]);
    let encapsulated = format!(
        "infer {} --mode ohttp --model demo --input {} --trust-root {} --expect-mrenclave {ours} \
         --allow-status OutOfDate --json --token-file {}",
        server.url,
        s(&request),
        s(&root),
        s(&sealed)
    );
    ok(&cloak_line(&encapsulated));
    // A token for another model, and one the host signs with a key of its own: refused.
    let other = issue(&signing, "other", "other.token", &[]);
    assert!(infer(Some(&other)).1.contains("token-wrong-model"));
    let host_key = dir.join("host.tokenkey");
    ok(&cloak(&["token", "keygen", "--out", s(&host_key)]));
    let forged = issue(&host_key, "demo", "forged.token", &[]);
    assert!(infer(Some(&forged)).1.contains("token-signature"));
}

/// `cloak serve` as a replica of fleet `fleet` listening on `port`, logging into `dir`, with its
/// own copy of the models in `models`.
fn replica(dir: &Path, models: &Path, sim: &Path, port: u16, brokers: &[&str]) -> Spawned {
    replica_of(&exe(), dir, models, sim, port, brokers)
}

/// [`replica`], run from the binary `exe`.
fn replica_of(
    exe: &Path,
    dir: &Path,
    models: &Path,
    sim: &Path,
    port: u16,
    brokers: &[&str],
) -> Spawned {
    replica_in(exe, "web", dir, models, sim, port, brokers)
}

/// [`replica_of`], in fleet `fleet`.
fn replica_in(
    exe: &Path,
    fleet: &str,
    dir: &Path,
    models: &Path,
    sim: &Path,
    port: u16,
    brokers: &[&str],
) -> Spawned {
    let own_models = dir.join("models");
    if !own_models.exists() {
        std::fs::create_dir_all(&own_models).unwrap();
        for entry in std::fs::read_dir(models).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "cloak") {
                std::fs::copy(&path, own_models.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec![
        "serve",
        "--model-dir",
        s(&own_models),
        "--listen",
        &listen,
        "--platform",
        "sim",
        "--sim-dir",
        s(sim),
        "--kbs-max-backoff",
        "1",
        "--fleet",
        fleet,
        "--fleet-refresh",
        "1s",
    ];
    for broker in brokers {
        args.extend(["--kbs", broker]);
    }
    let log = dir.join(format!(
        "server-{}.log",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    spawn(exe, &args, &log, "cloak serve: listening on ")
}

/// nginx round-robin over `upstreams` (host:port), terminating TLS, passing a request on to
/// the next replica when one is down or has no fleet key yet; `None` without nginx.
fn round_robin(dir: &Path, upstreams: &[String]) -> Option<cloak_test_support::nginx::Nginx> {
    let servers: String = upstreams
        .iter()
        .map(|u| format!("        server {u} max_fails=0;\n"))
        .collect();
    cloak_test_support::nginx::start(dir, |r, port| {
        format!(
            r#"    access_log {r}/access.log;
    upstream replicas {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {r}/lb.pem;
        ssl_certificate_key {r}/lb.key;
        location / {{
            proxy_pass https://replicas;
            proxy_ssl_verify off;
            proxy_ssl_protocols TLSv1.3;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_connect_timeout 2s;
        }}
    }}"#
        )
    })
}

/// A data owner's policy: the simulation root at `root`, this build's MRENCLAVE.
fn pinned_policy(root: &Path) -> cloak_attest::policy::AppraisalPolicy {
    cloak_test_support::sim::policy_trusting(
        std::fs::read(root).unwrap(),
        cloak_test_support::sim::measurement_of(&exe()),
    )
    .allow_tcb_status("OutOfDate".parse().unwrap())
}

/// Successful inferences the replica at `url` counts in its metrics.
fn inferences_served(url: &str, root: &Path) -> u64 {
    cloak_test_support::block_on(async {
        let client = observer(url, root).await;
        let metrics = String::from_utf8(client.get("/metrics").await.unwrap().body).unwrap();
        metrics
            .lines()
            .filter(|l| l.starts_with("cloak_inference_requests_total{") && l.contains("success"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    })
}

/// Waits until the replica at `url` claims the fleet key with id `key_id`.
fn wait_for_fleet_key(url: &str, root: &Path, key_id: u8) -> cloak_client::IdentityClaims {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let claims = fetch_claims(url, root);
        let config = cloak_crypto::ohttp::KeyConfig::parse(&claims.hpke_key_config).unwrap();
        if claims.fleet.as_deref() == Some("web") && config.key_id == key_id {
            return claims;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never claimed fleet key {key_id}: {claims:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The fleet as users run it: PostgreSQL, two broker replicas, three `cloak serve` replicas
/// of one fleet behind nginx round-robin (TLS-terminating, untrusted). Every encrypted request
/// through nginx — from the SDK, which appraised one replica, and from `cloak infer --mode
/// ohttp` — succeeds with a receipt verified against the replica that answered; every replica
/// answers some; a replica and a broker killed mid-run lose no request, and the replica,
/// restarted, gets its keys through the surviving broker. Then the fleet key is rotated: the
/// client that holds the old key configuration goes on being answered, re-appraising once the
/// old generation is retired.
#[test]
fn a_fleet_behind_round_robin_nginx_answers_every_request() {
    let Some(cluster) = cloak_test_support::postgres::TempPostgres::start() else {
        return;
    };
    let url = cluster.database("kbs");
    let DemoHost {
        tmp,
        sim,
        root,
        models,
        demo_key,
    } = demo_host();
    let dir = tmp.path();
    let owner = Owner::init_postgres(dir, &url);
    let a = owner.serve("127.0.0.1:0", &["--fleet-propagation", "3s"]);
    let b = owner.serve("127.0.0.1:0", &["--fleet-propagation", "3s"]);
    let ours = mrenclave_of(&exe());
    let release_policy = policy(&root, &[&ours], "");
    owner.add_model(&a.url, "demo", &demo_key, &release_policy);
    let fleet_policy = dir.join("fleet.policy.toml");
    std::fs::write(&fleet_policy, &release_policy).unwrap();
    let out = owner.admin(
        &b.url,
        "add-fleet",
        &["--name", "web", "--policy", s(&fleet_policy)],
    );
    ok(&out);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["advertise"], 1, "{status}");
    let first_key_id = cloak_proto::kbs::fleet::fleet_key_id(1);

    let ports: Vec<u16> = (0..3)
        .map(|_| cloak_test_support::process::free_port())
        .collect();
    let broker_urls = [a.url.clone(), b.url.clone()];
    let brokers = [broker_urls[0].as_str(), broker_urls[1].as_str()];
    let replica_dir = |i: usize| {
        let d = dir.join(format!("replica-{i}"));
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let mut replicas: Vec<Option<Spawned>> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| Some(replica(&replica_dir(i), &models, &sim, *port, &brokers)))
        .collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("https://127.0.0.1:{p}"))
        .collect();
    let mut evidence = std::collections::HashSet::new();
    for (i, replica) in replicas.iter().enumerate() {
        wait_for(replica.as_ref().unwrap(), &root, "demo", is_ready);
        let claims = wait_for_fleet_key(&urls[i], &root, first_key_id);
        evidence.insert(claims.evidence_digest());
    }
    // One key configuration, three enclaves (each its own TLS and receipt keys).
    assert_eq!(evidence.len(), 3);
    let configs: std::collections::HashSet<Vec<u8>> = urls
        .iter()
        .map(|u| fetch_claims(u, &root).hpke_key_config)
        .collect();
    assert_eq!(configs.len(), 1);

    let upstreams: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let Some(lb) = round_robin(dir, &upstreams) else {
        return;
    };
    let (lb_url, lb_ca) = (lb.url.clone(), lb.ca.clone());
    let request = br#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.5,-1.0,2.0,3.0]}]}"#;

    // The data owner's SDK through nginx: it appraises whichever replica nginx picks, then
    // every answer carries a receipt verified against the replica that signed it.
    let client = cloak_test_support::block_on(async {
        cloak_client::Client::builder()
            .policy(pinned_policy(&root))
            .mode(cloak_client::Mode::Encapsulated)
            .transport(
                cloak_client::Transport::with_ca_pem(&std::fs::read(&lb_ca).unwrap()).unwrap(),
            )
            .connect(&lb_url)
            .await
            .unwrap()
    });
    let send = |n: usize| {
        cloak_test_support::block_on(async {
            for i in 0..n {
                let (response, receipt) = client
                    .send_inference("/v2/models/demo/infer", request.to_vec(), None)
                    .await
                    .unwrap_or_else(|e| panic!("request {i}: {e} ({})", e.code()));
                assert_eq!(response.status, 200);
                assert!(receipt.is_some());
            }
        });
    };
    send(100);
    let before: Vec<u64> = urls.iter().map(|u| inferences_served(u, &root)).collect();
    assert!(
        before.iter().all(|n| *n > 0),
        "not every replica answered: {before:?}"
    );

    // A replica and a broker die while requests are in flight: none fails (nginx passes a
    // request the dead replica did not answer on to the next; the SDK re-appraises if the
    // replica it appraised is the one that died).
    std::thread::scope(|scope| {
        let sending = scope.spawn(|| send(100));
        std::thread::sleep(Duration::from_millis(300));
        replicas[1] = None;
        drop(a);
        sending.join().unwrap();
    });
    // The replica comes back, and its keys come through the surviving broker.
    replicas[1] = Some(replica(&replica_dir(1), &models, &sim, ports[1], &brokers));
    wait_for(replicas[1].as_ref().unwrap(), &root, "demo", is_ready);
    wait_for_fleet_key(&urls[1], &root, first_key_id);
    send(80);
    assert!(
        inferences_served(&urls[1], &root) > 0,
        "the restarted replica answered nothing"
    );

    // `cloak infer --mode ohttp` through nginx: a new appraisal each time, answered by any
    // replica, the receipt and the answering replica's attestation kept verify offline.
    let request_file = dir.join("fleet-request.json");
    std::fs::write(&request_file, request).unwrap();
    let trust_root = s(&root).to_owned();
    for i in 0..20 {
        let receipt = dir.join(format!("receipt-{i}.txt"));
        let attestation = dir.join(format!("attestation-{i}.json"));
        ok(&cloak(&[
            "infer",
            &lb_url,
            "--mode",
            "ohttp",
            "--ca",
            s(&lb_ca),
            "--model",
            "demo",
            "--input",
            s(&request_file),
            "--json",
            "--trust-root",
            &trust_root,
            "--expect-mrenclave",
            &ours,
            "--allow-status",
            "OutOfDate",
            "--receipt-out",
            s(&receipt),
            "--attestation-out",
            s(&attestation),
        ]));
        ok(&cloak(&[
            "receipt",
            "verify",
            s(&receipt),
            "--attestation",
            s(&attestation),
            "--trust-root",
            &trust_root,
            "--expect-mrenclave",
            &ours,
            "--allow-status",
            "OutOfDate",
        ]));
    }

    // Rotation with overlap: generation 2 is fetched by every replica but advertised only
    // after the propagation time; the SDK client, holding generation 1's configuration, is
    // answered throughout, and after generation 1 is retired it re-appraises once and goes on.
    ok(&owner.admin(&b.url, "rotate-fleet", &["--name", "web"]));
    let second_key_id = cloak_proto::kbs::fleet::fleet_key_id(2);
    for u in &urls {
        wait_for_fleet_key(u, &root, second_key_id);
    }
    send(10);
    ok(&owner.admin(&b.url, "rotate-fleet", &["--name", "web"]));
    let third_key_id = cloak_proto::kbs::fleet::fleet_key_id(3);
    for u in &urls {
        wait_for_fleet_key(u, &root, third_key_id);
    }
    // Generation 1 is gone from every replica: the stale client re-appraises and carries on.
    send(10);
    let old = client.appraisal();
    let config =
        cloak_crypto::ohttp::KeyConfig::parse(&old.server().claims().hpke_key_config).unwrap();
    assert_eq!(config.key_id, third_key_id);
    // 320 requests answered, each counted by the replica that ran it; the killed replica's
    // count died with it: what it ran before the first count is added back, what it ran in the
    // batch it died in (at most 100) is not.
    let served: u64 = urls.iter().map(|u| inferences_served(u, &root)).sum();
    let counted = served + before[1];
    assert!((220..=320).contains(&counted), "{served} {before:?}");
}

/// A replica the broker's fleet policy admits but the data owner's policy does not is never
/// trusted by that owner's client: its answers are refused when its attestation fails the
/// client's policy, while a client whose policy admits both is answered by both.
#[test]
fn an_answer_from_a_replica_outside_the_clients_policy_is_refused() {
    let DemoHost {
        tmp,
        sim,
        root,
        models,
        demo_key,
    } = demo_host();
    let dir = tmp.path();
    let owner = Owner::init(dir);
    let broker = owner.serve("127.0.0.1:0", &[]);
    let rebuilt = rebuild(dir);
    let (ours, theirs) = (mrenclave_of(&exe()), mrenclave_of(&rebuilt));
    let both = policy(&root, &[&ours, &theirs], "");
    owner.add_model(&broker.url, "demo", &demo_key, &both);
    let fleet_policy = dir.join("fleet.policy.toml");
    std::fs::write(&fleet_policy, &both).unwrap();
    ok(&owner.admin(
        &broker.url,
        "add-fleet",
        &["--name", "web", "--policy", s(&fleet_policy)],
    ));
    let ports = [
        cloak_test_support::process::free_port(),
        cloak_test_support::process::free_port(),
    ];
    let (one, two) = (dir.join("one"), dir.join("two"));
    std::fs::create_dir_all(&one).unwrap();
    std::fs::create_dir_all(&two).unwrap();
    let brokers = [broker.url.as_str()];
    let ours_replica = replica(&one, &models, &sim, ports[0], &brokers);
    let their_replica = replica_of(&rebuilt, &two, &models, &sim, ports[1], &brokers);
    for (server, port) in [(&ours_replica, ports[0]), (&their_replica, ports[1])] {
        wait_for(server, &root, "demo", is_ready);
        let url = format!("https://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while fetch_claims(&url, &root).fleet.is_none() {
            assert!(Instant::now() < deadline, "no fleet key at {url}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Ready means holding the fleet key: a replica of a fleet the broker does not know serves
    // its model but is not ready, so a balancer's health check keeps clients away.
    for port in ports {
        assert_eq!(
            health_ready(&format!("https://127.0.0.1:{port}"), &root),
            200
        );
    }
    let lost_dir = dir.join("lost");
    std::fs::create_dir_all(&lost_dir).unwrap();
    let lost_port = cloak_test_support::process::free_port();
    let lost = replica_in(
        &exe(),
        "nosuch",
        &lost_dir,
        &models,
        &sim,
        lost_port,
        &brokers,
    );
    wait_for(&lost, &root, "demo", is_ready);
    assert_eq!(health_ready(&lost.url, &root), 503);
    drop(lost);
    let upstreams: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let Some(lb) = round_robin(dir, &upstreams) else {
        return;
    };
    let (lb_url, lb_ca) = (lb.url.clone(), lb.ca.clone());
    let request = br#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[0.5,-1.0,2.0,3.0]}]}"#;
    let ca = std::fs::read(&lb_ca).unwrap();
    // Four requests from a client with `policy`, appraising (through nginx) until it reaches
    // a replica the policy accepts; the codes of the failed ones.
    let failures = |policy: cloak_attest::policy::AppraisalPolicy| {
        cloak_test_support::block_on(async {
            let mut client = None;
            for _ in 0..4 {
                if let Ok(c) = cloak_client::Client::builder()
                    .policy(policy.clone())
                    .mode(cloak_client::Mode::Encapsulated)
                    .transport(cloak_client::Transport::with_ca_pem(&ca).unwrap())
                    .connect(&lb_url)
                    .await
                {
                    client = Some(c);
                    break;
                }
            }
            let client = client.expect("no replica the policy accepts was reached");
            let mut codes = Vec::new();
            for _ in 0..4 {
                match client
                    .send_inference("/v2/models/demo/infer", request.to_vec(), None)
                    .await
                {
                    Ok((response, receipt)) => {
                        assert_eq!(response.status, 200);
                        assert!(receipt.is_some());
                    }
                    Err(e) => codes.push(e.code()),
                }
            }
            codes
        })
    };
    let root_der = std::fs::read(&root).unwrap();
    let only_ours = pinned_policy(&root);
    let mut both_policy =
        only_ours
            .clone()
            .with_sgx_identity(cloak_attest::policy::SgxIdentityPolicy {
                mrenclave: Some(
                    [&ours, &theirs]
                        .iter()
                        .map(|m| m.parse().unwrap())
                        .collect(),
                ),
                ..cloak_attest::policy::SgxIdentityPolicy::default()
            });
    both_policy = both_policy.with_trust_root(cloak_attest::policy::TrustRootPolicy::Der(root_der));
    assert_eq!(failures(both_policy), Vec::<&str>::new());
    let refused = failures(only_ours);
    assert!(!refused.is_empty(), "every answer was accepted");
    assert!(
        refused.iter().all(|code| *code == "measurement-mismatch"),
        "{refused:?}"
    );
}

/// The status of `GET /v2/health/ready` at the server at `url`.
fn health_ready(url: &str, root: &Path) -> u16 {
    cloak_test_support::block_on(async {
        let client = observer(url, root).await;
        client.get("/v2/health/ready").await.unwrap().status
    })
}

/// The claims of the server at `url` as an observer reads them.
fn fetch_claims(url: &str, root: &Path) -> cloak_client::IdentityClaims {
    cloak_test_support::block_on(async {
        let client = observer(url, root).await;
        client.appraisal().server().claims().clone()
    })
}

#[test]
fn an_azure_key_vault_release_policy_is_imported_or_refused_for_what_it_cannot_say() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cloak-attest/testdata/azure-maa/recorded/jwks.json");
    let skr = dir.path().join("skr.json");
    let mrenclave = "292a1f4b519e46627eb2478a3d9851405653c5b4b0a6925de843834d9216850e";
    let write_skr = |conditions: Value| {
        let policy = serde_json::json!({
            "version": "1.0.0",
            "anyOf": [{ "authority": "https://sharedwus.wus.attest.azure.net", "allOf": conditions }]
        });
        std::fs::write(&skr, serde_json::to_vec_pretty(&policy).unwrap()).unwrap();
    };
    write_skr(serde_json::json!([
        { "claim": "x-ms-sgx-mrenclave", "equals": mrenclave },
        { "claim": "x-ms-sgx-is-debuggable", "equals": false },
    ]));
    let out = dir.path().join("policy.toml");
    ok(&cloak(&[
        "kbs",
        "import-skr-policy",
        s(&skr),
        "--jwks",
        s(&jwks),
        "--out",
        s(&out),
    ]));
    let text = std::fs::read_to_string(&out).unwrap();
    let policy = cloak_kbs::policy::parse_policy_and_lease(&text).unwrap();
    assert_eq!(
        policy.azure_attestation.unwrap().issuer,
        "https://sharedwus.wus.attest.azure.net"
    );
    assert!(text.contains(mrenclave), "{text}");
    // Never over an existing file without --force.
    let again = cloak(&[
        "kbs",
        "import-skr-policy",
        s(&skr),
        "--jwks",
        s(&jwks),
        "--out",
        s(&out),
    ]);
    assert_eq!(again.status.code(), Some(2));
    // A condition a release policy cannot say: refused, by name, and nothing written.
    write_skr(serde_json::json!([
        { "claim": "x-ms-sgx-mrenclave", "equals": mrenclave },
        { "claim": "x-ms-sgx-svn", "equals": 2 },
    ]));
    let refused = dir.path().join("refused.toml");
    let result = cloak(&[
        "kbs",
        "import-skr-policy",
        s(&skr),
        "--jwks",
        s(&jwks),
        "--out",
        s(&refused),
    ]);
    assert_eq!(result.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("x-ms-sgx-svn equals"), "{stderr}");
    assert!(!refused.exists());
}
