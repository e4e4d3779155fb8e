//! Dealer-free key generation at test sizes (512-bit): the key decrypts with any t of n shares
//! through the unchanged threshold core, and cheating parties are named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_threshold::dkg::sim::run_in_process;
use medtech_threshold::dkg::{Message, Parameters, Round};
use medtech_threshold::{Error, PartyIndex, Plaintext};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn rngs(n: u16, seed: u64) -> Vec<ChaCha20Rng> {
    (0..n)
        .map(|k| ChaCha20Rng::seed_from_u64(seed * 1000 + u64::from(k)))
        .collect()
}

fn params(n: u16, t: u16) -> Parameters {
    Parameters::new(512, n, t, [42; 32])
        .unwrap()
        .insecure_with_biprime_reps_for_tests(24)
        .unwrap()
}

fn subsets(n: u16, t: u16) -> Vec<Vec<u16>> {
    let mut out = Vec::new();
    for mask in 0u32..(1 << n) {
        if mask.count_ones() == u32::from(t) {
            out.push((1..=n).filter(|i| mask & (1 << (i - 1)) != 0).collect());
        }
    }
    out
}

fn generated_key_decrypts_with_any_t_of_n(n: u16, t: u16, seed: u64) {
    let run = run_in_process(&params(n, t), rngs(n, seed), None).unwrap();
    let key = run.outputs[0].key.clone();
    assert!(
        run.outputs.iter().all(|o| o.key == key),
        "every party holds the same key"
    );
    assert_eq!(key.public_key().bits(), 512);
    assert_eq!((key.parties(), key.threshold()), (n, t));
    let pk = key.public_key();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let c = pk.add(
        &pk.encrypt(&Plaintext::from_i64(1_000_000), &mut rng)
            .unwrap(),
        &pk.encrypt(&Plaintext::from_i64(-58), &mut rng).unwrap(),
    );
    for set in subsets(n, t) {
        let partials: Vec<_> = set
            .iter()
            .map(|&i| {
                run.outputs[usize::from(i) - 1]
                    .share
                    .partial_decrypt(&key, b"dkg-test", &c, &mut rng)
                    .unwrap()
            })
            .collect();
        let out = key.combine_partials(b"dkg-test", &c, &partials).unwrap();
        assert!(
            out.rejected.is_empty(),
            "every proof verifies: {:?}",
            out.rejected
        );
        assert_eq!(
            out.decryption.plaintext,
            Plaintext::from_i64(999_942),
            "subset {set:?}"
        );
    }
    // t − 1 shares are not enough.
    let partials: Vec<_> = run.outputs[..usize::from(t) - 1]
        .iter()
        .map(|o| {
            o.share
                .partial_decrypt(&key, b"dkg-test", &c, &mut rng)
                .unwrap()
        })
        .collect();
    assert!(matches!(
        key.combine_partials(b"dkg-test", &c, &partials),
        Err(Error::NotEnoughPartials { .. })
    ));
    let stats = &run.outputs[0].stats;
    assert!(stats.candidates_tried >= stats.sieve_survivors);
    assert!(stats.sieve_survivors >= stats.trial_survivors);
    assert!(stats.trial_survivors >= stats.first_test_survivors);
    assert!(stats.first_test_survivors >= 1);
}

#[test]
fn three_parties_any_two_decrypt() {
    generated_key_decrypts_with_any_t_of_n(3, 2, 1);
}

#[test]
fn five_parties_any_three_decrypt() {
    generated_key_decrypts_with_any_t_of_n(5, 3, 2);
}

#[test]
fn dishonest_majority_thresholds_are_refused() {
    assert!(Parameters::new(512, 4, 3, [0; 32]).is_err());
    assert!(Parameters::new(512, 5, 3, [0; 32]).is_ok());
    assert!(Parameters::new(511, 5, 3, [0; 32]).is_err());
    assert!(Parameters::new(512, 1, 1, [0; 32]).is_err());
}

/// Runs with a cheating party and returns the error the honest parties raise.
fn run_with(n: u16, t: u16, seed: u64, mut cheat: impl FnMut(&mut Message)) -> Error {
    let mut hook = |m: &mut Message| cheat(m);
    run_in_process(&params(n, t), rngs(n, seed), Some(&mut hook)).unwrap_err()
}

fn culprit(e: &Error) -> Vec<PartyIndex> {
    e.culprits()
}

