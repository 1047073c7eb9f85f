//! The broker end to end, in process: a real router on 127.0.0.1:0, real (simulated-platform)
//! quotes and collateral, an injected clock, and the admin client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use cloak_crypto::hpke::{HpkeKeyPair, HpkeSealed};
use cloak_crypto::key::ModelKey;
use cloak_kbs::admin::{AdminClient, AdminError};
use cloak_kbs::http::RateLimit;
use cloak_kbs::store::Store as _;
use cloak_kbs::{
    AdminToken, Broker, BrokerConfig, BrokerError, Clock, MasterKey, MasterKeySource, SqliteStore,
};
use cloak_proto::kbs::{
    AuditRecord, ChallengeResponse, ReleaseRequest, ReleaseResponse, release_info,
    release_report_data,
};
use cloak_tee::Identity;
use cloak_tee::sim::{SimConfig, SimPlatform, TcbStatusName};
use serde_json::Value;
use serde_json::value::RawValue;

const MODEL: &str = "resnet-50.v1";

fn identity() -> Identity {
    Identity {
        mrenclave: [0x11; 32],
        mrsigner: [0x22; 32],
        isv_prod_id: 1,
        isv_svn: 2,
        debug: false,
    }
}

/// A clock the test moves.
struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Harness {
    dir: tempfile::TempDir,
    db: PathBuf,
    url: String,
    token: String,
    clock: Arc<TestClock>,
    platform: SimPlatform,
    agent: ureq::Agent,
    runtime: tokio::runtime::Runtime,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn system_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn start(sim: &SimConfig, enclave: Identity) -> Harness {
    start_with(sim, enclave, RateLimit::new())
}

fn start_with(sim: &SimConfig, enclave: Identity, rate: RateLimit) -> Harness {
    start_full(
        sim,
        enclave,
        rate,
        cloak_kbs::http::ConnectionLimits::default(),
    )
}

fn start_full(
    sim: &SimConfig,
    enclave: Identity,
    rate: RateLimit,
    limits: cloak_kbs::http::ConnectionLimits,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let platform = SimPlatform::init(&dir.path().join("sim"), sim)
        .unwrap()
        .with_enclave(enclave);
    let db = dir.path().join("kbs.db");
    let token_path = dir.path().join("admin.token");
    let master_path = cloak_kbs::default_master_key_path(&db);
    let now = system_now();
    cloak_kbs::init(
        &cloak_kbs::Database::Sqlite(db.clone()),
        &token_path,
        MasterKeySource::CreateFile(master_path.clone()),
        now,
    )
    .unwrap();
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_owned();
    let clock = Arc::new(TestClock(AtomicU64::new(now)));
    let broker = Broker::open(
        Arc::new(SqliteStore::open(&db).unwrap()),
        &MasterKey::read_file(&master_path).unwrap(),
        clock.clone(),
        BrokerConfig::new(),
    )
    .unwrap();
    let router = cloak_kbs::http::router(Arc::new(broker), rate);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    runtime.spawn(cloak_kbs::http::serve(
        listener,
        None,
        router,
        limits,
        async {
            let _ = stopped.await;
        },
    ));
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    Harness {
        dir,
        db,
        url,
        token,
        clock,
        platform,
        agent,
        runtime,
        _stop: stop,
    }
}

impl Harness {
    /// Another broker on the same database and master key (a restart, or a replica).
    fn second_broker(&self) -> Broker {
        Broker::open(
            Arc::new(SqliteStore::open(&self.db).unwrap()),
            &MasterKey::read_file(&cloak_kbs::default_master_key_path(&self.db)).unwrap(),
            self.clock.clone(),
            BrokerConfig::new(),
        )
        .unwrap()
    }

    fn admin(&self) -> AdminClient {
        AdminClient::new(&self.url, AdminToken::from_text(&self.token), None).unwrap()
    }

    fn root_pin(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(cloak_crypto::hash::sha256(self.platform.root_der()))
        )
    }

    /// The policy a model owner would write for the test enclave on this platform.
    fn policy(&self, extra: &str) -> String {
        format!(
            "trust_root = \"{}\"\n{extra}\n[sgx]\nmrenclave = [\"{}\"]\n",
            self.root_pin(),
            hex::encode(identity().mrenclave)
        )
    }

    fn add_model(&self, policy: &str) -> ModelKey {
        let key = ModelKey::generate().unwrap();
        self.admin().add_model(MODEL, &key, policy).unwrap();
        key
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .agent
            .post(format!("{}{path}", self.url))
            .send_json(body)
            .unwrap();
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .read_json::<Value>()
            .unwrap_or(Value::Null);
        (status, body)
    }

    fn challenge(&self) -> ChallengeResponse {
        let (status, body) = self.post("/kbs/v1/challenge", &serde_json::json!({"model": MODEL}));
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).unwrap()
    }

    /// A release request from the test enclave: a quote over the report data binding `nonce`
    /// and `bound_key`, sent with `ephemeral`.
    fn request(&self, nonce: &[u8], bound_key: &[u8; 32], ephemeral: &[u8; 32]) -> ReleaseRequest {
        let quote = self
            .platform
            .quote(&release_report_data(nonce, bound_key))
            .unwrap();
        let collateral = self.platform.collateral(self.clock.now()).unwrap();
        ReleaseRequest {
            evidence_format: None,
            nonce: nonce.to_vec(),
            evidence: quote,
            collateral: RawValue::from_string(String::from_utf8(collateral).unwrap()).unwrap(),
            ephemeral_key: ephemeral.to_vec(),
        }
    }

    fn release(&self, request: &ReleaseRequest) -> (u16, Value) {
        self.post("/kbs/v1/release", &serde_json::to_value(request).unwrap())
    }

    /// Challenge, then release with a fresh ephemeral key.
    fn attempt(&self) -> (u16, Value, HpkeKeyPair, Vec<u8>) {
        let nonce = self.challenge().nonce;
        let ephemeral = HpkeKeyPair::generate();
        let request = self.request(&nonce, ephemeral.public_key(), ephemeral.public_key());
        let (status, body) = self.release(&request);
        (status, body, ephemeral, nonce)
    }

    fn audit(&self) -> Vec<AuditRecord> {
        self.admin().audit(false).unwrap().records
    }

    fn last_audit(&self) -> AuditRecord {
        self.audit().pop().unwrap()
    }

    fn sql(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).unwrap()
    }
}

