//! The key stage, rounds K1–K4: shares of `d = Δ⁴·φ·β` over the integers — the φ sharing with
//! Pedersen commitments in `G_P` ([`super::pedersen`]), the β and mask sharings with Feldman
//! commitments in `Z*_{N²}` — the combination constant θ, the verification keys and the joint
//! test decryption
//! (Nishide–Sakurai 2010 §4 with BGW multiplication and integer resharing; the module
//! documentation of [`crate::dkg`] lists the steps).
//!
//! **Share ranges, checked on receipt.** A Feldman commitment binds a share but says nothing
//! about its size, so a dealer that commits honestly to a polynomial with huge or negative
//! coefficients passes the Feldman check while pushing the holder's key share out of its public
//! bound (the run then failed with no culprit). Every received share is therefore first checked
//! against the range an honest dealer's polynomial can reach at the holder's point `j`
//! ([`share_range`]: constant in `[c_low, c_high]`, the `d` other coefficients in
//! `[0, 2^c)` as [`integer_poly`] draws them, so the share lies in
//! `[c_low, c_high + (2^c − 1)·Σ_{m=1}^{d} j^m]`); a share outside it names its dealer:
//! * K1 β share: `c_low = 0`, `c_high = Δ·(2^beta − 1)`, `c = b_coeff`, `d = t − 1`
//!   (`oversized_beta_share_is_named`; without the check an oversized β dealer read the honest
//!   `F(j)` off its K3 reshares and factored `N`: `oversized_beta_dealer_cannot_learn_phi`);
//! * K1 mask share: `c_low = 0`, `c_high = N·(2^mask_rho − 1)`, `c = mask_coeff`, `d = 2t − 2`
//!   (`negative_mask_share_is_named`);
//! * K3 reshare: `±(2^e_bits − 1)` for the constant `e_j = Δ·λ'_j·F(j)B(j)` (of either sign,
//!   since `λ'_j` is), `c = g_coeff`, `d = t − 1` (`oversized_reshare_is_named`, both signs).
//!
//! The ranges are exactly what the `Sizes` of `docs/dkg.md` assume, so a run whose every
//! received share passed them stays within the public key-share bound: `2t − 1` reshares at the
//! top of their range sum below `2^share`, and with every K1 share at the top of its range
//! (and `|F(j)|` at its bound) `|e_j| < 2^e_bits` (`receipt_ranges_imply_the_key_share_bound`).
//! A key share can still only be non-positive if the honest dealers' random coefficients are
//! all below `2^(e_bits + log₂ 2t)`, probability below `2^−128`.

use rand_core::{CryptoRng, RngCore};

use super::certify::DerivedPhi;
use super::complaint::{self, Complaint};
use super::field::eval_int;
use super::message::MAX_INT_BITS;
use super::product::{self, Bases};
use super::reshare::committed_at;
use super::{blame, Ctx, Inbox, Message, Outgoing, Round, State, Transition};
use crate::bigint::{Int, SecretInt};
use crate::ciphertext::Ciphertext;
use crate::dealer::verification_base;
use crate::decrypt::proof::EqualityProof;
use crate::decrypt::PartialDecryption;
use crate::error::{Error, Result};
use crate::hash::hash_to_int;
use crate::keys::{KeyShare, PartyIndex, PublicKey, ThresholdPublicKey};

/// `v^x mod N²` for a secret exponent of either sign (`v_inv = v⁻¹`).
fn pow_signed_secret(v: &Int, v_inv: &Int, x: &Int, nn: &Int) -> Int {
    if x.is_negative() {
        v_inv.pow_mod_secret(&SecretInt::new(x.abs()), nn)
    } else {
        v.pow_mod_secret(&SecretInt::new(x.clone()), nn)
    }
}

/// A polynomial over the integers: `constant` and `degree` coefficients uniform in
/// `[0, 2^coeff_bits)`.
fn integer_poly<R: RngCore + CryptoRng + ?Sized>(
    constant: Int,
    degree: usize,
    coeff_bits: usize,
    rng: &mut R,
) -> Vec<SecretInt> {
    let mut p = vec![SecretInt::new(constant)];
    for _ in 0..degree {
        p.push(SecretInt::new(Int::random_bits(rng, coeff_bits)));
    }
    p
}

fn commit(poly: &[SecretInt], v: &Int, v_inv: &Int, nn: &Int) -> Vec<Int> {
    poly.iter()
        .map(|c| pow_signed_secret(v, v_inv, c.expose(), nn))
        .collect()
}

/// Checks `m`'s commitments: `len` units of `Z*_{N²}`.
fn expect_commitments<'m>(m: &'m Message, len: usize, nn: &Int) -> Result<&'m [Int]> {
    let c = super::modulus::expect_ints(m, len, nn)?;
    if c.iter().any(|x| x.is_zero() || x.gcd(nn) != Int::one()) {
        return Err(blame(m, "commitment is not a unit mod N²"));
    }
    Ok(c)
}

/// The range `[low, high]` of every share an honest dealer's integer polynomial can give at
/// point `j`, when its constant lies in `[c_low, c_high]` and its `degree` other coefficients in
/// `[0, 2^coeff_bits)` (as [`integer_poly`] draws them):
/// `[c_low, c_high + (2^coeff_bits − 1)·Σ_{m=1}^{degree} j^m]`.
pub(super) fn share_range(
    c_low: &Int,
    c_high: &Int,
    coeff_bits: usize,
    degree: usize,
    j: u16,
) -> (Int, Int) {
    let x = Int::from_u64(u64::from(j));
    let (mut power, mut powers) = (Int::one(), Int::zero());
    for _ in 0..degree {
        power = power.mul(&x);
        powers = powers.add(&power);
    }
    let top = Int::one().shl(coeff_bits).sub(&Int::one());
    (c_low.clone(), c_high.add(&top.mul(&powers)))
}

/// K1: the honest ranges of the β share and of the mask share at point `j`. β: constant
/// `Δβ_i` with `0 ≤ β_i < 2^beta`, degree `t − 1`, coefficients below `2^b_coeff`. Mask:
/// constant `N·ρ_i` with `0 ≤ ρ_i < 2^mask_rho`, degree `2t − 2`, coefficients below
/// `2^mask_coeff`.
pub(super) fn k1_share_ranges(setup: &super::Setup, n: &Int, j: u16) -> [(Int, Int); 2] {
    let sizes = &setup.sizes;
    let t1 = usize::from(setup.t) - 1;
    let below = |bits: usize| Int::one().shl(bits).sub(&Int::one());
    [
        share_range(
            &Int::zero(),
            &setup.delta.mul(&below(sizes.beta)),
            sizes.b_coeff,
            t1,
            j,
        ),
        share_range(
            &Int::zero(),
            &n.mul(&below(sizes.mask_rho)),
            sizes.mask_coeff,
            2 * t1,
            j,
        ),
    ]
}

/// K3: the honest range of a reshare at point `k`: constant `e_j = Δ·λ'_j·F(j)B(j)` of either
/// sign with `|e_j| < 2^e_bits`, degree `t − 1`, coefficients below `2^g_coeff`.
pub(super) fn k3_share_range(setup: &super::Setup, k: u16) -> (Int, Int) {
    let e = Int::one().shl(setup.sizes.e_bits).sub(&Int::one());
    share_range(
        &e.neg(),
        &e,
        setup.sizes.g_coeff,
        usize::from(setup.t) - 1,
        k,
    )
}

/// Why a received share lies outside its honest range (`Err` with the reason given when its
/// dealer is named). Checked before the Feldman check: a dealer that commits honestly to a
/// polynomial with huge or negative coefficients is consistent with its commitments, but its
/// shares would push the holder's key share out of its public bound with nobody named.
fn range_fault(x: &Int, (low, high): &(Int, Int), what: &str) -> core::result::Result<(), String> {
    if x < low || x > high {
        return Err(format!(
            "{what} share outside its public bound ({} bits{}; honest shares lie in \
             [{}-bit, {}-bit])",
            x.bits(),
            if x.is_negative() { ", negative" } else { "" },
            low.bits(),
            high.bits()
        ));
    }
    Ok(())
}

/// The Feldman key-stage base: `v`, `v⁻¹` and `N²`.
#[derive(Debug)]
pub(super) struct Feldman {
    v: Int,
    v_inv: Int,
    nn: Int,
}

impl Feldman {
    /// The base `v` (with `v_inv = v⁻¹`) of commitments mod `nn = N²`.
    pub(super) fn new(v: Int, v_inv: Int, nn: Int) -> Self {
        Feldman { v, v_inv, nn }
    }

    /// Why `values`, what a dealer owes holder `j` of the polynomials committed in `parts`
    /// (commitments, name, honest range at `j`), are not what an honest dealer sends.
    fn fault(
        &self,
        j: u16,
        values: &[Int],
        parts: &[(&[Int], &str, &(Int, Int))],
    ) -> core::result::Result<(), String> {
        if values.len() != parts.len() {
            return Err(format!(
                "{} integers, expected {}",
                values.len(),
                parts.len()
            ));
        }
        for (x, (cs, what, range)) in values.iter().zip(parts) {
            range_fault(x, range, what)?;
            if pow_signed_secret(&self.v, &self.v_inv, x, &self.nn) != committed_at(cs, j, &self.nn)
            {
                return Err(format!(
                    "share of the {what} polynomial does not match its Feldman commitment"
                ));
            }
        }
        Ok(())
    }

