//! Oblivious HTTP encapsulation of one inference request (a 602,112-byte EfficientNet-Lite0
//! input and a small one), side by side with a bare AES-256-GCM seal of the same bytes by
//! aws-lc-rs, so the cost of the HPKE setup and of the AEAD implementation shows as a ratio.
//!
//! `cargo bench -p cloak-crypto --bench ohttp`

use std::hint::black_box;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use cloak_crypto::hpke::HpkeKeyPair;
use cloak_crypto::ohttp::{self, AeadId, Gateway};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

fn encapsulation(c: &mut Criterion) {
    let gateway = Gateway::new(1, HpkeKeyPair::generate(), vec![AeadId::Aes256Gcm]);
    for len in [602_112usize, 1024] {
        let request: Vec<u8> = (0..len).map(|i| (i ^ (i >> 9)) as u8).collect();
        let mut group = c.benchmark_group(format!("request-{len}B"));
        group.throughput(Throughput::Bytes(len as u64));
        let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).unwrap());
        let mut buffer = request.clone();
        group.bench_function("baseline/aes-256-gcm-seal", |b| {
            b.iter(|| {
                let tag = raw
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key([0; 12]),
                        Aad::empty(),
                        &mut buffer,
                    )
                    .unwrap();
                black_box(tag)
            });
        });
        group.bench_function("ohttp/encapsulate", |b| {
            b.iter(|| {
                black_box(
                    ohttp::encapsulate_request(gateway.config(), AeadId::Aes256Gcm, &request)
                        .unwrap(),
                )
            });
        });
        let (sealed, _) =
            ohttp::encapsulate_request(gateway.config(), AeadId::Aes256Gcm, &request).unwrap();
        group.bench_function("ohttp/decapsulate", |b| {
            b.iter(|| black_box(gateway.decapsulate(&sealed).unwrap()));
        });
        // As the server does: the received message is decrypted where it lies (the copy that
        // stands for its receipt is not timed).
        group.bench_function("ohttp/decapsulate-in-place", |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |message| black_box(gateway.decapsulate_in_place(message).unwrap()),
                BatchSize::LargeInput,
            );
        });
        group.finish();
    }
}

criterion_group!(benches, encapsulation);
criterion_main!(benches);
