//! Query sensitivity, budget split and encoding for the three query kinds, and the noisy
//! results with their uncertainty.
//!
//! Neighbouring datasets differ by one device (added or removed) with up to
//! `max_records_per_device` records (1 by default: the device registry holds one record per
//! device, keyed by its UDI).
//!
//! * **Count** — one output, L1 sensitivity `r` (= `max_records_per_device`); the whole budget.
//!   COUNT counts devices, not distinct values (the original's mistake).
//! * **Grouped count** — one output per bin of a *fixed public* bin list (all 55 specialities,
//!   both categories, …). Empty bins are released too (never dropped: dropping them leaks which
//!   groups are empty). A device lies in one bin, so the bins are disjoint and parallel
//!   composition gives every bin the whole budget with sensitivity `r`.
//! * **Average** — two outputs: the sum of values clamped to the public `[lower, upper]` and
//!   centred at `c = ⌊(lower+upper)/2⌋` (sensitivity `r·max(upper−c, c−lower)`), and the count
//!   (sensitivity `r`); each gets half the budget (sequential composition). The released average
//!   is `c + sum/count`, post-processing of the two noisy outputs.
//!
//! Post-processing for display (a negative noisy count shown as 0, an average outside the clamp
//! range shown clamped) happens only in the `display_*` methods; stored and ledger figures are
//! always the raw noisy integers, so nothing biased feeds back into any later computation.

use serde::{Deserialize, Serialize};

use crate::accounting::Cost;
use crate::error::{Error, Result};
use crate::mechanism::{min_laplace_epsilon, Committee, Mechanism, Micros, ShareSpec};

/// The public bin lists of the device schema.
pub mod bins {
    /// `MedicalSpeciality`: 55 values, 1..=55 (0 = unspecified is its own bin 0).
    pub const SPECIALITY: u32 = 56;
    /// `DeviceCategory`: PORTABLE = 1, WEARABLE = 2 (0 = unspecified).
    pub const CATEGORY: u32 = 3;
    /// `active_status`: false, true.
    pub const ACTIVE_STATUS: u32 = 2;
}

/// What a query releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueryShape {
    /// Number of matching devices.
    Count,
    /// Number of matching devices per bin of a public list of `bins` bins.
    GroupedCount {
        /// Size of the public bin list.
        bins: u32,
    },
    /// Mean of an integer field over matching devices, clamped to `[lower, upper]`.
    Average {
        /// Public lower clamp.
        lower: i64,
        /// Public upper clamp.
        upper: i64,
    },
}

/// One released vector: its coordinates share a sensitivity and a share sampler.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputSpec {
    /// `"count"`, `"bins"`, `"sum"`.
    pub name: String,
    /// Number of coordinates (1, or the bin count).
    pub coordinates: u32,
    /// Per-coordinate sensitivity.
    pub sensitivity: u64,
    /// The calibrated per-member noise share for each coordinate.
    pub share: ShareSpec,
}

/// The calibrated plan for one query: what to release, how each member noises it, and what it
/// costs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryPlan {
    /// The query.
    pub shape: QueryShape,
    /// Outputs in release order (Average: sum, then count).
    pub outputs: Vec<OutputSpec>,
    /// Total privacy cost, charged once.
    pub cost: Cost,
}

fn halve(mechanism: Mechanism) -> Mechanism {
    match mechanism {
        Mechanism::DiscreteLaplace { epsilon } => Mechanism::DiscreteLaplace {
            epsilon: Micros(epsilon.0 / 2),
        },
        Mechanism::DiscreteGaussian { rho } => Mechanism::DiscreteGaussian {
            rho: Micros(rho.0 / 2),
        },
        Mechanism::Binomial { epsilon, delta_exp } => Mechanism::Binomial {
            epsilon: Micros(epsilon.0 / 2),
            // δ/10 ≤ δ/2: conservative.
            delta_exp: delta_exp + 1,
        },
    }
}

/// The per-coordinate sensitivity of an Average's sum, `r·max(upper − c, c − lower)`.
fn average_sum_sensitivity(lower: i64, upper: i64, r: u64) -> Result<u64> {
    let c = centre(lower, upper);
    let half_range = (i128::from(upper) - i128::from(c)).max(i128::from(c) - i128::from(lower));
    u64::try_from(half_range)
        .ok()
        .and_then(|h| h.checked_mul(r))
        .ok_or(Error::Overflow("average sensitivity"))
}

