//! The simulated platform against the real verifiers: `cloak-attest` and `dcap-qvl` itself.

use std::time::{SystemTime, UNIX_EPOCH};

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AppraisalPolicy, TrustRootPolicy};
use cloak_attest::verify::{TrustAnchor, TrustRoot, Verifier};
use cloak_tee::sim::{SimConfig, SimPlatform, TcbStatusName};
use cloak_tee::{Identity, Platform};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn report_data(tag: u8) -> [u8; 64] {
    let mut data = [0u8; 64];
    data[0] = tag;
    data[63] = 0xAB;
    data
}

fn platform(config: &SimConfig) -> (tempfile::TempDir, SimPlatform) {
    let dir = tempfile::tempdir().unwrap();
    let platform = SimPlatform::init(dir.path(), config).unwrap();
    (dir, platform)
}

fn sim_verifier(platform: &SimPlatform) -> Verifier {
    Verifier::new(TrustAnchor::custom(platform.root_der().to_vec()).unwrap())
}

#[test]
fn sim_quotes_verify_under_the_simulation_root_and_only_under_it() {
    let (_dir, platform) = platform(&SimConfig::up_to_date());
    let evidence = platform.evidence(&report_data(1)).unwrap();
    let collateral = Collateral::from_json(evidence.collateral.as_ref().unwrap()).unwrap();
    let verified = sim_verifier(&platform)
        .verify(&evidence.quote, &collateral, now())
        .unwrap();
    assert_eq!(verified.tcb_status().as_str(), "UpToDate");
    assert!(verified.advisory_ids().is_empty());
    assert_eq!(verified.quote().report_data().as_bytes(), &report_data(1));
    assert_eq!(
        verified.trust_root(),
        TrustRoot::Custom(cloak_crypto::hash::sha256(platform.root_der()))
    );
    let identity = platform.identity().unwrap();
    let cloak_attest::quote::ReportBody::Sgx(body) = verified.quote().body() else {
        panic!("not SGX")
    };
    assert_eq!(body.mr_enclave.as_bytes(), &identity.mrenclave);
    assert_eq!(body.mr_signer.as_bytes(), &identity.mrsigner);

    // Under Intel's root, and under a policy that trusts Intel, a sim quote is untrusted.
    let err = Verifier::new(TrustAnchor::intel())
        .verify(&evidence.quote, &collateral, now())
        .unwrap_err();
    assert_eq!(err.code(), "untrusted-root");
    let accepted = AppraisalPolicy::strict()
        .with_trust_root(TrustRootPolicy::Der(platform.root_der().to_vec()))
        .appraise(verified.clone());
    assert!(accepted.is_ok());
    assert_eq!(
        AppraisalPolicy::strict()
            .appraise(verified)
            .unwrap_err()
            .code(),
        "untrusted-root"
    );
}

#[test]
fn dcap_qvl_itself_verifies_sim_quotes_given_the_simulation_root() {
    let (_dir, platform) = platform(&SimConfig::up_to_date());
    let evidence = platform.evidence(&report_data(2)).unwrap();
    let collateral: dcap_qvl::QuoteCollateralV3 =
        serde_json::from_slice(evidence.collateral.as_ref().unwrap()).unwrap();
    let report = dcap_qvl::verify::QuoteVerifier::new(platform.root_der().to_vec())
        .verify(&evidence.quote, &collateral, now())
        .unwrap();
    assert_eq!(report.status, "UpToDate");
}

#[test]
fn every_tcb_status_round_trips_through_the_verifier() {
    for status in TcbStatusName::ALL {
        let config = SimConfig {
            tcb_status: status,
            advisories: vec!["SIM-SA-00042".to_owned()],
            ..SimConfig::up_to_date()
        };
        let (_dir, platform) = platform(&config);
        let evidence = platform.evidence(&report_data(3)).unwrap();
        let collateral = Collateral::from_json(evidence.collateral.as_ref().unwrap()).unwrap();
        let result = sim_verifier(&platform).verify(&evidence.quote, &collateral, now());
        if status == TcbStatusName::Revoked {
            assert_eq!(result.unwrap_err().code(), "revoked");
            continue;
        }
        let verified = result.unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(verified.tcb_status().as_str(), status.as_str());
        assert_eq!(verified.advisory_ids(), ["SIM-SA-00042"], "{status}");
    }
}

