//! The big-integer backend, and the only module that names it.
//!
//! Everything else in the crate does arithmetic through [`Int`] and [`SecretInt`]; replacing GMP
//! (for example by `rug` once Debian ships GMP ≥ 6.3, or by `crypto-bigint`) means rewriting this
//! file alone. The backend is `rust-gmp-kzen`, the same GMP binding `curv-kzen` and
//! `kzen-paillier` use, because it exposes `mpz_powm_sec` (constant-time modular exponentiation),
//! which curv hides.
//!
//! Conventions: every modular operation takes an explicit modulus and returns a value in
//! `[0, modulus)`; exponents are non-negative; byte encodings are unsigned big-endian magnitudes
//! with no leading zero byte (zero is the empty string), so an encoding is unique.

use core::cmp::Ordering;
use core::fmt;

use gmp::mpz::Mpz;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

/// An arbitrary-precision integer holding public data.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Int(Mpz);

impl Int {
    pub(crate) fn zero() -> Self {
        Int(Mpz::zero())
    }

    pub(crate) fn one() -> Self {
        Int(Mpz::one())
    }

    pub(crate) fn from_u64(v: u64) -> Self {
        Int(Mpz::from(v))
    }

    pub(crate) fn from_i64(v: i64) -> Self {
        Int(Mpz::from(v))
    }

    pub(crate) fn from_u128(v: u128) -> Self {
        Int::from_bytes_be(&v.to_be_bytes())
    }

    pub(crate) fn from_i128(v: i128) -> Self {
        let mag = Int::from_bytes_be(&v.unsigned_abs().to_be_bytes());
        if v < 0 {
            mag.neg()
        } else {
            mag
        }
    }

    /// Unsigned big-endian magnitude; leading zero bytes are accepted here (canonical-form checks
    /// are the decoder's job).
    pub(crate) fn from_bytes_be(bytes: &[u8]) -> Self {
        Int(Mpz::from(bytes))
    }

    /// Unsigned big-endian magnitude of `|self|`, minimal length.
    pub(crate) fn to_bytes_be(&self) -> Vec<u8> {
        let mag = self.0.abs();
        let v: Vec<u8> = (&mag).into();
        // rust-gmp returns [0] for zero; our canonical zero is empty.
        if mag.is_zero() {
            Vec::new()
        } else {
            v
        }
    }

    /// Big-endian magnitude left-padded to exactly `len` bytes (`None` if it does not fit).
    pub(crate) fn to_bytes_be_padded(&self, len: usize) -> Option<Vec<u8>> {
        let b = self.to_bytes_be();
        if b.len() > len {
            return None;
        }
        let mut out = vec![0u8; len - b.len()];
        out.extend_from_slice(&b);
        Some(out)
    }

