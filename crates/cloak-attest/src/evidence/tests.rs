use super::*;
use crate::quote::{Measurements, TeeType};

fn vector(path: &str) -> Vec<u8> {
    let full = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/openenclave/");
    std::fs::read(format!("{full}{path}")).unwrap()
}

fn facts() -> serde_json::Value {
    serde_json::from_slice(&vector("facts.json")).unwrap()
}

/// The quote's identity fields against the ones `facts.json` records for it.
fn assert_quote_matches(quote: &Quote, expected: &serde_json::Value, what: &str) {
    let Measurements::Sgx(m) = quote.measurements() else {
        panic!("{what}: not an SGX quote")
    };
    assert_eq!(quote.tee(), TeeType::Sgx, "{what}");
    assert_eq!(
        u64::from(quote.header().version()),
        expected["quote_version"].as_u64().unwrap(),
        "{what}"
    );
    assert_eq!(m.mrenclave.to_string(), expected["mrenclave"], "{what}");
    assert_eq!(m.mrsigner.to_string(), expected["mrsigner"], "{what}");
    assert_eq!(
        u64::from(m.isv_prod_id),
        expected["isvprodid"].as_u64().unwrap(),
        "{what}"
    );
    assert_eq!(
        u64::from(m.isv_svn),
        expected["isvsvn"].as_u64().unwrap(),
        "{what}"
    );
    assert_eq!(
        quote.is_debug(),
        expected["debug"].as_bool().unwrap(),
        "{what}"
    );
    assert_eq!(
        quote.report_data().to_string(),
        expected["report_data"],
        "{what}"
    );
}

#[test]
fn open_enclave_evidence_is_a_bare_quote_with_the_recorded_fields() {
    for v in facts()["vectors"].as_array().unwrap() {
        let bytes = vector(v["evidence"].as_str().unwrap());
        assert_eq!(detect(&bytes), EvidenceFormat::DcapQuote);
        let evidence = Evidence::parse(&bytes).unwrap();
        assert_eq!(evidence.format(), EvidenceFormat::DcapQuote);
        assert_eq!(
            evidence.quote_bytes().len() as u64,
            v["quote"]["quote_len"].as_u64().unwrap()
        );
        assert_eq!(evidence.custom_claims_raw(), None);
        assert_quote_matches(evidence.quote(), &v["quote"], v["id"].as_str().unwrap());
    }
}

#[test]
fn open_enclave_remote_reports_unwrap_to_their_quotes() {
    for r in facts()["reports"].as_array().unwrap() {
        let file = r["file"].as_str().unwrap();
        let bytes = vector(file);
        assert_eq!(detect(&bytes), EvidenceFormat::OeReport, "{file}");
        // Both parse: what is wrong with them (a corrupted CA certificate, a bad ISV
        // signature) is for the verifier to find.
        let evidence = Evidence::parse(&bytes).unwrap();
        assert_eq!(evidence.format(), EvidenceFormat::OeReport);
        assert_eq!(
            evidence.quote_bytes().len() as u64,
            r["quote"]["quote_len"].as_u64().unwrap(),
            "{file}"
        );
        // The quote is the report's body, byte for byte.
        assert_eq!(evidence.quote_bytes(), &bytes[16..], "{file}");
        assert_quote_matches(evidence.quote(), &r["quote"], file);
        // Named explicitly, the same; read as a bare quote, it is not one.
        let named = Evidence::parse_as(&bytes, EvidenceFormat::OeReport).unwrap();
        assert_eq!(named.quote_bytes(), evidence.quote_bytes());
        let err = Evidence::parse_as(&bytes, EvidenceFormat::DcapQuote).unwrap_err();
        assert_eq!(err.code(), "unsupported-quote-format", "{file}: {err}");
    }
}

/// Evidence as OE writes it with `OE_EVIDENCE_FLAGS_EMBED_FORMAT_ID`: the 32-byte attestation
/// header, then `data`.
fn with_attestation_header(format_id: [u8; 16], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&format_id);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// An OE custom-claims buffer.
fn claims_buffer(claims: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1u64.to_le_bytes());
    out.extend_from_slice(&(claims.len() as u64).to_le_bytes());
    for (name, value) in claims {
        out.extend_from_slice(&(name.len() as u64 + 1).to_le_bytes());
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value);
    }
    out
}

#[test]
fn the_attestation_header_is_unwrapped_for_each_quote_format() {
    let quote = vector("evidence");
    let report = vector("sgx_report_bad_tcb.bin");
    for (id, data, expected_quote) in [
        (oe_format::SGX_ECDSA, quote.clone(), &quote[..]),
        (oe_format::RAW_SGX_QUOTE_ECDSA, quote.clone(), &quote[..]),
        (
            oe_format::LEGACY_REPORT_REMOTE,
            report.clone(),
            &report[16..],
        ),
    ] {
        let bytes = with_attestation_header(id, &data);
        assert_eq!(detect(&bytes), EvidenceFormat::OeEvidence);
        let evidence = Evidence::parse(&bytes).unwrap();
        assert_eq!(evidence.format(), EvidenceFormat::OeEvidence);
        assert_eq!(evidence.oe_format_id(), Some(&id));
        assert_eq!(evidence.quote_bytes(), expected_quote);
    }
    // The UUIDs are written big-endian, as OE's headers spell them.
    assert_eq!(
        uuid_text(&oe_format::SGX_ECDSA),
        "a3a21e87-1b4d-4014-b70a-a125d2fbcd8c"
    );
    assert_eq!(
        oe_format::name(&oe_format::RAW_SGX_QUOTE_ECDSA),
        Some("OE_FORMAT_UUID_RAW_SGX_QUOTE_ECDSA")
    );
}

