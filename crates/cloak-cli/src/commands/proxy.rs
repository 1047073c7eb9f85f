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

/// Whether the request comes from a program on this machine addressing the proxy by a loopback
/// name: its `Host` is `localhost` or a loopback address, and an `Origin`, if any, is too. A
/// web page that rebinds its own name to 127.0.0.1 sends its own name in both, and is refused.
fn local_caller(headers: &HeaderMap) -> Result<(), String> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or("a request without a Host header")?;
    if !loopback_authority(host) {
        return Err(format!("Host {host:?} is not a loopback name"));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        if !authority.is_some_and(loopback_authority) {
            return Err(format!("Origin {origin:?} is not this machine"));
        }
    }
    Ok(())
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A path without a query, percent-encoding, empty or dot segments.
fn plain_path(uri: &Uri) -> bool {
    let path = uri.path();
    uri.query().is_none()
        && !path.contains('%')
        && path
            .split('/')
            .skip(1)
            .all(|segment| !segment.is_empty() && segment != "." && segment != "..")
}

/// Whether `path` (plain) is a KServe inference.
fn is_inference(path: &str) -> bool {
    path.ends_with("/infer")
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
    if let Err(message) = local_caller(&headers) {
        tracing::warn!("request refused: {message}");
        return error(StatusCode::FORBIDDEN, message);
    }
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if !(path == "/v2" || path.starts_with("/v2/") || path.starts_with("/v2?")) {
        return error(
            StatusCode::NOT_FOUND,
            "the proxy forwards the KServe v2 API (/v2) only",
        );
    }
    // A POST is forwarded only in a spelling whose meaning is plain, so that every inference is
    // recognised as one and its receipt checked: no query, no encoded or dot segments.
    if method == Method::POST && !plain_path(&uri) {
        return error(
            StatusCode::BAD_REQUEST,
            "the proxy forwards POST requests without query strings, percent-encoding or dot \
             segments",
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
    let exchange = if method == Method::POST && is_inference(uri.path()) {
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
            if let Some(salt) = &response.receipt_salt {
                out = out.header(cloak_proto::receipt::SALT_HEADER, hex::encode(salt));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn only_loopback_names_and_origins_are_served() {
        for host in [
            "localhost:8000",
            "127.0.0.1:8000",
            "[::1]:8000",
            "LOCALHOST",
            "127.1.2.3",
        ] {
            assert!(local_caller(&headers(&[("host", host)])).is_ok(), "{host}");
        }
        for host in [
            "evil.example:8000",
            "evil.example",
            "10.0.0.1:8000",
            "localhost.evil.example",
        ] {
            assert!(local_caller(&headers(&[("host", host)])).is_err(), "{host}");
        }
        assert!(local_caller(&HeaderMap::new()).is_err());
        let ok = headers(&[
            ("host", "localhost:8000"),
            ("origin", "http://localhost:8000"),
        ]);
        assert!(local_caller(&ok).is_ok());
        for origin in [
            "https://evil.example",
            "null",
            "http://localhost.evil.example",
        ] {
            let page = headers(&[("host", "localhost:8000"), ("origin", origin)]);
            assert!(local_caller(&page).is_err(), "{origin}");
        }
    }

    #[test]
    fn only_plain_paths_are_posted() {
        let plain = |text: &str| plain_path(&text.parse::<Uri>().unwrap());
        assert!(plain("/v2/models/demo/infer"));
        for bent in [
            "/v2/models/demo/infer?x=1",
            "/v2/models/demo/infer?",
            "/v2/models/demo/%69nfer",
            "/v2/models//demo/infer",
            "/v2/models/demo/./infer",
            "/v2/models/x/../demo/infer",
            "/v2/models/demo/infer/",
        ] {
            assert!(!plain(bent), "{bent}");
        }
    }
}
