//! Step 1: a member's partial decryption `c_i = c^(2Δ·s_i) mod N²` and its proof.

use rand_core::{CryptoRng, RngCore};

use super::combine::VerifiedPartial;
use super::proof::{EqualityProof, Statement};
use crate::bigint::{Int, SecretInt};
use crate::ciphertext::Ciphertext;
use crate::encoding::{Reader, Tag, Writer};
use crate::error::{Error, Result};
use crate::fixed_base::pow_pair_secret;
use crate::keys::{KeyShare, PartyIndex, ThresholdPublicKey};

/// A member's partial decryption of one ciphertext, with its proof of correctness.
///
/// Public: it is posted to the ledger. It says nothing about the plaintext on its own; any `t`
/// of them for the same ciphertext and context decrypt it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PartialDecryption {
    pub(crate) party: PartyIndex,
    pub(crate) ci: Int,
    pub(crate) proof: EqualityProof,
}

impl PartialDecryption {
    /// The member who made it.
    pub fn party(&self) -> PartyIndex {
        self.party
    }

    /// Canonical bytes (`MTC`, tag 5, version 1, index, c_i, e, z).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Tag::PartialDecryption);
        w.u16(self.party.0)
            .int(&self.ci)
            .u128(self.proof.e)
            .int(&self.proof.z);
        w.finish()
    }

    /// Decodes a partial decryption received from outside. Structural checks only (range of
    /// `c_i`, size of `z`); the proof is checked by [`ThresholdPublicKey::verify_partial`].
    pub fn from_bytes(key: &ThresholdPublicKey, bytes: &[u8]) -> Result<Self> {
        let pk = key.public_key();
        let mut r = Reader::new("partial decryption", Tag::PartialDecryption, bytes)?;
        let party = PartyIndex(r.u16()?);
        let ci = r.int(2 * pk.bits() as usize)?;
        let e = r.u128()?;
        let z = r.int(key.proof_nonce_bits() + 1)?;
        r.finish()?;
        key.vk(party)?;
        Ok(PartialDecryption {
            party,
            ci,
            proof: EqualityProof { e, z },
        })
    }
}

impl KeyShare {
    /// [`Self::partial_decrypt`], also returning the partial as a [`VerifiedPartial`] for this
    /// member's own combination: it was computed here with this share, so the member need not
    /// spend a verification on its own proof (everyone else still checks it).
    pub fn partial_decrypt_own<R: RngCore + CryptoRng + ?Sized>(
        &self,
        key: &ThresholdPublicKey,
        context: &[u8],
        c: &Ciphertext,
        rng: &mut R,
    ) -> Result<(PartialDecryption, VerifiedPartial)> {
        let p = self.partial_decrypt(key, context, c, rng)?;
        let v = VerifiedPartial::own(key, context, c, &p);
        Ok((p, v))
    }

    /// Decrypts partially: `c^(2Δ·s_i) mod N²` with a proof bound to `context` (e.g. the query
    /// id). Exponentiations with secret exponents access memory independently of the secret
    /// (constant-time bucket and table scans); see docs/threshold.md for what GMP leaves.
    pub fn partial_decrypt<R: RngCore + CryptoRng + ?Sized>(
        &self,
        key: &ThresholdPublicKey,
        context: &[u8],
        c: &Ciphertext,
        rng: &mut R,
    ) -> Result<PartialDecryption> {
        if self.key_fingerprint() != key.fingerprint() {
            return Err(Error::Mismatch(
                "key share belongs to a different threshold key",
            ));
        }
        key.vk(self.index())?;
        let nn = key.public_key().nn();
        // x = Δ·s_i; the partial is c^(2x) and the proof's commitment is (c⁴)^r = c^(4r): two
        // secret powers of the same base, computed from one squaring chain.
        let x = SecretInt::new(self.secret().expose().mul(key.delta()));
        let two_x = SecretInt::new(x.expose().shl(1));
        let nonce_bits = key.proof_nonce_bits();
        let r = SecretInt::new(Int::random_bits(rng, nonce_bits));
        let four_r = SecretInt::new(r.expose().shl(2));
        let (ci, a) =
            pow_pair_secret(&c.0, &two_x, &four_r, nonce_bits + 2, nn).ok_or_else(|| {
                Error::InvalidParameters("share larger than the key's share bound".into())
            })?;
        let statement = Statement {
            key,
            context,
            party: self.index(),
            c,
            ci: &ci,
        };
        let proof = statement.prove_with_nonce(&x, &r, &a).ok_or_else(|| {
            Error::InvalidParameters("share larger than the key's share bound".into())
        })?;
        Ok(PartialDecryption {
            party: self.index(),
            ci,
            proof,
        })
    }
}
