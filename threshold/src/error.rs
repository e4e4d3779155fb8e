//! The crate's one error type.

use crate::keys::PartyIndex;

/// Everything that can go wrong in `medtech-threshold`.
///
/// Variants that are caused by another party's message carry that party's index, and
/// [`Error::culprits`] returns it, so the committee can record and exclude the culprit.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Bytes from outside could not be decoded.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The encoding carries a format version this build does not read.
    #[error("{what} has encoding version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// What was being decoded.
        what: &'static str,
        /// Version found in the bytes.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
    /// Parameters that cannot work (sizes, thresholds, bounds).
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// A plaintext outside what the operation can represent.
    #[error("plaintext out of range: {0}")]
    PlaintextOutOfRange(String),
    /// A packed ciphertext would overflow one of its slots.
    #[error("slot overflow: bound {bound} does not fit in a {slot_bits}-bit signed slot")]
    SlotOverflow {
        /// The bound that would be reached, as a decimal string.
        bound: String,
        /// Width of each slot in bits.
        slot_bits: u32,
    },
    /// Objects made under different keys or layouts were mixed.
    #[error("mismatch: {0}")]
    Mismatch(&'static str),
    /// A party's partial decryption failed verification.
    #[error("party {party} sent an invalid partial decryption: {reason}")]
    InvalidPartial {
        /// The culprit.
        party: PartyIndex,
        /// Which check failed.
        reason: &'static str,
    },
    /// A party's partial decryption arrived twice.
    #[error("party {party} sent more than one partial decryption")]
    DuplicatePartial {
        /// The culprit.
        party: PartyIndex,
    },
    /// A party index outside 1..=n.
    #[error("party {party} is not a member of this key (n = {parties})")]
    UnknownParty {
        /// The unknown index.
        party: PartyIndex,
        /// Number of parties of the key.
        parties: u16,
    },
    /// Fewer than t valid partial decryptions.
    #[error("not enough valid partial decryptions: have {have}, need {need}")]
    NotEnoughPartials {
        /// Valid partials available.
        have: usize,
        /// The threshold t.
        need: usize,
    },
    /// A party's key-generation message was malformed, out of turn, or inconsistent with its
    /// commitments: the ceremony aborts and names it.
    #[error("party {party} misbehaved in key generation (round {round:?}): {reason}")]
    Misbehaviour {
        /// The culprit.
        party: PartyIndex,
        /// The round whose message was wrong.
        round: crate::dkg::Round,
        /// What was wrong.
        reason: String,
    },
    /// Key generation failed in a way no single party can be blamed for (for example the
    /// opened θ is not a unit, or the key fails its final self-check).
    #[error("key generation failed: {0}")]
    KeyGenerationFailed(String),
    /// A contribution's range proof failed verification.
    #[error("range proof rejected: {reason}")]
    InvalidRangeProof {
        /// Which check failed.
        reason: &'static str,
    },
}

impl Error {
    /// The parties this error blames. Exhaustive on purpose: a new variant must decide.
    pub fn culprits(&self) -> Vec<PartyIndex> {
        match self {
            Error::InvalidPartial { party, .. }
            | Error::DuplicatePartial { party }
            | Error::UnknownParty { party, .. }
            | Error::Misbehaviour { party, .. } => vec![*party],
            Error::Malformed { .. }
            | Error::UnsupportedVersion { .. }
            | Error::InvalidParameters(_)
            | Error::PlaintextOutOfRange(_)
            | Error::SlotOverflow { .. }
            | Error::Mismatch(_)
            | Error::NotEnoughPartials { .. }
            | Error::InvalidRangeProof { .. }
            | Error::KeyGenerationFailed(_) => Vec::new(),
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Malformed {
            what,
            reason: reason.into(),
        }
    }
}

/// Shorthand for `Result<T, medtech_threshold::Error>`.
pub type Result<T> = core::result::Result<T, Error>;
