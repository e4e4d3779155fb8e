//! Contribution range proofs: a hospital proves that its ciphertext encrypts values in
//! `[0, B]` — one value, or every slot of a packed ciphertext — without revealing them, so one
//! member cannot poison an aggregate.
//!
//! Our construction (zk-paillier is GPL-3.0 and is not used):
//!
//! 1. **Commit.** For each slot value `x_j`, a Pedersen commitment `V_j = x_j·G + γ_j·H` in the
//!    Ristretto group (prime order ℓ ≈ 2^252).
//! 2. **Range.** One aggregated Bulletproof (Bünz et al., S&P 2018; dalek `bulletproofs`, MIT)
//!    shows `x_j ∈ [0, 2^k)` and, unless `B = 2^k − 1`, `B − x_j ∈ [0, 2^k)` through the
//!    homomorphic `B·G − V_j` — together `x_j ∈ [0, B]` exactly. `k ∈ {8, 16, 32}`.
//! 3. **Link.** A sigma protocol proves that the Paillier ciphertext `C = (1+N)^X · h_s^ρ` with
//!    `X = Σ x_j 2^(o_j)` opens to the committed values, for public, strictly increasing bit
//!    offsets `o_j` (the uniform placement `o_j = w·j` of a [`SlotLayout`], or any placement
//!    given to [`PublicKey::encrypt_in_range_at`], e.g. two limbs `lo`, `hi` of one wide field
//!    at `o` and `o + 30`, so that the plaintext holds `lo + 2^30·hi` and never the limbs):
//!    prover picks `α_j ← [0, 2^(k+128+80))`, `δ_j ← Z_ℓ`, `β ← [0, 2^(|ρ|+128+80))`, sends
//!    `A_P = (1+N)^(Σ α_j 2^(o_j)) · h_s^β mod N²` and `A_j = α_j·G + δ_j·H`; with the
//!    challenge `e` (128 bits) it answers `z_j = α_j + e·x_j`, `ζ_j = δ_j + e·γ_j mod ℓ`,
//!    `z_ρ = β + e·ρ`. The verifier checks `z_j < 2^(k+128+80+1)`, `z_j·G + ζ_j·H = A_j + e·V_j`
//!    and `(1+N)^(Σ z_j 2^(o_j)) · h_s^(z_ρ) = A_P · C^e mod N²`. A non-uniform placement is
//!    bound into the transcript (the uniform one keeps its original transcript), and the slot
//!    bound of the result is the largest `Σ_{j in the slot} B·2^(o_j − w·slot)`, refused if it
//!    could leave the slot.
//!
//! Why the link is sound over the integers although the two groups have unrelated orders: from
//! two accepting transcripts the Pedersen side gives `Δz_j ≡ Δe·x_j (mod ℓ)` with `x_j < 2^k` the
//! Bulletproof-extracted value. Both `|Δz_j| < 2^(k+209)` and `|Δe·x_j| < 2^(k+128)` are below
//! ℓ/2 for `k ≤ 32`, so the congruence is an equality of integers: `Δe` divides `Δz_j` and the
//! quotient is `x_j`. On the Paillier side `C^(Δe) = (1+N)^(Σ Δz_j 2^(o_j)) · (N-th residue)`,
//! and `Δe < 2^128` is invertible mod N, so `C` encrypts `Σ x_j 2^(o_j)` — exactly the packing
//! of in-range values. The offsets are public weights: each `x_j` is still extracted separately
//! on the Pedersen side, whatever the offsets, so the argument is the same for any placement
//! (tests `placed_range_proof_rejects_moved_offsets` in `tests/packing_and_range.rs`). Every challenge is one Fiat–Shamir transcript (merlin) that binds the key
//! fingerprint, the caller's context, the ciphertext, the layout, `B`, the Bulletproof and all
//! commitments.

use std::sync::{Arc, OnceLock, RwLock};

use bulletproofs::{BulletproofGens, PedersenGens};
use curve25519_dalek::ristretto::CompressedRistretto;
use curve25519_dalek::scalar::Scalar;
use merlin::Transcript;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::bigint::{Int, SecretInt};
use crate::ciphertext::{Ciphertext, EncryptionNonce, Plaintext};
use crate::encoding::{Reader, Tag, Writer};
use crate::error::{Error, Result};
use crate::hash::TranscriptExt;
use crate::keys::{PublicKey, CHALLENGE_BITS, STAT_BITS};
use crate::packing::{PackedCiphertext, SlotLayout};

