//! The modulus stage, rounds M1–M9 (Boneh–Franklin 2001 §3–§4, batched; see the module
//! documentation of [`crate::dkg`] for the steps and `docs/dkg.md` for the argument).
//!
//! Every sharing round (M1, M3, M8) is checked for consistency with the batched test of
//! [`super::consistency`]: with its direct messages a dealer broadcasts their digests, and in
//! the next round (M2, M4, M9) every party — not only the product parties — broadcasts its
//! blinded combinations, so a dealer whose shares are not on one polynomial is named.

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::Zeroize;

use super::audit::{self, BatchSeed, Use};
use super::certify::{self, CertData};
use super::consistency::{
    challenges, check_digest, check_point, check_public, combine, digest_broadcast, expect_digests,
    m3_record_hashes, Combiner, Pair, Ring, F127,
};
use super::field::eval_int;
use super::field::{add127, mul127, random127, share127_into, ShareRing, P127};
use super::{blame, Ctx, Inbox, Message, Outgoing, Round, Setup, State, Stats, Transition};
use crate::bigint::{Int, SecretInt};
use crate::error::{Error, Result};
use crate::hash::{fingerprint, hash_to_int};
use crate::keys::PartyIndex;

/// One candidate pair, as this party's additive shares `p_i`, `q_i`.
pub(super) struct Candidate {
    /// Position in its batch (part of the biprimality base's derivation).
    index: u32,
    pub(super) p: SecretInt,
    pub(super) q: SecretInt,
    /// From M3 on: this party's integer sharings of the candidate and the shares it received,
    /// kept for the certification of the chosen modulus ([`super::certify`]).
    pub(super) cert: Option<Box<CertData>>,
}

impl core::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Candidate {{ index: {}, shares: <redacted> }}",
            self.index
        )
    }
}

/// The seed of one sharing round's randomness: the dealer re-derives its own shares from it
/// once the consistency challenge is known, instead of keeping them. Wiped on drop.
pub(super) struct DealSeed([u8; 32]);

impl DealSeed {
    /// The dealing seed of one sharing round, derived from the batch seed.
    fn derived(batch: &BatchSeed, use_: Use) -> Self {
        DealSeed(batch.derive(use_))
    }

    fn rng(&self) -> ChaCha20Rng {
        ChaCha20Rng::from_seed(self.0)
    }
}

impl Drop for DealSeed {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl core::fmt::Debug for DealSeed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DealSeed(<redacted>)")
    }
}

/// `p_i mod M` and `q_i mod M` of every candidate and sieve group (in dealing order), computed
/// once for the dealing and its re-derivation. Wiped on drop.
pub(super) struct Residues(Vec<u64>);

impl Residues {
    fn of(setup: &Setup, cands: &[Candidate]) -> Self {
        let mut r = Vec::with_capacity(cands.len() * setup.groups.len() * 2);
        for c in cands {
            for g in &setup.groups {
                r.push(c.p.expose().rem_u64(g.modulus));
                r.push(c.q.expose().rem_u64(g.modulus));
            }
        }
        Residues(r)
    }
}

impl Drop for Residues {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl core::fmt::Debug for Residues {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Residues(<redacted>)")
    }
}

/// The direct messages of one sharing round (one body per recipient, in recipient order) and
/// the broadcast of their digests.
fn send_shares<T>(
    ctx: &Ctx<'_>,
    round: Round,
    batch: u32,
    bodies: Vec<Vec<T>>,
    fill: impl Fn(&mut Message, Vec<T>),
) -> Outgoing {
    let direct: Vec<Message> = bodies
        .into_iter()
        .enumerate()
        .map(|(j, body)| {
            let mut m = ctx.message(round, batch, Some(j as u16 + 1));
            fill(&mut m, body);
            m
        })
        .collect();
    let broadcast = digest_broadcast(ctx.message(round, batch, None), &direct);
    Outgoing {
        broadcast: Some(broadcast),
        direct,
    }
}

/// What a party learns on receiving a sharing round: every dealer's digests must match the
/// direct messages received; returns every dealer's challenge `ρ_i`.
fn receive_digests<R: Ring>(
    ring: &R,
    ctx: &Ctx<'_>,
    inbox: &Inbox,
    round: Round,
    batch: u32,
) -> Result<Vec<R::E>> {
    let setup = ctx.setup;
    let digests = inbox
        .broadcasts(ctx.all())?
        .into_iter()
        .map(|m| expect_digests(m, setup.n))
        .collect::<Result<Vec<_>>>()?;
    for (d, ds) in inbox.directs(ctx.all())?.into_iter().zip(&digests) {
        check_digest(d, ds, ctx.me)?;
    }
    Ok(challenges(ring, setup, round, batch, &digests))
}

/// M1 dealing: for every candidate and sieve group, shares of `p_i mod M`, `q_i mod M`
/// (degree `t − 1`) and a mask (degree `2t − 2`), then the blinding record; `emit(j, record)`
/// receives recipient `j`'s (0-based) records in order. All randomness comes from `rng`.
fn deal_sieve(
    setup: &Setup,
    residues: &Residues,
    rng: &mut ChaCha20Rng,
    mut emit: impl FnMut(usize, [u128; 3]),
) {
    let (t1, t2) = (usize::from(setup.t) - 1, 2 * usize::from(setup.t) - 2);
    let n = usize::from(setup.n);
    let (mut x, mut y, mut r) = ([0u128; 16], [0u128; 16], [0u128; 16]);
    let mut record = |xs: u128, ys: u128, mask: u128, rng: &mut ChaCha20Rng| {
        share127_into(xs, t1, rng, &mut x[..n]);
        share127_into(ys, t1, rng, &mut y[..n]);
        share127_into(mask, t2, rng, &mut r[..n]);
        for j in 0..n {
            emit(j, [x[j], y[j], r[j]]);
        }
    };
    for pq in residues.0.chunks_exact(2) {
        let mask = random127(rng) >> (127 - super::SIEVE_MASK_BITS);
        record(u128::from(pq[0]), u128::from(pq[1]), mask, rng);
    }
    let (a, b, c) = (random127(rng), random127(rng), random127(rng));
    record(a, b, c, rng);
}

/// Shares one record `[a, b, c]` over a big ring (`a`, `b` with degree `t − 1`, `c` with degree
/// `2t − 2`) and emits each recipient's shares.
fn share_record(
    setup: &Setup,
    field: &ShareRing,
    [a, b, c]: [&Int; 3],
    rng: &mut ChaCha20Rng,
    emit: &mut impl FnMut(usize, [Int; 3]),
) {
    let (t1, t2) = (usize::from(setup.t) - 1, 2 * usize::from(setup.t) - 2);
    let sa = field.share(a, t1, setup.n, rng);
    let sb = field.share(b, t1, setup.n, rng);
    let sc = field.share(c, t2, setup.n, rng);
    for (j, ((x, y), z)) in sa.into_iter().zip(sb).zip(sc).enumerate() {
        emit(j, [x, y, z]);
    }
}

/// This party's M3 polynomials for one candidate, over the integers: `P_i` with constant `Δp_i`
/// and `Q_i` with constant `Δq_i` (degree `t − 1`, other coefficients below `2^m_coeff`), and
/// the zero sharing `Z_i` (degree `2t − 2`, coefficients below `2^m_zero_coeff`), stored
/// without its zero constant. Integer coefficients are what lets C1 commit to them in `G_P`
/// ([`super::certify`]).
fn candidate_polys<R: RngCore + CryptoRng + ?Sized>(
    setup: &Setup,
    c: &Candidate,
    rng: &mut R,
) -> [Vec<SecretInt>; 3] {
    let t1 = usize::from(setup.t) - 1;
    let sizes = &setup.sizes;
    let low = |secret: &SecretInt, rng: &mut R| {
        let mut v = vec![SecretInt::new(secret.expose().mul(&setup.delta))];
        v.extend((0..t1).map(|_| SecretInt::new(Int::random_bits(rng, sizes.m_coeff))));
        v
    };
    let p = low(&c.p, rng);
    let q = low(&c.q, rng);
    let z = (0..2 * t1)
        .map(|_| SecretInt::new(Int::random_bits(rng, sizes.m_zero_coeff)))
        .collect();
    [p, q, z]
}

