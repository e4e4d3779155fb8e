//! Steps 2 and 3: verify partial decryptions and combine `t` of them.

use std::collections::BTreeMap;

use super::partial::PartialDecryption;
use super::proof::Statement;
use crate::bigint::Int;
use crate::ciphertext::{Ciphertext, Plaintext};
use crate::error::{Error, Result};
use crate::keys::{PartyIndex, ThresholdPublicKey};

/// A partial decryption whose proof has been checked for one ciphertext and context. Only these
/// can be combined, so an unchecked partial never reaches the combination.
#[derive(Clone, Debug)]
pub struct VerifiedPartial {
    party: PartyIndex,
    ci: Int,
    key_fingerprint: [u8; 32],
    ciphertext_digest: [u8; 32],
    context: Vec<u8>,
}

impl VerifiedPartial {
    /// The member who made it.
    pub fn party(&self) -> PartyIndex {
        self.party
    }

    /// For a partial this crate just computed with the member's own share (correct by
    /// construction, so its proof need not be checked by the member itself).
    pub(crate) fn own(
        key: &ThresholdPublicKey,
        context: &[u8],
        c: &Ciphertext,
        partial: &PartialDecryption,
    ) -> Self {
        VerifiedPartial {
            party: partial.party,
            ci: partial.ci.clone(),
            key_fingerprint: key.fingerprint(),
            ciphertext_digest: c.digest(),
            context: context.to_vec(),
        }
    }
}

/// A successful threshold decryption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decryption {
    /// The plaintext (centred).
    pub plaintext: Plaintext,
    /// The members whose partials were combined, ascending.
    pub parties: Vec<PartyIndex>,
}

/// The result of [`ThresholdPublicKey::combine_partials`]: the decryption, and every partial that
/// was refused with the reason (each error names its culprit).
#[derive(Clone, Debug)]
pub struct CombineOutcome {
    /// The decryption.
    pub decryption: Decryption,
    /// Refused partials.
    pub rejected: Vec<Error>,
}

impl ThresholdPublicKey {
    /// Checks one partial decryption of `c` under `context`. A failure names the member.
    pub fn verify_partial(
        &self,
        context: &[u8],
        c: &Ciphertext,
        partial: &PartialDecryption,
    ) -> Result<VerifiedPartial> {
        let party = partial.party;
        self.vk(party)?;
        let pk = self.public_key();
        let invalid = |reason| Error::InvalidPartial { party, reason };
        if partial.ci.is_zero() || partial.ci >= *pk.nn() || partial.ci.gcd(pk.n()) != 1u64 {
            return Err(invalid("c_i is not a unit mod N²"));
        }
        let statement = Statement {
            key: self,
            context,
            party,
            c,
            ci: &partial.ci,
        };
        if !statement.verify(&partial.proof) {
            return Err(invalid(
                "proof of correct partial decryption does not verify",
            ));
        }
        Ok(VerifiedPartial {
            party,
            ci: partial.ci.clone(),
            key_fingerprint: self.fingerprint(),
            ciphertext_digest: c.digest(),
            context: context.to_vec(),
        })
    }

    /// Combines verified partials of `c` under `context`. Uses the first `t` distinct members
    /// (by index); duplicates are refused with the culprit named.
    pub fn combine(
        &self,
        context: &[u8],
        c: &Ciphertext,
        partials: &[VerifiedPartial],
    ) -> Result<Decryption> {
        let digest = c.digest();
        let mut chosen: BTreeMap<PartyIndex, &VerifiedPartial> = BTreeMap::new();
        for p in partials {
            if p.key_fingerprint != self.fingerprint()
                || p.ciphertext_digest != digest
                || p.context != context
            {
                return Err(Error::Mismatch(
                    "partial was verified for another key, ciphertext or context",
                ));
            }
            if chosen.insert(p.party, p).is_some() {
                return Err(Error::DuplicatePartial { party: p.party });
            }
        }
        let t = usize::from(self.threshold());
        if chosen.len() < t {
            return Err(Error::NotEnoughPartials {
                have: chosen.len(),
                need: t,
            });
        }
        let set: Vec<(PartyIndex, &Int)> = chosen
            .into_iter()
            .take(t)
            .map(|(i, p)| (i, &p.ci))
            .collect();
        let plaintext = self.combine_unchecked(&set)?;
        Ok(Decryption {
            plaintext,
            parties: set.iter().map(|(i, _)| *i).collect(),
        })
    }

