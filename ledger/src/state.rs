//! The ledger's state machine logic: which entries may be applied, and what applying one
//! changes. Pure and deterministic — no clock, no randomness, no I/O — so every member, and an
//! auditor replaying an export, reaches the same verdict on the same entry.
//!
//! An entry is applied when all of these hold, and rejected otherwise (the log goes on; the
//! rejection is returned to the proposer and counted):
//!
//! 1. it decodes, its version is [`ENTRY_VERSION`](crate::entry::ENTRY_VERSION), and it names
//!    this ledger's origin;
//! 2. its author is a member of the current committee, or a registered, enabled researcher;
//! 3. its signature verifies under that author's key;
//! 4. its `author_seq` is exactly one more than the author's last applied entry (no replay, no
//!    reordering, no gap);
//! 5. the author may write that kind (researchers only submit queries), and the entry is
//!    consistent with the state: the query it refers to exists and is still open, a member posts
//!    at most one contribution / noise share / partial decryption per query, a query's aggregate
//!    is closed once (naming posted contributions and at least `k = n − f` posted noise shares)
//!    and after that takes no more contributions or noise but partial decryptions, ids are unique, a
//!    cosignature signs the log's actual root at a size the log has reached, a committee change is
//!    the next epoch and approved by `t` current members; a query submitted under an
//!    idempotency key (`SubmitQuery.idempotency_key`: printable ASCII, 1 to
//!    [`MAX_IDEMPOTENCY_KEY_LEN`] bytes) is the only one admitted under that key for its
//!    researcher — a second `SubmitQuery` naming the same (researcher, key) is rejected before
//!    its budget is looked at, so a retried submission is charged once
//!    ([`LedgerState::idempotent_submission`], test
//!    `a_second_submission_under_a_researchers_idempotency_key_is_rejected`);
//! 6. what loosens a privacy limit waits for `t` distinct current members: registering a
//!    researcher, re-enabling a disabled one, raising any component of a budget limit (or a
//!    researcher's or dataset's first limit). The first member's entry is recorded as a
//!    [`PendingChange`]; each other member approves by posting the identical change; the
//!    `t`-th approval applies it ([`LedgerState::pending_changes`],
//!    test `single_member_budget_raise_is_pending_until_t_approve`). Lowering a limit and
//!    disabling a researcher take one member and apply at once;
//! 7. a query's declared privacy cost fits the researcher's, the dataset's and the global budget
//!    ([`crate::budget`]); admitting the query spends it, in the same step;
//! 8. the application rules accept it ([`crate::rules::AppRules::check`], injected by the node
//!    that runs the state machine). The committee node's rules
//!    (`medtech_federation::rules::ReleaseRules`) accept a `ReleaseResult` only if it is the
//!    combination of the `t` partial decryptions it names, each of whose proofs verifies
//!    against the aggregate recomputed from the ciphertexts the close lists, decoded as the
//!    query's plan says (test `forged_release_is_refused_by_every_node`). Without application
//!    rules ([`crate::rules::RefuseReleases`]) every release is refused;
//! 9. a `QueryFailed` ends a query at once only for a ground every member checks itself: the
//!    ground `QUERY_INVALID` (the query cannot run on this committee), which the application
//!    rules confirm ([`crate::rules::AppRules::check_failure_ground`]) or the entry is
//!    rejected (test `a_failure_ground_is_accepted_only_when_every_member_confirms_it`). Any
//!    other `QueryFailed`, before noise as after, is one member's approval
//!    ([`QueryRecord::failure`]): the `t`-th distinct current member's ends the query with the
//!    first reason (tests `query_failed_after_noise_without_reason_is_refused`,
//!    `one_member_cannot_fail_a_query_before_noise_without_a_checkable_ground`). A valid
//!    release still ends a query whose failure is only partly approved
//!    (`a_release_still_ends_a_query_whose_failure_is_pending`).
//!
//! Cryptographic validity of contributions and noise shares (range proofs) is checked by each
//! committee node before it decrypts; a release is checked by rule 8; the ledger records what
//! was posted and by whom, so a bad proof is attributable.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use medtech_protos::ledger::v1 as pb;
use medtech_protos::Message as _;

use crate::book::{Book, Spill};
use crate::budget::{limit_event, Accountant, ChargeRecord, Event, QueryCharge};
use crate::checkpoint::{Checkpoint, NodeIdentity, NoteSignature, SignedCheckpoint};
use crate::entry::{config_message, AuthorId, Kind, ParsedEntry};
use crate::merkle::{Hash, MerkleLog};
use crate::rules::{AppRules, RefuseReleases};

/// Longest id (researcher, query, member name) accepted.
pub const MAX_ID_LEN: usize = 128;

/// Longest idempotency key accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Domain separator of a submission's request digest ([`request_digest`]).
pub const IDEMPOTENCY_DOMAIN: &[u8] = b"medtech-ledger/idempotency/v1\0";

/// How the rejection of a `SubmitQuery` whose (researcher, idempotency key) was already used
/// begins (the API recognises it and answers with the first submission).
pub const DUPLICATE_IDEMPOTENCY_KEY: &str = "duplicate idempotency key";

/// Checks an idempotency key's shape: 1 to [`MAX_IDEMPOTENCY_KEY_LEN`] bytes of printable
/// ASCII (space to `~`).
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN {
        return Err(format!(
            "an idempotency key is 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes, not {}",
            key.len()
        ));
    }
    if !key.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("an idempotency key is printable ASCII (space to '~')".into());
    }
    Ok(())
}

/// The digest that tells whether two submissions under one idempotency key are the same
/// request: SHA-256 over [`IDEMPOTENCY_DOMAIN`] and the query as the entry carries it
/// (`SubmitQuery.query`, the application's canonical encoding). The query id, the author and
/// the timestamp are not part of it: a retry has its own.
pub fn request_digest(query: &[u8]) -> Hash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(IDEMPOTENCY_DOMAIN);
    h.update(query);
    h.finalize().into()
}

/// What the ledger keeps of a query submitted under an idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdempotencyRecord {
    /// The query admitted under the key.
    pub query_id: String,
    /// Its [`request_digest`].
    pub digest: Hash,
}

/// The book key of (researcher, idempotency key): researcher ids hold no whitespace
/// ([`check_id`]) and keys no newline ([`check_idempotency_key`]), so it is unambiguous.
fn idempotency_slot(researcher: &str, key: &str) -> String {
    format!("{researcher}\n{key}")
}

/// A committee: members with their signing keys, the threshold, and its epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitteeConfig {
    /// Members in order.
    pub members: Vec<NodeIdentity>,
    /// Members' replication endpoints, by member name (members without one take no part in
    /// Raft; when a change is applied, the leader makes the Raft voters match these).
    pub endpoints: BTreeMap<String, MemberEndpoint>,
    /// How many cosignatures make a checkpoint, and approvals a change.
    pub threshold: usize,
    /// 0 for the genesis committee, then one more per change.
    pub epoch: u64,
    /// f: members whose noise shares a close may omit (`None`: the default,
    /// [`medtech_noise::Committee::with_close_tolerance`]).
    pub close_tolerance: Option<u16>,
}

/// Where a member's node takes part in replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberEndpoint {
    /// Its Raft node id.
    pub raft_id: u64,
    /// `host:port` of its committee gRPC endpoint.
    pub addr: String,
    /// SHA-256 of its TLS certificate (DER), lowercase hex.
    pub cert_sha256: String,
}

impl CommitteeConfig {
    /// A committee without replication endpoints.
    pub fn new(members: Vec<NodeIdentity>, threshold: usize, epoch: u64) -> Self {
        CommitteeConfig {
            members,
            endpoints: BTreeMap::new(),
            threshold,
            epoch,
            close_tolerance: None,
        }
    }

    /// The noise calibration's view of this committee: `k`, the fewest noise shares a close
    /// lists, and `m`, the honest shares each is calibrated for.
    pub fn noise_committee(&self) -> Result<medtech_noise::Committee, String> {
        let n = u16::try_from(self.members.len()).map_err(|_| "too many members".to_string())?;
        let t = u16::try_from(self.threshold).map_err(|_| "threshold too large".to_string())?;
        medtech_noise::Committee::with_close_tolerance(n, t, self.close_tolerance)
            .map_err(|e| e.to_string())
    }

    /// The Raft voters these endpoints describe: id → (name, address, certificate digest).
    pub fn voters(&self) -> BTreeMap<u64, (&str, &MemberEndpoint)> {
        self.endpoints
            .iter()
            .map(|(name, e)| (e.raft_id, (name.as_str(), e)))
            .collect()
    }

