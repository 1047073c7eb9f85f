//! ECDSA P-256 with SHA-256 (ASN.1 DER signatures), for receipts: the server signs with a key
//! made in the enclave, anyone verifies with the SubjectPublicKeyInfo its attested claims name.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED, EcdsaKeyPair,
    KeyPair, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_2048_8192_SHA384, RSA_PKCS1_2048_8192_SHA512,
    UnparsedPublicKey,
};
use zeroize::Zeroizing;

/// A P-256 signing key.
pub struct SigningKey {
    key: EcdsaKeyPair,
    spki: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<Self, SignatureError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .map_err(|_| SignatureError::Key)?;
        Self::from_pkcs8(&Zeroizing::new(pkcs8.as_ref().to_vec()))
    }

    /// A fresh key and its PKCS#8 document (to keep in a file only its owner can read).
    pub fn generate_pkcs8() -> Result<(Self, Zeroizing<Vec<u8>>), SignatureError> {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .map_err(|_| SignatureError::Key)?;
        let document = Zeroizing::new(pkcs8.as_ref().to_vec());
        Ok((Self::from_pkcs8(&document)?, document))
    }

    /// The key in a PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, SignatureError> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8)
            .map_err(|_| SignatureError::Key)?;
        let spki = key
            .public_key()
            .as_der()
            .map_err(|_| SignatureError::Key)?
            .as_ref()
            .to_vec();
        Ok(Self { key, spki })
    }

    /// The public key as SubjectPublicKeyInfo DER.
    pub fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }

    /// Signs `message` (ASN.1 DER `ECDSA-Sig-Value`).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
        self.key
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| SignatureError::Sign)
    }
}

/// Verifies `signature` over `message` under the P-256 key `public_key` (SubjectPublicKeyInfo
/// DER or an uncompressed point).
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(message, signature)
        .map_err(|_| SignatureError::Invalid)
}

/// Verifies a fixed-width signature (`r‖s`, 32 bytes each, as Intel's quotes and collateral
/// carry them) over `message` under the P-256 key `public_key` (SubjectPublicKeyInfo DER or an
/// uncompressed point).
pub fn verify_fixed(
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_key)
        .verify(message, signature)
        .map_err(|_| SignatureError::Invalid)
}

/// The hash of an RSASSA-PKCS1-v1_5 signature.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaHash {
    /// SHA-256 (X.509 sha256WithRSAEncryption, JWS `RS256`).
    Sha256,
    /// SHA-384 (JWS `RS384`).
    Sha384,
    /// SHA-512 (JWS `RS512`).
    Sha512,
}

/// Verifies an RSASSA-PKCS1-v1_5 signature over `message` under `public_key`, a PKCS#1
/// `RSAPublicKey` (DER) of 2048 to 8192 bits: smaller keys are refused, as
/// [`SignatureError::Invalid`].
pub fn verify_rsa_pkcs1(
    hash: RsaHash,
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let algorithm = match hash {
        RsaHash::Sha256 => &RSA_PKCS1_2048_8192_SHA256,
        RsaHash::Sha384 => &RSA_PKCS1_2048_8192_SHA384,
        RsaHash::Sha512 => &RSA_PKCS1_2048_8192_SHA512,
    };
    UnparsedPublicKey::new(algorithm, public_key)
        .verify(message, signature)
        .map_err(|_| SignatureError::Invalid)
}

/// Why signing or verifying failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The key is not a P-256 key.
    #[error("not a usable P-256 key")]
    Key,
    /// Signing failed.
    #[error("signing failed")]
    Sign,
    /// The signature does not verify under the key.
    #[error("the signature does not verify")]
    Invalid,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_with_the_spki() {
        let key = SigningKey::generate().unwrap();
        let signature = key.sign(b"receipt").unwrap();
        verify(key.public_key_spki(), b"receipt", &signature).unwrap();
        assert_eq!(
            verify(key.public_key_spki(), b"receipT", &signature),
            Err(SignatureError::Invalid)
        );
        let mut bad = signature.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            verify(key.public_key_spki(), b"receipt", &bad),
            Err(SignatureError::Invalid)
        );
        let other = SigningKey::generate().unwrap();
        assert_eq!(
            verify(other.public_key_spki(), b"receipt", &signature),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn fixed_width_signatures_verify_under_the_point_or_the_spki() {
        use aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let signature = key.sign(&SystemRandom::new(), b"tcb info").unwrap();
        let signature = signature.as_ref();
        assert_eq!(signature.len(), 64);
        let point = key.public_key().as_ref();
        let spki = key.public_key().as_der().unwrap();
        for public_key in [point, spki.as_ref()] {
            verify_fixed(public_key, b"tcb info", signature).unwrap();
            assert_eq!(
                verify_fixed(public_key, b"tcb infO", signature),
                Err(SignatureError::Invalid)
            );
        }
        // The two encodings are not interchangeable.
        assert!(verify(point, b"tcb info", signature).is_err());
    }

    #[test]
    fn a_pkcs8_key_round_trips() {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        let a = SigningKey::from_pkcs8(pkcs8.as_ref()).unwrap();
        let b = SigningKey::from_pkcs8(pkcs8.as_ref()).unwrap();
        assert_eq!(a.public_key_spki(), b.public_key_spki());
        assert_eq!(
            SigningKey::from_pkcs8(b"nope").unwrap_err(),
            SignatureError::Key
        );
    }
}
