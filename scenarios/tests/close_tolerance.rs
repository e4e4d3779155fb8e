//! Issue 24 §2: a close may list only `k = n − f` noise shares (`f` members down), `t − 1` of
//! them the colluders', who subtract their own. What remains must still be the full
//! calibrated noise: each share is calibrated for `m = k − (t − 1)` honest shares.
//!
//! For n/t in {3/2, 5/3, 7/4} with the default close tolerance (f = 1): one honest member is
//! down, the `t − 1` colluders (the last members) include the one that closes. The test
//!
//! 1. runs the pure protocol ([`medtech_federation::sim`]: real drivers, real ledger rules,
//!    512-bit key): the ledger refuses the colluders' close listing `k − 1` noise shares and
//!    accepts one listing `k`; the query is released; the colluders, who posted valid noise
//!    shares of zero (they know their noise exactly: the worst case), subtract the truth;
//! 2. samples, through the same calibration (the compiled query's share spec), the `k` shares
//!    of such a close 20,000 times and removes the colluders' `t − 1`;
//!
//! and checks both residuals against the exact discrete Laplace DLap(q) that ε promises (χ²,
//! α = 10⁻⁶). On the calibration for `m = n − t + 1` (every close listing all `n` shares) the
//! residual of a close of `n − t + 1` shares is one honest share, far narrower than DLap(q),
//! and the test fails (checked before the fix).
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
use medtech_scenarios::harness::{chi_square_abs, polya_difference_pmf, query, values};
use medtech_threshold::{dealer, SlotLayout};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, SeedableRng};

/// Share-level draws per committee.
const DRAWS: usize = 20_000;

fn names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("hospital-{}", (b'a' + i as u8) as char))
        .collect()
}

