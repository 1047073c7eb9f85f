//! The broker service: challenge, release and administration, transport-free. Every method
//! blocks (the store is synchronous); the HTTP layer calls them on blocking threads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AcceptedQuote, AcceptedToken, AppraisalPolicy};
use cloak_attest::quote::{Measurements, Quote};
use cloak_attest::types::ReportData;
use cloak_attest::verify::Verifier;
use cloak_crypto::key::{KEY_LEN, ModelKey};
use cloak_proto::kbs::{
    AddModelRequest, AuditRecord, AuditResponse, AuditVerification, ChallengeRequest,
    ChallengeResponse, EPHEMERAL_KEY_LEN, EVIDENCE_DCAP_QUOTE, EVIDENCE_MAA_TOKEN, NONCE_LEN,
    ReleaseRequest, ReleaseResponse, SetPolicyRequest, release_info, release_report_data,
};
use zeroize::Zeroize as _;

use crate::master::{DerivedKeys, MasterKey};
use crate::policy::{
    AzureAttestation, ReleasePolicy, parse_policy_and_lease, parse_release_policy,
};
use crate::store::{ModelRecord, NewAuditRecord, Store};
use crate::token::AdminToken;
use crate::{BrokerError, Clock};

mod fleet;

/// How long a nonce is accepted by default (seconds).
pub const DEFAULT_NONCE_TTL: u64 = 60;
/// How long a new fleet key generation is held back from replicas' claims by default
/// (seconds): twice the default interval at which replicas look for new generations.
pub const DEFAULT_FLEET_PROPAGATION: u64 = 60;
/// Longest model name.
pub const MAX_MODEL_NAME_LEN: usize = 128;
/// Expired nonces are kept this long (seconds) so that a late release is told `nonce-expired`
/// rather than `nonce-unknown`; then they are purged.
const EXPIRED_NONCE_RETENTION: u64 = 3600;

const META_KEY_CHECK: &str = "key_check";
const META_ADMIN_TOKEN: &str = "admin_token_sha256";
const META_CREATED: &str = "created";

/// Audit events.
const EVENT_RELEASE: &str = "release";
const EVENT_ADD: &str = "add-model";
const EVENT_SET_POLICY: &str = "set-policy";
const EVENT_REMOVE: &str = "remove-model";
const EVENT_READ_AUDIT: &str = "read-audit";

/// Audit decisions.
const GRANTED: &str = "granted";
const DENIED: &str = "denied";
const DONE: &str = "done";

/// Settings of a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    /// How long a nonce is accepted (seconds).
    pub nonce_ttl: u64,
    /// How long a new fleet key generation is held back from replicas' claims (seconds), so
    /// that every replica has fetched it before any client is sent to it.
    pub fleet_propagation: u64,
}

impl BrokerConfig {
    /// The defaults: nonces live [`DEFAULT_NONCE_TTL`] seconds; new fleet keys are
    /// advertised after [`DEFAULT_FLEET_PROPAGATION`] seconds.
    pub fn new() -> Self {
        Self {
            nonce_ttl: DEFAULT_NONCE_TTL,
            fleet_propagation: DEFAULT_FLEET_PROPAGATION,
        }
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// Writes a new broker's settings into `store`: the master key's check value and the admin
/// token's SHA-256. Fails with [`BrokerError::AlreadyInitialised`] if the store has them.
pub fn initialise(
    store: &dyn Store,
    master: &MasterKey,
    token: &AdminToken,
    now: u64,
) -> Result<(), BrokerError> {
    let keys = master.derived();
    let created = now.to_string();
    let inserted = store.insert_meta(&[
        (META_KEY_CHECK, &keys.check_value()),
        (META_ADMIN_TOKEN, &token.sha256_hex()),
        (META_CREATED, &created),
    ])?;
    if inserted {
        Ok(())
    } else {
        Err(BrokerError::AlreadyInitialised)
    }
}

/// Checks a model name: 1 to 128 characters of `A-Z a-z 0-9 . _ -`.
pub fn validate_model_name(name: &str) -> Result<(), BrokerError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_MODEL_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(BrokerError::InvalidModelName)
    }
}

