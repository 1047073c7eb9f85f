//! Files in and out: inputs read within a size limit, key files, outputs that appear complete or
//! not at all and never replace what they must not, and progress on long operations.

use std::fs::{self, File};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use cloak_crypto::key::{MAX_KEY_FILE_LEN, ModelKey};
use indicatif::{ProgressBar, ProgressStyle};
use rustix::fs::{Mode, OFlags};

use crate::failure::Failure;
use cloak_fs::{AtomicFile, Commit};

/// Files larger than this get a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 64 * 1024 * 1024;

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

/// Reads a regular file of at most `limit` bytes: a `what` (quote, collateral, request, ...) is
/// never larger, so a wrong path cannot exhaust memory.
pub(crate) fn read_limited(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, Failure> {
    let Input { mut file, len } = open_input(path)?;
    if len > limit {
        return Err(Failure::usage(
            "input-too-large",
            format!(
                "{} is larger than {limit} bytes: too large to be a {what}",
                path.display()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    std::io::Read::read_to_end(&mut file, &mut bytes)
        .map_err(|e| Failure::io(&format!("read {what}"), path, &e))?;
    Ok(bytes)
}

/// Writes `bytes` to a new file atomically (mode 0644), never over an existing one.
pub(crate) fn write_new(path: &Path, bytes: &[u8], what: &str) -> Result<(), Failure> {
    write_output(path, bytes, what, Existing::Keep)
}

/// Writes `bytes` to `path` atomically (mode 0644), replacing a regular file there: for outputs
/// a command keeps current.
pub(crate) fn write_replacing(path: &Path, bytes: &[u8], what: &str) -> Result<(), Failure> {
    write_output(path, bytes, what, Existing::Replace)
}

/// Writes `value` as pretty JSON to `path` atomically, over an existing file only with
/// [`Existing::Replace`].
pub(crate) fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    what: &str,
    existing: Existing,
) -> Result<(), Failure> {
    write_output(path, &to_json(value)?, what, existing)
}

/// `value` as pretty JSON.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, Failure> {
    serde_json::to_vec_pretty(value)
        .map_err(|e| Failure::usage("json", format!("cannot render JSON: {e}")))
}

/// Writes `bytes` to `path` atomically (mode 0644), over an existing file only with
/// [`Existing::Replace`].
pub(crate) fn write_output(
    path: &Path,
    bytes: &[u8],
    what: &str,
    existing: Existing,
) -> Result<(), Failure> {
    check_output(path, what, existing)?;
    let mut file = AtomicFile::create(path, 0o644).map_err(|e| Failure::io("create", path, &e))?;
    file.file()
        .write_all(bytes)
        .map_err(|e| Failure::io("write", path, &e))?;
    commit_output(file, path, what, existing).map_err(|e| e.failure)
}

/// Reads a model key file. Like ssh with private keys, refuses a key file that other users can
/// access or that belongs to another user.
pub(crate) fn read_key_file(path: &Path) -> Result<ModelKey, Failure> {
    let text = cloak_fs::secret::read_secret(path, MAX_KEY_FILE_LEN)
        .map_err(|e| Failure::usage(e.code(), format!("key file {e}")))?;
    ModelKey::from_key_file(&text).map_err(|e| Failure::key(path, &e))
}

/// How to treat an output path that already exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Existing {
    /// Refuse (the default: nothing is ever overwritten by surprise).
    Keep,
    /// Replace it atomically if it is a regular file (`--force`).
    Replace,
    /// Refuse, `--force` or not: for secrets (key files, tokens), which are never replaced.
    Never,
}

impl Existing {
    /// From a `--force` flag.
    pub(crate) fn from_force(force: bool) -> Self {
        if force { Self::Replace } else { Self::Keep }
    }

    /// The matching commit mode.
    pub(crate) fn commit(self) -> Commit {
        match self {
            Self::Keep | Self::Never => Commit::NoClobber,
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
        Ok(_) if existing == Existing::Never => Err(Failure::usage(
            "file-exists",
            format!(
                "refusing to overwrite existing {what} {} (it is never replaced: move it away \
                 first)",
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
    commit_output(file, path, "key file", Existing::Never).map_err(|e| e.failure)
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