/// Largest number of committed values (slots, plus complements, padded to a power of two).
pub const MAX_COMMITMENTS: usize = 256;

/// A proof that a (packed) ciphertext encrypts values in `[0, B]`.
#[derive(Clone)]
pub struct RangeProof {
    range_bits: u8,
    /// `V_j` for each slot, then the padding commitments.
    commitments: Vec<CompressedRistretto>,
    bulletproof: bulletproofs::RangeProof,
    link_paillier: Int,
    link_ec: Vec<CompressedRistretto>,
    z: Vec<Int>,
    z_blind: Vec<Scalar>,
    z_rho: Int,
}

impl core::fmt::Debug for RangeProof {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "RangeProof {{ range_bits: {}, commitments: {} }}",
            self.range_bits,
            self.commitments.len()
        )
    }
}

/// Parameters of a range statement derived from `(layout, offsets, B)`.
struct Shape {
    range_bits: usize,
    complement: bool,
    /// Number of committed values `x_j`.
    slots: usize,
    /// Total committed values, a power of two.
    total: usize,
    /// Public bound on every slot of the packed plaintext: the largest
    /// `Σ_{j in the slot} B·2^(o_j − w·slot)`.
    slot_bound: u128,
}

/// The uniform placement of `layout`: value `j` at bit `w·j`, one value per slot.
pub fn uniform_offsets(layout: SlotLayout) -> Vec<u32> {
    (0..layout.slots())
        .map(|j| j * layout.slot_bits())
        .collect()
}

impl Shape {
    fn new(layout: SlotLayout, offsets: &[u32], bound: u64) -> Result<Shape> {
        let range_bits = [8usize, 16, 32]
            .into_iter()
            .find(|&k| u128::from(bound) < (1u128 << k))
            .ok_or_else(|| Error::InvalidParameters(format!("range bound {bound} ≥ 2^32")))?;
        if offsets.is_empty() || offsets.windows(2).any(|p| p[0] >= p[1]) {
            return Err(Error::InvalidParameters(
                "bit offsets must be non-empty and strictly increasing".into(),
            ));
        }
        // Each slot's bound: the sum of its committed values' weighted bounds.
        let w = layout.slot_bits();
        let mut bounds = vec![0u128; layout.slots() as usize];
        for &o in offsets {
            let weighted = 1u128
                .checked_shl(o % w)
                .and_then(|m| m.checked_mul(u128::from(bound)));
            let slot = bounds.get_mut((o / w) as usize);
            match (slot, weighted) {
                (Some(b), Some(x)) => *b = b.saturating_add(x),
                _ => {
                    return Err(Error::InvalidParameters(format!(
                        "bit offset {o} outside the {}-slot layout",
                        layout.slots()
                    )))
                }
            }
        }
        let slot_bound = bounds.into_iter().max().unwrap_or(0);
        if slot_bound > layout.max_abs() {
            return Err(Error::SlotOverflow {
                bound: slot_bound.to_string(),
                slot_bits: layout.slot_bits(),
            });
        }
        let complement = u128::from(bound) != (1u128 << range_bits) - 1;
        let slots = offsets.len();
        let used = slots * if complement { 2 } else { 1 };
        let total = used.next_power_of_two();
        if total > MAX_COMMITMENTS {
            return Err(Error::InvalidParameters(format!(
                "{slots} values need {total} commitments; at most {MAX_COMMITMENTS}"
            )));
        }
        Ok(Shape {
            range_bits,
            complement,
            slots,
            total,
            slot_bound,
        })
    }

    fn pads(&self) -> usize {
        self.total - self.slots * if self.complement { 2 } else { 1 }
    }

    fn alpha_bits(&self) -> usize {
        self.range_bits + CHALLENGE_BITS + STAT_BITS
    }
}

fn pedersen() -> PedersenGens {
    PedersenGens::default()
}

/// Bulletproof generators, grown on demand and shared.
fn bp_gens(parties: usize) -> Arc<BulletproofGens> {
    static GENS: OnceLock<RwLock<Arc<BulletproofGens>>> = OnceLock::new();
    let lock = GENS.get_or_init(|| RwLock::new(Arc::new(BulletproofGens::new(32, 2))));
    if let Ok(g) = lock.read() {
        if g.party_capacity >= parties {
            return g.clone();
        }
    }
    let fresh = Arc::new(BulletproofGens::new(32, parties));
    if let Ok(mut g) = lock.write() {
        if g.party_capacity < parties {
            *g = fresh.clone();
        }
    }
    fresh
}

