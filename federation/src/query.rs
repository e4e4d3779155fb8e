//! Researchers' queries: what may be asked (the public platform configuration), how a query is
//! written (JSON), how a hospital evaluates it over its own devices, and how the result vector
//! is laid out in slots for encryption.
//!
//! Semantics (the original's, with its mistakes fixed — BRIEF §1):
//! * **Count** counts matching *devices* (never distinct values).
//! * **Grouped count** counts matching devices in every bin of a *public* bin list (all 56
//!   speciality values, the 3 category values, both `active_status` values, the configured
//!   device types / manufacturers / hospitals plus an "other" bin); every bin is released,
//!   empty ones too.
//! * **Average** of an integer field over matching devices, each value clamped to the field's
//!   public range; timestamps are averaged in whole days since 1970-01-01.
//! * Filters (all must hold): strings EQUALS / CONTAINS / STARTS_WITH / ENDS_WITH; integers
//!   EQUALS / GREATER_THAN / LESS_THAN / GREATER_THAN_OR_EQUAL / LESS_THAN_OR_EQUAL; timestamps
//!   EQUALS (the same UTC day) / BEFORE / AFTER; `active_status` EQUALS; `speciality` and
//!   `category` EQUALS a name or number. The time range `[start_time, end_time)` applies to
//!   `last_sync_time`.
//!
//! Slot layout of one hospital's contribution (every committed value proven in
//! `[0, 2^32 − 1]`): Count `[count]`; Grouped count `[bin_0, …, bin_{k−1}]`, in
//! [`SLOT_BITS`]-bit slots; Average two [`WIDE_SLOT_BITS`]-bit slots `[sum, count]`. The
//! centred clamped sum may be negative and exceed 2^32, so the hospital commits two limbs with
//! `sum + 2^59 = sum_lo + 2^30·sum_hi` and the range proof places `sum_hi` at bit offset 30 of
//! the same wide slot as `sum_lo` ([`Compiled::placement`];
//! `medtech_threshold::PublicKey::encrypt_in_range_at`): the plaintext holds `sum + 2^59`,
//! never a limb. Every decrypted slot carries its own calibrated noise ([`Compiled::noise_slots`]:
//! Average `[noise_sum, noise_count]`), so nothing data-dependent is decrypted without noise
//! (docs/privacy.md, "What a reader of every partial decryption sees"); after decryption
//! `H·2^59` is subtracted for `H` contributors (a public number).

use std::collections::BTreeMap;

use medtech_noise::query::encode_average_value;
use medtech_noise::{Committee, Mechanism, Micros, QueryPlan, QueryShape};
use serde::{Deserialize, Serialize};

use crate::data::device::{parse_category, parse_speciality, speciality_name, CATEGORIES};
use crate::data::generate::{DEVICE_TYPES, MANUFACTURERS};
use crate::data::ingest::parse_time;
use crate::data::store::{Columns, IntCol, StrCol};

/// Offset that makes an Average's per-hospital centred sum non-negative.
pub const SUM_OFFSET: i128 = 1 << 59;
/// Width of an Average sum limb.
pub const LIMB_BITS: u32 = 30;
/// Upper bound every contribution slot is proven under.
pub const SLOT_BOUND: u64 = u32::MAX as u64;
/// Slot width of the packed ciphertexts (room for 2^15 contributions and noise shares).
pub const SLOT_BITS: u32 = 48;
/// Slot width of a ciphertext that carries an Average: a shifted sum `lo + 2^30·hi < 2^63`
/// per hospital, summed over up to 2^15 contributions plus noise, stays below `2^95`.
pub const WIDE_SLOT_BITS: u32 = 96;

/// The query kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryKind {
    /// Number of matching devices.
    Count,
    /// Matching devices per bin.
    GroupedCount,
    /// Mean of a field over matching devices.
    Average,
}

/// A filter comparator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Equal (timestamps: the same UTC day).
    Equals,
    /// String contains.
    Contains,
    /// String starts with.
    StartsWith,
    /// String ends with.
    EndsWith,
    /// Integer greater than.
    GreaterThan,
    /// Integer less than.
    LessThan,
    /// Integer at least.
    GreaterThanOrEqual,
    /// Integer at most.
    LessThanOrEqual,
    /// Timestamp strictly before.
    Before,
    /// Timestamp strictly after.
    After,
}

/// One filter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// Field name (as in `DeviceData`).
    pub field: String,
    /// Comparator.
    pub op: Op,
    /// Operand: a string, integer, boolean, timestamp (Unix seconds or RFC 3339) or enum name.
    pub value: serde_json::Value,
}

/// A researcher's query as submitted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    /// The kind.
    pub kind: QueryKind,
    /// Target field (grouped count: the grouping; average: the averaged field; count: optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Filters, all of which must hold.
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// Inclusive start of the `last_sync_time` range (Unix seconds or RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<serde_json::Value>,
    /// Exclusive end of the `last_sync_time` range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<serde_json::Value>,
    /// Privacy budget of this query (pure ε of the discrete Laplace mechanism).
    pub epsilon: f64,
}

