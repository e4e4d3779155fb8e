//! The private query protocol as each committee member runs it, driven by the ledger.
//!
//! Pure: [`Member::step`] takes what the ledger holds about one query ([`QueryView`]) and the
//! member's clock, and returns the entries this member should post next. The node (I/O) feeds
//! it the ledger and proposes what it returns; scenario tests feed it directly.
//!
//! The unit is an *instance*: one query, or a bundle of small queries packed side by side into
//! the same ciphertexts ([`crate::bundle`], which decides the grouping from the ledger's order).
//! Below, "query" means the instance; its entries carry its id, its proofs are bound to
//! [`QueryView::tag`], and the release is posted once per query of the instance.
//!
//! Per query, every member (each a hospital):
//! 1. recompiles the query from the ledger entry and checks its declared charge equals the
//!    calibrated plan's cost (otherwise posts `QueryFailed`: nothing is contributed to a query
//!    charged less than it costs);
//! 2. evaluates it over its own devices and posts a `Contribution`: the slot values encrypted
//!    and packed under the committee key, each proven in `[0, 2^32 − 1]`, bound to the query id
//!    and the member's name;
//! 3. samples its noise share vector and posts a `NoiseCommitment` (encrypted, range-bounded,
//!    bound to the query id and its party index; `medtech_noise::commitment`). A share outside
//!    the query's proof bound, or a sampler out of its work budget, is never drawn again (a
//!    re-draw would truncate the noise): the member posts no noise share for the query, which
//!    closes on the others' if `k = n − f` are in, or fails at the decryption timeout;
//! 4. once every member contributed — or the contribution timeout passed — and at least
//!    `k = n − f` noise shares are in, posts `CloseAggregate` naming the contributions and noise
//!    shares it verified (the ledger keeps the first close). The designated members verify
//!    each posted share as it arrives, so the close waits only for the last one's check;
//! 5. after the close, verifies every listed ciphertext itself, recomputes the aggregate, and
//!    only then posts its `PartialDecryption` with proofs. Only the query's `t` designated
//!    members ([`CommitteeView::designated`], rotating with the query id) decrypt at first; the
//!    others join after [`Timeouts::partial_fallback_ms`] without a release, or at once when
//!    someone is accused in the query (a designated member down or cheating). No aggregate it did not recompute
//!    from an authorised, closed query is ever decrypted (no decryption oracle), and never one
//!    with fewer than `k = n − f` noise shares (the collusion bound of the calibration,
//!    [`medtech_noise::Committee`]);
//! 6. once `t` partials are in, verifies each member's (once) and combines `t` valid ones,
//!    posts `Misbehaviour` naming every member whose partial failed — also while fewer than
//!    `t` are valid, which is what brings the others in — and posts `ReleaseResult` with the noisy values, their
//!    intervals, and which hospitals contributed — every member's ledger accepts it only if
//!    it is the combination of the `t` partials it names ([`Verifier::check_release`],
//!    [`crate::rules`]). If `t` valid partials never arrive within the decryption timeout, it
//!    posts `QueryFailed` (the budget stays charged); the query fails once `t` members have
//!    posted one ([`FailureTally`]). Only a query that cannot run on the committee (its plan
//!    does not compile, or it is undercharged) is failed by one member, with the ground
//!    `QUERY_INVALID` that every member's rules recheck.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use medtech_ledger::budget::QueryCharge;
use medtech_ledger::entry::Kind;
use medtech_noise::commitment::{encrypt_shares, unshift_shares, verify_shares};
use medtech_noise::QueryResult;
use medtech_protos::ledger::v1 as pb;
use medtech_threshold::{
    Ciphertext, KeyShare, PackedCiphertext, PartialDecryption, PartyIndex, SlotLayout,
    ThresholdPublicKey, VerifiedPartial,
};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::bundle::{Batch, UNDERCHARGED};
use crate::data::Columns;
use crate::query::{Compiled, InvalidQuery, Platform, QuerySpec, SLOT_BOUND};

/// Level of the released intervals (95%).
pub const ALPHA: f64 = 0.05;

/// How noise shares are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseMode {
    /// Calibrated discrete-Laplace shares (production).
    Calibrated,
    /// All-zero shares, for exact end-to-end tests only. Offers no privacy. Exists only with
    /// the `insecure-test-noise` feature, which only dev-dependencies enable (federation's own
    /// tests, the scenarios); CI checks that the `medtech` binary is built without it.
    #[cfg(feature = "insecure-test-noise")]
    DisabledForTests,
    /// Every noise share is this value, for tests of the out-of-bound rule only (a value
    /// outside the query's proof bound stands in for an honest share in the bound's
    /// `2^−80` tail). Same feature as [`NoiseMode::DisabledForTests`]; each share it
    /// produces is counted by [`fixed_noise_draws`].
    #[cfg(feature = "insecure-test-noise")]
    FixedForTests(i128),
}

#[cfg(feature = "insecure-test-noise")]
static FIXED_NOISE_DRAWS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many shares [`NoiseMode::FixedForTests`] has produced in this process (tests only).
#[cfg(feature = "insecure-test-noise")]
pub fn fixed_noise_draws() -> u64 {
    FIXED_NOISE_DRAWS.load(std::sync::atomic::Ordering::SeqCst)
}

/// Why this member's noise step did not produce a share.
enum NoiseFailure {
    /// Nothing was drawn yet (no entropy, not a member): the member may try again.
    NotDrawn(String),
    /// A share was drawn and is void (outside its proof bound, or the sampler's work budget
    /// ran out): never draw again — a re-draw is rejection sampling, which truncates the noise
    /// distribution. The query fails, charged (issue 24 §4).
    Void(String),
}

/// Timeouts, in milliseconds of the member's clock since it first saw the query.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Close without the hospitals that have not contributed by then.
    pub contribution_ms: u64,
    /// Fail the query if it is not released by then.
    pub decryption_ms: u64,
    /// After the close, members other than the `t` designated decrypters wait this long for a
    /// release before decrypting too (a designated member may be down). Long enough that a
    /// designated member still verifying a large query is not mistaken for a dead one (at 2048
    /// bits a 56-bin grouped count takes it seconds); a cheating one is named, which brings the
    /// others in at once.
    pub partial_fallback_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            contribution_ms: 10_000,
            decryption_ms: 60_000,
            partial_fallback_ms: 10_000,
        }
    }
}

/// The committee as this protocol sees it.
#[derive(Clone, Debug)]
pub struct CommitteeView {
    /// Member names in party order: member `i` (0-based) holds key share `PartyIndex(i + 1)`.
    pub members: Vec<String>,
    /// The threshold.
    pub threshold: u16,
    /// The committee key.
    pub key: Arc<ThresholdPublicKey>,
    /// The public query interface.
    pub platform: Arc<Platform>,
    /// f, the ledger committee's close tolerance (`None`: the default).
    pub close_tolerance: Option<u16>,
}

impl CommitteeView {
    /// n.
    pub fn n(&self) -> u16 {
        self.members.len() as u16
    }

    /// The party index of `name`.
    pub fn party(&self, name: &str) -> Option<PartyIndex> {
        self.members
            .iter()
            .position(|m| m == name)
            .map(|i| PartyIndex(i as u16 + 1))
    }

    /// The `t` members that decrypt query `id` first: `t` consecutive members from a start
    /// derived from the query id, so the work rotates over the committee.
    pub fn designated(&self, id: &str) -> Vec<String> {
        use sha2::Digest;
        let h = sha2::Sha256::digest(id.as_bytes());
        let n = self.members.len().max(1);
        let start = (u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
            % n as u64) as usize;
        (0..usize::from(self.threshold).min(n))
            .map(|j| self.members[(start + j) % n].clone())
            .collect()
    }

    /// The noise calibration's committee: `n`, `t` and the close tolerance `f`.
    pub fn noise_committee(&self) -> Result<medtech_noise::Committee, InvalidQuery> {
        medtech_noise::Committee::with_close_tolerance(
            self.n(),
            self.threshold,
            self.close_tolerance,
        )
        .map_err(|e| InvalidQuery(e.to_string()))
    }

    /// Checks `spec` against the platform and calibrates it for this committee.
    pub fn compile_query(&self, spec: QuerySpec) -> Result<Compiled, InvalidQuery> {
        Compiled::for_committee(spec, &self.platform, self.noise_committee()?)
    }

