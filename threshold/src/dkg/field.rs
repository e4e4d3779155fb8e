//! Arithmetic for the BGW steps: the Mersenne field `F_{2^127−1}` on `u128` (trial division),
//! prime fields on big integers (the modulus and the gcd step), and Shamir sharing with Lagrange
//! interpolation at 0 over a field and over the integers (Δ-scaled, Shoup 2000 §2).

use rand_core::{CryptoRng, RngCore};

use crate::bigint::Int;

/// `2^127 − 1`, a Mersenne prime.
pub(crate) const P127: u128 = (1u128 << 127) - 1;

#[inline]
fn reduce127(x: u128) -> u128 {
    // For x < 2^128: x ≡ (x mod 2^127) + ⌊x / 2^127⌋ (mod 2^127 − 1), then one subtraction.
    let r = (x & P127) + (x >> 127);
    if r >= P127 {
        r - P127
    } else {
        r
    }
}

/// `a + b mod (2^127 − 1)` for reduced inputs.
#[inline]
pub(crate) fn add127(a: u128, b: u128) -> u128 {
    // a, b < 2^127, so the sum fits in 128 bits.
    reduce127(a + b)
}

/// `a − b mod (2^127 − 1)` for reduced inputs.
#[inline]
pub(crate) fn sub127(a: u128, b: u128) -> u128 {
    if a >= b {
        a - b
    } else {
        a + (P127 - b)
    }
}

/// `a · b mod (2^127 − 1)` for reduced inputs.
#[inline]
pub(crate) fn mul127(a: u128, b: u128) -> u128 {
    const M64: u128 = u64::MAX as u128;
    let (a1, a0) = (a >> 64, a & M64);
    let (b1, b0) = (b >> 64, b & M64);
    let p00 = a0 * b0;
    // a1, b1 < 2^63, so each cross product is < 2^127 and their sum fits in 128 bits.
    let mid = a0 * b1 + a1 * b0;
    let p11 = a1 * b1;
    let lo = p00.wrapping_add(mid << 64);
    let carry = u128::from(lo < p00);
    // The product is < 2^254, so hi < 2^126.
    let hi = p11 + (mid >> 64) + carry;
    // 2^128 ≡ 2 (mod 2^127 − 1).
    reduce127(reduce127(lo) + (hi << 1))
}

/// `a · x mod (2^127 − 1)` for a reduced `a` and a small `x < 2^32` (an evaluation point):
/// two 64×32-bit products instead of [`mul127`]'s four 64×64-bit ones.
#[inline]
pub(crate) fn mul127_small(a: u128, x: u32) -> u128 {
    const M64: u128 = u64::MAX as u128;
    let x = u128::from(x);
    // a = a1·2^64 + a0 with a1 < 2^63: lo < 2^96, hi < 2^95.
    let (lo, hi) = ((a & M64) * x, (a >> 64) * x);
    // hi·2^64 = ⌊hi / 2^63⌋·2^127 + (hi mod 2^63)·2^64 ≡ ⌊hi / 2^63⌋ + (hi mod 2^63)·2^64.
    let mask63 = (1u128 << 63) - 1;
    // lo + (hi mod 2^63)·2^64 + ⌊hi / 2^63⌋ < 2^96 + 2^127 + 2^32 < 2^128.
    reduce127(lo + ((hi & mask63) << 64) + (hi >> 63))
}

/// `a^(−1)` in `F_{2^127−1}` (Fermat), for `a ≠ 0`.
pub(crate) fn inv127(a: u128) -> u128 {
    pow127(a, P127 - 2)
}

fn pow127(mut a: u128, mut e: u128) -> u128 {
    let mut acc = 1u128;
    while e > 0 {
        if e & 1 == 1 {
            acc = mul127(acc, a);
        }
        a = mul127(a, a);
        e >>= 1;
    }
    acc
}

/// A uniform element of `F_{2^127−1}`.
pub(crate) fn random127<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> u128 {
    loop {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        let v = u128::from_be_bytes(b) >> 1;
        if v < P127 {
            return v;
        }
    }
}

/// Evaluates at `x = 1..=n` the polynomial with constant term `secret` and `degree` further
/// uniformly random coefficients; the coefficients are wiped before returning.
#[cfg(test)]
pub(crate) fn share127<R: RngCore + CryptoRng + ?Sized>(
    secret: u128,
    degree: usize,
    n: u16,
    rng: &mut R,
) -> Vec<u128> {
    let mut out = vec![0u128; usize::from(n)];
    share127_into(secret, degree, rng, &mut out);
    out
}

