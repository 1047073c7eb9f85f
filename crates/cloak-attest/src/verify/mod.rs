//! Cryptographic verification of a DCAP quote against its collateral and a trust anchor.
//!
//! [`Verifier::verify`] answers one question: is this quote genuine, from a platform whose TCB
//! the collateral describes, chained to the trust anchor, at time `now`? It decides nothing about
//! *which* enclave or TD is acceptable, or which TCB statuses are: that is the job of
//! [`crate::policy::AppraisalPolicy`], which takes the [`VerifiedQuote`] this returns.
//!
//! The cryptographic core is `dcap-qvl` (PCK chain to the anchor with CRLs, TCB info and QE
//! identity signatures, QE report signature and binding, quote signature, TCB level matching).
//! Around it this module adds strict parsing, an explicit trust anchor whose identity every
//! result records, its own checks of the collateral's time window (including CRL `thisUpdate`,
//! which dcap-qvl does not check) and of the QE report data's upper half, and typed errors with
//! stable codes. Debug enclaves are *not* rejected here: whether debug is acceptable is policy,
//! and a verified debug quote says so in [`VerifiedQuote::is_debug`].

mod classify;
mod tcb_v2;

use std::fmt;
use std::str::FromStr;

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::collateral::{Collateral, CollateralError, unix};
use crate::quote::{Quote, QuoteError, TeeType};

/// The Intel SGX Root CA (production), DER.
const INTEL_ROOT_DER: &[u8] = include_bytes!("../intel_sgx_root_ca.der");

/// SHA-256 of the Intel SGX Root CA certificate built into this crate: the pin every use of the
/// Intel anchor checks.
pub const INTEL_ROOT_SHA256: [u8; 32] = [
    0x44, 0xa0, 0x19, 0x6b, 0x2b, 0x99, 0xf8, 0x89, 0xb8, 0xe1, 0x49, 0xe9, 0x5b, 0x80, 0x7a, 0x35,
    0x0e, 0x74, 0x24, 0x96, 0x43, 0x99, 0xe8, 0x85, 0xa7, 0xcb, 0xb8, 0xcc, 0xfa, 0xb6, 0x74, 0xd3,
];

/// ecdsa-with-SHA256 (1.2.840.10045.4.3.2), the algorithm of every Intel SGX PKI signature.
const ECDSA_WITH_SHA256: x509_parser::der_parser::Oid<'static> =
    x509_parser::der_parser::oid!(1.2.840.10045.4.3.2);

/// The root certificate that quotes and collateral must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustAnchor {
    der: Vec<u8>,
    root: TrustRoot,
    simulated: bool,
}

impl TrustAnchor {
    /// The Intel SGX Root CA, the production anchor (pinned by SHA-256).
    pub fn intel() -> Self {
        Self {
            der: INTEL_ROOT_DER.to_vec(),
            root: TrustRoot::Intel,
            simulated: false,
        }
    }

    /// Another root, passed explicitly (a simulation root, or a test PKI). Every result
    /// verified under it says so by carrying the root's SHA-256.
    pub fn custom(der: Vec<u8>) -> Result<Self, AnchorError> {
        let sha256 = cloak_crypto::hash::sha256(&der);
        if sha256 == INTEL_ROOT_SHA256 {
            return Ok(Self::intel());
        }
        let (rest, cert) = X509Certificate::from_der(&der).map_err(|_| AnchorError::NotDer)?;
        if !rest.is_empty() {
            return Err(AnchorError::NotDer);
        }
        if cert.subject().as_raw() != cert.issuer().as_raw() {
            return Err(AnchorError::NotSelfSigned);
        }
        let simulated = cert
            .subject()
            .iter_common_name()
            .chain(cert.subject().iter_organization())
            .filter_map(|attr| attr.as_str().ok())
            .any(|name| name.contains("SIMULATED"));
        Ok(Self {
            der,
            root: TrustRoot::Custom(sha256),
            simulated,
        })
    }

