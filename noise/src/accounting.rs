//! Privacy budgets as a pure state machine over ledger events.
//!
//! Every node applies the same events in the ledger's order, so every node holds the same
//! budgets: [`Accountant::apply`] is deterministic (ordered maps, integer arithmetic in millionths,
//! no clocks, no randomness). Concurrency is settled by the ledger's total order: two queries
//! racing for the last of a budget are two events, and the second is rejected — there is no
//! read-then-write window in which both could pass.
//!
//! Rules:
//! * A charge names a researcher and a dataset; it is checked against the researcher's, the
//!   dataset's and (if set) the global limit, and either spends on all three or on none.
//! * A query id is charged at most once (a replayed charge is rejected, not double-counted).
//! * A charge can be refunded ([`Event::Abandon`]) only while no noise share for that query has
//!   been posted; once any member posted noise, the spend is final, whatever happens next
//!   (a failed decryption included).
//! * Composition is basic (sequential) composition, separately for pure ε and for zCDP ρ.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::mechanism::Micros;

/// Who or what a budget limits.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Subject {
    /// One researcher.
    Researcher(String),
    /// One hospital dataset (or the federation's joint dataset).
    Dataset(String),
    /// Everything.
    Global,
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Researcher(r) => write!(f, "researcher {r:?}"),
            Subject::Dataset(d) => write!(f, "dataset {d:?}"),
            Subject::Global => f.write_str("the global budget"),
        }
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ε = {}", self.epsilon.as_f64())?;
        if self.rho.0 > 0 {
            write!(f, ", ρ = {}", self.rho.as_f64())?;
        }
        if self.delta > 0 {
            write!(f, ", δ = {:e}", self.delta as f64 * 1e-18)?;
        }
        Ok(())
    }
}

/// A privacy cost or limit: ε (pure or approximate DP), zCDP ρ, and δ, each composed by basic
/// composition (summed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    /// ε, in millionths.
    pub epsilon: Micros,
    /// zCDP ρ, in millionths.
    pub rho: Micros,
    /// δ, in units of 10⁻¹⁸ (δ = 10⁻⁶ is `1_000_000_000_000`).
    pub delta: u64,
}

/// `10^(−k)` in units of 10⁻¹⁸ (`k ≤ 18`; smaller δ round up to one unit, conservatively).
pub fn delta_from_exp(k: u32) -> u64 {
    if k >= 18 {
        1
    } else {
        10u64.pow(18 - k)
    }
}

impl Cost {
    /// The sum of two costs (basic composition), or `None` on overflow.
    pub fn checked_add(self, o: Cost) -> Option<Cost> {
        Some(Cost {
            epsilon: Micros(self.epsilon.0.checked_add(o.epsilon.0)?),
            rho: Micros(self.rho.0.checked_add(o.rho.0)?),
            delta: self.delta.checked_add(o.delta)?,
        })
    }

    fn fits_within(self, limit: Cost) -> bool {
        self.epsilon <= limit.epsilon && self.rho <= limit.rho && self.delta <= limit.delta
    }

    fn saturating_sub(self, o: Cost) -> Cost {
        Cost {
            epsilon: Micros(self.epsilon.0.saturating_sub(o.epsilon.0)),
            rho: Micros(self.rho.0.saturating_sub(o.rho.0)),
            delta: self.delta.saturating_sub(o.delta),
        }
    }
}

/// A ledger event the accountant understands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Sets (or changes) a subject's limit. Lowering a limit below what is spent blocks further
    /// charges; it never un-spends.
    SetLimit {
        /// The subject.
        subject: Subject,
        /// Its total limit.
        limit: Cost,
    },
    /// Authorises a query: charges its cost. Recorded in the same ledger entry as the query.
    Charge {
        /// Query id.
        query: String,
        /// Researcher who submitted it.
        researcher: String,
        /// Dataset it reads.
        dataset: String,
        /// Its privacy cost.
        cost: Cost,
    },
    /// A committee member posted its noise share for a query: from now on, no refund.
    NoisePosted {
        /// Query id.
        query: String,
        /// The member.
        member: u16,
    },
    /// The query was abandoned before any noise was posted: its charge is refunded.
    Abandon {
        /// Query id.
        query: String,
    },
}

/// Why an event was rejected (the ledger records the rejection; nothing changes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A researcher or dataset without a limit cannot be charged.
    #[error("no budget is set for {0}")]
    NoBudget(Subject),
    /// The charge would exceed a limit.
    #[error("over budget for {subject}: would spend {would_spend} of {limit}")]
    OverBudget {
        /// The subject whose limit it would exceed.
        subject: Subject,
        /// Spent plus this charge.
        would_spend: Cost,
        /// The limit.
        limit: Cost,
    },
    /// The query id was charged already.
    #[error("query {0} was already charged")]
    AlreadyCharged(String),
    /// The query id was never charged.
    #[error("query {0} was never charged")]
    UnknownQuery(String),
    /// Noise was posted for the query: its charge can no longer be refunded.
    #[error("query {0} has noise posted; its charge is final")]
    NoiseAlreadyPosted(String),
    /// The query was abandoned already.
    #[error("query {0} was abandoned")]
    Abandoned(String),
}

