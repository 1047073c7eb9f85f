//! The inference service: everything the server does, without HTTP.
//!
//! [`Service`] holds the server's state — the model store, the identity, the engine, the limits,
//! admission control and metrics — and offers the operations the HTTP layer
//! ([`crate::http`]) and the key-release client ([`crate::key_release`]) need: look up a model,
//! run an inference under admission control with its receipt ([`infer`]), make a fresh
//! attestation, and re-attest when the set of ready models changes. Its failures are
//! [`ServiceError`]s, which name what went wrong in the service's terms; the HTTP layer alone
//! decides how each one reads on the wire.

mod access;
mod infer;
mod quotes;
mod replay;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use cloak_engine::{Engine, EngineError};
use cloak_proto::attestation::AttestationDocument;
use cloak_proto::kserve::{self, KserveError};

use crate::identity::ServerIdentity;
use crate::limits::{AddressRate, Admission, BodyBudget, BodyReservation, Limits, Refusal};
use crate::metrics::Metrics;
use crate::store::{LoadedModel, ModelStore};

pub(crate) use infer::Inference;
pub(crate) use replay::ReplayRefusal;

/// Fresh attestations that may wait for a quote; more get 503 at once.
const ATTESTATION_QUEUE: usize = 1024;
/// The most nonces one quote answers (well under what a claims map may list,
/// [`cloak_proto::identity::MAX_NONCES`], and 4 KiB of claims at the largest nonces).
const ATTESTATION_BATCH: usize = 64;
/// Longest a fresh attestation waits for its quote.
const ATTESTATION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Bodies from this size up are decapsulated, hashed and parsed on a blocking thread, so that
/// a few large requests cannot stall the async workers (health checks, handshakes). Smaller
/// ones take well under a millisecond and stay where they are.
pub(crate) const OFFLOAD_BYTES: usize = 1 << 20;

/// The single model version Cloak serves (models are not versioned).
pub(crate) const MODEL_VERSION: &str = "1";

/// The server's state and operations, shared by every request.
#[derive(Debug)]
pub(crate) struct Service {
    store: ModelStore,
    identity: ServerIdentity,
    engine: Engine,
    limits: Limits,
    admission: Admission,
    /// Request bodies' bytes, reserved before they are read.
    bodies: BodyBudget,
    /// Fresh attestations: per client address, and at once.
    attestation_rate: AddressRate,
    attestations: Arc<quotes::QuoteBatcher<AttestationDocument>>,
    /// Slots for CPU-heavy request preparation (decapsulating, hashing and parsing large
    /// bodies) off the async workers.
    preparing: Arc<tokio::sync::Semaphore>,
    metrics: Metrics,
    replay: replay::ReplayCache,
    /// Per-token rate and quota of access tokens.
    tokens: access::TokenMeter,
    ready: AtomicBool,
    /// Serialises re-attestation (see [`Service::models_changed`]).
    reattest: Mutex<()>,
}

/// Why the service could not do what it was asked, in its own terms.
#[derive(Debug)]
pub(crate) enum ServiceError {
    /// The engine refused the inputs (a client error) or failed (a server error).
    Engine(EngineError),
    /// The model's owner requires an access token and this request's was missing or not good
    /// enough: the HTTP status, a stable code and a sentence.
    Access {
        /// 401, 403 or 429.
        status: u16,
        /// `token-missing`, `token-signature`, `token-expired`, `token-rate-limited`, ...
        code: &'static str,
        /// What was wrong.
        message: String,
    },
    /// Fresh attestations are at their limit of quotes at once, with a full wait.
    AttestationBusy,
    /// The client's address asked for fresh attestations faster than its rate.
    AttestationRateLimited,
    /// The request-body budget is spent: the server holds as many request bytes as it may.
    BodyBudgetSpent,
    /// The platform could not produce evidence for a fresh attestation.
    Evidence,
    /// A model is known but not served, with its failure's reason and code.
    ModelUnavailable {
        /// The model.
        name: String,
        /// Why it is not served.
        reason: String,
        /// The failure's stable code.
        code: String,
    },
    /// No model has this name.
    NoSuchModel(String),
    /// The request asks for an output the model does not have.
    NoSuchOutput {
        /// The model.
        model: String,
        /// The output asked for.
        output: String,
    },
    /// The model has no such version (Cloak serves version [`MODEL_VERSION`] only).
    NoSuchVersion {
        /// The model.
        name: String,
        /// The version asked for.
        version: String,
    },
    /// The request (or the response being encoded) breaks the KServe protocol or a limit.
    Protocol(KserveError),
    /// The receipt could not be signed.
    Receipt,
    /// Admission control turned the request away.
    Refused(Refusal),
    /// The inference worker died with the request (a panic outside the engine's own guard).
    WorkerFailed,
}

