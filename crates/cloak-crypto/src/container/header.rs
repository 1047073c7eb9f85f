use std::fmt;

use super::ContainerError;
use crate::key::{KEY_ID_LEN, KeyId};

/// The 8 magic bytes that open every container: `\x89CLOAK\r\n` (PNG-style: the high byte and
/// the CR LF pair detect transfers that mangle binary files).
pub const MAGIC: [u8; 8] = *b"\x89CLOAK\r\n";

/// The container format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// Total header length in bytes, tag included.
pub const HEADER_LEN: usize = 0x100;

/// Length of the random per-file id.
pub const FILE_ID_LEN: usize = 16;

/// Longest model name in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Most chunks a container can hold (chunk indices are 32-bit and `u32::MAX` is never used).
pub const MAX_CHUNKS: u32 = u32::MAX;

const TAG_OFFSET: usize = 0xE0;
const TAG_LEN: usize = 32;

/// Content-encryption algorithms a container can declare.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// AES-256-GCM in the STREAM construction with 32-bit big-endian chunk counters and a
    /// last-chunk flag; per-file keys by HKDF-SHA256; HMAC-SHA256 header tag. Id `0x0001`.
    Aes256GcmStream,
}

impl Algorithm {
    /// The id written in the header.
    pub fn id(self) -> u16 {
        match self {
            Self::Aes256GcmStream => 0x0001,
        }
    }

    /// A stable name for display and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Aes256GcmStream => "aes-256-gcm-stream",
        }
    }

    fn from_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(Self::Aes256GcmStream),
            _ => None,
        }
    }
}

/// The plaintext chunk size of a container: between 4 KiB and 16 MiB.
///
/// Memory use while sealing or opening is a small multiple of the chunk size, whatever the model
/// size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkSize(u32);

impl ChunkSize {
    /// The smallest chunk size: 4 KiB.
    pub const MIN: Self = Self(4 * 1024);
    /// The largest chunk size: 16 MiB.
    pub const MAX: Self = Self(16 * 1024 * 1024);
    /// The default chunk size: 1 MiB.
    pub const DEFAULT: Self = Self(1024 * 1024);

    /// Checks that `bytes` lies within [`ChunkSize::MIN`]..=[`ChunkSize::MAX`].
    pub fn new(bytes: u32) -> Option<Self> {
        (Self::MIN.0..=Self::MAX.0)
            .contains(&bytes)
            .then_some(Self(bytes))
    }

    /// The size in bytes.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl Default for ChunkSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A model name: 1 to 128 bytes of ASCII letters, digits, `.`, `_` and `-`, starting with a
/// letter or digit.
///
/// Names travel into URLs (`/v2/models/{name}`), file names and logs, so the alphabet is
/// deliberately narrow.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ModelName(String);

impl ModelName {
    /// Validates a model name.
    pub fn new(name: &str) -> Result<Self, InvalidModelName> {
        let bytes = name.as_bytes();
        let first_ok = bytes.first().is_some_and(u8::is_ascii_alphanumeric);
        let rest_ok = bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if first_ok && rest_ok && bytes.len() <= MAX_NAME_LEN {
            Ok(Self(name.to_owned()))
        } else {
            Err(InvalidModelName)
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModelName({:?})", self.0)
    }
}

/// A model name that breaks the rules of [`ModelName`].
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid model name: use 1 to 128 ASCII letters, digits, '.', '_' or '-', starting with a \
     letter or digit"
)]
pub struct InvalidModelName;

/// A container header: what the container says about the model it holds.
///
/// A header obtained from [`read_header`](super::read_header) is *unauthenticated*; one inside a
/// [`VerifiedContainer`](super::VerifiedContainer) was authenticated with the model key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub(crate) algorithm: Algorithm,
    pub(crate) chunk_size: ChunkSize,
    pub(crate) plaintext_len: u64,
    pub(crate) created_at: u64,
    pub(crate) key_id: KeyId,
    pub(crate) file_id: [u8; FILE_ID_LEN],
    pub(crate) plaintext_sha256: [u8; 32],
    pub(crate) name: ModelName,
}

impl Header {
    /// The container format version (always [`FORMAT_VERSION`] for a parsed header).
    pub fn format_version(&self) -> u16 {
        FORMAT_VERSION
    }

    /// The content-encryption algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The model name.
    pub fn name(&self) -> &ModelName {
        &self.name
    }

    /// The id of the key the container was sealed with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The random per-file id (salt of the per-file keys).
    pub fn file_id(&self) -> &[u8; FILE_ID_LEN] {
        &self.file_id
    }

