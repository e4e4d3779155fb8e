//! A real committee in one test process, with its faults under the test's control.
//!
//! Every member is what `medtech node` runs, minus the HTTP API: a ledger node (openraft 0.9
//! over tonic gRPC with mutually authenticated TLS on loopback, redb on disk, checkpoints
//! cosigned every second) and the federation's query loop ([`Driver`]) over its own device
//! store. What a test controls:
//!
//! * [`Committee::kill`] stops a member's query loop and its ledger node (its disk stays);
//!   [`Committee::restart`] starts both again from that disk;
//! * [`Committee::partition`] cuts every network link between a group of members and the rest
//!   ([`medtech_ledger::raft::network::LinkFaults`]: the members keep running and keep trying),
//!   [`Committee::heal`] restores them;
//! * [`Committee::set_adversary`] makes a member rewrite what it posts (a cheating member);
//! * submissions acknowledged by the ledger are recorded, for the oracle's "no acknowledged
//!   entry is lost" ([`crate::oracle`]).
//!
//! The key comes from the dealer at small sizes (the dealer-free ceremony is tested in
//! `medtech-threshold` and `medtech-ceremony`; the protocol does not depend on how the key was
//! made). Device data is synthetic and seeded, so each scenario's plaintext reference is known.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use medtech_federation::data::generate::devices;
use medtech_federation::data::{Columns, Device, DeviceStore};
use medtech_federation::node::{Adversary, Driver, QueryIndex};
use medtech_federation::protocol::{
    registration_entries, submit_entry, CommitteeView, NoiseMode, Outcome, Release, Timeouts,
};
use medtech_federation::query::{Compiled, Platform, QueryKind, QuerySpec};
use medtech_federation::rules::ReleaseRules;
use medtech_ledger::entry::{AuthorId, Kind, ParsedEntry, ResearcherKey};
use medtech_ledger::raft::local::{member_name, LocalCommittee, LocalOptions};
use medtech_ledger::raft::node::NodeHandle;
use medtech_ledger::raft::NodeId;
use medtech_noise::Micros;
use medtech_noise::QueryResult;
use medtech_threshold::{dealer, KeyShare};
use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The ledger origin every scenario committee uses.
pub const ORIGIN: &str = "medtech.scenarios/committee";

/// What committee to start.
#[derive(Clone, Debug)]
pub struct Options {
    /// Members n.
    pub members: usize,
    /// Threshold t.
    pub threshold: u16,
    /// Close tolerance f: members whose noise shares a close may omit (`None`: the default,
    /// 1 clamped to `n − t`). A scenario with more members down at a close needs more.
    pub close_tolerance: Option<u16>,
    /// Paillier modulus bits (512 keeps a scenario to seconds on two cores).
    pub bits: u32,
    /// Devices per hospital (hospital `i` gets `devices + 25·i`, so totals differ).
    pub devices: u64,
    /// How noise shares are drawn.
    pub noise: NoiseMode,
    /// The members' timeouts.
    pub timeouts: Timeouts,
    /// Seed for the key and the device data.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            members: 5,
            threshold: 3,
            close_tolerance: None,
            bits: 512,
            devices: 150,
            noise: NoiseMode::Calibrated,
            timeouts: Timeouts {
                contribution_ms: 3_000,
                decryption_ms: 30_000,
                partial_fallback_ms: 1_500,
            },
            seed: 1,
        }
    }
}