#[test]
fn inconsistent_key_share_is_answered_in_public() {
    // Party 2 sends party 3 a β share that is off by one. Party 3 complains in K1b, party 2
    // answers with the true share in K1c, and the run completes (issue 30 §1; before, party 3
    // alone stopped, and the others waited for it).
    let mut complained = false;
    let mut answered = 0;
    let mut hook = |m: &mut Message| {
        if m.round == Round::KeyShares && m.from == PartyIndex(2) && m.to == Some(PartyIndex(3)) {
            m.tweak_int_for_tests(0, 1);
        }
        if m.round == Round::KeyComplaints && m.from == PartyIndex(3) {
            complained = true;
        }
        if m.round == Round::KeyAnswers && m.from == PartyIndex(2) {
            answered = m.int_count_for_tests();
        }
    };
    let run = run_in_process(&params(3, 2), rngs(3, 3), Some(&mut hook)).unwrap();
    assert!(complained);
    assert_eq!(answered, 2, "party 2 answers with the β and mask shares");
    assert_eq!(run.outputs.len(), 3);
}

#[test]
fn wrong_commitment_names_its_dealer() {
    // Party 1 publishes a commitment to a different β coefficient than it shared.
    let e = run_with(3, 2, 4, |m| {
        if m.round == Round::KeyShares && m.from == PartyIndex(1) && m.to.is_none() {
            m.swap_ints_for_tests(2, 3);
        }
    });
    assert_eq!(culprit(&e), vec![PartyIndex(1)], "{e}");
}

