//! The Cloak inference server: the service that runs inside the TEE.
//!
//! At start it decrypts the sealed models it has keys for into enclave memory ([`store`]),
//! generates its keys and binds them, with the digest of every loaded model, into attestation
//! evidence ([`identity`]), and then serves:
//!
//! - the KServe v2 / Triton HTTP protocol (`/v2/...`, with the binary tensor extension), so
//!   `tritonclient` and other KServe clients work unchanged;
//! - `GET /v1/attestation?nonce=HEX`: fresh evidence over the identity claims and the nonce,
//!   with the collateral relayed;
//! - `GET /metrics`: Prometheus text, on the main listener and optionally on a plain-HTTP one;
//!
//! all over TLS 1.3 with the attested certificate. Requests are bounded in size and element
//! count, inference runs on a bounded set of workers with a bounded queue, and a failure in one
//! request never takes the server down. Neither logs nor metrics ever contain inputs, outputs or
//! key material.

pub mod api;
pub mod identity;
pub mod kbs;
pub mod keys;
pub mod limits;
mod metrics;
mod ohttp;
pub mod store;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use cloak_crypto::key::ModelKey;
use cloak_engine::Engine;
use cloak_tee::Platform;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use identity::{CollateralSource, ServerIdentity};
pub use kbs::KbsConfig;
pub use limits::Limits;
pub use store::ModelStore;

/// What to serve, where, and within which limits.
#[non_exhaustive]
#[derive(Debug)]
pub struct ServerConfig {
    /// The directory of `.cloak` containers.
    pub model_dir: PathBuf,
    /// The key of each model, by model name (given by the operator; takes precedence).
    pub model_keys: HashMap<String, ModelKey>,
    /// The model owner's key broker, for models with neither a given nor a sealed key.
    pub kbs: Option<KbsConfig>,
    /// The attested-TLS listener.
    pub listen: SocketAddr,
    /// An optional plain-HTTP listener serving only `/metrics` (for scrapers that cannot
    /// attest).
    pub metrics_listen: Option<SocketAddr>,
    /// Names for the certificate's subjectAltName (clients trust the attestation, not the
    /// name; this only keeps stock TLS clients' name checks quiet) [default: localhost].
    pub hostnames: Vec<String>,
    /// Resource limits.
    pub limits: Limits,
    /// Where relayed collateral comes from.
    pub collateral: CollateralSource,
}

impl ServerConfig {
    /// A configuration with default limits, no metrics listener, and collateral from the
    /// platform.
    pub fn new(model_dir: PathBuf, listen: SocketAddr) -> Self {
        Self {
            model_dir,
            model_keys: HashMap::new(),
            kbs: None,
            listen,
            metrics_listen: None,
            hostnames: Vec::new(),
            limits: Limits::default(),
            collateral: CollateralSource::Platform,
        }
    }
}

/// A server with its models loaded and its identity made, not yet listening.
#[derive(Debug)]
pub struct PreparedServer {
    state: Arc<api::AppState>,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    kbs: Option<(KbsConfig, Vec<kbs::Waiting>)>,
}

/// Where a model's key came from at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeySource {
    Given,
    Sealed,
}

impl PreparedServer {
    /// Loads the models whose keys are given or sealed here, and makes the identity (blocking:
    /// decryption, model optimization and quoting take a while). Models left without a key wait
    /// for the key broker, which [`start`](Self::start) contacts.
    pub fn prepare(config: ServerConfig, platform: Arc<dyn Platform>) -> Result<Self, ServerError> {
        let engine = Engine::new();
        let store = ModelStore::new();
        let found = store
            .scan(&config.model_dir)
            .map_err(|e| ServerError::ModelDir(format!("{}: {e}", config.model_dir.display())))?;
        let mut waiting = Vec::new();
        for item in found {
            match initial_key(&config, platform.as_ref(), &item) {
                Start::Key(key, source) => {
                    if let Err(failed) = store.load(&item, &key, &engine, &config.limits)
                        && source == KeySource::Sealed
                        && failed.code == "wrong-key"
                        && config.kbs.is_some()
                    {
                        waiting.push((item, Some(failed.reason)));
                    }
                }
                Start::NoKey(note) if config.kbs.is_some() => waiting.push((item, note)),
                Start::NoKey(_) => store.set_failed(store::FailedModel::no_key(item)),
            }
        }
        let waiting: Vec<kbs::Waiting> = waiting
            .into_iter()
            .map(|(item, note)| kbs::Waiting { item, note })
            .collect();
        for kbs::Waiting { item, note } in &waiting {
            store.set_failed(store::FailedModel {
                name: item.name.clone(),
                path: item.path.clone(),
                code: "key-pending".to_owned(),
                reason: kbs::pending_reason(note.as_deref(), "waiting for the key broker"),
            });
        }
        let identity = ServerIdentity::create(
            platform,
            config.collateral,
            store.claims(),
            &config.hostnames,
        )?;
        let claims = identity.claims();
        let (ready, failed) = store.counts();
        tracing::info!(
            spki_sha256 = %hex::encode(claims.tls_spki_sha256),
            platform = %claims.platform,
            models = ready,
            failed,
            waiting_for_broker = waiting.len(),
            "identity made"
        );
        let kbs = match (config.kbs, waiting.is_empty()) {
            (Some(kbs), false) => Some((kbs, waiting)),
            _ => None,
        };
        Ok(Self {
            state: Arc::new(api::AppState::new(store, identity, config.limits, engine)),
            listen: config.listen,
            metrics_listen: config.metrics_listen,
            kbs,
        })
    }

