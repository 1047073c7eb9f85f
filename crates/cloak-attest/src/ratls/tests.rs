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

/// The OE attested-TLS certificates' facts.
fn oe_certificates() -> Vec<serde_json::Value> {
    let facts: serde_json::Value =
        serde_json::from_slice(&vector("openenclave/facts.json")).unwrap();
    facts["certificates"].as_array().unwrap().clone()
}

#[test]
fn open_enclave_certificates_bind_their_keys_as_open_enclave_does() {
    let certificates = oe_certificates();
    assert_eq!(certificates.len(), 5);
    for facts in certificates {
        let file = facts["file"].as_str().unwrap();
        let cert = RaTlsCertificate::parse(&vector(&format!("openenclave/{file}"))).unwrap();
        let [evidence] = cert.evidence() else {
            panic!("{file}: {} evidence extensions", cert.evidence().len());
        };
        assert_eq!(
            evidence.carrier(),
            Carrier::OpenEnclaveReportLegacy,
            "{file}"
        );
        assert_eq!(evidence.carrier().oid(), facts["ext_oid"].as_str().unwrap());
        // The report header is unwrapped: what is kept is the quote alone.
        assert_eq!(
            evidence.quote_bytes().len(),
            usize::try_from(facts["oe_report_header"]["report_size"].as_u64().unwrap()).unwrap(),
            "{file}"
        );
        assert_eq!(
            mrenclave(evidence),
            facts["quote"]["mrenclave"].as_str().unwrap(),
            "{file}"
        );
        // Every one binds its key (the tampering in the two bad ones is elsewhere).
        assert_eq!(
            evidence.binding(),
            &Binding::Holds(BindingKind::OePemSha256),
            "{file}"
        );
        assert_eq!(
            hex::encode(&evidence.quote().unwrap().report_data().as_bytes()[..32]),
            facts["sha256_pubkey_pem_nul"].as_str().unwrap(),
            "{file}"
        );
        // The self-signature is as the facts say: valid except where a byte was changed.
        let expected = if facts["self_signature_valid"].as_bool().unwrap() {
            SelfSignature::Valid
        } else {
            SelfSignature::Invalid
        };
        assert_eq!(cert.self_signature(), &expected, "{file}");
    }
}

#[test]
fn the_open_enclave_binding_is_the_pem_with_its_nul_and_nothing_else() {
    let cert = vector("openenclave/tls_between_host_enclave_cert.der");
    let parsed = RaTlsCertificate::parse(&cert).unwrap();
    let report_data = *parsed.evidence()[0].quote().unwrap().report_data();
    let spki = parsed.spki_der();
    // The Gramine rule (SHA-256 of the DER) does not hold for it, nor does the PEM without NUL.
    assert!(!spki_binding(Some(&report_data), spki).holds());
    assert!(oe_binding(Some(&report_data), spki).holds());
    let mut other_key = spki.to_vec();
    let last = other_key.len() - 1;
    other_key[last] ^= 1;
    assert!(!oe_binding(Some(&report_data), &other_key).holds());
    // A non-zero upper half breaks it too.
    let mut bytes = *report_data.as_bytes();
    bytes[40] = 1;
    assert!(!oe_binding(Some(&ReportData(bytes)), spki).holds());
}

#[test]
fn a_changed_byte_of_an_open_enclave_certificate_fails_its_self_signature() {
    let cert = vector("openenclave/sgx_cert_ec_bad_tcb.der");
    assert_eq!(
        RaTlsCertificate::parse(&cert).unwrap().self_signature(),
        &SelfSignature::Valid
    );
    // A byte of the subject's name (inside the signed part, outside the evidence).
    let at = cert.windows(9).position(|w| w == b"OESDK TLS").unwrap();
    let mut changed = cert.clone();
    changed[at] = b'X';
    assert_eq!(
        RaTlsCertificate::parse(&changed).unwrap().self_signature(),
        &SelfSignature::Invalid
    );
    let rsa = RaTlsCertificate::parse(&vector("openenclave/sgx_cert_rsa_bad_tcb.der")).unwrap();
    assert_eq!(rsa.self_signature(), &SelfSignature::Valid, "RSA-2048");
}

