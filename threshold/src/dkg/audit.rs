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
//! every seed open, everyone first re-derives every other party's M1 broadcast from its seed
//! (share digests and seed commitment) and names the first that differs — so the opened seeds
//! are the ones the batch's candidates were dealt from. Then the **clear check**: candidate `c`
//! of the batch is `p = Σ p_i`, `q = Σ q_i`, known to all; if every candidate has `p` or `q`
//! provably composite (a factor below 2000, or failing the strong probable-prime test to base
//! 2 — deterministic, so everyone and the verifier agree), an honest run would have rejected
//! the batch too: the rejection was deserved and nobody is re-run or named, whatever anyone did
//! after M1 (`killing_only_bad_candidates_is_not_named`). Only if some candidate has `p` and `q`
//! both (probably) prime — a batch an honest run accepts, bar negligible events — everyone
//! re-runs every party of the batch — the real state machine, [`super::Party`], fed the
//! re-derived direct messages and the broadcasts actually received — and compares, round by
//! round, each party's re-derived broadcast with the one it published. The first party (in
//! round order, then index order) whose broadcast differs is named. What the re-run covers:
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
//!   (`honest_rejected_batches_name_nobody` checks that the accepted batch publishes no
//!   opening and that all openings differ).
//!
//! Cost: the other `n − 1` parties' M1 dealings (one held at a time) and the clear check per
//! rejected batch; the re-run (every party's batch computation once more per party) only when
//! a good candidate was rejected; see docs/dkg.md ("Audit of rejected batches").

use std::collections::BTreeMap;
use std::sync::Arc;

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::Zeroize;

use super::{blame, Message, Outgoing, Party, Round, Setup, Stats, Step};
use crate::bigint::Int;
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
        let out = BatchSeed::opened(setup, batch, me, seed);
        seed.zeroize();
        out
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

/// How a rejected batch's audit ended (when it named nobody).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Audited {
    /// Every candidate of the batch has `p` or `q` composite in the clear: the rejection was
    /// deserved whatever anyone did after M1, so nobody was re-run.
    Deserved,
    /// Some candidate had `p` and `q` both (probably) prime: every party was re-run and every
    /// published broadcast was what its seed determines.
    ReRun,
}

/// Test switch for the measurement and the before/after comparison: sessions whose audits
/// always re-run every party (the audit of commit 615970b).
#[cfg(test)]
pub(super) static FORCE_RERUN: std::sync::Mutex<Vec<[u8; 32]>> = std::sync::Mutex::new(Vec::new());

/// Small primes the clear check divides by before its Miller–Rabin round.
const TRIAL_LIMIT: usize = 2000;

/// The primes below [`TRIAL_LIMIT`], packed into products below `2^64` so that one
/// remainder of a big integer serves several primes.
pub(super) struct SmallPrimes(Vec<(u64, Vec<u64>)>);

impl SmallPrimes {
    pub(super) fn new() -> Self {
        let mut groups: Vec<(u64, Vec<u64>)> = Vec::new();
        for l in crate::keys::primes_below(TRIAL_LIMIT) {
            match groups.last_mut() {
                Some((prod, ls)) if prod.checked_mul(l).is_some() => {
                    *prod *= l;
                    ls.push(l);
                }
                _ => groups.push((l, vec![l])),
            }
        }
        SmallPrimes(groups)
    }
}

/// Trial division of `x ≥ 2` by the primes below [`TRIAL_LIMIT`]: `Some(is_prime)` when it
/// decides (`x` has a small prime factor: prime iff `x` is that factor), `None` when `x` has no
/// factor below the limit.
fn trial_division(x: &Int, primes: &SmallPrimes) -> Option<bool> {
    for (prod, ls) in &primes.0 {
        let r = x.rem_u64(*prod);
        if let Some(&l) = ls.iter().find(|&&l| r.is_multiple_of(l)) {
            return Some(*x == Int::from_u64(l));
        }
    }
    None
}

