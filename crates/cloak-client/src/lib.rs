#![doc = include_str!("../README.md")]
//!
//! # Modules
//!
//! The paved path is at the top level: [`Client`], [`Session`], the policy and KServe types
//! they take, and [`Error`]. The attestation verifier and the wire types are re-exported whole
//! as [`attest`] and [`proto`], so this crate is the only dependency a client needs.

mod appraise;
mod attested;
mod client;
mod encapsulated;
mod error;
mod http;
mod peer;
mod session;
mod tls;

use std::time::{SystemTime, UNIX_EPOCH};

use cloak_crypto::ohttp::KeyConfig;

pub use appraise::{VerifiedServer, appraise_recorded_attestation};
pub use bytes::Bytes;
pub use client::{Client, ClientBuilder, Mode, NoPolicy};
pub use encapsulated::Transport;
pub use error::{
    AppraisalError, BindingError, Error, ServerStatus, TransportError, TransportErrorKind,
};
pub use http::{Method, Response};
pub use peer::{AttestedPeer, PeerRefused, appraise_peer_certificate, peer_tls_config};
pub use session::{Inference, Session};

/// The attestation verifier: quotes, collateral, policies and verdicts (`cloak-attest`).
pub use cloak_attest as attest;
/// The wire types: tensors, KServe v2 messages, identity claims, attestations, receipts
/// (`cloak-proto`).
pub use cloak_proto as proto;

pub use cloak_attest::collateral::Collateral;
pub use cloak_attest::policy::{AppraisalPolicy, DebugPolicy, SgxIdentityPolicy, TrustRootPolicy};
pub use cloak_attest::types::Measurement;
pub use cloak_proto::attestation::AttestationDocument;
pub use cloak_proto::identity::{EngineClaim, IdentityClaims};
pub use cloak_proto::kserve::{InferRequest, InferResponse, NamedTensor, TensorEncoding};
pub use cloak_proto::receipt::{BodyDigest, Receipt, ReceiptError};
pub use cloak_proto::tensor::{DataType, Tensor};

/// One appraisal of a server: what the policy accepted, the fresh attestation it came from,
/// and how requests reach that server.
#[derive(Debug)]
pub struct Appraisal {
    server: VerifiedServer,
    attestation: AttestationDocument,
    route: Route,
}

impl Appraisal {
    /// The accepted server: its claims (keys, version, models) and the accepted quote.
    pub fn server(&self) -> &VerifiedServer {
        &self.server
    }

    /// The fresh attestation the server was accepted on; keep it to check receipts offline
    /// ([`appraise_recorded_attestation`], `cloak receipt verify`).
    pub fn attestation(&self) -> &AttestationDocument {
        &self.attestation
    }

    /// How requests reach the server.
    pub fn mode(&self) -> Mode {
        match self.route {
            Route::AttestedTls { .. } => Mode::AttestedTls,
            Route::Encapsulated { .. } => Mode::Encapsulated,
        }
    }
}

/// How requests reach an appraised server.
#[derive(Debug)]
enum Route {
    /// Attested TLS connections, each appraised with the policy and the appraisal's collateral.
    AttestedTls {
        endpoint: http::Endpoint,
        tls: tls::AttestedTls,
    },
    /// Encapsulated requests to the attested key configuration, over a transport connection.
    Encapsulated {
        endpoint: http::Endpoint,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
        key_config: KeyConfig,
        /// Other replicas of the server's fleet, appraised as their answers arrive.
        peers: Box<encapsulated::Peers>,
    },
}

impl Response {
    /// Verifies this response's receipt against `server` (the appraised server that answered)
    /// and the request body that was sent: signed by the attested receipt key, over the
    /// evidence and a model the claims state, for exactly this request and this response.
    pub fn verify_receipt(
        &self,
        server: &VerifiedServer,
        request_body: &[u8],
    ) -> Result<Receipt, Error> {
        let sent = session::SentBody {
            body: request_body,
            asked: None,
            digest: None,
        };
        session::verify_receipt(self, server, &sent)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