fn scalar_from_int(v: &Int) -> Scalar {
    // Callers pass values below 2^242 < ℓ; 32 bytes always suffice for those.
    // The prover passes its secret α_j here: both byte copies are wiped.
    let be = Zeroizing::new(v.to_bytes_be_padded(32).unwrap_or_else(|| vec![0; 32]));
    let mut le = Zeroizing::new([0u8; 32]);
    for (d, s) in le.iter_mut().zip(be.iter().rev()) {
        *d = *s;
    }
    Scalar::from_bytes_mod_order(*le)
}

fn transcript(
    pk: &PublicKey,
    context: &[u8],
    ct: &Ciphertext,
    layout: SlotLayout,
    offsets: &[u32],
    bound: u64,
) -> Transcript {
    let mut t = Transcript::new(b"medtech-threshold/v1/range-proof");
    t.append_message(b"key", &pk.fingerprint());
    t.append_message(b"context", context);
    t.append_message(b"ciphertext", &ct.to_bytes());
    t.append_u64(b"slot_bits", u64::from(layout.slot_bits()));
    t.append_u64(b"slots", u64::from(layout.slots()));
    // The uniform placement keeps the transcript it always had; any other names its offsets.
    if offsets != uniform_offsets(layout).as_slice() {
        t.append_u64(b"offsets", offsets.len() as u64);
        for &o in offsets {
            t.append_u64(b"offset", u64::from(o));
        }
    }
    t.append_u64(b"bound", bound);
    t
}

/// `Σ parts_j · 2^(o_j) mod N`.
fn packed_exponent(pk: &PublicKey, offsets: &[u32], parts: &[Int]) -> Int {
    let mut x = Int::zero();
    for (v, &o) in parts.iter().zip(offsets) {
        x = x.add(&v.shl(o as usize));
    }
    x.rem_euclid(pk.n())
}

impl PublicKey {
    /// Encrypts `values` packed under `layout` and proves every one lies in `[0, bound]`
    /// (`bound < 2^32`), bound to `context` (e.g. the query id and the hospital's identity).
    pub fn encrypt_in_range<R: RngCore + CryptoRng + ?Sized>(
        &self,
        layout: SlotLayout,
        values: &[u64],
        bound: u64,
        context: &[u8],
        rng: &mut R,
    ) -> Result<(PackedCiphertext, RangeProof)> {
        self.encrypt_in_range_at(
            layout,
            &uniform_offsets(layout),
            values,
            bound,
            context,
            rng,
        )
    }