/// A public clamp range for an averaged field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AverageRange {
    /// Lower clamp.
    pub lower: i64,
    /// Upper clamp.
    pub upper: i64,
    /// Unit of the released average ("hours", "days since 1970-01-01", ...).
    pub unit: String,
}

/// The public query interface every node enforces identically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// Fields a Count may name.
    pub count_targets: Vec<String>,
    /// Fields a Grouped count may group by.
    pub grouped_targets: Vec<String>,
    /// Fields an Average may average, with their clamp ranges.
    pub average_targets: BTreeMap<String, AverageRange>,
    /// Public bin lists of the string fields that can be grouped (plus an implicit "other").
    pub string_bins: BTreeMap<String, Vec<String>>,
    /// Largest ε one query may spend, in millionths.
    pub max_epsilon_micros: u64,
}

const DAY: i64 = 86_400;
/// 2000-01-01 in days since 1970-01-01.
const DAYS_2000: i64 = 10_957;
/// 2040-01-01 in days.
const DAYS_2040: i64 = 25_567;

impl Platform {
    /// The default interface, with `hospitals` as the public hospital bin list.
    pub fn new(hospitals: &[String]) -> Self {
        let days = |u: &str| AverageRange {
            lower: DAYS_2000,
            upper: DAYS_2040,
            unit: u.to_owned(),
        };
        let mut average_targets = BTreeMap::new();
        average_targets.insert(
            "usage_hours".into(),
            AverageRange {
                lower: 0,
                upper: 10_000,
                unit: "hours".into(),
            },
        );
        average_targets.insert(
            "battery_level".into(),
            AverageRange {
                lower: 0,
                upper: 100,
                unit: "percent".into(),
            },
        );
        average_targets.insert(
            "sync_frequency_seconds".into(),
            AverageRange {
                lower: 0,
                upper: 3_600,
                unit: "seconds".into(),
            },
        );
        for f in [
            "production_date",
            "last_service_date",
            "warranty_expiry_date",
            "last_sync_time",
        ] {
            average_targets.insert(f.into(), days("days since 1970-01-01"));
        }
        let mut string_bins = BTreeMap::new();
        string_bins.insert(
            "device_type".into(),
            DEVICE_TYPES.iter().map(|s| (*s).to_owned()).collect(),
        );
        string_bins.insert(
            "manufacturer".into(),
            MANUFACTURERS.iter().map(|s| (*s).to_owned()).collect(),
        );
        string_bins.insert("hospital".into(), hospitals.to_vec());
        let strs = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Platform {
            count_targets: strs(&[
                "udi",
                "hospital",
                "manufacturer",
                "model",
                "firmware_version",
                "device_type",
                "category",
                "speciality",
            ]),
            grouped_targets: strs(&[
                "speciality",
                "category",
                "active_status",
                "device_type",
                "manufacturer",
                "hospital",
            ]),
            average_targets,
            string_bins,
            max_epsilon_micros: 5_000_000,
        }
    }

    /// The bin labels of grouping field `target`.
    pub fn bins(&self, target: &str) -> Option<Vec<String>> {
        match target {
            "speciality" => Some((0..=55).map(|v| speciality_name(v).to_owned()).collect()),
            "category" => Some(
                std::iter::once("UNSPECIFIED")
                    .chain(CATEGORIES)
                    .map(str::to_owned)
                    .collect(),
            ),
            "active_status" => Some(vec!["false".into(), "true".into()]),
            f => self.string_bins.get(f).map(|v| {
                let mut b = v.clone();
                b.push("(other)".into());
                b
            }),
        }
    }
}

/// A query checked against the platform: what a hospital evaluates and the committee noises.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The query as submitted.
    pub spec: QuerySpec,
    /// The calibrated noise plan (its cost is what is charged).
    pub plan: QueryPlan,
    /// Bin labels (grouped count) or output names.
    pub labels: Vec<String>,
    filters: Vec<Pred>,
    range: (i64, i64),
    target: Target,
}

#[derive(Clone, Debug)]
enum Target {
    None,
    Speciality,
    Category,
    Active,
    StringBins(StrCol, Vec<String>),
    Average(IntCol, bool, i64, i64),
}

#[derive(Clone, Debug)]
enum Pred {
    Str(StrCol, Op, String),
    Int(IntCol, Op, i64),
    Day(IntCol, i64),
    Active(bool),
    Speciality(u8),
    Category(u8),
}

fn str_col(f: &str) -> Option<StrCol> {
    Some(match f {
        "hospital" => StrCol::Hospital,
        "manufacturer" => StrCol::Manufacturer,
        "model" => StrCol::Model,
        "firmware_version" => StrCol::Firmware,
        "device_type" => StrCol::DeviceType,
        _ => return None,
    })
}

