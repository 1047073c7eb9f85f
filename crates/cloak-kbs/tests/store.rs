//! One conformance suite for the broker's stores, run against SQLite (always) and PostgreSQL
//! (a throwaway cluster, when a PostgreSQL server is installed): what the broker relies on,
//! and what makes several replicas on one database behave as one broker — a nonce used up
//! exactly once whichever replica presents it, one linear audit chain under concurrent appends
//! from every replica, and admin changes made at one in force at the other at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use cloak_kbs::audit::{GENESIS, chain_hash, verify};
use cloak_kbs::store::{Database, ModelRecord, NewAuditRecord, NonceRecord, Store};
use cloak_test_support::postgres::TempPostgres;

const AUDIT_KEY: [u8; 32] = [7; 32];

fn model(name: &str) -> ModelRecord {
    ModelRecord {
        name: name.to_owned(),
        key_id: "ab".repeat(8),
        wrapped_key: "cd".repeat(40),
        policy: "[sgx]\nmrenclave = \"00\"\n".to_owned(),
        created: 10,
        updated: 10,
        mac: "5a".repeat(32),
    }
}

fn record(event: &str) -> NewAuditRecord {
    NewAuditRecord {
        time: 1_700_000_000,
        event: event.to_owned(),
        model: "m".to_owned(),
        decision: "granted".to_owned(),
        reason: "granted".to_owned(),
        client: "127.0.0.1".to_owned(),
        measurements: BTreeMap::from([("mrenclave".to_owned(), "ee".repeat(32))]),
    }
}

fn append(store: &dyn Store, event: &str) -> cloak_proto::kbs::AuditRecord {
    store
        .append_audit(&record(event), &|r, seq, prev| {
            chain_hash(&AUDIT_KEY, r, seq, prev)
        })
        .unwrap()
}

/// Runs every case, each on a database of its own from `fresh`.
fn suite(mut fresh: impl FnMut() -> Database) {
    settings(&*fresh().open().unwrap());
    models(&*fresh().open().unwrap());
    nonces(&*fresh().open().unwrap());
    audit(&*fresh().open().unwrap());
    reopened(&fresh());
    replicas(&fresh());
}

fn settings(store: &dyn Store) {
    assert_eq!(store.meta("a").unwrap(), None);
    assert!(store.insert_meta(&[("a", "1")]).unwrap());
    // All or nothing: one existing key leaves the others unwritten.
    assert!(!store.insert_meta(&[("b", "2"), ("a", "3")]).unwrap());
    assert_eq!(store.meta("b").unwrap(), None);
    assert_eq!(store.meta("a").unwrap().as_deref(), Some("1"));
    // Numbers only go up.
    assert_eq!(store.raise_meta_number("n", 5).unwrap(), 0);
    assert_eq!(store.raise_meta_number("n", 3).unwrap(), 5);
    assert_eq!(store.meta("n").unwrap().as_deref(), Some("5"));
    assert_eq!(store.raise_meta_number("n", 9).unwrap(), 5);
    assert_eq!(store.meta("n").unwrap().as_deref(), Some("9"));
}

fn models(store: &dyn Store) {
    let m = model("m");
    assert_eq!(store.model("m").unwrap(), None);
    assert!(store.insert_model(&m).unwrap());
    assert!(!store.insert_model(&model("m")).unwrap(), "a taken name");
    assert_eq!(store.model("m").unwrap(), Some(m.clone()));
    assert!(store.update_policy("m", "new", 20, "mac2").unwrap());
    let updated = store.model("m").unwrap().unwrap();
    assert_eq!(
        (
            updated.policy.as_str(),
            updated.updated,
            updated.mac.as_str()
        ),
        ("new", 20, "mac2")
    );
    assert_eq!(updated.created, m.created);
    assert!(!store.update_policy("other", "new", 20, "mac2").unwrap());
    assert!(store.delete_model("m").unwrap());
    assert!(!store.delete_model("m").unwrap());
    assert_eq!(store.model("m").unwrap(), None);
}

fn nonces(store: &dyn Store) {
    assert!(store.insert_model(&model("m")).unwrap());
    store.insert_nonce("aa", "m", 100).unwrap();
    assert_eq!(
        store.take_nonce("aa").unwrap(),
        Some(NonceRecord {
            model: "m".into(),
            expires: 100,
            uses: 1,
        })
    );
    assert_eq!(store.take_nonce("aa").unwrap().unwrap().uses, 2);
    assert_eq!(store.take_nonce("zz").unwrap(), None);
    assert!(store.insert_nonce("aa", "m", 100).is_err(), "a nonce twice");
    assert!(
        store.insert_nonce("cc", "unknown", 100).is_err(),
        "no such model"
    );
    store.insert_nonce("bb", "m", 200).unwrap();
    assert_eq!(store.purge_nonces(101).unwrap(), 1);
    assert_eq!(store.take_nonce("aa").unwrap(), None);
    // A removed model's nonces go with it.
    assert!(store.delete_model("m").unwrap());
    assert_eq!(store.take_nonce("bb").unwrap(), None);
}

