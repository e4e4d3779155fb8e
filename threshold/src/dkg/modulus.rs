//! The modulus stage, rounds M1–M9 (Boneh–Franklin 2001 §3–§4, batched; see the module
//! documentation of [`crate::dkg`] for the steps and `docs/dkg.md` for the argument).

use rand_core::{CryptoRng, RngCore};

use super::field::{add127, mul127, random127, share127, P127};
use super::{blame, key, Ctx, Inbox, Message, Outgoing, Round, Setup, State, Stats, Transition};
use crate::bigint::{Int, SecretInt};
use crate::error::Result;
use crate::hash::{fingerprint, hash_to_int};
use crate::keys::PartyIndex;

/// One candidate pair, as this party's additive shares `p_i`, `q_i`.
pub(super) struct Candidate {
    /// Position in its batch (part of the biprimality base's derivation).
    index: u32,
    pub(super) p: SecretInt,
    pub(super) q: SecretInt,
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

/// Samples `K` fresh candidates and sends M1.
pub(super) fn start_batch<R: RngCore + CryptoRng + ?Sized>(
    setup: &Setup,
    me: PartyIndex,
    batch: u32,
    stats: &mut Stats,
    rng: &mut R,
) -> (State, Outgoing) {
    stats.batches += 1;
    let k = setup.params.batch;
    stats.candidates_tried += k as u64;
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
    let sample =
        |rng: &mut R| SecretInt::new(Int::random_bits(rng, setup.u_bits).shl(2).add(&offset));
    let cands: Vec<Candidate> = (0..k as u32)
        .map(|index| Candidate {
            index,
            p: sample(rng),
            q: sample(rng),
        })
        .collect();
    let ctx = Ctx { setup, me };
    let n = usize::from(setup.n);
    let (t1, t2) = (usize::from(setup.t) - 1, 2 * usize::from(setup.t) - 2);
    let per = setup.groups.len() * 3;
    let mut bodies: Vec<Vec<u128>> = (0..n).map(|_| Vec::with_capacity(k * per)).collect();
    for c in &cands {
        for g in &setup.groups {
            let x = share127(
                u128::from(c.p.expose().rem_u64(g.modulus)),
                t1,
                setup.n,
                rng,
            );
            let y = share127(
                u128::from(c.q.expose().rem_u64(g.modulus)),
                t1,
                setup.n,
                rng,
            );
            let mask = random127(rng) >> (127 - super::SIEVE_MASK_BITS);
            let r = share127(mask, t2, setup.n, rng);
            for (j, body) in bodies.iter_mut().enumerate() {
                body.extend_from_slice(&[x[j], y[j], r[j]]);
            }
        }
    }
    let direct = bodies
        .into_iter()
        .enumerate()
        .map(|(j, small)| {
            let mut m = ctx.message(Round::SieveShares, batch, Some(j as u16 + 1));
            m.small = small;
            m
        })
        .collect();
    (
        State::Sieve(SieveRound { batch, cands }),
        Outgoing {
            broadcast: None,
            direct,
        },
    )
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

fn next_batch<R: RngCore + CryptoRng + ?Sized>(
    ctx: &Ctx<'_>,
    batch: u32,
    stats: &mut Stats,
    rng: &mut R,
) -> Result<Transition> {
    let (state, out) = start_batch(ctx.setup, ctx.me, batch + 1, stats, rng);
    Ok(Transition::Next(state, out))
}

/// Waiting for M1: everyone's sieve shares.
#[derive(Debug)]
pub(super) struct SieveRound {
    pub(super) batch: u32,
    cands: Vec<Candidate>,
}

impl SieveRound {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        _rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let per = setup.groups.len() * 3;
        let len = self.cands.len() * per;
        let msgs = inbox.directs(ctx.all())?;
        let bodies = msgs
            .iter()
            .map(|m| expect_small(m, len))
            .collect::<Result<Vec<_>>>()?;
        let broadcast = setup.is_product_party(ctx.me).then(|| {
            let mut out = Vec::with_capacity(self.cands.len() * setup.groups.len());
            for c in 0..self.cands.len() {
                for (g, group) in setup.groups.iter().enumerate() {
                    let at = c * per + g * 3;
                    let (mut x, mut y, mut r) = (0u128, 0u128, 0u128);
                    for b in &bodies {
                        x = add127(x, b[at]);
                        y = add127(y, b[at + 1]);
                        r = add127(r, b[at + 2]);
                    }
                    out.push(add127(mul127(x, y), mul127(u128::from(group.modulus), r)));
                }
            }
            let mut m = ctx.message(Round::SieveProducts, self.batch, None);
            m.small = out;
            m
        });
        Ok(Transition::Next(
            State::SieveProducts(SieveProductRound {
                batch: self.batch,
                cands: self.cands,
            }),
            Outgoing {
                broadcast,
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for M2: the masked residue products.
#[derive(Debug)]
pub(super) struct SieveProductRound {
    pub(super) batch: u32,
    cands: Vec<Candidate>,
}

impl SieveProductRound {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        stats: &mut Stats,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let msgs = inbox.broadcasts(ctx.product_parties())?;
        let pass = sieve_passes(setup, &msgs, self.cands.len())?;
        let survivors: Vec<Candidate> = self
            .cands
            .into_iter()
            .zip(pass)
            .filter_map(|(c, ok)| ok.then_some(c))
            .collect();
        stats.sieve_survivors += survivors.len() as u64;
        if survivors.is_empty() {
            return next_batch(ctx, self.batch, stats, rng);
        }
        let field = &setup.modulus_field;
        let (t1, t2) = (usize::from(setup.t) - 1, 2 * usize::from(setup.t) - 2);
        let n = usize::from(setup.n);
        let mut bodies: Vec<Vec<Int>> = (0..n)
            .map(|_| Vec::with_capacity(3 * survivors.len()))
            .collect();
        for c in &survivors {
            let p = field.share(c.p.expose(), t1, setup.n, rng);
            let q = field.share(c.q.expose(), t1, setup.n, rng);
            let z = field.share(&Int::zero(), t2, setup.n, rng);
            for (j, body) in bodies.iter_mut().enumerate() {
                body.extend([p[j].clone(), q[j].clone(), z[j].clone()]);
            }
            for v in p.into_iter().chain(q).chain(z) {
                drop(SecretInt::new(v));
            }
        }
        let direct = bodies
            .into_iter()
            .enumerate()
            .map(|(j, ints)| {
                let mut m = ctx.message(Round::CandidateShares, self.batch, Some(j as u16 + 1));
                m.ints = ints;
                m
            })
            .collect();
        Ok(Transition::Next(
            State::Candidates(CandidateRound {
                batch: self.batch,
                cands: survivors,
            }),
            Outgoing {
                broadcast: None,
                direct,
            },
        ))
    }
}

/// Waiting for M3: shares of the surviving candidates.
#[derive(Debug)]
pub(super) struct CandidateRound {
    pub(super) batch: u32,
    cands: Vec<Candidate>,
}

impl CandidateRound {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let setup = ctx.setup;
        let q = &setup.modulus_field.p;
        let msgs = inbox.directs(ctx.all())?;
        let bodies = msgs
            .iter()
            .map(|m| expect_ints(m, 3 * self.cands.len(), q))
            .collect::<Result<Vec<_>>>()?;
        let broadcast = setup.is_product_party(ctx.me).then(|| {
            let ints = (0..self.cands.len())
                .map(|c| {
                    let sum = |k: usize| {
                        SecretInt::new(bodies.iter().fold(Int::zero(), |a, b| a.add(&b[3 * c + k])))
                    };
                    let (p, qq, z) = (sum(0), sum(1), sum(2));
                    p.expose().mul(qq.expose()).add(z.expose()).rem_euclid(q)
                })
                .collect();
            let mut m = ctx.message(Round::ModulusShares, self.batch, None);
            m.ints = ints;
            m
        });
        Ok(Transition::Next(
            State::Moduli(ModulusRound {
                batch: self.batch,
                cands: self.cands,
            }),
            Outgoing {
                broadcast,
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

/// Waiting for M4: the shares of each surviving candidate's N.
#[derive(Debug)]
pub(super) struct ModulusRound {
    pub(super) batch: u32,
    cands: Vec<Candidate>,
}

impl ModulusRound {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        stats: &mut Stats,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let msgs = inbox.broadcasts(ctx.product_parties())?;
        let moduli = open_moduli(setup, &msgs, self.cands.len())?;
        let survivors: Vec<(Candidate, Int)> = self
            .cands
            .into_iter()
            .zip(moduli)
            .filter_map(|(c, n)| n.map(|n| (c, n)))
            .collect();
        stats.trial_survivors += survivors.len() as u64;
        if survivors.is_empty() {
            return next_batch(ctx, self.batch, stats, rng);
        }
        let ints = survivors
            .iter()
            .map(|(c, n)| {
                let g = biprime_base(setup, self.batch, c.index, 0, n);
                biprime_value(ctx.me, c, n, &g)
            })
            .collect();
        let mut m = ctx.message(Round::BiprimeFirst, self.batch, None);
        m.ints = ints;
        Ok(Transition::Next(
            State::BiprimeFirst(FirstTestRound {
                batch: self.batch,
                cands: survivors,
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

/// Waiting for M5: the first repetition.
#[derive(Debug)]
pub(super) struct FirstTestRound {
    pub(super) batch: u32,
    cands: Vec<(Candidate, Int)>,
}

fn commitment(
    setup: &Setup,
    batch: u32,
    from: PartyIndex,
    salt: &[u8; 32],
    values: &[Int],
) -> [u8; 32] {
    let mut data = Vec::new();
    data.extend_from_slice(&setup.params.session);
    data.extend_from_slice(&batch.to_be_bytes());
    data.extend_from_slice(&from.0.to_be_bytes());
    data.extend_from_slice(salt);
    for v in values {
        let b = v.to_bytes_be();
        data.extend_from_slice(&(b.len() as u32).to_be_bytes());
        data.extend_from_slice(&b);
    }
    fingerprint(b"medtech-threshold/v1/dkg/biprime-commitment", &data)
}

impl FirstTestRound {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        stats: &mut Stats,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let moduli: Vec<&Int> = self.cands.iter().map(|(_, n)| n).collect();
        let msgs = inbox.broadcasts(ctx.all())?;
        let pass = first_test_passes(&msgs, &moduli)?;
        let survivors: Vec<(Candidate, Int)> = self
            .cands
            .into_iter()
            .zip(pass)
            .filter_map(|(c, ok)| ok.then_some(c))
            .collect();
        stats.first_test_survivors += survivors.len() as u64;
        if survivors.is_empty() {
            return next_batch(ctx, self.batch, stats, rng);
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
        let mut salt = [0u8; 32];
        rng.fill_bytes(&mut salt);
        let mut m = ctx.message(Round::BiprimeCommit, self.batch, None);
        m.digest = Some(commitment(setup, self.batch, ctx.me, &salt, &values));
        Ok(Transition::Next(
            State::BiprimeCommit(CommitRound {
                batch: self.batch,
                cands: survivors,
                values,
                salt,
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
}

impl RevealRound {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        stats: &mut Stats,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let moduli: Vec<&Int> = self.cands.iter().map(|(_, n)| n).collect();
        let msgs = inbox.broadcasts(ctx.all())?;
        let chosen_at = chosen_candidate(setup, self.batch, &msgs, &self.digests, &moduli)?;
        let chosen = chosen_at.and_then(|at| self.cands.into_iter().nth(at));
        let Some((cand, n)) = chosen else {
            return next_batch(ctx, self.batch, stats, rng);
        };
        // The gcd step's inputs: a_i = p_i + q_i (− 1 at party 1), r_i, and N·ρ_i.
        let field = &setup.gcd_field;
        let (t1, t2) = (usize::from(setup.t) - 1, 2 * usize::from(setup.t) - 2);
        let mut a = cand.p.expose().add(cand.q.expose());
        if ctx.me.0 == 1 {
            a = a.sub(&Int::one());
        }
        let a = SecretInt::new(a);
        let r = SecretInt::new(Int::random_bits(rng, setup.sizes.gcd_r));
        let rho = SecretInt::new(Int::random_bits(rng, setup.sizes.gcd_rho).mul(&n));
        let sa = field.share(a.expose(), t1, setup.n, rng);
        let sr = field.share(r.expose(), t1, setup.n, rng);
        let sm = field.share(rho.expose(), t2, setup.n, rng);
        let direct = (0..usize::from(setup.n))
            .map(|j| {
                let mut m = ctx.message(Round::GcdShares, self.batch, Some(j as u16 + 1));
                m.ints = vec![sa[j].clone(), sr[j].clone(), sm[j].clone()];
                m
            })
            .collect();
        for v in sa.into_iter().chain(sr).chain(sm) {
            drop(SecretInt::new(v));
        }
        Ok(Transition::Next(
            State::Gcd(GcdRound {
                batch: self.batch,
                cand,
                n,
            }),
            Outgoing {
                broadcast: None,
                direct,
            },
        ))
    }
}

/// Waiting for M8: the gcd step's shares.
#[derive(Debug)]
pub(super) struct GcdRound {
    pub(super) batch: u32,
    cand: Candidate,
    n: Int,
}

impl GcdRound {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let setup = ctx.setup;
        let g = &setup.gcd_field.p;
        let msgs = inbox.directs(ctx.all())?;
        let bodies = msgs
            .iter()
            .map(|m| expect_ints(m, 3, g))
            .collect::<Result<Vec<_>>>()?;
        let broadcast = setup.is_product_party(ctx.me).then(|| {
            let sum =
                |k: usize| SecretInt::new(bodies.iter().fold(Int::zero(), |a, b| a.add(&b[k])));
            let (a, r, mk) = (sum(0), sum(1), sum(2));
            let mut m = ctx.message(Round::GcdReveal, self.batch, None);
            m.ints = vec![a.expose().mul(r.expose()).add(mk.expose()).rem_euclid(g)];
            m
        });
        Ok(Transition::Next(
            State::GcdReveal(GcdRevealRound {
                batch: self.batch,
                cand: self.cand,
                n: self.n,
            }),
            Outgoing {
                broadcast,
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for M9: the opened gcd-step product.
#[derive(Debug)]
pub(super) struct GcdRevealRound {
    pub(super) batch: u32,
    cand: Candidate,
    n: Int,
}

impl GcdRevealRound {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        stats: &mut Stats,
        rng: &mut R,
    ) -> Result<Transition> {
        let msgs = inbox.broadcasts(ctx.product_parties())?;
        if !gcd_passes(ctx.setup, &msgs, &self.n)? {
            return next_batch(ctx, self.batch, stats, rng);
        }
        let (state, out) = key::start(ctx, self.n, self.cand, rng)?;
        Ok(Transition::Next(state, out))
    }
}

// The public computations of each round, shared by the parties and by the transcript verifier
// ([`super::verify`]): everything here depends on broadcasts only.

/// M2: which candidates of a batch of `k` survive distributed trial division.
pub(super) fn sieve_passes(setup: &Setup, msgs: &[&Message], k: usize) -> Result<Vec<bool>> {
    let groups = setup.groups.len();
    let bodies = msgs
        .iter()
        .map(|m| expect_small(m, k * groups))
        .collect::<Result<Vec<_>>>()?;
    Ok((0..k)
        .map(|c| {
            setup.groups.iter().enumerate().all(|(g, group)| {
                let y = bodies
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
        .collect())
}

/// M4: each surviving candidate's opened N, or `None` where it fails the size, residue or
/// trial-division checks.
pub(super) fn open_moduli(
    setup: &Setup,
    msgs: &[&Message],
    count: usize,
) -> Result<Vec<Option<Int>>> {
    let field = &setup.modulus_field;
    let bodies = msgs
        .iter()
        .map(|m| expect_ints(m, count, &field.p))
        .collect::<Result<Vec<_>>>()?;
    let bits = setup.params.bits as usize;
    Ok((0..count)
        .map(|c| {
            let ys: Vec<&Int> = bodies.iter().map(|b| &b[c]).collect();
            let n = field.interpolate_with(&setup.modulus_lagrange, &ys);
            let ok = n.bits() == bits
                && n.rem_u64(4) == 1
                && setup.trial_packs.iter().all(|(prod, primes)| {
                    let r = n.rem_u64(*prod);
                    primes.iter().all(|&l| !r.is_multiple_of(l))
                });
            ok.then_some(n)
        })
        .collect())
}

/// M5: which moduli pass the first biprimality repetition.
pub(super) fn first_test_passes(msgs: &[&Message], moduli: &[&Int]) -> Result<Vec<bool>> {
    let bodies = msgs
        .iter()
        .map(|m| expect_units(m, moduli.len(), moduli))
        .collect::<Result<Vec<_>>>()?;
    Ok(moduli
        .iter()
        .enumerate()
        .map(|(c, n)| {
            let vs: Vec<&Int> = bodies.iter().map(|b| &b[c]).collect();
            biprime_check(n, &vs)
        })
        .collect())
}

/// M6: everyone's commitment to the remaining repetitions.
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
    let mut bodies = Vec::with_capacity(msgs.len());
    for (m, digest) in msgs.iter().zip(digests) {
        let Some(salt) = m.digest else {
            return Err(blame(m, "opening without its salt"));
        };
        let values = expect_units(m, moduli.len() * reps, moduli)?;
        if commitment(setup, batch, m.from, &salt, values) != *digest {
            return Err(blame(m, "opening does not match its commitment"));
        }
        bodies.push(values);
    }
    Ok(moduli.iter().enumerate().position(|(c, n)| {
        (0..reps).all(|rep| {
            let vs: Vec<&Int> = bodies.iter().map(|b| &b[c * reps + rep]).collect();
            biprime_check(n, &vs)
        })
    }))
}

/// M9: whether the opened gcd-step product is coprime to N.
pub(super) fn gcd_passes(setup: &Setup, msgs: &[&Message], n: &Int) -> Result<bool> {
    let field = &setup.gcd_field;
    let bodies = msgs
        .iter()
        .map(|m| expect_ints(m, 1, &field.p))
        .collect::<Result<Vec<_>>>()?;
    let ys: Vec<&Int> = bodies.iter().map(|b| &b[0]).collect();
    let z = field
        .interpolate_at_zero(&setup.product_parties, &ys)
        .rem_euclid(n);
    Ok(z.gcd(n) == Int::one())
}
