//! Exact samplers over the integers (Canonne–Kamath–Steinke, "The Discrete Gaussian for
//! Differential Privacy", NeurIPS 2020 — CKS20), driven by a caller-supplied cryptographically
//! secure RNG. No floating point anywhere: every probability is a ratio of integers or
//! `exp(−num/den)` of one, and every comparison is exact.
//!
//! | Sampler | Distribution | Reference |
//! |---|---|---|
//! | [`bernoulli`] | `Bernoulli(num/den)` | uniform integer below `den` |
//! | [`bernoulli_exp`] | `Bernoulli(exp(−num/den))` | CKS20 Algorithm 1 |
//! | [`geometric`] | `P(k) = (1−q)q^k`, `q = exp(−num/den)` | CKS20 Algorithm 2 (its geometric part) |
//! | [`polya`] | Pólya(1/m, q) (negative binomial with shape 1/m) | rejection from the geometric, below |
//! | [`discrete_laplace`] | `P(z) ∝ exp(−|z|·num/den)` | difference of geometrics |
//! | [`discrete_gaussian`] | `P(z) ∝ exp(−z²/(2σ²))`, `σ² = num/den` | CKS20 Algorithm 3 |
//! | [`centered_binomial`] | `Binomial(2k, ½) − k` | fair coins |
//!
//! **Pólya by rejection.** With `r = 1/m`, `P(k) = Γ(k+r)/(k! Γ(r)) (1−q)^r q^k`, and
//! `Γ(k+r)/(k!Γ(r)) = Π_{j<k} (j + 1/m)/(j+1) = Π_{j<k} (mj+1)/(m(j+1))`, a product of rationals
//! at most 1. So: propose `k` from the geometric `(1−q)q^k`, accept with probability
//! `w_k = Π_{j<k} (mj+1)/(m(j+1))` by drawing one `Bernoulli((mj+1)/(m(j+1)))` per factor
//! (stopping at the first failure). The accepted `k` has density `∝ q^k w_k`: exactly Pólya.
//! Acceptance rate `E[w_k] = (1−q)^(1−1/m)`. For `m = 1` every factor is 1 and the proposal is
//! returned as it is (Pólya(1, q) is the geometric).
//!
//! **Bounded work.** Every loop above spends one step of a [`Work`] budget per iteration (one
//! Bernoulli or uniform draw, or one proposal), and a sampler whose budget runs out returns
//! [`Error::WorkExceeded`] instead of looping on: no parameter makes a sampler run unbounded.
//! The Pólya sampler's expected work grows like `L = den/num` (the geometric's mean), so its
//! budget is a multiple of `L` ([`Work::for_polya`]); the others' expected work is a constant.
//! Running out is not a truncation of the distribution when the caller discards the draw *and
//! fails* (as `medtech-federation` does: the query fails, nothing is released); a caller must
//! never re-draw after [`Error::WorkExceeded`].

use rand_core::{CryptoRng, RngCore};

use crate::error::{Error, Result};

/// A budget of sampler steps (one step per Bernoulli or uniform draw of a sampler's loops, or per
/// proposal): a sampler that would spend more returns [`Error::WorkExceeded`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    limit: u64,
    spent: u64,
}

/// Steps a sampler whose expected work does not depend on its parameters may spend: the
/// Bernoulli(exp), geometric and discrete-Gaussian loops each end with probability at least
/// `1 − e^−1` (Bernoulli(exp(−γ)) for `γ ≤ 1`: at least ½) per iteration, and the discrete
/// Gaussian needs a small constant number of proposals (CKS20 §5), so `2^16` steps are out of
/// reach of an honest draw (thousands of iterations, each ending the loop with a constant
/// probability).
pub const CONSTANT_WORK: u64 = 1 << 16;

/// Steps per unit of the Pólya scale `L = den/num` ([`Work::for_polya`]). The rejection
/// sampler's expected work is about `L + c·L^(1−1/m)` steps (`L^(1−1/m)` proposals of a few
/// steps for the geometric, plus about `L^(1/m)` acceptance factors each); its total is a
/// geometric sum of light-tailed proposal costs, whose tail is close to exponential, so a budget
/// of `256·(L + 64)` steps — hundreds of means — is out of reach of an honest draw (measured:
/// `polya_work_stays_far_below_its_budget`; docs/privacy.md §5 states what it adds to δ).
pub const POLYA_WORK_PER_SCALE: u64 = 256;

impl Work {
    /// A budget of `limit` steps.
    pub fn new(limit: u64) -> Self {
        Work { limit, spent: 0 }
    }

