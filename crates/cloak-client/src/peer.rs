//! RA-TLS peers that are not Cloak servers: a service built with Open Enclave's attested TLS,
//! Gramine, the Intel SGX SDK or rats-tls presents a self-signed certificate whose key its quote
//! binds. [`appraise_peer_certificate`] judges such a certificate under a policy, and
//! [`peer_tls_config`] gives any rustls-based client (hyper, tonic, reqwest with rustls) a
//! configuration that does so during the handshake.
//!
//! The checks, in order: the certificate parses and carries evidence; its self-signature is
//! not invalid (a certificate changed after it was signed is refused, as Open Enclave refuses
//! it); the preferred evidence binds the certificate's key, by its carrier's rule (Open
//! Enclave: SHA-256 of the key's PEM and a NUL; Gramine: SHA-256 of the key; DICE: through the
//! claims); the quote verifies with the collateral under the policy's trust root; the policy
//! accepts it. The handshake signature is verified by rustls with the certificate's key, which
//! proves the peer holds the attested key. There is no Cloak identity claim, nonce or receipt:
//! what such a peer attests is its key and its enclave, nothing else.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AcceptedQuote, AppraisalPolicy};
use cloak_attest::quote::Measurements;
use cloak_attest::ratls::{Carrier, RaTlsCertificate, SelfSignature};
use cloak_attest::verify::Verifier;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{AppraisalError, BindingError, Error};

/// An RA-TLS peer whose certificate the policy accepted.
#[derive(Clone, Debug)]
pub struct AttestedPeer {
    carrier: Carrier,
    spki_der: Vec<u8>,
    accepted: AcceptedQuote,
}

impl AttestedPeer {
    /// The extension the accepted evidence came in.
    pub fn carrier(&self) -> Carrier {
        self.carrier
    }

    /// The certificate's public key (SubjectPublicKeyInfo, DER): the key the quote binds.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The accepted quote: measurements, TCB status, trust root.
    pub fn accepted(&self) -> &AcceptedQuote {
        &self.accepted
    }

    /// The quote's measurements.
    pub fn measurements(&self) -> Measurements {
        self.accepted.verified().quote().measurements()
    }
}

/// Appraises a peer's RA-TLS certificate (DER) with `collateral` under `policy` at `now` (Unix
/// seconds).
pub fn appraise_peer_certificate(
    certificate_der: &[u8],
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    now: u64,
) -> Result<AttestedPeer, AppraisalError> {
    let certificate = RaTlsCertificate::parse(certificate_der)
        .map_err(|e| AppraisalError::Certificate(e.to_string()))?;
    if *certificate.self_signature() == SelfSignature::Invalid {
        return Err(AppraisalError::Certificate(
            "the certificate's self-signature is invalid: it was changed after it was signed"
                .into(),
        ));
    }
    let evidence = certificate
        .preferred()
        .ok_or_else(|| AppraisalError::Certificate("no evidence".into()))?;
    if !evidence.binding().holds() {
        return Err(BindingError::CertificateKey.into());
    }
    let quote = evidence.quote_bytes();
    let anchor = policy.trust_root().anchor(quote, collateral)?;
    let verified = Verifier::new(anchor).verify(quote, collateral, now)?;
    let accepted = policy.appraise(verified)?;
    Ok(AttestedPeer {
        carrier: evidence.carrier(),
        spki_der: certificate.spki_der().to_vec(),
        accepted,
    })
}

/// A rustls client configuration that accepts a server only if its certificate is an RA-TLS
/// certificate `policy` accepts with `collateral` ([`appraise_peer_certificate`], at the time of
/// the handshake); TLS 1.2 and 1.3, no ALPN (set `alpn_protocols` for the protocol spoken).
/// Host names and CAs play no part: the quote is what vouches for the key. To read what was
/// accepted, appraise the connection's peer certificate again.
///
/// A policy that names no enclave would accept any genuine enclave, a hostile one included, and
/// is refused ([`Error::PolicyPinsNoIdentity`]).
pub fn peer_tls_config(
    policy: AppraisalPolicy,
    collateral: Collateral,
) -> Result<rustls::ClientConfig, Error> {
    if !policy.names_identity() {
        return Err(Error::PolicyPinsNoIdentity);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(PeerVerifier {
        policy,
        collateral,
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

struct PeerVerifier {
    policy: AppraisalPolicy,
    collateral: Collateral,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cloak_client::PeerVerifier")
    }
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        appraise_peer_certificate(end_entity, &self.collateral, &self.policy, now)
            .map(|_| ServerCertVerified::assertion())
            .map_err(|refusal| PeerRefused::rustls_error(&refusal))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crate::tls::verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        crate::tls::supported_schemes(&self.provider)
    }
}

/// Why a server was refused, inside the rustls error a handshake fails with (a Cloak server's
/// or another RA-TLS peer's): its [`code`] is the appraisal's stable reason.
///
/// [`code`]: PeerRefused::code
#[derive(Debug)]
pub struct PeerRefused {
    code: &'static str,
    message: String,
}

impl PeerRefused {
    /// The stable reason code ([`AppraisalError::code`]).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The rustls error a handshake fails with when `refusal` refuses the peer.
    pub(crate) fn rustls_error(refusal: &AppraisalError) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            Arc::new(Self {
                code: refusal.code(),
                message: refusal.to_string(),
            }),
        )))
    }
}

impl fmt::Display for PeerRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attestation refused ({}): {}", self.code, self.message)
    }
}

impl std::error::Error for PeerRefused {}
