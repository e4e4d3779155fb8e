//! Batched consistency checks for the modulus stage's Shamir sharings (rounds M1, M3, M8): a
//! dealer that sends shares not on one polynomial of the right degree — or a sharing of zero
//! whose constant is not zero — is **named**, with a few field operations per share.
//!
//! The check is the random-linear-combination test with a blinding sharing (as in
//! Ben-Sasson–Fehr–Ostrovsky, *Near-linear unconditionally-secure MPC with a dishonest
//! minority*, CRYPTO 2012, §4, and Damgård–Nielsen 2007's batch checks), made non-interactive:
//!
//! 1. **Deal (round X).** Every body a dealer sends is a list of records `[low, low, high]`
//!    (two sharings of degree `t − 1`, one of degree `2t − 2`), and its last record is a fresh
//!    *blinding* record of the same shape. With the direct messages, the dealer broadcasts the
//!    digest of each of them (SHA-256 of the canonical bytes; [`digest_broadcast`]).
//! 2. **Challenge.** Once every digest is known, `ρ_i = H(session, round, batch, i, all digests)`
//!    for each dealer `i` ([`challenges`]). A dealer fixed its shares (through its digests)
//!    before `ρ_i` exists; changing a share changes `ρ_i` unpredictably.
//! 3. **Combine (round X + 1).** By Horner's rule over the records, with `ρ_i`:
//!    `L = Σ_k ρ_i^(2K−1−k) low_k`, `H = Σ_k ρ_i^(K−1−k) high_k`; the blinding record enters with
//!    coefficients `ρ_i` and `1`, so the combination is uniformly random and reveals nothing.
//!    The dealer broadcasts its combinations at every point `1..n` (`2n` values); each
//!    recipient checks its own point against what it received (a mismatch names the dealer,
//!    whose digest binds what it sent), and anyone checks that the `L` values lie on a
//!    polynomial of degree `≤ t − 1`, the `H` values on one of degree `≤ 2t − 2`, and — for a
//!    sharing of zero — that `H(0) = 0` ([`check_public`]; the transcript verifier runs it too).
//!
//! **Soundness.** If the honest parties' shares of some sharing are not on one polynomial of
//! its degree, the combination's syndrome is a nonzero polynomial in `ρ_i` of degree below
//! `2K`, which vanishes for at most `2K` values modulo the ring's prime `p`: the check passes
//! with probability at most `2K/p ≤ 2^−100` (`p = 2^127 − 1` for the sieve field and for the
//! rings `Z_{(2^127−1)^m}` of M3 and M8, see [`super::field::ShareRing`]). A digest that does
//! not match the message received names the dealer before anything else.
//!
//! **Privacy.** The digests hide the shares (SHA-256 of values with thousands of bits of
//! entropy); the combinations are masked by the uniformly random blinding sharing.
//!
//! What this does not prove: that the *published products* of rounds M2, M4 and M9 are the
//! products of the parties' shares (docs/dkg.md, "Limits").

use super::field::{add127, inv127, mul127, sub127, ShareRing, P127};
use super::{blame, Message, Round, Setup};
use crate::bigint::Int;
use crate::error::Result;
use crate::hash::{fingerprint, hash_to_int};
use crate::keys::PartyIndex;

/// The arithmetic the check needs, over the sieve field or one of the big share rings.
pub(super) trait Ring {
    /// An element.
    type E: Clone + PartialEq;
    /// Zero.
    fn zero(&self) -> Self::E;
    /// `acc·ρ + v`.
    fn horner(&self, acc: &Self::E, rho: &Self::E, v: &Self::E) -> Self::E;
    /// `Σ c_k·y_k`.
    fn dot(&self, c: &[Self::E], y: &[Self::E]) -> Self::E;
    /// The Lagrange coefficients at `x` for the points `xs` (distinct, in `1..=16`).
    fn lagrange_at(&self, xs: &[u16], x: u16) -> Vec<Self::E>;
    /// A challenge from 32 bytes of hash output and a label.
    fn challenge(&self, seed: &[u8; 32], dealer: u16) -> Self::E;
    /// Whether `v` is a reduced element.
    fn reduced(&self, v: &Self::E) -> bool;
}

/// The sieve field `F_{2^127−1}`.
pub(super) struct F127;

impl Ring for F127 {
    type E = u128;

    fn zero(&self) -> u128 {
        0
    }

    fn horner(&self, acc: &u128, rho: &u128, v: &u128) -> u128 {
        add127(mul127(*acc, *rho), *v)
    }

