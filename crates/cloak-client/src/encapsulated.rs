//! Encrypted requests: KServe v2 over Oblivious HTTP (RFC 9458), through transports that need
//! no trust.
//!
//! Where a TLS-terminating load balancer or an untrusted proxy stands between the client and
//! the enclave, the client cannot appraise the enclave's TLS certificate: it sees the proxy's.
//! It fetches a fresh attestation for its nonce over whatever transport there is (`http://` or
//! `https://`) instead, appraises it with the policy, and takes the HPKE key configuration and
//! the receipt key from the attested claims. Each request is then encapsulated to that key as
//! Binary HTTP and posted to `/v1/ohttp`; only the enclave can open it, and only the client can
//! open the answer. The transport's own TLS (if any) is verified against [`Transport`]'s roots,
//! but nothing depends on it.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_crypto::ohttp::{self, AeadId, KeyConfig};
use cloak_proto::freshness;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use cloak_proto::receipt::ReceiptError;

use crate::appraise::{VerifiedServer, appraise_fresh_attestation};
use crate::attested::{fetch_attestation, relayed_collateral};
use crate::error::{Error, ServerStatus};
use crate::http::{self, Connection, Endpoint, Method, Response};
use crate::{Appraisal, Route, unix_now};

/// The path encapsulated requests are posted to.
const PATH: &str = "/v1/ohttp";

/// How the client reaches a server for encapsulated requests: which certificate authorities an
/// `https://` transport (a load balancer) is checked against — the public Web PKI by default. A
/// Cloak server's own attested certificate is accepted too, so a client can also talk to the
/// server directly. The transport's TLS protects metadata only; the requests are encapsulated
/// to the enclave either way.
#[derive(Clone, Debug, Default)]
pub struct Transport {
    roots: Option<Vec<CertificateDer<'static>>>,
}