impl Options {
    /// The defaults with noise disabled, so results equal the plaintext reference (tests of
    /// behaviour under faults only: offers no privacy).
    pub fn exact() -> Self {
        Options {
            noise: NoiseMode::DisabledForTests,
            ..Options::default()
        }
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// A running committee (see the module docs).
pub struct Committee {
    /// The replicated ledger.
    pub ledger: LocalCommittee,
    /// The committee as the protocol sees it.
    pub view: CommitteeView,
    /// Each hospital's devices, as loaded (the plaintext reference).
    pub data: Vec<Vec<Device>>,
    /// Each member's view of the queries on the ledger.
    pub indexes: Vec<QueryIndex>,
    stores: Vec<Arc<RwLock<DeviceStore>>>,
    shares: Vec<Arc<KeyShare>>,
    adversaries: Vec<Option<Adversary>>,
    drivers: Vec<Option<Running>>,
    acknowledged: Mutex<Vec<String>>,
    opts: Options,
    _dir: tempfile::TempDir,
}

impl Committee {
    /// Generates the key and the data and starts every member.
    pub async fn start(opts: Options) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut rng = ChaCha20Rng::seed_from_u64(opts.seed);
        let (key, shares) =
            dealer::generate(opts.bits, opts.members as u16, opts.threshold, &mut rng)?;
        let members: Vec<String> = (0..opts.members).map(member_name).collect();
        let view = CommitteeView {
            members: members.clone(),
            threshold: opts.threshold,
            key: Arc::new(key),
            platform: Arc::new(Platform::new(&members)),
            close_tolerance: opts.close_tolerance,
        };
        let mut lo = LocalOptions::new(opts.members, usize::from(opts.threshold), ORIGIN);
        lo.cosign_every = Some(Duration::from_secs(1));
        lo.close_tolerance = opts.close_tolerance;
        // Every member's ledger checks releases under the committee's rules, as a node does.
        lo.rules = Some(ReleaseRules::factory(view.clone()));
        let ledger = LocalCommittee::start(lo, &dir.path().join("ledger"), &mut OsRng).await?;
        anyhow::ensure!(
            ledger.members.iter().map(|m| &m.name).eq(members.iter()),
            "the local committee's members are not named as expected"
        );
        let mut stores = Vec::new();
        let mut data = Vec::new();
        for (i, name) in members.iter().enumerate() {
            let store = DeviceStore::open(&dir.path().join(format!("devices-{name}")))?;
            let ds = devices(name, 0, opts.devices + 25 * i as u64, opts.seed + i as u64);
            let mut store = store;
            store.write(&ds, |_, _| {})?;
            data.push(ds);
            stores.push(Arc::new(RwLock::new(store)));
        }
        let n = members.len();
        let mut c = Committee {
            ledger,
            view,
            data,
            indexes: (0..n).map(|_| QueryIndex::default()).collect(),
            stores,
            shares: shares.into_iter().map(Arc::new).collect(),
            adversaries: vec![None; n],
            drivers: (0..n).map(|_| None).collect(),
            acknowledged: Mutex::new(Vec::new()),
            opts,
            _dir: dir,
        };
        for i in 0..n {
            c.start_driver(i)?;
        }
        Ok(c)
    }

    /// n.
    pub fn n(&self) -> usize {
        self.view.members.len()
    }

    /// Member `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.view.members[i]
    }

    /// Member `i`'s Raft id.
    pub fn raft_id(&self, i: usize) -> NodeId {
        self.ledger.members[i].id
    }

    /// Member index of Raft id `id`.
    pub fn index_of(&self, id: NodeId) -> Option<usize> {
        self.ledger.members.iter().position(|m| m.id == id)
    }

    /// Whether member `i`'s node is running.
    pub fn is_running(&self, i: usize) -> bool {
        self.ledger.nodes.contains_key(&self.raft_id(i))
    }

    /// Member `i`'s ledger node, if it is running.
    pub fn handle(&self, i: usize) -> Option<NodeHandle> {
        self.ledger
            .nodes
            .get(&self.raft_id(i))
            .map(|n| n.clone_handle())
    }

    /// The number of devices the named hospitals hold (the exact count over them).
    pub fn count_of(&self, names: &[String]) -> i128 {
        names
            .iter()
            .filter_map(|n| self.view.members.iter().position(|m| m == n))
            .map(|i| self.data[i].len() as i128)
            .sum()
    }

