//! Benchmark: a flood of fresh-attestation requests, and what it costs the platform.
//!
//! Starts a server on the simulated platform in this process, its quotes slowed to what an SGX
//! quoting enclave takes (`--quote-ms`, default 20), and has `--clients` clients (default 64,
//! each from its own loopback address, so the per-address rate limit does not hold them back)
//! ask for fresh attestations on new TLS connections as fast as they can for `--seconds`
//! (default 10), while a legitimate client makes health checks. Prints one JSON object:
//! attestations answered, refused (429, 503), quotes made, attestations per quote, and the
//! health checks' p50/p99 during the flood.
//!
//! ```sh
//! cargo run --release -p cloak-server --example attestation_flood
//! cargo run --release -p cloak-server --example attestation_flood -- --quote-ms 0 --seconds 15
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloak_test_support::hostile::{connect_from, raw_http, tls};
use cloak_test_support::server::SimServer;

/// The value of `--NAME N`, or `default`.
fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    limited: AtomicUsize,
    busy: AtomicUsize,
    failed: AtomicUsize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quote_ms = arg("--quote-ms", 20);
    let seconds = arg("--seconds", 10);
    let clients = arg("--clients", 64);
    let server = SimServer::builder()
        .quote_delay(Duration::from_millis(quote_ms))
        .start()
        .await;
    let addr = server.running().local_addr();
    let client = server.client().await;
    let quotes_before = server.counter("attestation_quotes").await;

    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut flood = Vec::new();
    for i in 0..clients {
        let tally = Arc::clone(&tally);
        let source = IpAddr::from([127, 0, 6 + (i / 250) as u8, (i % 250 + 1) as u8]);
        flood.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let path = format!("/v1/attestation?nonce={:016x}{:016x}", i, n);
                let status = match connect_from(source, addr).await {
                    Ok(stream) => match tls(stream).await {
                        Ok(mut conn) => raw_http(&mut conn, "GET", &path, "text/plain", b"")
                            .await
                            .map_or(0, |(status, _)| status),
                        Err(_) => 0,
                    },
                    Err(_) => 0,
                };
                let slot = match status {
                    200 => &tally.ok,
                    429 => &tally.limited,
                    503 => &tally.busy,
                    _ => &tally.failed,
                };
                slot.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut times = Vec::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        let response = client.get("/v2/health/ready").await.expect("health");
        assert_eq!(response.status, 200);
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in flood {
        let _ = task.await;
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    let quotes = server.counter("attestation_quotes").await - quotes_before;
    let ok = tally.ok.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "bench": "attestation-flood",
            "quote_ms": quote_ms,
            "seconds": seconds,
            "clients": clients,
            "answered": ok,
            "refused_429": tally.limited.load(Ordering::Relaxed),
            "refused_503": tally.busy.load(Ordering::Relaxed),
            "failed": tally.failed.load(Ordering::Relaxed),
            "quotes": quotes,
            "attestations_per_quote": ok as f64 / quotes.max(1) as f64,
            "health_ms_p50": at(0.5),
            "health_ms_p99": at(0.99),
        })
    );
}
