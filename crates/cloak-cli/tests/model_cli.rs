//! `cloak model` and `cloak demo` as a user runs them: real processes, real files, exit codes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const CHUNK: usize = 4096;

mod support;
use support::{cloak, cloak_line, exe};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn status(output: &Output) -> i32 {
    output.status.code().expect("exit code")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

fn model_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// Sorted names in `dir`, to prove no temporary files are left behind.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A directory with a model sealed into `model.cloak` (chunk size 4 KiB) under `model.key`.
struct Sealed {
    dir: tempfile::TempDir,
    model: PathBuf,
    container: PathBuf,
    key: PathBuf,
    plaintext: Vec<u8>,
}

impl Sealed {
    fn new(len: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model.onnx");
        let container = dir.path().join("model.cloak");
        let key = dir.path().join("model.key");
        let plaintext = model_bytes(len);
        fs::write(&model, &plaintext).unwrap();
        let out = cloak_line(&format!(
            "model encrypt {} --out {} --key-out {} --chunk-size 4096",
            path(&model),
            path(&container),
            path(&key)
        ));
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        Self {
            dir,
            model,
            container,
            key,
            plaintext,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        fs::read(&self.container).unwrap()
    }

    /// Writes `bytes` as a new container file and verifies it with `--json`.
    fn verify_variant(&self, bytes: &[u8]) -> (i32, Value) {
        let variant = self.dir.path().join("variant.cloak");
        fs::write(&variant, bytes).unwrap();
        self.verify_json(&variant, &self.key)
    }

    /// Verifies `bytes` as a container and requires exit `status` with error `code`.
    fn assert_variant_fails(&self, bytes: &[u8], status: i32, code: &str) {
        let (exit, report) = self.verify_variant(bytes);
        assert_eq!(exit, status, "{code}: {report}");
        assert_eq!(report["error"]["code"], code, "{report}");
    }

    fn verify_json(&self, container: &Path, key: &Path) -> (i32, Value) {
        let out = cloak_line(&format!(
            "model verify {} --key {} --json",
            path(container),
            path(key)
        ));
        (status(&out), serde_json::from_slice(&out.stdout).unwrap())
    }

    fn key_hex(&self) -> String {
        let text = fs::read_to_string(&self.key).unwrap();
        let line = text.lines().find(|l| !l.starts_with('#')).unwrap();
        line.split(':').nth(1).unwrap().to_owned()
    }
}

fn record(index: usize) -> std::ops::Range<usize> {
    let start = 256 + index * (CHUNK + 36);
    start..start + CHUNK + 36
}

#[test]
fn encrypt_inspect_verify_decrypt_round_trip() {
    let s = Sealed::new(3 * CHUNK + 123);
    let key_mode = fs::metadata(&s.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600);

    let inspect = cloak(&["model", "inspect", path(&s.container), "--json"]);
    assert_eq!(status(&inspect), 0);
    let header: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(header["name"], "model");
    assert_eq!(header["format_version"], 1);
    assert_eq!(header["algorithm"], "aes-256-gcm-stream");
    assert_eq!(header["plaintext_len"], 3 * CHUNK + 123);
    assert_eq!(header["chunk_count"], 4);
    assert_eq!(header["authenticated"], false);
    assert_eq!(header["file_len"], header["container_len"]);
    let sha = hex::encode(sha256sum(&s.plaintext));
    assert_eq!(header["plaintext_sha256"], sha.as_str());

    let text = cloak(&["model", "inspect", path(&s.container)]);
    assert_eq!(status(&text), 0);
    assert!(stdout(&text).contains("model name:        model"));
    assert!(stdout(&text).contains("(complete)"));

    let (code, report) = s.verify_json(&s.container, &s.key);
    assert_eq!(code, 0);
    assert_eq!(report["ok"], true);
    assert_eq!(report["header"]["authenticated"], true);
    assert_eq!(report["digest_checked"], false);

    let digest = cloak_line(&format!(
        "model verify {} --key {} --check-digest",
        path(&s.container),
        path(&s.key)
    ));
    assert_eq!(status(&digest), 0, "{}", stderr(&digest));
    assert!(stdout(&digest).starts_with("OK "));
    assert!(stdout(&digest).contains("recomputed and matches"));

    let out = s.dir.path().join("decrypted.onnx");
    let decrypt = cloak_line(&format!(
        "model decrypt {} --key {} --out {}",
        path(&s.container),
        path(&s.key),
        path(&out)
    ));
    assert_eq!(status(&decrypt), 0, "{}", stderr(&decrypt));
    assert_eq!(fs::read(&out).unwrap(), s.plaintext);
    assert_eq!(
        fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        entries(s.dir.path()),
        ["decrypted.onnx", "model.cloak", "model.key", "model.onnx"]
    );
}

fn sha256sum(data: &[u8]) -> Vec<u8> {
    // An independent SHA-256 implementation: coreutils.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    fs::write(&file, data).unwrap();
    let out = Command::new("sha256sum").arg(&file).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    hex::decode(text.split_whitespace().next().unwrap()).unwrap()
}

#[test]
fn name_defaults_to_the_file_stem_and_can_be_overridden() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("resnet-50.v2.onnx");
    fs::write(&model, b"weights").unwrap();
    let (model, key) = (path(&model), dir.path().join("k"));
    // Encrypts with `flags` into `file` and returns its header.
    let sealed = |file: &str, flags: String| -> Value {
        let out = dir.path().join(file);
        let run = cloak_line(&format!(
            "model encrypt {model} --out {} {flags}",
            path(&out)
        ));
        assert_eq!(status(&run), 0, "{}", stderr(&run));
        serde_json::from_slice(&cloak(&["model", "inspect", path(&out), "--json"]).stdout).unwrap()
    };
    let header = sealed("a.cloak", format!("--key-out {}", path(&key)));
    assert_eq!(header["name"], "resnet-50.v2");
    let header_b = sealed("b.cloak", format!("--key {} --name prod_model", path(&key)));
    assert_eq!(header_b["name"], "prod_model");
    assert_eq!(header_b["key_id"], header["key_id"], "--key reuses the key");
    assert_ne!(header_b["file_id"], header["file_id"]);
}

#[test]
fn an_unusable_name_is_a_usage_error_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("my model.onnx");
    fs::write(&model, b"weights").unwrap();
    // A path with a space: given as separate arguments, not as a line.
    let (out, key) = (dir.path().join("m.cloak"), dir.path().join("k"));
    let args = [
        "model",
        "encrypt",
        path(&model),
        "--out",
        path(&out),
        "--key-out",
        path(&key),
    ];
    let out = cloak(&args);
    assert_eq!(status(&out), 2);
    assert!(stderr(&out).contains("--name"), "{}", stderr(&out));
    assert_eq!(entries(dir.path()), ["my model.onnx"]);
}

