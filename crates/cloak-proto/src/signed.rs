//! The envelope receipts and access tokens share: `base64url-nopad(CBOR [payload: bstr,
//! signature: bstr])`, the signature ECDSA P-256 over `context ‖ payload`, and the payload a
//! CBOR map with text keys, each once.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use cloak_crypto::sig::{self, SigningKey};

/// Why an envelope did not open.
pub(crate) enum EnvelopeError {
    /// Not an envelope of this layout (what is wrong).
    Malformed(String),
    /// Signing failed, or the signature does not verify.
    Signature,
}

/// Signs `payload` under `context` with `key`: the envelope's text.
pub(crate) fn seal(
    context: &[u8],
    payload: Vec<u8>,
    key: &SigningKey,
) -> Result<String, EnvelopeError> {
    let signature = key
        .sign(&[context, &payload].concat())
        .map_err(|_| EnvelopeError::Signature)?;
    let mut out = Vec::new();
    ciborium::into_writer(
        &Value::Array(vec![Value::Bytes(payload), Value::Bytes(signature)]),
        &mut out,
    )
    .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(out))
}

/// Reads an envelope of at most `max_len` characters and checks its signature under
/// `public_key` (SubjectPublicKeyInfo DER): its payload.
pub(crate) fn open(
    text: &str,
    max_len: usize,
    context: &[u8],
    public_key: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let text = text.trim();
    if text.len() > max_len {
        return Err(EnvelopeError::Malformed("too long".into()));
    }
    let raw = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| EnvelopeError::Malformed("not base64url".into()))?;
    let value: Value = ciborium::from_reader(raw.as_slice())
        .map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(EnvelopeError::Malformed("not a CBOR array".into()));
    };
    let [Value::Bytes(payload), Value::Bytes(signature)] = items.as_slice() else {
        return Err(EnvelopeError::Malformed(
            "not [payload, signature] byte strings".into(),
        ));
    };
    sig::verify(public_key, &[context, payload].concat(), signature)
        .map_err(|_| EnvelopeError::Signature)?;
    Ok(payload.clone())
}

/// A payload's fields by key: a CBOR map with text keys, none twice.
pub(crate) fn fields(payload: &[u8]) -> Result<BTreeMap<String, Value>, String> {
    let value: Value = ciborium::from_reader(payload).map_err(|e| e.to_string())?;
    let Value::Map(entries) = value else {
        return Err("the payload is not a map".into());
    };
    let mut fields = BTreeMap::new();
    for (key, value) in entries {
        let Value::Text(key) = key else {
            return Err("a key is not text".into());
        };
        if fields.insert(key.clone(), value).is_some() {
            return Err(format!("{key} appears twice"));
        }
    }
    Ok(fields)
}