#[test]
fn biprimality_opening_that_differs_from_its_commitment_names_the_sender() {
    let e = run_with(3, 2, 5, |m| {
        if m.round == Round::BiprimeReveal && m.from == PartyIndex(3) {
            m.tweak_int_for_tests(0, 1);
        }
    });
    assert!(
        matches!(
            e,
            Error::Misbehaviour {
                round: Round::BiprimeReveal,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(culprit(&e), vec![PartyIndex(3)]);
}

#[test]
fn a_product_party_that_publishes_a_wrong_masked_product_is_named() {
    // Party 2 adds one to its K2 masked product (which would shift θ and break the key): its
    // product proof no longer holds, and every honest party names it.
    let e = run_with(3, 2, 8, |m| {
        if m.round == Round::MaskedProduct && m.from == PartyIndex(2) {
            m.tweak_int_for_tests(0, 1);
        }
    });
    assert!(
        matches!(
            e,
            Error::Misbehaviour {
                round: Round::MaskedProduct,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(culprit(&e), vec![PartyIndex(2)]);
}

#[test]
fn a_reshared_constant_other_than_the_proven_product_is_named() {
    // Party 3 publishes its reshare commitments in another order: the constant is no longer
    // Δ·λ'·(its proven product) in the exponent.
    let e = run_with(5, 3, 9, |m| {
        if m.round == Round::Reshare && m.from == PartyIndex(3) && m.to.is_none() {
            m.swap_ints_for_tests(0, 1);
        }
    });
    assert_eq!(culprit(&e), vec![PartyIndex(3)], "{e}");
    assert!(e.to_string().contains("reshared constant"), "{e}");
}

#[test]
fn reshare_inconsistent_with_its_commitment_is_answered_or_named() {
    // Product party 2 sends party 1 a reshare off by one and then answers the complaint with
    // a wrong value too: named in K3c.
    let e = run_with(3, 2, 6, |m| {
        if (m.round == Round::Reshare && m.from == PartyIndex(2) && m.to == Some(PartyIndex(1)))
            || (m.round == Round::ReshareAnswers
                && m.from == PartyIndex(2)
                && m.int_count_for_tests() > 0)
        {
            m.tweak_int_for_tests(0, -1);
        }
    });
    assert_eq!(culprit(&e), vec![PartyIndex(2)], "{e}");
    assert!(
        matches!(
            e,
            Error::Misbehaviour {
                round: Round::ReshareAnswers,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn malformed_sieve_message_names_its_sender() {
    let e = run_with(3, 2, 7, |m| {
        if m.round == Round::SieveShares && m.from == PartyIndex(3) && m.to == Some(PartyIndex(1)) {
            m.truncate_for_tests();
        }
    });
    assert!(
        matches!(
            e,
            Error::Misbehaviour {
                round: Round::SieveShares,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(culprit(&e), vec![PartyIndex(3)]);
}

#[test]
fn message_of_another_session_is_refused() {
    let e = run_with(3, 2, 8, |m| {
        if m.from == PartyIndex(2) && m.round == Round::SieveProducts {
            m.session = [0; 32];
        }
    });
    assert_eq!(culprit(&e), vec![PartyIndex(2)], "{e}");
}

mod reshare {
    use super::*;
    use medtech_threshold::dealer;
    use medtech_threshold::dkg::reshare::{
        answer, check_test, complain, deal, receive, reshared_key, test_partial, ReshareParameters,
    };
    use medtech_threshold::{KeyShare, ThresholdPublicKey};

    /// Every message of a re-sharing from `dealers` to a committee of `n2` with threshold
    /// `t2` — the dealings, every new member's complaint (R1b) and every dealer's answer
    /// (R1c) — letting `cheat` alter each in flight.
    fn messages(
        key: &ThresholdPublicKey,
        shares: &[KeyShare],
        dealers: &[u16],
        (n2, t2): (u16, u16),
        mut cheat: impl FnMut(&mut Message),
    ) -> Result<(ReshareParameters, Vec<Message>), Error> {
        let ds: Vec<PartyIndex> = dealers.iter().map(|&d| PartyIndex(d)).collect();
        let params = ReshareParameters::new([5; 32], key, &ds, n2, t2)?;
        let mut rng = ChaCha20Rng::seed_from_u64(99);
        let mut wire = Vec::new();
        let mut kept = Vec::new();
        for &d in dealers {
            let (dealing, out) = deal(&params, &shares[usize::from(d) - 1], &mut rng)?;
            kept.push(dealing);
            for mut m in out.broadcast.into_iter().chain(out.direct) {
                cheat(&mut m);
                wire.push(m.to_bytes());
            }
        }
        let decode = |wire: &[Vec<u8>]| -> Vec<Message> {
            wire.iter()
                .map(|w| Message::from_bytes(w).unwrap())
                .collect()
        };
        let msgs = decode(&wire);
        for j in 1..=n2 {
            let mut c = complain(&params, PartyIndex(j), &msgs)?;
            cheat(&mut c);
            wire.push(c.to_bytes());
        }
        let msgs = decode(&wire);
        for dealing in &kept {
            let mut a = answer(&params, dealing, &msgs)?;
            cheat(&mut a);
            wire.push(a.to_bytes());
        }
        Ok((params, decode(&wire)))
    }

    /// Runs a re-sharing (see [`messages`]) and returns every new member's key and share.
    fn run(
        key: &ThresholdPublicKey,
        shares: &[KeyShare],
        dealers: &[u16],
        n2: u16,
        t2: u16,
        cheat: impl FnMut(&mut Message),
    ) -> Result<Vec<(ThresholdPublicKey, KeyShare)>, Error> {
        let (params, msgs) = messages(key, shares, dealers, (n2, t2), cheat)?;
        (1..=n2)
            .map(|j| receive(&params, PartyIndex(j), &msgs))
            .collect()
    }

    fn decrypts(key: &ThresholdPublicKey, shares: &[&KeyShare], m: i64) -> bool {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let c = key
            .public_key()
            .encrypt(&Plaintext::from_i64(m), &mut rng)
            .unwrap();
        let partials: Vec<_> = shares
            .iter()
            .map(|s| s.partial_decrypt(key, b"reshare", &c, &mut rng).unwrap())
            .collect();
        matches!(key.combine_partials(b"reshare", &c, &partials),
            Ok(out) if out.decryption.plaintext == Plaintext::from_i64(m) && out.rejected.is_empty())
    }

    #[test]
    fn a_hospital_joins_and_the_same_public_key_decrypts_with_any_three_of_six() {
        let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 11).unwrap();
        let new = run(&key, &shares, &[1, 3, 5], 6, 3, |_| {}).unwrap();
        let new_key = new[0].0.clone();
        assert!(new.iter().all(|(k, _)| *k == new_key));
        assert_eq!(
            new_key.public_key(),
            key.public_key(),
            "same N: old ciphertexts stay valid"
        );
        assert_ne!(new_key.fingerprint(), key.fingerprint());
        for set in subsets(6, 3) {
            let s: Vec<&KeyShare> = set.iter().map(|&i| &new[usize::from(i) - 1].1).collect();
            assert!(decrypts(&new_key, &s, 31_337), "subset {set:?}");
        }
    }

    #[test]
    fn refresh_of_a_generated_key_makes_old_shares_useless_with_the_new_key() {
        let run = run_in_process(&params(3, 2), rngs(3, 12), None).unwrap();
        let key = run.outputs[0].key.clone();
        let old: Vec<KeyShare> = run.outputs.into_iter().map(|o| o.share).collect();
        let new = super::reshare::run(&key, &old, &[2, 3], 3, 2, |_| {}).unwrap();
        let new_key = new[0].0.clone();
        assert_eq!(new_key.public_key(), key.public_key());
        for set in subsets(3, 2) {
            let s: Vec<&KeyShare> = set.iter().map(|&i| &new[usize::from(i) - 1].1).collect();
            assert!(decrypts(&new_key, &s, -4_242), "subset {set:?}");
        }
        // An old share cannot be used with the new key: refused by fingerprint, and its bytes
        // do not load under the new key.
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let c = key
            .public_key()
            .encrypt(&Plaintext::from_i64(1), &mut rng)
            .unwrap();
        assert!(old[0]
            .partial_decrypt(&new_key, b"x", &c, &mut rng)
            .is_err());
        assert!(KeyShare::from_secret_bytes(&old[0].to_secret_bytes(), &new_key).is_err());
        // And the new shares are not the old ones.
        assert_ne!(*new[0].1.to_secret_bytes(), *old[0].to_secret_bytes(),);
    }

    #[test]
    fn a_hospital_leaves_two_of_three_remain_enough() {
        let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 13).unwrap();
        let new = run(&key, &shares, &[2, 3, 4], 3, 2, |_| {}).unwrap();
        for set in subsets(3, 2) {
            let s: Vec<&KeyShare> = set.iter().map(|&i| &new[usize::from(i) - 1].1).collect();
            assert!(decrypts(&new[0].0, &s, 77), "subset {set:?}");
        }
    }

    #[test]
    fn dealer_resharing_something_other_than_its_share_is_named() {
        let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 14).unwrap();
        // Dealer 3 claims a different constant: swaps its first two commitments.
        let e = run(&key, &shares, &[1, 3, 5], 5, 3, |m| {
            if m.from == PartyIndex(3) && m.to.is_none() {
                m.swap_ints_for_tests(0, 1);
            }
        })
        .unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(3)], "{e}");
    }

    /// Issue 30 §1: dealer 5 sends new member 2 a sub-share off by one. Before R1b–R1c member
    /// 2 stopped alone, naming 5 on its own host. Now 2 complains in public and 5 answers:
    /// with the true sub-share the re-sharing completes for everyone; with a wrong one every
    /// new member — and anyone holding the public messages — names 5 in R1c.
    #[test]
    fn dealer_sending_an_inconsistent_share_is_answered_or_named_by_everyone() {
        let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 15).unwrap();
        let bad_share = |m: &mut Message| {
            if m.round == Round::Refresh && m.from == PartyIndex(5) && m.to == Some(PartyIndex(2)) {
                m.tweak_int_for_tests(0, 1);
            }
        };
        let new = run(&key, &shares, &[1, 3, 5], 5, 3, bad_share).unwrap();
        assert!(new.iter().all(|(k, _)| *k == new[0].0));
        for set in subsets(5, 3) {
            let s: Vec<&KeyShare> = set.iter().map(|&i| &new[usize::from(i) - 1].1).collect();
            assert!(decrypts(&new[0].0, &s, 5), "subset {set:?}");
        }

        let (params, msgs) = messages(&key, &shares, &[1, 3, 5], (5, 3), |m| {
            bad_share(m);
            if m.round == Round::RefreshAnswers
                && m.from == PartyIndex(5)
                && m.int_count_for_tests() > 0
            {
                m.tweak_int_for_tests(0, 1);
            }
        })
        .unwrap();
        for j in 1..=5 {
            let e = receive(&params, PartyIndex(j), &msgs).unwrap_err();
            assert_eq!(e.culprits(), vec![PartyIndex(5)], "member {j}: {e}");
            assert!(
                matches!(
                    e,
                    Error::Misbehaviour {
                        round: Round::RefreshAnswers,
                        ..
                    }
                ),
                "member {j}: {e}"
            );
        }
        let public: Vec<Message> = msgs.into_iter().filter(|m| m.to.is_none()).collect();
        let e = reshared_key(&params, &public).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(5)], "{e}");
    }

    /// R2: the new committee decrypts a test ciphertext before the key is accepted; a member
    /// whose test partial does not verify against its new verification key is named (new index),
    /// and a committee whose valid partials do not decrypt is refused.
    #[test]
    fn the_new_committee_must_decrypt_the_test_ciphertext() {
        let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 20).unwrap();
        let (params, mut msgs) = messages(&key, &shares, &[1, 2, 3], (4, 3), |_| {}).unwrap();
        let new: Vec<(ThresholdPublicKey, KeyShare)> = (1..=4)
            .map(|j| receive(&params, PartyIndex(j), &msgs).unwrap())
            .collect();
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let partials: Vec<Message> = new
            .iter()
            .map(|(k, s)| test_partial(&params, k, s, &mut rng).unwrap())
            .collect();
        let with = |partials: &[Message]| {
            let mut all = msgs.clone();
            all.extend(partials.iter().cloned());
            check_test(&params, &new[0].0, &all)
        };
        with(&partials).unwrap();
        let mut bad = partials.clone();
        bad[2].tweak_int_for_tests(0, 1);
        let e = with(&bad).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(3)], "{e}");
        assert!(
            matches!(
                e,
                Error::Misbehaviour {
                    round: Round::RefreshTest,
                    ..
                }
            ),
            "{e}"
        );
        // A missing partial names its member.
        let e = with(&partials[..3]).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(4)], "{e}");
        // Partials of the old key's shares (a committee that did not really re-share) do
        // not verify against the new key.
        let old: Vec<Message> = shares[..4]
            .iter()
            .map(|s| test_partial(&params, &key, s, &mut rng).unwrap())
            .collect();
        assert!(with(&old).is_err());
        msgs.clear();
    }

    /// A false complaint (new member 4 against honest dealer 1) is answered and frames nobody:
    /// the re-sharing gives the key it gives without the complaint.
    #[test]
    fn a_false_reshare_complaint_frames_nobody() {
        let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 19).unwrap();
        let honest = run(&key, &shares, &[1, 2, 3], 5, 3, |_| {}).unwrap();
        let new = run(&key, &shares, &[1, 2, 3], 5, 3, |m| {
            if m.round == Round::RefreshComplaints && m.from == PartyIndex(4) {
                m.set_small_for_tests(&[1]);
            }
        })
        .unwrap();
        assert_eq!(new[0].0, honest[0].0);
        assert_eq!(
            new[3].1.to_secret_bytes(),
            honest[3].1.to_secret_bytes(),
            "the complainer's share is the one it would have had"
        );
    }

    /// Deals from `dealers` to 6 members with threshold 3 and returns the parameters with only
    /// the public messages (dealings, complaints, answers).
    fn broadcasts(
        key: &ThresholdPublicKey,
        shares: &[KeyShare],
        dealers: &[u16],
        cheat: impl FnMut(&mut Message),
    ) -> (ReshareParameters, Vec<Message>) {
        let (params, msgs) = messages(key, shares, dealers, (6, 3), cheat).unwrap();
        (
            params,
            msgs.into_iter().filter(|m| m.to.is_none()).collect(),
        )
    }

    #[test]
    fn the_broadcasts_alone_give_the_new_members_key() {
        let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 17).unwrap();
        // Same seed as `run`, so the same dealings.
        let (params, b) = broadcasts(&key, &shares, &[1, 2, 4], |_| {});
        let public = reshared_key(&params, &b).unwrap();
        let new = run(&key, &shares, &[1, 2, 4], 6, 3, |_| {}).unwrap();
        assert!(new.iter().all(|(k, _)| *k == public));
        // A missing dealer is named.
        let without: Vec<Message> = b
            .iter()
            .filter(|m| !(m.round == Round::Refresh && m.from == PartyIndex(4)))
            .cloned()
            .collect();
        let e = reshared_key(&params, &without).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(4)], "{e}");
    }

    #[test]
    fn a_dealer_whose_public_dealing_is_not_its_share_is_named_by_anyone() {
        let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, 18).unwrap();
        // The new members' complaints already stop at the public check, naming dealer 2.
        let e = messages(&key, &shares, &[2, 3, 5], (6, 3), |m| {
            if m.round == Round::Refresh && m.from == PartyIndex(2) && m.to.is_none() {
                m.swap_ints_for_tests(0, 1);
            }
        })
        .unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(2)], "{e}");
        // And so does anyone holding only the public messages, had it been swapped later.
        let (params, mut b) = broadcasts(&key, &shares, &[2, 3, 5], |_| {});
        b[0].swap_ints_for_tests(0, 1);
        let e = reshared_key(&params, &b).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(2)], "{e}");
    }

    #[test]
    fn wrong_dealer_sets_are_refused() {
        let (key, _) = dealer::insecure_generate_from_seed(512, 5, 3, 16).unwrap();
        let p = |ds: &[u16]| {
            let ds: Vec<PartyIndex> = ds.iter().map(|&d| PartyIndex(d)).collect();
            ReshareParameters::new([0; 32], &key, &ds, 5, 3)
        };
        assert!(p(&[1, 2]).is_err(), "fewer than t");
        assert!(p(&[1, 1, 2]).is_err(), "duplicate");
        assert!(p(&[1, 2, 6]).is_err(), "not a member");
        assert!(p(&[1, 2, 3]).is_ok());
    }
}