    /// [`Self::encrypt_in_range`] with each value `x_j` placed at the public bit offset
    /// `offsets[j]` (strictly increasing): the plaintext is `Σ x_j·2^(o_j)`, so several
    /// committed values may share one slot of `layout` (a wide field of weighted limbs). The
    /// returned bound is the largest slot's `Σ bound·2^(o_j − w·slot)`.
    pub fn encrypt_in_range_at<R: RngCore + CryptoRng + ?Sized>(
        &self,
        layout: SlotLayout,
        offsets: &[u32],
        values: &[u64],
        bound: u64,
        context: &[u8],
        rng: &mut R,
    ) -> Result<(PackedCiphertext, RangeProof)> {
        let shape = Shape::new(layout, offsets, bound)?;
        if values.len() != shape.slots {
            return Err(Error::InvalidParameters(format!(
                "{} values for {} offsets",
                values.len(),
                shape.slots
            )));
        }
        if let Some(v) = values.iter().find(|&&v| v > bound) {
            return Err(Error::PlaintextOutOfRange(format!("{v} > bound {bound}")));
        }
        // The values, their nonces and blinding factors are the hospital's secrets: every copy
        // below is a SecretInt or sits in a Zeroizing buffer, wiped when dropped.
        let value_ints: Zeroizing<Vec<Int>> =
            Zeroizing::new(values.iter().map(|&v| Int::from_u64(v)).collect());
        let plain = Plaintext(packed_exponent(self, offsets, &value_ints));
        let (ct, EncryptionNonce(rho)) = self.encrypt_with_nonce(&plain, rng)?;

        // Step 1–2: commitments and the aggregated Bulletproof.
        let pc = pedersen();
        let gammas: Zeroizing<Vec<Scalar>> = Zeroizing::new(
            (0..shape.slots)
                .map(|_| Scalar::random(&mut RngAdapter(&mut *rng)))
                .collect(),
        );
        // Full capacity up front: a Vec that grows moves its contents and frees the old buffer
        // unwiped.
        let mut bp_values: Zeroizing<Vec<u64>> = Zeroizing::new(Vec::with_capacity(shape.total));
        bp_values.extend_from_slice(values);
        let mut bp_blind: Zeroizing<Vec<Scalar>> = Zeroizing::new(Vec::with_capacity(shape.total));
        bp_blind.extend_from_slice(&gammas);
        if shape.complement {
            bp_values.extend(values.iter().map(|&v| bound - v));
            bp_blind.extend(gammas.iter().map(|g| -g));
        }
        for _ in 0..shape.pads() {
            bp_values.push(0);
            bp_blind.push(Scalar::random(&mut RngAdapter(&mut *rng)));
        }
        let mut t = transcript(self, context, &ct, layout, offsets, bound);
        let gens = bp_gens(shape.total);
        let (bulletproof, all_commitments) = bulletproofs::RangeProof::prove_multiple_with_rng(
            &gens,
            &pc,
            &mut t,
            &bp_values,
            &bp_blind,
            shape.range_bits,
            &mut RngAdapter(rng),
        )
        .map_err(|e| Error::InvalidParameters(format!("bulletproof: {e:?}")))?;
        let mut commitments: Vec<CompressedRistretto> = all_commitments[..shape.slots].to_vec();
        commitments.extend_from_slice(&all_commitments[shape.total - shape.pads()..]);

        // Step 3: the link.
        let alphas: Vec<SecretInt> = (0..shape.slots)
            .map(|_| SecretInt::new(Int::random_bits(rng, shape.alpha_bits())))
            .collect();
        let deltas: Zeroizing<Vec<Scalar>> = Zeroizing::new(
            (0..shape.slots)
                .map(|_| Scalar::random(&mut RngAdapter(&mut *rng)))
                .collect(),
        );
        let beta_bits = self.nonce_bits() + CHALLENGE_BITS + STAT_BITS;
        let beta = SecretInt::new(Int::random_bits(rng, beta_bits));
        let alpha_ints: Zeroizing<Vec<Int>> =
            Zeroizing::new(alphas.iter().map(|a| a.expose().clone()).collect());
        let alpha_packed = SecretInt::new(packed_exponent(self, offsets, &alpha_ints));
        let hs_beta = SecretInt::new(
            self.hs_table()
                .pow_secret(&beta, beta_bits)
                .ok_or_else(|| Error::InvalidParameters("nonce table too short".into()))?,
        );
        let link_paillier = self
            .g_pow(alpha_packed.expose())
            .mul_mod(hs_beta.expose(), self.nn());
        let link_ec: Vec<CompressedRistretto> = alphas
            .iter()
            .zip(deltas.iter())
            .map(|(a, d)| pc.commit(scalar_from_int(a.expose()), *d).compress())
            .collect();
        let e = link_challenge(&mut t, &commitments, &link_paillier, &link_ec);
        let e_int = Int::from_u128(e);
        let e_scalar = Scalar::from(e);
        let z: Vec<Int> = alphas
            .iter()
            .zip(values)
            .map(|(a, &x)| a.expose().add(SecretInt::new(e_int.mul_u64(x)).expose()))
            .collect();
        let z_blind: Vec<Scalar> = deltas
            .iter()
            .zip(gammas.iter())
            .map(|(d, g)| d + e_scalar * g)
            .collect();
        let z_rho = beta
            .expose()
            .add(SecretInt::new(e_int.mul(rho.expose())).expose());
        let packed = PackedCiphertext::from_parts(ct, layout, shape.slot_bound)?;
        Ok((
            packed,
            RangeProof {
                range_bits: shape.range_bits as u8,
                commitments,
                bulletproof,
                link_paillier,
                link_ec,
                z,
                z_blind,
                z_rho,
            },
        ))
    }

    /// Verifies a range proof for `ct` and returns it as a packed ciphertext whose slots are
    /// known to lie in `[0, bound]`.
    pub fn verify_range(
        &self,
        layout: SlotLayout,
        bound: u64,
        context: &[u8],
        ct: &Ciphertext,
        proof: &RangeProof,
    ) -> Result<PackedCiphertext> {
        self.verify_range_at(layout, &uniform_offsets(layout), bound, context, ct, proof)
    }

