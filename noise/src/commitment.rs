//! Noise-share commitments: a member's noise shares travel encrypted under the committee key,
//! with a proof that binds them to one query and one member and bounds them.
//!
//! A member with shares `s_j ∈ [−B, B − 1]` (`B = 2^31`, one per coordinate) encrypts the
//! shifted values `s_j + B ∈ [0, 2^32 − 1]` — a power-of-two range, so the Bulletproof needs no
//! complement commitments — packed under the query's slot layout, with a contribution
//! range proof (medtech-threshold's Bulletproof-linked proof) whose Fiat–Shamir transcript binds
//! the context `"medtech-noise/v1/share" ‖ query id ‖ member`. The verifier checks the proof for
//! *that* query and member, then subtracts `B` from every slot homomorphically. Consequences:
//!
//! * a share posted for query A does not verify for query B (no replay into another query);
//! * a share copied from another member does not verify under the copier's index;
//! * a share cannot be arbitrarily large (a member cannot wipe out a result with huge noise).
//!
//! The bound is not a truncation of the distribution: a share beyond `B` makes
//! [`encrypt_shares`] return an error and the member's contribution fail (the query then waits
//! for other members' shares), so the shares that are posted are exactly distributed. For every
//! supported calibration the probability of exceeding `B` is below `exp(−2^31/scale)`, i.e. it
//! does not happen (ε ≥ 10⁻⁶ gives scale ≤ 10⁶ and probability below e^(−2147)).

use medtech_threshold::{
    Ciphertext, PackedCiphertext, PartyIndex, PublicKey, RangeProof, SlotLayout,
};
use rand_core::{CryptoRng, RngCore};

use crate::error::{Error, Result};

/// Shares lie in `[−SHARE_BOUND, SHARE_BOUND − 1]`.
pub const SHARE_BOUND: u64 = 1 << 31;

/// The proven range of a shifted share, `[0, 2·SHARE_BOUND − 1]`.
const SHIFTED_MAX: u64 = 2 * SHARE_BOUND - 1;

/// The proof context for one member's shares in one query.
pub fn context(query_id: &[u8], member: PartyIndex) -> Vec<u8> {
    let mut c = b"medtech-noise/v1/share".to_vec();
    c.extend_from_slice(&(query_id.len() as u64).to_be_bytes());
    c.extend_from_slice(query_id);
    c.extend_from_slice(&member.0.to_be_bytes());
    c
}

/// Encrypts one member's noise shares (one per slot of `layout`) with the binding proof.
pub fn encrypt_shares<R: RngCore + CryptoRng + ?Sized>(
    pk: &PublicKey,
    layout: SlotLayout,
    shares: &[i128],
    query_id: &[u8],
    member: PartyIndex,
    rng: &mut R,
) -> Result<(Ciphertext, RangeProof)> {
    let b = i128::from(SHARE_BOUND);
    let shifted = shares
        .iter()
        .map(|&s| {
            if s < -b || s >= b {
                return Err(Error::InvalidParameter(format!(
                    "noise share outside [−{SHARE_BOUND}, {SHARE_BOUND}); this member's contribution fails"
                )));
            }
            // s + B ∈ [0, 2^32 − 1].
            Ok((s + b) as u64)
        })
        .collect::<Result<Vec<u64>>>()?;
    let (packed, proof) = pk.encrypt_in_range(
        layout,
        &shifted,
        SHIFTED_MAX,
        &context(query_id, member),
        rng,
    )?;
    Ok((packed.ciphertext().clone(), proof))
}

/// Verifies a member's noise shares for `query_id` and returns them, unshifted, as a packed
/// ciphertext whose slots lie in `[−B, B − 1]`.
pub fn verify_shares(
    pk: &PublicKey,
    layout: SlotLayout,
    query_id: &[u8],
    member: PartyIndex,
    ciphertext: &Ciphertext,
    proof: &RangeProof,
) -> Result<PackedCiphertext> {
    let shifted = pk.verify_range(
        layout,
        SHIFTED_MAX,
        &context(query_id, member),
        ciphertext,
        proof,
    )?;
    let minus_b = vec![-(SHARE_BOUND as i64); layout.slots() as usize];
    let unshifted = pk.add_plain(shifted.ciphertext(), &layout.encode(&minus_b)?)?;
    // Every slot was proven in [0, 2B − 1]; after subtracting B it is in [−B, B − 1].
    Ok(PackedCiphertext::from_parts(
        unshifted,
        layout,
        u128::from(SHARE_BOUND),
    )?)
}
