//! `medtech bench ledger`: committed entries per second and commit latency of the replicated
//! ledger, with durable (fsync) storage, mutual TLS on loopback, and the whole committee in this
//! process.
//!
//! Load: `clients` concurrent researchers, each submitting 1 KiB signed query entries one after
//! another (its entries carry consecutive sequence numbers, so each client waits for its previous
//! entry). Every entry goes through Raft, the state machine's signature and order checks, and the
//! Merkle log. Latency is proposal → applied on the leader.

use medtech_ledger::budget::{encode_limit, QueryCharge};
use medtech_noise::{Cost, Micros};
use std::time::{Duration, Instant};

use medtech_ledger::backend::Backend;
use medtech_ledger::entry::{now_ms, sign_entry, Kind, ResearcherKey};
use medtech_ledger::merkle::{leaf_hash, verify_inclusion};
use medtech_ledger::raft::local::{LocalCommittee, LocalOptions};
use medtech_ledger::raft::node::{dir_bytes, RaftTuning};
use medtech_protos::ledger::v1 as pb;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use serde::Serialize;

/// Benchmark parameters.
#[derive(Clone, Debug)]
pub struct LedgerBenchConfig {
    /// Committee size.
    pub nodes: usize,
    /// Entries to commit (after warm-up).
    pub entries: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Bytes of payload per entry.
    pub entry_bytes: usize,
    /// Where the nodes keep their data (a temporary directory under it).
    pub dir: std::path::PathBuf,
    /// Storage backend.
    pub backend: Backend,
    /// Spill the state's per-query records to a scratch file (bounded memory).
    pub state_spill: bool,
}

/// Measured figures.
#[derive(Clone, Debug, Serialize)]
pub struct LedgerBenchReport {
    /// Committee size.
    pub nodes: usize,
    /// Storage backend.
    pub backend: String,
    /// Whether the state's per-query records spilled to a scratch file.
    pub state_spill: bool,
    /// Entries committed.
    pub entries: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Bytes per signed entry as stored.
    pub entry_bytes: usize,
    /// Wall time of the run.
    pub seconds: f64,
    /// Committed entries per second.
    pub entries_per_second: f64,
    /// Median commit latency.
    pub p50_ms: f64,
    /// 99th percentile commit latency.
    pub p99_ms: f64,
    /// Inclusion proof verification, µs (median of 1,000).
    pub inclusion_verify_us: f64,
    /// Peak resident memory of this process (all nodes together), MiB.
    pub peak_rss_mb: f64,
    /// Disk bytes per node after the run.
    pub disk_bytes_per_node: Vec<u64>,
    /// Disk bytes per node ÷ stored entry bytes.
    pub disk_amplification: f64,
    /// All nodes ended with the same size and root.
    pub nodes_agree: bool,
}