    /// The identity (claims, certificate).
    pub fn identity(&self) -> &ServerIdentity {
        self.state.identity()
    }

    /// The loaded and failed models.
    pub fn store(&self) -> &ModelStore {
        self.state.store()
    }

    /// Binds the listeners and starts serving.
    pub async fn start(self) -> Result<RunningServer, ServerError> {
        let tls = self.state.identity().tls_config()?;
        let listener = TcpListener::bind(self.listen)
            .await
            .map_err(|e| ServerError::Bind(format!("{}: {e}", self.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServerError::Bind(e.to_string()))?;
        let (shutdown, watcher) = watch::channel(false);
        let limits = self.state.limits().clone();
        let mut tasks = JoinSet::new();
        tasks.spawn(tls::serve(
            listener,
            Some(tls),
            api::router(Arc::clone(&self.state)),
            limits.max_connections,
            limits.handshake_timeout,
            watcher.clone(),
        ));
        let mut metrics_addr = None;
        if let Some(addr) = self.metrics_listen {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| ServerError::Bind(format!("{addr}: {e}")))?;
            metrics_addr = Some(
                listener
                    .local_addr()
                    .map_err(|e| ServerError::Bind(e.to_string()))?,
            );
            tasks.spawn(tls::serve(
                listener,
                None,
                api::metrics_router(Arc::clone(&self.state)),
                64,
                limits.handshake_timeout,
                watcher,
            ));
        }
        if let Some((config, waiting)) = self.kbs {
            let client = kbs::BrokerClient::new(&config).map_err(ServerError::Kbs)?;
            tasks.spawn(kbs::obtain_keys(
                Arc::clone(&self.state),
                Arc::new(client),
                config,
                waiting,
                shutdown.subscribe(),
            ));
        }
        self.state.set_ready();
        Ok(RunningServer {
            local_addr,
            metrics_addr,
            shutdown,
            tasks,
            state: self.state,
        })
    }
}

/// A listening server.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    state: Arc<api::AppState>,
}

impl RunningServer {
    /// The attested TLS certificate new connections get now (DER).
    pub fn certificate(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.state.identity().certificate()
    }

    /// The attested-TLS address (with the port the OS chose, if it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The plain-HTTP metrics address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops accepting, lets open connections finish their requests, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Why the server could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("cannot listen on {0}")]
    Bind(String),
    /// The identity could not be made.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The model directory could not be read.
    #[error("cannot read the model directory {0}")]
    ModelDir(String),
    /// The key broker configuration is unusable.
    #[error(transparent)]
    Kbs(kbs::ReleaseError),
}

/// The key a model starts with, if any.
enum Start {
    Key(ModelKey, KeySource),
    /// No usable key; why a sealed one was not used, if there was one.
    NoKey(Option<String>),
}

/// The key a model starts with: given by the operator, or sealed here by an earlier run. A
/// sealed key that does not unseal, or that is not the container's key, is reported and
/// ignored.
fn initial_key(config: &ServerConfig, platform: &dyn Platform, item: &store::Found) -> Start {
    if let Some(key) = config.model_keys.get(&item.name) {
        return Start::Key(key.clone(), KeySource::Given);
    }
    match keys::unseal_key(platform, &item.path, &item.name) {
        Ok(Some(key)) if key.id() == item.key_id => {
            tracing::info!(model = %item.name, "model key unsealed");
            Start::Key(key, KeySource::Sealed)
        }
        Ok(Some(_)) => {
            tracing::warn!(
                model = %item.name,
                "the sealed key is not this container's key; ignored"
            );
            Start::NoKey(Some(
                "the sealed key is not this container's key (sealed-key-mismatch)".to_owned(),
            ))
        }
        Ok(None) => Start::NoKey(None),
        Err(failure) => {
            tracing::warn!(
                model = %item.name,
                code = failure.code,
                reason = %failure.reason,
                "the sealed key does not unseal here; ignored"
            );
            Start::NoKey(Some(format!(
                "the sealed key does not unseal here ({})",
                failure.code
            )))
        }
    }
}