/// Checks the name of a broker record: a model name, or a fleet key's `fleet:NAME:G` with a
/// valid fleet name.
pub fn validate_record_name(name: &str) -> Result<(), BrokerError> {
    match cloak_proto::kbs::fleet::parse_fleet_record(name) {
        Some((fleet, _)) => validate_model_name(fleet),
        None => validate_model_name(name),
    }
}

/// Which audit records to read: those after sequence number `after`, at most `limit`
/// (clamped to [`MAX_AUDIT_PAGE`]), with or without the check of the whole chain.
#[derive(Clone, Copy, Debug)]
pub struct AuditPage {
    /// Records after this sequence number (0: from the start).
    pub after: u64,
    /// At most this many.
    pub limit: u64,
    /// Also check the whole chain.
    pub verify: bool,
}

/// The most audit records one page holds.
pub const MAX_AUDIT_PAGE: u64 = 10_000;

/// How long refused admin calls from one address are summed into one audit record.
pub const REFUSAL_WINDOW: u64 = 60;

/// The key broker.
pub struct Broker {
    store: Arc<dyn Store>,
    keys: DerivedKeys,
    clock: Arc<dyn Clock>,
    config: BrokerConfig,
    /// Admin calls refused for a missing or wrong token, by client address, not yet on record:
    /// the first in each window is recorded at once, the rest summed into one record (see
    /// [`Broker::flush_refusals`]), so a flood cannot grow the log by a record per request.
    unauthorized: Mutex<HashMap<(String, &'static str), Refusals>>,
}

/// Unauthorized admin calls of one kind from one address in the current window.
#[derive(Debug)]
struct Refusals {
    since: u64,
    until: u64,
    /// Calls after the first, not yet recorded.
    pending: u64,
}

impl Refusals {
    /// The calls pending, leaving none.
    fn take(&mut self) -> Self {
        let taken = Self {
            since: self.since,
            until: self.until,
            pending: self.pending,
        };
        self.pending = 0;
        taken
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens a broker over an initialised store; fails with [`BrokerError::WrongMasterKey`]
    /// if `master` is not the key the store was initialised with.
    pub fn open(
        store: Arc<dyn Store>,
        master: &MasterKey,
        clock: Arc<dyn Clock>,
        config: BrokerConfig,
    ) -> Result<Self, BrokerError> {
        let keys = master.derived();
        let stored = store
            .meta(META_KEY_CHECK)?
            .ok_or(BrokerError::NotInitialised)?;
        if !keys.matches_check_value(&stored) {
            return Err(BrokerError::WrongMasterKey);
        }
        Ok(Self {
            store,
            keys,
            clock,
            config,
            unauthorized: Mutex::new(HashMap::new()),
        })
    }

    /// Writes one audit record per address and call for the unauthorized admin calls summed
    /// since its last record (the call's event, reason `unauthorized`, with `attempts`,
    /// `since` and `until` in its measurements), and forgets windows that have ended.
    /// `cloak kbs serve` calls this every [`REFUSAL_WINDOW`] seconds and at shutdown; reading
    /// the audit log calls it first.
    pub fn flush_refusals(&self) {
        let now = self.clock.now();
        let due: Vec<((String, &'static str), Refusals)> = {
            let mut all = self
                .unauthorized
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut due = Vec::new();
            all.retain(|key, refusals| {
                if refusals.pending > 0 {
                    due.push((key.clone(), refusals.take()));
                }
                now < refusals.since.saturating_add(REFUSAL_WINDOW)
            });
            due
        };
        for ((client, event), refusals) in due {
            self.record_refusals(event, &client, &refusals, now);
        }
    }

    /// Whether an unauthorized `event` call from `client` is the first of its window (recorded
    /// at once) rather than one to sum. A window that ended with calls pending is recorded
    /// here, before the new one starts.
    fn first_unauthorized(&self, event: &'static str, client: &str, now: u64) -> bool {
        let key = (client_address(client), event);
        let ended = {
            let mut all = self
                .unauthorized
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match all.get_mut(&key) {
                Some(refusals) if now < refusals.since.saturating_add(REFUSAL_WINDOW) => {
                    refusals.pending = refusals.pending.saturating_add(1);
                    refusals.until = now;
                    return false;
                }
                _ => all.insert(
                    key.clone(),
                    Refusals {
                        since: now,
                        until: now,
                        pending: 0,
                    },
                ),
            }
        };
        if let Some(ended) = ended.filter(|r| r.pending > 0) {
            self.record_refusals(event, &key.0, &ended, now);
        }
        true
    }

    fn record_refusals(&self, event: &str, client: &str, refusals: &Refusals, now: u64) {
        let summary = BTreeMap::from([
            ("attempts".to_owned(), refusals.pending.to_string()),
            ("since".to_owned(), refusals.since.to_string()),
            ("until".to_owned(), refusals.until.to_string()),
        ]);
        if let Err(e) = self.record(
            event,
            "",
            DENIED,
            BrokerError::Unauthorized.code(),
            client,
            now,
            summary,
        ) {
            tracing::error!(error = %e, "cannot append to the audit log");
        }
    }

    /// Issues a nonce for `request.model`.
    pub fn challenge(&self, request: &ChallengeRequest) -> Result<ChallengeResponse, BrokerError> {
        validate_record_name(&request.model)?;
        if self.store.model(&request.model)?.is_none() {
            return Err(BrokerError::UnknownModel);
        }
        let now = self.clock.now();
        let mut nonce = vec![0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| BrokerError::Random(e.to_string()))?;
        let expires = now.saturating_add(self.config.nonce_ttl);
        let purged = self
            .store
            .purge_nonces(now.saturating_sub(EXPIRED_NONCE_RETENTION))?;
        if purged > 0 {
            tracing::debug!(purged, "purged expired nonces");
        }
        self.store
            .insert_nonce(&hex::encode(&nonce), &request.model, expires)?;
        tracing::debug!(model = %request.model, nonce = %hex::encode(&nonce), expires, "challenge issued");
        Ok(ChallengeResponse { nonce, expires })
    }

    /// Releases a model key to the enclave whose evidence `request` carries, or refuses; either
    /// way the decision is audited. The nonce is used up first, whatever happens next; a
    /// replayed nonce is refused as `nonce-unknown` and audited under its model.
    pub fn release(
        &self,
        request: &ReleaseRequest,
        client: &str,
    ) -> Result<ReleaseResponse, BrokerError> {
        let now = self.clock.now();
        let mut seen = BTreeMap::new();
        let taken = if request.nonce.len() == NONCE_LEN {
            self.store.take_nonce(&hex::encode(&request.nonce))?
        } else {
            None
        };
        let Some(nonce) = taken else {
            let error = BrokerError::denied("nonce-unknown", "the nonce is unknown");
            return Err(self.refuse(EVENT_RELEASE, "", client, now, seen, error));
        };
        let model = nonce.model;
        if nonce.uses != 1 {
            let error = BrokerError::denied("nonce-unknown", "the nonce was used already");
            return Err(self.refuse(EVENT_RELEASE, &model, client, now, seen, error));
        }
        if now >= nonce.expires {
            let error = BrokerError::denied("nonce-expired", "the nonce has expired");
            return Err(self.refuse(EVENT_RELEASE, &model, client, now, seen, error));
        }
        match self.appraise(&model, request, now, &mut seen) {
            Ok(response) => {
                // The key leaves only once its release is on record.
                self.record(EVENT_RELEASE, &model, GRANTED, GRANTED, client, now, seen)?;
                tracing::info!(model = %model, %client, "key released");
                Ok(response)
            }
            Err(error) => Err(self.refuse(EVENT_RELEASE, &model, client, now, seen, error)),
        }
    }

    fn appraise(
        &self,
        model: &str,
        request: &ReleaseRequest,
        now: u64,
        seen: &mut BTreeMap<String, String>,
    ) -> Result<ReleaseResponse, BrokerError> {
        let record = self.store.model(model)?.ok_or(BrokerError::UnknownModel)?;
        // Nothing in a row the broker did not write is acted on: its policy could name anyone.
        if !self.keys.record_is_authentic(&record) {
            return Err(BrokerError::denied(
                "record-unauthenticated",
                "the model's record in the database is not one this broker wrote (edited, or \
                 written before records were authenticated: set its policy again)",
            ));
        }
        let ephemeral: [u8; EPHEMERAL_KEY_LEN] =
            request.ephemeral_key.as_slice().try_into().map_err(|_| {
                BrokerError::MalformedRequest(format!(
                    "ephemeral_key must be {EPHEMERAL_KEY_LEN} bytes"
                ))
            })?;
        // A policy stored before identities were required, and never replaced, releases
        // nothing: refused (and audited) as a denial, with its own code.
        let ReleasePolicy {
            appraisal: policy,
            lease,
            token_key,
            azure_attestation,
            accepts_quotes,
        } = parse_policy_and_lease(&record.policy).map_err(|e| match e {
            BrokerError::PolicyPinsNoIdentity => {
                BrokerError::denied(e.code(), format!("the model's stored policy: {e}"))
            }
            other => other,
        })?;
        let expected = release_report_data(&request.nonce, &ephemeral);
        let accepted = match request.evidence_format.as_deref() {
            None | Some(EVIDENCE_DCAP_QUOTE) if !accepts_quotes => {
                return Err(BrokerError::denied(
                    "evidence-not-accepted",
                    "the model's policy accepts Azure Attestation tokens only",
                ));
            }
            None | Some(EVIDENCE_DCAP_QUOTE) => Accepted::Quote(Box::new(
                self.appraise_quote(request, &policy, expected, now, seen)?,
            )),
            Some(EVIDENCE_MAA_TOKEN) => {
                let Some(trusted) = &azure_attestation else {
                    return Err(BrokerError::denied(
                        "evidence-not-accepted",
                        "the model's policy trusts no Azure Attestation instance",
                    ));
                };
                Accepted::Token(Box::new(appraise_token(
                    request, &policy, trusted, &expected, now, seen,
                )?))
            }
            Some(other) => {
                return Err(BrokerError::MalformedRequest(format!(
                    "unknown evidence_format {other:?} (known: {EVIDENCE_DCAP_QUOTE}, \
                     {EVIDENCE_MAA_TOKEN})"
                )));
            }
        };
        let key = self.keys.unwrap(model, &record.wrapped_key)?;
        let lease_expires = now.saturating_add(lease);
        seen.insert("lease_expires".into(), lease_expires.to_string());
        let mut response = seal_key(
            &accepted,
            model,
            &key,
            token_key.as_deref(),
            &request.nonce,
            &ephemeral,
        )?;
        response.lease_expires = Some(lease_expires);
        if accepted.is_debug() {
            tracing::warn!(model = %model, "key released to a debug enclave, as its policy allows");
        }
        Ok(response)
    }

    /// A quote and its collateral, verified and appraised with the report data required to be
    /// `expected`.
    fn appraise_quote(
        &self,
        request: &ReleaseRequest,
        policy: &AppraisalPolicy,
        expected: [u8; 64],
        now: u64,
        seen: &mut BTreeMap<String, String>,
    ) -> Result<AcceptedQuote, BrokerError> {
        let quote = &request.evidence;
        if let Ok(parsed) = Quote::parse(quote) {
            note_measurements(&parsed, seen);
        }
        let collateral = Collateral::from_json(request.collateral.get().as_bytes())
            .map_err(|e| BrokerError::denied(e.code(), e.to_string()))?;
        let anchor = policy
            .trust_root()
            .anchor(quote, &collateral)
            .map_err(|e| BrokerError::denied(e.code(), e.to_string()))?;
        let verified = Verifier::new(anchor)
            .verify(quote, &collateral, now)
            .map_err(|e| BrokerError::denied(e.code(), e.to_string()))?;
        seen.insert("tcb_status".into(), verified.tcb_status().as_str().into());
        seen.insert(
            "trust_root".into(),
            hex::encode(verified.trust_root().sha256()),
        );
        let number = verified.tcb_evaluation_data_number();
        seen.insert("tcb_evaluation_data_number".into(), number.to_string());
        // The evaluation floor (see cloak_attest::policy::EvaluationFloor): the highest number
        // this broker has seen under the root for the TEE, kept in its database. Collateral that
        // verified is Intel's word, so it raises the floor whatever else is decided.
        let floor_key = format!(
            "tcb-evaluation-floor:{}:{}",
            hex::encode(verified.trust_root().sha256()),
            verified.tee().as_str()
        );
        let floor = u32::try_from(
            self.store
                .raise_meta_number(&floor_key, u64::from(number))?,
        )
        .unwrap_or(u32::MAX);
        let policy = match policy.min_tcb_evaluation_data_number() {
            Some(min) if min >= floor => policy.clone(),
            _ if floor > 0 => policy.clone().with_min_tcb_evaluation_data_number(floor),
            _ => policy.clone(),
        };
        policy
            .with_report_data(ReportData::from_bytes(expected))
            .appraise(verified)
            .map_err(|e| BrokerError::denied(e.code(), e.to_string()))
    }

    /// Registers a model (administrator).
    pub fn add_model(
        &self,
        token: Option<&str>,
        client: &str,
        name: &str,
        mut request: AddModelRequest,
    ) -> Result<(), BrokerError> {
        let now = self.clock.now();
        let result = self
            .authorize(token)
            .and_then(|()| self.add_model_inner(name, &request, now));
        request.key.zeroize();
        self.administered(EVENT_ADD, name, client, now, result)
    }

    fn add_model_inner(
        &self,
        name: &str,
        request: &AddModelRequest,
        now: u64,
    ) -> Result<(), BrokerError> {
        validate_model_name(name)?;
        let mut bytes: [u8; KEY_LEN] = request
            .key
            .as_slice()
            .try_into()
            .map_err(|_| BrokerError::InvalidKey(format!("a model key is {KEY_LEN} bytes")))?;
        let key = ModelKey::from_bytes(bytes);
        bytes.zeroize();
        parse_release_policy(&request.policy)?;
        let mut record = ModelRecord {
            name: name.to_owned(),
            key_id: key.id().to_string(),
            wrapped_key: self.keys.wrap(name, &key)?,
            policy: request.policy.clone(),
            created: now,
            updated: now,
            mac: String::new(),
        };
        record.mac = self.keys.record_mac(&record);
        if self.store.insert_model(&record)? {
            tracing::info!(model = %name, key_id = %record.key_id, "model added");
            Ok(())
        } else {
            Err(BrokerError::ModelExists)
        }
    }

    /// Replaces a model's policy (administrator).
    pub fn set_policy(
        &self,
        token: Option<&str>,
        client: &str,
        name: &str,
        request: &SetPolicyRequest,
    ) -> Result<(), BrokerError> {
        let now = self.clock.now();
        let result = self.authorize(token).and_then(|()| {
            validate_record_name(name)?;
            parse_release_policy(&request.policy)?;
            // The new record is authenticated as a whole: the key fields as stored (a key
            // wrapped for another name, or by another master key, still fails to unwrap),
            // the new policy and time.
            let record = self.store.model(name)?.ok_or(BrokerError::UnknownModel)?;
            if self.replace_policy(record, &request.policy, now)? {
                tracing::info!(model = %name, "policy replaced");
                Ok(())
            } else {
                Err(BrokerError::UnknownModel)
            }
        });
        self.administered(EVENT_SET_POLICY, name, client, now, result)
    }

    /// Stores `record` with `policy`, updated `now`, authenticated anew; whether its row was
    /// still there.
    fn replace_policy(
        &self,
        mut record: ModelRecord,
        policy: &str,
        now: u64,
    ) -> Result<bool, BrokerError> {
        record.policy = policy.to_owned();
        record.updated = now;
        record.mac = self.keys.record_mac(&record);
        Ok(self
            .store
            .update_policy(&record.name, &record.policy, now, &record.mac)?)
    }

    /// Removes a model and its key (administrator).
    pub fn remove_model(
        &self,
        token: Option<&str>,
        client: &str,
        name: &str,
    ) -> Result<(), BrokerError> {
        let now = self.clock.now();
        let result = self.authorize(token).and_then(|()| {
            validate_record_name(name)?;
            if self.store.delete_model(name)? {
                tracing::info!(model = %name, "model removed");
                Ok(())
            } else {
                Err(BrokerError::UnknownModel)
            }
        });
        self.administered(EVENT_REMOVE, name, client, now, result)
    }

    /// The audit log, and with `verify` the broker's check of its chain (administrator).
    /// Refused reads are audited; successful ones are not.
    pub fn audit(
        &self,
        token: Option<&str>,
        client: &str,
        page: AuditPage,
    ) -> Result<AuditResponse, BrokerError> {
        let now = self.clock.now();
        if let Err(error) = self.authorize(token) {
            return Err(self.refuse(EVENT_READ_AUDIT, "", client, now, BTreeMap::new(), error));
        }
        self.flush_refusals();
        let limit = page.limit.clamp(1, MAX_AUDIT_PAGE);
        let records = self.store.audit_page(page.after, limit)?;
        let next = (records.len() as u64 == limit)
            .then(|| records.last().map(|r| r.seq))
            .flatten();
        let verification = if page.verify {
            Some(self.verify_audit()?)
        } else {
            None
        };
        Ok(AuditResponse {
            records,
            verification,
            next,
        })
    }

    /// Checks the whole chain, reading the log a page at a time (holding 32 bytes per record).
    fn verify_audit(&self) -> Result<AuditVerification, BrokerError> {
        let mut check = crate::audit::ChainCheck::new(self.keys.audit());
        self.each_audit_page(|page| page.iter().for_each(|r| check.know(&r.hash)))?;
        self.each_audit_page(|page| page.iter().for_each(|r| check.push(r)))?;
        Ok(check.finish())
    }

    fn each_audit_page(&self, mut f: impl FnMut(&[AuditRecord])) -> Result<(), BrokerError> {
        let mut after = 0;
        loop {
            let page = self.store.audit_page(after, crate::store::AUDIT_PAGE)?;
            match page.last() {
                Some(last) if last.seq > after => {
                    after = last.seq;
                    f(&page);
                }
                _ => return Ok(()),
            }
        }
    }

    /// Whether `token` is the admin token (nothing is audited).
    pub fn token_is_valid(&self, token: Option<&str>) -> bool {
        self.authorize(token).is_ok()
    }

    /// Checks the bearer token against the stored SHA-256, in constant time.
    fn authorize(&self, token: Option<&str>) -> Result<(), BrokerError> {
        let Some(stored) = self.store.meta(META_ADMIN_TOKEN)? else {
            return Err(BrokerError::Unauthorized);
        };
        let Ok(stored) = hex::decode(stored) else {
            return Err(BrokerError::Unauthorized);
        };
        let presented = cloak_crypto::hash::sha256(token.unwrap_or_default().as_bytes());
        let equal: bool = subtle::ConstantTimeEq::ct_eq(stored.as_slice(), &presented[..]).into();
        if equal && token.is_some() {
            Ok(())
        } else {
            Err(BrokerError::Unauthorized)
        }
    }

    /// Audits an administrative call's outcome and passes it on.
    fn administered(
        &self,
        event: &'static str,
        name: &str,
        client: &str,
        now: u64,
        result: Result<(), BrokerError>,
    ) -> Result<(), BrokerError> {
        match result {
            Ok(()) => self.record(event, name, DONE, DONE, client, now, BTreeMap::new()),
            Err(error) => Err(self.refuse(event, name, client, now, BTreeMap::new(), error)),
        }
    }

    /// Audits a refusal and returns its error. A failure to write the record is logged; the
    /// refusal stands either way.
    fn refuse(
        &self,
        event: &'static str,
        model: &str,
        client: &str,
        now: u64,
        seen: BTreeMap<String, String>,
        error: BrokerError,
    ) -> BrokerError {
        if matches!(error, BrokerError::Unauthorized)
            && !self.first_unauthorized(event, client, now)
        {
            tracing::debug!(%client, "unauthorized admin call summed");
            return error;
        }
        tracing::info!(event, model = %audit_name(model), %client, reason = error.code(), "refused: {error}");
        if let Err(e) = self.record(event, model, DENIED, error.code(), client, now, seen) {
            tracing::error!(error = %e, "cannot append to the audit log");
        }
        error
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        event: &str,
        model: &str,
        decision: &str,
        reason: &str,
        client: &str,
        now: u64,
        measurements: BTreeMap<String, String>,
    ) -> Result<(), BrokerError> {
        let record = NewAuditRecord {
            time: now,
            event: event.to_owned(),
            model: audit_name(model),
            decision: decision.to_owned(),
            reason: reason.to_owned(),
            client: client.to_owned(),
            measurements,
        };
        let key = self.keys.audit();
        self.store.append_audit(&record, &|record, seq, prev| {
            crate::audit::chain_hash(key, record, seq, prev)
        })?;
        Ok(())
    }
}

/// Seals the model key — followed by the owner's access-token key, if the policy names one, so
/// that the host cannot swap it — to the ephemeral key; only an accepted quote gets here.
/// What a release was granted on: a quote the policy accepted, or an Azure Attestation token
/// whose enclave it accepted. Sealing takes it as proof that appraisal happened.
enum Accepted {
    Quote(Box<AcceptedQuote>),
    Token(Box<AcceptedToken>),
}

impl Accepted {
    /// Whether the enclave runs in debug mode (its policy allowed it): its memory, and so the
    /// key, is open to its host.
    fn is_debug(&self) -> bool {
        match self {
            Self::Quote(quote) => quote.verified().is_debug(),
            Self::Token(token) => token.token().sgx().debug,
        }
    }
}

/// An Azure Attestation token from the trusted instance, whose enclave-held data is exactly
/// `expected` (so the quote the service attested bound this release's nonce and key), and whose
/// enclave `policy` accepts.
fn appraise_token(
    request: &ReleaseRequest,
    policy: &AppraisalPolicy,
    trusted: &AzureAttestation,
    expected: &[u8; 64],
    now: u64,
    seen: &mut BTreeMap<String, String>,
) -> Result<AcceptedToken, BrokerError> {
    let verified = cloak_attest::maa::verify_token(
        &request.evidence,
        &trusted.jwks,
        Some(&trusted.issuer),
        now,
    )
    .map_err(|e| BrokerError::denied(e.code(), e.to_string()))?;
    let sgx = verified.sgx();
    seen.insert("tee".into(), "sgx".into());
    seen.insert("evidence".into(), EVIDENCE_MAA_TOKEN.into());
    seen.insert("issuer".into(), verified.issuer().into());
    // The policy's TCB rules govern quotes; for a token, the service applied its own.
    seen.insert("tcb_rules".into(), "attestation-service".into());
    seen.insert("debug".into(), sgx.debug.to_string());
    seen.insert("mrenclave".into(), sgx.mrenclave.to_string());
    seen.insert("mrsigner".into(), sgx.mrsigner.to_string());
    seen.insert("isv_prod_id".into(), sgx.isv_prod_id.to_string());
    seen.insert("isv_svn".into(), sgx.isv_svn.to_string());
    let binds = sgx
        .enclave_held_data
        .as_deref()
        .is_some_and(|ehd| bool::from(subtle::ConstantTimeEq::ct_eq(ehd, &expected[..])));
    if !binds {
        return Err(BrokerError::denied(
            "report-data-mismatch",
            "the token's enclave-held data does not bind this release's nonce and key",
        ));
    }
    policy
        .appraise_token(verified)
        .map_err(|e| BrokerError::denied(e.code(), e.to_string()))
}

fn seal_key(
    _accepted: &Accepted,
    model: &str,
    key: &ModelKey,
    token_key: Option<&[u8]>,
    nonce: &[u8],
    ephemeral: &[u8; EPHEMERAL_KEY_LEN],
) -> Result<ReleaseResponse, BrokerError> {
    let plaintext = zeroize::Zeroizing::new(
        [key.secret_bytes().as_slice(), token_key.unwrap_or_default()].concat(),
    );
    let sealed = cloak_crypto::hpke::seal(ephemeral, &release_info(model), nonce, &plaintext)
        .map_err(|e| match e {
            cloak_crypto::hpke::HpkeError::Malformed => {
                BrokerError::MalformedRequest("ephemeral_key is not an X25519 public key".into())
            }
            other => BrokerError::Seal(other.code()),
        })?;
    Ok(ReleaseResponse {
        model: model.to_owned(),
        key_id: key.id().to_string(),
        enc: sealed.enc.to_vec(),
        sealed_key: sealed.ciphertext,
        lease_expires: None,
    })
}

/// A model name as recorded and logged: a valid one as it is; any other cut to
/// [`MAX_MODEL_NAME_LEN`] characters and quoted with every control or non-ASCII character
/// escaped, so that it can neither forge a line nor pass for a valid name.
fn audit_name(name: &str) -> String {
    let fleet = name
        .strip_prefix(cloak_proto::kbs::fleet::RECORD_PREFIX)
        .is_some_and(|fleet| validate_model_name(fleet).is_ok());
    if name.is_empty() || fleet || validate_record_name(name).is_ok() {
        return name.to_owned();
    }
    let cut: String = name.chars().take(MAX_MODEL_NAME_LEN).collect();
    format!("\"{}\"", cut.escape_default())
}

/// The address part of a client (`IP:PORT`), which is what one caller controls.
fn client_address(client: &str) -> String {
    client
        .parse::<std::net::SocketAddr>()
        .map_or_else(|_| client.to_owned(), |addr| addr.ip().to_string())
}

/// Records what a parsed quote says about the enclave or TD.
fn note_measurements(quote: &Quote, seen: &mut BTreeMap<String, String>) {
    seen.insert("tee".into(), quote.tee().as_str().into());
    seen.insert("debug".into(), quote.is_debug().to_string());
    match quote.measurements() {
        Measurements::Sgx(m) => {
            seen.insert("mrenclave".into(), m.mrenclave.to_string());
            seen.insert("mrsigner".into(), m.mrsigner.to_string());
            seen.insert("isv_prod_id".into(), m.isv_prod_id.to_string());
            seen.insert("isv_svn".into(), m.isv_svn.to_string());
        }
        Measurements::Tdx(m) => {
            seen.insert("mrtd".into(), m.mrtd.to_string());
        }
        _ => {}
    }
}
