//! The HTTP application driven without sockets (`PreparedServer::router`): every route's status,
//! body and headers, the one error mapping, receipts, and the outer refusals of the encrypted
//! path — fast, and without TLS in the way.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cloak_proto::identity::IdentityClaims;
use cloak_proto::kserve::{InferRequest, NamedTensor, RequestedOutput, TensorEncoding};
use cloak_proto::receipt::{BodyDigest, Receipt};
use cloak_proto::tensor::Tensor;
use cloak_server::{Limits, PreparedServer};
use cloak_test_support::server::{PreparedSimServer, SimServer};
use serde_json::Value;
use tower::ServiceExt;

/// A prepared (not listening) server with the demo model, a tampered container and a container
/// without a key.
async fn prepared(limits: Limits) -> (PreparedSimServer, PreparedServer) {
    SimServer::builder()
        .tampered("broken")
        .orphan("orphan")
        .limits(limits)
        .prepare()
        .await
}

/// An answer: status, headers, body.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a JSON error body.
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

async fn call(server: &PreparedServer, request: Request<Body>) -> Answer {
    answer(server.router(), request).await
}

/// What `router` answers to `request`.
async fn answer(router: axum::Router, request: Request<Body>) -> Answer {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(server: &PreparedServer, path: &str) -> Answer {
    call(server, Request::get(path).body(Body::empty()).unwrap()).await
}

async fn post(server: &PreparedServer, path: &str, content_type: &str, body: Vec<u8>) -> Answer {
    call(
        server,
        Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap(),
    )
    .await
}

fn demo_request() -> InferRequest {
    let features =
        Tensor::from_values(vec![2, 4], &[0.5f32, -1.0, 2.0, 7.77, 1.0, 1.0, 1.0, 1.0]).unwrap();
    InferRequest::new(vec![NamedTensor::new("features", features)]).with_id("r-1")
}

#[tokio::test]
async fn health_metadata_readiness_and_the_repository_index() {
    let (_materials, server) = prepared(Limits::default()).await;
    assert_eq!(get(&server, "/v2/health/live").await.status, StatusCode::OK);
    // Not started yet: not ready, and it says so.
    let ready = get(&server, "/v2/health/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);

    let meta = get(&server, "/v2").await.json();
    assert_eq!(meta["name"], "cloak");
    let model = get(&server, "/v2/models/demo").await;
    assert_eq!(model.status, StatusCode::OK);
    let model = model.json();
    assert_eq!(model["inputs"][0]["shape"], serde_json::json!([-1, 4]));
    assert_eq!(model["versions"], serde_json::json!(["1"]));
    assert_eq!(
        get(&server, "/v2/models/demo/versions/1/ready")
            .await
            .status,
        StatusCode::OK
    );
    let version = get(&server, "/v2/models/demo/versions/2").await;
    assert_eq!(version.status, StatusCode::NOT_FOUND);
    assert!(
        version.error().contains("no version 2"),
        "{}",
        version.error()
    );
    let unknown = get(&server, "/v2/models/nope/ready").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error(), "no model named nope");
    let broken = get(&server, "/v2/models/broken").await;
    assert_eq!(broken.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        broken.error().contains("chunk-authentication"),
        "{}",
        broken.error()
    );

    let models = get(&server, "/v2/models").await.json();
    assert_eq!(models["models"], serde_json::json!(["demo"]));
    let index = post(
        &server,
        "/v2/repository/index",
        "application/json",
        b"{}".to_vec(),
    )
    .await
    .json();
    let state = |name: &str| {
        let entry = index
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap();
        (
            entry["state"].as_str().unwrap().to_owned(),
            entry["reason"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(state("demo").0, "READY");
    assert!(state("broken").1.contains("chunk-authentication"));
    assert!(state("orphan").1.contains("no-key"));
}

#[tokio::test]
async fn an_inference_carries_a_receipt_for_exactly_its_bodies() {
    let (_materials, server) = prepared(Limits::default()).await;
    let body = demo_request()
        .encode(|_| TensorEncoding::Json)
        .unwrap()
        .body()
        .to_vec();
    let answer = post(
        &server,
        "/v2/models/demo/infer",
        "application/json",
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.error());
    assert_eq!(answer.json()["id"], "r-1");
    let receipt = answer.headers["cloak-receipt"].to_str().unwrap();
    let request_id = answer.headers["cloak-request-id"].to_str().unwrap();
    let claims: std::sync::Arc<IdentityClaims> = server.identity().claims();
    let receipt = Receipt::verify(receipt, &claims).unwrap();
    assert_eq!(receipt.request_id, request_id);
    assert_eq!(receipt.model, "demo");
    // A client that sent no salt gets the one the server chose, to keep with the receipt.
    let salt =
        cloak_proto::receipt::parse_salt(answer.headers["cloak-receipt-salt"].as_bytes()).unwrap();
    assert_eq!(receipt.digests, BodyDigest::SaltedSha256);
    receipt
        .check_bodies(Some(&salt), &body, &answer.body)
        .unwrap();
    // Another request body is not the one it covers; nor does it check without the salt.
    assert!(
        receipt
            .check_bodies(Some(&salt), b"{}", &answer.body)
            .is_err()
    );
    assert_eq!(
        receipt
            .check_bodies(None, &body, &answer.body)
            .unwrap_err()
            .code(),
        "receipt-salt-missing"
    );
    // A client's own salt is used and echoed.
    let chosen = [0x42u8; 16];
    let answer = call(
        &server,
        Request::post("/v2/models/demo/infer")
            .header(header::CONTENT_TYPE, "application/json")
            .header("cloak-receipt-salt", hex::encode(chosen))
            .body(Body::from(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.error());
    assert_eq!(
        answer.headers["cloak-receipt-salt"],
        hex::encode(chosen).as_str()
    );
    let receipt =
        Receipt::verify(answer.headers["cloak-receipt"].to_str().unwrap(), &claims).unwrap();
    receipt
        .check_bodies(Some(&chosen), &body, &answer.body)
        .unwrap();

    // Binary tensors out, as tritonclient asks for them.
    let binary = demo_request()
        .with_output(RequestedOutput::new("probabilities").with_encoding(TensorEncoding::Binary))
        .encode(|_| TensorEncoding::Binary)
        .unwrap();
    let answer = call(
        &server,
        Request::post("/v2/models/demo/versions/1/infer")
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(
                "inference-header-content-length",
                binary.header_len().unwrap(),
            )
            .body(Body::from(binary.body().to_vec()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .headers
            .contains_key("inference-header-content-length")
    );
}

#[tokio::test]
async fn a_client_that_asks_for_blake3_gets_a_version_3_receipt_and_others_version_2() {
    let (_materials, server) = prepared(Limits::default()).await;
    let claims: std::sync::Arc<IdentityClaims> = server.identity().claims();
    let body = demo_request()
        .encode(|_| TensorEncoding::Json)
        .unwrap()
        .body()
        .to_vec();
    let salt = [0x17u8; 16];
    // A body over a mebibyte is hashed and parsed on the blocking pool: the same digests.
    let mut large = body.clone();
    large.resize(body.len() + (1 << 20), b' ');
    for (asked, expected, body) in [
        (Some("blake3"), BodyDigest::SaltedBlake3, &large),
        (Some("sha256"), BodyDigest::SaltedSha256, &large),
    ]
    .into_iter()
    .chain(
        [
            (Some("blake3"), BodyDigest::SaltedBlake3),
            (Some("md5, blake3"), BodyDigest::SaltedBlake3),
            (Some("sha256,blake3"), BodyDigest::SaltedSha256),
            (Some("md5"), BodyDigest::SaltedSha256),
            (None, BodyDigest::SaltedSha256),
        ]
        .map(|(asked, expected)| (asked, expected, &body)),
    ) {
        let mut request = Request::post("/v2/models/demo/infer")
            .header(header::CONTENT_TYPE, "application/json")
            .header("cloak-receipt-salt", hex::encode(salt));
        if let Some(asked) = asked {
            request = request.header("cloak-receipt-digest", asked);
        }
        let answer = call(&server, request.body(Body::from(body.clone())).unwrap()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.error());
        let receipt =
            Receipt::verify(answer.headers["cloak-receipt"].to_str().unwrap(), &claims).unwrap();
        assert_eq!(receipt.digests, expected, "{asked:?}");
        receipt
            .check_bodies(Some(&salt), body, &answer.body)
            .unwrap();
        // Both digests are the version's: the other algorithm's are not what it states.
        let other = match expected {
            BodyDigest::SaltedBlake3 => BodyDigest::SaltedSha256,
            _ => BodyDigest::SaltedBlake3,
        };
        assert_ne!(receipt.input_sha256, other.of(&salt, body));
        assert_ne!(receipt.output_sha256, other.of(&salt, &answer.body));
        assert_eq!(
            receipt
                .check_request(Some(&salt), b"{}")
                .unwrap_err()
                .code(),
            "receipt-input-mismatch"
        );
    }
}

#[tokio::test]
async fn every_refusal_has_its_status_and_says_why_without_the_data() {
    let mut limits = Limits::default();
    limits.max_request_bytes = 4096;
    let (_materials, server) = prepared(limits).await;
    let infer = "/v2/models/demo/infer";
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            Request::post(infer)
                .body(Body::from(
                    r#"{"inputs":[{"name":"features","datatype":"INT32","shape":[1,4],"data":[1,2,3,4]}]}"#,
                ))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "INT32",
        ),
        (
            Request::post(infer)
                .body(Body::from(
                    r#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],"outputs":[{"name":"logits"}]}"#,
                ))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "has no output logits",
        ),
        (
            Request::post(infer)
                .header(header::CONTENT_ENCODING, "gzip")
                .body(Body::from("{}"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "Content-Encoding: identity",
        ),
        (
            Request::post(infer)
                .header("inference-header-content-length", "many")
                .body(Body::from("{}"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "is not a byte count",
        ),
        (
            Request::post(infer)
                .body(Body::from(vec![b' '; 8192]))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "4096-byte limit",
        ),
        (
            Request::post("/v2/models/broken/infer")
                .body(Body::from("{}"))
                .unwrap(),
            StatusCode::SERVICE_UNAVAILABLE,
            "is not available",
        ),
        (
            Request::get("/nowhere").body(Body::empty()).unwrap(),
            StatusCode::NOT_FOUND,
            "no such endpoint",
        ),
        (
            Request::delete("/v2/models/demo").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ),
        (
            Request::get("/v1/ohttp").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
        ),
        (
            Request::get("/v1/attestation").body(Body::empty()).unwrap(),
            StatusCode::BAD_REQUEST,
            "give a fresh nonce",
        ),
        (
            Request::get("/v1/attestation?nonce=zz").body(Body::empty()).unwrap(),
            StatusCode::BAD_REQUEST,
            "must be hex",
        ),
        (
            Request::get(format!("/v1/attestation?nonce={}", "00".repeat(65)))
                .body(Body::empty())
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "1 to 64 bytes",
        ),
        (
            Request::post("/v1/ohttp")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "message/ohttp-req",
        ),
        (
            Request::post("/v1/ohttp")
                .header(header::CONTENT_TYPE, "message/ohttp-req")
                .body(Body::from("not an encapsulated request"))
                .unwrap(),
            StatusCode::BAD_REQUEST,
            "ohttp-key",
        ),
        // Over the limit and its 64 KiB allowance for the encapsulation: unread when declared,
        // refused as it arrives when undeclared or declared smaller than it is.
        (
            Request::post("/v1/ohttp")
                .header(header::CONTENT_TYPE, "message/ohttp-req")
                .header(header::CONTENT_LENGTH, "80000")
                .body(Body::from(vec![7u8; 80_000]))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the server's 69632-byte limit",
        ),
        (
            Request::post("/v1/ohttp")
                .header(header::CONTENT_TYPE, "message/ohttp-req")
                .body(Body::from(vec![7u8; 80_000]))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "the encapsulated request is larger than the server's 69632-byte limit",
        ),
        (
            Request::post("/v1/ohttp")
                .header(header::CONTENT_TYPE, "message/ohttp-req")
                .header(header::CONTENT_LENGTH, "1000")
                .body(Body::from(vec![7u8; 80_000]))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "the encapsulated request is larger than the server's 69632-byte limit",
        ),
    ];
    for (request, status, says) in cases {
        let what = format!("{} {}", request.method(), request.uri());
        let answer = call(&server, request).await;
        assert_eq!(answer.status, status, "{what}: {}", answer.error());
        assert!(answer.error().contains(says), "{what}: {}", answer.error());
        assert_eq!(
            answer.headers[header::CONTENT_TYPE],
            "application/json",
            "{what}"
        );
    }
    // A refusal quotes no value it was sent.
    let answer = post(
        &server,
        infer,
        "application/json",
        br#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,3],"data":[1.23456,2,3]}]}"#
            .to_vec(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(!answer.error().contains("1.23456"), "{}", answer.error());

    // The server counted them, by outcome, under the served model's name or "(unknown)".
    let metrics = String::from_utf8(get(&server, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains(r#"cloak_inference_requests_total{model="demo",outcome="client_error"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"model="(unknown)",outcome="rejected""#),
        "{metrics}"
    );
    assert!(!metrics.contains("1.23456"), "{metrics}");
    // And names the engine that ran them, and the plans it compiled for the model.
    assert!(
        metrics.contains(r#"cloak_engine_info{engine="tract",version="0.23.9",threads="1"} 1"#),
        "{metrics}"
    );
    let compiled = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"cloak_plan_compilations_total{model="demo"} "#))
        .unwrap_or_else(|| panic!("{metrics}"));
    // Every request here was refused before the engine: nothing compiled.
    assert_eq!(compiled.trim(), "0", "{metrics}");
}

#[tokio::test]
async fn a_fresh_attestation_answers_the_nonce() {
    let (_materials, server) = prepared(Limits::default()).await;
    let answer = get(&server, "/v1/attestation?nonce=00112233").await;
    assert_eq!(answer.status, StatusCode::OK);
    let document: cloak_proto::attestation::AttestationDocument =
        serde_json::from_slice(&answer.body).unwrap();
    let claims = IdentityClaims::from_cbor(&document.claims).unwrap();
    assert_eq!(claims.nonce.as_deref(), Some(&[0x00, 0x11, 0x22, 0x33][..]));
    let engine = claims.engine.as_ref().unwrap();
    assert_eq!(
        (engine.name.as_str(), engine.library_sha256),
        ("tract", None)
    );
    assert_eq!(
        claims.evidence_digest(),
        server.identity().claims().evidence_digest()
    );
    assert!(document.collateral_json().is_some());
}

/// The plain-HTTP application for encrypted requests (`PreparedServer::ohttp_router`): every
/// route of the attested application, with every method and spelt several ways, is refused
/// there with `plaintext-refused`, except the encrypted path, fresh attestation and the health
/// probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_application_serves_nothing_in_the_clear() {
    let (_sim, server) = prepared(Limits::default()).await;
    let body = demo_request().encode(|_| TensorEncoding::Json).unwrap();
    let routes = [
        "/v2",
        "/v2/models",
        "/v2/models/demo",
        "/v2/models/demo/versions/1",
        "/v2/models/demo/ready",
        "/v2/models/demo/versions/1/ready",
        "/v2/models/demo/infer",
        "/v2/models/demo/versions/1/infer",
        "/v2/repository/index",
        "/metrics",
    ];
    let spellings = routes.iter().flat_map(|route| {
        [
            (*route).to_owned(),
            format!("{route}/"),
            format!("/{route}"),
            route.replace("demo", "%64emo"),
            route.to_ascii_uppercase(),
        ]
    });
    for path in spellings {
        for method in ["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"] {
            let request = Request::builder()
                .method(method)
                .uri(&path)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.body().to_vec()))
                .unwrap();
            let refused = answer(server.ohttp_router(), request).await;
            assert_eq!(refused.status, StatusCode::NOT_FOUND, "{method} {path}");
            // (An answer to HEAD has no body.)
            if method != "HEAD" {
                assert!(
                    refused.error().starts_with("plaintext-refused"),
                    "{method} {path}: {}",
                    refused.error()
                );
            }
        }
    }
    // The same request on the attested application is answered: the refusals above are the
    // plain application's, not a bad request's.
    let served = post(
        &server,
        "/v2/models/demo/infer",
        "application/json",
        body.body().to_vec(),
    )
    .await;
    assert_eq!(served.status, StatusCode::OK);

    // What the plain application serves.
    let plain = |request: Request<Body>| answer(server.ohttp_router(), request);
    let live = plain(Request::get("/v2/health/live").body(Body::empty()).unwrap()).await;
    assert_eq!(live.status, StatusCode::OK);
    let ready = plain(
        Request::get("/v2/health/ready")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not started yet"
    );
    let nonce = "00112233".repeat(4);
    let attestation = plain(
        Request::get(format!("/v1/attestation?nonce={nonce}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(attestation.status, StatusCode::OK);
    let gateway = plain(
        Request::post("/v1/ohttp")
            .header(header::CONTENT_TYPE, "message/ohttp-req")
            .body(Body::from(vec![0u8; 64]))
            .unwrap(),
    )
    .await;
    assert_eq!(gateway.status, StatusCode::BAD_REQUEST);
    assert!(gateway.error().starts_with("ohttp-"), "{}", gateway.error());
    let wrong_method = plain(Request::get("/v1/ohttp").body(Body::empty()).unwrap()).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong_method.error().contains("method not allowed"));
}
