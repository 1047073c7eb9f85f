//! The server's command line: the flags, and the process around the server (logging, runtime,
//! signals). The `cloak-server` binary — what the enclave runs — is this module and nothing
//! else; `cloak serve` in the `cloak` CLI takes the same flags through [`ServeArgs`] as a
//! development convenience.

use std::collections::HashMap;
use std::fmt;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use cloak_crypto::key::{MAX_KEY_FILE_LEN, ModelKey};
use cloak_engine::EngineInfo;
use cloak_tee::Platform;

use crate::{CollateralSource, KbsConfig, Limits, PreparedServer, ServerConfig};

/// How long open connections may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// The flags of `cloak-server` and `cloak serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory of sealed models (`*.cloak`); each loads with a key given by --model-key, a key
    /// sealed here by an earlier run (NAME.cloak.sealed-key), or one the --kbs broker releases
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// Address for the attested-TLS listener (KServe v2, /v1/attestation, /v1/ohttp, /metrics)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The TEE platform: `gramine` inside an SGX enclave, `sim` for the simulated platform
    #[arg(long, value_enum)]
    platform: PlatformArg,
    /// The simulated platform's directory (made by `cloak sim init`); with --platform sim
    #[arg(long, value_name = "DIR", help_heading = "Simulated platform")]
    sim_dir: Option<PathBuf>,
    /// Run as a debug enclave on the simulated platform (clients reject it unless they allow
    /// debug)
    #[arg(long, help_heading = "Simulated platform")]
    sim_debug: bool,
    /// The key for a model: NAME=KEYFILE (the model name in its container header); repeatable
    #[arg(long = "model-key", value_name = "NAME=KEYFILE")]
    model_keys: Vec<String>,
    /// The model owner's key broker (`cloak kbs serve`): models without a given or sealed key
    /// are loaded when it releases their keys to this enclave's evidence; released keys are
    /// sealed to this build's measurement so a restart serves without the broker. Repeatable:
    /// replicas of one broker, each tried in turn while the others are unreachable
    #[arg(long, value_name = "URL", help_heading = "Key broker")]
    kbs: Vec<String>,
    /// PEM certificates that sign an https broker's certificate [default: the Mozilla roots]
    #[arg(
        long,
        value_name = "FILE",
        requires = "kbs",
        help_heading = "Key broker"
    )]
    kbs_ca: Option<PathBuf>,
    /// Longest pause between attempts while the broker is unreachable (30s, 5m; plain numbers
    /// are seconds)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration,
          requires = "kbs", help_heading = "Key broker")]
    kbs_max_backoff: Duration,
    /// Pause before asking the broker again after it refused a release
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration,
          requires = "kbs", help_heading = "Key broker")]
    kbs_denied_retry: Duration,
    /// Serve as a replica of this fleet (`cloak kbs add-fleet`): the broker releases the
    /// fleet's shared HPKE key to this enclave under the fleet's policy, and the claims carry
    /// it, so a client that appraised any replica behind a load balancer is answered by all
    #[arg(
        long,
        value_name = "NAME",
        requires = "kbs",
        help_heading = "Key broker"
    )]
    fleet: Option<String>,
    /// How often to look for a new generation of the fleet's key (rotation)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration,
          requires = "fleet", help_heading = "Key broker")]
    fleet_refresh: Duration,
    /// Collateral to relay to clients (dcap-qvl QuoteCollateralV3 JSON, kept fresh by the
    /// host) [default: the platform's own, for sim]
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// Also serve /metrics over plain HTTP at this address (for scrapers that cannot attest)
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Also take encrypted (Oblivious HTTP) requests over plain HTTP at this address, from a
    /// relay or a TLS-terminating load balancer: /v1/ohttp, /v1/attestation and health only,
    /// with no per-address connection cap
    #[arg(long, value_name = "ADDR")]
    ohttp_listen: Option<SocketAddr>,
    /// A name for the certificate's subjectAltName; repeatable [default: localhost]
    #[arg(long = "hostname", value_name = "NAME")]
    hostnames: Vec<String>,
    /// Largest request body in bytes
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    max_request_bytes: Option<usize>,
    /// Most tensor elements in one request
    #[arg(long, value_name = "N", help_heading = "Limits")]
    max_elements: Option<usize>,
    /// Inference requests running at once [default: the number of cores]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    max_concurrent: Option<usize>,
    /// Inference requests waiting for a worker; more get 429
    #[arg(long, value_name = "N", help_heading = "Limits")]
    max_queue: Option<usize>,
    /// Longest a request may wait for a worker before it gets 503 (30s, 1m; plain numbers are
    /// seconds)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Limits")]
    queue_timeout: Option<Duration>,
    /// Most models loaded
    #[arg(long, value_name = "N", help_heading = "Limits")]
    max_models: Option<usize>,
    /// Request-body bytes held at once over all requests, reserved before a body is read; a
    /// request that does not fit gets 503 [default: 536870912, 512 MiB]
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    max_inflight_bytes: Option<u64>,
    /// Fresh attestations per second per client address; more get 429 [default: 20]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    attestation_rate: Option<u32>,
    /// Fresh attestations one client address may make in a burst [default: 40]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    attestation_burst: Option<u32>,
    /// Quotes made at once for fresh attestations (quoting is serialised on SGX); requests that
    /// arrive meanwhile share the next quote, waiting up to 5 s, then get 503 [default: 2]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    max_concurrent_attestations: Option<usize>,
    /// Encapsulated-request ids remembered against replays (two minutes' worth); when full,
    /// new encapsulated requests get 503 [default: 131072]
    #[arg(long, value_name = "N", help_heading = "Limits")]
    max_replay_ids: Option<usize>,
    /// Most plaintext model bytes loaded, over all models
    #[arg(long, value_name = "BYTES", help_heading = "Limits")]
    max_model_bytes: Option<u64>,
    #[command(flatten)]
    connections: ConnectionArgs,
    #[command(flatten)]
    engine: EngineArgs,
    /// Log format on standard error (the level comes from CLOAK_LOG, default `info`)
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// The inference engine's flags, shared by `cloak-server`, `cloak serve` and `cloak bench`.
#[derive(Clone, Debug, Args)]
pub struct EngineArgs {
    /// The inference engine: `tract` (pure Rust, compiled in: the smallest trusted computing
    /// base) or `onnxruntime` (ONNX Runtime, loaded from --onnxruntime-lib: several times
    /// faster, and runs operators tract lacks). Clients see which in the identity claims
    #[arg(long, value_enum, default_value = "tract", help_heading = "Engine")]
    pub engine: EngineArg,
    /// The ONNX Runtime shared library for --engine onnxruntime (libonnxruntime.so.1.*, as the
    /// `onnxruntime` wheel ships it in onnxruntime/capi/; 1.31 or newer). Its SHA-256 is in the
    /// claims and, on the simulated platform, in the measurement
    #[arg(
        long,
        value_name = "PATH",
        env = "CLOAK_ONNXRUNTIME_LIB",
        help_heading = "Engine"
    )]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Intra-op threads per inference request [default: 1 for tract, whose sessions of one model
    /// run in parallel; the number of CPUs for onnxruntime, whose requests to one model take
    /// turns]
    #[arg(long, value_name = "N", help_heading = "Engine")]
    pub engine_threads: Option<std::num::NonZeroUsize>,
}

