//! A committee of ledger nodes in one test process, over loopback mutual TLS.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use medtech_ledger::entry::{Kind, ResearcherKey};
use medtech_ledger::raft::local::{LocalCommittee, LocalOptions};
use medtech_ledger::raft::node::RaftTuning;
use medtech_ledger::raft::NodeId;
use medtech_protos::ledger::v1 as pb;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const ORIGIN: &str = "medtech.test/committee";

/// A [`LocalCommittee`] with its temporary directory and panicking helpers.
pub struct Cluster {
    inner: LocalCommittee,
    _dir: tempfile::TempDir,
}

impl Deref for Cluster {
    type Target = LocalCommittee;
    fn deref(&self) -> &LocalCommittee {
        &self.inner
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut LocalCommittee {
        &mut self.inner
    }
}

pub fn fast_tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 50,
        election_ms: (300, 600),
        snapshot_every: 10_000,
        keep_after_snapshot: 1_000,
    }
}

impl Cluster {
    pub async fn start(n: usize, t: usize, tuning: RaftTuning) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
        let opts = LocalOptions {
            tuning,
            ..LocalOptions::new(n, t, ORIGIN)
        };
        let inner = LocalCommittee::start(opts, dir.path(), &mut rng)
            .await
            .unwrap();
        Cluster { inner, _dir: dir }
    }

    pub async fn wait_leader(&self, excluding: &[NodeId]) -> NodeId {
        self.inner
            .wait_leader(excluding, Duration::from_secs(20))
            .await
            .unwrap()
    }

    pub async fn kill(&mut self, id: NodeId) {
        self.inner.kill(id).await.unwrap();
    }

    pub async fn restart(&mut self, id: NodeId) {
        self.inner.restart(id).await.unwrap();
    }

    /// Starts a new member that waits to be added (see `LocalCommittee::add_member`).
    pub async fn add_member(&mut self) -> NodeId {
        let mut rng = ChaCha20Rng::seed_from_u64(1000 + self.inner.members.len() as u64);
        let base = self._dir.path().to_path_buf();
        self.inner.add_member(&base, &mut rng).await.unwrap()
    }

    /// The Raft voters as `leader` sees them.
    pub fn voters(&self, leader: NodeId) -> Vec<NodeId> {
        let m = self.inner.nodes[&leader].raft().metrics();
        let m = m.borrow();
        m.membership_config.membership().voter_ids().collect()
    }

    /// Waits until `leader` reports exactly `voters`.
    pub async fn wait_voters(&self, voters: &[NodeId]) {
        for _ in 0..600 {
            let leader = self.wait_leader(&[]).await;
            if self.voters(leader) == voters {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("voters never became {voters:?}");
    }

    pub async fn wait_agree(&self, size: u64) -> (u64, [u8; 32]) {
        self.inner
            .wait_agree(size, Duration::from_secs(30))
            .await
            .unwrap()
    }
}

pub fn note(text: &str) -> Kind {
    Kind::Note(pb::Note { text: text.into() })
}

pub fn register(r: &ResearcherKey) -> Kind {
    Kind::RegisterResearcher(pb::RegisterResearcher {
        researcher_id: r.id().into(),
        display_name: "Dr Test".into(),
        public_key: r.public_key().as_bytes().to_vec(),
    })
}

/// `SetBudget` entries giving researcher `r` and the dataset `data` ε = 10 each.
pub fn budgets(r: &ResearcherKey) -> [Kind; 2] {
    let limit = medtech_ledger::budget::encode_limit(&eps(10_000_000));
    [
        Kind::SetBudget(pb::SetBudget {
            subject: format!("researcher:{}", r.id()),
            limit: limit.clone(),
        }),
        Kind::SetBudget(pb::SetBudget {
            subject: "dataset:data".into(),
            limit,
        }),
    ]
}

/// ε in millionths as a cost.
pub fn eps(micros: u64) -> medtech_noise::Cost {
    medtech_noise::Cost {
        epsilon: medtech_noise::Micros(micros),
        ..medtech_noise::Cost::default()
    }
}

/// The `SubmitQuery.cost` bytes charging ε = 0.1 against the dataset `data`.
pub fn small_charge() -> Vec<u8> {
    medtech_ledger::budget::QueryCharge {
        dataset: "data".into(),
        cost: eps(100_000),
    }
    .encode()
}
