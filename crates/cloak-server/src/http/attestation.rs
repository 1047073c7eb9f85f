//! `GET /v1/attestation?nonce=HEX`: fresh evidence over the identity claims and the client's
//! nonce, with the collateral relayed.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use cloak_proto::attestation::MAX_NONCE_LEN;

use super::error::ApiError;
use crate::service::Service;

pub(super) async fn fresh(
    State(service): State<Arc<Service>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let nonce = nonce(query.as_deref())?;
    let document = service.attest(nonce).await?;
    Ok(super::json(StatusCode::OK, &document))
}

/// The `nonce` query parameter: 1 to [`MAX_NONCE_LEN`] bytes of hex.
fn nonce(query: Option<&str>) -> Result<Vec<u8>, ApiError> {
    let value = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("nonce="))
        .ok_or_else(|| ApiError::bad_request("give a fresh nonce: /v1/attestation?nonce=HEX"))?;
    let nonce = hex::decode(value).map_err(|_| ApiError::bad_request("the nonce must be hex"))?;
    if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN {
        return Err(ApiError::bad_request(format!(
            "the nonce must be 1 to {MAX_NONCE_LEN} bytes"
        )));
    }
    Ok(nonce)
}
