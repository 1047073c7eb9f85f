//! `cloak-server`: the confidential inference server, and the only program the enclave runs.
//!
//! It holds the serving path alone — the server, the engine, the TEE backends, the wire types and
//! the cryptography — and none of the `cloak` CLI's client, proxy, key-broker, model or benchmark
//! code, so the enclave's trusted computing base is what serving needs and a change to a
//! CLI-only command leaves MRENCLAVE alone. Flags: `cloak-server --help`.

use std::process::ExitCode;

use clap::Parser;
use cloak_server::cli::ServeArgs;

/// Serve sealed models from inside the TEE: attested TLS, fresh attestation, encrypted
/// requests, the KServe v2 / Triton protocol and metrics.
///
/// Exit status: 0 after a clean shutdown (SIGINT or SIGTERM); 2 when the server cannot start.
#[derive(Debug, Parser)]
#[command(name = "cloak-server", version, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// mimalloc, not the system allocator: a request's buffers (hundreds of KB for an image) are
/// reused from one request to the next, where glibc's allocator returns them to the kernel and
/// page-faults them back in (see ARCHITECTURE.md, "What a request costs").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cloak_server::cli::run(&cli.serve, "cloak-server") {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            ExitCode::from(2)
        }
    }
}
