//! The SDK against an in-process server on the simulated platform: one builder, both modes,
//! typed errors a caller can match, receipts, re-appraisal when the server's identity changes,
//! and the explicit session's own contract.

use std::sync::Arc;
use std::time::Duration;

use cloak_client::attest::verify::VerifyError;
use cloak_client::{
    AppraisalError, AppraisalPolicy, BodyDigest, Client, Error, InferRequest, Measurement, Mode,
    NamedTensor, ReceiptError, Tensor, TensorEncoding,
};
use cloak_test_support::server::SimServer;

fn request(values: [f32; 4]) -> InferRequest {
    let features = Tensor::from_values(vec![1, 4], &values).unwrap();
    InferRequest::new(vec![NamedTensor::new("features", features)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_infer_with_verified_receipts_and_agree() {
    let server = SimServer::builder().start().await;
    let mut outputs = Vec::new();
    for mode in [Mode::AttestedTls, Mode::Encapsulated] {
        let client = server.client_with(mode).await;
        let appraisal = client.appraisal();
        assert_eq!(appraisal.mode(), mode);
        assert!(appraisal.server().accepted().verified().is_simulated());
        assert!(appraisal.attestation().collateral_json().is_some());
        let answer = client
            .infer("demo", &request([0.5, -1.0, 2.0, 0.25]))
            .await
            .unwrap();
        assert_eq!(answer.receipt.model, "demo");
        assert!(!answer.receipt_text.is_empty());
        outputs.push(answer.response.outputs()[0].tensor().clone());
        // A session on its own connection says the same.
        let mut session = client.session().await.unwrap();
        let again = session
            .infer("demo", &request([0.5, -1.0, 2.0, 0.25]))
            .await
            .unwrap();
        assert_eq!(
            again.response.outputs()[0].tensor(),
            &outputs[outputs.len() - 1]
        );
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_digest_with_blake3_unless_the_client_asks_for_sha256() {
    let server = SimServer::builder().start().await;
    let features = request([0.5, -1.0, 2.0, 0.25]);
    for mode in [Mode::AttestedTls, Mode::Encapsulated] {
        // The default: version 3, checked against the digest computed in flight.
        let answer = server
            .client_with(mode)
            .await
            .infer("demo", &features)
            .await
            .unwrap();
        assert_eq!(answer.receipt.digests, BodyDigest::SaltedBlake3, "{mode:?}");
        for (asked, made) in [
            // Where FIPS-approved algorithms are required.
            (BodyDigest::SaltedSha256, BodyDigest::SaltedSha256),
            // Asks for nothing, as an older client: the server's default, version 2, which
            // the client checks against the body itself (its in-flight digest is another
            // algorithm's).
            (BodyDigest::Sha256, BodyDigest::SaltedSha256),
        ] {
            let client = Client::builder()
                .policy(server.policy())
                .mode(mode)
                .receipt_digest(asked)
                .connect(&server.url())
                .await
                .unwrap();
            let answer = client.infer("demo", &features).await.unwrap();
            assert_eq!(answer.receipt.digests, made, "{mode:?} {asked:?}");
            // Kept with its salt, the receipt checks against the bodies offline, and against
            // no other request.
            // (The SDK sends the tensors binary-encoded.)
            let body = features
                .encode(|_| TensorEncoding::Binary)
                .unwrap()
                .body()
                .to_vec();
            let salt = answer.receipt_salt.unwrap();
            answer.receipt.check_request(Some(&salt), &body).unwrap();
            assert_eq!(
                answer.receipt.check_request(Some(&salt), b"{}"),
                Err(ReceiptError::Input)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_typed_and_nothing_reaches_a_refused_server() {
    let server = SimServer::builder().start().await;
    // A build the data owner does not know.
    let wrong = server.sim().policy([0xab; 32]);
    for mode in [Mode::AttestedTls, Mode::Encapsulated] {
        let error = Client::builder()
            .policy(wrong.clone())
            .mode(mode)
            .connect(&server.url())
            .await
            .unwrap_err();
        assert!(error.is_rejection(), "{error}");
        assert_eq!(error.code(), "measurement-mismatch");
        assert!(
            matches!(&error, Error::Appraisal(AppraisalError::Policy(_))),
            "{error:?}"
        );
    }
    // A policy that names no enclave is refused before anything is sent, unless said
    // dangerously; then the appraisal goes on under it.
    let root_only = || {
        let mut policy = server.policy();
        policy.sgx_identity_mut().mrenclave = None;
        policy
    };
    let error = Client::builder()
        .policy(root_only())
        .connect(&server.url())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PolicyPinsNoIdentity), "{error:?}");
    assert_eq!(error.code(), "policy-pins-no-identity");
    assert!(!error.is_rejection());
    assert!(
        Client::builder()
            .policy(root_only())
            .dangerously_accept_any_enclave()
            .connect(&server.url())
            .await
            .is_ok()
    );
    // The strict policy trusts only Intel's root.
    let mut strict = AppraisalPolicy::strict();
    strict.sgx_identity_mut().mrenclave = Some(vec![Measurement::from_bytes(server.measurement())]);
    let error = Client::builder()
        .policy(strict)
        .connect(&server.url())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Appraisal(AppraisalError::Quote(VerifyError::UntrustedRoot(_)))
        ),
        "{error:?}"
    );
    // A revoked platform, with the collateral given.
    let mut sim = cloak_tee_sim_reopen(&server);
    sim.revoke().unwrap();
    let revoked = cloak_client::Collateral::from_json(
        &sim.collateral(cloak_test_support::sim::unix_now()).unwrap(),
    )
    .unwrap();
    let error = Client::builder()
        .policy(server.policy())
        .collateral(revoked)
        .connect(&server.url())
        .await
        .unwrap_err();
    assert_eq!(error.code(), "revoked", "{error}");
    // Not one inference reached the server.
    let metrics = server.metrics().await;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("cloak_inference_requests_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // Configuration errors are the caller's, with their own code.
    let error = Client::builder()
        .policy(server.policy())
        .connect("ftp://example")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
    let error = Client::builder()
        .policy(server.policy())
        .nonce(Vec::new())
        .connect(&server.url())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Config(_)), "{error:?}");
}

/// The simulated platform of `server`, opened again (to revoke it).
fn cloak_tee_sim_reopen(server: &SimServer) -> cloak_tee::sim::SimPlatform {
    cloak_tee::sim::SimPlatform::open(server.sim().dir()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_receipts_are_checked_and_typed() {
    let server = SimServer::builder().tampered("broken").start().await;
    let client = server.client().await;
    let error = client.infer("nope", &request([1.0; 4])).await.unwrap_err();
    match &error {
        Error::Server(status) => {
            assert_eq!(status.status, 404);
            assert_eq!(status.message, "no model named nope");
        }
        other => panic!("{other:?}"),
    }
    let error = client
        .infer("broken", &request([1.0; 4]))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Server(s) if s.status == 503 && s.message.contains("chunk-authentication")),
        "{error:?}"
    );
    assert!(!error.is_rejection());

    // A raw answer's receipt covers exactly the bodies sent and received.
    let body = request([0.1, 0.2, 0.3, 0.4])
        .encode(|_| TensorEncoding::Json)
        .unwrap()
        .body()
        .to_vec();
    let response = client
        .send(
            cloak_client::Method::Post,
            "/v2/models/demo/infer",
            body.clone(),
            None,
        )
        .await
        .unwrap();
    let server_seen = client.appraisal();
    response
        .verify_receipt(server_seen.server(), &body)
        .unwrap();
    let error = response
        .verify_receipt(server_seen.server(), b"{\"inputs\":[]}")
        .unwrap_err();
    assert!(
        matches!(error, Error::Receipt(ReceiptError::Input)),
        "{error:?}"
    );
    let mut changed = response.clone();
    changed.body.push(b' ');
    let error = changed
        .verify_receipt(server_seen.server(), &body)
        .unwrap_err();
    assert!(
        matches!(error, Error::Receipt(ReceiptError::Output)),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_appraised_again_by_the_client_not_by_a_session() {
    let mut server = SimServer::builder().start().await;
    let atls = server.client_with(Mode::AttestedTls).await;
    let ohttp = server.client_with(Mode::Encapsulated).await;
    for client in [&atls, &ohttp] {
        client.infer("demo", &request([1.0; 4])).await.unwrap();
    }
    let before = atls.appraisal().server().claims().evidence_digest();
    server.restart().await;
    // A session under the old appraisal cannot reach the new identity: it says so.
    let mut stale = ohttp.session().await.unwrap();
    let error = stale.infer("demo", &request([1.0; 4])).await.unwrap_err();
    assert!(matches!(error, Error::IdentityChanged(_)), "{error:?}");
    // The clients appraise the restarted server again, once, and carry on.
    for client in [&atls, &ohttp] {
        let answer = client.infer("demo", &request([1.0; 4])).await.unwrap();
        assert_eq!(answer.receipt.model, "demo");
        assert_ne!(
            client.appraisal().server().claims().evidence_digest(),
            before
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_appraisal_is_renewed_when_due() {
    let server = SimServer::builder().start().await;
    let client = Client::builder()
        .policy(server.policy())
        .reappraise_every(Duration::ZERO)
        .connect(&server.url())
        .await
        .unwrap();
    let first = client.appraisal();
    client.infer("demo", &request([1.0; 4])).await.unwrap();
    let second = client.appraisal();
    assert!(!Arc::ptr_eq(&first, &second), "a due appraisal is renewed");
    // The same server: the same claims, a fresh nonce.
    assert_eq!(
        first.server().claims().evidence_digest(),
        second.server().claims().evidence_digest()
    );
    assert_ne!(first.attestation().claims, second.attestation().claims);
    let steady = Client::builder()
        .policy(server.policy())
        .connect(&server.url())
        .await
        .unwrap();
    let first = steady.appraisal();
    steady.infer("demo", &request([1.0; 4])).await.unwrap();
    assert!(Arc::ptr_eq(&first, &steady.appraisal()));
}
