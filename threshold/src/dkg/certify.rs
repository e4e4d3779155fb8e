//! Certification of the chosen modulus, rounds C1–C2 (issue 25, breaks 2a and 2c;
//! `../shared/dkg-repair.md` §3; docs/dkg.md, "Certifying N").
//!
//! M3 shares every candidate's `p_i`, `q_i` with **integer** polynomials (constant `Δp_i`,
//! `Δq_i`; coefficients `2^STAT_BITS` times larger than what they hide) and zero with an
//! integer polynomial of degree `2t − 2`; M4 publishes `y_j = P(j)·Q(j) + Z(j)`, which opens
//! `Δ³N = Σ λ'_j y_j` over the integers. Until this module, nothing proved that `y_j` was that
//! product: a rushing party could shift its `y_j` to open a modulus of its choosing (break 2a),
//! and the key stage dealt a fresh `φ_i` not bound to the `p_i, q_i` behind `N` (break 2c).
//!
//! For the one modulus that survives the biprimality test and the gcd step:
//!
//! * **C1.** Every dealer `i` publishes Pedersen commitments in `G_P` ([`super::pedersen`]) to
//!   the coefficients of the three M3 polynomials it dealt for this candidate (`t`, `t` and
//!   `2t − 2`: the zero sharing's constant is committed as the identity, i.e. it *is* zero) and
//!   sends each holder `j` the blinding values at `j`. Holder `j` checks that the shares it
//!   received in M3 — before `N` existed — open the commitments at `j`.
//! * **C1b–C1c (complaints).** A holder whose check fails complains publicly, showing its M3
//!   record and the hashes of the other records of the dealer's M3 message, which the dealer's
//!   published M3 digest binds (false evidence names the complainer). The accused dealer must
//!   open the disputed blinding values in public; one that cannot is named by every party and
//!   by `verify::replay`, and an answered complaint costs nothing (Gennaro–Jarecki–Krawczyk–
//!   Rabin, J. Cryptology 2007). The values opened are the complainer's own shares, which a
//!   corrupt complainer knew already. With at most `t − 1` corrupt parties, at least `t` honest holders pin every
//!   dealer's committed `P_i` and `Q_i` (degree `t − 1`) to what it dealt. (`Z_i`, of degree
//!   `2t − 2`, is not pinned by `t` points, and need not be: only `Z(0) = 0` enters the
//!   argument below, and the committed constant is the identity.)
//! * **C2.** Every product party `j` proves, with a Cramer–Damgård-style multiplication proof
//!   in `G_P` (CRYPTO 1998; as used by Frankel–MacKenzie–Yung, STOC 1998, for robust
//!   Boneh–Franklin), that its published `y_j ≡ A_j·B_j + Z_j (mod P)` for the committed
//!   `A_j = P(j)`, `B_j = Q(j)`, `Z_j = Z(j)` (commitments computed homomorphically by anyone).
//!   A failing proof names `j`.
//!
//! **Why that pins N.** Interpolating mod `P` the degree-`2t − 2` committed polynomial
//! `P·Q + Z` from its `2t − 1` proven points gives `Σ λ'_j y_j ≡ Δ·P(0)·Q(0) (mod P)` (`Z(0) = 0`
//! by construction). The honest holders' integer shares fix `Δ·P(0) = L_P` and `Δ·Q(0) = L_Q`,
//! integers of public size dealt before `N` was opened, so `Δ⁴N ≡ L_P·L_Q (mod P)`; both sides
//! are below `P/2` in absolute value ([`super::pedersen::Group::check_bound`]), hence equal over
//! `Z`. No party can change `L_P` or `L_Q` after seeing the others' values, so `N` is fixed by
//! values dealt blind of the honest `p_i, q_i`, whatever anyone published in M4.
//!
//! **What is not proven** (attacker review of this change): that a corrupt dealer's constants
//! are `Δ·p_i` for an integer `p_i` of the required residue mod 4, or that its polynomials take
//! integer values at corrupt points. `L_P` need not be `Δ²·Σp_i`: a dealer can shift small
//! factors between the two halves, or make `p ≡ 1 (mod 4)`. Such a dealer cannot choose `N`
//! (its contribution is fixed blind), but it can make candidates fail, or the key fail K4,
//! without being named; the planned M7 link proof (dkg-repair.md §3, break 2b) closes it.
//!
//! **φ is derived, not dealt.** With `P(0) = Δp` and `Q(0) = Δq`,
//! `F(x) = Δ(N + 1) − P(x) − Q(x)` is a degree-`t − 1` integer sharing of `Δφ(N)`, and its
//! commitments `Φ_0 = g^(Δ(N+1))·(C_{P,0}·C_{Q,0})⁻¹`, `Φ_k = (C_{P,k}·C_{Q,k})⁻¹` are public.
//! The key stage's product proof (K2, [`super::product`]) is checked against `Φ`, so a party
//! whose K2 witness is not `F(j)` is named; there is no `φ_i` left to shift (break 3).
//!
//! Zero knowledge: the commitments are perfectly hiding; the proof's responses are uniform mod
//! `P`. The M4 values were public already.

use std::sync::Arc;

use merlin::Transcript;
use rand_core::{CryptoRng, RngCore};

use super::consistency::{m3_digest, record_hash};
use super::key;
use super::modulus::Candidate;
use super::pedersen::{self, Group};
use super::{blame, Ctx, Inbox, Message, Outgoing, Round, Setup, State, Transition};
use crate::bigint::{Int, SecretInt};
use crate::error::{Error, Result};
use crate::hash::TranscriptExt;

