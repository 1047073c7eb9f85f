//! Access tokens, which any client sends and the enclave reads (`Authorization: Bearer`). The
//! signature stands before the payload parser, so a fuzzer alone would never reach it: this
//! target signs the fuzzed payload itself, with a key the verifier then trusts, and so drives
//! the payload's field parsing as a model owner's own (or a forged, stolen-key) token would.
//! Nothing panics; a token that verifies re-encodes to exactly its signed payload and opens
//! only the model it names; no text verifies under a key that never signed it.
//!
//! Input layout: the first byte chooses the case (even: the rest is token text under an
//! unrelated key; odd: the rest is a payload, signed here), the rest is the input.
#![no_main]

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use cloak_crypto::sig::SigningKey;
use cloak_proto::access::AccessToken;
use libfuzzer_sys::fuzz_target;

/// What the token signature covers before the payload (`cloak_proto::access`).
const CONTEXT: &[u8] = b"cloak-access-token/v1\0";

fn key() -> Option<&'static SigningKey> {
    static KEY: OnceLock<Option<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().ok()).as_ref()
}

fn other_key() -> Option<&'static SigningKey> {
    static KEY: OnceLock<Option<SigningKey>> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().ok()).as_ref()
}

fuzz_target!(|data: &[u8]| {
    let (Some((&kind, body)), Some(key), Some(other)) = (data.split_first(), key(), other_key())
    else {
        return;
    };
    if kind % 2 == 0 {
        if let Ok(text) = std::str::from_utf8(body) {
            assert!(AccessToken::verify(text, other.public_key_spki(), "m", 0).is_err());
        }
        return;
    }
    let Ok(signature) = key.sign(&[CONTEXT, body].concat()) else {
        return;
    };
    let mut envelope = Vec::new();
    let pair = Value::Array(vec![Value::Bytes(body.to_vec()), Value::Bytes(signature)]);
    if ciborium::into_writer(&pair, &mut envelope).is_err() {
        return;
    }
    let text = URL_SAFE_NO_PAD.encode(envelope);
    if let Ok(token) = AccessToken::verify(&text, key.public_key_spki(), "m", 0) {
        assert_eq!(
            token.payload(),
            body,
            "a token is read only from its own encoding"
        );
        assert_eq!(token.model, "m");
        assert!(AccessToken::verify(&text, key.public_key_spki(), "n", 0).is_err());
        assert!(AccessToken::verify(&text, other.public_key_spki(), "m", 0).is_err());
    }
});
