//! Plaintexts, ciphertexts, encryption and the homomorphic operations.
//!
//! A ciphertext under `N` is an element of `Z*_{N²}`; every operation returns it reduced mod N²
//! (the original MedTech Chain multiplied ciphertexts without reducing). Plaintexts are signed:
//! `m` is encoded as `m mod N` and decoded to the centred representative in `(−N/2, N/2]`.
//!
//! **Encryption (fast path, DJN 2010 §4):** `c = (1 + N)^m · h_s^r mod N²` with `r` uniform in
//! `[0, 2^⌈|N|/2⌉)` and `h_s = h^N` for the hashed `h` of [`PublicKey`]. `(1+N)^m = 1 + mN` costs a
//! multiplication, and `h_s^r` comes from a fixed-base table, ≈ ⌈|N|/12⌉ modular multiplications.
//! Security: IND-CPA under DCR plus the assumption that `h_s^r` for a short `r` is
//! indistinguishable from a uniform N-th residue — the assumption DJN state for this variant
//! (it follows from DCR when `r` is drawn from `[0, N)`, and a ⌈|N|/2⌉-bit exponent is at least
//! twice the security level, which defeats the generic short-exponent attacks). See
//! docs/threshold.md.
//!
//! **Encryption (textbook, reference):** `c = (1 + N)^m · r^N mod N²` with `r ∈ Z*_N`, through
//! kzen-paillier, the format of the original's `encrypt` tool.

use std::fmt;

use kzen_paillier::{
    EncryptWithChosenRandomness, EncryptionKey, Paillier, Randomness, RawPlaintext,
};
use rand_core::{CryptoRng, RngCore};

use crate::bigint::{Int, SecretInt};
use crate::encoding::{Reader, Tag, Writer};
use crate::error::{Error, Result};
use crate::hash::fingerprint;
use crate::keys::PublicKey;

/// A signed plaintext.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Plaintext(pub(crate) Int);

impl Plaintext {
    /// From a signed 64-bit integer.
    pub fn from_i64(v: i64) -> Self {
        Plaintext(Int::from_i64(v))
    }

    /// From an unsigned 64-bit integer.
    pub fn from_u64(v: u64) -> Self {
        Plaintext(Int::from_u64(v))
    }

    /// From a signed 128-bit integer.
    pub fn from_i128(v: i128) -> Self {
        Plaintext(Int::from_i128(v))
    }

    /// The value as `i128`, if it fits.
    pub fn to_i128(&self) -> Option<i128> {
        self.0.to_i128()
    }

    /// The value as `i64`, if it fits.
    pub fn to_i64(&self) -> Option<i64> {
        self.0.to_i128().and_then(|v| i64::try_from(v).ok())
    }

    /// Whether the value is negative.
    pub fn is_negative(&self) -> bool {
        self.0.is_negative()
    }

    /// Encodes as `m mod N`, refusing values outside `(−N/2, N/2]`.
    pub(crate) fn encode(&self, pk: &PublicKey) -> Result<Int> {
        let half = pk.half_n();
        let neg_ok = self.0.is_negative() && self.0.abs() <= *half;
        if self.0 > *half || (self.0.is_negative() && !neg_ok) {
            return Err(Error::PlaintextOutOfRange(format!(
                "|m| must be at most ⌊N/2⌋ (a {}-bit modulus)",
                pk.bits()
            )));
        }
        // A value with |m| = ⌊N/2⌋ and m < 0 aliases to ⌈N/2⌉, which decodes back negative
        // only when N is odd — it always is.
        Ok(self.0.rem_euclid(pk.n()))
    }

    /// The centred representative of `x mod N`.
    pub(crate) fn decode(pk: &PublicKey, x: &Int) -> Plaintext {
        let r = x.rem_euclid(pk.n());
        if r > *pk.half_n() {
            Plaintext(r.sub(pk.n()))
        } else {
            Plaintext(r)
        }
    }
}

impl fmt::Display for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.to_i128() {
            Some(v) => write!(f, "{v}"),
            None => write!(f, "0x{}", self.0.to_hex()),
        }
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext({self})")
    }
}

/// A Paillier ciphertext: an element of `Z*_{N²}`, always reduced.
#[derive(Clone, PartialEq, Eq)]
pub struct Ciphertext(pub(crate) Int);

impl Ciphertext {
    /// Canonical bytes (`MTC`, tag 4, version 1, c).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Tag::Ciphertext);
        w.int(&self.0);
        w.finish()
    }

    /// Decodes a ciphertext received from outside and checks `0 < c < N²` and `gcd(c, N) = 1`.
    pub fn from_bytes(pk: &PublicKey, bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new("ciphertext", Tag::Ciphertext, bytes)?;
        let c = r.int(2 * pk.bits() as usize)?;
        r.finish()?;
        Self::validate(pk, c)
    }

    pub(crate) fn validate(pk: &PublicKey, c: Int) -> Result<Self> {
        if c.is_zero() || c >= *pk.nn() {
            return Err(Error::malformed("ciphertext", "not in (0, N²)"));
        }
        if c.gcd(pk.n()) != 1u64 {
            return Err(Error::malformed("ciphertext", "not a unit mod N²"));
        }
        Ok(Ciphertext(c))
    }

    /// SHA-256 digest of the canonical bytes (binds partial decryptions to this ciphertext).
    pub fn digest(&self) -> [u8; 32] {
        fingerprint(b"medtech-threshold/v1/ciphertext", &self.to_bytes())
    }
}

impl fmt::Debug for Ciphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ciphertext({})", hex::encode(&self.digest()[..8]))
    }
}