/// A sieve or test that threw away good candidates (or let bad ones through to be caught later)
/// would shift the number of candidate pairs needed away from the prime-number theorem's
/// `(ln 2^(bits/2) / 2)²` ≈ 7,872 at 512 bits. Fixed seeds: deterministic.
#[test]
fn candidates_needed_match_the_prime_number_theorem() {
    let runs = 40u64;
    let mut total = 0u64;
    for r in 0..runs {
        let p = Parameters::new(512, 3, 2, [r as u8; 32])
            .unwrap()
            .with_batch(512)
            .unwrap()
            .insecure_with_biprime_reps_for_tests(4)
            .unwrap();
        let run = run_in_process(&p, rngs(3, 100 + r), None).unwrap();
        total += run.outputs[0].stats.candidates_tried;
    }
    let mean = total as f64 / runs as f64;
    // Geometric with mean ≈ 7,872 (+ half a batch): the mean of 40 has a standard deviation of
    // about 1,250.
    assert!((5_000.0..11_500.0).contains(&mean), "mean {mean}");
}

mod transcript {
    use super::*;
    use medtech_threshold::dkg::verify::replay;

    fn generated() -> (Parameters, medtech_threshold::dkg::sim::Run) {
        let p = params(3, 2);
        let run = run_in_process(&p, rngs(3, 21), None).unwrap();
        (p, run)
    }

