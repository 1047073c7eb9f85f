//! Starting the server: load the models whose keys are at hand, make the identity, bind the
//! listeners, and hand the models still without a key to the key-release client.

use std::net::SocketAddr;
use std::sync::Arc;

use cloak_crypto::key::ModelKey;
use cloak_tee::Platform;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::identity::ServerIdentity;
use crate::key_release::{self, BrokerClient, KbsConfig};
use crate::service::Service;
use crate::store::{FailedModel, Found, ModelStore};
use crate::{ServerConfig, ServerError, http, sealed_keys};

/// A server with its models loaded and its identity made, not yet listening.
#[derive(Debug)]
pub struct PreparedServer {
    service: Arc<Service>,
    listen: SocketAddr,
    metrics_listen: Option<SocketAddr>,
    ohttp_listen: Option<SocketAddr>,
    kbs: Option<KbsConfig>,
    /// Models without a key, for the broker.
    waiting: Vec<key_release::Waiting>,
    /// Models served with a leased key unsealed here, whose leases must be kept.
    leased: Vec<key_release::Leased>,
}

/// Where a model's key came from at start.
#[derive(Clone, Debug, PartialEq, Eq)]
enum KeySource {
    Given,
    /// Sealed here by an earlier run, leased until this time, with the owner's access-token key
    /// if the model's policy names one.
    Sealed(u64, Option<Vec<u8>>),
}

impl PreparedServer {
    /// Loads the models whose keys are given or sealed here, and makes the identity (blocking:
    /// decryption, model optimization and quoting take a while). Models left without a key wait
    /// for the key broker, which [`start`](Self::start) contacts.
    pub fn prepare(config: ServerConfig, platform: Arc<dyn Platform>) -> Result<Self, ServerError> {
        let engine = config.engine.clone();
        let store = ModelStore::new();
        let found = store
            .scan(&config.model_dir)
            .map_err(|e| ServerError::ModelDir(format!("{}: {e}", config.model_dir.display())))?;
        let mut waiting = Vec::new();
        let mut leased = Vec::new();
        for item in found {
            match initial_key(&config, platform.as_ref(), &item) {
                Start::Key(key, source) => match store.load(&item, &key, &engine, &config.limits) {
                    Ok(()) => {
                        if let KeySource::Sealed(lease_expires, token_key) = source {
                            store.set_token_key(&item.name, token_key);
                            leased.push(key_release::Leased {
                                item,
                                lease_expires,
                            });
                        }
                    }
                    Err(failed)
                        if matches!(source, KeySource::Sealed(..))
                            && failed.code == "wrong-key"
                            && config.kbs.is_some() =>
                    {
                        waiting.push((item, Some(failed.reason)));
                    }
                    Err(_) => {}
                },
                Start::NoKey(note) if config.kbs.is_some() => waiting.push((item, note)),
                Start::NoKey(_) => store.set_failed(FailedModel::no_key(item)),
            }
        }
        let waiting: Vec<key_release::Waiting> = waiting
            .into_iter()
            .map(|(item, note)| key_release::Waiting { item, note })
            .collect();
        for key_release::Waiting { item, note } in &waiting {
            store.set_failed(FailedModel {
                name: item.name.clone(),
                path: item.path.clone(),
                code: "key-pending".to_owned(),
                reason: key_release::pending_reason(note.as_deref(), "waiting for the key broker"),
            });
        }
        let identity = ServerIdentity::create(
            platform,
            config.collateral,
            store.claims(),
            engine.info().claim(),
            &config.hostnames,
        )?;
        let claims = identity.claims();
        let (ready, failed) = store.counts();
        tracing::info!(
            spki_sha256 = %hex::encode(claims.tls_spki_sha256),
            platform = %claims.platform,
            engine = %engine.info().kind(),
            engine_version = %engine.info().version(),
            models = ready,
            failed,
            waiting_for_broker = waiting.len(),
            "identity made"
        );
        let kbs = config.kbs;
        Ok(Self {
            service: Arc::new(Service::new(store, identity, config.limits, engine)),
            listen: config.listen,
            metrics_listen: config.metrics_listen,
            ohttp_listen: config.ohttp_listen,
            kbs,
            waiting,
            leased,
        })
    }

