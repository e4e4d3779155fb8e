//! Per-batch seeds and the audit of rejected batches (issue 25, dkg-repair.md §3, "Rejected
//! candidates are audited in the clear").
//!
//! **Seed.** At the start of every batch each party draws a fresh 32-byte [`BatchSeed`] from its
//! RNG and puts `H(session, batch, party, seed)` in its M1 broadcast (the `digest` field beside
//! its share digests). *Every* random choice the party makes in that batch is derived from the
//! seed, domain-separated per use ([`Use`]): its `p_i, q_i` of every candidate, the M1 dealing
//! seed, the M3 integer polynomials and the M3 dealing seed, the M5a and M6 salts, and the M8
//! dealing seed. Nothing else of the batch draws from the RNG, so the party's messages of the
//! batch are a deterministic function of its seed and of what it received.
//!
//! **Opening.** A batch that yields no modulus (no candidate survives the sieve, the public
//! trial division, the first repetition, the committed repetitions, or the gcd step) ends with
//! one more broadcast round, [`Round::BatchAudit`]: every party opens its seed. A seed that does
//! not hash to its M1 commitment names its party (`seed_opening_mismatch_is_named`).
//!
//! **Audit** ([`audit_batch`], run by every party live and by [`super::verify::replay`]). With
//! every seed open, everyone re-runs every party of the batch — the real state machine,
//! [`super::Party`], fed the re-derived direct messages and the broadcasts actually received —
//! and compares, round by round, each party's re-derived broadcast with the one it published.
//! The first party (in round order, then index order) whose broadcast differs is named. What
//! this covers:
//! * **Broadcasts** (M2, M4, M9 products and combinations, M5a/M6 commitments, M5b/M7 values,
//!   the share digests of M1, M3, M8): compared directly. A rushing party that waited for the
//!   honest values and shifted its own consistently with its own commitments — an M4 product, a
//!   biprimality value committed in M5a — is caught here, because the commitment too is
//!   re-derived (`candidate_killer_is_named`).
//! * **Direct messages** (the secret shares of M1, M3, M8): a dealer broadcast the digest of
//!   each one it sent, and the recipient checked the message against it on receipt. So the
//!   re-derived shares' digests, compared with the published ones, show publicly whether the
//!   dealer sent what its seed determines; nobody needs the recipients' copies.
//! * **What it reveals:** only the abandoned batch. Its candidates were all rejected and are
//!   never used again; the accepted batch's seed is never opened (that batch goes on to C1 and
//!   the key stage, whose randomness is drawn from the RNG, not from any seed), and every batch
//!   draws a fresh seed, so nothing of the accepted `p_i, q_i` is derived from an opened seed
//!   (`an_opened_seed_says_nothing_about_the_next_batch`).
//!
//! Cost: the audit runs every party's batch computation once more per party (`n` times the
//! per-party work of the batch); see docs/dkg.md ("Audit of rejected batches").

use std::collections::BTreeMap;
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::Zeroize;

use super::{blame, Message, Outgoing, Party, Round, Setup, Stats, Step};
use crate::error::{Error, Result};
use crate::hash::fingerprint;
use crate::keys::PartyIndex;

/// What a batch seed is used for; each use gets its own derived key.
#[derive(Clone, Copy, Debug)]
pub(super) enum Use {
    /// `p_i, q_i` of every candidate (M1).
    Candidates,
    /// The M1 dealing seed (sieve shares and masks).
    SieveDeal,
    /// The M3 integer polynomials of the sieve survivors.
    CandidatePolys,
    /// The M3 dealing seed (blinding record).
    CandidateDeal,
    /// The M5a salt.
    FirstSalt,
    /// The M6 salt.
    RepsSalt,
    /// The M8 dealing seed.
    GcdDeal,
}

impl Use {
    fn label(self) -> &'static [u8] {
        match self {
            Use::Candidates => b"medtech-threshold/v1/dkg/batch-seed/candidates",
            Use::SieveDeal => b"medtech-threshold/v1/dkg/batch-seed/m1-deal",
            Use::CandidatePolys => b"medtech-threshold/v1/dkg/batch-seed/m3-polys",
            Use::CandidateDeal => b"medtech-threshold/v1/dkg/batch-seed/m3-deal",
            Use::FirstSalt => b"medtech-threshold/v1/dkg/batch-seed/m5a-salt",
            Use::RepsSalt => b"medtech-threshold/v1/dkg/batch-seed/m6-salt",
            Use::GcdDeal => b"medtech-threshold/v1/dkg/batch-seed/m8-deal",
        }
    }
}

