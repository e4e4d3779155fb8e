//! Adaptive provers against the range proof's link (issue 25, "adversarial-prover tests"): a
//! hospital that commits in-range values and proves their range honestly, but whose ciphertext
//! encrypts something else, and that computes the rest of the proof as honestly as it can. The
//! prover below is `encrypt_in_range` step for step with the ciphertext swapped; a sanity case
//! shows that, with nothing swapped, its proof verifies — so a rejection below is the verifier's
//! doing, not a broken adversary.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::dealer::insecure_generate_from_seed;

/// How the lying prover answers the challenge.
#[derive(Clone, Copy)]
enum Answer {
    /// `z_j = α_j + e·x_j` for the committed `x_j`, as an honest prover would.
    Committed,
    /// `z_j = α_j + e·x'_j` for the encrypted `x'_j`: the Paillier side then balances, and the
    /// difference lands on the Pedersen side instead.
    Encrypted,
}

/// The proof of a prover who commits `committed` (in range) but encrypts `encrypted`.
fn lying_prover(
    pk: &PublicKey,
    layout: SlotLayout,
    committed: &[u64],
    encrypted: &[u64],
    bound: u64,
    answer: Answer,
    rng: &mut ChaCha20Rng,
) -> (Ciphertext, RangeProof) {
    let offsets = uniform_offsets(layout);
    let shape = Shape::new(layout, &offsets, bound).unwrap();
    let signed: Vec<i64> = encrypted.iter().map(|&v| v as i64).collect();
    let (ct, EncryptionNonce(rho)) = pk
        .encrypt_with_nonce(&layout.encode(&signed).unwrap(), rng)
        .unwrap();
    let pc = pedersen();
    let gammas: Vec<Scalar> = (0..shape.slots)
        .map(|_| Scalar::random(&mut RngAdapter(&mut *rng)))
        .collect();
    let mut bp_values: Vec<u64> = committed.to_vec();
    let mut bp_blind: Vec<Scalar> = gammas.clone();
    if shape.complement {
        bp_values.extend(committed.iter().map(|&v| bound - v));
        bp_blind.extend(gammas.iter().map(|g| -g));
    }
    for _ in 0..shape.pads() {
        bp_values.push(0);
        bp_blind.push(Scalar::random(&mut RngAdapter(&mut *rng)));
    }
    let mut t = transcript(pk, b"ctx", &ct, layout, &offsets, bound);
    let (bulletproof, all) = bulletproofs::RangeProof::prove_multiple_with_rng(
        &bp_gens(shape.total),
        &pc,
        &mut t,
        &bp_values,
        &bp_blind,
        shape.range_bits,
        &mut RngAdapter(&mut *rng),
    )
    .unwrap();
    let mut commitments: Vec<CompressedRistretto> = all[..shape.slots].to_vec();
    commitments.extend_from_slice(&all[shape.total - shape.pads()..]);
    let alphas: Vec<Int> = (0..shape.slots)
        .map(|_| Int::random_bits(rng, shape.alpha_bits()))
        .collect();
    let deltas: Vec<Scalar> = (0..shape.slots)
        .map(|_| Scalar::random(&mut RngAdapter(&mut *rng)))
        .collect();
    let beta = Int::random_bits(rng, pk.nonce_bits() + CHALLENGE_BITS + STAT_BITS);
    let link_paillier = pk
        .g_pow(&packed_exponent(pk, &offsets, &alphas))
        .mul_mod(&pk.hs_table().pow_public(&beta), pk.nn());
    let link_ec: Vec<CompressedRistretto> = alphas
        .iter()
        .zip(&deltas)
        .map(|(a, d)| pc.commit(scalar_from_int(a), *d).compress())
        .collect();
    let e = link_challenge(&mut t, &commitments, &link_paillier, &link_ec);
    let e_int = Int::from_u128(e);
    let answered = match answer {
        Answer::Committed => committed,
        Answer::Encrypted => encrypted,
    };
    let z: Vec<Int> = alphas
        .iter()
        .zip(answered)
        .map(|(a, &x)| a.add(&e_int.mul_u64(x)))
        .collect();
    let z_blind: Vec<Scalar> = deltas
        .iter()
        .zip(&gammas)
        .map(|(d, g)| d + Scalar::from(e) * g)
        .collect();
    let z_rho = beta.add(&e_int.mul(rho.expose()));
    let proof = RangeProof {
        range_bits: shape.range_bits as u8,
        commitments,
        bulletproof,
        link_paillier,
        link_ec,
        z,
        z_blind,
        z_rho,
    };
    (ct, proof)
}

/// A hospital commits `[3, 7]` (in `[0, 10]`) but encrypts `[3, 1_000_000]` to poison the
/// aggregate. Answering for the committed values breaks the Paillier equation; answering for the
/// encrypted ones breaks the Pedersen equation. Both are refused, each by the check it broke.
/// Mutation check: without the Paillier comparison in `verify_range` the first is accepted.
#[test]
fn range_link_with_mismatched_plaintext_is_refused() {
    let (key, _) = insecure_generate_from_seed(512, 3, 2, 31).unwrap();
    let pk = key.public_key();
    let layout = SlotLayout::new(pk, 40, 2).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(32);
    let verify =
        |ct: &Ciphertext, proof: &RangeProof| pk.verify_range(layout, 10, b"ctx", ct, proof);

    // Sanity: the same prover with nothing swapped is honest, and its proof verifies.
    let (ct, proof) = lying_prover(
        pk,
        layout,
        &[3, 7],
        &[3, 7],
        10,
        Answer::Committed,
        &mut rng,
    );
    verify(&ct, &proof).unwrap();

    for (answer, reason) in [
        (Answer::Committed, "Paillier link does not verify"),
        (Answer::Encrypted, "Pedersen link does not verify"),
    ] {
        let (ct, proof) = lying_prover(pk, layout, &[3, 7], &[3, 1_000_000], 10, answer, &mut rng);
        assert_eq!(
            verify(&ct, &proof).unwrap_err(),
            Error::InvalidRangeProof { reason }
        );
    }
}
