//! RA-TLS certificates: X.509 certificates that carry attestation evidence binding the
//! certificate's public key to an enclave.
//!
//! Five real-world carriers are read:
//!
//! | carrier | extension OID | value | binding |
//! |---|---|---|---|
//! | TCG DICE tagged evidence (Interoperable RA-TLS; Gramine ≥ 1.8, Intel SGX SDK, rats-tls) | `2.23.133.5.4.9` | CBOR `tag(60000 or 0x1a7501)([quote, claims])` | `REPORTDATA = SHA-256(claims)` (zero-padded), and the claims' `pubkey-hash` = hash of the SubjectPublicKeyInfo DER |
//! | Gramine legacy | `0.6.9.42.840.113741.1337.6` (Gramine's mis-encoding of 1.2.840.113741.1337.6) | the raw quote | `REPORTDATA = SHA-256(SubjectPublicKeyInfo DER)`, zero-padded |
//! | Intel SGX SDK legacy | `1.2.840.113741.1.13.1` | the raw quote | as the DICE extension carrying the same quote; else as Gramine legacy |
//! | Open Enclave report | `1.3.6.1.4.1.311.105.1`, legacy `1.2.840.113556.10.1.1` | an OE remote report (`oe_report_header_t` + quote); Azure Attestation's 2020 signing certificates put a DER OCTET STRING holding a bare quote there | `REPORTDATA[0..32]` = SHA-256 of the public key as OE writes it (PEM, 64-column lines, LF) followed by one NUL byte; the rest zero |
//! | Open Enclave evidence | `1.3.6.1.4.1.311.105.2`, legacy `1.2.840.113556.10.1.2` | OE evidence with its attestation header (version 3) | as the OE report; under the legacy OID, Azure Attestation's INTEGER marker is not evidence and is skipped |
//!
//! Reading checks the binding; whether the quote is genuine and acceptable is for
//! [`crate::verify`] and [`crate::policy`]. X.509 validity dates are not checked: RA-TLS
//! certificates are self-signed with arbitrary dates, and their trust comes from the quote that
//! binds their key. The self-signature is checked where the algorithm allows
//! ([`SelfSignature`]): it proves nothing the TLS handshake does not (possession of the key),
//! but a certificate whose own signature fails has been altered after it was made, as Open
//! Enclave's verifier reports.

use std::fmt;

use ciborium::Value;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::evidence::{Evidence as OeEvidence, EvidenceError, EvidenceFormat};
use crate::quote::{Quote, QuoteError};
use crate::types::ReportData;

/// The TCG DICE tagged-evidence extension, 2.23.133.5.4.9 (OID content bytes).
const OID_TCG_DICE_TAGGED_EVIDENCE: &[u8] = &[0x67, 0x81, 0x05, 0x05, 0x04, 0x09];
/// Gramine's legacy quote extension: the DER of 1.2.840.113741.1337.6 passed as OID content,
/// which makes the OID 0.6.9.42.840.113741.1337.6.
const OID_GRAMINE_LEGACY: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x8A, 0x39, 0x06,
];
/// Intel SGX SDK's quote extension, 1.2.840.113741.1.13.1.
const OID_INTEL_SGX_SDK: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x01, 0x0D, 0x01];
/// Open Enclave's report extension, 1.3.6.1.4.1.311.105.1.
const OID_OE_REPORT: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x69, 0x01];
/// Open Enclave's legacy report extension, 1.2.840.113556.10.1.1.
const OID_OE_REPORT_LEGACY: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x14, 0x0A, 0x01, 0x01];
/// Open Enclave's evidence extension, 1.3.6.1.4.1.311.105.2.
const OID_OE_EVIDENCE: &[u8] = &[0x2B, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x69, 0x02];
/// Open Enclave's legacy evidence extension, 1.2.840.113556.10.1.2.
const OID_OE_EVIDENCE_LEGACY: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x14, 0x0A, 0x01, 0x02];
/// ecdsa-with-SHA256 and sha256WithRSAEncryption: the self-signatures checked.
const OID_ECDSA_WITH_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
/// id-ecPublicKey.
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// prime256v1 (P-256), the one curve whose ECDSA self-signatures are checked.
const OID_P256: &str = "1.2.840.10045.3.1.7";
/// CBOR tags for an Intel TEE quote: the Interoperable RA-TLS draft's 60000, and librats'.
const CBOR_TAGS_INTEL_QUOTE: [u64; 2] = [60_000, 0x1A_7501];
/// Named Information hash algorithm ids (IANA): sha-256, sha-384, sha-512.
const HASH_SHA256: u64 = 1;
const HASH_SHA384: u64 = 7;
const HASH_SHA512: u64 = 8;

