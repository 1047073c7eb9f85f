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
//! | `v` | uint `1` | the layout version |
//! | `model` | tstr | the model that ran |
//! | `time` | uint | when the response was made, Unix milliseconds |
//! | `input` | bstr(32) | SHA-256 of the request body exactly as the server received it (JSON header and binary tensors) |
//! | `output` | bstr(32) | SHA-256 of the response body exactly as sent |
//! | `evidence` | bstr(32) | SHA-256 of the server's identity claims (without a nonce) the request was accepted under — those of its connection's certificate, or those the encrypted request's client appraised ([`EVIDENCE_HEADER`]) — if the server still stands by them, else those in force when it answered: [`IdentityClaims::evidence_digest`] |
//! | `request-id` | tstr | the server's id for this request (random, 128 bits, hex) |
//! | `model-sha256` | bstr(32) | SHA-256 of the model's plaintext, as the claims state it |
//!
//! `signature` is ECDSA P-256 / SHA-256 (ASN.1 DER) over `"cloak-receipt/v1" ‖ 0x00 ‖ payload`
//! by the receipt key whose SubjectPublicKeyInfo the attested claims carry (`receipt-key`). A
//! verifier that trusts a quote over those claims therefore knows that the enclave produced that
//! output from that input with that model.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use cloak_crypto::sig::{self, SigningKey};

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
    /// SHA-256 of the request body.
    pub input_sha256: [u8; 32],
    /// SHA-256 of the response body.
    pub output_sha256: [u8; 32],
    /// Unix milliseconds.
    pub time_ms: u64,
    /// The server's request id.
    pub request_id: String,
    /// SHA-256 of the identity claims (no nonce) in force.
    pub evidence_sha256: [u8; 32],
}

impl Receipt {
    /// The deterministic CBOR payload.
    pub fn payload(&self) -> Vec<u8> {
        let entries = vec![
            ("v", Value::Integer(1.into())),
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
        let payload = self.payload();
        let signature = key
            .sign(&signed_message(&payload))
            .map_err(|_| ReceiptError::Signature)?;
        let mut out = Vec::new();
        ciborium::into_writer(
            &Value::Array(vec![Value::Bytes(payload), Value::Bytes(signature)]),
            &mut out,
        )
        .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Reads a receipt and checks its signature under `public_key` (SubjectPublicKeyInfo DER).
    /// Nothing else is checked: see [`Receipt::verify`].
    pub fn open(text: &str, public_key: &[u8]) -> Result<Self, ReceiptError> {
        let text = text.trim();
        if text.len() > MAX_RECEIPT_LEN {
            return Err(ReceiptError::Malformed("too long".into()));
        }
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| ReceiptError::Malformed("not base64url".into()))?;
        let value: Value = ciborium::from_reader(raw.as_slice())
            .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        let Value::Array(items) = value else {
            return Err(ReceiptError::Malformed("not a CBOR array".into()));
        };
        let [Value::Bytes(payload), Value::Bytes(signature)] = items.as_slice() else {
            return Err(ReceiptError::Malformed(
                "not [payload, signature] byte strings".into(),
            ));
        };
        sig::verify(public_key, &signed_message(payload), signature)
            .map_err(|_| ReceiptError::Signature)?;
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

    /// Checks that this receipt is for the request and response bodies given.
    pub fn check_bodies(&self, request: &[u8], response: &[u8]) -> Result<(), ReceiptError> {
        self.check_request(request)?;
        self.check_response(response)
    }

    /// Checks that this receipt is for the request body given.
    pub fn check_request(&self, request: &[u8]) -> Result<(), ReceiptError> {
        self.check_request_digest(&cloak_crypto::hash::sha256(request))
    }

    /// Checks that this receipt is for a request body whose SHA-256 is `sha256` (computed by the
    /// caller, for instance while the request was in flight).
    pub fn check_request_digest(&self, sha256: &[u8; 32]) -> Result<(), ReceiptError> {
        if *sha256 == self.input_sha256 {
            Ok(())
        } else {
            Err(ReceiptError::Input)
        }
    }

    /// Checks that this receipt is for the response body given.
    pub fn check_response(&self, response: &[u8]) -> Result<(), ReceiptError> {
        if cloak_crypto::hash::sha256(response) == self.output_sha256 {
            Ok(())
        } else {
            Err(ReceiptError::Output)
        }
    }

    fn from_payload(payload: &[u8]) -> Result<Self, ReceiptError> {
        let value: Value =
            ciborium::from_reader(payload).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        let Value::Map(entries) = value else {
            return Err(ReceiptError::Malformed("the payload is not a map".into()));
        };
        let mut fields = BTreeMap::new();
        for (key, value) in entries {
            let Value::Text(key) = key else {
                return Err(ReceiptError::Malformed("a key is not text".into()));
            };
            if fields.insert(key.clone(), value).is_some() {
                return Err(ReceiptError::Malformed(format!("{key} appears twice")));
            }
        }
        let mut take = |key: &str| {
            fields
                .remove(key)
                .ok_or_else(|| ReceiptError::Malformed(format!("no {key}")))
        };
        if take("v")? != Value::Integer(1.into()) {
            return Err(ReceiptError::Malformed("not version 1".into()));
        }
        let receipt = Self {
            model: text(take("model")?, "model")?,
            model_sha256: digest(take("model-sha256")?, "model-sha256")?,
            input_sha256: digest(take("input")?, "input")?,
            output_sha256: digest(take("output")?, "output")?,
            time_ms: uint(take("time")?, "time")?,
            request_id: text(take("request-id")?, "request-id")?,
            evidence_sha256: digest(take("evidence")?, "evidence")?,
        };
        if let Some(key) = fields.keys().next() {
            return Err(ReceiptError::Malformed(format!("unknown key {key}")));
        }
        Ok(receipt)
    }
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    [CONTEXT, payload].concat()
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
        }
    }
}

#[cfg(test)]
mod tests;