    pub(crate) fn bits(&self) -> usize {
        if self.0.is_zero() {
            0
        } else {
            self.0.bit_length()
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        self.0.is_zero()
    }

    pub(crate) fn is_negative(&self) -> bool {
        self.0 < Mpz::zero()
    }

    pub(crate) fn is_odd(&self) -> bool {
        self.0.tstbit(0)
    }

    pub(crate) fn bit(&self, i: usize) -> bool {
        self.0.tstbit(i)
    }

    pub(crate) fn add(&self, o: &Int) -> Int {
        Int(&self.0 + &o.0)
    }

    pub(crate) fn sub(&self, o: &Int) -> Int {
        Int(&self.0 - &o.0)
    }

    pub(crate) fn mul(&self, o: &Int) -> Int {
        Int(&self.0 * &o.0)
    }

    pub(crate) fn mul_u64(&self, o: u64) -> Int {
        Int(&self.0 * Mpz::from(o))
    }

    pub(crate) fn neg(&self) -> Int {
        Int(-self.0.clone())
    }

    pub(crate) fn abs(&self) -> Int {
        Int(self.0.abs())
    }

    pub(crate) fn shl(&self, bits: usize) -> Int {
        Int(&self.0 << bits)
    }

    pub(crate) fn shr(&self, bits: usize) -> Int {
        Int(&self.0 >> bits)
    }

    /// Exact quotient test: `Some(self / d)` when `d` divides `self`.
    pub(crate) fn div_exact(&self, d: &Int) -> Option<Int> {
        if d.is_zero() || !self.0.is_multiple_of(&d.0) {
            return None;
        }
        Some(Int(self.0.div_floor(&d.0)))
    }

    /// Least non-negative residue `self mod m` (m > 0).
    pub(crate) fn rem_euclid(&self, m: &Int) -> Int {
        Int(self.0.mod_floor(&m.0))
    }

    pub(crate) fn mul_mod(&self, o: &Int, m: &Int) -> Int {
        Int((&self.0 * &o.0).mod_floor(&m.0))
    }

    pub(crate) fn gcd(&self, o: &Int) -> Int {
        Int(self.0.gcd(&o.0))
    }

    pub(crate) fn invert(&self, m: &Int) -> Option<Int> {
        self.rem_euclid(m).0.invert(&m.0).map(Int)
    }

    /// Variable-time `self^e mod m` for **public** exponents `e ≥ 0`.
    pub(crate) fn pow_mod(&self, e: &Int, m: &Int) -> Int {
        debug_assert!(!e.is_negative());
        Int(self.0.powm(&e.0, &m.0))
    }

    /// `self^e mod m` for a secret exponent, through GMP's `mpz_powm_sec`, whose time and memory
    /// access pattern depend only on the operand sizes. `m` must be odd (it always is here: N or
    /// N²); `e = 0` is handled without calling GMP, which requires `e > 0`.
    pub(crate) fn pow_mod_secret(&self, e: &SecretInt, m: &Int) -> Int {
        debug_assert!(m.is_odd());
        if e.0.is_zero() {
            return Int::one().rem_euclid(m);
        }
        Int(self.0.powm_sec(&e.0 .0, &m.0))
    }

    /// Miller–Rabin with `reps` rounds (GMP's `mpz_probab_prime_p`, which also trial-divides).
    pub(crate) fn is_probable_prime(&self, reps: i32) -> bool {
        !matches!(
            self.0.probab_prime(reps),
            gmp::mpz::ProbabPrimeResult::NotPrime
        )
    }

    /// `self mod m` for a small modulus `m > 0` (floor convention: the result is in `[0, m)`).
    pub(crate) fn rem_u64(&self, m: u64) -> u64 {
        debug_assert!(m > 0);
        // `%` truncates towards zero; fold negative remainders into [0, m).
        if !self.is_negative() {
            // No copy of `self` for the common case (candidates, residues).
            return Option::<u64>::from(&(&self.0 % m)).unwrap_or(0);
        }
        let r = Option::<u64>::from(&(self.0.abs() % m)).unwrap_or(0);
        if r != 0 {
            m - r
        } else {
            r
        }
    }

    /// The Jacobi symbol `(self / n)` for odd `n > 0`: −1, 0 or 1.
    pub(crate) fn jacobi(&self, n: &Int) -> i8 {
        debug_assert!(n.is_odd() && !n.is_negative());
        let mut a = self.rem_euclid(n);
        let mut n = n.clone();
        let mut result: i8 = 1;
        while !a.is_zero() {
            let n8 = n.rem_u64(8);
            while !a.is_odd() {
                a = a.shr(1);
                if n8 == 3 || n8 == 5 {
                    result = -result;
                }
            }
            core::mem::swap(&mut a, &mut n);
            if a.rem_u64(4) == 3 && n.rem_u64(4) == 3 {
                result = -result;
            }
            a = a.rem_euclid(&n);
        }
        if n == Int::one() {
            result
        } else {
            0
        }
    }

    pub(crate) fn to_u64(&self) -> Option<u64> {
        if self.is_negative() {
            return None;
        }
        Option::<u64>::from(&self.0)
    }

    pub(crate) fn to_i128(&self) -> Option<i128> {
        let bytes = self.to_bytes_be();
        if bytes.len() > 16 {
            return None;
        }
        let mut buf = [0u8; 16];
        buf[16 - bytes.len()..].copy_from_slice(&bytes);
        let mag = u128::from_be_bytes(buf);
        if self.is_negative() {
            // -(2^127) is representable; anything larger in magnitude is not.
            if mag > (i128::MAX as u128) + 1 {
                return None;
            }
            Some((mag as i128).wrapping_neg())
        } else {
            i128::try_from(mag).ok()
        }
    }

    /// A uniformly random integer in `[0, 2^bits)`.
    pub(crate) fn random_bits<R: RngCore + CryptoRng + ?Sized>(rng: &mut R, bits: usize) -> Int {
        let nbytes = bits.div_ceil(8);
        let mut buf = vec![0u8; nbytes];
        rng.fill_bytes(&mut buf);
        let excess = nbytes * 8 - bits;
        if excess > 0 {
            if let Some(first) = buf.first_mut() {
                *first &= 0xffu8 >> excess;
            }
        }
        let v = Int::from_bytes_be(&buf);
        buf.zeroize();
        v
    }

    /// A uniformly random integer in `[0, bound)` by rejection sampling (`bound > 0`).
    pub(crate) fn random_below<R: RngCore + CryptoRng + ?Sized>(rng: &mut R, bound: &Int) -> Int {
        let bits = bound.bits();
        loop {
            let v = Int::random_bits(rng, bits);
            if v < *bound {
                return v;
            }
        }
    }

    /// A uniformly random unit of `Z_m^*` (rejection: the probability of hitting a non-unit of an
    /// RSA modulus is negligible, but we check anyway).
    pub(crate) fn random_unit<R: RngCore + CryptoRng + ?Sized>(rng: &mut R, m: &Int) -> Int {
        loop {
            let v = Int::random_below(rng, m);
            if !v.is_zero() && v.gcd(m) == Int::one() {
                return v;
            }
        }
    }

    pub(crate) fn to_hex(&self) -> String {
        let s = self.0.abs().to_str_radix(16);
        if self.is_negative() {
            format!("-{s}")
        } else {
            s
        }
    }

    #[cfg(test)]
    pub(crate) fn from_hex(s: &str) -> Option<Int> {
        let (neg, digits) = match s.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, s),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = Mpz::from_str_radix(digits, 16).ok()?;
        Some(if neg { Int(-v) } else { Int(v) })
    }

