//! Decoders of outside bytes: hostile input gets an error, never a panic, and valid encodings
//! round-trip exactly. (The cargo-fuzz targets in fuzz/ drive the same decoders harder.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, rng};
use medtech_threshold::{
    Ciphertext, Error, KeyShare, PartialDecryption, Plaintext, PublicKey, RangeProof, SlotLayout,
    ThresholdPublicKey,
};
use proptest::prelude::*;

fn decode_all(bytes: &[u8]) {
    let key = &fixture().key;
    let pk = key.public_key();
    let _ = PublicKey::from_bytes(bytes);
    let _ = ThresholdPublicKey::from_bytes(bytes);
    let _ = Ciphertext::from_bytes(pk, bytes);
    let _ = PartialDecryption::from_bytes(key, bytes);
    let _ = RangeProof::from_bytes(pk, bytes);
    let _ = KeyShare::from_secret_bytes(bytes, key);
}

fn valid_encodings() -> Vec<Vec<u8>> {
    let f = fixture();
    let pk = f.key.public_key();
    let mut r = rng(1);
    let c = pk.encrypt(&Plaintext::from_i64(5), &mut r).unwrap();
    let p = f.shares[0]
        .partial_decrypt(&f.key, b"q", &c, &mut r)
        .unwrap();
    let layout = SlotLayout::new(pk, 40, 1).unwrap();
    let (_, rp) = pk.encrypt_in_range(layout, &[1], 10, b"q", &mut r).unwrap();
    vec![
        pk.to_bytes(),
        f.key.to_bytes(),
        c.to_bytes(),
        p.to_bytes(),
        rp.to_bytes(),
        f.shares[0].to_secret_bytes().to_vec(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        decode_all(&bytes);
        let mut framed = b"MTC".to_vec();
        framed.extend_from_slice(&bytes);
        decode_all(&framed);
    }

    #[test]
    fn mutated_valid_encodings_never_panic(which in 0usize..6, pos in any::<usize>(), val in any::<u8>(), cut in any::<bool>()) {
        let mut bytes = valid_encodings().swap_remove(which);
        let pos = pos % bytes.len();
        if cut { bytes.truncate(pos) } else { bytes[pos] = val }
        decode_all(&bytes);
    }
}

#[test]
fn valid_encodings_round_trip() {
    let f = fixture();
    let pk = f.key.public_key();
    assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap(), *pk);
    assert_eq!(
        ThresholdPublicKey::from_bytes(&f.key.to_bytes()).unwrap(),
        f.key
    );
    let c = pk.encrypt(&Plaintext::from_i64(5), &mut rng(2)).unwrap();
    assert_eq!(Ciphertext::from_bytes(pk, &c.to_bytes()).unwrap(), c);
    let p = f.shares[1]
        .partial_decrypt(&f.key, b"q", &c, &mut rng(3))
        .unwrap();
    assert_eq!(
        PartialDecryption::from_bytes(&f.key, &p.to_bytes()).unwrap(),
        p
    );
    // serde (JSON) goes through the canonical bytes as hex.
    let json = serde_json::to_string(&f.key).unwrap();
    let back: ThresholdPublicKey = serde_json::from_str(&json).unwrap();
    assert_eq!(back, f.key);
    assert!(serde_json::from_str::<ThresholdPublicKey>("\"zz\"").is_err());
    assert!(serde_json::from_str::<PublicKey>("\"4d544301\"").is_err());
}

#[test]
fn ciphertext_validation_refuses_non_units_and_unreduced_values() {
    let pk = fixture().key.public_key();
    let enc = |v: &[u8]| {
        let mut b = b"MTC\x04\x01".to_vec();
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v);
        b
    };
    assert!(
        matches!(
            Ciphertext::from_bytes(pk, &enc(&[])),
            Err(Error::Malformed { .. })
        ),
        "zero"
    );
    // N itself is not a unit mod N².
    assert!(Ciphertext::from_bytes(pk, &enc(&pk.modulus_bytes())).is_err());
    // N² + 1 is not reduced (and too long).
    let nn = {
        let n = pk.modulus_bytes();
        let mut v = vec![0u8; 2 * n.len() + 1];
        v[0] = 1;
        v
    };
    assert!(Ciphertext::from_bytes(pk, &enc(&nn)).is_err());
    // Non-canonical leading zero.
    assert!(Ciphertext::from_bytes(pk, &enc(&[0, 1])).is_err());
    // Wrong version is reported as such.
    let mut v2 = enc(&[1]);
    v2[4] = 2;
    assert!(matches!(
        Ciphertext::from_bytes(pk, &v2),
        Err(Error::UnsupportedVersion { found: 2, .. })
    ));
}

#[test]
fn public_keys_with_small_factors_or_wrong_sizes_are_refused() {
    assert!(
        PublicKey::from_modulus_bytes(&[0xff; 32]).is_err(),
        "256-bit"
    );
    let mut even = vec![0xffu8; 64];
    even[63] = 0xfe;
    assert!(PublicKey::from_modulus_bytes(&even).is_err(), "even");
    let mut three = vec![0u8; 64];
    three[0] = 0xc0;
    three[63] = 0x03; // 0xc0…03 = 3·(…) ? at least divisible by 3: (0xc0·2^504 + 3) mod 3 = 0
    assert!(PublicKey::from_modulus_bytes(&three).is_err());
}

/// Writes one valid encoding per decoder into `fuzz/seeds/decode_threshold/`, each prefixed with
/// the fuzz target's selector byte, so the fuzzer starts past the header checks.
#[test]
#[ignore = "writes the fuzz seed corpus; run deliberately"]
fn write_fuzz_seeds() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/seeds/decode_threshold"
    );
    std::fs::create_dir_all(dir).unwrap();
    // Selector order of the fuzz target: 0 public key, 1 threshold key, 2 ciphertext,
    // 3 partial decryption, 4 range proof, 5 key share — the order of valid_encodings().
    for (sel, bytes) in valid_encodings().into_iter().enumerate() {
        let mut data = vec![sel as u8];
        data.extend_from_slice(&bytes);
        std::fs::write(format!("{dir}/seed-{sel}"), data).unwrap();
    }
}
