//! HPKE's KEM, DHKEM(X25519, HKDF-SHA256), with its X25519 computed by aws-lc-rs.
//!
//! The `hpke` crate computes X25519 with x25519-dalek's portable field arithmetic: an
//! encapsulation (a fresh key pair and one Diffie-Hellman) takes about 141 µs here and a
//! decapsulation about 99 µs, while aws-lc-rs — the provider of the rest of this crate, of
//! rustls and of [`crate::hpke_aead`] — makes a key pair in 9 µs and agrees in 28 µs
//! (`cargo bench -p cloak-crypto --bench ohttp`, small requests). Every encrypted request pays
//! one encapsulation on the client and one decapsulation in the enclave, in series, so this is
//! about 0.17 ms of each request's latency.
//!
//! Only the group operation is aws-lc-rs's. The KEM's key derivations (RFC 9180 §4.1
//! `ExtractAndExpand`, §7.1.3 `DeriveKeyPair`) are the `hpke` crate's own, called through its
//! `hpke::kdf::Kdf` trait with this KEM's suite id; the wire format (32-byte keys, `enc` = the
//! ephemeral public key) is the same, so either side may use either implementation. Tests pin
//! the CFRG's RFC 9180 vectors for this suite and run it against the crate's own KEM both ways.
//! (The crate does not build without a KEM of its own, so x25519-dalek stays linked; nothing
//! but those tests calls it.)
//!
//! Only the base mode is offered: Cloak never authenticates the sender with a KEM key, and a
//! sender key passed in is refused rather than ignored.

use aws_lc_rs::agreement::{self, UnparsedPublicKey, X25519 as AWS_LC_X25519};
use hpke::hybrid_array::typenum::U32;
use hpke::kdf::{HkdfSha256, Kdf as _};
use hpke::kem::SharedSecret;
use hpke::rand_core::CryptoRng;
use hpke::{Deserializable, HpkeError, Serializable};
use std::sync::Arc;
use subtle::{Choice, ConstantTimeEq};
use zeroize::Zeroizing;

/// Length of a private key, a public key and an encapsulated key.
const KEY_LEN: usize = 32;
/// RFC 9180's KEM id of DHKEM(X25519, HKDF-SHA256).
const KEM_ID: u16 = 0x0020;
/// The KEM's suite id: `"KEM" ‖ I2OSP(kem_id, 2)` (RFC 9180 §4.1).
const SUITE_ID: [u8; 5] = {
    let [high, low] = KEM_ID.to_be_bytes();
    [b'K', b'E', b'M', high, low]
};

/// DHKEM(X25519, HKDF-SHA256) with aws-lc-rs's X25519.
#[derive(Debug)]
pub(crate) struct X25519;

/// An X25519 public key (also the encapsulated key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PublicKey([u8; KEY_LEN]);

/// An X25519 private key: its bytes (wiped on drop), its public key, and the parsed aws-lc-rs
/// key a decapsulation agrees with (parsing it again would cost a third of the agreement).
#[derive(Clone)]
pub(crate) struct PrivateKey {
    secret: Zeroizing<[u8; KEY_LEN]>,
    public: PublicKey,
    key: Arc<agreement::PrivateKey>,
}

impl PrivateKey {
    /// Parses `secret` and computes its public key. aws-lc-rs takes any 32 bytes as an X25519
    /// private key and clamps them in the scalar multiplication, so a clamped and an unclamped
    /// encoding of a key agree alike. RFC 9180 §7.1.2 has serialization clamp; the `hpke`
    /// crate's keys are kept as given too, and the CFRG's vectors' keys are unclamped, so the
    /// bytes are kept as given here as well (and serialize back as they came).
    fn new(secret: &[u8; KEY_LEN]) -> Result<Self, HpkeError> {
        let secret = Zeroizing::new(*secret);
        let key = agreement::PrivateKey::from_private_key(&AWS_LC_X25519, secret.as_slice())
            .map_err(|_| HpkeError::ValidationError)?;
        let computed = key
            .compute_public_key()
            .map_err(|_| HpkeError::ValidationError)?;
        let public =
            <[u8; KEY_LEN]>::try_from(computed.as_ref()).map_err(|_| HpkeError::ValidationError)?;
        Ok(Self {
            secret,
            public: PublicKey(public),
            key: Arc::new(key),
        })
    }

    /// `DH(sk, pk)`: the X25519 shared secret, refused when it is all zeros (a small-order
    /// `pk`, RFC 9180 §7.1.4), which aws-lc-rs checks.
    fn agree(&self, peer: &PublicKey) -> Result<Zeroizing<[u8; KEY_LEN]>, ()> {
        agreement::agree(
            &self.key,
            UnparsedPublicKey::new(&AWS_LC_X25519, &peer.0),
            (),
            |shared| {
                <[u8; KEY_LEN]>::try_from(shared)
                    .map(Zeroizing::new)
                    .map_err(drop)
            },
        )
    }
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl ConstantTimeEq for PrivateKey {
    fn ct_eq(&self, other: &Self) -> Choice {
        self.secret.ct_eq(&*other.secret)
    }
}

impl Serializable for PublicKey {
    type OutputSize = U32;

