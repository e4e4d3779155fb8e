//! Queries driven through the replicated ledger (openraft over loopback mutual TLS), one query
//! loop per hospital, 512-bit keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medtech_federation::data::generate::devices;
use medtech_federation::data::Columns;
use medtech_federation::node::LocalFederation;
use medtech_federation::protocol::{NoiseMode, Outcome, Timeouts};
use medtech_federation::query::{Compiled, QueryKind, QuerySpec};
use medtech_noise::QueryResult;
use medtech_threshold::dealer;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_run_end_to_end_through_the_replicated_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    let (key, shares) = dealer::generate(512, 3, 2, &mut rng).unwrap();
    let fed = LocalFederation::start(
        dir.path(),
        key,
        shares,
        NoiseMode::DisabledForTests,
        Timeouts::default(),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    for (i, store) in fed.stores.iter().enumerate() {
        let name = fed.view.members[i].clone();
        let ds = devices(&name, 0, 200 + 100 * i as u64, i as u64);
        store.write().unwrap().write(&ds, |_, _| {}).unwrap();
        all.extend(ds);
    }
    fed.register("alice", 3.0, 30.0).await.unwrap();
    let reference = Columns::from_devices(&all);
    let spec = |kind, target: Option<&str>| QuerySpec {
        kind,
        target: target.map(str::to_owned),
        filters: vec![],
        start_time: None,
        end_time: None,
        epsilon: 1.0,
    };
    for (via, s) in [
        (0, spec(QueryKind::Count, None)),
        (1, spec(QueryKind::GroupedCount, Some("category"))),
        (2, spec(QueryKind::Average, Some("battery_level"))),
    ] {
        let id = fed.submit(via, "alice", &s).await.unwrap();
        let Outcome::Released(r) = fed.wait(&id, Duration::from_secs(60)).await.unwrap() else {
            panic!("query {s:?} failed");
        };
        let want = Compiled::new(s.clone(), &fed.view.platform, 3, 2)
            .unwrap()
            .evaluate(&reference);
        let got: Vec<i128> = match &r.result {
            QueryResult::Count(v) => vec![v.value],
            QueryResult::GroupedCount(v) => v.iter().map(|x| x.value).collect(),
            QueryResult::Average { sum, count, .. } => vec![sum.value, count.value],
        };
        assert_eq!(got, want, "{s:?}");
        assert_eq!(r.contributors.len(), 3);
    }
    // ε = 3 is spent: a fourth query is refused by the ledger.
    let err = fed
        .submit(0, "alice", &spec(QueryKind::Count, None))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("over budget"), "{err}");
    fed.shutdown().await.unwrap();
}

/// A 3-member federation (t = 2, 512-bit key, no noise) with 100 devices per hospital and
/// `alice` registered, every member's posts rewritten by `adversary`; and the exact count.
async fn federation_with(
    dir: &std::path::Path,
    adversary: medtech_federation::node::Adversary,
) -> (LocalFederation, i128) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (key, shares) = dealer::generate(512, 3, 2, &mut rng).unwrap();
    let fed = LocalFederation::start_with(
        dir,
        key,
        shares,
        NoiseMode::DisabledForTests,
        Timeouts::default(),
        Some(adversary),
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    for (i, store) in fed.stores.iter().enumerate() {
        let name = fed.view.members[i].clone();
        let ds = devices(&name, 0, 100, i as u64);
        store.write().unwrap().write(&ds, |_, _| {}).unwrap();
        all.extend(ds);
    }
    fed.register("alice", 5.0, 50.0).await.unwrap();
    let want = Compiled::new(count(), &fed.view.platform, 3, 2)
        .unwrap()
        .evaluate(&Columns::from_devices(&all));
    (fed, want[0])
}

fn count() -> QuerySpec {
    QuerySpec {
        kind: QueryKind::Count,
        target: None,
        filters: vec![],
        start_time: None,
        end_time: None,
        epsilon: 1.0,
    }
}

fn count_of(r: &medtech_federation::protocol::Release) -> i128 {
    match &r.result {
        QueryResult::Count(v) => v.value,
        other => panic!("not a count: {other:?}"),
    }
}

/// A release of a query as one member's ledger holds it, with how many partial decryptions
/// of the query precede it in the log.
type Held = (medtech_federation::protocol::Release, usize);