/// The connection flags, shared by `cloak-server`, `cloak serve` and `cloak kbs serve`: every
/// one of `cloak_net::ConnectionLimits`, defaulting to its default.
#[derive(Clone, Debug, Args)]
pub struct ConnectionArgs {
    /// Connections open at once, per listener; more are closed as they arrive (counted in
    /// /metrics) [default: 1024]
    #[arg(long, value_name = "N", help_heading = "Connections")]
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address (IPv6: one /64); behind a load
    /// balancer, raise it to --max-connections [default: 128]
    #[arg(long, value_name = "N", help_heading = "Connections")]
    pub max_connections_per_ip: Option<usize>,
    /// Longest a TLS handshake may take [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          help_heading = "Connections")]
    pub handshake_timeout: Option<Duration>,
    /// Longest a connection may go with no request in progress (before its first request's
    /// headers are complete, or between requests) before it is closed [default: 30s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          help_heading = "Connections")]
    pub idle_timeout: Option<Duration>,
    /// Slowest a request body may arrive, in bytes per second on average after its first 10
    /// seconds; a slower one fails and its connection closes [default: 32768]
    #[arg(long, value_name = "BYTES", help_heading = "Connections")]
    pub min_body_rate: Option<u64>,
    /// Concurrent HTTP/2 streams per connection [default: 32]
    #[arg(long, value_name = "N", help_heading = "Connections")]
    pub max_h2_streams: Option<u32>,
}

