//! χ² goodness-of-fit of every sampler and of the distributed sums against their exact pmfs,
//! OpenDP-style: fixed seeds, significance α = 10⁻⁶, bins merged until every expected count is at
//! least 5. A correct sampler fails one of these with probability about 10⁻⁶ per test; a biased
//! one (wrong rejection step, off-by-one in the geometric, float rounding) fails reliably.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use medtech_noise::{samplers, Committee, Mechanism, Micros, ShareSpec};
use rand_core::SeedableRng;

const N: usize = 200_000;

/// The distributed discrete-Laplace share spec for an n/t committee at ε (millionths), Δ, with
/// close tolerance f = 0 (every close lists all n shares; m = n − t + 1), the sampler tests'
/// reference shape.
fn dlap(n: u16, t: u16, epsilon: u64, sensitivity: u64) -> ShareSpec {
    dlap_f(n, t, Some(0), epsilon, sensitivity)
}

/// As [`dlap`], with close tolerance `f` (`None`: the default).
fn dlap_f(n: u16, t: u16, f: Option<u16>, epsilon: u64, sensitivity: u64) -> ShareSpec {
    let c = Committee::with_close_tolerance(n, t, f).unwrap();
    ShareSpec::new(
        Mechanism::DiscreteLaplace {
            epsilon: Micros(epsilon),
        },
        sensitivity,
        c,
    )
    .unwrap()
}

/// `N` draws of the sum of `shares` independent shares of `spec`, from a seeded RNG.
fn sums(spec: &ShareSpec, shares: usize, seed: u64) -> Vec<i128> {
    let mut r = rng(seed);
    (0..N)
        .map(|_| {
            (0..shares)
                .map(|_| spec.sample_share(&mut r).unwrap())
                .sum()
        })
        .collect()
}

fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

/// χ² critical value for `df` degrees of freedom at α = 10⁻⁶ (Wilson–Hilferty; z = 4.7534).
fn chi2_critical(df: usize) -> f64 {
    let d = df as f64;
    let z = 4.753_424_3;
    d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3)
}

/// Tests samples against `pmf` (defined on all integers, summing to 1 within `support`).
fn chi_square(samples: &[i128], pmf: impl Fn(i128) -> f64, support: (i128, i128), what: &str) {
    let mut counts: BTreeMap<i128, u64> = BTreeMap::new();
    for &s in samples {
        *counts.entry(s.clamp(support.0, support.1)).or_default() += 1;
    }
    // Expected counts per point, with the tails folded into the end points.
    let n = samples.len() as f64;
    let mut bins: Vec<(f64, u64)> = Vec::new();
    let mut acc_e = 0.0;
    let mut acc_o = 0u64;
    let total_inside: f64 = (support.0..=support.1).map(&pmf).sum();
    for z in support.0..=support.1 {
        let mut p = pmf(z);
        if z == support.0 || z == support.1 {
            p += (1.0 - total_inside).max(0.0) / 2.0;
        }
        acc_e += p * n;
        acc_o += counts.get(&z).copied().unwrap_or(0);
        if acc_e >= 5.0 {
            bins.push((acc_e, acc_o));
            acc_e = 0.0;
            acc_o = 0;
        }
    }
    if let Some(last) = bins.last_mut() {
        last.0 += acc_e;
        last.1 += acc_o;
    }
    assert!(bins.len() >= 2, "{what}: too few bins");
    let stat: f64 = bins.iter().map(|(e, o)| (*o as f64 - e).powi(2) / e).sum();
    let crit = chi2_critical(bins.len() - 1);
    assert!(
        stat < crit,
        "{what}: χ² = {stat:.1} ≥ critical {crit:.1} with {} bins",
        bins.len()
    );
}

/// Pólya(r, q) pmf: p(0) = (1−q)^r, p(k+1) = p(k)·q·(k+r)/(k+1).
fn polya_pmf(r: f64, q: f64, kmax: usize) -> Vec<f64> {
    let mut p = vec![(1.0 - q).powf(r)];
    for k in 0..kmax {
        let next = p[k] * q * (k as f64 + r) / (k as f64 + 1.0);
        p.push(next);
    }
    p
}

/// pmf of A − B for independent A, B with pmf `a`.
fn difference_pmf(a: &[f64]) -> impl Fn(i128) -> f64 + '_ {
    move |z: i128| {
        let mut s = 0.0;
        for (b, pb) in a.iter().enumerate() {
            let ia = z + b as i128;
            if ia >= 0 && (ia as usize) < a.len() {
                s += a[ia as usize] * pb;
            }
        }
        s
    }
}