    /// Noise shares a close must list: `k = n − f`
    /// ([`medtech_noise::Committee::close_shares`]). A view whose shape does not validate
    /// needs all `n`.
    pub fn noise_needed(&self) -> usize {
        self.noise_committee()
            .map_or(self.members.len(), |c| c.close_shares() as usize)
    }
}

/// A query as its `SubmitQuery` entry put it on the ledger.
#[derive(Clone, Debug, Default)]
pub struct Submitted {
    /// Query id.
    pub id: String,
    /// The researcher it was submitted by or for.
    pub researcher: String,
    /// Who signed the `SubmitQuery` entry (a member submitting on a researcher's behalf, or
    /// the researcher).
    pub submitted_by: String,
    /// `SubmitQuery.query`.
    pub query: Vec<u8>,
    /// `SubmitQuery.cost`.
    pub cost: Vec<u8>,
}

/// What the ledger holds about one protocol instance, in log order: one query, or a bundle of
/// small queries run as one ([`crate::bundle`]).
#[derive(Clone, Debug, Default)]
pub struct QueryView {
    /// The instance id: its (first) query's id. Contributions, noise shares, the close,
    /// partial decryptions and accusations carry it.
    pub id: String,
    /// The instance's queries, in bundle order (one unless bundled).
    pub queries: Vec<Submitted>,
    /// Contributions by member.
    pub contributions: BTreeMap<String, pb::Contribution>,
    /// Noise shares by member.
    pub noise: BTreeMap<String, pb::NoiseCommitment>,
    /// The close, if posted.
    pub closed: Option<pb::CloseAggregate>,
    /// Partial decryptions by member.
    pub partials: BTreeMap<String, pb::PartialDecryption>,
    /// Members named for misbehaviour in this instance.
    pub accused: BTreeSet<String>,
    /// How each query of the instance ended (the first release or failure of each).
    pub outcomes: BTreeMap<String, Outcome>,
    /// How the instance ended: its first query's outcome, set once every query of the
    /// instance has one.
    pub outcome: Option<Outcome>,
    /// Failures posted for the instance's queries, counted as the ledger counts them.
    pub failures: FailureTally,
}

/// `QueryFailed` entries counted as the ledger's rule 9 counts them
/// (`medtech_ledger::state`): one with the ground `QUERY_INVALID` ends its query at once (the
/// ledger applies it only after every member's rules confirmed the ground,
/// [`crate::rules::ReleaseRules`]); any other is one member's approval, and the query fails
/// once `quorum` (the committee's `t`) distinct members posted one, with the first reason.
///
/// The query views and the router see only entries the ledger applied, so counting here
/// reaches the ledger's verdict without asking it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FailureTally {
    quorum: usize,
    pending: BTreeMap<String, (String, BTreeSet<String>)>,
}

impl FailureTally {
    /// A tally for a committee of threshold `quorum` (0 or 1: every failure takes effect).
    pub fn new(quorum: usize) -> Self {
        FailureTally {
            quorum,
            pending: BTreeMap::new(),
        }
    }

    /// Records `author`'s applied `QueryFailed`; returns the reason the query fails with if it
    /// now takes effect.
    pub fn record(&mut self, author: &str, f: &pb::QueryFailed) -> Option<String> {
        if f.ground == pb::FailureGround::QueryInvalid as i32 || self.quorum <= 1 {
            self.pending.remove(&f.query_id);
            return Some(f.reason.clone());
        }
        let (reason, by) = self
            .pending
            .entry(f.query_id.clone())
            .or_insert_with(|| (f.reason.clone(), BTreeSet::new()));
        by.insert(author.to_owned());
        if by.len() < self.quorum {
            return None;
        }
        let reason = reason.clone();
        self.pending.remove(&f.query_id);
        Some(reason)
    }

    /// The members that approved a failure of `query` not yet in effect.
    pub fn approvals(&self, query: &str) -> Option<&BTreeSet<String>> {
        self.pending.get(query).map(|(_, by)| by)
    }

    /// The pending approvals of `queries`, copied into a tally of their own (same quorum).
    pub fn copy_of(&self, queries: &[&str]) -> FailureTally {
        let mut out = FailureTally::new(self.quorum);
        for q in queries {
            if let Some(p) = self.pending.get(*q) {
                out.pending.insert((*q).to_owned(), p.clone());
            }
        }
        out
    }

    /// Forgets `query` (it ended otherwise).
    pub fn forget(&mut self, query: &str) {
        self.pending.remove(query);
    }
}

/// How a query ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Released.
    Released(Box<Release>),
    /// Failed.
    Failed(String),
}

impl QueryView {
    /// Feeds one applied ledger entry by `author` (a member name, or the researcher id). A
    /// `SubmitQuery` adds a query to the instance (the first one names it).
    pub fn apply(&mut self, author: &str, kind: &Kind) {
        match kind {
            Kind::SubmitQuery(q) => {
                if self.queries.iter().any(|s| s.id == q.query_id) {
                    return;
                }
                if self.id.is_empty() {
                    self.id = q.query_id.clone();
                }
                self.queries.push(Submitted {
                    id: q.query_id.clone(),
                    submitted_by: author.to_owned(),
                    researcher: researcher_of(author, q),
                    query: q.query.clone(),
                    cost: q.cost.clone(),
                });
            }
            Kind::Contribution(c) => {
                self.contributions.insert(author.to_owned(), c.clone());
            }
            Kind::NoiseCommitment(c) => {
                self.noise.insert(author.to_owned(), c.clone());
            }
            Kind::CloseAggregate(c) if self.closed.is_none() => {
                self.closed = Some(c.clone());
            }
            Kind::PartialDecryption(p) => {
                self.partials.insert(author.to_owned(), p.clone());
            }
            Kind::Misbehaviour(m) => {
                self.accused.insert(m.culprit.clone());
            }
            Kind::ReleaseResult(r) => {
                let o = match serde_json::from_slice(&r.result) {
                    Ok(rel) => Outcome::Released(Box::new(rel)),
                    Err(e) => Outcome::Failed(format!("released result does not decode: {e}")),
                };
                self.end(&r.query_id, o);
            }
            Kind::QueryFailed(f) => {
                // As the ledger counts (rule 9).
                if let Some(reason) = self.failures.record(author, f) {
                    self.end(&f.query_id, Outcome::Failed(reason));
                }
            }
            _ => {}
        }
    }

    /// This view counting failures with `failures` (the router's tally of its queries'
    /// approvals so far, [`crate::bundle::Route::Start`]).
    pub fn with_failures(mut self, failures: FailureTally) -> Self {
        self.failures = failures;
        self
    }

    /// A view of an instance started with these `SubmitQuery` entries (author, entry), in
    /// bundle order ([`crate::bundle::Route::Start`]).
    pub fn started(submits: Vec<(String, pb::SubmitQuery)>) -> Self {
        let mut view = QueryView::default();
        for (who, q) in submits {
            view.apply(&who, &Kind::SubmitQuery(q));
        }
        view
    }

    fn end(&mut self, query: &str, o: Outcome) {
        if !self.queries.iter().any(|s| s.id == query) {
            return;
        }
        self.outcomes.entry(query.to_owned()).or_insert(o);
        if self.outcome.is_none() && self.outcomes.len() == self.queries.len() {
            self.outcome = self.outcomes.get(&self.id).cloned();
        }
    }

    /// The queries of the instance that have not ended.
    pub fn unfinished(&self) -> impl Iterator<Item = &Submitted> {
        self.queries
            .iter()
            .filter(|s| !self.outcomes.contains_key(&s.id))
    }

    /// What the instance's proofs and decryptions are bound to: the query id, or for a
    /// bundle the ids of all its queries (so a bundle's ciphertexts cannot be passed off as
    /// another's).
    pub fn tag(&self) -> Vec<u8> {
        if self.queries.len() <= 1 {
            return self.id.as_bytes().to_vec();
        }
        let mut t = b"bundle".to_vec();
        for s in &self.queries {
            t.extend_from_slice(&(s.id.len() as u64).to_be_bytes());
            t.extend_from_slice(s.id.as_bytes());
        }
        t
    }

    /// The query id an entry refers to, if it is about a query.
    pub fn query_of(kind: &Kind) -> Option<&str> {
        Some(match kind {
            Kind::SubmitQuery(q) => &q.query_id,
            Kind::Contribution(c) => &c.query_id,
            Kind::NoiseCommitment(c) => &c.query_id,
            Kind::CloseAggregate(c) => &c.query_id,
            Kind::PartialDecryption(p) => &p.query_id,
            Kind::ReleaseResult(r) => &r.query_id,
            Kind::QueryFailed(f) => &f.query_id,
            Kind::Misbehaviour(m) if !m.query_id.is_empty() => &m.query_id,
            _ => return None,
        })
    }
}

