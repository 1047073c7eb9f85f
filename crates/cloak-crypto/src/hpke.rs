//! Single-shot HPKE (RFC 9180, base mode) in Cloak's one suite: DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, AES-256-GCM — the suite of the server's RFC 9458 key configuration and of the
//! key broker's key release.
//!
//! A recipient makes an [`HpkeKeyPair`] and publishes its 32-byte public key; a sender calls
//! [`seal`] with that public key, an `info` string naming the purpose and an `aad`; only the
//! holder of the private key can [`HpkeKeyPair::open`] the result, with the same `info` and
//! `aad`.

use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use zeroize::Zeroizing;

type Kem = crate::hpke_kem::X25519;
type Kdf = hpke::kdf::HkdfSha256;
type Aead = crate::hpke_aead::Aes256;

/// Length of a public key and of an encapsulated key (X25519).
pub const PUBLIC_KEY_LEN: usize = 32;

/// An X25519 HPKE key pair; the private half is zeroized on drop and never printed.
pub struct HpkeKeyPair {
    private: <Kem as hpke::Kem>::PrivateKey,
    public: [u8; PUBLIC_KEY_LEN],
}

impl HpkeKeyPair {
    /// A fresh key pair from the operating system's random number generator.
    pub fn generate() -> Self {
        let (private, public) = Kem::gen_keypair();
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes.copy_from_slice(&public.to_bytes());
        Self {
            private,
            public: bytes,
        }
    }

    pub(crate) fn private_key(&self) -> &<Kem as hpke::Kem>::PrivateKey {
        &self.private
    }

    /// Wraps an existing private key (for test vectors and keys restored from sealed state).
    pub fn from_private_bytes(private: &[u8]) -> Result<Self, HpkeError> {
        let private = <Kem as hpke::Kem>::PrivateKey::from_bytes(private)
            .map_err(|_| HpkeError::Malformed)?;
        let public = <Kem as hpke::Kem>::sk_to_pk(&private);
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes.copy_from_slice(&public.to_bytes());
        Ok(Self {
            private,
            public: bytes,
        })
    }

    /// The public key, as published.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// Opens what [`seal`] produced for this key with the same `info` and `aad`.
    pub fn open(
        &self,
        sealed: &HpkeSealed,
        info: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HpkeError> {
        let encapped = <Kem as hpke::Kem>::EncappedKey::from_bytes(&sealed.enc)
            .map_err(|_| HpkeError::Malformed)?;
        hpke::single_shot_open::<Aead, Kdf, Kem>(
            &OpModeR::Base,
            &self.private,
            &encapped,
            info,
            &sealed.ciphertext,
            aad,
        )
        .map(Zeroizing::new)
        .map_err(|_| HpkeError::Open)
    }
}

impl std::fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HpkeKeyPair")
            .field("public", &hex::encode(self.public))
            .finish_non_exhaustive()
    }
}

/// An HPKE encapsulated key and the ciphertext sealed under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HpkeSealed {
    /// The encapsulated key (the sender's ephemeral X25519 public key).
    pub enc: [u8; PUBLIC_KEY_LEN],
    /// The AES-256-GCM ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// Seals `plaintext` to `recipient` (a 32-byte X25519 public key).
pub fn seal(
    recipient: &[u8],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<HpkeSealed, HpkeError> {
    let public =
        <Kem as hpke::Kem>::PublicKey::from_bytes(recipient).map_err(|_| HpkeError::Malformed)?;
    let (encapped, ciphertext) =
        hpke::single_shot_seal::<Aead, Kdf, Kem>(&OpModeS::Base, &public, info, plaintext, aad)
            .map_err(|_| HpkeError::Seal)?;
    let mut enc = [0u8; PUBLIC_KEY_LEN];
    let bytes = encapped.to_bytes();
    if bytes.len() != PUBLIC_KEY_LEN {
        return Err(HpkeError::Seal);
    }
    enc.copy_from_slice(&bytes);
    Ok(HpkeSealed { enc, ciphertext })
}

/// Why HPKE failed. The messages say nothing about keys or plaintext.
#[non_exhaustive]
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HpkeError {
    /// A public or encapsulated key is not a valid X25519 key.
    #[error("not a valid X25519 public key")]
    Malformed,
    /// Encapsulation or encryption failed.
    #[error("HPKE sealing failed")]
    Seal,
    /// Decapsulation or authentication failed: another key, another `info` or `aad`, or a
    /// changed byte.
    #[error("HPKE ciphertext does not open with this key")]
    Open,
}

impl HpkeError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "hpke-malformed-key",
            Self::Seal => "hpke-seal-failed",
            Self::Open => "hpke-open-failed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_opens_only_with_the_same_key_info_and_aad() {
        let recipient = HpkeKeyPair::generate();
        let sealed = seal(recipient.public_key(), b"info", b"aad", b"secret").unwrap();
        assert_eq!(
            recipient.open(&sealed, b"info", b"aad").unwrap().as_slice(),
            b"secret"
        );
        assert_eq!(
            recipient.open(&sealed, b"other", b"aad").unwrap_err(),
            HpkeError::Open
        );
        assert_eq!(
            recipient.open(&sealed, b"info", b"other").unwrap_err(),
            HpkeError::Open
        );
        let other = HpkeKeyPair::generate();
        assert_eq!(
            other.open(&sealed, b"info", b"aad").unwrap_err(),
            HpkeError::Open
        );
        for i in 0..sealed.ciphertext.len() {
            let mut tampered = sealed.clone();
            tampered.ciphertext[i] ^= 1;
            assert_eq!(
                recipient.open(&tampered, b"info", b"aad").unwrap_err(),
                HpkeError::Open
            );
        }
        let mut tampered = sealed;
        tampered.enc[0] ^= 1;
        assert!(recipient.open(&tampered, b"info", b"aad").is_err());
    }

    #[test]
    fn malformed_recipient_is_refused() {
        assert_eq!(
            seal(&[1, 2, 3], b"i", b"a", b"p").unwrap_err(),
            HpkeError::Malformed
        );
    }
}