fn error_code(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

fn assert_denied(h: &Harness, status: u16, body: &Value, code: &str) {
    assert_eq!(status, 403, "{body}");
    assert_eq!(error_code(body), code, "{body}");
    // The caller learns the code, never the details.
    assert!(!body["message"].as_str().unwrap().contains("expected"));
    let record = h.last_audit();
    assert_eq!(record.event, "release");
    assert_eq!(record.decision, "denied");
    assert_eq!(record.reason, code);
}

/// A broker with the model registered under the default policy, and an up-to-date enclave.
fn with_model() -> Harness {
    let h = start(&SimConfig::up_to_date(), identity());
    h.add_model(&h.policy(""));
    h
}

#[test]
fn granted_release_opens_with_the_ephemeral_key_to_the_model_key() {
    let h = start(&SimConfig::up_to_date(), identity());
    let key = h.add_model(&h.policy(""));
    let (status, body, ephemeral, nonce) = h.attempt();
    assert_eq!(status, 200, "{body}");
    let response: ReleaseResponse = serde_json::from_value(body).unwrap();
    assert_eq!(response.model, MODEL);
    assert_eq!(response.key_id, key.id().to_string());
    // The release holds for the policy's lease (a day when it names none), by the broker's clock.
    assert_eq!(
        response.lease_expires,
        Some(h.clock.now() + cloak_kbs::policy::DEFAULT_LEASE)
    );
    let sealed = HpkeSealed {
        enc: response.enc.as_slice().try_into().unwrap(),
        ciphertext: response.sealed_key.clone(),
    };
    let opened = ephemeral
        .open(&sealed, &release_info(MODEL), &nonce)
        .unwrap();
    assert_eq!(opened.as_slice(), key.secret_bytes());
    // Another key pair cannot open it.
    assert!(
        HpkeKeyPair::generate()
            .open(&sealed, &release_info(MODEL), &nonce)
            .is_err()
    );

    let record = h.last_audit();
    assert_eq!(
        (
            record.event.as_str(),
            record.decision.as_str(),
            record.reason.as_str()
        ),
        ("release", "granted", "granted")
    );
    assert_eq!(record.model, MODEL);
    assert!(record.client.starts_with("127.0.0.1:"));
    assert_eq!(record.measurements["tee"], "sgx");
    assert_eq!(
        record.measurements["mrenclave"],
        hex::encode(identity().mrenclave)
    );
    assert_eq!(
        record.measurements["mrsigner"],
        hex::encode(identity().mrsigner)
    );
    assert_eq!(record.measurements["isv_prod_id"], "1");
    assert_eq!(record.measurements["isv_svn"], "2");
    assert_eq!(record.measurements["debug"], "false");
    assert_eq!(record.measurements["tcb_status"], "UpToDate");
    assert_eq!(
        format!("sha256:{}", record.measurements["trust_root"]),
        h.root_pin()
    );
    let verification = h.admin().audit(true).unwrap().verification.unwrap();
    assert!(verification.intact, "{verification:?}");
    assert_eq!(verification.head, record.hash);
}

#[test]
fn wrong_mrenclave_is_denied_and_audited() {
    let h = start(&SimConfig::up_to_date(), identity());
    let other = format!(
        "trust_root = \"{}\"\n[sgx]\nmrenclave = [\"{}\"]\n",
        h.root_pin(),
        "33".repeat(32)
    );
    h.add_model(&other);
    let (status, body, ..) = h.attempt();
    assert_denied(&h, status, &body, "measurement-mismatch");
    // What the quote said is on record.
    assert_eq!(
        h.last_audit().measurements["mrenclave"],
        hex::encode(identity().mrenclave)
    );
}

#[test]
fn a_record_the_broker_did_not_write_releases_nothing() {
    // The owner's policy pins another enclave: ours is refused.
    let h = start(&SimConfig::up_to_date(), identity());
    let theirs = h
        .policy("")
        .replace(&hex::encode(identity().mrenclave), &"ab".repeat(32));
    h.add_model(&theirs);
    let (status, body, ..) = h.attempt();
    assert_denied(&h, status, &body, "measurement-mismatch");
    // Whoever can write the database puts in a policy that pins our enclave: without the
    // record's MAC this would release the key to us.
    let edit = |sql: &str, value: &str| {
        let changed = h
            .sql()
            .execute(sql, rusqlite::params![value, MODEL])
            .unwrap();
        assert_eq!(changed, 1);
    };
    edit(
        "UPDATE models SET policy = ?1 WHERE name = ?2",
        &h.policy(""),
    );
    let (status, body, ..) = h.attempt();
    assert_denied(&h, status, &body, "record-unauthenticated");
    // A row from before records were authenticated (no MAC) is not acted on either...
    edit("UPDATE models SET mac = ?1 WHERE name = ?2", "");
    let (status, body, ..) = h.attempt();
    assert_denied(&h, status, &body, "record-unauthenticated");
    // ...until the owner sets its policy again, which authenticates it.
    h.admin().set_policy(MODEL, &h.policy("")).unwrap();
    assert_eq!(h.attempt().0, 200);
}

#[test]
fn a_release_states_the_lease_the_policy_sets() {
    let h = start(&SimConfig::up_to_date(), identity());
    h.add_model(&h.policy("lease = \"90m\""));
    let (status, body, ..) = h.attempt();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lease_expires"], h.clock.now() + 5400);
    assert_eq!(
        h.last_audit().measurements["lease_expires"],
        (h.clock.now() + 5400).to_string()
    );
}

#[test]
fn collateral_older_than_the_broker_has_seen_is_refused() {
    let h = with_model();
    let root = h.root_pin().trim_start_matches("sha256:").to_owned();
    let floor_key = format!("tcb-evaluation-floor:{root}:sgx");
    let store = SqliteStore::open(&h.db).unwrap();
    // A granted release records the collateral's number (the simulation's is 1) as the floor.
    let (status, body, ..) = h.attempt();
    assert_eq!(status, 200, "{body}");
    assert_eq!(store.meta(&floor_key).unwrap().as_deref(), Some("1"));
    assert_eq!(
        h.last_audit().measurements["tcb_evaluation_data_number"],
        "1"
    );
    // Once the broker has seen a later TCB evaluation (2), collateral from before it — still
    // within its validity, relayed by a host — is refused, and audited.
    store.raise_meta_number(&floor_key, 2).unwrap();
    let (status, body, ..) = h.attempt();
    assert_denied(&h, status, &body, "tcb-evaluation-data-too-old");
    // The floor never goes down.
    assert_eq!(store.meta(&floor_key).unwrap().as_deref(), Some("2"));
}

#[test]
fn debug_enclave_is_denied() {
    let h = start(
        &SimConfig::up_to_date(),
        Identity {
            debug: true,
            ..identity()
        },
    );
    h.add_model(&h.policy(""));
    let (status, body, ..) = h.attempt();
    assert_denied(&h, status, &body, "debug-enclave");
    assert_eq!(h.last_audit().measurements["debug"], "true");
}

#[test]
fn out_of_date_platform_is_denied_unless_the_policy_allows_it() {
    let h = start(
        &SimConfig {
            tcb_status: TcbStatusName::OutOfDate,
            ..SimConfig::up_to_date()
        },
        identity(),
    );
    h.add_model(&h.policy(""));
    let (status, body, ..) = h.attempt();
    assert_denied(&h, status, &body, "tcb-status-not-allowed");
    assert_eq!(h.last_audit().measurements["tcb_status"], "OutOfDate");

    h.admin()
        .set_policy(
            MODEL,
            &h.policy("allowed_tcb_statuses = [\"UpToDate\", \"OutOfDate\"]"),
        )
        .unwrap();
    let record = h.last_audit();
    assert_eq!(
        (record.event.as_str(), record.decision.as_str()),
        ("set-policy", "done")
    );
    let (status, body, ..) = h.attempt();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_root_the_policy_does_not_name_is_untrusted() {
    let h = start(&SimConfig::up_to_date(), identity());
    let intel = format!(
        "trust_root = \"intel\"\n[sgx]\nmrenclave = [\"{}\"]\n",
        hex::encode(identity().mrenclave)
    );
    h.add_model(&intel);
    let (status, body, ..) = h.attempt();
    assert_denied(&h, status, &body, "untrusted-root");
}

/// A genuine quote whose report data binds something other than the request it arrives in —
/// another ephemeral key (replayed with an attacker's key), or another nonce — is refused.
#[test]
fn report_data_that_binds_another_key_or_nonce_is_denied() {
    let h = with_model();
    let enclave_key = HpkeKeyPair::generate();
    let attacker_key = HpkeKeyPair::generate();
    let nonce = h.challenge().nonce;
    let swapped_key = h.request(&nonce, enclave_key.public_key(), attacker_key.public_key());
    let old = h.challenge().nonce;
    let mut other_nonce = h.request(&old, enclave_key.public_key(), enclave_key.public_key());
    other_nonce.nonce = h.challenge().nonce;
    for request in [swapped_key, other_nonce] {
        let (status, body) = h.release(&request);
        assert_denied(&h, status, &body, "report-data-mismatch");
    }
}

#[test]
fn a_replayed_release_finds_no_nonce() {
    let h = with_model();
    let nonce = h.challenge().nonce;
    let ephemeral = HpkeKeyPair::generate();
    let request = h.request(&nonce, ephemeral.public_key(), ephemeral.public_key());
    assert_eq!(h.release(&request).0, 200);
    let (status, body) = h.release(&request);
    assert_denied(&h, status, &body, "nonce-unknown");
    assert_eq!(h.last_audit().model, MODEL);
    // A made-up nonce is just as unknown (and names no model).
    let mut made_up = request.clone();
    made_up.nonce = vec![7; 32];
    let (status, body) = h.release(&made_up);
    assert_denied(&h, status, &body, "nonce-unknown");
    assert_eq!(h.last_audit().model, "");
}

#[test]
fn an_expired_nonce_is_refused_and_consumed() {
    let h = with_model();
    let challenge = h.challenge();
    assert_eq!(challenge.expires, h.clock.now() + 60);
    let ephemeral = HpkeKeyPair::generate();
    let request = h.request(
        &challenge.nonce,
        ephemeral.public_key(),
        ephemeral.public_key(),
    );
    h.clock.0.fetch_add(60, Ordering::SeqCst);
    let (status, body) = h.release(&request);
    assert_denied(&h, status, &body, "nonce-expired");
    assert_eq!(h.last_audit().model, MODEL);
    h.clock.0.fetch_sub(60, Ordering::SeqCst);
    let (status, body) = h.release(&request);
    assert_denied(&h, status, &body, "nonce-unknown");
}

#[test]
fn wrong_or_missing_admin_token_is_401_and_audited() {
    let h = start(&SimConfig::up_to_date(), identity());
    let wrong = AdminClient::new(&h.url, AdminToken::from_text(&"00".repeat(32)), None).unwrap();
    let key = ModelKey::generate().unwrap();
    let error = wrong.add_model(MODEL, &key, &h.policy("")).unwrap_err();
    assert!(error.is_unauthorized(), "{error}");
    assert!(wrong.audit(false).unwrap_err().is_unauthorized());
    assert!(wrong.remove_model(MODEL).unwrap_err().is_unauthorized());
    let response = h
        .agent
        .get(format!("{}/kbs/v1/admin/audit", h.url))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    let records = h.audit();
    let refused: Vec<_> = records
        .iter()
        .map(|r| (r.event.as_str(), r.decision.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            ("add-model", "denied", "unauthorized"),
            ("read-audit", "denied", "unauthorized"),
            ("remove-model", "denied", "unauthorized"),
            ("read-audit", "denied", "unauthorized"),
        ]
    );
    // The second refused read of the window is summed, not recorded on its own.
    assert_eq!(records[3].measurements["attempts"], "1");
    // Nothing was added.
    let (status, body) = h.post("/kbs/v1/challenge", &serde_json::json!({"model": MODEL}));
    assert_eq!((status, error_code(&body)), (404, "unknown-model"));
}

#[test]
fn admin_calls_are_checked_and_audited() {
    let h = start(&SimConfig::up_to_date(), identity());
    let admin = h.admin();
    let key = h.add_model(&h.policy(""));
    let refused = |e: AdminError| match e {
        AdminError::Refused { status, code, .. } => (status, code),
        other => panic!("{other}"),
    };
    assert_eq!(
        refused(admin.add_model(MODEL, &key, &h.policy("")).unwrap_err()),
        (409, "model-exists".to_owned())
    );
    assert_eq!(
        refused(admin.set_policy("nope", &h.policy("")).unwrap_err()),
        (404, "unknown-model".to_owned())
    );
    assert_eq!(
        refused(
            admin
                .set_policy(MODEL, "trust_root = \"root.der\"")
                .unwrap_err()
        ),
        (400, "invalid-policy".to_owned())
    );
    let with_report_data = format!("report_data = \"{}\"", "00".repeat(64));
    assert_eq!(
        refused(admin.set_policy(MODEL, &with_report_data).unwrap_err()),
        (400, "invalid-policy".to_owned())
    );
    // "Any genuine enclave" is refused: a trust root alone names no enclave.
    assert_eq!(
        refused(
            admin
                .set_policy(MODEL, "trust_root = \"intel\"")
                .unwrap_err()
        ),
        (400, "policy-pins-no-identity".to_owned())
    );
    assert!(matches!(
        admin.add_model("bad/name", &key, &h.policy("")),
        Err(AdminError::Usage(_))
    ));
    admin.remove_model(MODEL).unwrap();
    assert_eq!(
        refused(admin.remove_model(MODEL).unwrap_err()),
        (404, "unknown-model".to_owned())
    );
    let events: Vec<_> = h
        .audit()
        .iter()
        .map(|r| format!("{} {} {}", r.event, r.decision, r.reason))
        .collect();
    assert_eq!(
        events,
        [
            "add-model done done",
            "add-model denied model-exists",
            "set-policy denied unknown-model",
            "set-policy denied invalid-policy",
            "set-policy denied invalid-policy",
            "set-policy denied policy-pins-no-identity",
            "remove-model done done",
            "remove-model denied unknown-model",
        ]
    );
    assert!(h.admin().audit(true).unwrap().verification.unwrap().intact);
}

#[test]
fn a_wrong_master_key_does_not_open_the_broker() {
    let h = start(&SimConfig::up_to_date(), identity());
    let store = Arc::new(SqliteStore::open(&h.db).unwrap());
    let result = Broker::open(
        store,
        &MasterKey::generate().unwrap(),
        h.clock.clone(),
        BrokerConfig::new(),
    );
    assert!(matches!(result, Err(BrokerError::WrongMasterKey)));
}

#[test]
fn the_model_key_is_not_in_plaintext_in_the_database() {
    let h = start(&SimConfig::up_to_date(), identity());
    let key = h.add_model(&h.policy(""));
    assert_eq!(h.attempt().0, 200);
    let needles = [
        key.secret_bytes().to_vec(),
        hex::encode(key.secret_bytes()).into_bytes(),
        hex::encode_upper(key.secret_bytes()).into_bytes(),
    ];
    let mut searched = 0;
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("kbs.db") || name.ends_with(".master-key") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        searched += bytes.len();
        for needle in &needles {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                "{name} holds the model key"
            );
        }
    }
    assert!(searched > 0);
}

