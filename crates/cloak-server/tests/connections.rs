//! The server under connection attacks: connections that never start TLS, finish it and say
//! nothing, drip a header or a body, or come by the hundred from one address. Each is closed by
//! its deadline or refused at once, and a legitimate client is served meanwhile.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cloak_proto::kserve::{InferRequest, NamedTensor};
use cloak_proto::tensor::Tensor;
use cloak_server::Limits;
use cloak_test_support::hostile::{closed_within, connect_from, tls, write_all};
use cloak_test_support::server::SimServer;

/// Held connections of each kind.
const HELD: usize = 24;

fn demo_request() -> InferRequest {
    let features =
        Tensor::from_values(vec![2, 4], &[0.5f32, -1.0, 2.0, 7.77, 1.0, 1.0, 1.0, 1.0]).unwrap();
    InferRequest::new(vec![NamedTensor::new("features", features)])
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// The value of the `/metrics` sample `name{reason="REASON"}`, 0 when absent.
fn sample(metrics: &str, name: &str, reason: &str) -> u64 {
    let prefix = format!("{name}{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

const CLOSED: &str = "cloak_connections_closed_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_closed_by_their_deadlines_while_a_client_is_served() {
    let deadline = Duration::from_secs(2);
    let mut limits = Limits::default();
    limits.connections.handshake_timeout = deadline;
    limits.connections.idle_timeout = deadline;
    limits.connections.body_grace = Duration::from_millis(500);
    limits.connections.min_body_rate = 4096;
    let server = SimServer::builder().limits(limits).start().await;
    let addr = server.running().local_addr();
    let attacker = ip("127.0.0.2");

    // Never starts TLS.
    let mut bare = Vec::new();
    for _ in 0..HELD {
        bare.push(connect_from(attacker, addr).await.unwrap());
    }
    // Finishes TLS, then says nothing.
    let mut silent = Vec::new();
    for _ in 0..HELD {
        silent.push(
            tls(connect_from(attacker, addr).await.unwrap())
                .await
                .unwrap(),
        );
    }
    // Drips a request header, a byte at a time, never finishing it.
    let mut header_drips = Vec::new();
    for _ in 0..HELD {
        let mut conn = tls(connect_from(attacker, addr).await.unwrap())
            .await
            .unwrap();
        write_all(&mut conn, b"GET /v2/health/ready HTTP/1.1\r\n")
            .await
            .unwrap();
        header_drips.push(conn);
    }
    // Sends a header announcing a large body, then drips the body.
    let mut body_drips = Vec::new();
    for _ in 0..HELD {
        let mut conn = tls(connect_from(attacker, addr).await.unwrap())
            .await
            .unwrap();
        write_all(
            &mut conn,
            b"POST /v2/models/demo/infer HTTP/1.1\r\nhost: localhost\r\n\
              content-type: application/json\r\ncontent-length: 1000000\r\n\r\n{",
        )
        .await
        .unwrap();
        body_drips.push(conn);
    }
    let held_since = Instant::now();
    let drip = tokio::spawn(async move {
        // One byte every 100 ms on each dripping connection: 10 B/s, far under the rate.
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for conn in header_drips.iter_mut().chain(body_drips.iter_mut()) {
                let _ = write_all(conn, b"x").await;
            }
        }
        (header_drips, body_drips)
    });

    // A legitimate client: appraisal, then inference, while all of the above are held.
    let client = server.client().await;
    let answer = client.infer("demo", &demo_request()).await.unwrap();
    assert_eq!(answer.response.outputs().len(), 1);
    let served_in = held_since.elapsed();
    assert!(
        served_in < deadline,
        "the client was served only after {served_in:?}, when the deadlines had freed slots"
    );

    // Each held connection is closed by its deadline: not before it, and not long after.
    let margin = Duration::from_secs(3);
    for conn in &mut bare {
        let closed = closed_within(conn, deadline + margin).await;
        assert!(
            closed.is_some(),
            "a connection that never started TLS stayed open"
        );
    }
    for conn in &mut silent {
        let closed = closed_within(conn, deadline + margin).await;
        assert!(closed.is_some(), "a silent TLS connection stayed open");
    }
    assert!(held_since.elapsed() >= deadline - Duration::from_millis(100));
    let (mut header_drips, mut body_drips) = drip.await.unwrap();
    for conn in header_drips.iter_mut().chain(body_drips.iter_mut()) {
        assert!(
            closed_within(conn, Duration::from_millis(500))
                .await
                .is_some(),
            "a dripping connection stayed open"
        );
    }

    let metrics = server.metrics().await;
    assert!(
        sample(&metrics, CLOSED, "handshake-timeout") >= HELD as u64,
        "{metrics}"
    );
    // The silent and the header-dripping ones (and no request was ever in progress on them).
    assert!(
        sample(&metrics, CLOSED, "idle") >= 2 * HELD as u64,
        "{metrics}"
    );
    assert!(
        sample(&metrics, CLOSED, "slow-body") >= HELD as u64,
        "{metrics}"
    );
    // The server still answers the client that came first.
    client.infer("demo", &demo_request()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_caps_are_closed_at_once_and_existing_ones_keep_working() {
    let mut limits = Limits::default();
    limits.connections.max_connections = 20;
    limits.connections.max_per_address = 8;
    let server = SimServer::builder().limits(limits).start().await;
    let addr = server.running().local_addr();
    // Connected (and pooled) before the flood.
    let client = server.client().await;
    client.infer("demo", &demo_request()).await.unwrap();

    // One address gets 8; its 9th is closed on arrival.
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(connect_from(ip("127.0.0.3"), addr).await.unwrap());
    }
    let mut ninth = connect_from(ip("127.0.0.3"), addr).await.unwrap();
    let refused_in = closed_within(&mut ninth, Duration::from_secs(2)).await;
    assert!(
        refused_in.is_some_and(|t| t < Duration::from_millis(500)),
        "the address over its cap was not refused at once: {refused_in:?}"
    );
    // Other addresses fill the service: the pooled client holds 1, so 11 more make 20.
    for i in 0..11u8 {
        let source = IpAddr::from([127, 0, 1, i]);
        held.push(connect_from(source, addr).await.unwrap());
    }
    let mut over = connect_from(ip("127.0.2.1"), addr).await.unwrap();
    let refused_in = closed_within(&mut over, Duration::from_secs(2)).await;
    assert!(
        refused_in.is_some_and(|t| t < Duration::from_millis(500)),
        "a connection over the service's cap was not refused at once: {refused_in:?}"
    );

    // The connection that was there first still serves.
    client.infer("demo", &demo_request()).await.unwrap();

    // Once the flood goes, new clients are served, and the refusals were counted.
    drop(held);
    let metrics = eventually_metrics(&server).await;
    assert!(sample(&metrics, "cloak_connections_refused_total", "per-address") >= 1);
    assert!(sample(&metrics, "cloak_connections_refused_total", "full") >= 1);
}

/// `/metrics` from a new client, retried while the server notices closed connections.
async fn eventually_metrics(server: &SimServer) -> String {
    let started = Instant::now();
    loop {
        let attempt = cloak_client::Client::builder()
            .policy(server.policy())
            .connect(&server.url())
            .await;
        match attempt {
            Ok(client) => {
                let response = client.get("/metrics").await.unwrap();
                return String::from_utf8(response.body).unwrap();
            }
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no new connection after the flood: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_to_the_metrics_listener_is_closed_too() {
    let mut limits = Limits::default();
    limits.connections.idle_timeout = Duration::from_millis(500);
    let server = SimServer::builder()
        .limits(limits)
        .metrics_listener()
        .start()
        .await;
    let metrics_addr: SocketAddr = server.running().metrics_addr().unwrap();
    let mut idle = connect_from(ip("127.0.0.1"), metrics_addr).await.unwrap();
    let closed = closed_within(&mut idle, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|t| t >= Duration::from_millis(400)),
        "{closed:?}"
    );
}
