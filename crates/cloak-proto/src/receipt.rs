//! Inference receipts: the enclave's signed statement of which model answered which request with
//! which response.
//!
//! Every successful inference response carries one in the `Cloak-Receipt` header (inside the
//! encapsulated response, for encrypted requests). Its text is
//! `base64url-nopad(CBOR [payload: bstr, signature: bstr])`, where `payload` is a deterministic
//! CBOR map:
//!
//! | key | CBOR value | meaning |
//! |---|---|---|
//! | `v` | uint `3` (salted BLAKE3 digests), `2` (salted SHA-256 digests) or `1` (plain SHA-256 digests, from servers before salting) | the layout version, which says how the body digests are made ([`BodyDigest`]) |
//! | `model` | tstr | the model that ran |
//! | `time` | uint | when the response was made, Unix milliseconds |
//! | `input` | bstr(32) | the digest of the salt and the request body exactly as the server received it (JSON header and binary tensors): `SHA-256(salt ‖ body)` in version 2, `BLAKE3(salt ‖ body)` (256-bit output, plain hashing mode) in version 3; in version 1, `SHA-256(body)` |
//! | `output` | bstr(32) | the same over the response body exactly as sent |
//! | `evidence` | bstr(32) | SHA-256 of the server's identity claims (without a nonce) the request was accepted under — those of its connection's certificate, or those the encrypted request's client appraised ([`EVIDENCE_HEADER`]) — if the server still stands by them, else those in force when it answered: [`IdentityClaims::evidence_digest`] |
//! | `request-id` | tstr | the server's id for this request (random, 128 bits, hex) |
//! | `model-sha256` | bstr(32) | SHA-256 of the model's plaintext, as the claims state it |
//!
//! A server makes version 2 receipts unless the request asks for BLAKE3 ([`DIGEST_HEADER`]):
//! BLAKE3 hashes about 2.5 times as fast as SHA-256 with the SHA extensions on one core
//! (0.15 ms against 0.38 ms for 600 KB here), and both sides hash each body, so large requests
//! answer sooner; SHA-256 stays the default for verifiers that must use FIPS-approved
//! algorithms.
//!
//! The salt is 16 random bytes known to the two parties and not in the receipt: the client
//! sends it with the request ([`SALT_HEADER`], inside attested TLS or the encapsulation) and
//! the server echoes it in the response (choosing one when the client sent none). Whoever
//! holds a receipt without the salt cannot test guesses of the bodies against it; checking a
//! receipt against bodies takes the salt too.
//!
//! `signature` is ECDSA P-256 / SHA-256 (ASN.1 DER) over `"cloak-receipt/v1" ‖ 0x00 ‖ payload`
//! by the receipt key whose SubjectPublicKeyInfo the attested claims carry (`receipt-key`). A
//! verifier that trusts a quote over those claims therefore knows that the enclave produced that
//! output from that input with that model.

use ciborium::Value;
use cloak_crypto::sig::SigningKey;

use crate::identity::IdentityClaims;

/// The response header that carries a receipt.
pub const HEADER: &str = "cloak-receipt";
/// The response header that carries the server's request id.
pub const REQUEST_ID_HEADER: &str = "cloak-request-id";
/// The request header (inside an encapsulated request) naming the evidence digest of the
/// claims the client appraised, as 64 hex digits: the receipt names that evidence when the
/// server attested it, so that claims changing mid-request (a model becoming ready) do not
/// make a correct answer fail verification.
pub const EVIDENCE_HEADER: &str = "cloak-evidence";
/// The request header (inside an encapsulated request) listing, comma-separated, the evidence
/// digests (64 hex digits each, at most [`MAX_KNOWN_EVIDENCE`]) of the other fleet replicas
/// whose attestations the client has appraised already: a replica not among them, and not the
/// one in [`EVIDENCE_HEADER`], sends its attestation with its answer ([`ATTESTATION_HEADER`]).
pub const KNOWN_EVIDENCE_HEADER: &str = "cloak-known-evidence";
/// The most digests [`KNOWN_EVIDENCE_HEADER`] lists.
pub const MAX_KNOWN_EVIDENCE: usize = 32;
/// The response header (inside an encapsulated response) carrying the answering server's
/// attestation document (JSON, no nonce) when the client may not hold it: with it the client
/// appraises the replica that signed the receipt. [`EVIDENCE_HEADER`] in a response names the
/// evidence the receipt names.
pub const ATTESTATION_HEADER: &str = "cloak-attestation";
/// The request and response header carrying the receipt's salt: 16 bytes as 32 lowercase hex
/// digits.
pub const SALT_HEADER: &str = "cloak-receipt-salt";
/// The salt's length in bytes.
pub const SALT_LEN: usize = 16;
/// The request header (inside attested TLS or the encapsulation) naming, comma-separated in the
/// client's order of preference, the body digests it would have the receipt use: `blake3`
/// (version 3) or `sha256` (version 2). The server uses the first it knows, and version 2 when
/// it knows none or the header is absent; the receipt's version says which it used.
pub const DIGEST_HEADER: &str = "cloak-receipt-digest";