/// A wrapped key moved into another model's row: the record's MAC no longer holds (and were it
/// somehow to, the key is wrapped with its own model's name as associated data and would not
/// unwrap; `master`'s unit tests show that layer).
#[test]
fn a_key_moved_to_another_models_row_is_refused() {
    let h = with_model();
    let other_key = ModelKey::generate().unwrap();
    h.admin()
        .add_model("other", &other_key, &h.policy(""))
        .unwrap();
    h.sql()
        .execute(
            "UPDATE models SET wrapped_key = (SELECT wrapped_key FROM models WHERE name = 'other')
             WHERE name = ?1",
            [MODEL],
        )
        .unwrap();
    let (status, body, ..) = h.attempt();
    assert_eq!((status, error_code(&body)), (403, "record-unauthenticated"));
    let record = h.last_audit();
    assert_eq!(
        (record.decision.as_str(), record.reason.as_str()),
        ("denied", "record-unauthenticated")
    );
}

/// Four records: add-model, a granted release, a denied one, and a refused admin call.
fn audited_harness() -> Harness {
    let h = with_model();
    assert_eq!(h.attempt().0, 200);
    let mut request = h.request(&[9; 32], &[1; 32], &[1; 32]);
    request.nonce = vec![9; 32];
    assert_eq!(h.release(&request).0, 403);
    let wrong = AdminClient::new(&h.url, AdminToken::from_text("wrong"), None).unwrap();
    assert!(wrong.remove_model(MODEL).is_err());
    assert_eq!(h.audit().len(), 4);
    h
}

