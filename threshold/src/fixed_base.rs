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
            let d = digit_of_bytes(&ebytes, row, self.window) as u32;
            for w in selected.iter_mut() {
                *w = 0;
            }
            for idx in 0..per_row {
                let choice = (idx as u32).ct_eq(&d);
                for (dst, src) in selected.iter_mut().zip(self.entry(row, idx)) {
                    dst.conditional_assign(src, choice);
                }
            }
            acc = acc.mul_mod(&words_to_int(&selected), &self.modulus);
        }
        ebytes.zeroize();
        selected.zeroize();
        Some(acc.mul_mod(&self.correction[rows], &self.modulus))
    }
}

fn push_words(table: &mut Vec<u64>, v: &Int, words: usize) {
    // Entries are residues mod `modulus`, so they fit in `words` words.
    let bytes = v.to_bytes_be_padded(words * 8).unwrap_or_else(|| vec![0; words * 8]);
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
                assert_eq!(fb.pow_secret(&s, 130), Some(want.clone()), "secret w={window}");
                assert_eq!(fb.pow_secret(&s, bits.max(1)), Some(want), "short bound");
            }
            // Longer than the table: public path falls back, secret path refuses.
            let e = Int::random_bits(&mut rng, 400);
            assert_eq!(fb.pow_public(&e), g.pow_mod(&e, &m));
            assert!(fb.pow_secret(&SecretInt::new(e), 400).is_none());
        }
    }
}
