//! Untrusted collateral JSON: parsing never panics; whatever parses has an ordered window or is
//! rejected by the verifier without panicking.
#![no_main]

use cloak_attest::collateral::Collateral;
use cloak_attest::verify::{TrustAnchor, Verifier};
use libfuzzer_sys::fuzz_target;

const QUOTE: &[u8] = include_bytes!("../../crates/cloak-attest/testdata/dcap-qvl/sgx_quote");

fuzz_target!(|data: &[u8]| {
    if let Ok(collateral) = Collateral::from_json(data) {
        let _ = collateral.validity_window();
        let _ = Verifier::new(TrustAnchor::intel()).verify(QUOTE, &collateral, 1_751_328_000);
    }
});