impl ConnectionArgs {
    /// The limits these flags describe; an error names a flag given a value of zero.
    pub fn limits(&self) -> Result<cloak_net::ConnectionLimits, StartupFailure> {
        fn nonzero<T: Copy + Default + PartialEq>(
            flag: &str,
            value: Option<T>,
        ) -> Result<Option<T>, StartupFailure> {
            match value {
                Some(v) if v == T::default() => Err(StartupFailure::new(
                    "invalid-argument",
                    format!("{flag} must be more than zero"),
                )),
                other => Ok(other),
            }
        }
        let mut limits = cloak_net::ConnectionLimits::default();
        if let Some(n) = nonzero("--max-connections", self.max_connections)? {
            limits.max_connections = n;
        }
        if let Some(n) = nonzero("--max-connections-per-ip", self.max_connections_per_ip)? {
            limits.max_per_address = n;
        }
        if let Some(d) = nonzero("--handshake-timeout", self.handshake_timeout)? {
            limits.handshake_timeout = d;
        }
        if let Some(d) = nonzero("--idle-timeout", self.idle_timeout)? {
            limits.idle_timeout = d;
        }
        if let Some(n) = nonzero("--min-body-rate", self.min_body_rate)? {
            limits.min_body_rate = n;
        }
        if let Some(n) = nonzero("--max-h2-streams", self.max_h2_streams)? {
            limits.max_h2_streams = n;
        }
        Ok(limits)
    }
}

/// The engines `--engine` names.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// ONNX Runtime, from --onnxruntime-lib.
    Onnxruntime,
    /// tract, compiled in.
    Tract,
}

impl EngineArgs {
    /// The engine these flags describe, its library loaded (blocking: the library is read and
    /// hashed).
    pub fn engine(&self) -> Result<cloak_engine::Engine, StartupFailure> {
        let engine = match self.engine {
            EngineArg::Tract => cloak_engine::Engine::tract(),
            EngineArg::Onnxruntime => {
                let library = self.onnxruntime_lib.as_ref().ok_or_else(|| {
                    StartupFailure::new(
                        "invalid-argument",
                        "--engine onnxruntime needs --onnxruntime-lib PATH (or \
                         CLOAK_ONNXRUNTIME_LIB): the libonnxruntime.so.1.* to load",
                    )
                })?;
                cloak_engine::Engine::onnxruntime(library)
                    .map_err(|e| StartupFailure::new(e.code(), e.to_string()))?
            }
        };
        Ok(match self.engine_threads {
            Some(threads) => engine.with_threads(threads),
            None => engine,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PlatformArg {
    Gramine,
    Sim,
}

/// The format of log lines on standard error.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable text.
    Text,
}

/// Why the server did not start: a stable code and a sentence. Binaries exit with status 2.
#[derive(Debug)]
pub struct StartupFailure {
    code: &'static str,
    message: String,
}

impl StartupFailure {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The stable kebab-case code (`invalid-argument`, `platform-unavailable`, `startup`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }
}

impl fmt::Display for StartupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartupFailure {}

/// Runs the server `args` describe until SIGINT or SIGTERM, then lets open connections finish
/// (up to 30 s). `program` names the lines printed on standard output (`PROGRAM: listening on
/// https://ADDR`, then the identity and one line per model).
pub fn run(args: &ServeArgs, program: &str) -> Result<(), StartupFailure> {
    init_logging(args.log_format);
    // A panic message can quote data (an index, a value); say where, never what.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        tracing::error!("a thread panicked{location}; the request it served failed");
    }));
    let config = args.config()?;
    let platform = args.platform(config.engine.info())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| StartupFailure::new("runtime", format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(config, platform, program))
}

