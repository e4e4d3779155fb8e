//! Fixed-base exponentiation with a precomputed table (Brickell–Gordon–McCurley–Wilson style
//! fixed windows), for the two bases this crate raises to fresh secret exponents over and over:
//! `h_s` in encryption (Damgård–Jurik–Nielsen) and the verification base `v` in the
//! partial-decryption proofs.
//!
//! Row `i` of the table holds `g_i^1, …, g_i^(2^w)` where `g_i = g^(2^(w·i))`. Then
//! `g^e = Π_i g_i^(e_i)` for the base-`2^w` digits `e_i` of `e`: one modular multiplication per
//! digit instead of one squaring per bit.
//!
//! Secret exponents: every row is visited, whatever the exponent; the entry of a row is picked
//! by a constant-time scan over all `2^w` entries (`subtle`), and every multiplication has a
//! full-size operand because row `i` stores `g_i^(d+1)` for digit `d` (never the identity); the
//! surplus `g^(Σ 2^(w·i))` is removed by one multiplication with a precomputed inverse. What is
//! *not* constant-time is GMP's schoolbook `mpz_mul`/`mpz_mod` themselves (their running time
//! depends on operand sizes, and division has rare data-dependent correction steps). See
//! docs/threshold.md, "What is constant-time".

use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroize;

use crate::bigint::{Int, SecretInt};

pub(crate) struct FixedBase {
    modulus: Int,
    window: usize,
    rows: usize,
    /// Words per entry (big-endian `u64`s, fixed width).
    words: usize,
    /// `rows · 2^w · words` words; entry `(i, d)` is `g_i^(d+1) mod m`.
    table: Vec<u64>,
    /// `correction[k] = g^(-(Σ_{i<k} 2^(w·i))) mod m`, for `k = 0..=rows`.
    correction: Vec<Int>,
}

impl FixedBase {
    /// Precomputes the table for exponents of up to `max_bits` bits (`rows · 2^w` mulmods).
    pub(crate) fn new(base: &Int, modulus: &Int, max_bits: usize, window: usize) -> Self {
        let rows = max_bits.div_ceil(window).max(1);
        let per_row = 1usize << window;
        let bytes = modulus.to_bytes_be().len();
        let words = bytes.div_ceil(8);
        let mut table = Vec::with_capacity(rows * per_row * words);
        let mut correction = Vec::with_capacity(rows + 1);
        let mut row_base = base.rem_euclid(modulus);
        let mut prefix = Int::one();
        correction.push(Int::one());
        for _ in 0..rows {
            prefix = prefix.mul_mod(&row_base, modulus);
            // `prefix` is a product of units of `modulus` (callers pass units), so it inverts.
            correction.push(prefix.invert(modulus).unwrap_or_else(Int::zero));
            let mut acc = row_base.clone();
            for d in 0..per_row {
                push_words(&mut table, &acc, words);
                if d + 1 < per_row {
                    acc = acc.mul_mod(&row_base, modulus);
                }
            }
            // The last entry of the row is g_i^(2^w) = g_(i+1).
            row_base = acc;
        }
        FixedBase {
            modulus: modulus.clone(),
            window,
            rows,
            words,
            table,
            correction,
        }
    }

    /// Largest exponent size, in bits, this table serves.
    pub(crate) fn max_bits(&self) -> usize {
        self.rows * self.window
    }

    fn entry(&self, row: usize, idx: usize) -> &[u64] {
        // Used by the variable-time path only.
        let start = (row * (1usize << self.window) + idx) * self.words;
        &self.table[start..start + self.words]
    }

    /// `g^e` for a **public** exponent: variable time (skips zero digits, direct indexing).
    /// Falls back to plain exponentiation if `e` is longer than the table.
    pub(crate) fn pow_public(&self, e: &Int) -> Int {
        if e.is_negative() || e.bits() > self.max_bits() {
            let g = words_to_int(self.entry(0, 0));
            return g.pow_mod(&e.abs(), &self.modulus);
        }
        let mut acc = Int::one();
        for row in 0..e.bits().div_ceil(self.window) {
            let d = digit_of_int(e, row, self.window);
            if d != 0 {
                acc = acc.mul_mod(&words_to_int(self.entry(row, d - 1)), &self.modulus);
            }
        }
        acc
    }