/// `[P_i(j), Q_i(j), Z_i(j)]` for one candidate's polynomials.
pub(super) fn candidate_shares(polys: &[Vec<SecretInt>; 3], j: u16) -> [Int; 3] {
    [
        eval_int(&polys[0], j),
        eval_int(&polys[1], j),
        eval_int(&polys[2], j).mul_u64(u64::from(j)),
    ]
}

/// M3 dealing: for every surviving candidate, its integer shares of `Δp_i`, `Δq_i` (degree
/// `t − 1`) and of zero (degree `2t − 2`) — all below the modulus ring's order, so the
/// consistency check runs over that ring unchanged — then the blinding record over the ring
/// (its high sharing also of zero, so that the combination of the zero sharings keeps constant
/// zero). The polynomials were drawn when the candidate survived the sieve; `rng` (the seed's)
/// draws only the blinding record.
fn deal_candidates(
    setup: &Setup,
    cands: &[Candidate],
    rng: &mut ChaCha20Rng,
    mut emit: impl FnMut(usize, [Int; 3]),
) {
    let field = &setup.modulus_field;
    let zero = Int::zero();
    for c in cands {
        if let Some(cert) = &c.cert {
            for j in 1..=setup.n {
                emit(usize::from(j) - 1, candidate_shares(&cert.polys, j));
            }
        }
    }
    let a = Int::random_below(rng, &field.p);
    let b = Int::random_below(rng, &field.p);
    share_record(setup, field, [&a, &b, &zero], rng, &mut emit);
}

/// M8 dealing: `a_i = p_i + q_i` (− 1 at party 1) and `r_i` (degree `t − 1`) and the mask
/// `N·ρ_i` (degree `2t − 2`) over the gcd ring, then the blinding record. `r_i` and `ρ_i` are
/// drawn from `rng` too, so the dealing re-derives exactly.
fn deal_gcd(
    setup: &Setup,
    me: PartyIndex,
    cand: &Candidate,
    n: &Int,
    rng: &mut ChaCha20Rng,
    mut emit: impl FnMut(usize, [Int; 3]),
) {
    let field = &setup.gcd_field;
    let mut a = cand.p.expose().add(cand.q.expose());
    if me.0 == 1 {
        a = a.sub(&Int::one());
    }
    let a = SecretInt::new(a);
    let r = SecretInt::new(Int::random_bits(rng, setup.sizes.gcd_r));
    let rho = SecretInt::new(Int::random_bits(rng, setup.sizes.gcd_rho).mul(n));
    share_record(
        setup,
        field,
        [a.expose(), r.expose(), rho.expose()],
        rng,
        &mut emit,
    );
    let blind: Vec<Int> = (0..3).map(|_| Int::random_below(rng, &field.p)).collect();
    share_record(
        setup,
        field,
        [&blind[0], &blind[1], &blind[2]],
        rng,
        &mut emit,
    );
}

/// A dealer's own combinations at every point, re-derived from its seed.
fn own_combination<R: Ring>(
    ring: &R,
    setup: &Setup,
    rho: &R::E,
    deal: impl FnOnce(&mut dyn FnMut(usize, [R::E; 3])),
) -> Vec<R::E>
where
    R::E: Wipe,
{
    let mut comb = Combiner::new(ring, rho.clone(), setup.n);
    deal(&mut |j, rec| {
        comb.push(j, &rec);
        for v in rec {
            v.wipe();
        }
    });
    comb.finish()
}

/// Wiping a re-derived share once it has been folded into the combination.
pub(super) trait Wipe {
    fn wipe(self);
}

impl Wipe for u128 {
    fn wipe(mut self) {
        self.zeroize();
    }
}

impl Wipe for Int {
    fn wipe(self) {
        drop(SecretInt::new(self));
    }
}

/// Samples `K` fresh candidates and sends M1. Every random choice of the batch comes from
/// `seed` ([`super::audit`]), whose commitment goes into the M1 broadcast.
pub(super) fn start_batch(
    setup: &Setup,
    me: PartyIndex,
    batch: u32,
    stats: &mut Stats,
    seed: BatchSeed,
) -> (State, Outgoing) {
    stats.batches += 1;
    let k = setup.params.batch;
    stats.candidates_tried += k as u64;
    let cands = sample_candidates(setup, me, &seed);
    let ctx = Ctx {
        setup,
        me,
        live: false,
    };
    let deal = DealSeed::derived(&seed, Use::SieveDeal);
    let len = (k * setup.groups.len() + 1) * 3;
    let mut bodies: Vec<Vec<u128>> = (0..setup.n).map(|_| Vec::with_capacity(len)).collect();
    let residues = Residues::of(setup, &cands);
    deal_sieve(setup, &residues, &mut deal.rng(), |j, rec| {
        bodies[j].extend_from_slice(&rec)
    });
    let mut out = send_shares(&ctx, Round::SieveShares, batch, bodies, |m, b| m.small = b);
    if let Some(b) = out.broadcast.as_mut() {
        b.digest = Some(seed.commitment());
    }
    (
        State::Sieve(SieveRound {
            batch,
            cands,
            seed: deal,
            residues,
            batch_seed: seed,
        }),
        out,
    )
}

/// Party `me`'s `p_i, q_i` of every candidate of a batch, drawn from its batch seed
/// ([`Use::Candidates`]): what [`start_batch`] deals, and what the audit's clear check reads of
/// the auditing party's own opened seed.
pub(super) fn sample_candidates(setup: &Setup, me: PartyIndex, seed: &BatchSeed) -> Vec<Candidate> {
    // Party 1 carries the public offset 2^(h−1) + 2^(h−2) + 3: p ≡ q ≡ 3 (mod 4) and both in
    // [1.5·2^(h−1), 2^h), so N has exactly `bits` bits; everyone else's share is ≡ 0 (mod 4)
    // and below 2^(h−2)/n, so the sum never carries into the fixed top bits.
    let offset = if me.0 == 1 {
        Int::one()
            .shl(setup.half - 1)
            .add(&Int::one().shl(setup.half - 2))
            .add(&Int::from_u64(3))
    } else {
        Int::zero()
    };
    let mut rng = seed.rng(Use::Candidates);
    let mut sample =
        || SecretInt::new(Int::random_bits(&mut rng, setup.u_bits).shl(2).add(&offset));
    (0..setup.params.batch as u32)
        .map(|index| Candidate {
            index,
            p: sample(),
            q: sample(),
            cert: None,
        })
        .collect()
}

fn expect_small(m: &Message, len: usize) -> Result<&[u128]> {
    if m.small.len() != len || !m.ints.is_empty() {
        return Err(blame(
            m,
            format!("{} field elements, expected {len}", m.small.len()),
        ));
    }
    Ok(&m.small)
}

/// The integers of `m`, which must number `len` and lie in `[0, bound)`.
pub(super) fn expect_ints<'m>(m: &'m Message, len: usize, bound: &Int) -> Result<&'m [Int]> {
    if m.ints.len() != len || !m.small.is_empty() {
        return Err(blame(
            m,
            format!("{} integers, expected {len}", m.ints.len()),
        ));
    }
    if m.ints.iter().any(|v| v.is_negative() || v >= bound) {
        return Err(blame(m, "integer out of range"));
    }
    Ok(&m.ints)
}