/// Which extension carried the evidence.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// Gramine's legacy quote extension.
    GramineLegacy,
    /// Intel SGX SDK's quote extension.
    IntelSgxSdk,
    /// Open Enclave's evidence extension (`oe_attestation_header_t` and evidence).
    OpenEnclaveEvidence,
    /// Open Enclave's legacy evidence extension.
    OpenEnclaveEvidenceLegacy,
    /// Open Enclave's report extension (an OE remote report).
    OpenEnclaveReport,
    /// Open Enclave's legacy report extension, also used by Azure Attestation's signing
    /// certificates.
    OpenEnclaveReportLegacy,
    /// The TCG DICE tagged-evidence extension.
    TcgDiceTaggedEvidence,
}

impl Carrier {
    /// A stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::GramineLegacy => "gramine-legacy",
            Self::IntelSgxSdk => "intel-sgx-sdk",
            Self::OpenEnclaveEvidence => "open-enclave-evidence",
            Self::OpenEnclaveEvidenceLegacy => "open-enclave-evidence-legacy",
            Self::OpenEnclaveReport => "open-enclave-report",
            Self::OpenEnclaveReportLegacy => "open-enclave-report-legacy",
            Self::TcgDiceTaggedEvidence => "tcg-dice-tagged-evidence",
        }
    }

    /// The extension's OID in dotted form.
    pub fn oid(self) -> &'static str {
        match self {
            Self::GramineLegacy => "0.6.9.42.840.113741.1337.6",
            Self::IntelSgxSdk => "1.2.840.113741.1.13.1",
            Self::OpenEnclaveEvidence => "1.3.6.1.4.1.311.105.2",
            Self::OpenEnclaveEvidenceLegacy => "1.2.840.113556.10.1.2",
            Self::OpenEnclaveReport => "1.3.6.1.4.1.311.105.1",
            Self::OpenEnclaveReportLegacy => "1.2.840.113556.10.1.1",
            Self::TcgDiceTaggedEvidence => "2.23.133.5.4.9",
        }
    }

    /// Whether this is one of Open Enclave's extensions (bound as OE binds keys).
    pub fn is_open_enclave(self) -> bool {
        matches!(
            self,
            Self::OpenEnclaveEvidence
                | Self::OpenEnclaveEvidenceLegacy
                | Self::OpenEnclaveReport
                | Self::OpenEnclaveReportLegacy
        )
    }

    fn from_oid(oid: &[u8]) -> Option<Self> {
        [
            (OID_TCG_DICE_TAGGED_EVIDENCE, Self::TcgDiceTaggedEvidence),
            (OID_GRAMINE_LEGACY, Self::GramineLegacy),
            (OID_INTEL_SGX_SDK, Self::IntelSgxSdk),
            (OID_OE_REPORT, Self::OpenEnclaveReport),
            (OID_OE_REPORT_LEGACY, Self::OpenEnclaveReportLegacy),
            (OID_OE_EVIDENCE, Self::OpenEnclaveEvidence),
            (OID_OE_EVIDENCE_LEGACY, Self::OpenEnclaveEvidenceLegacy),
        ]
        .into_iter()
        .find_map(|(known, carrier)| (known == oid).then_some(carrier))
    }
}

impl fmt::Display for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An RA-TLS certificate's public key and the evidence it carries.
#[derive(Clone, Debug)]
pub struct RaTlsCertificate {
    subject: String,
    spki_der: Vec<u8>,
    self_signature: SelfSignature,
    evidence: Vec<Evidence>,
}

