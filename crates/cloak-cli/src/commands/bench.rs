//! `cloak bench`: the confidentiality tax, measured side by side in one run on one machine.
//!
//! For each model: latency of the engine in process (the baseline), of the same request end to
//! end over attested TLS, and end to end as an encapsulated (Oblivious HTTP) request, each
//! answer's receipt verified as a client would; then throughput at several numbers of
//! concurrent clients. The three latency series alternate in blocks of [`BLOCK`] requests, so
//! that drift (frequency scaling, other load) hits them alike, and every timed request follows
//! one of its own kind, as in a client's series of requests and as the Python baseline
//! (`scripts/bench-tax.py`) runs. (Alternating request by request would not: each attested-TLS
//! request would follow an in-process run, with the server's threads idle for as long as an
//! inference takes — on a virtual machine, a wake-up of halted CPUs that the encapsulated
//! series, following an attested-TLS request, did not pay.) The server runs in this process on
//! the simulated platform, on loopback, with the model sealed and loaded as in production.
//! Encapsulated requests travel inside the server's TLS: one TLS pass each way, as a client's
//! request to a TLS-terminating balancer costs (the balancer's own work aside). `--ohttp-plain`
//! sends them to the server's plain-HTTP listener for them instead, as the balancer forwards
//! them: the share of the server and the client's HPKE, without the client's TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AppraisalPolicy, SgxIdentityPolicy, TrustRootPolicy};
use cloak_attest::types::Measurement;
use cloak_client::{Bytes, Client, Mode, Session};
use cloak_crypto::container::{self, ModelName, SealOptions};
use cloak_crypto::key::ModelKey;
use cloak_engine::{Dim, Engine, PreparedModel};
use cloak_proto::kserve::{InferRequest, NamedTensor, RequestedOutput, TensorEncoding};
use cloak_proto::tensor::{DataType, Tensor};
use cloak_server::cli::EngineArgs;
use cloak_server::{PreparedServer, RunningServer, ServerConfig};
use cloak_tee::Platform;
use cloak_tee::sim::{SimConfig, SimPlatform};
use serde::Serialize;

use crate::Reported;
use crate::args::parse_duration;
use crate::failure::Failure;

/// Requests of one kind in a row in the latency series (see the module documentation); each
/// block begins with one more, untimed, which follows a request of another kind. (`--iterations`'
/// help names this number.)
const BLOCK: usize = 10;

/// The models measured when none is given: a vision CNN and a transformer encoder, from the
/// model cache `scripts/fetch-models.py` fills.
const DEFAULT_MODELS: [&str; 2] = ["efficientnet-lite0.onnx", "minilm-l6.onnx"];

/// Arguments of `cloak bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// An ONNX model to measure; repeatable [default: EfficientNet-Lite0 and all-MiniLM-L6-v2
    /// from $CLOAK_MODEL_CACHE or .cache/models, as scripts/fetch-models.py leaves them]
    #[arg(long = "model", value_name = "FILE.onnx")]
    models: Vec<PathBuf>,
    /// Timed requests per latency series (after warm-up; the series alternate in blocks of
    /// 10); the p50s of a CNN on a shared host vary by a few percent at 50, about the size of
    /// the tax being measured
    #[arg(long, value_name = "N", default_value_t = 100)]
    iterations: usize,
    /// Untimed requests per series first
    #[arg(long, value_name = "N", default_value_t = 5)]
    warmup: usize,
    /// Numbers of concurrent clients for the throughput runs
    #[arg(long, value_name = "N,N,...", value_delimiter = ',', default_values_t = [1, 4, 16])]
    concurrency: Vec<usize>,
    /// How long each throughput run lasts (3s, 500ms; plain numbers are seconds)
    #[arg(long, alias = "seconds", value_name = "DURATION", default_value = "3s", value_parser = parse_duration)]
    window: Duration,
    /// Leave the machine idle this long before each end-to-end request (50ms), as a long
    /// inference does: with a trivial model (`scripts/make-floor-model.py`) this shows how much
    /// of the tax is the host waking idle CPUs rather than Cloak's own work
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    idle: Duration,
    /// The idle time in milliseconds (the earlier spelling of --idle)
    #[arg(long, value_name = "MS", hide = true, conflicts_with = "idle")]
    idle_ms: Option<u64>,
    /// The size given to dynamic dimensions other than the first (sequence length)
    #[arg(long, value_name = "N", default_value_t = 128)]
    seq_len: usize,
    /// Send the encapsulated requests to the server's plain-HTTP listener for them
    /// (--ohttp-listen), as a TLS-terminating balancer forwards them, instead of inside the
    /// server's TLS: the server's share, without the TLS a client pays to reach the balancer
    #[arg(long)]
    ohttp_plain: bool,
    #[command(flatten)]
    engine: EngineArgs,
    /// Print one JSON array, one object per model
    #[arg(long)]
    json: bool,
}