fn dlap_pmf(q: f64) -> impl Fn(i128) -> f64 {
    move |z| (1.0 - q) / (1.0 + q) * q.powi(z.unsigned_abs() as i32)
}

#[test]
fn geometric_matches_its_pmf() {
    // q = exp(−1/3)
    let mut r = rng(1);
    let xs: Vec<i128> = (0..N)
        .map(|_| samplers::geometric(&mut r, 1, 3).unwrap() as i128)
        .collect();
    let q = (-1.0f64 / 3.0).exp();
    chi_square(
        &xs,
        |k| {
            if k < 0 {
                0.0
            } else {
                (1.0 - q) * q.powi(k as i32)
            }
        },
        (0, 60),
        "geometric",
    );
}

#[test]
fn bernoulli_exp_matches_exp() {
    for (num, den, seed) in [(1u128, 2u128, 2u64), (5, 2, 3), (0, 1, 4), (7, 100, 5)] {
        let mut r = rng(seed);
        let ones = (0..N)
            .filter(|_| samplers::bernoulli_exp(&mut r, num, den).unwrap())
            .count();
        let p = (-(num as f64) / den as f64).exp();
        let xs: Vec<i128> = std::iter::repeat_n(1, ones)
            .chain(std::iter::repeat_n(0, N - ones))
            .collect();
        if p < 1.0 {
            chi_square(
                &xs,
                |k| {
                    if k == 1 {
                        p
                    } else if k == 0 {
                        1.0 - p
                    } else {
                        0.0
                    }
                },
                (0, 1),
                "Bernoulli(exp)",
            );
        } else {
            assert_eq!(ones, N);
        }
    }
}

#[test]
fn single_polya_share_matches_exact_pmf() {
    // m = 3 (n = 5, t = 3), ε = 0.5, Δ = 1: q = exp(−0.5).
    let mut r = rng(6);
    let q = (-0.5f64).exp();
    let xs: Vec<i128> = (0..N)
        .map(|_| samplers::polya(&mut r, 3, 1, 2).unwrap() as i128)
        .collect();
    let pmf = polya_pmf(1.0 / 3.0, q, 200);
    chi_square(
        &xs,
        |k| {
            if k < 0 {
                0.0
            } else {
                pmf.get(k as usize).copied().unwrap_or(0.0)
            }
        },
        (0, 40),
        "Pólya(1/3, e^-0.5)",
    );
}

#[test]
fn one_members_share_matches_polya_difference() {
    let spec = dlap(5, 3, 500_000, 1);
    let xs = sums(&spec, 1, 7);
    let a = polya_pmf(1.0 / 3.0, (-0.5f64).exp(), 300);
    chi_square(&xs, difference_pmf(&a), (-40, 40), "one share");
}

#[test]
fn sum_of_m_shares_is_exactly_discrete_laplace() {
    // n = 5, t = 3 → m = 3; ε = 1, Δ = 2 → q = exp(−1/2).
    let spec = dlap(5, 3, 1_000_000, 2);
    let xs = sums(&spec, 3, 8);
    chi_square(&xs, dlap_pmf((-0.5f64).exp()), (-40, 40), "sum of m shares");
}

#[test]
fn colluders_removing_t_minus_1_shares_leave_exact_discrete_laplace() {
    // All n = 7 members post shares; t − 1 = 3 colluders (t = 4) subtract their own: what
    // remains is the sum of m = 4 honest shares, which must be exactly DLap(q).
    let spec = dlap(7, 4, 300_000, 1);
    let mut r = rng(9);
    let xs: Vec<i128> = (0..N)
        .map(|_| {
            let shares: Vec<i128> = (0..7).map(|_| spec.sample_share(&mut r).unwrap()).collect();
            let total: i128 = shares.iter().sum();
            let colluders: i128 = shares[..3].iter().sum();
            total - colluders
        })
        .collect();
    chi_square(
        &xs,
        dlap_pmf((-0.3f64).exp()),
        (-60, 60),
        "collusion residue",
    );
}

