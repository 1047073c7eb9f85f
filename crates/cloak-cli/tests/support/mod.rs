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
