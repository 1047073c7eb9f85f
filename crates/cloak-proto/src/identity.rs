//! The identity claims a Cloak server binds into its attestation evidence.
//!
//! A server generates its keys inside the enclave at start and states, in one CBOR map, what a
//! client needs to know about it. The map is the *claims* of TCG DICE tagged evidence (the
//! Interoperable RA-TLS format, certificate extension 2.23.133.5.4.9), so generic RA-TLS
//! verifiers can check the key binding too. The enclave's quote commits to it:
//!
//! ```text
//! REPORTDATA (64 bytes) = SHA-512(claims CBOR bytes, exactly as carried)
//! ```
//!
//! | key (in encoded order) | CBOR value | meaning |
//! |---|---|---|
//! | `nonce` | bstr | present only in fresh attestations (`GET /v1/attestation?nonce=`): the client's nonce |
//! | `nonces` | array of 2 to [`MAX_NONCES`] distinct bstr, in byte order | instead of `nonce`, in a fresh attestation that answers several clients at once (the server coalesces requests that arrive while it is quoting): every client's nonce |
//! | `models` | array of maps `{"name": tstr, "bytes": uint, "sha256": bstr(32)}`, sorted by name | every model the server has loaded: name, plaintext size and plaintext SHA-256 |
//! | `platform` | tstr | `sim` or `gramine` |
//! | `pubkey-hash` | bstr(CBOR `[1, bstr(32)]`) | SHA-256 (hash id 1) of the TLS certificate's SubjectPublicKeyInfo DER, as Interoperable RA-TLS defines it |
//! | `receipt-key` | bstr | the receipt-signing public key (SubjectPublicKeyInfo DER) |
//! | `cloak-identity` | tstr `"v1"` | the version of this layout (and a domain separator: no other format has this key) |
//! | `server-version` | tstr | the server's version |
//! | `hpke-key-config` | bstr | the HPKE key configuration for encrypted requests (RFC 9458 key config encoding) |
//!
//! The map is written in deterministic CBOR (RFC 8949 §4.2.1: keys ordered by their encoded
//! bytes, shortest forms). Readers hash the bytes they received, never a re-encoding, and
//! ignore keys they do not know.

use std::fmt;

use ciborium::Value;

/// The layout version written under `cloak-identity`.
pub const VERSION: &str = "v1";
/// Named Information hash id of SHA-256 (IANA), used in `pubkey-hash`.
const HASH_SHA256: u64 = 1;
/// The most claims bytes a reader accepts.
pub const MAX_CLAIMS_LEN: usize = 1 << 20;
/// The most models a claims map may list.
pub const MAX_MODELS: usize = 4096;
/// The most nonces one coalesced fresh attestation may answer.
pub const MAX_NONCES: usize = 256;

/// A loaded model, as the claims state it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelClaim {
    /// The model's name.
    pub name: String,
    /// The plaintext size in bytes.
    pub bytes: u64,
    /// The plaintext SHA-256.
    pub sha256: [u8; 32],
}

/// The inference engine that runs every model, as the claims state it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineClaim {
    /// The backend: `tract` or `onnxruntime`.
    pub name: String,
    /// The backend's version (`0.23.9`, `1.32.0`).
    pub version: String,
    /// SHA-256 of the shared library the backend runs in, when it is loaded at run time
    /// (ONNX Runtime); `None` for a backend compiled into the executable (tract).
    pub library_sha256: Option<[u8; 32]>,
}

