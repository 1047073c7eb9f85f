//! Azure Attestation (MAA) tokens, verified offline: a compact JWS signed by the attestation
//! instance, checked against a JWKS the relying party pinned (MAA publishes its keys as `x5c`
//! certificates only), then its SGX claims appraised by the same [`AppraisalPolicy`] that
//! appraises quotes.
//!
//! What is checked, in order, each failure with its stable [`TokenError::code`]: the token is a
//! compact JWS of base64url parts (`malformed-token`); its header names an algorithm this
//! verifier accepts — RS256, RS384, RS512 or ES256, never `none` or an HMAC
//! (`token-algorithm-not-allowed`) — and a `kid` the JWKS has (`token-key-unknown`); the
//! algorithm fits that key's type, so an RSA key is never used for anything but RSA signatures
//! (`token-algorithm-not-allowed`); the signature verifies over the encoded header and payload
//! (`signature-invalid`); the key's certificate is valid at the verification time
//! (`token-key-expired`, checked at that time and not at `iat`: MAA issues certificates that
//! become valid a second after the first tokens they sign); `nbf` ≤ now < `exp`, without leeway
//! (`token-not-yet-valid`, `token-expired`); the issuer is the pinned one
//! (`token-issuer-mismatch`); the claims are SGX claims, under their current names or the
//! deprecated ones MAA still issues (which must then agree), and the enclave-held data hashes to
//! the report data the token states (`malformed-token`, `token-not-sgx`,
//! `enclave-held-data-mismatch`).
//!
//! [`AppraisalPolicy`]: crate::policy::AppraisalPolicy