/// What a party keeps about one candidate between M3 and C1.
pub(super) struct CertData {
    /// This party's M3 polynomials for the candidate: `P_i` (constant `Δp_i`), `Q_i`
    /// (constant `Δq_i`), and `Z_i` without its zero constant (coefficients of `x¹ … x^(2t−2)`).
    pub(super) polys: [Vec<SecretInt>; 3],
    /// The M3 shares this party received, per dealer (dealer order): `[P_i(me), Q_i(me), Z_i(me)]`.
    pub(super) received: Vec<[SecretInt; 3]>,
    /// The product parties' M4 values `y_j` for this candidate (product-party order).
    pub(super) products: Vec<Int>,
    /// The candidate's record in every M3 message of its batch.
    pub(super) position: usize,
    /// What a C1 complaint shows: the batch's M3 digests and the record hashes received.
    pub(super) evidence: Option<Arc<M3Evidence>>,
}

/// M3 evidence kept for C1's complaints (shared by the candidates of one batch).
#[derive(Debug)]
pub(super) struct M3Evidence {
    /// Every dealer's published digests of its M3 messages (dealer order, then recipient).
    pub(super) digests: Vec<Vec<[u8; 32]>>,
    /// The record hashes of the M3 message this party received from each dealer.
    pub(super) hashes: Vec<Vec<[u8; 32]>>,
}

impl core::fmt::Debug for CertData {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CertData(<redacted>)")
    }
}

/// How many commitments a dealer publishes in C1: `t` for `P_i`, `t` for `Q_i`, `2t − 2` for
/// `Z_i`.
pub(super) fn commitment_count(setup: &Setup) -> usize {
    4 * usize::from(setup.t) - 2
}

/// Evaluates `[identity, C_1, …]`-style commitments: `Π_k C_k^(j^k)` with an implicit `C_0 = 1`
/// when `skip_constant` (the zero sharing).
fn committed_at(gp: &Group, commitments: &[Int], j: u16, skip_constant: bool) -> Int {
    if skip_constant {
        let mut full = Vec::with_capacity(commitments.len() + 1);
        full.push(Int::one());
        full.extend_from_slice(commitments);
        gp.committed_at(&full, j)
    } else {
        gp.committed_at(commitments, j)
    }
}

/// Refuses parameters for which the argument above does not hold: the M4 values, and the
/// product `L_P·L_Q` of two `t`-point integer interpolations of shares below their bound, must
/// fit the Pedersen group twice over.
pub(super) fn check_group_fits(setup: &Setup) -> Result<()> {
    let gp = pedersen::group()?;
    let n = usize::from(setup.n);
    let lbits = setup.delta.bits() + usize::from(setup.t) * super::ceil_log2(n + 1);
    let l = setup.sizes.m_share + lbits + super::ceil_log2(n) + 1;
    gp.check_bound(setup.sizes.m_product)?;
    gp.check_bound(2 * l + 1)
}

/// Where the three commitment vectors (`P`, `Q`, `Z` without constant) lie in a dealer's C1
/// broadcast.
fn ranges(setup: &Setup) -> [std::ops::Range<usize>; 3] {
    let t = usize::from(setup.t);
    [0..t, t..2 * t, 2 * t..4 * t - 2]
}

/// C1 (sender side): commitments to this party's three M3 polynomials of the chosen candidate,
/// and the blinding values at every holder.
pub(super) fn start<R: RngCore + CryptoRng + ?Sized>(
    ctx: &Ctx<'_>,
    batch: u32,
    n: Int,
    cand: Candidate,
    rng: &mut R,
) -> Result<(State, Outgoing)> {
    let gp = pedersen::group()?;
    let Some(cert) = cand.cert.as_deref() else {
        return Err(Error::KeyGenerationFailed(
            "the chosen candidate lost its M3 data".into(),
        ));
    };
    let mut commitments = Vec::with_capacity(commitment_count(ctx.setup));
    let mut blindings: Vec<Vec<SecretInt>> = Vec::with_capacity(3);
    for poly in &cert.polys {
        let (c, b) = gp.commit_poly(poly, rng);
        commitments.extend(c);
        blindings.push(b);
    }
    #[cfg(test)]
    if let Some(h) = key::hooks::get(&ctx.setup.params.session) {
        if h.c1_shift_party == ctx.me.0 {
            // Commit to P_i + 1 instead of the P_i that was dealt (a late commitment).
            commitments[0] =
                commitments[0].mul_mod(&gp.commit_public(&Int::one(), &Int::zero()), gp.modulus());
        }
    }
    let blindings: [Vec<SecretInt>; 3] = [
        blindings.remove(0),
        blindings.remove(0),
        blindings.remove(0),
    ];
    let direct = ctx
        .all()
        .map(|j| {
            let mut m = ctx.message(Round::CertifyCommit, batch, Some(j));
            m.ints = blinding_values(gp, &blindings, j);
            m
        })
        .collect();
    let mut broadcast = ctx.message(Round::CertifyCommit, batch, None);
    broadcast.ints = commitments;
    Ok((
        State::CertifyCommit(Box::new(CommitRound {
            batch,
            n,
            cand,
            blindings,
        })),
        Outgoing {
            broadcast: Some(broadcast),
            direct,
        },
    ))
}

/// The blinding values at holder `j` of this dealer's three committed polynomials.
fn blinding_values(gp: &Group, blindings: &[Vec<SecretInt>; 3], j: u16) -> Vec<Int> {
    vec![
        gp.blinding_at(&blindings[0], j).expose().clone(),
        gp.blinding_at(&blindings[1], j).expose().clone(),
        // The zero sharing's blinding polynomial has no constant either.
        gp.blinding_at(&blindings[2], j)
            .expose()
            .mul_u64(u64::from(j))
            .rem_euclid(gp.order()),
    ]
}

