//! `cloak attest` as scripts use it: real quotes and collateral from `cloak-attest/testdata`.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn testdata(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cloak-attest/testdata")
        .join(path)
}

mod support;
use support::{cloak, cloak_line, s};

/// Runs `cloak` with `args` then `extra`; returns the exit status and the JSON it printed (none,
/// `Null`, for bad usage: exit 2 says so on stderr).
fn run_json(args: &[&str], extra: &[&str]) -> (i32, Value) {
    let out = cloak(&[args, extra].concat());
    let code = out.status.code().unwrap();
    let verdict = match serde_json::from_slice(&out.stdout) {
        Ok(verdict) => verdict,
        Err(_) if code == 2 => Value::Null,
        Err(e) => panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    (code, verdict)
}

/// Runs `cloak attest verify ... --json`; returns the exit status and the verdict.
fn verify(quote: &str, collateral: &str, at: u64, extra: &[&str]) -> (i32, Value) {
    let quote = testdata(quote);
    let collateral = testdata(collateral);
    let at = at.to_string();
    let args = [
        "attest",
        "verify",
        "--quote",
        s(&quote),
        "--collateral",
        s(&collateral),
        "--at",
        &at,
        "--json",
    ];
    run_json(&args, extra)
}

fn pem_der(path: &str) -> Vec<u8> {
    pem::parse(std::fs::read(testdata(path)).unwrap())
        .unwrap()
        .into_contents()
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(testdata("expected.json")).unwrap()).unwrap()
}

const SGX: &str = "dcap-qvl/sgx_quote";
const SGX_COLLATERAL: &str = "dcap-qvl/sgx_quote_collateral.json";
const AT: u64 = 1_751_328_000;
const SGX_ALLOW: [&str; 4] = [
    "--allow-status",
    "ConfigurationAndSWHardeningNeeded",
    "--allow-advisory",
    "*",
];

#[test]
fn every_recorded_vector_gets_its_verdict_status_and_advisories() {
    for v in expected()["vectors"].as_array().unwrap() {
        let Some(collateral) = v["collateral"].as_str() else {
            continue;
        };
        let id = v["id"].as_str().unwrap();
        let quote = v["quote"].as_str().unwrap();
        let at = v["verify_at"].as_u64().unwrap();
        let expect = &v["expect"];
        let result = expect["result"].as_str().unwrap();
        if result == "ok" || result.starts_with("error when debug") {
            let statuses = if result == "ok" {
                expect
            } else {
                &expect["with_allow_debug"]
            };
            let status = statuses["tcb_status"].as_str().unwrap();
            let mut extra = vec!["--allow-status", status, "--allow-debug"];
            let advisories: Vec<&str> = statuses["advisory_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            for advisory in &advisories {
                extra.extend_from_slice(&["--allow-advisory", advisory]);
            }
            let (code, verdict) = verify(quote, collateral, at, &extra);
            assert_eq!(code, 0, "{id}: {verdict}");
            assert_eq!(verdict["verdict"], "accepted", "{id}");
            assert_eq!(verdict["tcb_status"], status, "{id}");
            assert_eq!(
                verdict["advisory_ids"],
                serde_json::json!(advisories),
                "{id}"
            );
            assert_eq!(verdict["trust_root"], "intel", "{id}");
            let tee = if v["quote_info"]["tee_type"] == "0x81" {
                "tdx"
            } else {
                "sgx"
            };
            assert_eq!(verdict["tee"], tee, "{id}");
            assert!(verdict["measurements"].is_object(), "{id}");
            assert_eq!(
                verdict["report_data"], v["quote_info"]["report_data"],
                "{id}"
            );
        } else {
            let (code, verdict) = verify(quote, collateral, at, &[]);
            assert_eq!(code, 1, "{id}");
            assert_eq!(verdict["reason"], "tcb-not-supported", "{id}");
            assert!(verdict.get("tcb_status").is_none(), "{id}");
        }

        let from = v["valid_from"].as_u64().unwrap();
        let until = v["valid_until"].as_u64().unwrap();
        let (code, early) = verify(quote, collateral, from - 1, &["--allow-debug"]);
        assert_eq!(
            (code, early["reason"].as_str()),
            (1, Some("collateral-not-yet-valid")),
            "{id}"
        );
        let (code, late) = verify(quote, collateral, until + 1, &["--allow-debug"]);
        assert_eq!(
            (code, late["reason"].as_str()),
            (1, Some("collateral-expired")),
            "{id}"
        );
    }
}