fn peak_rss_mb() -> f64 {
    let mb = crate::bench_query::status_mb(std::process::id(), "VmHWM:");
    if mb.is_nan() {
        0.0
    } else {
        mb
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark.
pub fn run(cfg: &LedgerBenchConfig) -> anyhow::Result<LedgerBenchReport> {
    anyhow::ensure!((1..=9).contains(&cfg.nodes), "--nodes must be 1 to 9");
    anyhow::ensure!(
        (1..=256).contains(&cfg.clients),
        "--clients must be 1 to 256"
    );
    anyhow::ensure!(cfg.entries >= 1, "--entries must be at least 1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cfg))
}

/// Posts `kind` from `t` members: it loosens a privacy limit, which takes t approvals
/// (`LedgerState::needs_approval`).
async fn approved(c: &LocalCommittee, t: usize, kind: Kind) -> anyhow::Result<()> {
    for node in c.nodes.values().take(t) {
        let r = node.propose_own(kind.clone()).await?;
        anyhow::ensure!(r.sequence.is_some(), "rejected: {r:?}");
    }
    Ok(())
}

/// Gives `subject` a limit no bench exhausts.
async fn budget(c: &LocalCommittee, t: usize, subject: &str) -> anyhow::Result<()> {
    let k = Kind::SetBudget(pb::SetBudget {
        subject: subject.into(),
        limit: encode_limit(&Cost {
            epsilon: Micros(u64::MAX / 4),
            ..Cost::default()
        }),
    });
    approved(c, t, k).await
}

async fn run_async(cfg: &LedgerBenchConfig) -> anyhow::Result<LedgerBenchReport> {
    std::fs::create_dir_all(&cfg.dir)?;
    let tmp = tempfile::tempdir_in(&cfg.dir)?;
    let mut rng = ChaCha20Rng::from_entropy();
    // Default compaction: a snapshot (a reference, O(1)) every 10,000 entries, after which the
    // Raft log's copies of the entries are purged.
    let tuning = RaftTuning::default();
    let t = cfg.nodes / 2 + 1;
    let origin = "medtech.bench/ledger";
    let opts = LocalOptions {
        tuning,
        backend: cfg.backend,
        state_spill: cfg.state_spill,
        ..LocalOptions::new(cfg.nodes, t, origin)
    };
    let c = LocalCommittee::start(opts, tmp.path(), &mut rng).await?;
    let leader = c.wait_leader(&[], Duration::from_secs(20)).await?;
    let node = &c.nodes[&leader];

    // Register one researcher per client.
    let mut clients = Vec::new();
    for i in 0..cfg.clients {
        let key = ResearcherKey::generate(&format!("bench-{i}"), &mut rng);
        let k = Kind::RegisterResearcher(pb::RegisterResearcher {
            researcher_id: key.id().to_owned(),
            display_name: String::new(),
            public_key: key.public_key().as_bytes().to_vec(),
        });
        approved(&c, t, k).await?;
        budget(&c, t, &format!("researcher:{}", key.id())).await?;
        clients.push(key);
    }
    budget(&c, t, "dataset:bench").await?;
    // Every bench entry is a query charging ε = 10⁻⁶ (the smallest unit) against these.
    let charge = QueryCharge {
        dataset: "bench".into(),
        cost: Cost {
            epsilon: Micros(1),
            ..Cost::default()
        },
    }
    .encode();
    let base = node.head()?.0;

    let per_client = cfg.entries.div_ceil(cfg.clients as u64);
    let payload = vec![0x5au8; cfg.entry_bytes];
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (ci, key) in clients.into_iter().enumerate() {
        let node = c.nodes[&leader].clone_handle();
        let payload = payload.clone();
        let charge = charge.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client as usize);
            for s in 0..per_client {
                let kind = Kind::SubmitQuery(pb::SubmitQuery {
                    query_id: format!("c{ci}-q{s}"),
                    query: payload.clone(),
                    cost: charge.clone(),
                    on_behalf_of: String::new(),
                    idempotency_key: String::new(),
                });
                let bytes = sign_entry(&key, origin, s + 1, now_ms(), kind);
                let t0 = Instant::now();
                let r = node.propose(bytes).await?;
                lat.push(t0.elapsed().as_secs_f64() * 1e3);
                anyhow::ensure!(r.sequence.is_some(), "entry rejected: {r:?}");
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    let committed = lat.len() as u64;
    let (size, root) = c
        .wait_agree(base + committed, Duration::from_secs(120))
        .await?;
    lat.sort_by(f64::total_cmp);

    // Inclusion proof verification on the final tree.
    let (entry_len, inclusion_verify_us) = {
        let l = c.nodes[&leader].read()?;
        let tree = l.log().tree();
        let mut times = Vec::new();
        let mut entry_len = 0;
        for k in 0..1000u64 {
            let i = (k * 7919) % size;
            let e = l.log().get(i)?;
            entry_len = entry_len.max(e.len());
            let proof = tree.inclusion_proof(i, size)?;
            let leaf = leaf_hash(&e);
            let t0 = Instant::now();
            verify_inclusion(&leaf, i, size, &proof, &root)?;
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        (entry_len, percentile(&times, 0.5))
    };

    let mut disk = Vec::new();
    for m in &c.members {
        disk.push(dir_bytes(&m.dir)?);
    }
    let stored_bytes = (size as f64) * entry_len as f64;
    let max_disk = disk.iter().copied().max().unwrap_or(0) as f64;
    let report = LedgerBenchReport {
        nodes: cfg.nodes,
        backend: format!("{:?}", cfg.backend).to_lowercase(),
        state_spill: cfg.state_spill,
        entries: committed,
        clients: cfg.clients,
        entry_bytes: entry_len,
        seconds,
        entries_per_second: committed as f64 / seconds,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        inclusion_verify_us,
        peak_rss_mb: peak_rss_mb(),
        disk_bytes_per_node: disk,
        disk_amplification: if stored_bytes > 0.0 {
            max_disk / stored_bytes
        } else {
            0.0
        },
        nodes_agree: true,
    };
    c.shutdown().await?;
    Ok(report)
}

impl LedgerBenchReport {
    /// The report as a table.
    pub fn to_text(&self) -> String {
        format!(
            "ledger: {} nodes ({}), {} entries of {} B, {} clients, fsync on, mTLS loopback\n\
             throughput      {:>10.0} entries/s   (target >= 2000)\n\
             commit p50      {:>10.2} ms\n\
             commit p99      {:>10.2} ms          (target <= 50)\n\
             inclusion proof {:>10.2} us          (target <= 100)\n\
             peak RSS        {:>10.1} MiB (all {} nodes in one process)\n\
             disk per node   {:?} bytes ({:.2}x the entry bytes; target <= 3)\n\
             nodes agree     {}\n",
            self.nodes,
            self.backend,
            self.entries,
            self.entry_bytes,
            self.clients,
            self.entries_per_second,
            self.p50_ms,
            self.p99_ms,
            self.inclusion_verify_us,
            self.peak_rss_mb,
            self.nodes,
            self.disk_bytes_per_node,
            self.disk_amplification,
            self.nodes_agree
        )
    }
}