    /// Checks the shape: 1 ≤ t ≤ n, distinct valid names.
    pub fn validate(&self) -> Result<(), String> {
        if self.members.is_empty() {
            return Err("a committee needs at least one member".into());
        }
        if self.threshold == 0 || self.threshold > self.members.len() {
            return Err(format!(
                "threshold {} is not between 1 and {} members",
                self.threshold,
                self.members.len()
            ));
        }
        let mut names = BTreeSet::new();
        for m in &self.members {
            check_id("member name", &m.name)?;
            if !names.insert(&m.name) {
                return Err(format!("member {} appears twice", m.name));
            }
        }
        let mut ids = BTreeSet::new();
        for (name, e) in &self.endpoints {
            if !names.contains(name) {
                return Err(format!("endpoint for {name}, who is not a member"));
            }
            if e.raft_id == 0 || !ids.insert(e.raft_id) {
                return Err(format!(
                    "member {name}: Raft id {} is 0 or taken",
                    e.raft_id
                ));
            }
            if e.addr.is_empty() || e.addr.len() > 255 || e.addr.contains(char::is_whitespace) {
                return Err(format!("member {name}: bad address {:?}", e.addr));
            }
            if e.cert_sha256.len() != 64
                || !e
                    .cert_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "member {name}: certificate digest must be 64 lowercase hex digits"
                ));
            }
        }
        self.noise_committee()?;
        Ok(())
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&NodeIdentity> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The protobuf form.
    pub fn to_pb(&self) -> pb::Committee {
        pb::Committee {
            members: self
                .members
                .iter()
                .map(|m| pb::Member {
                    name: m.name.clone(),
                    signing_key: m.key.as_bytes().to_vec(),
                    endpoint: self.endpoints.get(&m.name).map(|e| pb::MemberEndpoint {
                        raft_id: e.raft_id,
                        address: e.addr.clone(),
                        tls_cert_sha256: e.cert_sha256.clone(),
                    }),
                })
                .collect(),
            threshold: u32::try_from(self.threshold).unwrap_or(u32::MAX),
            epoch: self.epoch,
            close_tolerance: self.close_tolerance.map(u32::from),
        }
    }

    /// From the protobuf form, validated.
    pub fn from_pb(c: &pb::Committee) -> Result<Self, String> {
        let mut members = Vec::with_capacity(c.members.len());
        let mut endpoints = BTreeMap::new();
        for m in &c.members {
            members.push(NodeIdentity {
                name: m.name.clone(),
                key: parse_key(&m.signing_key).map_err(|e| format!("member {}: {e}", m.name))?,
            });
            if let Some(e) = &m.endpoint {
                endpoints.insert(
                    m.name.clone(),
                    MemberEndpoint {
                        raft_id: e.raft_id,
                        addr: e.address.clone(),
                        cert_sha256: e.tls_cert_sha256.clone(),
                    },
                );
            }
        }
        let cfg = CommitteeConfig {
            members,
            endpoints,
            threshold: c.threshold as usize,
            epoch: c.epoch,
            close_tolerance: c
                .close_tolerance
                .map(|f| u16::try_from(f).map_err(|_| format!("close tolerance {f} too large")))
                .transpose()?,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

fn parse_key(bytes: &[u8]) -> Result<VerifyingKey, String> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes".to_string())?;
    VerifyingKey::from_bytes(&arr).map_err(|_| "not a valid Ed25519 public key".to_string())
}

fn check_id(what: &str, id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!("{what} must be 1 to {MAX_ID_LEN} bytes"));
    }
    if id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} {id:?} contains whitespace or control characters"
        ));
    }
    Ok(())
}

/// A registered researcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Researcher {
    /// Id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// The key that signs their queries.
    pub key: VerifyingKey,
    /// Disabled researchers cannot submit.
    pub enabled: bool,
}

/// How a query ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum QueryOutcome {
    /// Result released at this sequence number.
    Released(u64),
    /// Failed, with the reason.
    Failed(String),
}

/// What the ledger holds about one query.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueryRecord {
    /// Sequence number of the submission.
    pub submitted_at: u64,
    /// The researcher it was submitted by or for.
    pub researcher: String,
    /// Members that posted a contribution.
    pub contributions: BTreeSet<String>,
    /// Members that posted a noise share.
    pub noise_shares: BTreeSet<String>,
    /// Members that posted partial decryptions.
    pub partials: BTreeSet<String>,
    /// Once closed: the contributors and noise-share authors whose ciphertexts make up the
    /// aggregate.
    pub closed: Option<(BTreeSet<String>, BTreeSet<String>)>,
    /// Set once released or failed.
    pub outcome: Option<QueryOutcome>,
    /// A failure waiting for `t` members (rule 9): the first reason given, and the members
    /// that posted a `QueryFailed` for this query.
    #[serde(default)]
    pub failure: Option<(String, BTreeSet<String>)>,
}

/// Why an entry was not applied, naming its author when the entry got as far as naming one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}rejected: {reason}", author.as_ref().map(|a| format!("{a}: ")).unwrap_or_default())]
pub struct Rejection {
    /// The claimed author, if the entry decoded.
    pub author: Option<AuthorId>,
    /// Why.
    pub reason: String,
}

/// Whether to verify signatures when checking (stored entries were verified when first applied;
/// replaying them on restart can trust the local disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Verify every signature.
    Signatures,
    /// Skip signature checks (replay of this node's own stored, already verified entries).
    TrustStored,
}

/// Cosignatures collected for one checkpoint size.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cosigned {
    root: Hash,
    lines: BTreeMap<String, NoteSignature>,
}

/// The derived state of the ledger.
///
/// Everything here is bounded by the number of members, researchers and checkpoints except the
/// per-query records (the query's progress, its budget charge, and the idempotency key it was
/// submitted under), which are kept in
/// [`Book`]s: all in memory for [`LedgerState::new`], at most [`HOT_RECORDS`](crate::book::HOT_RECORDS) each in memory for
/// [`LedgerState::with_spill`] (a node).
#[derive(Debug)]
pub struct LedgerState {
    origin: String,
    committee: CommitteeConfig,
    researchers: BTreeMap<String, Researcher>,
    seqs: BTreeMap<AuthorId, u64>,
    queries: Book<QueryRecord>,
    idempotency: Book<IdempotencyRecord>,
    cosigned: BTreeMap<u64, Cosigned>,
    budgets: Accountant<Book<ChargeRecord>>,
    pending: BTreeMap<Hash, PendingChange>,
    /// Each member's clock as its applied entries state it (the largest `timestamp_ms`), and
    /// the log position of its latest applied entry.
    clocks: BTreeMap<String, (u64, u64)>,
    rejected: u64,
    spill: Option<Spill>,
    rules: Rules,
}

/// The installed application rules (a trait object has no `Debug`).
struct Rules(Box<dyn AppRules>);

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppRules")
    }
}

/// Most pending changes one member may have approved at a time (a member cannot fill the
/// state with proposals nobody else approves).
pub const MAX_PENDING_PER_MEMBER: usize = 64;

/// How long a pending change waits for its `t`-th approval, in committee time
/// ([`LedgerState::committee_time_ms`]): 7 days. After that its approvals lapse, and an
/// approval of the same change starts it afresh (an approval given for last month's reasons
/// does not count towards today's change).
pub const PENDING_CHANGE_TTL_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Domain separator of a governed change's id.
pub const GOVERNANCE_DOMAIN: &[u8] = b"medtech-ledger/governance/v1\0";

/// A change to the privacy limits (a researcher registered, a budget limit raised, a disabled
/// researcher re-enabled) that waits for `t` distinct members. A member approves it by posting
/// the identical entry kind; the `t`-th approval applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingChange {
    /// The change, as every approver posted it.
    pub kind: Kind,
    /// Log position of the first approval.
    pub proposed_at: u64,
    /// Committee time when the change's wait started ([`LedgerState::committee_time_ms`]), 0
    /// until then; the change lapses [`PENDING_CHANGE_TTL_MS`] later. The wait starts once `t`
    /// current members (the proposer included) have posted entries at or after the proposal,
    /// so committee time is fresh: after an idle week the stale clocks do not count a proposal
    /// as a week old the moment they catch up.
    pub proposed_ms: u64,
    /// Members that posted it, in name order.
    pub approvals: BTreeSet<String>,
}

/// The id of a governed change: SHA-256 over the governance domain, the ledger's origin and the
/// change's protobuf encoding (the same change proposed by two members has one id).
pub fn change_id(origin: &str, kind: &Kind) -> Hash {
    use sha2::{Digest, Sha256};
    let body = pb::EntryBody {
        kind: Some(kind.clone()),
        ..pb::EntryBody::default()
    };
    let mut h = Sha256::new();
    h.update(GOVERNANCE_DOMAIN);
    h.update(origin.as_bytes());
    h.update([0u8]);
    h.update(body.encode_to_vec());
    h.finalize().into()
}

impl LedgerState {
    /// The state of an empty ledger with its genesis committee, held in memory.
    pub fn new(origin: &str, genesis: CommitteeConfig) -> Result<Self, String> {
        Self::with_books(
            origin,
            genesis,
            Book::memory(),
            Book::memory(),
            Book::memory(),
            None,
        )
    }

    /// The state of an empty ledger whose per-query records spill to `spill` (a scratch file,
    /// created empty for this state: see [`crate::book`]) beyond `hot` records per book in
    /// memory (a node uses [`HOT_RECORDS`](crate::book::HOT_RECORDS)).
    pub fn with_spill(
        origin: &str,
        genesis: CommitteeConfig,
        spill: Spill,
        hot: usize,
    ) -> Result<Self, String> {
        Self::with_books(
            origin,
            genesis,
            Book::spilled(spill.clone(), "queries", hot),
            Book::spilled(spill.clone(), "charges", hot),
            Book::spilled(spill.clone(), "idempotency", hot),
            Some(spill),
        )
    }

    fn with_books(
        origin: &str,
        genesis: CommitteeConfig,
        queries: Book<QueryRecord>,
        charges: Book<ChargeRecord>,
        idempotency: Book<IdempotencyRecord>,
        spill: Option<Spill>,
    ) -> Result<Self, String> {
        genesis.validate()?;
        Ok(LedgerState {
            origin: origin.to_owned(),
            committee: genesis,
            researchers: BTreeMap::new(),
            seqs: BTreeMap::new(),
            queries,
            idempotency,
            cosigned: BTreeMap::new(),
            budgets: Accountant::with_book(charges),
            pending: BTreeMap::new(),
            clocks: BTreeMap::new(),
            rejected: 0,
            spill,
            rules: Rules(Box::new(RefuseReleases)),
        })
    }

    /// Installs the application rules (rule 8, 9). Must be done on the empty state, before any
    /// entry is checked or applied: the rules observe every applied entry.
    pub fn set_rules(&mut self, rules: Box<dyn AppRules>) {
        self.rules = Rules(rules);
    }

    /// This state with `rules` installed ([`Self::set_rules`]).
    pub fn with_rules(mut self, rules: Box<dyn AppRules>) -> Self {
        self.set_rules(rules);
        self
    }

    /// A failure of the scratch file the per-query records spill to. Once set, what this state
    /// decided may rest on a lookup that failed: the node must stop without recording it (the
    /// state machine does), and rebuilds its state from the applied entries when it restarts.
    pub fn storage_fault(&self) -> Option<String> {
        self.spill.as_ref().and_then(Spill::fault)
    }

    /// The origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The current committee.
    pub fn committee(&self) -> &CommitteeConfig {
        &self.committee
    }

    /// A researcher.
    pub fn researcher(&self, id: &str) -> Option<&Researcher> {
        self.researchers.get(id)
    }

    /// All researchers.
    pub fn researchers(&self) -> impl Iterator<Item = &Researcher> {
        self.researchers.values()
    }

    /// The privacy budgets: limits set by `SetBudget` entries, spent by admitted queries.
    pub fn budgets(&self) -> &Accountant<Book<ChargeRecord>> {
        &self.budgets
    }

