//! Cheating members on a real 5-member committee (t = 3): a wrong partial decryption, an
//! out-of-range contribution, a replayed and a copied noise share, forged and mis-charged
//! query entries, and a member that signs two checkpoints of the same size. Each cheat is
//! detected, the culprit is named on the ledger, honest queries still complete, and the
//! oracle's invariants hold afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medtech_federation::protocol::{submit_entry, Outcome};
use medtech_federation::query::QueryKind;
use medtech_ledger::budget::QueryCharge;
use medtech_ledger::checkpoint::{Checkpoint, SignedCheckpoint};
use medtech_ledger::entry::{now_ms, sign_entry, AuthorId, Kind, ResearcherKey};
use medtech_noise::Subject;
use medtech_protos::ledger::v1 as pb;
use medtech_scenarios::adversary;
use medtech_scenarios::harness::{
    fresh_id, id_designating, query, released, values, Committee, Options, ORIGIN,
};
use medtech_scenarios::oracle;
use rand_core::OsRng;

const WAIT: Duration = Duration::from_secs(60);

fn spent(c: &Committee, subject: Subject) -> u64 {
    let h = c.handle(0).unwrap();
    let l = h.read().unwrap();
    l.state().budgets().spent(&subject).epsilon.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_partial_decryption_is_named_and_the_query_still_completes() {
    let mut c = Committee::start(Options::exact()).await.unwrap();
    c.register(0, "alice", 10.0, 100.0).await.unwrap();
    c.set_adversary(1, adversary::bad_partial_decryption())
        .await
        .unwrap();
    // The cheater is one of the t members designated to decrypt, so its partial is needed.
    let id = id_designating(&c.view, 1);
    c.submit_as(0, "alice", &query(QueryKind::Count, None), &id)
        .await
        .unwrap();
    let r = released(c.wait(&id, WAIT).await.unwrap()).unwrap();
    assert_eq!(values(&r), vec![c.count_of(&r.contributors)]);
    assert!(!r.decrypted_by.contains(&c.view.members[1]));
    let report = oracle::check(&c, WAIT).await.unwrap();
    assert!(
        report.accused.contains_key(c.name(1)),
        "the cheater is named on the ledger: {:?}",
        report.accused
    );
    assert_eq!(report.accused.len(), 1, "{:?}", report.accused);
    assert_eq!(
        report.bad_partials.get(&id).cloned(),
        Some(vec![c.name(1).to_owned()]),
        "the auditor finds the same bad partial"
    );
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_out_of_range_contribution_is_named_and_left_out() {
    let mut c = Committee::start(Options::exact()).await.unwrap();
    c.register(0, "alice", 10.0, 100.0).await.unwrap();
    // hospital-b claims 2^40 devices: it would swamp the count if it were summed.
    let key = c.view.key.clone();
    c.set_adversary(1, adversary::out_of_range_contribution(key, 1 << 40))
        .await
        .unwrap();
    let id = c
        .submit(0, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    let r = released(c.wait(&id, WAIT).await.unwrap()).unwrap();
    assert!(!r.contributors.contains(&c.view.members[1]));
    assert_eq!(r.contributors.len(), 4);
    assert_eq!(values(&r), vec![c.count_of(&r.contributors)]);
    let report = oracle::check(&c, WAIT).await.unwrap();
    let reasons = report.accused.get(c.name(1)).expect("hospital-b named");
    assert!(reasons[0].contains("contribution"), "{reasons:?}");
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_copied_noise_share_is_named_and_the_release_keeps_the_honest_noise() {
    // Two bad noise shares leave three valid ones: a close of n − t + 1 shares needs close
    // tolerance f = n − t (each share then calibrated for one honest share).
    let mut c = Committee::start(Options {
        close_tolerance: Some(2),
        ..Options::exact()
    })
    .await
    .unwrap();
    c.register(0, "alice", 10.0, 100.0).await.unwrap();
    let first = c
        .submit(0, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    released(c.wait(&first, WAIT).await.unwrap()).unwrap();
    let share_of = |who: &str| {
        c.entries()
            .unwrap()
            .into_iter()
            .find_map(|(author, k)| match k {
                Kind::NoiseCommitment(n) if author == who && n.query_id == first => Some(n),
                _ => None,
            })
            .unwrap()
    };
    // hospital-d replays its own share from the first query; hospital-e copies hospital-a's.
    let own = share_of(c.name(3));
    let copied = share_of(c.name(0));
    c.set_adversary(3, adversary::replayed_noise_share(own))
        .await
        .unwrap();
    c.set_adversary(4, adversary::replayed_noise_share(copied))
        .await
        .unwrap();
    let id = c
        .submit(1, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    let r = released(c.wait(&id, WAIT).await.unwrap()).unwrap();
    // The release carries exactly the three honest shares: k = n − f, what the calibration
    // (f = 2) needs when t − 1 members collude.
    assert_eq!(r.noise_from, c.view.members[..3].to_vec());
    assert_eq!(r.contributors.len(), 5);
    assert_eq!(values(&r), vec![c.count_of(&r.contributors)]);
    let report = oracle::check(&c, WAIT).await.unwrap();
    for cheat in [3, 4] {
        let reasons = report.accused.get(c.name(cheat)).expect("named");
        assert!(
            reasons.iter().any(|r| r.contains("noise share")),
            "{reasons:?}"
        );
    }
    assert_eq!(report.accused.len(), 2, "{:?}", report.accused);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_mischarged_query_entries_are_refused_or_named_and_cost_nothing_extra() {
    let c = Committee::start(Options::exact()).await.unwrap();
    c.register(0, "alice", 10.0, 100.0).await.unwrap();
    let h = c.handle(2).unwrap();
    let spec = query(QueryKind::Count, None);
    let compiled = c.compile(&spec).unwrap();
    // 1. Someone without alice's key signs a query as alice.
    let forger = ResearcherKey::generate("alice", &mut OsRng);
    let seq = h
        .read()
        .unwrap()
        .state()
        .next_seq(&AuthorId::Researcher("alice".into()));
    let forged = sign_entry(
        &forger,
        ORIGIN,
        seq,
        now_ms(),
        submit_entry(&fresh_id(), &compiled, "alice"),
    );
    let r = h.propose(forged).await.unwrap();
    let why = r
        .rejection
        .expect("a forged researcher signature is refused");
    assert!(why.contains("signature"), "{why}");
    // 2. A member submits for a researcher nobody registered.
    let r = h
        .propose_own(submit_entry(&fresh_id(), &compiled, "mallory"))
        .await
        .unwrap();
    assert!(r
        .rejection
        .expect("refused")
        .contains("no registered researcher"));
    assert_eq!(spent(&c, Subject::Researcher("alice".into())), 0);
    // 3. A member signs a query for alice charged a tenth of its cost: the ledger admits the
    // charge it states, every member recompiles, refuses to contribute and names the signer.
    let mut cheap = compiled.plan.cost;
    cheap.epsilon.0 /= 10;
    let id = fresh_id();
    let Kind::SubmitQuery(mut q) = submit_entry(&id, &compiled, "alice") else {
        unreachable!()
    };
    q.cost = QueryCharge {
        dataset: medtech_federation::protocol::DATASET.into(),
        cost: cheap,
    }
    .encode();
    let r = h.propose_own(Kind::SubmitQuery(q)).await.unwrap();
    assert!(r.rejection.is_none(), "{:?}", r.rejection);
    match c.wait(&id, WAIT).await.unwrap() {
        Outcome::Failed(why) => assert!(why.contains("charged"), "{why}"),
        o => panic!("a mis-charged query was answered: {o:?}"),
    }
    let report = oracle::check(&c, WAIT).await.unwrap();
    assert!(
        report.accused.contains_key(c.name(2)),
        "the signer is named: {:?}",
        report.accused
    );
    assert!(
        !c.entries()
            .unwrap()
            .iter()
            .any(|(_, k)| matches!(k, Kind::Contribution(x) if x.query_id == id)),
        "nobody contributed to the mis-charged query"
    );
    // 4. Honest queries still complete.
    let ok = c.submit(0, "alice", &spec).await.unwrap();
    released(c.wait(&ok, WAIT).await.unwrap()).unwrap();
    oracle::check(&c, WAIT).await.unwrap();
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equivocating_member_is_named_with_its_two_signatures_and_queries_still_complete() {
    let c = Committee::start(Options::exact()).await.unwrap();
    c.register(0, "alice", 10.0, 100.0).await.unwrap();
    let h = c.handle(0).unwrap();
    let (size, root) = h.head().unwrap();
    // hospital-c signs the log's true checkpoint (as it does when cosigning) and, for an
    // auditor it wants to deceive, another root at the same size.
    let liar = c.ledger.members[2].key();
    let mut fake = SignedCheckpoint::new(Checkpoint {
        origin: ORIGIN.into(),
        size,
        root: {
            let mut r = root;
            r[0] ^= 1;
            r
        },
    });
    fake.sign(&liar);
    let mut honest = SignedCheckpoint::new(Checkpoint {
        origin: ORIGIN.into(),
        size,
        root,
    });
    honest.sign(&c.ledger.members[1].key());
    // A checkpoint that agrees with the log accuses nobody, and the ledger refuses evidence
    // that proves nothing (a false accusation of hospital-b).
    assert!(h
        .report_checkpoint(&honest.to_note())
        .await
        .unwrap()
        .is_empty());
    let r = h
        .propose_own(Kind::Misbehaviour(pb::Misbehaviour {
            culprit: c.name(1).into(),
            query_id: String::new(),
            reason: "equivocation".into(),
            evidence: honest.to_note().into_bytes(),
        }))
        .await
        .unwrap();
    assert!(r
        .rejection
        .expect("refused")
        .contains("agrees with the log"));
    // The conflicting one names hospital-c, with the note as evidence every member re-checks.
    let named = h.report_checkpoint(&fake.to_note()).await.unwrap();
    assert_eq!(named, vec![c.name(2).to_owned()]);
    let id = c
        .submit(1, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    released(c.wait(&id, WAIT).await.unwrap()).unwrap();
    let report = oracle::check(&c, WAIT).await.unwrap();
    assert_eq!(
        report.accused.keys().cloned().collect::<Vec<_>>(),
        vec![c.name(2).to_owned()]
    );
    assert!(report.accused[c.name(2)][0].contains("equivocation"));
    c.shutdown().await.unwrap();
}
