//! The product proof of round K2 and the public check of round K3: a product party can no
//! longer publish a wrong masked product, or reshare a wrong constant, without being named.
//!
//! After K1 every party knows, from the Feldman commitments alone, for each product party `j`:
//! `A_j = v^(F(j))`, `B_j = v^(B(j))` and `R_j = v^(R(j))` (products over the dealers of
//! `Π_m C_m^(j^m)`, see [`super::reshare::committed_at`]). Party `j` publishes
//! `y_j = F(j)·B(j) + R(j)`, so anyone can form
//!
//! `W_j = v^(y_j) · R_j⁻¹`, which equals `v^(F(j)·B(j)) = B_j^(F(j))` for an honest `j`.
//!
//! **K2 proof** (equality of discrete logarithms, Chaum–Pedersen over the integers as in
//! Hazay–Mikkelsen–Rabin–Toft, *Efficient RSA key generation and threshold Paillier in the
//! two-party setting*, CT-RSA 2012, §5, and the core's partial-decryption proof): witness
//! `x = F(j)`, statement `A_j = v^x` and `W_j = B_j^x`.
//!
//! * Prover: `r ← [0, 2^(|x| + 128 + λ))`, `a = v^r`, `b = B_j^r`,
//!   `e = H(session, j, N, A_j, B_j, W_j, a, b)` (128 bits), `z = r + e·x` over the integers.
//! * Verifier: `a = v^z·A_j^(−e)`, `b = B_j^z·W_j^(−e)`, and `e` must equal the hash. `|z|` is
//!   bounded before any exponentiation.
//!
//! Zero knowledge is statistical (`λ` bits: `r` is longer than `e·x` by that much); `A_j`, `B_j`
//! and `W_j` are all computable from public data already, so the proof reveals nothing new.
//! Soundness is the core's (docs/dkg.md, "Partial-decryption proofs with non-safe primes"): up
//! to elements of small order, which the `Δ`-th powers taken in K3 and in the verification keys
//! remove.
//!
//! **K3 check** (public, no proof needed): party `j` reshares `e_j = Δ·λ'_j·F(j)B(j)` with
//! Feldman commitments `D_{j,·}`; its constant must satisfy `D_{j,0} = W_j^(Δ·λ'_j)`. With the
//! K2 proof this pins the reshared constant to the proven product, so a product party that
//! reshares anything else is named by every party and by the transcript verifier.

use merlin::Transcript;
use rand_core::{CryptoRng, RngCore};

use super::reshare::committed_at;
use super::{blame, Message, Setup, STAT_BITS};
use crate::bigint::{Int, SecretInt};
use crate::error::{Error, Result};
use crate::hash::TranscriptExt;

/// `base^x mod m` for a public exponent of either sign (`base_inv = base⁻¹`).
fn pow_signed(base: &Int, base_inv: &Int, x: &Int, m: &Int) -> Int {
    if x.is_negative() {
        base_inv.pow_mod(&x.abs(), m)
    } else {
        base.pow_mod(x, m)
    }
}

/// Bits of the largest `|F(j)|` an honest run produces: `n` dealers, each `f_i(j) = Σ_m a_m j^m`
/// with `t` coefficients below `2^f_coeff` and `j ≤ n`.
fn witness_bits(setup: &Setup) -> usize {
    let n = usize::from(setup.n);
    let t = usize::from(setup.t);
    // log₂(n · t · n^(t−1)) rounded up, plus one bit of slack.
    setup.sizes.f_coeff + super::ceil_log2(n * t) + (t - 1) * super::ceil_log2(n + 1) + 1
}

/// Bits of the prover's nonce `r`.
fn nonce_bits(setup: &Setup) -> usize {
    witness_bits(setup) + 128 + STAT_BITS
}

/// What the K1 commitments say about one product party `j`, in the exponent of `v`.
#[derive(Clone, Debug)]
pub(super) struct Bases {
    /// The product party.
    party: u16,
    /// `A_j = v^(F(j))`.
    a: Int,
    /// `B_j = v^(B(j))`.
    b: Int,
    /// `R_j = v^(R(j))`.
    r: Int,
}

impl Bases {
    /// The product party these bases belong to.
    pub(super) fn party(&self) -> u16 {
        self.party
    }
}