    /// The self-signed certificate with SHA-256 `pin` among the chains of the quote and its
    /// collateral: for policies that pin a root by hash rather than ship its certificate.
    pub fn pinned(
        pin: [u8; 32],
        quote: &[u8],
        collateral: &Collateral,
    ) -> Result<Self, VerifyError> {
        if pin == INTEL_ROOT_SHA256 {
            return Ok(Self::intel());
        }
        let quote_chain = Quote::parse(quote)
            .ok()
            .and_then(|q| q.signature().certification.pck_chain().map(<[_]>::to_vec))
            .unwrap_or_default();
        let found = collateral
            .chains()
            .flat_map(|(_, chain)| chain.iter())
            .chain(quote_chain.iter())
            .find(|der| cloak_crypto::hash::sha256(der) == pin);
        match found {
            Some(der) => {
                Self::custom(der.clone()).map_err(|e| VerifyError::UntrustedRoot(e.to_string()))
            }
            None => Err(VerifyError::UntrustedRoot(format!(
                "no certificate in the quote or collateral has the pinned SHA-256 {}",
                hex::encode(pin)
            ))),
        }
    }

    /// Which root this is.
    pub fn root(&self) -> TrustRoot {
        self.root
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Whether `der` is this root: the same certificate, or another issue of it — the same name
    /// and key, signed by that key. Intel reissued its SGX Root CA (2018 certificates with
    /// BasicConstraints path length 0 and 1, then the one valid to 2049) without changing its
    /// key, and 2019–2021 quotes carry the older issues; what a chain's signatures prove is the
    /// key, so trust follows the key. The self-signature must verify, so a copy with any byte
    /// changed is still refused; the path itself is always built to this anchor's certificate,
    /// never to the copy a chain carries.
    pub fn is_same_root(&self, der: &[u8]) -> bool {
        if der == self.der {
            return true;
        }
        let (Ok((_, ours)), Ok((rest, theirs))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(der),
        ) else {
            return false;
        };
        let key = ours.tbs_certificate.subject_pki.raw;
        rest.is_empty()
            && theirs.subject().as_raw() == theirs.issuer().as_raw()
            && theirs.subject().as_raw() == ours.subject().as_raw()
            && theirs.tbs_certificate.subject_pki.raw == key
            && theirs.signature_algorithm.algorithm == ECDSA_WITH_SHA256
            && cloak_crypto::sig::verify(
                key,
                theirs.tbs_certificate.as_ref(),
                &theirs.signature_value.data,
            )
            .is_ok()
    }

    /// Whether this is a simulation root (its name says SIMULATED, as `cloak sim` roots do):
    /// evidence chained to it comes from no real TEE.
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }
}

/// Which root a verification chained to.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TrustRoot {
    /// A root other than Intel's, identified by the SHA-256 of its DER certificate.
    Custom([u8; 32]),
    /// The Intel SGX Root CA.
    Intel,
}

impl TrustRoot {
    /// Whether this is Intel's production root.
    pub fn is_intel(self) -> bool {
        matches!(self, Self::Intel)
    }

    /// The SHA-256 of the root certificate.
    pub fn sha256(self) -> [u8; 32] {
        match self {
            Self::Custom(sha256) => sha256,
            Self::Intel => INTEL_ROOT_SHA256,
        }
    }
}

impl fmt::Display for TrustRoot {
    /// `intel`, or the hex SHA-256 of a custom root.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Custom(sha256) => f.write_str(&hex::encode(sha256)),
            Self::Intel => f.write_str("intel"),
        }
    }
}

/// A certificate that cannot serve as a trust anchor.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnchorError {
    /// Not a DER certificate.
    #[error("the trust root is not a DER X.509 certificate")]
    NotDer,
    /// Not a self-signed root.
    #[error("the trust root is not a self-signed root certificate")]
    NotSelfSigned,
}

