//! Cloak's client side: appraise a server before sending it anything, then talk KServe v2 to
//! it over attested TLS or with encrypted (Oblivious HTTP) requests, and check the signed
//! receipt of every answer.
//!
//! Two ways to reach an enclave, one policy type ([`AppraisalPolicy`]) for both:
//!
//! - **Attested TLS** ([`Client`]): a Cloak server's TLS certificate carries its attestation
//!   evidence. [`AttestedTls`] builds a rustls client configuration whose certificate verifier
//!   appraises that evidence with the attestation verifier and the policy during the handshake,
//!   so no request byte leaves the client unless the policy accepts the enclave. Appraisal needs
//!   the quote's collateral; [`Client::bootstrap`] obtains it from the server's fresh
//!   attestation (`GET /v1/attestation?nonce=`) over a connection on which nothing but a random
//!   nonce is sent, verifies that attestation (fresh, from the same server instance, accepted by
//!   the policy) and returns a [`Client`] that opens fully attested connections.
//! - **Encrypted requests** ([`EncryptedClient`], module [`encrypted`]): for a path through a
//!   TLS-terminating load balancer or any untrusted proxy. The client appraises a fresh
//!   attestation and encapsulates each request to the HPKE key its claims carry; the transport
//!   sees ciphertext.
//!
//! [`Remote`] is either, chosen by [`Mode`]. Every successful inference answer carries a
//! receipt; [`HttpResponse::verify_receipt`] checks it against the appraised claims and the
//! exact request and response bodies. [`RemoteSession::infer`] and
//! [`RemoteSession::send_inference`] do that for you, hashing the request body while it is in
//! flight rather than after the answer.
//!
//! ```no_run
//! # async fn example() -> Result<(), cloak_client::ClientError> {
//! use cloak_attest::policy::AppraisalPolicy;
//! use cloak_client::{Method, Mode, Remote, Transport};
//! use cloak_proto::kserve::{InferRequest, NamedTensor};
//! use cloak_proto::tensor::Tensor;
//! let remote = Remote::connect(
//!     "https://enclave.example:8443",
//!     Mode::Encapsulated,
//!     AppraisalPolicy::strict(),
//!     None,
//!     Transport::default(),
//! )
//! .await?;
//! println!("models: {:?}", remote.server().claims().models);
//! let mut session = remote.session().await?;
//! // KServe v2 types in and out; the receipt is verified before the answer is returned.
//! let input = Tensor::from_values(vec![1, 4], &[0.5f32, -1.0, 2.0, 0.25]).expect("shape");
//! let request = InferRequest::new(vec![NamedTensor::new("features", input)]);
//! let answer = session.infer("resnet", &request).await?;
//! println!("{:?} (request {})", answer.response.outputs(), answer.receipt.request_id);
//! // Or raw bodies: the receipt of a success is verified (`None` for a refusal)...
//! let body = br#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1],"data":[1.0]}]}"#.to_vec();
//! let (response, receipt) = session
//!     .send_inference("/v2/models/resnet/infer", body.clone(), None)
//!     .await?;
//! // ...or checked by hand.
//! let response = session.send(Method::POST, "/v2/models/resnet/infer", body.clone(), None).await?;
//! let receipt = response.verify_receipt(session.server().claims(), &body)?;
//! # Ok(()) }
//! ```

pub mod appraise;
pub mod encrypted;
mod remote;
mod tls;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_proto::attestation::AttestationDocument;
use cloak_proto::identity::{ClaimsError, IdentityClaims};
use cloak_proto::receipt::{Receipt, ReceiptError};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

pub use appraise::{
    VerifiedServer, appraise_attestation, appraise_certificate, appraise_fresh_attestation,
    appraise_recorded_attestation,
};
pub use encrypted::{EncryptedClient, EncryptedSession, Transport};
pub use hyper::Method;
pub use hyper::body::Bytes;
pub use remote::{Inference, Mode, Remote, RemoteSession};
pub use tls::AttestedTls;

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take, response included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest response body read.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// A client for one Cloak server, holding the policy and the collateral that its connections
/// are appraised with.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
    tls: AttestedTls,
    server: VerifiedServer,
    attestation: Option<AttestationDocument>,
}

