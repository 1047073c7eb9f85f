use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

use super::*;
use crate::policy::{AppraisalPolicy, DebugPolicy, SgxIdentityPolicy};

fn file(path: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/azure-maa/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn facts() -> Value {
    serde_json::from_slice(&file("facts.json")).unwrap()
}

fn jwks() -> Jwks {
    Jwks::from_json(&file("recorded/jwks.json")).unwrap()
}

const AT: u64 = 1_654_041_600;
const ISSUER: &str = "https://sharedwus.wus.attest.azure.net";
const MRENCLAVE: &str = "292a1f4b519e46627eb2478a3d9851405653c5b4b0a6925de843834d9216850e";
const MRSIGNER: &str = "4aea5f9a0ed04b11f889aadfe6a1d376213a29a95a85ce7337ae6f7fece6610c";

fn token(n: usize) -> Vec<u8> {
    file(&format!("recorded/token-{n}.jwt"))
}

fn measurement(hex_text: &str) -> Measurement<32> {
    Measurement::from_bytes(hex::decode(hex_text).unwrap().try_into().unwrap())
}

#[test]
fn every_recorded_token_verifies_under_the_recorded_jwks() {
    let facts = facts();
    let jwks = jwks();
    assert_eq!(jwks.keys().len(), 3);
    let runtime = file("recorded/sdk_runtime_data.bin");
    for (i, t) in facts["recorded"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let n = i + 1;
        let verified = verify_token(&token(n), &jwks, Some(ISSUER), AT)
            .unwrap_or_else(|e| panic!("token {n}: {e}"));
        assert_eq!(verified.algorithm(), "RS256");
        assert_eq!(verified.kid(), t["kid"].as_str().unwrap());
        assert_eq!(verified.issuer(), ISSUER);
        assert_eq!(
            verified.times(),
            (
                t["iat"].as_u64(),
                t["nbf"].as_u64(),
                t["exp"].as_u64().unwrap()
            )
        );
        let sgx = verified.sgx();
        assert_eq!(sgx.mrenclave, measurement(MRENCLAVE), "token {n}");
        assert_eq!(sgx.mrsigner, measurement(MRSIGNER), "token {n}");
        assert_eq!((sgx.isv_prod_id, sgx.isv_svn, sgx.debug), (1, 1, true));
        let report_data = sgx.report_data.unwrap();
        assert_eq!(
            hex::encode(&report_data.as_bytes()[..32]),
            "28542e44fe7e73f6610f6b31ae7576925f09ccdbb4c5646583ecc1561337a8ff"
        );
        // Tokens 3 and 4 carry the runtime data; it is the SDK's 287 bytes, whose hash is the
        // first half of the report data. The others do not carry it.
        match n {
            3 | 4 => {
                assert_eq!(sgx.enclave_held_data.as_deref(), Some(runtime.as_slice()));
                assert_eq!(
                    &report_data.as_bytes()[..32],
                    &cloak_crypto::hash::sha256(&runtime)
                );
            }
            _ => assert_eq!(sgx.enclave_held_data, None, "token {n}"),
        }
    }
}

#[test]
fn the_recorded_tokens_are_appraised_by_the_quote_policy() {
    let verified = || verify_token(&token(3), &jwks(), Some(ISSUER), AT).unwrap();
    // The strict default refuses them: they attest a debug enclave.
    let err = AppraisalPolicy::strict()
        .appraise_token(verified())
        .unwrap_err();
    assert_eq!(err.code(), "debug-enclave", "{err}");
    // Debug allowed and the enclave pinned: accepted.
    let pinned = |identity: SgxIdentityPolicy| {
        AppraisalPolicy::strict()
            .with_debug(DebugPolicy::Allow)
            .with_sgx_identity(identity)
    };
    let good = SgxIdentityPolicy {
        mrenclave: Some(vec![measurement(MRENCLAVE)]),
        mrsigner: Some(vec![measurement(MRSIGNER)]),
        isv_prod_id: Some(1),
        min_isv_svn: Some(1),
    };
    let accepted = pinned(good.clone()).appraise_token(verified()).unwrap();
    assert_eq!(accepted.token().sgx().isv_svn, 1);
    // Any other identity: refused.
    let other = measurement(&"ab".repeat(32));
    for (what, identity) in [
        (
            "mrenclave",
            SgxIdentityPolicy {
                mrenclave: Some(vec![other]),
                ..good.clone()
            },
        ),
        (
            "mrsigner",
            SgxIdentityPolicy {
                mrsigner: Some(vec![other]),
                ..good.clone()
            },
        ),
        (
            "isv_prod_id",
            SgxIdentityPolicy {
                isv_prod_id: Some(2),
                ..good.clone()
            },
        ),
        (
            "isv_svn",
            SgxIdentityPolicy {
                min_isv_svn: Some(2),
                ..good.clone()
            },
        ),
    ] {
        let err = pinned(identity).appraise_token(verified()).unwrap_err();
        assert_eq!(err.code(), "measurement-mismatch", "{what}: {err}");
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    // The report data, as the policy pins it for quotes.
    let report_data = verified().sgx().report_data.unwrap();
    pinned(good.clone())
        .with_report_data(report_data)
        .appraise_token(verified())
        .unwrap();
    let err = pinned(good)
        .with_report_data(ReportData::from_bytes([7; 64]))
        .appraise_token(verified())
        .unwrap_err();
    assert_eq!(err.code(), "report-data-mismatch");
}

#[test]
fn times_are_checked_without_leeway_and_the_issuer_when_pinned() {
    let jwks = jwks();
    for n in 1..=6 {
        let verified = verify_token(&token(n), &jwks, None, AT).unwrap();
        let (_, nbf, exp) = verified.times();
        let nbf = nbf.unwrap();
        assert_eq!(
            verify_token(&token(n), &jwks, None, nbf - 1)
                .unwrap_err()
                .code(),
            "token-not-yet-valid"
        );
        verify_token(&token(n), &jwks, None, nbf).unwrap();
        verify_token(&token(n), &jwks, None, exp - 1).unwrap();
        for late in [exp, exp + 1, 1_796_400_000] {
            assert_eq!(
                verify_token(&token(n), &jwks, None, late)
                    .unwrap_err()
                    .code(),
                "token-expired"
            );
        }
        let err = verify_token(
            &token(n),
            &jwks,
            Some("https://sharedeus.eus.attest.azure.net"),
            AT,
        )
        .unwrap_err();
        assert_eq!(err.code(), "token-issuer-mismatch");
    }
}

#[test]
fn any_changed_character_of_a_recorded_token_is_refused() {
    let jwks = jwks();
    let original = token(1);
    let mut codes = std::collections::BTreeMap::<&'static str, usize>::new();
    for i in 0..original.len() {
        let mut changed = original.clone();
        // Another character of the base64url alphabet (or another dot position).
        changed[i] = match changed[i] {
            b'A' => b'B',
            b'.' => b'A',
            _ => b'A',
        };
        match verify_token(&changed, &jwks, Some(ISSUER), AT) {
            Ok(_) => panic!("character {i} changed and the token verified"),
            Err(e) => *codes.entry(e.code()).or_default() += 1,
        }
    }
    assert!(codes["signature-invalid"] > 3000, "{codes:?}");
}

#[test]
fn the_unsigned_draft_policy_token_is_refused_though_its_kid_resolves() {
    let err = verify_token(
        &file("recorded/negative-alg-none-draft-policy.jwt"),
        &jwks(),
        Some(ISSUER),
        AT,
    )
    .unwrap_err();
    assert_eq!(err.code(), "token-algorithm-not-allowed", "{err}");
}

#[test]
fn the_signing_certificate_carries_the_attestation_services_own_quote() {
    let verified = verify_token(&token(1), &jwks(), Some(ISSUER), AT).unwrap();
    let cert = crate::ratls::RaTlsCertificate::parse(verified.signer_certificate()).unwrap();
    let [evidence] = cert.evidence() else {
        panic!("{:?}", cert.evidence());
    };
    assert_eq!(evidence.carrier(), crate::ratls::Carrier::OpenEnclaveReport);
    assert!(evidence.binding().holds());
    let quote = evidence.quote().unwrap();
    let crate::quote::Measurements::Sgx(m) = quote.measurements() else {
        panic!("not SGX");
    };
    assert_eq!(
        m.mrenclave.to_string(),
        "b3cdb7c6d8da25088334d8864c06794f0cd7f505708abe44cc074c1e6ae0e283"
    );
    // MAA names its SGX-bound key by the report data that binds it.
    assert_eq!(
        STANDARD.encode(&quote.report_data().as_bytes()[..32]),
        verified.kid()
    );
}

#[test]
fn broken_jwks_are_typed_errors() {
    let good: Value = serde_json::from_slice(&file("recorded/jwks.json")).unwrap();
    let mut duplicate = good.clone();
    let first = duplicate["keys"][0].clone();
    duplicate["keys"].as_array_mut().unwrap().push(first);
    let mut no_x5c = good.clone();
    no_x5c["keys"][1].as_object_mut().unwrap().remove("x5c");
    let mut bad_base64 = good.clone();
    bad_base64["keys"][0]["x5c"][0] = "***".into();
    let mut not_cert = good;
    not_cert["keys"][0]["x5c"][0] = STANDARD.encode(b"hello").into();
    for (name, document) in [
        ("duplicate kid", serde_json::to_vec(&duplicate).unwrap()),
        ("no x5c", serde_json::to_vec(&no_x5c).unwrap()),
        ("bad base64", serde_json::to_vec(&bad_base64).unwrap()),
        ("not a certificate", serde_json::to_vec(&not_cert).unwrap()),
        ("no keys", b"{}".to_vec()),
        ("not JSON", b"keys".to_vec()),
    ] {
        let err = Jwks::from_json(&document).unwrap_err();
        assert_eq!(err.code(), "malformed-jwks", "{name}: {err}");
    }
}

/// A P-256 test key with a self-signed certificate, as a one-key JWKS.
struct TestKey {
    key: aws_lc_rs::signature::EcdsaKeyPair,
    jwks: Jwks,
}

impl TestKey {
    fn new(kid: &str) -> Self {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &aws_lc_rs::rand::SystemRandom::new(),
        )
        .unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let rcgen_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["maa-test".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = params.self_signed(&rcgen_key).unwrap();
        let document = serde_json::json!({
            "keys": [{ "kid": kid, "kty": "EC", "x5c": [STANDARD.encode(cert.der())] }]
        });
        Self {
            key,
            jwks: Jwks::from_json(&serde_json::to_vec(&document).unwrap()).unwrap(),
        }
    }

    /// A token with `header` and `claims`, signed ES256.
    fn mint(&self, header: &Value, claims: &Value) -> Vec<u8> {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
        );
        let signature = self
            .key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), signed.as_bytes())
            .unwrap();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())).into_bytes()
    }
}