impl BenchArgs {
    /// `--idle`, or the earlier `--idle-ms`.
    fn idle_time(&self) -> Duration {
        self.idle_ms.map_or(self.idle, Duration::from_millis)
    }
}

/// One model's figures.
#[derive(Debug, Serialize)]
struct ModelReport {
    model: String,
    engine: String,
    engine_version: String,
    engine_threads: usize,
    inputs: Vec<String>,
    request_bytes: usize,
    iterations: usize,
    engine_ms_p50: f64,
    engine_ms_p90: f64,
    atls_ms_p50: f64,
    atls_ms_p90: f64,
    ohttp_ms_p50: f64,
    ohttp_ms_p90: f64,
    /// How the encapsulated requests travelled.
    ohttp_transport: OhttpTransport,
    tax_atls: f64,
    tax_ohttp: f64,
    throughput: Vec<Throughput>,
}

/// How encapsulated requests reach the server (`ohttp_transport` in the JSON).
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum OhttpTransport {
    /// To the plain-HTTP listener for them (`--ohttp-plain`).
    Http,
    /// Inside the server's TLS.
    Https,
}

/// Requests per second at one concurrency.
#[derive(Debug, Serialize)]
struct Throughput {
    clients: usize,
    engine_rps: f64,
    atls_rps: f64,
    ohttp_rps: f64,
}

/// Runs `cloak bench`.
pub(crate) fn run(args: &BenchArgs) -> Result<(), Reported> {
    if args.iterations == 0 || args.concurrency.contains(&0) || args.window.is_zero() {
        return Err(Failure::usage(
            "invalid-argument",
            "--iterations, --concurrency and --seconds must be positive",
        )
        .into());
    }
    let models = if args.models.is_empty() {
        default_models()?
    } else {
        args.models.clone()
    };
    let engine = args
        .engine
        .engine()
        .map_err(|e| Failure::usage(e.code(), e.to_string()))?;
    let runtime = crate::runtime::multi_thread()?;
    let mut reports = Vec::new();
    for path in &models {
        if !args.json {
            eprintln!("measuring {} on {} …", path.display(), engine.info().kind());
        }
        reports.push(runtime.block_on(bench_model(path, &engine, args))?);
    }
    if args.json {
        let text = serde_json::to_string_pretty(&reports)
            .map_err(|e| Failure::usage("json", e.to_string()))?;
        say!("{text}")?;
    } else {
        print_table(&reports)?;
    }
    Ok(())
}

fn default_models() -> Result<Vec<PathBuf>, Failure> {
    let cache = std::env::var_os("CLOAK_MODEL_CACHE")
        .map_or_else(|| PathBuf::from(".cache/models"), PathBuf::from);
    let found: Vec<PathBuf> = DEFAULT_MODELS.iter().map(|m| cache.join(m)).collect();
    if let Some(missing) = found.iter().find(|p| !p.is_file()) {
        return Err(Failure::usage(
            "no-model",
            format!(
                "{} is not there: fetch the benchmark models with \
                 `.venv/bin/python scripts/fetch-models.py` (or set CLOAK_MODEL_CACHE), or pass \
                 --model FILE.onnx",
                missing.display()
            ),
        ));
    }
    Ok(found)
}

