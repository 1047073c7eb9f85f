//! The KServe v2 / Triton routes: health, server and model metadata, readiness, the repository
//! index and inference (JSON and binary tensors). Also the routes that decapsulated encrypted
//! requests are dispatched to.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cloak_engine::{Dim, TensorSpec};
use cloak_proto::kserve::{
    self, Dimension, ModelMetadata, ModelReady, ServerLive, ServerMetadata, ServerReady,
    TensorMetadata,
};
use cloak_proto::receipt::{self, BodyDigest};
use serde::Serialize;

use super::error::ApiError;
use super::json;
use crate::limits::BodyReservation;
use crate::metrics::Outcome;
use crate::service::{Inference, MODEL_VERSION, Service};
use crate::store::LoadedModel;

/// The KServe v2 routes (also the target of encrypted requests).
pub(super) fn routes() -> Router<Arc<Service>> {
    health_routes()
        .route("/v2", get(server_metadata))
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

/// The KServe health probes alone, which say nothing about models or data.
pub(super) fn health_routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
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

async fn ready(State(service): State<Arc<Service>>) -> Response {
    let ready = service.is_ready();
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

async fn list_models(State(service): State<Arc<Service>>) -> Response {
    let models = service
        .store()
        .ready()
        .iter()
        .map(|m| m.claim.name.clone())
        .collect();
    json(StatusCode::OK, &ModelList { models })
}

/// `model`'s metadata; its platform names the engine that runs it, so that clients which branch
/// on it see the truth.
fn metadata(service: &Service, model: &LoadedModel) -> ModelMetadata {
    let tensors = |specs: &[TensorSpec]| {
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
        service.engine().info().kind().platform(),
        tensors(model.model.inputs()),
        tensors(model.model.outputs()),
    );
    metadata.versions = vec![MODEL_VERSION.to_owned()];
    metadata
}

async fn model_metadata(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let model = service.model(&name, None)?;
    Ok(json(StatusCode::OK, &metadata(&service, &model)))
}

async fn model_metadata_at(
    State(service): State<Arc<Service>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let model = service.model(&name, Some(&version))?;
    Ok(json(StatusCode::OK, &metadata(&service, &model)))
}

fn readiness(service: &Service, name: &str, version: Option<&str>) -> Response {
    match service.model(name, version) {
        Ok(_) => json(StatusCode::OK, &ModelReady::new(name, true)),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn model_ready(State(service): State<Arc<Service>>, Path(name): Path<String>) -> Response {
    readiness(&service, &name, None)
}

async fn model_ready_at(
    State(service): State<Arc<Service>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    readiness(&service, &name, Some(&version))
}

#[derive(Serialize)]
struct IndexEntry {
    name: String,
    version: &'static str,
    state: &'static str,
    reason: String,
}

/// Triton's repository index: every model with its state, and why a failed one failed.
async fn repository_index(State(service): State<Arc<Service>>) -> Response {
    let store = service.store();
    let mut entries: Vec<IndexEntry> = store
        .ready()
        .iter()
        .map(|m| IndexEntry {
            name: m.claim.name.clone(),
            version: MODEL_VERSION,
            state: "READY",
            reason: String::new(),
        })
        .collect();
    entries.extend(store.failed().into_iter().map(|f| IndexEntry {
        name: f.name,
        version: MODEL_VERSION,
        state: "UNAVAILABLE",
        reason: format!("{} ({})", f.reason, f.code),
    }));
    json(StatusCode::OK, &entries)
}

async fn infer(
    State(service): State<Arc<Service>>,
    Path(name): Path<String>,
    context: Context,
    headers: HeaderMap,
    body: Body,
) -> Response {
    counted(service, name, None, context, headers, body).await
}

async fn infer_at(
    State(service): State<Arc<Service>>,
    Path((name, version)): Path<(String, String)>,
    context: Context,
    headers: HeaderMap,
    body: Body,
) -> Response {
    counted(service, name, Some(version), context, headers, body).await
}

/// What the transport says about a request: whether the encrypted-request gateway reserved its
/// body's bytes already, and the evidence it was accepted under.
#[derive(Clone, Copy, Debug, Default)]
struct Context {
    reserved: bool,
    accepted_under: Option<[u8; 32]>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Context {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self {
            reserved: parts.extensions.get::<Reserved>().is_some(),
            accepted_under: parts.extensions.get::<AcceptedUnder>().map(|a| a.0),
        })
    }
}

/// An inference, counted in the metrics by model and outcome.
async fn counted(
    service: Arc<Service>,
    name: String,
    version: Option<String>,
    context: Context,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = infer_request(&service, &name, version.as_deref(), context, &headers, body).await;
    let seconds = started.elapsed().as_secs_f64();
    // Only served models get a metrics label: a client cannot grow the label set.
    let label = if service.store().is_ready(&name) {
        name.as_str()
    } else {
        "(unknown)"
    };
    match result {
        Ok(response) => {
            service
                .metrics()
                .request(label, Outcome::success, Some(seconds));
            tracing::debug!(model = label, seconds, "inference done");
            response
        }
        Err(e) => {
            service.metrics().request(label, e.outcome(), None);
            tracing::debug!(
                model = label,
                status = e.status().as_u16(),
                "inference refused"
            );
            e.into_response()
        }
    }
}

/// Reads and bounds the request — its bytes reserved from the body budget first, unless the
/// encrypted-request gateway reserved them (`reserved`) — runs it, and puts the answer and its
/// receipt on the wire.
async fn infer_request(
    service: &Arc<Service>,
    name: &str,
    version: Option<&str>,
    context: Context,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let model = service.model(name, version)?;
    // Before the body is read: a request its model's owner did not allow costs nothing more.
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    service.authorize(name, bearer)?;
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
    let limit = service.limits().max_request_bytes;
    let _reservation = if context.reserved {
        None
    } else {
        Some(reserve(service, headers, limit)?)
    };
    let body = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than the server's {limit}-byte limit, or was cut off"
            ),
        )
    })?;
    let salt = match headers.get(receipt::SALT_HEADER) {
        None => None,
        Some(value) => Some(receipt::parse_salt(value.as_bytes()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{} is not {} lowercase hex digits",
                receipt::SALT_HEADER,
                2 * receipt::SALT_LEN
            ))
        })?),
    };
    let inference = service
        .infer(
            model,
            body,
            header_len,
            context.accepted_under,
            salt,
            BodyDigest::requested(headers.get(receipt::DIGEST_HEADER).map(|v| v.as_bytes())),
        )
        .await?;
    Ok(answer(inference))
}

