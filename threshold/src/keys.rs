//! Keys: the Paillier public key, the threshold public key with its verification keys, and the
//! secret key share each committee member holds.
//!
//! Paillier with `g = N + 1` (Paillier 1999; Damgård–Jurik 2001, s = 1). The public key also
//! fixes the Damgård–Jurik–Nielsen encryption base `h_s = h^N mod N²` with `h = −x² mod N`
//! (DJN 2010, §4), where `x` is *derived from N by hashing*, so no party — not the dealer, not a
//! ceremony participant — chooses `h`. The threshold key follows Damgård–Jurik 2001 §4
//! (Shoup 2000 adapted to Paillier): `Δ = n!`, shares `s_i` of a secret `d` with `d ≡ 1 mod N`
//! and `d ≡ 0 mod λ`-ish (see [`crate::dealer`]), verification keys `v_i = v^(Δ·s_i) mod N²`.
//! Dealer-free key generation (issue 3) produces the same types, with a public constant `θ`
//! such that decryption of `c` yields `L(c^(4Δ²d)) = 4Δ²·θ·m mod N` (θ = 1 for the dealer).

use std::fmt;
use std::sync::{Arc, OnceLock};

use zeroize::{Zeroize, Zeroizing};

use crate::bigint::{Int, SecretInt};
use crate::encoding::{serde_via_bytes, Reader, Tag, Writer};
use crate::error::{Error, Result};
use crate::fixed_base::FixedBase;
use crate::hash::{fingerprint, hash_to_int};

/// Smallest modulus accepted, in bits (512 is for tests only; production uses 2048 or 3072).
pub const MIN_MODULUS_BITS: u32 = 512;
/// Largest modulus accepted, in bits.
pub const MAX_MODULUS_BITS: u32 = 4096;
/// Largest committee supported (Δ = n! enters every exponent).
pub const MAX_PARTIES: u16 = 64;

/// Window of the `h_s` table: 2^6 entries a row.
const HS_WINDOW: usize = 6;
/// Window of the `v` table: 2^5 entries a row.
const V_WINDOW: usize = 5;

/// Statistical hiding parameter, in bits, for the integer nonces of the sigma protocols.
pub(crate) const STAT_BITS: usize = 80;
/// Fiat–Shamir challenge length in bits.
pub(crate) const CHALLENGE_BITS: usize = 128;

/// A committee member's 1-based index (the evaluation point of its share).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct PartyIndex(pub u16);

impl fmt::Display for PartyIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A Paillier public key (`g = N + 1`) with its DJN encryption base.
///
/// Cheap to clone (shared). The fixed-base table for fast encryption is built on first use.
#[derive(Clone)]
pub struct PublicKey {
    inner: Arc<PkInner>,
}

struct PkInner {
    n: Int,
    nn: Int,
    bits: u32,
    half_n: Int,
    hs: Int,
    hs_table: OnceLock<FixedBase>,
    fingerprint: [u8; 32],
}

impl PublicKey {
    /// Builds a public key from its modulus `N`, checking what can be checked publicly: size,
    /// oddness, no prime factor below 2^16.
    pub fn from_modulus_bytes(n_be: &[u8]) -> Result<Self> {
        Self::from_modulus(Int::from_bytes_be(n_be))
    }