    /// The budget of one Pólya(1/m, exp(−num/den)) draw: `POLYA_WORK_PER_SCALE·(⌈den/num⌉ + 64)`
    /// steps (saturating; [`POLYA_WORK_PER_SCALE`]).
    pub fn for_polya(num: u128, den: u128) -> Self {
        let scale = if num == 0 {
            u128::MAX
        } else {
            den.div_ceil(num)
        };
        let steps = scale
            .saturating_add(64)
            .saturating_mul(u128::from(POLYA_WORK_PER_SCALE));
        Work::new(u64::try_from(steps).unwrap_or(u64::MAX))
    }

    /// Steps spent so far.
    pub fn spent(&self) -> u64 {
        self.spent
    }

    /// The budget.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Spends one step, or fails once the budget is used up.
    fn step(&mut self) -> Result<()> {
        if self.spent >= self.limit {
            return Err(Error::WorkExceeded(self.limit));
        }
        self.spent += 1;
        Ok(())
    }
}

/// A uniformly random integer in `[0, bound)` (`bound > 0`), by rejection: draw a 64-bit
/// (or, for bounds above 2^64, 128-bit) word and accept it below the largest multiple of
/// `bound` that fits, so there is no modulo bias.
pub fn uniform_below<R: RngCore + CryptoRng + ?Sized>(rng: &mut R, bound: u128) -> u128 {
    debug_assert!(bound > 0);
    if bound.is_power_of_two() {
        return random_u128(rng) & (bound - 1);
    }
    if bound <= u128::from(u64::MAX) {
        let limit = ((1u128 << 64) / bound) * bound;
        loop {
            let v = u128::from(rng.next_u64());
            if v < limit {
                return v % bound;
            }
        }
    }
    let limit = (u128::MAX / bound) * bound;
    loop {
        let v = random_u128(rng);
        if v < limit {
            return v % bound;
        }
    }
}

fn random_u128<R: RngCore + ?Sized>(rng: &mut R) -> u128 {
    (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())
}

/// `Bernoulli(num/den)` with `num ≤ den`, `den > 0`.
pub fn bernoulli<R: RngCore + CryptoRng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    uniform_below(rng, den) < num
}

/// `Bernoulli(exp(−γ))` for `γ = num/den ∈ [0, 1]` (CKS20 Algorithm 1): draw
/// `A_k ~ Bernoulli(γ/k)` for `k = 1, 2, …` until one is 0; return whether that `k` is odd.
fn bernoulli_exp_small<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
    work: &mut Work,
) -> Result<bool> {
    let mut k: u128 = 1;
    loop {
        work.step()?;
        let d = den
            .checked_mul(k)
            .ok_or(Error::Overflow("Bernoulli(exp) denominator"))?;
        if !bernoulli(rng, num, d) {
            return Ok(k % 2 == 1);
        }
        k += 1;
    }
}

/// `Bernoulli(exp(−num/den))` for any `num/den ≥ 0` (CKS20 Algorithm 1): `⌊γ⌋` draws of
/// `Bernoulli(exp(−1))`, all of which must succeed, then one of `Bernoulli(exp(−frac(γ)))`.
/// Within [`CONSTANT_WORK`] steps.
pub fn bernoulli_exp<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<bool> {
    bernoulli_exp_within(rng, num, den, &mut Work::new(CONSTANT_WORK))
}

/// [`bernoulli_exp`] spending from `work`.
pub fn bernoulli_exp_within<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
    work: &mut Work,
) -> Result<bool> {
    if den == 0 {
        return Err(Error::InvalidParameter("zero denominator".into()));
    }
    let mut whole = num / den;
    while whole > 0 {
        if !bernoulli_exp_small(rng, 1, 1, work)? {
            return Ok(false);
        }
        whole -= 1;
    }
    bernoulli_exp_small(rng, num % den, den, work)
}

/// Geometric: `P(k) = (1−q) q^k` for `k ≥ 0` with `q = exp(−num/den)`, `num > 0`.
///
/// CKS20 Algorithm 2: `U` uniform in `[0, den)` accepted with probability `exp(−U/den)`, `V` the
/// number of successes of `Bernoulli(exp(−1))` before the first failure; `X = U + den·V` is
/// geometric with ratio `exp(−1/den)`, and `⌊X/num⌋` geometric with ratio `exp(−num/den)`.
/// Its expected work does not depend on `num/den`; within [`CONSTANT_WORK`] steps.
pub fn geometric<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<u128> {
    geometric_within(rng, num, den, &mut Work::new(CONSTANT_WORK))
}