/// A request whose body the encrypted-request gateway has already read under its own
/// reservation.
#[derive(Clone, Copy, Debug)]
pub(super) struct Reserved;

/// The evidence digest a request was accepted under: the claims in the certificate its
/// connection was established with, or the claims an encrypted request's client appraised.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AcceptedUnder(pub(crate) [u8; 32]);

/// Reserves a body's bytes before it is read: its declared length, or the whole limit when it
/// declares none. A declared length over `limit` is refused here, unread.
pub(super) fn reserve(
    service: &Service,
    headers: &HeaderMap,
    limit: usize,
) -> Result<BodyReservation, ApiError> {
    let declared = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length is not a byte count"))?,
        ),
    };
    let limit = limit as u64;
    if let Some(len) = declared
        && len > limit
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the server's {limit}-byte limit"),
        ));
    }
    Ok(service.reserve_body(declared.unwrap_or(limit))?)
}

/// The inference's response: its body, media type, header length, request id and receipt.
fn answer(inference: Inference) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(inference.content_type),
    );
    if let Some(len) = inference.header_len {
        headers.insert(kserve::HEADER_CONTENT_LENGTH, HeaderValue::from(len));
    }
    // Both are ASCII (hex and base64url) by construction.
    if let (Ok(id), Ok(receipt)) = (
        HeaderValue::from_str(&inference.request_id),
        HeaderValue::from_str(&inference.receipt),
    ) {
        headers.insert(receipt::REQUEST_ID_HEADER, id);
        headers.insert(receipt::HEADER, receipt);
    }
    if let Ok(salt) = HeaderValue::from_str(&hex::encode(inference.salt)) {
        headers.insert(receipt::SALT_HEADER, salt);
    }
    if let Ok(evidence) = HeaderValue::from_str(&hex::encode(inference.evidence)) {
        headers.insert(receipt::EVIDENCE_HEADER, evidence);
    }
    (StatusCode::OK, headers, Body::from(inference.body)).into_response()
}