/// [`share127`] without allocating: writes the shares at `x = 1..=out.len()` into `out`
/// (`degree < 32`, which every supported committee satisfies: `2t − 2 ≤ 30`).
pub(crate) fn share127_into<R: RngCore + CryptoRng + ?Sized>(
    secret: u128,
    degree: usize,
    rng: &mut R,
    out: &mut [u128],
) {
    let mut coeffs = [0u128; 32];
    let degree = degree.min(31);
    coeffs[0] = secret;
    for c in coeffs.iter_mut().take(degree + 1).skip(1) {
        *c = random127(rng);
    }
    for (x, o) in out.iter_mut().enumerate() {
        // Evaluation points are party indices (at most u16::MAX).
        let x = x as u32 + 1;
        *o = coeffs[..=degree]
            .iter()
            .rev()
            .fold(0u128, |acc, c| add127(mul127_small(acc, x), *c));
    }
    zeroize::Zeroize::zeroize(&mut coeffs);
}

/// Lagrange coefficients at 0 in `F_{2^127−1}` for the points `xs` (distinct, nonzero).
pub(crate) fn lagrange127(xs: &[u16]) -> Vec<u128> {
    xs.iter()
        .map(|&j| {
            let (mut num, mut den) = (1u128, 1u128);
            for &m in xs {
                if m != j {
                    num = mul127(num, u128::from(m));
                    den = mul127(den, sub127(u128::from(m), u128::from(j)));
                }
            }
            mul127(num, inv127(den))
        })
        .collect()
}

/// The ring `Z_Q` on big integers in which the large BGW steps share: `Q = (2^127 − 1)^m`, the
/// smallest power of the Mersenne prime above `2^bits`. Shamir sharing and Lagrange
/// interpolation need only that every evaluation point and every difference of two points (all
/// below 17) be invertible, so this ring is as private and as correct as a prime field
/// (Cramer–Damgård–Nielsen, *Secure Multiparty Computation and Secret Sharing*, §11), and anyone
/// recomputes it instantly — searching for a 3,300-bit prime took seconds per party. Its only
/// prime factor is `2^127 − 1`, so a random linear combination of inconsistent sharings is
/// consistent with probability about `degree/2^127` (see [`super::consistency`]).
#[derive(Clone, Debug)]
pub(crate) struct ShareRing {
    pub(crate) p: Int,
}

impl ShareRing {
    /// The ring of the smallest power of `2^127 − 1` above `2^bits`.
    pub(crate) fn above_power_of_two(bits: usize) -> Self {
        let prime = Int::from_u128(P127);
        let mut p = prime.clone();
        while p.bits() <= bits {
            p = p.mul(&prime);
        }
        ShareRing { p }
    }

    /// Shares `secret` (reduced mod p) with a random polynomial of `degree`, evaluated at
    /// `1..=n`.
    pub(crate) fn share<R: RngCore + CryptoRng + ?Sized>(
        &self,
        secret: &Int,
        degree: usize,
        n: u16,
        rng: &mut R,
    ) -> Vec<Int> {
        let mut coeffs = vec![crate::bigint::SecretInt::new(secret.rem_euclid(&self.p))];
        for _ in 0..degree {
            coeffs.push(crate::bigint::SecretInt::new(Int::random_below(
                rng, &self.p,
            )));
        }
        (1..=n)
            .map(|x| {
                let x = Int::from_u64(u64::from(x));
                coeffs.iter().rev().fold(Int::zero(), |acc, c| {
                    acc.mul(&x).add(c.expose()).rem_euclid(&self.p)
                })
            })
            .collect()
    }

    /// Lagrange coefficients at 0 for the points `xs`.
    pub(crate) fn lagrange(&self, xs: &[u16]) -> Vec<Int> {
        xs.iter()
            .map(|&j| {
                let (mut num, mut den) = (Int::one(), Int::one());
                for &m in xs {
                    if m != j {
                        num = num.mul_u64(u64::from(m));
                        den = den.mul(&Int::from_i64(i64::from(m) - i64::from(j)));
                    }
                }
                // den ≠ 0 mod p: the points are distinct and far smaller than p.
                let inv = den.invert(&self.p).unwrap_or_else(Int::zero);
                num.mul_mod(&inv, &self.p)
            })
            .collect()
    }

    /// `Σ λ_j · y_j mod p`.
    pub(crate) fn interpolate_at_zero(&self, xs: &[u16], ys: &[&Int]) -> Int {
        self.interpolate_with(&self.lagrange(xs), ys)
    }

    /// `Σ λ_j · y_j mod p` with precomputed coefficients.
    pub(crate) fn interpolate_with(&self, lagrange: &[Int], ys: &[&Int]) -> Int {
        lagrange
            .iter()
            .zip(ys)
            .fold(Int::zero(), |acc, (l, y)| acc.add(&l.mul(y)))
            .rem_euclid(&self.p)
    }
}