/// How a receipt's body digests are made: its layout version.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BodyDigest {
    /// Version 1, from servers before salting: `SHA-256(body)`.
    Sha256,
    /// Version 2: `SHA-256(salt ‖ body)`.
    SaltedSha256,
    /// Version 3: `BLAKE3(salt ‖ body)`.
    SaltedBlake3,
}

impl BodyDigest {
    /// The layout version that makes its digests this way.
    pub fn version(self) -> u8 {
        match self {
            Self::Sha256 => 1,
            Self::SaltedSha256 => 2,
            Self::SaltedBlake3 => 3,
        }
    }

    /// Whether the digests are salted.
    pub fn salted(self) -> bool {
        self != Self::Sha256
    }

    /// The name [`DIGEST_HEADER`] gives it (salted digests only).
    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::Sha256 => None,
            Self::SaltedSha256 => Some("sha256"),
            Self::SaltedBlake3 => Some("blake3"),
        }
    }

    /// How the digests are made, for people: `sha256`, `salted-sha256` or `salted-blake3`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::SaltedSha256 => "salted-sha256",
            Self::SaltedBlake3 => "salted-blake3",
        }
    }

    /// The digest of `body` under `salt` (ignored by version 1).
    pub fn of(self, salt: &Salt, body: &[u8]) -> [u8; 32] {
        match self {
            Self::Sha256 => cloak_crypto::hash::sha256(body),
            Self::SaltedSha256 => salted_digest(salt, body),
            Self::SaltedBlake3 => cloak_crypto::hash::blake3_parts(&[salt, body]),
        }
    }

    /// The salted digest a server uses for a request whose [`DIGEST_HEADER`] is `value`
    /// (`None`: absent): the first name it knows, else SHA-256.
    pub fn requested(value: Option<&[u8]>) -> Self {
        value
            .and_then(|v| std::str::from_utf8(v).ok())
            .into_iter()
            .flat_map(|v| v.split(','))
            .find_map(|name| match name.trim() {
                n if n.eq_ignore_ascii_case("blake3") => Some(Self::SaltedBlake3),
                n if n.eq_ignore_ascii_case("sha256") => Some(Self::SaltedSha256),
                _ => None,
            })
            .unwrap_or(Self::SaltedSha256)
    }
}

/// A receipt salt.
pub type Salt = [u8; SALT_LEN];

/// A salt header's value, if it is one.
pub fn parse_salt(value: &[u8]) -> Option<Salt> {
    if value.len() != 2 * SALT_LEN || value.iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let mut salt = [0u8; SALT_LEN];
    hex::decode_to_slice(value, &mut salt).ok()?;
    Some(salt)
}

/// The digest a salted receipt states for `body`: `SHA-256(salt ‖ body)`.
pub fn salted_digest(salt: &Salt, body: &[u8]) -> [u8; 32] {
    cloak_crypto::hash::sha256_parts(&[salt, body])
}

/// What the signature covers before the payload.
const CONTEXT: &[u8] = b"cloak-receipt/v1\0";
/// The most receipt text a reader accepts.
pub const MAX_RECEIPT_LEN: usize = 8192;

/// What a receipt states.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The model that ran.
    pub model: String,
    /// SHA-256 of the model's plaintext.
    pub model_sha256: [u8; 32],
    /// The request body's digest, made as [`Receipt::digests`] says (SHA-256 up to version 2,
    /// whence the name).
    pub input_sha256: [u8; 32],
    /// The response body's digest, made likewise.
    pub output_sha256: [u8; 32],
    /// Unix milliseconds.
    pub time_ms: u64,
    /// The server's request id.
    pub request_id: String,
    /// SHA-256 of the identity claims (no nonce) in force.
    pub evidence_sha256: [u8; 32],
    /// How the body digests are made (the layout version).
    pub digests: BodyDigest,
}