fn verification(h: &Harness) -> (bool, Option<u64>, Option<String>) {
    let v = h.admin().audit(true).unwrap().verification.unwrap();
    (v.intact, v.first_bad_seq, v.problem)
}

#[test]
fn an_edited_audit_record_is_detected() {
    let h = audited_harness();
    assert_eq!(verification(&h), (true, None, None));
    h.sql()
        .execute("UPDATE audit_log SET reason = 'granted' WHERE seq = 3", [])
        .unwrap();
    assert_eq!(verification(&h), (false, Some(3), Some("edited".into())));
    h.sql()
        .execute(
            "UPDATE audit_log SET reason = 'nonce-unknown' WHERE seq = 3",
            [],
        )
        .unwrap();
    assert!(verification(&h).0);
    h.sql()
        .execute(
            "UPDATE audit_log SET measurements = '{\"debug\":\"false\"}' WHERE seq = 2",
            [],
        )
        .unwrap();
    assert_eq!(verification(&h), (false, Some(2), Some("edited".into())));
}

#[test]
fn a_deleted_audit_record_is_detected() {
    let h = audited_harness();
    h.sql()
        .execute("DELETE FROM audit_log WHERE seq = 2", [])
        .unwrap();
    assert_eq!(verification(&h), (false, Some(2), Some("missing".into())));
    // Renumbering to hide the gap does not help.
    h.sql()
        .execute("UPDATE audit_log SET seq = seq - 1 WHERE seq > 2", [])
        .unwrap();
    assert!(!verification(&h).0);
}

