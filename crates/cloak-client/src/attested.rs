//! Appraising a server over attested TLS, and the attested connections that follow.
//!
//! With collateral at hand, the first connection is already fully attested: its certificate is
//! appraised in the handshake. Without, a first connection whose certificate must bind its key
//! to *some* quote fetches a fresh attestation for the client's nonce — the only bytes sent
//! before appraisal — whose relayed collateral then appraises both the attestation and that
//! certificate. Either way the fresh attestation must come from the very server instance the
//! connection reached.

use bytes::Bytes;
use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_proto::attestation::AttestationDocument;

use crate::appraise::{VerifiedServer, appraise_attestation, appraise_certificate};
use crate::error::{AppraisalError, Error, ServerStatus};
use crate::http::{self, Connection, Endpoint, Method};
use crate::tls::AttestedTls;
use crate::{Appraisal, Route, unix_now};

/// Appraises the server at `endpoint` (an `https://` URL) for a fresh attestation answering
/// `nonce`.
pub(crate) async fn appraise(
    endpoint: Endpoint,
    policy: AppraisalPolicy,
    collateral: Option<Collateral>,
    nonce: &[u8],
) -> Result<Appraisal, Error> {
    if !endpoint.secure {
        return Err(Error::Config(format!(
            "{}: Cloak servers speak attested TLS; use an https:// URL",
            endpoint.authority
        )));
    }
    let (collateral, attestation, server) = match collateral {
        Some(collateral) => {
            let tls = AttestedTls::new(policy.clone(), collateral.clone());
            let (mut connection, server) = connect(&endpoint, &tls).await?;
            let attestation = fetch_attestation(&mut connection, &endpoint, nonce).await?;
            let fresh = appraise_attestation(
                &attestation,
                &collateral,
                &policy,
                nonce,
                &server.claims().tls_spki_sha256,
                unix_now(),
            )?;
            (collateral, attestation, fresh)
        }
        None => {
            let probe = AttestedTls::probe();
            let (mut connection, certificate) = connect_probe(&endpoint, &probe).await?;
            let attestation = fetch_attestation(&mut connection, &endpoint, nonce).await?;
            let collateral = relayed_collateral(&attestation)?;
            let now = unix_now();
            // The certificate of the connection the attestation came over, appraised in full
            // now that the collateral is known.
            let server = appraise_certificate(&certificate, &collateral, &policy, now)?;
            appraise_attestation(
                &attestation,
                &collateral,
                &policy,
                nonce,
                &server.claims().tls_spki_sha256,
                now,
            )?;
            (collateral, attestation, server)
        }
    };
    Ok(Appraisal {
        server,
        attestation,
        route: Route::AttestedTls {
            tls: AttestedTls::new(policy, collateral),
            endpoint,
        },
    })
}

/// The collateral a fresh attestation relays.
pub(crate) fn relayed_collateral(attestation: &AttestationDocument) -> Result<Collateral, Error> {
    let json = attestation.collateral_json().ok_or_else(|| {
        Error::Protocol("the server relays no collateral; pass it explicitly".into())
    })?;
    Collateral::from_json(json).map_err(|e| Error::Protocol(format!("relayed collateral: {e}")))
}

/// A fully attested connection, and the server its certificate shows.
pub(crate) async fn connect(
    endpoint: &Endpoint,
    tls: &AttestedTls,
) -> Result<(Connection, VerifiedServer), Error> {
    let (config, verdict) = tls.config();
    let stream = http::tls_stream(endpoint, config).await;
    // The verifier's own error says why a handshake was refused; prefer it to rustls's summary.
    match (stream, verdict.take()) {
        (Ok(stream), Some(Ok(server))) => Ok((http::http1(stream).await?, server)),
        (_, Some(Err(refusal))) => Err(refusal.into()),
        (Err(e), _) => Err(e),
        (Ok(_), None) => {
            Err(AppraisalError::Certificate("the handshake appraised no certificate".into()).into())
        }
    }
}

/// A connection whose certificate binds its key to a quote not yet appraised; returns the
/// certificate too.
async fn connect_probe(
    endpoint: &Endpoint,
    probe: &AttestedTls,
) -> Result<(Connection, Vec<u8>), Error> {
    let (config, verdict) = probe.config();
    let stream = match (http::tls_stream(endpoint, config).await, verdict.take()) {
        (_, Some(Err(refusal))) => return Err(refusal.into()),
        (stream, _) => stream?,
    };
    let certificate = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| cert.to_vec())
        .ok_or_else(|| AppraisalError::Certificate("the server sent no certificate".into()))?;
    Ok((http::http1(stream).await?, certificate))
}

/// `GET /v1/attestation?nonce=HEX` on `connection`.
pub(crate) async fn fetch_attestation(
    connection: &mut Connection,
    endpoint: &Endpoint,
    nonce: &[u8],
) -> Result<AttestationDocument, Error> {
    let path = format!("/v1/attestation?nonce={}", hex::encode(nonce));
    let response = http::request(
        connection,
        endpoint,
        Method::Get,
        &path,
        Bytes::new(),
        None,
        http::Extras::default(),
    )
    .await?;
    if response.status != 200 {
        return Err(
            ServerStatus::from_body(response.status, &response.body, response.retry_after).into(),
        );
    }
    serde_json::from_slice(&response.body)
        .map_err(|e| Error::Protocol(format!("attestation document: {e}")))
}