/// Whether `shares` (holder `j`'s record) open dealer commitments `c` with blinding values `b`;
/// `Err` names the first polynomial that does not. `secret`: the shares are the caller's own
/// (constant-time powers); otherwise they are public evidence.
fn opens_at(
    gp: &Group,
    setup: &Setup,
    c: &[Int],
    j: u16,
    shares: [&Int; 3],
    b: &[Int],
    secret: bool,
) -> core::result::Result<(), String> {
    let r = ranges(setup);
    if b.len() != 3 {
        return Err(format!("{} blinding values, expected 3", b.len()));
    }
    for k in 0..3 {
        if b[k].is_negative() || b[k] >= *gp.order() {
            return Err("C1 blinding value out of range".into());
        }
        let expected = committed_at(gp, &c[r[k].clone()], j, k == 2);
        let opened = if secret {
            gp.opens(
                &expected,
                &SecretInt::new(shares[k].clone()),
                &SecretInt::new(b[k].clone()),
            )
        } else {
            gp.commit_public(shares[k], &b[k]) == expected
        };
        if !opened {
            return Err(format!(
                "the M3 share of the {} polynomial does not open the dealer's C1 Pedersen \
                 commitment",
                ["p", "q", "zero"][k]
            ));
        }
    }
    Ok(())
}

/// C1 (public side): every dealer's `4t − 2` commitments, each an element of `G_P`.
pub(super) fn commitments<'m>(setup: &Setup, msgs: &[&'m Message]) -> Result<Vec<&'m [Int]>> {
    let gp = pedersen::group()?;
    let len = commitment_count(setup);
    msgs.iter()
        .map(|m| {
            if m.ints.len() != len || !m.small.is_empty() || m.digest.is_some() {
                return Err(blame(
                    m,
                    format!("{} commitments, expected {len}", m.ints.len()),
                ));
            }
            if !m.ints.iter().all(|c| gp.contains(c)) {
                return Err(blame(m, "C1 commitment is not an element of G_P"));
            }
            Ok(m.ints.as_slice())
        })
        .collect()
}

/// `Com(P(j))`, `Com(Q(j))`, `Com(Z(j))`: the products over the dealers of their commitments
/// evaluated at `j`.
fn at_point(gp: &Group, setup: &Setup, commitments: &[&[Int]], j: u16) -> [Int; 3] {
    let r = ranges(setup);
    let one = |k: usize| {
        gp.combine(
            &commitments
                .iter()
                .map(|c| committed_at(gp, &c[r[k].clone()], j, k == 2))
                .collect::<Vec<_>>(),
        )
    };
    [one(0), one(1), one(2)]
}

/// The public inputs of one multiplication proof.
struct Statement<'a> {
    session: &'a [u8; 32],
    batch: u32,
    party: u16,
    n: &'a Int,
    y: &'a Int,
    coms: &'a [Int; 3],
}

impl Statement<'_> {
    fn challenge(&self, t1: &Int, t2: &Int) -> u128 {
        let mut t = Transcript::new(b"medtech-threshold/v1/dkg-certify");
        t.append_message(b"session", self.session);
        t.append_u64(b"batch", u64::from(self.batch));
        t.append_u64(b"party", u64::from(self.party));
        t.append_int(b"N", self.n);
        t.append_int(b"y", self.y);
        t.append_int(b"A", &self.coms[0]);
        t.append_int(b"B", &self.coms[1]);
        t.append_int(b"Z", &self.coms[2]);
        t.append_int(b"T1", t1);
        t.append_int(b"T2", t2);
        t.challenge_u128(b"e")
    }

    /// `D = g^y·Com(Z)⁻¹ mod R`, which equals `Com(B)^a·h^s` for an honest prover.
    fn d(&self, gp: &Group) -> Option<Int> {
        let z_inv = self.coms[2].invert(gp.modulus())?;
        Some(
            gp.commit_public(self.y, &Int::zero())
                .mul_mod(&z_inv, gp.modulus()),
        )
    }
}

/// The multiplication proof `[T₁, T₂, z_a, z_r, z_s]` (the commitments rather than the
/// challenge, so that the product parties' proofs can be verified as one batch) that `y = a·b + z` for `Com(a, r_a)`,
/// `Com(b, r_b)`, `Com(z, r_z)`: witness `a`, `r_a` and `s = −r_z − a·r_b mod P`, with
/// `D = Com(b)^a·h^s`.
fn prove<R: RngCore + CryptoRng + ?Sized>(
    gp: &Group,
    statement: &Statement<'_>,
    a: &SecretInt,
    openings: &[SecretInt; 3],
    rng: &mut R,
) -> Vec<Int> {
    let p = gp.order();
    let a_mod = SecretInt::new(a.expose().rem_euclid(p));
    let s = SecretInt::new(
        openings[2]
            .expose()
            .add(&a_mod.expose().mul(openings[1].expose()))
            .neg()
            .rem_euclid(p),
    );
    let (alpha, beta, gamma) = (
        gp.random_blinding(rng),
        gp.random_blinding(rng),
        gp.random_blinding(rng),
    );
    let t1 = gp.commit(&alpha, &beta);
    let t2 = statement.coms[1]
        .pow_mod_secret(&alpha, gp.modulus())
        .mul_mod(
            &gp.commit(&SecretInt::new(Int::zero()), &gamma),
            gp.modulus(),
        );
    let e = Int::from_u128(statement.challenge(&t1, &t2));
    let resp =
        |nonce: &SecretInt, w: &SecretInt| nonce.expose().add(&w.expose().mul(&e)).rem_euclid(p);
    vec![
        t1,
        t2,
        resp(&alpha, &a_mod),
        resp(&beta, &openings[0]),
        resp(&gamma, &s),
    ]
}

/// A parsed proof with its challenge.
struct Parsed<'a> {
    t1: &'a Int,
    t2: &'a Int,
    za: &'a Int,
    zr: &'a Int,
    zs: &'a Int,
    e: Int,
}

