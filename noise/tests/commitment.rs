//! Noise shares travel encrypted, bound to their query and member, and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use medtech_noise::commitment::{encrypt_shares, verify_shares, SHARE_BOUND, SHARE_BOUNDS};

/// The widest bound, which the tests below that are not about bounds use.
const B: u64 = SHARE_BOUND;
use medtech_noise::{Committee, Mechanism, Micros, ShareSpec};
use medtech_threshold::{dealer, KeyShare, PartyIndex, SlotLayout, ThresholdPublicKey};
use rand_core::OsRng;

fn key() -> &'static (ThresholdPublicKey, Vec<KeyShare>) {
    static K: OnceLock<(ThresholdPublicKey, Vec<KeyShare>)> = OnceLock::new();
    K.get_or_init(|| dealer::insecure_generate_from_seed(512, 5, 3, 77).unwrap())
}

fn decrypt(c: &medtech_threshold::Ciphertext) -> medtech_threshold::Plaintext {
    let (key, shares) = key();
    let ps: Vec<_> = shares[..3]
        .iter()
        .map(|s| s.partial_decrypt(key, b"t", c, &mut OsRng).unwrap())
        .collect();
    key.combine_partials(b"t", c, &ps)
        .unwrap()
        .decryption
        .plaintext
}

#[test]
fn honest_shares_verify_and_add_exactly_to_the_aggregate() {
    let (key, _) = key();
    let pk = key.public_key();
    let layout = SlotLayout::new(pk, 48, 4).unwrap();
    let spec = ShareSpec::new(
        Mechanism::DiscreteLaplace {
            epsilon: Micros(200_000),
        },
        1,
        Committee::new(5, 3).unwrap(),
    )
    .unwrap();
    let counts = [10i64, 0, 250, 7];
    let mut agg = pk.encrypt_packed(layout, &counts, &mut OsRng).unwrap();
    let mut expected: Vec<i64> = counts.to_vec();
    for member in 1..=3u16 {
        let shares: Vec<i128> = (0..4)
            .map(|_| spec.sample_share(&mut OsRng).unwrap())
            .collect();
        let bound = spec.share_bound().unwrap();
        let (ct, proof) = encrypt_shares(
            pk,
            layout,
            &shares,
            bound,
            b"query-7",
            PartyIndex(member),
            &mut OsRng,
        )
        .unwrap();
        let noise = verify_shares(
            pk,
            layout,
            bound,
            b"query-7",
            PartyIndex(member),
            &ct,
            &proof,
        )
        .unwrap();
        assert_eq!(noise.bound(), u128::from(bound));
        agg = agg.add(pk, &noise).unwrap();
        for (e, s) in expected.iter_mut().zip(&shares) {
            *e += *s as i64;
        }
    }
    assert_eq!(agg.decode(&decrypt(agg.ciphertext())).unwrap(), expected);
}

#[test]
fn noise_share_replayed_into_another_query_is_rejected() {
    let pk = key().0.public_key();
    let layout = SlotLayout::new(pk, 48, 2).unwrap();
    let (ct, proof) = encrypt_shares(
        pk,
        layout,
        &[3, -4],
        B,
        b"query-1",
        PartyIndex(2),
        &mut OsRng,
    )
    .unwrap();
    assert!(verify_shares(pk, layout, B, b"query-1", PartyIndex(2), &ct, &proof).is_ok());
    assert!(verify_shares(pk, layout, B, b"query-2", PartyIndex(2), &ct, &proof).is_err());
}

#[test]
fn noise_share_retargeted_to_another_member_is_rejected() {
    let pk = key().0.public_key();
    let layout = SlotLayout::new(pk, 48, 1).unwrap();
    let (ct, proof) =
        encrypt_shares(pk, layout, &[-9], B, b"q", PartyIndex(1), &mut OsRng).unwrap();
    assert!(verify_shares(pk, layout, B, b"q", PartyIndex(4), &ct, &proof).is_err());
}

#[test]
fn oversized_noise_share_cannot_be_committed() {
    let pk = key().0.public_key();
    let layout = SlotLayout::new(pk, 48, 1).unwrap();
    assert!(encrypt_shares(
        pk,
        layout,
        &[i128::from(SHARE_BOUND) + 1],
        SHARE_BOUND,
        b"q",
        PartyIndex(1),
        &mut OsRng
    )
    .is_err());
    assert!(encrypt_shares(
        pk,
        layout,
        &[-i128::from(SHARE_BOUND)],
        SHARE_BOUND,
        b"q",
        PartyIndex(1),
        &mut OsRng
    )
    .is_ok());
}

#[test]
fn a_share_proven_under_a_wider_bound_than_the_query_allows_is_rejected() {
    // A member that wants more noise room than the calibration gives (to drown a result) proves
    // its share under 2^31 for a query whose bound is 2^7: the verifier uses the query's bound.
    let pk = key().0.public_key();
    let layout = SlotLayout::new(pk, 48, 1).unwrap();
    let (ct, proof) = encrypt_shares(
        pk,
        layout,
        &[1000],
        1 << 31,
        b"q",
        PartyIndex(1),
        &mut OsRng,
    )
    .unwrap();
    assert!(verify_shares(pk, layout, 1 << 31, b"q", PartyIndex(1), &ct, &proof).is_ok());
    for narrow in [1 << 7, 1 << 15] {
        assert!(verify_shares(pk, layout, narrow, b"q", PartyIndex(1), &ct, &proof).is_err());
    }
    // And the other way round: a narrow proof is no proof for a wider statement.
    let (ct, proof) =
        encrypt_shares(pk, layout, &[5], 1 << 7, b"q", PartyIndex(1), &mut OsRng).unwrap();
    assert!(verify_shares(pk, layout, 1 << 15, b"q", PartyIndex(1), &ct, &proof).is_err());
}

#[test]
fn every_bound_holds_exactly_its_range_and_no_other_bound_is_accepted() {
    let pk = key().0.public_key();
    let layout = SlotLayout::new(pk, 48, 2).unwrap();
    for b in SHARE_BOUNDS {
        let edge = [-(b as i128), b as i128 - 1];
        let (ct, proof) =
            encrypt_shares(pk, layout, &edge, b, b"q", PartyIndex(3), &mut OsRng).unwrap();
        let packed = verify_shares(pk, layout, b, b"q", PartyIndex(3), &ct, &proof).unwrap();
        assert_eq!(packed.bound(), u128::from(b));
        for outside in [[-(b as i128) - 1, 0], [0, b as i128]] {
            assert!(
                encrypt_shares(pk, layout, &outside, b, b"q", PartyIndex(3), &mut OsRng).is_err()
            );
        }
    }
    for unsupported in [0, 1, 1000, 1 << 8, (1 << 31) + 1, 1 << 32] {
        assert!(encrypt_shares(
            pk,
            layout,
            &[0, 0],
            unsupported,
            b"q",
            PartyIndex(3),
            &mut OsRng
        )
        .is_err());
    }
}