impl Transport {
    /// Trust only the certificate authorities in `pem` (instead of the public Web PKI).
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self, Error> {
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("CA certificates: {e}")))?;
        if roots.is_empty() {
            return Err(Error::Config("no certificate in the CA file".into()));
        }
        Ok(Self { roots: Some(roots) })
    }

    /// Trust only these certificate authorities (DER certificates).
    pub fn with_ca_der(roots: impl IntoIterator<Item = Vec<u8>>) -> Self {
        Self {
            roots: Some(roots.into_iter().map(CertificateDer::from).collect()),
        }
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, Error> {
        let mut store = rustls::RootCertStore::empty();
        match &self.roots {
            Some(roots) => {
                for root in roots {
                    store
                        .add(root.clone())
                        .map_err(|e| Error::Config(format!("CA certificate: {e}")))?;
                }
            }
            None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        crate::tls::transport_config(store)
    }
}

/// Appraises the server behind `endpoint` from a fresh attestation answering `nonce`, with
/// `collateral` or else the collateral the server relays.
pub(crate) async fn appraise(
    endpoint: Endpoint,
    policy: &AppraisalPolicy,
    collateral: Option<Collateral>,
    nonce: &[u8],
    transport: &Transport,
) -> Result<Appraisal, Error> {
    let tls = endpoint
        .secure
        .then(|| transport.tls_config())
        .transpose()?;
    let mut connection = open(&endpoint, tls.as_ref()).await?;
    let attestation = fetch_attestation(&mut connection, &endpoint, nonce).await?;
    let configured = collateral.clone();
    let collateral = match collateral {
        Some(collateral) => collateral,
        None => relayed_collateral(&attestation)?,
    };
    let server = appraise_fresh_attestation(&attestation, &collateral, policy, nonce, unix_now())?;
    let key_config = KeyConfig::parse(&server.claims().hpke_key_config)
        .map_err(|e| Error::Protocol(format!("the attested HPKE key configuration: {e}")))?;
    if !key_config.aeads.contains(&AeadId::Aes256Gcm) {
        return Err(Error::Protocol(
            "the attested HPKE key configuration does not offer AES-256-GCM".into(),
        ));
    }
    let peers = Peers::new(policy.clone(), configured, server.claims().fleet.clone());
    Ok(Appraisal {
        server,
        attestation,
        route: Route::Encapsulated {
            endpoint,
            tls,
            key_config,
            peers: Box::new(peers),
        },
    })
}

/// The transport connection: plain TCP or the transport's (non-attested) TLS.
pub(crate) async fn open(
    endpoint: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Connection, Error> {
    match tls {
        Some(config) => http::http1(http::tls_stream(endpoint, Arc::clone(config)).await?).await,
        None => http::http1(http::tcp_stream(endpoint).await?).await,
    }
}

/// Where an encapsulated request goes: the endpoint in front of the server, the attested key
/// configuration, and the evidence digest of the claims the client appraised.
pub(crate) struct Target<'a> {
    pub(crate) endpoint: &'a Endpoint,
    pub(crate) key_config: &'a KeyConfig,
    pub(crate) evidence: [u8; 32],
    /// Other replicas' evidence digests the client has appraised.
    pub(crate) known: Vec<[u8; 32]>,
}

/// Encapsulates `method path` with `body` to the target's key, posts it on `connection`, and
/// opens the answer.
pub(crate) async fn send(
    connection: &mut Connection,
    target: Target<'_>,
    method: Method,
    path: &str,
    body: &[u8],
    header_len: Option<usize>,
    extras: http::Extras<'_>,
) -> Result<Response, Error> {
    let inner = inner_request(&target, method, path, body, header_len, extras)?;
    let Target {
        endpoint,
        key_config,
        ..
    } = target;
    let (encapsulated, opener) = ohttp::encapsulate_buffer(key_config, AeadId::Aes256Gcm, inner)
        .map_err(|e| Error::Protocol(format!("encapsulation: {e}")))?;
    let request = http::build_request(
        &endpoint.authority,
        Method::Post,
        PATH,
        Some(ohttp::REQUEST_MEDIA_TYPE),
        None,
        Bytes::from(encapsulated),
    )?;
    let outer = http::exchange(connection, request).await?;
    if outer.status != 200 {
        let status = ServerStatus::from_body(outer.status, &outer.body, outer.retry_after);
        // The server could not open the request: the key it was sealed to is gone.
        if status.status == 400
            && (status.message.starts_with("ohttp-key")
                || status.message.starts_with("ohttp-decrypt"))
        {
            return Err(Error::IdentityChanged(status.message));
        }
        return Err(status.into());
    }
    let opened = opener
        .decapsulate(&outer.body)
        .map_err(|e| Error::Protocol(format!("the encapsulated response: {e}")))?;
    inner_response(&opened)
}

fn inner_request(
    target: &Target<'_>,
    method: Method,
    path: &str,
    body: &[u8],
    header_len: Option<usize>,
    extras: http::Extras<'_>,
) -> Result<ohttp::RequestBuffer, Error> {
    let mut message = bhttp::Message::request(
        method.as_str().as_bytes().to_vec(),
        b"https".to_vec(),
        target.endpoint.authority.as_bytes().to_vec(),
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
    // Inside the encryption: the server runs each request at most once (see
    // cloak_proto::freshness).
    let mut id = [0u8; freshness::ID_LEN];
    getrandom::fill(&mut id).map_err(|e| Error::Config(format!("random request id: {e}")))?;
    message.put_header(freshness::TIME_HEADER, unix_now().to_string());
    message.put_header(freshness::ID_HEADER, freshness::format_id(&id));
    // The claims this client appraised: its receipt names them while the server stands by them.
    message.put_header(
        cloak_proto::receipt::EVIDENCE_HEADER,
        hex::encode(target.evidence),
    );
    if !target.known.is_empty() {
        let list: Vec<String> = target.known.iter().map(hex::encode).collect();
        message.put_header(cloak_proto::receipt::KNOWN_EVIDENCE_HEADER, list.join(","));
    }
    for (name, value) in extras.headers() {
        message.put_header(name, value);
    }
    message.write_content(body);
    // Written where it will be sealed (see `RequestBuffer`), with room for the framing and
    // headers: up to 32 known evidence digests (2 KiB) and an access token.
    let mut out = ohttp::RequestBuffer::with_capacity(body.len().saturating_add(4096));
    message
        .write_bhttp(bhttp::Mode::KnownLength, &mut out)
        .map_err(|e| Error::Protocol(format!("binary HTTP: {e}")))?;
    Ok(out)
}

fn inner_response(bhttp: &[u8]) -> Result<Response, Error> {
    let message = bhttp::Message::read_bhttp(&mut Cursor::new(bhttp))
        .map_err(|e| Error::Protocol(format!("the inner response: {e}")))?;
    let status = message
        .control()
        .status()
        .map(|s| s.code())
        .ok_or_else(|| Error::Protocol("the inner response has no status".into()))?;
    let header = |name: &str| {
        message
            .header()
            .get(name.as_bytes())
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let peer = http::PeerEvidence {
        evidence: header(cloak_proto::receipt::EVIDENCE_HEADER).and_then(|v| {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(v.as_bytes(), &mut digest).ok()?;
            Some(digest)
        }),
        attestation: header(cloak_proto::receipt::ATTESTATION_HEADER),
    };
    Ok(Response {
        peer,
        status,
        header_len: header("inference-header-content-length").and_then(|v| v.parse().ok()),
        receipt: header(cloak_proto::receipt::HEADER),
        receipt_salt: header(cloak_proto::receipt::SALT_HEADER)
            .and_then(|v| cloak_proto::receipt::parse_salt(v.as_bytes())),
        retry_after: header("retry-after"),
        body: message.content().to_vec(),
    })
}

/// The other replicas of the appraised server's fleet whose receipts this appraisal has
/// checked: each appraised once, from the attestation it sent with its first answer, under the
/// same policy (no freshness: the answer itself, sealed under the fleet key that only enclaves
/// the broker's fleet policy accepted hold, is the proof of liveness), and kept by evidence
/// digest.
#[derive(Debug)]
pub(crate) struct Peers {
    policy: AppraisalPolicy,
    collateral: Option<Collateral>,
    fleet: Option<String>,
    cache: std::sync::Mutex<Vec<([u8; 32], Arc<VerifiedServer>)>>,
}

impl Peers {
    fn new(policy: AppraisalPolicy, collateral: Option<Collateral>, fleet: Option<String>) -> Self {
        Self {
            policy,
            collateral,
            fleet,
            cache: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The evidence digests held, most recent first, as many as a request lists.
    pub(crate) fn known(&self) -> Vec<[u8; 32]> {
        self.lock()
            .iter()
            .rev()
            .take(cloak_proto::receipt::MAX_KNOWN_EVIDENCE)
            .map(|(digest, _)| *digest)
            .collect()
    }

    /// The replica whose claims have evidence digest `digest`: held, or appraised from
    /// `attestation` (which must be of those claims and name the same fleet).
    pub(crate) fn server(
        &self,
        digest: &[u8; 32],
        attestation: Option<&str>,
    ) -> Result<Arc<VerifiedServer>, Error> {
        // Outside a fleet, other claims mean the server changed: appraise it again.
        if self.fleet.is_none() {
            return Err(Error::Receipt(ReceiptError::Evidence));
        }
        if let Some((_, server)) = self.lock().iter().find(|(d, _)| d == digest) {
            return Ok(Arc::clone(server));
        }
        let text = attestation.ok_or(Error::Receipt(ReceiptError::Evidence))?;
        let document: cloak_proto::attestation::AttestationDocument = serde_json::from_str(text)
            .map_err(|e| Error::Protocol(format!("the answering replica's attestation: {e}")))?;
        let collateral = match &self.collateral {
            Some(collateral) => collateral.clone(),
            None => relayed_collateral(&document)?,
        };
        let server = crate::appraise::appraise_recorded_attestation(
            &document,
            &collateral,
            &self.policy,
            unix_now(),
        )?;
        if server.claims().evidence_digest() != *digest {
            return Err(Error::Receipt(ReceiptError::Evidence));
        }
        if server.claims().fleet != self.fleet {
            return Err(Error::IdentityChanged(
                "an answer came from a server outside the appraised server's fleet".into(),
            ));
        }
        let server = Arc::new(server);
        let mut cache = self.lock();
        if cache.len() >= PEERS {
            cache.remove(0);
        }
        cache.push((*digest, Arc::clone(&server)));
        Ok(server)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<([u8; 32], Arc<VerifiedServer>)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Replicas kept per appraisal.
const PEERS: usize = 64;
