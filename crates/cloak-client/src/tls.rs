//! The rustls side: a server-certificate verifier that appraises the attestation evidence in a
//! Cloak server's certificate during the handshake.
//!
//! This is the only module that touches `rustls::client::danger`. The certificate's trust
//! comes from the quote that binds its key, not from a CA or a host name, so the verifier
//! replaces webpki's chain and name checks with [`appraise_certificate`]; the handshake
//! signature is still verified by rustls with the certificate's key, which proves the peer
//! holds the attested key.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_proto::identity::IdentityClaims;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::appraise::{VerifiedServer, appraise_certificate};
use crate::error::{AppraisalError, BindingError, Error};

/// Builds rustls client configurations that appraise the server's attestation in the
/// handshake: TLS 1.3 only, HTTP/1.1.
#[derive(Clone)]
pub(crate) struct AttestedTls {
    mode: Mode,
    provider: Arc<CryptoProvider>,
}

#[derive(Clone)]
enum Mode {
    /// Full appraisal.
    Appraise(Arc<(AppraisalPolicy, Collateral)>),
    /// Only checks that the certificate's key is bound by a quote over parseable claims; the
    /// quote itself is appraised later, once collateral is known. Nothing but a nonce may be
    /// sent on such a connection.
    Probe,
}

impl AttestedTls {
    /// Appraises every server certificate with `collateral` under `policy`.
    pub(crate) fn new(policy: AppraisalPolicy, collateral: Collateral) -> Self {
        Self {
            mode: Mode::Appraise(Arc::new((policy, collateral))),
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }

    pub(crate) fn probe() -> Self {
        Self {
            mode: Mode::Probe,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        }
    }

    /// A configuration for one connection, and the slot its verifier reports into.
    pub(crate) fn config(&self) -> (Arc<rustls::ClientConfig>, Verdict) {
        let verdict = Verdict::default();
        let verifier = Arc::new(Verifier {
            mode: self.mode.clone(),
            provider: Arc::clone(&self.provider),
            verdict: verdict.clone(),
        });
        // The aws-lc-rs provider supports TLS 1.3 and its key exchanges, so this cannot fail.
        #[allow(clippy::expect_used)]
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("aws-lc-rs supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        (Arc::new(config), verdict)
    }
}

impl fmt::Debug for AttestedTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.mode {
            Mode::Appraise(_) => "appraise",
            Mode::Probe => "probe",
        };
        f.debug_struct("AttestedTls")
            .field("mode", &mode)
            .finish_non_exhaustive()
    }
}

/// What the verifier concluded about the server of one connection.
#[derive(Clone, Default)]
pub(crate) struct Verdict(Arc<Mutex<Option<Result<VerifiedServer, AppraisalError>>>>);

impl Verdict {
    /// The appraisal (taken: a second call returns `None`).
    pub(crate) fn take(&self) -> Option<Result<VerifiedServer, AppraisalError>> {
        self.0.lock().map_or(None, |mut slot| slot.take())
    }

    fn set(&self, result: Result<VerifiedServer, AppraisalError>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(result);
        }
    }
}

impl fmt::Debug for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Verdict")
    }
}

struct Verifier {
    mode: Mode,
    provider: Arc<CryptoProvider>,
    verdict: Verdict,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cloak_client::Verifier")
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = match &self.mode {
            Mode::Appraise(appraisal) => {
                let (policy, collateral) = &**appraisal;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                appraise_certificate(end_entity, collateral, policy, now).map(Some)
            }
            Mode::Probe => probe(end_entity).map(|()| None),
        };
        match result {
            Ok(server) => {
                if let Some(server) = server {
                    self.verdict.set(Ok(server));
                }
                Ok(ServerCertVerified::assertion())
            }
            Err(refusal) => {
                let error = crate::peer::PeerRefused::rustls_error(&refusal);
                self.verdict.set(Err(refusal));
                Err(error)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // The configuration allows TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        supported_schemes(&self.provider)
    }
}

/// The handshake signature under the certificate's key (TLS 1.3): what proves the peer holds
/// the attested key, for every verifier that replaces webpki's chain checks with appraisal.
pub(crate) fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

/// The signature schemes `provider` verifies.
pub(crate) fn supported_schemes(provider: &CryptoProvider) -> Vec<rustls::SignatureScheme> {
    provider
        .signature_verification_algorithms
        .supported_schemes()
}

/// The certificate's key is bound by its quote to claims that parse (the quote itself is not
/// yet appraised).
fn probe(certificate: &[u8]) -> Result<(), AppraisalError> {
    let certificate = crate::appraise::parse_certificate(certificate)?;
    let evidence = crate::appraise::dice_evidence(&certificate)?;
    if !evidence.binding().holds() {
        return Err(BindingError::CertificateKey.into());
    }
    let claims = evidence
        .claims()
        .ok_or_else(|| AppraisalError::Certificate("the evidence has no claims".into()))?;
    IdentityClaims::from_cbor(claims.raw())?;
    Ok(())
}

/// The transport of encapsulated requests: a certificate chain to `roots` (a load balancer's
/// certificate), or else a Cloak server's own certificate, whose key its quote binds (the quote
/// is appraised through the fresh attestation, not here). Either way nothing confidential
/// depends on this TLS: it only keeps the transport's metadata from bystanders.
pub(crate) fn transport_config(
    roots: rustls::RootCertStore,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| Error::Config(format!("CA certificates: {e}")))?;
    let verifier = Arc::new(TransportVerifier {
        webpki,
        cloak: Verifier {
            mode: Mode::Probe,
            provider: Arc::clone(&provider),
            verdict: Verdict::default(),
        },
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct TransportVerifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    cloak: Verifier,
}

impl ServerCertVerifier for TransportVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .or_else(|webpki_error| {
                // Not a Cloak server's certificate either: report the chain's error.
                self.cloak
                    .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                    .map_err(|_| webpki_error)
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
