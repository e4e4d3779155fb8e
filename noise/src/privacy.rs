//! Privacy maps from OpenDP, as an independent check of our calibration and for reporting.
//!
//! Our samplers and the budget arithmetic are our own (exact, integer, CSPRNG-driven); OpenDP's
//! measurements give the privacy guarantee of the *total* noise the honest members add, computed
//! by a library with machine-checked proofs:
//!
//! * the `m` honest discrete-Laplace shares sum to `DLap(scale = Δ/ε)`, and OpenDP's
//!   `make_laplace` privacy map at distance Δ must give back ε;
//! * a zCDP ρ is reported as (ε, δ) with OpenDP's `make_zCDP_to_approxDP` conversion.

use opendp::domains::AtomDomain;
use opendp::measurements::{make_gaussian, make_laplace};
use opendp::measures::{MaxDivergence, ZeroConcentratedDivergence};
use opendp::metrics::AbsoluteDistance;

use crate::error::{Error, Result};

fn odp<T>(r: opendp::error::Fallible<T>) -> Result<T> {
    r.map_err(|e| Error::InvalidParameter(format!("OpenDP: {e}")))
}

/// ε of the discrete Laplace mechanism with `scale` at integer sensitivity `sensitivity`, from
/// OpenDP's privacy map.
pub fn discrete_laplace_epsilon(scale: f64, sensitivity: i64) -> Result<f64> {
    let m = odp(make_laplace::<
        AtomDomain<i64>,
        AbsoluteDistance<i64>,
        MaxDivergence,
    >(
        AtomDomain::default(),
        AbsoluteDistance::default(),
        scale,
        None,
    ))?;
    odp(m.map(&sensitivity))
}

type GaussianMeasurement = opendp::core::Measurement<
    AtomDomain<i64>,
    AbsoluteDistance<i64>,
    ZeroConcentratedDivergence,
    i64,
>;

/// OpenDP's discrete Gaussian measurement on one integer, measured in zCDP.
fn gaussian(sigma: f64) -> Result<GaussianMeasurement> {
    odp(make_gaussian(
        AtomDomain::default(),
        AbsoluteDistance::default(),
        sigma,
        None,
    ))
}

/// ρ of the discrete Gaussian mechanism with standard deviation `sigma` at integer sensitivity
/// `sensitivity`, from OpenDP's privacy map.
pub fn discrete_gaussian_rho(sigma: f64, sensitivity: i64) -> Result<f64> {
    let m = gaussian(sigma)?;
    odp(m.map(&sensitivity))
}

/// The ε at which a ρ-zCDP release is (ε, δ)-DP, with OpenDP's conversion (for reporting).
pub fn zcdp_to_approx_dp(rho: f64, delta: f64) -> Result<f64> {
    use opendp::combinators::make_zCDP_to_approxDP;
    // A Gaussian of σ = 1/√(2ρ) at sensitivity 1 is exactly ρ-zCDP; convert its map.
    let sigma = (1.0 / (2.0 * rho)).sqrt();
    let m = gaussian(sigma)?;
    let approx = odp(make_zCDP_to_approxDP(m))?;
    let curve = odp(approx.map(&1))?;
    odp(curve.epsilon(delta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Committee, Mechanism, Micros, ShareSpec};

    #[test]
    fn privacy_maps_match_fixed_numbers() {
        // Discrete Laplace: ε = Δ/scale.
        assert!((discrete_laplace_epsilon(10.0, 1).unwrap() - 0.1).abs() < 1e-9);
        assert!((discrete_laplace_epsilon(4.0, 2).unwrap() - 0.5).abs() < 1e-9);
        // Discrete Gaussian: ρ = Δ²/(2σ²).
        assert!((discrete_gaussian_rho(5.0, 1).unwrap() - 0.02).abs() < 1e-9);
        // zCDP → (ε, δ): OpenDP's conversion is at least as tight as ρ + 2√(ρ ln(1/δ)).
        let (rho, delta) = (0.5f64, 1e-6f64);
        let eps = zcdp_to_approx_dp(rho, delta).unwrap();
        let classic = rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt();
        assert!(
            eps > 0.0 && eps <= classic + 1e-9,
            "ε = {eps}, classic bound {classic}"
        );
        assert!(eps > 0.8 * classic, "ε = {eps} suspiciously small");
    }

    /// Our calibration, checked by OpenDP: the noise of the m honest members alone delivers the
    /// promised ε (discrete Laplace) and ρ (discrete Gaussian variance), for several committees.
    #[test]
    fn honest_shares_deliver_the_stated_guarantee_per_opendp() {
        for (n, t) in [(3u16, 2u16), (5, 3), (7, 4), (9, 5)] {
            let c = Committee::new(n, t).unwrap();
            for (eps, sens) in [(100_000u64, 1u64), (1_000_000, 1), (500_000, 5000)] {
                let s = ShareSpec::new(
                    Mechanism::DiscreteLaplace {
                        epsilon: Micros(eps),
                    },
                    sens,
                    c,
                )
                .unwrap();
                let got =
                    discrete_laplace_epsilon(s.honest_total_laplace_scale().unwrap(), sens as i64)
                        .unwrap();
                assert!(
                    (got - eps as f64 / 1e6).abs() < 1e-6,
                    "n={n} t={t}: ε {got}"
                );
            }
            let s = ShareSpec::new(
                Mechanism::DiscreteGaussian {
                    rho: Micros(20_000),
                },
                1,
                c,
            )
            .unwrap();
            let got = discrete_gaussian_rho(s.honest_total_gaussian_sigma().unwrap(), 1).unwrap();
            assert!((got - 0.02).abs() < 1e-6, "n={n} t={t}: ρ {got}");
        }
    }
}
