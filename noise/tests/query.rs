//! Query plans: sensitivities, budget split, every bin released, and intervals that cover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use medtech_noise::query::{bins, centre, encode_average_value};
use medtech_noise::{Committee, Mechanism, Micros, QueryPlan, QueryResult, QueryShape};
use rand_core::SeedableRng;

fn committee() -> Committee {
    Committee::new(5, 3).unwrap()
}

const EPS1: Mechanism = Mechanism::DiscreteLaplace {
    epsilon: Micros(1_000_000),
};

#[test]
fn count_uses_the_whole_budget_with_sensitivity_r() {
    let p = QueryPlan::new(QueryShape::Count, EPS1, committee(), 1).unwrap();
    assert_eq!(p.outputs.len(), 1);
    assert_eq!(p.outputs[0].sensitivity, 1);
    assert_eq!(p.cost.epsilon, Micros(1_000_000));
    let p3 = QueryPlan::new(QueryShape::Count, EPS1, committee(), 3).unwrap();
    assert_eq!(p3.outputs[0].sensitivity, 3);
}

#[test]
fn grouped_count_releases_every_bin_of_the_public_list_with_full_budget() {
    let p = QueryPlan::new(
        QueryShape::GroupedCount {
            bins: bins::SPECIALITY,
        },
        EPS1,
        committee(),
        1,
    )
    .unwrap();
    assert_eq!(
        p.outputs[0].coordinates, 56,
        "55 specialities + unspecified, empty ones included"
    );
    assert_eq!(
        p.cost.epsilon,
        Micros(1_000_000),
        "parallel composition: one ε for all bins"
    );
    // A result needs a value for every bin: dropping empty bins is refused.
    let raw = vec![vec![0i128; 55]];
    assert!(p.result(&raw, 3, 0.05).is_err());
}

#[test]
fn average_splits_budget_and_uses_clamped_centred_sensitivity() {
    let p = QueryPlan::new(
        QueryShape::Average {
            lower: 0,
            upper: 9999,
        },
        EPS1,
        committee(),
        1,
    )
    .unwrap();
    assert_eq!(p.outputs.len(), 2);
    assert_eq!(centre(0, 9999), 4999);
    assert_eq!(p.outputs[0].sensitivity, 5000, "max(9999 − 4999, 4999 − 0)");
    assert_eq!(p.outputs[1].sensitivity, 1);
    assert_eq!(p.cost.epsilon, Micros(1_000_000), "total charged once");
    assert_eq!(encode_average_value(12_000, 0, 9999), 5000);
    assert_eq!(encode_average_value(-5, 0, 9999), -4999);
    assert!(QueryPlan::new(
        QueryShape::Average { lower: 5, upper: 5 },
        EPS1,
        committee(),
        1
    )
    .is_err());
    // The widest clamp range computes its sensitivity without overflow, but at ε = 1 its sum's
    // noise (Δ ≈ 2^63) has no proof bound: refused, naming the floor (earlier it was accepted
    // and its shares silently proven under 2^31, i.e. truncated).
    let wide = QueryShape::Average {
        lower: i64::MIN,
        upper: i64::MAX,
    };
    assert!(matches!(
        QueryPlan::new(wide, EPS1, committee(), 1),
        Err(medtech_noise::Error::BelowEpsilonFloor { smallest, .. })
            if smallest == QueryPlan::min_epsilon(wide, 1).unwrap()
    ));
}

/// The federation's protocol in miniature: hospitals' exact counts plus every member's noise
/// share; the stated interval must cover the true value at (at least) the stated rate.
#[test]
fn noisy_counts_fall_within_their_interval_at_the_stated_rate() {
    let p = QueryPlan::new(
        QueryShape::GroupedCount { bins: 8 },
        Mechanism::DiscreteLaplace {
            epsilon: Micros(500_000),
        },
        committee(),
        1,
    )
    .unwrap();
    let truth: Vec<i128> = vec![0, 3, 100, 7, 0, 42, 1, 9999];
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(21);
    let (trials, alpha) = (3000, 0.1);
    let mut outside = 0usize;
    for _ in 0..trials {
        let raw: Vec<i128> = truth
            .iter()
            .map(|t| {
                t + (0..5)
                    .map(|_| p.outputs[0].share.sample_share(&mut rng).unwrap())
                    .sum::<i128>()
            })
            .collect();
        let QueryResult::GroupedCount(values) = p.result(&[raw], 5, alpha).unwrap() else {
            panic!()
        };
        assert_eq!(values.len(), 8);
        outside += values
            .iter()
            .zip(&truth)
            .filter(|(v, t)| (v.value - **t).unsigned_abs() > u128::from(v.half_width))
            .count();
    }
    let rate = outside as f64 / (trials * 8) as f64;
    assert!(rate <= alpha + 0.01, "miss rate {rate} above α = {alpha}");
}