    /// The devices of the hospitals in `from`, as one plaintext reference.
    pub fn reference(&self, from: &[usize]) -> Columns {
        let v: Vec<Device> = from.iter().flat_map(|&i| self.data[i].clone()).collect();
        Columns::from_devices(&v)
    }

    fn start_driver(&mut self, i: usize) -> anyhow::Result<()> {
        let handle = self
            .handle(i)
            .ok_or_else(|| anyhow::anyhow!("member {i} is not running"))?;
        // A restarted loop rebuilds what it knows from the ledger: start from an empty index.
        self.indexes[i] = QueryIndex::default();
        let driver = Driver {
            name: self.view.members[i].clone(),
            committee: self.view.clone(),
            share: Arc::clone(&self.shares[i]),
            data: Arc::clone(&self.stores[i]),
            noise: self.opts.noise,
            timeouts: self.opts.timeouts,
            index: Arc::clone(&self.indexes[i]),
            adversary: self.adversaries[i].clone(),
        };
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(driver.run(handle, rx));
        self.drivers[i] = Some(Running { stop, task });
        Ok(())
    }

    async fn stop_driver(&mut self, i: usize) {
        if let Some(r) = self.drivers[i].take() {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
    }

    /// Makes member `i` rewrite what it posts through `adversary` (its query loop restarts).
    pub async fn set_adversary(&mut self, i: usize, adversary: Adversary) -> anyhow::Result<()> {
        self.stop_driver(i).await;
        self.adversaries[i] = Some(adversary);
        self.start_driver(i)
    }

    /// Stops member `i` (query loop and ledger node); its disk stays.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        self.stop_driver(i).await;
        self.ledger.kill(self.raft_id(i)).await?;
        Ok(())
    }

