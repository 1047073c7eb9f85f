//! Appraisal: deciding whether a *verified* quote is acceptable to a relying party.
//!
//! Verification ([`crate::verify`]) establishes that a quote is genuine; an [`AppraisalPolicy`]
//! says which genuine quotes a relying party accepts: which trust root, which TCB statuses and
//! advisories, whether debug enclaves are tolerable, which measurements, which report data.
//! Defaults are strict — Intel root, `UpToDate` only, no advisories, debug rejected — and every
//! loosening is explicit.
//!
//! Policies load from TOML (see the crate README for an example):
//!
//! ```toml
//! trust_root = "intel"                # or a path to a DER root (relative to this file) or "sha256:HEX"
//! allowed_tcb_statuses = ["UpToDate"]
//! allowed_advisories = []             # advisory ids, or ["*"]
//! allow_debug = false
//! [sgx]                               # any listed value matches; omitted = not checked
//! mrenclave = ["HEX"]
//! mrsigner = ["HEX"]
//! isv_prod_id = 0
//! min_isv_svn = 0
//! [tdx]
//! mrtd = ["HEX"]
//! ```

mod file;

use std::collections::BTreeSet;
use std::fmt;

use crate::collateral::Collateral;
use crate::maa::VerifiedToken;
use crate::quote::{ReportBody, TdReport10, TeeType};
use crate::types::{Measurement, ReportData};
use crate::verify::{TcbStatus, TrustAnchor, TrustRoot, VerifiedQuote, VerifyError};

pub use self::file::PolicyError;

/// Which root a policy trusts.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustRootPolicy {
    /// A root given as a DER certificate.
    Der(Vec<u8>),
    /// The Intel SGX Root CA.
    Intel,
    /// A root given by the SHA-256 of its DER certificate; the certificate itself is taken from
    /// the chains in the quote and collateral.
    Sha256([u8; 32]),
}

impl TrustRootPolicy {
    /// The trust anchor to verify `quote` and `collateral` under.
    pub fn anchor(
        &self,
        quote: &[u8],
        collateral: &Collateral,
    ) -> Result<TrustAnchor, VerifyError> {
        match self {
            Self::Intel => Ok(TrustAnchor::intel()),
            Self::Der(der) => TrustAnchor::custom(der.clone())
                .map_err(|e| VerifyError::UntrustedRoot(e.to_string())),
            Self::Sha256(pin) => TrustAnchor::pinned(*pin, quote, collateral),
        }
    }

    /// Whether a verification under `root` satisfies this policy.
    pub fn accepts(&self, root: TrustRoot) -> bool {
        match self {
            Self::Intel => root.is_intel(),
            Self::Der(der) => root.sha256() == cloak_crypto::hash::sha256(der),
            Self::Sha256(pin) => root.sha256() == *pin,
        }
    }
}

/// Which advisories a policy tolerates.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdvisoryPolicy {
    /// Any advisory (`["*"]`).
    AllowAny,
    /// Only these advisory ids (none, by default).
    AllowListed(BTreeSet<String>),
}

/// Whether a policy accepts debug enclaves and TDs, whose memory the host can read.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugPolicy {
    /// Accept them (development only).
    Allow,
    /// Reject them (the default).
    Reject,
}

/// Identity an SGX enclave must have. Every field that is set is checked; within a list, any
/// value matches, and an empty list matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SgxIdentityPolicy {
    /// Accepted MRENCLAVE values (`None`: not checked).
    pub mrenclave: Option<Vec<Measurement<32>>>,
    /// Accepted MRSIGNER values (`None`: not checked). Without `isv_prod_id`, every product of
    /// the signer is accepted.
    pub mrsigner: Option<Vec<Measurement<32>>>,
    /// Required ISVPRODID.
    pub isv_prod_id: Option<u16>,
    /// Minimum ISVSVN.
    pub min_isv_svn: Option<u16>,
}

impl SgxIdentityPolicy {
    /// Whether it names an enclave: an MRENCLAVE, or an MRSIGNER with an ISVPRODID (without
    /// one, every product of that signer is accepted).
    pub fn names_enclave(&self) -> bool {
        self.mrenclave.is_some() || (self.mrsigner.is_some() && self.isv_prod_id.is_some())
    }
}