    /// Verifies a proof made by [`Self::encrypt_in_range_at`] with these public `offsets`:
    /// `ct` encrypts `Σ x_j·2^(o_j)` with every `x_j ∈ [0, bound]`. Returns it as a packed
    /// ciphertext under the slot bound that implies.
    pub fn verify_range_at(
        &self,
        layout: SlotLayout,
        offsets: &[u32],
        bound: u64,
        context: &[u8],
        ct: &Ciphertext,
        proof: &RangeProof,
    ) -> Result<PackedCiphertext> {
        let bad = |reason| Error::InvalidRangeProof { reason };
        let shape = Shape::new(layout, offsets, bound)?;
        if usize::from(proof.range_bits) != shape.range_bits {
            return Err(bad("range size does not match the bound"));
        }
        if proof.commitments.len() != shape.slots + shape.pads()
            || proof.link_ec.len() != shape.slots
            || proof.z.len() != shape.slots
            || proof.z_blind.len() != shape.slots
        {
            return Err(bad("wrong number of components for the layout"));
        }
        let pc = pedersen();
        let slot_commitments = &proof.commitments[..shape.slots];
        let mut all: Vec<CompressedRistretto> = slot_commitments.to_vec();
        if shape.complement {
            let bg = pc.commit(Scalar::from(bound), Scalar::ZERO);
            for v in slot_commitments {
                let point = v
                    .decompress()
                    .ok_or(bad("commitment is not a valid point"))?;
                all.push((bg - point).compress());
            }
        }
        all.extend_from_slice(&proof.commitments[shape.slots..]);

        let mut t = transcript(self, context, ct, layout, offsets, bound);
        let gens = bp_gens(shape.total);
        proof
            .bulletproof
            .verify_multiple_with_rng(
                &gens,
                &pc,
                &mut t,
                &all,
                shape.range_bits,
                &mut RngAdapter(&mut rand_core::OsRng),
            )
            .map_err(|_| bad("bulletproof does not verify"))?;

        let e = link_challenge(
            &mut t,
            &proof.commitments,
            &proof.link_paillier,
            &proof.link_ec,
        );
        let e_int = Int::from_u128(e);
        let e_scalar = Scalar::from(e);
        let z_max_bits = shape.alpha_bits() + 1;
        let parts = proof
            .z
            .iter()
            .zip(&proof.z_blind)
            .zip(&proof.link_ec)
            .zip(slot_commitments);
        for (((z, z_blind), link), commitment) in parts {
            if z.is_negative() || z.bits() > z_max_bits {
                return Err(bad("response out of range"));
            }
            let lhs = pc.commit(scalar_from_int(z), *z_blind);
            let a = link
                .decompress()
                .ok_or(bad("link commitment is not a point"))?;
            let v = commitment
                .decompress()
                .ok_or(bad("commitment is not a valid point"))?;
            if lhs != a + e_scalar * v {
                return Err(bad("Pedersen link does not verify"));
            }
        }
        let zr_max = self.nonce_bits() + CHALLENGE_BITS + STAT_BITS + 1;
        if proof.z_rho.is_negative() || proof.z_rho.bits() > zr_max {
            return Err(bad("response out of range"));
        }
        let nn = self.nn();
        if proof.link_paillier.is_zero() || proof.link_paillier >= *nn {
            return Err(bad("Paillier link commitment out of range"));
        }
        let lhs = self
            .g_pow(&packed_exponent(self, offsets, &proof.z))
            .mul_mod(&self.hs_table().pow_public(&proof.z_rho), nn);
        let rhs = proof.link_paillier.mul_mod(&ct.0.pow_mod(&e_int, nn), nn);
        if lhs != rhs {
            return Err(bad("Paillier link does not verify"));
        }
        PackedCiphertext::from_parts(ct.clone(), layout, shape.slot_bound)
    }
}

/// The public slot bound that a range proof of values in `[0, bound]` committed at `offsets`
/// under `layout` vouches for (what [`PublicKey::verify_range_at`] returns the ciphertext with).
/// For a caller that sums ciphertexts whose proofs it does not need: one that recomputes an
/// aggregate only to check decryptions proven against it.
pub fn range_slot_bound(layout: SlotLayout, offsets: &[u32], bound: u64) -> Result<u128> {
    Ok(Shape::new(layout, offsets, bound)?.slot_bound)
}

