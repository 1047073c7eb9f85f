//! Untrusted quote bytes: parsing never panics, and a parsed quote's accessors are total.
#![no_main]

use cloak_attest::quote::Quote;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(quote) = Quote::parse(data) {
        let _ = quote.measurements();
        let _ = quote.report_data();
        let _ = quote.is_debug();
        assert!(quote.signed_len() <= data.len());
    }
});
