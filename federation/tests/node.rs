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
