//! The `cloak` binary under test, for the CLI's test binaries; the rest of the shared fixtures
//! are in `cloak-test-support`.

#![allow(dead_code, unused_imports)]

use std::path::PathBuf;
use std::process::Output;

pub(crate) use cloak_test_support::cli::{ok, s};

/// The `cloak` binary cargo built for these tests.
pub(crate) fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cloak"))
}

/// Runs `cloak ARGS` to completion.
pub(crate) fn cloak(args: &[&str]) -> Output {
    cloak_test_support::cli::run(&exe(), args)
}

/// Runs `cloak` with `line` split at whitespace (test paths hold none), so a command reads as
/// it would be typed: `cloak_line(&format!("model verify {container} --key {key}"))`.
pub(crate) fn cloak_line(line: &str) -> Output {
    let args: Vec<&str> = line.split_whitespace().collect();
    cloak(&args)
}