/// Checks a proof's shape and ranges and recomputes its challenge.
fn parse<'a>(
    gp: &Group,
    statement: &Statement<'_>,
    proof: &'a [Int],
) -> core::result::Result<Parsed<'a>, String> {
    let [t1, t2, za, zr, zs] = proof else {
        return Err(format!("{} integers, expected 5", proof.len()));
    };
    if !gp.contains(t1) || !gp.contains(t2) {
        return Err("multiplication-proof commitment is not an element of G_P".into());
    }
    if [za, zr, zs]
        .iter()
        .any(|z| z.is_negative() || *z >= gp.order())
    {
        return Err("multiplication-proof response out of range".into());
    }
    let e = Int::from_u128(statement.challenge(t1, t2));
    Ok(Parsed {
        t1,
        t2,
        za,
        zr,
        zs,
        e,
    })
}

const PROOF_FAILS: &str = "the published share of N is not the product of the party's \
                           committed shares (multiplication proof fails)";

/// Checks one multiplication proof: `g^(z_a)·h^(z_r) = T₁·A^e` and
/// `B^(z_a)·h^(z_s) = T₂·D^e` (`D = g^y·Z⁻¹`); `Err` carries the reason.
fn check(gp: &Group, statement: &Statement<'_>, proof: &[Int]) -> core::result::Result<(), String> {
    let pr = parse(gp, statement, proof)?;
    let r = gp.modulus();
    let d = statement
        .d(gp)
        .ok_or_else(|| "commitment is not a unit mod R".to_string())?;
    let lhs1 = gp.commit_public(pr.za, pr.zr);
    let rhs1 = pr.t1.mul_mod(&statement.coms[0].pow_mod(&pr.e, r), r);
    let lhs2 = statement.coms[1]
        .pow_mod(pr.za, r)
        .mul_mod(&gp.commit_public(&Int::zero(), pr.zs), r);
    let rhs2 = pr.t2.mul_mod(&d.pow_mod(&pr.e, r), r);
    if lhs1 != rhs1 || lhs2 != rhs2 {
        return Err(PROOF_FAILS.into());
    }
    Ok(())
}

/// Checks several multiplication proofs at once with weights hashed from all of them
/// (small-exponent batch verification, Bellare–Garay–Rabin, EUROCRYPT 1998; in the prime-order
/// `G_P` a batch with a false proof passes with probability about `2^−128`):
///
/// `g^(Σ w·z_a − Σ v·e·y)·h^(Σ w·z_r + v·z_s)·Π B^(v·z_a)·Π Z^(v·e) = Π T₁^w·A^(w·e)·T₂^v`,
///
/// which costs `2 + |S|` full exponentiations instead of `5·|S|`. `false` if any proof is
/// malformed or the batch fails (then each is checked alone to name its author).
fn check_batch(gp: &Group, statements: &[Statement<'_>], proofs: &[&[Int]]) -> bool {
    let r = gp.modulus();
    let p = gp.order();
    let mut parsed = Vec::with_capacity(proofs.len());
    let mut seed = Transcript::new(b"medtech-threshold/v1/dkg-certify-batch");
    for (st, proof) in statements.iter().zip(proofs) {
        let Ok(pr) = parse(gp, st, proof) else {
            return false;
        };
        seed.append_u64(b"party", u64::from(st.party));
        seed.append_int(b"e", &pr.e);
        for v in [pr.t1, pr.t2, pr.za, pr.zr, pr.zs] {
            seed.append_int(b"v", v);
        }
        parsed.push(pr);
    }
    let (mut gx, mut hx) = (Int::zero(), Int::zero());
    let (mut lhs, mut rhs) = (Int::one(), Int::one());
    for (st, pr) in statements.iter().zip(&parsed) {
        let w = Int::from_u128(seed.challenge_u128(b"w"));
        let v = Int::from_u128(seed.challenge_u128(b"v"));
        let ve = v.mul(&pr.e);
        gx = gx.add(&w.mul(pr.za)).sub(&ve.mul(st.y)).rem_euclid(p);
        hx = hx.add(&w.mul(pr.zr)).add(&v.mul(pr.zs)).rem_euclid(p);
        lhs = lhs
            .mul_mod(&st.coms[1].pow_mod(&v.mul(pr.za).rem_euclid(p), r), r)
            .mul_mod(&st.coms[2].pow_mod(&ve, r), r);
        rhs = rhs
            .mul_mod(&pr.t1.pow_mod(&w, r), r)
            .mul_mod(&st.coms[0].pow_mod(&w.mul(&pr.e), r), r)
            .mul_mod(&pr.t2.pow_mod(&v, r), r);
    }
    lhs.mul_mod(&gp.commit_public(&gx, &hx), r) == rhs
}

/// Waiting for C1: every dealer's commitments and this party's blinding values.
#[derive(Debug)]
pub(super) struct CommitRound {
    pub(super) batch: u32,
    n: Int,
    cand: Candidate,
    /// This party's blinding polynomials (it may have to open them publicly in C1c).
    blindings: [Vec<SecretInt>; 3],
}

impl CommitRound {
    /// Checks every dealer's blinding values against its commitments and the M3 shares this
    /// party received. A mismatch is not an error here (only this party could check it): it
    /// becomes a public **complaint** in C1b, with the M3 record as evidence, which the dealer
    /// must answer in C1c by opening the disputed values publicly (Gennaro–Jarecki–Krawczyk–
    /// Rabin, J. Cryptology 2007, §4).
    ///
    /// The `3n` openings are checked at once first, with random 128-bit weights
    /// (small-exponent batch verification, Bellare–Garay–Rabin, EUROCRYPT 1998: in the
    /// prime-order `G_P` a wrong opening passes with probability at most `2^−128`), which costs
    /// two full exponentiations instead of `6n`; only if the batch fails are the dealers checked
    /// one by one, to find whom to complain about.
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let gp = pedersen::group()?;
        let coms = commitments(setup, &inbox.broadcasts(ctx.all())?)?;
        let cert = cert_of(&self.cand)?;
        let evidence = cert.evidence.as_deref().ok_or_else(|| {
            Error::KeyGenerationFailed("the chosen candidate lost its M3 evidence".into())
        })?;
        let directs = inbox.directs(ctx.all())?;
        let all_open = batch_opens(gp, setup, &coms, &cert.received, &directs, ctx.me.0, rng);
        let mut mine: Vec<Option<Vec<Int>>> = Vec::with_capacity(directs.len());
        let mut complaint = ctx.message(Round::CertifyComplaints, self.batch, None);
        for (((m, c), shares), hashes) in directs
            .iter()
            .zip(&coms)
            .zip(&cert.received)
            .zip(&evidence.hashes)
        {
            let record = [shares[0].expose(), shares[1].expose(), shares[2].expose()];
            let ok = all_open
                || (m.small.is_empty()
                    && m.digest.is_none()
                    && opens_at(gp, setup, c, ctx.me.0, record, &m.ints, true).is_ok());
            #[cfg(test)]
            let ok = ok
                && key::hooks::get(&setup.params.session)
                    .is_none_or(|h| h.false_complaint != (ctx.me.0, m.from.0));
            if ok {
                mine.push(Some(m.ints.clone()));
            } else {
                // Evidence: the record and the hashes of every record of the dealer's M3
                // message to this party, which its published M3 digest binds.
                complaint.small.push(u128::from(m.from.0));
                complaint.ints.extend(record.iter().map(|&v| v.clone()));
                complaint
                    .ints
                    .extend(hashes.iter().map(|h| Int::from_bytes_be(h)));
                mine.push(None);
            }
        }
        Ok(Transition::Next(
            State::CertifyComplaints(Box::new(ComplaintRound {
                batch: self.batch,
                n: self.n,
                cand: self.cand,
                blindings: self.blindings,
                commitments: coms.iter().map(|c| c.to_vec()).collect(),
                mine,
            })),
            Outgoing {
                broadcast: Some(complaint),
                direct: Vec::new(),
            },
        ))
    }
}

