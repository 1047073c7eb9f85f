use super::*;

fn claims() -> IdentityClaims {
    IdentityClaims {
        tls_spki_sha256: [0x11; 32],
        hpke_key_config: vec![0x01, 0x00, 0x20],
        receipt_public_key: vec![0x30, 0x59],
        server_version: "0.1.0".to_owned(),
        platform: "sim".to_owned(),
        models: vec![
            ModelClaim {
                name: "resnet".to_owned(),
                bytes: 1 << 20,
                sha256: [0xAA; 32],
            },
            ModelClaim {
                name: "bert".to_owned(),
                bytes: 42,
                sha256: [0xBB; 32],
            },
        ],
        engine: Some(EngineClaim {
            name: "onnxruntime".to_owned(),
            version: "1.32.0".to_owned(),
            library_sha256: Some([0xCC; 32]),
        }),
        fleet: None,
        nonce: None,
        nonces: Vec::new(),
    }
}

fn keys(cbor: &[u8]) -> Vec<String> {
    let Value::Map(entries) = ciborium::from_reader(cbor).unwrap() else {
        panic!("not a map")
    };
    entries
        .into_iter()
        .map(|(k, _)| k.into_text().unwrap())
        .collect()
}

#[test]
fn claims_round_trip_with_models_sorted_by_name() {
    let mut original = claims();
    let decoded = IdentityClaims::from_cbor(&original.to_cbor()).unwrap();
    original.models.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(decoded, original);
    assert_eq!(decoded.models[0].name, "bert");

    original.nonce = Some(vec![7; 32]);
    assert_eq!(
        IdentityClaims::from_cbor(&original.to_cbor()).unwrap(),
        original
    );
}

#[test]
fn the_encoding_is_deterministic_cbor() {
    let mut c = claims();
    c.nonce = Some(vec![1]);
    let cbor = c.to_cbor();
    assert_eq!(
        keys(&cbor),
        [
            "nonce",
            "engine",
            "models",
            "platform",
            "pubkey-hash",
            "receipt-key",
            "cloak-identity",
            "server-version",
            "hpke-key-config"
        ]
    );
    // The model order in the input does not change the bytes.
    let mut reversed = c.clone();
    reversed.models.reverse();
    assert_eq!(reversed.to_cbor(), cbor);
}

#[test]
fn pubkey_hash_has_the_interoperable_ra_tls_layout() {
    let cbor = claims().to_cbor();
    // "pubkey-hash" then bstr(36) of [1, bstr(32)], as Gramine writes it.
    let mut expected = vec![0x6B];
    expected.extend_from_slice(b"pubkey-hash");
    expected.extend_from_slice(&[0x58, 0x24, 0x82, 0x01, 0x58, 0x20]);
    expected.extend_from_slice(&[0x11; 32]);
    assert!(
        cbor.windows(expected.len()).any(|w| w == expected),
        "pubkey-hash layout"
    );
}

#[test]
fn report_data_is_sha512_of_the_bytes() {
    let cbor = claims().to_cbor();
    assert_eq!(
        IdentityClaims::report_data(&cbor),
        cloak_crypto::hash::sha512(&cbor)
    );
}

/// The claims map with one entry replaced (`None` removes it).
fn edited(key: &str, value: Option<Value>) -> Vec<u8> {
    let Value::Map(mut entries) = ciborium::from_reader(&claims().to_cbor()[..]).unwrap() else {
        panic!()
    };
    entries.retain(|(k, _)| k.as_text() != Some(key));
    if let Some(value) = value {
        entries.push((Value::Text(key.to_owned()), value));
    }
    encode(&Value::Map(entries))
}

#[test]
fn every_required_claim_is_required() {
    for key in [
        "cloak-identity",
        "hpke-key-config",
        "models",
        "platform",
        "pubkey-hash",
        "receipt-key",
        "server-version",
    ] {
        let err = IdentityClaims::from_cbor(&edited(key, None)).unwrap_err();
        assert_eq!(err, ClaimsError::Missing(key), "{key}");
    }
}

