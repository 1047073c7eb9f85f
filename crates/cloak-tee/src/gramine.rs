//! SGX through Gramine: the `/dev/attestation` pseudo-filesystem that `gramine-sgx` provides to
//! the enclave (Gramine's `Documentation/attestation.rst`).
//!
//! * evidence: write the 64 bytes of report data to `user_report_data`, read `quote` (a DCAP
//!   quote from the host's quoting enclave); the quote must carry exactly that report data;
//! * identity: read `report` (an SGX report of this enclave) and take its body's fields;
//! * sealing: `keys/_sgx_mrenclave` or `keys/_sgx_mrsigner` (16-byte EGETKEY seal keys), widened
//!   to 256 bits by HKDF-SHA256 with the key request.
//!
//! The root directory is a parameter, so tests run the backend against a directory that replays
//! a real quote. Gramine derives `_sgx_mrsigner` at the enclave's *current* ISVSVN, so a signer
//! key for an older SVN floor cannot be derived here: such requests fail with
//! [`TeeError::Unsupported`] instead of silently producing a different key. Collateral is not
//! available inside the enclave; the host relays it (or the client fetches it from Intel's PCS).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use zeroize::Zeroizing;

use crate::{
    Evidence, Identity, KeyPolicy, KeyRequest, Platform, PlatformKind, SealingKey, TeeError,
};

/// Where Gramine mounts the attestation pseudo-filesystem.
pub const DEFAULT_ROOT: &str = "/dev/attestation";

/// Offsets in an SGX report body (`sgx_report_body_t`).
const BODY_LEN: usize = 384;
const FLAGS: usize = 48;
const MRENCLAVE: usize = 64;
const MRSIGNER: usize = 128;
const ISVPRODID: usize = 256;
const ISVSVN: usize = 258;
/// REPORTDATA of an SGX quote v3: header (48) + body offset 320.
const QUOTE_REPORT_DATA: usize = 368;

/// `user_report_data` is one buffer per process: writing it and reading the quote must not
/// interleave between threads.
static EVIDENCE: Mutex<()> = Mutex::new(());

/// The Gramine backend.
#[derive(Clone, Debug)]
pub struct GraminePlatform {
    root: PathBuf,
}

impl GraminePlatform {
    /// The backend on `/dev/attestation`.
    pub fn new() -> Self {
        Self::with_root(Path::new(DEFAULT_ROOT))
    }

    /// The backend on another directory laid out like `/dev/attestation`.
    pub fn with_root(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// Whether a Gramine DCAP attestation interface is present at the root.
    pub fn is_available(&self) -> bool {
        self.attestation_type().is_ok_and(|t| t == "dcap")
    }

    fn attestation_type(&self) -> Result<String, TeeError> {
        let text = fs::read_to_string(self.root.join("attestation_type"))?;
        Ok(text.trim_end_matches(['\0', '\n']).to_owned())
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, TeeError> {
        fs::read(self.root.join(name)).map_err(TeeError::from)
    }
}

impl Default for GraminePlatform {
    fn default() -> Self {
        Self::new()
    }
}

impl Platform for GraminePlatform {
    fn kind(&self) -> PlatformKind {
        PlatformKind::Gramine
    }

    fn identity(&self) -> Result<Identity, TeeError> {
        let report = self.read("report")?;
        let body = report
            .get(..BODY_LEN)
            .ok_or_else(|| TeeError::State("the SGX report is shorter than its body".to_owned()))?;
        let field =
            |at: usize, len: usize| body.get(at..at.saturating_add(len)).unwrap_or_default();
        let array32 = |at: usize| {
            let mut out = [0u8; 32];
            out.copy_from_slice(field(at, 32));
            out
        };
        let u16_at = |at: usize| {
            let mut out = [0u8; 2];
            out.copy_from_slice(field(at, 2));
            u16::from_le_bytes(out)
        };
        let mut flags = [0u8; 8];
        flags.copy_from_slice(field(FLAGS, 8));
        Ok(Identity {
            mrenclave: array32(MRENCLAVE),
            mrsigner: array32(MRSIGNER),
            isv_prod_id: u16_at(ISVPRODID),
            isv_svn: u16_at(ISVSVN),
            debug: u64::from_le_bytes(flags) & 0x02 != 0,
        })
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Evidence, TeeError> {
        let kind = self.attestation_type()?;
        if kind != "dcap" {
            return Err(TeeError::Unsupported(format!(
                "Gramine attestation type is {kind:?}; set sgx.remote_attestation = \"dcap\" in the manifest"
            )));
        }
        let quote = {
            let _exclusive = EVIDENCE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            fs::write(self.root.join("user_report_data"), report_data)?;
            self.read("quote")?
        };
        // Gramine on SGX returns SGX quotes: version 3, TEE type 0.
        if quote.get(..2) != Some([3, 0].as_slice()) || quote.get(4..8) != Some([0; 4].as_slice()) {
            return Err(TeeError::Unsupported(
                "the platform returned a quote that is not an SGX quote v3".to_owned(),
            ));
        }
        let carried = quote.get(QUOTE_REPORT_DATA..QUOTE_REPORT_DATA.saturating_add(64));
        if carried != Some(report_data.as_slice()) {
            return Err(TeeError::ReportDataMismatch);
        }
        Ok(Evidence {
            quote,
            collateral: None,
        })
    }

    fn sealing_key(&self, request: &KeyRequest) -> Result<SealingKey, TeeError> {
        let identity = self.identity()?;
        let (file, policy_bits, svn) = match request.policy {
            KeyPolicy::Measurement => ("keys/_sgx_mrenclave", 0x0001u16, identity.isv_svn),
            KeyPolicy::Signer { isv_svn } if isv_svn > identity.isv_svn => {
                return Err(TeeError::SvnTooHigh {
                    requested: isv_svn,
                    current: identity.isv_svn,
                });
            }
            KeyPolicy::Signer { isv_svn } if isv_svn < identity.isv_svn => {
                return Err(TeeError::Unsupported(format!(
                    "Gramine derives signer keys at the enclave's current ISVSVN ({}); a key for \
                     ISVSVN {isv_svn} cannot be derived",
                    identity.isv_svn
                )));
            }
            KeyPolicy::Signer { isv_svn } => ("keys/_sgx_mrsigner", 0x0002u16, isv_svn),
        };
        let mut seal_key = Zeroizing::new([0u8; 16]);
        let mut source = fs::File::open(self.root.join(file))?;
        source
            .read_exact(seal_key.as_mut_slice())
            .map_err(|e| TeeError::State(format!("{file}: {e}")))?;
        if source.read(&mut [0u8; 1])? != 0 {
            return Err(TeeError::State(format!(
                "{file} is longer than a 16-byte key"
            )));
        }
        let mut info = Vec::with_capacity(64);
        info.extend_from_slice(b"cloak-gramine/v1 seal");
        info.extend_from_slice(&policy_bits.to_be_bytes());
        info.extend_from_slice(&svn.to_be_bytes());
        info.extend_from_slice(&request.key_id);
        let key = cloak_crypto::kdf::hkdf_sha256(b"cloak-gramine seal", seal_key.as_slice(), &info);
        Ok(SealingKey::new(*key))
    }
}