#[test]
fn the_strict_default_rejects_but_still_reports_the_verified_status() {
    let (code, verdict) = verify(SGX, SGX_COLLATERAL, AT, &[]);
    assert_eq!(code, 1);
    assert_eq!(verdict["verdict"], "rejected");
    assert_eq!(verdict["reason"], "tcb-status-not-allowed");
    assert_eq!(verdict["tcb_status"], "ConfigurationAndSWHardeningNeeded");
    assert_eq!(
        verdict["advisory_ids"],
        serde_json::json!(["INTEL-SA-00289", "INTEL-SA-00615"])
    );
    assert_eq!(verdict["measurements"]["debug"], false);

    let (code, verdict) = verify(
        SGX,
        SGX_COLLATERAL,
        AT,
        &["--allow-status", "ConfigurationAndSWHardeningNeeded"],
    );
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("advisory-not-allowed"))
    );
}

#[test]
fn the_debug_vector_is_rejected_by_default_and_accepted_with_allow_debug() {
    let quote = "automata-dcap-rs/quote_sgx.bin";
    let collateral = "automata-dcap-rs/quote_sgx.collateral.qvl.json";
    let at = 1_724_962_800;
    let (code, verdict) = verify(quote, collateral, at, &SGX_ALLOW);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("debug-enclave"))
    );
    assert_eq!(verdict["measurements"]["debug"], true);
    let mut allow = SGX_ALLOW.to_vec();
    allow.push("--allow-debug");
    let (code, verdict) = verify(quote, collateral, at, &allow);
    assert_eq!(code, 0, "{verdict}");
}

#[test]
fn expected_identity_and_report_data_are_enforced() {
    let mrenclave = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
    let mrsigner = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6";
    let report_data = format!("0x48656c6c6f2c20776f726c6421{}", "00".repeat(51));
    let mut args = SGX_ALLOW.to_vec();
    args.extend_from_slice(&[
        "--expect-mrenclave",
        mrenclave,
        "--expect-mrsigner",
        mrsigner,
        "--expect-report-data",
        &report_data,
    ]);
    let (code, verdict) = verify(SGX, SGX_COLLATERAL, AT, &args);
    assert_eq!(code, 0, "{verdict}");

    let wrong = "00".repeat(32);
    for (flag, code_expected) in [
        ("--expect-mrenclave", "measurement-mismatch"),
        ("--expect-mrsigner", "measurement-mismatch"),
    ] {
        let mut args = SGX_ALLOW.to_vec();
        args.extend_from_slice(&[flag, &wrong]);
        let (code, verdict) = verify(SGX, SGX_COLLATERAL, AT, &args);
        assert_eq!(
            (code, verdict["reason"].as_str()),
            (1, Some(code_expected)),
            "{flag}"
        );
    }
    let mut args = SGX_ALLOW.to_vec();
    let other_data = "11".repeat(64);
    args.extend_from_slice(&["--expect-report-data", &other_data]);
    let (code, verdict) = verify(SGX, SGX_COLLATERAL, AT, &args);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("report-data-mismatch"))
    );
}

#[test]
fn hex_quotes_are_read_with_or_without_0x() {
    for quote in ["dcap-qvl/tdx-quote.hex", "dcap-qvl/quote-from-tappd.hex"] {
        let (code, verdict) = verify(quote, "dcap-qvl/tdx_quote_collateral.json", AT, &[]);
        assert_eq!(code, 1, "{quote}");
        assert_eq!(verdict["tee"], "tdx", "{quote}");
        assert_eq!(verdict["reason"], "tcb-not-supported", "{quote}");
    }
}

#[test]
fn a_policy_file_is_applied_and_its_mistakes_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        r#"
allowed_tcb_statuses = ["UpToDate", "ConfigurationAndSWHardeningNeeded"]
allowed_advisories = ["*"]
[sgx]
mrsigner = ["815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"]
isv_prod_id = 0
"#,
    )
    .unwrap();
    let (code, verdict) = verify(SGX, SGX_COLLATERAL, AT, &["--policy", s(&policy)]);
    assert_eq!(code, 0, "{verdict}");
    // A TDX quote does not satisfy a policy that describes only SGX.
    let (code, verdict) = verify(
        "dcap-qvl/tdx_quote",
        "dcap-qvl/tdx_quote_collateral.json",
        AT,
        &["--policy", s(&policy)],
    );
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("tee-mismatch"))
    );

    std::fs::write(&policy, "allow_debugg = true\n").unwrap();
    let out = cloak_line(&format!(
        "attest verify --quote {} --collateral {} --policy {}",
        s(&testdata(SGX)),
        s(&testdata(SGX_COLLATERAL)),
        s(&policy)
    ));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_debugg"));
}

#[test]
fn another_trust_root_rejects_intel_quotes_as_untrusted() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("other-root.der");
    std::fs::write(
        &root,
        pem_der("intel-qvl-synthetic/sgx/trustedRootCaCert.pem"),
    )
    .unwrap();
    let (code, verdict) = verify(SGX, SGX_COLLATERAL, AT, &["--trust-root", s(&root)]);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("untrusted-root"))
    );
    assert_ne!(verdict["trust_root"], "intel");
}