#[test]
fn malformed_claims_are_refused_with_reasons() {
    let err = |bytes: Vec<u8>| IdentityClaims::from_cbor(&bytes).unwrap_err();
    assert_eq!(
        err(edited("cloak-identity", Some(Value::Text("v2".into())))),
        ClaimsError::UnsupportedVersion("v2".into())
    );
    assert_eq!(
        err(edited("platform", Some(Value::Integer(1.into())))).code(),
        "malformed-claims"
    );
    let sha384 = encode(&Value::Array(vec![
        Value::Integer(7.into()),
        Value::Bytes(vec![0; 48]),
    ]));
    assert_eq!(
        err(edited("pubkey-hash", Some(Value::Bytes(sha384)))).code(),
        "malformed-claims"
    );
    let short = encode(&Value::Array(vec![
        Value::Integer(1.into()),
        Value::Bytes(vec![0; 31]),
    ]));
    assert_eq!(
        err(edited("pubkey-hash", Some(Value::Bytes(short)))).code(),
        "malformed-claims"
    );
    let bad_model = Value::Array(vec![Value::Map(vec![(
        Value::Text("name".into()),
        Value::Text("m".into()),
    )])]);
    assert_eq!(
        err(edited("models", Some(bad_model))),
        ClaimsError::Missing("models.bytes")
    );
    let engine_without_version = Value::Map(vec![(
        Value::Text("name".into()),
        Value::Text("tract".into()),
    )]);
    assert_eq!(
        err(edited("engine", Some(engine_without_version))),
        ClaimsError::Missing("engine.version")
    );
    let short_library = Value::Map(vec![
        (
            Value::Text("name".into()),
            Value::Text("onnxruntime".into()),
        ),
        (Value::Text("version".into()), Value::Text("1.32.0".into())),
        (
            Value::Text("library-sha256".into()),
            Value::Bytes(vec![0; 31]),
        ),
    ]);
    assert_eq!(
        err(edited("engine", Some(short_library))).code(),
        "malformed-claims"
    );
    // A duplicated key.
    let Value::Map(mut entries) = ciborium::from_reader(&claims().to_cbor()[..]).unwrap() else {
        panic!()
    };
    entries.push((
        Value::Text("platform".into()),
        Value::Text("gramine".into()),
    ));
    assert_eq!(err(encode(&Value::Map(entries))).code(), "malformed-claims");
    assert_eq!(err(b"\xff".to_vec()).code(), "malformed-claims");
    assert_eq!(
        err(encode(&Value::Array(vec![]))).code(),
        "malformed-claims"
    );
    assert_eq!(
        err(vec![0; MAX_CLAIMS_LEN + 1]),
        ClaimsError::TooLarge(MAX_CLAIMS_LEN + 1)
    );
}

/// Claims of a server that predates engines carry none; a compiled-in engine names no library.
#[test]
fn the_engine_is_optional_and_so_is_its_library() {
    let decoded = IdentityClaims::from_cbor(&edited("engine", None)).unwrap();
    assert_eq!(decoded.engine, None);
    let mut tract = claims();
    tract.engine = Some(EngineClaim {
        name: "tract".to_owned(),
        version: "0.23.9".to_owned(),
        library_sha256: None,
    });
    let decoded = IdentityClaims::from_cbor(&tract.to_cbor()).unwrap();
    assert_eq!(decoded.engine, tract.engine);
    // The library digest is part of what the evidence covers.
    let mut swapped = claims();
    swapped.engine.as_mut().unwrap().library_sha256 = Some([0xDD; 32]);
    assert_ne!(swapped.evidence_digest(), claims().evidence_digest());
}

#[test]
fn unknown_claims_are_ignored() {
    let bytes = edited("future-claim", Some(Value::Text("x".into())));
    let mut expected = claims();
    expected.models.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(IdentityClaims::from_cbor(&bytes).unwrap(), expected);
}

