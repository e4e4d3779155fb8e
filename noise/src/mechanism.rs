//! Distributed mechanisms: what each committee member adds, so that the noise of any
//! `m = n − f − t + 1` members already protects the release, even if `t − 1` collude (drop,
//! reveal or subtract their own shares) and the close omits the shares of `f` members that are
//! down ([`Committee`]).
//!
//! * **Discrete Laplace, pure ε-DP (default).** `q = exp(−ε/Δ₁)`. Each member adds
//!   `Pólya(1/m, q) − Pólya(1/m, q)`. Pólya(r, q) is infinitely divisible — the sum of `m`
//!   independent Pólya(1/m, q) is Pólya(1, q), the geometric `(1−q)q^k` — so any `m` honest shares
//!   sum to exactly a difference of two geometrics: the discrete Laplace `P(z) ∝ q^|z|`, which is
//!   ε-DP for L1 sensitivity Δ₁ (the geometric mechanism, Ghosh–Roughgarden–Sundararajan 2009).
//!   More shares only add independent noise (post-processing).
//! * **Discrete Gaussian, ρ-zCDP (option).** Each member adds `N_Z(0, σ²)` with
//!   `σ = Δ₂/√(2ρm)` (σ ≥ 1.5 enforced). A sum of `m` discrete Gaussians is not a discrete
//!   Gaussian; Kairouz–Liu–Steinke (ICML 2021, Theorem 1) bound it as `ρ'`-zCDP with
//!   `ρ' = Δ₂²/(2mσ²) + τ/4`, `τ = 10·Σ_{k=1}^{m−1} exp(−2π²σ²·k/(k+1))`. The extra `τ/4` (about
//!   6·10⁻¹⁰ at σ = 1.5) is charged to the budget, rounded up to a millionth
//!   ([`ShareSpec::cost`]).
//! * **Binomial, (ε, δ)-DP (option, the basis for verifiable noise).** Each member adds
//!   `Binomial(2k, ½) − k`; the `m` honest shares sum to `Binomial(2km, ½) − km`. With
//!   `2km ≥ 64·Δ²·ln(2/δ)/ε²` coins this is (ε, δ)-DP (Dwork–Kenthapadi–McSherry–Mironov–Naor,
//!   Eurocrypt 2006, for Δ = 1; scaled by Δ² for sensitivity Δ).
//!
//! Privacy parameters are exact: ε and ρ in millionths ([`Micros`]), δ as `10^(−k)`.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::samplers;

/// A non-negative privacy amount in millionths (ε = 0.1 is `Micros(100_000)`), so that budgets
/// add exactly and replay identically on every node.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Micros(pub u64);

impl Micros {
    /// From a decimal value, rounded down to the nearest millionth (for configuration input).
    pub fn from_f64_floor(v: f64) -> Result<Self> {
        if !v.is_finite() || !(0.0..=1e12).contains(&v) {
            return Err(Error::InvalidParameter(format!("privacy amount {v}")));
        }
        Ok(Micros((v * 1e6).floor() as u64))
    }

    /// As a decimal (reporting only).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

/// Committee shape for noise calibration.
///
/// A close may omit the noise shares of up to `f` members that are down (`f` is the
/// committee's *close tolerance*, `0 ≤ f ≤ n − t`), so a close must list at least
/// `k = n − f` shares ([`Committee::close_shares`]). Up to `t − 1` of those can be the
/// colluders' own, which they subtract, so each share is calibrated for
/// `m = k − (t − 1) = n − f − t + 1` honest shares ([`Committee::honest_shares`]). These two
/// are the only definitions of `k` and `m`: the ledger's close rule, the node's close and the
/// calibration all call them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Committee {
    /// Members n.
    pub members: u16,
    /// Decryption threshold t.
    pub threshold: u16,
    /// Close tolerance f: members whose noise shares a close may omit.
    pub close_tolerance: u16,
}

/// The close tolerance of a committee that does not set one: one member may be down at the
/// close, clamped to `n − t`.
pub const DEFAULT_CLOSE_TOLERANCE: u16 = 1;

impl Committee {
    /// Validates `1 ≤ t ≤ n`; the close tolerance is the default
    /// ([`DEFAULT_CLOSE_TOLERANCE`] clamped to `n − t`).
    pub fn new(members: u16, threshold: u16) -> Result<Self> {
        Self::with_close_tolerance(members, threshold, None)
    }

