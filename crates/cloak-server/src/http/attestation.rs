//! `GET /v1/attestation?nonce=HEX`: fresh evidence over the identity claims and the client's
//! nonce, with the collateral relayed. Rate-limited per client address (429), coalesced (requests
//! that arrive while the platform quotes share the next quote, whose claims list every nonce),
//! and bounded in waiting requests (503): evidence is the most expensive thing an
//! unauthenticated client can ask for, and on SGX hardware quoting is serialised.

use std::sync::Arc;

use std::net::{IpAddr, SocketAddr};

use axum::Extension;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use cloak_proto::attestation::MAX_NONCE_LEN;

use super::error::ApiError;
use crate::service::Service;

pub(super) async fn fresh(
    State(service): State<Arc<Service>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let nonce = nonce(query.as_deref())?;
    // Without a connection (the router driven in-process), all callers are one.
    let client = peer.map_or(
        IpAddr::from([0, 0, 0, 0]),
        |Extension(ConnectInfo(addr))| addr.ip(),
    );
    let document = service.attest(client, nonce).await?;
    Ok(super::json(StatusCode::OK, document.as_ref()))
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
