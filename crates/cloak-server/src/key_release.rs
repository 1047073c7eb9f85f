//! The key-release client: obtains a model's key from the model owner's key broker by proving,
//! with fresh evidence, what this enclave is (the protocol is specified in
//! [`cloak_proto::kbs`]).
//!
//! One attempt: ask for a challenge for the model; make an ephemeral HPKE key pair inside the
//! enclave; quote `release_report_data(nonce, ephemeral public key)`; send the quote, the
//! collateral and the public key; open the HPKE-sealed model key with the ephemeral private key.
//! The key never exists outside the enclave in plaintext, and the ephemeral key is dropped (and
//! zeroized) after the attempt.

use std::sync::Arc;
use std::time::Duration;

use cloak_crypto::hpke::{HpkeKeyPair, HpkeSealed};
use cloak_crypto::key::{KEY_LEN, ModelKey};
use cloak_proto::kbs::{
    ChallengeRequest, ChallengeResponse, ErrorBody, NONCE_LEN, ReleaseRequest, ReleaseResponse,
    release_info, release_report_data,
};
use cloak_tee::Platform;
use serde_json::value::RawValue;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::identity::CollateralSource;
use crate::sealed_keys;
use crate::service::Service;
use crate::store::{FailedModel, Found};

/// The most bytes read from a broker response.
const MAX_RESPONSE_BYTES: u64 = 256 * 1024;
/// How long one HTTP exchange with the broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the key broker is and how to trust it.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct KbsConfig {
    /// The broker's base URL (`http://127.0.0.1:8700`, `https://kbs.example`).
    pub url: String,
    /// Other replicas of the same broker (sharing its database), tried in turn when the one in
    /// use is unreachable or overloaded.
    pub fallback_urls: Vec<String>,
    /// PEM certificates to trust for an `https` broker, instead of the Mozilla roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The longest pause between attempts while the broker is unreachable.
    pub max_backoff: Duration,
    /// The pause before asking again after the broker refused a release (its policy may be
    /// changed meanwhile).
    pub denied_retry: Duration,
    /// The fleet this server is a replica of (`--fleet`): its shared HPKE key comes from the
    /// broker.
    pub fleet: Option<String>,
    /// How often the fleet's status is read for new key generations (`--fleet-refresh`).
    pub fleet_refresh: Duration,
}

impl KbsConfig {
    /// A broker at `url` trusted through the Mozilla roots (for `https`), retrying at most every
    /// 30 s while unreachable and every 5 minutes after a refusal.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            fallback_urls: Vec::new(),
            ca_pem: None,
            max_backoff: Duration::from_secs(30),
            denied_retry: Duration::from_secs(300),
            fleet: None,
            fleet_refresh: Duration::from_secs(30),
        }
    }
}

/// Why a release attempt failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The broker could not be reached, or answered that it is busy or failing (try again
    /// soon).
    #[error("the key broker is unreachable: {0}")]
    Unreachable(String),
    /// The broker refused: the evidence does not satisfy the model's policy, the model is
    /// unknown to it, or the exchange was refused (its stable code and message).
    // The broker's message adds nothing to its code (it says no more, by design).
    #[error("the key broker refused the release: {code}")]
    Denied {
        /// The broker's code (`measurement-mismatch`, `debug-enclave`, ...).
        code: String,
        /// The broker's message.
        message: String,
    },
    /// The broker's answer is malformed, or does not open with the ephemeral key.
    #[error("the key broker's answer is unusable: {0}")]
    Protocol(String),
    /// The platform could not produce evidence or collateral.
    #[error("cannot produce evidence: {0}")]
    Evidence(String),
    /// The broker configuration is unusable.
    #[error("key broker configuration: {0}")]
    Config(String),
}

impl ReleaseError {
    /// A stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "kbs-unreachable",
            Self::Denied { .. } => "key-release-denied",
            Self::Protocol(_) => "kbs-protocol",
            Self::Evidence(_) => "evidence-failed",
            Self::Config(_) => "kbs-config",
        }
    }

    /// Whether to try again soon (rather than after [`KbsConfig::denied_retry`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_))
    }
}

/// A released key and the end of its lease.
#[derive(Debug)]
pub struct Released {
    /// The model key.
    pub key: ModelKey,
    /// When the release lapses (Unix seconds, the broker's clock).
    pub lease_expires: u64,
    /// The model owner's access-token key, when the model's policy names one.
    pub token_key: Option<Vec<u8>>,
}