    /// K1: the fault, if any, of dealer commitments `c`'s `[β, mask]` shares at holder `j`.
    fn k1_fault(
        &self,
        setup: &super::Setup,
        n: &Int,
        c: &[Int],
        j: u16,
        values: &[Int],
    ) -> core::result::Result<(), String> {
        let t = usize::from(setup.t);
        let [rb, rm] = k1_share_ranges(setup, n, j);
        self.fault(j, values, &[(&c[..t], "β", &rb), (&c[t..], "mask", &rm)])
    }

    /// K3: the fault, if any, of reshare commitments `c`'s share at holder `j`.
    fn k3_fault(
        &self,
        setup: &super::Setup,
        c: &[Int],
        j: u16,
        values: &[Int],
    ) -> core::result::Result<(), String> {
        self.fault(j, values, &[(c, "reshare", &k3_share_range(setup, j))])
    }
}

/// Starts the key stage once `N` is certified: sends K1. The φ sharing is not dealt: it is
/// `F(x) = Δ(N + 1) − P(x) − Q(x)`, derived from the certified M3 sharings with public Pedersen
/// commitments in `G_P` ([`super::certify`]; never `v^(Δφ)`: issue 25, break 1). The broadcast
/// carries `t` Feldman commitments for `Δβ_i` and `2t − 1` for the mask; recipient `j` gets
/// `[b(j), r(j)]`.
pub(super) fn start<R: RngCore + CryptoRng + ?Sized>(
    ctx: &Ctx<'_>,
    n: Int,
    phi: DerivedPhi,
    rng: &mut R,
) -> Result<(State, Outgoing)> {
    let setup = ctx.setup;
    let sizes = &setup.sizes;
    let t1 = usize::from(setup.t) - 1;
    product::check_group_fits(setup)?;
    let pk = PublicKey::from_modulus(n.clone())?;
    let nn = pk.nn().clone();
    let v = verification_base(&pk);
    let v_inv = v
        .invert(&nn)
        .ok_or_else(|| Error::KeyGenerationFailed("verification base is not a unit".into()))?;
    #[cfg(test)]
    let phi = match hooks::get(&setup.params.session) {
        // A party whose K2 witness is not F(me) (the review's φ_j + δ, break 3).
        Some(h) if h.party == ctx.me.0 => DerivedPhi {
            share: SecretInt::new(phi.share.expose().add(&Int::from_i64(h.phi_shift))),
            ..phi
        },
        _ => phi,
    };
    let beta = SecretInt::new(Int::random_bits(rng, sizes.beta));
    let b = integer_poly(beta.expose().mul(&setup.delta), t1, sizes.b_coeff, rng);
    let rho = Int::random_bits(rng, sizes.mask_rho).mul(&n);
    #[allow(unused_mut)]
    let mut r = integer_poly(rho, 2 * t1, sizes.mask_coeff, rng);
    #[cfg(test)]
    let b = match hooks::get(&setup.params.session) {
        // A dealer that commits honestly to a β polynomial with a huge top coefficient.
        Some(h) if h.oversized == (ctx.me.0, hooks::Oversized::Beta) => {
            let mut b = b;
            b[t1] = SecretInt::new(Int::one().shl(sizes.b_coeff + 1024));
            b
        }
        Some(h) if h.oversized == (ctx.me.0, hooks::Oversized::NegativeMask) => {
            r[2 * t1] = SecretInt::new(Int::one().shl(sizes.mask_coeff).neg());
            b
        }
        _ => b,
    };
    let mut commitments = commit(&b, &v, &v_inv, &nn);
    commitments.extend(commit(&r, &v, &v_inv, &nn));
    let direct = ctx
        .all()
        .map(|j| {
            let mut m = ctx.message(Round::KeyShares, 0, Some(j));
            m.ints = vec![eval_int(&b, j), eval_int(&r, j)];
            m
        })
        .collect();
    let mut broadcast = ctx.message(Round::KeyShares, 0, None);
    broadcast.ints = commitments;
    Ok((
        State::Key1(Box::new(Round1 {
            pk,
            feldman: Feldman { v, v_inv, nn },
            phi,
            polys: [b, r],
        })),
        Outgoing {
            broadcast: Some(broadcast),
            direct,
        },
    ))
}

/// The complaint a holder broadcasts after checking its shares from every dealer in `from`
/// (`fault(dealer index, commitments, values)`): the shares that passed, `None` for the dealers
/// it accuses (listed in the message).
fn complain(
    ctx: &Ctx<'_>,
    round: Round,
    directs: &[(u16, Option<&Message>)],
    commitments: &[Vec<Int>],
    mut fault: impl FnMut(&[Int], &[Int]) -> core::result::Result<(), String>,
) -> (Vec<Option<Vec<SecretInt>>>, Message) {
    let mut against = Vec::new();
    let shares = directs
        .iter()
        .zip(commitments)
        .map(|(&(dealer, m), c)| {
            // A share that never came is complained about like a bad one (attacker review,
            // finding 2: withholding it used to stop this holder alone).
            let good = m.filter(|m| {
                // Its own shares a party does not check: it would only accuse itself.
                m.from == ctx.me || (m.small.is_empty() && fault(c, &m.ints).is_ok())
            });
            match good {
                Some(m) => Some(m.ints.iter().cloned().map(SecretInt::new).collect()),
                None => {
                    against.push(dealer);
                    None
                }
            }
        })
        .collect();
    let m = complaint::complaint_message(ctx.message(round, 0, None), &against);
    (shares, m)
}

/// The answered shares replace the complainer's: every share this party accused must have
/// been answered (its own complaint is in `list`).
fn take_answers(
    me: u16,
    dealers: &[u16],
    list: &[Complaint],
    answers: &[&[Int]],
    shares: &mut [Option<Vec<SecretInt>>],
) -> Result<Vec<Vec<SecretInt>>> {
    for (c, a) in list.iter().zip(answers) {
        if c.by == me {
            if let Some(pos) = dealers.iter().position(|&d| d == c.against) {
                shares[pos] = Some(a.iter().cloned().map(SecretInt::new).collect());
            }
        }
    }
    shares
        .iter_mut()
        .map(|s| {
            s.take().ok_or_else(|| {
                Error::KeyGenerationFailed("a complaint of this party was left unanswered".into())
            })
        })
        .collect()
}

/// Waiting for K1: integer shares of everyone's `Δβ_i` and mask, with commitments.
#[derive(Debug)]
pub(super) struct Round1 {
    pk: PublicKey,
    feldman: Feldman,
    /// The derived φ sharing: public commitments, this party's share and its opening.
    phi: DerivedPhi,
    /// This party's β and mask polynomials, kept to answer complaints in K1c.
    polys: [Vec<SecretInt>; 2],
}