fn link_challenge(
    t: &mut Transcript,
    commitments: &[CompressedRistretto],
    link_paillier: &Int,
    link_ec: &[CompressedRistretto],
) -> u128 {
    for c in commitments {
        t.append_message(b"V", c.as_bytes());
    }
    t.append_int(b"A_P", link_paillier);
    for a in link_ec {
        t.append_message(b"A_j", a.as_bytes());
    }
    t.challenge_u128(b"e")
}

impl RangeProof {
    /// Canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Tag::RangeProof);
        w.u8(self.range_bits);
        w.u16(self.commitments.len() as u16);
        for c in &self.commitments {
            w.bytes(c.as_bytes());
        }
        w.bytes(&self.bulletproof.to_bytes());
        w.int(&self.link_paillier);
        w.u16(self.link_ec.len() as u16);
        for ((a, z), zb) in self.link_ec.iter().zip(&self.z).zip(&self.z_blind) {
            w.bytes(a.as_bytes());
            w.int(z);
            w.bytes(zb.as_bytes());
        }
        w.int(&self.z_rho);
        w.finish()
    }

    /// Decodes a range proof received from outside (structure only; [`PublicKey::verify_range`]
    /// checks it).
    pub fn from_bytes(pk: &PublicKey, bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "range proof";
        let mut r = Reader::new(WHAT, Tag::RangeProof, bytes)?;
        let range_bits = r.u8()?;
        if ![8u8, 16, 32].contains(&range_bits) {
            return Err(Error::malformed(
                WHAT,
                "range size must be 8, 16 or 32 bits",
            ));
        }
        let point = |b: &[u8]| -> Result<CompressedRistretto> {
            CompressedRistretto::from_slice(b)
                .map_err(|_| Error::malformed(WHAT, "point must be 32 bytes"))
        };
        let nc = usize::from(r.u16()?);
        if nc > MAX_COMMITMENTS {
            return Err(Error::malformed(WHAT, "too many commitments"));
        }
        let mut commitments = Vec::with_capacity(nc);
        for _ in 0..nc {
            commitments.push(point(r.bytes(32)?)?);
        }
        let bp_bytes = r.bytes(64 * 1024)?;
        let bulletproof = bulletproofs::RangeProof::from_bytes(bp_bytes)
            .map_err(|e| Error::malformed(WHAT, format!("bulletproof: {e:?}")))?;
        let link_paillier = r.int(2 * pk.bits() as usize)?;
        let nl = usize::from(r.u16()?);
        if nl > MAX_COMMITMENTS {
            return Err(Error::malformed(WHAT, "too many link commitments"));
        }
        let (mut link_ec, mut z, mut z_blind) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..nl {
            link_ec.push(point(r.bytes(32)?)?);
            z.push(r.int(32 + CHALLENGE_BITS + STAT_BITS + 1)?);
            let zb = r.bytes(32)?;
            let mut arr = [0u8; 32];
            if zb.len() != 32 {
                return Err(Error::malformed(WHAT, "scalar must be 32 bytes"));
            }
            arr.copy_from_slice(zb);
            z_blind.push(
                Option::<Scalar>::from(Scalar::from_canonical_bytes(arr))
                    .ok_or_else(|| Error::malformed(WHAT, "non-canonical scalar"))?,
            );
        }
        let z_rho = r.int(pk.nonce_bits() + CHALLENGE_BITS + STAT_BITS + 1)?;
        r.finish()?;
        Ok(RangeProof {
            range_bits,
            commitments,
            bulletproof,
            link_paillier,
            link_ec,
            z,
            z_blind,
            z_rho,
        })
    }
}

#[cfg(test)]
mod attacks;

/// Adapts `&mut R` (possibly unsized) to the sized RNG the dalek crates take.
struct RngAdapter<'a, R: RngCore + CryptoRng + ?Sized>(&'a mut R);

impl<R: RngCore + CryptoRng + ?Sized> RngCore for RngAdapter<'_, R> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, d: &mut [u8]) {
        self.0.fill_bytes(d)
    }
    fn try_fill_bytes(&mut self, d: &mut [u8]) -> core::result::Result<(), rand_core::Error> {
        self.0.try_fill_bytes(d)
    }
}
impl<R: RngCore + CryptoRng + ?Sized> CryptoRng for RngAdapter<'_, R> {}
