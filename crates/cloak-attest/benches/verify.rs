//! Quote verification time: cloak-attest (parse, root and window checks, dcap-qvl, appraisal)
//! side by side with dcap-qvl's own `verify` on the same quote and collateral.
//!
//! `cargo bench -p cloak-attest --bench verify`

use std::hint::black_box;

use cloak_attest::collateral::Collateral;
use cloak_attest::policy::AppraisalPolicy;
use cloak_attest::verify::{TcbStatus, TrustAnchor, Verifier};
use criterion::{Criterion, criterion_group, criterion_main};

fn vector(path: &str) -> Vec<u8> {
    std::fs::read(format!("{}/testdata/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn bench(c: &mut Criterion) {
    let at = 1_751_328_000;
    for (name, quote, collateral) in [
        (
            "sgx-v3",
            "dcap-qvl/sgx_quote",
            "dcap-qvl/sgx_quote_collateral.json",
        ),
        (
            "tdx-v4",
            "dcap-qvl/tdx_quote",
            "dcap-qvl/tdx_quote_collateral.json",
        ),
    ] {
        let quote = vector(quote);
        let json = vector(collateral);
        let parsed = Collateral::from_json(&json).unwrap();
        let raw: dcap_qvl::QuoteCollateralV3 = serde_json::from_slice(&json).unwrap();
        let verifier = Verifier::new(TrustAnchor::intel());
        let policy = AppraisalPolicy::strict()
            .allow_tcb_status(TcbStatus::ConfigurationAndSwHardeningNeeded)
            .allow_advisory("*");
        let dcap = dcap_qvl::verify::QuoteVerifier::new_prod();

        let mut group = c.benchmark_group(name);
        group.bench_function("cloak-attest verify+appraise", |b| {
            b.iter(|| {
                let verified = verifier.verify(black_box(&quote), &parsed, at).unwrap();
                policy.appraise(verified).unwrap()
            });
        });
        group.bench_function("dcap-qvl verify", |b| {
            b.iter(|| dcap.verify(black_box(&quote), &raw, at).unwrap());
        });
        group.bench_function("cloak-attest collateral parse", |b| {
            b.iter(|| Collateral::from_json(black_box(&json)).unwrap());
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
