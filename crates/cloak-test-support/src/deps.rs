//! Optional test dependencies: Python packages (an independent implementation of the container
//! format, onnxruntime, the unmodified `tritonclient`), nginx, util-linux's `script`.
//!
//! A test that needs one and does not find it is skipped and says so on standard error — written
//! directly, past the test harness's capture, so `cargo test` shows it — unless the matching
//! `CLOAK_REQUIRE_*` variable is `1`, which `.ci/run` sets once it has installed them: then the
//! test fails instead.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Says that a test (or part of one) is skipped, and why, where `cargo test` shows it.
pub fn skip(why: &str) {
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {why}");
}

/// A dependency is missing: fails when `require_var` is `1`, else skips out loud.
pub fn missing(require_var: &str, what: &str) {
    assert!(
        std::env::var(require_var).as_deref() != Ok("1"),
        "{require_var}=1 but {what}"
    );
    skip(what);
}

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python that can import every module in `modules`: `$CLOAK_PYTHON`, else the repository's
/// `.venv` (which `.ci/run` makes from `tests/python/requirements.txt`), else `python3`. `None`
/// (after skipping out loud, or failing under `CLOAK_REQUIRE_PYTHON=1`) when there is none.
pub fn python(modules: &[&str]) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("CLOAK_PYTHON").map(PathBuf::from),
        Some(repo_root().join(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    let imports = format!("import {}", modules.join(", "));
    let found = candidates.into_iter().flatten().find(|python| {
        Command::new(python)
            .args(["-c", &imports])
            .output()
            .is_ok_and(|out| out.status.success())
    });
    if found.is_none() {
        missing(
            "CLOAK_REQUIRE_PYTHON",
            &format!(
                "no Python with {} (pip install -r tests/python/requirements.txt)",
                modules.join(", ")
            ),
        );
    }
    found
}

/// Debian's nginx, or `None` (skipped out loud, or failing under `CLOAK_REQUIRE_NGINX=1`).
pub fn nginx() -> Option<PathBuf> {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        missing(
            "CLOAK_REQUIRE_NGINX",
            "there is no nginx (apt-get install nginx-light)",
        );
    }
    found
}