impl Round1 {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let setup = ctx.setup;
        let commitments: Vec<Vec<Int>> =
            key_commitments(setup, &inbox.broadcasts(ctx.all())?, &self.feldman.nn)?
                .into_iter()
                .map(<[Int]>::to_vec)
                .collect();
        let directs: Vec<(u16, Option<&Message>)> =
            ctx.all().map(|d| (d, inbox.direct(d))).collect();
        let n = self.pk.n().clone();
        let (shares, m) = complain(ctx, Round::KeyComplaints, &directs, &commitments, |c, x| {
            self.feldman.k1_fault(setup, &n, c, ctx.me.0, x)
        });
        Ok(Transition::Next(
            State::Key1b(Box::new(Round1b {
                round1: self,
                commitments,
                shares,
            })),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for K1b: everyone's complaints about their K1 shares.
#[derive(Debug)]
pub(super) struct Round1b {
    round1: Round1,
    /// Every dealer's K1 commitments (party order).
    commitments: Vec<Vec<Int>>,
    /// `[β, mask]` from every dealer (party order); `None` where this party complained.
    shares: Vec<Option<Vec<SecretInt>>>,
}

impl Round1b {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let list = key_complaints(ctx.setup, &inbox.broadcasts(ctx.all())?)?;
        let [b, r] = &self.round1.polys;
        let mut m = ctx.message(Round::KeyAnswers, 0, None);
        m.ints = complaint::answer_values(&list, ctx.me.0, usize::from(ctx.setup.t), |j| {
            vec![eval_int(b, j), eval_int(r, j)]
        });
        Ok(Transition::Next(
            State::Key1c(Box::new(Round1c { b: self, list })),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for K1c: the accused dealers' public answers.
#[derive(Debug)]
pub(super) struct Round1c {
    b: Round1b,
    /// Everyone's K1b complaints, checked.
    list: Vec<Complaint>,
}

impl Round1c {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let Round1c {
            b:
                Round1b {
                    round1,
                    commitments,
                    mut shares,
                },
            list,
        } = self;
        let Round1 {
            pk,
            feldman,
            phi,
            polys,
        } = round1;
        drop(polys);
        let refs: Vec<&[Int]> = commitments.iter().map(Vec::as_slice).collect();
        let answers = key_answers(
            setup,
            pk.n(),
            &feldman,
            &refs,
            &list,
            &inbox.broadcasts(ctx.all())?,
        )?;
        let all: Vec<u16> = ctx.all().collect();
        let shares = take_answers(ctx.me.0, &all, &list, &answers, &mut shares)?;
        let (mut b, mut r) = (Int::zero(), Int::zero());
        for s in &shares {
            b = b.add(s[0].expose());
            r = r.add(s[1].expose());
        }
        let (b, r) = (SecretInt::new(b), SecretInt::new(r));
        let DerivedPhi {
            commitments: phi_commitments,
            share: f,
            opening,
        } = phi;
        let h = SecretInt::new(f.expose().mul(b.expose()));
        let bases = product::bases(setup, &phi_commitments, &refs, &feldman.nn)?;
        let own = bases.iter().find(|x| x.party() == ctx.me.0);
        let broadcast = match own {
            Some(own) => {
                let mut m = ctx.message(Round::MaskedProduct, 0, None);
                m.ints = product::prove(
                    setup,
                    pk.n(),
                    &feldman.nn,
                    &feldman.v,
                    &feldman.v_inv,
                    own,
                    &f,
                    &opening,
                    &h.expose().add(r.expose()),
                    rng,
                )?;
                Some(m)
            }
            None => None,
        };
        Ok(Transition::Next(
            State::Key2(Round2 {
                pk,
                v: feldman.v,
                v_inv: feldman.v_inv,
                h,
                bases,
            }),
            Outgoing {
                broadcast,
                direct: Vec::new(),
            },
        ))
    }
}

/// K1b as everyone checks it (the parties and `verify::replay`): every party's complaints
/// against K1 dealers (party order).
pub(super) fn key_complaints(setup: &super::Setup, msgs: &[&Message]) -> Result<Vec<Complaint>> {
    let all: Vec<u16> = (1..=setup.n).collect();
    complaint::complaints(msgs, &all, true)
}

/// K3b as everyone checks it: every party's complaints against the product parties.
pub(super) fn reshare_complaints(
    setup: &super::Setup,
    msgs: &[&Message],
) -> Result<Vec<Complaint>> {
    complaint::complaints(msgs, &setup.product_parties, true)
}

/// K1c as everyone checks it: each answer to `list` against its dealer's commitments (party
/// order) and the complainer's ranges. Returns the answers (complaint order).
pub(super) fn key_answers<'m>(
    setup: &super::Setup,
    n: &Int,
    feldman: &Feldman,
    commitments: &[&[Int]],
    list: &[Complaint],
    answers: &[&'m Message],
) -> Result<Vec<&'m [Int]>> {
    complaint::answers(answers, list, 2, "K1", |c, values| {
        let dealer = commitments[usize::from(c.against) - 1];
        feldman.k1_fault(setup, n, dealer, c.by, values)
    })
}

/// K3c as everyone checks it: each answer to `list` against its reshare commitments
/// (product-party order) and the complainer's range.
pub(super) fn reshare_answers<'m>(
    setup: &super::Setup,
    feldman: &Feldman,
    commitments: &[&[Int]],
    list: &[Complaint],
    answers: &[&'m Message],
) -> Result<Vec<&'m [Int]>> {
    complaint::answers(answers, list, 1, "K3", |c, values| {
        let pos = setup
            .product_parties
            .iter()
            .position(|&p| p == c.against)
            .ok_or_else(|| "not a product party".to_string())?;
        feldman.k3_fault(setup, commitments[pos], c.by, values)
    })
}

/// Waiting for K2: the masked products that open θ.
#[derive(Debug)]
pub(super) struct Round2 {
    pk: PublicKey,
    v: Int,
    v_inv: Int,
    /// `F(me)·B(me)`, this party's degree-`2t − 2` share of `Δ²φβ`.
    h: SecretInt,
    /// What the K1 commitments say about every product party (for the K2 proofs).
    bases: Vec<Bases>,
}

impl Round2 {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let n = self.pk.n().clone();
        let nn = self.pk.nn().clone();
        let products = inbox.broadcasts(ctx.product_parties())?;
        let (ys, ws) =
            product::verify(setup, &n, &nn, &self.v, &self.v_inv, &self.bases, &products)?;
        let theta = open_theta(setup, &ys, &n)?;
        let mut out = Outgoing::default();
        let mut reshare = None;
        if let Some(pos) = setup.product_parties.iter().position(|&p| p == ctx.me.0) {
            let e = self
                .h
                .expose()
                .mul(&setup.int_lagrange[pos])
                .mul(&setup.delta);
            #[allow(unused_mut)]
            let mut g = integer_poly(e, usize::from(setup.t) - 1, setup.sizes.g_coeff, rng);
            #[cfg(test)]
            if let Some(h) = hooks::get(&setup.params.session) {
                // A product party that commits honestly to a reshare polynomial with a huge
                // (or negative) top coefficient; its constant stays the proven one.
                let top = Int::one().shl(setup.sizes.g_coeff + 64);
                let last = g.len() - 1;
                if h.oversized == (ctx.me.0, hooks::Oversized::Reshare) {
                    g[last] = SecretInt::new(top);
                } else if h.oversized == (ctx.me.0, hooks::Oversized::NegativeReshare) {
                    g[last] = SecretInt::new(top.neg());
                }
            }
            let mut b = ctx.message(Round::Reshare, 0, None);
            b.ints = commit(&g, &self.v, &self.v_inv, &nn);
            out.broadcast = Some(b);
            out.direct = ctx
                .all()
                .map(|k| {
                    let mut m = ctx.message(Round::Reshare, 0, Some(k));
                    m.ints = vec![eval_int(&g, k)];
                    m
                })
                .collect();
            reshare = Some(g);
        }
        Ok(Transition::Next(
            State::Key3(Box::new(Round3 {
                pk: self.pk,
                feldman: Feldman {
                    v: self.v,
                    v_inv: self.v_inv,
                    nn,
                },
                theta,
                ws,
                reshare,
            })),
            out,
        ))
    }
}

/// Waiting for K3: the product parties' reshares.
#[derive(Debug)]
pub(super) struct Round3 {
    pk: PublicKey,
    feldman: Feldman,
    theta: Int,
    /// `W_j = v^(F(j)B(j))` of every product party, proven in K2.
    ws: Vec<Int>,
    /// This party's reshare polynomial (product parties), kept to answer complaints in K3c.
    reshare: Option<Vec<SecretInt>>,
}

impl Round3 {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let setup = ctx.setup;
        let broadcasts = inbox.broadcasts(ctx.product_parties())?;
        let commitments: Vec<Vec<Int>> =
            reshare_commitments(setup, &self.ws, &broadcasts, &self.feldman.nn)?
                .into_iter()
                .map(<[Int]>::to_vec)
                .collect();
        let directs: Vec<(u16, Option<&Message>)> = ctx
            .product_parties()
            .map(|d| (d, inbox.direct(d)))
            .collect();
        let (shares, m) = complain(
            ctx,
            Round::ReshareComplaints,
            &directs,
            &commitments,
            |c, x| self.feldman.k3_fault(setup, c, ctx.me.0, x),
        );
        Ok(Transition::Next(
            State::Key3b(Box::new(Round3b {
                round3: self,
                commitments,
                shares,
            })),
            Outgoing {
                broadcast: Some(m),
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for K3b: everyone's complaints about their reshares.
#[derive(Debug)]
pub(super) struct Round3b {
    round3: Round3,
    /// Every product party's reshare commitments (product-party order).
    commitments: Vec<Vec<Int>>,
    /// The reshare from every product party; `None` where this party complained.
    shares: Vec<Option<Vec<SecretInt>>>,
}

impl Round3b {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let list = reshare_complaints(ctx.setup, &inbox.broadcasts(ctx.all())?)?;
        let mut out = Outgoing::default();
        if let Some(g) = &self.round3.reshare {
            let mut m = ctx.message(Round::ReshareAnswers, 0, None);
            m.ints = complaint::answer_values(&list, ctx.me.0, usize::from(ctx.setup.t), |k| {
                vec![eval_int(g, k)]
            });
            out.broadcast = Some(m);
        }
        Ok(Transition::Next(
            State::Key3c(Box::new(Round3c { b: self, list })),
            out,
        ))
    }
}

/// Waiting for K3c: the accused product parties' public answers.
#[derive(Debug)]
pub(super) struct Round3c {
    b: Round3b,
    /// Everyone's K3b complaints, checked.
    list: Vec<Complaint>,
}

impl Round3c {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let Round3c {
            b:
                Round3b {
                    round3,
                    commitments,
                    mut shares,
                },
            list,
        } = self;
        let Round3 {
            pk,
            feldman,
            theta,
            reshare,
            ..
        } = round3;
        drop(reshare);
        let refs: Vec<&[Int]> = commitments.iter().map(Vec::as_slice).collect();
        let answers = reshare_answers(
            setup,
            &feldman,
            &refs,
            &list,
            &inbox.broadcasts(ctx.product_parties())?,
        )?;
        let shares = take_answers(
            ctx.me.0,
            &setup.product_parties,
            &list,
            &answers,
            &mut shares,
        )?;
        let s = SecretInt::new(
            shares
                .iter()
                .fold(Int::zero(), |acc, x| acc.add(x[0].expose())),
        );
        let bound = setup.sizes.share.min(MAX_INT_BITS);
        if s.expose().is_negative() || s.expose().is_zero() || s.expose().bits() > bound {
            return Err(Error::KeyGenerationFailed(
                "key share outside its public bound".into(),
            ));
        }
        let key = public_key(setup, pk, feldman.v, theta, &refs)?;
        let share = KeyShare::new(ctx.me, s, key.fingerprint());
        let mut b = ctx.message(Round::TestDecryption, 0, None);
        b.ints = test_partial(&setup.params.session, &key, &share, rng)?;
        Ok(Transition::Next(
            State::Key4(Round4 { key, share }),
            Outgoing {
                broadcast: Some(b),
                direct: Vec::new(),
            },
        ))
    }
}

/// Waiting for K4: every party's partial decryption of the test ciphertext. The key and the
/// share are output only if all `n` proofs verify and every `t`-subset decrypts to `m*`.
#[derive(Debug)]
pub(super) struct Round4 {
    key: ThresholdPublicKey,
    share: KeyShare,
}

impl Round4 {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        check_test_decryption(
            &ctx.setup.params.session,
            &self.key,
            &inbox.broadcasts(ctx.all())?,
        )?;
        Ok(Transition::Done(self.key, self.share))
    }
}

// The public computations of the key stage, shared with the transcript verifier.

/// K1: every party's `3t − 1` commitments: `t` for β and `2t − 1` for the mask, checked to be
/// units of `Z*_{N²}`.
pub(super) fn key_commitments<'m>(
    setup: &super::Setup,
    msgs: &[&'m Message],
    nn: &Int,
) -> Result<Vec<&'m [Int]>> {
    let t = usize::from(setup.t);
    msgs.iter()
        .map(|m| {
            if m.ints.len() != 3 * t - 1 || !m.small.is_empty() {
                return Err(blame(
                    m,
                    format!("{} integers, expected {}", m.ints.len(), 3 * t - 1),
                ));
            }
            if m.ints
                .iter()
                .any(|x| x.is_negative() || x >= nn || x.is_zero() || x.gcd(nn) != Int::one())
            {
                return Err(blame(m, "commitment is not a unit mod N²"));
            }
            Ok(m.ints.as_slice())
        })
        .collect()
}

/// K3: the product parties' reshare commitments (`t` units each), with each reshared constant
/// checked against the product proven in K2 (`ws`, see [`product`]).
pub(super) fn reshare_commitments<'m>(
    setup: &super::Setup,
    ws: &[Int],
    msgs: &[&'m Message],
    nn: &Int,
) -> Result<Vec<&'m [Int]>> {
    let t = usize::from(setup.t);
    let commitments = msgs
        .iter()
        .map(|m| expect_commitments(m, t, nn))
        .collect::<Result<Vec<_>>>()?;
    let constants: Vec<&Int> = commitments.iter().map(|c| &c[0]).collect();
    product::check_reshared_constants(setup, nn, ws, msgs, &constants)?;
    Ok(commitments)
}

/// K2: θ from the product parties' masked products `ys` (proven by [`product::verify`]).
pub(super) fn open_theta(setup: &super::Setup, ys: &[Int], n: &Int) -> Result<Int> {
    // Δ·(Δ²φβ + N·ρ) = Σ λ'_j y_j over the integers.
    let total = ys
        .iter()
        .zip(&setup.int_lagrange)
        .fold(Int::zero(), |acc, (y, l)| acc.add(&y.mul(l)));
    let opened = total.div_exact(&setup.delta).ok_or_else(|| {
        Error::KeyGenerationFailed(
            "the published products do not lie on one polynomial (a product party lied)".into(),
        )
    })?;
    let theta = opened
        .rem_euclid(n)
        .mul(&setup.delta)
        .mul(&setup.delta)
        .rem_euclid(n);
    if theta.is_zero() || theta.gcd(n) != Int::one() {
        return Err(Error::KeyGenerationFailed("θ is not a unit mod N".into()));
    }
    Ok(theta)
}

/// K3: the threshold key from the reshare commitments: `v_k = (Π_j Π_m D_{j,m}^(k^m))^Δ`.
pub(super) fn public_key(
    setup: &super::Setup,
    pk: PublicKey,
    v: Int,
    theta: Int,
    commitments: &[&[Int]],
) -> Result<ThresholdPublicKey> {
    let nn = pk.nn().clone();
    let vks = (1..=setup.n)
        .map(|k| {
            commitments
                .iter()
                .fold(Int::one(), |acc, c| {
                    acc.mul_mod(&committed_at(c, k, &nn), &nn)
                })
                .pow_mod(&setup.delta, &nn)
        })
        .collect();
    ThresholdPublicKey::from_parts(
        pk,
        setup.n,
        setup.t,
        v,
        vks,
        theta,
        setup.sizes.share.min(MAX_INT_BITS) as u32,
    )
}

/// The context K4's partial-decryption proofs are bound to (with the session).
fn test_context(session: &[u8; 32]) -> Vec<u8> {
    let mut c = b"medtech-threshold/v1/dkg-k4".to_vec();
    c.extend_from_slice(session);
    c
}

/// K4's challenge `c* = (1+N)^(m*)·h_s^(r*)`, with `m*` and `r*` hashed from the session and
/// the fingerprint of the key K3 produced (which binds N, v, every v_k and θ, themselves
/// determined by the broadcasts). Returns `(m*, c*)`. The factor `h_s^(r*)` is what makes the
/// test meaningful: `(1+N)^(m*)` alone decrypts correctly under any exponent `d ≡ θ (mod N)`,
/// including a `d ≢ 0 (mod φ)` (test `broken_key_fails_k4`).
pub(super) fn test_ciphertext(
    session: &[u8; 32],
    key: &ThresholdPublicKey,
) -> Result<(Int, Ciphertext)> {
    let pk = key.public_key();
    let mut data = session.to_vec();
    data.extend_from_slice(&key.fingerprint());
    // |m*| = |N| − 2 bits, so m* < N.
    let m = hash_to_int(
        b"medtech-threshold/v1/dkg-k4/m",
        &data,
        pk.bits() as usize - 2,
    );
    let r = hash_to_int(b"medtech-threshold/v1/dkg-k4/r", &data, pk.nonce_bits());
    #[cfg(test)]
    let r = if hooks::get(session).is_some_and(|h| h.k4_without_randomness) {
        Int::zero()
    } else {
        r
    };
    // r* is public: SecretInt only because `encrypt_raw` takes nonces that way.
    Ok((m.clone(), pk.encrypt_raw(&m, &SecretInt::new(r))?))
}

/// This party's test partial decryption (K4, and the re-sharing's R2): `[c_i, e, z]`.
pub(super) fn test_partial<R: RngCore + CryptoRng + ?Sized>(
    session: &[u8; 32],
    key: &ThresholdPublicKey,
    share: &KeyShare,
    rng: &mut R,
) -> Result<Vec<Int>> {
    let (_, c) = test_ciphertext(session, key)?;
    let partial = share.partial_decrypt(key, &test_context(session), &c, rng)?;
    Ok(vec![
        partial.ci.clone(),
        Int::from_u128(partial.proof.e),
        partial.proof.z.clone(),
    ])
}

/// K4, public side (each party live, and [`super::verify::replay`]; the re-sharing's R2 too):
/// every party's message must be `[c_i, e, z]`, a partial decryption of [`test_ciphertext`]
/// whose proof verifies against its verification key — a failure names the sender — and every
/// `t`-subset of the partials must combine to `m*`, else the key is refused (no party is named:
/// with every proof valid, the partials are consistent with the verification keys, so the
/// fault is in the key itself, e.g. `d ≢ 0 mod φ`).
pub(super) fn check_test_decryption(
    session: &[u8; 32],
    key: &ThresholdPublicKey,
    msgs: &[&Message],
) -> Result<()> {
    let (m, c) = test_ciphertext(session, key)?;
    let context = test_context(session);
    let max_z = key.proof_nonce_bits() + 1;
    let mut verified = Vec::with_capacity(msgs.len());
    for msg in msgs {
        let [ci, e, z] = msg.ints.as_slice() else {
            return Err(blame(
                msg,
                format!("{} integers, expected 3", msg.ints.len()),
            ));
        };
        if !msg.small.is_empty() || msg.digest.is_some() {
            return Err(blame(
                msg,
                "unexpected values beside the test partial decryption",
            ));
        }
        if e.is_negative() || e.bits() > 128 {
            return Err(blame(msg, "test-decryption challenge out of range"));
        }
        // At most 16 big-endian bytes (checked above).
        let e = e
            .to_bytes_be()
            .iter()
            .fold(0u128, |acc, &b| (acc << 8) | u128::from(b));
        if z.is_negative() || z.bits() > max_z {
            return Err(blame(msg, "test-decryption response out of range"));
        }
        let partial = PartialDecryption {
            party: msg.from,
            ci: ci.clone(),
            proof: EqualityProof { e, z: z.clone() },
        };
        let v = key
            .verify_partial(&context, &c, &partial)
            .map_err(|err| blame(msg, format!("test partial decryption refused: {err}")))?;
        verified.push(v);
    }
    let n = u32::try_from(verified.len()).unwrap_or(u32::MAX).min(16);
    let t = u32::from(key.threshold());
    for mask in 0u32..(1 << n) {
        if mask.count_ones() != t {
            continue;
        }
        let set: Vec<_> = (0..n as usize)
            .filter(|i| mask & (1 << i) != 0)
            .filter_map(|i| verified.get(i).cloned())
            .collect();
        // A combination that fails outright (not 1 mod N) is a wrong decryption too.
        let decrypts = matches!(
            key.combine(&context, &c, &set),
            Ok(out) if out.plaintext.0.rem_euclid(key.public_key().n()) == m
        );
        if !decrypts {
            let parties: Vec<PartyIndex> = set.iter().map(|v| v.party()).collect();
            return Err(Error::KeyGenerationFailed(format!(
                "K4: the valid partials of parties {parties:?} do not decrypt the test \
                 ciphertext; the key is unusable and is not output"
            )));
        }
    }
    Ok(())
}

/// Test-only deviations of an honest party, keyed by session so that tests running in
/// parallel do not see each other's.
#[cfg(test)]
pub(super) mod hooks {
    use std::sync::Mutex;