    /// The plaintext chunk size.
    pub fn chunk_size(&self) -> ChunkSize {
        self.chunk_size
    }

    /// The plaintext (model) length in bytes.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// The SHA-256 of the plaintext model.
    pub fn plaintext_sha256(&self) -> &[u8; 32] {
        &self.plaintext_sha256
    }

    /// When the container was sealed, in seconds since the Unix epoch.
    pub fn created_at(&self) -> u64 {
        self.created_at
    }

    /// How many chunks the body holds (an empty model still has one, empty, final chunk).
    pub fn chunk_count(&self) -> u32 {
        // `validate` guarantees the count fits in a u32.
        u32::try_from(chunk_count(self.plaintext_len, self.chunk_size)).unwrap_or(u32::MAX)
    }

    /// The exact length of the whole container in bytes.
    pub fn container_len(&self) -> u64 {
        container_len(self.plaintext_len, self.chunk_size)
    }

    /// Whether chunk `index` is the final one.
    pub(crate) fn is_last_chunk(&self, index: u32) -> bool {
        self.chunk_count().checked_sub(1) == Some(index)
    }

    /// The plaintext length of chunk `index`.
    pub(crate) fn chunk_plaintext_len(&self, index: u32) -> usize {
        let start = u64::from(index).saturating_mul(u64::from(self.chunk_size.get()));
        let len = self
            .plaintext_len
            .saturating_sub(start)
            .min(u64::from(self.chunk_size.get()));
        // At most the chunk size, which is a u32.
        usize::try_from(len).unwrap_or(usize::MAX)
    }

    /// The raw field values this header is encoded as (with an all-zero tag).
    pub(crate) fn to_raw(&self) -> RawHeader {
        let mut name = [0u8; MAX_NAME_LEN];
        for (slot, byte) in name.iter_mut().zip(self.name.as_str().bytes()) {
            *slot = byte;
        }
        RawHeader {
            magic: MAGIC,
            version: FORMAT_VERSION,
            algorithm: self.algorithm.id(),
            chunk_size: self.chunk_size.get(),
            plaintext_len: self.plaintext_len,
            created_at: self.created_at,
            key_id: self.key_id,
            file_id: self.file_id,
            plaintext_sha256: self.plaintext_sha256,
            name,
            tag: [0; TAG_LEN],
        }
    }
}

/// The fields of a header as stored: decoded, but neither authenticated nor validated.
#[derive(Clone)]
pub(crate) struct RawHeader {
    magic: [u8; 8],
    version: u16,
    algorithm: u16,
    chunk_size: u32,
    plaintext_len: u64,
    created_at: u64,
    pub(crate) key_id: KeyId,
    pub(crate) file_id: [u8; FILE_ID_LEN],
    plaintext_sha256: [u8; 32],
    name: [u8; MAX_NAME_LEN],
    pub(crate) tag: [u8; TAG_LEN],
}

impl RawHeader {
    /// Decodes the header and checks the fields that decide whether this build can read the
    /// container at all: magic, version and algorithm.
    pub(crate) fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Self, ContainerError> {
        let mut rest: &[u8] = bytes;
        let raw = Self {
            magic: take(&mut rest),
            version: u16::from_be_bytes(take(&mut rest)),
            algorithm: u16::from_be_bytes(take(&mut rest)),
            chunk_size: u32::from_be_bytes(take(&mut rest)),
            plaintext_len: u64::from_be_bytes(take(&mut rest)),
            created_at: u64::from_be_bytes(take(&mut rest)),
            key_id: KeyId(take(&mut rest)),
            file_id: take(&mut rest),
            plaintext_sha256: take(&mut rest),
            name: take(&mut rest),
            tag: take(&mut rest),
        };
        if raw.magic != MAGIC {
            return Err(ContainerError::NotContainer);
        }
        if raw.version != FORMAT_VERSION {
            return Err(ContainerError::UnsupportedVersion {
                found: raw.version,
                supported: FORMAT_VERSION,
            });
        }
        if Algorithm::from_id(raw.algorithm).is_none() {
            return Err(ContainerError::UnsupportedAlgorithm {
                found: raw.algorithm,
            });
        }
        Ok(raw)
    }