/// Ends batch `batch`, which yielded no modulus: opens this party's batch seed for the audit
/// ([`super::audit`]).
fn reject_batch(ctx: &Ctx<'_>, batch: u32, seed: BatchSeed) -> Result<Transition> {
    let opening = seed.open(ctx.message(Round::BatchAudit, batch, None));
    Ok(Transition::Next(
        State::Audit(AuditRound { batch }),
        Outgoing {
            broadcast: Some(opening),
            direct: Vec::new(),
        },
    ))
}

/// Waiting for the seed openings of a rejected batch.
#[derive(Debug)]
pub(super) struct AuditRound {
    pub(super) batch: u32,
}

impl AuditRound {
    /// Checks every opening against its M1 commitment and audits the batch (`log`: every
    /// broadcast this party received in it); then starts the next batch with a fresh seed, or
    /// ends the generation with no key once [`MAX_BATCHES`](super::MAX_BATCHES) batches have
    /// failed.
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        setup: &std::sync::Arc<Setup>,
        me: PartyIndex,
        inbox: &Inbox,
        log: &[Message],
        stats: &mut Stats,
        rng: &mut R,
    ) -> Result<Transition> {
        let ctx = Ctx {
            setup,
            me,
            live: true,
        };
        let log: std::collections::BTreeMap<(Round, u16), &Message> = log
            .iter()
            .filter(|m| m.batch == self.batch)
            .map(|m| ((m.round, m.from.0), m))
            .collect();
        let m1: Vec<&Message> = ctx
            .all()
            .map(|p| {
                log.get(&(Round::SieveShares, p)).copied().ok_or_else(|| {
                    Error::KeyGenerationFailed("batch audit: M1 broadcast not kept".into())
                })
            })
            .collect::<Result<_>>()?;
        let commitments = audit::seed_commitments(&m1)?;
        let seeds = audit::open_seeds(
            setup,
            self.batch,
            &commitments,
            &inbox.broadcasts(ctx.all())?,
        )?;
        if audit::audit_batch(setup, self.batch, &seeds, &log, Some(me))? == audit::Audited::ReRun {
            stats.audit_reruns += 1;
        }
        let next = self.batch + 1;
        if next >= super::MAX_BATCHES {
            return Err(batches_exhausted());
        }
        let seed = BatchSeed::fresh(setup, next, me, rng);
        let (state, out) = start_batch(setup, me, next, stats, seed);
        Ok(Transition::Next(state, out))
    }
}

/// The error of a generation whose [`MAX_BATCHES`](super::MAX_BATCHES) batches all failed.
pub(super) fn batches_exhausted() -> Error {
    Error::KeyGenerationFailed(format!(
        "no modulus accepted in {} candidate batches; no key was produced",
        super::MAX_BATCHES
    ))
}

/// The broadcasts of a round that follows a sharing round (M2, M4, M9), from every party in
/// index order: a product party's products, then every dealer's `2n` combination values.
pub(super) struct Opened<'m, T> {
    /// The product parties' products (in product-party order).
    pub(super) products: Vec<&'m [T]>,
    /// Every party's combination values, with its message (in party order).
    pub(super) combinations: Vec<(&'m Message, &'m [T])>,
}

/// Splits and checks the broadcasts of M2, M4 or M9: counts, ranges, and the public half of the
/// consistency check of every dealer's combinations (naming the first that fails).
pub(super) fn open_round<'m, R: Ring>(
    ring: &R,
    setup: &Setup,
    msgs: &[&'m Message],
    values: impl Fn(&'m Message) -> &'m [R::E],
    other_empty: impl Fn(&Message) -> bool,
    products: usize,
    zero_high: bool,
) -> Result<Opened<'m, R::E>> {
    let n2 = 2 * usize::from(setup.n);
    let mut opened = Opened {
        products: Vec::new(),
        combinations: Vec::new(),
    };
    for &m in msgs {
        let v = values(m);
        let own = if setup.is_product_party(m.from) {
            products
        } else {
            0
        };
        if v.len() != own + n2 || !other_empty(m) || m.digest.is_some() {
            return Err(blame(
                m,
                format!("{} values, expected {}", v.len(), own + n2),
            ));
        }
        if v.iter().any(|x| !ring.reduced(x)) {
            return Err(blame(m, "value out of range"));
        }
        let (prods, comb) = v.split_at(own);
        check_public(ring, setup, m, comb, zero_high)?;
        if own > 0 {
            opened.products.push(prods);
        }
        opened.combinations.push((m, comb));
    }
    Ok(opened)
}

/// The private half of the consistency check: every dealer's combination at this party's point
/// must be what this party computed from the shares it received.
fn check_points<T: Clone + PartialEq>(
    ctx: &Ctx<'_>,
    combinations: &[(&Message, &[T])],
    mine: &[Pair<T>],
) -> Result<()> {
    for ((m, comb), mine) in combinations.iter().zip(mine) {
        check_point(ctx.setup, m, comb, mine, ctx.me)?;
    }
    Ok(())
}

/// Waiting for M1: everyone's sieve shares.
#[derive(Debug)]
pub(super) struct SieveRound {
    pub(super) batch: u32,
    cands: Vec<Candidate>,
    seed: DealSeed,
    residues: Residues,
    batch_seed: BatchSeed,
}

impl SieveRound {
    /// This party's candidates of the batch (the audit's cost measurement reads them).
    #[cfg(test)]
    pub(super) fn candidates(&self) -> &[Candidate] {
        &self.cands
    }

