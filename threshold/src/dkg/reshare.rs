//! Key refresh and re-sharing: the same key `N` (and so every ciphertext already made under it)
//! moves to fresh shares for the same committee, or to a new committee `(n', t')` — a hospital
//! joins or leaves — without anyone reconstructing the decryption exponent.
//!
//! Herzberg et al. (CRYPTO 1995) proactive refresh and Desmedt–Jajodia (1997) redistribution,
//! over the integers as in Rabin (CRYPTO 1998) and Shoup (2000 §2):
//!
//! 1. A set `T` of exactly `t` current members, fixed in the [`ReshareParameters`], deals. Member
//!    `i ∈ T` with share `s_i` takes `e_i = λ'_i·s_i·Δ*` (`λ'_i` the `Δ`-scaled integer Lagrange
//!    coefficient of `i` in `T`, `Δ* = max(n, n')!`, a multiple of `Δ = n!` and `Δ' = n'!`) and
//!    shares it with a degree-`t' − 1` integer
//!    polynomial whose other coefficients are `2^128` times larger than `e_i·Δ'·n'^t'`, with
//!    Feldman commitments `D_{i,m} = v^(coefficient)`. It sends `g_i(j)` to new member `j`.
//! 2. New member `j` checks, for every dealer: `D_{i,0} = v_i^(λ'_i·Δ*/Δ)` — the dealt constant
//!    *is* the dealer's current share, checked against its verification key `v_i = v^(Δ s_i)`;
//!    anyone can check this, and a failure names the dealer. Then its own sub-share: in the
//!    range an honest dealer's polynomial reaches at `j` (constant `|e_i| < 2^e_bits`, other
//!    coefficients in `[0, 2^coeff)`), and `v^(g_i(j)) = Π_m D_{i,m}^(j^m)`.
//!    **In public (R1b–R1c; issue 30 §1):** a new member whose sub-share fails does not stop
//!    alone — before, it named the dealer on its own host while the others timed out on it and
//!    named *it*. It broadcasts a complaint ([`complain`]); every accused dealer answers with
//!    the sub-share in public ([`answer`]); everyone checks the answer, a dealer that cannot
//!    answer is named by all ([`receive`], [`reshared_key`]), and a complainer takes the
//!    answered sub-share (module `complaint`, as K1b–K1c).
//! 3. `s'_j = Σ_{i∈T} g_i(j)` shares `d' = Δ·Δ*·d` with degree `t' − 1`; the new verification keys
//!    are `v'_k = (Π_i Π_m D_{i,m}^(k^m))^Δ'`, the new combination constant `θ' = Δ·Δ*·θ mod N`.
//!
//! The old shares are a sharing of `d`, the new ones of `Δ·Δ*·d` with independent randomness:
//! after a refresh, `t − 1` old shares together with `t' − 1` new ones reveal nothing, and old
//! shares do not combine with the new key (its fingerprint differs, and the core refuses a share
//! of another key). Each re-sharing adds about `|λ'| + 2|Δ| + 128 + t'·log n'` bits to the share
//! bound (≈ 170 bits at n = 5): dozens of refreshes stay within the core's limits.

use rand_core::{CryptoRng, RngCore};

use super::field::{eval_int, integer_lagrange};
use super::message::{Message, Outgoing, Round, MAX_INT_BITS};
use super::{blame, MAX_DKG_PARTIES};
use crate::bigint::{Int, SecretInt};
use crate::error::{Error, Result};
use crate::keys::{factorial, KeyShare, PartyIndex, ThresholdPublicKey, MAX_PARTIES};

const STAT_BITS: usize = super::STAT_BITS;

/// What everyone agrees on before a re-sharing.
#[derive(Clone, Debug)]
pub struct ReshareParameters {
    session: [u8; 32],
    key: ThresholdPublicKey,
    dealers: Vec<u16>,
    new_parties: u16,
    new_threshold: u16,
}