#[test]
fn coalesced_claims_answer_each_of_their_nonces_and_no_other() {
    let mut c = claims();
    c.nonces = vec![vec![9; 32], vec![1; 8], vec![9; 32], vec![5]];
    let cbor = c.to_cbor();
    assert!(keys(&cbor).contains(&"nonces".to_owned()));
    let read = IdentityClaims::from_cbor(&cbor).unwrap();
    // Written once each, in byte order.
    assert_eq!(read.nonces, [vec![1; 8], vec![5], vec![9; 32]]);
    assert!(read.is_fresh());
    for nonce in [&[1u8; 8][..], &[5], &[9; 32]] {
        assert!(read.answers(nonce));
    }
    assert!(!read.answers(&[1; 7]));
    assert!(!read.answers(&[6]));
    // The digest receipts name ignores nonces however they are carried.
    let mut single = claims();
    single.nonce = Some(vec![5]);
    assert_eq!(read.evidence_digest(), claims().evidence_digest());
    assert_eq!(single.evidence_digest(), claims().evidence_digest());
    assert!(!claims().is_fresh());
    assert!(!claims().answers(&[5]));
}

#[test]
fn malformed_nonce_lists_are_refused() {
    let base: Value = ciborium::from_reader(claims().to_cbor().as_slice()).unwrap();
    let Value::Map(fields) = base else {
        panic!("not a map")
    };
    let fields: Vec<(String, Value)> = fields
        .into_iter()
        .map(|(k, v)| (k.into_text().unwrap(), v))
        .collect();
    let encoded = |nonces: Value, with_nonce: bool| {
        let mut entries = vec![("nonces", nonces)];
        entries.extend(fields.iter().map(|(k, v)| (k.as_str(), v.clone())));
        if with_nonce {
            entries.push(("nonce", Value::Bytes(vec![1])));
        }
        encode_canonical(entries)
    };
    let list =
        |items: &[&[u8]]| Value::Array(items.iter().map(|i| Value::Bytes(i.to_vec())).collect());
    let good = encoded(list(&[&[1], &[2]]), false);
    assert!(IdentityClaims::from_cbor(&good).is_ok());
    for (bad, why) in [
        (encoded(list(&[&[1]]), false), "one nonce"),
        (encoded(list(&[]), false), "no nonce"),
        (encoded(list(&[&[2], &[1]]), false), "out of order"),
        (encoded(list(&[&[1], &[1]]), false), "repeated"),
        (encoded(Value::Bytes(vec![1, 2]), false), "not an array"),
        (
            encoded(
                Value::Array(vec![Value::Bytes(vec![1]), Value::Text("x".into())]),
                false,
            ),
            "not bytes",
        ),
        (encoded(list(&[&[1], &[2]]), true), "nonce and nonces"),
        (
            encoded(
                Value::Array(
                    (0..=MAX_NONCES as u16)
                        .map(|i| Value::Bytes(i.to_be_bytes().to_vec()))
                        .collect(),
                ),
                false,
            ),
            "too many",
        ),
    ] {
        assert!(
            matches!(
                IdentityClaims::from_cbor(&bad),
                Err(ClaimsError::Malformed(_))
            ),
            "{why}"
        );
    }
}

#[test]
fn a_fleet_name_is_claimed_and_covered_by_the_evidence_digest() {
    let mut fleet = claims();
    fleet.fleet = Some("chat".to_owned());
    let cbor = fleet.to_cbor();
    assert!(keys(&cbor).contains(&"fleet".to_owned()));
    assert_eq!(
        IdentityClaims::from_cbor(&cbor).unwrap().fleet.as_deref(),
        Some("chat")
    );
    assert_ne!(fleet.evidence_digest(), claims().evidence_digest());
    assert!(!keys(&claims().to_cbor()).contains(&"fleet".to_owned()));
    let wrong = edited("fleet", Some(Value::Integer(1.into())));
    assert!(IdentityClaims::from_cbor(&wrong).is_err());
}
