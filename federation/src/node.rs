//! The committee member's query loop over the replicated ledger: follow the applied log,
//! group the queries into protocol instances ([`Router`]: one query, or a bundle of small
//! ones), keep a [`QueryView`] and a [`Member`] driver per instance, and propose what the
//! driver returns.
//!
//! This is the thin I/O layer around [`crate::protocol`]: the ledger (openraft over mutual
//! TLS) orders and replicates the entries, the driver decides. [`LocalFederation`] runs a
//! whole committee in one process over loopback TLS (the demo and the tests).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use medtech_ledger::entry::{AuthorId, Kind, ParsedEntry};
use medtech_ledger::raft::local::{member_name, LocalCommittee, LocalOptions};
use medtech_ledger::raft::node::NodeHandle;
use medtech_noise::Micros;
use medtech_threshold::{KeyShare, ThresholdPublicKey};
use rand_core::{OsRng, RngCore};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bundle::{Route, Router};
use crate::data::DeviceStore;
use crate::protocol::{
    registration_entries, researcher_of, submit_entry, CommitteeView, Member, NoiseMode, Outcome,
    QueryView, Timeouts,
};
use crate::query::{Platform, QuerySpec};
use crate::rules::ReleaseRules;

/// What one member knows of a query from the applied ledger: what the API reports.
#[derive(Clone, Debug)]
pub struct QueryInfo {
    /// Query id.
    pub id: String,
    /// The researcher it was submitted by or for.
    pub researcher: String,
    /// The query, if its entry decodes (every admitted query's does).
    pub spec: Option<QuerySpec>,
    /// When it was submitted (the entry's timestamp, ms since the Unix epoch).
    pub submitted_ms: u64,
    /// Its position in the ledger.
    pub sequence: u64,
    /// Hospitals that posted a contribution so far.
    pub contributions: usize,
    /// Members that posted a partial decryption so far.
    pub partials: usize,
    /// How it ended, once it has.
    pub outcome: Option<Outcome>,
    /// When this member saw it end (ms since the Unix epoch).
    pub ended_ms: Option<u64>,
}

/// Every query this member has seen on the ledger, by id (shared with the API).
pub type QueryIndex = Arc<RwLock<BTreeMap<String, QueryInfo>>>;

/// One member's query loop.
pub struct Driver {
    /// This member's name.
    pub name: String,
    /// The committee.
    pub committee: CommitteeView,
    /// This member's key share.
    pub share: Arc<KeyShare>,
    /// This hospital's devices.
    pub data: Arc<RwLock<DeviceStore>>,
    /// Noise mode.
    pub noise: NoiseMode,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Where the queries seen on the ledger are reported.
    pub index: QueryIndex,
    /// Rewrites what this member is about to post. Only the scenario tests set it, to play a
    /// cheating member over the real ledger; `None` in every node (no configuration reaches it).
    pub adversary: Option<Adversary>,
}

/// Rewrites one entry a member is about to post into what it posts instead (none, or several),
/// seeing the query as the ledger holds it.
pub type Adversary = Arc<dyn Fn(&QueryView, Kind) -> Vec<Kind> + Send + Sync>;

fn now_ms() -> u64 {
    medtech_ledger::entry::now_ms()
}

