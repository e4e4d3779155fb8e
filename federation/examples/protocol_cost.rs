//! CPU cost of the private query protocol alone (docs/performance.md, "Where a bundle's CPU
//! goes"): the five members' drivers over the real ledger rules (signatures checked, no network,
//! no Raft, no HTTP), dealer key, the query benchmark's Count.
//!
//!     cargo run --release -p medtech-federation --example protocol_cost -- [bits] [devices] [bundle] [rounds]
//!
//! Each round submits one Count, which starts alone at once, and `bundle` more, which queue
//! behind it and run as one bundle; the process CPU time (all threads) of each round is read
//! from `/proc/self/stat`. A round of one query measures an instance of one; the difference is
//! what the bundle of `bundle` adds. Then the same crypto is timed piece by piece with the
//! bundle's shapes, one thread.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use medtech_federation::data::{generate, Columns};
use medtech_federation::protocol::{CommitteeView, NoiseMode, Outcome};
use medtech_federation::query::{Platform, QuerySpec, SLOT_BITS, SLOT_BOUND};
use medtech_federation::sim::SimCommittee;
use medtech_threshold::{dealer, PartyIndex, SlotLayout};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Process CPU seconds (user + system, all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .map(|a| a.parse().expect("a number"))
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let bits = arg(1, 2048) as u32;
    let devices = arg(2, 100_000);
    let bundle = arg(3, 5) as usize;
    let rounds = arg(4, 4) as usize;
    let names: Vec<String> = (0..5)
        .map(|i| format!("hospital-{}", (b'a' + i as u8) as char))
        .collect();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let t = Instant::now();
    let (key, shares) = dealer::generate(bits, 5, 3, &mut rng).unwrap();
    println!(
        "dealer key, {bits} bits: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let view = CommitteeView {
        members: names.clone(),
        threshold: 3,
        key: Arc::new(key),
        platform: Arc::new(Platform::new(&names)),
        close_tolerance: None,
    };
    let cols: Vec<Columns> = names
        .iter()
        .enumerate()
        .map(|(i, h)| Columns::from_devices(&generate::devices(h, 0, devices, 1000 + i as u64)))
        .collect();
    let mut c = SimCommittee::new(view, shares, cols, NoiseMode::Calibrated, 1).unwrap();
    c.register("bench", 1_000_000_000_000).unwrap();
    let spec: QuerySpec = serde_json::from_value(serde_json::json!({
        "kind": "count",
        "filters": [{ "field": "device_type", "op": "equals", "value": "Pacemaker" }],
        "epsilon": 0.01
    }))
    .unwrap();
    let run = |c: &mut SimCommittee, extra: usize| -> f64 {
        let t0 = cpu_seconds();
        let ids: Vec<String> = (0..=extra)
            .map(|_| c.submit("bench", &spec).unwrap())
            .collect();
        for id in &ids {
            match c.run(id, 10, 10_000) {
                Some(Outcome::Released(_)) => {}
                other => panic!("query {id} ended {other:?}"),
            }
        }
        cpu_seconds() - t0
    };
    // Warm the fixed-base tables and caches.
    run(&mut c, 0);
    let alone: Vec<f64> = (0..rounds).map(|_| run(&mut c, 0)).collect();
    let with: Vec<f64> = (0..rounds).map(|_| run(&mut c, bundle)).collect();
    let (alone, with) = (median(alone), median(with));
    println!(
        "protocol CPU, {devices} devices per hospital: one Count alone {:.0} ms; one alone + a bundle of {bundle}: {:.0} ms, so the bundle {:.0} ms ({:.0} ms per query)",
        alone * 1e3,
        with * 1e3,
        (with - alone) * 1e3,
        (with - alone) * 1e3 / bundle as f64
    );

    // The same crypto, piece by piece, with the bundle's shapes: one ciphertext of `bundle`
    // slots; noise shares under the bound the bench's Count calibrates (printed).
    // The same key and shares again (the same seed), for timing alone.
    let (key, shares) = dealer::generate(bits, 5, 3, &mut ChaCha20Rng::seed_from_u64(7)).unwrap();
    let pk = key.public_key();
    let layout = SlotLayout::cover(pk, SLOT_BITS, bundle as u32).unwrap()[0];
    let slots: Vec<u64> = (0..bundle as u64).map(|i| 10_000 + i).collect();
    let ctx = b"cost".to_vec();
    // Median ms of 7 runs of `f`, and its last result.
    fn timed<T>(mut f: impl FnMut() -> T) -> (f64, T) {
        let mut ms = Vec::new();
        let mut last = None;
        for _ in 0..7 {
            let t = Instant::now();
            last = Some(f());
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        (median(ms), last.expect("seven runs"))
    }
    let (contribution, (ct, proof)) = timed(|| {
        pk.encrypt_in_range(layout, &slots, SLOT_BOUND, &ctx, &mut rng)
            .unwrap()
    });
    let (contribution_verify, _) = timed(|| {
        pk.verify_range(layout, SLOT_BOUND, &ctx, ct.ciphertext(), &proof)
            .unwrap()
    });
    let compiled =
        medtech_federation::query::Compiled::new(spec.clone(), &Platform::new(&names), 5, 3)
            .unwrap();
    let bound = compiled.noise_bound().unwrap();
    let noise: Vec<i128> = (0..bundle as i128).map(|i| i - 2).collect();
    let (noise_make, (nct, nproof)) = timed(|| {
        medtech_noise::commitment::encrypt_shares(
            pk,
            layout,
            &noise,
            bound,
            &ctx,
            PartyIndex(1),
            &mut rng,
        )
        .unwrap()
    });
    let (noise_verify, _) = timed(|| {
        medtech_noise::commitment::verify_shares(
            pk,
            layout,
            bound,
            &ctx,
            PartyIndex(1),
            &nct,
            &nproof,
        )
        .unwrap()
    });
    let (decrypt, partial) = timed(|| {
        shares[0]
            .partial_decrypt(&key, &ctx, ct.ciphertext(), &mut rng)
            .unwrap()
    });
    let (decrypt_verify, _) =
        timed(|| key.verify_partial(&ctx, ct.ciphertext(), &partial).unwrap());
    println!(
        "per operation (ms, median of 7): contribution {contribution:.1} (verify {contribution_verify:.1}); \
         noise share under {bound} {noise_make:.1} (verify {noise_verify:.1}); \
         partial decryption {decrypt:.1} (verify {decrypt_verify:.1})"
    );
    // Each of the 3 designated members verifies the 4 other members' proofs (its own it made).
    let (members, verifiers) = (5.0, 3.0);
    let expected = members * (contribution + noise_make)
        + verifiers * ((members - 1.0) * (contribution_verify + noise_verify))
        + verifiers * decrypt
        + 2.0 * decrypt_verify;
    println!(
        "a bundle's crypto from these: 5 × (contribution + noise) + 3 × 4 × (their verifications) + 3 partial decryptions + 2 verified = {expected:.0} ms"
    );
}
