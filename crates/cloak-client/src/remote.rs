//! One API over both ways of reaching a server: [`Remote`] is an appraised server reached over
//! attested TLS or with encapsulated requests, as the caller chose.

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_proto::attestation::AttestationDocument;
use cloak_proto::kserve::{self, InferRequest, InferResponse, TensorEncoding};
use cloak_proto::receipt::Receipt;
use hyper::Method;

use crate::{
    Client, ClientError, EncryptedClient, EncryptedSession, HttpResponse, Session, Transport,
    VerifiedServer,
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
        let body = encoded.body().to_vec();
        let path = format!("/v2/models/{model}/infer");
        let response = self
            .send(Method::POST, &path, body.clone(), encoded.header_len())
            .await?;
        if !response.status.is_success() {
            return Err(ClientError::Server(
                response.status.as_u16(),
                String::from_utf8_lossy(&response.body).into_owned(),
            ));
        }
        let receipt = response.verify_receipt(self.server().claims(), &body)?;
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

    /// Sends `method path` with `body` (`header_len` as for [`Client::post`]).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Vec<u8>,
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