    /// Restarts member `i` from its disk.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.ledger.restart(self.raft_id(i)).await?;
        self.start_driver(i)
    }

    /// Cuts every link between members `side` and the others.
    pub fn partition(&self, side: &[usize]) {
        let ids: Vec<NodeId> = side.iter().map(|&i| self.raft_id(i)).collect();
        self.ledger.partition(&ids);
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.ledger.heal();
    }

    /// The member index of the current leader, as running members not in `excluding` see it.
    pub async fn leader(&self, excluding: &[usize], within: Duration) -> anyhow::Result<usize> {
        let ids: Vec<NodeId> = excluding.iter().map(|&i| self.raft_id(i)).collect();
        let id = self.ledger.wait_leader(&ids, within).await?;
        self.index_of(id)
            .ok_or_else(|| anyhow::anyhow!("leader {id} is not a member"))
    }

    async fn post(&self, via: usize, kind: Kind) -> anyhow::Result<()> {
        let h = self
            .handle(via)
            .ok_or_else(|| anyhow::anyhow!("member {via} is not running"))?;
        let r = h.propose_own(kind).await?;
        match r.rejection {
            Some(why) => anyhow::bail!("{why}"),
            None => Ok(()),
        }
    }

    /// Registers `researcher` (member `via` signs on their behalf) with ε limit `limit` and
    /// gives the joint dataset `dataset_limit`. Returns the researcher's signing key.
    pub async fn register(
        &self,
        via: usize,
        researcher: &str,
        limit: f64,
        dataset_limit: f64,
    ) -> anyhow::Result<ResearcherKey> {
        let key = ResearcherKey::generate(researcher, &mut OsRng);
        for k in registration_entries(
            researcher,
            key.public_key().as_bytes(),
            Micros::from_f64_floor(limit)?.0,
            Micros::from_f64_floor(dataset_limit)?.0,
        ) {
            // Loosening a limit takes t members: `via` and the next t − 1 each post it.
            for j in 0..usize::from(self.view.threshold) {
                self.post((via + j) % usize::from(self.view.n()), k.clone())
                    .await?;
            }
        }
        Ok(key)
    }

    /// The query `spec` compiled for this committee.
    pub fn compile(&self, spec: &QuerySpec) -> anyhow::Result<Compiled> {
        Ok(Compiled::new(
            spec.clone(),
            &self.view.platform,
            self.view.n(),
            self.view.threshold,
        )?)
    }

    /// Submits `spec` for `researcher` through member `via`. Returns the query id once the
    /// ledger admitted (and charged) it; the id is then recorded as acknowledged.
    pub async fn submit(
        &self,
        via: usize,
        researcher: &str,
        spec: &QuerySpec,
    ) -> anyhow::Result<String> {
        self.submit_as(via, researcher, spec, &fresh_id()).await
    }

    /// As [`Self::submit`], with query id `id` (scenarios that need to know beforehand which
    /// members the query designates to decrypt).
    pub async fn submit_as(
        &self,
        via: usize,
        researcher: &str,
        spec: &QuerySpec,
        id: &str,
    ) -> anyhow::Result<String> {
        let c = self.compile(spec)?;
        let id = id.to_owned();
        self.post(via, submit_entry(&id, &c, researcher)).await?;
        if let Ok(mut a) = self.acknowledged.lock() {
            a.push(id.clone());
        }
        Ok(id)
    }

    /// Query ids the ledger acknowledged through [`Self::submit`].
    pub fn acknowledged(&self) -> Vec<String> {
        match self.acknowledged.lock() {
            Ok(a) => a.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Waits until some running member saw query `id` end.
    pub async fn wait(&self, id: &str, within: Duration) -> anyhow::Result<Outcome> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            for (i, index) in self.indexes.iter().enumerate() {
                if !self.is_running(i) {
                    continue;
                }
                let ended = index
                    .read()
                    .ok()
                    .and_then(|x| x.get(id).and_then(|q| q.outcome.clone()));
                if let Some(o) = ended {
                    return Ok(o);
                }
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("query {id} did not end within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until member `i` has seen at least `k` contributions to query `id`.
    pub async fn wait_contributions(
        &self,
        i: usize,
        id: &str,
        k: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let seen = self.indexes[i]
                .read()
                .ok()
                .and_then(|x| x.get(id).map(|q| q.contributions))
                .unwrap_or(0);
            if seen >= k {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("member {i} saw {seen} contributions to {id} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every applied entry at the first running member, with its author's name.
    pub fn entries(&self) -> anyhow::Result<Vec<(String, Kind)>> {
        let i = (0..self.n())
            .find(|&i| self.is_running(i))
            .ok_or_else(|| anyhow::anyhow!("no member is running"))?;
        let h = self
            .handle(i)
            .ok_or_else(|| anyhow::anyhow!("member {i} is not running"))?;
        let mut out = Vec::new();
        for bytes in h.entries_from(0, usize::MAX)? {
            let e = ParsedEntry::decode(&bytes)?;
            let author = match &e.author {
                AuthorId::Node(n) | AuthorId::Researcher(n) => n.clone(),
            };
            if let Some(k) = e.kind() {
                out.push((author, k.clone()));
            }
        }
        Ok(out)
    }

    /// Stops everything.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        for i in 0..self.n() {
            self.stop_driver(i).await;
        }
        self.ledger.shutdown().await?;
        Ok(())
    }
}

/// A fresh random query id.
pub fn fresh_id() -> String {
    let mut id = [0u8; 6];
    OsRng.fill_bytes(&mut id);
    format!(
        "q-{}",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A query id whose designated decrypters include member `member` of `view` (found by
/// trying fresh ids).
pub fn id_designating(view: &CommitteeView, member: usize) -> String {
    loop {
        let id = fresh_id();
        if view.designated(&id).contains(&view.members[member]) {
            return id;
        }
    }
}

/// A query with no filters and ε = 1.
pub fn query(kind: QueryKind, target: Option<&str>) -> QuerySpec {
    QuerySpec {
        kind,
        target: target.map(str::to_owned),
        filters: Vec::new(),
        start_time: None,
        end_time: None,
        epsilon: 1.0,
    }
}

/// The release of an outcome, or why there is none.
pub fn released(o: Outcome) -> anyhow::Result<Release> {
    match o {
        Outcome::Released(r) => Ok(*r),
        Outcome::Failed(why) => anyhow::bail!("query failed: {why}"),
    }
}

/// The raw (noisy) released values in output order.
pub fn values(r: &Release) -> Vec<i128> {
    match &r.result {
        QueryResult::Count(v) => vec![v.value],
        QueryResult::GroupedCount(v) => v.iter().map(|x| x.value).collect(),
        QueryResult::Average { sum, count, .. } => vec![sum.value, count.value],
    }
}

/// The exact pmf of `A − B` for independent `A, B ~ Pólya(r, q)` (negative binomial with
/// `P(A = k) = Γ(k + r)/(Γ(r)·k!)·(1 − q)^r·q^k`): the sum of `s` discrete-Laplace shares each
/// calibrated for `m` honest shares is this with `r = s/m` (`r = 1`: exactly DLap(q)).
pub fn polya_difference_pmf(r: f64, q: f64) -> impl Fn(i128) -> f64 {
    // Pólya(r, q) until the remaining tail is below 1e-15 (the term ratio q(k + r)/(k + 1)
    // decreases once below 1, so the tail after a term is at most term·ratio/(1 − ratio)).
    let mut a = vec![(1.0 - q).powf(r)];
    loop {
        let k = (a.len() - 1) as f64;
        let ratio = q * (k + r) / (k + 1.0);
        let last = a[a.len() - 1];
        if (ratio < 1.0 && last * ratio / (1.0 - ratio) < 1e-15) || a.len() > 1_000_000 {
            break;
        }
        a.push(last * ratio);
    }
    move |z: i128| {
        let shift = z.unsigned_abs() as usize; // symmetric
        a.iter()
            .zip(a.iter().skip(shift))
            .map(|(pb, pa)| pa * pb)
            .sum()
    }
}

/// Pearson's χ² of `samples` against the symmetric pmf `pmf` on `|Z|`: bins `|Z| = 0, 1, …`
/// merged until each expects at least 5, the tail folded into the last. Returns the statistic
/// and whether it is below the `1 − 10⁻⁶` quantile (Wilson–Hilferty), so that a correct
/// distribution fails once in a million runs while a wrong calibration fails reliably.
pub fn chi_square_abs(samples: &[i128], pmf: impl Fn(i128) -> f64) -> (f64, usize, bool) {
    let n = samples.len() as f64;
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (expected, observed)
    let mut edges: Vec<u128> = Vec::new(); // first |Z| of each bin
    let (mut e, mut start, mut covered) = (0.0, 0u128, 0.0);
    for z in 0u128.. {
        let p = if z == 0 { pmf(0) } else { 2.0 * pmf(z as i128) };
        e += p * n;
        covered += p;
        if e >= 5.0 {
            bins.push((e, 0.0));
            edges.push(start);
            start = z + 1;
            e = 0.0;
        }
        if (1.0 - covered) * n < 5.0 || z > 1_000_000 {
            break;
        }
    }
    if bins.is_empty() {
        bins.push((0.0, 0.0));
        edges.push(0);
    }
    // The tail beyond the last edge joins the last bin.
    if let Some(last) = bins.last_mut() {
        last.0 += (1.0 - covered).max(0.0) * n + e;
    }
    for s in samples {
        let a = s.unsigned_abs();
        let i = edges.partition_point(|&lo| lo <= a).saturating_sub(1);
        bins[i].1 += 1.0;
    }
    let stat: f64 = bins.iter().map(|(e, o)| (o - e).powi(2) / e).sum();
    let df = bins.len().saturating_sub(1).max(1);
    let d = df as f64;
    let z = 4.753_424_3; // the 1 − 10⁻⁶ normal quantile
    let critical = d * (1.0 - 2.0 / (9.0 * d) + z * (2.0 / (9.0 * d)).sqrt()).powi(3);
    (stat, df, stat < critical)
}
