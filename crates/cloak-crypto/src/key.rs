//! Model keys: 256-bit secrets that encrypt sealed model containers, their public key ids, and
//! the key-file format.
//!
//! A key file is UTF-8 text. Blank lines and lines starting with `#` are comments; exactly one
//! other line must hold the key:
//!
//! ```text
//! # cloak model key; key id 8f3c0e3b6a1d2f4e5c6b7a8998a7b6c5; keep this file secret
//! cloak-model-key-v1:<64 lowercase or uppercase hex digits>
//! ```

use std::fmt;

use aws_lc_rs::hkdf;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The prefix of the key line in a key file (format version 1).
pub const KEY_FILE_PREFIX: &str = "cloak-model-key-v1:";

/// Length of a model key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of a key id in bytes.
pub const KEY_ID_LEN: usize = 16;

/// Longest key file accepted, in bytes; anything longer is not a key file.
pub const MAX_KEY_FILE_LEN: usize = 4096;

const KEY_ID_INFO: &[u8] = b"cloak-model/v1 key-id";

/// A 256-bit model key.
///
/// The bytes are zeroized when the key is dropped and never appear in `Debug` output.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ModelKey {
    bytes: [u8; KEY_LEN],
}

impl ModelKey {
    /// Generates a fresh key from the operating system's CSPRNG (`getrandom(2)` on Linux).
    pub fn generate() -> Result<Self, KeyError> {
        let mut key = Self {
            bytes: [0; KEY_LEN],
        };
        getrandom::fill(&mut key.bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(key)
    }

    /// Wraps existing key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self { bytes }
    }

    /// The public identifier of this key: the first 16 bytes of
    /// `HKDF-SHA256(salt = "", ikm = key, info = "cloak-model/v1 key-id")`.
    ///
    /// It names the key in container headers, logs and key-broker records without revealing it.
    pub fn id(&self) -> KeyId {
        let mut id = [0u8; KEY_ID_LEN];
        hkdf_expand(&[], &self.bytes, KEY_ID_INFO, &mut id);
        KeyId(id)
    }

    /// Parses the contents of a key file (see the module documentation).
    pub fn from_key_file(text: &str) -> Result<Self, KeyError> {
        if text.len() > MAX_KEY_FILE_LEN {
            return Err(KeyError::Malformed("file is too large to be a key file"));
        }
        let mut key_line = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if key_line.replace(line).is_some() {
                return Err(KeyError::Malformed("more than one key line"));
            }
        }
        let line = key_line.ok_or(KeyError::Malformed("no key line"))?;
        let hex_digits = line
            .strip_prefix(KEY_FILE_PREFIX)
            .ok_or(KeyError::Malformed(
                "key line does not start with `cloak-model-key-v1:`",
            ))?;
        let mut key = Self {
            bytes: [0; KEY_LEN],
        };
        hex::decode_to_slice(hex_digits, &mut key.bytes)
            .map_err(|_| KeyError::Malformed("key is not exactly 64 hexadecimal digits"))?;
        Ok(key)
    }

    /// Renders the key as the contents of a key file. The returned text is zeroized on drop.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let mut digits = Zeroizing::new([0u8; 2 * KEY_LEN]);
        // The output buffer is exactly twice the key length.
        let _ = hex::encode_to_slice(self.bytes, digits.as_mut_slice());
        let mut text = Zeroizing::new(String::with_capacity(256));
        text.push_str("# cloak model key; key id ");
        text.push_str(&self.id().to_string());
        text.push_str("; keep this file secret\n");
        text.push_str(KEY_FILE_PREFIX);
        // Hex digits are ASCII.
        text.push_str(std::str::from_utf8(digits.as_slice()).unwrap_or_default());
        text.push('\n');
        text
    }

    pub(crate) fn expose(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The raw key bytes, for code that must seal, wrap or HPKE-encrypt the key itself (the key
    /// broker, the server's sealed key store). Never log or persist them in plaintext.
    pub fn secret_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelKey")
            .field("id", &self.id())
            .field("bytes", &"<redacted>")
            .finish()
    }
}

/// The public identifier of a [`ModelKey`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; KEY_ID_LEN]);

impl KeyId {
    /// Wraps raw key-id bytes (for example, read from a record).
    pub fn from_bytes(bytes: [u8; KEY_ID_LEN]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Errors from generating or reading model keys. The messages never contain key material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file is not in the expected format.
    #[error("malformed key file: {0}")]
    Malformed(&'static str),
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

impl KeyError {
    /// A stable kebab-case code for scripts and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed-key-file",
            Self::Random(_) => "random-failure",
        }
    }
}

/// `HKDF-SHA256(salt, ikm)` expanded with `info` to fill `out`.
pub(crate) fn hkdf_expand(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let info = [info];
    #[allow(clippy::expect_used)]
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&info, Len(out.len()))
        // HKDF-SHA256 fails only for outputs longer than 255 * 32 bytes; every caller in this
        // crate asks for at most 32 bytes.
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output length is at most 32 bytes");
}

#[cfg(test)]
mod tests;