    /// Validates `1 ≤ t ≤ n` and `0 ≤ f ≤ n − t` for `close_tolerance = Some(f)`; `None` takes
    /// the default ([`DEFAULT_CLOSE_TOLERANCE`] clamped to `n − t`).
    pub fn with_close_tolerance(
        members: u16,
        threshold: u16,
        close_tolerance: Option<u16>,
    ) -> Result<Self> {
        if members == 0 || threshold == 0 || threshold > members {
            return Err(Error::InvalidParameter(format!(
                "committee n = {members}, t = {threshold}"
            )));
        }
        let spare = members - threshold;
        let close_tolerance = match close_tolerance {
            None => DEFAULT_CLOSE_TOLERANCE.min(spare),
            Some(f) if f <= spare => f,
            Some(f) => {
                let why = format!("close tolerance f = {f} is above n − t = {spare}");
                return Err(Error::InvalidParameter(why));
            }
        };
        Ok(Committee {
            members,
            threshold,
            close_tolerance,
        })
    }

    /// `k = n − f`: the fewest noise shares a close may list.
    pub fn close_shares(&self) -> u32 {
        u32::from(self.members.saturating_sub(self.close_tolerance))
    }

    /// `m = k − (t − 1) = n − f − t + 1`: shares guaranteed to come from honest members in a
    /// close of at least `k` shares when `t − 1` collude (at least 1, since `f ≤ n − t`).
    pub fn honest_shares(&self) -> u32 {
        (self.close_shares() + 1)
            .saturating_sub(u32::from(self.threshold))
            .max(1)
    }
}

/// Which distributed mechanism, with its privacy parameter for the whole release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Mechanism {
    /// Distributed discrete Laplace, pure ε-DP.
    DiscreteLaplace {
        /// ε.
        epsilon: Micros,
    },
    /// Distributed discrete Gaussian, ρ-zCDP.
    DiscreteGaussian {
        /// ρ.
        rho: Micros,
    },
    /// Distributed binomial, (ε, δ)-DP with δ = 10^(−delta_exp).
    Binomial {
        /// ε.
        epsilon: Micros,
        /// δ = 10^(−delta_exp), 1 ≤ delta_exp ≤ 30.
        delta_exp: u32,
    },
}

/// A calibrated share sampler: one release (one output coordinate) of L1/L2 sensitivity
/// `sensitivity` under `mechanism`, for `committee`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSpec {
    mechanism: Mechanism,
    sensitivity: u64,
    committee: Committee,
    /// Discrete Laplace: q = exp(−num/den). Gaussian: σ² = num/den. Binomial: k coins pairs.
    num: u128,
    den: u128,
}

impl ShareSpec {
    /// Calibrates the per-member share for a release with integer sensitivity `sensitivity ≥ 1`.
    pub fn new(mechanism: Mechanism, sensitivity: u64, committee: Committee) -> Result<Self> {
        if sensitivity == 0 {
            return Err(Error::InvalidParameter(
                "sensitivity must be at least 1".into(),
            ));
        }
        let m = u128::from(committee.honest_shares());
        let delta = u128::from(sensitivity);
        let (num, den) = match mechanism {
            Mechanism::DiscreteLaplace { epsilon } => {
                if epsilon.0 == 0 {
                    return Err(Error::InvalidParameter("ε must be positive".into()));
                }
                // q = exp(−ε/Δ) = exp(−ε_micros / (10^6 Δ)).
                (u128::from(epsilon.0), 1_000_000 * delta)
            }
            Mechanism::DiscreteGaussian { rho } => {
                if rho.0 == 0 {
                    return Err(Error::InvalidParameter("ρ must be positive".into()));
                }
                // σ² = Δ² / (2ρm) = Δ²·10^6 / (2·ρ_micros·m).
                let num = delta * delta * 1_000_000;
                let den = 2 * u128::from(rho.0) * m;
                // σ ≥ 1.5 ⇔ σ² ≥ 9/4.
                if num * 4 < den * 9 {
                    return Err(Error::InvalidParameter(format!(
                        "per-member σ below 1.5 (ρ = {} too large for m = {m}); KLS21's bound needs σ ≥ 1.5",
                        rho.as_f64()
                    )));
                }
                (num, den)
            }
            Mechanism::Binomial { epsilon, delta_exp } => {
                if epsilon.0 == 0 || !(1..=30).contains(&delta_exp) {
                    return Err(Error::InvalidParameter(
                        "binomial needs ε > 0, δ = 10^-k with 1 ≤ k ≤ 30".into(),
                    ));
                }
                // total coins N ≥ 64 Δ² ln(2/δ) / ε²; per member 2k = ⌈N/m⌉ (rounded up to even).
                let ln_2_over_delta = (2.0f64).ln() + f64::from(delta_exp) * (10.0f64).ln();
                let eps = epsilon.as_f64();
                let total =
                    (64.0 * (sensitivity as f64).powi(2) * ln_2_over_delta / (eps * eps)).ceil();
                if !total.is_finite() || total > 1e15 {
                    return Err(Error::InvalidParameter(
                        "binomial needs too many coins; raise ε".into(),
                    ));
                }
                let per_member = (total as u128).div_ceil(m);
                (per_member.div_ceil(2), 1)
            }
        };
        Ok(ShareSpec {
            mechanism,
            sensitivity,
            committee,
            num,
            den,
        })
    }

