//! End to end on the simulated platform: a model owner seals models, the server loads the ones
//! it has keys for and attests, a client appraises it under a policy before sending anything,
//! and inference over attested TLS matches in-process inference and onnxruntime.

use std::collections::HashMap;
use std::net::SocketAddr;

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::{AppraisalPolicy, DebugPolicy, TrustRootPolicy};
use cloak_attest::quote::Measurements;
use cloak_attest::types::Measurement;
use cloak_client::{AppraisalError, Client, Error, Method, Mode, Response, Transport};
use cloak_crypto::container::{self, ModelName, SealOptions};
use cloak_engine::Engine;
use cloak_proto::kserve::{
    EncodedBody, InferRequest, InferResponse, Limits as KserveLimits, NamedTensor, RequestedOutput,
    TensorEncoding,
};
use cloak_proto::receipt::BodyDigest;
use cloak_proto::tensor::Tensor;
use cloak_server::Limits;
use cloak_tee::sim::{SimConfig, SimPlatform};
use cloak_test_support::models::{DEMO_ONNX as DEMO_MODEL, reference, seal as seal_model};
use cloak_test_support::server::{SimServer, sample};

/// A server with the demo model, the real PP-OCR direction classifier (when cached), a
/// tampered container and a container with no key, its metrics on plain HTTP too, and a
/// plain-HTTP listener for encrypted requests.
async fn start(debug: bool, limits: Limits) -> (SimServer, Option<reference::Reference>) {
    let real = reference::load("ppocr-cls");
    let mut builder = SimServer::builder()
        .tampered("broken")
        .orphan("orphan")
        .limits(limits)
        .metrics_listener()
        .ohttp_listener();
    if let Some(real) = &real {
        builder = builder.model("ppocr-cls", &real.onnx);
    }
    if debug {
        builder = builder.debug();
    }
    (builder.start().await, real)
}

/// Appraises `server` under `policy`, with `collateral` or the relayed one.
async fn connect(
    server: &SimServer,
    policy: AppraisalPolicy,
    collateral: Option<Collateral>,
) -> Result<Client, Error> {
    let mut builder = Client::builder().policy(policy);
    if let Some(collateral) = collateral {
        builder = builder.collateral(collateral);
    }
    builder.connect(&server.url()).await
}

/// `POST path` with an encoded KServe body; the answer whatever its status.
async fn post(client: &Client, path: &str, body: &EncodedBody) -> Response {
    client
        .send(Method::Post, path, body.body().to_vec(), body.header_len())
        .await
        .unwrap()
}

/// `POST path` with a JSON body; the answer whatever its status.
async fn post_json(client: &Client, path: &str, json: &[u8]) -> Response {
    client
        .send(Method::Post, path, json.to_vec(), None)
        .await
        .unwrap()
}

/// Posts an encoded request, requires 200, and parses the response.
async fn infer_ok(client: &Client, path: &str, body: &EncodedBody) -> InferResponse {
    let response = post(client, path, body).await;
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    InferResponse::parse(
        &response.body,
        response.header_len,
        &KserveLimits::default(),
    )
    .unwrap()
}

fn demo_request() -> InferRequest {
    let features =
        Tensor::from_values(vec![2, 4], &[0.5f32, -1.0, 2.0, 7.77, 1.0, 1.0, 1.0, 1.0]).unwrap();
    InferRequest::new(vec![NamedTensor::new("features", features)]).with_id("q-1")
}