impl ReshareParameters {
    /// Re-shares `key` from exactly `t` of its members (`dealers`, distinct) to a committee of
    /// `new_parties` with threshold `new_threshold`. Same `(n, t)` is a refresh.
    pub fn new(
        session: [u8; 32],
        key: &ThresholdPublicKey,
        dealers: &[PartyIndex],
        new_parties: u16,
        new_threshold: u16,
    ) -> Result<Self> {
        let mut ds: Vec<u16> = dealers.iter().map(|p| p.0).collect();
        ds.sort_unstable();
        ds.dedup();
        if ds.len() != dealers.len() || ds.len() != usize::from(key.threshold()) {
            return Err(Error::InvalidParameters(format!(
                "re-sharing needs exactly t = {} distinct dealers, got {:?}",
                key.threshold(),
                dealers
            )));
        }
        if ds.iter().any(|&d| d == 0 || d > key.parties()) {
            return Err(Error::InvalidParameters(
                "dealer outside the committee".into(),
            ));
        }
        if !(1..=MAX_PARTIES.min(MAX_DKG_PARTIES)).contains(&new_parties)
            || new_threshold == 0
            || new_threshold > new_parties
        {
            return Err(Error::InvalidParameters(format!(
                "new committee of {new_parties} with threshold {new_threshold}"
            )));
        }
        Ok(ReshareParameters {
            session,
            key: key.clone(),
            dealers: ds,
            new_parties,
            new_threshold,
        })
    }

    /// The session identifier every message carries.
    pub fn session(&self) -> [u8; 32] {
        self.session
    }

    /// The key being re-shared.
    pub fn key(&self) -> &ThresholdPublicKey {
        &self.key
    }

    /// The dealers' (current) indices, ascending.
    pub fn dealers(&self) -> &[u16] {
        &self.dealers
    }

    /// `n'`.
    pub fn new_parties(&self) -> u16 {
        self.new_parties
    }

    /// `t'`.
    pub fn new_threshold(&self) -> u16 {
        self.new_threshold
    }

    /// `Δ* = max(n, n')!`, the factor each dealt constant carries: a multiple of both `Δ = n!`
    /// (so that the dealing check `D_{i,0} = v_i^(λ'_i·Δ*/Δ)` is exact: with `Δ'` alone, when
    /// `n' < n`, the check had to raise `D_{i,0}` to the power `Δ` and fixed it only up to
    /// `Δ`-th roots of unity — issue 30 §5) and `Δ' = n'!` (integer sharing on the new
    /// committee).
    fn dealt_delta(&self) -> Int {
        factorial(self.key.parties().max(self.new_parties))
    }

    /// `(bits of |e_i|, bits of the polynomial coefficients, bits of the new share bound)`.
    fn sizes(&self) -> (usize, usize, usize) {
        let old_delta = self.key.delta();
        let new_delta = factorial(self.new_parties);
        let dealt_delta = self.dealt_delta();
        let lambda_bits = integer_lagrange(&self.dealers, old_delta)
            .iter()
            .map(Int::bits)
            .max()
            .unwrap_or(1);
        let e_bits = self.key.share_bits() as usize + lambda_bits + dealt_delta.bits();
        let spread = usize::from(self.new_threshold)
            * (u16::BITS - self.new_parties.leading_zeros()) as usize
            + 2;
        let coeff = e_bits + new_delta.bits() + spread + STAT_BITS;
        let dealers = self.dealers.len().next_power_of_two().trailing_zeros() as usize;
        (e_bits, coeff, coeff + spread + dealers + 2)
    }
}

fn pow_signed(base: &Int, e: &Int, m: &Int) -> Option<Int> {
    if e.is_negative() {
        Some(base.invert(m)?.pow_mod(&e.abs(), m))
    } else {
        Some(base.pow_mod(e, m))
    }
}

/// What a dealer keeps after dealing, to answer complaints in R1c ([`answer`]): its
/// polynomial. Wiped on drop; its `Debug` is redacted; it is never serialized.
pub struct Dealing {
    index: u16,
    poly: Vec<SecretInt>,
}