/// What a server states about itself.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentityClaims {
    /// SHA-256 of the TLS certificate's SubjectPublicKeyInfo DER.
    pub tls_spki_sha256: [u8; 32],
    /// The HPKE key configuration (RFC 9458 encoding).
    pub hpke_key_config: Vec<u8>,
    /// The receipt-signing public key (SubjectPublicKeyInfo DER).
    pub receipt_public_key: Vec<u8>,
    /// The server's version.
    pub server_version: String,
    /// The platform: `sim` or `gramine`.
    pub platform: String,
    /// The loaded models.
    pub models: Vec<ModelClaim>,
    /// The engine that runs them (absent only in claims of servers that predate engines, which
    /// ran tract).
    pub engine: Option<EngineClaim>,
    /// The fleet whose shared HPKE key `hpke_key_config` is (`cloak serve --fleet`): any
    /// replica of the fleet opens requests sealed to it, and answers with its own receipts.
    pub fleet: Option<String>,
    /// The client's nonce, in a fresh attestation.
    pub nonce: Option<Vec<u8>>,
    /// The nonces of every client a coalesced fresh attestation answers (empty otherwise).
    pub nonces: Vec<Vec<u8>>,
}

impl IdentityClaims {
    /// The deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Vec<u8> {
        let mut models = self.models.clone();
        models.sort_by(|a, b| a.name.cmp(&b.name));
        let models = models
            .into_iter()
            .map(|m| {
                canonical_map(vec![
                    ("name", Value::Text(m.name)),
                    ("bytes", Value::Integer(m.bytes.into())),
                    ("sha256", Value::Bytes(m.sha256.to_vec())),
                ])
            })
            .collect();
        let pubkey_hash = encode(&Value::Array(vec![
            Value::Integer(HASH_SHA256.into()),
            Value::Bytes(self.tls_spki_sha256.to_vec()),
        ]));
        let mut entries = vec![
            ("models", Value::Array(models)),
            ("platform", Value::Text(self.platform.clone())),
            ("pubkey-hash", Value::Bytes(pubkey_hash)),
            ("receipt-key", Value::Bytes(self.receipt_public_key.clone())),
            ("cloak-identity", Value::Text(VERSION.to_owned())),
            (
                "hpke-key-config",
                Value::Bytes(self.hpke_key_config.clone()),
            ),
            ("server-version", Value::Text(self.server_version.clone())),
        ];
        if let Some(engine) = &self.engine {
            let mut fields = vec![
                ("name", Value::Text(engine.name.clone())),
                ("version", Value::Text(engine.version.clone())),
            ];
            if let Some(sha256) = engine.library_sha256 {
                fields.push(("library-sha256", Value::Bytes(sha256.to_vec())));
            }
            entries.push(("engine", canonical_map(fields)));
        }
        if let Some(fleet) = &self.fleet {
            entries.push(("fleet", Value::Text(fleet.clone())));
        }
        if let Some(nonce) = &self.nonce {
            entries.push(("nonce", Value::Bytes(nonce.clone())));
        }
        if !self.nonces.is_empty() {
            let mut nonces = self.nonces.clone();
            nonces.sort();
            nonces.dedup();
            let nonces = nonces.into_iter().map(Value::Bytes).collect();
            entries.push(("nonces", Value::Array(nonces)));
        }
        encode(&canonical_map(entries))
    }

    /// Reads claims written by [`IdentityClaims::to_cbor`] (or by a later version that only
    /// adds keys).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ClaimsError> {
        if bytes.len() > MAX_CLAIMS_LEN {
            return Err(ClaimsError::TooLarge(bytes.len()));
        }
        let value: Value =
            ciborium::from_reader(bytes).map_err(|e| ClaimsError::Malformed(e.to_string()))?;
        let Value::Map(entries) = value else {
            return Err(ClaimsError::Malformed("not a CBOR map".into()));
        };
        let mut fields = Fields::default();
        for (key, value) in entries {
            let Value::Text(key) = key else {
                return Err(ClaimsError::Malformed("a key is not text".into()));
            };
            fields.take(key, value)?;
        }
        fields.finish()
    }

    /// SHA-256 of these claims' encoding without a nonce: the claims a server's certificate
    /// carries, which its receipts name. Fresh attestations of the same server with the same
    /// models give the same digest whatever their nonce.
    pub fn evidence_digest(&self) -> [u8; 32] {
        let mut claims = self.clone();
        claims.nonce = None;
        claims.nonces.clear();
        cloak_crypto::hash::sha256(&claims.to_cbor())
    }

    /// Whether these are fresh claims (with a nonce, or coalesced nonces) rather than the
    /// claims a certificate carries.
    pub fn is_fresh(&self) -> bool {
        self.nonce.is_some() || !self.nonces.is_empty()
    }

    /// Whether these fresh claims answer `nonce`: it is their nonce, or one of their coalesced
    /// nonces.
    pub fn answers(&self, nonce: &[u8]) -> bool {
        self.nonce.as_deref() == Some(nonce) || self.nonces.iter().any(|n| n == nonce)
    }

    /// The report data that binds these claims: SHA-512 of their encoding.
    pub fn report_data(claims_cbor: &[u8]) -> [u8; 64] {
        cloak_crypto::hash::sha512(claims_cbor)
    }
}