impl From<KserveError> for ServiceError {
    fn from(e: KserveError) -> Self {
        Self::Protocol(e)
    }
}

impl From<EngineError> for ServiceError {
    fn from(e: EngineError) -> Self {
        Self::Engine(e)
    }
}

impl Service {
    pub(crate) fn new(
        store: ModelStore,
        identity: ServerIdentity,
        limits: Limits,
        engine: Engine,
    ) -> Self {
        let metrics = Metrics::new(engine.info());
        let (ready, failed) = store.counts();
        metrics.set_models(ready, failed);
        Self {
            admission: Admission::inference(&limits),
            bodies: BodyBudget::new(&limits),
            attestation_rate: AddressRate::new(limits.attestation_rate, limits.attestation_burst),
            attestations: Arc::new(quotes::QuoteBatcher::new(
                limits.max_concurrent_attestations,
                ATTESTATION_BATCH,
                ATTESTATION_QUEUE,
                ATTESTATION_WAIT,
            )),
            preparing: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent.max(1))),
            store,
            identity,
            engine,
            replay: replay::ReplayCache::new(limits.max_replay_ids),
            tokens: access::TokenMeter::new(),
            limits,
            metrics,
            ready: AtomicBool::new(false),
            reattest: Mutex::new(()),
        }
    }

    pub(crate) fn identity(&self) -> &ServerIdentity {
        &self.identity
    }

    /// Admits an encapsulated request made at `time` with random `id`, once (see
    /// [`replay`]).
    pub(crate) fn admit_encapsulated(
        &self,
        time: u64,
        id: [u8; cloak_proto::freshness::ID_LEN],
    ) -> Result<(), ReplayRefusal> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let admitted = self.replay.admit(time, id, now);
        if let Err(refusal) = admitted {
            self.metrics.replay_refused(refusal);
        }
        admitted
    }

    pub(crate) fn store(&self) -> &ModelStore {
        &self.store
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn connection_stats(&self) -> Arc<cloak_net::ConnectionStats> {
        self.metrics.connections()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Marks the server as started (listening).
    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Whether the server is started and serves at least one model — and, in a fleet, holds
    /// the fleet's key (until then a balancer must send clients elsewhere).
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
            && self.store.counts().0 > 0
            && !self.identity.fleet_key_pending()
    }

    /// After a model became ready: updates the model gauges and re-attests the claims, so that
    /// new connections and attestations name the model (blocking: the platform signs a quote).
    pub(crate) fn models_changed(&self) {
        // One re-attestation at a time, each reading the store under the lock: two models
        // arriving together must not leave the older claims in place.
        let _serial = self.reattest.lock().unwrap_or_else(PoisonError::into_inner);
        let (ready, failed) = self.store.counts();
        self.metrics.set_models(ready, failed);
        match self.identity.update_models(self.store.claims()) {
            Ok(()) => tracing::info!(
                models = ready,
                spki_sha256 = %hex::encode(self.identity.claims().tls_spki_sha256),
                "identity re-attested with the ready models"
            ),
            Err(e) => tracing::error!(
                error = %e,
                "re-attesting the identity failed; clients keep seeing the previous models"
            ),
        }
    }

    /// The ready model `name` at `version` (`None`: the unversioned path).
    pub(crate) fn model(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Arc<LoadedModel>, ServiceError> {
        if let Some(version) = version
            && version != MODEL_VERSION
        {
            return Err(ServiceError::NoSuchVersion {
                name: name.to_owned(),
                version: version.to_owned(),
            });
        }
        if let Some(model) = self.store.get(name) {
            return Ok(model);
        }
        Err(match self.store.failure(name) {
            Some(failed) => ServiceError::ModelUnavailable {
                name: name.to_owned(),
                reason: failed.reason,
                code: failed.code,
            },
            None => ServiceError::NoSuchModel(name.to_owned()),
        })
    }

    /// A fresh attestation over the current claims and `nonce`, made on the blocking pool (the
    /// platform signs a quote, which may answer other clients' nonces too: see
    /// [`quotes::QuoteBatcher`]).
    pub(crate) async fn attest(
        self: &Arc<Self>,
        client: std::net::IpAddr,
        nonce: Vec<u8>,
    ) -> Result<Arc<AttestationDocument>, ServiceError> {
        if !self.attestation_rate.allow(client) {
            return Err(ServiceError::AttestationRateLimited);
        }
        let service = Arc::clone(self);
        let quote = move |nonces: Vec<Vec<u8>>| {
            let document = service.identity.attest(&nonces);
            match document {
                Ok(document) => {
                    service.metrics.attestation_quote();
                    Some(document)
                }
                Err(e) => {
                    tracing::error!(error = %e, "attestation failed");
                    None
                }
            }
        };
        let document =
            self.attestations
                .attest(nonce, quote)
                .await
                .map_err(|refusal| match refusal {
                    quotes::QuoteRefusal::Busy => ServiceError::AttestationBusy,
                    quotes::QuoteRefusal::Failed => ServiceError::Evidence,
                })?;
        self.metrics.attestation();
        Ok(document)
    }

    /// Lets an inference on `model` through if its owner requires no access token, or if
    /// `bearer` is one the owner signed for it, unexpired, within its rate and quota.
    pub(crate) fn authorize(&self, model: &str, bearer: Option<&str>) -> Result<(), ServiceError> {
        let Some(key) = self.store.token_key(model) else {
            return Ok(());
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.tokens.admit(&key, model, bearer, now)
    }

    /// Reserves `bytes` of the request-body budget, or refuses at once when it is spent.
    pub(crate) fn reserve_body(&self, bytes: u64) -> Result<BodyReservation, ServiceError> {
        self.bodies
            .reserve(bytes)
            .ok_or(ServiceError::BodyBudgetSpent)
    }

    /// Runs `work` (CPU-heavy preparation of a request of `size` bytes): where it is, for a
    /// small request; on a blocking thread, at most as many at once as inference workers, for
    /// a large one.
    pub(crate) async fn prepare<T: Send + 'static>(
        &self,
        size: usize,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ServiceError> {
        if size < OFFLOAD_BYTES {
            return Ok(work());
        }
        let _slot = Arc::clone(&self.preparing)
            .acquire_owned()
            .await
            .map_err(|_| ServiceError::WorkerFailed)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| ServiceError::WorkerFailed)
    }

    /// The metrics in the text exposition format, with the queue depth sampled now.
    pub(crate) fn render_metrics(&self) -> String {
        let plans: Vec<(String, u64)> = self
            .store
            .ready()
            .iter()
            .map(|m| (m.claim.name.clone(), m.model.plans_compiled()))
            .collect();
        self.metrics.render(self.admission.waiting(), &plans)
    }

    /// The KServe codec's limits, from the server's.
    fn codec_limits(&self) -> kserve::Limits {
        let mut limits = kserve::Limits::default();
        limits.max_elements = self.limits.max_elements;
        limits.max_inputs = self.limits.max_inputs;
        limits
    }
}
