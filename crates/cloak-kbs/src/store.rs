//! Where the broker keeps its state: settings, model keys (wrapped) and policies, outstanding
//! nonces, and the audit log.
//!
//! [`Store`] is the interface, with two backends: [`sqlite::SqliteStore`], the embedded default
//! (one file, WAL), and [`postgres::PostgresStore`], for several broker replicas on one
//! database. They share the schema (`MIGRATIONS`: TEXT and BIGINT columns,
//! `ON CONFLICT DO NOTHING`, `UPDATE … RETURNING`, a `schema_migrations` table) and pass one
//! conformance suite (`tests/store.rs`). Nonces live in the store, not in memory, so that any
//! replica redeems a nonce another issued. Every method is blocking; async callers run them on
//! a blocking thread. [`Database`] picks the backend from what `--db` names.

pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;

use cloak_proto::kbs::AuditRecord;

/// A registered model.
#[derive(Clone, PartialEq, Eq)]
pub struct ModelRecord {
    /// The model name.
    pub name: String,
    /// The key's public id (hex).
    pub key_id: String,
    /// The key, wrapped under the master key (hex; see [`crate::master`]).
    pub wrapped_key: String,
    /// The release policy (appraisal-policy TOML).
    pub policy: String,
    /// When it was added (Unix seconds).
    pub created: u64,
    /// When its policy last changed (Unix seconds).
    pub updated: u64,
    /// HMAC (hex) over the other fields under a key derived from the master key, so that a
    /// row the broker did not write is not acted on (empty in rows written before it existed).
    pub mac: String,
}

impl std::fmt::Debug for ModelRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRecord")
            .field("name", &self.name)
            .field("key_id", &self.key_id)
            .field("created", &self.created)
            .field("updated", &self.updated)
            .finish_non_exhaustive()
    }
}

/// An issued nonce, as [`Store::take_nonce`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonceRecord {
    /// The model it was issued for.
    pub model: String,
    /// When it stops being accepted (Unix seconds).
    pub expires: u64,
    /// How many times it has been presented, this time included: only `1` is a first use.
    pub uses: u64,
}

/// An audit record before it is chained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditRecord {
    /// When (Unix seconds).
    pub time: u64,
    /// The event (`release`, `add-model`, ...).
    pub event: String,
    /// The model concerned.
    pub model: String,
    /// `granted`, `done` or `denied`.
    pub decision: String,
    /// The stable reason code.
    pub reason: String,
    /// The caller's address.
    pub client: String,
    /// What the evidence said.
    pub measurements: BTreeMap<String, String>,
}

/// The schema, as numbered migrations, shared by both backends; each runs once, in order.
/// Types are TEXT and BIGINT (PostgreSQL's INTEGER is 32 bits; SQLite treats BIGINT as
/// INTEGER).
const MIGRATIONS: &[(u64, &str)] = &[
    (
        1,
        "CREATE TABLE meta (
         key TEXT PRIMARY KEY,
         value TEXT NOT NULL
     );
     CREATE TABLE models (
         name TEXT PRIMARY KEY,
         key_id TEXT NOT NULL,
         wrapped_key TEXT NOT NULL,
         policy TEXT NOT NULL,
         created BIGINT NOT NULL,
         updated BIGINT NOT NULL
     );
     CREATE TABLE nonces (
         nonce TEXT PRIMARY KEY,
         model TEXT NOT NULL REFERENCES models (name) ON DELETE CASCADE,
         expires BIGINT NOT NULL,
         uses BIGINT NOT NULL DEFAULT 0
     );
     CREATE INDEX nonces_expires ON nonces (expires);
     CREATE TABLE audit_log (
         seq BIGINT PRIMARY KEY,
         time BIGINT NOT NULL,
         event TEXT NOT NULL,
         model TEXT NOT NULL,
         decision TEXT NOT NULL,
         reason TEXT NOT NULL,
         client TEXT NOT NULL,
         measurements TEXT NOT NULL,
         prev TEXT NOT NULL,
         hash TEXT NOT NULL
     );",
    ),
    (
        2,
        // Model rows authenticated by the broker (see `master`); rows from before stay
        // unauthenticated, and release nothing, until `set-policy` rewrites them.
        "ALTER TABLE models ADD COLUMN mac TEXT NOT NULL DEFAULT ''",
    ),
];

