//! Pedersen commitments in `G_P`, the quadratic residues modulo a fixed safe prime
//! `R = 2P + 1`, for the integers of the key stage that must never appear in the exponent of a
//! group whose order relates to `N` (issue 25, break 1; docs/dkg.md, "Break 1").
//!
//! * **The group.** `R` is the RFC 3526 4096-bit MODP prime (group 16), a published safe prime
//!   whose digits are those of π with fixed top and bottom 64 bits: nothing up the sleeve. `G_P`
//!   has prime order `P = (R − 1)/2` (4095 bits) and is unrelated to `N`: no `φ(N)`-multiple
//!   annihilates it. Test `the_group_is_a_safe_prime_group` checks that `R` and `P` are
//!   probable primes.
//! * **Generators.** `g` and `h` are `(H(label) mod R)²` for two domain labels, `H` the crate's
//!   SHA-512 expansion ([`crate::hash::hash_to_int`]) to 4096 + 128 bits: squares, so in `G_P`,
//!   and not 1 (checked). Nobody knows `log_g h`.
//! * **Commitments.** `Com(x, r) = g^x·h^r mod R` for a signed integer `x` (a negative `x`
//!   uses `g⁻¹`) and `r ∈ [0, P)`. Perfectly hiding (`h^r` is uniform in `G_P`); binding mod `P`
//!   under the discrete-logarithm assumption in `G_P` (it need only hold during the ceremony).
//! * **Integers, not residues.** A commitment binds `x mod P` only. Every integer committed
//!   here has a public bound `|x| < 2^b` checked by its honest holder, and [`Group::check_bound`]
//!   refuses any `b` with `2^(b+1) > P/2`: two such integers equal mod `P` are then equal over
//!   `Z`, which is what lets the product proof ([`super::product`]) conclude over the integers.
//!
//! Secret exponents go through GMP's constant-time `mpz_powm_sec`
//! ([`Int::pow_mod_secret`]); blinding values are [`SecretInt`]s (zeroized, redacted `Debug`).

use std::sync::OnceLock;

use rand_core::{CryptoRng, RngCore};

use crate::bigint::{Int, SecretInt};
use crate::error::{Error, Result};
use crate::hash::hash_to_int;

/// `R`, the RFC 3526 4096-bit MODP group prime (group 16), in hex, 64 digits a line.
const R_HEX: [&str; 16] = [
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74",
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437",
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05",
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB",
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718",
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33",
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864",
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2",
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A92108011A723C12A787E6D7",
    "88719A10BDBA5B2699C327186AF4E23C1A946834B6150BDA2583E9CA2AD44CE8",
    "DBBBC2DB04DE8EF92E8EFC141FBECAA6287C59474E6BC05D99B2964FA090C3A2",
    "233BA186515BE7ED1F612970CEE2D7AFB81BDD762170481CD0069127D5B05AA9",
    "93B4EA988D8FDDC186FFB7DC90A6C08F4DF435C934063199FFFFFFFFFFFFFFFF",
];

/// The group `G_P ⊂ Z*_R` with its two generators.
#[derive(Debug)]
pub(super) struct Group {
    /// The safe prime `R = 2P + 1`.
    r: Int,
    /// The prime order `P` of `G_P`.
    p: Int,
    g: Int,
    h: Int,
    g_inv: Int,
    h_inv: Int,
}

/// `(H(label) mod R)²`, a generator of `G_P` (every element but 1 is one: the order is prime).
fn generator(label: &[u8], r: &Int) -> Option<Int> {
    let x = hash_to_int(label, b"medtech-threshold/v1/dkg-pedersen", r.bits() + 128).rem_euclid(r);
    let g = x.mul_mod(&x, r);
    (!g.is_zero() && g != Int::one()).then_some(g)
}

impl Group {
    fn new() -> Option<Group> {
        let digits = R_HEX
            .concat()
            .chars()
            .map(|c| c.to_digit(16).and_then(|d| u8::try_from(d).ok()))
            .collect::<Option<Vec<u8>>>()?;
        let bytes: Vec<u8> = digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect();
        let r = Int::from_bytes_be(&bytes);
        let p = r.sub(&Int::one()).shr(1);
        let g = generator(b"medtech-threshold/v1/dkg-pedersen/g", &r)?;
        let h = generator(b"medtech-threshold/v1/dkg-pedersen/h", &r)?;
        let g_inv = g.invert(&r)?;
        let h_inv = h.invert(&r)?;
        Some(Group {
            r,
            p,
            g,
            h,
            g_inv,
            h_inv,
        })
    }

