//! Untrusted key-broker messages: what the server reads from the network when it asks for a
//! key (challenges and releases relayed by the untrusted host), and what the broker reads from
//! any caller. Parsing never panics, and a release answer that parses never opens under a key
//! it was not sealed to.
//!
//! Input layout: the first byte chooses the message type, the rest is the JSON body.
#![no_main]

use cloak_crypto::hpke::{HpkeKeyPair, HpkeSealed};
use cloak_proto::kbs::{
    AddModelRequest, AuditResponse, ChallengeRequest, ChallengeResponse, ReleaseRequest,
    ReleaseResponse, release_info,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            let _ = serde_json::from_slice::<ChallengeRequest>(body);
        }
        1 => {
            let _ = serde_json::from_slice::<ChallengeResponse>(body);
        }
        2 => {
            if let Ok(request) = serde_json::from_slice::<ReleaseRequest>(body) {
                let _ = cloak_attest::collateral::Collateral::from_json(
                    request.collateral.get().as_bytes(),
                );
                let _ = cloak_attest::quote::Quote::parse(&request.evidence);
            }
        }
        3 => {
            if let Ok(response) = serde_json::from_slice::<ReleaseResponse>(body)
                && let Ok(enc) = <[u8; 32]>::try_from(response.enc.as_slice())
            {
                // A fresh key the fuzzer cannot know: nothing it writes may open.
                let recipient = HpkeKeyPair::generate();
                let sealed = HpkeSealed {
                    enc,
                    ciphertext: response.sealed_key,
                };
                assert!(
                    recipient
                        .open(&sealed, &release_info(&response.model), b"nonce")
                        .is_err()
                );
            }
        }
        4 => {
            let _ = serde_json::from_slice::<AddModelRequest>(body);
        }
        _ => {
            let _ = serde_json::from_slice::<AuditResponse>(body);
        }
    }
});