/// Waits until every member has applied the same log (the leader's, as `wait` saw it).
async fn settle(fed: &LocalFederation) {
    let n = fed.view.members.len();
    for _ in 0..200 {
        let heads: Vec<_> = (0..n)
            .map(|i| fed.handle(i).unwrap().head().unwrap())
            .collect();
        if heads.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the members did not converge");
}

/// Every member's ledger: the releases of query `id` it holds, and its rejections so far.
async fn releases_on_every_node(fed: &LocalFederation, id: &str) -> Vec<(Vec<Held>, u64)> {
    use medtech_ledger::entry::{Kind, ParsedEntry};
    settle(fed).await;
    (0..fed.view.members.len())
        .map(|i| {
            let node = fed.handle(i).unwrap();
            let l = node.read().unwrap();
            let mut out = Vec::new();
            let mut partials = 0;
            for s in 0..l.log().tree().size() {
                let e = ParsedEntry::decode(&l.log().get(s).unwrap()).unwrap();
                match e.kind() {
                    Some(Kind::PartialDecryption(p)) if p.query_id == id => partials += 1,
                    Some(Kind::ReleaseResult(r)) if r.query_id == id => {
                        out.push((serde_json::from_slice(&r.result).unwrap(), partials));
                    }
                    _ => {}
                }
            }
            (out, l.state().rejected())
        })
        .collect()
}

/// The attack: a member posts a `ReleaseResult` of its own making — the query's real labels,
/// contributors, noise shares and decrypters, but a count one higher. Every member proposes
/// such a forgery just before its honest release. Every node's state machine recomputes the
/// combination of the partials the release names and refuses the forgery; the honest release
/// that follows is accepted, so the query ends with the exact count on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_release_is_refused_by_every_node() {
    use medtech_ledger::entry::Kind;
    use medtech_protos::ledger::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let forge: medtech_federation::node::Adversary = std::sync::Arc::new(|_, k| match k {
        Kind::ReleaseResult(r) => {
            let mut forged: medtech_federation::protocol::Release =
                serde_json::from_slice(&r.result).unwrap();
            if let QueryResult::Count(v) = &mut forged.result {
                v.value += 1;
            }
            let forged = Kind::ReleaseResult(pb::ReleaseResult {
                query_id: r.query_id.clone(),
                result: serde_json::to_vec(&forged).unwrap(),
            });
            vec![forged, Kind::ReleaseResult(r)]
        }
        k => vec![k],
    });
    let (fed, want) = federation_with(dir.path(), forge).await;
    let id = fed.submit(0, "alice", &count()).await.unwrap();
    let Outcome::Released(r) = fed.wait(&id, Duration::from_secs(60)).await.unwrap() else {
        panic!("the query failed");
    };
    assert_eq!(count_of(&r), want, "the released count is the exact one");
    for (i, (releases, rejected)) in releases_on_every_node(&fed, &id).await.iter().enumerate() {
        assert_eq!(releases.len(), 1, "member {i} holds one release of {id}");
        assert_eq!(count_of(&releases[0].0), want, "member {i}");
        assert!(*rejected >= 1, "member {i} refused the forgery");
    }
    fed.shutdown().await.unwrap();
}

/// The attack: a member releases a query before `t` members have posted their partial
/// decryptions — here with the right answer (copied from an identical earlier query) and
/// naming the decrypters of that query, so every field looks valid. Refused: the named
/// members' partials of this query are not on the ledger, so nothing proves the values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_before_t_valid_partials_is_refused() {
    use medtech_ledger::entry::Kind;
    use medtech_protos::ledger::v1 as pb;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    // The first release seen, to replay; then, before posting a partial decryption of any
    // other query, each member first posts that release under the new query's id.
    let template: Arc<Mutex<Option<Vec<u8>>>> = Arc::default();
    let t2 = Arc::clone(&template);
    let early: medtech_federation::node::Adversary = Arc::new(move |view, k| match k {
        Kind::ReleaseResult(r) => {
            t2.lock().unwrap().get_or_insert_with(|| r.result.clone());
            vec![Kind::ReleaseResult(r)]
        }
        Kind::PartialDecryption(p) if view.partials.is_empty() => {
            match t2.lock().unwrap().clone() {
                Some(result) => vec![
                    Kind::ReleaseResult(pb::ReleaseResult {
                        query_id: p.query_id.clone(),
                        result,
                    }),
                    Kind::PartialDecryption(p),
                ],
                None => vec![Kind::PartialDecryption(p)],
            }
        }
        k => vec![k],
    });
    let (fed, want) = federation_with(dir.path(), early).await;
    let first = fed.submit(0, "alice", &count()).await.unwrap();
    let Outcome::Released(r) = fed.wait(&first, Duration::from_secs(60)).await.unwrap() else {
        panic!("the first query failed");
    };
    assert_eq!(count_of(&r), want);
    let rejected_before: Vec<u64> = releases_on_every_node(&fed, &first)
        .await
        .iter()
        .map(|(_, n)| *n)
        .collect();
    let second = fed.submit(1, "alice", &count()).await.unwrap();
    let Outcome::Released(r2) = fed.wait(&second, Duration::from_secs(60)).await.unwrap() else {
        panic!("the second query failed");
    };
    assert!(template.lock().unwrap().is_some());
    assert_eq!(count_of(&r2), want);
    for (i, (releases, rejected)) in releases_on_every_node(&fed, &second)
        .await
        .iter()
        .enumerate()
    {
        assert_eq!(releases.len(), 1, "member {i}");
        assert!(
            releases[0].1 >= 2,
            "member {i}: the release it holds came after t = 2 partial decryptions, not before"
        );
        assert_eq!(releases[0].0, *r2, "member {i}");
        assert!(
            *rejected > rejected_before[i],
            "member {i} refused the early release"
        );
    }
    fed.shutdown().await.unwrap();
}

