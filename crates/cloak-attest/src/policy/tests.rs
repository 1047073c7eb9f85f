use std::path::Path;

use super::*;
use crate::verify::{INTEL_ROOT_SHA256, Verifier};

fn vector(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn verified(quote: &str, collateral: &str, at: u64) -> VerifiedQuote {
    let c = Collateral::from_json(&vector(collateral)).unwrap();
    Verifier::new(TrustAnchor::intel())
        .verify(&vector(quote), &c, at)
        .unwrap()
}

fn sgx() -> VerifiedQuote {
    verified(
        "dcap-qvl/sgx_quote",
        "dcap-qvl/sgx_quote_collateral.json",
        1_751_328_000,
    )
}

fn tdx() -> VerifiedQuote {
    verified(
        "dcap-qvl/tdx_quote",
        "dcap-qvl/tdx_quote_collateral.json",
        1_751_328_000,
    )
}

fn debug_sgx() -> VerifiedQuote {
    verified(
        "automata-dcap-rs/quote_sgx.bin",
        "automata-dcap-rs/quote_sgx.collateral.qvl.json",
        1_724_962_800,
    )
}

/// The sample SGX platform's status and advisories, allowed.
fn lenient() -> AppraisalPolicy {
    AppraisalPolicy::strict()
        .allow_tcb_status(TcbStatus::ConfigurationAndSwHardeningNeeded)
        .allow_advisory("INTEL-SA-00289")
        .allow_advisory("INTEL-SA-00615")
}

fn code(result: Result<AcceptedQuote, PolicyViolation>) -> &'static str {
    result.err().map_or("accepted", |e| e.code())
}

fn m32(hex: &str) -> Measurement<32> {
    hex.parse().unwrap()
}

#[test]
fn the_strict_policy_accepts_an_up_to_date_production_quote() {
    assert_eq!(code(AppraisalPolicy::strict().appraise(tdx())), "accepted");
}

#[test]
fn tcb_statuses_and_advisories_are_allowed_only_by_name() {
    let strict = AppraisalPolicy::strict();
    assert_eq!(code(strict.appraise(sgx())), "tcb-status-not-allowed");
    let status_only =
        AppraisalPolicy::strict().allow_tcb_status(TcbStatus::ConfigurationAndSwHardeningNeeded);
    assert_eq!(
        code(status_only.clone().appraise(sgx())),
        "advisory-not-allowed"
    );
    let one_advisory = status_only.clone().allow_advisory("INTEL-SA-00289");
    assert_eq!(code(one_advisory.appraise(sgx())), "advisory-not-allowed");
    assert_eq!(code(lenient().appraise(sgx())), "accepted");
    assert_eq!(
        code(status_only.allow_advisory("*").appraise(sgx())),
        "accepted"
    );
}

#[test]
fn debug_enclaves_are_rejected_unless_allowed() {
    assert_eq!(
        code(AppraisalPolicy::strict().appraise(debug_sgx())),
        "debug-enclave"
    );
    assert_eq!(code(lenient().appraise(debug_sgx())), "debug-enclave");
    let allowed = lenient().with_debug(DebugPolicy::Allow);
    assert_eq!(code(allowed.appraise(debug_sgx())), "accepted");
}

#[test]
fn sgx_identity_is_checked_field_by_field() {
    let mrenclave = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
    let mrsigner = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6";
    let other = "00".repeat(32);
    let with =
        |identity: SgxIdentityPolicy| code(lenient().with_sgx_identity(identity).appraise(sgx()));
    assert_eq!(
        with(SgxIdentityPolicy {
            mrenclave: Some(vec![m32(&other), m32(mrenclave)]),
            mrsigner: Some(vec![m32(mrsigner)]),
            isv_prod_id: Some(0),
            min_isv_svn: Some(0),
        }),
        "accepted"
    );
    for wrong in [
        SgxIdentityPolicy {
            mrenclave: Some(vec![m32(&other)]),
            ..SgxIdentityPolicy::default()
        },
        SgxIdentityPolicy {
            mrsigner: Some(vec![m32(&other)]),
            ..SgxIdentityPolicy::default()
        },
        // An empty list accepts nothing (it is not "unchecked").
        SgxIdentityPolicy {
            mrenclave: Some(vec![]),
            ..SgxIdentityPolicy::default()
        },
        SgxIdentityPolicy {
            isv_prod_id: Some(1),
            ..SgxIdentityPolicy::default()
        },
        SgxIdentityPolicy {
            min_isv_svn: Some(1),
            ..SgxIdentityPolicy::default()
        },
    ] {
        assert_eq!(with(wrong), "measurement-mismatch");
    }
}