/// [`geometric`] spending from `work`.
pub fn geometric_within<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
    work: &mut Work,
) -> Result<u128> {
    if num == 0 || den == 0 {
        return Err(Error::InvalidParameter(
            "geometric needs num, den > 0".into(),
        ));
    }
    let u = loop {
        work.step()?;
        let u = uniform_below(rng, den);
        if bernoulli_exp_within(rng, u, den, work)? {
            break u;
        }
    };
    let mut v: u128 = 0;
    while bernoulli_exp_small(rng, 1, 1, work)? {
        v += 1;
    }
    let x = v
        .checked_mul(den)
        .and_then(|vd| vd.checked_add(u))
        .ok_or(Error::Overflow("geometric sample"))?;
    Ok(x / num)
}

/// Pólya(1/m, q) with `q = exp(−num/den)`: the share distribution whose m-fold sum is the
/// geometric `(1−q)q^k` (see the module docs for the rejection step). `m ≥ 1`. Within
/// [`Work::for_polya`] steps.
pub fn polya<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    m: u32,
    num: u128,
    den: u128,
) -> Result<u128> {
    polya_within(rng, m, num, den, &mut Work::for_polya(num, den))
}

/// [`polya`] spending from `work`: [`Error::WorkExceeded`] once it is spent (the draw must then
/// be discarded and not repeated).
pub fn polya_within<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    m: u32,
    num: u128,
    den: u128,
    work: &mut Work,
) -> Result<u128> {
    if m == 0 {
        return Err(Error::InvalidParameter(
            "Pólya shape 1/m needs m ≥ 1".into(),
        ));
    }
    if m == 1 {
        // Every acceptance factor (j + 1)/(j + 1) is 1: Pólya(1, q) is the geometric.
        return geometric_within(rng, num, den, work);
    }
    let m = u128::from(m);
    'propose: loop {
        work.step()?;
        let k = geometric_within(rng, num, den, work)?;
        for j in 0..k {
            work.step()?;
            // Accept factor (mj + 1) / (m(j + 1)) ≤ 1.
            let a = m.checked_mul(j).and_then(|x| x.checked_add(1));
            let b = m.checked_mul(j + 1);
            let (Some(a), Some(b)) = (a, b) else {
                return Err(Error::Overflow("Pólya acceptance"));
            };
            if !bernoulli(rng, a, b) {
                continue 'propose;
            }
        }
        return Ok(k);
    }
}

/// Discrete Laplace: `P(z) ∝ exp(−|z|·num/den)` over all integers, as the difference of two
/// independent geometrics (which has exactly this law).
pub fn discrete_laplace<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<i128> {
    discrete_laplace_within(rng, num, den, &mut Work::new(CONSTANT_WORK))
}

fn discrete_laplace_within<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
    work: &mut Work,
) -> Result<i128> {
    let a = geometric_within(rng, num, den, work)?;
    let b = geometric_within(rng, num, den, work)?;
    signed_difference(a, b)
}

pub(crate) fn signed_difference(a: u128, b: u128) -> Result<i128> {
    let a = i128::try_from(a).map_err(|_| Error::Overflow("sample"))?;
    let b = i128::try_from(b).map_err(|_| Error::Overflow("sample"))?;
    Ok(a - b)
}

/// Discrete Gaussian `N_Z(0, σ²)` with `σ² = num/den > 0` (CKS20 Algorithm 3): propose from a
/// discrete Laplace of scale `t = ⌊σ⌋ + 1`, accept with probability
/// `exp(−(|Y| − σ²/t)² / (2σ²))`, computed as the exact rational
/// `(|Y|·t·den − num)² / (2·num·den·t²)`. Within [`CONSTANT_WORK`] steps (CKS20 §5: the
/// expected number of proposals is a small constant, whatever σ).
pub fn discrete_gaussian<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<i128> {
    discrete_gaussian_within(rng, num, den, &mut Work::new(CONSTANT_WORK))
}

/// [`discrete_gaussian`] spending from `work`.
pub fn discrete_gaussian_within<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
    work: &mut Work,
) -> Result<i128> {
    if num == 0 || den == 0 {
        return Err(Error::InvalidParameter("σ² must be positive".into()));
    }
    let t = isqrt(num / den) + 1;
    let overflow = Error::Overflow("discrete Gaussian (σ² too large or too finely specified)");
    loop {
        work.step()?;
        // DLap with scale t: P(y) ∝ exp(−|y|/t).
        let y = discrete_laplace_within(rng, 1, t, work)?;
        let ay = y.unsigned_abs();
        let lhs = ay
            .checked_mul(t)
            .and_then(|v| v.checked_mul(den))
            .ok_or(overflow.clone())?;
        let diff = lhs.abs_diff(num);
        let gnum = diff.checked_mul(diff).ok_or(overflow.clone())?;
        let gden = num
            .checked_mul(den)
            .and_then(|v| v.checked_mul(t))
            .and_then(|v| v.checked_mul(t))
            .and_then(|v| v.checked_mul(2))
            .ok_or(overflow.clone())?;
        if bernoulli_exp_within(rng, gnum, gden, work)? {
            return Ok(y);
        }
    }
}