/// The bases of every product party, from every dealer's K1 commitments (`t` for φ, `t` for β,
/// `2t − 1` for the mask, already checked to be units).
pub(super) fn bases(setup: &Setup, commitments: &[&[Int]], nn: &Int) -> Vec<Bases> {
    let t = usize::from(setup.t);
    let at = |j: u16, range: core::ops::Range<usize>| {
        commitments.iter().fold(Int::one(), |acc, c| {
            acc.mul_mod(&committed_at(&c[range.clone()], j, nn), nn)
        })
    };
    setup
        .product_parties
        .iter()
        .map(|&j| Bases {
            party: j,
            a: at(j, 0..t),
            b: at(j, t..2 * t),
            r: at(j, 2 * t..4 * t - 1),
        })
        .collect()
}

/// The public inputs of one product proof.
struct Statement<'a> {
    session: &'a [u8; 32],
    n: &'a Int,
    bases: &'a Bases,
    w: &'a Int,
}

impl Statement<'_> {
    fn challenge(&self, a: &Int, b: &Int) -> u128 {
        let mut t = Transcript::new(b"medtech-threshold/v1/dkg-product");
        t.append_message(b"session", self.session);
        t.append_u64(b"party", u64::from(self.bases.party));
        t.append_int(b"N", self.n);
        t.append_int(b"A", &self.bases.a);
        t.append_int(b"B", &self.bases.b);
        t.append_int(b"W", self.w);
        t.append_int(b"a", a);
        t.append_int(b"b", b);
        t.challenge_u128(b"e")
    }
}

/// `W_j = v^(y_j)·R_j⁻¹ mod N²`, or `None` if `R_j` is not a unit.
fn product_in_exponent(v: &Int, v_inv: &Int, y: &Int, bases: &Bases, nn: &Int) -> Option<Int> {
    let r_inv = bases.r.invert(nn)?;
    Some(pow_signed(v, v_inv, y, nn).mul_mod(&r_inv, nn))
}

/// The K2 message body of product party `bases.party`: `[y, e, z]` for the masked product `y`
/// and the proof that `y − R(j)` is `F(j)·B(j)`, given the witness `x = F(j)`.
#[allow(clippy::too_many_arguments)] // the statement's parts, each needed once
pub(super) fn prove<R: RngCore + CryptoRng + ?Sized>(
    setup: &Setup,
    n: &Int,
    nn: &Int,
    v: &Int,
    v_inv: &Int,
    bases: &Bases,
    x: &SecretInt,
    y: &Int,
    rng: &mut R,
) -> Result<Vec<Int>> {
    if x.expose().bits() > witness_bits(setup) {
        // Impossible for shares this party checked against their commitments and summed.
        return Err(Error::KeyGenerationFailed(
            "own product-proof witness exceeds its public bound".into(),
        ));
    }
    let w = product_in_exponent(v, v_inv, y, bases, nn)
        .ok_or_else(|| Error::KeyGenerationFailed("mask commitment is not a unit".into()))?;
    let statement = Statement {
        session: &setup.params.session,
        n,
        bases,
        w: &w,
    };
    let r = SecretInt::new(Int::random_bits(rng, nonce_bits(setup)));
    let a = v.pow_mod_secret(&r, nn);
    let b = bases.b.pow_mod_secret(&r, nn);
    let e = statement.challenge(&a, &b);
    let z = r.expose().add(&x.expose().mul(&Int::from_u128(e)));
    Ok(vec![y.clone(), Int::from_u128(e), z])
}

/// Checks the product parties' K2 messages (in the order of `bases`): each must carry `[y, e, z]`
/// with a valid proof. Returns every `y_j` and `W_j = v^(F(j)B(j))`, or names the first party
/// whose message is malformed or whose proof fails.
pub(super) fn verify(
    setup: &Setup,
    n: &Int,
    nn: &Int,
    v: &Int,
    v_inv: &Int,
    bases: &[Bases],
    msgs: &[&Message],
) -> Result<(Vec<Int>, Vec<Int>)> {
    let max_z = nonce_bits(setup) + 1;
    let mut ys = Vec::with_capacity(msgs.len());
    let mut ws = Vec::with_capacity(msgs.len());
    for (m, bases) in msgs.iter().zip(bases) {
        let [y, e, z] = m.ints.as_slice() else {
            return Err(blame(m, format!("{} integers, expected 3", m.ints.len())));
        };
        if !m.small.is_empty() || m.digest.is_some() {
            return Err(blame(m, "unexpected values beside the masked product"));
        }
        if e.is_negative() || e.bits() > 128 || z.bits() > max_z {
            return Err(blame(m, "product proof out of range"));
        }
        let w = product_in_exponent(v, v_inv, y, bases, nn)
            .ok_or_else(|| blame(m, "mask commitment is not a unit"))?;
        let (Some(a_inv), Some(b_inv), Some(w_inv)) =
            (bases.a.invert(nn), bases.b.invert(nn), w.invert(nn))
        else {
            return Err(blame(m, "product-proof base is not a unit"));
        };
        let statement = Statement {
            session: &setup.params.session,
            n,
            bases,
            w: &w,
        };
        let a = pow_signed(v, v_inv, z, nn).mul_mod(&a_inv.pow_mod(e, nn), nn);
        let b = pow_signed(&bases.b, &b_inv, z, nn).mul_mod(&w_inv.pow_mod(e, nn), nn);
        if Int::from_u128(statement.challenge(&a, &b)) != *e {
            return Err(blame(
                m,
                "the masked product is not the product of the party's committed shares \
                 (product proof fails)",
            ));
        }
        ys.push(y.clone());
        ws.push(w);
    }
    Ok((ys, ws))
}

