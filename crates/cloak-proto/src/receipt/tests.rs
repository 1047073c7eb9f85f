use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::*;
use crate::identity::ModelClaim;

fn claims(key: &SigningKey) -> IdentityClaims {
    IdentityClaims {
        tls_spki_sha256: [0x11; 32],
        hpke_key_config: vec![0x01, 0x00, 0x20],
        receipt_public_key: key.public_key_spki().to_vec(),
        server_version: "0.1.0".to_owned(),
        platform: "sim".to_owned(),
        models: vec![ModelClaim {
            name: "mlp".to_owned(),
            bytes: 42,
            sha256: [0xAA; 32],
        }],
        engine: None,
        fleet: None,
        nonce: None,
        nonces: Vec::new(),
    }
}

fn receipt(claims: &IdentityClaims) -> Receipt {
    Receipt {
        model: "mlp".to_owned(),
        model_sha256: [0xAA; 32],
        input_sha256: cloak_crypto::hash::sha256(b"request"),
        output_sha256: cloak_crypto::hash::sha256(b"response"),
        time_ms: 1_795_000_000_000,
        request_id: "00112233445566778899aabbccddeeff".to_owned(),
        evidence_sha256: claims.evidence_digest(),
        digests: BodyDigest::Sha256,
    }
}

const SALT: Salt = [0x5a; SALT_LEN];

/// [`receipt`] with its digests made as `digests` says, under [`SALT`].
fn made_with(claims: &IdentityClaims, digests: BodyDigest) -> Receipt {
    Receipt {
        input_sha256: digests.of(&SALT, b"request"),
        output_sha256: digests.of(&SALT, b"response"),
        digests,
        ..receipt(claims)
    }
}

/// A receipt as servers make them by default: digests salted (version 2).
fn salted(claims: &IdentityClaims) -> Receipt {
    made_with(claims, BodyDigest::SaltedSha256)
}

