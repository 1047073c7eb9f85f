//! The HTTP API: the KServe v2 / Triton protocol, fresh attestation and metrics.
//!
//! Handlers are thin: they read and bound the request, call the model store, the engine or the
//! identity, and map every failure to a JSON `{"error": "..."}` body with Triton's status
//! codes, through [`ApiError`] — the one place where errors meet the wire. Error messages name
//! models, inputs, data types and shapes, never tensor values.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloak_engine::{Dim, Engine, EngineError};
use cloak_proto::kserve::{
    self, Dimension, ErrorBody, InferRequest, InferResponse, ModelMetadata, ModelReady,
    NamedTensor, ServerLive, ServerMetadata, ServerReady, TensorMetadata,
};
use cloak_proto::receipt;
use serde::Serialize;

use crate::identity::ServerIdentity;
use crate::limits::{Admission, Limits, Refusal};
use crate::metrics::{Metrics, Outcome};
use crate::store::{LoadedModel, ModelStore};

/// The single model version Cloak serves (models are not versioned).
const VERSION: &str = "1";
/// The platform string in model metadata.
const PLATFORM: &str = "tract_onnx";

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    store: ModelStore,
    identity: ServerIdentity,
    engine: Engine,
    limits: Limits,
    admission: Admission,
    metrics: Metrics,
    ready: AtomicBool,
    reattest: std::sync::Mutex<()>,
}

impl AppState {
    pub(crate) fn new(
        store: ModelStore,
        identity: ServerIdentity,
        limits: Limits,
        engine: Engine,
    ) -> Self {
        let metrics = Metrics::new();
        let (ready, failed) = store.counts();
        metrics.set_models(ready, failed);
        Self {
            admission: Admission::new(&limits),
            store,
            identity,
            engine,
            limits,
            metrics,
            ready: AtomicBool::new(false),
            reattest: std::sync::Mutex::new(()),
        }
    }

    pub(crate) fn identity(&self) -> &ServerIdentity {
        &self.identity
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

    /// After a model became ready: updates the model gauges and re-attests the claims, so that
    /// new connections and attestations name the model (blocking: the platform signs a quote).
    pub(crate) fn models_changed(&self) {
        // One re-attestation at a time, each reading the store under the lock: two models
        // arriving together must not leave the older claims in place.
        let _serial = self
            .reattest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
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

    pub(crate) fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    fn codec_limits(&self) -> kserve::Limits {
        let mut limits = kserve::Limits::default();
        limits.max_elements = self.limits.max_elements;
        limits.max_inputs = self.limits.max_inputs;
        limits
    }
}

/// The KServe v2 routes (also the target of encrypted requests).
fn kserve_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models", get(list_models))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_at),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_at),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_at),
        )
        .route("/v2/repository/index", post(repository_index))
}

/// The main router: KServe v2, fresh attestation, encrypted requests and metrics.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let inner = kserve_routes()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::clone(&state));
    let gateway = crate::ohttp::router(crate::ohttp::Gateway {
        app: Arc::clone(&state),
        inner,
    });
    kserve_routes()
        .route("/v1/attestation", get(attestation))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .merge(gateway)
}

/// The plain-HTTP metrics-only router.
pub(crate) fn metrics_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// An error on the wire: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: false,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn outcome(&self) -> Outcome {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Outcome::rejected,
            s if s.is_client_error() => Outcome::client_error,
            _ => Outcome::server_error,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = json(self.status, &ErrorBody::new(self.message));
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<kserve::KserveError> for ApiError {
    fn from(e: kserve::KserveError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        Self::new(status, e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = if e.is_client_error() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self::new(status, e.to_string())
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, kserve::CONTENT_TYPE_JSON)],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}

async fn server_metadata() -> Response {
    let extensions = vec![
        kserve::BINARY_TENSOR_DATA_EXTENSION.to_owned(),
        "model_repository".to_owned(),
        "attestation".to_owned(),
    ];
    json(
        StatusCode::OK,
        &ServerMetadata::new("cloak", env!("CARGO_PKG_VERSION"), extensions),
    )
}

async fn live() -> Response {
    json(StatusCode::OK, &ServerLive::new(true))
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.ready.load(Ordering::SeqCst) && state.store.counts().0 > 0;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(status, &ServerReady::new(ready))
}

#[derive(Serialize)]
struct ModelList {
    models: Vec<String>,
}

async fn list_models(State(state): State<Arc<AppState>>) -> Response {
    let models = state
        .store
        .ready()
        .iter()
        .map(|m| m.claim.name.clone())
        .collect();
    json(StatusCode::OK, &ModelList { models })
}

/// The ready model `name` at `version` (`None`: unversioned path).
fn model(
    state: &AppState,
    name: &str,
    version: Option<&str>,
) -> Result<Arc<LoadedModel>, ApiError> {
    if let Some(version) = version
        && version != VERSION
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model {name} has no version {version} (Cloak serves version {VERSION})"),
        ));
    }
    if let Some(model) = state.store.get(name) {
        return Ok(model);
    }
    match state.store.failure(name) {
        Some(failed) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "model {name} is not available: {} ({})",
                failed.reason, failed.code
            ),
        )),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no model named {name}"),
        )),
    }
}