/// K3's public check: product party `j`'s reshared constant `D_{j,0}` must be
/// `W_j^(Δ·λ'_j)`. `constants[k]` and `ws[k]` belong to `msgs[k]`, in product-party order.
pub(super) fn check_reshared_constants(
    setup: &Setup,
    nn: &Int,
    ws: &[Int],
    msgs: &[&Message],
    constants: &[&Int],
) -> Result<()> {
    for (((m, w), c), lambda) in msgs.iter().zip(ws).zip(constants).zip(&setup.int_lagrange) {
        let w_inv = w
            .invert(nn)
            .ok_or_else(|| blame(m, "product in the exponent is not a unit"))?;
        let expected = pow_signed(w, &w_inv, &lambda.mul(&setup.delta), nn);
        if expected != **c {
            return Err(blame(
                m,
                "the reshared constant is not Δ·λ'·(the proven product) (K3 constant check fails)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::super::field::eval_int;
    use super::super::sim::run_in_process;
    use super::super::{Parameters, Round};
    use super::*;
    use crate::dealer::{insecure_generate_from_seed, verification_base};
    use crate::keys::PartyIndex;

    /// A K1-shaped setting at 512 bits: every dealer's φ, β and mask polynomials with the real
    /// sizes, their commitments, and what product party 2 would publish.
    struct Fixture {
        setup: Arc<Setup>,
        n: Int,
        nn: Int,
        v: Int,
        v_inv: Int,
        bases: Vec<Bases>,
        /// `F(2)` and `y_2 = F(2)B(2) + R(2)`.
        x: SecretInt,
        y: Int,
    }

    fn fixture(seed: u64) -> Fixture {
        let setup = Setup::new(&Parameters::new(512, 3, 2, [5; 32]).unwrap());
        let (key, _) = insecure_generate_from_seed(512, 3, 2, 11).unwrap();
        let pk = key.public_key().clone();
        let (n, nn) = (pk.n().clone(), pk.nn().clone());
        let v = verification_base(&pk);
        let v_inv = v.invert(&nn).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let t = usize::from(setup.t);
        let sizes = setup.sizes;
        let mut commitments = Vec::new();
        let (mut f2, mut b2, mut r2) = (Int::zero(), Int::zero(), Int::zero());
        for _ in 0..setup.n {
            let poly = |len: usize, bits: usize, rng: &mut ChaCha20Rng| -> Vec<SecretInt> {
                (0..len)
                    .map(|_| SecretInt::new(Int::random_bits(rng, bits)))
                    .collect()
            };
            let f = poly(t, sizes.f_coeff, &mut rng);
            let b = poly(t, sizes.b_coeff, &mut rng);
            let r = poly(2 * t - 1, sizes.mask_coeff, &mut rng);
            f2 = f2.add(&eval_int(&f, 2));
            b2 = b2.add(&eval_int(&b, 2));
            r2 = r2.add(&eval_int(&r, 2));
            commitments.push(
                f.iter()
                    .chain(&b)
                    .chain(&r)
                    .map(|c| v.pow_mod(c.expose(), &nn))
                    .collect::<Vec<_>>(),
            );
        }
        let refs: Vec<&[Int]> = commitments.iter().map(Vec::as_slice).collect();
        let bases = bases(&setup, &refs, &nn);
        let y = f2.mul(&b2).add(&r2);
        Fixture {
            setup,
            n,
            nn,
            v,
            v_inv,
            bases,
            x: SecretInt::new(f2),
            y,
        }
    }

    impl Fixture {
        fn message(&self, ints: Vec<Int>) -> Message {
            let mut m = Message::new([5; 32], Round::MaskedProduct, 0, PartyIndex(2), None);
            m.ints = ints;
            m
        }

        fn prove(&self, x: &SecretInt, y: &Int, seed: u64) -> Vec<Int> {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            prove(
                &self.setup,
                &self.n,
                &self.nn,
                &self.v,
                &self.v_inv,
                &self.bases[1],
                x,
                y,
                &mut rng,
            )
            .unwrap()
        }

        fn verify(&self, m: &Message) -> Result<(Vec<Int>, Vec<Int>)> {
            verify(
                &self.setup,
                &self.n,
                &self.nn,
                &self.v,
                &self.v_inv,
                &self.bases[1..2],
                &[m],
            )
        }
    }

    #[test]
    fn an_honest_product_proof_verifies_and_gives_the_product_in_the_exponent() {
        let fx = fixture(1);
        let m = fx.message(fx.prove(&fx.x, &fx.y, 2));
        let (ys, ws) = fx.verify(&m).unwrap();
        assert_eq!(ys, vec![fx.y.clone()]);
        // W_2 = B_2^(F(2)) = v^(F(2)B(2)).
        assert_eq!(ws[0], fx.bases[1].b.pow_mod(fx.x.expose(), &fx.nn));
    }

    #[test]
    fn a_product_party_that_adds_to_its_product_cannot_prove_it() {
        // The attack the proof exists for: publishing F(j)B(j) + R(j) + δ, which would shift θ
        // and the key, proven with the true witness.
        let fx = fixture(3);
        let shifted = fx.y.add(&Int::from_u64(1));
        let m = fx.message(fx.prove(&fx.x, &shifted, 4));
        let e = fx.verify(&m).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(2)], "{e}");
    }

    #[test]
    fn a_proof_with_another_witness_fails() {
        let fx = fixture(5);
        let other = SecretInt::new(fx.x.expose().add(&Int::from_u64(1)));
        let m = fx.message(fx.prove(&other, &fx.y, 6));
        assert!(fx.verify(&m).is_err());
    }

    #[test]
    fn a_malformed_product_message_names_its_sender() {
        let fx = fixture(7);
        let mut ints = fx.prove(&fx.x, &fx.y, 8);
        ints.pop();
        let e = fx.verify(&fx.message(ints)).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(2)]);
        let mut ints = fx.prove(&fx.x, &fx.y, 8);
        ints[2] = ints[2].shl(nonce_bits(&fx.setup));
        let e = fx.verify(&fx.message(ints)).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Tweak a valid proof (the product, the challenge or the response): it must fail and
        /// name the prover.
        #[test]
        fn a_tweaked_product_proof_fails(which in 0usize..3, delta in 1i64..1_000_000, neg in any::<bool>()) {
            let fx = fixture(9);
            let mut ints = fx.prove(&fx.x, &fx.y, 10);
            let d = Int::from_i64(if neg { -delta } else { delta });
            ints[which] = ints[which].add(&d);
            let e = fx.verify(&fx.message(ints)).unwrap_err();
            prop_assert_eq!(e.culprits(), vec![PartyIndex(2)]);
        }
    }

    /// A product party that reshares `e_j + Δ` *consistently* — commitments and every share
    /// agree, so every Feldman check passes — would shift the key; the K3 constant check names
    /// it. (Runs the same seeded generation twice: once honestly to learn N and v, then with
    /// party 2 cheating.)
    #[test]
    fn a_consistent_reshare_of_a_wrong_constant_is_named() {
        let params = Parameters::new(512, 3, 2, [6; 32])
            .unwrap()
            .insecure_with_biprime_reps_for_tests(24)
            .unwrap();
        let rngs = || {
            (0..3u64)
                .map(|k| ChaCha20Rng::seed_from_u64(77_000 + k))
                .collect::<Vec<_>>()
        };
        let honest = run_in_process(&params, rngs(), None).unwrap();
        let pk = honest.outputs[0].key.public_key().clone();
        let nn = pk.nn().clone();
        let delta = Int::from_u64(6); // 3!
        let shift = verification_base(&pk).pow_mod(&delta, &nn);
        let mut hook = |m: &mut Message| {
            if m.round == Round::Reshare && m.from == PartyIndex(2) {
                if m.to.is_none() {
                    m.ints[0] = m.ints[0].mul_mod(&shift, &nn);
                } else {
                    m.ints[0] = m.ints[0].add(&delta);
                }
            }
        };
        let e = run_in_process(&params, rngs(), Some(&mut hook)).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(2)], "{e}");
        assert!(e.to_string().contains("reshared constant"), "{e}");
    }
}