impl core::fmt::Debug for Dealing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Dealing")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// Dealer side: member `share.index()` (one of the dealers) produces its commitments
/// (broadcast) and one share per new member (direct, recipients are new indices), and keeps
/// its polynomial to answer complaints.
pub fn deal<R: RngCore + CryptoRng + ?Sized>(
    params: &ReshareParameters,
    share: &KeyShare,
    rng: &mut R,
) -> Result<(Dealing, Outgoing)> {
    let key = &params.key;
    if share.key_fingerprint() != key.fingerprint() {
        return Err(Error::Mismatch(
            "key share belongs to a different threshold key",
        ));
    }
    let me = share.index();
    let pos = params
        .dealers
        .iter()
        .position(|&d| d == me.0)
        .ok_or_else(|| Error::InvalidParameters(format!("party {me} is not a dealer")))?;
    let lambda = &integer_lagrange(&params.dealers, key.delta())[pos];
    let (_, coeff_bits, _) = params.sizes();
    let mut poly = vec![SecretInt::new(
        share
            .secret()
            .expose()
            .mul(lambda)
            .mul(&params.dealt_delta()),
    )];
    for _ in 1..params.new_threshold {
        poly.push(SecretInt::new(Int::random_bits(rng, coeff_bits)));
    }
    let nn = key.public_key().nn();
    let v = key.v();
    let v_inv = v
        .invert(nn)
        .ok_or_else(|| Error::InvalidParameters("verification base is not a unit".into()))?;
    let commitments = poly
        .iter()
        .map(|c| {
            let x = c.expose();
            if x.is_negative() {
                v_inv.pow_mod_secret(&SecretInt::new(x.abs()), nn)
            } else {
                v.pow_mod_secret(c, nn)
            }
        })
        .collect();
    let mut broadcast = Message::new(params.session, Round::Refresh, 0, me, None);
    broadcast.ints = commitments;
    let direct = (1..=params.new_parties)
        .map(|j| {
            let mut m = Message::new(params.session, Round::Refresh, 0, me, Some(PartyIndex(j)));
            m.ints = vec![eval_int(&poly, j)];
            m
        })
        .collect();
    Ok((
        Dealing { index: me.0, poly },
        Outgoing {
            broadcast: Some(broadcast),
            direct,
        },
    ))
}

/// The dealers' Feldman commitments, each checked against the dealer's verification key.
struct Dealings<'a> {
    /// Per dealer (in `params.dealers` order): its broadcast commitments.
    commitments: Vec<&'a [Int]>,
}

/// Finds the one message of round `round` from `from` in `messages` (a broadcast, or the
/// direct one to `direct`).
fn find_message<'a>(
    params: &ReshareParameters,
    messages: &'a [Message],
    round: Round,
    from: u16,
    direct: Option<PartyIndex>,
) -> Result<&'a Message> {
    let mut it = messages.iter().filter(|m| {
        m.from.0 == from && m.session == params.session && m.round == round && m.to == direct
    });
    let first = it.next();
    match (first, it.next()) {
        (Some(m), None) => Ok(m),
        (Some(m), Some(_)) => Err(blame(m, "two messages in one round")),
        (None, _) => Err(Error::Misbehaviour {
            party: PartyIndex(from),
            round,
            reason: "no message received".into(),
        }),
    }
}

/// The sub-share `dealer` sent new member `me`, if one came (two are an error naming it).
fn direct_share<'a>(
    params: &ReshareParameters,
    messages: &'a [Message],
    dealer: u16,
    me: PartyIndex,
) -> Result<Option<&'a Message>> {
    let mut it = messages.iter().filter(|m| {
        m.from.0 == dealer
            && m.session == params.session
            && m.round == Round::Refresh
            && m.to == Some(me)
    });
    match (it.next(), it.next()) {
        (Some(m), Some(_)) => Err(blame(m, "two messages in one round")),
        (first, _) => Ok(first),
    }
}

