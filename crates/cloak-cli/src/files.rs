//! Reading inputs and key files, writing key files, and progress on long operations.

use std::fs::{self, File};
use std::io::{IsTerminal, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cloak_crypto::key::ModelKey;
use indicatif::{ProgressBar, ProgressStyle};
use rustix::fs::{Mode, OFlags};
use zeroize::Zeroizing;

use crate::failure::Failure;
use cloak_fs::{AtomicFile, Commit};

/// Files larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 64 * 1024 * 1024;

/// Key files are tiny; reading stops here, so a wrong path cannot exhaust memory.
const KEY_FILE_READ_LIMIT: usize = 8 * 1024;

/// An input file opened for reading, with its length.
pub(crate) struct Input {
    pub(crate) file: File,
    pub(crate) len: u64,
}

/// Opens a regular file for reading (without blocking on FIFOs or devices, which are refused).
pub(crate) fn open_input(path: &Path) -> Result<Input, Failure> {
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let file = rustix::fs::open(path, flags, Mode::empty())
        .map(File::from)
        .map_err(|e| Failure::io("read", path, &e.into()))?;
    let metadata = file.metadata().map_err(|e| Failure::io("read", path, &e))?;
    if !metadata.is_file() {
        return Err(Failure::usage(
            "not-a-file",
            format!("{} is not a regular file", path.display()),
        ));
    }
    Ok(Input {
        file,
        len: metadata.len(),
    })
}

/// Reads a model key file. Like ssh with private keys, refuses a key file that other users can
/// access or that belongs to another user.
pub(crate) fn read_key_file(path: &Path) -> Result<ModelKey, Failure> {
    let Input { file, .. } = open_input(path)?;
    let metadata = file
        .metadata()
        .map_err(|e| Failure::io("read key file", path, &e))?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Failure::usage(
            "key-file-permissions",
            format!(
                "key file {} is accessible to other users (mode {:04o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
        ));
    }
    let me = rustix::process::geteuid();
    if metadata.uid() != me.as_raw() && metadata.uid() != 0 {
        return Err(Failure::usage(
            "key-file-owner",
            format!(
                "key file {} belongs to uid {}, not to you (uid {})",
                path.display(),
                metadata.uid(),
                me.as_raw()
            ),
        ));
    }
    // Capacity for the whole read up front: the buffer never reallocates, so no copy of the key
    // escapes zeroization.
    let mut text = Zeroizing::new(String::with_capacity(KEY_FILE_READ_LIMIT + 1));
    file.take(KEY_FILE_READ_LIMIT as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| Failure::io("read key file", path, &e))?;
    ModelKey::from_key_file(&text).map_err(|e| Failure::key(path, &e))
}

/// How to treat an output path that already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Refuse (the default: nothing is ever overwritten by surprise).
    Keep,
    /// Replace it atomically if it is a regular file (`--force`).
    Replace,
}

impl Existing {
    /// From a `--force` flag.
    pub(crate) fn from_force(force: bool) -> Self {
        if force { Self::Replace } else { Self::Keep }
    }

    /// The matching commit mode.
    pub(crate) fn commit(self) -> Commit {
        match self {
            Self::Keep => Commit::NoClobber,
            Self::Replace => Commit::Replace,
        }
    }
}

/// Checks, before any work is done, that an output can be written at `path`: nothing is there,
/// or (with [`Existing::Replace`]) a regular file is. Symbolic links, devices and directories
/// are never replaced.
pub(crate) fn check_output(path: &Path, what: &str, existing: Existing) -> Result<(), Failure> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Failure::io("check", path, &e)),
        Ok(meta) if !meta.file_type().is_file() => Err(Failure::usage(
            "not-a-file",
            format!(
                "refusing to replace {}: it is not a regular file",
                path.display()
            ),
        )),
        Ok(_) if existing == Existing::Keep => Err(Failure::usage(
            "file-exists",
            format!(
                "refusing to overwrite existing {what} {} (pass --force to replace it)",
                path.display()
            ),
        )),
        Ok(_) => Ok(()),
    }
}

/// Commits an output file, mapping the failure to a message about `path`.
pub(crate) fn commit_output(
    file: AtomicFile,
    path: &Path,
    what: &str,
    existing: Existing,
) -> Result<(), CommitFailure> {
    file.commit(existing.commit()).map_err(|e| {
        let failure = if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            Failure::usage(
                "file-exists",
                format!(
                    "refusing to overwrite existing {what} {} (it appeared while working)",
                    path.display()
                ),
            )
        } else if e.visible {
            Failure::io("sync the directory of", path, &e.error)
        } else {
            Failure::io("write", path, &e.error)
        };
        CommitFailure {
            failure,
            visible: e.visible,
        }
    })
}

/// A failed commit: the failure, and whether the file is nevertheless in place.
pub(crate) struct CommitFailure {
    pub(crate) failure: Failure,
    pub(crate) visible: bool,
}

/// A key file written atomically with mode 0600, never over an existing file.
pub(crate) fn write_key_file(path: &Path, key: &ModelKey) -> Result<(), Failure> {
    let mut file = AtomicFile::create(path, 0o600).map_err(|e| Failure::io("create", path, &e))?;
    file.file()
        .write_all(key.to_key_file().as_bytes())
        .map_err(|e| Failure::io("write", path, &e))?;
    commit_output(file, path, "key file", Existing::Keep).map_err(|e| e.failure)
}

/// Fails if any two of `paths` name the same file (existing or not).
pub(crate) fn ensure_distinct(paths: &[(&str, &Path)]) -> Result<(), Failure> {
    let resolved: Vec<(&str, Option<PathBuf>)> =
        paths.iter().map(|(what, p)| (*what, resolve(p))).collect();
    for (i, (what_a, a)) in resolved.iter().enumerate() {
        for (what_b, b) in resolved.iter().skip(i + 1) {
            if a.is_some() && a == b {
                return Err(Failure::usage(
                    "same-file",
                    format!("the {what_a} and the {what_b} must be different files"),
                ));
            }
        }
    }
    Ok(())
}

/// The canonical form of a path whose parent exists.
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(canonical) = fs::canonicalize(path) {
        return Some(canonical);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(fs::canonicalize(parent).ok()?.join(path.file_name()?))
}

/// A progress bar on stderr for inputs over 64 MiB when stderr is a terminal; hidden otherwise.
pub(crate) fn progress(len: u64, action: &'static str) -> ProgressBar {
    if len <= PROGRESS_THRESHOLD || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len).with_message(action);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
