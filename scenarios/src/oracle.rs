//! The invariants every scenario ends by checking, from the ledger alone.
//!
//! [`check`] waits until every running member has applied the same log, then, from one
//! member's copy (every member's is checked to be byte-identical by size and root):
//!
//! 1. **Same checkpoint everywhere**: every running member reports the same log size, Merkle
//!    root and latest cosigned checkpoint.
//! 2. **The export verifies offline** (`medtech_ledger::export::verify`: hash tree,
//!    signatures, cosignatures, no equivocating checkpoint left unexplained).
//! 3. **No acknowledged entry is lost**: every query the ledger acknowledged is in it.
//! 4. **No budget is overspent or double-charged**: for every researcher and the joint
//!    dataset, what the accountant says was spent equals the sum of the charges of the
//!    queries on the ledger (each query is charged once, by its own entry), and does not
//!    exceed its limit.
//! 5. **No result is released without t valid partial decryptions**: every `ReleaseResult`
//!    is audited independently ([`Verifier::audit_release`]): the closed set's ciphertexts and
//!    range proofs verify, it holds at least `k = n − f` noise shares, the aggregate is
//!    recomputed, every partial posted before the release is verified, and the release equals
//!    the combination of at least `t` valid ones.
//! 6. Culprits named on the ledger are collected for the scenario to compare with the
//!    members it made cheat.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use medtech_federation::bundle::{Route, Router};
use medtech_federation::protocol::{researcher_of, Outcome, QueryView, Verifier};
use medtech_ledger::budget::QueryCharge;
use medtech_ledger::entry::{AuthorId, Kind, ParsedEntry};
use medtech_ledger::merkle::Hash;
use medtech_noise::Subject;

use crate::harness::Committee;

/// What the oracle found (only returned when every invariant held).
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Entries in the agreed log.
    pub size: u64,
    /// Its Merkle root.
    pub root: Hash,
    /// Queries on the ledger.
    pub queries: usize,
    /// Of which released (each audited).
    pub released: usize,
    /// Of which failed.
    pub failed: usize,
    /// Still open.
    pub open: usize,
    /// Members named in `Misbehaviour` entries: culprit → reasons.
    pub accused: BTreeMap<String, Vec<String>>,
    /// Members whose partial decryptions the audit found invalid, per query.
    pub bad_partials: BTreeMap<String, Vec<String>>,
    /// Proposals the ledger refused (validated and not applied).
    pub rejected: u64,
    /// The size of the latest checkpoint cosigned by t members.
    pub cosigned_size: u64,
}