    /// Verifies every partial, drops (and reports) the invalid and duplicate ones, and combines
    /// `t` valid ones: one cheating member cannot stop a decryption that `t` honest members
    /// support.
    pub fn combine_partials(
        &self,
        context: &[u8],
        c: &Ciphertext,
        partials: &[PartialDecryption],
    ) -> Result<CombineOutcome> {
        let mut rejected = Vec::new();
        let mut valid: BTreeMap<PartyIndex, VerifiedPartial> = BTreeMap::new();
        for p in partials {
            if valid.contains_key(&p.party) {
                rejected.push(Error::DuplicatePartial { party: p.party });
                continue;
            }
            if valid.len() >= usize::from(self.threshold()) {
                // Enough already; later partials are neither needed nor checked.
                continue;
            }
            match self.verify_partial(context, c, p) {
                Ok(v) => {
                    valid.insert(p.party, v);
                }
                Err(e) => rejected.push(e),
            }
        }
        let valid: Vec<VerifiedPartial> = valid.into_values().collect();
        let decryption = self.combine(context, c, &valid)?;
        Ok(CombineOutcome {
            decryption,
            rejected,
        })
    }

    /// Step 3 on a set of exactly `t` distinct members.
    fn combine_unchecked(&self, set: &[(PartyIndex, &Int)]) -> Result<Plaintext> {
        let pk = self.public_key();
        let acc = self.interpolate(set)?;
        // acc = c^(4Δ²d) = 1 + N·(4Δ²θ·m mod N): L(acc) = (acc − 1)/N exactly.
        let l = acc
            .sub(&Int::one())
            .div_exact(pk.n())
            .ok_or(Error::Mismatch("combined value is not 1 mod N"))?;
        Ok(Plaintext::decode(
            pk,
            &l.mul_mod(self.combine_factor(), pk.n()),
        ))
    }

    /// The interpolation in the exponent, `Π_{i∈S} c_i^(2λ_i) mod N²`, with the Lagrange
    /// coefficients at 0 of the members in `set` — the lowest level of the combination, with no
    /// check of `|S|` (for `|S| = t` it is `c^(4Δ²d)`). The exponent `2λ_i` is even, so a partial
    /// times an element of order 2 interpolates to the same value (docs/threshold.md §5).
    fn interpolate(&self, set: &[(PartyIndex, &Int)]) -> Result<Int> {
        let nn = self.public_key().nn();
        let mut acc = Int::one();
        for &(i, ci) in set {
            let lambda = self.lagrange(i, set.iter().map(|(j, _)| *j))?;
            let exp = lambda.abs().shl(1);
            let base = if lambda.is_negative() {
                ci.invert(nn).ok_or(Error::InvalidPartial {
                    party: i,
                    reason: "c_i is not invertible",
                })?
            } else {
                ci.clone()
            };
            acc = acc.mul_mod(&base.pow_mod(&exp, nn), nn);
        }
        Ok(acc)
    }

