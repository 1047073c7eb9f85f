//! Seal / open / verify throughput of the sealed-model container, side by side with the raw
//! primitives it is built from (AES-256-GCM over the same 1 MiB records, and SHA-256), so the
//! container's overhead shows as a ratio.
//!
//! `cargo bench -p cloak-crypto --bench container`

use std::hint::black_box;
use std::io::{self, Cursor};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest;
use cloak_crypto::container::{self, DigestCheck, ModelName, SealOptions};
use cloak_crypto::key::ModelKey;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MODEL_LEN: usize = 64 * 1024 * 1024;
const RECORD: usize = 1024 * 1024;

fn model() -> Vec<u8> {
    (0..MODEL_LEN).map(|i| (i ^ (i >> 11)) as u8).collect()
}

fn throughput(c: &mut Criterion) {
    let key = ModelKey::from_bytes([0x42; 32]);
    let plaintext = model();
    let options = SealOptions::new(ModelName::new("bench").unwrap());
    let mut sealed = Cursor::new(Vec::with_capacity(MODEL_LEN + 4096));
    container::seal(&key, &options, &plaintext[..], &mut sealed).unwrap();
    let sealed = sealed.into_inner();

    let mut group = c.benchmark_group("64MiB");
    group.throughput(Throughput::Bytes(MODEL_LEN as u64));
    group.sample_size(10);

    let raw = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0x42; 32]).unwrap());
    let mut buffer = plaintext.clone();
    group.bench_function("baseline/aes-256-gcm-seal-1MiB-records", |b| {
        b.iter(|| {
            for (i, record) in buffer.chunks_mut(RECORD).enumerate() {
                let mut nonce = [0u8; 12];
                nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let tag = raw
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::empty(),
                        record,
                    )
                    .unwrap();
                let _ = black_box(tag);
            }
        });
    });
    group.bench_function("baseline/sha256", |b| {
        b.iter(|| black_box(digest::digest(&digest::SHA256, &plaintext)));
    });
    group.bench_function("container/seal", |b| {
        let mut out = Cursor::new(Vec::with_capacity(sealed.len()));
        b.iter(|| {
            out.set_position(0);
            container::seal(&key, &options, &plaintext[..], &mut out).unwrap();
        });
    });
    group.bench_function("container/verify", |b| {
        b.iter(|| container::verify(&key, &sealed[..], DigestCheck::Skip).unwrap());
    });
    group.bench_function("container/verify-with-digest", |b| {
        b.iter(|| container::verify(&key, &sealed[..], DigestCheck::Recompute).unwrap());
    });
    group.bench_function("container/open", |b| {
        b.iter(|| container::open(&key, &sealed[..], io::sink()).unwrap());
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
