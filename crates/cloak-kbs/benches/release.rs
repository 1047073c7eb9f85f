//! What a key release costs the broker, against the floor of verifying the same evidence.
//!
//! * `verify_only`: a fresh simulated quote, then what any verifier must do with it (parse the
//!   collateral, verify quote and collateral, appraise under the policy);
//! * `challenge_and_release`: the same quote work inside the broker's whole exchange — issue a
//!   nonce (SQLite insert), take it (single-use update), verify and appraise, unwrap the model
//!   key, append the HMAC-chained audit record (`synchronous = FULL`: an fsync), HPKE-seal the
//!   key — plus the enclave opening it.
//!
//! `challenge_and_release` runs on each store: SQLite (`synchronous = FULL`) and, when a
//! PostgreSQL server is installed, a throwaway PostgreSQL cluster committing durably (fsync on),
//! on this machine's loopback.
//!
//! `cargo bench -p cloak-kbs --bench release`; the ratio of `challenge_and_release` to
//! `verify_only` is the broker's overhead, and the two stores' times compare the backends.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_attest::types::ReportData;
use cloak_attest::verify::Verifier;
use cloak_crypto::hpke::{HpkeKeyPair, HpkeSealed};
use cloak_crypto::key::ModelKey;
use cloak_kbs::{AdminToken, Broker, BrokerConfig, Database, MasterKey, MasterKeySource};
use cloak_proto::kbs::{
    AddModelRequest, ChallengeRequest, ReleaseRequest, release_info, release_report_data,
};
use cloak_tee::sim::{SimConfig, SimPlatform};
use cloak_tee::{Identity, Platform};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::value::RawValue;

const MODEL: &str = "bench-model";

/// A broker on `db` (initialised here, its token and master key in `dir`) serving `key` as
/// [`MODEL`] under `policy`.
fn broker_on(db: &Database, dir: &std::path::Path, key: &ModelKey, policy: &str) -> Broker {
    let token_path = dir.join("admin.token");
    let master_path = dir.join("kbs.master-key");
    let now = cloak_kbs::Clock::now(&cloak_kbs::SystemClock);
    cloak_kbs::init(
        db,
        &token_path,
        MasterKeySource::CreateFile(master_path.clone()),
        now,
    )
    .unwrap();
    let token = AdminToken::read_file(&token_path).unwrap();
    let broker = Broker::open(
        db.open().unwrap(),
        &MasterKey::read_file(&master_path).unwrap(),
        Arc::new(cloak_kbs::SystemClock),
        BrokerConfig::new(),
    )
    .unwrap();
    broker
        .add_model(
            Some(token.expose()),
            "127.0.0.1:1",
            MODEL,
            AddModelRequest {
                key: key.secret_bytes().to_vec(),
                policy: policy.to_owned(),
            },
        )
        .unwrap();
    broker
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let enclave = Identity {
        mrenclave: [0x11; 32],
        mrsigner: [0x22; 32],
        isv_prod_id: 1,
        isv_svn: 1,
        debug: false,
    };
    let platform = SimPlatform::init(&dir.path().join("sim"), &SimConfig::up_to_date())
        .unwrap()
        .with_enclave(enclave);
    let policy_text = format!(
        "trust_root = \"sha256:{}\"\n[sgx]\nmrenclave = [\"{}\"]\n",
        hex::encode(cloak_crypto::hash::sha256(platform.root_der())),
        hex::encode(enclave.mrenclave)
    );
    let now = cloak_kbs::Clock::now(&cloak_kbs::SystemClock);
    let key = ModelKey::generate().unwrap();
    let sqlite = Database::Sqlite(dir.path().join("kbs.db"));
    let cluster = cloak_test_support::postgres::TempPostgres::start_durable();
    let postgres = cluster
        .as_ref()
        .map(|cluster| Database::parse(&cluster.database("kbs")));
    let brokers: Vec<(&str, Broker)> = std::iter::once(("sqlite", &sqlite))
        .chain(postgres.as_ref().map(|db| ("postgres", db)))
        .map(|(name, db)| {
            let store_dir = dir.path().join(name);
            std::fs::create_dir(&store_dir).unwrap();
            (name, broker_on(db, &store_dir, &key, &policy_text))
        })
        .collect();
    let collateral_json = platform.collateral(now).unwrap();
    let policy = AppraisalPolicy::from_toml(&policy_text, dir.path()).unwrap();

    let mut group = c.benchmark_group("key_release");
    group.sample_size(30);
    group.bench_function("verify_only", |b| {
        b.iter(|| {
            let nonce = [7u8; 32];
            let ephemeral = HpkeKeyPair::generate();
            let report_data = release_report_data(&nonce, ephemeral.public_key());
            let quote = platform.evidence(&report_data).unwrap().quote;
            let collateral = Collateral::from_json(&collateral_json).unwrap();
            let anchor = policy.trust_root().anchor(&quote, &collateral).unwrap();
            let verified = Verifier::new(anchor)
                .verify(&quote, &collateral, now)
                .unwrap();
            policy
                .clone()
                .with_report_data(ReportData::from_bytes(report_data))
                .appraise(verified)
                .unwrap()
        });
    });
    for (store, broker) in &brokers {
        group.bench_function(format!("challenge_and_release/{store}"), |b| {
            b.iter(|| {
                let challenge = broker
                    .challenge(&ChallengeRequest {
                        model: MODEL.to_owned(),
                    })
                    .unwrap();
                let ephemeral = HpkeKeyPair::generate();
                let report_data = release_report_data(&challenge.nonce, ephemeral.public_key());
                let quote = platform.evidence(&report_data).unwrap().quote;
                let request = ReleaseRequest {
                    evidence_format: None,
                    nonce: challenge.nonce.clone(),
                    evidence: quote,
                    collateral: RawValue::from_string(
                        String::from_utf8(collateral_json.clone()).unwrap(),
                    )
                    .unwrap(),
                    ephemeral_key: ephemeral.public_key().to_vec(),
                };
                let released = broker.release(&request, "127.0.0.1:2").unwrap();
                let sealed = HpkeSealed {
                    enc: released.enc.as_slice().try_into().unwrap(),
                    ciphertext: released.sealed_key,
                };
                let opened = ephemeral
                    .open(&sealed, &release_info(MODEL), &challenge.nonce)
                    .unwrap();
                assert_eq!(opened.as_slice(), key.secret_bytes());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
