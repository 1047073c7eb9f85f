//! `cloak proxy`: a local verifying proxy, so that any KServe v2 / Triton client (such as the
//! unmodified `tritonclient`) can use a Cloak server.
//!
//! The proxy appraises the upstream under the policy before it listens at all, then serves
//! plain KServe v2 on a loopback address and forwards each request over attested TLS or as an
//! encapsulated request (`--mode`). It checks every inference response's receipt against the
//! appraised claims and the exact request and response bodies, and passes it on in the
//! `Cloak-Receipt` header. When the upstream's identity changes (a restart, new models, new
//! collateral), the proxy appraises it again before forwarding anything more; a server the
//! policy now rejects gets 502 answers, not requests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use clap::{Args, ValueEnum};
use cloak_attest::policy::AppraisalPolicy;
use cloak_client::{Bytes, ClientError, HttpResponse, Mode, Remote, RemoteSession, Transport};
use cloak_proto::kserve::ErrorBody;
use cloak_proto::receipt::ReceiptError;
use tokio::sync::Mutex;

use crate::Reported;
use crate::attest::{PolicyArgs, build_policy};
use crate::failure::{EXIT_VERIFICATION, Failure};
use crate::remote::read_collateral;

/// The largest request body forwarded.
const MAX_BODY: usize = 256 << 20;
/// Idle upstream connections kept for reuse.
const POOL: usize = 64;

/// How the proxy reaches the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum ModeArg {
    /// Attested TLS to the server itself
    Atls,
    /// Encapsulated requests (Oblivious HTTP), through any proxy or load balancer
    Ohttp,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Atls => Self::AttestedTls,
            ModeArg::Ohttp => Self::Encapsulated,
        }
    }
}

/// Arguments of `cloak proxy`.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// The Cloak server, or the load balancer in front of it (https://host:port; http:// is
    /// accepted with --mode ohttp)
    #[arg(long, value_name = "URL")]
    upstream: String,
    /// Where to serve plain KServe v2 (a loopback address: the traffic is plaintext)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// How requests reach the enclave
    #[arg(long, value_enum, default_value = "atls")]
    mode: ModeArg,
    /// With --mode ohttp over https: trust these CA certificates (PEM) for the load balancer's
    /// TLS instead of the public Web PKI
    #[arg(long, value_name = "FILE.pem")]
    ca: Option<PathBuf>,
    /// Appraise with this collateral instead of the one the server relays
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// Appraise the upstream again after this long even if nothing changed (fresh collateral
    /// and TCB status)
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    reverify_every: Duration,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// Runs `cloak proxy` until interrupted.
pub(crate) fn run(args: &ProxyArgs) -> Result<(), Reported> {
    if !args.listen.ip().is_loopback() {
        return Err(Failure::usage(
            "invalid-argument",
            format!(
                "--listen {}: the proxy serves plaintext and listens on loopback addresses only",
                args.listen
            ),
        )
        .into());
    }
    let policy = build_policy(&args.policy)?;
    let collateral = read_collateral(args.collateral.as_ref())?;
    let transport = crate::remote::transport(args.ca.as_ref())?;
    crate::serve::init_logging(crate::serve::LogFormat::Text);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::usage("runtime", format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let upstream = Upstream {
            url: args.upstream.clone(),
            mode: args.mode.into(),
            policy,
            collateral,
            transport,
            reverify_every: args.reverify_every,
            current: Mutex::new(None),
            pool: std::sync::Mutex::new(Vec::new()),
        };
        // Nothing is served before the upstream is accepted.
        let remote = match upstream.appraise().await {
            Ok(remote) => remote,
            Err(e) if e.is_rejection() => {
                eprintln!("error: upstream REJECTED ({}): {e}", e.code());
                return Err(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)));
            }
            Err(e) => return Err(Failure::usage(e.code(), e.to_string()).into()),
        };
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| {
                Failure::usage("bind", format!("cannot listen on {}: {e}", args.listen))
            })?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::usage("bind", e.to_string()))?;
        tracing::info!(
            upstream = %args.upstream,
            mode = ?args.mode,
            mrenclave = %mrenclave(remote.server()),
            "upstream accepted"
        );
        say!(
            "proxy listening on http://{local} (upstream {} accepted)",
            args.upstream
        )?;
        let app = Router::new()
            .fallback(forward)
            .with_state(Arc::new(upstream));
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::serve::shutdown_signal())
            .await
            .map_err(|e| Failure::usage("serve", e.to_string()))?;
        Ok(())
    })
}

