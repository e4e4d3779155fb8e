//! Noise shares travel encrypted, bound to their query and member, and bounded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use medtech_noise::commitment::{encrypt_shares, verify_shares, SHARE_BOUND};
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
        let (ct, proof) = encrypt_shares(
            pk,
            layout,
            &shares,
            b"query-7",
            PartyIndex(member),
            &mut OsRng,
        )
        .unwrap();
        let noise = verify_shares(pk, layout, b"query-7", PartyIndex(member), &ct, &proof).unwrap();
        assert_eq!(noise.bound(), u128::from(SHARE_BOUND));
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
    let (ct, proof) =
        encrypt_shares(pk, layout, &[3, -4], b"query-1", PartyIndex(2), &mut OsRng).unwrap();
    assert!(verify_shares(pk, layout, b"query-1", PartyIndex(2), &ct, &proof).is_ok());
    assert!(verify_shares(pk, layout, b"query-2", PartyIndex(2), &ct, &proof).is_err());
}

#[test]
fn noise_share_retargeted_to_another_member_is_rejected() {
    let pk = key().0.public_key();
    let layout = SlotLayout::new(pk, 48, 1).unwrap();
    let (ct, proof) = encrypt_shares(pk, layout, &[-9], b"q", PartyIndex(1), &mut OsRng).unwrap();
    assert!(verify_shares(pk, layout, b"q", PartyIndex(4), &ct, &proof).is_err());
}

#[test]
fn oversized_noise_share_cannot_be_committed() {
    let pk = key().0.public_key();
    let layout = SlotLayout::new(pk, 48, 1).unwrap();
    assert!(encrypt_shares(
        pk,
        layout,
        &[i128::from(SHARE_BOUND) + 1],
        b"q",
        PartyIndex(1),
        &mut OsRng
    )
    .is_err());
    assert!(encrypt_shares(
        pk,
        layout,
        &[-i128::from(SHARE_BOUND)],
        b"q",
        PartyIndex(1),
        &mut OsRng
    )
    .is_ok());
}