/// The lease assumed when a broker states none.
const DEFAULT_LEASE: u64 = 24 * 3600;

/// Seconds since the Unix epoch, by this machine's clock (the host's, inside an enclave).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A client of one key broker, reached through any of its replicas.
///
/// A release is one exchange with one replica (its challenge and its release), so it works
/// whether or not replicas share a database. When a replica is unreachable, overloaded (429) or
/// failing (5xx), the whole exchange is tried at the next; the replica that answered last is
/// tried first next time. A refusal is an answer and is not retried elsewhere.
#[derive(Debug)]
pub struct BrokerClient {
    agent: ureq::Agent,
    bases: Vec<String>,
    preferred: std::sync::atomic::AtomicUsize,
}

impl BrokerClient {
    /// A client for the broker `config` names.
    pub fn new(config: &KbsConfig) -> Result<Self, ReleaseError> {
        let bases: Vec<String> = std::iter::once(&config.url)
            .chain(&config.fallback_urls)
            .map(|url| url.trim_end_matches('/').to_owned())
            .collect();
        if let Some(base) = bases
            .iter()
            .find(|base| !(base.starts_with("http://") || base.starts_with("https://")))
        {
            return Err(ReleaseError::Config(format!(
                "{base}: the broker URL must start with http:// or https://"
            )));
        }
        let roots = match &config.ca_pem {
            Some(pem) => {
                let certs = ureq::tls::parse_pem(pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ReleaseError::Config(format!("CA certificates: {e}")))?;
                if certs.is_empty() {
                    return Err(ReleaseError::Config(
                        "the CA file holds no PEM certificate".into(),
                    ));
                }
                ureq::tls::RootCerts::Specific(Arc::new(certs))
            }
            None => ureq::tls::RootCerts::WebPki,
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .root_certs(roots)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls)
            .build()
            .new_agent();
        Ok(Self {
            agent,
            bases,
            preferred: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// One release attempt for `model` (blocking: HTTP and quoting), at the replica that
    /// answered last, then at each other in turn while they are unreachable.
    pub fn release(
        &self,
        platform: &dyn Platform,
        collateral: &CollateralSource,
        model: &str,
    ) -> Result<Released, ReleaseError> {
        self.at_any(|base| self.release_at(base, platform, collateral, model))
    }

    /// The status of fleet `fleet` (its live key generations), from any replica.
    pub fn fleet_status(
        &self,
        fleet: &str,
    ) -> Result<cloak_proto::kbs::fleet::FleetStatus, ReleaseError> {
        self.at_any(|base| {
            let url = format!("{base}/kbs/v1/fleets/{fleet}");
            let response = self
                .agent
                .get(&url)
                .call()
                .map_err(|e| ReleaseError::Unreachable(format!("{url}: {e}")))?;
            self.answer(&url, response)
        })
    }

    /// `exchange` with the replica that answered last, then with each other in turn while they
    /// are unreachable.
    fn at_any<T>(
        &self,
        exchange: impl Fn(&str) -> Result<T, ReleaseError>,
    ) -> Result<T, ReleaseError> {
        use std::sync::atomic::Ordering;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut unreachable = Vec::new();
        for step in 0..self.bases.len() {
            let index = first.wrapping_add(step) % self.bases.len().max(1);
            let Some(base) = self.bases.get(index) else {
                break;
            };
            match exchange(base) {
                Err(ReleaseError::Unreachable(why)) => {
                    if self.bases.len() > 1 {
                        tracing::warn!(broker = %base, error = %why, "key broker replica unreachable; trying the next");
                    }
                    unreachable.push(why);
                }
                answered => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return answered;
                }
            }
        }
        Err(ReleaseError::Unreachable(unreachable.join("; ")))
    }

    /// One release exchange with the replica at `base`.
    fn release_at(
        &self,
        base: &str,
        platform: &dyn Platform,
        collateral: &CollateralSource,
        model: &str,
    ) -> Result<Released, ReleaseError> {
        let challenge: ChallengeResponse = self.post(
            base,
            "/kbs/v1/challenge",
            &ChallengeRequest {
                model: model.to_owned(),
            },
        )?;
        if challenge.nonce.len() != NONCE_LEN {
            return Err(ReleaseError::Protocol(format!(
                "the nonce has {} bytes, not {NONCE_LEN}",
                challenge.nonce.len()
            )));
        }
        let ephemeral = HpkeKeyPair::generate();
        let report_data = release_report_data(&challenge.nonce, ephemeral.public_key());
        let evidence = platform
            .evidence(&report_data)
            .map_err(|e| ReleaseError::Evidence(e.to_string()))?;
        let collateral = collateral
            .resolve(evidence.collateral)
            .map_err(|e| ReleaseError::Evidence(e.to_string()))?
            .ok_or_else(|| {
                ReleaseError::Evidence(
                    "the broker needs collateral and there is none to send (give --collateral)"
                        .into(),
                )
            })?;
        let collateral = String::from_utf8(collateral)
            .ok()
            .and_then(|text| RawValue::from_string(text).ok())
            .ok_or_else(|| ReleaseError::Evidence("the collateral is not JSON".into()))?;
        let released: ReleaseResponse = self.post(
            base,
            "/kbs/v1/release",
            &ReleaseRequest {
                evidence_format: None,
                nonce: challenge.nonce.clone(),
                evidence: evidence.quote,
                collateral,
                ephemeral_key: ephemeral.public_key().to_vec(),
            },
        )?;
        if released.model != model {
            return Err(ReleaseError::Protocol(format!(
                "asked for model {model}, got a key for {}",
                released.model
            )));
        }
        let enc: [u8; 32] =
            released.enc.as_slice().try_into().map_err(|_| {
                ReleaseError::Protocol("the encapsulated key is not 32 bytes".into())
            })?;
        let sealed = HpkeSealed {
            enc,
            ciphertext: released.sealed_key,
        };
        let plaintext = ephemeral
            .open(&sealed, &release_info(model), &challenge.nonce)
            .map_err(|e| ReleaseError::Protocol(e.to_string()))?;
        // The model key, then the owner's access-token key when the policy names one: sealed
        // together, so the host can neither drop nor swap the latter.
        let (key_bytes, token_key) = plaintext
            .split_at_checked(KEY_LEN)
            .ok_or_else(|| ReleaseError::Protocol("the released key is not 32 bytes".into()))?;
        let bytes: [u8; KEY_LEN] = key_bytes
            .try_into()
            .map_err(|_| ReleaseError::Protocol("the released key is not 32 bytes".into()))?;
        let token_key = match token_key.len() {
            0 => None,
            sealed_keys::TOKEN_KEY_LEN => Some(token_key.to_vec()),
            n => {
                return Err(ReleaseError::Protocol(format!(
                    "the released access-token key is {n} bytes, not a P-256 public key"
                )));
            }
        };
        // A broker from before leases states none: the key is held for a day, then asked for
        // again, like any other.
        let lease_expires = released
            .lease_expires
            .unwrap_or_else(|| unix_now().saturating_add(DEFAULT_LEASE));
        Ok(Released {
            key: ModelKey::from_bytes(bytes),
            lease_expires,
            token_key,
        })
    }

    fn post<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        body: &Req,
    ) -> Result<Resp, ReleaseError> {
        let url = format!("{base}{path}");
        let response = self
            .agent
            .post(&url)
            .send_json(body)
            .map_err(|e| ReleaseError::Unreachable(format!("{url}: {e}")))?;
        self.answer(&url, response)
    }

    /// A broker's answer from `url`: its JSON on success, else the error it states.
    fn answer<Resp: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        mut response: ureq::http::Response<ureq::Body>,
    ) -> Result<Resp, ReleaseError> {
        let status = response.status().as_u16();
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| ReleaseError::Unreachable(format!("{url}: reading the answer: {e}")))?;
        if status == 200 {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ReleaseError::Protocol(format!("{url}: {e}")));
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        if status == 429 || status >= 500 {
            let detail = error.map_or_else(|| format!("HTTP {status}"), |e| e.message);
            return Err(ReleaseError::Unreachable(format!("{url}: {detail}")));
        }
        Err(match error {
            Some(error) => ReleaseError::Denied {
                code: error.error,
                message: error.message,
            },
            None => ReleaseError::Denied {
                code: format!("http-{status}"),
                message: format!("{url} answered HTTP {status}"),
            },
        })
    }
}

