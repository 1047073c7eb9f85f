//! Sealed blobs: data encrypted under a platform sealing key, bound to the enclave identity a
//! [`KeyPolicy`] selects, in a versioned format.
//!
//! | offset | length | field |
//! |---|---|---|
//! | 0 | 8 | magic `89 43 53 45 41 4C 0D 0A` (`\x89CSEAL\r\n`) |
//! | 8 | 2 | format version, big-endian: `1` |
//! | 10 | 1 | policy: `1` measurement (MRENCLAVE), `2` signer (MRSIGNER + ISVPRODID) |
//! | 11 | 1 | flags: bit 0 set if the sealing enclave was a debug enclave; other bits zero |
//! | 12 | 2 | ISVSVN: the signer policy's floor, or the sealing enclave's ISVSVN (measurement policy) |
//! | 14 | 2 | ISVPRODID of the sealing enclave |
//! | 16 | 32 | MRENCLAVE (measurement policy) or MRSIGNER (signer policy) |
//! | 48 | 32 | key id: random, part of the key request |
//! | 80 | 12 | AES-GCM nonce: random |
//! | 92 | n + 16 | AES-256-GCM ciphertext and tag; the AAD is bytes 0..92 |
//!
//! Unsealing checks, before any cryptography, that the running enclave is the one the blob
//! names (a different measurement, signer, product or debug mode, or another ISVSVN than the key
//! can be derived for, each fails with its own error); then the key is derived and the blob
//! authenticated. These early errors read the header before it is authenticated: they explain a
//! refusal, while only a successful unseal proves anything.
//!
//! What survives what depends on the backend. On the simulated platform a signer-sealed blob
//! opens in any later ISVSVN of the same signer and product (as EGETKEY allows). Gramine derives
//! its keys at the enclave's current ISVSVN and the platform's current CPUSVN, so on Gramine any
//! new release or microcode/TCB update makes older blobs unreadable: treat sealed state as a cache
//! that the key broker can refill. Sealed blobs have no rollback protection: the host can put back
//! an older blob this enclave sealed.

use std::path::Path;

use zeroize::Zeroizing;

use crate::{Identity, KeyPolicy, KeyRequest, Platform, TeeError};

/// The magic bytes that open every sealed blob.
pub const MAGIC: [u8; 8] = *b"\x89CSEAL\r\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Header length; the AAD.
pub const HEADER_LEN: usize = 92;
const TAG_LEN: usize = cloak_crypto::aead::TAG_LEN;
const POLICY_MEASUREMENT: u8 = 1;
const POLICY_SIGNER: u8 = 2;
const FLAG_DEBUG: u8 = 0x01;

/// Seals `plaintext` for this enclave under `policy`.
pub fn seal(
    platform: &dyn Platform,
    policy: KeyPolicy,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let identity = platform.identity()?;
    let mut key_id = [0u8; 32];
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut key_id).map_err(|e| SealError::Random(e.to_string()))?;
    getrandom::fill(&mut nonce).map_err(|e| SealError::Random(e.to_string()))?;
    let header = Header::new(policy, &identity, key_id, nonce);
    let key = platform.sealing_key(&KeyRequest { policy, key_id })?;
    let bytes = header.to_bytes();
    let mut blob = Vec::with_capacity(
        HEADER_LEN
            .saturating_add(plaintext.len())
            .saturating_add(TAG_LEN),
    );
    blob.extend_from_slice(&bytes);
    cloak_crypto::aead::seal_append(key.expose(), nonce, &bytes, plaintext, &mut blob);
    Ok(blob)
}

/// Unseals a blob sealed by [`seal`] on this platform for this enclave.
pub fn unseal(platform: &dyn Platform, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let (header_bytes, sealed) = blob
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(SealError::Truncated)?;
    let header = Header::parse(header_bytes)?;
    if sealed.len() < TAG_LEN {
        return Err(SealError::Truncated);
    }
    let identity = platform.identity()?;
    header.check(&identity)?;
    let key = platform.sealing_key(&KeyRequest {
        policy: header.policy,
        key_id: header.key_id,
    })?;
    cloak_crypto::aead::open(key.expose(), header.nonce, header_bytes, sealed)
        .ok_or(SealError::Authentication)
}

/// Reads the header of a sealed blob (for diagnostics; nothing is authenticated).
pub fn policy_of(blob: &[u8]) -> Result<KeyPolicy, SealError> {
    let (header, _) = blob
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(SealError::Truncated)?;
    Header::parse(header).map(|h| h.policy)
}