/// Every member's ledger: the failures of query `id` it holds (author, ground), in log order.
async fn failures_on_every_node(fed: &LocalFederation, id: &str) -> Vec<Vec<(String, i32)>> {
    use medtech_ledger::entry::{AuthorId, Kind, ParsedEntry};
    settle(fed).await;
    (0..fed.view.members.len())
        .map(|i| {
            let node = fed.handle(i).unwrap();
            let l = node.read().unwrap();
            let mut out = Vec::new();
            for s in 0..l.log().tree().size() {
                let e = ParsedEntry::decode(&l.log().get(s).unwrap()).unwrap();
                if let (Some(Kind::QueryFailed(f)), AuthorId::Node(who)) = (e.kind(), &e.author) {
                    if f.query_id == id {
                        out.push((who.clone(), f.ground));
                    }
                }
            }
            out
        })
        .collect()
}

/// A `QueryFailed` entry for query `id`.
fn query_failed(
    id: &str,
    reason: &str,
    ground: medtech_protos::ledger::v1::FailureGround,
) -> medtech_ledger::entry::Kind {
    medtech_ledger::entry::Kind::QueryFailed(medtech_protos::ledger::v1::QueryFailed {
        query_id: id.into(),
        reason: reason.into(),
        ground: ground as i32,
    })
}

/// The attack: a member ends a researcher's charged query alone by claiming it is invalid
/// (the one ground the ledger lets one member fail a query with), just before contributing.
/// Every member's state machine recompiles the query, finds it valid, and refuses the claim:
/// the query releases the exact count, and no failure of it is on any ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_query_claimed_invalid_is_refused_by_every_node() {
    use medtech_ledger::entry::Kind;
    use medtech_protos::ledger::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    let claim: medtech_federation::node::Adversary = std::sync::Arc::new(|_, k| match k {
        Kind::Contribution(c) => vec![
            query_failed(
                &c.query_id,
                "claimed: the query does not compile",
                pb::FailureGround::QueryInvalid,
            ),
            Kind::Contribution(c),
        ],
        k => vec![k],
    });
    let (fed, want) = federation_with(dir.path(), claim).await;
    let id = fed.submit(0, "alice", &count()).await.unwrap();
    let Outcome::Released(r) = fed.wait(&id, Duration::from_secs(60)).await.unwrap() else {
        panic!("a claimed ground ended the query");
    };
    assert_eq!(count_of(&r), want);
    for (i, (releases, rejected)) in releases_on_every_node(&fed, &id).await.iter().enumerate() {
        assert_eq!(releases.len(), 1, "member {i}");
        assert!(*rejected >= 1, "member {i} refused the claimed ground");
    }
    for (i, failures) in failures_on_every_node(&fed, &id).await.iter().enumerate() {
        assert!(failures.is_empty(), "member {i} holds {failures:?}");
    }
    fed.shutdown().await.unwrap();
}

/// The attack: one member posts `QueryFailed` for a researcher's query before any noise (the
/// budget is already charged), to deny the result. Its entry is applied as one approval of a
/// failure; with t = 2 it does not end the query, which releases the exact count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_failing_a_query_before_noise_does_not_end_it() {
    use medtech_ledger::entry::Kind;
    use medtech_protos::ledger::v1 as pb;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let d2 = std::sync::Arc::clone(&done);
    // Only the first member to contribute plays the attacker.
    let deny: medtech_federation::node::Adversary = std::sync::Arc::new(move |_, k| match k {
        Kind::Contribution(c) if !d2.swap(true, Ordering::SeqCst) => vec![
            query_failed(
                &c.query_id,
                "no contributions in time",
                pb::FailureGround::Unspecified,
            ),
            Kind::Contribution(c),
        ],
        k => vec![k],
    });
    let (fed, want) = federation_with(dir.path(), deny).await;
    let id = fed.submit(0, "alice", &count()).await.unwrap();
    let Outcome::Released(r) = fed.wait(&id, Duration::from_secs(60)).await.unwrap() else {
        panic!("one member's failure ended the query");
    };
    assert!(done.load(Ordering::SeqCst), "the attacker posted");
    assert_eq!(count_of(&r), want);
    for (i, failures) in failures_on_every_node(&fed, &id).await.iter().enumerate() {
        assert_eq!(
            failures.len(),
            1,
            "member {i} holds the one approval: {failures:?}"
        );
        assert_eq!(failures[0].1, pb::FailureGround::Unspecified as i32);
    }
    fed.shutdown().await.unwrap();
}