impl Client {
    /// Appraises the server at `url` (`https://host:port`).
    ///
    /// With `collateral`, the first connection is already fully attested. Without, a first
    /// connection whose certificate must bind its key to *some* quote fetches a fresh
    /// attestation for a random nonce (the only bytes sent before appraisal), whose relayed
    /// collateral then appraises both the attestation and the certificate.
    pub async fn bootstrap(
        url: &str,
        policy: AppraisalPolicy,
        collateral: Option<Collateral>,
    ) -> Result<Self, ClientError> {
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| ClientError::Io(e.to_string()))?;
        Self::bootstrap_with_nonce(url, policy, collateral, &nonce).await
    }

    /// [`Client::bootstrap`] with a nonce of the caller's choosing (1 to 64 bytes), for
    /// callers that record it.
    pub async fn bootstrap_with_nonce(
        url: &str,
        policy: AppraisalPolicy,
        collateral: Option<Collateral>,
        nonce: &[u8],
    ) -> Result<Self, ClientError> {
        if nonce.is_empty() || nonce.len() > cloak_proto::attestation::MAX_NONCE_LEN {
            return Err(ClientError::Url(format!(
                "the nonce must be 1 to {} bytes",
                cloak_proto::attestation::MAX_NONCE_LEN
            )));
        }
        let endpoint = Endpoint::parse(url)?;
        let (collateral, document, server) = match collateral {
            Some(collateral) => {
                let tls = AttestedTls::new(policy.clone(), collateral.clone());
                let (mut connection, server) = connect(&endpoint, &tls).await?;
                let document = fetch_attestation(&mut connection, &endpoint, nonce).await?;
                let fresh = appraise_attestation(
                    &document,
                    &collateral,
                    &policy,
                    nonce,
                    &server.claims().tls_spki_sha256,
                    unix_now(),
                )?;
                (collateral, document, fresh)
            }
            None => {
                let probe = AttestedTls::probe();
                let (mut connection, certificate) = connect_probe(&endpoint, &probe).await?;
                let document = fetch_attestation(&mut connection, &endpoint, nonce).await?;
                let collateral_json = document.collateral_json().ok_or_else(|| {
                    ClientError::Protocol(
                        "the server relays no collateral; pass it explicitly".into(),
                    )
                })?;
                let collateral = Collateral::from_json(collateral_json)
                    .map_err(|e| ClientError::Protocol(format!("relayed collateral: {e}")))?;
                let now = unix_now();
                // The certificate of the connection the attestation came over, appraised in
                // full now that the collateral is known.
                let server = appraise_certificate(&certificate, &collateral, &policy, now)?;
                appraise_attestation(
                    &document,
                    &collateral,
                    &policy,
                    nonce,
                    &server.claims().tls_spki_sha256,
                    now,
                )?;
                (collateral, document, server)
            }
        };
        Ok(Self {
            endpoint,
            tls: AttestedTls::new(policy, collateral),
            server,
            attestation: Some(document),
        })
    }

    /// The appraised server (from its certificate).
    pub fn server(&self) -> &VerifiedServer {
        &self.server
    }

    /// The fresh attestation fetched while bootstrapping.
    pub fn attestation(&self) -> Option<&AttestationDocument> {
        self.attestation.as_ref()
    }

    /// Sends `GET path` on a new attested connection.
    pub async fn get(&self, path: &str) -> Result<HttpResponse, ClientError> {
        self.send(Method::GET, path, Vec::new(), None).await
    }

    /// Sends `POST path` with `body` on a new attested connection; `header_len` is the KServe
    /// binary extension's `Inference-Header-Content-Length`, if binary tensors follow the JSON.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        self.send(Method::POST, path, body, header_len).await
    }

    /// Opens one attested connection for many requests (HTTP/1.1 keep-alive): the handshake
    /// and the appraisal are paid once.
    ///
    /// Each connection is appraised in its own handshake; behind a load balancer it may reach
    /// another replica, which the policy must then accept as well ([`Session::server`] says
    /// which one it reached).
    pub async fn session(&self) -> Result<Session, ClientError> {
        let (connection, server) = connect(&self.endpoint, &self.tls).await?;
        Ok(Session {
            connection,
            endpoint: self.endpoint.clone(),
            server,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        self.session()
            .await?
            .send(method, path, body, header_len)
            .await
    }
}

/// One attested connection to a server, reused request after request.
#[derive(Debug)]
pub struct Session {
    connection: Connection,
    endpoint: Endpoint,
    server: VerifiedServer,
}

impl Session {
    /// The server this connection appraised and accepted.
    pub fn server(&self) -> &VerifiedServer {
        &self.server
    }

    /// Sends `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<HttpResponse, ClientError> {
        self.send(Method::GET, path, Vec::new(), None).await
    }

    /// Sends `POST path` with `body`; `header_len` as for [`Client::post`].
    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        self.send(Method::POST, path, body, header_len).await
    }

    /// Sends `method path` with `body` (`header_len` as for [`Client::post`]).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        request(
            &mut self.connection,
            &self.endpoint,
            method,
            path,
            body.into(),
            header_len,
        )
        .await
    }
}

