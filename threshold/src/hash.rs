//! Hashing helpers: fingerprints, hash-to-integer, and Fiat–Shamir transcripts.
//!
//! Transcripts are `merlin` (STROBE-128), as in dalek's bulletproofs: every protocol starts its
//! transcript with a versioned domain separator and appends labelled, canonically encoded values;
//! the challenge is squeezed from everything appended before it.

use merlin::Transcript;
use sha2::{Digest, Sha256, Sha512};

use crate::bigint::Int;

/// SHA-256 of `label ‖ data` (label length-prefixed).
pub(crate) fn fingerprint(label: &[u8], data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((label.len() as u64).to_be_bytes());
    h.update(label);
    h.update(data);
    h.finalize().into()
}

/// An integer of `bits` bits derived from `label ‖ data` with SHA-512 in counter mode, for
/// verifiably random group elements (nobody chooses them, so nobody knows a trapdoor for them).
pub(crate) fn hash_to_int(label: &[u8], data: &[u8], bits: usize) -> Int {
    let nbytes = bits.div_ceil(8);
    let mut out = Vec::with_capacity(nbytes + 64);
    let mut counter: u32 = 0;
    while out.len() < nbytes {
        let mut h = Sha512::new();
        h.update((label.len() as u64).to_be_bytes());
        h.update(label);
        h.update(counter.to_be_bytes());
        h.update(data);
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(nbytes);
    let excess = nbytes * 8 - bits;
    if excess > 0 {
        if let Some(b) = out.first_mut() {
            *b &= 0xff >> excess;
        }
    }
    Int::from_bytes_be(&out)
}

pub(crate) trait TranscriptExt {
    fn append_int(&mut self, label: &'static [u8], v: &Int);
    /// A 128-bit challenge.
    fn challenge_u128(&mut self, label: &'static [u8]) -> u128;
}

impl TranscriptExt for Transcript {
    fn append_int(&mut self, label: &'static [u8], v: &Int) {
        self.append_message(label, &v.to_bytes_be());
    }

    fn challenge_u128(&mut self, label: &'static [u8]) -> u128 {
        let mut buf = [0u8; 16];
        self.challenge_bytes(label, &mut buf);
        u128::from_be_bytes(buf)
    }
}