/// The strong probable-prime test to base 2 of an odd `x > 2` with no small factor.
fn strong_probable_prime_base_2(x: &Int) -> bool {
    // x − 1 = d·2^s with d odd.
    let minus_one = x.sub(&Int::one());
    let (mut d, mut s) = (minus_one.clone(), 0usize);
    while !d.is_odd() {
        d = d.shr(1);
        s += 1;
    }
    let mut y = Int::from_u64(2).pow_mod(&d, x);
    if y == Int::one() || y == minus_one {
        return true;
    }
    for _ in 1..s {
        y = y.mul_mod(&y, x);
        if y == minus_one {
            return true;
        }
    }
    false
}

/// Whether `x` may be prime: `false` only with a proof that it is not (a prime factor below
/// [`TRIAL_LIMIT`] other than `x`, or `x` failing the strong probable-prime test to base 2).
/// Deterministic (fixed base, no randomness, no library heuristics), so every party and the
/// verifier get the same answer; a composite it lets through only costs a re-run.
pub(super) fn may_be_prime(x: &Int, primes: &SmallPrimes) -> bool {
    if *x < Int::from_u64(2) {
        return false;
    }
    trial_division(x, primes).unwrap_or_else(|| strong_probable_prime_base_2(x))
}

/// The clear check: with every seed open, candidate `c` of the batch is `p = Σ p_i`,
/// `q = Σ q_i` over the parties' seed-derived candidates (`all`, party order). True if some
/// candidate has `p` and `q` both (probably) prime — one an honest run accepts, bar negligible
/// events — so its rejection needs the re-run to find who caused it.
fn some_candidate_is_good(all: &[&[super::modulus::Candidate]]) -> bool {
    let k = all.first().map_or(0, |c| c.len());
    if all.iter().any(|c| c.len() != k) {
        return true;
    }
    let primes = SmallPrimes::new();
    (0..k).any(|c| {
        let sum = |pick: fn(&super::modulus::Candidate) -> &Int| {
            all.iter()
                .fold(Int::zero(), |acc, cands| acc.add(pick(&cands[c])))
        };
        // Cheapest first: both trial divisions (most candidates end here), then the modular
        // exponentiations, `q`'s only when `p` passed. At 2048 bits this runs the exponentiation
        // for ~2 % of the pairs instead of the ~15 % whose `p` alone passes trial division.
        let (p, q) = (sum(|x| x.p.expose()), sum(|x| x.q.expose()));
        let passes = |x: &Int| *x >= Int::from_u64(2) && trial_division(x, &primes) != Some(false);
        passes(&p) && passes(&q) && may_be_prime(&p, &primes) && may_be_prime(&q, &primes)
    })
}

/// Names the first party (index order) whose re-derived broadcast of round `sent` is not the
/// one it published.
fn compare(
    batch: u32,
    sent: Round,
    outgoing: &[Outgoing],
    log: &BTreeMap<(Round, u16), &Message>,
) -> Result<()> {
    for out in outgoing {
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
            // A live party received every broadcast of a round before it moved on, so a gap is
            // an incomplete log (a transcript that keeps the round by hash only): nobody can
            // be named from it.
            None => {
                return Err(Error::KeyGenerationFailed(format!(
                    "batch audit of batch {batch}: the log lacks party {}'s {sent:?} broadcast; \
                     the audit needs every broadcast of a rejected batch",
                    mine.from.0
                )))
            }
        }
    }
    Ok(())
}

