//! `cloak demo`: the whole multi-party flow on embedded defaults, in one process, through the
//! same libraries as the real commands.
//!
//! A simulated SGX platform stands in for the hardware. The model owner seals a small ONNX
//! classifier, runs a key broker and registers the model's key with a release policy that pins
//! the server's measurement; a second model's policy pins another build, so its release is
//! refused. The host runs the inference server, which obtains the first key from the broker by
//! remote attestation. A data owner appraises the server, sends encrypted (Oblivious HTTP)
//! requests, and checks each answer's signed receipt, online and again offline against the
//! recorded attestation. Everything is stopped and, unless `--dir` is given, removed at the end.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AppraisalPolicy, SgxIdentityPolicy, TrustRootPolicy};
use cloak_attest::types::Measurement;
use cloak_client::{Client, Method, Mode, appraise_recorded_attestation};
use cloak_crypto::container::{self, ModelName, SealOptions};
use cloak_crypto::key::ModelKey;
use cloak_kbs::http::RateLimit;
use cloak_kbs::{Broker, BrokerConfig, MasterKey, MasterKeySource, SqliteStore, SystemClock};
use cloak_proto::kserve::{InferRequest, InferResponse, Limits, NamedTensor, TensorEncoding};
use cloak_proto::receipt::Receipt;
use cloak_proto::tensor::Tensor;
use cloak_server::{KbsConfig, PreparedServer, ServerConfig};
use cloak_tee::Platform;
use cloak_tee::sim::{SimConfig, SimPlatform, executable_measurement};

use crate::Reported;
use crate::failure::Failure;

/// The model the demo serves: a small ONNX classifier (see `scripts/make-demo-model.py`).
const DEMO_MODEL: &[u8] = include_bytes!("../../assets/demo-mlp.onnx");
/// The model whose release policy pins another build.
const REFUSED_MODEL: &str = "demo-mlp-next";
/// How long the demo waits for the broker to release the key.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `cloak demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo's files in DIR (created if needed; must be empty) instead of a temporary
    /// directory that is removed at the end
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Runs the demo.
pub(crate) fn run(args: &DemoArgs) -> Result<(), Reported> {
    let started = Instant::now();
    let workspace = Workspace::new(args.dir.as_deref())?;
    say!("Cloak demo — working in {}\n", workspace.root.display())?;
    let runtime = crate::runtime::multi_thread()?;
    let result = runtime.block_on(steps(&workspace.root));
    // Nothing keeps running: the server and broker stopped inside `steps`; the runtime's
    // remaining tasks end here.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => {
            say!(
                "\nDone in {:.1} s; the server and the broker are stopped.",
                started.elapsed().as_secs_f64()
            )?;
            Ok(())
        }
        Err(failure) => {
            eprintln!("\ndemo failed: {failure}");
            Err(Reported(failure.exit_code()))
        }
    }
}