impl RaTlsCertificate {
    /// Reads a certificate (PEM, DER, or bare base64 of the DER) and the evidence in it.
    pub fn parse(bytes: &[u8]) -> Result<Self, RaTlsError> {
        // PEM only if the input starts like PEM: a DER certificate carrying a quote contains PEM
        // text (the quote's PCK chain), which must never be mistaken for the certificate.
        let is_pem = bytes.trim_ascii_start().starts_with(b"-----BEGIN");
        let der = if is_pem {
            match pem::parse(bytes) {
                Ok(block) if block.tag() == "CERTIFICATE" => block.into_contents(),
                Ok(block) => {
                    return Err(RaTlsError::NotCertificate(format!(
                        "a PEM {} block, not a CERTIFICATE",
                        block.tag()
                    )));
                }
                Err(e) => return Err(RaTlsError::NotCertificate(e.to_string())),
            }
        } else if bytes.trim_ascii().first() == Some(&b'M') {
            // Bare base64 of the DER, as Azure Attestation's `.cer` samples are: a DER
            // certificate starts with 0x30, never with this letter, so the two cannot be
            // confused. Nothing may follow the base64 (one real sample has junk after it).
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(bytes.trim_ascii())
                .map_err(|e| {
                    RaTlsError::NotCertificate(format!(
                        "not base64 of a certificate, or something follows it: {e}"
                    ))
                })?
        } else {
            bytes.to_vec()
        };
        let (rest, cert) = X509Certificate::from_der(&der)
            .map_err(|e| RaTlsError::NotCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(RaTlsError::NotCertificate(format!(
                "{} bytes after the certificate",
                rest.len()
            )));
        }
        let spki_der = cert.public_key().raw.to_vec();
        let mut found = Vec::new();
        for ext in cert.extensions() {
            let Some(carrier) = Carrier::from_oid(ext.oid.as_bytes()) else {
                continue;
            };
            // Azure Attestation's signing certificates mark themselves with INTEGER 1 under
            // OE's legacy evidence OID: a marker, not evidence.
            if carrier == Carrier::OpenEnclaveEvidenceLegacy && is_der_integer(ext.value) {
                continue;
            }
            if found.iter().any(|(c, _)| *c == carrier) {
                return Err(RaTlsError::MalformedEvidence(format!(
                    "the {} extension appears twice",
                    carrier.oid()
                )));
            }
            found.push((carrier, ext.value.to_vec()));
        }
        if found.is_empty() {
            return Err(RaTlsError::NoEvidence);
        }
        let dice_claims: Vec<(Vec<u8>, Vec<u8>)> = found
            .iter()
            .filter(|(carrier, _)| *carrier == Carrier::TcgDiceTaggedEvidence)
            .filter_map(|(_, value)| decode_dice(value).ok())
            .collect();
        let evidence = found
            .into_iter()
            .map(|(carrier, value)| Evidence::new(carrier, &value, &spki_der, &dice_claims))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            subject: cert.subject().to_string(),
            self_signature: self_signature(&cert),
            spki_der,
            evidence,
        })
    }

    /// Whether the certificate's signature verifies under its own key.
    pub fn self_signature(&self) -> &SelfSignature {
        &self.self_signature
    }

    /// The certificate subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The SubjectPublicKeyInfo, DER.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Every evidence extension found, in certificate order.
    pub fn evidence(&self) -> &[Evidence] {
        &self.evidence
    }

    /// The evidence a verifier should use: the DICE extension if present (as Gramine's own
    /// verifier does), else the first legacy one.
    pub fn preferred(&self) -> Option<&Evidence> {
        self.evidence
            .iter()
            .find(|e| e.carrier == Carrier::TcgDiceTaggedEvidence)
            .or_else(|| self.evidence.first())
    }
}