#[test]
fn an_existing_key_file_is_never_overwritten_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.onnx");
    let key = dir.path().join("m.key");
    fs::write(&model, b"weights").unwrap();
    fs::write(&key, b"precious").unwrap();
    let encrypt = |extra: &str| {
        cloak_line(&format!(
            "model encrypt {} --out {} --key-out {}{extra}",
            path(&model),
            path(&dir.path().join("m.cloak")),
            path(&key)
        ))
    };
    let out = encrypt("");
    assert_eq!(status(&out), 2);
    assert!(stderr(&out).contains("refusing to overwrite"));
    // --force replaces outputs, never key files, and the refusal does not suggest it.
    assert!(!stderr(&out).contains("--force"), "{}", stderr(&out));
    let forced = encrypt(" --force");
    assert_eq!(status(&forced), 2);
    assert!(
        stderr(&forced).contains("never replaced"),
        "{}",
        stderr(&forced)
    );
    assert_eq!(fs::read(&key).unwrap(), b"precious");
    assert_eq!(entries(dir.path()), ["m.key", "m.onnx"]);
}

#[test]
fn usage_errors_exit_with_status_2() {
    let s = Sealed::new(10);
    let missing = s.dir.path().join("missing");
    let (model, key, container) = (path(&s.model), path(&s.key), path(&s.container));
    let (missing, dir) = (path(&missing), path(s.dir.path()));
    let cases = [
        format!("model encrypt {model} --out x.cloak"),
        format!("model encrypt {model} --out x.cloak --key {key} --key-out y.key"),
        format!("model verify {container}"),
        format!("model verify {missing} --key {key}"),
        format!("model verify {container} --key {missing}"),
        format!("model verify {container} --key {model}"),
        format!("model inspect {missing}"),
        format!("model inspect {model}"),
        format!("model inspect {dir}"),
        format!("model encrypt {model} --out {model} --key {key}"),
        format!("model encrypt {model} --out x.cloak --key {key} --chunk-size 100"),
        format!("model encrypt {model} --out {key} --key {key}"),
        format!("model decrypt {container} --key {key} --out {key}"),
        "model frobnicate".to_owned(),
    ];
    for line in cases {
        let out = cloak_line(&line);
        assert_eq!(status(&out), 2, "{line}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty(), "{line}");
    }
    assert_eq!(fs::read(&s.model).unwrap(), s.plaintext);
    assert!(fs::read_to_string(&s.key).unwrap().contains(&s.key_hex()));
}

#[test]
fn every_tampering_case_exits_1_with_its_specific_code() {
    let s = Sealed::new(3 * CHUNK);
    let original = s.bytes();

    let other = Sealed::new(3 * CHUNK);
    let foreign = other.bytes();
    // `other` has its own key; re-seal its model with ours for a same-key splice.
    let same_key = s.dir.path().join("same-key.cloak");
    let out = cloak_line(&format!(
        "model encrypt {} --out {} --key {} --chunk-size 4096",
        path(&s.model),
        path(&same_key),
        path(&s.key)
    ));
    assert_eq!(status(&out), 0);
    let sibling = fs::read(&same_key).unwrap();

    let mut header_flip = original.clone();
    header_flip[0x45] ^= 0x80;
    let mut body_flip = original.clone();
    body_flip[record(1).start + 100] ^= 0x01;
    let mut reordered = original.clone();
    reordered[record(0)].copy_from_slice(&original[record(2)]);
    reordered[record(2)].copy_from_slice(&original[record(0)]);
    let mut spliced = original.clone();
    spliced[record(1)].copy_from_slice(&sibling[record(1)]);
    let mut other_key_chunk = original.clone();
    other_key_chunk[record(1)].copy_from_slice(&foreign[record(1)]);
    let truncated = original[..original.len() - 1].to_vec();
    let dropped_last = original[..record(2).start].to_vec();
    let mut trailing = original.clone();
    trailing.push(0);

    let cases = [
        ("header-authentication", header_flip),
        ("chunk-authentication", body_flip),
        ("chunk-reordered", reordered),
        ("chunk-spliced", spliced),
        ("chunk-authentication", other_key_chunk),
        ("truncated", truncated),
        ("truncated", dropped_last),
        ("trailing-data", trailing),
    ];
    for (code, bytes) in cases {
        let (status, report) = s.verify_variant(&bytes);
        assert_eq!(status, 1, "{code}: {report}");
        assert_eq!(report["ok"], false);
        assert_eq!(report["error"]["code"], code, "{report}");
        assert_eq!(report["error"]["exit_status"], 1);
    }

    let (status, report) = s.verify_json(&s.container, &other.key);
    assert_eq!(status, 1);
    assert_eq!(report["error"]["code"], "wrong-key");
}

#[test]
fn unknown_versions_and_non_containers_exit_2() {
    let s = Sealed::new(100);
    let mut v9 = s.bytes();
    v9[8..10].copy_from_slice(&9u16.to_be_bytes());
    s.assert_variant_fails(&v9, 2, "unsupported-version");
    s.assert_variant_fails(
        b"definitely not a container, just some text",
        2,
        "not-container",
    );

    let inspect = cloak(&["model", "inspect", path(&s.model), "--json"]);
    assert_eq!(status(&inspect), 2);
    let report: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(report["error"]["code"], "not-container");
}

#[test]
fn a_failed_decrypt_leaves_no_output_and_keeps_an_existing_one() {
    let s = Sealed::new(3 * CHUNK);
    let mut tampered = s.bytes();
    // Damage the last chunk, so that earlier chunks were already decrypted when it fails.
    tampered[record(2).start + 50] ^= 0x10;
    let bad = s.dir.path().join("bad.cloak");
    fs::write(&bad, &tampered).unwrap();

    let fresh = s.dir.path().join("fresh.onnx");
    let out = cloak_line(&format!(
        "model decrypt {} --key {} --out {}",
        path(&bad),
        path(&s.key),
        path(&fresh)
    ));
    assert_eq!(status(&out), 1);
    assert!(stderr(&out).contains("chunk 2 failed authentication"));
    assert!(!fresh.exists());

    let existing = s.dir.path().join("existing.onnx");
    fs::write(&existing, b"keep me").unwrap();
    let out = cloak_line(&format!(
        "model decrypt {} --key {} --out {} --force",
        path(&bad),
        path(&s.key),
        path(&existing)
    ));
    assert_eq!(status(&out), 1);
    assert_eq!(fs::read(&existing).unwrap(), b"keep me");
    assert_eq!(
        entries(s.dir.path()),
        [
            "bad.cloak",
            "existing.onnx",
            "model.cloak",
            "model.key",
            "model.onnx"
        ]
    );
}

#[test]
fn no_output_ever_contains_key_material() {
    let s = Sealed::new(5000);
    let key_hex = s.key_hex();
    let other = Sealed::new(10);
    let runs = [
        cloak(&["model", "inspect", path(&s.container)]),
        cloak(&["model", "inspect", path(&s.container), "--json"]),
        cloak(&["model", "verify", path(&s.container), "--key", path(&s.key)]),
        cloak_line(&format!(
            "model verify {} --key {} --json",
            path(&s.container),
            path(&other.key)
        )),
        cloak_line(&format!(
            "model verify {} --key {}",
            path(&s.container),
            path(&s.model)
        )),
    ];
    for out in runs {
        let all = format!("{}{}", stdout(&out), stderr(&out)).to_lowercase();
        assert!(!all.contains(&key_hex.to_lowercase()), "{all}");
        assert!(!all.contains(&key_hex[..16].to_lowercase()), "{all}");
    }
}

#[test]
fn a_key_file_others_can_access_is_refused() {
    let s = Sealed::new(10);
    for mode in [0o644, 0o640, 0o604, 0o620] {
        fs::set_permissions(&s.key, fs::Permissions::from_mode(mode)).unwrap();
        let out = cloak(&["model", "verify", path(&s.container), "--key", path(&s.key)]);
        assert_eq!(status(&out), 2, "mode {mode:o}");
        assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    }
    fs::set_permissions(&s.key, fs::Permissions::from_mode(0o400)).unwrap();
    let out = cloak(&["model", "verify", path(&s.container), "--key", path(&s.key)]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
}

#[test]
fn a_key_file_owned_by_another_user_is_refused() {
    let s = Sealed::new(10);
    // Only root can give a file away; elsewhere there is nothing to test.
    if std::os::unix::fs::chown(&s.key, Some(65534), None).is_err() {
        cloak_test_support::deps::skip("cannot chown a key file to another user (not root)");
        return;
    }
    let out = cloak(&["model", "verify", path(&s.container), "--key", path(&s.key)]);
    assert_eq!(status(&out), 2);
    assert!(
        stderr(&out).contains("belongs to uid 65534"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn existing_outputs_are_replaced_only_with_force_and_only_if_regular_files() {
    let s = Sealed::new(100);
    let out_model = s.dir.path().join("out.onnx");
    fs::write(&out_model, b"keep me").unwrap();
    let (container, key, model) = (path(&s.container), path(&s.key), path(&s.model));
    let force = |force: bool| if force { "--force" } else { "" };
    let decrypt = |forced: bool| {
        cloak_line(&format!(
            "model decrypt {container} --key {key} --out {} {}",
            path(&out_model),
            force(forced)
        ))
    };
    let refused = decrypt(false);
    assert_eq!(status(&refused), 2);
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(fs::read(&out_model).unwrap(), b"keep me");
    let forced = decrypt(true);
    assert_eq!(status(&forced), 0, "{}", stderr(&forced));
    assert_eq!(fs::read(&out_model).unwrap(), s.plaintext);

    let reseal = |forced: bool| {
        cloak_line(&format!(
            "model encrypt {model} --out {container} --key {key} {}",
            force(forced)
        ))
    };
    let before = s.bytes();
    assert_eq!(status(&reseal(false)), 2);
    assert_eq!(s.bytes(), before);
    assert_eq!(status(&reseal(true)), 0);
    assert_ne!(s.bytes(), before);

    // A symbolic link is never replaced, not even with --force.
    let link = s.dir.path().join("link.onnx");
    std::os::unix::fs::symlink(&out_model, &link).unwrap();
    let out = cloak_line(&format!(
        "model decrypt {} --key {} --out {} --force",
        path(&s.container),
        path(&s.key),
        path(&link)
    ));
    assert_eq!(status(&out), 2);
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn an_empty_container_file_is_truncated() {
    let s = Sealed::new(10);
    s.assert_variant_fails(b"", 1, "truncated");
}

#[test]
fn an_absurd_creation_time_in_an_unauthenticated_header_does_not_crash_inspect() {
    let s = Sealed::new(10);
    let mut bytes = s.bytes();
    bytes[0x18..0x20].copy_from_slice(&253_402_300_800u64.to_be_bytes());
    let odd = s.dir.path().join("odd.cloak");
    fs::write(&odd, &bytes).unwrap();
    for json in [false, true] {
        let mut args = vec!["model", "inspect", path(&odd)];
        if json {
            args.push("--json");
        }
        let out = cloak(&args);
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        assert!(stdout(&out).contains("out of range"), "{}", stdout(&out));
    }
}

#[test]
fn a_full_stdout_is_an_error_not_a_panic_and_the_work_stands() {
    let s = Sealed::new(100);
    let out_model = s.dir.path().join("out.onnx");
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(exe())
        .args([
            "model",
            "decrypt",
            path(&s.container),
            "--key",
            path(&s.key),
            "--out",
            path(&out_model),
        ])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(status(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("standard output"), "{}", stderr(&out));
    assert_eq!(fs::read(&out_model).unwrap(), s.plaintext);
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut child = Command::new(exe())
        .args(["model", "inspect", path(&fifo)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("cloak blocked on a FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(code, Some(2));
}

#[test]
fn progress_is_shown_for_large_files_only_on_a_terminal() {
    let s = Sealed::new(10);
    let big = s.dir.path().join("big.bin");
    let big_container = s.dir.path().join("big.cloak");
    fs::write(&big, vec![0u8; 65 * 1024 * 1024]).unwrap();
    let out = cloak_line(&format!(
        "model encrypt {} --out {} --key {}",
        path(&big),
        path(&big_container),
        path(&s.key)
    ));
    assert_eq!(status(&out), 0);
    assert!(
        stderr(&out).is_empty(),
        "no TTY, no progress: {}",
        stderr(&out)
    );

    // `script` runs the command on a pseudo-terminal.
    let command = format!(
        "{} model verify {} --key {}",
        exe().display(),
        path(&big_container),
        path(&s.key)
    );
    let Ok(out) = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .output()
    else {
        cloak_test_support::deps::missing(
            "CLOAK_REQUIRE_SCRIPT",
            "the terminal half needs `script` (util-linux), which is not installed",
        );
        return;
    };
    assert_eq!(status(&out), 0, "{}", stdout(&out));
    let terminal = stdout(&out);
    assert!(terminal.contains("verifying"), "{terminal}");
    assert!(terminal.contains("OK "), "{terminal}");
}

#[cfg(all(feature = "sim", feature = "kbs"))]
#[test]
fn demo_runs_on_embedded_defaults_and_cleans_up() {
    let started = std::time::Instant::now();
    let out = cloak(&["demo"]);
    assert_eq!(status(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    // The broker released the key to the pinned build and refused the other model.
    assert!(text.contains("ACCEPTED: SIMULATED SGX enclave"), "{text}");
    assert!(text.contains("serves demo-mlp"), "{text}");
    assert!(
        text.contains("demo-mlp-next: UNAVAILABLE") && text.contains("measurement-mismatch"),
        "{text}"
    );
    assert!(text.contains("release demo-mlp       granted"), "{text}");
    assert!(text.contains("release demo-mlp-next  denied"), "{text}");
    // Three encrypted inferences, each with a verified receipt; one checked offline, and a
    // changed response refused.
    assert_eq!(text.matches("verified)").count(), 3, "{text}");
    assert!(text.contains("VALID: model demo-mlp"), "{text}");
    assert!(
        text.contains("rejected (receipt-output-mismatch)"),
        "{text}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let root = text
        .lines()
        .next()
        .and_then(|l| l.split("working in ").nth(1))
        .unwrap();
    assert!(
        !Path::new(root).exists(),
        "temporary demo directory left behind"
    );
}

#[cfg(all(feature = "sim", feature = "kbs"))]
#[test]
fn demo_keeps_its_files_in_a_given_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = cloak(&["demo", "--dir", path(dir.path())]);
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(dir.path().join("host/models/demo-mlp.cloak").exists());
    // The released key, sealed to the enclave beside its container.
    assert!(
        dir.path()
            .join("host/models/demo-mlp.cloak.sealed-key")
            .exists()
    );
    assert!(
        !dir.path()
            .join("host/models/demo-mlp-next.cloak.sealed-key")
            .exists()
    );
    let token = dir.path().join("model-owner/kbs-admin.token");
    assert_eq!(
        fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second run refuses to mix with the first one's files.
    let again = cloak(&["demo", "--dir", path(dir.path())]);
    assert_eq!(status(&again), 2);
}
