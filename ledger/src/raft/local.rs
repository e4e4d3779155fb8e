//! A whole committee in one process over loopback mutual TLS: for the demo, benchmarks and
//! tests. Generates a committee CA, member certificates and signing keys, binds loopback ports,
//! starts every member and initializes Raft. Members can be killed and restarted from disk.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};

use super::network::LinkFaults;
use super::node::{LedgerNode, NodeConfig, RaftTuning};
use super::{CommitteeNode, NodeId};
use crate::checkpoint::NodeKey;
use crate::merkle::Hash;
use crate::state::{CommitteeConfig, MemberEndpoint};
use crate::tls::{CommitteeCa, NodeTls};
use crate::Error;

/// What committee to start.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Members n.
    pub members: usize,
    /// Threshold t.
    pub threshold: usize,
    /// The ledger's origin.
    pub origin: String,
    /// Raft tuning.
    pub tuning: RaftTuning,
    /// Cosigning interval (None: only on request).
    pub cosign_every: Option<Duration>,
    /// Storage backend.
    pub backend: crate::backend::Backend,
    /// Spill the state's per-query records (see [`NodeConfig::state_spill`]).
    pub state_spill: bool,
    /// The genesis committee's close tolerance (`None`: the default).
    pub close_tolerance: Option<u16>,
    /// Every member's application rules ([`NodeConfig::rules`]).
    pub rules: Option<crate::rules::RulesFactory>,
}

impl LocalOptions {
    /// n members, threshold t, default tuning and backend, no automatic cosigning.
    pub fn new(members: usize, threshold: usize, origin: &str) -> Self {
        LocalOptions {
            members,
            threshold,
            origin: origin.to_owned(),
            tuning: RaftTuning::default(),
            cosign_every: None,
            backend: crate::backend::Backend::default(),
            state_spill: false,
            close_tolerance: None,
            rules: None,
        }
    }
}

/// One member's identity and where it lives.
pub struct LocalMember {
    /// Raft id (1-based).
    pub id: NodeId,
    /// Member name (`hospital-a`, ...).
    pub name: String,
    secret: zeroize::Zeroizing<[u8; 32]>,
    /// TLS material.
    pub tls: NodeTls,
    /// Committee endpoint.
    pub addr: SocketAddr,
    /// Data directory.
    pub dir: PathBuf,
}

impl LocalMember {
    /// The `i`-th member (`hospital-<letter>`) with Raft id `id`: a fresh signing key, a
    /// certificate from `ca`, a data directory under `base`, and a bound loopback listener.
    async fn create<R: RngCore + CryptoRng>(
        ca: &CommitteeCa,
        base: &std::path::Path,
        i: usize,
        id: NodeId,
        rng: &mut R,
    ) -> Result<(Self, tokio::net::TcpListener), Error> {
        let name = format!("hospital-{}", member_suffix(i));
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut secret[..]);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::Io(e.to_string()))?;
        let addr = l.local_addr().map_err(|e| Error::Io(e.to_string()))?;
        let dir = base.join(&name);
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io(e.to_string()))?;
        let member = LocalMember {
            id,
            tls: ca.issue(&name)?,
            name,
            secret,
            addr,
            dir,
        };
        Ok((member, l))
    }

    /// Its entry in the Raft membership.
    pub fn committee_node(&self) -> CommitteeNode {
        CommitteeNode {
            name: self.name.clone(),
            addr: self.addr.to_string(),
            cert_sha256: self.tls.cert_sha256.clone(),
        }
    }

    /// Its replication endpoint as pinned in a committee configuration.
    pub fn endpoint(&self) -> (String, MemberEndpoint) {
        (
            self.name.clone(),
            MemberEndpoint {
                raft_id: self.id,
                addr: self.addr.to_string(),
                cert_sha256: self.tls.cert_sha256.clone(),
            },
        )
    }

    /// Its signing key.
    pub fn key(&self) -> NodeKey {
        NodeKey::from_secret_bytes(&self.name, &self.secret)
    }
}