use serde_json::{Map, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::collateral::unix;
use crate::types::{Measurement, ReportData};

/// Tokens are a few kilobytes; anything larger is not one.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;
/// JWKS documents are tens of kilobytes.
pub const MAX_JWKS_LEN: usize = 1024 * 1024;

/// A JSON Web Key Set of signing keys, each from its `x5c` certificate.
#[derive(Clone, Debug)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

/// One signing key: its id, its certificate chain and the public key of the first certificate.
#[derive(Clone, Debug)]
pub struct Jwk {
    kid: String,
    chain: Vec<Vec<u8>>,
    key: KeyKind,
    not_before: u64,
    not_after: u64,
}

#[derive(Clone, Debug)]
enum KeyKind {
    /// PKCS#1 `RSAPublicKey` DER and its size in bits.
    Rsa { pkcs1: Vec<u8>, bits: usize },
    /// A P-256 key, SubjectPublicKeyInfo DER.
    EcP256 { spki: Vec<u8> },
    /// A key of another kind: listed, never used.
    Other(String),
}

impl Jwks {
    /// Parses a JWKS document (`{"keys": [...]}`). Every key must carry `x5c` (standard base64
    /// DER certificates, the first holding the key) and a `kid`; ids are unique.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TokenError> {
        let malformed = |why: String| TokenError::MalformedJwks(why);
        if bytes.len() > MAX_JWKS_LEN {
            return Err(malformed(format!("{} bytes", bytes.len())));
        }
        let document: Value =
            serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("no \"keys\" array".into()))?;
        let mut parsed: Vec<Jwk> = Vec::with_capacity(keys.len());
        for key in keys {
            let kid = key
                .get("kid")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed("a key without a \"kid\"".into()))?;
            if parsed.iter().any(|k| k.kid == kid) {
                return Err(malformed(format!("kid {kid:?} appears twice")));
            }
            let x5c = key
                .get("x5c")
                .and_then(Value::as_array)
                .filter(|chain| !chain.is_empty())
                .ok_or_else(|| malformed(format!("key {kid:?} has no x5c certificates")))?;
            let chain = x5c
                .iter()
                .map(|cert| {
                    cert.as_str()
                        .and_then(|text| {
                            use base64::Engine as _;
                            base64::engine::general_purpose::STANDARD.decode(text).ok()
                        })
                        .ok_or_else(|| malformed(format!("key {kid:?}: x5c is not base64")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let first = chain.first().map(Vec::as_slice).unwrap_or_default();
            let (rest, cert) = X509Certificate::from_der(first)
                .map_err(|e| malformed(format!("key {kid:?}: certificate: {e}")))?;
            if !rest.is_empty() {
                return Err(malformed(format!(
                    "key {kid:?}: bytes after the certificate"
                )));
            }
            let key_kind = match cert.public_key().parsed() {
                Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => KeyKind::Rsa {
                    pkcs1: cert.public_key().subject_public_key.data.to_vec(),
                    bits: rsa.key_size(),
                },
                Ok(x509_parser::public_key::PublicKey::EC(_))
                    if crate::ratls::is_p256_key(cert.public_key()) =>
                {
                    KeyKind::EcP256 {
                        spki: cert.public_key().raw.to_vec(),
                    }
                }
                _ => KeyKind::Other(cert.public_key().algorithm.algorithm.to_id_string()),
            };
            parsed.push(Jwk {
                kid: kid.to_owned(),
                key: key_kind,
                not_before: unix(cert.validity().not_before.timestamp()),
                not_after: unix(cert.validity().not_after.timestamp()),
                chain,
            });
        }
        Ok(Self { keys: parsed })
    }

    /// The key with id `kid`.
    pub fn get(&self, kid: &str) -> Option<&Jwk> {
        self.keys.iter().find(|key| key.kid == kid)
    }

    /// Every key.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }
}

impl Jwk {
    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The `x5c` chain, DER, the key's own certificate first.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The key's own certificate, DER.
    pub fn certificate(&self) -> &[u8] {
        self.chain.first().map(Vec::as_slice).unwrap_or_default()
    }

    /// The certificate's validity, Unix seconds.
    pub fn validity(&self) -> (u64, u64) {
        (self.not_before, self.not_after)
    }
}

/// The algorithms accepted, by their JWS names.
const ALGORITHMS: [&str; 4] = ["RS256", "RS384", "RS512", "ES256"];

/// A token whose signature, key, times and issuer verified. Only [`verify_token`] constructs
/// it; [`crate::policy::AppraisalPolicy::appraise_token`] decides whether its enclave is
/// acceptable.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    algorithm: String,
    kid: String,
    signer_certificate: Vec<u8>,
    issuer: String,
    issued_at: Option<u64>,
    not_before: Option<u64>,
    expires: u64,
    sgx: SgxClaims,
    claims: Map<String, Value>,
    verified_at: u64,
}

/// The SGX claims of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SgxClaims {
    /// `x-ms-sgx-mrenclave`.
    pub mrenclave: Measurement<32>,
    /// `x-ms-sgx-mrsigner`.
    pub mrsigner: Measurement<32>,
    /// `x-ms-sgx-product-id`.
    pub isv_prod_id: u16,
    /// `x-ms-sgx-svn`.
    pub isv_svn: u16,
    /// `x-ms-sgx-is-debuggable`.
    pub debug: bool,
    /// `x-ms-sgx-ehd`: the enclave-held data (runtime data) the quote's report data binds.
    pub enclave_held_data: Option<Vec<u8>>,
    /// `x-ms-sgx-report-data`: the quote's whole report data, when the token states it.
    pub report_data: Option<ReportData>,
}

impl VerifiedToken {
    /// The JWS algorithm it was signed with.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The id of the key that signed it.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signing key's certificate (DER): for MAA's own keys, a certificate embedding the
    /// attestation service enclave's quote, which [`crate::ratls`] reads.
    pub fn signer_certificate(&self) -> &[u8] {
        &self.signer_certificate
    }

    /// `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// `iat`, `nbf` and `exp`.
    pub fn times(&self) -> (Option<u64>, Option<u64>, u64) {
        (self.issued_at, self.not_before, self.expires)
    }

    /// The SGX claims.
    pub fn sgx(&self) -> &SgxClaims {
        &self.sgx
    }

