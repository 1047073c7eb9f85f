//! The process around a command: its async runtime and, for the long-running ones, logging and
//! shutdown on a signal. Logging and signals are the server's own setup
//! ([`cloak_server::cli`]), so every long-running Cloak process logs and stops alike.

use tokio::runtime::Runtime;

use crate::failure::Failure;

pub(crate) use cloak_server::cli::{LogFormat, init_logging, shutdown_signal};

/// A runtime for a long-running command (a listener, many concurrent requests).
pub(crate) fn multi_thread() -> Result<Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(cannot_start)
}

/// A runtime for a command that makes a few requests and exits.
pub(crate) fn current_thread() -> Result<Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(cannot_start)
}

fn cannot_start(error: std::io::Error) -> Failure {
    Failure::usage("runtime", format!("cannot start the runtime: {error}"))
}