#[test]
fn reordered_audit_records_are_detected() {
    let h = audited_harness();
    let sql = h.sql();
    sql.execute_batch(
        "UPDATE audit_log SET seq = 100 WHERE seq = 2;
         UPDATE audit_log SET seq = 2 WHERE seq = 3;
         UPDATE audit_log SET seq = 3 WHERE seq = 100;",
    )
    .unwrap();
    assert_eq!(verification(&h), (false, Some(2), Some("reordered".into())));
}

#[test]
fn appends_continue_the_chain_after_a_restart() {
    let h = audited_harness();
    let records = h.audit();
    // A second broker on the same database (a restart, or a replica) chains onto the head.
    let broker = h.second_broker();
    assert!(broker.remove_model(Some("wrong"), "test", MODEL).is_err());
    let everything = cloak_kbs::broker::AuditPage {
        after: 0,
        limit: cloak_kbs::broker::MAX_AUDIT_PAGE,
        verify: true,
    };
    let response = broker.audit(Some(&h.token), "test", everything).unwrap();
    assert_eq!(response.records.len(), records.len() + 1);
    assert_eq!(
        response.records.last().unwrap().prev,
        records.last().unwrap().hash
    );
    assert!(response.verification.unwrap().intact);
}

#[test]
fn challenges_and_releases_are_rate_limited_per_address() {
    let h = start_with(
        &SimConfig::up_to_date(),
        identity(),
        RateLimit {
            per_second: NonZeroU32::new(1).unwrap(),
            burst: NonZeroU32::new(2).unwrap(),
        },
    );
    h.add_model(&h.policy(""));
    // The registration took a token from the same budget: let it refill.
    std::thread::sleep(std::time::Duration::from_millis(2100));
    h.challenge();
    h.challenge();
    let response = h
        .agent
        .post(format!("{}/kbs/v1/challenge", h.url))
        .send_json(serde_json::json!({"model": MODEL}))
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after));
    let body: Value = response.into_body().read_json().unwrap();
    assert_eq!(error_code(&body), "rate-limited");
    // Every route shares the budget, checked before any body is read: release, an unknown
    // route, administration.
    let (status, _) = h.post("/kbs/v1/release", &serde_json::json!({}));
    assert_eq!(status, 429);
    let (status, body) = h.post("/nope", &serde_json::json!({}));
    assert_eq!((status, error_code(&body)), (429, "rate-limited"));
    match h.admin().audit(false) {
        Err(AdminError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (429, "rate-limited"));
        }
        other => panic!("{other:?}"),
    }
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(h.admin().audit(false).is_ok(), "the budget refills");
}

/// A harness whose per-address rate is high enough not to be what a test meets.
fn generous() -> Harness {
    start_with(
        &SimConfig::up_to_date(),
        identity(),
        RateLimit {
            per_second: NonZeroU32::new(10_000).unwrap(),
            burst: NonZeroU32::new(10_000).unwrap(),
        },
    )
}

#[test]
fn a_flood_of_wrong_tokens_is_cut_off_and_summed_in_one_audit_record() {
    let h = generous();
    let intruder = AdminClient::new(&h.url, AdminToken::from_text("wrong"), None).unwrap();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        match intruder.remove_model(MODEL) {
            Err(AdminError::Refused { status, .. }) => statuses.push(status),
            other => panic!("{other:?}"),
        }
    }
    // Ten reach the token check; then the address is cut off before it, for the window.
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 10);
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 30);
    // The first is on record at once; the other nine are one summed record, not nine.
    let records = h.audit();
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.reason == "unauthorized")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[0].event, "remove-model");
    assert!(!refused[0].measurements.contains_key("attempts"));
    assert_eq!(refused[1].event, "remove-model");
    assert_eq!(refused[1].measurements["attempts"], "9");
    assert!(h.admin().audit(true).unwrap().verification.unwrap().intact);
}

#[test]
fn the_audit_log_is_read_and_checked_a_page_at_a_time() {
    let h = generous();
    let broker = h.second_broker();
    for _ in 0..2_300 {
        assert!(broker.remove_model(Some(&h.token), "test", "nope").is_err());
    }
    let mut sizes = Vec::new();
    let mut verification = None;
    let mut seqs = Vec::new();
    h.admin()
        .audit_pages(true, |page| {
            sizes.push(page.records.len());
            seqs.extend(page.records.iter().map(|r| r.seq));
            if page.verification.is_some() {
                verification = page.verification;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(sizes, [1000, 1000, 300], "pages of the default size");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none twice"
    );
    let verification = verification.expect("the first page carries the check");
    assert!(verification.intact);
    assert_eq!(verification.records, 2_300);
    // A client may ask for larger pages, up to the broker's maximum (10 000).
    let response = h
        .agent
        .get(format!("{}/kbs/v1/admin/audit?limit=999999999", h.url))
        .header("authorization", &format!("Bearer {}", h.token))
        .call()
        .unwrap();
    let page: Value = response.into_body().read_json().unwrap();
    assert_eq!(page["records"].as_array().unwrap().len(), 2_300);
    assert!(page.get("next").is_none());
}

#[test]
fn connections_that_say_nothing_are_closed_while_callers_are_served() {
    use std::io::Read as _;

    let mut limits = cloak_kbs::http::ConnectionLimits::default();
    limits.idle_timeout = std::time::Duration::from_secs(1);
    let h = start_full(
        &SimConfig::up_to_date(),
        identity(),
        RateLimit::new(),
        limits,
    );
    let addr = h.url.trim_start_matches("http://").to_owned();
    let started = std::time::Instant::now();
    let mut held: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    // The broker answers its callers meanwhile.
    assert!(h.admin().audit(false).is_ok());
    for conn in &mut held {
        conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            conn.read(&mut byte).unwrap(),
            0,
            "an idle connection stayed open"
        );
    }
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(4),
        "closed after {took:?} under a 1 s idle deadline"
    );
}