    /// Every claim of the payload, as JSON.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// The time it was verified for.
    pub fn verified_at(&self) -> u64 {
        self.verified_at
    }
}

/// Verifies `token` (compact JWS; surrounding whitespace ignored) against `jwks`, at `now`,
/// requiring the issuer `issuer` when one is given.
pub fn verify_token(
    token: &[u8],
    jwks: &Jwks,
    issuer: Option<&str>,
    now: u64,
) -> Result<VerifiedToken, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed(format!("{} bytes", token.len())));
    }
    let text = std::str::from_utf8(token.trim_ascii())
        .map_err(|_| TokenError::Malformed("not ASCII text".into()))?;
    let mut parts = text.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed(
            "not a compact JWS (three dot-separated parts)".into(),
        ));
    };
    let header = json_object("header", &base64url(header_b64, "header")?)?;
    let algorithm = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::Malformed("the header has no \"alg\"".into()))?;
    if !ALGORITHMS.contains(&algorithm) {
        return Err(TokenError::AlgorithmNotAllowed(format!(
            "{algorithm:?} (accepted: {})",
            ALGORITHMS.join(", ")
        )));
    }
    if header.contains_key("crit") {
        return Err(TokenError::Malformed(
            "the header has critical extensions (\"crit\") this verifier does not implement".into(),
        ));
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::Malformed("the header has no \"kid\"".into()))?;
    let key = jwks
        .get(kid)
        .ok_or_else(|| TokenError::KeyUnknown(kid.to_owned()))?;
    let signature = base64url(signature_b64, "signature")?;
    // What is signed: the encoded header and payload as they are in the token.
    let (signed, _) = text
        .rsplit_once('.')
        .ok_or_else(|| TokenError::Malformed("no signature part".into()))?;
    check_signature(algorithm, &key.key, signed.as_bytes(), &signature)?;
    let (not_before, not_after) = key.validity();
    if now < not_before || now > not_after {
        return Err(TokenError::KeyExpired(format!(
            "the certificate of key {kid:?} is valid {not_before}..{not_after}, not at {now}"
        )));
    }

    let claims = json_object("payload", &base64url(payload_b64, "payload")?)?;
    let time = |name: &str| -> Result<Option<u64>, TokenError> {
        claims
            .get(name)
            .map(|v| {
                v.as_u64()
                    .ok_or_else(|| TokenError::Malformed(format!("{name:?} is not a time")))
            })
            .transpose()
    };
    let issued_at = time("iat")?;
    let not_before_claim = time("nbf")?;
    let expires = time("exp")?.ok_or_else(|| TokenError::Malformed("no \"exp\"".into()))?;
    if let Some(nbf) = not_before_claim
        && now < nbf
    {
        return Err(TokenError::NotYetValid(format!(
            "not before {nbf}, now {now}"
        )));
    }
    if now >= expires {
        return Err(TokenError::Expired(format!(
            "expired at {expires}, now {now}"
        )));
    }
    let token_issuer = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::Malformed("no \"iss\"".into()))?;
    if let Some(expected) = issuer
        && expected != token_issuer
    {
        return Err(TokenError::IssuerMismatch(format!(
            "issued by {token_issuer:?}, not {expected:?}"
        )));
    }
    let sgx = sgx_claims(&claims)?;
    Ok(VerifiedToken {
        algorithm: algorithm.to_owned(),
        kid: kid.to_owned(),
        signer_certificate: key.certificate().to_vec(),
        issuer: token_issuer.to_owned(),
        issued_at,
        not_before: not_before_claim,
        expires,
        sgx,
        claims,
        verified_at: now,
    })
}

