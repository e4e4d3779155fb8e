//! t − 1 colluding members (n = 5, t = 3: hospital-d and hospital-e) pool their key shares and
//! their noise. They cannot decrypt a hospital's contribution or an unreleased aggregate, they
//! cannot get the honest members to decrypt an aggregate with too little noise, and what they
//! can compute about a released result still carries the honest members' noise, distributed
//! as the calibration promises (checked statistically).
//!
//! These run the pure protocol ([`medtech_federation::sim`]: every member's real driver over
//! the real ledger rules and real cryptography, no network) so that many queries fit in CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use medtech_federation::data::generate::devices;
use medtech_federation::data::{Columns, Device};
use medtech_federation::protocol::{CommitteeView, NoiseMode, Outcome};
use medtech_federation::query::{Compiled, Platform, QueryKind, SLOT_BITS};
use medtech_federation::sim::SimCommittee;
use medtech_ledger::entry::Kind;
use medtech_noise::commitment::encrypt_shares;
use medtech_protos::ledger::v1 as pb;
use medtech_scenarios::harness::{polya_difference_pmf, query, values};
use medtech_threshold::{dealer, Ciphertext, KeyShare, SlotLayout};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};

const N: usize = 5;
const T: u16 = 3;
const COLLUDERS: [usize; 2] = [3, 4];
/// Grouped counts of 56 bins each: 224 noisy values.
const QUERIES: usize = 4;

fn names() -> Vec<String> {
    (0..N)
        .map(|i| format!("hospital-{}", (b'a' + i as u8) as char))
        .collect()
}

struct Setup {
    sim: SimCommittee,
    shares: Vec<KeyShare>,
    data: Vec<Vec<Device>>,
}

fn setup(seed: u64) -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (key, shares) = dealer::generate(512, N as u16, T, &mut rng).unwrap();
    let view = CommitteeView {
        members: names(),
        threshold: T,
        key: Arc::new(key),
        platform: Arc::new(Platform::new(&names())),
        close_tolerance: None,
    };
    let data: Vec<Vec<Device>> = names()
        .iter()
        .enumerate()
        .map(|(i, h)| devices(h, 0, 200 + 30 * i as u64, seed + i as u64))
        .collect();
    let cols = data.iter().map(|d| Columns::from_devices(d)).collect();
    // The colluders keep copies of their own key shares.
    let pooled = shares
        .iter()
        .map(|s| KeyShare::from_secret_bytes(&s.to_secret_bytes(), &view.key).unwrap())
        .collect();
    let mut sim = SimCommittee::new(view, shares, cols, NoiseMode::Calibrated, seed).unwrap();
    sim.register("alice", 50_000_000).unwrap();
    Setup {
        sim,
        shares: pooled,
        data,
    }
}

/// The colluders post valid noise shares of zero: they know their own noise exactly (it is
/// none), the worst case for the honest members.
fn colluders_add_no_noise(s: &mut Setup, compiled: Compiled) {
    let view = s.sim.view.clone();
    s.sim.tamper = Some(Box::new(move |who, k| match k {
        Kind::NoiseCommitment(n) if COLLUDERS.iter().any(|&i| view.members[i] == who) => {
            let pk = view.key.public_key();
            let party = view.party(who).unwrap();
            let layouts = SlotLayout::cover(pk, SLOT_BITS, compiled.slots() as u32).unwrap();
            let mut cts = Vec::new();
            let mut proofs = Vec::new();
            for layout in layouts {
                let zeros = vec![0i128; layout.slots() as usize];
                let (ct, proof) = encrypt_shares(
                    pk,
                    layout,
                    &zeros,
                    compiled.noise_bound().unwrap(),
                    n.query_id.as_bytes(),
                    party,
                    &mut OsRng,
                )
                .unwrap();
                cts.push(ct.to_bytes());
                proofs.push(proof.to_bytes());
            }
            let mut joined = Vec::new();
            for p in proofs {
                joined.extend_from_slice(&(p.len() as u32).to_be_bytes());
                joined.extend_from_slice(&p);
            }
            Some(Kind::NoiseCommitment(pb::NoiseCommitment {
                query_id: n.query_id,
                ciphertexts: cts,
                range_proof: joined,
            }))
        }
        k => Some(k),
    }));
}

