//! The container specification (crates/cloak-crypto/README.md) against an independent Python
//! implementation of it (tests/python/cloak_container.py): containers sealed by `cloak` open in
//! Python, and containers sealed in Python open in `cloak`.
//!
//! Needs a Python with the `cryptography` package: `$CLOAK_PYTHON`, else `.venv/bin/python` at the
//! repository root (which `.ci/run` creates), else `python3`. Without one the tests say so and
//! pass, unless `CLOAK_REQUIRE_PYTHON=1` (set by `.ci/run`), which makes them fail instead.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;
use support::{cloak_line, s};

fn repo_root() -> PathBuf {
    cloak_test_support::deps::repo_root()
}

fn python() -> Option<PathBuf> {
    cloak_test_support::deps::python(&["cryptography"])
}

fn reference(python: &Path, args: &[&Path]) -> std::process::Output {
    Command::new(python)
        .arg(repo_root().join("tests/python/cloak_container.py"))
        .args(args)
        .output()
        .expect("run the Python reference implementation")
}

fn model(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 97) as u8).collect()
}

#[test]
fn containers_sealed_by_cloak_open_in_the_python_reference() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    for (i, (len, chunk)) in [
        (0, 4096),
        (1, 4096),
        (4096, 4096),
        (3 * 4096 + 7, 4096),
        (1_500_000, 1_048_576),
    ]
    .into_iter()
    .enumerate()
    {
        let plaintext = model(len);
        let input = dir.path().join(format!("m{i}.bin"));
        let container = dir.path().join(format!("m{i}.cloak"));
        let output = dir.path().join(format!("m{i}.out"));
        fs::write(&input, &plaintext).unwrap();
        let key_flag = if i == 0 { "--key-out" } else { "--key" };
        let sealed = cloak_line(&format!(
            "model encrypt {} --out {} {} {} --chunk-size {}",
            s(&input),
            s(&container),
            key_flag,
            s(&key),
            &chunk.to_string()
        ));
        assert!(sealed.status.success(), "{sealed:?}");
        let opened = reference(&python, &[Path::new("open"), &container, &key, &output]);
        assert!(opened.status.success(), "len {len}: {opened:?}");
        assert_eq!(fs::read(&output).unwrap(), plaintext, "len {len}");
    }

    // The reference is a real verifier too: it rejects a flipped bit.
    let container = dir.path().join("m3.cloak");
    let mut bytes = fs::read(&container).unwrap();
    bytes[300] ^= 1;
    let tampered = dir.path().join("tampered.cloak");
    fs::write(&tampered, bytes).unwrap();
    let rejected = reference(
        &python,
        &[Path::new("open"), &tampered, &key, &dir.path().join("x")],
    );
    assert_eq!(rejected.status.code(), Some(1), "{rejected:?}");
}

#[test]
fn containers_sealed_by_the_python_reference_open_in_cloak() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let seed = dir.path().join("seed.bin");
    fs::write(&seed, b"seed").unwrap();
    let made = cloak_line(&format!(
        "model encrypt {} --out {} --key-out {}",
        s(&seed),
        s(&dir.path().join("seed.cloak")),
        s(&key)
    ));
    assert!(made.status.success(), "{made:?}");

    for (len, chunk) in [(0usize, 4096usize), (10_000, 4096), (2 * 4096, 4096)] {
        let plaintext = model(len);
        let input = dir.path().join("py-model.bin");
        let container = dir.path().join("py.cloak");
        let output = dir.path().join("py.out");
        fs::write(&input, &plaintext).unwrap();
        let sealed = reference(
            &python,
            &[
                Path::new("seal"),
                &input,
                &key,
                Path::new("py-model"),
                Path::new(&chunk.to_string()),
                &container,
            ],
        );
        assert!(sealed.status.success(), "{sealed:?}");
        let verified = cloak_line(&format!(
            "model verify {} --key {} --check-digest",
            s(&container),
            s(&key)
        ));
        assert!(verified.status.success(), "len {len}: {verified:?}");
        let _ = fs::remove_file(&output);
        let opened = cloak_line(&format!(
            "model decrypt {} --key {} --out {}",
            s(&container),
            s(&key),
            s(&output)
        ));
        assert!(opened.status.success(), "len {len}: {opened:?}");
        assert_eq!(fs::read(&output).unwrap(), plaintext, "len {len}");
    }
}