    /// Changes to the privacy limits waiting for `t` approvals, by id ([`change_id`]); lapsed
    /// ones are dropped as committee time passes them.
    pub fn pending_changes(&self) -> &BTreeMap<Hash, PendingChange> {
        &self.pending
    }

    /// The committee's time, in milliseconds since the Unix epoch: the `t`-th largest of the
    /// current members' clocks, each the largest `timestamp_ms` among that member's applied
    /// entries (0 for a member with none). Deterministic (a function of the log), and neither
    /// `t − 1` colluders nor a clock of theirs set far ahead can move it past every honest
    /// member's clock: of the `t` largest clocks, one is an honest member's, whose entries
    /// carry its real time. It advances only while `t` members post entries (cosignatures
    /// do, as the log grows).
    pub fn committee_time_ms(&self) -> u64 {
        let mut clocks: Vec<u64> = self
            .committee
            .members
            .iter()
            .map(|m| self.clocks.get(&m.name).map_or(0, |c| c.0))
            .collect();
        clocks.sort_unstable_by(|a, b| b.cmp(a));
        clocks
            .get(self.committee.threshold.saturating_sub(1))
            .copied()
            .unwrap_or(0)
    }

    /// Whether the pending change `p` has lapsed ([`PENDING_CHANGE_TTL_MS`]); one whose wait
    /// has not started ([`PendingChange::proposed_ms`] 0) has not.
    pub fn has_lapsed(&self, p: &PendingChange) -> bool {
        p.proposed_ms != 0
            && self.committee_time_ms() >= p.proposed_ms.saturating_add(PENDING_CHANGE_TTL_MS)
    }

    /// Whether `kind`, posted by one member now, changes privacy limits in the permissive
    /// direction and so waits for `t` members: registering a researcher, re-enabling a disabled
    /// researcher, raising any component of a budget limit (or setting a researcher's or
    /// dataset's first limit: without one their budget is zero). Lowering a limit, setting a
    /// first global limit (without one there is none) and disabling take one member.
    pub fn needs_approval(&self, kind: &Kind) -> bool {
        match kind {
            Kind::RegisterResearcher(_) => true,
            Kind::SetResearcherStatus(s) => {
                s.enabled
                    && self
                        .researchers
                        .get(&s.researcher_id)
                        .is_some_and(|r| !r.enabled)
            }
            Kind::SetBudget(b) => match limit_event(&b.subject, &b.limit) {
                Ok(Event::SetLimit { subject, limit }) => match self.budgets.limit(&subject) {
                    Some(old) => {
                        limit.epsilon > old.epsilon
                            || limit.rho > old.rho
                            || limit.delta > old.delta
                    }
                    // No researcher or dataset limit is a zero budget; no global limit is none.
                    None => {
                        subject != medtech_noise::Subject::Global
                            && (limit.epsilon.0 > 0 || limit.rho.0 > 0 || limit.delta > 0)
                    }
                },
                _ => true,
            },
            _ => false,
        }
    }

    /// Checks that member `node` may approve the governed change `kind` now.
    fn check_approval(&self, node: &str, kind: &Kind) -> Result<(), String> {
        if !self.needs_approval(kind) {
            return Ok(());
        }
        let id = change_id(&self.origin, kind);
        if let Some(p) = self.pending.get(&id).filter(|p| !self.has_lapsed(p)) {
            if p.approvals.contains(node) {
                return Err(format!(
                    "{node} already approved this change ({} of {} approvals)",
                    p.approvals.len(),
                    self.committee.threshold
                ));
            }
            return Ok(());
        }
        let mine = self
            .pending
            .values()
            .filter(|p| p.approvals.contains(node) && !self.has_lapsed(p))
            .count();
        if mine >= MAX_PENDING_PER_MEMBER {
            return Err(format!(
                "{node} already has {mine} pending changes awaiting approval"
            ));
        }
        Ok(())
    }

    /// Starts the wait of pending changes that `t` current members have posted after, and
    /// drops those that lapsed ([`PendingChange::proposed_ms`]).
    fn age_pending(&mut self) {
        let now = self.committee_time_ms();
        let t = self.committee.threshold;
        let last_seqs: Vec<u64> = self
            .committee
            .members
            .iter()
            .filter_map(|m| self.clocks.get(&m.name).map(|c| c.1))
            .collect();
        self.pending.retain(|_, p| {
            if p.proposed_ms == 0 && last_seqs.iter().filter(|s| **s >= p.proposed_at).count() >= t
            {
                p.proposed_ms = now;
            }
            p.proposed_ms == 0 || now < p.proposed_ms.saturating_add(PENDING_CHANGE_TTL_MS)
        });
    }

    /// Records `node`'s approval of `kind` (which [`Self::needs_approval`]); true when it is the
    /// `t`-th approval by a current member, and the change is to be applied now.
    fn approve(&mut self, node: &str, kind: &Kind, seq: u64) -> bool {
        let id = change_id(&self.origin, kind);
        // A lapsed change is already gone: `apply` ages the pending changes (`age_pending`)
        // before it records an approval, so this one starts it afresh.
        let p = self.pending.entry(id).or_insert_with(|| PendingChange {
            kind: kind.clone(),
            proposed_at: seq,
            proposed_ms: 0,
            approvals: BTreeSet::new(),
        });
        p.approvals.insert(node.to_owned());
        let current = p
            .approvals
            .iter()
            .filter(|m| self.committee.member(m).is_some())
            .count();
        if current >= self.committee.threshold {
            self.pending.remove(&id);
            return true;
        }
        false
    }

    /// A query's record.
    pub fn query(&self, id: &str) -> Option<QueryRecord> {
        self.queries.get(id)
    }

    /// The query `researcher` submitted under idempotency key `key`, with its request digest.
    pub fn idempotent_submission(&self, researcher: &str, key: &str) -> Option<IdempotencyRecord> {
        self.idempotency.get(&idempotency_slot(researcher, key))
    }

    /// The sequence number `author`'s next entry must carry.
    pub fn next_seq(&self, author: &AuthorId) -> u64 {
        self.seqs.get(author).copied().unwrap_or(0) + 1
    }

    /// Entries rejected so far (they took a Raft slot but not a place in the Merkle log).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Counts a rejection.
    pub fn note_rejection(&mut self) {
        self.rejected += 1;
    }

    /// The checkpoint at `size` with the cosignatures collected for it.
    pub fn checkpoint(&self, size: u64) -> Option<SignedCheckpoint> {
        let c = self.cosigned.get(&size)?;
        Some(SignedCheckpoint {
            checkpoint: Checkpoint {
                origin: self.origin.clone(),
                size,
                root: c.root,
            },
            signatures: c.lines.values().cloned().collect(),
        })
    }

