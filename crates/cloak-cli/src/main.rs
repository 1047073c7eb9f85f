//! `cloak`: confidential AI inference — seal models, broker their keys, attest, serve and use
//! them (directly, encrypted through proxies, or through the local verifying proxy), check
//! receipts and measure the cost. See the repository README for the whole picture.

/// `println!` that reports a failed write to stdout (a closed pipe, a full disk) as a
/// [`failure::Failure`] instead of panicking.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(crate::failure::Failure::stdout)
    }};
}

mod args;
mod commands;
mod failure;
mod files;
mod report;
mod runtime;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(all(feature = "sim", feature = "kbs"))]
use crate::commands::demo;
#[cfg(feature = "kbs")]
use crate::commands::kbs;
use crate::commands::{attest, infer, model, proxy, receipt, serve, token};
#[cfg(feature = "sim")]
use crate::commands::{bench, sim};
use crate::failure::Failure;

/// Cloak: confidential AI inference. Models and inputs are plaintext only inside a trusted
/// execution environment; everyone else sees ciphertext.
///
/// Exit status for every command: 0 success; 1 verification or authentication failure
/// (tampered, truncated or foreign data, wrong key); 2 bad usage or unreadable input.
#[derive(Debug, Parser)]
#[command(name = "cloak", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Seal a model into an encrypted container, and open, verify or inspect containers
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Verify remote-attestation evidence (DCAP quotes, RA-TLS certificates)
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Serve sealed models: attested TLS, fresh attestation, encrypted requests, the KServe v2 /
    /// Triton protocol, metrics. A development convenience: deploy the `cloak-server` binary
    /// into the enclave, whose measurement no CLI change affects
    Serve(Box<cloak_server::cli::ServeArgs>),
    #[cfg(feature = "kbs")]
    /// Run the model owner's key broker, which releases model keys only to attested enclaves,
    /// and administer it
    #[command(subcommand)]
    Kbs(kbs::KbsCommand),
    /// Appraise a Cloak server, then run one KServe v2 inference request on it; the request is
    /// never sent to a server the policy rejects (exit 1)
    Infer(Box<infer::InferArgs>),
    /// Serve plain KServe v2 on a loopback address and forward it to an appraised Cloak
    /// server over attested TLS or encapsulated requests, checking every receipt
    Proxy(Box<proxy::ProxyArgs>),
    /// Check inference receipts offline
    #[command(subcommand)]
    Receipt(receipt::ReceiptCommand),
    /// Make a model owner's access-token key, and sign tokens that let a client query a model
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Create and drive a simulated SGX platform (for machines without SGX)
    #[cfg(feature = "sim")]
    #[command(subcommand)]
    Sim(sim::SimCommand),
    /// Measure the confidentiality tax: in-process engine latency against end-to-end latency
    /// over attested TLS and encrypted requests, and throughput at several concurrencies
    #[cfg(feature = "sim")]
    Bench(Box<bench::BenchArgs>),
    /// Run the whole flow on embedded defaults: a simulated platform, a model owner with a
    /// key broker, a server that gets its key by attestation, a data owner sending encrypted
    /// requests and checking receipts, and a release refused for a wrong measurement
    #[cfg(all(feature = "sim", feature = "kbs"))]
    Demo(demo::DemoArgs),
}

/// mimalloc, not the system allocator: a request's buffers (hundreds of KB for an image) are
/// reused from one request to the next, where glibc's allocator returns them to the kernel
/// and page-faults them back in, a measurable part of each request's cost (see
/// ARCHITECTURE.md, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Model(command) => model::run(command),
        Command::Attest(command) => attest::run(command),
        Command::Serve(args) => serve::run(&args),
        #[cfg(feature = "kbs")]
        Command::Kbs(command) => kbs::run(command),
        Command::Infer(args) => infer::run(&args),
        Command::Receipt(command) => receipt::run(command),
        Command::Token(command) => token::run(command),
        Command::Proxy(args) => proxy::run(&args),
        #[cfg(feature = "sim")]
        Command::Sim(command) => sim::run(command),
        #[cfg(all(feature = "sim", feature = "kbs"))]
        Command::Demo(args) => demo::run(&args),
        #[cfg(feature = "sim")]
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Reported(code)) => code,
    }
}

/// A failure that has already been reported to the user; carries the exit code.
#[derive(Debug)]
struct Reported(ExitCode);

impl From<Failure> for Reported {
    fn from(failure: Failure) -> Self {
        eprintln!("error: {failure}");
        Self(failure.exit_code())
    }
}
