//! Replication over openraft with mutual TLS: 3- and 5-member committees in one process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{budgets, fast_tuning, note, register, small_charge, Cluster, ORIGIN};
use medtech_ledger::entry::{sign_entry, Kind, ResearcherKey};
use medtech_ledger::merkle::{verify_inclusion, MerkleLog};
use medtech_protos::ledger::v1 as pb;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_commit_and_agree_on_the_merkle_root_at_every_size() {
    let c = Cluster::start(3, 2, fast_tuning()).await;
    let mut roots = Vec::new();
    for i in 0..12u64 {
        // Proposals through every member: followers forward to the leader.
        let via = &c.nodes[&(i % 3 + 1)];
        let r = via.propose_own(note(&format!("entry {i}"))).await.unwrap();
        assert_eq!(r.sequence, Some(i), "{r:?}");
        roots.push(c.wait_agree(i + 1).await);
    }
    // Every node's tree equals one rebuilt from its entries, and proofs verify.
    for node in c.nodes.values() {
        let l = node.read().unwrap();
        let mut t = MerkleLog::new();
        for i in 0..l.log().tree().size() {
            t.append(&l.log().get(i).unwrap());
        }
        assert_eq!(t.root(), l.log().root());
        for (size, root) in &roots {
            assert_eq!(l.log().tree().root_at(*size).unwrap(), *root);
        }
        let proof = l.log().tree().inclusion_proof(3, 12).unwrap();
        let leaf = medtech_ledger::merkle::leaf_hash(&l.log().get(3).unwrap());
        verify_inclusion(&leaf, 3, 12, &proof, &roots[11].1).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_survive_the_leader_being_killed() {
    let mut c = Cluster::start(5, 3, fast_tuning()).await;
    for i in 0..5 {
        c.nodes[&1]
            .propose_own(note(&format!("before {i}")))
            .await
            .unwrap();
    }
    c.wait_agree(5).await;
    let old = c.wait_leader(&[]).await;
    c.kill(old).await;
    let new = c.wait_leader(&[old]).await;
    assert_ne!(new, old);
    let via = *c.nodes.keys().find(|id| **id != new).unwrap();
    for i in 0..5 {
        let r = c.nodes[&via]
            .propose_own(note(&format!("after {i}")))
            .await
            .unwrap();
        assert!(r.sequence.is_some(), "{r:?}");
    }
    let (size, _) = c.wait_agree(10).await;
    assert_eq!(size, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_catches_up_from_its_disk() {
    let mut c = Cluster::start(3, 2, fast_tuning()).await;
    for i in 0..5 {
        c.nodes[&1]
            .propose_own(note(&format!("a{i}")))
            .await
            .unwrap();
    }
    c.wait_agree(5).await;
    let leader = c.wait_leader(&[]).await;
    let down = if leader == 3 { 2 } else { 3 };
    c.kill(down).await;
    for i in 0..10 {
        c.nodes[&leader]
            .propose_own(note(&format!("b{i}")))
            .await
            .unwrap();
    }
    c.restart(down).await;
    // It reopened its 5 entries from disk and received the rest.
    let (size, root) = c.wait_agree(15).await;
    assert_eq!(size, 15);
    assert_eq!(c.nodes[&down].head().unwrap(), (15, root));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_far_behind_is_brought_up_by_a_snapshot_after_compaction() {
    let mut tuning = fast_tuning();
    tuning.snapshot_every = 10;
    tuning.keep_after_snapshot = 0;
    let mut c = Cluster::start(3, 2, tuning).await;
    let leader = c.wait_leader(&[]).await;
    let down = if leader == 3 { 2 } else { 3 };
    c.kill(down).await;
    for i in 0..40 {
        c.nodes[&leader]
            .propose_own(note(&format!("s{i}")))
            .await
            .unwrap();
    }
    // The leader compacted its Raft log, so the lagging member needs the snapshot.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.nodes[&leader].raft().metrics().borrow().purged.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "leader never purged its log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.restart(down).await;
    let (size, _) = c.wait_agree(40).await;
    assert_eq!(size, 40);
    // The metrics are published asynchronously after the snapshot is installed: under load
    // (the whole workspace's tests on two cores) they can trail the applied state.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.nodes[&down].raft().metrics().borrow().snapshot.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lagging member caught up without installing a snapshot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_machine_rejects_bad_entries_without_halting() {
    let c = Cluster::start(3, 2, fast_tuning()).await;
    let node = &c.nodes[&1];
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let researcher = ResearcherKey::generate("r-1", &mut rng);
    // Registering and a first budget loosen privacy limits: t = 2 members post each.
    for k in std::iter::once(register(&researcher)).chain(budgets(&researcher)) {
        for m in [1, 2] {
            let r = c.nodes[&m].propose_own(k.clone()).await.unwrap();
            assert!(r.sequence.is_some(), "{:?}", r.rejection);
        }
    }

    let query = |id: &str| {
        Kind::SubmitQuery(pb::SubmitQuery {
            query_id: id.into(),
            query: b"count".to_vec(),
            cost: small_charge(),
            on_behalf_of: String::new(),
            idempotency_key: String::new(),
        })
    };
    let good = sign_entry(&researcher, ORIGIN, 1, 0, query("q1"));
    assert_eq!(node.propose(good.clone()).await.unwrap().sequence, Some(6));
    // Replay: same bytes again.
    let r = node.propose(good).await.unwrap();
    assert!(r.rejection.unwrap().contains("out of order"));
    // Garbage.
    let r = node.propose(vec![0xff; 40]).await.unwrap();
    assert!(r.rejection.unwrap().contains("decode"));
    // Forged: signed by an unregistered key claiming to be r-1.
    let mallory = ResearcherKey::generate("r-1", &mut rng);
    let r = node
        .propose(sign_entry(&mallory, ORIGIN, 2, 0, query("q2")))
        .await
        .unwrap();
    assert!(r.rejection.unwrap().contains("signature"));
    // Another ledger's entry.
    let r = node
        .propose(sign_entry(&researcher, "other/ledger", 2, 0, query("q3")))
        .await
        .unwrap();
    assert!(r.rejection.unwrap().contains("ledger"));
    // A researcher cannot write a member's kinds.
    let r = node
        .propose(sign_entry(&researcher, ORIGIN, 2, 0, note("hi")))
        .await
        .unwrap();
    assert!(r.rejection.unwrap().contains("only committee members"));
    // And the log goes on.
    let r = node
        .propose(sign_entry(&researcher, ORIGIN, 2, 0, query("q4")))
        .await
        .unwrap();
    assert_eq!(r.sequence, Some(7));
    let (size, _) = c.wait_agree(8).await;
    assert_eq!(size, 8);
    for n in c.nodes.values() {
        assert_eq!(n.read().unwrap().state().rejected(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_count_once_t_members_cosigned() {
    let c = Cluster::start(3, 2, fast_tuning()).await;
    for i in 0..4 {
        c.nodes[&2]
            .propose_own(note(&format!("c{i}")))
            .await
            .unwrap();
    }
    c.wait_agree(4).await;
    assert!(c.nodes[&1].latest_checkpoint().unwrap().is_none());
    c.nodes[&1].cosign_now().await.unwrap().unwrap();
    c.wait_agree(5).await;
    // One cosignature is not a quorum.
    assert!(c.nodes[&3].latest_checkpoint().unwrap().is_none());
    // Member 2 joins size 4 (not the 5 it sees): t = 2 reached.
    c.nodes[&2].cosign_now().await.unwrap().unwrap();
    c.wait_agree(6).await;
    let cp = c.nodes[&1].latest_checkpoint().unwrap().unwrap();
    assert_eq!(cp.checkpoint.size, 4);
    c.nodes[&3].cosign_now().await.unwrap().unwrap();
    c.wait_agree(7).await;
    let cp = c.nodes[&1].latest_checkpoint().unwrap().unwrap();
    assert_eq!(cp.checkpoint.size, 4);
    assert_eq!(cp.signatures.len(), 3);
    let members = &c.genesis.members;
    assert_eq!(cp.verify_quorum(members, 2).unwrap().len(), 3);
    // The note round-trips and still verifies.
    let again = medtech_ledger::checkpoint::SignedCheckpoint::from_note(&cp.to_note()).unwrap();
    again.verify_quorum(members, 2).unwrap();
    // Nothing new but cosignatures: nobody cosigns again.
    for n in c.nodes.values() {
        assert!(n.cosign_now().await.unwrap().is_none());
    }
    // New content: a new round starts.
    c.nodes[&3].propose_own(note("more")).await.unwrap();
    c.wait_agree(8).await;
    assert!(c.nodes[&2].cosign_now().await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_from_a_live_committee_verifies_offline() {
    let c = Cluster::start(3, 2, fast_tuning()).await;
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let researcher = ResearcherKey::generate("r-9", &mut rng);
    for k in std::iter::once(register(&researcher)).chain(budgets(&researcher)) {
        for m in [1, 2] {
            c.nodes[&m].propose_own(k.clone()).await.unwrap();
        }
    }
    for i in 0..6 {
        c.nodes[&(i % 3 + 1)]
            .propose_own(note(&format!("e{i}")))
            .await
            .unwrap();
    }
    let q = Kind::SubmitQuery(pb::SubmitQuery {
        query_id: "q".into(),
        query: vec![1],
        cost: small_charge(),
        on_behalf_of: String::new(),
        idempotency_key: String::new(),
    });
    c.nodes[&2]
        .propose(sign_entry(&researcher, ORIGIN, 1, 0, q))
        .await
        .unwrap();
    c.wait_agree(13).await;
    for id in [1, 2, 3] {
        c.nodes[&id].cosign_now().await.unwrap().unwrap();
    }
    c.wait_agree(16).await;
    let export = c.nodes[&3].export().unwrap();
    assert_eq!(export.entries.len(), 16);
    assert_eq!(export.checkpoints.len(), 1);
    let report = medtech_ledger::export::verify(&export);
    assert!(report.passed(), "{}", report.to_text());
    // Tamper with one stored entry: the verifier notices.
    let mut bad = export.clone();
    let mut bytes = hex::decode(&bad.entries[4]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    bad.entries[4] = hex::encode(bytes);
    assert!(!medtech_ledger::export::verify(&bad).passed());
}

/// Adding a hospital and removing one go through the ledger: a `ConfigChange` approved by t
/// current members is applied, and the leader makes the Raft membership match it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hospital_joins_and_another_leaves_through_config_change_entries() {
    let mut c = Cluster::start(3, 2, fast_tuning()).await;
    let leader = c.wait_leader(&[]).await;
    for i in 0..5 {
        c.nodes[&leader]
            .propose_own(note(&format!("before {i}")))
            .await
            .unwrap();
    }
    c.wait_agree(5).await;
    let new = c.add_member().await;
    assert_eq!(new, 4);
    let genesis = c.nodes[&1].read().unwrap().state().committee().clone();

    // One approval is below the threshold (2): rejected, nothing changes.
    let weak = c.config_change(&genesis, &[1, 2, 3, new], 3, &[1]).unwrap();
    let r = c.nodes[&leader].propose_own(weak).await.unwrap();
    assert!(r.rejection.unwrap().contains("approvals"));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(c.voters(leader), vec![1, 2, 3]);

    // Join: approved by two current members.
    let join = c
        .config_change(&genesis, &[1, 2, 3, new], 3, &[1, 2])
        .unwrap();
    let r = c.nodes[&leader].propose_own(join).await.unwrap();
    assert!(r.rejection.is_none(), "{r:?}");
    c.wait_voters(&[1, 2, 3, new]).await;
    for i in 0..5 {
        c.nodes[&new]
            .propose_own(note(&format!("joined {i}")))
            .await
            .unwrap();
    }
    // 5 notes, the join, 5 notes (the rejected change is not in the log).
    let (size, _) = c.wait_agree(11).await;
    assert_eq!(size, 11);
    assert_eq!(c.nodes[&new].read().unwrap().state().committee().epoch, 1);

    // Leave: member 1 is removed by the epoch-1 committee (t = 3 approvals).
    let epoch1 = c.nodes[&new].read().unwrap().state().committee().clone();
    let leave = c
        .config_change(&epoch1, &[2, 3, new], 2, &[1, 2, new])
        .unwrap();
    let r = c.nodes[&2].propose_own(leave).await.unwrap();
    assert!(r.rejection.is_none(), "{r:?}");
    c.wait_voters(&[2, 3, new]).await;
    c.kill(1).await;
    let leader = c.wait_leader(&[1]).await;
    for i in 0..5 {
        c.nodes[&leader]
            .propose_own(note(&format!("after {i}")))
            .await
            .unwrap();
    }
    let (size2, _) = c.wait_agree(size + 6).await;
    assert!(size2 >= size + 6);
    // The removed member's cosignature no longer counts; the new member's does.
    let epoch2 = c.nodes[&2].read().unwrap().state().committee().clone();
    assert_eq!(epoch2.epoch, 2);
    assert!(epoch2.member("hospital-a").is_none());
    assert!(epoch2.member("hospital-d").is_some());
}

/// A leader cut off from its quorum while a proposal is pending answers the proposer with an
/// error, in bounded time, instead of holding it forever (before the fix, `client_write` on a
/// cut-off leader never returned, even after the network healed); after healing, proposals
/// through it commit again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_to_a_cut_off_leader_fails_instead_of_hanging() {
    use medtech_ledger::raft::node::PROPOSE_TIMEOUT;
    use std::time::Duration;
    let c = Cluster::start(3, 2, fast_tuning()).await;
    c.nodes[&1].propose_own(note("before")).await.unwrap();
    c.wait_agree(1).await;
    let leader = c.wait_leader(&[]).await;
    c.partition(&[leader]);
    let bound = PROPOSE_TIMEOUT * 21 + Duration::from_secs(30);
    let stuck = tokio::time::timeout(bound, c.nodes[&leader].propose_own(note("cut off"))).await;
    let Ok(result) = stuck else {
        panic!("the proposal to a cut-off leader did not return within {bound:?}");
    };
    // (If it stepped down instead, the forwarding attempts to the unreachable majority end
    // in an error too.)
    assert!(result.is_err(), "a cut-off leader committed {result:?}");
    // The majority elected a leader of its own and writes on.
    let other = c.wait_leader(&[leader]).await;
    c.nodes[&other].propose_own(note("majority")).await.unwrap();
    c.heal();
    // Once it has heard of the newer leader, a proposal through it is forwarded and answered.
    for _ in 0..300 {
        if c.nodes[&leader].leader().await.is_some_and(|l| l != leader) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A caller retries an `Unavailable` answer (the step-down may still be under way on a
    // loaded machine); each attempt is answered within the timeout.
    let mut r = None;
    for _ in 0..3 {
        let attempt = tokio::time::timeout(
            Duration::from_secs(60),
            c.nodes[&leader].propose_own(note("healed")),
        )
        .await
        .expect("healed proposal hangs");
        let ok = attempt.is_ok();
        r = Some(attempt);
        if ok {
            break;
        }
    }
    // Answered: committed, or refused by the state machine if the abandoned proposal's
    // sequence number was taken after all.
    assert!(r.as_ref().is_some_and(Result::is_ok), "{r:?}");
}