    pub(crate) fn from_modulus(n: Int) -> Result<Self> {
        let bits = n.bits() as u32;
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) {
            return Err(Error::InvalidParameters(format!(
                "modulus has {bits} bits; supported: {MIN_MODULUS_BITS}..={MAX_MODULUS_BITS}"
            )));
        }
        if let Some(p) = small_factor(&n) {
            return Err(Error::InvalidParameters(format!(
                "modulus is divisible by {p}"
            )));
        }
        let nn = n.mul(&n);
        let mut w = Writer::new(Tag::PublicKey);
        w.int(&n);
        let fp = fingerprint(b"medtech-threshold/v1/public-key", &w.finish());
        // DJN: h = -x^2 mod N for a hashed x; h_s = h^N mod N^2 generates (a large subgroup of)
        // the N-th residues. The counter makes x a unit (failure means N is factored).
        let mut ctr = 0u64;
        let x = loop {
            let mut data = n.to_bytes_be();
            data.extend_from_slice(&ctr.to_be_bytes());
            let x = hash_to_int(b"medtech-threshold/v1/djn-h", &data, bits as usize + 128)
                .rem_euclid(&n);
            if !x.is_zero() && x.gcd(&n) == 1u64 {
                break x;
            }
            ctr += 1;
        };
        let h = n.sub(&x.mul_mod(&x, &n));
        let hs = h.pow_mod(&n, &nn);
        let half_n = n.shr(1);
        Ok(PublicKey {
            inner: Arc::new(PkInner {
                n,
                nn,
                bits,
                half_n,
                hs,
                hs_table: OnceLock::new(),
                fingerprint: fp,
            }),
        })
    }

    pub(crate) fn n(&self) -> &Int {
        &self.inner.n
    }

    pub(crate) fn nn(&self) -> &Int {
        &self.inner.nn
    }

    pub(crate) fn half_n(&self) -> &Int {
        &self.inner.half_n
    }

    /// Size of the modulus in bits.
    pub fn bits(&self) -> u32 {
        self.inner.bits
    }

    /// Bit length of the DJN encryption exponent: ⌈|N|/2⌉ (DJN 2010, §4).
    pub fn nonce_bits(&self) -> usize {
        (self.inner.bits as usize).div_ceil(2)
    }

    /// The modulus `N`, big-endian.
    pub fn modulus_bytes(&self) -> Vec<u8> {
        self.inner.n.to_bytes_be()
    }

    /// SHA-256 fingerprint of the encoded key; bound into every proof made under it.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.inner.fingerprint
    }

    /// Builds the `h_s` table now rather than on the first encryption (≈ 5 MiB at 2048 bits).
    pub fn precompute(&self) {
        let _ = self.hs_table();
    }

    pub(crate) fn hs_table(&self) -> &FixedBase {
        self.inner.hs_table.get_or_init(|| {
            // Nonces of the range proofs' sigma protocol are longer than encryption nonces.
            let max = self.nonce_bits() + CHALLENGE_BITS + STAT_BITS + 1;
            FixedBase::new(&self.inner.hs, &self.inner.nn, max, HS_WINDOW)
        })
    }

    /// Canonical bytes (`MTC`, tag 1, version 1, N).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Tag::PublicKey);
        w.int(&self.inner.n);
        w.finish()
    }

    /// Decodes and validates a public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new("public key", Tag::PublicKey, bytes)?;
        let n = r.int(MAX_MODULUS_BITS as usize)?;
        r.finish()?;
        Self::from_modulus(n)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, o: &Self) -> bool {
        self.inner.n == o.inner.n
    }
}
impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey {{ bits: {}, fingerprint: {} }}",
            self.inner.bits,
            hex::encode(&self.inner.fingerprint[..8])
        )
    }
}

serde_via_bytes!(PublicKey, "public key");

/// The committee's public threshold key: the Paillier key, `(n, t)`, the verification base and
/// one verification key per member, and the combination constant θ.
#[derive(Clone)]
pub struct ThresholdPublicKey {
    inner: Arc<TkInner>,
}

struct TkInner {
    pk: PublicKey,
    parties: u16,
    threshold: u16,
    delta: Int,
    v: Int,
    vks: Vec<Int>,
    theta: Int,
    /// `(4Δ²θ)^(-1) mod N`.
    combine_factor: Int,
    share_bits: u32,
    fingerprint: [u8; 32],
    v_table: OnceLock<FixedBase>,
}

/// The verification base `v = H(N)² mod N²`: a hashed square nobody chose, so it generates the
/// squares subgroup `Q_{N²}` with overwhelming probability (dealer keys) and nobody knows a
/// discrete logarithm to it. The one derivation, used by the dealer, the dealer-free generation
/// and [`ThresholdPublicKey::from_parts`] (hence every decoded key), which refuses any other `v`.
pub(crate) fn verification_base(pk: &PublicKey) -> Int {
    let nn = pk.nn();
    let r = hash_to_int(
        b"medtech-threshold/v1/verification-base",
        &pk.modulus_bytes(),
        2 * pk.bits() as usize + 128,
    )
    .rem_euclid(nn);
    r.mul_mod(&r, nn)
}

/// `n!` as an integer.
pub(crate) fn factorial(n: u16) -> Int {
    let mut acc = Int::one();
    for k in 2..=u64::from(n) {
        acc = acc.mul_u64(k);
    }
    acc
}