/// What the accountant remembers about one charged query.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeRecord {
    /// The researcher charged.
    pub researcher: String,
    /// The dataset charged.
    pub dataset: String,
    /// What was charged.
    pub cost: Cost,
    /// Members whose noise share for the query is recorded (the charge is final once any is).
    pub noise_from: BTreeSet<u16>,
    /// Refunded by [`Event::Abandon`].
    pub abandoned: bool,
}

/// Where an [`Accountant`] keeps its per-query [`ChargeRecord`]s.
///
/// The limits and totals are a few records per researcher and dataset and stay in memory; the
/// charges grow with every query ever admitted, so a long-running node keeps them where it
/// chooses (the ledger spills them to disk). A book must return exactly what was last recorded
/// under a query id: the accountant's rules, and so every node's agreement, rest on it.
pub trait ChargeBook {
    /// The record of `query`, if it was charged.
    fn charge(&self, query: &str) -> Option<ChargeRecord>;
    /// Records (or replaces) the record of `query`.
    fn record(&mut self, query: &str, rec: ChargeRecord);
}

impl ChargeBook for BTreeMap<String, ChargeRecord> {
    fn charge(&self, query: &str) -> Option<ChargeRecord> {
        self.get(query).cloned()
    }
    fn record(&mut self, query: &str, rec: ChargeRecord) {
        self.insert(query.to_owned(), rec);
    }
}

/// The budget state every node derives from the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accountant<B = BTreeMap<String, ChargeRecord>> {
    limits: BTreeMap<Subject, Cost>,
    spent: BTreeMap<Subject, Cost>,
    charges: B,
}

impl Accountant {
    /// An empty accountant (no limits: every charge is rejected until limits are set), keeping
    /// its charges in memory.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<B: ChargeBook> Accountant<B> {
    /// An empty accountant keeping its charges in `book` (which must be empty).
    pub fn with_book(book: B) -> Self {
        Accountant {
            limits: BTreeMap::new(),
            spent: BTreeMap::new(),
            charges: book,
        }
    }

    /// Applies one event. `Err` means rejected and nothing changed.
    pub fn apply(&mut self, event: &Event) -> Result<(), Rejection> {
        match event {
            Event::SetLimit { subject, limit } => {
                self.limits.insert(subject.clone(), *limit);
                Ok(())
            }
            Event::Charge {
                query,
                researcher,
                dataset,
                cost,
            } => self.charge(query, researcher, dataset, *cost),
            Event::NoisePosted { query, member } => {
                let mut rec = self
                    .charges
                    .charge(query)
                    .ok_or_else(|| Rejection::UnknownQuery(query.clone()))?;
                if rec.abandoned {
                    return Err(Rejection::Abandoned(query.clone()));
                }
                if rec.noise_from.insert(*member) {
                    self.charges.record(query, rec);
                }
                Ok(())
            }
            Event::Abandon { query } => {
                let mut rec = self
                    .charges
                    .charge(query)
                    .ok_or_else(|| Rejection::UnknownQuery(query.clone()))?;
                if rec.abandoned {
                    return Err(Rejection::Abandoned(query.clone()));
                }
                if !rec.noise_from.is_empty() {
                    return Err(Rejection::NoiseAlreadyPosted(query.clone()));
                }
                let (cost, subjects) = (rec.cost, Self::subjects(&rec.researcher, &rec.dataset));
                for s in subjects {
                    if let Some(spent) = self.spent.get_mut(&s) {
                        *spent = spent.saturating_sub(cost);
                    }
                }
                rec.abandoned = true;
                self.charges.record(query, rec);
                Ok(())
            }
        }
    }

    fn subjects(researcher: &str, dataset: &str) -> [Subject; 3] {
        [
            Subject::Researcher(researcher.to_owned()),
            Subject::Dataset(dataset.to_owned()),
            Subject::Global,
        ]
    }