/// The upstream, its current appraisal and idle connections.
struct Upstream {
    url: String,
    mode: Mode,
    policy: AppraisalPolicy,
    collateral: Option<cloak_attest::collateral::Collateral>,
    transport: Transport,
    reverify_every: Duration,
    current: Mutex<Option<(Arc<Remote>, Instant)>>,
    pool: std::sync::Mutex<Vec<(Arc<Remote>, RemoteSession)>>,
}

impl Upstream {
    /// Appraises the upstream now and makes it current; idle connections to an earlier
    /// appraisal are dropped.
    async fn appraise(&self) -> Result<Arc<Remote>, ClientError> {
        let mut current = self.current.lock().await;
        let remote = Arc::new(
            Remote::connect(
                &self.url,
                self.mode,
                self.policy.clone(),
                self.collateral.clone(),
                self.transport.clone(),
            )
            .await?,
        );
        *current = Some((Arc::clone(&remote), Instant::now()));
        self.pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        Ok(remote)
    }

    /// The current appraisal, renewed when it is older than `reverify_every`.
    async fn remote(&self) -> Result<Arc<Remote>, ClientError> {
        {
            let current = self.current.lock().await;
            if let Some((remote, since)) = current.as_ref()
                && since.elapsed() < self.reverify_every
            {
                return Ok(Arc::clone(remote));
            }
        }
        tracing::info!("re-appraising the upstream (periodic)");
        self.appraise().await
    }

    /// Whether `remote` is still the current appraisal.
    async fn is_current(&self, remote: &Arc<Remote>) -> bool {
        matches!(self.current.lock().await.as_ref(), Some((r, _)) if Arc::ptr_eq(r, remote))
    }

    /// An idle connection made under `remote`, or a new one.
    async fn session(&self, remote: &Arc<Remote>) -> Result<RemoteSession, ClientError> {
        let idle = {
            let mut pool = self
                .pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let found = pool.iter().rposition(|(r, _)| Arc::ptr_eq(r, remote));
            found.map(|i| pool.swap_remove(i).1)
        };
        match idle {
            Some(session) => Ok(session),
            None => remote.session().await,
        }
    }

    fn give_back(&self, remote: Arc<Remote>, session: RemoteSession) {
        let mut pool = self
            .pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < POOL {
            pool.push((remote, session));
        }
    }