    /// The header bytes the tag covers: everything but the tag.
    pub(crate) fn authenticated_bytes(&self) -> [u8; TAG_OFFSET] {
        let mut bytes = [0u8; TAG_OFFSET];
        let mut rest: &mut [u8] = &mut bytes;
        put(&mut rest, self.magic);
        put(&mut rest, self.version.to_be_bytes());
        put(&mut rest, self.algorithm.to_be_bytes());
        put(&mut rest, self.chunk_size.to_be_bytes());
        put(&mut rest, self.plaintext_len.to_be_bytes());
        put(&mut rest, self.created_at.to_be_bytes());
        put(&mut rest, *self.key_id.as_bytes());
        put(&mut rest, self.file_id);
        put(&mut rest, self.plaintext_sha256);
        put(&mut rest, self.name);
        bytes
    }

    /// The whole 256-byte header, tag included.
    pub(crate) fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        let mut rest: &mut [u8] = &mut bytes;
        put(&mut rest, self.authenticated_bytes());
        put(&mut rest, self.tag);
        bytes
    }

    /// A copy with another key id, to tell an edited key-id field from a wrong key.
    pub(crate) fn with_key_id(&self, key_id: KeyId) -> Self {
        Self {
            key_id,
            ..self.clone()
        }
    }

    /// Checks every field's value and builds the [`Header`].
    pub(crate) fn validate(&self) -> Result<Header, ContainerError> {
        let algorithm = Algorithm::from_id(self.algorithm)
            .ok_or(ContainerError::MalformedHeader("unknown algorithm"))?;
        let chunk_size = ChunkSize::new(self.chunk_size).ok_or(ContainerError::MalformedHeader(
            "chunk size outside 4 KiB..=16 MiB",
        ))?;
        if chunk_count(self.plaintext_len, chunk_size) > u64::from(MAX_CHUNKS) {
            return Err(ContainerError::MalformedHeader(
                "plaintext length needs more chunks than the format allows",
            ));
        }
        let end = self
            .name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(MAX_NAME_LEN);
        let (name, padding) = self
            .name
            .split_at_checked(end)
            .unwrap_or((self.name.as_slice(), &[]));
        if padding.iter().any(|&c| c != 0) {
            return Err(ContainerError::MalformedHeader(
                "model name padding is not all zero",
            ));
        }
        let name = std::str::from_utf8(name)
            .ok()
            .and_then(|s| ModelName::new(s).ok())
            .ok_or(ContainerError::MalformedHeader("invalid model name"))?;
        Ok(Header {
            algorithm,
            chunk_size,
            plaintext_len: self.plaintext_len,
            created_at: self.created_at,
            key_id: self.key_id,
            file_id: self.file_id,
            plaintext_sha256: self.plaintext_sha256,
            name,
        })
    }
}

/// Number of chunks for a plaintext: `ceil(len / chunk)`, and at least one.
pub(crate) fn chunk_count(plaintext_len: u64, chunk_size: ChunkSize) -> u64 {
    plaintext_len.div_ceil(u64::from(chunk_size.get())).max(1)
}

/// Total container length for a plaintext length and chunk size (saturating on absurd inputs,
/// which `validate` rejects anyway).
pub(crate) fn container_len(plaintext_len: u64, chunk_size: ChunkSize) -> u64 {
    let overhead =
        chunk_count(plaintext_len, chunk_size).saturating_mul(super::CHUNK_OVERHEAD as u64);
    (HEADER_LEN as u64)
        .saturating_add(overhead)
        .saturating_add(plaintext_len)
}

/// Takes the next `N` bytes from `rest`. The field widths in [`RawHeader::parse`] sum to
/// exactly [`HEADER_LEN`] (checked at compile time below), so `rest` never runs short.
fn take<const N: usize>(rest: &mut &[u8]) -> [u8; N] {
    match rest.split_first_chunk::<N>() {
        Some((head, tail)) => {
            *rest = tail;
            *head
        }
        None => [0; N],
    }
}

/// Writes `value` at the front of `rest` and advances it (see [`take`] for why it fits).
fn put<const N: usize>(rest: &mut &mut [u8], value: [u8; N]) {
    if let Some((head, tail)) = std::mem::take(rest).split_first_chunk_mut::<N>() {
        *head = value;
        *rest = tail;
    }
}

// magic, version, algorithm, chunk size, plaintext length, created at, key id, file id,
// SHA-256, name, tag.
const _: () = assert!(
    8 + 2 + 2 + 4 + 8 + 8 + KEY_ID_LEN + FILE_ID_LEN + 32 + MAX_NAME_LEN + TAG_LEN == HEADER_LEN
        && HEADER_LEN - TAG_LEN == TAG_OFFSET
);