#[test]
fn a_model_name_cannot_forge_lines_in_the_log() {
    let h = generous();
    let response = h
        .agent
        .put(format!(
            "{}/kbs/v1/admin/models/evil%0A1%20release%20granted/policy",
            h.url
        ))
        .header("authorization", &format!("Bearer {}", h.token))
        .send_json(serde_json::json!({"policy": h.policy("")}))
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let record = h.last_audit();
    assert_eq!(record.reason, "invalid-model-name");
    assert_eq!(record.model, r#""evil\n1 release granted""#);
    assert!(!record.model.contains('\n'));
}

#[test]
fn migrations_are_idempotent_and_init_refuses_to_repeat() {
    let h = with_model();
    for _ in 0..2 {
        let store = SqliteStore::open(&h.db).unwrap();
        assert!(store.model(MODEL).unwrap().is_some());
    }
    let again = cloak_kbs::init(
        &cloak_kbs::Database::Sqlite(h.db.clone()),
        &h.dir.path().join("token2"),
        MasterKeySource::Given(MasterKey::generate().unwrap()),
        0,
    );
    assert!(matches!(again, Err(BrokerError::AlreadyInitialised)));
    let clobber = cloak_kbs::init(
        &cloak_kbs::Database::Sqlite(h.dir.path().join("other.db")),
        &h.dir.path().join("admin.token"),
        MasterKeySource::Given(MasterKey::generate().unwrap()),
        0,
    );
    assert!(matches!(clobber, Err(BrokerError::FileExists(_))));
}

#[test]
fn secret_files_are_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let h = start(&SimConfig::up_to_date(), identity());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let master = cloak_kbs::default_master_key_path(&h.db);
    assert_eq!(mode(&master), 0o600);
    assert_eq!(mode(&h.dir.path().join("admin.token")), 0o600);
    assert_eq!(mode(&h.db), 0o600);
    std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(
        MasterKey::read_file(&master),
        Err(BrokerError::MasterKey(_))
    ));
}

#[test]
fn unknown_models_and_malformed_requests_are_refused() {
    let h = start(&SimConfig::up_to_date(), identity());
    let (status, body) = h.post("/kbs/v1/challenge", &serde_json::json!({"model": "nope"}));
    assert_eq!((status, error_code(&body)), (404, "unknown-model"));
    let (status, body) = h.post("/kbs/v1/challenge", &serde_json::json!({"model": "a/b"}));
    assert_eq!((status, error_code(&body)), (400, "invalid-model-name"));
    let (status, body) = h.post("/kbs/v1/release", &serde_json::json!({"nonce": 1}));
    assert_eq!((status, error_code(&body)), (400, "malformed-request"));
    let (status, body) = h.post("/kbs/v1/nothing", &serde_json::json!({}));
    assert_eq!((status, error_code(&body)), (404, "not-found"));
}

#[test]
fn the_admin_client_trusts_only_the_given_ca_over_tls() {
    let h = start(&SimConfig::up_to_date(), identity());
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let tls = cloak_kbs::http::tls_config(cert_pem.as_bytes(), key_pem.as_bytes()).unwrap();
    let broker = h.second_broker();
    let router = cloak_kbs::http::router(Arc::new(broker), RateLimit::new());
    let listener = h
        .runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    h.runtime.spawn(cloak_kbs::http::serve(
        listener,
        Some(tls),
        router,
        cloak_kbs::http::ConnectionLimits::default(),
        std::future::pending(),
    ));
    let trusting = AdminClient::new(
        &url,
        AdminToken::from_text(&h.token),
        Some(cert_pem.as_bytes()),
    )
    .unwrap();
    assert!(trusting.audit(true).unwrap().verification.unwrap().intact);
    let default_roots = AdminClient::new(&url, AdminToken::from_text(&h.token), None).unwrap();
    assert!(matches!(
        default_roots.audit(false),
        Err(AdminError::Unreachable(_))
    ));
}

/// Challenge and release `record` with a fresh ephemeral key; the opened key on success.
fn release_record(h: &Harness, record: &str) -> Result<Vec<u8>, (u16, Value)> {
    let (status, body) = h.post("/kbs/v1/challenge", &serde_json::json!({ "model": record }));
    if status != 200 {
        return Err((status, body));
    }
    let nonce: ChallengeResponse = serde_json::from_value(body).unwrap();
    let ephemeral = HpkeKeyPair::generate();
    let request = h.request(&nonce.nonce, ephemeral.public_key(), ephemeral.public_key());
    let (status, body) = h.release(&request);
    if status != 200 {
        return Err((status, body));
    }
    let response: ReleaseResponse = serde_json::from_value(body).unwrap();
    assert_eq!(response.model, record);
    let sealed = HpkeSealed {
        enc: response.enc.as_slice().try_into().unwrap(),
        ciphertext: response.sealed_key,
    };
    Ok(ephemeral
        .open(&sealed, &release_info(record), &nonce.nonce)
        .unwrap()
        .to_vec())
}

