//! Untrusted Open Enclave endorsements (`oe_endorsements_t`): parsing never panics, and whatever
//! parses goes through the whole verifier (TCB info version 2 and its own core) with a real OE
//! quote without panicking.
#![no_main]

use cloak_attest::endorsements::Endorsements;
use cloak_attest::verify::{TrustAnchor, Verifier};
use libfuzzer_sys::fuzz_target;

const QUOTE: &[u8] = include_bytes!("../../crates/cloak-attest/testdata/openenclave/evidence");

fuzz_target!(|data: &[u8]| {
    if let Ok(endorsements) = Endorsements::parse(data) {
        let collateral = endorsements.collateral();
        let _ = collateral.validity_window();
        let at = endorsements.created_at();
        let _ = Verifier::new(TrustAnchor::intel()).verify(QUOTE, collateral, at);
    }
});
