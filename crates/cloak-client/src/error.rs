//! What can go wrong, as types a caller can match: [`Error`] says which stage failed, and the
//! nested [`AppraisalError`], [`TransportError`] and [`ServerStatus`] say why. Every value has a
//! stable kebab-case [`code`](Error::code) — the attestation verifier's reason where there is
//! one (`measurement-mismatch`, `debug-enclave`, `untrusted-root`, ...).

use std::fmt;

use cloak_attest::policy::PolicyViolation;
use cloak_attest::verify::VerifyError;
use cloak_proto::identity::ClaimsError;
use cloak_proto::receipt::ReceiptError;

/// Why an appraisal or a request failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server was refused on attestation grounds; nothing but a nonce was sent to it.
    #[error(transparent)]
    Appraisal(#[from] AppraisalError),
    /// The client's configuration is unusable: a URL, CA certificates, a nonce.
    #[error("configuration: {0}")]
    Config(String),
    /// The server's identity changed since it was appraised (it restarted, its models changed):
    /// it no longer holds the key a request was encapsulated to, or a new connection presented
    /// other claims. A [`Client`](crate::Client) appraises it again by itself; a
    /// [`Session`](crate::Session) reports this, and a new session from the client recovers.
    #[error("the server's identity changed: {0}")]
    IdentityChanged(String),
    /// The policy names no enclave identity (see
    /// [`AppraisalPolicy::names_identity`](cloak_attest::policy::AppraisalPolicy::names_identity)),
    /// and [`dangerously_accept_any_enclave`](crate::ClientBuilder::dangerously_accept_any_enclave)
    /// was not called. Nothing was sent.
    #[error(
        "the appraisal policy names no enclave (pin MRENCLAVE, or MRSIGNER with ISVPRODID, or \
         MRTD): it would accept any genuine enclave, a rebuilt or hostile one included"
    )]
    PolicyPinsNoIdentity,
    /// The server answered something that is not Cloak's protocol.
    #[error("protocol: {0}")]
    Protocol(String),
    /// An answer's receipt did not verify against the appraised claims and the exact bodies.
    #[error("receipt: {0}")]
    Receipt(#[from] ReceiptError),
    /// The server answered with an error status.
    #[error(transparent)]
    Server(#[from] ServerStatus),
    /// Connecting, the transport's TLS, or exchanging bytes failed or timed out.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

impl Error {
    /// A stable code: the attestation verifier's or the receipt's reason where there is one.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Appraisal(e) => e.code(),
            Self::Config(_) => "invalid-url",
            Self::IdentityChanged(_) => "server-identity-changed",
            Self::PolicyPinsNoIdentity => "policy-pins-no-identity",
            Self::Protocol(_) => "protocol-error",
            Self::Receipt(e) => e.code(),
            Self::Server(_) => "server-error",
            Self::Transport(_) => "connection-failed",
        }
    }

    /// Whether the server was refused on attestation grounds, or its answer's receipt was
    /// invalid — as opposed to being unreachable or answering an error.
    pub fn is_rejection(&self) -> bool {
        matches!(self, Self::Appraisal(_) | Self::Receipt(_))
    }
}

/// Why a server's evidence was not accepted.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AppraisalError {
    /// The evidence does not bind what it must: the claims, the TLS key, the nonce.
    #[error("attestation binding: {0}")]
    Binding(#[from] BindingError),
    /// The server's certificate carries no usable evidence.
    #[error("server certificate: {0}")]
    Certificate(String),
    /// The identity claims do not parse.
    #[error(transparent)]
    Claims(#[from] ClaimsError),
    /// The quote verified, and the policy rejected it.
    #[error("policy rejected the server ({}): {}", .0.code(), .0)]
    Policy(#[from] PolicyViolation),
    /// The quote did not verify with the collateral under the policy's trust root.
    #[error("attestation rejected ({}): {}", .0.code(), .0)]
    Quote(#[from] VerifyError),
}

impl AppraisalError {
    /// A stable code: the verifier's or the policy's reason.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Binding(_) => "binding-broken",
            Self::Certificate(_) => "bad-certificate",
            Self::Claims(e) => e.code(),
            Self::Policy(e) => e.code(),
            Self::Quote(e) => e.code(),
        }
    }
}

/// A binding the evidence must carry and does not.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// The certificate's key is not the one its quote binds.
    #[error("the certificate's key is not bound by its quote")]
    CertificateKey,
    /// A certificate's claims carry a nonce (only fresh attestations answer one).
    #[error("a certificate's claims must not carry a nonce")]
    CertificateNonce,
    /// A fresh attestation does not answer the nonce the client sent (a replay?).
    #[error("the attestation does not answer this nonce (a replay?)")]
    Nonce,
    /// A fresh attestation comes from another server instance than the connection it came over.
    #[error("the attestation comes from another server instance than this connection")]
    OtherInstance,
    /// The quote's report data is not SHA-512 of the claims.
    #[error("the quote's report data is not SHA-512 of the claims")]
    ReportData,
    /// The claims name another TLS key than the certificate's.
    #[error("the claims name another TLS key than the certificate's")]
    TlsKey,
}

/// An error status from the server (or from a proxy in front of it).
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the server answered {status}: {message}")]
pub struct ServerStatus {
    /// The HTTP status.
    pub status: u16,
    /// The `error` field of a JSON error body, else the body as text.
    pub message: String,
    /// The `Retry-After` header, when the server asks to retry later (429, 503).
    pub retry_after: Option<String>,
}

impl ServerStatus {
    /// The status, message and `Retry-After` of an error answer.
    pub fn from_response(response: &crate::Response) -> Self {
        Self::from_body(
            response.status,
            &response.body,
            response.retry_after.clone(),
        )
    }

    /// The status and message of an error answer with `body`.
    pub(crate) fn from_body(status: u16, body: &[u8], retry_after: Option<String>) -> Self {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        Self {
            status,
            message,
            retry_after,
        }
    }
}

/// A failure to reach the server or to exchange bytes with it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    kind: TransportErrorKind,
    message: String,
}

/// What part of the transport failed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportErrorKind {
    /// The TCP connection could not be made.
    Connect,
    /// An established connection failed while sending or receiving.
    Exchange,
    /// Connecting, or a whole exchange, took too long.
    Timeout,
    /// The TLS handshake with the transport failed (not an attestation refusal).
    Tls,
}

impl TransportError {
    pub(crate) fn new(kind: TransportErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// What part of the transport failed.
    pub fn kind(&self) -> TransportErrorKind {
        self.kind
    }
}

impl fmt::Display for TransportErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Exchange => "exchange",
            Self::Timeout => "timeout",
            Self::Tls => "tls",
        })
    }
}
