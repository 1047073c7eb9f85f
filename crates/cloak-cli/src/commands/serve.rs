//! `cloak serve`: the inference server inside the `cloak` binary, for development and tests.
//!
//! It takes exactly the flags of `cloak-server` ([`cloak_server::cli::ServeArgs`]) and runs the
//! same code. Deploy `cloak-server` into the enclave instead: under a TEE (and on the simulated
//! platform) the measurement is the whole executable's, and the `cloak` binary also holds the
//! client, the proxy, the key broker's admin client and the tools, so any change to any of them
//! would change MRENCLAVE.

use cloak_server::cli::ServeArgs;

use crate::Reported;
use crate::failure::Failure;

pub(crate) fn run(args: &ServeArgs) -> Result<(), Reported> {
    cloak_server::cli::run(args, "cloak serve")
        .map_err(|e| Failure::usage(e.code(), e.to_string()).into())
}