    /// Conversion into curv's `BigInt` (kzen-paillier interop only).
    pub(crate) fn to_curv(&self) -> curv::BigInt {
        use curv::arithmetic::Converter;
        curv::BigInt::from_bytes(&self.to_bytes_be())
    }

    pub(crate) fn from_curv(v: &curv::BigInt) -> Int {
        use curv::arithmetic::Converter;
        let mag = Int::from_bytes_be(&v.to_bytes());
        if v < &curv::BigInt::from(0) {
            mag.neg()
        } else {
            mag
        }
    }
}

impl fmt::Debug for Int {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", self.to_hex())
    }
}

impl PartialEq<u64> for Int {
    fn eq(&self, o: &u64) -> bool {
        self.0 == Mpz::from(*o)
    }
}

impl PartialOrd<u64> for Int {
    fn partial_cmp(&self, o: &u64) -> Option<Ordering> {
        self.0.partial_cmp(&Mpz::from(*o))
    }
}

/// An integer holding secret data: key shares, nonces, polynomial coefficients.
///
/// It prints as `SecretInt(<redacted>)`, has no serde implementation, and wipes its limbs on drop.
/// The wipe overwrites the limbs in place (`mpz_set` of an equally long value that is zero but
/// for its top bit, then `mpz_clrbit` of that bit; GMP reallocates only to grow), so the buffer
/// GMP frees is zero. What this cannot reach: scratch space GMP allocates
/// inside a single operation (`mpz_powm_sec`'s temporaries). See docs/threshold.md.
pub(crate) struct SecretInt(pub(crate) Int);

