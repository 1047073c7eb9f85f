//! Encrypted requests: `POST /v1/ohttp`, an Oblivious HTTP gateway (RFC 9458) in front of the
//! KServe v2 API.
//!
//! The client encapsulates a whole KServe request as Binary HTTP (RFC 9292) to the HPKE key
//! configuration in the server's attested claims and posts it as `message/ohttp-req`. Only the
//! enclave holds the private key: a TLS-terminating load balancer or proxy in between sees the
//! ciphertext and its length, nothing else. The gateway decapsulates, hands the inner request to
//! the same KServe handlers as a direct request (so limits, errors, metrics and receipts are
//! identical), and encapsulates the whole inner response — status, headers (receipt included)
//! and body — as `message/ohttp-res`, always with outer status 200.
//!
//! Each inner request carries its time and a random id (`cloak_proto::freshness`); the gateway
//! runs it only if the time is within a minute of the server's clock and the id is new, so a
//! captured request replayed by a relay runs at most once.
//!
//! Outer errors, answered in the clear with the usual `{"error": ...}` body, carry no request
//! content: 415 for another media type, 413 for a body over the limit, 400 with a stable
//! code (`ohttp-malformed`, `ohttp-key`, `ohttp-decrypt`, `bhttp-malformed`) when the
//! encapsulation or the inner message is not usable, 400 `request-freshness-missing`,
//! `request-stale` or `request-replayed` for a request without its time and id, outside the
//! window, or seen before, and 503 `replay-cache-full` when the replay cache is full. `ohttp-key` and `ohttp-decrypt` tell a
//! client that its key configuration is stale (the server restarted, or its fleet's key
//! generation was retired): it must appraise the server again. A fleet replica without its
//! fleet's key yet answers 503 `fleet-key-pending` (Retry-After: 1) for requests sealed to
//! another key than its own, so a balancer passes them on.
//!
//! In a fleet the answering replica may not be the one the client appraised: the inner answer
//! names the evidence its receipt names (`Cloak-Evidence`) and, unless that is the evidence the
//! client appraised or one it lists in `Cloak-Known-Evidence`, carries this replica's
//! attestation of it (`Cloak-Attestation`, JSON, no nonce) for the client to appraise.

use std::io::Cursor;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Buf;
use cloak_crypto::ohttp::{OhttpError, REQUEST_MEDIA_TYPE, RESPONSE_MEDIA_TYPE};
use cloak_crypto::secret::{SecretBuf, SecretBytes};
use cloak_proto::freshness;
use http_body_util::{BodyExt, Limited};
use tower::ServiceExt;

use super::error::ApiError;
use crate::identity::DecapsulateError;
use crate::service::{ReplayRefusal, Service};

/// Bytes an encapsulation adds around the BHTTP request (header, `enc`, AEAD tag), plus the
/// BHTTP framing allowed around a body of the request limit.
const OVERHEAD: usize = 64 * 1024;
/// Inner request headers passed to the KServe handlers; the rest are dropped. Names are
/// lower case, as Binary HTTP carries them.
const FORWARDED: [&str; 6] = [
    "authorization",
    "content-type",
    "content-encoding",
    "inference-header-content-length",
    cloak_proto::receipt::SALT_HEADER,
    cloak_proto::receipt::DIGEST_HEADER,
];
/// Inner response headers returned to the client.
const RETURNED: [&str; 7] = [
    "content-type",
    "retry-after",
    "inference-header-content-length",
    cloak_proto::receipt::HEADER,
    cloak_proto::receipt::REQUEST_ID_HEADER,
    cloak_proto::receipt::SALT_HEADER,
    cloak_proto::receipt::EVIDENCE_HEADER,
];

/// The gateway's state: the service, and the KServe routes that inner requests are sent to.
#[derive(Clone)]
struct Gateway {
    service: Arc<Service>,
    inner: Router,
}

/// The `/v1/ohttp` route, dispatching decapsulated requests to `inner` (the KServe routes).
pub(super) fn router(service: Arc<Service>, inner: Router) -> Router {
    Router::new()
        .route("/v1/ohttp", axum::routing::post(handle))
        .with_state(Gateway { service, inner })
}