/// Whether every dealer's blinding values open its commitments at `j` with this party's M3
/// shares, checked as one random linear combination: `Π E_{i,k}^(ρ_{i,k}) =
/// g^(Σ ρ·x)·h^(Σ ρ·b)` with `E_{i,k}` the dealer's commitment at `j` and `ρ` fresh 128-bit
/// weights. `false` if any message is malformed or the combination fails.
fn batch_opens<R: RngCore + CryptoRng + ?Sized>(
    gp: &Group,
    setup: &Setup,
    coms: &[&[Int]],
    received: &[[SecretInt; 3]],
    directs: &[&Message],
    j: u16,
    rng: &mut R,
) -> bool {
    let r = ranges(setup);
    let p = gp.order();
    let mut lhs = Int::one();
    let mut x = SecretInt::new(Int::zero());
    let mut b = SecretInt::new(Int::zero());
    for ((m, c), shares) in directs.iter().zip(coms).zip(received) {
        if m.ints.len() != 3 || !m.small.is_empty() || m.digest.is_some() {
            return false;
        }
        for k in 0..3 {
            let blinding = &m.ints[k];
            if blinding.is_negative() || blinding >= p {
                return false;
            }
            let mut w = [0u8; 16];
            rng.fill_bytes(&mut w);
            let w = Int::from_bytes_be(&w);
            let expected = committed_at(gp, &c[r[k].clone()], j, k == 2);
            lhs = lhs.mul_mod(&expected.pow_mod(&w, gp.modulus()), gp.modulus());
            x = SecretInt::new(x.expose().add(&shares[k].expose().mul(&w)).rem_euclid(p));
            b = SecretInt::new(b.expose().add(&blinding.mul(&w)).rem_euclid(p));
        }
    }
    gp.opens(&lhs, &x, &b)
}

fn cert_of(cand: &Candidate) -> Result<&CertData> {
    cand.cert
        .as_deref()
        .ok_or_else(|| Error::KeyGenerationFailed("the chosen candidate lost its M3 data".into()))
}

/// One C1b complaint: holder `by` says dealer `against`'s C1 values do not open `record`, the
/// M3 record it received (shown to be the dealer's by the dealer's M3 digest).
#[derive(Clone, Debug)]
pub(super) struct Complaint {
    by: u16,
    against: u16,
    record: [Int; 3],
}

/// C1b (public side): every party's complaints, in party order, each with its evidence checked
/// against the accused dealer's published M3 digest (`digests[i][j]`; `records` records per M3
/// message, the candidate at `position`). A complaint whose evidence does not match names the
/// complainer; so does a malformed complaint message.
pub(super) fn complaints(
    setup: &Setup,
    batch: u32,
    digests: &[Vec<[u8; 32]>],
    records: usize,
    position: usize,
    msgs: &[&Message],
) -> Result<Vec<Complaint>> {
    let n = setup.n;
    let mut out = Vec::new();
    for m in msgs {
        let per = 3 + records;
        if m.digest.is_some() || m.ints.len() != m.small.len() * per {
            return Err(blame(m, "malformed C1 complaint"));
        }
        let mut last = 0u128;
        for (k, &accused) in m.small.iter().enumerate() {
            if accused <= last || accused > u128::from(n) {
                return Err(blame(m, "C1 complaint against no party, or twice"));
            }
            last = accused;
            let i = accused as u16; // ≤ n ≤ 16, checked above
            let body = &m.ints[k * per..(k + 1) * per];
            let record: [Int; 3] = [body[0].clone(), body[1].clone(), body[2].clone()];
            let mut hashes = Vec::with_capacity(records);
            for v in &body[3..] {
                let b = (!v.is_negative())
                    .then(|| v.to_bytes_be_padded(32))
                    .flatten()
                    .ok_or_else(|| blame(m, "C1 complaint evidence out of range"))?;
                let mut h = [0u8; 32];
                h.copy_from_slice(&b);
                hashes.push(h);
            }
            let published = digests
                .get(usize::from(i) - 1)
                .and_then(|d| d.get(usize::from(m.from.0) - 1));
            let shown = hashes.get(position) == Some(&record_hash(&record))
                && published
                    == Some(&m3_digest(
                        &setup.params.session,
                        batch,
                        i,
                        m.from.0,
                        &hashes,
                    ));
            if !shown {
                return Err(blame(
                    m,
                    format!(
                        "C1 complaint against party {i}: the record shown is not what party {i} \
                         sent (its M3 digest does not match)"
                    ),
                ));
            }
            out.push(Complaint {
                by: m.from.0,
                against: i,
                record,
            });
        }
    }
    Ok(out)
}