#[test]
fn custom_claims_are_read_and_their_binding_is_checked() {
    let quote = vector("evidence");
    // The vector's report data binds SHA-256 of the empty string: an empty claims buffer is
    // absent, and no claims are reported.
    let claims = claims_buffer(&[("model", b"resnet"), ("nonce", &[1, 2, 3])]);
    let mut data = quote.clone();
    data.extend_from_slice(&claims);
    let bytes = with_attestation_header(oe_format::SGX_ECDSA, &data);
    let evidence = Evidence::parse(&bytes).unwrap();
    assert_eq!(evidence.custom_claims_raw(), Some(&claims[..]));
    let parsed = evidence.custom_claims();
    assert_eq!(parsed.len(), 2);
    assert_eq!(parsed[0].name, "model");
    assert_eq!(parsed[0].value, b"resnet");
    assert_eq!(parsed[1].value, [1, 2, 3]);
    // The quote's report data is SHA-256(""), not of these claims: the binding does not hold.
    assert_eq!(evidence.claims_bound(), Some(false));
    // The same claims after a raw quote are trailing bytes, not claims.
    let raw = with_attestation_header(oe_format::RAW_SGX_QUOTE_ECDSA, &data);
    assert_eq!(Evidence::parse(&raw).unwrap_err().code(), "malformed-quote");
}

#[test]
fn broken_wrappers_are_refused_with_their_codes() {
    let quote = vector("evidence");
    let report = vector("sgx_report_bad_tcb.bin");
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    // OE report: size one short, one long, a local report, another version.
    let mut short = report.clone();
    short.truncate(report.len() - 1);
    cases.push(("report cut short", short, "malformed-quote"));
    let mut long = report.clone();
    long.push(0);
    cases.push(("byte after the report", long, "malformed-quote"));
    let mut local = report.clone();
    local[4] = 1;
    cases.push(("local report", local, "unsupported-quote-format"));
    let mut other_type = report.clone();
    other_type[4] = 7;
    cases.push((
        "unknown report type",
        other_type,
        "unsupported-quote-format",
    ));
    cases.push(("header alone", report[..15].to_vec(), "malformed-quote"));
    // Attestation header: an unknown format, non-zero padding, a size past the end, an EPID
    // quote, bytes after the claims, a claims buffer of another version or too many claims.
    cases.push((
        "unknown format",
        with_attestation_header([7; 16], &quote),
        "unsupported-quote-format",
    ));
    cases.push((
        "EPID",
        with_attestation_header(oe_format::SGX_EPID_LINKABLE, &quote),
        "unsupported-quote-format",
    ));
    let mut padded = with_attestation_header(oe_format::SGX_ECDSA, &quote);
    padded[21] = 1;
    cases.push(("padding not zero", padded, "malformed-quote"));
    let mut oversized = with_attestation_header(oe_format::SGX_ECDSA, &quote);
    oversized[24] = oversized[24].wrapping_add(1);
    cases.push(("declared size past the end", oversized, "malformed-quote"));
    let mut huge = with_attestation_header(oe_format::SGX_ECDSA, &quote);
    huge[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    cases.push(("declared size u64::MAX", huge, "malformed-quote"));
    for (what, claims) in [
        ("claims then a byte", {
            let mut c = claims_buffer(&[("a", b"b")]);
            c.push(9);
            c
        }),
        ("claims version 2", {
            let mut c = claims_buffer(&[]);
            c[0] = 2;
            c
        }),
        ("too many claims", {
            let mut c = claims_buffer(&[]);
            c[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
            c
        }),
        ("name without NUL", {
            let mut c = claims_buffer(&[("ab", b"")]);
            let end = c.len() - 1;
            c[end] = b'c';
            c
        }),
    ] {
        let mut data = quote.clone();
        data.extend_from_slice(&claims);
        cases.push((
            what,
            with_attestation_header(oe_format::SGX_ECDSA, &data),
            "malformed-quote",
        ));
    }
    // A bare quote cut short, and one with a non-zero byte after it that is no claims buffer.
    cases.push((
        "quote cut short",
        quote[..quote.len() - 1].to_vec(),
        "malformed-quote",
    ));
    let mut trailing = quote.clone();
    trailing.extend_from_slice(&[1, 2, 3]);
    cases.push(("garbage after the quote", trailing, "malformed-quote"));
    for (what, bytes, code) in cases {
        let err = Evidence::parse(&bytes).expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err}");
    }
    // Zero padding after a bare quote stays allowed, as for `Quote::parse`.
    let mut padded = quote.clone();
    padded.extend_from_slice(&[0; 8]);
    assert_eq!(Evidence::parse(&padded).unwrap().quote_bytes(), &quote[..]);
}

#[test]
fn format_names_round_trip() {
    for format in [
        EvidenceFormat::DcapQuote,
        EvidenceFormat::OeReport,
        EvidenceFormat::OeEvidence,
    ] {
        assert_eq!(EvidenceFormat::from_name(format.name()), Some(format));
    }
    assert_eq!(EvidenceFormat::from_name("sgx"), None);
}
