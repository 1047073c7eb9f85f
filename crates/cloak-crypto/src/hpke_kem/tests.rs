use hpke::kem::X25519HkdfSha256 as CrateKem;
use hpke::rand_core::{TryCryptoRng, TryRng};
use hpke::{Deserializable, HpkeError, Kem as _, OpModeR, OpModeS, Serializable};

use super::{PrivateKey, PublicKey, X25519};
use crate::hpke_aead::Aes256;

type Kdf = hpke::kdf::HkdfSha256;

/// Hands out fixed bytes: the RFC's `ikmE` as the sender's randomness.
struct Fixed<'a>(&'a [u8]);

impl TryRng for Fixed<'_> {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        hpke::rand_core::utils::next_word_via_fill(self)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        hpke::rand_core::utils::next_word_via_fill(self)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
        let (taken, rest) = self.0.split_at(dest.len());
        dest.copy_from_slice(taken);
        self.0 = rest;
        Ok(())
    }
}

impl TryCryptoRng for Fixed<'_> {}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The CFRG's RFC 9180 test vector for DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM in
/// base mode (Cloak's suite), first encryption.
mod vector {
    pub(super) const INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
    pub(super) const IKM_E: &str =
        "2cd7c601cefb3d42a62b04b7a9041494c06c7843818e0ce28a8f704ae7ab20f9";
    pub(super) const PK_EM: &str =
        "6c93e09869df3402d7bf231bf540fadd35cd56be14f97178f0954db94b7fc256";
    pub(super) const SK_EM: &str =
        "179d4b53b6365c45b600c4163b61d95cbc2f4d9e36f1695558dce265ab8bab11";
    pub(super) const IKM_R: &str =
        "dac33b0e9db1b59dbbea58d59a14e7b5896e9bdf98fad6891e99d1686492b9ee";
    pub(super) const PK_RM: &str =
        "430f4b9859665145a6b1ba274024487bd66f03a2dd577d7753c68d7d7d00c00c";
    pub(super) const SK_RM: &str =
        "497b4502664cfea5d5af0b39934dac72242a74f8480451e1aee7d6a53320333d";
    pub(super) const SHARED_SECRET: &str =
        "3101c54c3a4f87439eaac080699ed9bbcc726ffe44e860c0424ccb7e3e2ead7b";
    pub(super) const AAD: &str = "436f756e742d30";
    pub(super) const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
    pub(super) const CT: &str = "e5d84cd531cfb583096e7cfa9641bd3079cf3a91cda813c52deb5f512be9931980a41de125a925cdad859d5b7a";
    pub(super) const EXPORTER_SECRET_CONTEXT_EMPTY_32: &str =
        "ded6cffafaea6b812cbf3e241e88332adbc077aca81512914213810ee291770a";
}

#[test]
fn derives_the_rfc_key_pairs() {
    for (ikm, sk, pk) in [
        (vector::IKM_R, vector::SK_RM, vector::PK_RM),
        (vector::IKM_E, vector::SK_EM, vector::PK_EM),
    ] {
        let (private, public) = X25519::derive_keypair(&unhex(ikm));
        assert_eq!(private.to_bytes().to_vec(), unhex(sk));
        assert_eq!(public.to_bytes().to_vec(), unhex(pk));
        assert_eq!(X25519::sk_to_pk(&private), public);
        // A key parsed from its bytes has the same public key.
        let parsed = PrivateKey::from_bytes(&unhex(sk)).unwrap();
        assert_eq!(X25519::sk_to_pk(&parsed).to_bytes().to_vec(), unhex(pk));
    }
}

#[test]
fn the_rfc_vector_seals_and_opens() {
    let recipient = PublicKey::from_bytes(&unhex(vector::PK_RM)).unwrap();
    let ikm_e = unhex(vector::IKM_E);
    let (enc, mut sender) = hpke::setup_sender_with_rng::<Aes256, Kdf, X25519>(
        &OpModeS::Base,
        &recipient,
        &unhex(vector::INFO),
        &mut Fixed(&ikm_e),
    )
    .unwrap();
    assert_eq!(enc.to_bytes().to_vec(), unhex(vector::PK_EM));
    let ct = sender
        .seal(&unhex(vector::PT), &unhex(vector::AAD))
        .unwrap();
    assert_eq!(ct, unhex(vector::CT));

    let private = PrivateKey::from_bytes(&unhex(vector::SK_RM)).unwrap();
    let secret = X25519::decap(&private, None, &enc).unwrap();
    assert_eq!(secret.0.to_vec(), unhex(vector::SHARED_SECRET));
    let mut receiver = hpke::setup_receiver::<Aes256, Kdf, X25519>(
        &OpModeR::Base,
        &private,
        &enc,
        &unhex(vector::INFO),
    )
    .unwrap();
    assert_eq!(
        receiver.open(&ct, &unhex(vector::AAD)).unwrap(),
        unhex(vector::PT)
    );
    let mut exported = [0u8; 32];
    receiver.export(b"", &mut exported).unwrap();
    assert_eq!(
        exported.to_vec(),
        unhex(vector::EXPORTER_SECRET_CONTEXT_EMPTY_32)
    );
}

