use super::*;

const REQUEST: &[u8] = b"\x00\x03GET\x05https\x0bexample.com\x01/";
const RESPONSE: &[u8] = &[0x01, 0x40, 0xc8];

fn gateway(aeads: Vec<AeadId>) -> Gateway {
    Gateway::new(7, HpkeKeyPair::generate(), aeads)
}

/// Decapsulates with both entry points, copied and in place, which must agree: the request
/// and what answers it, or the error.
fn opened(gateway: &Gateway, enc_request: &[u8]) -> Result<(Vec<u8>, ServerResponse), OhttpError> {
    let copied = gateway.decapsulate(enc_request);
    let mut buffer = enc_request.to_vec();
    let in_place = gateway.decapsulate_in_place(&mut buffer);
    match (copied, in_place) {
        // The answer is sealed with what the in-place path kept, as the server does.
        (Ok((request, _)), Ok((range, response))) => {
            assert_eq!(&buffer[range], request.as_slice());
            Ok((request.to_vec(), response))
        }
        (Err(copied), Err(in_place)) => {
            assert_eq!(copied, in_place);
            Err(copied)
        }
        (copied, in_place) => panic!("decapsulated {copied:?}, in place {in_place:?}"),
    }
}

#[test]
fn round_trips_with_each_aead() {
    for aead in [AeadId::Aes256Gcm, AeadId::Aes128Gcm] {
        let gateway = gateway(vec![AeadId::Aes256Gcm, AeadId::Aes128Gcm]);
        let config = KeyConfig::parse(&gateway.config().encode()).unwrap();
        let (enc_request, client) = encapsulate_request(&config, aead, REQUEST).unwrap();
        assert_eq!(
            enc_request.len(),
            HEADER_LEN + ENC_LEN + REQUEST.len() + TAG_LEN
        );
        assert_eq!(&enc_request[..3], &[7, 0x00, 0x20]);
        let (request, server) = opened(&gateway, &enc_request).unwrap();
        assert_eq!(request.as_slice(), REQUEST);
        let enc_response = server.encapsulate(RESPONSE).unwrap();
        assert_eq!(
            enc_response.len(),
            aead.secret_len() + RESPONSE.len() + TAG_LEN
        );
        assert_eq!(
            client.decapsulate(&enc_response).unwrap().as_slice(),
            RESPONSE
        );
    }
}

/// A request written into a `RequestBuffer` is sealed where it lies, to the same message a
/// copied one makes, and is not left in the clear.
#[test]
fn a_request_written_in_place_encapsulates_as_a_copied_one() {
    let gateway = gateway(vec![AeadId::Aes256Gcm]);
    // Less room than the request needs: the buffer grows, its prefix kept.
    let mut buffer = RequestBuffer::with_capacity(4);
    io::Write::write_all(&mut buffer, REQUEST).unwrap();
    assert_eq!(buffer.request(), REQUEST);
    // Plaintext until sealed: never printed.
    let printed = format!("{buffer:?}");
    assert!(!printed.contains("example"), "{printed}");
    let (enc_request, client) =
        encapsulate_buffer(gateway.config(), AeadId::Aes256Gcm, buffer).unwrap();
    assert_eq!(enc_request.len(), PREFIX_LEN + REQUEST.len() + TAG_LEN);
    assert_eq!(&enc_request[..3], &[7, 0x00, 0x20]);
    assert!(!enc_request.windows(REQUEST.len()).any(|w| w == REQUEST));
    let (request, server) = opened(&gateway, &enc_request).unwrap();
    assert_eq!(request, REQUEST);
    let enc_response = server.encapsulate(RESPONSE).unwrap();
    assert_eq!(
        client.decapsulate(&enc_response).unwrap().as_slice(),
        RESPONSE
    );
    // A suite the gateway does not offer is refused before anything is sealed.
    assert_eq!(
        encapsulate_buffer(
            gateway.config(),
            AeadId::Aes128Gcm,
            RequestBuffer::with_capacity(0)
        )
        .unwrap_err(),
        OhttpError::Unsupported
    );
}

/// An empty request is framing only: header, `enc` and tag.
#[test]
fn an_empty_request_round_trips() {
    let gateway = gateway(vec![AeadId::Aes256Gcm]);
    let (enc_request, client) =
        encapsulate_request(gateway.config(), AeadId::Aes256Gcm, b"").unwrap();
    assert_eq!(enc_request.len(), PREFIX_LEN + TAG_LEN);
    let (request, server) = opened(&gateway, &enc_request).unwrap();
    assert!(request.is_empty());
    let enc_response = server.encapsulate(b"").unwrap();
    assert!(client.decapsulate(&enc_response).unwrap().is_empty());
}