    /// The identity (claims, certificate).
    pub fn identity(&self) -> &ServerIdentity {
        self.service.identity()
    }

    /// The loaded and failed models.
    pub fn store(&self) -> &ModelStore {
        self.service.store()
    }

    /// The HTTP application the attested listener serves (KServe v2, `/v1/attestation`,
    /// `/v1/ohttp`, `/metrics`), for driving without sockets — tests, or an embedding that
    /// brings its own listener. It reports not ready (`/v2/health/ready`) until
    /// [`start`](Self::start).
    pub fn router(&self) -> axum::Router {
        http::router(Arc::clone(&self.service))
    }

    /// The HTTP application the plain-HTTP listener for encrypted requests serves
    /// ([`ServerConfig::ohttp_listen`](crate::ServerConfig::ohttp_listen): `/v1/ohttp`,
    /// `/v1/attestation` and the health probes), for driving without sockets likewise.
    pub fn ohttp_router(&self) -> axum::Router {
        http::ohttp_router(Arc::clone(&self.service))
    }

    /// Binds the listeners and starts serving.
    pub async fn start(self) -> Result<RunningServer, ServerError> {
        let tls = self.service.identity().tls_config()?;
        // Every address is bound before anything is served: a listener that cannot bind stops
        // the start with nothing accepted.
        let (listener, local_addr) = bind("--listen", self.listen).await?;
        let ohttp = match self.ohttp_listen {
            Some(addr) => Some(bind("--ohttp-listen", addr).await?),
            None => None,
        };
        let metrics = match self.metrics_listen {
            Some(addr) => Some(bind("--metrics-listen", addr).await?),
            None => None,
        };
        let (shutdown, watcher) = watch::channel(false);
        let limits = self.service.limits().clone();
        let mut tasks = JoinSet::new();
        // Each connection remembers the claims in force when its handshake finished: those of
        // the certificate it was shown, which its receipts then name.
        let on_established: cloak_net::OnEstablished = {
            let service = Arc::clone(&self.service);
            Arc::new(move || {
                let mut extensions = axum::http::Extensions::new();
                extensions.insert(http::AcceptedUnder(service.identity().evidence_digest()));
                extensions
            })
        };
        tasks.spawn(cloak_net::serve_with(
            listener,
            Some(tls),
            http::router(Arc::clone(&self.service)),
            limits.connections.clone(),
            self.service.connection_stats(),
            Some(on_established),
            stopped(watcher.clone()),
        ));
        let ohttp_addr = ohttp.as_ref().map(|(_, bound)| *bound);
        if let Some((listener, _)) = ohttp {
            // Clients' connections, in the same statistics as the attested listener's, under
            // a cap of the same size of their own. The per-address cap is the whole cap: this
            // listener is for a balancer or relay, whose connections all come from one
            // address. No connection names the claims it accepted: an encapsulated request says
            // which it holds inside its encryption.
            let mut forwarded = limits.connections.clone();
            forwarded.max_per_address = forwarded.max_connections;
            tasks.spawn(cloak_net::serve(
                listener,
                None,
                http::ohttp_router(Arc::clone(&self.service)),
                forwarded,
                self.service.connection_stats(),
                stopped(watcher.clone()),
            ));
        }
        let metrics_addr = metrics.as_ref().map(|(_, bound)| *bound);
        if let Some((listener, _)) = metrics {
            // Scrapers are few: a small cap of their own, counted apart from clients.
            let mut scraper_limits = limits.connections.clone();
            scraper_limits.max_connections = METRICS_MAX_CONNECTIONS;
            scraper_limits.max_per_address = METRICS_MAX_CONNECTIONS;
            tasks.spawn(cloak_net::serve(
                listener,
                None,
                http::metrics_router(Arc::clone(&self.service)),
                scraper_limits,
                Arc::new(cloak_net::ConnectionStats::new()),
                stopped(watcher),
            ));
        }
        match self.kbs {
            Some(config)
                if config.fleet.is_some()
                    || !(self.waiting.is_empty() && self.leased.is_empty()) =>
            {
                let client = Arc::new(BrokerClient::new(&config).map_err(ServerError::Kbs)?);
                if let Some(fleet) = config.fleet.clone() {
                    // A fleet replica is not ready until it holds the fleet's key.
                    self.service
                        .identity()
                        .set_fleet(&fleet, Vec::new(), 0)
                        .map_err(ServerError::Identity)?;
                    tasks.spawn(crate::fleet::keep_fleet_keys(
                        Arc::clone(&self.service),
                        Arc::clone(&client),
                        fleet,
                        config.fleet_refresh,
                        shutdown.subscribe(),
                    ));
                }
                tasks.spawn(key_release::obtain_keys(
                    Arc::clone(&self.service),
                    client,
                    config,
                    self.waiting,
                    self.leased,
                    shutdown.subscribe(),
                ));
            }
            None if !self.leased.is_empty() => {
                tasks.spawn(key_release::expire_leases(
                    Arc::clone(&self.service),
                    self.leased,
                    shutdown.subscribe(),
                ));
            }
            _ => {}
        }
        self.service.set_ready();
        Ok(RunningServer {
            local_addr,
            ohttp_addr,
            metrics_addr,
            shutdown,
            tasks,
            service: self.service,
        })
    }
}

