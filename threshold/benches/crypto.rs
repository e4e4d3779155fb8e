//! Criterion benches for the threshold-Paillier operations at 2048 bits, n = 5, t = 3.
//! `medtech bench crypto --json` reports the same operations with the targets.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use medtech_threshold::bench_support::ModexpBaseline;
use medtech_threshold::{dealer, Plaintext, SlotLayout};
use rand_core::OsRng;

fn crypto(c: &mut Criterion) {
    let mut rng = OsRng;
    let (key, shares) = dealer::generate(2048, 5, 3, &mut rng).unwrap();
    key.precompute();
    let pk = key.public_key();
    let m = Plaintext::from_u64(1_234_567);
    let ctx = b"bench";
    let ct = pk.encrypt(&m, &mut rng).unwrap();
    let partials: Vec<_> = shares[..3]
        .iter()
        .map(|s| s.partial_decrypt(&key, ctx, &ct, &mut rng).unwrap())
        .collect();
    let verified: Vec<_> = partials
        .iter()
        .map(|p| key.verify_partial(ctx, &ct, p).unwrap())
        .collect();
    let layout = SlotLayout::new(pk, 40, 1).unwrap();
    let bound = u64::from(u32::MAX);
    let (rct, proof) = pk
        .encrypt_in_range(layout, &[42], bound, ctx, &mut rng)
        .unwrap();
    let baseline = ModexpBaseline::new(pk, 2048, &mut rng);

    let mut g = c.benchmark_group("threshold-paillier-2048");
    g.sample_size(20);
    g.bench_function("modexp_baseline", |b| b.iter(|| baseline.run()));
    g.bench_function("encrypt", |b| b.iter(|| pk.encrypt(&m, &mut rng).unwrap()));
    g.bench_function("encrypt_textbook", |b| {
        b.iter(|| pk.encrypt_textbook(&m, &mut rng).unwrap())
    });
    g.bench_function("add", |b| b.iter(|| pk.add(&ct, &ct)));
    g.bench_function("partial_decrypt", |b| {
        b.iter(|| shares[0].partial_decrypt(&key, ctx, &ct, &mut rng).unwrap())
    });
    g.bench_function("verify_partial", |b| {
        b.iter(|| key.verify_partial(ctx, &ct, &partials[0]).unwrap())
    });
    g.bench_function("combine", |b| {
        b.iter(|| key.combine(ctx, &ct, &verified).unwrap())
    });
    g.bench_function("range_proof_32bit", |b| {
        b.iter(|| {
            pk.encrypt_in_range(layout, &[42], bound, ctx, &mut rng)
                .unwrap()
        })
    });
    g.bench_function("range_verify_32bit", |b| {
        b.iter(|| {
            pk.verify_range(layout, bound, ctx, rct.ciphertext(), &proof)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, crypto);
criterion_main!(benches);