/// A platform's TCB status, as Intel's TCB info rates it.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TcbStatus {
    /// The platform needs configuration changes (e.g. disable hyper-threading).
    ConfigurationAndSwHardeningNeeded,
    /// Configuration needed.
    ConfigurationNeeded,
    /// The TCB is out of date: microcode or firmware updates exist.
    OutOfDate,
    /// Out of date, and configuration needed.
    OutOfDateConfigurationNeeded,
    /// The platform's keys are compromised.
    Revoked,
    /// Software hardening needed (mitigations the enclave software must apply).
    SwHardeningNeeded,
    /// TDX 1.5: the TD launched on an older TCB; relaunching it would pick up updates.
    TdRelaunchAdvised,
    /// TDX 1.5: relaunch advised, and configuration needed.
    TdRelaunchAdvisedConfigurationNeeded,
    /// Fully up to date.
    UpToDate,
}

impl TcbStatus {
    /// Intel's name for the status (`UpToDate`, `SWHardeningNeeded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfigurationAndSwHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            Self::ConfigurationNeeded => "ConfigurationNeeded",
            Self::OutOfDate => "OutOfDate",
            Self::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            Self::Revoked => "Revoked",
            Self::SwHardeningNeeded => "SWHardeningNeeded",
            Self::TdRelaunchAdvised => "TDRelaunchAdvised",
            Self::TdRelaunchAdvisedConfigurationNeeded => "TDRelaunchAdvisedConfigurationNeeded",
            Self::UpToDate => "UpToDate",
        }
    }

    /// Every status.
    pub const ALL: [Self; 9] = [
        Self::ConfigurationAndSwHardeningNeeded,
        Self::ConfigurationNeeded,
        Self::OutOfDate,
        Self::OutOfDateConfigurationNeeded,
        Self::Revoked,
        Self::SwHardeningNeeded,
        Self::TdRelaunchAdvised,
        Self::TdRelaunchAdvisedConfigurationNeeded,
        Self::UpToDate,
    ];
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TcbStatus {
    type Err = UnknownTcbStatus;

    /// Intel's names, matched without regard to case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownTcbStatus(s.to_owned()))
    }
}

/// A TCB status name that is not one of Intel's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown TCB status {0:?} (known: UpToDate, SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded, Revoked, TDRelaunchAdvised, TDRelaunchAdvisedConfigurationNeeded)"
)]
pub struct UnknownTcbStatus(pub String);

/// Verifies quotes against one trust anchor.
#[derive(Clone, Debug)]
pub struct Verifier {
    anchor: TrustAnchor,
}

impl Verifier {
    /// A verifier that accepts only chains to `anchor`.
    pub fn new(anchor: TrustAnchor) -> Self {
        Self { anchor }
    }

    /// The anchor.
    pub fn anchor(&self) -> &TrustAnchor {
        &self.anchor
    }

    /// Verifies `quote` with `collateral` at `now` (Unix seconds).
    ///
    /// Collateral with Intel's TCB info version 3 is verified by dcap-qvl. Version 2 (SGX
    /// collateral of 2019–2022, as Open Enclave endorsements hold), which dcap-qvl cannot read,
    /// is verified by this crate's own core, held to dcap-qvl's verdicts by a differential test
    /// (see the crate README).
    pub fn verify(
        &self,
        quote: &[u8],
        collateral: &Collateral,
        now: u64,
    ) -> Result<VerifiedQuote, VerifyError> {
        let core = if collateral.tcb_info_version() == 2 {
            Core::Own
        } else {
            Core::DcapQvl
        };
        self.verify_with(quote, collateral, now, core)
    }