/// What the demo shows, in order.
async fn steps(root: &Path) -> Result<(), Failure> {
    let owner = root.join("model-owner");
    let host = root.join("host");
    let models = host.join("models");
    let sim_dir = root.join("sim");
    for dir in [&owner, &host, &models] {
        fs::create_dir(dir).map_err(|e| Failure::io("create directory", dir, &e))?;
    }

    say!("1. A simulated SGX platform stands in for the hardware (same quote format, own root)")?;
    let sim = SimPlatform::init(&sim_dir, &SimConfig::up_to_date()).map_err(demo_error)?;
    let mrenclave = executable_measurement().map_err(demo_error)?;
    let mut other_build = mrenclave;
    other_build[0] ^= 0xff;
    say!(
        "   the server enclave (this build of cloak) measures MRENCLAVE {}\n",
        hex::encode(mrenclave)
    )?;

    say!("2. The model owner seals the model: keys never leave the owner except to an enclave")?;
    let key = seal(&models, "demo-mlp")?;
    let refused_key = seal(&models, REFUSED_MODEL)?;
    let stored = fs::read(models.join("demo-mlp.cloak"))
        .map_err(|e| Failure::io("read", &models.join("demo-mlp.cloak"), &e))?;
    if DEMO_MODEL
        .windows(16)
        .any(|w| stored.windows(16).any(|s| s == w))
    {
        return Err(Failure::verification_in_demo(
            "the container holds a run of the model's bytes in clear",
        ));
    }
    say!(
        "   demo-mlp ({} bytes) and {REFUSED_MODEL} sealed into host/models/ (AES-256-GCM; no \
         16-byte run of the model in the container)\n",
        DEMO_MODEL.len()
    )?;

    say!("3. The model owner runs a key broker and registers both keys with release policies")?;
    let broker = start_broker(&owner).await?;
    let root_sha256 = hex::encode(cloak_crypto::hash::sha256(sim.root_der()));
    let policy = |mrenclave: &[u8; 32]| {
        format!(
            "trust_root = \"sha256:{root_sha256}\"\n[sgx]\nmrenclave = [\"{}\"]\n",
            hex::encode(mrenclave)
        )
    };
    broker.add_model("demo-mlp", &key, &policy(&mrenclave))?;
    broker.add_model(REFUSED_MODEL, &refused_key, &policy(&other_build))?;
    say!(
        "   broker at {}: demo-mlp released only to MRENCLAVE {}…, {REFUSED_MODEL} only to \
         {}… (the next build)\n",
        broker.url,
        &hex::encode(mrenclave)[..16],
        &hex::encode(other_build)[..16]
    )?;

    say!("4. The untrusted host starts the server; it has containers but no keys")?;
    let platform: Arc<dyn Platform> = Arc::new(SimPlatform::open(&sim_dir).map_err(demo_error)?);
    let mut config = ServerConfig::new(models.clone(), loopback());
    let mut kbs = KbsConfig::new(&broker.url);
    kbs.max_backoff = Duration::from_millis(500);
    config.kbs = Some(kbs);
    let prepared = tokio::task::spawn_blocking(move || PreparedServer::prepare(config, platform))
        .await
        .map_err(|e| Failure::usage("demo", e.to_string()))?
        .map_err(demo_error)?;
    let server = prepared.start().await.map_err(demo_error)?;
    let url = format!("https://{}", server.local_addr());
    say!("   listening on {url}; the enclave asks the broker for keys with fresh quotes\n")?;

    say!("5. The data owner appraises the server before sending anything")?;
    let collateral = Collateral::from_json(&sim.collateral(unix_now()).map_err(demo_error)?)
        .map_err(demo_error)?;
    let data_owner_policy = AppraisalPolicy::strict()
        .with_trust_root(TrustRootPolicy::Der(sim.root_der().to_vec()))
        .with_sgx_identity(SgxIdentityPolicy {
            mrenclave: Some(vec![Measurement::from_bytes(mrenclave)]),
            ..SgxIdentityPolicy::default()
        });
    let client = wait_for_release(&url, &data_owner_policy, &collateral).await?;
    let appraisal = client.appraisal();
    let claims = appraisal.server().claims();
    let verified = appraisal.server().accepted().verified();
    say!(
        "   ACCEPTED: SIMULATED SGX enclave, MRENCLAVE pinned, TCB {}, fresh quote for a nonce",
        verified.tcb_status().as_str()
    )?;
    for model in &claims.models {
        say!(
            "   serves {} (plaintext sha256 {}…) — the key came from the broker",
            model.name,
            &hex::encode(model.sha256)[..16]
        )?;
    }
    let index = client
        .send(Method::Post, "/v2/repository/index", b"{}".to_vec(), None)
        .await
        .map_err(demo_error)?;
    let index: serde_json::Value = serde_json::from_slice(&index.body).map_err(demo_error)?;
    let refused = index
        .as_array()
        .and_then(|a| a.iter().find(|m| m["name"] == REFUSED_MODEL))
        .cloned()
        .unwrap_or_default();
    let reason = refused["reason"].as_str().unwrap_or_default();
    if !reason.contains("measurement-mismatch") {
        return Err(Failure::verification_in_demo(format!(
            "{REFUSED_MODEL} should be refused for its measurement, the index says {refused}"
        )));
    }
    say!(
        "   {REFUSED_MODEL}: {} — {reason}\n",
        refused["state"].as_str().unwrap_or("?")
    )?;

    say!("6. The data owner sends encrypted requests (Oblivious HTTP to the attested HPKE key)")?;
    let encrypted = Client::builder()
        .policy(data_owner_policy.clone())
        .collateral(collateral.clone())
        .mode(Mode::Encapsulated)
        .connect(&url)
        .await
        .map_err(demo_error)?;
    let rows = [
        [0.5f32, -1.0, 2.0, 0.25],
        [1.5, 0.5, -0.5, 1.0],
        [-2.0, 0.75, 0.1, -0.3],
    ];
    let mut last = None;
    for (i, row) in rows.iter().enumerate() {
        let tensor = Tensor::from_values(vec![1, 4], row).map_err(demo_error)?;
        let request = InferRequest::new(vec![NamedTensor::new("features", tensor)])
            .with_id(format!("demo-{}", i + 1));
        let body = request
            .encode(|_| TensorEncoding::Json)
            .map_err(demo_error)?;
        let (response, receipt) = encrypted
            .send_inference("/v2/models/demo-mlp/infer", body.body().to_vec(), None)
            .await
            .map_err(demo_error)?;
        let Some(receipt) = receipt else {
            return Err(Failure::usage(
                "demo",
                format!("the server answered {}", response.status),
            ));
        };
        let parsed = InferResponse::parse(&response.body, response.header_len, &Limits::default())
            .map_err(demo_error)?;
        let probabilities = parsed
            .outputs()
            .first()
            .and_then(|o| o.tensor().to_values::<f32>().ok())
            .unwrap_or_default();
        say!(
            "   {:?} -> {} (receipt {}… verified)",
            row,
            probabilities
                .iter()
                .map(|p| format!("{p:.3}"))
                .collect::<Vec<_>>()
                .join(" "),
            &receipt.request_id[..12]
        )?;
        last = Some((response, body.body().to_vec()));
    }
    say!("")?;

    say!("7. Later, anyone with the attestation checks a receipt offline")?;
    let (response, request_body) = last.ok_or_else(|| Failure::usage("demo", "no inference"))?;
    let text = response.receipt.clone().unwrap_or_default();
    let recorded = appraise_recorded_attestation(
        encrypted.appraisal().attestation(),
        &collateral,
        &data_owner_policy,
        unix_now(),
    )
    .map_err(demo_error)?;
    let receipt = Receipt::verify(&text, recorded.claims()).map_err(demo_error)?;
    let salt = response.receipt_salt;
    receipt
        .check_bodies(salt.as_ref(), &request_body, &response.body)
        .map_err(demo_error)?;
    say!(
        "   VALID: model {} answered request {} ({} digests: input {}…, output {}…)",
        receipt.model,
        receipt.request_id,
        receipt.digests.label(),
        &hex::encode(receipt.input_sha256)[..16],
        &hex::encode(receipt.output_sha256)[..16]
    )?;
    let mut forged = response.body.clone();
    if let Some(byte) = forged.iter_mut().rev().find(|b| b.is_ascii_digit()) {
        *byte = if *byte == b'9' { b'8' } else { *byte + 1 };
    }
    match receipt.check_response(salt.as_ref(), &forged) {
        Err(e) => say!(
            "   a response with one digit changed: rejected ({})\n",
            e.code()
        )?,
        Ok(()) => {
            return Err(Failure::verification_in_demo(
                "a changed response passed its receipt",
            ));
        }
    }

    server.shutdown().await;
    let audit = broker.audit()?;
    broker.stop().await;

    say!("What each party saw:")?;
    say!(
        "   model owner: its keys and policies, and the broker's audit log ({} records, chain \
         intact):",
        audit.records.len()
    )?;
    for record in audit.records.iter().filter(|r| r.event == "release") {
        say!(
            "     release {:<14} {:<8} {} MRENCLAVE {}…",
            record.model,
            record.decision,
            if record.reason.is_empty() || record.reason == record.decision {
                "-"
            } else {
                record.reason.as_str()
            },
            record
                .measurements
                .get("mrenclave")
                .map_or("?", |m| m.get(..16).unwrap_or(m))
        )?;
    }
    say!(
        "   host:        ciphertext containers, a sealed key file only this enclave can open, \
         request sizes; no key, model byte, input or output"
    )?;
    say!(
        "   broker:      quotes and measurements of the enclaves asking; released a key only to \
         the pinned build"
    )?;
    say!(
        "   data owner:  an appraised enclave (MRENCLAVE, TCB, models by digest), its outputs, \
         and a signed receipt for each"
    )?;
    let sealed = models.join("demo-mlp.cloak.sealed-key");
    if sealed.exists() {
        say!("   (host/models/demo-mlp.cloak.sealed-key lets a restart skip the broker)")?;
    }
    Ok(())
}

