//! The SQLite store: one file, write-ahead log, foreign keys on, a busy timeout so that
//! concurrent processes wait instead of failing, and numbered migrations recorded in
//! `schema_migrations`.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use cloak_proto::kbs::AuditRecord;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::audit::GENESIS;

use super::{
    MIGRATIONS, ModelRecord, NewAuditRecord, NonceRecord, Store, StoreError, int, uint, unix_now,
};

/// How long a statement waits for another writer before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    connection: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection = Connection::open(path).map_err(db)?;
        Self::configure(connection)
    }

    /// An in-memory database (for tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::configure(Connection::open_in_memory().map_err(db)?)
    }

    fn configure(mut connection: Connection) -> Result<Self, StoreError> {
        connection.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        let _mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db)?;
        connection
            .pragma_update(None, "foreign_keys", true)
            .map_err(db)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        migrate(&mut connection)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held leaves no transaction open (rusqlite rolls back on
        // drop), so the connection is still usable.
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Runs the migrations the database has not seen.
fn migrate(connection: &mut Connection) -> Result<(), StoreError> {
    connection
        .execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version BIGINT PRIMARY KEY,
                 applied BIGINT NOT NULL
             )",
        )
        .map_err(db)?;
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    for (version, sql) in MIGRATIONS {
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let current: i64 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(db)?;
        let current = u64::try_from(current).unwrap_or(0);
        if current > known {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known,
            });
        }
        if current >= *version {
            continue;
        }
        tx.execute_batch(sql).map_err(db)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES (?1, ?2)",
            params![int(*version)?, int(unix_now())?],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        tracing::info!(version, "applied broker schema migration");
    }
    Ok(())
}

