//! Cross-query bundling: concurrent small queries share one run of the private protocol.
//!
//! A Count costs the committee about as much as a grouped count over a few bins: every member
//! proves a contribution and a noise share, the decrypting members verify them all, and `t`
//! members each compute a partial decryption with its proof — the last two at about 50 ms and
//! 35 ms per ciphertext at 2048 bits, whatever the number of slots in use. A ciphertext holds
//! about 42 slots of 48 bits, a Count needs one; an Average needs two slots of 96 bits
//! (`query::WIDE_SLOT_BITS`: its shifted sum is one wide noised slot), and a bundle with an
//! Average uses 96-bit slots for all its queries (about 21 per ciphertext). So small queries that
//! arrive while the committee is busy are packed into the slots of one ciphertext and run as
//! one *instance* of the protocol ([`crate::protocol`]): one contribution and one noise share
//! per member, one close, one partial decryption per decrypting member, and then one
//! `ReleaseResult` per query.
//!
//! **The rule** is a function of the ledger's order alone, so every member, and any auditor
//! replaying the log, groups the same queries ([`Router`]):
//! - a query is *bundleable* if it compiles against the platform, is charged exactly its
//!   plan's cost, and uses at most [`MAX_BUNDLED_QUERY_SLOTS`] slots (Counts, Averages and
//!   grouped counts over up to three bins); any other query is an instance of its own, started
//!   at its `SubmitQuery` as before;
//! - at most one bundle is *open* (collecting contributions) at a time. A bundleable query
//!   submitted while none is open starts a bundle of one at once, so an idle committee adds no
//!   latency; one submitted while a bundle is open waits in a queue;
//! - when the open bundle closes (its `CloseAggregate`) or ends (a release or failure of one
//!   of its queries), the queue's head is started as the next bundle: as many queued queries,
//!   in log order, as fit one ciphertext and [`MAX_BUNDLE`]; a queued query that ended before
//!   its bundle started (a member failed it) is dropped from the queue.
//!
//! Under load this is group commit: while one bundle collects contributions, the next one
//! fills. A bundle is named by its first query's id; its entries carry that id and its proofs
//! and decryptions are bound to the ids of all its queries ([`QueryView::tag`]).
//!
//! **Privacy and budgets are per query, unchanged.** Each query is charged in its own
//! `SubmitQuery`; its slots get their own calibrated noise shares (one noise ciphertext holds
//! every query's shares); each release says which queries were decrypted together. Only the
//! range bound of the noise proof is shared: the widest of the bundled queries' bounds
//! (`ShareSpec::share_bound`), still a bound an honest share exceeds with probability at most
//! `2^-80`.

use std::collections::{BTreeMap, VecDeque};

use medtech_ledger::budget::QueryCharge;
use medtech_ledger::entry::Kind;
use medtech_protos::ledger::v1 as pb;
use medtech_threshold::SlotLayout;

use crate::data::Columns;
use crate::protocol::{CommitteeView, FailureTally, QueryView, DATASET};
use crate::query::{Compiled, QuerySpec, SLOT_BITS};

/// How a refusal of a query charged other than its plan's cost begins.
pub(crate) const UNDERCHARGED: &str = "the query was charged";

/// The most slots a query may use and still be bundled (a Count uses one, an Average two).
pub const MAX_BUNDLED_QUERY_SLOTS: usize = 3;

/// The most queries in one bundle.
pub const MAX_BUNDLE: usize = 16;

/// Compiles a submitted query and checks its charge: what every member and auditor derives
/// from the `SubmitQuery` entry alone.
pub fn compile_submitted(
    committee: &CommitteeView,
    query: &[u8],
    cost: &[u8],
) -> Result<Compiled, String> {
    let spec: QuerySpec =
        serde_json::from_slice(query).map_err(|e| format!("query does not parse: {e}"))?;
    let c = committee.compile_query(spec).map_err(|e| e.to_string())?;
    let charge = QueryCharge::decode(cost)?;
    // Every query reads the joint dataset: a charge naming another dataset would spend (or
    // dodge) some other budget while the federation's is untouched.
    if charge.dataset != DATASET {
        return Err(format!(
            "{UNDERCHARGED} to dataset {:?}, but it reads {DATASET:?}",
            charge.dataset
        ));
    }
    if charge.cost != c.plan.cost {
        return Err(format!(
            "{UNDERCHARGED} {} but costs {}",
            charge.cost, c.plan.cost
        ));
    }
    Ok(c)
}