    /// Whether a replay of `broadcasts` confirms the published key.
    fn confirms(
        p: &Parameters,
        broadcasts: &[Message],
        published: &medtech_threshold::ThresholdPublicKey,
    ) -> Result<bool, Error> {
        replay(p, broadcasts).map(|v| v.key == *published)
    }

    #[test]
    fn the_broadcasts_alone_determine_the_published_key() {
        let (p, run) = generated();
        let v = replay(&p, &run.broadcasts).unwrap();
        assert_eq!(v.key, run.outputs[0].key);
        assert_eq!(v.messages, run.broadcasts.len());
        assert!(v.moduli_tested >= 1 && v.moduli_opened >= v.moduli_tested);
        // Order does not matter.
        let mut shuffled = run.broadcasts.clone();
        shuffled.reverse();
        assert!(confirms(&p, &shuffled, &run.outputs[0].key).unwrap());
    }

    #[test]
    fn tampered_transcripts_fail_verification() {
        let (p, run) = generated();
        let published = run.outputs[0].key.clone();
        type Tamper = Box<dyn Fn(&mut Vec<Message>)>;
        let cases: Vec<(&str, Tamper)> = vec![
            (
                "a verification-key commitment changed",
                Box::new(move |b: &mut Vec<Message>| {
                    let i = b.iter().position(|m| m.round == Round::Reshare).unwrap();
                    b[i].swap_ints_for_tests(0, 1);
                }),
            ),
            (
                "a masked product changed (θ)",
                Box::new(move |b: &mut Vec<Message>| {
                    let i = b
                        .iter()
                        .position(|m| m.round == Round::MaskedProduct)
                        .unwrap();
                    b[i].tweak_int_for_tests(0, 1);
                }),
            ),
            (
                "a biprimality opening changed",
                Box::new(|b: &mut Vec<Message>| {
                    let i = b
                        .iter()
                        .position(|m| m.round == Round::BiprimeReveal)
                        .unwrap();
                    b[i].tweak_int_for_tests(0, 1);
                }),
            ),
            (
                "a broadcast removed",
                Box::new(|b: &mut Vec<Message>| {
                    let i = b
                        .iter()
                        .position(|m| m.round == Round::ModulusShares)
                        .unwrap();
                    b.remove(i);
                }),
            ),
            (
                "an opened modulus share changed",
                Box::new(|b: &mut Vec<Message>| {
                    // Party 3's (a product party's) shares of every modulus of the last batch;
                    // the last 2n = 6 values are its consistency combinations, left alone.
                    let i = b
                        .iter()
                        .rposition(|m| m.round == Round::ModulusShares && m.from == PartyIndex(3))
                        .unwrap();
                    for at in 0..b[i].int_count_for_tests() - 6 {
                        b[i].tweak_int_for_tests(at, 2);
                    }
                }),
            ),
            (
                "a consistency combination changed",
                Box::new(|b: &mut Vec<Message>| {
                    let i = b
                        .iter()
                        .rposition(|m| m.round == Round::ModulusShares)
                        .unwrap();
                    let last = b[i].int_count_for_tests() - 1;
                    b[i].tweak_int_for_tests(last, 1);
                }),
            ),
            (
                "a message of another session",
                Box::new(|b: &mut Vec<Message>| {
                    b[0].session = [1; 32];
                }),
            ),
            (
                "a duplicated broadcast",
                Box::new(|b: &mut Vec<Message>| {
                    let m = b[3].clone();
                    b.push(m);
                }),
            ),
            (
                "a key-stage commitment dropped",
                Box::new(|b: &mut Vec<Message>| {
                    let i = b.iter().position(|m| m.round == Round::KeyShares).unwrap();
                    b[i].truncate_for_tests();
                }),
            ),
        ];
        for (what, tamper) in cases {
            let mut b = run.broadcasts.clone();
            tamper(&mut b);
            let verdict = confirms(&p, &b, &published);
            assert!(
                !matches!(verdict, Ok(true)),
                "{what}: the tampered transcript still verified"
            );
        }
    }