#[test]
fn tdx_identity_is_checked_and_tee_types_are_not_confused() {
    let mrtd: Measurement<48> = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"
        .parse()
        .unwrap();
    let other: Measurement<48> = "11".repeat(48).parse().unwrap();
    let ok = TdxIdentityPolicy {
        mrtd: Some(vec![mrtd]),
        ..TdxIdentityPolicy::default()
    };
    let strict = AppraisalPolicy::strict();
    assert_eq!(
        code(strict.clone().with_tdx_identity(ok.clone()).appraise(tdx())),
        "accepted"
    );
    let wrong_mrtd = TdxIdentityPolicy {
        mrtd: Some(vec![other]),
        ..TdxIdentityPolicy::default()
    };
    assert_eq!(
        code(strict.clone().with_tdx_identity(wrong_mrtd).appraise(tdx())),
        "measurement-mismatch"
    );
    let mut wrong_rtmr = TdxIdentityPolicy::default();
    wrong_rtmr.rtmr[2] = Some(vec![other]);
    assert_eq!(
        code(strict.clone().with_tdx_identity(wrong_rtmr).appraise(tdx())),
        "measurement-mismatch"
    );
    // A policy that only describes SGX does not accept a TD, and vice versa.
    assert_eq!(
        code(
            strict
                .clone()
                .with_sgx_identity(SgxIdentityPolicy::default())
                .appraise(tdx())
        ),
        "tee-mismatch"
    );
    assert_eq!(
        code(lenient().with_tdx_identity(ok).appraise(sgx())),
        "tee-mismatch"
    );
}

#[test]
fn old_collateral_can_be_refused_by_evaluation_data_number() {
    // The sample's TCB info has evaluation data number 17.
    let fresh_enough = lenient().with_min_tcb_evaluation_data_number(17);
    assert_eq!(code(fresh_enough.appraise(sgx())), "accepted");
    let too_old = lenient().with_min_tcb_evaluation_data_number(18);
    assert_eq!(code(too_old.appraise(sgx())), "tcb-evaluation-data-too-old");
    let dir = tempdir();
    let from_file =
        AppraisalPolicy::from_toml("min_tcb_evaluation_data_number = 99", &dir).unwrap();
    assert_eq!(
        code(from_file.appraise(tdx())),
        "tcb-evaluation-data-too-old"
    );
}

#[test]
fn empty_lists_in_a_policy_file_accept_nothing() {
    let dir = tempdir();
    for text in ["[sgx]\nmrenclave = []", "[sgx]\nmrsigner = []"] {
        let policy = AppraisalPolicy::from_toml(text, &dir)
            .unwrap()
            .allow_tcb_status(TcbStatus::ConfigurationAndSwHardeningNeeded)
            .allow_advisory("*");
        assert_eq!(
            code(policy.appraise(sgx())),
            "measurement-mismatch",
            "{text}"
        );
    }
    let tdx_empty = AppraisalPolicy::from_toml("[tdx]\nrtmr3 = []", &dir).unwrap();
    assert_eq!(code(tdx_empty.appraise(tdx())), "measurement-mismatch");
}

#[test]
fn report_data_must_match_exactly() {
    let mut expected = [0u8; 64];
    expected[..13].copy_from_slice(b"Hello, world!");
    assert_eq!(
        code(
            lenient()
                .with_report_data(ReportData(expected))
                .appraise(sgx())
        ),
        "accepted"
    );
    expected[63] = 1;
    assert_eq!(
        code(
            lenient()
                .with_report_data(ReportData(expected))
                .appraise(sgx())
        ),
        "report-data-mismatch"
    );
}

#[test]
fn a_policy_trusting_another_root_rejects_intel_quotes() {
    let policy = lenient().with_trust_root(TrustRootPolicy::Sha256([9; 32]));
    assert_eq!(code(policy.appraise(sgx())), "untrusted-root");
    let pinned = lenient().with_trust_root(TrustRootPolicy::Sha256(INTEL_ROOT_SHA256));
    assert_eq!(code(pinned.appraise(sgx())), "accepted");
}

#[test]
fn the_documented_toml_policy_parses() {
    let dir = tempdir();
    std::fs::write(
        dir.join("root.der"),
        vector("intel-root/Intel_SGX_Root_CA.der"),
    )
    .unwrap();
    let text = r#"
        trust_root = "root.der"
        allowed_tcb_statuses = ["UpToDate", "ConfigurationAndSWHardeningNeeded"]
        allowed_advisories = ["INTEL-SA-00289", "INTEL-SA-00615"]
        allow_debug = false
        [sgx]
        mrenclave = ["33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"]
        mrsigner = ["0x815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"]
        isv_prod_id = 0
        min_isv_svn = 0
    "#;
    let policy = AppraisalPolicy::from_toml(text, &dir).unwrap();
    assert_eq!(code(policy.appraise(sgx())), "accepted");

    let pinned = format!("trust_root = \"sha256:{}\"", hex::encode(INTEL_ROOT_SHA256));
    let policy = AppraisalPolicy::from_toml(&pinned, &dir).unwrap();
    assert_eq!(
        policy.trust_root(),
        &TrustRootPolicy::Sha256(INTEL_ROOT_SHA256)
    );
    assert_eq!(
        AppraisalPolicy::from_toml("", &dir).unwrap(),
        AppraisalPolicy::strict()
    );
    let any = AppraisalPolicy::from_toml(
        "allowed_advisories = [\"*\"]\nallowed_tcb_statuses = [\"configurationandswhardeningneeded\"]",
        &dir,
    )
    .unwrap();
    assert_eq!(code(any.appraise(sgx())), "accepted");
    let tdx_policy = AppraisalPolicy::from_toml(
        "[tdx]\nmrtd = [\"91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7\"]",
        &dir,
    )
    .unwrap();
    assert_eq!(code(tdx_policy.appraise(tdx())), "accepted");
}