/// Where the broker's state lives, as `--db` names it: a `postgres://` (or `postgresql://`)
/// URL, or else the path of a SQLite file.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Database {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database.
    Postgres {
        /// Its URL (it may carry a password: shown redacted).
        url: String,
        /// PEM certificates that sign its TLS certificate [default: the Mozilla roots].
        ca: Option<std::path::PathBuf>,
    },
}

impl Database {
    /// Reads what `--db` gave.
    pub fn parse(db: &str) -> Self {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            Self::Postgres {
                url: db.to_owned(),
                ca: None,
            }
        } else {
            Self::Sqlite(db.into())
        }
    }

    /// The same database, its TLS certificate trusted through the PEM certificates in `ca`
    /// (PostgreSQL; a SQLite file has no connection to secure).
    #[must_use]
    pub fn with_ca(self, ca: Option<std::path::PathBuf>) -> Self {
        match self {
            Self::Postgres { url, .. } => Self::Postgres { url, ca },
            sqlite => sqlite,
        }
    }

    /// Opens the store (a SQLite file is created if missing) and brings its schema up to
    /// date.
    pub fn open(&self) -> Result<std::sync::Arc<dyn Store>, StoreError> {
        Ok(match self {
            Self::Sqlite(path) => std::sync::Arc::new(sqlite::SqliteStore::open(path)?),
            Self::Postgres { url, ca } => {
                let ca_pem = ca
                    .as_ref()
                    .map(|path| {
                        std::fs::read(path).map_err(|e| {
                            StoreError::Database(format!("cannot read {}: {e}", path.display()))
                        })
                    })
                    .transpose()?;
                std::sync::Arc::new(postgres::PostgresStore::open(url, ca_pem.as_deref())?)
            }
        })
    }

    /// The master-key file `init` writes and `serve` reads by default: `DB.master-key` beside
    /// a SQLite file; none for PostgreSQL (the key never goes near the database: give a file
    /// or `CLOAK_KBS_MASTER_KEY`).
    pub fn default_master_key_path(&self) -> Option<std::path::PathBuf> {
        match self {
            Self::Sqlite(path) => Some(crate::default_master_key_path(path)),
            Self::Postgres { .. } => None,
        }
    }
}

impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres { url, .. } => f.write_str(&redact_password(url)),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

/// `scheme://user:password@host/...` with the password replaced by `***`.
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_owned(),
    }
}

/// A chained record as returned by [`Store::append_audit`].
fn chained(record: &NewAuditRecord, seq: u64, prev: String, hash: String) -> AuditRecord {
    AuditRecord {
        seq,
        time: record.time,
        event: record.event.clone(),
        model: record.model.clone(),
        decision: record.decision.clone(),
        reason: record.reason.clone(),
        client: record.client.clone(),
        measurements: record.measurements.clone(),
        prev,
        hash,
    }
}

/// An audit record as a row stores it: `[event, model, decision, reason, client]`, and the
/// measurements as JSON. Out-of-range numbers cannot verify and are shown as 0 rather than
/// hidden; an edited, unreadable measurements map is kept visible (and fails verification).
fn stored_audit_record(
    seq: i64,
    time: i64,
    [event, model, decision, reason, client]: [String; 5],
    measurements: String,
    prev: String,
    hash: String,
) -> AuditRecord {
    AuditRecord {
        seq: u64::try_from(seq).unwrap_or(0),
        time: u64::try_from(time).unwrap_or(0),
        event,
        model,
        decision,
        reason,
        client,
        measurements: serde_json::from_str(&measurements)
            .unwrap_or_else(|_| BTreeMap::from([("unreadable".to_owned(), measurements)])),
        prev,
        hash,
    }
}

/// When a migration is applied, for its record.
fn unix_now() -> u64 {
    crate::Clock::now(&crate::SystemClock)
}

/// A number as the database's BIGINT holds it.
fn int(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} is out of range")))
}