/// The researcher a `SubmitQuery` entry signed by `author` is for: its `on_behalf_of`, or the
/// author when it signed for itself.
pub fn researcher_of(author: &str, q: &pb::SubmitQuery) -> String {
    if q.on_behalf_of.is_empty() {
        author.to_owned()
    } else {
        q.on_behalf_of.clone()
    }
}

/// A released result as stored in `ReleaseResult.result` (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Release {
    /// The query.
    pub query: QuerySpec,
    /// Output labels (bins, or `count` / `sum`,`count`).
    pub labels: Vec<String>,
    /// The noisy result with intervals (raw noisy integers; display clamps are the reader's).
    pub result: QueryResult,
    /// The released average, when the query is one (post-processing of the two outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average: Option<f64>,
    /// Interval level.
    pub confidence: f64,
    /// Hospitals whose data is in the result.
    pub contributors: Vec<String>,
    /// Members whose noise shares are in the result.
    pub noise_from: Vec<String>,
    /// Members whose partial decryptions were combined.
    pub decrypted_by: Vec<String>,
    /// The queries decrypted together with this one, all of them in bundle order, when it
    /// was bundled ([`crate::bundle`]); empty when it ran alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bundle: Vec<String>,
}

/// The entries that register `researcher` (public key `public_key`) with an ε limit and give
/// the joint dataset `federation` its limit, both in millionths of ε.
pub fn registration_entries(
    researcher: &str,
    public_key: &[u8; 32],
    limit_micros: u64,
    dataset_limit_micros: u64,
) -> [Kind; 3] {
    [
        Kind::RegisterResearcher(pb::RegisterResearcher {
            researcher_id: researcher.into(),
            display_name: researcher.into(),
            public_key: public_key.to_vec(),
        }),
        budget_entry(&format!("researcher:{researcher}"), limit_micros),
        budget_entry(&format!("dataset:{DATASET}"), dataset_limit_micros),
    ]
}

/// The entry that sets `subject`'s (`researcher:<id>`, `dataset:<id>` or `global`) ε limit,
/// in millionths of ε.
pub fn budget_entry(subject: &str, epsilon_micros: u64) -> Kind {
    Kind::SetBudget(pb::SetBudget {
        subject: subject.to_owned(),
        limit: medtech_ledger::budget::encode_limit(&medtech_noise::Cost {
            epsilon: medtech_noise::Micros(epsilon_micros),
            ..medtech_noise::Cost::default()
        }),
    })
}

/// The dataset every federation query reads and is charged against.
pub const DATASET: &str = "federation";

/// The `SubmitQuery` entry for `compiled` as query `id`, submitted on behalf of `researcher`
/// and charging the plan's cost against the joint dataset.
pub fn submit_entry(id: &str, compiled: &Compiled, researcher: &str) -> Kind {
    keyed_submit_entry(id, compiled, researcher, None)
}

/// [`submit_entry`] under the researcher's idempotency key, if any: the ledger admits one
/// query per (researcher, key) (`medtech_ledger::state`, rule 5), so a retry is charged once.
pub fn keyed_submit_entry(
    id: &str,
    compiled: &Compiled,
    researcher: &str,
    idempotency_key: Option<&str>,
) -> Kind {
    Kind::SubmitQuery(pb::SubmitQuery {
        query_id: id.to_owned(),
        // Serialising plain data cannot fail.
        query: serde_json::to_vec(&compiled.spec).unwrap_or_default(),
        cost: QueryCharge {
            dataset: DATASET.into(),
            cost: compiled.plan.cost,
        }
        .encode(),
        on_behalf_of: researcher.into(),
        idempotency_key: idempotency_key.unwrap_or_default().into(),
    })
}

/// One contribution ciphertext's layout, the range of committed values it carries and their
/// bit offsets in it.
type PlacedLayout = (SlotLayout, std::ops::Range<usize>, Vec<u32>);

fn contribution_context(tag: &[u8], member: &str) -> Vec<u8> {
    let mut c = b"medtech-federation/v1/contribution".to_vec();
    for part in [tag, member.as_bytes()] {
        c.extend_from_slice(&(part.len() as u64).to_be_bytes());
        c.extend_from_slice(part);
    }
    c
}

fn decryption_context(tag: &[u8], k: usize) -> Vec<u8> {
    let mut c = b"medtech-federation/v1/decrypt".to_vec();
    c.extend_from_slice(&(tag.len() as u64).to_be_bytes());
    c.extend_from_slice(tag);
    c.extend_from_slice(&(k as u64).to_be_bytes());
    c
}

/// Length-prefixed concatenation (the entries carry one proof per ciphertext in one field).
fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn split(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_at_checked(4).ok_or("truncated proof list")?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (p, rest) = rest.split_at_checked(len).ok_or("truncated proof")?;
        out.push(p);
        bytes = rest;
    }
    Ok(out)
}

/// What every member — and any auditor holding only the public key and the ledger — checks
/// about a query: the query compiles to the charged plan, each posted ciphertext carries a
/// valid range proof bound to its query and author, the aggregate is the sum of the closed
/// set, and the partial decryptions prove correct. Caches what it verified.
pub struct Verifier {
    committee: CommitteeView,
    compiled: Option<Result<Batch, String>>,
    verified: BTreeMap<(bool, String), Result<Vec<PackedCiphertext>, String>>,
    partials_checked: BTreeMap<String, Result<Vec<VerifiedPartial>, String>>,
    /// This member's own partials: its name, the bytes it posted, and the partials as
    /// computed (correct by construction).
    own_partial: Option<(String, Vec<Vec<u8>>, Vec<VerifiedPartial>)>,
    /// This member's own contribution (`false`) and noise share (`true`) as it posted them,
    /// with the packed ciphertexts it encrypted (in range by construction): accepted without
    /// a proof check when the ledger holds exactly these bytes under its name.
    own_posts: BTreeMap<bool, (String, OwnPost)>,
}

