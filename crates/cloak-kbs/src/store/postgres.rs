//! The PostgreSQL store, for several broker replicas on one database.
//!
//! Same schema and migrations as the SQLite store (the SQL is shared: `store::MIGRATIONS`).
//! What makes replicas behave as one broker lives in the database, not in a process:
//! - a nonce is used up by one `UPDATE … RETURNING` (row-locked), so of replicas presenting it
//!   at once exactly one sees its first use;
//! - the audit chain's head is read and extended under a transaction-scoped advisory lock, so
//!   appends from every replica form one linear chain (and `seq` is the primary key, so a
//!   fork could not be written even without the lock);
//! - migrations run under an advisory lock too, so replicas starting together migrate once;
//! - every request reads the models and policies afresh, so an admin change made at one replica
//!   is in force at all of them as soon as it commits.
//!
//! The client is the blocking `postgres` crate (rust-postgres) with an `r2d2` pool: the
//! [`Store`] trait is blocking and every caller already runs it on a blocking thread.
//!
//! TLS (rustls, verifying the server's certificate and name against `--db-ca`, or the Mozilla
//! roots) is required for any host but a loopback address unless the URL says otherwise
//! (`sslmode=disable` or `prefer`, for a private network only): what crosses the link is not
//! secret (model keys are wrapped under the master key, which never enters the database; model
//! rows carry a MAC), but an attacker on it could replay rows the broker wrote earlier or deny
//! service.

use std::time::Duration;

use std::sync::Arc;

use cloak_proto::kbs::AuditRecord;
use postgres::config::{Host, SslMode};
use postgres::types::ToSql;
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::audit::GENESIS;

use super::{MIGRATIONS, ModelRecord, NewAuditRecord, NonceRecord, Store, StoreError, int, uint};

/// Connections a broker process keeps to the database at most.
const POOL_SIZE: u32 = 8;
/// How long opening the store, or a request, waits for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Advisory-lock keys (arbitrary, fixed): one for migrations, one for the audit chain's head.
const MIGRATION_LOCK: i64 = 0x636c_6f61_6b00_0001;
const AUDIT_LOCK: i64 = 0x636c_6f61_6b00_0002;

