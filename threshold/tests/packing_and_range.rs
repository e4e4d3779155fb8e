//! Slot packing and contribution range proofs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, rng};
use medtech_threshold::{Error, PackedCiphertext, Plaintext, RangeProof, SlotLayout};
use proptest::prelude::*;

fn decrypt(c: &medtech_threshold::Ciphertext) -> Plaintext {
    let f = fixture();
    let mut r = rng(5);
    let ps: Vec<_> = f.shares[..3]
        .iter()
        .map(|s| s.partial_decrypt(&f.key, b"t", c, &mut r).unwrap())
        .collect();
    f.key
        .combine_partials(b"t", c, &ps)
        .unwrap()
        .decryption
        .plaintext
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn packed_slots_round_trip_in_plaintext(slot_bits in 2u32..=64, values in proptest::collection::vec(any::<i64>(), 1..8)) {
        let pk = fixture().key.public_key();
        let layout = SlotLayout::new(pk, slot_bits, values.len() as u32);
        prop_assume!(layout.is_ok());
        let layout = layout.unwrap();
        let max = layout.max_abs();
        let clipped: Vec<i64> = values.iter().map(|&v| {
            let m = i128::try_from(max).unwrap_or(i128::MAX);
            i128::from(v).clamp(-m, m) as i64
        }).collect();
        let p = layout.encode(&clipped).unwrap();
        prop_assert_eq!(layout.decode(&p).unwrap(), clipped);
    }

    #[test]
    fn packed_signed_sums_decrypt_exactly(a in proptest::collection::vec(-1000i64..1000, 10), b in proptest::collection::vec(-1000i64..1000, 10), noise in proptest::collection::vec(-50_000i64..50_000, 10)) {
        let pk = fixture().key.public_key();
        let layout = SlotLayout::new(pk, 20, 10).unwrap();
        let mut r = rng(7);
        let ca = pk.encrypt_packed(layout, &a, &mut r).unwrap();
        let cb = pk.encrypt_packed(layout, &b, &mut r).unwrap();
        let sum = ca.add(pk, &cb).unwrap().add_plain(pk, &noise).unwrap();
        let want: Vec<i64> = (0..10).map(|i| a[i] + b[i] + noise[i]).collect();
        prop_assert_eq!(sum.decode(&decrypt(sum.ciphertext())).unwrap(), want);
    }
}

#[test]
fn slot_overflow_is_refused_before_it_happens() {
    let pk = fixture().key.public_key();
    let layout = SlotLayout::new(pk, 8, 4).unwrap(); // |v| ≤ 127
    let mut r = rng(8);
    let c = pk
        .encrypt_packed(layout, &[100, 0, -100, 5], &mut r)
        .unwrap();
    assert_eq!(c.bound(), 100);
    let d = pk.encrypt_packed(layout, &[27, 0, 0, 0], &mut r).unwrap();
    let ok = c.add(pk, &d).unwrap();
    assert_eq!(ok.bound(), 127);
    assert!(matches!(ok.add(pk, &d), Err(Error::SlotOverflow { .. })));
    assert!(matches!(
        ok.add_plain(pk, &[0, 0, 1, 0]),
        Err(Error::SlotOverflow { .. })
    ));
    assert!(matches!(
        layout.encode(&[128, 0, 0, 0]),
        Err(Error::SlotOverflow { .. })
    ));
    assert!(layout.encode(&[1, 2, 3]).is_err(), "wrong number of values");
    assert!(matches!(
        PackedCiphertext::from_parts(c.ciphertext().clone(), layout, 128),
        Err(Error::SlotOverflow { .. })
    ));
}

#[test]
fn layouts_refuse_what_does_not_fit() {
    let pk = fixture().key.public_key();
    assert_eq!(SlotLayout::max_slots(pk, 40), 12); // (512 − 2) / 40
    assert!(SlotLayout::new(pk, 40, 13).is_err());
    assert!(SlotLayout::new(pk, 1, 1).is_err());
    assert!(SlotLayout::new(pk, 121, 1).is_err());
    assert!(SlotLayout::new(pk, 40, 0).is_err());
    let cover = SlotLayout::cover(pk, 40, 55).unwrap();
    assert_eq!(cover.len(), 5);
    assert_eq!(cover.iter().map(|l| l.slots()).sum::<u32>(), 55);
    assert!(SlotLayout::cover(pk, 40, 0).unwrap().is_empty());
}

#[test]
fn a_cover_spreads_counters_evenly_so_no_range_proof_pays_for_padding() {
    let pk = fixture().key.public_key();
    for count in 1..=60u32 {
        let cover = SlotLayout::cover(pk, 40, count).unwrap();
        let sizes: Vec<u32> = cover.iter().map(|l| l.slots()).collect();
        assert_eq!(sizes.iter().sum::<u32>(), count);
        assert_eq!(
            cover.len() as u32,
            count.div_ceil(12),
            "as few ciphertexts as fit"
        );
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(hi - lo <= 1, "{count}: {sizes:?}");
    }
}

