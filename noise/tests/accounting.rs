//! Budgets: never overspent under any interleaving, charged once, final once noise is posted,
//! and identical on every node that replays the same events.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_noise::{Accountant, Cost, Event, Micros, Rejection, Subject};
use proptest::prelude::*;

fn eps(v: u64) -> Cost {
    Cost {
        epsilon: Micros(v),
        ..Cost::default()
    }
}

fn setup(acc: &mut Accountant, researcher_limit: u64, dataset_limit: u64, global: Option<u64>) {
    for r in ["alice", "bob", "carol"] {
        acc.apply(&Event::SetLimit {
            subject: Subject::Researcher(r.into()),
            limit: eps(researcher_limit),
        })
        .unwrap();
    }
    for d in ["hospital-a", "hospital-b"] {
        acc.apply(&Event::SetLimit {
            subject: Subject::Dataset(d.into()),
            limit: eps(dataset_limit),
        })
        .unwrap();
    }
    if let Some(g) = global {
        acc.apply(&Event::SetLimit {
            subject: Subject::Global,
            limit: eps(g),
        })
        .unwrap();
    }
}

fn arb_event() -> impl Strategy<Value = Event> {
    let researcher = prop::sample::select(vec!["alice", "bob", "carol", "mallory"]);
    let dataset = prop::sample::select(vec!["hospital-a", "hospital-b"]);
    let query = (0u8..30).prop_map(|q| format!("q{q}"));
    prop_oneof![
        4 => (query.clone(), researcher, dataset, 1u64..400_000).prop_map(|(query, r, d, c)| Event::Charge {
            query, researcher: r.into(), dataset: d.into(), cost: eps(c)
        }),
        2 => (query.clone(), 1u16..6).prop_map(|(query, member)| Event::NoisePosted { query, member }),
        1 => query.prop_map(|query| Event::Abandon { query }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Whatever the interleaving of charges, noise and abandonments, no subject ever spends more
    /// than its limit, and what is spent is exactly the sum of the live charges.
    #[test]
    fn spending_never_exceeds_any_budget(events in proptest::collection::vec(arb_event(), 1..120)) {
        let mut acc = Accountant::new();
        setup(&mut acc, 1_000_000, 1_500_000, Some(2_500_000));
        let mut live: std::collections::BTreeMap<String, (String, String, u64)> = Default::default();
        for e in &events {
            let ok = acc.apply(e).is_ok();
            match (e, ok) {
                (Event::Charge { query, researcher, dataset, cost }, true) => {
                    live.insert(query.clone(), (researcher.clone(), dataset.clone(), cost.epsilon.0));
                }
                (Event::Abandon { query }, true) => { live.remove(query); }
                _ => {}
            }
            for s in [Subject::Researcher("alice".into()), Subject::Researcher("bob".into()),
                      Subject::Researcher("carol".into()), Subject::Dataset("hospital-a".into()),
                      Subject::Dataset("hospital-b".into()), Subject::Global] {
                let spent = acc.spent(&s).epsilon.0;
                prop_assert!(spent <= acc.limit(&s).unwrap().epsilon.0, "{s:?} overspent");
                let expected: u64 = live.values().filter(|(r, d, _)| match &s {
                    Subject::Researcher(x) => x == r,
                    Subject::Dataset(x) => x == d,
                    Subject::Global => true,
                }).map(|(_, _, c)| c).sum();
                prop_assert_eq!(spent, expected, "{:?}", s);
            }
        }
        prop_assert_eq!(acc.spent(&Subject::Researcher("mallory".into())), Cost::default());
    }

    /// `check` says exactly what `apply` would do, and changes nothing (the ledger checks an
    /// entry before making it durable and applies it after).
    #[test]
    fn check_predicts_apply_and_changes_nothing(events in proptest::collection::vec(arb_event(), 1..120)) {
        let mut acc = Accountant::new();
        setup(&mut acc, 1_000_000, 1_500_000, Some(2_500_000));
        for e in &events {
            let before = acc.clone();
            let predicted = acc.check(e);
            prop_assert_eq!(&acc, &before);
            let got = acc.apply(e);
            prop_assert_eq!(predicted, got.clone());
            if got.is_err() {
                prop_assert_eq!(&acc, &before);
            }
        }
    }

    /// Two nodes replaying the same events end in the same state.
    #[test]
    fn replay_is_deterministic(events in proptest::collection::vec(arb_event(), 1..80)) {
        let mut a = Accountant::new();
        let mut b = Accountant::new();
        setup(&mut a, 900_000, 1_000_000, None);
        setup(&mut b, 900_000, 1_000_000, None);
        for e in &events {
            prop_assert_eq!(a.apply(e).is_ok(), b.apply(e).is_ok());
        }
        prop_assert_eq!(a, b);
    }

    /// A node that applies what `check` accepted through `apply_checked` (which skips the
    /// already-charged lookup) ends exactly where one using `apply` does.
    #[test]
    fn apply_checked_after_check_is_apply(events in proptest::collection::vec(arb_event(), 1..120)) {
        let mut a = Accountant::new();
        let mut b = Accountant::new();
        setup(&mut a, 1_000_000, 1_500_000, Some(2_500_000));
        setup(&mut b, 1_000_000, 1_500_000, Some(2_500_000));
        for e in &events {
            let ok = b.check(e).is_ok();
            prop_assert_eq!(a.apply(e).is_ok(), ok);
            if ok {
                prop_assert!(b.apply_checked(e).is_ok());
            }
            prop_assert_eq!(&a, &b);
        }
    }
}

#[test]
fn averaging_repeated_queries_is_stopped_by_the_budget() {
    // The attack: ask the same count again and again and average the noisy answers. With ε = 0.1
    // per query and a budget of ε = 1, exactly 10 answers are released, whatever the order.
    let mut acc = Accountant::new();
    setup(&mut acc, 1_000_000, 10_000_000, None);
    let accepted = (0..1000)
        .filter(|i| {
            acc.apply(&Event::Charge {
                query: format!("same-count-{i}"),
                researcher: "alice".into(),
                dataset: "hospital-a".into(),
                cost: eps(100_000),
            })
            .is_ok()
        })
        .count();
    assert_eq!(accepted, 10);
    assert_eq!(
        acc.remaining(&Subject::Researcher("alice".into())),
        Some(eps(0))
    );
}

#[test]
fn double_charge_of_one_query_is_refused() {
    let mut acc = Accountant::new();
    setup(&mut acc, 1_000_000, 1_000_000, None);
    let charge = Event::Charge {
        query: "q".into(),
        researcher: "bob".into(),
        dataset: "hospital-a".into(),
        cost: eps(300_000),
    };
    acc.apply(&charge).unwrap();
    assert_eq!(
        acc.apply(&charge),
        Err(Rejection::AlreadyCharged("q".into()))
    );
    assert_eq!(acc.spent(&Subject::Researcher("bob".into())), eps(300_000));
}

#[test]
fn charge_is_never_refunded_once_noise_is_posted() {
    let mut acc = Accountant::new();
    setup(&mut acc, 1_000_000, 1_000_000, None);
    acc.apply(&Event::Charge {
        query: "q1".into(),
        researcher: "bob".into(),
        dataset: "hospital-a".into(),
        cost: eps(400_000),
    })
    .unwrap();
    acc.apply(&Event::NoisePosted {
        query: "q1".into(),
        member: 3,
    })
    .unwrap();
    assert_eq!(
        acc.apply(&Event::Abandon { query: "q1".into() }),
        Err(Rejection::NoiseAlreadyPosted("q1".into()))
    );
    assert_eq!(acc.spent(&Subject::Researcher("bob".into())), eps(400_000));
    // Before any noise, abandoning refunds, once.
    acc.apply(&Event::Charge {
        query: "q2".into(),
        researcher: "bob".into(),
        dataset: "hospital-a".into(),
        cost: eps(400_000),
    })
    .unwrap();
    acc.apply(&Event::Abandon { query: "q2".into() }).unwrap();
    assert_eq!(
        acc.apply(&Event::Abandon { query: "q2".into() }),
        Err(Rejection::Abandoned("q2".into()))
    );
    assert_eq!(acc.spent(&Subject::Researcher("bob".into())), eps(400_000));
    assert_eq!(
        acc.apply(&Event::NoisePosted {
            query: "q2".into(),
            member: 1
        }),
        Err(Rejection::Abandoned("q2".into()))
    );
}

#[test]
fn charge_is_atomic_across_researcher_dataset_and_global() {
    let mut acc = Accountant::new();
    setup(&mut acc, 1_000_000, 500_000, None);
    // Within the researcher's limit but over the dataset's: nothing is spent anywhere.
    let r = acc.apply(&Event::Charge {
        query: "q".into(),
        researcher: "carol".into(),
        dataset: "hospital-b".into(),
        cost: eps(600_000),
    });
    assert!(matches!(
        r,
        Err(Rejection::OverBudget {
            subject: Subject::Dataset(_),
            ..
        })
    ));
    assert_eq!(
        acc.spent(&Subject::Researcher("carol".into())),
        Cost::default()
    );
    // Unknown researcher: rejected.
    let r = acc.apply(&Event::Charge {
        query: "q".into(),
        researcher: "mallory".into(),
        dataset: "hospital-b".into(),
        cost: eps(1),
    });
    assert_eq!(
        r,
        Err(Rejection::NoBudget(Subject::Researcher("mallory".into())))
    );
    // zCDP and pure ε are limited separately.
    let zcdp = Cost {
        rho: Micros(10),
        ..Cost::default()
    };
    let r = acc.apply(&Event::Charge {
        query: "z".into(),
        researcher: "carol".into(),
        dataset: "hospital-b".into(),
        cost: zcdp,
    });
    assert!(
        matches!(r, Err(Rejection::OverBudget { .. })),
        "no ρ budget was set"
    );
}

/// `apply_checked` is only for checked events: it skips exactly the double-charge lookup and
/// still enforces the limits.
#[test]
fn apply_checked_skips_only_the_double_charge_lookup() {
    let mut acc = Accountant::new();
    setup(&mut acc, 1_000_000, 1_000_000, None);
    let charge = |cost| Event::Charge {
        query: "q".into(),
        researcher: "bob".into(),
        dataset: "hospital-a".into(),
        cost: eps(cost),
    };
    acc.apply(&charge(300_000)).unwrap();
    assert!(matches!(
        acc.apply_checked(&charge(800_000)),
        Err(Rejection::OverBudget { .. })
    ));
    assert_eq!(acc.spent(&Subject::Researcher("bob".into())), eps(300_000));
    assert!(matches!(
        acc.check(&charge(100_000)),
        Err(Rejection::AlreadyCharged(_))
    ));
}