#[test]
fn broken_quotes_are_rejected_with_a_reason_and_bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, [0xFFu8; 100]).unwrap();
    let collateral = testdata(SGX_COLLATERAL);
    let run = |quote: &Path, extra: &[&str]| {
        let mut args = vec![
            "attest",
            "verify",
            "--quote",
            s(quote),
            "--collateral",
            s(&collateral),
            "--json",
        ];
        args.extend_from_slice(extra);
        cloak(&args)
    };
    let out = run(&garbage, &[]);
    assert_eq!(out.status.code(), Some(1));
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["reason"], "unsupported-quote-format");

    let mut quote = std::fs::read(testdata(SGX)).unwrap();
    quote.truncate(2000);
    let truncated = dir.path().join("truncated.bin");
    std::fs::write(&truncated, quote).unwrap();
    let verdict: Value = serde_json::from_slice(&run(&truncated, &[]).stdout).unwrap();
    assert_eq!(verdict["reason"], "malformed-quote");

    assert_eq!(run(&dir.path().join("missing"), &[]).status.code(), Some(2));
    assert_eq!(
        run(&testdata(SGX), &["--allow-status", "Bogus"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        run(&testdata(SGX), &["--expect-mrenclave", "abcd"])
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn inspect_cert_reads_and_binds_the_real_ra_tls_certificates() {
    for (cert, carriers) in [
        ("ratls/gramine-cert.pem", 2),
        ("ratls/intel-sgxsdk-cert.pem", 2),
        ("ratls/rats-tls-cert.pem", 1),
    ] {
        let out = cloak(&["attest", "inspect-cert", s(&testdata(cert)), "--json"]);
        assert_eq!(out.status.code(), Some(0), "{cert}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["binds"], true, "{cert}");
        assert_eq!(
            report["evidence"].as_array().unwrap().len(),
            carriers,
            "{cert}"
        );
        assert_eq!(report["preferred"], "tcg-dice-tagged-evidence", "{cert}");
        for evidence in report["evidence"].as_array().unwrap() {
            assert_eq!(evidence["quote"]["measurements"]["debug"], true, "{cert}");
        }
        let text = cloak(&["attest", "inspect-cert", s(&testdata(cert))]);
        assert_eq!(text.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&text.stdout).contains("binds the key"));
    }
    let not_cert = cloak(&["attest", "inspect-cert", s(&testdata(SGX_COLLATERAL))]);
    assert_eq!(not_cert.status.code(), Some(2));
    let no_evidence = cloak_line(&format!(
        "attest inspect-cert {}",
        s(&testdata("intel-root/Intel_SGX_Root_CA.der"))
    ));
    assert_eq!(no_evidence.status.code(), Some(2));
}

#[test]
fn inspect_cert_exits_1_when_the_key_is_not_bound() {
    let mut der = pem_der("ratls/rats-tls-cert.pem");
    // Flip a byte of the public key (P-256 point, the 65 bytes after the SPKI's OIDs).
    let marker = [0x03, 0x42, 0x00, 0x04];
    let at = der.windows(4).position(|w| w == marker).unwrap() + 10;
    der[at] ^= 1;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tampered.der");
    std::fs::write(&path, der).unwrap();
    let out = cloak(&["attest", "inspect-cert", s(&path), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["binds"], false);
}

#[test]
fn command_line_expectations_replace_the_policy_files_lists() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "allowed_tcb_statuses = [\"ConfigurationAndSWHardeningNeeded\"]\nallowed_advisories = [\"*\"]\n[sgx]\nmrenclave = [\"33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb\"]\n",
    )
    .unwrap();
    let (code, _) = verify(SGX, SGX_COLLATERAL, AT, &["--policy", s(&policy)]);
    assert_eq!(code, 0);
    let other = "11".repeat(32);
    let (code, verdict) = verify(
        SGX,
        SGX_COLLATERAL,
        AT,
        &["--policy", s(&policy), "--expect-mrenclave", &other],
    );
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("measurement-mismatch"))
    );
}

#[test]
fn verdicts_say_whether_the_quote_verified() {
    let (_, accepted) = verify(SGX, SGX_COLLATERAL, AT, &SGX_ALLOW);
    assert_eq!(accepted["verified"], true);
    let (_, policy_rejected) = verify(SGX, SGX_COLLATERAL, AT, &[]);
    assert_eq!(policy_rejected["verified"], true);
    let (_, expired) = verify(SGX, SGX_COLLATERAL, 1_800_000_000, &[]);
    assert_eq!(expired["verified"], false);
    assert!(expired.get("tcb_status").is_none());
}