#[test]
fn grouped_count_over_55_specialities_takes_two_ciphertexts_at_2048_bits() {
    // Layout arithmetic only, on a 2048-bit modulus without small factors (a prime will do):
    // 2046 usable bits / 40-bit slots = 51 slots per ciphertext.
    use curv::arithmetic::{Converter, One, Primes};
    let n = (curv::BigInt::one() << 2047usize) + (curv::BigInt::one() << 2046usize);
    let pk = medtech_threshold::PublicKey::from_modulus_bytes(&n.next_prime().to_bytes()).unwrap();
    assert_eq!(pk.bits(), 2048);
    assert_eq!(SlotLayout::max_slots(&pk, 40), 51);
    assert_eq!(SlotLayout::cover(&pk, 40, 55).unwrap().len(), 2);
    // The production layout (48-bit slots, 42 per ciphertext): 56 bins as 28 + 28.
    let sizes: Vec<u32> = SlotLayout::cover(&pk, 48, 56)
        .unwrap()
        .iter()
        .map(|l| l.slots())
        .collect();
    assert_eq!(sizes, [28, 28]);
}

#[test]
fn range_proof_accepts_values_in_range() {
    let pk = fixture().key.public_key();
    let mut r = rng(20);
    for (bound, values) in [
        (1u64, vec![0u64, 1, 1]),
        (255, vec![0, 255, 17]),
        (9999, vec![0, 9999, 5000]),
        ((1 << 32) - 1, vec![u64::from(u32::MAX), 0, 123_456_789]),
        (100, vec![100]),
    ] {
        let layout = SlotLayout::new(pk, 40, values.len() as u32).unwrap();
        let (ct, proof) = pk
            .encrypt_in_range(layout, &values, bound, b"q1/hospital-A", &mut r)
            .unwrap();
        let bytes = proof.to_bytes();
        let decoded = RangeProof::from_bytes(pk, &bytes).unwrap();
        let checked = pk
            .verify_range(layout, bound, b"q1/hospital-A", ct.ciphertext(), &decoded)
            .unwrap();
        assert_eq!(checked.bound(), u128::from(bound));
        let want: Vec<i64> = values.iter().map(|&v| v as i64).collect();
        assert_eq!(
            checked.decode(&decrypt(checked.ciphertext())).unwrap(),
            want
        );
    }
}

#[test]
fn out_of_range_value_cannot_be_proven() {
    let pk = fixture().key.public_key();
    let layout = SlotLayout::new(pk, 40, 2).unwrap();
    assert!(matches!(
        pk.encrypt_in_range(layout, &[5, 101], 100, b"q", &mut rng(21)),
        Err(Error::PlaintextOutOfRange(_))
    ));
    assert!(pk
        .encrypt_in_range(layout, &[5, 1], 1 << 32, b"q", &mut rng(21))
        .is_err());
}

#[test]
fn poisoned_aggregate_is_caught_by_the_range_proof() {
    // A hospital proves a valid contribution, then shifts the ciphertext by 10^6 (poisoning) and
    // posts the shifted ciphertext with the old proof.
    let pk = fixture().key.public_key();
    let layout = SlotLayout::new(pk, 40, 1).unwrap();
    let (ct, proof) = pk
        .encrypt_in_range(layout, &[7], 100, b"q", &mut rng(22))
        .unwrap();
    let poisoned = pk
        .add_plain(ct.ciphertext(), &Plaintext::from_i64(1_000_000))
        .unwrap();
    assert!(matches!(
        pk.verify_range(layout, 100, b"q", &poisoned, &proof),
        Err(Error::InvalidRangeProof { .. })
    ));
}

