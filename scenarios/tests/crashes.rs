//! Crashes and partitions on a real 5-member committee (t = 3): members down during a query,
//! the Raft leader killed mid-query, a partitioned minority, a member restarted from disk.
//! After each, the oracle checks that every member holds the same log and checkpoint, the
//! export verifies, no acknowledged query is lost, no budget is overspent or double-charged,
//! and every release was made from t valid partial decryptions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medtech_federation::query::QueryKind;
use medtech_scenarios::harness::{query, released, values, Committee, Options};
use medtech_scenarios::oracle;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_completes_with_n_minus_t_members_down_and_says_who_contributed() {
    // Closing with only t members' noise shares needs close tolerance f = n − t (every share
    // then calibrated as a full noise draw).
    let mut c = Committee::start(Options {
        close_tolerance: Some(2),
        ..Options::exact()
    })
    .await
    .unwrap();
    c.register(0, "alice", 10.0, 100.0).await.unwrap();
    // n − t = 2 members down for the whole query.
    c.kill(3).await.unwrap();
    c.kill(4).await.unwrap();
    let id = c
        .submit(0, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    let r = released(c.wait(&id, WAIT).await.unwrap()).unwrap();
    assert_eq!(r.contributors, c.view.members[..3].to_vec());
    assert_eq!(values(&r), vec![c.count_of(&r.contributors)]);
    assert_eq!(r.decrypted_by.len(), 3);
    // They come back, catch up from the others, and agree.
    c.restart(3).await.unwrap();
    c.restart(4).await.unwrap();
    let report = oracle::check(&c, WAIT).await.unwrap();
    assert_eq!((report.queries, report.released), (1, 1));
    assert!(report.accused.is_empty(), "{:?}", report.accused);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_leader_killed_mid_query_loses_nothing_and_charges_once() {
    let mut c = Committee::start(Options::exact()).await.unwrap();
    c.register(0, "alice", 10.0, 100.0).await.unwrap();
    let leader = c.leader(&[], WAIT).await.unwrap();
    let via = (leader + 1) % c.n();
    let id = c
        .submit(via, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    // Mid-query: the first contribution is on the ledger.
    c.wait_contributions(via, &id, 1, WAIT).await.unwrap();
    c.kill(leader).await.unwrap();
    let new_leader = c.leader(&[leader], WAIT).await.unwrap();
    assert_ne!(new_leader, leader);
    let r = released(c.wait(&id, WAIT).await.unwrap()).unwrap();
    assert_eq!(values(&r), vec![c.count_of(&r.contributors)]);
    // The next query runs under the new leader, submitted through the old one's successor.
    let id2 = c
        .submit(new_leader, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    released(c.wait(&id2, WAIT).await.unwrap()).unwrap();
    c.restart(leader).await.unwrap();
    let report = oracle::check(&c, WAIT).await.unwrap();
    assert_eq!((report.queries, report.released), (2, 2));
    // Two queries of ε = 1 each: charged exactly twice (the oracle also checks the sum).
    let h = c.handle(0).unwrap();
    let spent = h
        .read()
        .unwrap()
        .state()
        .budgets()
        .spent(&medtech_noise::Subject::Researcher("alice".into()));
    assert_eq!(spent.epsilon.0, 2_000_000);
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_minority_cannot_write_and_catches_up_after_healing() {
    // The majority closes with its own t noise shares: close tolerance f = n − t.
    let c = Committee::start(Options {
        close_tolerance: Some(2),
        ..Options::exact()
    })
    .await
    .unwrap();
    c.register(0, "alice", 10.0, 100.0).await.unwrap();
    // Cut {d, e} off from {a, b, c}; the majority elects a leader among itself.
    c.partition(&[3, 4]);
    let leader = c.leader(&[3, 4], WAIT).await.unwrap();
    assert!(leader < 3);
    let id = c
        .submit(0, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    let r = released(c.wait(&id, WAIT).await.unwrap()).unwrap();
    assert_eq!(r.contributors, c.view.members[..3].to_vec());
    assert_eq!(values(&r), vec![c.count_of(&r.contributors)]);
    // The minority cannot get anything committed: a submission through it is refused, not
    // silently lost, and charges nothing.
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        c.submit(3, "alice", &query(QueryKind::Count, None)),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a minority member had a query committed"
    );
    let behind = c.handle(3).unwrap().head().unwrap().0;
    let ahead = c.handle(0).unwrap().head().unwrap().0;
    assert!(behind < ahead, "the minority kept up: {behind} vs {ahead}");
    // Healed: the minority catches up, and a query through it uses all five hospitals.
    c.heal();
    let report = oracle::check(&c, WAIT).await.unwrap();
    assert_eq!(report.queries, 1);
    let id2 = c
        .submit(4, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    let r2 = released(c.wait(&id2, WAIT).await.unwrap()).unwrap();
    assert_eq!(r2.contributors.len(), 5);
    assert_eq!(values(&r2), vec![c.count_of(&r2.contributors)]);
    let report = oracle::check(&c, WAIT).await.unwrap();
    assert_eq!((report.queries, report.released), (2, 2));
    c.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_from_disk_catches_up_and_contributes_again() {
    let mut c = Committee::start(Options::exact()).await.unwrap();
    c.register(0, "alice", 10.0, 100.0).await.unwrap();
    c.kill(2).await.unwrap();
    let id = c
        .submit(
            0,
            "alice",
            &query(QueryKind::GroupedCount, Some("category")),
        )
        .await
        .unwrap();
    let r = released(c.wait(&id, WAIT).await.unwrap()).unwrap();
    assert!(!r.contributors.contains(&c.view.members[2]));
    c.restart(2).await.unwrap();
    // Its query loop rebuilt what it knows from the ledger: it sees the first query ended.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = c.indexes[2]
            .read()
            .unwrap()
            .get(&id)
            .is_some_and(|q| q.outcome.is_some());
        if seen {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "member 2 never caught up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let id2 = c
        .submit(2, "alice", &query(QueryKind::Count, None))
        .await
        .unwrap();
    let r2 = released(c.wait(&id2, WAIT).await.unwrap()).unwrap();
    assert_eq!(r2.contributors.len(), 5);
    assert_eq!(values(&r2), vec![c.count_of(&r2.contributors)]);
    let report = oracle::check(&c, WAIT).await.unwrap();
    assert_eq!((report.queries, report.released), (2, 2));
    c.shutdown().await.unwrap();
}