/// A running local committee.
pub struct LocalCommittee {
    /// The committee CA.
    pub ca: CommitteeCa,
    /// Members, by index (id − 1).
    pub members: Vec<LocalMember>,
    /// Running nodes.
    pub nodes: BTreeMap<NodeId, LedgerNode>,
    /// Genesis committee.
    pub genesis: CommitteeConfig,
    /// Raft membership (ids, addresses, certificate digests).
    pub committee: BTreeMap<NodeId, CommitteeNode>,
    /// The origin.
    pub origin: String,
    /// Raft tuning.
    pub tuning: RaftTuning,
    /// Cosigning interval.
    pub cosign_every: Option<Duration>,
    /// Storage backend.
    pub backend: crate::backend::Backend,
    /// Whether members spill their state's per-query records.
    pub state_spill: bool,
    /// Links cut on purpose ([`Self::partition`]); every member shares it.
    pub faults: LinkFaults,
    /// Every member's application rules ([`NodeConfig::rules`]).
    pub rules: Option<crate::rules::RulesFactory>,
}

impl LocalCommittee {
    /// Starts the committee described by `opts`, data under `base` (one directory per member).
    pub async fn start<R: RngCore + CryptoRng>(
        opts: LocalOptions,
        base: &std::path::Path,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let LocalOptions {
            members: n,
            threshold: t,
            origin,
            tuning,
            cosign_every,
            backend,
            state_spill,
            close_tolerance,
            rules,
        } = opts;
        let origin = origin.as_str();
        let ca = CommitteeCa::generate("MedTech Chain committee CA")?;
        let mut members = Vec::new();
        let mut listeners = Vec::new();
        for i in 0..n {
            let (member, l) = LocalMember::create(&ca, base, i, i as u64 + 1, rng).await?;
            listeners.push(l);
            members.push(member);
        }
        let mut genesis =
            CommitteeConfig::new(members.iter().map(|m| m.key().identity()).collect(), t, 0);
        genesis.endpoints = members.iter().map(LocalMember::endpoint).collect();
        genesis.close_tolerance = close_tolerance;
        genesis.validate().map_err(Error::Config)?;
        let committee = members.iter().map(|m| (m.id, m.committee_node())).collect();
        let mut c = LocalCommittee {
            ca,
            members,
            nodes: BTreeMap::new(),
            genesis,
            committee,
            origin: origin.to_owned(),
            tuning,
            cosign_every,
            backend,
            state_spill,
            faults: LinkFaults::default(),
            rules,
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let node = LedgerNode::start(c.config(i), l).await?;
            c.nodes.insert(node.id(), node);
        }
        if let Some(first) = c.nodes.values().next() {
            first.initialize().await?;
        }
        c.wait_leader(&[], Duration::from_secs(20)).await?;
        Ok(c)
    }

    /// Creates a new member (key, TLS certificate from the committee CA, data directory, a
    /// loopback port) and starts its node, which waits to be added to Raft by the leader once a
    /// `ConfigChange` naming it is applied. Returns its Raft id.
    pub async fn add_member<R: RngCore + CryptoRng>(
        &mut self,
        base: &std::path::Path,
        rng: &mut R,
    ) -> Result<NodeId, Error> {
        let i = self.members.len();
        let id = self.members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let (member, l) = LocalMember::create(&self.ca, base, i, id, rng).await?;
        self.committee.insert(id, member.committee_node());
        self.members.push(member);
        let node = LedgerNode::start(self.config(i), l).await?;
        self.nodes.insert(id, node);
        Ok(id)
    }

    /// The committee `current` with the members `ids` (Raft ids), threshold `t`, next epoch,
    /// as a signed `ConfigChange` approved by the current members in `approvers`.
    pub fn config_change(
        &self,
        current: &CommitteeConfig,
        ids: &[NodeId],
        t: usize,
        approvers: &[NodeId],
    ) -> Result<crate::entry::Kind, Error> {
        let chosen: Vec<&LocalMember> = self
            .members
            .iter()
            .filter(|m| ids.contains(&m.id))
            .collect();
        let mut next = CommitteeConfig::new(
            chosen.iter().map(|m| m.key().identity()).collect(),
            t,
            current.epoch + 1,
        );
        next.endpoints = chosen.iter().map(|m| m.endpoint()).collect();
        next.validate().map_err(Error::Config)?;
        let committee = medtech_protos::Message::encode_to_vec(&next.to_pb());
        let approvals = self
            .members
            .iter()
            .filter(|m| approvers.contains(&m.id))
            .map(|m| crate::entry::approve_committee(&m.key(), &self.origin, &committee))
            .collect();
        Ok(crate::entry::Kind::ConfigChange(
            medtech_protos::ledger::v1::ConfigChange {
                committee,
                approvals,
            },
        ))
    }