/// A fleet's key is made by the broker, released like a model key under the fleet's policy
/// (and refused to an enclave it does not name), rotated with the previous generation kept
/// live and the new one advertised only after the propagation time, retired two rotations
/// later, and never reused after the fleet is removed and made again.
#[test]
fn fleet_keys_are_generated_released_rotated_and_retired() {
    use cloak_proto::kbs::fleet::{fleet_key_id, fleet_record};
    let rate = RateLimit {
        per_second: NonZeroU32::new(1000).unwrap(),
        burst: NonZeroU32::new(1000).unwrap(),
    };
    let h = start_with(&SimConfig::up_to_date(), identity(), rate);
    let admin = h.admin();
    let status = admin.add_fleet("chat", &h.policy("")).unwrap();
    assert_eq!(status.advertise, 1);
    assert_eq!(status.generations.len(), 1);
    assert_eq!(status.generations[0].key_id, fleet_key_id(1));
    let first = release_record(&h, &fleet_record("chat", 1)).unwrap();
    assert_eq!(first.len(), 32);
    // The same key to every replica that asks.
    assert_eq!(release_record(&h, &fleet_record("chat", 1)).unwrap(), first);
    let record = h.last_audit();
    assert_eq!(
        (
            record.event.as_str(),
            record.model.as_str(),
            record.decision.as_str()
        ),
        ("release", "fleet:chat:1", "granted")
    );
    // A fleet exists once; a model name cannot reach into the fleet namespace.
    let again = admin.add_fleet("chat", &h.policy("")).unwrap_err();
    assert_eq!(again.code(), "fleet-conflict", "{again}");
    let key = ModelKey::generate().unwrap();
    assert_eq!(
        admin
            .add_model("fleet:chat:9", &key, &h.policy(""))
            .unwrap_err()
            .code(),
        "usage"
    );

    // Rotation: both generations live, the old one still advertised until propagation.
    let rotated = admin.rotate_fleet("chat").unwrap();
    let live: Vec<u32> = rotated.generations.iter().map(|g| g.generation).collect();
    assert_eq!(live, [2, 1]);
    assert_eq!(rotated.advertise, 1);
    let second = release_record(&h, &fleet_record("chat", 2)).unwrap();
    assert_ne!(second, first);
    assert_eq!(release_record(&h, &fleet_record("chat", 1)).unwrap(), first);
    h.clock.0.fetch_add(
        cloak_kbs::broker::DEFAULT_FLEET_PROPAGATION,
        Ordering::SeqCst,
    );
    assert_eq!(admin.fleet_status("chat").unwrap().advertise, 2);

    // The next rotation retires generation 1.
    admin.rotate_fleet("chat").unwrap();
    let (status, body) = release_record(&h, &fleet_record("chat", 1)).unwrap_err();
    assert_eq!(
        (status, error_code(&body)),
        (404, "unknown-model"),
        "{body}"
    );
    assert!(release_record(&h, &fleet_record("chat", 3)).is_ok());

    // The fleet's policy applies to every generation: another enclave is refused both.
    let other = format!(
        "trust_root = \"{}\"\n[sgx]\nmrenclave = [\"{}\"]\n",
        h.root_pin(),
        "ab".repeat(32)
    );
    admin.set_fleet_policy("chat", &other).unwrap();
    for generation in [2, 3] {
        let (status, body) = release_record(&h, &fleet_record("chat", generation)).unwrap_err();
        assert_denied(&h, status, &body, "measurement-mismatch");
    }

    // Removed, then made again: a generation (and key id) no client can hold.
    admin.remove_fleet("chat").unwrap();
    assert_eq!(
        admin.fleet_status("chat").unwrap_err().code(),
        "unknown-fleet"
    );
    assert_eq!(admin.add_fleet("chat", &h.policy("")).unwrap().advertise, 4);
    let events: Vec<String> = h
        .audit()
        .into_iter()
        .filter(|r| r.event.contains("fleet"))
        .map(|r| format!("{} {} {}", r.event, r.model, r.decision))
        .collect();
    assert_eq!(
        events,
        [
            "add-fleet fleet:chat done",
            "add-fleet fleet:chat denied",
            "rotate-fleet fleet:chat done",
            "rotate-fleet fleet:chat done",
            "set-fleet-policy fleet:chat done",
            "remove-fleet fleet:chat done",
            "add-fleet fleet:chat done",
        ]
    );
}

/// A token release from an enclave attested by a (test) Azure Attestation instance.
fn token_request(token: Vec<u8>, nonce: &[u8], ephemeral: &[u8; 32]) -> ReleaseRequest {
    ReleaseRequest {
        evidence_format: Some(cloak_proto::kbs::EVIDENCE_MAA_TOKEN.to_owned()),
        nonce: nonce.to_vec(),
        evidence: token,
        collateral: RawValue::from_string("null".into()).unwrap(),
        ephemeral_key: ephemeral.to_vec(),
    }
}

fn token_enclave() -> cloak_test_support::maa::TokenEnclave {
    cloak_test_support::maa::TokenEnclave {
        mrenclave: identity().mrenclave,
        mrsigner: identity().mrsigner,
        isv_prod_id: 1,
        isv_svn: 2,
        debug: false,
    }
}