/// Step 2, public half: every dealer's commitments are units mod N² and commit to its current
/// share, exactly: `D_{i,0} = v_i^(λ'_i·Δ*/Δ)` (`v_i = v^(Δ·s_i)`). Anyone holding the old public
/// key can run it.
fn check_dealings<'a>(params: &ReshareParameters, messages: &'a [Message]) -> Result<Dealings<'a>> {
    let key = &params.key;
    let nn = key.public_key().nn();
    let t_new = usize::from(params.new_threshold);
    // Δ* is a multiple of Δ: exact.
    let scale = params
        .dealt_delta()
        .div_exact(key.delta())
        .ok_or_else(|| Error::InvalidParameters("Δ* is not a multiple of Δ".into()))?;
    let lambdas = integer_lagrange(&params.dealers, key.delta());
    let mut commitments = Vec::with_capacity(params.dealers.len());
    for (&dealer, lambda) in params.dealers.iter().zip(&lambdas) {
        let b = find_message(params, messages, Round::Refresh, dealer, None)?;
        let cs = super::modulus::expect_ints(b, t_new, nn)?;
        if cs.iter().any(|c| c.is_zero() || c.gcd(nn) != Int::one()) {
            return Err(blame(b, "commitment is not a unit mod N²"));
        }
        let vk = key.vk(PartyIndex(dealer))?;
        let expected = pow_signed(vk, &lambda.mul(&scale), nn)
            .ok_or_else(|| blame(b, "verification key is not a unit"))?;
        if cs[0] != expected {
            return Err(blame(
                b,
                "re-shared constant does not match the dealer's verification key",
            ));
        }
        commitments.push(cs);
    }
    Ok(Dealings { commitments })
}

/// Step 3, public half: the new verification keys and `θ'` from the checked commitments.
fn new_key(params: &ReshareParameters, dealings: &Dealings<'_>) -> Result<ThresholdPublicKey> {
    let key = &params.key;
    let pk = key.public_key();
    let nn = pk.nn();
    let new_delta = factorial(params.new_parties);
    let (_, _, bound) = params.sizes();
    let vks = (1..=params.new_parties)
        .map(|k| {
            dealings
                .commitments
                .iter()
                .fold(Int::one(), |acc, cs| {
                    acc.mul_mod(&committed_at(cs, k, nn), nn)
                })
                .pow_mod(&new_delta, nn)
        })
        .collect();
    let theta = key
        .theta()
        .mul(key.delta())
        .mul(&params.dealt_delta())
        .rem_euclid(pk.n());
    ThresholdPublicKey::from_parts(
        pk.clone(),
        params.new_parties,
        params.new_threshold,
        key.v().clone(),
        vks,
        theta,
        bound as u32,
    )
}

/// Why sub-share `values`, from the dealer whose commitments are `cs`, are not what an
/// honest dealer sends new member `j`: range first (a dealer that commits honestly to an
/// oversized polynomial is consistent with its commitments), then the Feldman check.
fn share_fault(
    params: &ReshareParameters,
    cs: &[Int],
    j: u16,
    values: &[Int],
) -> core::result::Result<(), String> {
    let key = &params.key;
    let nn = key.public_key().nn();
    let [x] = values else {
        return Err(format!("{} values, expected one share", values.len()));
    };
    let (e_bits, coeff_bits, _) = params.sizes();
    let e = Int::one().shl(e_bits).sub(&Int::one());
    let (low, high) = super::key::share_range(
        &e.neg(),
        &e,
        coeff_bits,
        usize::from(params.new_threshold) - 1,
        j,
    );
    if x < &low || x > &high || x.bits() > MAX_INT_BITS {
        return Err(format!(
            "sub-share outside its public bound ({} bits{}; honest sub-shares lie in \
             [-{}-bit, {}-bit])",
            x.bits(),
            if x.is_negative() { ", negative" } else { "" },
            low.bits(),
            high.bits()
        ));
    }
    let lhs = if x.is_negative() {
        key.v()
            .invert(nn)
            .map(|vi| vi.pow_mod_secret(&SecretInt::new(x.abs()), nn))
    } else {
        Some(key.v().pow_mod_secret(&SecretInt::new(x.clone()), nn))
    };
    if lhs != Some(committed_at(cs, j, nn)) {
        return Err("share does not match its Feldman commitment".into());
    }
    Ok(())
}

