//! The query protocol in one process without networking: every member's [`Member`] driver
//! over one shared [`LedgerState`] (the real ledger rules, signatures included), a virtual
//! clock, members that can be offline, and a hook that lets a test rewrite what a member
//! posts (to play a cheating or replaying member). Used by the tests and the scenarios; the
//! node runs the same drivers over the replicated ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use medtech_ledger::checkpoint::NodeKey;
use medtech_ledger::entry::{sign_entry, AuthorId, Kind};
use medtech_ledger::merkle::MerkleLog;
use medtech_ledger::state::{CommitteeConfig, LedgerState, Verify};
use medtech_threshold::KeyShare;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::bundle::{Route, Router};
use crate::data::Columns;
use crate::protocol::{
    registration_entries, submit_entry, CommitteeView, Member, NoiseMode, Outcome, QueryView,
    Timeouts,
};
use crate::query::QuerySpec;

const ORIGIN: &str = "medtech.sim/committee";

/// Rewrites (or drops, with `None`) an entry member `name` is about to post.
pub type Tamper = Box<dyn FnMut(&str, Kind) -> Option<Kind>>;

/// A committee in one process.
pub struct SimCommittee {
    /// The committee.
    pub view: CommitteeView,
    keys: Vec<NodeKey>,
    seqs: Vec<u64>,
    shares: Vec<Arc<KeyShare>>,
    data: Vec<Columns>,
    /// The ledger state every member reads.
    pub state: LedgerState,
    tree: MerkleLog,
    /// Per protocol instance (a query, or a bundle): its view and every member's driver.
    queries: BTreeMap<String, (QueryView, Vec<Member>)>,
    router: Router,
    /// Members that do nothing.
    pub offline: BTreeSet<String>,
    /// Rewrites outgoing entries.
    pub tamper: Option<Tamper>,
    noise: NoiseMode,
    timeouts: Timeouts,
    /// The virtual clock, ms.
    pub now_ms: u64,
    /// Rejections from the ledger (author, reason).
    pub rejected: Vec<(String, String)>,
    rng: ChaCha20Rng,
    next_query: u64,
}