/// Identity a TDX trust domain must have. Every field that is set is checked; within a list,
/// any value matches, and an empty list matches nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TdxIdentityPolicy {
    /// Accepted MRTD values (`None`: not checked).
    pub mrtd: Option<Vec<Measurement<48>>>,
    /// Accepted values of RTMR0 to RTMR3 (`None`: not checked).
    pub rtmr: [Option<Vec<Measurement<48>>>; 4],
    /// Accepted MRCONFIGID values (`None`: not checked).
    pub mr_config_id: Option<Vec<Measurement<48>>>,
}

/// The highest TCB evaluation data number a relying party has seen in collateral that verified,
/// per trust root and TEE type: collateral below it is refused
/// (`tcb-evaluation-data-too-old`).
///
/// Collateral carries the number of the TCB evaluation Intel made it under; a TCB recovery
/// raises it, but collateral from before the recovery stays within its validity window (up to
/// a month) and a host may keep relaying it, so that a platform the recovery downgraded still
/// looks up to date. No fixed number can be right offline for every deployment for long, so
/// Cloak's default is this ratchet: once a relying party has seen a number, it never accepts a
/// lower one — the key broker keeps the floor in its database, a client for its lifetime. An
/// explicit `min_tcb_evaluation_data_number` in a policy applies as well. SGX and TDX are kept
/// apart: Intel numbers their TCB evaluations separately.
#[derive(Debug, Default)]
pub struct EvaluationFloor {
    seen: std::sync::Mutex<std::collections::BTreeMap<([u8; 32], &'static str), u32>>,
}

impl EvaluationFloor {
    /// No number seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The floor for `verified`'s root and TEE (0 before any number was seen).
    pub fn floor_for(&self, verified: &VerifiedQuote) -> u32 {
        self.floor(&verified.trust_root().sha256(), verified.tee())
    }

    /// The floor for the root whose certificate has SHA-256 `root`, and `tee`.
    pub fn floor(&self, root: &[u8; 32], tee: TeeType) -> u32 {
        self.lock()
            .get(&(*root, tee.as_str()))
            .copied()
            .unwrap_or(0)
    }

    /// Refuses `verified` if its collateral is older than the floor.
    pub fn check(&self, verified: &VerifiedQuote) -> Result<(), PolicyViolation> {
        let min = self.floor_for(verified);
        let found = verified.tcb_evaluation_data_number();
        if found < min {
            return Err(PolicyViolation::TcbEvaluationDataTooOld { found, min });
        }
        Ok(())
    }

    /// Raises the floor to `verified`'s number (its collateral verified: the number is Intel's).
    pub fn observe(&self, verified: &VerifiedQuote) {
        self.raise(
            &verified.trust_root().sha256(),
            verified.tee(),
            verified.tcb_evaluation_data_number(),
        );
    }