    /// This party's candidates, the rest of the round dropped (the batch audit keeps only
    /// these of a re-derived M1, so that it holds one dealing at a time).
    pub(super) fn into_candidates(self) -> Vec<Candidate> {
        self.cands
    }

    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        _rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let per = setup.groups.len() * 3;
        let len = (self.cands.len() * setup.groups.len() + 1) * 3;
        let rhos = receive_digests(&F127, ctx, inbox, Round::SieveShares, self.batch)?;
        let msgs = inbox.directs(ctx.all())?;
        let bodies = msgs
            .iter()
            .map(|m| expect_small(m, len))
            .collect::<Result<Vec<_>>>()?;
        let mine: Vec<Pair<u128>> = bodies
            .iter()
            .zip(&rhos)
            .map(|(b, rho)| combine(&F127, rho, b))
            .collect();
        let mut small = Vec::new();
        if setup.is_product_party(ctx.me) {
            small.reserve(self.cands.len() * setup.groups.len() + 2 * usize::from(setup.n));
            for c in 0..self.cands.len() {
                for (g, group) in setup.groups.iter().enumerate() {
                    let at = c * per + g * 3;
                    let (mut x, mut y, mut r) = (0u128, 0u128, 0u128);
                    for b in &bodies {
                        x = add127(x, b[at]);
                        y = add127(y, b[at + 1]);
                        r = add127(r, b[at + 2]);
                    }
                    small.push(add127(mul127(x, y), mul127(u128::from(group.modulus), r)));
                }
            }
        }
        let me = usize::from(ctx.me.0) - 1;
        small.extend(own_combination(&F127, setup, &rhos[me], |emit| {
            deal_sieve(setup, &self.residues, &mut self.seed.rng(), emit)
        }));
        let mut m = ctx.message(Round::SieveProducts, self.batch, None);
        m.small = small;
        Ok(Transition::Next(
            State::SieveProducts(SieveProductRound {
                batch: self.batch,
                cands: self.cands,
                mine,
                batch_seed: self.batch_seed,
            }),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for M2: the masked residue products and everyone's combinations.
#[derive(Debug)]
pub(super) struct SieveProductRound {
    pub(super) batch: u32,
    cands: Vec<Candidate>,
    /// This party's point of every dealer's M1 combination.
    mine: Vec<Pair<u128>>,
    batch_seed: BatchSeed,
}

impl SieveProductRound {
    pub(super) fn receive(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        stats: &mut Stats,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let msgs = inbox.broadcasts(ctx.all())?;
        let opened = open_sieve_products(setup, &msgs, self.cands.len())?;
        check_points(ctx, &opened.combinations, &self.mine)?;
        let pass = sieve_passes(setup, &opened.products, self.cands.len());
        let survivors: Vec<Candidate> = self
            .cands
            .into_iter()
            .zip(pass)
            .filter_map(|(c, ok)| ok.then_some(c))
            .collect();
        stats.sieve_survivors += survivors.len() as u64;
        if survivors.is_empty() {
            return reject_batch(ctx, self.batch, self.batch_seed);
        }
        let mut survivors = survivors;
        let mut rng = self.batch_seed.rng(Use::CandidatePolys);
        for c in &mut survivors {
            let polys = candidate_polys(setup, c, &mut rng);
            c.cert = Some(Box::new(CertData {
                polys,
                received: Vec::with_capacity(usize::from(setup.n)),
                products: Vec::new(),
                position: 0,
                evidence: None,
            }));
        }
        let seed = DealSeed::derived(&self.batch_seed, Use::CandidateDeal);
        let len = 3 * (survivors.len() + 1);
        let mut bodies: Vec<Vec<Int>> = (0..setup.n).map(|_| Vec::with_capacity(len)).collect();
        deal_candidates(setup, &survivors, &mut seed.rng(), |j, rec| {
            bodies[j].extend(rec)
        });
        let out = send_shares(ctx, Round::CandidateShares, self.batch, bodies, |m, b| {
            m.ints = b
        });
        Ok(Transition::Next(
            State::Candidates(CandidateRound {
                batch: self.batch,
                cands: survivors,
                seed,
                batch_seed: self.batch_seed,
            }),
            out,
        ))
    }
}

/// Waiting for M3: shares of the surviving candidates.
#[derive(Debug)]
pub(super) struct CandidateRound {
    pub(super) batch: u32,
    cands: Vec<Candidate>,
    seed: DealSeed,
    batch_seed: BatchSeed,
}

impl CandidateRound {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let setup = ctx.setup;
        let field = &setup.modulus_field;
        let q = &field.p;
        let rhos = receive_digests(field, ctx, inbox, Round::CandidateShares, self.batch)?;
        let msgs = inbox.directs(ctx.all())?;
        let bodies = msgs
            .iter()
            .map(|m| expect_ints(m, 3 * (self.cands.len() + 1), q))
            .collect::<Result<Vec<_>>>()?;
        // Every integer share has a public bound, checked here by its holder: C1's argument
        // (a relation mod P holds over Z) rests on it.
        let (low_bits, high_bits) = (setup.sizes.m_share, setup.sizes.m_zero_share);
        for (m, b) in msgs.iter().zip(&bodies) {
            let k = 3 * self.cands.len();
            if b[..k].chunks_exact(3).any(|r| {
                r[0].bits() > low_bits || r[1].bits() > low_bits || r[2].bits() > high_bits
            }) {
                return Err(blame(m, "M3 share outside its public integer bound"));
            }
        }
        // What a C1 complaint will need to show that a record is what its dealer sent: every
        // dealer's published digests and the record hashes of the messages received.
        let evidence = std::sync::Arc::new(certify::M3Evidence {
            digests: share_digests(setup, &inbox.broadcasts(ctx.all())?)?,
            hashes: msgs.iter().map(|m| m3_record_hashes(m)).collect(),
        });
        let mut cands = self.cands;
        for (c, cand) in cands.iter_mut().enumerate() {
            if let Some(cert) = cand.cert.as_mut() {
                cert.position = c;
                cert.evidence = Some(evidence.clone());
                cert.received = bodies
                    .iter()
                    .map(|b| {
                        [
                            SecretInt::new(b[3 * c].clone()),
                            SecretInt::new(b[3 * c + 1].clone()),
                            SecretInt::new(b[3 * c + 2].clone()),
                        ]
                    })
                    .collect();
            }
        }
        let mine: Vec<Pair<Int>> = bodies
            .iter()
            .zip(&rhos)
            .map(|(b, rho)| combine(field, rho, b))
            .collect();
        let mut ints: Vec<Int> = Vec::new();
        if setup.is_product_party(ctx.me) {
            ints = (0..cands.len())
                .map(|c| {
                    let sum = |k: usize| {
                        SecretInt::new(bodies.iter().fold(Int::zero(), |a, b| a.add(&b[3 * c + k])))
                    };
                    let (p, qq, z) = (sum(0), sum(1), sum(2));
                    p.expose().mul(qq.expose()).add(z.expose()).rem_euclid(q)
                })
                .collect();
            #[cfg(test)]
            if ctx.live && forged(setup) == Some(ctx.me.0) {
                // The attacker of `forged_opening_product_is_named`: y_j + 4Δ³ opens
                // N + 4λ'_j, still ≡ 1 (mod 4).
                let shift = setup.delta.mul(&setup.delta).mul(&setup.delta).mul_u64(4);
                ints = ints.into_iter().map(|y| y.add(&shift)).collect();
            }
        }
        let me = usize::from(ctx.me.0) - 1;
        ints.extend(own_combination(field, setup, &rhos[me], |emit| {
            deal_candidates(setup, &cands, &mut self.seed.rng(), emit)
        }));
        let mut m = ctx.message(Round::ModulusShares, self.batch, None);
        m.ints = ints;
        Ok(Transition::Next(
            State::Moduli(ModulusRound {
                batch: self.batch,
                cands,
                mine,
                batch_seed: self.batch_seed,
            }),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// `g^(e_i) mod N`, this party's biprimality value: party 1 uses `(N − p₁ − q₁ + 1)/4`, the
/// others `(p_i + q_i)/4` (all exact: see `start_batch`).
fn biprime_value(me: PartyIndex, c: &Candidate, n: &Int, g: &Int) -> Int {
    let e = if me.0 == 1 {
        SecretInt::new(
            n.sub(c.p.expose())
                .sub(c.q.expose())
                .add(&Int::one())
                .shr(2),
        )
    } else {
        SecretInt::new(c.p.expose().add(c.q.expose()).shr(2))
    };
    g.pow_mod_secret(&e, n)
}

/// The public base of repetition `rep` for candidate `index` of `batch`: hashed from the session
/// and `N` (nobody chooses it), with Jacobi symbol `(g / N) = 1`.
fn biprime_base(setup: &Setup, batch: u32, index: u32, rep: u32, n: &Int) -> Int {
    let mut data = Vec::with_capacity(64 + n.bits() / 8);
    data.extend_from_slice(&setup.params.session);
    data.extend_from_slice(&batch.to_be_bytes());
    data.extend_from_slice(&index.to_be_bytes());
    data.extend_from_slice(&rep.to_be_bytes());
    data.extend_from_slice(&n.to_bytes_be());
    let mut counter = 0u32;
    loop {
        let mut d = data.clone();
        d.extend_from_slice(&counter.to_be_bytes());
        let g =
            hash_to_int(b"medtech-threshold/v1/dkg/biprime-base", &d, n.bits() + 128).rem_euclid(n);
        if !g.is_zero() && g.jacobi(n) == 1 {
            return g;
        }
        counter += 1;
    }
}

/// The Boneh–Franklin check on one repetition's values (party 1 first): `v₁ · Π v_i⁻¹ = ±1`.
fn biprime_check(n: &Int, values: &[&Int]) -> bool {
    let Some((first, rest)) = values.split_first() else {
        return false;
    };
    let mut acc = (*first).clone();
    for v in rest {
        match v.invert(n) {
            Some(inv) => acc = acc.mul_mod(&inv, n),
            // A value sharing a factor with N: not a unit, the candidate is discarded.
            None => return false,
        }
    }
    acc == Int::one() || acc == n.sub(&Int::one())
}

/// Waiting for M4: the shares of each surviving candidate's N, and everyone's combinations.
#[derive(Debug)]
pub(super) struct ModulusRound {
    pub(super) batch: u32,
    cands: Vec<Candidate>,
    /// This party's point of every dealer's M3 combination.
    mine: Vec<Pair<Int>>,
    batch_seed: BatchSeed,
}

impl ModulusRound {
    pub(super) fn receive(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        stats: &mut Stats,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let msgs = inbox.broadcasts(ctx.all())?;
        let opened = open_modulus_shares(setup, &msgs, self.cands.len())?;
        check_points(ctx, &opened.combinations, &self.mine)?;
        let moduli = open_moduli(setup, &opened.products, self.cands.len());
        let survivors: Vec<(Candidate, Int)> = self
            .cands
            .into_iter()
            .zip(moduli)
            .enumerate()
            .filter_map(|(at, (mut c, n))| {
                let n = n?;
                if let Some(cert) = c.cert.as_mut() {
                    cert.products = opened.products.iter().map(|b| b[at].clone()).collect();
                }
                Some((c, n))
            })
            .collect();
        stats.trial_survivors += survivors.len() as u64;
        if survivors.is_empty() {
            return reject_batch(ctx, self.batch, self.batch_seed);
        }
        // M5a: commit to every candidate's first-repetition value before anyone opens one.
        let values: Vec<Int> = survivors
            .iter()
            .map(|(c, n)| {
                let g = biprime_base(setup, self.batch, c.index, 0, n);
                biprime_value(ctx.me, c, n, &g)
            })
            .collect();
        #[cfg(test)]
        let values = match super::key::hooks::get(&setup.params.session) {
            // A candidate killer: every first-repetition value times g₀, committed honestly
            // (so the opening matches its M5a commitment and every candidate fails).
            Some(h) if ctx.live && h.kill_biprime_party == ctx.me.0 => values
                .iter()
                .zip(&survivors)
                .map(|(v, (c, n))| v.mul_mod(&biprime_base(setup, self.batch, c.index, 0, n), n))
                .collect(),
            _ => values,
        };
        let salt = self.batch_seed.derive(Use::FirstSalt);
        let moduli: Vec<&Int> = survivors.iter().map(|(_, n)| n).collect();
        let mut m = ctx.message(Round::BiprimeFirstCommit, self.batch, None);
        m.digest = Some(commitment(
            setup,
            Round::BiprimeFirstCommit,
            self.batch,
            ctx.me,
            &salt,
            &moduli,
            &values,
        ));
        Ok(Transition::Next(
            State::BiprimeFirstCommit(FirstCommitRound {
                batch: self.batch,
                cands: survivors,
                values,
                salt,
                batch_seed: self.batch_seed,
            }),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for M5a: everyone's commitment to its first-repetition values.
#[derive(Debug)]
pub(super) struct FirstCommitRound {
    pub(super) batch: u32,
    cands: Vec<(Candidate, Int)>,
    values: Vec<Int>,
    salt: [u8; 32],
    batch_seed: BatchSeed,
}

impl FirstCommitRound {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let digests = biprime_commitments(&inbox.broadcasts(ctx.all())?)?;
        let mut m = ctx.message(Round::BiprimeFirst, self.batch, None);
        m.ints = self.values;
        m.digest = Some(self.salt);
        Ok(Transition::Next(
            State::BiprimeFirst(FirstTestRound {
                batch: self.batch,
                cands: self.cands,
                digests,
                batch_seed: self.batch_seed,
            }),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// Checks one opened biprimality value list against its modulus: every value in `[1, N)`.
fn expect_units<'m>(m: &'m Message, len: usize, moduli: &[&Int]) -> Result<&'m [Int]> {
    if m.ints.len() != len || !m.small.is_empty() {
        return Err(blame(
            m,
            format!("{} integers, expected {len}", m.ints.len()),
        ));
    }
    let per = len / moduli.len().max(1);
    for (k, v) in m.ints.iter().enumerate() {
        let n = moduli[k / per.max(1)];
        if v.is_negative() || v.is_zero() || v >= n {
            return Err(blame(m, "biprimality value out of range"));
        }
    }
    Ok(&m.ints)
}

/// Waiting for M5b: the first repetition, opened.
#[derive(Debug)]
pub(super) struct FirstTestRound {
    pub(super) batch: u32,
    cands: Vec<(Candidate, Int)>,
    /// Everyone's M5a commitment (party order).
    digests: Vec<[u8; 32]>,
    batch_seed: BatchSeed,
}

/// A party's salted commitment to its biprimality values of one round (M5a or M6), bound to
/// the session, the round, the batch, the party and the moduli the values are for (so it
/// cannot be replayed for another candidate, batch or round).
fn commitment(
    setup: &Setup,
    round: Round,
    batch: u32,
    from: PartyIndex,
    salt: &[u8; 32],
    moduli: &[&Int],
    values: &[Int],
) -> [u8; 32] {
    let mut data = Vec::new();
    data.extend_from_slice(&setup.params.session);
    data.push(round as u8);
    data.extend_from_slice(&batch.to_be_bytes());
    data.extend_from_slice(&from.0.to_be_bytes());
    data.extend_from_slice(salt);
    data.extend_from_slice(&(moduli.len() as u32).to_be_bytes());
    for n in moduli {
        let b = n.to_bytes_be();
        data.extend_from_slice(&(b.len() as u32).to_be_bytes());
        data.extend_from_slice(&b);
    }
    data.extend_from_slice(&(values.len() as u32).to_be_bytes());
    for v in values {
        let b = v.to_bytes_be();
        data.extend_from_slice(&(b.len() as u32).to_be_bytes());
        data.extend_from_slice(&b);
    }
    fingerprint(b"medtech-threshold/v1/dkg/biprime-commitment", &data)
}

impl FirstTestRound {
    pub(super) fn receive(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        stats: &mut Stats,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let moduli: Vec<&Int> = self.cands.iter().map(|(_, n)| n).collect();
        let msgs = inbox.broadcasts(ctx.all())?;
        let pass = first_test_passes(setup, self.batch, &msgs, &self.digests, &moduli)?;
        stats.first_test_survivors += pass.iter().filter(|&&p| p).count() as u64;
        let survivors: Vec<(Candidate, Int)> = self
            .cands
            .into_iter()
            .zip(certified(pass))
            .filter_map(|(c, ok)| ok.then_some(c))
            .collect();
        if survivors.is_empty() {
            return reject_batch(ctx, self.batch, self.batch_seed);
        }
        let reps = setup.params.biprime_reps;
        let values: Vec<Int> = survivors
            .iter()
            .flat_map(|(c, n)| {
                (1..reps).map(move |rep| {
                    let g = biprime_base(setup, self.batch, c.index, rep, n);
                    biprime_value(ctx.me, c, n, &g)
                })
            })
            .collect();
        let salt = self.batch_seed.derive(Use::RepsSalt);
        let moduli: Vec<&Int> = survivors.iter().map(|(_, n)| n).collect();
        let mut m = ctx.message(Round::BiprimeCommit, self.batch, None);
        m.digest = Some(commitment(
            setup,
            Round::BiprimeCommit,
            self.batch,
            ctx.me,
            &salt,
            &moduli,
            &values,
        ));
        Ok(Transition::Next(
            State::BiprimeCommit(CommitRound {
                batch: self.batch,
                cands: survivors,
                values,
                salt,
                batch_seed: self.batch_seed,
            }),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for M6: everyone's commitment to the remaining repetitions.
#[derive(Debug)]
pub(super) struct CommitRound {
    pub(super) batch: u32,
    cands: Vec<(Candidate, Int)>,
    values: Vec<Int>,
    salt: [u8; 32],
    batch_seed: BatchSeed,
}

impl CommitRound {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let digests = biprime_commitments(&inbox.broadcasts(ctx.all())?)?;
        let mut m = ctx.message(Round::BiprimeReveal, self.batch, None);
        m.ints = self.values;
        m.digest = Some(self.salt);
        Ok(Transition::Next(
            State::BiprimeReveal(RevealRound {
                batch: self.batch,
                cands: self.cands,
                digests,
                batch_seed: self.batch_seed,
            }),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for M7: the openings.
#[derive(Debug)]
pub(super) struct RevealRound {
    pub(super) batch: u32,
    cands: Vec<(Candidate, Int)>,
    digests: Vec<[u8; 32]>,
    batch_seed: BatchSeed,
}

impl RevealRound {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let setup = ctx.setup;
        let moduli: Vec<&Int> = self.cands.iter().map(|(_, n)| n).collect();
        let msgs = inbox.broadcasts(ctx.all())?;
        let chosen_at = chosen_candidate(setup, self.batch, &msgs, &self.digests, &moduli)?;
        let chosen = chosen_at.and_then(|at| self.cands.into_iter().nth(at));
        let Some((cand, n)) = chosen else {
            return reject_batch(ctx, self.batch, self.batch_seed);
        };
        // The gcd step's inputs: a_i = p_i + q_i (− 1 at party 1), r_i, and N·ρ_i.
        let seed = DealSeed::derived(&self.batch_seed, Use::GcdDeal);
        let mut bodies: Vec<Vec<Int>> = (0..setup.n).map(|_| Vec::with_capacity(6)).collect();
        deal_gcd(setup, ctx.me, &cand, &n, &mut seed.rng(), |j, rec| {
            bodies[j].extend(rec)
        });
        let out = send_shares(ctx, Round::GcdShares, self.batch, bodies, |m, b| m.ints = b);
        Ok(Transition::Next(
            State::Gcd(Box::new(GcdRound {
                batch: self.batch,
                cand,
                n,
                seed,
                batch_seed: self.batch_seed,
            })),
            out,
        ))
    }
}

/// Waiting for M8: the gcd step's shares.
#[derive(Debug)]
pub(super) struct GcdRound {
    pub(super) batch: u32,
    cand: Candidate,
    n: Int,
    seed: DealSeed,
    batch_seed: BatchSeed,
}

impl GcdRound {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let setup = ctx.setup;
        let field = &setup.gcd_field;
        let g = &field.p;
        let rhos = receive_digests(field, ctx, inbox, Round::GcdShares, self.batch)?;
        let msgs = inbox.directs(ctx.all())?;
        let bodies = msgs
            .iter()
            .map(|m| expect_ints(m, 6, g))
            .collect::<Result<Vec<_>>>()?;
        let mine: Vec<Pair<Int>> = bodies
            .iter()
            .zip(&rhos)
            .map(|(b, rho)| combine(field, rho, b))
            .collect();
        let mut ints = Vec::new();
        if setup.is_product_party(ctx.me) {
            let sum =
                |k: usize| SecretInt::new(bodies.iter().fold(Int::zero(), |a, b| a.add(&b[k])));
            let (a, r, mk) = (sum(0), sum(1), sum(2));
            ints.push(a.expose().mul(r.expose()).add(mk.expose()).rem_euclid(g));
        }
        let me = usize::from(ctx.me.0) - 1;
        ints.extend(own_combination(field, setup, &rhos[me], |emit| {
            deal_gcd(
                setup,
                ctx.me,
                &self.cand,
                &self.n,
                &mut self.seed.rng(),
                emit,
            )
        }));
        let mut m = ctx.message(Round::GcdReveal, self.batch, None);
        m.ints = ints;
        Ok(Transition::Next(
            State::GcdReveal(Box::new(GcdRevealRound {
                batch: self.batch,
                cand: self.cand,
                n: self.n,
                mine,
                batch_seed: self.batch_seed,
            })),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for M9: the opened gcd-step product and everyone's combinations.
#[derive(Debug)]
pub(super) struct GcdRevealRound {
    pub(super) batch: u32,
    cand: Candidate,
    n: Int,
    /// This party's point of every dealer's M8 combination.
    mine: Vec<Pair<Int>>,
    batch_seed: BatchSeed,
}

impl GcdRevealRound {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        rng: &mut R,
    ) -> Result<Transition> {
        let msgs = inbox.broadcasts(ctx.all())?;
        let opened = open_gcd_reveal(ctx.setup, &msgs)?;
        check_points(ctx, &opened.combinations, &self.mine)?;
        if !gcd_passes(ctx.setup, &opened.products, &self.n) {
            return reject_batch(ctx, self.batch, self.batch_seed);
        }
        // The accepted batch: its seed is wiped here, never opened; C1 and the key stage draw
        // from the RNG.
        drop(self.batch_seed);
        let (state, out) = certify::start(ctx, self.batch, self.n, self.cand, rng)?;
        Ok(Transition::Next(state, out))
    }
}

// The public computations of each round, shared by the parties and by the transcript verifier
// ([`super::verify`]): everything here depends on broadcasts only.

/// M1: every dealer's share digests (checked; in party order).
pub(super) fn share_digests(setup: &Setup, msgs: &[&Message]) -> Result<Vec<Vec<[u8; 32]>>> {
    msgs.iter().map(|m| expect_digests(m, setup.n)).collect()
}

/// M2's broadcasts (every party, in index order), checked: products of a batch of `k` and the
/// public half of every dealer's M1 consistency check.
pub(super) fn open_sieve_products<'m>(
    setup: &Setup,
    msgs: &[&'m Message],
    k: usize,
) -> Result<Opened<'m, u128>> {
    open_round(
        &F127,
        setup,
        msgs,
        |m| &m.small,
        |m| m.ints.is_empty(),
        k * setup.groups.len(),
        false,
    )
}

/// M4's broadcasts, checked: the shares of `count` moduli and every dealer's M3 check (whose
/// high sharings are sharings of zero).
pub(super) fn open_modulus_shares<'m>(
    setup: &Setup,
    msgs: &[&'m Message],
    count: usize,
) -> Result<Opened<'m, Int>> {
    open_round(
        &setup.modulus_field,
        setup,
        msgs,
        |m| &m.ints,
        |m| m.small.is_empty(),
        count,
        true,
    )
}

/// M9's broadcasts, checked: the gcd-step product and every dealer's M8 check.
pub(super) fn open_gcd_reveal<'m>(setup: &Setup, msgs: &[&'m Message]) -> Result<Opened<'m, Int>> {
    open_round(
        &setup.gcd_field,
        setup,
        msgs,
        |m| &m.ints,
        |m| m.small.is_empty(),
        1,
        false,
    )
}

/// How many moduli a party's M4 broadcast opens (its value count less the combinations).
pub(super) fn moduli_in(setup: &Setup, m: &Message) -> usize {
    m.ints.len().saturating_sub(2 * usize::from(setup.n))
}

/// M2: which candidates of a batch of `k` survive distributed trial division, from the product
/// parties' products (checked by [`open_sieve_products`]).
pub(super) fn sieve_passes(setup: &Setup, products: &[&[u128]], k: usize) -> Vec<bool> {
    let groups = setup.groups.len();
    (0..k)
        .map(|c| {
            setup.groups.iter().enumerate().all(|(g, group)| {
                let y = products
                    .iter()
                    .zip(&setup.lagrange127)
                    .fold(0u128, |acc, (b, l)| {
                        add127(acc, mul127(*l, b[c * groups + g]))
                    });
                debug_assert!(y < P127);
                // y = (Σ p_i mod M)(Σ q_i mod M) + M·R₀ exactly (no wrap), so y ≡ N (mod M).
                let r = (y % u128::from(group.modulus)) as u64;
                group.primes.iter().all(|&l| !r.is_multiple_of(l))
            })
        })
        .collect()
}

/// M4: each surviving candidate's opened N, or `None` where it fails the size, residue or
/// trial-division checks (from the products checked by [`open_modulus_shares`]). The products
/// are integers (`y_j = P(j)Q(j) + Z(j)`, below the ring's order), interpolated over `Z`:
/// `Σ λ'_j y_j = Δ·(Δp)(Δq) = Δ³N` exactly, or the candidate fails.
pub(super) fn open_moduli(setup: &Setup, products: &[&[Int]], count: usize) -> Vec<Option<Int>> {
    let bits = setup.params.bits as usize;
    let delta3 = setup.delta.mul(&setup.delta).mul(&setup.delta);
    (0..count)
        .map(|c| {
            let total = products
                .iter()
                .zip(&setup.int_lagrange)
                .fold(Int::zero(), |acc, (b, l)| acc.add(&l.mul(&b[c])));
            let n = total.div_exact(&delta3)?;
            #[cfg(test)]
            if forged(setup).is_some() {
                return (!n.is_negative()).then_some(n);
            }
            let ok = !n.is_negative()
                && n.bits() == bits
                && n.rem_u64(4) == 1
                && setup.trial_packs.iter().all(|(prod, primes)| {
                    let r = n.rem_u64(*prod);
                    primes.iter().all(|&l| !r.is_multiple_of(l))
                });
            ok.then_some(n)
        })
        .collect()
}

/// Checks every party's opening of a biprimality commitment (M5b against M5a, M7 against M6):
/// `per` values per modulus, in range, with the salt, matching the commitment; a wrong opening
/// names its sender. Returns every party's values (party order).
fn open_commitments<'m>(
    setup: &Setup,
    round: Round,
    batch: u32,
    msgs: &[&'m Message],
    digests: &[[u8; 32]],
    moduli: &[&Int],
    per: usize,
) -> Result<Vec<&'m [Int]>> {
    let mut bodies = Vec::with_capacity(msgs.len());
    for (m, digest) in msgs.iter().zip(digests) {
        let Some(salt) = m.digest else {
            return Err(blame(m, "opening without its salt"));
        };
        let values = expect_units(m, moduli.len() * per, moduli)?;
        if commitment(setup, round, batch, m.from, &salt, moduli, values) != *digest {
            return Err(blame(m, "opening does not match its commitment"));
        }
        bodies.push(values);
    }
    Ok(bodies)
}

/// M5b: checks every opening against its M5a commitment (naming a liar) and returns which
/// moduli pass the first biprimality repetition.
pub(super) fn first_test_passes(
    setup: &Setup,
    batch: u32,
    msgs: &[&Message],
    digests: &[[u8; 32]],
    moduli: &[&Int],
) -> Result<Vec<bool>> {
    let bodies = open_commitments(
        setup,
        Round::BiprimeFirstCommit,
        batch,
        msgs,
        digests,
        moduli,
        1,
    )?;
    Ok(moduli
        .iter()
        .enumerate()
        .map(|(c, n)| {
            let vs: Vec<&Int> = bodies.iter().map(|b| &b[c]).collect();
            #[cfg(test)]
            if forged(setup).is_some() {
                return true;
            }
            biprime_check(n, &vs)
        })
        .collect())
}

/// The public, deterministic rule that caps the moduli entering the committed repetitions:
/// the first [`MAX_CERTIFIED`](super::MAX_CERTIFIED) that pass the first repetition, in
/// candidate order; the rest are dropped.
pub(super) fn certified(mut pass: Vec<bool>) -> Vec<bool> {
    let mut kept = 0;
    for p in &mut pass {
        if *p {
            if kept == super::MAX_CERTIFIED {
                *p = false;
            } else {
                kept += 1;
            }
        }
    }
    pass
}

/// M5a and M6: everyone's commitment to its biprimality values.
pub(super) fn biprime_commitments(msgs: &[&Message]) -> Result<Vec<[u8; 32]>> {
    msgs.iter()
        .map(
            |m| match (m.digest, m.small.is_empty() && m.ints.is_empty()) {
                (Some(d), true) => Ok(d),
                _ => Err(blame(m, "expected a commitment and nothing else")),
            },
        )
        .collect()
}

/// M7: checks every opening against its commitment (naming a liar) and returns the position of
/// the first modulus that passes every repetition.
pub(super) fn chosen_candidate(
    setup: &Setup,
    batch: u32,
    msgs: &[&Message],
    digests: &[[u8; 32]],
    moduli: &[&Int],
) -> Result<Option<usize>> {
    let reps = setup.params.biprime_reps as usize - 1;
    let bodies = open_commitments(
        setup,
        Round::BiprimeCommit,
        batch,
        msgs,
        digests,
        moduli,
        reps,
    )?;
    Ok(moduli.iter().enumerate().position(|(c, n)| {
        #[cfg(test)]
        if forged(setup).is_some() {
            return true;
        }
        (0..reps).all(|rep| {
            let vs: Vec<&Int> = bodies.iter().map(|b| &b[c * reps + rep]).collect();
            biprime_check(n, &vs)
        })
    }))
}

/// M9: whether the opened gcd-step product is coprime to N (from the products checked by
/// [`open_gcd_reveal`]).
pub(super) fn gcd_passes(setup: &Setup, products: &[&[Int]], n: &Int) -> bool {
    let field = &setup.gcd_field;
    let ys: Vec<&Int> = products.iter().map(|b| &b[0]).collect();
    let z = field
        .interpolate_at_zero(&setup.product_parties, &ys)
        .rem_euclid(n);
    #[cfg(test)]
    if forged(setup).is_some() {
        return true;
    }
    z.gcd(n) == Int::one()
}

/// Test hook: the party that forges its M4 values (see `key::hooks::Hook::forge_y_party`).
#[cfg(test)]
fn forged(setup: &Setup) -> Option<u16> {
    super::key::hooks::get(&setup.params.session)
        .map(|h| h.forge_y_party)
        .filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;

    use super::super::consistency::message_digest;
    use super::super::sim::run_in_process;
    use super::super::Parameters;
    use super::*;
    use crate::error::Error;

    /// Runs a 3-party, t = 2 generation in which party 2 alters one value of the share message
    /// it sends party 3 in `round` — and publishes the digest of the altered message, so the
    /// digest check passes and only the consistency check can catch it.
    fn inconsistent_share(round: Round, at: usize, seed: u64) -> Error {
        let params = Parameters::new(512, 3, 2, [8; 32])
            .unwrap()
            .insecure_with_biprime_reps_for_tests(24)
            .unwrap();
        let rngs = (0..3u64)
            .map(|k| rand_chacha::ChaCha20Rng::seed_from_u64(seed * 10 + k))
            .collect();
        let mut pending: Option<[u8; 32]> = None;
        let mut done = false;
        let mut hook = |m: &mut Message| {
            if m.round != round || m.from != PartyIndex(2) || done {
                return;
            }
            if m.to == Some(PartyIndex(3)) {
                if round == Round::SieveShares {
                    m.small[at] = add127(m.small[at], 1);
                } else {
                    let v = &m.ints[at];
                    m.ints[at] = if v.is_zero() {
                        Int::one()
                    } else {
                        v.sub(&Int::one())
                    };
                }
                pending = Some(message_digest(m));
            } else if m.to.is_none() {
                if let Some(d) = pending.take() {
                    m.ints[2] = Int::from_bytes_be(&d);
                    done = true;
                }
            }
        };
        run_in_process(&params, rngs, Some(&mut hook)).unwrap_err()
    }

    fn assert_named(e: &Error, round: Round) {
        assert!(
            matches!(e, Error::Misbehaviour { party: PartyIndex(2), round: r, reason }
                if *r == round && reason.contains("combination")),
            "{e}"
        );
    }

    #[test]
    fn an_inconsistent_sieve_share_under_a_matching_digest_is_named() {
        assert_named(
            &inconsistent_share(Round::SieveShares, 4, 1),
            Round::SieveProducts,
        );
    }

    #[test]
    fn an_inconsistent_candidate_share_under_a_matching_digest_is_named() {
        // Value 2 of the first record: the share of the sharing of zero.
        assert_named(
            &inconsistent_share(Round::CandidateShares, 2, 2),
            Round::ModulusShares,
        );
    }

    #[test]
    fn an_inconsistent_gcd_share_under_a_matching_digest_is_named() {
        assert_named(
            &inconsistent_share(Round::GcdShares, 1, 3),
            Round::GcdReveal,
        );
    }

    /// Issue 25, break 2b: a rushing party 3 waits for parties 1 and 2's first-repetition
    /// values, opens every candidate's N from the public M4 products, and sends
    /// `v₃ = v₁ · v₂⁻¹ mod N`, so that `v₁ / (v₂ v₃) = 1` and every candidate — biprime or not —
    /// passes. With M5a its values were fixed by its commitment before anyone opened one: the
    /// steered opening does not match and party 3 is named. (Without M5a, every candidate of the
    /// batch passed the first repetition and the run went on.)
    #[test]
    fn rushing_rep1_steering_fails() {
        let params = Parameters::new(512, 3, 2, [8; 32])
            .unwrap()
            .insecure_with_biprime_reps_for_tests(24)
            .unwrap();
        let setup = Setup::new(&params);
        let rngs = (0..3u64)
            .map(|k| rand_chacha::ChaCha20Rng::seed_from_u64(70 + k))
            .collect();
        let mut m4: Vec<Message> = Vec::new();
        let mut first: Vec<Message> = Vec::new();
        let mut steered = 0usize;
        let mut hook = |m: &mut Message| {
            if m.to.is_some() || steered > 0 {
                return;
            }
            if m.round == Round::ModulusShares {
                m4.retain(|x| x.batch == m.batch);
                m4.push(m.clone());
            }
            if m.round != Round::BiprimeFirst {
                return;
            }
            if m.from != PartyIndex(3) {
                first.push(m.clone());
                return;
            }
            // Party 3, last to speak: open the moduli as everyone will, and steer.
            let msgs: Vec<&Message> = m4.iter().collect();
            let count = moduli_in(&setup, msgs[0]);
            let opened = open_modulus_shares(&setup, &msgs, count).unwrap();
            let moduli: Vec<Int> = open_moduli(&setup, &opened.products, count)
                .into_iter()
                .flatten()
                .collect();
            let (v1, v2) = (&first[first.len() - 2].ints, &first[first.len() - 1].ints);
            for (c, n) in moduli.iter().enumerate() {
                m.ints[c] = v1[c].mul_mod(&v2[c].invert(n).unwrap(), n);
            }
            steered = moduli.len();
        };
        let e = run_in_process(&params, rngs, Some(&mut hook)).unwrap_err();
        assert!(steered > 0, "the rushing party steered a batch");
        assert!(
            matches!(&e, Error::Misbehaviour { party: PartyIndex(3), round: Round::BiprimeFirst, reason }
                if reason.contains("commitment")),
            "{e}"
        );
    }

    /// Measurement for docs/performance.md (run with `--ignored --nocapture`): one biprimality
    /// repetition at 2048 bits, n = 5 — party 1's `g^((N − p₁ − q₁ + 1)/4)` (≈ 2,046-bit
    /// exponent) and another party's `g^((p_i + q_i)/4)` (≈ 1,020 bits), both with
    /// `mpz_powm_sec` as the protocol computes them — beside the same run's baseline `E`, a plain
    /// 2048-bit modexp with a 2048-bit exponent. Checks that the constant-time and the plain
    /// exponentiation agree.
    #[test]
    #[ignore = "timing measurement"]
    fn biprime_repetition_cost_at_2048_bits() {
        use std::time::Instant;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2048);
        let n = Int::random_bits(&mut rng, 2047).add(&Int::one().shl(2047));
        let n = if n.rem_u64(2) == 0 {
            n.add(&Int::one())
        } else {
            n
        };
        let g = Int::random_bits(&mut rng, 2040);
        let e_full = Int::random_bits(&mut rng, 2048);
        let e1 = SecretInt::new(Int::random_bits(&mut rng, 2046));
        let ei = SecretInt::new(Int::random_bits(&mut rng, 1020));
        let runs = 200u32;
        let time = |f: &dyn Fn() -> Int| {
            let t = Instant::now();
            let mut last = Int::zero();
            for _ in 0..runs {
                last = f();
            }
            (t.elapsed().as_secs_f64() * 1e3 / f64::from(runs), last)
        };
        let (base, _) = time(&|| g.pow_mod(&e_full, &n));
        let (first, v1) = time(&|| g.pow_mod_secret(&e1, &n));
        let (other, vi) = time(&|| g.pow_mod_secret(&ei, &n));
        let (check, _) = time(&|| vi.invert(&n).unwrap_or_else(Int::one).mul_mod(&v1, &n));
        assert_eq!(v1, g.pow_mod(e1.expose(), &n));
        assert_eq!(vi, g.pow_mod(ei.expose(), &n));
        let all = first + 4.0 * other + 5.0 * 4.0 * check;
        println!(
            "E (plain, 2048-bit exponent) {base:.3} ms; party 1 {first:.3} ms ({:.2} E); \
             party i {other:.3} ms ({:.2} E); one inverse+product {check:.4} ms; \
             one repetition, all 5 parties + 5 checks: {all:.3} ms ({:.2} E)",
            first / base,
            other / base,
            all / base
        );
    }

    /// The cap on the committed stage: the first `MAX_CERTIFIED` passing moduli, in candidate
    /// order, the rest dropped.
    #[test]
    fn at_most_max_certified_moduli_enter_the_committed_repetitions() {
        let pass = vec![
            false, true, true, false, true, true, true, true, false, true,
        ];
        let kept = certified(pass.clone());
        assert_eq!(
            kept.iter().filter(|&&k| k).count(),
            super::super::MAX_CERTIFIED
        );
        assert_eq!(
            kept,
            vec![false, true, true, false, true, true, false, false, false, false]
        );
        assert_eq!(certified(vec![true, false]), vec![true, false]);
    }

    #[test]
    fn a_share_that_does_not_match_its_digest_is_named_at_once() {
        let params = Parameters::new(512, 3, 2, [8; 32])
            .unwrap()
            .with_batch(8)
            .unwrap();
        let rngs = (0..3u64)
            .map(|k| rand_chacha::ChaCha20Rng::seed_from_u64(40 + k))
            .collect();
        let mut hook = |m: &mut Message| {
            if m.round == Round::SieveShares
                && m.from == PartyIndex(3)
                && m.to == Some(PartyIndex(1))
            {
                m.small[0] = add127(m.small[0], 1);
            }
        };
        let e = run_in_process(&params, rngs, Some(&mut hook)).unwrap_err();
        assert!(
            matches!(&e, Error::Misbehaviour { party: PartyIndex(3), round: Round::SieveShares, reason }
                if reason.contains("digest")),
            "{e}"
        );
    }
}