#[test]
fn hex_quotes_may_be_wrapped_and_unusable_inputs_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let wrapped = dir.path().join("quote.hex");
    let quote = std::fs::read(testdata(SGX)).unwrap();
    let text: String = hex::encode(quote)
        .as_bytes()
        .chunks(60)
        .map(|line| format!("{}\n", std::str::from_utf8(line).unwrap()))
        .collect();
    std::fs::write(&wrapped, text).unwrap();
    let out = cloak_line(&format!(
        "attest verify --quote {} --collateral {} --at 1751328000 --json",
        s(&wrapped),
        s(&testdata(SGX_COLLATERAL))
    ));
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["tee"], "sgx");
    assert_eq!(verdict["reason"], "tcb-status-not-allowed");

    let empty = dir.path().join("collateral.json");
    std::fs::write(&empty, "{}").unwrap();
    let bad_root = dir.path().join("root.der");
    std::fs::write(&bad_root, "garbage").unwrap();
    for args in [
        vec!["--collateral", s(&empty)],
        vec![
            "--collateral",
            s(&testdata(SGX_COLLATERAL)),
            "--trust-root",
            s(&bad_root),
        ],
    ] {
        let mut full = vec!["attest", "verify", "--quote", s(&wrapped)];
        full.extend_from_slice(&args);
        let out = cloak(&full);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

const OE: &str = "openenclave";
/// CREATION_DATETIME of each OE endorsements file, the time Open Enclave verifies at.
const OE_AT: u64 = 1_651_016_590;
const OE_OLDER_AT: u64 = 1_649_278_165;
const OE_MRENCLAVE: &str = "91dd79e47cae70787883e617838c7c981cc9744ebac9756c8ce03f09057538ac";

/// Runs `cloak attest verify --quote Q --endorsements E ... --json`.
fn verify_oe(quote: &str, endorsements: &str, extra: &[&str]) -> (i32, Value) {
    let quote = testdata(&format!("{OE}/{quote}"));
    let endorsements = testdata(&format!("{OE}/{endorsements}"));
    let args = [
        "attest",
        "verify",
        "--quote",
        s(&quote),
        "--endorsements",
        s(&endorsements),
        "--json",
    ];
    run_json(&args, extra)
}

#[test]
fn open_enclave_evidence_is_verified_with_its_endorsements() {
    let at = OE_AT.to_string();
    // Authentic, but a debug enclave: the default policy refuses it for that reason.
    let (code, verdict) = verify_oe("evidence", "endorsements", &["--at", &at]);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("debug-enclave")),
        "{verdict}"
    );
    assert_eq!(verdict["verified"], true);
    assert_eq!(verdict["tcb_status"], "SWHardeningNeeded");
    assert_eq!(verdict["qe_tcb_status"], "UpToDate");
    assert_eq!(verdict["endorsements_created_at"], OE_AT);
    assert_eq!(verdict["collateral_window"]["valid_until"], 1_653_604_765);
    // Allowing debug still leaves a TCB status the strict default refuses.
    let (code, verdict) = verify_oe("evidence", "endorsements", &["--at", &at, "--allow-debug"]);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("tcb-status-not-allowed")),
        "{verdict}"
    );
    let accept = [
        "--at",
        &at,
        "--allow-debug",
        "--allow-status",
        "SWHardeningNeeded",
        "--expect-mrenclave",
        OE_MRENCLAVE,
    ];
    let (code, verdict) = verify_oe("evidence", "endorsements", &accept);
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["trust_root"], "intel");
    assert_eq!(verdict["measurements"]["mrenclave"], OE_MRENCLAVE);
    // Another enclave is another measurement.
    let mut other = accept.to_vec();
    other[6] = "451fbca0f4ecb12ba896c7562f6d38c88c6343b0ccdbe42174f12ff88c7f8beb";
    let (code, verdict) = verify_oe("evidence", "endorsements", &other);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("measurement-mismatch"))
    );
    // The older pair, at its own creation time.
    let older_at = OE_OLDER_AT.to_string();
    let (code, verdict) = verify_oe(
        "older/evidence",
        "older/endorsements",
        &[
            "--at",
            &older_at,
            "--allow-debug",
            "--allow-status",
            "SWHardeningNeeded",
        ],
    );
    assert_eq!(code, 0, "{verdict}");
    // Today the 2022 endorsements have long expired.
    let (code, verdict) = verify_oe("evidence", "endorsements", &[]);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("collateral-expired"))
    );
}