    /// `g^e` for a **secret** exponent of at most `public_bits` bits (a public bound such as the
    /// nonce length): the sequence of operations depends on `public_bits` only. Returns `None` if
    /// the table is too short or `e` exceeds the bound.
    pub(crate) fn pow_secret(&self, e: &SecretInt, public_bits: usize) -> Option<Int> {
        if public_bits > self.max_bits() || e.expose().bits() > public_bits {
            return None;
        }
        let rows = public_bits.div_ceil(self.window).max(1);
        let nbytes = (rows * self.window).div_ceil(8);
        let mut ebytes = e.expose().to_bytes_be_padded(nbytes)?;
        let per_row = 1usize << self.window;
        let mut selected = vec![0u64; self.words];
        let mut acc = Int::one();
        for row in 0..rows {
            let d = digit_of_bytes(&ebytes, row, self.window);
            let start = row * per_row * self.words;
            let row_entries = &self.table[start..start + per_row * self.words];
            ct_select(row_entries, self.words, d, &mut selected);
            acc = acc.mul_mod(&words_to_int(&selected), &self.modulus);
        }
        ebytes.zeroize();
        selected.zeroize();
        Some(acc.mul_mod(&self.correction[rows], &self.modulus))
    }
}

/// Copies entry `idx` of `entries` (each `words` long) into `out`, reading every entry.
fn ct_select(entries: &[u64], words: usize, idx: usize, out: &mut [u64]) {
    let idx = idx as u32;
    for w in out.iter_mut() {
        *w = 0;
    }
    for (k, entry) in entries.chunks_exact(words).enumerate() {
        let choice = (k as u32).ct_eq(&idx);
        for (dst, src) in out.iter_mut().zip(entry) {
            dst.conditional_assign(src, choice);
        }
    }
}

/// Writes `value` into entry `idx` of `entries`, touching every entry.
fn ct_store(entries: &mut [u64], words: usize, idx: usize, value: &[u64]) {
    let idx = idx as u32;
    for (k, entry) in entries.chunks_exact_mut(words).enumerate() {
        let choice = (k as u32).ct_eq(&idx);
        for (dst, src) in entry.iter_mut().zip(value) {
            dst.conditional_assign(src, choice);
        }
    }
}

/// `(g^e1 mod m, g^e2 mod m)` for two **secret** exponents of at most `public_bits` bits and one
/// public base, sharing a single chain of squarings (Yao's k-ary method, window 5).
///
/// The powers `P_j = g^(2^(5j))` come from one squaring chain; for each exponent, `P_j` is
/// multiplied into bucket `B[d_j]` of its digit `d_j` (bucket 0 is a dummy, so every step does
/// one multiplication), and `g^e = Π_d B_d^d` at the end. Bucket reads and writes scan all 32
/// buckets in constant time; buckets start at `g` rather than 1 (full-size operands), removed by
/// one multiplication with `g^(−Σd)`. Costs about `public_bits` squarings plus
/// `2·public_bits/5` multiplications, against twice `public_bits` squarings for two separate
/// `mpz_powm_sec` calls.
pub(crate) fn pow_pair_secret(
    g: &Int,
    e1: &SecretInt,
    e2: &SecretInt,
    public_bits: usize,
    m: &Int,
) -> Option<(Int, Int)> {
    const W: usize = 5;
    const BUCKETS: usize = 1 << W;
    if e1.expose().bits() > public_bits || e2.expose().bits() > public_bits {
        return None;
    }
    let g = g.rem_euclid(m);
    let g_inv = g.invert(m)?;
    let words = m.to_bytes_be().len().div_ceil(8);
    let rows = public_bits.div_ceil(W).max(1);
    let nbytes = (rows * W).div_ceil(8);
    let mut digits = [
        e1.expose().to_bytes_be_padded(nbytes)?,
        e2.expose().to_bytes_be_padded(nbytes)?,
    ];
    let mut g_words = Vec::with_capacity(words);
    push_words(&mut g_words, &g, words);
    let mut buckets: [Vec<u64>; 2] = [g_words.repeat(BUCKETS), g_words.repeat(BUCKETS)];
    let mut scratch = vec![0u64; words];
    let mut fresh = Vec::with_capacity(words);
    let mut p = g.clone();
    for row in 0..rows {
        for (bytes, bucket) in digits.iter().zip(buckets.iter_mut()) {
            let d = digit_of_bytes(bytes, row, W);
            ct_select(bucket, words, d, &mut scratch);
            let prod = words_to_int(&scratch).mul_mod(&p, m);
            fresh.clear();
            push_words(&mut fresh, &prod, words);
            ct_store(bucket, words, d, &fresh);
        }
        if row + 1 < rows {
            for _ in 0..W {
                p = p.mul_mod(&p, m);
            }
        }
    }
    // Σ_{d=1}^{31} d = 496 copies of the initial g to remove.
    let correction = g_inv.pow_mod(&Int::from_u64((BUCKETS * (BUCKETS - 1) / 2) as u64), m);
    let mut out = [Int::one(), Int::one()];
    for (bucket, result) in buckets.iter().zip(out.iter_mut()) {
        let mut run = Int::one();
        let mut acc = Int::one();
        for d in (1..BUCKETS).rev() {
            run = run.mul_mod(&words_to_int(&bucket[d * words..(d + 1) * words]), m);
            acc = acc.mul_mod(&run, m);
        }
        *result = acc.mul_mod(&correction, m);
    }
    for d in digits.iter_mut() {
        d.zeroize();
    }
    for b in buckets.iter_mut() {
        b.zeroize();
    }
    scratch.zeroize();
    fresh.zeroize();
    let [a, b] = out;
    Some((a, b))
}

