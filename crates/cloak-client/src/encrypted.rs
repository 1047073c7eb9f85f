//! Encrypted requests: KServe v2 over Oblivious HTTP (RFC 9458), through transports that need
//! no trust.
//!
//! Where a TLS-terminating load balancer or an untrusted proxy stands between the client and
//! the enclave, the client cannot appraise the enclave's TLS certificate: it sees the proxy's.
//! [`EncryptedClient::bootstrap`] instead fetches a fresh attestation for a random nonce over
//! whatever transport there is (`http://` or `https://`), appraises it with the policy, and
//! takes the HPKE key configuration and the receipt key from the attested claims. Each request
//! is then encapsulated to that key as Binary HTTP and posted to `/v1/ohttp`; only the enclave
//! can open it, and only the client can open the answer. The transport's own TLS (if any) is
//! verified as usual against [`Transport`]'s roots, but nothing depends on it.
//!
//! ```no_run
//! # async fn example() -> Result<(), cloak_client::ClientError> {
//! use cloak_attest::policy::AppraisalPolicy;
//! use cloak_client::{EncryptedClient, Transport};
//! let client = EncryptedClient::bootstrap(
//!     "https://lb.example", AppraisalPolicy::strict(), None, Transport::default()).await?;
//! let body = br#"{"inputs":[]}"#.to_vec();
//! let response = client.post("/v2/models/resnet/infer", body.clone(), None).await?;
//! let receipt = response.verify_receipt(client.server().claims(), &body)?;
//! # Ok(()) }
//! ```

use std::io::Cursor;
use std::sync::Arc;

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_crypto::ohttp::{self, AeadId, KeyConfig};
use cloak_proto::attestation::AttestationDocument;
use hyper::{Method, StatusCode};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::{
    Bytes, ClientError, Connection, Endpoint, HttpResponse, VerifiedServer,
    appraise_fresh_attestation, build_request, exchange, fetch_attestation, http1, tcp_stream,
    unix_now,
};

/// The path encapsulated requests are posted to.
pub const PATH: &str = "/v1/ohttp";

/// How the client reaches the server: which certificate authorities an `https://` transport
/// (a load balancer) is checked against, the public Web PKI by default. A Cloak server's own
/// attested certificate is accepted too, so a client can also talk to the server directly. The
/// transport's TLS protects metadata only; the requests are encapsulated to the enclave either
/// way.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    roots: Option<Vec<CertificateDer<'static>>>,
}

impl Transport {
    /// Trust only the certificate authorities in `pem` (instead of the public Web PKI).
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self, ClientError> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Url(format!("CA certificates: {e}")))?;
        if roots.is_empty() {
            return Err(ClientError::Url("no certificate in the CA file".into()));
        }
        Ok(Self { roots: Some(roots) })
    }

    /// Trust only `roots` (DER certificates).
    pub fn with_roots(roots: Vec<CertificateDer<'static>>) -> Self {
        Self { roots: Some(roots) }
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let mut store = rustls::RootCertStore::empty();
        match &self.roots {
            Some(roots) => {
                for root in roots {
                    store
                        .add(root.clone())
                        .map_err(|e| ClientError::Url(format!("CA certificate: {e}")))?;
                }
            }
            None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        crate::tls::transport_config(store)
    }
}

/// A client that sends encapsulated requests to one appraised server.
#[derive(Clone, Debug)]
pub struct EncryptedClient {
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    server: VerifiedServer,
    key_config: KeyConfig,
    attestation: AttestationDocument,
}

impl EncryptedClient {
    /// Appraises the server behind `url` from a fresh attestation (nonce chosen here), with
    /// `collateral` or else the collateral the server relays.
    pub async fn bootstrap(
        url: &str,
        policy: AppraisalPolicy,
        collateral: Option<Collateral>,
        transport: Transport,
    ) -> Result<Self, ClientError> {
        let endpoint = Endpoint::parse_any(url)?;
        let tls = endpoint
            .secure
            .then(|| transport.tls_config())
            .transpose()?;
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce).map_err(|e| ClientError::Io(e.to_string()))?;
        let mut connection = open(&endpoint, tls.as_ref()).await?;
        let attestation = fetch_attestation(&mut connection, &endpoint, &nonce).await?;
        let collateral = match collateral {
            Some(collateral) => collateral,
            None => {
                let json = attestation.collateral_json().ok_or_else(|| {
                    ClientError::Protocol(
                        "the server relays no collateral; pass it explicitly".into(),
                    )
                })?;
                Collateral::from_json(json)
                    .map_err(|e| ClientError::Protocol(format!("relayed collateral: {e}")))?
            }
        };
        let server =
            appraise_fresh_attestation(&attestation, &collateral, &policy, &nonce, unix_now())?;
        let key_config = KeyConfig::parse(&server.claims().hpke_key_config).map_err(|e| {
            ClientError::Protocol(format!("the attested HPKE key configuration: {e}"))
        })?;
        if !key_config.aeads.contains(&AeadId::Aes256Gcm) {
            return Err(ClientError::Protocol(
                "the attested HPKE key configuration does not offer AES-256-GCM".into(),
            ));
        }
        Ok(Self {
            endpoint,
            tls,
            server,
            key_config,
            attestation,
        })
    }

    /// The appraised server (from its fresh attestation).
    pub fn server(&self) -> &VerifiedServer {
        &self.server
    }

    /// The fresh attestation the server was appraised from.
    pub fn attestation(&self) -> &AttestationDocument {
        &self.attestation
    }

    /// Sends an encapsulated `GET path` on a new connection.
    pub async fn get(&self, path: &str) -> Result<HttpResponse, ClientError> {
        self.session().await?.get(path).await
    }

    /// Sends an encapsulated `POST path` with `body` on a new connection; `header_len` is the
    /// KServe binary extension's `Inference-Header-Content-Length`.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        self.session().await?.post(path, body, header_len).await
    }

    /// Opens one transport connection for many encapsulated requests (HTTP/1.1 keep-alive).
    pub async fn session(&self) -> Result<EncryptedSession, ClientError> {
        Ok(EncryptedSession {
            connection: open(&self.endpoint, self.tls.as_ref()).await?,
            client: self.clone(),
        })
    }
}

