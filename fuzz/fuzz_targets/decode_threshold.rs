//! Every decoder of outside bytes in medtech-threshold (keys, ciphertexts, partials, range
//! proofs, key shares, key-generation messages fed to a party), against a fixed small key: it must
//! return an error or a value, never panic, hang or allocate without bound. The first byte
//! picks the decoder.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use medtech_threshold::{
    dealer, Ciphertext, KeyShare, PartialDecryption, PublicKey, RangeProof, SlotLayout,
    ThresholdPublicKey,
};

fn key() -> &'static (ThresholdPublicKey, Vec<KeyShare>) {
    static K: OnceLock<(ThresholdPublicKey, Vec<KeyShare>)> = OnceLock::new();
    K.get_or_init(|| dealer::insecure_generate_from_seed(512, 5, 3, 1).expect("fixed key"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let (key, _) = key();
    let pk = key.public_key();
    match which % 7 {
        0 => drop(PublicKey::from_bytes(bytes)),
        1 => drop(ThresholdPublicKey::from_bytes(bytes)),
        2 => drop(Ciphertext::from_bytes(pk, bytes)),
        3 => {
            // Decode, then verify against a fixed ciphertext: verification of hostile partials
            // must not panic either.
            if let Ok(p) = PartialDecryption::from_bytes(key, bytes) {
                let c = Ciphertext::from_bytes(pk, &pk.to_bytes()).ok();
                if let Some(c) = c {
                    let _ = key.verify_partial(b"fuzz", &c, &p);
                }
            }
        }
        4 => {
            if let Ok(proof) = RangeProof::from_bytes(pk, bytes) {
                if let (Ok(layout), Ok(c)) = (
                    SlotLayout::new(pk, 40, 1),
                    pk.encrypt(&medtech_threshold::Plaintext::from_i64(1), &mut rand_core_os()),
                ) {
                    let _ = pk.verify_range(layout, 100, b"fuzz", &c, &proof);
                }
            }
        }
        5 => {
            // A key-generation message, decoded and then delivered to a party waiting for its
            // first round: hostile messages must give an error naming a sender, never a panic.
            if let Ok(m) = medtech_threshold::dkg::Message::from_bytes(bytes) {
                let params = medtech_threshold::dkg::Parameters::new(512, 3, 2, m.session)
                    .and_then(|p| p.with_batch(2));
                if let Ok(params) = params {
                    let mut rng = rand_core_os();
                    if let Ok((party, _)) = medtech_threshold::dkg::Party::new(
                        &params,
                        medtech_threshold::PartyIndex(1),
                        &mut rng,
                    ) {
                        let _ = party.receive(vec![m], &mut rng);
                    }
                }
            }
        }
        _ => drop(KeyShare::from_secret_bytes(bytes, key)),
    }
});

fn rand_core_os() -> impl rand_core::RngCore + rand_core::CryptoRng {
    rand_core::OsRng
}