    /// The narrowest of [`crate::commitment::SHARE_BOUNDS`] that holds one share with
    /// probability at least `1 − 2^−80`: a share lies in `[−B, B − 1]` except with probability
    ///
    /// * discrete Laplace: at most `2q^B` — each of the two Pólya(1/m, q) terms is
    ///   stochastically below a geometric (a Pólya(1, q) is the sum of independent Pólya(1/m, q)
    ///   and Pólya(1 − 1/m, q)), whose tail is `P(G ≥ B) = q^B`; `2q^B ≤ 2^−80` iff
    ///   `B·ε/Δ ≥ 81·ln 2 ≈ 56.1`, tested as `B·num ≥ 57·den` (`q = exp(−num/den)`);
    /// * discrete Gaussian: at most `2·exp(−B²/(2σ²))` (sub-Gaussian, Canonne–Kamath–Steinke
    ///   2020), tested as `B²·den ≥ 113·num` (`σ² = num/den`);
    /// * binomial: zero once `k ≤ B − 1` (a centred `Binomial(2k, ½) − k` lies in `[−k, k]`).
    ///
    /// Integer arithmetic only, so every member and verifier derives the same bound from the
    /// same calibration. When not even the widest bound (`2^31`) holds, there is no fallback:
    /// the calibration is refused ([`Error::BelowEpsilonFloor`] for the discrete Laplace, naming
    /// [`min_laplace_epsilon`]; [`Error::NoShareBound`] otherwise), and a query asking for it
    /// is refused at submission ([`crate::QueryPlan::new`]).
    pub fn share_bound(&self) -> Result<u64> {
        let holds = |b: u64| -> bool {
            let b = u128::from(b);
            match self.mechanism {
                Mechanism::DiscreteLaplace { .. } => {
                    match (b.checked_mul(self.num), self.den.checked_mul(LAPLACE_TAIL)) {
                        (Some(l), Some(r)) => l >= r,
                        _ => false,
                    }
                }
                Mechanism::DiscreteGaussian { .. } => {
                    match (
                        b.checked_mul(b).and_then(|b2| b2.checked_mul(self.den)),
                        self.num.checked_mul(113),
                    ) {
                        (Some(l), Some(r)) => l >= r,
                        _ => false,
                    }
                }
                Mechanism::Binomial { .. } => self.num < b,
            }
        };
        crate::commitment::SHARE_BOUNDS
            .into_iter()
            .find(|&b| holds(b))
            .ok_or_else(|| match self.mechanism {
                Mechanism::DiscreteLaplace { epsilon } => Error::BelowEpsilonFloor {
                    requested: epsilon,
                    smallest: min_laplace_epsilon(self.sensitivity),
                },
                Mechanism::DiscreteGaussian { rho } => Error::NoShareBound(format!(
                    "ρ = {} gives σ² = {}/{} > 2^62/113; raise ρ",
                    rho.as_f64(),
                    self.num,
                    self.den
                )),
                Mechanism::Binomial { .. } => Error::NoShareBound(format!(
                    "{} coin pairs per member exceed 2^31; raise ε",
                    self.num
                )),
            })
    }