/// A model waiting for its key.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// Its container.
    pub(crate) item: Found,
    /// Why a sealed key was not used, if there was one.
    pub(crate) note: Option<String>,
}

/// A model served with a leased key (unsealed at startup): its lease must be confirmed with the
/// broker before it ends.
#[derive(Debug)]
pub(crate) struct Leased {
    /// Its container.
    pub(crate) item: Found,
    /// When the lease ends.
    pub(crate) lease_expires: u64,
}

/// The first pause after a failed attempt to reach the broker.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Obtains the keys of `waiting` models from the broker (one task per model) and loads each
/// model as its key arrives: retrying with exponential backoff (and jitter) while the broker is
/// unreachable, and after [`KbsConfig::denied_retry`] when it refuses. Each model's status is
/// kept in the store (so `/v2/models/{name}/ready` and the repository index report it) and
/// logged. A released key is sealed to this enclave's measurement beside its container, with
/// its lease. Then each lease is confirmed with a new release when half of it is left — and a
/// lease unsealed at startup (`leased`) at once, while its model is served: a restart is when
/// a host can present an older sealed file, and the broker may have revoked the key or
/// tightened the policy since it was sealed. A refusal (the model removed, its
/// policy no longer accepting this enclave) stops serving the model at once (`key-revoked`); a
/// broker unreachable until the lease ends stops it then (`key-lease-expired`); either way the
/// sealed key is deleted and the key is asked for again.
pub(crate) async fn obtain_keys(
    service: Arc<Service>,
    client: Arc<BrokerClient>,
    config: KbsConfig,
    waiting: Vec<Waiting>,
    leased: Vec<Leased>,
    shutdown: watch::Receiver<bool>,
) {
    let manager = |item| Manager {
        service: Arc::clone(&service),
        client: Arc::clone(&client),
        config: config.clone(),
        item,
        shutdown: shutdown.clone(),
    };
    let mut tasks = JoinSet::new();
    for Waiting { item, note } in waiting {
        tasks.spawn(manager(item).run(Phase::Obtain(note)));
    }
    for Leased {
        item,
        lease_expires,
    } in leased
    {
        tasks.spawn(manager(item).run(Phase::Keep {
            lease_expires,
            confirm_now: true,
        }));
    }
    while tasks.join_next().await.is_some() {}
}

