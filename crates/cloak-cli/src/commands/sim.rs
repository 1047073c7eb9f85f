//! `cloak sim`: create and drive a simulated SGX platform (for machines without SGX).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use cloak_tee::Identity;
use cloak_tee::sim::{SimConfig, SimPlatform, TcbStatusName, executable_measurement};

use crate::Reported;
use crate::args::hex_arg;
use crate::failure::Failure;
use crate::files;

/// Largest executable measured.
const MAX_EXECUTABLE: u64 = 1 << 30;

/// `cloak sim …`
#[derive(Debug, Subcommand)]
pub(crate) enum SimCommand {
    /// Create a simulated SGX platform: a simulation PKI (root named SIMULATED), PCK and TCB
    /// signing certificates, keys and a platform secret; DIR/root.der is the root clients trust
    Init(InitArgs),
    /// Put the platform's PCK certificate on its CRL
    Revoke(DirArgs),
    /// Produce a DCAP v3 quote (and optionally its collateral) from the simulated platform
    Quote(QuoteArgs),
    /// Print the MRENCLAVE the simulated platform gives a process running EXECUTABLE (the
    /// SHA-256 of its bytes, or with --library, of it and the engine's library): what a data
    /// owner pins for `cloak-server --platform sim`
    Measure(MeasureArgs),
}

/// Arguments of `cloak sim measure`.
#[derive(Debug, Args)]
pub(crate) struct MeasureArgs {
    /// The executable (such as target/release/cloak-server)
    #[arg(value_name = "EXECUTABLE")]
    executable: PathBuf,
    /// The ONNX Runtime library the server loads (its --onnxruntime-lib), a trusted file of
    /// the simulated enclave
    #[arg(long = "library", value_name = "PATH")]
    libraries: Vec<PathBuf>,
}

/// Arguments of `cloak sim init`.
#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The platform directory (created if needed; must not hold a platform)
    #[arg(long)]
    dir: PathBuf,
    /// The TCB status the platform's TCB info gives it (UpToDate, SWHardeningNeeded,
    /// ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate,
    /// OutOfDateConfigurationNeeded, Revoked)
    #[arg(long, value_name = "STATUS", default_value = "UpToDate")]
    tcb_status: String,
    /// The platform model (6 bytes, hex)
    #[arg(long, value_name = "HEX", default_value = "51AA00000001")]
    fmspc: String,
    /// An advisory id attached to the platform's TCB level; repeatable
    #[arg(long = "advisory", value_name = "ID")]
    advisories: Vec<String>,
}

/// A platform directory.
#[derive(Debug, Args)]
pub(crate) struct DirArgs {
    /// The platform directory
    #[arg(long)]
    dir: PathBuf,
}

/// Arguments of `cloak sim quote`.
#[derive(Debug, Args)]
pub(crate) struct QuoteArgs {
    /// The platform directory
    #[arg(long)]
    dir: PathBuf,
    /// The 64 bytes of report data (hex)
    #[arg(long, value_name = "HEX")]
    report_data: String,
    /// MRENCLAVE [default: SHA-256 of the running `cloak` executable]
    #[arg(long, value_name = "HEX")]
    mrenclave: Option<String>,
    /// MRSIGNER [default: SHA-256 of the simulation signer's public key]
    #[arg(long, value_name = "HEX")]
    mrsigner: Option<String>,
    /// ISVPRODID
    #[arg(long, value_name = "N", default_value_t = 0)]
    isv_prod_id: u16,
    /// ISVSVN
    #[arg(long, value_name = "N", default_value_t = 0)]
    isv_svn: u16,
    /// Produce a debug enclave's quote
    #[arg(long)]
    debug: bool,
    /// Where to write the quote (binary; replaced if it exists)
    #[arg(long, value_name = "QUOTE")]
    out: PathBuf,
    /// Also write fresh collateral (QuoteCollateralV3 JSON, valid for 30 days) here
    #[arg(long, value_name = "FILE")]
    collateral_out: Option<PathBuf>,
}