    #[test]
    fn a_wrong_product_or_reshared_constant_in_the_transcript_is_blamed_on_its_sender() {
        let (p, run) = generated();
        for (round, from, at) in [
            (Round::MaskedProduct, 1, 0),
            (Round::MaskedProduct, 3, 2),
            (Round::Reshare, 2, 0),
        ] {
            let mut b = run.broadcasts.clone();
            let i = b
                .iter()
                .position(|m| m.round == round && m.from == PartyIndex(from))
                .unwrap();
            b[i].tweak_int_for_tests(at, 1);
            let e = replay(&p, &b).unwrap_err();
            assert_eq!(e.culprits(), vec![PartyIndex(from)], "{round:?}: {e}");
        }
    }

    #[test]
    fn a_changed_consistency_combination_in_the_transcript_is_blamed_on_its_sender() {
        let (p, run) = generated();
        // n = 3, t = 2: each M4 broadcast ends with 2n = 6 combination values (low at 1..3,
        // high at 1..3). Changing a low value breaks the degree-1 check; changing a high one
        // breaks the sharing of zero's constant.
        for (from, from_end) in [(2u16, 6usize), (3, 1), (1, 4)] {
            let mut b = run.broadcasts.clone();
            let i = b
                .iter()
                .rposition(|m| m.round == Round::ModulusShares && m.from == PartyIndex(from))
                .unwrap();
            let at = b[i].int_count_for_tests() - from_end;
            b[i].tweak_int_for_tests(at, 1);
            let e = replay(&p, &b).unwrap_err();
            assert_eq!(e.culprits(), vec![PartyIndex(from)], "{e}");
        }
    }