/// Seals `plaintext` and writes it to `path` atomically (mode 0600, replacing any old blob).
pub fn seal_to_file(
    platform: &dyn Platform,
    policy: KeyPolicy,
    plaintext: &[u8],
    path: &Path,
) -> Result<(), SealError> {
    let blob = seal(platform, policy, plaintext)?;
    let mut file = cloak_fs::AtomicFile::create(path, 0o600)?;
    std::io::Write::write_all(file.file(), &blob)?;
    file.commit(cloak_fs::Commit::Replace)
        .map_err(|e| e.error)?;
    Ok(())
}

/// Reads and unseals the blob at `path`.
pub fn unseal_file(platform: &dyn Platform, path: &Path) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let blob = std::fs::read(path)?;
    unseal(platform, &blob)
}

struct Header {
    policy: KeyPolicy,
    debug: bool,
    isv_svn: u16,
    isv_prod_id: u16,
    identity: [u8; 32],
    key_id: [u8; 32],
    nonce: [u8; 12],
}

impl Header {
    fn new(policy: KeyPolicy, identity: &Identity, key_id: [u8; 32], nonce: [u8; 12]) -> Self {
        let (bound, isv_svn) = match policy {
            KeyPolicy::Measurement => (identity.mrenclave, identity.isv_svn),
            KeyPolicy::Signer { isv_svn } => (identity.mrsigner, isv_svn),
        };
        Self {
            policy,
            debug: identity.debug,
            isv_svn,
            isv_prod_id: identity.isv_prod_id,
            identity: bound,
            key_id,
            nonce,
        }
    }

    fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let kind = match self.policy {
            KeyPolicy::Measurement => POLICY_MEASUREMENT,
            KeyPolicy::Signer { .. } => POLICY_SIGNER,
        };
        let mut out = [0u8; HEADER_LEN];
        let mut w = Writer(&mut out);
        w.put(&MAGIC);
        w.put(&FORMAT_VERSION.to_be_bytes());
        w.put(&[kind, u8::from(self.debug)]);
        w.put(&self.isv_svn.to_be_bytes());
        w.put(&self.isv_prod_id.to_be_bytes());
        w.put(&self.identity);
        w.put(&self.key_id);
        w.put(&self.nonce);
        out
    }

    fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self, SealError> {
        let mut r = Fields(bytes.as_slice());
        if r.take::<8>() != MAGIC {
            return Err(SealError::NotSealedBlob);
        }
        let version = u16::from_be_bytes(r.take());
        if version != FORMAT_VERSION {
            return Err(SealError::UnsupportedVersion(version));
        }
        let [kind, flags] = r.take::<2>();
        if flags & !FLAG_DEBUG != 0 {
            return Err(SealError::Malformed("unknown flag bits"));
        }
        let isv_svn = u16::from_be_bytes(r.take());
        let isv_prod_id = u16::from_be_bytes(r.take());
        let policy = match kind {
            POLICY_MEASUREMENT => KeyPolicy::Measurement,
            POLICY_SIGNER => KeyPolicy::Signer { isv_svn },
            other => return Err(SealError::UnknownPolicy(other)),
        };
        Ok(Self {
            policy,
            debug: flags & FLAG_DEBUG != 0,
            isv_svn,
            isv_prod_id,
            identity: r.take(),
            key_id: r.take(),
            nonce: r.take(),
        })
    }

    /// Whether `identity` is the enclave this blob is sealed to.
    fn check(&self, identity: &Identity) -> Result<(), SealError> {
        let bound = match self.policy {
            KeyPolicy::Measurement => identity.mrenclave,
            KeyPolicy::Signer { .. } => identity.mrsigner,
        };
        if bound != self.identity {
            return Err(match self.policy {
                KeyPolicy::Measurement => SealError::MeasurementMismatch,
                KeyPolicy::Signer { .. } => SealError::SignerMismatch,
            });
        }
        if identity.isv_prod_id != self.isv_prod_id {
            return Err(SealError::ProductMismatch {
                sealed: self.isv_prod_id,
                current: identity.isv_prod_id,
            });
        }
        if identity.debug != self.debug {
            return Err(SealError::DebugMismatch);
        }
        if identity.isv_svn < self.isv_svn {
            return Err(SealError::SvnDowngrade {
                sealed: self.isv_svn,
                current: identity.isv_svn,
            });
        }
        if self.policy == KeyPolicy::Measurement && identity.isv_svn != self.isv_svn {
            return Err(SealError::SvnMismatch {
                sealed: self.isv_svn,
                current: identity.isv_svn,
            });
        }
        Ok(())
    }
}

