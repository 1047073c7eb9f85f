//! Sends encrypted inference requests to a Cloak server or fleet from several concurrent tasks
//! for a while, every answer's receipt verified, and prints the throughput as JSON: the load
//! generator of `scripts/bench-fleet.sh`.
//!
//! ```sh
//! CLOAK_CA=lb.pem CLOAK_CONCURRENCY=8 CLOAK_SECONDS=10 \
//!   cargo run --release -p cloak-client --example load -- URL MODEL REQUEST.json ROOT.der MRENCLAVE
//! ```
//!
//! `CLOAK_CA`: PEM certificates of a TLS-terminating load balancer in front (else the Mozilla
//! roots, and a Cloak server's own certificate); `CLOAK_ALLOW_STATUS`: a TCB status to accept
//! besides `UpToDate` (`OutOfDate` for a simulated platform made by `cloak sim init`).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloak_client::{
    AppraisalPolicy, Client, Measurement, Mode, SgxIdentityPolicy, Transport, TrustRootPolicy,
};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn setting(name: &str, default: u64) -> Result<u64, Box<dyn std::error::Error>> {
    match std::env::var(name) {
        Ok(value) => Ok(value.parse()?),
        Err(_) => Ok(default),
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, model, request, root, mrenclave] = args.as_slice() else {
        return Err("usage: load URL MODEL REQUEST.json ROOT.der MRENCLAVE".into());
    };
    let mrenclave: [u8; 32] = cloak_client::attest::types::parse_hex(mrenclave)?;
    let mut policy = AppraisalPolicy::strict()
        .with_trust_root(TrustRootPolicy::Der(std::fs::read(root)?))
        .with_sgx_identity(SgxIdentityPolicy {
            mrenclave: Some(vec![Measurement::from_bytes(mrenclave)]),
            ..SgxIdentityPolicy::default()
        });
    if let Ok(status) = std::env::var("CLOAK_ALLOW_STATUS") {
        policy = policy.allow_tcb_status(status.parse()?);
    }
    let transport = match std::env::var("CLOAK_CA") {
        Ok(path) => Transport::with_ca_pem(&std::fs::read(path)?)?,
        Err(_) => Transport::default(),
    };
    let concurrency = setting("CLOAK_CONCURRENCY", 8)?.max(1);
    let window = Duration::from_secs(setting("CLOAK_SECONDS", 10)?.max(1));
    let body = std::fs::read(request)?;
    let client = Client::builder()
        .policy(policy)
        .mode(Mode::Encapsulated)
        .transport(transport)
        .connect(url)
        .await?;
    let path = format!("/v2/models/{model}/infer");
    let (answered, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, path, body) = (client.clone(), path.clone(), body.clone());
        let (answered, failed) = (Arc::clone(&answered), Arc::clone(&failed));
        tasks.spawn(async move {
            while start.elapsed() < window {
                match client.send_inference(&path, body.clone(), None).await {
                    Ok((_, Some(_))) => answered.fetch_add(1, Ordering::Relaxed),
                    Ok((response, None)) => {
                        eprintln!("HTTP {}", response.status);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("{}: {e}", e.code());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let seconds = start.elapsed().as_secs_f64();
    let answered = answered.load(Ordering::Relaxed);
    println!(
        "{{\"concurrency\": {concurrency}, \"seconds\": {seconds:.2}, \"answered\": {answered}, \
         \"failed\": {}, \"requests_per_second\": {:.1}}}",
        failed.load(Ordering::Relaxed),
        answered as f64 / seconds
    );
    Ok(())
}
