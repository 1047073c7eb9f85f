//! Encapsulated requests run at most once: a relay that captured a `message/ohttp-req` and sends
//! it again gets a refusal, and so does a request whose time is outside the window or that has
//! no time and id at all. Requests are made here as a relay would see them: sealed to the
//! attested key, posted as raw bytes.

use std::time::{SystemTime, UNIX_EPOCH};

use cloak_crypto::ohttp::{self, AeadId, KeyConfig};
use cloak_proto::freshness;
use cloak_test_support::hostile::{connect_from, raw_http, tls};
use cloak_test_support::server::SimServer;

const BODY: &[u8] = br#"{"inputs":[{"name":"features","shape":[2,4],"datatype":"FP32","data":[0.5,-1,2,7.77,1,1,1,1]}]}"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An inference request for the demo model, as Binary HTTP, with these freshness fields.
fn inner(time: Option<u64>, id: Option<[u8; freshness::ID_LEN]>) -> Vec<u8> {
    let mut message = bhttp::Message::request(
        b"POST".to_vec(),
        b"https".to_vec(),
        b"localhost".to_vec(),
        b"/v2/models/demo/infer".to_vec(),
    );
    message.put_header("content-type", "application/json");
    if let Some(time) = time {
        message.put_header(freshness::TIME_HEADER, time.to_string());
    }
    if let Some(id) = id {
        message.put_header(freshness::ID_HEADER, freshness::format_id(&id));
    }
    message.write_content(BODY);
    let mut out = Vec::new();
    message
        .write_bhttp(bhttp::Mode::KnownLength, &mut out)
        .unwrap();
    out
}

/// Posts `sealed` to `/v1/ohttp` on a new connection: the outer status and body.
async fn post(server: &SimServer, sealed: &[u8]) -> (u16, String) {
    let addr = server.running().local_addr();
    let mut conn = tls(connect_from("127.0.0.1".parse().unwrap(), addr)
        .await
        .unwrap())
    .await
    .unwrap();
    let (status, body) = raw_http(
        &mut conn,
        "POST",
        "/v1/ohttp",
        ohttp::REQUEST_MEDIA_TYPE,
        sealed,
    )
    .await
    .unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Successful demo inferences so far, from `/metrics`.
async fn inferences(server: &SimServer) -> u64 {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("cloak_inference_requests_total{model=\"demo\",outcome=\"success\"} ")
        })
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_encapsulated_request_runs_once() {
    let server = SimServer::builder().start().await;
    let client = server.client().await;
    let appraisal = client.appraisal();
    let key_config = KeyConfig::parse(&appraisal.server().claims().hpke_key_config).unwrap();
    let seal = |bhttp: &[u8]| {
        ohttp::encapsulate_request(&key_config, AeadId::Aes256Gcm, bhttp)
            .unwrap()
            .0
    };

    let captured = seal(&inner(Some(now()), Some([7; freshness::ID_LEN])));
    let (status, body) = post(&server, &captured).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(inferences(&server).await, 1);
    // The same bytes again, and again: refused before they reach the model.
    for _ in 0..3 {
        let (status, body) = post(&server, &captured).await;
        assert_eq!(status, 400);
        assert!(body.contains("request-replayed"), "{body}");
    }
    // The same id sealed afresh is the same request too.
    let resealed = seal(&inner(Some(now()), Some([7; freshness::ID_LEN])));
    let (status, body) = post(&server, &resealed).await;
    assert_eq!(
        (status, body.contains("request-replayed")),
        (400, true),
        "{body}"
    );
    assert_eq!(inferences(&server).await, 1, "a replay ran the model");

    // Outside the window, either way, or without the fields: refused.
    let window = freshness::WINDOW_SECONDS;
    for (time, id, code) in [
        (Some(now() - window - 5), Some([8; 16]), "request-stale"),
        (Some(now() + window + 5), Some([9; 16]), "request-stale"),
        (None, Some([10; 16]), "request-freshness-missing"),
        (Some(now()), None, "request-freshness-missing"),
    ] {
        let (status, body) = post(&server, &seal(&inner(time, id))).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains(code), "{code}: {body}");
    }
    assert_eq!(inferences(&server).await, 1);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cloak_encapsulated_refused_total{reason=\"replayed\"} 4"),
        "{metrics}"
    );

    // A new id is a new request.
    let fresh = seal(&inner(Some(now()), Some([11; freshness::ID_LEN])));
    assert_eq!(post(&server, &fresh).await.0, 200);
    assert_eq!(inferences(&server).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_replay_cache_refuses_new_requests_instead_of_forgetting() {
    let mut limits = cloak_server::Limits::default();
    limits.max_replay_ids = 2;
    let server = SimServer::builder().limits(limits).start().await;
    let client = server.client().await;
    let key_config =
        KeyConfig::parse(&client.appraisal().server().claims().hpke_key_config).unwrap();
    let seal = |id: u8| {
        let bhttp = inner(Some(now()), Some([id; freshness::ID_LEN]));
        ohttp::encapsulate_request(&key_config, AeadId::Aes256Gcm, &bhttp)
            .unwrap()
            .0
    };
    let first = seal(1);
    assert_eq!(post(&server, &first).await.0, 200);
    assert_eq!(post(&server, &seal(2)).await.0, 200);
    let (status, body) = post(&server, &seal(3)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("replay-cache-full"), "{body}");
    // Still a replay, not forgotten.
    let (status, body) = post(&server, &first).await;
    assert_eq!((status, body.contains("request-replayed")), (400, true));
}