impl ThresholdPublicKey {
    /// Assembles and validates a threshold key. `v` must be [`verification_base`]`(N)`, every
    /// `v_i` a unit mod N² other than ±1, and θ a unit mod N; `share_bits` bounds the bit length of every share (it sizes proof nonces).
    pub(crate) fn from_parts(
        pk: PublicKey,
        parties: u16,
        threshold: u16,
        v: Int,
        vks: Vec<Int>,
        theta: Int,
        share_bits: u32,
    ) -> Result<Self> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(Error::InvalidParameters(format!(
                "{parties} parties; supported: 1..={MAX_PARTIES}"
            )));
        }
        if threshold == 0 || threshold > parties {
            return Err(Error::InvalidParameters(format!(
                "threshold {threshold} must be in 1..={parties}"
            )));
        }
        if vks.len() != usize::from(parties) {
            return Err(Error::InvalidParameters(format!(
                "{} verification keys for {parties} parties",
                vks.len()
            )));
        }
        let unit_mod = |x: &Int, m: &Int| !x.is_zero() && x < m && x.gcd(m) == 1u64;
        if !unit_mod(&v, pk.nn()) || vks.iter().any(|x| !unit_mod(x, pk.nn())) {
            return Err(Error::InvalidParameters(
                "verification base and keys must be units mod N²".into(),
            ));
        }
        // Break 5 of issue 25: `v` is not the publisher's to choose. With `v = 1` (and every
        // `v_i = 1`) the partial-decryption proof is vacuous, and a base of someone's choosing may
        // have an order they know; so `v` must be the hash-derived base of N, recomputed here.
        if v != verification_base(&pk) {
            return Err(Error::InvalidParameters(
                "verification base is not H(N)² mod N² (it is derived from N, never chosen)".into(),
            ));
        }
        // `v_k = 1` would make member k's proof about the exponent 0, `v_k = −1` about a sign;
        // neither is `v^(Δ s_k)` for a real share.
        let minus_one = pk.nn().sub(&Int::one());
        if let Some(k) = vks.iter().position(|x| *x == 1u64 || *x == minus_one) {
            return Err(Error::InvalidParameters(format!(
                "verification key of party {} is ±1",
                k + 1
            )));
        }
        if !unit_mod(&theta, pk.n()) {
            return Err(Error::InvalidParameters("θ must be a unit mod N".into()));
        }
        if share_bits == 0 || share_bits > 4 * MAX_MODULUS_BITS {
            return Err(Error::InvalidParameters(format!(
                "share bound {share_bits} bits"
            )));
        }
        let delta = factorial(parties);
        let four_delta_sq = delta.mul(&delta).mul_u64(4);
        let combine_factor = four_delta_sq
            .mul_mod(&theta, pk.n())
            .invert(pk.n())
            .ok_or_else(|| Error::InvalidParameters("4Δ²θ is not invertible mod N".into()))?;
        let mut tk = TkInner {
            pk,
            parties,
            threshold,
            delta,
            v,
            vks,
            theta,
            combine_factor,
            share_bits,
            fingerprint: [0; 32],
            v_table: OnceLock::new(),
        };
        let bytes = encode_tk(&tk);
        tk.fingerprint = fingerprint(b"medtech-threshold/v1/threshold-key", &bytes);
        Ok(ThresholdPublicKey {
            inner: Arc::new(tk),
        })
    }

    /// The Paillier public key everyone encrypts under.
    pub fn public_key(&self) -> &PublicKey {
        &self.inner.pk
    }

    /// Number of members n.
    pub fn parties(&self) -> u16 {
        self.inner.parties
    }

    /// Threshold t: any t members decrypt, t − 1 learn nothing.
    pub fn threshold(&self) -> u16 {
        self.inner.threshold
    }

    /// SHA-256 fingerprint of the encoded threshold key (binds N, n, t, v, every v_i, θ).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.inner.fingerprint
    }

    pub(crate) fn delta(&self) -> &Int {
        &self.inner.delta
    }

    #[cfg(test)]
    pub(crate) fn v_for_tests(&self) -> &Int {
        &self.inner.v
    }

    /// The verification base `v`.
    pub(crate) fn v(&self) -> &Int {
        &self.inner.v
    }

    /// The combination constant θ.
    pub(crate) fn theta(&self) -> &Int {
        &self.inner.theta
    }

    pub(crate) fn combine_factor(&self) -> &Int {
        &self.inner.combine_factor
    }

    /// Verification key of a member, or an error naming the unknown index.
    pub(crate) fn vk(&self, party: PartyIndex) -> Result<&Int> {
        let i = usize::from(party.0);
        if i == 0 || i > self.inner.vks.len() {
            return Err(Error::UnknownParty {
                party,
                parties: self.inner.parties,
            });
        }
        Ok(&self.inner.vks[i - 1])
    }

    /// Bit length of the nonce `r` in a partial-decryption proof: it must statistically hide
    /// `e·Δ·s_i` (challenge × scaled share) with `STAT_BITS` to spare.
    pub(crate) fn proof_nonce_bits(&self) -> usize {
        self.inner.share_bits as usize + self.inner.delta.bits() + CHALLENGE_BITS + STAT_BITS
    }

    pub(crate) fn share_bits(&self) -> u32 {
        self.inner.share_bits
    }

    pub(crate) fn v_table(&self) -> &FixedBase {
        self.inner.v_table.get_or_init(|| {
            FixedBase::new(
                &self.inner.v,
                self.inner.pk.nn(),
                self.proof_nonce_bits() + 2,
                V_WINDOW,
            )
        })
    }

    /// Builds the verification-base table now rather than on first use (≈ 14 MiB at 2048 bits).
    pub fn precompute(&self) {
        self.inner.pk.precompute();
        let _ = self.v_table();
    }

    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_tk(&self.inner)
    }

    /// Decodes and validates a threshold key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new("threshold key", Tag::ThresholdKey, bytes)?;
        let n = r.int(MAX_MODULUS_BITS as usize)?;
        let parties = r.u16()?;
        let threshold = r.u16()?;
        let share_bits = r.u32()?;
        let theta = r.int(MAX_MODULUS_BITS as usize)?;
        let v = r.int(2 * MAX_MODULUS_BITS as usize)?;
        let count = r.u16()?;
        if count != parties || parties > MAX_PARTIES {
            return Err(Error::malformed("threshold key", "verification key count"));
        }
        let mut vks = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            vks.push(r.int(2 * MAX_MODULUS_BITS as usize)?);
        }
        r.finish()?;
        let pk = PublicKey::from_modulus(n)?;
        Self::from_parts(pk, parties, threshold, v, vks, theta, share_bits)
    }
}

