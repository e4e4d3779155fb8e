//! The private query protocol end to end over the real ledger rules (in one process, 512-bit
//! keys): exact answers with noise disabled, noisy answers inside their intervals, and the
//! attacks the protocol must survive or refuse.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use medtech_federation::data::generate::devices;
use medtech_federation::data::{Columns, Device};
use medtech_federation::protocol::{CommitteeView, NoiseMode, Outcome, Release};
use medtech_federation::query::{Compiled, Filter, Op, Platform, QueryKind, QuerySpec};
use medtech_federation::sim::SimCommittee;
use medtech_ledger::entry::Kind;
use medtech_noise::QueryResult;
use medtech_threshold::dealer;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const N: usize = 5;
const T: u16 = 3;

fn names() -> Vec<String> {
    (0..N)
        .map(|i| format!("hospital-{}", (b'a' + i as u8) as char))
        .collect()
}

fn hospital_data() -> Vec<Vec<Device>> {
    names()
        .iter()
        .enumerate()
        .map(|(i, h)| devices(h, 0, 300 + 50 * i as u64, 100 + i as u64))
        .collect()
}

fn committee(noise: NoiseMode, seed: u64) -> (SimCommittee, Vec<Vec<Device>>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let (key, shares) = dealer::generate(512, N as u16, T, &mut rng).unwrap();
    let view = CommitteeView {
        members: names(),
        threshold: T,
        key: Arc::new(key),
        platform: Arc::new(Platform::new(&names())),
        close_tolerance: None,
    };
    let data = hospital_data();
    let cols = data.iter().map(|d| Columns::from_devices(d)).collect();
    let mut c = SimCommittee::new(view, shares, cols, noise, seed).unwrap();
    c.register("alice", 20_000_000).unwrap();
    (c, data)
}

fn spec(kind: QueryKind, target: Option<&str>, filters: Vec<Filter>) -> QuerySpec {
    QuerySpec {
        kind,
        target: target.map(str::to_owned),
        filters,
        start_time: None,
        end_time: None,
        epsilon: 1.0,
    }
}

fn all_devices(data: &[Vec<Device>], from: &[usize]) -> Columns {
    let v: Vec<Device> = from.iter().flat_map(|&i| data[i].clone()).collect();
    Columns::from_devices(&v)
}

fn released(o: Option<Outcome>) -> Release {
    match o {
        Some(Outcome::Released(r)) => *r,
        other => panic!("not released: {other:?}"),
    }
}

fn values(r: &Release) -> Vec<i128> {
    match &r.result {
        QueryResult::Count(v) => vec![v.value],
        QueryResult::GroupedCount(v) => v.iter().map(|x| x.value).collect(),
        QueryResult::Average { sum, count, .. } => vec![sum.value, count.value],
    }
}

#[test]
fn with_noise_disabled_every_query_kind_is_exact() {
    let (mut c, data) = committee(NoiseMode::DisabledForTests, 1);
    let platform = c.view.platform.clone();
    let reference = all_devices(&data, &[0, 1, 2, 3, 4]);
    let filters = vec![Filter {
        field: "battery_level".into(),
        op: Op::GreaterThan,
        value: 30.into(),
    }];
    for s in [
        spec(QueryKind::Count, None, filters.clone()),
        spec(QueryKind::GroupedCount, Some("speciality"), vec![]),
        spec(QueryKind::GroupedCount, Some("hospital"), filters.clone()),
        spec(QueryKind::Average, Some("usage_hours"), filters.clone()),
        spec(QueryKind::Average, Some("production_date"), vec![]),
    ] {
        let id = c.submit("alice", &s).unwrap();
        let r = released(c.run(&id, 100, 20));
        let want = Compiled::new(s.clone(), &platform, N as u16, T)
            .unwrap()
            .evaluate(&reference);
        assert_eq!(values(&r), want, "{s:?}");
        assert_eq!(r.contributors.len(), N);
        assert_eq!(
            r.decrypted_by.len(),
            usize::from(T),
            "only t partials are combined"
        );
    }
}

