//! `cloak sim` with `cloak attest verify`, as scripts drive them.
#![cfg(feature = "sim")]

use std::path::Path;

use serde_json::Value;

mod support;
use support::{cloak, cloak_line, exe, ok, s};

/// A platform in a fresh directory, initialised with `extra` flags.
fn init(extra: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let platform = dir.path().join("platform");
    let mut args = vec!["sim", "init", "--dir", s(&platform)];
    args.extend_from_slice(extra);
    ok(&cloak(&args));
    dir
}

const REPORT_DATA: &str = "c0ffee";

fn report_data() -> String {
    format!("{REPORT_DATA}{}", "00".repeat(61))
}

/// Quotes with `extra` flags and verifies with `verify_flags`; returns (exit status, verdict).
fn quote_and_verify(dir: &Path, extra: &[&str], verify_flags: &[&str]) -> (i32, Value) {
    let platform = dir.join("platform");
    let quote = dir.join("quote.bin");
    let collateral = dir.join("collateral.json");
    let rd = report_data();
    let mut args = vec![
        "sim",
        "quote",
        "--dir",
        s(&platform),
        "--report-data",
        &rd,
        "--out",
        s(&quote),
        "--collateral-out",
        s(&collateral),
    ];
    args.extend_from_slice(extra);
    ok(&cloak(&args));
    let out = cloak_line(&format!(
        "attest verify --quote {} --collateral {} --json {}",
        s(&quote),
        s(&collateral),
        verify_flags.join(" ")
    ));
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
    )
}

fn root(dir: &Path) -> String {
    dir.join("platform/root.der").to_str().unwrap().to_owned()
}

#[test]
fn sim_quotes_are_accepted_only_with_the_simulation_root() {
    let dir = init(&[]);
    let root = root(dir.path());
    let (code, verdict) = quote_and_verify(dir.path(), &[], &["--trust-root", &root]);
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["tcb_status"], "UpToDate");
    assert_eq!(verdict["simulated"], true);
    assert_eq!(verdict["report_data"], report_data());
    let (code, verdict) = quote_and_verify(dir.path(), &[], &[]);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("untrusted-root"))
    );
}

#[test]
fn every_tcb_status_round_trips_through_the_cli() {
    for status in [
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
    ] {
        let dir = init(&["--tcb-status", status]);
        let root = root(dir.path());
        let (code, verdict) = quote_and_verify(
            dir.path(),
            &[],
            &["--trust-root", &root, "--allow-status", status],
        );
        assert_eq!(code, 0, "{status}: {verdict}");
        assert_eq!(verdict["tcb_status"], status);
        if status != "UpToDate" {
            let (code, verdict) = quote_and_verify(dir.path(), &[], &["--trust-root", &root]);
            assert_eq!(
                (code, verdict["reason"].as_str()),
                (1, Some("tcb-status-not-allowed")),
                "{status}"
            );
        }
    }
    let dir = init(&["--tcb-status", "Revoked"]);
    let root = root(dir.path());
    let (code, verdict) = quote_and_verify(dir.path(), &[], &["--trust-root", &root]);
    assert_eq!((code, verdict["reason"].as_str()), (1, Some("revoked")));
}

#[test]
fn revocation_and_debug_are_rejected_with_their_reasons() {
    let dir = init(&[]);
    let root = root(dir.path());
    let (code, verdict) = quote_and_verify(dir.path(), &["--debug"], &["--trust-root", &root]);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("debug-enclave"))
    );
    assert_eq!(verdict["measurements"]["debug"], true);

    ok(&cloak_line(&format!(
        "sim revoke --dir {}",
        s(&dir.path().join("platform"))
    )));
    let (code, verdict) = quote_and_verify(dir.path(), &[], &["--trust-root", &root]);
    assert_eq!((code, verdict["reason"].as_str()), (1, Some("revoked")));
}

#[test]
fn chosen_identities_appear_in_the_quote_and_the_default_measures_the_executable() {
    let dir = init(&[]);
    let root = root(dir.path());
    let mrenclave = "11".repeat(32);
    let mrsigner = "22".repeat(32);
    let (code, verdict) = quote_and_verify(
        dir.path(),
        &[
            "--mrenclave",
            &mrenclave,
            "--mrsigner",
            &mrsigner,
            "--isv-prod-id",
            "9",
            "--isv-svn",
            "4",
        ],
        &[
            "--trust-root",
            &root,
            "--expect-mrenclave",
            &mrenclave,
            "--expect-mrsigner",
            &mrsigner,
        ],
    );
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["measurements"]["isv_prod_id"], 9);
    assert_eq!(verdict["measurements"]["isv_svn"], 4);

    let (_, verdict) = quote_and_verify(dir.path(), &[], &["--trust-root", &root]);
    let expected = hex::encode(cloak_test_support::sim::measurement_of(&exe()));
    assert_eq!(verdict["measurements"]["mrenclave"], expected);
}

#[test]
fn sim_usage_errors_exit_2() {
    let dir = init(&[]);
    let platform = dir.path().join("platform");
    for args in [
        vec!["sim", "init", "--dir", s(&platform)],
        vec![
            "sim",
            "init",
            "--dir",
            "x",
            "--tcb-status",
            "TDRelaunchAdvised",
        ],
        vec!["sim", "init", "--dir", "x", "--fmspc", "00"],
        vec!["sim", "revoke", "--dir", s(dir.path())],
        vec![
            "sim",
            "quote",
            "--dir",
            s(&platform),
            "--report-data",
            "00",
            "--out",
            "q",
        ],
    ] {
        let out = cloak(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

/// `cloak sim measure` gives what the simulated platform gives a server: the executable's
/// SHA-256 alone, or with `--library`, a measurement that also covers the engine's library — a
/// different one for any other library.
#[test]
fn measure_covers_the_executable_and_the_engine_library() {
    let dir = tempfile::tempdir().unwrap();
    let executable = dir.path().join("server");
    let library = dir.path().join("libonnxruntime.so.1");
    std::fs::write(&executable, b"an executable").unwrap();
    std::fs::write(&library, b"a library").unwrap();
    let measure = |line: &str| {
        let out = cloak_line(line);
        ok(&out);
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let sha = |data: &[u8]| cloak_crypto::hash::sha256(data);
    assert_eq!(
        measure(&format!("sim measure {}", s(&executable))),
        hex::encode(sha(b"an executable"))
    );
    let with_library = measure(&format!(
        "sim measure {} --library {}",
        s(&executable),
        s(&library)
    ));
    assert_eq!(
        with_library,
        hex::encode(cloak_tee::sim::enclave_measurement(
            &sha(b"an executable"),
            &[sha(b"a library")]
        ))
    );
    std::fs::write(&library, b"another library").unwrap();
    assert_ne!(
        measure(&format!(
            "sim measure {} --library {}",
            s(&executable),
            s(&library)
        )),
        with_library
    );
}