    /// One deviation.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Hook {
        pub(crate) session: [u8; 32],
        /// The party that adds `phi_shift` to its K2 witness `F(j)` (the review's shifted
        /// `φ_j`, issue 25, break 3: now named by the K2 proof).
        pub(crate) party: u16,
        pub(crate) phi_shift: i64,
        /// Added to `Φ_0`'s public constant `Δ(N + 1)` at every party: a key with
        /// `d ≢ 0 (mod φ)` whose every proof verifies (what K4 must catch).
        pub(crate) phi_offset: i64,
        /// The party that commits in C1 to `P_i + 1` instead of the `P_i` it dealt in M3.
        pub(crate) c1_shift_party: u16,
        /// The party whose M4 value `y_j` is shifted by `Δ³` for every candidate, and every
        /// modulus that opens is then treated as passing the biprimality and gcd tests (an
        /// attacker that already beat them), so the forged `y_j` reaches C2.
        pub(crate) forge_y_party: u16,
        /// `(holder, dealer)`: the holder complains in C1b against a dealer whose C1 values
        /// are fine (a corrupt holder trying to frame an honest dealer).
        pub(crate) false_complaint: (u16, u16),
        /// K4 with `c* = (1+N)^(m*)` (no `h_s^(r*)` factor), at every party.
        pub(crate) k4_without_randomness: bool,
        /// `(dealer, which)`: the dealer commits honestly to a key-stage polynomial with a
        /// coefficient outside its public size (`(0, Oversized::None)`: nobody).
        pub(crate) oversized: (u16, Oversized),
        /// The party that multiplies every first-repetition biprimality value by the public
        /// base before committing to it in M5a (a candidate killer consistent with its own
        /// commitments, which only the batch audit catches).
        pub(crate) kill_biprime_party: u16,
    }

