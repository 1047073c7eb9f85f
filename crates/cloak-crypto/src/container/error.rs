use std::io;

use crate::key::KeyId;

/// Why a container could not be read, authenticated or decrypted.
///
/// Every tampering case has its own variant, so callers (and tests) can tell a flipped bit from a
/// reordered chunk, a chunk spliced in from another file, a truncation or a wrong key. Messages
/// never contain key material or plaintext.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The chunk at `index` failed authentication: its bytes were changed (or it is a chunk this
    /// key never produced).
    #[error("chunk {index} failed authentication: the body was modified or corrupted")]
    ChunkAuthentication {
        /// Position of the chunk in the file (0-based).
        index: u32,
    },
    /// The chunk at `position` is an authentic chunk of this file that belongs at `original`:
    /// chunks were reordered.
    #[error("chunk at position {position} is this file's chunk {original}: chunks were reordered")]
    ChunkReordered {
        /// Where the chunk was found.
        position: u32,
        /// Where the chunk belongs.
        original: u32,
    },
    /// The chunk at `position` is an authentic chunk of another container sealed with the same
    /// key: chunks were spliced between files.
    #[error(
        "chunk at position {position} is chunk {source_index} of another container \
         (file id {source_file_id}) sealed with the same key: chunks were spliced between files"
    )]
    ChunkSpliced {
        /// Where the chunk was found.
        position: u32,
        /// The file id of the container the chunk came from, in hex.
        source_file_id: String,
        /// The chunk's position in that container.
        source_index: u32,
    },
    /// The decrypted plaintext does not hash to the SHA-256 the (authentic) header declares: the
    /// holder of the key wrote a header that does not describe the model.
    #[error("the plaintext SHA-256 is {actual}, but the header declares {declared}")]
    DigestMismatch {
        /// The digest in the header, in hex.
        declared: String,
        /// The digest of the decrypted plaintext, in hex.
        actual: String,
    },
    /// The header failed authentication: one of its bytes was changed.
    #[error("the header failed authentication: it was modified or corrupted")]
    HeaderAuthentication,
    /// Reading the input or writing the output failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The header is structurally invalid (reported before authentication by
    /// [`read_header`](super::read_header), or when an authentic header is invalid).
    #[error("malformed header: {0}")]
    MalformedHeader(&'static str),
    /// The input does not start with the container magic: it is not a sealed model.
    #[error("not a cloak sealed-model container (bad magic)")]
    NotContainer,
    /// Bytes follow the final chunk.
    #[error("{extra} unexpected bytes after the final chunk")]
    TrailingData {
        /// How many extra bytes were found (at least one; reading stops counting at 1 MiB).
        extra: u64,
    },
    /// The input ends before the container does.
    #[error("truncated: the container is {expected} bytes long but the input ends after {actual}")]
    Truncated {
        /// The container length the header implies (or the header length, if the header itself
        /// is cut short).
        expected: u64,
        /// How many bytes the input held.
        actual: u64,
    },
    /// The container uses an algorithm this build does not know.
    #[error("unsupported algorithm id {found:#06x}")]
    UnsupportedAlgorithm {
        /// The algorithm id in the header.
        found: u16,
    },
    /// The container uses a format version this build does not know.
    #[error("unsupported container format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the header.
        found: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The supplied key does not authenticate the header, and the header names another key id.
    ///
    /// Either the container was sealed with another key, or its header was modified (the key-id
    /// field together with other bytes): without the right key the two cannot be told apart,
    /// so the key id the header names is *unauthenticated*.
    #[error(
        "wrong key: the header names key id {expected} (unauthenticated), but the key given has \
         id {supplied}; if this is the right key, the header was modified"
    )]
    WrongKey {
        /// The key id the header names (unauthenticated).
        expected: KeyId,
        /// The id of the key that was supplied.
        supplied: KeyId,
    },
}

impl ContainerError {
    /// A stable kebab-case code for scripts, logs and JSON output.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ChunkAuthentication { .. } => "chunk-authentication",
            Self::ChunkReordered { .. } => "chunk-reordered",
            Self::ChunkSpliced { .. } => "chunk-spliced",
            Self::DigestMismatch { .. } => "digest-mismatch",
            Self::HeaderAuthentication => "header-authentication",
            Self::Io(_) => "io",
            Self::MalformedHeader(_) => "malformed-header",
            Self::NotContainer => "not-container",
            Self::TrailingData { .. } => "trailing-data",
            Self::Truncated { .. } => "truncated",
            Self::UnsupportedAlgorithm { .. } => "unsupported-algorithm",
            Self::UnsupportedVersion { .. } => "unsupported-version",
            Self::WrongKey { .. } => "wrong-key",
        }
    }

    /// Whether this error means the container failed verification (it was tampered with,
    /// truncated, or sealed with another key), as opposed to being unreadable or of an unknown
    /// kind.
    pub fn is_verification_failure(&self) -> bool {
        match self {
            Self::ChunkAuthentication { .. }
            | Self::ChunkReordered { .. }
            | Self::ChunkSpliced { .. }
            | Self::DigestMismatch { .. }
            | Self::HeaderAuthentication
            | Self::TrailingData { .. }
            | Self::Truncated { .. }
            | Self::WrongKey { .. } => true,
            Self::Io(_)
            | Self::MalformedHeader(_)
            | Self::NotContainer
            | Self::UnsupportedAlgorithm { .. }
            | Self::UnsupportedVersion { .. } => false,
        }
    }
}

/// Why sealing a model failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The AEAD implementation refused to encrypt a chunk.
    #[error("AES-256-GCM encryption failed")]
    Encryption,
    /// The input has more chunks than the format can count at this chunk size.
    #[error(
        "the model is too large for chunk size {chunk_size}: at most 2^32 - 1 chunks are allowed"
    )]
    InputTooLarge {
        /// The chunk size in use.
        chunk_size: u32,
    },
    /// Reading the model or writing the container failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}