/// The compiled queries of one instance, their slots side by side.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Each query's id and compiled form, in bundle order.
    pub parts: Vec<(String, Compiled)>,
}

impl Batch {
    /// Compiles every query of `view`.
    pub fn compile(committee: &CommitteeView, view: &QueryView) -> Result<Self, String> {
        if view.queries.is_empty() {
            return Err("no query submitted".into());
        }
        let bundled = view.queries.len() > 1;
        let parts = view
            .queries
            .iter()
            .map(|s| {
                compile_submitted(committee, &s.query, &s.cost)
                    .map(|c| (s.id.clone(), c))
                    .map_err(|e| {
                        if bundled {
                            format!("query {}: {e}", s.id)
                        } else {
                            e
                        }
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch { parts })
    }

    /// Slots of one contribution: the sum of the queries'.
    pub fn slots(&self) -> usize {
        self.parts.iter().map(|(_, c)| c.slots()).sum()
    }

    /// Slot width of the instance's ciphertexts: the widest query's (an Average widens every
    /// slot of its bundle, so one layout still covers all of them).
    pub fn slot_bits(&self) -> u32 {
        self.parts
            .iter()
            .map(|(_, c)| c.slot_bits())
            .max()
            .unwrap_or(SLOT_BITS)
    }

    /// Where each value of [`Self::contribution_slots`] goes: its slot of the instance and
    /// its bit offset inside the slot (each query's [`Compiled::placement`], side by side).
    pub fn placement(&self) -> Vec<(usize, u32)> {
        let mut out = Vec::new();
        let mut base = 0;
        for (_, c) in &self.parts {
            out.extend(c.placement().into_iter().map(|(s, o)| (base + s, o)));
            base += c.slots();
        }
        out
    }

    /// The bound the noise shares are proven under: the widest of the queries'. An error if
    /// some query has no bound (compilation refuses those: no fallback to `2^31`).
    pub fn noise_bound(&self) -> Result<u64, String> {
        let mut widest = None;
        for (id, c) in &self.parts {
            let b = c.noise_bound().map_err(|e| format!("query {id}: {e}"))?;
            widest = widest.max(Some(b));
        }
        widest.ok_or_else(|| "no query in the instance".into())
    }

    /// A hospital's committed values for every query, side by side (placed by
    /// [`Self::placement`]).
    pub fn contribution_slots(&self, data: &Columns) -> Result<Vec<u64>, String> {
        let mut out = Vec::with_capacity(self.slots());
        for (_, c) in &self.parts {
            out.extend(
                c.contribution_slots(&c.evaluate(data))
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok(out)
    }

    /// Splits the decrypted totals into each query's slots.
    pub fn split<'a, T>(&self, totals: &'a [T]) -> Vec<(&str, &Compiled, &'a [T])> {
        let mut out = Vec::with_capacity(self.parts.len());
        let mut at = 0;
        for (id, c) in &self.parts {
            let end = (at + c.slots()).min(totals.len());
            out.push((id.as_str(), c, &totals[at.min(end)..end]));
            at = end;
        }
        out
    }
}

/// What a [`Router`] tells its caller to do with an applied entry.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// Start instance `instance` with these `SubmitQuery` entries (author, entry), in order.
    Start {
        /// The instance id (its first query's).
        instance: String,
        /// Its queries' entries.
        submits: Vec<(String, pb::SubmitQuery)>,
        /// Failures of its queries approved while they were queued (not yet in effect).
        failures: FailureTally,
    },
    /// Apply the entry to instance `instance`.
    Apply {
        /// The instance id.
        instance: String,
    },
}

#[derive(Clone, Debug)]
struct Queued {
    author: String,
    entry: pb::SubmitQuery,
    slots: usize,
    slot_bits: u32,
}

/// Assigns queries to protocol instances by the rule in the module docs, fed every applied
/// entry in log order. Deterministic: members and auditors replaying the same log route alike.
#[derive(Debug)]
pub struct Router {
    committee: CommitteeView,
    open: Option<String>,
    queue: VecDeque<Queued>,
    instance_of: BTreeMap<String, String>,
    /// Failures of queued queries, counted as the ledger counts them (its rule 9).
    failures: FailureTally,
    /// The queued query the last [`Self::route`] ended, with its failure's reason.
    ended_queued: Option<(String, String)>,
    /// The open bundle's queries.
    open_ids: Vec<String>,
}

impl Router {
    /// A router for `committee` (its key fixes how many slots one ciphertext holds).
    pub fn new(committee: CommitteeView) -> Self {
        Router {
            open: None,
            queue: VecDeque::new(),
            instance_of: BTreeMap::new(),
            failures: FailureTally::new(usize::from(committee.threshold)),
            ended_queued: None,
            open_ids: Vec::new(),
            committee,
        }
    }

    /// The queued query the last [`Self::route`] call ended by a failure in effect (never
    /// bundled), with the failure's reason.
    pub fn ended_while_queued(&self) -> Option<(&str, &str)> {
        self.ended_queued
            .as_ref()
            .map(|(q, r)| (q.as_str(), r.as_str()))
    }

    /// How many slots of `slot_bits` bits one ciphertext holds under the committee's key.
    fn capacity(&self, slot_bits: u32) -> usize {
        SlotLayout::max_slots(self.committee.key.public_key(), slot_bits).max(1) as usize
    }

    /// The instance query `id` runs in, once started.
    pub fn instance_of(&self, id: &str) -> Option<&str> {
        self.instance_of.get(id).map(String::as_str)
    }

    /// Whether query `id` waits for a bundle to start.
    pub fn is_queued(&self, id: &str) -> bool {
        self.queue.iter().any(|q| q.entry.query_id == id)
    }

    /// Routes one applied entry by `author`.
    pub fn route(&mut self, author: &str, kind: &Kind) -> Vec<Route> {
        self.ended_queued = None;
        let Some(id) = QueryView::query_of(kind) else {
            return Vec::new();
        };
        if let Kind::SubmitQuery(q) = kind {
            if self.instance_of.contains_key(id) || self.is_queued(id) {
                return Vec::new();
            }
            let size = compile_submitted(&self.committee, &q.query, &q.cost)
                .ok()
                .map(|c| (c.slots(), c.slot_bits()))
                .filter(|&(s, bits)| s <= MAX_BUNDLED_QUERY_SLOTS && s <= self.capacity(bits));
            let Some((slots, slot_bits)) = size else {
                return vec![self.start(vec![(author.to_owned(), q.clone())])];
            };
            self.queue.push_back(Queued {
                author: author.to_owned(),
                entry: q.clone(),
                slots,
                slot_bits,
            });
            return self.start_next().into_iter().collect();
        }
        let Some(instance) = self.instance_of.get(id).cloned() else {
            // An outcome for a query still queued: it will not be bundled. One member's
            // failure is an approval (rule 9): the query stays queued until it takes effect.
            let ended = match kind {
                Kind::ReleaseResult(_) => Some(String::new()),
                Kind::QueryFailed(f) if self.is_queued(id) => self.failures.record(author, f),
                _ => None,
            };
            if let Some(reason) = ended {
                self.queue.retain(|q| q.entry.query_id != id);
                self.failures.forget(id);
                if matches!(kind, Kind::QueryFailed(_)) {
                    self.ended_queued = Some((id.to_owned(), reason));
                }
            }
            return Vec::new();
        };
        let mut out = vec![Route::Apply {
            instance: instance.clone(),
        }];
        let ends_open = self.open.as_deref() == Some(instance.as_str())
            && match kind {
                Kind::CloseAggregate(_) | Kind::ReleaseResult(_) => true,
                // Only a failure in effect: one member's vote must not end the bundle, or a
                // member could stop all bundling (every query then runs alone, n times the
                // work) by voting on each bundle's first query.
                Kind::QueryFailed(f) => self.failures.record(author, f).is_some(),
                _ => false,
            };
        if ends_open {
            self.open = None;
            for q in std::mem::take(&mut self.open_ids) {
                self.failures.forget(&q);
            }
            out.extend(self.start_next());
        }
        out
    }

    fn start(&mut self, submits: Vec<(String, pb::SubmitQuery)>) -> Route {
        let instance = submits
            .first()
            .map(|(_, q)| q.query_id.clone())
            .unwrap_or_default();
        for (_, q) in &submits {
            self.instance_of
                .insert(q.query_id.clone(), instance.clone());
        }
        let ids: Vec<&str> = submits.iter().map(|(_, q)| q.query_id.as_str()).collect();
        // The instance's view counts on from the votes made while queued; the router keeps
        // counting too, while the bundle is open.
        let failures = self.failures.copy_of(&ids);
        Route::Start {
            instance,
            submits,
            failures,
        }
    }

    /// Starts the queue's head as a bundle if none is open.
    fn start_next(&mut self) -> Option<Route> {
        if self.open.is_some() || self.queue.is_empty() {
            return None;
        }
        let mut taken = Vec::new();
        let mut slots = 0;
        let mut slot_bits = SLOT_BITS;
        while let Some(q) = self.queue.front() {
            // The bundle's slots are as wide as its widest query's (Batch::slot_bits).
            let bits = slot_bits.max(q.slot_bits);
            if !taken.is_empty()
                && (slots + q.slots > self.capacity(bits) || taken.len() >= MAX_BUNDLE)
            {
                break;
            }
            slots += q.slots;
            slot_bits = bits;
            if let Some(q) = self.queue.pop_front() {
                taken.push((q.author, q.entry));
            }
        }
        let route = self.start(taken);
        if let Route::Start {
            instance, submits, ..
        } = &route
        {
            self.open = Some(instance.clone());
            self.open_ids = submits.iter().map(|(_, q)| q.query_id.clone()).collect();
        }
        Some(route)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use medtech_threshold::dealer;
    use rand_chacha::rand_core::SeedableRng;

    use super::*;
    use crate::protocol::submit_entry;
    use crate::query::{Platform, QueryKind, WIDE_SLOT_BITS};

    fn committee() -> CommitteeView {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let (key, _) = dealer::generate(512, 3, 2, &mut rng).unwrap();
        let members: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        CommitteeView {
            close_tolerance: None,
            members: members.clone(),
            threshold: 2,
            key: Arc::new(key),
            platform: Arc::new(Platform::new(&members)),
        }
    }

    fn submit(c: &CommitteeView, id: &str, kind: QueryKind, target: Option<&str>) -> Kind {
        let spec = QuerySpec {
            kind,
            target: target.map(str::to_owned),
            filters: vec![],
            start_time: None,
            end_time: None,
            epsilon: 0.5,
        };
        let compiled = Compiled::new(spec, &c.platform, c.n(), c.threshold).unwrap();
        submit_entry(id, &compiled, "alice")
    }

    fn started(routes: &[Route]) -> Vec<Vec<String>> {
        routes
            .iter()
            .filter_map(|r| match r {
                Route::Start { submits, .. } => {
                    Some(submits.iter().map(|(_, q)| q.query_id.clone()).collect())
                }
                Route::Apply { .. } => None,
            })
            .collect()
    }

    fn close(id: &str) -> Kind {
        Kind::CloseAggregate(pb::CloseAggregate {
            query_id: id.into(),
            contributors: vec!["a".into()],
            noise_from: vec!["a".into(), "b".into()],
        })
    }

    #[test]
    fn queries_queue_behind_the_open_bundle_and_start_together_at_its_close() {
        let c = committee();
        let mut r = Router::new(c.clone());
        let q1 = r.route("a", &submit(&c, "q1", QueryKind::Count, None));
        assert_eq!(started(&q1), vec![vec!["q1".to_string()]]);
        for id in ["q2", "q3"] {
            assert!(r
                .route("a", &submit(&c, id, QueryKind::Count, None))
                .is_empty());
            assert!(r.is_queued(id));
        }
        // A large query never waits.
        let g = r.route(
            "a",
            &submit(&c, "g", QueryKind::GroupedCount, Some("speciality")),
        );
        assert_eq!(started(&g), vec![vec!["g".to_string()]]);
        // Entries of other instances do not end the open one.
        assert!(started(&r.route("b", &close("g"))).is_empty());
        let at_close = r.route("b", &close("q1"));
        assert_eq!(
            at_close[0],
            Route::Apply {
                instance: "q1".into()
            }
        );
        assert_eq!(
            started(&at_close),
            vec![vec!["q2".to_string(), "q3".into()]]
        );
        assert_eq!(r.instance_of("q3"), Some("q2"));
        assert_eq!(r.instance_of("q2"), Some("q2"));
        // A contribution for a bundled query's id is routed to its bundle.
        let k = Kind::QueryFailed(vote("q3", "x"));
        assert_eq!(
            r.route("a", &k),
            vec![Route::Apply {
                instance: "q2".into()
            }]
        );
    }

    #[test]
    fn a_bundle_holds_no_more_than_one_ciphertext_of_slots() {
        let c = committee();
        let cap = SlotLayout::max_slots(c.key.public_key(), WIDE_SLOT_BITS) as usize;
        let mut r = Router::new(c.clone());
        r.route("a", &submit(&c, "open", QueryKind::Count, None));
        // Averages take two wide slots each.
        let n = cap / 2 + 2;
        for i in 0..n {
            r.route(
                "a",
                &submit(
                    &c,
                    &format!("a{i}"),
                    QueryKind::Average,
                    Some("usage_hours"),
                ),
            );
        }
        let first = started(&r.route("b", &close("open")));
        assert_eq!(first[0].len(), cap / 2);
        let second = started(&r.route("b", &close(&first[0][0])));
        assert_eq!(second[0].len(), n - cap / 2);
    }

    /// One member's vote to fail query `id` (no ground).
    fn vote(id: &str, reason: &str) -> pb::QueryFailed {
        pb::QueryFailed {
            query_id: id.into(),
            reason: reason.into(),
            ground: pb::FailureGround::Unspecified as i32,
        }
    }

    /// The attack: while a query waits in the queue, `t − 1` members approve its failure, and
    /// after it starts one more member's approval would end it on the ledger (which counts
    /// all `t`): the instance's view must count the approvals made while queued, or members
    /// would drive a query the ledger has ended.
    #[test]
    fn approvals_made_while_queued_count_after_the_bundle_starts() {
        let c = committee();
        let mut r = Router::new(c.clone());
        r.route("a", &submit(&c, "q1", QueryKind::Count, None));
        r.route("a", &submit(&c, "q2", QueryKind::Count, None));
        let failed = vote("q2", "queued");
        r.route("b", &Kind::QueryFailed(failed.clone()));
        assert!(r.is_queued("q2"));
        let start = r.route("b", &close("q1"));
        let Some(Route::Start {
            failures, submits, ..
        }) = start.into_iter().nth(1)
        else {
            panic!("q2 did not start");
        };
        assert_eq!(
            failures.approvals("q2").map(|b| b.len()),
            Some(1),
            "the approval made while queued moves with the query"
        );
        let mut view = QueryView::started(submits).with_failures(failures);
        view.apply("c", &Kind::QueryFailed(failed));
        assert_eq!(
            view.outcomes.get("q2"),
            Some(&crate::protocol::Outcome::Failed("queued".into()))
        );
    }

    /// The attack: one member votes to fail the first query of every open bundle. If a vote
    /// ended the open bundle, the next query would start at once, alone, and bundling would
    /// stop: every query would cost a full run. Only a failure in effect ends it.
    #[test]
    fn a_failure_vote_does_not_start_the_next_bundle() {
        let c = committee();
        let mut r = Router::new(c.clone());
        r.route("a", &submit(&c, "q1", QueryKind::Count, None));
        r.route("a", &submit(&c, "q2", QueryKind::Count, None));
        assert!(r.is_queued("q2"));
        let v = Kind::QueryFailed(vote("q1", "vote"));
        assert!(started(&r.route("b", &v)).is_empty());
        assert!(r.is_queued("q2"), "one vote left the bundle open");
        // The t-th vote puts the failure in effect: the next bundle starts.
        assert_eq!(started(&r.route("c", &v)), vec![vec!["q2".to_string()]]);
    }

    #[test]
    fn a_query_failed_while_queued_is_not_bundled() {
        let c = committee();
        let mut r = Router::new(c.clone());
        r.route("a", &submit(&c, "q1", QueryKind::Count, None));
        r.route("a", &submit(&c, "q2", QueryKind::Count, None));
        r.route("a", &submit(&c, "q3", QueryKind::Count, None));
        let failed = Kind::QueryFailed(vote("q2", "x"));
        // One member's failure is an approval (t = 2): still queued.
        assert!(r.route("b", &failed).is_empty());
        assert!(r.is_queued("q2"));
        assert_eq!(r.ended_while_queued(), None);
        // The same member again does not count twice.
        assert!(r.route("b", &failed).is_empty());
        assert!(r.is_queued("q2"));
        // A second member's: in effect, with the first reason.
        assert!(r.route("c", &failed).is_empty());
        assert!(!r.is_queued("q2"));
        assert_eq!(r.ended_while_queued(), Some(("q2", "x")));
        let next = started(&r.route("b", &close("q1")));
        assert_eq!(next, vec![vec!["q3".to_string()]]);
        assert_eq!(r.instance_of("q2"), None);
    }

    #[test]
    fn a_query_charged_to_another_dataset_is_refused() {
        // A member signs a query that reads the federation's data but charges its exact cost
        // to a dataset with budget to spare (or none set): the federation's budget would never
        // see it.
        let c = committee();
        let Kind::SubmitQuery(q) = submit(&c, "elsewhere", QueryKind::Count, None) else {
            panic!()
        };
        let right = QueryCharge::decode(&q.cost).unwrap();
        assert_eq!(right.dataset, DATASET);
        assert!(compile_submitted(&c, &q.query, &q.cost).is_ok());
        let wrong = QueryCharge {
            dataset: "some-other-dataset".into(),
            cost: right.cost,
        }
        .encode();
        let err = compile_submitted(&c, &q.query, &wrong).unwrap_err();
        assert!(err.starts_with(UNDERCHARGED), "{err}");
        assert!(err.contains("some-other-dataset"), "{err}");
        // Nor is it bundled with honest queries: it runs alone, and fails.
        let mut r = Router::new(c.clone());
        r.route("a", &submit(&c, "q1", QueryKind::Count, None));
        let mut bad = q.clone();
        bad.cost = wrong;
        let routes = r.route("b", &Kind::SubmitQuery(bad));
        assert_eq!(started(&routes), vec![vec!["elsewhere".to_string()]]);
    }

    #[test]
    fn a_query_charged_wrongly_runs_alone_and_a_resubmitted_id_is_ignored() {
        let c = committee();
        let mut r = Router::new(c.clone());
        r.route("a", &submit(&c, "q1", QueryKind::Count, None));
        let Kind::SubmitQuery(mut cheap) = submit(&c, "cheap", QueryKind::Count, None) else {
            panic!()
        };
        cheap.cost = QueryCharge {
            dataset: "federation".into(),
            cost: medtech_noise::Cost::default(),
        }
        .encode();
        let routes = r.route("b", &Kind::SubmitQuery(cheap));
        assert_eq!(started(&routes), vec![vec!["cheap".to_string()]]);
        assert!(r
            .route("a", &submit(&c, "q1", QueryKind::Count, None))
            .is_empty());
    }
}