    #[test]
    fn a_wrong_opening_in_the_transcript_is_blamed_on_its_sender() {
        let (p, run) = generated();
        let mut b = run.broadcasts.clone();
        let i = b
            .iter()
            .position(|m| m.round == Round::BiprimeReveal && m.from == PartyIndex(2))
            .unwrap();
        b[i].tweak_int_for_tests(0, 1);
        let e = replay(&p, &b).unwrap_err();
        assert_eq!(e.culprits(), vec![PartyIndex(2)], "{e}");
    }
}

mod hostile_input {
    use super::*;
    use medtech_threshold::dkg::Party;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Party 1's complete first-round inbox with party 2's message structurally damaged
        /// (values missing, another round or batch, another session, another recipient, a
        /// duplicate): the round is refused and party 2 named — never a panic, never a step.
        #[test]
        fn a_damaged_message_is_refused_and_its_sender_named(kind in 0u8..6, k in 1usize..5, seed in any::<u64>()) {
            let p = Parameters::new(512, 3, 2, [7; 32]).unwrap().with_batch(4).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut inbox = Vec::new();
            let mut digests = Vec::new();
            let mut me = None;
            for i in 1..=3u16 {
                let (party, out) = Party::new(&p, PartyIndex(i), &mut rng).unwrap();
                inbox.extend(out.direct.into_iter().filter(|m| m.to == Some(PartyIndex(1))));
                digests.extend(out.broadcast);
                if i == 1 {
                    me = Some(party);
                }
            }
            inbox.extend(digests);
            let at = inbox.iter().position(|m| m.from == PartyIndex(2)).unwrap();
            match kind {
                0 => for _ in 0..k { inbox[at].truncate_for_tests(); },
                1 => inbox[at].round = Round::GcdShares,
                2 => inbox[at].batch = k as u32,
                3 => inbox[at].session = [k as u8; 32],
                4 => inbox[at].to = Some(PartyIndex(3)),
                _ => { let d = inbox[at].clone(); inbox.push(d); }
            }
            let wire: Vec<Vec<u8>> = inbox.iter().map(Message::to_bytes).collect();
            let inbox: Vec<Message> = wire.iter().map(|w| Message::from_bytes(w).unwrap()).collect();
            let e = me.unwrap().receive(inbox, &mut rng).unwrap_err();
            prop_assert_eq!(e.culprits(), vec![PartyIndex(2)], "{}", e);
        }
    }
}

/// Issue 25, break 2b: a party opens a first-repetition value (M5b) other than the one it
/// committed to in M5a — as a rushing party that adapts to the others' values must. The opening
/// is refused and its sender named; before M5a existed the altered value was simply used.
#[test]
fn first_repetition_opening_mismatch_is_named() {
    let mut done = false;
    let mut hook = |m: &mut Message| {
        if m.round == Round::BiprimeFirst && m.from == PartyIndex(2) && m.to.is_none() && !done {
            m.tweak_int_for_tests(0, 1);
            done = true;
        }
    };
    let e = run_in_process(&params(3, 2), rngs(3, 25), Some(&mut hook)).unwrap_err();
    assert!(done, "the run reached the first biprimality repetition");
    assert!(
        matches!(&e, Error::Misbehaviour { party: PartyIndex(2), round: Round::BiprimeFirst, reason }
            if reason.contains("commitment")),
        "{e}"
    );
}