    /// Member `i`'s node configuration.
    pub fn config(&self, i: usize) -> NodeConfig {
        let m = &self.members[i];
        NodeConfig {
            id: m.id,
            key: m.key(),
            tls: m.tls.clone(),
            data_dir: m.dir.clone(),
            origin: self.origin.clone(),
            genesis: self.genesis.clone(),
            members: self.committee.clone(),
            raft: self.tuning.clone(),
            cosign_every: self.cosign_every,
            backend: self.backend,
            state_spill: self.state_spill,
            faults: self.faults.clone(),
            rules: self.rules.clone(),
        }
    }

    /// Partitions the network: members `side` (Raft ids) can no longer reach the others, nor
    /// the others them, until [`Self::heal`]. Every node keeps running.
    pub fn partition(&self, side: &[NodeId]) {
        let (a, b): (Vec<&LocalMember>, Vec<&LocalMember>) =
            self.members.iter().partition(|m| side.contains(&m.id));
        let names =
            |v: Vec<&LocalMember>| v.into_iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        self.faults.partition(&names(a), &names(b));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.faults.heal();
    }

    /// The member with Raft id `id`.
    pub fn member(&self, id: NodeId) -> Option<&LocalMember> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Waits for a leader among running nodes, not in `excluding`.
    pub async fn wait_leader(
        &self,
        excluding: &[NodeId],
        within: Duration,
    ) -> Result<NodeId, Error> {
        let deadline = Instant::now() + within;
        loop {
            for (id, node) in &self.nodes {
                if excluding.contains(id) {
                    continue;
                }
                if let Some(l) = node.leader().await {
                    if !excluding.contains(&l) && self.nodes.contains_key(&l) {
                        return Ok(l);
                    }
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(format!("no leader within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops member `id` (its disk stays).
    pub async fn kill(&mut self, id: NodeId) -> Result<(), Error> {
        match self.nodes.remove(&id) {
            Some(n) => n.shutdown().await,
            None => Ok(()),
        }
    }

    /// Restarts member `id` from its disk on its address.
    pub async fn restart(&mut self, id: NodeId) -> Result<(), Error> {
        let i = self
            .members
            .iter()
            .position(|m| m.id == id)
            .ok_or_else(|| Error::Config(format!("no member {id}")))?;
        let node = LedgerNode::start_on(self.config(i), self.members[i].addr).await?;
        self.nodes.insert(id, node);
        Ok(())
    }

    /// Waits until every running node has applied at least `size` entries and all agree on
    /// size and root; returns them.
    pub async fn wait_agree(&self, size: u64, within: Duration) -> Result<(u64, Hash), Error> {
        let deadline = Instant::now() + within;
        loop {
            let mut heads = Vec::new();
            for n in self.nodes.values() {
                heads.push(n.head()?);
            }
            if let Some(first) = heads.first() {
                if first.0 >= size && heads.iter().all(|h| h == first) {
                    return Ok(*first);
                }
            }
            if Instant::now() > deadline {
                return Err(Error::Unavailable(format!(
                    "members did not converge on size {size}: {:?}",
                    heads.iter().map(|h| h.0).collect::<Vec<_>>()
                )));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let ids: Vec<_> = self.nodes.keys().copied().collect();
        for id in ids {
            self.kill(id).await?;
        }
        Ok(())
    }
}

/// The name of the `i`-th member (0-based) of a local committee: `hospital-a`, `hospital-b`, ...
pub fn member_name(i: usize) -> String {
    format!("hospital-{}", member_suffix(i))
}

fn member_suffix(i: usize) -> String {
    let letters = b"abcdefghijklmnopqrstuvwxyz";
    match letters.get(i) {
        Some(c) => (*c as char).to_string(),
        None => format!("{}", i + 1),
    }
}
