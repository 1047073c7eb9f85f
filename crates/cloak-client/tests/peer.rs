//! RA-TLS peers that are not Cloak servers: Open Enclave's attested-TLS certificates from real
//! hardware judged as their names say, and a live handshake with a peer presenting a
//! certificate in Open Enclave's format, quoted by the simulated platform.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cloak_client::attest::endorsements::Endorsements;
use cloak_client::attest::policy::SgxIdentityPolicy;
use cloak_client::attest::quote::{Measurements, Quote};
use cloak_client::attest::ratls::{Carrier, open_enclave_key_digest};
use cloak_client::{
    AppraisalError, AppraisalPolicy, Error, Measurement, PeerRefused, appraise_peer_certificate,
    peer_tls_config,
};
use cloak_test_support::sim::{Sim, policy_trusting};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use serde_json::Value;

fn openenclave(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cloak-attest/testdata/openenclave")
        .join(path)
}

/// CREATION_DATETIME of the 2022 endorsements.
const OE_AT: u64 = 1_651_016_590;

/// A policy a demanding Open Enclave user would write for `mrenclave`, loosened only as far as
/// the recorded enclaves need (they are debug builds on a SWHardeningNeeded platform).
fn oe_policy(mrenclave: &str) -> AppraisalPolicy {
    AppraisalPolicy::strict()
        .with_sgx_identity(pin(mrenclave))
        .with_debug(cloak_client::DebugPolicy::Allow)
        .allow_tcb_status(cloak_client::attest::verify::TcbStatus::SwHardeningNeeded)
}

fn pin(mrenclave: &str) -> SgxIdentityPolicy {
    SgxIdentityPolicy {
        mrenclave: Some(vec![Measurement::from_bytes(
            hex::decode(mrenclave).unwrap().try_into().unwrap(),
        )]),
        ..SgxIdentityPolicy::default()
    }
}

#[test]
fn the_open_enclave_certificates_are_judged_as_their_names_say() {
    let facts: Value =
        serde_json::from_slice(&std::fs::read(openenclave("facts.json")).unwrap()).unwrap();
    // The only collateral of the time is for another platform (FMSPC 00906ED50000, not
    // 00906EA10000): every certificate whose checks pass gets as far as the TCB, and no
    // further.
    let endorsements =
        Endorsements::parse(&std::fs::read(openenclave("endorsements")).unwrap()).unwrap();
    let collateral = endorsements.collateral();
    for cert in facts["certificates"].as_array().unwrap() {
        let file = cert["file"].as_str().unwrap();
        let der = std::fs::read(openenclave(file)).unwrap();
        let policy = oe_policy(cert["quote"]["mrenclave"].as_str().unwrap());
        let error = appraise_peer_certificate(&der, collateral, &policy, OE_AT).unwrap_err();
        let expected = match file {
            // Good: self-signature, binding, every signature and the PCK chain (to the Intel
            // root's key, through a 2018 issue of the root) pass; there is no TCB info for it.
            "tls_between_host_enclave_cert.der"
            | "sgx_cert_ec_bad_tcb.der"
            | "sgx_cert_rsa_bad_tcb.der" => "collateral-mismatch",
            // Tampered after signing: refused before its quote is looked at.
            "sgx_cert_ec_bad.der" | "sgx_cert_rsa_bad.der" => "bad-certificate",
            other => panic!("unexpected vector {other}"),
        };
        assert_eq!(error.code(), expected, "{file}: {error}");
        // Under the default production policy, each is refused too.
        let strict = AppraisalPolicy::strict()
            .with_sgx_identity(pin(cert["quote"]["mrenclave"].as_str().unwrap()));
        assert!(appraise_peer_certificate(&der, collateral, &strict, OE_AT).is_err());
    }
}

#[test]
fn the_tampered_certificates_fail_in_their_quotes_too() {
    // Past the self-signature (which a peer could re-sign), the changed bytes break the quote's
    // PCK chain: the report in each, verified as a report, is refused for it.
    let endorsements =
        Endorsements::parse(&std::fs::read(openenclave("endorsements")).unwrap()).unwrap();
    for (file, code) in [
        // The PCK leaf's issuer name was changed: no CA issued it.
        ("sgx_cert_ec_bad.der", "untrusted-root"),
        // The embedded root's key was changed: it is not the Intel root.
        ("sgx_cert_rsa_bad.der", "untrusted-root"),
    ] {
        let der = std::fs::read(openenclave(file)).unwrap();
        let cert = cloak_client::attest::ratls::RaTlsCertificate::parse(&der).unwrap();
        let quote = cert.preferred().unwrap().quote_bytes();
        let err = cloak_client::attest::verify::Verifier::new(
            cloak_client::attest::verify::TrustAnchor::intel(),
        )
        .verify(quote, endorsements.collateral(), OE_AT)
        .unwrap_err();
        assert!(err.code() == code, "{file}: {err}");
    }
}