/// What a member posted (ciphertexts and joined proofs) and what they are, packed.
type OwnPost = (Vec<Vec<u8>>, Vec<u8>, Vec<PackedCiphertext>);

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("members", &self.committee.members)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for one query of `committee`.
    pub fn new(committee: CommitteeView) -> Self {
        Verifier {
            committee,
            compiled: None,
            verified: BTreeMap::new(),
            partials_checked: BTreeMap::new(),
            own_partial: None,
            own_posts: BTreeMap::new(),
        }
    }

    /// Audits a released query from the ledger alone: `view` holds the entries of the query's
    /// instance up to (not including) its `ReleaseResult`, `released` what that entry released
    /// for query `id` (the instance's, or one of its bundle's). Checks that
    /// the close lists at least `k = n − f` noise shares, that every listed contribution and
    /// noise share verifies, recomputes the aggregate, verifies every posted partial
    /// decryption against it, and requires the release to equal the combination of valid
    /// partials, made by at least `t` members whose partials verify. Returns the members whose
    /// partials did not verify.
    pub fn audit_release(
        &mut self,
        view: &QueryView,
        id: &str,
        released: &Release,
    ) -> Result<Vec<String>, String> {
        let c = self.compile(view)?;
        let closed = view
            .closed
            .as_ref()
            .ok_or("released without a closed aggregate")?;
        let aggregate = self
            .recompute(view, &c, closed)
            .map_err(|(_, why)| format!("the closed aggregate does not recompute: {why}"))?;
        let (ours, cheats) = self.combine(view, &c, closed, &aggregate);
        let ours = ours?
            .into_iter()
            .find(|(q, _)| q == id)
            .map(|(_, r)| r)
            .ok_or_else(|| format!("query {id} is not in the instance {}", view.id))?;
        // Compared as stored: through the same JSON encoding the release went through.
        let ours: Release = serde_json::to_vec(&ours)
            .and_then(|b| serde_json::from_slice(&b))
            .map_err(|e| format!("release encoding: {e}"))?;
        let cheats: BTreeSet<String> = cheats.into_iter().map(|(m, _)| m).collect();
        if ours.result != released.result || ours.labels != released.labels {
            return Err(format!(
                "the released values are not the decryption of the aggregate: released {:?}, recomputed {:?}",
                released.result, ours.result
            ));
        }
        if ours.contributors != released.contributors
            || ours.noise_from != released.noise_from
            || ours.bundle != released.bundle
        {
            return Err(
                "the release names other contributors or noise shares than the close".into(),
            );
        }
        let valid: BTreeSet<&String> = view
            .partials
            .keys()
            .filter(|m| !cheats.contains(*m))
            .collect();
        if released.decrypted_by.len() < usize::from(self.committee.threshold) {
            return Err(format!(
                "decrypted by {} members, fewer than t = {}",
                released.decrypted_by.len(),
                self.committee.threshold
            ));
        }
        if let Some(m) = released.decrypted_by.iter().find(|m| !valid.contains(m)) {
            return Err(format!(
                "{m} is named as a decrypter without a valid partial"
            ));
        }
        Ok(cheats.into_iter().collect())
    }

    /// The ledger's release rule (rule 8 of `medtech_ledger::state`, applied by
    /// [`crate::rules::ReleaseRules`] on every member): `released`, posted for query `id` of
    /// the instance in `view` (the entries before the release), must be what the combination of
    /// the `t` partial decryptions it names gives. Recomputes the aggregate from the
    /// ciphertexts the close lists (their range proofs are each decrypter's business: an
    /// honest member verifies them before it decrypts, and any `t` partials include one),
    /// verifies the named members' partial decryptions against it — `t` proofs per aggregate
    /// ciphertext, nothing more — combines and decodes them as [`Self::finish`] does for a
    /// member's own release, and compares: names and integers exactly, floating-point
    /// post-processing (intervals, average) to a relative `1e-9`, so that the verdict does not
    /// depend on the platform's `ln`/`exp`. Returns the releases of every query of the
    /// instance as combined (a bundle's other releases are the same combination).
    pub fn check_release(
        &mut self,
        view: &QueryView,
        id: &str,
        released: &Release,
    ) -> Result<Vec<(String, Release)>, String> {
        let ours = self.combine_named(view, &released.decrypted_by)?;
        let mine = ours
            .iter()
            .find(|(q, _)| q == id)
            .map(|(_, r)| r)
            .ok_or_else(|| format!("query {id} is not in the instance {}", view.id))?;
        same_release(mine, released)?;
        Ok(ours)
    }

    /// The instance's releases as the combination of the partial decryptions of exactly the
    /// `t` members `named` (each verified) of the aggregate recomputed without range proofs.
    pub fn combine_named(
        &mut self,
        view: &QueryView,
        named: &[String],
    ) -> Result<Vec<(String, Release)>, String> {
        let c = self.compile(view)?;
        let closed = view
            .closed
            .as_ref()
            .ok_or("released before the aggregate was closed")?;
        if closed.noise_from.len() < self.committee.noise_needed() {
            return Err("the close lists too few noise shares".into());
        }
        let t = usize::from(self.committee.threshold);
        let distinct: BTreeSet<&String> = named.iter().collect();
        if distinct.len() != named.len() {
            return Err("the release names a decrypter twice".into());
        }
        if named.len() != t {
            return Err(format!(
                "the release names {} decrypters; a release combines exactly t = {t}",
                named.len()
            ));
        }
        let aggregate = self.sum_listed(view, &c, closed)?;
        let mut chosen = Vec::with_capacity(t);
        for m in named {
            let party = self
                .committee
                .party(m)
                .ok_or_else(|| format!("{m}, named as a decrypter, is not a member"))?;
            let p = view.partials.get(m).ok_or_else(|| {
                format!("{m} is named as a decrypter but posted no partial decryption")
            })?;
            let v = verify_partials(&self.committee.key, &view.tag(), party, &aggregate, p)
                .map_err(|e| format!("{m}'s partial decryption does not verify: {e}"))?;
            chosen.push((party, v));
        }
        chosen.sort_by_key(|(p, _)| *p);
        let ours = self.finish(view, &c, closed, &aggregate, &chosen)?;
        // Compared as stored: through the same JSON encoding the release went through.
        ours.into_iter()
            .map(|(q, r)| {
                serde_json::to_vec(&r)
                    .and_then(|b| serde_json::from_slice::<Release>(&b))
                    .map(|r| (q, r))
                    .map_err(|e| format!("release encoding: {e}"))
            })
            .collect()
    }

    /// The homomorphic sum of the ciphertexts the close lists, read without their proofs
    /// (see [`Self::check_release`]).
    fn sum_listed(
        &self,
        view: &QueryView,
        c: &Batch,
        closed: &pb::CloseAggregate,
    ) -> Result<Vec<PackedCiphertext>, String> {
        let pk = self.committee.key.public_key();
        let placed = self.placed_layouts(c)?;
        let mut agg: Option<Vec<PackedCiphertext>> = None;
        let posted = closed
            .contributors
            .iter()
            .map(|m| (false, m))
            .chain(closed.noise_from.iter().map(|m| (true, m)));
        for (noise, m) in posted {
            let cts = if noise {
                &view
                    .noise
                    .get(m)
                    .ok_or("a listed noise share is missing")?
                    .ciphertexts
            } else {
                &view
                    .contributions
                    .get(m)
                    .ok_or("a listed contribution is missing")?
                    .ciphertexts
            };
            if cts.len() != placed.len() {
                return Err(format!(
                    "{m} posted {} ciphertexts for {} layouts",
                    cts.len(),
                    placed.len()
                ));
            }
            let mut part = Vec::with_capacity(cts.len());
            for ((layout, _, offsets), ct) in placed.iter().zip(cts) {
                let ct = Ciphertext::from_bytes(pk, ct).map_err(|e| format!("{m}: {e}"))?;
                let packed = if noise {
                    unshift_shares(pk, *layout, c.noise_bound()?, &ct)
                        .map_err(|e| format!("{m}: {e}"))?
                } else {
                    medtech_threshold::range::range_slot_bound(*layout, offsets, SLOT_BOUND)
                        .and_then(|b| PackedCiphertext::from_parts(ct, *layout, b))
                        .map_err(|e| format!("{m}: {e}"))?
                };
                part.push(packed);
            }
            agg = Some(match agg {
                None => part,
                Some(acc) => acc
                    .iter()
                    .zip(&part)
                    .map(|(a, b)| a.add(pk, b))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?,
            });
        }
        agg.ok_or_else(|| "empty aggregate".into())
    }

    /// The instance's ciphertext layouts: its slots, as wide as [`Batch::slot_bits`].
    fn layouts(&self, c: &Batch) -> Result<Vec<SlotLayout>, String> {
        SlotLayout::cover(
            self.committee.key.public_key(),
            c.slot_bits(),
            c.slots() as u32,
        )
        .map_err(|e| e.to_string())
    }

    /// The layouts of a contribution, each with the range of committed values it carries and
    /// their bit offsets in it ([`Batch::placement`]): an Average's two limbs land in one
    /// wide slot, so the plaintext never holds a limb on its own.
    fn placed_layouts(&self, c: &Batch) -> Result<Vec<PlacedLayout>, String> {
        let placement = c.placement();
        let mut out = Vec::new();
        let (mut first_slot, mut at) = (0usize, 0usize);
        for layout in self.layouts(c)? {
            let end_slot = first_slot + layout.slots() as usize;
            let start = at;
            let mut offsets = Vec::new();
            while let Some(&(slot, shift)) = placement.get(at).filter(|(s, _)| *s < end_slot) {
                // slot − first_slot < layout.slots(), so the offset is below |N|.
                offsets.push((slot - first_slot) as u32 * layout.slot_bits() + shift);
                at += 1;
            }
            out.push((layout, start..at, offsets));
            first_slot = end_slot;
        }
        if at != placement.len() {
            return Err("internal: committed values outside the layouts".into());
        }
        Ok(out)
    }

    fn compile(&mut self, view: &QueryView) -> Result<Batch, String> {
        if self.compiled.is_none() {
            self.compiled = Some(Batch::compile(&self.committee, view));
        }
        match &self.compiled {
            Some(r) => r.clone(),
            None => Err("internal: query not compiled".into()),
        }
    }

    /// Verifies one posted contribution (`noise = false`) or noise share (`true`), cached.
    fn verify(
        &mut self,
        view: &QueryView,
        c: &Batch,
        noise: bool,
        member: &str,
    ) -> Result<Vec<PackedCiphertext>, String> {
        let key = (noise, member.to_owned());
        if let Some(r) = self.verified.get(&key) {
            return r.clone();
        }
        let r = self.accept_posted(view, c, noise, member);
        self.verified.insert(key, r.clone());
        r
    }

    /// Verifies the not yet verified ones of `items` (`(noise, member)`) in parallel, filling
    /// the cache [`Self::verify`] reads.
    fn prefetch(&mut self, view: &QueryView, c: &Batch, items: Vec<(bool, String)>) {
        let todo: Vec<(bool, String)> = items
            .into_iter()
            .filter(|k| !self.verified.contains_key(k))
            .collect();
        let this = &*self;
        let done = par_map(todo, |(noise, m)| {
            let r = this.accept_posted(view, c, noise, &m);
            ((noise, m), r)
        });
        self.verified.extend(done);
    }

    /// A posted contribution or noise share as verified packed ciphertexts: this member's own
    /// as it posted them ([`Self::own_post`]), anyone else's through [`Self::check_posted`].
    fn accept_posted(
        &self,
        view: &QueryView,
        c: &Batch,
        noise: bool,
        member: &str,
    ) -> Result<Vec<PackedCiphertext>, String> {
        match self.own_post(view, noise, member) {
            Some(own) => Ok(own),
            None => self.check_posted(view, c, noise, member),
        }
    }

    /// This member's own contribution or noise share, if `member` is this member and the
    /// ledger holds exactly what it posted: its ciphertexts need no proof check of its own
    /// (everyone else still checks them).
    fn own_post(
        &self,
        view: &QueryView,
        noise: bool,
        member: &str,
    ) -> Option<Vec<PackedCiphertext>> {
        let (name, (cts, proofs, packed)) = self.own_posts.get(&noise)?;
        let (posted_cts, posted_proofs) = if noise {
            let e = view.noise.get(member)?;
            (&e.ciphertexts, &e.range_proof)
        } else {
            let e = view.contributions.get(member)?;
            (&e.ciphertexts, &e.range_proof)
        };
        (name == member && posted_cts == cts && posted_proofs == proofs).then(|| packed.clone())
    }

    fn check_posted(
        &self,
        view: &QueryView,
        c: &Batch,
        noise: bool,
        member: &str,
    ) -> Result<Vec<PackedCiphertext>, String> {
        let (cts, proofs) = if noise {
            let e = view.noise.get(member).ok_or("no noise share posted")?;
            (&e.ciphertexts, &e.range_proof)
        } else {
            let e = view
                .contributions
                .get(member)
                .ok_or("no contribution posted")?;
            (&e.ciphertexts, &e.range_proof)
        };
        let layouts = self.placed_layouts(c)?;
        let proofs = split(proofs)?;
        if cts.len() != layouts.len() || proofs.len() != layouts.len() {
            return Err(format!(
                "{} ciphertexts and {} proofs for {} layouts",
                cts.len(),
                proofs.len(),
                layouts.len()
            ));
        }
        let pk = self.committee.key.public_key();
        let mut out = Vec::with_capacity(layouts.len());
        for (((layout, _, offsets), ct), proof) in layouts.iter().zip(cts).zip(proofs) {
            let ct = Ciphertext::from_bytes(pk, ct).map_err(|e| e.to_string())?;
            let proof = medtech_threshold::range::RangeProof::from_bytes(pk, proof)
                .map_err(|e| e.to_string())?;
            let packed = if noise {
                let party = self.committee.party(member).ok_or("not a member")?;
                verify_shares(
                    pk,
                    *layout,
                    c.noise_bound()?,
                    &view.tag(),
                    party,
                    &ct,
                    &proof,
                )
                .map_err(|e| e.to_string())?
            } else {
                pk.verify_range_at(
                    *layout,
                    offsets,
                    SLOT_BOUND,
                    &contribution_context(&view.tag(), member),
                    &ct,
                    &proof,
                )
                .map_err(|e| e.to_string())?
            };
            out.push(packed);
        }
        Ok(out)
    }

    /// Sums the closed set's ciphertexts, each verified by this member.
    fn recompute(
        &mut self,
        view: &QueryView,
        c: &Batch,
        closed: &pb::CloseAggregate,
    ) -> Result<Vec<PackedCiphertext>, (Option<String>, String)> {
        if closed.noise_from.len() < self.committee.noise_needed() {
            return Err((None, "too few noise shares".into()));
        }
        let key = Arc::clone(&self.committee.key);
        let pk = key.public_key();
        let mut agg: Option<Vec<PackedCiphertext>> = None;
        let items: Vec<(bool, String)> = closed
            .contributors
            .iter()
            .map(|m| (false, m.clone()))
            .chain(closed.noise_from.iter().map(|m| (true, m.clone())))
            .collect();
        self.prefetch(view, c, items.clone());
        for (noise, m) in &items {
            let (noise, m) = (*noise, m);
            let part = self.verify(view, c, noise, m).map_err(|e| {
                let what = if noise { "noise share" } else { "contribution" };
                (Some(m.clone()), format!("{m}'s {what} is invalid: {e}"))
            })?;
            agg = Some(match agg {
                None => part,
                Some(acc) => acc
                    .iter()
                    .zip(&part)
                    .map(|(a, b)| a.add(pk, b))
                    .collect::<Result<_, _>>()
                    .map_err(|e| (None, e.to_string()))?,
            });
        }
        agg.ok_or((None, "empty aggregate".into()))
    }

    /// Verifies every posted partial decryption against `aggregate` (each member's once,
    /// cached) and combines the first `t` valid ones. Returns the release of each query of the
    /// instance, or why not yet, and in both cases the members whose partials did not verify.
    #[allow(clippy::type_complexity)]
    fn combine(
        &mut self,
        view: &QueryView,
        c: &Batch,
        closed: &pb::CloseAggregate,
        aggregate: &[PackedCiphertext],
    ) -> (
        Result<Vec<(String, Release)>, String>,
        Vec<(String, String)>,
    ) {
        let key = Arc::clone(&self.committee.key);
        let mut cheats: BTreeMap<String, String> = BTreeMap::new();
        let mut valid: BTreeMap<PartyIndex, Vec<VerifiedPartial>> = BTreeMap::new();
        // This member's own partial, exactly as it posted it, needs no check of its own; the
        // others' are checked in parallel.
        let mut todo = Vec::new();
        for (member, p) in &view.partials {
            if self.partials_checked.contains_key(member) {
                continue;
            }
            match &self.own_partial {
                Some((name, bytes, own)) if name == member && *bytes == p.partials => {
                    self.partials_checked
                        .insert(member.clone(), Ok(own.clone()));
                }
                _ => {
                    if let Some(party) = self.committee.party(member) {
                        todo.push((member.clone(), party, p));
                    }
                }
            }
        }
        let checked = par_map(todo, |(member, party, p)| {
            let r = verify_partials(&key, &view.tag(), party, aggregate, p);
            (member, r)
        });
        self.partials_checked.extend(checked);
        // Every posted partial of a member is now in the cache.
        for member in view.partials.keys() {
            let (Some(party), Some(checked)) = (
                self.committee.party(member),
                self.partials_checked.get(member),
            ) else {
                continue;
            };
            match checked {
                Ok(v) => {
                    valid.insert(party, v.clone());
                }
                Err(e) => {
                    cheats.insert(member.clone(), e.clone());
                }
            }
        }
        let cheats: Vec<(String, String)> = cheats.into_iter().collect();
        let t = usize::from(self.committee.threshold);
        if valid.len() < t {
            return (
                Err(format!(
                    "{} valid partial decryptions of t = {t}",
                    valid.len()
                )),
                cheats,
            );
        }
        let chosen: Vec<(PartyIndex, Vec<VerifiedPartial>)> = valid.into_iter().take(t).collect();
        match self.finish(view, c, closed, aggregate, &chosen) {
            Ok(r) => (Ok(r), cheats),
            Err(e) => (Err(e), cheats),
        }
    }

    fn finish(
        &self,
        view: &QueryView,
        c: &Batch,
        closed: &pb::CloseAggregate,
        aggregate: &[PackedCiphertext],
        chosen: &[(PartyIndex, Vec<VerifiedPartial>)],
    ) -> Result<Vec<(String, Release)>, String> {
        let key = &self.committee.key;
        let tag = view.tag();
        let mut totals = Vec::with_capacity(c.slots());
        let mut decrypted_by: BTreeSet<PartyIndex> = BTreeSet::new();
        for (k, agg) in aggregate.iter().enumerate() {
            let set: Vec<VerifiedPartial> = chosen
                .iter()
                .filter_map(|(_, v)| v.get(k).cloned())
                .collect();
            let out = key
                .combine(&decryption_context(&tag, k), agg.ciphertext(), &set)
                .map_err(|e| e.to_string())?;
            decrypted_by.extend(out.parties.iter().copied());
            totals.extend(agg.decode_wide(&out.plaintext).map_err(|e| e.to_string())?);
        }
        if totals.len() < c.slots() {
            return Err(format!(
                "{} slots decrypted for {} queried",
                totals.len(),
                c.slots()
            ));
        }
        let decrypted_by: Vec<String> = decrypted_by
            .iter()
            .filter_map(|p| {
                self.committee
                    .members
                    .get(usize::from(p.0).saturating_sub(1))
                    .cloned()
            })
            .collect();
        let bundle: Vec<String> = if c.parts.len() > 1 {
            c.parts.iter().map(|(id, _)| id.clone()).collect()
        } else {
            Vec::new()
        };
        // With noise disabled (tests) the intervals are still those of the calibrated shares.
        let shares = closed.noise_from.len() as u32;
        let mut out = Vec::with_capacity(c.parts.len());
        for (id, q, totals) in c.split(&totals) {
            let raw = q
                .raw_outputs(totals, closed.contributors.len())
                .map_err(|e| e.to_string())?;
            let result = q
                .plan
                .result(&raw, shares, ALPHA)
                .map_err(|e| e.to_string())?;
            let average = result.average_estimate();
            out.push((
                id.to_owned(),
                Release {
                    query: q.spec.clone(),
                    labels: q.labels.clone(),
                    result,
                    average,
                    confidence: 1.0 - ALPHA,
                    contributors: closed.contributors.clone(),
                    noise_from: closed.noise_from.clone(),
                    decrypted_by: decrypted_by.clone(),
                    bundle: bundle.clone(),
                },
            ));
        }
        Ok(out)
    }
}