fn metadata(model: &LoadedModel) -> ModelMetadata {
    let tensors = |specs: &[cloak_engine::TensorSpec]| {
        specs
            .iter()
            .map(|spec| {
                let shape = spec
                    .shape()
                    .iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => Dimension::Fixed(*n as u64),
                        _ => Dimension::Dynamic,
                    })
                    .collect();
                TensorMetadata::new(spec.name(), spec.dtype(), shape)
            })
            .collect()
    };
    let mut metadata = ModelMetadata::new(
        model.claim.name.clone(),
        PLATFORM,
        tensors(model.model.inputs()),
        tensors(model.model.outputs()),
    );
    metadata.versions = vec![VERSION.to_owned()];
    metadata
}

async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let model = model(&state, &name, None)?;
    Ok(json(StatusCode::OK, &metadata(&model)))
}

async fn model_metadata_at(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let model = model(&state, &name, Some(&version))?;
    Ok(json(StatusCode::OK, &metadata(&model)))
}

fn readiness(state: &AppState, name: &str, version: Option<&str>) -> Response {
    match model(state, name, version) {
        Ok(_) => json(StatusCode::OK, &ModelReady::new(name, true)),
        Err(e) => e.into_response(),
    }
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    readiness(&state, &name, None)
}

async fn model_ready_at(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    readiness(&state, &name, Some(&version))
}

#[derive(Serialize)]
struct IndexEntry {
    name: String,
    version: &'static str,
    state: &'static str,
    reason: String,
}

/// Triton's repository index: every model with its state, and why a failed one failed.
async fn repository_index(State(state): State<Arc<AppState>>) -> Response {
    let mut entries: Vec<IndexEntry> = state
        .store
        .ready()
        .iter()
        .map(|m| IndexEntry {
            name: m.claim.name.clone(),
            version: VERSION,
            state: "READY",
            reason: String::new(),
        })
        .collect();
    entries.extend(state.store.failed().into_iter().map(|f| IndexEntry {
        name: f.name,
        version: VERSION,
        state: "UNAVAILABLE",
        reason: format!("{} ({})", f.reason, f.code),
    }));
    json(StatusCode::OK, &entries)
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(state, name, None, headers, body).await
}

async fn infer_at(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(state, name, Some(version), headers, body).await
}

async fn run_infer(
    state: Arc<AppState>,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = infer_inner(&state, &name, version.as_deref(), &headers, body).await;
    let seconds = started.elapsed().as_secs_f64();
    // Only served models get a metrics label: a client cannot grow the label set.
    let label = if state.store.is_ready(&name) {
        name.as_str()
    } else {
        "(unknown)"
    };
    match result {
        Ok(response) => {
            state
                .metrics
                .request(label, Outcome::success, Some(seconds));
            tracing::debug!(model = label, seconds, "inference done");
            response
        }
        Err(e) => {
            state.metrics.request(label, e.outcome(), None);
            tracing::debug!(
                model = label,
                status = e.status.as_u16(),
                "inference refused"
            );
            e.into_response()
        }
    }
}

