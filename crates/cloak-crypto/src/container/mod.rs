//! The sealed model container (`model.cloak`): a versioned header authenticated with the model
//! key, then the model encrypted with AES-256-GCM in the STREAM construction, chunk by chunk, so
//! that models of any size are sealed and opened with bounded memory.
//!
//! The byte layout is specified in this crate's README. In short:
//!
//! * per-file keys: `HKDF-SHA256(salt = file id, ikm = model key)` gives a body key, a header
//!   key and a 7-byte nonce prefix; the file id is 16 random bytes, so no two files share a key
//!   even when they share a model key;
//! * the 256-byte header ends with `HMAC-SHA256(header key, header[..0xE0])`;
//! * chunk `i` is stored as `label ‖ AES-256-GCM(body key, nonce, aad = label, plaintext)` with
//!   `label = file id ‖ be32(i)` and `nonce = prefix ‖ be32(i) ‖ last-chunk flag`.
//!
//! Authentication failures are diagnosed precisely: a flipped bit, a reordered chunk, a chunk
//! spliced in from another container sealed with the same key, a truncation and a wrong key are
//! all distinct [`ContainerError`]s, and every diagnosis is confirmed cryptographically before
//! it is reported.

mod error;
mod header;
mod keys;
mod open;
mod record;
mod seal;

use std::io::{Read, Seek, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;

pub use self::error::{ContainerError, SealError};
pub use self::header::{
    Algorithm, ChunkSize, FILE_ID_LEN, FORMAT_VERSION, HEADER_LEN, Header, InvalidModelName, MAGIC,
    MAX_CHUNKS, MAX_NAME_LEN, ModelName,
};
use self::keys::{GCM_TAG_LEN, LABEL_LEN};
use crate::key::ModelKey;

/// Bytes a chunk record adds to its plaintext: the 20-byte label and the 16-byte GCM tag.
pub const CHUNK_OVERHEAD: usize = LABEL_LEN + GCM_TAG_LEN;

/// What to seal a model as.
#[derive(Clone, Debug)]
pub struct SealOptions {
    name: ModelName,
    chunk_size: ChunkSize,
    created_at: u64,
}

impl SealOptions {
    /// Seal under `name`, with the default chunk size, stamped with the current time.
    pub fn new(name: ModelName) -> Self {
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            name,
            chunk_size: ChunkSize::DEFAULT,
            created_at,
        }
    }

    /// Use another chunk size.
    pub fn with_chunk_size(mut self, chunk_size: ChunkSize) -> Self {
        self.chunk_size = chunk_size;
        self
    }

    /// Record another creation time (seconds since the Unix epoch).
    pub fn with_created_at(mut self, created_at: u64) -> Self {
        self.created_at = created_at;
        self
    }
}

/// Whether opening a container recomputes the SHA-256 of the plaintext and compares it with the
/// header.
///
/// Authenticating every chunk already proves that the plaintext is exactly what the key holder
/// sealed; recomputing the digest additionally proves that the header's digest describes that
/// plaintext, which matters wherever the digest is reported to third parties (attestation
/// claims, receipts).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestCheck {
    /// Recompute the digest and fail with [`ContainerError::DigestMismatch`] if it differs.
    Recompute,
    /// Authenticate only.
    Skip,
}

/// A container whose header and every chunk were authenticated with the model key.
///
/// Only [`open`] and [`verify`] construct it.
#[derive(Clone, Debug)]
pub struct VerifiedContainer {
    header: Header,
    digest: DigestCheck,
}

impl VerifiedContainer {
    /// The authenticated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Whether the plaintext digest was recomputed and matched the header.
    pub fn digest_check(&self) -> DigestCheck {
        self.digest
    }
}

/// Encrypts the model read from `input` into a container written to `output`.
///
/// `output` must be seekable because the header, which records the plaintext length and
/// digest, is written last, at the position `output` had on entry. Plaintext is held only in
/// memory, a few chunks at a time, in buffers zeroized after use. Reading and hashing run on a
/// second thread.
pub fn seal<R: Read + Send, W: Write + Seek>(
    key: &ModelKey,
    options: &SealOptions,
    input: R,
    output: W,
) -> Result<Header, SealError> {
    seal::seal(key, options, input, output)
}

/// Authenticates and decrypts a container, writing the plaintext to `output` chunk by chunk.
///
/// Each chunk is written only after it was authenticated, but a later chunk may still fail: on
/// error, `output` may hold a prefix of the model and the caller must discard it (the `cloak`
/// CLI writes to an unnamed temporary file that only becomes visible on success). The plaintext
/// digest is always recomputed.
pub fn open<R: Read + Send, W: Write>(
    key: &ModelKey,
    input: R,
    mut output: W,
) -> Result<VerifiedContainer, ContainerError> {
    open::open_stream(key, input, Some(&mut output), DigestCheck::Recompute)
}

/// Authenticates every chunk of a container without keeping the plaintext.
pub fn verify<R: Read + Send>(
    key: &ModelKey,
    input: R,
    digest: DigestCheck,
) -> Result<VerifiedContainer, ContainerError> {
    open::open_stream(key, input, None, digest)
}

/// Reads and checks the header **without authenticating it** (no key is needed): for display
/// only. Never trust these values for a security decision; use [`verify`] or [`open`].
pub fn read_header<R: Read>(mut input: R) -> Result<Header, ContainerError> {
    open::read_raw_header(&mut input)?.validate()
}

/// The chunk size as a buffer length.
fn chunk_len(chunk_size: ChunkSize) -> usize {
    // At most 16 MiB, which fits any usize this crate builds for (32 or 64 bits).
    usize::try_from(chunk_size.get()).unwrap_or(usize::MAX)
}

fn digest_array(digest: digest::Digest) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests;