/// A response: status, the KServe header length (if binary tensors follow), the receipt (on a
/// successful inference), and the body.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// `Inference-Header-Content-Length`, when present.
    pub header_len: Option<usize>,
    /// The `Cloak-Receipt` header, when present (every successful inference).
    pub receipt: Option<String>,
    /// The `Retry-After` header, when present.
    pub retry_after: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// Verifies this response's receipt against the appraised server's `claims` and the
    /// request body that was sent: signed by the attested receipt key, over the evidence and the
    /// model the claims state, for exactly this request and this response.
    pub fn verify_receipt(
        &self,
        claims: &IdentityClaims,
        request_body: &[u8],
    ) -> Result<Receipt, ClientError> {
        self.verify_receipt_for_digest(claims, &cloak_crypto::hash::sha256(request_body))
    }

    /// [`HttpResponse::verify_receipt`] for a request body whose SHA-256 the caller already has
    /// (computed while the request was in flight, as [`RemoteSession::send_inference`] does).
    pub fn verify_receipt_for_digest(
        &self,
        claims: &IdentityClaims,
        request_sha256: &[u8; 32],
    ) -> Result<Receipt, ClientError> {
        let text = self
            .receipt
            .as_deref()
            .ok_or(ClientError::Receipt(ReceiptError::Malformed(
                "the response carries no receipt".into(),
            )))?;
        let receipt = Receipt::verify(text, claims)?;
        receipt.check_request_digest(request_sha256)?;
        receipt.check_response(&self.body)?;
        Ok(receipt)
    }
}

/// `host:port` of an `https://` URL.
#[derive(Clone, Debug)]
struct Endpoint {
    host: String,
    port: u16,
    authority: String,
    secure: bool,
}

impl Endpoint {
    /// An `https://` URL (attested TLS).
    fn parse(url: &str) -> Result<Self, ClientError> {
        let endpoint = Self::parse_any(url)?;
        if !endpoint.secure {
            return Err(ClientError::Url(format!(
                "{url}: Cloak servers speak attested TLS; use an https:// URL"
            )));
        }
        Ok(endpoint)
    }