impl Driver {
    /// Follows the ledger through `node` until `stop` turns true.
    pub async fn run(self, node: NodeHandle, mut stop: watch::Receiver<bool>) {
        let mut next = 0u64;
        let mut queries: BTreeMap<String, (QueryView, Member)> = BTreeMap::new();
        let mut router = Router::new(self.committee.clone());
        let mut applied = node.applied_size();
        loop {
            applied.mark_unchanged();
            if *stop.borrow() {
                return;
            }
            match node.entries_from(next, 512) {
                Ok(entries) => {
                    for bytes in entries {
                        self.route(&bytes, next, &mut router, &mut queries);
                        next += 1;
                    }
                }
                Err(e) => tracing::warn!(member = %self.name, "reading the ledger: {e}"),
            }
            let mut proposals = Vec::new();
            let open: Vec<String> = queries
                .iter()
                .filter(|(_, (v, _))| v.outcome.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in open {
                let Some((view, member)) = queries.get_mut(&id) else {
                    continue;
                };
                let data = Arc::clone(&self.data);
                // Encryption, proofs and decryption are CPU-bound: keep them off the reactor.
                let out = tokio::task::block_in_place(|| {
                    let store = match data.read() {
                        Ok(s) => s,
                        Err(p) => p.into_inner(),
                    };
                    member.step(view, store.columns(), now_ms(), &mut OsRng)
                });
                match &self.adversary {
                    Some(a) => proposals.extend(out.into_iter().flat_map(|k| a(view, k))),
                    None => proposals.extend(out),
                }
            }
            for k in proposals {
                match node.propose_own(k).await {
                    Ok(r) => {
                        if let Some(why) = r.rejection {
                            tracing::debug!(member = %self.name, "entry not applied: {why}");
                        }
                    }
                    Err(e) => tracing::warn!(member = %self.name, "propose: {e}"),
                }
            }
            // Wake as soon as new entries are applied; the timer only drives the timeouts
            // (contribution and fallback windows, in seconds).
            tokio::select! {
                _ = applied.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => {}
            }
        }
    }

    fn route(
        &self,
        bytes: &[u8],
        sequence: u64,
        router: &mut Router,
        queries: &mut BTreeMap<String, (QueryView, Member)>,
    ) {
        let Ok(e) = ParsedEntry::decode(bytes) else {
            return;
        };
        let Some(kind) = e.kind() else { return };
        if QueryView::query_of(kind).is_none() {
            return;
        }
        let author = match &e.author {
            AuthorId::Node(n) | AuthorId::Researcher(n) => n.clone(),
        };
        let mut index = match self.index.write() {
            Ok(i) => i,
            Err(p) => p.into_inner(),
        };
        if let Kind::SubmitQuery(q) = kind {
            index
                .entry(q.query_id.clone())
                .or_insert_with(|| QueryInfo {
                    id: q.query_id.clone(),
                    researcher: researcher_of(&author, q),
                    spec: serde_json::from_slice(&q.query).ok(),
                    submitted_ms: e.body.timestamp_ms,
                    sequence,
                    contributions: 0,
                    partials: 0,
                    outcome: None,
                    ended_ms: None,
                });
        }
        for route in router.route(&author, kind) {
            let instance = match route {
                Route::Start {
                    instance,
                    submits,
                    failures,
                } => {
                    queries.entry(instance.clone()).or_insert_with(|| {
                        (
                            QueryView::started(submits).with_failures(failures),
                            Member::new(
                                &self.name,
                                self.committee.clone(),
                                Arc::clone(&self.share),
                                self.noise,
                                self.timeouts,
                            ),
                        )
                    });
                    instance
                }
                Route::Apply { instance } => {
                    if let Some((view, _)) = queries.get_mut(&instance) {
                        view.apply(&author, kind);
                    }
                    instance
                }
            };
            let Some((view, _)) = queries.get(&instance) else {
                continue;
            };
            for q in &view.queries {
                if let Some(info) = index.get_mut(&q.id) {
                    info.contributions = view.contributions.len();
                    info.partials = view.partials.len();
                    if info.outcome.is_none() {
                        if let Some(o) = view.outcomes.get(&q.id) {
                            info.outcome = Some(o.clone());
                            info.ended_ms = Some(now_ms());
                        }
                    }
                }
            }
        }
        // A query that ended while queued for a bundle.
        if let Some((id, reason)) = router.ended_while_queued() {
            if let Some(info) = index.get_mut(id) {
                if info.outcome.is_none() {
                    info.outcome = Some(Outcome::Failed(reason.to_owned()));
                    info.ended_ms = Some(now_ms());
                }
            }
        }
    }
}

/// A whole federation in one process: the replicated ledger over loopback mutual TLS, one
/// device store and query loop per hospital.
pub struct LocalFederation {
    /// The ledger committee.
    pub ledger: LocalCommittee,
    /// The committee as the protocol sees it.
    pub view: CommitteeView,
    /// Each hospital's devices.
    pub stores: Vec<Arc<RwLock<DeviceStore>>>,
    /// Each member's view of the queries on the ledger, by member index.
    pub indexes: Vec<QueryIndex>,
    stop: watch::Sender<bool>,
    drivers: Vec<JoinHandle<()>>,
}

impl LocalFederation {
    /// Starts `shares.len()` members under `key` with their stores in `dir`.
    pub async fn start(
        dir: &Path,
        key: ThresholdPublicKey,
        shares: Vec<KeyShare>,
        noise: NoiseMode,
        timeouts: Timeouts,
    ) -> anyhow::Result<Self> {
        Self::start_with(dir, key, shares, noise, timeouts, None).await
    }