/// Seals the demo model as `name` into `dir/NAME.cloak`; returns its key.
fn seal(dir: &Path, name: &str) -> Result<ModelKey, Failure> {
    let key = ModelKey::generate().map_err(demo_error)?;
    let path = dir.join(format!("{name}.cloak"));
    let out = fs::File::create(&path).map_err(|e| Failure::io("create", &path, &e))?;
    let options = SealOptions::new(ModelName::new(name).map_err(demo_error)?);
    container::seal(&key, &options, DEMO_MODEL, out).map_err(demo_error)?;
    Ok(key)
}

/// Appraises the server until the broker's key has arrived (the claims name `demo-mlp`).
async fn wait_for_release(
    url: &str,
    policy: &AppraisalPolicy,
    collateral: &Collateral,
) -> Result<Client, Failure> {
    let deadline = Instant::now() + RELEASE_TIMEOUT;
    loop {
        let client = Client::builder()
            .policy(policy.clone())
            .collateral(collateral.clone())
            .connect(url)
            .await
            .map_err(demo_error)?;
        if client
            .appraisal()
            .server()
            .claims()
            .models
            .iter()
            .any(|m| m.name == "demo-mlp")
        {
            return Ok(client);
        }
        if Instant::now() > deadline {
            return Err(Failure::usage(
                "demo",
                "the broker did not release demo-mlp's key in time",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The model owner's broker, served on loopback in this process.
struct RunningBroker {
    url: String,
    broker: Arc<Broker>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    token: String,
}

async fn start_broker(owner: &Path) -> Result<RunningBroker, Failure> {
    let db = owner.join("kbs.db");
    let token_path = owner.join("kbs-admin.token");
    let master = cloak_kbs::default_master_key_path(&db);
    cloak_kbs::init(
        &cloak_kbs::Database::Sqlite(db.clone()),
        &token_path,
        MasterKeySource::CreateFile(master.clone()),
        unix_now(),
    )
    .map_err(demo_error)?;
    let token = fs::read_to_string(&token_path)
        .map_err(|e| Failure::io("read", &token_path, &e))?
        .trim()
        .to_owned();
    let master = MasterKey::read_file(&master).map_err(demo_error)?;
    let store = SqliteStore::open(&db).map_err(demo_error)?;
    let broker = Arc::new(
        Broker::open(
            Arc::new(store),
            &master,
            Arc::new(SystemClock),
            BrokerConfig::new(),
        )
        .map_err(demo_error)?,
    );
    let router = cloak_kbs::http::router(Arc::clone(&broker), RateLimit::new());
    let listener = tokio::net::TcpListener::bind(loopback())
        .await
        .map_err(demo_error)?;
    let url = format!("http://{}", listener.local_addr().map_err(demo_error)?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(cloak_kbs::http::serve(
        listener,
        None,
        router,
        cloak_kbs::http::ConnectionLimits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    Ok(RunningBroker {
        url,
        broker,
        stop,
        task,
        token,
    })
}

impl RunningBroker {
    fn add_model(&self, name: &str, key: &ModelKey, policy: &str) -> Result<(), Failure> {
        let request = cloak_proto::kbs::AddModelRequest {
            key: key.secret_bytes().to_vec(),
            policy: policy.to_owned(),
        };
        self.broker
            .add_model(Some(&self.token), "model-owner", name, request)
            .map_err(demo_error)
    }

    fn audit(&self) -> Result<cloak_proto::kbs::AuditResponse, Failure> {
        let audit = self
            .broker
            .audit(
                Some(&self.token),
                "model-owner",
                cloak_kbs::broker::AuditPage {
                    after: 0,
                    limit: cloak_kbs::broker::MAX_AUDIT_PAGE,
                    verify: true,
                },
            )
            .map_err(demo_error)?;
        if audit.verification.as_ref().is_some_and(|v| !v.intact) {
            return Err(Failure::verification_in_demo(
                "the broker's audit chain does not verify",
            ));
        }
        Ok(audit)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Any library error met while running the demo (exit status 2: the demo could not run).
fn demo_error(e: impl std::fmt::Display) -> Failure {
    Failure::usage("demo", e.to_string())
}

/// The directory the demo works in; a temporary one is removed on drop.
struct Workspace {
    root: PathBuf,
    temporary: bool,
}

impl Workspace {
    fn new(dir: Option<&Path>) -> Result<Self, Failure> {
        if let Some(dir) = dir {
            fs::create_dir_all(dir).map_err(|e| Failure::io("create directory", dir, &e))?;
            let mut entries =
                fs::read_dir(dir).map_err(|e| Failure::io("read directory", dir, &e))?;
            if entries.next().is_some() {
                return Err(Failure::usage(
                    "directory-not-empty",
                    format!("--dir {} must be empty", dir.display()),
                ));
            }
            return Ok(Self {
                root: dir.to_path_buf(),
                temporary: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let root = std::env::temp_dir().join(format!("cloak-demo-{}-{nanos}", std::process::id()));
        DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(|e| Failure::io("create directory", &root, &e))?;
        Ok(Self {
            root,
            temporary: true,
        })
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        if self.temporary {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}