    fn dot(&self, c: &[u128], y: &[u128]) -> u128 {
        c.iter()
            .zip(y)
            .fold(0, |a, (c, y)| add127(a, mul127(*c, *y)))
    }

    fn lagrange_at(&self, xs: &[u16], x: u16) -> Vec<u128> {
        let x = u128::from(x);
        xs.iter()
            .map(|&j| {
                let (mut num, mut den) = (1u128, 1u128);
                for &m in xs {
                    if m != j {
                        num = mul127(num, sub127(x, u128::from(m)));
                        den = mul127(den, sub127(u128::from(j), u128::from(m)));
                    }
                }
                mul127(num, inv127(den))
            })
            .collect()
    }

    fn challenge(&self, seed: &[u8; 32], dealer: u16) -> u128 {
        let mut data = seed.to_vec();
        data.extend_from_slice(&dealer.to_be_bytes());
        let h = fingerprint(b"medtech-threshold/v1/dkg/consistency-rho127", &data);
        let mut b = [0u8; 16];
        b.copy_from_slice(&h[..16]);
        // 128 uniform bits reduced mod 2^127 − 1: statistically close to uniform (2^−126).
        (u128::from_be_bytes(b) >> 1) % P127
    }

    fn reduced(&self, v: &u128) -> bool {
        *v < P127
    }
}

impl Ring for ShareRing {
    type E = Int;

    fn zero(&self) -> Int {
        Int::zero()
    }

    fn horner(&self, acc: &Int, rho: &Int, v: &Int) -> Int {
        acc.mul(rho).add(v).rem_euclid(&self.p)
    }

    fn dot(&self, c: &[Int], y: &[Int]) -> Int {
        c.iter()
            .zip(y)
            .fold(Int::zero(), |a, (c, y)| a.add(&c.mul(y)))
            .rem_euclid(&self.p)
    }

    fn lagrange_at(&self, xs: &[u16], x: u16) -> Vec<Int> {
        xs.iter()
            .map(|&j| {
                let (mut num, mut den) = (Int::one(), Int::one());
                for &m in xs {
                    if m != j {
                        num = num.mul(&Int::from_i64(i64::from(x) - i64::from(m)));
                        den = den.mul(&Int::from_i64(i64::from(j) - i64::from(m)));
                    }
                }
                // Every difference of two points below 17 is a unit of the ring.
                let inv = den
                    .rem_euclid(&self.p)
                    .invert(&self.p)
                    .unwrap_or_else(Int::zero);
                num.rem_euclid(&self.p).mul_mod(&inv, &self.p)
            })
            .collect()
    }

    fn challenge(&self, seed: &[u8; 32], dealer: u16) -> Int {
        let mut data = seed.to_vec();
        data.extend_from_slice(&dealer.to_be_bytes());
        hash_to_int(
            b"medtech-threshold/v1/dkg/consistency-rho",
            &data,
            self.p.bits() + 128,
        )
        .rem_euclid(&self.p)
    }

    fn reduced(&self, v: &Int) -> bool {
        !v.is_negative() && v < &self.p
    }
}

/// One dealer's combination at one point: `[L, H]`.
pub(super) type Pair<E> = [E; 2];

/// Horner's rule over a body of records `[low, low, high]` (length a multiple of 3).
pub(super) fn combine<R: Ring>(ring: &R, rho: &R::E, body: &[R::E]) -> Pair<R::E> {
    let (mut low, mut high) = (ring.zero(), ring.zero());
    for rec in body.chunks_exact(3) {
        low = ring.horner(&ring.horner(&low, rho, &rec[0]), rho, &rec[1]);
        high = ring.horner(&high, rho, &rec[2]);
    }
    [low, high]
}

/// The streaming form of [`combine`], for a dealer re-deriving its own combinations record by
/// record for every recipient.
pub(super) struct Combiner<'r, R: Ring> {
    ring: &'r R,
    rho: R::E,
    acc: Vec<Pair<R::E>>,
}

impl<'r, R: Ring> Combiner<'r, R> {
    pub(super) fn new(ring: &'r R, rho: R::E, n: u16) -> Self {
        let acc = (0..n).map(|_| [ring.zero(), ring.zero()]).collect();
        Combiner { ring, rho, acc }
    }

    /// Feeds recipient `j`'s (0-based) next record.
    pub(super) fn push(&mut self, j: usize, rec: &[R::E; 3]) {
        if let Some([low, high]) = self.acc.get_mut(j) {
            *low = self.ring.horner(
                &self.ring.horner(low, &self.rho, &rec[0]),
                &self.rho,
                &rec[1],
            );
            *high = self.ring.horner(high, &self.rho, &rec[2]);
        }
    }

