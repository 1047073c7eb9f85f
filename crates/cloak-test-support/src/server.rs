//! An in-process server on the simulated platform, as tests need it: the demo model (and any
//! other) sealed with keys given, optionally a tampered container and one without a key.
//!
//! ```no_run
//! # async fn example() {
//! use cloak_test_support::server::SimServer;
//! let server = SimServer::builder().tampered("broken").start().await;
//! let client = server.client().await;
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use cloak_attest::policy::AppraisalPolicy;
use cloak_client::{Client, Mode};
use cloak_crypto::key::ModelKey;
use cloak_engine::Engine;
use cloak_server::{Limits, PreparedServer, RunningServer, ServerConfig};
use cloak_tee::Platform;

use crate::models::{DEMO_ONNX, seal, tamper};
use crate::sim::{Sim, this_process};

/// Builds a [`SimServer`].
#[derive(Debug)]
#[must_use]
pub struct SimServerBuilder {
    models: Vec<(String, Vec<u8>)>,
    tampered: Vec<String>,
    orphans: Vec<String>,
    debug: bool,
    limits: Limits,
    metrics_listener: bool,
    ohttp_listener: bool,
    listen: SocketAddr,
    engine: Engine,
    quote_delay: Option<std::time::Duration>,
}

/// A server on the simulated platform in this process, with its models and platform in a
/// temporary directory; stopped when dropped (or by [`SimServer::shutdown`]).
#[derive(Debug)]
pub struct SimServer {
    dir: tempfile::TempDir,
    sim: Sim,
    server: Option<RunningServer>,
    keys: HashMap<String, ModelKey>,
    builder: SimServerBuilder,
}

impl SimServer {
    /// A server with the demo model as `demo`, on any free port.
    pub fn builder() -> SimServerBuilder {
        SimServerBuilder {
            models: vec![("demo".to_owned(), DEMO_ONNX.to_vec())],
            tampered: Vec::new(),
            orphans: Vec::new(),
            debug: false,
            limits: Limits::default(),
            metrics_listener: false,
            ohttp_listener: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            engine: Engine::tract(),
            quote_delay: None,
        }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.running().local_addr())
    }

    /// `http://127.0.0.1:PORT` of the plain-HTTP listener for encrypted requests (see
    /// [`SimServerBuilder::ohttp_listener`]).
    pub fn ohttp_url(&self) -> String {
        let addr = self
            .running()
            .ohttp_addr()
            .expect("the server was built with ohttp_listener()");
        format!("http://{addr}")
    }

    /// The running server.
    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().expect("the server is running")
    }

    /// The simulated platform.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The temporary directory (models in `models/`, the platform in `sim/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What a data owner who trusts this simulation root and pins this enclave (this test
    /// process and the engine's library, as the simulated platform measures them) accepts.
    pub fn policy(&self) -> AppraisalPolicy {
        self.sim.policy(self.measurement())
    }

    /// The MRENCLAVE the simulated platform gives this server: this test process, with the
    /// engine's library as a trusted file.
    pub fn measurement(&self) -> [u8; 32] {
        cloak_tee::sim::enclave_measurement(
            &this_process(),
            &self.builder.engine.info().library_digests(),
        )
    }

    /// A client over attested TLS, under [`SimServer::policy`], with the relayed collateral.
    pub async fn client(&self) -> Client {
        self.client_with(Mode::AttestedTls).await
    }

    /// A client in `mode`, under [`SimServer::policy`].
    pub async fn client_with(&self, mode: Mode) -> Client {
        Client::builder()
            .policy(self.policy())
            .mode(mode)
            .connect(&self.url())
            .await
            .expect("the server is accepted")
    }

    /// `/metrics`, read over attested TLS.
    pub async fn metrics(&self) -> String {
        let response = self.client().await.get("/metrics").await.expect("metrics");
        assert_eq!(response.status, 200);
        String::from_utf8(response.body).expect("metrics are text")
    }

    /// The counter `cloak_NAME_total` in `/metrics` (read, like [`SimServer::metrics`],
    /// through a new client, whose appraisal is itself a fresh attestation).
    pub async fn counter(&self, name: &str) -> u64 {
        let metrics = self.metrics().await;
        sample(&metrics, &format!("cloak_{name}_total"))
            .unwrap_or_else(|| panic!("no counter {name} in {metrics}"))
    }

    /// Stops the server and starts it again on the same address with the same models and
    /// platform: new keys, so a new identity.
    pub async fn restart(&mut self) {
        let addr = self.running().local_addr();
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let prepared = prepare(
            &self.builder,
            self.dir.path(),
            &self.sim,
            self.keys.clone(),
            addr,
        )
        .await;
        self.server = Some(prepared.start().await.expect("the server restarts"));
    }

    /// Stops the server; open connections finish their requests.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

impl SimServerBuilder {
    /// Also serves `onnx` as model `name`, with its key given.
    pub fn model(mut self, name: &str, onnx: &[u8]) -> Self {
        self.models.push((name.to_owned(), onnx.to_vec()));
        self
    }

    /// Also a container `name` of the demo model with one bit flipped (its key given): it
    /// fails to load with `chunk-authentication`.
    pub fn tampered(mut self, name: &str) -> Self {
        self.tampered.push(name.to_owned());
        self
    }