    /// `λ_{0,i}^S = Δ·Π_{j∈S, j≠i} j / (j − i)`, an integer because Δ = n! (Shoup 2000, Lemma).
    fn lagrange(&self, i: PartyIndex, set: impl Iterator<Item = PartyIndex>) -> Result<Int> {
        let mut num = self.delta().clone();
        let mut den = Int::one();
        for j in set {
            if j == i {
                continue;
            }
            num = num.mul_u64(u64::from(j.0));
            den = den.mul(&Int::from_i64(i64::from(j.0) - i64::from(i.0)));
        }
        let neg = den.is_negative();
        let q = num
            .div_exact(&den.abs())
            .ok_or(Error::Mismatch("Lagrange coefficient is not integral"))?;
        Ok(if neg { q.neg() } else { q })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bigint::SecretInt;
    use crate::dealer::insecure_generate_from_seed;
    use crate::keys::ThresholdPublicKey;
    use rand_core::OsRng;

    /// Shares of a 3-of-5 key, combined as if the threshold were 2: a coalition of t − 1
    /// members interpolates in the exponent exactly as t members would (the lowest level of the
    /// combination, no count check) and lands on a value other than `c^(4Δ²d)` — the only value
    /// the plaintext is read from — and not even on one that is 1 mod N, so no plaintext comes
    /// out at all. Mutation check: with a dealer polynomial of degree t − 2 (one coefficient
    /// fewer) the pairs interpolate to `c^(4Δ²d)` and this test fails.
    #[test]
    fn t_minus_1_shares_do_not_decrypt_even_with_a_forged_threshold() {
        let (key, shares) = insecure_generate_from_seed(512, 5, 3, 11).unwrap();
        let pk = key.public_key().clone();
        let m = Plaintext::from_i64(123_456);
        let c = pk.encrypt(&m, &mut OsRng).unwrap();
        let cis: Vec<(PartyIndex, Int)> = shares
            .iter()
            .map(|s| {
                let p = s.partial_decrypt(&key, b"q", &c, &mut OsRng).unwrap();
                (p.party, p.ci)
            })
            .collect();
        let pick = |idx: &[usize]| -> Vec<(PartyIndex, &Int)> {
            idx.iter().map(|&k| (cis[k].0, &cis[k].1)).collect()
        };
        // What t members get, and that it is the plaintext's carrier.
        let full = pick(&[0, 2, 4]);
        let target = key.interpolate(&full).unwrap();
        assert_eq!(key.combine_unchecked(&full).unwrap(), m);
        let forged = ThresholdPublicKey::from_parts(
            pk,
            5,
            2,
            key.v_for_tests().clone(),
            (1..=5)
                .map(|i| key.vk(PartyIndex(i)).unwrap().clone())
                .collect(),
            Int::one(),
            key.share_bits(),
        )
        .unwrap();
        for pair in [[0usize, 1], [1, 4], [2, 3], [0, 4]] {
            let set = pick(&pair);
            let got = forged.interpolate(&set).unwrap();
            assert_ne!(
                got, target,
                "t − 1 partials {pair:?} interpolated to c^(4Δ²d)"
            );
            assert!(
                forged.combine_unchecked(&set).is_err(),
                "t − 1 partials {pair:?} interpolated to a value that is 1 mod N"
            );
        }
    }

    /// An adaptive member posts its honest partial times −1 (the one element of order 2 in
    /// `Z*_{N²}` other than 1 that anyone can name without factoring N), with a proof it computes
    /// for that value with its own share. Decision (docs/threshold.md §5): it is accepted — the
    /// statement is about `c_i²`, which is unchanged — and harmless: the combination raises
    /// every partial to the even exponent `2λ_i`, so the interpolated value, not just the
    /// plaintext, is the honest one. Someone without the share cannot flip a posted partial:
    /// the challenge hashes `c_i`, so the honest proof does not verify for `−c_i`. The 1-of-1
    /// key is the case where `λ_i = Δ = 1` is odd and only the 2 makes the exponent even.
    /// Mutation check: combining with exponent `λ_i` instead of `2λ_i` fails the 1-of-1 case.
    #[test]
    fn partial_times_minus_one_is_accepted_and_decrypts_the_same() {
        for (parties, threshold, seed) in [(1u16, 1u16, 15u64), (3, 2, 14)] {
            let (key, shares) = insecure_generate_from_seed(512, parties, threshold, seed).unwrap();
            let nn = key.public_key().nn().clone();
            let m = Plaintext::from_i64(-77);
            let c = key.public_key().encrypt(&m, &mut OsRng).unwrap();
            let honest: Vec<PartialDecryption> = shares
                .iter()
                .take(usize::from(threshold))
                .map(|s| s.partial_decrypt(&key, b"q", &c, &mut OsRng).unwrap())
                .collect();
            let minus_ci = nn.sub(&honest[0].ci);
            assert_ne!(minus_ci, honest[0].ci);
            // A relayer reusing the honest proof for −c_i is refused (the challenge binds c_i).
            let relayed = PartialDecryption {
                party: honest[0].party,
                ci: minus_ci.clone(),
                proof: honest[0].proof.clone(),
            };
            assert!(key.verify_partial(b"q", &c, &relayed).is_err());
            // The member itself proves −c_i as it proves c_i: x = Δs_i, a = (c⁴)^r.
            let x = SecretInt::new(shares[0].secret().expose().mul(key.delta()));
            let r = SecretInt::new(Int::random_bits(&mut OsRng, key.proof_nonce_bits()));
            let a = c.0.pow_mod(&r.expose().shl(2), &nn);
            let statement = Statement {
                key: &key,
                context: b"q",
                party: honest[0].party,
                c: &c,
                ci: &minus_ci,
            };
            let flipped = PartialDecryption {
                party: honest[0].party,
                ci: minus_ci.clone(),
                proof: statement.prove_with_nonce(&x, &r, &a).unwrap(),
            };
            let accepted = key
                .verify_partial(b"q", &c, &flipped)
                .expect("−c_i proven by its member is accepted (the statement is about c_i²)");
            let mut verified = vec![accepted];
            verified.extend(
                honest[1..]
                    .iter()
                    .map(|p| key.verify_partial(b"q", &c, p).unwrap()),
            );
            assert_eq!(key.combine(b"q", &c, &verified).unwrap().plaintext, m);
            let with_flip: Vec<(PartyIndex, &Int)> = std::iter::once((flipped.party, &flipped.ci))
                .chain(honest[1..].iter().map(|p| (p.party, &p.ci)))
                .collect();
            let all_honest: Vec<(PartyIndex, &Int)> =
                honest.iter().map(|p| (p.party, &p.ci)).collect();
            assert_eq!(
                key.interpolate(&with_flip).unwrap(),
                key.interpolate(&all_honest).unwrap()
            );
        }
    }

    /// A member's own partial, taken without verifying its proof, is the same verified partial
    /// anyone else gets by checking the proof, and combines with the others'.
    #[test]
    fn an_own_partial_is_what_verifying_it_gives() {
        let (key, shares) = insecure_generate_from_seed(512, 3, 2, 13).unwrap();
        let m = Plaintext::from_i64(-9_001);
        let c = key.public_key().encrypt(&m, &mut OsRng).unwrap();
        let (p, own) = shares[0]
            .partial_decrypt_own(&key, b"q", &c, &mut OsRng)
            .unwrap();
        let checked = key.verify_partial(b"q", &c, &p).unwrap();
        assert_eq!(
            (
                own.party,
                &own.ci,
                own.context.clone(),
                own.ciphertext_digest
            ),
            (
                checked.party,
                &checked.ci,
                checked.context.clone(),
                checked.ciphertext_digest
            )
        );
        let other = key
            .verify_partial(
                b"q",
                &c,
                &shares[2]
                    .partial_decrypt(&key, b"q", &c, &mut OsRng)
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(key.combine(b"q", &c, &[own, other]).unwrap().plaintext, m);
    }

    /// A partial checked against a tweaked verification key fails: the proof binds v_i.
    #[test]
    fn tweaked_verification_key_rejects_honest_partials() {
        let (key, shares) = insecure_generate_from_seed(512, 3, 2, 12).unwrap();
        let c = key
            .public_key()
            .encrypt(&Plaintext::from_i64(1), &mut OsRng)
            .unwrap();
        let p = shares[0]
            .partial_decrypt(&key, b"q", &c, &mut OsRng)
            .unwrap();
        assert!(key.verify_partial(b"q", &c, &p).is_ok());
        let nn = key.public_key().nn().clone();
        let mut vks: Vec<Int> = (1..=3)
            .map(|i| key.vk(PartyIndex(i)).unwrap().clone())
            .collect();
        vks[0] = vks[0].mul_mod(key.v_for_tests(), &nn);
        let tweaked = ThresholdPublicKey::from_parts(
            key.public_key().clone(),
            3,
            2,
            key.v_for_tests().clone(),
            vks,
            Int::one(),
            key.share_bits(),
        )
        .unwrap();
        // The share's fingerprint check fires first for partial_decrypt; verification must fail.
        assert_eq!(
            tweaked.verify_partial(b"q", &c, &p).unwrap_err().culprits(),
            vec![PartyIndex(1)]
        );
    }
}