    /// The combinations at `1..n`: all `L` values, then all `H` values.
    pub(super) fn finish(self) -> Vec<R::E> {
        let (lows, highs): (Vec<_>, Vec<_>) = self.acc.into_iter().map(|[l, h]| (l, h)).unzip();
        lows.into_iter().chain(highs).collect()
    }
}

/// The hash of one M3 record (a candidate's three shares, or the blinding record).
pub(super) fn record_hash(values: &[Int]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"medtech-threshold/v1/dkg/m3-record");
    h.update((values.len() as u64).to_be_bytes());
    for v in values {
        let bytes = v.abs().to_bytes_be();
        h.update([u8::from(v.is_negative())]);
        h.update((bytes.len() as u32).to_be_bytes());
        h.update(&bytes);
    }
    h.finalize().into()
}

/// The digest of an M3 direct message from its header and the hashes of its records, so that
/// one record can later be shown to be part of it (C1's complaints, [`super::certify`]) with
/// the other records' hashes instead of the whole message.
pub(super) fn m3_digest(
    session: &[u8; 32],
    batch: u32,
    from: u16,
    to: u16,
    hashes: &[[u8; 32]],
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"medtech-threshold/v1/dkg/m3-digest");
    h.update(session);
    h.update(batch.to_be_bytes());
    h.update(from.to_be_bytes());
    h.update(to.to_be_bytes());
    h.update((hashes.len() as u64).to_be_bytes());
    for r in hashes {
        h.update(r);
    }
    h.finalize().into()
}

/// The record hashes of an M3 direct message (records of three values).
pub(super) fn m3_record_hashes(m: &Message) -> Vec<[u8; 32]> {
    m.ints.chunks(3).map(record_hash).collect()
}

/// The digest binding a dealer to one direct message: SHA-256 over a domain separator, the
/// header (session, round, batch, sender, recipient) and every value with its length, streamed
/// (a sieve message is megabytes; it is not encoded a second time). An M3 message
/// (`CandidateShares`) is digested record by record ([`m3_digest`]).
pub(super) fn message_digest(m: &Message) -> [u8; 32] {
    if m.round == Round::CandidateShares
        && m.small.is_empty()
        && m.digest.is_none()
        && m.ints.len().is_multiple_of(3)
    {
        if let Some(to) = m.to {
            return m3_digest(&m.session, m.batch, m.from.0, to.0, &m3_record_hashes(m));
        }
    }
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"medtech-threshold/v1/dkg/share-digest");
    h.update(m.session);
    h.update([m.round as u8]);
    h.update(m.batch.to_be_bytes());
    h.update(m.from.0.to_be_bytes());
    h.update(m.to.map_or(0, |p| p.0).to_be_bytes());
    h.update((m.small.len() as u64).to_be_bytes());
    // Field elements in blocks, so the hash sees long updates.
    let mut block = Vec::with_capacity(16 * 1024);
    for chunk in m.small.chunks(1024) {
        block.clear();
        for v in chunk {
            block.extend_from_slice(&v.to_be_bytes());
        }
        h.update(&block);
    }
    h.update((m.ints.len() as u64).to_be_bytes());
    for v in &m.ints {
        let bytes = v.abs().to_bytes_be();
        h.update([u8::from(v.is_negative())]);
        h.update((bytes.len() as u32).to_be_bytes());
        h.update(&bytes);
    }
    match &m.digest {
        Some(d) => {
            h.update([1]);
            h.update(d);
        }
        None => h.update([0]),
    }
    h.finalize().into()
}

/// The broadcast accompanying a round's direct messages: one digest per recipient `1..=n`, in
/// recipient order (`direct` must hold one message per recipient, in that order).
pub(super) fn digest_broadcast(mut broadcast: Message, direct: &[Message]) -> Message {
    broadcast.ints = direct
        .iter()
        .map(|d| Int::from_bytes_be(&message_digest(d)))
        .collect();
    broadcast
}

/// Checks a digest broadcast (`n` values below `2^256`) and returns the digests. An M1 broadcast
/// also carries its sender's batch-seed commitment in `digest` ([`super::audit`]); the others
/// carry nothing else.
pub(super) fn expect_digests(m: &Message, n: u16) -> Result<Vec<[u8; 32]>> {
    if m.ints.len() != usize::from(n)
        || !m.small.is_empty()
        || m.digest.is_some() != (m.round == Round::SieveShares)
    {
        return Err(blame(
            m,
            format!("{} share digests, expected {n}", m.ints.len()),
        ));
    }
    m.ints
        .iter()
        .map(|v| {
            if v.is_negative() {
                return Err(blame(m, "share digest out of range"));
            }
            let b = v
                .to_bytes_be_padded(32)
                .ok_or_else(|| blame(m, "share digest out of range"))?;
            let mut d = [0u8; 32];
            d.copy_from_slice(&b);
            Ok(d)
        })
        .collect()
}