    fn verify_with(
        &self,
        quote: &[u8],
        collateral: &Collateral,
        now: u64,
        core: Core,
    ) -> Result<VerifiedQuote, VerifyError> {
        // Which root the collateral chains to is known before the quote is even parsed.
        let mut chains: Vec<(&str, &[Vec<u8>])> = collateral.chains().collect();
        self.check_roots(&chains)?;
        let parsed = Quote::parse(quote).map_err(VerifyError::Quote)?;
        if let Some(chain) = parsed.signature().certification.pck_chain() {
            self.check_quote_chain(chain)?;
            // dcap-qvl prefers the collateral's PCK chain; the quote's must then be the same.
            if let Some((_, supplied)) = chains.iter().find(|(n, _)| *n == "pck_certificate_chain")
                && *supplied != chain
            {
                return Err(VerifyError::CollateralMismatch(
                    "the collateral's pck_certificate_chain differs from the quote's".to_owned(),
                ));
            }
            chains.push(("quote PCK certificate chain", chain));
        }
        let window = check_window(collateral, &chains, now)?;

        let appraisal = if core == Core::Own {
            tcb_v2::verify(&self.anchor.der, quote, &parsed, collateral, now)?
        } else {
            let verifier = dcap_qvl::verify::QuoteVerifier::new(self.anchor.der.clone())
                // Debug is appraisal policy, not authenticity: see the module documentation.
                .allow_debug(true);
            let report = verifier
                .verify(quote, &collateral.raw, now)
                .map_err(|e| classify::classify(&e))?;
            let status = |text: &str| {
                TcbStatus::from_str(text)
                    .map_err(|e| VerifyError::MalformedCollateral(e.to_string()))
            };
            tcb_v2::Appraisal {
                tcb_status: status(&report.status)?,
                platform_tcb_status: status(&report.platform_status.status.to_string())?,
                qe_tcb_status: status(&report.qe_status.status.to_string())?,
                advisory_ids: report.advisory_ids,
            }
        };

        // dcap-qvl checks the lower half of the QE report data; Intel's QE zeroes the upper half.
        let qe_data = parsed.signature().qe_report.report_data.as_bytes();
        if qe_data
            .get(32..)
            .is_some_and(|upper| upper.iter().any(|&b| b != 0))
        {
            return Err(VerifyError::QeReportDataMismatch(
                "the upper 32 bytes of the QE report data are not zero".to_owned(),
            ));
        }
        Ok(VerifiedQuote {
            quote: parsed,
            trust_root: self.anchor.root,
            simulated: self.anchor.simulated,
            tcb_status: appraisal.tcb_status,
            platform_tcb_status: appraisal.platform_tcb_status,
            qe_tcb_status: appraisal.qe_tcb_status,
            advisory_ids: appraisal.advisory_ids,
            collateral_window: window,
            tcb_evaluation_data_number: collateral.tcb_evaluation_data_number(),
            verified_at: now,
        })
    }