#[test]
fn azure_attestation_signing_certificates_carry_the_service_enclaves_quote() {
    let facts: serde_json::Value = serde_json::from_slice(&vector("azure-maa/facts.json")).unwrap();
    let _ = facts;
    for (file, mrenclave_hex) in [
        (
            "azure-maa/derived/sample.signing.cert.der",
            "600f7ba9e063e3e35f414ca38f445e9b0641ea4b1a724a5f4dd6bca1b326e371",
        ),
        (
            "azure-maa/derived/uksouth.signing.cert.der",
            "600f7ba9e063e3e35f414ca38f445e9b0641ea4b1a724a5f4dd6bca1b326e371",
        ),
        (
            "azure-maa/derived/maa.prod.uks.signing.cert.der",
            "5eaa887fb1744de9a13ef95967faa264a5d025512952549c69f541566cbff209",
        ),
    ] {
        let cert = RaTlsCertificate::parse(&vector(file)).unwrap();
        // The INTEGER marker under OE's legacy evidence OID is skipped; the quote is read from
        // the OCTET STRING under the report OID.
        let [evidence] = cert.evidence() else {
            panic!("{file}: {:?}", cert.evidence());
        };
        assert_eq!(evidence.carrier(), Carrier::OpenEnclaveReportLegacy);
        assert_eq!(evidence.quote_bytes().len(), 4584, "{file}");
        assert_eq!(mrenclave(evidence), mrenclave_hex, "{file}");
        assert!(evidence.quote().unwrap().is_debug());
        assert_eq!(
            evidence.binding(),
            &Binding::Holds(BindingKind::OePemSha256),
            "{file}"
        );
        assert_eq!(
            hex::encode(&evidence.quote().unwrap().report_data().as_bytes()[..32]),
            "2901401eb935c402ca1c10f86f8bbb4c2bc2275330d0c95865efabc5d78f3ad8"
        );
        // RSA-1024: not verified, and said so.
        assert!(
            matches!(cert.self_signature(), SelfSignature::Unchecked(why) if why.contains("1024")),
            "{file}: {:?}",
            cert.self_signature()
        );
    }
    // The East US 2 certificate has no quote.
    assert_eq!(
        RaTlsCertificate::parse(&vector("azure-maa/derived/eus2.signing.cert.der")).unwrap_err(),
        RaTlsError::NoEvidence
    );
}

#[test]
fn the_other_real_certificates_have_valid_self_signatures() {
    for path in [
        "ratls/gramine-cert.pem",
        "ratls/intel-sgxsdk-cert.pem",
        "ratls/rats-tls-cert.pem",
    ] {
        let cert = RaTlsCertificate::parse(&vector(path)).unwrap();
        assert_ne!(cert.self_signature(), &SelfSignature::Invalid, "{path}");
        println!("{path}: {:?}", cert.self_signature());
    }
}

#[test]
fn bare_base64_certificates_are_read_and_trailing_junk_is_refused() {
    let from_cer = RaTlsCertificate::parse(&vector("azure-maa/sample.signing.cert.cer")).unwrap();
    let from_der =
        RaTlsCertificate::parse(&vector("azure-maa/derived/sample.signing.cert.der")).unwrap();
    assert_eq!(from_cer.spki_der(), from_der.spki_der());
    assert_eq!(
        from_cer.evidence()[0].quote_bytes(),
        from_der.evidence()[0].quote_bytes()
    );
    let pem = RaTlsCertificate::parse(&vector("azure-maa/maa.prod.uks.signing.cert.pem")).unwrap();
    assert_eq!(pem.evidence().len(), 1);
    // The UK South sample carries 54 bytes of JSON after its base64: refused, not guessed at.
    let err = RaTlsCertificate::parse(&vector("azure-maa/uksouth.signing.cert.cer")).unwrap_err();
    assert_eq!(err.code(), "not-certificate", "{err}");
}
