//! Known-answer vectors: a fixed 512-bit 3-of-5 key (from the insecure seeded dealer), fixed
//! DJN encryptions, partial decryptions and their combination, checked byte for byte.
//!
//! The vectors are in `tests/vectors/kat_512.json`. They pin the encodings, the hashed DJN base,
//! the dealer, encryption, partial decryption and combination; any change to those must be
//! deliberate: regenerate with
//! `cargo test -p medtech-threshold --test known_answers -- --ignored regenerate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_threshold::{
    dealer, Ciphertext, KeyShare, PartialDecryption, Plaintext, ThresholdPublicKey,
};
use serde::{Deserialize, Serialize};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/kat_512.json");
const SEED: u64 = 20261123;

#[derive(Serialize, Deserialize)]
struct Kat {
    comment: String,
    seed: u64,
    threshold_key: String,
    key_fingerprint: String,
    shares: Vec<String>,
    encryptions: Vec<EncVector>,
    decryption: DecVector,
}

#[derive(Serialize, Deserialize)]
struct EncVector {
    plaintext: i64,
    nonce: String,
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct DecVector {
    context: String,
    ciphertext: String,
    partials: Vec<String>,
    plaintext: i64,
}

fn make() -> Kat {
    let (key, shares) = dealer::insecure_generate_from_seed(512, 5, 3, SEED).unwrap();
    let pk = key.public_key();
    let encryptions: Vec<EncVector> = [
        (0i64, "01"),
        (1, "02"),
        (-1, "ff"),
        (123_456_789, "0123456789abcdef"),
    ]
    .iter()
    .map(|(m, nonce)| EncVector {
        plaintext: *m,
        nonce: nonce.to_string(),
        ciphertext: hex::encode(
            pk.insecure_encrypt_with_nonce(&Plaintext::from_i64(*m), &hex::decode(nonce).unwrap())
                .unwrap()
                .to_bytes(),
        ),
    })
    .collect();
    let c = Ciphertext::from_bytes(pk, &hex::decode(&encryptions[3].ciphertext).unwrap()).unwrap();
    let mut rng = rand_core::OsRng;
    let partials = [0usize, 2, 4]
        .iter()
        .map(|&i| {
            hex::encode(
                shares[i]
                    .partial_decrypt(&key, b"kat/query-1", &c, &mut rng)
                    .unwrap()
                    .to_bytes(),
            )
        })
        .collect();
    Kat {
        comment: "INSECURE test key: the shares are public. medtech-threshold known-answer vectors, format v1.".into(),
        seed: SEED,
        threshold_key: hex::encode(key.to_bytes()),
        key_fingerprint: hex::encode(key.fingerprint()),
        shares: shares.iter().map(|s| hex::encode(&*s.to_secret_bytes())).collect(),
        encryptions,
        decryption: DecVector {
            context: "kat/query-1".into(),
            ciphertext: encryptions_ct(&c),
            partials,
            plaintext: 123_456_789,
        },
    }
}

fn encryptions_ct(c: &Ciphertext) -> String {
    hex::encode(c.to_bytes())
}

#[test]
#[ignore = "writes the vector file; run deliberately"]
fn regenerate() {
    std::fs::write(PATH, serde_json::to_string_pretty(&make()).unwrap() + "\n").unwrap();
}

fn load() -> Kat {
    serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap()
}

#[test]
fn key_decodes_and_dealer_is_deterministic() {
    let kat = load();
    let key = ThresholdPublicKey::from_bytes(&hex::decode(&kat.threshold_key).unwrap()).unwrap();
    assert_eq!(hex::encode(key.fingerprint()), kat.key_fingerprint);
    let (again, _) = dealer::insecure_generate_from_seed(512, 5, 3, kat.seed).unwrap();
    assert_eq!(again, key, "seeded dealer output changed");
    for (i, s) in kat.shares.iter().enumerate() {
        let share = KeyShare::from_secret_bytes(&hex::decode(s).unwrap(), &key).unwrap();
        assert_eq!(usize::from(share.index().0), i + 1);
    }
}

#[test]
fn encryptions_match_vectors() {
    let kat = load();
    let key = ThresholdPublicKey::from_bytes(&hex::decode(&kat.threshold_key).unwrap()).unwrap();
    let pk = key.public_key();
    for v in &kat.encryptions {
        let c = pk
            .insecure_encrypt_with_nonce(
                &Plaintext::from_i64(v.plaintext),
                &hex::decode(&v.nonce).unwrap(),
            )
            .unwrap();
        assert_eq!(
            hex::encode(c.to_bytes()),
            v.ciphertext,
            "m = {}",
            v.plaintext
        );
    }
}

#[test]
fn stored_partials_verify_match_and_combine() {
    let kat = load();
    let key = ThresholdPublicKey::from_bytes(&hex::decode(&kat.threshold_key).unwrap()).unwrap();
    let pk = key.public_key();
    let d = &kat.decryption;
    let c = Ciphertext::from_bytes(pk, &hex::decode(&d.ciphertext).unwrap()).unwrap();
    let ctx = d.context.as_bytes();
    let partials: Vec<PartialDecryption> = d
        .partials
        .iter()
        .map(|p| PartialDecryption::from_bytes(&key, &hex::decode(p).unwrap()).unwrap())
        .collect();
    // c_i is deterministic: recomputing it from the stored share gives the same value.
    let mut rng = rand_core::OsRng;
    for p in &partials {
        let i = usize::from(p.party().0) - 1;
        let share =
            KeyShare::from_secret_bytes(&hex::decode(&kat.shares[i]).unwrap(), &key).unwrap();
        let fresh = share.partial_decrypt(&key, ctx, &c, &mut rng).unwrap();
        // Same c_i (bytes 5..7 index, then the c_i field); different proof nonce.
        let stored = p.to_bytes();
        let fresh = fresh.to_bytes();
        let len = u32::from_be_bytes(stored[7..11].try_into().unwrap()) as usize;
        assert_eq!(
            &stored[..11 + len],
            &fresh[..11 + len],
            "c_i of party {}",
            p.party()
        );
    }
    let out = key.combine_partials(ctx, &c, &partials).unwrap();
    assert!(out.rejected.is_empty());
    assert_eq!(out.decryption.plaintext, Plaintext::from_i64(d.plaintext));
}
