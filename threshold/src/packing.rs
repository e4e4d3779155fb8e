//! Slot packing: one ciphertext carries many small signed counters.
//!
//! A [`SlotLayout`] of `k` slots of `w` bits encodes values `v_0 … v_{k−1}` with
//! `|v_j| < 2^(w−1)` as the single plaintext `X = Σ v_j · 2^(w·j)`. Decoding takes balanced
//! base-`2^w` digits of the centred plaintext, which recovers every `v_j` exactly, negative ones
//! included, as long as no slot ever left `(−2^(w−1), 2^(w−1))`. `k·w ≤ |N| − 2` keeps `X` inside
//! `(−N/2, N/2)`.
//!
//! A [`PackedCiphertext`] carries a public bound on `max_j |v_j|`; addition adds bounds, and an
//! operation whose bound could leave the slot is refused with [`Error::SlotOverflow`] before it
//! is computed, so an overflow is never silent. A grouped count over the 55 medical specialities
//! with 40-bit slots takes 2 ciphertexts at 2048 bits (up to 51 slots each; [`SlotLayout::cover`] spreads them 28 + 27), not 55.

use rand_core::{CryptoRng, RngCore};

use crate::bigint::Int;
use crate::ciphertext::{Ciphertext, Plaintext};
use crate::error::{Error, Result};
use crate::keys::PublicKey;

/// Widest supported slot: every slot value (and its bound, a `u128`) then fits an `i128`.
pub const MAX_SLOT_BITS: u32 = 120;

/// How counters are laid out in one plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SlotLayout {
    slot_bits: u32,
    slots: u32,
}

impl SlotLayout {
    /// A layout of `slots` slots of `slot_bits` bits (2..=[`MAX_SLOT_BITS`]) under `pk`.
    /// Slots wider than 64 bits decode only through [`Self::decode_wide`].
    pub fn new(pk: &PublicKey, slot_bits: u32, slots: u32) -> Result<Self> {
        if !(2..=MAX_SLOT_BITS).contains(&slot_bits) {
            return Err(Error::InvalidParameters(format!(
                "slot width {slot_bits} bits; supported 2..={MAX_SLOT_BITS}"
            )));
        }
        let max = Self::max_slots(pk, slot_bits);
        if slots == 0 || slots > max {
            return Err(Error::InvalidParameters(format!(
                "{slots} slots of {slot_bits} bits; a {}-bit key holds 1..={max}",
                pk.bits()
            )));
        }
        Ok(SlotLayout { slot_bits, slots })
    }

    /// How many `slot_bits`-bit slots fit in one plaintext under `pk`.
    pub fn max_slots(pk: &PublicKey, slot_bits: u32) -> u32 {
        (pk.bits() - 2) / slot_bits.max(1)
    }

    /// Layouts covering `count` counters of `slot_bits` bits in as few ciphertexts as possible,
    /// with the counters spread evenly over them (slot counts differ by at most one).
    ///
    /// Even spreading matters for the range proofs: an aggregated Bulletproof over `k` slots
    /// costs as much as one over `k` rounded up to a power of two, so 56 counters in 42 + 14
    /// slots prove like 64 + 16, but in 28 + 28 like 32 + 32.
    pub fn cover(pk: &PublicKey, slot_bits: u32, count: u32) -> Result<Vec<SlotLayout>> {
        let per = Self::max_slots(pk, slot_bits);
        if per == 0 {
            return Err(Error::InvalidParameters(
                "slot wider than the plaintext".into(),
            ));
        }
        let ciphertexts = count.div_ceil(per);
        (0..ciphertexts)
            .map(|i| {
                // The first `count % ciphertexts` layouts take one counter more; every size is
                // at most `ceil(count / ciphertexts) ≤ per`.
                let k = count / ciphertexts + u32::from(i < count % ciphertexts);
                SlotLayout::new(pk, slot_bits, k)
            })
            .collect()
    }