impl Store for SqliteStore {
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(db)
    }

    fn insert_meta(&self, entries: &[(&str, &str)]) -> Result<bool, StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        for (key, value) in entries {
            let inserted = tx
                .execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                    [key, value],
                )
                .map_err(db)?;
            if inserted == 0 {
                // Dropping the transaction rolls back what was inserted so far.
                return Ok(false);
            }
        }
        tx.commit().map_err(db)?;
        Ok(true)
    }

    fn raise_meta_number(&self, key: &str, value: u64) -> Result<u64, StoreError> {
        let mut connection = self.lock();
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let before: Option<String> = tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .map_err(db)?;
        let before = match before {
            None => 0,
            Some(text) => text
                .parse::<u64>()
                .map_err(|_| StoreError::Corrupt(format!("meta {key} is not a number")))?,
        };
        if value > before {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value.to_string()],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(before)
    }

    fn insert_nonce(&self, nonce: &str, model: &str, expires: u64) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT INTO nonces (nonce, model, expires) VALUES (?1, ?2, ?3)",
                params![nonce, model, int(expires)?],
            )
            .map_err(db)?;
        Ok(())
    }

    fn take_nonce(&self, nonce: &str) -> Result<Option<NonceRecord>, StoreError> {
        // One statement: the increment and the read are atomic, so of concurrent callers
        // exactly one sees `uses = 1`.
        self.lock()
            .query_row(
                "UPDATE nonces SET uses = uses + 1 WHERE nonce = ?1 RETURNING model, expires, uses",
                [nonce],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?
            .map(|(model, expires, uses)| {
                Ok(NonceRecord {
                    model,
                    expires: uint(expires)?,
                    uses: uint(uses)?,
                })
            })
            .transpose()
    }

    fn purge_nonces(&self, time: u64) -> Result<u64, StoreError> {
        let deleted = self
            .lock()
            .execute("DELETE FROM nonces WHERE expires < ?1", [int(time)?])
            .map_err(db)?;
        Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
    }

    fn model(&self, name: &str) -> Result<Option<ModelRecord>, StoreError> {
        let row = self
            .lock()
            .query_row(
                "SELECT name, key_id, wrapped_key, policy, created, updated, mac
                 FROM models WHERE name = ?1",
                [name],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                        row.get::<_, i64>(5)?,
                        row.get::<_, String>(6)?,
                    ))
                },
            )
            .optional()
            .map_err(db)?;
        row.map(
            |(name, key_id, wrapped_key, policy, created, updated, mac)| {
                Ok(ModelRecord {
                    name,
                    key_id,
                    wrapped_key,
                    policy,
                    created: uint(created)?,
                    updated: uint(updated)?,
                    mac,
                })
            },
        )
        .transpose()
    }

    fn insert_model(&self, model: &ModelRecord) -> Result<bool, StoreError> {
        let inserted = self
            .lock()
            .execute(
                "INSERT INTO models (name, key_id, wrapped_key, policy, created, updated, mac)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING",
                params![
                    model.name,
                    model.key_id,
                    model.wrapped_key,
                    model.policy,
                    int(model.created)?,
                    int(model.updated)?,
                    model.mac
                ],
            )
            .map_err(db)?;
        Ok(inserted == 1)
    }

    fn update_policy(
        &self,
        name: &str,
        policy: &str,
        updated: u64,
        mac: &str,
    ) -> Result<bool, StoreError> {
        let changed = self
            .lock()
            .execute(
                "UPDATE models SET policy = ?2, updated = ?3, mac = ?4 WHERE name = ?1",
                params![name, policy, int(updated)?, mac],
            )
            .map_err(db)?;
        Ok(changed == 1)
    }

    fn delete_model(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = self
            .lock()
            .execute("DELETE FROM models WHERE name = ?1", [name])
            .map_err(db)?;
        Ok(deleted == 1)
    }

    fn append_audit(
        &self,
        record: &NewAuditRecord,
        chain: &dyn Fn(&NewAuditRecord, u64, &str) -> String,
    ) -> Result<AuditRecord, StoreError> {
        let mut connection = self.lock();
        // IMMEDIATE takes the write lock before reading the head, so two writers (even in two
        // processes) cannot both chain onto the same record.
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let head = tx
            .query_row(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(db)?;
        let (seq, prev) = match head {
            Some((seq, hash)) => (
                uint(seq)?
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Corrupt("audit sequence overflow".into()))?,
                hash,
            ),
            None => (1, GENESIS.to_owned()),
        };
        let hash = chain(record, seq, &prev);
        let measurements = serde_json::to_string(&record.measurements)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO audit_log
                 (seq, time, event, model, decision, reason, client, measurements, prev, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                int(seq)?,
                int(record.time)?,
                record.event,
                record.model,
                record.decision,
                record.reason,
                record.client,
                measurements,
                prev,
                hash
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(super::chained(record, seq, prev, hash))
    }

    fn audit_page(&self, after: u64, limit: u64) -> Result<Vec<AuditRecord>, StoreError> {
        let connection = self.lock();
        let mut statement = connection
            .prepare(
                "SELECT seq, time, event, model, decision, reason, client, measurements, prev, hash
                 FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(db)?;
        let rows = statement
            .query_map(params![int(after)?, int(limit)?], |row| {
                Ok(super::stored_audit_record(
                    row.get(0)?,
                    row.get(1)?,
                    [
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                        row.get(6)?,
                    ],
                    row.get(7)?,
                    row.get(8)?,
                    row.get(9)?,
                ))
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }
}

fn db(error: rusqlite::Error) -> StoreError {
    StoreError::Database(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kbs.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.insert_meta(&[("a", "1")]).unwrap());
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.meta("a").unwrap().as_deref(), Some("1"));
        let versions: i64 = store
            .lock()
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(usize::try_from(versions).unwrap(), MIGRATIONS.len());
    }

    #[test]
    fn a_database_from_an_earlier_schema_is_brought_up_to_date() {
        // A database as the first schema left it, with a model row.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kbs.db");
        let connection = Connection::open(&path).unwrap();
        connection
            .execute_batch(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied BIGINT NOT NULL);
                 INSERT INTO schema_migrations VALUES (1, 0);",
            )
            .unwrap();
        connection.execute_batch(MIGRATIONS[0].1).unwrap();
        connection
            .execute(
                "INSERT INTO models VALUES ('m', 'id', 'wrapped', 'policy', 1, 1)",
                [],
            )
            .unwrap();
        drop(connection);
        // The later migrations run; the old row has no MAC (and so releases nothing until its
        // policy is set again: see the broker's tests).
        let store = SqliteStore::open(&path).unwrap();
        let record = store.model("m").unwrap().unwrap();
        assert_eq!(
            (record.policy.as_str(), record.mac.as_str()),
            ("policy", "")
        );
        let versions: i64 = store
            .lock()
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            u64::try_from(versions).unwrap(),
            MIGRATIONS.last().unwrap().0
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kbs.db");
        let store = SqliteStore::open(&path).unwrap();
        store
            .lock()
            .execute(
                "INSERT INTO schema_migrations (version, applied) VALUES (99, 0)",
                [],
            )
            .unwrap();
        drop(store);
        assert!(matches!(
            SqliteStore::open(&path),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }
}