/// One member's protocol state for one query (caches of what it verified).
pub struct Member {
    name: String,
    v: Verifier,
    share: Arc<KeyShare>,
    noise: NoiseMode,
    timeouts: Timeouts,
    aggregate: Option<Vec<PackedCiphertext>>,
    first_seen_ms: Option<u64>,
    closed_seen_ms: Option<u64>,
    designated: Option<bool>,
    primary: Option<bool>,
    partials_seen_ms: Option<u64>,
    combined_with: usize,
    named: BTreeSet<String>,
    posted: BTreeSet<&'static str>,
    /// When this member last posted its vote to fail the instance ([`Self::vote_due`]).
    failed_at_ms: Option<u64>,
}

/// How long a member waits for its vote to fail a query to appear on the ledger before it
/// posts it again.
pub const REVOTE_MS: u64 = 15_000;

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("share", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Member {
    /// A member's driver for one query.
    pub fn new(
        name: &str,
        committee: CommitteeView,
        share: Arc<KeyShare>,
        noise: NoiseMode,
        timeouts: Timeouts,
    ) -> Self {
        Member {
            name: name.to_owned(),
            v: Verifier::new(committee),
            share,
            noise,
            timeouts,
            aggregate: None,
            first_seen_ms: None,
            closed_seen_ms: None,
            designated: None,
            primary: None,
            partials_seen_ms: None,
            combined_with: 0,
            named: BTreeSet::new(),
            posted: BTreeSet::new(),
            failed_at_ms: None,
        }
    }

    /// Whether this member should post (again) its vote to fail the instance's unfinished
    /// queries: never posted, or posted [`REVOTE_MS`] ago and still not on the ledger for one
    /// of them (a proposal lost to a leader change or a timeout; the ledger refuses a repeat
    /// that did land, so re-posting costs nothing).
    fn vote_due(&self, view: &QueryView, now_ms: u64) -> bool {
        let missing = view.unfinished().any(|s| {
            !view
                .failures
                .approvals(&s.id)
                .is_some_and(|by| by.contains(&self.name))
        });
        missing
            && self
                .failed_at_ms
                .is_none_or(|at| now_ms.saturating_sub(at) >= REVOTE_MS)
    }

    /// Whether this member is one of the `t` designated to decrypt query `id` (fixed for the
    /// query, so computed once).
    fn is_designated(&mut self, id: &str) -> bool {
        let (committee, name) = (&self.v.committee, &self.name);
        *self
            .designated
            .get_or_insert_with(|| committee.designated(id).contains(name))
    }

    /// Whether this member is the first designated member of query `id`, which combines.
    fn is_primary(&mut self, id: &str) -> bool {
        let (committee, name) = (&self.v.committee, &self.name);
        *self
            .primary
            .get_or_insert_with(|| committee.designated(id).first() == Some(name))
    }

    /// The entries this member should post now about the query in `view`.
    pub fn step<R: RngCore + CryptoRng>(
        &mut self,
        view: &QueryView,
        data: &Columns,
        now_ms: u64,
        rng: &mut R,
    ) -> Vec<Kind> {
        if view.outcome.is_some() || view.id.is_empty() {
            return Vec::new();
        }
        let first_seen = *self.first_seen_ms.get_or_insert(now_ms);
        let elapsed = now_ms.saturating_sub(first_seen);
        // A failure of every query of the instance not ended yet: with a ground every member
        // checks (the ledger's rule 9), or as this member's approval.
        let fail_with = |reason: String, ground: pb::FailureGround| -> Vec<Kind> {
            view.unfinished()
                .map(|s| {
                    Kind::QueryFailed(pb::QueryFailed {
                        query_id: s.id.clone(),
                        reason: reason.clone(),
                        ground: ground as i32,
                    })
                })
                .collect()
        };
        let fail = |reason: String| fail_with(reason, pb::FailureGround::Unspecified);
        let compiled = match self.v.compile(view) {
            Ok(c) => c,
            Err(e) => {
                let mut v = Vec::new();
                // A member that signed a query charged less than its plan costs tried to
                // spend budget that was never charged: name it.
                // (Only a query alone: the router bundles none that is not charged right.)
                if let [q] = view.queries.as_slice() {
                    if e.starts_with(UNDERCHARGED)
                        && self.v.committee.party(&q.submitted_by).is_some()
                        && self.posted.insert("named")
                    {
                        v.push(misbehaviour(&view.id, &q.submitted_by, &e));
                    }
                }
                // Every member compiles the same plan the same way: one member's entry ends
                // the query, and every member's rules recheck it.
                if self.vote_due(view, now_ms) {
                    self.failed_at_ms = Some(now_ms);
                    v.extend(fail_with(e, pb::FailureGround::QueryInvalid));
                }
                return v;
            }
        };
        if elapsed > self.timeouts.decryption_ms {
            return if self.vote_due(view, now_ms) {
                self.failed_at_ms = Some(now_ms);
                fail(format!(
                    "not released within {} s: fewer than t = {} members could decrypt",
                    self.timeouts.decryption_ms / 1000,
                    self.v.committee.threshold
                ))
            } else {
                Vec::new()
            };
        }
        let mut out = Vec::new();
        let Some(closed) = &view.closed else {
            // Contribute and add noise, then close when ready.
            if !view.contributions.contains_key(&self.name) && !self.posted.contains("contribution")
            {
                match self.contribute(view, &compiled, data, rng) {
                    Ok((k, own)) => {
                        self.posted.insert("contribution");
                        self.v.own_posts.insert(false, (self.name.clone(), own));
                        out.push(k);
                    }
                    Err(e) => tracing::warn!(query = %view.id, "cannot contribute: {e}"),
                }
            }
            if !view.noise.contains_key(&self.name) && !self.posted.contains("noise") {
                match self.add_noise(view, &compiled, rng) {
                    Ok((k, own)) => {
                        self.posted.insert("noise");
                        self.v.own_posts.insert(true, (self.name.clone(), own));
                        out.push(k);
                    }
                    Err(NoiseFailure::NotDrawn(e)) => {
                        tracing::warn!(query = %view.id, "cannot add noise yet: {e}")
                    }
                    Err(NoiseFailure::Void(e)) => {
                        // Never again for this query, and no vote to fail it either: the query
                        // may still close on the other members' shares (a close needs
                        // k = n − f); if it cannot, it fails at the decryption timeout, when t
                        // members vote (charged: the budget was spent at admission). A vote
                        // here would only help colluders fail one query of a bundle, which
                        // strands the bundle's others.
                        self.posted.insert("noise");
                        tracing::warn!(query = %view.id, "noise share void, none posted: {e}");
                        return out;
                    }
                }
            }
            // The designated members verify and close; the others only if no close came
            // within the fallback time after the contribution timeout.
            let may_close = self.is_designated(&view.id)
                || elapsed
                    > self
                        .timeouts
                        .contribution_ms
                        .saturating_add(self.timeouts.partial_fallback_ms);
            if out.is_empty() && may_close {
                out.extend(self.maybe_close(view, &compiled, elapsed));
            }
            return out;
        };
        // Only t designated members verify, decrypt and combine (each query spreads the work
        // over the committee); the others join if the designated ones have not released within
        // the fallback time, or as soon as someone is accused in this query.
        let t = usize::from(self.v.committee.threshold);
        let closed_at = *self.closed_seen_ms.get_or_insert(now_ms);
        let active = self.is_designated(&view.id)
            || !view.accused.is_empty()
            || now_ms.saturating_sub(closed_at) > self.timeouts.partial_fallback_ms;
        if !active {
            return Vec::new();
        }
        // Closed: recompute, then decrypt; then combine.
        if self.aggregate.is_none() {
            match self.v.recompute(view, &compiled, closed) {
                Ok(agg) => self.aggregate = Some(agg),
                Err((culprit, why)) => {
                    if self.posted.insert("refused") {
                        let mut v = Vec::new();
                        if let Some(c) = culprit {
                            v.push(misbehaviour(&view.id, &c, &why));
                        }
                        self.failed_at_ms = Some(now_ms);
                        v.extend(fail(format!("the closed aggregate is invalid: {why}")));
                        return v;
                    }
                    return Vec::new();
                }
            }
        }
        let Some(aggregate) = self.aggregate.clone() else {
            return Vec::new();
        };
        if !view.partials.contains_key(&self.name) && !self.posted.contains("partial") {
            let mut partials = Vec::with_capacity(aggregate.len());
            let mut own = Vec::with_capacity(aggregate.len());
            for (k, agg) in aggregate.iter().enumerate() {
                match self.share.partial_decrypt_own(
                    &self.v.committee.key,
                    &decryption_context(&view.tag(), k),
                    agg.ciphertext(),
                    rng,
                ) {
                    Ok((p, v)) => {
                        partials.push(p.to_bytes());
                        own.push(v);
                    }
                    Err(e) => {
                        tracing::error!(query = %view.id, "partial decryption failed: {e}");
                        return Vec::new();
                    }
                }
            }
            self.v.own_partial = Some((self.name.clone(), partials.clone(), own));
            self.posted.insert("partial");
            return vec![Kind::PartialDecryption(pb::PartialDecryption {
                query_id: view.id.clone(),
                partials,
            })];
        }
        // The first designated member combines at once; the other designated ones (which
        // decrypted too) only if no release came within a quarter of the fallback time after
        // t partials were posted, or once someone is accused.
        let combine_now = view.partials.len() >= t && {
            let seen = *self.partials_seen_ms.get_or_insert(now_ms);
            self.is_primary(&view.id)
                || !view.accused.is_empty()
                || now_ms.saturating_sub(seen) > self.timeouts.partial_fallback_ms / 4
        };
        if combine_now
            && !self.posted.contains("release")
            && view.partials.len() != self.combined_with
        {
            self.combined_with = view.partials.len();
            let (release, cheats) = self.v.combine(view, &compiled, closed, &aggregate);
            for (culprit, why) in cheats {
                if !view.accused.contains(&culprit) && self.named.insert(culprit.clone()) {
                    out.push(misbehaviour(&view.id, &culprit, &why));
                }
            }
            match release {
                Ok(releases) => {
                    self.posted.insert("release");
                    // The instance's own query last: the ledger takes no more entries about
                    // the instance once it has ended.
                    let (first, rest): (Vec<_>, Vec<_>) =
                        releases.into_iter().partition(|(id, _)| *id == view.id);
                    for (id, release) in rest.into_iter().chain(first) {
                        if view.outcomes.contains_key(&id) {
                            continue;
                        }
                        // Serialising plain data cannot fail.
                        let result = serde_json::to_vec(&release).unwrap_or_default();
                        out.push(Kind::ReleaseResult(pb::ReleaseResult {
                            query_id: id,
                            result,
                        }));
                    }
                }
                Err(e) => tracing::debug!(query = %view.id, "not yet combinable: {e}"),
            }
        }
        out
    }

    fn contribute<R: RngCore + CryptoRng>(
        &self,
        view: &QueryView,
        c: &Batch,
        data: &Columns,
        rng: &mut R,
    ) -> Result<(Kind, OwnPost), String> {
        let slots = c.contribution_slots(data)?;
        let pk = self.v.committee.key.public_key();
        let ctx = contribution_context(&view.tag(), &self.name);
        let mut cts = Vec::new();
        let mut proofs = Vec::new();
        let mut packed = Vec::new();
        for (layout, values, offsets) in self.v.placed_layouts(c)? {
            let values = slots
                .get(values)
                .ok_or("internal: fewer committed values than placed")?;
            let (ct, proof) = pk
                .encrypt_in_range_at(layout, &offsets, values, SLOT_BOUND, &ctx, rng)
                .map_err(|e| e.to_string())?;
            cts.push(ct.ciphertext().to_bytes());
            proofs.push(proof.to_bytes());
            packed.push(ct);
        }
        let range_proof = join(&proofs);
        let own = (cts.clone(), range_proof.clone(), packed);
        let k = Kind::Contribution(pb::Contribution {
            query_id: view.id.clone(),
            ciphertexts: cts,
            range_proof,
        });
        Ok((k, own))
    }

    /// Draws this member's noise shares for every slot of `c` and encrypts them with their
    /// proof. A drawn share is never drawn again: a share outside the instance's proof bound,
    /// or a draw that used up its work budget, voids this member's noise step
    /// ([`NoiseFailure::Void`]) and the caller fails the query.
    fn add_noise<R: RngCore + CryptoRng>(
        &self,
        view: &QueryView,
        c: &Batch,
        rng: &mut R,
    ) -> Result<(Kind, OwnPost), NoiseFailure> {
        let me =
            self.v.committee.party(&self.name).ok_or_else(|| {
                NoiseFailure::NotDrawn("this node is not a committee member".into())
            })?;
        let bound = c.noise_bound().map_err(NoiseFailure::Void)?;
        let mut noise_rng =
            medtech_noise::noise_rng().map_err(|e| NoiseFailure::NotDrawn(e.to_string()))?;
        let mut shares = Vec::with_capacity(c.slots());
        for (id, q) in &c.parts {
            for slot in q.noise_slots() {
                let s = match (slot, self.noise) {
                    (Some((out, _)), NoiseMode::Calibrated) => q.plan.outputs[out]
                        .share
                        .sample_share(&mut noise_rng)
                        .map_err(|e| NoiseFailure::Void(format!("query {id}: {e}")))?,
                    #[cfg(feature = "insecure-test-noise")]
                    (Some(_), NoiseMode::FixedForTests(v)) => {
                        FIXED_NOISE_DRAWS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        v
                    }
                    _ => 0,
                };
                // The value is secret: the message names the bound, never the share.
                let b = i128::from(bound);
                if s < -b || s >= b {
                    return Err(NoiseFailure::Void(format!(
                        "query {id}: a noise share fell outside its proof bound [-{bound}, {bound}); \
                         it is not re-drawn (that would truncate the noise)"
                    )));
                }
                shares.push(s);
            }
        }
        // From here on the shares exist: any failure voids them.
        let void = |e: String| NoiseFailure::Void(e);
        let pk = self.v.committee.key.public_key();
        let mut cts = Vec::new();
        let mut proofs = Vec::new();
        let mut packed = Vec::new();
        let mut offset = 0;
        for layout in self.v.layouts(c).map_err(void)? {
            let n = layout.slots() as usize;
            let slot_shares = shares
                .get(offset..offset + n)
                .ok_or_else(|| void("internal: fewer noise shares than slots".into()))?;
            let (ct, proof) = encrypt_shares(pk, layout, slot_shares, bound, &view.tag(), me, rng)
                .map_err(|e| void(e.to_string()))?;
            cts.push(ct.to_bytes());
            proofs.push(proof.to_bytes());
            packed.push(unshift_shares(pk, layout, bound, &ct).map_err(|e| void(e.to_string()))?);
            offset += n;
        }
        let range_proof = join(&proofs);
        let own = (cts.clone(), range_proof.clone(), packed);
        let k = Kind::NoiseCommitment(pb::NoiseCommitment {
            query_id: view.id.clone(),
            ciphertexts: cts,
            range_proof,
        });
        Ok((k, own))
    }

    fn maybe_close(&mut self, view: &QueryView, c: &Batch, elapsed: u64) -> Vec<Kind> {
        if self.posted.contains("close") {
            return Vec::new();
        }
        let members: Vec<String> = self.v.committee.members.clone();
        // Verify what has been posted so far (cached), while the slower members still prove:
        // by the time the last share arrives only it is left to check.
        let posted: Vec<(bool, String)> = members
            .iter()
            .filter(|m| view.contributions.contains_key(*m))
            .map(|m| (false, m.clone()))
            .chain(
                members
                    .iter()
                    .filter(|m| view.noise.contains_key(*m))
                    .map(|m| (true, m.clone())),
            )
            .collect();
        self.v.prefetch(view, c, posted);
        let n = members.len();
        let timed_out = elapsed > self.timeouts.contribution_ms;
        if !(timed_out || view.contributions.len() == n && view.noise.len() == n) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut valid = |noise: bool, out: &mut Vec<Kind>| -> Vec<String> {
            let posted = |m: &String| {
                if noise {
                    view.noise.contains_key(m)
                } else {
                    view.contributions.contains_key(m)
                }
            };
            let mut ok = Vec::new();
            for m in members.iter().filter(|m| posted(m)) {
                match self.v.verify(view, c, noise, m) {
                    Ok(_) => ok.push(m.clone()),
                    Err(e) if !view.accused.contains(m) => {
                        let what = if noise { "noise share" } else { "contribution" };
                        out.push(misbehaviour(&view.id, m, &format!("invalid {what}: {e}")));
                    }
                    Err(_) => {}
                }
            }
            ok
        };
        let contributors = valid(false, &mut out);
        let noise_from = valid(true, &mut out);
        if contributors.is_empty() || noise_from.len() < self.v.committee.noise_needed() {
            // Name the culprits once; wait for more shares.
            if !out.is_empty() && self.posted.insert("accused") {
                return out;
            }
            return Vec::new();
        }
        self.posted.insert("close");
        out.push(Kind::CloseAggregate(pb::CloseAggregate {
            query_id: view.id.clone(),
            contributors,
            noise_from,
        }));
        out
    }
}

/// Decodes and verifies member `party`'s partial decryptions of every aggregate ciphertext.
fn verify_partials(
    key: &ThresholdPublicKey,
    query: &[u8],
    party: PartyIndex,
    aggregate: &[PackedCiphertext],
    p: &pb::PartialDecryption,
) -> Result<Vec<VerifiedPartial>, String> {
    if p.partials.len() != aggregate.len() {
        return Err(format!(
            "{} partials for {} ciphertexts",
            p.partials.len(),
            aggregate.len()
        ));
    }
    let mut out = Vec::with_capacity(aggregate.len());
    for (k, (bytes, agg)) in p.partials.iter().zip(aggregate).enumerate() {
        let d = PartialDecryption::from_bytes(key, bytes)
            .map_err(|e| format!("malformed partial decryption: {e}"))?;
        if d.party() != party {
            return Err("partial decryption under another member's index".into());
        }
        out.push(
            key.verify_partial(&decryption_context(query, k), agg.ciphertext(), &d)
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(out)
}

/// `items.map(f)` on up to as many threads as there are cores (proof verification is
/// CPU-bound and independent per item); order is kept.
fn par_map<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut it = items.into_iter();
    loop {
        let chunk: Vec<T> = it.by_ref().take(per).collect();
        if chunk.is_empty() {
            break;
        }
        chunks.push(chunk);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            // A panic in `f` is a bug; re-raise it on the caller's thread.
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Whether two releases agree: every string, integer and boolean exactly, floating-point values
/// to a relative `1e-9` (the intervals and the average are post-processing computed with the
/// platform's `ln`/`exp`; the verdict must not depend on the platform).
pub(crate) fn same_release(ours: &Release, released: &Release) -> Result<(), String> {
    let (a, b) = match (serde_json::to_value(ours), serde_json::to_value(released)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err("release encoding".into()),
    };
    if json_close(&a, &b) {
        return Ok(());
    }
    Err(format!(
        "the release is not the combination of the partial decryptions it names: released {}, recomputed {}",
        b, a
    ))
}

fn json_close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as V;
    match (a, b) {
        (V::Number(x), V::Number(y)) => {
            if x.is_f64() || y.is_f64() {
                match (x.as_f64(), y.as_f64()) {
                    (Some(x), Some(y)) => {
                        x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-300)
                    }
                    _ => false,
                }
            } else {
                x == y
            }
        }
        (V::Array(x), V::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
        }
        (V::Object(x), V::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

fn misbehaviour(query: &str, culprit: &str, reason: &str) -> Kind {
    Kind::Misbehaviour(pb::Misbehaviour {
        culprit: culprit.to_owned(),
        query_id: query.to_owned(),
        reason: reason.to_owned(),
        evidence: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use medtech_threshold::dealer;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    use super::*;
    use crate::data::generate;
    use crate::query::Platform;

    /// Member `hospital-a` of a 3-member committee (t = 2, the same 512-bit dealer key every
    /// time) after its first step on Count `id` (randomness from `seed`): its driver, the view,
    /// and the two entries it posted.
    fn first_step(id: &str, seed: u64) -> (Member, QueryView, Kind, Kind) {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let names: Vec<String> = ["hospital-a", "hospital-b", "hospital-c"]
            .map(String::from)
            .to_vec();
        let (key, mut shares) = dealer::generate(512, 3, 2, &mut rng).unwrap();
        let committee = CommitteeView {
            members: names.clone(),
            threshold: 2,
            key: Arc::new(key),
            platform: Arc::new(Platform::new(&names)),
            close_tolerance: None,
        };
        let spec: QuerySpec = serde_json::from_value(serde_json::json!({
            "kind": "count", "epsilon": 1.0
        }))
        .unwrap();
        let compiled = Compiled::new(spec, &committee.platform, 3, 2).unwrap();
        let Kind::SubmitQuery(q) = submit_entry(id, &compiled, "alice") else {
            panic!("a submission");
        };
        let view = QueryView::started(vec![("hospital-a".into(), q)]);
        let data = Columns::from_devices(&generate::devices("hospital-a", 0, 50, 1));
        let mut member = Member::new(
            "hospital-a",
            committee,
            Arc::new(shares.remove(0)),
            NoiseMode::Calibrated,
            Timeouts::default(),
        );
        let out = member.step(&view, &data, 0, &mut ChaCha20Rng::seed_from_u64(seed));
        let [c @ Kind::Contribution(_), n @ Kind::NoiseCommitment(_)] = out.as_slice() else {
            panic!("a contribution and a noise share, got {out:?}");
        };
        (member, view, c.clone(), n.clone())
    }

    /// A member accepts its own contribution and noise share without a proof check only when
    /// the ledger holds exactly the bytes it posted, and what it accepts is what the full
    /// check returns.
    #[test]
    fn own_posts_are_accepted_only_as_posted_and_equal_the_checked_result() {
        let (mut member, mut view, contribution, noise) = first_step("q1", 1);
        view.apply("hospital-a", &contribution);
        view.apply("hospital-a", &noise);
        let batch = member.v.compile(&view).unwrap();
        for is_noise in [false, true] {
            let own = member.v.own_post(&view, is_noise, "hospital-a");
            let checked = member.v.check_posted(&view, &batch, is_noise, "hospital-a");
            assert!(own.is_some(), "the posted bytes are the member's own");
            assert_eq!(own.unwrap(), checked.unwrap());
            // Under another member's name the same bytes are not "own".
            assert!(member.v.own_post(&view, is_noise, "hospital-b").is_none());
        }
    }

    /// Replacing a member's posted contribution on the ledger (here: its proof swapped for
    /// another query's) makes the member check it like anyone else's, and refuse it.
    #[test]
    fn a_contribution_swapped_under_a_members_name_is_checked_and_refused_by_that_member() {
        let (mut member, mut view, contribution, _) = first_step("q1", 1);
        // The same member's contribution to another query: valid there, but bound to "q2".
        let (_, _, other, _) = first_step("q2", 2);
        let (Kind::Contribution(mut mine), Kind::Contribution(theirs)) = (contribution, other)
        else {
            panic!("contributions");
        };
        mine.range_proof = theirs.range_proof;
        view.apply("hospital-a", &Kind::Contribution(mine));
        let batch = member.v.compile(&view).unwrap();
        assert!(member.v.own_post(&view, false, "hospital-a").is_none());
        assert!(member.v.verify(&view, &batch, false, "hospital-a").is_err());
    }
}