    /// Whether `event` would be accepted now, without changing anything (the ledger checks an
    /// entry before making it durable, and applies it after).
    pub fn check(&self, event: &Event) -> Result<(), Rejection> {
        match event {
            Event::SetLimit { .. } => Ok(()),
            Event::Charge {
                query,
                researcher,
                dataset,
                cost,
            } => self
                .check_charge(query, researcher, dataset, *cost)
                .map(|_| ()),
            Event::NoisePosted { query, .. } => match self.charges.charge(query) {
                None => Err(Rejection::UnknownQuery(query.clone())),
                Some(r) if r.abandoned => Err(Rejection::Abandoned(query.clone())),
                Some(_) => Ok(()),
            },
            Event::Abandon { query } => match self.charges.charge(query) {
                None => Err(Rejection::UnknownQuery(query.clone())),
                Some(r) if r.abandoned => Err(Rejection::Abandoned(query.clone())),
                Some(r) if !r.noise_from.is_empty() => {
                    Err(Rejection::NoiseAlreadyPosted(query.clone()))
                }
                Some(_) => Ok(()),
            },
        }
    }

    /// Applies an event that [`Self::check`] accepted against this same state, without
    /// repeating the lookup of the query's charge that the check made.
    ///
    /// For a [`Event::Charge`] this skips looking up whether the query was already charged (a
    /// lookup in the book, which can be a disk read when the book spills); the limits are
    /// re-checked, as they are in memory. Every other event is applied as by [`Self::apply`].
    /// Calling it for a `Charge` that was *not* checked against this state can charge a query
    /// twice: use [`Self::apply`] unless the check is certain (the ledger checks every entry
    /// before it applies it, and replays only entries it applied before).
    pub fn apply_checked(&mut self, event: &Event) -> Result<(), Rejection> {
        match event {
            Event::Charge {
                query,
                researcher,
                dataset,
                cost,
            } => {
                let updates = self.limit_updates(researcher, dataset, *cost)?;
                self.record_charge(query, researcher, dataset, *cost, updates);
                Ok(())
            }
            other => self.apply(other),
        }
    }

    /// The new spent totals a charge would leave, or why it is refused.
    fn check_charge(
        &self,
        query: &str,
        researcher: &str,
        dataset: &str,
        cost: Cost,
    ) -> Result<Vec<(Subject, Cost)>, Rejection> {
        if self.charges.charge(query).is_some() {
            return Err(Rejection::AlreadyCharged(query.to_owned()));
        }
        self.limit_updates(researcher, dataset, cost)
    }

    /// The new spent totals charging `cost` would leave, or the limit it would break.
    fn limit_updates(
        &self,
        researcher: &str,
        dataset: &str,
        cost: Cost,
    ) -> Result<Vec<(Subject, Cost)>, Rejection> {
        let mut updates = Vec::with_capacity(3);
        for s in Self::subjects(researcher, dataset) {
            let limit = match (self.limits.get(&s), &s) {
                (Some(l), _) => *l,
                (None, Subject::Global) => continue, // no global limit configured
                (None, _) => return Err(Rejection::NoBudget(s)),
            };
            let spent = self.spent.get(&s).copied().unwrap_or_default();
            let would = spent.checked_add(cost).ok_or(Rejection::OverBudget {
                subject: s.clone(),
                would_spend: spent,
                limit,
            })?;
            if !would.fits_within(limit) {
                return Err(Rejection::OverBudget {
                    subject: s,
                    would_spend: would,
                    limit,
                });
            }
            updates.push((s, would));
        }
        Ok(updates)
    }

    fn charge(
        &mut self,
        query: &str,
        researcher: &str,
        dataset: &str,
        cost: Cost,
    ) -> Result<(), Rejection> {
        // Check everything first; spend only if every check passes (atomic).
        let updates = self.check_charge(query, researcher, dataset, cost)?;
        self.record_charge(query, researcher, dataset, cost, updates);
        Ok(())
    }

    fn record_charge(
        &mut self,
        query: &str,
        researcher: &str,
        dataset: &str,
        cost: Cost,
        updates: Vec<(Subject, Cost)>,
    ) {
        for (s, would) in updates {
            self.spent.insert(s, would);
        }
        self.charges.record(
            query,
            ChargeRecord {
                researcher: researcher.to_owned(),
                dataset: dataset.to_owned(),
                cost,
                noise_from: BTreeSet::new(),
                abandoned: false,
            },
        );
    }

    /// What a subject has spent.
    pub fn spent(&self, subject: &Subject) -> Cost {
        self.spent.get(subject).copied().unwrap_or_default()
    }

    /// What a subject has left, if it has a limit.
    pub fn remaining(&self, subject: &Subject) -> Option<Cost> {
        self.limits
            .get(subject)
            .map(|l| l.saturating_sub(self.spent(subject)))
    }

    /// The limit of a subject, if set.
    pub fn limit(&self, subject: &Subject) -> Option<Cost> {
        self.limits.get(subject).copied()
    }

    /// Members whose noise for `query` is recorded (the node decrypts only once at least
    /// `k = n − f` are: [`crate::Committee::close_shares`]).
    pub fn noise_posted(&self, query: &str) -> usize {
        self.charges.charge(query).map_or(0, |r| r.noise_from.len())
    }
}