/// Runs a `cloak sim` command.
pub(crate) fn run(command: SimCommand) -> Result<(), Reported> {
    match command {
        SimCommand::Init(args) => init(&args)?,
        SimCommand::Revoke(args) => {
            let mut platform = open(&args.dir)?;
            platform.revoke().map_err(|e| sim_failure(&args.dir, &e))?;
            say!(
                "revoked: {} now lists the PCK certificate on its PCK CRL",
                args.dir.display()
            )?;
        }
        SimCommand::Quote(args) => quote(&args)?,
        SimCommand::Measure(args) => {
            let bytes = files::read_limited(&args.executable, MAX_EXECUTABLE, "executable")?;
            let executable = cloak_crypto::hash::sha256(&bytes);
            let mut libraries = Vec::with_capacity(args.libraries.len());
            for path in &args.libraries {
                let bytes = files::read_limited(path, MAX_EXECUTABLE, "library")?;
                libraries.push(cloak_crypto::hash::sha256(&bytes));
            }
            let measurement = cloak_tee::sim::enclave_measurement(&executable, &libraries);
            say!("{}", hex::encode(measurement))?;
        }
    }
    Ok(())
}

fn init(args: &InitArgs) -> Result<(), Failure> {
    let tcb_status: TcbStatusName = args
        .tcb_status
        .parse()
        .map_err(|e: cloak_tee::sim::SimError| Failure::usage("invalid-argument", e.to_string()))?;
    let fmspc = hex_arg::<6>("--fmspc", &args.fmspc)?;
    let config = SimConfig {
        tcb_status,
        fmspc,
        advisories: args.advisories.clone(),
    };
    let platform = SimPlatform::init(&args.dir, &config).map_err(|e| sim_failure(&args.dir, &e))?;
    let root = args.dir.join("root.der");
    say!(
        "created a SIMULATED SGX platform in {} (TCB status {}, FMSPC {})",
        args.dir.display(),
        tcb_status,
        hex::encode_upper(fmspc)
    )?;
    say!(
        "trust root: {} (sha256 {}) — pass it to `cloak attest verify --trust-root`",
        root.display(),
        hex::encode(cloak_crypto::hash::sha256(platform.root_der()))
    )?;
    Ok(())
}

fn quote(args: &QuoteArgs) -> Result<(), Failure> {
    let report_data = hex_arg::<64>("--report-data", &args.report_data)?;
    let platform = open(&args.dir)?;
    let mrenclave = match &args.mrenclave {
        Some(hex) => hex_arg::<32>("--mrenclave", hex)?,
        None => executable_measurement().map_err(|e| sim_failure(&args.dir, &e))?,
    };
    let mrsigner = match &args.mrsigner {
        Some(hex) => hex_arg::<32>("--mrsigner", hex)?,
        None => platform
            .signer_mrsigner()
            .map_err(|e| sim_failure(&args.dir, &e))?,
    };
    let identity = Identity {
        mrenclave,
        mrsigner,
        isv_prod_id: args.isv_prod_id,
        isv_svn: args.isv_svn,
        debug: args.debug,
    };
    let platform = platform.with_enclave(identity);
    let quote = platform
        .quote(&report_data)
        .map_err(|e| sim_failure(&args.dir, &e))?;
    files::write_replacing(&args.out, &quote, "quote")?;
    if let Some(path) = &args.collateral_out {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let collateral = platform
            .collateral(now)
            .map_err(|e| sim_failure(&args.dir, &e))?;
        files::write_replacing(path, &collateral, "collateral")?;
    }
    say!(
        "wrote a SIMULATED SGX quote to {} (MRENCLAVE {}, MRSIGNER {}, ISVPRODID {}, ISVSVN {}{})",
        args.out.display(),
        hex::encode(mrenclave),
        hex::encode(mrsigner),
        args.isv_prod_id,
        args.isv_svn,
        if args.debug { ", DEBUG" } else { "" }
    )
}

fn open(dir: &Path) -> Result<SimPlatform, Failure> {
    SimPlatform::open(dir).map_err(|e| sim_failure(dir, &e))
}

fn sim_failure(dir: &Path, error: &cloak_tee::sim::SimError) -> Failure {
    Failure::usage("sim", format!("{}: {error}", dir.display()))
}