/// Issue 25, break 4: the repetitions meet the soundness target over a whole run, production
/// parameters cannot go below it (only the explicitly insecure test constructor can), and at
/// most `MAX_CERTIFIED` moduli of a batch enter the committed repetitions.
#[test]
fn biprime_soundness_parameters() {
    use medtech_threshold::dkg::{
        DEFAULT_BIPRIME_REPS, MAX_BATCHES, MAX_CERTIFIED, SOUNDNESS_BITS,
    };
    assert_eq!(
        (
            DEFAULT_BIPRIME_REPS,
            MAX_BATCHES,
            MAX_CERTIFIED,
            SOUNDNESS_BITS
        ),
        (150, 64, 4, 128)
    );
    // 4096-bit moduli are refused: their key-stage integers do not fit the Pedersen group
    // twice over (docs/dkg.md, "Break 1 closed").
    assert!(Parameters::new(4096, 5, 3, [1; 32]).is_err());
    for bits in [512u32, 1024, 2048, 3072] {
        let p = Parameters::new(bits, 5, 3, [1; 32]).unwrap();
        // r ≥ 128 + log2(B_max · max tested moduli per run), a run testing at most one modulus
        // per candidate of each of its B_max batches.
        let tested = f64::from(MAX_BATCHES) * p.batch() as f64;
        assert!(
            f64::from(p.biprime_reps()) >= f64::from(SOUNDNESS_BITS) + tested.log2(),
            "{bits} bits: {} repetitions, batches of {}",
            p.biprime_reps(),
            p.batch()
        );
        assert!(p.soundness_bits() >= SOUNDNESS_BITS);
        assert!(p.clone().with_biprime_reps(64).is_err(), "64 reps refused");
        assert!(
            p.clone().with_batch(1 << 20).is_err(),
            "2^26 tested moduli need 154 reps"
        );
        assert!(p.clone().insecure_with_biprime_reps_for_tests(8).is_ok());
    }
    // A run's committed stage: the M7 openings hold at most MAX_CERTIFIED moduli' repetitions.
    let p = params(3, 2);
    let run = run_in_process(&p, rngs(3, 26), None).unwrap();
    let reveals: Vec<&Message> = run
        .broadcasts
        .iter()
        .filter(|m| m.round == Round::BiprimeReveal)
        .collect();
    assert!(!reveals.is_empty());
    for m in reveals {
        let per = p.biprime_reps() as usize - 1;
        assert!(m.int_count_for_tests() <= MAX_CERTIFIED * per);
    }
}

/// Issue 25, break 4: batches are capped. With one candidate per batch an honest run almost
/// surely finds no modulus in `MAX_BATCHES` batches (≈ 1/7,900 succeed at 512 bits): it ends
/// with `KeyGenerationFailed` and no key after exactly `MAX_BATCHES` batches. Before the cap the run went on without end (the hook stops
/// it at batch 80).
#[test]
fn batch_cap_aborts() {
    use medtech_threshold::dkg::MAX_BATCHES;
    let p = Parameters::new(512, 3, 2, [9; 32])
        .unwrap()
        .with_batch(1)
        .unwrap();
    let mut last_batch = 0u32;
    let mut hook = |m: &mut Message| {
        last_batch = last_batch.max(m.batch);
        assert!(
            m.batch < 80,
            "batch {}: the batches were not capped",
            m.batch
        );
    };
    let e = run_in_process(&p, rngs(3, 27), Some(&mut hook)).unwrap_err();
    assert!(matches!(&e, Error::KeyGenerationFailed(_)), "{e}");
    assert_eq!(
        last_batch,
        MAX_BATCHES - 1,
        "exactly MAX_BATCHES batches ran"
    );
}

/// `verify` names the party the live run names: an M5b opening in a transcript that does not
/// match its M5a commitment is blamed on its sender; a transcript that runs past the batch cap
/// is refused as a failed generation.
#[test]
fn replay_names_a_first_repetition_opening_mismatch_and_refuses_past_the_cap() {
    use medtech_threshold::dkg::verify::replay;
    use medtech_threshold::dkg::MAX_BATCHES;
    let p = params(3, 2);
    let run = run_in_process(&p, rngs(3, 28), None).unwrap();
    assert_eq!(replay(&p, &run.broadcasts).unwrap().key, run.outputs[0].key);
    let mut b = run.broadcasts.clone();
    let i = b
        .iter()
        .rposition(|m| m.round == Round::BiprimeFirst && m.from == PartyIndex(2))
        .unwrap();
    b[i].tweak_int_for_tests(0, 1);
    let e = replay(&p, &b).unwrap_err();
    assert!(
        matches!(&e, Error::Misbehaviour { party: PartyIndex(2), round: Round::BiprimeFirst, reason }
            if reason.contains("commitment")),
        "{e}"
    );
    let mut b = run.broadcasts.clone();
    let mut late = b[0].clone();
    late.batch = MAX_BATCHES;
    b.push(late);
    let e = replay(&p, &b).unwrap_err();
    assert!(matches!(&e, Error::KeyGenerationFailed(_)), "{e}");
}