/// `Binomial(2k, ½) − k`: the sum of `2k` fair coins, centred.
pub fn centered_binomial<R: RngCore + CryptoRng + ?Sized>(rng: &mut R, k: u64) -> i128 {
    let mut coins = 2 * u128::from(k);
    let mut ones: u128 = 0;
    while coins >= 64 {
        ones += u128::from(rng.next_u64().count_ones());
        coins -= 64;
    }
    if coins > 0 {
        let mask = (1u64 << coins) - 1;
        ones += u128::from((rng.next_u64() & mask).count_ones());
    }
    ones as i128 - i128::from(k)
}

/// `⌊√x⌋` by Newton's method on integers.
pub(crate) fn isqrt(x: u128) -> u128 {
    if x < 2 {
        return x;
    }
    let mut r = (x as f64).sqrt() as u128; // a starting point only; corrected exactly below
    while r.checked_mul(r).is_none_or(|s| s > x) {
        r -= 1;
    }
    while (r + 1).checked_mul(r + 1).is_some_and(|s| s <= x) {
        r += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isqrt_is_exact() {
        for x in [0u128, 1, 2, 3, 4, 15, 16, 17, 1 << 100, u128::MAX] {
            let r = isqrt(x);
            assert!(r * r <= x);
            assert!((r + 1).checked_mul(r + 1).is_none_or(|s| s > x), "{x}");
        }
    }

    /// The Pólya budget is far above what honest draws spend, for small and large scales and
    /// several committee shapes: the largest of many draws stays below an eighth of it
    /// (measured: the largest is about 8–10 means, the budget at least 130 means).
    #[test]
    fn polya_work_stays_far_below_its_budget() {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(5);
        // (m, num, den, draws): L = den/num from 1 to 10^5.
        for (m, num, den, draws) in [
            (2u32, 1u128, 1u128, 20_000u32),
            (2, 1, 100, 20_000),
            (3, 1, 100, 20_000),
            (2, 1, 10_000, 2_000),
            (4, 1, 10_000, 2_000),
            (2, 1, 100_000, 300),
        ] {
            let cap = Work::for_polya(num, den).limit();
            let (mut max, mut total) = (0u64, 0u64);
            for _ in 0..draws {
                let mut work = Work::new(cap);
                polya_within(&mut rng, m, num, den, &mut work).unwrap();
                max = max.max(work.spent());
                total += work.spent();
            }
            let mean = total as f64 / f64::from(draws);
            println!("m = {m}, L = {den}: mean {mean:.0}, max {max}, cap {cap}");
            assert!(
                max * 8 < cap,
                "m = {m}, L = {den}: max {max} steps (mean {mean:.0}) of {cap}"
            );
        }
    }

    #[test]
    fn a_sampler_out_of_work_fails_instead_of_looping() {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(9);
        // L = 10^12: an accepted proposal needs about as many acceptance draws as its value,
        // almost surely far above 10^4; a budget of 10^4 steps ends the draw instead.
        let mut work = Work::new(10_000);
        assert_eq!(
            polya_within(&mut rng, 2, 1, 1_000_000_000_000, &mut work),
            Err(Error::WorkExceeded(10_000))
        );
        // No sampler runs unbounded: the default budgets are finite for every parameter.
        assert_eq!(
            Work::for_polya(0, 1).limit(),
            u64::MAX,
            "saturates, still finite"
        );
        let mut work = Work::new(3);
        assert!(matches!(
            geometric_within(&mut rng, 1, 1, &mut work).and_then(|_| {
                geometric_within(&mut rng, 1, 1, &mut work)?;
                geometric_within(&mut rng, 1, 1, &mut work)
            }),
            Err(Error::WorkExceeded(3))
        ));
    }

    #[test]
    fn parameter_errors_are_reported() {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1);
        assert!(geometric(&mut rng, 0, 1).is_err());
        assert!(polya(&mut rng, 0, 1, 1).is_err());
        assert!(discrete_gaussian(&mut rng, 0, 1).is_err());
        assert!(bernoulli_exp(&mut rng, 1, 0).is_err());
    }
}