#[test]
fn a_salted_receipt_checks_bodies_only_with_its_salt() {
    let key = SigningKey::generate().unwrap();
    let claims = claims(&key);
    let text = salted(&claims).sign(&key).unwrap();
    let opened = Receipt::verify(&text, &claims).unwrap();
    assert_eq!(opened.digests, BodyDigest::SaltedSha256);
    opened
        .check_bodies(Some(&SALT), b"request", b"response")
        .unwrap();
    assert_eq!(
        opened.check_bodies(None, b"request", b"response"),
        Err(ReceiptError::SaltMissing)
    );
    let other = [0x5b; SALT_LEN];
    assert_eq!(
        opened.check_bodies(Some(&other), b"request", b"response"),
        Err(ReceiptError::Input)
    );
    assert_eq!(
        opened.check_response(Some(&SALT), b"responsE"),
        Err(ReceiptError::Output)
    );
    // Whoever holds the receipt but not the salt cannot test a guessed body against it.
    assert_ne!(opened.input_sha256, cloak_crypto::hash::sha256(b"request"));
    // The salt's wire form: 32 lowercase hex digits, nothing else.
    assert_eq!(parse_salt(hex::encode(SALT).as_bytes()), Some(SALT));
    for bad in ["5A".repeat(16), "5a".repeat(15), "zz".repeat(16)] {
        assert_eq!(parse_salt(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn a_signed_receipt_verifies_against_its_claims_and_bodies() {
    let key = SigningKey::generate().unwrap();
    let claims = claims(&key);
    let text = receipt(&claims).sign(&key).unwrap();
    let opened = Receipt::verify(&text, &claims).unwrap();
    assert_eq!(opened, receipt(&claims));
    // A version-1 receipt (from a server before salting) has plain digests.
    opened.check_bodies(None, b"request", b"response").unwrap();
    assert_eq!(
        opened.check_bodies(None, b"requesT", b"response"),
        Err(ReceiptError::Input)
    );
    assert_eq!(
        opened.check_bodies(None, b"request", b"responsE"),
        Err(ReceiptError::Output)
    );
    // A digest computed beforehand is held to the same request.
    opened
        .check_request_digest(&cloak_crypto::hash::sha256(b"request"))
        .unwrap();
    assert_eq!(
        opened.check_request_digest(&cloak_crypto::hash::sha256(b"requesT")),
        Err(ReceiptError::Input)
    );
    // A fresh attestation's claims (with a nonce) name the same evidence.
    let mut fresh = claims.clone();
    fresh.nonce = Some(vec![7; 32]);
    Receipt::verify(&text, &fresh).unwrap();
}

#[test]
fn every_changed_byte_is_refused() {
    let key = SigningKey::generate().unwrap();
    let claims = claims(&key);
    let text = receipt(&claims).sign(&key).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
    for i in 0..raw.len() {
        for flip in [0x01u8, 0x80] {
            let mut changed = raw.clone();
            changed[i] ^= flip;
            let changed = URL_SAFE_NO_PAD.encode(&changed);
            assert!(
                Receipt::verify(&changed, &claims).is_err(),
                "byte {i} ^ {flip:#x} accepted"
            );
        }
    }
}

#[test]
fn another_key_other_evidence_or_another_model_is_refused() {
    let key = SigningKey::generate().unwrap();
    let claims = claims(&key);
    let text = receipt(&claims).sign(&key).unwrap();

    let other = SigningKey::generate().unwrap();
    let forged = receipt(&claims).sign(&other).unwrap();
    assert_eq!(
        Receipt::verify(&forged, &claims),
        Err(ReceiptError::Signature)
    );

    let mut changed = claims.clone();
    changed.models[0].bytes = 43;
    assert_eq!(
        Receipt::verify(&text, &changed),
        Err(ReceiptError::Evidence)
    );

    // Signed with the right key over the right evidence, but naming a model digest the claims
    // do not list.
    let mut wrong_model = receipt(&claims);
    wrong_model.model_sha256 = [0xBB; 32];
    let text = wrong_model.sign(&key).unwrap();
    assert_eq!(
        Receipt::verify(&text, &claims),
        Err(ReceiptError::Model("mlp".to_owned()))
    );
}

#[test]
fn non_canonical_or_extended_payloads_are_refused() {
    let key = SigningKey::generate().unwrap();
    let claims = claims(&key);
    let sign_payload = |payload: Vec<u8>| {
        let signature = key.sign(&signed_message(&payload)).unwrap();
        let mut out = Vec::new();
        ciborium::into_writer(
            &Value::Array(vec![Value::Bytes(payload), Value::Bytes(signature)]),
            &mut out,
        )
        .unwrap();
        URL_SAFE_NO_PAD.encode(out)
    };
    let Value::Map(mut entries) =
        ciborium::from_reader(receipt(&claims).payload().as_slice()).unwrap()
    else {
        panic!("not a map")
    };
    // Signed, but with keys out of canonical order.
    entries.reverse();
    let mut reordered = Vec::new();
    ciborium::into_writer(&Value::Map(entries.clone()), &mut reordered).unwrap();
    assert!(matches!(
        Receipt::verify(&sign_payload(reordered), &claims),
        Err(ReceiptError::Malformed(_))
    ));
    // Signed, with a key this version does not know.
    entries.push((Value::Text("extra".into()), Value::Bool(true)));
    let mut extended = Vec::new();
    ciborium::into_writer(&Value::Map(entries), &mut extended).unwrap();
    assert!(matches!(
        Receipt::verify(&sign_payload(extended), &claims),
        Err(ReceiptError::Malformed(_))
    ));
    assert!(matches!(
        Receipt::verify("not base64!", &claims),
        Err(ReceiptError::Malformed(_))
    ));
    assert!(matches!(
        Receipt::verify(&"A".repeat(MAX_RECEIPT_LEN + 1), &claims),
        Err(ReceiptError::Malformed(_))
    ));
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    [CONTEXT, payload].concat()
}

/// A version 3 receipt: digests salted, BLAKE3.
fn blake3(claims: &IdentityClaims) -> Receipt {
    made_with(claims, BodyDigest::SaltedBlake3)
}

#[test]
fn a_blake3_receipt_checks_bodies_with_blake3_and_its_salt() {
    let key = SigningKey::generate().unwrap();
    let claims = claims(&key);
    let text = blake3(&claims).sign(&key).unwrap();
    let opened = Receipt::verify(&text, &claims).unwrap();
    assert_eq!(opened, blake3(&claims));
    assert_eq!(opened.digests.version(), 3);
    opened
        .check_bodies(Some(&SALT), b"request", b"response")
        .unwrap();
    assert_eq!(
        opened.check_bodies(Some(&SALT), b"requesT", b"response"),
        Err(ReceiptError::Input)
    );
    assert_eq!(
        opened.check_bodies(Some(&SALT), b"request", b"responsE"),
        Err(ReceiptError::Output)
    );
    assert_eq!(
        opened.check_bodies(None, b"request", b"response"),
        Err(ReceiptError::SaltMissing)
    );
    assert_eq!(
        opened.check_bodies(Some(&[0x5b; SALT_LEN]), b"request", b"response"),
        Err(ReceiptError::Input)
    );
    // The version is signed: the SHA-256 digest of the same body is another digest, and a
    // version 2 receipt stating the BLAKE3 digests checks against no body.
    assert_eq!(
        opened.check_request_digest(&salted_digest(&SALT, b"request")),
        Err(ReceiptError::Input)
    );
    let mislabelled = Receipt {
        digests: BodyDigest::SaltedSha256,
        ..blake3(&claims)
    };
    let text = mislabelled.sign(&key).unwrap();
    assert_eq!(
        Receipt::verify(&text, &claims)
            .unwrap()
            .check_bodies(Some(&SALT), b"request", b"response"),
        Err(ReceiptError::Input)
    );
}

#[test]
fn an_unknown_version_is_refused() {
    let key = SigningKey::generate().unwrap();
    let claims = claims(&key);
    let payload = blake3(&claims).payload();
    // `v` is the first key of the canonical map: its value is the byte after the key "v".
    let at = payload.windows(2).position(|w| w == [0x61, b'v']).unwrap() + 2;
    assert_eq!(payload[at], 3);
    for version in [0u8, 4, 23] {
        let mut changed = payload.clone();
        changed[at] = version;
        let signature = key.sign(&signed_message(&changed)).unwrap();
        let mut out = Vec::new();
        ciborium::into_writer(
            &Value::Array(vec![Value::Bytes(changed), Value::Bytes(signature)]),
            &mut out,
        )
        .unwrap();
        assert!(
            matches!(
                Receipt::verify(&URL_SAFE_NO_PAD.encode(out), &claims),
                Err(ReceiptError::Malformed(_))
            ),
            "version {version} accepted"
        );
    }
}

#[test]
fn the_server_uses_the_first_digest_the_request_names_that_it_knows() {
    let cases: [(Option<&[u8]>, BodyDigest); 8] = [
        (None, BodyDigest::SaltedSha256),
        (Some(b""), BodyDigest::SaltedSha256),
        (Some(b"blake3"), BodyDigest::SaltedBlake3),
        (Some(b"BLAKE3"), BodyDigest::SaltedBlake3),
        (Some(b"sha256, blake3"), BodyDigest::SaltedSha256),
        (Some(b"md5, blake3"), BodyDigest::SaltedBlake3),
        (Some(b"md5"), BodyDigest::SaltedSha256),
        (Some(b"\xff, blake3"), BodyDigest::SaltedSha256),
    ];
    for (header, expected) in cases {
        assert_eq!(BodyDigest::requested(header), expected, "{header:?}");
    }
    for digests in [BodyDigest::SaltedSha256, BodyDigest::SaltedBlake3] {
        let name = digests.name().unwrap();
        assert_eq!(BodyDigest::requested(Some(name.as_bytes())), digests);
    }
    assert_eq!(BodyDigest::Sha256.name(), None);
}

#[test]
fn a_receipt_has_the_digests_asked_for_or_the_servers_default() {
    let key = SigningKey::generate().unwrap();
    let claims = claims(&key);
    let (v1, v2, v3) = (receipt(&claims), salted(&claims), blake3(&claims));
    // Asked for BLAKE3: version 3, or version 2 from a server that does not know it.
    v3.check_digests_asked(BodyDigest::SaltedBlake3).unwrap();
    v2.check_digests_asked(BodyDigest::SaltedBlake3).unwrap();
    assert_eq!(
        v1.check_digests_asked(BodyDigest::SaltedBlake3),
        Err(ReceiptError::DigestNotAsked(1))
    );
    // Held to SHA-256: a BLAKE3 receipt is refused.
    v2.check_digests_asked(BodyDigest::SaltedSha256).unwrap();
    let refused = v3
        .check_digests_asked(BodyDigest::SaltedSha256)
        .unwrap_err();
    assert_eq!(refused, ReceiptError::DigestNotAsked(3));
    assert_eq!(refused.code(), "receipt-digest-not-asked");
    // Asked for nothing (the salt sent all the same): version 2 only, never unsalted digests.
    v2.check_digests_asked(BodyDigest::Sha256).unwrap();
    assert_eq!(
        v1.check_digests_asked(BodyDigest::Sha256),
        Err(ReceiptError::DigestNotAsked(1))
    );
    assert_eq!(
        v3.check_digests_asked(BodyDigest::Sha256),
        Err(ReceiptError::DigestNotAsked(3))
    );
}