#[test]
fn an_azure_attestation_token_releases_the_key_when_the_policy_trusts_its_issuer() {
    // Many releases in a row from one address: a limit above the default burst.
    let rate = RateLimit {
        per_second: NonZeroU32::new(1000).unwrap(),
        burst: NonZeroU32::new(1000).unwrap(),
    };
    let h = start_with(&SimConfig::up_to_date(), identity(), rate);
    let maa = cloak_test_support::maa::TestIssuer::new("https://test.weu.attest.azure.net");
    // The model owner pins the instance's keys (a file next to the policy, inlined on upload).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("certs.json"), maa.jwks_json()).unwrap();
    let policy_path = dir.path().join("policy.toml");
    std::fs::write(
        &policy_path,
        format!(
            "{}\n[azure_attestation]\nissuer = \"{}\"\njwks = \"certs.json\"\n",
            h.policy(""),
            maa.issuer()
        ),
    )
    .unwrap();
    let uploaded = cloak_kbs::policy::policy_for_upload(&policy_path).unwrap();
    assert!(
        uploaded.contains("\"keys\""),
        "the JWKS is inlined: {uploaded}"
    );
    let key = h.add_model(&uploaded);

    // A release bound through the token's enclave-held data.
    let nonce = h.challenge().nonce;
    let ephemeral = HpkeKeyPair::generate();
    let ehd = release_report_data(&nonce, ephemeral.public_key());
    let token = maa.mint(&maa.claims(&token_enclave(), &ehd, h.clock.now()));
    let (status, body) = h.release(&token_request(token, &nonce, ephemeral.public_key()));
    assert_eq!(status, 200, "{body}");
    let response: ReleaseResponse = serde_json::from_value(body).unwrap();
    let sealed = HpkeSealed {
        enc: response.enc.as_slice().try_into().unwrap(),
        ciphertext: response.sealed_key.clone(),
    };
    let opened = ephemeral
        .open(&sealed, &release_info(MODEL), &nonce)
        .unwrap();
    assert_eq!(opened.as_slice(), key.secret_bytes());
    let record = h.last_audit();
    assert_eq!(
        (record.decision.as_str(), record.reason.as_str()),
        ("granted", "granted")
    );
    assert_eq!(record.measurements["evidence"], "maa-token");
    assert_eq!(record.measurements["issuer"], maa.issuer());
    assert_eq!(
        record.measurements["mrenclave"],
        hex::encode(identity().mrenclave)
    );

    // Refusals, each audited with its code.
    let other_issuer =
        cloak_test_support::maa::TestIssuer::new("https://test.weu.attest.azure.net");
    // Each case makes a token for a nonce and an ephemeral key.
    type MakeToken<'a> = Box<dyn Fn(&[u8], &[u8; 32]) -> Vec<u8> + 'a>;
    let cases: Vec<(&str, MakeToken<'_>, &str)> = vec![
        (
            "data bound to another nonce",
            Box::new(|_, eph| {
                let ehd = release_report_data(&[9; 32], eph);
                maa.mint(&maa.claims(&token_enclave(), &ehd, h.clock.now()))
            }),
            "report-data-mismatch",
        ),
        (
            "another build",
            Box::new(|nonce, eph| {
                let mut enclave = token_enclave();
                enclave.mrenclave = [0x33; 32];
                maa.mint(&maa.claims(&enclave, &release_report_data(nonce, eph), h.clock.now()))
            }),
            "measurement-mismatch",
        ),
        (
            "a debug enclave",
            Box::new(|nonce, eph| {
                let mut enclave = token_enclave();
                enclave.debug = true;
                maa.mint(&maa.claims(&enclave, &release_report_data(nonce, eph), h.clock.now()))
            }),
            "debug-enclave",
        ),
        (
            "an expired token",
            Box::new(|nonce, eph| {
                let claims = maa.claims(
                    &token_enclave(),
                    &release_report_data(nonce, eph),
                    h.clock.now() - 7200,
                );
                maa.mint(&claims)
            }),
            "token-expired",
        ),
        (
            "another instance's key under the trusted name",
            Box::new(|nonce, eph| {
                let claims = other_issuer.claims(
                    &token_enclave(),
                    &release_report_data(nonce, eph),
                    h.clock.now(),
                );
                other_issuer.mint(&claims)
            }),
            "token-key-unknown",
        ),
        (
            "another issuer signed by the trusted key",
            Box::new(|nonce, eph| {
                let mut claims = maa.claims(
                    &token_enclave(),
                    &release_report_data(nonce, eph),
                    h.clock.now(),
                );
                claims["iss"] = "https://evil.attest.example".into();
                maa.mint(&claims)
            }),
            "token-issuer-mismatch",
        ),
    ];
    for (name, make, code) in cases {
        let nonce = h.challenge().nonce;
        let ephemeral = HpkeKeyPair::generate();
        let token = make(&nonce, ephemeral.public_key());
        let (status, body) = h.release(&token_request(token, &nonce, ephemeral.public_key()));
        assert_eq!((status, error_code(&body)), (403, code), "{name}: {body}");
        let record = h.last_audit();
        assert_eq!(
            (record.decision.as_str(), record.reason.as_str()),
            ("denied", code),
            "{name}"
        );
    }

    // A token is single-use through its nonce, like a quote.
    let nonce = h.challenge().nonce;
    let ephemeral = HpkeKeyPair::generate();
    let ehd = release_report_data(&nonce, ephemeral.public_key());
    let request = token_request(
        maa.mint(&maa.claims(&token_enclave(), &ehd, h.clock.now())),
        &nonce,
        ephemeral.public_key(),
    );
    assert_eq!(h.release(&request).0, 200);
    let (status, body) = h.release(&request);
    assert_eq!((status, error_code(&body)), (403, "nonce-unknown"));
}

#[test]
fn a_token_is_refused_for_a_model_whose_policy_trusts_no_attestation_service() {
    let h = with_model();
    let maa = cloak_test_support::maa::TestIssuer::new("https://test.weu.attest.azure.net");
    let nonce = h.challenge().nonce;
    let ephemeral = HpkeKeyPair::generate();
    let ehd = release_report_data(&nonce, ephemeral.public_key());
    let token = maa.mint(&maa.claims(&token_enclave(), &ehd, h.clock.now()));
    let (status, body) = h.release(&token_request(token, &nonce, ephemeral.public_key()));
    assert_denied(&h, status, &body, "evidence-not-accepted");
    // A policy that accepts tokens only refuses a quote.
    let tokens_only = format!(
        "evidence = [\"maa-token\"]\n[sgx]\nmrenclave = [\"{}\"]\n[azure_attestation]\nissuer = \"{}\"\njwks = {:?}\n",
        hex::encode(identity().mrenclave),
        maa.issuer(),
        maa.jwks_json()
    );
    h.admin().set_policy(MODEL, &tokens_only).unwrap();
    let (status, body, _, _) = h.attempt();
    assert_denied(&h, status, &body, "evidence-not-accepted");
    // An evidence format the broker does not know is a malformed request.
    let nonce = h.challenge().nonce;
    let mut request = h.request(&nonce, ephemeral.public_key(), ephemeral.public_key());
    request.evidence_format = Some("sev-snp".into());
    let (status, body) = h.release(&request);
    assert_eq!(status, 400, "{body}");
}
