//! The broker over HTTP: an axum router that extracts, calls the [`Broker`] on a blocking
//! thread and maps the result, and a server loop for plain TCP (loopback only, enforced by the
//! CLI) or TLS 1.2/1.3 with the aws-lc-rs provider.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use cloak_proto::kbs::fleet::AddFleetRequest;
use cloak_proto::kbs::{
    AddModelRequest, ChallengeRequest, ErrorBody, ReleaseRequest, SetPolicyRequest,
};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::Deserialize;
use tokio::net::TcpListener;

pub use cloak_net::ConnectionLimits;

use crate::broker::AuditPage;
use crate::{Broker, BrokerError};

/// Largest request body (a quote and its collateral are a few tens of KiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default sustained rate of challenge and release requests per client address.
pub const DEFAULT_RATE_PER_SECOND: u32 = 10;
/// Default burst of challenge and release requests per client address.
pub const DEFAULT_RATE_BURST: u32 = 20;

/// Forget idle rate-limit entries after this many checks.
const RETAIN_EVERY: u64 = 4096;

/// Per-client-address limits on `/kbs/v1/challenge` and `/kbs/v1/release` together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed in a burst.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// [`DEFAULT_RATE_PER_SECOND`] per second, bursts of [`DEFAULT_RATE_BURST`].
    pub fn new() -> Self {
        Self {
            per_second: NonZeroU32::new(DEFAULT_RATE_PER_SECOND).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(DEFAULT_RATE_BURST).unwrap_or(NonZeroU32::MIN),
        }
    }
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether plain HTTP may be served on `addr`: only on loopback addresses.
pub fn plain_http_allowed(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

struct AppState {
    broker: Arc<Broker>,
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    checks: AtomicU64,
    /// Admin calls refused for their token, per address, in the current window.
    admin_failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Admin calls with a missing or wrong token one address may make per window; past that, its
/// admin calls get 429 before the token is checked, until the window ends.
const ADMIN_FAILURES_PER_WINDOW: u32 = 10;
/// The admin-failure window.
const ADMIN_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked for admin failures before ended windows are swept.
const ADMIN_FAILURE_SWEEP: usize = 4096;

impl AppState {
    /// `Some(seconds to wait)` when `ip` has used up its admin failures for the window.
    fn admin_blocked(&self, ip: IpAddr) -> Option<u64> {
        let failures = self
            .admin_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (since, count) = failures.get(&ip)?;
        let left = ADMIN_FAILURE_WINDOW.checked_sub(since.elapsed())?;
        if *count < ADMIN_FAILURES_PER_WINDOW {
            return None;
        }
        tracing::debug!(%ip, "admin calls blocked after repeated token failures");
        Some(left.as_secs().saturating_add(1))
    }

    /// Counts an admin call from `ip` refused for its token.
    fn admin_failed(&self, ip: IpAddr) {
        let mut failures = self
            .admin_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= ADMIN_FAILURE_SWEEP {
            failures.retain(|_, (since, _)| since.elapsed() < ADMIN_FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= ADMIN_FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// `Some(429 response)` when `ip` is over its rate.
    fn limit(&self, ip: IpAddr) -> Option<Response> {
        if self
            .checks
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(RETAIN_EVERY)
        {
            self.limiter.retain_recent();
        }
        let not_until = self.limiter.check_key(&ip).err()?;
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        let seconds = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0));
        tracing::debug!(%ip, "rate limited");
        Some(too_many(
            "too many requests from this address; retry later",
            seconds.max(1),
        ))
    }
}

/// 429 `rate-limited` with `Retry-After: seconds`.
fn too_many(message: &str, seconds: u64) -> Response {
    let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "rate-limited", message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// Every route's per-address rate, checked before the request's body is read.
async fn rate_limited(
    State(state): State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
        && let Some(refused) = state.limit(peer.ip())
    {
        return refused;
    }
    next.run(request).await
}

/// The broker's routes (see the crate README).
pub fn router(broker: Arc<Broker>, rate: RateLimit) -> Router {
    let state = Arc::new(AppState {
        broker,
        limiter: DefaultKeyedRateLimiter::keyed(
            Quota::per_second(rate.per_second).allow_burst(rate.burst),
        ),
        checks: AtomicU64::new(0),
        admin_failures: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/kbs/v1/challenge", post(challenge))
        .route("/kbs/v1/release", post(release))
        .route(
            "/kbs/v1/admin/models/{name}",
            put(add_model).delete(remove_model),
        )
        .route("/kbs/v1/admin/models/{name}/policy", put(set_policy))
        .route("/kbs/v1/fleets/{name}", get(fleet_status))
        .route(
            "/kbs/v1/admin/fleets/{name}",
            put(add_fleet).delete(remove_fleet),
        )
        .route("/kbs/v1/admin/fleets/{name}/rotate", post(rotate_fleet))
        .route("/kbs/v1/admin/fleets/{name}/policy", put(set_fleet_policy))
        .route("/kbs/v1/admin/audit", get(audit))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            rate_limited,
        ))
        .with_state(state)
}

async fn challenge(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    attestation_step(
        &state,
        peer,
        &body,
        |broker, request: ChallengeRequest, _| broker.challenge(&request),
    )
    .await
}

async fn release(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    attestation_step(
        &state,
        peer,
        &body,
        |broker, request: ReleaseRequest, peer| broker.release(&request, peer),
    )
    .await
}

/// A step of the attestation protocol from `peer` (rate-limited per address before its body
/// was read): the JSON body parsed, then the broker's work on the blocking pool.
async fn attestation_step<Req, Resp>(
    state: &AppState,
    peer: SocketAddr,
    body: &[u8],
    step: impl FnOnce(&Broker, Req, &str) -> Result<Resp, BrokerError> + Send + 'static,
) -> Response
where
    Req: serde::de::DeserializeOwned + Send + 'static,
    Resp: serde::Serialize + Send + 'static,
{
    let request: Req = match parse(body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    let broker = Arc::clone(&state.broker);
    respond(blocking(move || step(&broker, request, &peer.to_string())).await)
}

async fn add_model(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse::<AddModelRequest>(&body);
    let added = admin(&state, peer, &headers, move |broker, token, peer| {
        broker.add_model(token, peer, &name, parsed.map_err(|ApiError(e)| e)?)
    });
    respond_empty(added.await, StatusCode::CREATED)
}

async fn set_policy(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse::<SetPolicyRequest>(&body);
    let set = admin(&state, peer, &headers, move |broker, token, peer| {
        broker.set_policy(token, peer, &name, &parsed.map_err(|ApiError(e)| e)?)
    });
    respond_empty(set.await, StatusCode::NO_CONTENT)
}

async fn remove_model(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let removed = admin(&state, peer, &headers, move |broker, token, peer| {
        broker.remove_model(token, peer, &name)
    });
    respond_empty(removed.await, StatusCode::NO_CONTENT)
}

async fn fleet_status(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    let broker = Arc::clone(&state.broker);
    respond(blocking(move || broker.fleet_status(&name)).await)
}

async fn add_fleet(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse::<AddFleetRequest>(&body);
    let added = admin(&state, peer, &headers, move |broker, token, peer| {
        broker.add_fleet(token, peer, &name, &parsed.map_err(|ApiError(e)| e)?)
    });
    match added.await {
        Ok(status) => (StatusCode::CREATED, Json(status)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn rotate_fleet(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let rotated = admin(&state, peer, &headers, move |broker, token, peer| {
        broker.rotate_fleet(token, peer, &name)
    });
    respond(rotated.await)
}

async fn set_fleet_policy(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = parse::<SetPolicyRequest>(&body);
    let set = admin(&state, peer, &headers, move |broker, token, peer| {
        broker.set_fleet_policy(token, peer, &name, &parsed.map_err(|ApiError(e)| e)?)
    });
    respond_empty(set.await, StatusCode::NO_CONTENT)
}

async fn remove_fleet(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let removed = admin(&state, peer, &headers, move |broker, token, peer| {
        broker.remove_fleet(token, peer, &name)
    });
    respond_empty(removed.await, StatusCode::NO_CONTENT)
}

/// The query of `GET /kbs/v1/admin/audit`: `verify`, and the page (`after`, `limit`).
#[derive(Debug, Deserialize)]
struct AuditQuery {
    verify: Option<bool>,
    after: Option<u64>,
    limit: Option<u64>,
}

/// Records per audit page when the query names no limit.
const DEFAULT_AUDIT_PAGE: u64 = 1000;

async fn audit(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<AuditQuery>,
    headers: HeaderMap,
) -> Response {
    let page = AuditPage {
        after: query.after.unwrap_or(0),
        limit: query.limit.unwrap_or(DEFAULT_AUDIT_PAGE),
        verify: query.verify.unwrap_or(false),
    };
    let records = admin(&state, peer, &headers, move |broker, token, peer| {
        broker.audit(token, peer, page)
    });
    respond(records.await)
}

/// Runs an admin operation on the blocking pool, with the request's bearer token (if any) and
/// the caller's address for the audit log; the broker checks the token.
async fn admin<T: Send + 'static>(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    operation: impl FnOnce(&Broker, Option<&str>, &str) -> Result<T, BrokerError> + Send + 'static,
) -> Result<T, ApiError> {
    let token = bearer(headers);
    if let Some(retry_after) = state.admin_blocked(peer.ip()) {
        // The address is cut off for wrong tokens, not the administrator: a right token still
        // goes through; a wrong one is refused here, like any request over its rate, with no
        // record of its own (the address's refusals that started the block are on record).
        let broker = Arc::clone(&state.broker);
        let presented = token.clone();
        let valid =
            blocking(move || Ok(broker.token_is_valid(presented.as_ref().map(|t| t.as_str()))))
                .await
                .unwrap_or(false);
        if !valid {
            return Err(ApiError(BrokerError::RateLimited { retry_after }));
        }
    }
    let broker = Arc::clone(&state.broker);
    let result = blocking(move || {
        operation(
            &broker,
            token.as_ref().map(|t| t.as_str()),
            &peer.to_string(),
        )
    })
    .await;
    if let Err(ApiError(BrokerError::Unauthorized)) = &result {
        state.admin_failed(peer.ip());
    }
    result
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not-found", "no such route")
}

/// The bearer token of an `Authorization` header, if any.
fn bearer(headers: &HeaderMap) -> Option<zeroize::Zeroizing<String>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| zeroize::Zeroizing::new(token.trim().to_owned()))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(BrokerError::MalformedRequest(format!(
            "invalid JSON body: {e}"
        )))
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BrokerError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(ApiError),
        Err(e) => {
            tracing::error!(error = %e, "broker task failed");
            Err(ApiError(BrokerError::Io("internal failure".into())))
        }
    }
}

fn respond<T: serde::Serialize>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

fn respond_empty(result: Result<(), ApiError>, status: StatusCode) -> Response {
    match result {
        Ok(()) => status.into_response(),
        Err(e) => e.into_response(),
    }
}

/// The one mapping from broker errors to HTTP. Refusal details (which measurement, expected
/// values) stay in the broker's log and audit; the caller gets the stable code.
struct ApiError(BrokerError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let code = error.code();
        let (status, message) = match &error {
            BrokerError::Denied { .. } => (
                StatusCode::FORBIDDEN,
                format!("key release refused ({code})"),
            ),
            BrokerError::Unauthorized => (StatusCode::UNAUTHORIZED, error.to_string()),
            BrokerError::RateLimited { retry_after } => {
                return too_many(&error.to_string(), (*retry_after).max(1));
            }
            BrokerError::UnknownModel => (StatusCode::NOT_FOUND, error.to_string()),
            BrokerError::ModelExists | BrokerError::FleetConflict(_) => {
                (StatusCode::CONFLICT, error.to_string())
            }
            BrokerError::UnknownFleet => (StatusCode::NOT_FOUND, error.to_string()),
            BrokerError::InvalidKey(_)
            | BrokerError::InvalidModelName
            | BrokerError::InvalidPolicy(_)
            | BrokerError::MalformedRequest(_)
            | BrokerError::PolicyPinsNoIdentity => (StatusCode::BAD_REQUEST, error.to_string()),
            _ => {
                tracing::error!(code, error = %error, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("internal error ({code})"),
                )
            }
        };
        let mut response = error_response(status, code, &message);
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code.to_owned(),
            message: message.to_owned(),
        }),
    )
        .into_response()
}

/// Reads a PEM certificate chain and private key and builds a TLS 1.2/1.3 server
/// configuration on the aws-lc-rs provider, offering HTTP/2 and HTTP/1.1.
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, BrokerError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BrokerError::Tls(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(BrokerError::Tls("no certificate in the PEM file".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| BrokerError::Tls(format!("private key PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| BrokerError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` on `listener` — over TLS when `tls` is set — within `limits` (connection
/// caps, handshake and idle deadlines, a minimum body rate: `cloak-net`'s, shared with the
/// inference server) until `shutdown` completes; then stops accepting, lets open connections
/// finish their requests and returns. Handlers see the peer address as
/// `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send,
) {
    let stats = Arc::new(cloak_net::ConnectionStats::new());
    cloak_net::serve(listener, tls, router, limits, stats, shutdown).await;
}
