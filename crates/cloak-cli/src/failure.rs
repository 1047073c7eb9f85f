//! How commands fail: a message for people, a stable code for scripts, and the exit status.
//!
//! Exit statuses, for every command: `0` success; `1` verification or authentication failure
//! (tampered, truncated or foreign data, a wrong key); `2` bad usage or unreadable input
//! (missing files, malformed key files, unknown formats), and any other failure to do the job.

use std::fmt;
use std::io;
use std::path::Path;
use std::process::ExitCode;

use cloak_crypto::container::ContainerError;
use cloak_crypto::key::KeyError;

/// The exit status for verification failures.
pub(crate) const EXIT_VERIFICATION: u8 = 1;
/// The exit status for bad usage, unreadable input and other failures.
pub(crate) const EXIT_USAGE: u8 = 2;

/// A command failure.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: Kind,
    code: &'static str,
    message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Usage,
    Verification,
}

impl Failure {
    /// Bad usage or unreadable input (exit status 2).
    pub(crate) fn usage(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Usage,
            code,
            message: message.into(),
        }
    }

    /// A demonstration step that did not behave as Cloak must (exit status 1).
    #[cfg(all(feature = "sim", feature = "kbs"))]
    pub(crate) fn verification_in_demo(message: impl Into<String>) -> Self {
        Self {
            kind: Kind::Verification,
            code: "demo-check-failed",
            message: message.into(),
        }
    }

    /// An I/O failure on `path`, described with what was being done (exit status 2).
    pub(crate) fn io(action: &str, path: &Path, error: &io::Error) -> Self {
        Self::usage("io", format!("cannot {action} {}: {error}", path.display()))
    }

    /// Standard output could not be written (exit status 2).
    pub(crate) fn stdout(error: io::Error) -> Self {
        Self::usage(
            "stdout",
            format!("cannot write to standard output: {error}"),
        )
    }

    /// A container that failed to read or verify; the exit status follows the error.
    pub(crate) fn container(path: &Path, error: &ContainerError) -> Self {
        let kind = if error.is_verification_failure() {
            Kind::Verification
        } else {
            Kind::Usage
        };
        Self {
            kind,
            code: error.code(),
            message: format!("{}: {error}", path.display()),
        }
    }

    /// A key file that could not be used (exit status 2).
    pub(crate) fn key(path: &Path, error: &KeyError) -> Self {
        Self::usage(error.code(), format!("{}: {error}", path.display()))
    }

    /// The stable kebab-case code.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// The exit status.
    pub(crate) fn exit_status(&self) -> u8 {
        match self.kind {
            Kind::Usage => EXIT_USAGE,
            Kind::Verification => EXIT_VERIFICATION,
        }
    }

    /// The process exit code.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.exit_status())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