impl Receipt {
    /// The deterministic CBOR payload.
    pub fn payload(&self) -> Vec<u8> {
        let entries = vec![
            ("v", Value::Integer(self.digests.version().into())),
            ("model", Value::Text(self.model.clone())),
            ("time", Value::Integer(self.time_ms.into())),
            ("input", Value::Bytes(self.input_sha256.to_vec())),
            ("output", Value::Bytes(self.output_sha256.to_vec())),
            ("evidence", Value::Bytes(self.evidence_sha256.to_vec())),
            ("request-id", Value::Text(self.request_id.clone())),
            ("model-sha256", Value::Bytes(self.model_sha256.to_vec())),
        ];
        crate::identity::encode_canonical(entries)
    }

    /// Signs the receipt: the header value.
    pub fn sign(&self, key: &SigningKey) -> Result<String, ReceiptError> {
        crate::signed::seal(CONTEXT, self.payload(), key).map_err(ReceiptError::from)
    }

    /// Reads a receipt and checks its signature under `public_key` (SubjectPublicKeyInfo DER).
    /// Nothing else is checked: see [`Receipt::verify`].
    pub fn open(text: &str, public_key: &[u8]) -> Result<Self, ReceiptError> {
        let payload = crate::signed::open(text, MAX_RECEIPT_LEN, CONTEXT, public_key)?;
        let payload = &payload;
        let receipt = Self::from_payload(payload)?;
        // A payload that is not in the one encoding this layout has could carry a second
        // meaning; only the canonical bytes are accepted.
        if receipt.payload() != *payload {
            return Err(ReceiptError::Malformed("not deterministic CBOR".into()));
        }
        Ok(receipt)
    }

    /// Reads a receipt and checks it against the server's `claims` (from an appraised
    /// attestation): the signature under the claims' receipt key, the evidence digest, and the
    /// model's digest in the claims.
    pub fn verify(text: &str, claims: &IdentityClaims) -> Result<Self, ReceiptError> {
        let receipt = Self::open(text, &claims.receipt_public_key)?;
        if receipt.evidence_sha256 != claims.evidence_digest() {
            return Err(ReceiptError::Evidence);
        }
        match claims.models.iter().find(|m| m.name == receipt.model) {
            Some(claim) if claim.sha256 == receipt.model_sha256 => Ok(receipt),
            _ => Err(ReceiptError::Model(receipt.model)),
        }
    }

    /// Checks that this receipt is for the request and response bodies given, with the salt
    /// (required for a salted receipt, ignored for a version-1 one).
    pub fn check_bodies(
        &self,
        salt: Option<&Salt>,
        request: &[u8],
        response: &[u8],
    ) -> Result<(), ReceiptError> {
        self.check_request(salt, request)?;
        self.check_response(salt, response)
    }

    /// Checks that this receipt is for the request body given, with the salt.
    pub fn check_request(&self, salt: Option<&Salt>, request: &[u8]) -> Result<(), ReceiptError> {
        self.check_request_digest(&self.digest(salt, request)?)
    }

    /// Checks that this receipt is for a request body whose digest is `digest` — made as the
    /// receipt's version says ([`BodyDigest::of`]), computed by the caller, for instance while
    /// the request was in flight.
    pub fn check_request_digest(&self, digest: &[u8; 32]) -> Result<(), ReceiptError> {
        if *digest == self.input_sha256 {
            Ok(())
        } else {
            Err(ReceiptError::Input)
        }
    }

    /// Checks that this receipt's body digests are salted and are the ones a client `asked`
    /// for, or the server's default, salted SHA-256 (what a server that does not know the ones
    /// asked for makes): a client held to SHA-256 then gets SHA-256, and a client that sent a
    /// salt never takes unsalted digests (version 1).
    pub fn check_digests_asked(&self, asked: BodyDigest) -> Result<(), ReceiptError> {
        if self.digests.salted()
            && (self.digests == asked || self.digests == BodyDigest::SaltedSha256)
        {
            Ok(())
        } else {
            Err(ReceiptError::DigestNotAsked(self.digests.version()))
        }
    }

    /// Checks that this receipt is for the response body given, with the salt.
    pub fn check_response(&self, salt: Option<&Salt>, response: &[u8]) -> Result<(), ReceiptError> {
        if self.digest(salt, response)? == self.output_sha256 {
            Ok(())
        } else {
            Err(ReceiptError::Output)
        }
    }