    /// Every cosigned size, ascending.
    pub fn checkpoint_sizes(&self) -> impl Iterator<Item = u64> + '_ {
        self.cosigned.keys().copied()
    }

    /// The largest checkpoint cosigned by at least `t` members of the current committee.
    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        let members = &self.committee.members;
        self.cosigned
            .keys()
            .rev()
            .filter_map(|s| self.checkpoint(*s))
            .find(|c| c.valid_signers(members).len() >= self.committee.threshold)
    }

    /// Decides whether `bytes` may be applied now, `tree` being the log before it.
    pub fn check(
        &self,
        bytes: &[u8],
        tree: &MerkleLog,
        verify: Verify,
    ) -> Result<ParsedEntry, Rejection> {
        let e = ParsedEntry::decode(bytes).map_err(|err| Rejection {
            author: None,
            reason: err.to_string(),
        })?;
        let reject = |reason: String| Rejection {
            author: Some(e.author.clone()),
            reason,
        };
        if e.body.origin != self.origin {
            return Err(reject(format!(
                "entry is for ledger {:?}, not {:?}",
                e.body.origin, self.origin
            )));
        }
        // 2–3: known author, valid signature.
        let key = match &e.author {
            AuthorId::Node(name) => self
                .committee
                .member(name)
                .map(|m| m.key)
                .ok_or_else(|| reject("not a member of the current committee".into()))?,
            AuthorId::Researcher(id) => {
                let r = self
                    .researchers
                    .get(id)
                    .ok_or_else(|| reject("not a registered researcher".into()))?;
                if !r.enabled {
                    return Err(reject("researcher is disabled".into()));
                }
                r.key
            }
        };
        if verify == Verify::Signatures
            && key
                .verify(&e.signed_message(), &Signature::from_bytes(&e.signature))
                .is_err()
        {
            return Err(reject("signature does not verify".into()));
        }
        // 4: sequence.
        let expected = self.next_seq(&e.author);
        if e.body.author_seq != expected {
            return Err(reject(format!(
                "author sequence {} out of order (expected {expected})",
                e.body.author_seq
            )));
        }
        // 5: kind and consistency.
        self.check_kind(&e, tree).map_err(reject)?;
        // 8: the application's rules.
        self.rules.0.check(&e, self).map_err(reject)?;
        Ok(e)
    }

    fn check_kind(&self, e: &ParsedEntry, tree: &MerkleLog) -> Result<(), String> {
        let node = match &e.author {
            AuthorId::Node(n) => Some(n.as_str()),
            AuthorId::Researcher(_) => None,
        };
        let need_node = || node.ok_or_else(|| "only committee members may write this".to_string());
        let Some(kind) = e.kind() else {
            return Err("entry has no kind".into());
        };
        match kind {
            Kind::SubmitQuery(q) => {
                check_id("query id", &q.query_id)?;
                if self.queries.contains(&q.query_id) {
                    return Err(format!("query {} already exists", q.query_id));
                }
                let researcher = match &e.author {
                    AuthorId::Researcher(r) => {
                        if !q.on_behalf_of.is_empty() && q.on_behalf_of != *r {
                            return Err("a researcher cannot submit for someone else".into());
                        }
                        r.clone()
                    }
                    AuthorId::Node(_) => q.on_behalf_of.clone(),
                };
                match self.researchers.get(&researcher) {
                    Some(r) if r.enabled => {}
                    Some(_) => return Err(format!("researcher {researcher} is disabled")),
                    None => return Err(format!("no registered researcher {researcher:?}")),
                }
                // One query per (researcher, idempotency key), decided before the budget: a
                // retry is refused as a duplicate whatever is left to spend.
                if !q.idempotency_key.is_empty() {
                    check_idempotency_key(&q.idempotency_key)?;
                    let slot = idempotency_slot(&researcher, &q.idempotency_key);
                    if let Some(first) = self.idempotency.get(&slot) {
                        return Err(format!(
                            "{DUPLICATE_IDEMPOTENCY_KEY} for researcher {researcher}: query {} \
                             was submitted under it",
                            first.query_id
                        ));
                    }
                }
                // The budget is charged by this very entry: admitted only if it fits.
                let charge = QueryCharge::decode(&q.cost)?;
                check_id("dataset", &charge.dataset)?;
                self.budgets
                    .check(&Event::Charge {
                        query: q.query_id.clone(),
                        researcher,
                        dataset: charge.dataset,
                        cost: charge.cost,
                    })
                    .map_err(|e| e.to_string())
            }
            Kind::RegisterResearcher(r) => {
                let n = need_node()?;
                check_id("researcher id", &r.researcher_id)?;
                if self.researchers.contains_key(&r.researcher_id) {
                    return Err(format!("researcher {} already registered", r.researcher_id));
                }
                if r.display_name.len() > 256 {
                    return Err("display name longer than 256 bytes".into());
                }
                parse_key(&r.public_key)?;
                self.check_approval(n, kind)
            }
            Kind::SetResearcherStatus(s) => {
                let n = need_node()?;
                if !self.researchers.contains_key(&s.researcher_id) {
                    return Err(format!("no registered researcher {:?}", s.researcher_id));
                }
                self.check_approval(n, kind)
            }
            Kind::SetBudget(b) => {
                let n = need_node()?;
                check_id("budget subject", &b.subject)?;
                limit_event(&b.subject, &b.limit)?;
                self.check_approval(n, kind)
            }
            Kind::Contribution(c) => {
                let n = need_node()?;
                let q = self.open_query(&c.query_id)?;
                not_closed(&q)?;
                once(&q.contributions, n, "a contribution")
            }
            Kind::NoiseCommitment(c) => {
                let n = need_node()?;
                let q = self.open_query(&c.query_id)?;
                not_closed(&q)?;
                once(&q.noise_shares, n, "a noise share")
            }
            Kind::CloseAggregate(c) => {
                need_node()?;
                let q = self.open_query(&c.query_id)?;
                not_closed(&q)?;
                self.check_close(&q, c)
            }
            Kind::PartialDecryption(p) => {
                let n = need_node()?;
                let q = self.open_query(&p.query_id)?;
                if q.closed.is_none() {
                    return Err(format!(
                        "query {} has no closed aggregate to decrypt yet",
                        p.query_id
                    ));
                }
                once(&q.partials, n, "partial decryptions")
            }
            Kind::ReleaseResult(r) => {
                need_node()?;
                self.open_query(&r.query_id).map(|_| ())
            }
            Kind::QueryFailed(f) => {
                let n = need_node()?;
                let q = self.open_query(&f.query_id)?;
                if f.reason.len() > 4096 {
                    return Err("failure reason longer than 4096 bytes".into());
                }
                if f.ground == pb::FailureGround::QueryInvalid as i32 {
                    // Rule 9: one member's word only for a ground every member checks.
                    return self.rules.0.check_failure_ground(&f.query_id, self);
                }
                if f.ground != pb::FailureGround::Unspecified as i32 {
                    return Err(format!("unknown failure ground {}", f.ground));
                }
                match &q.failure {
                    Some((_, by)) if by.contains(n) => Err(format!(
                        "{n} already posted a failure of query {} ({} of t = {} members so far)",
                        f.query_id,
                        by.len(),
                        self.committee.threshold
                    )),
                    _ => Ok(()),
                }
            }
            Kind::Misbehaviour(m) => {
                need_node()?;
                if self.committee.member(&m.culprit).is_none() {
                    return Err(format!("culprit {:?} is not a member", m.culprit));
                }
                if m.evidence.is_empty() {
                    return Ok(());
                }
                self.check_equivocation_evidence(&m.culprit, &m.evidence, tree)
            }
            Kind::Note(n) => {
                need_node()?;
                if n.text.len() > 4096 {
                    return Err("note longer than 4096 bytes".into());
                }
                Ok(())
            }
            Kind::Cosignature(c) => self.check_cosignature(need_node()?, c, tree),
            Kind::ConfigChange(c) => {
                need_node()?;
                self.check_config_change(c).map(|_| ())
            }
        }
    }

    fn open_query(&self, id: &str) -> Result<QueryRecord, String> {
        let q = self
            .queries
            .get(id)
            .ok_or_else(|| format!("no query {id:?}"))?;
        if q.outcome.is_some() {
            return Err(format!("query {id} is already closed"));
        }
        Ok(q)
    }

    fn check_close(&self, q: &QueryRecord, c: &pb::CloseAggregate) -> Result<(), String> {
        let distinct = |v: &[String], posted: &BTreeSet<String>, what: &str| {
            let set: BTreeSet<&String> = v.iter().collect();
            if set.len() != v.len() {
                return Err(format!("{what} listed twice"));
            }
            match v.iter().find(|m| !posted.contains(*m)) {
                Some(m) => Err(format!("{m} posted no {what} for this query")),
                None => Ok(()),
            }
        };
        if c.contributors.is_empty() {
            return Err("an aggregate needs at least one contribution".into());
        }
        distinct(&c.contributors, &q.contributions, "contribution")?;
        distinct(&c.noise_from, &q.noise_shares, "noise share")?;
        // Each share is calibrated for m = k − (t − 1) honest shares: a close listing k = n − f
        // shares, t − 1 of them the colluders', still holds m honest ones; fewer may not.
        let needed = self.committee.noise_committee()?.close_shares() as usize;
        if c.noise_from.len() < needed {
            return Err(format!(
                "{} noise shares; the calibration needs at least {needed} (n − f)",
                c.noise_from.len()
            ));
        }
        Ok(())
    }

    fn check_cosignature(
        &self,
        node: &str,
        c: &pb::Cosignature,
        tree: &MerkleLog,
    ) -> Result<(), String> {
        if c.size == 0 || c.size > tree.size() {
            return Err(format!(
                "cosignature for size {} but the log has {} entries",
                c.size,
                tree.size()
            ));
        }
        let root = tree.root_at(c.size).map_err(|e| e.to_string())?;
        if c.root.as_slice() != root {
            return Err(format!(
                "cosigned root is not the log's root at size {}",
                c.size
            ));
        }
        if let Some(done) = self.cosigned.get(&c.size) {
            if done.lines.contains_key(node) {
                return Err(format!("already cosigned size {}", c.size));
            }
        }
        let member = self
            .committee
            .member(node)
            .ok_or_else(|| "not a member".to_string())?;
        let sig: [u8; 64] = c
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| "cosignature is not 64 bytes".to_string())?;
        let body = Checkpoint {
            origin: self.origin.clone(),
            size: c.size,
            root,
        }
        .body();
        if !member.verify_raw(body.as_bytes(), &sig) {
            return Err("cosignature does not verify".into());
        }
        Ok(())
    }

    /// Evidence attached to a `Misbehaviour` entry must prove what it claims: a checkpoint of
    /// this ledger (a C2SP signed note), of a size the log has reached, whose root is not the
    /// log's root at that size, validly signed by the culprit. A node that signs two
    /// checkpoints of one size is then on the ledger for good, and a false accusation is
    /// refused.
    fn check_equivocation_evidence(
        &self,
        culprit: &str,
        evidence: &[u8],
        tree: &MerkleLog,
    ) -> Result<(), String> {
        let note = std::str::from_utf8(evidence)
            .map_err(|_| "evidence is not a signed checkpoint note (not UTF-8)".to_string())?;
        let other = SignedCheckpoint::from_note(note).map_err(|e| format!("evidence: {e}"))?;
        let cp = &other.checkpoint;
        if cp.origin != self.origin {
            return Err(format!("evidence is a checkpoint of {:?}", cp.origin));
        }
        if cp.size == 0 || cp.size > tree.size() {
            return Err(format!(
                "evidence is a checkpoint of size {} but the log has {} entries",
                cp.size,
                tree.size()
            ));
        }
        let root = tree.root_at(cp.size).map_err(|e| e.to_string())?;
        if cp.root == root {
            return Err("evidence agrees with the log: no equivocation".into());
        }
        if !other
            .valid_signers(&self.committee.members)
            .contains(culprit)
        {
            return Err(format!("evidence carries no valid signature by {culprit}"));
        }
        Ok(())
    }

    /// The committee a `ConfigChange` would install: its committee decoded and valid, for the
    /// next epoch, approved by at least `t` current members (approvals by others are ignored;
    /// one that does not verify refuses the change). What `check` and `apply` use.
    pub fn check_config_change(&self, c: &pb::ConfigChange) -> Result<CommitteeConfig, String> {
        let proposed = pb::Committee::decode(c.committee.as_slice())
            .map_err(|e| format!("committee does not decode: {e}"))?;
        let next = CommitteeConfig::from_pb(&proposed)?;
        if next.epoch != self.committee.epoch + 1 {
            return Err(format!(
                "committee epoch {} is not the next one ({})",
                next.epoch,
                self.committee.epoch + 1
            ));
        }
        let message = config_message(&self.origin, &c.committee);
        let mut approved = BTreeSet::new();
        for a in &c.approvals {
            let Some(m) = self.committee.member(&a.member) else {
                continue;
            };
            let Ok(sig) = <[u8; 64]>::try_from(a.signature.as_slice()) else {
                return Err(format!("approval by {} is not 64 bytes", a.member));
            };
            if !m.verify_raw(&message, &sig) {
                return Err(format!("approval by {} does not verify", a.member));
            }
            approved.insert(a.member.clone());
        }
        if approved.len() < self.committee.threshold {
            return Err(format!(
                "{} approvals from current members, {} needed",
                approved.len(),
                self.committee.threshold
            ));
        }
        Ok(next)
    }

    /// Applies an entry that [`Self::check`] accepted; `seq` is its place in the Merkle log.
    ///
    /// Checking and applying are split so the caller can make the entry durable in between;
    /// `apply` must follow a successful `check` against the same state.
    pub fn apply(&mut self, e: &ParsedEntry, seq: u64) {
        self.seqs.insert(e.author.clone(), e.body.author_seq);
        let node = match &e.author {
            AuthorId::Node(n) => n.clone(),
            AuthorId::Researcher(_) => String::new(),
        };
        // Rule 9: `check` confirmed a QUERY_INVALID ground; anything else is an approval.
        let failure_needs_agreement = match e.kind() {
            Some(Kind::QueryFailed(f)) => f.ground != pb::FailureGround::QueryInvalid as i32,
            _ => false,
        };
        self.rules.0.applied(e, seq);
        if self.committee.member(&node).is_some() {
            let clock = self.clocks.entry(node.clone()).or_insert((0, 0));
            clock.0 = clock.0.max(e.body.timestamp_ms);
            clock.1 = seq;
            if !self.pending.is_empty() {
                self.age_pending();
            }
        }
        let Some(kind) = e.kind() else { return };
        if matches!(
            kind,
            Kind::RegisterResearcher(_) | Kind::SetResearcherStatus(_) | Kind::SetBudget(_)
        ) {
            if self.needs_approval(kind) {
                if !self.approve(&node, kind, seq) {
                    return; // pending: recorded, not applied
                }
            } else {
                // Applied by one member; an identical proposal waiting for approvals (now a
                // no-op or a lowering) is settled by it.
                self.pending.remove(&change_id(&self.origin, kind));
            }
        }
        match kind {
            Kind::SubmitQuery(q) => {
                let researcher = match &e.author {
                    AuthorId::Researcher(r) => r.clone(),
                    AuthorId::Node(_) => q.on_behalf_of.clone(),
                };
                if let Ok(charge) = QueryCharge::decode(&q.cost) {
                    // Accepted by `check` against this same state (or, on replay, when first
                    // applied), so the query is not charged yet and the charge fits.
                    let _ = self.budgets.apply_checked(&Event::Charge {
                        query: q.query_id.clone(),
                        researcher: researcher.clone(),
                        dataset: charge.dataset,
                        cost: charge.cost,
                    });
                }
                if !q.idempotency_key.is_empty() {
                    self.idempotency.insert(
                        &idempotency_slot(&researcher, &q.idempotency_key),
                        IdempotencyRecord {
                            query_id: q.query_id.clone(),
                            digest: request_digest(&q.query),
                        },
                    );
                }
                self.queries.insert(
                    &q.query_id,
                    QueryRecord {
                        submitted_at: seq,
                        researcher,
                        ..QueryRecord::default()
                    },
                );
            }
            Kind::RegisterResearcher(r) => {
                if let Ok(key) = parse_key(&r.public_key) {
                    self.researchers.insert(
                        r.researcher_id.clone(),
                        Researcher {
                            id: r.researcher_id.clone(),
                            display_name: r.display_name.clone(),
                            key,
                            enabled: true,
                        },
                    );
                }
            }
            Kind::SetResearcherStatus(s) => {
                if let Some(r) = self.researchers.get_mut(&s.researcher_id) {
                    r.enabled = s.enabled;
                }
            }
            Kind::Contribution(c) => self.with_query(&c.query_id, |q| {
                q.contributions.insert(node.clone());
            }),
            Kind::NoiseCommitment(c) => {
                // From the first noise share on, the query's charge is final.
                let member = self
                    .committee
                    .members
                    .iter()
                    .position(|m| m.name == node)
                    .map_or(0, |i| u16::try_from(i + 1).unwrap_or(u16::MAX));
                let _ = self.budgets.apply(&Event::NoisePosted {
                    query: c.query_id.clone(),
                    member,
                });
                self.with_query(&c.query_id, |q| {
                    q.noise_shares.insert(node.clone());
                })
            }
            Kind::CloseAggregate(c) => self.with_query(&c.query_id, |q| {
                q.closed = Some((
                    c.contributors.iter().cloned().collect(),
                    c.noise_from.iter().cloned().collect(),
                ));
            }),
            Kind::PartialDecryption(p) => self.with_query(&p.query_id, |q| {
                q.partials.insert(node.clone());
            }),
            Kind::ReleaseResult(r) => self.with_query(&r.query_id, |q| {
                q.outcome = Some(QueryOutcome::Released(seq));
            }),
            Kind::QueryFailed(f) => {
                let members: BTreeSet<String> = self
                    .committee
                    .members
                    .iter()
                    .map(|m| m.name.clone())
                    .collect();
                let t = self.committee.threshold;
                self.with_query(&f.query_id, |q| {
                    if !failure_needs_agreement {
                        q.outcome = Some(QueryOutcome::Failed(f.reason.clone()));
                        return;
                    }
                    let (reason, by) = q
                        .failure
                        .get_or_insert_with(|| (f.reason.clone(), BTreeSet::new()));
                    by.insert(node.clone());
                    if by.iter().filter(|m| members.contains(*m)).count() >= t {
                        q.outcome = Some(QueryOutcome::Failed(reason.clone()));
                    }
                })
            }
            Kind::Cosignature(c) => {
                if let (Ok(root), Ok(signature)) = (
                    <Hash>::try_from(c.root.as_slice()),
                    <[u8; 64]>::try_from(c.signature.as_slice()),
                ) {
                    let key_id = self
                        .committee
                        .member(&node)
                        .map(|m| m.key_id())
                        .unwrap_or_default();
                    self.cosigned
                        .entry(c.size)
                        .or_insert_with(|| Cosigned {
                            root,
                            lines: BTreeMap::new(),
                        })
                        .lines
                        .insert(
                            node.clone(),
                            NoteSignature {
                                name: node.clone(),
                                key_id,
                                signature,
                            },
                        );
                }
            }
            Kind::ConfigChange(c) => {
                if let Ok(next) = self.check_config_change(c) {
                    self.committee = next;
                }
            }
            Kind::SetBudget(b) => {
                if let Ok(event) = limit_event(&b.subject, &b.limit) {
                    let _ = self.budgets.apply(&event);
                }
            }
            Kind::Misbehaviour(_) | Kind::Note(_) => {}
        }
    }

    /// Applies a stored entry that was accepted when first applied (on restart, replaying this
    /// node's own disk): decodes it and applies it without re-checking.
    pub fn replay(&mut self, bytes: &[u8], seq: u64) -> Result<(), crate::entry::EntryError> {
        let e = ParsedEntry::decode(bytes)?;
        self.apply(&e, seq);
        Ok(())
    }

    /// Sets the rejection count (restored from the node's metadata).
    pub fn set_rejected(&mut self, n: u64) {
        self.rejected = n;
    }

    fn with_query(&mut self, id: &str, f: impl FnOnce(&mut QueryRecord)) {
        self.queries.update(id, f);
    }
}

