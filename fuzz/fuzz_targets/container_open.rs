//! Untrusted container bytes through every reader: header parsing (no key), authenticated
//! verification and full decryption. None may panic, and a successful open must reproduce
//! exactly the plaintext that verification accepted.
#![no_main]

use cloak_crypto::container::{self, DigestCheck};
use cloak_crypto::key::ModelKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = ModelKey::from_bytes([0x07; 32]);
    let header = container::read_header(data);
    let verified = container::verify(&key, data, DigestCheck::Recompute);
    let mut plaintext = Vec::new();
    let opened = container::open(&key, data, &mut plaintext);
    assert_eq!(verified.is_ok(), opened.is_ok());
    if let Ok(opened) = opened {
        assert!(header.is_ok());
        assert_eq!(plaintext.len() as u64, opened.header().plaintext_len());
    }
});