/// The audit of rejected batch `batch`: `log` holds every broadcast of the batch up to the
/// rejection, keyed by `(round, sender)`; `seeds` every party's opened seed (checked by
/// [`open_seeds`]); `skip` the auditing party itself, if it is one (its own M1 is what it sent,
/// so only its candidates are re-derived; the transcript verifier passes `None`). First: every
/// other party's M1 broadcast (share digests and seed commitment) is re-derived from its seed
/// and compared, naming the first that differs; then
/// the clear check ([`some_candidate_is_good`]): if every candidate has `p` or `q` composite,
/// the rejection was deserved and the audit ends ([`Audited::Deserved`]). Otherwise every party
/// is re-run from its seed and the first whose published broadcast differs from its
/// re-derived one is named; `Ok(Audited::ReRun)` means every party followed the protocol.
pub(super) fn audit_batch(
    setup: &Arc<Setup>,
    batch: u32,
    seeds: &[[u8; 32]],
    log: &BTreeMap<(Round, u16), &Message>,
    skip: Option<PartyIndex>,
) -> Result<Audited> {
    // The RNG the re-run parties get: nothing of a batch may draw from it (everything comes
    // from the seed), so its value is irrelevant; the accepted path (C1), which does draw from
    // it, is never reached in a rejected batch.
    let mut unused = ChaCha20Rng::from_seed([0u8; 32]);
    let start = |i: usize| {
        let me = PartyIndex(i as u16 + 1);
        let seed = BatchSeed::opened(setup, batch, me, seeds[i]);
        let mut stats = Stats::default();
        let (state, out) = super::modulus::start_batch(setup, me, batch, &mut stats, seed);
        let party = Party {
            setup: setup.clone(),
            me,
            state,
            stats,
            log: Vec::new(),
            live: false,
        };
        (party, out)
    };
    // M1 (sampling and the sieve dealing) binds each opened seed to the candidates its party
    // dealt. It comes before the clear check: a killer that dealt candidates other than its
    // seed's would otherwise pass a clear check of its seed's candidates unnamed. The auditing
    // party's own M1 is what it sent: only its candidates are re-derived. One dealing at a
    // time (a dealing is megabytes per recipient at 2048 bits): only the candidates are kept.
    let mut all: Vec<Vec<super::modulus::Candidate>> = Vec::with_capacity(seeds.len());
    for (i, opened) in seeds.iter().enumerate() {
        let me = PartyIndex(i as u16 + 1);
        if skip == Some(me) {
            let seed = BatchSeed::opened(setup, batch, me, *opened);
            all.push(super::modulus::sample_candidates(setup, me, &seed));
            continue;
        }
        let (party, out) = start(i);
        let m1 = Outgoing {
            broadcast: out.broadcast,
            direct: Vec::new(),
        };
        compare(batch, Round::SieveShares, std::slice::from_ref(&m1), log)?;
        match party.state {
            super::State::Sieve(s) => all.push(s.into_candidates()),
            // A party just started is at M1; were it not, the clear check re-runs (the
            // lengths differ), which is always safe.
            _ => all.push(Vec::new()),
        }
    }
    #[cfg(test)]
    let forced = FORCE_RERUN
        .lock()
        .map(|s| s.contains(&setup.params.session))
        .unwrap_or(false);
    #[cfg(not(test))]
    let forced = false;
    let all_refs: Vec<&[super::modulus::Candidate]> = all.iter().map(Vec::as_slice).collect();
    if !forced && !some_candidate_is_good(&all_refs) {
        return Ok(Audited::Deserved);
    }
    drop(all_refs);
    drop(all);
    // The re-run (rare: a good candidate was rejected) starts every party again. Its M1
    // direct messages are megabytes each at 2048 bits (≈ 7.9 MB: K records of every sieve
    // group), `n²` of them: held at once they cost ≈ 200 MB per auditing party at n = 5 (and
    // 2 GB at n = 16), enough to bring down a host sized for an honest run — and leave the
    // killer unnamed. So M1 is delivered one recipient at a time: for each recipient, every
    // dealer's dealing is re-derived and only the message to that recipient kept (`n` times
    // the dealing work, in this rare path, for `1/n` of the memory).
    let n = seeds.len();
    let mut parties = Vec::with_capacity(n);
    let mut m1 = Vec::with_capacity(n);
    for i in 0..n {
        let (party, out) = start(i);
        parties.push(party);
        m1.push(Outgoing {
            broadcast: out.broadcast,
            direct: Vec::new(),
        });
    }
    compare(batch, Round::SieveShares, &m1, log)?;
    let broadcasts: Vec<Message> = m1.into_iter().filter_map(|o| o.broadcast).collect();
    let mut outgoing = Vec::with_capacity(n);
    let mut next = Vec::with_capacity(n);
    for (j, p) in parties.into_iter().enumerate() {
        let to = Some(PartyIndex(j as u16 + 1));
        let mut inbox = broadcasts.clone();
        for i in 0..n {
            inbox.extend(start(i).1.direct.into_iter().filter(|d| d.to == to));
        }
        let (p, out) = rerun_step(p, inbox, &mut unused)?;
        next.push(p);
        outgoing.push(out);
    }
    left_the_batch(&next, batch)?;
    let mut parties = next;
    loop {
        let round = parties.first().map(Party::round);
        let Some(round) = round else {
            return Ok(Audited::ReRun);
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
            return Ok(Audited::ReRun);
        }
        // Compare every party's re-derived broadcast of round `sent` with the published one.
        compare(batch, sent, &outgoing, log)?;
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
            let (p, out) = rerun_step(p, inbox, &mut unused)?;
            next.push(p);
            outgoing.push(out);
        }
        left_the_batch(&next, batch)?;
        parties = next;
    }
}