/// R1b, new-member side: checks every dealer's public dealing (a failure names the dealer) and
/// its own sub-share from each, and returns its complaint broadcast: the dealers whose
/// sub-share failed, usually none. Every new member sends one.
pub fn complain(
    params: &ReshareParameters,
    me: PartyIndex,
    messages: &[Message],
) -> Result<Message> {
    if me.0 == 0 || me.0 > params.new_parties {
        return Err(Error::UnknownParty {
            party: me,
            parties: params.new_parties,
        });
    }
    let dealings = check_dealings(params, messages)?;
    let mut against = Vec::new();
    for (&dealer, cs) in params.dealers.iter().zip(&dealings.commitments) {
        // A sub-share that never came is complained about like a bad one (attacker review,
        // finding 2: withholding it used to stop this member alone).
        let good = direct_share(params, messages, dealer, me)?
            .filter(|d| d.small.is_empty() && share_fault(params, cs, me.0, &d.ints).is_ok());
        if good.is_none() {
            against.push(dealer);
        }
    }
    Ok(super::complaint::complaint_message(
        Message::new(params.session, Round::RefreshComplaints, 0, me, None),
        &against,
    ))
}

/// Every new member's R1b complaint (new indices; a malformed one names its author, in round
/// R1b — the index is a new member's).
fn complaints(
    params: &ReshareParameters,
    messages: &[Message],
) -> Result<Vec<super::complaint::Complaint>> {
    let msgs = (1..=params.new_parties)
        .map(|j| find_message(params, messages, Round::RefreshComplaints, j, None))
        .collect::<Result<Vec<_>>>()?;
    super::complaint::complaints(&msgs, &params.dealers, false)
}

/// The public check of everything up to and including `round` (R1: every dealing against its
/// dealer's verification key; R1b: and every complaint's form; R1c: and every answer), from
/// the public messages alone. Every participant runs it after each round — a dealer, a new
/// member, one that leaves — so that all reach the same verdict at the same point, whatever
/// their role (attacker review of the complaint rounds, finding 1: a leaving dealer that did
/// not check the dealings waited for complaints and named an honest new member).
pub fn check_public(
    params: &ReshareParameters,
    round: Round,
    broadcasts: &[Message],
) -> Result<()> {
    let dealings = check_dealings(params, broadcasts)?;
    if round >= Round::RefreshComplaints {
        let list = complaints(params, broadcasts)?;
        if round >= Round::RefreshAnswers {
            answers(params, &dealings, &list, broadcasts)?;
        }
    }
    Ok(())
}

/// R1c, dealer side: the answer to every complaint against this dealer (its sub-share to each
/// complainer, in public). Every dealer sends one, usually empty.
pub fn answer(
    params: &ReshareParameters,
    dealing: &Dealing,
    messages: &[Message],
) -> Result<Message> {
    let list = complaints(params, messages)?;
    let mut m = Message::new(
        params.session,
        Round::RefreshAnswers,
        0,
        PartyIndex(dealing.index),
        None,
    );
    m.ints = super::complaint::answer_values(
        &list,
        dealing.index,
        usize::from(params.new_threshold),
        |j| vec![eval_int(&dealing.poly, j)],
    );
    Ok(m)
}