    /// Which key-stage polynomial a dealer inflates (its top coefficient).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(crate) enum Oversized {
        None,
        /// K1 β sharing: `2^(b_coeff + 1024)`.
        Beta,
        /// K1 mask: `−2^mask_coeff`.
        NegativeMask,
        /// K3 reshare: `2^(g_coeff + 64)`.
        Reshare,
        /// K3 reshare: `−2^(g_coeff + 64)`.
        NegativeReshare,
    }

    static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

    pub(crate) fn set(hook: Hook) {
        if let Ok(mut h) = HOOKS.lock() {
            h.push(hook);
        }
    }

    pub(crate) fn get(session: &[u8; 32]) -> Option<Hook> {
        HOOKS
            .lock()
            .ok()?
            .iter()
            .find(|h| &h.session == session)
            .copied()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::super::fixtures::{hook, params, rngs, M4Killer};
    use super::super::sim::{run_in_process, run_in_process_each};
    use super::super::verify::replay;
    use super::super::{Message, Parameters, Round};
    use super::hooks;
    use crate::bigint::Int;

    /// Paillier's `L(x) = (x − 1)/N`, defined only on the subgroup generated by `1 + N` (where
    /// discrete logarithms to any base are divisions mod N).
    fn l(x: &Int, n: &Int) -> Option<Int> {
        x.sub(&Int::one()).div_exact(n)
    }

    /// Integer square root (for the attack's last step only).
    fn isqrt(x: &Int) -> Int {
        use curv::arithmetic::Roots;
        Int::from_curv(&x.to_curv().sqrt())
    }

    /// Issue 25, break 1, as a reader of the public transcript plays it: from the broadcasts
    /// alone, `C = Π_i (K1 constant of the φ sharing of i) = v^(Δφ)` and
    /// `D = Π_j (K3 reshare constant of j) = v^d` both lie in the `1 + N` subgroup
    /// (φ and `d ≡ 0 mod φ` annihilate the rest of `Z*_{N²}`), with `L(C) = a·Δφ` and
    /// `L(D) = a·θ` mod N for the unknown `a` with `v ≡ (1 + N)^a·w`. So
    /// `φ = θ·L(C) / (Δ·L(D)) mod N` exactly, and `p, q` are the roots of
    /// `x² − (N + 1 − φ)x + N`. Returns the factors if the attack works.
    fn factor_from_transcript(params: &Parameters, broadcasts: &[Message]) -> Option<(Int, Int)> {
        let key = replay(params, broadcasts).ok()?.key;
        let (n, nn) = (key.public_key().n(), key.public_key().nn());
        let constants = |round: Round| {
            broadcasts
                .iter()
                .filter(|m| m.round == round)
                .filter_map(|m| m.ints.first())
                .fold(Int::one(), |acc, c| acc.mul_mod(c, nn))
        };
        let lc = l(&constants(Round::KeyShares), n)?;
        let ld = l(&constants(Round::Reshare), n)?;
        let phi = key
            .theta()
            .mul(&lc)
            .mul_mod(&key.delta().mul(&ld).rem_euclid(n).invert(n)?, n);
        let s = n.add(&Int::one()).sub(&phi);
        let disc = s.mul(&s).sub(&n.mul_u64(4));
        if disc.is_negative() {
            return None;
        }
        let r = isqrt(&disc);
        let (p, q) = (s.add(&r).shr(1), s.sub(&r).shr(1));
        (p.mul(&q) == *n && p > Int::one() && q > Int::one()).then_some((p, q))
    }

    /// Issue 25 / docs/dkg.md Limits: a dealer whose K1 or K3 polynomial has a coefficient
    /// outside its public size, *consistently with its own Feldman commitments*, must be named
    /// by the holders on receipt. Before the range check, these runs ended with
    /// `KeyGenerationFailed("key share outside its public bound")` and no culprit (confirmed
    /// on the previous commit).
    fn oversized_share_is_named(session: u8, party: u16, which: hooks::Oversized, round: Round) {
        hooks::set(hooks::Hook {
            oversized: (party, which),
            ..hook(session)
        });
        let err =
            run_in_process(&params(session), rngs(u64::from(session) * 100), None).unwrap_err();
        assert_eq!(err.culprits(), vec![crate::PartyIndex(party)], "{err:?}");
        assert!(
            // Every other holder complains; with t of them the dealer may not answer (its
            // polynomial would be public) and is named for the missing answers; with fewer,
            // its answers show the oversized shares.
            matches!(&err, crate::Error::Misbehaviour { round: r, reason, .. }
                if *r == round && (reason.contains("outside its public bound")
                    || reason.contains("0 values answering"))),
            "{err:?}"
        );
    }

    /// `round(a / b)` over the integers.
    fn round_div(a: &Int, b: &Int) -> Int {
        let (a, b) = if b.is_negative() {
            (a.neg(), b.neg())
        } else {
            (a.clone(), b.clone())
        };
        let num = a.shl(1).add(&b);
        let den = b.shl(1);
        num.sub(&num.rem_euclid(&den)).div_exact(&den).unwrap()
    }

    /// Why the range check matters beyond availability: a β dealer that commits honestly to a
    /// top coefficient `2^1024` times too large makes every holder's `B(j)` that large, so an
    /// honest product party's K3 constant `e_j = Δ·λ'_j·F(j)B(j)` dwarfs the reshare's random
    /// coefficients (`2^g_coeff`), and the dealer — also a K3 recipient — reads `F(j)` off the
    /// reshare `g_j(2)` it receives: `F(j) = round(g_j(2) / (Δ·λ'_j·b_2(j)))`. With `t` such
    /// points it interpolates `F(0) = Δφ` and factors `N`. Without the range check (confirmed:
    /// `check_range` disabled) the run completes, the key sums stay inside their public bound,
    /// and this attack factors `N`; with it, the dealer is named in K1 and no reshare is ever
    /// sent.
    #[test]
    fn oversized_beta_dealer_cannot_learn_phi() {
        hooks::set(hooks::Hook {
            oversized: (2, hooks::Oversized::Beta),
            ..hook(44)
        });
        let params = params(44);
        let setup = super::super::Setup::new(&params);
        // The attacker's view: its own K1 β shares b_2(j) and the K3 reshares sent to it.
        let mut b2 = std::collections::BTreeMap::new();
        let mut reshares = std::collections::BTreeMap::new();
        let mut spy = |m: &mut Message| match (m.round, m.from.0, m.to.map(|p| p.0)) {
            (Round::KeyShares, 2, Some(j)) => {
                b2.insert(j, m.ints[0].clone());
            }
            (Round::Reshare, j, Some(2)) if j != 2 => {
                reshares.insert(j, m.ints[0].clone());
            }
            _ => {}
        };
        let run = run_in_process(&params, rngs(4400), Some(&mut spy));
        let factored = run.as_ref().ok().and_then(|run| {
            let n = run.outputs[0].key.public_key().n().clone();
            // F at the honest product parties 1 and 3 (t = 2: F has degree 1).
            let f = |j: u16| {
                let pos = setup.product_parties.iter().position(|&p| p == j)?;
                let den = setup.delta.mul(&setup.int_lagrange[pos]).mul(b2.get(&j)?);
                Some(round_div(reshares.get(&j)?, &den))
            };
            let (f1, f3) = (f(1)?, f(3)?);
            // F(0) = (3F(1) − F(3))/2 = Δφ.
            let phi = f1.mul_u64(3).sub(&f3).div_exact(&Int::from_u64(2))?;
            let phi = phi.div_exact(&setup.delta)?;
            let s = n.add(&Int::one()).sub(&phi);
            let disc = s.mul(&s).sub(&n.mul_u64(4));
            if disc.is_negative() {
                return None;
            }
            let r = isqrt(&disc);
            let (p, q) = (s.add(&r).shr(1), s.sub(&r).shr(1));
            (p.mul(&q) == n && p > Int::one()).then_some(p)
        });
        assert!(
            factored.is_none(),
            "an oversized β dealer factored N from its reshares"
        );
        let err = run.unwrap_err();
        assert_eq!(err.culprits(), vec![crate::PartyIndex(2)], "{err:?}");
        assert!(
            reshares.is_empty(),
            "no reshare is sent after K1 refuses the dealer"
        );
    }

    /// Runs with `tamper` and records every broadcast as delivered (after tampering).
    fn run_recorded(
        session: u8,
        mut tamper: impl FnMut(&mut Message),
    ) -> (
        core::result::Result<super::super::sim::Run, Vec<Option<crate::Error>>>,
        Vec<Message>,
    ) {
        let mut recorded = Vec::new();
        let mut spy = |m: &mut Message| {
            tamper(m);
            if m.to.is_none() {
                recorded.push(m.clone());
            }
        };
        let run = run_in_process_each(
            &params(session),
            rngs(u64::from(session) * 100),
            Some(&mut spy),
        );
        (run, recorded)
    }

    /// Issue 30 §1: a dealer that sends one holder a bad private share (here: the β share of
    /// dealer 2 to holder 3, off by one — consistent with nothing but what it sent). Before
    /// K1b–K1c only holder 3 stopped, naming 2, while the others waited for holder 3 and — in
    /// the ceremony — timed out and named *it*. Now holder 3 complains in public, dealer 2
    /// answers with the true share, everyone checks it, and the run completes with the key the
    /// untampered run makes; the transcript replays.
    #[test]
    fn a_bad_private_k1_share_is_answered_in_public_and_the_run_completes() {
        let honest = run_in_process(&params(61), rngs(6100), None).unwrap();
        let (run, recorded) = run_recorded(61, |m| {
            if m.round == Round::KeyShares && m.from.0 == 2 && m.to.is_some_and(|p| p.0 == 3) {
                m.ints[0] = m.ints[0].add(&Int::one());
            }
        });
        let run = run.unwrap();
        let fp = |r: &super::super::sim::Run| r.outputs[0].key.fingerprint();
        assert_eq!(
            fp(&run),
            fp(&honest),
            "the answered share gives the honest key"
        );
        let complaint = recorded
            .iter()
            .find(|m| m.round == Round::KeyComplaints && m.from.0 == 3)
            .unwrap();
        assert_eq!(complaint.small, vec![2]);
        let answer = recorded
            .iter()
            .find(|m| m.round == Round::KeyAnswers && m.from.0 == 2)
            .unwrap();
        assert_eq!(answer.ints.len(), 2);
        let verified = replay(&params(61), &run.broadcasts).unwrap();
        assert_eq!(verified.key.fingerprint(), fp(&run));
    }

    /// The same dealer, but its public answer is wrong too (a dealer that cannot or will not
    /// answer): **every** party names it in K1c, and so does `verify::replay` of the public
    /// broadcasts — not only the holder it cheated.
    #[test]
    fn a_dealer_that_cannot_answer_a_k1_complaint_is_named_by_every_party() {
        let (run, recorded) = run_recorded(62, |m| {
            if m.round == Round::KeyShares && m.from.0 == 2 && m.to.is_some_and(|p| p.0 == 3) {
                m.ints[0] = m.ints[0].add(&Int::one());
            }
            if m.round == Round::KeyAnswers && m.from.0 == 2 && !m.ints.is_empty() {
                m.ints[0] = m.ints[0].add(&Int::one());
            }
        });
        let verdicts = run.unwrap_err();
        assert_eq!(verdicts.len(), 3);
        for (i, v) in verdicts.iter().enumerate() {
            let e = v
                .as_ref()
                .unwrap_or_else(|| panic!("party {} went on", i + 1));
            assert_eq!(
                e.culprits(),
                vec![crate::PartyIndex(2)],
                "party {}: {e}",
                i + 1
            );
            assert!(
                matches!(e, crate::Error::Misbehaviour { round: Round::KeyAnswers, reason, .. }
                    if reason.contains("complaint of party 3")),
                "party {}: {e}",
                i + 1
            );
        }
        let e = replay(&params(62), &recorded).unwrap_err();
        assert_eq!(e.culprits(), vec![crate::PartyIndex(2)], "{e}");
        assert!(
            matches!(
                e,
                crate::Error::Misbehaviour {
                    round: Round::KeyAnswers,
                    ..
                }
            ),
            "{e}"
        );
    }

    /// A corrupt holder complains against an honest dealer whose shares were fine, to frame it
    /// or to stall the run: the dealer answers, the answer checks, nobody is named, and the key
    /// is the one the run without the complaint makes.
    #[test]
    fn a_false_k1_complaint_frames_nobody() {
        let honest = run_in_process(&params(63), rngs(6300), None).unwrap();
        let (run, _) = run_recorded(63, |m| {
            if m.round == Round::KeyComplaints && m.from.0 == 3 {
                m.small = vec![1];
            }
        });
        let run = run.unwrap();
        assert_eq!(
            run.outputs[0].key.fingerprint(),
            honest.outputs[0].key.fingerprint()
        );
        replay(&params(63), &run.broadcasts).unwrap();
    }

    /// K3's reshares get the same treatment: a bad private reshare (product party 2 to
    /// holder 1) is answered in public and the run completes; a product party that cannot
    /// answer is named by every party and by `verify::replay`.
    #[test]
    fn a_bad_private_reshare_is_answered_or_its_product_party_named_by_every_party() {
        let bad = |m: &mut Message| {
            if m.round == Round::Reshare && m.from.0 == 2 && m.to.is_some_and(|p| p.0 == 1) {
                m.ints[0] = m.ints[0].sub(&Int::one());
            }
        };
        let (run, recorded) = run_recorded(64, bad);
        let run = run.unwrap();
        assert!(recorded
            .iter()
            .any(|m| m.round == Round::ReshareComplaints && m.from.0 == 1 && m.small == vec![2]));
        replay(&params(64), &run.broadcasts).unwrap();

        let (run, recorded) = run_recorded(65, |m| {
            bad(m);
            if m.round == Round::ReshareAnswers && m.from.0 == 2 && !m.ints.is_empty() {
                m.ints[0] = m.ints[0].add(&Int::one());
            }
        });
        let verdicts = run.unwrap_err();
        assert_eq!(verdicts.len(), 3);
        for (i, v) in verdicts.iter().enumerate() {
            let e = v
                .as_ref()
                .unwrap_or_else(|| panic!("party {} went on", i + 1));
            assert_eq!(
                e.culprits(),
                vec![crate::PartyIndex(2)],
                "party {}: {e}",
                i + 1
            );
            assert!(
                matches!(
                    e,
                    crate::Error::Misbehaviour {
                        round: Round::ReshareAnswers,
                        ..
                    }
                ),
                "party {}: {e}",
                i + 1
            );
        }
        let e = replay(&params(65), &recorded).unwrap_err();
        assert_eq!(e.culprits(), vec![crate::PartyIndex(2)], "{e}");
    }

    #[test]
    fn oversized_beta_share_is_named() {
        oversized_share_is_named(40, 2, hooks::Oversized::Beta, Round::KeyAnswers);
    }

    #[test]
    fn negative_mask_share_is_named() {
        oversized_share_is_named(41, 3, hooks::Oversized::NegativeMask, Round::KeyAnswers);
    }

    #[test]
    fn oversized_reshare_is_named() {
        oversized_share_is_named(42, 1, hooks::Oversized::Reshare, Round::ReshareAnswers);
        oversized_share_is_named(
            43,
            2,
            hooks::Oversized::NegativeReshare,
            Round::ReshareAnswers,
        );
    }

    /// The receipt ranges imply the public key-share bound: `2t − 1` reshares each at the top
    /// of their range sum to at most `2^share` (so a run whose every received share passed its
    /// range check cannot fail the final bound), and the honest `|e_j|` stays below
    /// `2^e_bits` when every K1 share is at the top of its range and `F(j)` at its bound.
    #[test]
    fn receipt_ranges_imply_the_key_share_bound() {
        for (bits, n, t) in [(512, 3, 2), (2048, 5, 3), (2048, 16, 8), (1024, 7, 4)] {
            let params = Parameters::new(bits, n, t, [1; 32]).unwrap();
            let setup = super::super::Setup::new(&params);
            let nn = Int::one().shl(bits as usize);
            for k in 1..=n {
                let (low, high) = super::k3_share_range(&setup, k);
                let sum = high.mul_u64(u64::from(2 * t - 1));
                assert!(
                    sum.bits() <= setup.sizes.share,
                    "{bits} {n} {t}: {}",
                    sum.bits()
                );
                assert!(low.abs().bits() <= setup.sizes.e_bits);
                let [(_, b), _] = super::k1_share_ranges(&setup, &nn, k);
                let f = Int::one().shl(super::super::product::witness_bits(&setup));
                let e = f
                    .mul(&b.mul_u64(u64::from(n)))
                    .mul(&setup.delta)
                    .mul(&setup.int_lagrange.iter().map(Int::abs).max().unwrap());
                assert!(
                    e.bits() <= setup.sizes.e_bits,
                    "{bits} {n} {t} e: {}",
                    e.bits()
                );
            }
        }
    }

    /// Issue 25, break 3 (the review's `φ_j + δ`), now that φ is derived from the certified
    /// `p_i, q_i`: party 2 uses `F(2) + 1` as its K2 witness. Before the repair its shifted
    /// `φ₂` was consistent with its own commitments, every proof verified, and only K4 refused
    /// the key, naming nobody; now `Φ` is public and derived, so the K2 proof fails and party 2
    /// alone is named (`shifted_phi_share_cannot_produce_a_key`, dkg-repair.md §5).
    #[test]
    fn shifted_phi_share_cannot_produce_a_key() {
        hooks::set(hooks::Hook {
            party: 2,
            phi_shift: 1,
            ..hook(24)
        });
        let err = run_in_process(&params(24), rngs(2400), None).unwrap_err();
        assert_eq!(err.culprits(), vec![crate::PartyIndex(2)], "{err:?}");
        assert!(err.to_string().contains("product proof"), "{err}");
    }

    /// K4: a key with `d ≢ 0 (mod φ)` whose every proof verifies — forced by a test hook that
    /// offsets the public constant of the derived φ sharing at every party — must be refused at
    /// every party. With the K4 check removed the run outputs this key (confirmed: the test
    /// fails with `Ok`). The second half shows why K4's ciphertext carries `h_s^(r*)`: with
    /// `c* = (1+N)^(m*)` the same broken key passes the test decryption, and then fails to
    /// decrypt an ordinary encryption.
    #[test]
    fn broken_key_fails_k4() {
        hooks::set(hooks::Hook {
            phi_offset: 1,
            ..hook(26)
        });
        let err = run_in_process(&params(26), rngs(2600), None).unwrap_err();
        assert!(
            matches!(&err, crate::Error::KeyGenerationFailed(r) if r.contains("K4")),
            "K4 refuses the broken key: {err:?}"
        );

        hooks::set(hooks::Hook {
            phi_offset: 1,
            k4_without_randomness: true,
            ..hook(27)
        });
        let run = run_in_process(&params(27), rngs(2600), None)
            .expect("a randomness-free test ciphertext misses the broken key");
        let key = &run.outputs[0].key;
        let mut rng = ChaCha20Rng::seed_from_u64(27);
        let c = key
            .public_key()
            .encrypt(&crate::Plaintext::from_i64(1234), &mut rng)
            .unwrap();
        let partials: Vec<_> = run.outputs[..2]
            .iter()
            .map(|o| o.share.partial_decrypt(key, b"k4", &c, &mut rng).unwrap())
            .collect();
        for p in &partials {
            key.verify_partial(b"k4", &c, p)
                .expect("every partial proof verifies");
        }
        let decrypted = key
            .combine_partials(b"k4", &c, &partials)
            .ok()
            .map(|o| o.decryption.plaintext);
        assert_ne!(
            decrypted,
            Some(crate::Plaintext::from_i64(1234)),
            "the key K4 must refuse decrypts nothing"
        );
    }

    /// A party that publishes, as its K4 partial, another party's valid partial (a rushing
    /// copier: it waits for party 1's message) is named, live by every party and by the
    /// transcript verifier. With the K4 check removed (live and in `verify`) the run outputs a
    /// key (confirmed failing).
    #[test]
    fn copied_k4_partial_names_its_sender() {
        let mut first: Option<Vec<Int>> = None;
        let mut hook = |m: &mut Message| {
            if m.round == Round::TestDecryption && m.to.is_none() {
                match m.from.0 {
                    1 => first = Some(m.ints.clone()),
                    2 => {
                        if let Some(ints) = &first {
                            m.ints = ints.clone();
                        }
                    }
                    _ => {}
                }
            }
        };
        let err = run_in_process(&params(28), rngs(2800), Some(&mut hook)).unwrap_err();
        assert_eq!(err.culprits(), vec![crate::PartyIndex(2)], "{err:?}");

        // The transcript verifier names the same party.
        let run = run_in_process(&params(29), rngs(2900), None).unwrap();
        let mut broadcasts = run.broadcasts.clone();
        assert!(replay(&params(29), &broadcasts).is_ok());
        let k4 = |b: &[Message], from: u16| {
            b.iter()
                .position(|m| m.round == Round::TestDecryption && m.from.0 == from)
                .unwrap()
        };
        let (one, two) = (k4(&broadcasts, 1), k4(&broadcasts, 2));
        broadcasts[two].ints = broadcasts[one].ints.clone();
        let err = replay(&params(29), &broadcasts).unwrap_err();
        assert_eq!(err.culprits(), vec![crate::PartyIndex(2)], "{err:?}");
    }

    /// Issue 25's property test, for the K1 families: the constants of every party's β and
    /// mask sharing, multiplied over the parties — which is also what a `t`-point interpolation
    /// of the summed commitments gives, up to the public power `Δ` — must lie outside the
    /// `1 + N` subgroup (`x mod N ≠ 1`). (The K3 reshare constants multiply to `v^d` by
    /// construction, which the property allows.) Failed on the φ family (`v^(Δφ) ≡ 1 mod N`),
    /// for both seeds, while K1 published Feldman commitments `v^(a_k)` to a φ sharing; φ's
    /// sharing is now derived from the C1 commitments, Pedersen commitments in `G_P`, checked
    /// here to be group elements.
    #[test]
    fn published_families_stay_outside_the_one_plus_n_subgroup() {
        for (session, seed) in [(30u8, 3000u64), (31, 3100)] {
            let params = params(session);
            let run = run_in_process(&params, rngs(seed), None).unwrap();
            let key = replay(&params, &run.broadcasts).unwrap().key;
            let (n, nn) = (key.public_key().n(), key.public_key().nn());
            let t = usize::from(params.threshold());
            let product = |round: Round, at: usize| {
                run.broadcasts
                    .iter()
                    .filter(|m| m.round == round)
                    .filter_map(|m| m.ints.get(at))
                    .fold(Int::one(), |acc, c| acc.mul_mod(c, nn))
            };
            let gp = super::super::pedersen::group().unwrap();
            for m in run
                .broadcasts
                .iter()
                .filter(|m| m.round == Round::CertifyCommit)
            {
                assert!(
                    m.ints.iter().all(|c| gp.contains(c)),
                    "C1 commitments in G_P"
                );
            }
            for (what, at) in [("β", 0), ("mask", t)] {
                let x = product(Round::KeyShares, at);
                assert_ne!(
                    x.rem_euclid(n),
                    Int::one(),
                    "the K1 {what} constants multiply into the 1 + N subgroup (seed {seed})"
                );
            }
        }
    }

    /// C1's complaints are public and answered in public (issue 25 attacker review, finding
    /// 1): a dealer that sends one holder a wrong blinding value privately (party 2 to party 3)
    /// is complained about in C1b, answers with the right value in C1c, and the run completes
    /// with a key that decrypts — nobody is named, and the complaint is in the transcript,
    /// which verifies. (Before, party 3 alone aborted naming party 2, and the other parties,
    /// waiting for party 3, would have named it.) A commitment that is not an element of `G_P`
    /// (party 1 republishing a `Z*_{N²}`-style value `R − 1`, a non-residue mod `R`) is public
    /// and names its dealer at once.
    #[test]
    fn pedersen_layer_names_a_dealer_with_a_wrong_blinding_or_commitment() {
        let mut wrong_blinding = |m: &mut Message| {
            if m.round == Round::CertifyCommit
                && m.from.0 == 2
                && m.to == Some(crate::PartyIndex(3))
            {
                m.ints[0] = m.ints[0].add(&Int::one());
            }
        };
        let run = run_in_process(&params(32), rngs(3200), Some(&mut wrong_blinding)).unwrap();
        let complaint = run
            .broadcasts
            .iter()
            .find(|m| m.round == Round::CertifyComplaints && m.from.0 == 3)
            .unwrap();
        assert_eq!(complaint.small, vec![2], "party 3 complained about party 2");
        assert!(replay(&params(32), &run.broadcasts).is_ok());

        let r_minus_one = super::super::pedersen::group()
            .unwrap()
            .modulus()
            .sub(&Int::one());
        let mut outside = |m: &mut Message| {
            if m.round == Round::CertifyCommit && m.from.0 == 1 && m.to.is_none() {
                m.ints[0] = r_minus_one.clone();
            }
        };
        let e = run_in_process(&params(33), rngs(3300), Some(&mut outside)).unwrap_err();
        assert_eq!(e.culprits(), vec![crate::PartyIndex(1)], "{e}");
        assert!(e.to_string().contains("G_P"), "{e}");
    }

    /// The transcript verifier replays C1–C2: an honest transcript verifies, and one in which
    /// party 2's multiplication proof is altered (or its M4 value, which the proof binds) names
    /// party 2, as the live parties would.
    #[test]
    fn verify_replays_the_certification_and_names_a_bad_proof() {
        let params = params(36);
        let run = run_in_process(&params, rngs(3600), None).unwrap();
        assert!(replay(&params, &run.broadcasts).is_ok());
        let at = |b: &[Message], round: Round, from: u16| {
            b.iter()
                .position(|m| m.round == round && m.from.0 == from)
                .unwrap()
        };
        assert!(run
            .broadcasts
            .iter()
            .any(|m| m.round == Round::CertifyCommit));
        let mut tampered = run.broadcasts.clone();
        let i = at(&tampered, Round::CertifyProducts, 2);
        tampered[i].ints[1] = tampered[i].ints[1].add(&Int::one());
        let err = replay(&params, &tampered).unwrap_err();
        assert_eq!(err.culprits(), vec![crate::PartyIndex(2)], "{err:?}");
        assert!(
            matches!(
                &err,
                crate::Error::Misbehaviour {
                    round: Round::CertifyProducts,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// Issue 25, break 2a/2c: a dealer that commits in C1 to a polynomial other than the one
    /// it dealt in M3 (here `P_2 + 1`, so that the certified `p` — and the derived φ — would
    /// differ from the `p` behind N) draws a complaint from every holder and cannot answer it
    /// in public: it is named in C1c by every party (`late_commitment_mismatch_is_named`).
    #[test]
    fn late_commitment_mismatch_is_named() {
        hooks::set(hooks::Hook {
            c1_shift_party: 2,
            ..hook(34)
        });
        let e = run_in_process(&params(34), rngs(3400), None).unwrap_err();
        assert_eq!(e.culprits(), vec![crate::PartyIndex(2)], "{e}");
        assert!(e.to_string().contains("C1 complaint"), "{e}");
        assert!(
            matches!(
                &e,
                crate::Error::Misbehaviour {
                    round: Round::CertifyReveals,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    /// A corrupt holder cannot frame an honest dealer with a C1 complaint: party 3 complains
    /// about party 1 although its values are right; party 1 answers in public and the run
    /// completes with nobody named, and the transcript (complaint and answer included)
    /// verifies. A complaint whose evidence is not what the dealer sent in M3 (party 3 shows a
    /// record off by one) names the complainer, live and in `replay`.
    #[test]
    fn a_false_c1_complaint_frames_nobody() {
        hooks::set(hooks::Hook {
            false_complaint: (3, 1),
            ..hook(37)
        });
        let run = run_in_process(&params(37), rngs(3700), None).unwrap();
        assert!(run
            .broadcasts
            .iter()
            .any(|m| m.round == Round::CertifyReveals && m.from.0 == 1 && m.ints.len() == 3));
        assert!(replay(&params(37), &run.broadcasts).is_ok());

        hooks::set(hooks::Hook {
            false_complaint: (3, 1),
            ..hook(38)
        });
        let mut fabricate = |m: &mut Message| {
            if m.round == Round::CertifyComplaints && m.from.0 == 3 && !m.ints.is_empty() {
                m.ints[0] = m.ints[0].add(&Int::one());
            }
        };
        let e = run_in_process(&params(38), rngs(3800), Some(&mut fabricate)).unwrap_err();
        assert_eq!(e.culprits(), vec![crate::PartyIndex(3)], "{e}");
        assert!(e.to_string().contains("M3 digest"), "{e}");

        let mut broadcasts = run.broadcasts.clone();
        let i = broadcasts
            .iter()
            .position(|m| m.round == Round::CertifyComplaints && m.from.0 == 3)
            .unwrap();
        broadcasts[i].ints[1] = broadcasts[i].ints[1].add(&Int::one());
        let e = replay(&params(37), &broadcasts).unwrap_err();
        assert_eq!(e.culprits(), vec![crate::PartyIndex(3)], "{e}");
        // An answer that does not open names the dealer in replay, too.
        let mut broadcasts = run.broadcasts.clone();
        let i = broadcasts
            .iter()
            .position(|m| m.round == Round::CertifyReveals && m.from.0 == 1)
            .unwrap();
        broadcasts[i].ints[2] = broadcasts[i].ints[2].add(&Int::one());
        let e = replay(&params(37), &broadcasts).unwrap_err();
        assert_eq!(e.culprits(), vec![crate::PartyIndex(1)], "{e}");
    }

    /// Issue 25, break 2a: a product party that publishes in M4 a value that is not the
    /// product of its shares — the review's attacker, who shifts its `y_j` to open a modulus of
    /// its choosing — is named in C2 before any key-stage round. The test gives the attacker
    /// everything else: its forged modulus is treated as passing the trial division, every
    /// biprimality repetition and the gcd step (as if it had steered them), so only C2 stands
    /// between it and a key. Before C1–C2 existed this run went on to the key stage.
    #[test]
    fn forged_opening_product_is_named() {
        hooks::set(hooks::Hook {
            forge_y_party: 3,
            ..hook(35)
        });
        let e = run_in_process(&params(35), rngs(3500), None).unwrap_err();
        assert_eq!(e.culprits(), vec![crate::PartyIndex(3)], "{e}");
        assert!(e.to_string().contains("multiplication proof"), "{e}");
        assert!(
            matches!(
                &e,
                crate::Error::Misbehaviour {
                    round: Round::CertifyProducts,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    /// Issue 25: the transcript verifier names the party the live parties name, for every
    /// attack whose evidence is public (a broadcast; private-share faults are named by their
    /// holders only — docs/dkg.md, "Limits"). Each attack runs live with every broadcast
    /// recorded; `replay` of that record must end with the same culprits in the same round.
    /// An attack the verifier did not see, or blamed on someone else, fails here.
    #[test]
    fn verify_names_the_same_party() {
        type Tweak = fn(&mut Message);
        fn none(_: &mut Message) {}
        // Party 2 adds 4Δ³ to every M4 value of batch 0 (the audit's candidate killer; batch 0
        // of this session holds a good candidate, see `candidate_killer_is_named`).
        fn kill_m4(m: &mut Message) {
            if m.round == Round::ModulusShares {
                M4Killer::new(&params(52), 2, Some(0)).apply(m);
            }
        }
        // Party 2 opens a seed that is not the one it committed to in M1.
        fn flip_seed(m: &mut Message) {
            if m.round == Round::BatchAudit && m.from.0 == 2 {
                if let Some(d) = m.digest.as_mut() {
                    d[0] ^= 1;
                }
            }
        }
        // Party 3's C1 complaint shows evidence other than what the dealer sent.
        fn fabricate(m: &mut Message) {
            if m.round == Round::CertifyComplaints && m.from.0 == 3 && !m.ints.is_empty() {
                m.ints[0] = m.ints[0].add(&Int::one());
            }
        }
        // The biprimality killer gets a session of its own (a hook stays set for its session,
        // and other tests run session 53 honestly): the first seed whose honest run accepts
        // batch 0, so that the killed batch held a good candidate.
        let bip_seed = (6000..6020)
            .map(|s| s * 10)
            .find(|s| {
                run_in_process(&params(60), rngs(*s), None)
                    .is_ok_and(|run| run.outputs[0].stats.batches == 1)
            })
            .expect("a session whose batch 0 is accepted");
        let cases: [(&str, u8, u64, hooks::Hook, Tweak); 7] = [
            ("M4 candidate killer (audit)", 52, 5600, hook(52), kill_m4),
            (
                "biprimality killer consistent with its M5a commitment (audit)",
                60,
                bip_seed,
                hooks::Hook {
                    kill_biprime_party: 3,
                    ..hook(60)
                },
                none,
            ),
            ("seed opening mismatch", 54, 5400, hook(54), flip_seed),
            (
                "forged M4 opening product (C2)",
                35,
                3500,
                hooks::Hook {
                    forge_y_party: 3,
                    ..hook(35)
                },
                none,
            ),
            (
                "C1 commitment other than the M3 dealing",
                34,
                3400,
                hooks::Hook {
                    c1_shift_party: 2,
                    ..hook(34)
                },
                none,
            ),
            (
                "fabricated C1 complaint evidence",
                38,
                3800,
                hooks::Hook {
                    false_complaint: (3, 1),
                    ..hook(38)
                },
                fabricate,
            ),
            (
                "shifted K2 witness",
                24,
                2400,
                hooks::Hook {
                    party: 2,
                    phi_shift: 1,
                    ..hook(24)
                },
                none,
            ),
        ];
        for (what, session, seed, h, tweak) in cases {
            hooks::set(h);
            let mut seen: Vec<Message> = Vec::new();
            let mut record = |m: &mut Message| {
                tweak(m);
                if m.to.is_none() {
                    seen.push(m.clone());
                }
            };
            let small = if what == "seed opening mismatch" {
                params(session).with_batch(8).unwrap()
            } else {
                params(session)
            };
            let live = run_in_process(&small, rngs(seed), Some(&mut record)).unwrap_err();
            assert!(
                !live.culprits().is_empty(),
                "{what}: nobody named live: {live:?}"
            );
            let replayed = replay(&small, &seen).unwrap_err();
            assert_eq!(
                replayed.culprits(),
                live.culprits(),
                "{what}: live {live:?}, verify {replayed:?}"
            );
            let round = |e: &crate::Error| match e {
                crate::Error::Misbehaviour { round, .. } => Some(*round),
                _ => None,
            };
            assert_eq!(round(&replayed), round(&live), "{what}");
        }
    }

    /// Issue 25, break 1: a reader of the broadcasts must not learn φ(N). Failed (the attack
    /// factored N) while K1 published `Z*_{N²}` Feldman commitments to the φ sharing; passes
    /// since they are Pedersen commitments in `G_P` (docs/dkg.md, "Break 1").
    #[test]
    fn transcript_reader_cannot_factor_n() {
        let params = params(25);
        let run = run_in_process(&params, rngs(2500), None).unwrap();
        let factors = factor_from_transcript(&params, &run.broadcasts);
        assert!(
            factors.is_none(),
            "the public transcript factors N: {:?}",
            factors.map(|(p, q)| (p.to_hex(), q.to_hex()))
        );
    }
}