/// One party's seed for one batch. Wiped on drop; its `Debug` is redacted. (Boxed: it rides in
/// every round state of a batch.)
pub(super) struct BatchSeed(Box<SeedInner>);

struct SeedInner {
    seed: [u8; 32],
    /// Session, batch and party, bound into every derivation and the commitment.
    context: Vec<u8>,
}

fn context(setup: &Setup, batch: u32, me: PartyIndex) -> Vec<u8> {
    let mut c = setup.params.session.to_vec();
    c.extend_from_slice(&batch.to_be_bytes());
    c.extend_from_slice(&me.0.to_be_bytes());
    c
}

impl BatchSeed {
    /// A fresh seed from the RNG (never reused: one per batch).
    pub(super) fn fresh<R: RngCore + CryptoRng + ?Sized>(
        setup: &Setup,
        batch: u32,
        me: PartyIndex,
        rng: &mut R,
    ) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        BatchSeed::opened(setup, batch, me, seed)
    }

    /// The seed a party opened (for the audit).
    pub(super) fn opened(setup: &Setup, batch: u32, me: PartyIndex, seed: [u8; 32]) -> Self {
        BatchSeed(Box::new(SeedInner {
            seed,
            context: context(setup, batch, me),
        }))
    }

    /// 32 bytes for `use_`.
    pub(super) fn derive(&self, use_: Use) -> [u8; 32] {
        let mut data = self.0.context.clone();
        data.extend_from_slice(&self.0.seed);
        let out = fingerprint(use_.label(), &data);
        data.zeroize();
        out
    }

    /// A ChaCha20 stream for `use_`.
    pub(super) fn rng(&self, use_: Use) -> ChaCha20Rng {
        ChaCha20Rng::from_seed(self.derive(use_))
    }

    /// The hash commitment published in M1.
    pub(super) fn commitment(&self) -> [u8; 32] {
        let mut data = self.0.context.clone();
        data.extend_from_slice(&self.0.seed);
        let out = fingerprint(b"medtech-threshold/v1/dkg/batch-seed/commitment", &data);
        data.zeroize();
        out
    }

    /// The opening broadcast of a rejected batch.
    pub(super) fn open(&self, mut m: Message) -> Message {
        m.digest = Some(self.0.seed);
        m
    }
}

impl Drop for SeedInner {
    fn drop(&mut self) {
        self.seed.zeroize();
    }
}

impl core::fmt::Debug for BatchSeed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BatchSeed(<redacted>)")
    }
}

/// M1: every party's seed commitment (party order), from its M1 broadcast.
pub(super) fn seed_commitments(msgs: &[&Message]) -> Result<Vec<[u8; 32]>> {
    msgs.iter()
        .map(|m| {
            m.digest
                .ok_or_else(|| blame(m, "M1 broadcast without its batch-seed commitment"))
        })
        .collect()
}

/// Checks every opening (party order) against its M1 commitment, naming a party whose opening
/// is malformed or does not match; returns the seeds.
pub(super) fn open_seeds(
    setup: &Setup,
    batch: u32,
    commitments: &[[u8; 32]],
    openings: &[&Message],
) -> Result<Vec<[u8; 32]>> {
    openings
        .iter()
        .zip(commitments)
        .map(|(m, c)| {
            let Some(seed) = m.digest.filter(|_| m.small.is_empty() && m.ints.is_empty()) else {
                return Err(blame(m, "expected a batch-seed opening and nothing else"));
            };
            if BatchSeed::opened(setup, batch, m.from, seed).commitment() != *c {
                return Err(blame(
                    m,
                    "batch-seed opening does not match its M1 commitment",
                ));
            }
            Ok(seed)
        })
        .collect()
}