    /// As [`Self::start`], every member's query loop rewriting what it posts through
    /// `adversary` (tests that play cheating members over the real ledger).
    pub async fn start_with(
        dir: &Path,
        key: ThresholdPublicKey,
        shares: Vec<KeyShare>,
        noise: NoiseMode,
        timeouts: Timeouts,
        adversary: Option<Adversary>,
    ) -> anyhow::Result<Self> {
        let n = shares.len();
        let t = usize::from(key.threshold());
        let members: Vec<String> = (0..n).map(member_name).collect();
        let view = CommitteeView {
            members: members.clone(),
            threshold: key.threshold(),
            key: Arc::new(key),
            platform: Arc::new(Platform::new(&members)),
            close_tolerance: None,
        };
        let mut opts = LocalOptions::new(n, t, "medtech.local/committee");
        // Checkpoints cosigned as the log grows, as a real node does.
        opts.cosign_every = Some(Duration::from_secs(2));
        // Every member's ledger checks releases (and failures) under the committee's rules.
        opts.rules = Some(ReleaseRules::factory(view.clone()));
        let ledger = LocalCommittee::start(opts, &dir.join("ledger"), &mut OsRng).await?;
        ledger.wait_leader(&[], Duration::from_secs(20)).await?;
        anyhow::ensure!(
            ledger.members.iter().map(|m| &m.name).eq(members.iter()),
            "the local committee's members are not named as expected"
        );
        let (stop, stop_rx) = watch::channel(false);
        let mut indexes: Vec<QueryIndex> = Vec::new();
        let mut stores = Vec::new();
        let mut drivers = Vec::new();
        for (i, share) in shares.into_iter().enumerate() {
            let store = Arc::new(RwLock::new(DeviceStore::open(
                &dir.join(format!("devices-{}", members[i])),
            )?));
            stores.push(Arc::clone(&store));
            let m = &ledger.members[i];
            let handle = ledger
                .nodes
                .get(&m.id)
                .ok_or_else(|| anyhow::anyhow!("member {} has no node", m.name))?
                .clone_handle();
            let driver = Driver {
                name: m.name.clone(),
                committee: view.clone(),
                share: Arc::new(share),
                data: store,
                noise,
                timeouts,
                index: Arc::default(),
                adversary: adversary.clone(),
            };
            indexes.push(Arc::clone(&driver.index));
            drivers.push(tokio::spawn(driver.run(handle, stop_rx.clone())));
        }
        Ok(LocalFederation {
            ledger,
            view,
            stores,
            indexes,
            stop,
            drivers,
        })
    }

    /// Member `i`'s ledger node.
    pub fn handle(&self, i: usize) -> anyhow::Result<NodeHandle> {
        let m = self
            .ledger
            .members
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("no member {i}"))?;
        Ok(self
            .ledger
            .nodes
            .get(&m.id)
            .ok_or_else(|| anyhow::anyhow!("member {} is not running", m.name))?
            .clone_handle())
    }

    async fn post(&self, i: usize, kind: Kind) -> anyhow::Result<()> {
        let r = self.handle(i)?.propose_own(kind).await?;
        match r.rejection {
            Some(why) => anyhow::bail!("{why}"),
            None => Ok(()),
        }
    }

    /// Registers `researcher` with ε budget `limit`, and gives the joint dataset
    /// `dataset_limit`: members 0 to t − 1 each post every entry (loosening a limit takes t
    /// members, see `LedgerState::needs_approval`).
    pub async fn register(
        &self,
        researcher: &str,
        limit: f64,
        dataset_limit: f64,
    ) -> anyhow::Result<()> {
        let key = medtech_ledger::entry::ResearcherKey::generate(researcher, &mut OsRng);
        for k in registration_entries(
            researcher,
            key.public_key().as_bytes(),
            Micros::from_f64_floor(limit)?.0,
            Micros::from_f64_floor(dataset_limit)?.0,
        ) {
            for m in 0..usize::from(self.view.threshold) {
                self.post(m, k.clone()).await?;
            }
        }
        Ok(())
    }

    /// Submits `spec` for `researcher` through member `via`; returns the query id once the
    /// ledger admitted it (and charged the budget), or the refusal.
    pub async fn submit(
        &self,
        via: usize,
        researcher: &str,
        spec: &QuerySpec,
    ) -> anyhow::Result<String> {
        let c = self.view.compile_query(spec.clone())?;
        let mut id = [0u8; 8];
        OsRng.fill_bytes(&mut id);
        let id = format!("q-{}", hex::encode(id));
        self.post(via, submit_entry(&id, &c, researcher)).await?;
        Ok(id)
    }

    /// Waits for query `id` to end.
    pub async fn wait(&self, id: &str, within: Duration) -> anyhow::Result<Outcome> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let ended = self
                .indexes
                .first()
                .and_then(|index| index.read().ok()?.get(id)?.outcome.clone());
            if let Some(o) = ended {
                return Ok(o);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("query {id} did not end within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Member `i`'s API state over `accounts` (its node, store and query index).
    pub fn api_state(
        &self,
        i: usize,
        accounts: crate::api::accounts::Accounts,
        config: crate::api::ApiConfig,
    ) -> anyhow::Result<crate::api::ApiState> {
        let store = self
            .stores
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("no member {i}"))?;
        let index = self
            .indexes
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("no member {i}"))?;
        Ok(crate::api::ApiState::new(
            self.handle(i)?,
            self.view.clone(),
            Arc::clone(store),
            Arc::clone(index),
            accounts,
            config,
        ))
    }

    /// Stops the query loops and the ledger.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for d in self.drivers {
            let _ = d.await;
        }
        self.ledger.shutdown().await?;
        Ok(())
    }
}
