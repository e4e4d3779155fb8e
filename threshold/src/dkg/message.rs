//! What the parties send each other: one message type for every round, with a canonical,
//! versioned encoding (the crate's `MTC` format, tag 7).
//!
//! A message names its session, round, batch, sender and — for a message to one party —
//! recipient; its body is a list of small field elements, a list of signed integers and an
//! optional digest. Each round's transition checks the counts and ranges it expects and blames
//! the sender otherwise. Direct messages carry secret shares: the transport must encrypt and
//! authenticate them (the ceremony uses mutually authenticated TLS); their bodies are wiped on
//! drop and their `Debug` is redacted.

use core::fmt;

use zeroize::Zeroize;

use crate::bigint::{Int, SecretInt};
use crate::encoding::{Reader, Tag, Writer};
use crate::error::{Error, Result};
use crate::keys::PartyIndex;

/// Largest integer a DKG message may carry, in bits (shares of the key stage at 4096-bit
/// moduli stay well below it).
pub(crate) const MAX_INT_BITS: usize = 32_768;
/// Largest number of values in one message.
const MAX_VALUES: usize = 1 << 24;

/// The rounds of the protocol, in order (see the module documentation of [`crate::dkg`]).
///
/// Rounds compare in protocol order ([`Round::BiprimeFirstCommit`], added later with a higher
/// wire value, sorts just before [`Round::BiprimeFirst`]), so `round < Round::KeyShares` still
/// selects the modulus stage.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Round {
    /// M1 (direct): shares of every candidate's residues modulo the small-prime groups.
    SieveShares = 1,
    /// M2 (broadcast): masked products of those residues, from the 2t − 1 product parties.
    SieveProducts = 2,
    /// M3 (direct): shares of the surviving candidates' p_i, q_i and a sharing of zero.
    CandidateShares = 3,
    /// M4 (broadcast): shares of each surviving candidate's N.
    ModulusShares = 4,
    /// M5a (broadcast): salted hash commitment to the first biprimality-test values of every
    /// candidate (so no party chooses its first-repetition value after seeing the others').
    BiprimeFirstCommit = 16,
    /// M5b (broadcast): the first biprimality-test values, opened with their salt.
    BiprimeFirst = 5,
    /// M6 (broadcast): commitments to the remaining biprimality-test values.
    BiprimeCommit = 6,
    /// M7 (broadcast): the remaining biprimality-test values, opened.
    BiprimeReveal = 7,
    /// M8 (direct): shares for the gcd(N, p + q − 1) step.
    GcdShares = 8,
    /// M9 (broadcast): the masked product of the gcd step.
    GcdReveal = 9,
    /// C1 (direct + broadcast): Pedersen commitments in `G_P` to each dealer's M3 sharings of
    /// the chosen candidate, and the blinding values at each holder.
    CertifyCommit = 17,
    /// C1b (broadcast): each holder's complaints against dealers whose C1 values do not open
    /// its M3 shares, with the M3 record as evidence (empty when it has none).
    CertifyComplaints = 19,
    /// C1c (broadcast): each accused dealer's public answer to every complaint against it.
    CertifyReveals = 20,
    /// C2 (broadcast): each product party's proof that its M4 value is the product of its
    /// committed shares.
    CertifyProducts = 18,
    /// K1 (direct + broadcast): integer shares of Δβ_i and a mask, with Feldman commitments
    /// (the φ sharing is derived from C1).
    KeyShares = 10,
    /// K1b (broadcast): each holder's public complaints against the dealers whose K1 shares to
    /// it failed their range or Feldman check (empty when it has none; issue 30 §1).
    KeyComplaints = 22,
    /// K1c (broadcast): each accused dealer's public answer — the disputed shares, which
    /// everyone checks against its commitments and ranges.
    KeyAnswers = 23,
    /// K2 (broadcast): the masked product that opens θ.
    MaskedProduct = 11,
    /// K3 (direct + broadcast): degree reduction — each product party reshares its product
    /// share, with Feldman commitments.
    Reshare = 12,
    /// K3b (broadcast): each holder's public complaints against the product parties whose
    /// reshares to it failed their range or Feldman check.
    ReshareComplaints = 24,
    /// K3c (broadcast): each accused product party's public answer — the disputed reshares.
    ReshareAnswers = 25,
    /// R1 (direct + broadcast): an existing member reshares its key share to a (new)
    /// committee, with Feldman commitments (see [`crate::dkg::reshare`]).
    Refresh = 13,
    /// R1b (broadcast): each new member's public complaints against the dealers whose
    /// sub-share to it failed its range or Feldman check (see [`crate::dkg::reshare`]).
    RefreshComplaints = 26,
    /// R1c (broadcast): each dealer's public answer — the disputed sub-shares.
    RefreshAnswers = 27,
    /// R2 (broadcast): each new member's partial decryption, with proof, of a test ciphertext
    /// hashed from the session and the new key; the new key is accepted only if every `t'`
    /// of them decrypt it.
    RefreshTest = 28,
    /// K4 (broadcast): every party's partial decryption, with proof, of a test ciphertext
    /// hashed from the session and the key; the key is output only if every `t` of them
    /// decrypt it.
    TestDecryption = 14,
    /// A (broadcast): every party opens its seed of a batch that yielded no modulus, for the
    /// audit of that batch (see [`crate::dkg`], module `audit`).
    BatchAudit = 21,
}