fn not_closed(q: &QueryRecord) -> Result<(), String> {
    if q.closed.is_some() {
        return Err("the query's aggregate is already closed".into());
    }
    Ok(())
}

fn once(set: &BTreeSet<String>, node: &str, what: &str) -> Result<(), String> {
    if set.contains(node) {
        return Err(format!("{node} already posted {what} for this query"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::NodeKey;

    fn committee() -> CommitteeConfig {
        let keys: Vec<NodeKey> = (1..=3u8)
            .map(|i| NodeKey::from_secret_bytes(&format!("m{i}"), &[i; 32]))
            .collect();
        let mut c = CommitteeConfig::new(keys.iter().map(NodeKey::identity).collect(), 2, 0);
        for (i, k) in keys.iter().enumerate() {
            c.endpoints.insert(
                k.name().to_owned(),
                MemberEndpoint {
                    raft_id: i as u64 + 1,
                    addr: format!("10.0.0.{i}:7000"),
                    cert_sha256: "ab".repeat(32),
                },
            );
        }
        c
    }

    /// A ledger of committee() (n = 3, t = 2) fed entries signed by its members' keys.
    struct Gov {
        state: LedgerState,
        tree: MerkleLog,
        keys: Vec<NodeKey>,
        seqs: Vec<u64>,
        /// The entries `post` applied, in order.
        log: Vec<Vec<u8>>,
    }

    impl Gov {
        fn new() -> Self {
            let keys: Vec<NodeKey> = (1..=3u8)
                .map(|i| NodeKey::from_secret_bytes(&format!("m{i}"), &[i; 32]))
                .collect();
            Gov {
                state: LedgerState::new("test/gov", committee()).unwrap(),
                tree: MerkleLog::new(),
                keys,
                seqs: vec![0; 3],
                log: Vec::new(),
            }
        }

        /// Member `i` posts `kind`.
        fn post(&mut self, i: usize, kind: Kind) -> Result<(), String> {
            self.post_at(i, 0, kind)
        }

        /// Posts with the author's clock at `ms`.
        fn post_at(&mut self, i: usize, ms: u64, kind: Kind) -> Result<(), String> {
            let bytes =
                crate::entry::sign_entry(&self.keys[i], "test/gov", self.seqs[i] + 1, ms, kind);
            let e = self
                .state
                .check(&bytes, &self.tree, Verify::Signatures)
                .map_err(|r| r.reason)?;
            self.seqs[i] += 1;
            self.state.apply(&e, self.tree.size());
            self.tree.append(&bytes);
            self.log.push(bytes);
            Ok(())
        }

        /// How query `id`, which must be on the ledger, ended, if it did.
        fn outcome(&self, id: &str) -> Option<QueryOutcome> {
            self.state
                .query(id)
                .expect("the query is on the ledger")
                .outcome
        }

        fn limit(&self, subject: &str) -> Option<u64> {
            let s = crate::budget::parse_subject(subject).unwrap();
            self.state.budgets().limit(&s).map(|c| c.epsilon.0)
        }
    }

    fn budget(subject: &str, micros: u64) -> Kind {
        Kind::SetBudget(pb::SetBudget {
            subject: subject.into(),
            limit: crate::budget::encode_limit(&medtech_noise::Cost {
                epsilon: medtech_noise::Micros(micros),
                ..medtech_noise::Cost::default()
            }),
        })
    }

    fn register(id: &str) -> Kind {
        Kind::RegisterResearcher(pb::RegisterResearcher {
            researcher_id: id.into(),
            display_name: id.into(),
            public_key: NodeKey::from_secret_bytes("r", &[9; 32])
                .identity()
                .key
                .as_bytes()
                .to_vec(),
        })
    }

    fn status(id: &str, enabled: bool) -> Kind {
        Kind::SetResearcherStatus(pb::SetResearcherStatus {
            researcher_id: id.into(),
            enabled,
        })
    }

    /// The attack: one colluding member gives a researcher a huge budget (unlimited repetition
    /// averages the noise away). It must wait for t = 2 members.
    #[test]
    fn single_member_budget_raise_is_pending_until_t_approve() {
        let mut g = Gov::new();
        g.post(0, budget("researcher:r1", 1_000_000)).unwrap();
        assert_eq!(g.limit("researcher:r1"), None, "a first limit waits for t");
        g.post(1, budget("researcher:r1", 1_000_000)).unwrap();
        assert_eq!(g.limit("researcher:r1"), Some(1_000_000));
        assert!(g.state.pending_changes().is_empty());

        // m1 alone raises it to 1000 ε: recorded as pending, not applied.
        g.post(0, budget("researcher:r1", 1_000_000_000)).unwrap();
        assert_eq!(g.limit("researcher:r1"), Some(1_000_000));
        let p = g.state.pending_changes().values().next().unwrap();
        assert_eq!(
            p.approvals.iter().collect::<Vec<_>>(),
            vec!["m1"],
            "who approved is visible"
        );
        // Approving twice does not count twice.
        let twice = g.post(0, budget("researcher:r1", 1_000_000_000));
        assert!(twice.unwrap_err().contains("already approved"));
        assert_eq!(g.limit("researcher:r1"), Some(1_000_000));
        // A second member's approval applies it.
        g.post(2, budget("researcher:r1", 1_000_000_000)).unwrap();
        assert_eq!(g.limit("researcher:r1"), Some(1_000_000_000));
        assert!(g.state.pending_changes().is_empty());

        // Lowering takes one member, at once; so does a first global limit.
        g.post(1, budget("researcher:r1", 500_000)).unwrap();
        assert_eq!(g.limit("researcher:r1"), Some(500_000));
        g.post(1, budget("global", 5_000_000)).unwrap();
        assert_eq!(g.limit("global"), Some(5_000_000));
        // Raising the global limit again waits.
        g.post(1, budget("global", 6_000_000)).unwrap();
        assert_eq!(g.limit("global"), Some(5_000_000));
    }

    #[test]
    fn single_member_researcher_registration_is_pending_until_t_approve() {
        let mut g = Gov::new();
        g.post(0, register("r1")).unwrap();
        assert!(g.state.researcher("r1").is_none());
        assert_eq!(g.state.pending_changes().len(), 1);
        // A different key under the same id is a different change: it does not count.
        let mut other = register("r1");
        if let Kind::RegisterResearcher(r) = &mut other {
            r.display_name = "someone else".into();
        }
        g.post(1, other).unwrap();
        assert!(g.state.researcher("r1").is_none());
        g.post(1, register("r1")).unwrap();
        assert!(g.state.researcher("r1").is_some());
        // The rival registration can no longer complete.
        let mut other = register("r1");
        if let Kind::RegisterResearcher(r) = &mut other {
            r.display_name = "someone else".into();
        }
        assert!(g.post(2, other).unwrap_err().contains("already registered"));
    }

    #[test]
    fn single_member_re_enabling_a_disabled_researcher_is_pending_until_t_approve() {
        let mut g = Gov::new();
        g.post(0, register("r1")).unwrap();
        g.post(1, register("r1")).unwrap();
        // One member disables alone, at once.
        g.post(2, status("r1", false)).unwrap();
        assert!(!g.state.researcher("r1").unwrap().enabled);
        // One member re-enables: pending.
        g.post(2, status("r1", true)).unwrap();
        assert!(!g.state.researcher("r1").unwrap().enabled);
        g.post(0, status("r1", true)).unwrap();
        assert!(g.state.researcher("r1").unwrap().enabled);
    }

    fn note(text: &str) -> Kind {
        Kind::Note(pb::Note { text: text.into() })
    }

    /// The committee's time is the `t`-th largest member clock: one member (t = 2) whose clock
    /// runs years ahead cannot move it, and it follows the honest clocks.
    #[test]
    fn one_member_with_a_clock_far_ahead_cannot_move_committee_time() {
        let mut g = Gov::new();
        assert_eq!(g.state.committee_time_ms(), 0);
        let day = 24 * 60 * 60 * 1000;
        g.post_at(0, 1_000 * day, note("from the future")).unwrap();
        assert_eq!(
            g.state.committee_time_ms(),
            0,
            "one clock is not the committee's"
        );
        g.post_at(1, 10 * day, note("now")).unwrap();
        assert_eq!(g.state.committee_time_ms(), 10 * day);
        g.post_at(2, 11 * day, note("now")).unwrap();
        assert_eq!(g.state.committee_time_ms(), 11 * day);
        // A clock set back does not move a member's clock back.
        g.post_at(2, day, note("the past")).unwrap();
        assert_eq!(g.state.committee_time_ms(), 11 * day);
    }

    /// The attack: a colluding member proposes raising a researcher's budget and waits; months
    /// later a careless member posts the same change for its own reasons, or is tricked into
    /// it, and the stale approval completes it. A pending change lapses after
    /// `PENDING_CHANGE_TTL_MS` of committee time; a late approval starts it afresh, and a
    /// colluder's clock alone cannot make an honest proposal lapse early.
    #[test]
    fn a_stale_approval_does_not_complete_a_change_months_later() {
        let mut g = Gov::new();
        let day = 24 * 60 * 60 * 1000;
        let t0 = 20_000 * day;
        g.post_at(1, t0, note("clock")).unwrap();
        g.post_at(2, t0, note("clock")).unwrap();
        // m1 proposes; a colluder's clock far ahead does not make it lapse.
        g.post_at(0, t0, budget("researcher:r1", 1_000_000))
            .unwrap();
        g.post_at(0, t0 + 100 * day, note("from the future"))
            .unwrap();
        g.post_at(1, t0, note("clock")).unwrap();
        let p = g.state.pending_changes().values().next().unwrap();
        assert_eq!(
            p.proposed_ms, t0,
            "its wait started at the honest clocks' time"
        );
        // Eight days of committee time pass on the honest clocks: it lapses.
        g.post_at(1, t0 + 8 * day, note("clock")).unwrap();
        assert!(g.state.pending_changes().is_empty(), "lapsed");
        // The late approval is a fresh proposal, not the second approval.
        g.post_at(1, t0 + 8 * day, budget("researcher:r1", 1_000_000))
            .unwrap();
        assert_eq!(g.limit("researcher:r1"), None);
        let p = g.state.pending_changes().values().next().unwrap();
        assert_eq!(p.approvals.iter().collect::<Vec<_>>(), vec!["m2"]);
        // Within the week, a second approval applies it.
        g.post_at(2, t0 + 9 * day, budget("researcher:r1", 1_000_000))
            .unwrap();
        assert_eq!(g.limit("researcher:r1"), Some(1_000_000));
    }

    /// The attack on the lapse rule itself: after a quiet week the members' last clocks are a
    /// week old, so a change proposed now would count as a week old as soon as the first
    /// cosignature brings committee time up to date, and lapse at once. Its wait starts only
    /// when `t` members have posted after it.
    #[test]
    fn a_change_proposed_after_an_idle_week_does_not_lapse_at_once() {
        let mut g = Gov::new();
        let day = 24 * 60 * 60 * 1000;
        let t0 = 20_000 * day;
        g.post_at(1, t0, note("clock")).unwrap();
        g.post_at(2, t0, note("clock")).unwrap();
        g.post_at(0, t0 + 30 * day, register("r1")).unwrap();
        g.post_at(1, t0 + 30 * day, note("cosignature")).unwrap();
        assert_eq!(g.state.pending_changes().len(), 1, "not lapsed");
        g.post_at(2, t0 + 30 * day, register("r1")).unwrap();
        assert!(g.state.researcher("r1").is_some());
    }

    /// A change proposed before the committee's time is known (a fresh ledger) does not lapse
    /// the moment it becomes known: its wait starts then.
    #[test]
    fn a_change_proposed_before_committee_time_is_known_waits_from_then() {
        let mut g = Gov::new();
        let day = 24 * 60 * 60 * 1000;
        g.post(0, register("r1")).unwrap();
        g.post_at(1, 20_000 * day, note("clock")).unwrap();
        g.post_at(2, 20_000 * day, note("clock")).unwrap();
        assert_eq!(g.state.pending_changes().len(), 1, "not lapsed");
        g.post_at(1, 20_001 * day, register("r1")).unwrap();
        assert!(g.state.researcher("r1").is_some());
    }

    #[test]
    fn one_member_cannot_flood_the_state_with_pending_changes() {
        let mut g = Gov::new();
        for i in 0..MAX_PENDING_PER_MEMBER {
            g.post(0, register(&format!("r{i}"))).unwrap();
        }
        assert!(g
            .post(0, register("one-too-many"))
            .unwrap_err()
            .contains("pending"));
        // Others still propose and approve.
        g.post(1, register("r0")).unwrap();
        assert!(g.state.researcher("r0").is_some());
    }

    /// Gov with researcher `r1` registered and budgeted, and query `id` submitted by m1 on
    /// its behalf.
    fn with_query(id: &str) -> Gov {
        let mut g = Gov::new();
        for k in [
            register("r1"),
            budget("researcher:r1", 10_000_000),
            budget("dataset:d", 10_000_000),
        ] {
            g.post(0, k.clone()).unwrap();
            g.post(1, k).unwrap();
        }
        let charge = crate::budget::QueryCharge {
            dataset: "d".into(),
            cost: medtech_noise::Cost {
                epsilon: medtech_noise::Micros(100_000),
                ..medtech_noise::Cost::default()
            },
        };
        g.post(
            0,
            Kind::SubmitQuery(pb::SubmitQuery {
                query_id: id.into(),
                query: b"{}".to_vec(),
                cost: charge.encode(),
                on_behalf_of: "r1".into(),
                idempotency_key: String::new(),
            }),
        )
        .unwrap();
        g
    }

    fn failed_on(id: &str, reason: &str, ground: pb::FailureGround) -> Kind {
        Kind::QueryFailed(pb::QueryFailed {
            query_id: id.into(),
            reason: reason.into(),
            ground: ground as i32,
        })
    }

    /// One member's vote to fail query `id`.
    fn failed(id: &str, reason: &str) -> Kind {
        failed_on(id, reason, pb::FailureGround::Unspecified)
    }

    /// A failure of query `id` on the ground that it is invalid.
    fn failed_invalid(id: &str, reason: &str) -> Kind {
        failed_on(id, reason, pb::FailureGround::QueryInvalid)
    }

    /// Application rules that find exactly the queries in their list invalid.
    struct InvalidQueries(Vec<&'static str>);

    impl crate::rules::AppRules for InvalidQueries {
        fn check(&self, _: &ParsedEntry, _: &LedgerState) -> Result<(), String> {
            Ok(())
        }
        fn check_failure_ground(&self, query: &str, _: &LedgerState) -> Result<(), String> {
            if self.0.contains(&query) {
                Ok(())
            } else {
                Err(format!("query {query} compiles"))
            }
        }
        fn applied(&mut self, _: &ParsedEntry, _: u64) {}
    }

    /// The attack: before any noise is posted (the budget is already charged at admission),
    /// one colluding member declares every query failed, so researchers pay and never get a
    /// result. One member's `QueryFailed` is now only an approval, before noise as after; the
    /// query ends failed when `t` members agree.
    #[test]
    fn one_member_cannot_fail_a_query_before_noise_without_a_checkable_ground() {
        let mut g = with_query("q2");
        g.post(1, failed("q2", "no contributions")).unwrap();
        assert_eq!(
            g.outcome("q2"),
            None,
            "one member cannot end a charged query alone"
        );
        g.post(0, failed("q2", "timeout")).unwrap();
        assert_eq!(
            g.outcome("q2"),
            Some(QueryOutcome::Failed("no contributions".into()))
        );
    }

    /// An auditor replaying an export offline (`export::verify`, core rules only) has no
    /// committee key to recompile queries with: it accepts an applied ground unchecked (its
    /// report says so) instead of failing an honest ledger.
    #[test]
    fn an_offline_replay_accepts_a_ground_it_cannot_check() {
        let mut g = with_query("q1");
        g.state.set_rules(Box::new(crate::rules::CoreOnly));
        g.post(1, failed_invalid("q1", "does not compile")).unwrap();
        assert_eq!(
            g.outcome("q1"),
            Some(QueryOutcome::Failed("does not compile".into()))
        );
    }

    /// A ground every member checks lets one member end a query at once (a plan that does not
    /// compile fails on every member alike); a claimed ground the rules do not confirm is
    /// refused, naming nothing else, and a ledger without application rules refuses every
    /// ground.
    #[test]
    fn a_failure_ground_is_accepted_only_when_every_member_confirms_it() {
        // No application rules: the ground cannot be checked, so it is refused.
        let mut g = with_query("q1");
        let e = g
            .post(1, failed_invalid("q1", "does not compile"))
            .unwrap_err();
        assert!(e.contains("cannot check"), "{e}");
        assert_eq!(g.outcome("q1"), None);

        let mut g = with_query("q1");
        g.state.set_rules(Box::new(InvalidQueries(vec!["q1"])));
        g.post(1, failed_invalid("q1", "does not compile")).unwrap();
        assert_eq!(
            g.outcome("q1"),
            Some(QueryOutcome::Failed("does not compile".into()))
        );

        // The attack: a valid query claimed invalid, to end it alone.
        let mut g = with_query("q3");
        g.state.set_rules(Box::new(InvalidQueries(vec!["q1"])));
        let e = g.post(1, failed_invalid("q3", "claimed")).unwrap_err();
        assert!(e.contains("compiles"), "{e}");
        assert_eq!(g.outcome("q3"), None);
        // An unknown ground is refused too.
        let e = g
            .post(
                1,
                Kind::QueryFailed(pb::QueryFailed {
                    query_id: "q3".into(),
                    reason: "?".into(),
                    ground: 7,
                }),
            )
            .unwrap_err();
        assert!(e.contains("unknown failure ground"), "{e}");
    }

    /// The attack: once noise is posted (the charge is final and the result is on its way), one
    /// member alone declares the query failed — suppressing a result the committee is about
    /// to release, for no reason anyone can check. Its `QueryFailed` is only an approval: the
    /// query ends failed when `t` members agree, and not before.
    #[test]
    fn query_failed_after_noise_without_reason_is_refused() {
        let mut g = with_query("q1");
        g.post(
            1,
            Kind::NoiseCommitment(pb::NoiseCommitment {
                query_id: "q1".into(),
                ..pb::NoiseCommitment::default()
            }),
        )
        .unwrap();
        g.post(0, failed("q1", "no reason")).unwrap();
        let q = g.state.query("q1").unwrap();
        assert_eq!(
            q.outcome, None,
            "one member cannot fail a query after noise"
        );
        let (reason, by) = q.failure.unwrap();
        assert_eq!((reason.as_str(), by.len()), ("no reason", 1));
        // The same member again does not count twice.
        let again = g.post(0, failed("q1", "still no reason")).unwrap_err();
        assert!(again.contains("already posted a failure"), "{again}");
        assert_eq!(g.outcome("q1"), None);
        // A second member (t = 2) agrees: the query ends with the first reason.
        g.post(2, failed("q1", "timeout")).unwrap();
        assert_eq!(
            g.outcome("q1"),
            Some(QueryOutcome::Failed("no reason".into()))
        );
    }

    /// A failure only partly approved does not block a release the application rules accept:
    /// `t − 1` members posting `QueryFailed` cannot stop the honest members' result.
    #[test]
    fn a_release_still_ends_a_query_whose_failure_is_pending() {
        let mut g = with_query("q1");
        g.state.set_rules(Box::new(crate::rules::CoreOnly));
        g.post(
            2,
            Kind::NoiseCommitment(pb::NoiseCommitment {
                query_id: "q1".into(),
                ..pb::NoiseCommitment::default()
            }),
        )
        .unwrap();
        g.post(0, failed("q1", "suppress it")).unwrap();
        assert_eq!(g.outcome("q1"), None);
        g.post(
            1,
            Kind::ReleaseResult(pb::ReleaseResult {
                query_id: "q1".into(),
                result: b"{}".to_vec(),
            }),
        )
        .unwrap();
        assert!(matches!(g.outcome("q1"), Some(QueryOutcome::Released(_))));
        // The failure can no longer complete.
        assert!(g
            .post(2, failed("q1", "late"))
            .unwrap_err()
            .contains("already closed"));
    }

    /// The on-behalf-of power (docs/privacy.md §1): a member may submit a query for any
    /// registered researcher, spending that researcher's budget. What bounds it is checked
    /// here: the entry is signed by and names the submitting member, the query is recorded
    /// for the researcher, the charge lands on that researcher's (and the dataset's) budget
    /// and cannot exceed it, and a researcher cannot use the field to spend someone else's.
    #[test]
    fn a_query_submitted_on_behalf_of_a_researcher_is_attributed_to_the_submitting_member() {
        let mut g = with_query("q1");
        // The ledger entry of q1 is m1's: its author is the member, on behalf of r1.
        let charge = |id: &str, eps: u64| keyed(id, "r1", "", b"{}", eps);
        let bytes = crate::entry::sign_entry(
            &g.keys[1],
            "test/gov",
            g.seqs[1] + 1,
            0,
            charge("q2", 200_000),
        );
        let e = g.state.check(&bytes, &g.tree, Verify::Signatures).unwrap();
        assert_eq!(
            e.author,
            AuthorId::Node("m2".into()),
            "the entry names the member"
        );
        g.state.apply(&e, g.tree.size());
        g.tree.append(&bytes);
        g.seqs[1] += 1;
        assert_eq!(g.state.query("q2").unwrap().researcher, "r1");
        let spent = |g: &Gov, s: &str| {
            let s = crate::budget::parse_subject(s).unwrap();
            g.state.budgets().spent(&s).epsilon.0
        };
        assert_eq!(spent(&g, "researcher:r1"), 300_000, "q1 and q2 are r1's");
        assert_eq!(spent(&g, "dataset:d"), 300_000);
        // Bounded by r1's limit (10 ε): a member cannot spend past it.
        let over = g.post(2, charge("q3", 9_800_000)).unwrap_err();
        assert!(over.contains("budget"), "{over}");
        assert!(g.state.query("q3").is_none());
    }

    /// A `SubmitQuery` for `researcher` (on whose behalf a member submits) under `key`.
    fn keyed(id: &str, researcher: &str, key: &str, query: &[u8], micros: u64) -> Kind {
        Kind::SubmitQuery(pb::SubmitQuery {
            query_id: id.into(),
            query: query.to_vec(),
            cost: crate::budget::QueryCharge {
                dataset: "d".into(),
                cost: medtech_noise::Cost {
                    epsilon: medtech_noise::Micros(micros),
                    ..medtech_noise::Cost::default()
                },
            }
            .encode(),
            on_behalf_of: researcher.into(),
            idempotency_key: key.into(),
        })
    }

    fn spent(state: &LedgerState, subject: &str) -> u64 {
        let s = crate::budget::parse_subject(subject).unwrap();
        state.budgets().spent(&s).epsilon.0
    }

    /// The attack: a researcher's request is retried after a lost response (a timeout, a 503
    /// after the entry committed) — or the same request reaches two members at once — and a
    /// second `SubmitQuery` under the same idempotency key is proposed. Every member must
    /// reject it from the replicated state, whoever proposes it and whatever its body, so ε is
    /// charged once.
    #[test]
    fn a_second_submission_under_a_researchers_idempotency_key_is_rejected() {
        let mut g = with_query("q0");
        for k in [register("r2"), budget("researcher:r2", 10_000_000)] {
            g.post(0, k.clone()).unwrap();
            g.post(1, k).unwrap();
        }
        g.post(0, keyed("q1", "r1", "retry-me", b"{\"a\":1}", 100_000))
            .unwrap();
        assert_eq!(spent(&g.state, "researcher:r1"), 200_000);
        let first = g.state.idempotent_submission("r1", "retry-me").unwrap();
        assert_eq!(first.query_id, "q1");
        assert_eq!(first.digest, request_digest(b"{\"a\":1}"));

        // The same request again, proposed by another member with a fresh query id: rejected,
        // naming the first query, and nothing charged.
        let again = g
            .post(1, keyed("q2", "r1", "retry-me", b"{\"a\":1}", 100_000))
            .unwrap_err();
        assert!(again.starts_with(DUPLICATE_IDEMPOTENCY_KEY), "{again}");
        assert!(again.contains("query q1"), "{again}");
        // A different request under the same key: rejected just the same.
        let other = g
            .post(2, keyed("q3", "r1", "retry-me", b"{\"a\":2}", 300_000))
            .unwrap_err();
        assert!(other.starts_with(DUPLICATE_IDEMPOTENCY_KEY), "{other}");
        assert!(g.state.query("q2").is_none() && g.state.query("q3").is_none());
        assert_eq!(spent(&g.state, "researcher:r1"), 200_000, "charged once");
        assert_eq!(spent(&g.state, "dataset:d"), 200_000);

        // Keys are the researcher's own: r2's "retry-me" is another key, and r1's other keys
        // (and submissions without a key) are admitted.
        g.post(0, keyed("q4", "r2", "retry-me", b"{\"a\":1}", 100_000))
            .unwrap();
        g.post(0, keyed("q5", "r1", "retry-me-2", b"{\"a\":1}", 100_000))
            .unwrap();
        g.post(0, keyed("q6", "r1", "", b"{\"a\":1}", 100_000))
            .unwrap();
        g.post(0, keyed("q7", "r1", "", b"{\"a\":1}", 100_000))
            .unwrap();
        assert_eq!(spent(&g.state, "researcher:r1"), 500_000);
        assert_eq!(spent(&g.state, "researcher:r2"), 100_000);
        assert_eq!(
            g.state
                .idempotent_submission("r2", "retry-me")
                .unwrap()
                .query_id,
            "q4"
        );

        // Replaying the log (an auditor's offline verification, a restarting member) reaches
        // the same verdicts: V7 of the export replays `check` entry by entry.
        let mut replay = LedgerState::new("test/gov", committee()).unwrap();
        let mut tree = MerkleLog::new();
        for bytes in &g.log {
            let e = replay.check(bytes, &tree, Verify::Signatures).unwrap();
            replay.apply(&e, tree.size());
            tree.append(bytes);
        }
        assert_eq!(spent(&replay, "researcher:r1"), 500_000);
        assert_eq!(
            replay.idempotent_submission("r1", "retry-me"),
            g.state.idempotent_submission("r1", "retry-me")
        );
    }

    /// A key the API would refuse is refused by the ledger too (an entry proposed by a member
    /// that skipped the API, or an older build): every member applies the same rule.
    #[test]
    fn a_malformed_idempotency_key_is_rejected() {
        let mut g = with_query("q0");
        for (i, bad) in [
            "x".repeat(MAX_IDEMPOTENCY_KEY_LEN + 1),
            "tab\tkey".into(),
            "new\nline".into(),
            "caf\u{e9}".into(),
        ]
        .into_iter()
        .enumerate()
        {
            let err = g
                .post(0, keyed(&format!("q{}", i + 1), "r1", &bad, b"{}", 1))
                .unwrap_err();
            assert!(err.contains("idempotency key"), "{bad:?}: {err}");
        }
        g.post(
            0,
            keyed("q9", "r1", &"~".repeat(MAX_IDEMPOTENCY_KEY_LEN), b"{}", 1),
        )
        .unwrap();
        g.post(0, keyed("q10", "r1", "a key with spaces", b"{}", 1))
            .unwrap();
    }

    /// The idempotency records are per-query records: a node keeps them in a spilled book, and
    /// a key whose record has left memory still refuses a retry.
    #[test]
    fn an_idempotency_key_spilled_to_disk_still_refuses_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::create(&dir.path().join("spill.redb")).unwrap();
        let mut g = with_query("q0");
        g.state = LedgerState::with_spill("test/gov", committee(), spill, 2).unwrap();
        g.tree = MerkleLog::new();
        g.seqs = vec![0; 3];
        for k in [
            register("r1"),
            budget("researcher:r1", 10_000_000),
            budget("dataset:d", 10_000_000),
        ] {
            g.post(0, k.clone()).unwrap();
            g.post(1, k).unwrap();
        }
        for i in 0..8 {
            g.post(0, keyed(&format!("q{i}"), "r1", &format!("k{i}"), b"{}", 1))
                .unwrap();
        }
        assert!(g.state.storage_fault().is_none());
        let err = g
            .post(1, keyed("q-retry", "r1", "k0", b"{}", 1))
            .unwrap_err();
        assert!(err.contains("query q0"), "{err}");
        assert_eq!(spent(&g.state, "researcher:r1"), 8);
    }

    /// The attack: a relay (a member, a proxy) swaps the idempotency key of a researcher's
    /// signed submission, to have a retry charged again. The key is a field of the signed
    /// body: the swapped entry no longer verifies.
    #[test]
    fn a_researcher_signed_submission_cannot_have_its_idempotency_key_swapped() {
        let mut g = with_query("q0");
        let alice = crate::entry::ResearcherKey::from_secret_bytes("alice", &[7; 32]);
        let reg = Kind::RegisterResearcher(pb::RegisterResearcher {
            researcher_id: "alice".into(),
            display_name: "alice".into(),
            public_key: alice.public_key().as_bytes().to_vec(),
        });
        g.post(0, reg.clone()).unwrap();
        g.post(1, reg).unwrap();
        g.post(0, budget("researcher:alice", 10_000_000)).unwrap();
        g.post(1, budget("researcher:alice", 10_000_000)).unwrap();
        let bytes = crate::entry::sign_entry(
            &alice,
            "test/gov",
            1,
            0,
            keyed("qa", "alice", "k-1", b"{}", 1),
        );
        let mut signed = pb::SignedEntry::decode(bytes.as_slice()).unwrap();
        let mut body = pb::EntryBody::decode(signed.body.as_slice()).unwrap();
        if let Some(Kind::SubmitQuery(q)) = &mut body.kind {
            q.idempotency_key = "k-2".into();
        }
        signed.body = body.encode_to_vec();
        let swapped = signed.encode_to_vec();
        let err = g
            .state
            .check(&swapped, &g.tree, Verify::Signatures)
            .unwrap_err();
        assert!(err.reason.contains("signature"), "{err}");
        // The genuine entry is admitted under alice's key.
        let e = g.state.check(&bytes, &g.tree, Verify::Signatures).unwrap();
        g.state.apply(&e, g.tree.size());
        assert_eq!(
            g.state
                .idempotent_submission("alice", "k-1")
                .unwrap()
                .query_id,
            "qa"
        );
    }

    /// `SubmitQuery` as it was before idempotency keys (fields 1–4).
    #[derive(Clone, PartialEq, prost::Message)]
    struct SubmitQueryV0 {
        #[prost(string, tag = "1")]
        query_id: String,
        #[prost(bytes = "vec", tag = "2")]
        query: Vec<u8>,
        #[prost(bytes = "vec", tag = "3")]
        cost: Vec<u8>,
        #[prost(string, tag = "4")]
        on_behalf_of: String,
    }

    /// Entries written before the field existed must still decode (the signatures cover their
    /// bytes as they are), and an entry without a key must be byte-for-byte what the old
    /// build wrote, so old and new members agree on every existing ledger.
    #[test]
    fn a_submission_written_before_idempotency_keys_decodes_and_encodes_unchanged() {
        let old = SubmitQueryV0 {
            query_id: "q1".into(),
            query: b"{}".to_vec(),
            cost: b"{\"dataset\":\"d\"}".to_vec(),
            on_behalf_of: "r1".into(),
        };
        let bytes = old.encode_to_vec();
        let new = pb::SubmitQuery::decode(bytes.as_slice()).unwrap();
        assert_eq!(new.idempotency_key, "", "no key");
        assert_eq!(
            new.encode_to_vec(),
            bytes,
            "a keyless entry encodes as before"
        );
        // An old build reading a keyed entry sees the same query (the unknown field is skipped).
        let keyed = pb::SubmitQuery {
            idempotency_key: "k".into(),
            ..new
        };
        let seen_by_old = SubmitQueryV0::decode(keyed.encode_to_vec().as_slice()).unwrap();
        assert_eq!(seen_by_old, old);
    }

    /// Without application rules the ledger cannot verify a release, so it refuses every one.
    #[test]
    fn a_ledger_without_application_rules_refuses_every_release() {
        let mut g = with_query("q1");
        let release = Kind::ReleaseResult(pb::ReleaseResult {
            query_id: "q1".into(),
            result: b"{}".to_vec(),
        });
        let err = g.post(0, release.clone()).unwrap_err();
        assert!(err.contains("no application rules"), "{err}");
        assert_eq!(g.outcome("q1"), None);
        // Under rules that accept it (the core only), it ends the query.
        g.state.set_rules(Box::new(crate::rules::CoreOnly));
        g.post(0, release).unwrap();
        assert!(matches!(g.outcome("q1"), Some(QueryOutcome::Released(_))));
    }

    #[test]
    fn committee_with_endpoints_round_trips_through_protobuf() {
        let c = committee();
        c.validate().unwrap();
        assert_eq!(CommitteeConfig::from_pb(&c.to_pb()).unwrap(), c);
        assert_eq!(
            c.voters().keys().copied().collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn bad_endpoints_are_refused() {
        let mut c = committee();
        c.endpoints.get_mut("m2").unwrap().raft_id = 1;
        assert!(c.validate().unwrap_err().contains("taken"));
        let mut c = committee();
        c.endpoints.get_mut("m2").unwrap().cert_sha256 = "AB".repeat(32);
        assert!(c.validate().unwrap_err().contains("digest"));
        let mut c = committee();
        c.endpoints.get_mut("m2").unwrap().addr = "a b".into();
        assert!(c.validate().unwrap_err().contains("address"));
        let mut c = committee();
        let e = c.endpoints["m1"].clone();
        c.endpoints
            .insert("stranger".into(), MemberEndpoint { raft_id: 9, ..e });
        assert!(c.validate().unwrap_err().contains("not a member"));
        // A protobuf committee carrying a bad endpoint does not decode into a configuration.
        let mut pb = committee().to_pb();
        pb.members[0].endpoint.as_mut().unwrap().raft_id = 0;
        assert!(CommitteeConfig::from_pb(&pb).is_err());
    }
}
