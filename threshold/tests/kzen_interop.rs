//! Interoperability with kzen-paillier (the library and format of the original's `encrypt`
//! tool): our encryptions decrypt with kzen keys, and kzen's encryptions decrypt with ours.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, rng};
use kzen_paillier::{
    Decrypt, Encrypt, EncryptionKey, KeyGeneration, Paillier, RawCiphertext, RawPlaintext,
};
use medtech_threshold::{Ciphertext, Plaintext, PublicKey};

#[test]
fn fast_encryption_decrypts_with_a_kzen_private_key() {
    let (ek, dk) = Paillier::keypair_with_modulus_size(1024).keys();
    let pk = PublicKey::from_kzen(&ek).unwrap();
    let mut r = rng(1);
    for m in [0u64, 1, 42, u64::MAX] {
        let c = pk.encrypt(&Plaintext::from_u64(m), &mut r).unwrap();
        let raw = RawCiphertext::from(curv_from_bytes(&c.to_bytes()[9..]));
        let out: RawPlaintext = Paillier::decrypt(&dk, raw);
        assert_eq!(curv_to_u64(&out.0), m);
    }
    let back: EncryptionKey = pk.to_kzen();
    assert_eq!(back.n, ek.n);
}

#[test]
fn kzen_ciphertexts_decrypt_with_the_threshold_key() {
    let f = fixture();
    let pk = f.key.public_key();
    let ek = pk.to_kzen();
    let raw: RawCiphertext =
        Paillier::encrypt(&ek, RawPlaintext::from(curv::BigInt::from(31337u64)));
    let mut bytes = b"MTC\x04\x01".to_vec();
    let mag = curv_to_bytes(&raw.0);
    bytes.extend_from_slice(&(mag.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&mag);
    let c = Ciphertext::from_bytes(pk, &bytes).unwrap();
    let mut r = rng(2);
    let ps: Vec<_> = f.shares[2..]
        .iter()
        .map(|s| s.partial_decrypt(&f.key, b"k", &c, &mut r).unwrap())
        .collect();
    let out = f.key.combine_partials(b"k", &c, &ps).unwrap();
    assert_eq!(out.decryption.plaintext, Plaintext::from_u64(31337));
}

fn curv_from_bytes(b: &[u8]) -> curv::BigInt {
    use curv::arithmetic::Converter;
    curv::BigInt::from_bytes(b)
}

fn curv_to_bytes(v: &curv::BigInt) -> Vec<u8> {
    use curv::arithmetic::Converter;
    v.to_bytes()
}

fn curv_to_u64(v: &curv::BigInt) -> u64 {
    let b = curv_to_bytes(v);
    let mut a = [0u8; 8];
    a[8 - b.len()..].copy_from_slice(&b);
    u64::from_be_bytes(a)
}
