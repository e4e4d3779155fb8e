//! Public complaints against the key stage's private shares: rounds K1b–K1c (β and mask
//! shares) and K3b–K3c (reshares) — issue 30 §1.
//!
//! **The attack this closes.** A holder checks each private share it receives against the
//! dealer's Feldman commitments and its public range ([`super::key`]). Until these rounds, a
//! failed check stopped the holder alone, with an error naming the dealer that nobody else
//! could check: the other parties then waited for the holder, timed out and — in the
//! ceremony — named the *holder*. A corrupt dealer could so abort any run and get an honest
//! hospital blamed by most of the committee.
//!
//! **The pattern** (Gennaro–Jarecki–Krawczyk–Rabin, *Secure distributed key generation for
//! discrete-log based cryptosystems*, J. Cryptology 20(1), 2007, Fig. 2, steps 1(c)–1(d), as
//! C1b–C1c already do for the modulus stage's commitments):
//!
//! 1. **Complain (K1b, K3b).** Every holder broadcasts the list of dealers whose shares to it
//!    failed (malformed, out of range or not on the commitments); usually the list is empty.
//! 2. **Answer (K1c, K3c).** Every accused dealer broadcasts, for each complaint against it,
//!    the shares it owes the complainer. Everyone checks each answer against the dealer's
//!    commitments and the complainer's public range; a dealer whose answer fails, or is
//!    missing, is named by **every** party and by `verify::replay`. A complainer takes the
//!    answered shares in place of what it received, so an answered complaint — a share lost or
//!    corrupted in transit, or a false complaint — costs one round and the run completes.
//!
//! A complaint carries no evidence and needs none: a false complaint against an honest dealer
//! is answered with the true share and frames nobody (`a_false_k1_complaint_frames_nobody`).
//! **What the answers reveal:** only the complainer's own shares of the accused dealer's
//! polynomials. A corrupt complainer knew them already; for an honest complainer the dealer
//! is corrupt and knew them too. With at most `t − 1` corrupt parties, the shares made public
//! are those of at most `t − 1` honest-dealer polynomials at corrupt points plus shares of
//! corrupt dealers' polynomials — nothing the coalition did not hold already.

use super::{blame, Message};
use crate::bigint::Int;
use crate::error::{Error, Result};

/// One public complaint: holder `by` says the shares dealer `against` sent it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Complaint {
    pub(super) by: u16,
    pub(super) against: u16,
}

/// The complaint message a holder broadcasts: the accused dealers, in increasing order.
pub(super) fn complaint_message(mut m: Message, against: &[u16]) -> Message {
    m.small = against.iter().map(|&d| u128::from(d)).collect();
    m
}

/// Every party's complaints (`msgs` in party order), checked: each names a dealer of
/// `dealers` other than its author (when dealers and complainers share one index space,
/// `same_indices`), in strictly increasing order; anything else names the complainer. Returns
/// the complaints in (complainer, dealer) order.
pub(super) fn complaints(
    msgs: &[&Message],
    dealers: &[u16],
    same_indices: bool,
) -> Result<Vec<Complaint>> {
    let mut out = Vec::new();
    for m in msgs {
        if !m.ints.is_empty() || m.digest.is_some() {
            return Err(blame(m, "malformed complaint message"));
        }
        let mut last = 0u16;
        for &d in &m.small {
            let d = u16::try_from(d)
                .ok()
                .filter(|d| dealers.contains(d) && !(same_indices && *d == m.from.0) && *d > last)
                .ok_or_else(|| {
                    blame(
                        m,
                        "a complaint against no dealer, against itself, or out of order",
                    )
                })?;
            last = d;
            out.push(Complaint {
                by: m.from.0,
                against: d,
            });
        }
    }
    Ok(out)
}

/// The answer an accused dealer broadcasts: for each complaint against `me` (in complaint
/// order), the `width` values `owed(complainer)` returns — unless `limit` or more parties
/// complain against it. Then it answers nothing, and is named for it: `limit` points (the
/// threshold, for a polynomial of degree `limit − 1`) would determine its polynomial, and
/// `limit` complaints include an honest complainer's, which no honest dealer on an
/// authenticated channel can provoke (defence in depth: an honest dealer is then named, but
/// its secret — in a re-sharing, its key share — stays secret).
pub(super) fn answer_values(
    list: &[Complaint],
    me: u16,
    limit: usize,
    mut owed: impl FnMut(u16) -> Vec<Int>,
) -> Vec<Int> {
    let against: Vec<&Complaint> = list.iter().filter(|c| c.against == me).collect();
    if against.len() >= limit {
        return Vec::new();
    }
    against.into_iter().flat_map(|c| owed(c.by)).collect()
}