#[test]
fn noisy_grouped_counts_lie_within_their_intervals() {
    let (mut c, data) = committee(NoiseMode::Calibrated, 2);
    let reference = all_devices(&data, &[0, 1, 2, 3, 4]);
    let s = spec(QueryKind::GroupedCount, Some("speciality"), vec![]);
    let want = Compiled::new(s.clone(), &c.view.platform, N as u16, T)
        .unwrap()
        .evaluate(&reference);
    let id = c.submit("alice", &s).unwrap();
    let r = released(c.run(&id, 100, 20));
    let QueryResult::GroupedCount(v) = &r.result else {
        panic!()
    };
    assert_eq!(v.len(), 56);
    let covered = v
        .iter()
        .zip(&want)
        .filter(|(x, w)| (x.value - **w).unsigned_abs() <= u128::from(x.half_width))
        .count();
    let exact = v.iter().zip(&want).filter(|(x, w)| x.value == **w).count();
    // Each bin is covered with probability ≥ 0.95: fewer than 45 of 56 has probability < 1e-4.
    assert!(covered >= 45, "{covered} of 56 covered");
    assert!(exact < 56, "noise was added");
}

#[test]
fn a_member_posting_a_bad_partial_decryption_is_named_and_the_query_still_succeeds() {
    let (mut c, data) = committee(NoiseMode::DisabledForTests, 3);
    // The cheater is one of the t members designated to decrypt the first query ("q1"), so
    // its partial is needed and checked; the others step in once it is named.
    let cheater = c.view.designated("q1")[0].clone();
    let who_cheats = cheater.clone();
    c.tamper = Some(Box::new(move |who, k| match (who, k) {
        (w, Kind::PartialDecryption(mut p)) if w == who_cheats => {
            // Flip a bit near the end of the first partial (inside its proof or value).
            let b = &mut p.partials[0];
            let i = b.len() - 3;
            b[i] ^= 0x10;
            Some(Kind::PartialDecryption(p))
        }
        (_, k) => Some(k),
    }));
    let s = spec(QueryKind::Count, None, vec![]);
    let id = c.submit("alice", &s).unwrap();
    let r = released(c.run(&id, 100, 20));
    assert_eq!(
        values(&r),
        vec![data.iter().map(|d| d.len() as i128).sum::<i128>()]
    );
    assert!(!r.decrypted_by.contains(&cheater));
    assert_eq!(r.decrypted_by.len(), T as usize);
    assert!(
        c.query_view(&id).unwrap().accused.contains(&cheater),
        "the cheater is named on the ledger"
    );
}

#[test]
fn an_out_of_range_or_replayed_contribution_is_named_and_left_out() {
    let (mut c, data) = committee(NoiseMode::DisabledForTests, 4);
    // hospital-b replays hospital-a's contribution as its own (same ciphertexts and proofs):
    // the proofs are bound to hospital-a's name, so they fail under hospital-b's.
    let stolen: std::rc::Rc<std::cell::RefCell<Option<Kind>>> = Default::default();
    let s2 = stolen.clone();
    c.tamper = Some(Box::new(move |who, k| match (who, k) {
        ("hospital-a", Kind::Contribution(x)) => {
            *s2.borrow_mut() = Some(Kind::Contribution(x.clone()));
            Some(Kind::Contribution(x))
        }
        ("hospital-b", Kind::Contribution(_)) => s2.borrow().clone(),
        // hospital-c claims a count beyond the proven range by corrupting its proof.
        ("hospital-c", Kind::Contribution(mut x)) => {
            let i = x.range_proof.len() / 2;
            x.range_proof[i] ^= 1;
            Some(Kind::Contribution(x))
        }
        (_, k) => Some(k),
    }));
    let s = spec(QueryKind::Count, None, vec![]);
    let id = c.submit("alice", &s).unwrap();
    let r = released(c.run(&id, 100, 200));
    assert_eq!(
        r.contributors,
        vec!["hospital-a", "hospital-d", "hospital-e"]
    );
    let want: i128 = [0, 3, 4].iter().map(|&i| data[i].len() as i128).sum();
    assert_eq!(values(&r), vec![want]);
    let accused = &c.query_view(&id).unwrap().accused;
    assert!(
        accused.contains("hospital-b") && accused.contains("hospital-c"),
        "{accused:?}"
    );
}

