//! `cloak serve`: the confidential inference server (run it inside Gramine-SGX, or on the
//! simulated platform).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use cloak_crypto::key::ModelKey;
use cloak_server::{CollateralSource, KbsConfig, Limits, PreparedServer, ServerConfig};
use cloak_tee::Platform;

use crate::Reported;
use crate::failure::Failure;
use crate::files::read_key_file;

/// Arguments of `cloak serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Directory of sealed models (`*.cloak`); each loads with a key given by --model-key, a key
    /// sealed here by an earlier run (NAME.cloak.sealed-key), or one the --kbs broker releases
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// Address for the attested-TLS listener (KServe v2, /v1/attestation, /metrics)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// The TEE platform: `gramine` inside an SGX enclave, `sim` for the simulated platform
    #[arg(long, value_enum)]
    platform: PlatformArg,
    /// The simulated platform's directory (made by `cloak sim init`); with --platform sim
    #[arg(long, value_name = "DIR")]
    sim_dir: Option<PathBuf>,
    /// Run as a debug enclave on the simulated platform (clients reject it unless they allow
    /// debug)
    #[arg(long)]
    sim_debug: bool,
    /// The key for a model: NAME=KEYFILE (the model name in its container header); repeatable
    #[arg(long = "model-key", value_name = "NAME=KEYFILE")]
    model_keys: Vec<String>,
    /// The model owner's key broker (`cloak kbs serve`): models without a given or sealed key
    /// are loaded when it releases their keys to this enclave's evidence; released keys are
    /// sealed to this build's measurement so a restart serves without the broker
    #[arg(long, value_name = "URL")]
    kbs: Option<String>,
    /// PEM certificates that sign an https broker's certificate [default: the Mozilla roots]
    #[arg(long, value_name = "FILE", requires = "kbs")]
    kbs_ca: Option<PathBuf>,
    /// Longest pause, in seconds, between attempts while the broker is unreachable
    #[arg(long, value_name = "SECONDS", default_value_t = 30, requires = "kbs")]
    kbs_max_backoff: u64,
    /// Seconds before asking the broker again after it refused a release
    #[arg(long, value_name = "SECONDS", default_value_t = 300, requires = "kbs")]
    kbs_denied_retry: u64,
    /// Collateral to relay to clients (dcap-qvl QuoteCollateralV3 JSON, kept fresh by the
    /// host) [default: the platform's own, for sim]
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// Also serve /metrics over plain HTTP at this address (for scrapers that cannot attest)
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// A name for the certificate's subjectAltName; repeatable [default: localhost]
    #[arg(long = "hostname", value_name = "NAME")]
    hostnames: Vec<String>,
    /// Largest request body in bytes
    #[arg(long, value_name = "BYTES")]
    max_request_bytes: Option<usize>,
    /// Most tensor elements in one request
    #[arg(long, value_name = "N")]
    max_elements: Option<usize>,
    /// Inference requests running at once [default: the number of cores]
    #[arg(long, value_name = "N")]
    max_concurrent: Option<usize>,
    /// Inference requests waiting for a worker; more get 429
    #[arg(long, value_name = "N")]
    max_queue: Option<usize>,
    /// Seconds a request may wait for a worker before it gets 503
    #[arg(long, value_name = "SECONDS")]
    queue_timeout: Option<u64>,
    /// Most models loaded
    #[arg(long, value_name = "N")]
    max_models: Option<usize>,
    /// Most plaintext model bytes loaded, over all models
    #[arg(long, value_name = "BYTES")]
    max_model_bytes: Option<u64>,
    /// Log format on standard error
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PlatformArg {
    Gramine,
    Sim,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub(crate) fn run(args: &ServeArgs) -> Result<(), Reported> {
    init_logging(args.log_format);
    // A panic message can quote data (an index, a value); say where, never what.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        tracing::error!("a thread panicked{location}; the request it served failed");
    }));
    let config = config(args)?;
    let platform = platform(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage("runtime", format!("cannot start the runtime: {e}")))?;
    runtime.block_on(serve(config, platform))?;
    Ok(())
}

async fn serve(config: ServerConfig, platform: Arc<dyn Platform>) -> Result<(), Failure> {
    let prepared = tokio::task::spawn_blocking(move || PreparedServer::prepare(config, platform))
        .await
        .map_err(|e| Failure::usage("startup", format!("startup failed: {e}")))?
        .map_err(|e| Failure::usage("startup", e.to_string()))?;
    let summary = summary(&prepared);
    let running = prepared
        .start()
        .await
        .map_err(|e| Failure::usage("startup", e.to_string()))?;
    // Standard output is informational: a server keeps serving when nobody reads it any more
    // (a closed pipe), so these writes may fail silently.
    let _ = say!("cloak serve: listening on https://{}", running.local_addr());
    if let Some(addr) = running.metrics_addr() {
        let _ = say!("cloak serve: metrics on http://{addr}/metrics");
    }
    for line in summary {
        let _ = say!("  {line}");
    }
    shutdown_signal().await;
    let _ = say!("cloak serve: shutting down");
    tokio::time::timeout(Duration::from_secs(30), running.shutdown())
        .await
        .ok();
    Ok(())
}