fn int_col(f: &str) -> Option<(IntCol, bool)> {
    Some(match f {
        "production_date" => (IntCol::ProductionDate, true),
        "last_service_date" => (IntCol::LastServiceDate, true),
        "warranty_expiry_date" => (IntCol::WarrantyExpiryDate, true),
        "last_sync_time" => (IntCol::LastSyncTime, true),
        "usage_hours" => (IntCol::UsageHours, false),
        "battery_level" => (IntCol::BatteryLevel, false),
        "sync_frequency_seconds" => (IntCol::SyncFrequency, false),
        _ => return None,
    })
}

/// Every field a filter may name, with its type (`string`, `integer`, `timestamp`, `bool`,
/// `enum`): what the query builder offers. Enum fields list their values in the bins.
pub fn field_types() -> BTreeMap<&'static str, &'static str> {
    let mut m = BTreeMap::new();
    for f in [
        "hospital",
        "manufacturer",
        "model",
        "firmware_version",
        "device_type",
    ] {
        debug_assert!(str_col(f).is_some());
        m.insert(f, "string");
    }
    for f in [
        "production_date",
        "last_service_date",
        "warranty_expiry_date",
        "last_sync_time",
        "usage_hours",
        "battery_level",
        "sync_frequency_seconds",
    ] {
        let timestamp = int_col(f).is_some_and(|(_, t)| t);
        m.insert(f, if timestamp { "timestamp" } else { "integer" });
    }
    m.insert("active_status", "bool");
    m.insert("speciality", "enum");
    m.insert("category", "enum");
    m
}

fn as_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn as_time(v: &serde_json::Value) -> Result<i64, String> {
    match v {
        serde_json::Value::Number(n) => n.as_i64().ok_or_else(|| "not whole seconds".to_string()),
        serde_json::Value::String(s) => parse_time(s),
        _ => Err("a timestamp is Unix seconds or an RFC 3339 string".into()),
    }
}

/// Why a query is refused before anything is charged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidQuery(pub String);

/// How the refusal of a query below its ε floor begins (the API answers it with its own code,
/// `epsilon_below_floor`).
pub const EPSILON_BELOW_FLOOR: &str = "epsilon below the floor";

impl InvalidQuery {
    /// The smallest ε accepted for the refused query, if it was refused for its ε being below
    /// the floor ([`Compiled::for_committee`]).
    pub fn min_epsilon(&self) -> Option<f64> {
        let rest = self.0.strip_prefix(EPSILON_BELOW_FLOOR)?;
        let at = rest.find("smallest accepted is ")? + "smallest accepted is ".len();
        rest[at..]
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()?
            .parse()
            .ok()
    }
}

impl Compiled {
    /// Checks `spec` against `platform` and calibrates it for the committee `(n, t)` with the
    /// default close tolerance.
    pub fn new(
        spec: QuerySpec,
        platform: &Platform,
        members: u16,
        threshold: u16,
    ) -> Result<Self, InvalidQuery> {
        let committee =
            Committee::new(members, threshold).map_err(|e| InvalidQuery(e.to_string()))?;
        Self::for_committee(spec, platform, committee)
    }