fn es256(kid: &str) -> Value {
    serde_json::json!({ "alg": "ES256", "kid": kid, "typ": "JWT" })
}

/// Current-name claims for a token valid around `AT`.
fn claims(ehd: &[u8]) -> Value {
    let mut report_data = cloak_crypto::hash::sha256(ehd).to_vec();
    report_data.resize(64, 0);
    serde_json::json!({
        "iss": "https://test.attest.example",
        "iat": AT - 10, "nbf": AT - 10, "exp": AT + 3600,
        "x-ms-ver": "1.0",
        "x-ms-attestation-type": "sgx",
        "x-ms-sgx-mrenclave": MRENCLAVE,
        "x-ms-sgx-mrsigner": MRSIGNER,
        "x-ms-sgx-product-id": 1,
        "x-ms-sgx-svn": 3,
        "x-ms-sgx-is-debuggable": false,
        "x-ms-sgx-ehd": URL_SAFE_NO_PAD.encode(ehd),
        "x-ms-sgx-report-data": hex::encode(report_data),
    })
}

#[test]
fn minted_tokens_verify_and_every_negative_has_its_code() {
    let test = TestKey::new("test-key");
    let good = claims(b"enclave key");
    let verified =
        verify_token(&test.mint(&es256("test-key"), &good), &test.jwks, None, AT).unwrap();
    assert_eq!(verified.algorithm(), "ES256");
    assert_eq!(verified.sgx().isv_svn, 3);
    assert!(!verified.sgx().debug);
    // A production policy accepts it when it pins the enclave.
    AppraisalPolicy::strict()
        .with_sgx_identity(SgxIdentityPolicy {
            mrenclave: Some(vec![measurement(MRENCLAVE)]),
            ..SgxIdentityPolicy::default()
        })
        .appraise_token(verified)
        .unwrap();

    let other = TestKey::new("test-key");
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let header = |alg: &str| serde_json::json!({ "alg": alg, "kid": "test-key" });
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "signed by another key under the same kid",
            other.mint(&es256("test-key"), &good),
            "signature-invalid",
        ),
        (
            "an unknown kid",
            test.mint(&es256("someone-else"), &good),
            "token-key-unknown",
        ),
        (
            "ES256 claimed, RS256 key confusion the other way round",
            test.mint(&header("RS256"), &good),
            "token-algorithm-not-allowed",
        ),
        (
            "HS256 (the public key used as an HMAC secret)",
            test.mint(&header("HS256"), &good),
            "token-algorithm-not-allowed",
        ),
        (
            "alg none",
            test.mint(&header("none"), &good),
            "token-algorithm-not-allowed",
        ),
        (
            "a critical header extension",
            test.mint(
                &serde_json::json!({ "alg": "ES256", "kid": "test-key", "crit": ["b64"] }),
                &good,
            ),
            "malformed-token",
        ),
        (
            "no kid",
            test.mint(&serde_json::json!({ "alg": "ES256" }), &good),
            "malformed-token",
        ),
        (
            "not an SGX token",
            test.mint(
                &es256("test-key"),
                &edit(&|c| c["x-ms-attestation-type"] = "sevsnpvm".into()),
            ),
            "token-not-sgx",
        ),
        (
            "enclave-held data that the report data does not bind",
            test.mint(
                &es256("test-key"),
                &edit(&|c| c["x-ms-sgx-ehd"] = URL_SAFE_NO_PAD.encode(b"enclave kez").into()),
            ),
            "enclave-held-data-mismatch",
        ),
        (
            "an alias that disagrees",
            test.mint(
                &es256("test-key"),
                &edit(&|c| c["sgx-mrenclave"] = "00".repeat(32).into()),
            ),
            "malformed-token",
        ),
        (
            "a measurement that is not hex",
            test.mint(
                &es256("test-key"),
                &edit(&|c| c["x-ms-sgx-mrsigner"] = "xyz".into()),
            ),
            "malformed-token",
        ),
        (
            "an SVN out of range",
            test.mint(
                &es256("test-key"),
                &edit(&|c| c["x-ms-sgx-svn"] = 70_000.into()),
            ),
            "malformed-token",
        ),
        (
            "no exp",
            test.mint(
                &es256("test-key"),
                &edit(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
            "malformed-token",
        ),
        (
            "another schema version",
            test.mint(&es256("test-key"), &edit(&|c| c["x-ms-ver"] = "2.0".into())),
            "malformed-token",
        ),
        ("two parts", b"abc.def".to_vec(), "malformed-token"),
        ("four parts", b"a.b.c.d".to_vec(), "malformed-token"),
    ];
    for (name, token, code) in cases {
        let err = verify_token(&token, &test.jwks, None, AT).unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err}");
    }
    // The test key's certificate is not valid before 2020: neither is what it signed then.
    let early = edit(&|c| {
        c["nbf"] = 1_500_000_000.into();
        c["iat"] = 1_500_000_000.into();
    });
    let err = verify_token(
        &test.mint(&es256("test-key"), &early),
        &test.jwks,
        None,
        1_500_000_100,
    )
    .unwrap_err();
    assert_eq!(err.code(), "token-key-expired");
}

