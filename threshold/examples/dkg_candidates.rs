//! Counts how many candidate pairs the dealer-free generation needs on average (a statistical
//! check of the sieve and tests against the prime-number theorem: ≈ (ln 2^(bits/2) / 2)² pairs).
#![allow(clippy::unwrap_used, clippy::expect_used)]
use medtech_threshold::dkg::{sim::run_in_process, Parameters};
use rand::SeedableRng;

fn main() {
    let bits: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let runs: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let mut total = 0u64;
    for r in 0..runs {
        let params = Parameters::new(bits, 3, 2, [r as u8; 32])
            .unwrap()
            .with_batch(if bits > 1024 { 4096 } else { 1024 })
            .unwrap()
            .insecure_with_biprime_reps_for_tests(8)
            .unwrap();
        let rngs: Vec<_> = (0..3)
            .map(|k| rand_chacha::ChaCha20Rng::seed_from_u64(r * 10 + k))
            .collect();
        let run = run_in_process(&params, rngs, None).unwrap();
        total += run.outputs[0].stats.candidates_tried;
    }
    let h = f64::from(bits / 2) * std::f64::consts::LN_2 / 2.0;
    println!(
        "bits {bits}: mean candidates {:.0} over {runs} runs, theory {:.0}",
        total as f64 / runs as f64,
        h * h
    );
}