/// Integer Lagrange coefficients at 0 scaled by `delta` (a multiple of every denominator, e.g.
/// `n!`): `λ'_j = Δ · Π_{m≠j} m / (m − j)`, exact integers.
pub(crate) fn integer_lagrange(xs: &[u16], delta: &Int) -> Vec<Int> {
    xs.iter()
        .map(|&j| {
            let (mut num, mut den) = (delta.clone(), Int::one());
            for &m in xs {
                if m != j {
                    num = num.mul_u64(u64::from(m));
                    den = den.mul(&Int::from_i64(i64::from(m) - i64::from(j)));
                }
            }
            // Δ = n! is divisible by Π (m − j) for distinct m, j in 1..=n (a product of
            // distinct nonzero differences divides (n−1)! up to sign).
            let neg = den.is_negative();
            let q = num.div_exact(&den.abs()).unwrap_or_else(Int::zero);
            if neg {
                q.neg()
            } else {
                q
            }
        })
        .collect()
}

/// Evaluates an integer polynomial (constant term first) at a small point.
pub(crate) fn eval_int(coeffs: &[crate::bigint::SecretInt], x: u16) -> Int {
    let x = Int::from_u64(u64::from(x));
    coeffs
        .iter()
        .rev()
        .fold(Int::zero(), |acc, c| acc.mul(&x).add(c.expose()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn reference_mul(a: u128, b: u128) -> u128 {
        let p = Int::from_u128(P127);
        Int::from_u128(a)
            .mul(&Int::from_u128(b))
            .rem_euclid(&p)
            .to_i128()
            .map(|v| v as u128)
            .unwrap_or(u128::MAX)
    }

    proptest! {
        #[test]
        fn mul127_matches_big_integer_arithmetic(a in 0..P127, b in 0..P127) {
            prop_assert_eq!(mul127(a, b), reference_mul(a, b));
        }

        #[test]
        fn mul127_small_matches_big_integer_arithmetic(a in 0..P127, x in any::<u32>()) {
            prop_assert_eq!(mul127_small(a, x), reference_mul(a, u128::from(x)));
        }

        #[test]
        fn add_and_sub_are_inverse(a in 0..P127, b in 0..P127) {
            prop_assert_eq!(sub127(add127(a, b), b), a);
        }
    }

    #[test]
    fn mul127_edge_values() {
        for &(a, b) in &[
            (P127 - 1, P127 - 1),
            (0, P127 - 1),
            (1, P127 - 1),
            (1 << 126, 4),
        ] {
            assert_eq!(mul127(a, b), reference_mul(a, b));
        }
        for &(a, x) in &[
            (P127 - 1, u32::MAX),
            (P127 - 1, 1),
            (0, u32::MAX),
            (1 << 126, 2),
        ] {
            assert_eq!(mul127_small(a, x), reference_mul(a, u128::from(x)));
        }
    }

    #[test]
    fn any_degree_plus_one_shares_recover_the_secret_in_f127() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let shares = share127(123_456_789, 2, 5, &mut rng);
        for xs in [[1u16, 2, 3], [2, 4, 5], [1, 3, 5]] {
            let l = lagrange127(&xs);
            let v = xs.iter().zip(&l).fold(0, |acc, (&x, &c)| {
                add127(acc, mul127(c, shares[usize::from(x) - 1]))
            });
            assert_eq!(v, 123_456_789);
        }
    }

    #[test]
    fn big_field_sharing_and_integer_lagrange() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let f = ShareRing::above_power_of_two(200);
        let secret = Int::from_u64(987_654_321);
        let shares = f.share(&secret, 2, 5, &mut rng);
        let xs = [1u16, 4, 5];
        let ys: Vec<&Int> = xs.iter().map(|&x| &shares[usize::from(x) - 1]).collect();
        assert_eq!(f.interpolate_at_zero(&xs, &ys), secret);

        // Over the integers: Δ·f(0) = Σ λ'_j f(j).
        let delta = crate::keys::factorial(5);
        let coeffs = vec![
            crate::bigint::SecretInt::new(Int::from_i64(-77)),
            crate::bigint::SecretInt::new(Int::from_u64(1 << 40)),
            crate::bigint::SecretInt::new(Int::from_u64(12_345)),
        ];
        let l = integer_lagrange(&xs, &delta);
        let sum = xs.iter().zip(&l).fold(Int::zero(), |acc, (&x, c)| {
            acc.add(&c.mul(&eval_int(&coeffs, x)))
        });
        assert_eq!(sum, Int::from_i64(-77).mul(&delta));
    }

    #[test]
    fn jacobi_matches_euler_criterion_for_a_prime() {
        let p = Int::from_u64(1_000_003);
        for a in 1..200u64 {
            let e = Int::from_u64(a).pow_mod(&Int::from_u64(500_001), &p);
            let expect = if e == Int::one() { 1 } else { -1 };
            assert_eq!(Int::from_u64(a).jacobi(&p), expect, "a = {a}");
        }
        // Multiplicative in the modulus: (a / 15) = (a / 3)(a / 5).
        for a in 0..30u64 {
            let j = Int::from_u64(a).jacobi(&Int::from_u64(15));
            let j3 = Int::from_u64(a).jacobi(&Int::from_u64(3));
            let j5 = Int::from_u64(a).jacobi(&Int::from_u64(5));
            assert_eq!(j, j3 * j5, "a = {a}");
        }
    }
}