fn audit(store: &dyn Store) {
    assert!(store.audit_records().unwrap().is_empty());
    let first = append(store, "add-model");
    assert_eq!((first.seq, first.prev.as_str()), (1, GENESIS));
    let second = append(store, "release");
    assert_eq!((second.seq, &second.prev), (2, &first.hash));
    append(store, "remove-model");
    let all = store.audit_records().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0], first);
    assert_eq!(all[1].measurements, record("x").measurements);
    assert!(verify(&AUDIT_KEY, &all).intact);
    // Pages.
    let page = store.audit_page(0, 2).unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2]);
    let page = store.audit_page(2, 10).unwrap();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), [3]);
    assert!(store.audit_page(3, 10).unwrap().is_empty());
}

fn reopened(db: &Database) {
    let store = db.open().unwrap();
    assert!(store.insert_model(&model("m")).unwrap());
    append(&*store, "add-model");
    drop(store);
    // Opening again runs no migration twice and finds everything.
    let store = db.open().unwrap();
    assert!(store.model("m").unwrap().is_some());
    assert_eq!(store.audit_records().unwrap().len(), 1);
}

/// Two stores on one database, as two broker replicas hold them.
fn replicas(db: &Database) {
    let (a, b): (Arc<dyn Store>, Arc<dyn Store>) = (db.open().unwrap(), db.open().unwrap());

    // An admin change at one is in force at the other at once.
    assert!(a.insert_model(&model("m")).unwrap());
    assert!(b.model("m").unwrap().is_some());
    assert!(b.update_policy("m", "tightened", 30, "mac3").unwrap());
    assert_eq!(a.model("m").unwrap().unwrap().policy, "tightened");

    // A nonce issued through one is used up once, whichever replica presents it: of sixteen
    // presentations at once, exactly one is the first.
    a.insert_nonce("ff", "m", u64::MAX >> 2).unwrap();
    let uses: Vec<u64> = std::thread::scope(|scope| {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = if i % 2 == 0 { &a } else { &b };
                scope.spawn(move || store.take_nonce("ff").unwrap().unwrap().uses)
            })
            .collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut sorted = uses.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=16).collect::<Vec<u64>>(), "{uses:?}");

    // Appends from both replicas at once form one linear chain.
    std::thread::scope(|scope| {
        for i in 0..4 {
            let store = if i % 2 == 0 { &a } else { &b };
            scope.spawn(move || {
                for _ in 0..25 {
                    append(&**store, "release");
                }
            });
        }
    });
    let all = b.audit_records().unwrap();
    assert_eq!(all.len(), 100);
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..=100).collect::<Vec<u64>>()
    );
    let check = verify(&AUDIT_KEY, &all);
    assert!(check.intact, "{check:?}");

    // Raising a number from both replicas at once ends at the highest.
    std::thread::scope(|scope| {
        for i in 1..=20u64 {
            let store = if i % 2 == 0 { &a } else { &b };
            scope.spawn(move || store.raise_meta_number("floor", i).unwrap());
        }
    });
    assert_eq!(a.meta("floor").unwrap().as_deref(), Some("20"));
}

#[test]
fn the_sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    suite(|| {
        n += 1;
        Database::Sqlite(dir.path().join(format!("kbs-{n}.db")))
    });
}

#[test]
fn the_postgres_store_conforms() {
    let Some(cluster) = TempPostgres::start() else {
        return;
    };
    let mut n = 0;
    suite(|| {
        n += 1;
        Database::parse(&cluster.database(&format!("kbs_{n}")))
    });
    // A URL that asks for TLS is refused, not served in the clear.
    let tls = format!("{}?sslmode=require", cluster.url("kbs_1"));
    assert!(Database::parse(&tls).open().is_err());
    // A database a newer broker migrated is refused, not written to.
    let db = Database::parse(&cluster.database("newer"));
    drop(db.open().unwrap());
    cluster.psql(
        "newer",
        "INSERT INTO schema_migrations (version, applied) VALUES (99, 0)",
    );
    assert!(matches!(
        db.open().map(|_| ()),
        Err(cloak_kbs::store::StoreError::SchemaTooNew { found: 99, .. })
    ));
}

#[test]
fn a_postgres_store_that_cannot_connect_is_a_clear_error() {
    // Nothing listens on port 1; the URL's password is not in the message.
    let db = Database::parse("postgres://cloak:hunter2@127.0.0.1:1/kbs");
    let error = db.open().map(|_| ()).unwrap_err().to_string();
    assert!(error.contains("cannot connect to PostgreSQL"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn the_postgres_store_speaks_tls_and_verifies_the_server() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let Some(cluster) = TempPostgres::start_tls(
        &certified.cert.pem(),
        &certified.signing_key.serialize_pem(),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("db-ca.pem");
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let url = format!("{}?sslmode=require", cluster.database("kbs"));

    // Trusting the server's certificate: the store works (the cluster takes TCP clients over
    // TLS only, so this connection was encrypted).
    let store = Database::parse(&url)
        .with_ca(Some(ca.clone()))
        .open()
        .unwrap();
    settings(&*store);
    // Trusting only the Mozilla roots, the certificate is refused, at once and with the reason.
    let started = std::time::Instant::now();
    let error = Database::parse(&url)
        .open()
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(error.contains("certificate"), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // In the clear, the server refuses.
    let plain = url.replace("sslmode=require", "sslmode=disable");
    assert!(Database::parse(&plain).with_ca(Some(ca)).open().is_err());
}