async fn serve(
    config: ServerConfig,
    platform: Arc<dyn Platform>,
    program: &str,
) -> Result<(), StartupFailure> {
    let prepared = tokio::task::spawn_blocking(move || PreparedServer::prepare(config, platform))
        .await
        .map_err(|e| StartupFailure::new("startup", format!("startup failed: {e}")))?
        .map_err(|e| StartupFailure::new("startup", e.to_string()))?;
    let summary = summary(&prepared);
    let running = prepared
        .start()
        .await
        .map_err(|e| StartupFailure::new("startup", e.to_string()))?;
    // Standard output is informational: a server keeps serving when nobody reads it any more
    // (a closed pipe), so these lines are written without checking.
    let mut lines = vec![format!(
        "{program}: listening on https://{}",
        running.local_addr()
    )];
    if let Some(addr) = running.ohttp_addr() {
        lines.push(format!(
            "{program}: encrypted requests on http://{addr}/v1/ohttp"
        ));
    }
    if let Some(addr) = running.metrics_addr() {
        lines.push(format!("{program}: metrics on http://{addr}/metrics"));
    }
    lines.extend(summary.into_iter().map(|line| format!("  {line}")));
    print_lines(&lines);
    shutdown_signal().await;
    print_lines(&[format!("{program}: shutting down")]);
    tokio::time::timeout(SHUTDOWN_GRACE, running.shutdown())
        .await
        .ok();
    Ok(())
}

fn print_lines(lines: &[String]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}

/// The identity and every model's state, for the operator.
fn summary(prepared: &PreparedServer) -> Vec<String> {
    let claims = prepared.identity().claims();
    let mut lines = vec![
        format!("platform         {}", claims.platform),
        format!("tls spki sha256  {}", hex::encode(claims.tls_spki_sha256)),
    ];
    if let Some(engine) = &claims.engine {
        let library = engine.library_sha256.map_or_else(String::new, |sha| {
            format!(", library sha256 {}", hex::encode(sha))
        });
        lines.push(format!(
            "engine           {} {}{library}",
            engine.name, engine.version
        ));
    }
    for model in prepared.store().ready() {
        lines.push(format!(
            "model ready      {} ({} bytes, sha256 {})",
            model.claim.name,
            model.claim.bytes,
            hex::encode(model.claim.sha256)
        ));
    }
    for failed in prepared.store().failed() {
        let label = if failed.code == "key-pending" {
            "model WAITING   "
        } else {
            "model FAILED    "
        };
        lines.push(format!(
            "{label} {} ({}): {}",
            failed.name, failed.code, failed.reason
        ));
    }
    lines
}

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let Ok(mut terminate) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = interrupt.await;
        return;
    };
    tokio::select! {
        _ = interrupt => {}
        _ = terminate.recv() => {}
    }
}

/// Logs to standard error at the level `CLOAK_LOG` names (`info` by default), in `format`.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLOAK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A duration flag's value: `30s`, `5m`, `1h 30m`, `250ms` (humantime's units), or a plain
/// number of seconds (`30`, `0.5`). Every duration flag of Cloak's binaries takes this one
/// format.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && let Ok(seconds) = text.parse::<f64>()
        && let Ok(duration) = Duration::try_from_secs_f64(seconds)
    {
        return Ok(duration);
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("{e} (give a number of seconds, or a duration such as 30s, 5m or 250ms)")
    })
}