impl QueryPlan {
    /// The smallest discrete-Laplace ε (millionths) a query of `shape` may ask for with
    /// `max_records_per_device` records per device: below it, some output's noise share has
    /// no proof bound with a per-share tail of at most `2^−80`
    /// ([`ShareSpec::share_bound`], [`min_laplace_epsilon`]) and [`QueryPlan::new`] refuses it.
    /// Count and grouped count: `min_laplace_epsilon(r)`; Average: twice the sum's floor (each
    /// output gets `⌊ε/2⌋`). The same for every committee shape. Checked by
    /// `a_query_below_its_epsilon_floor_is_refused_and_names_it`.
    pub fn min_epsilon(shape: QueryShape, max_records_per_device: u64) -> Result<Micros> {
        let r = max_records_per_device.max(1);
        Ok(match shape {
            QueryShape::Count | QueryShape::GroupedCount { .. } => min_laplace_epsilon(r),
            QueryShape::Average { lower, upper } => {
                if lower >= upper {
                    return Err(Error::InvalidParameter(
                        "average needs lower < upper".into(),
                    ));
                }
                let sum = min_laplace_epsilon(average_sum_sensitivity(lower, upper, r)?);
                let count = min_laplace_epsilon(r);
                Micros(sum.0.max(count.0).saturating_mul(2))
            }
        })
    }

    /// Calibrates `shape` under `mechanism` (the budget of the whole query) for `committee`.
    /// Refuses a calibration whose noise shares no proof bound holds: for the discrete
    /// Laplace, [`Error::BelowEpsilonFloor`] naming [`QueryPlan::min_epsilon`].
    pub fn new(
        shape: QueryShape,
        mechanism: Mechanism,
        committee: Committee,
        max_records_per_device: u64,
    ) -> Result<Self> {
        let r = max_records_per_device.max(1);
        if let Mechanism::DiscreteLaplace { epsilon } = mechanism {
            let smallest = Self::min_epsilon(shape, r)?;
            if epsilon < smallest {
                return Err(Error::BelowEpsilonFloor {
                    requested: epsilon,
                    smallest,
                });
            }
        }
        let outputs = match shape {
            QueryShape::Count => vec![OutputSpec {
                name: "count".into(),
                coordinates: 1,
                sensitivity: r,
                share: ShareSpec::new(mechanism, r, committee)?,
            }],
            QueryShape::GroupedCount { bins } => {
                if bins == 0 || bins > 4096 {
                    return Err(Error::InvalidParameter(format!(
                        "{bins} bins; supported 1..=4096"
                    )));
                }
                vec![OutputSpec {
                    name: "bins".into(),
                    coordinates: bins,
                    sensitivity: r,
                    share: ShareSpec::new(mechanism, r, committee)?,
                }]
            }
            QueryShape::Average { lower, upper } => {
                if lower >= upper {
                    return Err(Error::InvalidParameter(
                        "average needs lower < upper".into(),
                    ));
                }
                let sens = average_sum_sensitivity(lower, upper, r)?;
                let half = halve(mechanism);
                vec![
                    OutputSpec {
                        name: "sum".into(),
                        coordinates: 1,
                        sensitivity: sens,
                        share: ShareSpec::new(half, sens, committee)?,
                    },
                    OutputSpec {
                        name: "count".into(),
                        coordinates: 1,
                        sensitivity: r,
                        share: ShareSpec::new(half, r, committee)?,
                    },
                ]
            }
        };
        // Every output's shares must be provable within a bound (no fallback): for the discrete
        // Laplace the floor above already guarantees it; the other mechanisms are refused here.
        for o in &outputs {
            o.share.share_bound()?;
        }
        // Outputs compose sequentially (Average: sum and count); coordinates within an output
        // in parallel. Halving rounds down, so the total never exceeds the requested budget
        // except by the Gaussian's charged KLS21 term.
        let mut cost = Cost::default();
        for o in &outputs {
            cost = cost
                .checked_add(o.share.cost())
                .ok_or(Error::Overflow("query cost"))?;
        }
        Ok(QueryPlan {
            shape,
            outputs,
            cost,
        })
    }

