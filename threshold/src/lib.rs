//! # medtech-threshold
//!
//! Threshold Paillier for MedTech Chain: a Paillier key (`g = N + 1`, 2048-bit by default) whose
//! decryption exponent is shared among `n` committee members so that any `t` of them decrypt
//! together — each with a proof that its part is correct — and `t − 1` learn nothing.
//!
//! | What | Where | Reference |
//! |---|---|---|
//! | keys, verification keys, key shares | [`keys`] | Damgård–Jurik 2001 §4; Shoup 2000 |
//! | fast encryption (short-exponent, fixed-base table) | [`ciphertext`] | Damgård–Jurik–Nielsen 2010 §4 |
//! | add, add plaintext, multiply by constant, negate, rerandomize | [`ciphertext`] | Paillier 1999 |
//! | slot packing with enforced overflow bounds | [`packing`] | |
//! | partial decryption, proof, combination | [`decrypt`] | Damgård–Jurik 2001 §4.1; Shoup 2000 §3 |
//! | contribution range proofs | [`range`] | Bünz et al. 2018 (Bulletproofs) + a linking sigma protocol |
//! | trusted-dealer key generation | [`dealer`] | Damgård–Jurik 2001 §4.1 |
//! | dealer-free key generation | [`dkg`] | Boneh–Franklin 2001; Nishide–Sakurai 2010 |
//!
//! Protocol code only: no I/O, no async. Every encoding is canonical and versioned; decoders of
//! outside bytes return [`Error`] and never panic. Secrets (`KeyShare`, nonces) are zeroized on
//! drop, print as redacted and have no serde implementation. docs/threshold.md has the maths,
//! parameters and what is and is not constant-time.
//!
//! ```
//! use medtech_threshold::{dealer, Plaintext};
//! let mut rng = rand_core::OsRng;
//! // 512-bit keys are for examples and tests; production uses 2048 or 3072.
//! let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 1).unwrap();
//! let pk = key.public_key();
//! let a = pk.encrypt(&Plaintext::from_i64(40), &mut rng).unwrap();
//! let b = pk.encrypt(&Plaintext::from_i64(2), &mut rng).unwrap();
//! let sum = pk.add(&a, &b);
//! let partials: Vec<_> = shares[1..4]
//!     .iter()
//!     .map(|s| s.partial_decrypt(&key, b"query-1", &sum, &mut rng).unwrap())
//!     .collect();
//! let out = key.combine_partials(b"query-1", &sum, &partials).unwrap();
//! assert_eq!(out.decryption.plaintext, Plaintext::from_i64(42));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod bigint;
pub mod ciphertext;
pub mod dealer;
pub mod decrypt;
pub mod dkg;
mod encoding;
mod error;
mod fixed_base;
mod hash;
pub mod keys;
pub mod packing;
pub mod range;

pub use ciphertext::{Ciphertext, Plaintext};
pub use decrypt::{CombineOutcome, Decryption, PartialDecryption, VerifiedPartial};
pub use error::{Error, Result};
pub use keys::{KeyShare, PartyIndex, PublicKey, ThresholdPublicKey};
pub use packing::{PackedCiphertext, SlotLayout, MAX_SLOT_BITS};
pub use range::RangeProof;

/// Low-level operations exposed for benchmarks only; not part of the stable API.
#[doc(hidden)]
pub mod bench_support {
    use crate::bigint::Int;
    use rand_core::{CryptoRng, RngCore};

    /// One raw GMP modular exponentiation `b^e mod N²` with a fresh `exp_bits`-bit exponent —
    /// the baseline the crypto benchmark compares every operation against.
    pub struct ModexpBaseline {
        base: Int,
        exp: Int,
        modulus: Int,
    }

    impl ModexpBaseline {
        /// A random base and exponent under `pk`'s `N²`.
        pub fn new<R: RngCore + CryptoRng>(
            pk: &crate::PublicKey,
            exp_bits: usize,
            rng: &mut R,
        ) -> Self {
            ModexpBaseline {
                base: Int::random_unit(rng, pk.nn()),
                exp: Int::random_bits(rng, exp_bits),
                modulus: pk.nn().clone(),
            }
        }

        /// A random base and `exp_bits`-bit exponent under a random odd `modulus_bits`-bit
        /// modulus (at least 2 bits): the cost of a modexp depends on the sizes only, so this is
        /// the baseline for a `modulus_bits`-bit `N²` without generating a key.
        pub fn with_modulus_bits<R: RngCore + CryptoRng>(
            modulus_bits: usize,
            exp_bits: usize,
            rng: &mut R,
        ) -> Self {
            let bits = modulus_bits.max(2);
            let top = Int::one().shl(bits - 1);
            let modulus = Int::random_bits(rng, bits - 1).add(&top);
            let modulus = if modulus.is_odd() {
                modulus
            } else {
                modulus.add(&Int::one())
            };
            ModexpBaseline {
                base: Int::random_below(rng, &modulus),
                exp: Int::random_bits(rng, exp_bits),
                modulus,
            }
        }

        /// Runs it once; returns the bit length of the result (to keep it observable).
        pub fn run(&self) -> usize {
            self.base.pow_mod(&self.exp, &self.modulus).bits()
        }
    }
}