impl ServeArgs {
    /// The server configuration these flags describe; checks what clap cannot.
    fn config(&self) -> Result<ServerConfig, StartupFailure> {
        let mut keys: HashMap<String, ModelKey> = HashMap::new();
        for spec in &self.model_keys {
            let (name, path) = spec.split_once('=').ok_or_else(|| {
                StartupFailure::new(
                    "invalid-argument",
                    format!("--model-key {spec}: expected NAME=KEYFILE"),
                )
            })?;
            let key = read_key_file(Path::new(path))?;
            if keys.insert(name.to_owned(), key).is_some() {
                return Err(StartupFailure::new(
                    "invalid-argument",
                    format!("--model-key: model {name} is given twice"),
                ));
            }
        }
        if !self.model_dir.is_dir() {
            return Err(StartupFailure::new(
                "not-a-directory",
                format!(
                    "--model-dir {} is not a directory",
                    self.model_dir.display()
                ),
            ));
        }
        let mut config = ServerConfig::new(self.model_dir.clone(), self.listen);
        config.model_keys = keys;
        config.limits = self.limits()?;
        if let Some((url, fallbacks)) = self.kbs.split_first() {
            if let Some(bad) = self
                .kbs
                .iter()
                .find(|url| !(url.starts_with("http://") || url.starts_with("https://")))
            {
                return Err(StartupFailure::new(
                    "invalid-argument",
                    format!("--kbs {bad}: expected an http:// or https:// URL"),
                ));
            }
            let mut kbs = KbsConfig::new(url.clone());
            kbs.fallback_urls = fallbacks.to_vec();
            if let Some(path) = &self.kbs_ca {
                kbs.ca_pem = Some(std::fs::read(path).map_err(|e| {
                    StartupFailure::new("io", format!("cannot read {}: {e}", path.display()))
                })?);
            }
            kbs.max_backoff = self.kbs_max_backoff.max(Duration::from_secs(1));
            kbs.denied_retry = self.kbs_denied_retry.max(Duration::from_secs(1));
            if let Some(fleet) = &self.fleet {
                if fleet.is_empty()
                    || fleet.len() > 128
                    || !fleet
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
                {
                    return Err(StartupFailure::new(
                        "invalid-argument",
                        format!(
                            "--fleet {fleet}: a fleet name is 1 to 128 characters of A-Z, a-z, \
                             0-9, '.', '_' and '-'"
                        ),
                    ));
                }
                kbs.fleet = Some(fleet.clone());
                kbs.fleet_refresh = self.fleet_refresh.max(Duration::from_secs(1));
            }
            config.kbs = Some(kbs);
        }
        config.engine = self.engine.engine()?;
        config.metrics_listen = self.metrics_listen;
        config.ohttp_listen = self.ohttp_listen;
        config.hostnames = self.hostnames.clone();
        config.collateral = match (&self.collateral, self.platform) {
            (Some(path), _) => CollateralSource::File(path.clone()),
            (None, PlatformArg::Sim) => CollateralSource::Platform,
            (None, PlatformArg::Gramine) => CollateralSource::None,
        };
        Ok(config)
    }