/// A self-signed certificate in Open Enclave's format (report extension
/// 1.3.6.1.4.1.311.105.1 holding `oe_report_header_t` and a quote) whose quote's report data is
/// `report_data(key)`.
fn oe_certificate(
    sim: &Sim,
    report_data: impl Fn(&[u8]) -> [u8; 32],
) -> (CertificateDer<'static>, PrivateKeyDer<'static>, [u8; 32]) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut data = [0u8; 64];
    data[..32].copy_from_slice(&report_data(
        &rcgen::PublicKeyData::subject_public_key_info(&key),
    ));
    let quote = sim.platform().quote(&data).unwrap();
    let Measurements::Sgx(measurements) = Quote::parse(&quote).unwrap().measurements() else {
        panic!("not SGX");
    };
    let mut report = Vec::new();
    report.extend_from_slice(&1_u32.to_le_bytes());
    report.extend_from_slice(&2_u32.to_le_bytes());
    report.extend_from_slice(&(quote.len() as u64).to_le_bytes());
    report.extend_from_slice(&quote);
    let mut params = rcgen::CertificateParams::new(vec!["oe-peer".to_owned()]).unwrap();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 311, 105, 1],
            report,
        ));
    let cert = params.self_signed(&key).unwrap();
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        *measurements.mrenclave.as_bytes(),
    )
}

/// Serves one TLS handshake with `cert` and returns the client's result.
async fn handshake(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    client: rustls::ClientConfig,
) -> Result<(), std::io::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let served = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let result = connector
        .connect(ServerName::try_from("oe-peer").unwrap(), tcp)
        .await
        .map(|_| ());
    let _ = served.await;
    result
}

fn refusal_code(error: &std::io::Error) -> Option<&'static str> {
    let inner = error.get_ref()?.downcast_ref::<rustls::Error>()?;
    let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = inner else {
        return None;
    };
    other.0.downcast_ref::<PeerRefused>().map(PeerRefused::code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_presenting_an_open_enclave_certificate_is_appraised_in_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::init(dir.path());
    let collateral = sim.collateral();
    let (cert, key, mrenclave) = oe_certificate(&sim, open_enclave_key_digest);
    let policy = policy_trusting(sim.platform().root_der().to_vec(), mrenclave);

    // Judged directly: accepted, through the OE report extension, bound as OE binds keys.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let peer = appraise_peer_certificate(&cert, &collateral, &policy, now).unwrap();
    assert_eq!(peer.carrier(), Carrier::OpenEnclaveReport);
    assert!(peer.accepted().verified().is_simulated());

    // In a handshake: accepted.
    let config = peer_tls_config(policy.clone(), collateral.clone()).unwrap();
    handshake(cert.clone(), key.clone_key(), config)
        .await
        .unwrap();

    // Another enclave pinned: refused, with the policy's reason.
    let other = policy_trusting(sim.platform().root_der().to_vec(), [0x42; 32]);
    let config = peer_tls_config(other, collateral.clone()).unwrap();
    let error = handshake(cert.clone(), key.clone_key(), config)
        .await
        .unwrap_err();
    assert_eq!(
        refusal_code(&error),
        Some("measurement-mismatch"),
        "{error}"
    );

    // A certificate whose quote binds the key as Gramine does (SHA-256 of the DER), not as OE
    // does: the binding is broken for an OE carrier.
    let (gramine_bound, gramine_key, mrenclave) = oe_certificate(&sim, cloak_crypto::hash::sha256);
    let policy = policy_trusting(sim.platform().root_der().to_vec(), mrenclave);
    let config = peer_tls_config(policy.clone(), collateral.clone()).unwrap();
    let error = handshake(gramine_bound, gramine_key, config)
        .await
        .unwrap_err();
    assert_eq!(refusal_code(&error), Some("binding-broken"), "{error}");

    // Under the Intel root (a default policy), the simulated quote is untrusted.
    let intel = AppraisalPolicy::strict().with_sgx_identity(pin(&hex::encode(mrenclave)));
    let error = appraise_peer_certificate(&cert, &collateral, &intel, now).unwrap_err();
    assert!(matches!(
        error,
        AppraisalError::Quote(_) | AppraisalError::Policy(_)
    ));
    assert_eq!(error.code(), "untrusted-root", "{error}");
}

#[test]
fn a_policy_that_pins_no_enclave_is_refused_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::init(dir.path());
    let mut policy = policy_trusting(sim.platform().root_der().to_vec(), [1; 32]);
    policy.sgx_identity_mut().mrenclave = None;
    assert!(matches!(
        peer_tls_config(policy, sim.collateral()),
        Err(Error::PolicyPinsNoIdentity)
    ));
}