    /// Raises the floor for `root` and `tee` to `number` (a floor never goes down).
    pub fn raise(&self, root: &[u8; 32], tee: TeeType, number: u32) {
        let mut seen = self.lock();
        let floor = seen.entry((*root, tee.as_str())).or_insert(0);
        *floor = (*floor).max(number);
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<([u8; 32], &'static str), u32>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What a relying party accepts. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppraisalPolicy {
    trust_root: TrustRootPolicy,
    allowed_tcb_statuses: BTreeSet<TcbStatus>,
    advisories: AdvisoryPolicy,
    debug: DebugPolicy,
    sgx: Option<SgxIdentityPolicy>,
    tdx: Option<TdxIdentityPolicy>,
    report_data: Option<ReportData>,
    min_tcb_evaluation_data_number: Option<u32>,
}

impl AppraisalPolicy {
    /// The strict policy: Intel root, `UpToDate` only, no advisories, debug rejected, any
    /// identity and report data.
    pub fn strict() -> Self {
        Self {
            trust_root: TrustRootPolicy::Intel,
            allowed_tcb_statuses: BTreeSet::from([TcbStatus::UpToDate]),
            advisories: AdvisoryPolicy::AllowListed(BTreeSet::new()),
            debug: DebugPolicy::Reject,
            sgx: None,
            tdx: None,
            report_data: None,
            min_tcb_evaluation_data_number: None,
        }
    }

    /// Parses a TOML policy; relative paths in it are resolved against `base_dir` (the policy
    /// file's directory).
    pub fn from_toml(text: &str, base_dir: &std::path::Path) -> Result<Self, PolicyError> {
        file::parse(text, base_dir)
    }

    /// Trust another root.
    pub fn with_trust_root(mut self, root: TrustRootPolicy) -> Self {
        self.trust_root = root;
        self
    }

    /// Also accept `status`.
    pub fn allow_tcb_status(mut self, status: TcbStatus) -> Self {
        self.allowed_tcb_statuses.insert(status);
        self
    }

    /// Also tolerate advisory `id` (`"*"` tolerates any).
    pub fn allow_advisory(mut self, id: &str) -> Self {
        if id == "*" {
            self.advisories = AdvisoryPolicy::AllowAny;
        } else if let AdvisoryPolicy::AllowListed(ids) = &mut self.advisories {
            ids.insert(id.to_owned());
        }
        self
    }

    /// Accept or reject debug enclaves and TDs.
    pub fn with_debug(mut self, debug: DebugPolicy) -> Self {
        self.debug = debug;
        self
    }

    /// Require an SGX enclave with this identity.
    pub fn with_sgx_identity(mut self, identity: SgxIdentityPolicy) -> Self {
        self.sgx = Some(identity);
        self
    }

    /// Require a TD with this identity.
    pub fn with_tdx_identity(mut self, identity: TdxIdentityPolicy) -> Self {
        self.tdx = Some(identity);
        self
    }

    /// Refuse collateral older than this TCB evaluation data number (so that, after a TCB
    /// recovery, older Intel-signed TCB info still inside its validity window is not accepted).
    pub fn with_min_tcb_evaluation_data_number(mut self, min: u32) -> Self {
        self.min_tcb_evaluation_data_number = Some(min);
        self
    }

    /// Require exactly this report data.
    pub fn with_report_data(mut self, report_data: ReportData) -> Self {
        self.report_data = Some(report_data);
        self
    }

    /// Whether the policy names the enclave it accepts: every TEE type it admits is pinned —
    /// SGX by MRENCLAVE, or by MRSIGNER together with ISVPRODID (one product of one signer);
    /// TDX by MRTD. A policy without that accepts any genuine enclave, a rebuilt or hostile
    /// binary included, which is never what an owner of data or of a model means: the broker
    /// refuses such a release policy, and clients refuse to send to a server appraised under
    /// one unless told explicitly.
    pub fn names_identity(&self) -> bool {
        match (&self.sgx, &self.tdx) {
            (None, None) => false,
            (Some(sgx), None) => sgx.names_enclave(),
            (None, Some(tdx)) => tdx.mrtd.is_some(),
            (Some(sgx), Some(tdx)) => sgx.names_enclave() && tdx.mrtd.is_some(),
        }
    }

    /// Whether the policy names an SGX enclave (`[sgx]` as [`SgxIdentityPolicy::names_enclave`]
    /// says), whatever it says of TDX.
    pub fn names_sgx_enclave(&self) -> bool {
        self.sgx
            .as_ref()
            .is_some_and(SgxIdentityPolicy::names_enclave)
    }

    /// The minimum TCB evaluation data number the policy requires, if it sets one.
    pub fn min_tcb_evaluation_data_number(&self) -> Option<u32> {
        self.min_tcb_evaluation_data_number
    }

    /// The trust-root part of the policy.
    pub fn trust_root(&self) -> &TrustRootPolicy {
        &self.trust_root
    }

    /// The SGX identity requirements, if any (for adding to them).
    pub fn sgx_identity_mut(&mut self) -> &mut SgxIdentityPolicy {
        self.sgx.get_or_insert_with(SgxIdentityPolicy::default)
    }

    /// Decides whether `verified` is acceptable.
    pub fn appraise(&self, verified: VerifiedQuote) -> Result<AcceptedQuote, PolicyViolation> {
        if !self.trust_root.accepts(verified.trust_root()) {
            return Err(PolicyViolation::UntrustedRoot {
                found: verified.trust_root(),
            });
        }
        if self.debug == DebugPolicy::Reject && verified.is_debug() {
            return Err(PolicyViolation::DebugEnclave {
                tee: verified.tee(),
            });
        }
        if let Some(min) = self.min_tcb_evaluation_data_number
            && verified.tcb_evaluation_data_number() < min
        {
            return Err(PolicyViolation::TcbEvaluationDataTooOld {
                found: verified.tcb_evaluation_data_number(),
                min,
            });
        }
        let status = verified.tcb_status();
        if !self.allowed_tcb_statuses.contains(&status) {
            return Err(PolicyViolation::TcbStatusNotAllowed { status });
        }
        if let AdvisoryPolicy::AllowListed(allowed) = &self.advisories
            && let Some(id) = verified
                .advisory_ids()
                .iter()
                .find(|id| !allowed.contains(*id))
        {
            return Err(PolicyViolation::AdvisoryNotAllowed { id: id.clone() });
        }
        self.check_identity(verified.quote().body())?;
        if let Some(expected) = &self.report_data
            && !expected.ct_eq(verified.quote().report_data())
        {
            return Err(PolicyViolation::ReportDataMismatch {
                expected: Box::new(*expected),
                found: Box::new(*verified.quote().report_data()),
            });
        }
        Ok(AcceptedQuote { verified })
    }

    /// Decides whether the enclave a verified Azure Attestation token describes is acceptable:
    /// debug, the SGX identity and the report data, exactly as for a quote. The trust-root,
    /// TCB-status, advisory and TCB-evaluation settings do not apply: a token carries no quote
    /// chain and no TCB status — the attestation service appraised those under its own policy,
    /// and pinning its signing keys (the JWKS) and issuer is trusting that appraisal.
    pub fn appraise_token(&self, token: VerifiedToken) -> Result<AcceptedToken, PolicyViolation> {
        let sgx = token.sgx();
        if self.debug == DebugPolicy::Reject && sgx.debug {
            return Err(PolicyViolation::DebugEnclave { tee: TeeType::Sgx });
        }
        self.check_sgx(&sgx.mrenclave, &sgx.mrsigner, sgx.isv_prod_id, sgx.isv_svn)?;
        if let Some(expected) = &self.report_data {
            match &sgx.report_data {
                Some(found) if expected.ct_eq(found) => {}
                Some(found) => {
                    return Err(PolicyViolation::ReportDataMismatch {
                        expected: Box::new(*expected),
                        found: Box::new(*found),
                    });
                }
                None => return Err(PolicyViolation::ReportDataAbsent),
            }
        }
        Ok(AcceptedToken { token })
    }

    fn check_sgx(
        &self,
        mrenclave: &Measurement<32>,
        mrsigner: &Measurement<32>,
        isv_prod_id: u16,
        isv_svn: u16,
    ) -> Result<(), PolicyViolation> {
        if self.sgx.is_none() && self.tdx.is_some() {
            return Err(PolicyViolation::TeeMismatch {
                found: TeeType::Sgx,
            });
        }
        let Some(policy) = &self.sgx else {
            return Ok(());
        };
        one_of("mrenclave", policy.mrenclave.as_deref(), mrenclave)?;
        one_of("mrsigner", policy.mrsigner.as_deref(), mrsigner)?;
        if let Some(expected) = policy.isv_prod_id
            && expected != isv_prod_id
        {
            return Err(PolicyViolation::MeasurementMismatch {
                field: "isv_prod_id",
                detail: format!("expected {expected}, found {isv_prod_id}"),
            });
        }
        if let Some(min) = policy.min_isv_svn
            && isv_svn < min
        {
            return Err(PolicyViolation::MeasurementMismatch {
                field: "isv_svn",
                detail: format!("at least {min} required, found {isv_svn}"),
            });
        }
        Ok(())
    }

    fn check_identity(&self, body: &ReportBody) -> Result<(), PolicyViolation> {
        match body {
            ReportBody::Sgx(report) => self.check_sgx(
                &report.mr_enclave,
                &report.mr_signer,
                report.isv_prod_id,
                report.isv_svn,
            ),
            ReportBody::TdxV10(report) => self.check_td(report),
            ReportBody::TdxV15(report) => self.check_td(&report.base),
            ReportBody::TdxV15Ex(report) => self.check_td(&report.base.base),
        }
    }

    fn check_td(&self, report: &TdReport10) -> Result<(), PolicyViolation> {
        if self.tdx.is_none() && self.sgx.is_some() {
            return Err(PolicyViolation::TeeMismatch {
                found: TeeType::Tdx,
            });
        }
        let Some(policy) = &self.tdx else {
            return Ok(());
        };
        one_of("mrtd", policy.mrtd.as_deref(), &report.mr_td)?;
        for (i, (accepted, found)) in policy.rtmr.iter().zip(&report.rtmr).enumerate() {
            let field = ["rtmr0", "rtmr1", "rtmr2", "rtmr3"]
                .get(i)
                .copied()
                .unwrap_or("rtmr");
            one_of(field, accepted.as_deref(), found)?;
        }
        one_of(
            "mr_config_id",
            policy.mr_config_id.as_deref(),
            &report.mr_config_id,
        )
    }
}

/// Checks `found` against the accepted values: `None` is not checked; an empty list accepts
/// nothing.
fn one_of<const N: usize>(
    field: &'static str,
    accepted: Option<&[Measurement<N>]>,
    found: &Measurement<N>,
) -> Result<(), PolicyViolation> {
    let Some(accepted) = accepted else {
        return Ok(());
    };
    if accepted.contains(found) {
        Ok(())
    } else {
        Err(PolicyViolation::MeasurementMismatch {
            field,
            detail: if accepted.is_empty() {
                format!("found {found}, and the policy accepts none")
            } else {
                format!(
                    "found {found}, expected one of {}",
                    accepted
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        })
    }
}

/// A verified Azure Attestation token whose enclave satisfies an appraisal policy. Only
/// [`AppraisalPolicy::appraise_token`] constructs it.
#[derive(Clone, Debug)]
pub struct AcceptedToken {
    token: VerifiedToken,
}

impl AcceptedToken {
    /// The verified token.
    pub fn token(&self) -> &VerifiedToken {
        &self.token
    }
}

/// A verified quote that satisfies an appraisal policy. Only [`AppraisalPolicy::appraise`]
/// constructs it; APIs that release secrets or accept connections take it as proof.
#[derive(Clone, Debug)]
pub struct AcceptedQuote {
    verified: VerifiedQuote,
}

impl AcceptedQuote {
    /// The verified quote.
    pub fn verified(&self) -> &VerifiedQuote {
        &self.verified
    }
}

/// Why a verified quote is not acceptable. Each variant has a stable [`code`](Self::code).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    /// An advisory applies that the policy does not tolerate.
    #[error("advisory {id} applies to the platform's TCB and is not allowed")]
    AdvisoryNotAllowed {
        /// The advisory id.
        id: String,
    },
    /// The enclave or TD runs in debug mode.
    #[error("the {tee} enclave runs in debug mode: the host can read its memory")]
    DebugEnclave {
        /// The TEE.
        tee: TeeType,
    },
    /// A measurement differs from what the policy requires.
    #[error("{field} does not match: {detail}")]
    MeasurementMismatch {
        /// The field (`mrenclave`, `mrtd`, ...).
        field: &'static str,
        /// Expected and found values.
        detail: String,
    },
    /// The policy requires report data, and the evidence states none.
    #[error("the policy requires report data, and the evidence states none")]
    ReportDataAbsent,
    /// The report data differs from what the policy requires.
    #[error("report data does not match: expected {expected}, found {found}")]
    ReportDataMismatch {
        /// Required.
        expected: Box<ReportData>,
        /// Found.
        found: Box<ReportData>,
    },
    /// The collateral's TCB evaluation data number is below the policy's minimum.
    #[error("TCB evaluation data number {found} is below the required {min}")]
    TcbEvaluationDataTooOld {
        /// The collateral's.
        found: u32,
        /// The policy's minimum.
        min: u32,
    },
    /// The platform's TCB status is not one the policy accepts.
    #[error("TCB status {status} is not allowed")]
    TcbStatusNotAllowed {
        /// The status.
        status: TcbStatus,
    },
    /// The policy names an identity for the other kind of TEE.
    #[error("the quote comes from {found}, but the policy only describes the other TEE type")]
    TeeMismatch {
        /// The quote's TEE.
        found: TeeType,
    },
    /// The quote chained to a root the policy does not trust.
    #[error("the quote chains to root {found}, which the policy does not trust")]
    UntrustedRoot {
        /// The root it chained to.
        found: TrustRoot,
    },
}

impl PolicyViolation {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AdvisoryNotAllowed { .. } => "advisory-not-allowed",
            Self::DebugEnclave { .. } => "debug-enclave",
            Self::MeasurementMismatch { .. } => "measurement-mismatch",
            Self::ReportDataAbsent | Self::ReportDataMismatch { .. } => "report-data-mismatch",
            Self::TcbEvaluationDataTooOld { .. } => "tcb-evaluation-data-too-old",
            Self::TcbStatusNotAllowed { .. } => "tcb-status-not-allowed",
            Self::TeeMismatch { .. } => "tee-mismatch",
            Self::UntrustedRoot { .. } => "untrusted-root",
        }
    }
}

impl fmt::Display for TrustRootPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Der(der) => write!(f, "{}", hex::encode(cloak_crypto::hash::sha256(der))),
            Self::Intel => f.write_str("intel"),
            Self::Sha256(pin) => f.write_str(&hex::encode(pin)),
        }
    }
}

#[cfg(test)]
mod tests;