impl SimCommittee {
    /// A committee over `view` with member `i` holding `shares[i]` and `data[i]`.
    pub fn new(
        view: CommitteeView,
        shares: Vec<KeyShare>,
        data: Vec<Columns>,
        noise: NoiseMode,
        seed: u64,
    ) -> Result<Self, String> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys: Vec<NodeKey> = view
            .members
            .iter()
            .map(|m| NodeKey::generate(m, &mut rng))
            .collect();
        let mut committee = CommitteeConfig::new(
            keys.iter().map(NodeKey::identity).collect(),
            usize::from(view.threshold),
            0,
        );
        committee.close_tolerance = view.close_tolerance;
        // Under the committee's application rules, as a node's ledger is (the release check).
        let state = LedgerState::new(ORIGIN, committee)?
            .with_rules(Box::new(crate::rules::ReleaseRules::new(view.clone())));
        let n = keys.len();
        Ok(SimCommittee {
            view: view.clone(),
            keys,
            seqs: vec![0; n],
            shares: shares.into_iter().map(Arc::new).collect(),
            data,
            state,
            tree: MerkleLog::new(),
            queries: BTreeMap::new(),
            router: Router::new(view.clone()),
            offline: BTreeSet::new(),
            tamper: None,
            noise,
            timeouts: Timeouts::default(),
            now_ms: 0,
            rejected: Vec::new(),
            rng,
            next_query: 0,
        })
    }

    /// Posts `kind` as member `i`; true if the ledger accepted it.
    pub fn post(&mut self, i: usize, kind: Kind) -> bool {
        let seq = self.seqs[i] + 1;
        let bytes = sign_entry(&self.keys[i], ORIGIN, seq, self.now_ms, kind);
        match self.state.check(&bytes, &self.tree, Verify::Signatures) {
            Ok(e) => {
                self.state.apply(&e, self.tree.size());
                self.tree.append(&bytes);
                self.seqs[i] = seq;
                if let (Some(kind), AuthorId::Node(author)) = (e.kind(), &e.author) {
                    for route in self.router.route(author, kind) {
                        match route {
                            Route::Start {
                                instance,
                                submits,
                                failures,
                            } => {
                                let members = self.drivers();
                                self.queries.entry(instance).or_insert_with(|| {
                                    (QueryView::started(submits).with_failures(failures), members)
                                });
                            }
                            Route::Apply { instance } => {
                                if let Some((view, _)) = self.queries.get_mut(&instance) {
                                    view.apply(author, kind);
                                }
                            }
                        }
                    }
                }
                true
            }
            Err(r) => {
                self.rejected.push((self.view.members[i].clone(), r.reason));
                false
            }
        }
    }

    /// Registers `researcher` (members sign for them) with budget `limit_micros` of ε, and the
    /// joint dataset with ten times that.
    pub fn register(&mut self, researcher: &str, limit_micros: u64) -> Result<(), String> {
        let key = medtech_ledger::entry::ResearcherKey::generate(researcher, &mut self.rng);
        let entries = registration_entries(
            researcher,
            key.public_key().as_bytes(),
            limit_micros,
            limit_micros.saturating_mul(10),
        );
        // Loosening a limit takes t members: members 0 to t − 1 each post every entry.
        for k in entries {
            for m in 0..usize::from(self.view.threshold) {
                if !self.post(m, k.clone()) {
                    return Err(format!("{:?}", self.rejected.last()));
                }
            }
        }
        Ok(())
    }

    /// Submits `spec` for `researcher` through member 0; the query id, or the ledger's or the
    /// platform's refusal.
    pub fn submit(&mut self, researcher: &str, spec: &QuerySpec) -> Result<String, String> {
        let compiled = self
            .view
            .compile_query(spec.clone())
            .map_err(|e| e.to_string())?;
        self.next_query += 1;
        let id = format!("q{}", self.next_query);
        let kind = submit_entry(&id, &compiled, researcher);
        if self.post(0, kind) {
            Ok(id)
        } else {
            Err(self
                .rejected
                .last()
                .map(|r| r.1.clone())
                .unwrap_or_default())
        }
    }

    fn drivers(&self) -> Vec<Member> {
        (0..self.view.members.len())
            .map(|i| {
                Member::new(
                    &self.view.members[i],
                    self.view.clone(),
                    Arc::clone(&self.shares[i]),
                    self.noise,
                    self.timeouts,
                )
            })
            .collect()
    }

    /// Runs rounds (every online member steps every unfinished instance once per round; the
    /// clock advances `tick_ms`) until query `id` ends or `max_rounds` pass.
    pub fn run(&mut self, id: &str, tick_ms: u64, max_rounds: usize) -> Option<Outcome> {
        for _ in 0..max_rounds {
            let open: Vec<String> = self
                .queries
                .iter()
                .filter(|(_, (v, _))| v.outcome.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            for (i, instance) in
                (0..self.view.members.len()).flat_map(|i| open.iter().map(move |q| (i, q)))
            {
                let name = self.view.members[i].clone();
                if self.offline.contains(&name) {
                    continue;
                }
                let now = self.now_ms;
                let out = {
                    let Some((view, members)) = self.queries.get_mut(instance) else {
                        continue;
                    };
                    let v = view.clone();
                    members[i].step(&v, &self.data[i], now, &mut self.rng)
                };
                for k in out {
                    let k = match self.tamper.as_mut() {
                        Some(t) => t(&name, k),
                        None => Some(k),
                    };
                    if let Some(k) = k {
                        self.post(i, k);
                    }
                }
            }
            if let Some(o) = self.outcome(id) {
                return Some(o);
            }
            self.now_ms += tick_ms;
        }
        None
    }

    /// How query `id` ended, if it has.
    pub fn outcome(&self, id: &str) -> Option<Outcome> {
        let instance = self.router.instance_of(id)?;
        self.queries.get(instance)?.0.outcomes.get(id).cloned()
    }

    /// The ledger's view of the instance query `id` runs in.
    pub fn query_view(&self, id: &str) -> Option<&QueryView> {
        let instance = self.router.instance_of(id)?;
        self.queries.get(instance).map(|q| &q.0)
    }
}