/// Either side may run either implementation: the same secret both ways.
#[test]
fn agrees_with_the_hpke_crates_own_kem_both_ways() {
    for _ in 0..8 {
        let (ours_sk, ours_pk) = X25519::gen_keypair();
        let (theirs_sk, theirs_pk) = CrateKem::gen_keypair();

        // Their encapsulation to our key, opened by us.
        let pk = <CrateKem as hpke::Kem>::PublicKey::from_bytes(&ours_pk.to_bytes()).unwrap();
        let (their_secret, enc) = CrateKem::encap(&pk, None).unwrap();
        let enc = PublicKey::from_bytes(&enc.to_bytes()).unwrap();
        let our_secret = X25519::decap(&ours_sk, None, &enc).unwrap();
        assert_eq!(our_secret.0.to_vec(), their_secret.0.to_vec());

        // Our encapsulation to their key, opened by them.
        let pk = PublicKey::from_bytes(&theirs_pk.to_bytes()).unwrap();
        let (our_secret, enc) = X25519::encap(&pk, None).unwrap();
        let enc = <CrateKem as hpke::Kem>::EncappedKey::from_bytes(&enc.to_bytes()).unwrap();
        let their_secret = CrateKem::decap(&theirs_sk, None, &enc).unwrap();
        assert_eq!(our_secret.0.to_vec(), their_secret.0.to_vec());

        // Their derivation of a key pair is ours.
        let ikm = ours_sk.to_bytes();
        let (their_derived, _) = CrateKem::derive_keypair(&ikm);
        let (our_derived, _) = X25519::derive_keypair(&ikm);
        assert_eq!(
            their_derived.to_bytes().to_vec(),
            our_derived.to_bytes().to_vec()
        );
    }
}

/// The u-coordinates whose X25519 product with any clamped scalar is zero: 0, 1, the two points
/// of order 8, p − 1, p and p + 1 (non-canonical encodings of the first ones), each also with
/// the top bit set, which X25519 ignores.
fn small_order_points() -> Vec<[u8; 32]> {
    let mut points = Vec::new();
    for hex in [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ] {
        let point: [u8; 32] = unhex(hex).try_into().unwrap();
        let mut high = point;
        high[31] |= 0x80;
        points.extend([point, high]);
    }
    points
}

/// A small-order point gives an all-zero shared secret: refused (RFC 9180 §7.1.4), on either
/// side, where accepting it would hand the peer a key it knows. The `hpke` crate's own KEM
/// refuses the same points.
#[test]
fn small_order_points_are_refused() {
    let (private, _) = X25519::gen_keypair();
    let (theirs, _) = CrateKem::gen_keypair();
    for point in small_order_points() {
        let ours = PublicKey::from_bytes(&point).unwrap();
        assert!(
            matches!(
                X25519::decap(&private, None, &ours),
                Err(HpkeError::DecapError)
            ),
            "{point:02x?}"
        );
        assert!(
            matches!(X25519::encap(&ours, None), Err(HpkeError::EncapError)),
            "{point:02x?}"
        );
        let enc = <CrateKem as hpke::Kem>::EncappedKey::from_bytes(&point).unwrap();
        assert!(
            CrateKem::decap(&theirs, None, &enc).is_err(),
            "{point:02x?}"
        );
    }
}

#[test]
fn private_keys_compare_in_constant_time_by_their_bytes() {
    use subtle::ConstantTimeEq;
    let a = PrivateKey::from_bytes(&unhex(vector::SK_RM)).unwrap();
    let b = PrivateKey::from_bytes(&unhex(vector::SK_RM)).unwrap();
    let c = PrivateKey::from_bytes(&unhex(vector::SK_EM)).unwrap();
    assert!(bool::from(a.ct_eq(&b)));
    assert!(!bool::from(a.ct_eq(&c)));
}

/// The other recipient's key gives another secret.
#[test]
fn another_private_key_gives_another_secret() {
    let (recipient, public) = X25519::gen_keypair();
    let (other, _) = X25519::gen_keypair();
    let (secret, enc) = X25519::encap(&public, None).unwrap();
    assert_eq!(
        X25519::decap(&recipient, None, &enc).unwrap().0.to_vec(),
        secret.0.to_vec()
    );
    assert_ne!(
        X25519::decap(&other, None, &enc).unwrap().0.to_vec(),
        secret.0.to_vec()
    );
}

/// Only the base mode: a sender key is refused, not ignored.
#[test]
fn sender_keys_are_refused() {
    let (private, public) = X25519::gen_keypair();
    assert!(matches!(
        X25519::encap(&public, Some((&private, &public))),
        Err(HpkeError::EncapError)
    ));
    let (_, enc) = X25519::encap(&public, None).unwrap();
    assert!(matches!(
        X25519::decap(&private, Some(&public), &enc),
        Err(HpkeError::DecapError)
    ));
}

#[test]
fn keys_of_another_length_are_refused_and_secrets_are_not_printed() {
    for len in [0, 31, 33] {
        assert_eq!(
            PublicKey::from_bytes(&vec![9; len]).unwrap_err(),
            HpkeError::IncorrectInputLength(32, len)
        );
        assert!(matches!(
            PrivateKey::from_bytes(&vec![9; len]),
            Err(HpkeError::IncorrectInputLength(32, l)) if l == len
        ));
    }
    let private = PrivateKey::from_bytes(&unhex(vector::SK_RM)).unwrap();
    let printed = format!("{private:?}");
    let secret = unhex(vector::SK_RM);
    assert!(
        !printed.contains(&format!("{:?}", &secret[..4])[1..]),
        "{printed}"
    );
    assert!(!printed.to_lowercase().contains("secret"), "{printed}");
}