    /// Checks `spec` against `platform` and calibrates it for `committee` (its `n`, `t` and
    /// close tolerance `f`).
    pub fn for_committee(
        spec: QuerySpec,
        platform: &Platform,
        committee: Committee,
    ) -> Result<Self, InvalidQuery> {
        let bad = |m: String| InvalidQuery(m);
        if !spec.epsilon.is_finite() || spec.epsilon <= 0.0 {
            return Err(bad("epsilon must be a positive number".into()));
        }
        let eps = Micros::from_f64_floor(spec.epsilon).map_err(|e| bad(e.to_string()))?;
        if eps.0 == 0 || eps.0 > platform.max_epsilon_micros {
            return Err(bad(format!(
                "epsilon must be between 0.000001 and {}",
                platform.max_epsilon_micros as f64 / 1e6
            )));
        }
        let (target, shape, labels) = match spec.kind {
            QueryKind::Count => {
                if let Some(t) = &spec.target {
                    if !platform.count_targets.contains(t) {
                        return Err(bad(format!(
                            "count may not target {t:?}; allowed: {}",
                            platform.count_targets.join(", ")
                        )));
                    }
                }
                (Target::None, QueryShape::Count, vec!["count".to_owned()])
            }
            QueryKind::GroupedCount => {
                let t = spec
                    .target
                    .as_deref()
                    .ok_or_else(|| bad("a grouped count needs a target field".into()))?;
                if !platform.grouped_targets.iter().any(|g| g == t) {
                    return Err(bad(format!(
                        "grouped count may not target {t:?}; allowed: {}",
                        platform.grouped_targets.join(", ")
                    )));
                }
                let labels = platform
                    .bins(t)
                    .ok_or_else(|| bad(format!("no public bin list for {t:?}")))?;
                let target = match t {
                    "speciality" => Target::Speciality,
                    "category" => Target::Category,
                    "active_status" => Target::Active,
                    f => {
                        let col =
                            str_col(f).ok_or_else(|| bad(format!("{f:?} cannot be grouped")))?;
                        let mut list = labels.clone();
                        list.pop(); // "(other)"
                        Target::StringBins(col, list)
                    }
                };
                let bins = u32::try_from(labels.len()).map_err(|_| bad("too many bins".into()))?;
                (target, QueryShape::GroupedCount { bins }, labels)
            }
            QueryKind::Average => {
                let t = spec
                    .target
                    .as_deref()
                    .ok_or_else(|| bad("an average needs a target field".into()))?;
                let range = platform.average_targets.get(t).ok_or_else(|| {
                    bad(format!(
                        "average may not target {t:?}; allowed: {}",
                        platform
                            .average_targets
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let (col, days) =
                    int_col(t).ok_or_else(|| bad(format!("{t:?} is not a numeric field")))?;
                (
                    Target::Average(col, days, range.lower, range.upper),
                    QueryShape::Average {
                        lower: range.lower,
                        upper: range.upper,
                    },
                    vec!["sum".to_owned(), "count".to_owned()],
                )
            }
        };
        let mut filters = Vec::with_capacity(spec.filters.len());
        for f in &spec.filters {
            filters
                .push(compile_filter(f).map_err(|e| bad(format!("filter on {:?}: {e}", f.field)))?);
        }
        let start = match &spec.start_time {
            Some(v) => as_time(v).map_err(|e| bad(format!("start_time: {e}")))?,
            None => i64::MIN,
        };
        let end = match &spec.end_time {
            Some(v) => as_time(v).map_err(|e| bad(format!("end_time: {e}")))?,
            None => i64::MAX,
        };
        if start >= end {
            return Err(bad("start_time must be before end_time".into()));
        }
        // Issue 24 §4: below the floor no noise-share proof bound holds the shares (with a
        // per-share tail of at most 2^−80); refuse before anything is charged, naming the floor.
        let floor = QueryPlan::min_epsilon(shape, 1).map_err(|e| bad(e.to_string()))?;
        if eps < floor {
            let kind = match spec.kind {
                QueryKind::Count => "count",
                QueryKind::GroupedCount => "grouped_count",
                QueryKind::Average => "average",
            };
            let what = match &spec.target {
                Some(t) => format!("kind {kind}, target {t:?}"),
                None => format!("kind {kind}"),
            };
            return Err(bad(format!(
                "{EPSILON_BELOW_FLOOR}: for {what} the smallest accepted is {} (asked: {}); \
                 below it the noise shares cannot be proven within the widest bound (2^31) \
                 that an honest share leaves with probability at most 2^-80",
                floor.as_f64(),
                eps.as_f64()
            )));
        }
        let plan = QueryPlan::new(
            shape,
            Mechanism::DiscreteLaplace { epsilon: eps },
            committee,
            1,
        )
        .map_err(|e| bad(e.to_string()))?;
        Ok(Compiled {
            spec,
            plan,
            labels,
            filters,
            range: (start, end),
            target,
        })
    }

    /// Number of slots in one contribution (each decrypted, each noised).
    pub fn slots(&self) -> usize {
        match self.plan.shape {
            QueryShape::Count => 1,
            QueryShape::GroupedCount { bins } => bins as usize,
            QueryShape::Average { .. } => 2,
        }
    }

    /// Width of the slots this query needs: [`WIDE_SLOT_BITS`] for an Average, else
    /// [`SLOT_BITS`].
    pub fn slot_bits(&self) -> u32 {
        match self.plan.shape {
            QueryShape::Average { .. } => WIDE_SLOT_BITS,
            _ => SLOT_BITS,
        }
    }

    /// Where each committed value of [`Self::contribution_slots`] goes: its slot and its bit
    /// offset inside that slot. An Average's two sum limbs share slot 0 (`lo` at bit 0, `hi` at
    /// bit [`LIMB_BITS`]); every other value has a slot of its own. Public, a function of the
    /// query only.
    pub fn placement(&self) -> Vec<(usize, u32)> {
        match self.plan.shape {
            QueryShape::Average { .. } => vec![(0, 0), (0, LIMB_BITS), (1, 0)],
            _ => (0..self.slots()).map(|i| (i, 0)).collect(),
        }
    }

    /// Evaluates the query over `cols`: the plaintext outputs (Count `[n]`, Grouped count
    /// the bins, Average `[centred clamped sum, n]`).
    ///
    /// Column at a time: [`Self::selection`] marks the matching rows, then one pass over the
    /// marked rows aggregates (per-row closures over all filters cost a member about 13 ms per
    /// Count at 1,000,000 devices; docs/performance.md, "Local evaluation").
    pub fn evaluate(&self, cols: &Columns) -> Vec<i128> {
        let sel = self.selection(cols);
        let chosen = || sel.iter().enumerate().filter(|(_, &s)| s).map(|(r, _)| r);
        match &self.target {
            Target::None => vec![sel.iter().filter(|&&s| s).count() as i128],
            Target::Speciality | Target::Category | Target::Active => {
                let mut bins = vec![0u64; self.labels.len()];
                let mut count = |b: usize| {
                    if let Some(slot) = bins.get_mut(b) {
                        *slot += 1;
                    }
                };
                match self.target {
                    Target::Speciality => chosen().for_each(|r| count(cols.speciality[r].into())),
                    Target::Category => chosen().for_each(|r| count(cols.category[r].into())),
                    _ => chosen().for_each(|r| count(cols.active[r].into())),
                }
                bins.into_iter().map(i128::from).collect()
            }
            Target::StringBins(col, list) => {
                let interner = cols.interner(*col);
                // Map every interned string to its bin once.
                let other = list.len();
                let bin_of: Vec<usize> = interner
                    .iter()
                    .map(|(_, s)| list.iter().position(|b| b == s).unwrap_or(other))
                    .collect();
                let ids = cols.strings(*col);
                let mut bins = vec![0u64; other + 1];
                for r in chosen() {
                    bins[bin_of.get(ids[r] as usize).copied().unwrap_or(other)] += 1;
                }
                bins.into_iter().map(i128::from).collect()
            }
            Target::Average(col, days, lower, upper) => {
                let vals = cols.ints(*col);
                let (mut sum, mut count) = (0i128, 0i128);
                for r in chosen() {
                    let v = if *days {
                        vals[r].div_euclid(DAY)
                    } else {
                        vals[r]
                    };
                    sum += i128::from(encode_average_value(v, *lower, *upper));
                    count += 1;
                }
                vec![sum, count]
            }
        }
    }

    /// Which rows the query selects: `last_sync_time` in the range and every filter holding,
    /// one column at a time.
    fn selection(&self, cols: &Columns) -> Vec<bool> {
        let (start, end) = self.range;
        let mut sel: Vec<bool> = cols
            .ints(IntCol::LastSyncTime)
            .iter()
            .map(|&t| t >= start && t < end)
            .collect();
        // Every column has one value per device.
        sel.resize(cols.len(), false);
        for p in &self.filters {
            p.restrict(cols, &mut sel);
        }
        sel
    }

    /// The values a hospital commits to and encrypts for `outputs` (from [`Self::evaluate`]),
    /// placed by [`Self::placement`].
    pub fn contribution_slots(&self, outputs: &[i128]) -> Result<Vec<u64>, InvalidQuery> {
        let fit = |v: i128| {
            u64::try_from(v)
                .ok()
                .filter(|&v| v <= SLOT_BOUND)
                .ok_or_else(|| InvalidQuery(format!("value {v} does not fit a contribution slot")))
        };
        match self.plan.shape {
            QueryShape::Average { .. } => {
                let [sum, count] = outputs else {
                    return Err(InvalidQuery("an average has two outputs".into()));
                };
                let shifted = sum + SUM_OFFSET;
                if !(0..1 << (2 * LIMB_BITS)).contains(&shifted) {
                    return Err(InvalidQuery("average sum out of range".into()));
                }
                let mask = (1i128 << LIMB_BITS) - 1;
                Ok(vec![
                    fit(shifted & mask)?,
                    fit(shifted >> LIMB_BITS)?,
                    fit(*count)?,
                ])
            }
            _ => outputs.iter().map(|&v| fit(v)).collect(),
        }
    }

    /// The bound every member's noise shares for this query are proven under: the widest of
    /// the outputs' [`ShareSpec::share_bound`](medtech_noise::ShareSpec::share_bound)s
    /// (one bound for all of the query's noise ciphertexts; it is a function of the public
    /// calibration, so every member and verifier derives the same one). An error for a plan
    /// some output of which has no bound (compilation refuses those; there is no fallback).
    pub fn noise_bound(&self) -> Result<u64, InvalidQuery> {
        let mut widest = None;
        for o in &self.plan.outputs {
            let b = o
                .share
                .share_bound()
                .map_err(|e| InvalidQuery(e.to_string()))?;
            widest = widest.max(Some(b));
        }
        widest.ok_or_else(|| InvalidQuery("a plan without outputs".into()))
    }

    /// Which plan output (and coordinate) each slot's noise belongs to, one entry per slot.
    /// Every slot is decrypted, so every slot takes noise: no entry is `None` (the `Option`
    /// is kept for a slot that would be a public constant; none is today). Checked by
    /// `every_decrypted_slot_carries_noise_and_the_costs_add_up`.
    pub fn noise_slots(&self) -> Vec<Option<(usize, usize)>> {
        match self.plan.shape {
            QueryShape::Average { .. } => vec![Some((0, 0)), Some((1, 0))],
            _ => (0..self.slots()).map(|i| Some((0, i))).collect(),
        }
    }

    /// Turns decrypted slot totals into the plan's raw outputs, given `contributors` hospitals.
    pub fn raw_outputs(
        &self,
        totals: &[i128],
        contributors: usize,
    ) -> Result<Vec<Vec<i128>>, InvalidQuery> {
        match self.plan.shape {
            QueryShape::Average { .. } => {
                let [shifted, count] = totals else {
                    return Err(InvalidQuery("an average decrypts to two slots".into()));
                };
                let sum = shifted - SUM_OFFSET * contributors as i128;
                Ok(vec![vec![sum], vec![*count]])
            }
            _ => Ok(vec![totals.to_vec()]),
        }
    }
}

fn compile_filter(f: &Filter) -> Result<Pred, String> {
    let field = f.field.as_str();
    if let Some(col) = str_col(field) {
        if !matches!(
            f.op,
            Op::Equals | Op::Contains | Op::StartsWith | Op::EndsWith
        ) {
            return Err(format!("{:?} does not apply to a string", f.op));
        }
        let v = as_string(&f.value).ok_or("the operand must be a string")?;
        return Ok(Pred::Str(col, f.op, v));
    }
    if let Some((col, is_time)) = int_col(field) {
        if is_time {
            let t = as_time(&f.value)?;
            return match f.op {
                Op::Equals => Ok(Pred::Day(col, t.div_euclid(DAY))),
                Op::Before => Ok(Pred::Int(col, Op::LessThan, t)),
                Op::After => Ok(Pred::Int(col, Op::GreaterThan, t)),
                op => Err(format!(
                    "{op:?} does not apply to a timestamp (equals, before, after)"
                )),
            };
        }
        if !matches!(
            f.op,
            Op::Equals
                | Op::GreaterThan
                | Op::LessThan
                | Op::GreaterThanOrEqual
                | Op::LessThanOrEqual
        ) {
            return Err(format!("{:?} does not apply to an integer", f.op));
        }
        let v = match &f.value {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or("the operand must be an integer")?;
        return Ok(Pred::Int(col, f.op, v));
    }
    if f.op != Op::Equals {
        return Err(format!("{:?} does not apply; only equals", f.op));
    }
    match field {
        "active_status" => match &f.value {
            serde_json::Value::Bool(b) => Ok(Pred::Active(*b)),
            _ => Err("the operand must be true or false".into()),
        },
        "speciality" => Ok(Pred::Speciality(parse_speciality(
            &as_string(&f.value).ok_or("the operand must be a name or number")?,
        )?)),
        "category" => Ok(Pred::Category(parse_category(
            &as_string(&f.value).ok_or("the operand must be a name or number")?,
        )?)),
        "udi" => Err("filters on udi are not allowed (one device is not an aggregate)".into()),
        other => Err(format!("unknown field {other:?}")),
    }
}

/// `sel[r] &= keep(col[r])` for every row.
fn restrict_by<T: Copy>(sel: &mut [bool], col: &[T], keep: impl Fn(T) -> bool) {
    for (s, &x) in sel.iter_mut().zip(col) {
        *s &= keep(x);
    }
}

impl Op {
    /// Whether string `s` satisfies `s <op> v`.
    fn holds_str(self, s: &str, v: &str) -> bool {
        match self {
            Op::Equals => s == v,
            Op::Contains => s.contains(v),
            Op::StartsWith => s.starts_with(v),
            Op::EndsWith => s.ends_with(v),
            _ => false,
        }
    }
}

impl Pred {
    /// Clears the rows of `sel` where this predicate does not hold.
    fn restrict(&self, cols: &Columns, sel: &mut [bool]) {
        match self {
            Pred::Str(col, op, v) => {
                // Decided once per distinct string, then looked up per row by interned id.
                let interner = cols.interner(*col);
                let holds: Vec<bool> = interner.iter().map(|(_, s)| op.holds_str(s, v)).collect();
                // An id the interner does not know reads as the empty string.
                let unknown = op.holds_str("", v);
                restrict_by(sel, cols.strings(*col), |id| {
                    holds.get(id as usize).copied().unwrap_or(unknown)
                });
            }
            Pred::Int(col, op, v) => {
                let (xs, v) = (cols.ints(*col), *v);
                match op {
                    Op::Equals => restrict_by(sel, xs, |x| x == v),
                    Op::GreaterThan => restrict_by(sel, xs, |x| x > v),
                    Op::LessThan => restrict_by(sel, xs, |x| x < v),
                    Op::GreaterThanOrEqual => restrict_by(sel, xs, |x| x >= v),
                    Op::LessThanOrEqual => restrict_by(sel, xs, |x| x <= v),
                    _ => sel.fill(false),
                }
            }
            Pred::Day(col, d) => restrict_by(sel, cols.ints(*col), |x| x.div_euclid(DAY) == *d),
            Pred::Active(b) => restrict_by(sel, &cols.active, |x| x == *b),
            Pred::Speciality(s) => restrict_by(sel, &cols.speciality, |x| x == *s),
            Pred::Category(c) => restrict_by(sel, &cols.category, |x| x == *c),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::data::{generate, Device};

    /// Whether `f` holds for `d`, read straight from the record's fields (independent of the
    /// columns, the interners and the compiled predicates).
    fn reference_holds(d: &Device, f: &Filter) -> bool {
        let s = |x: &str| f.value.as_str().is_some_and(|v| f.op.holds_str(x, v));
        let t = |x: i64| {
            let v = as_time(&f.value).unwrap_or(i64::MIN);
            match f.op {
                Op::Equals => x.div_euclid(DAY) == v.div_euclid(DAY),
                Op::Before => x < v,
                Op::After => x > v,
                _ => false,
            }
        };
        let i = |x: i64| {
            let v = f.value.as_i64().unwrap_or(i64::MIN);
            match f.op {
                Op::Equals => x == v,
                Op::GreaterThan => x > v,
                Op::LessThan => x < v,
                Op::GreaterThanOrEqual => x >= v,
                Op::LessThanOrEqual => x <= v,
                _ => false,
            }
        };
        match f.field.as_str() {
            "hospital" => s(&d.hospital),
            "manufacturer" => s(&d.manufacturer),
            "model" => s(&d.model),
            "firmware_version" => s(&d.firmware_version),
            "device_type" => s(&d.device_type),
            "production_date" => t(d.production_date),
            "last_service_date" => t(d.last_service_date),
            "warranty_expiry_date" => t(d.warranty_expiry_date),
            "last_sync_time" => t(d.last_sync_time),
            "usage_hours" => i(d.usage_hours),
            "battery_level" => i(d.battery_level),
            "sync_frequency_seconds" => i(d.sync_frequency_seconds),
            "active_status" => f.value.as_bool() == Some(d.active_status),
            "speciality" => f.value.as_u64() == Some(u64::from(d.speciality)),
            "category" => f.value.as_u64() == Some(u64::from(d.category)),
            other => panic!("no reference for {other}"),
        }
    }

    /// A filter on field number `field` whose operand is taken from device `d` (so that some
    /// rows match), with operator choice `op` and string cut `cut`.
    fn filter_from(d: &Device, field: usize, op: usize, cut: usize) -> Filter {
        let strings = [
            ("hospital", &d.hospital),
            ("manufacturer", &d.manufacturer),
            ("model", &d.model),
            ("firmware_version", &d.firmware_version),
            ("device_type", &d.device_type),
        ];
        let times = [
            ("production_date", d.production_date),
            ("last_service_date", d.last_service_date),
            ("warranty_expiry_date", d.warranty_expiry_date),
            ("last_sync_time", d.last_sync_time),
        ];
        let ints = [
            ("usage_hours", d.usage_hours),
            ("battery_level", d.battery_level),
            ("sync_frequency_seconds", d.sync_frequency_seconds),
        ];
        let mk = |field: &str, op: Op, value: serde_json::Value| Filter {
            field: field.into(),
            op,
            value,
        };
        match field % 15 {
            k @ 0..=4 => {
                let (name, v) = strings[k];
                let ops = [Op::Equals, Op::Contains, Op::StartsWith, Op::EndsWith];
                let op = ops[op % 4];
                // A piece of the value (or, when the cut is past its end, a string no device has).
                let chars: Vec<char> = v.chars().collect();
                let piece: String = match op {
                    Op::Equals if cut.is_multiple_of(5) => "absent".into(),
                    Op::Equals => v.clone(),
                    Op::StartsWith => chars[..cut % (chars.len() + 1)].iter().collect(),
                    Op::EndsWith => chars[chars.len() - cut % (chars.len() + 1)..]
                        .iter()
                        .collect(),
                    _ => {
                        let a = cut % (chars.len() + 1);
                        chars[a..(a + 2).min(chars.len())].iter().collect()
                    }
                };
                mk(name, op, piece.into())
            }
            k @ 5..=8 => {
                let (name, v) = times[k - 5];
                mk(name, [Op::Equals, Op::Before, Op::After][op % 3], v.into())
            }
            k @ 9..=11 => {
                let (name, v) = ints[k - 9];
                let ops = [
                    Op::Equals,
                    Op::GreaterThan,
                    Op::LessThan,
                    Op::GreaterThanOrEqual,
                    Op::LessThanOrEqual,
                ];
                mk(name, ops[op % 5], v.into())
            }
            12 => mk("active_status", Op::Equals, d.active_status.into()),
            13 => mk("speciality", Op::Equals, u64::from(d.speciality).into()),
            _ => mk("category", Op::Equals, u64::from(d.category).into()),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The column-at-a-time evaluation agrees with a record-by-record reference for random
        /// filters of every field and operator, for each query kind.
        #[test]
        fn evaluation_agrees_with_a_record_by_record_reference(
            seed in 0u64..1_000,
            picks in proptest::collection::vec((0usize..15, 0usize..5, 0usize..40, 0usize..300), 0..4),
            kind in 0usize..4,
        ) {
            let devices = generate::devices("hospital-a", 0, 300, seed);
            let cols = crate::data::Columns::from_devices(&devices);
            let filters: Vec<Filter> = picks
                .iter()
                .map(|&(field, op, cut, row)| filter_from(&devices[row], field, op, cut))
                .collect();
            let kind_name = ["count", "grouped_count", "grouped_count", "average"][kind];
            let target = [None, Some("speciality"), Some("manufacturer"), Some("usage_hours")][kind];
            let spec = serde_json::json!({
                "kind": kind_name,
                "target": target,
                "filters": filters,
                "epsilon": 0.5,
            });
            let spec: QuerySpec = serde_json::from_value(spec).unwrap();
            let q = Compiled::new(spec, &Platform::new(&["hospital-a".to_owned()]), 5, 3).unwrap();
            let chosen: Vec<&Device> = devices
                .iter()
                .filter(|d| d.last_sync_time >= q.range.0 && d.last_sync_time < q.range.1)
                .filter(|d| filters.iter().all(|f| reference_holds(d, f)))
                .collect();
            let expected: Vec<i128> = match kind {
                0 => vec![chosen.len() as i128],
                1 => (0..56u8)
                    .map(|s| chosen.iter().filter(|d| d.speciality == s).count() as i128)
                    .collect(),
                2 => {
                    let mut bins: Vec<i128> = q
                        .labels
                        .iter()
                        .map(|l| chosen.iter().filter(|d| &d.manufacturer == l).count() as i128)
                        .collect();
                    // The last label is the implicit "other" bin.
                    let named = &q.labels[..q.labels.len() - 1];
                    if let Some(other) = bins.last_mut() {
                        *other = chosen.iter().filter(|d| !named.contains(&d.manufacturer)).count() as i128;
                    }
                    bins
                }
                _ => {
                    let Target::Average(_, _, lo, hi) = q.target else {
                        panic!("an average compiles to an average target");
                    };
                    let sum = chosen
                        .iter()
                        .map(|d| i128::from(encode_average_value(d.usage_hours, lo, hi)))
                        .sum();
                    vec![sum, chosen.len() as i128]
                }
            };
            prop_assert_eq!(q.evaluate(&cols), expected);
        }
    }

    #[test]
    fn every_decrypted_slot_carries_noise_and_the_costs_add_up() {
        // Every slot of a contribution is decrypted (the whole plaintext is readable by anyone
        // who combines the published partials), so every slot must take its own calibrated
        // noise, each plan coordinate exactly once, and the outputs' costs must add up to the
        // charge. An Average's two sum limbs must land in one slot, never a slot of their own.
        let platform = Platform::new(&["hospital-a".to_owned(), "hospital-b".to_owned()]);
        let spec = |kind, target: Option<&str>| QuerySpec {
            kind,
            target: target.map(str::to_owned),
            filters: vec![],
            start_time: None,
            end_time: None,
            epsilon: 0.5,
        };
        for s in [
            spec(QueryKind::Count, None),
            spec(QueryKind::GroupedCount, Some("speciality")),
            spec(QueryKind::GroupedCount, Some("hospital")),
            spec(QueryKind::Average, Some("usage_hours")),
            spec(QueryKind::Average, Some("production_date")),
        ] {
            let q = Compiled::new(s.clone(), &platform, 5, 3).unwrap();
            let noise = q.noise_slots();
            assert_eq!(noise.len(), q.slots(), "{s:?}: one noise entry per slot");
            let mut covered: Vec<(usize, usize)> = noise
                .iter()
                .map(|n| n.unwrap_or_else(|| panic!("{s:?}: a decrypted slot has no noise")))
                .collect();
            covered.sort_unstable();
            let want: Vec<(usize, usize)> = q
                .plan
                .outputs
                .iter()
                .enumerate()
                .flat_map(|(o, out)| (0..out.coordinates as usize).map(move |i| (o, i)))
                .collect();
            assert_eq!(covered, want, "{s:?}: every coordinate noised exactly once");
            // Every committed value lands in a decrypted (noised) slot; the slots' outputs'
            // costs add up to what the query is charged, and that is within its ε.
            assert!(q.placement().iter().all(|&(slot, _)| slot < q.slots()));
            let total = q
                .plan
                .outputs
                .iter()
                .try_fold(medtech_noise::accounting::Cost::default(), |c, o| {
                    c.checked_add(o.share.cost())
                })
                .unwrap();
            assert_eq!(total, q.plan.cost, "{s:?}");
            assert!(q.plan.cost.epsilon.0 <= 500_000, "{s:?}");
            if matches!(s.kind, QueryKind::Average) {
                assert_eq!(q.placement(), vec![(0, 0), (0, LIMB_BITS), (1, 0)]);
                assert_eq!(q.slot_bits(), WIDE_SLOT_BITS);
            }
        }
    }
}
