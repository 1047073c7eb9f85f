//! The key broker protocol (`cloak kbs serve`), modelled on Trustee's RCAR handshake: a server
//! running in a TEE asks for a model's key, proves what it is, and receives the key encrypted to
//! an ephemeral HPKE key that only it holds.
//!
//! ```text
//! server                                              broker
//!   POST /kbs/v1/challenge {model}              ─────▶  nonce: 32 random bytes, single use,
//!                                               ◀─────  {nonce, expires}    expires in 60 s
//!   ephemeral HPKE key pair (X25519)
//!   quote over release_report_data(nonce, pk)
//!   POST /kbs/v1/release {nonce, evidence,      ─────▶  takes the nonce (single use, unexpired),
//!        collateral, ephemeral_key}                     verifies quote + collateral, appraises it
//!                                                       under the model's policy with the report
//!                                                       data required to be exactly
//!                                                       release_report_data(nonce, ephemeral_key),
//!                                                       appends an audit record, and
//!                                               ◀─────  {model, key_id, enc, sealed_key}
//! ```
//!
//! `sealed_key` is the 32-byte model key sealed with HPKE base mode (DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, AES-256-GCM) to `ephemeral_key`, with `info` = [`release_info`]`(model)` and
//! `aad` = the nonce. Binary fields are standard base64; `collateral` is dcap-qvl
//! `QuoteCollateralV3` JSON, inline. Errors are `{"error": CODE, "message": TEXT}` with the
//! status of [`ErrorBody`]'s code (see the broker's README).

pub mod fleet;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Length of a broker nonce.
pub const NONCE_LEN: usize = 32;
/// Length of an ephemeral X25519 public key.
pub const EPHEMERAL_KEY_LEN: usize = 32;
/// Domain separator of the release report data and of the HPKE `info`.
pub const RELEASE_DOMAIN: &[u8] = b"cloak-kbs-release/v1";

/// `POST /kbs/v1/challenge`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The model whose key the caller will ask for.
    pub model: String,
}

/// The answer to a challenge.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeResponse {
    /// The nonce the evidence must bind ([`NONCE_LEN`] bytes).
    #[serde(with = "crate::base64_bytes")]
    pub nonce: Vec<u8>,
    /// When the nonce stops being accepted (Unix seconds).
    pub expires: u64,
}

/// [`ReleaseRequest::evidence_format`] of a DCAP quote with its collateral.
pub const EVIDENCE_DCAP_QUOTE: &str = "dcap-quote";
/// [`ReleaseRequest::evidence_format`] of an Azure Attestation token.
pub const EVIDENCE_MAA_TOKEN: &str = "maa-token";

/// `POST /kbs/v1/release`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The nonce from the challenge.
    #[serde(with = "crate::base64_bytes")]
    pub nonce: Vec<u8>,
    /// What `evidence` is: [`EVIDENCE_DCAP_QUOTE`] (the default, when absent) or
    /// [`EVIDENCE_MAA_TOKEN`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_format: Option<String>,
    /// A quote, whose report data is [`release_report_data`]`(nonce, ephemeral_key)`; or an
    /// Azure Attestation token whose enclave-held data (`x-ms-sgx-ehd`) is those 64 bytes (the
    /// quote it attested then has their SHA-256 as its report data).
    #[serde(with = "crate::base64_bytes")]
    pub evidence: Vec<u8>,
    /// The collateral for the quote (dcap-qvl `QuoteCollateralV3` JSON); `null` with a token.
    pub collateral: Box<RawValue>,
    /// The X25519 public key the model key is to be sealed to.
    #[serde(with = "crate::base64_bytes")]
    pub ephemeral_key: Vec<u8>,
}

/// A released key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseResponse {
    /// The model the key is for.
    pub model: String,
    /// The key's public id (hex), as in the model's container header.
    pub key_id: String,
    /// The HPKE encapsulated key.
    #[serde(with = "crate::base64_bytes")]
    pub enc: Vec<u8>,
    /// The model key, HPKE-sealed to the ephemeral key.
    #[serde(with = "crate::base64_bytes")]
    pub sealed_key: Vec<u8>,
    /// When the release lapses (Unix seconds, the broker's clock): the server may use the key
    /// until then, and must confirm it with a new release before then to go on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_expires: Option<u64>,
}

/// An error answer: a stable code and a sentence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code (`measurement-mismatch`, `nonce-unknown`, `unauthorized`, ...).
    pub error: String,
    /// A sentence for people.
    pub message: String,
}

/// `PUT /kbs/v1/admin/models/{name}`: register a model's key and policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddModelRequest {
    /// The 32-byte model key.
    #[serde(with = "crate::base64_bytes")]
    pub key: Vec<u8>,
    /// The release policy (the appraisal policy TOML; `trust_root` is `intel` or `sha256:HEX`).
    pub policy: String,
}

