//! Output files that appear complete or not at all: the `cloak` CLI's outputs, sealed blobs and
//! key files all go through [`AtomicFile`]. Files that hold secrets are read through
//! [`secret::read_secret`], which refuses one that other users could read or change.
//!
//! An [`AtomicFile`] is written in the destination's directory, invisible until
//! [`AtomicFile::commit`]: on Linux it is an unnamed `O_TMPFILE` inode, so a crash or `SIGKILL`
//! while it is being written leaves nothing behind; where the file system lacks `O_TMPFILE` it is
//! a hidden temporary file that is removed on drop (but not on `SIGKILL`). Committing syncs the
//! data, links it into place — directly when the destination does not exist; when replacing,
//! through a hidden name that is renamed over the destination at once — and syncs the directory.

pub mod secret;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};

/// What [`AtomicFile::commit`] does when the destination already exists.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commit {
    /// Fail with [`io::ErrorKind::AlreadyExists`] and leave the existing file untouched.
    NoClobber,
    /// Replace it atomically.
    Replace,
}

/// A file being written that becomes visible at its destination only when committed.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    destination: PathBuf,
    /// The hidden temporary path, when `O_TMPFILE` was not available.
    named: Option<PathBuf>,
}

impl AtomicFile {
    /// Starts a file that will be committed to `destination`, created with permission `mode`
    /// (further restricted by the umask).
    pub fn create(destination: &Path, mode: u32) -> io::Result<Self> {
        let dir = parent_dir(destination);
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::open(dir, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => Ok(Self {
                file: File::from(fd),
                destination: destination.to_path_buf(),
                named: None,
            }),
            // The kernel or file system has no O_TMPFILE (or the directory is missing, which the
            // named path reports clearly).
            Err(_) => Self::create_named(destination, mode),
        }
    }