    /// Also a container `name` of the demo model whose key the server is never given.
    pub fn orphan(mut self, name: &str) -> Self {
        self.orphans.push(name.to_owned());
        self
    }

    /// Runs as a debug enclave.
    pub fn debug(mut self) -> Self {
        self.debug = true;
        self
    }

    /// With these limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Makes every quote take at least `delay` longer, as quoting through an SGX quoting
    /// enclave does (the simulated platform quotes in well under a millisecond).
    pub fn quote_delay(mut self, delay: std::time::Duration) -> Self {
        self.quote_delay = Some(delay);
        self
    }

    /// Also serves `/metrics` on a plain-HTTP listener.
    pub fn metrics_listener(mut self) -> Self {
        self.metrics_listener = true;
        self
    }

    /// Also takes encrypted requests on a plain-HTTP listener ([`SimServer::ohttp_url`]).
    pub fn ohttp_listener(mut self) -> Self {
        self.ohttp_listener = true;
        self
    }

    /// Seals the models, makes the platform and prepares the server, without listening.
    pub async fn prepare(self) -> (PreparedSimServer, PreparedServer) {
        let (dir, sim, keys) = self.materials();
        let prepared = prepare(&self, dir.path(), &sim, keys.clone(), self.listen).await;
        (
            PreparedSimServer {
                dir,
                sim,
                keys,
                builder: self,
            },
            prepared,
        )
    }

    /// Runs the models on `engine` [default: tract].
    pub fn engine(mut self, engine: Engine) -> Self {
        self.engine = engine;
        self
    }

    /// Seals the models, makes the platform, and starts the server.
    pub async fn start(self) -> SimServer {
        let (materials, prepared) = self.prepare().await;
        let running = prepared.start().await.expect("the server starts");
        SimServer {
            dir: materials.dir,
            sim: materials.sim,
            server: Some(running),
            keys: materials.keys,
            builder: materials.builder,
        }
    }

    fn materials(&self) -> (tempfile::TempDir, Sim, HashMap<String, ModelKey>) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let models = dir.path().join("models");
        std::fs::create_dir(&models).expect("the model directory");
        let mut keys = HashMap::new();
        for (name, onnx) in &self.models {
            keys.insert(name.clone(), seal(&models, name, name, onnx));
        }
        for name in &self.tampered {
            keys.insert(name.clone(), seal(&models, name, name, DEMO_ONNX));
            tamper(&models.join(format!("{name}.cloak")));
        }
        for name in &self.orphans {
            let _ = seal(&models, name, name, DEMO_ONNX);
        }
        let sim = Sim::init(&dir.path().join("sim"));
        (dir, sim, keys)
    }
}

/// The materials of a prepared (not started) [`SimServer`]: keep it alive while the prepared
/// server is used.
#[derive(Debug)]
pub struct PreparedSimServer {
    dir: tempfile::TempDir,
    sim: Sim,
    keys: HashMap<String, ModelKey>,
    builder: SimServerBuilder,
}

async fn prepare(
    builder: &SimServerBuilder,
    dir: &Path,
    sim: &Sim,
    keys: HashMap<String, ModelKey>,
    listen: SocketAddr,
) -> PreparedServer {
    let platform = cloak_tee::sim::SimPlatform::open(sim.dir())
        .expect("the simulated platform")
        .with_libraries(&builder.engine.info().library_digests());
    let mut identity = platform.identity().expect("an identity");
    identity.debug = builder.debug;
    let mut platform: Arc<dyn Platform> = Arc::new(platform.with_enclave(identity));
    if let Some(delay) = builder.quote_delay {
        platform = Arc::new(SlowQuotes { platform, delay });
    }
    let mut config = ServerConfig::new(dir.join("models"), listen);
    config.model_keys = keys;
    config.limits = builder.limits.clone();
    config.engine = builder.engine.clone();
    if builder.metrics_listener {
        config.metrics_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    if builder.ohttp_listener {
        config.ohttp_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    tokio::task::spawn_blocking(move || PreparedServer::prepare(config, platform))
        .await
        .expect("preparing")
        .expect("the server prepares")
}

/// A platform whose quotes take `delay` longer (see [`SimServerBuilder::quote_delay`]).
struct SlowQuotes {
    platform: Arc<dyn Platform>,
    delay: std::time::Duration,
}

impl Platform for SlowQuotes {
    fn kind(&self) -> cloak_tee::PlatformKind {
        self.platform.kind()
    }

    fn identity(&self) -> Result<cloak_tee::Identity, cloak_tee::TeeError> {
        self.platform.identity()
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<cloak_tee::Evidence, cloak_tee::TeeError> {
        std::thread::sleep(self.delay);
        self.platform.evidence(report_data)
    }

    fn sealing_key(
        &self,
        request: &cloak_tee::KeyRequest,
    ) -> Result<cloak_tee::SealingKey, cloak_tee::TeeError> {
        self.platform.sealing_key(request)
    }
}

/// The value of the unlabelled series `name` in the Prometheus text `metrics`, if it is there.
pub fn sample<T: std::str::FromStr>(metrics: &str, name: &str) -> Option<T> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