/// Waiting for C1b: everyone's complaints.
#[derive(Debug)]
pub(super) struct ComplaintRound {
    pub(super) batch: u32,
    n: Int,
    cand: Candidate,
    blindings: [Vec<SecretInt>; 3],
    commitments: Vec<Vec<Int>>,
    /// The blinding values each dealer sent this party, `None` where it complained.
    mine: Vec<Option<Vec<Int>>>,
}

impl ComplaintRound {
    pub(super) fn receive(self, ctx: &Ctx<'_>, inbox: &Inbox) -> Result<Transition> {
        let setup = ctx.setup;
        let gp = pedersen::group()?;
        let cert = cert_of(&self.cand)?;
        let evidence = cert.evidence.as_deref().ok_or_else(|| {
            Error::KeyGenerationFailed("the chosen candidate lost its M3 evidence".into())
        })?;
        let records = evidence.hashes.first().map_or(0, Vec::len);
        let list = complaints(
            setup,
            self.batch,
            &evidence.digests,
            records,
            cert.position,
            &inbox.broadcasts(ctx.all())?,
        )?;
        // C1c: open, publicly, the blinding values of every complaint against this party.
        let mut reveal = ctx.message(Round::CertifyReveals, self.batch, None);
        for c in list.iter().filter(|c| c.against == ctx.me.0) {
            reveal
                .ints
                .extend(blinding_values(gp, &self.blindings, c.by));
        }
        Ok(Transition::Next(
            State::CertifyReveals(Box::new(RevealRound {
                batch: self.batch,
                n: self.n,
                cand: self.cand,
                commitments: self.commitments,
                mine: self.mine,
                complaints: list,
            })),
            Outgoing {
                broadcast: Some(reveal),
                direct: Vec::new(),
            },
        ))
    }
}

/// C1c (public side): every accused dealer's public answer — for each complaint against it, in
/// complaint order, three blinding values that open its commitments at the complainer with the
/// evidenced record. A dealer that cannot is named. Returns the answers (complaint order).
pub(super) fn resolve(
    setup: &Setup,
    coms: &[&[Int]],
    list: &[Complaint],
    msgs: &[&Message],
) -> Result<Vec<Vec<Int>>> {
    let gp = pedersen::group()?;
    let mut answers: Vec<Option<Vec<Int>>> = vec![None; list.len()];
    for m in msgs {
        let against: Vec<usize> = (0..list.len())
            .filter(|&k| list[k].against == m.from.0)
            .collect();
        if m.ints.len() != 3 * against.len() || !m.small.is_empty() || m.digest.is_some() {
            return Err(blame(
                m,
                format!(
                    "{} values answering {} C1 complaints, expected {}",
                    m.ints.len(),
                    against.len(),
                    3 * against.len()
                ),
            ));
        }
        let Some(c) = coms.get(usize::from(m.from.0) - 1) else {
            return Err(blame(m, "no C1 commitments"));
        };
        for (at, &k) in against.iter().enumerate() {
            let b = &m.ints[3 * at..3 * at + 3];
            let cp = &list[k];
            let record = [&cp.record[0], &cp.record[1], &cp.record[2]];
            opens_at(gp, setup, c, cp.by, record, b, false).map_err(|reason| {
                blame(
                    m,
                    format!(
                        "cannot answer the C1 complaint of party {}: {reason}",
                        cp.by
                    ),
                )
            })?;
            answers[k] = Some(b.to_vec());
        }
    }
    answers
        .into_iter()
        .map(|a| {
            a.ok_or_else(|| Error::KeyGenerationFailed("a C1 complaint was left unanswered".into()))
        })
        .collect()
}

/// Waiting for C1c: the accused dealers' public answers.
#[derive(Debug)]
pub(super) struct RevealRound {
    pub(super) batch: u32,
    n: Int,
    cand: Candidate,
    commitments: Vec<Vec<Int>>,
    mine: Vec<Option<Vec<Int>>>,
    complaints: Vec<Complaint>,
}

