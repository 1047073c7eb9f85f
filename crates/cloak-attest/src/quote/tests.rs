use super::*;

fn vector(path: &str) -> Vec<u8> {
    let full = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/");
    std::fs::read(format!("{full}{path}")).unwrap()
}

fn hex_vector(path: &str) -> Vec<u8> {
    let text = String::from_utf8(vector(path)).unwrap();
    let digits = text.trim().trim_start_matches("0x");
    hex::decode(digits).unwrap()
}

fn expected() -> serde_json::Value {
    serde_json::from_slice(&vector("expected.json")).unwrap()
}

#[test]
fn sgx_v3_quote_fields_match_the_recorded_values() {
    let quote = Quote::parse(&vector("dcap-qvl/sgx_quote")).unwrap();
    assert_eq!(quote.header().version(), 3);
    assert_eq!(quote.tee(), TeeType::Sgx);
    assert_eq!(quote.signed_len(), 432);
    assert_eq!(quote.padding(), 0);
    let ReportBody::Sgx(report) = quote.body() else {
        panic!("not an SGX body")
    };
    assert_eq!(
        report.mr_enclave.to_string(),
        "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb"
    );
    assert_eq!(
        report.mr_signer.to_string(),
        "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6"
    );
    assert_eq!((report.isv_prod_id, report.isv_svn), (0, 0));
    assert_eq!(report.attribute_flags, 0x05);
    assert_eq!(report.attribute_xfrm, 0xe7);
    assert!(!quote.is_debug());
    assert!(quote.report_data().as_bytes().starts_with(b"Hello, world!"));
    let signature = quote.signature();
    assert_eq!(signature.qe_auth_data.len(), 32);
    assert_eq!(signature.qe_report.isv_svn, 10);
    assert_eq!(signature.certification.kind(), 5);
    assert_eq!(signature.certification.pck_chain().unwrap().len(), 3);
}

#[test]
fn every_recorded_vector_parses_to_its_recorded_measurements() {
    let expected = expected();
    for vector_info in expected["vectors"].as_array().unwrap() {
        let path = vector_info["quote"].as_str().unwrap();
        let bytes = if path.ends_with(".hex") {
            hex_vector(path)
        } else {
            vector(path)
        };
        let quote = Quote::parse(&bytes).unwrap_or_else(|e| panic!("{path}: {e}"));
        let info = &vector_info["quote_info"];
        assert_eq!(
            u64::from(quote.header().version()),
            info["quote_version"].as_u64().unwrap(),
            "{path}"
        );
        assert_eq!(
            quote.padding() as u64,
            info["trailing_zero_padding"].as_u64().unwrap_or(0),
            "{path}"
        );
        assert_eq!(
            quote.report_data().to_string(),
            info["report_data"].as_str().unwrap(),
            "{path}"
        );
        match quote.body() {
            ReportBody::Sgx(report) => {
                assert_eq!(report.mr_enclave.to_string(), info["mrenclave"], "{path}");
                assert_eq!(report.mr_signer.to_string(), info["mrsigner"], "{path}");
                assert_eq!(quote.is_debug(), info["debug"].as_bool().unwrap(), "{path}");
            }
            body => {
                let base = match body {
                    ReportBody::TdxV10(r) => r,
                    ReportBody::TdxV15(r) => &r.base,
                    ReportBody::TdxV15Ex(r) => &r.base.base,
                    ReportBody::Sgx(_) => unreachable!(),
                };
                assert_eq!(base.mr_td.to_string(), info["mr_td"], "{path}");
                assert_eq!(hex::encode(base.tee_tcb_svn), info["tee_tcb_svn"], "{path}");
                for (i, rtmr) in base.rtmr.iter().enumerate() {
                    assert_eq!(rtmr.to_string(), info["rtmr"][i], "{path} rtmr{i}");
                }
                if let Some(debug) = info["td_debug"].as_bool() {
                    assert_eq!(quote.is_debug(), debug, "{path}");
                }
            }
        }
    }
}

#[test]
fn v5_body_types_are_recognised() {
    let outdated = Quote::parse(&vector("dcap-qvl/tdx_quote_outdated")).unwrap();
    assert!(matches!(outdated.body(), ReportBody::TdxV15(_)));
    let ex = Quote::parse(&vector("dcap-qvl/tdx_quote_td15ex")).unwrap();
    assert!(matches!(ex.body(), ReportBody::TdxV15Ex(_)));
    assert_eq!(ex.signed_len(), 54 + 885);
}

#[test]
fn the_synthetic_intel_vectors_parse_or_fail_cleanly() {
    let sgx = Quote::parse(&vector("intel-qvl-synthetic/sgx/quote.dat")).unwrap();
    assert_eq!(sgx.signature().certification.kind(), 1);
    // The TDX sample's "PEM" chain is concatenated DER: a malformed quote, not a panic.
    let tdx = Quote::parse(&vector("intel-qvl-synthetic/tdx/quote.dat"));
    if let Err(e) = tdx {
        assert_eq!(e.code(), "malformed-quote", "{e}");
    }
}