/// Evidence from one extension.
#[derive(Clone, Debug)]
pub struct Evidence {
    carrier: Carrier,
    quote_bytes: Vec<u8>,
    quote: Result<Quote, QuoteError>,
    claims: Option<Claims>,
    binding: Binding,
}

impl Evidence {
    fn new(
        carrier: Carrier,
        value: &[u8],
        spki_der: &[u8],
        dice: &[(Vec<u8>, Vec<u8>)],
    ) -> Result<Self, RaTlsError> {
        let (quote_bytes, claims_raw) = match carrier {
            Carrier::TcgDiceTaggedEvidence => {
                let (quote, claims) = decode_dice(value)?;
                (quote, Some(claims))
            }
            Carrier::GramineLegacy | Carrier::IntelSgxSdk => (value.to_vec(), None),
            Carrier::OpenEnclaveReport | Carrier::OpenEnclaveReportLegacy => {
                let inner = octet_string_contents(value).unwrap_or(value);
                (open_enclave_quote(inner, None)?, None)
            }
            Carrier::OpenEnclaveEvidence | Carrier::OpenEnclaveEvidenceLegacy => (
                open_enclave_quote(value, Some(EvidenceFormat::OeEvidence))?,
                None,
            ),
        };
        let quote = Quote::parse(&quote_bytes);
        let claims = claims_raw.map(Claims::parse).transpose()?;
        let report_data = quote.as_ref().ok().map(|q| *q.report_data());
        let binding = match (&claims, carrier) {
            (Some(claims), _) => claims.binding(report_data.as_ref(), spki_der),
            (None, Carrier::IntelSgxSdk) => {
                // The SDK's legacy extension is bound through the claims of the DICE extension
                // that carries the same quote.
                match dice.iter().find(|(q, _)| *q == quote_bytes) {
                    Some((_, raw)) => {
                        Claims::parse(raw.clone())?.binding(report_data.as_ref(), spki_der)
                    }
                    None => spki_binding(report_data.as_ref(), spki_der),
                }
            }
            (None, carrier) if carrier.is_open_enclave() => {
                oe_binding(report_data.as_ref(), spki_der)
            }
            (None, _) => spki_binding(report_data.as_ref(), spki_der),
        };
        Ok(Self {
            carrier,
            quote_bytes,
            quote,
            claims,
            binding,
        })
    }

    /// The extension that carried it.
    pub fn carrier(&self) -> Carrier {
        self.carrier
    }

    /// The raw quote.
    pub fn quote_bytes(&self) -> &[u8] {
        &self.quote_bytes
    }

    /// The parsed quote, or why it does not parse.
    pub fn quote(&self) -> Result<&Quote, &QuoteError> {
        self.quote.as_ref()
    }

    /// The DICE claims, when the carrier has them.
    pub fn claims(&self) -> Option<&Claims> {
        self.claims.as_ref()
    }

    /// Whether, and how, the quote binds the certificate's key.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }
}

/// The claims of DICE tagged evidence: a CBOR map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    raw: Vec<u8>,
    pubkey_hash: Option<(u64, Vec<u8>)>,
    nonce: Option<Vec<u8>>,
    other: Vec<String>,
}

impl Claims {
    fn parse(raw: Vec<u8>) -> Result<Self, RaTlsError> {
        let Value::Map(entries) = cbor(&raw)? else {
            return Err(RaTlsError::MalformedEvidence(
                "claims are not a CBOR map".into(),
            ));
        };
        let mut pubkey_hash = None;
        let mut nonce = None;
        let mut other = Vec::new();
        for (key, value) in entries {
            let Value::Text(key) = key else {
                return Err(RaTlsError::MalformedEvidence(
                    "a claim key is not text".into(),
                ));
            };
            match (key.as_str(), value) {
                ("pubkey-hash", Value::Bytes(inner)) => {
                    let Value::Array(pair) = cbor(&inner)? else {
                        return Err(RaTlsError::MalformedEvidence(
                            "pubkey-hash is not [alg, hash]".into(),
                        ));
                    };
                    let [Value::Integer(alg), Value::Bytes(hash)] = pair.as_slice() else {
                        return Err(RaTlsError::MalformedEvidence(
                            "pubkey-hash is not [alg, hash]".into(),
                        ));
                    };
                    let alg = u64::try_from(*alg).map_err(|_| {
                        RaTlsError::MalformedEvidence("negative hash algorithm id".into())
                    })?;
                    pubkey_hash = Some((alg, hash.clone()));
                }
                ("nonce", Value::Bytes(bytes)) => nonce = Some(bytes),
                (name, _) => other.push(name.to_owned()),
            }
        }
        Ok(Self {
            raw,
            pubkey_hash,
            nonce,
            other,
        })
    }