/// R1c, everyone: every dealer's answers, checked against its commitments and the
/// complainer's range; a dealer that cannot answer is named (old index, round R1c).
fn answers<'a>(
    params: &ReshareParameters,
    dealings: &Dealings<'_>,
    list: &[super::complaint::Complaint],
    messages: &'a [Message],
) -> Result<Vec<&'a [Int]>> {
    let msgs = params
        .dealers
        .iter()
        .map(|&d| find_message(params, messages, Round::RefreshAnswers, d, None))
        .collect::<Result<Vec<_>>>()?;
    super::complaint::answers(&msgs, list, 1, "R1", |c, values| {
        let pos = params
            .dealers
            .iter()
            .position(|&d| d == c.against)
            .ok_or_else(|| "not a dealer".to_string())?;
        share_fault(params, dealings.commitments[pos], c.by, values)
    })
}

/// The re-shared public key from the public messages alone — the dealers' broadcasts, every
/// new member's complaint and every dealer's answer — after the public checks of step 2 (each
/// dealer's commitments against its verification key, each answer against them). A dealer that
/// leaves the committee, an operator or an auditor uses this to learn and check the new key; a
/// new member gets the same key from [`receive`], which also checks its own share.
pub fn reshared_key(
    params: &ReshareParameters,
    broadcasts: &[Message],
) -> Result<ThresholdPublicKey> {
    let dealings = check_dealings(params, broadcasts)?;
    let list = complaints(params, broadcasts)?;
    answers(params, &dealings, &list, broadcasts)?;
    new_key(params, &dealings)
}

/// New-member side, after R1c: checks every dealer's commitments against its verification key,
/// every complaint's answer, and its own sub-shares (an answered one in place of the one it
/// complained about); returns the new key and this member's new share. `messages` are the
/// dealers' broadcasts, their direct messages to `me`, every complaint and every answer.
pub fn receive(
    params: &ReshareParameters,
    me: PartyIndex,
    messages: &[Message],
) -> Result<(ThresholdPublicKey, KeyShare)> {
    if me.0 == 0 || me.0 > params.new_parties {
        return Err(Error::UnknownParty {
            party: me,
            parties: params.new_parties,
        });
    }
    let (_, _, bound) = params.sizes();
    let dealings = check_dealings(params, messages)?;
    let list = complaints(params, messages)?;
    let answered = answers(params, &dealings, &list, messages)?;
    let mut s = Int::zero();
    for (&dealer, cs) in params.dealers.iter().zip(&dealings.commitments) {
        let mine = list
            .iter()
            .zip(&answered)
            .find(|(c, _)| c.by == me.0 && c.against == dealer)
            .map(|(_, a)| *a);
        let x = match mine {
            Some(a) => &a[0],
            None => {
                let d = direct_share(params, messages, dealer, me)?.ok_or_else(|| {
                    Error::KeyGenerationFailed(format!(
                        "no sub-share from dealer {dealer}, and this member did not complain"
                    ))
                })?;
                if !d.small.is_empty() {
                    return Err(blame(d, "malformed sub-share"));
                }
                share_fault(params, cs, me.0, &d.ints).map_err(|why| {
                    Error::KeyGenerationFailed(format!(
                        "the sub-share of dealer {dealer} fails ({why}) but this member did \
                         not complain about it"
                    ))
                })?;
                &d.ints[0]
            }
        };
        s = s.add(x);
    }
    let s = SecretInt::new(s);
    if s.expose().is_negative() || s.expose().is_zero() || s.expose().bits() > bound {
        return Err(Error::KeyGenerationFailed(
            "new key share outside its public bound".into(),
        ));
    }
    let new_key = new_key(params, &dealings)?;
    let share = KeyShare::new(me, s, new_key.fingerprint());
    Ok((new_key, share))
}

/// R2, new-member side: this member's partial decryption, with proof, of the test ciphertext
/// `c* = (1+N)^(m*)·h_s^(r*)` hashed from the session and the new key (as key generation's K4).
/// Every new member sends one before anyone accepts the new key.
pub fn test_partial<R: RngCore + CryptoRng + ?Sized>(
    params: &ReshareParameters,
    new_key: &ThresholdPublicKey,
    share: &KeyShare,
    rng: &mut R,
) -> Result<Message> {
    let mut m = Message::new(params.session, Round::RefreshTest, 0, share.index(), None);
    m.ints = super::key::test_partial(&params.session, new_key, share, rng)?;
    Ok(m)
}

