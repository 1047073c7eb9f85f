//! Quote collateral: the Intel-signed (or simulation-signed) material a verifier needs besides
//! the quote — TCB info, QE identity, CRLs and the certificate chains that sign them — in
//! dcap-qvl's `QuoteCollateralV3` JSON form.
//!
//! [`Collateral::from_json`] checks the structure strictly (every field present and well-formed,
//! certificates and CRLs parseable) and extracts the dates that bound its validity. It
//! authenticates nothing: [`crate::verify`] does.

use std::time::UNIX_EPOCH;

use serde::Deserialize;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::quote::parse_pem_chain;

/// Parsed, structurally valid collateral.
#[derive(Clone, Debug)]
pub struct Collateral {
    pub(crate) raw: dcap_qvl::QuoteCollateralV3,
    pub(crate) tcb_info: SignedJsonDates,
    pub(crate) qe_identity: SignedJsonDates,
    pub(crate) root_ca_crl: CrlInfo,
    pub(crate) pck_crl: CrlInfo,
    pub(crate) chains: Vec<(&'static str, Vec<Vec<u8>>)>,
}

/// What a signed JSON body (TCB info, QE identity) says about itself.
#[derive(Clone, Debug)]
pub(crate) struct SignedJsonDates {
    pub(crate) id: String,
    /// The format version (TCB info 2 or 3, QE identity 2).
    pub(crate) version: u32,
    pub(crate) issue_date: u64,
    pub(crate) next_update: u64,
    pub(crate) tcb_evaluation_data_number: u32,
}

/// The dates of a CRL.
#[derive(Clone, Debug)]
pub(crate) struct CrlInfo {
    pub(crate) this_update: u64,
    pub(crate) next_update: Option<u64>,
}

impl Collateral {
    /// Parses dcap-qvl `QuoteCollateralV3` JSON.
    pub fn from_json(json: &[u8]) -> Result<Self, CollateralError> {
        let raw: dcap_qvl::QuoteCollateralV3 =
            serde_json::from_slice(json).map_err(|e| CollateralError::Json(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Checks collateral assembled from another encoding (Open Enclave's endorsements) as
    /// strictly as [`Self::from_json`] does.
    pub(crate) fn from_raw(raw: dcap_qvl::QuoteCollateralV3) -> Result<Self, CollateralError> {
        let tcb_info = signed_json_dates("tcb_info", &raw.tcb_info)?;
        let qe_identity = signed_json_dates("qe_identity", &raw.qe_identity)?;
        for (field, signature) in [
            ("tcb_info_signature", &raw.tcb_info_signature),
            ("qe_identity_signature", &raw.qe_identity_signature),
        ] {
            if signature.len() != 64 {
                return Err(CollateralError::Field {
                    field,
                    problem: "must be a 64-byte raw ECDSA P-256 signature (r‖s)".to_owned(),
                });
            }
        }
        let root_ca_crl = crl_info("root_ca_crl", &raw.root_ca_crl)?;
        let pck_crl = crl_info("pck_crl", &raw.pck_crl)?;
        let mut chains = vec![
            (
                "tcb_info_issuer_chain",
                chain("tcb_info_issuer_chain", &raw.tcb_info_issuer_chain)?,
            ),
            (
                "qe_identity_issuer_chain",
                chain("qe_identity_issuer_chain", &raw.qe_identity_issuer_chain)?,
            ),
            (
                "pck_crl_issuer_chain",
                chain("pck_crl_issuer_chain", &raw.pck_crl_issuer_chain)?,
            ),
        ];
        if let Some(pck) = &raw.pck_certificate_chain {
            chains.push((
                "pck_certificate_chain",
                chain("pck_certificate_chain", pck)?,
            ));
        }
        Ok(Self {
            raw,
            tcb_info,
            qe_identity,
            root_ca_crl,
            pck_crl,
            chains,
        })
    }

    /// The TCB info's id (`SGX` or `TDX`).
    pub fn tcb_info_id(&self) -> &str {
        &self.tcb_info.id
    }

    /// The version of Intel's TCB info format (2, as in 2019–2022 collateral, or 3).
    pub fn tcb_info_version(&self) -> u32 {
        self.tcb_info.version
    }

    /// The TCB evaluation data number of the TCB info.
    pub fn tcb_evaluation_data_number(&self) -> u32 {
        self.tcb_info.tcb_evaluation_data_number
    }

    /// The chain of field `name` (`tcb_info_issuer_chain`, `pck_certificate_chain`, ...), DER,
    /// as parsed once when the collateral was read.
    pub(crate) fn chain(&self, name: &str) -> Option<&[Vec<u8>]> {
        self.chains
            .iter()
            .find(|(field, _)| *field == name)
            .map(|(_, chain)| chain.as_slice())
    }

    /// The certificate chains the collateral carries, by field name, as DER certificates.
    pub fn chains(&self) -> impl Iterator<Item = (&'static str, &[Vec<u8>])> {
        self.chains
            .iter()
            .map(|(name, chain)| (*name, chain.as_slice()))
    }

    /// The earliest time at which every dated item in the collateral is valid, and the latest:
    /// issue dates and next-update dates of the TCB info and QE identity, and the this-update and
    /// next-update dates of both CRLs.
    pub fn validity_window(&self) -> (u64, u64) {
        let from = [
            self.tcb_info.issue_date,
            self.qe_identity.issue_date,
            self.root_ca_crl.this_update,
            self.pck_crl.this_update,
        ]
        .into_iter()
        .max()
        .unwrap_or(0);
        let until = [
            Some(self.tcb_info.next_update),
            Some(self.qe_identity.next_update),
            self.root_ca_crl.next_update,
            self.pck_crl.next_update,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(u64::MAX);
        (from, until)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DatedBody {
    /// Absent from version 2 TCB info.
    #[serde(default)]
    id: String,
    version: u32,
    issue_date: String,
    next_update: String,
    tcb_evaluation_data_number: u32,
}

fn signed_json_dates(field: &'static str, body: &str) -> Result<SignedJsonDates, CollateralError> {
    let parsed: DatedBody = serde_json::from_str(body).map_err(|e| CollateralError::Field {
        field,
        problem: e.to_string(),
    })?;
    Ok(SignedJsonDates {
        id: parsed.id,
        version: parsed.version,
        issue_date: rfc3339(field, &parsed.issue_date)?,
        next_update: rfc3339(field, &parsed.next_update)?,
        tcb_evaluation_data_number: parsed.tcb_evaluation_data_number,
    })
}

fn crl_info(field: &'static str, der: &[u8]) -> Result<CrlInfo, CollateralError> {
    let (rest, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| CollateralError::Field {
            field,
            problem: format!("not a DER CRL: {e}"),
        })?;
    if !rest.is_empty() {
        return Err(CollateralError::Field {
            field,
            problem: "bytes after the CRL".to_owned(),
        });
    }
    Ok(CrlInfo {
        this_update: unix(crl.last_update().timestamp()),
        next_update: crl.next_update().map(|t| unix(t.timestamp())),
    })
}

fn chain(field: &'static str, pem: &str) -> Result<Vec<Vec<u8>>, CollateralError> {
    let certs = parse_pem_chain(pem.as_bytes()).map_err(|_| CollateralError::Field {
        field,
        problem: "not a sequence of PEM certificates".to_owned(),
    })?;
    for der in &certs {
        X509Certificate::from_der(der).map_err(|e| CollateralError::Field {
            field,
            problem: format!("a certificate does not parse: {e}"),
        })?;
    }
    Ok(certs)
}

/// Parses an RFC 3339 timestamp (`2025-06-19T10:56:11Z`) into Unix seconds.
pub(crate) fn rfc3339(field: &'static str, text: &str) -> Result<u64, CollateralError> {
    humantime::parse_rfc3339(text)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .ok_or_else(|| CollateralError::Field {
            field,
            problem: format!("bad date {text:?}"),
        })
}

/// ASN.1 times before 1970 count as 0.
pub(crate) fn unix(timestamp: i64) -> u64 {
    u64::try_from(timestamp).unwrap_or(0)
}

/// Why collateral could not be parsed.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CollateralError {
    /// A field is missing its expected content.
    #[error("collateral field {field}: {problem}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The document is not `QuoteCollateralV3` JSON.
    #[error("collateral is not QuoteCollateralV3 JSON: {0}")]
    Json(String),
}

impl CollateralError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        "malformed-collateral"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(path: &str) -> Vec<u8> {
        std::fs::read(format!("{}/testdata/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn every_recorded_collateral_parses_and_its_window_matches_the_record() {
        let expected: serde_json::Value = serde_json::from_slice(&vector("expected.json")).unwrap();
        for v in expected["vectors"].as_array().unwrap() {
            let Some(path) = v["collateral"].as_str() else {
                continue;
            };
            let collateral = Collateral::from_json(&vector(path)).unwrap();
            let (from, until) = collateral.validity_window();
            assert_eq!(from, v["valid_from"].as_u64().unwrap(), "{path}");
            assert_eq!(until, v["valid_until"].as_u64().unwrap(), "{path}");
        }
    }

    #[test]
    fn broken_collateral_is_a_typed_error() {
        let good: serde_json::Value =
            serde_json::from_slice(&vector("dcap-qvl/sgx_quote_collateral.json")).unwrap();
        let cases: [(&str, serde_json::Value); 6] = [
            ("tcb_info", serde_json::json!("{}")),
            ("tcb_info_signature", serde_json::json!("abcd")),
            ("root_ca_crl", serde_json::json!("3082")),
            ("pck_crl_issuer_chain", serde_json::json!("not pem")),
            (
                "qe_identity",
                serde_json::json!("{\"id\":\"QE\",\"issueDate\":\"yesterday\"}"),
            ),
            ("pck_crl", serde_json::json!(12)),
        ];
        for (field, value) in cases {
            let mut broken = good.clone();
            broken[field] = value;
            let err = Collateral::from_json(&serde_json::to_vec(&broken).unwrap()).unwrap_err();
            assert_eq!(err.code(), "malformed-collateral", "{field}: {err}");
        }
        assert!(Collateral::from_json(b"[]").is_err());
        assert!(Collateral::from_json(b"").is_err());
    }
}