impl fmt::Debug for IdentityClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityClaims")
            .field("tls_spki_sha256", &hex(&self.tls_spki_sha256))
            .field("server_version", &self.server_version)
            .field("platform", &self.platform)
            .field("models", &self.models)
            .field("engine", &self.engine)
            .field("fleet", &self.fleet)
            .field("nonce", &self.nonce.as_deref().map(hex))
            .field("nonces", &self.nonces.len())
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fields found while reading a claims map.
#[derive(Default)]
struct Fields {
    version: Option<String>,
    tls_spki_sha256: Option<[u8; 32]>,
    hpke_key_config: Option<Vec<u8>>,
    receipt_public_key: Option<Vec<u8>>,
    server_version: Option<String>,
    platform: Option<String>,
    models: Option<Vec<ModelClaim>>,
    engine: Option<EngineClaim>,
    fleet: Option<String>,
    nonce: Option<Vec<u8>>,
    nonces: Option<Vec<Vec<u8>>>,
}

impl Fields {
    fn take(&mut self, key: String, value: Value) -> Result<(), ClaimsError> {
        let slot_taken = |key: &str| ClaimsError::Malformed(format!("{key} appears twice"));
        match key.as_str() {
            "cloak-identity" => set(&mut self.version, text(&key, value)?, &key)?,
            "engine" => set(&mut self.engine, engine(value)?, &key)?,
            "fleet" => set(&mut self.fleet, text(&key, value)?, &key)?,
            "hpke-key-config" => set(&mut self.hpke_key_config, bytes(&key, value)?, &key)?,
            "models" => {
                let Value::Array(items) = value else {
                    return Err(wrong_type(&key));
                };
                if items.len() > MAX_MODELS {
                    return Err(ClaimsError::Malformed(format!(
                        "more than {MAX_MODELS} models"
                    )));
                }
                let models = items
                    .into_iter()
                    .map(model)
                    .collect::<Result<Vec<_>, _>>()?;
                set(&mut self.models, models, &key)?;
            }
            "nonce" => set(&mut self.nonce, bytes(&key, value)?, &key)?,
            "nonces" => set(&mut self.nonces, nonces(value)?, &key)?,
            "platform" => set(&mut self.platform, text(&key, value)?, &key)?,
            "pubkey-hash" => {
                let inner = bytes(&key, value)?;
                let hash = pubkey_hash(&inner)?;
                if self.tls_spki_sha256.replace(hash).is_some() {
                    return Err(slot_taken(&key));
                }
            }
            "receipt-key" => set(&mut self.receipt_public_key, bytes(&key, value)?, &key)?,
            "server-version" => set(&mut self.server_version, text(&key, value)?, &key)?,
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<IdentityClaims, ClaimsError> {
        match self.version.as_deref() {
            Some(VERSION) => {}
            Some(other) => return Err(ClaimsError::UnsupportedVersion(other.to_owned())),
            None => return Err(ClaimsError::Missing("cloak-identity")),
        }
        if self.nonce.is_some() && self.nonces.is_some() {
            return Err(ClaimsError::Malformed(
                "nonce and nonces are both present".into(),
            ));
        }
        Ok(IdentityClaims {
            tls_spki_sha256: self
                .tls_spki_sha256
                .ok_or(ClaimsError::Missing("pubkey-hash"))?,
            hpke_key_config: self
                .hpke_key_config
                .ok_or(ClaimsError::Missing("hpke-key-config"))?,
            receipt_public_key: self
                .receipt_public_key
                .ok_or(ClaimsError::Missing("receipt-key"))?,
            server_version: self
                .server_version
                .ok_or(ClaimsError::Missing("server-version"))?,
            platform: self.platform.ok_or(ClaimsError::Missing("platform"))?,
            models: self.models.ok_or(ClaimsError::Missing("models"))?,
            engine: self.engine,
            fleet: self.fleet,
            nonce: self.nonce,
            nonces: self.nonces.unwrap_or_default(),
        })
    }
}

fn set<T>(slot: &mut Option<T>, value: T, key: &str) -> Result<(), ClaimsError> {
    if slot.replace(value).is_some() {
        return Err(ClaimsError::Malformed(format!("{key} appears twice")));
    }
    Ok(())
}

fn wrong_type(key: &str) -> ClaimsError {
    ClaimsError::Malformed(format!("{key} has the wrong CBOR type"))
}

fn text(key: &str, value: Value) -> Result<String, ClaimsError> {
    match value {
        Value::Text(text) => Ok(text),
        _ => Err(wrong_type(key)),
    }
}

fn bytes(key: &str, value: Value) -> Result<Vec<u8>, ClaimsError> {
    match value {
        Value::Bytes(bytes) => Ok(bytes),
        _ => Err(wrong_type(key)),
    }
}

fn sha256_bytes(key: &str, value: Value) -> Result<[u8; 32], ClaimsError> {
    <[u8; 32]>::try_from(bytes(key, value)?)
        .map_err(|_| ClaimsError::Malformed(format!("{key} is not 32 bytes")))
}

/// A coalesced attestation's nonces: 2 to [`MAX_NONCES`] byte strings, strictly increasing
/// (as the writer orders them, so one set of nonces has one encoding).
fn nonces(value: Value) -> Result<Vec<Vec<u8>>, ClaimsError> {
    let Value::Array(items) = value else {
        return Err(wrong_type("nonces"));
    };
    if !(2..=MAX_NONCES).contains(&items.len()) {
        return Err(ClaimsError::Malformed(format!(
            "nonces must list 2 to {MAX_NONCES} nonces"
        )));
    }
    let nonces = items
        .into_iter()
        .map(|item| bytes("nonces", item))
        .collect::<Result<Vec<_>, _>>()?;
    if nonces
        .iter()
        .zip(nonces.iter().skip(1))
        .any(|(a, b)| a >= b)
    {
        return Err(ClaimsError::Malformed(
            "nonces are not distinct and in byte order".into(),
        ));
    }
    Ok(nonces)
}

fn pubkey_hash(inner: &[u8]) -> Result<[u8; 32], ClaimsError> {
    let value: Value = ciborium::from_reader(inner)
        .map_err(|e| ClaimsError::Malformed(format!("pubkey-hash: {e}")))?;
    let Value::Array(pair) = value else {
        return Err(wrong_type("pubkey-hash"));
    };
    match <[Value; 2]>::try_from(pair) {
        Ok([Value::Integer(alg), hash]) if u64::try_from(alg).ok() == Some(HASH_SHA256) => {
            sha256_bytes("pubkey-hash", hash)
        }
        Ok([Value::Integer(_), _]) => Err(ClaimsError::Malformed(
            "pubkey-hash is not SHA-256 (hash id 1)".into(),
        )),
        _ => Err(wrong_type("pubkey-hash")),
    }
}

fn model(value: Value) -> Result<ModelClaim, ClaimsError> {
    let Value::Map(entries) = value else {
        return Err(wrong_type("models"));
    };
    let (mut name, mut size, mut sha256) = (None, None, None);
    for (key, value) in entries {
        match key {
            Value::Text(key) if key == "name" => set(&mut name, text(&key, value)?, &key)?,
            Value::Text(key) if key == "bytes" => {
                let Value::Integer(n) = value else {
                    return Err(wrong_type("models.bytes"));
                };
                let n = u64::try_from(n).map_err(|_| wrong_type("models.bytes"))?;
                set(&mut size, n, &key)?;
            }
            Value::Text(key) if key == "sha256" => {
                set(&mut sha256, sha256_bytes(&key, value)?, &key)?
            }
            _ => {}
        }
    }
    Ok(ModelClaim {
        name: name.ok_or(ClaimsError::Missing("models.name"))?,
        bytes: size.ok_or(ClaimsError::Missing("models.bytes"))?,
        sha256: sha256.ok_or(ClaimsError::Missing("models.sha256"))?,
    })
}

fn engine(value: Value) -> Result<EngineClaim, ClaimsError> {
    let Value::Map(entries) = value else {
        return Err(wrong_type("engine"));
    };
    let (mut name, mut version, mut library_sha256) = (None, None, None);
    for (key, value) in entries {
        match key {
            Value::Text(key) if key == "name" => set(&mut name, text(&key, value)?, &key)?,
            Value::Text(key) if key == "version" => set(&mut version, text(&key, value)?, &key)?,
            Value::Text(key) if key == "library-sha256" => {
                set(&mut library_sha256, sha256_bytes(&key, value)?, &key)?
            }
            _ => {}
        }
    }
    Ok(EngineClaim {
        name: name.ok_or(ClaimsError::Missing("engine.name"))?,
        version: version.ok_or(ClaimsError::Missing("engine.version"))?,
        library_sha256,
    })
}

/// A CBOR map with its keys in deterministic order (by their encoded bytes).
fn canonical_map(entries: Vec<(&str, Value)>) -> Value {
    let mut keyed: Vec<(Vec<u8>, &str, Value)> = entries
        .into_iter()
        .map(|(key, value)| (encode(&Value::Text(key.to_owned())), key, value))
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Map(
        keyed
            .into_iter()
            .map(|(_, key, value)| (Value::Text(key.to_owned()), value))
            .collect(),
    )
}

/// The deterministic CBOR encoding of a map with text keys (RFC 8949 §4.2.1 order).
pub(crate) fn encode_canonical(entries: Vec<(&str, Value)>) -> Vec<u8> {
    encode(&canonical_map(entries))
}

fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing CBOR into a Vec cannot fail: the only errors are the writer's.
    if ciborium::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Why claims bytes are not Cloak identity claims.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimsError {
    /// Not well-formed CBOR of the expected shape.
    #[error("malformed identity claims: {0}")]
    Malformed(String),
    /// A required claim is absent.
    #[error("the identity claims lack {0}")]
    Missing(&'static str),
    /// Larger than [`MAX_CLAIMS_LEN`].
    #[error("identity claims of {0} bytes; at most {MAX_CLAIMS_LEN} are accepted")]
    TooLarge(usize),
    /// A `cloak-identity` version this build does not read.
    #[error("identity claims version {0:?} is not supported (this build reads {VERSION:?})")]
    UnsupportedVersion(String),
}

impl ClaimsError {
    /// A stable kebab-case code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed-claims",
            Self::Missing(_) => "missing-claim",
            Self::TooLarge(_) => "claims-too-large",
            Self::UnsupportedVersion(_) => "unsupported-claims-version",
        }
    }
}

#[cfg(test)]
mod tests;