/// Without a broker, models served from sealed keys are served until their leases end.
pub(crate) async fn expire_leases(
    service: Arc<Service>,
    leased: Vec<Leased>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut leased = leased;
    leased.sort_by_key(|l| l.lease_expires);
    for Leased {
        item,
        lease_expires,
    } in leased
    {
        let wait = Duration::from_secs(lease_expires.saturating_sub(unix_now()));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        let reason = format!(
            "the key's lease ended at {lease_expires} (Unix time) and no key broker is \
             configured to confirm it"
        );
        let service = Arc::clone(&service);
        let _ = tokio::task::spawn_blocking(move || {
            revoke(&service, &item, "key-lease-expired", reason);
        })
        .await;
    }
}

/// What one model's key manager is doing.
enum Phase {
    /// Asking for the key (why a sealed key was not used, if there was one).
    Obtain(Option<String>),
    /// Serving with a key leased until `lease_expires`; confirming it at once (a key unsealed
    /// at startup) or when half of the lease is left.
    Keep {
        lease_expires: u64,
        confirm_now: bool,
    },
    /// Waiting after the key was revoked or its lease ended, then asking again.
    Lapsed(&'static str, String),
}

/// One model's key: obtained, kept under its lease, revoked.
struct Manager {
    service: Arc<Service>,
    client: Arc<BrokerClient>,
    config: KbsConfig,
    item: Found,
    shutdown: watch::Receiver<bool>,
}

impl Manager {
    async fn run(mut self, mut phase: Phase) {
        loop {
            phase = match phase {
                Phase::Obtain(note) => match self.obtain(note).await {
                    Some(lease_expires) => Phase::Keep {
                        lease_expires,
                        confirm_now: false,
                    },
                    None => return,
                },
                Phase::Keep {
                    lease_expires,
                    confirm_now,
                } => match self.keep(lease_expires, confirm_now).await {
                    Some((code, reason)) => Phase::Lapsed(code, reason),
                    None => return,
                },
                Phase::Lapsed(code, reason) => {
                    // A revocation stands until the owner changes something: the status says
                    // so for a while before the broker is asked again.
                    let wait = if code == "key-revoked" {
                        self.config.denied_retry
                    } else {
                        Duration::ZERO
                    };
                    if !self.pause(wait).await {
                        return;
                    }
                    Phase::Obtain(Some(format!("{reason} ({code})")))
                }
            };
        }
    }