#[test]
fn open_enclave_reports_are_refused_for_what_is_wrong_with_them() {
    // The 2019 reports have no collateral of their own; the 2022 endorsements are for another
    // platform, but every check that fails on these comes before the TCB is matched.
    let at = OE_AT.to_string();
    for (report, reason) in [
        // A changed character in the PCK Processor CA: no longer issued by the Intel root.
        ("sgx_report_bad.bin", "untrusted-root"),
        // The attestation key's signature over the report does not verify.
        ("sgx_report_bad_tcb.bin", "signature-invalid"),
    ] {
        let (code, verdict) = verify_oe(report, "endorsements", &["--at", &at, "--allow-debug"]);
        assert_eq!(
            (code, verdict["reason"].as_str()),
            (1, Some(reason)),
            "{report}: {verdict}"
        );
        assert_eq!(verdict["format"], "oe-report", "{report}");
        assert_eq!(verdict["verified"], false);
    }
}

#[test]
fn collateral_and_endorsements_are_one_or_the_other() {
    let quote = testdata(SGX);
    let collateral = testdata(SGX_COLLATERAL);
    let endorsements = testdata(&format!("{OE}/endorsements"));
    let both = cloak(&[
        "attest",
        "verify",
        "--quote",
        s(&quote),
        "--collateral",
        s(&collateral),
        "--endorsements",
        s(&endorsements),
    ]);
    assert_eq!(both.status.code(), Some(2));
    let neither = cloak(&["attest", "verify", "--quote", s(&quote)]);
    assert_eq!(neither.status.code(), Some(2));
    // Endorsements that are not endorsements are unreadable input.
    let wrong = cloak(&[
        "attest",
        "verify",
        "--quote",
        s(&quote),
        "--endorsements",
        s(&collateral),
    ]);
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("endorsements header"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

/// `cloak attest inspect-quote FILE --json [extra]`: exit code and report.
fn inspect(path: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["attest", "inspect-quote", s(path), "--json"];
    args.extend_from_slice(extra);
    let out = cloak(&args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), report)
}

#[test]
fn inspect_quote_reads_quotes_and_every_open_enclave_wrapper() {
    let facts: Value =
        serde_json::from_slice(&std::fs::read(testdata(&format!("{OE}/facts.json"))).unwrap())
            .unwrap();
    let (code, report) = inspect(&testdata(&format!("{OE}/evidence")), &[]);
    assert_eq!(code, 0);
    let expect = &facts["vectors"][0]["quote"];
    assert_eq!(report["format"], "dcap-quote");
    assert_eq!(report["verified"], false);
    assert_eq!(report["tee"], "sgx");
    assert_eq!(report["quote_len"], 4599);
    assert_eq!(report["measurements"]["mrenclave"], expect["mrenclave"]);
    assert_eq!(report["measurements"]["mrsigner"], expect["mrsigner"]);
    assert_eq!(report["measurements"]["isv_prod_id"], expect["isvprodid"]);
    assert_eq!(report["measurements"]["isv_svn"], expect["isvsvn"]);
    assert_eq!(report["measurements"]["debug"], true);
    assert_eq!(report["report_data"], expect["report_data"]);
    assert_eq!(report["pck"]["fmspc"], "00906ED50000");
    assert_eq!(report["pck"]["pce_svn"], 11);
    assert_eq!(
        report["pck"]["tcb_components"],
        expect["pck"]["tcb_comp_svns"]
    );

    // An OE remote report: the header is unwrapped, the quote inside is what is shown.
    let (code, report) = inspect(&testdata(&format!("{OE}/sgx_report_bad_tcb.bin")), &[]);
    assert_eq!(code, 0);
    assert_eq!(report["format"], "oe-report");
    assert_eq!(report["quote_len"], 4579);
    assert_eq!(
        report["measurements"]["mrenclave"],
        "bc4531c3eb9f4ad7e6d91c8f7564c0099aa9074fe8fed7db62a1af7bd85a8fef"
    );
    assert_eq!(report["measurements"]["isv_prod_id"], 0);
    assert_eq!(report["pck"]["fmspc"], "00906EA10000");

    // The same quote in OE's attestation header (format SGX_ECDSA) with one custom claim
    // after it, bound or not by the report data.
    let dir = tempfile::tempdir().unwrap();
    let quote = std::fs::read(testdata(&format!("{OE}/evidence"))).unwrap();
    let mut claims = Vec::new();
    for word in [1_u64, 1, 5, 3] {
        claims.extend_from_slice(&word.to_le_bytes());
    }
    claims.extend_from_slice(b"name\0abc");
    let mut data = quote.clone();
    data.extend_from_slice(&claims);
    let mut wrapped = 3_u32.to_le_bytes().to_vec();
    wrapped.extend_from_slice(&hex::decode("a3a21e871b4d4014b70aa125d2fbcd8c").unwrap());
    wrapped.extend_from_slice(&[0; 4]);
    wrapped.extend_from_slice(&(data.len() as u64).to_le_bytes());
    wrapped.extend_from_slice(&data);
    let path = dir.path().join("wrapped.bin");
    std::fs::write(&path, &wrapped).unwrap();
    let (code, report) = inspect(&path, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["format"], "oe-evidence");
    assert_eq!(report["oe_format"]["name"], "OE_FORMAT_UUID_SGX_ECDSA");
    assert_eq!(
        report["oe_format"]["uuid"],
        "a3a21e87-1b4d-4014-b70a-a125d2fbcd8c"
    );
    assert_eq!(report["custom_claims"]["claims"][0]["name"], "name");
    assert_eq!(report["custom_claims"]["claims"][0]["value"], "616263");
    // The quote's report data is SHA-256 of the empty string, so these claims are not bound.
    assert_eq!(report["custom_claims"]["bound"], false);
    let text = cloak(&["attest", "inspect-quote", s(&path)]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("NOT bound by the report data"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // Hex text is read like binary.
    let hex_path = dir.path().join("evidence.hex");
    std::fs::write(&hex_path, hex::encode(&quote)).unwrap();
    let (code, report) = inspect(&hex_path, &[]);
    assert_eq!((code, report["quote_len"].as_u64()), (0, Some(4599)));

    // A named format that does not fit, a non-quote, a missing file.
    let (code, report) = inspect(
        &testdata(&format!("{OE}/evidence")),
        &["--format", "oe-report"],
    );
    assert_eq!(
        (code, report["readable"].as_bool()),
        (1, Some(false)),
        "{report}"
    );
    // Endorsements start as an OE report header does ({1, 2, ...}): a broken report.
    let (code, report) = inspect(&testdata(&format!("{OE}/endorsements")), &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["reason"], "malformed-quote");
    let (code, report) = inspect(&testdata(SGX_COLLATERAL), &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["reason"], "unsupported-quote-format");
    let (code, _) = inspect(&dir.path().join("missing"), &[]);
    assert_eq!(code, 2);
}

#[test]
fn evidence_whose_claims_the_report_data_does_not_bind_is_refused() {
    // OE evidence with a custom claim its report data does not bind: authentic quote, but the
    // claims are not the enclave's.
    let dir = tempfile::tempdir().unwrap();
    let mut evidence = std::fs::read(testdata(&format!("{OE}/evidence"))).unwrap();
    for word in [1_u64, 1, 2, 1] {
        evidence.extend_from_slice(&word.to_le_bytes());
    }
    evidence.extend_from_slice(b"k\0v");
    let path = dir.path().join("claims.bin");
    std::fs::write(&path, &evidence).unwrap();
    let endorsements = testdata(&format!("{OE}/endorsements"));
    let at = OE_AT.to_string();
    let out = cloak(&[
        "attest",
        "verify",
        "--quote",
        s(&path),
        "--endorsements",
        s(&endorsements),
        "--at",
        &at,
        "--allow-debug",
        "--allow-status",
        "SWHardeningNeeded",
        "--json",
    ]);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{verdict}");
    assert_eq!(verdict["reason"], "report-data-mismatch");
    assert_eq!(verdict["custom_claims"]["bound"], false);
    assert_eq!(verdict["verified"], true, "the quote itself verified");
}

#[test]
fn inspect_cert_reads_open_enclave_and_azure_attestation_certificates() {
    for (file, exit, self_signature) in [
        ("openenclave/tls_between_host_enclave_cert.der", 0, "valid"),
        ("openenclave/sgx_cert_ec_bad_tcb.der", 0, "valid"),
        ("openenclave/sgx_cert_rsa_bad_tcb.der", 0, "valid"),
        // One base64 character of the embedded PCK leaf or root changed after signing.
        ("openenclave/sgx_cert_ec_bad.der", 1, "invalid"),
        ("openenclave/sgx_cert_rsa_bad.der", 1, "invalid"),
        // Azure Attestation's 2020 signing certificate: an RSA-1024 key, not verified.
        ("azure-maa/derived/sample.signing.cert.der", 0, "unchecked"),
    ] {
        let out = cloak(&["attest", "inspect-cert", s(&testdata(file)), "--json"]);
        assert_eq!(out.status.code(), Some(exit), "{file}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["self_signature"]["state"], self_signature, "{file}");
        assert_eq!(report["binds"], true, "{file}");
        let evidence = &report["evidence"][0];
        assert_eq!(evidence["carrier"], "open-enclave-report-legacy", "{file}");
        assert_eq!(evidence["binding"]["kind"], "oe-pem-sha256", "{file}");
        assert_eq!(evidence["quote"]["tee"], "sgx", "{file}");
    }
    let out = cloak(&[
        "attest",
        "inspect-cert",
        s(&testdata("azure-maa/derived/maa.prod.uks.signing.cert.der")),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("5eaa887fb1744de9a13ef95967faa264a5d025512952549c69f541566cbff209"),
        "{text}"
    );
    assert!(text.contains("not checked (an RSA-1024 key)"), "{text}");
    // A signing certificate without a quote is not an attested certificate.
    let out = cloak(&[
        "attest",
        "inspect-cert",
        s(&testdata("azure-maa/derived/eus2.signing.cert.der")),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

const MAA: &str = "azure-maa/recorded";
const MAA_AT: &str = "1654041600";
const MAA_ISSUER: &str = "https://sharedwus.wus.attest.azure.net";
const MAA_MRENCLAVE: &str = "292a1f4b519e46627eb2478a3d9851405653c5b4b0a6925de843834d9216850e";

/// Runs `cloak attest verify-token TOKEN --jwks JWKS ... --json`.
fn verify_token(token: &str, extra: &[&str]) -> (i32, Value) {
    let token = testdata(&format!("{MAA}/{token}"));
    let jwks = testdata(&format!("{MAA}/jwks.json"));
    let args = [
        "attest",
        "verify-token",
        s(&token),
        "--jwks",
        s(&jwks),
        "--json",
    ];
    run_json(&args, extra)
}

#[test]
fn recorded_azure_attestation_tokens_are_refused_for_debug_and_accepted_when_pinned() {
    let runtime = testdata(&format!("{MAA}/sdk_runtime_data.bin"));
    for n in 1..=6 {
        let token = format!("token-{n}.jwt");
        let (code, verdict) = verify_token(&token, &["--at", MAA_AT, "--issuer", MAA_ISSUER]);
        assert_eq!(
            (code, verdict["reason"].as_str()),
            (1, Some("debug-enclave")),
            "{token}: {verdict}"
        );
        assert_eq!(verdict["verified"], true);
        let (code, verdict) = verify_token(
            &token,
            &[
                "--at",
                MAA_AT,
                "--issuer",
                MAA_ISSUER,
                "--allow-debug",
                "--expect-mrenclave",
                MAA_MRENCLAVE,
                "--expect-mrsigner",
                "4aea5f9a0ed04b11f889aadfe6a1d376213a29a95a85ce7337ae6f7fece6610c",
                "--expect-ehd",
                s(&runtime),
            ],
        );
        assert_eq!(code, 0, "{token}: {verdict}");
        assert_eq!(verdict["measurements"]["isv_svn"], 1);
        assert_eq!(verdict["algorithm"], "RS256");
    }
}

#[test]
fn every_token_negative_has_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = std::fs::read(testdata(&format!("{MAA}/sdk_runtime_data.bin"))).unwrap();
    let without_nul = dir.path().join("runtime.bin");
    std::fs::write(&without_nul, &runtime[..runtime.len() - 1]).unwrap();
    let debug = ["--at", MAA_AT, "--allow-debug"];
    let zeros = "00".repeat(32);
    let ones = "11".repeat(64);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("token-1.jwt", vec![], "token-expired"),
        (
            "token-1.jwt",
            vec!["--at", "1654037275"],
            "token-not-yet-valid",
        ),
        (
            "token-1.jwt",
            vec![
                "--at",
                MAA_AT,
                "--issuer",
                "https://sharedeus.eus.attest.azure.net",
            ],
            "token-issuer-mismatch",
        ),
        (
            "token-1.jwt",
            [debug.as_slice(), &["--expect-mrenclave", &zeros]].concat(),
            "measurement-mismatch",
        ),
        (
            "token-3.jwt",
            [debug.as_slice(), &["--expect-ehd", s(&without_nul)]].concat(),
            "enclave-held-data-mismatch",
        ),
        (
            "token-5.jwt",
            [debug.as_slice(), &["--expect-report-data", &ones]].concat(),
            "report-data-mismatch",
        ),
        (
            "negative-alg-none-draft-policy.jwt",
            debug.to_vec(),
            "token-algorithm-not-allowed",
        ),
    ];
    for (token, extra, reason) in cases {
        let (code, verdict) = verify_token(token, &extra);
        assert_eq!(
            (code, verdict["reason"].as_str()),
            (1, Some(reason)),
            "{token} {extra:?}: {verdict}"
        );
    }
    // A token with one character of its signature changed.
    let mut tampered = std::fs::read(testdata(&format!("{MAA}/token-1.jwt"))).unwrap();
    let last = tampered.len() - 5;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let path = dir.path().join("tampered.jwt");
    std::fs::write(&path, &tampered).unwrap();
    let jwks = testdata(&format!("{MAA}/jwks.json"));
    let out = cloak(&[
        "attest",
        "verify-token",
        s(&path),
        "--jwks",
        s(&jwks),
        "--at",
        MAA_AT,
        "--json",
    ]);
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["reason"], "signature-invalid", "{verdict}");
    // Bad usage: flags that only mean something for quotes, a JWKS that is not one.
    let (code, _) = verify_token("token-1.jwt", &["--allow-status", "OutOfDate"]);
    assert_eq!(code, 2);
    let out = cloak(&[
        "attest",
        "verify-token",
        s(&testdata(&format!("{MAA}/token-1.jwt"))),
        "--jwks",
        s(&testdata(SGX_COLLATERAL)),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_attestation_services_own_enclave_is_appraised_with_verify_signer() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("signer.toml");
    // The MAA enclave of 2022 was a debug build, on a SWHardeningNeeded platform.
    std::fs::write(
        &policy,
        "allowed_tcb_statuses = [\"UpToDate\", \"SWHardeningNeeded\"]\nallow_debug = true\n\
         [sgx]\nmrenclave = [\"b3cdb7c6d8da25088334d8864c06794f0cd7f505708abe44cc074c1e6ae0e283\"]\n",
    )
    .unwrap();
    let endorsements = testdata(&format!("{OE}/endorsements"));
    let base = [
        "--at",
        MAA_AT,
        "--allow-debug",
        "--expect-mrenclave",
        MAA_MRENCLAVE,
        "--verify-signer",
        s(&policy),
        "--signer-endorsements",
        s(&endorsements),
    ];
    // The only collateral of its platform family here is Open Enclave's of 2022-04-26, valid to
    // 2022-05-26; the signing certificate's PCK certificate dates from 2022-05-09. Inside both:
    let (code, verdict) = verify_token(
        "token-1.jwt",
        &[base.as_slice(), &["--signer-at", "1653004800"]].concat(),
    );
    assert_eq!(code, 0, "{verdict}");
    assert_eq!(verdict["signer"]["verdict"], "accepted");
    assert_eq!(verdict["signer"]["carrier"], "open-enclave-report");
    assert_eq!(verdict["signer"]["tcb_status"], "SWHardeningNeeded");
    assert_eq!(verdict["signer"]["trust_root"], "intel");
    // At the token's own time that collateral has expired: refused, and said so.
    let (code, verdict) = verify_token("token-1.jwt", &base);
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("collateral-expired")),
        "{verdict}"
    );
    assert_eq!(verdict["signer"]["verdict"], "rejected");
    // Another service build pinned: refused.
    std::fs::write(
        &policy,
        "allowed_tcb_statuses = [\"UpToDate\", \"SWHardeningNeeded\"]\nallow_debug = true\n\
         [sgx]\nmrenclave = [\"00000000000000000000000000000000000000000000000000000000000000aa\"]\n",
    )
    .unwrap();
    let (code, verdict) = verify_token(
        "token-1.jwt",
        &[base.as_slice(), &["--signer-at", "1653004800"]].concat(),
    );
    assert_eq!(
        (code, verdict["reason"].as_str()),
        (1, Some("measurement-mismatch")),
        "{verdict}"
    );
    // --verify-signer without collateral is bad usage.
    let (code, _) = verify_token(
        "token-1.jwt",
        &["--at", MAA_AT, "--verify-signer", s(&policy)],
    );
    assert_eq!(code, 2);
}

#[test]
fn outputs_in_the_way_are_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.json");
    std::fs::write(&request, br#"{"inputs":[]}"#).unwrap();
    let kept = dir.path().join("kept.txt");
    std::fs::write(&kept, b"precious").unwrap();
    let fresh = dir.path().join("fresh.txt");
    // Nothing listens on port 1: a command that got as far as connecting would say so.
    let server = "https://127.0.0.1:1";
    let pin = "00".repeat(32);
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec!["infer", server, "--model", "demo", "--input", s(&request)]
                .into_iter()
                .chain(["--receipt-out", s(&kept)])
                .collect(),
            "refusing to overwrite existing receipt",
        ),
        (
            vec!["infer", server, "--model", "demo", "--input", s(&request)]
                .into_iter()
                .chain(["--attestation-out", s(&kept)])
                .collect(),
            "refusing to overwrite existing attestation",
        ),
        (
            vec!["infer", server, "--model", "demo", "--input", s(&request)]
                .into_iter()
                .chain(["--attestation-out", s(&fresh), "--receipt-out", s(&fresh)])
                .collect(),
            "must be different files",
        ),
        (
            vec!["attest", "server", server, "--attestation-out", s(&kept)],
            "refusing to overwrite existing attestation",
        ),
    ];
    for (mut args, said) in cases {
        args.extend_from_slice(&["--expect-mrenclave", &pin]);
        let out = cloak(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(stderr.contains("--force") == said.starts_with("refusing"));
    }
    assert_eq!(std::fs::read(&kept).unwrap(), b"precious");
    assert!(!fresh.exists());
}
