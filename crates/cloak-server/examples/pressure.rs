//! Benchmark: the server's memory and health-check latency under the stalled-upload attack.
//!
//! Starts a server on the simulated platform in this process, measures `/v2/health/ready`
//! latency at rest, then holds twelve 64 MiB uploads that stall 4 MiB short of their end and
//! sends two complete 32 MiB bodies (which the server must parse), and measures again. Prints
//! one JSON object: resident memory before and under attack, uploads refused, and health-check
//! p50/p99 at rest and under attack.
//!
//! ```sh
//! cargo run --release -p cloak-server --example pressure                 # the defaults
//! cargo run --release -p cloak-server --example pressure -- --no-budget  # as before the budget
//! ```

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cloak_server::Limits;
use cloak_test_support::hostile::{connect_from, tls, write_all};
use cloak_test_support::server::SimServer;

const MIB: usize = 1 << 20;

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// p50 and p99 of `n` sequential health checks, in milliseconds.
async fn health(client: &cloak_client::Client, n: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let response = client.get("/v2/health/ready").await.expect("health");
        assert_eq!(response.status, 200);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// An upload of `declared` bytes that sends `sent` and then waits `hold`; whether the server
/// answered before the body was complete (a refusal).
async fn upload(
    source: IpAddr,
    server: std::net::SocketAddr,
    declared: usize,
    sent: usize,
    hold: Duration,
) -> bool {
    let Ok(stream) = connect_from(source, server).await else {
        return true;
    };
    let Ok(mut conn) = tls(stream).await else {
        return true;
    };
    let head = format!(
        "POST /v2/models/demo/infer HTTP/1.1\r\nhost: localhost\r\n\
         content-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    if write_all(&mut conn, head.as_bytes()).await.is_err() {
        return true;
    }
    let mut chunk = vec![b' '; MIB];
    chunk[0] = b'[';
    for _ in 0..sent / MIB {
        match tokio::time::timeout(Duration::from_secs(2), write_all(&mut conn, &chunk)).await {
            Ok(Ok(())) => chunk[0] = b' ',
            _ => return true,
        }
    }
    tokio::time::sleep(hold).await;
    false
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let no_budget = std::env::args().any(|a| a == "--no-budget");
    let mut limits = Limits::default();
    if no_budget {
        limits.max_inflight_bytes = u64::MAX / 2;
    }
    let budget_mib = limits.max_inflight_bytes as f64 / MIB as f64;
    let server = SimServer::builder().limits(limits).start().await;
    let addr = server.running().local_addr();
    let client = server.client().await;
    let (rest_p50, rest_p99) = health(&client, 200).await;
    let rss_before = rss_mib();

    let hold = Duration::from_secs(8);
    let mut attack = Vec::new();
    for i in 0..12u8 {
        attack.push(tokio::spawn(upload(
            IpAddr::from([127, 0, 4, i]),
            addr,
            64 * MIB,
            60 * MIB,
            hold,
        )));
    }
    // Two complete large bodies (invalid JSON of 32 MiB: read, then parsed).
    for i in 0..2u8 {
        attack.push(tokio::spawn(upload(
            IpAddr::from([127, 0, 5, i]),
            addr,
            32 * MIB,
            32 * MIB,
            hold,
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (attack_p50, attack_p99) = health(&client, 200).await;
    let rss_attack = rss_mib();
    let mut refused = 0;
    for task in attack {
        if task.await.unwrap_or(true) {
            refused += 1;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "stalled-uploads",
            "budget_mib": if no_budget { serde_json::Value::Null } else { budget_mib.into() },
            "uploads": 14,
            "refused": refused,
            "rss_mib_before": rss_before.round(),
            "rss_mib_under_attack": rss_attack.round(),
            "health_ms_p50_rest": rest_p50,
            "health_ms_p99_rest": rest_p99,
            "health_ms_p50_attack": attack_p50,
            "health_ms_p99_attack": attack_p99,
        })
    );
}