#[test]
fn mistakes_in_a_policy_file_are_errors_not_silent_loosening() {
    let dir = tempdir();
    std::fs::write(dir.join("garbage.der"), b"not a certificate").unwrap();
    for text in [
        "allow_debg = true",
        "[sgx]\nmrenclav = [\"00\"]",
        "[tdx]\nrtmr4 = []",
        "allowed_tcb_statuses = \"UpToDate\"",
        "trust_root = 7",
        "not toml at all ===",
    ] {
        assert!(
            matches!(
                AppraisalPolicy::from_toml(text, &dir),
                Err(PolicyError::Syntax(_))
            ),
            "{text}"
        );
    }
    for text in [
        "allowed_tcb_statuses = [\"UpToDat\"]",
        "[sgx]\nmrenclave = [\"abcd\"]",
        "report_data = \"00\"",
        "trust_root = \"sha256:1234\"",
        "trust_root = \"missing.der\"",
        "trust_root = \"garbage.der\"",
    ] {
        assert!(
            matches!(
                AppraisalPolicy::from_toml(text, &dir),
                Err(PolicyError::Value { .. })
            ),
            "{text}"
        );
    }
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cloak-attest-policy-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(Path::new(&dir).is_dir());
    dir
}

#[test]
fn a_policy_names_an_identity_only_when_every_tee_it_admits_is_pinned() {
    let pin = || Some(vec![m32(&"11".repeat(32))]);
    let parse = |text: &str| AppraisalPolicy::from_toml(text, Path::new(".")).unwrap();
    // Nothing, or only loosenings and partial pins: any genuine enclave would do.
    assert!(!AppraisalPolicy::strict().names_identity());
    assert!(!parse("allow_debug = true").names_identity());
    assert!(!parse("[sgx]\nmin_isv_svn = 2").names_identity());
    let signer_only = format!("[sgx]\nmrsigner = [\"{}\"]", "22".repeat(32));
    assert!(
        !parse(&signer_only).names_identity(),
        "a signer's every product"
    );
    assert!(!parse("[sgx]\nisv_prod_id = 1").names_identity());
    // Pinned.
    let mut mrenclave = AppraisalPolicy::strict();
    mrenclave.sgx_identity_mut().mrenclave = pin();
    assert!(mrenclave.names_identity());
    assert!(parse(&format!("{signer_only}\nisv_prod_id = 1")).names_identity());
    let mrtd = format!("[tdx]\nmrtd = [\"{}\"]", "33".repeat(48));
    assert!(parse(&mrtd).names_identity());
    // Both TEE types admitted: both must be pinned.
    let sgx_pinned_tdx_open = format!(
        "[sgx]\nmrenclave = [\"{}\"]\n[tdx]\nmr_config_id = [\"{}\"]",
        "11".repeat(32),
        "44".repeat(48)
    );
    assert!(!parse(&sgx_pinned_tdx_open).names_identity());
}

#[test]
fn the_evaluation_floor_refuses_collateral_older_than_what_was_seen() {
    // Real Intel collateral: TDX TCB info numbered 17 (tdx_quote) and 20 (tdx_quote_td15ex),
    // SGX numbered 17.
    let td15ex = verified(
        "dcap-qvl/tdx_quote_td15ex",
        "dcap-qvl/tdx_quote_td15ex_collateral.json",
        1_792_800_000,
    );
    assert_eq!(td15ex.tcb_evaluation_data_number(), 20);
    assert_eq!(tdx().tcb_evaluation_data_number(), 17);
    let floor = EvaluationFloor::new();
    // Nothing seen: anything goes.
    assert!(floor.check(&tdx()).is_ok());
    floor.observe(&tdx());
    assert_eq!(floor.floor_for(&tdx()), 17);
    // A later recovery raised the number: from now on the older collateral is refused...
    floor.observe(&td15ex);
    let refused = floor.check(&tdx()).unwrap_err();
    assert_eq!(refused.code(), "tcb-evaluation-data-too-old");
    assert_eq!(
        refused,
        PolicyViolation::TcbEvaluationDataTooOld { found: 17, min: 20 }
    );
    assert!(floor.check(&td15ex).is_ok());
    // ...the floor never goes down...
    floor.observe(&tdx());
    assert_eq!(floor.floor_for(&td15ex), 20);
    // ...and SGX, numbered apart, is not held to TDX's number.
    assert!(floor.check(&sgx()).is_ok());
    assert_eq!(floor.floor(&INTEL_ROOT_SHA256, TeeType::Sgx), 0);
}
