//! Appraising a Cloak server: its RA-TLS certificate and its fresh attestations.
//!
//! Both come down to the same checks, in this order:
//!
//! 1. the identity claims parse, and the quote's report data is exactly `SHA-512(claims)`;
//! 2. the claims' `pubkey-hash` is the SHA-256 of the TLS key (certificate) or of the TLS key
//!    already appraised on this connection (fresh attestation), and the `nonce` is absent
//!    (certificate) or the one the client sent (fresh attestation);
//! 3. the quote verifies with the collateral under the policy's trust root, and the policy
//!    accepts it (TCB status, advisories, debug, measurements).

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AcceptedQuote, AppraisalPolicy};
use cloak_attest::quote::{Measurements, Quote};
use cloak_attest::ratls::{Carrier, Evidence, RaTlsCertificate};
use cloak_attest::types::ReportData;
use cloak_attest::verify::{Verifier, VerifyError};
use cloak_proto::attestation::AttestationDocument;
use cloak_proto::identity::IdentityClaims;

use crate::error::{AppraisalError, BindingError, Error};

/// A server the policy accepted.
#[derive(Clone, Debug)]
pub struct VerifiedServer {
    claims: IdentityClaims,
    accepted: AcceptedQuote,
}

impl VerifiedServer {
    /// What the server states about itself (keys, version, models), now attested.
    pub fn claims(&self) -> &IdentityClaims {
        &self.claims
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

/// Parses an RA-TLS certificate.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<RaTlsCertificate, AppraisalError> {
    RaTlsCertificate::parse(der).map_err(|e| AppraisalError::Certificate(e.to_string()))
}

/// The TCG DICE tagged evidence every Cloak server certificate carries.
pub(crate) fn dice_evidence(certificate: &RaTlsCertificate) -> Result<&Evidence, AppraisalError> {
    certificate
        .evidence()
        .iter()
        .find(|e| e.carrier() == Carrier::TcgDiceTaggedEvidence)
        .ok_or_else(|| {
            AppraisalError::Certificate("no TCG DICE tagged evidence (not a Cloak server)".into())
        })
}

/// Appraises an RA-TLS certificate from a Cloak server.
pub(crate) fn appraise_certificate(
    certificate_der: &[u8],
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    now: u64,
) -> Result<VerifiedServer, AppraisalError> {
    let certificate = parse_certificate(certificate_der)?;
    let evidence = dice_evidence(&certificate)?;
    let claims_bytes = evidence
        .claims()
        .ok_or_else(|| AppraisalError::Certificate("the evidence has no claims".into()))?
        .raw();
    let claims = IdentityClaims::from_cbor(claims_bytes)?;
    let spki_sha256 = cloak_crypto::hash::sha256(certificate.spki_der());
    if claims.tls_spki_sha256 != spki_sha256 {
        return Err(BindingError::TlsKey.into());
    }
    if claims.is_fresh() {
        return Err(BindingError::CertificateNonce.into());
    }
    let accepted = appraise_quote(
        evidence.quote_bytes(),
        claims_bytes,
        collateral,
        policy,
        now,
    )?;
    Ok(VerifiedServer { claims, accepted })
}

/// Appraises a fresh attestation: it must answer `nonce` and come from the server whose TLS
/// key has SHA-256 `spki_sha256` (the connection it was fetched on).
pub(crate) fn appraise_attestation(
    document: &AttestationDocument,
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    nonce: &[u8],
    spki_sha256: &[u8; 32],
    now: u64,
) -> Result<VerifiedServer, Error> {
    let server = appraise_fresh_attestation(document, collateral, policy, nonce, now)?;
    if server.claims.tls_spki_sha256 != *spki_sha256 {
        return Err(AppraisalError::from(BindingError::OtherInstance).into());
    }
    Ok(server)
}

/// Appraises a fresh attestation that must answer `nonce`, whatever connection carried it: for
/// encrypted requests, whose keys (HPKE and receipt) the claims themselves bind, so the
/// transport (a load balancer's TLS) needs no trust.
pub(crate) fn appraise_fresh_attestation(
    document: &AttestationDocument,
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    nonce: &[u8],
    now: u64,
) -> Result<VerifiedServer, Error> {
    let server = appraise_recorded_attestation(document, collateral, policy, now)?;
    // The server may have answered several clients' nonces with one quote (it coalesces
    // requests that arrive while it quotes); the quote binds the whole list, so ours being in
    // it is as fresh as being alone.
    if !server.claims.answers(nonce) {
        return Err(AppraisalError::from(BindingError::Nonce).into());
    }
    Ok(server)
}

/// Appraises an attestation recorded earlier (`--attestation-out`, [`Appraisal::attestation`]),
/// without freshness — its nonce is not checked: for checking offline what a server signed,
/// such as receipts, against the claims its quote binds.
///
/// [`Appraisal::attestation`]: crate::Appraisal::attestation
pub fn appraise_recorded_attestation(
    document: &AttestationDocument,
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    now: u64,
) -> Result<VerifiedServer, Error> {
    if document.format != cloak_proto::attestation::FORMAT {
        return Err(Error::Protocol(format!(
            "unknown attestation format {:?}",
            document.format
        )));
    }
    let claims = IdentityClaims::from_cbor(&document.claims).map_err(AppraisalError::from)?;
    let accepted = appraise_quote(&document.quote, &document.claims, collateral, policy, now)?;
    Ok(VerifiedServer { claims, accepted })
}

/// Verifies `quote` with `collateral`, requires its report data to be `SHA-512(claims)`, and
/// appraises it.
fn appraise_quote(
    quote: &[u8],
    claims_bytes: &[u8],
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    now: u64,
) -> Result<AcceptedQuote, AppraisalError> {
    // Fail early, with a clear reason, on a quote that does not bind the claims; the policy
    // below checks the same thing again, exactly and in constant time.
    let parsed = Quote::parse(quote).map_err(VerifyError::Quote)?;
    let expected = ReportData::from_bytes(IdentityClaims::report_data(claims_bytes));
    if !parsed.report_data().ct_eq(&expected) {
        return Err(BindingError::ReportData.into());
    }
    let anchor = policy.trust_root().anchor(quote, collateral)?;
    let verified = Verifier::new(anchor).verify(quote, collateral, now)?;
    Ok(policy
        .clone()
        .with_report_data(expected)
        .appraise(verified)?)
}