    /// The most sampler steps one share of this spec may take ([`samplers::Work`]): two Pólya
    /// budgets ([`samplers::Work::for_polya`]) for the discrete Laplace, otherwise
    /// [`samplers::CONSTANT_WORK`]. With the ε floor ([`min_laplace_epsilon`]) the Pólya scale
    /// `den/num = Δ/ε` is at most `2^31/57 ≈ 2^25.2`, so this is at most about `2^34.2` steps.
    pub fn work_cap(&self) -> u64 {
        match self.mechanism {
            Mechanism::DiscreteLaplace { .. } => samplers::Work::for_polya(self.num, self.den)
                .limit()
                .saturating_mul(2),
            _ => samplers::CONSTANT_WORK,
        }
    }

    /// The mechanism.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The committee.
    pub fn committee(&self) -> Committee {
        self.committee
    }

    /// One member's noise share, drawn exactly from `rng` (which must be a CSPRNG: use
    /// [`crate::NoiseRng`] in production), within [`Self::work_cap`] sampler steps.
    /// [`Error::WorkExceeded`] voids the draw: the caller must fail, not draw again.
    pub fn sample_share<R: RngCore + CryptoRng + ?Sized>(&self, rng: &mut R) -> Result<i128> {
        self.sample_share_within(rng, &mut samplers::Work::new(self.work_cap()))
    }

