//! Wiping one inference input (a 602,112-byte EfficientNet-Lite0 tensor, just written, as a
//! parser leaves it): `SecretBytes` against zeroize's own `Vec<u8>` wipe (what
//! `Zeroizing<Vec<u8>>` does on drop), with a plain `fill(0)` of the same bytes as the
//! baseline. The buffer is refilled before each timed wipe, outside the timing, and its
//! allocation is reused, so allocator costs stay out of the figures.
//!
//! `cargo bench -p cloak-crypto --bench wipe`

use std::hint::black_box;
use std::time::{Duration, Instant};

use cloak_crypto::secret::SecretBytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use zeroize::Zeroize;

const LEN: usize = 602_112;

/// Times `iterations` wipes of a freshly filled buffer.
fn timed(iterations: u64, wipe: impl Fn(&mut Vec<u8>)) -> Duration {
    let mut buffer = Vec::with_capacity(LEN);
    let mut total = Duration::ZERO;
    for _ in 0..iterations {
        buffer.clear();
        buffer.resize(LEN, 0xa5);
        let started = Instant::now();
        wipe(black_box(&mut buffer));
        total += started.elapsed();
    }
    total
}

fn wipe(c: &mut Criterion) {
    let mut group = c.benchmark_group("wipe-602112B");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.bench_function("baseline/fill-zero", |b| {
        b.iter_custom(|n| timed(n, |v| black_box(v.as_mut_slice()).fill(0)));
    });
    group.bench_function("zeroize-vec", |b| {
        b.iter_custom(|n| timed(n, |v| v.zeroize()));
    });
    group.bench_function("secret-bytes", |b| {
        b.iter_custom(|n| {
            timed(n, |v| {
                let mut secret = SecretBytes::new(std::mem::take(v));
                secret.zeroize();
                // The allocation goes back for the next fill.
                *v = std::mem::take(&mut *secret);
            })
        });
    });
    group.finish();
}

criterion_group!(benches, wipe);
criterion_main!(benches);
