//! Dealer key generation (Damgård–Jurik 2001 §4.1; Shoup 2000 §2), for tests and for the
//! labelled "dealer" ceremony mode. **The dealer learns the factorisation**: it is trusted to
//! forget it. Production committees use the dealer-free generation of issue 3, which yields the
//! same [`ThresholdPublicKey`] and [`KeyShare`] types.
//!
//! 1. Safe primes `p = 2p' + 1`, `q = 2q' + 1` of `|N|/2` bits each, with the top two bits set
//!    so that `N = pq` has exactly `|N|` bits (kzen-paillier's generator missed by one bit about
//!    half the time). `m = p'q'`.
//! 2. `d ≡ 0 mod m`, `d ≡ 1 mod N` (CRT: `d = m·(m⁻¹ mod N)`).
//! 3. `f(X) = d + a_1 X + … + a_{t−1} X^{t−1}` with `a_k` uniform in `[0, N·m)`; `s_i = f(i) mod N·m`.
//! 4. `v = H(N)² mod N²` — a hashed square, so it generates the squares subgroup `Q_{N²}` with
//!    overwhelming probability and nobody chose it — and `v_i = v^(Δ·s_i) mod N²`.
//! 5. θ = 1: `c^(4Δ²d) = 1 + 4Δ²·m_plain·N mod N²` because `d ≡ 1 mod N` and `d ≡ 0 mod m`.

use rand_core::{CryptoRng, RngCore, SeedableRng};

use crate::bigint::{Int, SecretInt};
use crate::error::{Error, Result};
/// Step 4's base, derived in one place (`keys`); re-exported here for the dealer-free generation.
pub(crate) use crate::keys::verification_base;
use crate::keys::{
    factorial, primes_below, KeyShare, PartyIndex, PublicKey, ThresholdPublicKey, MAX_MODULUS_BITS,
    MIN_MODULUS_BITS,
};

/// Generates a threshold key and its `n` shares with a trusted dealer.
pub fn generate<R: RngCore + CryptoRng + ?Sized>(
    bits: u32,
    parties: u16,
    threshold: u16,
    rng: &mut R,
) -> Result<(ThresholdPublicKey, Vec<KeyShare>)> {
    if !bits.is_multiple_of(2) || !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) {
        return Err(Error::InvalidParameters(format!(
            "modulus size {bits}: must be even and in {MIN_MODULUS_BITS}..={MAX_MODULUS_BITS}"
        )));
    }
    if threshold == 0 || threshold > parties {
        return Err(Error::InvalidParameters(format!(
            "threshold {threshold} must be in 1..={parties}"
        )));
    }
    let half = bits as usize / 2;
    let (p, pp) = safe_prime(half, rng);
    let (q, qp) = loop {
        let (q, qp) = safe_prime(half, rng);
        if q.expose() != p.expose() {
            break (q, qp);
        }
    };
    let n = p.expose().mul(q.expose());
    debug_assert_eq!(n.bits(), bits as usize);
    let m = SecretInt::new(pp.expose().mul(qp.expose()));
    let nm = SecretInt::new(n.mul(m.expose()));
    // gcd(m, N) = 1 because p', q' < p, q are primes different from p and q.
    let m_inv = SecretInt::new(
        m.expose()
            .invert(&n)
            .ok_or_else(|| Error::InvalidParameters("gcd(m, N) ≠ 1".into()))?,
    );
    let d = SecretInt::new(m.expose().mul(m_inv.expose()));
    let pk = PublicKey::from_modulus(n)?;

    let coeffs: Vec<SecretInt> = (1..threshold)
        .map(|_| SecretInt::new(Int::random_below(rng, nm.expose())))
        .collect();
    let shares: Vec<SecretInt> = (1..=parties)
        .map(|i| {
            // Horner: f(i) = d + i(a_1 + i(a_2 + ...)) mod Nm.
            let x = Int::from_u64(u64::from(i));
            let mut acc = SecretInt::new(Int::zero());
            for a in coeffs.iter().rev() {
                acc = SecretInt::new(acc.expose().mul(&x).add(a.expose()));
            }
            SecretInt::new(acc.expose().mul(&x).add(d.expose()).rem_euclid(nm.expose()))
        })
        .collect();

    let nn = pk.nn();
    let v = verification_base(&pk);
    let delta = factorial(parties);
    let vks: Vec<Int> = shares
        .iter()
        .map(|s| v.pow_mod_secret(&SecretInt::new(s.expose().mul(&delta)), nn))
        .collect();
    let share_bits = nm.expose().bits() as u32;
    let key =
        ThresholdPublicKey::from_parts(pk, parties, threshold, v, vks, Int::one(), share_bits)?;
    let fp = key.fingerprint();
    let shares = shares
        .into_iter()
        .enumerate()
        .map(|(k, s)| KeyShare::new(PartyIndex(k as u16 + 1), s, fp))
        .collect();
    Ok((key, shares))
}