#[test]
fn the_2020_sample_body_is_read_under_its_pre_ga_claim_names() {
    // The sample is a decoded token (header, blank line, body) without a signature: sign its
    // body with a test key to read its claims as a token.
    let text = String::from_utf8(file("post.attest.response.jwt.body.json")).unwrap();
    let (_, body) = text.split_once("\n\n").unwrap();
    let body: Value = serde_json::from_str(body).unwrap();
    let test = TestKey::new("sample");
    let token = test.mint(&es256("sample"), &body);
    let verified = verify_token(&token, &test.jwks, None, 1_590_630_000).unwrap();
    let sgx = verified.sgx();
    assert_eq!(
        sgx.mrenclave,
        measurement("90a328210154d861be7fc85a904e99fba713b05029321a470f62ea8495ec7d90")
    );
    assert_eq!((sgx.isv_prod_id, sgx.isv_svn, sgx.debug), (1, 8888, false));
    assert_eq!(
        sgx.enclave_held_data.as_deref(),
        Some(file("derived/post.attest.enclave_held_data.bin").as_slice())
    );
    assert_eq!(sgx.report_data, None);
}

#[test]
fn the_tokens_describe_the_evidence_that_was_sent_to_the_service() {
    use crate::evidence::{Evidence, EvidenceFormat};
    let report = file("recorded/sdk_oe_report_debug.bin");
    let quote = file("recorded/sdk_sgx_quote_debug.bin");
    // The OE report is the SGX quote behind OE's 16-byte header.
    let unwrapped = Evidence::parse(&report).unwrap();
    assert_eq!(unwrapped.format(), EvidenceFormat::OeReport);
    assert_eq!(unwrapped.quote_bytes(), quote.as_slice());
    let jwks = jwks();
    for n in 1..=6 {
        let verified = verify_token(&token(n), &jwks, Some(ISSUER), AT).unwrap();
        let parsed = unwrapped.quote();
        let crate::quote::Measurements::Sgx(m) = parsed.measurements() else {
            panic!("not SGX");
        };
        let sgx = verified.sgx();
        assert_eq!(sgx.mrenclave, m.mrenclave, "token {n}");
        assert_eq!(sgx.mrsigner, m.mrsigner, "token {n}");
        assert_eq!(
            (sgx.isv_prod_id, sgx.isv_svn, sgx.debug),
            (m.isv_prod_id, m.isv_svn, m.debug)
        );
        assert_eq!(
            sgx.report_data.as_ref(),
            Some(parsed.report_data()),
            "token {n}"
        );
        // quotehash is SHA-256 of exactly what was submitted: the quote to the SgxEnclave
        // endpoint (odd tokens), the whole OE report to the OpenEnclave one (even tokens).
        let submitted = if n % 2 == 1 { &quote } else { &report };
        assert_eq!(
            verified.claims()["x-ms-sgx-collateral"]["quotehash"],
            hex::encode(cloak_crypto::hash::sha256(submitted)),
            "token {n}"
        );
    }
    // The 2020 request: its OE report's quote binds SHA-256 of all 512 bytes of enclave-held
    // data, padding included.
    let request = file("derived/post.attest.quote.oe_report.bin");
    let ehd = file("derived/post.attest.enclave_held_data.bin");
    let evidence = Evidence::parse(&request).unwrap();
    assert_eq!(evidence.format(), EvidenceFormat::OeReport);
    assert_eq!(
        &evidence.quote().report_data().as_bytes()[..32],
        &cloak_crypto::hash::sha256(&ehd)
    );
    assert!(!evidence.quote().is_debug());
}

#[test]
fn the_key_certificate_is_checked_at_verification_time_not_at_iat() {
    // MAA's 2020 sample token was issued one second before its signing certificate's notBefore;
    // a verifier that checked the certificate at `iat` would refuse a genuine token. The test
    // key's certificate starts on 2020-01-01.
    let test = TestKey::new("k");
    let mut claims = claims(b"ehd");
    let iat = 1_577_836_799; // 2019-12-31T23:59:59Z
    claims["iat"] = iat.into();
    claims["nbf"] = iat.into();
    claims["exp"] = (iat + 86_400).into();
    let token = test.mint(&es256("k"), &claims);
    verify_token(&token, &test.jwks, None, iat + 3600).unwrap();
    // At `iat` itself the certificate was not valid yet, and that is what is refused.
    assert_eq!(
        verify_token(&token, &test.jwks, None, iat)
            .unwrap_err()
            .code(),
        "token-key-expired"
    );
}
