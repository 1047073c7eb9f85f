//! What the encrypted-request path reads from untrusted parties: encapsulated requests and
//! the Binary HTTP inside them (any client can encapsulate to the server's public key, so the
//! inner message is as untrusted as the outer one), key configurations and encapsulated
//! responses (from whatever sits between client and server), and receipts. Nothing panics; a
//! request that decapsulates (copied or in place, alike) yields a response only its sender can
//! open.
//!
//! Input layout: the first byte chooses the message type, the rest is the message.
#![no_main]

use cloak_crypto::hpke::HpkeKeyPair;
use cloak_crypto::ohttp::{self, AeadId, Gateway, KeyConfig};
use libfuzzer_sys::fuzz_target;

/// A fixed gateway key, so that seeds made with it decapsulate.
const GATEWAY_KEY: [u8; 32] = [7; 32];

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            let Ok(key) = HpkeKeyPair::from_private_bytes(&GATEWAY_KEY) else {
                return;
            };
            let gateway = Gateway::new(1, key, vec![AeadId::Aes256Gcm, AeadId::Aes128Gcm]);
            // Decapsulated copied or in place, the outcome is the same.
            let copied = gateway.decapsulate(body);
            let mut buffer = body.to_vec();
            let in_place = gateway.decapsulate_in_place(&mut buffer);
            assert_eq!(
                copied.as_ref().err(),
                in_place.as_ref().err(),
                "the two ways of decapsulating disagree"
            );
            if let (Ok((inner, _)), Ok((range, responder))) = (copied, in_place) {
                assert_eq!(buffer.get(range), Some(&inner[..]));
                let _ = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(&inner[..]));
                let _ = responder.encapsulate(b"answer");
            }
        }
        1 => {
            let _ = bhttp::Message::read_bhttp(&mut std::io::Cursor::new(body));
        }
        2 => {
            if let Ok(configs) = KeyConfig::parse_list(body) {
                for config in configs {
                    assert_eq!(KeyConfig::parse(&config.encode()).as_ref(), Ok(&config));
                }
            }
            let _ = KeyConfig::parse(body);
        }
        3 => {
            // An encapsulated response for a request of ours: it must not open unless it was
            // sealed for that request.
            let Ok(key) = HpkeKeyPair::from_private_bytes(&GATEWAY_KEY) else {
                return;
            };
            let config = KeyConfig {
                key_id: 1,
                public_key: *key.public_key(),
                aeads: vec![AeadId::Aes256Gcm],
            };
            if let Ok((_, opener)) = ohttp::encapsulate_request(&config, AeadId::Aes256Gcm, b"q") {
                assert!(opener.decapsulate(body).is_err());
            }
        }
        _ => {
            // No receipt verifies under a key that never signed one.
            static KEY: std::sync::OnceLock<Option<cloak_crypto::sig::SigningKey>> =
                std::sync::OnceLock::new();
            let key = KEY.get_or_init(|| cloak_crypto::sig::SigningKey::generate().ok());
            if let (Ok(text), Some(key)) = (std::str::from_utf8(body), key) {
                assert!(cloak_proto::receipt::Receipt::open(text, key.public_key_spki()).is_err());
            }
        }
    }
});
