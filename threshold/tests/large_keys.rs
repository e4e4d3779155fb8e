//! The production size: one 2048-bit 3-of-5 dealer key, end to end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_threshold::{dealer, Plaintext, SlotLayout};
use rand_core::OsRng;

#[test]
fn production_size_key_decrypts_packed_range_proved_contributions() {
    let mut rng = OsRng;
    let (key, shares) = dealer::generate(2048, 5, 3, &mut rng).unwrap();
    let pk = key.public_key();
    assert_eq!(pk.bits(), 2048, "exact-size modulus");
    // Two hospitals contribute a 51-slot histogram each, with range proofs.
    let layout = SlotLayout::new(pk, 40, 51).unwrap();
    let a: Vec<u64> = (0..51).map(|i| i * 3).collect();
    let b: Vec<u64> = (0..51).map(|i| 1000 - i).collect();
    let (ca, pa) = pk
        .encrypt_in_range(layout, &a, 1023, b"q/A", &mut rng)
        .unwrap();
    let (cb, pb) = pk
        .encrypt_in_range(layout, &b, 1023, b"q/B", &mut rng)
        .unwrap();
    let ca = pk
        .verify_range(layout, 1023, b"q/A", ca.ciphertext(), &pa)
        .unwrap();
    let cb = pk
        .verify_range(layout, 1023, b"q/B", cb.ciphertext(), &pb)
        .unwrap();
    let sum = ca.add(pk, &cb).unwrap();
    let ps: Vec<_> = [4usize, 0, 2]
        .iter()
        .map(|&i| {
            shares[i]
                .partial_decrypt(&key, b"q", sum.ciphertext(), &mut rng)
                .unwrap()
        })
        .collect();
    let out = key.combine_partials(b"q", sum.ciphertext(), &ps).unwrap();
    let want: Vec<i64> = a.iter().zip(&b).map(|(x, y)| (x + y) as i64).collect();
    assert_eq!(sum.decode(&out.decryption.plaintext).unwrap(), want);
    // And a plain signed value.
    let c = pk.encrypt(&Plaintext::from_i64(-42), &mut rng).unwrap();
    let ps: Vec<_> = shares[1..4]
        .iter()
        .map(|s| s.partial_decrypt(&key, b"q2", &c, &mut rng).unwrap())
        .collect();
    assert_eq!(
        key.combine_partials(b"q2", &c, &ps)
            .unwrap()
            .decryption
            .plaintext,
        Plaintext::from_i64(-42)
    );
}
