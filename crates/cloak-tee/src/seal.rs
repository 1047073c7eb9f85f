//! Sealed blobs: data encrypted under a platform sealing key, bound to the enclave identity a
//! [`KeyPolicy`] selects, in a versioned format.
//!
//! | offset | length | field |
//! |---|---|---|
//! | 0 | 8 | magic `89 43 53 45 41 4C 0D 0A` (`\x89CSEAL\r\n`) |
//! | 8 | 2 | format version, big-endian: `1` |
//! | 10 | 1 | policy: `1` measurement (MRENCLAVE), `2` signer (MRSIGNER + ISVPRODID) |
//! | 11 | 1 | reserved, zero |
//! | 12 | 2 | signer policy: the ISVSVN floor the key is derived for (else zero) |
//! | 14 | 2 | signer policy: ISVPRODID (else zero) |
//! | 16 | 32 | MRENCLAVE (measurement policy) or MRSIGNER (signer policy) |
//! | 48 | 32 | key id: random, part of the key request |
//! | 80 | 12 | AES-GCM nonce: random |
//! | 92 | n + 16 | AES-256-GCM ciphertext and tag; the AAD is bytes 0..92 |
//!
//! Unsealing checks, before any cryptography, that the running enclave is the one the blob
//! names (a different measurement, signer or product, or a lower ISVSVN than the blob's floor,
//! each fails with its own error); then the key is derived and the blob authenticated.

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
    let mut blob = bytes.to_vec();
    blob.extend_from_slice(&cloak_crypto::aead::seal(
        key.expose(),
        nonce,
        &bytes,
        plaintext,
    ));
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
    isv_prod_id: u16,
    identity: [u8; 32],
    key_id: [u8; 32],
    nonce: [u8; 12],
}

impl Header {
    fn new(policy: KeyPolicy, identity: &Identity, key_id: [u8; 32], nonce: [u8; 12]) -> Self {
        let (bound, isv_prod_id) = match policy {
            KeyPolicy::Measurement => (identity.mrenclave, 0),
            KeyPolicy::Signer { .. } => (identity.mrsigner, identity.isv_prod_id),
        };
        Self {
            policy,
            isv_prod_id,
            identity: bound,
            key_id,
            nonce,
        }
    }

    fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let (kind, svn) = match self.policy {
            KeyPolicy::Measurement => (POLICY_MEASUREMENT, 0),
            KeyPolicy::Signer { isv_svn } => (POLICY_SIGNER, isv_svn),
        };
        let mut out = [0u8; HEADER_LEN];
        let mut w = Writer(&mut out);
        w.put(&MAGIC);
        w.put(&FORMAT_VERSION.to_be_bytes());
        w.put(&[kind, 0]);
        w.put(&svn.to_be_bytes());
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
        let [kind, reserved] = r.take::<2>();
        if reserved != 0 {
            return Err(SealError::Malformed("reserved byte is not zero"));
        }
        let svn = u16::from_be_bytes(r.take());
        let isv_prod_id = u16::from_be_bytes(r.take());
        let policy = match kind {
            POLICY_MEASUREMENT if svn == 0 && isv_prod_id == 0 => KeyPolicy::Measurement,
            POLICY_MEASUREMENT => {
                return Err(SealError::Malformed(
                    "measurement policy with signer fields",
                ));
            }
            POLICY_SIGNER => KeyPolicy::Signer { isv_svn: svn },
            other => return Err(SealError::UnknownPolicy(other)),
        };
        Ok(Self {
            policy,
            isv_prod_id,
            identity: r.take(),
            key_id: r.take(),
            nonce: r.take(),
        })
    }

    /// Whether `identity` is the enclave this blob is sealed to.
    fn check(&self, identity: &Identity) -> Result<(), SealError> {
        match self.policy {
            KeyPolicy::Measurement if identity.mrenclave != self.identity => {
                Err(SealError::MeasurementMismatch)
            }
            KeyPolicy::Signer { .. }
                if identity.mrsigner != self.identity
                    || identity.isv_prod_id != self.isv_prod_id =>
            {
                Err(SealError::SignerMismatch)
            }
            KeyPolicy::Signer { isv_svn } if identity.isv_svn < isv_svn => {
                Err(SealError::SvnDowngrade {
                    sealed: isv_svn,
                    current: identity.isv_svn,
                })
            }
            _ => Ok(()),
        }
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
    /// The blob was modified, or was sealed on another platform.
    #[error("the sealed blob failed authentication: modified, or sealed on another platform")]
    Authentication,
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
            Self::Io(_) => "io",
            Self::Malformed(_) => "malformed-sealed-blob",
            Self::MeasurementMismatch => "measurement-mismatch",
            Self::NotSealedBlob => "not-sealed-blob",
            Self::Platform(e) => e.code(),
            Self::Random(_) => "random-failure",
            Self::SignerMismatch => "signer-mismatch",
            Self::SvnDowngrade { .. } => "svn-downgrade",
            Self::Truncated => "truncated",
            Self::UnknownPolicy(_) => "unknown-policy",
            Self::UnsupportedVersion(_) => "unsupported-version",
        }
    }
}