/// One transport connection carrying encapsulated requests.
#[derive(Debug)]
pub struct EncryptedSession {
    connection: Connection,
    client: EncryptedClient,
}

impl EncryptedSession {
    /// The appraised server.
    pub fn server(&self) -> &VerifiedServer {
        &self.client.server
    }

    /// Sends an encapsulated `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<HttpResponse, ClientError> {
        self.send(Method::GET, path, Vec::new(), None).await
    }

    /// Sends an encapsulated `POST path` with `body`.
    pub async fn post(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        self.send(Method::POST, path, body, header_len).await
    }

    /// Encapsulates `method path` with `body`, posts it, and opens the answer.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        let inner = inner_request(
            &self.client.endpoint.authority,
            &method,
            path,
            &body.into(),
            header_len,
        )?;
        let (encapsulated, opener) =
            ohttp::encapsulate_request(&self.client.key_config, AeadId::Aes256Gcm, &inner)
                .map_err(|e| ClientError::Protocol(format!("encapsulation: {e}")))?;
        drop(inner);
        let request = build_request(
            &self.client.endpoint.authority,
            Method::POST,
            PATH,
            Some(ohttp::REQUEST_MEDIA_TYPE),
            None,
            encapsulated.into(),
        )?;
        let outer = exchange(&mut self.connection, request).await?;
        if outer.status != StatusCode::OK {
            let message = String::from_utf8_lossy(&outer.body).into_owned();
            // The server could not open the request: the key it was sealed to is gone.
            if outer.status == StatusCode::BAD_REQUEST
                && (message.contains("ohttp-key") || message.contains("ohttp-decrypt"))
            {
                return Err(ClientError::Stale(message));
            }
            return Err(ClientError::Server(outer.status.as_u16(), message));
        }
        let opened = opener
            .decapsulate(&outer.body)
            .map_err(|e| ClientError::Protocol(format!("the encapsulated response: {e}")))?;
        inner_response(&opened)
    }
}

/// The transport connection: plain TCP or the transport's (non-attested) TLS.
async fn open(
    endpoint: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Connection, ClientError> {
    match tls {
        Some(config) => http1(crate::tls_stream(endpoint, Arc::clone(config)).await?).await,
        None => http1(tcp_stream(endpoint).await?).await,
    }
}

fn inner_request(
    authority: &str,
    method: &Method,
    path: &str,
    body: &[u8],
    header_len: Option<usize>,
) -> Result<Vec<u8>, ClientError> {
    let mut message = bhttp::Message::request(
        method.as_str().as_bytes().to_vec(),
        b"https".to_vec(),
        authority.as_bytes().to_vec(),
        path.as_bytes().to_vec(),
    );
    if !body.is_empty() {
        message.put_header(
            "content-type",
            if header_len.is_some() {
                cloak_proto::kserve::CONTENT_TYPE_BINARY
            } else {
                cloak_proto::kserve::CONTENT_TYPE_JSON
            },
        );
    }
    if let Some(len) = header_len {
        message.put_header("inference-header-content-length", len.to_string());
    }
    message.write_content(body);
    let mut out = Vec::with_capacity(body.len().saturating_add(256));
    message
        .write_bhttp(bhttp::Mode::KnownLength, &mut out)
        .map_err(|e| ClientError::Protocol(format!("binary HTTP: {e}")))?;
    Ok(out)
}

fn inner_response(bhttp: &[u8]) -> Result<HttpResponse, ClientError> {
    let message = bhttp::Message::read_bhttp(&mut Cursor::new(bhttp))
        .map_err(|e| ClientError::Protocol(format!("the inner response: {e}")))?;
    let status = message
        .control()
        .status()
        .and_then(|s| StatusCode::from_u16(s.code()).ok())
        .ok_or_else(|| ClientError::Protocol("the inner response has no status".into()))?;
    let header = |name: &str| {
        message
            .header()
            .get(name.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    Ok(HttpResponse {
        status,
        header_len: header("inference-header-content-length").and_then(|v| v.parse().ok()),
        receipt: header(cloak_proto::receipt::HEADER),
        retry_after: header("retry-after"),
        body: message.content().to_vec(),
    })
}