type Manager = PostgresConnectionManager<MakeRustlsConnect>;
type Pool = r2d2::Pool<Manager>;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: never shown.
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?…]`),
    /// over TLS trusting the certificates in `ca_pem` (PEM) or else the Mozilla roots, and
    /// brings its schema up to date.
    pub fn open(url: &str, ca_pem: Option<&[u8]>) -> Result<Self, StoreError> {
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Database(format!("the PostgreSQL URL: {e}")))?;
        if !url.contains("sslmode=") && !only_loopback(config.get_hosts()) {
            config.ssl_mode(SslMode::Require);
        }
        if config.get_ssl_mode() == SslMode::Disable {
            tracing::warn!("the PostgreSQL connection is not encrypted (sslmode=disable)");
        }
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("cloak-kbs");
        let tls = MakeRustlsConnect::new(tls(ca_pem)?);
        // One connection first, which also migrates: a wrong URL, an unreachable server or a
        // refused certificate is reported at once with its reason (a pool would retry until
        // its timeout and report only that).
        let mut first = config.connect(tls.clone()).map_err(|e| {
            StoreError::Database(format!("cannot connect to PostgreSQL: {}", with_causes(&e)))
        })?;
        migrate(&mut first)?;
        drop(first);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            // A connection the server dropped (restart, failover) is found before it is used.
            .test_on_check_out(true)
            .build_unchecked(PostgresConnectionManager::new(config, tls));
        Ok(Self { pool })
    }

    fn client(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        self.pool
            .get()
            .map_err(|e| StoreError::Database(format!("no PostgreSQL connection: {e}")))
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        self.client()?.execute(sql, params).map_err(db)
    }
}

/// Runs the migrations the database has not seen, all in one transaction under an advisory
/// lock (PostgreSQL's DDL is transactional).
fn migrate(client: &mut postgres::Client) -> Result<(), StoreError> {
    let mut tx = client.transaction().map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version BIGINT PRIMARY KEY,
             applied BIGINT NOT NULL
         )",
    )
    .map_err(db)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .map_err(db)?
        .get(0);
    let current = u64::try_from(current).unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
    if current > known {
        return Err(StoreError::SchemaTooNew {
            found: current,
            known,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(sql).map_err(db)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES ($1, $2)",
            &[&int(*version)?, &int(super::unix_now())?],
        )
        .map_err(db)?;
        tracing::info!(version, "applied broker schema migration");
    }
    tx.commit().map_err(db)
}

impl Store for PostgresStore {
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .client()?
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .map_err(db)?
            .map(|row| row.get(0)))
    }

    fn insert_meta(&self, entries: &[(&str, &str)]) -> Result<bool, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(db)?;
        for (key, value) in entries {
            let inserted = tx
                .execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[key, value],
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
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(db)?;
        // Serialises raisers of this key (a row lock cannot: the row may not exist yet).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("meta:{key}")],
        )
        .map_err(db)?;
        let before = match tx
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .map_err(db)?
        {
            None => 0,
            Some(row) => row
                .get::<_, String>(0)
                .parse::<u64>()
                .map_err(|_| StoreError::Corrupt(format!("meta {key} is not a number")))?,
        };
        if value > before {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&key, &value.to_string()],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(before)
    }

    fn insert_nonce(&self, nonce: &str, model: &str, expires: u64) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO nonces (nonce, model, expires) VALUES ($1, $2, $3)",
            &[&nonce, &model, &int(expires)?],
        )?;
        Ok(())
    }

    fn take_nonce(&self, nonce: &str) -> Result<Option<NonceRecord>, StoreError> {
        // One statement, row-locked: of replicas presenting the nonce at once, exactly one
        // sees `uses = 1`.
        self.client()?
            .query_opt(
                "UPDATE nonces SET uses = uses + 1 WHERE nonce = $1 RETURNING model, expires, uses",
                &[&nonce],
            )
            .map_err(db)?
            .map(|row| {
                Ok(NonceRecord {
                    model: row.get(0),
                    expires: uint(row.get(1))?,
                    uses: uint(row.get(2))?,
                })
            })
            .transpose()
    }

    fn purge_nonces(&self, time: u64) -> Result<u64, StoreError> {
        self.execute("DELETE FROM nonces WHERE expires < $1", &[&int(time)?])
    }

    fn model(&self, name: &str) -> Result<Option<ModelRecord>, StoreError> {
        self.client()?
            .query_opt(
                "SELECT name, key_id, wrapped_key, policy, created, updated, mac
                 FROM models WHERE name = $1",
                &[&name],
            )
            .map_err(db)?
            .map(|row| {
                Ok(ModelRecord {
                    name: row.get(0),
                    key_id: row.get(1),
                    wrapped_key: row.get(2),
                    policy: row.get(3),
                    created: uint(row.get(4))?,
                    updated: uint(row.get(5))?,
                    mac: row.get(6),
                })
            })
            .transpose()
    }

    fn insert_model(&self, model: &ModelRecord) -> Result<bool, StoreError> {
        let inserted = self.execute(
            "INSERT INTO models (name, key_id, wrapped_key, policy, created, updated, mac)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            &[
                &model.name,
                &model.key_id,
                &model.wrapped_key,
                &model.policy,
                &int(model.created)?,
                &int(model.updated)?,
                &model.mac,
            ],
        )?;
        Ok(inserted == 1)
    }

    fn update_policy(
        &self,
        name: &str,
        policy: &str,
        updated: u64,
        mac: &str,
    ) -> Result<bool, StoreError> {
        let changed = self.execute(
            "UPDATE models SET policy = $2, updated = $3, mac = $4 WHERE name = $1",
            &[&name, &policy, &int(updated)?, &mac],
        )?;
        Ok(changed == 1)
    }

    fn delete_model(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self.execute("DELETE FROM models WHERE name = $1", &[&name])? == 1)
    }

    fn append_audit(
        &self,
        record: &NewAuditRecord,
        chain: &dyn Fn(&NewAuditRecord, u64, &str) -> String,
    ) -> Result<AuditRecord, StoreError> {
        let mut client = self.client()?;
        let mut tx = client.transaction().map_err(db)?;
        // Every replica's appends queue here, so each chains onto the one before it.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
            .map_err(db)?;
        let head = tx
            .query_opt(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .map_err(db)?;
        let (seq, prev) = match head {
            Some(row) => (
                uint(row.get(0))?
                    .checked_add(1)
                    .ok_or_else(|| StoreError::Corrupt("audit sequence overflow".into()))?,
                row.get::<_, String>(1),
            ),
            None => (1, GENESIS.to_owned()),
        };
        let hash = chain(record, seq, &prev);
        let measurements = serde_json::to_string(&record.measurements)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        tx.execute(
            "INSERT INTO audit_log
                 (seq, time, event, model, decision, reason, client, measurements, prev, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &int(seq)?,
                &int(record.time)?,
                &record.event,
                &record.model,
                &record.decision,
                &record.reason,
                &record.client,
                &measurements,
                &prev,
                &hash,
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(super::chained(record, seq, prev, hash))
    }

    fn audit_page(&self, after: u64, limit: u64) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = self
            .client()?
            .query(
                "SELECT seq, time, event, model, decision, reason, client, measurements, prev, hash
                 FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&int(after)?, &int(limit)?],
            )
            .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                super::stored_audit_record(
                    row.get(0),
                    row.get(1),
                    [row.get(2), row.get(3), row.get(4), row.get(5), row.get(6)],
                    row.get(7),
                    row.get(8),
                    row.get(9),
                )
            })
            .collect())
    }
}

/// Whether every host the URL names is a loopback address (or a Unix socket).
fn only_loopback(hosts: &[Host]) -> bool {
    hosts.iter().all(|host| match host {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    })
}

/// The TLS client configuration: TLS 1.2 or 1.3, the server's certificate and name verified
/// against `ca_pem` (PEM certificates) or else the Mozilla roots.
fn tls(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, StoreError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Database(format!("the database CA file: {e}")))?;
            if certs.is_empty() {
                return Err(StoreError::Database(
                    "the database CA file holds no PEM certificate".into(),
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| StoreError::Database(format!("the database CA file: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| StoreError::Database(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// An error and its causes, `: `-separated (a TLS failure's reason is a cause).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

fn db(error: postgres::Error) -> StoreError {
    // The error names the statement's failure, never its parameters.
    StoreError::Database(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_required_for_hosts_beyond_loopback() {
        let hosts = |url: &str| {
            url.parse::<postgres::Config>()
                .unwrap()
                .get_hosts()
                .to_vec()
        };
        for local in [
            "postgres://u@127.0.0.1/kbs",
            "postgres://u@localhost:5433/kbs",
            "postgres://u@[::1]/kbs",
        ] {
            assert!(only_loopback(&hosts(local)), "{local}");
        }
        for remote in [
            "postgres://u@db.internal/kbs",
            "postgres://u@10.0.0.5/kbs",
            "postgres://u@127.0.0.1,db.internal/kbs",
        ] {
            assert!(!only_loopback(&hosts(remote)), "{remote}");
        }
    }
}