async fn bench_model(
    path: &Path,
    engine: &Engine,
    args: &BenchArgs,
) -> Result<ModelReport, Failure> {
    let onnx = std::fs::read(path).map_err(|e| Failure::io("read", path, &e))?;
    let name = "bench";
    let prepared = engine.load(name, &onnx).map_err(bench_error)?;
    let inputs = synthetic_inputs(&prepared, args.seq_len)?;
    let mut request = InferRequest::new(
        inputs
            .iter()
            .map(|(n, t)| NamedTensor::new(n.clone(), t.clone()))
            .collect(),
    );
    for output in prepared.outputs() {
        request = request
            .with_output(RequestedOutput::new(output.name()).with_encoding(TensorEncoding::Binary));
    }
    let encoded = request
        .encode(|_| TensorEncoding::Binary)
        .map_err(bench_error)?;
    let header_len = encoded.header_len();
    let body = Bytes::from(std::mem::take(&mut *encoded.into_body()));
    let infer_path = format!("/v2/models/{name}/infer");

    let fixture = Fixture::start(name, &onnx, engine).await?;
    let client = |mode, url| {
        Client::builder()
            .policy(fixture.policy.clone())
            .collateral(fixture.collateral.clone())
            .mode(mode)
            .connect(url)
    };
    let atls = client(Mode::AttestedTls, &fixture.url)
        .await
        .map_err(bench_error)?;
    let (ohttp_url, ohttp_transport) = if args.ohttp_plain {
        (&fixture.ohttp_url, OhttpTransport::Http)
    } else {
        (&fixture.url, OhttpTransport::Https)
    };
    let ohttp = client(Mode::Encapsulated, ohttp_url)
        .await
        .map_err(bench_error)?;
    let call = Call {
        path: infer_path,
        body,
        header_len,
    };

    // Latency, in alternating blocks: engine, attested TLS, encapsulated, and again.
    let mut engine_session = prepared.session();
    let mut atls_session = atls.session().await.map_err(bench_error)?;
    let mut ohttp_session = ohttp.session().await.map_err(bench_error)?;
    let (mut engine_ms, mut atls_ms, mut ohttp_ms) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.warmup {
        tokio::task::block_in_place(|| engine_session.run(inputs.clone())).map_err(bench_error)?;
        for session in [&mut atls_session, &mut ohttp_session] {
            idle(args.idle_time()).await;
            call.timed(session).await?;
        }
    }
    let mut left = args.iterations;
    while left > 0 {
        let block = left.min(BLOCK);
        for timed in block_runs(block) {
            // On this worker thread, as the server's blocking pool runs it: no hand-off counted.
            let inputs = inputs.clone();
            let started = Instant::now();
            tokio::task::block_in_place(|| engine_session.run(inputs)).map_err(bench_error)?;
            if timed {
                engine_ms.push(ms(started.elapsed()));
            }
        }
        for (session, times) in [
            (&mut atls_session, &mut atls_ms),
            (&mut ohttp_session, &mut ohttp_ms),
        ] {
            for timed in block_runs(block) {
                idle(args.idle_time()).await;
                let time = call.timed(session).await?;
                if timed {
                    times.push(ms(time));
                }
            }
        }
        left -= block;
    }

    let mut throughput = Vec::new();
    let window = args.window;
    for &clients in &args.concurrency {
        throughput.push(Throughput {
            clients,
            engine_rps: engine_throughput(&prepared, &inputs, clients, window).await?,
            atls_rps: remote_throughput(&atls, &call, clients, window).await?,
            ohttp_rps: remote_throughput(&ohttp, &call, clients, window).await?,
        });
    }
    fixture.server.shutdown().await;

    let engine_p50 = percentile(&mut engine_ms, 0.5);
    let atls_p50 = percentile(&mut atls_ms, 0.5);
    let ohttp_p50 = percentile(&mut ohttp_ms, 0.5);
    Ok(ModelReport {
        model: path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        engine: engine.info().kind().to_string(),
        engine_version: engine.info().version().to_owned(),
        engine_threads: engine.info().threads().get(),
        inputs: inputs
            .iter()
            .map(|(n, t)| format!("{n} {} {:?}", t.dtype().name(), t.shape()))
            .collect(),
        request_bytes: call.body.len(),
        iterations: args.iterations,
        engine_ms_p50: engine_p50,
        engine_ms_p90: percentile(&mut engine_ms, 0.9),
        atls_ms_p50: atls_p50,
        atls_ms_p90: percentile(&mut atls_ms, 0.9),
        ohttp_ms_p50: ohttp_p50,
        ohttp_ms_p90: percentile(&mut ohttp_ms, 0.9),
        ohttp_transport,
        tax_atls: atls_p50 / engine_p50,
        tax_ohttp: ohttp_p50 / engine_p50,
        throughput,
    })
}

/// One inference request, sent as a client would and checked as a client must.
#[derive(Clone)]
struct Call {
    path: String,
    body: Bytes,
    header_len: Option<usize>,
}

