//! Reading files that hold a secret (a model key, a master key, a token).
//!
//! Like ssh with private keys, [`read_secret`] refuses a file that group or others may access, or
//! that belongs to another user (root's files excepted): a secret that others could have read
//! is not a secret any more, and one that another user can rewrite is not the owner's. It opens
//! regular files only (a FIFO or device is refused without blocking), reads at most a fixed
//! number of bytes into a buffer that is wiped on drop and never reallocates, so no copy of the
//! secret escapes the wipe.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use zeroize::Zeroizing;

/// Reads the secret file at `path` as text, at most `limit` bytes, after checking that only its
/// owner — this user, or root — may read or change it.
pub fn read_secret(path: &Path, limit: usize) -> Result<Zeroizing<String>, SecretFileError> {
    let failed = |kind| SecretFileError {
        path: path.to_owned(),
        kind,
    };
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = rustix::fs::open(path, flags, Mode::empty())
        .map(File::from)
        .map_err(|e| failed(SecretFileErrorKind::Io(e.into())))?;
    let metadata = file
        .metadata()
        .map_err(|e| failed(SecretFileErrorKind::Io(e)))?;
    if !metadata.is_file() {
        return Err(failed(SecretFileErrorKind::NotAFile));
    }
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(failed(SecretFileErrorKind::Exposed {
            mode: mode & 0o7777,
        }));
    }
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me && metadata.uid() != 0 {
        return Err(failed(SecretFileErrorKind::Foreign {
            owner: metadata.uid(),
            me,
        }));
    }
    // Capacity for the whole read up front: the buffer never reallocates, so no copy of the
    // secret escapes zeroization.
    let mut text = Zeroizing::new(String::with_capacity(limit.saturating_add(1)));
    file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_string(&mut text)
        .map_err(|e| failed(SecretFileErrorKind::Io(e)))?;
    if text.len() > limit {
        return Err(failed(SecretFileErrorKind::TooLarge { limit }));
    }
    Ok(text)
}

/// Why a secret file was not read.
#[derive(Debug)]
pub struct SecretFileError {
    path: PathBuf,
    kind: SecretFileErrorKind,
}

#[derive(Debug)]
enum SecretFileErrorKind {
    /// Group or others may access it.
    Exposed { mode: u32 },
    /// Another user (not root) owns it.
    Foreign { owner: u32, me: u32 },
    /// It could not be opened or read (or is not UTF-8 text).
    Io(io::Error),
    /// It is not a regular file.
    NotAFile,
    /// It is larger than any such secret is.
    TooLarge { limit: usize },
}

impl SecretFileError {
    /// A stable code: `key-file-permissions`, `key-file-owner`, `not-a-file`,
    /// `key-file-too-large` or `io`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            SecretFileErrorKind::Exposed { .. } => "key-file-permissions",
            SecretFileErrorKind::Foreign { .. } => "key-file-owner",
            SecretFileErrorKind::Io(_) => "io",
            SecretFileErrorKind::NotAFile => "not-a-file",
            SecretFileErrorKind::TooLarge { .. } => "key-file-too-large",
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Display for SecretFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.kind {
            SecretFileErrorKind::Exposed { mode } => write!(
                f,
                "{path} is accessible to other users (mode {mode:04o}); run `chmod 600 {path}`"
            ),
            SecretFileErrorKind::Foreign { owner, me } => {
                write!(f, "{path} belongs to uid {owner}, not to you (uid {me})")
            }
            SecretFileErrorKind::Io(e) => write!(f, "cannot read {path}: {e}"),
            SecretFileErrorKind::NotAFile => write!(f, "{path} is not a regular file"),
            SecretFileErrorKind::TooLarge { limit } => {
                write!(f, "{path} is larger than {limit} bytes: not a key file")
            }
        }
    }
}

impl std::error::Error for SecretFileError {}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn only_a_private_regular_file_of_this_user_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "s3cret\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&path, 64).unwrap().as_str(), "s3cret\n");
        // Readable by the group, or by others: refused, with the fix in the message.
        for mode in [0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let error = read_secret(&path, 64).unwrap_err();
            assert_eq!(error.code(), "key-file-permissions");
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read_secret(&path, 64).is_ok());
        // Too large for any key file.
        assert_eq!(
            read_secret(&path, 4).unwrap_err().code(),
            "key-file-too-large"
        );
        // A directory, and a missing file.
        assert_eq!(
            read_secret(dir.path(), 64).unwrap_err().code(),
            "not-a-file"
        );
        assert_eq!(
            read_secret(&dir.path().join("missing"), 64)
                .unwrap_err()
                .code(),
            "io"
        );
    }
}
