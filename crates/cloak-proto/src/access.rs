//! Access tokens: a model owner's signed permission to query one model, checked inside the
//! enclave, so that a host that can reach the server cannot run the model without one.
//!
//! The owner keeps a P-256 signing key; its public key (SubjectPublicKeyInfo DER) goes into the
//! model's release policy at the broker (`token_key`), which releases it to the enclave sealed
//! together with the model key — the host relays it but cannot change it. A token is
//! `base64url-nopad(CBOR [payload: bstr, signature: bstr])`, `payload` a deterministic CBOR map:
//!
//! | key | CBOR value | meaning |
//! |---|---|---|
//! | `v` | uint `1` | the layout version |
//! | `model` | tstr | the one model it opens |
//! | `id` | tstr | the token's id (random, 128 bits, hex): rate and quota are counted per id |
//! | `expires` | uint | Unix seconds after which it is refused |
//! | `rate` | uint | inferences per second it may make (0: no limit) |
//! | `quota` | uint | inferences it may make in all, per server process (0: no limit) |
//!
//! `signature` is ECDSA P-256 / SHA-256 (ASN.1 DER) over `"cloak-access-token/v1" ‖ 0x00 ‖
//! payload`. A client sends it as `Authorization: Bearer TOKEN` — inside attested TLS or inside
//! an encapsulated request, so the host never sees it.

use ciborium::Value;
use cloak_crypto::sig::SigningKey;

/// What the signature covers before the payload.
const CONTEXT: &[u8] = b"cloak-access-token/v1\0";
/// The most token text a reader accepts.
pub const MAX_TOKEN_LEN: usize = 4096;

/// What a token allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    /// The model it opens.
    pub model: String,
    /// Its id (hex).
    pub id: String,
    /// Unix seconds after which it is refused.
    pub expires: u64,
    /// Inferences per second (0: no limit).
    pub rate: u32,
    /// Inferences in all, per server process (0: no limit).
    pub quota: u64,
}

impl AccessToken {
    /// The deterministic CBOR payload.
    pub fn payload(&self) -> Vec<u8> {
        crate::identity::encode_canonical(vec![
            ("v", Value::Integer(1.into())),
            ("model", Value::Text(self.model.clone())),
            ("id", Value::Text(self.id.clone())),
            ("expires", Value::Integer(self.expires.into())),
            ("rate", Value::Integer(self.rate.into())),
            ("quota", Value::Integer(self.quota.into())),
        ])
    }

    /// Signs the token with the owner's key: the text a client sends.
    pub fn sign(&self, key: &SigningKey) -> Result<String, TokenError> {
        crate::signed::seal(CONTEXT, self.payload(), key).map_err(TokenError::from)
    }

    /// Reads `text`, checks its signature under `public_key` (SubjectPublicKeyInfo DER), that
    /// it opens `model`, and that it has not expired at `now`.
    pub fn verify(
        text: &str,
        public_key: &[u8],
        model: &str,
        now: u64,
    ) -> Result<Self, TokenError> {
        let payload = crate::signed::open(text, MAX_TOKEN_LEN, CONTEXT, public_key)?;
        let payload = &payload;
        let token = Self::from_payload(payload)?;
        if token.payload() != *payload {
            return Err(TokenError::Malformed("not deterministic CBOR".into()));
        }
        if token.model != model {
            return Err(TokenError::WrongModel);
        }
        if now > token.expires {
            return Err(TokenError::Expired);
        }
        Ok(token)
    }

    fn from_payload(payload: &[u8]) -> Result<Self, TokenError> {
        let mut fields = crate::signed::fields(payload).map_err(TokenError::Malformed)?;
        let mut take = |key: &str| {
            fields
                .remove(key)
                .ok_or_else(|| TokenError::Malformed(format!("no {key}")))
        };
        if take("v")? != Value::Integer(1.into()) {
            return Err(TokenError::Malformed("not version 1".into()));
        }
        let text = |value: Value, key: &str| match value {
            Value::Text(t) => Ok(t),
            _ => Err(TokenError::Malformed(format!("{key} is not text"))),
        };
        let uint = |value: Value, key: &str| match value {
            Value::Integer(i) => {
                u64::try_from(i).map_err(|_| TokenError::Malformed(format!("{key} is not a u64")))
            }
            _ => Err(TokenError::Malformed(format!("{key} is not an integer"))),
        };
        let token = Self {
            model: text(take("model")?, "model")?,
            id: text(take("id")?, "id")?,
            expires: uint(take("expires")?, "expires")?,
            rate: u32::try_from(uint(take("rate")?, "rate")?)
                .map_err(|_| TokenError::Malformed("rate is too large".into()))?,
            quota: uint(take("quota")?, "quota")?,
        };
        if let Some(key) = fields.keys().next() {
            return Err(TokenError::Malformed(format!("unknown key {key}")));
        }
        Ok(token)
    }
}

/// Why a token was not accepted.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token in this layout.
    #[error("not an access token: {0}")]
    Malformed(String),
    /// The signature does not verify under the model owner's key.
    #[error("the token is not signed by the model owner's key")]
    Signature,
    /// The token is for another model.
    #[error("the token is for another model")]
    WrongModel,
    /// The token has expired.
    #[error("the token has expired")]
    Expired,
}

impl TokenError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "token-malformed",
            Self::Signature => "token-signature",
            Self::WrongModel => "token-wrong-model",
            Self::Expired => "token-expired",
        }
    }
}

impl From<crate::signed::EnvelopeError> for TokenError {
    fn from(e: crate::signed::EnvelopeError) -> Self {
        match e {
            crate::signed::EnvelopeError::Malformed(what) => Self::Malformed(what),
            crate::signed::EnvelopeError::Signature => Self::Signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn token() -> AccessToken {
        AccessToken {
            model: "mlp".to_owned(),
            id: "00112233445566778899aabbccddeeff".to_owned(),
            expires: 2_000_000_000,
            rate: 5,
            quota: 100,
        }
    }

    #[test]
    fn a_token_opens_its_model_under_its_owners_key_until_it_expires() {
        let owner = SigningKey::generate().unwrap();
        let text = token().sign(&owner).unwrap();
        let spki = owner.public_key_spki();
        assert_eq!(
            AccessToken::verify(&text, spki, "mlp", 1_900_000_000).unwrap(),
            token()
        );
        let code = |r: Result<AccessToken, TokenError>| r.unwrap_err().code();
        assert_eq!(
            code(AccessToken::verify(&text, spki, "other", 1_900_000_000)),
            "token-wrong-model"
        );
        assert_eq!(
            code(AccessToken::verify(&text, spki, "mlp", 2_000_000_001)),
            "token-expired"
        );
        // Minted with another key (a host's own): refused.
        let host = SigningKey::generate().unwrap();
        let forged = token().sign(&host).unwrap();
        assert_eq!(
            code(AccessToken::verify(&forged, spki, "mlp", 1_900_000_000)),
            "token-signature"
        );
        assert_eq!(
            code(AccessToken::verify("not a token", spki, "mlp", 0)),
            "token-malformed"
        );
    }

    #[test]
    fn every_changed_byte_is_refused() {
        let owner = SigningKey::generate().unwrap();
        let raw = URL_SAFE_NO_PAD
            .decode(token().sign(&owner).unwrap())
            .unwrap();
        for i in 0..raw.len() {
            let mut changed = raw.clone();
            changed[i] ^= 0x01;
            let changed = URL_SAFE_NO_PAD.encode(&changed);
            assert!(
                AccessToken::verify(&changed, owner.public_key_spki(), "mlp", 0).is_err(),
                "byte {i} accepted"
            );
        }
    }
}
