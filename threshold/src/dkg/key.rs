//! The key stage, rounds K1–K3: shares of `d = Δ⁴·φ·β` over the integers with Feldman
//! commitments in `Z*_{N²}`, the combination constant θ, and the verification keys
//! (Nishide–Sakurai 2010 §4 with BGW multiplication and integer resharing; the module
//! documentation of [`crate::dkg`] lists the steps).

use rand_core::{CryptoRng, RngCore};

use super::field::eval_int;
use super::message::MAX_INT_BITS;
use super::modulus::Candidate;
use super::product::{self, Bases};
use super::reshare::committed_at;
use super::{blame, Ctx, Inbox, Message, Outgoing, Round, State, Transition};
use crate::bigint::{Int, SecretInt};
use crate::dealer::verification_base;
use crate::error::{Error, Result};
use crate::keys::{KeyShare, PublicKey, ThresholdPublicKey};

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

/// Checks `m`'s integers: `len` of them, each of at most `MAX_INT_BITS` bits.
fn expect_signed(m: &Message, len: usize) -> Result<&[Int]> {
    if m.ints.len() != len || !m.small.is_empty() {
        return Err(blame(
            m,
            format!("{} integers, expected {len}", m.ints.len()),
        ));
    }
    Ok(&m.ints)
}

/// Checks `m`'s commitments: `len` units of `Z*_{N²}`.
fn expect_commitments<'m>(m: &'m Message, len: usize, nn: &Int) -> Result<&'m [Int]> {
    let c = super::modulus::expect_ints(m, len, nn)?;
    if c.iter().any(|x| x.is_zero() || x.gcd(nn) != Int::one()) {
        return Err(blame(m, "commitment is not a unit mod N²"));
    }
    Ok(c)
}

/// Starts the key stage once `N` is accepted: sends K1.
pub(super) fn start<R: RngCore + CryptoRng + ?Sized>(
    ctx: &Ctx<'_>,
    n: Int,
    cand: Candidate,
    rng: &mut R,
) -> Result<(State, Outgoing)> {
    let setup = ctx.setup;
    let sizes = &setup.sizes;
    let t1 = usize::from(setup.t) - 1;
    let pk = PublicKey::from_modulus(n.clone())?;
    let nn = pk.nn().clone();
    let v = verification_base(&pk);
    let v_inv = v
        .invert(&nn)
        .ok_or_else(|| Error::KeyGenerationFailed("verification base is not a unit".into()))?;
    let sum = cand.p.expose().add(cand.q.expose());
    let phi = SecretInt::new(if ctx.me.0 == 1 {
        n.add(&Int::one()).sub(&sum)
    } else {
        sum.neg()
    });
    drop(SecretInt::new(sum));
    drop(cand);
    let beta = SecretInt::new(Int::random_bits(rng, sizes.beta));
    let f = integer_poly(phi.expose().mul(&setup.delta), t1, sizes.f_coeff, rng);
    let b = integer_poly(beta.expose().mul(&setup.delta), t1, sizes.b_coeff, rng);
    let rho = Int::random_bits(rng, sizes.mask_rho).mul(&n);
    let r = integer_poly(rho, 2 * t1, sizes.mask_coeff, rng);
    let mut commitments = commit(&f, &v, &v_inv, &nn);
    commitments.extend(commit(&b, &v, &v_inv, &nn));
    commitments.extend(commit(&r, &v, &v_inv, &nn));
    let direct = ctx
        .all()
        .map(|j| {
            let mut m = ctx.message(Round::KeyShares, 0, Some(j));
            m.ints = vec![eval_int(&f, j), eval_int(&b, j), eval_int(&r, j)];
            m
        })
        .collect();
    let mut broadcast = ctx.message(Round::KeyShares, 0, None);
    broadcast.ints = commitments;
    Ok((
        State::Key1(Round1 { pk, v, v_inv }),
        Outgoing {
            broadcast: Some(broadcast),
            direct,
        },
    ))
}

/// Waiting for K1: integer shares of everyone's `Δφ_i`, `Δβ_i` and mask, with commitments.
#[derive(Debug)]
pub(super) struct Round1 {
    pk: PublicKey,
    v: Int,
    v_inv: Int,
}

