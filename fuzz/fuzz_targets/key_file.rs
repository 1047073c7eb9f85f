//! Untrusted key-file text: parsing must never panic, and whatever parses must round-trip.
#![no_main]

use cloak_crypto::key::ModelKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = ModelKey::from_key_file(text) {
        let again = ModelKey::from_key_file(&key.to_key_file()).expect("own output parses");
        assert_eq!(again.id(), key.id());
    }
});
