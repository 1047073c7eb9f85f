//! HTTP/1.1 over TCP or TLS: endpoints, connections and one request-response exchange, with
//! bounded connect time, exchange time and response size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{Error, TransportError, TransportErrorKind};

/// How long connecting (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request may take, response included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// The largest response body read.
const MAX_RESPONSE_BYTES: usize = 256 << 20;

/// An HTTP method Cloak's protocol uses.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }

    fn to_hyper(self) -> hyper::Method {
        match self {
            Self::Get => hyper::Method::GET,
            Self::Post => hyper::Method::POST,
        }
    }
}

/// A response: status, the KServe header length (when binary tensors follow the JSON), the
/// receipt (on a successful inference) and the body.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// `Inference-Header-Content-Length`, when present.
    pub header_len: Option<usize>,
    /// The `Cloak-Receipt` header, when present (every successful inference).
    pub receipt: Option<String>,
    /// The `Cloak-Receipt-Salt` header, when present and well-formed: the salt of the
    /// receipt's digests, to keep with it.
    pub receipt_salt: Option<cloak_proto::receipt::Salt>,
    /// The `Retry-After` header, when present.
    pub retry_after: Option<String>,
    /// Encapsulated answers: the evidence digest the receipt names (`Cloak-Evidence`), and
    /// the answering replica's attestation when the client may not hold it
    /// (`Cloak-Attestation`, JSON).
    pub(crate) peer: PeerEvidence,
    /// The body.
    pub body: Vec<u8>,
}

/// What an encapsulated answer says about the server that answered it.
#[derive(Clone, Debug, Default)]
pub(crate) struct PeerEvidence {
    pub(crate) evidence: Option<[u8; 32]>,
    pub(crate) attestation: Option<String>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The attestation of the fleet replica that answered an encapsulated request, when it was
    /// not the appraised server and sent its attestation (the receipt was checked against it):
    /// keep it with the receipt to check the receipt offline.
    pub fn answering_attestation(&self) -> Option<cloak_proto::attestation::AttestationDocument> {
        let text = self.peer.attestation.as_deref()?;
        serde_json::from_str(text).ok()
    }
}

/// Where a server is: `host:port` of an `https://` (or, for encapsulated requests, `http://`)
/// URL.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) authority: String,
    pub(crate) secure: bool,
}

impl Endpoint {
    /// An `https://` or `http://` URL.
    pub(crate) fn parse(url: &str) -> Result<Self, Error> {
        let uri: Uri = url
            .parse()
            .map_err(|e| Error::Config(format!("{url}: {e}")))?;
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(Error::Config(format!(
                    "{url}: use an https:// or http:// URL"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| Error::Config(format!("{url}: no host")))?
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

/// One HTTP/1.1 connection.
pub(crate) type Connection = SendRequest<Full<Bytes>>;

pub(crate) async fn tcp_stream(endpoint: &Endpoint) -> Result<TcpStream, Error> {
    let connecting = async {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Connect,
                    format!("connect to {}: {e}", endpoint.authority),
                )
            })?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| timed_out(endpoint))?
}

pub(crate) async fn tls_stream(
    endpoint: &Endpoint,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let connecting = async {
        let tcp = tcp_stream(endpoint).await?;
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|e| Error::Config(format!("{}: {e}", endpoint.host)))?;
        TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| {
                Error::from(TransportError::new(
                    TransportErrorKind::Tls,
                    format!("TLS with {}: {e}", endpoint.authority),
                ))
            })
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| timed_out(endpoint))?
}

fn timed_out(endpoint: &Endpoint) -> TransportError {
    TransportError::new(
        TransportErrorKind::Timeout,
        format!("connecting to {} timed out", endpoint.authority),
    )
}

pub(crate) async fn http1<S>(stream: S) -> Result<Connection, Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(exchange_failed)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends `method path` with `body` on `connection`, with the content type Cloak's protocol
/// gives it (JSON, or binary tensors after `header_len` bytes of JSON).
pub(crate) async fn request(
    connection: &mut Connection,
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    body: Bytes,
    header_len: Option<usize>,
    extras: Extras<'_>,
) -> Result<Response, Error> {
    let content_type = match (body.is_empty(), header_len) {
        (true, _) => None,
        (false, Some(_)) => Some(cloak_proto::kserve::CONTENT_TYPE_BINARY),
        (false, None) => Some(cloak_proto::kserve::CONTENT_TYPE_JSON),
    };
    let mut request = build_request(
        &endpoint.authority,
        method,
        path,
        content_type,
        header_len,
        body,
    )?;
    for (name, value) in extras.headers() {
        if let Ok(value) = hyper::header::HeaderValue::from_str(&value) {
            request.headers_mut().insert(name, value);
        }
    }
    exchange(connection, request).await
}

/// What a request carries besides its body: the receipt salt, and the model owner's access
/// token (both inside attested TLS or the encapsulation).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Extras<'a> {
    pub(crate) salt: Option<&'a cloak_proto::receipt::Salt>,
    /// The receipt digest asked for ([`cloak_proto::receipt::DIGEST_HEADER`]).
    pub(crate) receipt_digest: Option<&'static str>,
    pub(crate) token: Option<&'a str>,
}

impl Extras<'_> {
    /// The header fields they make.
    pub(crate) fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some(salt) = self.salt {
            headers.push((cloak_proto::receipt::SALT_HEADER, hex::encode(salt)));
        }
        if let Some(name) = self.receipt_digest {
            headers.push((cloak_proto::receipt::DIGEST_HEADER, name.to_owned()));
        }
        if let Some(token) = self.token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        headers
    }
}

/// A request with the headers Cloak's protocol uses.
pub(crate) fn build_request(
    authority: &str,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    header_len: Option<usize>,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, Error> {
    let mut builder = Request::builder()
        .method(method.to_hyper())
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
        .map_err(|e| Error::Config(format!("{path}: {e}")))
}

/// Sends `request` on `connection` and reads the whole response.
pub(crate) async fn exchange(
    connection: &mut Connection,
    request: Request<Full<Bytes>>,
) -> Result<Response, Error> {
    let exchange = async {
        connection.ready().await.map_err(exchange_failed)?;
        let response = connection
            .send_request(request)
            .await
            .map_err(exchange_failed)?;
        let status = response.status().as_u16();
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
        let receipt_salt = header(cloak_proto::receipt::SALT_HEADER)
            .and_then(|v| cloak_proto::receipt::parse_salt(v.as_bytes()));
        let retry_after = header("retry-after");
        let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Exchange,
                    format!("reading the response: {e}"),
                )
            })?
            .to_bytes()
            .to_vec();
        Ok(Response {
            peer: PeerEvidence::default(),
            status,
            header_len,
            receipt,
            receipt_salt,
            retry_after,
            body,
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| TransportError::new(TransportErrorKind::Timeout, "the request timed out"))?
}

fn exchange_failed(error: hyper::Error) -> Error {
    TransportError::new(TransportErrorKind::Exchange, error.to_string()).into()
}
