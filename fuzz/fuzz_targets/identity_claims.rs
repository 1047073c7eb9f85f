//! What a client reads from a server before trusting it: the identity claims (CBOR, from an
//! RA-TLS certificate's evidence or a fresh attestation, coalesced nonces included) and the
//! attestation document around them (JSON). Nothing panics; claims that read re-encode to
//! claims that read back the same (models in name order, as the writer puts them); a document
//! that reads gives its claims to the same reader.
//!
//! Input layout: the first byte chooses the case (even: the rest is claims CBOR; odd: the rest
//! is an attestation document's JSON).
#![no_main]

use cloak_proto::attestation::AttestationDocument;
use cloak_proto::identity::IdentityClaims;
use libfuzzer_sys::fuzz_target;

fn claims(bytes: &[u8]) {
    let Ok(claims) = IdentityClaims::from_cbor(bytes) else {
        return;
    };
    let again = IdentityClaims::from_cbor(&claims.to_cbor()).expect("written claims read back");
    let mut sorted = claims.clone();
    sorted.models.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(again, sorted);
    assert_eq!(again.evidence_digest(), claims.evidence_digest());
    for nonce in claims.nonces.iter().chain(claims.nonce.as_ref()) {
        assert!(claims.answers(nonce));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if kind % 2 == 0 {
        claims(body);
    } else if let Ok(document) = serde_json::from_slice::<AttestationDocument>(body) {
        let _ = document.collateral_json();
        claims(&document.claims);
    }
});
