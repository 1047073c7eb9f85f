//! Untrusted evidence in any wrapper (bare quote, Open Enclave report or attestation header with
//! custom claims): unwrapping never panics, whatever the format it is read as, and the quote it
//! finds lies within the input.
#![no_main]

use cloak_attest::evidence::{Evidence, EvidenceFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [
        None,
        Some(EvidenceFormat::DcapQuote),
        Some(EvidenceFormat::OeReport),
        Some(EvidenceFormat::OeEvidence),
    ] {
        let parsed = match format {
            None => Evidence::parse(data),
            Some(format) => Evidence::parse_as(data, format),
        };
        if let Ok(evidence) = parsed {
            assert!(evidence.quote_bytes().len() <= data.len());
            let _ = evidence.custom_claims();
            let _ = evidence.claims_bound();
            let _ = evidence.quote().measurements();
        }
    }
});
