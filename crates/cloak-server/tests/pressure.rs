//! The server under memory and CPU pressure from unauthenticated clients: uploads that stall
//! near their end, and a flood of fresh-attestation requests. The body budget keeps memory
//! within a bound, the attestation limits keep quotes within a bound, and legitimate clients
//! are served throughout.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cloak_proto::attestation::AttestationDocument;
use cloak_server::Limits;
use cloak_test_support::hostile::{connect_from, raw_http, tls, write_all};
use cloak_test_support::server::SimServer;
use tokio::io::AsyncRead;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const MIB: usize = 1 << 20;

/// This process's resident set, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    kib * 1024
}

/// An upload that declares `declared` bytes, sends `sent` of them and stalls: the connection,
/// and the status the server answered, if it answered before the upload stalled.
async fn stalled_upload(
    source: IpAddr,
    server: std::net::SocketAddr,
    declared: usize,
    sent: usize,
) -> (TlsStream<TcpStream>, Option<u16>) {
    let mut conn = tls(connect_from(source, server).await.unwrap())
        .await
        .unwrap();
    let head = format!(
        "POST /v2/models/demo/infer HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    write_all(&mut conn, head.as_bytes()).await.unwrap();
    let chunk = vec![b' '; MIB];
    for _ in 0..sent / MIB {
        // A refused upload's connection closes, or stops being read: stop sending.
        match tokio::time::timeout(Duration::from_secs(2), write_all(&mut conn, &chunk)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
    let mut answer = [0u8; 12];
    let status = match tokio::time::timeout(
        Duration::from_millis(300),
        std::future::poll_fn(|cx| {
            let mut buf = tokio::io::ReadBuf::new(&mut answer);
            std::pin::Pin::new(&mut conn)
                .poll_read(cx, &mut buf)
                .map_ok(|()| buf.filled().len())
        }),
    )
    .await
    {
        Ok(Ok(n)) if n >= 12 => std::str::from_utf8(&answer[9..12])
            .ok()
            .and_then(|s| s.parse().ok()),
        _ => None,
    };
    (conn, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_stay_within_the_body_budget_and_health_checks_go_on() {
    let budget = 128 * MIB;
    let mut limits = Limits::default();
    limits.max_inflight_bytes = budget as u64;
    let server = SimServer::builder().limits(limits).start().await;
    let addr = server.running().local_addr();
    let client = server.client().await;
    let before = rss();

    // Twelve uploads of 64 MiB, each stalling 4 MiB short of its end.
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..12u8 {
        let (conn, status) =
            stalled_upload(IpAddr::from([127, 0, 3, i]), addr, 64 * MIB, 60 * MIB).await;
        match status {
            Some(503) => refused += 1,
            Some(other) => panic!("upload {i} answered {other}"),
            None => {}
        }
        held.push(conn);
    }
    // Two fit in the budget; the other ten were refused before their bodies were read.
    assert_eq!(refused, 10);
    let grown = rss().saturating_sub(before);
    assert!(
        grown < budget + 64 * MIB,
        "the server grew by {} MiB under a {} MiB budget",
        grown / MIB,
        budget / MIB
    );
    // Health checks and inference go on meanwhile.
    for _ in 0..5 {
        let response = client.get("/v2/health/ready").await.unwrap();
        assert_eq!(response.status, 200);
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("cloak_inference_requests_total{model=\"demo\",outcome=\"rejected\"} 10"),
        "{metrics}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_flood_gets_429_and_quotes_stay_bounded() {
    let mut limits = Limits::default();
    limits.attestation_rate = 2;
    limits.attestation_burst = 5;
    let server = SimServer::builder().limits(limits).start().await;
    let addr = server.running().local_addr();
    let flooder: IpAddr = "127.0.0.7".parse().unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..40u32 {
        tasks.push(tokio::spawn(async move {
            let mut conn = tls(connect_from(flooder, addr).await.unwrap())
                .await
                .unwrap();
            let path = format!("/v1/attestation?nonce={:08x}", i);
            raw_http(&mut conn, "GET", &path, "text/plain", b"")
                .await
                .unwrap()
                .0
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + limited, 40, "{statuses:?}");
    // The burst, and the rate over the time the flood took.
    let allowed = 5 + (2.0 * elapsed).ceil() as usize;
    assert!(ok >= 5 && ok <= allowed, "{ok} quotes in {elapsed:.2} s");
    // Another client is not held back by the flood (reading the counter appraises the server:
    // one attestation more).
    let quotes = server.counter("attestations").await;
    assert_eq!(
        quotes,
        u64::try_from(ok).unwrap() + 1,
        "only admitted requests were quoted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_asked_for_while_the_platform_quotes_share_its_next_quote() {
    // Quotes as slow as an SGX quoting enclave's, so that requests pile up behind them.
    let server = SimServer::builder()
        .quote_delay(Duration::from_millis(150))
        .start()
        .await;
    let addr = server.running().local_addr();
    let before = server.counter("attestation_quotes").await;
    // 120 clients on 60 addresses (within every per-address limit), connected first, then
    // all asking at once, each with its own nonce.
    let clients = 120u32;
    let mut connections = Vec::new();
    for i in 0..clients {
        let source: IpAddr = format!("127.0.3.{}", i % 60 + 1).parse().unwrap();
        connections.push(
            tls(connect_from(source, addr).await.unwrap())
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for (i, mut conn) in connections.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let nonce = format!("{:032x}", 0xC0A1_E5CE_u64 * 1000 + i as u64).into_bytes();
            let path = format!("/v1/attestation?nonce={}", hex::encode(&nonce));
            let (status, body) = raw_http(&mut conn, "GET", &path, "text/plain", b"")
                .await
                .unwrap();
            (nonce, status, body)
        }));
    }
    let policy = server.policy();
    let collateral = server.sim().collateral();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut answered_with_others = 0;
    for task in tasks {
        let (nonce, status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let document: AttestationDocument = serde_json::from_slice(&body).unwrap();
        // The client's own appraisal: a genuine quote over claims that answer its nonce.
        let verified =
            cloak_client::appraise_recorded_attestation(&document, &collateral, &policy, now)
                .unwrap();
        assert!(verified.claims().answers(&nonce));
        assert!(!verified.claims().answers(b"a nonce nobody sent"));
        if !verified.claims().nonces.is_empty() {
            answered_with_others += 1;
        }
    }
    let quotes = server.counter("attestation_quotes").await - before;
    // Two quoters take the first arrivals alone; everyone else shares the next quotes, at most
    // 64 nonces each.
    assert!(
        (3..=12).contains(&quotes),
        "{quotes} quotes for {clients} attestations"
    );
    assert!(
        answered_with_others >= 64,
        "{answered_with_others} coalesced"
    );
}