#[test]
fn unsupported_kinds_are_typed_errors() {
    let quote = vector("dcap-qvl/sgx_quote");
    let with = |offset: usize, bytes: &[u8]| {
        let mut q = quote.clone();
        q[offset..offset + bytes.len()].copy_from_slice(bytes);
        Quote::parse(&q).unwrap_err()
    };
    assert_eq!(with(0, &[6, 0]), QuoteError::UnsupportedVersion(6));
    assert_eq!(
        with(0, &[4, 0]),
        QuoteError::UnsupportedVersionForTee {
            version: 4,
            tee: TeeType::Sgx
        }
    );
    assert_eq!(
        with(2, &[3, 0]),
        QuoteError::UnsupportedAttestationKeyType(3)
    );
    assert_eq!(with(4, &[2, 0, 0, 0]), QuoteError::UnsupportedTeeType(2));
    assert!(matches!(with(12, &[0]), QuoteError::UnknownQeVendor(_)));
    // The certification data type sits after the 32-byte QE auth data.
    assert!(matches!(
        with(1046, &[7, 0]),
        QuoteError::UnsupportedCertificationDataType { found: 7, .. }
    ));
    for err in [with(0, &[6, 0]), with(2, &[3, 0])] {
        assert_eq!(err.code(), "unsupported-quote-format");
    }
}

#[test]
fn broken_lengths_are_malformed_quotes() {
    let quote = vector("dcap-qvl/sgx_quote");
    for cut in [0, 1, 47, 48, 431, 432, 435, 436, 1000, quote.len() - 1] {
        let err = Quote::parse(&quote[..cut]).unwrap_err();
        assert_eq!(err.code(), "malformed-quote", "cut {cut}: {err}");
    }
    let mut longer_sig = quote.clone();
    longer_sig[432..436].copy_from_slice(&(4164u32 + 1).to_le_bytes());
    assert_eq!(
        Quote::parse(&longer_sig).unwrap_err().code(),
        "malformed-quote"
    );
    let mut shorter_sig = quote.clone();
    shorter_sig[432..436].copy_from_slice(&(4164u32 - 1).to_le_bytes());
    assert_eq!(
        Quote::parse(&shorter_sig).unwrap_err().code(),
        "malformed-quote"
    );
    let mut padded = quote.clone();
    padded.extend_from_slice(&[0; 100]);
    assert_eq!(Quote::parse(&padded).unwrap().padding(), 100);
    let mut trailing = quote;
    trailing.extend_from_slice(&[0, 0, 1]);
    assert!(matches!(
        Quote::parse(&trailing).unwrap_err(),
        QuoteError::TrailingBytes { count: 1, .. }
    ));
}

#[test]
fn v5_body_size_must_match_the_body_type() {
    let mut quote = vector("dcap-qvl/tdx_quote_outdated");
    quote[50..54].copy_from_slice(&(648u32 + 1).to_le_bytes());
    assert!(matches!(
        Quote::parse(&quote).unwrap_err(),
        QuoteError::BodySizeMismatch { body_type: 3, .. }
    ));
    quote[48..50].copy_from_slice(&1u16.to_le_bytes());
    assert_eq!(
        Quote::parse(&quote).unwrap_err(),
        QuoteError::UnsupportedBodyType(1)
    );
}

#[test]
fn flipping_any_byte_of_a_quote_never_panics() {
    for path in [
        "dcap-qvl/sgx_quote",
        "dcap-qvl/tdx_quote",
        "dcap-qvl/tdx_quote_td15ex",
    ] {
        let quote = vector(path);
        for i in 0..quote.len() {
            let mut q = quote.clone();
            q[i] ^= 0xFF;
            let _ = Quote::parse(&q);
        }
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..6000)) {
        let _ = Quote::parse(&bytes);
    }
}

#[test]
fn any_td_under_debug_bit_makes_a_td_debug() {
    let quote = Quote::parse(&vector("dcap-qvl/tdx_quote")).unwrap();
    let ReportBody::TdxV10(report) = quote.body() else {
        panic!("not a TDX 1.0 body")
    };
    let mut report = report.clone();
    let original = report.td_attributes;
    assert!(!report.is_debug());
    // Bit 0 is DEBUG; bits 4-6 are profiling, which dcap-qvl lets through when debug is allowed.
    for bit in 0..8 {
        report.td_attributes = original | (1 << bit);
        assert!(report.is_debug(), "bit {bit}");
    }
    report.td_attributes = original | (1 << 28);
    assert!(!report.is_debug(), "SEPT_VE_DISABLE is not a debug bit");
}