    fn write_exact(&self, buf: &mut [u8]) {
        // `to_bytes` passes a buffer of `OutputSize`; a caller of `write_exact` passing another
        // is a bug in the caller, which the `hpke` crate's own keys answer with a panic too.
        buf.copy_from_slice(&self.0);
    }
}

impl Deserializable for PublicKey {
    fn from_bytes(encoded: &[u8]) -> Result<Self, HpkeError> {
        <[u8; KEY_LEN]>::try_from(encoded)
            .map(Self)
            .map_err(|_| HpkeError::IncorrectInputLength(KEY_LEN, encoded.len()))
    }
}

impl Serializable for PrivateKey {
    type OutputSize = U32;

    fn write_exact(&self, buf: &mut [u8]) {
        buf.copy_from_slice(self.secret.as_slice());
    }
}

impl Deserializable for PrivateKey {
    fn from_bytes(encoded: &[u8]) -> Result<Self, HpkeError> {
        if encoded.len() != KEY_LEN {
            return Err(HpkeError::IncorrectInputLength(KEY_LEN, encoded.len()));
        }
        let mut secret = Zeroizing::new([0u8; KEY_LEN]);
        secret.copy_from_slice(encoded);
        Self::new(&secret)
    }
}

/// RFC 9180 §7.1.3 for X25519: `sk = LabeledExpand(LabeledExtract("", "dkp_prk", ikm), "sk",
/// "", 32)`, then its public key.
fn derive(ikm: &[u8]) -> Result<PrivateKey, HpkeError> {
    let secret = Zeroizing::new(HkdfSha256::derive_x25519_sk_eph_bytes(&SUITE_ID, ikm));
    PrivateKey::new(&secret)
}

/// `ExtractAndExpand(dh, enc ‖ pkRm)` (RFC 9180 §4.1), by the `hpke` crate's HKDF-SHA256.
fn shared_secret(
    dh: &[u8; KEY_LEN],
    enc: &PublicKey,
    recipient: &PublicKey,
) -> Result<SharedSecret<X25519>, HpkeError> {
    let mut kem_context = [0u8; 2 * KEY_LEN];
    kem_context[..KEY_LEN].copy_from_slice(&enc.0);
    kem_context[KEY_LEN..].copy_from_slice(&recipient.0);
    let mut secret = SharedSecret::<X25519>::default();
    HkdfSha256::extract_and_expand(dh, &SUITE_ID, &kem_context, &mut secret.0)?;
    Ok(secret)
}

impl hpke::Kem for X25519 {
    type PublicKey = PublicKey;
    type PrivateKey = PrivateKey;
    type EncappedKey = PublicKey;
    type NSecret = U32;
    const KEM_ID: u16 = KEM_ID;

    fn sk_to_pk(sk: &PrivateKey) -> PublicKey {
        sk.public.clone()
    }

    /// See [`derive`].
    fn derive_keypair(ikm: &[u8]) -> (PrivateKey, PublicKey) {
        match derive(ikm) {
            Ok(key) => {
                let public = key.public.clone();
                (key, public)
            }
            // aws-lc-rs refuses an X25519 private key for a wrong length, which this one cannot
            // have, or when it cannot allocate. The trait leaves no error to return, and a key
            // pair made up instead would be worse than stopping, as Rust stops when out of
            // memory.
            Err(_) => std::process::abort(),
        }
    }

    fn decap(
        sk_recip: &PrivateKey,
        pk_sender_id: Option<&PublicKey>,
        encapped_key: &PublicKey,
    ) -> Result<SharedSecret<Self>, HpkeError> {
        if pk_sender_id.is_some() {
            return Err(HpkeError::DecapError);
        }
        let dh = sk_recip
            .agree(encapped_key)
            .map_err(|()| HpkeError::DecapError)?;
        shared_secret(&dh, encapped_key, &sk_recip.public).map_err(|_| HpkeError::DecapError)
    }

    /// `GenerateKeyPair()` as the `hpke` crate defines it, `DeriveKeyPair(random(32))`, so a
    /// sender given the RFC's `ikmE` makes the RFC's `enc`.
    fn encap_with_rng(
        pk_recip: &PublicKey,
        sender_id_keypair: Option<(&PrivateKey, &PublicKey)>,
        csprng: &mut impl CryptoRng,
    ) -> Result<(SharedSecret<Self>, PublicKey), HpkeError> {
        if sender_id_keypair.is_some() {
            return Err(HpkeError::EncapError);
        }
        let mut ikm = Zeroizing::new([0u8; KEY_LEN]);
        csprng.fill_bytes(ikm.as_mut_slice());
        let ephemeral = derive(ikm.as_slice()).map_err(|_| HpkeError::EncapError)?;
        let enc = ephemeral.public.clone();
        let dh = ephemeral
            .agree(pk_recip)
            .map_err(|()| HpkeError::EncapError)?;
        let secret = shared_secret(&dh, &enc, pk_recip).map_err(|_| HpkeError::EncapError)?;
        Ok((secret, enc))
    }
}

#[cfg(test)]
mod tests;
