//! Threshold decryption: correctness for every t-subset, and the attacks it must stop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, rng};
use medtech_threshold::{Error, PartialDecryption, PartyIndex, Plaintext};
use proptest::prelude::*;

fn partials(
    ctx: &[u8],
    c: &medtech_threshold::Ciphertext,
    who: &[usize],
) -> Vec<PartialDecryption> {
    let f = fixture();
    let mut r = rng(99);
    who.iter()
        .map(|&i| f.shares[i].partial_decrypt(&f.key, ctx, c, &mut r).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    #[test]
    fn any_t_subset_decrypts_any_message(m in any::<i64>(), subset in proptest::sample::subsequence(vec![0usize, 1, 2, 3, 4], 3)) {
        let f = fixture();
        let pk = f.key.public_key();
        let c = pk.encrypt(&Plaintext::from_i64(m), &mut rng(m as u64)).unwrap();
        let ps = partials(b"ctx", &c, &subset);
        let out = f.key.combine_partials(b"ctx", &c, &ps).unwrap();
        prop_assert_eq!(out.decryption.plaintext, Plaintext::from_i64(m));
        prop_assert!(out.rejected.is_empty());
        let want: Vec<PartyIndex> = subset.iter().map(|&i| PartyIndex(i as u16 + 1)).collect();
        prop_assert_eq!(out.decryption.parties, want);
    }

    #[test]
    fn homomorphic_sum_and_scalar_decrypt(a in -1_000_000i64..1_000_000, b in -1_000_000i64..1_000_000, k in -1000i64..1000) {
        let f = fixture();
        let pk = f.key.public_key();
        let mut r = rng(1);
        let ca = pk.encrypt(&Plaintext::from_i64(a), &mut r).unwrap();
        let cb = pk.encrypt_textbook(&Plaintext::from_i64(b), &mut r).unwrap();
        // k·(a + b) − b + 7, rerandomized.
        let c = pk.mul_plain(&pk.add(&ca, &cb), &Plaintext::from_i64(k)).unwrap();
        let c = pk.sub(&c, &cb);
        let c = pk.add_plain(&c, &Plaintext::from_i64(7)).unwrap();
        let c = pk.rerandomize(&c, &mut r).unwrap();
        let ps = partials(b"h", &c, &[0, 2, 4]);
        let out = f.key.combine_partials(b"h", &c, &ps).unwrap();
        prop_assert_eq!(out.decryption.plaintext, Plaintext::from_i128(i128::from(k) * i128::from(a + b) - i128::from(b) + 7));
    }
}

#[test]
fn t_minus_1_partials_do_not_decrypt() {
    let f = fixture();
    let pk = f.key.public_key();
    let c = pk.encrypt(&Plaintext::from_i64(5), &mut rng(2)).unwrap();
    let ps = partials(b"q", &c, &[0, 1]);
    match f.key.combine_partials(b"q", &c, &ps) {
        Err(Error::NotEnoughPartials { have: 2, need: 3 }) => {}
        other => panic!("expected NotEnoughPartials, got {other:?}"),
    }
}

#[test]
fn tampered_partial_is_rejected_and_culprit_named() {
    let f = fixture();
    let pk = f.key.public_key();
    let c = pk.encrypt(&Plaintext::from_i64(1234), &mut rng(3)).unwrap();
    let mut ps = partials(b"q", &c, &[0, 1, 2, 3]);
    // Member #2 replaces its partial by a partial of another ciphertext (a wrong c_i that is
    // still a unit), keeping its old proof.
    let other = pk.encrypt(&Plaintext::from_i64(1), &mut rng(4)).unwrap();
    let forged = partials(b"q", &other, &[1]).remove(0);
    // Re-encode: same index and proof, forged c_i.
    let mixed = splice_ci(&ps[1], &forged);
    ps[1] = PartialDecryption::from_bytes(&f.key, &mixed).unwrap();
    let err = f.key.verify_partial(b"q", &c, &ps[1]).unwrap_err();
    assert_eq!(err.culprits(), vec![PartyIndex(2)]);
    let out = f.key.combine_partials(b"q", &c, &ps).unwrap();
    assert_eq!(out.decryption.plaintext, Plaintext::from_i64(1234));
    assert_eq!(
        out.decryption.parties,
        vec![PartyIndex(1), PartyIndex(3), PartyIndex(4)]
    );
    assert_eq!(out.rejected.len(), 1);
    assert_eq!(out.rejected[0].culprits(), vec![PartyIndex(2)]);
}

/// Takes `proof_from`'s index and proof and `ci_from`'s c_i (encoding: header 5, u16 index,
/// len-prefixed c_i, u128 e, len-prefixed z).
fn splice_ci(proof_from: &PartialDecryption, ci_from: &PartialDecryption) -> Vec<u8> {
    let a = proof_from.to_bytes();
    let b = ci_from.to_bytes();
    let ci_len = |v: &[u8]| u32::from_be_bytes([v[7], v[8], v[9], v[10]]) as usize;
    let (la, lb) = (ci_len(&a), ci_len(&b));
    let mut out = a[..7].to_vec();
    out.extend_from_slice(&b[7..11 + lb]);
    out.extend_from_slice(&a[11 + la..]);
    out
}

#[test]
fn partial_replayed_into_another_query_is_rejected() {
    let f = fixture();
    let pk = f.key.public_key();
    let c = pk.encrypt(&Plaintext::from_i64(77), &mut rng(5)).unwrap();
    let ps = partials(b"query-1", &c, &[0, 1, 2]);
    for p in &ps {
        let err = f.key.verify_partial(b"query-2", &c, p).unwrap_err();
        assert_eq!(err.culprits(), vec![p.party()]);
    }
}

#[test]
fn partial_for_another_ciphertext_is_rejected() {
    let f = fixture();
    let pk = f.key.public_key();
    let c1 = pk.encrypt(&Plaintext::from_i64(1), &mut rng(6)).unwrap();
    let c2 = pk.encrypt(&Plaintext::from_i64(1), &mut rng(7)).unwrap();
    let p = partials(b"q", &c1, &[3]).remove(0);
    assert!(matches!(
        f.key.verify_partial(b"q", &c2, &p),
        Err(Error::InvalidPartial {
            party: PartyIndex(4),
            ..
        })
    ));
}

#[test]
fn partial_relabelled_as_another_member_is_rejected() {
    let f = fixture();
    let pk = f.key.public_key();
    let c = pk.encrypt(&Plaintext::from_i64(9), &mut rng(8)).unwrap();
    let p = partials(b"q", &c, &[0]).remove(0);
    let mut bytes = p.to_bytes();
    bytes[6] = 2; // index #1 -> #2
    let relabelled = PartialDecryption::from_bytes(&f.key, &bytes).unwrap();
    let err = f.key.verify_partial(b"q", &c, &relabelled).unwrap_err();
    assert_eq!(err.culprits(), vec![PartyIndex(2)]);
}

#[test]
fn duplicate_partials_are_refused_and_named() {
    let f = fixture();
    let pk = f.key.public_key();
    let c = pk.encrypt(&Plaintext::from_i64(3), &mut rng(9)).unwrap();
    let ps = partials(b"q", &c, &[0, 0, 1]);
    let err = f.key.combine_partials(b"q", &c, &ps).unwrap_err();
    assert!(matches!(err, Error::NotEnoughPartials { have: 2, need: 3 }));
    let v: Vec<_> = ps
        .iter()
        .map(|p| f.key.verify_partial(b"q", &c, p).unwrap())
        .collect();
    assert_eq!(
        f.key.combine(b"q", &c, &v).unwrap_err(),
        Error::DuplicatePartial {
            party: PartyIndex(1)
        }
    );
}

#[test]
fn verified_partials_cannot_be_combined_for_another_ciphertext() {
    let f = fixture();
    let pk = f.key.public_key();
    let c1 = pk.encrypt(&Plaintext::from_i64(1), &mut rng(10)).unwrap();
    let c2 = pk.encrypt(&Plaintext::from_i64(2), &mut rng(11)).unwrap();
    let v: Vec<_> = partials(b"q", &c1, &[0, 1, 2])
        .iter()
        .map(|p| f.key.verify_partial(b"q", &c1, p).unwrap())
        .collect();
    assert!(matches!(
        f.key.combine(b"q", &c2, &v),
        Err(Error::Mismatch(_))
    ));
}

#[test]
fn share_of_another_key_is_refused() {
    let f = fixture();
    let (other_key, _) =
        medtech_threshold::dealer::insecure_generate_from_seed(512, 5, 3, 42).unwrap();
    let c = other_key
        .public_key()
        .encrypt(&Plaintext::from_i64(1), &mut rng(12))
        .unwrap();
    assert!(matches!(
        f.shares[0].partial_decrypt(&other_key, b"q", &c, &mut rng(13)),
        Err(Error::Mismatch(_))
    ));
}

#[test]
fn key_share_round_trips_and_is_redacted() {
    let f = fixture();
    let s = &f.shares[2];
    let bytes = s.to_secret_bytes();
    let back = medtech_threshold::KeyShare::from_secret_bytes(&bytes, &f.key).unwrap();
    assert_eq!(back.index(), PartyIndex(3));
    let dbg = format!("{back:?}");
    assert!(dbg.contains("redacted"), "{dbg}");
    // And the round-tripped share still decrypts with two others.
    let pk = f.key.public_key();
    let c = pk.encrypt(&Plaintext::from_i64(-8), &mut rng(14)).unwrap();
    let mut r = rng(15);
    let ps = vec![
        back.partial_decrypt(&f.key, b"q", &c, &mut r).unwrap(),
        f.shares[0]
            .partial_decrypt(&f.key, b"q", &c, &mut r)
            .unwrap(),
        f.shares[4]
            .partial_decrypt(&f.key, b"q", &c, &mut r)
            .unwrap(),
    ];
    assert_eq!(
        f.key
            .combine_partials(b"q", &c, &ps)
            .unwrap()
            .decryption
            .plaintext,
        Plaintext::from_i64(-8)
    );
}

#[test]
fn extreme_plaintexts_round_trip_and_overlarge_are_refused() {
    let f = fixture();
    let pk = f.key.public_key();
    for m in [i128::MAX, i128::MIN + 1, 0, -1] {
        let c = pk.encrypt(&Plaintext::from_i128(m), &mut rng(16)).unwrap();
        let ps = partials(b"q", &c, &[1, 2, 3]);
        assert_eq!(
            f.key
                .combine_partials(b"q", &c, &ps)
                .unwrap()
                .decryption
                .plaintext
                .to_i128(),
            Some(m)
        );
    }
    // A 64-bit slot holds |v| ≤ 2^63 − 1: i64::MIN does not fit and is refused at encode.
    let big = medtech_threshold::SlotLayout::new(pk, 64, 7).unwrap();
    assert!(big.encode(&[i64::MAX; 7]).is_ok());
    assert!(matches!(
        big.encode(&[i64::MIN; 7]),
        Err(Error::SlotOverflow { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Flip any bit of a valid partial decryption after the header: it must fail to decode or
    /// fail verification, and the failure must name the member the bytes claim to come from.
    #[test]
    fn tweaked_partial_decryption_fails(pos in 5usize..10_000, bit in 0u8..8) {
        let f = fixture();
        let pk = f.key.public_key();
        let c = pk.encrypt(&Plaintext::from_i64(11), &mut rng(30)).unwrap();
        let p = partials(b"q", &c, &[2]).remove(0);
        let mut bytes = p.to_bytes();
        let pos = 5 + pos % (bytes.len() - 5);
        bytes[pos] ^= 1 << bit;
        if let Ok(t) = PartialDecryption::from_bytes(&f.key, &bytes) {
            let err = f.key.verify_partial(b"q", &c, &t).unwrap_err();
            prop_assert_eq!(err.culprits(), vec![t.party()]);
        }
    }
}