impl Round {
    /// Position in protocol order (the wire value times eight, with M5a just before M5b,
    /// C1, C1b, C1c, C2 and the batch audit just after M9, and each key-stage complaint round
    /// and its answers just after the sharing they dispute).
    fn position(self) -> u16 {
        let gcd = 8 * Round::GcdReveal as u16;
        match self {
            Round::KeyComplaints => 8 * Round::KeyShares as u16 + 1,
            Round::KeyAnswers => 8 * Round::KeyShares as u16 + 2,
            Round::ReshareComplaints => 8 * Round::Reshare as u16 + 1,
            Round::ReshareAnswers => 8 * Round::Reshare as u16 + 2,
            Round::RefreshComplaints => 8 * Round::Refresh as u16 + 1,
            Round::RefreshAnswers => 8 * Round::Refresh as u16 + 2,
            Round::RefreshTest => 8 * Round::Refresh as u16 + 3,
            Round::BiprimeFirstCommit => 8 * Round::BiprimeFirst as u16 - 1,
            Round::CertifyCommit => gcd + 1,
            Round::CertifyComplaints => gcd + 2,
            Round::CertifyReveals => gcd + 3,
            Round::CertifyProducts => gcd + 4,
            Round::BatchAudit => gcd + 5,
            r => 8 * r as u16,
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        use Round::*;
        Some(match v {
            1 => SieveShares,
            2 => SieveProducts,
            3 => CandidateShares,
            4 => ModulusShares,
            5 => BiprimeFirst,
            6 => BiprimeCommit,
            7 => BiprimeReveal,
            8 => GcdShares,
            9 => GcdReveal,
            10 => KeyShares,
            11 => MaskedProduct,
            12 => Reshare,
            13 => Refresh,
            14 => TestDecryption,
            16 => BiprimeFirstCommit,
            17 => CertifyCommit,
            18 => CertifyProducts,
            19 => CertifyComplaints,
            20 => CertifyReveals,
            21 => BatchAudit,
            22 => KeyComplaints,
            23 => KeyAnswers,
            24 => ReshareComplaints,
            25 => ReshareAnswers,
            26 => RefreshComplaints,
            27 => RefreshAnswers,
            28 => RefreshTest,
            _ => return None,
        })
    }
}

impl PartialOrd for Round {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Round {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.position().cmp(&other.position())
    }
}

/// One protocol message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The ceremony's session identifier (binds every message to one ceremony).
    pub session: [u8; 32],
    /// Which round it belongs to.
    pub round: Round,
    /// Which batch of candidates (modulus stage) it belongs to; 0 in the key stage.
    pub batch: u32,
    /// The sender.
    pub from: PartyIndex,
    /// The recipient of a direct message; `None` for a broadcast.
    pub to: Option<PartyIndex>,
    pub(crate) small: Vec<u128>,
    pub(crate) ints: Vec<Int>,
    pub(crate) digest: Option<[u8; 32]>,
}