#[test]
fn colluders_in_a_close_of_n_minus_f_shares_leave_exact_discrete_laplace() {
    // Default f = 1: a close lists k = n − 1 shares (one member down); t − 1 colluders among
    // them subtract theirs, leaving m = n − t honest shares, which must be exactly DLap(q).
    for (n, t, seed) in [(3u16, 2u16, 21u64), (5, 3, 22), (7, 4, 23)] {
        let spec = dlap_f(n, t, None, 400_000, 1);
        let c = spec.committee();
        let k = c.close_shares() as usize;
        assert_eq!(k, usize::from(n) - 1);
        let mut r = rng(seed);
        let xs: Vec<i128> = (0..N)
            .map(|_| {
                let listed: Vec<i128> =
                    (0..k).map(|_| spec.sample_share(&mut r).unwrap()).collect();
                listed[usize::from(t) - 1..].iter().sum()
            })
            .collect();
        chi_square(
            &xs,
            dlap_pmf((-0.4f64).exp()),
            (-60, 60),
            &format!("{n}/{t}: honest rest of a close of k = {k} shares"),
        );
    }
}

#[test]
fn all_n_shares_sum_to_the_wider_polya_difference() {
    // The full sum of n = 5 shares (m = 3) is the difference of two Pólya(5/3, q).
    let spec = dlap(5, 3, 700_000, 1);
    let xs = sums(&spec, 5, 10);
    let a = polya_pmf(5.0 / 3.0, (-0.7f64).exp(), 400);
    chi_square(&xs, difference_pmf(&a), (-40, 40), "sum of n shares");
}

#[test]
fn discrete_gaussian_share_matches_its_pmf() {
    // n = 5, t = 3, f = 0 (m = 3), ρ = 0.05, Δ = 1: σ² = 1/(2·0.05·3) = 10/3.
    let c = Committee::with_close_tolerance(5, 3, Some(0)).unwrap();
    let spec = ShareSpec::new(
        Mechanism::DiscreteGaussian {
            rho: Micros(50_000),
        },
        1,
        c,
    )
    .unwrap();
    let xs = sums(&spec, 1, 11);
    let s2 = 10.0 / 3.0;
    let norm: f64 = (-200i32..=200)
        .map(|z| (-(f64::from(z).powi(2)) / (2.0 * s2)).exp())
        .sum();
    chi_square(
        &xs,
        |z| (-((z as f64).powi(2)) / (2.0 * s2)).exp() / norm,
        (-12, 12),
        "discrete Gaussian",
    );
}

#[test]
fn binomial_share_matches_its_pmf() {
    let mut r = rng(12);
    let k = 20u64;
    let xs: Vec<i128> = (0..N)
        .map(|_| samplers::centered_binomial(&mut r, k))
        .collect();
    // Binomial(40, ½) − 20.
    let pmf = |z: i128| {
        let j = z + 20;
        if !(0..=40).contains(&j) {
            return 0.0;
        }
        let mut c = 1.0f64;
        for i in 0..j {
            c = c * (40 - i) as f64 / (i + 1) as f64;
        }
        c / 2f64.powi(40)
    };
    chi_square(&xs, pmf, (-20, 20), "centred binomial");
}

#[test]
fn confidence_intervals_cover_at_least_their_rate() {
    let c = Committee::new(5, 3).unwrap();
    let alpha = 0.05;
    for (mech, seed) in [
        (
            Mechanism::DiscreteLaplace {
                epsilon: Micros(500_000),
            },
            13u64,
        ),
        (
            Mechanism::DiscreteGaussian {
                rho: Micros(50_000),
            },
            14,
        ),
        (
            Mechanism::Binomial {
                epsilon: Micros(2_000_000),
                delta_exp: 6,
            },
            15,
        ),
    ] {
        let spec = ShareSpec::new(mech, 1, c).unwrap();
        for shares in [3u32, 5] {
            let w = spec.confidence_half_width(shares, alpha).unwrap() as i128;
            let mut r = rng(seed + u64::from(shares));
            let trials = 20_000;
            let outside = (0..trials)
                .filter(|_| {
                    let s: i128 = (0..shares)
                        .map(|_| spec.sample_share(&mut r).unwrap())
                        .sum();
                    s.abs() > w
                })
                .count();
            // Coverage ≥ 95% (with slack for sampling error: 5.8% is > 4σ above 5%).
            assert!(
                (outside as f64) < 0.058 * trials as f64,
                "{mech:?}, {shares} shares: {outside}/{trials} outside ±{w}"
            );
        }
    }
}