async fn handle(State(gateway): State<Gateway>, headers: HeaderMap, body: Body) -> Response {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    if media_type != Some(REQUEST_MEDIA_TYPE) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("/v1/ohttp takes {REQUEST_MEDIA_TYPE}"),
        );
    }
    let limit = gateway
        .service
        .limits()
        .max_request_bytes
        .saturating_add(OVERHEAD);
    // The reservation covers the inner request too, which the KServe handler is told
    // (`Reserved`): its plaintext replaces the ciphertext, about the same size.
    let _reservation = match super::kserve::reserve(&gateway.service, &headers, limit) {
        Ok(reservation) => reservation,
        Err(e) => return e.into_response(),
    };
    // Received into memory that is wiped when dropped: it is decrypted where it lies.
    let Ok(mut encapsulated) = collect_wiped(body, limit).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the encapsulated request is larger than the server's {limit}-byte limit, or was cut off"
            ),
        );
    };
    let service = Arc::clone(&gateway.service);
    let opened = gateway
        .service
        .prepare(encapsulated.len(), move || {
            let opened = service.identity().decapsulate(&mut encapsulated);
            (opened, encapsulated)
        })
        .await;
    let (range, responder, opened) = match opened {
        Ok((Ok((range, responder)), opened)) => (range, responder, opened),
        Ok((Err(DecapsulateError::Ohttp(e)), _)) => return refuse_ohttp(&e),
        Ok((Err(DecapsulateError::FleetKeyPending), _)) => {
            let mut response = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "fleet-key-pending: this replica does not hold its fleet's key yet; another \
                 replica can answer"
                    .to_owned(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let parsed = opened
        .get(range)
        .ok_or_else(|| "not a request".to_owned())
        .and_then(inner_request);
    let (mut request, freshness, known) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("bhttp-malformed: {message}"),
            );
        }
    };
    drop(opened);
    let Some((time, id)) = freshness else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "request-freshness-missing: an encapsulated request carries {} and {} inside \
                 its encryption",
                freshness::TIME_HEADER,
                freshness::ID_HEADER
            ),
        );
    };
    if let Err(refusal) = gateway.service.admit_encapsulated(time, id) {
        return refuse_replay(refusal);
    }
    request.extensions_mut().insert(super::kserve::Reserved);
    let response = match gateway.inner.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    // A client that appraised another replica (or these claims' predecessors) gets the
    // attestation of the claims the receipt names, unless it says it holds it.
    let identity = gateway.service.identity();
    let attestation = |named: &[u8; 32]| {
        (Some(*named) != known.accepted_under && !known.digests.contains(named))
            .then(|| identity.document(named))
            .flatten()
    };
    let limit = gateway.service.limits().max_request_bytes;
    let message = match inner_response(response, limit, attestation).await {
        Ok(message) => message,
        Err(message) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, message),
    };
    match responder.encapsulate(&message) {
        Ok(sealed) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, RESPONSE_MEDIA_TYPE)],
            sealed,
        )
            .into_response(),
        Err(e) => refuse_ohttp(&e),
    }
}

/// The request body, up to `limit` bytes, copied once into a buffer of exactly its length that
/// wipes its memory when it drops. The buffer is made only once the whole body has arrived (the
/// parts are held as received until then, as `axum::body::to_bytes` holds them): sized from a
/// declared `Content-Length` up front, a body cut off after its headers would have the server
/// allocate, and wipe, memory the client never filled.
async fn collect_wiped(body: Body, limit: usize) -> Result<SecretBytes, ()> {
    let mut received = Limited::new(body, limit)
        .collect()
        .await
        .map_err(drop)?
        .aggregate();
    let mut buffer = SecretBuf::with_capacity(received.remaining());
    while received.has_remaining() {
        let part = received.chunk();
        buffer.extend_from_slice(part);
        let len = part.len();
        received.advance(len);
    }
    Ok(buffer.into_secret())
}

/// The evidence an encapsulated request's client holds: the claims it appraised, and the other
/// replicas' it has appraised since.
#[derive(Debug, Default)]
struct Known {
    accepted_under: Option<[u8; 32]>,
    digests: Vec<[u8; 32]>,
}