#[test]
fn average_interval_covers_the_true_average() {
    let (lower, upper) = (0i64, 9999i64);
    let p = QueryPlan::new(QueryShape::Average { lower, upper }, EPS1, committee(), 1).unwrap();
    let values: Vec<i64> = (0..2000).map(|i| (i * 37) % 10_000).collect();
    let truth = values.iter().map(|&v| v as f64).sum::<f64>() / values.len() as f64;
    let sum: i128 = values
        .iter()
        .map(|&v| i128::from(encode_average_value(v, lower, upper)))
        .sum();
    let count = values.len() as i128;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(22);
    let (trials, alpha) = (2000, 0.1);
    let mut misses = 0;
    for _ in 0..trials {
        let s = sum
            + (0..3)
                .map(|_| p.outputs[0].share.sample_share(&mut rng).unwrap())
                .sum::<i128>();
        let c = count
            + (0..3)
                .map(|_| p.outputs[1].share.sample_share(&mut rng).unwrap())
                .sum::<i128>();
        let r = p.result(&[vec![s], vec![c]], 3, alpha).unwrap();
        let (lo, hi) = r.average_interval().expect("count far from zero");
        let est = r.average_estimate().unwrap();
        assert!(lo <= est && est <= hi);
        if truth < lo || truth > hi {
            misses += 1;
        }
    }
    assert!(
        f64::from(misses) / f64::from(trials) <= alpha,
        "{misses} misses"
    );
}

#[test]
fn display_clamping_does_not_touch_the_stored_value() {
    let p = QueryPlan::new(QueryShape::Count, EPS1, committee(), 1).unwrap();
    let QueryResult::Count(v) = p.result(&[vec![-3]], 3, 0.05).unwrap() else {
        panic!()
    };
    assert_eq!(v.value, -3, "stored raw");
    assert_eq!(v.display_count(), 0, "shown clamped");
}

#[test]
fn noise_scale_per_epsilon_is_as_documented() {
    // docs/privacy.md's table: std of the discrete Laplace from the m honest shares (n = 5,
    // t = 3, default f = 1: m = 2).
    for (eps, want) in [
        (100_000u64, 14.1f64),
        (1_000_000, 1.357),
        (10_000_000, 0.00953),
    ] {
        let p = QueryPlan::new(
            QueryShape::Count,
            Mechanism::DiscreteLaplace {
                epsilon: Micros(eps),
            },
            committee(),
            1,
        )
        .unwrap();
        let share = p.outputs[0].share;
        let sd = share.variance(share.committee().honest_shares()).sqrt();
        assert!(
            (sd - want).abs() / want < 0.02,
            "ε = {}: σ = {sd}",
            eps as f64 / 1e6
        );
    }
}

#[test]
fn gaussian_plans_charge_the_kls21_term() {
    use medtech_noise::mechanism::kls21_tau;
    // σ² = 10/3 per share (ρ = 0.05, m = 3): τ is tiny but positive; one millionth is charged.
    let tau = kls21_tau(3, 10.0 / 3.0);
    assert!(tau > 0.0 && tau < 1e-6, "τ = {tau}");
    assert_eq!(
        kls21_tau(1, 2.0),
        0.0,
        "a single discrete Gaussian is exact"
    );
    let p = QueryPlan::new(
        QueryShape::Count,
        Mechanism::DiscreteGaussian {
            rho: Micros(50_000),
        },
        committee(),
        1,
    )
    .unwrap();
    assert_eq!(p.cost.rho, Micros(50_001));
    // Average halves ρ per output. The count output (σ² ≈ 16.7) charges one extra millionth;
    // the sum output (Δ = 50, σ² ≈ 41,667) has τ = exp(−8·10⁵)·… which is exactly 0 in f64.
    let p = QueryPlan::new(
        QueryShape::Average {
            lower: 0,
            upper: 100,
        },
        Mechanism::DiscreteGaussian {
            rho: Micros(20_000),
        },
        committee(),
        1,
    )
    .unwrap();
    assert_eq!(p.cost.rho, Micros(20_001));
}

/// Issue 24 §4: a query whose noise has no proof bound (old code: `share_bound` fell back to
/// 2^31 and the shares were truncated) is refused, and the refusal names the smallest ε the
/// same query would be accepted with.
#[test]
fn a_query_below_its_epsilon_floor_is_refused_and_names_it() {
    let laplace = |eps: u64| Mechanism::DiscreteLaplace {
        epsilon: Micros(eps),
    };
    // An Average of a date over 2000–2040: Δ = 7305 days, each output gets ⌊ε/2⌋.
    let dates = QueryShape::Average {
        lower: 10_957,
        upper: 25_567,
    };
    let floor = QueryPlan::min_epsilon(dates, 1).unwrap();
    assert_eq!(floor, Micros(388));
    for (n, t) in [(3u16, 2u16), (5, 3), (7, 4)] {
        let c = Committee::new(n, t).unwrap();
        let plan = QueryPlan::new(dates, laplace(floor.0), c, 1).unwrap();
        assert!(plan.outputs.iter().all(|o| o.share.share_bound().is_ok()));
        for below in [floor.0 - 1, 100, 2] {
            let e = QueryPlan::new(dates, laplace(below), c, 1).unwrap_err();
            assert_eq!(
                e,
                medtech_noise::Error::BelowEpsilonFloor {
                    requested: Micros(below),
                    smallest: floor
                }
            );
            assert!(e.to_string().contains("0.000388"), "{e}");
        }
    }
    // Counts: every representable ε has a bound; with 100 records per device it does not.
    assert_eq!(
        QueryPlan::min_epsilon(QueryShape::Count, 1).unwrap(),
        Micros(1)
    );
    let r100 = QueryPlan::min_epsilon(QueryShape::GroupedCount { bins: 56 }, 100).unwrap();
    assert_eq!(r100, Micros(3)); // ⌈57·10⁶·100 / 2^31⌉
    assert!(QueryPlan::new(QueryShape::Count, laplace(2), committee(), 100).is_err());
    assert!(QueryPlan::new(QueryShape::Count, laplace(3), committee(), 100).is_ok());
}
