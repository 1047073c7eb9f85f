//! One conformance suite, run against every backend: the simulated platform, and the Gramine
//! backend against a directory that replays a real SGX quote (`/dev/attestation` layout).

use std::path::Path;

use cloak_attest::quote::{Quote, ReportBody};
use cloak_tee::gramine::GraminePlatform;
use cloak_tee::seal::{self, SealError};
use cloak_tee::sim::{SimConfig, SimPlatform};
use cloak_tee::{KeyPolicy, KeyRequest, Platform, TeeError};

/// The checks every backend must pass. `report_data` is what evidence is requested for (a
/// replayed quote can only carry its own).
fn conformance(platform: &dyn Platform, report_data: &[u8; 64]) {
    let identity = platform.identity().unwrap();

    // Evidence carries exactly the requested report data and the platform's identity.
    let evidence = platform.evidence(report_data).unwrap();
    let quote = Quote::parse(&evidence.quote).unwrap();
    assert_eq!(quote.report_data().as_bytes(), report_data);
    let ReportBody::Sgx(body) = quote.body() else {
        panic!("not an SGX quote")
    };
    assert_eq!(body.mr_enclave.as_bytes(), &identity.mrenclave);
    assert_eq!(body.mr_signer.as_bytes(), &identity.mrsigner);
    assert_eq!(body.isv_prod_id, identity.isv_prod_id);
    assert_eq!(body.isv_svn, identity.isv_svn);
    assert_eq!(quote.is_debug(), identity.debug);

    // Sealing keys are deterministic per request and differ across policies and key ids.
    let request = |policy, id: u8| KeyRequest {
        policy,
        key_id: [id; 32],
    };
    let current = KeyPolicy::Signer {
        isv_svn: identity.isv_svn,
    };
    let key = |r: &KeyRequest| platform.sealing_key(r).unwrap();
    let m1 = key(&request(KeyPolicy::Measurement, 1));
    assert!(m1.ct_eq(&key(&request(KeyPolicy::Measurement, 1))));
    assert!(!m1.ct_eq(&key(&request(KeyPolicy::Measurement, 2))));
    assert!(!m1.ct_eq(&key(&request(current, 1))));
    assert!(key(&request(current, 1)).ct_eq(&key(&request(current, 1))));

    // Keys for a higher SVN than the enclave's are refused, as EGETKEY refuses them.
    let above = KeyPolicy::Signer {
        isv_svn: identity.isv_svn + 1,
    };
    assert!(matches!(
        platform.sealing_key(&request(above, 1)),
        Err(TeeError::SvnTooHigh { .. })
    ));

    // Sealed blobs round-trip under both policies, and any change is detected.
    for policy in [KeyPolicy::Measurement, current] {
        let blob = seal::seal(platform, policy, b"model key material").unwrap();
        assert_eq!(
            seal::unseal(platform, &blob).unwrap().as_slice(),
            b"model key material"
        );
        assert_eq!(seal::policy_of(&blob).unwrap(), policy);
        for i in 0..blob.len() {
            let mut tampered = blob.clone();
            tampered[i] ^= 0x01;
            assert!(seal::unseal(platform, &tampered).is_err(), "byte {i}");
        }
        let last = blob.len() - 1;
        let mut body_flip = blob.clone();
        body_flip[last] ^= 0x80;
        assert!(matches!(
            seal::unseal(platform, &body_flip),
            Err(SealError::Authentication)
        ));
    }
}

#[test]
fn the_simulated_platform_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let platform = SimPlatform::init(dir.path(), &SimConfig::up_to_date()).unwrap();
    let mut report_data = [0u8; 64];
    report_data[..5].copy_from_slice(b"probe");
    conformance(&platform, &report_data);
}

#[test]
fn the_gramine_backend_conforms_against_a_replayed_quote() {
    let (dir, report_data) = replay_dir();
    let platform = GraminePlatform::with_root(dir.path());
    assert!(platform.is_available());
    conformance(&platform, &report_data);
}

#[test]
fn gramine_evidence_must_carry_the_requested_report_data() {
    let (dir, _) = replay_dir();
    let platform = GraminePlatform::with_root(dir.path());
    let err = platform.evidence(&[7; 64]).unwrap_err();
    assert_eq!(err.code(), "report-data-mismatch");
    // What the backend asked for reached the pseudo-file.
    assert_eq!(
        std::fs::read(dir.path().join("user_report_data")).unwrap(),
        [7; 64]
    );
}