impl Call {
    /// Sends the request, requires success and a valid receipt, and returns the time taken.
    async fn timed(&self, session: &mut Session) -> Result<Duration, Failure> {
        let started = Instant::now();
        let (response, receipt) = session
            .send_inference(&self.path, self.body.clone(), self.header_len)
            .await
            .map_err(bench_error)?;
        if receipt.is_none() {
            return Err(Failure::usage(
                "bench",
                format!(
                    "the server answered {}: {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                ),
            ));
        }
        Ok(started.elapsed())
    }
}

/// Whether each run of a block of `block` timed runs is timed: one untimed run first (it
/// follows a run of another kind), then `block` timed ones.
fn block_runs(block: usize) -> impl Iterator<Item = bool> {
    std::iter::once(false).chain(std::iter::repeat_n(true, block))
}

async fn idle(time: Duration) {
    if !time.is_zero() {
        tokio::time::sleep(time).await;
    }
}

async fn remote_throughput(
    remote: &Client,
    call: &Call,
    clients: usize,
    window: Duration,
) -> Result<f64, Failure> {
    let call = Arc::new(call.clone());
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        sessions.push(remote.session().await.map_err(bench_error)?);
    }
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for mut session in sessions {
        let call = Arc::clone(&call);
        tasks.spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                call.timed(&mut session).await?;
                done = done.saturating_add(1);
            }
            Ok::<_, Failure>(done)
        });
    }
    rate(tasks, started).await
}

async fn engine_throughput(
    model: &PreparedModel,
    inputs: &[(String, Tensor)],
    clients: usize,
    window: Duration,
) -> Result<f64, Failure> {
    let started = Instant::now();
    let deadline = started + window;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let mut session = model.session();
        let inputs = inputs.to_vec();
        tasks.spawn_blocking(move || {
            let mut done = 0u64;
            while Instant::now() < deadline {
                session.run(inputs.clone()).map_err(bench_error)?;
                done = done.saturating_add(1);
            }
            Ok::<_, Failure>(done)
        });
    }
    rate(tasks, started).await
}

/// A server on loopback serving `onnx` as `name`, and what a client needs to appraise it.
struct Fixture {
    _dir: TempDir,
    server: RunningServer,
    url: String,
    /// The plain-HTTP listener for encapsulated requests.
    ohttp_url: String,
    policy: AppraisalPolicy,
    collateral: Collateral,
}

impl Fixture {
    async fn start(name: &str, onnx: &[u8], engine: &Engine) -> Result<Self, Failure> {
        let dir = TempDir::new()?;
        let models = dir.0.join("models");
        std::fs::create_dir(&models).map_err(|e| Failure::io("create directory", &models, &e))?;
        let key = ModelKey::generate().map_err(bench_error)?;
        let path = models.join(format!("{name}.cloak"));
        let out = std::fs::File::create(&path).map_err(|e| Failure::io("create", &path, &e))?;
        let options = SealOptions::new(ModelName::new(name).map_err(bench_error)?);
        container::seal(&key, &options, onnx, out).map_err(bench_error)?;
        let sim_dir = dir.0.join("sim");
        let sim = SimPlatform::init(&sim_dir, &SimConfig::up_to_date()).map_err(bench_error)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let collateral = Collateral::from_json(&sim.collateral(now).map_err(bench_error)?)
            .map_err(bench_error)?;
        // The server's measurement covers the engine's library, as `cloak serve`'s does.
        let platform = SimPlatform::open(&sim_dir)
            .map_err(bench_error)?
            .with_libraries(&engine.info().library_digests());
        let mrenclave = platform.identity().map_err(bench_error)?.mrenclave;
        let policy = AppraisalPolicy::strict()
            .with_trust_root(TrustRootPolicy::Der(sim.root_der().to_vec()))
            .with_sgx_identity(SgxIdentityPolicy {
                mrenclave: Some(vec![Measurement::from_bytes(mrenclave)]),
                ..SgxIdentityPolicy::default()
            });
        let platform: Arc<dyn Platform> = Arc::new(platform);
        let mut config = ServerConfig::new(models, std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        config.model_keys.insert(name.to_owned(), key);
        config.engine = engine.clone();
        config.ohttp_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let prepared =
            tokio::task::spawn_blocking(move || PreparedServer::prepare(config, platform))
                .await
                .map_err(bench_error)?
                .map_err(bench_error)?;
        let server = prepared.start().await.map_err(bench_error)?;
        let url = format!("https://{}", server.local_addr());
        let ohttp_url = server
            .ohttp_addr()
            .map(|addr| format!("http://{addr}"))
            .ok_or_else(|| bench_error("the server has no listener for encapsulated requests"))?;
        Ok(Self {
            _dir: dir,
            server,
            url,
            ohttp_url,
            policy,
            collateral,
        })
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, Failure> {
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(bench_error)?;
        let path = std::env::temp_dir().join(format!("cloak-bench-{}", hex::encode(suffix)));
        std::fs::create_dir(&path).map_err(|e| Failure::io("create directory", &path, &e))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Inputs for every model input: dynamic first dimensions are 1 (batch), other dynamic ones
/// `seq_len`; float inputs get values in [0, 1), token ids stay inside a BERT vocabulary,
/// attention masks are all ones and token types all zeros.
fn synthetic_inputs(
    model: &PreparedModel,
    seq_len: usize,
) -> Result<Vec<(String, Tensor)>, Failure> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    model
        .inputs()
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec
                .shape()
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Dim::Fixed(n) => *n,
                    _ if i == 0 => 1,
                    _ => seq_len,
                })
                .collect();
            let count: usize = shape.iter().product();
            let name = spec.name().to_ascii_lowercase();
            let integer = |i: usize, next: &mut dyn FnMut() -> u64| -> i64 {
                if name.contains("mask") {
                    1
                } else if name.contains("type") {
                    0
                } else if i == 0 {
                    101
                } else if i + 1 == count {
                    102
                } else {
                    1000 + i64::try_from(next() % 20_000).unwrap_or(0)
                }
            };
            let tensor = match spec.dtype() {
                DataType::Fp32 => {
                    let values: Vec<f32> = (0..count)
                        .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32)
                        .collect();
                    Tensor::from_values(shape, &values)
                }
                DataType::Int64 => {
                    let values: Vec<i64> = (0..count).map(|i| integer(i, &mut next)).collect();
                    Tensor::from_values(shape, &values)
                }
                DataType::Int32 => {
                    let values: Vec<i32> = (0..count)
                        .map(|i| i32::try_from(integer(i, &mut next)).unwrap_or(0))
                        .collect();
                    Tensor::from_values(shape, &values)
                }
                other => match other.element_size() {
                    Some(size) => Tensor::new(other, shape, vec![0u8; count.saturating_mul(size)]),
                    None => {
                        return Err(Failure::usage(
                            "unsupported-input",
                            format!(
                                "input {} is {}: cloak bench makes numeric inputs only",
                                spec.name(),
                                other.name()
                            ),
                        ));
                    }
                },
            }
            .map_err(bench_error)?;
            Ok((spec.name().to_owned(), tensor))
        })
        .collect()
}