async fn infer_inner(
    state: &Arc<AppState>,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let model = model(state, name, version)?;
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && encoding.as_bytes() != b"identity"
    {
        return Err(ApiError::bad_request(
            "compressed request bodies are not supported; send Content-Encoding: identity",
        ));
    }
    let header_len = match headers.get(kserve::HEADER_CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{} is not a byte count",
                        kserve::HEADER_CONTENT_LENGTH
                    ))
                })?,
        ),
    };
    let body = axum::body::to_bytes(body, state.limits.max_request_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request body is larger than the server's {}-byte limit, or was cut off",
                    state.limits.max_request_bytes
                ),
            )
        })?;
    let request = InferRequest::parse(&body, header_len, &state.codec_limits())?;
    for output in request.outputs() {
        if !model
            .model
            .outputs()
            .iter()
            .any(|o| o.name() == output.name())
        {
            return Err(ApiError::bad_request(format!(
                "model {name} has no output {}",
                output.name()
            )));
        }
    }

    // The receipt's input digest. With a worker free now, this thread computes it while the
    // worker runs the inference, off the request's critical path. A request that has to queue is
    // hashed first, so that it waits without holding its body as well as its tensors.
    let (permit, input) = match state.admission.try_admit() {
        Some(permit) => {
            state.metrics.queued(0.0);
            (permit, InputDigest::Pending(body))
        }
        None => {
            let digest = cloak_crypto::hash::sha256(&body);
            drop(body);
            let queued = Instant::now();
            let permit = state.admission.admit().await.map_err(refused)?;
            state.metrics.queued(queued.elapsed().as_secs_f64());
            (permit, InputDigest::Done(digest))
        }
    };

    // Everything the response needs from the request, so its tensors can move into the engine.
    let id = request.id().map(str::to_owned);
    let requested: Vec<String> = request
        .outputs()
        .iter()
        .map(|o| o.name().to_owned())
        .collect();
    let encodings: Vec<(String, kserve::TensorEncoding)> = model
        .model
        .outputs()
        .iter()
        .map(|o| (o.name().to_owned(), request.output_encoding(o.name())))
        .collect();
    let inputs: Vec<(String, cloak_proto::tensor::Tensor)> = request
        .into_inputs()
        .into_iter()
        .map(NamedTensor::into_parts)
        .collect();

    let worker_state = Arc::clone(state);
    let model_name = name.to_owned();
    let job = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _in_flight = InFlight::enter(&worker_state.metrics);
        let compute = Instant::now();
        let outputs = model.model.session().run(inputs)?;
        worker_state
            .metrics
            .compute(&model_name, compute.elapsed().as_secs_f64());
        let selected: Vec<NamedTensor> = outputs
            .into_iter()
            .filter(|(name, _)| requested.is_empty() || requested.contains(name))
            .map(|(name, tensor)| NamedTensor::new(name, tensor))
            .collect();
        let mut response = InferResponse::new(model_name, selected).with_model_version(VERSION);
        if let Some(id) = id {
            response = response.with_id(id);
        }
        let encoded = response.encode(|output| {
            encodings
                .iter()
                .find(|(name, _)| name == output)
                .map_or(kserve::TensorEncoding::Json, |(_, encoding)| *encoding)
        })?;
        let output_sha256 = cloak_crypto::hash::sha256(encoded.body());
        Ok::<_, ApiError>((encoded, output_sha256, model))
    });
    let input_sha256 = input.finish();
    let (encoded, output_sha256, model) = match job.await {
        Ok(result) => result?,
        Err(_) => {
            tracing::error!(model = name, "an inference worker failed");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the inference worker failed on this request",
            ));
        }
    };
    let request_id = request_id();
    let receipt = state
        .identity
        .receipt(
            &model.claim,
            request_id.clone(),
            input_sha256,
            output_sha256,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "a receipt could not be signed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the receipt could not be signed",
            )
        })?;
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(encoded.content_type()),
    );
    if let Some(len) = encoded.header_len() {
        response_headers.insert(kserve::HEADER_CONTENT_LENGTH, HeaderValue::from(len));
    }
    // Both are ASCII (hex and base64url) by construction.
    if let (Ok(id), Ok(receipt)) = (
        HeaderValue::from_str(&request_id),
        HeaderValue::from_str(&receipt),
    ) {
        response_headers.insert(receipt::REQUEST_ID_HEADER, id);
        response_headers.insert(receipt::HEADER, receipt);
    }
    // Moved, not copied, into the response body.
    let body = std::mem::take(&mut *encoded.into_body());
    Ok((StatusCode::OK, response_headers, Body::from(body)).into_response())
}

/// The receipt's digest of the request body: computed, or still to compute from the body.
enum InputDigest {
    Done([u8; 32]),
    Pending(axum::body::Bytes),
}

impl InputDigest {
    fn finish(self) -> [u8; 32] {
        match self {
            Self::Done(digest) => digest,
            Self::Pending(body) => cloak_crypto::hash::sha256(&body),
        }
    }
}

/// The answer to a request that was not admitted: retry later.
fn refused(refusal: Refusal) -> ApiError {
    let mut e = match refusal {
        Refusal::QueueFull => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "the server is at capacity; retry shortly",
        ),
        Refusal::TimedOut => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no inference worker became free in time; retry shortly",
        ),
    };
    e.retry_after = true;
    e
}

/// A fresh request id: 128 random bits, hex.
fn request_id() -> String {
    let mut id = [0u8; 16];
    // The OS random source does not fail on Linux; were it to, the id would be all zeros,
    // which loses its uniqueness but nothing the signature covers.
    let _ = getrandom::fill(&mut id);
    hex::encode(id)
}

/// Counts a running inference in the in-flight gauge while alive.
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(metrics: &'a Metrics) -> Self {
        metrics.in_flight().inc();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight().dec();
    }
}

async fn attestation(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let nonce = nonce(query.as_deref())?;
    let worker_state = Arc::clone(&state);
    let document = tokio::task::spawn_blocking(move || worker_state.identity.attest(&nonce))
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "attestation failed"))?
        .map_err(|e| {
            tracing::error!(error = %e, "attestation failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the platform could not produce evidence",
            )
        })?;
    state.metrics.attestation();
    Ok(json(StatusCode::OK, &document))
}

/// The `nonce` query parameter: 1 to 64 bytes of hex.
fn nonce(query: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("nonce="))
        .ok_or_else(|| ApiError::bad_request("give a fresh nonce: /v1/attestation?nonce=HEX"))?;
    let nonce = hex::decode(value).map_err(|_| ApiError::bad_request("the nonce must be hex"))?;
    if nonce.is_empty() || nonce.len() > cloak_proto::attestation::MAX_NONCE_LEN {
        return Err(ApiError::bad_request(format!(
            "the nonce must be 1 to {} bytes",
            cloak_proto::attestation::MAX_NONCE_LEN
        )));
    }
    Ok(nonce)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(state.admission.waiting()),
    )
        .into_response()
}