/// R2, everyone: every new member's test partial must verify against its new verification key
/// (a failure names that member, by new index) and every `t'` of them must decrypt the test
/// ciphertext; otherwise the new key is refused — a re-sharing is accepted, and old shares may
/// be destroyed, only once the new committee has shown it decrypts.
pub fn check_test(
    params: &ReshareParameters,
    new_key: &ThresholdPublicKey,
    messages: &[Message],
) -> Result<()> {
    let msgs = (1..=params.new_parties)
        .map(|j| find_message(params, messages, Round::RefreshTest, j, None))
        .collect::<Result<Vec<_>>>()?;
    super::key::check_test_decryption(&params.session, new_key, &msgs)
}

/// `Π_m C_m^(x^m) mod N²`: what a Feldman commitment says the share at `x` is, in the exponent.
pub(super) fn committed_at(commitments: &[Int], x: u16, nn: &Int) -> Int {
    let x = Int::from_u64(u64::from(x));
    let mut power = Int::one();
    let mut acc = Int::one();
    for c in commitments {
        acc = acc.mul_mod(&c.pow_mod(&power, nn), nn);
        power = power.mul(&x);
    }
    acc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    /// R1b and R1c of a test run: every new member's complaint (returned, and appended to
    /// `msgs`), then every dealer's answer (appended).
    fn complain_and_answer(
        params: &ReshareParameters,
        dealings: &[Dealing],
        msgs: &mut Vec<Message>,
    ) -> Vec<Message> {
        let complaints: Vec<Message> = (1..=params.new_parties)
            .map(|j| complain(params, PartyIndex(j), msgs).unwrap())
            .collect();
        msgs.extend(complaints.iter().cloned());
        let answers: Vec<Message> = dealings
            .iter()
            .map(|d| answer(params, d, msgs).unwrap())
            .collect();
        msgs.extend(answers);
        complaints
    }

    /// Issue 30 §1: a dealer that commits *honestly* to a polynomial whose top coefficient is
    /// far outside its public size passes every Feldman check; before the per-sub-share range
    /// check it was caught only through the sum of a member's sub-shares ("new key share
    /// outside its public bound"), naming nobody. Now every new member complains, and the dealer
    /// — which may not answer t' complaints — is named in R1c by everyone.
    #[test]
    fn an_oversized_sub_share_consistent_with_its_commitments_is_named() {
        let (key, shares) = crate::dealer::insecure_generate_from_seed(512, 3, 2, 21).unwrap();
        let params =
            ReshareParameters::new([9; 32], &key, &[PartyIndex(1), PartyIndex(2)], 3, 2).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut msgs = Vec::new();
        let mut dealings = Vec::new();
        for share in &shares[..2] {
            let (mut dealing, mut out) = deal(&params, share, &mut rng).unwrap();
            if dealing.index == 2 {
                // Re-deal consistently with a huge top coefficient.
                let (_, coeff, _) = params.sizes();
                let last = dealing.poly.len() - 1;
                dealing.poly[last] = SecretInt::new(Int::one().shl(coeff + 64));
                let nn = key.public_key().nn();
                if let Some(b) = out.broadcast.as_mut() {
                    b.ints[last] = key.v().pow_mod(dealing.poly[last].expose(), nn);
                }
                for m in &mut out.direct {
                    let j = m.to.unwrap().0;
                    m.ints = vec![eval_int(&dealing.poly, j)];
                }
            }
            msgs.extend(out.broadcast);
            msgs.extend(out.direct);
            dealings.push(dealing);
        }
        for c in complain_and_answer(&params, &dealings, &mut msgs) {
            assert_eq!(c.small, vec![2], "member {} accuses dealer 2", c.from);
        }
        for j in 1..=3 {
            let e = receive(&params, PartyIndex(j), &msgs).unwrap_err();
            assert_eq!(e.culprits(), vec![PartyIndex(2)], "member {j}: {e}");
            // Three complaints at t' = 2: the dealer may not answer (two points would open its
            // polynomial), and is named for the missing answers.
            assert!(e.to_string().contains("0 values answering 3"), "{e}");
        }
        let public: Vec<Message> = msgs.into_iter().filter(|m| m.to.is_none()).collect();
        assert_eq!(
            reshared_key(&params, &public).unwrap_err().culprits(),
            vec![PartyIndex(2)]
        );
    }

    /// Attacker review, finding 2: a withheld sub-share (dealer 2 sends member 3 nothing) is
    /// complained about like a bad one; the public answer repairs the re-sharing.
    #[test]
    fn a_withheld_sub_share_is_complained_about_and_answered() {
        let (key, shares) = crate::dealer::insecure_generate_from_seed(512, 3, 2, 23).unwrap();
        let params =
            ReshareParameters::new([9; 32], &key, &[PartyIndex(1), PartyIndex(2)], 3, 2).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let mut msgs = Vec::new();
        let mut dealings = Vec::new();
        for share in &shares[..2] {
            let (dealing, out) = deal(&params, share, &mut rng).unwrap();
            msgs.extend(out.broadcast);
            msgs.extend(
                out.direct
                    .into_iter()
                    .filter(|m| !(m.from == PartyIndex(2) && m.to == Some(PartyIndex(3)))),
            );
            dealings.push(dealing);
        }
        for c in complain_and_answer(&params, &dealings, &mut msgs) {
            let expected = if c.from == PartyIndex(3) {
                vec![2]
            } else {
                vec![]
            };
            assert_eq!(c.small, expected, "member {}", c.from);
        }
        let keys: Vec<ThresholdPublicKey> = (1..=3)
            .map(|j| receive(&params, PartyIndex(j), &msgs).unwrap().0)
            .collect();
        assert!(keys.iter().all(|k| *k == keys[0]));
    }

    /// Issue 30 §5: with `n' < n` the dealing check used to raise `D_{i,0}` to the power `Δ`,
    /// fixing it only up to `Δ`-th roots of unity: a dealer publishing `−D_{i,0}` (−1 is one,
    /// `Δ` being even) passed it, since `(−D)^Δ = D^Δ`. With `Δ* = max(n, n')!` the check is
    /// exact, and anyone names the dealer.
    #[test]
    fn a_dealing_off_by_a_root_of_unity_is_named_from_public_data() {
        let (key, shares) = crate::dealer::insecure_generate_from_seed(512, 5, 3, 24).unwrap();
        let dealers = [PartyIndex(1), PartyIndex(2), PartyIndex(3)];
        let params = ReshareParameters::new([9; 32], &key, &dealers, 3, 2).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut msgs = Vec::new();
        for share in &shares[..3] {
            let (_, out) = deal(&params, share, &mut rng).unwrap();
            msgs.extend(out.broadcast);
        }
        check_public(&params, Round::Refresh, &msgs).unwrap();
        let nn = key.public_key().nn().clone();
        msgs[1].ints[0] = nn.sub(&msgs[1].ints[0]);
        let e = check_public(&params, Round::Refresh, &msgs).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(2)], "{e}");
    }

    #[test]
    fn dealing_debug_is_redacted() {
        let (key, shares) = crate::dealer::insecure_generate_from_seed(512, 3, 2, 22).unwrap();
        let params =
            ReshareParameters::new([9; 32], &key, &[PartyIndex(1), PartyIndex(2)], 3, 2).unwrap();
        let (dealing, out) = deal(&params, &shares[0], &mut ChaCha20Rng::seed_from_u64(1)).unwrap();
        let text = format!("{dealing:?}");
        let share = out.direct[0].ints[0].to_hex();
        assert!(!text.contains(&share), "{text}");
        assert!(
            !text.to_lowercase().contains(&share.to_lowercase()),
            "{text}"
        );
        assert!(!text.contains("poly"), "{text}");
    }
}