    /// An `https://` or `http://` URL.
    fn parse_any(url: &str) -> Result<Self, ClientError> {
        let uri: Uri = url
            .parse()
            .map_err(|e| ClientError::Url(format!("{url}: {e}")))?;
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(ClientError::Url(format!(
                    "{url}: use an https:// or http:// URL"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| ClientError::Url(format!("{url}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let authority = uri
            .authority()
            .map_or_else(|| host.clone(), ToString::to_string);
        Ok(Self {
            host,
            port,
            authority,
            secure,
        })
    }
}

type Connection = SendRequest<Full<Bytes>>;

async fn tcp_stream(endpoint: &Endpoint) -> Result<TcpStream, ClientError> {
    let connecting = async {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| ClientError::Io(format!("connect to {}: {e}", endpoint.authority)))?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| ClientError::Io(format!("connecting to {} timed out", endpoint.authority)))?
}

async fn tls_stream(
    endpoint: &Endpoint,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    let connecting = async {
        let tcp = tcp_stream(endpoint).await?;
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|e| ClientError::Url(format!("{}: {e}", endpoint.host)))?;
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Io(format!("TLS with {}: {e}", endpoint.authority)))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| ClientError::Io(format!("connecting to {} timed out", endpoint.authority)))?
}

async fn http1<S>(stream: S) -> Result<Connection, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Io(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A fully attested connection, and the server it appraised.
async fn connect(
    endpoint: &Endpoint,
    tls: &AttestedTls,
) -> Result<(Connection, VerifiedServer), ClientError> {
    let (config, verdict) = tls.config();
    let stream = tls_stream(endpoint, config).await;
    // The verifier's own error says why a handshake was refused; prefer it to rustls's summary.
    match (stream, verdict.take()) {
        (Ok(stream), Some(Ok(server))) => Ok((http1(stream).await?, server)),
        (_, Some(Err(refusal))) => Err(refusal),
        (Err(e), _) => Err(e),
        (Ok(_), None) => Err(ClientError::Certificate(
            "the handshake appraised no certificate".into(),
        )),
    }
}

/// A connection whose certificate binds its key to a quote not yet appraised; returns the
/// certificate too.
async fn connect_probe(
    endpoint: &Endpoint,
    probe: &AttestedTls,
) -> Result<(Connection, Vec<u8>), ClientError> {
    let (config, verdict) = probe.config();
    let stream = match (tls_stream(endpoint, config).await, verdict.take()) {
        (_, Some(Err(refusal))) => return Err(refusal),
        (stream, _) => stream?,
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .ok_or_else(|| ClientError::Certificate("the server sent no certificate".into()))?;
    Ok((http1(stream).await?, certificate))
}

async fn fetch_attestation(
    connection: &mut Connection,
    endpoint: &Endpoint,
    nonce: &[u8],
) -> Result<AttestationDocument, ClientError> {
    let path = format!("/v1/attestation?nonce={}", hex::encode(nonce));
    let response = request(connection, endpoint, Method::GET, &path, Bytes::new(), None).await?;
    if response.status != StatusCode::OK {
        return Err(ClientError::Server(
            response.status.as_u16(),
            String::from_utf8_lossy(&response.body).into_owned(),
        ));
    }
    serde_json::from_slice(&response.body)
        .map_err(|e| ClientError::Protocol(format!("attestation document: {e}")))
}

async fn request(
    connection: &mut Connection,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: Bytes,
    header_len: Option<usize>,
) -> Result<HttpResponse, ClientError> {
    let content_type = match (body.is_empty(), header_len) {
        (true, _) => None,
        (false, Some(_)) => Some(cloak_proto::kserve::CONTENT_TYPE_BINARY),
        (false, None) => Some(cloak_proto::kserve::CONTENT_TYPE_JSON),
    };
    let request = build_request(
        &endpoint.authority,
        method,
        path,
        content_type,
        header_len,
        body,
    )?;
    exchange(connection, request).await
}

/// A request with the headers Cloak's protocol uses.
fn build_request(
    authority: &str,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    header_len: Option<usize>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, ClientError> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority);
    if let Some(content_type) = content_type {
        builder = builder.header(hyper::header::CONTENT_TYPE, content_type);
    }
    if let Some(len) = header_len {
        builder = builder.header(cloak_proto::kserve::HEADER_CONTENT_LENGTH, len);
    }
    builder
        .body(Full::new(body))
        .map_err(|e| ClientError::Url(e.to_string()))
}

/// Sends `request` on `connection` and reads the whole response.
async fn exchange(
    connection: &mut Connection,
    request: Request<Full<Bytes>>,
) -> Result<HttpResponse, ClientError> {
    let exchange = async {
        connection
            .ready()
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let response = connection
            .send_request(request)
            .await
            .map_err(|e| ClientError::Io(e.to_string()))?;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let header_len =
            header(cloak_proto::kserve::HEADER_CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let receipt = header(cloak_proto::receipt::HEADER);
        let retry_after = header("retry-after");
        let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::Io(format!("reading the response: {e}")))?
            .to_bytes()
            .to_vec();
        Ok(HttpResponse {
            status,
            header_len,
            receipt,
            retry_after,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Io("the request timed out".into()))?
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a server was not accepted or could not be reached.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The quote does not bind the claims or the TLS key, or answers another nonce.
    #[error("attestation binding: {0}")]
    Binding(String),
    /// The certificate carries no usable evidence.
    #[error("server certificate: {0}")]
    Certificate(String),
    /// The identity claims do not parse.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// Connecting or exchanging bytes failed.
    #[error("{0}")]
    Io(String),
    /// The policy rejected the verified quote (code, message).
    #[error("policy rejected the server ({0}): {1}")]
    Policy(&'static str, String),
    /// The server answered something that is not Cloak's protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The quote did not verify (code, message).
    #[error("attestation rejected ({0}): {1}")]
    Quote(&'static str, String),
    /// A response's receipt did not verify.
    #[error("receipt: {0}")]
    Receipt(#[from] ReceiptError),
    /// The server no longer holds the key the request was encapsulated to (it restarted):
    /// appraise it again.
    #[error("the server's identity changed: {0}")]
    Stale(String),
    /// The server answered an error (status, body).
    #[error("the server answered {0}: {1}")]
    Server(u16, String),
    /// The URL is not usable.
    #[error("URL: {0}")]
    Url(String),
}

impl ClientError {
    /// A stable code: the attestation reason where there is one.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Binding(_) => "binding-broken",
            Self::Certificate(_) => "bad-certificate",
            Self::Claims(e) => e.code(),
            Self::Io(_) => "connection-failed",
            Self::Policy(code, _) | Self::Quote(code, _) => code,
            Self::Receipt(e) => e.code(),
            Self::Stale(_) => "server-identity-changed",
            Self::Protocol(_) => "protocol-error",
            Self::Server(..) => "server-error",
            Self::Url(_) => "invalid-url",
        }
    }

    /// Whether the server was refused on attestation grounds (as opposed to being unreachable
    /// or answering an error).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Self::Binding(_)
                | Self::Certificate(_)
                | Self::Claims(_)
                | Self::Policy(..)
                | Self::Quote(..)
                | Self::Receipt(_)
        )
    }
}
