//! Fixtures shared by the generation's attack tests (`audit` and `key`): small parameters,
//! per-party RNGs, a test hook that does nothing, and the M4 candidate killer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::key::hooks;
use super::{Message, Parameters, Round, Setup};
use crate::bigint::Int;
use crate::keys::PartyIndex;

/// 512 bits, n = 3, t = 2, session `[session; 32]`; few repetitions keep these runs short
/// (soundness is not what they test).
pub(crate) fn params(session: u8) -> Parameters {
    Parameters::new(512, 3, 2, [session; 32])
        .unwrap()
        .insecure_with_biprime_reps_for_tests(24)
        .unwrap()
}

/// One RNG per party, seeded `seed`, `seed + 1`, `seed + 2`.
pub(crate) fn rngs(seed: u64) -> Vec<ChaCha20Rng> {
    (0..3)
        .map(|k| ChaCha20Rng::seed_from_u64(seed + k))
        .collect()
}

/// A hook for `session` that changes nothing (set the fields of one attack on top of it).
pub(crate) fn hook(session: u8) -> hooks::Hook {
    hooks::Hook {
        session: [session; 32],
        party: 0,
        phi_shift: 0,
        phi_offset: 0,
        c1_shift_party: 0,
        forge_y_party: 0,
        false_complaint: (0, 0),
        k4_without_randomness: false,
        oversized: (0, hooks::Oversized::None),
        kill_biprime_party: 0,
    }
}

/// A rushing candidate killer consistent with its own commitments: product party `party` adds
/// `4Δ³` to every M4 value it publishes (in batch `batch`, or in every batch), opening
/// `N + 4λ'` instead of `N` — still `≡ 1 (mod 4)`, never a biprime.
pub(crate) struct M4Killer {
    party: PartyIndex,
    batch: Option<u32>,
    shift: Int,
    n2: usize,
}

impl M4Killer {
    pub(crate) fn new(params: &Parameters, party: u16, batch: Option<u32>) -> Self {
        let setup = Setup::new(params);
        M4Killer {
            party: PartyIndex(party),
            batch,
            shift: setup.delta.mul(&setup.delta).mul(&setup.delta).mul_u64(4),
            n2: 2 * usize::from(setup.n),
        }
    }

    /// Shifts `m`'s M4 values if it is the killer's broadcast; returns how many it shifted.
    pub(crate) fn apply(&self, m: &mut Message) -> usize {
        if m.round != Round::ModulusShares
            || m.from != self.party
            || m.to.is_some()
            || self.batch.is_some_and(|b| b != m.batch)
        {
            return 0;
        }
        let count = m.ints.len() - self.n2;
        for y in &mut m.ints[..count] {
            *y = y.add(&self.shift);
        }
        count
    }
}