/// Deterministic dealer generation from a seed, for tests and known-answer vectors only: anyone
/// with the seed has the key.
pub fn insecure_generate_from_seed(
    bits: u32,
    parties: u16,
    threshold: u16,
    seed: u64,
) -> Result<(ThresholdPublicKey, Vec<KeyShare>)> {
    let mut rng = seeded::Sha512CounterRng::seed_from_u64(seed);
    generate(bits, parties, threshold, &mut rng)
}

/// A deterministic CSPRNG for the insecure seeded mode, built from SHA-512 in counter mode
/// (keeps `rand_chacha` a dev-dependency).
mod seeded {
    use rand_core::{CryptoRng, RngCore, SeedableRng};
    use sha2::{Digest, Sha512};

    pub struct Sha512CounterRng {
        seed: [u8; 32],
        counter: u64,
        buf: Vec<u8>,
    }

    impl SeedableRng for Sha512CounterRng {
        type Seed = [u8; 32];
        fn from_seed(seed: [u8; 32]) -> Self {
            Sha512CounterRng {
                seed,
                counter: 0,
                buf: Vec::new(),
            }
        }
    }

    impl RngCore for Sha512CounterRng {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest.iter_mut() {
                if self.buf.is_empty() {
                    let mut h = Sha512::new();
                    h.update(b"medtech-threshold/insecure-seeded-rng");
                    h.update(self.seed);
                    h.update(self.counter.to_be_bytes());
                    self.counter += 1;
                    self.buf = h.finalize().to_vec();
                }
                *d = self.buf.pop().unwrap_or(0);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }

    impl CryptoRng for Sha512CounterRng {}
}

/// Small odd primes used to sieve candidates (3 ≤ ℓ < 2^13).
fn sieve_primes() -> Vec<u64> {
    primes_below(1 << 13).into_iter().skip(1).collect()
}

/// A safe prime `p = 2p' + 1` of exactly `bits` bits with its top two bits set; returns (p, p').
///
/// Search: a random odd start `p'`, then `p' + 2k`; a candidate is tested only if neither `p'`
/// nor `2p' + 1` has a prime factor below 2^13 (tracked incrementally with residues), then a
/// base-2 Fermat test on `p` (cheap, filters nearly all), then GMP's BPSW + Miller–Rabin on both.
pub(crate) fn safe_prime<R: RngCore + CryptoRng + ?Sized>(
    bits: usize,
    rng: &mut R,
) -> (SecretInt, SecretInt) {
    let primes = sieve_primes();
    let two = Int::from_u64(2);
    loop {
        // p' has bits-1 bits with its top two bits set, so p = 2p'+1 has its top two set.
        let mut start = Int::random_bits(rng, bits - 3);
        start = start.add(&Int::from_u64(3).shl(bits - 3));
        if !start.is_odd() {
            start = start.add(&Int::one());
        }
        let residues: Vec<u64> = primes
            .iter()
            .map(|&l| start.rem_euclid(&Int::from_u64(l)).to_u64().unwrap_or(0))
            .collect();
        // Scan a window of 2^16 odd offsets, then draw a new start.
        for k in 0..(1u64 << 16) {
            let delta = 2 * k;
            let survives = primes.iter().zip(&residues).all(|(&l, &r)| {
                let a = (r + delta) % l;
                a != 0 && (2 * a + 1) % l != 0
            });
            if !survives {
                continue;
            }
            let pp = start.add(&Int::from_u64(delta));
            if pp.bits() != bits - 1 {
                break;
            }
            let p = pp.shl(1).add(&Int::one());
            let pm1 = p.sub(&Int::one());
            if two.pow_mod(&pm1, &p) != 1u64 {
                continue;
            }
            if pp.is_probable_prime(30) && p.is_probable_prime(30) {
                return (SecretInt::new(p), SecretInt::new(pp));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_primes_are_safe_and_exact_size() {
        let mut rng = seeded::Sha512CounterRng::seed_from_u64(3);
        for bits in [128usize, 256] {
            let (p, pp) = safe_prime(bits, &mut rng);
            assert_eq!(p.expose().bits(), bits);
            assert!(p.expose().bit(bits - 2), "second-highest bit set");
            assert!(p.expose().is_probable_prime(40));
            assert!(pp.expose().is_probable_prime(40));
            assert_eq!(pp.expose().shl(1).add(&Int::one()), *p.expose());
        }
    }

    #[test]
    fn modulus_has_exact_size_every_time() {
        for seed in 0..4 {
            let (key, shares) = insecure_generate_from_seed(512, 3, 2, seed).unwrap();
            assert_eq!(key.public_key().bits(), 512);
            assert_eq!(shares.len(), 3);
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(insecure_generate_from_seed(511, 3, 2, 0).is_err());
        assert!(insecure_generate_from_seed(256, 3, 2, 0).is_err());
        assert!(insecure_generate_from_seed(512, 3, 4, 0).is_err());
        assert!(insecure_generate_from_seed(512, 3, 0, 0).is_err());
    }
}
