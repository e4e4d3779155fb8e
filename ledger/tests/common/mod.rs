//! A committee of ledger nodes in one test process, over loopback mutual TLS.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use medtech_ledger::checkpoint::NodeKey;
use medtech_ledger::entry::{Kind, ResearcherKey};
use medtech_ledger::raft::node::{LedgerNode, NodeConfig, RaftTuning};
use medtech_ledger::raft::{CommitteeNode, NodeId};
use medtech_ledger::state::CommitteeConfig;
use medtech_ledger::tls::{CommitteeCa, NodeTls};
use medtech_protos::ledger::v1 as pb;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const ORIGIN: &str = "medtech.test/committee";

pub struct Member {
    pub id: NodeId,
    pub name: String,
    pub secret: [u8; 32],
    pub tls: NodeTls,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

pub struct Cluster {
    pub ca: CommitteeCa,
    pub members: Vec<Member>,
    pub nodes: BTreeMap<NodeId, LedgerNode>,
    pub genesis: CommitteeConfig,
    pub committee: BTreeMap<NodeId, CommitteeNode>,
    pub tuning: RaftTuning,
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
        let ca = CommitteeCa::generate("test committee CA").unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(n as u64);
        let mut members = Vec::new();
        let mut listeners = Vec::new();
        for i in 0..n {
            let name = format!("hospital-{}", (b'a' + i as u8) as char);
            let mut secret = [0u8; 32];
            rand_core::RngCore::fill_bytes(&mut rng, &mut secret);
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            listeners.push(l);
            members.push(Member {
                id: i as u64 + 1,
                tls: ca.issue(&name).unwrap(),
                name,
                secret,
                addr,
                dir: tempfile::tempdir().unwrap(),
            });
        }
        let genesis = CommitteeConfig {
            members: members
                .iter()
                .map(|m| NodeKey::from_secret_bytes(&m.name, &m.secret).identity())
                .collect(),
            threshold: t,
            epoch: 0,
        };
        let committee: BTreeMap<NodeId, CommitteeNode> = members
            .iter()
            .map(|m| {
                (
                    m.id,
                    CommitteeNode {
                        name: m.name.clone(),
                        addr: m.addr.to_string(),
                        cert_sha256: m.tls.cert_sha256.clone(),
                    },
                )
            })
            .collect();
        let mut c = Cluster {
            ca,
            members,
            nodes: BTreeMap::new(),
            genesis,
            committee,
            tuning,
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let node = LedgerNode::start(c.config(i), l).await.unwrap();
            c.nodes.insert(node.id(), node);
        }
        c.nodes[&1].initialize().await.unwrap();
        c.wait_leader(&[]).await;
        c
    }

    pub fn config(&self, i: usize) -> NodeConfig {
        let m = &self.members[i];
        NodeConfig {
            id: m.id,
            key: NodeKey::from_secret_bytes(&m.name, &m.secret),
            tls: m.tls.clone(),
            data_dir: m.dir.path().to_path_buf(),
            origin: ORIGIN.into(),
            genesis: self.genesis.clone(),
            members: self.committee.clone(),
            raft: self.tuning.clone(),
            cosign_every: None,
        }
    }

    pub fn key(&self, id: NodeId) -> NodeKey {
        let m = &self.members[id as usize - 1];
        NodeKey::from_secret_bytes(&m.name, &m.secret)
    }

    pub async fn wait_leader(&self, excluding: &[NodeId]) -> NodeId {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for (id, node) in &self.nodes {
                if excluding.contains(id) {
                    continue;
                }
                if let Some(l) = node.leader().await {
                    if !excluding.contains(&l) && self.nodes.contains_key(&l) {
                        return l;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader elected in 20 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn kill(&mut self, id: NodeId) {
        let node = self.nodes.remove(&id).unwrap();
        node.shutdown().await.unwrap();
    }

    pub async fn restart(&mut self, id: NodeId) {
        let i = id as usize - 1;
        let node = LedgerNode::start_on(self.config(i), self.members[i].addr)
            .await
            .unwrap();
        self.nodes.insert(id, node);
    }

    /// Waits until every running node has applied a log of at least `size` entries, then
    /// returns the (size, root) they all agree on.
    pub async fn wait_agree(&self, size: u64) -> (u64, [u8; 32]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let heads: Vec<_> = self.nodes.values().map(|n| n.head().unwrap()).collect();
            if heads.iter().all(|h| h.0 >= size) && heads.windows(2).all(|w| w[0] == w[1]) {
                return heads[0];
            }
            assert!(
                Instant::now() < deadline,
                "nodes did not converge on size {size}: {:?}",
                heads.iter().map(|h| h.0).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
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