#[test]
fn a_revoked_pck_certificate_is_revoked_after_reopening() {
    let (dir, mut platform) = platform(&SimConfig::up_to_date());
    platform.revoke().unwrap();
    let reopened = SimPlatform::open(dir.path()).unwrap();
    assert!(reopened.is_revoked());
    let evidence = reopened.evidence(&report_data(4)).unwrap();
    let collateral = Collateral::from_json(evidence.collateral.as_ref().unwrap()).unwrap();
    let err = sim_verifier(&reopened)
        .verify(&evidence.quote, &collateral, now())
        .unwrap_err();
    assert_eq!(err.code(), "revoked", "{err}");
}

#[test]
fn a_debug_enclave_is_verified_as_debug_and_rejected_by_policy() {
    let (_dir, platform) = platform(&SimConfig::up_to_date());
    let identity = Identity {
        debug: true,
        ..platform.identity().unwrap()
    };
    let platform = platform.with_enclave(identity);
    let evidence = platform.evidence(&report_data(5)).unwrap();
    let collateral = Collateral::from_json(evidence.collateral.as_ref().unwrap()).unwrap();
    let verified = sim_verifier(&platform)
        .verify(&evidence.quote, &collateral, now())
        .unwrap();
    assert!(verified.is_debug());
    let policy = AppraisalPolicy::strict()
        .with_trust_root(TrustRootPolicy::Der(platform.root_der().to_vec()));
    assert_eq!(
        policy.appraise(verified).unwrap_err().code(),
        "debug-enclave"
    );
}

#[test]
fn collateral_expires_and_is_refreshed() {
    let (_dir, platform) = platform(&SimConfig::up_to_date());
    let made_at = 1_800_000_000;
    let quote = platform.quote(&report_data(6)).unwrap();
    let collateral = Collateral::from_json(&platform.collateral(made_at).unwrap()).unwrap();
    let verifier = sim_verifier(&platform);
    assert!(verifier.verify(&quote, &collateral, made_at).is_ok());
    let late = made_at + cloak_tee::sim::COLLATERAL_LIFETIME + 1;
    assert_eq!(
        verifier
            .verify(&quote, &collateral, late)
            .unwrap_err()
            .code(),
        "collateral-expired"
    );
    let early = made_at - 3600;
    assert_eq!(
        verifier
            .verify(&quote, &collateral, early)
            .unwrap_err()
            .code(),
        "collateral-not-yet-valid"
    );
}

#[test]
fn the_simulation_pki_names_itself_simulated_and_never_intel() {
    let (_dir, platform) = platform(&SimConfig::up_to_date());
    let quote = platform.quote(&report_data(7)).unwrap();
    let parsed = cloak_attest::quote::Quote::parse(&quote).unwrap();
    let chain = parsed.signature().certification.pck_chain().unwrap();
    assert_eq!(chain.len(), 3);
    for der in chain {
        let text = String::from_utf8_lossy(der);
        assert!(text.contains("SIMULATED"));
        assert!(!text.contains("Intel"));
    }
}

#[test]
fn init_and_revoke_write_collateral_next_to_the_root() {
    let (dir, mut platform) = platform(&SimConfig::up_to_date());
    let quote = platform.quote(&report_data(8)).unwrap();
    let read = || {
        Collateral::from_json(&std::fs::read(dir.path().join("collateral.json")).unwrap()).unwrap()
    };
    assert!(
        sim_verifier(&platform)
            .verify(&quote, &read(), now())
            .is_ok()
    );
    platform.revoke().unwrap();
    let err = sim_verifier(&platform)
        .verify(&quote, &read(), now())
        .unwrap_err();
    assert_eq!(err.code(), "revoked");
}