impl Message {
    pub(crate) fn new(
        session: [u8; 32],
        round: Round,
        batch: u32,
        from: PartyIndex,
        to: Option<PartyIndex>,
    ) -> Self {
        Message {
            session,
            round,
            batch,
            from,
            to,
            small: Vec::new(),
            ints: Vec::new(),
            digest: None,
        }
    }

    /// Canonical bytes (what a transport carries and a transcript hashes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Tag::DkgMessage);
        w.raw(&self.session)
            .u8(self.round as u8)
            .u32(self.batch)
            .u16(self.from.0)
            .u16(self.to.map_or(0, |p| p.0))
            .u32(self.small.len() as u32);
        for v in &self.small {
            w.u128(*v);
        }
        w.u32(self.ints.len() as u32);
        for v in &self.ints {
            w.u8(u8::from(v.is_negative())).int(&v.abs());
        }
        match &self.digest {
            Some(d) => {
                w.u8(1).raw(d);
            }
            None => {
                w.u8(0);
            }
        }
        w.finish()
    }

    /// Decodes a message; refuses anything non-canonical. Which counts and ranges a round
    /// expects is checked by the round that receives it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "key-generation message";
        let mut r = Reader::new(WHAT, Tag::DkgMessage, bytes)?;
        let mut session = [0u8; 32];
        session.copy_from_slice(r.raw(32)?);
        let round =
            Round::from_u8(r.u8()?).ok_or_else(|| Error::malformed(WHAT, "unknown round"))?;
        let batch = r.u32()?;
        let from = r.u16()?;
        if from == 0 {
            return Err(Error::malformed(WHAT, "sender index 0"));
        }
        let to = match r.u16()? {
            0 => None,
            p => Some(PartyIndex(p)),
        };
        let n_small = r.u32()? as usize;
        if n_small > MAX_VALUES || n_small * 16 > r.remaining() {
            return Err(Error::malformed(WHAT, "field-element count"));
        }
        let mut small = Vec::with_capacity(n_small);
        for _ in 0..n_small {
            let v = r.u128()?;
            if v >= super::field::P127 {
                return Err(Error::malformed(WHAT, "field element not reduced"));
            }
            small.push(v);
        }
        let n_ints = r.u32()? as usize;
        if n_ints > MAX_VALUES || n_ints * 5 > r.remaining() {
            return Err(Error::malformed(WHAT, "integer count"));
        }
        let mut ints = Vec::with_capacity(n_ints);
        for _ in 0..n_ints {
            let neg = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(Error::malformed(WHAT, "sign byte")),
            };
            let v = r.int(MAX_INT_BITS)?;
            if neg && v.is_zero() {
                return Err(Error::malformed(WHAT, "negative zero"));
            }
            ints.push(if neg { v.neg() } else { v });
        }
        let digest = match r.u8()? {
            0 => None,
            1 => {
                let mut d = [0u8; 32];
                d.copy_from_slice(r.raw(32)?);
                Some(d)
            }
            _ => return Err(Error::malformed(WHAT, "digest flag")),
        };
        r.finish()?;
        Ok(Message {
            session,
            round,
            batch,
            from: PartyIndex(from),
            to,
            small,
            ints,
            digest,
        })
    }

    /// Test hook: adds `delta` to the `idx`-th integer (plays a cheating sender).
    #[doc(hidden)]
    pub fn tweak_int_for_tests(&mut self, idx: usize, delta: i64) {
        if let Some(v) = self.ints.get_mut(idx) {
            *v = v.add(&Int::from_i64(delta));
        }
    }

    /// Test hook: swaps two integers.
    #[doc(hidden)]
    pub fn swap_ints_for_tests(&mut self, a: usize, b: usize) {
        if a < self.ints.len() && b < self.ints.len() {
            self.ints.swap(a, b);
        }
    }

    /// Test hook: replaces the small values (a complaint's list of accused parties).
    #[doc(hidden)]
    pub fn set_small_for_tests(&mut self, values: &[u128]) {
        self.small = values.to_vec();
    }

    /// Test hook: how many integers the body holds.
    #[doc(hidden)]
    pub fn int_count_for_tests(&self) -> usize {
        self.ints.len()
    }

    /// Test hook: drops the last value of the body.
    #[doc(hidden)]
    pub fn truncate_for_tests(&mut self) {
        if self.small.pop().is_none() {
            self.ints.pop();
        }
    }

    /// Number of bytes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.to_bytes().len()
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if self.to.is_some() {
            self.small.zeroize();
            for v in self.ints.drain(..) {
                drop(SecretInt::new(v));
            }
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = if self.to.is_some() {
            "<redacted>".to_string()
        } else {
            format!(
                "{} field elements, {} integers",
                self.small.len(),
                self.ints.len()
            )
        };
        write!(
            f,
            "Message {{ round: {:?}, batch: {}, from: {}, to: {:?}, body: {body} }}",
            self.round, self.batch, self.from, self.to
        )
    }
}

