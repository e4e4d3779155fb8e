//! # medtech-noise
//!
//! Distributed differential privacy for MedTech Chain: every committee member adds an exactly
//! sampled integer noise share to the encrypted aggregate *before* partial decryption, calibrated
//! so that the shares of any `m = n − f − t + 1` honest members already give the stated guarantee
//! even if `t − 1` collude and the close omits the shares of `f` members that are down
//! ([`Committee`]: a close lists at least `k = n − f` shares).
//!
//! * [`samplers`] — exact integer samplers (CKS20) over a caller-supplied CSPRNG.
//! * [`mechanism`] — the distributed discrete Laplace (default), discrete Gaussian and binomial
//!   mechanisms, their calibration and rigorous confidence bounds.
//! * [`query`] — sensitivity, budget split and encoding of Count, Grouped count and Average,
//!   and results with confidence intervals.
//! * [`commitment`] — a member's encrypted noise shares, bound to one query and one member and
//!   bounded, by a range proof.
//! * [`accounting`] — privacy budgets per researcher, dataset and globally, as a deterministic
//!   state machine over ledger events.
//!
//! Protocol code only: no I/O, no floating point in any sampler (floating point appears only in
//! reporting: variances and confidence widths).
//!
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod accounting;
pub mod commitment;
mod error;
pub mod mechanism;
pub mod privacy;
pub mod query;
pub mod samplers;

pub use accounting::{Accountant, ChargeBook, ChargeRecord, Cost, Event, Rejection, Subject};
pub use error::{Error, Result};
pub use mechanism::{Committee, Mechanism, Micros, ShareSpec};
pub use query::{NoisyValue, QueryPlan, QueryResult, QueryShape};

/// The CSPRNG noise shares are drawn from in production: ChaCha20 seeded from the operating
/// system. Tests seed it explicitly for reproducibility.
pub type NoiseRng = rand_chacha::ChaCha20Rng;

/// A fresh [`NoiseRng`] seeded from the operating system's entropy source.
pub fn noise_rng() -> Result<NoiseRng> {
    <NoiseRng as rand_core::SeedableRng>::from_rng(rand_core::OsRng)
        .map_err(|e| Error::InvalidParameter(format!("operating-system entropy unavailable: {e}")))
}
