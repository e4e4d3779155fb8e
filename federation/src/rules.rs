//! The committee's application rules on the ledger ([`medtech_ledger::rules::AppRules`]):
//! what every member's state machine checks with the query protocol's cryptography, which the
//! ledger's generic core does not have.
//!
//! [`ReleaseRules`] follows the applied log as a member's query loop does (the same
//! [`Router`] grouping queries into instances, a [`QueryView`] per running instance) and:
//!
//! * accepts a `ReleaseResult` only if it is the deterministic combination of the `t` partial
//!   decryptions it names, each proven against the aggregate recomputed from the ciphertexts
//!   the close lists ([`Verifier::check_release`]); a release of a query that has not started,
//!   has no close, names fewer than `t` decrypters or one without a valid partial, or whose
//!   values differ, is refused (tests `forged_release_is_refused_by_every_node`,
//!   `release_before_t_valid_partials_is_refused`);
//! * lets one member's `QueryFailed` end a query only with the ground `QUERY_INVALID`, and only
//!   if the query's instance indeed does not compile for the committee (its plan is invalid or
//!   undercharged), as every member recomputes; a claimed ground for a query that compiles is
//!   refused (test `a_valid_query_claimed_invalid_is_refused_by_every_node`). Any other
//!   failure takes `t` members (the ledger's rule 9).
//!
//! Deterministic: it reads only the applied entries and the committee's public key, so every
//! member and an auditor replaying an export ([`medtech_ledger::export::verify_with`]) reach
//! the same verdict. It keeps the entries of running instances only.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use medtech_ledger::entry::{AuthorId, Kind, ParsedEntry};
use medtech_ledger::rules::{AppRules, RulesFactory};
use medtech_ledger::state::LedgerState;

use crate::bundle::{Batch, Route, Router};
use crate::protocol::{CommitteeView, QueryView, Release, Verifier};

/// Release checks run by this process's rules, and the nanoseconds they took (`/metrics`:
/// `medtech_release_checks_total`, `medtech_release_check_seconds_total`). The check runs in
/// the ledger's apply, on every member, for every release: its cost is on every query's path.
pub static RELEASE_CHECKS: AtomicU64 = AtomicU64::new(0);
/// See [`RELEASE_CHECKS`].
pub static RELEASE_CHECK_NANOS: AtomicU64 = AtomicU64::new(0);

/// The committee node's application rules (see the module docs).
pub struct ReleaseRules {
    committee: CommitteeView,
    router: Router,
    views: BTreeMap<String, QueryView>,
    /// The last combination checked. A bundle posts one release per query, all from one
    /// combination: it is computed once. The result is a pure function of the key
    /// (contributions and noise are fixed by the close, each member posts one partial, and
    /// partials only come after the close).
    last: Mutex<Option<CachedCombination>>,
    /// The last instance whose failure ground was checked, and whether it compiles (its
    /// queries are fixed at its start, so the verdict is too): a member repeating a refused
    /// ground costs one compile, not one per entry.
    compiles: Mutex<Option<(String, bool)>>,
}

/// (instance, named decrypters, partials posted, closed) → the instance's releases.
type CachedCombination = (
    (String, Vec<String>, usize, bool),
    Result<Vec<(String, Release)>, String>,
);

impl std::fmt::Debug for ReleaseRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReleaseRules")
            .field("running", &self.views.len())
            .finish_non_exhaustive()
    }
}

impl ReleaseRules {
    /// The rules for `committee`, before any entry.
    pub fn new(committee: CommitteeView) -> Self {
        ReleaseRules {
            router: Router::new(committee.clone()),
            committee,
            views: BTreeMap::new(),
            last: Mutex::new(None),
            compiles: Mutex::new(None),
        }
    }

    /// What a ledger node is given ([`medtech_ledger::raft::node::NodeConfig::rules`]).
    pub fn factory(committee: CommitteeView) -> RulesFactory {
        RulesFactory::new(move || Box::new(ReleaseRules::new(committee.clone())))
    }

    /// The running instance's view query `id` belongs to.
    fn view_of(&self, id: &str) -> Option<&QueryView> {
        self.views.get(self.router.instance_of(id)?)
    }

    fn check_release(&self, id: &str, result: &[u8]) -> Result<(), String> {
        let view = self
            .view_of(id)
            .ok_or_else(|| format!("query {id} is not running: nothing to release"))?;
        let released: Release = serde_json::from_slice(result)
            .map_err(|e| format!("the release does not decode: {e}"))?;
        let key = (
            view.id.clone(),
            released.decrypted_by.clone(),
            view.partials.len(),
            view.closed.is_some(),
        );
        let mut last = match self.last.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let cached = match last.as_ref() {
            Some((k, r)) if *k == key => Some(r.clone()),
            _ => None,
        };
        let ours = match cached {
            Some(r) => r,
            None => {
                let r = Verifier::new(self.committee.clone())
                    .combine_named(view, &released.decrypted_by);
                *last = Some((key, r.clone()));
                r
            }
        }?;
        let mine = ours
            .iter()
            .find(|(q, _)| q == id)
            .map(|(_, r)| r)
            .ok_or_else(|| format!("query {id} is not in the instance {}", view.id))?;
        crate::protocol::same_release(mine, &released)
    }
}

impl AppRules for ReleaseRules {
    fn check(&self, e: &ParsedEntry, _: &LedgerState) -> Result<(), String> {
        match e.kind() {
            Some(Kind::ReleaseResult(r)) => {
                let t0 = Instant::now();
                let verdict = self.check_release(&r.query_id, &r.result);
                let nanos = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                RELEASE_CHECKS.fetch_add(1, Ordering::Relaxed);
                RELEASE_CHECK_NANOS.fetch_add(nanos, Ordering::Relaxed);
                verdict
            }
            _ => Ok(()),
        }
    }

    fn check_failure_ground(&self, query: &str, _: &LedgerState) -> Result<(), String> {
        let view = self
            .view_of(query)
            .ok_or_else(|| format!("query {query} is not running: no ground to check"))?;
        let mut cached = match self.compiles.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        let compiles = match cached.as_ref() {
            Some((instance, ok)) if *instance == view.id => *ok,
            _ => {
                let ok = Batch::compile(&self.committee, view).is_ok();
                *cached = Some((view.id.clone(), ok));
                ok
            }
        };
        if compiles {
            return Err(format!(
                "query {query} compiles for this committee: it is not invalid (a failure for \
                 another reason takes t members)"
            ));
        }
        Ok(())
    }

    fn applied(&mut self, e: &ParsedEntry, _: u64) {
        let Some(kind) = e.kind() else { return };
        if QueryView::query_of(kind).is_none() {
            return;
        }
        let author = match &e.author {
            AuthorId::Node(n) | AuthorId::Researcher(n) => n.clone(),
        };
        for route in self.router.route(&author, kind) {
            match route {
                Route::Start {
                    instance,
                    submits,
                    failures,
                } => {
                    self.views
                        .entry(instance)
                        .or_insert_with(|| QueryView::started(submits).with_failures(failures));
                }
                Route::Apply { instance } => {
                    let ended = match self.views.get_mut(&instance) {
                        Some(v) => {
                            v.apply(&author, kind);
                            v.outcome.is_some()
                        }
                        None => false,
                    };
                    if ended {
                        self.views.remove(&instance);
                    }
                }
            }
        }
    }
}
