//! Running the `cloak` binary from integration tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `cloak ARGS` to completion.
pub(crate) fn cloak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloak"))
        .args(args)
        .output()
        .expect("run cloak")
}

/// A path as a command-line argument.
pub(crate) fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Asserts that a run succeeded, showing its output when it did not.
pub(crate) fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