fn push_words(table: &mut Vec<u64>, v: &Int, words: usize) {
    // Entries are residues mod `modulus`, so they fit in `words` words.
    let bytes = v
        .to_bytes_be_padded(words * 8)
        .unwrap_or_else(|| vec![0; words * 8]);
    for chunk in bytes.chunks_exact(8) {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        table.push(u64::from_be_bytes(w));
    }
}

fn words_to_int(words: &[u64]) -> Int {
    let mut bytes = Vec::with_capacity(words.len() * 8);
    for w in words {
        bytes.extend_from_slice(&w.to_be_bytes());
    }
    let v = Int::from_bytes_be(&bytes);
    bytes.zeroize();
    v
}

/// Digit `row` (little-endian, `window` bits) of a big-endian byte string.
fn digit_of_bytes(bytes: &[u8], row: usize, window: usize) -> usize {
    let mut d = 0usize;
    for k in 0..window {
        let bit = row * window + k;
        let byte_from_end = bit / 8;
        if byte_from_end < bytes.len() {
            let b = bytes[bytes.len() - 1 - byte_from_end];
            d |= (((b >> (bit % 8)) & 1) as usize) << k;
        }
    }
    d
}

fn digit_of_int(e: &Int, row: usize, window: usize) -> usize {
    let mut d = 0usize;
    for k in 0..window {
        if e.bit(row * window + k) {
            d |= 1 << k;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn public_and_secret_paths_agree_with_powm() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let m = Int::random_bits(&mut rng, 300).shl(1).add(&Int::one());
        let g = Int::random_unit(&mut rng, &m);
        for window in [1usize, 4, 5] {
            let fb = FixedBase::new(&g, &m, 130, window);
            for bits in [0usize, 1, 7, 64, 128, 130] {
                let e = Int::random_bits(&mut rng, bits);
                let want = g.pow_mod(&e, &m);
                assert_eq!(fb.pow_public(&e), want, "public w={window} bits={bits}");
                let s = SecretInt::new(e.clone());
                assert_eq!(
                    fb.pow_secret(&s, 130),
                    Some(want.clone()),
                    "secret w={window}"
                );
                assert_eq!(fb.pow_secret(&s, bits.max(1)), Some(want), "short bound");
            }
            // Longer than the table: public path falls back, secret path refuses.
            let e = Int::random_bits(&mut rng, 400);
            assert_eq!(fb.pow_public(&e), g.pow_mod(&e, &m));
            assert!(fb.pow_secret(&SecretInt::new(e), 400).is_none());
        }
    }

    #[test]
    fn paired_secret_powers_match_powm() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let m = Int::random_bits(&mut rng, 600).shl(1).add(&Int::one());
        let g = Int::random_unit(&mut rng, &m);
        for (b1, b2, bound) in [
            (0usize, 0usize, 1usize),
            (1, 5, 5),
            (300, 299, 300),
            (700, 64, 703),
        ] {
            let e1 = Int::random_bits(&mut rng, b1);
            let e2 = Int::random_bits(&mut rng, b2);
            let (x, y) = pow_pair_secret(
                &g,
                &SecretInt::new(e1.clone()),
                &SecretInt::new(e2.clone()),
                bound,
                &m,
            )
            .unwrap();
            assert_eq!(x, g.pow_mod(&e1, &m), "first, bits {b1}");
            assert_eq!(y, g.pow_mod(&e2, &m), "second, bits {b2}");
        }
        let big = SecretInt::new(Int::random_bits(&mut rng, 100).add(&Int::one().shl(99)));
        assert!(pow_pair_secret(&g, &big, &big, 99, &m).is_none());
    }
}