    /// The serialized claims (what the report data hashes).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The `pubkey-hash` claim: hash algorithm id and hash.
    pub fn pubkey_hash(&self) -> Option<(u64, &[u8])> {
        self.pubkey_hash
            .as_ref()
            .map(|(alg, hash)| (*alg, hash.as_slice()))
    }

    /// The `nonce` claim.
    pub fn nonce(&self) -> Option<&[u8]> {
        self.nonce.as_deref()
    }

    /// Names of other claims.
    pub fn other(&self) -> &[String] {
        &self.other
    }

    fn binding(&self, report_data: Option<&ReportData>, spki_der: &[u8]) -> Binding {
        let Some(report_data) = report_data else {
            return Binding::Broken("the quote does not parse".into());
        };
        if !report_data_commits_to(report_data, &self.raw) {
            return Binding::Broken("the report data is not the hash of the claims".into());
        }
        let Some((alg, hash)) = &self.pubkey_hash else {
            return Binding::Broken("the claims have no pubkey-hash".into());
        };
        match digest(*alg, spki_der) {
            Some(expected) if expected == *hash => Binding::Holds(BindingKind::ClaimsHash),
            Some(_) => {
                Binding::Broken("pubkey-hash is not the hash of the certificate's key".into())
            }
            None => Binding::Broken(format!("unknown pubkey-hash algorithm {alg}")),
        }
    }
}

/// Whether the quote binds the certificate's public key.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// It does not; the string says why.
    Broken(String),
    /// It does, this way.
    Holds(BindingKind),
}

impl Binding {
    /// Whether the binding holds.
    pub fn holds(&self) -> bool {
        matches!(self, Self::Holds(_))
    }
}

/// How a quote binds a certificate key.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    /// `REPORTDATA` hashes the claims, whose `pubkey-hash` hashes the key.
    ClaimsHash,
    /// `REPORTDATA` is SHA-256 of the public key as Open Enclave writes it (PEM and a NUL),
    /// zero-padded.
    OePemSha256,
    /// `REPORTDATA` is SHA-256 of the SubjectPublicKeyInfo, zero-padded.
    SpkiSha256,
}

impl BindingKind {
    /// A stable name.
    pub fn name(self) -> &'static str {
        match self {
            Self::ClaimsHash => "claims-hash",
            Self::OePemSha256 => "oe-pem-sha256",
            Self::SpkiSha256 => "spki-sha256",
        }
    }
}

fn spki_binding(report_data: Option<&ReportData>, spki_der: &[u8]) -> Binding {
    let Some(report_data) = report_data else {
        return Binding::Broken("the quote does not parse".into());
    };
    let mut expected = [0u8; 64];
    if let Some(head) = expected.get_mut(..32) {
        head.copy_from_slice(&cloak_crypto::hash::sha256(spki_der));
    }
    if report_data.ct_eq(&ReportData(expected)) {
        Binding::Holds(BindingKind::SpkiSha256)
    } else {
        Binding::Broken("the report data is not SHA-256 of the certificate's public key".into())
    }
}