#[test]
fn range_proof_is_bound_to_context_bound_and_layout() {
    let pk = fixture().key.public_key();
    let layout = SlotLayout::new(pk, 40, 2).unwrap();
    let (ct, proof) = pk
        .encrypt_in_range(layout, &[3, 4], 100, b"query-1", &mut rng(23))
        .unwrap();
    let c = ct.ciphertext();
    assert!(pk.verify_range(layout, 100, b"query-1", c, &proof).is_ok());
    assert!(
        pk.verify_range(layout, 100, b"query-2", c, &proof).is_err(),
        "replayed into another query"
    );
    assert!(
        pk.verify_range(layout, 99, b"query-1", c, &proof).is_err(),
        "other bound"
    );
    let other = SlotLayout::new(pk, 41, 2).unwrap();
    assert!(
        pk.verify_range(other, 100, b"query-1", c, &proof).is_err(),
        "other layout"
    );
    let fewer = SlotLayout::new(pk, 40, 1).unwrap();
    assert!(
        pk.verify_range(fewer, 100, b"query-1", c, &proof).is_err(),
        "other slot count"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Tweak a valid proof anywhere after the header: it must fail to decode or to verify.
    #[test]
    fn tweaked_range_proof_fails(pos in 5usize..4000, bit in 0u8..8) {
        let pk = fixture().key.public_key();
        let layout = SlotLayout::new(pk, 40, 2).unwrap();
        let (ct, proof) = pk.encrypt_in_range(layout, &[3, 4], 1000, b"q", &mut rng(24)).unwrap();
        let mut bytes = proof.to_bytes();
        let pos = pos % bytes.len();
        prop_assume!(pos >= 5);
        bytes[pos] ^= 1 << bit;
        if let Ok(p) = RangeProof::from_bytes(pk, &bytes) {
            prop_assert!(pk.verify_range(layout, 1000, b"q", ct.ciphertext(), &p).is_err());
        }
    }
}

/// An Average's two 30-bit limbs committed separately but placed in one 96-bit slot: the
/// plaintext holds `lo + 2^30·hi`, never a limb, and the proof is bound to the placement.
const PLACED: [u32; 3] = [0, 30, 96];

#[test]
fn placed_limbs_share_one_wide_slot_and_decrypt_only_their_sum() {
    let pk = fixture().key.public_key();
    let layout = SlotLayout::new(pk, 96, 2).unwrap();
    let bound = u64::from(u32::MAX);
    let values = [(1u64 << 30) - 5, u64::from(u32::MAX), 42];
    let (ct, proof) = pk
        .encrypt_in_range_at(layout, &PLACED, &values, bound, b"q", &mut rng(30))
        .unwrap();
    let proof = RangeProof::from_bytes(pk, &proof.to_bytes()).unwrap();
    let checked = pk
        .verify_range_at(layout, &PLACED, bound, b"q", ct.ciphertext(), &proof)
        .unwrap();
    assert_eq!(checked.bound(), u128::from(bound) * ((1 << 30) + 1));
    assert_eq!(
        checked.decode_wide(&decrypt(checked.ciphertext())).unwrap(),
        vec![
            i128::from(values[0]) + (i128::from(values[1]) << 30),
            i128::from(values[2])
        ]
    );
    // The same ciphertext and proof do not pass as a uniform (one value per slot) statement.
    assert!(pk
        .verify_range(layout, bound, b"q", ct.ciphertext(), &proof)
        .is_err());
    // A placement whose slot could overflow is refused up front.
    assert!(pk
        .encrypt_in_range_at(layout, &[0, 70, 96], &values, bound, b"q", &mut rng(31))
        .is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// A valid placed proof checked against moved offsets (one changed, or two values' offsets
    /// exchanged by a prover who put `hi` where `lo` belongs), or against a ciphertext whose
    /// plaintext differs from the committed placement, fails.
    #[test]
    fn placed_range_proof_rejects_moved_offsets(
        which in 0usize..3,
        delta in 1u32..20,
        lo in 0u64..(1 << 30),
        hi in 0u64..(1 << 30),
    ) {
        let pk = fixture().key.public_key();
        let layout = SlotLayout::new(pk, 96, 2).unwrap();
        let bound = u64::from(u32::MAX);
        let values = [lo, hi, 7];
        let (ct, proof) = pk
            .encrypt_in_range_at(layout, &PLACED, &values, bound, b"q", &mut rng(32))
            .unwrap();
        let c = ct.ciphertext();
        prop_assert!(pk.verify_range_at(layout, &PLACED, bound, b"q", c, &proof).is_ok());
        // One offset moved (kept increasing and inside the layout).
        let mut moved = PLACED;
        moved[which] += delta;
        prop_assert!(pk.verify_range_at(layout, &moved, bound, b"q", c, &proof).is_err());
        // The limbs swapped: a ciphertext of `hi + 2^30·lo` with the proof of `lo`, `hi`.
        prop_assume!(lo != hi);
        let (swapped, _) = pk
            .encrypt_in_range_at(layout, &PLACED, &[hi, lo, 7], bound, b"q", &mut rng(33))
            .unwrap();
        prop_assert!(pk
            .verify_range_at(layout, &PLACED, bound, b"q", swapped.ciphertext(), &proof)
            .is_err());
        // A mismatched X: the ciphertext shifted by one unit of the high limb.
        let shifted = pk.add_plain(c, &Plaintext::from_i64(1 << 30)).unwrap();
        prop_assert!(pk
            .verify_range_at(layout, &PLACED, bound, b"q", &shifted, &proof)
            .is_err());
    }
}
