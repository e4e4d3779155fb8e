//! Noise-share commitments: a member's noise shares travel encrypted under the committee key,
//! with a proof that binds them to one query and one member and bounds them.
//!
//! A member with shares `s_j ∈ [−B, B − 1]` (one per coordinate; `B` is one of
//! [`SHARE_BOUNDS`], `2^7`, `2^15` or `2^31`, fixed by the query's calibration through
//! [`ShareSpec::share_bound`](crate::ShareSpec::share_bound)) encrypts the shifted values
//! `s_j + B ∈ [0, 2B − 1]` — a power-of-two range of 8, 16 or 32 bits, so the Bulletproof needs
//! no complement commitments — packed under the query's slot layout, with a contribution
//! range proof (medtech-threshold's Bulletproof-linked proof) whose Fiat–Shamir transcript binds
//! the context `"medtech-noise/v1/share" ‖ query id ‖ member` and the bound. The verifier checks
//! the proof for *that* query, member and bound, then subtracts `B` from every slot
//! homomorphically. Consequences:
//!
//! * a share posted for query A does not verify for query B (no replay into another query);
//! * a share copied from another member does not verify under the copier's index;
//! * a share cannot be arbitrarily large (a member cannot wipe out a result with huge noise).
//!
//! The bound must not become a truncation of the distribution: a share beyond `B` makes
//! [`encrypt_shares`] return an error, and the caller must then fail the query rather than draw
//! again (a re-draw is rejection sampling, which truncates; `medtech-federation` fails the query,
//! charged). [`ShareSpec::share_bound`](crate::ShareSpec::share_bound) picks the smallest bound
//! whose tail probability is provably below `2^−80` per share, so that happens with at most that
//! probability (docs/privacy.md §5 states the δ it adds), and refuses a calibration no bound
//! holds; the proof then costs half (16-bit) or a quarter (8-bit) of the widest one's proving
//! time.

use medtech_threshold::{
    Ciphertext, PackedCiphertext, PartyIndex, PublicKey, RangeProof, SlotLayout,
};
use rand_core::{CryptoRng, RngCore};

use crate::error::{Error, Result};

/// The widest share range: shares in `[−SHARE_BOUND, SHARE_BOUND − 1]`.
pub const SHARE_BOUND: u64 = 1 << 31;

/// The bounds a noise-share proof may use, narrowest first: shifted shares in 8, 16 or 32 bits
/// (the Bulletproof range sizes).
pub const SHARE_BOUNDS: [u64; 3] = [1 << 7, 1 << 15, SHARE_BOUND];

/// `2B − 1`, the proven range of a shifted share, for a supported `bound`.
fn shifted_max(bound: u64) -> Result<u64> {
    if SHARE_BOUNDS.contains(&bound) {
        Ok(2 * bound - 1)
    } else {
        Err(Error::InvalidParameter(format!(
            "noise-share bound {bound}; supported: 2^7, 2^15, 2^31"
        )))
    }
}

/// The proof context for one member's shares in one query.
pub fn context(query_id: &[u8], member: PartyIndex) -> Vec<u8> {
    let mut c = b"medtech-noise/v1/share".to_vec();
    c.extend_from_slice(&(query_id.len() as u64).to_be_bytes());
    c.extend_from_slice(query_id);
    c.extend_from_slice(&member.0.to_be_bytes());
    c
}

/// Encrypts one member's noise shares (one per slot of `layout`), each in `[−bound, bound − 1]`
/// (`bound` one of [`SHARE_BOUNDS`]), with the binding proof.
pub fn encrypt_shares<R: RngCore + CryptoRng + ?Sized>(
    pk: &PublicKey,
    layout: SlotLayout,
    shares: &[i128],
    bound: u64,
    query_id: &[u8],
    member: PartyIndex,
    rng: &mut R,
) -> Result<(Ciphertext, RangeProof)> {
    let max = shifted_max(bound)?;
    let b = i128::from(bound);
    let shifted = shares
        .iter()
        .map(|&s| {
            if s < -b || s >= b {
                return Err(Error::InvalidParameter(format!(
                    "noise share outside [−{bound}, {bound}); this member's noise share fails"
                )));
            }
            // s + B ∈ [0, 2B − 1], below 2^32.
            Ok((s + b) as u64)
        })
        .collect::<Result<Vec<u64>>>()?;
    let (packed, proof) =
        pk.encrypt_in_range(layout, &shifted, max, &context(query_id, member), rng)?;
    Ok((packed.ciphertext().clone(), proof))
}

/// Verifies a member's noise shares for `query_id` and returns them, unshifted, as a packed
/// ciphertext whose slots lie in `[−bound, bound − 1]`. A proof made under another bound fails.
pub fn verify_shares(
    pk: &PublicKey,
    layout: SlotLayout,
    bound: u64,
    query_id: &[u8],
    member: PartyIndex,
    ciphertext: &Ciphertext,
    proof: &RangeProof,
) -> Result<PackedCiphertext> {
    let shifted = pk.verify_range(
        layout,
        shifted_max(bound)?,
        &context(query_id, member),
        ciphertext,
        proof,
    )?;
    unshift_shares(pk, layout, bound, shifted.ciphertext())
}

/// The noise shares of `ciphertext` (as [`encrypt_shares`] made it: every slot shifted by
/// `bound`) unshifted, as a packed ciphertext with slots in `[−bound, bound − 1]`. Only for a
/// ciphertext whose slots are known to lie in `[0, 2·bound − 1]`: one whose proof
/// [`verify_shares`] checked, or one this member encrypted itself.
pub fn unshift_shares(
    pk: &PublicKey,
    layout: SlotLayout,
    bound: u64,
    ciphertext: &Ciphertext,
) -> Result<PackedCiphertext> {
    shifted_max(bound)?;
    // bound ≤ 2^31, so the cast is exact.
    let minus_b = vec![-(bound as i64); layout.slots() as usize];
    let unshifted = pk.add_plain(ciphertext, &layout.encode(&minus_b)?)?;
    // Every slot was in [0, 2B − 1]; after subtracting B it is in [−B, B − 1].
    Ok(PackedCiphertext::from_parts(
        unshifted,
        layout,
        u128::from(bound),
    )?)
}
