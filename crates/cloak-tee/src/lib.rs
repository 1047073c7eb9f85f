//! The TEE platform layer: what code running inside a trusted execution environment asks of
//! the platform — attestation evidence over chosen report data, sealing keys bound to its
//! identity, and that identity — behind one [`Platform`] trait, with two backends:
//!
//! * [`sim`] (feature `sim`): a simulated SGX platform in miniature, with its own simulation PKI,
//!   collateral and real-format DCAP v3 quotes, so that the same verifier runs everywhere; never
//!   for production, and refused by default policies (its root names itself SIMULATED);
//! * [`gramine`]: SGX through Gramine's `/dev/attestation` pseudo-filesystem.
//!
//! [`seal`] turns a sealing key into versioned, authenticated blobs.
//!
//! | feature | adds |
//! |---|---|
//! | `sim` | the simulated platform (`rcgen`, `yasna`) |

// A parser of untrusted bytes: no unwrap, expect, indexing or unchecked arithmetic outside tests
// (clippy.toml lets tests unwrap, expect and index).
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::arithmetic_side_effects))]

pub mod gramine;
pub mod seal;
#[cfg(feature = "sim")]
pub mod sim;

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A trusted execution environment, as seen from inside it.
pub trait Platform: Send + Sync {
    /// Which backend this is.
    fn kind(&self) -> PlatformKind;

    /// The identity the platform reports for this enclave.
    fn identity(&self) -> Result<Identity, TeeError>;

    /// Attestation evidence whose report data is exactly `report_data`.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError>;

    /// A key bound to this platform and to the identity `request.policy` selects. The same
    /// request on the same platform by the same identity always yields the same key.
    fn sealing_key(&self, request: &KeyRequest) -> Result<SealingKey, TeeError>;
}

/// The backends.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformKind {
    /// SGX through Gramine.
    Gramine,
    /// The simulated SGX platform.
    Simulated,
}

impl PlatformKind {
    /// `gramine` or `sim`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gramine => "gramine",
            Self::Simulated => "sim",
        }
    }
}

/// An enclave's identity: what a quote's report body says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// MRENCLAVE: the measurement of the enclave's code and initial data.
    pub mrenclave: [u8; 32],
    /// MRSIGNER: the hash of the enclave signer's public key.
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// Whether the enclave runs in debug mode.
    pub debug: bool,
}

/// Attestation evidence: a quote and, when the platform has it, the collateral to verify it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The DCAP quote.
    pub quote: Vec<u8>,
    /// The collateral, as dcap-qvl `QuoteCollateralV3` JSON (the simulated platform always has
    /// it; on hardware it comes from Intel's PCS or a PCCS).
    pub collateral: Option<Vec<u8>>,
}

/// Which identity a sealing key is bound to. There is deliberately no default: sealing to the
/// measurement and sealing to the signer have different upgrade semantics.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPolicy {
    /// MRENCLAVE: only this exact enclave build can derive the key.
    Measurement,
    /// MRSIGNER and ISVPRODID, at security version `isv_svn`: on platforms that support SVN
    /// floors (the simulated one, like EGETKEY itself) any build from the same signer and product
    /// whose ISVSVN is at least `isv_svn` can derive the key — an upgrade can read data sealed
    /// before it, a downgrade cannot. Gramine derives keys only at the current ISVSVN.
    Signer {
        /// The SVN floor the key is derived for; at most the enclave's own ISVSVN.
        isv_svn: u16,
    },
}

/// A request for a sealing key: the policy and a key id that makes keys unique per use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRequest {
    /// The identity the key is bound to.
    pub policy: KeyPolicy,
    /// A value mixed into the key (sealed blobs use a random one each).
    pub key_id: [u8; 32],
}

/// A 256-bit sealing key, zeroized on drop and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SealingKey([u8; 32]);

impl SealingKey {
    pub(crate) fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether two keys are the same, compared in constant time.
    pub fn ct_eq(&self, other: &Self) -> bool {
        bool::from(subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..]))
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

/// Why the platform could not do what was asked. Each variant has a stable [`code`](Self::code).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TeeError {
    /// The platform's files or devices could not be used.
    #[error("platform I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The platform's state is missing or malformed.
    #[error("platform state: {0}")]
    State(String),
    /// A key was requested for a higher ISVSVN than the enclave has (EGETKEY refuses this too).
    #[error(
        "a sealing key for ISVSVN {requested} was requested, but this enclave's ISVSVN is {current}"
    )]
    SvnTooHigh {
        /// The requested SVN.
        requested: u16,
        /// The enclave's SVN.
        current: u16,
    },
    /// The quote the platform produced does not carry the requested report data.
    #[error("the platform's quote does not carry the requested report data")]
    ReportDataMismatch,
    /// The backend cannot honour this request.
    #[error("unsupported by this platform: {0}")]
    Unsupported(String),
}

impl TeeError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io(_) => "platform-io",
            Self::State(_) => "platform-state",
            Self::SvnTooHigh { .. } => "svn-too-high",
            Self::ReportDataMismatch => "report-data-mismatch",
            Self::Unsupported(_) => "unsupported",
        }
    }
}