#[test]
fn an_offline_hospital_is_left_out_after_the_timeout_and_the_result_says_so() {
    let (mut c, data) = committee(NoiseMode::DisabledForTests, 5);
    c.offline.insert("hospital-e".into());
    let s = spec(QueryKind::Count, None, vec![]);
    let id = c.submit("alice", &s).unwrap();
    let r = released(c.run(&id, 1_000, 40));
    assert_eq!(r.contributors.len(), 4);
    assert!(!r.contributors.contains(&"hospital-e".to_owned()));
    let want: i128 = data[..4].iter().map(|d| d.len() as i128).sum();
    assert_eq!(values(&r), vec![want]);
}

#[test]
fn with_fewer_than_t_members_online_the_query_fails_and_stays_charged() {
    let (mut c, _) = committee(NoiseMode::Calibrated, 6);
    for m in ["hospital-c", "hospital-d", "hospital-e"] {
        c.offline.insert(m.into());
    }
    let s = spec(QueryKind::Count, None, vec![]);
    let id = c.submit("alice", &s).unwrap();
    let spent_before = c
        .state
        .budgets()
        .spent(&medtech_noise::Subject::Researcher("alice".into()));
    // Noise is posted, so failing the query takes t = 3 members (ledger rule 9): the two
    // online members' timeouts are approvals, and the query stays open.
    assert_eq!(c.run(&id, 5_000, 40), None);
    assert!(c.state.query(&id).unwrap().failure.is_some());
    // A third member comes back, times out too, and the query fails.
    c.offline.remove("hospital-c");
    match c.run(&id, 5_000, 40) {
        Some(Outcome::Failed(why)) => assert!(why.contains("not released"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(spent_before.epsilon.0, 1_000_000);
    assert_eq!(
        c.state
            .budgets()
            .spent(&medtech_noise::Subject::Researcher("alice".into())),
        spent_before
    );
}

#[test]
fn a_researcher_over_budget_is_refused_by_the_ledger() {
    let (mut c, _) = committee(NoiseMode::Calibrated, 7);
    let mut s = spec(QueryKind::Count, None, vec![]);
    s.epsilon = 5.0;
    for _ in 0..4 {
        c.submit("alice", &s).unwrap();
    }
    let err = c.submit("alice", &s).unwrap_err();
    assert!(err.contains("over budget"), "{err}");
}

#[test]
fn a_query_charged_less_than_it_costs_gets_no_contribution() {
    use medtech_ledger::budget::QueryCharge;
    use medtech_protos::ledger::v1 as pb;
    let (mut c, _) = committee(NoiseMode::Calibrated, 8);
    // A member submits a query declaring ε = 0.1 while the query asks for ε = 1.
    let s = spec(QueryKind::Count, None, vec![]);
    let cheap = QueryCharge {
        dataset: "federation".into(),
        cost: medtech_noise::Cost {
            epsilon: medtech_noise::Micros(100_000),
            ..Default::default()
        },
    };
    // Route through the simulator's bookkeeping by submitting a valid one first, then forging.
    let id = c.submit("alice", &s).unwrap();
    let _ = id;
    let forged = Kind::SubmitQuery(pb::SubmitQuery {
        query_id: "forged".into(),
        query: serde_json::to_vec(&s).unwrap(),
        cost: cheap.encode(),
        on_behalf_of: "alice".into(),
        idempotency_key: String::new(),
    });
    assert!(
        c.post(1, forged),
        "the ledger cannot see the query's real cost"
    );
    // Every honest member recompiles and refuses; checked on the pure driver directly.
    let mut view = medtech_federation::protocol::QueryView::default();
    view.apply(
        "hospital-b",
        &Kind::SubmitQuery(pb::SubmitQuery {
            query_id: "forged".into(),
            query: serde_json::to_vec(&s).unwrap(),
            cost: cheap.encode(),
            on_behalf_of: "alice".into(),
            idempotency_key: String::new(),
        }),
    );
    let share = {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let (_, shares) = dealer::generate(512, N as u16, T, &mut rng).unwrap();
        Arc::new(shares.into_iter().next().unwrap())
    };
    let mut m = medtech_federation::protocol::Member::new(
        "hospital-a",
        c.view.clone(),
        share,
        NoiseMode::Calibrated,
        Default::default(),
    );
    let out = m.step(
        &view,
        &Columns::default(),
        0,
        &mut ChaCha20Rng::seed_from_u64(1),
    );
    // The member that signed the under-charged query is named, and the query fails.
    assert_eq!(out.len(), 2, "{out:?}");
    let Kind::Misbehaviour(m) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(m.culprit, "hospital-b");
    let Kind::QueryFailed(f) = &out[1] else {
        panic!("{out:?}")
    };
    assert!(f.reason.contains("charged"), "{}", f.reason);
}

#[test]
fn the_combining_member_crashing_after_its_partial_delays_the_release_but_does_not_stop_it() {
    let (mut c, data) = committee(NoiseMode::DisabledForTests, 8);
    let s = spec(QueryKind::Count, None, vec![]);
    let id = c.submit("alice", &s).unwrap();
    let designated = c.view.designated(&id);
    let primary = designated[0].clone();
    // Step until the first designated member (the one that combines at once) has posted its
    // partial decryption, then take it down.
    let mut outcome = None;
    for _ in 0..40 {
        outcome = c.run(&id, 100, 1);
        if outcome.is_some() || c.query_view(&id).unwrap().partials.contains_key(&primary) {
            break;
        }
    }
    assert!(outcome.is_none(), "released before the combiner crashed");
    c.offline.insert(primary.clone());
    let crashed_at = c.now_ms;
    let r = released(c.run(&id, 100, 400));
    let want: i128 = data.iter().map(|d| d.len() as i128).sum();
    assert_eq!(values(&r), vec![want]);
    // Another designated member combined, after the combine fallback (a quarter of the
    // partial fallback after t partials were posted).
    assert!(
        c.now_ms - crashed_at >= 2_000,
        "released {} ms after the crash",
        c.now_ms - crashed_at
    );
    assert!(r.decrypted_by.iter().all(|m| designated.contains(m)));
}

/// Submits `specs` back to back (the first starts a bundle of one at once; the others queue
/// behind it and run as one bundle once it closes) and returns their ids.
fn submit_all(c: &mut SimCommittee, specs: &[QuerySpec]) -> Vec<String> {
    specs
        .iter()
        .map(|s| c.submit("alice", s).unwrap())
        .collect()
}

#[test]
fn concurrent_small_queries_share_one_bundle_and_each_answer_is_exact() {
    let (mut c, data) = committee(NoiseMode::DisabledForTests, 11);
    let platform = c.view.platform.clone();
    let reference = all_devices(&data, &[0, 1, 2, 3, 4]);
    let over = |v: i64| {
        vec![Filter {
            field: "battery_level".into(),
            op: Op::GreaterThan,
            value: v.into(),
        }]
    };
    let specs = vec![
        spec(QueryKind::Count, None, vec![]),
        spec(QueryKind::Count, None, over(30)),
        spec(QueryKind::Average, Some("usage_hours"), over(50)),
        spec(QueryKind::GroupedCount, Some("active_status"), vec![]),
    ];
    let ids = submit_all(&mut c, &specs);
    // The first runs alone; the rest wait for its close.
    assert_eq!(c.query_view(&ids[0]).unwrap().queries.len(), 1);
    assert!(c.query_view(&ids[1]).is_none(), "queued, not started");
    let first = released(c.run(&ids[0], 100, 20));
    assert!(first.bundle.is_empty());
    let view = c.query_view(&ids[1]).unwrap();
    assert_eq!(view.id, ids[1]);
    assert_eq!(
        view.queries.len(),
        3,
        "one bundle for the three queued queries"
    );
    released(c.run(&ids[1], 100, 20));
    let view = c.query_view(&ids[3]).unwrap().clone();
    // One contribution ciphertext per hospital for all three queries: 1 + 2 + 2 slots, 96 bits
    // wide because of the Average (a 512-bit key holds 5).
    for contribution in view.contributions.values() {
        assert_eq!(contribution.ciphertexts.len(), 1);
    }
    for (id, s) in ids.iter().zip(&specs) {
        let r = released(c.outcome(id));
        let want = Compiled::new(s.clone(), &platform, N as u16, T)
            .unwrap()
            .evaluate(&reference);
        assert_eq!(values(&r), want, "{s:?}");
        assert_eq!(r.query, *s);
        if id != &ids[0] {
            assert_eq!(r.bundle, ids[1..].to_vec());
            assert_eq!(r.decrypted_by.len(), usize::from(T));
        }
    }
    // Any auditor holding the key and the ledger agrees, query by query; a changed value of
    // one bundled query fails the audit.
    for id in &ids[1..] {
        let r = released(c.outcome(id));
        let mut v = medtech_federation::protocol::Verifier::new(c.view.clone());
        assert_eq!(v.audit_release(&view, id, &r), Ok(vec![]));
        let mut forged = r.clone();
        match &mut forged.result {
            QueryResult::Count(x) => x.value += 1,
            QueryResult::GroupedCount(xs) => xs[0].value += 1,
            QueryResult::Average { count, .. } => count.value += 1,
        }
        let mut v = medtech_federation::protocol::Verifier::new(c.view.clone());
        assert!(v.audit_release(&view, id, &forged).is_err(), "{id}");
    }
}

#[test]
fn a_large_query_is_not_held_behind_an_open_bundle() {
    let (mut c, _) = committee(NoiseMode::DisabledForTests, 12);
    let ids = submit_all(
        &mut c,
        &[
            spec(QueryKind::Count, None, vec![]),
            spec(QueryKind::GroupedCount, Some("speciality"), vec![]),
        ],
    );
    assert_eq!(c.query_view(&ids[1]).unwrap().id, ids[1], "started at once");
    let grouped = released(c.run(&ids[1], 100, 20));
    assert!(grouped.bundle.is_empty());
    released(c.run(&ids[0], 100, 20));
}

#[test]
fn each_bundled_query_gets_its_own_noise() {
    let (mut c, data) = committee(NoiseMode::Calibrated, 13);
    let reference = all_devices(&data, &[0, 1, 2, 3, 4]);
    let s = spec(QueryKind::Count, None, vec![]);
    let want = Compiled::new(s.clone(), &c.view.platform, N as u16, T)
        .unwrap()
        .evaluate(&reference)[0];
    // One to open a bundle, then as many as one 512-bit ciphertext holds (10 slots).
    let ids = submit_all(&mut c, &vec![s; 11]);
    released(c.run(&ids[0], 100, 20));
    released(c.run(&ids[1], 100, 20));
    let got: Vec<(i128, u128)> = ids[1..]
        .iter()
        .map(|id| {
            let r = released(c.outcome(id));
            assert_eq!(r.bundle.len(), 10);
            let QueryResult::Count(v) = r.result else {
                panic!()
            };
            (v.value, u128::from(v.half_width))
        })
        .collect();
    // Shared noise would give ten equal answers (independent shares: probability < 1e-6).
    assert!(got.iter().any(|g| g.0 != got[0].0), "{got:?}");
    // Each is covered with probability ≥ 0.95: fewer than 6 of 10 has probability < 1e-4.
    let covered = got
        .iter()
        .filter(|(v, w)| (v - want).unsigned_abs() <= *w)
        .count();
    assert!(covered >= 6, "{covered} of 10 covered: {got:?}");
}

#[test]
fn a_contribution_replayed_from_an_earlier_bundle_is_named_and_left_out() {
    let (mut c, data) = committee(NoiseMode::DisabledForTests, 14);
    // hospital-b keeps its contribution to the bundle {q2, q3} and posts it again, relabelled,
    // as its contribution to the same-shaped bundle {q5, q6}: the proofs are bound to the ids
    // of the bundle they were made for, so they fail under the other's.
    let kept: std::rc::Rc<std::cell::RefCell<Option<Kind>>> = Default::default();
    let k2 = kept.clone();
    c.tamper = Some(Box::new(move |who, k| match (who, k) {
        ("hospital-b", Kind::Contribution(x)) if x.query_id == "q2" => {
            *k2.borrow_mut() = Some(Kind::Contribution(x.clone()));
            Some(Kind::Contribution(x))
        }
        ("hospital-b", Kind::Contribution(x)) if x.query_id == "q5" => match k2.borrow().clone() {
            Some(Kind::Contribution(mut old)) => {
                old.query_id = x.query_id;
                Some(Kind::Contribution(old))
            }
            _ => panic!("nothing kept from the first bundle"),
        },
        (_, k) => Some(k),
    }));
    let s = spec(QueryKind::Count, None, vec![]);
    let first = submit_all(&mut c, &vec![s.clone(); 3]);
    released(c.run(&first[1], 100, 40));
    assert_eq!(released(c.outcome(&first[2])).bundle, ["q2", "q3"]);
    let second = submit_all(&mut c, &vec![s; 3]);
    assert_eq!(second, ["q4", "q5", "q6"]);
    let r = released(c.run("q5", 100, 200));
    assert_eq!(r.bundle, ["q5", "q6"]);
    assert!(!r.contributors.contains(&"hospital-b".to_owned()), "{r:?}");
    let want: i128 = [0, 2, 3, 4].iter().map(|&i| data[i].len() as i128).sum();
    assert_eq!(values(&r), vec![want]);
    assert_eq!(values(&released(c.outcome("q6"))), vec![want]);
    assert!(c.query_view("q5").unwrap().accused.contains("hospital-b"));
}

/// What a reader of the ledger learns by combining the published partial decryptions of an
/// instance: the whole plaintext of every decrypted ciphertext, read as 48-bit balanced digits
/// (the slot width of every ciphertext without an Average; a wide slot shows as two digits).
/// Only public entries are used: contributions, noise shares and partials as posted.
fn read_every_plaintext_digit(c: &SimCommittee, id: &str, compiled: &Compiled) -> Vec<i64> {
    use medtech_threshold::{Ciphertext, PartialDecryption, SlotLayout};
    let view = c.query_view(id).expect("the query ran");
    let closed = view.closed.as_ref().expect("closed");
    let key = &c.view.key;
    let pk = key.public_key();
    let tag = view.tag();
    let cts = |bytes: &Vec<Vec<u8>>| -> Vec<Ciphertext> {
        bytes
            .iter()
            .map(|b| Ciphertext::from_bytes(pk, b).unwrap())
            .collect()
    };
    // The reader tries the layouts a member could have used and keeps the one whose posted
    // partials verify (a member's noise ciphertext is shifted by the bound in every slot).
    for bits in [48u32, 96] {
        let Ok(layouts) = SlotLayout::cover(pk, bits, compiled.slots() as u32) else {
            continue;
        };
        let add = |agg: Option<Vec<Ciphertext>>, part: Vec<Ciphertext>| {
            Some(match agg {
                None => part,
                Some(acc) => acc.iter().zip(&part).map(|(a, b)| pk.add(a, b)).collect(),
            })
        };
        let mut agg: Option<Vec<Ciphertext>> = None;
        for m in &closed.contributors {
            agg = add(agg, cts(&view.contributions[m].ciphertexts));
        }
        let mut usable = true;
        for m in &closed.noise_from {
            let unshifted = cts(&view.noise[m].ciphertexts)
                .iter()
                .zip(&layouts)
                .map(|(ct, l)| {
                    medtech_noise::commitment::unshift_shares(
                        pk,
                        *l,
                        compiled.noise_bound().unwrap(),
                        ct,
                    )
                    .map(|p| p.ciphertext().clone())
                })
                .collect::<Result<Vec<_>, _>>();
            match unshifted {
                Ok(u) if u.len() == layouts.len() => agg = add(agg, u),
                _ => usable = false,
            }
        }
        let Some(agg) = agg.filter(|_| usable) else {
            continue;
        };
        let mut digits = Vec::new();
        let mut all_ok = true;
        for (k, ct) in agg.iter().enumerate() {
            let mut ctx = b"medtech-federation/v1/decrypt".to_vec();
            ctx.extend_from_slice(&(tag.len() as u64).to_be_bytes());
            ctx.extend_from_slice(&tag);
            ctx.extend_from_slice(&(k as u64).to_be_bytes());
            let partials: Vec<PartialDecryption> = view
                .partials
                .values()
                .map(|p| PartialDecryption::from_bytes(key, &p.partials[k]).unwrap())
                .collect();
            match key.combine_partials(&ctx, ct, &partials) {
                Ok(out) => {
                    let max = SlotLayout::max_slots(pk, 48);
                    let layout = SlotLayout::new(pk, 48, max).unwrap();
                    digits.extend(layout.decode(&out.decryption.plaintext).unwrap());
                }
                Err(_) => all_ok = false,
            }
        }
        if all_ok && !digits.is_empty() {
            return digits;
        }
    }
    panic!("no layout decrypts the published partials");
}

#[test]
fn average_high_limb_is_not_readable_from_published_partials() {
    // A reader of the ledger (any member, admin or auditor) combines the published partial
    // decryptions of an Average and looks for the high limbs' total, `Σ_h ⌊(sum_h + 2^59) /
    // 2^30⌋ = H·2^29 − #(hospitals whose centred sum is negative)`: an exact, un-noised
    // membership count whatever ε was charged. After the fix the plaintext holds only
    // `Σ (sum_h + 2^59) + noise` and `count + noise`, so no digit of it is that total.
    let (mut c, data) = committee(NoiseMode::Calibrated, 31);
    let platform = c.view.platform.clone();
    let s = spec(QueryKind::Average, Some("usage_hours"), vec![]);
    let compiled = Compiled::new(s.clone(), &platform, N as u16, T).unwrap();
    let id = c.submit("alice", &s).unwrap();
    let r = released(c.run(&id, 100, 20));
    assert_eq!(r.contributors.len(), N);
    let (mut high_total, mut shifted_total, mut negative) = (0i128, 0i128, 0i128);
    for d in &data {
        let sum = compiled.evaluate(&Columns::from_devices(d))[0];
        let shifted = sum + medtech_federation::query::SUM_OFFSET;
        high_total += shifted >> medtech_federation::query::LIMB_BITS;
        shifted_total += shifted;
        negative += i128::from(sum < 0);
    }
    assert_eq!(high_total, N as i128 * (1 << 29) - negative);
    let digits = read_every_plaintext_digit(&c, &id, &compiled);
    for (i, &d) in digits.iter().enumerate() {
        assert_ne!(
            i128::from(d),
            high_total,
            "digit {i} of the decrypted plaintext is the exact high-limb total"
        );
    }
    // The wide slot (two digits) is the noised shifted sum, not the exact one.
    let wide = i128::from(digits[0]) + (i128::from(digits[1]) << 48);
    assert_ne!(
        wide, shifted_total,
        "the shifted sum was decrypted without noise"
    );
}

/// Issue 24 §4: a noise share outside its proof bound (an honest share in the bound's 2^−80
/// tail, injected here) was logged and re-drawn on the member's next step, which is rejection
/// sampling: the posted noise was truncated. Now the share is void and never drawn again; the
/// member posts no noise share (and no vote to fail the query: one member's vote would only
/// help colluders fail it). Here every member's share is void, so nothing closes, and the query
/// fails at the decryption timeout by `t` members' votes, still charged.
#[test]
fn out_of_bound_noise_share_is_not_redrawn() {
    use medtech_federation::protocol::fixed_noise_draws;
    // 2^40 lies outside every proof bound (2^31 at most).
    let (mut c, _) = committee(NoiseMode::FixedForTests(1 << 40), 12);
    let alice = || medtech_noise::Subject::Researcher("alice".into());
    let spent_before = c.state.budgets().spent(&alice());
    let id = c
        .submit("alice", &spec(QueryKind::Count, None, vec![]))
        .unwrap();
    let draws_before = fixed_noise_draws();
    // 30 rounds of 5 s: past the 60 s decryption timeout.
    let outcome = c.run(&id, 5_000, 30);
    let draws = fixed_noise_draws() - draws_before;
    match outcome {
        Some(Outcome::Failed(why)) => assert!(why.contains("not released within"), "{why}"),
        other => panic!("the query must fail, not retry: {other:?}"),
    }
    // One Count slot: each member drew once, over 30 rounds (the old code drew again on every
    // step of every member).
    assert_eq!(draws, N as u64, "shares drawn for one slot");
    let view = c.query_view(&id).unwrap();
    assert!(view.noise.is_empty(), "no noise share was posted");
    assert!(view.closed.is_none(), "nothing closed without noise");
    // Charged: ε = 1 was spent at admission and stays spent.
    assert_eq!(
        c.state.budgets().spent(&alice()).epsilon.0,
        spent_before.epsilon.0 + 1_000_000
    );
}

/// Issue 24 §4: a query below its ε floor that reaches the ledger anyway (a member submits it
/// directly, bypassing the API's refusal) gets no contribution and no noise from an honest
/// member: recompiling it fails on the floor, so the member only posts `QueryFailed`. The old
/// code compiled it, proved its shares under the fallback bound 2^31 and contributed.
#[test]
fn a_query_below_the_floor_posted_by_a_member_gets_no_contribution() {
    use medtech_ledger::budget::QueryCharge;
    use medtech_protos::ledger::v1 as pb;
    let (c, _) = committee(NoiseMode::Calibrated, 13);
    let mut s = spec(QueryKind::Average, Some("production_date"), vec![]);
    s.epsilon = 0.0001;
    // Charged what the plan would cost without the floor: ⌊ε/2⌋ twice.
    let charge = QueryCharge {
        dataset: "federation".into(),
        cost: medtech_noise::Cost {
            epsilon: medtech_noise::Micros(100),
            ..Default::default()
        },
    };
    let mut view = medtech_federation::protocol::QueryView::default();
    view.apply(
        "hospital-b",
        &Kind::SubmitQuery(pb::SubmitQuery {
            query_id: "tiny".into(),
            query: serde_json::to_vec(&s).unwrap(),
            cost: charge.encode(),
            on_behalf_of: "alice".into(),
            idempotency_key: String::new(),
        }),
    );
    let share = {
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let (_, shares) = dealer::generate(512, N as u16, T, &mut rng).unwrap();
        Arc::new(shares.into_iter().next().unwrap())
    };
    let mut m = medtech_federation::protocol::Member::new(
        "hospital-a",
        c.view.clone(),
        share,
        NoiseMode::Calibrated,
        Default::default(),
    );
    let data = Columns::from_devices(&hospital_data()[0]);
    let out = m.step(&view, &data, 0, &mut ChaCha20Rng::seed_from_u64(2));
    assert_eq!(out.len(), 1, "{out:?}");
    let Kind::QueryFailed(f) = &out[0] else {
        panic!("a contribution or noise share for a query below its floor: {out:?}")
    };
    assert!(f.reason.contains("epsilon below the floor"), "{}", f.reason);
    assert!(f.reason.contains("0.000388"), "{}", f.reason);
}

/// Votes to fail a query can be lost (a proposal timed out, a leader changed). With one
/// member's vote no longer enough, a lost vote could leave a query that nobody can release open
/// forever. Here no partial decryption ever lands and the first vote of every member is lost:
/// each member posts its vote again while it is not on the ledger, and the query fails.
#[test]
fn a_failure_vote_lost_in_transit_is_posted_again() {
    use std::collections::BTreeSet;
    let (mut c, _) = committee(NoiseMode::DisabledForTests, 14);
    let id = c
        .submit("alice", &spec(QueryKind::Count, None, vec![]))
        .unwrap();
    let mut lost: BTreeSet<String> = BTreeSet::new();
    c.tamper = Some(Box::new(move |who, k| match k {
        Kind::PartialDecryption(_) => None,
        Kind::QueryFailed(_) if lost.insert(who.to_owned()) => None,
        k => Some(k),
    }));
    // 40 rounds of 5 s: past the 60 s decryption timeout and several re-vote periods.
    match c.run(&id, 5_000, 40) {
        Some(Outcome::Failed(why)) => assert!(why.contains("not released within"), "{why}"),
        other => panic!("the lost votes were never posted again: {other:?}"),
    }
    let view = c.query_view(&id).unwrap();
    assert!(view.partials.is_empty());
}
