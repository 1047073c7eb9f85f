//! The administrator's bearer token: 32 random bytes, written once as 64 hex digits to a file
//! with mode 0600; the broker keeps only its SHA-256.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use zeroize::Zeroizing;

use crate::BrokerError;

const TOKEN_LEN: usize = 32;
/// Longest token file read.
const MAX_FILE_LEN: u64 = 1024;
/// Read one byte more than allowed, to tell an over-long file.
const READ_LIMIT: u64 = MAX_FILE_LEN + 1;
const READ_CAPACITY: usize = READ_LIMIT as usize;

/// An administrator token (hex text), zeroized on drop and never printed.
pub struct AdminToken(Zeroizing<String>);

impl AdminToken {
    /// A fresh token from the operating system's random number generator.
    pub fn generate() -> Result<Self, BrokerError> {
        let mut bytes = Zeroizing::new([0u8; TOKEN_LEN]);
        getrandom::fill(bytes.as_mut_slice()).map_err(|e| BrokerError::Random(e.to_string()))?;
        Ok(Self(Zeroizing::new(hex::encode(bytes.as_slice()))))
    }

    /// A token as presented (surrounding whitespace removed).
    pub fn from_text(text: &str) -> Self {
        Self(Zeroizing::new(text.trim().to_owned()))
    }

    /// Reads a token file. Whether other users can read it is the caller's to judge (see
    /// [`AdminToken::file_is_private`]).
    pub fn read_file(path: &Path) -> Result<Self, BrokerError> {
        let io =
            |e: std::io::Error| BrokerError::Io(format!("cannot read {}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = Zeroizing::new(String::with_capacity(READ_CAPACITY));
        file.take(READ_LIMIT)
            .read_to_string(&mut text)
            .map_err(io)?;
        let token = Self::from_text(&text);
        if token.0.is_empty() {
            return Err(BrokerError::Io(format!(
                "admin token file {} is empty",
                path.display()
            )));
        }
        Ok(token)
    }

    /// Whether the file at `path` is closed to group and others (`None` if it cannot be
    /// examined).
    pub fn file_is_private(path: &Path) -> Option<bool> {
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        Some(mode & 0o077 == 0)
    }

    /// Writes the token to a new file with mode 0600; an existing file is never replaced.
    pub fn write_new_file(&self, path: &Path) -> Result<(), BrokerError> {
        let mut text = Zeroizing::new(self.0.as_str().to_owned());
        text.push('\n');
        crate::master::write_secret_file(path, text.as_bytes())
    }

    /// The token text, for an `Authorization: Bearer` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the token text, hex: what the broker stores.
    pub fn sha256_hex(&self) -> String {
        hex::encode(cloak_crypto::hash::sha256(self.0.as_bytes()))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}