impl RevealRound {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        rng: &mut R,
    ) -> Result<Transition> {
        let setup = ctx.setup;
        let gp = pedersen::group()?;
        let coms: Vec<&[Int]> = self.commitments.iter().map(Vec::as_slice).collect();
        let answers = resolve(
            setup,
            &coms,
            &self.complaints,
            &inbox.broadcasts(ctx.all())?,
        )?;
        let mut mine = self.mine;
        for (c, a) in self.complaints.iter().zip(answers) {
            if c.by == ctx.me.0 {
                if let Some(slot) = mine.get_mut(usize::from(c.against) - 1) {
                    *slot = Some(a);
                }
            }
        }
        let cert = cert_of(&self.cand)?;
        // P(me), Q(me), Z(me) and their openings: secrets, wiped on drop.
        let zero = || SecretInt::new(Int::zero());
        let mut sums: [SecretInt; 3] = [zero(), zero(), zero()];
        let mut openings: [SecretInt; 3] = [zero(), zero(), zero()];
        for (shares, b) in cert.received.iter().zip(&mine) {
            let Some(b) = b else {
                return Err(Error::KeyGenerationFailed(
                    "a C1 complaint of this party was left unanswered".into(),
                ));
            };
            for k in 0..3 {
                sums[k] = SecretInt::new(sums[k].expose().add(shares[k].expose()));
                openings[k] =
                    SecretInt::new(openings[k].expose().add(&b[k]).rem_euclid(gp.order()));
            }
        }
        let [a, b, _z] = sums;
        let mut out = Outgoing::default();
        if let Some(pos) = setup.product_parties.iter().position(|&p| p == ctx.me.0) {
            let y = cert.products.get(pos).ok_or_else(|| {
                Error::KeyGenerationFailed("the chosen candidate lost its M4 values".into())
            })?;
            let at = at_point(gp, setup, &coms, ctx.me.0);
            let statement = Statement {
                session: &setup.params.session,
                batch: self.batch,
                party: ctx.me.0,
                n: &self.n,
                y,
                coms: &at,
            };
            let mut m = ctx.message(Round::CertifyProducts, self.batch, None);
            m.ints = prove(gp, &statement, &a, &openings, rng);
            out.broadcast = Some(m);
        }
        let phi = derived_phi(setup, &self.n, &coms)?;
        // F(me) = Δ(N + 1) − P(me) − Q(me), opening −(r_P + r_Q) mod P.
        #[allow(unused_mut)]
        let mut constant = setup.delta.mul(&self.n.add(&Int::one()));
        #[cfg(test)]
        if let Some(h) = key::hooks::get(&setup.params.session) {
            constant = constant.add(&Int::from_i64(h.phi_offset));
        }
        let share = SecretInt::new(constant.sub(a.expose()).sub(b.expose()));
        let opening = SecretInt::new(
            openings[0]
                .expose()
                .add(openings[1].expose())
                .neg()
                .rem_euclid(gp.order()),
        );
        Ok(Transition::Next(
            State::CertifyProducts(Box::new(ProductRound {
                batch: self.batch,
                n: self.n,
                products: cert.products.clone(),
                commitments: self.commitments,
                phi: DerivedPhi {
                    commitments: phi,
                    share,
                    opening,
                },
            })),
            out,
        ))
    }
}

/// The φ sharing derived from the certified `p_i, q_i`: the public commitments `Φ` and this
/// party's share `F(me)` with its opening.
#[derive(Debug)]
pub(super) struct DerivedPhi {
    /// `Φ_0 … Φ_(t−1)` in `G_P`.
    pub(super) commitments: Vec<Int>,
    /// `F(me) = Δ(N + 1) − P(me) − Q(me)`.
    pub(super) share: SecretInt,
    /// The opening of `Π_k Φ_k^(me^k)`.
    pub(super) opening: SecretInt,
}

/// `Φ`: the commitments to `F(x) = Δ(N + 1) − P(x) − Q(x)` from every dealer's C1 commitments.
pub(super) fn derived_phi(setup: &Setup, n: &Int, coms: &[&[Int]]) -> Result<Vec<Int>> {
    let gp = pedersen::group()?;
    let t = usize::from(setup.t);
    let r = gp.modulus();
    #[allow(unused_mut)]
    let mut constant = setup.delta.mul(&n.add(&Int::one()));
    #[cfg(test)]
    if let Some(h) = key::hooks::get(&setup.params.session) {
        constant = constant.add(&Int::from_i64(h.phi_offset));
    }
    (0..t)
        .map(|k| {
            let sum = gp.combine(coms.iter().flat_map(|c| [&c[k], &c[t + k]]));
            let inv = sum.invert(r).ok_or_else(|| {
                Error::KeyGenerationFailed("C1 commitment is not a unit mod R".into())
            })?;
            Ok(if k == 0 {
                gp.commit_public(&constant, &Int::zero()).mul_mod(&inv, r)
            } else {
                inv
            })
        })
        .collect()
}

/// C2 (public side): every product party's multiplication proof against its M4 value `ys[k]`
/// (product-party order). Names the first party whose proof is malformed or fails.
pub(super) fn check_products(
    setup: &Setup,
    batch: u32,
    n: &Int,
    coms: &[&[Int]],
    ys: &[Int],
    msgs: &[&Message],
) -> Result<()> {
    let gp = pedersen::group()?;
    if msgs.len() != ys.len() {
        return Err(Error::KeyGenerationFailed(
            "C2: a product party's M4 value is missing".into(),
        ));
    }
    let mut points = Vec::with_capacity(msgs.len());
    for m in msgs {
        if !m.small.is_empty() || m.digest.is_some() {
            return Err(blame(
                m,
                "unexpected values beside the multiplication proof",
            ));
        }
        points.push(at_point(gp, setup, coms, m.from.0));
    }
    let statements: Vec<Statement<'_>> = msgs
        .iter()
        .zip(ys)
        .zip(&points)
        .map(|((m, y), at)| Statement {
            session: &setup.params.session,
            batch,
            party: m.from.0,
            n,
            y,
            coms: at,
        })
        .collect();
    let proofs: Vec<&[Int]> = msgs.iter().map(|m| m.ints.as_slice()).collect();
    if check_batch(gp, &statements, &proofs) {
        return Ok(());
    }
    for (m, st) in msgs.iter().zip(&statements) {
        check(gp, st, &m.ints).map_err(|reason| blame(m, reason))?;
    }
    // Every proof is valid alone, so the batch cannot fail; refuse rather than go on if it
    // somehow did.
    Err(Error::KeyGenerationFailed(
        "C2: the multiplication proofs fail as a batch but not one by one".into(),
    ))
}