    /// Sends one request, appraising the upstream again (once) when its identity changed.
    async fn exchange(
        &self,
        method: &Method,
        path: &str,
        body: &Bytes,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        let mut retried = false;
        loop {
            let remote = self.remote().await?;
            let attempt = self.attempt(&remote, method, path, body, header_len).await;
            match attempt {
                Err(e) if !retried && identity_changed(&e) => {
                    retried = true;
                    if self.is_current(&remote).await {
                        tracing::info!(
                            reason = e.code(),
                            "the upstream's identity changed; re-appraising"
                        );
                        self.appraise().await?;
                    }
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        remote: &Arc<Remote>,
        method: &Method,
        path: &str,
        body: &Bytes,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        let mut session = self.session(remote).await?;
        // Attested TLS appraises each new connection: one whose claims differ from the
        // appraisal's (new models, a restarted server) means the identity changed.
        if session.server().claims().evidence_digest() != remote.server().claims().evidence_digest()
        {
            return Err(ClientError::Stale(
                "a new connection presented other claims".into(),
            ));
        }
        let mut response = send(&mut session, method, path, body, header_len).await;
        if let Err(ClientError::Io(_)) = &response {
            // An idle connection the server closed: one new connection, once.
            session = remote.session().await?;
            response = send(&mut session, method, path, body, header_len).await;
        }
        let response = response?;
        self.give_back(Arc::clone(remote), session);
        Ok(response)
    }
}

/// Sends one request on `session`. An inference goes through
/// [`RemoteSession::send_inference`], so its receipt is verified (against the request's digest,
/// computed while it is in flight) before the answer goes back to the local client.
async fn send(
    session: &mut RemoteSession,
    method: &Method,
    path: &str,
    body: &Bytes,
    header_len: Option<usize>,
) -> Result<HttpResponse, ClientError> {
    if *method == Method::POST && path.ends_with("/infer") {
        let (response, _receipt) = session
            .send_inference(path, body.clone(), header_len)
            .await?;
        Ok(response)
    } else {
        session
            .send(method.clone(), path, body.clone(), header_len)
            .await
    }
}

/// Errors after which the upstream is appraised again before giving up.
fn identity_changed(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Stale(_) | ClientError::Receipt(ReceiptError::Evidence)
    )
}

fn mrenclave(server: &cloak_client::VerifiedServer) -> String {
    serde_json::to_value(server.measurements())
        .ok()
        .and_then(|v| {
            v.get("mrenclave")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "-".to_owned())
}

async fn forward(
    State(upstream): State<Arc<Upstream>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if !(path == "/v2" || path.starts_with("/v2/") || path.starts_with("/v2?")) {
        return error(
            StatusCode::NOT_FOUND,
            "the proxy forwards the KServe v2 API (/v2) only",
        );
    }
    let header_len = match headers.get(cloak_proto::kserve::HEADER_CONTENT_LENGTH) {
        None => None,
        Some(value) => match value.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(len) => Some(len),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "Inference-Header-Content-Length is not a byte count",
                );
            }
        },
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the proxy's {MAX_BODY}-byte limit"),
        );
    };
    match upstream.exchange(&method, &path, &body, header_len).await {
        Ok(response) => {
            let mut out = Response::builder().status(response.status.as_u16());
            let content_type = match response.header_len {
                Some(_) => cloak_proto::kserve::CONTENT_TYPE_BINARY,
                None => cloak_proto::kserve::CONTENT_TYPE_JSON,
            };
            out = out.header(header::CONTENT_TYPE, content_type);
            if let Some(len) = response.header_len {
                out = out.header(cloak_proto::kserve::HEADER_CONTENT_LENGTH, len);
            }
            if let Some(receipt) = response
                .receipt
                .as_deref()
                .and_then(|r| HeaderValue::from_str(r).ok())
            {
                out = out.header(cloak_proto::receipt::HEADER, receipt);
            }
            if let Some(retry) = response
                .retry_after
                .as_deref()
                .and_then(|r| HeaderValue::from_str(r).ok())
            {
                out = out.header(header::RETRY_AFTER, retry);
            }
            out.body(Body::from(response.body))
                .unwrap_or_else(|_| error(StatusCode::BAD_GATEWAY, "unusable upstream response"))
        }
        Err(e) => {
            tracing::warn!(reason = e.code(), "request not forwarded");
            let message = if e.is_rejection() {
                format!(
                    "the upstream is not accepted by the proxy's policy ({}): {e}",
                    e.code()
                )
            } else {
                format!("the upstream could not be reached ({}): {e}", e.code())
            };
            error(StatusCode::BAD_GATEWAY, message)
        }
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::to_vec(&ErrorBody::new(message.into())).unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, cloak_proto::kserve::CONTENT_TYPE_JSON)],
        body,
    )
        .into_response()
}