impl Round1 {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let t = usize::from(setup.t);
        let nn = self.pk.nn().clone();
        let commitments = key_commitments(setup, &inbox.broadcasts(ctx.all())?, &nn)?;
        let shares = inbox
            .directs(ctx.all())?
            .into_iter()
            .map(|m| expect_signed(m, 3).map(|s| (m, s)))
            .collect::<Result<Vec<_>>>()?;
        let (mut f, mut b, mut r) = (Int::zero(), Int::zero(), Int::zero());
        for ((m, s), c) in shares.iter().zip(&commitments) {
            let parts = [(&c[..t], "φ"), (&c[t..2 * t], "β"), (&c[2 * t..], "mask")];
            for (x, (cs, what)) in s.iter().zip(parts) {
                if pow_signed_secret(&self.v, &self.v_inv, x, &nn)
                    != committed_at(cs, ctx.me.0, &nn)
                {
                    return Err(blame(
                        m,
                        format!(
                            "share of the {what} polynomial does not match its Feldman commitment"
                        ),
                    ));
                }
            }
            f = f.add(&s[0]);
            b = b.add(&s[1]);
            r = r.add(&s[2]);
        }
        let (f, b, r) = (SecretInt::new(f), SecretInt::new(b), SecretInt::new(r));
        let h = SecretInt::new(f.expose().mul(b.expose()));
        let bases = product::bases(setup, &commitments, &nn);
        let own = bases.iter().find(|x| x.party() == ctx.me.0);
        let broadcast = match own {
            Some(own) => {
                let mut m = ctx.message(Round::MaskedProduct, 0, None);
                m.ints = product::prove(
                    setup,
                    self.pk.n(),
                    &nn,
                    &self.v,
                    &self.v_inv,
                    own,
                    &f,
                    &h.expose().add(r.expose()),
                    rng,
                )?;
                Some(m)
            }
            None => None,
        };
        Ok(Transition::Next(
            State::Key2(Round2 {
                pk: self.pk,
                v: self.v,
                v_inv: self.v_inv,
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
        if let Some(pos) = setup.product_parties.iter().position(|&p| p == ctx.me.0) {
            let e = self
                .h
                .expose()
                .mul(&setup.int_lagrange[pos])
                .mul(&setup.delta);
            let g = integer_poly(e, usize::from(setup.t) - 1, setup.sizes.g_coeff, rng);
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
        }
        Ok(Transition::Next(
            State::Key3(Round3 {
                pk: self.pk,
                v: self.v,
                v_inv: self.v_inv,
                theta,
                ws,
            }),
            out,
        ))
    }
}

/// Waiting for K3: the product parties' reshares.
#[derive(Debug)]
pub(super) struct Round3 {
    pk: PublicKey,
    v: Int,
    v_inv: Int,
    theta: Int,
    /// `W_j = v^(F(j)B(j))` of every product party, proven in K2.
    ws: Vec<Int>,
}

impl Round3 {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let setup = ctx.setup;
        let nn = self.pk.nn().clone();
        let broadcasts = inbox.broadcasts(ctx.product_parties())?;
        let commitments = reshare_commitments(setup, &self.ws, &broadcasts, &nn)?;
        let shares = inbox.directs(ctx.product_parties())?;
        let mut s = Int::zero();
        for (m, c) in shares.into_iter().zip(&commitments) {
            let x = &expect_signed(m, 1)?[0];
            if pow_signed_secret(&self.v, &self.v_inv, x, &nn) != committed_at(c, ctx.me.0, &nn) {
                return Err(blame(m, "reshare does not match its Feldman commitment"));
            }
            s = s.add(x);
        }
        let s = SecretInt::new(s);
        let bound = setup.sizes.share.min(MAX_INT_BITS);
        if s.expose().is_negative() || s.expose().is_zero() || s.expose().bits() > bound {
            return Err(Error::KeyGenerationFailed(
                "key share outside its public bound".into(),
            ));
        }
        let key = public_key(setup, self.pk, self.v, self.theta, &commitments)?;
        let share = KeyShare::new(ctx.me, s, key.fingerprint());
        Ok(Transition::Done(key, share))
    }
}

// The public computations of the key stage, shared with the transcript verifier.

/// K1: every party's `4t − 1` commitments (φ, β, mask), checked to be units of `Z*_{N²}`.
pub(super) fn key_commitments<'m>(
    setup: &super::Setup,
    msgs: &[&'m Message],
    nn: &Int,
) -> Result<Vec<&'m [Int]>> {
    let t = usize::from(setup.t);
    msgs.iter()
        .map(|m| expect_commitments(m, 4 * t - 1, nn))
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
