//! The platform layer's costs, each beside the primitive it is built on: a simulated quote
//! beside one ECDSA P-256 signature, quote verification under the simulation root, and sealing
//! beside bare AES-256-GCM of the same bytes.
//!
//! `cargo bench -p cloak-tee --bench platform`

use std::hint::black_box;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use cloak_attest::collateral::Collateral;
use cloak_attest::verify::{TrustAnchor, Verifier};
use cloak_tee::seal;
use cloak_tee::sim::{SimConfig, SimPlatform};
use cloak_tee::{KeyPolicy, KeyRequest, Platform};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let platform = SimPlatform::init(dir.path(), &SimConfig::up_to_date()).unwrap();
    let report_data = [0x5C; 64];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let mut group = c.benchmark_group("evidence");
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let body = [0xA5u8; 432];
    group.bench_function("baseline: one ECDSA P-256 signature", |b| {
        b.iter(|| key.sign(&rng, black_box(&body)).unwrap());
    });
    group.bench_function("sim quote", |b| {
        b.iter(|| platform.quote(black_box(&report_data)).unwrap());
    });
    group.bench_function("sim collateral (fresh CRLs, TCB info, QE identity)", |b| {
        b.iter(|| platform.collateral(black_box(now)).unwrap());
    });
    let quote = platform.quote(&report_data).unwrap();
    let collateral = Collateral::from_json(&platform.collateral(now).unwrap()).unwrap();
    let verifier = Verifier::new(TrustAnchor::custom(platform.root_der().to_vec()).unwrap());
    group.bench_function("verify a sim quote under the sim root", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&quote), &collateral, now)
                .unwrap()
        });
    });
    group.finish();

    let mut group = c.benchmark_group("sealing");
    let request = KeyRequest {
        policy: KeyPolicy::Measurement,
        key_id: [7; 32],
    };
    group.bench_function("sealing key derivation", |b| {
        b.iter(|| platform.sealing_key(black_box(&request)).unwrap());
    });
    let raw_key = [9u8; 32];
    for size in [4096usize, 1 << 20] {
        let data = vec![0x42u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(
            BenchmarkId::new("baseline: AES-256-GCM", size),
            &data,
            |b, data| {
                b.iter(|| cloak_crypto::aead::seal(&raw_key, [1; 12], b"header", black_box(data)));
            },
        );
        group.bench_with_input(BenchmarkId::new("seal", size), &data, |b, data| {
            b.iter(|| seal::seal(&platform, KeyPolicy::Measurement, black_box(data)).unwrap());
        });
        let sealed = cloak_crypto::aead::seal(&raw_key, [1; 12], b"header", &data);
        group.bench_with_input(
            BenchmarkId::new("baseline: AES-256-GCM open", size),
            &sealed,
            |b, sealed| {
                b.iter(|| {
                    cloak_crypto::aead::open(&raw_key, [1; 12], b"header", black_box(sealed))
                        .unwrap()
                });
            },
        );
        let blob = seal::seal(&platform, KeyPolicy::Measurement, &data).unwrap();
        group.bench_with_input(BenchmarkId::new("unseal", size), &blob, |b, blob| {
            b.iter(|| seal::unseal(&platform, black_box(blob)).unwrap());
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