    /// Turns the decrypted outputs (raw noisy integers, one vector per output) into the result,
    /// given how many members' noise shares went into them and the interval level `1 − alpha`.
    pub fn result(&self, raw: &[Vec<i128>], shares: u32, alpha: f64) -> Result<QueryResult> {
        if raw.len() != self.outputs.len()
            || raw
                .iter()
                .zip(&self.outputs)
                .any(|(v, o)| v.len() != o.coordinates as usize)
        {
            return Err(Error::InvalidParameter(
                "outputs do not match the plan".into(),
            ));
        }
        let noisy = |o: &OutputSpec, v: i128, a: f64| -> Result<NoisyValue> {
            Ok(NoisyValue {
                value: v,
                half_width: o.share.confidence_half_width(shares, a)?,
                std_dev: o.share.variance(shares).sqrt(),
            })
        };
        Ok(match self.shape {
            QueryShape::Count => QueryResult::Count(noisy(&self.outputs[0], raw[0][0], alpha)?),
            QueryShape::GroupedCount { .. } => {
                // Every bin has the same noise law: compute its interval once.
                let template = noisy(&self.outputs[0], 0, alpha)?;
                QueryResult::GroupedCount(
                    raw[0]
                        .iter()
                        .map(|&v| NoisyValue {
                            value: v,
                            ..template
                        })
                        .collect(),
                )
            }
            QueryShape::Average { lower, upper } => {
                // Each of the two intervals at α/2: joint coverage ≥ 1 − α (union bound).
                let sum = noisy(&self.outputs[0], raw[0][0], alpha / 2.0)?;
                let count = noisy(&self.outputs[1], raw[1][0], alpha / 2.0)?;
                QueryResult::Average {
                    centre: centre(lower, upper),
                    lower,
                    upper,
                    sum,
                    count,
                }
            }
        })
    }
}

/// `⌊(lower + upper)/2⌋` without overflow.
pub fn centre(lower: i64, upper: i64) -> i64 {
    ((i128::from(lower) + i128::from(upper)).div_euclid(2)) as i64
}

/// A hospital's contribution of one value to an Average: clamped to `[lower, upper]`, centred.
pub fn encode_average_value(x: i64, lower: i64, upper: i64) -> i64 {
    x.clamp(lower, upper) - centre(lower, upper)
}

/// One noisy released integer with its uncertainty.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoisyValue {
    /// The raw noisy value, as stored (may be negative for a count).
    pub value: i128,
    /// The true value lies in `value ± half_width` with probability at least the stated level.
    pub half_width: u64,
    /// Standard deviation of the noise.
    pub std_dev: f64,
}

impl NoisyValue {
    /// For display only: a count shown as at least 0.
    pub fn display_count(&self) -> i128 {
        self.value.max(0)
    }
}

/// A query's released result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum QueryResult {
    /// Count.
    Count(NoisyValue),
    /// One noisy count per bin of the public list, empty bins included.
    GroupedCount(Vec<NoisyValue>),
    /// The two noisy outputs of an average and the public clamp.
    Average {
        /// Centre `c` subtracted from every value.
        centre: i64,
        /// Public lower clamp.
        lower: i64,
        /// Public upper clamp.
        upper: i64,
        /// Noisy centred sum.
        sum: NoisyValue,
        /// Noisy count.
        count: NoisyValue,
    },
}

impl QueryResult {
    /// Average: the point estimate `c + sum/count` (None when the noisy count is not positive).
    pub fn average_estimate(&self) -> Option<f64> {
        match self {
            QueryResult::Average {
                centre, sum, count, ..
            } if count.value > 0 => Some(*centre as f64 + sum.value as f64 / count.value as f64),
            _ => None,
        }
    }

    /// Average: an interval containing the true average with the stated probability (from the
    /// corners of the sum and count intervals), or None when the count interval reaches 0.
    pub fn average_interval(&self) -> Option<(f64, f64)> {
        let QueryResult::Average {
            centre,
            sum,
            count,
            lower,
            upper,
        } = self
        else {
            return None;
        };
        let c_lo = count.value - i128::from(count.half_width);
        if c_lo <= 0 {
            return None;
        }
        let c_hi = count.value + i128::from(count.half_width);
        let s_lo = sum.value - i128::from(sum.half_width);
        let s_hi = sum.value + i128::from(sum.half_width);
        let corners = [
            s_lo as f64 / c_lo as f64,
            s_lo as f64 / c_hi as f64,
            s_hi as f64 / c_lo as f64,
            s_hi as f64 / c_hi as f64,
        ];
        let lo = corners.iter().copied().fold(f64::INFINITY, f64::min) + *centre as f64;
        let hi = corners.iter().copied().fold(f64::NEG_INFINITY, f64::max) + *centre as f64;
        // The true average of clamped values lies in [lower, upper] anyway.
        Some((lo.max(*lower as f64), hi.min(*upper as f64)))
    }
}