/// What Open Enclave puts in the first half of the report data of an attested-TLS certificate
/// with key `spki_der`: SHA-256 of the key written as `oe_public_key_write_pem` writes it
/// (`-----BEGIN PUBLIC KEY-----`, base64 of the SubjectPublicKeyInfo in 64-column lines, the END
/// line, each line ending in LF) and the NUL that ends OE's buffer.
pub fn open_enclave_key_digest(spki_der: &[u8]) -> [u8; 32] {
    let mut text = pem::encode_config(
        &pem::Pem::new("PUBLIC KEY", spki_der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
    .into_bytes();
    text.push(0);
    cloak_crypto::hash::sha256(&text)
}

/// Open Enclave's binding: [`open_enclave_key_digest`], zero-padded.
fn oe_binding(report_data: Option<&ReportData>, spki_der: &[u8]) -> Binding {
    let Some(report_data) = report_data else {
        return Binding::Broken("the quote does not parse".into());
    };
    let mut expected = [0u8; 64];
    if let Some(head) = expected.get_mut(..32) {
        head.copy_from_slice(&open_enclave_key_digest(spki_der));
    }
    if report_data.ct_eq(&ReportData(expected)) {
        Binding::Holds(BindingKind::OePemSha256)
    } else {
        Binding::Broken(
            "the report data is not SHA-256 of the certificate's public key in PEM with its NUL"
                .into(),
        )
    }
}

/// The quote in an OE extension's value: an OE report, a bare quote, or (`format`) OE evidence.
fn open_enclave_quote(value: &[u8], format: Option<EvidenceFormat>) -> Result<Vec<u8>, RaTlsError> {
    let parsed = match format {
        Some(format) => OeEvidence::parse_as(value, format),
        None => OeEvidence::parse(value),
    };
    match parsed {
        Ok(evidence) => Ok(evidence.quote_bytes().to_vec()),
        // A quote that does not parse is kept, as for the other carriers, to say why.
        Err(EvidenceError::Quote(_)) => Ok(value.to_vec()),
        Err(e) => Err(RaTlsError::MalformedEvidence(e.to_string())),
    }
}

/// The contents of `value` if it is exactly one DER OCTET STRING.
fn octet_string_contents(value: &[u8]) -> Option<&[u8]> {
    use x509_parser::der_parser::ber::BerObjectContent;
    let (rest, object) = x509_parser::der_parser::parse_der(value).ok()?;
    match object.content {
        BerObjectContent::OctetString(contents) if rest.is_empty() => Some(contents),
        _ => None,
    }
}

/// Whether `value` is exactly one DER INTEGER.
fn is_der_integer(value: &[u8]) -> bool {
    use x509_parser::der_parser::ber::BerObjectContent;
    matches!(
        x509_parser::der_parser::parse_der(value),
        Ok((rest, object)) if rest.is_empty() && matches!(object.content, BerObjectContent::Integer(_))
    )
}

/// Whether a certificate's signature verifies under its own key.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelfSignature {
    /// It does not: the certificate was changed after it was signed, or is not self-signed.
    Invalid,
    /// Not checked: an algorithm or key this crate does not verify (the string says which).
    Unchecked(String),
    /// It verifies.
    Valid,
}

impl SelfSignature {
    /// A stable name: `valid`, `invalid` or `unchecked`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Invalid => "invalid",
            Self::Unchecked(_) => "unchecked",
            Self::Valid => "valid",
        }
    }
}