    fn limits(&self) -> Result<Limits, StartupFailure> {
        fn positive<T: Default + PartialEq>(flag: &str, n: T) -> Result<T, StartupFailure> {
            if n == T::default() {
                Err(StartupFailure::new(
                    "invalid-argument",
                    format!("{flag} must be at least 1"),
                ))
            } else {
                Ok(n)
            }
        }
        let mut limits = Limits::default();
        if let Some(n) = self.max_request_bytes {
            limits.max_request_bytes = positive("--max-request-bytes", n)?;
        }
        if let Some(n) = self.max_elements {
            limits.max_elements = positive("--max-elements", n)?;
        }
        if let Some(n) = self.max_concurrent {
            limits.max_concurrent = positive("--max-concurrent", n)?;
        }
        if let Some(n) = self.max_queue {
            limits.max_queue = n;
        }
        if let Some(timeout) = self.queue_timeout {
            limits.queue_timeout = timeout;
        }
        if let Some(n) = self.max_models {
            limits.max_models = positive("--max-models", n)?;
        }
        if let Some(n) = self.max_inflight_bytes {
            limits.max_inflight_bytes = positive("--max-inflight-bytes", n)?;
        }
        if let Some(n) = self.attestation_rate {
            limits.attestation_rate = positive("--attestation-rate", n)?;
        }
        if let Some(n) = self.attestation_burst {
            limits.attestation_burst = positive("--attestation-burst", n)?;
        }
        if let Some(n) = self.max_concurrent_attestations {
            limits.max_concurrent_attestations = positive("--max-concurrent-attestations", n)?;
        }
        if let Some(n) = self.max_replay_ids {
            limits.max_replay_ids = positive("--max-replay-ids", n)?;
        }
        if let Some(n) = self.max_model_bytes {
            limits.max_model_bytes = n;
        }
        limits.connections = self.connections.limits()?;
        Ok(limits)
    }

    fn platform(&self, engine: &EngineInfo) -> Result<Arc<dyn Platform>, StartupFailure> {
        match self.platform {
            PlatformArg::Sim => self.sim_platform(engine),
            PlatformArg::Gramine => {
                if self.sim_dir.is_some() || self.sim_debug {
                    return Err(StartupFailure::new(
                        "invalid-argument",
                        "--sim-dir and --sim-debug apply to --platform sim only",
                    ));
                }
                let platform = cloak_tee::gramine::GraminePlatform::new();
                if !platform.is_available() {
                    return Err(StartupFailure::new(
                        "platform-unavailable",
                        "no Gramine DCAP attestation here (/dev/attestation/attestation_type is \
                         not \"dcap\"); run inside gramine-sgx, or use --platform sim",
                    ));
                }
                Ok(Arc::new(platform))
            }
        }
    }

    /// The simulated platform, running this executable with the engine's library as a trusted
    /// file: its measurement covers both.
    #[cfg(feature = "sim")]
    fn sim_platform(&self, engine: &EngineInfo) -> Result<Arc<dyn Platform>, StartupFailure> {
        let dir = self.sim_dir.as_ref().ok_or_else(|| {
            StartupFailure::new(
                "invalid-argument",
                "--platform sim needs --sim-dir (make one with `cloak sim init --dir DIR`)",
            )
        })?;
        let platform = cloak_tee::sim::SimPlatform::open(dir)
            .map_err(|e| StartupFailure::new("sim", format!("{}: {e}", dir.display())))?;
        let platform = platform.with_libraries(&engine.library_digests());
        let platform = if self.sim_debug {
            let mut identity = platform
                .identity()
                .map_err(|e| StartupFailure::new(e.code(), e.to_string()))?;
            identity.debug = true;
            platform.with_enclave(identity)
        } else {
            platform
        };
        Ok(Arc::new(platform))
    }

    #[cfg(not(feature = "sim"))]
    fn sim_platform(&self, _engine: &EngineInfo) -> Result<Arc<dyn Platform>, StartupFailure> {
        Err(StartupFailure::new(
            "platform-unavailable",
            "this build has no simulated platform (built without the `sim` feature)",
        ))
    }
}

/// Reads a model key file: private to its owner, as `cloak model encrypt --key-out` writes it.
fn read_key_file(path: &Path) -> Result<ModelKey, StartupFailure> {
    let text = cloak_fs::secret::read_secret(path, MAX_KEY_FILE_LEN)
        .map_err(|e| StartupFailure::new(e.code(), e.to_string()))?;
    ModelKey::from_key_file(&text)
        .map_err(|e| StartupFailure::new(e.code(), format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_or_plain_seconds() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0.25").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration(" 1h 30m ").unwrap(),
            Duration::from_secs(5400)
        );
        let error = parse_duration("soon").unwrap_err();
        assert!(error.contains("30s"), "{error}");
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("").is_err());
    }
}
