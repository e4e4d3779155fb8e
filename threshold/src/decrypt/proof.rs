//! The non-interactive proof of equality of discrete logarithms for a partial decryption
//! (Damgård–Jurik 2001 §4.1 / Shoup 2000 §3, made non-interactive with Fiat–Shamir).
//!
//! Statement: `(c̃, c̃_i, v, v_i) = (c⁴, c_i², v, v_i)`; witness `x = Δ·s_i` with
//! `c̃^x = c̃_i` and `v^x = v_i`.
//!
//! * Prover: `r ← [0, 2^(|x| + 128 + 80))`, `a = c̃^r` (computed with `c_i` from one shared
//!   squaring chain of `c`, see the `fixed_base` module), `b = v^r` (fixed-base table),
//!   `e = H(key, context, i, c, c_i, a, b)` (128 bits), `z = r + e·x` over the integers.
//! * Verifier: recompute `a = c̃^z · c̃_i^(−e)`, `b = v^z · v_i^(−e)` and check `e` against the
//!   hash. `z` is bounded (an overlong `z` is refused before any exponentiation).
//!
//! Soundness relies on `v` generating the squares of `Z*_{N²}` (safe primes, dealer mode) —
//! see docs/threshold.md for the dealer-free case. Zero-knowledge is statistical (80 bits)
//! because `r` is longer than `e·x` by that much.

use merlin::Transcript;

use crate::bigint::{Int, SecretInt};
use crate::ciphertext::Ciphertext;
use crate::hash::TranscriptExt;
use crate::keys::{PartyIndex, ThresholdPublicKey};

/// The proof attached to a partial decryption: the challenge and the response.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct EqualityProof {
    pub(crate) e: u128,
    pub(crate) z: Int,
}

pub(crate) struct Statement<'a> {
    pub(crate) key: &'a ThresholdPublicKey,
    pub(crate) context: &'a [u8],
    pub(crate) party: PartyIndex,
    pub(crate) c: &'a Ciphertext,
    pub(crate) ci: &'a Int,
}

impl Statement<'_> {
    fn challenge(&self, a: &Int, b: &Int) -> u128 {
        let mut t = Transcript::new(b"medtech-threshold/v1/partial-decryption");
        t.append_message(b"key", &self.key.fingerprint());
        t.append_message(b"context", self.context);
        t.append_u64(b"party", u64::from(self.party.0));
        t.append_int(b"c", &self.c.0);
        t.append_int(b"c_i", self.ci);
        t.append_int(b"a", a);
        t.append_int(b"b", b);
        t.challenge_u128(b"e")
    }

    /// Largest `z` an honest prover produces, in bits.
    pub(crate) fn max_z_bits(&self) -> usize {
        self.key.proof_nonce_bits() + 1
    }

    /// The proof for witness `x`, given the prover's nonce `r` (`proof_nonce_bits()` bits) and
    /// `a = c̃^r`, which the caller computed together with `c_i` (one shared squaring chain).
    pub(crate) fn prove_with_nonce(
        &self,
        x: &SecretInt,
        r: &SecretInt,
        a: &Int,
    ) -> Option<EqualityProof> {
        let nonce_bits = self.key.proof_nonce_bits();
        let b = self.key.v_table().pow_secret(r, nonce_bits)?;
        let e = self.challenge(a, &b);
        // e·Δs_i alone would reveal the share: held in a SecretInt so it is wiped when dropped.
        let ex = SecretInt::new(x.expose().mul(&Int::from_u128(e)));
        let z = r.expose().add(ex.expose());
        Some(EqualityProof { e, z })
    }

    pub(crate) fn verify(&self, proof: &EqualityProof) -> bool {
        if proof.z.is_negative() || proof.z.bits() > self.max_z_bits() {
            return false;
        }
        let nn = self.key.public_key().nn();
        let e = Int::from_u128(proof.e);
        let (Some(ci2_inv), Some(vi_inv)) = (
            self.ci.mul_mod(self.ci, nn).invert(nn),
            self.key.vk(self.party).ok().and_then(|vi| vi.invert(nn)),
        ) else {
            return false;
        };
        let c4 = self.c.0.pow_mod(&Int::from_u64(4), nn);
        let a = c4
            .pow_mod(&proof.z, nn)
            .mul_mod(&ci2_inv.pow_mod(&e, nn), nn);
        let b = self
            .key
            .v_table()
            .pow_public(&proof.z)
            .mul_mod(&vi_inv.pow_mod(&e, nn), nn);
        self.challenge(&a, &b) == proof.e
    }
}