impl SecretInt {
    pub(crate) fn new(v: Int) -> Self {
        SecretInt(v)
    }

    pub(crate) fn expose(&self) -> &Int {
        &self.0
    }
}

impl Clone for SecretInt {
    fn clone(&self) -> Self {
        SecretInt(self.0.clone())
    }
}

/// Overwrites the limbs in place (see [`SecretInt`]): for the few places that must hold a secret
/// in a plain `Int` for a moment (e.g. a `Zeroizing<Vec<Int>>` of nonces passed to a function
/// that takes `&[Int]`).
impl Zeroize for Int {
    fn zeroize(&mut self) {
        let bits = self.bits();
        if bits > 0 {
            // Overwrite every limb the value occupies in place: `mpz_set` from a value with the
            // same number of limbs (all zero but the top bit) copies into the existing array
            // (GMP reallocates only to grow), then one `mpz_clrbit` clears that top bit. Two
            // calls instead of one per bit: this runs for every share of every candidate.
            let top = bits.div_ceil(64) * 64 - 1;
            self.0.set(&(Mpz::one() << top));
            self.0.clrbit(top);
        }
        // The sign lives in the size field only; the limbs are now zero.
        self.0 = Mpz::zero();
    }
}

impl Zeroize for SecretInt {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for SecretInt {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl zeroize::ZeroizeOnDrop for SecretInt {}

impl fmt::Debug for SecretInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretInt(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn bytes_round_trip_and_zero_is_empty() {
        assert!(Int::zero().to_bytes_be().is_empty());
        let v = Int::from_u64(0x0102_0304);
        assert_eq!(v.to_bytes_be(), vec![1, 2, 3, 4]);
        assert_eq!(Int::from_bytes_be(&[0, 0, 1, 2, 3, 4]), v);
        assert_eq!(v.to_bytes_be_padded(6), Some(vec![0, 0, 1, 2, 3, 4]));
        assert_eq!(v.to_bytes_be_padded(3), None);
    }

    #[test]
    fn i128_conversions_cover_extremes() {
        for v in [0i128, 1, -1, i128::MAX, i128::MIN, 1 << 100, -(1 << 100)] {
            assert_eq!(Int::from_i128(v).to_i128(), Some(v), "{v}");
        }
        assert_eq!(Int::from_i128(i128::MAX).add(&Int::one()).to_i128(), None);
    }

    #[test]
    fn secret_pow_matches_public_pow() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let m = Int::random_bits(&mut rng, 512)
            .add(&Int::one())
            .shl(1)
            .add(&Int::one());
        let b = Int::random_below(&mut rng, &m);
        for bits in [0usize, 1, 64, 700] {
            let e = Int::random_bits(&mut rng, bits);
            let s = SecretInt::new(e.clone());
            assert_eq!(b.pow_mod_secret(&s, &m), b.pow_mod(&e, &m));
        }
    }

    #[test]
    fn secret_int_wipes_and_redacts() {
        let mut s =
            SecretInt::new(Int::from_hex("deadbeefcafebabe0123456789").unwrap_or_else(Int::one));
        assert_eq!(format!("{s:?}"), "SecretInt(<redacted>)");
        s.zeroize();
        assert!(s.0.is_zero());
    }

    #[test]
    fn hex_rejects_garbage() {
        assert!(Int::from_hex("").is_none());
        assert!(Int::from_hex("-").is_none());
        assert!(Int::from_hex("12g4").is_none());
        assert_eq!(Int::from_hex("-ff"), Some(Int::from_i64(-255)));
    }
}