    /// The digest this receipt states for `body`: salted for versions 2 and 3 (the salt
    /// required), plain for version 1.
    fn digest(&self, salt: Option<&Salt>, body: &[u8]) -> Result<[u8; 32], ReceiptError> {
        match (self.digests.salted(), salt) {
            (true, Some(salt)) => Ok(self.digests.of(salt, body)),
            (true, None) => Err(ReceiptError::SaltMissing),
            (false, _) => Ok(self.digests.of(&[0; SALT_LEN], body)),
        }
    }

    fn from_payload(payload: &[u8]) -> Result<Self, ReceiptError> {
        let mut fields = crate::signed::fields(payload).map_err(ReceiptError::Malformed)?;
        let mut take = |key: &str| {
            fields
                .remove(key)
                .ok_or_else(|| ReceiptError::Malformed(format!("no {key}")))
        };
        let digests = match take("v")? {
            Value::Integer(v) if v == 1.into() => BodyDigest::Sha256,
            Value::Integer(v) if v == 2.into() => BodyDigest::SaltedSha256,
            Value::Integer(v) if v == 3.into() => BodyDigest::SaltedBlake3,
            _ => return Err(ReceiptError::Malformed("not version 1, 2 or 3".into())),
        };
        let receipt = Self {
            model: text(take("model")?, "model")?,
            model_sha256: digest(take("model-sha256")?, "model-sha256")?,
            input_sha256: digest(take("input")?, "input")?,
            output_sha256: digest(take("output")?, "output")?,
            time_ms: uint(take("time")?, "time")?,
            request_id: text(take("request-id")?, "request-id")?,
            evidence_sha256: digest(take("evidence")?, "evidence")?,
            digests,
        };
        if let Some(key) = fields.keys().next() {
            return Err(ReceiptError::Malformed(format!("unknown key {key}")));
        }
        Ok(receipt)
    }
}

fn text(value: Value, key: &str) -> Result<String, ReceiptError> {
    match value {
        Value::Text(t) => Ok(t),
        _ => Err(ReceiptError::Malformed(format!("{key} is not text"))),
    }
}

fn digest(value: Value, key: &str) -> Result<[u8; 32], ReceiptError> {
    match value {
        Value::Bytes(b) => b
            .try_into()
            .map_err(|_| ReceiptError::Malformed(format!("{key} is not 32 bytes"))),
        _ => Err(ReceiptError::Malformed(format!("{key} is not bytes"))),
    }
}

fn uint(value: Value, key: &str) -> Result<u64, ReceiptError> {
    match value {
        Value::Integer(i) => {
            u64::try_from(i).map_err(|_| ReceiptError::Malformed(format!("{key} is negative")))
        }
        _ => Err(ReceiptError::Malformed(format!("{key} is not an integer"))),
    }
}

/// Why a receipt was not accepted.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// Not a receipt in this layout.
    #[error("not a receipt: {0}")]
    Malformed(String),
    /// The signature does not verify under the attested receipt key.
    #[error("the signature does not verify under the attested receipt key")]
    Signature,
    /// The receipt names other evidence than the attestation's claims.
    #[error(
        "the receipt names other evidence than this attestation (another server, or its models changed since)"
    )]
    Evidence,
    /// The model or its digest is not in the attestation's claims.
    #[error("the attestation does not list model {0} with the receipt's digest")]
    Model(String),
    /// The request body is not the one the receipt covers.
    #[error("the receipt covers another request body")]
    Input,
    /// The response body is not the one the receipt covers.
    #[error("the receipt covers another response body")]
    Output,
    /// The receipt's digests are salted and no salt was given.
    #[error("the receipt's digests are salted: give the salt that came with it")]
    SaltMissing,
    /// The receipt's body digests are neither those the client asked for nor the server's
    /// default (salted SHA-256).
    #[error("the receipt's body digests are version {0}, which the client did not ask for")]
    DigestNotAsked(u8),
}

impl ReceiptError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "receipt-malformed",
            Self::Signature => "receipt-signature",
            Self::Evidence => "receipt-evidence-mismatch",
            Self::Model(_) => "receipt-model-mismatch",
            Self::Input => "receipt-input-mismatch",
            Self::Output => "receipt-output-mismatch",
            Self::SaltMissing => "receipt-salt-missing",
            Self::DigestNotAsked(_) => "receipt-digest-not-asked",
        }
    }
}

impl From<crate::signed::EnvelopeError> for ReceiptError {
    fn from(e: crate::signed::EnvelopeError) -> Self {
        match e {
            crate::signed::EnvelopeError::Malformed(what) => Self::Malformed(what),
            crate::signed::EnvelopeError::Signature => Self::Signature,
        }
    }
}

#[cfg(test)]
mod tests;