/// `PUT /kbs/v1/admin/models/{name}/policy`: replace a model's policy.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetPolicyRequest {
    /// The new release policy.
    pub policy: String,
}

/// One audit record, as `GET /kbs/v1/admin/audit` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Position in the log, from 1, without gaps.
    pub seq: u64,
    /// When (Unix seconds).
    pub time: u64,
    /// `release`, `add-model`, `set-policy` or `remove-model`.
    pub event: String,
    /// The model concerned.
    pub model: String,
    /// `granted` or `denied` for releases; `done` or `denied` for administration.
    pub decision: String,
    /// The stable reason code (`granted`, `measurement-mismatch`, `debug-enclave`, ...).
    pub reason: String,
    /// The caller's address.
    pub client: String,
    /// What the evidence said, when it could be read: `tee`, `mrenclave`, `mrsigner`,
    /// `isv_prod_id`, `isv_svn`, `debug`, `tcb_status`, `trust_root` (hex or text).
    pub measurements: std::collections::BTreeMap<String, String>,
    /// The previous record's `hash` (hex; 64 zeros for the first).
    pub prev: String,
    /// This record's chain hash (hex): HMAC-SHA256 under the broker's audit key of `prev` and
    /// this record's other fields.
    pub hash: String,
}

/// `GET /kbs/v1/admin/audit`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditResponse {
    /// The records of this page (`?after=SEQ&limit=N`: those after `SEQ`, at most `N`), oldest
    /// first.
    pub records: Vec<AuditRecord>,
    /// The broker's check of the whole chain (with `?verify=true`).
    pub verification: Option<AuditVerification>,
    /// The `after` of the next page, when this one was full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// The result of checking the audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditVerification {
    /// Whether every record is intact and in place.
    pub intact: bool,
    /// How many records were checked.
    pub records: u64,
    /// The last record's hash (note it to detect a later truncation).
    pub head: String,
    /// The first record that fails, if any.
    pub first_bad_seq: Option<u64>,
    /// Why it fails (`edited`, `missing`, `reordered`, ...).
    pub problem: Option<String>,
}

/// The report data a release quote must carry:
/// `SHA-512(RELEASE_DOMAIN ‖ 0x00 ‖ len(nonce) as u8 ‖ nonce ‖ ephemeral_key)`.
pub fn release_report_data(nonce: &[u8], ephemeral_key: &[u8; EPHEMERAL_KEY_LEN]) -> [u8; 64] {
    let mut input = Vec::with_capacity(
        RELEASE_DOMAIN
            .len()
            .saturating_add(2)
            .saturating_add(nonce.len())
            .saturating_add(EPHEMERAL_KEY_LEN),
    );
    input.extend_from_slice(RELEASE_DOMAIN);
    input.push(0);
    input.push(u8::try_from(nonce.len()).unwrap_or(u8::MAX));
    input.extend_from_slice(nonce);
    input.extend_from_slice(ephemeral_key);
    cloak_crypto::hash::sha512(&input)
}

/// The HPKE `info` of a key release: `RELEASE_DOMAIN ‖ 0x00 ‖ model`.
pub fn release_info(model: &str) -> Vec<u8> {
    let mut info = RELEASE_DOMAIN.to_vec();
    info.push(0);
    info.extend_from_slice(model.as_bytes());
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_binds_nonce_and_key() {
        let a = release_report_data(&[1; 32], &[2; 32]);
        assert_ne!(a, release_report_data(&[1; 31], &[2; 32]));
        assert_ne!(a, release_report_data(&[3; 32], &[2; 32]));
        assert_ne!(a, release_report_data(&[1; 32], &[3; 32]));
        assert_eq!(a, release_report_data(&[1; 32], &[2; 32]));
        assert_ne!(release_info("a"), release_info("b"));
    }

    #[test]
    fn release_request_round_trips_and_refuses_unknown_fields() {
        let request = ReleaseRequest {
            evidence_format: None,
            nonce: vec![1; 32],
            evidence: vec![3, 0, 2],
            collateral: RawValue::from_string(r#"{"a":1}"#.into()).unwrap(),
            ephemeral_key: vec![9; 32],
        };
        let json = serde_json::to_string(&request).unwrap();
        let back: ReleaseRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.nonce, request.nonce);
        assert_eq!(back.collateral.get(), r#"{"a":1}"#);
        let extra = json.replacen('{', r#"{"policy":"lax","#, 1);
        assert!(serde_json::from_str::<ReleaseRequest>(&extra).is_err());
    }
}