/// The colluders post valid noise shares of zero.
fn colluders_add_no_noise(sim: &mut SimCommittee, colluders: Vec<String>, compiled: Compiled) {
    let view = sim.view.clone();
    sim.tamper = Some(Box::new(move |who, k| match k {
        Kind::NoiseCommitment(n) if colluders.iter().any(|c| c == who) => {
            let pk = view.key.public_key();
            let party = view.party(who).unwrap();
            let layouts = SlotLayout::cover(pk, SLOT_BITS, compiled.slots() as u32).unwrap();
            let mut cts = Vec::new();
            let mut joined = Vec::new();
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
                let p = proof.to_bytes();
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

fn one_committee(n: usize, t: u16, seed: u64) {
    let members = names(n);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (key, shares) = dealer::generate(512, n as u16, t, &mut rng).unwrap();
    let view = CommitteeView {
        members: members.clone(),
        threshold: t,
        key: Arc::new(key),
        platform: Arc::new(Platform::new(&members)),
        close_tolerance: None,
    };
    let data: Vec<Vec<Device>> = members
        .iter()
        .enumerate()
        .map(|(i, h)| devices(h, 0, 150 + 20 * i as u64, seed + i as u64))
        .collect();
    let cols = data.iter().map(|d| Columns::from_devices(d)).collect();
    let mut sim = SimCommittee::new(view, shares, cols, NoiseMode::Calibrated, seed).unwrap();
    sim.register("alice", 50_000_000).unwrap();

    let colluding = usize::from(t) - 1;
    let colluders: Vec<String> = members[n - colluding..].to_vec();
    let closer = n - 1; // a colluder closes
    let down = members[0].clone(); // one honest member is down
    let spec = query(QueryKind::GroupedCount, Some("speciality"));
    let compiled = sim.view.compile_query(spec.clone()).unwrap();
    let share = compiled.plan.outputs[0].share;
    let q = share.q().expect("discrete Laplace shares");
    let k = sim.view.noise_needed();
    assert_eq!(k, n - 1, "default f = 1: k = n − 1 for n/t = {n}/{t}");
    colluders_add_no_noise(&mut sim, colluders.clone(), compiled.clone());

    // 1. The real protocol and the real close rule.
    sim.offline.insert(down.clone());
    let id = sim.submit("alice", &spec).unwrap();
    let _ = sim.run(&id, 1, 1); // every online member contributes and posts its noise
    let posted: Vec<String> = {
        let v = sim.query_view(&id).unwrap();
        assert!(v.closed.is_none(), "nobody closed yet");
        v.noise.keys().cloned().collect()
    };
    assert_eq!(
        posted.len(),
        n - 1,
        "every member but the one down posted noise"
    );
    // The colluders' close: their own shares first, then as few honest ones as allowed.
    let mut listed: Vec<String> = colluders.clone();
    listed.extend(posted.iter().filter(|m| !colluders.contains(m)).cloned());
    let contributors: Vec<String> = sim
        .query_view(&id)
        .unwrap()
        .contributions
        .keys()
        .cloned()
        .collect();
    let close = |noise_from: &[String]| {
        Kind::CloseAggregate(pb::CloseAggregate {
            query_id: id.clone(),
            contributors: contributors.clone(),
            noise_from: noise_from.to_vec(),
        })
    };
    assert!(
        !sim.post(closer, close(&listed[..k - 1])),
        "{n}/{t}: a close with k − 1 = {} shares is refused",
        k - 1
    );
    let (_, why) = sim.rejected.last().unwrap().clone();
    assert!(why.contains("noise shares"), "{why}");
    assert!(
        sim.post(closer, close(&listed[..k])),
        "{n}/{t}: a close with k = {k} shares is accepted: {:?}",
        sim.rejected.last()
    );
    let Some(Outcome::Released(r)) = sim.run(&id, 500, 80) else {
        panic!("{n}/{t}: not released")
    };
    assert_eq!(r.noise_from.len(), k);
    // The truth over the hospitals that contributed (the one down did not).
    let contributed: Vec<Device> = members
        .iter()
        .zip(&data)
        .filter(|(m, _)| r.contributors.contains(m))
        .flat_map(|(_, d)| d.iter().cloned())
        .collect();
    assert_eq!(r.contributors.len(), n - 1);
    let truth = compiled.evaluate(&Columns::from_devices(&contributed));
    let residual: Vec<i128> = values(&r).iter().zip(&truth).map(|(v, t)| v - t).collect();
    let honest_listed = k - colluding;
    let dlap = polya_difference_pmf(1.0, q);
    let (stat, df, ok) = chi_square_abs(&residual, &dlap);
    eprintln!(
        "{n}/{t} protocol: {honest_listed} honest shares, q = {q:.3}, χ² = {stat:.1} ({df} d.f.)"
    );
    assert!(
        ok,
        "{n}/{t}: released noise is not DLap(q): χ² = {stat:.1} on {df} d.f."
    );

    // 2. The same close at the level of the shares, through the same calibration: k shares
    // drawn, the colluders' t − 1 removed.
    let mut r = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
    let draws: Vec<i128> = (0..DRAWS)
        .map(|_| {
            let listed: Vec<i128> = (0..k)
                .map(|_| share.sample_share(&mut r).unwrap())
                .collect();
            let theirs: i128 = listed[..colluding].iter().sum();
            listed.iter().sum::<i128>() - theirs
        })
        .collect();
    let (stat, df, ok) = chi_square_abs(&draws, &dlap);
    eprintln!("{n}/{t} shares: χ² = {stat:.1} ({df} d.f.)");
    assert!(
        ok,
        "{n}/{t}: the honest rest of a close of k = {k} shares is not DLap(q): χ² = {stat:.1} on {df} d.f."
    );
}

#[test]
fn colluders_closing_with_one_honest_member_down_still_leave_the_full_noise() {
    for (i, (n, t)) in [(3usize, 2u16), (5, 3), (7, 4)].into_iter().enumerate() {
        one_committee(n, t, 40 + i as u64);
    }
}
