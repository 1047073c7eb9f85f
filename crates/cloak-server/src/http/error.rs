//! Errors on the wire: the one mapping from the service's failures to HTTP statuses and
//! `{"error": message}` bodies, with Triton's status codes.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloak_proto::kserve::ErrorBody;

use crate::limits::Refusal;
use crate::metrics::Outcome;
use crate::service::{MODEL_VERSION, ServiceError};

/// An error on the wire: a status and a message, sent as `{"error": message}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: bool,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: false,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// How an inference request that ended with this error is counted.
    pub(crate) fn outcome(&self) -> Outcome {
        match self.status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Outcome::rejected,
            s if s.is_client_error() => Outcome::client_error,
            _ => Outcome::server_error,
        }
    }

    /// An answer to retry later (`Retry-After: 1`).
    fn retry_later(status: StatusCode, message: &str) -> Self {
        let mut e = Self::new(status, message);
        e.retry_after = true;
        e
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Engine(e) => {
                let status = if e.is_client_error() {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                Self::new(status, e.to_string())
            }
            ServiceError::Access {
                status,
                code,
                message,
            } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
                let message = format!("{code}: {message}");
                if status == StatusCode::TOO_MANY_REQUESTS {
                    Self::retry_later(status, &message)
                } else {
                    Self::new(status, message)
                }
            }
            ServiceError::AttestationBusy => Self::retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "attestation-busy: the server is producing as many attestations as it may; \
                 retry shortly",
            ),
            ServiceError::AttestationRateLimited => Self::retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "attestation-rate-limited: too many fresh attestations from this address; \
                 retry shortly",
            ),
            ServiceError::BodyBudgetSpent => Self::retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "inflight-bytes-exhausted: the server holds as many request bytes as it may; \
                 retry shortly",
            ),
            ServiceError::Evidence => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the platform could not produce evidence",
            ),
            ServiceError::ModelUnavailable { name, reason, code } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("model {name} is not available: {reason} ({code})"),
            ),
            ServiceError::NoSuchModel(name) => {
                Self::new(StatusCode::NOT_FOUND, format!("no model named {name}"))
            }
            ServiceError::NoSuchOutput { model, output } => {
                Self::bad_request(format!("model {model} has no output {output}"))
            }
            ServiceError::NoSuchVersion { name, version } => Self::new(
                StatusCode::NOT_FOUND,
                format!(
                    "model {name} has no version {version} (Cloak serves version {MODEL_VERSION})"
                ),
            ),
            ServiceError::Protocol(e) => {
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
                Self::new(status, e.to_string())
            }
            ServiceError::Receipt => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the receipt could not be signed",
            ),
            ServiceError::Refused(Refusal::QueueFull) => Self::retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "the server is at capacity; retry shortly",
            ),
            ServiceError::Refused(Refusal::TimedOut) => Self::retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "no inference worker became free in time; retry shortly",
            ),
            ServiceError::WorkerFailed => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the inference worker failed on this request",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = super::json(self.status, &ErrorBody::new(self.message));
        if self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