fn encode_tk(tk: &TkInner) -> Vec<u8> {
    let mut w = Writer::new(Tag::ThresholdKey);
    w.int(tk.pk.n())
        .u16(tk.parties)
        .u16(tk.threshold)
        .u32(tk.share_bits)
        .int(&tk.theta)
        .int(&tk.v)
        .u16(tk.vks.len() as u16);
    for vk in &tk.vks {
        w.int(vk);
    }
    w.finish()
}

impl PartialEq for ThresholdPublicKey {
    fn eq(&self, o: &Self) -> bool {
        self.inner.fingerprint == o.inner.fingerprint
    }
}
impl Eq for ThresholdPublicKey {}

impl fmt::Debug for ThresholdPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ThresholdPublicKey {{ bits: {}, t: {}, n: {}, fingerprint: {} }}",
            self.inner.pk.bits(),
            self.inner.threshold,
            self.inner.parties,
            hex::encode(&self.inner.fingerprint[..8])
        )
    }
}

serde_via_bytes!(ThresholdPublicKey, "threshold key");

/// One member's secret share `s_i` of the decryption exponent.
///
/// Zeroized on drop, redacted in `Debug`, and deliberately without serde: the only way out is
/// [`KeyShare::to_secret_bytes`], whose name says what it is, for the ceremony's encrypted
/// key-share file.
pub struct KeyShare {
    index: PartyIndex,
    share: SecretInt,
    key_fingerprint: [u8; 32],
}

impl KeyShare {
    pub(crate) fn new(index: PartyIndex, share: SecretInt, key_fingerprint: [u8; 32]) -> Self {
        KeyShare {
            index,
            share,
            key_fingerprint,
        }
    }

    /// The member's index.
    pub fn index(&self) -> PartyIndex {
        self.index
    }

    /// Fingerprint of the threshold key this share belongs to.
    pub fn key_fingerprint(&self) -> [u8; 32] {
        self.key_fingerprint
    }

    pub(crate) fn secret(&self) -> &SecretInt {
        &self.share
    }