fn check_signature(
    algorithm: &str,
    key: &KeyKind,
    signed: &[u8],
    signature: &[u8],
) -> Result<(), TokenError> {
    use cloak_crypto::sig::{RsaHash, verify_fixed, verify_rsa_pkcs1};
    let result = match (algorithm, key) {
        (_, KeyKind::Rsa { bits, .. }) if *bits < 2048 => {
            return Err(TokenError::AlgorithmNotAllowed(format!(
                "an RSA-{bits} key (2048 bits or more are accepted)"
            )));
        }
        ("RS256", KeyKind::Rsa { pkcs1, .. }) => {
            verify_rsa_pkcs1(RsaHash::Sha256, pkcs1, signed, signature)
        }
        ("RS384", KeyKind::Rsa { pkcs1, .. }) => {
            verify_rsa_pkcs1(RsaHash::Sha384, pkcs1, signed, signature)
        }
        ("RS512", KeyKind::Rsa { pkcs1, .. }) => {
            verify_rsa_pkcs1(RsaHash::Sha512, pkcs1, signed, signature)
        }
        // JWS ES256 signatures are r‖s, 32 bytes each.
        ("ES256", KeyKind::EcP256 { spki }) => verify_fixed(spki, signed, signature),
        (algorithm, key) => {
            let kind = match key {
                KeyKind::Rsa { .. } => "an RSA".to_owned(),
                KeyKind::EcP256 { .. } => "a P-256".to_owned(),
                KeyKind::Other(oid) => format!("a {oid}"),
            };
            return Err(TokenError::AlgorithmNotAllowed(format!(
                "{algorithm} with {kind} key"
            )));
        }
    };
    result.map_err(|_| TokenError::SignatureInvalid)
}

/// The SGX claims, under their current names or MAA's deprecated aliases (equal when both).
fn sgx_claims(claims: &Map<String, Value>) -> Result<SgxClaims, TokenError> {
    let claim = |names: &[&str]| -> Result<Option<&Value>, TokenError> {
        let mut found: Option<&Value> = None;
        for name in names {
            if let Some(value) = claims.get(*name) {
                if found.is_some_and(|earlier| earlier != value) {
                    return Err(TokenError::Malformed(format!(
                        "{name:?} disagrees with {:?}",
                        names.first().copied().unwrap_or_default()
                    )));
                }
                found = Some(value);
            }
        }
        Ok(found)
    };
    let kind = claim(&["x-ms-attestation-type", "tee"])?.and_then(Value::as_str);
    if kind != Some("sgx") {
        return Err(TokenError::NotSgx(format!(
            "attestation type {}",
            kind.unwrap_or("(none)")
        )));
    }
    if let Some(version) = claim(&["x-ms-ver", "ver"])?
        && version.as_str() != Some("1.0")
    {
        return Err(TokenError::Malformed(format!(
            "claim schema version {version} (1.0 is known)"
        )));
    }
    let required = |names: &[&str]| {
        claim(names)?.ok_or_else(|| {
            TokenError::Malformed(format!(
                "no {:?} claim",
                names.first().copied().unwrap_or_default()
            ))
        })
    };
    let measurement = |names: &[&str]| -> Result<Measurement<32>, TokenError> {
        required(names)?
            .as_str()
            .and_then(|hex_text| hex::decode(hex_text).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .map(Measurement::from_bytes)
            .ok_or_else(|| {
                TokenError::Malformed(format!(
                    "{:?} is not 32 bytes of hex",
                    names.first().copied().unwrap_or_default()
                ))
            })
    };
    let number = |names: &[&str]| -> Result<u16, TokenError> {
        required(names)?
            .as_u64()
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| {
                TokenError::Malformed(format!(
                    "{:?} is not a 16-bit number",
                    names.first().copied().unwrap_or_default()
                ))
            })
    };
    let debug = required(&["x-ms-sgx-is-debuggable", "is-debuggable"])?
        .as_bool()
        .ok_or_else(|| {
            TokenError::Malformed("\"x-ms-sgx-is-debuggable\" is not a boolean".into())
        })?;
    let enclave_held_data = claim(&["x-ms-sgx-ehd", "maa-ehd", "aas-ehd"])?
        .map(|value| {
            value
                .as_str()
                .ok_or_else(|| TokenError::Malformed("\"x-ms-sgx-ehd\" is not text".into()))
                .and_then(|text| base64url(text, "x-ms-sgx-ehd"))
        })
        .transpose()?;
    let report_data = claim(&["x-ms-sgx-report-data"])?
        .map(|value| {
            value
                .as_str()
                .and_then(|text| hex::decode(text).ok())
                .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
                .map(ReportData::from_bytes)
                .ok_or_else(|| {
                    TokenError::Malformed("\"x-ms-sgx-report-data\" is not 64 bytes of hex".into())
                })
        })
        .transpose()?;
    // MAA binds the enclave-held data by SHA-256 into the first half of the report data: a
    // token that says otherwise contradicts itself.
    if let (Some(ehd), Some(report_data)) = (&enclave_held_data, &report_data)
        && report_data.as_bytes().get(..32) != Some(&cloak_crypto::hash::sha256(ehd)[..])
    {
        return Err(TokenError::EnclaveHeldDataMismatch(
            "SHA-256 of x-ms-sgx-ehd is not the first half of x-ms-sgx-report-data".into(),
        ));
    }
    Ok(SgxClaims {
        mrenclave: measurement(&["x-ms-sgx-mrenclave", "sgx-mrenclave"])?,
        mrsigner: measurement(&["x-ms-sgx-mrsigner", "sgx-mrsigner"])?,
        isv_prod_id: number(&["x-ms-sgx-product-id", "product-id"])?,
        isv_svn: number(&["x-ms-sgx-svn", "svn"])?,
        debug,
        enclave_held_data,
        report_data,
    })
}

