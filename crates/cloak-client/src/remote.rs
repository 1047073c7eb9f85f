//! One API over both ways of reaching a server: [`Remote`] is an appraised server reached over
//! attested TLS or with encapsulated requests, as the caller chose.

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_proto::attestation::AttestationDocument;
use cloak_proto::kserve::{self, InferRequest, InferResponse, TensorEncoding};
use cloak_proto::receipt::Receipt;
use hyper::Method;

use crate::{
    Bytes, Client, ClientError, EncryptedClient, EncryptedSession, HttpResponse, Session,
    Transport, VerifiedServer,
};

/// How requests reach the enclave.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Attested TLS straight to the server: each connection's certificate is appraised.
    AttestedTls,
    /// Oblivious HTTP encapsulation to the attested HPKE key, over any transport.
    Encapsulated,
}

/// An appraised server.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub enum Remote {
    /// Reached over attested TLS.
    AttestedTls(Client),
    /// Reached with encapsulated requests.
    Encapsulated(EncryptedClient),
}

impl Remote {
    /// Appraises the server at `url` under `policy` and returns it ready for requests.
    /// `transport` matters only for [`Mode::Encapsulated`].
    pub async fn connect(
        url: &str,
        mode: Mode,
        policy: AppraisalPolicy,
        collateral: Option<Collateral>,
        transport: Transport,
    ) -> Result<Self, ClientError> {
        match mode {
            Mode::AttestedTls => Client::bootstrap(url, policy, collateral)
                .await
                .map(Self::AttestedTls),
            Mode::Encapsulated => EncryptedClient::bootstrap(url, policy, collateral, transport)
                .await
                .map(Self::Encapsulated),
        }
    }

    /// The appraised server.
    pub fn server(&self) -> &VerifiedServer {
        match self {
            Self::AttestedTls(client) => client.server(),
            Self::Encapsulated(client) => client.server(),
        }
    }

    /// The fresh attestation the server was appraised from.
    pub fn attestation(&self) -> Option<&AttestationDocument> {
        match self {
            Self::AttestedTls(client) => client.attestation(),
            Self::Encapsulated(client) => Some(client.attestation()),
        }
    }

    /// Opens a connection for many requests.
    pub async fn session(&self) -> Result<RemoteSession, ClientError> {
        match self {
            Self::AttestedTls(client) => client.session().await.map(RemoteSession::AttestedTls),
            Self::Encapsulated(client) => client.session().await.map(RemoteSession::Encapsulated),
        }
    }
}

/// A connection to an appraised server.
#[non_exhaustive]
#[derive(Debug)]
pub enum RemoteSession {
    /// An attested TLS connection.
    AttestedTls(Session),
    /// A transport connection carrying encapsulated requests.
    Encapsulated(EncryptedSession),
}

impl RemoteSession {
    /// The server this session talks to, as appraised.
    pub fn server(&self) -> &VerifiedServer {
        match self {
            Self::AttestedTls(session) => session.server(),
            Self::Encapsulated(session) => session.server(),
        }
    }

    /// Runs `request` on `model`: encodes it (binary tensors), sends it, requires success,
    /// verifies the receipt against this session's appraised claims and the exact bodies, and
    /// parses the response.
    pub async fn infer(
        &mut self,
        model: &str,
        request: &InferRequest,
    ) -> Result<Inference, ClientError> {
        let encoded = request
            .encode(|_| TensorEncoding::Binary)
            .map_err(|e| ClientError::Protocol(format!("the request: {e}")))?;
        let header_len = encoded.header_len();
        let body = std::mem::take(&mut *encoded.into_body());
        let path = format!("/v2/models/{model}/infer");
        let (response, receipt) = self.send_inference(&path, body, header_len).await?;
        let Some(receipt) = receipt else {
            return Err(ClientError::Server(
                response.status.as_u16(),
                String::from_utf8_lossy(&response.body).into_owned(),
            ));
        };
        let parsed = InferResponse::parse(
            &response.body,
            response.header_len,
            &kserve::Limits::default(),
        )
        .map_err(|e| ClientError::Protocol(format!("the response: {e}")))?;
        Ok(Inference {
            response: parsed,
            receipt,
            receipt_text: response.receipt.unwrap_or_default(),
        })
    }

    /// Sends an inference request, `POST path` with `body` (`header_len` as for
    /// [`Client::post`]), and verifies the receipt of a successful answer against this
    /// session's appraised claims and the exact bodies: the receipt is `Some` for a success
    /// and `None` otherwise, and a success without a valid receipt is an error.
    ///
    /// The request body's SHA-256 is computed on the blocking pool while the request is in
    /// flight, so checking the receipt adds only the response's digest and one signature
    /// verification to the latency.
    pub async fn send_inference(
        &mut self,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<(HttpResponse, Option<Receipt>), ClientError> {
        let body = body.into();
        let hashed = body.clone();
        let digest = tokio::task::spawn_blocking(move || cloak_crypto::hash::sha256(&hashed));
        let (response, digest) = tokio::join!(
            self.send(Method::POST, path, body.clone(), header_len),
            digest
        );
        let response = response?;
        if !response.status.is_success() {
            return Ok((response, None));
        }
        // The task cannot fail (hashing does not panic); if it somehow did, hash here.
        let digest = digest.unwrap_or_else(|_| cloak_crypto::hash::sha256(&body));
        let receipt = response.verify_receipt_for_digest(self.server().claims(), &digest)?;
        Ok((response, Some(receipt)))
    }

    /// Sends `method path` with `body` (`header_len` as for [`Client::post`]).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: impl Into<Bytes>,
        header_len: Option<usize>,
    ) -> Result<HttpResponse, ClientError> {
        match self {
            Self::AttestedTls(session) => session.send(method, path, body, header_len).await,
            Self::Encapsulated(session) => session.send(method, path, body, header_len).await,
        }
    }
}

/// A verified inference: the parsed response and its receipt.
#[derive(Debug)]
pub struct Inference {
    /// The KServe v2 response.
    pub response: InferResponse,
    /// The receipt, verified against the appraised claims and the exact bodies.
    pub receipt: Receipt,
    /// The receipt as the server sent it (the `Cloak-Receipt` header value), for keeping.
    pub receipt_text: String,
}
