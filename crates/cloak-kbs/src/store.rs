//! Where the broker keeps its state: settings, model keys (wrapped) and policies, outstanding
//! nonces, and the audit log.
//!
//! [`Store`] is the interface; [`sqlite::SqliteStore`] the default backend (one file, WAL). The
//! SQL is kept portable to PostgreSQL (TEXT and BIGINT columns, `ON CONFLICT DO NOTHING`,
//! `UPDATE … RETURNING`, a `schema_migrations` table) so that a PostgreSQL backend can serve
//! several broker replicas from one database: nonces live in the store, not in memory, for that
//! reason. Every method is blocking; async callers run them on a blocking thread.

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

    /// Replaces a model's policy; `false` if there is no such model.
    fn update_policy(&self, name: &str, policy: &str, updated: u64) -> Result<bool, StoreError>;

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
