//! Loading the ONNX Runtime library: every way it can be wrong is a typed error at start (never
//! a crash), and the library loaded is described exactly — its own version string and the
//! SHA-256 of its bytes. One test, in its own process, because a process loads one library.

use std::path::Path;

use cloak_engine::{Engine, EngineKind};

#[test]
fn a_wrong_library_is_a_typed_error_and_the_right_one_is_described_exactly() {
    let Some(real) = cloak_test_support::deps::onnxruntime_library() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let refused = |path: &Path, why: &str| {
        let err = Engine::onnxruntime(path).unwrap_err();
        assert_eq!(err.code(), "engine-unavailable", "{err}");
        let message = err.to_string();
        assert!(message.contains(why), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    };

    refused(&dir.path().join("missing.so"), "No such file");
    let text = dir.path().join("libonnxruntime.so.1.32.0");
    std::fs::write(&text, "not a shared library").unwrap();
    refused(&text, "failed to load");
    // A real shared library that is not ONNX Runtime: the wheel's provider bridge.
    let bridge = real.with_file_name("libonnxruntime_providers_shared.so");
    if bridge.exists() {
        refused(&bridge, "OrtGetApiBase");
    } else {
        cloak_test_support::deps::skip(&format!("{} is not there", bridge.display()));
    }
    if let Some(old) = cloak_test_support::deps::fake_onnxruntime(dir.path(), "1.20.0") {
        refused(&old, "1.20.0");
    }

    let engine = Engine::onnxruntime(&real).unwrap();
    let info = engine.info();
    assert_eq!(info.kind(), EngineKind::OnnxRuntime);
    let library = info.library().unwrap();
    let bytes = std::fs::read(&real).unwrap();
    assert_eq!(library.sha256(), cloak_crypto::hash::sha256(&bytes));
    assert_eq!(library.bytes(), bytes.len() as u64);
    assert_eq!(library.path(), real.canonicalize().unwrap());
    // The wheel names the file after the version the library reports.
    let name = real.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        name.strip_prefix("libonnxruntime.so."),
        Some(info.version()),
        "{name}"
    );
    // The same library again is the same runtime; another one is refused (one per process).
    assert_eq!(Engine::onnxruntime(&real).unwrap().info(), info);
    let copy = dir.path().join("libonnxruntime.so.copy");
    std::fs::copy(&real, &copy).unwrap();
    refused(&copy, "one library per process");
}

/// The tract version claims name is the one `Cargo.lock` links.
#[test]
fn tract_reports_the_version_it_links() {
    let lock =
        std::fs::read_to_string(cloak_test_support::deps::repo_root().join("Cargo.lock")).unwrap();
    let locked = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"tract-onnx\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"'))
        .unwrap();
    let info = Engine::tract().info().clone();
    assert_eq!(info.kind(), EngineKind::Tract);
    assert_eq!(info.version(), locked);
    assert!(info.library().is_none());
}