/// A BIGINT read back as the number it holds.
fn uint(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} is out of range")))
}

/// Audit records read at once when a whole log is walked.
pub const AUDIT_PAGE: u64 = 1000;

/// The broker's storage.
pub trait Store: Send + Sync {
    /// A setting.
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Inserts settings, all or none: `false` (and nothing written) if any key already exists.
    fn insert_meta(&self, entries: &[(&str, &str)]) -> Result<bool, StoreError>;

    /// Raises the number stored under `key` to `value` when it is lower or absent, atomically;
    /// returns the number stored before (0 if none). Numbers never go down.
    fn raise_meta_number(&self, key: &str, value: u64) -> Result<u64, StoreError>;

    /// Records a fresh nonce (hex) for `model`.
    fn insert_nonce(&self, nonce: &str, model: &str, expires: u64) -> Result<(), StoreError>;

    /// Counts a use of a nonce and returns it, in one atomic step: of concurrent callers, at
    /// most one sees `uses == 1`. A used nonce stays (so that a replay is audited under its
    /// model) until it is purged.
    fn take_nonce(&self, nonce: &str) -> Result<Option<NonceRecord>, StoreError>;

    /// Deletes nonces (used or not) that expired before `time`; returns how many.
    fn purge_nonces(&self, time: u64) -> Result<u64, StoreError>;

    /// A model, if registered.
    fn model(&self, name: &str) -> Result<Option<ModelRecord>, StoreError>;

    /// Registers a model; `false` if the name is taken.
    fn insert_model(&self, model: &ModelRecord) -> Result<bool, StoreError>;

    /// Replaces a model's policy, its `updated` time and its `mac`; `false` if there is no such
    /// model.
    fn update_policy(
        &self,
        name: &str,
        policy: &str,
        updated: u64,
        mac: &str,
    ) -> Result<bool, StoreError>;

    /// Removes a model; `false` if there is no such model.
    fn delete_model(&self, name: &str) -> Result<bool, StoreError>;

    /// Appends an audit record atomically: reads the head (last sequence number and hash),
    /// computes the new record's hash (hex) with `chain(record, seq, prev)` (`prev` in hex), and inserts it, in one
    /// transaction.
    fn append_audit(
        &self,
        record: &NewAuditRecord,
        chain: &dyn Fn(&NewAuditRecord, u64, &str) -> String,
    ) -> Result<AuditRecord, StoreError>;

    /// Up to `limit` audit records with sequence numbers above `after`, in order.
    fn audit_page(&self, after: u64, limit: u64) -> Result<Vec<AuditRecord>, StoreError>;

    /// Every audit record, by sequence number (read a page at a time).
    fn audit_records(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.audit_page(after, AUDIT_PAGE)?;
            let Some(last) = page.last() else {
                return Ok(all);
            };
            if last.seq <= after {
                return Ok(all);
            }
            after = last.seq;
            all.extend(page);
        }
    }
}

/// A storage failure. The message never contains key material.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database holds something this version cannot read.
    #[error("the database is corrupt: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// The database was written by a newer version of the broker.
    #[error("the database schema is version {found}, newer than this broker's {known}")]
    SchemaTooNew {
        /// The database's.
        found: u64,
        /// Ours.
        known: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_names_pick_the_backend_and_urls_show_no_password() {
        assert_eq!(Database::parse("kbs.db"), Database::Sqlite("kbs.db".into()));
        let url = "postgresql://cloak:s3cret@db.internal:5432/kbs?sslmode=disable";
        let db = Database::parse(url);
        assert!(matches!(db, Database::Postgres { .. }));
        let shown = format!("{db} {db:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgresql://cloak:***@db.internal:5432/kbs?sslmode=disable"));
        assert_eq!(db.default_master_key_path(), None);
        assert_eq!(
            Database::parse("postgres://cloak@host/kbs").to_string(),
            "postgres://cloak@host/kbs"
        );
        assert_eq!(
            Database::parse("/var/kbs.db").default_master_key_path(),
            Some("/var/kbs.db.master-key".into())
        );
    }
}