/// Whether `key` is an EC key on P-256 (id-ecPublicKey with the prime256v1 curve).
pub(crate) fn is_p256_key(key: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> bool {
    key.algorithm.algorithm.to_id_string() == OID_EC_PUBLIC_KEY
        && key
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .is_some_and(|oid| oid.to_id_string() == OID_P256)
}

fn self_signature(cert: &X509Certificate<'_>) -> SelfSignature {
    let algorithm = cert.signature_algorithm.algorithm.to_id_string();
    let tbs = cert.tbs_certificate.as_ref();
    let signature = &cert.signature_value.data;
    let result = match algorithm.as_str() {
        OID_ECDSA_WITH_SHA256 => {
            if cert.public_key().algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY {
                return SelfSignature::Unchecked("an ECDSA signature with a non-EC key".into());
            }
            if !is_p256_key(cert.public_key()) {
                return SelfSignature::Unchecked("an EC key on a curve other than P-256".into());
            }
            cloak_crypto::sig::verify(cert.public_key().raw, tbs, signature)
        }
        OID_SHA256_WITH_RSA => {
            // Outside 2048 to 8192 bits nothing is verified (Azure Attestation's 2020
            // certificates have RSA-1024 keys): say so rather than call the signature invalid.
            if let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = cert.public_key().parsed()
                && !(2048..=8192).contains(&rsa.key_size())
            {
                return SelfSignature::Unchecked(format!("an RSA-{} key", rsa.key_size()));
            }
            cloak_crypto::sig::verify_rsa_pkcs1(
                cloak_crypto::sig::RsaHash::Sha256,
                &cert.public_key().subject_public_key.data,
                tbs,
                signature,
            )
        }
        other => return SelfSignature::Unchecked(format!("signature algorithm {other}")),
    };
    match result {
        Ok(()) => SelfSignature::Valid,
        Err(_) => SelfSignature::Invalid,
    }
}

/// `REPORTDATA` = SHA-256, SHA-384 or SHA-512 of `data`, zero-padded to 64 bytes.
fn report_data_commits_to(report_data: &ReportData, data: &[u8]) -> bool {
    let candidates: [Vec<u8>; 3] = [
        cloak_crypto::hash::sha256(data).to_vec(),
        cloak_crypto::hash::sha384(data).to_vec(),
        cloak_crypto::hash::sha512(data).to_vec(),
    ];
    candidates.iter().any(|hash| {
        let mut expected = [0u8; 64];
        if let Some(head) = expected.get_mut(..hash.len()) {
            head.copy_from_slice(hash);
        }
        report_data.ct_eq(&ReportData(expected))
    })
}

fn digest(alg: u64, data: &[u8]) -> Option<Vec<u8>> {
    match alg {
        HASH_SHA256 => Some(cloak_crypto::hash::sha256(data).to_vec()),
        HASH_SHA384 => Some(cloak_crypto::hash::sha384(data).to_vec()),
        HASH_SHA512 => Some(cloak_crypto::hash::sha512(data).to_vec()),
        _ => None,
    }
}

/// `tag(60000)([bstr quote, bstr claims])` → (quote, claims).
fn decode_dice(value: &[u8]) -> Result<(Vec<u8>, Vec<u8>), RaTlsError> {
    let Value::Tag(tag, inner) = cbor(value)? else {
        return Err(RaTlsError::MalformedEvidence(
            "evidence is not a tagged CBOR item".into(),
        ));
    };
    if !CBOR_TAGS_INTEL_QUOTE.contains(&tag) {
        return Err(RaTlsError::MalformedEvidence(format!(
            "CBOR tag {tag} is not an Intel TEE quote tag"
        )));
    }
    match *inner {
        Value::Array(items) => match <[Value; 2]>::try_from(items) {
            Ok([Value::Bytes(quote), Value::Bytes(claims)]) => Ok((quote, claims)),
            _ => Err(RaTlsError::MalformedEvidence(
                "evidence is not [quote, claims]".into(),
            )),
        },
        _ => Err(RaTlsError::MalformedEvidence(
            "evidence is not [quote, claims]".into(),
        )),
    }
}

fn cbor(bytes: &[u8]) -> Result<Value, RaTlsError> {
    ciborium::from_reader(bytes)
        .map_err(|e| RaTlsError::MalformedEvidence(format!("bad CBOR: {e}")))
}

/// Why an RA-TLS certificate could not be read.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaTlsError {
    /// An evidence extension is malformed.
    #[error("malformed evidence: {0}")]
    MalformedEvidence(String),
    /// No evidence extension in the certificate.
    #[error("the certificate carries no attestation evidence extension")]
    NoEvidence,
    /// Not an X.509 certificate.
    #[error("not an X.509 certificate: {0}")]
    NotCertificate(String),
}

impl RaTlsError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedEvidence(_) => "malformed-evidence",
            Self::NoEvidence => "no-evidence",
            Self::NotCertificate(_) => "not-certificate",
        }
    }
}

#[cfg(test)]
mod tests;