#[test]
fn gramine_without_dcap_attestation_is_unsupported() {
    let (dir, report_data) = replay_dir();
    std::fs::write(dir.path().join("attestation_type"), "none").unwrap();
    let platform = GraminePlatform::with_root(dir.path());
    assert!(!platform.is_available());
    assert_eq!(
        platform.evidence(&report_data).unwrap_err().code(),
        "unsupported"
    );
}

#[test]
fn gramine_evidence_must_be_an_sgx_quote_v3() {
    let (dir, report_data) = replay_dir();
    let platform = GraminePlatform::with_root(dir.path());
    let quote = std::fs::read(dir.path().join("quote")).unwrap();
    // A version-4 header, then a TDX TEE type, each with the right report data in place.
    for (at, value) in [(0usize, 4u8), (4, 0x81)] {
        let mut other = quote.clone();
        other[at] = value;
        std::fs::write(dir.path().join("quote"), &other).unwrap();
        assert_eq!(
            platform.evidence(&report_data).unwrap_err().code(),
            "unsupported"
        );
    }
    std::fs::write(dir.path().join("quote"), &quote).unwrap();
    assert!(platform.evidence(&report_data).is_ok());
}

#[test]
fn gramine_seal_keys_must_be_sixteen_bytes() {
    let (dir, _) = replay_dir();
    let platform = GraminePlatform::with_root(dir.path());
    let request = KeyRequest {
        policy: KeyPolicy::Measurement,
        key_id: [0; 32],
    };
    for wrong in [&[0x11u8; 15][..], &[0x11u8; 17][..]] {
        std::fs::write(dir.path().join("keys/_sgx_mrenclave"), wrong).unwrap();
        assert_eq!(
            platform.sealing_key(&request).unwrap_err().code(),
            "platform-state"
        );
    }
}

#[test]
fn gramine_replayed_evidence_verifies_with_the_real_collateral() {
    let (dir, report_data) = replay_dir();
    let evidence = GraminePlatform::with_root(dir.path())
        .evidence(&report_data)
        .unwrap();
    assert!(
        evidence.collateral.is_none(),
        "Gramine has no collateral in the enclave"
    );
    let collateral = cloak_attest::collateral::Collateral::from_json(&vector(
        "dcap-qvl/sgx_quote_collateral.json",
    ))
    .unwrap();
    let verified = cloak_attest::verify::Verifier::new(cloak_attest::verify::TrustAnchor::intel())
        .verify(&evidence.quote, &collateral, 1_751_328_000)
        .unwrap();
    assert_eq!(
        verified.trust_root(),
        cloak_attest::verify::TrustRoot::Intel
    );
}

#[test]
fn gramine_signer_keys_exist_only_for_the_current_svn() {
    let (dir, _) = replay_dir();
    let platform = GraminePlatform::with_root(dir.path());
    let svn = platform.identity().unwrap().isv_svn;
    // Upgrade the replayed enclave by one SVN: a blob sealed at the old SVN floor cannot be
    // unsealed (Gramine has no EGETKEY for older SVNs), and says so.
    let blob = seal::seal(&platform, KeyPolicy::Signer { isv_svn: svn }, b"state").unwrap();
    let mut report = std::fs::read(dir.path().join("report")).unwrap();
    report[258..260].copy_from_slice(&(svn + 1).to_le_bytes());
    std::fs::write(dir.path().join("report"), report).unwrap();
    let err = seal::unseal(&platform, &blob).unwrap_err();
    assert_eq!(err.code(), "unsupported", "{err}");
}

fn vector(path: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cloak-attest/testdata");
    std::fs::read(root.join(path)).unwrap()
}

/// A `/dev/attestation`-shaped directory that replays the real SGX sample quote.
fn replay_dir() -> (tempfile::TempDir, [u8; 64]) {
    let dir = tempfile::tempdir().unwrap();
    let quote = vector("dcap-qvl/sgx_quote");
    std::fs::write(dir.path().join("attestation_type"), "dcap").unwrap();
    std::fs::write(dir.path().join("quote"), &quote).unwrap();
    // sgx_report_t: the 384-byte body (the quote's, at offset 48), key id and MAC.
    let mut report = quote[48..432].to_vec();
    report.extend_from_slice(&[0u8; 48]);
    std::fs::write(dir.path().join("report"), report).unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/_sgx_mrenclave"), [0x11u8; 16]).unwrap();
    std::fs::write(dir.path().join("keys/_sgx_mrsigner"), [0x22u8; 16]).unwrap();
    let mut report_data = [0u8; 64];
    report_data.copy_from_slice(&quote[368..432]);
    (dir, report_data)
}