    /// The modulus `R`.
    pub(super) fn modulus(&self) -> &Int {
        &self.r
    }

    /// The group order `P`.
    pub(super) fn order(&self) -> &Int {
        &self.p
    }

    /// Refuses a bound of `bits` bits on committed integers unless `2^(bits+1) ≤ P/2`, so that
    /// two integers below the bound (or a difference of two of them) equal mod `P` are equal.
    pub(super) fn check_bound(&self, bits: usize) -> Result<()> {
        if bits + 2 < self.p.bits() {
            Ok(())
        } else {
            Err(Error::InvalidParameters(format!(
                "committed integers of {bits} bits do not fit the {}-bit Pedersen group order \
                 twice over (a smaller modulus is needed)",
                self.p.bits()
            )))
        }
    }

    /// Whether `c` is an element of `G_P`: `0 < c < R` and a quadratic residue mod `R`.
    pub(super) fn contains(&self, c: &Int) -> bool {
        !c.is_negative() && !c.is_zero() && c < &self.r && c.jacobi(&self.r) == 1
    }

    /// `g^x·h^r mod R` for a secret signed `x` and a secret `r ∈ [0, P)`.
    pub(super) fn commit(&self, x: &SecretInt, r: &SecretInt) -> Int {
        self.pow_g_secret(x)
            .mul_mod(&self.h.pow_mod_secret(r, &self.r), &self.r)
    }

    /// `g^x mod R` for a secret signed `x`.
    pub(super) fn pow_g_secret(&self, x: &SecretInt) -> Int {
        if x.expose().is_negative() {
            self.g_inv
                .pow_mod_secret(&SecretInt::new(x.expose().abs()), &self.r)
        } else {
            self.g.pow_mod_secret(x, &self.r)
        }
    }

    /// `g^z·h^s mod R` for public signed `z` and `s` (a verifier's side).
    pub(super) fn commit_public(&self, z: &Int, s: &Int) -> Int {
        let pow = |b: &Int, b_inv: &Int, x: &Int| {
            if x.is_negative() {
                b_inv.pow_mod(&x.abs(), &self.r)
            } else {
                b.pow_mod(x, &self.r)
            }
        };
        pow(&self.g, &self.g_inv, z).mul_mod(&pow(&self.h, &self.h_inv, s), &self.r)
    }

    /// A uniform blinding value in `[0, P)`.
    pub(super) fn random_blinding<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> SecretInt {
        SecretInt::new(Int::random_below(rng, &self.p))
    }

    /// Commits to every coefficient of a polynomial: the commitments `C_k = Com(a_k, b_k)` and
    /// the blinding polynomial `b`.
    pub(super) fn commit_poly<R: RngCore + CryptoRng + ?Sized>(
        &self,
        coeffs: &[SecretInt],
        rng: &mut R,
    ) -> (Vec<Int>, Vec<SecretInt>) {
        coeffs
            .iter()
            .map(|a| {
                let b = self.random_blinding(rng);
                (self.commit(a, &b), b)
            })
            .unzip()
    }

    /// `b(j) = Σ_k b_k·j^k mod P`, the blinding of `f(j)` in `Π_k C_k^(j^k)`.
    pub(super) fn blinding_at(&self, blinding: &[SecretInt], j: u16) -> SecretInt {
        let x = Int::from_u64(u64::from(j));
        let mut acc = SecretInt::new(Int::zero());
        for b in blinding.iter().rev() {
            acc = SecretInt::new(acc.expose().mul(&x).add(b.expose()).rem_euclid(&self.p));
        }
        acc
    }

    /// `Π_k C_k^(j^k) mod R`, the commitment to `f(j)` with blinding `b(j)`.
    pub(super) fn committed_at(&self, commitments: &[Int], j: u16) -> Int {
        let x = Int::from_u64(u64::from(j));
        let mut power = Int::one();
        let mut acc = Int::one();
        for c in commitments {
            acc = acc.mul_mod(&c.pow_mod(&power, &self.r), &self.r);
            power = power.mul(&x);
        }
        acc
    }