/// The secret randomness of a DJN encryption, kept by the encryptor for proofs.
pub(crate) struct EncryptionNonce(pub(crate) SecretInt);

impl PublicKey {
    /// `(1 + N)^m mod N² = 1 + (m mod N)·N`.
    pub(crate) fn g_pow(&self, m_mod_n: &Int) -> Int {
        Int::one().add(&m_mod_n.mul(self.n())).rem_euclid(self.nn())
    }

    /// Encrypts with the fast DJN path.
    pub fn encrypt<R: RngCore + CryptoRng + ?Sized>(
        &self,
        m: &Plaintext,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        Ok(self.encrypt_with_nonce(m, rng)?.0)
    }

    pub(crate) fn encrypt_with_nonce<R: RngCore + CryptoRng + ?Sized>(
        &self,
        m: &Plaintext,
        rng: &mut R,
    ) -> Result<(Ciphertext, EncryptionNonce)> {
        let m = m.encode(self)?;
        let r = SecretInt::new(Int::random_bits(rng, self.nonce_bits()));
        let c = self.encrypt_raw(&m, &r)?;
        Ok((c, EncryptionNonce(r)))
    }

    /// `(1+N)^m · h_s^r mod N²` for `m ∈ [0, N)` and a nonce of at most `nonce_bits()` bits.
    pub(crate) fn encrypt_raw(&self, m: &Int, r: &SecretInt) -> Result<Ciphertext> {
        let hr = self
            .hs_table()
            .pow_secret(r, self.nonce_bits())
            .ok_or_else(|| Error::InvalidParameters("encryption nonce too long".into()))?;
        Ok(Ciphertext(self.g_pow(m).mul_mod(&hr, self.nn())))
    }

    /// DJN encryption with a caller-chosen nonce (big-endian, at most `nonce_bits()` bits).
    /// **Insecure** — a reused or guessable nonce reveals the plaintext; for known-answer tests.
    #[doc(hidden)]
    pub fn insecure_encrypt_with_nonce(
        &self,
        m: &Plaintext,
        nonce_be: &[u8],
    ) -> Result<Ciphertext> {
        let r = SecretInt::new(Int::from_bytes_be(nonce_be));
        self.encrypt_raw(&m.encode(self)?, &r)
    }

    /// Encrypts with the textbook path (`r^N`, r uniform in `Z*_N`) through kzen-paillier.
    /// Kept as the reference and for interoperability with the original's `encrypt` tool;
    /// about 5–7× slower than [`PublicKey::encrypt`].
    pub fn encrypt_textbook<R: RngCore + CryptoRng + ?Sized>(
        &self,
        m: &Plaintext,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        let m = m.encode(self)?;
        let r = Int::random_unit(rng, self.n());
        let ek = self.to_kzen();
        let raw = Paillier::encrypt_with_chosen_randomness(
            &ek,
            RawPlaintext::from(m.to_curv()),
            &Randomness(r.to_curv()),
        );
        Ciphertext::validate(self, Int::from_curv(&raw.0))
    }

    /// The equivalent kzen-paillier encryption key.
    pub fn to_kzen(&self) -> EncryptionKey {
        EncryptionKey::from(&self.n().to_curv())
    }

    /// A public key from a kzen-paillier encryption key (validated like any other).
    pub fn from_kzen(ek: &EncryptionKey) -> Result<Self> {
        Self::from_modulus(Int::from_curv(&ek.n))
    }

    /// `Enc(a + b)`.
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Ciphertext {
        Ciphertext(a.0.mul_mod(&b.0, self.nn()))
    }

    /// `Enc(a − b)`.
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Ciphertext {
        self.add(a, &self.neg(b))
    }

    /// `Enc(a + k)` for a public plaintext `k` (deterministic: no fresh randomness).
    pub fn add_plain(&self, a: &Ciphertext, k: &Plaintext) -> Result<Ciphertext> {
        let k = k.encode(self)?;
        Ok(Ciphertext(a.0.mul_mod(&self.g_pow(&k), self.nn())))
    }

    /// `Enc(k · a)` for a public scalar `k` (negative allowed).
    pub fn mul_plain(&self, a: &Ciphertext, k: &Plaintext) -> Result<Ciphertext> {
        // k is reduced mod N; exponentiating by k mod N is exact on the plaintext and keeps the
        // exponent short.
        let k = k.encode(self)?;
        Ok(Ciphertext(a.0.pow_mod(&k, self.nn())))
    }

    /// `Enc(−a)`.
    pub fn neg(&self, a: &Ciphertext) -> Ciphertext {
        // Ciphertexts are units (checked at construction), so the inverse exists.
        Ciphertext(a.0.invert(self.nn()).unwrap_or_else(Int::one))
    }

    /// A fresh-looking encryption of the same plaintext: `a · h_s^r`.
    pub fn rerandomize<R: RngCore + CryptoRng + ?Sized>(
        &self,
        a: &Ciphertext,
        rng: &mut R,
    ) -> Result<Ciphertext> {
        let zero = self.encrypt(&Plaintext::from_i64(0), rng)?;
        Ok(self.add(a, &zero))
    }

    /// The sum of many ciphertexts (`Enc(0)` with zero randomness for an empty list).
    pub fn sum<'a>(&self, cts: impl IntoIterator<Item = &'a Ciphertext>) -> Ciphertext {
        let mut acc = Int::one();
        for c in cts {
            acc = acc.mul_mod(&c.0, self.nn());
        }
        Ciphertext(acc)
    }
}
