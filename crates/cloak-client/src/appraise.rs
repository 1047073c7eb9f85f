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
use cloak_attest::verify::Verifier;
use cloak_proto::attestation::AttestationDocument;
use cloak_proto::identity::IdentityClaims;

use crate::ClientError;

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
pub(crate) fn parse_certificate(der: &[u8]) -> Result<RaTlsCertificate, ClientError> {
    RaTlsCertificate::parse(der).map_err(|e| ClientError::Certificate(e.to_string()))
}

/// The TCG DICE tagged evidence every Cloak server certificate carries.
pub(crate) fn dice_evidence(certificate: &RaTlsCertificate) -> Result<&Evidence, ClientError> {
    certificate
        .evidence()
        .iter()
        .find(|e| e.carrier() == Carrier::TcgDiceTaggedEvidence)
        .ok_or_else(|| {
            ClientError::Certificate("no TCG DICE tagged evidence (not a Cloak server)".into())
        })
}

/// Appraises an RA-TLS certificate from a Cloak server.
pub fn appraise_certificate(
    certificate_der: &[u8],
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    now: u64,
) -> Result<VerifiedServer, ClientError> {
    let certificate = parse_certificate(certificate_der)?;
    let evidence = dice_evidence(&certificate)?;
    let claims_bytes = evidence
        .claims()
        .ok_or_else(|| ClientError::Certificate("the evidence has no claims".into()))?
        .raw();
    let claims = IdentityClaims::from_cbor(claims_bytes)?;
    let spki_sha256 = cloak_crypto::hash::sha256(certificate.spki_der());
    if claims.tls_spki_sha256 != spki_sha256 {
        return Err(ClientError::Binding(
            "the claims name another TLS key than the certificate's".into(),
        ));
    }
    if claims.nonce.is_some() {
        return Err(ClientError::Binding(
            "a certificate's claims must not carry a nonce".into(),
        ));
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
pub fn appraise_attestation(
    document: &AttestationDocument,
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    nonce: &[u8],
    spki_sha256: &[u8; 32],
    now: u64,
) -> Result<VerifiedServer, ClientError> {
    let server = appraise_fresh_attestation(document, collateral, policy, nonce, now)?;
    if server.claims.tls_spki_sha256 != *spki_sha256 {
        return Err(ClientError::Binding(
            "the attestation comes from another server instance than this connection".into(),
        ));
    }
    Ok(server)
}

/// Appraises a fresh attestation that must answer `nonce`, whatever connection carried it: for
/// encrypted requests, whose keys (HPKE and receipt) the claims themselves bind, so the
/// transport (a load balancer's TLS) needs no trust.
pub fn appraise_fresh_attestation(
    document: &AttestationDocument,
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    nonce: &[u8],
    now: u64,
) -> Result<VerifiedServer, ClientError> {
    let server = appraise_recorded_attestation(document, collateral, policy, now)?;
    if server.claims.nonce.as_deref() != Some(nonce) {
        return Err(ClientError::Binding(
            "the attestation does not answer this nonce (a replay?)".into(),
        ));
    }
    Ok(server)
}

/// Appraises an attestation recorded earlier, without freshness (its nonce is not checked):
/// for checking offline what a server signed, such as receipts, against the claims its quote
/// binds.
pub fn appraise_recorded_attestation(
    document: &AttestationDocument,
    collateral: &Collateral,
    policy: &AppraisalPolicy,
    now: u64,
) -> Result<VerifiedServer, ClientError> {
    if document.format != cloak_proto::attestation::FORMAT {
        return Err(ClientError::Protocol(format!(
            "unknown attestation format {:?}",
            document.format
        )));
    }
    let claims = IdentityClaims::from_cbor(&document.claims)?;
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
) -> Result<AcceptedQuote, ClientError> {
    // Fail early, with a clear reason, on a quote that does not bind the claims; the policy
    // below checks the same thing again, exactly and in constant time.
    let parsed = Quote::parse(quote).map_err(|e| ClientError::Quote(e.code(), e.to_string()))?;
    let expected = ReportData::from_bytes(IdentityClaims::report_data(claims_bytes));
    if !parsed.report_data().ct_eq(&expected) {
        return Err(ClientError::Binding(
            "the quote's report data is not SHA-512 of the claims".into(),
        ));
    }
    let anchor = policy
        .trust_root()
        .anchor(quote, collateral)
        .map_err(|e| ClientError::Quote(e.code(), e.to_string()))?;
    let verified = Verifier::new(anchor)
        .verify(quote, collateral, now)
        .map_err(|e| ClientError::Quote(e.code(), e.to_string()))?;
    policy
        .clone()
        .with_report_data(expected)
        .appraise(verified)
        .map_err(|e| ClientError::Policy(e.code(), e.to_string()))
}