/// Checks the direct message `d` this party received against its dealer's digest for it.
pub(super) fn check_digest(d: &Message, digests: &[[u8; 32]], me: PartyIndex) -> Result<()> {
    let expected = digests.get(usize::from(me.0).wrapping_sub(1));
    if expected != Some(&message_digest(d)) {
        return Err(blame(
            d,
            "the shares received do not match the sender's published digest",
        ));
    }
    Ok(())
}

/// Every dealer's challenge `ρ_i` for one round of one batch, from all digests (dealer order).
pub(super) fn challenges<R: Ring>(
    ring: &R,
    setup: &Setup,
    round: Round,
    batch: u32,
    digests: &[Vec<[u8; 32]>],
) -> Vec<R::E> {
    let mut data = Vec::with_capacity(40 + 32 * digests.len() * digests.len());
    data.extend_from_slice(&setup.params.session);
    data.push(round as u8);
    data.extend_from_slice(&batch.to_be_bytes());
    for d in digests.iter().flatten() {
        data.extend_from_slice(d);
    }
    let seed = fingerprint(b"medtech-threshold/v1/dkg/consistency-seed", &data);
    (1..=setup.n).map(|i| ring.challenge(&seed, i)).collect()
}

/// The public half of the check on one dealer's `2n` combination values (`L` at `1..n`, then
/// `H`, already checked to be reduced by the caller): `L` of degree `≤ t − 1`, `H` of degree
/// `≤ 2t − 2`, and `H(0) = 0` when the high sharings are sharings of zero.
pub(super) fn check_public<R: Ring>(
    ring: &R,
    setup: &Setup,
    m: &Message,
    values: &[R::E],
    zero_high: bool,
) -> Result<()> {
    let n = usize::from(setup.n);
    let t = usize::from(setup.t);
    if values.len() != 2 * n {
        return Err(blame(
            m,
            format!("{} combination values, expected {}", values.len(), 2 * n),
        ));
    }
    let (low, high) = values.split_at(n);
    let on_degree = |ys: &[R::E], degree: usize| {
        let xs: Vec<u16> = (1..=degree as u16 + 1).collect();
        (degree + 2..=n)
            .all(|x| ring.dot(&ring.lagrange_at(&xs, x as u16), &ys[..=degree]) == ys[x - 1])
    };
    if !on_degree(low, t - 1) {
        return Err(blame(
            m,
            "shares of a degree-(t − 1) sharing are not on one polynomial of that degree",
        ));
    }
    if !on_degree(high, 2 * t - 2) {
        return Err(blame(
            m,
            "shares of a degree-(2t − 2) sharing are not on one polynomial of that degree",
        ));
    }
    if zero_high {
        let xs: Vec<u16> = (1..=2 * setup.t - 1).collect();
        if ring.dot(&ring.lagrange_at(&xs, 0), &high[..2 * t - 1]) != ring.zero() {
            return Err(blame(m, "a sharing of zero does not have constant zero"));
        }
    }
    Ok(())
}

