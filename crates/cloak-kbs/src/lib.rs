#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// A parser of untrusted bytes: no unwrap, expect, indexing or unchecked arithmetic outside tests
// (clippy.toml lets tests unwrap, expect and index).
#![deny(clippy::unwrap_used, clippy::expect_used)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
#![cfg_attr(test, allow(clippy::arithmetic_side_effects))]

pub mod admin;
pub mod audit;
pub mod broker;
pub mod http;
pub mod master;
pub mod policy;
pub mod skr;
pub mod store;
pub mod token;

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::broker::{Broker, BrokerConfig};
pub use crate::master::MasterKey;
pub use crate::store::Database;
pub use crate::store::postgres::PostgresStore;
pub use crate::store::sqlite::SqliteStore;
pub use crate::token::AdminToken;

use crate::store::StoreError;

/// The environment variable that may hold the master key (64 hex digits); the CLI reads it.
pub const MASTER_KEY_ENV: &str = "CLOAK_KBS_MASTER_KEY";

/// Where the broker's time comes from: the system clock in service, a fixed or advancing one
/// in tests.
pub trait Clock: Send + Sync {
    /// Now, in Unix seconds.
    fn now(&self) -> u64;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// The default master-key file of a database: `DB.master-key`.
pub fn default_master_key_path(db: &Path) -> PathBuf {
    let mut path = OsString::from(db.as_os_str());
    path.push(".master-key");
    PathBuf::from(path)
}

/// Where `init` gets the master key.
#[non_exhaustive]
#[derive(Debug)]
pub enum MasterKeySource {
    /// A fresh key, written to this new file (mode 0600).
    CreateFile(PathBuf),
    /// A key given by the operator (from `CLOAK_KBS_MASTER_KEY`); nothing is written.
    Given(MasterKey),
}

/// `cloak kbs init`: creates the database (a SQLite file, mode 0600; a PostgreSQL database
/// must exist, and gets the schema) and, unless the key is given, the master-key file;
/// generates the admin token and writes it to `token_out` (mode 0600). Nothing existing is
/// overwritten and an initialised database is refused.
pub fn init(
    db: &Database,
    token_out: &Path,
    master: MasterKeySource,
    now: u64,
) -> Result<(), BrokerError> {
    let exists = |path: &Path| std::fs::symlink_metadata(path).is_ok();
    if exists(token_out) {
        return Err(BrokerError::FileExists(token_out.display().to_string()));
    }
    if let MasterKeySource::CreateFile(path) = &master
        && exists(path)
    {
        return Err(BrokerError::FileExists(path.display().to_string()));
    }
    if let Database::Sqlite(path) = db
        && !exists(path)
    {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| BrokerError::Io(format!("cannot create {}: {e}", path.display())))?;
    }
    let store = db.open()?;
    if store.meta("key_check")?.is_some() {
        return Err(BrokerError::AlreadyInitialised);
    }
    let master = match master {
        MasterKeySource::Given(key) => key,
        MasterKeySource::CreateFile(path) => {
            let key = MasterKey::generate()?;
            key.write_new_file(&path)?;
            key
        }
    };
    let token = AdminToken::generate()?;
    broker::initialise(store.as_ref(), &master, &token, now)?;
    token.write_new_file(token_out)
}

/// Why the broker refused or failed. Each variant has a stable [`code`](Self::code); the
/// messages never contain keys, tokens or plaintext.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// `init` on a database that is already initialised.
    #[error("the broker database is already initialised")]
    AlreadyInitialised,
    /// A release refused: a nonce, verification or appraisal failure, with its stable code.
    #[error("{message}")]
    Denied {
        /// The stable reason code (`nonce-unknown`, `measurement-mismatch`, ...).
        code: &'static str,
        /// What happened.
        message: String,
    },
    /// An output file exists already.
    #[error("refusing to overwrite existing {0}")]
    FileExists(String),
    /// A model key that is not 32 bytes.
    #[error("invalid model key: {0}")]
    InvalidKey(String),
    /// A model name outside 1–128 characters of `A-Za-z0-9._-`.
    #[error("a model name is 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidModelName,
    /// A release policy the broker does not accept.
    #[error("invalid release policy: {0}")]
    InvalidPolicy(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// A release policy that pins no enclave identity, so would release to any genuine
    /// enclave.
    #[error(
        "a release policy must name the enclave it releases to: [sgx] mrenclave, or [sgx] \
         mrsigner with isv_prod_id, or [tdx] mrtd (a policy with only a trust root releases the \
         key to any genuine enclave, a rebuilt or hostile one included)"
    )]
    PolicyPinsNoIdentity,
    /// A stored model key does not unwrap (a swapped or edited row).
    #[error("the stored model key does not unwrap under the master key")]
    KeyUnwrap,
    /// A request that is not well-formed.
    #[error("malformed request: {0}")]
    MalformedRequest(String),
    /// The master key is unusable (unreadable, malformed, or a file others can read).
    #[error("{0}")]
    MasterKey(String),
    /// A model of that name is registered already.
    #[error("a model of that name is registered already")]
    ModelExists,
    /// The database has not been initialised (`cloak kbs init`).
    #[error("the broker database is not initialised (run `cloak kbs init`)")]
    NotInitialised,
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    /// Too many calls from the caller's address: admin calls after repeated token failures.
    #[error("too many admin calls with a wrong token from this address; retry in {retry_after} s")]
    RateLimited {
        /// Seconds until the caller may try again.
        retry_after: u64,
    },
    /// HPKE sealing failed.
    #[error("sealing the key failed ({0})")]
    Seal(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The TLS certificate or key is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// A missing or wrong admin token.
    #[error("missing or wrong admin token")]
    Unauthorized,
    /// No model of that name.
    #[error("no model of that name is registered")]
    UnknownModel,
    /// The master key is not the one the database was initialised with.
    #[error("the master key is not the one this broker database was initialised with")]
    WrongMasterKey,
    /// A fleet of that name has a live key already, or another rotation made the same
    /// generation first.
    #[error("{0}")]
    FleetConflict(&'static str),
    /// No fleet of that name has a live key.
    #[error("no fleet of that name has a live key")]
    UnknownFleet,
}

impl BrokerError {
    /// A release refusal with a stable code.
    pub(crate) fn denied(code: &'static str, message: impl Into<String>) -> Self {
        Self::Denied {
            code,
            message: message.into(),
        }
    }

    /// The stable kebab-case code (the `error` of an error body, the audit `reason`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::AlreadyInitialised => "already-initialised",
            Self::Denied { code, .. } => code,
            Self::FileExists(_) => "file-exists",
            Self::InvalidKey(_) => "invalid-key",
            Self::InvalidModelName => "invalid-model-name",
            Self::InvalidPolicy(_) => "invalid-policy",
            Self::Io(_) => "io",
            Self::PolicyPinsNoIdentity => "policy-pins-no-identity",
            Self::KeyUnwrap => "key-unwrap-failed",
            Self::MalformedRequest(_) => "malformed-request",
            Self::MasterKey(_) => "master-key",
            Self::ModelExists => "model-exists",
            Self::NotInitialised => "not-initialised",
            Self::Random(_) => "random-failure",
            Self::RateLimited { .. } => "rate-limited",
            Self::Seal(code) => code,
            Self::Store(_) => "store-failed",
            Self::Tls(_) => "tls-config",
            Self::Unauthorized => "unauthorized",
            Self::UnknownModel => "unknown-model",
            Self::WrongMasterKey => "wrong-master-key",
            Self::FleetConflict(_) => "fleet-conflict",
            Self::UnknownFleet => "unknown-fleet",
        }
    }
}
