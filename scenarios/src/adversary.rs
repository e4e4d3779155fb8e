//! Cheating members, as [`Adversary`] hooks: each rewrites what an otherwise honest member is
//! about to post. Every cheat here is one the protocol must detect, name on the ledger and
//! survive (the honest members still release the query without the cheater's part).

use std::sync::Arc;

use medtech_federation::node::Adversary;
use medtech_federation::query::SLOT_BITS;
use medtech_ledger::entry::Kind;
use medtech_protos::ledger::v1 as pb;
use medtech_threshold::{SlotLayout, ThresholdPublicKey};
use rand_core::OsRng;

/// Posts partial decryptions with one bit flipped near the end of the first one (inside its
/// value or its proof of correct decryption).
pub fn bad_partial_decryption() -> Adversary {
    Arc::new(|_, k| match k {
        Kind::PartialDecryption(mut p) => {
            if let Some(b) = p.partials.first_mut() {
                let i = b.len().saturating_sub(3);
                if let Some(x) = b.get_mut(i) {
                    *x ^= 0x10;
                }
            }
            vec![Kind::PartialDecryption(p)]
        }
        k => vec![k],
    })
}

/// Contributes `value` in every slot of its first ciphertext — far outside the range a
/// hospital's count can take — keeping the range proof of its honest contribution (it cannot
/// make one for the value it claims).
pub fn out_of_range_contribution(key: Arc<ThresholdPublicKey>, value: i64) -> Adversary {
    Arc::new(move |_, k| match k {
        Kind::Contribution(mut c) => {
            let pk = key.public_key();
            if let Ok(layout) = SlotLayout::cover(pk, SLOT_BITS, 1).map(|v| v[0]) {
                if let Ok(ct) = pk.encrypt_packed(layout, &[value], &mut OsRng) {
                    if let Some(first) = c.ciphertexts.first_mut() {
                        *first = ct.ciphertext().to_bytes();
                    }
                }
            }
            vec![Kind::Contribution(c)]
        }
        k => vec![k],
    })
}

/// Posts `old` — a noise share from an earlier query, its own (a replay) or another
/// member's (a copy) — re-targeted to each new query instead of a fresh share. Noise shares
/// are bound by their range proofs to the query id and the author's party index, so both
/// fail verification; a member that could reuse shares could make the noise of two releases
/// cancel.
pub fn replayed_noise_share(old: pb::NoiseCommitment) -> Adversary {
    Arc::new(move |_, k| match k {
        Kind::NoiseCommitment(mine) if mine.query_id != old.query_id => {
            let mut replay = old.clone();
            replay.query_id = mine.query_id;
            vec![Kind::NoiseCommitment(replay)]
        }
        k => vec![k],
    })
}