    /// [`Self::sample_share`] spending from `work` (tests and benchmarks read
    /// [`samplers::Work::spent`] afterwards).
    pub fn sample_share_within<R: RngCore + CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
        work: &mut samplers::Work,
    ) -> Result<i128> {
        match self.mechanism {
            Mechanism::DiscreteLaplace { .. } => {
                let m = self.committee.honest_shares();
                let a = samplers::polya_within(rng, m, self.num, self.den, work)?;
                let b = samplers::polya_within(rng, m, self.num, self.den, work)?;
                samplers::signed_difference(a, b)
            }
            Mechanism::DiscreteGaussian { .. } => {
                samplers::discrete_gaussian_within(rng, self.num, self.den, work)
            }
            Mechanism::Binomial { .. } => {
                let k = u64::try_from(self.num).map_err(|_| Error::Overflow("binomial coins"))?;
                Ok(samplers::centered_binomial(rng, k))
            }
        }
    }

    /// Scale `Δ/ε` of the discrete Laplace that `m` honest shares sum to (reporting and the
    /// OpenDP cross-check).
    pub fn honest_total_laplace_scale(&self) -> Option<f64> {
        matches!(self.mechanism, Mechanism::DiscreteLaplace { .. })
            .then(|| self.den as f64 / self.num as f64)
    }

    /// Standard deviation `√(m·σ²)` of the sum of `m` honest discrete-Gaussian shares.
    pub fn honest_total_gaussian_sigma(&self) -> Option<f64> {
        matches!(self.mechanism, Mechanism::DiscreteGaussian { .. }).then(|| {
            (f64::from(self.committee.honest_shares()) * self.num as f64 / self.den as f64).sqrt()
        })
    }

    /// The privacy cost of releasing one output noised by `m` honest shares of this spec:
    /// ε for the discrete Laplace; `ρ + ⌈τ/4⌉` for the discrete Gaussian (KLS21, Theorem 1);
    /// ε and δ for the binomial. Coordinates of one output compose in parallel (disjoint bins).
    pub fn cost(&self) -> crate::accounting::Cost {
        use crate::accounting::{delta_from_exp, Cost};
        match self.mechanism {
            Mechanism::DiscreteLaplace { epsilon } => Cost {
                epsilon,
                ..Cost::default()
            },
            Mechanism::DiscreteGaussian { rho } => {
                let extra = (kls21_tau(
                    self.committee.honest_shares(),
                    self.num as f64 / self.den as f64,
                ) / 4.0
                    * 1e6)
                    .ceil() as u64;
                Cost {
                    rho: Micros(rho.0.saturating_add(extra)),
                    ..Cost::default()
                }
            }
            Mechanism::Binomial { epsilon, delta_exp } => Cost {
                epsilon,
                delta: delta_from_exp(delta_exp),
                ..Cost::default()
            },
        }
    }

    /// The sensitivity this spec was calibrated for.
    pub fn sensitivity(&self) -> u64 {
        self.sensitivity
    }

    /// `q = exp(−ε/Δ)` (discrete Laplace only; reporting).
    pub fn q(&self) -> Option<f64> {
        matches!(self.mechanism, Mechanism::DiscreteLaplace { .. })
            .then(|| (-(self.num as f64) / (self.den as f64)).exp())
    }

    /// Variance of the sum of `shares` honest shares (reporting only; floating point).
    pub fn variance(&self, shares: u32) -> f64 {
        let k = f64::from(shares);
        match self.mechanism {
            Mechanism::DiscreteLaplace { .. } => {
                // Each share is the difference of two NB(1/m, q): variance 2·(1/m)·q/(1−q)².
                let q = self.q().unwrap_or(0.0); // always Some for this arm
                let m = f64::from(self.committee.honest_shares());
                k * 2.0 / m * q / ((1.0 - q) * (1.0 - q))
            }
            // The discrete Gaussian's variance is at most σ² (CKS20 Prop. 19).
            Mechanism::DiscreteGaussian { .. } => k * self.num as f64 / self.den as f64,
            Mechanism::Binomial { .. } => k * (2.0 * self.num as f64) / 4.0,
        }
    }

    /// A half-width `w` such that the sum of `shares` independent shares lies in `[−w, w]` with
    /// probability at least `1 − alpha`. Discrete Laplace: from the exact distribution (closed
    /// form `P(|Z| > w) = 2q^(w+1)/(1+q)` for exactly `m` shares; otherwise the tail of the
    /// difference of two Pólya(k/m, q), summed numerically from the exact pmf, or — for scales
    /// too large to sum — a Chernoff bound on the exact moment generating function). Discrete
    /// Gaussian: the sub-Gaussian bound `2·exp(−w²/(2kσ²))` (CKS20). Binomial: Hoeffding.
    pub fn confidence_half_width(&self, shares: u32, alpha: f64) -> Result<u64> {
        if !(alpha > 0.0 && alpha < 1.0) || shares == 0 {
            return Err(Error::InvalidParameter(
                "need 0 < α < 1 and at least one share".into(),
            ));
        }
        let k = f64::from(shares);
        let w = match self.mechanism {
            Mechanism::DiscreteLaplace { .. } => {
                let x = self.num as f64 / self.den as f64; // q = e^{-x}
                let r = k / f64::from(self.committee.honest_shares());
                dlap_sum_half_width(x, r, alpha)?
            }
            Mechanism::DiscreteGaussian { .. } => {
                let s2 = self.num as f64 / self.den as f64;
                (2.0 * k * s2 * (2.0 / alpha).ln()).sqrt()
            }
            Mechanism::Binomial { .. } => {
                // Each coin is ±½ around its mean: sub-Gaussian with variance proxy ¼ per coin.
                let coins = k * 2.0 * self.num as f64;
                (coins / 2.0 * (2.0 / alpha).ln()).sqrt()
            }
        };
        Ok(w.ceil() as u64)
    }
}

/// The discrete-Laplace tail test: a bound `B` holds a share when `B·ε/Δ ≥ 57`
/// (`2q^B ≤ 2^−80`, [`ShareSpec::share_bound`]).
const LAPLACE_TAIL: u128 = 57;

/// The smallest ε (in millionths, at least one) for which a discrete-Laplace share of
/// sensitivity `sensitivity` is provable within the widest noise-share bound `2^31` with a
/// per-share tail of at most `2^−80`: `⌈57·10^6·Δ / 2^31⌉`. It does not depend on the
/// committee: the tail bound `2q^B` holds for every `m` (each Pólya(1/m, q) term is below a
/// geometric). Below it, [`ShareSpec::share_bound`] refuses the calibration. Checked by
/// `the_epsilon_floor_is_the_smallest_that_has_a_bound`.
pub fn min_laplace_epsilon(sensitivity: u64) -> Micros {
    let widest = u128::from(crate::commitment::SHARE_BOUND);
    let need = (LAPLACE_TAIL * 1_000_000 * u128::from(sensitivity.max(1))).div_ceil(widest);
    Micros(u64::try_from(need).unwrap_or(u64::MAX).max(1))
}