    /// Like [`AtomicFile::create`], but always with a hidden, named temporary file.
    pub fn create_named(destination: &Path, mode: u32) -> io::Result<Self> {
        let dir = parent_dir(destination);
        loop {
            let path = dir.join(temporary_name(destination));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&path)
            {
                Ok(file) => {
                    return Ok(Self {
                        file,
                        destination: destination.to_path_buf(),
                        named: Some(path),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The file to write to.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Makes the complete file visible at its destination.
    pub fn commit(mut self, commit: Commit) -> Result<(), CommitError> {
        self.file.sync_all().map_err(CommitError::hidden)?;
        match (self.named.take(), commit) {
            (None, Commit::NoClobber) => self.link_unnamed(&self.destination),
            (None, Commit::Replace) => match self.link_unnamed(&self.destination) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    self.link_unnamed_to_temporary().and_then(|staged| {
                        fs::rename(&staged, &self.destination).inspect_err(|_| {
                            let _ = fs::remove_file(&staged);
                        })
                    })
                }
                linked => linked,
            },
            (Some(named), Commit::NoClobber) => {
                let linked = fs::hard_link(&named, &self.destination);
                let _ = fs::remove_file(&named);
                linked
            }
            (Some(named), Commit::Replace) => {
                fs::rename(&named, &self.destination).inspect_err(|_| {
                    let _ = fs::remove_file(&named);
                })
            }
        }
        .map_err(CommitError::hidden)?;
        File::open(parent_dir(&self.destination))
            .and_then(|dir| dir.sync_all())
            .map_err(|error| CommitError {
                error,
                visible: true,
            })
    }

    /// Links the unnamed file at `target`, which must not exist.
    fn link_unnamed(&self, target: &Path) -> io::Result<()> {
        let source = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        match rustix::fs::linkat(CWD, source.as_str(), CWD, target, AtFlags::SYMLINK_FOLLOW) {
            // No /proc: link the descriptor itself (Linux ≥ 6.10, or CAP_DAC_READ_SEARCH).
            Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").exists() => {
                rustix::fs::linkat(&self.file, "", CWD, target, AtFlags::EMPTY_PATH)
            }
            linked => linked,
        }
        .map_err(io::Error::from)
    }

    fn link_unnamed_to_temporary(&self) -> io::Result<PathBuf> {
        let dir = parent_dir(&self.destination);
        loop {
            let staged = dir.join(temporary_name(&self.destination));
            match self.link_unnamed(&staged) {
                Ok(()) => return Ok(staged),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// A commit that failed; `visible` tells whether the file nevertheless reached its destination
/// (only syncing the directory failed, so it may not survive a crash).
#[derive(Debug)]
pub struct CommitError {
    /// What went wrong.
    pub error: io::Error,
    /// Whether the file nevertheless reached its destination.
    pub visible: bool,
}

impl CommitError {
    fn hidden(error: io::Error) -> Self {
        Self {
            error,
            visible: false,
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(named) = self.named.take() {
            let _ = fs::remove_file(named);
        }
    }
}

/// The directory a path lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// `.NAME.PID-NANOS-COUNTER.tmp`: hidden, and unique within this process.
fn temporary_name(destination: &Path) -> OsString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut name = OsString::from(".");
    name.push(destination.file_name().unwrap_or_default());
    name.push(format!(
        ".{}-{nanos}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    name
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    type Create = fn(&Path, u32) -> io::Result<AtomicFile>;

    fn constructors() -> [(&'static str, Create); 2] {
        [
            ("unnamed", AtomicFile::create),
            ("named", AtomicFile::create_named),
        ]
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn nothing_is_visible_until_commit_and_nothing_remains_after_drop() {
        for (kind, create) in constructors() {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("out.bin");
            let mut file = create(&dest, 0o600).unwrap();
            file.file().write_all(b"partial").unwrap();
            assert!(!dest.exists(), "{kind}");
            drop(file);
            assert!(
                entries(dir.path()).is_empty(),
                "{kind}: {:?}",
                entries(dir.path())
            );
        }
    }

    #[test]
    fn commit_replaces_atomically_with_the_requested_mode() {
        for (kind, create) in constructors() {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("out.bin");
            fs::write(&dest, b"old").unwrap();
            let mut file = create(&dest, 0o600).unwrap();
            file.file().write_all(b"new contents").unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"old", "{kind}");
            file.commit(Commit::Replace).unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"new contents", "{kind}");
            let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{kind}");
            assert_eq!(entries(dir.path()), ["out.bin"], "{kind}");
        }
    }

    #[test]
    fn no_clobber_commit_keeps_an_existing_file() {
        for (kind, create) in constructors() {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("key");
            fs::write(&dest, b"precious").unwrap();
            let mut file = create(&dest, 0o600).unwrap();
            file.file().write_all(b"new").unwrap();
            let err = file.commit(Commit::NoClobber).unwrap_err();
            assert_eq!(err.error.kind(), io::ErrorKind::AlreadyExists, "{kind}");
            assert!(!err.visible);
            assert_eq!(fs::read(&dest).unwrap(), b"precious", "{kind}");
            assert_eq!(entries(dir.path()), ["key"], "{kind}");
        }
    }

    #[test]
    fn no_clobber_commit_creates_a_new_file() {
        for (kind, create) in constructors() {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("key");
            let mut file = create(&dest, 0o600).unwrap();
            file.file().write_all(b"secret").unwrap();
            file.commit(Commit::NoClobber).unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"secret", "{kind}");
            assert_eq!(entries(dir.path()), ["key"], "{kind}");
        }
    }

    #[test]
    fn replace_commit_creates_a_new_file() {
        for (kind, create) in constructors() {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("model.onnx");
            let mut file = create(&dest, 0o600).unwrap();
            file.file().write_all(b"weights").unwrap();
            file.commit(Commit::Replace).unwrap();
            assert_eq!(fs::read(&dest).unwrap(), b"weights", "{kind}");
            assert_eq!(entries(dir.path()), ["model.onnx"], "{kind}");
        }
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("missing").join("out");
        for (kind, create) in constructors() {
            let err = create(&dest, 0o600).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{kind}");
        }
    }
}