    /// Sleeps `wait`; `false` if the server is shutting down.
    async fn pause(&mut self, wait: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            _ = self.shutdown.changed() => false,
        }
    }

    /// One release attempt on the blocking pool.
    async fn attempt(&self) -> Result<Released, ReleaseError> {
        let service = Arc::clone(&self.service);
        let client = Arc::clone(&self.client);
        let name = self.item.name.clone();
        tokio::task::spawn_blocking(move || {
            let identity = service.identity();
            client.release(
                identity.platform().as_ref(),
                identity.collateral_source(),
                &name,
            )
        })
        .await
        .unwrap_or_else(|e| Err(ReleaseError::Evidence(format!("the attempt failed: {e}"))))
    }

    /// Asks for the key until it is released and installed (its lease end), or the server
    /// stops (`None`).
    async fn obtain(&mut self, note: Option<String>) -> Option<u64> {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            let wait = match self.attempt().await {
                Ok(released) => {
                    let service = Arc::clone(&self.service);
                    let item = self.item.clone();
                    let lease_expires = released.lease_expires;
                    let installed =
                        tokio::task::spawn_blocking(move || install(&service, &item, &released))
                            .await
                            .unwrap_or(false);
                    if installed {
                        return Some(lease_expires);
                    }
                    self.config.denied_retry
                }
                Err(error) => {
                    let wait = if error.is_transient() {
                        let wait = jitter(backoff);
                        backoff = backoff.saturating_mul(2).min(self.config.max_backoff);
                        wait
                    } else {
                        self.config.denied_retry
                    };
                    let (code, reason) = match &error {
                        ReleaseError::Unreachable(_) => (
                            "key-pending",
                            pending_reason(
                                note.as_deref(),
                                &format!(
                                    "waiting for the key broker (attempt {attempt}: {error}); \
                                     next attempt in {} ms",
                                    wait.as_millis()
                                ),
                            ),
                        ),
                        _ => (
                            error.code(),
                            format!("{error}; asking again in {} s", wait.as_secs()),
                        ),
                    };
                    self.service.store().set_failed(FailedModel {
                        name: self.item.name.clone(),
                        path: self.item.path.clone(),
                        code: code.to_owned(),
                        reason,
                    });
                    wait
                }
            };
            if !self.pause(wait).await {
                return None;
            }
        }
    }

    /// Serves under the lease ending at `lease_expires`, confirming it now (`confirm_now`) or
    /// when half of it is left (from now), until the broker refuses or the lease ends
    /// unconfirmed: then the model is no longer served, and the code and reason are returned.
    /// `None` when the server stops.
    async fn keep(
        &mut self,
        mut lease_expires: u64,
        confirm_now: bool,
    ) -> Option<(&'static str, String)> {
        let mut backoff = FIRST_BACKOFF;
        let mut wait = if confirm_now {
            Duration::ZERO
        } else {
            Duration::from_secs(lease_expires.saturating_sub(unix_now()) / 2)
        };
        loop {
            if !self.pause(wait).await {
                return None;
            }
            // An attempt that hangs (a broker that does not answer) must not carry the model
            // past its lease: it is cut off when the lease ends.
            let left = Duration::from_secs(lease_expires.saturating_sub(unix_now()));
            let attempt = tokio::time::timeout(left, self.attempt())
                .await
                .unwrap_or_else(|_| {
                    Err(ReleaseError::Unreachable(
                        "no answer before the lease ended".into(),
                    ))
                });
            let lapse = match attempt {
                Ok(released) if released.key.id() == self.item.key_id => {
                    lease_expires = released.lease_expires;
                    backoff = FIRST_BACKOFF;
                    // The owner may have set or changed the access-token key meanwhile.
                    self.service
                        .store()
                        .set_token_key(&self.item.name, released.token_key.clone());
                    let platform = Arc::clone(self.service.identity().platform());
                    let (path, name) = (self.item.path.clone(), self.item.name.clone());
                    let sealed = sealed_keys::SealedKey {
                        key: released.key,
                        lease_expires,
                        token_key: released.token_key,
                    };
                    let _ = tokio::task::spawn_blocking(move || {
                        sealed_keys::seal_key(platform.as_ref(), &path, &name, &sealed)
                    })
                    .await;
                    tracing::info!(model = %self.item.name, lease_expires, "key lease confirmed");
                    wait = Duration::from_secs(lease_expires.saturating_sub(unix_now()) / 2);
                    None
                }
                Ok(released) => Some((
                    "key-revoked",
                    format!(
                        "the key broker now releases key {}, not the container's key {}",
                        released.key.id(),
                        self.item.key_id
                    ),
                )),
                Err(error) if error.is_transient() => {
                    let left = lease_expires.saturating_sub(unix_now());
                    if left == 0 {
                        Some((
                            "key-lease-expired",
                            format!(
                                "the key's lease ended at {lease_expires} (Unix time) and the \
                                 key broker could not confirm it: {error}"
                            ),
                        ))
                    } else {
                        wait = jitter(backoff).min(Duration::from_secs(left));
                        backoff = backoff.saturating_mul(2).min(self.config.max_backoff);
                        tracing::warn!(
                            model = %self.item.name,
                            error = %error,
                            seconds_left = left,
                            "the key broker could not confirm the key's lease; serving until it ends"
                        );
                        None
                    }
                }
                Err(error) => Some((
                    "key-revoked",
                    format!("the key broker no longer releases the key: {error}"),
                )),
            };
            if let Some((code, reason)) = lapse {
                let service = Arc::clone(&self.service);
                let item = self.item.clone();
                let logged = reason.clone();
                let _ = tokio::task::spawn_blocking(move || revoke(&service, &item, code, logged))
                    .await;
                return Some((code, reason));
            }
        }
    }
}

