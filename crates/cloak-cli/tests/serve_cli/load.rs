//! 64 concurrent attested clients against a real model (or the demo model without the model
//! cache): no errors, every receipt verified, latency and throughput printed, and the server's
//! memory stable after warm-up.

use cloak_client::Method;
use cloak_test_support::models::reference;

use crate::serve_with;

/// A field of the server process's `/proc/PID/status`, in KiB: `VmRSS` (resident now) or
/// `VmHWM` (the most it was ever resident: the kernel's own peak, which sampling would miss).
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn percentile(sorted: &[std::time::Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// 64 concurrent attested clients against a real model for `CLOAK_LOAD_SECONDS` (default 5;
/// the figure is `CLOAK_LOAD_SECONDS=60`), loopback only: no errors, latency and
/// throughput printed, and the server's RSS stable after warm-up.
#[test]
fn load_64_clients() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::{Duration, Instant};
    let seconds: u64 = std::env::var("CLOAK_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let clients: usize = std::env::var("CLOAK_LOAD_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let real = reference::load("ppocr-cls");
    let (model, inputs) = match &real {
        Some(real) => ("ppocr-cls", real.inputs.clone()),
        None => (
            "demo",
            vec![(
                "features".to_owned(),
                cloak_proto::tensor::Tensor::from_values(vec![1, 4], &[0.5f32, 1.0, -1.0, 2.0])
                    .unwrap(),
            )],
        ),
    };
    let server = serve_with(
        &["--max-queue", "256"],
        real.as_ref().map(|r| ("ppocr-cls", r.onnx.as_slice())),
    );
    let pid = server.process.pid();
    let request = cloak_proto::kserve::InferRequest::new(
        inputs
            .into_iter()
            .map(|(name, tensor)| cloak_proto::kserve::NamedTensor::new(name, tensor))
            .collect(),
    )
    .with_binary_data_output(true);
    let body = request
        .encode(|_| cloak_proto::kserve::TensorEncoding::Binary)
        .unwrap();
    let (body, header_len) = (body.body().to_vec(), body.header_len());
    let path = format!("/v2/models/{model}/infer");

    let policy = server.library_policy();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (latencies, errors, elapsed, rss, (warm_peak, half_peak, end_peak)) =
        runtime.block_on(async {
            let client = cloak_client::Client::builder()
                .policy(policy)
                .connect(&server.url)
                .await
                .unwrap();
            // Warm-up ends when every client has finished two requests (connections made, plans
            // compiled, per-thread arenas touched), however long that takes on a busy machine;
            // the measured run of `seconds` starts there.
            let warmed = Arc::new(AtomicUsize::new(0));
            let stop = Arc::new(AtomicBool::new(false));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..clients {
                let client = client.clone();
                let (body, path) = (body.clone(), path.clone());
                let (warmed, stop) = (Arc::clone(&warmed), Arc::clone(&stop));
                tasks.push(tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut errors = Vec::new();
                    let mut session = match client.session().await {
                        Ok(session) => session,
                        Err(e) => {
                            warmed.fetch_add(1, Ordering::SeqCst);
                            return (Vec::new(), vec![format!("connect: {e}")]);
                        }
                    };
                    let mut done = 0usize;
                    while !stop.load(Ordering::SeqCst) {
                        let sent = Instant::now();
                        match session
                            .send(Method::Post, &path, body.clone(), header_len)
                            .await
                        {
                            // Queued or not, every answer's receipt is for exactly this request.
                            Ok(r) if r.status == 200 => {
                                match r.verify_receipt(session.server(), &body) {
                                    Ok(_) => latencies.push(sent.elapsed()),
                                    Err(e) => errors.push(format!("receipt: {e}")),
                                }
                            }
                            Ok(r) => errors.push(format!(
                                "{}: {}",
                                r.status,
                                String::from_utf8_lossy(&r.body)
                            )),
                            Err(e) => errors.push(e.to_string()),
                        }
                        done += 1;
                        if done == 2 {
                            warmed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    (latencies, errors)
                }));
            }
            let warm_deadline = Instant::now() + Duration::from_secs(120);
            while warmed.load(Ordering::SeqCst) < clients && Instant::now() < warm_deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The resident set swings with the allocator (memory returned to the kernel and taken
            // back), so a sample compares a trough with a peak. The kernel's high-water mark does
            // not swing: after warm-up it rises only if the peaks keep rising.
            let warm_peak = status_kib(pid, "VmHWM");
            let half = Instant::now() + Duration::from_secs(seconds) / 2;
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let mut rss = Vec::new();
            let mut half_peak = None;
            while Instant::now() < deadline {
                rss.push(status_kib(pid, "VmRSS"));
                if half_peak.is_none() && Instant::now() >= half {
                    half_peak = Some(status_kib(pid, "VmHWM"));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let end_peak = status_kib(pid, "VmHWM");
            let peaks = (warm_peak, half_peak.unwrap_or(warm_peak), end_peak);
            stop.store(true, Ordering::SeqCst);
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            for task in tasks {
                let (l, e) = task.await.unwrap();
                latencies.extend(l);
                errors.extend(e);
            }
            let elapsed = started.elapsed();
            (latencies, errors, elapsed, rss, peaks)
        });
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}\nserver log tail: {}",
        errors.len(),
        errors.first(),
        server
            .log()
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut sorted = latencies;
    sorted.sort();
    assert!(!sorted.is_empty());
    let (low, high) = (*rss.iter().min().unwrap(), *rss.iter().max().unwrap());
    println!(
        "load: model {model}, {clients} clients, {:.1} s: {} requests, 0 errors, {:.1} req/s, \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; server RSS {:.1}..{:.1} MiB, peak after \
         warm-up {:.1} MiB, at half time {:.1} MiB, at the end {:.1} MiB",
        elapsed.as_secs_f64(),
        sorted.len(),
        sorted.len() as f64 / elapsed.as_secs_f64(),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
        low as f64 / 1024.0,
        high as f64 / 1024.0,
        warm_peak as f64 / 1024.0,
        half_peak as f64 / 1024.0,
        end_peak as f64 / 1024.0,
    );
    // Stable: over the second half of the run the peak resident set does not keep rising with
    // the request count (the warm-up and the first half absorb the plans, the connections'
    // buffers and the allocator's per-thread arenas). Allowed: 10 % plus 8 MiB.
    assert!(
        end_peak <= half_peak + half_peak / 10 + 8 * 1024,
        "the server's peak RSS rose from {half_peak} KiB at half time to {end_peak} KiB"
    );
}