    /// Every self-signed certificate a chain carries must be the anchor (chains usually end
    /// with the root, but some put it first, and some leave it out).
    fn check_roots(&self, chains: &[(&str, &[Vec<u8>])]) -> Result<(), VerifyError> {
        for (name, chain) in chains {
            for der in *chain {
                let Ok((_, cert)) = X509Certificate::from_der(der) else {
                    return Err(VerifyError::MalformedCollateral(format!(
                        "{name}: a certificate does not parse"
                    )));
                };
                if cert.subject().as_raw() == cert.issuer().as_raw()
                    && !self.anchor.is_same_root(der)
                {
                    return Err(VerifyError::UntrustedRoot(format!(
                        "{name} carries root {} ({}), not the trust anchor {}",
                        hex::encode(cloak_crypto::hash::sha256(der)),
                        cert.subject(),
                        self.anchor.root
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Verifier {
    /// A quote's PCK chain is exactly the PCK certificate, its CA and the root, and the root is
    /// the anchor: nothing in the quote goes unverified.
    fn check_quote_chain(&self, chain: &[Vec<u8>]) -> Result<(), VerifyError> {
        let [_leaf, _ca, root] = chain else {
            return Err(VerifyError::Quote(QuoteError::InvalidPckChain));
        };
        if !self.anchor.is_same_root(root) {
            return Err(VerifyError::UntrustedRoot(format!(
                "the quote's PCK chain ends in {}, not the trust anchor {}",
                hex::encode(cloak_crypto::hash::sha256(root)),
                self.anchor.root
            )));
        }
        Ok(())
    }
}

/// Which implementation runs the cryptographic core of a verification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Core {
    /// dcap-qvl (TCB info version 3: every TDX quote, SGX collateral since 2022).
    DcapQvl,
    /// [`tcb_v2`] (SGX with TCB info version 2; version 3 too, for the differential tests).
    Own,
}

/// The window in which the collateral and every certificate are valid; an error if `now` is
/// outside it.
fn check_window(
    collateral: &Collateral,
    chains: &[(&str, &[Vec<u8>])],
    now: u64,
) -> Result<(u64, u64), VerifyError> {
    let (mut from, mut until) = collateral.validity_window();
    for (_, chain) in chains {
        for der in *chain {
            if let Ok((_, cert)) = X509Certificate::from_der(der) {
                from = from.max(unix(cert.validity().not_before.timestamp()));
                until = until.min(unix(cert.validity().not_after.timestamp()));
            }
        }
    }
    if now < from {
        return Err(VerifyError::CollateralNotYetValid(format!(
            "verification time {now} is before {from}, when the last of it became valid"
        )));
    }
    if now > until {
        return Err(VerifyError::CollateralExpired(format!(
            "verification time {now} is after {until}, when the first of it expired"
        )));
    }
    Ok((from, until))
}

/// A quote that verified: genuine, chained to the trust anchor, with the TCB status the
/// collateral gives its platform. Only [`Verifier::verify`] constructs it.
#[derive(Clone, Debug)]
pub struct VerifiedQuote {
    quote: Quote,
    trust_root: TrustRoot,
    simulated: bool,
    tcb_status: TcbStatus,
    platform_tcb_status: TcbStatus,
    qe_tcb_status: TcbStatus,
    advisory_ids: Vec<String>,
    collateral_window: (u64, u64),
    tcb_evaluation_data_number: u32,
    verified_at: u64,
}

impl VerifiedQuote {
    /// The parsed quote (its measurements and report data are now authentic).
    pub fn quote(&self) -> &Quote {
        &self.quote
    }

    /// The TEE.
    pub fn tee(&self) -> TeeType {
        self.quote.tee()
    }

    /// The root the quote and collateral chained to.
    pub fn trust_root(&self) -> TrustRoot {
        self.trust_root
    }

    /// Whether the root is a simulation root: the evidence comes from no real TEE.
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    /// The combined TCB status (platform and quoting enclave).
    pub fn tcb_status(&self) -> TcbStatus {
        self.tcb_status
    }

    /// The platform's own TCB status.
    pub fn platform_tcb_status(&self) -> TcbStatus {
        self.platform_tcb_status
    }

    /// The quoting enclave's TCB status.
    pub fn qe_tcb_status(&self) -> TcbStatus {
        self.qe_tcb_status
    }

    /// The Intel security advisories that apply to the platform's TCB level.
    pub fn advisory_ids(&self) -> &[String] {
        &self.advisory_ids
    }

    /// Whether the enclave or TD runs in debug mode.
    pub fn is_debug(&self) -> bool {
        self.quote.is_debug()
    }

    /// The Unix-time window in which the collateral (and every certificate) is valid.
    pub fn collateral_window(&self) -> (u64, u64) {
        self.collateral_window
    }

    /// The TCB evaluation data number of the TCB info used.
    pub fn tcb_evaluation_data_number(&self) -> u32 {
        self.tcb_evaluation_data_number
    }

    /// The time the verification was made for.
    pub fn verified_at(&self) -> u64 {
        self.verified_at
    }
}

/// Why a quote did not verify. Each variant has a stable kebab-case [`code`](Self::code).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The collateral does not fit the quote (another platform model, another TEE type).
    #[error("the collateral does not match the quote: {0}")]
    CollateralMismatch(String),
    /// The verification time is after the end of the collateral's (or a certificate's)
    /// validity.
    #[error("collateral expired: {0}")]
    CollateralExpired(String),
    /// The verification time is before the start of the collateral's (or a certificate's)
    /// validity.
    #[error("collateral not yet valid: {0}")]
    CollateralNotYetValid(String),
    /// A certificate in a chain is malformed.
    #[error("malformed certificate: {0}")]
    MalformedCertificate(String),
    /// dcap-qvl could not decode a quote this crate's parser accepted.
    #[error("malformed quote: {0}")]
    MalformedQuote(String),
    /// The collateral is malformed or inconsistent.
    #[error("malformed collateral: {0}")]
    MalformedCollateral(String),
    /// The quoting enclave is not the one Intel's QE identity describes.
    #[error("the quoting enclave does not match its identity: {0}")]
    QeIdentityMismatch(String),
    /// The QE report does not bind the attestation key.
    #[error("the QE report data does not bind the attestation key: {0}")]
    QeReportDataMismatch(String),
    /// The quote carries no PCK certificate chain (certification data types 1 to 4) and the
    /// collateral supplies none in `pck_certificate_chain`.
    #[error("no PCK certificate chain: {0}")]
    PckChainMissing(String),
    /// The quote could not be parsed.
    #[error("{0}")]
    Quote(QuoteError),
    /// A certificate in the chain, or the platform's TCB, is revoked.
    #[error("revoked: {0}")]
    Revoked(String),
    /// A signature does not verify.
    #[error("signature invalid: {0}")]
    SignatureInvalid(String),
    /// No TCB level in the TCB info matches the platform.
    #[error("TCB not supported: {0}")]
    TcbNotSupported(String),
    /// The TD's attributes are not acceptable to the verifier (profiling, migration, service
    /// TDs, reserved bits, SEPT_VE_DISABLE off).
    #[error("TD attributes not allowed: {0}")]
    TdAttributesNotAllowed(String),
    /// The TDX module is not one the TCB info describes.
    #[error("TDX module identity mismatch: {0}")]
    TdxModuleMismatch(String),
    /// The chains do not lead to the trust anchor.
    #[error("untrusted root: {0}")]
    UntrustedRoot(String),
    /// Verification failed for a reason this build does not classify.
    #[error("verification failed: {0}")]
    Unclassified(String),
}

impl VerifyError {
    /// The stable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CollateralMismatch(_) => "collateral-mismatch",
            Self::CollateralExpired(_) => "collateral-expired",
            Self::CollateralNotYetValid(_) => "collateral-not-yet-valid",
            Self::MalformedCertificate(_) => "malformed-certificate",
            Self::MalformedCollateral(_) => "malformed-collateral",
            Self::MalformedQuote(_) => "malformed-quote",
            Self::PckChainMissing(_) => "pck-chain-missing",
            Self::QeIdentityMismatch(_) => "qe-identity-mismatch",
            Self::QeReportDataMismatch(_) => "qe-report-data-mismatch",
            Self::Quote(e) => e.code(),
            Self::Revoked(_) => "revoked",
            Self::SignatureInvalid(_) => "signature-invalid",
            Self::TcbNotSupported(_) => "tcb-not-supported",
            Self::TdAttributesNotAllowed(_) => "td-attributes-not-allowed",
            Self::TdxModuleMismatch(_) => "tdx-module-mismatch",
            Self::UntrustedRoot(_) => "untrusted-root",
            Self::Unclassified(_) => "verification-failed",
        }
    }
}

impl From<CollateralError> for VerifyError {
    fn from(e: CollateralError) -> Self {
        Self::MalformedCollateral(e.to_string())
    }
}

#[cfg(test)]
mod tests;