/// Stops serving `item`'s model, deletes its sealed key and re-attests (blocking).
fn revoke(service: &Service, item: &Found, code: &str, reason: String) {
    tracing::warn!(model = %item.name, code, reason = %reason, "model no longer served");
    service.store().unload(FailedModel {
        name: item.name.clone(),
        path: item.path.clone(),
        code: code.to_owned(),
        reason,
    });
    sealed_keys::remove_sealed_key(&item.path);
    service.models_changed();
}

/// A waiting model's status: why its sealed key was not used (if it had one), then `waiting`.
pub(crate) fn pending_reason(note: Option<&str>, waiting: &str) -> String {
    match note {
        Some(note) => format!("{note}; {waiting}"),
        None => waiting.to_owned(),
    }
}

/// Loads a model with its released key, seals the key (with its lease and access-token key) for
/// restarts and re-attests (blocking); whether the model is now served.
fn install(service: &Service, item: &Found, released: &Released) -> bool {
    let key = &released.key;
    if key.id() != item.key_id {
        service.store().set_failed(FailedModel {
            name: item.name.clone(),
            path: item.path.clone(),
            code: "wrong-key".to_owned(),
            reason: format!(
                "the key broker released key {}, but the container needs key {}",
                key.id(),
                item.key_id
            ),
        });
        return false;
    }
    // Who may query it is settled before it is served.
    service
        .store()
        .set_token_key(&item.name, released.token_key.clone());
    if service
        .store()
        .load(item, key, service.engine(), service.limits())
        .is_err()
    {
        return false;
    }
    tracing::info!(model = %item.name, "model key released by the key broker");
    let identity = service.identity();
    if let Err(e) = sealed_keys::seal_key(
        identity.platform().as_ref(),
        &item.path,
        &item.name,
        &sealed_keys::SealedKey {
            key: key.clone(),
            lease_expires: released.lease_expires,
            token_key: released.token_key.clone(),
        },
    ) {
        tracing::warn!(
            model = %item.name,
            code = e.code(),
            error = %e,
            "the released key could not be sealed; a restart will ask the broker again"
        );
    }
    service.models_changed();
    true
}

/// `base` plus up to a quarter more, at random (so replicas do not retry in step).
fn jitter(base: Duration) -> Duration {
    let mut byte = [0u8; 1];
    let extra = if getrandom::fill(&mut byte).is_ok() {
        let [random] = byte;
        base.saturating_mul(u32::from(random)) / 1024
    } else {
        Duration::ZERO
    };
    base.saturating_add(extra)
}