/// The audit of rejected batch `batch`: `log` holds every broadcast of the batch up to the
/// rejection, keyed by `(round, sender)`; `seeds` every party's opened seed (checked by
/// [`open_seeds`]). Re-runs every party from its seed and names the first whose published
/// broadcast differs from its re-derived one. `Ok` means every party followed the protocol in
/// this batch: its rejection was deserved.
pub(super) fn audit_batch(
    setup: &Arc<Setup>,
    batch: u32,
    seeds: &[[u8; 32]],
    log: &BTreeMap<(Round, u16), &Message>,
) -> Result<()> {
    // The RNG the re-run parties get: nothing of a batch may draw from it (everything comes
    // from the seed), so its value is irrelevant; the accepted path (C1), which does draw from
    // it, is never reached in a rejected batch.
    let mut unused = ChaCha20Rng::from_seed([0u8; 32]);
    let mut parties = Vec::with_capacity(seeds.len());
    let mut outgoing = Vec::with_capacity(seeds.len());
    for (i, seed) in seeds.iter().enumerate() {
        let me = PartyIndex(i as u16 + 1);
        let seed = BatchSeed::opened(setup, batch, me, *seed);
        let mut stats = Stats::default();
        let (state, out) = super::modulus::start_batch(setup, me, batch, &mut stats, seed);
        parties.push(Party {
            setup: setup.clone(),
            me,
            state,
            stats,
            log: Vec::new(),
            live: false,
        });
        outgoing.push(out);
    }
    loop {
        let round = parties.first().map(Party::round);
        let Some(round) = round else {
            return Ok(());
        };
        let sent: Option<Round> = outgoing
            .iter()
            .find_map(|o: &Outgoing| o.broadcast.as_ref().map(|m| m.round));
        let Some(sent) = sent else {
            return Err(Error::KeyGenerationFailed(
                "batch audit: the re-run parties sent nothing".into(),
            ));
        };
        if sent == Round::BatchAudit {
            // Every party re-derived the rejection; each one's opening is its seed.
            return Ok(());
        }
        // Compare every party's re-derived broadcast of round `sent` with the published one.
        for out in &outgoing {
            let Some(mine) = &out.broadcast else { continue };
            match log.get(&(sent, mine.from.0)) {
                Some(published) if *published == mine => {}
                Some(published) => {
                    return Err(blame(
                        published,
                        format!(
                            "batch audit of batch {batch}: its broadcast is not what its opened \
                             seed and the messages it received determine"
                        ),
                    ))
                }
                None => {
                    return Err(Error::Misbehaviour {
                        party: mine.from,
                        round: sent,
                        reason: format!("batch audit of batch {batch}: no broadcast published"),
                    })
                }
            }
        }
        // Deliver: the (identical) broadcasts and the re-derived direct messages.
        let n = parties.len();
        let broadcasts: Vec<Message> = outgoing
            .iter_mut()
            .filter_map(|o| o.broadcast.take())
            .collect();
        let mut inboxes: Vec<Vec<Message>> = (0..n).map(|_| broadcasts.clone()).collect();
        for out in outgoing.drain(..) {
            for d in out.direct {
                if let Some(to) = d.to.map(|p| usize::from(p.0)) {
                    if (1..=n).contains(&to) {
                        inboxes[to - 1].push(d);
                    }
                }
            }
        }
        let mut next = Vec::with_capacity(n);
        for (p, inbox) in parties.drain(..).zip(inboxes) {
            debug_assert_eq!(p.round(), round);
            match p.receive(inbox, &mut unused)? {
                Step::Continue(p, out) => {
                    next.push(*p);
                    outgoing.push(out);
                }
                Step::Done(_) => {
                    return Err(Error::KeyGenerationFailed(
                        "batch audit: a re-run party finished the generation".into(),
                    ))
                }
            }
        }
        if next
            .iter()
            .any(|p| p.batch() != batch || !(p.state.in_batch() || p.round() == Round::BatchAudit))
        {
            return Err(Error::KeyGenerationFailed(format!(
                "batch audit: the re-run of batch {batch} left the batch without a rejection"
            )));
        }
        parties = next;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::super::key::hooks;
    use super::super::sim::run_in_process;
    use super::super::verify::replay;
    use super::super::{Message, Parameters, Round, Setup};
    use super::BatchSeed;
    use crate::error::Error;
    use crate::keys::PartyIndex;

    fn params(session: u8) -> Parameters {
        Parameters::new(512, 3, 2, [session; 32])
            .unwrap()
            .insecure_with_biprime_reps_for_tests(24)
            .unwrap()
    }

    fn rngs(seed: u64) -> Vec<ChaCha20Rng> {
        (0..3)
            .map(|k| ChaCha20Rng::seed_from_u64(seed + k))
            .collect()
    }

    fn hook(session: u8) -> hooks::Hook {
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

    fn audited(broadcasts: &[Message]) -> Vec<u32> {
        let mut b: Vec<u32> = broadcasts
            .iter()
            .filter(|m| m.round == Round::BatchAudit)
            .map(|m| m.batch)
            .collect();
        b.dedup();
        b
    }

    fn assert_audit_named(e: &Error, party: u16, round: Round) {
        assert!(
            matches!(e, Error::Misbehaviour { party: p, round: r, reason }
                if *p == PartyIndex(party) && *r == round && reason.contains("batch audit")),
            "{e:?}"
        );
    }

    /// Honest runs: every rejected batch is opened and audited and nobody is named; the
    /// accepted batch's seed is never opened (no opening in its batch), every opened seed is
    /// distinct, and the transcript verifier re-runs the same audits. With batches of 8
    /// candidates, all 64 batches are rejected — at the sieve, the public trial division and
    /// the first repetition — each audited, and the run ends with no key and no culprit.
    #[test]
    fn honest_rejected_batches_name_nobody() {
        let honest = params(50);
        // The first of these seeds whose run rejects a batch before it accepts one (a batch
        // succeeds with probability ≈ 0.4 at these sizes).
        let run = (5000..5008)
            .map(|seed| run_in_process(&honest, rngs(seed * 10), None).unwrap())
            .find(|run| !audited(&run.broadcasts).is_empty())
            .expect("a run with a rejected batch");
        let batches = audited(&run.broadcasts);
        let last = run.broadcasts.iter().map(|m| m.batch).max().unwrap();
        assert!(
            !batches.contains(&last),
            "the accepted batch is never opened"
        );
        let openings: Vec<[u8; 32]> = run
            .broadcasts
            .iter()
            .filter(|m| m.round == Round::BatchAudit)
            .map(|m| m.digest.unwrap())
            .collect();
        let mut distinct = openings.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), openings.len());
        assert_eq!(replay(&honest, &run.broadcasts).unwrap().batches, last + 1);

        let small = params(51).with_batch(8).unwrap();
        let mut seen: Vec<Message> = Vec::new();
        let mut record = |m: &mut Message| {
            if m.to.is_none() {
                seen.push(m.clone());
            }
        };
        let e = run_in_process(&small, rngs(5100), Some(&mut record)).unwrap_err();
        assert!(
            e.culprits().is_empty()
                && matches!(&e, Error::KeyGenerationFailed(r) if r.contains("batches")),
            "{e:?}"
        );
        assert_eq!(audited(&seen).len(), super::super::MAX_BATCHES as usize);
        for stage in [
            Round::SieveProducts,
            Round::ModulusShares,
            Round::BiprimeFirst,
        ] {
            assert!(
                seen.iter().any(|m| m.round == stage
                    && seen.iter().any(|a| a.round == Round::BatchAudit
                        && a.batch == m.batch
                        && !seen.iter().any(|x| x.batch == m.batch
                            && x.round > stage
                            && x.round != Round::BatchAudit))),
                "some batch was rejected at {stage:?}"
            );
        }
    }

    /// Measurement for docs/dkg.md (run with `--ignored --nocapture`): wall time per phase of
    /// in-process runs (all parties in one process) that reject batches, the audit included.
    #[test]
    #[ignore = "timing measurement"]
    fn measure_audit_cost() {
        for (bits, n, t, seed) in [(512u32, 3u16, 2u16, 60u64), (1024, 5, 3, 61)] {
            let p = Parameters::new(bits, n, t, [seed as u8; 32])
                .unwrap()
                .insecure_with_biprime_reps_for_tests(24)
                .unwrap();
            let rngs = (0..u64::from(n))
                .map(|k| ChaCha20Rng::seed_from_u64(seed * 100 + k))
                .collect();
            let run = run_in_process(&p, rngs, None).unwrap();
            let times: Vec<String> = run
                .phase_time
                .iter()
                .map(|(ph, d)| format!("{} {:.2} s", ph.name(), d.as_secs_f64()))
                .collect();
            println!(
                "{bits} bits, n = {n}: {} batches ({} audited), {:.2} s: {}",
                run.outputs[0].stats.batches,
                audited(&run.broadcasts).len(),
                run.elapsed.as_secs_f64(),
                times.join(", ")
            );
        }
    }

    /// A rushing candidate killer, consistent with its own commitments, is named by the audit
    /// of the batch it killed — live, by every party, and by the transcript verifier: (a)
    /// product party 2 adds `4Δ³` to every M4 value it publishes (opening `N + 4λ'₂` instead of
    /// `N`: still `≡ 1 mod 4`, never a biprime); (b) party 3 multiplies every first-repetition
    /// value by the public base before committing to it in M5a, so its M5b opening matches its
    /// commitment and every candidate fails the test. Before the audit both runs simply went on
    /// to the next batch with nobody named.
    #[test]
    fn candidate_killer_is_named() {
        let params_a = params(52);
        let setup = Setup::new(&params_a);
        let shift = setup.delta.mul(&setup.delta).mul(&setup.delta).mul_u64(4);
        let n2 = 2 * usize::from(setup.n);
        let mut seen: Vec<Message> = Vec::new();
        let mut kill = |m: &mut Message| {
            if m.round == Round::ModulusShares && m.from == PartyIndex(2) && m.to.is_none() {
                let count = m.ints.len() - n2;
                for y in &mut m.ints[..count] {
                    *y = y.add(&shift);
                }
            }
            if m.to.is_none() {
                seen.push(m.clone());
            }
        };
        let e = run_in_process(&params_a, rngs(5200), Some(&mut kill)).unwrap_err();
        assert_audit_named(&e, 2, Round::ModulusShares);
        let e = replay(&params_a, &seen).unwrap_err();
        assert_audit_named(&e, 2, Round::ModulusShares);

        hooks::set(hooks::Hook {
            kill_biprime_party: 3,
            ..hook(53)
        });
        let mut seen: Vec<Message> = Vec::new();
        let mut record = |m: &mut Message| {
            if m.to.is_none() {
                seen.push(m.clone());
            }
        };
        let e = run_in_process(&params(53), rngs(5300), Some(&mut record)).unwrap_err();
        assert_audit_named(&e, 3, Round::BiprimeFirstCommit);
        let e = replay(&params(53), &seen).unwrap_err();
        assert_audit_named(&e, 3, Round::BiprimeFirstCommit);
    }

    /// An opened seed must be the one committed in M1, and must be the one the party's messages
    /// came from: (a) party 2 opens a seed with one bit flipped — named by every party for an
    /// opening that does not match its commitment; (b) party 2 commits in M1 to, and opens, a
    /// seed other than the one its shares came from — the opening matches, and the audit names
    /// it at M1 (its share digests are not what the seed determines). The verifier agrees.
    #[test]
    fn seed_opening_mismatch_is_named() {
        let small = params(54).with_batch(8).unwrap();
        let mut seen: Vec<Message> = Vec::new();
        let mut flip = |m: &mut Message| {
            if m.round == Round::BatchAudit && m.from == PartyIndex(2) {
                if let Some(d) = m.digest.as_mut() {
                    d[0] ^= 1;
                }
            }
            if m.to.is_none() {
                seen.push(m.clone());
            }
        };
        let e = run_in_process(&small, rngs(5400), Some(&mut flip)).unwrap_err();
        let named = |e: &Error, round: Round, what: &str| {
            matches!(e, Error::Misbehaviour { party: PartyIndex(2), round: r, reason }
                if *r == round && reason.contains(what))
        };
        assert!(named(&e, Round::BatchAudit, "M1 commitment"), "{e:?}");
        let e = replay(&small, &seen).unwrap_err();
        assert!(named(&e, Round::BatchAudit, "M1 commitment"), "{e:?}");

        let small = params(55).with_batch(8).unwrap();
        let setup = Setup::new(&small);
        let other = BatchSeed::opened(&setup, 0, PartyIndex(2), [7u8; 32]);
        let mut seen: Vec<Message> = Vec::new();
        let mut swap = |m: &mut Message| {
            if m.from == PartyIndex(2) && m.batch == 0 && m.to.is_none() {
                match m.round {
                    Round::SieveShares => m.digest = Some(other.commitment()),
                    Round::BatchAudit => m.digest = Some([7u8; 32]),
                    _ => {}
                }
            }
            if m.to.is_none() {
                seen.push(m.clone());
            }
        };
        let e = run_in_process(&small, rngs(5500), Some(&mut swap)).unwrap_err();
        assert_audit_named(&e, 2, Round::SieveShares);
        let e = replay(&small, &seen).unwrap_err();
        assert_audit_named(&e, 2, Round::SieveShares);
    }
}
