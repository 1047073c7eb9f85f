//! Untrusted Azure Attestation tokens and JWKS documents: parsing never panics, whether the
//! input is read as a JWKS or as a token verified against the recorded JWKS.
#![no_main]

use std::sync::OnceLock;

use cloak_attest::maa::{Jwks, verify_token};
use libfuzzer_sys::fuzz_target;

const RECORDED_JWKS: &[u8] =
    include_bytes!("../../crates/cloak-attest/testdata/azure-maa/recorded/jwks.json");

fn recorded() -> &'static Jwks {
    static JWKS: OnceLock<Jwks> = OnceLock::new();
    JWKS.get_or_init(|| Jwks::from_json(RECORDED_JWKS).expect("the recorded JWKS parses"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(jwks) = Jwks::from_json(data) {
        for key in jwks.keys() {
            let _ = key.validity();
        }
    }
    let _ = verify_token(
        data,
        recorded(),
        Some("https://sharedwus.wus.attest.azure.net"),
        1_654_041_600,
    );
});