    /// The product of commitments mod `R` (the commitment to the sum, blindings added mod `P`).
    pub(super) fn combine<'a>(&self, commitments: impl IntoIterator<Item = &'a Int>) -> Int {
        commitments
            .into_iter()
            .fold(Int::one(), |acc, c| acc.mul_mod(c, &self.r))
    }

    /// Whether `c = Com(x, r)` (`x` and `r` are the caller's secrets: constant-time powers).
    pub(super) fn opens(&self, c: &Int, x: &SecretInt, r: &SecretInt) -> bool {
        self.commit(x, r) == *c
    }
}

/// The group, built once (its constants are fixed; `None` is impossible for the embedded `R`
/// and is reported as an error rather than a panic).
pub(super) fn group() -> Result<&'static Group> {
    static GROUP: OnceLock<Option<Group>> = OnceLock::new();
    GROUP.get_or_init(Group::new).as_ref().ok_or_else(|| {
        Error::KeyGenerationFailed("the Pedersen group constants are invalid".into())
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    #[test]
    fn the_group_is_a_safe_prime_group() {
        let gp = group().unwrap();
        assert_eq!(gp.modulus().bits(), 4096);
        assert_eq!(gp.order().bits(), 4095);
        assert!(gp.modulus().is_probable_prime(25), "R is prime");
        assert!(gp.order().is_probable_prime(25), "P = (R − 1)/2 is prime");
        assert_eq!(gp.order().shl(1).add(&Int::one()), *gp.modulus());
        for x in [&gp.g, &gp.h] {
            assert!(gp.contains(x));
            assert_ne!(*x, Int::one());
            // Order P: x^P = 1.
            assert_eq!(x.pow_mod(gp.order(), gp.modulus()), Int::one());
        }
        assert_ne!(gp.g, gp.h);
        assert!(
            !gp.contains(&gp.modulus().sub(&Int::one())),
            "−1 is not a square mod R"
        );
        assert!(!gp.contains(&Int::zero()) && !gp.contains(gp.modulus()));
    }

    #[test]
    fn commitments_are_homomorphic_and_open_at_points() {
        let gp = group().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let coeffs: Vec<SecretInt> = [-5i64, 7, 1 << 40]
            .iter()
            .map(|&c| SecretInt::new(Int::from_i64(c)))
            .collect();
        let (cs, bs) = gp.commit_poly(&coeffs, &mut rng);
        assert!(cs.iter().all(|c| gp.contains(c)));
        for j in 1..=5u16 {
            let x = super::super::field::eval_int(&coeffs, j);
            let b = gp.blinding_at(&bs, j);
            assert!(gp.opens(&gp.committed_at(&cs, j), &SecretInt::new(x.clone()), &b));
            assert!(!gp.opens(
                &gp.committed_at(&cs, j),
                &SecretInt::new(x.add(&Int::one())),
                &b
            ));
            assert_eq!(gp.committed_at(&cs, j), gp.commit_public(&x, b.expose()));
        }
        // Com(x1, r1)·Com(x2, r2) = Com(x1 + x2, r1 + r2 mod P).
        let (a, b) = (
            SecretInt::new(Int::from_i64(-3)),
            SecretInt::new(Int::from_i64(10)),
        );
        let (ra, rb) = (gp.random_blinding(&mut rng), gp.random_blinding(&mut rng));
        let sum = gp.combine([&gp.commit(&a, &ra), &gp.commit(&b, &rb)]);
        let r = ra.expose().add(rb.expose()).rem_euclid(gp.order());
        assert_eq!(sum, gp.commit_public(&Int::from_i64(7), &r));
    }

    #[test]
    fn bounds_that_do_not_fit_twice_are_refused() {
        let gp = group().unwrap();
        assert!(gp.check_bound(4092).is_ok());
        assert!(gp.check_bound(4093).is_err());
        // The key stage's integers at the largest modulus the key stage accepts fit.
        assert!(gp.check_bound(2048 + 600).is_ok());
    }
}
