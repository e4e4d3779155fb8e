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
//! Acceptance rate `E[w_k] = (1−q)^(1−1/m)`.

use rand_core::{CryptoRng, RngCore};

use crate::error::{Error, Result};

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
) -> Result<bool> {
    let mut k: u128 = 1;
    loop {
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
pub fn bernoulli_exp<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<bool> {
    if den == 0 {
        return Err(Error::InvalidParameter("zero denominator".into()));
    }
    let mut whole = num / den;
    while whole > 0 {
        if !bernoulli_exp_small(rng, 1, 1)? {
            return Ok(false);
        }
        whole -= 1;
    }
    bernoulli_exp_small(rng, num % den, den)
}

/// Geometric: `P(k) = (1−q) q^k` for `k ≥ 0` with `q = exp(−num/den)`, `num > 0`.
///
/// CKS20 Algorithm 2: `U` uniform in `[0, den)` accepted with probability `exp(−U/den)`, `V` the
/// number of successes of `Bernoulli(exp(−1))` before the first failure; `X = U + den·V` is
/// geometric with ratio `exp(−1/den)`, and `⌊X/num⌋` geometric with ratio `exp(−num/den)`.
pub fn geometric<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<u128> {
    if num == 0 || den == 0 {
        return Err(Error::InvalidParameter(
            "geometric needs num, den > 0".into(),
        ));
    }
    let u = loop {
        let u = uniform_below(rng, den);
        if bernoulli_exp(rng, u, den)? {
            break u;
        }
    };
    let mut v: u128 = 0;
    while bernoulli_exp_small(rng, 1, 1)? {
        v += 1;
    }
    let x = v
        .checked_mul(den)
        .and_then(|vd| vd.checked_add(u))
        .ok_or(Error::Overflow("geometric sample"))?;
    Ok(x / num)
}

/// Pólya(1/m, q) with `q = exp(−num/den)`: the share distribution whose m-fold sum is the
/// geometric `(1−q)q^k` (see the module docs for the rejection step). `m ≥ 1`.
pub fn polya<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    m: u32,
    num: u128,
    den: u128,
) -> Result<u128> {
    if m == 0 {
        return Err(Error::InvalidParameter(
            "Pólya shape 1/m needs m ≥ 1".into(),
        ));
    }
    let m = u128::from(m);
    'propose: loop {
        let k = geometric(rng, num, den)?;
        for j in 0..k {
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
    let a = geometric(rng, num, den)?;
    let b = geometric(rng, num, den)?;
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
/// `(|Y|·t·den − num)² / (2·num·den·t²)`.
pub fn discrete_gaussian<R: RngCore + CryptoRng + ?Sized>(
    rng: &mut R,
    num: u128,
    den: u128,
) -> Result<i128> {
    if num == 0 || den == 0 {
        return Err(Error::InvalidParameter("σ² must be positive".into()));
    }
    let t = isqrt(num / den) + 1;
    let overflow = Error::Overflow("discrete Gaussian (σ² too large or too finely specified)");
    loop {
        // DLap with scale t: P(y) ∝ exp(−|y|/t).
        let y = discrete_laplace(rng, 1, t)?;
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
        if bernoulli_exp(rng, gnum, gden)? {
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

    #[test]
    fn parameter_errors_are_reported() {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(1);
        assert!(geometric(&mut rng, 0, 1).is_err());
        assert!(polya(&mut rng, 0, 1, 1).is_err());
        assert!(discrete_gaussian(&mut rng, 0, 1).is_err());
        assert!(bernoulli_exp(&mut rng, 1, 0).is_err());
    }
}
