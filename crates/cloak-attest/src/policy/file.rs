//! The TOML form of an [`AppraisalPolicy`]. Unknown keys are errors: a misspelt key must never
//! silently loosen or skip a check.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;

use super::{
    AdvisoryPolicy, AppraisalPolicy, DebugPolicy, SgxIdentityPolicy, TdxIdentityPolicy,
    TrustRootPolicy,
};
use crate::types::{HexError, Measurement, ReportData, parse_hex};
use crate::verify::{TcbStatus, TrustAnchor};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    trust_root: Option<String>,
    allowed_tcb_statuses: Option<Vec<String>>,
    allowed_advisories: Option<Vec<String>>,
    allow_debug: Option<bool>,
    report_data: Option<String>,
    min_tcb_evaluation_data_number: Option<u32>,
    sgx: Option<SgxSection>,
    tdx: Option<TdxSection>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SgxSection {
    mrenclave: Option<Vec<String>>,
    mrsigner: Option<Vec<String>>,
    isv_prod_id: Option<u16>,
    min_isv_svn: Option<u16>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TdxSection {
    mrtd: Option<Vec<String>>,
    rtmr0: Option<Vec<String>>,
    rtmr1: Option<Vec<String>>,
    rtmr2: Option<Vec<String>>,
    rtmr3: Option<Vec<String>>,
    mr_config_id: Option<Vec<String>>,
}

pub(super) fn parse(text: &str, base_dir: &Path) -> Result<AppraisalPolicy, PolicyError> {
    let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
    let mut policy = AppraisalPolicy::strict();
    if let Some(root) = file.trust_root {
        policy.trust_root = trust_root(&root, base_dir)?;
    }
    if let Some(statuses) = file.allowed_tcb_statuses {
        policy.allowed_tcb_statuses = statuses
            .iter()
            .map(|s| s.parse::<TcbStatus>())
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(|e| PolicyError::Value {
                key: "allowed_tcb_statuses",
                problem: e.to_string(),
            })?;
    }
    if let Some(ids) = file.allowed_advisories {
        policy.advisories = if ids.iter().any(|id| id == "*") {
            AdvisoryPolicy::AllowAny
        } else {
            AdvisoryPolicy::AllowListed(ids.into_iter().collect())
        };
    }
    if let Some(allow) = file.allow_debug {
        policy.debug = if allow {
            DebugPolicy::Allow
        } else {
            DebugPolicy::Reject
        };
    }
    if let Some(hex) = file.report_data {
        policy.report_data = Some(ReportData(value("report_data", &hex)?));
    }
    policy.min_tcb_evaluation_data_number = file.min_tcb_evaluation_data_number;
    if let Some(sgx) = file.sgx {
        policy.sgx = Some(SgxIdentityPolicy {
            mrenclave: list("sgx.mrenclave", sgx.mrenclave)?,
            mrsigner: list("sgx.mrsigner", sgx.mrsigner)?,
            isv_prod_id: sgx.isv_prod_id,
            min_isv_svn: sgx.min_isv_svn,
        });
    }
    if let Some(tdx) = file.tdx {
        policy.tdx = Some(TdxIdentityPolicy {
            mrtd: list("tdx.mrtd", tdx.mrtd)?,
            rtmr: [
                list("tdx.rtmr0", tdx.rtmr0)?,
                list("tdx.rtmr1", tdx.rtmr1)?,
                list("tdx.rtmr2", tdx.rtmr2)?,
                list("tdx.rtmr3", tdx.rtmr3)?,
            ],
            mr_config_id: list("tdx.mr_config_id", tdx.mr_config_id)?,
        });
    }
    Ok(policy)
}

/// `intel`, `sha256:HEX`, or a path to a DER certificate (relative to `base_dir`).
fn trust_root(text: &str, base_dir: &Path) -> Result<TrustRootPolicy, PolicyError> {
    if text == "intel" {
        return Ok(TrustRootPolicy::Intel);
    }
    if let Some(hex) = text.strip_prefix("sha256:") {
        return Ok(TrustRootPolicy::Sha256(value("trust_root", hex)?));
    }
    let path = base_dir.join(text);
    let der = std::fs::read(&path).map_err(|e| PolicyError::Value {
        key: "trust_root",
        problem: format!("cannot read {}: {e}", path.display()),
    })?;
    TrustAnchor::custom(der.clone()).map_err(|e| PolicyError::Value {
        key: "trust_root",
        problem: format!("{}: {e}", path.display()),
    })?;
    Ok(TrustRootPolicy::Der(der))
}

/// An optional list of hex measurements: absent stays `None` (not checked); `[]` is an empty
/// list, which accepts nothing.
fn list<const N: usize>(
    key: &'static str,
    values: Option<Vec<String>>,
) -> Result<Option<Vec<Measurement<N>>>, PolicyError> {
    values
        .map(|values| {
            values
                .iter()
                .map(|hex| value(key, hex).map(Measurement))
                .collect()
        })
        .transpose()
}

fn value<const N: usize>(key: &'static str, hex: &str) -> Result<[u8; N], PolicyError> {
    parse_hex(hex).map_err(|e: HexError| PolicyError::Value {
        key,
        problem: e.to_string(),
    })
}

/// A policy file that cannot be used.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not valid TOML, or a key this version does not know.
    #[error("policy syntax: {0}")]
    Syntax(String),
    /// A key's value is invalid.
    #[error("policy key {key}: {problem}")]
    Value {
        /// The key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}