/// Unpadded base64url, as JWS uses it.
fn base64url(text: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|e| TokenError::Malformed(format!("{what}: not base64url: {e}")))
}

fn json_object(what: &str, bytes: &[u8]) -> Result<Map<String, Value>, TokenError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TokenError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
        Err(e) => Err(TokenError::Malformed(format!("the {what}: {e}"))),
    }
}

/// Why a token did not verify. Each variant has a stable [`code`](Self::code).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The algorithm is not accepted, or does not fit the key.
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    /// The enclave-held data does not hash to the report data the token states.
    #[error("enclave-held data: {0}")]
    EnclaveHeldDataMismatch(String),
    /// `exp` has passed.
    #[error("token expired: {0}")]
    Expired(String),
    /// `iss` is not the pinned issuer.
    #[error("issuer mismatch: {0}")]
    IssuerMismatch(String),
    /// The key's certificate is not valid at the verification time.
    #[error("signing key not valid: {0}")]
    KeyExpired(String),
    /// The `kid` is not in the JWKS.
    #[error("the JWKS has no key {0:?}")]
    KeyUnknown(String),
    /// The JWKS does not parse.
    #[error("malformed JWKS: {0}")]
    MalformedJwks(String),
    /// The token does not parse, or its claims are not what MAA issues.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token attests something other than an SGX enclave.
    #[error("not an SGX token: {0}")]
    NotSgx(String),
    /// `nbf` is in the future.
    #[error("token not yet valid: {0}")]
    NotYetValid(String),
    /// The signature does not verify under the key.
    #[error("the token's signature does not verify")]
    SignatureInvalid,
}

impl TokenError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AlgorithmNotAllowed(_) => "token-algorithm-not-allowed",
            Self::EnclaveHeldDataMismatch(_) => "enclave-held-data-mismatch",
            Self::Expired(_) => "token-expired",
            Self::IssuerMismatch(_) => "token-issuer-mismatch",
            Self::KeyExpired(_) => "token-key-expired",
            Self::KeyUnknown(_) => "token-key-unknown",
            Self::MalformedJwks(_) => "malformed-jwks",
            Self::Malformed(_) => "malformed-token",
            Self::NotSgx(_) => "token-not-sgx",
            Self::NotYetValid(_) => "token-not-yet-valid",
            Self::SignatureInvalid => "signature-invalid",
        }
    }
}

#[cfg(test)]
mod tests;