/// KLS21's `τ = 10·Σ_{k=1}^{m−1} exp(−2π²σ²·k/(k+1))` for a sum of `m` discrete Gaussians of
/// variance parameter `σ²` (0 for a single share, which is exactly a discrete Gaussian).
pub fn kls21_tau(m: u32, sigma2: f64) -> f64 {
    let c = 2.0 * std::f64::consts::PI * std::f64::consts::PI * sigma2;
    (1..m)
        .map(|k| (-c * f64::from(k) / f64::from(k + 1)).exp())
        .sum::<f64>()
        * 10.0
}

/// Smallest `w` with `P(|A − B| > w) ≤ alpha` for independent `A, B ~ Pólya(r, q = e^{−x})`.
fn dlap_sum_half_width(x: f64, r: f64, alpha: f64) -> Result<f64> {
    let q = (-x).exp();
    if (r - 1.0).abs() < 1e-12 {
        // Discrete Laplace: P(|Z| > w) = 2 q^(w+1) / (1 + q).
        let w = ((alpha * (1.0 + q) / 2.0).ln() / q.ln() - 1.0).max(0.0);
        return Ok(w.ceil());
    }
    // Exact pmf of Pólya(r, q) until the remaining tail is provably below 1e-17: once the term
    // ratio q(k+r)/(k+1) is below 1 it decreases, so the tail after term p_k is at most
    // p_k·ρ/(1−ρ) (a geometric series). Too long a support: fall back to Chernoff.
    let mut pmf = vec![(1.0 - q).powf(r)];
    loop {
        if pmf.len() > 4_000_000 {
            return dlap_sum_chernoff(x, r, alpha);
        }
        let k = (pmf.len() - 1) as f64;
        let ratio = q * (k + r) / (k + 1.0);
        let last = pmf[pmf.len() - 1];
        if ratio < 1.0 && last * ratio / (1.0 - ratio) < 1e-17 {
            break;
        }
        pmf.push(last * ratio);
    }
    // survival[i] = P(A > i).
    let mut survival = vec![0.0; pmf.len()];
    let mut acc = 0.0;
    for i in (0..pmf.len()).rev() {
        survival[i] = acc;
        acc += pmf[i];
    }
    let two_sided = |w: usize| -> f64 {
        // P(A − B > w) = Σ_b P(B = b) P(A > w + b); symmetric, so doubled.
        let mut p = 0.0;
        for (b, pb) in pmf.iter().enumerate() {
            if w + b >= survival.len() {
                break;
            }
            p += pb * survival[w + b];
        }
        2.0 * p
    };
    let (mut lo, mut hi) = (0usize, pmf.len());
    if two_sided(0) <= alpha {
        return Ok(0.0);
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if two_sided(mid) <= alpha {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Ok(hi as f64)
}

/// Chernoff: `P(A − B ≥ w) ≤ inf_{0<s<x} e^{−sw}·((1−q)²/((1−qe^s)(1−qe^{−s})))^r`.
fn dlap_sum_chernoff(x: f64, r: f64, alpha: f64) -> Result<f64> {
    let q = (-x).exp();
    let log_tail = |w: f64| -> f64 {
        let mut best = f64::INFINITY;
        for i in 1..200 {
            let s = x * f64::from(i) / 200.0;
            let log_mgf =
                r * (2.0 * (1.0 - q).ln() - (1.0 - q * s.exp()).ln() - (1.0 - q * (-s).exp()).ln());
            best = best.min(-s * w + log_mgf);
        }
        best + 2f64.ln()
    };
    let target = alpha.ln();
    let mut hi = 1.0f64;
    while log_tail(hi) > target {
        hi *= 2.0;
        if hi > 1e18 {
            return Err(Error::Overflow("confidence interval"));
        }
    }
    let mut lo = 0.0f64;
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if log_tail(mid) > target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(hi.ceil())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_tail_agrees_with_closed_form_and_chernoff_is_looser() {
        for x in [0.01f64, 0.1, 1.0] {
            let closed = dlap_sum_half_width(x, 1.0, 0.05).unwrap();
            // Route r = 1 through the numeric path by a hair.
            let numeric = dlap_sum_half_width(x, 1.0 + 1e-9, 0.05).unwrap();
            assert!(
                (closed - numeric).abs() <= 1.0,
                "x={x}: {closed} vs {numeric}"
            );
            assert!(dlap_sum_chernoff(x, 1.0, 0.05).unwrap() >= closed);
        }
    }

    #[test]
    fn a_close_needs_n_minus_f_shares_and_each_share_is_calibrated_for_the_honest_rest() {
        // Default f = 1 clamped to n − t: (n, t) → (k, m).
        for (n, t, k, m) in [
            (3u16, 2u16, 2u32, 1u32),
            (5, 3, 4, 2),
            (7, 4, 6, 3),
            (3, 3, 3, 1),
        ] {
            let c = Committee::new(n, t).unwrap();
            assert_eq!((c.close_shares(), c.honest_shares()), (k, m), "n={n} t={t}");
            // Up to t − 1 of the k listed shares may be the colluders': m honest remain.
            assert_eq!(c.close_shares() - (u32::from(t) - 1), c.honest_shares());
        }
        // Every f from 0 to n − t, and nothing above.
        for f in 0..=2u16 {
            let c = Committee::with_close_tolerance(5, 3, Some(f)).unwrap();
            assert_eq!(c.close_shares(), 5 - u32::from(f));
            assert_eq!(c.honest_shares(), 3 - u32::from(f));
        }
        assert!(Committee::with_close_tolerance(5, 3, Some(3)).is_err());
    }

    fn spec(mechanism: Mechanism, sensitivity: u64) -> ShareSpec {
        ShareSpec::new(mechanism, sensitivity, Committee::new(5, 3).unwrap()).unwrap()
    }

    fn laplace(eps: f64) -> Mechanism {
        Mechanism::DiscreteLaplace {
            epsilon: Micros::from_f64_floor(eps).unwrap(),
        }
    }

    #[test]
    fn the_share_bound_is_the_narrowest_that_the_tail_bound_allows() {
        // Laplace: B·ε/Δ ≥ 57 picks the bound.
        let bound = |s: ShareSpec| s.share_bound().unwrap();
        assert_eq!(bound(spec(laplace(1.0), 1)), 1 << 7); // 57 ≤ 127
        assert_eq!(bound(spec(laplace(0.5), 1)), 1 << 7); // 114 ≤ 128
        assert_eq!(bound(spec(laplace(0.4), 1)), 1 << 15); // 142.5 > 128
        assert_eq!(bound(spec(laplace(1.0), 3)), 1 << 15);
        assert_eq!(bound(spec(laplace(0.1), 1)), 1 << 15);
        assert_eq!(bound(spec(laplace(0.001), 1)), 1 << 31);
        assert_eq!(bound(spec(laplace(1.0), 1 << 20)), 1 << 31);
        // No bound holds: refused, no fallback to 2^31 (issue 24 §4).
        assert!(matches!(
            spec(laplace(1.0), 1 << 40).share_bound(),
            Err(Error::BelowEpsilonFloor { .. })
        ));
        // Gaussian: σ² = Δ²/(2ρm); B² ≥ 113σ².
        let rho = |r: f64| Mechanism::DiscreteGaussian {
            rho: Micros::from_f64_floor(r).unwrap(),
        };
        // ρ = 0.05, m = 3: σ² = 3.33, 113σ² = 377 ≤ 128².
        assert_eq!(bound(spec(rho(0.05), 1)), 1 << 7);
        // ρ = 0.0001: σ² = 1667, 113σ² ≈ 188,000 > 128², ≤ 32768².
        assert_eq!(bound(spec(rho(0.0001), 1)), 1 << 15);
        // Binomial: k coin pairs per member, |share| ≤ k.
        let binomial = spec(
            Mechanism::Binomial {
                epsilon: Micros::from_f64_floor(1.0).unwrap(),
                delta_exp: 6,
            },
            1,
        );
        assert!(binomial.num >= 128 && binomial.num < 1 << 15);
        assert_eq!(bound(binomial), 1 << 15);
    }

    proptest::proptest! {
        /// More privacy (smaller ε, larger Δ) never gets a narrower bound: a calibration
        /// change cannot make a noisier query prove its shares in a tighter range.
        #[test]
        fn the_share_bound_never_narrows_as_the_noise_grows(
            e1 in 1u64..5_000_000,
            e2 in 1u64..5_000_000,
            d in 1u64..1_000,
        ) {
            let (lo, hi) = (e1.min(e2), e1.max(e2));
            // A refused calibration (no bound) counts as wider than every bound.
            let at = |eps: u64, delta: u64| {
                spec(Mechanism::DiscreteLaplace { epsilon: Micros(eps) }, delta)
                    .share_bound()
                    .unwrap_or(u64::MAX)
            };
            proptest::prop_assert!(at(lo, d) >= at(hi, d));
            proptest::prop_assert!(at(hi, d + 1) >= at(hi, d));
        }
    }

    #[test]
    fn shares_stay_far_inside_their_bound() {
        // Not a test of the 2^−80 tail (no sample could be), but a guard against a bound that
        // a calibration change made too tight: the largest of 200,000 shares stays below B/2.
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        for s in [spec(laplace(0.5), 1), spec(laplace(0.1), 1)] {
            let b = i128::from(s.share_bound().unwrap());
            let max = (0..200_000)
                .map(|_| s.sample_share(&mut rng).unwrap().abs())
                .max()
                .unwrap();
            assert!(2 * max < b, "max |share| {max} against bound {b}");
        }
    }

    #[test]
    fn the_epsilon_floor_is_the_smallest_that_has_a_bound() {
        // At the floor a bound holds (the widest); one millionth below, none does, and the
        // refusal names the floor.
        for delta in [1u64, 2, 37, 100, 5_000, 7_305, 50_000, 1 << 20, 1 << 30] {
            let floor = min_laplace_epsilon(delta);
            let at = |eps: u64| {
                spec(
                    Mechanism::DiscreteLaplace {
                        epsilon: Micros(eps),
                    },
                    delta,
                )
            };
            assert!(at(floor.0).share_bound().is_ok(), "Δ = {delta}");
            if floor.0 > 1 {
                assert_eq!(
                    at(floor.0 - 1).share_bound(),
                    Err(Error::BelowEpsilonFloor {
                        requested: Micros(floor.0 - 1),
                        smallest: floor
                    }),
                    "Δ = {delta}"
                );
            }
        }
        // Δ = 1: every representable ε has a bound (ε ≥ 10⁻⁶ > 57/2^31).
        assert_eq!(min_laplace_epsilon(1), Micros(1));
        // The Average of a date over 2000–2040 (Δ = 7305 days, half the budget): ε/2 ≥ 194·10⁻⁶.
        assert_eq!(min_laplace_epsilon(7_305), Micros(194));
        // The floor is the same for every committee shape (the tail bound holds for every m).
        for (n, t) in [(3u16, 2u16), (5, 3), (7, 4), (3, 3)] {
            let c = Committee::new(n, t).unwrap();
            let s = |eps| {
                ShareSpec::new(
                    Mechanism::DiscreteLaplace {
                        epsilon: Micros(eps),
                    },
                    7_305,
                    c,
                )
                .unwrap()
            };
            assert!(s(194).share_bound().is_ok());
            assert!(s(193).share_bound().is_err());
        }
    }

    #[test]
    fn an_exhausted_work_budget_voids_the_draw() {
        use rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(11);
        // ε = 10⁻⁶, Δ = 1: a Pólya with mean about 10⁶; 1,000 steps cannot finish it.
        let s = spec(Mechanism::DiscreteLaplace { epsilon: Micros(1) }, 1);
        let mut work = samplers::Work::new(1_000);
        assert_eq!(
            s.sample_share_within(&mut rng, &mut work),
            Err(Error::WorkExceeded(1_000))
        );
        assert_eq!(work.spent(), 1_000);
        // The share's own cap is far above what an honest draw spends (ε = 10⁻⁴: mean 10⁴).
        let s = spec(
            Mechanism::DiscreteLaplace {
                epsilon: Micros(100),
            },
            1,
        );
        let mut work = samplers::Work::new(s.work_cap());
        s.sample_share_within(&mut rng, &mut work).unwrap();
        assert!(
            work.spent() < s.work_cap() / 8,
            "{} of {}",
            work.spent(),
            s.work_cap()
        );
        // Every parameter gets a finite cap, the floor's at most 2^34.2 steps.
        let floor = spec(
            Mechanism::DiscreteLaplace {
                epsilon: min_laplace_epsilon(1 << 20),
            },
            1 << 20,
        );
        assert!(floor.work_cap() < 19_400_000_000, "{}", floor.work_cap());
    }
}