#[test]
fn colluding_t_minus_1_members_cannot_remove_the_honest_noise_from_a_release() {
    let mut s = setup(11);
    let spec = query(QueryKind::GroupedCount, Some("speciality"));
    let compiled = Compiled::new(spec.clone(), &s.sim.view.platform, N as u16, T).unwrap();
    let all: Vec<Device> = s.data.iter().flatten().cloned().collect();
    let truth = compiled.evaluate(&Columns::from_devices(&all));
    let share_spec = compiled.plan.outputs[0].share;
    let q = share_spec.q().expect("discrete Laplace shares");
    colluders_add_no_noise(&mut s, compiled);
    // What the colluders can compute: the release minus the truth (which they may even know)
    // minus their own noise (zero) — the honest members' noise alone.
    let mut residuals: Vec<i128> = Vec::new();
    for _ in 0..QUERIES {
        let id = s.sim.submit("alice", &spec).unwrap();
        let Some(Outcome::Released(r)) = s.sim.run(&id, 100, 40) else {
            panic!("not released")
        };
        assert_eq!(
            r.noise_from.len(),
            N,
            "the colluders' zero shares are valid shares"
        );
        residuals.extend(values(&r).iter().zip(&truth).map(|(v, t)| v - t));
    }
    let samples = residuals.len() as f64;
    assert_eq!(residuals.len(), QUERIES * 56);
    eprintln!("q = {q:.3}");
    // The close lists all n shares, n − t + 1 = 3 of them honest, each the difference of two
    // Pólya(1/m, q) with m = n − f − t + 1 = 2 (default f = 1): their sum is exactly the
    // difference of two Pólya(3/m, q), at least the discrete Laplace(q) that ε promises.
    // Chi-square on |Z| in {0, 1, 2, 3, ≥ 4} (4 degrees of freedom).
    let m = share_spec.committee().honest_shares();
    let pmf = polya_difference_pmf(3.0 / f64::from(m), q);
    let mut expected: Vec<f64> = (0..4)
        .map(|k| if k == 0 { pmf(0) } else { 2.0 * pmf(k) })
        .collect();
    expected.push(1.0 - expected.iter().sum::<f64>());
    let mut observed = [0f64; 5];
    for r in &residuals {
        observed[(r.unsigned_abs() as usize).min(4)] += 1.0;
    }
    let chi2: f64 = observed
        .iter()
        .zip(&expected)
        .map(|(o, p)| (o - p * samples).powi(2) / (p * samples))
        .sum();
    // The 0.9999 quantile of χ²(4) is 23.51: a false alarm once in 10,000 runs.
    assert!(
        chi2 < 23.51,
        "residuals are not the calibrated noise: χ² = {chi2:.1}, observed {observed:?}, expected {:?}",
        expected.iter().map(|p| p * samples).collect::<Vec<_>>()
    );
    // And in particular not smaller: the variance is that of the 3 honest shares (the
    // sample variance of 224 discrete-Laplace values has a relative spread of about 15%;
    // the bounds are four of those away).
    let mean = residuals.iter().sum::<i128>() as f64 / samples;
    let var = residuals
        .iter()
        .map(|r| (*r as f64 - mean).powi(2))
        .sum::<f64>()
        / (samples - 1.0);
    let want = share_spec.variance(3);
    eprintln!("χ² = {chi2:.2} observed {observed:?}; variance {var:.2} of {want:.2}");
    assert!(
        var > 0.4 * want && var < 1.8 * want,
        "residual variance {var:.2}, calibrated {want:.2}"
    );
}

#[test]
fn colluding_t_minus_1_members_cannot_decrypt_a_contribution_or_get_one_decrypted() {
    let mut s = setup(12);
    // The honest members never post: the query stays open, its contributions unreleased.
    for i in 0..3 {
        s.sim.offline.insert(names()[i].clone());
    }
    let spec = query(QueryKind::Count, None);
    let id = s.sim.submit("alice", &spec).unwrap();
    // Give the honest hospitals' contributions a chance to exist: bring a and b online for
    // one round of contributing, but not long enough to close.
    s.sim.offline.remove(&names()[0]);
    s.sim.offline.remove(&names()[1]);
    let _ = s.sim.run(&id, 1, 1);
    s.sim.offline.insert(names()[0].clone());
    s.sim.offline.insert(names()[1].clone());
    let view = s.sim.query_view(&id).unwrap().clone();
    let key = s.sim.view.key.clone();
    let victim = view
        .contributions
        .get("hospital-a")
        .expect("hospital-a contributed");
    let ct = Ciphertext::from_bytes(key.public_key(), &victim.ciphertexts[0]).unwrap();
    // 1. Pooling their two key shares, the colluders' partials do not combine: t are needed.
    let ctx = b"colluders";
    let mut verified = Vec::new();
    for &i in &COLLUDERS {
        let p = s.shares[i]
            .partial_decrypt(&key, ctx, &ct, &mut OsRng)
            .unwrap();
        verified.push(key.verify_partial(ctx, &ct, &p).unwrap());
    }
    assert!(key.combine(ctx, &ct, &verified).is_err());
    // 2. They cannot make the honest members decrypt it: the ledger refuses a close over
    // hospital-a's contribution with only their own noise (2 < n − t + 1 shares) ...
    let close = |noise_from: Vec<String>| {
        Kind::CloseAggregate(pb::CloseAggregate {
            query_id: id.clone(),
            contributors: vec!["hospital-a".into()],
            noise_from,
        })
    };
    // (the colluders post their noise shares first)
    s.sim.offline.clear();
    for i in 0..3 {
        s.sim.offline.insert(names()[i].clone());
    }
    let _ = s.sim.run(&id, 1, 1);
    assert!(!s
        .sim
        .post(3, close(vec!["hospital-d".into(), "hospital-e".into()])));
    let (_, why) = s.sim.rejected.last().unwrap().clone();
    assert!(why.contains("noise shares"), "{why}");
    // ... and a partial decryption before any close.
    assert!(!s.sim.post(
        4,
        Kind::PartialDecryption(pb::PartialDecryption {
            query_id: id.clone(),
            partials: vec![vec![0; 8]],
        })
    ));
    let (_, why) = s.sim.rejected.last().unwrap().clone();
    assert!(why.contains("no closed aggregate"), "{why}");
    // Nothing about the query was released.
    assert!(s.sim.query_view(&id).unwrap().outcome.is_none());
}
