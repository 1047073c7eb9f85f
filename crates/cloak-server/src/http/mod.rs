//! The HTTP layer: thin handlers over the [`Service`](crate::service::Service).
//!
//! Each handler reads and bounds what HTTP carries (path, headers, body), calls the service,
//! and maps the result: the KServe v2 / Triton protocol ([`kserve`]), fresh attestation
//! ([`attestation`]), encrypted requests ([`ohttp`], which hands decapsulated requests to the
//! same KServe routes), and metrics ([`metrics`]). Every failure reaches the wire through
//! [`error::ApiError`], the one place where errors become statuses and messages. Messages name
//! models, inputs, data types and shapes, never tensor values.

mod attestation;
mod error;
mod kserve;
mod metrics;
mod ohttp;

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::service::Service;

use error::ApiError;

pub(crate) use kserve::AcceptedUnder;

/// The main application: KServe v2, fresh attestation, encrypted requests and metrics.
pub(crate) fn router(service: Arc<Service>) -> Router {
    let gateway = gateway(&service);
    kserve::routes()
        .route("/v1/attestation", get(attestation::fresh))
        .route("/metrics", get(metrics::render))
        .fallback(not_found)
        .with_state(service)
        .merge(gateway)
        // Last, so that it covers the gateway's route too.
        .method_not_allowed_fallback(method_not_allowed)
}

/// The plain-HTTP application for encrypted requests, for a relay or a TLS-terminating load
/// balancer: `/v1/ohttp`, the fresh attestation an encrypted request's client appraises first,
/// and the health probes. Nothing that carries inputs, outputs or metrics in the clear is served
/// here: a decapsulated request reaches the KServe routes only from inside the gateway.
pub(crate) fn ohttp_router(service: Arc<Service>) -> Router {
    let gateway = gateway(&service);
    kserve::health_routes()
        .route("/v1/attestation", get(attestation::fresh))
        .fallback(not_here)
        .with_state(service)
        .merge(gateway)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `/v1/ohttp`, which hands decapsulated requests to the KServe routes.
fn gateway(service: &Arc<Service>) -> Router {
    let inner = kserve::routes()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::clone(service));
    ohttp::router(Arc::clone(service), inner)
}

/// The plain-HTTP metrics-only application.
pub(crate) fn metrics_router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::render))
        .fallback(not_found)
        .with_state(service)
}

/// `value` as a JSON body with `status`.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, cloak_proto::kserve::CONTENT_TYPE_JSON)],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// On the plain-HTTP listener for encrypted requests: anything else, KServe in the clear first.
async fn not_here() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "plaintext-refused: this listener takes only encrypted requests (POST /v1/ohttp), fresh \
         attestation and health probes; send KServe requests encapsulated, or over attested TLS",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
}