#[test]
fn init_refuses_an_existing_platform_and_open_refuses_a_missing_one() {
    let (dir, _platform) = platform(&SimConfig::up_to_date());
    assert!(SimPlatform::init(dir.path(), &SimConfig::up_to_date()).is_err());
    let empty = tempfile::tempdir().unwrap();
    assert!(SimPlatform::open(empty.path()).is_err());
}

#[test]
fn private_keys_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _platform) = platform(&SimConfig::up_to_date());
    let mode =
        |path: &std::path::Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let keys = dir.path().join("keys");
    assert_eq!(mode(&keys), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&keys).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files += 1;
    }
    assert_eq!(files, 7, "six signing keys and the platform secret");
}

/// The measurement covers every library an engine loads, as Gramine's covers trusted files: no
/// library keeps the executable's own digest, and any other library, set or order changes it.
#[test]
fn the_measurement_covers_the_libraries_loaded() {
    use cloak_tee::sim::enclave_measurement;
    let exe = [0x11; 32];
    let (a, b) = ([0xAA; 32], [0xBB; 32]);
    assert_eq!(enclave_measurement(&exe, &[]), exe);
    let with_a = enclave_measurement(&exe, &[a]);
    for other in [
        exe,
        enclave_measurement(&exe, &[b]),
        enclave_measurement(&exe, &[a, b]),
        enclave_measurement(&[0x12; 32], &[a]),
    ] {
        assert_ne!(with_a, other);
    }
    assert_ne!(
        enclave_measurement(&exe, &[a, b]),
        enclave_measurement(&exe, &[b, a])
    );
    assert_eq!(with_a, enclave_measurement(&exe, &[a]));
}

/// The verdict as the tests compare it: statuses and advisories, or the reason code.
fn verdict(
    platform: &SimPlatform,
    quote: &[u8],
    collateral: &[u8],
) -> Result<(String, String, String, Vec<String>), &'static str> {
    let collateral = Collateral::from_json(collateral).unwrap();
    sim_verifier(platform)
        .verify(quote, &collateral, now())
        .map(|v| {
            (
                v.tcb_status().to_string(),
                v.platform_tcb_status().to_string(),
                v.qe_tcb_status().to_string(),
                v.advisory_ids().to_vec(),
            )
        })
        .map_err(|e| e.code())
}

/// The same signed collateral in Intel's two TCB info formats goes through the verifier's two
/// cores (dcap-qvl for version 3, its own for version 2): every status, with advisories, a
/// revoked PCK certificate, a debug enclave, a quote for another report data and a tampered
/// quote get one verdict from both.
#[test]
fn tcb_info_versions_2_and_3_give_the_same_verdict_on_every_platform_state() {
    let mut cases = 0;
    for status in TcbStatusName::ALL {
        for advisories in [vec![], vec!["SIM-SA-00042".to_owned()]] {
            let config = SimConfig {
                tcb_status: status,
                advisories,
                ..SimConfig::up_to_date()
            };
            let (_dir, mut platform) = platform(&config);
            for revoke in [false, true] {
                if revoke {
                    platform.revoke().unwrap();
                }
                for debug in [false, true] {
                    let enclave = Identity {
                        debug,
                        ..platform.identity().unwrap()
                    };
                    let platform = SimPlatform::open(platform.dir())
                        .unwrap()
                        .with_enclave(enclave);
                    let quote = platform.evidence(&report_data(9)).unwrap().quote;
                    let mut tampered = quote.clone();
                    tampered[200] ^= 1;
                    let v3 = platform.collateral(now()).unwrap();
                    let v2 = platform.collateral_tcb_info_v2(now()).unwrap();
                    assert!(String::from_utf8_lossy(&v2).contains("sgxtcbcomp16svn"));
                    for (what, q) in [("quote", &quote), ("tampered", &tampered)] {
                        let a = verdict(&platform, q, &v3);
                        let b = verdict(&platform, q, &v2);
                        assert_eq!(a, b, "{status} revoked={revoke} debug={debug} {what}");
                        cases += 1;
                    }
                }
            }
        }
    }
    assert_eq!(cases, TcbStatusName::ALL.len() * 2 * 2 * 2 * 2);
}