    /// The share as bytes, for encryption at rest. Handle as a secret: the buffer is wiped when
    /// dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new(Tag::KeyShare);
        w.u16(self.index.0);
        w.bytes(&self.key_fingerprint);
        let mut s = self.share.expose().to_bytes_be();
        w.bytes(&s);
        s.zeroize();
        Zeroizing::new(w.finish())
    }

    /// Reads a share written by [`KeyShare::to_secret_bytes`] and checks it belongs to `key`.
    pub fn from_secret_bytes(bytes: &[u8], key: &ThresholdPublicKey) -> Result<Self> {
        let mut r = Reader::new("key share", Tag::KeyShare, bytes)?;
        let index = PartyIndex(r.u16()?);
        key.vk(index)?;
        let fp = r.bytes(32)?;
        if fp != key.fingerprint() {
            return Err(Error::Mismatch(
                "key share belongs to a different threshold key",
            ));
        }
        let s = r.bytes((key.share_bits() as usize).div_ceil(8))?;
        if s.first() == Some(&0) {
            return Err(Error::malformed(
                "key share",
                "integer has a leading zero byte",
            ));
        }
        let share = SecretInt::new(Int::from_bytes_be(s));
        r.finish()?;
        Ok(KeyShare {
            index,
            share,
            key_fingerprint: key.fingerprint(),
        })
    }
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyShare {{ index: {}, share: <redacted> }}", self.index)
    }
}

impl zeroize::ZeroizeOnDrop for KeyShare {}

/// First prime below 2^16 dividing `n`, if any.
fn small_factor(n: &Int) -> Option<u64> {
    SMALL_PRIMES.with(|ps| {
        ps.iter()
            .copied()
            .find(|&p| n.rem_euclid(&Int::from_u64(p)).is_zero())
    })
}

thread_local! {
    static SMALL_PRIMES: Vec<u64> = primes_below(1 << 16);
}

/// Primes below `limit` (sieve of Eratosthenes).
pub(crate) fn primes_below(limit: usize) -> Vec<u64> {
    let mut composite = vec![false; limit];
    let mut out = Vec::new();
    for i in 2..limit {
        if !composite[i] {
            out.push(i as u64);
            let mut j = i * i;
            while j < limit {
                composite[j] = true;
                j += i;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dealer::insecure_generate_from_seed;

    /// The bytes an attacker who publishes a key of their own making would write: the honest
    /// key's N, n, t, θ and share bound with a verification base and keys of their choosing.
    fn encode_with(key: &ThresholdPublicKey, v: &Int, vks: &[Int]) -> Vec<u8> {
        let mut w = Writer::new(Tag::ThresholdKey);
        w.int(key.public_key().n())
            .u16(key.parties())
            .u16(key.threshold())
            .u32(key.share_bits())
            .int(key.theta())
            .int(v)
            .u16(vks.len() as u16);
        for vk in vks {
            w.int(vk);
        }
        w.finish()
    }

    /// Break 5 of issue 25. With `v = 1` and every `v_i = 1` the partial-decryption proof says
    /// nothing (`b = v^z·v_i^(−e) = 1` whatever the prover did), so a member could post any
    /// `c_i` with a "valid" proof; a chosen `v` (here `v²`, a square whose order the publisher
    /// may know) is no better; and `v_k = ±1` makes member k's proof about the exponent 0 or a
    /// sign. Decoding must refuse all of them: `v` is recomputed from N, never read.
    #[test]
    fn key_with_foreign_verification_base_is_refused() {
        let (key, _) = insecure_generate_from_seed(512, 5, 3, 21).unwrap();
        let nn = key.public_key().nn().clone();
        let v = key.v().clone();
        let vks: Vec<Int> = (1..=5)
            .map(|i| key.vk(PartyIndex(i)).unwrap().clone())
            .collect();
        // The honest encoding decodes (the check does not refuse what the dealer makes).
        assert_eq!(
            ThresholdPublicKey::from_bytes(&encode_with(&key, &v, &vks)).unwrap(),
            key
        );
        let ones = vec![Int::one(); 5];
        let minus_one = nn.sub(&Int::one());
        let mut vk1_is_one = vks.clone();
        vk1_is_one[0] = Int::one();
        let mut vk3_is_minus_one = vks.clone();
        vk3_is_minus_one[2] = minus_one.clone();
        let attacks: [(&str, Int, Vec<Int>); 5] = [
            ("v = 1, all v_i = 1", Int::one(), ones),
            ("v = 1, honest v_i", Int::one(), vks.clone()),
            (
                "v = (H(N)²)², a base the publisher chose",
                v.mul_mod(&v, &nn),
                vks.clone(),
            ),
            ("v_1 = 1", v.clone(), vk1_is_one),
            ("v_3 = −1", v.clone(), vk3_is_minus_one),
        ];
        for (what, bad_v, bad_vks) in attacks {
            let bytes = encode_with(&key, &bad_v, &bad_vks);
            assert!(
                ThresholdPublicKey::from_bytes(&bytes).is_err(),
                "accepted a key with {what}"
            );
        }
    }
}