fn summary(prepared: &PreparedServer) -> Vec<String> {
    let claims = prepared.identity().claims();
    let mut lines = vec![
        format!("platform         {}", claims.platform),
        format!("tls spki sha256  {}", hex::encode(claims.tls_spki_sha256)),
    ];
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

pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

pub(crate) fn init_logging(format: LogFormat) {
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

fn config(args: &ServeArgs) -> Result<ServerConfig, Failure> {
    let mut keys: HashMap<String, ModelKey> = HashMap::new();
    for spec in &args.model_keys {
        let (name, path) = spec.split_once('=').ok_or_else(|| {
            Failure::usage(
                "invalid-argument",
                format!("--model-key {spec}: expected NAME=KEYFILE"),
            )
        })?;
        let key = read_key_file(std::path::Path::new(path))?;
        if keys.insert(name.to_owned(), key).is_some() {
            return Err(Failure::usage(
                "invalid-argument",
                format!("--model-key: model {name} is given twice"),
            ));
        }
    }
    if !args.model_dir.is_dir() {
        return Err(Failure::usage(
            "not-a-directory",
            format!(
                "--model-dir {} is not a directory",
                args.model_dir.display()
            ),
        ));
    }
    let mut limits = Limits::default();
    let positive = |flag: &str, n: usize| {
        if n == 0 {
            Err(Failure::usage(
                "invalid-argument",
                format!("{flag} must be at least 1"),
            ))
        } else {
            Ok(n)
        }
    };
    if let Some(n) = args.max_request_bytes {
        limits.max_request_bytes = positive("--max-request-bytes", n)?;
    }
    if let Some(n) = args.max_elements {
        limits.max_elements = positive("--max-elements", n)?;
    }
    if let Some(n) = args.max_concurrent {
        limits.max_concurrent = positive("--max-concurrent", n)?;
    }
    if let Some(n) = args.max_queue {
        limits.max_queue = n;
    }
    if let Some(seconds) = args.queue_timeout {
        limits.queue_timeout = Duration::from_secs(seconds);
    }
    if let Some(n) = args.max_models {
        limits.max_models = positive("--max-models", n)?;
    }
    if let Some(n) = args.max_model_bytes {
        limits.max_model_bytes = n;
    }
    let mut config = ServerConfig::new(args.model_dir.clone(), args.listen);
    config.model_keys = keys;
    if let Some(url) = &args.kbs {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::usage(
                "invalid-argument",
                format!("--kbs {url}: expected an http:// or https:// URL"),
            ));
        }
        let mut kbs = KbsConfig::new(url.clone());
        if let Some(path) = &args.kbs_ca {
            kbs.ca_pem = Some(std::fs::read(path).map_err(|e| Failure::io("read", path, &e))?);
        }
        kbs.max_backoff = Duration::from_secs(args.kbs_max_backoff.max(1));
        kbs.denied_retry = Duration::from_secs(args.kbs_denied_retry.max(1));
        config.kbs = Some(kbs);
    }
    config.metrics_listen = args.metrics_listen;
    config.hostnames = args.hostnames.clone();
    config.limits = limits;
    config.collateral = match (&args.collateral, args.platform) {
        (Some(path), _) => CollateralSource::File(path.clone()),
        (None, PlatformArg::Sim) => CollateralSource::Platform,
        (None, PlatformArg::Gramine) => CollateralSource::None,
    };
    Ok(config)
}

fn platform(args: &ServeArgs) -> Result<Arc<dyn Platform>, Failure> {
    match args.platform {
        PlatformArg::Sim => sim_platform(args),
        PlatformArg::Gramine => {
            if args.sim_dir.is_some() || args.sim_debug {
                return Err(Failure::usage(
                    "invalid-argument",
                    "--sim-dir and --sim-debug apply to --platform sim only",
                ));
            }
            let platform = cloak_tee::gramine::GraminePlatform::new();
            if !platform.is_available() {
                return Err(Failure::usage(
                    "platform-unavailable",
                    "no Gramine DCAP attestation here (/dev/attestation/attestation_type is not \
                     \"dcap\"); run inside gramine-sgx, or use --platform sim",
                ));
            }
            Ok(Arc::new(platform))
        }
    }
}

#[cfg(feature = "sim")]
fn sim_platform(args: &ServeArgs) -> Result<Arc<dyn Platform>, Failure> {
    let dir = args.sim_dir.as_ref().ok_or_else(|| {
        Failure::usage(
            "invalid-argument",
            "--platform sim needs --sim-dir (make one with `cloak sim init --dir DIR`)",
        )
    })?;
    let platform = cloak_tee::sim::SimPlatform::open(dir)
        .map_err(|e| Failure::usage("sim", format!("{}: {e}", dir.display())))?;
    let platform = if args.sim_debug {
        let mut identity = platform
            .identity()
            .map_err(|e| Failure::usage(e.code(), e.to_string()))?;
        identity.debug = true;
        platform.with_enclave(identity)
    } else {
        platform
    };
    Ok(Arc::new(platform))
}

#[cfg(not(feature = "sim"))]
fn sim_platform(_: &ServeArgs) -> Result<Arc<dyn Platform>, Failure> {
    Err(Failure::usage(
        "platform-unavailable",
        "this build has no simulated platform (built without the `sim` feature)",
    ))
}