/// One round of a re-run party: it must go on (a batch's re-run never finishes the generation).
fn rerun_step<R: RngCore + CryptoRng + ?Sized>(
    p: Party,
    inbox: Vec<Message>,
    rng: &mut R,
) -> Result<(Party, Outgoing)> {
    match p.receive(inbox, rng)? {
        Step::Continue(p, out) => Ok((*p, out)),
        Step::Done(_) => Err(Error::KeyGenerationFailed(
            "batch audit: a re-run party finished the generation".into(),
        )),
    }
}

/// Refuses a re-run whose parties left batch `batch` other than by rejecting it.
fn left_the_batch(parties: &[Party], batch: u32) -> Result<()> {
    if parties
        .iter()
        .any(|p| p.batch() != batch || !(p.state.in_batch() || p.round() == Round::BatchAudit))
    {
        return Err(Error::KeyGenerationFailed(format!(
            "batch audit: the re-run of batch {batch} left the batch without a rejection"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::super::fixtures::{hook, params, rngs, M4Killer};
    use super::super::key::hooks;
    use super::super::sim::run_in_process;
    use super::super::verify::replay;
    use super::super::{Message, Parameters, Round, Setup};
    use super::BatchSeed;
    use crate::error::Error;
    use crate::keys::PartyIndex;

    /// Party `auditor`'s audit of rejected batch `batch` from recorded broadcasts, as the live
    /// party runs it: the openings against the M1 commitments, then `audit_batch`.
    fn audit_recorded(
        setup: &std::sync::Arc<Setup>,
        batch: u32,
        broadcasts: &[Message],
        auditor: PartyIndex,
    ) -> crate::error::Result<super::Audited> {
        let of = |round: Round| -> Vec<&Message> {
            broadcasts
                .iter()
                .filter(|m| m.batch == batch && m.round == round)
                .collect()
        };
        let commitments = super::seed_commitments(&of(Round::SieveShares))?;
        let seeds = super::open_seeds(setup, batch, &commitments, &of(Round::BatchAudit))?;
        let log: std::collections::BTreeMap<(Round, u16), &Message> = broadcasts
            .iter()
            .filter(|m| m.batch == batch && m.round != Round::BatchAudit)
            .map(|m| ((m.round, m.from.0), m))
            .collect();
        super::audit_batch(setup, batch, &seeds, &log, Some(auditor))
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
        // Every candidate of an honest rejected batch has p or q composite: the clear check
        // settles each audit, nobody is re-run.
        for out in &run.outputs {
            assert_eq!(out.stats.audit_reruns, 0);
        }

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

    /// The re-run's own path, every round of it, on honest batches: with every audit of this
    /// session forced to re-run every party from its opened seed (as an audit does when a good
    /// candidate was rejected), an honest run that rejects batches names nobody — every
    /// re-derived broadcast (products, salts, commitments, repetitions, digests) equals the
    /// published one — and ends with the honest run's key. A non-deterministic draw in any
    /// round of a batch (one that did not come from the seed) would name an honest party here.
    #[test]
    fn forced_rerun_of_honest_rejections_names_nobody() {
        let p = params(58);
        // The first of these seeds whose honest run rejects a batch before it accepts one.
        let (seed, honest) = (5800..5810)
            .map(|seed| (seed, run_in_process(&p, rngs(seed * 10), None).unwrap()))
            .find(|(_, run)| run.outputs[0].stats.batches > 1)
            .expect("a run with a rejected batch");
        super::FORCE_RERUN.lock().unwrap().push([58u8; 32]);
        let run = run_in_process(&p, rngs(seed * 10), None).unwrap();
        super::FORCE_RERUN
            .lock()
            .unwrap()
            .retain(|s| *s != [58u8; 32]);
        assert!(run.outputs.iter().all(|o| o.stats.audit_reruns > 0));
        assert_eq!(
            run.outputs[0].key.fingerprint(),
            honest.outputs[0].key.fingerprint()
        );
    }

    /// Measurement for docs/dkg.md (run with `--ignored --nocapture`): in-process runs (all
    /// parties in one process) that reject batches, each run twice in a row from the same
    /// seeds — once with every audit forced to re-run every party (the audit of 615970b), once
    /// with the clear check — printing the audit's wall time per rejected batch and the batch's.
    #[test]
    #[ignore = "timing measurement"]
    fn measure_audit_cost() {
        for (bits, n, t, seed, runs) in [(512u32, 3u16, 2u16, 60u64, 4u64), (1024, 5, 3, 62, 2)] {
            let p = Parameters::new(bits, n, t, [seed as u8; 32])
                .unwrap()
                .insecure_with_biprime_reps_for_tests(24)
                .unwrap();
            for forced in [true, false] {
                if forced {
                    super::FORCE_RERUN.lock().unwrap().push([seed as u8; 32]);
                } else {
                    super::FORCE_RERUN.lock().unwrap().clear();
                }
                let (mut batches, mut rejected, mut reruns) = (0u32, 0usize, 0u32);
                let (mut batch_time, mut audit_time, mut single) = (0f64, 0f64, 0f64);
                for r in 0..runs {
                    let rngs = (0..u64::from(n))
                        .map(|k| ChaCha20Rng::seed_from_u64(seed * 100 + 10 * r + k))
                        .collect();
                    let run = run_in_process(&p, rngs, None).unwrap();
                    // One party's audit of each rejected batch, timed alone (one thread).
                    let setup = Setup::new(&p);
                    for b in audited(&run.broadcasts) {
                        let t0 = std::time::Instant::now();
                        audit_recorded(&setup, b, &run.broadcasts, PartyIndex(1)).unwrap();
                        single += t0.elapsed().as_secs_f64();
                    }
                    batches += run.outputs[0].stats.batches;
                    rejected += audited(&run.broadcasts).len();
                    reruns += run.outputs[0].stats.audit_reruns;
                    for (ph, d) in &run.phase_time {
                        match ph.name() {
                            "sieve" | "modulus" | "biprimality" | "gcd" => {
                                batch_time += d.as_secs_f64()
                            }
                            "audit" => audit_time += d.as_secs_f64(),
                            _ => {}
                        }
                    }
                }
                println!(
                    "{bits} bits, n = {n}, {}: {batches} batches ({rejected} rejected, {reruns} \
                     re-run); wall: batch {:.3} s each, audit phase {:.3} s per rejected batch \
                     (the audit phase includes starting the next batch); one party's \
                     audit_batch alone: {:.3} s per rejected batch",
                    if forced {
                        "re-run always"
                    } else {
                        "clear check"
                    },
                    batch_time / f64::from(batches),
                    audit_time / rejected.max(1) as f64,
                    single / rejected.max(1) as f64,
                );
            }
        }
    }

    /// Measurement for docs/dkg.md (run with `--release --ignored --nocapture`): the pieces of
    /// one party's audit of one rejected batch at 2048 bits, n = 5 — the `n` M1
    /// re-derivations and the clear check — on one thread, beside the modexp baseline.
    #[test]
    #[ignore = "timing measurement"]
    fn measure_audit_pieces_2048() {
        let p = Parameters::new(2048, 5, 3, [90u8; 32]).unwrap();
        let setup = Setup::new(&p);
        let mut rng = ChaCha20Rng::seed_from_u64(90);
        let t0 = std::time::Instant::now();
        let mut parties = Vec::new();
        for i in 1..=5u16 {
            let seed = BatchSeed::fresh(&setup, 0, PartyIndex(i), &mut rng);
            let mut stats = super::super::Stats::default();
            let (state, _out) =
                super::super::modulus::start_batch(&setup, PartyIndex(i), 0, &mut stats, seed);
            parties.push(super::super::Party {
                setup: setup.clone(),
                me: PartyIndex(i),
                state,
                stats,
                log: Vec::new(),
                live: false,
            });
        }
        let m1 = t0.elapsed();
        let t1 = std::time::Instant::now();
        let all: Vec<&[super::super::modulus::Candidate]> = parties
            .iter()
            .map(|p| match &p.state {
                super::super::State::Sieve(s) => s.candidates(),
                _ => &[],
            })
            .collect();
        let good = super::some_candidate_is_good(&all);
        let clear = t1.elapsed();
        println!(
            "2048 bits, n = 5, K = {}: 5 M1 re-derivations {:.3} s, clear check {:.3} s \
             (good candidate: {good}); modexp baseline {:.2} ms",
            setup.params.batch,
            m1.as_secs_f64(),
            clear.as_secs_f64(),
            {
                let mut rng = ChaCha20Rng::seed_from_u64(7);
                let b =
                    crate::bench_support::ModexpBaseline::with_modulus_bits(4096, 2048, &mut rng);
                let start = std::time::Instant::now();
                for _ in 0..15 {
                    std::hint::black_box(b.run());
                }
                start.elapsed().as_secs_f64() * 1000.0 / 15.0
            }
        );
    }

    /// Measurement for docs/dkg.md (run with `--release --ignored --nocapture`): the memory of
    /// one party's *re-run* audit at 2048 bits, n = 5. Party 2 shifts its M4 values in batch 0;
    /// every audit of the session is forced to re-run, so the run ends at batch 0's audit
    /// with party 2 named. Then one party's `audit_batch` of that batch runs alone, with the
    /// process's peak resident set reset just before (`/proc/self/clear_refs`).
    #[test]
    #[ignore = "memory measurement, 2048 bits"]
    fn measure_rerun_memory_2048() {
        let p = Parameters::new(2048, 5, 3, [91u8; 32]).unwrap();
        let setup = Setup::new(&p);
        let killer = M4Killer::new(&p, 2, None);
        super::FORCE_RERUN.lock().unwrap().push([91u8; 32]);
        let mut seen: Vec<Message> = Vec::new();
        let mut kill = |m: &mut Message| {
            killer.apply(m);
            if m.to.is_none() {
                seen.push(m.clone());
            }
        };
        let rngs = (0..5u64)
            .map(|k| ChaCha20Rng::seed_from_u64(9100 + k))
            .collect();
        let e = run_in_process(&p, rngs, Some(&mut kill)).unwrap_err();
        assert_audit_named(&e, 2, Round::ModulusShares);
        // A field of /proc/self/status ("VmHWM", "VmRSS"), in MiB.
        let status_mib = |field: &str| {
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .map(|v| v.trim().trim_end_matches(" kB").parse::<f64>().unwrap() / 1024.0)
                .unwrap()
        };
        std::fs::write("/proc/self/clear_refs", "5").unwrap();
        let base = status_mib("VmRSS");
        let t0 = std::time::Instant::now();
        let e = audit_recorded(&setup, 0, &seen, PartyIndex(1)).unwrap_err();
        let took = t0.elapsed();
        assert_audit_named(&e, 2, Round::ModulusShares);
        println!(
            "2048 bits, n = 5, K = {}: one party's forced re-run audit {:.2} s, peak RSS {:.0} MiB \
             over a {:.0} MiB base ({:.0} MiB added)",
            setup.params.batch,
            took.as_secs_f64(),
            status_mib("VmHWM"),
            base,
            status_mib("VmHWM") - base
        );
    }

    /// The clear check's primality test never calls a prime composite (that would let a
    /// killed good candidate pass as deserved): it agrees with GMP's BPSW + Miller–Rabin on
    /// 4000 random integers of 40–300 bits and on small and known cases.
    #[test]
    fn clear_check_never_calls_a_prime_composite() {
        let primes = super::SmallPrimes::new();
        let mut rng = ChaCha20Rng::seed_from_u64(57);
        for i in 0..4000usize {
            let x = crate::bigint::Int::random_bits(&mut rng, 40 + i % 261);
            assert_eq!(
                super::may_be_prime(&x, &primes),
                x.is_probable_prime(30),
                "{x:?}"
            );
        }
        for (x, prime) in [(0u64, false), (1, false), (2, true), (3, true), (4, false)] {
            assert_eq!(
                super::may_be_prime(&crate::bigint::Int::from_u64(x), &primes),
                prime
            );
        }
        // Around the trial limit; a Mersenne prime and a composite neighbour (3 · 768614336404564651).
        for (x, prime) in [
            (1999u64, true),
            (2003, true),
            ((1 << 61) - 1, true),
            ((1 << 61) + 1, false),
        ] {
            assert_eq!(
                super::may_be_prime(&crate::bigint::Int::from_u64(x), &primes),
                prime,
                "{x}"
            );
        }
    }

    /// A rushing candidate killer, consistent with its own commitments, that kills a candidate
    /// whose `p` and `q` are prime is named by the audit of the batch it killed — live, by every
    /// party, and by the transcript verifier. Each run's first batch holds such a candidate
    /// (the honest run from the same seeds accepts batch 0), and the killer is named in batch 0:
    /// (a) product party 2 adds `4Δ³` to every M4 value it publishes (opening `N + 4λ'₂` instead
    /// of `N`: still `≡ 1 mod 4`, never a biprime); (b) party 3 multiplies every
    /// first-repetition value by the public base before committing to it in M5a, so its M5b
    /// opening matches its commitment and every candidate fails the test. Before the audit both
    /// runs simply went on to the next batch with nobody named.
    #[test]
    fn candidate_killer_is_named() {
        let named_in_batch_0 = |e: &Error, party: u16, round: Round| {
            assert_audit_named(e, party, round);
            assert!(
                matches!(e, Error::Misbehaviour { reason, .. }
                    if reason.contains("batch audit of batch 0:")),
                "{e:?}"
            );
        };
        let params_a = params(52);
        let honest = run_in_process(&params_a, rngs(5600), None).unwrap();
        assert_eq!(
            honest.outputs[0].stats.batches, 1,
            "batch 0 has a good candidate"
        );
        let killer = M4Killer::new(&params_a, 2, None);
        let mut seen: Vec<Message> = Vec::new();
        let mut kill = |m: &mut Message| {
            killer.apply(m);
            if m.to.is_none() {
                seen.push(m.clone());
            }
        };
        let e = run_in_process(&params_a, rngs(5600), Some(&mut kill)).unwrap_err();
        named_in_batch_0(&e, 2, Round::ModulusShares);
        let e = replay(&params_a, &seen).unwrap_err();
        named_in_batch_0(&e, 2, Round::ModulusShares);

        let honest = run_in_process(&params(53), rngs(5640), None).unwrap();
        assert_eq!(
            honest.outputs[0].stats.batches, 1,
            "batch 0 has a good candidate"
        );
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
        let e = run_in_process(&params(53), rngs(5640), Some(&mut record)).unwrap_err();
        named_in_batch_0(&e, 3, Round::BiprimeFirstCommit);
        let e = replay(&params(53), &seen).unwrap_err();
        named_in_batch_0(&e, 3, Round::BiprimeFirstCommit);
    }

    /// Every party reaches the same verdict, not only the first: the in-process runner's
    /// [`run_in_process_each`](super::super::sim::run_in_process_each) gives every party's
    /// error in the round where the run stopped, and each of the three parties — the culprit
    /// included, whose own re-run shows its published broadcast differs — names the same
    /// party in the same round, for the M4 killer, the biprimality killer and a seed opening
    /// that does not match its commitment.
    #[test]
    fn audit_verdict_is_identical_at_every_party() {
        use super::super::sim::run_in_process_each;
        let killer = M4Killer::new(&params(52), 2, None);
        let mut kill = |m: &mut Message| {
            killer.apply(m);
        };
        let m4 = run_in_process_each(&params(52), rngs(5600), Some(&mut kill)).unwrap_err();
        // Its own session (hooks stay set for a session): the first seed whose honest run
        // accepts batch 0, so that the killed batch held a good candidate.
        let seed = (5900..5920)
            .find(|s| {
                run_in_process(&params(59), rngs(s * 10), None)
                    .is_ok_and(|run| run.outputs[0].stats.batches == 1)
            })
            .expect("a session whose batch 0 is accepted");
        hooks::set(hooks::Hook {
            kill_biprime_party: 3,
            ..hook(59)
        });
        let reps = run_in_process_each(&params(59), rngs(seed * 10), None).unwrap_err();
        let mut flip = |m: &mut Message| {
            if m.round == Round::BatchAudit && m.from == PartyIndex(2) {
                if let Some(d) = m.digest.as_mut() {
                    d[0] ^= 1;
                }
            }
        };
        let small = params(54).with_batch(8).unwrap();
        let seed = run_in_process_each(&small, rngs(5400), Some(&mut flip)).unwrap_err();
        for (what, errors, culprit, round) in [
            ("M4 killer", m4, 2u16, Round::ModulusShares),
            ("biprimality killer", reps, 3, Round::BiprimeFirstCommit),
            ("seed opening mismatch", seed, 2, Round::BatchAudit),
        ] {
            assert_eq!(errors.len(), 3, "{what}: {errors:?}");
            for (k, e) in errors.iter().enumerate() {
                let e = e
                    .as_ref()
                    .unwrap_or_else(|| panic!("{what}: party {} went on", k + 1));
                assert!(
                    matches!(e, Error::Misbehaviour { party, round: r, .. }
                        if *party == PartyIndex(culprit) && *r == round),
                    "{what}: party {} says {e:?}",
                    k + 1
                );
            }
        }
    }

    /// The limit of the clear check: a deviation after M1 in a batch whose candidates all have
    /// `p` or `q` composite is not named — it changed nothing, the batch is rejected with or
    /// without it. Party 2 plays the M4 killer of `candidate_killer_is_named` in batch 0 only,
    /// a batch the honest run from the same seeds rejects: the run goes on, nobody is named or
    /// re-run, the key is the honest run's, and the verifier accepts the transcript.
    #[test]
    fn killing_only_bad_candidates_is_not_named() {
        let p = params(56);
        let honest = run_in_process(&p, rngs(5600), None).unwrap();
        assert_eq!(
            honest.outputs[0].stats.batches, 2,
            "batch 0 is rejected honestly"
        );
        let killer = M4Killer::new(&p, 2, Some(0));
        let mut seen: Vec<Message> = Vec::new();
        let mut shifted = 0;
        let mut kill = |m: &mut Message| {
            shifted += killer.apply(m);
            if m.to.is_none() {
                seen.push(m.clone());
            }
        };
        let run = run_in_process(&p, rngs(5600), Some(&mut kill)).unwrap();
        assert!(shifted > 0, "the killer acted in batch 0");
        assert_eq!(
            run.outputs[0].key.fingerprint(),
            honest.outputs[0].key.fingerprint()
        );
        for out in &run.outputs {
            assert_eq!(out.stats.audit_reruns, 0);
        }
        assert_eq!(replay(&p, &seen).unwrap().batches, 2);
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