/// A listener on `addr` (given as `flag`), and the address it got (the port the OS chose, if
/// `addr`'s was 0).
async fn bind(flag: &str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Bind(format!("{addr} ({flag}): {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ServerError::Bind(format!("{addr} ({flag}): {e}")))?;
    Ok((listener, bound))
}

/// Connections the plain-HTTP metrics listener serves at once.
const METRICS_MAX_CONNECTIONS: usize = 64;

/// Completes when `watcher` turns true (or its sender is gone).
async fn stopped(mut watcher: watch::Receiver<bool>) {
    let _ = watcher.wait_for(|stop| *stop).await;
}

/// A listening server.
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    ohttp_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    service: Arc<Service>,
}

impl RunningServer {
    /// The attested TLS certificate new connections get now (DER).
    pub fn certificate(&self) -> rustls::pki_types::CertificateDer<'static> {
        self.service.identity().certificate()
    }

    /// The attested-TLS address (with the port the OS chose, if it was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The plain-HTTP address for encrypted requests, if any.
    pub fn ohttp_addr(&self) -> Option<SocketAddr> {
        self.ohttp_addr
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

/// The key a model starts with, if any.
enum Start {
    Key(ModelKey, KeySource),
    /// No usable key; why a sealed one was not used, if there was one.
    NoKey(Option<String>),
}

/// The key a model starts with: given by the operator, or sealed here by an earlier run while
/// its lease lasts. A sealed key that does not unseal, is not the container's key, or whose
/// lease has ended is reported and ignored.
fn initial_key(config: &ServerConfig, platform: &dyn Platform, item: &Found) -> Start {
    if let Some(key) = config.model_keys.get(&item.name) {
        return Start::Key(key.clone(), KeySource::Given);
    }
    match sealed_keys::unseal_key(platform, &item.path, &item.name) {
        Ok(Some(sealed)) if sealed.key.id() != item.key_id => {
            tracing::warn!(
                model = %item.name,
                "the sealed key is not this container's key; ignored"
            );
            Start::NoKey(Some(
                "the sealed key is not this container's key (sealed-key-mismatch)".to_owned(),
            ))
        }
        Ok(Some(sealed)) if sealed.lease_expires <= unix_now() => {
            tracing::warn!(
                model = %item.name,
                lease_expires = sealed.lease_expires,
                "the sealed key's lease has ended; ignored"
            );
            Start::NoKey(Some(format!(
                "the sealed key's lease ended at {} (Unix time) (key-lease-expired)",
                sealed.lease_expires
            )))
        }
        Ok(Some(sealed)) => {
            tracing::info!(
                model = %item.name,
                lease_expires = sealed.lease_expires,
                "model key unsealed"
            );
            Start::Key(
                sealed.key,
                KeySource::Sealed(sealed.lease_expires, sealed.token_key),
            )
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

/// Seconds since the Unix epoch, by this machine's clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