/// What one party sends after a transition: at most one broadcast and direct messages (one per
/// party, itself included — a transport delivers that one locally).
#[derive(Debug, Default)]
pub struct Outgoing {
    /// The broadcast, if the round has one for this party.
    pub broadcast: Option<Message>,
    /// Direct messages, each with its recipient set.
    pub direct: Vec<Message>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        let mut m = Message::new([7; 32], Round::BiprimeReveal, 3, PartyIndex(2), None);
        m.small = vec![0, 5, super::super::field::P127 - 1];
        m.ints = vec![Int::from_i64(-12345), Int::zero(), Int::from_u64(1 << 60)];
        m.digest = Some([9; 32]);
        m
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Message::from_bytes(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn truncations_and_bit_flips_never_panic() {
        let bytes = sample().to_bytes();
        for cut in 0..bytes.len() {
            assert!(Message::from_bytes(&bytes[..cut]).is_err());
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                let _ = Message::from_bytes(&b);
            }
        }
    }

    #[test]
    fn the_first_repetition_commitment_sorts_in_protocol_order() {
        assert!(Round::ModulusShares < Round::BiprimeFirstCommit);
        assert!(Round::BiprimeFirstCommit < Round::BiprimeFirst);
        assert!(Round::BiprimeFirstCommit < Round::KeyShares);
        let m = Message::new([1; 32], Round::BiprimeFirstCommit, 0, PartyIndex(1), None);
        assert_eq!(Message::from_bytes(&m.to_bytes()).unwrap().round, m.round);
    }

    #[test]
    fn key_stage_complaint_rounds_sort_after_the_sharing_they_dispute() {
        let order = [
            Round::CertifyProducts,
            Round::KeyShares,
            Round::KeyComplaints,
            Round::KeyAnswers,
            Round::MaskedProduct,
            Round::Reshare,
            Round::ReshareComplaints,
            Round::ReshareAnswers,
            Round::Refresh,
            Round::RefreshComplaints,
            Round::RefreshAnswers,
            Round::RefreshTest,
            Round::TestDecryption,
        ];
        for w in order.windows(2) {
            assert!(w[0] < w[1], "{:?} < {:?}", w[0], w[1]);
        }
        for r in order {
            let m = Message::new([1; 32], r, 0, PartyIndex(1), None);
            assert_eq!(Message::from_bytes(&m.to_bytes()).unwrap().round, r);
        }
    }

    #[test]
    fn unreduced_field_element_is_refused() {
        let mut m = sample();
        m.small = vec![super::super::field::P127];
        assert!(Message::from_bytes(&m.to_bytes()).is_err());
    }
}