#[test]
fn every_changed_byte_is_refused() {
    let gateway = gateway(vec![AeadId::Aes256Gcm]);
    let (enc_request, client) =
        encapsulate_request(gateway.config(), AeadId::Aes256Gcm, REQUEST).unwrap();
    for i in 0..enc_request.len() {
        let mut tampered = enc_request.clone();
        tampered[i] ^= 0x01;
        assert!(opened(&gateway, &tampered).is_err(), "byte {i}");
    }
    // Every shorter message, down to nothing, is refused (neither entry point panics).
    for len in 0..enc_request.len() {
        assert!(
            opened(&gateway, &enc_request[..len]).is_err(),
            "{len} bytes"
        );
    }
    let (_, server) = opened(&gateway, &enc_request).unwrap();
    let enc_response = server.encapsulate(RESPONSE).unwrap();
    for i in 0..enc_response.len() {
        let mut tampered = enc_response.clone();
        tampered[i] ^= 0x01;
        let (_, client) =
            encapsulate_request(gateway.config(), AeadId::Aes256Gcm, REQUEST).unwrap();
        assert_eq!(
            client.decapsulate(&tampered).unwrap_err(),
            OhttpError::Crypto,
            "byte {i}"
        );
    }
    // A response answers only the request it was made for.
    let (other_request, _) =
        encapsulate_request(gateway.config(), AeadId::Aes256Gcm, REQUEST).unwrap();
    let (_, other_server) = opened(&gateway, &other_request).unwrap();
    let other_response = other_server.encapsulate(RESPONSE).unwrap();
    assert!(client.decapsulate(&other_response).is_err());
}

#[test]
fn unknown_keys_and_suites_are_refused() {
    let gateway = gateway(vec![AeadId::Aes256Gcm]);
    let other = Gateway::new(8, HpkeKeyPair::generate(), vec![AeadId::Aes256Gcm]);
    let (to_other, _) = encapsulate_request(other.config(), AeadId::Aes256Gcm, REQUEST).unwrap();
    assert_eq!(
        opened(&gateway, &to_other).unwrap_err(),
        OhttpError::Unsupported
    );
    // A suite the gateway does not offer, even with its own key.
    let mut lax = gateway.config().clone();
    lax.aeads = vec![AeadId::Aes128Gcm];
    let (weaker, _) = encapsulate_request(&lax, AeadId::Aes128Gcm, REQUEST).unwrap();
    assert_eq!(
        opened(&gateway, &weaker).unwrap_err(),
        OhttpError::Unsupported
    );
    assert_eq!(
        encapsulate_request(gateway.config(), AeadId::Aes128Gcm, REQUEST).unwrap_err(),
        OhttpError::Unsupported
    );
}

#[test]
fn key_configs_encode_as_rfc_9458_says() {
    let config = KeyConfig {
        key_id: 1,
        public_key: [0xAB; 32],
        aeads: vec![AeadId::Aes256Gcm],
    };
    let encoded = config.encode();
    let mut expected = vec![1, 0x00, 0x20];
    expected.extend_from_slice(&[0xAB; 32]);
    expected.extend_from_slice(&[0, 4, 0, 1, 0, 2]);
    assert_eq!(encoded, expected);
    assert_eq!(KeyConfig::parse(&encoded).unwrap(), config);
    let list = KeyConfig::encode_list(&[config.clone(), config.clone()]);
    assert_eq!(&list[..2], &[0, 41]);
    assert_eq!(
        KeyConfig::parse_list(&list).unwrap(),
        [config.clone(), config]
    );
    // Malformed: trailing bytes, odd suite lengths, truncation; other KEMs are unsupported.
    let mut trailing = encoded.clone();
    trailing.push(0);
    assert_eq!(
        KeyConfig::parse(&trailing).unwrap_err(),
        OhttpError::Malformed
    );
    for len in 0..encoded.len() {
        assert!(KeyConfig::parse(&encoded[..len]).is_err(), "{len}");
    }
    let mut odd = encoded.clone();
    odd[36] = 3;
    assert_eq!(KeyConfig::parse(&odd).unwrap_err(), OhttpError::Malformed);
    let mut p256 = encoded;
    p256[2] = 0x10;
    assert_eq!(
        KeyConfig::parse(&p256).unwrap_err(),
        OhttpError::Unsupported
    );
}

/// Byte compatibility with the `ohttp` crate (martinthomson/ohttp), in the suite both speak
/// (AES-128-GCM): its client to our gateway, and our client to its gateway.
#[test]
fn interoperates_with_the_ohttp_crate() {
    ohttp::init();
    let ours = gateway(vec![AeadId::Aes128Gcm]);
    let client = ohttp::ClientRequest::from_encoded_config(&ours.config().encode()).unwrap();
    let (enc_request, their_response) = client.encapsulate(REQUEST).unwrap();
    let (request, server) = opened(&ours, &enc_request).unwrap();
    assert_eq!(request.as_slice(), REQUEST);
    let enc_response = server.encapsulate(RESPONSE).unwrap();
    assert_eq!(their_response.decapsulate(&enc_response).unwrap(), RESPONSE);

    let their_config = ohttp::KeyConfig::new(
        3,
        ohttp::hpke::Kem::X25519Sha256,
        vec![ohttp::SymmetricSuite::new(
            ohttp::hpke::Kdf::HkdfSha256,
            ohttp::hpke::Aead::Aes128Gcm,
        )],
    )
    .unwrap();
    let config = KeyConfig::parse(&their_config.encode().unwrap()).unwrap();
    let theirs = ohttp::Server::new(their_config).unwrap();
    let (enc_request, client) = encapsulate_request(&config, AeadId::Aes128Gcm, REQUEST).unwrap();
    let (request, server) = theirs.decapsulate(&enc_request).unwrap();
    assert_eq!(request, REQUEST);
    let enc_response = server.encapsulate(RESPONSE).unwrap();
    assert_eq!(
        client.decapsulate(&enc_response).unwrap().as_slice(),
        RESPONSE
    );
}
