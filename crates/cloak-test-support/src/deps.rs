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

/// The ONNX Runtime shared library the `onnxruntime` engine loads: `$CLOAK_ONNXRUNTIME_LIB`
/// (the variable `cloak serve` reads), else the one in the repository's `.venv` (the
/// `onnxruntime` wheel ships it as `onnxruntime/capi/libonnxruntime.so.<version>`). `None` (after
/// skipping out loud, or failing under `CLOAK_REQUIRE_ONNXRUNTIME=1`) when there is none.
pub fn onnxruntime_library() -> Option<PathBuf> {
    let found = std::env::var_os("CLOAK_ONNXRUNTIME_LIB")
        .map(PathBuf::from)
        .or_else(|| venv_onnxruntime_library(&repo_root().join(".venv")));
    if found.is_none() {
        missing(
            "CLOAK_REQUIRE_ONNXRUNTIME",
            "no ONNX Runtime library (pip install -r tests/python/requirements.txt into .venv, \
             or set CLOAK_ONNXRUNTIME_LIB)",
        );
    }
    found
}

/// `lib/python3.*/site-packages/onnxruntime/capi/libonnxruntime.so.*` under a virtualenv.
pub fn venv_onnxruntime_library(venv: &Path) -> Option<PathBuf> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .map(|python| python.path().join("site-packages/onnxruntime/capi"))
        .filter_map(|capi| std::fs::read_dir(capi).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
}

/// A shared library that looks like ONNX Runtime `version` to a loader — it exports
/// `OrtGetApiBase`, whose version string says so — but provides no API (`GetApi` returns
/// nothing), built in `dir` with the system's C compiler; `None` (skipped out loud) without one.
pub fn fake_onnxruntime(dir: &Path, version: &str) -> Option<PathBuf> {
    let source = dir.join(format!("fake-onnxruntime-{version}.c"));
    let library = dir.join(format!("libfake-onnxruntime.so.{version}"));
    let code = format!(
        "typedef struct {{ const void *(*get_api)(unsigned); const char *(*version)(void); }} \
         base_t;\n\
         static const void *get_api(unsigned v) {{ (void)v; return 0; }}\n\
         static const char *version(void) {{ return \"{version}\"; }}\n\
         static const base_t base = {{ get_api, version }};\n\
         const base_t *OrtGetApiBase(void) {{ return &base; }}\n"
    );
    std::fs::write(&source, code).expect("the C source");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .status();
    match built {
        Ok(status) if status.success() => Some(library),
        _ => {
            skip("no C compiler (cc) to build a fake ONNX Runtime library");
            None
        }
    }
}