/// Every answer, checked (`msgs`: the answer broadcast of every party that may be accused).
/// A message whose length is not `width` values per complaint against its sender names the
/// sender; then each complaint's answer, in complaint order, must pass `check(complaint,
/// values)`, or its dealer is named. Returns each complaint's answered values (complaint
/// order).
pub(super) fn answers<'m>(
    msgs: &[&'m Message],
    list: &[Complaint],
    width: usize,
    what: &str,
    mut check: impl FnMut(&Complaint, &[Int]) -> core::result::Result<(), String>,
) -> Result<Vec<&'m [Int]>> {
    for m in msgs {
        let owed = list.iter().filter(|c| c.against == m.from.0).count();
        if !m.small.is_empty() || m.digest.is_some() || m.ints.len() != owed * width {
            return Err(blame(
                m,
                format!(
                    "{} values answering {owed} {what} complaints, expected {}",
                    m.ints.len(),
                    owed * width
                ),
            ));
        }
    }
    let mut next = vec![0usize; msgs.len()];
    let mut out = Vec::with_capacity(list.len());
    for c in list {
        let pos = msgs
            .iter()
            .position(|m| m.from.0 == c.against)
            .ok_or_else(|| {
                Error::KeyGenerationFailed(format!(
                    "no answer message from party {} for a {what} complaint",
                    c.against
                ))
            })?;
        let m = msgs[pos];
        let at = next[pos];
        next[pos] += 1;
        let values = &m.ints[at * width..(at + 1) * width];
        check(c, values).map_err(|reason| {
            blame(
                m,
                format!(
                    "cannot answer the {what} complaint of party {}: {reason}",
                    c.by
                ),
            )
        })?;
        out.push(values);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::Round;
    use super::*;
    use crate::keys::PartyIndex;

    fn msg(round: Round, from: u16) -> Message {
        Message::new([1; 32], round, 0, PartyIndex(from), None)
    }

    #[test]
    fn complaints_are_checked_and_listed_in_order() {
        let all = [1, 2, 3];
        let a = complaint_message(msg(Round::KeyComplaints, 1), &[]);
        let b = complaint_message(msg(Round::KeyComplaints, 2), &[1, 3]);
        let c = complaint_message(msg(Round::KeyComplaints, 3), &[2]);
        let list = complaints(&[&a, &b, &c], &all, true).unwrap();
        assert_eq!(
            list,
            vec![
                Complaint { by: 2, against: 1 },
                Complaint { by: 2, against: 3 },
                Complaint { by: 3, against: 2 },
            ]
        );
        for bad in [vec![2], vec![3, 1], vec![1, 1], vec![0], vec![4]] {
            let b = complaint_message(msg(Round::KeyComplaints, 2), &bad);
            let err = complaints(&[&a, &b, &c], &all, true).unwrap_err();
            assert_eq!(err.culprits(), vec![PartyIndex(2)], "{bad:?}: {err}");
        }
        // Only product parties deal reshares.
        let b = complaint_message(msg(Round::ReshareComplaints, 2), &[3]);
        assert!(complaints(&[&b], &[1, 2], true).is_err());
        let mut b = complaint_message(msg(Round::KeyComplaints, 2), &[1]);
        b.ints.push(Int::one());
        assert!(complaints(&[&b], &all, true).is_err());
    }

    #[test]
    fn an_answer_that_fails_its_check_names_the_dealer_not_the_complainer() {
        let list = vec![
            Complaint { by: 2, against: 1 },
            Complaint { by: 3, against: 1 },
        ];
        let mut a = msg(Round::KeyAnswers, 1);
        a.ints = answer_values(&list, 1, 3, |j| vec![Int::from_u64(u64::from(j) * 10)]);
        // Two complaints at a threshold of two: the dealer answers neither, and is named.
        assert!(answer_values(&list, 1, 2, |_| vec![Int::one()]).is_empty());
        assert_eq!(a.ints, vec![Int::from_u64(20), Int::from_u64(30)]);
        let b = msg(Round::KeyAnswers, 2);
        let c = msg(Round::KeyAnswers, 3);
        let ok = |c: &Complaint, v: &[Int]| {
            (v[0] == Int::from_u64(u64::from(c.by) * 10))
                .then_some(())
                .ok_or_else(|| "wrong".to_string())
        };
        let got = answers(&[&a, &b, &c], &list, 1, "K1", ok).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1][0], Int::from_u64(30));
        // A wrong answer to party 3 names dealer 1.
        let mut wrong = a.clone();
        wrong.ints[1] = Int::from_u64(31);
        let err = answers(&[&wrong, &b, &c], &list, 1, "K1", ok).unwrap_err();
        assert_eq!(err.culprits(), vec![PartyIndex(1)]);
        assert!(err.to_string().contains("complaint of party 3"), "{err}");
        // So does a missing answer, and an unasked one names its sender.
        let mut short = a.clone();
        short.ints.pop();
        let err = answers(&[&short, &b, &c], &list, 1, "K1", ok).unwrap_err();
        assert_eq!(err.culprits(), vec![PartyIndex(1)]);
        let mut extra = b.clone();
        extra.ints.push(Int::one());
        let err = answers(&[&a, &extra, &c], &list, 1, "K1", ok).unwrap_err();
        assert_eq!(err.culprits(), vec![PartyIndex(2)]);
    }
}