/// Writes consecutive fields into the fixed header (whose field widths sum to [`HEADER_LEN`]).
struct Writer<'a>(&'a mut [u8]);

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        if let Some((head, tail)) = std::mem::take(&mut self.0).split_at_mut_checked(bytes.len()) {
            head.copy_from_slice(bytes);
            self.0 = tail;
        }
    }
}

const _: () = assert!(8 + 2 + 2 + 2 + 2 + 32 + 32 + 12 == HEADER_LEN);

/// A cursor over the fixed header (whose field widths sum to [`HEADER_LEN`]).
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        match self.0.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.0 = tail;
                *head
            }
            None => [0; N],
        }
    }
}

/// Why a blob could not be sealed or unsealed. Each variant has a stable [`code`](Self::code).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The blob was modified, sealed on another platform, or (on Gramine) sealed before an
    /// update of the enclave or of the platform's TCB.
    #[error(
        "the sealed blob failed authentication: modified, sealed on another platform, or (on \
         Gramine) sealed before an enclave or TCB update"
    )]
    Authentication,
    /// The blob was sealed by a debug enclave and this one is not, or the reverse.
    #[error("the blob was sealed by an enclave of the other debug mode")]
    DebugMismatch,
    /// Reading or writing the blob failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The header is inconsistent.
    #[error("malformed sealed blob: {0}")]
    Malformed(&'static str),
    /// The blob is sealed to another enclave measurement.
    #[error("the blob is sealed to another enclave measurement (MRENCLAVE)")]
    MeasurementMismatch,
    /// Not a sealed blob.
    #[error("not a sealed blob (bad magic)")]
    NotSealedBlob,
    /// The platform could not provide the key or identity.
    #[error(transparent)]
    Platform(#[from] TeeError),
    /// The operating system's random number generator failed.
    #[error("random number generator: {0}")]
    Random(String),
    /// The blob is sealed to another signer or product.
    #[error("the blob is sealed to another enclave signer or product (MRSIGNER, ISVPRODID)")]
    SignerMismatch,
    /// The blob was sealed by another product (ISVPRODID).
    #[error("the blob was sealed by product {sealed}; this enclave is product {current}")]
    ProductMismatch {
        /// The sealing enclave's ISVPRODID.
        sealed: u16,
        /// This enclave's.
        current: u16,
    },
    /// A measurement-sealed blob from the same build at another ISVSVN (its key is specific to
    /// the SVN).
    #[error("the blob was sealed at ISVSVN {sealed}; this enclave has ISVSVN {current}")]
    SvnMismatch {
        /// The sealing enclave's ISVSVN.
        sealed: u16,
        /// This enclave's.
        current: u16,
    },
    /// The enclave's ISVSVN is below the blob's floor: a downgrade.
    #[error("the blob was sealed for ISVSVN {sealed} or later; this enclave has ISVSVN {current}")]
    SvnDowngrade {
        /// The blob's SVN floor.
        sealed: u16,
        /// The enclave's SVN.
        current: u16,
    },
    /// The blob is shorter than its header and tag.
    #[error("truncated sealed blob")]
    Truncated,
    /// An unknown policy byte.
    #[error("unknown key policy {0}")]
    UnknownPolicy(u8),
    /// A format version this build does not read.
    #[error("unsupported sealed-blob version {0}")]
    UnsupportedVersion(u16),
}

impl SealError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Authentication => "seal-authentication",
            Self::DebugMismatch => "debug-mismatch",
            Self::Io(_) => "io",
            Self::Malformed(_) => "malformed-sealed-blob",
            Self::MeasurementMismatch => "measurement-mismatch",
            Self::NotSealedBlob => "not-sealed-blob",
            Self::Platform(e) => e.code(),
            Self::ProductMismatch { .. } => "product-mismatch",
            Self::SvnMismatch { .. } => "svn-mismatch",
            Self::Random(_) => "random-failure",
            Self::SignerMismatch => "signer-mismatch",
            Self::SvnDowngrade { .. } => "svn-downgrade",
            Self::Truncated => "truncated",
            Self::UnknownPolicy(_) => "unknown-policy",
            Self::UnsupportedVersion(_) => "unsupported-version",
        }
    }
}
