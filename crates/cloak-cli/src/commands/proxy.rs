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
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use clap::Args;
use cloak_client::{Appraisal, Client};
use cloak_proto::kserve::ErrorBody;

use crate::Reported;
use crate::args::{ServerArgs, parse_duration};
use crate::failure::{EXIT_VERIFICATION, Failure};
use crate::{files, report};

/// The largest request body forwarded.
const MAX_BODY: usize = 256 << 20;

/// Arguments of `cloak proxy`.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Where to serve plain KServe v2 (a loopback address: the traffic is plaintext)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Appraise the upstream again after this long even if nothing changed (fresh collateral
    /// and TCB status); 30s, 5m, or plain seconds
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    reverify_every: Duration,
}

/// The proxy's state: the appraised upstream, and where its current attestation is kept.
#[derive(Clone)]
struct Proxy {
    upstream: Client,
    attestation_out: Option<Arc<AttestationOut>>,
}

/// `--attestation-out`: the attestation in force, rewritten when the upstream is appraised
/// again, so receipts passed on can always be checked offline against it.
struct AttestationOut {
    path: PathBuf,
    written: Mutex<Option<Arc<Appraisal>>>,
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
    let builder = args.server.client()?.reappraise_every(args.reverify_every);
    let upstream_url = args.server.url();
    crate::runtime::init_logging(crate::runtime::LogFormat::Text);
    let runtime = crate::runtime::multi_thread()?;
    runtime.block_on(async {
        // Nothing is served before the upstream is accepted.
        let client = match builder.connect(upstream_url).await {
            Ok(client) => client,
            Err(e) if e.is_rejection() => {
                eprintln!("error: upstream REJECTED ({}): {e}", e.code());
                return Err(Reported(std::process::ExitCode::from(EXIT_VERIFICATION)));
            }
            Err(e) => return Err(Failure::usage(e.code(), e.to_string()).into()),
        };
        let proxy = Proxy {
            attestation_out: args.server.attestation_out().map(|path| {
                Arc::new(AttestationOut {
                    path: path.clone(),
                    written: Mutex::new(None),
                })
            }),
            upstream: client,
        };
        proxy.keep_attestation()?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| {
                Failure::usage("bind", format!("cannot listen on {}: {e}", args.listen))
            })?;
        let local = listener
            .local_addr()
            .map_err(|e| Failure::usage("bind", e.to_string()))?;
        tracing::info!(
            upstream = %upstream_url,
            mode = ?args.server.mode(),
            mrenclave = %report::measurement(proxy.upstream.appraisal().server(), "mrenclave"),
            "upstream accepted"
        );
        say!("proxy listening on http://{local} (upstream {upstream_url} accepted)")?;
        let app = Router::new().fallback(forward).with_state(proxy);
        axum::serve(listener, app)
            .with_graceful_shutdown(crate::runtime::shutdown_signal())
            .await
            .map_err(|e| Failure::usage("serve", e.to_string()))?;
        Ok(())
    })
}

impl Proxy {
    /// Writes the attestation in force to `--attestation-out` if it is not the one written.
    fn keep_attestation(&self) -> Result<(), Failure> {
        let Some(out) = &self.attestation_out else {
            return Ok(());
        };
        let appraisal = self.upstream.appraisal();
        let mut written = out.written.lock().unwrap_or_else(PoisonError::into_inner);
        if written
            .as_ref()
            .is_some_and(|done| Arc::ptr_eq(done, &appraisal))
        {
            return Ok(());
        }
        let json = files::to_json(appraisal.attestation())?;
        files::write_replacing(&out.path, &json, "attestation")?;
        *written = Some(appraisal);
        Ok(())
    }
}

/// Forwards one request. An inference goes through [`Client::send_inference`], so its receipt
/// is verified (against the request's digest, computed while it is in flight) before the answer
/// goes back to the local client; the client appraises the upstream again when its identity
/// changes.
async fn forward(
    State(proxy): State<Proxy>,
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
    let upstream = &proxy.upstream;
    let exchange = if method == Method::POST && path.ends_with("/infer") {
        upstream
            .send_inference(&path, body, header_len)
            .await
            .map(|(response, _receipt)| response)
    } else if method == Method::POST {
        upstream
            .send(cloak_client::Method::Post, &path, body, header_len)
            .await
    } else if method == Method::GET {
        upstream
            .send(cloak_client::Method::Get, &path, body, header_len)
            .await
    } else {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the KServe v2 API takes GET and POST only",
        );
    };
    if let Err(e) = proxy.keep_attestation() {
        tracing::warn!(error = %e, "the attestation could not be saved");
    }
    match exchange {
        Ok(response) => {
            let mut out = Response::builder().status(response.status);
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
