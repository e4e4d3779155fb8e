//! Threshold decryption (Damgård–Jurik 2001 §4.1, after Shoup 2000).
//!
//! With `Δ = n!` and shares `s_i` of `d` (see [`crate::dealer`]):
//!
//! 1. **Partial decryption** ([`partial`]): member `i` publishes `c_i = c^(2Δ·s_i) mod N²` with
//!    a proof that `log_{c⁴}(c_i²) = log_v(v_i)` (both equal `Δ·s_i`).
//! 2. **Verification** ([`proof`]): anyone checks the proof against the public verification key
//!    `v_i`; a failure names member `i`.
//! 3. **Combination** ([`combine`]): for any set `S` of `t` verified partials, with the integer
//!    Lagrange coefficients `λ_i = Δ·Π_{j∈S∖i} j/(j − i)`,
//!    `c' = Π c_i^(2λ_i) = c^(4Δ²·d)` and `m = L(c')·(4Δ²θ)^(−1) mod N` where `L(x) = (x−1)/N`.
//!
//! Every partial is bound, through the Fiat–Shamir transcript, to the threshold key's
//! fingerprint (N, n, t, v, all v_i, θ), the ciphertext, the member's index and a caller-chosen
//! context (the query id and ledger entry hash in MedTech Chain), so a partial cannot be replayed
//! into another query, another ciphertext or under another index.

pub mod combine;
pub mod partial;
pub mod proof;

pub use combine::{CombineOutcome, Decryption, VerifiedPartial};
pub use partial::PartialDecryption;
pub use proof::EqualityProof;
