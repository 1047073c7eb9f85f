use super::*;

fn vector(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn mrenclave(evidence: &Evidence) -> String {
    match evidence.quote().unwrap().body() {
        crate::quote::ReportBody::Sgx(report) => report.mr_enclave.to_string(),
        other => panic!("not SGX: {other:?}"),
    }
}

fn der(path: &str) -> Vec<u8> {
    pem::parse(vector(path)).unwrap().into_contents()
}

#[test]
fn the_gramine_certificate_carries_both_extensions_and_both_bind() {
    let cert = RaTlsCertificate::parse(&vector("ratls/gramine-cert.pem")).unwrap();
    let carriers: Vec<_> = cert.evidence().iter().map(Evidence::carrier).collect();
    assert!(carriers.contains(&Carrier::GramineLegacy));
    assert!(carriers.contains(&Carrier::TcgDiceTaggedEvidence));
    for evidence in cert.evidence() {
        assert!(
            evidence.binding().holds(),
            "{}: {:?}",
            evidence.carrier(),
            evidence.binding()
        );
        assert_eq!(
            mrenclave(evidence),
            "0866e7ca11b9f4efe4bf39b2607f4e1299f111920d96d95719080f01b62b7585"
        );
        assert!(evidence.quote().unwrap().is_debug());
    }
    let legacy = cert
        .evidence()
        .iter()
        .find(|e| e.carrier() == Carrier::GramineLegacy)
        .unwrap();
    assert_eq!(legacy.binding(), &Binding::Holds(BindingKind::SpkiSha256));
    assert_eq!(
        hex::encode(cloak_crypto::hash::sha256(cert.spki_der())),
        "5a5a5b2d177433048e9d62409d1acc4ec526c06e294d09e69a36cff9369e4851"
    );
    let preferred = cert.preferred().unwrap();
    assert_eq!(preferred.carrier(), Carrier::TcgDiceTaggedEvidence);
    assert_eq!(
        preferred.binding(),
        &Binding::Holds(BindingKind::ClaimsHash)
    );
    let claims = preferred.claims().unwrap();
    assert_eq!(claims.pubkey_hash().unwrap().0, 1);
    assert_eq!(
        hex::encode(cloak_crypto::hash::sha256(claims.raw())),
        hex::encode(&preferred.quote().unwrap().report_data().as_bytes()[..32])
    );
}

#[test]
fn the_intel_sdk_certificate_binds_its_legacy_quote_through_the_dice_claims() {
    let cert = RaTlsCertificate::parse(&vector("ratls/intel-sgxsdk-cert.pem")).unwrap();
    assert_eq!(cert.evidence().len(), 2);
    let sdk = cert
        .evidence()
        .iter()
        .find(|e| e.carrier() == Carrier::IntelSgxSdk)
        .unwrap();
    assert_eq!(sdk.binding(), &Binding::Holds(BindingKind::ClaimsHash));
    for evidence in cert.evidence() {
        assert_eq!(
            mrenclave(evidence),
            "09e218a4be9dadbf7cdc82c45497d6d4f676d3b75445fc37a376f0b65b47de6a"
        );
    }
}

#[test]
fn the_rats_tls_certificate_has_dice_evidence_with_custom_claims() {
    let cert = RaTlsCertificate::parse(&vector("ratls/rats-tls-cert.pem")).unwrap();
    assert_eq!(cert.evidence().len(), 1);
    let evidence = &cert.evidence()[0];
    assert_eq!(evidence.carrier(), Carrier::TcgDiceTaggedEvidence);
    assert_eq!(evidence.binding(), &Binding::Holds(BindingKind::ClaimsHash));
    assert_eq!(evidence.claims().unwrap().other(), ["key_0", "key_1"]);
    assert_eq!(
        mrenclave(evidence),
        "38e1b40b8c68186f359c97ecb6a89965d9d8638f2df06fbe18e84d79a266c041"
    );
    assert_eq!(
        hex::encode(cloak_crypto::hash::sha256(evidence.claims().unwrap().raw())),
        "3ef61b935603341747b96c602397da1c4761afe4eeed2cdc08cbf5f4ff61c533"
    );
}

#[test]
fn a_different_public_key_breaks_every_binding() {
    for path in [
        "ratls/gramine-cert.pem",
        "ratls/intel-sgxsdk-cert.pem",
        "ratls/rats-tls-cert.pem",
    ] {
        let mut cert = der(path);
        let parsed = RaTlsCertificate::parse(&cert).unwrap();
        // Flip the last byte of the public key's point.
        let spki = parsed.spki_der().to_vec();
        let at = cert.windows(spki.len()).position(|w| w == spki).unwrap() + spki.len() - 1;
        cert[at] ^= 0x01;
        let tampered = RaTlsCertificate::parse(&cert).unwrap();
        for evidence in tampered.evidence() {
            assert!(
                !evidence.binding().holds(),
                "{path} {}: still binds",
                evidence.carrier()
            );
        }
    }
}

#[test]
fn der_and_pem_forms_read_the_same_certificate() {
    for path in [
        "ratls/gramine-cert.pem",
        "ratls/intel-sgxsdk-cert.pem",
        "ratls/rats-tls-cert.pem",
    ] {
        let from_pem = RaTlsCertificate::parse(&vector(path)).unwrap();
        let from_der = RaTlsCertificate::parse(&der(path)).unwrap();
        assert_eq!(from_pem.spki_der(), from_der.spki_der(), "{path}");
        assert_eq!(from_pem.subject(), from_der.subject(), "{path}");
    }
}

#[test]
fn tampered_claims_break_the_binding() {
    let mut cert = der("ratls/rats-tls-cert.pem");
    let at = cert.windows(7).position(|w| w == b"value_0").unwrap();
    cert[at] ^= 0x01;
    let parsed = RaTlsCertificate::parse(&cert).unwrap();
    assert!(!parsed.evidence()[0].binding().holds());
}

#[test]
fn certificates_without_evidence_and_non_certificates_are_typed_errors() {
    let root = vector("intel-root/Intel_SGX_Root_CA.der");
    assert_eq!(
        RaTlsCertificate::parse(&root).unwrap_err(),
        RaTlsError::NoEvidence
    );
    assert_eq!(
        RaTlsCertificate::parse(b"hello").unwrap_err().code(),
        "not-certificate"
    );
}

#[test]
fn flipping_any_byte_of_a_certificate_never_panics() {
    let cert = der("ratls/gramine-cert.pem");
    for i in 0..cert.len() {
        let mut c = cert.clone();
        c[i] ^= 0x55;
        let _ = RaTlsCertificate::parse(&c);
    }
}