/// Waits (up to `within`) for every running member to agree, then checks every invariant.
pub async fn check(c: &Committee, within: Duration) -> Result<Report, String> {
    let running: Vec<usize> = (0..c.n()).filter(|&i| c.is_running(i)).collect();
    let first = *running.first().ok_or("no member is running")?;
    // 1. Agreement: the same (size, root) at every running member. Cosignatures keep being
    // appended, so poll until one moment where all agree.
    let deadline = tokio::time::Instant::now() + within;
    let (size, _root) = loop {
        let mut heads = BTreeSet::new();
        for &i in &running {
            let h = c.handle(i).ok_or("member stopped")?;
            heads.insert(h.head().map_err(|e| e.to_string())?);
        }
        if heads.len() == 1 {
            if let Some(h) = heads.iter().next().copied() {
                break h;
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "members did not agree on the log within {within:?}: {heads:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let h = c.handle(first).ok_or("member stopped")?;
    let entries = h.entries_from(0, usize::MAX).map_err(|e| e.to_string())?;
    let (size_now, root_now) = h.head().map_err(|e| e.to_string())?;
    if entries.len() as u64 != size_now {
        return Err(format!(
            "{} entries read for a log of {size_now}",
            entries.len()
        ));
    }
    // Checkpoints: every member's latest cosigned checkpoint at the agreed size is the same
    // (the state is a function of the log).
    let mut checkpoints = BTreeSet::new();
    let mut rejected = 0;
    for &i in &running {
        let h = c.handle(i).ok_or("member stopped")?;
        let l = h.read().map_err(|e| e.to_string())?;
        if l.log().tree().size() == size {
            let cp = l.state().latest_checkpoint().map(|c| c.checkpoint);
            checkpoints.insert(format!("{cp:?}"));
            rejected = rejected.max(l.state().rejected());
        }
    }
    if checkpoints.len() > 1 {
        return Err(format!(
            "members hold different cosigned checkpoints: {checkpoints:?}"
        ));
    }
    let mut report = Report {
        size: size_now,
        root: root_now,
        rejected,
        ..Report::default()
    };
    // 2. Offline verification of the export.
    let export = h.export().map_err(|e| e.to_string())?;
    let rules = medtech_federation::rules::ReleaseRules::factory(c.view.clone());
    let verdict = medtech_ledger::export::verify_with(&export, Some(&rules));
    if !verdict.passed() {
        return Err(format!(
            "the export does not verify:\n{}",
            verdict.to_text()
        ));
    }
    // Replay: per query, its view in log order; audit each release against the view just
    // before it.
    let mut views: BTreeMap<String, QueryView> = BTreeMap::new();
    let mut router = Router::new(c.view.clone());
    let mut submitted: BTreeSet<String> = BTreeSet::new();
    let mut charged: BTreeMap<Subject, u64> = BTreeMap::new();
    for bytes in &entries {
        let e = ParsedEntry::decode(bytes).map_err(|e| format!("an applied entry: {e}"))?;
        let Some(kind) = e.kind() else { continue };
        let author = match &e.author {
            AuthorId::Node(n) | AuthorId::Researcher(n) => n.clone(),
        };
        if let Kind::Misbehaviour(m) = kind {
            report
                .accused
                .entry(m.culprit.clone())
                .or_default()
                .push(m.reason.clone());
        }
        let Some(id) = QueryView::query_of(kind) else {
            continue;
        };
        if let Kind::SubmitQuery(q) = kind {
            let charge = QueryCharge::decode(&q.cost)?;
            let researcher = researcher_of(&author, q);
            *charged.entry(Subject::Researcher(researcher)).or_default() += charge.cost.epsilon.0;
            *charged.entry(Subject::Dataset(charge.dataset)).or_default() += charge.cost.epsilon.0;
        }
        if let Kind::SubmitQuery(q) = kind {
            submitted.insert(q.query_id.clone());
        }
        // Grouped into instances exactly as the members group them.
        for route in router.route(&author, kind) {
            match route {
                Route::Start {
                    instance,
                    submits,
                    failures,
                } => {
                    views
                        .entry(instance)
                        .or_insert_with(|| QueryView::started(submits).with_failures(failures));
                }
                Route::Apply { instance } => {
                    let Some(view) = views.get_mut(&instance) else {
                        continue;
                    };
                    if let Kind::ReleaseResult(r) = kind {
                        if !view.outcomes.contains_key(id) {
                            let released: medtech_federation::protocol::Release =
                                serde_json::from_slice(&r.result).map_err(|e| {
                                    format!("query {id}: release does not decode: {e}")
                                })?;
                            let mut v = Verifier::new(c.view.clone());
                            let bad = v
                                .audit_release(view, id, &released)
                                .map_err(|e| format!("query {id}: release fails the audit: {e}"))?;
                            if !bad.is_empty() {
                                report.bad_partials.insert(id.to_owned(), bad);
                            }
                        }
                    }
                    view.apply(&author, kind);
                }
            }
        }
    }
    // 3. Acknowledged queries.
    for id in c.acknowledged() {
        if !submitted.contains(&id) {
            return Err(format!("acknowledged query {id} is not on the ledger"));
        }
    }
    // 4. Budgets.
    {
        let l = h.read().map_err(|e| e.to_string())?;
        let budgets = l.state().budgets();
        for (subject, sum) in &charged {
            let spent = budgets.spent(subject).epsilon.0;
            if spent != *sum {
                return Err(format!(
                    "{subject} was charged {sum} µε by its queries but the ledger says {spent}"
                ));
            }
            if let Some(limit) = budgets.limit(subject) {
                if spent > limit.epsilon.0 {
                    return Err(format!(
                        "{subject} overspent: {spent} µε of {}",
                        limit.epsilon.0
                    ));
                }
            }
        }
        report.cosigned_size = l
            .state()
            .latest_checkpoint()
            .map(|c| c.checkpoint.size)
            .unwrap_or(0);
    }
    // Per query (a bundle's queries each count); a query that ended while queued for a
    // bundle was failed by a member.
    report.queries = submitted.len();
    for id in &submitted {
        let outcome = router
            .instance_of(id)
            .and_then(|i| views.get(i))
            .and_then(|v| v.outcomes.get(id));
        match outcome {
            Some(Outcome::Released(_)) => report.released += 1,
            Some(Outcome::Failed(_)) => report.failed += 1,
            None if router.instance_of(id).is_none() && !router.is_queued(id) => report.failed += 1,
            None => report.open += 1,
        }
    }
    Ok(report)
}