/// The inner request as an HTTP request for the KServe router (which answers 404 for anything
/// outside KServe v2), with its freshness fields (time and id) when it has both, and the
/// evidence its client holds.
fn inner_request(bhttp: &[u8]) -> Result<(Request<Body>, Option<Freshness>, Known), String> {
    let message = bhttp::Message::read_bhttp(&mut Cursor::new(bhttp)).map_err(|e| e.to_string())?;
    let control = message.control();
    let (Some(method), Some(path)) = (control.method(), control.path()) else {
        return Err("not a request".into());
    };
    let method = Method::from_bytes(method).map_err(|_| "not an HTTP method".to_owned())?;
    let path = std::str::from_utf8(path).map_err(|_| "the path is not UTF-8".to_owned())?;
    if !path.starts_with('/') {
        return Err("the path is not absolute".into());
    }
    let mut builder = Request::builder().method(method).uri(path);
    let (mut time, mut id, mut accepted_under) = (None, None, None);
    let mut known = Vec::new();
    for field in message.header().fields() {
        let Ok(name) = HeaderName::from_bytes(field.name()) else {
            return Err("a header name is not valid".into());
        };
        if name.as_str() == freshness::TIME_HEADER {
            time = Some(
                freshness::parse_time(field.value())
                    .ok_or_else(|| format!("{name} is not Unix seconds"))?,
            );
        } else if name.as_str() == cloak_proto::receipt::EVIDENCE_HEADER {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(field.value(), &mut digest)
                .map_err(|_| format!("{name} is not 64 hex digits"))?;
            accepted_under = Some(digest);
        } else if name.as_str() == cloak_proto::receipt::KNOWN_EVIDENCE_HEADER {
            let list =
                std::str::from_utf8(field.value()).map_err(|_| format!("{name} is not text"))?;
            for item in list.split(',').filter(|item| !item.trim().is_empty()) {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(item.trim(), &mut digest)
                    .map_err(|_| format!("{name} lists something other than 64 hex digits"))?;
                if known.len() >= cloak_proto::receipt::MAX_KNOWN_EVIDENCE {
                    return Err(format!(
                        "{name} lists more than {} digests",
                        cloak_proto::receipt::MAX_KNOWN_EVIDENCE
                    ));
                }
                known.push(digest);
            }
        } else if name.as_str() == freshness::ID_HEADER {
            id = Some(
                freshness::parse_id(field.value())
                    .ok_or_else(|| format!("{name} is not 32 lowercase hex digits"))?,
            );
        } else if FORWARDED.contains(&name.as_str()) {
            let value = HeaderValue::from_bytes(field.value())
                .map_err(|_| format!("header {name} is not valid"))?;
            builder = builder.header(name, value);
        }
    }
    let mut request = builder
        .body(Body::from(axum::body::Bytes::from_owner(Content(message))))
        .map_err(|_| "not a valid request".to_owned())?;
    // The claims the client appraised; the receipt names them if this process attested them.
    if let Some(digest) = accepted_under {
        request
            .extensions_mut()
            .insert(super::kserve::AcceptedUnder(digest));
    }
    let known = Known {
        accepted_under,
        digests: known,
    };
    Ok((request, time.zip(id), known))
}

/// An encapsulated request's time (Unix seconds) and random id.
type Freshness = (u64, [u8; freshness::ID_LEN]);

fn refuse_replay(refusal: ReplayRefusal) -> Response {
    tracing::debug!(?refusal, "encapsulated request refused");
    match refusal {
        ReplayRefusal::Stale => refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "request-stale: the request's time is more than {} s from the server's clock \
                 (check the client's clock)",
                freshness::WINDOW_SECONDS
            ),
        ),
        ReplayRefusal::Replayed => refuse(
            StatusCode::BAD_REQUEST,
            "request-replayed: this encapsulated request was received before".to_owned(),
        ),
        ReplayRefusal::Full => {
            let mut response = refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "replay-cache-full: too many encapsulated requests in the last two minutes"
                    .to_owned(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// A decoded inner request whose content becomes the router's request body as it is, without
/// a copy.
struct Content(bhttp::Message);

impl AsRef<[u8]> for Content {
    fn as_ref(&self) -> &[u8] {
        self.0.content()
    }
}

/// The KServe router's answer as a known-length BHTTP response, with `attestation(evidence)`
/// when its receipt names `evidence` and that gives a document.
async fn inner_response(
    response: Response,
    limit: usize,
    attestation: impl FnOnce(&[u8; 32]) -> Option<Arc<str>>,
) -> Result<Vec<u8>, String> {
    let (parts, body) = response.into_parts();
    let status = bhttp::StatusCode::try_from(parts.status.as_u16())
        .map_err(|_| "the inner status is not encodable".to_owned())?;
    let mut message = bhttp::Message::response(status);
    for name in RETURNED {
        if let Some(value) = parts.headers.get(name) {
            message.put_header(name, value.as_bytes());
        }
    }
    let named = parts
        .headers
        .get(cloak_proto::receipt::EVIDENCE_HEADER)
        .and_then(|value| {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(value.as_bytes(), &mut digest).ok()?;
            Some(digest)
        });
    if let Some(document) = named.as_ref().and_then(attestation) {
        message.put_header(
            cloak_proto::receipt::ATTESTATION_HEADER,
            document.as_bytes(),
        );
    }
    // Responses are bounded by what the engine may produce; the request limit is generous for
    // them, and the encapsulation keeps them whole.
    let body = axum::body::to_bytes(body, limit.saturating_mul(4))
        .await
        .map_err(|_| "the inner response is too large to encapsulate".to_owned())?;
    message.write_content(&body);
    let mut out = Vec::with_capacity(body.len().saturating_add(256));
    message
        .write_bhttp(bhttp::Mode::KnownLength, &mut out)
        .map_err(|_| "the inner response could not be encoded".to_owned())?;
    Ok(out)
}

fn refuse_ohttp(e: &OhttpError) -> Response {
    tracing::debug!(code = e.code(), "encapsulated request refused");
    refuse(StatusCode::BAD_REQUEST, format!("{}: {e}", e.code()))
}

fn refuse(status: StatusCode, message: String) -> Response {
    ApiError::new(status, message).into_response()
}