/// The private half: this party's own point of the dealer's combination must be what it
/// computed from the shares it received (`mine`).
pub(super) fn check_point<T: PartialEq>(
    setup: &Setup,
    m: &Message,
    values: &[T],
    mine: &Pair<T>,
    me: PartyIndex,
) -> Result<()> {
    let n = usize::from(setup.n);
    let at = usize::from(me.0).wrapping_sub(1);
    if values.get(at) != Some(&mine[0]) || values.get(n + at) != Some(&mine[1]) {
        return Err(blame(
            m,
            "the shares sent to this party are not on the dealer's published combination",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::super::Parameters;
    use super::*;

    fn setup(n: u16, t: u16) -> std::sync::Arc<Setup> {
        Setup::new(&Parameters::new(512, n, t, [3; 32]).unwrap())
    }

    /// `c₀ + c₁x + …` at `x = 1..=n` in `F_{2^127−1}`.
    fn points(coeffs: &[u128], n: u16) -> Vec<u128> {
        (1..=n)
            .map(|x| {
                coeffs
                    .iter()
                    .rev()
                    .fold(0, |acc, c| add127(mul127(acc, u128::from(x)), *c))
            })
            .collect()
    }

    fn values(low: &[u128], high: &[u128], n: u16) -> Vec<u128> {
        let mut v = points(low, n);
        v.extend(points(high, n));
        v
    }

    fn msg() -> Message {
        Message::new([3; 32], Round::SieveProducts, 0, PartyIndex(4), None)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Combinations of the right degrees pass; raising either degree by one, or a nonzero
        /// constant where zero is required, fails and names the dealer.
        #[test]
        fn the_public_check_accepts_exactly_the_right_degrees(
            c in proptest::collection::vec(1u128..P127, 6),
        ) {
            let s = setup(7, 3);
            let (low, high) = (&c[..3], &c[1..6]);
            prop_assert!(check_public(&F127, &s, &msg(), &values(low, high, 7), false).is_ok());
            let too_high = [c[0], c[1], c[2], c[3]];
            let e = check_public(&F127, &s, &msg(), &values(&too_high, high, 7), false).unwrap_err();
            prop_assert_eq!(e.culprits(), vec![PartyIndex(4)]);
            let wide = [c[0], c[1], c[2], c[3], c[4], c[5]];
            prop_assert!(check_public(&F127, &s, &msg(), &values(low, &wide, 7), false).is_err());
            // A nonzero constant in the high sharing fails only the zero check.
            prop_assert!(check_public(&F127, &s, &msg(), &values(low, high, 7), true).is_err());
            let zero = [0, c[1], c[2], c[3], c[4]];
            prop_assert!(check_public(&F127, &s, &msg(), &values(low, &zero, 7), true).is_ok());
        }

        /// The combination of consistent sharings is itself a sharing of the combined secrets:
        /// Horner over the records is linear.
        #[test]
        fn combining_commutes_with_sharing(
            secrets in proptest::collection::vec(0u128..P127, 9),
            rho in 1u128..P127,
        ) {
            let n = 5u16;
            // Three records (the last one a "blinding" record), each [low, low, high], shared
            // with degree 1 / 2 polynomials whose other coefficients are the secrets reversed.
            let polys: Vec<Vec<u128>> = secrets
                .iter()
                .enumerate()
                .map(|(k, &s)| if k % 3 == 2 { vec![s, s ^ 1, 7] } else { vec![s, 3] })
                .collect();
            let shares: Vec<Vec<u128>> = polys.iter().map(|p| points(p, n)).collect();
            let bodies: Vec<Vec<u128>> = (0..usize::from(n))
                .map(|j| shares.iter().map(|s| s[j]).collect())
                .collect();
            let combined: Vec<Pair<u128>> =
                bodies.iter().map(|b| combine(&F127, &rho, b)).collect();
            let mut streamed = Combiner::new(&F127, rho, n);
            for (j, b) in bodies.iter().enumerate() {
                for rec in b.chunks_exact(3) {
                    streamed.push(j, &[rec[0], rec[1], rec[2]]);
                }
            }
            let v = streamed.finish();
            for (j, c) in combined.iter().enumerate() {
                prop_assert_eq!(v[j], c[0]);
                prop_assert_eq!(v[usize::from(n) + j], c[1]);
            }
            prop_assert!(check_public(&F127, &setup(5, 2), &msg(), &v, false).is_ok());
        }
    }

    #[test]
    fn the_big_ring_check_names_a_nonzero_constant() {
        let s = setup(5, 3);
        let ring = &s.modulus_field;
        let at = |c: &[i64], x: i64| {
            c.iter()
                .rev()
                .fold(Int::zero(), |a, k| {
                    a.mul(&Int::from_i64(x)).add(&Int::from_i64(*k))
                })
                .rem_euclid(&ring.p)
        };
        let build = |low: &[i64], high: &[i64]| {
            let mut v: Vec<Int> = (1..=5).map(|x| at(low, x)).collect();
            v.extend((1..=5).map(|x| at(high, x)));
            v
        };
        assert!(check_public(ring, &s, &msg(), &build(&[5, 6, 7], &[0, 1, 2, 3, 4]), true).is_ok());
        assert!(
            check_public(ring, &s, &msg(), &build(&[5, 6, 7], &[1, 1, 2, 3, 4]), true).is_err()
        );
        assert!(check_public(ring, &s, &msg(), &build(&[5, 6, 7, 8], &[0, 1, 2]), true).is_err());
    }

    #[test]
    fn the_share_rings_have_no_prime_factor_but_the_mersenne_prime() {
        let s = setup(5, 3);
        let p127 = Int::from_u128(P127);
        for ring in [&s.modulus_field, &s.gcd_field] {
            let mut q = ring.p.clone();
            while q != Int::one() {
                q = q.div_exact(&p127).expect("a power of 2^127 − 1");
            }
        }
        assert!(s.modulus_field.p.bits() > 513);
    }
}
