//! Shared fixtures: one 512-bit 3-of-5 dealer key per test binary (small keys keep the suite fast
//! on two cores; 2048-bit runs are in the benchmark and in `large_keys.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::sync::OnceLock;

use medtech_threshold::{dealer, KeyShare, ThresholdPublicKey};
use rand::SeedableRng;

pub struct Fixture {
    pub key: ThresholdPublicKey,
    pub shares: Vec<KeyShare>,
}

pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 0xC0FFEE).unwrap();
        Fixture { key, shares }
    })
}

pub fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}