fn print_table(reports: &[ModelReport]) -> Result<(), Failure> {
    if let Some(r) = reports.first() {
        say!(
            "engine: {} {}, {} intra-op thread(s) per request; OHTTP over {}",
            r.engine,
            r.engine_version,
            r.engine_threads,
            match r.ohttp_transport {
                OhttpTransport::Http => "plain HTTP (as a balancer forwards it)",
                OhttpTransport::Https => "the server's TLS",
            }
        )?;
    }
    say!(
        "{:<26} {:>11} {:>10} {:>10} {:>9} {:>10}",
        "model",
        "engine p50",
        "aTLS p50",
        "OHTTP p50",
        "tax aTLS",
        "tax OHTTP"
    )?;
    for r in reports {
        say!(
            "{:<26} {:>8.2} ms {:>7.2} ms {:>7.2} ms {:>9.3} {:>10.3}",
            r.model,
            r.engine_ms_p50,
            r.atls_ms_p50,
            r.ohttp_ms_p50,
            r.tax_atls,
            r.tax_ohttp
        )?;
    }
    say!("")?;
    say!(
        "{:<26} {:>8} {:>12} {:>12} {:>12}",
        "throughput (requests/s)",
        "clients",
        "engine",
        "aTLS",
        "OHTTP"
    )?;
    for r in reports {
        for t in &r.throughput {
            say!(
                "{:<26} {:>8} {:>12.1} {:>12.1} {:>12.1}",
                r.model,
                t.clients,
                t.engine_rps,
                t.atls_rps,
                t.ohttp_rps
            )?;
        }
    }
    say!("")?;
    say!(
        "tax = end-to-end p50 / in-process engine p50 (receipts verified on every answer; \
         {} timed requests per series, in alternating blocks of {BLOCK})",
        reports.first().map_or(0, |r| r.iterations)
    )?;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Requests per second: what the clients in `tasks` completed since `started`.
async fn rate(
    mut tasks: tokio::task::JoinSet<Result<u64, Failure>>,
    started: Instant,
) -> Result<f64, Failure> {
    let mut total = 0u64;
    while let Some(joined) = tasks.join_next().await {
        total = total.saturating_add(joined.map_err(bench_error)??);
    }
    Ok(total as f64 / started.elapsed().as_secs_f64().max(f64::MIN_POSITIVE))
}

/// The `p` quantile (nearest rank) of `values`.
fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let last = values.len().saturating_sub(1);
    let rank = ((last as f64) * p).round() as usize;
    values.get(rank.min(last)).copied().unwrap_or(f64::NAN)
}

fn bench_error(e: impl std::fmt::Display) -> Failure {
    Failure::usage("bench", e.to_string())
}
