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
//! - `POST /v1/ohttp`: KServe requests encapsulated to the attested HPKE key (Oblivious HTTP),
//!   through proxies that see only ciphertext;
//! - `GET /metrics`: Prometheus text, on the main listener and optionally on a plain-HTTP one;
//!
//! all over TLS 1.3 with the attested certificate. Encrypted requests, which need no trusted
//! transport, can also be taken over plain HTTP on a listener of their own
//! ([`ServerConfig::ohttp_listen`]), which serves nothing confidential. Requests are bounded in
//! size and element count, inference runs on a bounded set of workers with a bounded queue, and
//! a failure in one request never takes the server down. Neither logs nor metrics ever contain
//! inputs, outputs or key material.
//!
//! # Layers
//!
//! Modules depend only downwards in this list (no cycles):
//!
//! | module | what it is |
//! |---|---|
//! | [`cli`] | the command line of the `cloak-server` binary (and of `cloak serve`) |
//! | `startup` | [`PreparedServer`] and [`RunningServer`]: models loaded, identity made, listeners bound (connections are accepted by `cloak-net`, shared with the broker: caps, deadlines, HTTP/1.1 and HTTP/2) |
//! | `http` | thin handlers (KServe, attestation, OHTTP, metrics) and the one error mapping to the wire |
//! | [`key_release`] | the key-release client: obtains model keys from the owner's broker by attestation |
//! | `service` | the state and operations: model lookup, inference with admission, digest and receipt, attestation |
//! | [`store`], [`identity`], [`sealed_keys`], [`limits`], `metrics` | the parts the service is made of |
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sim` | yes | `--platform sim`: the simulated SGX platform, for machines without SGX. Enclave builds leave it out (`--no-default-features`), so the enclave image holds no simulation root or keys. |

pub mod cli;
mod fleet;
mod http;
pub mod identity;
pub mod key_release;
pub mod limits;
mod metrics;
pub mod sealed_keys;
mod service;
mod startup;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use cloak_crypto::key::ModelKey;

pub use identity::{CollateralSource, ServerIdentity};
pub use key_release::KbsConfig;
pub use limits::Limits;
pub use startup::{PreparedServer, RunningServer};
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
    /// An optional plain-HTTP listener for encrypted requests only (`/v1/ohttp`), with the
    /// fresh attestation their clients appraise first and the health probes: for a relay or a
    /// TLS-terminating load balancer, which then need not re-encrypt what only the enclave can
    /// open. KServe requests in the clear are not served there.
    pub ohttp_listen: Option<SocketAddr>,
    /// Names for the certificate's subjectAltName (clients trust the attestation, not the
    /// name; this only keeps stock TLS clients' name checks quiet) [default: localhost].
    pub hostnames: Vec<String>,
    /// Resource limits.
    pub limits: Limits,
    /// Where relayed collateral comes from.
    pub collateral: CollateralSource,
    /// The inference engine (named in the identity claims) [default: tract].
    pub engine: cloak_engine::Engine,
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
            ohttp_listen: None,
            hostnames: Vec::new(),
            limits: Limits::default(),
            collateral: CollateralSource::Platform,
            engine: cloak_engine::Engine::tract(),
        }
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
    /// The key broker configuration is unusable.
    #[error(transparent)]
    Kbs(key_release::ReleaseError),
    /// The model directory could not be read.
    #[error("cannot read the model directory {0}")]
    ModelDir(String),
}