    /// Width of a slot in bits.
    pub fn slot_bits(&self) -> u32 {
        self.slot_bits
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Largest `|v|` a slot holds: `2^(w−1) − 1`.
    pub fn max_abs(&self) -> u128 {
        (1u128 << (self.slot_bits - 1)) - 1
    }

    fn check_bound(&self, bound: u128) -> Result<()> {
        if bound > self.max_abs() {
            return Err(Error::SlotOverflow {
                bound: bound.to_string(),
                slot_bits: self.slot_bits,
            });
        }
        Ok(())
    }

    /// Packs `values` (exactly `slots` of them) into one plaintext.
    pub fn encode(&self, values: &[i64]) -> Result<Plaintext> {
        if values.len() != self.slots as usize {
            return Err(Error::InvalidParameters(format!(
                "{} values for {} slots",
                values.len(),
                self.slots
            )));
        }
        self.check_bound(max_abs(values))?;
        let mut x = Int::zero();
        for v in values.iter().rev() {
            x = x.shl(self.slot_bits as usize).add(&Int::from_i64(*v));
        }
        Ok(Plaintext(x))
    }

    /// Unpacks a plaintext into its slots (balanced digits). Fails if the plaintext is not a
    /// valid packing for this layout (which a tracked bound rules out), or if a slot's value
    /// does not fit an `i64` (wide slots: use [`Self::decode_wide`]).
    pub fn decode(&self, p: &Plaintext) -> Result<Vec<i64>> {
        self.decode_wide(p)?
            .into_iter()
            .map(|v| {
                i64::try_from(v).map_err(|_| Error::Mismatch("slot value does not fit in i64"))
            })
            .collect()
    }

    /// [`Self::decode`] for slots of up to [`MAX_SLOT_BITS`] bits.
    pub fn decode_wide(&self, p: &Plaintext) -> Result<Vec<i128>> {
        let w = self.slot_bits as usize;
        let modulus = Int::one().shl(w);
        let half = Int::one().shl(w - 1);
        let mut x = p.0.clone();
        let mut out = Vec::with_capacity(self.slots as usize);
        for _ in 0..self.slots {
            let mut d = x.rem_euclid(&modulus);
            if d >= half {
                d = d.sub(&modulus);
            }
            let v = d
                .to_i128()
                .ok_or(Error::Mismatch("slot value does not fit in i128"))?;
            out.push(v);
            x = x.sub(&d).shr(w);
        }
        if !x.is_zero() {
            return Err(Error::SlotOverflow {
                bound: "plaintext wider than the layout".into(),
                slot_bits: self.slot_bits,
            });
        }
        Ok(out)
    }
}

fn max_abs(values: &[i64]) -> u128 {
    values
        .iter()
        .map(|v| u128::from(v.unsigned_abs()))
        .max()
        .unwrap_or(0)
}

/// A ciphertext of a packed plaintext, with its layout and a public bound on every slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedCiphertext {
    ct: Ciphertext,
    layout: SlotLayout,
    bound: u128,
}

impl PackedCiphertext {
    /// Wraps a ciphertext whose slot bound is vouched for elsewhere (a verified range proof, or
    /// a ciphertext this node computed itself).
    pub fn from_parts(ct: Ciphertext, layout: SlotLayout, bound: u128) -> Result<Self> {
        layout.check_bound(bound)?;
        Ok(PackedCiphertext { ct, layout, bound })
    }

    /// The ciphertext.
    pub fn ciphertext(&self) -> &Ciphertext {
        &self.ct
    }

    /// The layout.
    pub fn layout(&self) -> SlotLayout {
        self.layout
    }

    /// The public bound on `|slot|`.
    pub fn bound(&self) -> u128 {
        self.bound
    }

    fn bound_after(&self, extra: u128) -> Result<u128> {
        let b = self.bound.checked_add(extra).ok_or(Error::SlotOverflow {
            bound: "more than 2^128".into(),
            slot_bits: self.layout.slot_bits,
        })?;
        self.layout.check_bound(b)?;
        Ok(b)
    }

    /// Slot-wise sum; refused if the summed bound could overflow a slot.
    pub fn add(&self, pk: &PublicKey, other: &PackedCiphertext) -> Result<PackedCiphertext> {
        if self.layout != other.layout {
            return Err(Error::Mismatch("packed ciphertexts have different layouts"));
        }
        let bound = self.bound_after(other.bound)?;
        Ok(PackedCiphertext {
            ct: pk.add(&self.ct, &other.ct),
            layout: self.layout,
            bound,
        })
    }

    /// Adds public per-slot values.
    pub fn add_plain(&self, pk: &PublicKey, values: &[i64]) -> Result<PackedCiphertext> {
        let bound = self.bound_after(max_abs(values))?;
        let p = self.layout.encode(values)?;
        Ok(PackedCiphertext {
            ct: pk.add_plain(&self.ct, &p)?,
            layout: self.layout,
            bound,
        })
    }

    /// Unpacks a decryption of this ciphertext.
    pub fn decode(&self, p: &Plaintext) -> Result<Vec<i64>> {
        self.layout.decode(p)
    }

    /// Unpacks a decryption of this ciphertext, slots of any supported width.
    pub fn decode_wide(&self, p: &Plaintext) -> Result<Vec<i128>> {
        self.layout.decode_wide(p)
    }
}

impl PublicKey {
    /// Encrypts `values` packed under `layout` (fast DJN path).
    pub fn encrypt_packed<R: RngCore + CryptoRng + ?Sized>(
        &self,
        layout: SlotLayout,
        values: &[i64],
        rng: &mut R,
    ) -> Result<PackedCiphertext> {
        let p = layout.encode(values)?;
        Ok(PackedCiphertext {
            ct: self.encrypt(&p, rng)?,
            layout,
            bound: max_abs(values),
        })
    }
}