/// Waiting for C2: the product parties' multiplication proofs.
#[derive(Debug)]
pub(super) struct ProductRound {
    pub(super) batch: u32,
    n: Int,
    products: Vec<Int>,
    commitments: Vec<Vec<Int>>,
    phi: DerivedPhi,
}

impl ProductRound {
    pub(super) fn receive<R: RngCore + CryptoRng + ?Sized>(
        self,
        ctx: &Ctx<'_>,
        inbox: &Inbox,
        rng: &mut R,
    ) -> Result<Transition> {
        let coms: Vec<&[Int]> = self.commitments.iter().map(Vec::as_slice).collect();
        check_products(
            ctx.setup,
            self.batch,
            &self.n,
            &coms,
            &self.products,
            &inbox.broadcasts(ctx.product_parties())?,
        )?;
        let (state, out) = key::start(ctx, self.n, self.phi, rng)?;
        Ok(Transition::Next(state, out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    /// An honest statement `y = a·b + z` with its commitments and openings.
    fn honest(seed: u64, shift: i64) -> ([Int; 3], [SecretInt; 3], Int, SecretInt) {
        let gp = pedersen::group().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let a = Int::random_bits(&mut rng, 1200);
        let b = Int::random_bits(&mut rng, 1200);
        let z = Int::random_bits(&mut rng, 2500);
        let rs: Vec<SecretInt> = (0..3).map(|_| gp.random_blinding(&mut rng)).collect();
        let coms = [
            gp.commit(&SecretInt::new(a.clone()), &rs[0]),
            gp.commit(&SecretInt::new(b.clone()), &rs[1]),
            gp.commit(&SecretInt::new(z.clone()), &rs[2]),
        ];
        let y = a.mul(&b).add(&z).add(&Int::from_i64(shift));
        let openings = [rs[0].clone(), rs[1].clone(), rs[2].clone()];
        (coms, openings, y, SecretInt::new(a))
    }

    fn statement<'a>(coms: &'a [Int; 3], y: &'a Int, n: &'a Int) -> Statement<'a> {
        Statement {
            session: &[7; 32],
            batch: 3,
            party: 2,
            n,
            y,
            coms,
        }
    }

    #[test]
    fn an_honest_multiplication_proof_verifies() {
        let gp = pedersen::group().unwrap();
        let (coms, openings, y, a) = honest(1, 0);
        let n = Int::from_u64(77);
        let st = statement(&coms, &y, &n);
        let proof = prove(gp, &st, &a, &openings, &mut ChaCha20Rng::seed_from_u64(2));
        check(gp, &st, &proof).unwrap();
        // Bound to the statement: another party, batch or N fails.
        let other = Statement {
            party: 3,
            ..statement(&coms, &y, &n)
        };
        assert!(check(gp, &other, &proof).is_err());
        let n2 = Int::from_u64(78);
        assert!(check(gp, &statement(&coms, &y, &n2), &proof).is_err());
    }

    /// Break 2a at the level of one product party: a `y` that is not `a·b + z` for the
    /// committed values cannot be proven — the prover runs the honest algorithm on the shifted
    /// `y` (an adaptive prover that knows every witness) and the verifier refuses it.
    #[test]
    fn a_shifted_product_cannot_be_proven() {
        let gp = pedersen::group().unwrap();
        let n = Int::from_u64(77);
        for shift in [1i64, -1, 1 << 40] {
            let (coms, openings, y, a) = honest(10 + shift.unsigned_abs(), shift);
            let st = statement(&coms, &y, &n);
            let proof = prove(gp, &st, &a, &openings, &mut ChaCha20Rng::seed_from_u64(3));
            let err = check(gp, &st, &proof).unwrap_err();
            assert!(err.contains("multiplication proof fails"), "{err}");
        }
    }

    /// The batch check accepts exactly what the one-by-one check accepts: three honest proofs
    /// pass together; replacing one by a proof of a shifted product fails the batch.
    #[test]
    fn the_batch_check_refuses_a_batch_with_one_false_proof() {
        let gp = pedersen::group().unwrap();
        let n = Int::from_u64(77);
        let fixtures: Vec<_> = (0..3).map(|k| honest(40 + k, 0)).collect();
        let shifted = honest(43, 1);
        let mut statements = Vec::new();
        let mut proofs = Vec::new();
        for (k, (coms, openings, y, a)) in fixtures.iter().chain([&shifted]).enumerate() {
            let st = Statement {
                party: k as u16 + 1,
                ..statement(coms, y, &n)
            };
            proofs.push(prove(
                gp,
                &st,
                a,
                openings,
                &mut ChaCha20Rng::seed_from_u64(k as u64),
            ));
            statements.push(st);
        }
        let refs: Vec<&[Int]> = proofs.iter().map(Vec::as_slice).collect();
        assert!(check_batch(gp, &statements[..3], &refs[..3]));
        let mixed_st: Vec<Statement<'_>> = statements
            .iter()
            .enumerate()
            .filter(|(k, _)| *k != 1)
            .map(|(_, s)| Statement { ..*s })
            .collect();
        let mixed: Vec<&[Int]> = [refs[0], refs[2], refs[3]].to_vec();
        assert!(!check_batch(gp, &mixed_st, &mixed));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        /// Tweak a valid proof: any change to any of its four values must fail.
        #[test]
        fn a_tweaked_multiplication_proof_fails(at in 0usize..5, delta in 1u64..1000) {
            let gp = pedersen::group().unwrap();
            let (coms, openings, y, a) = honest(5, 0);
            let n = Int::from_u64(77);
            let st = statement(&coms, &y, &n);
            let mut proof = prove(gp, &st, &a, &openings, &mut ChaCha20Rng::seed_from_u64(6));
            proof[at] = proof[at].add(&Int::from_u64(delta));
            prop_assert!(check(gp, &st, &proof).is_err());
            prop_assert!(!check_batch(gp, &[st], &[proof.as_slice()]));
        }
    }
}