/// The demo model's outputs for `request`, run in this process on tract.
fn demo_in_process(request: &InferRequest) -> Vec<(String, Tensor)> {
    Engine::tract()
        .load("demo", DEMO_MODEL)
        .unwrap()
        .session()
        .run(
            request
                .clone()
                .into_inputs()
                .into_iter()
                .map(NamedTensor::into_parts)
                .collect(),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attested_inference_matches_in_process_and_onnxruntime() {
    let (fixture, real_model) = start(false, Limits::default()).await;
    let client = connect(&fixture, fixture.policy(), None).await.unwrap();

    // The attested claims name exactly the models that loaded, with their plaintext digests.
    let appraisal = client.appraisal();
    let claims = appraisal.server().claims();
    let demo = claims.models.iter().find(|m| m.name == "demo").unwrap();
    assert_eq!(demo.sha256, cloak_crypto::hash::sha256(DEMO_MODEL));
    assert_eq!(demo.bytes, DEMO_MODEL.len() as u64);
    assert!(
        claims
            .models
            .iter()
            .all(|m| m.name != "broken" && m.name != "orphan")
    );
    assert_eq!(claims.platform, "sim");
    // RFC 9458 key configuration: id 1, DHKEM(X25519), 32-byte key, HKDF-SHA256 + AES-256-GCM.
    let config = &claims.hpke_key_config;
    assert_eq!(config.len(), 1 + 2 + 32 + 2 + 8);
    assert_eq!(config[..3], [1, 0x00, 0x20]);
    assert_eq!(config[35..], [0, 8, 0, 1, 0, 2, 0, 1, 0, 1]);

    // KServe metadata and health.
    let server_meta = client.get("/v2").await.unwrap();
    assert_eq!(server_meta.status, 200);
    let server_meta: serde_json::Value = serde_json::from_slice(&server_meta.body).unwrap();
    assert_eq!(server_meta["name"], "cloak");
    assert!(
        server_meta["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "binary_tensor_data")
    );
    assert_eq!(client.get("/v2/health/live").await.unwrap().status, 200);
    assert_eq!(client.get("/v2/health/ready").await.unwrap().status, 200);
    let meta = client.get("/v2/models/demo").await.unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&meta.body).unwrap();
    assert_eq!(meta["platform"], "tract_onnx");
    assert_eq!(meta["inputs"][0]["name"], "features");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");
    assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 4]));
    assert_eq!(meta["outputs"][0]["name"], "probabilities");
    let ready = client.get("/v2/models/demo/ready").await.unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(
        client
            .get("/v2/models/demo/versions/1/ready")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        client
            .get("/v2/models/demo/versions/2/ready")
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(client.get("/v2/models/nope").await.unwrap().status, 404);

    // JSON in, JSON out, equal to the engine run in-process on the same bytes.
    let request = demo_request();
    let body = request.encode(|_| TensorEncoding::Json).unwrap();
    let response = infer_ok(&client, "/v2/models/demo/infer", &body).await;
    assert_eq!(response.model_name(), "demo");
    assert_eq!(response.id(), Some("q-1"));
    let expected = demo_in_process(&request);
    let (name, tensor) = &expected[0];
    assert_eq!(response.output(name).unwrap(), tensor);

    // Binary in, binary out (as tritonclient sends with binary_data=True).
    let binary = request
        .clone()
        .with_output(RequestedOutput::new("probabilities").with_encoding(TensorEncoding::Binary));
    let body = binary.encode(|_| TensorEncoding::Binary).unwrap();
    let response = post(&client, "/v2/models/demo/versions/1/infer", &body).await;
    assert_eq!(response.status, 200);
    assert!(response.header_len.is_some());
    let response = InferResponse::parse(
        &response.body,
        response.header_len,
        &KserveLimits::default(),
    )
    .unwrap();
    assert_eq!(response.output("probabilities").unwrap(), tensor);

    // A real pretrained CNN, sealed, served and compared with onnxruntime.
    if let Some(real) = &real_model {
        let inputs = real
            .inputs
            .iter()
            .map(|(name, tensor)| NamedTensor::new(name, tensor.clone()))
            .collect();
        let body = InferRequest::new(inputs)
            .with_binary_data_output(true)
            .encode(|_| TensorEncoding::Binary)
            .unwrap();
        let response = infer_ok(&client, "/v2/models/ppocr-cls/infer", &body).await;
        for (name, expected) in &real.outputs {
            let worst =
                reference::worst_error(response.output(name).unwrap(), expected, 1e-4, 1e-3);
            assert!(worst <= 1.0, "{name}: {worst}");
        }
    }

    // The tampered model is reported, with why; the one without a key too; the rest serve.
    let index = client
        .send(Method::Post, "/v2/repository/index", b"{}".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(index.status, 200);
    let index: serde_json::Value = serde_json::from_slice(&index.body).unwrap();
    let entry = |name: &str| {
        index
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {index}"))
            .clone()
    };
    assert_eq!(entry("demo")["state"], "READY");
    assert_eq!(entry("broken")["state"], "UNAVAILABLE");
    assert!(
        entry("broken")["reason"]
            .as_str()
            .unwrap()
            .contains("chunk-authentication"),
        "{index}"
    );
    assert_eq!(entry("orphan")["state"], "UNAVAILABLE");
    assert!(
        entry("orphan")["reason"]
            .as_str()
            .unwrap()
            .contains("no-key"),
        "{index}"
    );
    let broken = client.get("/v2/models/broken/ready").await.unwrap();
    assert_ne!(broken.status, 200);
    let infer_broken = post_json(&client, "/v2/models/broken/infer", b"{\"inputs\":[]}").await;
    assert_eq!(infer_broken.status, 503);
    assert!(String::from_utf8_lossy(&infer_broken.body).contains("is not available"));

    // Metrics count what happened, and never carry a data value.
    let metrics = fixture.metrics().await;
    // The plain-HTTP metrics listener serves the same text, and nothing else.
    let plain = plain_http_get(fixture.running().metrics_addr().unwrap(), "/metrics").await;
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
    assert!(plain.contains("cloak_inference_requests_total"), "{plain}");
    let other = plain_http_get(fixture.running().metrics_addr().unwrap(), "/v2/models").await;
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    assert!(
        metrics.contains("cloak_inference_requests_total"),
        "{metrics}"
    );
    assert!(metrics.contains("model=\"demo\""), "{metrics}");
    assert!(
        metrics.contains("cloak_inference_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("7.77"),
        "metrics carry an input value?\n{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_triton_errors_and_the_server_keeps_serving() {
    let mut limits = Limits::default();
    limits.max_request_bytes = 4096;
    limits.max_elements = 64;
    let (fixture, _) = start(false, limits).await;
    let client = connect(&fixture, fixture.policy(), None).await.unwrap();
    let post = |body: Vec<u8>, header_len: Option<usize>| {
        let client = client.clone();
        async move {
            client
                .send(Method::Post, "/v2/models/demo/infer", body, header_len)
                .await
                .unwrap()
        }
    };
    let error_of = |body: &[u8]| -> String {
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        value["error"].as_str().unwrap().to_owned()
    };

    let too_big = post(vec![b' '; 5000], None).await;
    assert_eq!(too_big.status, 413);
    assert!(error_of(&too_big.body).contains("4096"));

    let too_many = post(
        br#"{"inputs":[{"name":"features","datatype":"FP32","shape":[100,4],"data":[]}]}"#.to_vec(),
        None,
    )
    .await;
    assert_eq!(too_many.status, 400);
    assert!(
        error_of(&too_many.body).contains("64 elements"),
        "{}",
        error_of(&too_many.body)
    );

    let wrong_type = post(
        br#"{"inputs":[{"name":"features","datatype":"INT32","shape":[1,4],"data":[1,2,3,4]}]}"#
            .to_vec(),
        None,
    )
    .await;
    assert_eq!(wrong_type.status, 400);
    assert!(error_of(&wrong_type.body).contains("FP32"));

    let wrong_shape = post(
        br#"{"inputs":[{"name":"features","datatype":"FP32","shape":[1,5],"data":[1,2,3,4,5]}]}"#
            .to_vec(),
        None,
    )
    .await;
    assert_eq!(wrong_shape.status, 400);

    let not_json = post(b"{\"inputs\": [".to_vec(), None).await;
    assert_eq!(not_json.status, 400);

    let bad_header_len = post(b"{}".to_vec(), Some(10)).await;
    assert_eq!(bad_header_len.status, 400);

    let secret = "7.123456";
    let leaky = post(
        format!(r#"{{"inputs":[{{"name":"features","datatype":"FP32","shape":[1,4],"data":[{secret},"x",1,1]}}]}}"#)
            .into_bytes(),
        None,
    )
    .await;
    assert_eq!(leaky.status, 400);
    assert!(!error_of(&leaky.body).contains(secret));

    // Still serving.
    let body = demo_request().encode(|_| TensorEncoding::Json).unwrap();
    assert_eq!(post(body.body().to_vec(), None).await.status, 200);
    let metrics = fixture.metrics().await;
    assert!(!metrics.contains(secret));
    assert!(metrics.contains("outcome=\"client_error\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_measurement_is_refused_before_any_request_byte() {
    let (fixture, _) = start(false, Limits::default()).await;
    let mut policy = fixture.policy();
    policy.sgx_identity_mut().mrenclave = Some(vec![Measurement::from_bytes([0x5a; 32])]);
    // With the collateral at hand the very first handshake appraises the quote in full and
    // fails, so not one HTTP request reaches the server.
    let err = connect(&fixture, policy.clone(), Some(fixture.sim().collateral()))
        .await
        .unwrap_err();
    assert!(err.is_rejection(), "{err}");
    assert_eq!(err.code(), "measurement-mismatch", "{err}");
    // The only attestation served is the one the metrics reader below asks for itself.
    let metrics = fixture.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|line| line == "cloak_attestations_total 1"),
        "{metrics}"
    );
    // Without collateral the only bytes before appraisal are a GET with a random nonce.
    let err = connect(&fixture, policy, None).await.unwrap_err();
    assert_eq!(err.code(), "measurement-mismatch", "{err}");
    assert_no_inference(&fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulation_root_is_refused_unless_named() {
    let (fixture, _) = start(false, Limits::default()).await;
    let mut intel_only = AppraisalPolicy::strict();
    intel_only.sgx_identity_mut().mrenclave =
        Some(vec![Measurement::from_bytes(fixture.measurement())]);
    for collateral in [Some(fixture.sim().collateral()), None] {
        let err = connect(&fixture, intel_only.clone(), collateral)
            .await
            .unwrap_err();
        assert!(err.is_rejection(), "{err}");
        assert_eq!(err.code(), "untrusted-root", "{err}");
    }
    // Another simulation root (another "vendor") is not this one either.
    let other = tempfile::tempdir().unwrap();
    let other = SimPlatform::init(other.path(), &SimConfig::up_to_date()).unwrap();
    let mut policy = fixture.policy();
    policy = policy.with_trust_root(TrustRootPolicy::Der(other.root_der().to_vec()));
    let err = connect(&fixture, policy, None).await.unwrap_err();
    assert_eq!(err.code(), "untrusted-root", "{err}");
    assert_no_inference(&fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_debug_enclave_is_refused_unless_allowed() {
    let (fixture, _) = start(true, Limits::default()).await;
    let err = connect(&fixture, fixture.policy(), None).await.unwrap_err();
    assert!(err.is_rejection(), "{err}");
    assert_eq!(err.code(), "debug-enclave", "{err}");
    let err = connect(&fixture, fixture.policy(), Some(fixture.sim().collateral()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "debug-enclave", "{err}");
    // The positive control: the same server passes when debug is allowed.
    let client = connect(
        &fixture,
        fixture.policy().with_debug(DebugPolicy::Allow),
        None,
    )
    .await
    .unwrap();
    let Measurements::Sgx(measurements) = client.appraisal().server().measurements() else {
        panic!("not SGX")
    };
    assert!(measurements.debug);
}

/// No inference request reached the server.
async fn assert_no_inference(fixture: &SimServer) {
    let metrics = fixture.metrics().await;
    assert!(
        !metrics.lines().any(
            |line| line.starts_with("cloak_inference_requests_total{") && !line.ends_with(" 0")
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_platform_is_refused() {
    let (fixture, _) = start(false, Limits::default()).await;
    let mut sim = SimPlatform::open(fixture.sim().dir()).unwrap();
    sim.revoke().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let revoked = Collateral::from_json(&sim.collateral(now).unwrap()).unwrap();
    let err = connect(&fixture, fixture.policy(), Some(revoked))
        .await
        .unwrap_err();
    assert!(err.is_rejection(), "{err}");
    assert!(
        matches!(err, Error::Appraisal(AppraisalError::Quote(_))),
        "{err}"
    );
}

/// A bare HTTP/1.1 GET over plain TCP.
async fn plain_http_get(addr: SocketAddr, path: &str) -> String {
    plain_http(addr, "GET", path, &[]).await
}

/// `method path` with `body` over plain HTTP/1.1; the whole answer, status line first.
async fn plain_http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// The plain-HTTP listener for encrypted requests (what a relay or a TLS-terminating load
/// balancer forwards to): a client that has only an `http://` URL appraises a fresh attestation
/// there and gets its encapsulated inference answered, with a receipt verified against the
/// claims it appraised; nothing is served there in the clear, and a client that asks for
/// attested TLS over it is refused before it sends anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_listener_takes_encrypted_requests_and_serves_nothing_in_the_clear() {
    let (fixture, _) = start(false, Limits::default()).await;
    let url = fixture.ohttp_url();
    let encrypted = Client::builder()
        .policy(fixture.policy())
        .mode(Mode::Encapsulated)
        .connect(&url)
        .await
        .unwrap();
    let attested = connect(&fixture, fixture.policy(), None).await.unwrap();
    let evidence = attested.appraisal().server().claims().evidence_digest();
    assert_eq!(
        encrypted.appraisal().server().claims().evidence_digest(),
        evidence,
        "the attestation fetched over plain HTTP is the server's own"
    );
    let inference = encrypted.infer("demo", &demo_request()).await.unwrap();
    let direct = attested.infer("demo", &demo_request()).await.unwrap();
    assert_eq!(
        inference.response.outputs()[0].tensor(),
        direct.response.outputs()[0].tensor()
    );
    assert_eq!(inference.receipt.evidence_sha256, evidence);

    // Nothing in the clear: KServe inference and metadata, metrics.
    let addr = fixture.running().ohttp_addr().unwrap();
    let body = demo_request().encode(|_| TensorEncoding::Json).unwrap();
    for (method, path, body) in [
        ("POST", "/v2/models/demo/infer", body.body()),
        ("POST", "/v2/models/demo/versions/1/infer", body.body()),
        ("GET", "/v2/models/demo", &[][..]),
        ("GET", "/v2/models", &[][..]),
        ("GET", "/v2", &[][..]),
        ("POST", "/v2/repository/index", &[][..]),
        ("GET", "/metrics", &[][..]),
    ] {
        let answer = plain_http(addr, method, path, body).await;
        assert!(
            answer.starts_with("HTTP/1.1 404"),
            "{method} {path}: {answer}"
        );
        assert!(
            answer.contains("plaintext-refused"),
            "{method} {path}: {answer}"
        );
        assert!(
            !answer.contains("probabilities"),
            "{method} {path}: {answer}"
        );
    }
    // The probes a load balancer needs.
    for path in ["/v2/health/live", "/v2/health/ready"] {
        let answer = plain_http_get(addr, path).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }

    // Attested TLS cannot be had over plain HTTP: the client says so and sends nothing.
    let refused = Client::builder()
        .policy(fixture.policy())
        .connect(&url)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Config(m) if m.contains("https://")),
        "{refused:?}"
    );
}

/// The model count and total-memory limits, and two containers naming the same model: the
/// models over a limit stay unloaded with their reason, the rest load.
#[test]
fn model_limits_leave_models_unloaded_with_their_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let mut keys = HashMap::new();
    for name in ["a", "b", "c"] {
        keys.insert(name.to_owned(), seal_model(&models, name, name, DEMO_MODEL));
    }
    // A second container for model `a`, under the same key.
    let duplicate = SealOptions::new(ModelName::new("a").unwrap());
    let out = std::fs::File::create(models.join("z-copy.cloak")).unwrap();
    container::seal(&keys["a"], &duplicate, DEMO_MODEL, out).unwrap();
    let store = |limits: Limits| {
        cloak_server::ModelStore::load_dir(&models, &keys, &Engine::new(), &limits).unwrap()
    };
    let codes = |store: &cloak_server::ModelStore| -> Vec<(String, String)> {
        store
            .failed()
            .into_iter()
            .map(|f| (f.name, f.code))
            .collect()
    };

    let all = store(Limits::default());
    assert_eq!(all.ready().len(), 3);
    assert_eq!(
        codes(&all),
        [("a".to_owned(), "duplicate-model".to_owned())]
    );

    let mut limits = Limits::default();
    limits.max_models = 2;
    let two = store(limits);
    assert_eq!(two.ready().len(), 2);
    assert!(
        codes(&two).contains(&("c".to_owned(), "too-many-models".to_owned())),
        "{:?}",
        codes(&two)
    );

    let mut limits = Limits::default();
    limits.max_model_bytes = DEMO_MODEL.len() as u64 * 2;
    let bounded = store(limits);
    assert_eq!(bounded.ready().len(), 2);
    assert!(
        codes(&bounded).contains(&("c".to_owned(), "model-memory-limit".to_owned())),
        "{:?}",
        codes(&bounded)
    );
}

/// The first output of `request` on the demo model over `client`.
async fn parse_outputs(client: &Client, request: &InferRequest) -> Tensor {
    let body = request.encode(|_| TensorEncoding::Json).unwrap();
    infer_ok(client, "/v2/models/demo/infer", &body)
        .await
        .outputs()[0]
        .tensor()
        .clone()
}

/// The encrypted path and receipts: a client that sees only a transport it does not trust
/// appraises a fresh attestation, encapsulates KServe requests to the attested HPKE key, and
/// gets the same answers as over attested TLS, each with a receipt that verifies against the
/// attested claims and refuses any change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encapsulated_requests_match_attested_tls_and_carry_receipts() {
    use cloak_proto::receipt::{Receipt, ReceiptError};

    let (fixture, _) = start(false, Limits::default()).await;
    let attested = connect(&fixture, fixture.policy(), None).await.unwrap();
    // The transport here is the server's own TLS, trusted as a plain certificate: nothing in
    // the encrypted path relies on it being the enclave.
    let certificate = fixture.running().certificate();
    let url = format!(
        "https://localhost:{}",
        fixture.running().local_addr().port()
    );
    let encrypted = Client::builder()
        .policy(fixture.policy())
        .mode(Mode::Encapsulated)
        .transport(Transport::with_ca_der([certificate.to_vec()]))
        .connect(&url)
        .await
        .unwrap();
    let encrypted_appraisal = encrypted.appraisal();
    let claims = encrypted_appraisal.server().claims();
    let attested_appraisal = attested.appraisal();
    assert_eq!(
        claims.evidence_digest(),
        attested_appraisal.server().claims().evidence_digest(),
        "both paths appraise the same server"
    );
    assert!(claims.nonce.is_some());

    for encoding in [TensorEncoding::Json, TensorEncoding::Binary] {
        let request = demo_request()
            .with_output(RequestedOutput::new("probabilities").with_encoding(encoding));
        let body = request.encode(|_| encoding).unwrap();
        let direct = post(&attested, "/v2/models/demo/infer", &body).await;
        let sealed = post(&encrypted, "/v2/models/demo/infer", &body).await;
        assert_eq!(
            sealed.status,
            200,
            "{}",
            String::from_utf8_lossy(&sealed.body)
        );
        assert_eq!(sealed.header_len, direct.header_len);
        assert_eq!(
            sealed.header_len.is_some(),
            encoding == TensorEncoding::Binary,
            "binary outputs say where their JSON header ends"
        );
        let parse = |r: &Response| {
            InferResponse::parse(&r.body, r.header_len, &KserveLimits::default()).unwrap()
        };
        assert_eq!(
            parse(&sealed).outputs()[0].tensor(),
            parse(&direct).outputs()[0].tensor()
        );

        // Both receipts verify against the claims each path appraised, for exactly these
        // bodies, and name the model's plaintext digest.
        let receipt = sealed
            .verify_receipt(encrypted_appraisal.server(), body.body())
            .unwrap();
        assert_eq!(receipt.model, "demo");
        assert_eq!(receipt.model_sha256, cloak_crypto::hash::sha256(DEMO_MODEL));
        let direct_receipt = direct
            .verify_receipt(attested_appraisal.server(), body.body())
            .unwrap();
        assert_ne!(receipt.request_id, direct_receipt.request_id);
        assert_eq!(receipt.evidence_sha256, direct_receipt.evidence_sha256);
        // Another request body, another response body, a changed receipt: refused.
        assert_eq!(
            sealed
                .verify_receipt(encrypted_appraisal.server(), b"{}")
                .unwrap_err()
                .code(),
            "receipt-input-mismatch"
        );
        let mut other = sealed.clone();
        other.body = direct.body.clone();
        other.body.push(b' ');
        assert_eq!(
            other
                .verify_receipt(encrypted_appraisal.server(), body.body())
                .unwrap_err()
                .code(),
            "receipt-output-mismatch"
        );
        let text = sealed.receipt.clone().unwrap();
        let mut flipped = text.into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(Receipt::verify(&flipped, claims).is_err());
        // A receipt is not valid under another server's claims.
        let other_server = SimServer::builder().start().await;
        let other_client = other_server.client().await;
        assert_eq!(
            Receipt::verify(
                sealed.receipt.as_deref().unwrap(),
                other_client.appraisal().server().claims()
            ),
            Err(ReceiptError::Signature)
        );
        other_server.shutdown().await;
    }

    // Errors travel inside the encapsulation with their KServe status; they carry no receipt.
    let missing = post_json(&encrypted, "/v2/models/nope/infer", b"{\"inputs\":[]}").await;
    assert_eq!(missing.status, 404);
    assert!(missing.receipt.is_none());
    // Only the KServe API is reachable inside: not metrics, attestation, or the gateway itself.
    for path in ["/metrics", "/v1/attestation?nonce=00", "/v1/ohttp"] {
        assert_eq!(encrypted.get(path).await.unwrap().status, 404, "{path}");
    }
    let ready = encrypted.get("/v2/models/demo/ready").await.unwrap();
    assert_eq!(ready.status, 200);

    // Many requests on one transport connection.
    let request = demo_request();
    let mut session = encrypted.session().await.unwrap();
    for _ in 0..3 {
        let body = request.encode(|_| TensorEncoding::Binary).unwrap();
        let response = session
            .send(
                Method::Post,
                "/v2/models/demo/infer",
                body.body().to_vec(),
                body.header_len(),
            )
            .await
            .unwrap();
        response
            .verify_receipt(encrypted_appraisal.server(), body.body())
            .unwrap();
    }

    // The SDK's typed call, in both modes: KServe types in and out, receipt verified.
    let expected = parse_outputs(&attested, &demo_request()).await;
    for mode in [Mode::AttestedTls, Mode::Encapsulated] {
        let remote = Client::builder()
            .policy(fixture.policy())
            .mode(mode)
            .transport(Transport::with_ca_der([certificate.to_vec()]))
            .connect(&url)
            .await
            .unwrap();
        let mut session = remote.session().await.unwrap();
        let answer = session.infer("demo", &demo_request()).await.unwrap();
        assert_eq!(answer.receipt.model, "demo", "{mode:?}");
        assert_eq!(answer.response.outputs()[0].tensor(), &expected, "{mode:?}");
        Receipt::verify(&answer.receipt_text, remote.appraisal().server().claims()).unwrap();
        let missing = session.infer("nope", &demo_request()).await.unwrap_err();
        assert!(
            matches!(&missing, Error::Server(s) if s.status == 404),
            "{missing}"
        );

        // The raw call under it: a success comes with its receipt verified for these bytes, a
        // refusal with none.
        let body = demo_request().encode(|_| TensorEncoding::Binary).unwrap();
        let (response, receipt) = session
            .send_inference(
                "/v2/models/demo/infer",
                body.body().to_vec(),
                body.header_len(),
            )
            .await
            .unwrap();
        let receipt = receipt.expect("a successful inference carries a verified receipt");
        receipt
            .check_bodies(response.receipt_salt.as_ref(), body.body(), &response.body)
            .unwrap();
        let (refused, none) = session
            .send_inference("/v2/models/nope/infer", body.body().to_vec(), None)
            .await
            .unwrap();
        assert_eq!(refused.status, 404, "{mode:?}");
        assert!(none.is_none());
    }

    // (A restarted server's refusal of requests sealed to its old key is tested through nginx
    // in the CLI tests: a transport that outlives the server.)
    fixture.shutdown().await;
}

/// The ONNX Runtime engine behind the same server: the default Silero VAD, which tract cannot
/// run (`If`), served over attested TLS and as encrypted requests, each answer equal to
/// onnxruntime's reference and carrying a receipt the client verified; the demo model answers
/// as tract does; the claims name the engine and the library, and the measurement covers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onnxruntime_serves_what_tract_cannot_in_both_modes_with_receipts() {
    let Some(library) = cloak_test_support::deps::onnxruntime_library() else {
        return;
    };
    let engine = Engine::onnxruntime(&library).unwrap();
    let library_sha = engine.info().library().unwrap().sha256();
    let vad = reference::load("silero-vad");
    let mut builder = SimServer::builder().engine(engine);
    if let Some(vad) = &vad {
        builder = builder.model("silero-vad", &vad.onnx);
    }
    let server = builder.start().await;
    assert_ne!(
        server.measurement(),
        cloak_test_support::sim::this_process()
    );

    for mode in [Mode::AttestedTls, Mode::Encapsulated] {
        let client = server.client_with(mode).await;
        let claims = client.appraisal().server().claims().clone();
        let engine = claims.engine.unwrap();
        assert_eq!(engine.name, "onnxruntime");
        assert_eq!(engine.library_sha256, Some(library_sha));
        // Model metadata names the engine's platform as Triton does.
        let meta = client.get("/v2/models/demo").await.unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&meta.body).unwrap();
        assert_eq!(meta["platform"], "onnxruntime_onnx", "{mode:?}");

        let request = demo_request();
        let answer = client.infer("demo", &request).await.unwrap();
        let expected = demo_in_process(&request);
        let (name, tensor) = &expected[0];
        let worst =
            reference::worst_error(answer.response.output(name).unwrap(), tensor, 1e-6, 1e-5);
        assert!(worst <= 1.0, "{mode:?} demo: {worst}");
        assert_eq!(answer.receipt.model, "demo");

        if let Some(vad) = &vad {
            let inputs = vad
                .inputs
                .iter()
                .map(|(name, tensor)| NamedTensor::new(name, tensor.clone()))
                .collect();
            let answer = client
                .infer("silero-vad", &InferRequest::new(inputs))
                .await
                .unwrap();
            for (name, expected) in &vad.outputs {
                let worst = reference::worst_error(
                    answer.response.output(name).unwrap(),
                    expected,
                    1e-5,
                    1e-3,
                );
                assert!(worst <= 1.0, "{mode:?} {name}: {worst}");
            }
            assert_eq!(answer.receipt.model, "silero-vad");
        }
    }
    server.shutdown().await;
}

/// A request that waits for a worker: with one worker busy on a slow model (the real PP-OCR
/// detector), a small request over each path queues (the queue-depth gauge shows it), is
/// hashed before it waits, and is then answered with a version 3 receipt (salted BLAKE3, the
/// SDK's default) that its client verified against the exact bodies — equal to the answer it
/// gets with the worker free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_queues_for_a_worker_keeps_its_receipt() {
    let Some(slow) = reference::load("ppocr-det") else {
        return;
    };
    let mut limits = Limits::default();
    limits.max_concurrent = 1;
    let server = SimServer::builder()
        .model("ppocr-det", &slow.onnx)
        .limits(limits)
        .start()
        .await;
    let slow_request = InferRequest::new(
        slow.inputs
            .iter()
            .map(|(name, tensor)| NamedTensor::new(name, tensor.clone()))
            .collect(),
    );
    let metrics = server.client().await;
    let gauge = |text: &str, name: &str| -> f64 {
        sample(text, name).unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    let read_metrics = || async {
        let response = metrics.get("/metrics").await.unwrap();
        String::from_utf8(response.body).unwrap()
    };

    for mode in [Mode::AttestedTls, Mode::Encapsulated] {
        let client = server.client_with(mode).await;
        let free = client.infer("demo", &demo_request()).await.unwrap();
        // A request queues only if it arrives while the worker is busy: the slow request is
        // sent again until one small request has been seen waiting (almost always the first).
        let mut queued = None;
        for _ in 0..5 {
            let busy = {
                let client = client.clone();
                let request = slow_request.clone();
                tokio::spawn(async move { client.infer("ppocr-det", &request).await })
            };
            while !busy.is_finished()
                && gauge(&read_metrics().await, "cloak_inference_in_flight") < 1.0
            {
                tokio::task::yield_now().await;
            }
            let small = {
                let client = client.clone();
                tokio::spawn(async move { client.infer("demo", &demo_request()).await })
            };
            let mut waited = false;
            while !small.is_finished() {
                waited |= gauge(&read_metrics().await, "cloak_inference_queue_depth") >= 1.0;
            }
            let answer = small.await.unwrap().unwrap();
            busy.await.unwrap().unwrap();
            if waited {
                queued = Some(answer);
                break;
            }
        }
        let queued = queued.unwrap_or_else(|| panic!("{mode:?}: no request ever queued"));
        assert_eq!(queued.receipt.digests, BodyDigest::SaltedBlake3, "{mode:?}");
        assert_eq!(queued.receipt.model, "demo");
        assert_eq!(
            queued.response.outputs()[0].tensor(),
            free.response.outputs()[0].tensor(),
            "{mode:?}"
        );
    }
    let text = read_metrics().await;
    assert!(
        gauge(&text, "cloak_inference_queue_duration_seconds_sum") > 0.0,
        "{text}"
    );
    server.shutdown().await;
}
